#include "eval/longbench_metrics.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

namespace sr::longbench {

namespace {
using py::UHash;

bool ascii_punct(char32_t c) {  // Python's string.punctuation
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}
const ustr& zh_punct() {
  static const ustr p = py::from_utf8(
      "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.");
  return p;
}

// re.sub(r"\b(a|an|the)\b", " ", s)
ustr remove_articles(const ustr& s) {
  ustr out;
  const size_t n = s.size();
  auto boundary_after = [&](size_t e) { return e == n || !py::is_word(s[e]); };
  for (size_t i = 0; i < n;) {
    if (i == 0 || !py::is_word(s[i - 1])) {
      size_t len = 0;
      if (s[i] == 'a' && boundary_after(i + 1)) len = 1;
      else if (s.compare(i, 2, U"an") == 0 && boundary_after(i + 2)) len = 2;
      else if (s.compare(i, 3, U"the") == 0 && boundary_after(i + 3)) len = 3;
      if (len) {
        out.push_back(' ');
        i += len;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

// Maps words to dense ids (for the DP tables).
struct WordIds {
  std::unordered_map<ustr, int, UHash> ids;
  std::vector<int> of(const std::vector<ustr>& ws) {
    std::vector<int> out;
    out.reserve(ws.size());
    for (auto& w : ws) out.push_back(ids.emplace(w, int(ids.size())).first->second);
    return out;
  }
};

// rouge's sentence split: text.split("."), pieces of length > 0, each " ".join(piece.split()).
std::vector<ustr> rouge_sentences(const ustr& text) {
  std::vector<ustr> out;
  for (auto& piece : py::split_on(text, U"."))
    if (!piece.empty()) out.push_back(py::join(py::split(piece), U" "));
  return out;
}
}  // namespace

ustr normalize_answer(const ustr& s) {
  ustr low = py::lower(s), kept;
  for (char32_t c : low)
    if (!ascii_punct(c)) kept.push_back(c);
  return py::join(py::split(remove_articles(kept)), U" ");
}

ustr normalize_zh_answer(const ustr& s) {
  ustr low = py::lower(s), kept;
  const ustr& zp = zh_punct();
  for (char32_t c : low)
    if (!ascii_punct(c) && zp.find(c) == ustr::npos) kept.push_back(c);
  return py::join(py::split(kept), U"");
}

double token_f1(const std::vector<ustr>& pred, const std::vector<ustr>& gold) {
  std::unordered_map<ustr, long, UHash> cp, cg;
  for (auto& t : pred) ++cp[t];
  for (auto& t : gold) ++cg[t];
  long same = 0;
  for (auto& [t, c] : cp) {
    auto it = cg.find(t);
    if (it != cg.end()) same += std::min(c, it->second);
  }
  if (same == 0) return 0;
  double precision = 1.0 * double(same) / double(pred.size());
  double recall = 1.0 * double(same) / double(gold.size());
  return (2 * precision * recall) / (precision + recall);
}

double difflib_ratio(const ustr& a, const ustr& b) {
  const int la = int(a.size()), lb = int(b.size());
  if (la + lb == 0) return 1.0;
  // b2j: positions of each element of b, ascending; with autojunk, "popular" elements of a long b
  // (more than 1% + 1 of its length) are dropped from it (they can still extend a match).
  std::unordered_map<char32_t, std::vector<int>> b2j;
  for (int j = 0; j < lb; ++j) b2j[b[j]].push_back(j);
  if (lb >= 200) {
    size_t ntest = size_t(lb / 100 + 1);
    for (auto it = b2j.begin(); it != b2j.end();)
      it = it->second.size() > ntest ? b2j.erase(it) : std::next(it);
  }
  // j2len rows as stamped arrays: entry j is valid when its stamp equals the row's.
  std::vector<int> len_prev(lb, 0), len_cur(lb, 0);
  std::vector<long> st_prev(lb, -1), st_cur(lb, -1);
  long stamp = 0;
  auto longest = [&](int alo, int ahi, int blo, int bhi, int& bi, int& bj) {
    int besti = alo, bestj = blo, bestsize = 0;
    long prev_stamp = -2;
    for (int i = alo; i < ahi; ++i) {
      long row = ++stamp;
      auto it = b2j.find(a[i]);
      if (it != b2j.end()) {
        for (int j : it->second) {
          if (j < blo) continue;
          if (j >= bhi) break;
          int k = (j > 0 && st_prev[j - 1] == prev_stamp ? len_prev[j - 1] : 0) + 1;
          len_cur[j] = k, st_cur[j] = row;
          if (k > bestsize) besti = i - k + 1, bestj = j - k + 1, bestsize = k;
        }
      }
      std::swap(len_prev, len_cur);
      std::swap(st_prev, st_cur);
      prev_stamp = row;
    }
    // No junk (isjunk=None): extend over equal elements, popular ones included.
    while (besti > alo && bestj > blo && a[besti - 1] == b[bestj - 1]) --besti, --bestj, ++bestsize;
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a[besti + bestsize] == b[bestj + bestsize]) ++bestsize;
    bi = besti, bj = bestj;
    return bestsize;
  };
  long matches = 0;
  std::vector<std::array<int, 4>> queue{{0, la, 0, lb}};
  while (!queue.empty()) {
    auto [alo, ahi, blo, bhi] = queue.back();
    queue.pop_back();
    int i, j, k = longest(alo, ahi, blo, bhi, i, j);
    if (k) {
      matches += k;
      if (alo < i && blo < j) queue.push_back({alo, i, blo, j});
      if (i + k < ahi && j + k < bhi) queue.push_back({i + k, ahi, j + k, bhi});
    }
  }
  return 2.0 * double(matches) / double(la + lb);
}

double levenshtein_ratio(const ustr& a, const ustr& b) {
  const size_t la = a.size(), lb = b.size();
  if (la + lb == 0) return 1.0;
  std::vector<int> prev(lb + 1, 0), cur(lb + 1, 0);
  for (size_t i = 1; i <= la; ++i) {
    for (size_t j = 1; j <= lb; ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return double(2 * prev[lb]) / double(la + lb);
}

int fuzz_ratio(const ustr& a, const ustr& b, SimBackend backend) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  double r = backend == SimBackend::difflib ? difflib_ratio(a, b) : levenshtein_ratio(a, b);
  return int(std::nearbyint(100 * r));  // Python round(): half to even
}

double rouge_l(const ustr& pred, const ustr& gold, int budget, bool* zeroed) {
  if (zeroed) *zeroed = false;
  std::vector<ustr> hyp = rouge_sentences(pred), ref = rouge_sentences(gold);
  if (hyp.empty() || ref.empty()) return 0.0;  // ValueError in rouge -> 0.0
  WordIds ids;
  std::vector<std::vector<int>> hw, rw;
  for (auto& s : hyp) hw.push_back(ids.of(py::split_on(s, U" ")));
  for (auto& s : ref) rw.push_back(ids.of(py::split_on(s, U" ")));
  auto distinct = [](const std::vector<std::vector<int>>& ss) {
    std::vector<int> all;
    for (auto& s : ss) all.insert(all.end(), s.begin(), s.end());
    std::sort(all.begin(), all.end());
    return double(std::unique(all.begin(), all.end()) - all.begin());
  };
  const double m = distinct(rw), n = distinct(hw);
  std::vector<char> in_union(ids.ids.size(), 0);
  long llcs = 0;
  std::vector<uint16_t> table;
  for (auto& r : rw) {
    for (auto& h : hw) {
      const size_t R = r.size(), H = h.size();
      // The recursive backtrack takes at least min(R, H) steps: over budget -> RecursionError.
      if (std::min(R, H) > size_t(budget)) {
        if (zeroed) *zeroed = true;
        return 0.0;
      }
      table.assign((R + 1) * (H + 1), 0);  // LCS <= min(R, H) <= budget fits 16 bits
      auto T = [&](size_t i, size_t j) -> uint16_t& { return table[i * (H + 1) + j]; };
      for (size_t i = 1; i <= R; ++i)
        for (size_t j = 1; j <= H; ++j)
          T(i, j) = r[i - 1] == h[j - 1] ? uint16_t(T(i - 1, j - 1) + 1) : std::max(T(i - 1, j), T(i, j - 1));
      size_t i = R, j = H;
      long steps = 0;
      std::vector<int> lcs;
      while (i > 0 && j > 0) {
        ++steps;
        if (r[i - 1] == h[j - 1]) {
          lcs.push_back(r[i - 1]);
          --i, --j;
        } else if (T(i - 1, j) > T(i, j - 1)) {
          --i;
        } else {
          --j;
        }
      }
      if (steps > budget) {
        if (zeroed) *zeroed = true;
        return 0.0;
      }
      for (int w : lcs)
        if (!in_union[w]) in_union[w] = 1, ++llcs;
    }
  }
  double rl = double(llcs) / m, pl = double(llcs) / n;
  return 2.0 * ((pl * rl) / (pl + rl + 1e-8));
}

double qa_f1(const ustr& pred, const ustr& gold) {
  return token_f1(py::split(normalize_answer(pred)), py::split(normalize_answer(gold)));
}

double qa_f1_zh(const ustr& pred, const ustr& gold, const Jieba& jieba) {
  auto tokens = [&](const ustr& s) {
    std::vector<ustr> out;
    for (auto& t : jieba.cut(s)) {
      ustr n = normalize_zh_answer(t);
      if (!n.empty()) out.push_back(std::move(n));
    }
    return out;
  };
  return token_f1(tokens(pred), tokens(gold));
}

double rouge_score(const ustr& pred, const ustr& gold, bool* zeroed) { return rouge_l(pred, gold, 990, zeroed); }

double rouge_zh(const ustr& pred, const ustr& gold, const Jieba& jieba, bool* zeroed) {
  return rouge_l(py::join(jieba.cut(pred), U" "), py::join(jieba.cut(gold), U" "), 989, zeroed);
}

double classification(const ustr& pred, const ustr& gold, const std::vector<ustr>& all_classes) {
  std::vector<ustr> hits;
  for (auto& c : all_classes)
    if (py::contains(pred, c)) hits.push_back(c);
  // `for t in hits: if ...: hits.remove(t)` -- removing while iterating skips the next element.
  for (size_t idx = 0; idx < hits.size();) {
    ustr t = hits[idx++];
    if (py::contains(gold, t) && t != gold) hits.erase(std::find(hits.begin(), hits.end(), t));
  }
  if (std::find(hits.begin(), hits.end(), gold) == hits.end()) return 0.0;
  return 1.0 / double(hits.size());
}

namespace {
double share_equal(const ustr& pred, const ustr& id) {
  auto nums = py::digit_runs(pred);
  if (nums.empty()) return 0.0;
  long right = 0;
  for (auto& x : nums) right += x == id;
  return double(right) / double(nums.size());
}
}  // namespace

double retrieval(const ustr& pred, const ustr& gold, bool zh) {
  const ustr prefix = zh ? py::from_utf8("段落") : U"Paragraph ";
  for (size_t p = gold.find(prefix); p != ustr::npos; p = gold.find(prefix, p + 1)) {
    size_t b = p + prefix.size(), e = b;
    while (e < gold.size() && py::is_digit(gold[e])) ++e;
    if (e > b) return share_equal(pred, gold.substr(b, e - b));
  }
  throw std::invalid_argument("the gold answer has no '" + py::to_utf8(prefix) + "<number>' (the official scorer fails here too)");
}

double count(const ustr& pred, const ustr& gold) { return share_equal(pred, gold); }

double code_sim(const ustr& pred, const ustr& gold, SimBackend backend) {
  ustr line;
  for (auto& l : py::split_on(py::lstrip_char(pred, '\n'), U"\n"))
    if (l.find('`') == ustr::npos && l.find('#') == ustr::npos && l.find(U"//") == ustr::npos) {
      line = l;
      break;
    }
  return double(fuzz_ratio(line, gold, backend)) / 100;
}

const std::vector<TaskInfo>& tasks() {
  static const std::vector<TaskInfo> t = {
      {"narrativeqa", "Single-Doc QA", "en", "qa_f1_score", 128, false, false, false},
      {"qasper", "Single-Doc QA", "en", "qa_f1_score", 128, true, false, false},
      {"multifieldqa_en", "Single-Doc QA", "en", "qa_f1_score", 64, true, false, false},
      {"multifieldqa_zh", "Single-Doc QA", "zh", "qa_f1_zh_score", 64, false, false, false},
      {"hotpotqa", "Multi-Doc QA", "en", "qa_f1_score", 32, true, false, false},
      {"2wikimqa", "Multi-Doc QA", "en", "qa_f1_score", 32, true, false, false},
      {"musique", "Multi-Doc QA", "en", "qa_f1_score", 32, false, false, false},
      {"dureader", "Multi-Doc QA", "zh", "rouge_zh_score", 128, false, false, false},
      {"gov_report", "Summarization", "en", "rouge_score", 512, true, false, false},
      {"qmsum", "Summarization", "en", "rouge_score", 512, false, false, false},
      {"multi_news", "Summarization", "en", "rouge_score", 512, true, false, false},
      {"vcsum", "Summarization", "zh", "rouge_zh_score", 512, false, false, false},
      {"trec", "Few-shot", "en", "classification_score", 64, true, true, true},
      {"triviaqa", "Few-shot", "en", "qa_f1_score", 32, true, true, true},
      {"samsum", "Few-shot", "en", "rouge_score", 128, true, true, true},
      {"lsht", "Few-shot", "zh", "classification_score", 64, false, true, true},
      {"passage_count", "Synthetic", "en", "count_score", 32, true, false, false},
      {"passage_retrieval_en", "Synthetic", "en", "retrieval_score", 32, true, false, false},
      {"passage_retrieval_zh", "Synthetic", "zh", "retrieval_zh_score", 32, false, false, false},
      {"lcc", "Code", "code", "code_sim_score", 64, true, false, true},
      {"repobench-p", "Code", "code", "code_sim_score", 64, true, false, true},
  };
  return t;
}

const TaskInfo* find_task(const std::string& name) {
  for (auto& t : tasks())
    if (name == t.name) return &t;
  return nullptr;
}

double score_sample(const TaskInfo& task, const std::string& pred_utf8, const std::vector<std::string>& answers,
                    const MetricContext& ctx) {
  ustr pred = py::from_utf8(pred_utf8);
  if (task.first_line) pred = py::split_on(py::lstrip_char(pred, '\n'), U"\n")[0];
  const std::string metric = task.metric;
  auto need_jieba = [&]() -> const Jieba& {
    if (!ctx.jieba) throw std::invalid_argument(metric + " needs jieba's segmentation (no Jieba given)");
    return *ctx.jieba;
  };
  double score = 0.0;
  for (auto& a : answers) {
    ustr gold = py::from_utf8(a);
    double s = 0;
    bool zeroed = false;
    if (metric == "qa_f1_score") s = qa_f1(pred, gold);
    else if (metric == "qa_f1_zh_score") s = qa_f1_zh(pred, gold, need_jieba());
    else if (metric == "rouge_score") s = rouge_score(pred, gold, &zeroed);
    else if (metric == "rouge_zh_score") s = rouge_zh(pred, gold, need_jieba(), &zeroed);
    else if (metric == "classification_score") s = classification(pred, gold, ctx.all_classes);
    else if (metric == "retrieval_score") s = retrieval(pred, gold, false);
    else if (metric == "retrieval_zh_score") s = retrieval(pred, gold, true);
    else if (metric == "count_score") s = count(pred, gold);
    else if (metric == "code_sim_score") s = code_sim(pred, gold, ctx.code_sim);
    if (zeroed && ctx.log)
      ctx.log(std::string(task.name) + ": rouge backtrack deeper than CPython's recursion limit allows; scored 0 "
              "as the official scorer does");
    if (s > score) score = s;
  }
  return score;
}

}  // namespace sr::longbench
