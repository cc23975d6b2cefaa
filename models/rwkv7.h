// RWKV-7 "Goose" (x070), in the fla-hub layout (model_type "rwkv7"; tensor names as fla's
// RWKV7ForCausalLM writes them). Math: BlinkDL's RWKV-LM x070 (../shared/docs/architectures.md §4):
//   x = LN0(embed(ids))                                     (model.layers.0.pre_norm)
//   L x [ x += TimeMix(LN1(x)) ; x += ChannelMix(LN2(x)) ]  (attn_norm, attn.*, ffn_norm, ffn.*)
//   logits = lm_head(LN(x))                                 (model.norm, lm_head; LayerNorms with bias)
// TimeMix, per token (C = hidden, H heads of N = head_dim):
//   token shift: x_mu = x + (x_prev - x) * mu for mu in x_r x_w x_k x_v x_a x_g
//   r, k, v = projections; w = exp(-e^-0.5 sigmoid(w0 + tanh(x_w W1) W2)); a = sigmoid(a0 + x_a A1 A2)
//   v += (v_first - v) sigmoid(v0 + x_v V1 V2)   (layers > 0; v_first = layer 0's v)
//   kk = L2-normalize_head(k * k_k); k *= 1 + (a - 1) k_a
//   wkv: the generalized delta rule with decay w, a = -kk, b = kk * a (fp32 state [H, N, N])
//   o = (GroupNorm_H(wkv, eps = N * norm_eps) + sum_head(r k r_k) v) * (sigmoid(x_g G1) G2); out = W_o o
// ChannelMix: out = W_value relu(W_key (x + (x_prev - x) x_k))^2.
// Streaming state per layer (LayerKVCache): the two token-shift vectors and the wkv matrix, so a
// session's memory does not depend on how much it has read.
#pragma once
#include <vector>

#include "models/language_model.h"

namespace sr {

class Rwkv7 : public LanguageModel {
 public:
  explicit Rwkv7(const ModelConfig& cfg, const OpsTable* ops = nullptr);

  // BlinkDL/fla's init (token-shift ramps, decay and ICL-rate biases, zeroed output projections);
  // their orthogonal matrices are drawn as normals of the same scale. `std` is unused.
  void init_random(uint64_t seed, float std = 0.02f) override;
  float forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) override;
  void backward(float loss_scale = 1.0f) override;
  std::vector<float> last_logits() const override;
  void forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                      bool all_logits) const override;
  std::vector<LayerKVCache> empty_caches() const override;

 protected:
  void drop_activations() override { act_ = Activations{}, work_ = Workspace{}; }
  void check_backend(const OpsTable& ops) const override;

 private:
  struct LayerParams {  // pointers into a flat buffer (params or grads)
    float *ln1_w, *ln1_b, *mu /* [6, C]: x_r x_w x_k x_v x_a x_g */, *kkw, *ka, *rk;
    float *wr, *wk, *wv, *wo, *w1, *w2, *w0, *a1, *a2, *a0, *v1, *v2, *v0 /* null in layer 0 */, *g1, *g2;
    float *gn_w, *gn_b, *ln2_w, *ln2_b, *ffn_mu, *fkey, *fval;
  };
  // One layer's activations for N tokens (pointers into a flat buffer; see carve()).
  struct Acts {
    float *h1, *m1, *r1, *mix /* [6, N, C] */, *r, *k, *v, *whp, *wha, *wl, *ah, *al, *vh, *vl, *gp, *ga, *g;
    float *w, *kmod, *vmod, *alpha, *beta, *rnorm, *y, *yn, *gm, *gr, *o, *xmid, *h2, *m2, *r2, *fx, *fpre, *fact;
  };
  struct Activations {  // training activations, sized for the current [B,T], backend memory
    int N = 0, logit_rows = 0;
    int logits_r0 = -1;         // the first row of the chunk whose logits `logits` holds (-1: none)
    Buffer<float> emb, m0, r0;  // embeddings and the pre-norm statistics
    Buffer<float> res;          // [L+1, N, C] residual stream entering each layer (+ final)
    Buffer<float> layers;       // one Acts block per slot (per layer, or one under recompute)
    Buffer<float> vfirst;       // [N, C] layer 0's v, read by every later layer
    Buffer<float> state;        // zero initial wkv states [B, H, N, N]
    Buffer<float> hf, mf, rf, logits, lse_x, loss;
    Buffer<int32_t> ids, targets;
    std::vector<float> host_weights;
  };
  struct Workspace {  // backward temporaries, backend memory
    Buffer<float> g, dlogits, dx, dh, dtmp, dvfirst, dstate, scratch;
  };

  LayerParams layer(float* base, int l) const;
  size_t floats_per_token() const;  // one Acts block per token
  Acts carve(float* p, size_t N) const;
  Acts slot_acts(int slot);
  // Layer l on the normed... full layer: x [B*T, C] -> out [B*T, C] (out may be x); prev: the two
  // token-shift vectors [2, C] (null = zeros, training) advanced in place; state [B, H, N, N].
  void layer_forward(int l, const Acts& t, const float* x, int B, int T, float* prev, float* state, float* vfirst,
                     float* out) const;
  void lm_head_rows(int r0, int rows);

  std::vector<size_t> layer_off_;
  size_t off_embed_ = 0, off_pre_ = 0, off_norm_ = 0, off_lm_head_ = 0;
  Activations act_;
  Workspace work_;
  int B_ = 0, T_ = 0;
};

}  // namespace sr
