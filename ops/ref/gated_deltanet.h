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

// ---- the layer's elementwise pieces (memory-bound; the CPU backend runs these same loops) ----

template <class T>
T dr_sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <class T>
T dr_softplus(T x) {  // log(1 + e^x), overflow-safe
  return x > T(20) ? x : std::log1p(std::exp(x));
}

// Input of channel c at time t (t may be negative: then from the state, or 0).
template <class T>
T conv_input(const T* x, const T* state, int b, int t, int c, int T_, int Cc, int K) {
  if (t >= 0) return x[(size_t(b) * T_ + t) * Cc + c];
  if (!state) return T(0);
  return state[(size_t(b) * Cc + c) * (K - 1) + (K - 1 + t)];
}

template <class T>
void causal_conv_fwd(T* out, T* state, const T* x, const T* w, int B, int T_, int Cc, int K) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T_; ++t)
      for (int c = 0; c < Cc; ++c) {
        T acc = 0;
        for (int j = 0; j < K; ++j) acc += w[size_t(c) * K + j] * conv_input(x, state, b, t - K + 1 + j, c, T_, Cc, K);
        out[(size_t(b) * T_ + t) * Cc + c] = acc * dr_sigmoid(acc);
      }
  if (!state || K < 2) return;
  std::vector<T> next(static_cast<size_t>(K - 1));
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Cc; ++c) {
      for (int j = 0; j < K - 1; ++j) next[j] = conv_input(x, state, b, T_ - (K - 1) + j, c, T_, Cc, K);
      for (int j = 0; j < K - 1; ++j) state[(size_t(b) * Cc + c) * (K - 1) + j] = next[j];
    }
}

template <class T>
void causal_conv_bwd(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* state0, int B, int T_, int Cc,
                     int K) {
  std::vector<T> dpre(static_cast<size_t>(T_));
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < Cc; ++c) {
      for (int t = 0; t < T_; ++t) {  // d(pre-activation) = dout * silu'(pre)
        T pre = 0;
        for (int j = 0; j < K; ++j) pre += w[size_t(c) * K + j] * conv_input(x, state0, b, t - K + 1 + j, c, T_, Cc, K);
        const T sg = dr_sigmoid(pre);
        dpre[t] = dout[(size_t(b) * T_ + t) * Cc + c] * sg * (T(1) + pre * (T(1) - sg));
      }
      for (int t = 0; t < T_; ++t) {
        T acc = 0;  // x[t] feeds out[t + K - 1 - j] through tap j
        for (int j = 0; j < K; ++j) {
          const int to = t + K - 1 - j;
          if (to < T_) acc += w[size_t(c) * K + j] * dpre[to];
        }
        dx[(size_t(b) * T_ + t) * Cc + c] = acc;
      }
      for (int j = 0; j < K; ++j) {
        T acc = 0;
        for (int t = 0; t < T_; ++t) acc += dpre[t] * conv_input(x, state0, b, t - K + 1 + j, c, T_, Cc, K);
        dw[size_t(c) * K + j] += acc;
      }
    }
}

template <class T>
void l2norm_fwd(T* out, T* rnorm, const T* x, int N, int D) {
  for (int n = 0; n < N; ++n) {
    T ss = 0;
    for (int d = 0; d < D; ++d) ss += x[size_t(n) * D + d] * x[size_t(n) * D + d];
    const T r = T(1) / std::sqrt(ss + T(1e-6));
    rnorm[n] = r;
    for (int d = 0; d < D; ++d) out[size_t(n) * D + d] = x[size_t(n) * D + d] * r;
  }
}
// y = x r, r = (x.x + eps)^-1/2: dx = r dy - r^3 x (x.dy) = r (dy - y (y.dy)), exact for any eps
template <class T>
void l2norm_bwd(T* dx, const T* dout, const T* out, const T* rnorm, int N, int D) {
  for (int n = 0; n < N; ++n) {
    T yd = 0;
    for (int d = 0; d < D; ++d) yd += out[size_t(n) * D + d] * dout[size_t(n) * D + d];
    for (int d = 0; d < D; ++d)
      dx[size_t(n) * D + d] = rnorm[n] * (dout[size_t(n) * D + d] - out[size_t(n) * D + d] * yd);
  }
}

template <class T>
void gdn_gates_fwd(T* g, T* beta, const T* a, const T* b, const T* A_log, const T* dt_bias, int N, int H) {
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t i = size_t(n) * H + h;
      g[i] = -std::exp(A_log[h]) * dr_softplus(a[i] + dt_bias[h]);
      beta[i] = dr_sigmoid(b[i]);
    }
}
// dg/dA_log = g; dg/da = dg/ddt_bias = -exp(A_log) sigmoid(a + dt_bias); dbeta/db = beta (1 - beta)
template <class T>
void gdn_gates_bwd(T* da, T* db, T* dA_log, T* ddt_bias, const T* dg, const T* dbeta, const T* a, const T* b,
                   const T* A_log, const T* dt_bias, int N, int H) {
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t i = size_t(n) * H + h;
      const T e = std::exp(A_log[h]), sp = dr_softplus(a[i] + dt_bias[h]), sa = dr_sigmoid(a[i] + dt_bias[h]);
      const T dgi = dg[i] * -e * sa;
      da[i] = dgi;
      ddt_bias[h] += dgi;
      dA_log[h] += dg[i] * -e * sp;
      const T bt = dr_sigmoid(b[i]);
      db[i] = dbeta[i] * bt * (T(1) - bt);
    }
}

template <class T>
void gated_rmsnorm_fwd(T* out, T* rstd, const T* o, const T* z, const T* w, int rows, int D, T eps) {
  for (int r = 0; r < rows; ++r) {
    const T* orow = o + size_t(r) * D;
    T ss = 0;
    for (int d = 0; d < D; ++d) ss += orow[d] * orow[d];
    const T rs = T(1) / std::sqrt(ss / T(D) + eps);
    rstd[r] = rs;
    for (int d = 0; d < D; ++d) {
      const T zz = z[size_t(r) * D + d];
      out[size_t(r) * D + d] = w[d] * orow[d] * rs * zz * dr_sigmoid(zz);
    }
  }
}
// y = w n s, n = o rstd, s = silu(z): dz = dy w n silu'(z); dw += dy n s; do = rstd (m - n mean(m n)), m = dy w s
template <class T>
void gated_rmsnorm_bwd(T* do_, T* dz, T* dw, const T* dout, const T* o, const T* z, const T* w, const T* rstd,
                       int rows, int D) {
  for (int r = 0; r < rows; ++r) {
    const T rs = rstd[r];
    T mn = 0;
    for (int d = 0; d < D; ++d) {
      const size_t i = size_t(r) * D + d;
      const T sg = dr_sigmoid(z[i]), s = z[i] * sg, n = o[i] * rs;
      const T m = dout[i] * w[d] * s;
      mn += m * n;
      dz[i] = dout[i] * w[d] * n * sg * (T(1) + z[i] * (T(1) - sg));
      dw[d] += dout[i] * n * s;
    }
    mn /= T(D);
    for (int d = 0; d < D; ++d) {
      const size_t i = size_t(r) * D + d;
      const T s = z[i] * dr_sigmoid(z[i]), n = o[i] * rs;
      do_[i] = rs * (dout[i] * w[d] * s - n * mn);
    }
  }
}

}  // namespace sr::ref
