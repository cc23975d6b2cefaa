// Backend selection by name (--device, "device" in train.json).
#include "core/error.h"
#include "ops/ops.h"

namespace sr {

const OpsTable& ops_for_device(const std::string& device) {
  if (device == "cpu") return ops_cpu();
  if (device == "ref") return ops_ref();
  if (device == "cuda") return ops_cuda();
  fail("--device", "unknown device '" + device + "' (choose cpu, cuda or ref)");
}

}  // namespace sr
