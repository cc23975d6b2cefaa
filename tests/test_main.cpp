// The tests' main: the same OpenBLAS kernels as the smoothread tool (ops/cpu/blas_kernels.h), so
// in-process results and the tool's agree bit for bit, then googletest.
#include <gtest/gtest.h>

#include "ops/cpu/blas_kernels.h"

int main(int argc, char** argv) {
  sr::cpu::use_best_blas_kernels(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
