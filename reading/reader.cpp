#include "reading/reader.h"

#include <chrono>

#include "core/error.h"

namespace sr {

namespace {
using clock_t_ = std::chrono::steady_clock;
double since(clock_t_::time_point t) { return std::chrono::duration<double>(clock_t_::now() - t).count(); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::vector<int32_t>& operator+=(std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
constexpr int kTargetOverhead = 16;  // "Target: " + markers around the restated goal, in tokens
}  // namespace

ReadingOptions ReadingOptions::from_model_json(const json& j, const std::string& where) {
  ReadingOptions o;
  if (j.is_null()) return o;
  if (!j.is_object()) fail(where, "expected a JSON object");
  std::string proto = json_str_or(j, "protocol", "smoothread-v1", where);
  if (proto != "smoothread-v1") fail(where + ": field 'protocol'", "unsupported protocol '" + proto + "' (supported: smoothread-v1)");
  o.chunk_tokens = int(json_int_or(j, "chunk_tokens", o.chunk_tokens, where));
  o.max_summary_tokens = int(json_int_or(j, "max_summary_tokens", o.max_summary_tokens, where));
  o.max_answer_tokens = int(json_int_or(j, "max_answer_tokens", o.max_answer_tokens, where));
  if (j.contains("markers")) {
    const json& m = j["markers"];
    std::string w = where + ": field 'markers'";
    if (!m.is_object()) fail(w, "expected an object");
    Markers& k = o.markers;
    for (auto [name, ref] : std::vector<std::pair<const char*, std::string*>>{
             {"query", &k.query}, {"chunk", &k.chunk}, {"summary", &k.summary}, {"memory", &k.memory},
             {"answer", &k.answer}, {"eod", &k.eod}, {"read", &k.read}, {"stop", &k.stop}, {"eos", &k.eos}})
      *ref = json_str_or(m, name, *ref, w);
  }
  return o;
}

json RoundTrace::to_json() const {
  return {{"round", round}, {"chunk_index", chunk_index}, {"token_span", {token_begin, token_end}},
          {"byte_span", {byte_begin, byte_end}}, {"summary", make_valid_utf8(summary)}, {"action", action},
          {"overrule", overrule.empty() ? json(nullptr) : json(overrule)}, {"summary_tokens", summary_tokens},
          {"prefill_s", prefill_s}, {"decode_s", decode_s}};
}

json ReadResult::to_json() const {
  return {{"answer", make_valid_utf8(answer)}, {"mode", mode}, {"rounds", rounds}, {"chunks", chunks},
          {"stopped_early", stopped_early}, {"context_tokens", context_tokens}, {"tokens_read", tokens_read},
          {"tokens_generated", tokens_generated}, {"bytes_read", bytes_read}, {"seconds", seconds}, {"state_bytes", state_bytes}};
}

void check_window_rule(int window, const ReadingOptions& o, int question_tokens) {
  if (o.chunk_tokens < 16) fail("--chunk-tokens", "must be at least 16 (got " + std::to_string(o.chunk_tokens) + ")");
  if (window <= 0 || (o.mode != "emr" && o.mode != "nmr")) return;
  int need = o.chunk_tokens + o.max_summary_tokens + question_tokens + kTargetOverhead;
  if (need > window)
    fail("--chunk-tokens",
         "chunk " + std::to_string(o.chunk_tokens) + " + summary budget " + std::to_string(o.max_summary_tokens) +
             " + restated target ~" + std::to_string(question_tokens + kTargetOverhead) + " = " + std::to_string(need) +
             " tokens exceeds the model's sliding window of " + std::to_string(window) +
             " (the paper: C > W collapses accuracy; C ~ W/2 works best). Use a smaller --chunk-tokens, or --force");
}

Reader::Reader(ReaderModel& model, const Tokenizer& tok, ReadingOptions opt) : model_(model), tok_(tok), opt_(std::move(opt)) {
  if (opt_.mode != "emr" && opt_.mode != "nmr" && opt_.mode != "or" && opt_.mode != "or-context-first")
    fail("--mode", "unknown mode '" + opt_.mode + "' (emr, nmr, or, or-context-first)");
  if (opt_.max_summary_tokens < 1) fail("--max-summary-tokens", "must be positive");
  if (opt_.max_answer_tokens < 1) fail("--max-answer-tokens", "must be positive");
  if (opt_.max_rounds < 0) fail("--max-rounds", "must be >= 0");
}

void Reader::feed(const std::vector<int32_t>& ids, ReadResult& r) {
  model_.feed(ids);
  r.state_bytes = std::max(r.state_bytes, model_.state_bytes());
}

Reader::Generated Reader::generate(const std::vector<std::string>& stops, int budget) {
  Generated g;
  for (int i = 0; i < budget; ++i) {
    int32_t t = model_.next_token();
    g.ids.push_back(t);
    std::string text = tok_.decode(g.ids);
    for (size_t s = 0; s < stops.size(); ++s)
      if (ends_with(text, stops[s])) {
        g.stop = int(s);
        g.text = text.substr(0, text.size() - stops[s].size());
        return g;
      }
    model_.feed({t});
  }
  g.text = tok_.decode(g.ids);
  return g;
}

ReadResult Reader::read(const std::string& document, const std::string& question,
                        const std::function<void(const RoundTrace&, const ReadResult&)>& on_round) {
  if (question.find_first_not_of(" \t\r\n") == std::string::npos) fail("--question", "is empty");
  if (document.empty()) fail("document", "is empty");
  ChunkerOptions co{opt_.chunk_tokens, opt_.word_estimate};
  std::vector<Chunk> chunks = chunk_text(document, tok_, co);
  auto t0 = clock_t_::now();
  ReadResult r = opt_.mode == "emr"   ? read_rounds(document, question, chunks, false, on_round)
                 : opt_.mode == "nmr" ? read_rounds(document, question, chunks, true, on_round)
                                      : read_one_pass(document, question, chunks, opt_.mode == "or-context-first");
  r.mode = opt_.mode;
  r.chunks = int(chunks.size());
  for (auto& c : chunks) r.context_tokens += c.tokens;
  r.seconds = since(t0);
  return r;
}

ReadResult Reader::read_rounds(const std::string& doc, const std::string& q, const std::vector<Chunk>& chunks,
                               bool nmr, const std::function<void(const RoundTrace&, const ReadResult&)>& on_round) {
  const Markers& M = opt_.markers;
  ReadResult r;
  std::vector<int32_t> prefix = markers(M.query);
  prefix += text(q + "\n");
  std::string memory;  // NMR: the previous round's summary
  if (!nmr) {
    model_.reset();
    feed(prefix, r);
  }
  int64_t tok_at = 0;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const Chunk& c = chunks[ci];
    const bool last = ci + 1 == chunks.size();
    const bool round_limit = opt_.max_rounds > 0 && int(ci) + 1 >= opt_.max_rounds;
    RoundTrace tr;
    tr.round = int(ci) + 1, tr.chunk_index = int(ci);
    tr.token_begin = tok_at, tr.token_end = tok_at + c.tokens, tr.byte_begin = c.begin, tr.byte_end = c.end;
    tok_at += c.tokens;
    auto t0 = clock_t_::now();
    std::vector<int32_t> ids;
    if (nmr) {  // fresh state: query, previous summary, this chunk
      model_.reset();
      ids = prefix;
      ids += markers(M.memory);
      ids += text(memory);
    }
    ids += markers(M.chunk);
    ids += text(doc.substr(c.begin, c.end - c.begin));
    if (last) ids += markers(M.eod);
    ids += markers(M.summary);
    feed(ids, r);
    r.tokens_read += c.tokens;
    r.bytes_read = c.end;
    tr.prefill_s = since(t0);
    t0 = clock_t_::now();
    Generated g = generate({M.read, M.stop}, opt_.max_summary_tokens);
    tr.summary_tokens = int(g.ids.size());
    r.tokens_generated += int64_t(g.ids.size());
    tr.summary = g.text;
    while (!tr.summary.empty() && tr.summary.back() == '\n') tr.summary.pop_back();
    bool stop = g.stop == 1;
    if (g.stop < 0) {  // summary budget exceeded: close it for the model
      tr.overrule = "summary_budget";
      stop = last || round_limit;
      feed(markers("\n" + (stop ? M.stop : M.read)), r);
    } else if (!stop && last) {
      tr.overrule = "read_after_eod";
      stop = true;
      feed(markers("\n" + M.stop), r);
    } else if (!stop && round_limit) {
      tr.overrule = "max_rounds";
      stop = true;
      feed(markers("\n" + M.stop), r);
    } else if (stop && !last && !opt_.early_stop) {
      tr.overrule = "no_early_stop";
      stop = false;
      feed(markers(M.read), r);
    } else {
      feed({g.ids.back()}, r);  // the model's own action token
    }
    tr.action = stop ? "STOP" : "READ";
    tr.decode_s = since(t0);
    memory = tr.summary;
    r.rounds = tr.round;
    r.trace.push_back(tr);
    if (on_round) on_round(tr, r);
    if (stop) {
      r.stopped_early = !last;
      break;
    }
  }
  feed(markers(M.answer), r);
  Generated a = generate({M.eos}, opt_.max_answer_tokens);
  r.tokens_generated += int64_t(a.ids.size());
  r.answer = a.text;
  return r;
}

ReadResult Reader::read_one_pass(const std::string& doc, const std::string& q, const std::vector<Chunk>& chunks,
                                 bool context_first) {
  const Markers& M = opt_.markers;
  ReadResult r;
  model_.reset();
  std::vector<int32_t> query = markers(M.query);
  query += text(q + "\n");
  if (!context_first) feed(query, r);
  feed(markers(M.chunk), r);
  for (const Chunk& c : chunks) {  // prefill piecewise: same result as one call, bounded buffers
    feed(text(doc.substr(c.begin, c.end - c.begin)), r);
    r.tokens_read += c.tokens;
    r.bytes_read = c.end;
  }
  feed(markers(M.eod), r);
  if (context_first) feed(query, r);
  feed(markers(M.answer), r);
  Generated a = generate({M.eos}, opt_.max_answer_tokens);
  r.tokens_generated = int64_t(a.ids.size());
  r.answer = a.text;
  r.rounds = 1;
  return r;
}

}  // namespace sr
