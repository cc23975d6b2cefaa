// `smoothread bench`: a thin layer over eval/bench.h (run_bench, format_bench).
#include <iostream>

#include "cli/args.h"
#include "cli/commands.h"
#include "eval/bench.h"
#include "models/tokenizer.h"

namespace sr::cli {

namespace {
// "512,4k,64k" -> {512, 4096, 65536}; k = 1024.
std::vector<int> size_list(const Args& a, const std::string& flag) {
  std::vector<int> out;
  if (!a.has(flag)) return out;
  const std::string list = a.get(flag);
  for (std::string item : split_list(list)) {
    long long mult = 1;
    if (item.back() == 'k' || item.back() == 'K') mult = 1024, item.pop_back();
    try {
      size_t pos;
      long long v = std::stoll(item, &pos);
      if (pos != item.size() || v < 0 || v * mult > (1LL << 30)) throw std::invalid_argument("");
      out.push_back(int(v * mult));
    } catch (...) {
      fail(flag, "expected sizes like 512,4k,64k, got '" + list + "'");
    }
  }
  if (out.empty()) fail(flag, "expected sizes like 512,4k,64k, got '" + list + "'");
  return out;
}
}  // namespace

int cmd_bench(int argc, char** argv) {
  const char* usage =
      "smoothread bench (--model DIR | --config FILE) [--device cpu|cuda] [--threads N] [--decode-weights fp32|bf16]\n"
      "                 [-p 512,4k] [-n 128] [-d 0,4k] [--read 4k,64k --mode emr,or] [--train 1k,4k]\n"
      "                 [--reps 3] [--warmup 1] [--chunk-tokens 512] [--summary-tokens 64] [--query-tokens 64]\n"
      "                 [--answer-tokens 16] [--recompute] [--seed S] [--format md|csv|json] [--out FILE]\n"
      "                 [--prefill-batch 8192] [--window W [--swa-layers SPEC]]\n"
      "Speed and peak memory, mean +- std over --reps after --warmup runs, with the commit, build type,\n"
      "CPU/GPU and threads in every output:\n"
      "  -p P          prefill P tokens                      -n N [-d D]   decode N tokens after D tokens\n"
      "  --read L      read an L-token document: emr = Smooth Reading with a fixed summary length per\n"
      "                round (chunk C, summary S, one action token), or = one pass; both with the query\n"
      "                first and an answer of --answer-tokens\n"
      "  --train T     one training step (forward, backward, clipping, AdamW) on a T-token sequence\n"
      "--prefill-batch B: the longest piece one forward pass takes (longer inputs are prefilled in pieces\n"
      "into the cache, as `read` does). --config FILE: a config.json (or a train.json's \"model\") of any shape, randomly initialized,\n"
      "so large shapes are timed without weights. Sizes take k = 1024. Default: -p 512 -n 128.\n";
  if (wants_help(argc, argv, usage)) return 0;
  Args a(argc, argv, 2,
         {"--model", "--config", "--device", "--decode-weights", "--threads", "-p", "-n", "-d", "--read", "--mode", "--train", "--reps",
          "--warmup", "--chunk-tokens", "--summary-tokens", "--query-tokens", "--answer-tokens", "--seed", "--format",
          "--out", "--window", "--swa-layers", "--prefill-batch"},
         {"--recompute"});
  set_threads(a);
  if (a.has("--model") == a.has("--config")) fail("--model/--config", "give exactly one of them");
  std::unique_ptr<LanguageModel> model;
  if (a.has("--model")) {
    model = std::move(load_model(a, false).model);
  } else {
    if (a.has("--window")) fail("--window", "set the window in the --config file");
    const std::string path = a.get("--config");
    json j = load_json_file(path);
    if (j.contains("model") && j["model"].is_object()) j = j["model"];  // a train.json
    if (!j.contains("vocab_size")) j["vocab_size"] = ByteTokenizer(ByteTokenizer::default_specials()).vocab_size();
    model = make_model(ModelConfig::from_json(j, path));
    model->init_random(uint64_t(a.get_int("--seed", 1)));
  }
  place_model(a, *model);
  model->set_recompute(a.has("--recompute"));
  BenchOptions o;
  o.prompt_sizes = size_list(a, "-p");
  o.gen_sizes = size_list(a, "-n");
  if (a.has("-d")) o.depths = size_list(a, "-d");
  o.read_sizes = size_list(a, "--read");
  o.train_sizes = size_list(a, "--train");
  if (o.prompt_sizes.empty() && o.gen_sizes.empty() && o.read_sizes.empty() && o.train_sizes.empty())
    o.prompt_sizes = {512}, o.gen_sizes = {128};
  if (a.has("--mode")) o.read_modes = split_list(a.get("--mode"));
  o.reps = int(a.get_int("--reps", o.reps));
  o.warmup = int(a.get_int("--warmup", o.warmup));
  o.chunk_tokens = int(a.get_int("--chunk-tokens", o.chunk_tokens));
  o.summary_tokens = int(a.get_int("--summary-tokens", o.summary_tokens));
  o.query_tokens = int(a.get_int("--query-tokens", o.query_tokens));
  o.answer_tokens = int(a.get_int("--answer-tokens", o.answer_tokens));
  o.prefill_batch = int(a.get_int("--prefill-batch", o.prefill_batch));
  o.seed = uint64_t(a.get_int("--seed", 1));
  const std::string format = a.get_or("--format", "md");
  if (format != "md" && format != "csv" && format != "json") fail("--format", "expected md, csv or json");
  const json env = bench_environment(*model);
  auto rows = run_bench(
      *model, o, [](const std::string& t) { std::cerr << "bench: " << t << "\n"; },
      [&](const std::vector<BenchResult>& so_far) {  // keep what is measured if the run is cut short
        std::cerr << "bench: " << so_far.back().test << ": " << so_far.back().mean_s << " s\n";
        if (a.has("--out")) write_file_atomic(a.get("--out"), format_bench(env, so_far, format));
      });
  std::string text = format_bench(env, rows, format);
  if (a.has("--out")) write_file_atomic(a.get("--out"), text);
  else std::cout << text;
  return 0;
}

}  // namespace sr::cli
