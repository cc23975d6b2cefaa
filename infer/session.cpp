#include "infer/session.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/io.h"

namespace sr {

Session::Session(const LanguageModel& model, SamplingParams sampling)
    : model_(model), sampling_(sampling), rng_(sampling.seed) {
  state_.caches = model.empty_caches();
  state_.rng = rng_.state();
}

const std::vector<float>& Session::prefill(const std::vector<int32_t>& ids, std::vector<float>* all_logits) {
  if (ids.empty()) return state_.logits;
  const int V = model_.config().vocab_size, n = int(ids.size());
  if (all_logits) all_logits->resize(size_t(n) * V);
  state_.logits.resize(V);
  for (int b = 0; b < n; b += prefill_batch_) {  // piece [b, e): one forward into the caches
    const int e = std::min(n, b + prefill_batch_);
    if (all_logits) model_.forward_cached(ids.data() + b, e - b, state_.caches, all_logits->data() + size_t(b) * V, true);
    else model_.forward_cached(ids.data() + b, e - b, state_.caches, state_.logits.data(), false);
  }
  if (all_logits) state_.logits.assign(all_logits->end() - V, all_logits->end());
  return state_.logits;
}

void Session::set_prefill_batch(int tokens) {
  if (tokens < 1) fail("prefill batch", "must be >= 1 token, got " + std::to_string(tokens));
  prefill_batch_ = tokens;
}

int32_t Session::sample() {
  if (state_.logits.empty()) fail("session", "decode before any prefill: feed at least one token first");
  rng_.set_state(state_.rng);
  int32_t t = sample_token(state_.logits.data(), int(state_.logits.size()), sampling_, rng_);
  state_.rng = rng_.state();
  return t;
}

int32_t Session::decode() {
  int32_t t = sample();
  prefill({t});
  return t;
}

std::vector<int32_t> Session::generate(int max_tokens, int32_t stop_id) {
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    int32_t t = sample();
    out.push_back(t);
    if (t == stop_id) break;  // the stop token is returned but not fed
    prefill({t});
  }
  return out;
}

size_t Session::state_bytes() const {
  size_t b = 0;
  for (auto& c : state_.caches)
    b += (c.k.capacity() + c.v.capacity() + c.conv_state.capacity() + c.rec_state.capacity()) * sizeof(float);
  return b;
}

void Session::restore(const State& s) {
  if (s.caches.size() != state_.caches.size()) fail("session", "restore: state has a different layer count");
  state_ = s;
}

// Format: "SRSTATE2", u32 layers, per layer {i32 window, i64 n_seen, u64 nk, nk floats, u64 nv, nv floats,
// u64 nconv, nconv floats, u64 nrec, nrec floats}, u64 nlogits, floats, 4 x u64 rng.
// ("SRSTATE1" files, written before linear_attention layers existed, lack the conv/rec arrays.)
void Session::save_state(const std::string& path) const {
  std::string out = "SRSTATE2";
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  uint32_t L = uint32_t(state_.caches.size());
  put(&L, 4);
  for (auto& c : state_.caches) {
    int32_t w = c.window;
    put(&w, 4);
    put(&c.n_seen, 8);
    uint64_t nk = c.k.size(), nv = c.v.size();
    auto hk = c.k.to_vector(), hv = c.v.to_vector();
    put(&nk, 8), put(hk.data(), nk * 4), put(&nv, 8), put(hv.data(), nv * 4);
    for (const Buffer<float>* buf : {&c.conv_state, &c.rec_state}) {
      auto h = buf->to_vector();
      uint64_t n = h.size();
      put(&n, 8), put(h.data(), n * 4);
    }
  }
  uint64_t nl = state_.logits.size();
  put(&nl, 8), put(state_.logits.data(), nl * 4), put(state_.rng.data(), 32);
  write_file_atomic(path, out);
}

void Session::load_state(const std::string& path) {
  std::string in = read_file(path);
  size_t at = 8;
  auto get = [&](void* p, size_t n) {
    if (at + n > in.size()) fail(path, "truncated session state file");
    std::memcpy(p, in.data() + at, n);
    at += n;
  };
  const bool v2 = in.size() >= 8 && in.compare(0, 8, "SRSTATE2") == 0;
  if (!v2 && (in.size() < 8 || in.compare(0, 8, "SRSTATE1") != 0)) fail(path, "not a smoothread session state file");
  State s;
  uint32_t L;
  get(&L, 4);
  if (L != state_.caches.size()) fail(path, "state has " + std::to_string(L) + " layers, the model has " + std::to_string(state_.caches.size()));
  s.caches.resize(L);
  for (uint32_t l = 0; l < L; ++l) {
    LayerKVCache& c = s.caches[l];
    int32_t w;
    get(&w, 4);
    if (w != state_.caches[l].window) fail(path, "layer " + std::to_string(l) + " window differs from the model's");
    c.window = w;
    get(&c.n_seen, 8);
    uint64_t nk, nv;
    get(&nk, 8);
    if (nk > in.size()) fail(path, "corrupt state (key count)");
    std::vector<float> host(nk);
    get(host.data(), nk * 4);
    c.k = Buffer<float>(state_.caches[l].k.mem()), c.k.assign(host.data(), nk);
    get(&nv, 8);
    if (nv > in.size()) fail(path, "corrupt state (value count)");
    host.resize(nv);
    get(host.data(), nv * 4);
    c.v = Buffer<float>(state_.caches[l].v.mem()), c.v.assign(host.data(), nv);
    c.conv_state = Buffer<float>(state_.caches[l].conv_state.mem());
    c.rec_state = Buffer<float>(state_.caches[l].rec_state.mem());
    for (Buffer<float>* buf : {&c.conv_state, &c.rec_state}) {
      uint64_t n = 0;
      if (v2) get(&n, 8);
      if (n > in.size()) fail(path, "corrupt state (recurrent state size)");
      host.resize(n);
      get(host.data(), n * 4);
      buf->assign(host.data(), n);
    }
    if (c.conv_state.size() != state_.caches[l].conv_state.size() || c.rec_state.size() != state_.caches[l].rec_state.size())
      fail(path, "layer " + std::to_string(l) + " recurrent state size differs from the model's");
  }
  uint64_t nl;
  get(&nl, 8);
  if (nl > in.size()) fail(path, "corrupt state (logits)");
  s.logits.resize(nl), get(s.logits.data(), nl * 4), get(s.rng.data(), 32);
  state_ = std::move(s);
}

}  // namespace sr
