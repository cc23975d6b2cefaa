#include "data/synthetic.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/rng.h"
#include "reading/chunker.h"

namespace sr {

namespace {
const char* kNoise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const std::vector<std::string> kAdjectives = {"ancient", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow",
                                              "icy", "jolly", "kind", "lively", "mighty", "narrow", "odd", "proud",
                                              "quiet", "rapid", "silent", "tiny", "urban", "vast", "wild", "young"};
const std::vector<std::string> kNouns = {"apple", "bridge", "castle", "desert", "engine", "forest", "garden", "harbor",
                                         "island", "jungle", "kettle", "lantern", "meadow", "needle", "orchard", "pillow",
                                         "quarry", "river", "saddle", "tunnel", "valley", "wagon", "yard", "zebra"};
const std::vector<std::string> kEssayWords = {
    "the", "a", "of", "to", "and", "in", "that", "is", "was", "it", "for", "on", "with", "as", "startup", "founders",
    "people", "work", "time", "idea", "ideas", "company", "money", "users", "problem", "good", "new", "think", "make",
    "build", "growth", "investors", "product", "market", "writing", "essay", "learn", "hard", "simple", "often",
    "because", "when", "what", "most", "which", "would", "could", "should", "very", "best", "thing", "way", "year"};

std::string random_key(Rng& r) { return kAdjectives[r.below(kAdjectives.size())] + "-" + kNouns[r.below(kNouns.size())]; }
std::string random_number(Rng& r) { return std::to_string(1000000 + r.below(9000000)); }
std::string random_uuid(Rng& r) {
  char buf[40];
  uint64_t a = r.next_u64(), b = r.next_u64();
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", unsigned(a >> 32), unsigned((a >> 16) & 0xffff),
                unsigned(a & 0xfff), unsigned(0x8000 | (b >> 48 & 0x3fff)), (unsigned long long)(b & 0xffffffffffffULL));
  return buf;
}
// Procedural pseudo-essay sentence (different text from the noise filler; deterministic per rng).
std::string essay_sentence(Rng& r) {
  int n = 6 + int(r.below(12));
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::string w = kEssayWords[r.below(kEssayWords.size())];
    if (i == 0) w[0] = char(std::toupper(w[0]));
    s += (i ? " " : "") + w;
  }
  return s + (r.below(8) == 0 ? "?" : ".");
}

struct Spec {
  std::string instruction, question, needle, answer, target;
  bool essay = false;
};

Spec task_spec(const std::string& task, Rng& r) {
  Spec s;
  if (task == "passkey") {
    std::string k = std::to_string(1 + r.below(50000));
    s.instruction = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                    "I will quiz you about the important information there.";
    s.question = "What is the pass key?";
    s.needle = "The pass key is " + k + ". Remember it. " + k + " is the pass key.";
    s.answer = k;
    s.target = "the pass key";
    return s;
  }
  bool uuid = task == "niah_single_3";
  std::string type = uuid ? "uuid" : "number";
  std::string key = random_key(r), value = uuid ? random_uuid(r) : random_number(r);
  s.instruction = "A special magic " + type + " is hidden within the following text. Make sure to memorize it. "
                  "I will quiz you about the " + type + " afterwards.";
  s.question = "What is the special magic " + type + " for " + key + " mentioned in the provided text?";
  s.needle = "One of the special magic " + type + "s for " + key + " is: " + value + ".";
  s.answer = value;
  s.target = "the " + type + " for " + key;
  s.essay = task != "niah_single_1";
  return s;
}
}  // namespace

std::vector<std::string> synthetic_task_names() { return {"passkey", "niah_single_1", "niah_single_2", "niah_single_3"}; }

std::vector<json> make_synthetic(const SyntheticOptions& o, const Tokenizer& tok) {
  auto names = synthetic_task_names();
  if (std::find(names.begin(), names.end(), o.task) == names.end()) {
    std::string list;
    for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
    fail("--task", "unknown task '" + o.task + "' (valid: " + list + ", copy, recall)");
  }
  if (o.tokens < 64) fail("--tokens", "must be at least 64");
  if (o.depth > 1) fail("--depth", "must be in [0, 1]");
  std::vector<json> out;
  for (int i = 0; i < o.count; ++i) {
    Rng r(o.seed * 1000003ULL + uint64_t(i));
    Spec s = task_spec(o.task, r);
    double depth = o.depth >= 0 ? o.depth : r.uniform_double();
    // Haystack sentences until the context (with the needle) reaches the target token count.
    const int needle_tokens = count_tokens(s.needle + " ", tok, false);
    std::vector<std::string> sents;
    int have = needle_tokens;
    while (have < o.tokens) {
      std::string t = (s.essay ? essay_sentence(r) : std::string(kNoise)) + " ";
      have += count_tokens(t, tok, false);
      sents.push_back(std::move(t));
    }
    size_t at = size_t(depth * double(sents.size()) + 0.5);
    std::string context;
    size_t ev_begin = 0;
    for (size_t k = 0; k <= sents.size(); ++k) {
      if (k == at) {
        ev_begin = context.size();
        context += s.needle + " ";
      }
      if (k < sents.size()) context += sents[k];
    }
    // Trim from the end to the exact target where the tokenizer allows it (never into the needle).
    while (int(count_tokens(context, tok, false)) > o.tokens && context.size() > ev_begin + s.needle.size() + 1)
      context.pop_back();
    while (int(count_tokens(context, tok, false)) > o.tokens && ev_begin > 0) {  // needle at the end: trim before it
      context.erase(ev_begin - 1, 1);
      --ev_begin;
    }
    size_t ans_at = context.find(s.answer, ev_begin);
    out.push_back({{"id", o.task + "-" + std::to_string(o.tokens) + "-" + std::to_string(o.seed) + "-" + std::to_string(i)},
                   {"task", o.task},
                   {"context", context},
                   {"input", s.instruction + " " + s.question},
                   {"target", s.target},
                   {"answers", {s.answer}},
                   {"length", count_tokens(context, tok, false)},
                   {"depths", {depth}},
                   {"evidence", {{ans_at, ans_at + s.answer.size()}}}});
  }
  return out;
}

json make_trajectory(const json& rec, const Tokenizer& tok, int cmin, int cmax, uint64_t seed) {
  Rng r(seed);
  int C = cmin + int(r.below(uint64_t(cmax - cmin + 1)));
  const std::string& ctx = rec["context"].get_ref<const std::string&>();
  std::vector<Chunk> chunks = chunk_text(ctx, tok, {C, false});
  std::string question = rec["input"];
  std::string target = json_str_or(rec, "target", question, "record");
  std::vector<std::string> answers = rec["answers"].get<std::vector<std::string>>();
  const auto& ev = rec["evidence"];
  json t = {{"id", rec["id"]}, {"task", rec["task"]}, {"query", question}, {"chunk_tokens", C}};
  json cj = json::array(), sj = json::array(), aj = json::array();
  std::vector<std::string> found;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const Chunk& c = chunks[ci];
    cj.push_back(ctx.substr(c.begin, c.end - c.begin));
    bool added = false;
    for (size_t e = 0; e < ev.size(); ++e) {
      size_t eb = ev[e][0], ee = ev[e][1];
      (void)eb;
      if (ee <= c.end && ee > c.begin) {  // the fact is complete once its last byte is read
        found.push_back(answers[std::min(e, answers.size() - 1)]);
        added = true;
      }
    }
    bool done = found.size() >= ev.size(), last = ci + 1 == chunks.size();
    std::string clues = found.empty() ? "none" : "";
    for (size_t k = 0; k < found.size(); ++k) clues += (k ? "; " : "") + found[k];
    std::string reason = added ? "found it here" : "not in this part";
    sj.push_back("Target: " + target + "\nClues: " + clues + "\nReason: " + reason);
    aj.push_back(done || last ? "STOP" : "READ");
    if (done) {
      t["eod_after_last"] = last;
      break;
    }
    if (last) t["eod_after_last"] = true;
  }
  t["chunks"] = cj, t["summaries"] = sj, t["actions"] = aj;
  t["answer"] = answers[0];
  return t;
}

}  // namespace sr
