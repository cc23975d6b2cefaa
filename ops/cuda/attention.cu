// FlashAttention-2-style fused attention on tensor cores (mma.sync m16n8k16, bf16 operands, fp32
// accumulators and softmax statistics). Causal, GQA, optional sliding window; bottom-right aligned
// queries (ops.h), so the same kernels serve training, chunked prefill into a cache and decode.
//
// Forward: one block of 4 warps per (64 or 128 queries, head, batch); each warp owns 16 or 32
// query rows. On Hopper (sm_90a) head dims 64 and 128 run a warpgroup-MMA (wgmma) forward instead:
// 128 queries x 128 keys a tile, the softmax overlapped with the P V product (attn_fwd_wg_kernel).
// Key tiles stream through shared memory; tiles entirely outside the causal window are never
// visited, so the cost is O(Tq * min(Tk, W)). Online softmax with lazy rescaling: a row's running max
// moves (and O is rescaled) only when it would grow by more than 2^8.
// Backward: one block per (key tile, kv head, batch) loops over the query tiles that see those
// keys and over the group's query heads, so dK and dV stay in registers (no atomics); dQ is
// accumulated with fp32 atomics. Delta = rowsum(dO * O) is precomputed. Three kernels: 128 keys a
// block of 2 warpgroups on wgmma (head dims 64 and 128 on Hopper, the default there,
// attn_bwd_wg_kernel), 128 keys a block of 8 warps with FlashAttention-2's 2-D warp tiling (head dims
// 64 and 128 elsewhere), and 64 keys a block of 4 warps (every head dim).
// Operands are bf16 (the fp32 entry points round q, k, v, dO once); K/V (forward) and Q/dO
// (backward) tiles are double-buffered with cp.async so the next tile loads during this tile's math.
// Head dims up to 256 (padded to a multiple of 16 with zeros).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <type_traits>

#include "ops/cuda/attention_schedule.h"
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"
#include "ops/cuda/wgmma.cuh"

namespace sr::cuda {

namespace {
using bf16 = __nv_bfloat16;
constexpr int kWarps = 4, kThreadsA = kWarps * 32;
constexpr int kFwdM = 64, kFwdN = 64;  // forward tile: queries x keys (one 16-row tile a warp)
constexpr int kAutoFwdTiles = 2;        // fwd_tiles' automatic choice for 128+ queries (fastest on an H200)
constexpr int kBwdN = 64, kBwdM = 64;  // backward tile: keys x queries
constexpr int kAutoBwd = 2;           // bwd_kernel's choice for head dims 64 and 128 without warpgroup MMAs
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kMaxGrowth = 8.0f;  // forward: a row's max is moved only when it would grow by more (log2 units)

// ---- tensor-core primitives ----
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const bf16* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t& r0, uint32_t& r1, const bf16* p) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(a));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// Accumulator fragments of two adjacent n-tiles (16 x 16 of C, fp32) reused as one bf16 A fragment
// of the next mma (the FlashAttention-2 register trick: P and dS never touch shared memory).
template <int NT>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c)[NT][4], int kc) {
  a[0] = pack_bf16(c[2 * kc][0], c[2 * kc][1]), a[1] = pack_bf16(c[2 * kc][2], c[2 * kc][3]);
  a[2] = pack_bf16(c[2 * kc + 1][0], c[2 * kc + 1][1]), a[3] = pack_bf16(c[2 * kc + 1][2], c[2 * kc + 1][3]);
}
// c[16 rows][ND n-tiles of 8] += a[16 x 16] . B[16 x 8 ND], where B is rows row0..row0+15 of a bf16
// shared-memory tile (row stride SP): loaded transposed, two n-tiles per ldmatrix.
// O += P V in the forward; dQ += dS K in the backward (dV and dK interleave the same steps).
template <int ND, int MT>
__device__ __forceinline__ void mma_a_rows_mt(float (&c)[MT][ND][4], const uint32_t (&a)[MT][4], const bf16* tile,
                                              int row0, int SP, int lane) {
#pragma unroll
  for (int dp = 0; dp < ND / 2; ++dp) {
    uint32_t r[4];
    ldsm_x4_t(r, tile + (row0 + lane % 8 + ((lane / 8) % 2) * 8) * SP + dp * 16 + (lane / 16) * 8);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {  // MT row tiles share each B fragment
      mma16816(c[mt][2 * dp], a[mt], r[0], r[1]);
      mma16816(c[mt][2 * dp + 1], a[mt], r[2], r[3]);
    }
  }
}
template <int ND>
__device__ __forceinline__ void mma_a_rows(float (&c)[ND][4], const uint32_t (&a)[4], const bf16* tile, int row0,
                                           int SP, int lane) {
  mma_a_rows_mt<ND, 1>(reinterpret_cast<float(&)[1][ND][4]>(c), reinterpret_cast<const uint32_t(&)[1][4]>(a), tile,
                       row0, SP, lane);
}
template <class T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16(x); }

// 16-byte global -> shared copy that bypasses registers (cp.async); src_bytes 0 zero-fills.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
template <int N>  // all but the N most recent groups complete
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// 4-byte variant (cp.async.ca); src_bytes 0 zero-fills.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, int src_bytes) {
  uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(a), "l"(gmem), "r"(src_bytes));
}
// Starts loading a query tile's softmax statistics into shared memory: sL[0, rows) = lse and
// sL[rows, 2 rows) = delta of rows li0 + x (x < nvalid; zeros beyond). Asynchronous like the
// tile it goes with: a plain load here would stall the loading warps for a global round trip at
// every tile while the others wait at the next barrier.
__device__ void load_lse_delta(float* sL, const float* lse, const float* delta, size_t li0, int rows, int nvalid) {
  for (int x = threadIdx.x; x < 2 * rows; x += blockDim.x) {
    const int r = x % rows;
    const float* src = (x < rows ? lse : delta) + li0;
    cp_async4(sL + x, r < nvalid ? src + r : src, r < nvalid ? 4 : 0);
  }
}

// Starts loading rows [0, ROWS) (rows >= nvalid zero-filled) of a bf16 [*, ld] tensor into a smem
// tile [ROWS][DP+8], columns >= D zero-filled, by a block of NTHR threads. Asynchronous (cp.async)
// when rows are whole 16-byte vectors; otherwise plain stores. Either way the data is ready after
// cp_async_wait_all() and a barrier. The common case (D = DP, aligned rows) is unrolled: each
// thread issues ROWS * DP / 8 / NTHR copies at fixed strides, with no per-copy index arithmetic,
// loop tests or (when every row is valid) zero-fill selects -- the kernels run this for every tile.
template <int DP, int ROWS, int NTHR>
__device__ __forceinline__ void load_tile(bf16* sm, const bf16* g, int nvalid, size_t ld, int D) {
  constexpr int SP = DP + 8, V8 = DP / 8, PER = ROWS * V8 / NTHR, RSTEP = NTHR / V8;
  const bool vec = (D == DP) && (ld % 8 == 0);
  if constexpr (NTHR % V8 == 0 && (ROWS * V8) % NTHR == 0) {
    if (vec) {
      const int r0 = threadIdx.x / V8, c = (threadIdx.x % V8) * 8;
      const bf16* src = g + size_t(r0) * ld + c;
      bf16* dst = sm + r0 * SP + c;
      const size_t step = size_t(RSTEP) * ld;
      if (nvalid >= ROWS) {
#pragma unroll
        for (int it = 0; it < PER; ++it) cp_async16(dst + it * RSTEP * SP, src + it * step, 16);
      } else {
#pragma unroll
        for (int it = 0; it < PER; ++it) {
          const bool ok = r0 + it * RSTEP < nvalid;
          cp_async16(dst + it * RSTEP * SP, ok ? src + it * step : g, ok ? 16 : 0);
        }
      }
      return;
    }
  }
  for (int idx = threadIdx.x; idx < ROWS * V8; idx += NTHR) {
    const int r = idx / V8, c = (idx % V8) * 8;
    bf16* dst = sm + r * SP + c;
    if (vec) {
      cp_async16(dst, r < nvalid ? g + size_t(r) * ld + c : g, r < nvalid ? 16 : 0);
    } else {
      const bf16* src = g + size_t(r) * ld + c;
      for (int e = 0; e < 8; ++e) dst[e] = (r < nvalid && c + e < D) ? src[e] : __float2bfloat16(0.0f);
    }
  }
}

// This block's (tile, head, batch) in a (tiles, heads, batch) grid launched in order ORDER
// (attention_schedule.h): kTilesFastest is the grid's own (x, y, z); otherwise the linear launch
// position is renumbered in sections of `section` (head, batch) pairs.
template <int ORDER>
__device__ __forceinline__ AttnBlockPlace block_place(unsigned section) {
  if constexpr (ORDER == kTilesFastest) {
    return {blockIdx.x, blockIdx.y, blockIdx.z};
  } else {
    const unsigned id = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    return attn_block_place(id, gridDim.x, gridDim.y, gridDim.z, section);
  }
}

// Key j is visible to query row i (absolute position i + off) under the causal window rule.
__device__ __forceinline__ bool visible(int i, int j, int off, int Tq, int Tk, int W) {
  const int p = i + off;
  return i < Tq && j < Tk && j <= p && (W == 0 || j > p - W);
}

// dst[0] += x, dst[1] += y in fp32 atomics; one 8-byte vector atomic (sm_90) when dst is 8-byte aligned
__device__ __forceinline__ void atomic_add2(float* dst, float x, float y, bool aligned) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (aligned) {
    atomicAdd(reinterpret_cast<float2*>(dst), make_float2(x, y));
    return;
  }
#endif
  atomicAdd(dst, x);
  atomicAdd(dst + 1, y);
}

// row[c] += x, row[c + 1] += y (fp32 atomics) for the columns below D; c is even, so the pair is
// 8-byte aligned whenever D is even
__device__ __forceinline__ void atomic_add_pair(float* row, int c, int D, float x, float y) {
  if (c + 1 < D) atomic_add2(row + c, x, y, D % 2 == 0);
  else if (c < D) atomicAdd(row + c, x);
}
// dK/dV elements (c, c + 1) of one key row: stored, or added with fp32 atomics into zeroed outputs
// when the blocks split a kv group's query heads (head_split)
template <class TO>
__device__ __forceinline__ void store_dkv(TO* dkr, TO* dvr, int c, int D, float k0, float k1, float v0, float v1,
                                          bool head_split) {
  if constexpr (sizeof(TO) == 4) {
    if (head_split) {
      atomic_add_pair(dkr, c, D, k0, k1);
      atomic_add_pair(dvr, c, D, v0, v1);
      return;
    }
  }
  if (c < D) dkr[c] = from_f<TO>(k0), dvr[c] = from_f<TO>(v0);
  if (c + 1 < D) dkr[c + 1] = from_f<TO>(k1), dvr[c + 1] = from_f<TO>(v1);
}
// A backward's end: dK (scaled) and dV of this thread's key rows key0 and key0 + 8 of kv head kh,
// batch b, from fragments laid out as dK[4 dt + 2 r + c] = row key0 + 8 r, column c0 + 8 dt + 2 tig + c
template <class TO, int ND>
__device__ __forceinline__ void write_dkv_rows(TO* dk, TO* dv, const float* dK, const float* dV, int key0, int tig,
                                               int b, int kh, int D, size_t ldk, const AttnShape& s, bool head_split,
                                               int c0 = 0) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = key0 + r * 8;
    if (j >= s.Tk) continue;
    TO* dkr = dk + (size_t(b) * s.Tk + j) * ldk + size_t(kh) * D;
    TO* dvr = dv + (size_t(b) * s.Tk + j) * ldk + size_t(kh) * D;
#pragma unroll
    for (int dt = 0; dt < ND; ++dt)
      store_dkv(dkr, dvr, c0 + dt * 8 + tig * 2, D, dK[4 * dt + 2 * r] * s.scale, dK[4 * dt + 2 * r + 1] * s.scale,
                dV[4 * dt + 2 * r], dV[4 * dt + 2 * r + 1], head_split);
  }
}

// ---------------------------------------------------------------- forward
// A forward block's place and keys, as locals of the kernel (a macro, not a function: the two
// forwards then compile to the same machine code as with the lines written out): BM queries from m0
// of head h, batch b (grid tile 0 = the heaviest = the last query tile, attention_schedule.h), the
// (batch, kv head)'s K and V rows kb / vb, key tiles of KN from kbeg up to kend. AFTER_STRIDES: the
// kernel's own declarations that need the row strides, in the place they had.
#define SR_ATTN_FWD_BLOCK(BM, KN, DIM, AFTER_STRIDES)                                   \
  const AttnBlockPlace place = block_place<ORDER>(section);                              \
  const int m0 = (gridDim.x - 1 - place.tile) * (BM), h = place.head, b = place.batch;  \
  const int G = s.Hq / s.Hkv, kh = h / G, D = (DIM), W = s.window, off = s.Tk - s.Tq;   \
  const size_t ldq = size_t(s.Hq) * D, ldk = size_t(s.Hkv) * D;                         \
  AFTER_STRIDES                                                                          \
  const bf16* kb = k + size_t(b) * s.Tk * ldk + size_t(kh) * D;                         \
  const bf16* vb = v + size_t(b) * s.Tk * ldk + size_t(kh) * D;                         \
  const float sl2 = s.scale * kLog2e;                                                    \
  const int last_q = min(m0 + (BM), s.Tq) - 1;                                          \
  const int kend = min(s.Tk, last_q + off + 1);                                          \
  const int kbeg = (W > 0 ? max(0, m0 + off - W + 1) : 0) / (KN) * (KN)

// The forward's end for this thread's rows qrow0 and qrow0 + 8 of head h, batch b: full row sums
// across the quad, then O / l (o[4 dt + 2 r + c] = row r, column 8 dt + 2 tig + c) and the lse written
// (WHOLE: D = 8 ND, no column tests)
template <class TO, int ND, bool WHOLE = false>
__device__ __forceinline__ void fwd_write_rows(TO* out, float* lse, const float* o, float (&lrow)[2],
                                               const float (&mrow)[2], int qrow0, int tig, int h, int b, int D,
                                               size_t ldq, const AttnShape& s) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = qrow0 + r * 8;
    if (i >= s.Tq) continue;
    const float l = lrow[r], inv = l > 0 ? 1.0f / l : 0.0f;
    TO* orow = out + (size_t(b) * s.Tq + i) * ldq + size_t(h) * D;
#pragma unroll
    for (int dt = 0; dt < ND; ++dt) {
      const int c = dt * 8 + tig * 2;
      if (WHOLE || c < D) orow[c] = from_f<TO>(o[4 * dt + 2 * r] * inv);
      if (WHOLE || c + 1 < D) orow[c + 1] = from_f<TO>(o[4 * dt + 2 * r + 1] * inv);
    }
    if (tig == 0) lse[(size_t(b) * s.Hq + h) * s.Tq + i] = l > 0 ? (mrow[r] / kLog2e + logf(l)) : -INFINITY;
  }
}

// MT = 16-row query tiles per warp (block of 64 * MT queries), KN = keys per tile. MT = 2 makes
// every K and V fragment loaded from shared memory feed two MMAs instead of one, halving the
// ldmatrix traffic per MMA (at MT = 1 the 128 B/clock of shared memory, not the tensor cores, bound
// the kernel); Q fragments are then reloaded from shared memory each tile instead of living in
// registers, which would not fit beside 2 x 16 rows of O at head dim 128 (KN = 32 halves the score
// registers for the same reason).
template <class TO, int DP, int MT, int KN, int ORDER>
__global__ void __launch_bounds__(kThreadsA) attn_fwd_kernel(TO* __restrict__ out, float* __restrict__ lse,
                                                             const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                             const bf16* __restrict__ v, AttnShape s,
                                                             unsigned section) {
  constexpr int SP = DP + 8, KD = DP / 16, ND = DP / 8, NT = KN / 8, BM = kFwdM * MT;
  constexpr bool kQInRegs = MT == 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sKV = sQ + BM * SP;  // two stages of [K tile, V tile]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  SR_ATTN_FWD_BLOCK(BM, KN, s.D, const bf16* qb = q + (size_t(b) * s.Tq + m0) * ldq + size_t(h) * D;);
  const int wrow0 = warp * 16 * MT;  // this warp's rows in the block: wrow0 + mt * 16 + [0, 16)
  auto load_kv = [&](int j0, int stage) {
    bf16* sK = sKV + stage * 2 * KN * SP;
    load_tile<DP, KN, kThreadsA>(sK, kb + size_t(j0) * ldk, min(KN, s.Tk - j0), ldk, D);
    load_tile<DP, KN, kThreadsA>(sK + KN * SP, vb + size_t(j0) * ldk, min(KN, s.Tk - j0), ldk, D);
    cp_async_commit();
  };
  load_tile<DP, BM, kThreadsA>(sQ, qb, min(BM, s.Tq - m0), ldq, D);
  if (kbeg < kend) load_kv(kbeg, 0);
  else cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  auto load_q = [&](uint32_t(&a)[4], int mt, int kk) {
    ldsm_x4(a, sQ + (wrow0 + mt * 16 + lane % 16) * SP + kk * 16 + (lane / 16) * 8);
  };
  uint32_t qf[kQInRegs ? KD : 1][4];
  if constexpr (kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) load_q(qf[kk], 0, kk);
  }

  float o[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < ND; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  float mrow[MT][2], lrow[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) mrow[mt][0] = mrow[mt][1] = -INFINITY, lrow[mt][0] = lrow[mt][1] = 0.0f;

  for (int j0 = kbeg, stage = 0; j0 < kend; j0 += KN, stage ^= 1) {
    cp_async_wait_all();
    __syncthreads();  // tile j0 visible to all warps; everyone is done with the other stage
    if (j0 + KN < kend) load_kv(j0 + KN, stage ^ 1);  // prefetch overlaps this tile's math
    const bf16* sK = sKV + stage * 2 * KN * SP;
    const bf16* sV = sK + KN * SP;
    float sc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < NT; ++i) sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
    // S = Q K^T: each K fragment feeds the MT row tiles
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      uint32_t qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (kQInRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) qa[mt][e] = qf[kk][e];
        } else {
          load_q(qa[mt], mt, kk);
        }
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ldsm_x4(r, sK + (np * 16 + lane % 8 + (lane / 16) * 8) * SP + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma16816(sc[mt][2 * np], qa[mt], r[0], r[1]);
          mma16816(sc[mt][2 * np + 1], qa[mt], r[2], r[3]);
        }
      }
    }
    // mask (only tiles that straddle the causal/window edge or the end need it); row maxima of the
    // raw scores, then p = 2^(x * scale * log2 e - m) as one FFMA and one EX2 a score
    const bool full_tile = (j0 + KN - 1 <= m0 + off) && (j0 + KN <= s.Tk) && (m0 + BM <= s.Tq) &&
                           (W == 0 || j0 > m0 + BM - 1 + off - W);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int qrow0 = m0 + wrow0 + mt * 16 + g;  // this thread's rows: qrow0 and qrow0 + 8
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = qrow0 + (e / 2) * 8, j = j0 + nt * 8 + tig * 2 + (e % 2);
          if (!full_tile && !visible(i, j, off, s.Tq, s.Tk, W)) sc[mt][nt][e] = -INFINITY;
          mx[e / 2] = fmaxf(mx[e / 2], sc[mt][nt][e]);
        }
      // Lazy rescaling: a row keeps its running max m (log2 units) until a tile's max exceeds it by
      // more than kMaxGrowth, so p <= 2^kMaxGrowth; exact, since l and O share the stale m and the
      // lse uses it too. O and l are rescaled only when some row of the warp moves its max (warp-
      // uniform branch): rarely, once the first tiles have set the maxima.
      bool grow = false;
      float mnew[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        mnew[r] = fmaxf(mrow[mt][r], mx[r] * sl2);
        grow |= mnew[r] > mrow[mt][r] + kMaxGrowth;  // (an unset row, m = -inf, grows at its first visible key)
      }
      if (__any_sync(0xffffffffu, grow)) {
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          corr[r] = mnew[r] == -INFINITY ? 1.0f : exp2f(mrow[mt][r] - mnew[r]);
          mrow[mt][r] = mnew[r];
          lrow[mt][r] *= corr[r];
        }
#pragma unroll
        for (int dt = 0; dt < ND; ++dt)
          o[mt][dt][0] *= corr[0], o[mt][dt][1] *= corr[0], o[mt][dt][2] *= corr[1], o[mt][dt][3] *= corr[1];
      }
      const float neg_m[2] = {mrow[mt][0] == -INFINITY ? 0.0f : -mrow[mt][0],
                              mrow[mt][1] == -INFINITY ? 0.0f : -mrow[mt][1]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(fmaf(sc[mt][nt][e], sl2, neg_m[e / 2]));
          sc[mt][nt][e] = p;
          lrow[mt][e / 2] += p;
        }
    }
    // O += P V: each V fragment feeds the MT row tiles
#pragma unroll
    for (int kc = 0; kc < KN / 16; ++kc) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) acc_to_a(a[mt], sc[mt], kc);
      mma_a_rows_mt<ND, MT>(o, a, sV, kc * 16, SP, lane);
    }
  }
  // finish: full row sums across the quad, normalize, write
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    fwd_write_rows<TO, ND>(out, lse, &o[mt][0][0], lrow[mt], mrow[mt], m0 + wrow0 + mt * 16 + g, tig, h, b, D, ldq, s);
}

// ---------------------------------------------------------------- forward on warpgroup MMAs (Hopper)
// Head dims DW = 64 and 128 (D = DW), sm_90a. One block of 2 warpgroups (256 threads) per (128
// queries, head, batch); warpgroup w owns query rows 64w .. 64w + 63 and keeps its O [64 x DW] in
// fp32 accumulators (DW / 2 a thread). Key tiles of 128 (K and V) stream through shared memory in
// three stages (cp.async, tile t+1 loading during tile t), in the 128-byte-swizzle layout wgmma reads
// (wgmma.cuh). Per key tile t a warpgroup issues S = Q K^T (DW / 16 wgmma, A = its Q rows and B = the
// K tile from shared memory), then tile t-1's O += P V (8 wgmma of N = DW, P as bf16 A fragments in
// registers, V read M/N-major); the mask and the online softmax of tile t (lazy rescaling, on accumulators
// laid out as mma.sync's, so the code is the mma.sync forward's) run while O += P V is in flight.
// Against the mma.sync forward: no ldmatrix (the tensor cores read shared memory themselves), 4x
// wider MMAs, and the softmax hidden behind them. Two layouts measured and not kept (docs/PERF.md):
// wgmma's unswizzled core-matrix layout (its loads read half lines: L2-bound), Q in registers.
// The block setup (SR_ATTN_FWD_BLOCK) and the epilogue (fwd_write_rows) are attn_fwd_kernel's; the
// softmax step is written out in both: as one helper it changed their machine code (PTX equal up to
// register numbering, which ptxas schedules by), and at 230-255 registers that needs a GPU measurement.
constexpr int kWgM = 128, kWgN = 128, kWgThreads = 256, kWgStages = 3;
// the Q tile and kWgStages stages of [K tile, V tile] (head dim DW: 64 or 128), + 1 KB to align them to 1024 bytes
template <int DW>
constexpr size_t wg_fwd_smem() { return size_t(kWgM + kWgStages * 2 * kWgN) * DW * sizeof(bf16) + 1024; }

// Starts loading rows [0, ROWS) (rows >= nvalid zero-filled) of a bf16 [*, ld] tensor with COLS
// (64 or 128) columns into shared memory in the 128-byte-swizzle layout: halves of 64 columns,
// [ROWS][64] each; row r's 16-byte chunk c (of 8) of a half at byte r * 128 + (c ^ (r % 8)) * 16. A
// warp's 32 chunks are 4 whole 128-byte lines in global and 512 contiguous bytes of shared memory.
template <int ROWS, int COLS>
__device__ __forceinline__ void load_tile_sw128(bf16* sm, const bf16* g, int nvalid, size_t ld) {
  constexpr int PER = ROWS * COLS / 8 / kWgThreads;
  const int t = threadIdx.x, c = t % 8;
#pragma unroll
  for (int it = 0; it < PER; ++it) {
    const int x = t + it * kWgThreads, half = x / (ROWS * 8), r = (x % (ROWS * 8)) / 8;
    const bool ok = r < nvalid;
    cp_async16(sm + half * ROWS * 64 + r * 64 + ((c ^ (r % 8)) * 8), ok ? g + size_t(r) * ld + half * 64 + c * 8 : g,
               ok ? 16 : 0);
  }
}

template <class TO, int DW, int ORDER>
__global__ void __launch_bounds__(kWgThreads, 1) attn_fwd_wg_kernel(TO* __restrict__ out, float* __restrict__ lse,
                                                                    const bf16* __restrict__ q,
                                                                    const bf16* __restrict__ k,
                                                                    const bf16* __restrict__ v, AttnShape s,
                                                                    unsigned section) {
  constexpr int KN = kWgN, TILE = KN * DW;  // elements of a K or V tile
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // [128 queries][DW], then the stages; 1024-byte aligned (the swizzle's period)
  bf16* sQ = reinterpret_cast<bf16*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  bf16* sKV = sQ + kWgM * DW;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4,
            tig = lane % 4;
  SR_ATTN_FWD_BLOCK(kWgM, KN, DW, );
  const int ntiles = kend > kbeg ? (kend - kbeg + KN - 1) / KN : 0;
  auto stage_k = [&](int t) { return sKV + (t % kWgStages) * 2 * TILE; };  // tile t's K; its V follows
  auto load_kv = [&](int t) {
    const int j0 = kbeg + t * KN;
    load_tile_sw128<KN, DW>(stage_k(t), kb + size_t(j0) * ldk, min(KN, s.Tk - j0), ldk);
    load_tile_sw128<KN, DW>(stage_k(t) + TILE, vb + size_t(j0) * ldk, min(KN, s.Tk - j0), ldk);
    cp_async_commit();
  };
  load_tile_sw128<kWgM, DW>(sQ, q + (size_t(b) * s.Tq + m0) * ldq + size_t(h) * D, min(kWgM, s.Tq - m0), ldq);
  if (ntiles > 0) load_kv(0);
  else cp_async_commit();

  float o[DW / 2], sc[64];  // O [64 rows x DW] and S [64 rows x 128 keys] accumulators (wgmma.cuh's layout)
#pragma unroll
  for (int i = 0; i < DW / 2; ++i) o[i] = 0.0f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f}, corr[2] = {1.0f, 1.0f};
  bool rescale = false;
  uint32_t pa[KN / 16][4];  // P of the last softmaxed tile as bf16 A fragments, one per 16 keys
  const int qrow0 = m0 + wg * 64 + warp * 16 + g;  // this thread's rows: qrow0 and qrow0 + 8
  auto issue_s = [&](int t) {  // S [64 q x 128 k] = Q K^T over DW / 16 steps of 16 head dims (K-major A and B)
    const bf16* sK = stage_k(t);
#pragma unroll
    for (int kk = 0; kk < DW / 16; ++kk)  // half kk / 4 of the columns, 32 bytes a step within its rows
      wgmma_ss<0, 0>(sc, wgmma_desc_sw128(sQ + (kk / 4) * kWgM * 64 + wg * 64 * 64 + (kk % 4) * 16, 16),
                     wgmma_desc_sw128(sK + (kk / 4) * KN * 64 + (kk % 4) * 16, 16), kk > 0);
    wgmma_commit();
  };
  auto issue_pv = [&](int t) {  // O [64 q x DW] += P V over 8 steps of 16 keys (V: M/N-major B)
    const bf16* sV = stage_k(t) + TILE;
#pragma unroll
    for (int kc = 0; kc < KN / 16; ++kc)  // 16 keys = 2048 bytes a step; head dims 64.. a half (KN x 128 bytes) on
      wgmma_rs<1>(o, pa[kc], wgmma_desc_sw128(sV + kc * 16 * 64, KN * 128), 1);
    wgmma_commit();
  };
  // mask, row maxima of the raw scores, the lazy rescaling decision (corr, rescale), p = 2^(x scale
  // log2 e - m) into sc and the row sums: as the mma.sync forward; O is rescaled once O += P V is done
  auto softmax = [&](int t) {
    const int j0 = kbeg + t * KN;
    const bool full_tile = (j0 + KN - 1 <= m0 + off) && (j0 + KN <= s.Tk) && (m0 + kWgM <= s.Tq) &&
                           (W == 0 || j0 > m0 + kWgM - 1 + off - W);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = qrow0 + (e / 2) * 8, j = j0 + nt * 8 + tig * 2 + (e % 2);
        if (!full_tile && !visible(i, j, off, s.Tq, s.Tk, W)) sc[4 * nt + e] = -INFINITY;
        mx[e / 2] = fmaxf(mx[e / 2], sc[4 * nt + e]);
      }
    bool grow = false;
    float mnew[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      mnew[r] = fmaxf(mrow[r], mx[r] * sl2);
      grow |= mnew[r] > mrow[r] + kMaxGrowth;  // (an unset row, m = -inf, grows at its first visible key)
    }
    rescale = __any_sync(0xffffffffu, grow);
    if (rescale) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        corr[r] = mnew[r] == -INFINITY ? 1.0f : exp2f(mrow[r] - mnew[r]);
        mrow[r] = mnew[r];
        lrow[r] *= corr[r];
      }
    }
    const float neg_m[2] = {mrow[0] == -INFINITY ? 0.0f : -mrow[0], mrow[1] == -INFINITY ? 0.0f : -mrow[1]};
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      sc[i] = exp2f(fmaf(sc[i], sl2, neg_m[(i / 2) % 2]));
      lrow[(i / 2) % 2] += sc[i];
    }
  };

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait_all();
    fence_proxy_async();  // tile t's copies visible to the tensor cores' operand reads of every warp;
    __syncthreads();      // every warpgroup is done with tile t-2 (its O += P V waited), whose stage loads next
    if (t + 1 < ntiles) load_kv(t + 1);
    wgmma_fence();
    issue_s(t);
    if (t > 0) {
      issue_pv(t - 1);
      wgmma_wait<1>();  // S of tile t is done; tile t-1's O += P V may still run
    } else {
      wgmma_wait<0>();
    }
    softmax(t);
    wgmma_wait<0>();
    if (rescale) {
#pragma unroll
      for (int i = 0; i < DW / 2; ++i) o[i] *= corr[(i / 2) % 2];
    }
#pragma unroll
    for (int kc = 0; kc < KN / 16; ++kc)  // mma.sync's accumulator -> A fragment trick (acc_to_a)
#pragma unroll
      for (int x = 0; x < 4; ++x) pa[kc][x] = pack_bf16(sc[8 * kc + 2 * x], sc[8 * kc + 2 * x + 1]);
  }
  if (ntiles > 0) {
    wgmma_fence();
    issue_pv(ntiles - 1);
    wgmma_wait<0>();
  }
  fwd_write_rows<TO, DW / 8, true>(out, lse, o, lrow, mrow, qrow0, tig, h, b, D, ldq, s);
}

// ---------------------------------------------------------------- backward
// delta[b,h,i] = sum_d dout * out (dout, out: bf16, or fp32 from the model's entry point); dout16
// (or null): dout rounded to bf16 in the same pass, the kernels' operand (the values a separate
// rounding gives)
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <class T>
__global__ void attn_delta_kernel(float* delta, bf16* dout16, const T* dout, const T* out, AttnShape s) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  const int total = s.B * s.Tq * s.Hq;
  if (row >= total) return;
  const int h = row % s.Hq, i = (row / s.Hq) % s.Tq, b = row / (s.Hq * s.Tq);
  const T *a = dout + size_t(row) * s.D, *c = out + size_t(row) * s.D;
  float acc = 0;
  for (int d = lane; d < s.D; d += 32) {
    const float x = to_f(a[d]);
    if (dout16) dout16[size_t(row) * s.D + d] = __float2bfloat16(x);
    acc += x * to_f(c[d]);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) delta[(size_t(b) * s.Hq + h) * s.Tq + i] = acc;
}

// A backward block's place and work (both backward kernels). Grid: (key tiles of KN, kv heads [x the
// group size when head_split], batch), launched in order ORDER (attention_schedule.h); head_split: one
// block per (key tile, query head) instead of per kv head, so a GQA model with few kv heads still
// fills the GPU, and the group's dK/dV partial sums meet in fp32 atomics. The block visits the QM-query tiles that see any of its keys
// (positions j0 .. j0 + KN - 1 + W - 1), for every query head of the kv group (or the one, g_first,
// when head_split): iteration t -> (query head h, first query i0), stepped by first() and next().
// load() starts loading the tile (h, i0) (Q
// and dO [QM][DP + 8] bf16, then lse and delta) into one stage of shared memory as one cp.async group
// (NTHR: the block's threads).
template <int DP, int KN, int QM, int NTHR, int ORDER>
struct BwdTiles {
  int j0, kh, b, G, g_first, ibeg, tiles_per_head, ntiles;
  __device__ BwdTiles(const AttnShape& s, bool head_split, unsigned section) : G(s.Hq / s.Hkv) {
    const int split = head_split ? G : 1;
    const AttnBlockPlace p = block_place<ORDER>(section);  // tile 0 = the heaviest = the first key tile
    j0 = p.tile * KN, kh = p.head / split, b = p.batch;
    g_first = head_split ? p.head % split : 0;
    const int off = s.Tk - s.Tq;
    ibeg = max(0, j0 - off) / QM * QM;
    const int iend = s.window > 0 ? min(s.Tq, j0 + KN - 1 + s.window - 1 - off + 1) : s.Tq;
    tiles_per_head = iend > ibeg ? (iend - ibeg + QM - 1) / QM : 0;
    ntiles = tiles_per_head * (head_split ? 1 : G);
  }
  // Tile 0, and the tile after (h, i0) (no integer division in the loop: the cursor steps).
  __device__ void first(int& h, int& i0) const { h = kh * G + g_first, i0 = ibeg; }
  __device__ void next(int& h, int& i0) const {
    i0 += QM;
    if (i0 >= ibeg + tiles_per_head * QM) i0 = ibeg, ++h;
  }
  __device__ void load(int h, int i0, bf16* sQO_stage, float* sLD_stage, const bf16* q, const bf16* dout,
                       const float* lse, const float* delta, const AttnShape& s) const {
    const int nq = min(QM, s.Tq - i0);
    const size_t ldq = size_t(s.Hq) * s.D, row = (size_t(b) * s.Tq + i0) * ldq + size_t(h) * s.D;
    load_tile<DP, QM, NTHR>(sQO_stage, q + row, nq, ldq, s.D);
    load_tile<DP, QM, NTHR>(sQO_stage + QM * (DP + 8), dout + row, nq, ldq, s.D);
    load_lse_delta(sLD_stage, lse, delta, (size_t(b) * s.Hq + h) * s.Tq + i0, QM, nq);
    cp_async_commit();
  }
  // Sets (h, i0) to tile 0 and starts loading the block's K and V rows j0 .. j0 + KN - 1 (zeros beyond
  // Tk) into [KN][DP + 8] tiles, then tile 0 with load_q(h, i0, stage 0) (an empty group when none).
  template <class LoadQ>
  __device__ void start(int& h, int& i0, const LoadQ& load_q, bf16* sK, bf16* sV, const bf16* k, const bf16* v,
                        const AttnShape& s) const {
    first(h, i0);
    const size_t ldk = size_t(s.Hkv) * s.D, row = (size_t(b) * s.Tk + j0) * ldk + size_t(kh) * s.D;
    load_tile<DP, KN, NTHR>(sK, k + row, min(KN, s.Tk - j0), ldk, s.D);
    load_tile<DP, KN, NTHR>(sV, v + row, min(KN, s.Tk - j0), ldk, s.D);
    if (ntiles > 0) load_q(h, i0, 0);
    else cp_async_commit();
  }
};

template <class TO, int DP, int ORDER>
__global__ void __launch_bounds__(kThreadsA) attn_bwd_kernel(float* __restrict__ dq_acc, TO* __restrict__ dk,
                                                             TO* __restrict__ dv, const bf16* __restrict__ dout,
                                                             const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                             const bf16* __restrict__ v, const float* __restrict__ lse,
                                                             const float* __restrict__ delta, AttnShape s,
                                                             bool head_split, unsigned section) {
  constexpr int SP = DP + 8, KD = DP / 16, ND = DP / 8, SPS = kBwdM + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + kBwdN * SP;
  bf16* sQO = sV + kBwdN * SP;                 // two stages of [Q tile, dO tile]
  bf16* sS = sQO + 2 * 2 * kBwdM * SP;         // dS^T tile [keys][queries]
  float* sLD = reinterpret_cast<float*>(sS + kBwdN * SPS);  // two stages of [lse, delta]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const BwdTiles<DP, kBwdN, kBwdM, kThreadsA, ORDER> tiles(s, head_split, section);
  const int j0 = tiles.j0, kh = tiles.kh, b = tiles.b;
  const int D = s.D, W = s.window, off = s.Tk - s.Tq;
  const size_t ldq = size_t(s.Hq) * D, ldk = size_t(s.Hkv) * D;
  const float sl2 = s.scale * kLog2e;
  const int ntiles = tiles.ntiles;
  const int krow0 = j0 + warp * 16 + g;  // this thread's key rows: krow0 and krow0 + 8
  auto load_q = [&](int h, int i0, int stage) {
    tiles.load(h, i0, sQO + stage * 2 * kBwdM * SP, sLD + stage * 2 * kBwdM, q, dout, lse, delta, s);
  };
  int h, i0;  // the current tile
  tiles.start(h, i0, load_q, sK, sV, k, v, s);

  float dK[ND][4], dV[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dK[i][e] = dV[i][e] = 0.0f;

  int hn, in;  // the next tile
  for (int t = 0, stage = 0; t < ntiles; ++t, stage ^= 1, h = hn, i0 = in) {
    hn = h, in = i0;
    tiles.next(hn, in);
    cp_async_wait_all();
    __syncthreads();  // tile t visible; all warps done with tile t-1 (its stage and dS)
    if (t + 1 < ntiles) load_q(hn, in, stage ^ 1);
    const bf16* sQ = sQO + stage * 2 * kBwdM * SP;
    const bf16* sO = sQ + kBwdM * SP;
    const float* sL = sLD + stage * 2 * kBwdM;
    const float* sD = sL + kBwdM;
    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x kBwdM queries
    float st[kBwdM / 8][4], dpt[kBwdM / 8][4];
#pragma unroll
    for (int i = 0; i < kBwdM / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      uint32_t ak[4], av[4];
      ldsm_x4(ak, sK + (warp * 16 + lane % 16) * SP + kk * 16 + (lane / 16) * 8);
      ldsm_x4(av, sV + (warp * 16 + lane % 16) * SP + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int np = 0; np < kBwdM / 16; ++np) {
        uint32_t r[4], o4[4];
        ldsm_x4(r, sQ + (np * 16 + lane % 8 + (lane / 16) * 8) * SP + kk * 16 + ((lane / 8) % 2) * 8);
        ldsm_x4(o4, sO + (np * 16 + lane % 8 + (lane / 16) * 8) * SP + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816(st[2 * np], ak, r[0], r[1]);
        mma16816(st[2 * np + 1], ak, r[2], r[3]);
        mma16816(dpt[2 * np], av, o4[0], o4[1]);
        mma16816(dpt[2 * np + 1], av, o4[2], o4[3]);
      }
    }
    // P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - delta); only tiles that straddle the causal or
    // window edge or the end need the mask
    const bool full_tile = (j0 + kBwdN - 1 <= i0 + off) && (j0 + kBwdN <= s.Tk) && (i0 + kBwdM <= s.Tq) &&
                           (W == 0 || j0 > i0 + kBwdM - 1 + off - W);
#pragma unroll
    for (int nt = 0; nt < kBwdM / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = krow0 + (e / 2) * 8, il = nt * 8 + tig * 2 + (e % 2), i = i0 + il;
        float p = full_tile || visible(i, j, off, s.Tq, s.Tk, W) ? exp2f(st[nt][e] * sl2 - sL[il] * kLog2e) : 0.0f;
        st[nt][e] = p;
        dpt[nt][e] = p * (dpt[nt][e] - sD[il]);
      }
    // dV += P^T dO ; dK += dS^T Q  (k = the kBwdM queries); mma_a_rows twice, but interleaved by
    // hand: two calls compile to a different (unmeasured) schedule
#pragma unroll
    for (int kc = 0; kc < kBwdM / 16; ++kc) {
      uint32_t ap[4], as[4];
      acc_to_a(ap, st, kc);
      acc_to_a(as, dpt, kc);
#pragma unroll
      for (int dp = 0; dp < KD; ++dp) {
        uint32_t r[4], rq[4];
        ldsm_x4_t(r, sO + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * SP + dp * 16 + (lane / 16) * 8);
        ldsm_x4_t(rq, sQ + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * SP + dp * 16 + (lane / 16) * 8);
        mma16816(dV[2 * dp], ap, r[0], r[1]);
        mma16816(dV[2 * dp + 1], ap, r[2], r[3]);
        mma16816(dK[2 * dp], as, rq[0], rq[1]);
        mma16816(dK[2 * dp + 1], as, rq[2], rq[3]);
      }
    }
    // dS^T -> shared memory for dQ = dS K
#pragma unroll
    for (int nt = 0; nt < kBwdM / 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        *reinterpret_cast<uint32_t*>(sS + (warp * 16 + g + r * 8) * SPS + nt * 8 + tig * 2) =
            pack_bf16(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
    __syncthreads();
    // dQ[kBwdM q, DP] += scale * dS[kBwdM q, 64 k] K[64 k, DP]; warp w takes query rows 16w..16w+15
    // and every head-dim column, so each dS fragment is loaded once (the accumulators reuse the
    // registers S^T and dP^T held above)
    static_assert(kBwdM == 16 * kWarps, "one warp per 16 query rows of the dQ tile");
    if constexpr (DP <= 128) {
      float acc[ND][4];
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kBwdN / 16; ++ks) {
        uint32_t a[4];
        ldsm_x4_t(a, sS + (ks * 16 + lane % 8 + (lane / 16) * 8) * SPS + warp * 16 + ((lane / 8) % 2) * 8);
        mma_a_rows(acc, a, sK, ks * 16, SP, lane);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = i0 + warp * 16 + g + r * 8;
        if (i >= s.Tq) continue;
        float* dqr = dq_acc + (size_t(b) * s.Tq + i) * ldq + size_t(h) * D;
#pragma unroll
        for (int nt = 0; nt < ND; ++nt)
          atomic_add_pair(dqr, nt * 8 + tig * 2, D, acc[nt][2 * r] * s.scale, acc[nt][2 * r + 1] * s.scale);
      }
    } else {  // DP = 256: ND accumulators per thread would spill; warp w takes d-tiles w, w+4, ...
      for (int nt = warp; nt < ND; nt += kWarps) {
        float acc[kBwdM / 16][4];
#pragma unroll
        for (int mt = 0; mt < kBwdM / 16; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < kBwdN / 16; ++ks) {
          uint32_t b0, b1;
          ldsm_x2_t(b0, b1, sK + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * SP + nt * 8);
#pragma unroll
          for (int mt = 0; mt < kBwdM / 16; ++mt) {
            uint32_t a[4];
            ldsm_x4_t(a, sS + (ks * 16 + lane % 8 + (lane / 16) * 8) * SPS + mt * 16 + ((lane / 8) % 2) * 8);
            mma16816(acc[mt], a, b0, b1);
          }
        }
#pragma unroll
        for (int mt = 0; mt < kBwdM / 16; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = i0 + mt * 16 + g + (e / 2) * 8, c = nt * 8 + tig * 2 + (e % 2);
            if (i < s.Tq && c < D) atomicAdd(dq_acc + (size_t(b) * s.Tq + i) * ldq + size_t(h) * D + c, acc[mt][e] * s.scale);
          }
      }
    }
  }
  write_dkv_rows<TO, ND>(dk, dv, &dK[0][0], &dV[0][0], krow0, tig, b, kh, D, ldk, s, head_split);  // this warp's keys
}

// Backward, 2-D warp tiling (FlashAttention-2's layout for head dims 64 and 128): one block of 8
// warps per (128 keys, kv head, batch). Each 64-query tile is computed in three warp layouts so that
// every fragment loaded from shared memory feeds at least two MMAs:
//   S = Q K^T and dP = dO V^T   [64 q x 128 k]: warps 2 (queries) x 4 (keys), 32 x 32 each;
//   P and dS go to shared memory (bf16, [queries][keys]);
//   dV += P^T dO, dK += dS^T Q [128 k x DP]: warps 4 (keys) x 2 (dims), 32 x DP/2 each, in registers;
//   dQ += dS K                 [64 q x DP]:  warps 2 (queries) x 4 (dims), 32 x DP/4 each, fp32 atomics.
// Between writing P/dS and reading them: one block-wide barrier, or (NAMED) the narrower barriers
// over the warps that share the data (below).
// Against attn_bwd_kernel (4 warps, 16 keys x every query a warp): ~20% less shared-memory traffic
// per MMA, half the dQ atomics and half the Q/dO tile loads per key.
constexpr int kB2Warps = 8, kB2Threads = kB2Warps * 32;
constexpr int kB2N = 128, kB2M = 64;  // keys x queries
// Whole tiles (no pair masked) take a path with no per-score mask test, and whole head dims add dQ
// pairs with no per-pair column tests.
// Barrier over the `threads` threads (whole warps) that use named barrier `id` (1..15; 0 is __syncthreads')
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
// NAMED: the barrier between writing P/dS and reading them is two narrower ones: dV/dK's warps
// (wk, wd) read the key columns that warps wk and 4 + wk wrote (one 64-thread barrier a pair), and
// dQ's warps (wm, .) the query rows that warps 4 wm .. 4 wm + 3 wrote (one 128-thread barrier a quad)
template <class TO, int DP, int ORDER, bool NAMED = false>
__global__ void __launch_bounds__(kB2Threads, 1)
    attn_bwd2_kernel(float* __restrict__ dq_acc, TO* __restrict__ dk, TO* __restrict__ dv, const bf16* __restrict__ dout,
                     const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                     const float* __restrict__ lse, const float* __restrict__ delta, AttnShape s, bool head_split,
                     unsigned section) {
  static_assert(DP == 64 || DP == 128, "2-D backward tiling for head dims 64 and 128");
  constexpr int SP = DP + 8, KD = DP / 16, SPP = kB2N + 8;
  constexpr int NKV = DP / 16, NQ = DP / 32;  // n-tiles of 8 dims a warp: dK/dV (DP/2 dims), dQ (DP/4)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + kB2N * SP;
  bf16* sQO = sV + kB2N * SP;          // two stages of [Q tile, dO tile], [kB2M][SP] each
  bf16* sP = sQO + 2 * 2 * kB2M * SP;  // P [queries][keys]
  bf16* sdS = sP + kB2M * SPP;         // dS [queries][keys]
  float* sLD = reinterpret_cast<float*>(sdS + kB2M * SPP);  // two stages of [lse, delta]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
  const int wm = warp / 4, wn = warp % 4;  // S/dP: query rows wm*32, key cols wn*32; dQ: dims wn*DP/4
  const int wk = warp % 4, wd = warp / 4;  // dK/dV: key rows wk*32, dims wd*DP/2
  const BwdTiles<DP, kB2N, kB2M, kB2Threads, ORDER> tiles(s, head_split, section);
  const int j0 = tiles.j0, kh = tiles.kh, b = tiles.b;
  const int D = s.D, W = s.window, off = s.Tk - s.Tq;
  const size_t ldq = size_t(s.Hq) * D, ldk = size_t(s.Hkv) * D;
  const float sl2 = s.scale * kLog2e;
  const int ntiles = tiles.ntiles;
  auto load_q = [&](int h, int i0, int stage) {
    tiles.load(h, i0, sQO + stage * 2 * kB2M * SP, sLD + stage * 2 * kB2M, q, dout, lse, delta, s);
  };
  int h, i0;  // the current tile
  tiles.start(h, i0, load_q, sK, sV, k, v, s);

  float dK[2][NKV][4], dV[2][NKV][4];  // [key row tile][dim tile][fragment]
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < NKV; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) dK[mt][i][e] = dV[mt][i][e] = 0.0f;

  int hn, in;  // the next tile
  for (int t = 0, stage = 0; t < ntiles; ++t, stage ^= 1, h = hn, i0 = in) {
    hn = h, in = i0;
    tiles.next(hn, in);
    cp_async_wait_all();
    __syncthreads();  // tile t visible; every warp done with tile t-1 (its stage, P and dS)
    if (t + 1 < ntiles) load_q(hn, in, stage ^ 1);
    const bf16* sQ = sQO + stage * 2 * kB2M * SP;
    const bf16* sO = sQ + kB2M * SP;
    const float* sL = sLD + stage * 2 * kB2M;
    const float* sD = sL + kB2M;
    // S = Q K^T, dP = dO V^T: this warp's 32 queries x 32 keys
    float sc[2][4][4], dp[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[mt][nt][e] = dp[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) {
      uint32_t aq[2][4], ao[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        ldsm_x4(aq[mt], sQ + (wm * 32 + mt * 16 + lane % 16) * SP + kk * 16 + (lane / 16) * 8);
        ldsm_x4(ao[mt], sO + (wm * 32 + mt * 16 + lane % 16) * SP + kk * 16 + (lane / 16) * 8);
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t rk[4], rv[4];
        ldsm_x4(rk, sK + (wn * 32 + np * 16 + lane % 8 + (lane / 16) * 8) * SP + kk * 16 + ((lane / 8) % 2) * 8);
        ldsm_x4(rv, sV + (wn * 32 + np * 16 + lane % 8 + (lane / 16) * 8) * SP + kk * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma16816(sc[mt][2 * np], aq[mt], rk[0], rk[1]);
          mma16816(sc[mt][2 * np + 1], aq[mt], rk[2], rk[3]);
          mma16816(dp[mt][2 * np], ao[mt], rv[0], rv[1]);
          mma16816(dp[mt][2 * np + 1], ao[mt], rv[2], rv[3]);
        }
      }
    }
    // P = exp(S scale - lse), dS = P (dP - delta) -> shared memory; only blocks that straddle the
    // causal or window edge or the end need the mask
    const bool full_tile = (j0 + kB2N - 1 <= i0 + off) && (j0 + kB2N <= s.Tk) && (i0 + kB2M <= s.Tq) &&
                           (W == 0 || j0 > i0 + kB2M - 1 + off - W);
    auto p_ds = [&](auto masked) {  // masked: std::true_type / std::false_type
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int il = wm * 32 + mt * 16 + g + r * 8;
          const float lrow = sL[il] * kLog2e, drow = sD[il];
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) {
            const int jl = wn * 32 + nt * 8 + tig * 2;
            float p[2], ds[2];
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const float x = sc[mt][nt][2 * r + c];
              if constexpr (decltype(masked)::value)  // (full_tile is false here: the code as measured)
                p[c] = full_tile || visible(i0 + il, j0 + jl + c, off, s.Tq, s.Tk, W) ? exp2f(x * sl2 - lrow) : 0.0f;
              else
                p[c] = exp2f(x * sl2 - lrow);
              ds[c] = p[c] * (dp[mt][nt][2 * r + c] - drow);
            }
            *reinterpret_cast<uint32_t*>(sP + il * SPP + jl) = pack_bf16(p[0], p[1]);
            *reinterpret_cast<uint32_t*>(sdS + il * SPP + jl) = pack_bf16(ds[0], ds[1]);
          }
        }
    };
    if (full_tile) p_ds(std::false_type{});
    else p_ds(std::true_type{});
    if constexpr (NAMED) named_barrier(1 + wk, 64);
    else __syncthreads();
    // dV += P^T dO, dK += dS^T Q over the tile's 64 queries (A: P^T / dS^T, read transposed)
#pragma unroll
    for (int ks = 0; ks < kB2M / 16; ++ks) {
      uint32_t ap[2][4], as[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int at = (ks * 16 + lane % 8 + (lane / 16) * 8) * SPP + wk * 32 + mt * 16 + ((lane / 8) % 2) * 8;
        ldsm_x4_t(ap[mt], sP + at);
        ldsm_x4_t(as[mt], sdS + at);
      }
      mma_a_rows_mt<NKV, 2>(dV, ap, sO + wd * (DP / 2), ks * 16, SP, lane);
      mma_a_rows_mt<NKV, 2>(dK, as, sQ + wd * (DP / 2), ks * 16, SP, lane);
    }
    if constexpr (NAMED) named_barrier(5 + wm, 128);
    // dQ[64 q, DP] += scale * dS[64 q, 128 k] K[128 k, DP]: this warp's 32 queries x DP/4 dims
    {
      float acc[2][NQ][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kB2N / 16; ++ks) {
        uint32_t a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) ldsm_x4(a[mt], sdS + (wm * 32 + mt * 16 + lane % 16) * SPP + ks * 16 + (lane / 16) * 8);
        mma_a_rows_mt<NQ, 2>(acc, a, sK + wn * (DP / 4), ks * 16, SP, lane);
      }
      const int irow = i0 + wm * 32 + g;  // this thread's rows: irow + mt * 16 + r * 8
      if (D == DP) {
        // Whole head dims (pairs 8-byte aligned): no branch around a row past the end -- it adds zeros
        // to the last row instead -- so the 16 atomics issue back to back. (Branching around them
        // stalled the next row's address arithmetic on the previous row's atomics: 1.02-1.03x.)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int i = irow + mt * 16 + r * 8;
            const float sc = i < s.Tq ? s.scale : 0.0f;
            float* dqr = dq_acc + (size_t(b) * s.Tq + min(i, s.Tq - 1)) * ldq + size_t(h) * D + wn * (DP / 4) + tig * 2;
#pragma unroll
            for (int nt = 0; nt < NQ; ++nt) atomic_add2(dqr + nt * 8, acc[mt][nt][2 * r] * sc, acc[mt][nt][2 * r + 1] * sc, true);
          }
      } else {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int i = irow + mt * 16 + r * 8;
            if (i >= s.Tq) continue;
            float* row = dq_acc + (size_t(b) * s.Tq + i) * ldq + size_t(h) * D;
#pragma unroll
            for (int nt = 0; nt < NQ; ++nt)
              atomic_add_pair(row, wn * (DP / 4) + nt * 8 + tig * 2, D, acc[mt][nt][2 * r] * s.scale,
                              acc[mt][nt][2 * r + 1] * s.scale);
          }
      }
    }
  }
  // write dK (scaled) and dV for this warp's 32 keys x DP/2 dims
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
    write_dkv_rows<TO, NKV>(dk, dv, &dK[mt][0][0], &dV[mt][0][0], j0 + wk * 32 + mt * 16 + g, tig, b, kh, D, ldk, s,
                            head_split, wd * (DP / 2));
}

// ---------------------------------------------------------------- backward on warpgroup MMAs (Hopper)
// Head dims DW = 64 and 128 (D = DW), sm_90a; FlashAttention-3's layout without its producer warp. One
// block of 2 warpgroups per (128 keys, kv head, batch); warpgroup w owns keys 64w .. 64w + 63 and keeps
// their dK and dV [64 x DW] in fp32 accumulators. K and V stay in shared memory; the query tiles (64
// queries of Q and dO, the group's heads in turn) stream through cp.async stages (2 at DW = 128, 3 at
// 64), all in the 128-byte-swizzle layout (load_tile_sw128). Per query tile a warpgroup computes
//   S^T = K_w Q^T and dP^T = V_w dO^T  [64 keys x 64 q] (wgmma m64n64, both operands from shared memory);
//   P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - delta) in registers (keys are the rows, so P^T and
//   dS^T are already the A operands of the next products);
//   dV_w += P^T dO, dK_w += dS^T Q  [64 keys x DW] (A from registers, B = dO / Q read M/N-major);
//   dS^T -> shared memory; then dQ = dS K (A = dS^T read M/N-major, B = K read M/N-major), fp32
//   atomics: DW = 128: once both warpgroups wrote theirs, [64 q x the warpgroup's 64 head dims] over
//   128 keys; DW = 64: [64 q x 64] over the warpgroup's own 64 keys, the two shares then summed in
//   shared memory and each warpgroup adding half the head dims.
constexpr int kWbN = 128, kWbM = 64;  // keys a block x queries a tile
// Head dim 64 (less MMA work a tile to hide the rest behind): 3 query-tile stages, and the two
// warpgroups' dQ shares summed in shared memory before the atomics (measured: docs/PERF.md)
template <int DW>
constexpr int wg_bwd_stages() { return DW == 64 ? 3 : 2; }
template <int DW>
constexpr bool wg_bwd_dq_exchange() { return DW == 64; }
// K, V, QS stages of [Q, dO] (head dim DW), dS^T, QS stages of [lse, delta], the dQ exchange (2
// warpgroups x 128 threads x 16 floats); + 1 KB to align to 1024 bytes
template <int DW, int QS = wg_bwd_stages<DW>(), bool DQX = wg_bwd_dq_exchange<DW>()>
constexpr size_t wg_bwd_smem() {
  return size_t(2 * kWbN * DW + QS * 2 * kWbM * DW + kWbN * kWbM) * sizeof(bf16) + QS * 2 * kWbM * sizeof(float) +
         (DQX ? 2 * 128 * 16 * sizeof(float) : 0) + 1024;
}

template <class TO, int DW, int ORDER>
__global__ void __launch_bounds__(kWgThreads, 1)
    attn_bwd_wg_kernel(float* __restrict__ dq_acc, TO* __restrict__ dk, TO* __restrict__ dv, const bf16* __restrict__ dout,
                       const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                       const float* __restrict__ lse, const float* __restrict__ delta, AttnShape s, bool head_split,
                       unsigned section) {
  constexpr int KT = kWbN * DW, QT = kWbM * DW;  // elements of the K (V) tile and of a Q (dO) tile
  constexpr int QS = wg_bwd_stages<DW>();           // query-tile stages
  constexpr bool DQX = wg_bwd_dq_exchange<DW>();    // dQ shares summed in shared memory
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  bf16* sV = sK + KT;
  bf16* sQO = sV + KT;                 // QS stages of [Q tile, dO tile]
  bf16* sdS = sQO + QS * 2 * QT;       // dS^T [128 keys][64 q]: one 128-byte-swizzle half
  float* sLD = reinterpret_cast<float*>(sdS + kWbN * kWbM);  // QS stages of [lse, delta]
  float4* sX = reinterpret_cast<float4*>(sLD + QS * 2 * kWbM);  // DQX: [2 warpgroups][4][128 threads]
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4,
            tig = lane % 4;
  const BwdTiles<DW, kWbN, kWbM, kWgThreads, ORDER> tiles(s, head_split, section);
  const int j0 = tiles.j0, kh = tiles.kh, b = tiles.b;
  const int D = DW, W = s.window, off = s.Tk - s.Tq;
  const size_t ldq = size_t(s.Hq) * D, ldk = size_t(s.Hkv) * D;
  const float sl2 = s.scale * kLog2e;
  const int ntiles = tiles.ntiles;
  auto load_q = [&](int h, int i0, int stage) {
    const int nq = min(kWbM, s.Tq - i0);
    const size_t row = (size_t(b) * s.Tq + i0) * ldq + size_t(h) * D;
    bf16* dst = sQO + stage * 2 * QT;
    load_tile_sw128<kWbM, DW>(dst, q + row, nq, ldq);
    load_tile_sw128<kWbM, DW>(dst + QT, dout + row, nq, ldq);
    load_lse_delta(sLD + stage * 2 * kWbM, lse, delta, (size_t(b) * s.Hq + h) * s.Tq + i0, kWbM, nq);
    cp_async_commit();
  };
  {
    const size_t row = (size_t(b) * s.Tk + j0) * ldk + size_t(kh) * D;
    load_tile_sw128<kWbN, DW>(sK, k + row, min(kWbN, s.Tk - j0), ldk);
    load_tile_sw128<kWbN, DW>(sV, v + row, min(kWbN, s.Tk - j0), ldk);
  }
  int h, i0;
  tiles.first(h, i0);
  if (ntiles > 0) load_q(h, i0, 0);
  else cp_async_commit();
  int hl = h, il = i0;  // the last tile whose load was issued (tile p at step p of the prologue)
#pragma unroll
  for (int p = 1; p < QS - 1; ++p) {
    tiles.next(hl, il);
    if (p < ntiles) load_q(hl, il, p);
    else cp_async_commit();
  }

  float dK[DW / 2], dV[DW / 2];  // this warpgroup's 64 keys x DW head dims
#pragma unroll
  for (int i = 0; i < DW / 2; ++i) dK[i] = dV[i] = 0.0f;
  const int key0 = j0 + wg * 64 + warp * 16 + g;  // this thread's keys: key0 and key0 + 8
  for (int t = 0; t < ntiles; ++t, tiles.next(h, i0)) {
    const int stage = t % QS;
    cp_async_wait<QS - 2>();  // tile t's group (later tiles' may still be in flight)
    fence_proxy_async();
    __syncthreads();  // tile t visible to the tensor cores; both warpgroups are done with tile t-1 and dS^T
    tiles.next(hl, il);  // tile t + QS - 1, into the stage tile t - 1 used
    if (t + QS - 1 < ntiles) load_q(hl, il, (t + QS - 1) % QS);
    else cp_async_commit();
    const bf16* sQ = sQO + stage * 2 * QT;
    const bf16* sO = sQ + QT;
    const float* sL = sLD + stage * 2 * kWbM;
    const float* sD = sL + kWbM;
    // S^T, dP^T [64 keys x 64 q] over DW / 16 steps of 16 head dims (K-major A and B: half kk / 4, 32 bytes a step)
    float st[32], dpt[32];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DW / 16; ++kk)
      wgmma_ss<0, 0>(st, wgmma_desc_sw128(sK + (kk / 4) * kWbN * 64 + wg * 64 * 64 + (kk % 4) * 16, 16),
                     wgmma_desc_sw128(sQ + (kk / 4) * kWbM * 64 + (kk % 4) * 16, 16), kk > 0);
    wgmma_commit();  // S^T first: P^T is computed while dP^T runs
#pragma unroll
    for (int kk = 0; kk < DW / 16; ++kk)
      wgmma_ss<0, 0>(dpt, wgmma_desc_sw128(sV + (kk / 4) * kWbN * 64 + wg * 64 * 64 + (kk % 4) * 16, 16),
                     wgmma_desc_sw128(sO + (kk / 4) * kWbM * 64 + (kk % 4) * 16, 16), kk > 0);
    wgmma_commit();
    wgmma_wait<1>();
    // P^T, then dS^T: element (key key0 + 8 (e / 2), query i0 + 8 j + 2 tig + e % 2) of st / dpt [4 j + e]
    const bool full_tile = (j0 + kWbN - 1 <= i0 + off) && (j0 + kWbN <= s.Tk) && (i0 + kWbM <= s.Tq) &&
                           (W == 0 || j0 > i0 + kWbM - 1 + off - W);
    uint32_t pa[kWbM / 16][4], dsa[kWbM / 16][4];  // A fragments over the 64 queries (16 a step)
#pragma unroll
    for (int j = 0; j < kWbM / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = j * 8 + tig * 2 + (e % 2), key = key0 + (e / 2) * 8;
        st[4 * j + e] = full_tile || visible(i0 + c, key, off, s.Tq, s.Tk, W)
                            ? exp2f(st[4 * j + e] * sl2 - sL[c] * kLog2e) : 0.0f;
      }
      pa[j / 2][(j % 2) * 2] = pack_bf16(st[4 * j], st[4 * j + 1]);
      pa[j / 2][(j % 2) * 2 + 1] = pack_bf16(st[4 * j + 2], st[4 * j + 3]);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int j = 0; j < kWbM / 8; ++j) {
      float ds[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[e] = st[4 * j + e] * (dpt[4 * j + e] - sD[j * 8 + tig * 2 + (e % 2)]);
      dsa[j / 2][(j % 2) * 2] = pack_bf16(ds[0], ds[1]);
      dsa[j / 2][(j % 2) * 2 + 1] = pack_bf16(ds[2], ds[3]);
    }
    // dV += P^T dO, dK += dS^T Q over 4 steps of 16 queries (B M/N-major: 16 rows = 2048 bytes a step;
    // head dims 64.. a half (64 rows x 128 bytes) on)
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < kWbM / 16; ++kc) wgmma_rs<1>(dV, pa[kc], wgmma_desc_sw128(sO + kc * 16 * 64, kWbM * 128), 1);
#pragma unroll
    for (int kc = 0; kc < kWbM / 16; ++kc) wgmma_rs<1>(dK, dsa[kc], wgmma_desc_sw128(sQ + kc * 16 * 64, kWbM * 128), 1);
    wgmma_commit();
    // dS^T -> shared memory [128 keys][64 q], swizzled: key r's chunk c (8 queries) at r * 64 + (c ^ r % 8) * 8
#pragma unroll
    for (int j = 0; j < kWbM / 8; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int kr = wg * 64 + warp * 16 + g + r * 8;
        *reinterpret_cast<uint32_t*>(sdS + kr * 64 + ((j ^ (kr % 8)) * 8) + tig * 2) = dsa[j / 2][(j % 2) * 2 + r];
      }
    fence_proxy_async();
    // dQ = dS K, A = dS^T read M/N-major (16 keys = 2048 bytes a step), B = K read M/N-major.
    // DW = 128: [64 q x this warpgroup's half of the head dims] over all 128 keys (both warpgroups'
    // dS^T); DW = 64: [64 q x 64] over this warpgroup's own 64 keys (the two shares add up in dq_acc)
    if constexpr (DW == 128) __syncthreads();  // both warpgroups' dS^T written
    else named_barrier(1 + wg, 128);           // this warpgroup's dS^T written
    constexpr int kDqKeys = DW == 128 ? kWbN : 64;
    const bf16* dsA = sdS + (DW == 128 ? 0 : wg * 64 * 64);
    const bf16* kB = sK + (DW == 128 ? wg * kWbN * 64 : wg * 64 * 64);
    float dq[32];
    wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < kDqKeys / 16; ++kc)
      wgmma_ss<1, 1>(dq, wgmma_desc_sw128(dsA + kc * 16 * 64, kWbM * 128), wgmma_desc_sw128(kB + kc * 16 * 64, kWbN * 128),
                     kc > 0);
    wgmma_commit();
    wgmma_wait<0>();  // dQ, and this tile's dV / dK products (their A registers are free again)
    // dq[4 j + e]: query i0 + 16 warp + g + 8 (e / 2), head dim dq0 + 8 j + 2 tig + e % 2
    // DQX (head dim 64): the two warpgroups' shares summed in shared memory first; warpgroup w then
    // adds head dims 32 w .. 32 w + 31 (chunks j = 4 w .. 4 w + 3) of both: half the atomics, none
    // contended. (Register indices stay compile-time: the warpgroup picks its chunks by selects.)
    if constexpr (DQX) {
      const int tw = threadIdx.x % 128;
      const bool w0 = wg == 0;
#pragma unroll
      for (int c = 0; c < 4; ++c) {  // the other warpgroup's chunks of this share
        sX[(wg * 4 + c) * 128 + tw] = w0 ? make_float4(dq[4 * (4 + c)], dq[4 * (4 + c) + 1], dq[4 * (4 + c) + 2],
                                                       dq[4 * (4 + c) + 3])
                                         : make_float4(dq[4 * c], dq[4 * c + 1], dq[4 * c + 2], dq[4 * c + 3]);
      }
      __syncthreads();
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float4 y = sX[((1 - wg) * 4 + c) * 128 + tw];
        float o4[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) o4[e] = w0 ? dq[4 * c + e] : dq[4 * (4 + c) + e];
        o4[0] += y.x, o4[1] += y.y, o4[2] += y.z, o4[3] += y.w;
#pragma unroll
        for (int e = 0; e < 4; ++e) dq[4 * c + e] = o4[e];  // owned chunk c now in dq[4 c ..]
      }
    }
    const int dq0 = DW == 128 ? wg * 64 : (DQX ? wg * 32 : 0);  // the head dim of dq[0]
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int i = i0 + warp * 16 + g + r * 8;
      const float sc = i < s.Tq ? s.scale : 0.0f;
      float* dqr = dq_acc + (size_t(b) * s.Tq + min(i, s.Tq - 1)) * ldq + size_t(h) * D + dq0 + tig * 2;
#pragma unroll
      for (int j = 0; j < (DQX ? 4 : 8); ++j) atomic_add2(dqr + j * 8, dq[4 * j + 2 * r] * sc, dq[4 * j + 2 * r + 1] * sc, true);
    }
  }
  write_dkv_rows<TO, DW / 8>(dk, dv, dK, dV, key0, tig, b, kh, D, ldk, s, head_split);
}

// ---------------------------------------------------------------- decode (one query)
// Split-K over the visible keys: grid (splits, kv head, batch), 4 warps; each block handles all
// `G` query heads of its kv head (GQA: K/V rows read once), fp32 throughout. Each warp takes every
// 4th key of the block's range with an online softmax; partial (m, l, o) per split go to a
// workspace and a second kernel merges them.
constexpr int kDecMaxG = 8, kDecWarps = 4;
template <int DV>  // DV = ceil(D / 32): elements per lane
__global__ void __launch_bounds__(kDecWarps * 32) attn_decode_kernel(float* __restrict__ part_o, float* __restrict__ part_ml,
                                                                      const float* __restrict__ q, const float* __restrict__ k,
                                                                      const float* __restrict__ v, AttnShape s, int lo,
                                                                      int chunk, int G) {
  const int split = blockIdx.x, kh = blockIdx.y, b = blockIdx.z, nsplit = gridDim.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, D = s.D;
  const size_t ldk = size_t(s.Hkv) * D;
  const int j_begin = lo + split * chunk, j_end = min(s.Tk, j_begin + chunk);
  // register arrays indexed only by unrolled loop counters (runtime G guards each step)
  float qr[kDecMaxG][DV], acc[kDecMaxG][DV], m[kDecMaxG], l[kDecMaxG];
#pragma unroll
  for (int g = 0; g < kDecMaxG; ++g) {
    if (g >= G) break;
    const float* qh = q + (size_t(b) * s.Hq + kh * G + g) * D;
#pragma unroll
    for (int e = 0; e < DV; ++e) {
      const int d = lane + 32 * e;
      qr[g][e] = d < D ? qh[d] * s.scale : 0.0f;
      acc[g][e] = 0.0f;
    }
    m[g] = -INFINITY, l[g] = 0.0f;
  }
  for (int j = j_begin + warp; j < j_end; j += kDecWarps) {
    const float* kr = k + (size_t(b) * s.Tk + j) * ldk + size_t(kh) * D;
    const float* vr = v + (size_t(b) * s.Tk + j) * ldk + size_t(kh) * D;
    float kv[DV], vv[DV];
#pragma unroll
    for (int e = 0; e < DV; ++e) {
      const int d = lane + 32 * e;
      kv[e] = d < D ? kr[d] : 0.0f;
      vv[e] = d < D ? vr[d] : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kDecMaxG; ++g) {
      if (g >= G) break;
      float x = 0;
#pragma unroll
      for (int e = 0; e < DV; ++e) x += qr[g][e] * kv[e];
      for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
      const float mn = fmaxf(m[g], x), c = __expf(m[g] - mn), p = __expf(x - mn);
      l[g] = l[g] * c + p;
#pragma unroll
      for (int e = 0; e < DV; ++e) acc[g][e] = acc[g][e] * c + p * vv[e];
      m[g] = mn;
    }
  }
  // merge the 4 warps through shared memory
  __shared__ float sm_m[kDecWarps][kDecMaxG], sm_l[kDecWarps][kDecMaxG];
  __shared__ float sm_o[kDecWarps][kDecMaxG][DV * 32];
#pragma unroll
  for (int g = 0; g < kDecMaxG; ++g) {
    if (g >= G) break;
    if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
#pragma unroll
    for (int e = 0; e < DV; ++e) sm_o[warp][g][lane + 32 * e] = acc[g][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * DV * 32; idx += blockDim.x) {
    const int g = idx / (DV * 32), d = idx % (DV * 32);
    float M = -INFINITY;
    for (int w = 0; w < kDecWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0, O = 0;
    for (int w = 0; w < kDecWarps; ++w) {
      const float c = sm_m[w][g] == -INFINITY ? 0.0f : __expf(sm_m[w][g] - M);
      L += sm_l[w][g] * c, O += sm_o[w][g][d] * c;
    }
    const size_t row = (size_t(b) * s.Hq + kh * G + g) * nsplit + split;  // [B, Hq, splits]
    if (d < D) part_o[row * D + d] = O;
    if (d == 0) part_ml[2 * row] = M, part_ml[2 * row + 1] = L;
  }
}
// out[b, h] = merge of the splits; lse natural-log.
// Splits in parallel: the block finds the largest max and the total weight, keeps each split's
// scale exp(m_t - M) in shared memory (nsplit floats, dynamic), then one thread per d sums over splits.
__global__ void attn_decode_merge_kernel(float* out, float* lse, const float* part_o, const float* part_ml, int nsplit,
                                         AttnShape s) {
  extern __shared__ float split_scale[];  // [nsplit]
  __shared__ float red[32];
  const int bh = blockIdx.x, D = s.D;  // bh = b * Hq + h; out row [B, 1, Hq, D] has the same index
  const float* ml = part_ml + 2 * size_t(bh) * nsplit;
  float m = -INFINITY;
  for (int t = threadIdx.x; t < nsplit; t += blockDim.x) m = fmaxf(m, ml[2 * t]);
  const float M = block_max(m, red);
  float l = 0;
  for (int t = threadIdx.x; t < nsplit; t += blockDim.x) {
    const float mt = ml[2 * t], c = mt == -INFINITY ? 0.0f : __expf(mt - M);
    split_scale[t] = c, l += ml[2 * t + 1] * c;
  }
  const float L = block_sum(l, red);  // (its barriers also publish split_scale)
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float O = 0;
    for (int t = 0; t < nsplit; ++t) O += part_o[(size_t(bh) * nsplit + t) * D + d] * split_scale[t];
    out[size_t(bh) * D + d] = L > 0 ? O / L : 0.0f;
  }
  if (threadIdx.x == 0) lse[bh] = L > 0 ? M + logf(L) : -INFINITY;
}

void check_shape(const AttnShape& s) {
  if (s.D < 1 || s.D > 256) fail("attention (cuda)", "head dim " + std::to_string(s.D) + " not supported (1..256)");
  if (s.Hkv < 1 || s.Hq % s.Hkv != 0) fail("attention (cuda)", "query heads must be a multiple of kv heads");
  if (s.Tq > s.Tk) fail("attention (cuda)", "more queries than keys");
  // (the forward takes row maxima of the raw scores: valid for a positive scale only)
  if (!(s.scale > 0.0f) || !std::isfinite(s.scale)) fail("attention (cuda)", "scale must be positive and finite");
}

int num_sms() {
  static int n = [] {
    int dev = 0, v = 0;
    SR_CUDA(cudaGetDevice(&dev));
    SR_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    return v;
  }();
  return n;
}

template <int DP, int MT, int KN>
constexpr size_t fwd_smem() { return size_t(kFwdM * MT + 2 * 2 * KN) * (DP + 8) * sizeof(bf16); }
template <int DP>
constexpr size_t bwd_smem() {
  return size_t(2 * kBwdN + 2 * 2 * kBwdM) * (DP + 8) * sizeof(bf16) + size_t(kBwdN) * (kBwdM + 8) * sizeof(bf16) +
         2 * 2 * kBwdM * sizeof(float);
}

int g_block_order = -1;  // set_attention_block_order; -1: not set (SMOOTHREAD_ATTN_ORDER or kSectioned)
int block_order() {
  static const int env = env_int("SMOOTHREAD_ATTN_ORDER", kSectioned);
  const int order = g_block_order >= 0 ? g_block_order : env;
  return order == kTilesFastest || order == kHeaviestFirst ? order : kSectioned;
}
// The section of a grid of tiles x pairs blocks under block_order(); the kernels take the grid's
// own order (template kTilesFastest) when it is 1 and renumber their blocks (kSectioned) otherwise.
int g_block_section = 0;  // set_attention_block_section; 0: automatic
unsigned block_section(int tiles, int pairs) {
  const int order = block_order();
  if (order == kSectioned && g_block_section > 0) return unsigned(std::min(g_block_section, std::max(pairs, 1)));
  return attn_section(order, tiles, pairs, num_sms());
}
// Raises a kernel's dynamic shared-memory limit to `smem` bytes, once per kernel.
template <class Kern>
void raise_smem_limit(Kern* kern, size_t smem) {
  static std::set<const void*> raised;
  if (raised.insert(reinterpret_cast<const void*>(kern)).second)
    SR_CUDA(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}
// Launches a forward kernel over (ceil(Tq / BM) query tiles, Hq, B): its sectioned instantiation
// (renumbered blocks) or its grid-order one, as block_section() says.
template <class TO, class Kern>
void launch_fwd(Kern* sectioned, Kern* grid_order, int BM, int threads, size_t smem, const char* what, TO* out,
                float* lse, const bf16* q, const bf16* k, const bf16* v, const AttnShape& s) {
  dim3 grid((s.Tq + BM - 1) / BM, s.Hq, s.B);
  const unsigned section = block_section(grid.x, s.Hq * s.B);
  Kern* kern = section > 1 ? sectioned : grid_order;
  raise_smem_limit(kern, smem);
  kern<<<grid, threads, smem, stream()>>>(out, lse, q, k, v, s, section);
  SR_CUDA_LAUNCHED(what);
}
template <class TO, int DP, int MT, int KN>
void fwd_launch_tiles(TO* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttnShape& s) {
  launch_fwd(attn_fwd_kernel<TO, DP, MT, KN, kSectioned>, attn_fwd_kernel<TO, DP, MT, KN, kTilesFastest>, kFwdM * MT,
             kThreadsA, fwd_smem<DP, MT, KN>(), "attention_fwd", out, lse, q, k, v, s);
}
int g_fwd_tiles = -1;  // set_attention_fwd_tiles; -1: not set (SMOOTHREAD_ATTN_FWD_TILES or automatic)
// Whether this build and GPU run the warpgroup-MMA kernels (sm_90a code, a compute capability 9.0 device)
bool wgmma_available() {
#if defined(SMOOTHREAD_SM90A)
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    SR_CUDA(cudaGetDevice(&dev));
    SR_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    SR_CUDA(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return major == 9 && minor == 0;
  }();
  return ok;
#else
  return false;
#endif
}
// Whether the warpgroup-MMA kernels run for this shape: head dim exactly 64 or 128 (whole rows of the
// 128-byte-swizzle layout), an sm_90a build on a compute capability 9.0 GPU
template <int DP>
bool wgmma_applies(const AttnShape& s) {
  return (DP == 64 || DP == 128) && s.D == DP && wgmma_available();
}
// The forward's tiles: 1 = 64 queries x 64 keys (16 query rows a warp), 2 = 128 x 64, 3 = 128 x 32
// (32 rows a warp), 4 = 128 x 128 on warpgroup MMAs (head dims 64 and 128, sm_90a). Two row tiles a warp
// only for head dims 64 and 128 (256 has no registers for it) and at least 128 queries (a shorter
// block would waste half of it). Forced 4 where the warpgroup kernel does not run: the automatic choice.
template <int DP>
int fwd_tiles(const AttnShape& s) {
  static const int env = env_int("SMOOTHREAD_ATTN_FWD_TILES", 0);
  const int forced = g_fwd_tiles >= 0 ? g_fwd_tiles : env;
  if (DP == 256 || DP < 64) return 1;
  const bool wg = wgmma_applies<DP>(s);
  if (forced >= 1 && forced <= 3) return forced;
  if (forced == 4 && wg) return 4;
  return s.Tq >= 2 * kFwdM ? (wg ? 4 : kAutoFwdTiles) : 1;
}
template <class TO, int DP>
void fwd_launch(TO* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttnShape& s) {
  const int tiles = fwd_tiles<DP>(s);
  if constexpr (DP == 64 || DP == 128) {
    if (tiles == 4)
      return launch_fwd(attn_fwd_wg_kernel<TO, DP, kSectioned>, attn_fwd_wg_kernel<TO, DP, kTilesFastest>, kWgM,
                        kWgThreads, wg_fwd_smem<DP>(), "attention_fwd_wgmma", out, lse, q, k, v, s);
    switch (tiles) {
      case 2: return fwd_launch_tiles<TO, DP, 2, 64>(out, lse, q, k, v, s);
      case 3: return fwd_launch_tiles<TO, DP, 2, 32>(out, lse, q, k, v, s);
      default: break;
    }
  }
  fwd_launch_tiles<TO, DP, 1, kFwdN>(out, lse, q, k, v, s);
}
template <int DP>
constexpr size_t bwd2_smem() {
  return size_t(2 * kB2N + 2 * 2 * kB2M) * (DP + 8) * sizeof(bf16) + size_t(2 * kB2M) * (kB2N + 8) * sizeof(bf16) +
         2 * 2 * kB2M * sizeof(float);
}
int g_bwd_kernel = -1;  // set_attention_bwd_kernel; -1: not set (SMOOTHREAD_ATTN_BWD or automatic)
// The backward's kernel: 1 = attn_bwd_kernel (64 keys, 4 warps), 2 = attn_bwd2_kernel (128 keys,
// 8 warps, 2-D warp tiling; head dims 64 and 128 only), 3 = attn_bwd_wg_kernel (128 keys on
// warpgroup MMAs; head dims 64 and 128, sm_90a). Automatic: 3 where it runs, else 2 (head dims 64,
// 128), else 1. Forced 3 where the warpgroup kernel does not run: the automatic choice.
template <int DP>
int bwd_kernel(const AttnShape& s) {
  static const int env = env_int("SMOOTHREAD_ATTN_BWD", 0);
  const int forced = g_bwd_kernel >= 0 ? g_bwd_kernel : env;
  if (DP != 64 && DP != 128) return 1;
  if (forced == 1 || forced == 2) return forced;
  return wgmma_applies<DP>(s) ? 3 : kAutoBwd;
}
int g_named_barriers = -1;  // set_attention_named_barriers; -1: not set (SMOOTHREAD_ATTN_NAMED_BAR or automatic)
// Whether the 2-D backward syncs P/dS with named pair/quad barriers (attn_bwd2_kernel's NAMED).
// Automatic: on. The named-barrier kernel always runs its sectioned instantiation (renumbered
// blocks; a section of one (head, batch) pair is grid order), because the grid-order
// instantiation with bf16 outputs spills (80 bytes a thread) and measured 0.96x at 64k (docs/PERF.md).
bool named_barriers() {
  static const int env = env_int("SMOOTHREAD_ATTN_NAMED_BAR", -1);
  const int forced = g_named_barriers >= 0 ? g_named_barriers : env;
  return forced == 0 || forced == 1 ? forced == 1 : true;
}
template <class TO, int DP>
void bwd_launch(float* dq_acc, TO* dk, TO* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                const float* lse, const float* delta, const AttnShape& s) {
  const int which = bwd_kernel<DP>(s);
  const int keys = which >= 2 ? kB2N : kBwdN, threads = which >= 2 ? kB2Threads : kThreadsA;
  size_t smem = bwd_smem<DP>();
  // Split the query heads of a kv group over blocks when there are too few blocks to fill the GPU
  // twice over (8 warps a block or two blocks of 4 per SM) (fp32 outputs only: the partial dK/dV
  // are summed with atomics into zeroed outputs).
  const int key_tiles = (s.Tk + keys - 1) / keys, G = s.Hq / s.Hkv;
  const int blocks_per_sm = which >= 2 ? 1 : 2;
  const bool head_split = sizeof(TO) == 4 && G > 1 && key_tiles * s.Hkv * s.B < 2 * blocks_per_sm * num_sms();
  dim3 grid(key_tiles, s.Hkv * (head_split ? G : 1), s.B);
  const unsigned section = block_section(grid.x, grid.y * grid.z);
  const bool renumber = section > 1;
  void (*kern)(float*, TO*, TO*, const bf16*, const bf16*, const bf16*, const bf16*, const float*, const float*,
               AttnShape, bool, unsigned) =
      renumber ? attn_bwd_kernel<TO, DP, kSectioned> : attn_bwd_kernel<TO, DP, kTilesFastest>;
  static_assert(kWbN == kB2N && kWgThreads == kB2Threads, "the warpgroup backward launches as the 2-D one");
  if constexpr (DP == 64 || DP == 128) {
    if (which == 3)
      kern = renumber ? attn_bwd_wg_kernel<TO, DP, kSectioned> : attn_bwd_wg_kernel<TO, DP, kTilesFastest>,
      smem = wg_bwd_smem<DP>();
    if (which == 2)
      kern = named_barriers() ? attn_bwd2_kernel<TO, DP, kSectioned, true>
                              : (renumber ? attn_bwd2_kernel<TO, DP, kSectioned> : attn_bwd2_kernel<TO, DP, kTilesFastest>),
      smem = bwd2_smem<DP>();
  }
  raise_smem_limit(kern, smem);
  if (head_split) {
    SR_CUDA(cudaMemsetAsync(dk, 0, size_t(s.B) * s.Tk * s.Hkv * s.D * sizeof(TO), stream()));
    SR_CUDA(cudaMemsetAsync(dv, 0, size_t(s.B) * s.Tk * s.Hkv * s.D * sizeof(TO), stream()));
  }
  kern<<<grid, threads, smem, stream()>>>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s, head_split, section);
  SR_CUDA_LAUNCHED("attention_bwd");
}

// Dispatch on the padded head dim.
template <class TO>
void attention_fwd_any(TO* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const AttnShape& s) {
  check_shape(s);
  if (s.B * s.Tq == 0) return;
  if (s.D <= 16) fwd_launch<TO, 16>(out, lse, q, k, v, s);
  else if (s.D <= 32) fwd_launch<TO, 32>(out, lse, q, k, v, s);
  else if (s.D <= 64) fwd_launch<TO, 64>(out, lse, q, k, v, s);
  else if (s.D <= 128) fwd_launch<TO, 128>(out, lse, q, k, v, s);
  else fwd_launch<TO, 256>(out, lse, q, k, v, s);
}
// delta must already hold rowsum(dO * O).
template <class TO>
void attention_bwd_any(float* dq_acc, TO* dk, TO* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                       const float* lse, const float* delta, const AttnShape& s) {
  check_shape(s);
  if (s.B * s.Tq == 0) return;
  if (s.D <= 16) bwd_launch<TO, 16>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s);
  else if (s.D <= 32) bwd_launch<TO, 32>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s);
  else if (s.D <= 64) bwd_launch<TO, 64>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s);
  else if (s.D <= 128) bwd_launch<TO, 128>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s);
  else bwd_launch<TO, 256>(dq_acc, dk, dv, dout, q, k, v, lse, delta, s);
}
template <class T>
void compute_delta(float* delta, const T* dout, const T* out, const AttnShape& s, bf16* dout16 = nullptr) {
  const int rows = s.B * s.Tq * s.Hq;
  attn_delta_kernel<T><<<(rows + 7) / 8, 256, 0, stream()>>>(delta, dout16, dout, out, s);
  SR_CUDA_LAUNCHED("attention_delta");
}
}  // namespace

void set_attention_fwd_tiles(int tiles) { g_fwd_tiles = tiles; }
bool attention_wgmma_available() { return wgmma_available(); }
void set_attention_bwd_kernel(int which) { g_bwd_kernel = which; }
void set_attention_block_order(int order) { g_block_order = order; }
void set_attention_block_section(int pairs) { g_block_section = std::max(0, pairs); }
void set_attention_named_barriers(int on) { g_named_barriers = on; }

void attention_fwd_bf16(void* out, float* lse, const void* q, const void* k, const void* v, const AttnShape& s) {
  attention_fwd_any<bf16>(static_cast<bf16*>(out), lse, static_cast<const bf16*>(q), static_cast<const bf16*>(k),
                          static_cast<const bf16*>(v), s);
}
void attention_bwd_bf16(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, float* delta_ws, float* dq_ws, const AttnShape& s) {
  const size_t nq = size_t(s.B) * s.Tq * s.Hq * s.D;
  SR_CUDA(cudaMemsetAsync(dq_ws, 0, nq * sizeof(float), stream()));
  if (s.B * s.Tq == 0) return;
  compute_delta(delta_ws, static_cast<const bf16*>(dout), static_cast<const bf16*>(out), s);
  attention_bwd_any<bf16>(dq_ws, static_cast<bf16*>(dk), static_cast<bf16*>(dv), static_cast<const bf16*>(dout),
                          static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), lse,
                          delta_ws, s);
  to_bf16(dq, dq_ws, nq);
}

namespace {
template <int DV>
void decode_launch(float* po, float* pml, const float* q, const float* k, const float* v, const AttnShape& s, int lo,
                   int chunk, int nsplit) {
  dim3 grid(nsplit, s.Hkv, s.B);
  attn_decode_kernel<DV><<<grid, kDecWarps * 32, 0, stream()>>>(po, pml, q, k, v, s, lo, chunk, s.Hq / s.Hkv);
}
}  // namespace

// One query per sequence (token-by-token decode, at most 8 query heads per kv head): split-K fp32
// kernel, no bf16 rounding.
void attention_decode(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  const int lo = s.window > 0 ? std::max(0, s.Tk - s.window) : 0, visible = s.Tk - lo;
  // enough blocks to fill the GPU four times over, at least 16 keys per block (4 per warp): a
  // warp's keys are a chain of dependent online-softmax steps, so short chains keep a step short
  // (64 keys per block: ~30 us per layer at 1k keys and 2 kv heads on an H200, docs/PERF.md)
  const int groups = s.B * s.Hkv;
  int nsplit = std::max(1, std::min((visible + 15) / 16, (4 * num_sms() + groups - 1) / groups));
  const int chunk = (visible + nsplit - 1) / nsplit;
  nsplit = (visible + chunk - 1) / chunk;
  Buffer<float> po(&device_mem(), size_t(s.B) * s.Hq * nsplit * s.D), pml(&device_mem(), size_t(s.B) * s.Hq * nsplit * 2);
  if (s.D <= 32) decode_launch<1>(po.data(), pml.data(), q, k, v, s, lo, chunk, nsplit);
  else if (s.D <= 64) decode_launch<2>(po.data(), pml.data(), q, k, v, s, lo, chunk, nsplit);
  else if (s.D <= 128) decode_launch<4>(po.data(), pml.data(), q, k, v, s, lo, chunk, nsplit);
  else decode_launch<8>(po.data(), pml.data(), q, k, v, s, lo, chunk, nsplit);
  SR_CUDA_LAUNCHED("attention_decode");
  attn_decode_merge_kernel<<<s.B * s.Hq, 128, nsplit * sizeof(float), stream()>>>(out, lse, po.data(), pml.data(),
                                                                                   nsplit, s);
  SR_CUDA_LAUNCHED("attention_decode_merge");
}

// fp32 storage (the model's ops): operands are rounded to bf16 once, outputs and dQ stay fp32.
namespace ops {
void attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  if (s.Tq == 1 && s.B * s.Tk > 0 && s.Hq / s.Hkv <= kDecMaxG) {
    check_shape(s);
    return attention_decode(out, lse, q, k, v, s);
  }
  const size_t nq = size_t(s.B) * s.Tq * s.Hq * s.D, nk = size_t(s.B) * s.Tk * s.Hkv * s.D;
  // (q and k are usually their mirrors: RoPE writes them in training)
  const Bf16Operand qb(q, nq), kb(k, nk), vb(v, nk);
  attention_fwd_any<float>(out, lse, qb.get(), kb.get(), vb.get(), s);
}
void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const AttnShape& s) {
  const size_t nq = size_t(s.B) * s.Tq * s.Hq * s.D, nk = size_t(s.B) * s.Tk * s.Hkv * s.D;
  SR_ASSERT(dk && dv, "attention_bwd (cuda): dk and dv are required");
  Buffer<float> delta(&device_mem(), size_t(s.B) * s.Hq * s.Tq);
  Buffer<float> dq_tmp(&device_mem(), dq ? 0 : nq);
  float* dq_acc = dq ? dq : dq_tmp.data();
  SR_CUDA(cudaMemsetAsync(dq_acc, 0, nq * sizeof(float), stream()));
  if (s.B * s.Tq == 0) return;
  Buffer<bf16> db(&device_mem(), nq);
  compute_delta(delta.data(), dout, out, s, db.data());  // dO rounded in the same pass
  const Bf16Operand qb(q, nq), kb(k, nk), vb(v, nk);
  attention_bwd_any<float>(dq_acc, dk, dv, db.data(), qb.get(), kb.get(), vb.get(), lse, delta.data(), s);
}
}  // namespace ops

}  // namespace sr::cuda
