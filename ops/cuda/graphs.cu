// Decode graphs. A decode step is a few hundred small kernels (a dozen per layer), each shorter
// than its launch, so one token costs the host's per-op work, not bytes. Here the step's ops are
// captured into a CUDA graph (recorded, not run) and launched as one.
// Recording costs the host about as much as launching the ops, and the GPU then waits for the whole
// recording (recording every step measured 3-8% slower than op by op), so the gain comes from not
// recording: the caller gives a key (every pointer and number the step's work depends on), and a
// step whose key equals the last graph's launches that graph again. Keys stay the same where nothing
// in the work moves: recurrent states, window rings written at a slot read on the device
// (OpsTable::ring_store_kv), the allocator handing out the same blocks in the same order. A key is
// recorded when it comes twice in a row (the executable graph updated in place by
// cudaGraphExecUpdate when only kernel arguments changed, rebuilt otherwise); keys that change
// every step (a full-attention cache, a ring still filling) run op by op as without graphs.
// Blocks the body allocates and frees while it is recorded stay with the graph (memory.cu), since
// a replay writes them again.
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
  std::vector<uintptr_t> key;  // the key of the step exec holds (empty: never launched again as is)
  std::vector<uintptr_t> last;  // the key of the step before
  std::vector<void*> blocks;   // device blocks exec's kernels use (allocated and freed inside the body)
  DecodeGraphStats stats;
};
GraphCache& graph_cache() {
  thread_local GraphCache c;  // one per host thread: a thread decodes one step at a time
  return c;
}

void free_blocks(std::vector<void*>& blocks) {  // stream-ordered: work queued before still runs first
  for (void* p : blocks) device_free(p);
  blocks.clear();
}

// Ends a capture that failed part-way, so the stream can run ops again.
void abandon_capture() {
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream(), &g);
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();
  std::vector<void*> b = end_graph_blocks();
  free_blocks(b);
}
}  // namespace

void set_decode_graphs(bool on) {
  g_graphs = on ? 1 : 0;
  if (!on) graph_cache().key.clear(), graph_cache().last.clear();  // back on: start over
}

bool decode_graphs() {
  int v = g_graphs.load();
  if (v < 0) {
    // On unless SMOOTHREAD_CUDA_GRAPHS=0: measured 1.01x (full attention, never recorded) to 1.22x
    // (docs/PERF.md "Decode graphs"), the same logits bit for bit.
    const char* e = std::getenv("SMOOTHREAD_CUDA_GRAPHS");
    v = e && std::strcmp(e, "0") == 0 ? 0 : 1;
    g_graphs = v;
  }
  return v == 1;
}

DecodeGraphStats decode_graph_stats() { return graph_cache().stats; }

void run_captured(const std::vector<uintptr_t>& key, const std::function<void()>& body) {
  if (!decode_graphs()) {
    body();
    return;
  }
  const cudaStream_t s = stream();
  GraphCache& c = graph_cache();
  if (c.exec && !key.empty() && key == c.key) {  // the same work on the same memory: launch it again
    SR_CUDA(cudaGraphLaunch(c.exec, s));
    ++c.stats.launches, ++c.stats.replays;
    return;
  }
  if (key.empty() || key != c.last) {  // not (yet) a key that repeats: op by op
    c.last = key;
    body();
    return;
  }
  // Relaxed: the caching allocator may still call cudaMalloc while a step is recorded (its first
  // steps, or a full-attention cache that grows); that is not a stream operation.
  SR_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  begin_graph_blocks();
  try {
    body();
  } catch (...) {
    abandon_capture();
    throw;
  }
  cudaGraph_t g = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &g);
  bool freed_older = false;
  std::vector<void*> blocks = end_graph_blocks(&freed_older);
  if (ended != cudaSuccess) {  // an op did something a capture cannot hold (a host sync)
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    free_blocks(blocks);
    fail("cuda", std::string("decode graph capture failed: ") + cudaGetErrorString(ended) +
                     " (SMOOTHREAD_CUDA_GRAPHS=0 runs decode without graphs)");
  }
  c.key.clear();  // until the new graph is in place
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
      free_blocks(blocks);
      check(e, "cudaGraphInstantiate");
    }
    ++c.stats.instantiations;
  }
  cudaGraphDestroy(g);
  free_blocks(c.blocks);  // the previous graph's: exec no longer uses them
  c.blocks = std::move(blocks);
  if (!freed_older) c.key = key;
  SR_CUDA(cudaGraphLaunch(c.exec, s));
  ++c.stats.launches;
}

}  // namespace sr::cuda
