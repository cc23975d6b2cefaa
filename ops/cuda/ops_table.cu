// The CUDA ops table: device memory from the caching allocator, kernels from dense_ops.cu and
// attention.cu, GEMMs through cuBLAS.
#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"

namespace sr {

bool cuda_built() { return true; }

const OpsTable& ops_cuda() {
  if (!cuda::available()) fail("--device cuda", "no CUDA GPU is visible (cudaGetDeviceCount found none)");
  namespace o = cuda::ops;
  static const OpsTable t = {
      .name = "cuda",
      .mem = &cuda::device_mem(),
      .embedding_fwd = o::embedding_fwd,
      .embedding_bwd = o::embedding_bwd,
      .rmsnorm_fwd = o::rmsnorm_fwd,
      .rmsnorm_bwd = o::rmsnorm_bwd,
      .linear_fwd = o::linear_fwd,
      .linear_bwd = o::linear_bwd,
      .rope_fwd = o::rope_fwd,
      .rope_bwd = o::rope_bwd,
      .attention_fwd = o::attention_fwd,
      .attention_bwd = o::attention_bwd,
      .swiglu_fwd = o::swiglu_fwd,
      .swiglu_bwd = o::swiglu_bwd,
      .xent_fwd = o::xent_fwd,
      .xent_bwd = o::xent_bwd,
      .add = o::add,
      .scale = o::scale,
      .sum_squares = o::sum_squares,
      .adamw = o::adamw,
  };
  return t;
}

}  // namespace sr
