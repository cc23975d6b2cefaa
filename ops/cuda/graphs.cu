// Decode graphs. A decode step is a few hundred small kernels (a dozen per layer), each shorter
// than its launch, so one token costs launches, not bytes. Here the step's ops are captured into a
// CUDA graph (recorded, not run) and launched as one. Every step is captured again, because its
// arguments change (the position, the ring slot, the number of cached keys, the allocator's
// pointers); the executable graph of the previous step is then updated in place
// (cudaGraphExecUpdate), which is cheap when only arguments changed, and rebuilt when the work's
// shape changed (another model, a cache that grew, a different op path).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"

namespace sr::cuda {

namespace {
std::atomic<int> g_graphs{-1};  // -1: not decided yet (SMOOTHREAD_CUDA_GRAPHS)

struct GraphCache {
  cudaGraphExec_t exec = nullptr;
  DecodeGraphStats stats;
};
GraphCache& graph_cache() {
  thread_local GraphCache c;  // one per host thread: a thread decodes one step at a time
  return c;
}

// Ends a capture that failed part-way, so the stream can run ops again.
void abandon_capture() {
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream(), &g);
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();
}
}  // namespace

void set_decode_graphs(bool on) { g_graphs = on ? 1 : 0; }

bool decode_graphs() {
  int v = g_graphs.load();
  if (v < 0) {
    const char* e = std::getenv("SMOOTHREAD_CUDA_GRAPHS");
    v = e && std::strcmp(e, "0") != 0 && *e ? 1 : 0;
    g_graphs = v;
  }
  return v == 1;
}

DecodeGraphStats decode_graph_stats() { return graph_cache().stats; }

void run_captured(const std::function<void()>& body) {
  if (!decode_graphs()) {
    body();
    return;
  }
  const cudaStream_t s = stream();
  // Relaxed: the caching allocator may still call cudaMalloc while a step is recorded (its first
  // steps, or a full-attention cache that grows); that is not a stream operation.
  SR_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    body();
  } catch (...) {
    abandon_capture();
    throw;
  }
  cudaGraph_t g = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &g);
  if (ended != cudaSuccess) {  // an op did something a capture cannot hold (a host sync)
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    fail("cuda", std::string("decode graph capture failed: ") + cudaGetErrorString(ended) +
                     " (SMOOTHREAD_CUDA_GRAPHS=0 runs decode without graphs)");
  }
  GraphCache& c = graph_cache();
  if (c.exec) {
    cudaGraphExecUpdateResultInfo info{};
    if (cudaGraphExecUpdate(c.exec, g, &info) != cudaSuccess) {  // the work changed shape: rebuild
      cudaGetLastError();
      cudaGraphExecDestroy(c.exec);
      c.exec = nullptr;
    }
  }
  if (!c.exec) {
    const cudaError_t e = cudaGraphInstantiate(&c.exec, g, 0);
    if (e != cudaSuccess) {
      cudaGraphDestroy(g);
      c.exec = nullptr;
      check(e, "cudaGraphInstantiate");
    }
    ++c.stats.instantiations;
  }
  cudaGraphDestroy(g);
  SR_CUDA(cudaGraphLaunch(c.exec, s));
  ++c.stats.launches;
}

}  // namespace sr::cuda
