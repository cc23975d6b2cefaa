// Reads PyTorch `torch.save` checkpoints (.pth / .pt: a zip archive holding data.pkl and one file
// per tensor storage) without executing anything: data.pkl is interpreted by a small pickle machine
// that knows only the opcodes torch.save writes and an allow-list of globals (OrderedDict, the
// tensor/parameter rebuild functions, the typed storage classes). Any other global, a compressed
// entry or a non-contiguous tensor is an error naming the file and what was found.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sr {

struct TorchTensor {
  std::string dtype;            // "float32", "float16" or "bfloat16" (as stored)
  std::vector<int64_t> shape;
  std::vector<float> data;      // widened to fp32, row-major
};

// Every tensor of the checkpoint's top-level dict (state_dict order). Throws sr::Error.
std::vector<std::pair<std::string, TorchTensor>> read_torch_checkpoint(const std::string& path);

}  // namespace sr
