#include "reading/protocol.h"

#include "core/error.h"

namespace sr {

namespace {
struct Builder {
  const Tokenizer& tok;
  RenderedSequence s;
  void marker(const std::string& x, float w = 0.f) { add(tok.encode(x, true), w); }
  void text(const std::string& x, float w) { add(tok.encode(x, false), w); }
  void add(const std::vector<int32_t>& ids, float w) {
    s.ids.insert(s.ids.end(), ids.begin(), ids.end());
    s.weights.insert(s.weights.end(), ids.size(), w);
  }
};
}  // namespace

RenderedSequence render_baseline(const json& rec, const Tokenizer& tok, const Markers& m, float chunk_weight,
                                 const std::string& where) {
  Builder b{tok, {}};
  std::string layout = json_str(rec, "layout", where);
  std::string q = json_str(rec, "query", where) + "\n";
  if (layout == "or") {
    bool cf = json_bool_or(rec, "context_first", false, where);
    if (!cf) b.marker(m.query), b.text(q, 0.f);
    b.marker(m.chunk), b.text(json_str(rec, "context", where), chunk_weight), b.marker(m.eod);
    if (cf) b.marker(m.query), b.text(q, 0.f);
  } else if (layout == "nmr") {
    b.marker(m.query), b.text(q, 0.f);
    b.marker(m.memory), b.text(json_str_or(rec, "memory", "", where), 0.f);
    b.marker(m.chunk), b.text(json_str(rec, "chunk", where), chunk_weight);
    if (json_bool_or(rec, "eod", false, where)) b.marker(m.eod);
    b.marker(m.summary), b.text(json_str(rec, "summary", where) + "\n", 1.f);
    std::string a = json_str(rec, "action", where);
    if (a != "READ" && a != "STOP") fail(where + ": field 'action'", "expected \"READ\" or \"STOP\"");
    b.marker(a == "READ" ? m.read : m.stop, 1.f);
    if (a == "READ") return b.s;
  } else {
    fail(where + ": field 'layout'", "expected \"or\" or \"nmr\", got '" + layout + "'");
  }
  b.marker(m.answer), b.text(json_str(rec, "answer", where), 1.f), b.marker(m.eos, 1.f);
  return b.s;
}

RenderedSequence render_trajectory(const json& rec, const Tokenizer& tok, const Markers& m, float chunk_weight,
                                   const std::string& where) {
  RenderedSequence s;
  auto add = [&](const std::vector<int32_t>& ids, float w) {
    s.ids.insert(s.ids.end(), ids.begin(), ids.end());
    s.weights.insert(s.weights.end(), ids.size(), w);
  };
  auto marker = [&](const std::string& x) { return tok.encode(x, true); };
  auto plain = [&](const std::string& x) { return tok.encode(x, false); };
  for (const char* f : {"chunks", "summaries", "actions"})
    if (!rec.contains(f) || !rec[f].is_array()) fail(where + ": field '" + f + "'", "expected a list");
  const json &chunks = rec["chunks"], &sums = rec["summaries"], &acts = rec["actions"];
  if (chunks.empty() || sums.size() != chunks.size() || acts.size() != chunks.size())
    fail(where, "'chunks', 'summaries' and 'actions' must be non-empty lists of equal length");
  bool eod = json_bool_or(rec, "eod_after_last", false, where);
  add(marker(m.query), 0.f);
  add(plain(json_str(rec, "query", where) + "\n"), 0.f);
  for (size_t r = 0; r < chunks.size(); ++r) {
    std::string a = acts[r].is_string() ? acts[r].get<std::string>() : "";
    if (a != "READ" && a != "STOP") fail(where + ": field 'actions[" + std::to_string(r) + "]'", "expected \"READ\" or \"STOP\"");
    if ((a == "STOP") != (r + 1 == chunks.size())) fail(where + ": field 'actions'", "STOP must be the last action, and only the last");
    if (!chunks[r].is_string() || !sums[r].is_string()) fail(where, "chunks and summaries must be strings");
    add(marker(m.chunk), 0.f);
    add(plain(chunks[r].get<std::string>()), chunk_weight);
    if (eod && r + 1 == chunks.size()) add(marker(m.eod), 0.f);
    add(marker(m.summary), 0.f);
    add(plain(sums[r].get<std::string>() + "\n"), 1.f);
    add(marker(a == "READ" ? m.read : m.stop), 1.f);
  }
  add(marker(m.answer), 0.f);
  add(plain(json_str(rec, "answer", where)), 1.f);
  add(marker(m.eos), 1.f);
  return s;
}

}  // namespace sr
