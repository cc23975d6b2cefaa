// Reference RWKV-7 (x070) layer pieces: the oracle, templated on the scalar so the tests run them
// in fp64 against finite differences. Contracts in ops/ops.h; the math is BlinkDL's x070 as
// ../shared/docs/architectures.md (section 4) states it. The recurrence itself is the generalized
// delta rule (ops/ref/generalized_delta_rule.h). These loops are memory-bound and linear in the
// tokens; the CPU table runs them as they are (like the Gated DeltaNet layer's gates and norms).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "ops/ref/ref_ops.h"  // sigmoid

namespace sr::ref {

// ---- LayerNorm over G groups of D per row (G = 1: LayerNorm; G = heads: GroupNorm) ----
// x, out [N, G*D]; w, b [G*D]; mean, rstd [N*G]
template <class T>
void layernorm_fwd(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, int N, int G, int D, T eps) {
  for (size_t r = 0; r < size_t(N) * G; ++r) {
    const T* xr = x + r * D;
    T m = 0;
    for (int i = 0; i < D; ++i) m += xr[i];
    m /= D;
    T v = 0;
    for (int i = 0; i < D; ++i) v += (xr[i] - m) * (xr[i] - m);
    v /= D;
    const T rs = T(1) / std::sqrt(v + eps);
    mean[r] = m, rstd[r] = rs;
    const size_t c0 = (r % G) * D;
    for (int i = 0; i < D; ++i) out[r * D + i] = (xr[i] - m) * rs * w[c0 + i] + b[c0 + i];
  }
}

// dx (=); dw, db (+=)
template <class T>
void layernorm_bwd(T* dx, T* dw, T* db, const T* dout, const T* x, const T* w, const T* mean, const T* rstd, int N,
                   int G, int D) {
  for (size_t r = 0; r < size_t(N) * G; ++r) {
    const T *xr = x + r * D, *dy = dout + r * D;
    const size_t c0 = (r % G) * D;
    const T m = mean[r], rs = rstd[r];
    T s1 = 0, s2 = 0;  // mean of dxhat, mean of dxhat * xhat
    for (int i = 0; i < D; ++i) {
      const T xh = (xr[i] - m) * rs, dxh = dy[i] * w[c0 + i];
      s1 += dxh, s2 += dxh * xh;
      if (dw) dw[c0 + i] += dy[i] * xh;
      if (db) db[c0 + i] += dy[i];
    }
    s1 /= D, s2 /= D;
    if (dx)
      for (int i = 0; i < D; ++i) {
        const T xh = (xr[i] - m) * rs;
        dx[r * D + i] = rs * (dy[i] * w[c0 + i] - s1 - xh * s2);
      }
  }
}

// ---- token shift + mix: out[m, n, :] = x[n] + (x_prev(n) - x[n]) * mu[m, :] ----
// x [B,T,C]; prev [B,C] = the input before t = 0 (null = zeros); mu [M, C]; out [M, B*T, C]
template <class T>
inline const T* shift_prev(const T* x, const T* prev, int b, int t, int T_, int C) {
  if (t > 0) return x + (size_t(b) * T_ + t - 1) * C;
  return prev ? prev + size_t(b) * C : nullptr;
}

template <class T>
void token_shift_fwd(T* out, const T* x, const T* prev, const T* mu, int B, int T_, int C, int M) {
  const size_t N = size_t(B) * T_;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T_; ++t) {
      const size_t n = size_t(b) * T_ + t;
      const T *xn = x + n * C, *xp = shift_prev(x, prev, b, t, T_, C);
      for (int m = 0; m < M; ++m)
        for (int c = 0; c < C; ++c) {
          const T d = (xp ? xp[c] : T(0)) - xn[c];
          out[(m * N + n) * C + c] = xn[c] + d * mu[size_t(m) * C + c];
        }
    }
}

// dx (=), dmu (+=); d(prev) is not needed (training sequences start from zeros)
template <class T>
void token_shift_bwd(T* dx, T* dmu, const T* dout, const T* x, const T* prev, const T* mu, int B, int T_, int C,
                     int M) {
  const size_t N = size_t(B) * T_;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T_; ++t) {
      const size_t n = size_t(b) * T_ + t;
      const T *xn = x + n * C, *xp = shift_prev(x, prev, b, t, T_, C);
      for (int c = 0; c < C; ++c) {
        T g = 0;  // d x[n] from its own token (weight 1 - mu) and from the next one (weight mu)
        for (int m = 0; m < M; ++m) {
          const size_t im = size_t(m) * C + c;
          g += dout[(m * N + n) * C + c] * (T(1) - mu[im]);
          if (t + 1 < T_) g += dout[(m * N + n + 1) * C + c] * mu[im];
          if (dmu) dmu[im] += dout[(m * N + n) * C + c] * ((xp ? xp[c] : T(0)) - xn[c]);
        }
        dx[n * C + c] = g;
      }
    }
}

// ---- elementwise activations: kind 0 = tanh, 1 = sigmoid, 2 = relu^2 ----
template <class T>
void act_fwd(T* out, const T* x, size_t n, int kind) {
  for (size_t i = 0; i < n; ++i) {
    const T v = x[i];
    out[i] = kind == 0 ? std::tanh(v) : kind == 1 ? sigmoid(v) : (v > 0 ? v * v : T(0));
  }
}
template <class T>
void act_bwd(T* dx, const T* dout, const T* x, size_t n, int kind) {
  for (size_t i = 0; i < n; ++i) {
    const T v = x[i];
    T d;
    if (kind == 0) {
      const T y = std::tanh(v);
      d = T(1) - y * y;
    } else if (kind == 1) {
      const T s = sigmoid(v);
      d = s * (T(1) - s);
    } else {
      d = v > 0 ? T(2) * v : T(0);
    }
    dx[i] = dout[i] * d;
  }
}

// ---- time-mix prelude (per token n, head h, channel i of D) ----
constexpr double kRwkv7DecayScale = 0.6065306597126334;  // e^{-1/2}: w = exp(-e^{-1/2} sigmoid(wl))

template <class T>
void rwkv7_prep_fwd(T* w, T* kmod, T* vmod, T* alpha, T* beta, T* rnorm, const T* k, const T* v, const T* wl,
                    const T* al, const T* vl, const T* vfirst, const T* kkw, const T* ka, int N, int H, int D) {
  const int C = H * D;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t o = size_t(n) * C + size_t(h) * D;
      T ss = 0;
      for (int i = 0; i < D; ++i) {
        const T kin = k[o + i] * kkw[h * D + i];
        ss += kin * kin;
      }
      const T rn = T(1) / std::max(std::sqrt(ss), T(1e-12));  // F.normalize
      rnorm[size_t(n) * H + h] = rn;
      for (int i = 0; i < D; ++i) {
        const size_t j = o + i, c = size_t(h) * D + i;
        w[j] = std::exp(-T(kRwkv7DecayScale) * sigmoid(wl[j]));
        const T a = sigmoid(al[j]), kk = k[j] * kkw[c] * rn;
        kmod[j] = k[j] * (T(1) + (a - T(1)) * ka[c]);
        alpha[j] = -kk, beta[j] = kk * a;
        vmod[j] = vfirst ? v[j] + (vfirst[j] - v[j]) * sigmoid(vl[j]) : v[j];
      }
    }
}

// dk, dv, dwl, dal (=); dvl (=, only with vfirst); dvfirst, dkkw, dka (+=). Null outputs are skipped.
template <class T>
void rwkv7_prep_bwd(T* dk, T* dv, T* dwl, T* dal, T* dvl, T* dvfirst, T* dkkw, T* dka, const T* dw, const T* dkmod,
                    const T* dvmod, const T* dalpha, const T* dbeta, const T* k, const T* v, const T* wl, const T* al,
                    const T* vl, const T* vfirst, const T* kkw, const T* ka, const T* rnorm, int N, int H, int D) {
  const int C = H * D;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t o = size_t(n) * C + size_t(h) * D;
      const T rn = rnorm[size_t(n) * H + h];
      T dot = 0;  // sum kk * dkk over the head (L2-normalize backward)
      for (int i = 0; i < D; ++i) {
        const size_t j = o + i, c = size_t(h) * D + i;
        const T a = sigmoid(al[j]), kk = k[j] * kkw[c] * rn;
        dot += kk * (-dalpha[j] + dbeta[j] * a);
      }
      for (int i = 0; i < D; ++i) {
        const size_t j = o + i, c = size_t(h) * D + i;
        const T sw = sigmoid(wl[j]), w = std::exp(-T(kRwkv7DecayScale) * sw);
        dwl[j] = dw[j] * w * -T(kRwkv7DecayScale) * sw * (T(1) - sw);
        const T a = sigmoid(al[j]), kin = k[j] * kkw[c], kk = kin * rn;
        const T dkk = -dalpha[j] + dbeta[j] * a;
        const T da = dbeta[j] * kk + dkmod[j] * k[j] * ka[c];
        dal[j] = da * a * (T(1) - a);
        if (dka) dka[c] += dkmod[j] * k[j] * (a - T(1));
        // F.normalize backward (the 1e-12 floor is a constant where it applies)
        const T dkin = T(1) / rn > T(1e-12) ? rn * (dkk - kk * dot) : rn * dkk;
        if (dkkw) dkkw[c] += dkin * k[j];
        dk[j] = dkmod[j] * (T(1) + (a - T(1)) * ka[c]) + dkin * kkw[c];
        if (vfirst) {
          const T sv = sigmoid(vl[j]);
          dv[j] = dvmod[j] * (T(1) - sv);
          if (dvfirst) dvfirst[j] += dvmod[j] * sv;
          if (dvl) dvl[j] = dvmod[j] * (vfirst[j] - v[j]) * sv * (T(1) - sv);
        } else {
          dv[j] = dvmod[j];
        }
      }
    }
}

// ---- output: out = (yn + (sum_i r kmod rk) v) * g per head (the "bonus" term, then the gate) ----
template <class T>
void rwkv7_out_fwd(T* out, const T* yn, const T* r, const T* kmod, const T* v, const T* rk, const T* g, int N, int H,
                   int D) {
  const int C = H * D;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t o = size_t(n) * C + size_t(h) * D;
      T sc = 0;
      for (int i = 0; i < D; ++i) sc += r[o + i] * kmod[o + i] * rk[h * D + i];
      for (int i = 0; i < D; ++i) out[o + i] = (yn[o + i] + sc * v[o + i]) * g[o + i];
    }
}

// dyn, dr, dkmod, dv, dg (=); drk (+=)
template <class T>
void rwkv7_out_bwd(T* dyn, T* dr, T* dkmod, T* dv, T* drk, T* dg, const T* dout, const T* yn, const T* r,
                   const T* kmod, const T* v, const T* rk, const T* g, int N, int H, int D) {
  const int C = H * D;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h) {
      const size_t o = size_t(n) * C + size_t(h) * D;
      T sc = 0, dsc = 0;
      for (int i = 0; i < D; ++i) sc += r[o + i] * kmod[o + i] * rk[h * D + i];
      for (int i = 0; i < D; ++i) {
        const T dz = dout[o + i] * g[o + i];
        dg[o + i] = dout[o + i] * (yn[o + i] + sc * v[o + i]);
        dyn[o + i] = dz;
        dv[o + i] = dz * sc;
        dsc += dz * v[o + i];
      }
      for (int i = 0; i < D; ++i) {
        const size_t c = size_t(h) * D + i;
        dr[o + i] = dsc * kmod[o + i] * rk[c];
        dkmod[o + i] = dsc * r[o + i] * rk[c];
        if (drk) drk[c] += dsc * r[o + i] * kmod[o + i];
      }
    }
}

}  // namespace sr::ref
