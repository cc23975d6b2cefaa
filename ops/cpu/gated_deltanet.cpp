// Optimized CPU gated delta rule (contract in ops/ops.h, math in ../shared/docs/architectures.md
// section 3): the special case of the generalized delta rule (ops/ref/generalized_delta_rule.h,
// gdn_as_generalized) run through its one chunked scan (ops/cpu/gdr_scan.h), forward and backward:
//   r = scale q, w = e^g (every channel), a = k, b = -e^g beta k, k = k, v = beta v.
// The mapping is applied per chunk of rows, so nothing of size [B,T,H,Dk] is materialized.
// Fast-forgetting heads (|g| summed over a chunk > 40) get shorter chunks (see the scan).
// Parallel over (batch, key head); the value heads of a key-head group run in the same thread, so
// dq/dk accumulate without races.
#include <algorithm>
#include <cmath>

#include "ops/cpu/cpu_ops.h"
#include "ops/cpu/gdr_scan.h"
#include "ops/ref/gated_deltanet.h"

namespace sr::cpu {

namespace {
using ref::dr_gate;
using ref::dr_tok;

// Value head h (key head kh) of sequence b as rows of the generalized rule.
class GatedDeltaRows final : public GdrSource {
 public:
  struct In { const float *q, *k, *v, *g, *beta; };
  struct Grad { float *dq, *dk, *dv, *dg, *dbeta; };  // dq, dk accumulate (+=); the others are written
  GatedDeltaRows(const DeltaShape& s, int b, int h, int kh, In in, float* out, const float* dout, Grad d)
      : s_(s), b_(b), h_(h), kh_(kh), in_(in), out_(out), dout_(dout), d_(d) {}

  void load(int t0, int n, GdrRows& x) override {
    const int Dk = s_.Dk, Dv = s_.Dv;
    for (int t = 0; t < n; ++t) {
      const size_t gi = dr_gate(s_, b_, t0 + t, h_), ik = key(t0 + t), o = size_t(t) * Dk;
      const float e = std::exp(in_.g[gi]), bt = in_.beta[gi];
      const float *q = in_.q + ik, *k = in_.k + ik, *v = in_.v + val(t0 + t);
      for (int i = 0; i < Dk; ++i)
        x.r[o + i] = s_.scale * q[i], x.w[o + i] = e, x.a[o + i] = k[i], x.b[o + i] = -e * bt * k[i], x.k[o + i] = k[i];
      for (int j = 0; j < Dv; ++j) x.v[size_t(t) * Dv + j] = bt * v[j];
    }
  }
  void store_y(int t0, int n, const float* y) override {
    for (int t = 0; t < n; ++t) std::copy_n(y + size_t(t) * s_.Dv, s_.Dv, out_ + val(t0 + t));
  }
  void load_dy(int t0, int n, float* dy) override {
    for (int t = 0; t < n; ++t) std::copy_n(dout_ + val(t0 + t), s_.Dv, dy + size_t(t) * s_.Dv);
  }
  // The chain rule through the mapping (dx.w holds d log w = the g-gradient of each channel).
  void store_grads(int t0, int n, const GdrRows& x, const GdrRows& dx) override {
    const int Dk = s_.Dk, Dv = s_.Dv;
    for (int t = 0; t < n; ++t) {
      const size_t gi = dr_gate(s_, b_, t0 + t, h_), ik = key(t0 + t), iv = val(t0 + t), o = size_t(t) * Dk;
      const float e = std::exp(in_.g[gi]), bt = in_.beta[gi];
      const float *k = in_.k + ik, *v = in_.v + iv;
      float dg = 0.0f, dbeta = 0.0f;
      for (int i = 0; i < Dk; ++i) {
        d_.dq[ik + i] += s_.scale * dx.r[o + i];
        d_.dk[ik + i] += dx.a[o + i] - e * bt * dx.b[o + i] + dx.k[o + i];
        dg += dx.w[o + i] + dx.b[o + i] * x.b[o + i];
        dbeta -= e * dx.b[o + i] * k[i];
      }
      for (int j = 0; j < Dv; ++j) {
        const float dv2 = dx.v[size_t(t) * Dv + j];
        d_.dv[iv + j] = bt * dv2;
        dbeta += dv2 * v[j];
      }
      d_.dg[gi] = dg, d_.dbeta[gi] = dbeta;
    }
  }

 private:
  size_t key(int t) const { return dr_tok(s_, b_, t, kh_, s_.Hk, s_.Dk); }
  size_t val(int t) const { return dr_tok(s_, b_, t, h_, s_.Hv, s_.Dv); }
  const DeltaShape& s_;
  int b_, h_, kh_;
  In in_;
  float* out_;
  const float* dout_;
  Grad d_;
};

}  // namespace

void delta_rule_fwd(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const DeltaShape& s) {
  const int ratio = s.Hv / s.Hk;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hv; ++h) {
      GatedDeltaRows src(s, b, h, h / ratio, {q, k, v, g, beta}, out, nullptr, {});
      gdr_scan_fwd(state + (size_t(b) * s.Hv + h) * s.Dk * s.Dv, src, GdrHeadShape::of(s));
    }
}

void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s) {
  const size_t S = size_t(s.Dk) * s.Dv;
  const int ratio = s.Hv / s.Hk;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < s.B; ++b)
    for (int kh = 0; kh < s.Hk; ++kh) {
      for (int t = 0; t < s.T; ++t) {  // this key head's dq/dk rows accumulate over its value heads
        std::fill_n(dq + dr_tok(s, b, t, kh, s.Hk, s.Dk), s.Dk, 0.0f);
        std::fill_n(dk + dr_tok(s, b, t, kh, s.Hk, s.Dk), s.Dk, 0.0f);
      }
      for (int h = kh * ratio; h < (kh + 1) * ratio; ++h) {
        GatedDeltaRows src(s, b, h, kh, {q, k, v, g, beta}, nullptr, dout, {dq, dk, dv, dg, dbeta});
        const size_t so = (size_t(b) * s.Hv + h) * S;
        gdr_scan_bwd(dstate0 + so, dstate_in ? dstate_in + so : nullptr, state0 + so, src, GdrHeadShape::of(s));
      }
    }
}

}  // namespace sr::cpu
