// Optimized CPU gated delta rule (contract in ops/ops.h, math in ../shared/docs/architectures.md
// section 3). Parallel over (batch, key head); the value heads of a key-head group run in the
// same thread, so dq/dk accumulate without races.
// Forward: the chunkwise WY / UT form, chunk C = s.chunk (64 by default), per chunk with H the
// chunk-start state [Dk, Dv] and gamma the in-chunk cumulative log decay:
//   A_rs = beta_r exp(gamma_r - gamma_s) k_r.k_s (s < r);  T = (I + A)^-1 (forward substitution)
//   U = T diag(beta) V;  W = T diag(beta e^gamma) K;  Delta = U - W H
//   O_r = e^gamma_r q~_r H + sum_{s<=r} (q~_r.k_s) exp(gamma_r - gamma_s) Delta_s
//   H <- e^gamma_C H + sum_r (k_r e^(gamma_C - gamma_r)) Delta_r^T
// Backward: exact backpropagation through time with checkpoints every C tokens
// (ops/cpu/checkpointed_scan.h; compute ~2 forwards).
#include <cmath>
#include <vector>

#include "ops/cpu/checkpointed_scan.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ref/gated_deltanet.h"

namespace sr::cpu {

namespace {
using ref::dr_gate;
using ref::dr_tok;

// One chunk [t0, t0+n) of value head h (key head kh) of sequence b; H [Dk, Dv] in/out.
struct ChunkScratch {
  std::vector<float> gam, A, Tm, U, W, D, QK;
  void fit(int C, int Dk, int Dv) {
    gam.resize(C), A.resize(size_t(C) * C), Tm.resize(size_t(C) * C), U.resize(size_t(C) * Dv);
    W.resize(size_t(C) * Dk), D.resize(size_t(C) * Dv), QK.resize(size_t(C) * C);
  }
};

void chunk_forward(float* out, float* H, const float* q, const float* k, const float* v, const float* g,
                   const float* beta, const DeltaShape& s, int b, int h, int kh, int t0, int n, ChunkScratch& w) {
  const int Dk = s.Dk, Dv = s.Dv;
  auto Kr = [&](int r) { return k + dr_tok(s, b, t0 + r, kh, s.Hk, Dk); };
  auto Qr = [&](int r) { return q + dr_tok(s, b, t0 + r, kh, s.Hk, Dk); };
  auto Vr = [&](int r) { return v + dr_tok(s, b, t0 + r, h, s.Hv, Dv); };
  auto Br = [&](int r) { return beta[dr_gate(s, b, t0 + r, h)]; };
  float acc = 0;
  for (int r = 0; r < n; ++r) acc += g[dr_gate(s, b, t0 + r, h)], w.gam[r] = acc;
  // A (strictly lower) and the unit lower-triangular T = (I + A)^-1, row by row
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < r; ++c) {
      float d = 0;
      const float *kr = Kr(r), *kc = Kr(c);
      for (int i = 0; i < Dk; ++i) d += kr[i] * kc[i];
      w.A[size_t(r) * n + c] = Br(r) * std::exp(w.gam[r] - w.gam[c]) * d;
    }
  for (int r = 0; r < n; ++r) {
    float* Tr = w.Tm.data() + size_t(r) * n;
    for (int c = 0; c < n; ++c) Tr[c] = c == r ? 1.0f : 0.0f;
    for (int m = 0; m < r; ++m) {  // T_r = e_r - sum_m A_rm T_m
      const float a = w.A[size_t(r) * n + m];
      const float* Tm = w.Tm.data() + size_t(m) * n;
      for (int c = 0; c <= m; ++c) Tr[c] -= a * Tm[c];
    }
  }
  // U = T diag(beta) V ; W = T diag(beta e^gamma) K ; Delta = U - W H
  for (int r = 0; r < n; ++r) {
    float *Ur = w.U.data() + size_t(r) * Dv, *Wr = w.W.data() + size_t(r) * Dk;
    for (int j = 0; j < Dv; ++j) Ur[j] = 0;
    for (int i = 0; i < Dk; ++i) Wr[i] = 0;
    for (int c = 0; c <= r; ++c) {
      const float t = w.Tm[size_t(r) * n + c], tb = t * Br(c), tbg = tb * std::exp(w.gam[c]);
      const float *vc = Vr(c), *kc = Kr(c);
      for (int j = 0; j < Dv; ++j) Ur[j] += tb * vc[j];
      for (int i = 0; i < Dk; ++i) Wr[i] += tbg * kc[i];
    }
    float* Dr = w.D.data() + size_t(r) * Dv;
    for (int j = 0; j < Dv; ++j) Dr[j] = Ur[j];
    for (int i = 0; i < Dk; ++i) {
      const float wi = Wr[i];
      const float* Hi = H + size_t(i) * Dv;
      for (int j = 0; j < Dv; ++j) Dr[j] -= wi * Hi[j];
    }
  }
  // O_r = scale (e^gamma_r q_r H + sum_{c<=r} (q_r.k_c) exp(gamma_r - gamma_c) Delta_c)
  for (int r = 0; r < n; ++r) {
    float* o = out + dr_tok(s, b, t0 + r, h, s.Hv, Dv);
    const float* qr = Qr(r);
    const float er = std::exp(w.gam[r]);
    for (int j = 0; j < Dv; ++j) o[j] = 0;
    for (int i = 0; i < Dk; ++i) {
      const float qi = qr[i] * er;
      const float* Hi = H + size_t(i) * Dv;
      for (int j = 0; j < Dv; ++j) o[j] += qi * Hi[j];
    }
    for (int c = 0; c <= r; ++c) {
      float d = 0;
      const float* kc = Kr(c);
      for (int i = 0; i < Dk; ++i) d += qr[i] * kc[i];
      d *= std::exp(w.gam[r] - w.gam[c]);
      const float* Dc = w.D.data() + size_t(c) * Dv;
      for (int j = 0; j < Dv; ++j) o[j] += d * Dc[j];
    }
    for (int j = 0; j < Dv; ++j) o[j] *= s.scale;
  }
  // H <- e^gamma_n H + sum_r (k_r e^(gamma_n - gamma_r)) Delta_r^T
  const float gn = w.gam[n - 1], en = std::exp(gn);
  for (int i = 0; i < Dk * Dv; ++i) H[i] *= en;
  for (int r = 0; r < n; ++r) {
    const float e = std::exp(gn - w.gam[r]);
    const float *kr = Kr(r), *Dr = w.D.data() + size_t(r) * Dv;
    for (int i = 0; i < Dk; ++i) {
      const float ki = kr[i] * e;
      float* Hi = H + size_t(i) * Dv;
      for (int j = 0; j < Dv; ++j) Hi[j] += ki * Dr[j];
    }
  }
}
}  // namespace

void delta_rule_fwd(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const DeltaShape& s) {
  const int ratio = s.Hv / s.Hk, C = std::max(1, s.chunk);
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hv; ++h) {
      ChunkScratch w;
      w.fit(C, s.Dk, s.Dv);
      float* H = state + (size_t(b) * s.Hv + h) * s.Dk * s.Dv;
      for (int t0 = 0; t0 < s.T; t0 += C)
        chunk_forward(out, H, q, k, v, g, beta, s, b, h, h / ratio, t0, std::min(C, s.T - t0), w);
    }
}

void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv, ratio = s.Hv / s.Hk;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int b = 0; b < s.B; ++b)
    for (int kh = 0; kh < s.Hk; ++kh) {
      for (int t = 0; t < s.T; ++t) {  // this key head's dq/dk rows accumulate over its value heads
        std::fill_n(dq + dr_tok(s, b, t, kh, s.Hk, Dk), Dk, 0.0f);
        std::fill_n(dk + dr_tok(s, b, t, kh, s.Hk, Dk), Dk, 0.0f);
      }
      ScanScratch w;
      std::vector<float> Hp(S), u(Dv), dd(Dv);
      for (int h = kh * ratio; h < (kh + 1) * ratio; ++h) {
        auto step = [&](float* H, int t) {
          ref::delta_rule_step(H, k + dr_tok(s, b, t, kh, s.Hk, Dk), v + dr_tok(s, b, t, h, s.Hv, Dv),
                               std::exp(g[dr_gate(s, b, t, h)]), beta[dr_gate(s, b, t, h)], u.data(), Dk, Dv);
        };
        auto step_bwd = [&](float* dH, int t, const float* Hprev) {
          const size_t gi = dr_gate(s, b, t, h), ik = dr_tok(s, b, t, kh, s.Hk, Dk), iv = dr_tok(s, b, t, h, s.Hv, Dv);
          ref::delta_rule_step_bwd(dH, dq + ik, dk + ik, dv + iv, dg + gi, dbeta + gi, dout + iv, q + ik, k + ik, v + iv,
                                   std::exp(g[gi]), beta[gi], s.scale, Hprev, Hprev + S, Hp.data(), u.data(), dd.data(),
                                   Dk, Dv);
        };
        const size_t so = (size_t(b) * s.Hv + h) * S;
        checkpointed_bptt(s.T, s.chunk, S, state0 + so, dstate_in ? dstate_in + so : nullptr, dstate0 + so, w, step,
                          step_bwd);
      }
    }
}

}  // namespace sr::cpu
