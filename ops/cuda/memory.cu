// Caching device allocator + the CUDA MemOps. Blocks are rounded (512 B below 1 MiB, 2 MiB above)
// and kept on per-size free lists when released, so the steady state of training and decoding
// (the same sizes every step) never reaches cudaMalloc. On out-of-memory the cache is emptied
// and the allocation retried once before failing with a report.
#include <cstdio>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_common.cuh"

namespace sr::cuda {

namespace {
struct Allocator {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> live;            // pointer -> rounded size
  MemoryStats st;

  static size_t round(size_t b) {
    if (b == 0) b = 1;
    const size_t small = 512, big = size_t(2) << 20;
    return b < (size_t(1) << 20) ? (b + small - 1) / small * small : (b + big - 1) / big * big;
  }
  void release_cached() {
    for (auto& [sz, v] : free_blocks)
      for (void* p : v) cudaFree(p), st.reserved -= sz;
    free_blocks.clear();
  }
};
Allocator& allocator() {
  static Allocator* a = new Allocator();  // never destroyed: blocks may be freed after main returns
  return *a;
}
// While this thread records a decode graph (graphs.cu): the blocks allocated inside the recording,
// and those of them freed inside it, which the graph's kernels use again on every launch and so
// stay out of the free lists until the graph is replaced.
struct Recording {
  bool on = false;
  std::unordered_set<void*> made;
  std::vector<void*> kept;
  bool freed_older = false;  // a block from before the recording was freed inside it
};
Recording& recording() {
  thread_local Recording r;
  return r;
}
std::string gib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / (1 << 30));
  return s;
}
}  // namespace

void* device_alloc(size_t bytes) {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  size_t sz = Allocator::round(bytes);
  void* p = nullptr;
  auto it = A.free_blocks.find(sz);
  if (it != A.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++A.st.cache_hits;
  } else {
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      A.release_cached();
      e = cudaMalloc(&p, sz);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      fail("cuda", "out of device memory allocating " + gib(sz) + " (in use " + gib(A.st.in_use) + ", free " + gib(fr) +
                       " of " + gib(tot) + "); try a smaller batch_size or seq_len");
    }
    ++A.st.device_allocs;
    A.st.reserved += sz;
  }
  A.live[p] = sz;
  A.st.in_use += sz;
  A.st.peak_in_use = std::max(A.st.peak_in_use, A.st.in_use);
  if (recording().on) recording().made.insert(p);
  return p;
}

void device_free(void* p) {
  if (!p) return;
  Recording& r = recording();
  if (r.on) {
    if (r.made.erase(p)) {  // the graph being recorded uses it: it stays live with the graph
      r.kept.push_back(p);
      return;
    }
    r.freed_older = true;  // the graph uses a block that may be handed out again: not replayable
  }
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  auto it = A.live.find(p);
  if (it == A.live.end()) return;
  A.st.in_use -= it->second;
  A.free_blocks[it->second].push_back(p);
  A.live.erase(it);
}

void begin_graph_blocks() {
  Recording& r = recording();
  r.on = true, r.made.clear(), r.kept.clear(), r.freed_older = false;
}
std::vector<void*> end_graph_blocks(bool* freed_older) {
  Recording& r = recording();
  r.on = false, r.made.clear();
  if (freed_older) *freed_older = r.freed_older;
  return std::move(r.kept);
}

MemoryStats memory_stats() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  MemoryStats s = A.st;
  cudaMemGetInfo(&s.device_free, &s.device_total);
  return s;
}
void reset_peak() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  A.st.peak_in_use = A.st.in_use;
}
void empty_cache() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  A.release_cached();
}

bool available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::string device_summary() {
  if (!available()) return "no CUDA GPU visible";
  int dev = 0;
  SR_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  SR_CUDA(cudaGetDeviceProperties(&p, dev));
  char s[256];
  std::snprintf(s, sizeof s, "%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
                double(p.totalGlobalMem) / (1 << 30));
  return s;
}

void synchronize() { SR_CUDA(cudaDeviceSynchronize()); }

cudaStream_t stream() {
  static const cudaStream_t s = [] {
    cudaStream_t t = nullptr;
    check(cudaStreamCreate(&t), "cudaStreamCreate");
    return t;
  }();
  return s;
}

namespace {
void* m_alloc(size_t b) { return device_alloc(b); }
void m_release(void* p) { device_free(p); }
void m_to_device(void* d, const void* h, size_t b) { SR_CUDA(cudaMemcpy(d, h, b, cudaMemcpyHostToDevice)); }
void m_to_host(void* h, const void* d, size_t b) { SR_CUDA(cudaMemcpy(h, d, b, cudaMemcpyDeviceToHost)); }
void m_copy(void* d, const void* s, size_t b) { SR_CUDA(cudaMemcpyAsync(d, s, b, cudaMemcpyDeviceToDevice, stream())); }
void m_zero(void* p, size_t b) { SR_CUDA(cudaMemsetAsync(p, 0, b, stream())); }
}  // namespace

const MemOps& device_mem() {
  static const MemOps m = {"cuda", true, m_alloc, m_release, m_to_device, m_to_host, m_copy, m_zero};
  return m;
}

}  // namespace sr::cuda
