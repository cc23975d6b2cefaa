// The LongBench (v1) harness: the official data and config files from the user's LongBench
// checkout, prompts formatted like pred.py (middle truncation to the model's max length in tokens),
// greedy predictions in one pass (OR) or with the reading runtime (EMR / NMR, question first),
// written as resumable JSONL the official eval.py can score too; and the official scores
// (eval/longbench_metrics.h) with category means, averages and LongBench-E length buckets.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/io.h"
#include "eval/longbench_metrics.h"
#include "models/chat_template.h"
#include "models/model_dir.h"
#include "reading/reader.h"

namespace sr::longbench {

// One line of a LongBench data file (fields of A1.2; `where` = file:line).
struct Sample {
  std::string id, input, context, dataset, language, where;
  std::vector<std::string> answers;
  json all_classes;  // list or null
  int64_t length = 0;
  json fields;  // the whole record, for str.format
};
// Reads <task>.jsonl; every field the harness uses must be there (errors name file:line and field).
std::vector<Sample> load_samples(const std::string& path, const std::string& task);
// The data file of `task` in a LongBench data directory (<task>_e.jsonl for LongBench-E).
std::string data_file(const std::string& data_dir, const std::string& task, bool e);

// dataset2prompt.json / dataset2maxlen.json from LongBench's config directory.
struct Config {
  json prompts, maxlen;
  std::string dir;
  static Config load(const std::string& config_dir);
  const std::string& prompt(const std::string& task) const;  // throws naming the file
  int maxgen(const std::string& task) const;
};

// Python str.format(**fields) for LongBench's templates ({name}, {{ and }}); a missing field is an
// error naming `where`.
std::string format_template(const std::string& tmpl, const json& fields, const std::string& where);
// The question-first query of EMR/NMR: the template with {context} left empty (instruction and
// question stay; summarization and code tasks thus keep their instruction as the whole query).
std::string reading_query(const std::string& tmpl, const json& fields, const std::string& where);
// pred.py's middle truncation: when the prompt has more than max_length tokens, keep the first and
// last max_length/2 tokens, decoded separately and concatenated. *truncated tells whether it cut.
std::string middle_truncate(const std::string& prompt, const Tokenizer& tok, int max_length, bool* truncated);

struct PredictOptions {
  std::string mode = "or";  // or | emr | nmr
  int max_length = 0;       // OR: middle-truncation length in tokens (0 = none)
  ChatTemplate chat;        // OR: wraps the (truncated) prompt, except for pred.py's 6 raw tasks
  ReadingOptions reading;   // EMR / NMR (max_answer_tokens is set per task from dataset2maxlen)
  bool e = false;
  std::vector<std::string> tasks;
  std::function<void(const std::string& task, int64_t done, int64_t total)> progress;
  // Notes for the user (e.g. a task whose longest query breaks the sliding-window rule in EMR/NMR:
  // reported once per task, and the run goes on, as LongBench runs should not stop midway).
  std::function<void(const std::string&)> log;
};
struct PredictStats {
  int64_t written = 0, skipped = 0, truncated = 0;
};
// Writes <out_dir>/<task>.jsonl per task (resumable: samples whose _id is already there are
// skipped; a line whose _id is not in the data file is an error naming that line).
PredictStats predict(const LoadedModel& model, const Config& cfg, const std::string& data_dir,
                     const std::string& out_dir, const PredictOptions& opt);

struct ScoreOptions {
  bool e = false;
  SimBackend code_sim = SimBackend::difflib;
  std::string jieba_dir;  // "" = Jieba::default_dir()
  std::string data_dir;   // optional: check the predictions' _id against the data files
  std::string paper_row;  // optional: a paper model whose reference numbers go beside ours
  std::function<void(const std::string&)> log;
};
// Scores every <task>.jsonl in pred_dir like eval.py. Returns
// {"result": {task: score | {bucket: score}} (eval.py's result.json), "tasks": [...],
//  "categories": {...}, "averages": {...}, "markdown": "...", "samples": N}.
json score_dir(const std::string& pred_dir, const ScoreOptions& opt);

// Python's round(x, 2) on a float (correctly rounded) and numpy's (rint(x * 100) / 100), and
// numpy's float64 mean (pairwise summation): eval.py uses the former, scorer_e the latter two.
double py_round2(double x);
double np_round2(double x);
double np_mean(const std::vector<double>& x);

// Paper numbers (LongBench average and the known categories) for --paper-row.
const json& paper_rows();

}  // namespace sr::longbench
