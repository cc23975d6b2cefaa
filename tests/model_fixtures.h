// Tiny in-process model configs for the model-level tests (no files, no downloads).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "models/config.h"
#include "models/language_model.h"

namespace sr::test {

// layers: string of 'f' (full) / 's' (sliding) / 'l' (linear_attention = Gated DeltaNet) per layer.
inline ModelConfig tiny_config(const std::string& layers = "fs", int window = 5, int Hq = 4, int Hkv = 2) {
  ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 23;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = int(layers.size());
  c.num_heads = Hq;
  c.num_kv_heads = Hkv;
  c.head_dim = 4;
  c.rope_theta = 10000.f;
  c.sliding_window = window;
  for (char ch : layers) c.layer_sliding.push_back(ch == 's'), c.layer_linear.push_back(ch == 'l');
  if (!c.any_sliding()) c.sliding_window = 0;
  if (c.any_linear()) {
    c.linear_num_key_heads = 1, c.linear_num_value_heads = 2, c.linear_key_head_dim = 4, c.linear_value_head_dim = 3;
    c.linear_conv_kernel_dim = 4;
  } else {
    c.layer_linear.clear();
  }
  c.eos_token_id = 0;
  return c;
}

// A tiny RWKV-7 (fla-hub layout): 2 heads of 4, odd LoRA ranks, `layers` blocks.
inline ModelConfig tiny_rwkv7_config(int layers = 3) {
  ModelConfig c;
  c.model_type = "rwkv7";
  c.vocab_size = 23, c.hidden_size = 8, c.intermediate_size = 12, c.num_layers = layers;
  c.head_dim = 4, c.num_heads = 2, c.num_kv_heads = 2;
  c.rwkv_decay_rank = 3, c.rwkv_a_rank = 2, c.rwkv_v_rank = 2, c.rwkv_gate_rank = 3;
  c.layer_sliding.assign(layers, false);
  c.eos_token_id = 0;
  return c;
}

// Central differences (Richardson-extrapolated from eps and eps/2) in fp32 of m.forward()'s loss
// on about `per_tensor` entries of every tensor, against `analytic` (d loss / d params); returns
// how many entries were checked.
inline int expect_grads_match_fd(LanguageModel& m, const std::vector<int32_t>& ids, const std::vector<int32_t>& tg,
                                 const std::vector<float>& w, int B, int T, const std::vector<float>& analytic,
                                 float eps, size_t per_tensor) {
  int checked = 0;
  for (const ParamSpec& s : m.param_specs()) {
    const size_t n = size_t(shape_numel(s.shape));
    for (size_t k = 0; k < n; k += std::max<size_t>(1, n / per_tensor)) {
      float* p = m.params() + s.offset + k;
      const float x0 = *p;
      auto central = [&](float h) {
        *p = x0 + h;
        const double fp = m.forward(ids.data(), tg.data(), w.data(), B, T);
        *p = x0 - h;
        const double fm = m.forward(ids.data(), tg.data(), w.data(), B, T);
        *p = x0;
        return (fp - fm) / (2.0 * double(h));
      };
      // Richardson extrapolation cancels the O(eps^2) error of the central difference: near a
      // small key that an L2 norm divides by, the loss curves so hard that a plain difference at
      // eps = 1e-2 is 35% off the exact gradient (a Gated DeltaNet conv weight at its init).
      const double num = (4.0 * central(eps / 2) - central(eps)) / 3.0, an = analytic[s.offset + k];
      EXPECT_NEAR(an, num, 2e-3 + 2e-2 * std::fabs(num)) << s.name << "[" << k << "]";
      ++checked;
    }
  }
  return checked;
}

// Cached inference on ids: the first `prefill` tokens in one call (all their logits), then one
// decode step per remaining token (its logits); everything concatenated.
inline std::vector<float> prefill_then_decode_logits(const LanguageModel& m, const std::vector<int32_t>& ids,
                                                     int prefill) {
  const int V = m.config().vocab_size;
  std::vector<LayerKVCache> caches = m.empty_caches();
  std::vector<float> all(size_t(prefill) * V), lg(V);
  m.forward_cached(ids.data(), prefill, caches, all.data(), true);
  for (size_t t = size_t(prefill); t < ids.size(); ++t) {
    m.forward_cached(ids.data() + t, 1, caches, lg.data(), false);
    all.insert(all.end(), lg.begin(), lg.end());
  }
  return all;
}

// One training forward + backward on ids as a single sequence (next-token targets, the last 0).
inline void train_step_on(LanguageModel& m, const std::vector<int32_t>& ids) {
  std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(0);
  std::vector<float> weights(ids.size(), 1.0f);
  m.forward(ids.data(), targets.data(), weights.data(), 1, int(ids.size()));
  m.backward();
}

inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("smoothread_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace sr::test
