// CUDA backend: what a user or a tool can ask of it beyond the ops table (ops_cuda() in ops/ops.h).
// Plain C++ header (no CUDA includes), so the CLI and the tests compile without nvcc; every
// function fails with a clear sr::Error when smoothread was built without CUDA.
// Memory: all device memory comes from one caching allocator (size-binned free lists; cudaMalloc
// only when no cached block fits), so the training and decode loops never call cudaMalloc.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "ops/ops.h"

namespace sr::cuda {

bool available();                // built with CUDA and at least one GPU is visible
std::string device_summary();    // "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB"
void synchronize();              // waits for all queued work; surfaces asynchronous errors

struct MemoryStats {
  size_t in_use = 0, peak_in_use = 0, reserved = 0;  // bytes: handed out / high-water mark / held from CUDA
  int64_t device_allocs = 0, cache_hits = 0;          // cudaMalloc calls / allocations served from the cache
  size_t device_free = 0, device_total = 0;           // cudaMemGetInfo
};
MemoryStats memory_stats();
void reset_peak();
void empty_cache();  // returns cached, unused blocks to CUDA

// Per-op profile: ops_cuda_profiled() is ops_cuda() with every call timed by CUDA events (each op
// synchronizes, so the total runs slower than the plain table; the split is what it is for).
// profile_report(): JSON {"op": {"ms": total, "calls": n}, ...}, largest first.
std::string profile_report();
void profile_reset();

// GEMM arithmetic for the fp32-storage ops: "bf16" (default: bf16 tensor cores, fp32 accumulate),
// "tf32", or "fp32" (exact fp32, for parity tests).
void set_gemm_precision(const std::string& mode);
std::string gemm_precision();

// Attention on bf16 tensors (layouts as in ops.h; lse fp32 [B,Hq,Tq]); what the model's fp32 entry
// points run internally, exposed for benchmarks against other bf16 kernels. Device pointers.
void attention_fwd_bf16(void* out, float* lse, const void* q, const void* k, const void* v, const AttnShape& s);
// Tiles of the attention forward: 1 = 64 queries x 64 keys a block (16 query rows a warp), 2 = 128
// x 64, 3 = 128 x 32 (32 rows a warp: each K/V fragment from shared memory feeds two MMAs), 4 = 128
// x 128 on Hopper's warpgroup MMAs (head dims 64 and 128 on an sm_90 GPU with an sm_90a build; elsewhere
// the automatic choice); 0 = automatic (>= 128 queries: 4 where it runs, else 2 for head dims 64/128).
// The environment variable SMOOTHREAD_ATTN_FWD_TILES sets it when this is not called. For
// benchmarks and tests.
void set_attention_fwd_tiles(int tiles);
// Whether the warpgroup-MMA attention kernels (forward tiles 4, backward kernel 3) can run: an
// sm_90a build on a compute capability 9.0 GPU.
bool attention_wgmma_available();
// Kernel of the attention backward: 1 = 64 keys a block of 4 warps (16 keys x every query a warp),
// 2 = 128 keys a block of 8 warps with FlashAttention-2's 2-D warp tiling (head dims 64 and 128;
// others always take 1); 3 = 128 keys a block of 2 warpgroups on warpgroup MMAs (head dims 64 and 128 on
// an sm_90 GPU with an sm_90a build; elsewhere automatic); 0 = automatic (3 where it runs, else 2
// for head dims 64 and 128, else 1).
// SMOOTHREAD_ATTN_BWD sets it when this is not called.
void set_attention_bwd_kernel(int which);
// Launch order of the attention forward's and backward's blocks (ops/cuda/attention_schedule.h):
// 0 = each head's tiles in turn, heaviest first; 1 = every head's heaviest tile first, then every
// head's next (causal work is uneven: the last wave packs better); 2 = the default: sections of
// enough heads to fill the GPU twice over, each section's heaviest tiles first (1's packing
// without streaming every head's K/V at once at long contexts); -1 = SMOOTHREAD_ATTN_ORDER or 2.
// The blocks' work does not change: outputs, lse, dK and dV are bitwise the same in every order
// (dQ and head-split dK/dV sum in fp32 atomics, whose order is not fixed under any). For
// benchmarks and tests.
void set_attention_block_order(int order);
// Order 2's section in (head, batch) pairs (0 = automatic; tests use small sections on small grids).
void set_attention_block_section(int pairs);
// The 2-D backward's barrier between writing P/dS and reading them: 1 = named barriers over the
// warps that share the data (two pairs of warps, then quads), 0 = one block-wide barrier, -1 =
// SMOOTHREAD_ATTN_NAMED_BAR or automatic (named). Same results.
void set_attention_named_barriers(int on);
// The bf16 mirror (device memory) holding [x, x + n): a weight's or an activation's, or null.
const uint16_t* mirror_of(const float* x, size_t n);
// dq, dk, dv bf16; delta_ws: fp32 [B,Hq,Tq] workspace, dq_ws: fp32 [B,Tq,Hq,D] workspace
void attention_bwd_bf16(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, float* delta_ws, float* dq_ws, const AttnShape& s);
// bf16 weight mirrors (what OpsTable::mirror_weights runs): on by default; off makes every GEMM
// round its weight operand itself, as before the mirrors (benchmark A/B). Set before models load.
void set_weight_mirrors(bool on);
// bf16 activation mirrors (OpsTable::mirror_activation): on by default in the "bf16" GEMM mode;
// off (or SMOOTHREAD_ACT_MIRRORS=0) makes every GEMM round its activation operand itself (A/B).
void set_activation_mirrors(bool on);
// Activation mirrors made (allocations, not refreshes) and op outputs written as bf16 alone
// (MirrorFill::only_mirror), since the process started: tests check that the mirrors are in use.
struct ActivationMirrorStats {
  long long made = 0, only_mirror_writes = 0;
};
ActivationMirrorStats activation_mirror_stats();
// MirrorFill::only_mirror honoured (default; SMOOTHREAD_MIRROR_ONLY=0 or false: such outputs are
// written in fp32 too, as by_next_op; benchmark A/B)
void set_mirror_only(bool on);
// MirrorFill::gemm_output honoured: GEMM outputs the model keeps only as bf16 (the MLP's gate and
// up products, the down projection's dx, the LM head's logits) written by the GEMM in bf16 (default; off, or
// SMOOTHREAD_GEMM_BF16_OUT=0: written and read in fp32, benchmark A/B and the mirrors' bitwise tests)
void set_gemm_bf16_outputs(bool on);
// GEMM algorithms: on the first call of each GEMM shape, up to n of cuBLASLt's candidates are timed
// and the fastest kept (default 8, or SMOOTHREAD_GEMM_CANDIDATES; 1: cuBLASLt's first choice, the
// same on every run; 0: plain products through cublasGemmEx). Plans already made are kept per n.
int set_gemm_candidates(int n);  // returns the setting it replaces
// cuBLASLt plans made since the process started, those whose candidates were timed, and the time
// the candidates ran (benchmarks report it: tuning belongs to the first call of each shape only)
struct GemmPlanStats {
  long long plans = 0, timed = 0;
  double timing_ms = 0;
};
GemmPlanStats gemm_plan_stats();
// Tests: an op output kept only as bf16 gets NaN in its fp32 buffer instead of being left as it
// was, so that a stray fp32 read of it cannot pass unnoticed.
void set_mirror_only_poison(bool on);

// Decode graphs (OpsTable::run_captured, graphs.cu): a decode step's ops are captured into a CUDA
// graph and launched as one. A step whose key (pointers, shapes) equals the last graph's launches
// that graph again without recording anything: no per-op host work at all. A key seen twice in a
// row is recorded (the previous executable graph updated in place, cudaGraphExecUpdate, when only
// kernel arguments changed); any other step runs op by op. On by default; SMOOTHREAD_CUDA_GRAPHS=0
// (or set_decode_graphs(false)) switches them off.
void set_decode_graphs(bool on);
bool decode_graphs();
struct DecodeGraphStats {
  int64_t launches = 0;        // graphs launched (decode steps run through a graph)
  int64_t instantiations = 0;  // executable graphs built (the rest were updated in place or replayed)
  int64_t replays = 0;         // launches of the last graph as it was, without recording the step
};
DecodeGraphStats decode_graph_stats();  // this thread's
void run_captured(const std::vector<uintptr_t>& key, const std::function<void()>& body);
// The blocks allocated and freed while a graph is recorded (memory.cu): kept out of the free lists
// between begin and end, returned to the caller, who frees them once the graph is gone.
// *freed_older: whether a block allocated before the recording was freed inside it (the graph then
// refers to memory the allocator may hand out again, so it must not be launched again as is).
void begin_graph_blocks();
std::vector<void*> end_graph_blocks(bool* freed_older = nullptr);

// fp32 <-> bf16 conversion of n elements (device pointers)
void to_bf16(void* dst, const float* src, size_t n);
void from_bf16(float* dst, const void* src, size_t n);

}  // namespace sr::cuda

namespace sr {
const OpsTable& ops_cuda_profiled();
}  // namespace sr
