// Hopper warpgroup MMA (wgmma.mma_async, sm_90a): a warpgroup of 4 warps computes a
// [64 x 128] (or [64 x 64]) fp32 tile D (+)= A[64 x 16] B[16 x N] per instruction, bf16 operands.
// Accumulator layout (per thread, d[64]): warp w of the group holds rows 16w + lane/4 (+8); for
// n-chunk j (8 columns), d[4j + e] is row (e / 2) * 8 + lane / 4, column 8j + 2 (lane % 4) + e % 2:
// the same as mma.sync m16n8's C fragments, one per n-chunk. A in registers (4 per thread) is
// mma.sync m16n8k16's A fragment of the warp's 16 rows.
// Shared-memory operands are described by a 64-bit descriptor. Without swizzling the layout is made
// of 8 x 8 "core matrices" (8 rows of 16 bytes, 128 contiguous bytes); lbo = byte distance between
// core matrices adjacent along K, sbo = along M or N (K-major and M/N-major alike: checked on an
// H200). The attention forward uses the 128-byte swizzle (wgmma_desc_sw128), whose loads read
// whole 128-byte lines.
#pragma once
#include <cstdint>

namespace sr::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SR_WGMMA 1
#endif

__device__ __forceinline__ uint64_t wgmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = uint32_t(__cvta_generic_to_shared(smem));
  return uint64_t((a >> 4) & 0x3FFF) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) | (uint64_t((sbo >> 4) & 0x3FFF) << 32);
}
// 128-byte-swizzle layout (the tile 1024-byte aligned: rows of 128 bytes, 16-byte chunk c of row r
// stored at chunk c ^ (r % 8)): sbo = 1024 (8 rows); lbo = for M/N-major operands the distance
// between the 64-element halves along M/N (unused for K-major). A K step within the 128-byte rows
// moves the start address (32 bytes per 16 elements); the hardware applies the swizzle to the sum.
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* smem, uint32_t lbo) {
  return wgmma_desc(smem, lbo, 1024) | (uint64_t(1) << 62);
}
__device__ __forceinline__ void wgmma_fence() {
#ifdef SR_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef SR_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef SR_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Makes this thread's generic-proxy shared-memory writes (st.shared, cp.async) visible to wgmma's
// operand reads (async proxy); a barrier must follow before other threads' wgmmas read them.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef SR_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// The 64 accumulator registers of an m64n128 tile: the operand list "{%0, ..., %63}" and its
// outputs (one per d[i], read and written)
#define SR_WGMMA_D64_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define SR_WGMMA_D64_OUTS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// The same for an m64n64 tile (32 accumulators a thread: d[4j + e], j < 8)
#define SR_WGMMA_D32_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define SR_WGMMA_D32_OUTS \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

#ifdef SR_WGMMA
#define SR_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
#else
#define SR_WGMMA_ASM(...)
#endif
// D = (accumulate ? D : 0) + A B for an accumulator of NACC floats a thread (64: m64n128, 32: m64n64),
// the form chosen by the accumulator array's size:
//   wgmma_ss: A and B from shared memory (trans: 0 = K-major, 1 = M/N-major);
//   wgmma_rs: A from registers (a[4]: K-major by definition), B from shared memory.
// Nk = NACC + k: the numbers of the asm operands after the accumulators.
#define SR_WGMMA_FORMS(NACC, SHAPE, REGS, OUTS, N1, N2, N3, N4, N5, N6)                                          \
  template <int TRANS_A, int TRANS_B>                                                                           \
  __device__ __forceinline__ void wgmma_ss(float (&d)[NACC], uint64_t da, uint64_t db, int accumulate) {       \
    SR_WGMMA_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, %" #N2 ", 0;\n"                                               \
                 "wgmma.mma_async.sync.aligned." SHAPE ".f32.bf16.bf16 " REGS ", %" #NACC ", %" #N1              \
                 ", p, 1, 1, %" #N3 ", %" #N4 ";\n}\n"                                                          \
                 : OUTS                                                                                         \
                 : "l"(da), "l"(db), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));                            \
  }                                                                                                             \
  template <int TRANS_B>                                                                                        \
  __device__ __forceinline__ void wgmma_rs(float (&d)[NACC], const uint32_t (&a)[4], uint64_t db, int accumulate) { \
    SR_WGMMA_ASM("{\n.reg .pred p;\nsetp.ne.b32 p, %" #N5 ", 0;\n"                                               \
                 "wgmma.mma_async.sync.aligned." SHAPE ".f32.bf16.bf16 " REGS ", {%" #NACC ", %" #N1 ", %" #N2   \
                 ", %" #N3 "}, %" #N4 ", p, 1, 1, %" #N6 ";\n}\n"                                               \
                 : OUTS                                                                                         \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(TRANS_B));        \
  }
SR_WGMMA_FORMS(64, "m64n128k16", SR_WGMMA_D64_REGS, SR_WGMMA_D64_OUTS, 65, 66, 67, 68, 69, 70)
SR_WGMMA_FORMS(32, "m64n64k16", SR_WGMMA_D32_REGS, SR_WGMMA_D32_OUTS, 33, 34, 35, 36, 37, 38)

}  // namespace sr::cuda
