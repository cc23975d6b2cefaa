// Shared by the CUDA backend's .cu files: error checks that throw sr::Error, the stream, launch sizes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "core/buffer.h"
#include "core/error.h"

namespace sr::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("cuda", std::string(what) + ": " + cudaGetErrorString(e));
}
#define SR_CUDA(call) ::sr::cuda::check((call), #call)
// After a launch: configuration errors now, execution errors at the next synchronizing call.
#define SR_CUDA_LAUNCHED(name) ::sr::cuda::check(cudaGetLastError(), name)

// All work goes to one stream, created once with default flags: a blocking stream, so it stays
// ordered with the legacy default stream that host copies (cudaMemcpy) use, as the legacy stream
// itself was; unlike the legacy stream it can be captured into a graph (graphs.cu).
cudaStream_t stream();  // memory.cu: one instance for every file of the backend
inline unsigned blocks_for(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535u * 16 ? (b == 0 ? 1 : b) : 65535u * 16);
}

// A whole number from the environment (the A/B switches: SMOOTHREAD_GEMV_SPLIT, SMOOTHREAD_ATTN_NAMED_BAR,
// SMOOTHREAD_ATTN_FWD_TILES, SMOOTHREAD_ATTN_BWD, SMOOTHREAD_FUSED_SWIGLU, SMOOTHREAD_VEC_NORM), or fallback when it is unset or not a number.
inline int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return *end ? fallback : int(v);
}

// Block-wide sum or maximum (blockDim a multiple of 32, <= 1024; red: 32 floats of shared memory);
// every thread gets the result: warp trees, then the warps' results in warp order.
template <bool kMax>
__device__ inline float block_reduce_into(float v, float* red) {
  auto op = [](float a, float b) { return kMax ? fmaxf(a, b) : a + b; };
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, nw = blockDim.x / 32;
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[warp] = v;
  __syncthreads();
  float r = kMax ? -INFINITY : 0.0f;
  for (int i = 0; i < nw; ++i) r = op(r, red[i]);
  return r;
}
__device__ inline float block_sum(float v, float* red) { return block_reduce_into<false>(v, red); }
__device__ inline float block_max(float v, float* red) { return block_reduce_into<true>(v, red); }

// Row-major batched C[m,n] = op(A) op(B) + beta C, exact fp32 (dense_ops.cu); s* = batch strides.
void gemm_rm_batched(bool ta, bool tb, int m, int n, int k, const float* A, long long sA, const float* B, long long sB,
                     float beta, float* C, long long sC, int batch);

void* device_alloc(size_t bytes);  // caching allocator (memory.cu)
void device_free(void* p);
const MemOps& device_mem();

}  // namespace sr::cuda
