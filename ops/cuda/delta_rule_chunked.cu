// The chunked generalized delta rule on the GPU, forward and backward: one kernel family for
// RWKV-7's wkv (gdr_fwd/bwd) and Gated DeltaNet's gated delta rule (delta_rule_fwd/bwd), which
// the row loader maps onto it on the fly (r = scale q, w = e^g, a = k, b = -e^g beta k, v = beta v).
// The math is the CPU scan's (ops/cpu/generalized_delta_rule.cpp), reorganized as in
// flash-linear-attention so that almost everything runs in parallel over all chunks of all heads.
// Per chunk z of C tokens with in-chunk cumulative log decay gamma (gamma_n at the chunk's end):
//   H-side rows   a~ = a e^{gamma_{t-1}}, r~ = r e^{gamma_t}       (|.| <= |a|, |r| for decays <= 1)
//   update rows   b' = b e^{gamma_n - gamma_t}, k' = k e^{gamma_n - gamma_t}
//   intra-chunk   L_ab = mask(X_a Y_b^T (.) Gam_a), L_ak = mask(X_a Y_k^T (.) Gam_a),
//                 M_rb = mask(X_r Y_b^T (.) Gam_r), M_rk = mask(X_r Y_k^T (.) Gam_r)
//     masks: L strictly lower, M lower with the diagonal. Two forms of the same products:
//     per-channel decay (RWKV-7): split exponentials X_a = a~, X_r = r~, Y = b e^{-gamma},
//       k e^{-gamma}, Gam = 1; exact in fp32 while |gamma| <= 40 within the chunk (RWKV-7's decay
//       bound gives at most 38.8 for 64 tokens), otherwise the call returns false and the caller
//       runs the token-serial kernels;
//     scalar decay (Gated DeltaNet): raw rows X_a = a, X_r = r, Y = b, k and relative factors
//       Gam_a[t,s] = e^{gamma_{t-1} - gamma_s}, Gam_r[t,s] = e^{gamma_t - gamma_s} (<= 1: never overflows).
//   T = (I - L_ab)^-1;  W = T a~;  U0 = T L_ak V;  A_z = B'^T W;  B_z = B'^T U0 + K'^T V
//   the only sequential part, per head and column of the state (a Dk x Dk product per chunk):
//     H_{z+1} = D_z H_z + A_z H_z + B_z          (D_z = diag e^{gamma_n})
//   then again in parallel:  U = W H_z + U0;  Y = R~ H_z + M_rb U + M_rk V.
// Backward: the forward is recomputed; the reverse pass carries
//     dH_z = D_z dH_{z+1} + A_z^T dH_{z+1} + E_z,  E_z = R~^T dY + W^T (M_rb^T dY),
// and every chunk's input gradients follow in parallel (the GEMMs of the CPU chunk_bwd, dR = T^T dU
// instead of a back substitution); one elementwise pass then applies the exponential scalings,
// sums the log-decay gradient (per channel, or per token for a scalar decay, with the Gam terms)
// and takes its reverse cumulative sum. All GEMMs are batched cuBLAS in exact fp32 (standard 3).
// Tokens past T are padded with w = 1 and zeros.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/delta_rule_chunked.h"

namespace sr::cuda {
namespace {
constexpr float kMaxLogDecay = 40.0f;

// Where the rows come from: RWKV-7's tensors [B,T,H,D] or Gated DeltaNet's (q, k [B,T,Hk,Dk],
// v [B,T,Hv,Dv], g, beta [B,T,Hv]); H = the value heads. gdn = the scalar-decay form.
struct Rows {
  bool gdn = false;
  const float *r = nullptr, *w = nullptr, *a = nullptr, *b = nullptr, *k = nullptr, *v = nullptr;  // RWKV-7
  const float *q = nullptr, *g = nullptr, *beta = nullptr;                                        // GDN (k, v shared)
  float scale = 1.0f;
  int Hk = 1;
};
// A group of heads bh0 .. bh0+nbh-1 (bh = batch * H + head), N chunks each; chunk z = local head * N + c.
struct Geo {
  int B, T, H, Dk, Dv, C, N, bh0, nbh;
  __host__ __device__ int Z() const { return nbh * N; }
};

__device__ inline size_t key_row(const Rows& R, const Geo& G, int b, int t, int h) {
  return R.gdn ? ((size_t(b) * G.T + t) * R.Hk + h / (G.H / R.Hk)) * G.Dk : ((size_t(b) * G.T + t) * G.H + h) * G.Dk;
}
__device__ inline size_t val_row(const Geo& G, int b, int t, int h) { return ((size_t(b) * G.T + t) * G.H + h) * G.Dv; }
__device__ inline size_t gate_at(const Geo& G, int b, int t, int h) { return (size_t(b) * G.T + t) * G.H + h; }

struct Packed {  // [Z, C, Dk] unless noted
  float *g, *at, *rt, *bt, *kt, *xa, *xr, *yb, *yk;  // xa, xr alias at, rt in the per-channel form
  float* V;                                          // [Z, C, Dv]
};

// Whether channel i of chunk c of head (b, h) leaves the chunked forms' range: per channel, a
// split exponential past e^+-40 (or a NaN / non-positive decay); scalar, a relative factor
// e^{gamma_t - gamma_s} (s <= t) or e^{gamma_t} past e^40 (growing decays, g > 0, which Gated
// DeltaNet's gates never produce). g (optional) receives the cumulative log decays [C] (stride Dk).
__device__ inline bool out_of_range(const Rows& R, const Geo& G, int b, int h, int c, int i, float* g) {
  float acc = 0.0f, lowest = 0.0f;
  bool bad = false;
  for (int tt = 0; tt < G.C; ++tt) {
    const int t = c * G.C + tt;
    float lw = 0.0f;
    if (t < G.T) lw = R.gdn ? R.g[gate_at(G, b, t, h)] : logf(R.w[key_row(R, G, b, t, h) + i]);
    acc += lw;
    if (R.gdn ? !(acc - lowest <= kMaxLogDecay) : !(fabsf(acc) <= kMaxLogDecay)) bad = true;
    lowest = fminf(lowest, acc);
    if (g) g[size_t(tt) * G.Dk] = acc;
  }
  return bad;
}

// Every chunk of every head at once (grid B*H*N, Dk threads; G.bh0 = 0): raises *overflow when
// any chunk is out of range, before anything is written, so a call either runs the scan for all
// heads or leaves them all to the token kernels.
__global__ void range_check_k(int* overflow, Rows R, Geo G) {
  const int z = blockIdx.x, bh = z / G.N, c = z % G.N, i = threadIdx.x;
  if (i < G.Dk && out_of_range(R, G, bh / G.H, bh % G.H, c, i, nullptr)) atomicExch(overflow, 1);
}

// One block per chunk z; thread i < Dk walks channel i over the chunk's tokens, thread j < Dv
// copies value column j (inputs already range-checked).
__global__ void pack_k(Packed P, Rows R, Geo G) {
  const int z = blockIdx.x, hl = z / G.N, c = z % G.N, bhg = G.bh0 + hl, b = bhg / G.H, h = bhg % G.H;
  const int i = threadIdx.x, C = G.C, Dk = G.Dk;
  if (i < Dk) {
    out_of_range(R, G, b, h, c, i, P.g + size_t(z) * C * Dk + i);
    const float gn = P.g[(size_t(z) * C + C - 1) * Dk + i];
    float prev = 0.0f;
    for (int tt = 0; tt < C; ++tt) {
      const int t = c * C + tt;
      const size_t o = (size_t(z) * C + tt) * Dk + i;
      float rv = 0.0f, av = 0.0f, bv = 0.0f, kv = 0.0f;
      if (t < G.T) {
        const size_t ik = key_row(R, G, b, t, h) + i;
        if (R.gdn) {
          const size_t gi = gate_at(G, b, t, h);
          kv = R.k[ik], rv = R.scale * R.q[ik], av = kv, bv = -expf(R.g[gi]) * R.beta[gi] * kv;
        } else {
          rv = R.r[ik], av = R.a[ik], bv = R.b[ik], kv = R.k[ik];
        }
      }
      const float gt = P.g[o], to_end = expf(gn - gt);
      P.at[o] = av * expf(prev), P.rt[o] = rv * expf(gt);
      P.bt[o] = bv * to_end, P.kt[o] = kv * to_end;
      if (R.gdn) {
        P.xa[o] = av, P.xr[o] = rv, P.yb[o] = bv, P.yk[o] = kv;
      } else {
        const float einv = expf(-gt);
        P.yb[o] = bv * einv, P.yk[o] = kv * einv;
      }
      prev = gt;
    }
  }
  if (i < G.Dv)
    for (int tt = 0; tt < C; ++tt) {
      const int t = c * C + tt;
      float x = 0.0f;
      if (t < G.T) x = R.v[val_row(G, b, t, h) + i] * (R.gdn ? R.beta[gate_at(G, b, t, h)] : 1.0f);
      P.V[(size_t(z) * C + tt) * G.Dv + i] = x;
    }
}

// The relative decay factor of entry (t, s) of an intra-chunk matrix (scalar form; 1 otherwise):
// a-rows (L) use gamma_{t-1}, r-rows (M) gamma_t. gam: the chunk's gamma of channel 0, stride Dk.
__device__ inline float gamma_factor(const float* gam, int Dk, int t, int s, bool rrow) {
  const float gt = rrow ? gam[size_t(t) * Dk] : (t ? gam[size_t(t - 1) * Dk] : 0.0f);
  return expf(gt - gam[size_t(s) * Dk]);
}

// Forward: M <- mask(M) (.) Gam for the Z chunks' [C, C] matrices (one block per chunk).
__global__ void mask_scale_k(float* M, const float* g, Geo G, bool rrow, bool scalar) {
  const int C = G.C;
  const size_t z = blockIdx.x;
  const float* gam = g + z * C * G.Dk;
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    const int t = e / C, s = e % C;
    float& m = M[z * C * C + e];
    if (s > t || (s == t && !rrow)) m = 0.0f;
    else if (scalar) m *= gamma_factor(gam, G.Dk, t, s, rrow);
  }
}

// Backward of M = mask(X Y^T (.) Gam): dM (the GEMM gradient, in place) becomes
// Pm = mask(dM) (.) Gam, the gradient of X Y^T; in the scalar form the Gam factors' log-decay
// gradients are added to dgam [Z, C]: + row sums of dM (.) M to gamma_{t-1} (a-rows) or gamma_t
// (r-rows), - column sums to gamma_s. One block of C threads per chunk, a fixed order.
__global__ void mask_grad_k(float* dM, const float* M, float* dgam, const float* g, Geo G, bool rrow, bool scalar) {
  const int C = G.C, t = threadIdx.x;
  const size_t z = blockIdx.x, base = z * C * C;
  const float* gam = g + z * C * G.Dk;
  if (scalar) {
    float row = 0.0f, col = 0.0f;
    for (int s = 0; s < C; ++s) {
      const bool in_row = s < t || (s == t && rrow), in_col = t < s || (t == s && rrow);
      if (in_row) row += dM[base + size_t(t) * C + s] * M[base + size_t(t) * C + s];
      if (in_col) col += dM[base + size_t(s) * C + t] * M[base + size_t(s) * C + t];
    }
    dgam[z * C + t] -= col;
    __syncthreads();
    if (rrow) dgam[z * C + t] += row;
    else if (t) dgam[z * C + t - 1] += row;
    __syncthreads();
  }
  for (int s = 0; s < C; ++s) {
    float& d = dM[base + size_t(t) * C + s];
    if (s > t || (s == t && !rrow)) d = 0.0f;
    else if (scalar) d *= gamma_factor(gam, G.Dk, t, s, rrow);
  }
}

// One block per chunk, C threads (one per column): T = (I - L)^-1 for the strictly lower L
// (already masked): row t of T = e_t + sum_{q<t} L[t,q] T[q].
__global__ void unit_lower_inverse_k(float* Tm, const float* L, int C) {
  extern __shared__ float sm[];
  float *Ls = sm, *Ts = sm + C * (C + 1);
  const size_t base = size_t(blockIdx.x) * C * C;
  const int col = threadIdx.x;
  for (int t = 0; t < C; ++t) Ls[t * (C + 1) + col] = L[base + size_t(t) * C + col];
  __syncthreads();
  for (int t = 0; t < C; ++t) {
    float x = col == t ? 1.0f : 0.0f;
    for (int q = col; q < t; ++q) x += Ls[t * (C + 1) + q] * Ts[q * (C + 1) + col];
    Ts[t * (C + 1) + col] = x;
    __syncthreads();
  }
  for (int t = 0; t < C; ++t) Tm[base + size_t(t) * C + col] = Ts[t * (C + 1) + col];
}

// The sequential state pass, grid (nbh, ceil(Dv/kPassCols)), 256 threads; each block owns
// kPassCols columns of one head's state (columns are independent, so many small blocks keep the
// GPU busy while each walks its head's chunks in order). Forward: Hs[z] = H (the chunk's start),
// then H <- D_z H + A_z H + B_z. Reverse (B_z holds E_z): Hs[z] = dH (d of the chunk's end
// state), then dH <- D_z dH + A_z^T dH + E_z. The last value goes to Hend; X0 = null starts from
// zeros. A_z of the next step is loaded into registers while this step computes.
constexpr int kPassCols = 8, kPassThreads = 256, kPassPrefetch = 128 * 128 / kPassThreads;
__global__ void __launch_bounds__(kPassThreads) state_pass_k(float* Hs, float* Hend, const float* X0, const float* Az,
                                                             const float* Bz, const float* g, Geo G, bool reverse) {
  extern __shared__ float sm[];
  const int Dk = G.Dk, Dv = G.Dv, hl = blockIdx.x, j0 = blockIdx.y * kPassCols, lda = Dk + 1;
  float *A = sm, *X = A + Dk * lda, *Y = X + Dk * kPassCols, *d = Y + Dk * kPassCols;
  const size_t S = size_t(Dk) * Dv, AA = size_t(Dk) * Dk;
  const int nA = Dk * Dk, nX = Dk * kPassCols;
  for (int e = threadIdx.x; e < nX; e += kPassThreads) {
    const int i = e / kPassCols, j = j0 + e % kPassCols;
    X[e] = j < Dv && X0 ? X0[size_t(hl) * S + size_t(i) * Dv + j] : 0.0f;
  }
  float pre[kPassPrefetch];
  auto z_of = [&](int step) { return size_t(hl) * G.N + (reverse ? G.N - 1 - step : step); };
  auto prefetch = [&](int step) {
    const float* src = Az + z_of(step) * AA;
#pragma unroll
    for (int p = 0; p < kPassPrefetch; ++p) {
      const int e = threadIdx.x + p * kPassThreads;
      if (e < nA) pre[p] = src[e];
    }
  };
  prefetch(0);
  for (int step = 0; step < G.N; ++step) {
    const size_t z = z_of(step);
    __syncthreads();  // the previous step is done with A and d
#pragma unroll
    for (int p = 0; p < kPassPrefetch; ++p) {
      const int e = threadIdx.x + p * kPassThreads;
      if (e < nA) A[(e / Dk) * lda + e % Dk] = pre[p];
    }
    for (int i = threadIdx.x; i < Dk; i += kPassThreads) d[i] = expf(g[(z * G.C + G.C - 1) * Dk + i]);
    for (int e = threadIdx.x; e < nX; e += kPassThreads) {
      const int i = e / kPassCols, j = j0 + e % kPassCols;
      if (j < Dv) Hs[z * S + size_t(i) * Dv + j] = X[e];
    }
    __syncthreads();
    if (step + 1 < G.N) prefetch(step + 1);
    for (int e = threadIdx.x; e < nX; e += kPassThreads) {
      const int i = e / kPassCols, jj = e % kPassCols, j = j0 + jj;
      float acc = d[i] * X[e] + (j < Dv ? Bz[z * S + size_t(i) * Dv + j] : 0.0f);
      if (!reverse)
        for (int m = 0; m < Dk; ++m) acc += A[i * lda + m] * X[m * kPassCols + jj];
      else
        for (int m = 0; m < Dk; ++m) acc += A[m * lda + i] * X[m * kPassCols + jj];
      Y[e] = acc;
    }
    float* t = X;
    X = Y, Y = t;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nX; e += kPassThreads) {
    const int i = e / kPassCols, j = j0 + e % kPassCols;
    if (j < Dv) Hend[size_t(hl) * S + size_t(i) * Dv + j] = X[e];
  }
}

void state_pass(float* Hs, float* Hend, const float* X0, const float* Az, const float* Bz, const float* g,
                const Geo& G, bool reverse) {
  const size_t smem = (size_t(G.Dk) * (G.Dk + 1) + 2 * size_t(kPassCols) * G.Dk + G.Dk) * sizeof(float);
  SR_CUDA(cudaFuncSetAttribute(state_pass_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  state_pass_k<<<dim3(G.nbh, (G.Dv + kPassCols - 1) / kPassCols), kPassThreads, smem, stream()>>>(Hs, Hend, X0, Az,
                                                                                                   Bz, g, G, reverse);
  SR_CUDA_LAUNCHED(reverse ? "delta rule (chunked): reverse pass" : "delta rule (chunked): state pass");
}

// Y [Z,C,Dv] rows of real tokens -> y [B,T,H,Dv]; with to_chunks the other way (dy -> dY, padding 0).
__global__ void rows_k(float* chunked, float* flat, Geo G, bool to_chunks) {
  const size_t n = size_t(G.Z()) * G.C * G.Dv;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int j = int(e % G.Dv), tt = int(e / G.Dv % G.C);
    const int z = int(e / (size_t(G.Dv) * G.C)), hl = z / G.N, c = z % G.N, bhg = G.bh0 + hl;
    const int t = c * G.C + tt, b = bhg / G.H, h = bhg % G.H;
    if (to_chunks) chunked[e] = t < G.T ? flat[val_row(G, b, t, h) + j] : 0.0f;
    else if (t < G.T) flat[val_row(G, b, t, h) + j] = chunked[e];
  }
}

// Per chunk z and channel i: the end decay's log gradient e^{gamma_n} sum_j dH_{z+1} H_z.
__global__ void end_grad_k(float* dgend, const float* dHn, const float* Hs, const float* g, Geo G) {
  const size_t n = size_t(G.Z()) * G.Dk, S = size_t(G.Dk) * G.Dv;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int i = int(e % G.Dk), z = int(e / G.Dk);
    const float *dh = dHn + size_t(z) * S + size_t(i) * G.Dv, *h0 = Hs + size_t(z) * S + size_t(i) * G.Dv;
    float acc = 0.0f;
    for (int j = 0; j < G.Dv; ++j) acc += dh[j] * h0[j];
    dgend[e] = acc * expf(g[(size_t(z) * G.C + G.C - 1) * G.Dk + i]);
  }
}

struct Grads {  // RWKV-7: dr, dw, da, db, dk [B,T,H,Dk], dv. GDN: dq, dk per value head [B,T,Hv,Dk] (summed later), dv, dg, dbeta
  float *dr = nullptr, *dw = nullptr, *da = nullptr, *db = nullptr, *dk = nullptr, *dv = nullptr;
  float *dg = nullptr, *dbeta = nullptr;
};
struct ChunkGrads {  // [Z, C, Dk]: the H-side and update rows, the intra-chunk operands; dV [Z,C,Dv]; dgend [Z,Dk]; dgam [Z,C]
  float *drt, *dat, *dbt, *dkt, *dxa, *dxr, *dyb, *dyk, *dV, *dgend, *dgam;
};

// One block per chunk, threads = round32(max(Dk, Dv)): the exponential scalings, the log-decay
// gradient (per channel for RWKV-7; per token for GDN's scalar decay, summed over channels by
// block reductions in a fixed order) and its reverse cumulative sum, and (GDN) the chain rule
// through its mapping.
__global__ void input_grads_k(Grads out, Packed P, ChunkGrads D, Rows R, Geo G) {
  __shared__ float red[32];
  const int z = blockIdx.x, hl = z / G.N, c = z % G.N, bhg = G.bh0 + hl, b = bhg / G.H, h = bhg % G.H;
  const int i = threadIdx.x, Dk = G.Dk, Dv = G.Dv, C = G.C;
  const bool scalar = R.gdn;
  const size_t zc = size_t(z) * C;
  // the update rows b', k' depend on gamma_n: sum of their log-gradients over the chunk
  float to_end = 0.0f;
  if (i < Dk)
    for (int tt = 0; tt < C; ++tt) {
      const size_t o = (zc + tt) * Dk + i;
      to_end += D.dbt[o] * P.bt[o] + D.dkt[o] * P.kt[o];
    }
  float acc = 0.0f;  // reverse cumulative sum of d gamma (per channel, or per token in the scalar form)
  for (int tt = C - 1; tt >= 0; --tt) {
    const int t = c * C + tt;
    const bool valid = t < G.T;
    float dgt = 0.0f, part_b = 0.0f, part_beta = 0.0f;
    float dr_ = 0.0f, da_ = 0.0f, db_ = 0.0f, dk_ = 0.0f;
    if (i < Dk) {
      const size_t o = (zc + tt) * Dk + i;
      const float gt = P.g[o], e = expf(gt), eprev = tt ? expf(P.g[o - Dk]) : 1.0f, te = expf(P.g[(zc + C - 1) * Dk + i] - gt);
      dgt = D.drt[o] * P.rt[o] - D.dbt[o] * P.bt[o] - D.dkt[o] * P.kt[o];
      if (tt + 1 < C) dgt += D.dat[o + Dk] * P.at[o + Dk];
      if (tt == C - 1) dgt += to_end + D.dgend[size_t(z) * Dk + i];
      if (scalar) {
        dr_ = D.dxr[o] + D.drt[o] * e, da_ = D.dxa[o] + D.dat[o] * eprev;
        db_ = D.dyb[o] + D.dbt[o] * te, dk_ = D.dyk[o] + D.dkt[o] * te;
      } else {  // the intra operands are the split-scaled rows
        dgt += D.dxr[o] * P.rt[o] - D.dyb[o] * P.yb[o] - D.dyk[o] * P.yk[o];
        if (tt + 1 < C) dgt += D.dxa[o + Dk] * P.at[o + Dk];
        const float einv = expf(-gt);
        dr_ = (D.dxr[o] + D.drt[o]) * e, da_ = (D.dxa[o] + D.dat[o]) * eprev;
        db_ = D.dyb[o] * einv + D.dbt[o] * te, dk_ = D.dyk[o] * einv + D.dkt[o] * te;
      }
    }
    if (scalar) dgt = block_sum(dgt, red) + D.dgam[zc + tt];  // uniform per block
    acc += dgt;  // = d log w_t (per channel, or the token's scalar)
    if (i < Dk && valid) {
      const size_t ik = key_row(R, G, b, t, h) + i;
      if (!scalar) {
        out.dr[ik] = dr_, out.da[ik] = da_, out.db[ik] = db_, out.dk[ik] = dk_, out.dw[ik] = acc / R.w[ik];
      } else {
        const size_t gi = gate_at(G, b, t, h), ih = (size_t(b * G.T + t) * G.H + h) * Dk + i;
        const float eg = expf(R.g[gi]), beta = R.beta[gi], kv = R.k[ik];
        out.dr[ih] = R.scale * dr_;                // dq of this value head
        out.dk[ih] = da_ - eg * beta * db_ + dk_;  // dk of this value head
        part_b = db_ * (-eg * beta * kv);          // db * db/dg (b = -e^g beta k)
        part_beta = -eg * db_ * kv;
      }
    }
    if (i < Dv && valid) {
      const size_t iv = val_row(G, b, t, h) + i;
      const float dv2 = D.dV[(zc + tt) * Dv + i];
      if (!scalar) out.dv[iv] = dv2;
      else out.dv[iv] = R.beta[gate_at(G, b, t, h)] * dv2, part_beta += dv2 * R.v[iv];
    }
    if (scalar) {  // uniform per block: every thread takes part
      const float sb = block_sum(part_b, red), sbeta = block_sum(part_beta, red);
      if (threadIdx.x == 0 && valid) out.dg[gate_at(G, b, t, h)] = acc + sb, out.dbeta[gate_at(G, b, t, h)] = sbeta;
    }
  }
}

// dq, dk [B,T,Hk,Dk] = sums of the per-value-head rows [B,T,Hv,Dk] over each key head's group.
__global__ void sum_groups_k(float* dq, float* dk, const float* dqh, const float* dkh, size_t rows, int Hk, int Hv,
                             int Dk) {
  const int ratio = Hv / Hk;
  const size_t n = rows * Hk * Dk;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int i = int(e % Dk), kh = int(e / Dk % Hk);
    const size_t row = e / (size_t(Dk) * Hk);
    float sq = 0.0f, sk = 0.0f;
    for (int r = 0; r < ratio; ++r) {
      const size_t src = (row * Hv + size_t(kh) * ratio + r) * Dk + i;
      sq += dqh[src], sk += dkh[src];
    }
    dq[e] = sq, dk[e] = sk;
  }
}

// Scratch of one group of heads (floats).
struct Scratch {
  Packed P{};
  float *Wm, *U, *Y, *Lab, *Lak, *Mrb, *Mrk, *Tm, *Az, *Bz, *Hs, *Hend;  // forward
  ChunkGrads D{};
  float *dU, *dR, *dL, *dHn;  // backward
  float* base = nullptr;
  static size_t floats(const Geo& G, bool gdn, bool backward) {
    const size_t Z = G.Z(), CK = Z * G.C * G.Dk, CV = Z * G.C * G.Dv, CC = Z * G.C * G.C, S = size_t(G.Dk) * G.Dv;
    size_t n = (gdn ? 10 : 8) * CK + 3 * CV + 5 * CC + Z * G.Dk * G.Dk + 2 * Z * S + G.nbh * S;
    if (backward) n += 8 * CK + 3 * CV + CC + Z * S + Z * G.Dk + Z * G.C;
    return n;
  }
  void carve(const Geo& G, bool gdn, bool backward) {
    const size_t Z = G.Z(), CK = Z * G.C * G.Dk, CV = Z * G.C * G.Dv, CC = Z * G.C * G.C, S = size_t(G.Dk) * G.Dv;
    base = static_cast<float*>(device_alloc(floats(G, gdn, backward) * sizeof(float)));
    float* p = base;
    auto take = [&](size_t n) { float* r = p; p += n; return r; };
    P.g = take(CK), P.at = take(CK), P.rt = take(CK), P.bt = take(CK), P.kt = take(CK);
    P.xa = gdn ? take(CK) : P.at, P.xr = gdn ? take(CK) : P.rt, P.yb = take(CK), P.yk = take(CK);
    Wm = take(CK), P.V = take(CV), U = take(CV), Y = take(CV);
    Lab = take(CC), Lak = take(CC), Mrb = take(CC), Mrk = take(CC), Tm = take(CC);
    Az = take(Z * G.Dk * G.Dk), Bz = take(Z * S), Hs = take(Z * S), Hend = take(G.nbh * S);
    if (!backward) return;
    D.drt = take(CK), D.dat = take(CK), D.dbt = take(CK), D.dkt = take(CK);
    D.dxa = take(CK), D.dxr = take(CK), D.dyb = take(CK), D.dyk = take(CK);
    dU = take(CV), D.dV = take(CV), dR = take(CV), dL = take(CC), dHn = take(Z * S), D.dgend = take(Z * G.Dk);
    D.dgam = take(Z * G.C);
  }
  ~Scratch() { if (base) device_free(base); }
};

// Row-major batched GEMM over the group's Z chunks: C = op(A) op(B) + beta C.
struct Batched {
  int Z;
  void operator()(bool ta, bool tb, int m, int n, int k, const float* A, long long sA, const float* B, long long sB,
                  float beta, float* C, long long sC) const {
    gemm_rm_batched(ta, tb, m, n, k, A, sA, B, sB, beta, C, sC, Z);
  }
};

// Packs the rows and runs the forward: Hs = chunk-start states, Hend = end states, U; Y =
// outputs when want_y.
void forward_chunks(const Rows& R, const Geo& G, const float* H0, Scratch& w, bool want_y) {
  const int C = G.C, Dk = G.Dk, Dv = G.Dv, Z = G.Z();
  const long long CK = C * Dk, CV = C * Dv, CC = C * C, S = Dk * Dv;
  const Packed& P = w.P;
  pack_k<<<Z, (std::max(Dk, Dv) + 31) / 32 * 32, 0, stream()>>>(P, R, G);
  SR_CUDA_LAUNCHED("delta rule (chunked): pack");
  const Batched bg{Z};
  bg(false, true, C, C, Dk, P.xa, CK, P.yb, CK, 0.0f, w.Lab, CC);
  bg(false, true, C, C, Dk, P.xa, CK, P.yk, CK, 0.0f, w.Lak, CC);
  bg(false, true, C, C, Dk, P.xr, CK, P.yb, CK, 0.0f, w.Mrb, CC);
  bg(false, true, C, C, Dk, P.xr, CK, P.yk, CK, 0.0f, w.Mrk, CC);
  for (auto [M, rrow] : {std::pair{w.Lab, false}, {w.Lak, false}, {w.Mrb, true}, {w.Mrk, true}})
    mask_scale_k<<<Z, 256, 0, stream()>>>(M, P.g, G, rrow, R.gdn);
  SR_CUDA_LAUNCHED("delta rule (chunked): masks");
  unit_lower_inverse_k<<<Z, C, 2 * C * (C + 1) * sizeof(float), stream()>>>(w.Tm, w.Lab, C);
  SR_CUDA_LAUNCHED("delta rule (chunked): inverse");
  bg(false, false, C, Dk, C, w.Tm, CC, P.at, CK, 0.0f, w.Wm, CK);  // W = T a~
  bg(false, false, C, Dv, C, w.Lak, CC, P.V, CV, 0.0f, w.Y, CV);   // L_ak V
  bg(false, false, C, Dv, C, w.Tm, CC, w.Y, CV, 0.0f, w.U, CV);    // U0 = T L_ak V
  bg(true, false, Dk, Dk, C, P.bt, CK, w.Wm, CK, 0.0f, w.Az, Dk * Dk);
  bg(true, false, Dk, Dv, C, P.bt, CK, w.U, CV, 0.0f, w.Bz, S);
  bg(true, false, Dk, Dv, C, P.kt, CK, P.V, CV, 1.0f, w.Bz, S);
  state_pass(w.Hs, w.Hend, H0, w.Az, w.Bz, P.g, G, false);
  bg(false, false, C, Dv, Dk, w.Wm, CK, w.Hs, S, 1.0f, w.U, CV);  // U = W H + U0
  if (want_y) {
    bg(false, false, C, Dv, Dk, P.rt, CK, w.Hs, S, 0.0f, w.Y, CV);
    bg(false, false, C, Dv, C, w.Mrb, CC, w.U, CV, 1.0f, w.Y, CV);
    bg(false, false, C, Dv, C, w.Mrk, CC, P.V, CV, 1.0f, w.Y, CV);
  }
}

// Heads per group: as many as fit in an eighth of the device's memory (at least 1 GiB; heads in
// one group share the sequential passes, so fewer groups = more parallel blocks). A function of
// the device, not of the free memory, so every training step allocates the same sizes (the
// caching allocator then never calls cudaMalloc in the steady state).
// SMOOTHREAD_DELTA_SCRATCH_MIB overrides it; the tests use 1 to run every head in its own group.
int heads_per_group(Geo G, bool gdn, bool backward) {
  G.nbh = 1;
  const size_t per_head = Scratch::floats(G, gdn, backward) * sizeof(float);
  static const size_t device_total = [] {
    size_t free_b = 0, total_b = 0;
    SR_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return total_b;
  }();
  size_t budget = std::max(size_t(1) << 30, device_total / 8);
  if (const char* e = std::getenv("SMOOTHREAD_DELTA_SCRATCH_MIB")) budget = size_t(std::max(1L, std::atol(e))) << 20;
  return int(std::max<size_t>(1, std::min<size_t>(size_t(G.B) * G.H, budget / per_head)));
}

Geo geometry(int B, int T, int H, int Dk, int Dv, int chunk) {
  Geo G{};
  G.B = B, G.T = T, G.H = H, G.Dk = Dk, G.Dv = Dv;
  G.C = std::clamp(chunk, 2, kDeltaChunkMax);
  G.N = (T + G.C - 1) / G.C;
  return G;
}

// One range check over every chunk of every head (one host sync per call).
bool in_range(const Rows& R, Geo G) {
  G.bh0 = 0, G.nbh = G.B * G.H;
  int* flag = static_cast<int*>(device_alloc(sizeof(int)));
  SR_CUDA(cudaMemsetAsync(flag, 0, sizeof(int), stream()));
  range_check_k<<<G.Z(), (G.Dk + 31) / 32 * 32, 0, stream()>>>(flag, R, G);
  SR_CUDA_LAUNCHED("delta rule (chunked): range check");
  int overflow = 0;
  SR_CUDA(cudaMemcpy(&overflow, flag, sizeof(int), cudaMemcpyDeviceToHost));
  device_free(flag);
  return !overflow;
}

bool scan_fwd(float* y, float* state, const Rows& R, Geo G) {
  const size_t S = size_t(G.Dk) * G.Dv;
  const int total = G.B * G.H, per = heads_per_group(G, R.gdn, false);
  if (!in_range(R, G)) return false;
  for (int bh0 = 0; bh0 < total; bh0 += per) {
    G.bh0 = bh0, G.nbh = std::min(per, total - bh0);
    Scratch w;
    w.carve(G, R.gdn, false);
    forward_chunks(R, G, state + size_t(bh0) * S, w, true);
    rows_k<<<blocks_for(size_t(G.Z()) * G.C * G.Dv, 256), 256, 0, stream()>>>(w.Y, y, G, false);
    SR_CUDA_LAUNCHED("delta rule (chunked): outputs");
    SR_CUDA(cudaMemcpyAsync(state + size_t(bh0) * S, w.Hend, G.nbh * S * sizeof(float), cudaMemcpyDeviceToDevice,
                            stream()));
  }
  return true;
}

bool scan_bwd(const Grads& out, float* dstate0, const float* dy, const float* dstate_in, const float* state0,
              const Rows& R, Geo G) {
  const int C = G.C, Dk = G.Dk, Dv = G.Dv;
  const long long CK = C * Dk, CV = C * Dv, CC = C * C, S = Dk * Dv;
  const int total = G.B * G.H, per = heads_per_group(G, R.gdn, true);
  if (!in_range(R, G)) return false;
  for (int bh0 = 0; bh0 < total; bh0 += per) {
    G.bh0 = bh0, G.nbh = std::min(per, total - bh0);
    Scratch w;
    w.carve(G, R.gdn, true);
    forward_chunks(R, G, state0 + size_t(bh0) * S, w, false);
    const Batched bg{G.Z()};
    const Packed& P = w.P;
    const ChunkGrads& D = w.D;
    float* dY = w.Y;
    rows_k<<<blocks_for(size_t(G.Z()) * C * Dv, 256), 256, 0, stream()>>>(dY, const_cast<float*>(dy), G, true);
    SR_CUDA_LAUNCHED("delta rule (chunked): dy");
    float* E = w.Bz;
    bg(true, false, C, Dv, C, w.Mrb, CC, dY, CV, 0.0f, w.dU, CV);  // M_rb^T dY (the start of dU)
    bg(true, false, Dk, Dv, C, P.rt, CK, dY, CV, 0.0f, E, S);
    bg(true, false, Dk, Dv, C, w.Wm, CK, w.dU, CV, 1.0f, E, S);
    state_pass(w.dHn, dstate0 + size_t(bh0) * S, dstate_in ? dstate_in + size_t(bh0) * S : nullptr, w.Az, E, P.g, G,
               true);
    end_grad_k<<<blocks_for(size_t(G.Z()) * Dk, 128), 128, 0, stream()>>>(D.dgend, w.dHn, w.Hs, P.g, G);
    SR_CUDA_LAUNCHED("delta rule (chunked): end gradients");
    SR_CUDA(cudaMemsetAsync(D.dgam, 0, size_t(G.Z()) * C * sizeof(float), stream()));
    const float* dHn = w.dHn;  // H_{z+1} = D H + B'^T U + K'^T V
    bg(false, false, C, Dv, Dk, P.bt, CK, dHn, S, 1.0f, w.dU, CV);
    bg(false, false, C, Dv, Dk, P.kt, CK, dHn, S, 0.0f, D.dV, CV);
    bg(true, false, C, Dv, C, w.Mrk, CC, dY, CV, 1.0f, D.dV, CV);
    bg(false, true, C, Dk, Dv, w.U, CV, dHn, S, 0.0f, D.dbt, CK);
    bg(false, true, C, Dk, Dv, P.V, CV, dHn, S, 0.0f, D.dkt, CK);
    bg(false, true, C, Dk, Dv, dY, CV, w.Hs, S, 0.0f, D.drt, CK);
    // M = mask(X Y^T (.) Gam) with dM = Pa Pb^T: dX (+)= Pm Y, dY (+)= Pm^T X
    auto intra = [&](const float* Pa, const float* Pb, const float* M, bool rrow, const float* X, const float* Yo,
                     float* dX, float* dYo, float bx, float by) {
      bg(false, true, C, C, Dv, Pa, CV, Pb, CV, 0.0f, w.dL, CC);
      mask_grad_k<<<G.Z(), C, 0, stream()>>>(w.dL, M, D.dgam, P.g, G, rrow, R.gdn);
      SR_CUDA_LAUNCHED("delta rule (chunked): mask gradients");
      bg(false, false, C, Dk, C, w.dL, CC, Yo, CK, bx, dX, CK);
      bg(true, false, C, Dk, C, w.dL, CC, X, CK, by, dYo, CK);
    };
    intra(dY, w.U, w.Mrb, true, P.xr, P.yb, D.dxr, D.dyb, 0.0f, 0.0f);
    intra(dY, P.V, w.Mrk, true, P.xr, P.yk, D.dxr, D.dyk, 1.0f, 0.0f);
    bg(true, false, C, Dv, C, w.Tm, CC, w.dU, CV, 0.0f, w.dR, CV);  // dR = T^T dU
    bg(false, true, C, Dk, Dv, w.dR, CV, w.Hs, S, 0.0f, D.dat, CK);
    bg(true, false, C, Dv, C, w.Lak, CC, w.dR, CV, 1.0f, D.dV, CV);
    intra(w.dR, w.U, w.Lab, false, P.xa, P.yb, D.dxa, D.dyb, 0.0f, 1.0f);
    intra(w.dR, P.V, w.Lak, false, P.xa, P.yk, D.dxa, D.dyk, 1.0f, 1.0f);
    input_grads_k<<<G.Z(), (std::max(Dk, Dv) + 31) / 32 * 32, 0, stream()>>>(out, P, D, R, G);
    SR_CUDA_LAUNCHED("delta rule (chunked): input gradients");
  }
  return true;
}
}  // namespace

bool delta_chunked_enabled() {
  static const char* e = std::getenv("SMOOTHREAD_DELTA_CHUNKED");
  return !(e && std::string(e) == "0");
}

namespace {
// Auto mode: the token kernels run one block per (sequence, head, 32 state columns) and walk the
// tokens in order, so once they have a block for every SM they are throughput-bound and cheaper
// than the scan's extra traffic (measured on the H200: 16 sequences x 6 heads of 64, 192 blocks,
// trained at 363k tok/s with the token kernels and 248k with the scan; one sequence x 8 heads of
// 128, 32 blocks, at 8.5k and 20.4k). SMOOTHREAD_DELTA_CHUNKED=1 forces the scan.
bool chunked_pays(int BH, int Dv) {
  static const char* e = std::getenv("SMOOTHREAD_DELTA_CHUNKED");
  if (e && std::string(e) == "1") return true;
  static const int sms = [] {
    int dev = 0, n = 0;
    SR_CUDA(cudaGetDevice(&dev));
    SR_CUDA(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return size_t(BH) * ((Dv + 31) / 32) < size_t(sms);
}
}  // namespace

namespace {
bool chunked_shape_ok(int T, int Dk, int Dv) { return T >= kDeltaChunkMinTokens && Dk <= 128 && Dv <= 128; }
}  // namespace

bool gdr_fwd_chunked(float* y, float* state, const float* r, const float* w, const float* a, const float* b,
                     const float* k, const float* v, const GdrShape& s) {
  if (!chunked_shape_ok(s.T, s.Dk, s.Dv) || !s.B || !s.H || !chunked_pays(s.B * s.H, s.Dv)) return false;
  Rows R;
  R.r = r, R.w = w, R.a = a, R.b = b, R.k = k, R.v = v;
  return scan_fwd(y, state, R, geometry(s.B, s.T, s.H, s.Dk, s.Dv, s.chunk));
}

bool gdr_bwd_chunked(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
                     const float* dstate_in, const float* r, const float* w, const float* a, const float* b,
                     const float* k, const float* v, const float* state0, const GdrShape& s) {
  if (!chunked_shape_ok(s.T, s.Dk, s.Dv) || !s.B || !s.H || !chunked_pays(s.B * s.H, s.Dv)) return false;
  Rows R;
  R.r = r, R.w = w, R.a = a, R.b = b, R.k = k, R.v = v;
  Grads out;
  out.dr = dr, out.dw = dw, out.da = da, out.db = db, out.dk = dk, out.dv = dv;
  return scan_bwd(out, dstate0, dy, dstate_in, state0, R, geometry(s.B, s.T, s.H, s.Dk, s.Dv, s.chunk));
}

bool delta_rule_fwd_chunked(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                            const float* beta, const DeltaShape& s) {
  if (!chunked_shape_ok(s.T, s.Dk, s.Dv) || !s.B || !s.Hv || !chunked_pays(s.B * s.Hv, s.Dv)) return false;
  Rows R;
  R.gdn = true, R.q = q, R.k = k, R.v = v, R.g = g, R.beta = beta, R.scale = s.scale, R.Hk = s.Hk;
  return scan_fwd(out, state, R, geometry(s.B, s.T, s.Hv, s.Dk, s.Dv, s.chunk));
}

bool delta_rule_bwd_chunked(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0,
                            const float* dout, const float* dstate_in, const float* q, const float* k, const float* v,
                            const float* g, const float* beta, const float* state0, const DeltaShape& s) {
  if (!chunked_shape_ok(s.T, s.Dk, s.Dv) || !s.B || !s.Hv || !chunked_pays(s.B * s.Hv, s.Dv)) return false;
  Rows R;
  R.gdn = true, R.q = q, R.k = k, R.v = v, R.g = g, R.beta = beta, R.scale = s.scale, R.Hk = s.Hk;
  const size_t nh = size_t(s.B) * s.T * s.Hv * s.Dk;
  float* per_head = static_cast<float*>(device_alloc(2 * nh * sizeof(float)));
  Grads out;
  out.dr = per_head, out.dk = per_head + nh, out.dv = dv, out.dg = dg, out.dbeta = dbeta;
  const bool ok = scan_bwd(out, dstate0, dout, dstate_in, state0, R, geometry(s.B, s.T, s.Hv, s.Dk, s.Dv, s.chunk));
  if (ok) {
    const size_t n = size_t(s.B) * s.T * s.Hk * s.Dk;
    sum_groups_k<<<blocks_for(n, 256), 256, 0, stream()>>>(dq, dk, per_head, per_head + nh, size_t(s.B) * s.T, s.Hk,
                                                            s.Hv, s.Dk);
    SR_CUDA_LAUNCHED("delta rule (chunked): key-head sums");
  }
  device_free(per_head);
  return ok;
}

}  // namespace sr::cuda
