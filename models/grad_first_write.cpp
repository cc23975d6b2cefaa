#include "models/grad_first_write.h"

#include <algorithm>

#include "core/error.h"
#include "ops/ops.h"

namespace sr {

void GradFirstWrite::zero(size_t off, size_t len) {
  if (len) mem_->zero(G_ + off, len * sizeof(float)), zeroed_ += len * sizeof(float);
}

void GradFirstWrite::begin(float* G, size_t n, const MemOps* mem, bool fresh) {
  fresh_ = fresh;
  if (!fresh) return;
  if (G != G_ || n != n_) expected_.clear();  // other gradients: nothing is known about them
  G_ = G, n_ = n, mem_ = mem, zeroed_ = 0;
  touched_.clear(), next_.clear();
  size_t at = 0;  // zero the gaps between the expected regions (sorted, disjoint)
  for (Region& e : expected_) {
    e.done = false;
    zero(at, e.off - at);
    at = e.off + e.len;
  }
  zero(at, n - at);
}

int GradFirstWrite::dw_flags(const float* dW, size_t len) {
  if (!fresh_ || len == 0) return 0;
  const size_t off = size_t(dW - G_);
  SR_ASSERT(dW >= G_ && off + len <= n_, "GradFirstWrite: a weight gradient outside the gradients");
  int flags = 0;
  for (Region& e : expected_) {
    if (e.done || !overlaps(e, off, len)) continue;
    e.done = true;
    if (e.off == off && e.len == len) flags = kSetDW;
    else zero(e.off, e.len);
  }
  const bool first = std::none_of(touched_.begin(), touched_.end(), [&](const Region& r) { return overlaps(r, off, len); });
  if (first) next_.push_back({off, len});
  touched_.push_back({off, len});
  return flags;
}

void GradFirstWrite::adding(const float* p, size_t len) {
  if (!fresh_ || len == 0) return;
  const size_t off = size_t(p - G_);
  for (Region& e : expected_)
    if (!e.done && overlaps(e, off, len)) e.done = true, zero(e.off, e.len);
  touched_.push_back({off, len});
}

void GradFirstWrite::end() {
  if (!fresh_) return;
  for (Region& e : expected_)
    if (!e.done) zero(e.off, e.len);
  // the next expected regions: first touched by a linear_bwd (disjoint: each overlapped nothing
  // touched before it)
  std::sort(next_.begin(), next_.end(), [](const Region& a, const Region& b) { return a.off < b.off; });
  expected_.swap(next_);
  fresh_ = false;
}

}  // namespace sr
