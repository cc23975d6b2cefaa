// fp32 tensors as shape/stride views over shared storage. Storage is either owned (heap,
// 64-byte aligned) or borrowed from an Arena (bump allocator reset per step) or an mmap.
// Views (reshape, slice along dim 0, transpose) share storage and never copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sr {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// A block of floats. `owner` keeps the memory alive (nullptr when borrowed from an arena).
struct Storage {
  float* data = nullptr;
  size_t size = 0;  // in floats
  std::shared_ptr<void> owner;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor zeros(const Shape& shape);                         // owned, zero-filled
  static Tensor empty(const Shape& shape);                         // owned, uninitialized
  static Tensor borrow(float* data, const Shape& shape);           // view of foreign memory
  static Tensor from(const std::vector<float>& v, const Shape& shape);

  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  bool defined() const { return storage_ != nullptr; }
  bool contiguous() const;

  float* data() { return storage_->data + offset_; }
  const float* data() const { return storage_->data + offset_; }
  float& at(std::initializer_list<int64_t> idx);
  float at(std::initializer_list<int64_t> idx) const;

  Tensor reshape(const Shape& shape) const;     // contiguous only; one -1 allowed
  Tensor slice(int64_t begin, int64_t end) const;  // along dim 0
  Tensor transpose(int a, int b) const;         // view with swapped strides
  Tensor clone() const;                         // contiguous owned copy
  void fill(float v);
  std::vector<float> to_vector() const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_, strides_;
  int64_t offset_ = 0;
};

// Bump allocator for per-step activations: one big block, reset() frees everything at once.
class Arena {
 public:
  explicit Arena(size_t capacity_floats = 0) { reserve(capacity_floats); }
  void reserve(size_t capacity_floats);
  Tensor alloc(const Shape& shape);  // 16-float aligned, uninitialized
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t capacity() const { return cap_; }

 private:
  std::shared_ptr<float> block_;
  size_t cap_ = 0, used_ = 0;
};

}  // namespace sr
