#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace sr {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

static Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = int(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

static std::shared_ptr<Storage> alloc_storage(size_t n) {
  auto st = std::make_shared<Storage>();
  size_t bytes = ((std::max<size_t>(n, 1) * sizeof(float) + 63) / 64) * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) fail("", "out of memory allocating " + std::to_string(bytes) + " bytes");
  st->data = p;
  st->size = n;
  st->owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return st;
}

Tensor Tensor::empty(const Shape& shape) {
  for (auto d : shape) SR_ASSERT(d >= 0, "negative dimension in " + shape_str(shape));
  Tensor t;
  t.storage_ = alloc_storage(size_t(shape_numel(shape)));
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::zeros(const Shape& shape) {
  Tensor t = empty(shape);
  std::memset(t.data(), 0, sizeof(float) * size_t(t.numel()));
  return t;
}

Tensor Tensor::borrow(float* data, const Shape& shape) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = data;
  t.storage_->size = size_t(shape_numel(shape));
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::from(const std::vector<float>& v, const Shape& shape) {
  SR_ASSERT(int64_t(v.size()) == shape_numel(shape), "Tensor::from size mismatch " + shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

bool Tensor::contiguous() const { return strides_ == contiguous_strides(shape_); }

float& Tensor::at(std::initializer_list<int64_t> idx) {
  SR_ASSERT(idx.size() == shape_.size(), "Tensor::at rank mismatch");
  int64_t off = 0;
  int i = 0;
  for (auto x : idx) {
    SR_ASSERT(x >= 0 && x < shape_[i], "Tensor::at index out of range");
    off += x * strides_[i++];
  }
  return data()[off];
}

float Tensor::at(std::initializer_list<int64_t> idx) const { return const_cast<Tensor*>(this)->at(idx); }

Tensor Tensor::reshape(const Shape& shape) const {
  SR_ASSERT(contiguous(), "reshape of a non-contiguous view");
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (int i = 0; i < int(s.size()); ++i) {
    if (s[i] == -1) {
      SR_ASSERT(infer < 0, "reshape: more than one -1");
      infer = i;
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known ? numel() / known : 0;
  SR_ASSERT(shape_numel(s) == numel(), "reshape " + shape_str(shape_) + " -> " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  SR_ASSERT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "slice out of range");
  Tensor t = *this;
  t.offset_ += begin * strides_[0];
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  Tensor t = *this;
  std::swap(t.shape_.at(a), t.shape_.at(b));
  std::swap(t.strides_.at(a), t.strides_.at(b));
  return t;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_);
  std::vector<float> v = to_vector();
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

void Tensor::fill(float v) {
  if (contiguous()) {
    float* p = data();
    for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
    return;
  }
  // generic strided fill through index iteration
  std::vector<int64_t> idx(shape_.size(), 0);
  for (int64_t n = 0, total = numel(); n < total; ++n) {
    int64_t off = 0;
    for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides_[i];
    data()[off] = v;
    for (int i = int(idx.size()) - 1; i >= 0 && ++idx[i] == shape_[i]; --i) idx[i] = 0;
  }
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  std::vector<int64_t> idx(shape_.size(), 0);
  for (size_t n = 0; n < v.size(); ++n) {
    int64_t off = 0;
    for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides_[i];
    v[n] = data()[off];
    for (int i = int(idx.size()) - 1; i >= 0 && ++idx[i] == shape_[i]; --i) idx[i] = 0;
  }
  return v;
}

void Arena::reserve(size_t capacity_floats) {
  if (capacity_floats <= cap_) return;
  SR_ASSERT(used_ == 0, "Arena::reserve while allocations are live");
  size_t bytes = ((capacity_floats * sizeof(float) + 63) / 64) * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) fail("", "out of memory reserving arena of " + std::to_string(bytes) + " bytes");
  block_ = std::shared_ptr<float>(p, [](float* q) { std::free(q); });
  cap_ = capacity_floats;
}

Tensor Arena::alloc(const Shape& shape) {
  size_t n = size_t(shape_numel(shape));
  size_t aligned = (n + 15) / 16 * 16;
  if (used_ + aligned > cap_) fail("", "arena exhausted: need " + std::to_string(used_ + aligned) + " floats, have " + std::to_string(cap_));
  Tensor t = Tensor::borrow(block_.get() + used_, shape);
  used_ += aligned;
  return t;
}

}  // namespace sr
