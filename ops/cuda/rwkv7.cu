// RWKV-7 layer ops on the GPU (contracts in ops/ops.h, oracles in ops/ref/rwkv7.h and
// ops/ref/generalized_delta_rule.h). All fp32 (standard 3: state, decays, norms, reductions).
//
// Generalized delta rule (the wkv recurrence), token-serial and exact:
//  * forward: the state lives in registers, as in the gated delta rule's dr_fwd_reg_k: blocks of
//    32 state columns x 4 lanes, each lane holding every 4th key row; r, w, a, b, k of kTg tokens
//    staged in shared memory per barrier; u = H^T a and y = H^T r are 4-lane shuffle sums.
//  * backward (Dk <= 128): the same register layout, checkpoints every 32 tokens, each segment's
//    states recomputed and walked backwards; the per-row outputs (dr, dw, da, db, dk) are sums over
//    state columns, reduced in a fixed order (no atomics, deterministic). Larger heads: one block
//    per (batch, head) with the state and its gradient in shared memory, a column phase (sums over
//    key rows: dv, du) and a row phase (sums over value columns).
// Elementwise pieces: one thread per element or per (token, head); parameter gradients are
// per-element contributions summed over rows in fixed 256-row chunks, then in chunk order.
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"
#include "ops/cuda/delta_rule_chunked.h"

namespace sr::cuda::ops {

namespace {
__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
constexpr float kDecayScale = 0.6065306597126334f;  // e^{-1/2}

// ---- column sums in a fixed order: dst[c] += sum_r src[r * cols + c] ----
constexpr int kRowChunk = 256;
__global__ void colsum_partial_k(float* partial, const float* src, int rows, int cols) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x, chunk = blockIdx.x;
  if (c >= cols) return;
  float acc = 0.0f;
  for (int r = chunk * kRowChunk; r < min(rows, (chunk + 1) * kRowChunk); ++r) acc += src[size_t(r) * cols + c];
  partial[size_t(chunk) * cols + c] = acc;
}
__global__ void colsum_finish_k(float* dst, const float* partial, int chunks, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int k = 0; k < chunks; ++k) s += partial[size_t(k) * cols + c];
  dst[c] += s;
}
void colsum_add(float* dst, const float* src, int rows, int cols) {
  if (!dst || rows == 0 || cols == 0) return;
  const int chunks = (rows + kRowChunk - 1) / kRowChunk;
  float* partial = static_cast<float*>(device_alloc(size_t(chunks) * cols * sizeof(float)));
  colsum_partial_k<<<dim3(chunks, (cols + 127) / 128), 128, 0, stream()>>>(partial, src, rows, cols);
  colsum_finish_k<<<blocks_for(size_t(cols), 128), 128, 0, stream()>>>(dst, partial, chunks, cols);
  SR_CUDA_LAUNCHED("colsum_add");
  device_free(partial);
}

// ---- LayerNorm per group: one block per (row, group) ----
__global__ void ln_fwd_k(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int G,
                         int D, float eps) {
  __shared__ float red[32];
  const size_t r = blockIdx.x, c0 = (r % G) * D;
  const float* xr = x + r * D;
  float s = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) s += xr[i];
  const float m = block_sum(s, red) / D;
  float v = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) v += (xr[i] - m) * (xr[i] - m);
  const float rs = rsqrtf(block_sum(v, red) / D + eps);
  if (threadIdx.x == 0) mean[r] = m, rstd[r] = rs;
  for (int i = threadIdx.x; i < D; i += blockDim.x) out[r * D + i] = (xr[i] - m) * rs * w[c0 + i] + b[c0 + i];
}
// dx per (row, group); contributions dy*xhat (-> dw) and dy (-> db) stored per element
__global__ void ln_bwd_k(float* dx, float* cw, float* cb, const float* dout, const float* x, const float* w,
                         const float* mean, const float* rstd, int G, int D) {
  __shared__ float red[32];
  const size_t r = blockIdx.x, c0 = (r % G) * D;
  const float m = mean[r], rs = rstd[r];
  float s1 = 0.0f, s2 = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const float xh = (x[r * D + i] - m) * rs, dy = dout[r * D + i], dxh = dy * w[c0 + i];
    s1 += dxh, s2 += dxh * xh;
    cw[r * D + i] = dy * xh, cb[r * D + i] = dy;
  }
  s1 = block_sum(s1, red) / D;
  s2 = block_sum(s2, red) / D;
  if (dx)
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
      const float xh = (x[r * D + i] - m) * rs;
      dx[r * D + i] = rs * (dout[r * D + i] * w[c0 + i] - s1 - xh * s2);
    }
}

// ---- token shift ----
__device__ __forceinline__ float shifted(const float* x, const float* prev, int n, int T, int C, int c) {
  const int t = n % T;
  if (t > 0) return x[size_t(n - 1) * C + c];
  return prev ? prev[size_t(n / T) * C + c] : 0.0f;
}
__global__ void shift_fwd_k(float* out, const float* x, const float* prev, const float* mu, int N, int T, int C,
                            int M) {
  const size_t total = size_t(M) * N * C;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
    const int c = int(e % C), n = int((e / C) % N), m = int(e / (size_t(C) * N));
    const float xn = x[size_t(n) * C + c];
    out[e] = xn + (shifted(x, prev, n, T, C, c) - xn) * mu[size_t(m) * C + c];
  }
}
// dx (one thread per element of x), and dmu contributions [M, N, C]
__global__ void shift_bwd_k(float* dx, float* cmu, const float* dout, const float* x, const float* prev,
                            const float* mu, int N, int T, int C, int M) {
  const size_t total = size_t(N) * C;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
    const int c = int(e % C), n = int(e / C), t = n % T;
    const float xn = x[e], d = shifted(x, prev, n, T, C, c) - xn;
    float g = 0.0f;
    for (int m = 0; m < M; ++m) {
      const size_t im = size_t(m) * C + c, o = size_t(m) * N * C + e;
      g += dout[o] * (1.0f - mu[im]);
      if (t + 1 < T) g += dout[o + C] * mu[im];
      if (cmu) cmu[o] = dout[o] * d;
    }
    dx[e] = g;
  }
}

// ---- activations: 0 tanh, 1 sigmoid, 2 relu^2 ----
__global__ void act_fwd_k(float* out, const float* x, size_t n, int kind) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    out[i] = kind == 0 ? tanhf(v) : kind == 1 ? sigm(v) : (v > 0.0f ? v * v : 0.0f);
  }
}
__global__ void act_bwd_k(float* dx, const float* dout, const float* x, size_t n, int kind) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    float d;
    if (kind == 0) {
      const float y = tanhf(v);
      d = 1.0f - y * y;
    } else if (kind == 1) {
      const float s = sigm(v);
      d = s * (1.0f - s);
    } else {
      d = v > 0.0f ? 2.0f * v : 0.0f;
    }
    dx[i] = dout[i] * d;
  }
}

// ---- time-mix prelude and output: one thread per (token, head) ----
__global__ void prep_fwd_k(float* w, float* kmod, float* vmod, float* alpha, float* beta, float* rnorm, const float* k,
                           const float* v, const float* wl, const float* al, const float* vl, const float* vfirst,
                           const float* kkw, const float* ka, int N, int H, int D) {
  const size_t id = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= size_t(N) * H) return;
  const int h = int(id % H);
  const size_t o = id * D;
  float ss = 0.0f;
  for (int i = 0; i < D; ++i) {
    const float kin = k[o + i] * kkw[h * D + i];
    ss += kin * kin;
  }
  const float rn = 1.0f / fmaxf(sqrtf(ss), 1e-12f);
  rnorm[id] = rn;
  for (int i = 0; i < D; ++i) {
    const size_t j = o + i;
    const int c = h * D + i;
    w[j] = expf(-kDecayScale * sigm(wl[j]));
    const float a = sigm(al[j]), kk = k[j] * kkw[c] * rn;
    kmod[j] = k[j] * (1.0f + (a - 1.0f) * ka[c]);
    alpha[j] = -kk, beta[j] = kk * a;
    vmod[j] = vfirst ? v[j] + (vfirst[j] - v[j]) * sigm(vl[j]) : v[j];
  }
}
// ckkw, cka: per-element contributions to dkkw, dka
__global__ void prep_bwd_k(float* dk, float* dv, float* dwl, float* dal, float* dvl, float* dvfirst, float* ckkw,
                           float* cka, const float* dw, const float* dkmod, const float* dvmod, const float* dalpha,
                           const float* dbeta, const float* k, const float* v, const float* wl, const float* al,
                           const float* vl, const float* vfirst, const float* kkw, const float* ka, const float* rnorm,
                           int N, int H, int D) {
  const size_t id = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= size_t(N) * H) return;
  const int h = int(id % H);
  const size_t o = id * D;
  const float rn = rnorm[id];
  float dot = 0.0f;
  for (int i = 0; i < D; ++i) {
    const size_t j = o + i;
    const float a = sigm(al[j]), kk = k[j] * kkw[h * D + i] * rn;
    dot += kk * (-dalpha[j] + dbeta[j] * a);
  }
  for (int i = 0; i < D; ++i) {
    const size_t j = o + i;
    const int c = h * D + i;
    const float sw = sigm(wl[j]), wv = expf(-kDecayScale * sw);
    dwl[j] = dw[j] * wv * -kDecayScale * sw * (1.0f - sw);
    const float a = sigm(al[j]), kk = k[j] * kkw[c] * rn;
    const float dkk = -dalpha[j] + dbeta[j] * a;
    dal[j] = (dbeta[j] * kk + dkmod[j] * k[j] * ka[c]) * a * (1.0f - a);
    cka[j] = dkmod[j] * k[j] * (a - 1.0f);
    const float dkin = 1.0f / rn > 1e-12f ? rn * (dkk - kk * dot) : rn * dkk;
    ckkw[j] = dkin * k[j];
    dk[j] = dkmod[j] * (1.0f + (a - 1.0f) * ka[c]) + dkin * kkw[c];
    if (vfirst) {
      const float sv = sigm(vl[j]);
      dv[j] = dvmod[j] * (1.0f - sv);
      if (dvfirst) dvfirst[j] += dvmod[j] * sv;  // one thread per element: no race
      if (dvl) dvl[j] = dvmod[j] * (vfirst[j] - v[j]) * sv * (1.0f - sv);
    } else {
      dv[j] = dvmod[j];
    }
  }
}
__global__ void out_fwd_k(float* out, const float* yn, const float* r, const float* kmod, const float* v,
                          const float* rk, const float* g, int N, int H, int D) {
  const size_t id = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= size_t(N) * H) return;
  const int h = int(id % H);
  const size_t o = id * D;
  float sc = 0.0f;
  for (int i = 0; i < D; ++i) sc += r[o + i] * kmod[o + i] * rk[h * D + i];
  for (int i = 0; i < D; ++i) out[o + i] = (yn[o + i] + sc * v[o + i]) * g[o + i];
}
__global__ void out_bwd_k(float* dyn, float* dr, float* dkmod, float* dv, float* crk, float* dg, const float* dout,
                          const float* yn, const float* r, const float* kmod, const float* v, const float* rk,
                          const float* g, int N, int H, int D) {
  const size_t id = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= size_t(N) * H) return;
  const int h = int(id % H);
  const size_t o = id * D;
  float sc = 0.0f, dsc = 0.0f;
  for (int i = 0; i < D; ++i) sc += r[o + i] * kmod[o + i] * rk[h * D + i];
  for (int i = 0; i < D; ++i) {
    const float dz = dout[o + i] * g[o + i];
    dg[o + i] = dout[o + i] * (yn[o + i] + sc * v[o + i]);
    dyn[o + i] = dz;
    dv[o + i] = dz * sc;
    dsc += dz * v[o + i];
  }
  for (int i = 0; i < D; ++i) {
    const float rki = rk[h * D + i];
    dr[o + i] = dsc * kmod[o + i] * rki;
    dkmod[o + i] = dsc * r[o + i] * rki;
    crk[o + i] = dsc * r[o + i] * kmod[o + i];
  }
}

// ---- generalized delta rule ----
struct GdrIdx {
  GdrShape s;
  __device__ size_t k(int b, int t, int h) const { return ((size_t(b) * s.T + t) * s.H + h) * s.Dk; }
  __device__ size_t v(int b, int t, int h) const { return ((size_t(b) * s.T + t) * s.H + h) * s.Dv; }
};

// grid (B*H, ceil(Dv/32)), 128 threads = 32 columns x 4 lanes (rows p, p+4, ... in registers).
constexpr int kTg = 16;
template <int DKMAX>
__global__ void __launch_bounds__(128) gdr_fwd_reg_k(float* y, float* state, const float* r, const float* w,
                                                     const float* a, const float* bb, const float* k, const float* v,
                                                     GdrShape s) {
  constexpr int R = DKMAX / 4;
  __shared__ float sr[kTg][DKMAX], sw[kTg][DKMAX], sa[kTg][DKMAX], sb[kTg][DKMAX], sk[kTg][DKMAX], sv[kTg][32];
  const int Dk = s.Dk, Dv = s.Dv, b = blockIdx.x / s.H, h = blockIdx.x % s.H;
  const int p = threadIdx.x % 4, jl = threadIdx.x / 4, j = blockIdx.y * 32 + jl;
  const bool col = j < Dv;
  float* st = state + size_t(blockIdx.x) * Dk * Dv;
  float hr[R];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int i = p + 4 * q;
    hr[q] = (col && i < Dk) ? st[size_t(i) * Dv + j] : 0.0f;
  }
  const GdrIdx ix{s};
  for (int c0 = 0; c0 < s.T; c0 += kTg) {
    const int n = min(kTg, s.T - c0);
    __syncthreads();
    for (int e = threadIdx.x; e < n * DKMAX; e += blockDim.x) {
      const int t = e / DKMAX, i = e % DKMAX;
      const size_t o = ix.k(b, c0 + t, h) + i;
      const bool in = i < Dk;
      sr[t][i] = in ? r[o] : 0.0f, sw[t][i] = in ? w[o] : 0.0f, sa[t][i] = in ? a[o] : 0.0f;
      sb[t][i] = in ? bb[o] : 0.0f, sk[t][i] = in ? k[o] : 0.0f;
    }
    for (int e = threadIdx.x; e < n * 32; e += blockDim.x) {
      const int t = e / 32, jj = blockIdx.y * 32 + e % 32;
      sv[t][e % 32] = jj < Dv ? v[ix.v(b, c0 + t, h) + jj] : 0.0f;
    }
    __syncthreads();
    for (int t = 0; t < n; ++t) {
      float u = 0.0f;
#pragma unroll
      for (int q = 0; q < R; ++q) u += hr[q] * sa[t][p + 4 * q];
      u += __shfl_xor_sync(0xffffffffu, u, 1);
      u += __shfl_xor_sync(0xffffffffu, u, 2);
      const float vj = sv[t][jl];
      float o = 0.0f;
#pragma unroll
      for (int q = 0; q < R; ++q) {
        const int i = p + 4 * q;
        hr[q] = sw[t][i] * hr[q] + sb[t][i] * u + sk[t][i] * vj;
        o += hr[q] * sr[t][i];
      }
      o += __shfl_xor_sync(0xffffffffu, o, 1);
      o += __shfl_xor_sync(0xffffffffu, o, 2);
      if (col && p == 0) y[ix.v(b, c0 + t, h) + j] = o;
    }
  }
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int i = p + 4 * q;
    if (col && i < Dk) st[size_t(i) * Dv + j] = hr[q];
  }
}

// Loads token t's r, w, a, b, k rows (Dk each) into shared memory, then a barrier.
__device__ void load_rwabk(float* dst, const float* r, const float* w, const float* a, const float* b, const float* k,
                           size_t off, int Dk) {
  for (int i = threadIdx.x; i < Dk; i += blockDim.x) {
    dst[i] = r[off + i], dst[Dk + i] = w[off + i], dst[2 * Dk + i] = a[off + i];
    dst[3 * Dk + i] = b[off + i], dst[4 * Dk + i] = k[off + i];
  }
  __syncthreads();
}
// One token on column j of H (row stride ld); returns u_j = (H_prev^T a)_j.
__device__ __forceinline__ float gdr_step_col(float* H, int ld, int j, const float* sv5, float vj, int Dk) {
  const float *sw = sv5 + Dk, *sa = sv5 + 2 * Dk, *sb = sv5 + 3 * Dk, *sk = sv5 + 4 * Dk;
  float u = 0.0f;
  for (int i = 0; i < Dk; ++i) u += H[i * ld + j] * sa[i];
  for (int i = 0; i < Dk; ++i) H[i * ld + j] = sw[i] * H[i * ld + j] + sb[i] * u + sk[i] * vj;
  return u;
}

// Forward for Dk > 128: grid B*H, one thread per state column, state in shared memory [Dk][Dv];
// smem also holds r w a b k [Dk].
__global__ void gdr_fwd_k(float* y, float* state, const float* r, const float* w, const float* a, const float* b,
                          const float* k, const float* v, GdrShape s) {
  extern __shared__ float sm[];
  const int Dk = s.Dk, Dv = s.Dv, bb = blockIdx.x / s.H, h = blockIdx.x % s.H, j = threadIdx.x;
  float *H = sm, *s5 = H + Dk * Dv;
  float* st = state + size_t(blockIdx.x) * Dk * Dv;
  for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) H[e] = st[e];
  const GdrIdx ix{s};
  for (int t = 0; t < s.T; ++t) {
    __syncthreads();  // the previous token is done with s5 (and H is loaded)
    load_rwabk(s5, r, w, a, b, k, ix.k(bb, t, h), Dk);
    if (j < Dv) {
      gdr_step_col(H, Dv, j, s5, v[ix.v(bb, t, h) + j], Dk);
      float o = 0.0f;
      for (int i = 0; i < Dk; ++i) o += H[i * Dv + j] * s5[i];
      y[ix.v(bb, t, h) + j] = o;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) st[e] = H[e];
}

// grid B*H, block NT >= max(Dk, Dv) (multiple of 32). smem: Hp, dH [Dk][Dv+1]; r w a b k [Dk];
// dy, u, v, du [Dv]. Scratch per block: ckpt [nseg][Dk*Dv], seg [C][Dk*Dv].
__global__ void gdr_bwd_k(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0,
                          const float* dy, const float* dstate_in, const float* r, const float* w, const float* a,
                          const float* b, const float* k, const float* v, const float* state0, float* ckpt,
                          float* segbuf, GdrShape s, int C) {
  extern __shared__ float sm[];
  const int Dk = s.Dk, Dv = s.Dv, ld = Dv + 1, S = Dk * Dv;
  const int bb = blockIdx.x / s.H, h = blockIdx.x % s.H;
  float *Hp = sm, *dH = Hp + Dk * ld, *s5 = dH + Dk * ld, *sdy = s5 + 5 * Dk, *su = sdy + Dv, *svv = su + Dv,
        *sdu = svv + Dv;
  const float *sr = s5, *sw = s5 + Dk, *sa = s5 + 2 * Dk, *sb = s5 + 3 * Dk, *sk = s5 + 4 * Dk;
  const int tid = threadIdx.x, j = tid;
  const int nseg = (s.T + C - 1) / C;
  float* ck = ckpt + size_t(blockIdx.x) * nseg * S;
  float* sg = segbuf + size_t(blockIdx.x) * C * S;
  const GdrIdx ix{s};
  const size_t so = size_t(blockIdx.x) * S;
  // Phase 1: forward, checkpoint the state at the start of every segment.
  for (int e = tid; e < S; e += blockDim.x) Hp[(e / Dv) * ld + e % Dv] = state0[so + e];
  for (int t = 0; t < s.T; ++t) {
    __syncthreads();
    if (t % C == 0)
      for (int e = tid; e < S; e += blockDim.x) ck[size_t(t / C) * S + e] = Hp[(e / Dv) * ld + e % Dv];
    load_rwabk(s5, r, w, a, b, k, ix.k(bb, t, h), Dk);
    if (j < Dv) gdr_step_col(Hp, ld, j, s5, v[ix.v(bb, t, h) + j], Dk);
  }
  __syncthreads();
  for (int e = tid; e < S; e += blockDim.x) dH[(e / Dv) * ld + e % Dv] = dstate_in ? dstate_in[so + e] : 0.0f;
  // Phase 2: segments from the last.
  for (int seg = nseg - 1; seg >= 0; --seg) {
    const int t0 = seg * C, t1 = min(s.T, t0 + C);
    __syncthreads();
    for (int e = tid; e < S; e += blockDim.x) Hp[(e / Dv) * ld + e % Dv] = ck[size_t(seg) * S + e];
    for (int t = t0; t < t1; ++t) {  // the state before each token of the segment
      __syncthreads();
      for (int e = tid; e < S; e += blockDim.x) sg[size_t(t - t0) * S + e] = Hp[(e / Dv) * ld + e % Dv];
      load_rwabk(s5, r, w, a, b, k, ix.k(bb, t, h), Dk);
      if (j < Dv) gdr_step_col(Hp, ld, j, s5, v[ix.v(bb, t, h) + j], Dk);
    }
    for (int t = t1 - 1; t >= t0; --t) {
      __syncthreads();
      const float* hprev = sg + size_t(t - t0) * S;
      for (int e = tid; e < S; e += blockDim.x) Hp[(e / Dv) * ld + e % Dv] = hprev[e];
      load_rwabk(s5, r, w, a, b, k, ix.k(bb, t, h), Dk);  // (barrier: Hp complete)
      // column phase: u = Hp^T a; dH += r dy^T; dv = dH^T k; du = dH^T b
      if (j < Dv) {
        const float dyj = dy[ix.v(bb, t, h) + j];
        float u = 0.0f, dvj = 0.0f, duj = 0.0f;
        for (int i = 0; i < Dk; ++i) {
          u += Hp[i * ld + j] * sa[i];
          const float x = dH[i * ld + j] + sr[i] * dyj;
          dH[i * ld + j] = x;
          dvj += x * sk[i], duj += x * sb[i];
        }
        dv[ix.v(bb, t, h) + j] = dvj;
        sdy[j] = dyj, su[j] = u, svv[j] = v[ix.v(bb, t, h) + j], sdu[j] = duj;
      }
      __syncthreads();
      // row phase: dr = H_t dy; dk = dH v; db = dH u; dw = <dH, Hp> per row; da = Hp du
      if (tid < Dk) {
        const int i = tid;
        float ar = 0.0f, ak = 0.0f, ab = 0.0f, aw = 0.0f, aa = 0.0f;
        for (int c = 0; c < Dv; ++c) {
          const float hp = Hp[i * ld + c], g = dH[i * ld + c];
          ar += (sw[i] * hp + sb[i] * su[c] + sk[i] * svv[c]) * sdy[c];
          ak += g * svv[c], ab += g * su[c], aw += g * hp, aa += hp * sdu[c];
        }
        const size_t o = ix.k(bb, t, h) + i;
        dr[o] = ar, dk[o] = ak, db[o] = ab, dw[o] = aw, da[o] = aa;
      }
      __syncthreads();
      // column phase 2: d(H_{t-1}) = diag(w) dH + a du^T
      if (j < Dv)
        for (int i = 0; i < Dk; ++i) dH[i * ld + j] = sw[i] * dH[i * ld + j] + sa[i] * sdu[j];
    }
  }
  __syncthreads();
  for (int e = tid; e < S; e += blockDim.x) dstate0[so + e] = dH[(e / Dv) * ld + e % Dv];
}

// Register-resident backward for Dk <= DKMAX (the lane layout of gdr_fwd_reg_k: grid (B*H, G =
// ceil(Dv/32)), 4 lanes per column, rows p, p+4, ... of H and dH in registers). A state column's
// recurrence only involves that column (u_j = (H^T a)_j), so column groups are independent blocks;
// the five per-row outputs (dr, dw, da, db, dk) are sums over columns: warp shuffles over the
// warp's 8 columns, one double-buffered shared-memory slot per token for the 4 warps, and
// gdr_sum_partials_k adds the column groups in a fixed order (deterministic, no atomics).
// Checkpoints every kTb tokens (thread-private layout); a segment's inputs are staged once.
// part: [5][G][B*T*H][Dk] (dr dw da db dk); ckpt: [blocks][nseg][R][128]; segbuf: [blocks][kTb][R][128].
constexpr int kTb = 32;
template <int DKMAX>
__global__ void __launch_bounds__(128) gdr_bwd_reg_k(float* part, float* dv, float* dstate0, const float* dy,
                                                     const float* dstate_in, const float* r, const float* w,
                                                     const float* a, const float* bb, const float* k, const float* v,
                                                     const float* state0, float* ckpt, float* segbuf, GdrShape s) {
  constexpr int R = DKMAX / 4, kRed = 5 * 4 * DKMAX;
  extern __shared__ float sm[];
  float* s5 = sm;                     // [5][kTb][DKMAX]: r w a b k
  float* sv = s5 + 5 * kTb * DKMAX;   // [kTb][32]
  float* sdy = sv + kTb * 32;         // [kTb][32]
  float* red = sdy + kTb * 32;        // [2][5][4][DKMAX]
  const int Dk = s.Dk, Dv = s.Dv, b = blockIdx.x / s.H, h = blockIdx.x % s.H;
  const int tid = threadIdx.x, p = tid % 4, jl = tid / 4, j = blockIdx.y * 32 + jl, lane = tid % 32, warp = tid / 32;
  const bool col = j < Dv;
  const int nseg = (s.T + kTb - 1) / kTb, blk = blockIdx.y * gridDim.x + blockIdx.x;
  const size_t BTH = size_t(s.B) * s.T * s.H, G = gridDim.y;
  float* ck = ckpt + size_t(blk) * nseg * R * 128;
  float* sg = segbuf + size_t(blk) * kTb * R * 128;
  const GdrIdx ix{s};
  const float* st0 = state0 + size_t(blockIdx.x) * Dk * Dv;
  float hr[R], dh[R];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int i = p + 4 * q;
    hr[q] = (col && i < Dk) ? st0[size_t(i) * Dv + j] : 0.0f;
    dh[q] = (col && i < Dk && dstate_in) ? dstate_in[size_t(blockIdx.x) * Dk * Dv + size_t(i) * Dv + j] : 0.0f;
  }
  auto stage = [&](int c0, int n, bool with_dy) {
    __syncthreads();
    for (int e = tid; e < n * DKMAX; e += 128) {
      const int t = e / DKMAX, i = e % DKMAX;
      const size_t o = ix.k(b, c0 + t, h) + i;
      const bool in = i < Dk;
      s5[0 * kTb * DKMAX + e] = in ? r[o] : 0.0f;
      s5[1 * kTb * DKMAX + e] = in ? w[o] : 0.0f;
      s5[2 * kTb * DKMAX + e] = in ? a[o] : 0.0f;
      s5[3 * kTb * DKMAX + e] = in ? bb[o] : 0.0f;
      s5[4 * kTb * DKMAX + e] = in ? k[o] : 0.0f;
    }
    for (int e = tid; e < n * 32; e += 128) {
      const int t = e / 32, jj = blockIdx.y * 32 + e % 32;
      const bool in = jj < Dv;
      sv[e] = in ? v[ix.v(b, c0 + t, h) + jj] : 0.0f;
      if (with_dy) sdy[e] = in ? dy[ix.v(b, c0 + t, h) + jj] : 0.0f;
    }
    __syncthreads();
  };
  auto at = [&](int f, int t, int i) { return s5[(f * kTb + t) * DKMAX + i]; };
  auto step = [&](int t) {  // hr: state before token t -> after it
    float u = 0.0f;
#pragma unroll
    for (int q = 0; q < R; ++q) u += hr[q] * at(2, t, p + 4 * q);
    u += __shfl_xor_sync(0xffffffffu, u, 1);
    u += __shfl_xor_sync(0xffffffffu, u, 2);
    const float vj = sv[t * 32 + jl];
#pragma unroll
    for (int q = 0; q < R; ++q) {
      const int i = p + 4 * q;
      hr[q] = at(1, t, i) * hr[q] + at(3, t, i) * u + at(4, t, i) * vj;
    }
  };
  for (int seg = 0; seg < nseg; ++seg) {  // Phase 1: checkpoints at segment starts
    const int c0 = seg * kTb, n = min(kTb, s.T - c0);
#pragma unroll
    for (int q = 0; q < R; ++q) ck[(size_t(seg) * R + q) * 128 + tid] = hr[q];
    stage(c0, n, false);
    for (int t = 0; t < n; ++t) step(t);
  }
  int parity = 0;
  for (int seg = nseg - 1; seg >= 0; --seg) {  // Phase 2: segments from the last
    const int c0 = seg * kTb, n = min(kTb, s.T - c0);
#pragma unroll
    for (int q = 0; q < R; ++q) hr[q] = ck[(size_t(seg) * R + q) * 128 + tid];
    stage(c0, n, true);
    for (int t = 0; t < n; ++t) {
#pragma unroll
      for (int q = 0; q < R; ++q) sg[(size_t(t) * R + q) * 128 + tid] = hr[q];
      step(t);
    }
    for (int t = n - 1; t >= 0; --t) {
      const float vj = sv[t * 32 + jl], dyj = sdy[t * 32 + jl];
      float u = 0.0f, dvj = 0.0f, duj = 0.0f;
#pragma unroll
      for (int q = 0; q < R; ++q) {
        const int i = p + 4 * q;
        hr[q] = sg[(size_t(t) * R + q) * 128 + tid];  // H_{t-1}
        u += hr[q] * at(2, t, i);
        dh[q] += at(0, t, i) * dyj;  // dH_t += r dy^T
        dvj += dh[q] * at(4, t, i);
        duj += dh[q] * at(3, t, i);
      }
      for (int o = 1; o < 4; o <<= 1) {
        u += __shfl_xor_sync(0xffffffffu, u, o);
        dvj += __shfl_xor_sync(0xffffffffu, dvj, o);
        duj += __shfl_xor_sync(0xffffffffu, duj, o);
      }
      if (col && p == 0) dv[ix.v(b, c0 + t, h) + j] = dvj;
      float* rd = red + parity * kRed;
#pragma unroll
      for (int q = 0; q < R; ++q) {
        const int i = p + 4 * q;
        const float wi = at(1, t, i), ai = at(2, t, i), bi = at(3, t, i), ki = at(4, t, i);
        float x[5] = {(wi * hr[q] + bi * u + ki * vj) * dyj,  // dr: H_t dy
                      dh[q] * hr[q],                          // dw: <dH, H_{t-1}> per row
                      hr[q] * duj,                            // da: H_{t-1} du
                      dh[q] * u,                              // db: dH u
                      dh[q] * vj};                            // dk: dH v
        if (!col) x[0] = x[1] = x[2] = x[3] = x[4] = 0.0f;
#pragma unroll
        for (int f = 0; f < 5; ++f) {
          for (int o = 4; o < 32; o <<= 1) x[f] += __shfl_xor_sync(0xffffffffu, x[f], o);
          if (lane < 4) rd[(f * 4 + warp) * DKMAX + i] = x[f];
        }
        dh[q] = wi * dh[q] + ai * duj;  // d(H_{t-1}) = diag(w) dH + a du^T
      }
      __syncthreads();
      const size_t row = (size_t(b) * s.T + c0 + t) * s.H + h;
      for (int e = tid; e < 5 * Dk; e += 128) {
        const int f = e / Dk, i = e % Dk;
        const float* rf = rd + f * 4 * DKMAX;
        part[((size_t(f) * G + blockIdx.y) * BTH + row) * Dk + i] =
            ((rf[i] + rf[DKMAX + i]) + rf[2 * DKMAX + i]) + rf[3 * DKMAX + i];
      }
      parity ^= 1;
    }
  }
  float* ds0 = dstate0 + size_t(blockIdx.x) * Dk * Dv;
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int i = p + 4 * q;
    if (col && i < Dk) ds0[size_t(i) * Dv + j] = dh[q];
  }
}
// out_f[row, i] = sum over column groups of part[f][g][row][i], f = dr dw da db dk
__global__ void gdr_sum_partials_k(float* dr, float* dw, float* da, float* db, float* dk, const float* part, size_t n,
                                   int G) {
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < 5 * n; e += size_t(gridDim.x) * blockDim.x) {
    const size_t f = e / n, x = e % n;
    float acc = 0.0f;
    for (int g = 0; g < G; ++g) acc += part[(f * G + g) * n + x];
    float* out[5] = {dr, dw, da, db, dk};
    out[f][x] = acc;
  }
}

template <int DKMAX>
void launch_gdr_bwd_reg(float* part, float* dv, float* dstate0, const float* dy, const float* dstate_in, const float* r,
                        const float* w, const float* a, const float* b, const float* k, const float* v,
                        const float* state0, float* ckpt, float* segbuf, const GdrShape& s, int G) {
  const size_t smem = (5 * size_t(kTb) * DKMAX + 2 * kTb * 32 + 2 * 5 * 4 * DKMAX) * sizeof(float);
  SR_CUDA(cudaFuncSetAttribute(gdr_bwd_reg_k<DKMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  gdr_bwd_reg_k<DKMAX><<<dim3(s.B * s.H, G), 128, smem, stream()>>>(part, dv, dstate0, dy, dstate_in, r, w, a, b, k, v,
                                                                    state0, ckpt, segbuf, s);
}

int round32(int n) { return (n + 31) / 32 * 32; }
size_t gdr_bwd_smem(const GdrShape& s) {
  return (2 * size_t(s.Dk) * (s.Dv + 1) + 5 * size_t(s.Dk) + 4 * size_t(s.Dv)) * sizeof(float);
}
}  // namespace

void layernorm_fwd(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N, int G,
                   int D, float eps) {
  if (N && G) ln_fwd_k<<<unsigned(N) * G, D >= 128 ? 128 : 64, 0, stream()>>>(out, mean, rstd, x, w, b, G, D, eps);
  SR_CUDA_LAUNCHED("layernorm_fwd");
}
void layernorm_bwd(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                   const float* mean, const float* rstd, int N, int G, int D) {
  if (!N || !G) return;
  const size_t n = size_t(N) * G * D;
  float* c = static_cast<float*>(device_alloc(2 * n * sizeof(float)));
  ln_bwd_k<<<unsigned(N) * G, D >= 128 ? 128 : 64, 0, stream()>>>(dx, c, c + n, dout, x, w, mean, rstd, G, D);
  SR_CUDA_LAUNCHED("layernorm_bwd");
  colsum_add(dw, c, N, G * D);
  colsum_add(db, c + n, N, G * D);
  device_free(c);
}
void token_shift_fwd(float* out, const float* x, const float* prev, const float* mu, int B, int T, int C, int M) {
  const size_t n = size_t(M) * B * T * C;
  if (n) shift_fwd_k<<<blocks_for(n, 256), 256, 0, stream()>>>(out, x, prev, mu, B * T, T, C, M);
  SR_CUDA_LAUNCHED("token_shift_fwd");
}
void token_shift_bwd(float* dx, float* dmu, const float* dout, const float* x, const float* prev, const float* mu,
                     int B, int T, int C, int M) {
  const int N = B * T;
  if (!N) return;
  const size_t n = size_t(M) * N * C;
  float* c = dmu ? static_cast<float*>(device_alloc(n * sizeof(float))) : nullptr;
  shift_bwd_k<<<blocks_for(size_t(N) * C, 256), 256, 0, stream()>>>(dx, c, dout, x, prev, mu, N, T, C, M);
  SR_CUDA_LAUNCHED("token_shift_bwd");
  if (c) {
    for (int m = 0; m < M; ++m) colsum_add(dmu + size_t(m) * C, c + size_t(m) * N * C, N, C);
    device_free(c);
  }
}
void act_fwd(float* out, const float* x, size_t n, int kind) {
  if (n) act_fwd_k<<<blocks_for(n, 256), 256, 0, stream()>>>(out, x, n, kind);
  SR_CUDA_LAUNCHED("act_fwd");
}
void act_bwd(float* dx, const float* dout, const float* x, size_t n, int kind) {
  if (n) act_bwd_k<<<blocks_for(n, 256), 256, 0, stream()>>>(dx, dout, x, n, kind);
  SR_CUDA_LAUNCHED("act_bwd");
}
void rwkv7_prep_fwd(float* w, float* kmod, float* vmod, float* alpha, float* beta, float* rnorm, const float* k,
                    const float* v, const float* wl, const float* al, const float* vl, const float* vfirst,
                    const float* kkw, const float* ka, int N, int H, int D) {
  const size_t n = size_t(N) * H;
  if (n)
    prep_fwd_k<<<blocks_for(n, 128), 128, 0, stream()>>>(w, kmod, vmod, alpha, beta, rnorm, k, v, wl, al, vl, vfirst,
                                                          kkw, ka, N, H, D);
  SR_CUDA_LAUNCHED("rwkv7_prep_fwd");
}
void rwkv7_prep_bwd(float* dk, float* dv, float* dwl, float* dal, float* dvl, float* dvfirst, float* dkkw, float* dka,
                    const float* dw, const float* dkmod, const float* dvmod, const float* dalpha, const float* dbeta,
                    const float* k, const float* v, const float* wl, const float* al, const float* vl,
                    const float* vfirst, const float* kkw, const float* ka, const float* rnorm, int N, int H, int D) {
  const size_t n = size_t(N) * H * D;
  if (!n) return;
  float* c = static_cast<float*>(device_alloc(2 * n * sizeof(float)));
  prep_bwd_k<<<blocks_for(size_t(N) * H, 128), 128, 0, stream()>>>(dk, dv, dwl, dal, dvl, dvfirst, c, c + n, dw, dkmod,
                                                                    dvmod, dalpha, dbeta, k, v, wl, al, vl, vfirst, kkw,
                                                                    ka, rnorm, N, H, D);
  SR_CUDA_LAUNCHED("rwkv7_prep_bwd");
  colsum_add(dkkw, c, N, H * D);
  colsum_add(dka, c + n, N, H * D);
  device_free(c);
}
void rwkv7_out_fwd(float* out, const float* yn, const float* r, const float* kmod, const float* v, const float* rk,
                   const float* g, int N, int H, int D) {
  const size_t n = size_t(N) * H;
  if (n) out_fwd_k<<<blocks_for(n, 128), 128, 0, stream()>>>(out, yn, r, kmod, v, rk, g, N, H, D);
  SR_CUDA_LAUNCHED("rwkv7_out_fwd");
}
void rwkv7_out_bwd(float* dyn, float* dr, float* dkmod, float* dv, float* drk, float* dg, const float* dout,
                   const float* yn, const float* r, const float* kmod, const float* v, const float* rk, const float* g,
                   int N, int H, int D) {
  const size_t n = size_t(N) * H * D;
  if (!n) return;
  float* c = static_cast<float*>(device_alloc(n * sizeof(float)));
  out_bwd_k<<<blocks_for(size_t(N) * H, 128), 128, 0, stream()>>>(dyn, dr, dkmod, dv, c, dg, dout, yn, r, kmod, v, rk,
                                                                   g, N, H, D);
  SR_CUDA_LAUNCHED("rwkv7_out_bwd");
  colsum_add(drk, c, N, H * D);
  device_free(c);
}

void gdr_fwd(float* y, float* state, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const GdrShape& s) {
  if (s.B * s.H == 0 || s.T == 0) return;
  if (delta_chunked_enabled() && gdr_fwd_chunked(y, state, r, w, a, b, k, v, s)) return;
  const dim3 grid(s.B * s.H, (s.Dv + 31) / 32);
  if (s.Dk <= 32) gdr_fwd_reg_k<32><<<grid, 128, 0, stream()>>>(y, state, r, w, a, b, k, v, s);
  else if (s.Dk <= 64) gdr_fwd_reg_k<64><<<grid, 128, 0, stream()>>>(y, state, r, w, a, b, k, v, s);
  else if (s.Dk <= 128) gdr_fwd_reg_k<128><<<grid, 128, 0, stream()>>>(y, state, r, w, a, b, k, v, s);
  else {  // larger key heads: the state walks through shared memory
    const size_t smem = (size_t(s.Dk) * s.Dv + 5 * size_t(s.Dk)) * sizeof(float);
    if (round32(s.Dv) > 1024) fail("gdr (cuda)", "value head dims above 1024 are not supported");
    SR_CUDA(cudaFuncSetAttribute(gdr_fwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    gdr_fwd_k<<<s.B * s.H, round32(s.Dv), smem, stream()>>>(y, state, r, w, a, b, k, v, s);
  }
  SR_CUDA_LAUNCHED("gdr_fwd");
}
void gdr_bwd(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
             const float* dstate_in, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const float* state0, const GdrShape& s) {
  if (s.B * s.H == 0 || s.T == 0) return;
  if (delta_chunked_enabled() && gdr_bwd_chunked(dr, dw, da, db, dk, dv, dstate0, dy, dstate_in, r, w, a, b, k, v, state0, s))
    return;
  if (s.Dk <= 128) {  // registers
    const int G = (s.Dv + 31) / 32, nseg = (s.T + kTb - 1) / kTb, R = s.Dk <= 32 ? 8 : s.Dk <= 64 ? 16 : 32;
    const size_t blocks = size_t(s.B) * s.H * G, n = size_t(s.B) * s.T * s.H * s.Dk;
    const size_t n_ck = blocks * nseg * R * 128, n_seg = blocks * kTb * R * 128;
    float* ckpt = static_cast<float*>(device_alloc((n_ck + n_seg + 5 * size_t(G) * n) * sizeof(float)));
    float *segbuf = ckpt + n_ck, *part = segbuf + n_seg;
    if (s.Dk <= 32) launch_gdr_bwd_reg<32>(part, dv, dstate0, dy, dstate_in, r, w, a, b, k, v, state0, ckpt, segbuf, s, G);
    else if (s.Dk <= 64) launch_gdr_bwd_reg<64>(part, dv, dstate0, dy, dstate_in, r, w, a, b, k, v, state0, ckpt, segbuf, s, G);
    else launch_gdr_bwd_reg<128>(part, dv, dstate0, dy, dstate_in, r, w, a, b, k, v, state0, ckpt, segbuf, s, G);
    SR_CUDA_LAUNCHED("gdr_bwd");
    gdr_sum_partials_k<<<blocks_for(5 * n, 256), 256, 0, stream()>>>(dr, dw, da, db, dk, part, n, G);
    SR_CUDA_LAUNCHED("gdr_bwd sums");
    device_free(ckpt);
    return;
  }
  if (round32(std::max(s.Dk, s.Dv)) > 1024) fail("gdr (cuda)", "head dims above 1024 are not supported");
  const size_t smem = gdr_bwd_smem(s);
  SR_CUDA(cudaFuncSetAttribute(gdr_bwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int C = std::max(1, s.chunk), nseg = (s.T + C - 1) / C, blocks = s.B * s.H;
  const size_t S = size_t(s.Dk) * s.Dv;
  float* ckpt = static_cast<float*>(device_alloc(size_t(blocks) * (nseg + C) * S * sizeof(float)));
  float* segbuf = ckpt + size_t(blocks) * nseg * S;
  gdr_bwd_k<<<blocks, round32(std::max(s.Dk, s.Dv)), smem, stream()>>>(dr, dw, da, db, dk, dv, dstate0, dy, dstate_in,
                                                                       r, w, a, b, k, v, state0, ckpt, segbuf, s, C);
  SR_CUDA_LAUNCHED("gdr_bwd");
  device_free(ckpt);
}

}  // namespace sr::cuda::ops
