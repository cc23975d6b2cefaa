// Decoder-only transformer of the Qwen2 family: embed -> L x [RMSNorm -> GQA attention (RoPE,
// optional q/k/v bias, per-layer full or sliding window) -> residual -> RMSNorm -> SwiGLU MLP ->
// residual] -> RMSNorm -> LM head (optionally tied to the embedding).
// Parameters live in one flat fp32 buffer (gradients in a second one with the same layout), so
// the optimizer, checkpoints and gradient clipping work on plain arrays.
// Backends: every array the forward/backward touches is a Buffer in the ops table's memory. On a
// device backend (CUDA) the host params() stay the copy for loading/saving: upload_params() after
// writing them, sync_params_to_host() before reading them after training on the device.
// Two forward paths share the same per-layer helpers:
//   * forward()/backward(): training on a [B,T] batch, activations kept for backward;
//   * forward_cached(): inference on one sequence, extending a KV cache (see infer/session.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "models/config.h"
#include "ops/ops.h"

namespace sr {

struct ParamSpec {
  std::string name;  // Hugging Face tensor name, e.g. model.layers.0.self_attn.q_proj.weight
  Shape shape;
  size_t offset = 0;  // in floats, into the flat parameter buffer
};

// Key/value cache of one attention layer for one sequence.
// Full attention: rows grow with the sequence. Sliding window W: a ring of W rows, token at
// absolute position p in slot p % W, so memory is fixed whatever the length.
// A Gated DeltaNet (linear_attention) layer keeps no keys: its cache is the conv state (the last
// K-1 inputs of the q, k, v convolutions) and the fp32 recurrent state [Hv, Dk, Dv], both constant
// in size whatever the length.
struct LayerKVCache {
  int window = 0;      // 0 = full
  int64_t n_seen = 0;  // tokens written so far (absolute position of the next token)
  Buffer<float> k, v;  // [rows, Hkv*D], post-RoPE keys, in the model backend's memory
  Buffer<float> conv_state, rec_state;  // linear_attention layers only: [2Kd+Vd, K-1], [Hv, Dk, Dv]
  bool operator==(const LayerKVCache& o) const = default;
};

class Transformer {
 public:
  explicit Transformer(const ModelConfig& cfg, const OpsTable* ops = nullptr);

  const ModelConfig& config() const { return cfg_; }
  const OpsTable& ops() const { return *ops_; }
  // Moves the model to another backend (parameters copied, gradients zeroed, activations dropped).
  void set_ops(const OpsTable* ops);
  bool on_device() const { return ops_->mem->device; }

  // ---- parameters ----
  size_t num_params() const { return params_.size(); }
  float* params() { return params_.data(); }  // host copy
  const float* params() const { return params_.data(); }
  void upload_params();        // host params() -> backend (no-op on the CPU)
  void sync_params_to_host() const;  // backend -> host params() (no-op on the CPU)
  float* backend_params() { return on_device() ? dparams_.data() : params_.data(); }
  float* grads() { return grads_.data(); }  // backend memory
  const std::vector<ParamSpec>& param_specs() const { return specs_; }
  const ParamSpec* find_param(const std::string& name) const;
  void init_random(uint64_t seed, float std = 0.02f);  // HF-style init (normal, norms = 1, biases = 0)
  void zero_grad();

  // ---- training ----
  // ids, targets, weights: [B,T]. targets < 0 or weight 0 -> no loss. Returns
  // sum_t w_t * loss_t / sum_t w_t (0 when all weights are 0). Keeps activations for backward().
  float forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T);
  // Accumulates d(loss * loss_scale)/d(params) into grads() for the last forward().
  void backward(float loss_scale = 1.0f);
  // Activation recomputation: forward() keeps only each layer's input (the residual stream) and
  // backward() recomputes one layer at a time, so activation memory is ~(L+1)*N*C plus one layer
  // instead of ~L*N*(6C + 3F + ...): what lets a 64k-token sequence train in GPU memory, for
  // about one extra forward pass of compute. Same results as without (deterministic kernels).
  void set_recompute(bool on) { recompute_ = on, act_ = Activations{}; }
  bool recompute() const { return recompute_; }
  // [B*T, V] logits of the last forward() (host copy); only when the batch's logits fit in one
  // LM-head chunk (see kLogitsChunkFloats), which holds for the small batches tests use.
  std::vector<float> last_logits() const;
  static constexpr size_t kLogitsChunkFloats = size_t(1) << 27;  // 512 MiB of fp32 logits at a time
  double last_weight_sum() const { return weight_sum_; }

  // ---- inference ----
  // Runs n tokens of one sequence at positions caches[*].n_seen .. +n, appending to the caches.
  // logits_out: [n, V] when all_logits, else [V] for the last token only.
  void forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                      bool all_logits) const;
  std::vector<LayerKVCache> empty_caches() const;

 private:
  struct LayerParams {  // pointers into a flat buffer (params or grads)
    float *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *ln2, *wg, *wu, *wd;
    // linear_attention (Gated DeltaNet, Qwen3.5 names): in_proj_qkv rows [q | k | v], conv1d [2Kd+Vd, K]
    float *qkv, *wz, *wb, *wa, *conv, *dt_bias, *A_log, *gnorm, *wout;
  };
  struct GdnActs {  // one linear_attention layer's saved activations (pointers into Activations)
    float *qp, *kp, *vp, *qn, *kn, *vc, *rq, *rk, *z, *a, *b, *g, *beta, *o, *rstd, *on;
  };
  // Carves GdnActs for N tokens out of N * gdn_floats_per_token() floats at p.
  GdnActs carve_gdn(float* p, size_t N) const;
  struct Activations {  // training activations, sized for the current [B,T], backend memory
    int N = 0, logit_rows = 0;       // logit_rows: rows of logits computed at a time (LM-head chunk)
    Buffer<float> res;               // [L+1, N, C] residual stream entering each layer (+ final)
    Buffer<float> h1, rstd1, q, k, v, att, lse, xmid, h2, rstd2, g, u, a;  // per layer, concatenated
    Buffer<float> hf, rstdf, logits, lse_x, loss, tmp;
    Buffer<float> gdn;         // linear_attention activations, one GdnActs block per slot
    Buffer<float> gdn_state;   // zero initial states [B, Hv, Dk, Dv] (a training sequence starts empty)
    Buffer<int32_t> ids, targets, pos;
    std::vector<int32_t> host_targets;
    std::vector<float> host_weights;
  };

  struct Workspace {  // backward temporaries, backend memory
    Buffer<float> g, dlogits, dx, dh, dtmp, dF1, dF2, dF3, dq, dk, dv, datt;
    Buffer<float> gdn, gdn_state;  // linear_attention layers
  };
  LayerParams layer(float* base, int l) const;
  // Resizes b to n elements in this model's backend memory (reallocating after a backend change).
  template <class T>
  void fit(Buffer<T>& b, size_t n) const;
  // LM head + cross-entropy over rows [r0, r0+rows) of the final hidden state into A.logits.
  void lm_head_rows(int r0, int rows);
  // Pointers to activation slot `slot` (= the layer, or 0 for every layer under recompute).
  struct LayerActs {
    float *h1, *rstd1, *q, *k, *v, *att, *lse, *xmid, *h2, *rstd2, *g, *u, *a;
  };
  LayerActs layer_acts(int slot);
  // Layer l of the training forward: reads res[l], fills the slot's activations and (when
  // write_out) res[l+1].
  void layer_forward(int l, int slot, bool write_out);
  // Gated DeltaNet sizes and pieces
  size_t gdn_floats_per_token() const;  // saved activations per token of one layer
  GdnActs gdn_acts(int slot);
  // mixer forward of a linear_attention layer on [B,T] rows of h (normed input); conv/rec states
  // null = start empty (training), else advanced in place (inference). Writes out[N, C].
  void gdn_forward(const LayerParams& w, const GdnActs& t, const float* h, int B, int T, float* conv_state,
                   float* rec_state, float* out) const;
  void gdn_backward(const LayerParams& w, const LayerParams& gw, const GdnActs& t, const float* h, const float* dmix,
                    float* dh, float* dtmp);
  size_t add_param(const std::string& name, const Shape& shape);
  const float* lm_head(const float* base) const { return base + off_lm_head_; }
  AttnShape attn_shape(int B, int Tq, int Tk, int layer) const;
  // Shared helpers of both paths.
  void project_qkv(const LayerParams& w, const float* h, int N, const int32_t* pos, float* q, float* k, float* v) const;
  void mlp_forward(const LayerParams& w, const float* h2, int N, float* g, float* u, float* a, float* out) const;

  ModelConfig cfg_;
  const OpsTable* ops_;
  std::vector<ParamSpec> specs_;
  mutable std::vector<float> params_;  // host copy (the backend's own when it is the CPU)
  Buffer<float> dparams_, grads_;  // device parameters (device backends only); gradients
  size_t off_embed_ = 0, off_norm_ = 0, off_lm_head_ = 0;
  std::vector<size_t> layer_off_;  // start of each layer's block
  Activations act_;
  Workspace work_;
  double weight_sum_ = 0;
  bool recompute_ = false;
  int B_ = 0, T_ = 0;
};

}  // namespace sr
