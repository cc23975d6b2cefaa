// Optimized CPU versions of the row-wise ops and GEMMs. Every loop is parallel over independent
// outputs with static scheduling, so results do not depend on the thread count's timing
// (bitwise reproducible run to run).
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "ops/ref/ref_ops.h"

namespace sr::cpu {

void embedding_fwd(float* out, const int32_t* ids, const float* table, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) std::memcpy(out + size_t(n) * C, table + size_t(ids[n]) * C, sizeof(float) * C);
}

// Parallel over column blocks so two threads never add into the same row; token order is fixed.
void embedding_bwd(float* dtable, const float* dout, const int32_t* ids, int N, int C) {
  const int CB = 16;
  const int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblk; ++blk) {
    int c0 = blk * CB, c1 = std::min(C, c0 + CB);
    for (int n = 0; n < N; ++n) {
      float* d = dtable + size_t(ids[n]) * C;
      const float* g = dout + size_t(n) * C;
      for (int c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

namespace {
// One row of RMSNorm: o[C] = xr * rsqrt(mean(xr^2) + eps) * w, *r = the rsqrt
inline void rmsnorm_row(float* o, float* r, const float* xr, const float* w, int C, float eps) {
  float ss = 0;
  for (int c = 0; c < C; ++c) ss += xr[c] * xr[c];
  const float rs = 1.0f / std::sqrt(ss / float(C) + eps);
  *r = rs;
  for (int c = 0; c < C; ++c) o[c] = xr[c] * rs * w[c];
}
}  // namespace

void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) rmsnorm_row(out + size_t(n) * C, rstd + n, x + size_t(n) * C, w, C, eps);
}

void add_rmsnorm_fwd(float* x, float* out, float* rstd, const float* t, const float* w, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {  // the row stays in cache between the add and the norm
    float* xr = x + size_t(n) * C;
    const float* tr = t + size_t(n) * C;
    for (int c = 0; c < C; ++c) xr[c] = xr[c] + tr[c];
    rmsnorm_row(out + size_t(n) * C, rstd + n, xr, w, C, eps);
  }
}

void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N,
                 int C, bool add_dx) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
      const float *xr = x + size_t(n) * C, *dy = dout + size_t(n) * C;
      float r = rstd[n], dot = 0;
      for (int c = 0; c < C; ++c) dot += w[c] * dy[c] * xr[c];
      float k = r * r * dot / float(C);
      float* d = dx + size_t(n) * C;
      if (add_dx)
        for (int c = 0; c < C; ++c) d[c] += r * (w[c] * dy[c] - xr[c] * k);
      else
        for (int c = 0; c < C; ++c) d[c] = r * (w[c] * dy[c] - xr[c] * k);
    }
  }
  if (dw) {  // parallel over columns: each column sums its rows in order (deterministic)
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; ++c) {
      float acc = 0;
      for (int n = 0; n < N; ++n) acc += dout[size_t(n) * C + c] * x[size_t(n) * C + c] * rstd[n];
      dw[c] += acc;
    }
  }
}

// out[N,O] = x[N,I] . W[O,I]^T (+ b)
void linear_fwd(float* out, const float* x, const float* W, const float* b, int N, int I, int O) {
  if (N == 0) return;
  if (N <= 4) {  // decode: matrix-vector products; sgemm would repack W on every call
    for (int n = 0; n < N; ++n)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, O, I, 1.0f, W, I, x + size_t(n) * I, 1, 0.0f, out + size_t(n) * O, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, x, I, W, I, 0.0f, out, O);
  }
  if (b) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < O; ++o) out[size_t(n) * O + o] += b[o];
  }
}

// Decode-size products with bf16 weights: half the bytes of fp32, so a small model's weights stay
// in the last-level cache; rows of W split over threads, each dot product vectorized.
void linear_fwd_bf16w(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O) {
  if (N == 0) return;
#pragma omp parallel for schedule(static) if (size_t(O) * I >= 16384)
  for (int o = 0; o < O; ++o) {
    const uint16_t* w = W + size_t(o) * I;
    for (int n = 0; n < N; ++n) {
      const float* xn = x + size_t(n) * I;
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int i = 0; i < I; ++i) acc += xn[i] * bf16_to_f32(w[i]);
      out[size_t(n) * O + o] = acc + (b ? b[o] : 0.0f);
    }
  }
}

// dx[N,I] (+)= dout[N,O] . W[O,I] ; dW[O,I] (+)= dout^T . x ; db[O] += colsum(dout)
void linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I,
                int O, int flags) {
  const float dx_beta = flags & kAddDx ? 1.0f : 0.0f, dW_beta = flags & kSetDW ? 0.0f : 1.0f;
  if (N == 0) {  // no rows: dx has none, dW = 0 when it is set
    if (dW && dW_beta == 0.0f) std::fill(dW, dW + size_t(O) * I, 0.0f);
    return;
  }
  if (dx) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, I, O, 1.0f, dout, O, W, I, dx_beta, dx, I);
  if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, N, 1.0f, dout, O, x, I, dW_beta, dW, I);
  if (db) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < O; ++o) {
      float acc = 0;
      for (int n = 0; n < N; ++n) acc += dout[size_t(n) * O + o];
      db[o] += acc;
    }
  }
}

// cos/sin computed once per (token, pair) and applied to all heads; sign = +1 forward, -1 backward.
static void rope_apply(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta, float sign) {
  const int half = D / 2;
  std::vector<double> inv(half);  // the pairs' frequencies, once per call (a pow each)
  for (int m = 0; m < half; ++m) inv[m] = ref::rope_inv_freq(m, D, theta);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float cs[512], sn[512];
    std::vector<float> big;
    float *c = cs, *s = sn;
    if (half > 512) {
      big.resize(size_t(2) * half);
      c = big.data();
      s = big.data() + half;
    }
    for (int m = 0; m < half; ++m) {
      const double a = double(pos[n]) * inv[m];  // = ref::rope_angle(pos[n], m, D, theta)
      c[m] = float(std::cos(a));
      s[m] = sign * float(std::sin(a));
    }
    for (int h = 0; h < H; ++h) {
      size_t base = (size_t(n) * H + h) * D;
      for (int m = 0; m < half; ++m) {
        float x1 = x[base + m], x2 = x[base + m + half];
        out[base + m] = x1 * c[m] - x2 * s[m];
        out[base + m + half] = x2 * c[m] + x1 * s[m];
      }
    }
  }
}

void rope_fwd(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta) {
  rope_apply(out, x, pos, N, H, D, theta, 1.0f);
}
void rope_bwd(float* dx, const float* dout, const int32_t* pos, int N, int H, int D, float theta) {
  rope_apply(dx, dout, pos, N, H, D, theta, -1.0f);
}

// sigmoid(g) from e^-|g| (exp_nonpositive: a loop of it vectorizes, where std::exp is a libm call
// per element): 1 / (1 + e) for g >= 0, e / (1 + e) below
inline float sigmoid_vec(float g) {
  const float e = exp_nonpositive(-std::fabs(g)), r = 1.0f / (1.0f + e);
  return g >= 0.0f ? r : e * r;
}

void swiglu_fwd(float* out, const float* gate, const float* up, int N, int F) {
  const long n = long(N) * F;
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; ++i) out[i] = gate[i] * sigmoid_vec(gate[i]) * up[i];
}

void swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N, int F) {
  const long n = long(N) * F;
  if (dgate && dup) {  // training: both (one vectorized loop; the one-sided cases below are rare)
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) {
      const float sg = sigmoid_vec(gate[i]);
      dup[i] = dout[i] * gate[i] * sg;
      dgate[i] = dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) {
    const float sg = sigmoid_vec(gate[i]);
    if (dup) dup[i] = dout[i] * gate[i] * sg;
    if (dgate) dgate[i] = dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
  }
}

void xent_fwd(float* loss, float* lse, const float* logits, const int32_t* targets, int N, int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* z = logits + size_t(n) * V;
    float m = z[0];
    for (int v = 1; v < V; ++v) m = z[v] > m ? z[v] : m;
    float sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(z[v] - m);
    lse[n] = m + std::log(sum);
    loss[n] = targets[n] >= 0 ? lse[n] - z[targets[n]] : 0.0f;
  }
}

void xent_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets, const float* g, int N,
              int V) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* z = logits + size_t(n) * V;
    float* d = dlogits + size_t(n) * V;
    if (targets[n] < 0 || g[n] == 0.0f) {
      std::memset(d, 0, sizeof(float) * V);
      continue;
    }
    float gn = g[n], L = lse[n];
    for (int v = 0; v < V; ++v) d[v] = gn * std::exp(z[v] - L);
    d[targets[n]] -= gn;
  }
}

void add(float* out, const float* a, const float* b, size_t n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < long(n); ++i) out[i] = a[i] + b[i];
}

void scale(float* x, size_t n, float s) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < long(n); ++i) x[i] *= s;
}

double sum_squares(const float* x, size_t n) {
  // Fixed-size blocks summed in order: deterministic whatever the thread count.
  const size_t BS = 1 << 14;
  const long nb = long((n + BS - 1) / BS);
  std::vector<double> part(nb, 0.0);
#pragma omp parallel for schedule(static)
  for (long b = 0; b < nb; ++b) {
    double s = 0;
    for (size_t i = size_t(b) * BS, e = std::min(n, size_t(b + 1) * BS); i < e; ++i) s += double(x[i]) * x[i];
    part[b] = s;
  }
  double total = 0;
  for (double p : part) total += p;
  return total;
}

void adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWStep& a) {
  const float b1 = a.beta1, b2 = a.beta2;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < long(n); ++i) {
    const float gi = g[i] * a.grad_scale;
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    float mhat = m[i] / a.bias_corr1, vhat = v[i] / a.bias_corr2;
    float wd = (!decay || decay[i]) ? a.weight_decay : 0.0f;
    p[i] -= a.lr * (mhat / (std::sqrt(vhat) + a.eps) + wd * p[i]);
  }
}

}  // namespace sr::cpu
