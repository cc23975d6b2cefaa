// The chunked generalized delta rule of one head, over chunk-local rows (ops/cpu/generalized_delta_rule.cpp).
// RWKV-7's wkv (cpu::gdr_fwd/bwd) and Gated DeltaNet's gated delta rule (cpu::delta_rule_fwd/bwd)
// are two sources of rows for this one scan: a source fills the inputs of tokens [t0, t0+n) into
// row-major chunk buffers and takes the outputs and gradients back in the same layout.
#pragma once
#include <vector>

namespace sr::cpu {

// The inputs (r, w, a, b, k [n, Dk]; v [n, Dv]) or their gradients of up to C tokens of one head.
// In the gradient rows, w holds d(log w) (= dw * w): the chunked form computes that directly, and a
// caller whose decay is a log (Gated DeltaNet's g) needs nothing else.
struct GdrRows {
  std::vector<float> r, w, a, b, k, v;
  void fit(int C, int Dk, int Dv) {
    for (auto* x : {&r, &w, &a, &b, &k}) x->resize(size_t(C) * Dk);
    v.resize(size_t(C) * Dv);
  }
};

class GdrSource {
 public:
  virtual ~GdrSource() = default;
  virtual void load(int t0, int n, GdrRows& x) = 0;                   // inputs of tokens [t0, t0+n)
  virtual void store_y(int t0, int n, const float* y) = 0;            // y [n, Dv]
  virtual void load_dy(int t0, int n, float* dy) = 0;                 // dy [n, Dv]
  virtual void store_grads(int t0, int n, const GdrRows& x, const GdrRows& dx) = 0;  // dx of inputs x
};

struct GdrHeadShape {
  int T = 1, Dk = 1, Dv = 1;
  int chunk = 64;  // at most this many tokens per chunk (capped at 64)
  // One head of any op shape with T, Dk, Dv and chunk (GdrShape, DeltaShape).
  template <class Shape>
  static GdrHeadShape of(const Shape& s) {
    return GdrHeadShape{s.T, s.Dk, s.Dv, s.chunk};
  }
};

// Forward over T tokens: H [Dk, Dv] in place (initial -> final); y through src.store_y.
void gdr_scan_fwd(float* H, GdrSource& src, const GdrHeadShape& s);
// Backward: gradients of every input through src.store_grads (each token once, chunks from the
// last), given dy (src.load_dy) and dH_final (may be null = 0); H0 = the initial state; dH0 gets
// d(initial state).
void gdr_scan_bwd(float* dH0, const float* dH_final, const float* H0, GdrSource& src, const GdrHeadShape& s);

}  // namespace sr::cpu
