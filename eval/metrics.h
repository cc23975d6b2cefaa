// Scoring of predictions (RULER conventions, ../shared/docs/evals.md A2.4):
//   postprocess: strip, every char in [\x00-\x1f] -> '\n', strip again;
//   string_match_all  = mean over references of 1(ref.lower() in pred.lower())   (partial credit)
//   string_match_part = max  over references of 1(ref.lower() in pred.lower())
// Both are per-sample scores in [0, 1]; RULER reports 100 x the mean, rounded to 2 decimals.
#pragma once
#include <string>
#include <vector>

#include "core/io.h"

namespace sr {

std::string ruler_postprocess(const std::string& pred);
double string_match_all(const std::string& pred, const std::vector<std::string>& refs);
double string_match_part(const std::string& pred, const std::vector<std::string>& refs);

struct ScoreCell {
  int n = 0;
  double mean = 0, ci95 = 0;  // in percent; ci95 = half-width, normal approximation 1.96 * sd / sqrt(n)
};
ScoreCell summarize(const std::vector<double>& scores01);

// Scores a prediction JSONL file ({"task","answers","answer","length"?} per line, as written by
// `smoothread read --batch`): per task x length bucket (nearest 1k tokens) table, with efficiency
// columns (seconds per sample, tokens read, rounds, early-stop rate, peak RSS) when present.
// metric: "all" | "part". Returns {"rows": [...], "markdown": "..."}.
// skipped: when non-null, malformed lines are counted there instead of failing (--skip-bad).
json score_predictions(const std::string& path, const std::string& metric, int64_t* skipped = nullptr);

}  // namespace sr
