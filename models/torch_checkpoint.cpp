#include "models/torch_checkpoint.h"

#include <cstring>
#include <fstream>
#include <map>
#include <memory>

#include "core/error.h"
#include "models/safetensors.h"  // bf16_to_f32, f16_to_f32

namespace sr {

namespace {

// ---- the zip container (stored entries only, zip64 aware) ----
struct ZipEntry {
  uint64_t data_offset = 0, size = 0;
};

class Zip {
 public:
  explicit Zip(const std::string& path) : path_(path), f_(path, std::ios::binary) {
    if (!f_) fail(path, "cannot open");
    f_.seekg(0, std::ios::end);
    size_ = uint64_t(f_.tellg());
    read_directory();
  }
  const std::map<std::string, ZipEntry>& entries() const { return entries_; }
  std::vector<uint8_t> read(const ZipEntry& e, uint64_t offset, uint64_t n) {
    if (offset + n > e.size) bad("an entry is shorter than the data it must hold");
    std::vector<uint8_t> b(n);
    at(e.data_offset + offset, b.data(), n);
    return b;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const { fail(path_, "not a readable torch.save zip archive: " + why); }
  void at(uint64_t pos, void* dst, uint64_t n) {
    if (pos + n > size_ || pos + n < pos) bad("truncated");
    f_.seekg(std::streamoff(pos));
    f_.read(static_cast<char*>(dst), std::streamsize(n));
    if (!f_) bad("read failed");
  }
  template <class T>
  static T le(const uint8_t* p) {
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= T(p[i]) << (8 * i);
    return v;
  }
  void read_directory() {
    const uint64_t tail = std::min<uint64_t>(size_, 65536 + 22);
    std::vector<uint8_t> t(tail);
    at(size_ - tail, t.data(), tail);
    int64_t eocd = -1;
    for (int64_t i = int64_t(tail) - 22; i >= 0; --i)
      if (le<uint32_t>(&t[size_t(i)]) == 0x06054b50u) {
        eocd = i;
        break;
      }
    if (eocd < 0) bad("no end-of-central-directory record (a legacy non-zip .pth is not supported)");
    const uint8_t* e = &t[size_t(eocd)];
    uint64_t count = le<uint16_t>(e + 10), cd_size = le<uint32_t>(e + 12), cd_off = le<uint32_t>(e + 16);
    const uint64_t eocd_pos = size_ - tail + uint64_t(eocd);
    if ((count == 0xFFFF || cd_off == 0xFFFFFFFFu || cd_size == 0xFFFFFFFFu) && eocd_pos >= 20) {
      uint8_t loc[20];
      at(eocd_pos - 20, loc, 20);
      if (le<uint32_t>(loc) != 0x07064b50u) bad("zip64 locator missing");
      uint8_t z[56];
      at(le<uint64_t>(loc + 8), z, 56);
      if (le<uint32_t>(z) != 0x06064b50u) bad("zip64 end record missing");
      count = le<uint64_t>(z + 32), cd_size = le<uint64_t>(z + 40), cd_off = le<uint64_t>(z + 48);
    }
    if (cd_size > size_ || cd_off > size_ - cd_size) bad("central directory out of range");
    std::vector<uint8_t> cd(cd_size);
    at(cd_off, cd.data(), cd_size);
    size_t p = 0;
    for (uint64_t i = 0; i < count; ++i) {
      if (p + 46 > cd.size() || le<uint32_t>(&cd[p]) != 0x02014b50u) bad("central directory entry " + std::to_string(i));
      const uint16_t method = le<uint16_t>(&cd[p + 10]);
      uint64_t csize = le<uint32_t>(&cd[p + 20]), usize = le<uint32_t>(&cd[p + 24]), local = le<uint32_t>(&cd[p + 42]);
      const size_t nlen = le<uint16_t>(&cd[p + 28]), xlen = le<uint16_t>(&cd[p + 30]), clen = le<uint16_t>(&cd[p + 32]);
      if (p + 46 + nlen + xlen + clen > cd.size()) bad("central directory entry " + std::to_string(i));
      std::string name(reinterpret_cast<const char*>(&cd[p + 46]), nlen);
      for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen;) {  // zip64 sizes / offset
        const uint16_t id = le<uint16_t>(&cd[x]), len = le<uint16_t>(&cd[x + 2]);
        size_t q = x + 4;
        if (id == 0x0001) {
          auto take = [&](uint64_t& v) {
            if (v == 0xFFFFFFFFu && q + 8 <= x + 4 + len) v = le<uint64_t>(&cd[q]), q += 8;
          };
          take(usize), take(csize), take(local);
        }
        x += 4 + size_t(len);
      }
      if (method != 0) fail(path_ + ": entry '" + name + "'", "is compressed (method " + std::to_string(method) +
                                                              "); torch.save writes stored entries only");
      if (csize != usize) bad("entry '" + name + "' has different stored and real sizes");
      uint8_t lh[30];
      at(local, lh, 30);
      if (le<uint32_t>(lh) != 0x04034b50u) bad("local header of '" + name + "'");
      ZipEntry ze;
      ze.data_offset = local + 30 + le<uint16_t>(lh + 26) + le<uint16_t>(lh + 28), ze.size = usize;
      if (ze.data_offset + ze.size > size_) bad("entry '" + name + "' runs past the end of the file");
      entries_[name] = ze;
      p += 46 + nlen + xlen + clen;
    }
  }
  std::string path_;
  std::ifstream f_;
  uint64_t size_ = 0;
  std::map<std::string, ZipEntry> entries_;
};

// ---- the pickle subset ----
struct Obj;
using Ref = std::shared_ptr<Obj>;
struct Obj {
  enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;                 // Str, Bytes, Global ("module name"), Storage dtype
  std::string key;               // Storage: its file under data/
  std::vector<Ref> items;        // Tuple, List; Dict as k0, v0, k1, v1, ...; Tensor: {storage}
  std::vector<int64_t> shape, stride;
};
Ref make(Obj::Kind k) {
  auto o = std::make_shared<Obj>();
  o->kind = k;
  return o;
}

class Unpickler {
 public:
  Unpickler(const std::string& where, const std::vector<uint8_t>& b) : where_(where), b_(b) {}

  Ref run() {
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                    // PROTO
        case 0x95: n(8); break;                    // FRAME
        case '.': return pop();                    // STOP
        case '(': push(make(Obj::Mark)); break;    // MARK
        case '}': push(make(Obj::Dict)); break;    // EMPTY_DICT
        case ']': push(make(Obj::List)); break;    // EMPTY_LIST
        case ')': push(make(Obj::Tuple)); break;   // EMPTY_TUPLE
        case 0x8f: push(make(Obj::List)); break;   // EMPTY_SET (kept as a list)
        case 't': { auto t = make(Obj::Tuple); t->items = pop_mark(); push(t); break; }
        case 0x85: case 0x86: case 0x87: {         // TUPLE1..3
          auto t = make(Obj::Tuple);
          t->items.resize(size_t(op - 0x84));
          for (size_t k = t->items.size(); k-- > 0;) t->items[k] = pop();
          push(t);
          break;
        }
        case 'a': { Ref v = pop(); list(top())->items.push_back(v); break; }        // APPEND
        case 'e': case 0x90: {                                                     // APPENDS, ADDITEMS
          auto v = pop_mark();
          auto& l = list(top())->items;
          l.insert(l.end(), v.begin(), v.end());
          break;
        }
        case 's': { Ref v = pop(), k = pop(); dict(top())->items.push_back(k), top()->items.push_back(v); break; }
        case 'u': {                                                                // SETITEMS
          auto v = pop_mark();
          if (v.size() % 2) bad("SETITEMS with an odd number of items");
          auto& d = dict(top())->items;
          d.insert(d.end(), v.begin(), v.end());
          break;
        }
        case 'q': memo_[u8()] = top(); break;                      // BINPUT
        case 'r': memo_[uint32_t(n(4))] = top(); break;            // LONG_BINPUT
        case 0x94: memo_[uint32_t(memo_.size())] = top(); break;   // MEMOIZE
        case 'h': push(get(u8())); break;                          // BINGET
        case 'j': push(get(uint32_t(n(4)))); break;                // LONG_BINGET
        case 'c': {                                                // GLOBAL "module\nname\n"
          std::string m = line(), nm = line();
          push(global(m + " " + nm));
          break;
        }
        case 0x93: {                                               // STACK_GLOBAL
          Ref nm = pop(), m = pop();
          if (nm->kind != Obj::Str || m->kind != Obj::Str) bad("STACK_GLOBAL without names");
          push(global(m->s + " " + nm->s));
          break;
        }
        case 'J': { auto o = make(Obj::Int); o->i = int32_t(uint32_t(n(4))); push(o); break; }
        case 'K': { auto o = make(Obj::Int); o->i = u8(); push(o); break; }
        case 'M': { auto o = make(Obj::Int); o->i = int64_t(n(2)); push(o); break; }
        case 0x8a: {                                               // LONG1
          const size_t len = u8();
          if (len > 8) bad("integer wider than 64 bits");
          uint64_t v = n(len);
          if (len && len < 8 && (v >> (8 * len - 1)) & 1) v |= ~uint64_t(0) << (8 * len);  // sign-extend
          auto o = make(Obj::Int);
          o->i = int64_t(v);
          push(o);
          break;
        }
        case 'N': push(make(Obj::None)); break;
        case 0x88: case 0x89: { auto o = make(Obj::Bool); o->i = op == 0x88; push(o); break; }
        case 'G': {                                                // BINFLOAT, big-endian
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | u8();
          auto o = make(Obj::Float);
          std::memcpy(&o->f, &v, 8);
          push(o);
          break;
        }
        case 'X': push(str(Obj::Str, n(4))); break;       // BINUNICODE
        case 0x8c: push(str(Obj::Str, u8())); break;      // SHORT_BINUNICODE
        case 0x8d: push(str(Obj::Str, n(8))); break;      // BINUNICODE8
        case 'T': push(str(Obj::Bytes, n(4))); break;     // BINSTRING
        case 'U': push(str(Obj::Bytes, u8())); break;     // SHORT_BINSTRING
        case 'B': push(str(Obj::Bytes, n(4))); break;     // BINBYTES
        case 'C': push(str(Obj::Bytes, u8())); break;     // SHORT_BINBYTES
        case 'Q': push(persistent(pop())); break;         // BINPERSID
        case 'R': { Ref args = pop(), fn = pop(); push(call(fn, args)); break; }   // REDUCE
        case 0x81: { Ref args = pop(), cls = pop(); push(call(cls, args)); break; }  // NEWOBJ
        case 'b': pop(); break;                           // BUILD: object state (e.g. _metadata) is not needed
        case '0': pop(); break;                           // POP
        case '1': pop_mark(); break;                      // POP_MARK
        case '2': push(top()); break;                     // DUP
        default: {
          char h[8];
          std::snprintf(h, sizeof h, "0x%02x", op);
          bad(std::string("pickle opcode ") + h + " is not one torch.save writes");
        }
      }
    }
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    fail(where_, why + " (at byte " + std::to_string(p_) + "; nothing was executed)");
  }
  uint8_t u8() {
    if (p_ >= b_.size()) bad("pickle ends early");
    return b_[p_++];
  }
  uint64_t n(size_t bytes) {
    uint64_t v = 0;
    for (size_t k = 0; k < bytes; ++k) v |= uint64_t(u8()) << (8 * k);
    return v;
  }
  std::string line() {
    std::string s;
    for (uint8_t c; (c = u8()) != '\n';) s += char(c);
    return s;
  }
  Ref str(Obj::Kind k, uint64_t len) {
    if (len > b_.size() - p_) bad("string runs past the end of the pickle");
    auto o = make(k);
    o->s.assign(reinterpret_cast<const char*>(&b_[p_]), size_t(len));
    p_ += size_t(len);
    return o;
  }
  void push(Ref r) { st_.push_back(std::move(r)); }
  Ref pop() {
    if (st_.empty()) bad("pickle stack underflow");
    Ref r = st_.back();
    st_.pop_back();
    return r;
  }
  Ref top() {
    if (st_.empty()) bad("pickle stack underflow");
    return st_.back();
  }
  std::vector<Ref> pop_mark() {
    size_t m = st_.size();
    while (m > 0 && st_[m - 1]->kind != Obj::Mark) --m;
    if (m == 0) bad("MARK missing");
    std::vector<Ref> v(st_.begin() + long(m), st_.end());
    st_.resize(m - 1);
    return v;
  }
  Ref get(uint32_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) bad("memo entry " + std::to_string(k) + " read before it was written");
    return it->second;
  }
  Ref list(Ref r) {
    if (r->kind != Obj::List) bad("APPEND to something that is not a list");
    return r;
  }
  Ref dict(Ref r) {
    if (r->kind != Obj::Dict) bad("SETITEM on something that is not a dict");
    return r;
  }
  static std::string storage_dtype(const std::string& g) {
    if (g == "torch FloatStorage") return "float32";
    if (g == "torch HalfStorage") return "float16";
    if (g == "torch BFloat16Storage") return "bfloat16";
    if (g == "torch DoubleStorage") return "float64";
    return "";
  }
  Ref global(const std::string& name) {
    static const char* allowed[] = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                                    "torch._utils _rebuild_parameter", "torch._utils _rebuild_parameter_with_state"};
    bool ok = !storage_dtype(name).empty();
    for (const char* a : allowed) ok = ok || name == a;
    if (!ok)
      fail(where_, "refers to the Python global '" + name + "', which a tensor checkpoint does not need; refusing to load " +
                       "it (nothing was executed)");
    auto g = make(Obj::Global);
    g->s = name;
    return g;
  }
  Ref persistent(Ref pid) {  // ('storage', torch.XStorage, key, location, numel)
    if (pid->kind != Obj::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Obj::Str || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != Obj::Global || pid->items[2]->kind != Obj::Str || pid->items[4]->kind != Obj::Int)
      bad("a persistent id that is not a tensor storage");
    auto s = make(Obj::Storage);
    s->s = storage_dtype(pid->items[1]->s);
    if (s->s.empty()) bad("storage type '" + pid->items[1]->s + "' is not supported (float32, float16, bfloat16, float64)");
    s->key = pid->items[2]->s;
    s->i = pid->items[4]->i;
    return s;
  }
  static std::vector<int64_t> ints(const Ref& t, const Unpickler& u) {
    if (t->kind != Obj::Tuple) u.bad("tensor size/stride is not a tuple");
    std::vector<int64_t> v;
    for (auto& x : t->items) {
      if (x->kind != Obj::Int) u.bad("tensor size/stride holds a non-integer");
      v.push_back(x->i);
    }
    return v;
  }
  Ref call(Ref fn, Ref args) {
    if (fn->kind != Obj::Global || args->kind != Obj::Tuple) bad("REDUCE on something that is not an allowed global");
    const auto& a = args->items;
    if (fn->s == "collections OrderedDict") return make(Obj::Dict);
    if (fn->s == "torch._utils _rebuild_tensor_v2") {  // (storage, offset, size, stride, requires_grad, hooks, ...)
      if (a.size() < 4 || a[0]->kind != Obj::Storage || a[1]->kind != Obj::Int) bad("_rebuild_tensor_v2 arguments");
      auto t = make(Obj::Tensor);
      t->items = {a[0]};
      t->i = a[1]->i;
      t->shape = ints(a[2], *this), t->stride = ints(a[3], *this);
      if (t->shape.size() != t->stride.size()) bad("tensor size and stride differ in rank");
      return t;
    }
    if (fn->s == "torch._utils _rebuild_parameter" || fn->s == "torch._utils _rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Obj::Tensor) bad("_rebuild_parameter without a tensor");
      return a[0];
    }
    bad("'" + fn->s + "' cannot be called");
  }

  std::string where_;
  const std::vector<uint8_t>& b_;
  size_t p_ = 0;
  std::vector<Ref> st_;
  std::map<uint32_t, Ref> memo_;
};

size_t element_size(const std::string& dtype) {
  return dtype == "float32" ? 4 : dtype == "float64" ? 8 : 2;
}

}  // namespace

std::vector<std::pair<std::string, TorchTensor>> read_torch_checkpoint(const std::string& path) {
  Zip zip(path);
  std::string prefix;
  for (auto& [name, e] : zip.entries())  // "<archive>/data.pkl": the archive folder is the file's stem
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0 &&
        (name.size() == 8 || name[name.size() - 9] == '/')) {
      prefix = name.substr(0, name.size() - 8);
      break;
    }
  if (!zip.entries().count(prefix + "data.pkl")) fail(path, "no data.pkl in the archive: not a torch.save checkpoint");
  if (auto it = zip.entries().find(prefix + "byteorder"); it != zip.entries().end()) {
    auto b = zip.read(it->second, 0, it->second.size);
    if (std::string(b.begin(), b.end()) != "little") fail(path, "tensors are stored big-endian; only little-endian is supported");
  }
  const ZipEntry& pkl = zip.entries().at(prefix + "data.pkl");
  const std::vector<uint8_t> bytes = zip.read(pkl, 0, pkl.size);
  Ref root = Unpickler(path + ": " + prefix + "data.pkl", bytes).run();
  if (root->kind != Obj::Dict) fail(path, "the checkpoint is not a dict of tensors");
  // A state_dict nested under "state_dict" or "model" (training checkpoints) is taken as well.
  bool has_tensor = false;
  for (size_t k = 1; k < root->items.size(); k += 2) has_tensor = has_tensor || root->items[k]->kind == Obj::Tensor;
  if (!has_tensor)
    for (size_t k = 0; k + 1 < root->items.size(); k += 2)
      if (root->items[k]->kind == Obj::Str && (root->items[k]->s == "state_dict" || root->items[k]->s == "model") &&
          root->items[k + 1]->kind == Obj::Dict) {
        root = root->items[k + 1];
        break;
      }
  std::vector<std::pair<std::string, TorchTensor>> out;
  for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
    const Ref &key = root->items[k], &val = root->items[k + 1];
    if (key->kind != Obj::Str || val->kind != Obj::Tensor) continue;  // e.g. a step counter next to the weights
    const std::string where = path + ": tensor '" + key->s + "'";
    const Obj& st = *val->items[0];
    int64_t numel = 1, expect = 1;
    for (size_t d = val->shape.size(); d-- > 0;) {
      if (val->shape[d] < 0) fail(where, "has a negative size");
      if (val->shape[d] != 1 && val->stride[d] != expect) fail(where, "is not contiguous (a view); save a .contiguous() copy");
      expect *= val->shape[d], numel *= val->shape[d];
    }
    if (val->i < 0 || val->i + numel > st.i) fail(where, "reaches past the end of its storage");
    auto it = zip.entries().find(prefix + "data/" + st.key);
    if (it == zip.entries().end()) fail(where, "its storage data/" + st.key + " is missing from the archive");
    const size_t es = element_size(st.s);
    if (uint64_t(st.i) * es > it->second.size) fail(where, "its storage file is shorter than the storage");
    auto raw = zip.read(it->second, uint64_t(val->i) * es, uint64_t(numel) * es);
    TorchTensor t;
    t.dtype = st.s, t.shape = val->shape;
    t.data.resize(size_t(numel));
    for (int64_t e = 0; e < numel; ++e) {
      const uint8_t* p = &raw[size_t(e) * es];
      if (es == 4) std::memcpy(&t.data[size_t(e)], p, 4);
      else if (es == 8) {
        double d;
        std::memcpy(&d, p, 8);
        t.data[size_t(e)] = float(d);
      } else {
        const uint16_t h = uint16_t(p[0] | (p[1] << 8));
        t.data[size_t(e)] = st.s == "bfloat16" ? bf16_to_f32(h) : f16_to_f32(h);
      }
    }
    out.emplace_back(key->s, std::move(t));
  }
  if (out.empty()) fail(path, "holds no tensors");
  return out;
}

}  // namespace sr
