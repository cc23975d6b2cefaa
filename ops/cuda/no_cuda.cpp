// Built instead of the CUDA backend when SMOOTHREAD_CUDA is OFF: asking for it is a clear error.
#include "core/error.h"
#include "ops/ops.h"

namespace sr {

bool cuda_built() { return false; }

const OpsTable& ops_cuda() {
  fail("--device cuda", "this smoothread was built without CUDA; reconfigure with -DSMOOTHREAD_CUDA=ON (needs nvcc)");
}

}  // namespace sr
