// Deferred gradient zeroing for a model's backward (no memset of every gradient each step).
//
// After zero_grad() the model's first backward writes each linear weight's gradient with its
// first product (OpsTable::linear_bwd with kSetDW: dW = dout^T x, a GEMM with beta 0) instead of
// adding it onto zeros: the memset of those gradients (11 GB a step for a 3B model) and the
// GEMMs' reads of the zeros go away. Which gradients are written that way is learned from the
// previous such backward (the same model makes the same calls): begin() zeroes every gradient
// except those "expected" regions; a linear_bwd whose dW is exactly an expected region sets it;
// any other contribution that overlaps an expected region not yet set zeroes that region first,
// and end() zeroes every expected region that no call set. So every gradient element is either
// zeroed or set before anything adds to it, provided that an op other than linear_bwd which adds
// into a linear weight's gradient (a tied embedding's embedding_bwd) announces it with adding().
#pragma once
#include <cstddef>
#include <vector>

#include "core/buffer.h"

namespace sr {

class GradFirstWrite {
 public:
  // Start of a backward over the gradients G[n] (memory of `mem`). fresh: zero_grad() deferred
  // the zeroing to this backward (otherwise every call adds, as without deferral).
  void begin(float* G, size_t n, const MemOps* mem, bool fresh);
  // The linear_bwd flags (0 or kSetDW) for a product into dW[len] (within G), and its bookkeeping.
  int dw_flags(const float* dW, size_t len);
  // Before an op other than linear_bwd adds into p[len] (within G): zeroes the expected regions it
  // overlaps that are not set yet (a no-op outside a fresh backward).
  void adding(const float* p, size_t len);
  // End of the backward: zeroes the expected regions no call set; the regions this backward set
  // first become the next fresh backward's expected ones.
  void end();
  size_t expected_regions() const { return expected_.size(); }
  size_t bytes_zeroed() const { return zeroed_; }  // by the last fresh backward

 private:
  struct Region {
    size_t off, len;
    bool done = false;  // set or zeroed in this backward
  };
  static bool overlaps(const Region& r, size_t off, size_t len) { return r.off < off + len && off < r.off + r.len; }
  void zero(size_t off, size_t len);
  float* G_ = nullptr;
  size_t n_ = 0, zeroed_ = 0;
  const MemOps* mem_ = nullptr;
  bool fresh_ = false;
  std::vector<Region> expected_, touched_, next_;
};

}  // namespace sr
