// LongBench (v1) metrics, reproducing the official scorer (THUDM/LongBench `metrics.py`/`eval.py`
// at 2e00731f, pltrdy rouge 1.0.1, fuzzywuzzy 0.18 over difflib, jieba 0.42.1) to the last digit.
// ../shared/docs/evals.md A1.5-A1.7 lists every quirk reproduced here. All string work is on code
// points with CPython semantics (eval/pystr.h).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "eval/jieba.h"
#include "eval/pystr.h"

namespace sr::longbench {

using py::ustr;

// --- building blocks ----------------------------------------------------------------------
ustr normalize_answer(const ustr& s);     // lower, drop ASCII punctuation, drop a/an/the, squash spaces
ustr normalize_zh_answer(const ustr& s);  // lower, drop ASCII + CJK punctuation, drop all whitespace
// Multiset F1 of two token lists (0 when nothing is shared).
double token_f1(const std::vector<ustr>& pred, const std::vector<ustr>& gold);
// difflib.SequenceMatcher(None, a, b).ratio() (autojunk on, as fuzzywuzzy uses it).
double difflib_ratio(const ustr& a, const ustr& b);
// python-Levenshtein's ratio: (|a|+|b| - indel distance) / (|a|+|b|) = 2 LCS / (|a|+|b|).
double levenshtein_ratio(const ustr& a, const ustr& b);
enum class SimBackend { difflib, levenshtein };
int fuzz_ratio(const ustr& a, const ustr& b, SimBackend backend);  // fuzz.ratio, 0..100

// pltrdy rouge's ROUGE-L F (summary level, set semantics, sentences split on ASCII '.').
// The official code recurses once per backtracking step and swallows RecursionError as 0.0:
// `recursion_budget` is the deepest backtrack (in steps) CPython 3.11 survives from that call site
// (990 from rouge_score, 989 from rouge_zh_score); when exceeded the score is 0 and *zeroed is set.
double rouge_l(const ustr& pred, const ustr& gold, int recursion_budget = 990, bool* zeroed = nullptr);

// --- the per-task metric functions (pred, one gold answer) ----------------------------------
struct MetricContext {
  SimBackend code_sim = SimBackend::difflib;
  const Jieba* jieba = nullptr;             // needed by the two Chinese metrics
  std::vector<ustr> all_classes;            // trec / lsht
  std::function<void(const std::string&)> log;  // notes such as a fired recursion quirk
};
double qa_f1(const ustr& pred, const ustr& gold);
double qa_f1_zh(const ustr& pred, const ustr& gold, const Jieba& jieba);
double rouge_score(const ustr& pred, const ustr& gold, bool* zeroed = nullptr);
double rouge_zh(const ustr& pred, const ustr& gold, const Jieba& jieba, bool* zeroed = nullptr);
double classification(const ustr& pred, const ustr& gold, const std::vector<ustr>& all_classes);
// retrieval: the gold must contain "Paragraph N" ("段落N" for zh); throws std::invalid_argument if not.
double retrieval(const ustr& pred, const ustr& gold, bool zh);
double count(const ustr& pred, const ustr& gold);
double code_sim(const ustr& pred, const ustr& gold, SimBackend backend);

// --- tasks ---------------------------------------------------------------------------------
struct TaskInfo {
  const char* name;
  const char* category;  // Single-Doc QA | Multi-Doc QA | Summarization | Few-shot | Synthetic | Code
  const char* lang;      // en | zh | code
  const char* metric;    // the official function's name
  int maxgen;            // dataset2maxlen.json
  bool in_e;             // part of LongBench-E
  bool first_line;       // eval.py keeps only the first line (trec, triviaqa, samsum, lsht)
  bool no_chat;          // pred.py sends the raw prompt, no chat template
};
const std::vector<TaskInfo>& tasks();
const TaskInfo* find_task(const std::string& name);  // nullptr when unknown

// One sample's score: first-line rule, then max(0, metric over gold answers).
double score_sample(const TaskInfo& task, const std::string& pred, const std::vector<std::string>& answers,
                    const MetricContext& ctx);

}  // namespace sr::longbench
