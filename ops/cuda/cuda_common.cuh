// Shared by the CUDA backend's .cu files: error checks that throw sr::Error, the stream, launch sizes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

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

// All work goes to the legacy default stream: ops are ordered, and host copies synchronize.
inline cudaStream_t stream() { return 0; }
inline unsigned blocks_for(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535u * 16 ? (b == 0 ? 1 : b) : 65535u * 16);
}

void* device_alloc(size_t bytes);  // caching allocator (memory.cu)
void device_free(void* p);
const MemOps& device_mem();

}  // namespace sr::cuda
