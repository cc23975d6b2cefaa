// Core pieces: tensor views, arena, RNG, JSON field errors, atomic writes, AdamW + schedule +
// clipping, JSONL loader errors and determinism, sampler.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/io.h"
#include "core/tensor.h"
#include "infer/sampler.h"
#include "model_fixtures.h"
#include "train/adamw.h"
#include "train/data_loader.h"

using namespace sr;

TEST(Core, TensorViewsShareStorage) {
  Tensor t = Tensor::zeros({2, 3, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = float(i);
  Tensor r = t.reshape({6, -1});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  Tensor s = r.slice(2, 4);
  EXPECT_EQ(s.at({0, 0}), 8.f);
  s.at({1, 3}) = -1.f;
  EXPECT_EQ(t.at({1, 0, 3}), -1.f);  // same storage
  Tensor tr = t.reshape({6, 4}).transpose(0, 1);
  EXPECT_FALSE(tr.contiguous());
  EXPECT_EQ(tr.at({1, 2}), 9.f);
  Tensor c = tr.clone();
  EXPECT_TRUE(c.contiguous());
  EXPECT_EQ(c.shape(), (Shape{4, 6}));
  EXPECT_EQ(c.at({1, 2}), 9.f);
  EXPECT_THROW(tr.reshape({24}), Error);
}

TEST(Core, ArenaAllocResetAndExhaustion) {
  Arena a(100);
  Tensor x = a.alloc({10, 3});
  Tensor y = a.alloc({5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(y.data()) % 64, 0u);
  EXPECT_EQ(a.used(), 48u);
  EXPECT_THROW(a.alloc({60}), Error);
  a.reset();
  EXPECT_EQ(a.alloc({60}).numel(), 60);
}

TEST(Core, RngIsDeterministicAndResumable) {
  Rng a(7), b(7);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  auto st = a.state();
  float x = a.normal();
  a.set_state(st);
  EXPECT_EQ(a.normal(), x);
  Rng c(8);
  EXPECT_NE(c.next_u64(), Rng(7).next_u64());
}

TEST(Core, JsonFieldErrorsNameFileAndField) {
  json j = {{"a", "x"}, {"b", 1.5}};
  try {
    json_int(j, "a", "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: field 'a'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(json_int(j, "b", "cfg.json"), Error);
  EXPECT_THROW(json_int(j, "missing", "cfg.json"), Error);
  EXPECT_EQ(json_int_or(j, "missing", 3, "cfg.json"), 3);
}

TEST(Core, AtomicWriteReplacesWholeFile) {
  const std::string dir = test::temp_dir("atomic");
  std::string p = dir + "/f.txt";
  write_file_atomic(p, "first version, longer");
  write_file_atomic(p, "second");
  EXPECT_EQ(read_file(p), "second");
  // a folder that is not there yet is made (`--trace runs/t.jsonl` in a fresh checkout)
  const std::string nested = dir + "/not/yet/there/t.jsonl";
  write_file_atomic(nested, "line\n");
  EXPECT_EQ(read_file(nested), "line\n");
  {
    JsonlAppender out(dir + "/also/new/out.jsonl");
    out.append(json{{"a", 1}});
  }
  // a folder that cannot be made (its parent is a file): an error naming the path
  try {
    write_file_atomic(p + "/x", "y");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p + "/x"), std::string::npos) << e.what();
  }
}

TEST(Train, AdamWStepMatchesHandComputation) {
  AdamW opt(2, {0.1f, 0.9f, 0.99f, 1e-8f, 0.5f});
  float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
  opt.set_decay_mask({1, 0});
  opt.step(p, g, 0.1f);
  // t=1: mhat = g, vhat = g^2 -> update = g/|g| = sign(g); decay only on p[0]
  EXPECT_NEAR(p[0], 1.0f - 0.1f * (1.0f + 0.5f * 1.0f), 1e-6);
  EXPECT_NEAR(p[1], -2.0f - 0.1f * 1.0f, 1e-6);
}

TEST(Train, ClippingFoldedIntoAdamWEqualsClipThenStep) {
  // grad_norm's factor passed to the step gives the same bits as scaling the gradients first
  const size_t n = 1001;  // odd, not a multiple of any vector width
  std::vector<float> p0(n), g(n);
  Rng r(5);
  for (size_t i = 0; i < n; ++i) p0[i] = float(r.normal()), g[i] = float(r.normal()) * 3.0f;
  std::vector<uint8_t> mask(n);
  for (size_t i = 0; i < n; ++i) mask[i] = i % 3 != 0;
  for (const OpsTable* ops : {&ops_ref(), &ops_cpu()}) {
    SCOPED_TRACE(ops->name);
    for (double max_norm : {0.5, 1e9, 0.0}) {  // clipped, within the bound, clipping off
      std::vector<float> pa = p0, pb = p0, ga = g;
      AdamW a(n, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f}, *ops), b(n, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f}, *ops);
      a.set_decay_mask(mask), b.set_decay_mask(mask);
      for (int step = 0; step < 3; ++step) {
        std::vector<float> gs = g;
        const double na = clip_grad_norm(gs.data(), n, max_norm, *ops);
        a.step(pa.data(), gs.data(), 1e-2f);
        const GradNorm gn = grad_norm(g.data(), n, max_norm, *ops);
        EXPECT_EQ(gn.norm, na);
        EXPECT_EQ(gn.clip_scale != 1.0f, max_norm == 0.5);
        b.step(pb.data(), g.data(), 1e-2f, gn.clip_scale);
      }
      EXPECT_EQ(pa, pb);
      EXPECT_EQ(a.m_host(), b.m_host());
      EXPECT_EQ(a.v_host(), b.v_host());
    }
  }
}

TEST(Train, ScheduleAndClipping) {
  EXPECT_FLOAT_EQ(lr_at(0, 10, 100, 1.0f, 0.1f), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(9, 10, 100, 1.0f, 0.1f), 1.0f);
  EXPECT_NEAR(lr_at(55, 10, 100, 1.0f, 0.1f), 0.55f, 1e-6);
  EXPECT_NEAR(lr_at(100, 10, 100, 1.0f, 0.1f), 0.1f, 1e-6);
  std::vector<float> g = {3.f, 4.f};
  EXPECT_NEAR(clip_grad_norm(g.data(), 2, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-5);
}

TEST(Train, JsonlErrorsNameLineAndLoaderIsDeterministic) {
  std::string dir = test::temp_dir("jsonl");
  ByteTokenizer tok(ByteTokenizer::default_specials());
  auto put = [&](const std::string& s) { std::ofstream(dir + "/d.jsonl") << s; };
  auto expect_msg = [&](const std::string& needle) {
    try {
      load_jsonl_samples(dir + "/d.jsonl", &tok);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  put("{\"text\": \"ab\"}\n\n{\"ids\": [1, \"x\"]}\n");
  expect_msg("d.jsonl:3: field 'ids'");
  put("{\"text\": \"ab\"}\n{bad\n");
  expect_msg("d.jsonl:2: invalid JSON");
  put("{\"ids\": [1,2], \"weights\": [1]}\n");
  expect_msg("d.jsonl:1: field 'weights'");
  put("{\"ids\": [1, 9999]}\n");
  expect_msg("outside the vocabulary");
  put("{\"prompt\": \"ab|\", \"completion\": \"ab\"}\n{\"ids\": [1,2,3], \"weights\": [0, 0.5, 1]}\n{\"text\": \"xyz\"}\n");
  auto samples = load_jsonl_samples(dir + "/d.jsonl", &tok);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].weights, (std::vector<float>{0, 0, 0, 1, 1, 1}));  // prompt 0, completion + eos 1
  EXPECT_EQ(samples[0].ids.back(), 256);
  DataLoader a(samples, 2, 4, 9), b(samples, 2, 4, 9);
  for (int i = 0; i < 5; ++i) {
    Batch x = a.next(), y = b.next();
    EXPECT_EQ(x.inputs, y.inputs);
    EXPECT_EQ(x.weights, y.weights);
    EXPECT_LE(x.T, 4);
  }
}

TEST(Infer, SamplerGreedyTopKTopP) {
  std::vector<float> z = {0.f, 3.f, 1.f, 2.9f};
  Rng r(1);
  EXPECT_EQ(sample_token(z.data(), 4, {}, r), 1);
  SamplingParams k1;
  k1.temperature = 5.f, k1.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(z.data(), 4, k1, r), 1);
  SamplingParams p;
  p.temperature = 1.f, p.top_p = 0.9f;  // tokens 1 and 3 hold ~0.9 of the mass
  int counts[4] = {};
  for (int i = 0; i < 2000; ++i) counts[sample_token(z.data(), 4, p, r)]++;
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_GT(counts[3], 600);
}
