#include "models/language_model.h"

#include "core/error.h"
#include "models/rwkv7.h"
#include "models/transformer.h"

namespace sr {

size_t LanguageModel::add_param(const std::string& name, const Shape& shape) {
  size_t off = specs_.empty() ? 0 : specs_.back().offset + size_t(shape_numel(specs_.back().shape));
  specs_.push_back({name, shape, off});
  return off;
}

void LanguageModel::finish_params(const OpsTable* ops) {
  size_t total = specs_.empty() ? 0 : specs_.back().offset + size_t(shape_numel(specs_.back().shape));
  params_.resize(total);  // uninitialized: init_random() or the loader writes every element
  ops_ = &ops_cpu();
  set_ops(ops ? ops : &ops_cpu());
}

LanguageModel::~LanguageModel() { release_weight_mirror(); }

void LanguageModel::release_weight_mirror() {
  if (on_device() && ops_->mirror_weights && dparams_.size()) ops_->mirror_weights(dparams_.data(), 0);
}

void LanguageModel::set_ops(const OpsTable* ops) {
  check_backend(*ops);
  sync_params_to_host();  // a device model's latest parameters move with it
  release_weight_mirror();
  drop_decode_weights();
  ops_ = ops;
  drop_activations();
  dparams_ = Buffer<float>(ops->mem, on_device() ? params_.size() : 0);
  upload_params();
  grads_ = Buffer<float>(ops->mem);  // allocated by grads() on first use
}

void LanguageModel::set_decode_weights(const std::string& dtype) {
  if (dtype != "fp32" && dtype != "bf16") fail("--decode-weights", "expected fp32 or bf16, got '" + dtype + "'");
  drop_decode_weights();
  if (dtype == "fp32") return;
  if (!ops_->linear_fwd_bf16w) fail("--decode-weights", std::string("no bf16-weight kernel on ") + ops_->name);
  const float* P = backend_params();
  const size_t n = params_.size();
  if (on_device()) {  // the backend's bf16 weight mirror, kept current by training: no copy here
    decode_w16_ = ops_->weight_mirror_of ? ops_->weight_mirror_of(P, n) : nullptr;
    if (!decode_w16_)
      fail("--decode-weights", std::string("the ") + ops_->name + " backend keeps no bf16 copy of the weights");
    return;
  }
  decode_bf16_.resize(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) decode_bf16_[i] = bf16_round(P[i]);
  decode_w16_ = decode_bf16_.data();
}

void LanguageModel::drop_decode_weights() {
  decode_bf16_.clear();
  decode_w16_ = nullptr;
}

const uint16_t* LanguageModel::decode_copy(const float* W, int N) const {
  if (N > 4 || !decode_w16_) return nullptr;
  return decode_w16_ + (W - const_cast<LanguageModel*>(this)->backend_params());
}

void LanguageModel::linear(float* out, const float* x, const float* W, const float* b, int N, int I, int O,
                           bool cached) const {
  const uint16_t* W16 = cached ? decode_copy(W, N) : nullptr;
  if (W16) {
    ops_->linear_fwd_bf16w(out, x, W16, b, N, I, O);
  } else {
    ops_->linear_fwd(out, x, W, b, N, I, O);
  }
}

bool LanguageModel::linear_swiglu(float* out, const float* x, const float* W, int N, int I, int F) const {
  if (const uint16_t* W16 = decode_copy(W, N)) {
    if (!ops_->linear_swiglu_fwd_bf16w) return false;
    ops_->linear_swiglu_fwd_bf16w(out, x, W16, N, I, F);
    return true;
  }
  if (!ops_->linear_swiglu_fwd) return false;
  ops_->linear_swiglu_fwd(out, x, W, N, I, F);
  return true;
}

void LanguageModel::run_cached_step(int n, const std::function<std::vector<uintptr_t>()>& key,
                                    const std::function<void()>& body) const {
  if (n == 1 && ops_->run_captured) ops_->run_captured(key(), body);
  else body();
}

void LanguageModel::upload_params() {
  if (!on_device()) return;
  dparams_.upload(params_.data(), params_.size());
  if (ops_->mirror_weights && dparams_.size()) ops_->mirror_weights(dparams_.data(), dparams_.size());
}

void LanguageModel::sync_params_to_host() const {
  if (on_device()) dparams_.download(params_.data(), params_.size());
}

const ParamSpec* LanguageModel::find_param(const std::string& name) const {
  for (auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

void LanguageModel::check_ids(const int32_t* ids, const int32_t* targets, int n, const char* where) const {
  const int V = cfg_.vocab_size;
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      fail(where, "token id " + std::to_string(ids[i]) + " outside vocabulary of " + std::to_string(V));
    if (targets && targets[i] >= V)
      fail(where, "target id " + std::to_string(targets[i]) + " outside vocabulary of " + std::to_string(V));
  }
}

double LanguageModel::loss_weight_sum(const int32_t* targets, const float* weights, int N) {
  double den = 0;
  for (int i = 0; i < N; ++i)
    if (targets[i] >= 0) den += weights[i];
  return den;
}

float LanguageModel::reduce_loss(const std::vector<float>& loss, const int32_t* targets, const float* weights, int N) {
  double num = 0;
  for (int i = 0; i < N; ++i)
    if (targets[i] >= 0) num += double(weights[i]) * loss[i];
  const double den = weight_sum_ = loss_weight_sum(targets, weights, N);
  return den > 0 ? float(num / den) : 0.0f;
}

void LanguageModel::upload_loss_grad(Buffer<float>& g, const std::vector<float>& weights, float loss_scale) const {
  const size_t N = weights.size();
  std::vector<float> h(N, 0.0f);
  if (weight_sum_ > 0)
    for (size_t i = 0; i < N; ++i) h[i] = float(loss_scale * weights[i] / weight_sum_);
  g.upload(h.data(), N);
}

std::unique_ptr<LanguageModel> make_model(const ModelConfig& cfg, const OpsTable* ops) {
  if (cfg.is_rwkv7()) return std::make_unique<Rwkv7>(cfg, ops);
  return std::make_unique<Transformer>(cfg, ops);
}

float* LanguageModel::begin_backward_grads() {
  float* G = grads_unzeroed();
  grad_writes_.begin(G, grads_.size(), grads_.mem(), grad_zero_deferred_);
  grad_zero_deferred_ = false;
  return G;
}

void LanguageModel::linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W,
                               int N, int I, int O, bool add_dx) {
  const int flags = (add_dx ? kAddDx : 0) | (dW ? grad_writes_.dw_flags(dW, size_t(O) * I) : 0);
  ops_->linear_bwd(dx, dW, db, dout, x, W, N, I, O, flags);
}

}  // namespace sr
