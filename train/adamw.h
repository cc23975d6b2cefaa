// AdamW (decoupled weight decay, Loshchilov & Hutter), warmup + cosine schedule, global-norm
// gradient clipping. All state is fp32 in flat arrays parallel to the parameter buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sr {

struct AdamWConfig {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(size_t n, AdamWConfig cfg) : cfg_(cfg), m_(n, 0.0f), v_(n, 0.0f) {}
  // One update at learning rate `lr`; decay_mask[i] = 1 where weight decay applies (may be empty = all).
  void step(float* params, const float* grads, float lr, const std::vector<uint8_t>& decay_mask);
  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  AdamWConfig cfg_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

// Linear warmup over `warmup` steps to `lr`, then cosine decay to `min_lr` at `total` steps.
float lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr);

// Global L2 norm of grads[0..n) (fp64 accumulation in a fixed order); scales grads so the norm is
// at most max_norm when max_norm > 0. Returns the norm before clipping.
double clip_grad_norm(float* grads, size_t n, double max_norm);

}  // namespace sr
