// Whole-model invariants: gradient check, one-shot == chunked prefill == decode, sliding-window
// receptive field, snapshot/restore and save/load bitwise, constant SWA state size.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>

#include "core/error.h"

#include "infer/session.h"
#include "model_fixtures.h"
#include "models/grad_first_write.h"
#include "models/model_dir.h"
#include "models/transformer.h"
#include "test_util.h"

using namespace sr;
using namespace sr::test;

namespace {
std::vector<int32_t> random_ids(int n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = int32_t(r.below(uint64_t(V)));
  return v;
}

std::vector<float> prefill_in_pieces(const LanguageModel& m, const std::vector<int32_t>& ids, int piece) {
  Session s(m);
  std::vector<float> all, part;
  for (size_t i = 0; i < ids.size(); i += size_t(piece)) {
    std::vector<int32_t> p(ids.begin() + i, ids.begin() + std::min(ids.size(), i + size_t(piece)));
    s.prefill(p, &part);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}
}  // namespace

namespace {
// Reference-backend gradients vs central differences on every tensor; the CPU backend and
// activation recomputation against them.
// perturb: move every parameter off its init (zero-centred norms start at 0).
void check_model_gradients(const ModelConfig& c, bool perturb = false) {
  Transformer m(c, &ops_ref());
  m.init_random(1, 0.3f);
  if (perturb)
    for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] += 0.05f * float(int((i * 7919) % 13) - 6) / 6.0f;
  const int B = 2, T = 6;
  auto ids = random_ids(B * T, c.vocab_size, 2), tg = random_ids(B * T, c.vocab_size, 3);
  tg[4] = -1;
  std::vector<float> w(B * T);
  for (int i = 0; i < B * T; ++i) w[i] = 0.5f + 0.25f * (i % 3);
  m.zero_grad();
  m.forward(ids.data(), tg.data(), w.data(), B, T);
  m.backward();
  std::vector<float> analytic(m.grads(), m.grads() + m.num_params());
  // Same gradients from the optimized backend.
  Transformer mc(c, &ops_cpu());
  std::memcpy(mc.params(), m.params(), m.num_params() * sizeof(float));
  mc.zero_grad();
  mc.forward(ids.data(), tg.data(), w.data(), B, T);
  mc.backward();
  std::vector<float> gcpu(mc.grads(), mc.grads() + mc.num_params());
  EXPECT_CLOSE(gcpu, analytic, 1e-5, 1e-3);
  // Activation recomputation changes memory, not results: bitwise-equal loss and gradients.
  Transformer mr(c, &ops_cpu());
  std::memcpy(mr.params(), m.params(), m.num_params() * sizeof(float));
  mr.set_recompute(true);
  mr.zero_grad();
  EXPECT_EQ(mr.forward(ids.data(), tg.data(), w.data(), B, T), mc.forward(ids.data(), tg.data(), w.data(), B, T));
  mr.backward();
  EXPECT_EQ(0, std::memcmp(mr.grads(), gcpu.data(), gcpu.size() * sizeof(float)));
  // Central differences in fp32 on a spread of parameters (every tensor visited).
  const int checked = expect_grads_match_fd(m, ids, tg, w, B, T, analytic, 2e-3f, 6);
  EXPECT_GT(checked, 50);
}
}  // namespace

TEST(Model, GradientMatchesFiniteDifferences) {
  for (std::string layers : {"fs", "lf"}) {
    SCOPED_TRACE("layers=" + layers);
    ModelConfig c = tiny_config(layers, 3, 2, 1);
    c.vocab_size = 11, c.hidden_size = 8, c.intermediate_size = 12;
    check_model_gradients(c);
  }
}

// Qwen3.5's attention (q/gate split, sigmoid output gate, q/k norms, partial rotary, zero-centred
// norms) next to a GDN layer, and Qwen3's (q/k norms only), train with exact gradients.
TEST(Model, Qwen3AttentionGradientsMatchFiniteDifferences) {
  for (std::string type : {"qwen3_5_text", "qwen3"}) {
    SCOPED_TRACE(type);
    json j = {{"model_type", type}, {"vocab_size", 11}, {"hidden_size", 8}, {"intermediate_size", 12},
              {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 8},
              {"rope_theta", 10000.0}};
    if (type == "qwen3_5_text")
      j.update({{"layer_types", {"linear_attention", "full_attention"}}, {"linear_num_key_heads", 1},
                {"linear_num_value_heads", 2}, {"linear_key_head_dim", 4}, {"linear_value_head_dim", 3},
                {"partial_rotary_factor", 0.5}});
    check_model_gradients(ModelConfig::from_json(j, "cfg"), true);
  }
}

TEST(Model, PrefillChunkedEqualsOneShotEqualsDecode) {
  for (std::string layers : {"ff", "ss", "fs", "ll", "lsf"}) {
    SCOPED_TRACE("layers=" + layers);
    Transformer m(tiny_config(layers, 9));
    m.init_random(4, 0.2f);
    auto ids = random_ids(150, m.config().vocab_size, 5);
    std::vector<float> one = prefill_in_pieces(m, ids, int(ids.size()));
    // Gated DeltaNet layers run their chunked WY form (64-token chunks) on long pieces and the
    // token recurrence on short ones: the same math with another rounding order, which the LM head
    // (std 0.2 weights) turns into absolute logit differences of a few 1e-5.
    const double atol = layers.find('l') != std::string::npos ? 5e-5 : 1e-5;
    for (int piece : {1, 7, 64}) EXPECT_CLOSE(prefill_in_pieces(m, ids, piece), one, atol, 1e-4) << "piece " << piece;
    // The training forward (B=1) gives the same logits.
    std::vector<int32_t> tg(ids.size(), -1);
    std::vector<float> w(ids.size(), 0.f);
    m.forward(ids.data(), tg.data(), w.data(), 1, int(ids.size()));
    std::vector<float> train_logits = m.last_logits();
    EXPECT_CLOSE(train_logits, one, 1e-5, 1e-4);
    // Session's own chunked prefill (pieces of prefill_batch tokens) gives the same logits.
    Session batched(m);
    batched.set_prefill_batch(16);
    std::vector<float> batched_all;
    batched.prefill(ids, &batched_all);
    EXPECT_CLOSE(batched_all, one, atol, 1e-4);
    Session batched_last(m);
    batched_last.set_prefill_batch(33);
    EXPECT_CLOSE(batched_last.prefill(ids), std::vector<float>(one.end() - m.config().vocab_size, one.end()), atol, 1e-4);
    EXPECT_EQ(batched_last.position(), int64_t(ids.size()));
    EXPECT_THROW(batched_last.set_prefill_batch(0), Error);
    // Token-by-token decode: greedy decoding after a prefix follows the one-shot argmax.
    Session s(m);
    s.prefill(std::vector<int32_t>(ids.begin(), ids.begin() + 100));
    const int V = m.config().vocab_size;
    for (int t = 100; t < 150; ++t) {
      std::vector<float> expect(one.begin() + size_t(t - 1) * V, one.begin() + size_t(t) * V);
      EXPECT_CLOSE(s.logits(), expect, 1e-5, 1e-4) << "t=" << t;
      s.prefill({ids[t]});
    }
  }
}

TEST(Model, SlidingWindowReceptiveField) {
  const int W = 4;
  for (std::string layers : {"s", "ss", "sss"}) {
    SCOPED_TRACE("layers=" + layers);
    Transformer m(tiny_config(layers, W));
    m.init_random(6, 0.3f);
    const int L = int(layers.size()), V = m.config().vocab_size, T = 40, t = 35;
    auto ids = random_ids(T, V, 7);
    auto base = prefill_in_pieces(m, ids, T);
    auto at = [&](const std::vector<float>& lg) { return std::vector<float>(lg.begin() + size_t(t) * V, lg.begin() + size_t(t + 1) * V); };
    // Receptive field of position t: t - L*(W-1) .. t. Alter everything before it.
    auto alt = ids;
    int first_seen = t - L * (W - 1);
    for (int i = 0; i < first_seen; ++i) alt[i] = (alt[i] + 1) % V;
    EXPECT_EQ(at(prefill_in_pieces(m, alt, T)), at(base)) << "output depends on tokens outside the window";
    // Altering the oldest token inside the field must change the output (the test can fail).
    auto alt2 = ids;
    alt2[first_seen] = (alt2[first_seen] + 1) % V;
    EXPECT_NE(at(prefill_in_pieces(m, alt2, T)), at(base));
  }
}

TEST(Model, SnapshotRestoreAndStateFileAreBitwise) {
  for (std::string layers : {"fs", "lf"}) {
  SCOPED_TRACE("layers=" + layers);
  Transformer m(tiny_config(layers, 6));
  m.init_random(8, 0.2f);
  SamplingParams sp;
  sp.temperature = 0.9f, sp.top_k = 10, sp.top_p = 0.95f, sp.seed = 42;
  Session s(m, sp);
  s.prefill(random_ids(50, m.config().vocab_size, 9));
  Session::State snap = s.snapshot();
  std::string path = temp_dir("state") + "/s.bin";
  s.save_state(path);
  std::vector<int32_t> a = s.generate(20);
  std::vector<float> la = s.logits();
  s.restore(snap);
  EXPECT_TRUE(s.snapshot() == snap);
  std::vector<int32_t> b = s.generate(20);
  EXPECT_EQ(a, b);
  EXPECT_EQ(la, s.logits());
  Session s2(m, sp);
  s2.load_state(path);
  EXPECT_TRUE(s2.snapshot() == snap);
  EXPECT_EQ(s2.generate(20), a);
  }
}

TEST(Model, SlidingWindowStateDoesNotGrow) {
  Transformer ms(tiny_config("ss", 8)), mf(tiny_config("ff", 8)), ml(tiny_config("ls", 8));
  ms.init_random(1), mf.init_random(1), ml.init_random(1);
  Session s(ms), f(mf), l(ml);
  auto ids = random_ids(64, 23, 2);
  s.prefill(ids), f.prefill(ids), l.prefill(ids);
  size_t s64 = s.state_bytes(), f64 = f.state_bytes(), l64 = l.state_bytes();
  for (int i = 0; i < 4; ++i) s.prefill(ids), f.prefill(ids), l.prefill(ids);
  EXPECT_EQ(s.state_bytes(), s64);
  EXPECT_EQ(l.state_bytes(), l64);  // Gated DeltaNet + SWA: constant memory too
  EXPECT_GT(f.state_bytes(), 4 * f64);
}

TEST(Model, SaveLoadIsBitwise) {
  ModelConfig c = tiny_config("sf", 7);
  c.tie_word_embeddings = false;
  c.vocab_size = 266;  // the byte tokenizer's size
  Transformer m(c);
  m.init_random(10);
  std::string dir = temp_dir("saveload");
  ByteTokenizer tok(ByteTokenizer::default_specials());
  save_model_dir(m, &tok, dir);
  LoadedModel l = load_model_dir(dir, true);
  ASSERT_EQ(l.model->num_params(), m.num_params());
  EXPECT_EQ(0, std::memcmp(l.model->params(), m.params(), m.num_params() * sizeof(float)));
  EXPECT_EQ(l.model->config().to_json(), c.to_json());
  auto ids = random_ids(30, c.vocab_size, 11);
  EXPECT_EQ(prefill_in_pieces(*l.model, ids, 30), prefill_in_pieces(m, ids, 30));
  EXPECT_EQ(l.tokenizer->to_json(), tok.to_json());
}

// Qwen3.5-style layers (GDN + gated attention with q/k norms, partial rotary, zero-centred norms):
// the config parses from transformers' form and round-trips, the parameter layout is Qwen3.5's,
// streaming in pieces equals one shot and the training forward. Logit parity with transformers:
// tests/parity/hf_logits.py; gradients: Qwen3AttentionGradientsMatchFiniteDifferences.
TEST(Model, Qwen35HybridStreamsLikeTheTrainingForward) {
  json j = {{"model_type", "qwen3_5_text"}, {"vocab_size", 31}, {"hidden_size", 32}, {"intermediate_size", 48},
            {"num_hidden_layers", 4}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 16},
            {"layer_types", {"linear_attention", "full_attention", "linear_attention", "full_attention"}},
            {"linear_num_key_heads", 1}, {"linear_num_value_heads", 2}, {"linear_key_head_dim", 8},
            {"linear_value_head_dim", 8}, {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0},
                                                               {"partial_rotary_factor", 0.25}, {"mrope_section", {1, 1, 0}}}},
            {"tie_word_embeddings", true}};
  ModelConfig c = ModelConfig::from_json(j, "cfg");
  EXPECT_TRUE(c.qk_norm && c.attn_output_gate && c.zero_centered_norm);
  EXPECT_EQ(c.rotary(), 4);
  EXPECT_EQ(ModelConfig::from_json(c.to_json(), "round trip").to_json(), c.to_json());
  Transformer m(c);
  m.init_random(5, 0.2f);
  ASSERT_NE(m.find_param("model.layers.1.self_attn.q_norm.weight"), nullptr);
  EXPECT_EQ(m.find_param("model.layers.1.self_attn.q_proj.weight")->shape, (Shape{2 * 2 * 16, 32}));
  EXPECT_EQ(m.params()[m.find_param("model.norm.weight")->offset], 0.0f);  // zero-centred: 1 + 0
  for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] += 0.05f * float((i * 7919) % 13) / 13.0f;
  auto ids = random_ids(50, c.vocab_size, 3);
  std::vector<float> one = prefill_in_pieces(m, ids, 50);
  for (float v : one) ASSERT_TRUE(std::isfinite(v));
  for (int piece : {1, 7}) EXPECT_CLOSE(prefill_in_pieces(m, ids, piece), one, 1e-5, 1e-4) << "piece " << piece;
  // the training forward computes the same logits as streaming
  std::vector<int32_t> tg(ids.size(), 1);
  std::vector<float> w(ids.size(), 1.0f);
  m.forward(ids.data(), tg.data(), w.data(), 1, int(ids.size()));
  EXPECT_CLOSE(m.last_logits(), one, 1e-5, 1e-4);
  json moe = j;
  moe["model_type"] = "qwen3_next", moe["num_experts"] = 8;
  EXPECT_THROW(ModelConfig::from_json(moe, "cfg"), Error);
}

// --decode-weights bf16: decode-size calls of forward_cached read a bf16 copy of the weights, for
// attention (full, sliding), Gated DeltaNet and RWKV-7 layers. Logits stay within bf16 rounding
// of fp32 (and differ, so the copy is used); prefill pieces (more than 4 tokens) stay fp32;
// switching back, or a training step, restores fp32 bitwise; unknown dtypes fail clearly.
TEST(Model, Bf16DecodeWeightsStayCloseToFp32) {
  for (const ModelConfig& cfg : {tiny_config("fs", 5), tiny_config("ls", 5), tiny_rwkv7_config(2)}) {
    SCOPED_TRACE(cfg.model_type + " " + std::to_string(cfg.num_layers));
    auto m = make_model(cfg);
    m->init_random(3);
    const int V = m->config().vocab_size;
    std::vector<int32_t> ids(12);
    for (int i = 0; i < 12; ++i) ids[i] = (i * 5 + 1) % V;
    auto run = [&] { return prefill_then_decode_logits(*m, ids, 8); };  // 8 prefilled, then 4 decode steps
    const auto f = run();
    m->set_decode_weights("bf16");
    const auto b = run();
    float scale = 0, diff = 0, prefill_diff = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      scale = std::max(scale, std::fabs(f[i]));
      float& d = i < size_t(8) * V ? prefill_diff : diff;
      d = std::max(d, std::fabs(f[i] - b[i]));
    }
    EXPECT_EQ(prefill_diff, 0.0f);
    EXPECT_GT(diff, 0.0f);
    EXPECT_LT(diff, 0.02f * (1 + scale));
    m->set_decode_weights("fp32");
    EXPECT_EQ(run(), f);
    m->set_decode_weights("bf16");
    train_step_on(*m, ids);  // training drops the copy (the weights would change)
    EXPECT_EQ(run(), f);
    EXPECT_THROW(m->set_decode_weights("fp16"), Error);
  }
}

// The models the gradient-path tests run: untied and tied LM heads, the Gated DeltaNet hybrid, RWKV-7.
static std::vector<std::pair<std::string, ModelConfig>> gradient_test_configs() {
  auto tied = tiny_config("fs");
  tied.tie_word_embeddings = true;
  return {{"fs", tiny_config("fs")}, {"fs tied", tied}, {"lf", tiny_config("lf")}, {"rwkv7", tiny_rwkv7_config()}};
}

// First-write gradients (models/grad_first_write.h): after zero_grad() a backward sets each linear
// weight's gradient with its first product instead of adding onto a memset. The gradients must be
// bitwise those of a zeroed backward whatever the buffer held before (NaN here): on the first step
// (nothing learned yet: everything zeroed), later steps (the learned regions set), a second
// backward of the same step (adds), and grads() asked for between zero_grad() and backward()
// (zeroes at once). Tied and untied LM heads, the Gated DeltaNet hybrid and RWKV-7.
TEST(Model, FirstWriteGradientsMatchZeroedOnes) {
  const auto configs = gradient_test_configs();
  for (const auto& [name, c] : configs)
    for (const OpsTable* ops : {&ops_ref(), &ops_cpu()}) {
      SCOPED_TRACE(name + " on " + ops->name);
      auto lazy = make_model(c, ops), eager = make_model(c, ops);
      lazy->init_random(5, 0.3f);
      std::memcpy(eager->params(), lazy->params(), lazy->num_params() * sizeof(float));
      eager->set_first_write_grads(false);
      const int B = 2, T = 5;
      const size_t bytes = lazy->num_params() * sizeof(float);
      for (int step = 0; step < 4; ++step) {
        SCOPED_TRACE("step " + std::to_string(step));
        auto ids = random_ids(B * T, c.vocab_size, 10 + step), tg = random_ids(B * T, c.vocab_size, 20 + step);
        std::vector<float> w(B * T, 1.0f);
        std::fill(lazy->grads(), lazy->grads() + lazy->num_params(), NAN);  // stale gradients
        lazy->zero_grad(), eager->zero_grad();
        if (step == 2) {  // grads() before backward: zeroed at once, then every product adds
          EXPECT_EQ(lazy->grads()[0], 0.0f);
        }
        const int passes = step == 3 ? 2 : 1;  // step 3: gradient accumulation
        for (int pass = 0; pass < passes; ++pass) {
          for (LanguageModel* m : {lazy.get(), eager.get()}) {
            m->forward(ids.data(), tg.data(), w.data(), B, T);
            m->backward(0.5f);
          }
        }
        ASSERT_EQ(0, std::memcmp(lazy->grads(), eager->grads(), bytes));
        if (step == 0) EXPECT_EQ(lazy->grad_bytes_zeroed(), bytes);  // nothing known yet
        if (step == 1 || step == 3) EXPECT_LT(lazy->grad_bytes_zeroed(), bytes / 2);  // the weights were set
      }
    }
}

// GradFirstWrite's corner cases on host memory: a product into part of an expected region, an op
// adding into an expected region before its product, and an expected region nobody writes: each
// is zeroed first, so nothing adds onto stale values.
TEST(Model, GradFirstWriteZeroesWhatItDoesNotSet) {
  std::vector<float> G(40);
  GradFirstWrite g;
  auto run = [&](const std::function<void()>& calls) {
    std::fill(G.begin(), G.end(), NAN);
    g.begin(G.data(), G.size(), &host_mem(), true);
    calls();
    g.end();
  };
  // learn: [0, 10) and [20, 30) set by products, [10, 20) added by another op, [30, 40) untouched
  run([&] {
    EXPECT_EQ(g.dw_flags(G.data(), 10), 0);  // nothing expected yet: zeroed by begin()
    g.adding(G.data() + 10, 10);
    EXPECT_EQ(g.dw_flags(G.data() + 20, 10), 0);
    EXPECT_EQ(g.dw_flags(G.data(), 10), 0);  // a second product into [0, 10): adds
  });
  EXPECT_EQ(g.expected_regions(), 2u);
  for (float x : G) EXPECT_EQ(x, 0.0f);  // nothing was written in this simulation: all zero
  run([&] {
    for (int i = 10; i < 20; ++i) EXPECT_EQ(G[i], 0.0f);       // not expected: zeroed by begin()
    for (int i = 30; i < 40; ++i) EXPECT_EQ(G[i], 0.0f);
    EXPECT_TRUE(std::isnan(G[0]) && std::isnan(G[20]));        // expected: left for their products
    EXPECT_EQ(g.dw_flags(G.data() + 20, 5), 0);                 // part of [20, 30): the region is zeroed
    for (int i = 20; i < 30; ++i) EXPECT_EQ(G[i], 0.0f);
    g.adding(G.data() + 5, 1);                                  // an add into [0, 10) first: zeroed
    for (int i = 0; i < 10; ++i) EXPECT_EQ(G[i], 0.0f);
    EXPECT_EQ(g.dw_flags(G.data(), 10), 0);                     // then its product adds
  });
  EXPECT_EQ(g.expected_regions(), 1u);  // [20, 25) was the first touch of its region this time
  run([&] {
    EXPECT_TRUE(std::isnan(G[20]));
    EXPECT_EQ(g.dw_flags(G.data() + 20, 5), kSetDW);  // the one expected region: set
    // nothing else is called: end() zeroes no expected region left, begin() zeroed the rest
  });
  for (int i = 0; i < 40; ++i)
    if (i < 20 || i >= 25) EXPECT_EQ(G[i], 0.0f) << i;
  run([&] {});  // an expected region nobody writes: end() zeroes it
  for (float x : G) EXPECT_EQ(x, 0.0f);
  // not fresh (no deferred zeroing): every call adds, nothing is zeroed
  std::fill(G.begin(), G.end(), 1.0f);
  g.begin(G.data(), G.size(), &host_mem(), false);
  EXPECT_EQ(g.dw_flags(G.data() + 20, 5), 0);
  g.end();
  for (float x : G) EXPECT_EQ(x, 1.0f);
}

// The LM head in chunks of rows (what a large vocabulary takes): the same loss and gradients as
// one chunk, with the forward's last chunk (chunk 0) reused by the backward instead of recomputed,
// also for a second backward() of the same forward and under gradient accumulation.
TEST(Model, ChunkedLmHeadMatchesOneChunk) {
  for (const ModelConfig& c : {tiny_config("fs"), tiny_rwkv7_config()})
    for (int rows : {1, 3, 4}) {
      SCOPED_TRACE(c.model_type + ", " + std::to_string(rows) + " rows a chunk");
      auto one = make_model(c, &ops_cpu()), chunked = make_model(c, &ops_cpu());
      one->init_random(7, 0.3f);
      std::memcpy(chunked->params(), one->params(), one->num_params() * sizeof(float));
      chunked->set_logits_chunk_floats(size_t(rows) * c.vocab_size);
      const int B = 2, T = 5;
      auto ids = random_ids(B * T, c.vocab_size, 1), tg = random_ids(B * T, c.vocab_size, 2);
      tg[3] = -1;
      std::vector<float> w(B * T);
      for (int i = 0; i < B * T; ++i) w[i] = 0.5f + 0.25f * (i % 3);
      one->zero_grad(), chunked->zero_grad();
      EXPECT_EQ(chunked->forward(ids.data(), tg.data(), w.data(), B, T), one->forward(ids.data(), tg.data(), w.data(), B, T));
      one->backward(), chunked->backward();
      one->backward(0.5f), chunked->backward(0.5f);  // again, from the chunk the first backward left
      std::vector<float> g1(one->grads(), one->grads() + one->num_params());
      std::vector<float> g2(chunked->grads(), chunked->grads() + chunked->num_params());
      double scale = 0;  // rounding in the summation order of the chunks, relative to the largest gradient
      for (float x : g1) scale = std::max(scale, double(std::fabs(x)));
      EXPECT_CLOSE(g2, g1, 1e-6 * scale, 1e-5);
    }
}

// forward_backward() = forward() then backward(), bit for bit (the Transformer runs its LM head's
// backward inside the forward, chunk by chunk): the losses and the gradients of two accumulated
// calls (loss scale 0.5) and of a third call after a plain forward and backward, with the logits
// in chunks of 1 and 3 rows (a short last chunk) and in one, tied and untied heads, the Gated
// DeltaNet hybrid, activation recomputation, the ref and CPU backends, and RWKV-7 (the default).
TEST(Model, ForwardBackwardMatchesForwardThenBackward) {
  const auto configs = gradient_test_configs();
  for (const auto& [name, c] : configs)
    for (const OpsTable* ops : {&ops_ref(), &ops_cpu()})
      for (int rows : {1, 3, 0})
        for (bool recompute : {false, true}) {
          SCOPED_TRACE(name + (ops == &ops_ref() ? " ref" : " cpu") + ", " + std::to_string(rows) + " rows a chunk" +
                       (recompute ? ", recompute" : ""));
          auto a = make_model(c, ops), b = make_model(c, ops);
          a->init_random(7, 0.3f);
          std::memcpy(b->params(), a->params(), a->num_params() * sizeof(float));
          for (auto* m : {a.get(), b.get()}) {
            if (rows) m->set_logits_chunk_floats(size_t(rows) * c.vocab_size);
            m->set_recompute(recompute);
            m->zero_grad();
          }
          const int B = 2, T = 5;
          std::vector<float> w(B * T);
          for (int i = 0; i < B * T; ++i) w[i] = 0.5f + 0.25f * (i % 3);
          for (int call = 0; call < 3; ++call) {
            auto ids = random_ids(B * T, c.vocab_size, 1 + call), tg = random_ids(B * T, c.vocab_size, 11 + call);
            tg[3 + call] = -1;
            const float scale = call < 2 ? 0.5f : 1.0f;
            const float la = a->forward(ids.data(), tg.data(), w.data(), B, T);
            a->backward(scale);
            float lb;
            if (call < 2) {
              lb = b->forward_backward(ids.data(), tg.data(), w.data(), B, T, scale);
            } else {  // a plain forward and backward on the same model after the fused calls
              lb = b->forward(ids.data(), tg.data(), w.data(), B, T);
              b->backward(scale);
            }
            EXPECT_EQ(la, lb);
          }
          const std::vector<float> ga(a->grads(), a->grads() + a->num_params());
          const std::vector<float> gb(b->grads(), b->grads() + b->num_params());
          EXPECT_TRUE(ga == gb);
        }
}
