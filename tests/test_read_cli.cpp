// `smoothread read` end to end on a model directory written by the trainer: bad input exits 2
// with a clear message, --json/--trace outputs, and resumable --batch.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/io.h"
#include "data/synthetic.h"
#include "eval/bench.h"
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

// RWKV-7 end to end: `train` on trajectories, `info`, then `read` in every mode; EMR's reading
// state (token-shift vectors + wkv matrices) does not grow with the document.
TEST(ReadCli, Rwkv7TrainsAndReadsInEveryMode) {
  std::string d = test::temp_dir("readrwkv");
  json cfg = tiny_reader_train_json(d,
                                    {{"model_type", "rwkv7"}, {"head_dim", 16}, {"decay_low_rank_dim", 8},
                                     {"a_low_rank_dim", 8}, {"v_low_rank_dim", 8}, {"gate_low_rank_dim", 8}},
                                    3);
  write_file_atomic(d + "/train.json", cfg.dump());
  CliRun t = run("train --config " + d + "/train.json", d);
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("\"step\":3"), std::string::npos) << t.out;
  CliRun info = run("info --model " + d + "/run/model --json", d);
  ASSERT_EQ(info.code, 0) << info.err;
  json ij = json::parse(info.out);
  EXPECT_EQ(ij["architecture"], "rwkv7");
  EXPECT_EQ(ij["layer_types"], json({"rwkv7", "rwkv7"}));
  EXPECT_EQ(run("read --model " + d + "/run/model --window 64 --doc " + d + "/train.json --question q", d).code, 2);
  for (std::string mode : {"emr", "nmr", "or"}) {
    std::vector<size_t> state;
    for (int paragraphs : {20, 80}) {
      std::string doc;
      for (int i = 0; i < paragraphs; ++i) doc += "Paragraph " + std::to_string(i) + " has some words in it.\n\n";
      write_file_atomic(d + "/doc.txt", doc);
      CliRun r = run("read --model " + d + "/run/model --doc " + d + "/doc.txt --question 'What?' --chunk-tokens 64 "
                     "--max-summary-tokens 6 --max-answer-tokens 4 --no-early-stop --json --mode " + mode, d);
      ASSERT_EQ(r.code, 0) << mode << ": " << r.err;
      json j = json::parse(r.out);
      EXPECT_EQ(j["mode"], mode);
      EXPECT_EQ(j["tokens_read"].get<size_t>(), doc.size());
      if (mode != "or") EXPECT_GT(j["rounds"].get<int>(), 5);
      state.push_back(j["state_bytes"].get<size_t>());
    }
    EXPECT_EQ(state[0], state[1]) << mode;  // a recurrent model reads any length in constant memory
  }
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

// ---------------------------------------------------------------- smoothread longbench
namespace {
// A LongBench-shaped checkout (our own short prompts and samples; LongBench's are not shipped).
void write_longbench_fixture(const std::string& d) {
  make_dirs(d + "/data");
  make_dirs(d + "/config");
  write_file_atomic(d + "/config/dataset2prompt.json",
                    json{{"hotpotqa", "Answer from the passages.\n\n{context}\n\nQuestion: {input}\nAnswer:"},
                         {"passage_count", "Count the paragraphs.\n\n{context}\n\nThe final answer is: "},
                         {"multifieldqa_zh", "阅读以下文字并回答：\n\n{context}\n\n问题：{input}\n回答："},
                         {"lcc", "Please complete the code given below. \n{context}Next line of code:\n"}}
                        .dump());
  write_file_atomic(d + "/config/dataset2maxlen.json",
                    json{{"hotpotqa", 8}, {"passage_count", 6}, {"multifieldqa_zh", 8}, {"lcc", 8}}.dump());
  auto line = [](const std::string& task, int i, const std::string& input, const std::string& ctx, const json& answers) {
    return json{{"input", input}, {"context", ctx}, {"answers", answers}, {"length", 100 + 4000 * i},
                {"dataset", task}, {"language", "en"}, {"all_classes", nullptr}, {"_id", task + "-" + std::to_string(i)}}
               .dump() + "\n";
  };
  std::string filler;
  for (int i = 0; i < 60; ++i) filler += "the quick brown fox jumps. ";
  write_file_atomic(d + "/data/hotpotqa.jsonl", line("hotpotqa", 0, "Where?", "It is in Paris. " + filler, {"Paris"}) +
                                                    line("hotpotqa", 1, "Who?", filler + "Hugo wrote it.", {"Hugo"}) +
                                                    line("hotpotqa", 2, "When?", filler, {"1900"}));
  write_file_atomic(d + "/data/passage_count.jsonl", line("passage_count", 0, "", "Paragraph 1: a. " + filler, {"1"}));
  write_file_atomic(d + "/data/multifieldqa_zh.jsonl", line("multifieldqa_zh", 0, "首都？", "北京是首都。", {"北京"}));
  write_file_atomic(d + "/data/lcc.jsonl", line("lcc", 0, "", "def f(x):\n    y = x\n", {"    return y"}));
}
}  // namespace

TEST(LongBenchCli, PredictsResumesAndScoresInAllModes) {
  std::string d = test::temp_dir("lbcli"), m = model_dir();
  write_longbench_fixture(d);
  std::string base = "longbench --model " + m + " --data-dir " + d + "/data --config-dir " + d + "/config --quiet ";
  CliRun r = run(base + "--out " + d + "/or --max-length 100 --json", d);
  ASSERT_EQ(r.code, 0) << r.err;
  json s = json::parse(r.out);
  EXPECT_EQ(s["samples"], 6);
  EXPECT_EQ(s["result"].size(), 4u);
  int n = 0;
  for_each_jsonl(d + "/or/hotpotqa.jsonl", [&](json& j, const std::string&) {
    for (const char* k : {"pred", "answers", "all_classes", "length", "_id"}) EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_TRUE(j["truncated"].get<bool>());  // ~400 tokens > 100
    ++n;
  });
  EXPECT_EQ(n, 3);
  EXPECT_EQ(json::parse(read_file(d + "/or/result.json")), s["result"]);
  // Resume: drop the last prediction and tear the file; the rerun redoes exactly that sample.
  std::string full = read_file(d + "/or/hotpotqa.jsonl");
  size_t cut = full.rfind("{\"_id\"");
  write_file_atomic(d + "/or/hotpotqa.jsonl", full.substr(0, cut) + "{\"_id\": \"hotp");
  r = run(base + "--out " + d + "/or --max-length 100", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(d + "/or/hotpotqa.jsonl"), full);  // greedy decoding: the same bytes again
  // --chat chatml wraps the QA prompt but not the code task's (pred.py's raw tasks); bad kinds exit 2.
  r = run(base + "--out " + d + "/chat --chat chatml --tasks hotpotqa,lcc", d);
  ASSERT_EQ(r.code, 0) << r.err;
  for_each_jsonl(d + "/chat/hotpotqa.jsonl", [&](json& j, const std::string&) { EXPECT_EQ(j["chat"], "chatml"); });
  for_each_jsonl(d + "/chat/lcc.jsonl", [&](json& j, const std::string&) { EXPECT_EQ(j["chat"], "none"); });
  EXPECT_EQ(run(base + "--out " + d + "/chat2 --chat jinja", d).code, 2);
  // Smooth Reading and NMR: question first, context in chunks; no truncation.
  for (std::string mode : {"emr", "nmr"}) {
    r = run(base + "--out " + d + "/" + mode + " --mode " + mode + " --chunk-tokens 64 --max-summary-tokens 6 --json", d);
    ASSERT_EQ(r.code, 0) << mode << r.err;
    for_each_jsonl(d + "/" + mode + "/hotpotqa.jsonl", [&](json& j, const std::string&) {
      EXPECT_GE(j["rounds"].get<int>(), 1) << mode;
      EXPECT_GT(j["context_tokens"].get<int>(), 64) << mode;
    });
  }
  // A chunk that breaks the window rule (W = 128) is reported per task, and the run goes on.
  r = run("longbench --model " + m + " --data-dir " + d + "/data --config-dir " + d + "/config --out " + d +
              "/wide --mode emr --chunk-tokens 120 --max-summary-tokens 6 --tasks passage_count",
          d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("passage_count: its longest query breaks the window rule"), std::string::npos) << r.err;
  // --score-only gives the same result.json; LongBench-E buckets by the length field.
  r = run("longbench --score-only --pred-dir " + d + "/or --data-dir " + d + "/data --json", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["result"], s["result"]);
  r = run("longbench --score-only --pred-dir " + d + "/or --e --json", d);
  ASSERT_EQ(r.code, 0) << r.err;
  json b = json::parse(r.out)["result"]["hotpotqa"];
  EXPECT_TRUE(b["0-4k"].is_number() && b["4-8k"].is_number() && b["8k+"].is_number()) << b;
  EXPECT_TRUE(json::parse(r.out)["result"]["lcc"]["8k+"].is_null());  // empty bucket: numpy's NaN
}

// Official scores of known predictions (values from the evals.md vectors).
TEST(LongBenchCli, ScoresKnownPredictionsLikeEvalPy) {
  std::string d = test::temp_dir("lbscore");
  make_dirs(d + "/p");
  auto rec = [](const std::string& pred, const json& answers, const json& classes = nullptr) {
    return json{{"pred", pred}, {"answers", answers}, {"all_classes", classes}, {"length", 10}}.dump() + "\n";
  };
  write_file_atomic(d + "/p/hotpotqa.jsonl", rec("The Eiffel Tower, Paris.", {"Eiffel tower in Paris"}) +
                                                 rec("the cat sat", {"x", "a cat"}));
  write_file_atomic(d + "/p/trec.jsonl", rec("\nABC AB A B\nignored", {"ABC"}, {"A", "AB", "ABC", "B"}));
  write_file_atomic(d + "/p/gov_report.jsonl", rec("the cat sat on the mat", {"the cat is on the mat"}));
  write_file_atomic(d + "/p/lcc.jsonl", rec("\n\n    return x\n", {"return x"}) + rec("```python\n# c\nx = 1\n", {"x = 1"}));
  CliRun r = run("longbench --score-only --pred-dir " + d + "/p --json", d);
  ASSERT_EQ(r.code, 0) << r.err;
  json res = json::parse(r.out)["result"];
  EXPECT_EQ(res["hotpotqa"], 76.19);  // (0.857142857 + 0.666666667) / 2
  EXPECT_EQ(res["trec"], 50.0);       // the list-mutation quirk
  EXPECT_EQ(res["gov_report"], 80.0);
  EXPECT_EQ(res["lcc"], 90.0);
  json avg = json::parse(r.out)["averages"]["en_mean_16_tasks"];
  EXPECT_EQ(avg["score"], 74.05);  // (76.190476 + 50 + 79.99999950 + 90) / 4, rounded once
  EXPECT_FALSE(avg["complete"].get<bool>());
}

TEST(LongBenchCli, BadInputExitsWith2NamingFileAndLine) {
  std::string d = test::temp_dir("lbbad"), m = model_dir();
  write_longbench_fixture(d);
  std::string base = "longbench --model " + m + " --data-dir " + d + "/data --config-dir " + d + "/config --quiet ";
  // A data line without 'answers'.
  std::string good = read_file(d + "/data/lcc.jsonl");
  json broken = json::parse(good);
  broken.erase("answers");
  write_file_atomic(d + "/data/lcc.jsonl", good + broken.dump() + "\n");
  CliRun r = run(base + "--tasks lcc --out " + d + "/o1", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("lcc.jsonl:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("answers"), std::string::npos) << r.err;
  // An unknown dataset name, on the command line and as a prediction file.
  r = run(base + "--tasks hotpotqa,nosuchtask --out " + d + "/o2", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("nosuchtask"), std::string::npos) << r.err;
  make_dirs(d + "/p");
  write_file_atomic(d + "/p/nosuchtask.jsonl", "{\"pred\": \"a\", \"answers\": [\"a\"], \"all_classes\": null}\n");
  r = run("longbench --score-only --pred-dir " + d + "/p", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("nosuchtask"), std::string::npos) << r.err;
  // Prediction ids that do not match the data: at scoring and when resuming.
  make_dirs(d + "/q");
  write_file_atomic(d + "/q/passage_count.jsonl",
                    "{\"pred\": \"1\", \"answers\": [\"1\"], \"all_classes\": null, \"length\": 5, \"_id\": \"other-7\"}\n");
  r = run("longbench --score-only --pred-dir " + d + "/q --data-dir " + d + "/data", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("passage_count.jsonl:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("other-7"), std::string::npos) << r.err;
  r = run(base + "--tasks passage_count --out " + d + "/q", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("passage_count.jsonl:1"), std::string::npos) << r.err;
  // A classification prediction file without a class list, and a retrieval gold without a number.
  make_dirs(d + "/c");
  write_file_atomic(d + "/c/passage_retrieval_en.jsonl",
                    "{\"pred\": \"Paragraph 1\", \"answers\": [\"no number\"], \"all_classes\": null}\n");
  r = run("longbench --score-only --pred-dir " + d + "/c", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("passage_retrieval_en.jsonl:1"), std::string::npos) << r.err;
}

// ---------------------------------------------------------------- window override and convert
TEST(WindowCli, OverrideAndConvertGiveTheSameModel) {
  std::string d = test::temp_dir("window"), m = model_dir();  // the fixture: 2 layers, all SWA with W = 128
  const std::string text = "--text 'a sliding window of eight tokens cannot see the start of this longer sentence' --json";
  auto nll = [&](const std::string& args) {
    CliRun r = run("score " + args + " " + text, d);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? json::parse(r.out)["logprobs"] : json();
  };
  json base = nll("--model " + m), w8 = nll("--model " + m + " --window 8"), w8l0 = nll("--model " + m + " --window 8 --swa-layers 0");
  EXPECT_NE(base, w8);
  EXPECT_NE(w8, w8l0);
  EXPECT_NE(base, w8l0);
  EXPECT_EQ(nll("--model " + m + " --window 0"), nll("--model " + m + " --window 128"));  // 128 > text: same as full
  ASSERT_EQ(run("convert --model " + m + " --out " + d + "/w8 --window 8", d).code, 0);
  EXPECT_EQ(nll("--model " + d + "/w8"), w8);  // bitwise the same log-probs
  json cfg = json::parse(read_file(d + "/w8/config.json"));
  EXPECT_EQ(cfg["sliding_window"], 8);
  EXPECT_EQ(cfg["layer_types"], json({"sliding_attention", "sliding_attention"}));
  // bad input: exit 2 with the reason
  for (std::string bad : {"--window 8 --swa-layers 0,5", "--window 8 --swa-layers 1x", "--swa-layers 0", "--window -3"}) {
    CliRun r = run("score --model " + m + " " + bad + " " + text, d);
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_NE(r.err.find("error:"), std::string::npos) << bad;
  }
  // info reports what was loaded: the window in effect, checkpoint dtypes, tokenizer kind and specials
  CliRun info = run("info --model " + m + " --window 8 --swa-layers 1 --json", d);
  ASSERT_EQ(info.code, 0) << info.err;
  json ij = json::parse(info.out);
  EXPECT_EQ(ij["sliding_window"], 8);
  EXPECT_EQ(ij["layer_types"], json({"full_attention", "sliding_attention"}));
  EXPECT_GT(ij["checkpoint_dtypes"]["F32"].get<int>(), 0);
  EXPECT_EQ(ij["checkpoint_dtypes"].size(), 1u);
  EXPECT_NE(ij["tokenizer"]["kind"].get<std::string>().find("byte-level"), std::string::npos);
  EXPECT_NE(std::find(ij["tokenizer"]["special_tokens"].begin(), ij["tokenizer"]["special_tokens"].end(), "<READ>"),
            ij["tokenizer"]["special_tokens"].end());
  CliRun again = run("convert --model " + m + " --out " + d + "/w8 --window 8", d);
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
}

TEST(WindowCli, GatedDeltaNetLayersKeepTheirKind) {
  ModelConfig c = test::tiny_config("lfl", 9);
  ModelConfig all = c;
  all.set_window(4, "all", "test");
  EXPECT_EQ(all.layer_sliding, (std::vector<bool>{false, true, false}));
  EXPECT_TRUE(all.is_linear(0) && all.is_linear(2));
  EXPECT_THROW(c.set_window(4, "0", "test"), sr::Error);  // layer 0 is Gated DeltaNet
  ModelConfig none = all;
  none.set_window(0, "all", "test");
  EXPECT_FALSE(none.any_sliding());
}

// A `read --batch` file of one synthetic document per options (count 1 each); returns the answers.
static std::vector<std::string> write_read_batch(const std::vector<SyntheticOptions>& docs, const std::string& path) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  std::string batch;
  std::vector<std::string> answers;
  for (const SyntheticOptions& o : docs) {
    json r = make_synthetic(o, tok)[0];
    answers.push_back(r["answers"][0]);
    batch += json{{"id", r["id"]}, {"context", r["context"]}, {"input", r["input"]}}.dump() + "\n";
  }
  write_file_atomic(path, batch);
  return answers;
}

// The bundled default model (models/smoothread-reader-10m) answers single-needle questions on
// documents generated with seeds it never saw, at three depths, reading with EMR on the CPU; and
// the bundled example document's answer file is what it answers there (the README's main job).
TEST(DefaultModel, AnswersHeldOutNeedleQuestions) {
  const std::string m = std::string(SMOOTHREAD_SOURCE_DIR) + "/models/smoothread-reader-10m";
  std::string d = test::temp_dir("default");
  std::vector<SyntheticOptions> docs(3);
  for (int i = 0; i < 3; ++i) {
    SyntheticOptions& o = docs[i];
    o.task = i == 1 ? "passkey" : "niah_single_2", o.tokens = 3000, o.count = 1, o.seed = 777001 + i;
    o.depth = 0.1 + 0.4 * i;
  }
  const std::vector<std::string> answers = write_read_batch(docs, d + "/in.jsonl");
  for (std::string dw : {"fp32", "bf16"}) {  // bf16 decode weights answer the same
    SCOPED_TRACE(dw);
    const std::string out = d + "/out-" + dw + ".jsonl";
    CliRun r = run("read --model " + m + " --batch " + d + "/in.jsonl --out " + out + " --quiet --threads 2 --decode-weights " + dw, d);
    ASSERT_EQ(r.code, 0) << r.err;
    std::istringstream lines(read_file(out));
    std::string line;
    for (size_t i = 0; std::getline(lines, line); ++i) {
      json o = json::parse(line);
      ASSERT_LT(i, answers.size());
      EXPECT_NE(o["answer"].get<std::string>().find(answers[i]), std::string::npos) << line.substr(0, 300);
      EXPECT_TRUE(o["stopped_early"].get<bool>() || i == 2);
    }
  }
  CliRun bad = run("read --model " + m + " --batch " + d + "/in.jsonl --out " + d + "/x.jsonl --decode-weights fp16", d);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--decode-weights"), std::string::npos) << bad.err;
}

// The default model on text and phrasings it never saw: questions, needle sentences and keys from
// the held-out pool ("Captain Tanaka's ticket number is ..."), planted in an original text written
// for this test (tests/data/heldout_prose.txt: a travel diary, a bread recipe, a library's history,
// notes on debugging, meteors, bees). Measured 17/20 at 4k tokens (docs/RESULTS.md); these six
// documents (seeds not selected) need 4.
TEST(DefaultModel, AnswersUnseenPhrasingsOverUnseenText) {
  const std::string src = SMOOTHREAD_SOURCE_DIR;
  std::string d = test::temp_dir("default_unseen");
  std::vector<SyntheticOptions> docs(6);
  for (int i = 0; i < 6; ++i) {
    SyntheticOptions& o = docs[i];
    o.task = i == 5 ? "passkey" : "niah_single_2", o.tokens = 3000, o.count = 1, o.seed = 778001 + i;
    o.phrasing = "heldout", o.haystack_files = {src + "/tests/data/heldout_prose.txt"};
  }
  const std::vector<std::string> answers = write_read_batch(docs, d + "/in.jsonl");
  CliRun r = run("read --model " + src + "/models/smoothread-reader-10m --batch " + d + "/in.jsonl --out " + d +
                     "/out.jsonl --quiet --threads 2",
                 d);
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream lines(read_file(d + "/out.jsonl"));
  std::string line;
  int right = 0, n = 0;
  for (; std::getline(lines, line); ++n) {
    json o = json::parse(line);
    ASSERT_LT(size_t(n), answers.size());
    bool ok = o["answer"].get<std::string>().find(answers[n]) != std::string::npos;
    right += ok;
    if (!ok) std::cerr << "missed: want " << answers[n] << ", got " << o["answer"] << "\n";
  }
  EXPECT_EQ(n, 6);
  EXPECT_GE(right, 4);
}

// `smoothread bench`: every requested test runs reps times, rates are tokens / seconds, EMR
// reading of an all-SWA model keeps the same state size at any length, and the CLI's formats parse.
TEST(Bench, RunsEveryTestAndReportsTheEnvironment) {
  auto m = make_model(test::tiny_config("ss", 16));
  m->init_random(2);
  BenchOptions o;
  o.prompt_sizes = {40}, o.gen_sizes = {6}, o.depths = {0, 20}, o.read_sizes = {100, 400}, o.train_sizes = {24};
  o.chunk_tokens = 32, o.summary_tokens = 3, o.query_tokens = 5, o.answer_tokens = 2, o.reps = 2, o.warmup = 0;
  auto rows = run_bench(*m, o);
  std::vector<std::string> names;
  for (auto& r : rows) {
    names.push_back(r.test);
    ASSERT_EQ(r.seconds.size(), 2u) << r.test;
    EXPECT_GT(r.tokens_per_s, 0) << r.test;
    EXPECT_NEAR(r.tokens_per_s, r.tokens / r.seconds[0] / 2 + r.tokens / r.seconds[1] / 2, 1e-6 * r.tokens_per_s);
    EXPECT_GT(r.peak_rss_bytes, 0u);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"pp40", "tg6", "tg6@d20", "read-emr 100", "read-or 100", "read-emr 400",
                                             "read-or 400", "train 24"}));
  EXPECT_EQ(rows[3].extra["rounds"].get<int>(), 4);  // ceil(100 / 32)
  EXPECT_EQ(rows[5].extra["rounds"].get<int>(), 13);
  EXPECT_EQ(rows[3].extra["state_bytes"], rows[5].extra["state_bytes"]);  // SWA: constant memory
  json env = bench_environment(*m);
  for (const char* k : {"commit", "build_type", "cpu", "threads", "device", "model"}) EXPECT_TRUE(env.contains(k)) << k;
  std::string md = format_bench(env, rows, "md"), csv = format_bench(env, rows, "csv");
  EXPECT_NE(md.find("| qwen2 0M | cpu | read-emr 400 |"), std::string::npos) << md;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + long(rows.size()));
  EXPECT_EQ(json::parse(format_bench(env, rows, "json"))["results"].size(), rows.size());
  o.prompt_sizes = {0};
  EXPECT_THROW(run_bench(*m, o), Error);
  o.prompt_sizes = {4}, o.read_modes = {"emr", "skim"};
  EXPECT_THROW(run_bench(*m, o), Error);
}

TEST(BenchCli, ConfigShapesAndFormats) {
  std::string d = test::temp_dir("benchcli");
  write_file_atomic(d + "/config.json", json{{"model_type", "qwen2"}, {"hidden_size", 32}, {"intermediate_size", 48},
                                             {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                             {"num_key_value_heads", 2}, {"use_sliding_window", true},
                                             {"sliding_window", 64}, {"max_window_layers", 0}}
                                            .dump());
  CliRun r = run("bench --config " + d + "/config.json -p 64 -n 4 --read 1k --mode emr --train 32 --reps 2 --warmup 0 "
                 "--format json --threads 1",
                 d);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][2]["test"], "read-emr 1024");
  EXPECT_EQ(j["environment"]["threads"], 1);
  r = run("bench --config " + d + "/config.json -p 4x --reps 1", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("-p"), std::string::npos) << r.err;
  r = run("bench -p 4", d);
  EXPECT_EQ(r.code, 2);
  r = run("bench --config " + d + "/config.json -p 16 --reps 1 --format csv --out " + d + "/b.csv", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(d + "/b.csv").rfind("commit,build_type", 0), 0u);
}

// Every mixer family benches through --config (issue 11: extend as each mixer lands): Gated
// DeltaNet + SWA hybrid, RWKV-7, and all-SWA; their EMR reading state does not grow with the
// document, and every output names the build `smoothread --version` prints.
TEST(BenchCli, EveryMixerFamilyReadsInConstantState) {
  std::string d = test::temp_dir("benchmixers");
  json base = {{"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 2},
               {"num_key_value_heads", 1}, {"use_sliding_window", true}, {"sliding_window", 64}, {"max_window_layers", 0}};
  std::vector<std::pair<std::string, json>> families = {
      {"swa", {{"model_type", "qwen2"}}},
      {"gdn", {{"model_type", "qwen2"}, {"layer_types", {"linear_attention", "sliding_attention"}},
               {"linear_num_key_heads", 1}, {"linear_num_value_heads", 2}, {"linear_key_head_dim", 16},
               {"linear_value_head_dim", 16}}},
      {"rwkv7", {{"model_type", "rwkv7"}, {"head_dim", 16}, {"decay_low_rank_dim", 8}, {"a_low_rank_dim", 8},
                 {"v_low_rank_dim", 8}, {"gate_low_rank_dim", 8}}}};
  CliRun v = run("--version", d);
  ASSERT_EQ(v.code, 0) << v.err;
  ASSERT_EQ(v.out.rfind("smoothread ", 0), 0u) << v.out;
  const std::string commit = v.out.substr(11, v.out.find(' ', 11) - 11);
  for (auto& [name, extra] : families) {
    SCOPED_TRACE(name);
    json cfg = base;
    cfg.update(extra);
    write_file_atomic(d + "/" + name + ".json", cfg.dump());
    CliRun r = run("bench --config " + d + "/" + name + ".json --read 256,1k --mode emr,or --chunk-tokens 64 "
                   "--summary-tokens 4 --answer-tokens 2 --train 64 --reps 1 --warmup 0 --format json --threads 1",
                   d);
    ASSERT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out);
    EXPECT_EQ(j["environment"]["commit"], commit);
    EXPECT_EQ(j["environment"]["model"]["model_type"], name == "rwkv7" ? "rwkv7" : "qwen2");
    ASSERT_EQ(j["results"].size(), 5u);  // emr 256, or 256, emr 1k, or 1k, train 64
    EXPECT_EQ(j["results"][0]["extra"]["state_bytes"], j["results"][2]["extra"]["state_bytes"]);
    EXPECT_EQ(j["results"][2]["extra"]["rounds"], 16);
    for (auto& x : j["results"]) EXPECT_GT(x["mean_s"].get<double>(), 0.0);
  }
}
