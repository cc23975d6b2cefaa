// fp32 instantiation of the reference ops as a backend table.
#include "ops/ref/gated_deltanet.h"
#include "ops/ref/generalized_delta_rule.h"
#include "ops/ref/ref_ops.h"
#include "ops/ref/rwkv7.h"

namespace sr {

namespace {
void rms_f(float* o, float* r, const float* x, const float* w, int N, int C, float eps) {
  ref::rmsnorm_fwd<float>(o, r, x, w, N, C, eps);
}
void ln_f(float* o, float* m, float* r, const float* x, const float* w, const float* b, int N, int G, int D, float eps) {
  ref::layernorm_fwd<float>(o, m, r, x, w, b, N, G, D, eps);
}
}  // namespace

const OpsTable& ops_ref() {
  static const OpsTable t = {
      .name = "ref",
      .mem = &host_mem(),
      .embedding_fwd = ref::embedding_fwd<float>,
      .embedding_bwd = ref::embedding_bwd<float>,
      .rmsnorm_fwd = rms_f,
      .rmsnorm_bwd = ref::rmsnorm_bwd<float>,
      .linear_fwd = ref::linear_fwd<float>,
      .linear_bwd = ref::linear_bwd<float>,
      .rope_fwd = ref::rope_fwd<float>,
      .rope_bwd = ref::rope_bwd<float>,
      .attention_fwd = ref::attention_fwd<float>,
      .attention_bwd = ref::attention_bwd<float>,
      .swiglu_fwd = ref::swiglu_fwd<float>,
      .swiglu_bwd = ref::swiglu_bwd<float>,
      .xent_fwd = ref::xent_fwd<float>,
      .xent_bwd = ref::xent_bwd<float>,
      .add = ref::add<float>,
      .scale = ref::scale<float>,
      .sum_squares = ref::sum_squares<float>,
      .adamw = ref::adamw<float>,
      .causal_conv_fwd = ref::causal_conv_fwd<float>,
      .causal_conv_bwd = ref::causal_conv_bwd<float>,
      .l2norm_fwd = ref::l2norm_fwd<float>,
      .l2norm_bwd = ref::l2norm_bwd<float>,
      .gdn_gates_fwd = ref::gdn_gates_fwd<float>,
      .gdn_gates_bwd = ref::gdn_gates_bwd<float>,
      .gated_rmsnorm_fwd = ref::gated_rmsnorm_fwd<float>,
      .gated_rmsnorm_bwd = ref::gated_rmsnorm_bwd<float>,
      .gdr_fwd = ref::gdr_fwd<float>,
      .gdr_bwd = ref::gdr_bwd<float>,
      .delta_rule_fwd = ref::delta_rule_fwd<float>,
      .delta_rule_bwd = ref::delta_rule_bwd<float>,
      .layernorm_fwd = ln_f,
      .layernorm_bwd = ref::layernorm_bwd<float>,
      .token_shift_fwd = ref::token_shift_fwd<float>,
      .token_shift_bwd = ref::token_shift_bwd<float>,
      .act_fwd = ref::act_fwd<float>,
      .act_bwd = ref::act_bwd<float>,
      .rwkv7_prep_fwd = ref::rwkv7_prep_fwd<float>,
      .rwkv7_prep_bwd = ref::rwkv7_prep_bwd<float>,
      .rwkv7_out_fwd = ref::rwkv7_out_fwd<float>,
      .rwkv7_out_bwd = ref::rwkv7_out_bwd<float>,
      .strided_copy = ref::strided_copy<float>,
      .mul = ref::mul<float>,
      .ring_store_kv = ref::ring_store_kv<float>,
      .add_rmsnorm_fwd = ref::add_rmsnorm_fwd<float>,
      .linear_fwd_bf16w = ref::linear_fwd_bf16w,
  };
  return t;
}

}  // namespace sr
