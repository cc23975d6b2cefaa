// The engine's model interface. Every architecture (models/transformer.h: the Qwen2 family with
// attention and Gated DeltaNet layers; models/rwkv7.h: RWKV-7) keeps its parameters in one flat
// fp32 buffer (gradients in a second one with the same layout), so the optimizer, checkpoints and
// gradient clipping work on plain arrays, and exposes the same two paths:
//   * forward()/backward(): training on a [B,T] batch, activations kept for backward;
//   * forward_cached(): inference on one sequence, extending per-layer caches (see infer/session.h).
// Backends: every array the forward/backward touches is a Buffer in the ops table's memory. On a
// device backend (CUDA) the host params() stay the copy for loading/saving: upload_params() after
// writing them, sync_params_to_host() before reading them after training on the device.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "models/config.h"
#include "models/grad_first_write.h"
#include "ops/ops.h"

namespace sr {

// std::allocator without value-initialization on resize (vector<T, NoInitAllocator<T>>).
template <class T>
struct NoInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <class U>
  NoInitAllocator(const NoInitAllocator<U>&) {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};

struct ParamSpec {
  std::string name;  // Hugging Face tensor name, e.g. model.layers.0.self_attn.q_proj.weight
  Shape shape;
  size_t offset = 0;  // in floats, into the flat parameter buffer
};

// Inference state of one layer for one sequence.
// Full attention: k/v rows grow with the sequence. Sliding window W: a ring of W rows, token at
// absolute position p in slot p % W, so memory is fixed whatever the length.
// Gated DeltaNet (linear_attention): no keys; conv_state = the last K-1 inputs of the q, k, v
// convolutions [2Kd+Vd, K-1], rec_state = the fp32 recurrent state [Hv, Dk, Dv].
// RWKV-7: conv_state = the two token-shift vectors [2, C] (time mix, channel mix), rec_state = the
// fp32 wkv state [H, N, N] (key-major, as the gated delta rule's).
// Recurrent layers are constant in size whatever the length.
struct LayerKVCache {
  int window = 0;      // 0 = full
  int64_t n_seen = 0;  // tokens written so far (absolute position of the next token)
  Buffer<float> k, v;  // [rows, Hkv*D], post-RoPE keys, in the model backend's memory
  Buffer<float> conv_state, rec_state;
  bool operator==(const LayerKVCache& o) const = default;
};

class LanguageModel {
 public:
  virtual ~LanguageModel();
  LanguageModel(const LanguageModel&) = delete;
  LanguageModel& operator=(const LanguageModel&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const OpsTable& ops() const { return *ops_; }
  // Moves the model to another backend (parameters copied, gradients zeroed, activations dropped).
  void set_ops(const OpsTable* ops);
  bool on_device() const { return ops_->mem->device; }

  // ---- parameters ----
  size_t num_params() const { return params_.size(); }
  float* params() { return params_.data(); }  // host copy
  const float* params() const { return params_.data(); }
  void upload_params();              // host params() -> backend (no-op on the CPU)
  void sync_params_to_host() const;  // backend -> host params() (no-op on the CPU)
  float* backend_params() { return on_device() ? dparams_.data() : params_.data(); }
  // Gradients (backend memory), allocated on first use: an inference-only model never pays for them.
  // (Zeroed first when zero_grad() left the zeroing to a backward() that has not run yet.)
  float* grads() {
    float* G = grads_unzeroed();
    if (grad_zero_deferred_) grads_.zero(), grad_zero_deferred_ = false;
    return G;
  }
  const std::vector<ParamSpec>& param_specs() const { return specs_; }
  const ParamSpec* find_param(const std::string& name) const;
  // bytes of gradient the last lazily zeroed backward() zeroed (the rest it set)
  size_t grad_bytes_zeroed() const { return grad_writes_.bytes_zeroed(); }
  virtual void init_random(uint64_t seed, float std = 0.02f) = 0;
  // Zeroes the gradients. With first-write gradients on (the default), the next backward() zeroes
  // only what it does not set with its first product (GradFirstWrite), unless grads() is asked
  // for before it.
  void zero_grad() {
    grads_unzeroed();
    if (first_write_grads_) grad_zero_deferred_ = true;
    else grads_.zero(), grad_zero_deferred_ = false;
  }
  // First-write gradients on / off (off: zero_grad() memsets every gradient; for A/B benchmarks).
  void set_first_write_grads(bool on) { first_write_grads_ = on; }

  // ---- training ----
  // ids, targets, weights: [B,T]. targets < 0 or weight 0 -> no loss. Returns
  // sum_t w_t * loss_t / sum_t w_t (0 when all weights are 0). Keeps activations for backward().
  virtual float forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) = 0;
  // Accumulates d(loss * loss_scale)/d(params) into grads() for the last forward().
  virtual void backward(float loss_scale = 1.0f) = 0;
  // forward() then backward(loss_scale), the same loss and gradients bit for bit; a model may fold
  // work of the backward into the forward (the Transformer runs its LM head's backward chunk by
  // chunk while the logits are at hand, instead of computing them again). The trainer's step.
  virtual float forward_backward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T,
                                 float loss_scale = 1.0f) {
    const float loss = forward(ids, targets, weights, B, T);
    backward(loss_scale);
    return loss;
  }
  // Activation recomputation: forward() keeps only each layer's input (the residual stream) and
  // backward() recomputes one layer at a time (same results, ~one extra forward of compute).
  void set_recompute(bool on) { recompute_ = on, drop_activations(); }
  bool recompute() const { return recompute_; }
  // [B*T, V] logits of the last forward() (host copy), when they were kept whole.
  virtual std::vector<float> last_logits() const = 0;
  double last_weight_sum() const { return weight_sum_; }
  static constexpr size_t kLogitsChunkFloats = size_t(1) << 27;  // 512 MiB of fp32 logits at a time
  // On a device backend: 2 GiB. Each chunk adds its share of the LM head's weight gradient into the
  // [V, C] fp32 gradient (a read and a write of it), so fewer chunks move fewer bytes: 1.045x on a
  // 0.5b step of 8 x 4k tokens on an H200 against 512 MiB (docs/PERF.md), for 3 GiB more there.
  static constexpr size_t kLogitsChunkFloatsDevice = size_t(1) << 29;
  // fp32 logits a training forward holds at a time (the LM head runs in chunks of rows; at least
  // one row a chunk); 0 = by backend (kLogitsChunkFloats, kLogitsChunkFloatsDevice: the default).
  void set_logits_chunk_floats(size_t n) { logits_chunk_floats_ = n, drop_activations(); }
  size_t logits_chunk_floats() const {
    return logits_chunk_floats_ ? logits_chunk_floats_ : ops_->mem->device ? kLogitsChunkFloatsDevice : kLogitsChunkFloats;
  }

  // ---- inference ----
  // Runs n tokens of one sequence at positions caches[*].n_seen .. +n, appending to the caches.
  // logits_out: [n, V] when all_logits, else [V] for the last token only.
  virtual void forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                              bool all_logits) const = 0;
  virtual std::vector<LayerKVCache> empty_caches() const = 0;
  // Weights that forward_cached() reads for decode-size calls (up to 4 tokens): "fp32" (the
  // parameters themselves) or "bf16" (half the bytes per decoded token, outputs within bf16
  // rounding of fp32): on the CPU a rounded copy made now, on CUDA the backend's weight mirror
  // (OpsTable::weight_mirror_of). An inference setting: backward() and set_ops() drop it.
  void set_decode_weights(const std::string& dtype);

 protected:
  explicit LanguageModel(const ModelConfig& cfg) : cfg_(cfg), ops_(&ops_cpu()) {}
  size_t add_param(const std::string& name, const Shape& shape);
  // After the last add_param(): allocates the parameters and moves to `ops` (null = CPU).
  void finish_params(const OpsTable* ops);
  // Frees the backend's bf16 copy of the weights (OpsTable::mirror_weights), if it keeps one.
  void release_weight_mirror();
  // Drops activations and workspaces (backend change, recompute switch).
  virtual void drop_activations() = 0;
  // Fails with a clear error when the backend lacks a kernel this model needs.
  virtual void check_backend(const OpsTable&) const {}
  // Resizes b to n elements in this model's backend memory (reallocating after a backend change).
  template <class T>
  void fit(Buffer<T>& b, size_t n) const {
    if (b.mem() != ops_->mem) b = Buffer<T>(ops_->mem, n);
    else b.resize(n);
  }
  // out[N,O] = x W^T + b for W in the backend parameters; in forward_cached (cached) calls of up to
  // 4 rows read the bf16 weights of set_decode_weights("bf16") when it chose them.
  void linear(float* out, const float* x, const float* W, const float* b, int N, int I, int O, bool cached) const;
  // out[N,F] = silu(x W_g^T) * (x W_u^T) for W = [W_g; W_u] ([2F, I], adjacent in the parameters) in
  // one fused op (OpsTable::linear_swiglu_fwd, with the bf16 decode weights when chosen), for
  // forward_cached; false (nothing done) where the backend has no such op.
  bool linear_swiglu(float* out, const float* x, const float* W, int N, int I, int F) const;
  // The bf16 copy of the weights W (backend parameters) that a decode call of N rows reads, or null
  // (fp32 decode weights, or more than 4 rows).
  const uint16_t* decode_copy(const float* W, int N) const;
  // Runs the device work of a forward_cached() call of n tokens: a decode step (n = 1) as one
  // captured graph where the backend offers it (OpsTable::run_captured), anything else as it is.
  // body: device work only (host bookkeeping such as n_seen goes outside: a replayed step skips
  // body); key(): what that work depends on (step_key()), so an equal key may replay the last graph;
  // called only where the step can run as a graph.
  void run_cached_step(int n, const std::function<std::vector<uintptr_t>()>& key,
                       const std::function<void()>& body) const;
  // A decode step's key: what every model shares (the model, the backend, the token count, which
  // logits rows, the parameters, the decode weights), then the addresses of `buffers`.
  std::vector<uintptr_t> step_key(int n, int first_logit_row, std::initializer_list<const void*> buffers) const {
    std::vector<uintptr_t> k = {uintptr_t(this), uintptr_t(ops_), uintptr_t(n), uintptr_t(first_logit_row),
                                uintptr_t(const_cast<LanguageModel*>(this)->backend_params()), uintptr_t(decode_w16_)};
    for (const void* b : buffers) k.push_back(uintptr_t(b));
    return k;
  }
  std::vector<uint16_t> decode_bf16_;    // CPU: bf16 copy of the parameters, or empty
  const uint16_t* decode_w16_ = nullptr;  // bf16 weights decode reads (decode_bf16_ or the device
                                          // mirror; same layout as the parameters), or null = fp32
  void drop_decode_weights();             // back to fp32 decode weights
  // Errors for token ids outside the vocabulary (targets may be < 0 = no loss); `where` names the caller.
  void check_ids(const int32_t* ids, const int32_t* targets, int n, const char* where) const;
  // The weighted mean of per-token losses (sets last_weight_sum()).
  float reduce_loss(const std::vector<float>& loss, const int32_t* targets, const float* weights, int N);
  // sum(w_t) over the tokens with a target (reduce_loss's denominator, in its order)
  static double loss_weight_sum(const int32_t* targets, const float* weights, int N);
  // dL/dloss_t = scale * w_t / sum(w), uploaded into g[N].
  void upload_loss_grad(Buffer<float>& g, const std::vector<float>& weights, float loss_scale) const;

  ModelConfig cfg_;
  const OpsTable* ops_;
  std::vector<ParamSpec> specs_;
  // host copy (the backend's own when it is the CPU); not zero-filled on allocation (every element
  // is written by init_random() or the loader), so a large checkpoint loads in one pass
  mutable std::vector<float, NoInitAllocator<float>> params_;
  Buffer<float> dparams_, grads_;      // device parameters (device backends only); gradients
  // backward()'s gradients: starts GradFirstWrite's bookkeeping (zeroing what it will not set)
  float* begin_backward_grads();
  float* grads_unzeroed() {  // allocated (zeroed) on first use, as they are
    if (grads_.size() != params_.size()) grads_.resize(params_.size()), grads_.zero(), grad_zero_deferred_ = false;
    return grads_.data();
  }
  // ops_->linear_bwd, with dW set by its first product when this backward zeroes lazily
  void linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I,
                  int O, bool add_dx);
  // before an op other than linear_bwd adds into gradients a linear_bwd may also write (a tied embedding)
  void adding_to_grads(const float* g, size_t n) { grad_writes_.adding(g, n); }
  void end_backward_grads() { grad_writes_.end(); }
  GradFirstWrite grad_writes_;
  size_t logits_chunk_floats_ = 0;  // 0: by backend (logits_chunk_floats())
  bool first_write_grads_ = true, grad_zero_deferred_ = false;
  double weight_sum_ = 0;
  bool recompute_ = false;
};

// The model for cfg.model_type ("rwkv7" -> Rwkv7, otherwise Transformer), on `ops` (null = CPU).
std::unique_ptr<LanguageModel> make_model(const ModelConfig& cfg, const OpsTable* ops = nullptr);

}  // namespace sr
