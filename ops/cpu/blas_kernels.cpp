#include "ops/cpu/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

namespace sr::cpu {

std::string blas_kernels() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

std::string best_blas_kernels() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

void use_best_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE")) return;  // the user's choice (or our own second start)
  const std::string now = blas_kernels(), best = best_blas_kernels();
  // kernel sets from before AVX2: what OpenBLAS falls back to when it does not know the CPU model
  static const char* kOld[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai",
                               "Coppermine", "Northwood", "Banias", "Sandybridge", "Barcelona", "Bobcat",
                               "Bulldozer", "Piledriver", "Steamroller", "Excavator", "Unknown"};
  const bool old = std::any_of(std::begin(kOld), std::end(kOld), [&](const char* k) { return now == k; });
  if (!old || best.empty()) return;
  setenv("OPENBLAS_CORETYPE", best.c_str(), 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "note: could not restart with OpenBLAS %s kernels (%s); running on %s\n", best.c_str(),
               std::strerror(errno), now.c_str());
}

}  // namespace sr::cpu
