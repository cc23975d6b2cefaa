// Gated DeltaNet layer ops on the GPU (contracts in ops/ops.h, oracle in ops/ref/gated_deltanet.h).
// All fp32: the recurrent state, gates and reductions stay in fp32 (standard 3).
//
// Gated delta rule, token-serial (exact, same operations as the reference, O(1) state for decode
// and chunked prefill). For Dk <= 128 the state lives in registers: block = 32 state columns x 4
// lanes, each lane holding every 4th row of its column, so H^T k, the update and H^T q are two
// short FMA chains and two 4-lane shuffle sums per token; blocks cover (batch, value head, column
// group), and q/k/v/gates of 32 tokens are staged in shared memory per barrier.
// Backward: checkpoints of the state every 32 tokens, then per segment from the last: recompute the
// 32 states, walk them backwards with dH in registers. dq, dk, dbeta, dg are sums over columns:
// warp shuffles + one double-buffered shared-memory slot per token give each block's partial,
// and a second kernel adds column groups and GQA heads in a fixed order (deterministic, no atomics).
// Dk > 128 uses shared-memory versions of both (one block per head, thread per column).
// The elementwise pieces (causal conv, L2 norm, gates, gated RMSNorm) are parallel over elements or
// rows; their parameter gradients are summed over fixed chunks in a fixed order.
// Not the chunked WY/UT form on tensor cores yet: the token-serial walk is latency-bound
// (docs/PERF.md has the numbers).
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"
#include "ops/cuda/delta_rule_chunked.h"

namespace sr::cuda::ops {

namespace {
__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// Input of channel c at time t of batch b (t < 0: from the state, or 0).
__device__ __forceinline__ float conv_in(const float* x, const float* st, int b, int t, int c, int T, int Cc, int K) {
  if (t >= 0) return x[(size_t(b) * T + t) * Cc + c];
  return st ? st[(size_t(b) * Cc + c) * (K - 1) + (K - 1 + t)] : 0.0f;
}

// One thread per output element: out[b,t,c] = silu(sum_j w[c,j] x[t-K+1+j]) (reads the old state).
__global__ void conv_fwd_k(float* out, const float* st, const float* x, const float* w, int B, int T, int Cc, int K) {
  const size_t n = size_t(B) * T * Cc;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int c = int(e % Cc), t = int((e / Cc) % T), b = int(e / (size_t(Cc) * T));
    float acc = 0.0f;
    for (int j = 0; j < K; ++j) acc += w[size_t(c) * K + j] * conv_in(x, st, b, t - K + 1 + j, c, T, Cc, K);
    out[e] = acc * sigm(acc);
  }
}
// Then, one thread per (b, c): the state advances to the last K-1 inputs.
__global__ void conv_state_k(float* st, const float* x, int B, int T, int Cc, int K) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * Cc) return;
  const int b = idx / Cc, c = idx % Cc;
  float next[16];  // K <= 17 (checked by the host)
  for (int j = 0; j < K - 1; ++j) next[j] = conv_in(x, st, b, T - (K - 1) + j, c, T, Cc, K);
  for (int j = 0; j < K - 1; ++j) st[(size_t(b) * Cc + c) * (K - 1) + j] = next[j];
}

// Backward in three passes, each parallel over elements: dpre = dout silu'(pre); dx[t] = sum_j
// w[c,j] dpre[t+K-1-j]; dw[c,j] += sum over (b,t) in fixed 256-token chunks, then in chunk order.
__global__ void conv_dpre_k(float* dpre, const float* dout, const float* x, const float* w, const float* st0, int B,
                            int T, int Cc, int K) {
  const size_t n = size_t(B) * T * Cc;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int c = int(e % Cc), t = int((e / Cc) % T), b = int(e / (size_t(Cc) * T));
    float pre = 0.0f;
    for (int j = 0; j < K; ++j) pre += w[size_t(c) * K + j] * conv_in(x, st0, b, t - K + 1 + j, c, T, Cc, K);
    const float sg = sigm(pre);
    dpre[e] = dout[e] * sg * (1.0f + pre * (1.0f - sg));
  }
}
__global__ void conv_dx_k(float* dx, const float* dpre, const float* w, int B, int T, int Cc, int K) {
  const size_t n = size_t(B) * T * Cc;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int c = int(e % Cc), t = int((e / Cc) % T);
    float acc = 0.0f;  // x[t] feeds out[t + K - 1 - j] through tap j
    for (int j = 0; j < K; ++j)
      if (t + K - 1 - j < T) acc += w[size_t(c) * K + j] * dpre[e + size_t(K - 1 - j) * Cc];
    dx[e] = acc;
  }
}
constexpr int kTokChunk = 256;
// partial[chunk][c*K + j] over the chunk's (b,t) rows, chunk = blockIdx.y
__global__ void conv_dw_partial_k(float* partial, const float* dpre, const float* x, const float* st0, int B, int T,
                                  int Cc, int K) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (c >= Cc) return;
  float acc[17] = {0};
  const int r1 = min(B * T, (chunk + 1) * kTokChunk);
  for (int r = chunk * kTokChunk; r < r1; ++r) {
    const int b = r / T, t = r % T;
    const float dp = dpre[size_t(r) * Cc + c];
    for (int j = 0; j < K; ++j) acc[j] += dp * conv_in(x, st0, b, t - K + 1 + j, c, T, Cc, K);
  }
  for (int j = 0; j < K; ++j) partial[size_t(chunk) * Cc * K + size_t(c) * K + j] = acc[j];
}

// One block per row (rows of D).
__global__ void l2norm_fwd_k(float* out, float* rnorm, const float* x, int D) {
  __shared__ float red[32];
  const size_t n = blockIdx.x;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) ss += x[n * D + d] * x[n * D + d];
  const float r = rsqrtf(block_sum(ss, red) + 1e-6f);
  if (threadIdx.x == 0) rnorm[n] = r;
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[n * D + d] = x[n * D + d] * r;
}
__global__ void l2norm_bwd_k(float* dx, const float* dout, const float* out, const float* rnorm, int D) {
  __shared__ float red[32];
  const size_t n = blockIdx.x;
  float yd = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) yd += out[n * D + d] * dout[n * D + d];
  yd = block_sum(yd, red);
  for (int d = threadIdx.x; d < D; d += blockDim.x) dx[n * D + d] = rnorm[n] * (dout[n * D + d] - out[n * D + d] * yd);
}

__global__ void gates_fwd_k(float* g, float* beta, const float* a, const float* b, const float* A_log,
                            const float* dt_bias, int N, int H) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size_t(N) * H) return;
  const int h = int(i % H);
  g[i] = -expf(A_log[h]) * softplus(a[i] + dt_bias[h]);
  beta[i] = sigm(b[i]);
}
// da, db per element; dA_log[h], ddt_bias[h] summed by one block per head in a fixed order.
__global__ void gates_bwd_k(float* da, float* db, float* dA_log, float* ddt_bias, const float* dg, const float* dbeta,
                            const float* a, const float* b, const float* A_log, const float* dt_bias, int N, int H) {
  __shared__ float red[32];
  const int h = blockIdx.x;
  const float e = expf(A_log[h]);
  float sA = 0.0f, sdt = 0.0f;
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    const size_t i = size_t(n) * H + h;
    const float x = a[i] + dt_bias[h];
    const float dgi = dg[i] * -e * sigm(x);
    da[i] = dgi;
    sdt += dgi;
    sA += dg[i] * -e * softplus(x);
    const float bt = sigm(b[i]);
    db[i] = dbeta[i] * bt * (1.0f - bt);
  }
  sA = block_sum(sA, red);
  sdt = block_sum(sdt, red);
  if (threadIdx.x == 0) dA_log[h] += sA, ddt_bias[h] += sdt;
}

__global__ void grms_fwd_k(float* out, float* rstd, const float* o, const float* z, const float* w, int D, float eps) {
  __shared__ float red[32];
  const size_t r = blockIdx.x;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) ss += o[r * D + d] * o[r * D + d];
  const float rs = rsqrtf(block_sum(ss, red) / float(D) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float zz = z[r * D + d];
    out[r * D + d] = w[d] * o[r * D + d] * rs * zz * sigm(zz);
  }
}
__global__ void grms_bwd_k(float* do_, float* dz, const float* dout, const float* o, const float* z, const float* w,
                           const float* rstd, int D) {
  __shared__ float red[32];
  const size_t r = blockIdx.x;
  const float rs = rstd[r];
  float mn = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const size_t i = r * D + d;
    const float sg = sigm(z[i]), s = z[i] * sg, n = o[i] * rs;
    mn += dout[i] * w[d] * s * n;
    dz[i] = dout[i] * w[d] * n * sg * (1.0f + z[i] * (1.0f - sg));
  }
  mn = block_sum(mn, red) / float(D);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const size_t i = r * D + d;
    do_[i] = rs * (dout[i] * w[d] * z[i] * sigm(z[i]) - o[i] * rs * mn);
  }
}
// dw[d] += sum over rows of dout n s: partial sums over fixed 256-row chunks, then in chunk order.
constexpr int kRowChunk = 256;
__global__ void grms_dw_partial_k(float* partial, const float* dout, const float* o, const float* z,
                                  const float* rstd, int rows, int D) {
  const int d = blockIdx.y * blockDim.x + threadIdx.x, chunk = blockIdx.x;
  if (d >= D) return;
  float acc = 0.0f;
  for (int r = chunk * kRowChunk; r < min(rows, (chunk + 1) * kRowChunk); ++r) {
    const size_t i = size_t(r) * D + d;
    acc += dout[i] * o[i] * rstd[r] * z[i] * sigm(z[i]);
  }
  partial[size_t(chunk) * D + d] = acc;
}
__global__ void colsum_add_k(float* dw, const float* partial, int chunks, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float s = 0.0f;
  for (int c = 0; c < chunks; ++c) s += partial[size_t(c) * D + d];
  dw[d] += s;
}

// ---- the gated delta rule ----
struct DrIdx {
  DeltaShape s;
  __device__ size_t qk(int b, int t, int kh) const { return ((size_t(b) * s.T + t) * s.Hk + kh) * s.Dk; }
  __device__ size_t qkv(int b, int t, int h) const { return ((size_t(b) * s.T + t) * s.Hv + h) * s.Dk; }
  __device__ size_t v(int b, int t, int h) const { return ((size_t(b) * s.T + t) * s.Hv + h) * s.Dv; }
  __device__ size_t gate(int b, int t, int h) const { return (size_t(b) * s.T + t) * s.Hv + h; }
};

// Loads q_t (optional) and k_t into shared memory (all threads), then a barrier.
__device__ void load_qk(float* sq, float* sk, const float* q, const float* k, size_t off, int Dk) {
  for (int i = threadIdx.x; i < Dk; i += blockDim.x) {
    if (sq) sq[i] = q[off + i];
    sk[i] = k[off + i];
  }
  __syncthreads();
}

// One token on column j of H (row stride ld): H <- a H; d = bt (v - H^T k); H += k d. Returns d.
__device__ __forceinline__ float dr_step_col(float* H, int ld, int j, const float* sk, float vj, float a, float bt,
                                             int Dk) {
  float u = 0.0f;
  for (int i = 0; i < Dk; ++i) {
    const float h = H[i * ld + j] * a;
    H[i * ld + j] = h;
    u += h * sk[i];
  }
  const float d = bt * (vj - u);
  for (int i = 0; i < Dk; ++i) H[i * ld + j] += sk[i] * d;
  return d;
}

// grid B*Hv, block >= Dv threads; smem: H [Dk*Dv] + q, k [Dk].
__global__ void dr_fwd_k(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                         const float* beta, DeltaShape s) {
  extern __shared__ float sm[];
  const int Dk = s.Dk, Dv = s.Dv, b = blockIdx.x / s.Hv, h = blockIdx.x % s.Hv, kh = h / (s.Hv / s.Hk);
  float *H = sm, *sq = H + Dk * Dv, *sk = sq + Dk;
  const int j = threadIdx.x;
  float* st = state + size_t(blockIdx.x) * Dk * Dv;
  for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) H[e] = st[e];
  const DrIdx ix{s};
  for (int t = 0; t < s.T; ++t) {
    __syncthreads();  // previous token done with sq/sk (and H loaded)
    load_qk(sq, sk, q, k, ix.qk(b, t, kh), Dk);
    if (j < Dv) {
      const size_t gi = ix.gate(b, t, h);
      dr_step_col(H, Dv, j, sk, v[ix.v(b, t, h) + j], expf(g[gi]), beta[gi], Dk);
      float o = 0.0f;
      for (int i = 0; i < Dk; ++i) o += H[i * Dv + j] * sq[i];
      out[ix.v(b, t, h) + j] = o * s.scale;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) st[e] = H[e];
}

// Register-resident forward for Dk <= DKMAX: 4 lanes per state column, each holding DKMAX/4 rows
// (rows p, p+4, ...) in registers, so a token is two short FMA chains plus two 4-lane shuffle
// sums; q, k, v, g, beta of kTc tokens are staged in shared memory with one barrier per chunk.
// grid (B*Hv, ceil(Dv/32)), 128 threads = 32 columns x 4 lanes.
constexpr int kTc = 32;
template <int DKMAX>
__global__ void __launch_bounds__(128) dr_fwd_reg_k(float* out, float* state, const float* q, const float* k,
                                                    const float* v, const float* g, const float* beta, DeltaShape s) {
  constexpr int R = DKMAX / 4;
  __shared__ float sq[kTc][DKMAX], sk[kTc][DKMAX], sv[kTc][32], sa[kTc], sb[kTc];
  const int Dk = s.Dk, Dv = s.Dv, b = blockIdx.x / s.Hv, h = blockIdx.x % s.Hv, kh = h / (s.Hv / s.Hk);
  const int p = threadIdx.x % 4, jl = threadIdx.x / 4, j = blockIdx.y * 32 + jl;
  const bool col = j < Dv;
  float* st = state + size_t(blockIdx.x) * Dk * Dv;
  float hr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = p + 4 * r;
    hr[r] = (col && i < Dk) ? st[size_t(i) * Dv + j] : 0.0f;
  }
  const DrIdx ix{s};
  for (int c0 = 0; c0 < s.T; c0 += kTc) {
    const int n = min(kTc, s.T - c0);
    __syncthreads();  // the previous chunk is consumed
    for (int e = threadIdx.x; e < n * DKMAX; e += blockDim.x) {
      const int t = e / DKMAX, i = e % DKMAX;
      const size_t o = ix.qk(b, c0 + t, kh) + i;
      sq[t][i] = i < Dk ? q[o] : 0.0f;
      sk[t][i] = i < Dk ? k[o] : 0.0f;
    }
    for (int e = threadIdx.x; e < n * 32; e += blockDim.x) {
      const int t = e / 32, jj = blockIdx.y * 32 + e % 32;
      sv[t][e % 32] = jj < Dv ? v[ix.v(b, c0 + t, h) + jj] : 0.0f;
    }
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
      const size_t gi = ix.gate(b, c0 + t, h);
      sa[t] = expf(g[gi]), sb[t] = beta[gi];
    }
    __syncthreads();
    for (int t = 0; t < n; ++t) {
      const float a = sa[t];
      float u = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        hr[r] *= a;
        u += hr[r] * sk[t][p + 4 * r];
      }
      u += __shfl_xor_sync(0xffffffffu, u, 1);
      u += __shfl_xor_sync(0xffffffffu, u, 2);
      const float d = sb[t] * (sv[t][jl] - u);
      float o = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        hr[r] += sk[t][p + 4 * r] * d;
        o += hr[r] * sq[t][p + 4 * r];
      }
      o += __shfl_xor_sync(0xffffffffu, o, 1);
      o += __shfl_xor_sync(0xffffffffu, o, 2);
      if (col && p == 0) out[ix.v(b, c0 + t, h) + j] = o * s.scale;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = p + 4 * r;
    if (col && i < Dk) st[size_t(i) * Dv + j] = hr[r];
  }
}

// grid B*Hv, block NT >= max(Dk, Dv) (multiple of 32). smem: Hp, dH [Dk][Dv+1]; q, k [Dk];
// dout, d, du [Dv]; red [32]. Scratch per block: ckpt [nseg][Dk*Dv], seg [C][Dk*Dv].
// dqh, dkh: [B,T,Hv,Dk] per value head; dg, dbeta [B,T,Hv] (dr_sum_partials_k with one column group
// then sums the GQA group's heads).
__global__ void dr_bwd_k(float* dqh, float* dkh, float* dv, float* dg, float* dbeta, float* dstate0,
                         const float* dout, const float* dstate_in, const float* q, const float* k, const float* v,
                         const float* g, const float* beta, const float* state0, float* ckpt, float* segbuf,
                         DeltaShape s, int C) {
  extern __shared__ float sm[];
  const int Dk = s.Dk, Dv = s.Dv, ld = Dv + 1, S = Dk * Dv;
  const int b = blockIdx.x / s.Hv, h = blockIdx.x % s.Hv, kh = h / (s.Hv / s.Hk);
  float *Hp = sm, *dH = Hp + Dk * ld, *sq = dH + Dk * ld, *sk = sq + Dk, *sdo = sk + Dk, *sd = sdo + Dv,
        *sdu = sd + Dv, *red = sdu + Dv;
  const int tid = threadIdx.x, j = tid;
  const int nseg = (s.T + C - 1) / C;
  float* ck = ckpt + size_t(blockIdx.x) * nseg * S;
  float* sg = segbuf + size_t(blockIdx.x) * C * S;
  const DrIdx ix{s};
  const size_t so = size_t(blockIdx.x) * S;
  // Phase 1: forward, checkpoint the state at the start of every segment (Hp is the running state).
  for (int e = tid; e < S; e += blockDim.x) Hp[(e / Dv) * ld + e % Dv] = state0[so + e];
  for (int t = 0; t < s.T; ++t) {
    __syncthreads();
    if (t % C == 0)
      for (int e = tid; e < S; e += blockDim.x) ck[size_t(t / C) * S + e] = Hp[(e / Dv) * ld + e % Dv];
    load_qk(nullptr, sk, q, k, ix.qk(b, t, kh), Dk);
    if (j < Dv) {
      const size_t gi = ix.gate(b, t, h);
      dr_step_col(Hp, ld, j, sk, v[ix.v(b, t, h) + j], expf(g[gi]), beta[gi], Dk);
    }
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
      load_qk(nullptr, sk, q, k, ix.qk(b, t, kh), Dk);
      if (j < Dv) {
        const size_t gi = ix.gate(b, t, h);
        dr_step_col(Hp, ld, j, sk, v[ix.v(b, t, h) + j], expf(g[gi]), beta[gi], Dk);
      }
    }
    for (int t = t1 - 1; t >= t0; --t) {
      __syncthreads();
      const size_t gi = ix.gate(b, t, h);
      const float a = expf(g[gi]), bt = beta[gi];
      const float* hprev = sg + size_t(t - t0) * S;
      for (int e = tid; e < S; e += blockDim.x) Hp[(e / Dv) * ld + e % Dv] = a * hprev[e];
      load_qk(sq, sk, q, k, ix.qk(b, t, kh), Dk);  // (barrier: Hp complete)
      // column phase: u, delta, dH += sc q dout^T, dd, dv, dbeta and dg partials
      float dbp = 0.0f;
      if (j < Dv) {
        const float vj = v[ix.v(b, t, h) + j], doj = dout[ix.v(b, t, h) + j];
        float u = 0.0f, dd = 0.0f;
        for (int i = 0; i < Dk; ++i) {
          u += Hp[i * ld + j] * sk[i];
          const float x = dH[i * ld + j] + s.scale * sq[i] * doj;
          dH[i * ld + j] = x;
          dd += x * sk[i];
        }
        dv[ix.v(b, t, h) + j] = bt * dd;
        dbp = dd * (vj - u);
        sdo[j] = doj, sd[j] = bt * (vj - u), sdu[j] = -bt * dd;
      }
      __syncthreads();
      // row phase: dq = sc (Hp + k d^T) dout; dk = dH d + Hp du
      if (tid < Dk) {
        const int i = tid;
        float aq = 0.0f, ak = 0.0f;
        for (int c = 0; c < Dv; ++c) {
          const float hp = Hp[i * ld + c];
          aq += (hp + sk[i] * sd[c]) * sdo[c];
          ak += dH[i * ld + c] * sd[c] + hp * sdu[c];
        }
        dqh[ix.qkv(b, t, h) + i] = s.scale * aq;
        dkh[ix.qkv(b, t, h) + i] = ak;
      }
      __syncthreads();
      // column phase 2: dH' = dH + k du^T; dg = <dH', Hp>; dH <- a dH'
      float dgp = 0.0f;
      if (j < Dv) {
        for (int i = 0; i < Dk; ++i) {
          const float x = dH[i * ld + j] + sk[i] * sdu[j];
          dgp += x * Hp[i * ld + j];
          dH[i * ld + j] = a * x;
        }
      }
      dbp = block_sum(dbp, red);
      dgp = block_sum(dgp, red);
      if (tid == 0) dbeta[gi] = dbp, dg[gi] = dgp;
    }
  }
  __syncthreads();
  for (int e = tid; e < S; e += blockDim.x) dstate0[so + e] = dH[(e / Dv) * ld + e % Dv];
}

// Register-resident backward for Dk <= DKMAX, same lane layout as dr_fwd_reg_k (grid (B*Hv, G =
// ceil(Dv/32)), 4 lanes per column, rows p, p+4, ... in registers). Columns are independent except
// for dq, dk, dbeta and dg, which are sums over columns: each block writes its 32 columns' partial
// sums (per column group g) and dr_sum_partials_k adds groups and GQA heads in a fixed order.
// Checkpoints every kTc tokens (thread-private layout, coalesced); a segment's kTc inputs are
// staged in shared memory once and serve the recompute and the reverse walk; one barrier per token
// (double-buffered reduction slots).
// dqp, dkp: [G][B*T*Hv][Dk]; dbp, dgp: [G][B*T*Hv]; ckpt: [blocks][nseg][R][128]; segbuf: [blocks][kTc][R][128].
template <int DKMAX>
__global__ void __launch_bounds__(128) dr_bwd_reg_k(float* dqp, float* dkp, float* dbp, float* dgp, float* dv,
                                                    float* dstate0, const float* dout, const float* dstate_in,
                                                    const float* q, const float* k, const float* v, const float* g,
                                                    const float* beta, const float* state0, float* ckpt, float* segbuf,
                                                    DeltaShape s) {
  constexpr int R = DKMAX / 4;
  extern __shared__ float sm[];
  float* sq = sm;                      // [kTc][DKMAX]
  float* sk = sq + kTc * DKMAX;        // [kTc][DKMAX]
  float* sv = sk + kTc * DKMAX;        // [kTc][32]
  float* sdo = sv + kTc * 32;          // [kTc][32]
  float* sa = sdo + kTc * 32;          // [kTc]
  float* sb = sa + kTc;                // [kTc]
  float* red = sb + kTc;               // [2][2 * 4 * DKMAX + 8]
  constexpr int kRed = 2 * 4 * DKMAX + 8;
  const int Dk = s.Dk, Dv = s.Dv, b = blockIdx.x / s.Hv, h = blockIdx.x % s.Hv, kh = h / (s.Hv / s.Hk);
  const int tid = threadIdx.x, p = tid % 4, jl = tid / 4, j = blockIdx.y * 32 + jl, lane = tid % 32, warp = tid / 32;
  const bool col = j < Dv;
  const int nseg = (s.T + kTc - 1) / kTc, blk = blockIdx.y * gridDim.x + blockIdx.x;
  const size_t BTH = size_t(s.B) * s.T * s.Hv;
  float* ck = ckpt + size_t(blk) * nseg * R * 128;
  float* sg = segbuf + size_t(blk) * kTc * R * 128;
  const DrIdx ix{s};
  const float* st0 = state0 + size_t(blockIdx.x) * Dk * Dv;
  float hr[R], dh[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = p + 4 * r;
    hr[r] = (col && i < Dk) ? st0[size_t(i) * Dv + j] : 0.0f;
    dh[r] = (col && i < Dk && dstate_in) ? dstate_in[size_t(blockIdx.x) * Dk * Dv + size_t(i) * Dv + j] : 0.0f;
  }
  // Stages tokens [c0, c0+n) of q (optional), k, v, dout (optional), exp(g), beta.
  auto stage = [&](int c0, int n, bool with_q) {
    __syncthreads();
    for (int e = tid; e < n * DKMAX; e += 128) {
      const int t = e / DKMAX, i = e % DKMAX;
      const size_t o = ix.qk(b, c0 + t, kh) + i;
      sk[t * DKMAX + i] = i < Dk ? k[o] : 0.0f;
      if (with_q) sq[t * DKMAX + i] = i < Dk ? q[o] : 0.0f;
    }
    for (int e = tid; e < n * 32; e += 128) {
      const int t = e / 32, jj = blockIdx.y * 32 + e % 32;
      const bool in = jj < Dv;
      sv[e] = in ? v[ix.v(b, c0 + t, h) + jj] : 0.0f;
      if (with_q) sdo[e] = in ? dout[ix.v(b, c0 + t, h) + jj] : 0.0f;
    }
    for (int t = tid; t < n; t += 128) {
      const size_t gi = ix.gate(b, c0 + t, h);
      sa[t] = expf(g[gi]), sb[t] = beta[gi];
    }
    __syncthreads();
  };
  auto step = [&](int t) {  // hr: state before token t -> after it (t: index into the staged chunk)
    float u = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      hr[r] *= sa[t];
      u += hr[r] * sk[t * DKMAX + p + 4 * r];
    }
    u += __shfl_xor_sync(0xffffffffu, u, 1);
    u += __shfl_xor_sync(0xffffffffu, u, 2);
    const float d = sb[t] * (sv[t * 32 + jl] - u);
#pragma unroll
    for (int r = 0; r < R; ++r) hr[r] += sk[t * DKMAX + p + 4 * r] * d;
  };
  // Phase 1: checkpoints at segment starts.
  for (int seg = 0; seg < nseg; ++seg) {
    const int c0 = seg * kTc, n = min(kTc, s.T - c0);
#pragma unroll
    for (int r = 0; r < R; ++r) ck[(size_t(seg) * R + r) * 128 + tid] = hr[r];
    stage(c0, n, false);
    for (int t = 0; t < n; ++t) step(t);
  }
  // Phase 2: segments from the last.
  int parity = 0;
  for (int seg = nseg - 1; seg >= 0; --seg) {
    const int c0 = seg * kTc, n = min(kTc, s.T - c0);
#pragma unroll
    for (int r = 0; r < R; ++r) hr[r] = ck[(size_t(seg) * R + r) * 128 + tid];
    stage(c0, n, true);
    for (int t = 0; t < n; ++t) {
#pragma unroll
      for (int r = 0; r < R; ++r) sg[(size_t(t) * R + r) * 128 + tid] = hr[r];
      step(t);
    }
    for (int t = n - 1; t >= 0; --t) {
      const float a = sa[t], bt = sb[t], vj = sv[t * 32 + jl], doj = sdo[t * 32 + jl];
      const float* kt = sk + t * DKMAX;
      const float* qt = sq + t * DKMAX;
      float u = 0.0f, dd = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        hr[r] = a * sg[(size_t(t) * R + r) * 128 + tid];  // H' = a H_{t-1}
        u += hr[r] * kt[p + 4 * r];
        dh[r] += s.scale * qt[p + 4 * r] * doj;  // dH_t += sc q dout^T
        dd += dh[r] * kt[p + 4 * r];
      }
      u += __shfl_xor_sync(0xffffffffu, u, 1);
      u += __shfl_xor_sync(0xffffffffu, u, 2);
      dd += __shfl_xor_sync(0xffffffffu, dd, 1);
      dd += __shfl_xor_sync(0xffffffffu, dd, 2);
      const float dlt = bt * (vj - u), du = -bt * dd;
      const size_t row = (size_t(b) * s.T + c0 + t) * s.Hv + h;
      if (col && p == 0) dv[ix.v(b, c0 + t, h) + j] = bt * dd;
      float* rd = red + parity * kRed;
      float dgc = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xq = (hr[r] + kt[p + 4 * r] * dlt) * doj;   // dq_i, this column's term
        float xk = dh[r] * dlt + hr[r] * du;              // dk_i, this column's term
        for (int o = 4; o < 32; o <<= 1) {                // sum the warp's 8 columns
          xq += __shfl_xor_sync(0xffffffffu, xq, o);
          xk += __shfl_xor_sync(0xffffffffu, xk, o);
        }
        if (lane < 4) rd[warp * DKMAX + p + 4 * r] = xq, rd[4 * DKMAX + warp * DKMAX + p + 4 * r] = xk;
        const float x = dh[r] + kt[p + 4 * r] * du;  // dH' = dH + k du^T
        dgc += x * hr[r];
        dh[r] = a * x;
      }
      float dbc = (col && p == 0) ? dd * (vj - u) : 0.0f;
      for (int o = 1; o < 32; o <<= 1) {
        dgc += __shfl_xor_sync(0xffffffffu, dgc, o);
        dbc += __shfl_xor_sync(0xffffffffu, dbc, o);
      }
      if (lane == 0) rd[8 * DKMAX + warp] = dgc, rd[8 * DKMAX + 4 + warp] = dbc;
      __syncthreads();
      for (int i = tid; i < Dk; i += 128) {
        const size_t o = (size_t(blockIdx.y) * BTH + row) * Dk + i;
        dqp[o] = s.scale * (((rd[i] + rd[DKMAX + i]) + rd[2 * DKMAX + i]) + rd[3 * DKMAX + i]);
        dkp[o] = ((rd[4 * DKMAX + i] + rd[5 * DKMAX + i]) + rd[6 * DKMAX + i]) + rd[7 * DKMAX + i];
      }
      if (tid == 0) {
        const float* w4 = rd + 8 * DKMAX;
        dgp[size_t(blockIdx.y) * BTH + row] = ((w4[0] + w4[1]) + w4[2]) + w4[3];
        dbp[size_t(blockIdx.y) * BTH + row] = ((w4[4] + w4[5]) + w4[6]) + w4[7];
      }
      parity ^= 1;
    }
  }
  float* ds0 = dstate0 + size_t(blockIdx.x) * Dk * Dv;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = p + 4 * r;
    if (col && i < Dk) ds0[size_t(i) * Dv + j] = dh[r];
  }
}
// Sums dr_bwd_reg_k's partials: column groups (and, for dq/dk, the GQA group's value heads).
__global__ void dr_sum_partials_k(float* dq, float* dk, float* dg, float* dbeta, const float* dqp, const float* dkp,
                             const float* dgp, const float* dbp, DeltaShape s, int G) {
  const size_t nqk = size_t(s.B) * s.T * s.Hk * s.Dk, BTH = size_t(s.B) * s.T * s.Hv;
  const int ratio = s.Hv / s.Hk;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < nqk + BTH; e += size_t(gridDim.x) * blockDim.x) {
    if (e < nqk) {
      const int i = int(e % s.Dk), kh = int((e / s.Dk) % s.Hk);
      const size_t bt = e / (size_t(s.Hk) * s.Dk);
      float aq = 0.0f, ak = 0.0f;
      for (int r = 0; r < ratio; ++r)
        for (int gi = 0; gi < G; ++gi) {
          const size_t src = (size_t(gi) * BTH + bt * s.Hv + size_t(kh) * ratio + r) * s.Dk + i;
          aq += dqp[src], ak += dkp[src];
        }
      dq[e] = aq, dk[e] = ak;
    } else {
      const size_t row = e - nqk;
      float ag = 0.0f, ab = 0.0f;
      for (int gi = 0; gi < G; ++gi) ag += dgp[size_t(gi) * BTH + row], ab += dbp[size_t(gi) * BTH + row];
      dg[row] = ag, dbeta[row] = ab;
    }
  }
}


int round32(int n) { return (n + 31) / 32 * 32; }
void check_delta_shape(const DeltaShape& s, size_t smem) {
  if (s.Hv % s.Hk) fail("delta_rule (cuda)", "value heads must be a multiple of key heads");
  if (round32(std::max(s.Dk, s.Dv)) > 1024) fail("delta_rule (cuda)", "head dims above 1024 are not supported");
  int dev = 0, max_smem = 0;
  SR_CUDA(cudaGetDevice(&dev));
  SR_CUDA(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (smem > size_t(max_smem))
    fail("delta_rule (cuda)", "state " + std::to_string(s.Dk) + "x" + std::to_string(s.Dv) +
                                  " does not fit in shared memory (" + std::to_string(max_smem) + " bytes)");
}
size_t fwd_smem(const DeltaShape& s) { return (size_t(s.Dk) * s.Dv + 2 * s.Dk) * sizeof(float); }
size_t bwd_smem(const DeltaShape& s) {
  return (2 * size_t(s.Dk) * (s.Dv + 1) + 2 * s.Dk + 3 * s.Dv + 32) * sizeof(float);
}
}  // namespace

void causal_conv_fwd(float* out, float* state, const float* x, const float* w, int B, int T, int Cc, int K) {
  if (K > 17) fail("causal_conv (cuda)", "kernel sizes above 17 are not supported");
  conv_fwd_k<<<blocks_for(size_t(B) * T * Cc, 256), 256, 0, stream()>>>(out, state, x, w, B, T, Cc, K);
  if (state && K > 1) conv_state_k<<<blocks_for(size_t(B) * Cc, 128), 128, 0, stream()>>>(state, x, B, T, Cc, K);
  SR_CUDA_LAUNCHED("causal_conv_fwd");
}
void causal_conv_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* state0,
                     int B, int T, int Cc, int K) {
  if (K > 17) fail("causal_conv (cuda)", "kernel sizes above 17 are not supported");
  const size_t n = size_t(B) * T * Cc;
  if (n == 0) return;
  const int chunks = (B * T + kTokChunk - 1) / kTokChunk;
  float* dpre = static_cast<float*>(device_alloc((n + size_t(chunks) * Cc * K) * sizeof(float)));
  float* partial = dpre + n;
  conv_dpre_k<<<blocks_for(n, 256), 256, 0, stream()>>>(dpre, dout, x, w, state0, B, T, Cc, K);
  conv_dw_partial_k<<<dim3((Cc + 127) / 128, chunks), 128, 0, stream()>>>(partial, dpre, x, state0, B, T, Cc, K);
  colsum_add_k<<<blocks_for(size_t(Cc) * K, 128), 128, 0, stream()>>>(dw, partial, chunks, Cc * K);
  conv_dx_k<<<blocks_for(n, 256), 256, 0, stream()>>>(dx, dpre, w, B, T, Cc, K);  // dx last: it may alias dout
  SR_CUDA_LAUNCHED("causal_conv_bwd");
  device_free(dpre);
}
void l2norm_fwd(float* out, float* rnorm, const float* x, int N, int D) {
  if (N) l2norm_fwd_k<<<N, 128, 0, stream()>>>(out, rnorm, x, D);
  SR_CUDA_LAUNCHED("l2norm_fwd");
}
void l2norm_bwd(float* dx, const float* dout, const float* out, const float* rnorm, int N, int D) {
  if (N) l2norm_bwd_k<<<N, 128, 0, stream()>>>(dx, dout, out, rnorm, D);
  SR_CUDA_LAUNCHED("l2norm_bwd");
}
void gdn_gates_fwd(float* g, float* beta, const float* a, const float* b, const float* A_log, const float* dt_bias,
                   int N, int H) {
  gates_fwd_k<<<blocks_for(size_t(N) * H, 256), 256, 0, stream()>>>(g, beta, a, b, A_log, dt_bias, N, H);
  SR_CUDA_LAUNCHED("gdn_gates_fwd");
}
void gdn_gates_bwd(float* da, float* db, float* dA_log, float* ddt_bias, const float* dg, const float* dbeta,
                   const float* a, const float* b, const float* A_log, const float* dt_bias, int N, int H) {
  gates_bwd_k<<<H, 256, 0, stream()>>>(da, db, dA_log, ddt_bias, dg, dbeta, a, b, A_log, dt_bias, N, H);
  SR_CUDA_LAUNCHED("gdn_gates_bwd");
}
void gated_rmsnorm_fwd(float* out, float* rstd, const float* o, const float* z, const float* w, int rows, int D,
                       float eps) {
  if (rows) grms_fwd_k<<<rows, 128, 0, stream()>>>(out, rstd, o, z, w, D, eps);
  SR_CUDA_LAUNCHED("gated_rmsnorm_fwd");
}
void gated_rmsnorm_bwd(float* do_, float* dz, float* dw, const float* dout, const float* o, const float* z,
                       const float* w, const float* rstd, int rows, int D) {
  if (!rows) return;
  const int chunks = (rows + kRowChunk - 1) / kRowChunk;  // dw first: do_ may alias dout
  float* partial = static_cast<float*>(device_alloc(size_t(chunks) * D * sizeof(float)));
  grms_dw_partial_k<<<dim3(chunks, (D + 127) / 128), 128, 0, stream()>>>(partial, dout, o, z, rstd, rows, D);
  colsum_add_k<<<blocks_for(size_t(D), 128), 128, 0, stream()>>>(dw, partial, chunks, D);
  SR_CUDA_LAUNCHED("gated_rmsnorm_bwd dw");
  device_free(partial);
  grms_bwd_k<<<rows, 128, 0, stream()>>>(do_, dz, dout, o, z, w, rstd, D);
  SR_CUDA_LAUNCHED("gated_rmsnorm_bwd");
}

void delta_rule_fwd(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const DeltaShape& s) {
  if (s.Hv % s.Hk) fail("delta_rule (cuda)", "value heads must be a multiple of key heads");
  if (s.B * s.Hv == 0) return;
  if (delta_chunked_enabled() && delta_rule_fwd_chunked(out, state, q, k, v, g, beta, s)) return;
  const dim3 grid(s.B * s.Hv, (s.Dv + 31) / 32);
  if (s.Dk <= 32) {
    dr_fwd_reg_k<32><<<grid, 128, 0, stream()>>>(out, state, q, k, v, g, beta, s);
  } else if (s.Dk <= 64) {
    dr_fwd_reg_k<64><<<grid, 128, 0, stream()>>>(out, state, q, k, v, g, beta, s);
  } else if (s.Dk <= 128) {
    dr_fwd_reg_k<128><<<grid, 128, 0, stream()>>>(out, state, q, k, v, g, beta, s);
  } else {  // larger key heads: the state column walks through shared memory
    const size_t smem = fwd_smem(s);
    check_delta_shape(s, smem);
    SR_CUDA(cudaFuncSetAttribute(dr_fwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    dr_fwd_k<<<s.B * s.Hv, round32(s.Dv), smem, stream()>>>(out, state, q, k, v, g, beta, s);
  }
  SR_CUDA_LAUNCHED("delta_rule_fwd");
}

namespace {
template <int DKMAX>
void launch_bwd_reg(float* dqp, float* dkp, float* dbp, float* dgp, float* dv, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, float* ckpt, float* segbuf, const DeltaShape& s, int G) {
  const size_t smem = (2 * size_t(kTc) * DKMAX + 2 * kTc * 32 + 2 * kTc + 2 * (8 * DKMAX + 8)) * sizeof(float);
  SR_CUDA(cudaFuncSetAttribute(dr_bwd_reg_k<DKMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  dr_bwd_reg_k<DKMAX><<<dim3(s.B * s.Hv, G), 128, smem, stream()>>>(dqp, dkp, dbp, dgp, dv, dstate0, dout, dstate_in,
                                                                    q, k, v, g, beta, state0, ckpt, segbuf, s);
}

void delta_rule_bwd_reg(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                        const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                        const float* beta, const float* state0, const DeltaShape& s) {
  if (s.Hv % s.Hk) fail("delta_rule (cuda)", "value heads must be a multiple of key heads");
  if (s.B * s.Hv == 0 || s.T == 0) return;
  const int G = (s.Dv + 31) / 32, nseg = (s.T + kTc - 1) / kTc, R = s.Dk <= 32 ? 8 : s.Dk <= 64 ? 16 : 32;
  const size_t blocks = size_t(s.B) * s.Hv * G, BTH = size_t(s.B) * s.T * s.Hv;
  const size_t n_ck = blocks * nseg * R * 128, n_seg = blocks * kTc * R * 128, n_qk = size_t(G) * BTH * s.Dk;
  float* ckpt = static_cast<float*>(device_alloc((n_ck + n_seg + 2 * n_qk + 2 * size_t(G) * BTH) * sizeof(float)));
  float *segbuf = ckpt + n_ck, *dqp = segbuf + n_seg, *dkp = dqp + n_qk, *dgp = dkp + n_qk, *dbp = dgp + size_t(G) * BTH;
  if (s.Dk <= 32) launch_bwd_reg<32>(dqp, dkp, dbp, dgp, dv, dstate0, dout, dstate_in, q, k, v, g, beta, state0, ckpt, segbuf, s, G);
  else if (s.Dk <= 64) launch_bwd_reg<64>(dqp, dkp, dbp, dgp, dv, dstate0, dout, dstate_in, q, k, v, g, beta, state0, ckpt, segbuf, s, G);
  else launch_bwd_reg<128>(dqp, dkp, dbp, dgp, dv, dstate0, dout, dstate_in, q, k, v, g, beta, state0, ckpt, segbuf, s, G);
  SR_CUDA_LAUNCHED("delta_rule_bwd");
  dr_sum_partials_k<<<blocks_for(size_t(s.B) * s.T * s.Hk * s.Dk + BTH, 256), 256, 0, stream()>>>(dq, dk, dg, dbeta, dqp, dkp,
                                                                                           dgp, dbp, s, G);
  SR_CUDA_LAUNCHED("delta_rule_bwd sums");
  device_free(ckpt);
}
}  // namespace

void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s) {
  if (s.Hv % s.Hk) fail("delta_rule (cuda)", "value heads must be a multiple of key heads");
  if (delta_chunked_enabled() &&
      delta_rule_bwd_chunked(dq, dk, dv, dg, dbeta, dstate0, dout, dstate_in, q, k, v, g, beta, state0, s))
    return;
  if (s.Dk <= 128) {
    delta_rule_bwd_reg(dq, dk, dv, dg, dbeta, dstate0, dout, dstate_in, q, k, v, g, beta, state0, s);
    return;
  }
  const size_t smem = bwd_smem(s);  // larger key heads: the shared-memory kernel
  check_delta_shape(s, smem);
  SR_CUDA(cudaFuncSetAttribute(dr_bwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int C = std::max(1, s.chunk), nseg = (s.T + C - 1) / C, blocks = s.B * s.Hv;
  if (blocks == 0 || s.T == 0) return;
  const size_t S = size_t(s.Dk) * s.Dv, BTH = size_t(s.B) * s.T * s.Hv, per_head = BTH * s.Dk;
  float* ckpt = static_cast<float*>(device_alloc(size_t(blocks) * nseg * S * sizeof(float)));
  float* segbuf = static_cast<float*>(device_alloc(size_t(blocks) * C * S * sizeof(float)));
  float* dqh = static_cast<float*>(device_alloc((2 * per_head + 2 * BTH) * sizeof(float)));
  float *dkh = dqh + per_head, *dgh = dkh + per_head, *dbh = dgh + BTH;
  dr_bwd_k<<<blocks, round32(std::max(s.Dk, s.Dv)), smem, stream()>>>(dqh, dkh, dv, dgh, dbh, dstate0, dout, dstate_in,
                                                                      q, k, v, g, beta, state0, ckpt, segbuf, s, C);
  SR_CUDA_LAUNCHED("delta_rule_bwd");
  // one column group: the sums run over the GQA group's value heads only
  dr_sum_partials_k<<<blocks_for(size_t(s.B) * s.T * s.Hk * s.Dk + BTH, 256), 256, 0, stream()>>>(dq, dk, dg, dbeta, dqh,
                                                                                           dkh, dgh, dbh, s, 1);
  SR_CUDA_LAUNCHED("delta_rule_bwd sums");
  device_free(dqh);
  device_free(segbuf);
  device_free(ckpt);
}

}  // namespace sr::cuda::ops
