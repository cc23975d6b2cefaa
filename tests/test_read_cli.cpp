// `smoothread read` end to end on a model directory written by the trainer: bad input exits 2
// with a clear message, --json/--trace outputs, and resumable --batch.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "core/io.h"
#include "data/synthetic.h"
#include "model_fixtures.h"
#include "reading/chunker.h"
#include "train/trainer.h"

using namespace sr;

namespace {
struct CliRun {
  int code;
  std::string out, err;
};
CliRun run(const std::string& args, const std::string& dir) {
  std::string cmd = std::string(SMOOTHREAD_CLI) + " " + args + " > " + dir + "/out.txt 2> " + dir + "/err.txt < /dev/null";
  int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(dir + "/out.txt"), read_file(dir + "/err.txt")};
}

// train.json for a tiny reader (hidden 32, 2 layers, window 128, plus `model_extra`) on 8 passkey
// trajectories written to dir/traj.jsonl; output in dir/run.
json tiny_reader_train_json(const std::string& dir, const json& model_extra, int steps) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  SyntheticOptions o;
  o.task = "passkey", o.tokens = 300, o.count = 8;
  std::string data;
  for (auto& r : make_synthetic(o, tok)) data += make_trajectory(r, tok, 64, 96, 1).dump() + "\n";
  write_file_atomic(dir + "/traj.jsonl", data);
  json model = {{"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                {"num_key_value_heads", 1}, {"use_sliding_window", true}, {"sliding_window", 128}};
  model.update(model_extra);
  return {{"model", model}, {"data", dir + "/traj.jsonl"}, {"out_dir", dir + "/run"}, {"steps", steps},
          {"log_every", 1}, {"seq_len", 512}};
}

const std::string& model_dir() {  // one tiny all-SWA model (W=128) trained for 2 steps
  static std::string dir = [] {
    std::string d = test::temp_dir("readcli");
    json cfg = tiny_reader_train_json(d, {{"max_window_layers", 0}}, 2);
    Trainer(TrainConfig::from_json(cfg, "test")).run([](const json&) {});
    return d + "/run/model";
  }();
  return dir;
}
}  // namespace

TEST(ReadCli, BadInputExitsWith2) {
  std::string d = test::temp_dir("readbad"), m = model_dir();
  std::string base = "read --model " + m + " --chunk-tokens 32 --max-summary-tokens 8 ";
  write_file_atomic(d + "/empty.txt", "");
  write_file_atomic(d + "/bad.txt", "abc\xff\xfe def");
  write_file_atomic(d + "/ok.txt", "some text. more text.");
  struct Case {
    std::string args, needle;
  };
  for (const Case& c : std::vector<Case>{
           {base + "--doc " + d + "/missing.txt --question q", "document not found"},
           {base + "--doc " + d + "/empty.txt --question q", "document is empty"},
           {base + "--doc " + d + "/bad.txt --question q", "invalid UTF-8 at byte 3"},
           {base + "--doc " + d + "/ok.txt --question ' '", "--question: is empty"},
           {"read --model " + m + " --chunk-tokens 8 --doc " + d + "/ok.txt --question q", "at least 16"},
           {"read --model " + m + " --chunk-tokens 120 --doc " + d + "/ok.txt --question q", "exceeds the model's sliding window of 128"},
           {"read --model " + d + "/nomodel --doc " + d + "/ok.txt --question q", "model directory not found"},
           {base + "--doc " + d + "/ok.txt --question q --mode bogus", "unknown mode"},
           {base + "--doc " + d + "/ok.txt", "--question: is required"},
       }) {
    CliRun r = run(c.args, d);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
  }
  // --lossy-utf8 and --force turn the two refusals into reads.
  EXPECT_EQ(run(base + "--doc " + d + "/bad.txt --question q --lossy-utf8 --quiet", d).code, 0);
  EXPECT_EQ(run("read --model " + m + " --chunk-tokens 120 --doc " + d + "/ok.txt --question q --force --quiet", d).code, 0);
}

// A Gated DeltaNet + SWA hybrid trains on trajectories through `train`, is saved and reloaded as a
// model directory, and reads with EMR; its reading state does not grow with the document.
TEST(ReadCli, HybridGatedDeltaNetTrainsAndReadsWithEmr) {
  std::string d = test::temp_dir("readhybrid");
  json cfg = tiny_reader_train_json(d,
                                    {{"layer_types", {"linear_attention", "sliding_attention"}},
                                     {"linear_num_key_heads", 1}, {"linear_num_value_heads", 2},
                                     {"linear_key_head_dim", 16}, {"linear_value_head_dim", 16}},
                                    3);
  write_file_atomic(d + "/train.json", cfg.dump());
  CliRun t = run("train --config " + d + "/train.json", d);
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("\"step\":3"), std::string::npos) << t.out;
  std::vector<size_t> state;
  for (int paragraphs : {20, 80}) {
    std::string doc;
    for (int i = 0; i < paragraphs; ++i) doc += "Paragraph " + std::to_string(i) + " has some words in it.\n\n";
    write_file_atomic(d + "/doc.txt", doc);
    CliRun r = run("read --model " + d + "/run/model --doc " + d + "/doc.txt --question 'What?' --chunk-tokens 64 "
                   "--max-summary-tokens 6 --max-answer-tokens 4 --no-early-stop --json --mode emr", d);
    ASSERT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out);
    EXPECT_EQ(j["tokens_read"].get<size_t>(), doc.size());
    state.push_back(j["state_bytes"].get<size_t>());
  }
  EXPECT_EQ(state[0], state[1]);
}

TEST(ReadCli, JsonTraceAndAllModes) {
  std::string d = test::temp_dir("readjson"), m = model_dir();
  std::string doc;
  for (int i = 0; i < 40; ++i) doc += "Paragraph " + std::to_string(i) + " has some words in it.\n\n";
  write_file_atomic(d + "/doc.txt", doc);
  for (std::string mode : {"emr", "nmr", "or", "or-context-first"}) {
    CliRun r = run("read --model " + m + " --doc " + d + "/doc.txt --question 'What?' --chunk-tokens 64 --max-summary-tokens 6 "
                "--max-answer-tokens 4 --no-early-stop --json --trace " + d + "/trace.jsonl --mode " + mode, d);
    ASSERT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out);
    for (const char* k : {"answer", "mode", "rounds", "stopped_early", "context_tokens", "tokens_read", "tokens_generated",
                          "seconds", "peak_rss_bytes", "state_bytes"})
      EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(j["mode"], mode);
    EXPECT_EQ(j["tokens_read"].get<size_t>(), doc.size());
    if (mode == "emr" || mode == "nmr") {
      std::ifstream t(d + "/trace.jsonl");
      std::string line;
      int n = 0;
      while (std::getline(t, line)) {
        json tr = json::parse(line);
        EXPECT_EQ(tr["round"], ++n);
        EXPECT_TRUE(tr.contains("byte_span") && tr.contains("token_span") && tr.contains("prefill_s"));
      }
      EXPECT_EQ(n, j["rounds"].get<int>());
      EXPECT_GT(n, 5);
    }
  }
}

TEST(ReadCli, BatchIsOrderedAndResumable) {
  std::string d = test::temp_dir("readbatch"), m = model_dir();
  std::string in;
  for (int i = 0; i < 4; ++i)
    in += json{{"id", "s" + std::to_string(i)}, {"context", "text number " + std::to_string(i) + ". filler words here."},
               {"input", "What number?"}, {"answers", {std::to_string(i)}}}.dump() + "\n";
  write_file_atomic(d + "/in.jsonl", in);
  std::string args = "read --model " + m + " --batch " + d + "/in.jsonl --out " + d + "/out.jsonl --chunk-tokens 32 "
                     "--max-summary-tokens 6 --max-answer-tokens 4 --quiet";
  ASSERT_EQ(run(args, d).code, 0);
  std::string full = read_file(d + "/out.jsonl");
  // Simulate an interruption: keep the first answer and half of the second line.
  size_t first = full.find('\n');
  write_file_atomic(d + "/out.jsonl", full.substr(0, first + 1) + full.substr(first + 1, 10));
  CliRun r = run(args, d);
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream f(d + "/out.jsonl");
  std::string line;
  std::vector<std::string> ids, answers, expected;
  while (std::getline(f, line)) ids.push_back(json::parse(line)["id"]), answers.push_back(json::parse(line)["answer"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"s0", "s1", "s2", "s3"}));
  std::istringstream fs(full);
  while (std::getline(fs, line)) expected.push_back(json::parse(line)["answer"]);
  EXPECT_EQ(answers, expected);  // greedy reading is deterministic
  // Malformed batch line: error with file:line.
  write_file_atomic(d + "/in.jsonl", in + "{oops\n");
  std::remove((d + "/out.jsonl").c_str());
  r = run(args, d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("in.jsonl:5"), std::string::npos) << r.err;
  // --skip-bad: the bad line is counted and skipped; nothing else is dropped.
  r = run(args + " --skip-bad", d);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("skipped 1 bad line(s)"), std::string::npos) << r.err;
  int lines = 0;
  std::ifstream f2(d + "/out.jsonl");
  while (std::getline(f2, line)) ++lines;
  EXPECT_EQ(lines, 4);
}

TEST(ReadCli, EvalReadsAndScores) {
  std::string d = test::temp_dir("evalcli"), m = model_dir();
  CliRun g = run("gen --task passkey --tokens 300 --count 3 --seed 9 --out " + d + "/ev.jsonl", d);
  ASSERT_EQ(g.code, 0) << g.err;
  CliRun r = run("eval --model " + m + " --data " + d + "/ev.jsonl --chunk-tokens 32 --max-summary-tokens 6 "
                 "--max-answer-tokens 6 --quiet --json --force", d);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 1u);
  EXPECT_EQ(j["rows"][0]["task"], "passkey");
  EXPECT_EQ(j["rows"][0]["n"], 3);
  for (const char* k : {"seconds_per_sample", "tokens_read", "rounds", "early_stop_rate", "peak_rss_bytes"})
    EXPECT_TRUE(j["rows"][0].contains(k)) << k;
  EXPECT_TRUE(path_exists(d + "/ev.jsonl.pred.jsonl"));
  CliRun bad = run("eval --score-only --pred " + d + "/ev.jsonl", d);  // records have no 'answer'
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("ev.jsonl:1: missing field 'answer'"), std::string::npos) << bad.err;
}

TEST(GenCli, SameSeedSameBytesAndBadTask) {
  std::string d = test::temp_dir("gencli");
  for (std::string t : {"passkey", "niah_multivalue", "vt", "qa_hop", "cwe", "fwe"}) {
    std::string base = "gen --task " + t + " --tokens 2000 --count 5 --format trajectory --chunk-tokens 100:300 --out ";
    ASSERT_EQ(run(base + d + "/a.jsonl --seed 3", d).code, 0) << t;
    ASSERT_EQ(run(base + d + "/b.jsonl --seed 3", d).code, 0) << t;
    ASSERT_EQ(run(base + d + "/c.jsonl --seed 4", d).code, 0) << t;
    EXPECT_EQ(std::hash<std::string>{}(read_file(d + "/a.jsonl")), std::hash<std::string>{}(read_file(d + "/b.jsonl"))) << t;
    EXPECT_NE(read_file(d + "/a.jsonl"), read_file(d + "/c.jsonl")) << t;
  }
  ASSERT_EQ(run("gen --task niah_single_2 --values word --tokens 1000 --count 2 --seed 1 --out " + d + "/w.jsonl", d).code, 0);
  EXPECT_NE(read_file(d + "/w.jsonl").find("special magic word for"), std::string::npos);
  CliRun bad = run("gen --task niah_single_9 --tokens 1000 --count 1 --out " + d + "/x.jsonl", d);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("valid: passkey"), std::string::npos) << bad.err;
}

TEST(Chunker, RealTextsConcatenateBack) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  for (std::string f : {"README.md", "docs/MODEL_FORMAT.md", "reading/chunker.cpp"}) {
    std::string text = read_file(std::string(SMOOTHREAD_SOURCE_DIR) + "/" + f);
    for (int C : {16, 100, 512}) {
      auto cs = chunk_text(text, tok, {C, false});
      std::string joined;
      for (auto& c : cs) {
        EXPECT_LE(c.tokens, C);
        joined += text.substr(c.begin, c.end - c.begin);
      }
      EXPECT_EQ(joined, text) << f;
    }
  }
}
