// LongBench metrics: the test vectors of ../shared/docs/evals.md A1.7 (computed with the official
// Python code), property tests of the ROUGE-L and SequenceMatcher ports against straightforward
// re-derivations on random strings, and differential tests against the real Python packages
// (jieba, difflib, Levenshtein) through tests/oracles/py_oracle.py when they are installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "core/error.h"
#include "core/io.h"
#include "core/rng.h"
#include "eval/longbench_metrics.h"

using namespace sr;
using namespace sr::longbench;
using py::ustr;

namespace {
ustr U(const std::string& s) { return py::from_utf8(s); }
const char* kJiebaDir = "/usr/lib/python3/dist-packages/jieba";
bool have_jieba() { return std::ifstream(Jieba::default_dir() + "/dict.txt").good(); }

// Runs the Python oracle over JSON queries; empty result when Python or a module is missing.
std::vector<json> oracle(const std::vector<json>& queries, const std::string& ops) {
  std::string in = testing::TempDir() + "oracle_in.jsonl", out = testing::TempDir() + "oracle_out.jsonl";
  {
    std::ofstream f(in);
    for (auto& q : queries) f << q.dump() << "\n";
  }
  std::string cmd = "/usr/bin/python3 " SMOOTHREAD_SOURCE_DIR "/tests/oracles/py_oracle.py " + ops + " < " + in +
                    " > " + out + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return {};
  std::vector<json> r;
  std::ifstream f(out);
  for (std::string line; std::getline(f, line);) r.push_back(json::parse(line));
  EXPECT_EQ(r.size(), queries.size());
  return r;
}
}  // namespace

// ---------------------------------------------------------------- CPython string semantics
TEST(PyStr, LowerSplitDigitsLikeCPython) {
  EXPECT_EQ(py::lower(U("ÀÉÎ İ ΣΑΣ ΟΔΟΣ. Σ")), U("àéî i̇ σας οδος. σ"));  // full mapping + final sigma
  EXPECT_EQ(py::split(U(" a\tb\u3000c\u00a0d\u200be\x1f")), (std::vector<ustr>{U"a", U"b", U"c", U("d\u200be")}));
  EXPECT_EQ(py::digit_runs(U("x１３y13z٣")), (std::vector<ustr>{U("１３"), U"13", U("٣")}));
  EXPECT_TRUE(py::is_word(U'é') && py::is_word(U'_') && !py::is_word(U'-'));
}

// ---------------------------------------------------------------- evals.md A1.7 vectors
TEST(LongBenchMetrics, TestVectorsFromTheOfficialCode) {
  EXPECT_DOUBLE_EQ(qa_f1(U("The Eiffel Tower, Paris."), U("Eiffel tower in Paris")), 0.8571428571428571);
  EXPECT_DOUBLE_EQ(qa_f1(U("the cat sat"), U("a cat")), 0.6666666666666666);
  EXPECT_EQ(qa_f1(U(""), U("")), 0.0);
  EXPECT_EQ(py::to_utf8(normalize_answer(U("The  Cat's   hat, a-b!"))), "cats hat ab");
  EXPECT_EQ(py::to_utf8(normalize_answer(U("the_cat"))), "thecat");  // punctuation goes before articles
  EXPECT_EQ(rouge_score(U("the cat sat on the mat"), U("the cat is on the mat")), 0.7999999950000002);
  EXPECT_EQ(rouge_score(U("the the the cat"), U("the cat")), 0.999999995);
  EXPECT_EQ(rouge_score(U("A b c. D e f."), U("a b c d e f")), 0.6666666616666668);
  EXPECT_EQ(rouge_score(U("x y z"), U("z y x")), 0.3333333283333334);
  EXPECT_EQ(rouge_score(U("hello ."), U("hello")), 0.999999995);
  EXPECT_EQ(rouge_score(U("..."), U("abc")), 0.0);
  std::vector<ustr> abc = {U"A", U"AB", U"B"};
  EXPECT_EQ(classification(U("AB A"), U("AB"), abc), 1.0);
  std::vector<ustr> quirk = {U"A", U"AB", U"ABC", U"B"};
  EXPECT_EQ(classification(U("ABC AB A B"), U("ABC"), quirk), 0.5);  // the list-mutation skip
  EXPECT_DOUBLE_EQ(count(U("There are 12 or 13 paragraphs; 13."), U("13")), 0.6666666666666666);
  EXPECT_EQ(retrieval(U("Paragraph 3 or paragraph 30"), U("Paragraph 3"), false), 0.5);
  EXPECT_EQ(retrieval(U("段落2"), U("段落2"), true), 1.0);
  EXPECT_THROW(retrieval(U("1"), U("no number"), false), std::invalid_argument);
  EXPECT_EQ(code_sim(U("\n\n    return x\n"), U("return x"), SimBackend::difflib), 0.8);
  EXPECT_EQ(code_sim(U("```python\n# comment\nx = 1\n"), U("x = 1"), SimBackend::difflib), 1.0);
  EXPECT_EQ(code_sim(U("# only comment"), U("x = 1"), SimBackend::difflib), 0.0);
  EXPECT_EQ(fuzz_ratio(U(""), U(""), SimBackend::difflib), 100);  // equality is checked first
  EXPECT_EQ(fuzz_ratio(U("cbca"), U("aacababb"), SimBackend::difflib), 33);
  EXPECT_EQ(fuzz_ratio(U("cbca"), U("aacababb"), SimBackend::levenshtein), 50);
}

TEST(LongBenchMetrics, FirstLineRuleAndMaxOverAnswers) {
  MetricContext ctx;
  EXPECT_EQ(score_sample(*find_task("triviaqa"), "\n\nParis\nLondon", {"London", "Paris"}, ctx), 1.0);
  EXPECT_EQ(score_sample(*find_task("hotpotqa"), "\n\nParis\nLondon", {"London"}, ctx), 2.0 / 3.0);
  EXPECT_EQ(find_task("nope"), nullptr);
  EXPECT_EQ(tasks().size(), 21u);
  int e = 0;
  for (auto& t : tasks()) e += t.in_e;
  EXPECT_EQ(e, 13);
}

// The official rouge_score recurses once per backtracking step: 990 steps survive, 991 do not.
TEST(LongBenchMetrics, RougeRecursionLimitQuirk) {
  auto probe = [](int n, int budget) {
    std::string r, h;
    for (int i = 0; i < n; ++i) r += (i ? " r" : "r") + std::to_string(i), h += "h" + std::to_string(i) + " ";
    h += "r0";  // backtrack: n-1 steps up, one diagonal match
    bool zeroed = false;
    double s = rouge_l(U(h), U(r), budget, &zeroed);
    return std::make_pair(s, zeroed);
  };
  EXPECT_GT(probe(990, 990).first, 0.0);
  EXPECT_EQ(probe(991, 990).first, 0.0);
  EXPECT_TRUE(probe(991, 990).second);
  EXPECT_GT(probe(989, 989).first, 0.0);
  EXPECT_EQ(probe(990, 989).first, 0.0);
}

// ---------------------------------------------------------------- re-derivations on random strings
namespace {
// pltrdy rouge-L written out the straightforward way: recursive reconstruction over a memoized
// LCS table, per-reference union increments summed (no early exits, no id mapping).
double rouge_rederived(const std::string& pred, const std::string& gold) {
  auto sents = [](const std::string& t) {
    std::vector<std::vector<std::string>> out;
    size_t b = 0;
    while (true) {
      size_t p = t.find('.', b);
      std::string piece = t.substr(b, p == std::string::npos ? std::string::npos : p - b);
      if (!piece.empty()) {
        std::vector<std::string> words, split;
        std::string w;
        for (char c : piece + " ")
          if (c == ' ' || c == '\t' || c == '\n') {
            if (!w.empty()) split.push_back(w), w.clear();
          } else {
            w += c;
          }
        std::string joined;
        for (size_t i = 0; i < split.size(); ++i) joined += (i ? " " : "") + split[i];
        size_t s = 0;
        while (true) {
          size_t q = joined.find(' ', s);
          words.push_back(joined.substr(s, q == std::string::npos ? std::string::npos : q - s));
          if (q == std::string::npos) break;
          s = q + 1;
        }
        out.push_back(words);
      }
      if (p == std::string::npos) break;
      b = p + 1;
    }
    return out;
  };
  auto hyp = sents(pred), ref = sents(gold);
  if (hyp.empty() || ref.empty()) return 0.0;
  std::set<std::string> rs, hs, uni;
  for (auto& s : ref) rs.insert(s.begin(), s.end());
  for (auto& s : hyp) hs.insert(s.begin(), s.end());
  double llcs = 0;
  for (auto& r : ref) {
    size_t before = uni.size();
    for (auto& h : hyp) {
      std::map<std::pair<size_t, size_t>, int> memo;
      std::function<int(size_t, size_t)> L = [&](size_t i, size_t j) -> int {
        if (!i || !j) return 0;
        auto k = std::make_pair(i, j);
        auto it = memo.find(k);
        if (it != memo.end()) return it->second;
        int v = r[i - 1] == h[j - 1] ? L(i - 1, j - 1) + 1 : std::max(L(i - 1, j), L(i, j - 1));
        return memo[k] = v;
      };
      std::function<void(size_t, size_t)> recon = [&](size_t i, size_t j) {
        if (!i || !j) return;
        if (r[i - 1] == h[j - 1]) recon(i - 1, j - 1), uni.insert(r[i - 1]);
        else if (L(i - 1, j) > L(i, j - 1)) recon(i - 1, j);
        else recon(i, j - 1);
      };
      recon(r.size(), h.size());
    }
    llcs += double(uni.size() - before);
  }
  double R = llcs / double(rs.size()), P = llcs / double(hs.size());
  return 2.0 * ((P * R) / (P + R + 1e-8));
}

// difflib's Ratcliff/Obershelp written out with a brute-force longest block: blocks are runs of
// equal elements whose b-side is not "popular" (autojunk), earliest in a then earliest in b, then
// extended by equal elements on both ends; recurse left and right.
double difflib_rederived(const ustr& a, const ustr& b) {
  if (a.empty() && b.empty()) return 1.0;
  std::map<char32_t, int> cnt;
  for (char32_t c : b) ++cnt[c];
  auto popular = [&](char32_t c) { return b.size() >= 200 && cnt[c] > int(b.size() / 100 + 1); };
  std::function<int(int, int, int, int)> rec = [&](int alo, int ahi, int blo, int bhi) -> int {
    int bi = alo, bj = blo, bk = 0;
    for (int i = alo; i < ahi; ++i)
      for (int j = blo; j < bhi; ++j) {
        int k = 0;
        while (i + k < ahi && j + k < bhi && a[i + k] == b[j + k] && !popular(b[j + k])) ++k;
        if (k > bk) bi = i, bj = j, bk = k;
      }
    while (bi > alo && bj > blo && a[bi - 1] == b[bj - 1]) --bi, --bj, ++bk;
    while (bi + bk < ahi && bj + bk < bhi && a[bi + bk] == b[bj + bk]) ++bk;
    if (!bk) return 0;
    return bk + rec(alo, bi, blo, bj) + rec(bi + bk, ahi, bj + bk, bhi);
  };
  return 2.0 * rec(0, int(a.size()), 0, int(b.size())) / double(a.size() + b.size());
}

std::string random_words(Rng& rng, int n, const std::vector<std::string>& vocab) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += vocab[rng.next_u64() % vocab.size()];
    uint32_t r = rng.next_u64() % 10;
    s += r == 0 ? "." : r == 1 ? " . " : r == 2 ? "  " : " ";
  }
  return s;
}
}  // namespace

TEST(LongBenchMetrics, RougeMatchesRederivationOnRandomStrings) {
  Rng rng(7);
  const std::vector<std::string> vocab = {"a", "b", "c", "the", "cat", "B", "dog", "x"};
  for (int t = 0; t < 400; ++t) {
    std::string p = random_words(rng, 1 + int(rng.next_u64() % 14), vocab);
    std::string g = random_words(rng, 1 + int(rng.next_u64() % 14), vocab);
    if (t % 17 == 0) p = "..";
    ASSERT_EQ(rouge_score(U(p), U(g)), rouge_rederived(p, g)) << "pred '" << p << "' gold '" << g << "'";
  }
}

TEST(LongBenchMetrics, SequenceMatcherMatchesRederivationOnRandomStrings) {
  Rng rng(11);
  for (int t = 0; t < 300; ++t) {
    // short strings over small alphabets (many ties), and long ones past autojunk's 200
    bool longb = t % 5 == 0;
    int na = 1 + rng.next_u64() % (longb ? 60 : 12), nb = longb ? 200 + rng.next_u64() % 60 : rng.next_u64() % 12;
    int alpha = 2 + rng.next_u64() % (longb ? 30 : 4);
    ustr a, b;
    for (int i = 0; i < na; ++i) a.push_back(U'a' + rng.next_u64() % alpha);
    for (int i = 0; i < nb; ++i) b.push_back(U'a' + rng.next_u64() % alpha);
    ASSERT_EQ(difflib_ratio(a, b), difflib_rederived(a, b)) << py::to_utf8(a) << " | " << py::to_utf8(b);
  }
}

// ---------------------------------------------------------------- differential vs Python
TEST(LongBenchMetrics, SequenceMatcherAndLevenshteinEqualPythonOnRandomStrings) {
  Rng rng(5);
  std::vector<json> q;
  std::vector<std::pair<ustr, ustr>> pairs;
  for (int t = 0; t < 600; ++t) {
    int na = rng.next_u64() % (t % 7 == 0 ? 400 : 20), nb = rng.next_u64() % (t % 7 == 0 ? 400 : 20);
    int alpha = 2 + rng.next_u64() % 6;
    ustr a, b;
    for (int i = 0; i < na; ++i) a.push_back(t % 3 ? U'a' + rng.next_u64() % alpha : 0x4E00 + rng.next_u64() % alpha);
    for (int i = 0; i < nb; ++i) b.push_back(t % 3 ? U'a' + rng.next_u64() % alpha : 0x4E00 + rng.next_u64() % alpha);
    pairs.emplace_back(a, b);
    q.push_back({{"op", "difflib"}, {"a", py::to_utf8(a)}, {"b", py::to_utf8(b)}});
    q.push_back({{"op", "levenshtein"}, {"a", py::to_utf8(a)}, {"b", py::to_utf8(b)}});
  }
  auto r = oracle(q, "levenshtein");
  if (r.empty()) GTEST_SKIP() << "/usr/bin/python3 with python3-levenshtein not available";
  for (size_t i = 0; i < pairs.size(); ++i) {
    ASSERT_EQ(difflib_ratio(pairs[i].first, pairs[i].second), r[2 * i].get<double>()) << i;
    ASSERT_EQ(levenshtein_ratio(pairs[i].first, pairs[i].second), r[2 * i + 1].get<double>()) << i;
  }
}

// ---------------------------------------------------------------- jieba
TEST(Jieba, SegmentsLikePythonJieba) {
  if (!have_jieba()) GTEST_SKIP() << "jieba's data not installed (Debian python3-jieba)";
  const Jieba& j = Jieba::shared();
  auto cut = j.cut_utf8("我来到北京清华大学，小明硕士毕业于中国科学院计算所。他来到了网易杭研大厦");
  std::vector<std::string> want = {"我", "来到", "北京", "清华大学", "，", "小明", "硕士", "毕业", "于", "中国科学院",
                                   "计算所", "。", "他", "来到", "了", "网易", "杭研", "大厦"};
  EXPECT_EQ(cut, want);  // "杭研" is not in the dictionary: the HMM joins it
  EXPECT_EQ(j.cut_utf8("a\r\nb  3.5%"), (std::vector<std::string>{"a", "\r\n", "b", " ", " ", "3.5%"}));
  EXPECT_THROW(Jieba("/nonexistent"), sr::Error);
}

TEST(Jieba, EqualsPythonJiebaOnRandomText) {
  if (!have_jieba()) GTEST_SKIP() << "jieba's data not installed (Debian python3-jieba)";
  // Random text from dictionary words, unknown CJK characters (the HMM's input), Latin runs,
  // numbers with decimals and percents, jieba's special characters, spaces, CRLF and emoji.
  std::vector<std::string> words;
  {
    std::ifstream f(std::string(kJiebaDir) + "/dict.txt");
    std::string line;
    for (int i = 0; std::getline(f, line); ++i)
      if (i % 97 == 0) words.push_back(line.substr(0, line.find(' ')));
  }
  Rng rng(3);
  const std::vector<std::string> extra = {" ", "  ", "\r\n", "\n", "，", "。", "！", "3.14", "50%", "v2.0", "C++", "c#",
                                          "-", "_", ".", "AT&T", "😀", "Ｆｕｌｌ", "２０２４", "abc", "GDP", "\t"};
  std::vector<json> q;
  std::vector<std::string> texts;
  for (int t = 0; t < 300; ++t) {
    std::string s;
    int n = 1 + rng.next_u64() % 25;
    for (int i = 0; i < n; ++i) {
      uint32_t k = rng.next_u64() % 10;
      if (k < 5) s += words[rng.next_u64() % words.size()];
      else if (k < 8) s += py::to_utf8(ustr(1, char32_t(0x4E00 + rng.next_u64() % (0x9FFF - 0x4E00))));
      else s += extra[rng.next_u64() % extra.size()];
    }
    texts.push_back(s);
    q.push_back({{"op", "cut"}, {"text", s}});
  }
  auto r = oracle(q, "cut");
  if (r.empty()) GTEST_SKIP() << "/usr/bin/python3 with python3-jieba not available";
  const Jieba& j = Jieba::shared();
  for (size_t i = 0; i < texts.size(); ++i)
    ASSERT_EQ(j.cut_utf8(texts[i]), r[i].get<std::vector<std::string>>()) << texts[i];
}

// Chinese metrics: values computed with the official metrics.py (jieba 0.42.1, rouge 1.0.1).
TEST(LongBenchMetrics, ChineseMetricsMatchTheOfficialCode) {
  if (!have_jieba()) GTEST_SKIP() << "jieba's data not installed (Debian python3-jieba)";
  const Jieba& j = Jieba::shared();
  MetricContext ctx;
  ctx.jieba = &j;
  (void)ctx;
#include "data/longbench_zh_vectors.inc"
}

#include "eval/longbench.h"
// eval.py rounds a Python float; scorer_e rounds a numpy float64 (rint(x*100)/100) after numpy's
// pairwise-summed mean. Values checked against CPython 3.11 / numpy 1.24.
TEST(LongBenchMetrics, PythonAndNumpyRoundingAndMean) {
  EXPECT_EQ(py_round2(2.675), 2.67);
  EXPECT_EQ(np_round2(2.675), 2.68);
  EXPECT_EQ(py_round2(31.915), 31.91);
  EXPECT_EQ(np_round2(31.915), 31.92);
  std::vector<double> x;
  for (int i = 0; i < 1000; ++i) x.push_back(double((i * 7919) % 1000) / 1000.0 * (i % 3 ? 1 : 0.333));
  double seq = 0;
  for (double v : x) seq += v;
  EXPECT_EQ(np_mean(x), 0.38842649100000004);  // numpy.mean(x)
  EXPECT_EQ(seq / 1000, 0.3884264910000001);   // a plain left-to-right sum differs in the last bit
  EXPECT_TRUE(std::isnan(np_mean({})));
}

#include "models/chat_template.h"
TEST(ChatTemplate, ChatMlTurnsAndErrors) {
  ChatTemplate c;
  EXPECT_EQ(c.user_turn("hi"), "hi");
  c.kind = "chatml";
  EXPECT_EQ(c.user_turn("hi"), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  c.system = "Be brief.";
  EXPECT_EQ(c.user_turn("hi"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  ChatTemplate d = ChatTemplate::from_model_json(json{{"chat", "chatml"}, {"system", "S"}}, "smoothread.json");
  EXPECT_EQ(d.kind, "chatml");
  EXPECT_EQ(d.system, "S");
  EXPECT_THROW(ChatTemplate::from_model_json(json{{"chat", "jinja"}}, "smoothread.json"), sr::Error);
}
