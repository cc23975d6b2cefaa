#include "core/buffer.h"

#include <cstdlib>
#include <new>
#include <string>

#include "core/error.h"

namespace sr {

namespace {
void* host_alloc(size_t bytes) {
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) fail("memory", "out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}
void host_copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void host_zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
}  // namespace

const MemOps& host_mem() {
  static const MemOps m = {"host", false, host_alloc, std::free, host_copy, host_copy, host_copy, host_zero};
  return m;
}

}  // namespace sr
