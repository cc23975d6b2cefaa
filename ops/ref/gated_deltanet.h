// Reference gated delta rule (Gated DeltaNet's recurrence): token by token, the oracle for the
// chunked CPU and CUDA versions. Contract in ops/ops.h (DeltaShape). Templated on the scalar so
// the tests run it in fp64 against finite differences. Backward = exact backpropagation through
// time over the stored per-token states (../shared/docs/architectures.md, section 3.5a).
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

#include "ops/ops.h"

namespace sr::ref {

// Index helpers for the [B,T,H,D] and [B,T,H] layouts.
inline size_t dr_tok(const DeltaShape& s, int b, int t, int h, int H, int D) {
  return ((size_t(b) * s.T + t) * H + h) * size_t(D);
}
inline size_t dr_gate(const DeltaShape& s, int b, int t, int h) { return (size_t(b) * s.T + t) * s.Hv + h; }

// One token of the recurrence on H [Dk, Dv] in place: H <- a H; delta = bt (v - H^T k); H += k delta^T.
// u: scratch [Dv].
template <class T>
void delta_rule_step(T* H, const T* kt, const T* vt, T a, T bt, T* u, int Dk, int Dv) {
  for (int i = 0; i < Dk * Dv; ++i) H[i] *= a;
  for (int j = 0; j < Dv; ++j) {
    T acc = 0;
    for (int i = 0; i < Dk; ++i) acc += H[size_t(i) * Dv + j] * kt[i];
    u[j] = bt * (vt[j] - acc);
  }
  for (int i = 0; i < Dk; ++i)
    for (int j = 0; j < Dv; ++j) H[size_t(i) * Dv + j] += kt[i] * u[j];
}

// Backpropagates one token: Hprev = state before the token, Ht = after it; dH [Dk, Dv] holds
// d(H_t) on entry and d(H_{t-1}) on return. Accumulates dqt, dkt (+=); writes dvt, *dgt, *dbt.
// Scratch: Hp [Dk*Dv], u, dd [Dv].
template <class T>
void delta_rule_step_bwd(T* dH, T* dqt, T* dkt, T* dvt, T* dgt, T* dbt, const T* dot, const T* qt, const T* kt,
                         const T* vt, T a, T bt, T sc, const T* Hprev, const T* Ht, T* Hp, T* u, T* dd, int Dk, int Dv) {
  // o = H_t^T (sc q): dq += sc H_t dout ; dH += sc q dout^T
  for (int i = 0; i < Dk; ++i) {
    T acc = 0;
    for (int j = 0; j < Dv; ++j) acc += Ht[size_t(i) * Dv + j] * dot[j];
    dqt[i] += sc * acc;
    for (int j = 0; j < Dv; ++j) dH[size_t(i) * Dv + j] += sc * qt[i] * dot[j];
  }
  // H' = a H_{t-1}; u = H'^T k; delta = bt (v - u); H_t = H' + k delta^T
  for (int i = 0; i < Dk * Dv; ++i) Hp[i] = a * Hprev[i];
  T dbsum = 0;
  for (int j = 0; j < Dv; ++j) {
    T uj = 0, ddj = 0;
    for (int i = 0; i < Dk; ++i) uj += Hp[size_t(i) * Dv + j] * kt[i], ddj += dH[size_t(i) * Dv + j] * kt[i];
    u[j] = uj, dd[j] = ddj;
    dvt[j] = bt * ddj;
    dbsum += ddj * (vt[j] - uj);
  }
  *dbt = dbsum;
  // dk = dH delta + H' du, du = -bt dd
  for (int i = 0; i < Dk; ++i) {
    T acc = 0;
    for (int j = 0; j < Dv; ++j) acc += dH[size_t(i) * Dv + j] * bt * (vt[j] - u[j]) - Hp[size_t(i) * Dv + j] * bt * dd[j];
    dkt[i] += acc;
  }
  // dH' = dH + k du^T ; dg = <dH', H'> ; dH_{t-1} = a dH'
  T dgsum = 0;
  for (int i = 0; i < Dk; ++i)
    for (int j = 0; j < Dv; ++j) {
      T x = dH[size_t(i) * Dv + j] - kt[i] * bt * dd[j];
      dgsum += x * Hp[size_t(i) * Dv + j];
      dH[size_t(i) * Dv + j] = a * x;
    }
  *dgt = dgsum;
}

template <class T>
void delta_rule_fwd(T* out, T* state, const T* q, const T* k, const T* v, const T* g, const T* beta,
                    const DeltaShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, ratio = s.Hv / s.Hk;
  std::vector<T> u(Dv);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hv; ++h) {
      const int kh = h / ratio;
      T* H = state + (size_t(b) * s.Hv + h) * Dk * Dv;  // [Dk, Dv]
      for (int t = 0; t < s.T; ++t) {
        const T *qt = q + dr_tok(s, b, t, kh, s.Hk, Dk), *kt = k + dr_tok(s, b, t, kh, s.Hk, Dk);
        delta_rule_step(H, kt, v + dr_tok(s, b, t, h, s.Hv, Dv), T(std::exp(g[dr_gate(s, b, t, h)])),
                        beta[dr_gate(s, b, t, h)], u.data(), Dk, Dv);
        T* ot = out + dr_tok(s, b, t, h, s.Hv, Dv);
        for (int j = 0; j < Dv; ++j) {
          T acc = 0;
          for (int i = 0; i < Dk; ++i) acc += H[size_t(i) * Dv + j] * qt[i];
          ot[j] = acc * T(s.scale);
        }
      }
    }
}

// q/k gradients of value heads sharing a key head accumulate, so dq and dk are zeroed first.
template <class T>
void delta_rule_bwd(T* dq, T* dk, T* dv, T* dg, T* dbeta, T* dstate0, const T* dout, const T* dstate_in, const T* q,
                    const T* k, const T* v, const T* g, const T* beta, const T* state0, const DeltaShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, ratio = s.Hv / s.Hk, S = Dk * Dv;
  for (size_t i = 0, n = size_t(s.B) * s.T * s.Hk * Dk; i < n; ++i) dq[i] = dk[i] = 0;
  std::vector<T> Hs(size_t(s.T + 1) * S), dH(S), Hp(S), u(Dv), dd(Dv);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hv; ++h) {
      const int kh = h / ratio;
      // forward again, keeping every state: Hs[t+1] = state after token t
      const T* H0 = state0 + (size_t(b) * s.Hv + h) * S;
      for (int i = 0; i < S; ++i) Hs[i] = H0[i];
      for (int t = 0; t < s.T; ++t) {
        T* Hn = Hs.data() + size_t(t + 1) * S;
        for (int i = 0; i < S; ++i) Hn[i] = Hn[i - S];
        delta_rule_step(Hn, k + dr_tok(s, b, t, kh, s.Hk, Dk), v + dr_tok(s, b, t, h, s.Hv, Dv),
                        T(std::exp(g[dr_gate(s, b, t, h)])), beta[dr_gate(s, b, t, h)], u.data(), Dk, Dv);
      }
      for (int i = 0; i < S; ++i) dH[i] = dstate_in ? dstate_in[(size_t(b) * s.Hv + h) * S + i] : T(0);
      for (int t = s.T - 1; t >= 0; --t) {
        const size_t gi = dr_gate(s, b, t, h);
        delta_rule_step_bwd(dH.data(), dq + dr_tok(s, b, t, kh, s.Hk, Dk), dk + dr_tok(s, b, t, kh, s.Hk, Dk),
                            dv + dr_tok(s, b, t, h, s.Hv, Dv), dg + gi, dbeta + gi, dout + dr_tok(s, b, t, h, s.Hv, Dv),
                            q + dr_tok(s, b, t, kh, s.Hk, Dk), k + dr_tok(s, b, t, kh, s.Hk, Dk),
                            v + dr_tok(s, b, t, h, s.Hv, Dv), T(std::exp(g[gi])), beta[gi], T(s.scale),
                            Hs.data() + size_t(t) * S, Hs.data() + size_t(t + 1) * S, Hp.data(), u.data(), dd.data(),
                            Dk, Dv);
      }
      for (int i = 0; i < S; ++i) dstate0[(size_t(b) * s.Hv + h) * S + i] = dH[i];
    }
}

}  // namespace sr::ref
