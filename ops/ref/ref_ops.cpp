// fp32 instantiation of the reference ops as a backend table.
#include "ops/ref/ref_ops.h"

namespace sr {

namespace {
void rms_f(float* o, float* r, const float* x, const float* w, int N, int C, float eps) {
  ref::rmsnorm_fwd<float>(o, r, x, w, N, C, eps);
}
}  // namespace

const OpsTable& ops_ref() {
  static const OpsTable t = {
      "ref",
      ref::embedding_fwd<float>,
      ref::embedding_bwd<float>,
      rms_f,
      ref::rmsnorm_bwd<float>,
      ref::linear_fwd<float>,
      ref::linear_bwd<float>,
      ref::rope_fwd<float>,
      ref::rope_bwd<float>,
      ref::attention_fwd<float>,
      ref::attention_bwd<float>,
      ref::swiglu_fwd<float>,
      ref::swiglu_bwd<float>,
      ref::xent_fwd<float>,
      ref::xent_bwd<float>,
  };
  return t;
}

}  // namespace sr
