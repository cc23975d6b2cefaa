// CUDA versions of the row-wise ops, GEMMs (cuBLAS) and optimizer ops. Contracts in ops/ops.h;
// storage is fp32. Reductions (norms, sums, softmax statistics) accumulate in fp32 (fp64 for
// sum_squares), in a fixed order where the result feeds the optimizer (column sums for dW of
// RMSNorm and bias grads; sum_squares). embedding_bwd uses atomics (order-dependent rounding).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"

namespace sr::cuda {

namespace {
constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- embedding ----
__global__ void embedding_fwd_k(float* out, const int32_t* ids, const float* table, int N, int C) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < size_t(N) * C; i += size_t(gridDim.x) * blockDim.x) {
    size_t n = i / C, c = i % C;
    out[i] = table[size_t(ids[n]) * C + c];
  }
}
__global__ void embedding_bwd_k(float* dtable, const float* dout, const int32_t* ids, int N, int C) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < size_t(N) * C; i += size_t(gridDim.x) * blockDim.x) {
    size_t n = i / C, c = i % C;
    atomicAdd(dtable + size_t(ids[n]) * C + c, dout[i]);
  }
}

// ---- RMSNorm: one warp per row ----
// t: the residual to add into x first (add_rmsnorm_fwd: x += t; each lane writes and rereads only
// its own columns), or null.
// o16: the bf16 mirror of out (null when none), written with it (both RMSNorm kernels)
__global__ void rmsnorm_fwd_k(float* out, __nv_bfloat16* o16, float* rstd, float* x, const float* t, const float* w,
                              int N, int C, float eps) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= N) return;
  float* xr = x + size_t(row) * C;
  if (t)
    for (int c = lane; c < C; c += 32) xr[c] = xr[c] + t[size_t(row) * C + c];
  float ss = 0;
  for (int c = lane; c < C; c += 32) ss += xr[c] * xr[c];
  ss = warp_sum(ss);
  float r = rsqrtf(ss / C + eps);
  if (lane == 0) rstd[row] = r;
  for (int c = lane; c < C; c += 32) {
    const float y = xr[c] * r * w[c];
    out[size_t(row) * C + c] = y;
    if (o16) o16[size_t(row) * C + c] = __float2bfloat16_rn(y);
  }
}
// The same for few rows (decode: N = 1): a block of kNormThreads per row, each thread keeping its
// <= kNormPer elements of the row in registers, so the row is read once (C <= kNormThreads *
// kNormPer). A warp per row would make ~C/32 dependent passes over global memory per pass kind.
constexpr int kNormThreads = 256, kNormPer = 16;
__global__ void __launch_bounds__(kNormThreads) rmsnorm_row_k(float* out, __nv_bfloat16* o16, float* rstd, float* x,
                                                              const float* t, const float* w, int C, float eps) {
  __shared__ float red[32];
  const int row = blockIdx.x;
  float* xr = x + size_t(row) * C;
  float v[kNormPer];
  float ss = 0;
#pragma unroll
  for (int j = 0; j < kNormPer; ++j) {
    const int c = threadIdx.x + j * kNormThreads;
    v[j] = c < C ? xr[c] + (t ? t[size_t(row) * C + c] : 0.0f) : 0.0f;
    ss += v[j] * v[j];
  }
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / C + eps);
  if (threadIdx.x == 0) rstd[row] = r;
#pragma unroll
  for (int j = 0; j < kNormPer; ++j) {
    const int c = threadIdx.x + j * kNormThreads;
    if (c < C) {
      if (t) xr[c] = v[j];
      const float y = v[j] * r * w[c];
      out[size_t(row) * C + c] = y;
      if (o16) o16[size_t(row) * C + c] = __float2bfloat16_rn(y);
    }
  }
}
__nv_bfloat16* find_mirror(const float* p, size_t n, bool aligned, bool* only = nullptr);
// dx_c = r (w_c dy_c - x_c r^2 mean_k(w_k dy_k x_k)); add_dx: dx_c += that, rounded as a separate add;
// dx16: the bf16 mirror of dx (null when none), written with it
__global__ void rmsnorm_bwd_dx_k(float* dx, __nv_bfloat16* dx16, const float* dout, const float* x, const float* w,
                                 const float* rstd, int N, int C, bool add_dx) {
  int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= N) return;
  const float *xr = x + size_t(row) * C, *dy = dout + size_t(row) * C;
  float dot = 0;
  for (int c = lane; c < C; c += 32) dot += w[c] * dy[c] * xr[c];
  dot = warp_sum(dot) / C;
  float r = rstd[row];
  float* d = dx + size_t(row) * C;
  for (int c = lane; c < C; c += 32) {
    const float v = r * (w[c] * dy[c] - xr[c] * r * r * dot);
    const float o = add_dx ? __fadd_rn(d[c], v) : v;
    d[c] = o;
    if (dx16) dx16[size_t(row) * C + c] = __float2bfloat16_rn(o);
  }
}

// ---- RMSNorm over rows of 512..4096 columns, 16-byte vectors (the training shapes) ----
// A block of 256 threads walks `rows` consecutive rows; thread t owns the float4 columns t, t + 256,
// ... (PER of them) and keeps w's in registers. A row's sum is one block reduction with one barrier
// (the warps' partial sums double-buffered by row parity). The warp-a-row kernels above read with
// 4-byte loads and (backward) made a second pass over dy and x for the weight gradient; here the
// weight gradient's partial sums over the block's rows accumulate in registers while the row is read.
constexpr int kVecNormThreads = 256, kVecNormWarps = kVecNormThreads / 32, kVecNormMaxPer = 4;
__device__ __forceinline__ float rows_block_sum(float v, float (*red)[kVecNormWarps], int parity) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) red[parity][threadIdx.x / 32] = v;
  __syncthreads();  // red[parity] is written again two rows later, after the next row's barrier
  float r = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecNormWarps; ++i) r += red[parity][i];
  return r;
}
// Four-wide helpers (16-byte aligned fp32, 8-byte aligned bf16): the vector norms, cross-entropy,
// the elementwise ops and the conversions.
__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 ld4(const float* p, size_t i) { return ld4(p + 4 * i); }  // the i-th float4
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
// Four floats rounded to bf16 (nearest even), packed as 8 bytes.
__device__ __forceinline__ uint2 pack4_bf16(float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  return make_uint2(*reinterpret_cast<uint32_t*>(&lo), *reinterpret_cast<uint32_t*>(&hi));
}
__device__ __forceinline__ void st4_bf16(__nv_bfloat16* p, float4 v) { *reinterpret_cast<uint2*>(p) = pack4_bf16(v); }
// Four bf16 (8 bytes) widened to fp32 (bf16 = the upper half of an fp32).
__device__ __forceinline__ float4 unpack4_bf16(uint2 v) {
  return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                     __uint_as_float(v.y & 0xffff0000u));
}
// Forward: as rmsnorm_fwd_k (t: the residual added into x first; o16: out's bf16 mirror or null).
template <int PER>
__global__ void __launch_bounds__(kVecNormThreads) rmsnorm_fwd_vec_k(float* out, __nv_bfloat16* o16, float* rstd, float* x,
                                                                     const float* t, const float* w, int N, int C, int rows,
                                                                     float eps) {
  __shared__ float red[2][kVecNormWarps];
  const int C4 = C / 4;
  float4 wr[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c4 = threadIdx.x + j * kVecNormThreads;
    wr[j] = c4 < C4 ? ld4(w + 4 * c4) : make_float4(0, 0, 0, 0);
  }
  const int n0 = blockIdx.x * rows, n1 = min(N, n0 + rows);
  for (int n = n0; n < n1; ++n) {
    float* xr = x + size_t(n) * C;
    float4 v[PER];
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int c4 = threadIdx.x + j * kVecNormThreads;
      v[j] = make_float4(0, 0, 0, 0);
      if (c4 < C4) {
        v[j] = ld4(xr + 4 * c4);
        if (t) {
          const float4 a = ld4(t + size_t(n) * C + 4 * c4);
          v[j].x += a.x, v[j].y += a.y, v[j].z += a.z, v[j].w += a.w;
        }
      }
      ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
    const float r = rsqrtf(rows_block_sum(ss, red, n & 1) / C + eps);
    if (threadIdx.x == 0) rstd[n] = r;
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int c4 = threadIdx.x + j * kVecNormThreads;
      if (c4 >= C4) continue;
      if (t) st4(xr + 4 * c4, v[j]);
      const float4 y = make_float4(v[j].x * r * wr[j].x, v[j].y * r * wr[j].y, v[j].z * r * wr[j].z, v[j].w * r * wr[j].w);
      st4(out + size_t(n) * C + 4 * c4, y);
      if (o16) st4_bf16(o16 + size_t(n) * C + 4 * c4, y);
    }
  }
}
// Backward: dx as rmsnorm_bwd_dx_k (when dx is not null), and dw_partial[block][c] = sum over the
// block's rows of dy x r in row order (colsum_finish_k adds the blocks' partial sums into dw).
template <int PER>
__global__ void __launch_bounds__(kVecNormThreads) rmsnorm_bwd_vec_k(float* dx, __nv_bfloat16* dx16, float* dw_partial,
                                                                     const float* dout, const float* x, const float* w,
                                                                     const float* rstd, int N, int C, int rows, bool add_dx) {
  __shared__ float red[2][kVecNormWarps];
  const int C4 = C / 4;
  float4 wr[PER], acc[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c4 = threadIdx.x + j * kVecNormThreads;
    wr[j] = c4 < C4 ? ld4(w + 4 * c4) : make_float4(0, 0, 0, 0);
    acc[j] = make_float4(0, 0, 0, 0);
  }
  const int n0 = blockIdx.x * rows, n1 = min(N, n0 + rows);
  for (int n = n0; n < n1; ++n) {
    const size_t row = size_t(n) * C;
    float4 dy[PER], xv[PER];
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int c4 = threadIdx.x + j * kVecNormThreads;
      dy[j] = xv[j] = make_float4(0, 0, 0, 0);
      if (c4 < C4) dy[j] = ld4(dout + row + 4 * c4), xv[j] = ld4(x + row + 4 * c4);
      dot += wr[j].x * dy[j].x * xv[j].x + wr[j].y * dy[j].y * xv[j].y + wr[j].z * dy[j].z * xv[j].z +
             wr[j].w * dy[j].w * xv[j].w;
    }
    const float r = rstd[n];
    dot = rows_block_sum(dot, red, n & 1) / C;
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int c4 = threadIdx.x + j * kVecNormThreads;
      if (c4 >= C4) continue;
      acc[j].x += dy[j].x * xv[j].x * r, acc[j].y += dy[j].y * xv[j].y * r;
      acc[j].z += dy[j].z * xv[j].z * r, acc[j].w += dy[j].w * xv[j].w * r;
      if (!dx) continue;
      const float rr = r * r * dot;
      float4 v = make_float4(r * (wr[j].x * dy[j].x - xv[j].x * rr), r * (wr[j].y * dy[j].y - xv[j].y * rr),
                             r * (wr[j].z * dy[j].z - xv[j].z * rr), r * (wr[j].w * dy[j].w - xv[j].w * rr));
      if (add_dx) {
        const float4 d = ld4(dx + row + 4 * c4);
        v = make_float4(__fadd_rn(d.x, v.x), __fadd_rn(d.y, v.y), __fadd_rn(d.z, v.z), __fadd_rn(d.w, v.w));
      }
      st4(dx + row + 4 * c4, v);
      if (dx16) st4_bf16(dx16 + row + 4 * c4, v);
    }
  }
  if (dw_partial)
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int c4 = threadIdx.x + j * kVecNormThreads;
      if (c4 < C4) st4(dw_partial + size_t(blockIdx.x) * C + 4 * c4, acc[j]);
    }
}
// The float4 columns a thread of the vector kernels owns (0: those kernels do not apply: C not a
// multiple of 4 in 512..4096, or an operand not 16-byte aligned (bf16 mirrors: 8-byte)).
// SMOOTHREAD_VEC_NORM=0 keeps the warp kernels (the A/B switch).
int vec_norm_per(int C, std::initializer_list<const void*> f32, std::initializer_list<const void*> b16) {
  static const bool enabled = env_int("SMOOTHREAD_VEC_NORM", 1) != 0;
  if (!enabled || C % 4 || C < 512 || C > 4 * kVecNormThreads * kVecNormMaxPer) return 0;
  for (const void* p : f32)
    if (reinterpret_cast<uintptr_t>(p) % 16) return 0;
  for (const void* p : b16)
    if (reinterpret_cast<uintptr_t>(p) % 8) return 0;
  return (C / 4 + kVecNormThreads - 1) / kVecNormThreads;
}
template <class K, class... A>  // k: the kernel for PER = 1 .. kVecNormMaxPer
void launch_vec_norm(int per, K (&k)[kVecNormMaxPer], unsigned blocks, A... args) {
  k[per - 1]<<<blocks, kVecNormThreads, 0, stream()>>>(args...);
}
void rmsnorm_launch(float* out, float* rstd, float* x, const float* t, const float* w, int N, int C, float eps) {
  __nv_bfloat16* o16 = find_mirror(out, size_t(N) * C, false);
  if (N <= 64 && C <= kNormThreads * kNormPer) {
    rmsnorm_row_k<<<N, kNormThreads, 0, stream()>>>(out, o16, rstd, x, t, w, C, eps);
  } else if (const int per = vec_norm_per(C, {out, x, t, w}, {o16})) {
    constexpr int kRows = 4;  // rows a block: 1024 blocks at 4096 rows
    static void (*const k[kVecNormMaxPer])(float*, __nv_bfloat16*, float*, float*, const float*, const float*, int, int,
                                           int, float) = {rmsnorm_fwd_vec_k<1>, rmsnorm_fwd_vec_k<2>, rmsnorm_fwd_vec_k<3>,
                                                          rmsnorm_fwd_vec_k<4>};
    launch_vec_norm(per, k, unsigned((N + kRows - 1) / kRows), out, o16, rstd, x, t, w, N, C, kRows, eps);
  } else {
    rmsnorm_fwd_k<<<(N + 7) / 8, 256, 0, stream()>>>(out, o16, rstd, x, t, w, N, C, eps);
  }
}

// Deterministic column sums: partial[chunk][c] over fixed 64-row chunks, then an ordered sum.
// kind 0: sum_n dy[n,c]          (bias grads)
// kind 1: sum_n dy[n,c] x[n,c] r[n]  (RMSNorm weight grads)
// (64-row chunks: 4096 rows of 2048 columns make 1024 blocks; with 256-row chunks 256 blocks each
// walked 256 dependent rows, latency-bound. Loops unrolled by 8 so loads issue ahead of the adds,
// which stay in order.)
constexpr int kRowChunk = 64;
__global__ void colsum_partial_k(float* partial, const float* dy, const float* x, const float* r, int N, int C,
                                 int kind) {
  int c = blockIdx.x * blockDim.x + threadIdx.x, chunk = blockIdx.y;
  if (c >= C) return;
  int n0 = chunk * kRowChunk, n1 = min(N, n0 + kRowChunk);
  float s = 0;
#pragma unroll 8
  for (int n = n0; n < n1; ++n) {
    size_t i = size_t(n) * C + c;
    s += kind == 0 ? dy[i] : dy[i] * x[i] * r[n];
  }
  partial[size_t(chunk) * C + c] = s;
}
// out[c] += sum_k partial[k][c]: a block per 32 columns; warp g sums chunks g, g + 8, ... and the
// eight sums are added in warp order (a fixed order: the same bits every run)
constexpr int kFinishGroups = 8;
__global__ void __launch_bounds__(32 * kFinishGroups) colsum_finish_k(float* out, const float* partial, int chunks, int C) {
  __shared__ float part[kFinishGroups][32];
  const int lane = threadIdx.x % 32, grp = threadIdx.x / 32, c = blockIdx.x * 32 + lane;
  float s = 0;
  if (c < C) {
#pragma unroll 8
    for (int k = grp; k < chunks; k += kFinishGroups) s += partial[size_t(k) * C + c];
  }
  part[grp][lane] = s;
  __syncthreads();
  if (grp == 0 && c < C) {
    float t = part[0][lane];
#pragma unroll
    for (int g = 1; g < kFinishGroups; ++g) t += part[g][lane];
    out[c] += t;
  }
}
void colsum_finish(float* out, const float* partial, int chunks, int C) {
  colsum_finish_k<<<(C + 31) / 32, 32 * kFinishGroups, 0, stream()>>>(out, partial, chunks, C);
}
void column_sum_accumulate(float* out, const float* dy, const float* x, const float* r, int N, int C, int kind) {
  int chunks = (N + kRowChunk - 1) / kRowChunk;
  float* partial = static_cast<float*>(device_alloc(size_t(chunks) * C * sizeof(float)));
  colsum_partial_k<<<dim3((C + 127) / 128, chunks), 128, 0, stream()>>>(partial, dy, x, r, N, C, kind);
  colsum_finish(out, partial, chunks, C);
  SR_CUDA_LAUNCHED("column_sum");
  device_free(partial);  // stream-ordered reuse: later work on the same stream runs after these kernels
}

// ---- RoPE (HF rotate-half), angles in fp64 like the reference ----
// One thread per (token, rotary pair): the angle's sine and cosine (in double, as the reference) are
// computed once and applied to every head of the token (they were computed once per head before:
// the same doubles, so the same bits, at 1/H of the fp64 work).
// o16: the bf16 mirror of out (null when none), written with it (the attention's q and k operands).
__global__ void rope_k(float* out, __nv_bfloat16* o16, const float* x, const int32_t* pos, int N, int H, int D,
                       float theta, float sign) {
  const int half = D / 2;
  const size_t total = size_t(N) * half;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int m = int(i % half), n = int(i / half);
    double a = double(pos[n]) * pow(double(theta), -2.0 * m / D);
    double sd, cd;
    sincos(a, &sd, &cd);
    const float c = float(cd), s = sign * float(sd);
    for (int h = 0; h < H; ++h) {
      const size_t base = (size_t(n) * H + h) * D;
      const float x1 = x[base + m], x2 = x[base + m + half];
      const float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
      out[base + m] = y1;
      out[base + m + half] = y2;
      if (o16) o16[base + m] = __float2bfloat16_rn(y1), o16[base + m + half] = __float2bfloat16_rn(y2);
    }
  }
}

// ---- SwiGLU ----
// silu(g) * u (also what the decode GEMV's fused gate/up variant writes)
__device__ __forceinline__ float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }
// d(gate), d(up) of one element
__device__ __forceinline__ void swiglu_bwd1(float& dg, float& du, float d, float g, float u) {
  const float sg = 1.0f / (1.0f + expf(-g));
  du = d * g * sg;
  dg = d * u * sg * (1.0f + g * (1.0f - sg));
}

__host__ __device__ __forceinline__ bool aligned(const void* x, unsigned bytes) {
  return reinterpret_cast<uintptr_t>(x) % bytes == 0;
}
// An elementwise op's input: fp32 values, or the bf16 copy where that is the only one written
// (MirrorFill::gemm_output: a GEMM wrote it in bf16). The branch is the same for every thread.
struct In {
  const float* f;
  const __nv_bfloat16* h;
  __device__ float4 four(size_t i) const { return h ? unpack4_bf16(reinterpret_cast<const uint2*>(h)[i]) : ld4(f, i); }
  __device__ float one(size_t i) const { return h ? __bfloat162float(h[i]) : f[i]; }
  __host__ __device__ bool vec() const { return h ? aligned(h, 8) : aligned(f, 16); }  // four() applies
  __device__ In at(size_t off) const { return In{f ? f + off : nullptr, h ? h + off : nullptr}; }  // x + off
};
// ---- cross-entropy: one block per row ----
// One pass over the row (online softmax: each thread keeps a running max m and the sum s of
// exp(z - m), rescaled when m grows), four logits a load where the row is 16-byte aligned. The two
// passes before (max, then the sum) were latency-bound: one dependent 4-byte load per thread and
// step over a 600 KB row (151936 logits), 4.8 ms a 3b step.
// (m, s) of two parts -> (m, s) of both
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float M = fmaxf(m, m2);
  s = M == -INFINITY ? 0.0f : s * expf(m - M) + s2 * expf(m2 - M);
  m = M;
}
__device__ __forceinline__ void lse_add4(float& m, float& s, float4 q) {
  const float M = fmaxf(fmaxf(m, fmaxf(q.x, q.y)), fmaxf(q.z, q.w));
  s = s * expf(m - M) + expf(q.x - M) + expf(q.y - M) + expf(q.z - M) + expf(q.w - M);
  m = M;
}
// logits: fp32, or bf16 where that is the only copy (In)
__global__ void xent_fwd_k(float* loss, float* lse, In logits, const int32_t* targets, int V) {
  __shared__ float pm[32], ps[32];
  const In z = logits.at(size_t(blockIdx.x) * V);
  float m = -INFINITY, s = 0.0f;
  int v0 = 0;
  if (z.vec()) {
#pragma unroll 4
    for (int i = threadIdx.x; i < V / 4; i += blockDim.x) lse_add4(m, s, z.four(i));
    v0 = V / 4 * 4;
  }
  for (int v = v0 + threadIdx.x; v < V; v += blockDim.x) lse_merge(m, s, z.one(v), 1.0f);
  for (int o = 16; o > 0; o >>= 1) lse_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) pm[w] = m, ps[w] = s;
  __syncthreads();
  if (w) return;
  m = lane < int(blockDim.x >> 5) ? pm[lane] : -INFINITY;
  s = lane < int(blockDim.x >> 5) ? ps[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) lse_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (lane == 0) {
    const float L = m + logf(s);
    lse[blockIdx.x] = L;
    const int t = targets[blockIdx.x];
    loss[blockIdx.x] = t >= 0 ? L - z.one(t) : 0.0f;
  }
}
// d = g (softmax(z) - onehot(t)), four a store where the rows are 16-byte aligned;
// d16: the bf16 mirror of dlogits (null when none), written with it; dlogits null: the mirror alone
// (MirrorFill::only_mirror: the LM head's two backward GEMMs read only the bf16 copy).
__global__ void xent_bwd_k(float* dlogits, __nv_bfloat16* d16, In logits, const float* lse, const int32_t* targets,
                           const float* g, int V) {
  const size_t row = blockIdx.x;
  const int t = targets[row];
  const float gn = t >= 0 ? g[row] : 0.0f, L = lse[row];
  const In z = logits.at(row * V);
  float* d = dlogits ? dlogits + row * V : nullptr;
  __nv_bfloat16* h = d16 ? d16 + row * V : nullptr;
  auto one = [&](int v, float zv) { return gn == 0.0f ? 0.0f : gn * (expf(zv - L) - (v == t ? 1.0f : 0.0f)); };
  int v0 = 0;
  if (z.vec() && (!d || aligned(d, 16)) && (!h || aligned(h, 8))) {
#pragma unroll 4
    for (int i = threadIdx.x; i < V / 4; i += blockDim.x) {
      const float4 q = gn == 0.0f ? make_float4(0, 0, 0, 0) : z.four(i);
      const float4 r = make_float4(one(4 * i, q.x), one(4 * i + 1, q.y), one(4 * i + 2, q.z), one(4 * i + 3, q.w));
      if (d) reinterpret_cast<float4*>(d)[i] = r;
      if (h) reinterpret_cast<uint2*>(h)[i] = pack4_bf16(r);
    }
    v0 = V / 4 * 4;
  }
  for (int v = v0 + threadIdx.x; v < V; v += blockDim.x) {
    const float r = one(v, z.one(v));
    if (d) d[v] = r;
    if (h) h[v] = __float2bfloat16(r);
  }
}

// ---- elementwise / optimizer ----
__global__ void mul_k(float* out, const float* a, const float* b, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = a[i] * b[i];
}
__global__ void ring_store_kv_k(float* ring_k, float* ring_v, const float* k, const float* v, const int32_t* pos, int W,
                                size_t width) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x, slot = size_t(pos[0] % W) * width;
  if (i < width) ring_k[slot + i] = k[i], ring_v[slot + i] = v[i];
}
__global__ void strided_copy_k(float* dst, size_t ds, In src, size_t ss, size_t rows, size_t width) {
  const size_t n = rows * width;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    dst[(e / width) * ds + e % width] = src.one((e / width) * ss + e % width);
}
__global__ void scale_k(float* x, size_t n, float s) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) x[i] *= s;
}
__global__ void bias_add_k(float* out, const float* b, size_t rows, int O) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < rows * O; i += size_t(gridDim.x) * blockDim.x)
    out[i] += b[i % O];
}
// A grid-stride loop over n elements, four at a time when `vec` (the caller's pointers allow 16-byte
// fp32 accesses): four(i) handles elements 4i .. 4i + 3, one(i) element i (misaligned pointers, the
// tail).
template <class Four, class One>
__device__ __forceinline__ void grid_stride4(size_t n, bool vec, Four four, One one) {
  const size_t tid = blockIdx.x * size_t(blockDim.x) + threadIdx.x, stride = size_t(gridDim.x) * blockDim.x;
  size_t done = 0;
  if (vec) {
    for (size_t i = tid; i < n / 4; i += stride) four(i);
    done = n / 4 * 4;
  }
  for (size_t i = done + tid; i < n; i += stride) one(i);
}
__global__ void add_k(float* out, const float* a, const float* b, size_t n) {  // four-wide: the residual adds
  grid_stride4(
      n, aligned(out, 16) && aligned(a, 16) && aligned(b, 16),
      [&](size_t i) {
        const float4 A = ld4(a, i), B = ld4(b, i);
        reinterpret_cast<float4*>(out)[i] = make_float4(A.x + B.x, A.y + B.y, A.z + B.z, A.w + B.w);
      },
      [&](size_t i) { out[i] = a[i] + b[i]; });
}
// SwiGLU forward and backward, four elements a thread where every pointer allows 16-byte access.
// o16, dg16, du16: bf16 mirrors of the outputs (null when none), written in the same pass with the
// rounding of to_bf16, so the GEMMs that read the outputs next take them as they are; a null fp32
// output (MirrorFill::only_mirror) is not written.
__global__ void swiglu_fwd_k(float* out, __nv_bfloat16* o16, In g, In u, size_t n) {
  grid_stride4(
      n, aligned(out, 16) && g.vec() && u.vec() && aligned(o16, 8),
      [&](size_t i) {
        const float4 G = g.four(i), U = u.four(i);
        const float4 O = make_float4(swiglu1(G.x, U.x), swiglu1(G.y, U.y), swiglu1(G.z, U.z), swiglu1(G.w, U.w));
        if (out) reinterpret_cast<float4*>(out)[i] = O;
        if (o16) reinterpret_cast<uint2*>(o16)[i] = pack4_bf16(O);
      },
      [&](size_t i) {
        const float o = swiglu1(g.one(i), u.one(i));
        if (out) out[i] = o;
        if (o16) o16[i] = __float2bfloat16_rn(o);
      });
}
__global__ void swiglu_bwd_k(float* dg, float* du, __nv_bfloat16* dg16, __nv_bfloat16* du16, In dout, In g, In u,
                             size_t n) {
  grid_stride4(
      n, aligned(dg, 16) && aligned(du, 16) && dout.vec() && g.vec() && u.vec() && aligned(dg16, 8) && aligned(du16, 8),
      [&](size_t i) {
        const float4 D = dout.four(i), G = g.four(i), U = u.four(i);
        float4 DG, DU;
        swiglu_bwd1(DG.x, DU.x, D.x, G.x, U.x), swiglu_bwd1(DG.y, DU.y, D.y, G.y, U.y);
        swiglu_bwd1(DG.z, DU.z, D.z, G.z, U.z), swiglu_bwd1(DG.w, DU.w, D.w, G.w, U.w);
        if (dg) reinterpret_cast<float4*>(dg)[i] = DG;
        if (du) reinterpret_cast<float4*>(du)[i] = DU;
        if (dg16) reinterpret_cast<uint2*>(dg16)[i] = pack4_bf16(DG);
        if (du16) reinterpret_cast<uint2*>(du16)[i] = pack4_bf16(DU);
      },
      [&](size_t i) {
        float a, b;
        swiglu_bwd1(a, b, dout.one(i), g.one(i), u.one(i));
        if (dg) dg[i] = a;
        if (du) du[i] = b;
        if (dg16) dg16[i] = __float2bfloat16_rn(a);
        if (du16) du16[i] = __float2bfloat16_rn(b);
      });
}
constexpr int kSumBlocks = 1024;
__global__ void sum_squares_k(double* partial, const float* x, size_t n) {
  __shared__ double sh[kThreads];
  double s = 0;
  grid_stride4(
      n, aligned(x, 16),
      [&](size_t i) {
        const float4 q = reinterpret_cast<const float4*>(x)[i];
        s += double(q.x) * q.x, s += double(q.y) * q.y, s += double(q.z) * q.z, s += double(q.w) * q.w;
      },
      [&](size_t i) { s += double(x[i]) * x[i]; });
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}
// One AdamW step of one element: updates p, m, v; returns the new p.
__device__ __forceinline__ float adamw_elem(float& p, float g, float& m, float& v, bool decay, const AdamWStep& a) {
  const float gi = g * a.grad_scale;
  m = a.beta1 * m + (1.0f - a.beta1) * gi;
  v = a.beta2 * v + (1.0f - a.beta2) * gi * gi;
  const float mhat = m / a.bias_corr1, vhat = v / a.bias_corr2;
  const float wd = decay ? a.weight_decay : 0.0f;
  p = p - a.lr * (mhat / (sqrtf(vhat) + a.eps) + wd * p);
  return p;
}
// p16: the bf16 mirror of p (null when none), rewritten with the updated weights in the same pass.
// Four elements a thread and step (16-byte accesses) when every pointer allows it, one otherwise.
__global__ void adamw_k(float* p, __nv_bfloat16* p16, const float* g, float* m, float* v, const uint8_t* decay,
                        size_t n, AdamWStep a) {
  grid_stride4(
      n, aligned(p, 16) && aligned(g, 16) && aligned(m, 16) && aligned(v, 16) && aligned(p16, 8) && aligned(decay, 4),
      [&](size_t i) {
        float4 P = reinterpret_cast<float4*>(p)[i], M = reinterpret_cast<float4*>(m)[i], V = reinterpret_cast<float4*>(v)[i];
        const float4 G = reinterpret_cast<const float4*>(g)[i];
        const uchar4 D = decay ? reinterpret_cast<const uchar4*>(decay)[i] : make_uchar4(1, 1, 1, 1);
        adamw_elem(P.x, G.x, M.x, V.x, D.x, a), adamw_elem(P.y, G.y, M.y, V.y, D.y, a);
        adamw_elem(P.z, G.z, M.z, V.z, D.z, a), adamw_elem(P.w, G.w, M.w, V.w, D.w, a);
        reinterpret_cast<float4*>(p)[i] = P, reinterpret_cast<float4*>(m)[i] = M, reinterpret_cast<float4*>(v)[i] = V;
        if (p16) reinterpret_cast<uint2*>(p16)[i] = pack4_bf16(P);
      },
      [&](size_t i) {
        const float pi = adamw_elem(p[i], g[i], m[i], v[i], !decay || decay[i], a);
        if (p16) p16[i] = __float2bfloat16(pi);
      });
}
// fp32 <-> bf16 (round to nearest even). Four elements a thread and step (16-byte fp32 and 8-byte
// bf16 accesses) when both pointers allow it: the 2-byte stores of one element a thread left the
// conversion well below the memory bandwidth, and every GEMM's activation operand goes through it.
// The same rounding either way.
__global__ void to_bf16_k(__nv_bfloat16* d, const float* s, size_t n) {
  grid_stride4(
      n, aligned(s, 16) && aligned(d, 8),
      [&](size_t i) { reinterpret_cast<uint2*>(d)[i] = pack4_bf16(reinterpret_cast<const float4*>(s)[i]); },
      [&](size_t i) { d[i] = __float2bfloat16(s[i]); });
}
__global__ void from_bf16_k(float* d, const __nv_bfloat16* s, size_t n) {
  grid_stride4(
      n, aligned(d, 16) && aligned(s, 8),
      [&](size_t i) { reinterpret_cast<float4*>(d)[i] = unpack4_bf16(reinterpret_cast<const uint2*>(s)[i]); },
      [&](size_t i) { d[i] = __bfloat162float(s[i]); });
}

// ---- cuBLAS ----
struct Blas {
  cublasHandle_t h = nullptr;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  std::string mode = "bf16";
};
Blas& blas() {
  static Blas b;
  static std::once_flag once;
  std::call_once(once, [] {
    if (cublasCreate(&b.h) != CUBLAS_STATUS_SUCCESS) fail("cuda", "cublasCreate failed");
    cublasSetStream(b.h, stream());
  });
  return b;
}
void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuda", std::string("cuBLAS ") + what + " failed with status " + std::to_string(int(s)));
}
// ---- bf16 weight mirrors ----
// A model on this backend registers its fp32 parameter buffer; the mirror is a bf16 copy of it,
// rewritten by every registration (upload_params) and by AdamW as it updates the weights. GEMM
// operands that lie inside it are read from the mirror instead of being rounded again on every call:
// the same bf16 values, so results are bitwise unchanged, with one conversion pass per optimizer
// step instead of one per GEMM (forward, backward dx, recomputation).
//
// Activation mirrors use the same list: the model keeps a bf16 copy of an activation (an RMSNorm
// output, the SwiGLU product and its gradients, the residual gradient, the attention output and
// its q and k operands, the LM head's dlogits) that every GEMM (or attention) reading it, forward
// and backward, takes instead of rounding it again (h1 alone fed six roundings a layer). A copy that
// is the only one kept (only_mirror, gemm_output) is stored in the unwritten fp32 buffer itself (its
// first half), so those activations take half their fp32 memory's worth of bytes and nothing more. The
// RMSNorm, SwiGLU, RoPE and cross-entropy kernels write the copies of their outputs themselves;
// the attention output is rounded by one pass after it is written. Again the same bf16 values; the
// model drops them before the fp32 buffer changes.
struct WeightMirror {
  const float* base;
  size_t n;
  __nv_bfloat16* m;
  bool activation;
  bool only;     // MirrorFill::only_mirror / gemm_output: the fp32 activation is left unwritten
  bool inplace;  // (only) the copy lies in the fp32 buffer's own first half: no memory of its own
};
struct Mirrors {
  std::mutex mu;
  std::vector<WeightMirror> list;
  bool enabled = true;       // weight mirrors
  int activations = -1;      // activation mirrors: -1 = not set yet (SMOOTHREAD_ACT_MIRRORS, default on)
  int only = -1;             // MirrorFill::only_mirror honoured: -1 = not set yet (SMOOTHREAD_MIRROR_ONLY, default on)
  int gemm_out = -1;         // MirrorFill::gemm_output honoured: -1 = not set yet (SMOOTHREAD_GEMM_BF16_OUT, default on)
  bool poison = false;       // set_mirror_only_poison: only_mirror outputs get NaN in fp32 (tests)
  int only_count = 0;        // entries of `list` with `only` set (none outside training: no scan then)
  ActivationMirrorStats stats;
};
Mirrors& mirrors() {
  static Mirrors m;
  return m;
}
// The mirror entry holding all of [p, p + n), or null (M.mu held by the caller).
const WeightMirror* entry_of(const Mirrors& M, const float* p, size_t n) {
  for (const WeightMirror& w : M.list)
    if (p >= w.base && p + n <= w.base + w.n && (w.activation || M.enabled)) return &w;
  return nullptr;
}
// The mirror of [p, p + n), or null; `aligned`: only offsets that keep 16-byte alignment (cuBLAS
// picks its fastest kernels for aligned operands).
// only (when given): whether that mirror is the only copy (MirrorFill::only_mirror, gemm_output).
__nv_bfloat16* find_mirror(const float* p, size_t n, bool aligned, bool* only) {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  const WeightMirror* w = entry_of(M, p, n);
  if (only) *only = w && w->only;
  if (!w) return nullptr;
  const size_t off = size_t(p - w->base);
  return aligned && off % 8 ? nullptr : w->m + off;
}
// Fails (naming `who`) when any of [p, p + n) lies in an activation kept only as bf16
// (MirrorFill::only_mirror): an operand read in fp32 there would read unwritten memory.
void require_fp32_values(const float* p, size_t n, const char* who) {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  if (M.only_count == 0) return;  // (every fp32 GEMM asks: decode's small ones included)
  for (const WeightMirror& w : M.list)
    if (w.only && p < w.base + w.n && w.base < p + n)
      fail(who, "reads fp32 values of an activation kept only as bf16 (MirrorFill::only_mirror)");
}
// The fp32 output of an op whose activation mirror is its only copy: null (the op writes the mirror
// alone), or, with set_mirror_only_poison, NaN so that any fp32 read of it shows (tests).
float* fp32_output(float* out, size_t n, __nv_bfloat16* m16, bool only) {
  if (!out || !m16 || !only) return out;
  Mirrors& M = mirrors();
  {
    std::lock_guard<std::mutex> lock(M.mu);
    ++M.stats.only_mirror_writes;
  }
  if (M.poison) {  // all-ones: NaN, but for the floats that hold an in-place copy
    size_t lo = 0;
    {
      std::lock_guard<std::mutex> lock(M.mu);
      if (const WeightMirror* w = entry_of(M, out, n); w && w->inplace) {
        const size_t off = size_t(out - w->base), copy_floats = (w->n + 1) / 2;  // bf16 [0, N) = floats [0, N/2)
        lo = copy_floats > off ? std::min(n, copy_floats - off) : 0;
      }
    }
    if (lo < n) SR_CUDA(cudaMemsetAsync(out + lo, 0xff, (n - lo) * sizeof(float), stream()));
  }
  return nullptr;
}
// The bf16 copy of [p, p + n) when it is the only one kept (only_mirror, gemm_output), or null.
// (Asked by every linear_fwd and elementwise input: no scan while none is kept, as in decode.)
__nv_bfloat16* only_copy(const float* p, size_t n) {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  if (M.only_count == 0) return nullptr;
  const WeightMirror* w = entry_of(M, p, n);
  return w && w->only ? w->m + (p - w->base) : nullptr;
}
// o16[0, n) = product_into(fp32 scratch) rounded to bf16: an output kept only as bf16 whose GEMM
// has no bf16-output form (a bias, fp32 operands, no cuBLASLt algorithm).
template <class F>
void rounded_product(__nv_bfloat16* o16, size_t n, F&& product_into) {
  float* tmp = static_cast<float*>(device_alloc(n * sizeof(float)));
  product_into(tmp);
  to_bf16(o16, tmp, n);
  device_free(tmp);
}
// An elementwise op's input x[0, n): its bf16 copy when that is the only one, else the fp32 values.
In input_of(const float* x, size_t n) {
  if (__nv_bfloat16* m = only_copy(x, n)) return In{nullptr, m};
  return In{x, nullptr};
}


// ---- GEMMs with an epilogue (cuBLASLt): D = op(A) op(B) + C, or + a bias per row of D ----
// cublasGemmEx reads and writes one C; the model's residual adds (x + o_proj(att), xmid +
// down_proj(a)) keep x and xmid for the backward, so they ran as a GEMM into a scratch buffer and an
// add pass (two extra reads and a write of the activation). With C and D apart, and the qkv bias
// as the epilogue's bias, those passes go. alpha = beta = 1: D = acc + C (or acc + bias) is rounded
// once, as the GEMM then the add were (the fp32 accumulator is the GEMM's output).
struct LtGemms {
  cublasLtHandle_t h = nullptr;
  void* ws = nullptr;
  static constexpr size_t kWorkspace = size_t(32) << 20;
  struct Plan {
    bool ok = false;
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo[2] = {};  // [C added]: D = product, D = product + C
  };
  // (ta, tb, m, n, k, lda, ldb, ldc, D in bf16, alignment of A, B, C/D and the bias (0: none) in
  // bytes, candidates timed). Not whether C is added: one plan holds an algorithm for each, both
  // timed when it is made (a weight gradient's first write sets it, the next ones add to it: with a
  // plan for each, the second training step timed those shapes again, inside the step).
  std::map<std::tuple<int, int, int, int, int, int, int, int, bool, int, int, int, int, int>, Plan> plans;
  std::mutex mu;
};
// cuBLASLt's heuristic ranks its algorithms by a model of the GPU; at the small models' shapes
// (896-wide products) its first choice is often not the fastest. gemm_candidates() of them are
// timed on the first call of each shape (SMOOTHREAD_GEMM_CANDIDATES, default 8; 1: the first choice
// as it is; 0: plain GEMMs through cublasGemmEx's default algorithm, the path before this one) and the
// fastest is kept for the process. Every candidate computes the same product with fp32 accumulation;
// which one wins can differ between runs, so the last bits of GEMM results can differ between
// processes (SMOOTHREAD_GEMM_CANDIDATES=1 for bitwise-repeatable GPU runs). Nothing is timed while a
// CUDA graph is being captured (the first choice then).
constexpr int kMaxGemmCandidates = 16;
constexpr long long kMaxTimedPlans = 128;  // (a model's training shapes are ~20 plans per sequence length)
std::atomic<int>& gemm_candidates_setting() {
  static std::atomic<int> n{std::clamp(env_int("SMOOTHREAD_GEMM_CANDIDATES", 8), 0, kMaxGemmCandidates)};
  return n;
}
int gemm_candidates() { return gemm_candidates_setting().load(std::memory_order_relaxed); }
GemmPlanStats& plan_stats() {  // (guarded by LtGemms::mu)
  static GemmPlanStats st;
  return st;
}
bool gemm_log() {  // SMOOTHREAD_GEMM_LOG=1: each new GEMM plan and its candidates' times on stderr
  static const bool on = env_int("SMOOTHREAD_GEMM_LOG", 0) != 0;
  return on;
}
template <class Run>
cublasLtMatmulAlgo_t fastest_algo(const cublasLtMatmulHeuristicResult_t* res, int found, Run&& run) {
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  SR_CUDA(cudaStreamIsCapturing(stream(), &cap));
  if (cap != cudaStreamCaptureStatusNone) return res[0].algo;
  cudaEvent_t t0, t1;
  SR_CUDA(cudaEventCreate(&t0));
  SR_CUDA(cudaEventCreate(&t1));
  constexpr int kReps = 8;
  int best = 0;
  float best_ms = INFINITY;
  for (int i = 0; i < found; ++i) {
    if (run(res[i].algo) != CUBLAS_STATUS_SUCCESS) continue;  // warm-up (and a candidate that cannot run)
    if (gemm_log()) {
      const cudaError_t e = cudaStreamSynchronize(stream());
      std::fprintf(stderr, "[gemm]   candidate %d: %s\n", i, cudaGetErrorString(e));
    }
    SR_CUDA(cudaEventRecord(t0, stream()));
    for (int r = 0; r < kReps; ++r) run(res[i].algo);
    SR_CUDA(cudaEventRecord(t1, stream()));
    SR_CUDA(cudaEventSynchronize(t1));
    float ms = 0;
    SR_CUDA(cudaEventElapsedTime(&ms, t0, t1));
    plan_stats().timing_ms += ms;
    if (gemm_log()) std::fprintf(stderr, "[gemm]   candidate %d: %.4f ms\n", i, ms / kReps);
    if (ms < best_ms) best = i, best_ms = ms;
  }
  if (gemm_log()) std::fprintf(stderr, "[gemm]   chose %d\n", best);
  SR_CUDA(cudaEventDestroy(t0));
  SR_CUDA(cudaEventDestroy(t1));
  return res[best].algo;
}
LtGemms& lt() {
  static LtGemms g;
  static std::once_flag once;
  std::call_once(once, [] {
    if (cublasLtCreate(&g.h) != CUBLAS_STATUS_SUCCESS) fail("cuda", "cublasLtCreate failed");
    SR_CUDA(cudaMalloc(&g.ws, LtGemms::kWorkspace));
  });
  return g;
}
int alignment_of(uintptr_t u) {  // the largest power of two up to 256 dividing u (an address or a byte stride)
  int a = 256;
  while (a > 1 && u % a) a /= 2;
  return a;
}
int pointer_alignment(const void* p) { return alignment_of(reinterpret_cast<uintptr_t>(p)); }
// Column-major D[m,n] = op(A) op(B) + (C or bias[m]) on bf16 A and B, fp32 C, D and bias; false
// (nothing run) when cuBLASLt offers no algorithm for it. D16 (instead of D): D in bf16, the fp32
// accumulator rounded once (no C or bias then).
bool gemm_bf16_epilogue(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16* A, int lda,
                        const __nv_bfloat16* B, int ldb, const float* C, const float* bias, float* D, int ldc,
                        __nv_bfloat16* D16 = nullptr) {
  if (D16 && (C || bias)) return false;
  void* const out = D16 ? static_cast<void*>(D16) : static_cast<void*>(D);
  LtGemms& g = lt();
  std::lock_guard<std::mutex> lock(g.mu);
  // (the alignment every column of each matrix keeps: its pointer's and its leading dimension's)
  const int esD = D16 ? 2 : 4;
  const int alA = std::min(pointer_alignment(A), alignment_of(uintptr_t(lda) * 2)),
            alB = std::min(pointer_alignment(B), alignment_of(uintptr_t(ldb) * 2)),
            alC = std::min({pointer_alignment(out), C ? pointer_alignment(C) : 256,
                            alignment_of(uintptr_t(ldc) * esD)});
  const int tune = gemm_candidates();
  const int alBias = bias ? pointer_alignment(bias) : 0;
  auto key = std::make_tuple(int(ta), int(tb), m, n, k, lda, ldb, ldc, D16 != nullptr, alA, alB, alC, alBias, tune);
  auto it = g.plans.find(key);
  if (it == g.plans.end()) {
    LtGemms::Plan pl;
    auto ok = [](cublasStatus_t st) { return st == CUBLAS_STATUS_SUCCESS; };
    bool good = ok(cublasLtMatmulDescCreate(&pl.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    good = good && ok(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta))) &&
           ok(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (good && bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bt = CUDA_R_32F;
      good = ok(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi))) &&
             ok(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt))) &&
             ok(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    good = good && ok(cublasLtMatrixLayoutCreate(&pl.a, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda)) &&
           ok(cublasLtMatrixLayoutCreate(&pl.b, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb)) &&
           ok(cublasLtMatrixLayoutCreate(&pl.c, D16 ? CUDA_R_16BF : CUDA_R_32F, m, n, ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    if (good && ok(cublasLtMatmulPreferenceCreate(&pref))) {
      const size_t ws = LtGemms::kWorkspace;
      const uint32_t a32 = alA, b32 = alB, c32 = alC;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof(a32));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof(b32));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof(c32));
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof(c32));
      cublasLtMatmulHeuristicResult_t res[kMaxGemmCandidates] = {};
      int found = 0;
      good = ok(cublasLtMatmulAlgoGetHeuristic(g.h, pl.op, pl.a, pl.b, pl.c, pl.c, pref, std::max(1, tune), res,
                                               &found)) &&
             found > 0;
      if (good) pl.algo[0] = pl.algo[1] = res[0].algo;
      found = int(std::find_if(res, res + found, [](const auto& r) { return r.state != CUBLAS_STATUS_SUCCESS; }) - res);
      if (gemm_log())
        std::fprintf(stderr,
                     "[gemm] ta %d tb %d m %d n %d k %d ld %d %d %d D16 %d C %d align %d %d %d bias %d: %d candidates\n",
                     int(ta), int(tb), m, n, k, lda, ldb, ldc, D16 != nullptr, C != nullptr, alA, alB, alC, alBias, found);
      // Time the candidates into a scratch D: without C, and adding C (the caller's, only read, or
      // the scratch itself; not for a bf16 D, which takes no C). Not with a bias off 16-byte
      // alignment: candidates other than the first have read such a bias 8 bytes at a time (a
      // misaligned-address fault on the H200; there is no preference that excludes them). At most
      // kMaxTimedPlans plans are timed (training on batches of varying length makes new shapes).
      if (good && found > 1 && (!bias || alBias >= 16) && plan_stats().timed < kMaxTimedPlans) {
        const size_t bytes = size_t(ldc) * n * (D16 ? 2 : 4);
        void* scratch = device_alloc(bytes);
        for (int add = 0; add < (D16 ? 1 : 2); ++add)
          pl.algo[add] = fastest_algo(res, found, [&](const cublasLtMatmulAlgo_t& algo) {
            const float alpha = 1.0f, beta = float(add);
            const void* c_in = add && C ? static_cast<const void*>(C) : scratch;
            return cublasLtMatmul(g.h, pl.op, &alpha, A, pl.a, B, pl.b, &beta, c_in, pl.c, scratch, pl.c, &algo, g.ws,
                                  LtGemms::kWorkspace, stream());
          });
        device_free(scratch);
        ++plan_stats().timed;
      }
      cublasLtMatmulPreferenceDestroy(pref);
    } else {
      good = false;
    }
    pl.ok = good;
    it = g.plans.emplace(key, pl).first;
    ++plan_stats().plans;
  }
  LtGemms::Plan& pl = it->second;
  if (!pl.ok) return false;
  if (bias) check_blas(cublasLtMatmulDescSetAttribute(pl.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "Lt bias");
  const float alpha = 1.0f, beta = C ? 1.0f : 0.0f;
  check_blas(cublasLtMatmul(g.h, pl.op, &alpha, A, pl.a, B, pl.b, &beta, C ? C : out, pl.c, out, pl.c,
                            &pl.algo[C ? 1 : 0], g.ws, LtGemms::kWorkspace, stream()),
             "LtMatmul");
  return true;
}
// Column-major C[m,n] = op(A) op(B) + beta C on bf16 operands, fp32 accumulation and fp32 C
// (beta 0 or 1 through cuBLASLt, C read and written in place; otherwise cublasGemmEx).
void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16* A, int lda,
               const __nv_bfloat16* B, int ldb, float beta, float* C, int ldc) {
  if (gemm_candidates() > 0 && (beta == 0.0f || beta == 1.0f) &&
      gemm_bf16_epilogue(ta, tb, m, n, k, A, lda, B, ldb, beta == 1.0f ? C : nullptr, nullptr, C, ldc))
    return;
  const float alpha = 1.0f;
  check_blas(cublasGemmEx(blas().h, ta, tb, m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta, C,
                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GemmEx (bf16)");
}
// Column-major o16[m,n] = op(A) op(B) rounded to bf16 once: cuBLASLt's bf16 output, or (no such
// algorithm) the fp32 product rounded after.
void gemm_bf16_rounded(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16* A,
                       int lda, const __nv_bfloat16* B, int ldb, __nv_bfloat16* o16, int ldc) {
  if (gemm_bf16_epilogue(ta, tb, m, n, k, A, lda, B, ldb, nullptr, nullptr, nullptr, ldc, o16)) return;
  rounded_product(o16, size_t(ldc) * n, [&](float* t) { gemm_bf16(ta, tb, m, n, k, A, lda, B, ldb, 0.0f, t, ldc); });
}
// SMOOTHREAD_GEMM_EPILOGUE=0: GEMMs then separate bias / residual passes (the A/B switch).
bool gemm_epilogues_enabled() {
  static const bool on = env_int("SMOOTHREAD_GEMM_EPILOGUE", 1) != 0;
  return on;
}

// Whether a GEMM of these dimensions runs on bf16 operands (see gemm()).
bool bf16_gemm(int m, int n, int k) { return blas().mode == "bf16" && std::min(m, std::min(n, k)) >= 64; }

// Column-major C[m,n] = op(A) op(B) + beta C, fp32 storage. In "bf16" mode A and B are rounded
// to bf16 copies first (one elementwise pass each) and multiplied by native bf16 cuBLAS with fp32
// accumulation and fp32 C: the same arithmetic as CUBLAS_COMPUTE_32F_FAST_16BF on fp32 inputs,
// which measured up to 1.5x slower at the models' shapes (docs/PERF.md).
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  Blas& b = blas();
  const float alpha = 1.0f;
  // Small GEMMs (decode: a few tokens) are bandwidth-bound: converting the weights would move more
  // bytes than it saves, so they stay on fp32 operands with bf16 tensor-core arithmetic.
  const size_t na = size_t(lda) * (ta == CUBLAS_OP_N ? k : m), nb = size_t(ldb) * (tb == CUBLAS_OP_N ? n : k);
  if (bf16_gemm(m, n, k)) {
    const Bf16Operand a16(A, na), b16(B, nb);
    gemm_bf16(ta, tb, m, n, k, a16.get(), lda, b16.get(), ldb, beta, C, ldc);
    return;
  }
  require_fp32_values(A, na, "gemm (cuda, fp32 operands)");
  require_fp32_values(B, nb, "gemm (cuda, fp32 operands)");
  check_blas(cublasGemmEx(b.h, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C, CUDA_R_32F,
                          ldc, b.mode == "bf16" ? CUBLAS_COMPUTE_32F_FAST_16BF : b.compute, CUBLAS_GEMM_DEFAULT),
             "GemmEx");
}

// ---- GEMV: out[N,O] = x[N,I] W[O,I]^T (+ b) for N <= kGemvMaxRows (decode, action tokens) ----
// `split` warps (1, 2, 4 or 8) share an output row: each streams every split-th 16-byte piece of W's
// row (float4 loads when rows are 16-byte aligned) and dots it with all N input rows (small,
// cache-resident); fp32 products, fp32 warp-tree sums, then the split partial sums added in warp
// order, so the result is deterministic for a given split. Splitting rows keeps enough loads in
// flight when a layer has few output rows (896 rows of 4864 inputs: one warp per row leaves most
// of the GPU idle).
constexpr int kGemvMaxRows = 8;
constexpr int kGemvWarps = 8;  // warps per block
// 16 bytes of W widened to fp32: 4 fp32 or 8 bf16 weights (bf16 = the upper half of an fp32).
__device__ __forceinline__ void widen(const uint4& r, float (&a)[4]) {
  a[0] = __uint_as_float(r.x), a[1] = __uint_as_float(r.y), a[2] = __uint_as_float(r.z), a[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void widen(const uint4& r, float (&a)[8]) {
  const unsigned u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) a[2 * j] = __uint_as_float(u[j] << 16), a[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
}
__device__ __forceinline__ float widen1(float w) { return w; }
__device__ __forceinline__ float widen1(__nv_bfloat16 w) { return __bfloat162float(w); }
// WT = float (fp32 weights) or __nv_bfloat16 (the weight mirror: half the bytes per decoded token).
// Block: kGemvWarps warps = kGemvWarps / split rows.
// kGLU: W is [W_gate; W_up] ([2 O, I]); output row r is silu(x . W[r]) * (x . W[O + r]), both dot
// products made as the plain GEMV makes them (the same split and summation order), each input
// vector piece loaded once for both rows.
template <int NR, int split, bool kVec, class WT, bool kGLU = false>
__global__ void gemv_k(float* __restrict__ out, const float* __restrict__ x, const WT* __restrict__ W,
                       const float* __restrict__ b, int I, int O) {
  constexpr int NW = kGLU ? 2 : 1;  // weight rows per output row
  __shared__ float part_sum[split > 1 ? kGemvWarps : 1][NW][NR];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (kGemvWarps / split) + warp / split, part = warp % split;
  float acc[NW][NR];
#pragma unroll
  for (int q = 0; q < NW; ++q)
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[q][r] = 0.0f;
  if (row < O) {
    const WT* w[NW];
#pragma unroll
    for (int q = 0; q < NW; ++q) w[q] = W + (size_t(row) + size_t(q) * O) * I;
    if (kVec) {
      constexpr int E = 16 / int(sizeof(WT));  // weights per 16-byte load
      const int IV = I / E, step = 32 * split;
#pragma unroll 4
      for (int i = part * 32 + lane; i < IV; i += step) {
        float a[NW][E];
#pragma unroll
        for (int q = 0; q < NW; ++q) widen(__ldcs(reinterpret_cast<const uint4*>(w[q]) + i), a[q]);  // streamed once
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const float4* xr = reinterpret_cast<const float4*>(x + size_t(r) * I + size_t(i) * E);
#pragma unroll
          for (int e = 0; e < E / 4; ++e) {
            const float4 c = __ldg(xr + e);
#pragma unroll
            for (int q = 0; q < NW; ++q)
              acc[q][r] += a[q][4 * e] * c.x + a[q][4 * e + 1] * c.y + a[q][4 * e + 2] * c.z + a[q][4 * e + 3] * c.w;
          }
        }
      }
    } else {
      for (int i = part * 32 + lane; i < I; i += 32 * split) {
#pragma unroll
        for (int q = 0; q < NW; ++q) {
          const float a = widen1(__ldcs(w[q] + i));
#pragma unroll
          for (int r = 0; r < NR; ++r) acc[q][r] += a * __ldg(x + size_t(r) * I + i);
        }
      }
    }
  }
#pragma unroll
  for (int q = 0; q < NW; ++q)
#pragma unroll
    for (int r = 0; r < NR; ++r) acc[q][r] = warp_sum(acc[q][r]);
  if constexpr (split > 1) {
    if (lane == 0) {
#pragma unroll
      for (int q = 0; q < NW; ++q)
#pragma unroll
        for (int r = 0; r < NR; ++r) part_sum[warp][q][r] = acc[q][r];
    }
    __syncthreads();
    if (part == 0 && lane == 0) {
      for (int j = 1; j < split; ++j) {
#pragma unroll
        for (int q = 0; q < NW; ++q)
#pragma unroll
          for (int r = 0; r < NR; ++r) acc[q][r] += part_sum[warp + j][q][r];
      }
    }
  }
  if (row < O && part == 0 && lane == 0) {
    if constexpr (kGLU) {
#pragma unroll
      for (int r = 0; r < NR; ++r) out[size_t(r) * O + row] = swiglu1(acc[0][r], acc[NW - 1][r]);
    } else {
      const float bias = b ? b[row] : 0.0f;
#pragma unroll
      for (int r = 0; r < NR; ++r) out[size_t(r) * O + row] = acc[0][r] + bias;
    }
  }
}
// Warps per output row: enough warps in all (~8k, about 60 per SM of an H100/H200) to keep the
// memory system busy, while every warp still makes at least two passes of 16-byte loads over its
// share of the row. SMOOTHREAD_GEMV_SPLIT=1 (or 2, 4, 8) forces it (A/B timing).
int gemv_split(int I, int O, int bytes_per_weight) {
  static const int forced = env_int("SMOOTHREAD_GEMV_SPLIT", 0);
  if (forced == 1 || forced == 2 || forced == 4 || forced == 8) return forced;
  const int pieces = I / (16 / bytes_per_weight);  // 16-byte loads per row
  int split = 1;
  while (split < kGemvWarps && size_t(O) * split < 8192 && pieces >= 64 * split * 2) split *= 2;
  return split;
}
template <int NR, int split, bool kGLU, class WT>
void gemv_launch(float* out, const float* x, const WT* W, const float* b, int I, int O) {
  constexpr int rows_per_block = kGemvWarps / split;
  const int threads = 32 * kGemvWarps, blocks = (O + rows_per_block - 1) / rows_per_block;
  const size_t up = kGLU ? size_t(O) * I : 0;  // the second weight block's offset (16-byte aligned too)
  const bool vec = I % (16 / int(sizeof(WT))) == 0 && (reinterpret_cast<uintptr_t>(W) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(W + up) & 15) == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0;
  if (vec) gemv_k<NR, split, true, WT, kGLU><<<blocks, threads, 0, stream()>>>(out, x, W, b, I, O);
  else gemv_k<NR, split, false, WT, kGLU><<<blocks, threads, 0, stream()>>>(out, x, W, b, I, O);
  SR_CUDA_LAUNCHED(kGLU ? "gemv_swiglu" : "gemv");
}
// kGLU: the split of the plain GEMV over the 2 O rows of [W_gate; W_up], so that each dot product is
// made the same way as there
template <int NR, bool kGLU, class WT>
void gemv_rows(float* out, const float* x, const WT* W, const float* b, int I, int O) {
  switch (gemv_split(I, kGLU ? 2 * O : O, int(sizeof(WT)))) {
    case 1: return gemv_launch<NR, 1, kGLU>(out, x, W, b, I, O);
    case 2: return gemv_launch<NR, 2, kGLU>(out, x, W, b, I, O);
    case 4: return gemv_launch<NR, 4, kGLU>(out, x, W, b, I, O);
    default: return gemv_launch<NR, 8, kGLU>(out, x, W, b, I, O);
  }
}
// out[N,O] = x[N,I] W[O,I]^T (+ b) for N <= kGemvMaxRows; kGLU: out[N,O] = silu(x W_g^T) * (x W_u^T)
// with W = [W_g; W_u] ([2 O, I]) and no bias
template <bool kGLU = false, class WT>
void gemv(float* out, const float* x, const WT* W, const float* b, int N, int I, int O) {
  if (N <= 0 || O <= 0) return;
  switch (N) {
    case 1: return gemv_rows<1, kGLU>(out, x, W, b, I, O);
    case 2: return gemv_rows<2, kGLU>(out, x, W, b, I, O);
    case 3: return gemv_rows<3, kGLU>(out, x, W, b, I, O);
    case 4: return gemv_rows<4, kGLU>(out, x, W, b, I, O);
    case 5: return gemv_rows<5, kGLU>(out, x, W, b, I, O);
    case 6: return gemv_rows<6, kGLU>(out, x, W, b, I, O);
    case 7: return gemv_rows<7, kGLU>(out, x, W, b, I, O);
    default: return gemv_rows<8, kGLU>(out, x, W, b, I, O);
  }
}
}  // namespace

void set_gemm_precision(const std::string& mode) {
  Blas& b = blas();
  if (mode == "bf16") b.compute = CUBLAS_COMPUTE_32F;  // operands converted to bf16 in gemm()
  else if (mode == "tf32") b.compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  else if (mode == "fp32") b.compute = CUBLAS_COMPUTE_32F;
  else fail("gemm precision", "unknown mode '" + mode + "' (choose bf16, tf32 or fp32)");
  b.mode = mode;
}
std::string gemm_precision() { return blas().mode; }

void to_bf16(void* dst, const float* src, size_t n) {
  to_bf16_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(static_cast<__nv_bfloat16*>(dst), src, n);
  SR_CUDA_LAUNCHED("to_bf16");
}
void from_bf16(float* dst, const void* src, size_t n) {
  from_bf16_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(dst, static_cast<const __nv_bfloat16*>(src), n);
  SR_CUDA_LAUNCHED("from_bf16");
}

const uint16_t* mirror_of(const float* x, size_t n) { return reinterpret_cast<const uint16_t*>(find_mirror(x, n, false)); }

Bf16Operand::Bf16Operand(const float* x, size_t count) : p_(find_mirror(x, count, true)) {
  if (p_) return;
  require_fp32_values(x, count, "gemm (cuda, bf16 operand off its mirror)");
  owned_ = static_cast<__nv_bfloat16*>(device_alloc(count * 2));
  to_bf16(owned_, x, count);
  p_ = owned_;
}
Bf16Operand::~Bf16Operand() {
  if (owned_) device_free(owned_);  // stream-ordered: queued kernels run before any reuse
}
// Sets one of the Mirrors switches under the lock.
template <class T>
void set_switch(T Mirrors::*field, T value) {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  M.*field = value;
}
void set_weight_mirrors(bool on) { set_switch(&Mirrors::enabled, on); }
// Makes, refreshes (same base and size) or releases (n = 0, or switched off) the mirror of [base, base + n).
// how: copy_now rounds it now; by_next_op / only_mirror / gemm_output only allocate it, and the op that
// writes the activation next fills it (rmsnorm_fwd/bwd, swiglu_fwd/bwd, rope_fwd, xent_bwd: find_mirror
// on their outputs; linear_fwd / linear_bwd's dx: only_copy).
bool mirror(const float* base, size_t n, bool activation, MirrorFill how = MirrorFill::copy_now) {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  if (M.activations < 0) M.activations = env_int("SMOOTHREAD_ACT_MIRRORS", 1) != 0;
  if (M.only < 0) M.only = env_int("SMOOTHREAD_MIRROR_ONLY", 1) != 0;
  if (M.gemm_out < 0) M.gemm_out = env_int("SMOOTHREAD_GEMM_BF16_OUT", 1) != 0;
  const bool declined = how == MirrorFill::gemm_output && !(M.gemm_out && M.only);  // x stays fp32, no copy
  const bool on = !declined && (activation ? M.activations && blas().mode == "bf16" : M.enabled);
  const bool only = on && activation && (how == MirrorFill::only_mirror || how == MirrorFill::gemm_output) && M.only;
  auto it = std::find_if(M.list.begin(), M.list.end(), [&](const WeightMirror& w) { return w.base == base; });
  // released, resized, switched off, or moving into (out of) the fp32 buffer
  if (it != M.list.end() && (it->n != n || !n || !on || it->inplace != only)) {
    if (!it->inplace) device_free(it->m);
    M.only_count -= it->only;
    M.list.erase(it);
    it = M.list.end();
  }
  if (!n || !on) return false;
  if (it == M.list.end()) {
    __nv_bfloat16* m = only ? reinterpret_cast<__nv_bfloat16*>(const_cast<float*>(base))
                            : static_cast<__nv_bfloat16*>(device_alloc(n * 2));
    M.list.push_back({base, n, m, activation, false, only});
    it = M.list.end() - 1;
    if (activation) ++M.stats.made;
  }
  M.only_count += int(only) - int(it->only);
  it->only = only;
  if (how == MirrorFill::copy_now) to_bf16(it->m, base, n);
  return true;
}
void mirror_weights(const float* base, size_t n) { mirror(base, n, false); }
bool mirror_activation(const float* x, size_t n, MirrorFill how) { return mirror(x, n, true, how); }
void set_mirror_only(bool on) { set_switch(&Mirrors::only, int(on)); }
void set_mirror_only_poison(bool on) { set_switch(&Mirrors::poison, on); }
void set_gemm_bf16_outputs(bool on) { set_switch(&Mirrors::gemm_out, int(on)); }
GemmPlanStats gemm_plan_stats() {
  LtGemms& g = lt();
  std::lock_guard<std::mutex> lock(g.mu);
  return plan_stats();
}
int set_gemm_candidates(int n) { return gemm_candidates_setting().exchange(std::clamp(n, 0, kMaxGemmCandidates)); }
ActivationMirrorStats activation_mirror_stats() {
  Mirrors& M = mirrors();
  std::lock_guard<std::mutex> lock(M.mu);
  return M.stats;
}
void set_activation_mirrors(bool on) { set_switch(&Mirrors::activations, int(on)); }

// Row-major batched C[m,n] = op(A) op(B) + beta C in exact fp32 (CUBLAS_COMPUTE_32F, no bf16 or
// TF32): the chunked delta-rule scans keep their state arithmetic in fp32 (standard 3).
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T.
void gemm_rm_batched(bool ta, bool tb, int m, int n, int k, const float* A, long long sA, const float* B, long long sB,
                     float beta, float* C, long long sC, int batch) {
  if (!batch || !m || !n) return;
  const float alpha = 1.0f;
  check_blas(cublasGemmStridedBatchedEx(blas().h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m,
                                        k, &alpha, B, CUDA_R_32F, tb ? k : n, sB, A, CUDA_R_32F, ta ? m : k, sA, &beta,
                                        C, CUDA_R_32F, n, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "GemmStridedBatchedEx (fp32)");
}

namespace ops {

void embedding_fwd(float* out, const int32_t* ids, const float* table, int N, int C) {
  embedding_fwd_k<<<blocks_for(size_t(N) * C, kThreads), kThreads, 0, stream()>>>(out, ids, table, N, C);
  SR_CUDA_LAUNCHED("embedding_fwd");
}
void embedding_bwd(float* dtable, const float* dout, const int32_t* ids, int N, int C) {
  embedding_bwd_k<<<blocks_for(size_t(N) * C, kThreads), kThreads, 0, stream()>>>(dtable, dout, ids, N, C);
  SR_CUDA_LAUNCHED("embedding_bwd");
}
void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
  // (x is only read when no residual is given)
  rmsnorm_launch(out, rstd, const_cast<float*>(x), nullptr, w, N, C, eps);
  SR_CUDA_LAUNCHED("rmsnorm_fwd");
}
void add_rmsnorm_fwd(float* x, float* out, float* rstd, const float* t, const float* w, int N, int C, float eps) {
  rmsnorm_launch(out, rstd, x, t, w, N, C, eps);
  SR_CUDA_LAUNCHED("add_rmsnorm_fwd");
}
void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N,
                 int C, bool add_dx) {
  __nv_bfloat16* dx16 = dx ? find_mirror(dx, size_t(N) * C, false) : nullptr;
  if (const int per = vec_norm_per(C, {dx, dout, x, w}, {dx16})) {
    // one pass: dx and the weight gradient's partial sums over blocks of `rows` rows (at most 1024 blocks)
    const int rows = std::max(8, (N + 1023) / 1024), blocks = (N + rows - 1) / rows;
    float* partial = dw ? static_cast<float*>(device_alloc(size_t(blocks) * C * sizeof(float))) : nullptr;
    static void (*const k[kVecNormMaxPer])(float*, __nv_bfloat16*, float*, const float*, const float*, const float*,
                                           const float*, int, int, int, bool) = {
        rmsnorm_bwd_vec_k<1>, rmsnorm_bwd_vec_k<2>, rmsnorm_bwd_vec_k<3>, rmsnorm_bwd_vec_k<4>};
    launch_vec_norm(per, k, unsigned(blocks), dx, dx16, partial, dout, x, w, rstd, N, C, rows, add_dx);
    if (dw) colsum_finish(dw, partial, blocks, C);
    SR_CUDA_LAUNCHED("rmsnorm_bwd");
    if (partial) device_free(partial);
    return;
  }
  if (dw) column_sum_accumulate(dw, dout, x, rstd, N, C, 1);
  if (dx) {
    rmsnorm_bwd_dx_k<<<(N + 7) / 8, 256, 0, stream()>>>(dx, dx16, dout, x, w, rstd, N, C, add_dx);
    SR_CUDA_LAUNCHED("rmsnorm_bwd");
  }
}
// out[N,O] = x W^T + (res or b) through gemm_bf16_epilogue when the GEMM runs on bf16 operands
// (false: nothing run)
bool linear_fwd_epilogue(float* out, const float* res, const float* x, const float* W, const float* b, int N, int I,
                         int O) {
  if (!gemm_epilogues_enabled() || !bf16_gemm(O, N, I)) return false;
  const Bf16Operand w16(W, size_t(O) * I), x16(x, size_t(N) * I);
  return gemm_bf16_epilogue(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w16.get(), I, x16.get(), I, res, b, out, O);
}
// out[N,O] = x[N,I] W[O,I]^T (+ b): column-major out^T[O,N] = W^T' x^T
void linear_fwd(float* out, const float* x, const float* W, const float* b, int N, int I, int O) {
  const size_t n = size_t(N) * O;
  if (__nv_bfloat16* o16 = only_copy(out, n)) {  // MirrorFill::gemm_output: the product in bf16 alone
    fp32_output(out, n, o16, true);
    if (!b && bf16_gemm(O, N, I)) {
      const Bf16Operand w16(W, size_t(O) * I), x16(x, size_t(N) * I);
      gemm_bf16_rounded(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w16.get(), I, x16.get(), I, o16, O);
    } else {  // a bias or fp32 operands: in fp32, then rounded
      rounded_product(o16, n, [&](float* t) { linear_fwd(t, x, W, b, N, I, O); });
    }
    return;
  }
  if (N <= kGemvMaxRows) {  // decode: bandwidth-bound, one pass over W in fp32
    gemv(out, x, W, b, N, I, O);
    return;
  }
  if (b && linear_fwd_epilogue(out, nullptr, x, W, b, N, I, O)) return;
  gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, x, I, 0.0f, out, O);
  if (b) {
    bias_add_k<<<blocks_for(size_t(N) * O, kThreads), kThreads, 0, stream()>>>(out, b, size_t(N), O);
    SR_CUDA_LAUNCHED("bias_add");
  }
}
// GEMVs over any number of rows, up to 8 at a time (kGLU as gemv)
template <bool kGLU = false, class WT>
void gemv_any_rows(float* out, const float* x, const WT* W, const float* b, int N, int I, int O) {
  for (int n0 = 0; n0 < N; n0 += kGemvMaxRows)
    gemv<kGLU>(out + size_t(n0) * O, x + size_t(n0) * I, W, b, std::min(kGemvMaxRows, N - n0), I, O);
}
const __nv_bfloat16* as_bf16(const uint16_t* W) { return reinterpret_cast<const __nv_bfloat16*>(W); }
// out[N,O] = x[N,I] W[O,I]^T (+ b) with W in bf16 (a weight mirror)
void linear_fwd_bf16w(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O) {
  gemv_any_rows(out, x, as_bf16(W), b, N, I, O);
}
// out[N,F] = silu(x W_g^T) * (x W_u^T), W = [W_g; W_u] ([2F, I]): the decode MLP's first half in
// one pass over the weights (a decode op: GEMVs, no GEMM path for many rows)
void linear_swiglu_fwd(float* out, const float* x, const float* W, int N, int I, int F) {
  gemv_any_rows<true>(out, x, W, nullptr, N, I, F);
}
void linear_swiglu_fwd_bf16w(float* out, const float* x, const uint16_t* W, int N, int I, int F) {
  gemv_any_rows<true>(out, x, as_bf16(W), nullptr, N, I, F);
}
void linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I,
                int O, int flags) {
  const float beta = flags & kAddDx ? 1.0f : 0.0f;       // dx = or += dout W
  const float dW_beta = flags & kSetDW ? 0.0f : 1.0f;    // dW = or += dout^T x
  if (N == 0) {  // no rows: nothing to add; a set dW is zero
    if (dW && dW_beta == 0.0f) SR_CUDA(cudaMemsetAsync(dW, 0, size_t(O) * I * sizeof(float), stream()));
    return;
  }
  if (db) require_fp32_values(dout, size_t(N) * O, "linear_bwd (cuda): the bias gradient");  // sums dout in fp32
  // MirrorFill::gemm_output: dx is written as bf16 alone
  __nv_bfloat16* const dx16 = dx ? only_copy(dx, size_t(N) * I) : nullptr;
  if (dx16 && beta != 0.0f) fail("linear_bwd (cuda)", "dx is kept only as bf16 (MirrorFill::gemm_output) and cannot be added to");
  if (dx16) fp32_output(dx, size_t(N) * I, dx16, true);
  if (bf16_gemm(I, N, O)) {  // dout rounded to bf16 once for both products (or taken from its mirror)
    const Bf16Operand d16(dout, size_t(N) * O);
    std::optional<Bf16Operand> w16, x16;
    if (dx) w16.emplace(W, size_t(O) * I);
    if (dW) x16.emplace(x, size_t(N) * I);
    if (dx16) {
      gemm_bf16_rounded(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w16->get(), I, d16.get(), O, dx16, I);
    } else if (dx) {
      gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w16->get(), I, d16.get(), O, beta, dx, I);
    }
    if (dW) gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x16->get(), I, d16.get(), O, dW_beta, dW, I);
  } else {
    // dx^T[I,N] (+)= W^T[I,O] dout^T; dW^T[I,O] (+)= x^T dout
    if (dx16)
      rounded_product(dx16, size_t(N) * I, [&](float* t) { gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dout, O, 0.0f, t, I); });
    else if (dx) gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dout, O, beta, dx, I);
    if (dW) gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dout, O, dW_beta, dW, I);
  }
  if (db) column_sum_accumulate(db, dout, nullptr, nullptr, N, O, 0);
}
void rope_fwd(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta) {
  __nv_bfloat16* o16 = find_mirror(out, size_t(N) * H * D, false);
  rope_k<<<blocks_for(size_t(N) * (D / 2), kThreads), kThreads, 0, stream()>>>(out, o16, x, pos, N, H, D, theta, 1.0f);
  SR_CUDA_LAUNCHED("rope_fwd");
}
void rope_bwd(float* dx, const float* dout, const int32_t* pos, int N, int H, int D, float theta) {
  rope_k<<<blocks_for(size_t(N) * (D / 2), kThreads), kThreads, 0, stream()>>>(dx, nullptr, dout, pos, N, H, D, theta,
                                                                                -1.0f);
  SR_CUDA_LAUNCHED("rope_bwd");
}
// (outputs with an activation mirror get it written in the same pass, MirrorFill::by_next_op; an
// output whose mirror is its only copy, MirrorFill::only_mirror, is written as bf16 alone; an input
// kept only as bf16, MirrorFill::gemm_output, is read from its copy)
void swiglu_fwd(float* out, const float* gate, const float* up, int N, int F) {
  size_t n = size_t(N) * F;
  bool only = false;
  __nv_bfloat16* o16 = find_mirror(out, n, false, &only);
  swiglu_fwd_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(fp32_output(out, n, o16, only), o16,
                                                                              input_of(gate, n), input_of(up, n), n);
  SR_CUDA_LAUNCHED("swiglu_fwd");
}
void swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N, int F) {
  size_t n = size_t(N) * F;
  bool g_only = false, u_only = false;
  __nv_bfloat16 *dg16 = dgate ? find_mirror(dgate, n, false, &g_only) : nullptr,
                *du16 = dup ? find_mirror(dup, n, false, &u_only) : nullptr;
  swiglu_bwd_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(
      fp32_output(dgate, n, dg16, g_only), fp32_output(dup, n, du16, u_only), dg16, du16, input_of(dout, n),
      input_of(gate, n), input_of(up, n), n);
  SR_CUDA_LAUNCHED("swiglu_bwd");
}
void xent_fwd(float* loss, float* lse, const float* logits, const int32_t* targets, int N, int V) {
  if (N <= 0) return;
  xent_fwd_k<<<N, 512, 0, stream()>>>(loss, lse, input_of(logits, size_t(N) * V), targets, V);
  SR_CUDA_LAUNCHED("xent_fwd");
}
void xent_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets, const float* g, int N,
              int V) {
  if (N <= 0) return;
  const size_t n = size_t(N) * V;
  bool only = false;
  __nv_bfloat16* d16 = find_mirror(dlogits, n, false, &only);
  xent_bwd_k<<<N, 512, 0, stream()>>>(fp32_output(dlogits, n, d16, only), d16, input_of(logits, n), lse, targets, g, V);
  SR_CUDA_LAUNCHED("xent_bwd");
}
void add(float* out, const float* a, const float* b, size_t n) {
  add_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(out, a, b, n);
  SR_CUDA_LAUNCHED("add");
}
void linear_fwd_add(float* out, const float* res, const float* x, const float* W, int N, int I, int O) {
  if (only_copy(out, size_t(N) * O)) fail("linear_fwd_add (cuda)", "its output is kept only as bf16: not supported");
  if (N > kGemvMaxRows && linear_fwd_epilogue(out, res, x, W, nullptr, N, I, O)) return;
  if (out != res) {  // the product into out, then the add (the model's case: no scratch)
    linear_fwd(out, x, W, nullptr, N, I, O);
    add(out, res, out, size_t(N) * O);
    return;
  }
  float* tmp = static_cast<float*>(device_alloc(size_t(N) * O * sizeof(float)));  // in place: res is read after
  linear_fwd(tmp, x, W, nullptr, N, I, O);
  add(out, res, tmp, size_t(N) * O);
  device_free(tmp);
}
void mul(float* out, const float* a, const float* b, size_t n) {
  if (n) mul_k<<<blocks_for(n, 256), 256, 0, stream()>>>(out, a, b, n);
  SR_CUDA_LAUNCHED("mul");
}
void strided_copy(float* dst, size_t dst_stride, const float* src, size_t src_stride, size_t rows, size_t width) {
  if (rows * width)  // (src: its bf16 copy where that is the only one)
    strided_copy_k<<<blocks_for(rows * width, 256), 256, 0, stream()>>>(
        dst, dst_stride, input_of(src, (rows - 1) * src_stride + width), src_stride, rows, width);
  SR_CUDA_LAUNCHED("strided_copy");
}
void ring_store_kv(float* ring_k, float* ring_v, const float* k, const float* v, const int32_t* pos, int W,
                   size_t width) {
  if (width) ring_store_kv_k<<<blocks_for(width, 256), 256, 0, stream()>>>(ring_k, ring_v, k, v, pos, W, width);
  SR_CUDA_LAUNCHED("ring_store_kv");
}
void scale(float* x, size_t n, float s) {
  scale_k<<<blocks_for(n, kThreads), kThreads, 0, stream()>>>(x, n, s);
  SR_CUDA_LAUNCHED("scale");
}
double sum_squares(const float* x, size_t n) {
  double* partial = static_cast<double*>(device_alloc(kSumBlocks * sizeof(double)));
  sum_squares_k<<<kSumBlocks, kThreads, 0, stream()>>>(partial, x, n);
  SR_CUDA_LAUNCHED("sum_squares");
  double host[kSumBlocks];
  SR_CUDA(cudaMemcpy(host, partial, sizeof host, cudaMemcpyDeviceToHost));
  device_free(partial);
  double s = 0;
  for (double p : host) s += p;
  return s;
}
void adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWStep& a) {
  adamw_k<<<blocks_for((n + 3) / 4, kThreads), kThreads, 0, stream()>>>(p, find_mirror(p, n, false), g, m, v, decay, n, a);
  SR_CUDA_LAUNCHED("adamw");
}

}  // namespace ops
}  // namespace sr::cuda
