#include "models/safetensors.h"

#include <algorithm>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"

namespace sr {

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static size_t dtype_size(const std::string& dt) {
  if (dt == "F32") return 4;
  if (dt == "BF16" || dt == "F16") return 2;
  return 0;
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, "cannot stat");
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(path, "truncated safetensors file: " + std::to_string(size_) + " bytes, less than the 8-byte header length");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(path, "mmap failed");
  }
  const unsigned char* base = static_cast<const unsigned char*>(map_);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
  if (hlen > size_ - 8)
    fail(path, "header length " + std::to_string(hlen) + " exceeds the file size (" + std::to_string(size_) + " bytes): truncated or not a safetensors file");
  json header;
  try {
    header = json::parse(base + 8, base + 8 + hlen);
  } catch (const json::parse_error& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  data_ = base + 8 + hlen;
  data_size_ = size_ - 8 - hlen;
  for (auto& [name, v] : header.items()) {
    std::string where = path + ": tensor '" + name + "'";
    if (name == "__metadata__") {
      if (v.is_object())
        for (auto& [k, mv] : v.items())
          if (mv.is_string()) metadata_[k] = mv.get<std::string>();
      continue;
    }
    if (!v.is_object()) fail(where, "entry is not an object");
    TensorInfo ti;
    ti.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where + ": field 'dtype'", "missing or not a string");
    ti.dtype = v["dtype"].get<std::string>();
    size_t es = dtype_size(ti.dtype);
    if (!es) fail(where + ": field 'dtype'", "unsupported dtype '" + ti.dtype + "' (supported: F32, BF16, F16)");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where + ": field 'shape'", "missing or not a list");
    for (auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(where + ": field 'shape'", "dimensions must be non-negative integers");
      ti.shape.push_back(d.get<int64_t>());
    }
    auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where + ": field 'data_offsets'", "expected [begin, end]");
    ti.begin = off[0].get<size_t>();
    ti.end = off[1].get<size_t>();
    if (ti.begin > ti.end || ti.end > data_size_)
      fail(where + ": field 'data_offsets'", "[" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
                                                  "] lies outside the data section (" + std::to_string(data_size_) + " bytes): file truncated?");
    if (ti.end - ti.begin != size_t(shape_numel(ti.shape)) * es)
      fail(where, "byte length " + std::to_string(ti.end - ti.begin) + " does not match shape " + shape_str(ti.shape) + " x " + ti.dtype);
    tensors_[name] = ti;
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_) ::munmap(map_, size_);
}

void SafeTensorsFile::read_f32(const std::string& name, float* out, size_t numel) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, "missing tensor '" + name + "'");
  const TensorInfo& ti = it->second;
  if (size_t(shape_numel(ti.shape)) != numel) fail(path_ + ": tensor '" + name + "'", "element count mismatch");
  const unsigned char* p = data_ + ti.begin;
  if (ti.dtype == "F32") {
    const size_t chunk = size_t(1) << 22;  // parallel copy: page faults of a fresh buffer are the cost
#pragma omp parallel for schedule(static) if (numel > chunk)
    for (int64_t c = 0; c < int64_t((numel + chunk - 1) / chunk); ++c)
      std::memcpy(out + size_t(c) * chunk, p + size_t(c) * chunk * 4, std::min(chunk, numel - size_t(c) * chunk) * 4);
  } else {
    const bool bf = ti.dtype == "BF16";
    const int64_t n = int64_t(numel);
#pragma omp parallel for schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = uint16_t(p[2 * i] | (p[2 * i + 1] << 8));
      out[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
}

Tensor SafeTensorsFile::load(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, "missing tensor '" + name + "'");
  Tensor t = Tensor::empty(it->second.shape);
  read_f32(name, t.data(), size_t(t.numel()));
  return t;
}

SafeTensorsSet::SafeTensorsSet(const std::string& dir) {
  namespace fs = std::filesystem;
  std::string index = join_path(dir, "model.safetensors.index.json");
  std::string single = join_path(dir, "model.safetensors");
  std::vector<std::string> paths;
  std::map<std::string, std::string> expected;  // tensor -> shard file, from the index
  if (path_exists(single)) {
    paths.push_back(single);
  } else if (path_exists(index)) {
    json j = load_json_file(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) fail(index + ": field 'weight_map'", "missing or not an object");
    for (auto& [name, f] : j["weight_map"].items()) {
      if (!f.is_string()) fail(index + ": field 'weight_map." + name + "'", "expected a file name");
      std::string shard = f.get<std::string>();
      if (shard.find('/') != std::string::npos) fail(index + ": field 'weight_map." + name + "'", "shard must be a plain file name");
      expected[name] = shard;
      bool seen = false;
      for (auto& p : paths) seen |= p == join_path(dir, shard);
      if (!seen) paths.push_back(join_path(dir, shard));
    }
  } else {
    for (auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    if (paths.size() != 1)
      fail(dir, paths.empty() ? "no model.safetensors (or model.safetensors.index.json) found"
                              : "several *.safetensors files but no model.safetensors.index.json");
  }
  for (auto& p : paths) {
    files_.push_back(std::make_unique<SafeTensorsFile>(p));
    for (auto& [name, ti] : files_.back()->tensors()) where_[name] = files_.back().get();
  }
  for (auto& [name, shard] : expected)
    if (!where_.count(name)) fail(join_path(dir, shard), "tensor '" + name + "' listed in the index is missing from its shard");
}

const TensorInfo* SafeTensorsSet::find(const std::string& name, const SafeTensorsFile** file) const {
  auto it = where_.find(name);
  if (it == where_.end()) return nullptr;
  if (file) *file = it->second;
  return &it->second->tensors().at(name);
}

std::vector<std::string> SafeTensorsSet::names() const {
  std::vector<std::string> r;
  for (auto& [n, f] : where_) r.push_back(n);
  return r;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  size_t off = 0;
  for (auto& [name, t] : tensors) {
    size_t bytes = size_t(t.numel()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + off);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out += h;
  for (auto& [name, t] : tensors) {
    if (t.contiguous()) {
      out.append(reinterpret_cast<const char*>(t.data()), size_t(t.numel()) * 4);
    } else {
      std::vector<float> v = t.to_vector();
      out.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    }
  }
  write_file_atomic(path, out);
}

}  // namespace sr
