// The CUDA ops table: device memory from the caching allocator, kernels from dense_ops.cu and
// attention.cu, GEMMs through cuBLAS.
#include <algorithm>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dense_ops.cuh"

namespace sr {

bool cuda_built() { return true; }

namespace {
// SMOOTHREAD_FUSED_SWIGLU=0 leaves the fused decode gate/up/SwiGLU op out of the table (the model
// then runs the GEMV and swiglu_fwd): for A/B timing
bool fused_swiglu() { return cuda::env_int("SMOOTHREAD_FUSED_SWIGLU", 1) != 0; }
}  // namespace

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
      .causal_conv_fwd = o::causal_conv_fwd,
      .causal_conv_bwd = o::causal_conv_bwd,
      .l2norm_fwd = o::l2norm_fwd,
      .l2norm_bwd = o::l2norm_bwd,
      .gdn_gates_fwd = o::gdn_gates_fwd,
      .gdn_gates_bwd = o::gdn_gates_bwd,
      .gated_rmsnorm_fwd = o::gated_rmsnorm_fwd,
      .gated_rmsnorm_bwd = o::gated_rmsnorm_bwd,
      .gdr_fwd = o::gdr_fwd,
      .gdr_bwd = o::gdr_bwd,
      .delta_rule_fwd = o::delta_rule_fwd,
      .delta_rule_bwd = o::delta_rule_bwd,
      .layernorm_fwd = o::layernorm_fwd,
      .layernorm_bwd = o::layernorm_bwd,
      .token_shift_fwd = o::token_shift_fwd,
      .token_shift_bwd = o::token_shift_bwd,
      .act_fwd = o::act_fwd,
      .act_bwd = o::act_bwd,
      .rwkv7_prep_fwd = o::rwkv7_prep_fwd,
      .rwkv7_prep_bwd = o::rwkv7_prep_bwd,
      .rwkv7_out_fwd = o::rwkv7_out_fwd,
      .rwkv7_out_bwd = o::rwkv7_out_bwd,
      .strided_copy = o::strided_copy,
      .mul = o::mul,
      .ring_store_kv = o::ring_store_kv,
      .add_rmsnorm_fwd = o::add_rmsnorm_fwd,
      .linear_fwd_bf16w = o::linear_fwd_bf16w,
      .linear_swiglu_fwd = fused_swiglu() ? o::linear_swiglu_fwd : nullptr,
      .linear_swiglu_fwd_bf16w = fused_swiglu() ? o::linear_swiglu_fwd_bf16w : nullptr,
      .linear_fwd_add = o::linear_fwd_add,
      .mirror_weights = cuda::mirror_weights,
      .weight_mirror_of = cuda::mirror_of,
      .mirror_activation = cuda::mirror_activation,
      .run_captured = cuda::run_captured,
  };
  return t;
}

// ---- per-op profile: the same table with every call timed by CUDA events (synchronizing) ----
namespace cuda {
namespace {
struct Profile {
  std::mutex mu;
  std::map<std::string, std::pair<double, int64_t>> ms_calls;  // op -> (total ms, calls)
  cudaEvent_t a = nullptr, b = nullptr;
};
Profile& profile() {
  static Profile* p = [] {
    auto* q = new Profile();
    SR_CUDA(cudaEventCreate(&q->a));
    SR_CUDA(cudaEventCreate(&q->b));
    return q;
  }();
  return *p;
}
struct Span {
  const char* name;
  explicit Span(const char* n) : name(n) { SR_CUDA(cudaEventRecord(profile().a, stream())); }
  ~Span() {
    Profile& p = profile();
    cudaEventRecord(p.b, stream());
    cudaEventSynchronize(p.b);
    float ms = 0;
    cudaEventElapsedTime(&ms, p.a, p.b);
    std::lock_guard<std::mutex> lock(p.mu);
    auto& e = p.ms_calls[name];
    e.first += ms, e.second += 1;
  }
};
// timed_<op>(args...): the op inside a Span; a template, so the table's function-pointer type
// picks the instantiation.
#define SR_TIMED(op)                 \
  template <class... A>              \
  auto timed_##op(A... a) {          \
    Span s(#op);                     \
    return ::sr::cuda::ops::op(a...); \
  }
SR_TIMED(embedding_fwd) SR_TIMED(embedding_bwd) SR_TIMED(rmsnorm_fwd) SR_TIMED(rmsnorm_bwd) SR_TIMED(linear_fwd)
SR_TIMED(linear_bwd) SR_TIMED(rope_fwd) SR_TIMED(rope_bwd) SR_TIMED(attention_fwd) SR_TIMED(attention_bwd)
SR_TIMED(swiglu_fwd) SR_TIMED(swiglu_bwd) SR_TIMED(xent_fwd) SR_TIMED(xent_bwd) SR_TIMED(add) SR_TIMED(scale)
SR_TIMED(sum_squares) SR_TIMED(adamw) SR_TIMED(causal_conv_fwd) SR_TIMED(causal_conv_bwd) SR_TIMED(l2norm_fwd) SR_TIMED(l2norm_bwd) SR_TIMED(gdn_gates_fwd) SR_TIMED(gdn_gates_bwd) SR_TIMED(gated_rmsnorm_fwd) SR_TIMED(gated_rmsnorm_bwd) SR_TIMED(delta_rule_fwd) SR_TIMED(delta_rule_bwd)
SR_TIMED(gdr_fwd) SR_TIMED(gdr_bwd) SR_TIMED(layernorm_fwd) SR_TIMED(layernorm_bwd) SR_TIMED(token_shift_fwd) SR_TIMED(token_shift_bwd) SR_TIMED(act_fwd) SR_TIMED(act_bwd) SR_TIMED(rwkv7_prep_fwd) SR_TIMED(rwkv7_prep_bwd) SR_TIMED(rwkv7_out_fwd) SR_TIMED(rwkv7_out_bwd) SR_TIMED(strided_copy) SR_TIMED(mul) SR_TIMED(ring_store_kv) SR_TIMED(add_rmsnorm_fwd) SR_TIMED(linear_fwd_bf16w)
SR_TIMED(linear_swiglu_fwd) SR_TIMED(linear_swiglu_fwd_bf16w) SR_TIMED(linear_fwd_add)
#undef SR_TIMED
bool timed_mirror_activation(const float* x, size_t n, MirrorFill how) {
  Span s("mirror_activation");
  return mirror_activation(x, n, how);
}
}  // namespace

std::string profile_report() {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> v(p.ms_calls.begin(), p.ms_calls.end());
  std::sort(v.begin(), v.end(), [](auto& x, auto& y) { return x.second.first > y.second.first; });
  std::ostringstream o;
  o << "{";
  for (size_t i = 0; i < v.size(); ++i)
    o << (i ? "," : "") << "\"" << v[i].first << "\":{\"ms\":" << v[i].second.first << ",\"calls\":" << v[i].second.second << "}";
  o << "}";
  return o.str();
}
void profile_reset() {
  Profile& p = profile();
  std::lock_guard<std::mutex> lock(p.mu);
  p.ms_calls.clear();
}
}  // namespace cuda

const OpsTable& ops_cuda_profiled() {
  const OpsTable& base = ops_cuda();
  (void)base;
  using namespace cuda;
  static const OpsTable t = {
      .name = "cuda-profiled",
      .mem = &cuda::device_mem(),
      .embedding_fwd = timed_embedding_fwd,
      .embedding_bwd = timed_embedding_bwd,
      .rmsnorm_fwd = timed_rmsnorm_fwd,
      .rmsnorm_bwd = timed_rmsnorm_bwd,
      .linear_fwd = timed_linear_fwd,
      .linear_bwd = timed_linear_bwd,
      .rope_fwd = timed_rope_fwd,
      .rope_bwd = timed_rope_bwd,
      .attention_fwd = timed_attention_fwd,
      .attention_bwd = timed_attention_bwd,
      .swiglu_fwd = timed_swiglu_fwd,
      .swiglu_bwd = timed_swiglu_bwd,
      .xent_fwd = timed_xent_fwd,
      .xent_bwd = timed_xent_bwd,
      .add = timed_add,
      .scale = timed_scale,
      .sum_squares = timed_sum_squares,
      .adamw = timed_adamw,
      .causal_conv_fwd = timed_causal_conv_fwd,
      .causal_conv_bwd = timed_causal_conv_bwd,
      .l2norm_fwd = timed_l2norm_fwd,
      .l2norm_bwd = timed_l2norm_bwd,
      .gdn_gates_fwd = timed_gdn_gates_fwd,
      .gdn_gates_bwd = timed_gdn_gates_bwd,
      .gated_rmsnorm_fwd = timed_gated_rmsnorm_fwd,
      .gated_rmsnorm_bwd = timed_gated_rmsnorm_bwd,
      .gdr_fwd = timed_gdr_fwd,
      .gdr_bwd = timed_gdr_bwd,
      .delta_rule_fwd = timed_delta_rule_fwd,
      .delta_rule_bwd = timed_delta_rule_bwd,
      .layernorm_fwd = timed_layernorm_fwd,
      .layernorm_bwd = timed_layernorm_bwd,
      .token_shift_fwd = timed_token_shift_fwd,
      .token_shift_bwd = timed_token_shift_bwd,
      .act_fwd = timed_act_fwd,
      .act_bwd = timed_act_bwd,
      .rwkv7_prep_fwd = timed_rwkv7_prep_fwd,
      .rwkv7_prep_bwd = timed_rwkv7_prep_bwd,
      .rwkv7_out_fwd = timed_rwkv7_out_fwd,
      .rwkv7_out_bwd = timed_rwkv7_out_bwd,
      .strided_copy = timed_strided_copy,
      .mul = timed_mul,
      .ring_store_kv = timed_ring_store_kv,
      .add_rmsnorm_fwd = timed_add_rmsnorm_fwd,
      .linear_fwd_bf16w = timed_linear_fwd_bf16w,
      .linear_swiglu_fwd =
          fused_swiglu() ? static_cast<decltype(OpsTable::linear_swiglu_fwd)>(timed_linear_swiglu_fwd) : nullptr,
      .linear_swiglu_fwd_bf16w =
          fused_swiglu() ? static_cast<decltype(OpsTable::linear_swiglu_fwd_bf16w)>(timed_linear_swiglu_fwd_bf16w)
                         : nullptr,
      .linear_fwd_add = timed_linear_fwd_add,
      .mirror_weights = cuda::mirror_weights,
      .weight_mirror_of = cuda::mirror_of,
      .mirror_activation = timed_mirror_activation,
  };
  return t;
}

}  // namespace sr
