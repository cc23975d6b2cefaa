// Safetensors (our own reader/writer). Format: u64 little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {...}}, then raw
// little-endian data; offsets are relative to the end of the header.
// Read: F32, BF16, F16 (converted to fp32), mmap'ed; sharded checkpoints through
// `model.safetensors.index.json`. Write: F32, atomically. Every malformation is an Error naming
// the file and the tensor/field.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/bf16.h"  // bf16_to_f32
#include "core/tensor.h"

namespace sr {

struct TensorInfo {
  std::string name, dtype;  // dtype: "F32" | "BF16" | "F16"
  Shape shape;
  size_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::string& path);  // mmaps and validates the whole header
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Copies tensor `name` into fp32 `out` (numel must match); errors name file + tensor.
  void read_f32(const std::string& name, float* out, size_t numel) const;
  Tensor load(const std::string& name) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  const unsigned char* data_ = nullptr;  // start of the data section
  size_t data_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory: `model.safetensors`, or the shards listed in
// `model.safetensors.index.json` (weight_map), or any single `*.safetensors` file.
class SafeTensorsSet {
 public:
  explicit SafeTensorsSet(const std::string& dir);
  const TensorInfo* find(const std::string& name, const SafeTensorsFile** file = nullptr) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const SafeTensorsFile*> where_;
};

// Writes fp32 tensors (contiguous copies are made as needed) atomically.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

float f16_to_f32(uint16_t h);

}  // namespace sr
