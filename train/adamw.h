// AdamW (decoupled weight decay, Loshchilov & Hutter), warmup + cosine schedule, global-norm
// gradient clipping. All state is fp32 in flat arrays parallel to the parameter buffer, held in
// the backend's memory; the update itself is the backend's fused `adamw` op.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/ops.h"

namespace sr {

struct AdamWConfig {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(size_t n, AdamWConfig cfg, const OpsTable& ops = ops_cpu());
  // decay_mask[i] = 1 where weight decay applies (empty = everywhere).
  void set_decay_mask(const std::vector<uint8_t>& mask);
  // One update at learning rate `lr` with the gradient grads * grad_scale (grad_norm()'s clipping
  // factor: the same update as clip_grad_norm() then step(), without a pass over the gradients);
  // params and grads in the backend's memory.
  void step(float* params, const float* grads, float lr, float grad_scale = 1.0f);
  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  // Moments as host copies (checkpoints) and back.
  std::vector<float> m_host() const { return m_.to_vector(); }
  std::vector<float> v_host() const { return v_.to_vector(); }
  void set_moments(const std::vector<float>& m, const std::vector<float>& v);
  const AdamWConfig& config() const { return cfg_; }

 private:
  AdamWConfig cfg_;
  const OpsTable* ops_;
  Buffer<float> m_, v_;
  Buffer<uint8_t> decay_;
  int64_t t_ = 0;
};

// Linear warmup over `warmup` steps to `lr`, then cosine decay to `min_lr` at `total` steps.
float lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr);

// Global L2 norm of grads[0..n) (fp64 accumulation in a fixed order) and the factor that scales
// it to at most max_norm (1 when max_norm <= 0 or the norm is within it).
struct GradNorm {
  double norm;
  float clip_scale;
};
GradNorm grad_norm(const float* grads, size_t n, double max_norm, const OpsTable& ops = ops_cpu());
// The same, applied: scales grads in place. Returns the norm before clipping.
double clip_grad_norm(float* grads, size_t n, double max_norm, const OpsTable& ops = ops_cpu());

}  // namespace sr
