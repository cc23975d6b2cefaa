// RWKV-7 stability over a long read (ctest label `slow`): a randomly initialized model reads
// 1M tokens through a streaming session without NaN/Inf, and the wkv state norm stays bounded
// (no growth from the first half of the read to the second).
#include <gtest/gtest.h>

#include <cmath>

#include "infer/session.h"
#include "models/rwkv7.h"
#include "test_util.h"

using namespace sr;

TEST(Rwkv7Long, MillionTokenReadStaysFiniteAndBounded) {
  ModelConfig c;
  c.model_type = "rwkv7";
  c.vocab_size = 256, c.hidden_size = 64, c.intermediate_size = 256, c.num_layers = 2;
  c.head_dim = 32, c.num_heads = 2, c.num_kv_heads = 2;
  c.rwkv_decay_rank = 16, c.rwkv_a_rank = 16, c.rwkv_v_rank = 16, c.rwkv_gate_rank = 16;
  c.layer_sliding.assign(2, false);
  for (float noise : {0.0f, 0.5f}) {  // the released init, and a rougher random model
    SCOPED_TRACE("noise " + std::to_string(noise));
    Rwkv7 m(c);
    m.init_random(1);
    Rng r(2);
    for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] += float(r.normal()) * noise;
    Session s(m);
    const int64_t total = 1 << 20, piece = 8192;
    std::vector<double> norms;  // max over layers of the wkv state's Frobenius norm, per piece
    for (int64_t done = 0; done < total; done += piece) {
      std::vector<int32_t> ids(piece);
      for (auto& x : ids) x = int32_t(r.below(256));
      const std::vector<float>& logits = s.prefill(ids);
      for (float v : logits) ASSERT_TRUE(std::isfinite(v)) << "at token " << done + piece;
      double worst = 0;
      for (const LayerKVCache& lc : s.snapshot().caches) {
        std::vector<float> st = lc.rec_state.to_vector();
        double ss = 0;
        for (float v : st) {
          ASSERT_TRUE(std::isfinite(v));
          ss += double(v) * v;
        }
        worst = std::max(worst, std::sqrt(ss));
      }
      norms.push_back(worst);
    }
    EXPECT_EQ(s.position(), total);
    const size_t h = norms.size() / 2;
    const double first = *std::max_element(norms.begin(), norms.begin() + h);
    const double second = *std::max_element(norms.begin() + h, norms.end());
    std::cerr << "wkv state norm: max " << first << " over the first half, " << second << " over the second\n";
    EXPECT_LE(second, 1.5 * first + 1e-6);
  }
}
