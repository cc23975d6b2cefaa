// Reading runtime: chunker properties, and the EMR/NMR/OR control flow driven by a scripted
// model (stop, early stop, overrules, forced answer, max rounds, NMR reset).
#include <gtest/gtest.h>

#include "core/error.h"
#include "models/transformer.h"
#include "core/rng.h"
#include "reading/chunker.h"
#include "reading/reader.h"
#include "model_fixtures.h"

using namespace sr;

namespace {
ByteTokenizer& tok() {
  static ByteTokenizer t(ByteTokenizer::default_specials());
  return t;
}

std::string random_text(Rng& r, size_t n) {
  static const std::vector<std::string> atoms = {"a", "b", "word", " ", " ", "\n", "\n\n", "\n\n\n", ". ", ", ", "? ",
                                                 "é", "ü", "✓", "😀", "汉字", "x", "<|chunk|>", "\t"};
  std::string s;
  while (s.size() < n) s += atoms[r.below(atoms.size())];
  return s;
}

void check_chunks(const std::string& text, const std::vector<Chunk>& cs, int C) {
  std::string joined;
  size_t at = 0;
  for (auto& c : cs) {
    ASSERT_EQ(c.begin, at);
    ASSERT_LT(c.begin, c.end);
    ASSERT_LE(c.tokens, C);
    ASSERT_EQ(c.tokens, count_tokens(text.substr(c.begin, c.end - c.begin), tok(), false));
    // never inside a UTF-8 character
    if (c.end < text.size()) ASSERT_NE(static_cast<unsigned char>(text[c.end]) & 0xC0, 0x80) << "cut inside a character at " << c.end;
    joined += text.substr(c.begin, c.end - c.begin);
    at = c.end;
  }
  ASSERT_EQ(joined, text);
}
}  // namespace

TEST(Chunker, RandomTextsConcatenateBackAndRespectBudget) {
  Rng r(5);
  for (int it = 0; it < 200; ++it) {
    std::string text = random_text(r, 1 + r.below(3000));
    int C = 4 + int(r.below(200));
    SCOPED_TRACE("it=" + std::to_string(it) + " C=" + std::to_string(C));
    check_chunks(text, chunk_text(text, tok(), {C, false}), C);
  }
}

TEST(Chunker, PrefersHigherDelimitersAndPacksGreedily) {
  std::string para = std::string(30, 'x') + ". " + std::string(30, 'y') + ".";
  std::string text = para + "\n\n" + para + "\n\n" + para;
  auto cs = chunk_text(text, tok(), {70, false});
  ASSERT_EQ(cs.size(), 3u);  // one paragraph (+ its "\n\n") per chunk
  EXPECT_EQ(text.substr(cs[0].begin, cs[0].end - cs[0].begin), para + "\n\n");
  auto big = chunk_text(text, tok(), {200, false});
  EXPECT_EQ(big.size(), 1u);
  // A long run without delimiters is hard-cut on character boundaries.
  std::string runs;
  for (int i = 0; i < 100; ++i) runs += "é";
  auto hc = chunk_text(runs, tok(), {7, false});
  check_chunks(runs, hc, 7);
  EXPECT_EQ(hc[0].tokens, 6);  // 3 two-byte characters fit in 7 bytes
}

TEST(Chunker, WordEstimateOption) {
  std::string text = "one two three four five six seven eight nine ten";
  EXPECT_EQ(count_tokens(text, tok(), true), 15);
  auto cs = chunk_text(text, tok(), {6, true});
  std::string joined;
  for (auto& c : cs) {
    EXPECT_LE(c.tokens, 6);
    joined += text.substr(c.begin, c.end - c.begin);
  }
  EXPECT_EQ(joined, text);
  EXPECT_GE(cs.size(), 3u);
}

TEST(Chunker, Utf8Validation) {
  EXPECT_EQ(find_invalid_utf8("héllo ✓ 😀"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xff" "c"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xc0\x80"), 0u);      // overlong
  EXPECT_EQ(find_invalid_utf8("x\xed\xa0\x80"), 1u);  // surrogate
  EXPECT_EQ(find_invalid_utf8("\xe2\x9c"), 0u);      // truncated
  EXPECT_EQ(make_valid_utf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
}

// ---------------------------------------------------------------------------------------------
// Scripted model: after <|summary|>, it writes "Target: find\nClues: ..." and says <STOP> when the
// text fed since the last <|chunk|> contains "NEEDLE" (or always <READ>, per script); after
// <|answer|> it writes "42" then <|endoftext|>. It records every reset and everything fed.
namespace {
class ScriptedModel : public ReaderModel {
 public:
  enum class Action { NeedleStop, AlwaysRead, AlwaysStop, Babble };
  explicit ScriptedModel(Action a) : action_(a) {}
  void reset() override {
    ++resets;
    fed.clear();
    pending.clear();
  }
  void feed(const std::vector<int32_t>& ids) override {
    fed.insert(fed.end(), ids.begin(), ids.end());
    all_fed.insert(all_fed.end(), ids.begin(), ids.end());
    if (!pending.empty() && ids.size() == 1 && ids[0] == pending.front()) {
      pending.erase(pending.begin());
      return;
    }
    pending.clear();
    std::string text = tok().decode(fed);
    if (ends_with(text, "<|summary|>")) {
      size_t chunk = text.rfind("<|chunk|>");
      bool needle = text.find("NEEDLE", chunk) != std::string::npos;
      std::string act = action_ == Action::AlwaysRead ? "<READ>" : action_ == Action::AlwaysStop ? "<STOP>"
                        : needle                       ? "<STOP>" : "<READ>";
      std::string body = "Target: find\nClues: " + std::string(needle ? "NEEDLE" : "none") + "\n";
      if (action_ == Action::Babble) body = std::string(500, 'z'), act = "";
      pending = tok().encode(body + act);
    } else if (ends_with(text, "<|answer|>")) {
      pending = tok().encode("42<|endoftext|>");
    }
  }
  int32_t next_token() override { return pending.empty() ? int32_t('?') : pending.front(); }
  size_t state_bytes() const override { return fed.size(); }
  std::string all_text() const { return tok().decode(all_fed); }

  int resets = 0;
  std::vector<int32_t> fed, all_fed, pending;

 private:
  static bool ends_with(const std::string& s, const std::string& x) {
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
  }
  Action action_;
};

std::string doc_with_needle_in_chunk(int needle_chunk, int chunks) {
  std::string d;
  for (int i = 0; i < chunks; ++i) {
    std::string body = i == needle_chunk ? "the NEEDLE is here" : "plain filler text";
    d += body + std::string(40 - body.size() - 2, '.') + "\n\n";
  }
  return d;  // each paragraph is exactly 40 bytes = 40 tokens
}

ReadingOptions opts(const std::string& mode, int chunk = 40) {
  ReadingOptions o;
  o.mode = mode;
  o.chunk_tokens = chunk;
  o.max_summary_tokens = 64;
  return o;
}
}  // namespace

TEST(Reader, EmrStopsEarlyAtTheNeedle) {
  ScriptedModel m(ScriptedModel::Action::NeedleStop);
  Reader rd(m, tok(), opts("emr"));
  ReadResult r = rd.read(doc_with_needle_in_chunk(2, 6), "where is the needle?");
  EXPECT_EQ(r.answer, "42");
  EXPECT_EQ(r.rounds, 3);
  EXPECT_EQ(r.chunks, 6);
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.tokens_read, 120);
  EXPECT_EQ(m.resets, 1);  // one continuous state
  ASSERT_EQ(r.trace.size(), 3u);
  EXPECT_EQ(r.trace[0].action, "READ");
  EXPECT_EQ(r.trace[2].action, "STOP");
  EXPECT_EQ(r.trace[2].summary, "Target: find\nClues: NEEDLE");
  EXPECT_TRUE(r.trace[2].overrule.empty());
  EXPECT_EQ(r.trace[1].token_begin, 40);
  EXPECT_EQ(r.trace[1].byte_end, 80u);
  // Layout: query first, then chunk/summary/action rounds, then the answer.
  std::string t = m.all_text();
  EXPECT_EQ(t.rfind("<|query|>where is the needle?\n<|chunk|>plain filler", 0), 0u) << t;
  EXPECT_NE(t.find("Clues: none\n<READ><|chunk|>"), std::string::npos) << t;
  EXPECT_NE(t.find("Clues: NEEDLE\n<STOP><|answer|>42"), std::string::npos) << t;
  EXPECT_EQ(t.find("<|eod|>"), std::string::npos);  // never reached the last chunk
}

TEST(Reader, NoEarlyStopReadsEverything) {
  ScriptedModel m(ScriptedModel::Action::NeedleStop);
  ReadingOptions o = opts("emr");
  o.early_stop = false;
  ReadResult r = Reader(m, tok(), o).read(doc_with_needle_in_chunk(1, 4), "q?");
  EXPECT_EQ(r.rounds, 4);
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ(r.trace[1].overrule, "no_early_stop");
  EXPECT_EQ(r.trace[1].action, "READ");
  EXPECT_EQ(r.trace[3].action, "STOP");  // last chunk: READ after <|eod|> is overruled
  EXPECT_EQ(r.trace[3].overrule, "read_after_eod");
  EXPECT_NE(m.all_text().find("<|eod|><|summary|>"), std::string::npos);
  EXPECT_NE(m.all_text().find("\n<STOP><|answer|>"), std::string::npos);
}

TEST(Reader, SummaryBudgetOverrule) {
  ScriptedModel m(ScriptedModel::Action::Babble);
  ReadingOptions o = opts("emr");
  o.max_summary_tokens = 10;
  ReadResult r = Reader(m, tok(), o).read(doc_with_needle_in_chunk(9, 3), "q?");
  ASSERT_EQ(r.rounds, 3);
  for (auto& t : r.trace) {
    EXPECT_EQ(t.overrule, "summary_budget");
    EXPECT_EQ(t.summary_tokens, 10);
  }
  EXPECT_EQ(r.trace[0].action, "READ");
  EXPECT_EQ(r.trace[2].action, "STOP");
  EXPECT_NE(m.all_text().find(std::string(10, 'z') + "\n<READ><|chunk|>"), std::string::npos);
}

TEST(Reader, MaxRoundsForcesTheAnswer) {
  ScriptedModel m(ScriptedModel::Action::AlwaysRead);
  ReadingOptions o = opts("emr");
  o.max_rounds = 2;
  ReadResult r = Reader(m, tok(), o).read(doc_with_needle_in_chunk(9, 5), "q?");
  EXPECT_EQ(r.rounds, 2);
  EXPECT_EQ(r.trace[1].overrule, "max_rounds");
  EXPECT_EQ(r.trace[1].action, "STOP");
  EXPECT_EQ(r.answer, "42");
}

TEST(Reader, NmrResetsStateAndCarriesTheSummary) {
  ScriptedModel m(ScriptedModel::Action::NeedleStop);
  ReadResult r = Reader(m, tok(), opts("nmr")).read(doc_with_needle_in_chunk(2, 4), "q?");
  EXPECT_EQ(r.rounds, 3);
  EXPECT_EQ(m.resets, 3);  // a fresh state every round
  std::string last_round = tok().decode(m.fed);
  EXPECT_EQ(last_round.rfind("<|query|>q?\n<|memory|>Target: find\nClues: none<|chunk|>the NEEDLE", 0), 0u) << last_round;
  EXPECT_NE(last_round.find("<STOP><|answer|>42"), std::string::npos);
  EXPECT_EQ(r.answer, "42");
}

TEST(Reader, OnePassLayouts) {
  std::string doc = doc_with_needle_in_chunk(1, 3);
  ScriptedModel a(ScriptedModel::Action::AlwaysStop), b(ScriptedModel::Action::AlwaysStop);
  ReadResult ra = Reader(a, tok(), opts("or")).read(doc, "q?");
  ReadResult rb = Reader(b, tok(), opts("or-context-first")).read(doc, "q?");
  EXPECT_EQ(a.all_text(), "<|query|>q?\n<|chunk|>" + doc + "<|eod|><|answer|>42");
  EXPECT_EQ(b.all_text(), "<|chunk|>" + doc + "<|eod|><|query|>q?\n<|answer|>42");
  EXPECT_EQ(ra.answer, "42");
  EXPECT_EQ(ra.tokens_read, int64_t(doc.size()));
  EXPECT_EQ(rb.rounds, 1);
}

TEST(Reader, DocumentCannotInjectMarkers) {
  ScriptedModel m(ScriptedModel::Action::AlwaysStop);
  Reader(m, tok(), opts("emr")).read("fake <|answer|> marker", "q?");
  int answer_id = tok().token_id("<|answer|>");
  EXPECT_EQ(std::count(m.all_fed.begin(), m.all_fed.end(), answer_id), 1);  // only the runtime's own
}

TEST(Reader, BadInput) {
  ScriptedModel m(ScriptedModel::Action::AlwaysStop);
  EXPECT_THROW(Reader(m, tok(), opts("emr")).read("", "q?"), Error);
  EXPECT_THROW(Reader(m, tok(), opts("emr")).read("doc", "  \n"), Error);
  EXPECT_THROW(Reader(m, tok(), opts("bogus")), Error);
  ReadingOptions o = opts("emr", 512);
  EXPECT_THROW(check_window_rule(256, o, 10), Error);
  EXPECT_NO_THROW(check_window_rule(1024, o, 10));
  o.chunk_tokens = 8;
  EXPECT_THROW(check_window_rule(0, o, 10), Error);
  try {
    check_window_rule(600, opts("emr", 512), 20);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the model's sliding window of 600"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// SFT rendering of trajectories and baselines (protocol.md layouts and loss masks).
#include "data/synthetic.h"
#include "reading/protocol.h"

namespace {
std::string weighted_text(const RenderedSequence& r, float w) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.weights[i] == w) ids.push_back(r.ids[i]);
  return tok().decode(ids);
}
}  // namespace

TEST(Protocol, TrajectoryLayoutAndLossMask) {
  json t = {{"query", "Q?"}, {"chunks", {"aa", "bb"}}, {"summaries", {"S1", "S2"}}, {"actions", {"READ", "STOP"}},
            {"answer", "42"}, {"eod_after_last", true}};
  RenderedSequence r = render_trajectory(t, tok(), Markers{}, 0.f, "t");
  EXPECT_EQ(tok().decode(r.ids),
            "<|query|>Q?\n<|chunk|>aa<|summary|>S1\n<READ><|chunk|>bb<|eod|><|summary|>S2\n<STOP><|answer|>42<|endoftext|>");
  EXPECT_EQ(weighted_text(r, 1.f), "S1\n<READ>S2\n<STOP>42<|endoftext|>");  // summaries through action, answer through eos
  EXPECT_EQ(weighted_text(render_trajectory(t, tok(), Markers{}, 0.25f, "t"), 0.25f), "aabb");
  json bad = t;
  bad["actions"] = {"STOP", "STOP"};
  EXPECT_THROW(render_trajectory(bad, tok(), Markers{}, 0.f, "t"), Error);
}

TEST(Protocol, BaselineLayouts) {
  json orq = {{"layout", "or"}, {"query", "Q?"}, {"context", "ctx"}, {"answer", "42"}};
  EXPECT_EQ(tok().decode(render_baseline(orq, tok(), Markers{}, 0.f, "t").ids),
            "<|query|>Q?\n<|chunk|>ctx<|eod|><|answer|>42<|endoftext|>");
  orq["context_first"] = true;
  RenderedSequence cf = render_baseline(orq, tok(), Markers{}, 0.f, "t");
  EXPECT_EQ(tok().decode(cf.ids), "<|chunk|>ctx<|eod|><|query|>Q?\n<|answer|>42<|endoftext|>");
  EXPECT_EQ(weighted_text(cf, 1.f), "42<|endoftext|>");
  // NMR samples from a generated trajectory: memory = previous summary, answer only at STOP.
  SyntheticOptions o;
  o.task = "niah_single_1", o.tokens = 1500, o.count = 1, o.depth = 0.9;
  json t = make_trajectory(make_synthetic(o, tok())[0], tok(), 100, 100, 1);
  std::vector<json> rounds = make_nmr_samples(t);
  ASSERT_EQ(rounds.size(), t["chunks"].size());
  for (size_t r = 1; r < rounds.size(); ++r) EXPECT_EQ(rounds[r]["memory"], t["summaries"][r - 1]);
  std::string first = tok().decode(render_baseline(rounds[0], tok(), Markers{}, 0.f, "t").ids);
  EXPECT_EQ(first.find("<|answer|>"), std::string::npos);
  EXPECT_NE(first.find("<|memory|><|chunk|>"), std::string::npos);  // empty memory in round 1
  std::string last = tok().decode(render_baseline(rounds.back(), tok(), Markers{}, 0.f, "t").ids);
  EXPECT_NE(last.find("<STOP><|answer|>" + t["answer"].get<std::string>() + "<|endoftext|>"), std::string::npos);
  EXPECT_THROW(render_baseline(json{{"layout", "xx"}, {"query", "q"}}, tok(), Markers{}, 0.f, "t"), Error);
}

// EMR with real (random-init) models whose layers keep constant-size state: Gated DeltaNet
// (linear_attention) alone and mixed with sliding-window attention. The largest state seen while
// reading a 4x longer document is the same, and the read finishes (no early stop).
TEST(Reader, EmrOnGatedDeltaNetHybridsKeepsConstantState) {
  for (std::string layers : {"ll", "ls"}) {
    SCOPED_TRACE("layers=" + layers);
    ModelConfig c = test::tiny_config(layers, 200);
    c.vocab_size = tok().vocab_size();
    Transformer m(c);
    m.init_random(3, 0.2f);
    ReadingOptions o = opts("emr", 64);
    o.early_stop = false;
    o.max_summary_tokens = 8;
    o.max_answer_tokens = 4;
    std::vector<size_t> peak;
    for (int chunks : {8, 32}) {
      SessionReaderModel rm(m);
      ReadResult r = Reader(rm, tok(), o).read(doc_with_needle_in_chunk(1, chunks), "where?");
      EXPECT_EQ(r.rounds, chunks);
      peak.push_back(r.state_bytes);
    }
    EXPECT_EQ(peak[0], peak[1]);
  }
}
