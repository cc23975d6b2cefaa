// Speed and memory benchmarks behind `smoothread bench` (issue 11), in the spirit of llama-bench:
// every test is repeated after warm-up runs and reported as mean +- standard deviation, with the
// environment (commit, build type, CPU, GPU, threads) attached to every result.
//
// Tests (all on token ids, so any model shape runs without a tokenizer or weights):
//   pp P          prefill P tokens into a fresh session                          tokens/s = P / t
//   tg N @ d      decode N tokens after a d-token context (d untimed)            tokens/s = N / t
//   read-emr L    Smooth Reading of an L-token document: Q query tokens, then per chunk of C tokens
//                 a forced S-token summary and one action token, then an A-token answer. The summary
//                 length is fixed, so the cost does not depend on what the model writes.
//   read-or L     one-pass reading: Q query tokens + the L-token document at once, A-token answer
//   train T       one training step on one T-token sequence (forward, backward, clipping, AdamW)
// Memory: peak resident set (CPU; /proc/self VmHWM, reset before each test) and, on the GPU, the
// caching allocator's high-water mark.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/io.h"
#include "models/language_model.h"

namespace sr {

struct BenchOptions {
  std::vector<int> prompt_sizes;      // pp
  std::vector<int> gen_sizes;         // tg
  std::vector<int> depths = {0};      // context before each tg test
  std::vector<int> read_sizes;        // read-emr / read-or document lengths
  std::vector<std::string> read_modes = {"emr", "or"};
  std::vector<int> train_sizes;       // train sequence lengths (batch 1)
  int chunk_tokens = 512, summary_tokens = 64, query_tokens = 64, answer_tokens = 16;
  int reps = 3, warmup = 1;
  int prefill_batch = 8192;           // longest piece one forward pass takes (Session::set_prefill_batch)
  uint64_t seed = 1;
};

struct BenchResult {
  std::string test;        // "pp512", "tg128@d4096", "read-emr 65536", "train 4096"
  int64_t tokens = 0;      // tokens the rate is computed over
  std::vector<double> seconds;  // one per repetition
  double mean_s = 0, std_s = 0, tokens_per_s = 0, tokens_per_s_std = 0;
  size_t peak_rss_bytes = 0, peak_device_bytes = 0;
  json extra = json::object();  // rounds, state bytes, ...
  json to_json() const;
};

// Runs every requested test on `model` (on whatever backend its ops are); `progress` (optional)
// gets a line before each test; `done` (optional) gets the results so far after each test (the CLI
// rewrites --out with them, so a run cut short keeps what it measured). Errors (bad sizes) throw
// sr::Error naming the option.
std::vector<BenchResult> run_bench(LanguageModel& model, const BenchOptions& o,
                                   const std::function<void(const std::string&)>& progress = {},
                                   const std::function<void(const std::vector<BenchResult>&)>& done = {});

// Commit (build time), build type, CPU model, GPU (when the model is on one), threads, model shape.
// "COMMIT (BUILD_TYPE)" of this build: the commit is the short hash at build time, "-dirty" when
// the tree had changes (`smoothread --version`).
std::string build_version();

json bench_environment(const LanguageModel& model);

// The results as a markdown table (with the environment above it), CSV (environment in every
// row) or JSON {"environment", "results"}.
std::string format_bench(const json& env, const std::vector<BenchResult>& rows, const std::string& format);

// Peak resident set of this process (VmHWM) and a reset of it (Linux clear_refs; a no-op elsewhere).
size_t peak_rss_now();
void reset_peak_rss();

}  // namespace sr
