// Constant-memory reading (label `slow`, run by bench/reading_cost.sh and on demand):
// EMR with an all-sliding-window model reads a 1M-token document with peak RSS within 10% of a
// 10k-token one (each read in its own `smoothread read` process, peak RSS from getrusage).
// The model is small but realistic (~3.4M parameters, 4 layers, W=256); what still grows with
// the document is the document text itself (1 byte per token with the byte tokenizer).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/io.h"
#include "data/toy_tasks.h"
#include "model_fixtures.h"
#include "train/trainer.h"

using namespace sr;

namespace {
std::string make_doc(const std::string& path, size_t bytes) {
  Rng r(3);
  static const char* words[] = {"river", "stone", "green", "light", "market", "paper", "window", "silver"};
  std::string s;
  while (s.size() < bytes) {
    s += words[r.below(8)];
    s += r.below(12) == 0 ? ".\n\n" : " ";
  }
  s.resize(bytes);
  write_file_atomic(path, s);
  return path;
}

json read_json(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0) << cmd;
  return json::parse(out);
}
}  // namespace

TEST(ReadingMemory, EmrPeakRssIndependentOfLength) {
  std::string dir = test::temp_dir("rss");
  ToyTaskOptions o;
  std::string data;
  for (auto& j : make_toy_task(o)) data += j.dump() + "\n";
  write_file_atomic(dir + "/d.jsonl", data);
  json cfg = {{"model", {{"hidden_size", 256}, {"intermediate_size", 768}, {"num_hidden_layers", 4},
                         {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"use_sliding_window", true},
                         {"sliding_window", 256}, {"max_window_layers", 0}}},
              {"data", dir + "/d.jsonl"}, {"out_dir", dir + "/run"}, {"steps", 2}, {"log_every", 1}};
  Trainer(TrainConfig::from_json(cfg, "test")).run([](const json&) {});
  std::string base = std::string(SMOOTHREAD_CLI) + " read --model " + dir + "/run/model --question 'What is the code?'" +
                     " --chunk-tokens 192 --max-summary-tokens 16 --max-answer-tokens 8 --no-early-stop --json --quiet --doc ";
  json small = read_json(base + make_doc(dir + "/small.txt", 10000));
  json big = read_json(base + make_doc(dir + "/big.txt", 1000000));
  std::cerr << "10k: " << small.dump() << "\n1M: " << big.dump() << "\n";
  EXPECT_EQ(big["tokens_read"].get<int64_t>(), 1000000);
  EXPECT_GT(big["rounds"].get<int>(), 5000);
  EXPECT_EQ(big["state_bytes"], small["state_bytes"]);
  double ratio = big["peak_rss_bytes"].get<double>() / small["peak_rss_bytes"].get<double>();
  EXPECT_LT(ratio, 1.10) << "peak RSS grew with document length";
}
