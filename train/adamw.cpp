#include "train/adamw.h"

#include <cmath>

namespace sr {

void AdamW::step(float* params, const float* grads, float lr, const std::vector<uint8_t>& decay_mask) {
  ++t_;
  const float b1 = cfg_.beta1, b2 = cfg_.beta2;
  const float bc1 = 1.0f - std::pow(b1, float(t_)), bc2 = 1.0f - std::pow(b2, float(t_));
  const long n = long(m_.size());
  const bool all = decay_mask.empty();
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) {
    float g = grads[i];
    m_[i] = b1 * m_[i] + (1.0f - b1) * g;
    v_[i] = b2 * v_[i] + (1.0f - b2) * g * g;
    float mhat = m_[i] / bc1, vhat = v_[i] / bc2;
    float wd = (all || decay_mask[i]) ? cfg_.weight_decay : 0.0f;
    params[i] -= lr * (mhat / (std::sqrt(vhat) + cfg_.eps) + wd * params[i]);
  }
}

float lr_at(int64_t step, int64_t warmup, int64_t total, float lr, float min_lr) {
  if (warmup > 0 && step < warmup) return lr * float(step + 1) / float(warmup);
  if (total <= warmup) return lr;
  double progress = std::min(1.0, double(step - warmup) / double(total - warmup));
  return float(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

double clip_grad_norm(float* grads, size_t n, double max_norm) {
  // Fixed-size blocks summed in order: deterministic whatever the thread count.
  const size_t BS = 1 << 14;
  const long nb = long((n + BS - 1) / BS);
  std::vector<double> part(nb, 0.0);
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; ++b) {
    double s = 0;
    for (size_t i = size_t(b) * BS, e = std::min(n, size_t(b + 1) * BS); i < e; ++i) s += double(grads[i]) * grads[i];
    part[b] = s;
  }
  double total = 0;
  for (double p : part) total += p;
  double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) {
    float scale = float(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < long(n); ++i) grads[i] *= scale;
  }
  return norm;
}

}  // namespace sr
