// Which OpenBLAS kernels the CPU backend's GEMMs and GEMVs run on, and choosing better ones where
// OpenBLAS did not recognize the CPU.
#pragma once
#include <string>

namespace sr::cpu {

// The kernels OpenBLAS uses ("Haswell", "SkylakeX", "Prescott", ...: openblas_get_corename()).
std::string blas_kernels();

// The kernels this CPU's instruction set supports best ("SkylakeX" with AVX-512 F/BW/VL/DQ/CD,
// "Haswell" with AVX2 + FMA), or "" when neither.
std::string best_blas_kernels();

// OpenBLAS picks its kernels from the CPU model when it loads. On a CPU model it does not know
// (virtual machines that report a generic "Intel(R) Xeon(R) Processor") it falls back to SSE3
// (Prescott) kernels even where AVX-512 is available: the README's read ran 1.8x slower that way
// on our 2-core VM (docs/PERF.md). Call at the top of main(): when OPENBLAS_CORETYPE is unset and
// the kernels in use predate AVX2 while the CPU has AVX2 + FMA or AVX-512, it sets
// OPENBLAS_CORETYPE to best_blas_kernels() and executes the program again (/proc/self/exe, same
// argv and descriptors) so that OpenBLAS loads with them. Returns when nothing had to change (or
// the new start failed, with a note on stderr). Set OPENBLAS_CORETYPE yourself to choose.
void use_best_blas_kernels(char** argv);

}  // namespace sr::cpu
