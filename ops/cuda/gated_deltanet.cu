// Gated DeltaNet layer ops on the GPU (contracts in ops/ops.h, oracle in ops/ref/gated_deltanet.h).
// All fp32: the recurrent state, gates and reductions stay in fp32 (standard 3).
//
// Gated delta rule: one block per (batch, value head); the state H [Dk, Dv] lives in shared memory,
// thread j owns column j (H^T k, the update and H^T q are column-local, so a token costs no
// communication beyond loading q_t and k_t). The sequence is walked token by token: exact, the
// same order of operations as the reference, and O(1) state for decode and chunked prefill.
// Backward: forward once keeping a checkpoint of H every C = DeltaShape::chunk tokens (global
// scratch), then per segment from the last: recompute the C states before each token, and walk the
// tokens backwards with dH in shared memory. dq/dk need sums over columns: a row phase (thread i
// owns row i) reads the two padded [Dk][Dv+1] tiles; dq/dk of value heads sharing a key head are
// summed in a fixed order by a second kernel (deterministic, no atomics).
// The elementwise pieces (causal conv, L2 norm, gates, gated RMSNorm) are one thread per channel
// or per row; their parameter gradients are summed in a fixed order too.
// Not chunked on tensor cores yet (the WY/UT form of the CPU backend): the time-serial walk has
// B x Hv blocks of parallelism, enough for decode and small models, slow for long training.
#include <cuda_runtime.h>

#include <algorithm>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"

namespace sr::cuda::ops {

namespace {
__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// Input of channel c at time t of batch b (t < 0: from the state, or 0).
__device__ __forceinline__ float conv_in(const float* x, const float* st, int b, int t, int c, int T, int Cc, int K) {
  if (t >= 0) return x[(size_t(b) * T + t) * Cc + c];
  return st ? st[(size_t(b) * Cc + c) * (K - 1) + (K - 1 + t)] : 0.0f;
}

// One thread per (b, c): out = silu(sum_j w[c,j] x[t-K+1+j]); then the state advances.
__global__ void conv_fwd_k(float* out, float* st, const float* x, const float* w, int B, int T, int Cc, int K) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * Cc) return;
  const int b = idx / Cc, c = idx % Cc;
  for (int t = 0; t < T; ++t) {
    float acc = 0.0f;
    for (int j = 0; j < K; ++j) acc += w[size_t(c) * K + j] * conv_in(x, st, b, t - K + 1 + j, c, T, Cc, K);
    out[(size_t(b) * T + t) * Cc + c] = acc * sigm(acc);
  }
  if (!st || K < 2) return;
  float next[16];  // K <= 17 (checked by the host)
  for (int j = 0; j < K - 1; ++j) next[j] = conv_in(x, st, b, T - (K - 1) + j, c, T, Cc, K);
  for (int j = 0; j < K - 1; ++j) st[(size_t(b) * Cc + c) * (K - 1) + j] = next[j];
}

// One thread per channel c, batches in order: dx (=) and dw[c,:] (+=), fixed summation order.
__global__ void conv_bwd_k(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* st0,
                           int B, int T, int Cc, int K) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= Cc) return;
  float dws[17] = {0};
  for (int b = 0; b < B; ++b) {
    float win[17] = {0};  // dpre[t .. t+K-1] (future taps), newest last
    for (int t = T - 1; t >= 0; --t) {
      float pre = 0.0f;
      for (int j = 0; j < K; ++j) pre += w[size_t(c) * K + j] * conv_in(x, st0, b, t - K + 1 + j, c, T, Cc, K);
      const float sg = sigm(pre);
      const float dp = dout[(size_t(b) * T + t) * Cc + c] * sg * (1.0f + pre * (1.0f - sg));
      for (int j = K - 1; j > 0; --j) win[j] = win[j - 1];  // win[m] = dpre[t + m]
      win[0] = dp;
      float acc = 0.0f;  // x[t] feeds out[t + K - 1 - j] through tap j
      for (int j = 0; j < K; ++j)
        if (t + K - 1 - j < T) acc += w[size_t(c) * K + j] * win[K - 1 - j];
      dx[(size_t(b) * T + t) * Cc + c] = acc;
      for (int j = 0; j < K; ++j) dws[j] += dp * conv_in(x, st0, b, t - K + 1 + j, c, T, Cc, K);
    }
  }
  for (int j = 0; j < K; ++j) dw[size_t(c) * K + j] += dws[j];
}

// Block-wide sum (blockDim a multiple of 32, <= 1024); every thread gets the total.
__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < nw; ++i) s += red[i];
  return s;
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

// grid B*Hv, block NT >= max(Dk, Dv) (multiple of 32). smem: Hp, dH [Dk][Dv+1]; q, k [Dk];
// dout, d, du [Dv]; red [32]. Scratch per block: ckpt [nseg][Dk*Dv], seg [C][Dk*Dv].
// dqh, dkh: [B,T,Hv,Dk] per value head (summed over the group afterwards).
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

// dq[b,t,kh,:] = sum over the group's value heads of dqh[b,t,h,:] (in head order); same for dk.
__global__ void dr_group_sum_k(float* dq, float* dk, const float* dqh, const float* dkh, DeltaShape s) {
  const size_t n = size_t(s.B) * s.T * s.Hk * s.Dk;
  const int ratio = s.Hv / s.Hk;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int i = int(e % s.Dk);
    const size_t bt = e / (size_t(s.Hk) * s.Dk);
    const int kh = int((e / s.Dk) % s.Hk);
    float aq = 0.0f, ak = 0.0f;
    for (int r = 0; r < ratio; ++r) {
      const size_t src = (bt * s.Hv + size_t(kh) * ratio + r) * s.Dk + i;
      aq += dqh[src], ak += dkh[src];
    }
    dq[e] = aq, dk[e] = ak;
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
  conv_fwd_k<<<blocks_for(size_t(B) * Cc, 128), 128, 0, stream()>>>(out, state, x, w, B, T, Cc, K);
  SR_CUDA_LAUNCHED("causal_conv_fwd");
}
void causal_conv_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* state0,
                     int B, int T, int Cc, int K) {
  if (K > 17) fail("causal_conv (cuda)", "kernel sizes above 17 are not supported");
  conv_bwd_k<<<blocks_for(size_t(Cc), 64), 64, 0, stream()>>>(dx, dw, dout, x, w, state0, B, T, Cc, K);
  SR_CUDA_LAUNCHED("causal_conv_bwd");
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
  const size_t smem = fwd_smem(s);
  check_delta_shape(s, smem);
  SR_CUDA(cudaFuncSetAttribute(dr_fwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  if (s.B * s.Hv == 0) return;
  dr_fwd_k<<<s.B * s.Hv, round32(s.Dv), smem, stream()>>>(out, state, q, k, v, g, beta, s);
  SR_CUDA_LAUNCHED("delta_rule_fwd");
}

void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s) {
  const size_t smem = bwd_smem(s);
  check_delta_shape(s, smem);
  SR_CUDA(cudaFuncSetAttribute(dr_bwd_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int C = std::max(1, s.chunk), nseg = (s.T + C - 1) / C, blocks = s.B * s.Hv;
  if (blocks == 0 || s.T == 0) return;
  const size_t S = size_t(s.Dk) * s.Dv, per_head = size_t(s.B) * s.T * s.Hv * s.Dk;
  float* ckpt = static_cast<float*>(device_alloc(size_t(blocks) * nseg * S * sizeof(float)));
  float* segbuf = static_cast<float*>(device_alloc(size_t(blocks) * C * S * sizeof(float)));
  float* dqh = static_cast<float*>(device_alloc(2 * per_head * sizeof(float)));
  dr_bwd_k<<<blocks, round32(std::max(s.Dk, s.Dv)), smem, stream()>>>(dqh, dqh + per_head, dv, dg, dbeta, dstate0, dout,
                                                                      dstate_in, q, k, v, g, beta, state0, ckpt,
                                                                      segbuf, s, C);
  SR_CUDA_LAUNCHED("delta_rule_bwd");
  dr_group_sum_k<<<blocks_for(size_t(s.B) * s.T * s.Hk * s.Dk, 256), 256, 0, stream()>>>(dq, dk, dqh, dqh + per_head,
                                                                                        s);
  SR_CUDA_LAUNCHED("delta_rule_bwd group sum");
  device_free(dqh);
  device_free(segbuf);
  device_free(ckpt);
}

}  // namespace sr::cuda::ops
