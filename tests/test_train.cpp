// Training: resume-from-checkpoint reproduces the uninterrupted loss trajectory bitwise (CPU),
// gradient accumulation equals one big batch, and a tiny model learns the copy task from scratch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "data/toy_tasks.h"
#include "infer/session.h"
#include "model_fixtures.h"
#include "models/model_dir.h"
#include "train/trainer.h"

using namespace sr;
using namespace sr::test;

namespace {
std::string write_task(const std::string& dir, const std::string& task, int count, uint64_t seed, int lo, int hi) {
  ToyTaskOptions o;
  o.task = task, o.count = count, o.seed = seed, o.min_len = lo, o.max_len = hi;
  std::string out;
  for (auto& j : make_toy_task(o)) out += j.dump() + "\n";
  std::string path = dir + "/" + task + std::to_string(seed) + ".jsonl";
  write_file_atomic(path, out);
  return path;
}

json small_train_json(const std::string& data, const std::string& out) {
  return {{"model",
           {{"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"rope_theta", 10000.0}, {"use_sliding_window", true}, {"sliding_window", 8},
            {"max_window_layers", 1}}},
          {"data", data}, {"out_dir", out}, {"seq_len", 24}, {"batch_size", 4}, {"steps", 20}, {"lr", 0.01},
          {"warmup_steps", 3}, {"log_every", 1}, {"seed", 3}};
}
}  // namespace

TEST(Train, ResumeReproducesLossTrajectoryBitwise) {
 for (bool grouped : {false, true}) {
  SCOPED_TRACE(grouped ? "length-grouped batches" : "plain batches");
  std::string dir = temp_dir(grouped ? "resume_g" : "resume");
  // 30 samples / batch 4: the interruption at step 10 falls mid-epoch, with a reshuffle after it.
  std::string data = write_task(dir, "copy", 30, 1, 3, 8);
  std::vector<double> a, b;
  json ja = small_train_json(data, dir + "/a"), jb = small_train_json(data, dir + "/b");
  ja["group_by_length"] = grouped, jb["group_by_length"] = grouped;
  {
    Trainer t(TrainConfig::from_json(ja, "test"));
    t.run([&](const json& j) { a.push_back(j["loss"].get<double>()); });
  }
  TrainConfig cb = TrainConfig::from_json(jb, "test");
  {
    Trainer t(cb);
    t.run([&](const json& j) { b.push_back(j["loss"].get<double>()); }, false, 10);
    EXPECT_EQ(t.step(), 10);
  }
  {
    Trainer t(cb);  // a fresh process would do exactly this
    t.run([&](const json& j) { b.push_back(j["loss"].get<double>()); }, true);
  }
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(a, b);  // bitwise: same doubles
  LoadedModel ma = load_model_dir(dir + "/a/model"), mb = load_model_dir(dir + "/b/model");
  EXPECT_EQ(0, std::memcmp(ma.model->params(), mb.model->params(), ma.model->num_params() * sizeof(float)));
  // And the loss actually moved (the test would pass vacuously on a frozen model otherwise).
  EXPECT_LT(a.back(), a.front());
 }
}

TEST(Train, GradientAccumulationMatchesLargeBatch) {
  std::string dir = temp_dir("accum");
  std::string data = write_task(dir, "copy", 16, 2, 3, 8);
  json j1 = small_train_json(data, dir + "/one"), j2 = small_train_json(data, dir + "/acc");
  j1["batch_size"] = 4, j1["steps"] = 1;
  j2["batch_size"] = 2, j2["grad_accum"] = 2, j2["steps"] = 1;
  // Equal per-micro-batch weight sums make mean-of-means equal the big-batch mean; copy samples of
  // equal length guarantee that.
  std::string eq = write_task(dir, "copy", 16, 3, 5, 5);
  j1["data"] = eq, j2["data"] = eq;
  Trainer t1(TrainConfig::from_json(j1, "t")), t2(TrainConfig::from_json(j2, "t"));
  double l1 = 0, l2 = 0;
  t1.run([&](const json& j) { l1 = j["loss"]; });
  t2.run([&](const json& j) { l2 = j["loss"]; });
  EXPECT_NEAR(l1, l2, 1e-5);
  const float *p1 = t1.model().params(), *p2 = t2.model().params();
  double worst = 0;
  for (size_t i = 0; i < t1.model().num_params(); ++i) worst = std::max(worst, double(std::fabs(p1[i] - p2[i])));
  EXPECT_LT(worst, 1e-5);
}

// "logits_chunk_mib": read into the config (default 0: the model's own, by backend); negative: an
// error naming the field.
TEST(Train, LogitsChunkField) {
  std::string dir = temp_dir("chunk");
  std::string data = write_task(dir, "copy", 16, 2, 3, 8);
  json j = small_train_json(data, dir + "/o");
  EXPECT_EQ(TrainConfig::from_json(j, "t").logits_chunk_mib, 0);
  j["logits_chunk_mib"] = 2048;
  EXPECT_EQ(TrainConfig::from_json(j, "t").logits_chunk_mib, 2048);
  j["logits_chunk_mib"] = -1;
  try {
    TrainConfig::from_json(j, "t");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logits_chunk_mib"), std::string::npos) << e.what();
  }
}

namespace {
// Held-out copy strings (another seed): the mean loss per completion token, and how many of 100 the
// model copies exactly with greedy decoding.
double held_out_copy_loss(LanguageModel& model, int* exact_copies) {
  ByteTokenizer tok(ByteTokenizer::default_specials());
  ToyTaskOptions o;
  o.task = "copy", o.count = 100, o.seed = 999, o.min_len = 3, o.max_len = 8;
  double loss_sum = 0, w_sum = 0;
  int exact = 0;
  for (auto& s : make_toy_task(o)) {
    auto p = tok.encode(s["prompt"].get<std::string>()), c = tok.encode(s["completion"].get<std::string>());
    c.push_back(tok.token_id("<|endoftext|>"));
    std::vector<int32_t> ids = p, tg(p.size() - 1, -1);
    ids.insert(ids.end(), c.begin(), c.end() - 1);
    tg.insert(tg.end(), c.begin(), c.end());
    std::vector<float> w(ids.size(), 0.f);
    for (size_t i = p.size() - 1; i < ids.size(); ++i) w[i] = 1.f;
    loss_sum += model.forward(ids.data(), tg.data(), w.data(), 1, int(ids.size())) * c.size();
    w_sum += c.size();
    Session sess(model);
    sess.prefill(p);
    exact += sess.generate(12, tok.token_id("<|endoftext|>")) == c;
  }
  if (exact_copies) *exact_copies = exact;
  return loss_sum / w_sum;
}
}  // namespace

// Threshold stated here: a 2-layer model trained from scratch for 700 steps (a fixed count, so the
// result does not depend on the machine's speed or load; ~27 s on 2 cores) must reach a held-out
// loss below 0.25 nats per completion token on the copy task and copy >= 80% of unseen strings
// exactly with greedy decoding (chance: 1/26 per letter).
TEST(Train, TinyModelLearnsCopyTask) {
  std::string dir = temp_dir("learn");
  std::string data = write_task(dir, "copy", 20000, 11, 3, 8);
  json j = small_train_json(data, dir + "/run");
  j["model"] = {{"hidden_size", 128}, {"intermediate_size", 256}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                {"num_key_value_heads", 2}, {"rope_theta", 10000.0}, {"tie_word_embeddings", true}};
  j["seq_len"] = 32, j["batch_size"] = 32, j["steps"] = 700, j["lr"] = 0.003, j["min_lr"] = 0.0003;
  j["warmup_steps"] = 100, j["log_every"] = 100, j["weight_decay"] = 0.01;
  Trainer t(TrainConfig::from_json(j, "test"));
  t.run([](const json& line) { std::cerr << line.dump() << "\n"; });
  int exact = 0;
  double held_out = held_out_copy_loss(t.model(), &exact);
  std::cerr << "held-out loss " << held_out << ", exact copies " << exact << "/100\n";
  EXPECT_LT(held_out, 0.25);
  EXPECT_GE(exact, 80);
}

// A pure Gated DeltaNet model (no attention layer) must learn to copy from its recurrent state
// alone. Threshold stated here: after 400 steps (a fixed count, so the result does not depend on the
// machine's speed) the held-out loss is below 1.5 nats per completion token (chance: ln 26 = 3.26).
// With the Qwen3-Next loading default dt_bias = 1 (per-token decay <= 0.27) the same run stays at
// 3.1: the regression this guards against (models/transformer.cpp, gdn_dt_bias_init).
TEST(Train, TinyGatedDeltaNetLearnsCopyTask) {
  std::string dir = temp_dir("learn_gdn");
  std::string data = write_task(dir, "copy", 20000, 11, 3, 8);
  json j = small_train_json(data, dir + "/run");
  j["model"] = {{"hidden_size", 128},       {"intermediate_size", 256},    {"num_hidden_layers", 2},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2},    {"tie_word_embeddings", true},
                {"layer_types", {"linear_attention", "linear_attention"}}, {"linear_num_key_heads", 2},
                {"linear_num_value_heads", 4}, {"linear_key_head_dim", 32}, {"linear_value_head_dim", 32},
                {"linear_conv_kernel_dim", 4}};
  j["seq_len"] = 32, j["batch_size"] = 32, j["steps"] = 400, j["lr"] = 0.003, j["min_lr"] = 0.0003;
  j["warmup_steps"] = 100, j["log_every"] = 100, j["weight_decay"] = 0.01;
  Trainer t(TrainConfig::from_json(j, "test"));
  t.run([](const json& line) { std::cerr << line.dump() << "\n"; });
  int exact = 0;
  double held_out = held_out_copy_loss(t.model(), &exact);
  std::cerr << "held-out loss " << held_out << ", exact copies " << exact << "/100\n";
  EXPECT_LT(held_out, 1.5);
}

// "tokens" in train.json: steps = ceil(tokens / (batch * accum * mean trained tokens per sample));
// the log carries the cumulative token count, and a resumed run continues it.
TEST(Train, TokenBudgetSetsStepsAndTheLogCountsTokens) {
  std::string dir = temp_dir("budget");
  std::string data = write_task(dir, "copy", 50, 4, 3, 8);
  json j = small_train_json(data, dir + "/run");
  j.erase("steps");
  j["tokens"] = 1000, j["batch_size"] = 4, j["grad_accum"] = 2, j["checkpoint_every"] = 2;
  double mean = 0;  // copy samples: prompt + completion + eos, minus one (inputs), capped at seq_len
  ToyTaskOptions o;
  o.task = "copy", o.count = 50, o.seed = 4, o.min_len = 3, o.max_len = 8;
  for (auto& s : make_toy_task(o))
    mean += std::min(24.0, double(s["prompt"].get<std::string>().size() + s["completion"].get<std::string>().size()));
  mean /= 50;
  Trainer t(TrainConfig::from_json(j, "test"));
  EXPECT_EQ(t.steps(), int64_t(std::ceil(1000.0 / (4 * 2 * mean))));
  std::vector<json> log;
  t.run([&](const json& l) { log.push_back(l); }, false, 3);  // interrupted after 3 steps
  ASSERT_EQ(log.size(), 3u);
  EXPECT_GT(log[0]["tokens"].get<int64_t>(), 0);
  EXPECT_LT(log[0]["tokens"].get<int64_t>(), log[1]["tokens"].get<int64_t>());  // cumulative
  EXPECT_LT(log[1]["tokens"].get<int64_t>(), log[2]["tokens"].get<int64_t>());
  EXPECT_LE(log[2]["tokens"].get<int64_t>(), 3 * 2 * 4 * 24);
  Trainer resumed(TrainConfig::from_json(j, "test"));
  std::vector<json> log2;
  resumed.run([&](const json& l) { log2.push_back(l); }, true);
  ASSERT_FALSE(log2.empty());
  EXPECT_GT(log2.front()["tokens"].get<int64_t>(), log[2]["tokens"].get<int64_t>());  // continues the count
  EXPECT_GE(log2.back()["tokens"].get<int64_t>(), 1000 - 2 * 4 * 24);
  json bad = j;
  bad["tokens"] = 0;
  EXPECT_THROW(TrainConfig::from_json(bad, "test"), Error);
}

// The toy "repeat" task: the completion is the prompt's first sentence, after a gap.
TEST(Train, RepeatTaskCompletionIsTheFirstSentence) {
  ToyTaskOptions o;
  o.task = "repeat", o.count = 200, o.seed = 7, o.min_len = 16, o.max_len = 100;
  auto a = make_toy_task(o);
  EXPECT_EQ(json(a).dump(), json(make_toy_task(o)).dump());
  for (auto& s : a) {
    std::string p = s["prompt"], c = s["completion"];
    ASSERT_EQ(p.substr(0, c.size()), c);
    EXPECT_GE(int(c.size()), 16 + 1);
    EXPECT_LE(int(c.size()), 100 + 10 + 1);
    EXPECT_NE(p.find("\nRepeat the first sentence: ", c.size()), std::string::npos);
  }
}
