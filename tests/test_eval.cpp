// Scorers: RULER string_match_all / string_match_part test vectors (partial credit, case,
// post-processing), CI summary, and the synthetic generator's determinism and length accuracy.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "data/synthetic.h"
#include "eval/metrics.h"
#include "model_fixtures.h"
#include "core/io.h"
#include "core/utf8.h"
#include "reading/chunker.h"

using namespace sr;

TEST(Eval, RulerStringMatchVectors) {
  std::vector<std::string> refs = {"123", "456", "789"};
  EXPECT_DOUBLE_EQ(string_match_all("The numbers are 123 and 456.", refs), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(string_match_part("The numbers are 123 and 456.", refs), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("nothing", refs), 0.0);
  EXPECT_DOUBLE_EQ(string_match_part("nothing", refs), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("ANSWER: Blue-Whale", {"blue-whale"}), 1.0);  // case-insensitive
  EXPECT_DOUBLE_EQ(string_match_all("categorical", {"cat"}), 1.0);                // plain substring, as RULER
  EXPECT_EQ(ruler_postprocess("  a\tb\x01" "c \n"), "a\nb\nc");
  ScoreCell c = summarize({1, 0, 1, 1});
  EXPECT_DOUBLE_EQ(c.mean, 75.0);
  EXPECT_NEAR(c.ci95, 100 * 1.96 * 0.5 / 2.0, 1e-9);
}

TEST(Eval, SyntheticDeterministicAndLengthAccurate) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  for (std::string task : synthetic_task_names()) {
    SyntheticOptions o;
    o.task = task, o.count = 3, o.seed = 5;
    for (int n : {1000, 4000, 16000, 64000, 128000}) {
      o.tokens = n;
      auto a = make_synthetic(o, tok), b = make_synthetic(o, tok);
      ASSERT_EQ(json(a).dump(), json(b).dump()) << task;
      for (auto& r : a) {
        int len = count_tokens(r["context"].get<std::string>(), tok, false);
        EXPECT_EQ(len, r["length"].get<int>());
        EXPECT_LE(std::abs(len - n), n / 100) << task << " " << n;
        const std::string& ctx = r["context"].get_ref<const std::string&>();
        if (r.contains("aggregate")) {  // counting tasks: every answer word is in the text, no spans
          for (auto& a : r["answers"]) EXPECT_NE(ctx.find(" " + a.get<std::string>() + " "), std::string::npos) << task;
          continue;
        }
        const json& facts = r.contains("clues") ? r["clues"] : r["answers"];  // what each evidence span says
        ASSERT_EQ(r["evidence"].size(), facts.size());
        for (size_t a = 0; a < facts.size(); ++a) {
          size_t eb = r["evidence"][a][0], ee = r["evidence"][a][1];
          EXPECT_EQ(ctx.substr(eb, ee - eb), facts[a].get<std::string>()) << task;
        }
      }
    }
    o.tokens = 2000;
    auto x = make_synthetic(o, tok);
    o.seed = 6;
    EXPECT_NE(json(x).dump(), json(make_synthetic(o, tok)).dump());
  }
  // Depth grid: sample i at (i mod G) / (G - 1), recorded in "depths".
  SyntheticOptions g;
  g.task = "niah_single_1", g.tokens = 2000, g.count = 5, g.depth_grid = 5;
  auto grid = make_synthetic(g, tok);
  for (int i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(grid[i]["depths"][0].get<double>(), i / 4.0);
  EXPECT_LT(grid[0]["evidence"][0][0].get<size_t>(), 200u);   // depth 0: near the start
  EXPECT_GT(grid[4]["evidence"][0][0].get<size_t>(), 1800u);  // depth 1: near the end
  // User haystack text replaces the pseudo-essay, cycling through its sentences.
  std::string hf = test::temp_dir("hay") + "/h.txt";
  write_file_atomic(hf, "Call me Ishmael. Some years ago, never mind how long. Whenever I find myself grim!\nThe end?");
  SyntheticOptions u;
  u.task = "niah_single_2", u.tokens = 3000, u.count = 2, u.haystack_files = {hf};
  for (auto& r : make_synthetic(u, tok)) {
    const std::string& ctx = r["context"].get_ref<const std::string&>();
    EXPECT_NE(ctx.find("Call me Ishmael. Some years ago"), std::string::npos);
    EXPECT_EQ(r["length"].get<int>(), 3000);
  }
  SyntheticOptions bad;
  bad.task = "nope";
  try {
    make_synthetic(bad, tok);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("niah_single_2"), std::string::npos);  // lists the valid ones
  }
}

TEST(Eval, TrajectoriesAreValid) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  SyntheticOptions o;
  o.count = 20, o.tokens = 3000;
  for (std::string task : synthetic_task_names()) {
    o.task = task;
    int i = 0;
    for (auto& r : make_synthetic(o, tok)) {
      json t = make_trajectory(r, tok, 64, 256, uint64_t(i++));
      std::string joined;
      for (auto& c : t["chunks"]) joined += c.get<std::string>();
      const std::string& ctx = r["context"].get_ref<const std::string&>();
      ASSERT_EQ(ctx.compare(0, joined.size(), joined), 0) << "chunks are not a prefix of the context";
      if (r.contains("aggregate")) {
        EXPECT_EQ(joined, ctx) << "counting tasks read everything";
      } else {
        size_t ee = 0;
        for (auto& e : r["evidence"]) ee = std::max<size_t>(ee, e[1]);
        EXPECT_GE(joined.size(), ee) << "stopped before the evidence";
        size_t last = t["chunks"].back().get<std::string>().size();
        EXPECT_LT(joined.size() - last, ee) << "read past the evidence's chunk before stopping";
      }
      EXPECT_EQ(t["actions"].back(), "STOP");
      for (auto& a : r["answers"]) {  // Clues at the STOP round and the answer hold every value
        EXPECT_NE(t["summaries"].back().get<std::string>().find(a.get<std::string>()), std::string::npos) << task;
        EXPECT_NE(t["answer"].get<std::string>().find(a.get<std::string>()), std::string::npos) << task;
      }
      int C = t["chunk_tokens"];
      EXPECT_TRUE(C >= 64 && C <= 256);
    }
  }
}

// --phrasing: "ruler" is RULER's sentences; "varied"/"wide" and "heldout" draw needles, questions
// and keys from disjoint pools, deterministically, and the needle always carries the answer.
TEST(Eval, PhrasingPoolsAreDeterministicAndDisjoint) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  auto shapes = [&](const std::string& phrasing, const std::string& task) {
    SyntheticOptions o;
    o.task = task, o.count = 60, o.seed = 9, o.tokens = 600, o.phrasing = phrasing;
    auto recs = make_synthetic(o, tok);
    EXPECT_EQ(json(recs).dump(), json(make_synthetic(o, tok)).dump());
    std::set<std::string> needles;  // the needle sentence with its value blanked
    for (auto& r : recs) {
      const std::string ctx = r["context"], ans = r["answers"][0];
      auto ev = r["evidence"][0];
      EXPECT_EQ(ctx.substr(ev[0].get<size_t>(), ev[1].get<size_t>() - ev[0].get<size_t>()), ans);
      size_t b = ctx.rfind(". ", ev[0].get<size_t>()), e = ctx.find('.', ev[1].get<size_t>());
      std::string s = ctx.substr(b == std::string::npos ? 0 : b + 2, e - (b == std::string::npos ? 0 : b + 2));
      for (size_t p; (p = s.find(ans)) != std::string::npos;) s.replace(p, ans.size(), "V");
      needles.insert(s);
      EXPECT_EQ(r["input"].get<std::string>().front() == ' ', false);
    }
    return needles;
  };
  for (std::string task : {"niah_single_2", "passkey"}) {
    auto ruler = shapes("ruler", task), varied = shapes("varied", task), held = shapes("heldout", task);
    auto wide = shapes("wide", task), open = shapes("open", task);
    EXPECT_GT(varied.size(), task == "passkey" ? 2u : 10u) << task;  // niah keys differ too
    EXPECT_GT(wide.size(), task == "passkey" ? 4u : 30u) << task;
    for (auto& s : held) EXPECT_EQ(varied.count(s) + wide.count(s) + open.count(s), 0u) << task << ": " << s;
    for (auto& s : ruler)  // RULER's own sentences
      EXPECT_TRUE(s.find("The pass key is V") != std::string::npos || s.find("special magic numbers for") != std::string::npos) << s;
  }
  SyntheticOptions bad;
  bad.task = "passkey", bad.phrasing = "poetic";
  EXPECT_THROW(make_synthetic(bad, tok), Error);
}

// --number-noise: keyless number sentences join the haystack; the needle and its evidence span
// stay exact, the length stays on target, and 0 changes nothing.
TEST(Eval, NumberNoiseAddsKeylessNumbersOnly) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  SyntheticOptions o;
  o.task = "niah_single_2", o.count = 20, o.seed = 4, o.tokens = 2000;
  const std::string plain = json(make_synthetic(o, tok)).dump();
  o.number_noise = 0;
  EXPECT_EQ(json(make_synthetic(o, tok)).dump(), plain);
  o.number_noise = 0.5;
  auto recs = make_synthetic(o, tok);
  for (auto& r : recs) {
    const std::string ctx = r["context"], ans = r["answers"][0];
    auto ev = r["evidence"][0];
    EXPECT_EQ(ctx.substr(ev[0].get<size_t>(), ev[1].get<size_t>() - ev[0].get<size_t>()), ans);
    int digits = 0;
    for (char c : ctx) digits += c >= '0' && c <= '9';
    EXPECT_GT(digits, int(ans.size()) + 20);  // many more numbers than the needle's
    EXPECT_EQ(ctx.find("special magic"), ctx.rfind("special magic"));  // still one keyed sentence
    EXPECT_LE(std::abs(r["length"].get<int>() - 2000), 20);
  }
}

// A user haystack with multi-byte characters, used by every needle task (passkey too), and
// --values mixed: contexts stay valid UTF-8 at the target length (trimming never splits a
// character) and the evidence span is the answer.
TEST(Eval, UserHaystackAndMixedValuesKeepUtf8AndEvidence) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  const std::string dir = test::temp_dir("haystack");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Caf\u00e9 n\u00b0" + std::to_string(i) + " \u2014 na\u00efve \u65e5\u672c\u8a9e line. \U0001F600\n";
  write_file_atomic(dir + "/h.txt", text);
  std::set<std::string> kinds;
  for (std::string task : {"passkey", "niah_single_2", "niah_multikey_1"}) {
    SyntheticOptions o;
    o.task = task, o.count = 40, o.seed = 3, o.tokens = 700, o.phrasing = "wide", o.haystack_files = {dir + "/h.txt"};
    if (task != "passkey") o.values = "mixed";
    for (auto& r : make_synthetic(o, tok)) {
      const std::string ctx = r["context"], ans = r["answers"][0];
      EXPECT_EQ(find_invalid_utf8(ctx), std::string::npos) << task;
      EXPECT_NE(ctx.find("\u65e5\u672c"), std::string::npos) << task;  // the user's text, not the filler
      auto ev = r["evidence"][0];
      EXPECT_EQ(ctx.substr(ev[0].get<size_t>(), ev[1].get<size_t>() - ev[0].get<size_t>()), ans) << task;
      EXPECT_LE(r["length"].get<int>(), 700);
      EXPECT_GE(r["length"].get<int>(), 690);
      EXPECT_NO_THROW((void)json(make_trajectory(r, tok, 64, 128, 1)).dump());
      if (task != "passkey")
        kinds.insert(ans.find('-') != std::string::npos ? "dash" : ans.find_first_not_of("0123456789") == std::string::npos ? "digits" : "code");
    }
  }
  EXPECT_EQ(kinds.size(), 3u);  // digits, codes and dashed values (word pairs, uuids, QX-1234)
  // --values free: numbers, dashed combinations, lowercase passwords and phrases, each at its
  // evidence span, in valid UTF-8
  std::set<std::string> shapes;
  SyntheticOptions f;
  f.task = "niah_single_2", f.count = 60, f.seed = 8, f.tokens = 700, f.phrasing = "wide", f.values = "free";
  f.haystack_files = {dir + "/h.txt"};
  for (auto& r : make_synthetic(f, tok)) {
    const std::string ctx = r["context"], ans = r["answers"][0];
    auto ev = r["evidence"][0];
    EXPECT_EQ(ctx.substr(ev[0].get<size_t>(), ev[1].get<size_t>() - ev[0].get<size_t>()), ans);
    EXPECT_EQ(find_invalid_utf8(ctx), std::string::npos);
    shapes.insert(ans.rfind("the ", 0) == 0 ? "phrase" : ans.find('-') != std::string::npos ? "dashed"
                  : ans.find_first_not_of("0123456789") == std::string::npos ? "number" : "password");
  }
  EXPECT_EQ(shapes.size(), 4u);
}

// --phrasing open: keys with invented words (an open key space) and distractor keys that share a
// word with the asked key; the asked key's needle is still the only evidence.
TEST(Eval, OpenPhrasingInventsKeysAndNearMissDistractors) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  SyntheticOptions o;
  o.task = "niah_multikey_1", o.count = 200, o.seed = 5, o.tokens = 800, o.phrasing = "open";
  std::set<std::string> words;
  int near = 0;
  for (auto& r : make_synthetic(o, tok)) {
    const std::string q = r["input"], ctx = r["context"];
    auto ev = r["evidence"][0];
    EXPECT_EQ(ctx.substr(ev[0].get<size_t>(), ev[1].get<size_t>() - ev[0].get<size_t>()), r["answers"][0].get<std::string>());
    // the target names the asked key: "the <name> for <first> <second>"
    const std::string t = r["target"];
    size_t f = t.rfind(" for ");
    ASSERT_NE(f, std::string::npos) << t;
    const std::string key = t.substr(f + 5);
    size_t sp = key.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << key;
    words.insert(key.substr(0, key.find(' '))), words.insert(key.substr(sp + 1));
    // a near miss: the first or the last word of the key next to a different word, in a needle
    const std::string first = key.substr(0, key.find(' ')) + " ", last = " " + key.substr(sp + 1);
    size_t hits = 0;
    for (size_t p = ctx.find(first); p != std::string::npos; p = ctx.find(first, p + 1)) hits += ctx.compare(p, key.size(), key) != 0;
    for (size_t p = ctx.find(last); p != std::string::npos; p = ctx.find(last, p + 1)) hits += p < key.size() - last.size() || ctx.compare(p - (key.size() - last.size()), key.size(), key) != 0;
    near += hits > 0;
  }
  EXPECT_GT(words.size(), 180u);  // about 100 invented words on top of the pools' words
  EXPECT_GT(near, 80);            // about half of the records have a near-miss distractor
  SyntheticOptions w = o;
  w.phrasing = "wide";  // the wide pool alone has no invented keys: fewer distinct words
  std::set<std::string> wide_words;
  for (auto& r : make_synthetic(w, tok)) {
    const std::string t = r["target"];
    const std::string key = t.substr(t.rfind(" for ") + 5);
    wide_words.insert(key.substr(0, key.find(' '))), wide_words.insert(key.substr(key.rfind(' ') + 1));
  }
  EXPECT_LT(wide_words.size() + 60, words.size());
}

// --reject-distractors: the chunk holding another key's needle says so in its Reason, naming that
// key; without the flag the trajectory is unchanged ("not in this part"), and records of tasks
// without distractors carry no "distractors" field.
TEST(Eval, TrajectoriesCanNameTheDistractorKey) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  SyntheticOptions o;
  o.task = "niah_multikey_1", o.count = 30, o.seed = 12, o.tokens = 1500, o.phrasing = "wide";
  int named = 0;
  for (auto& r : make_synthetic(o, tok)) {
    ASSERT_TRUE(r.contains("distractors"));
    ASSERT_EQ(r["distractors"].size(), 3u);
    const std::string ctx = r["context"];
    for (auto& d : r["distractors"]) {  // the key sits in the value's sentence, and is not the asked one
      const size_t b = d[0].get<size_t>(), from = b > 160 ? b - 160 : 0;
      EXPECT_NE(ctx.substr(from, 320).find(d[2].get<std::string>()), std::string::npos);
      EXPECT_EQ(r["target"].get<std::string>().find(" for " + d[2].get<std::string>()), std::string::npos);
    }
    json plain = make_trajectory(r, tok, 64, 128, 3), rej = make_trajectory(r, tok, 64, 128, 3, true);
    ASSERT_EQ(plain["chunks"], rej["chunks"]);
    ASSERT_EQ(plain["actions"], rej["actions"]);
    for (size_t i = 0; i < plain["summaries"].size(); ++i) {
      const std::string a = plain["summaries"][i], b = rej["summaries"][i], chunk = rej["chunks"][i];
      EXPECT_EQ(a.find("not the one asked"), std::string::npos);
      if (a == b) continue;
      EXPECT_NE(a.find("Reason: not in this part"), std::string::npos) << a;
      size_t k = b.find("Reason: the value here is for ");
      ASSERT_NE(k, std::string::npos) << b;
      std::string key = b.substr(k + 30, b.find(", not the one asked") - k - 30);
      const std::string before = i ? rej["chunks"][i - 1].get<std::string>() : "";
      EXPECT_NE((before + chunk).find(key), std::string::npos) << key;  // the key it names was just read
      ++named;
    }
  }
  EXPECT_GT(named, 30);
  o.task = "niah_single_2";
  for (auto& r : make_synthetic(o, tok)) EXPECT_FALSE(r.contains("distractors"));
}
