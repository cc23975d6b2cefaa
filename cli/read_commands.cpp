// `smoothread read` and `smoothread chunk`: the reading runtime on the command line.
#include <sys/resource.h>
#include <unistd.h>

#include <omp.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/progress.h"
#include "core/io.h"
#include "eval/metrics.h"
#include "models/model_dir.h"
#include "reading/reader.h"

namespace sr::cli {

namespace {
std::string read_document(const Args& a) {
  std::string doc, where;
  if (a.has("--doc")) {
    where = a.get("--doc");
    if (!path_exists(where)) fail(where, "document not found");
    doc = read_file(where);
  } else {
    where = "stdin";
    if (isatty(0)) fail("--doc", "no document: give --doc FILE or pipe the text on stdin");
    doc.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (doc.empty()) fail(where, "document is empty");
  return doc;
}

// Applies --lossy-utf8 or fails naming the first bad byte.
std::string check_utf8(std::string s, const std::string& where, bool lossy) {
  size_t bad = find_invalid_utf8(s);
  if (bad == std::string::npos) return s;
  if (lossy) return make_valid_utf8(s);
  fail(where, "invalid UTF-8 at byte " + std::to_string(bad) + " (use --lossy-utf8 to replace bad bytes with U+FFFD)");
}

ReadingOptions reading_options(const Args& a, const LoadedModel& m) {
  ReadingOptions o = ReadingOptions::from_model_json(m.reading_config, join_path(m.dir, "smoothread.json"));
  o.mode = a.get_or("--mode", o.mode);
  o.chunk_tokens = int(a.get_int("--chunk-tokens", o.chunk_tokens));
  o.max_summary_tokens = int(a.get_int("--max-summary-tokens", o.max_summary_tokens));
  o.max_answer_tokens = int(a.get_int("--max-answer-tokens", o.max_answer_tokens));
  o.max_rounds = int(a.get_int("--max-rounds", o.max_rounds));
  o.early_stop = !a.has("--no-early-stop");
  o.word_estimate = a.has("--word-estimate");
  return o;
}

// Smallest window over the model's sliding layers (0 when none).
int model_window(const ModelConfig& c) { return c.any_sliding() ? c.sliding_window : 0; }


const std::string& first_field(const json& j, const std::vector<std::string>& keys, const std::string& where) {
  for (auto& k : keys)
    if (j.contains(k) && j[k].is_string()) return j[k].get_ref<const std::string&>();
  fail(where, "missing string field '" + keys[0] + "' (or '" + keys[1] + "')");
}

int read_batch(const Args& a, const std::string& in, const std::string& out, LoadedModel& m, const ReadingOptions& o,
               bool quiet) {
  // Resume: keep complete lines already in `out`, drop a torn last line, skip answered ids.
  std::set<std::string> done;
  for (auto& j : resume_jsonl(out))
    if (j.contains("id")) done.insert(j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump());
  std::vector<json> items;
  int64_t bad_lines = 0;
  for_each_jsonl(in, [&](json& j, const std::string& where) {
    if (!j.contains("id")) j["id"] = where.substr(where.rfind(':') + 1);
    first_field(j, {"context", "doc"}, where);
    first_field(j, {"input", "question"}, where);
    j["_where"] = where;
    items.push_back(std::move(j));
  }, a.has("--skip-bad") ? &bad_lines : nullptr);
  if (bad_lines) std::cerr << "skipped " << bad_lines << " bad line(s) in " << in << " (--skip-bad)\n";
  JsonlAppender fo(out);
  SessionReaderModel rm(*m.model);
  Progress bar(!quiet);
  int64_t n = 0, skipped = 0;
  for (auto& j : items) {
    std::string id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    ++n;
    if (done.count(id)) {
      ++skipped;
      continue;
    }
    std::string where = j["_where"];
    std::string doc = check_utf8(first_field(j, {"context", "doc"}, where), where + ": field 'context'", a.has("--lossy-utf8"));
    std::string q = check_utf8(first_field(j, {"input", "question"}, where), where + ": field 'input'", a.has("--lossy-utf8"));
    if (!a.has("--force")) check_window_rule(model_window(m.model->config()), o, int(m.tokenizer->encode(q, false).size()));
    Reader rd(rm, *m.tokenizer, o);
    ReadResult r = rd.read(doc, q);
    json res = r.to_json();
    res["id"] = j["id"];
    for (const char* k : {"task", "answers", "length", "depths", "evidence"})
      if (j.contains(k)) res[k] = j[k];
    res["peak_rss_bytes"] = peak_rss_bytes();
    fo.append(res);
    bar.update("read", n, int64_t(items.size()), "samples");
  }
  bar.done();
  if (!quiet) std::cerr << "answered " << (n - skipped) << ", skipped " << skipped << " already in " << out << "\n";
  return 0;
}
}  // namespace

// Flags shared by `read` and `eval` (the reading options), plus each command's own.
static std::set<std::string> with_reading_flags(std::set<std::string> own, bool valued) {
  if (valued) own.insert({"--model", "--mode", "--chunk-tokens", "--max-summary-tokens", "--max-answer-tokens", "--max-rounds", "--threads", "--device", "--window", "--swa-layers", "--decode-weights"});
  else own.insert({"--json", "--no-early-stop", "--word-estimate", "--force", "--lossy-utf8", "--quiet", "--skip-bad"});
  return own;
}

int cmd_read(int argc, char** argv) {
  const char* usage =
      "smoothread read --model DIR (--doc FILE | stdin) --question TEXT [--mode emr|nmr|or|or-context-first]\n"
      "                [--json] [--trace FILE.jsonl] [--chunk-tokens C] [--max-summary-tokens S]\n"
      "                [--max-answer-tokens A] [--max-rounds R] [--no-early-stop] [--word-estimate] [--force]\n"
      "                [--lossy-utf8] [--quiet] [--device cpu|cuda] [--threads N] [--decode-weights fp32|bf16]\n"
      "smoothread read --model DIR --batch IN.jsonl --out OUT.jsonl [--skip-bad] [same options]   (resumable)\n"
      "Defaults come from the model's smoothread.json, then built-ins (C=512, S=96, A=64, mode emr).\n"
      "--decode-weights bf16: decode steps read a bf16 copy of the weights (CPU: made at load;\n"
      "CUDA: the copy the GEMMs use) -- half the bytes; outputs within bf16 rounding of fp32. Default fp32.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, with_reading_flags({"--doc", "--question", "--trace", "--batch", "--out"}, true),
         with_reading_flags({}, false));
  set_threads(a);
  std::string dir = a.get("--model");
  LoadedModel m = load_model(a, true);
  place_model(a, *m.model);
  ReadingOptions o = reading_options(a, m);
  bool quiet = a.has("--quiet");
  if (a.has("--batch")) return read_batch(a, a.get("--batch"), a.get("--out"), m, o, quiet);
  if (!a.has("--question")) fail("--question", "is required");
  std::string q = check_utf8(a.get("--question"), "--question", a.has("--lossy-utf8"));
  std::string doc = read_document(a);
  doc = check_utf8(std::move(doc), a.has("--doc") ? a.get("--doc") : "stdin", a.has("--lossy-utf8"));
  if (!a.has("--force")) check_window_rule(model_window(m.model->config()), o, int(m.tokenizer->encode(q, false).size()));
  SessionReaderModel rm(*m.model);
  Reader rd(rm, *m.tokenizer, o);
  Progress bar(!quiet);
  int64_t total = count_tokens(doc, *m.tokenizer, o.word_estimate);
  ReadResult r = rd.read(doc, q, [&](const RoundTrace& t, const ReadResult& rr) {
    bar.update("reading", rr.tokens_read, total, "tokens, round " + std::to_string(t.round));
  });
  bar.done();
  if (a.has("--trace")) {
    std::string lines;
    for (auto& t : r.trace) lines += t.to_json().dump() + "\n";
    write_file_atomic(a.get("--trace"), lines);
  }
  if (a.has("--json")) {
    json j = r.to_json();
    j["peak_rss_bytes"] = peak_rss_bytes();
    std::cout << j.dump() << "\n";
  } else {
    std::cout << r.answer << "\n";
    if (!quiet)
      std::cerr << r.mode << ": " << r.rounds << " round(s), " << r.tokens_read << "/" << r.context_tokens
                << " tokens read" << (r.stopped_early ? " (stopped early)" : "") << ", " << r.seconds << " s\n";
  }
  return 0;
}

int cmd_eval(int argc, char** argv) {
  const char* usage =
      "smoothread eval --model DIR --data FILE.jsonl [--mode emr|nmr|or|or-context-first] [--pred OUT.jsonl]\n"
      "                [--metric all|part] [--json] [--skip-bad] [read options: --chunk-tokens ... --force]\n"
      "smoothread eval --score-only --pred FILE.jsonl [--metric all|part] [--json]\n"
      "Reads every record of --data (resumable: predictions go to --pred, default DATA.pred.jsonl), then\n"
      "scores with RULER's string_match_all (default) or string_match_part, per task x length, with 95% CIs.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, with_reading_flags({"--data", "--pred", "--metric"}, true),
         with_reading_flags({"--score-only"}, false));
  set_threads(a);
  std::string pred;
  if (a.has("--score-only")) {
    pred = a.get("--pred");
  } else {
    std::string data = a.get("--data");
    pred = a.get_or("--pred", data + ".pred.jsonl");
    LoadedModel m = load_model(a, true);
    place_model(a, *m.model);
    read_batch(a, data, pred, m, reading_options(a, m), a.has("--quiet"));
  }
  int64_t bad = 0;
  json r = score_predictions(pred, a.get_or("--metric", "all"), a.has("--skip-bad") ? &bad : nullptr);
  if (bad) std::cerr << "skipped " << bad << " bad line(s) in " << pred << " (--skip-bad)\n";
  if (a.has("--json")) std::cout << json{{"metric", r["metric"]}, {"rows", r["rows"]}, {"pred", pred}}.dump() << "\n";
  else std::cout << r["markdown"].get<std::string>();
  return 0;
}

int cmd_chunk(int argc, char** argv) {
  const char* usage =
      "smoothread chunk (--model DIR | --tokenizer FILE|DIR) --doc FILE --chunk-tokens C [--word-estimate] [--json]\n"
      "Prints the chunks' byte and token spans (--json: a JSON list with the text of each chunk).\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2, {"--model", "--tokenizer", "--doc", "--chunk-tokens"}, {"--json", "--word-estimate", "--lossy-utf8"});
  std::string tp = a.has("--model") ? a.get("--model") : a.get("--tokenizer");
  auto tok = Tokenizer::load(tp);
  std::string doc = read_document(a);
  doc = check_utf8(std::move(doc), a.get("--doc"), a.has("--lossy-utf8"));
  int C = int(a.get_int("--chunk-tokens", 512));
  if (C < 16) fail("--chunk-tokens", "must be at least 16");
  auto chunks = chunk_text(doc, *tok, {C, a.has("--word-estimate")});
  if (a.has("--json")) {
    json arr = json::array();
    for (size_t i = 0; i < chunks.size(); ++i)
      arr.push_back({{"index", i}, {"byte_span", {chunks[i].begin, chunks[i].end}}, {"tokens", chunks[i].tokens},
                     {"text", doc.substr(chunks[i].begin, chunks[i].end - chunks[i].begin)}});
    std::cout << arr.dump() << "\n";
  } else {
    for (size_t i = 0; i < chunks.size(); ++i)
      std::cout << i << "\tbytes " << chunks[i].begin << "-" << chunks[i].end << "\ttokens " << chunks[i].tokens << "\n";
  }
  return 0;
}

}  // namespace sr::cli
