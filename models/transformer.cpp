#include "models/transformer.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace sr {

namespace {
void add_inplace(float* y, const float* x, size_t n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < long(n); ++i) y[i] += x[i];
}
void add_into(float* out, const float* a, const float* b, size_t n) {
#pragma omp parallel for schedule(static)
  for (long i = 0; i < long(n); ++i) out[i] = a[i] + b[i];
}
}  // namespace

size_t Transformer::add_param(const std::string& name, const Shape& shape) {
  size_t off = specs_.empty() ? 0 : specs_.back().offset + size_t(shape_numel(specs_.back().shape));
  specs_.push_back({name, shape, off});
  return off;
}

Transformer::Transformer(const ModelConfig& cfg, const OpsTable* ops) : cfg_(cfg), ops_(ops ? ops : &ops_cpu()) {
  cfg_.validate("model config");
  const int64_t C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int64_t qd = int64_t(cfg_.num_heads) * cfg_.head_dim, kvd = int64_t(cfg_.num_kv_heads) * cfg_.head_dim;
  off_embed_ = add_param("model.embed_tokens.weight", {V, C});
  for (int l = 0; l < cfg_.num_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    layer_off_.push_back(add_param(p + "input_layernorm.weight", {C}));
    add_param(p + "self_attn.q_proj.weight", {qd, C});
    if (cfg_.attention_bias) add_param(p + "self_attn.q_proj.bias", {qd});
    add_param(p + "self_attn.k_proj.weight", {kvd, C});
    if (cfg_.attention_bias) add_param(p + "self_attn.k_proj.bias", {kvd});
    add_param(p + "self_attn.v_proj.weight", {kvd, C});
    if (cfg_.attention_bias) add_param(p + "self_attn.v_proj.bias", {kvd});
    add_param(p + "self_attn.o_proj.weight", {C, qd});
    add_param(p + "post_attention_layernorm.weight", {C});
    add_param(p + "mlp.gate_proj.weight", {F, C});
    add_param(p + "mlp.up_proj.weight", {F, C});
    add_param(p + "mlp.down_proj.weight", {C, F});
  }
  off_norm_ = add_param("model.norm.weight", {C});
  off_lm_head_ = cfg_.tie_word_embeddings ? off_embed_ : add_param("lm_head.weight", {V, C});
  size_t total = specs_.back().offset + size_t(shape_numel(specs_.back().shape));
  params_.assign(total, 0.0f);
  grads_.assign(total, 0.0f);
}

const ParamSpec* Transformer::find_param(const std::string& name) const {
  for (auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

Transformer::LayerParams Transformer::layer(std::vector<float>& buf, int l) const {
  const size_t C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  const bool bias = cfg_.attention_bias;
  float* p = buf.data() + layer_off_[l];
  LayerParams w{};
  w.ln1 = p, p += C;
  w.wq = p, p += qd * C;
  w.bq = bias ? p : nullptr, p += bias ? qd : 0;
  w.wk = p, p += kvd * C;
  w.bk = bias ? p : nullptr, p += bias ? kvd : 0;
  w.wv = p, p += kvd * C;
  w.bv = bias ? p : nullptr, p += bias ? kvd : 0;
  w.wo = p, p += C * qd;
  w.ln2 = p, p += C;
  w.wg = p, p += F * C;
  w.wu = p, p += F * C;
  w.wd = p;
  return w;
}

const float* Transformer::lm_head(const std::vector<float>& buf) const { return buf.data() + off_lm_head_; }

void Transformer::init_random(uint64_t seed, float std) {
  Rng rng(seed);
  const float out_std = std / std::sqrt(2.0f * cfg_.num_layers);  // residual-branch outputs (GPT-2 style)
  for (auto& s : specs_) {
    float* p = params_.data() + s.offset;
    size_t n = size_t(shape_numel(s.shape));
    bool is_norm = s.name.find("norm") != std::string::npos;
    bool is_bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
    bool is_out = s.name.find("o_proj") != std::string::npos || s.name.find("down_proj") != std::string::npos;
    for (size_t i = 0; i < n; ++i) p[i] = is_norm ? 1.0f : is_bias ? 0.0f : rng.normal() * (is_out ? out_std : std);
  }
}

void Transformer::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

AttnShape Transformer::attn_shape(int B, int Tq, int Tk, int l) const {
  AttnShape s;
  s.B = B, s.Tq = Tq, s.Tk = Tk, s.Hq = cfg_.num_heads, s.Hkv = cfg_.num_kv_heads, s.D = cfg_.head_dim;
  s.window = cfg_.window_of(l);
  s.scale = 1.0f / std::sqrt(float(cfg_.head_dim));
  return s;
}

// q[N,Hq*D], k,v[N,Hkv*D] = projections of h[N,C]; RoPE applied to q and k at positions pos[N].
void Transformer::project_qkv(const LayerParams& w, const float* h, int N, const int32_t* pos, float* q, float* k,
                              float* v) const {
  const int C = cfg_.hidden_size, D = cfg_.head_dim, Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads;
  ops_->linear_fwd(q, h, w.wq, w.bq, N, C, Hq * D);
  ops_->linear_fwd(k, h, w.wk, w.bk, N, C, Hkv * D);
  ops_->linear_fwd(v, h, w.wv, w.bv, N, C, Hkv * D);
  ops_->rope_fwd(q, q, pos, N, Hq, D, cfg_.rope_theta);
  ops_->rope_fwd(k, k, pos, N, Hkv, D, cfg_.rope_theta);
}

// out[N,C] = down(silu(gate h2) * up h2); g,u,a [N,F] kept for backward.
void Transformer::mlp_forward(const LayerParams& w, const float* h2, int N, float* g, float* u, float* a,
                              float* out) const {
  const int C = cfg_.hidden_size, F = cfg_.intermediate_size;
  ops_->linear_fwd(g, h2, w.wg, nullptr, N, C, F);
  ops_->linear_fwd(u, h2, w.wu, nullptr, N, C, F);
  ops_->swiglu_fwd(a, g, u, N, F);
  ops_->linear_fwd(out, a, w.wd, nullptr, N, F, C);
}

float Transformer::forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) {
  const int N = B * T, C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size, L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  for (int i = 0; i < N; ++i) {
    if (ids[i] < 0 || ids[i] >= V) fail("forward", "token id " + std::to_string(ids[i]) + " outside vocabulary of " + std::to_string(V));
    if (targets[i] >= V) fail("forward", "target id " + std::to_string(targets[i]) + " outside vocabulary of " + std::to_string(V));
  }
  B_ = B, T_ = T;
  Activations& A = act_;
  if (A.N != N) {  // grow-only buffers: batches of varying length reuse the same memory
    A.N = N;
    A.res.resize(size_t(L + 1) * N * C);
    A.h1.resize(size_t(L) * N * C), A.rstd1.resize(size_t(L) * N);
    A.q.resize(size_t(L) * N * qd), A.k.resize(size_t(L) * N * kvd), A.v.resize(size_t(L) * N * kvd);
    A.att.resize(size_t(L) * N * qd), A.lse.resize(size_t(L) * N * cfg_.num_heads);
    A.xmid.resize(size_t(L) * N * C), A.h2.resize(size_t(L) * N * C), A.rstd2.resize(size_t(L) * N);
    A.g.resize(size_t(L) * N * F), A.u.resize(size_t(L) * N * F), A.a.resize(size_t(L) * N * F);
    A.hf.resize(size_t(N) * C), A.rstdf.resize(N), A.logits.resize(size_t(N) * V);
    A.lse_x.resize(N), A.loss.resize(N), A.pos.resize(N);
    A.tmp.resize(size_t(N) * C);
  }
  A.ids.assign(ids, ids + N);
  A.targets.assign(targets, targets + N);
  A.weights.assign(weights, weights + N);
  for (int i = 0; i < N; ++i) A.pos[i] = i % T;

  std::vector<float>& tmp = A.tmp;
  ops_->embedding_fwd(A.res.data(), ids, params_.data() + off_embed_, N, C);
  for (int l = 0; l < L; ++l) {
    LayerParams w = layer(params_, l);
    float* x = A.res.data() + size_t(l) * N * C;
    float* h1 = A.h1.data() + size_t(l) * N * C;
    float *q = A.q.data() + size_t(l) * N * qd, *k = A.k.data() + size_t(l) * N * kvd, *v = A.v.data() + size_t(l) * N * kvd;
    float *att = A.att.data() + size_t(l) * N * qd, *xmid = A.xmid.data() + size_t(l) * N * C;
    float* h2 = A.h2.data() + size_t(l) * N * C;
    ops_->rmsnorm_fwd(h1, A.rstd1.data() + size_t(l) * N, x, w.ln1, N, C, cfg_.rms_norm_eps);
    project_qkv(w, h1, N, A.pos.data(), q, k, v);
    ops_->attention_fwd(att, A.lse.data() + size_t(l) * N * cfg_.num_heads, q, k, v, attn_shape(B, T, T, l));
    ops_->linear_fwd(tmp.data(), att, w.wo, nullptr, N, int(qd), C);
    add_into(xmid, x, tmp.data(), size_t(N) * C);
    ops_->rmsnorm_fwd(h2, A.rstd2.data() + size_t(l) * N, xmid, w.ln2, N, C, cfg_.rms_norm_eps);
    mlp_forward(w, h2, N, A.g.data() + size_t(l) * N * F, A.u.data() + size_t(l) * N * F,
                A.a.data() + size_t(l) * N * F, tmp.data());
    add_into(A.res.data() + size_t(l + 1) * N * C, xmid, tmp.data(), size_t(N) * C);
  }
  ops_->rmsnorm_fwd(A.hf.data(), A.rstdf.data(), A.res.data() + size_t(L) * N * C, params_.data() + off_norm_, N, C,
                    cfg_.rms_norm_eps);
  ops_->linear_fwd(A.logits.data(), A.hf.data(), lm_head(params_), nullptr, N, C, V);
  ops_->xent_fwd(A.loss.data(), A.lse_x.data(), A.logits.data(), targets, N, V);
  double num = 0, den = 0;
  for (int i = 0; i < N; ++i)
    if (targets[i] >= 0) num += double(weights[i]) * A.loss[i], den += weights[i];
  weight_sum_ = den;
  return den > 0 ? float(num / den) : 0.0f;
}

void Transformer::backward(float loss_scale) {
  Activations& A = act_;
  const int N = A.N, B = B_, T = T_, C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size,
            L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  SR_ASSERT(N > 0, "backward() without forward()");
  // dL/dloss_t = scale * w_t / sum(w)
  Workspace& W = work_;  // grow-only gradient buffers, reused across steps
  W.g.assign(N, 0.0f);
  if (weight_sum_ > 0)
    for (int i = 0; i < N; ++i) W.g[i] = float(loss_scale * A.weights[i] / weight_sum_);
  W.dlogits.resize(size_t(N) * V), W.dx.resize(size_t(N) * C), W.dh.resize(size_t(N) * C), W.dtmp.resize(size_t(N) * C);
  W.dF1.resize(size_t(N) * F), W.dF2.resize(size_t(N) * F), W.dF3.resize(size_t(N) * F);
  W.dq.resize(size_t(N) * qd), W.dk.resize(size_t(N) * kvd), W.dv.resize(size_t(N) * kvd), W.datt.resize(size_t(N) * qd);
  std::vector<float>&g = W.g, &dlogits = W.dlogits, &dx = W.dx, &dh = W.dh, &dtmp = W.dtmp;
  std::vector<float>&dF1 = W.dF1, &dF2 = W.dF2, &dF3 = W.dF3, &dq = W.dq, &dk = W.dk, &dv = W.dv, &datt = W.datt;
  ops_->xent_bwd(dlogits.data(), A.logits.data(), A.lse_x.data(), A.targets.data(), g.data(), N, V);
  ops_->linear_bwd(dh.data(), grads_.data() + off_lm_head_, nullptr, dlogits.data(), A.hf.data(), lm_head(params_), N,
                   C, V);
  ops_->rmsnorm_bwd(dx.data(), grads_.data() + off_norm_, dh.data(), A.res.data() + size_t(L) * N * C,
                    params_.data() + off_norm_, A.rstdf.data(), N, C);
  for (int l = L - 1; l >= 0; --l) {
    LayerParams w = layer(params_, l), gw = layer(grads_, l);
    const float* x = A.res.data() + size_t(l) * N * C;
    const float *h1 = A.h1.data() + size_t(l) * N * C, *h2 = A.h2.data() + size_t(l) * N * C;
    const float *q = A.q.data() + size_t(l) * N * qd, *k = A.k.data() + size_t(l) * N * kvd, *v = A.v.data() + size_t(l) * N * kvd;
    const float *att = A.att.data() + size_t(l) * N * qd, *xmid = A.xmid.data() + size_t(l) * N * C;
    const float *ga = A.g.data() + size_t(l) * N * F, *ua = A.u.data() + size_t(l) * N * F, *aa = A.a.data() + size_t(l) * N * F;
    // out = xmid + down(a): dx is d(out); d(xmid) accumulates dx + norm path
    ops_->linear_bwd(dF1.data(), gw.wd, nullptr, dx.data(), aa, w.wd, N, F, C);     // da
    ops_->swiglu_bwd(dF2.data(), dF3.data(), dF1.data(), ga, ua, N, F);              // dgate, dup
    ops_->linear_bwd(dh.data(), gw.wg, nullptr, dF2.data(), h2, w.wg, N, C, F);
    ops_->linear_bwd(dtmp.data(), gw.wu, nullptr, dF3.data(), h2, w.wu, N, C, F);
    add_inplace(dh.data(), dtmp.data(), size_t(N) * C);
    ops_->rmsnorm_bwd(dtmp.data(), gw.ln2, dh.data(), xmid, w.ln2, A.rstd2.data() + size_t(l) * N, N, C);
    add_inplace(dx.data(), dtmp.data(), size_t(N) * C);  // dx is now d(xmid)
    // xmid = x + o_proj(att)
    ops_->linear_bwd(datt.data(), gw.wo, nullptr, dx.data(), att, w.wo, N, int(qd), C);
    ops_->attention_bwd(dq.data(), dk.data(), dv.data(), datt.data(), q, k, v, att,
                        A.lse.data() + size_t(l) * N * cfg_.num_heads, attn_shape(B, T, T, l));
    ops_->rope_bwd(dq.data(), dq.data(), A.pos.data(), N, cfg_.num_heads, cfg_.head_dim, cfg_.rope_theta);
    ops_->rope_bwd(dk.data(), dk.data(), A.pos.data(), N, cfg_.num_kv_heads, cfg_.head_dim, cfg_.rope_theta);
    ops_->linear_bwd(dh.data(), gw.wq, gw.bq, dq.data(), h1, w.wq, N, C, int(qd));
    ops_->linear_bwd(dtmp.data(), gw.wk, gw.bk, dk.data(), h1, w.wk, N, C, int(kvd));
    add_inplace(dh.data(), dtmp.data(), size_t(N) * C);
    ops_->linear_bwd(dtmp.data(), gw.wv, gw.bv, dv.data(), h1, w.wv, N, C, int(kvd));
    add_inplace(dh.data(), dtmp.data(), size_t(N) * C);
    ops_->rmsnorm_bwd(dtmp.data(), gw.ln1, dh.data(), x, w.ln1, A.rstd1.data() + size_t(l) * N, N, C);
    add_inplace(dx.data(), dtmp.data(), size_t(N) * C);  // dx is now d(x) of layer l
  }
  ops_->embedding_bwd(grads_.data() + off_embed_, dx.data(), A.ids.data(), N, C);
}

std::vector<LayerKVCache> Transformer::empty_caches() const {
  std::vector<LayerKVCache> c(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) c[l].window = cfg_.window_of(l);
  return c;
}

void Transformer::forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                                 bool all_logits) const {
  const int C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size, L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  SR_ASSERT(int(caches.size()) == L, "forward_cached: cache count != layers");
  if (n <= 0) return;
  for (int i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V) fail("input", "token id " + std::to_string(ids[i]) + " outside vocabulary of " + std::to_string(V));
  const int64_t pos0 = caches[0].n_seen;
  if (pos0 + n > int64_t(INT32_MAX)) fail("input", "sequence longer than 2^31 tokens");
  std::vector<int32_t> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = int32_t(pos0 + i);
  auto& P = const_cast<std::vector<float>&>(params_);
  std::vector<float> x(size_t(n) * C), h(size_t(n) * C), rstd(n), tmp(size_t(n) * C);
  std::vector<float> q(size_t(n) * qd), knew(size_t(n) * kvd), vnew(size_t(n) * kvd), att(size_t(n) * qd),
      lse(size_t(n) * cfg_.num_heads);
  std::vector<float> g(size_t(n) * F), u(size_t(n) * F), a(size_t(n) * F), kw, vw;
  ops_->embedding_fwd(x.data(), ids, params_.data() + off_embed_, n, C);
  for (int l = 0; l < L; ++l) {
    LayerParams w = layer(P, l);
    LayerKVCache& c = caches[l];
    SR_ASSERT(c.n_seen == pos0, "forward_cached: layer caches out of step");
    ops_->rmsnorm_fwd(h.data(), rstd.data(), x.data(), w.ln1, n, C, cfg_.rms_norm_eps);
    project_qkv(w, h.data(), n, pos.data(), q.data(), knew.data(), vnew.data());
    const float *K, *Vv;
    int Tk;
    if (c.window == 0) {  // full: append, attend over the whole cache
      c.k.insert(c.k.end(), knew.begin(), knew.end());
      c.v.insert(c.v.end(), vnew.begin(), vnew.end());
      K = c.k.data(), Vv = c.v.data(), Tk = int(pos0 + n);
    } else {  // window W: gather the cached keys still visible to the first query, then the new ones
      const int W = c.window;
      const int m = int(std::min<int64_t>(pos0, W - 1));
      kw.resize(size_t(m + n) * kvd), vw.resize(size_t(m + n) * kvd);
      for (int t = 0; t < m; ++t) {
        size_t slot = size_t((pos0 - m + t) % W);
        std::memcpy(kw.data() + size_t(t) * kvd, c.k.data() + slot * kvd, kvd * sizeof(float));
        std::memcpy(vw.data() + size_t(t) * kvd, c.v.data() + slot * kvd, kvd * sizeof(float));
      }
      std::memcpy(kw.data() + size_t(m) * kvd, knew.data(), size_t(n) * kvd * sizeof(float));
      std::memcpy(vw.data() + size_t(m) * kvd, vnew.data(), size_t(n) * kvd * sizeof(float));
      c.k.resize(size_t(W) * kvd), c.v.resize(size_t(W) * kvd);  // the ring never grows past W rows
      for (int i = std::max(0, n - W); i < n; ++i) {
        size_t slot = size_t((pos0 + i) % W);
        std::memcpy(c.k.data() + slot * kvd, knew.data() + size_t(i) * kvd, kvd * sizeof(float));
        std::memcpy(c.v.data() + slot * kvd, vnew.data() + size_t(i) * kvd, kvd * sizeof(float));
      }
      K = kw.data(), Vv = vw.data(), Tk = m + n;
    }
    c.n_seen += n;
    ops_->attention_fwd(att.data(), lse.data(), q.data(), K, Vv, attn_shape(1, n, Tk, l));
    ops_->linear_fwd(tmp.data(), att.data(), w.wo, nullptr, n, int(qd), C);
    add_inplace(x.data(), tmp.data(), size_t(n) * C);
    ops_->rmsnorm_fwd(h.data(), rstd.data(), x.data(), w.ln2, n, C, cfg_.rms_norm_eps);
    mlp_forward(w, h.data(), n, g.data(), u.data(), a.data(), tmp.data());
    add_inplace(x.data(), tmp.data(), size_t(n) * C);
  }
  const int first = all_logits ? 0 : n - 1, rows = n - first;
  ops_->rmsnorm_fwd(h.data(), rstd.data(), x.data() + size_t(first) * C, params_.data() + off_norm_, rows, C,
                    cfg_.rms_norm_eps);
  ops_->linear_fwd(logits_out, h.data(), lm_head(params_), nullptr, rows, C, V);
}

}  // namespace sr
