#include "train/adamw.h"

#include <cmath>

#include "core/error.h"

namespace sr {

AdamW::AdamW(size_t n, AdamWConfig cfg, const OpsTable& ops)
    : cfg_(cfg), ops_(&ops), m_(ops.mem, n), v_(ops.mem, n), decay_(ops.mem, 0) {
  m_.zero(), v_.zero();
}

void AdamW::set_decay_mask(const std::vector<uint8_t>& mask) {
  SR_ASSERT(mask.empty() || mask.size() == m_.size(), "AdamW: decay mask size differs from the parameter count");
  decay_.assign(mask.data(), mask.size());
}

void AdamW::set_moments(const std::vector<float>& m, const std::vector<float>& v) {
  SR_ASSERT(m.size() == m_.size() && v.size() == v_.size(), "AdamW: moment sizes differ from the parameter count");
  m_.upload(m.data(), m.size()), v_.upload(v.data(), v.size());
}

void AdamW::step(float* params, const float* grads, float lr, float grad_scale) {
  ++t_;
  AdamWStep a{lr,
              cfg_.beta1,
              cfg_.beta2,
              cfg_.eps,
              cfg_.weight_decay,
              1.0f - std::pow(cfg_.beta1, float(t_)),
              1.0f - std::pow(cfg_.beta2, float(t_)),
              grad_scale};
  ops_->adamw(params, grads, m_.data(), v_.data(), decay_.empty() ? nullptr : decay_.data(), m_.size(), a);
}

float lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr) {
  if (warmup > 0 && step < warmup) return lr * float(step + 1) / float(warmup);
  if (total <= warmup) return lr;
  double progress = std::min(1.0, double(step - warmup) / double(total - warmup));
  return float(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

GradNorm grad_norm(const float* grads, size_t n, double max_norm, const OpsTable& ops) {
  const double norm = std::sqrt(ops.sum_squares(grads, n));
  return {norm, max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f};
}

double clip_grad_norm(float* grads, size_t n, double max_norm, const OpsTable& ops) {
  const GradNorm g = grad_norm(grads, n, max_norm, ops);
  if (g.clip_scale != 1.0f) ops.scale(grads, n, g.clip_scale);
  return g.norm;
}

}  // namespace sr
