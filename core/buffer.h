// Memory of one backend (host or a CUDA device) and a typed, owning buffer over it.
// The model, the optimizer and the KV caches hold their arrays in Buffer<T>, so the same code
// runs on the CPU (plain host memory) and on the GPU (device memory from the caching allocator);
// only the host-side edges (loading weights, reading logits, saving state) copy explicitly.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace sr {

struct MemOps {
  const char* name;
  bool device;                                  // pointers are not host-addressable
  void* (*alloc)(size_t bytes);                 // never returns null (throws sr::Error)
  void (*release)(void* p);
  void (*to_device)(void* dst, const void* host_src, size_t bytes);
  void (*to_host)(void* host_dst, const void* src, size_t bytes);
  void (*copy)(void* dst, const void* src, size_t bytes);  // within the backend
  void (*zero)(void* p, size_t bytes);
};

const MemOps& host_mem();

template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(const MemOps* mem, size_t n = 0) : mem_(mem) { resize(n); }
  Buffer(const Buffer& o) : mem_(o.mem_) {
    reserve(o.size_);
    size_ = o.size_;
    if (size_) mem_->copy(p_, o.p_, size_ * sizeof(T));
  }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer o) noexcept {
    swap(o);
    return *this;
  }
  ~Buffer() {
    if (p_) mem_->release(p_);
  }
  void swap(Buffer& o) noexcept {
    std::swap(mem_, o.mem_), std::swap(p_, o.p_), std::swap(size_, o.size_), std::swap(cap_, o.cap_);
  }

  const MemOps* mem() const { return mem_; }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  bool empty() const { return size_ == 0; }

  // Keeps the first min(size, n) elements; new elements are unspecified.
  void resize(size_t n) {
    if (n > cap_) reserve(n);
    size_ = n;
  }
  void reserve(size_t n) {
    if (n <= cap_) return;
    T* q = static_cast<T*>(mem_->alloc(n * sizeof(T)));
    if (size_) mem_->copy(q, p_, size_ * sizeof(T));
    if (p_) mem_->release(p_);
    p_ = q, cap_ = n;
  }
  void zero() {
    if (size_) mem_->zero(p_, size_ * sizeof(T));
  }
  // Appends n elements already in this backend's memory (amortized doubling).
  void append(const T* src, size_t n) {
    if (size_ + n > cap_) reserve(std::max(size_ + n, cap_ * 2));
    if (n) mem_->copy(p_ + size_, src, n * sizeof(T));
    size_ += n;
  }
  void upload(const T* host, size_t n, size_t at = 0) {
    if (n) mem_->to_device(p_ + at, host, n * sizeof(T));
  }
  void download(T* host, size_t n, size_t at = 0) const {
    if (n) mem_->to_host(host, p_ + at, n * sizeof(T));
  }
  std::vector<T> to_vector() const {
    std::vector<T> v(size_);
    download(v.data(), size_);
    return v;
  }
  void assign(const T* host, size_t n) {
    resize(n);
    upload(host, n);
  }
  bool operator==(const Buffer& o) const {
    if (size_ != o.size_) return false;
    auto a = to_vector(), b = o.to_vector();
    return size_ == 0 || std::memcmp(a.data(), b.data(), size_ * sizeof(T)) == 0;
  }

 private:
  const MemOps* mem_ = &host_mem();
  T* p_ = nullptr;
  size_t size_ = 0, cap_ = 0;
};

}  // namespace sr
