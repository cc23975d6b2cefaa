// Decoder-only transformer of the Qwen2 family: embed -> L x [RMSNorm -> mixer -> residual ->
// RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head (optionally tied to the embedding).
// The mixer of each layer is GQA attention (RoPE, optional q/k/v bias, full or sliding window) or
// a Gated DeltaNet layer in the Qwen3.5 layout (linear_attention).
// Parameters, backends and the two forward paths: models/language_model.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/language_model.h"

namespace sr {

class Transformer : public LanguageModel {
 public:
  explicit Transformer(const ModelConfig& cfg, const OpsTable* ops = nullptr);
  ~Transformer() override { drop_bf16_activations(); }

  void init_random(uint64_t seed, float std = 0.02f) override;  // HF-style init (normal, norms = 1, biases = 0)
  float forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) override;
  void backward(float loss_scale = 1.0f) override;
  float forward_backward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T,
                         float loss_scale = 1.0f) override;
  // Only when the batch's logits fit in one LM-head chunk (kLogitsChunkFloats), as in tests.
  std::vector<float> last_logits() const override;
  void forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                      bool all_logits) const override;
  std::vector<LayerKVCache> empty_caches() const override;

 protected:
  void drop_activations() override {
    drop_bf16_activations();
    act_ = Activations{}, work_ = Workspace{};
  }
  void check_backend(const OpsTable& ops) const override;

 private:
  struct LayerParams {  // pointers into a flat buffer (params or grads)
    float *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *qn, *kn, *ln2, *wg, *wu, *wd;  // qn, kn: q/k norms (Qwen3)
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
    int logits_r0 = -1;              // the first row of the chunk whose logits `logits` holds (-1: none)
    Buffer<float> res;               // [L+1, N, C] residual stream entering each layer (+ final)
    Buffer<float> h1, rstd1, q, k, v, att, lse, xmid, h2, rstd2, g, u, a;  // per layer, concatenated
    Buffer<float> hf, rstdf, logits, lse_x, loss, tmp;
    Buffer<float> gdn;         // linear_attention activations, one GdnActs block per slot
    Buffer<float> qx;          // Qwen3/3.5 attention extras, one QxActs block per slot
    Buffer<float> gdn_state;   // zero initial states [B, Hv, Dk, Dv] (a training sequence starts empty)
    Buffer<int32_t> ids, targets, pos;
    std::vector<int32_t> host_targets;
    std::vector<float> host_weights;
  };

  struct Workspace {  // backward temporaries, backend memory
    Buffer<float> g, dlogits, dx, dh, dF1, dF2, dF3, dq, dk, dv, datt;
    Buffer<float> gdn, gdn_state;  // linear_attention layers
    Buffer<float> qx;              // Qwen3/3.5 attention backward temporaries
  };
  LayerParams layer(float* base, int l) const;
  // LM head + cross-entropy over rows [r0, r0+rows) of the final hidden state into A.logits.
  void lm_head_rows(int r0, int rows);
  // The LM head's backward: head_backward_begin sizes the gradient workspace, uploads the loss
  // gradient and starts the backward's gradient writes (returns the gradient buffer);
  // head_backward_rows runs cross-entropy's backward and the head's two products for rows
  // [r0, r0 + rows), whose logits `logits` holds. forward_backward() runs them in the forward.
  float* head_backward_begin(float loss_scale);
  void head_backward_rows(float* G, int r0, int rows);
  bool head_in_forward_ = false;  // set by forward_backward while its forward runs
  float head_scale_ = 1;          // ... with its loss scale
  float* head_done_ = nullptr;    // the gradients whose LM-head part the last forward wrote, or null
  // Pointers to activation slot `slot` (= the layer, or 0 for every layer under recompute).
  struct LayerActs {
    float *h1, *rstd1, *q, *k, *v, *att, *lse, *xmid, *h2, *rstd2, *g, *u, *a;
  };
  LayerActs layer_acts(int slot);
  // Qwen3/3.5 attention extras of one slot: gate (pre-sigmoid) and attg (gated output) [N, Hq*D]
  // with the output gate; q/k before their norms and the norms' rstd with q/k norms (else null).
  struct QxActs {
    float *gate, *attg, *qpre, *kpre, *rq, *rk;
  };
  size_t qx_floats_per_token() const;
  QxActs qx_acts(int slot);
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
                    float* dh);
  const float* lm_head(const float* base) const { return base + off_lm_head_; }
  AttnShape attn_shape(int B, int Tq, int Tk, int layer) const;
  // Shared helpers of both paths.
  // q[N,Hq*D], k,v[N,Hkv*D] from h[N,C]: projections, q/k norms, RoPE (partial when rotary_dim);
  // with the output gate also gate[N,Hq*D] (pre-sigmoid). scratch: [N, 2*Hq*D] when the config
  // has q/k norms, a gate or partial rotary (else unused).
  void project_qkv(const LayerParams& w, const float* h, int N, const int32_t* pos, float* q, float* k, float* v,
                   float* gate, float* scratch, const QxActs* keep = nullptr, bool cached = false) const;
  // Zero-centred norms: effective weights (1 + w), see refresh_norms(); nw(w) maps a norm weight
  // in the backend parameters to the weight the op should use.
  struct NormSlot {
    size_t off, eff, n;
  };
  void refresh_norms() const;
  const float* nw(const float* w) const;
  std::vector<NormSlot> norm_map_;
  mutable Buffer<float> norm_eff_, norm_ones_;
  // out[N,C] = down(silu(gate(h2)) * up(h2)) (+ res[N,C] when given: the residual add, in the
  // down product's epilogue where the backend has linear_fwd_add); out null: g, u and a only
  void mlp_forward(const LayerParams& w, const float* h2, int N, float* g, float* u, float* a, float* out,
                   bool cached = false, bool keep_a = false, const float* res = nullptr) const;
  // out[N,O] = res[N,O] + x[N,I] W[O,I]^T (the residual adds after o_proj and down_proj): in the
  // product's epilogue where the backend has linear_fwd_add, else the product then an add
  void linear_residual(float* out, const float* res, const float* x, const float* W, int N, int I, int O,
                       bool cached) const;
  // bf16 copies of training activations that GEMMs read (the attention output: made right after it
  // is written; h1, h2, the final norm and the residual gradient: written by the op that writes the
  // activation, by_next_op; the SwiGLU product and its two gradients: mlp_fill()), the backend's
  // mirror_activation; dropped before the next forward, after backward (but for the logits,
  // which last_logits() may still read) and with the buffers. Returns whether x has a copy now.
  bool keep_bf16(const float* x, size_t n, MirrorFill how = MirrorFill::copy_now) const;
  MirrorFill mlp_fill() const;
  void drop_bf16_activations(bool keep_logits = false) const;
  mutable std::vector<const float*> bf16_kept_;  // the activations with a bf16 copy now
  mutable const OpsTable* bf16_ops_ = nullptr;  // the backend holding them

  size_t off_embed_ = 0, off_norm_ = 0, off_lm_head_ = 0;
  std::vector<size_t> layer_off_;  // start of each layer's block
  Activations act_;
  Workspace work_;
  int B_ = 0, T_ = 0;
};

}  // namespace sr
