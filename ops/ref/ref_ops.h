// Reference ops: the oracle. Plain loops, no blocking, no threads. Templated on the scalar type
// so the tests can run them in double against central finite differences; the fp32
// instantiation is the `ref` backend (ops_ref()) the optimized code is tested against.
// Contracts (shapes, += vs =) are documented in ops/ops.h.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/ops.h"

namespace sr::ref {

template <class T>
void embedding_fwd(T* out, const int32_t* ids, const T* table, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[size_t(n) * C + c] = table[size_t(ids[n]) * C + c];
}

template <class T>
void embedding_bwd(T* dtable, const T* dout, const int32_t* ids, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) dtable[size_t(ids[n]) * C + c] += dout[size_t(n) * C + c];
}

template <class T>
void rmsnorm_fwd(T* out, T* rstd, const T* x, const T* w, int N, int C, T eps) {
  for (int n = 0; n < N; ++n) {
    const T* xr = x + size_t(n) * C;
    T ss = 0;
    for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
    T r = T(1) / std::sqrt(ss / T(C) + eps);
    rstd[n] = r;
    for (int c = 0; c < C; ++c) out[size_t(n) * C + c] = xr[c] * r * w[c];
  }
}

// y_c = w_c x_c r, r = (mean(x^2)+eps)^-1/2  =>  dx_c = r (w_c dy_c - x_c r^2 mean_k(w_k dy_k x_k))
template <class T>
void rmsnorm_bwd(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N, int C, bool add_dx = false) {
  for (int n = 0; n < N; ++n) {
    const T* xr = x + size_t(n) * C;
    const T* dy = dout + size_t(n) * C;
    T r = rstd[n];
    T dot = 0;
    for (int c = 0; c < C; ++c) dot += w[c] * dy[c] * xr[c];
    for (int c = 0; c < C; ++c) {
      if (dw) dw[c] += dy[c] * xr[c] * r;
      if (!dx) continue;
      const T d = r * (w[c] * dy[c] - xr[c] * r * r * dot / T(C));
      dx[size_t(n) * C + c] = add_dx ? dx[size_t(n) * C + c] + d : d;
    }
  }
}

template <class T>
void linear_fwd(T* out, const T* x, const T* W, const T* b, int N, int I, int O) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      T acc = b ? b[o] : T(0);
      for (int i = 0; i < I; ++i) acc += x[size_t(n) * I + i] * W[size_t(o) * I + i];
      out[size_t(n) * O + o] = acc;
    }
}

// linear_fwd with bf16-stored weights: each weight widened exactly, then the same loop
inline void linear_fwd_bf16w(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < O; ++o) {
      float acc = b ? b[o] : 0.0f;
      for (int i = 0; i < I; ++i) acc += x[size_t(n) * I + i] * bf16_to_f32(W[size_t(o) * I + i]);
      out[size_t(n) * O + o] = acc;
    }
}

template <class T>
void linear_bwd(T* dx, T* dW, T* db, const T* dout, const T* x, const T* W, int N, int I, int O, int flags = 0) {
  const bool add_dx = flags & kAddDx, set_dW = flags & kSetDW;
  if (dx)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < I; ++i) {
        T acc = 0;
        for (int o = 0; o < O; ++o) acc += dout[size_t(n) * O + o] * W[size_t(o) * I + i];
        dx[size_t(n) * I + i] = add_dx ? dx[size_t(n) * I + i] + acc : acc;
      }
  if (dW)
    for (int o = 0; o < O; ++o)
      for (int i = 0; i < I; ++i) {
        T acc = 0;
        for (int n = 0; n < N; ++n) acc += dout[size_t(n) * O + o] * x[size_t(n) * I + i];
        dW[size_t(o) * I + i] = set_dW ? acc : dW[size_t(o) * I + i] + acc;
      }
  if (db)
    for (int o = 0; o < O; ++o) {
      T acc = 0;
      for (int n = 0; n < N; ++n) acc += dout[size_t(n) * O + o];
      db[o] += acc;
    }
}

// Angle for pair m of a head of size D at position p: p * theta^(-2m/D) (HF default rope).
// theta^(-2m/D): the frequency of rotary pair m
inline double rope_inv_freq(int m, int D, float theta) { return std::pow(double(theta), -2.0 * m / D); }
inline double rope_angle(int32_t p, int m, int D, float theta) { return double(p) * rope_inv_freq(m, D, theta); }

// out[m] = x[m] cos - x[m+D/2] sin ; out[m+D/2] = x[m+D/2] cos + x[m] sin
template <class T>
void rope_fwd(T* out, const T* x, const int32_t* pos, int N, int H, int D, float theta) {
  int half = D / 2;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int m = 0; m < half; ++m) {
        double a = rope_angle(pos[n], m, D, theta);
        T c = T(std::cos(a)), s = T(std::sin(a));
        size_t base = (size_t(n) * H + h) * D;
        T x1 = x[base + m], x2 = x[base + m + half];
        out[base + m] = x1 * c - x2 * s;
        out[base + m + half] = x2 * c + x1 * s;
      }
}

// The rotation is orthogonal: the gradient is the inverse rotation (angle -a).
template <class T>
void rope_bwd(T* dx, const T* dout, const int32_t* pos, int N, int H, int D, float theta) {
  int half = D / 2;
  for (int n = 0; n < N; ++n)
    for (int h = 0; h < H; ++h)
      for (int m = 0; m < half; ++m) {
        double a = rope_angle(pos[n], m, D, theta);
        T c = T(std::cos(a)), s = T(std::sin(a));
        size_t base = (size_t(n) * H + h) * D;
        T g1 = dout[base + m], g2 = dout[base + m + half];
        dx[base + m] = g1 * c + g2 * s;
        dx[base + m + half] = g2 * c - g1 * s;
      }
}

// Key range [lo, hi] seen by query i (see ops.h); empty when hi < lo.
inline void attn_key_range(const AttnShape& s, int i, int& lo, int& hi) {
  int p = i + s.Tk - s.Tq;
  hi = std::min(p, s.Tk - 1);
  lo = s.window > 0 ? std::max(0, p - s.window + 1) : 0;
}

// Materializes one row of scores at a time (O(Tk) memory per row; this is the oracle, not fast).
template <class T>
void attention_fwd(T* out, T* lse, const T* q, const T* k, const T* v, const AttnShape& s) {
  const int G = s.Hq / s.Hkv, D = s.D;
  std::vector<T> sc(size_t(s.Tk));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hq; ++h)
      for (int i = 0; i < s.Tq; ++i) {
        int kh = h / G, lo, hi;
        attn_key_range(s, i, lo, hi);
        const T* qi = q + ((size_t(b) * s.Tq + i) * s.Hq + h) * D;
        T* oi = out + ((size_t(b) * s.Tq + i) * s.Hq + h) * D;
        T m = -std::numeric_limits<T>::infinity();
        for (int j = lo; j <= hi; ++j) {
          const T* kj = k + ((size_t(b) * s.Tk + j) * s.Hkv + kh) * D;
          T d = 0;
          for (int c = 0; c < D; ++c) d += qi[c] * kj[c];
          sc[j] = d * T(s.scale);
          m = std::max(m, sc[j]);
        }
        T sum = 0;
        for (int j = lo; j <= hi; ++j) sum += std::exp(sc[j] - m);
        for (int c = 0; c < D; ++c) oi[c] = 0;
        for (int j = lo; j <= hi; ++j) {
          T p = std::exp(sc[j] - m) / sum;
          const T* vj = v + ((size_t(b) * s.Tk + j) * s.Hkv + kh) * D;
          for (int c = 0; c < D; ++c) oi[c] += p * vj[c];
        }
        lse[(size_t(b) * s.Hq + h) * s.Tq + i] = hi >= lo ? m + std::log(sum) : -std::numeric_limits<T>::infinity();
      }
}

// p_j = exp(s_j - lse); dv_j += p_j dout; ds_j = p_j (dout.v_j - dout.out); dq += scale ds_j k_j; dk_j += scale ds_j q
template <class T>
void attention_bwd(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out, const T* lse,
                   const AttnShape& s) {
  const int G = s.Hq / s.Hkv, D = s.D;
  std::fill(dq, dq + size_t(s.B) * s.Tq * s.Hq * D, T(0));
  std::fill(dk, dk + size_t(s.B) * s.Tk * s.Hkv * D, T(0));
  std::fill(dv, dv + size_t(s.B) * s.Tk * s.Hkv * D, T(0));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.Hq; ++h)
      for (int i = 0; i < s.Tq; ++i) {
        int kh = h / G, lo, hi;
        attn_key_range(s, i, lo, hi);
        size_t qoff = ((size_t(b) * s.Tq + i) * s.Hq + h) * D;
        const T *qi = q + qoff, *doi = dout + qoff, *oi = out + qoff;
        T L = lse[(size_t(b) * s.Hq + h) * s.Tq + i];
        T Di = 0;
        for (int c = 0; c < D; ++c) Di += doi[c] * oi[c];
        for (int j = lo; j <= hi; ++j) {
          size_t koff = ((size_t(b) * s.Tk + j) * s.Hkv + kh) * D;
          const T *kj = k + koff, *vj = v + koff;
          T d = 0, dp = 0;
          for (int c = 0; c < D; ++c) d += qi[c] * kj[c], dp += doi[c] * vj[c];
          T p = std::exp(d * T(s.scale) - L);
          T ds = p * (dp - Di) * T(s.scale);
          for (int c = 0; c < D; ++c) {
            dv[koff + c] += p * doi[c];
            dq[qoff + c] += ds * kj[c];
            dk[koff + c] += ds * qi[c];
          }
        }
      }
}

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
void swiglu_fwd(T* out, const T* gate, const T* up, int N, int F) {
  for (size_t i = 0, n = size_t(N) * F; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// out[N,F] = silu(x W_g^T) * (x W_u^T), W = [W_g; W_u] ([2F, I]): linear_fwd over the 2F rows, then
// swiglu_fwd (the oracle of the backends' fused decode op OpsTable::linear_swiglu_fwd)
inline void linear_swiglu_fwd(float* out, const float* x, const float* W, int N, int I, int F) {
  std::vector<float> g(size_t(N) * F), u(size_t(N) * F);
  linear_fwd<float>(g.data(), x, W, nullptr, N, I, F);
  linear_fwd<float>(u.data(), x, W + size_t(F) * I, nullptr, N, I, F);
  swiglu_fwd<float>(out, g.data(), u.data(), N, F);
}
inline void linear_swiglu_fwd_bf16w(float* out, const float* x, const uint16_t* W, int N, int I, int F) {
  std::vector<float> g(size_t(N) * F), u(size_t(N) * F);
  linear_fwd_bf16w(g.data(), x, W, nullptr, N, I, F);
  linear_fwd_bf16w(u.data(), x, W + size_t(F) * I, nullptr, N, I, F);
  swiglu_fwd<float>(out, g.data(), u.data(), N, F);
}

// d silu(g)/dg = sig(g) (1 + g (1 - sig(g)))
template <class T>
void swiglu_bwd(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int N, int F) {
  for (size_t i = 0, n = size_t(N) * F; i < n; ++i) {
    T sg = sigmoid(gate[i]);
    if (dup) dup[i] = dout[i] * gate[i] * sg;
    if (dgate) dgate[i] = dout[i] * up[i] * sg * (T(1) + gate[i] * (T(1) - sg));
  }
}

template <class T>
void xent_fwd(T* loss, T* lse, const T* logits, const int32_t* targets, int N, int V) {
  for (int n = 0; n < N; ++n) {
    const T* z = logits + size_t(n) * V;
    T m = z[0];
    for (int v = 1; v < V; ++v) m = std::max(m, z[v]);
    T sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(z[v] - m);
    lse[n] = m + std::log(sum);
    loss[n] = targets[n] >= 0 ? lse[n] - z[targets[n]] : T(0);
  }
}

template <class T>
void xent_bwd(T* dlogits, const T* logits, const T* lse, const int32_t* targets, const T* g, int N, int V) {
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < V; ++v) {
      size_t i = size_t(n) * V + v;
      T gn = targets[n] >= 0 ? g[n] : T(0);
      dlogits[i] = gn * (std::exp(logits[i] - lse[n]) - (v == targets[n] ? T(1) : T(0)));
    }
}

// ---- elementwise / optimizer ----
template <class T>
void add(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class T>
void mul(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

template <class T>
void strided_copy(T* dst, size_t dst_stride, const T* src, size_t src_stride, size_t rows, size_t width) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < width; ++i) dst[r * dst_stride + i] = src[r * src_stride + i];
}

// x += t, then rmsnorm_fwd: the composition is the oracle
template <class T>
void add_rmsnorm_fwd(T* x, T* out, T* rstd, const T* t, const T* w, int N, int C, T eps) {
  add(x, x, t, size_t(N) * C);
  rmsnorm_fwd(out, rstd, x, w, N, C, eps);
}

template <class T>
void ring_store_kv(T* ring_k, T* ring_v, const T* k, const T* v, const int32_t* pos, int W, size_t width) {
  const size_t slot = size_t(pos[0] % W) * width;
  for (size_t i = 0; i < width; ++i) ring_k[slot + i] = k[i], ring_v[slot + i] = v[i];
}

template <class T>
void scale(T* x, size_t n, float s) {
  for (size_t i = 0; i < n; ++i) x[i] *= T(s);
}

template <class T>
double sum_squares(const T* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}

template <class T>
void adamw(T* p, const T* g, T* m, T* v, const uint8_t* decay, size_t n, const AdamWStep& a) {
  for (size_t i = 0; i < n; ++i) {
    const T gi = g[i] * T(a.grad_scale);
    m[i] = T(a.beta1) * m[i] + T(1 - a.beta1) * gi;
    v[i] = T(a.beta2) * v[i] + T(1 - a.beta2) * gi * gi;
    T mhat = m[i] / T(a.bias_corr1), vhat = v[i] / T(a.bias_corr2);
    T wd = (!decay || decay[i]) ? T(a.weight_decay) : T(0);
    p[i] -= T(a.lr) * (mhat / (std::sqrt(vhat) + T(a.eps)) + wd * p[i]);
  }
}

}  // namespace sr::ref
