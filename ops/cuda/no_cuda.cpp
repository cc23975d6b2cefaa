// Built instead of the CUDA backend when SMOOTHREAD_CUDA is OFF: asking for it is a clear error.
#include "core/error.h"
#include "ops/ops.h"

namespace sr {

bool cuda_built() { return false; }

const OpsTable& ops_cuda() {
  fail("--device cuda", "this smoothread was built without CUDA; reconfigure with -DSMOOTHREAD_CUDA=ON (needs nvcc)");
}

}  // namespace sr

// The rest of ops/cuda/cuda_backend.h, so callers link either way.
#include "ops/cuda/cuda_backend.h"

namespace sr::cuda {
namespace {
[[noreturn]] void no_cuda() { fail("cuda", "this smoothread was built without CUDA; reconfigure with -DSMOOTHREAD_CUDA=ON"); }
}  // namespace
bool available() { return false; }
std::string device_summary() { return "built without CUDA"; }
void synchronize() {}
MemoryStats memory_stats() { return {}; }
void reset_peak() {}
void empty_cache() {}
void set_gemm_precision(const std::string&) { no_cuda(); }
std::string gemm_precision() { return "none"; }
void set_weight_mirrors(bool) { no_cuda(); }
void set_activation_mirrors(bool) { no_cuda(); }
ActivationMirrorStats activation_mirror_stats() { return {}; }
void set_mirror_only(bool) { no_cuda(); }
void set_gemm_bf16_outputs(bool) { no_cuda(); }
int set_gemm_candidates(int) { no_cuda(); }
GemmPlanStats gemm_plan_stats() { no_cuda(); }
void set_mirror_only_poison(bool) { no_cuda(); }
void set_decode_graphs(bool) { no_cuda(); }
void set_attention_fwd_tiles(int) { no_cuda(); }
void set_attention_bwd_kernel(int) { no_cuda(); }
void set_attention_block_order(int) { no_cuda(); }
void set_attention_block_section(int) { no_cuda(); }
void set_attention_named_barriers(int) { no_cuda(); }
bool attention_wgmma_available() { return false; }
const uint16_t* mirror_of(const float*, size_t) { return nullptr; }
bool decode_graphs() { return false; }
DecodeGraphStats decode_graph_stats() { return {}; }
void run_captured(const std::vector<uintptr_t>&, const std::function<void()>& body) { body(); }
void begin_graph_blocks() {}
std::vector<void*> end_graph_blocks(bool*) { return {}; }
void attention_fwd_bf16(void*, float*, const void*, const void*, const void*, const AttnShape&) { no_cuda(); }
void attention_bwd_bf16(void*, void*, void*, const void*, const void*, const void*, const void*, const void*,
                        const float*, float*, float*, const AttnShape&) { no_cuda(); }
void to_bf16(void*, const float*, size_t) { no_cuda(); }
void from_bf16(float*, const void*, size_t) { no_cuda(); }
std::string profile_report() { return "{}"; }
void profile_reset() {}
}  // namespace sr::cuda

namespace sr {
const OpsTable& ops_cuda_profiled() { return ops_cuda(); }
}  // namespace sr
