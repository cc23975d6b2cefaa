#include "models/rwkv7.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sr {

Rwkv7::Rwkv7(const ModelConfig& cfg, const OpsTable* ops) : LanguageModel(cfg) {
  cfg_.validate("model config");
  SR_ASSERT(cfg_.is_rwkv7(), "Rwkv7 needs model_type rwkv7");
  const int64_t C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int64_t H = cfg_.num_heads, N = cfg_.head_dim;
  off_embed_ = add_param("model.embeddings.weight", {V, C});
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", a = p + "attn.";
    if (l == 0) {
      off_pre_ = add_param(p + "pre_norm.weight", {C});
      add_param(p + "pre_norm.bias", {C});
    }
    layer_off_.push_back(add_param(p + "attn_norm.weight", {C}));
    add_param(p + "attn_norm.bias", {C});
    for (const char* m : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) add_param(a + m, {1, 1, C});
    add_param(a + "k_k", {C});
    add_param(a + "k_a", {C});
    add_param(a + "r_k", {H, N});
    for (const char* m : {"r_proj", "k_proj", "v_proj", "o_proj"}) add_param(a + m + ".weight", {C, C});
    auto lora = [&](const std::string& name, int64_t r, bool bias) {
      add_param(a + name + ".lora.0.weight", {r, C});
      add_param(a + name + ".lora.2.weight", {C, r});
      if (bias) add_param(a + name + ".lora.2.bias", {C});
    };
    lora("w_lora", cfg_.rwkv_decay_rank, true);
    lora("a_lora", cfg_.rwkv_a_rank, true);
    if (l > 0) lora("v_lora", cfg_.rwkv_v_rank, true);
    lora("g_lora", cfg_.rwkv_gate_rank, false);
    add_param(a + "g_norm.weight", {C});
    add_param(a + "g_norm.bias", {C});
    add_param(p + "ffn_norm.weight", {C});
    add_param(p + "ffn_norm.bias", {C});
    add_param(p + "ffn.x_k", {C});
    add_param(p + "ffn.key.weight", {F, C});
    add_param(p + "ffn.value.weight", {C, F});
  }
  off_norm_ = add_param("model.norm.weight", {C});
  add_param("model.norm.bias", {C});
  off_lm_head_ = cfg_.tie_word_embeddings ? off_embed_ : add_param("lm_head.weight", {V, C});
  finish_params(ops);
}

void Rwkv7::check_backend(const OpsTable& ops) const {
  if (!ops.rwkv7_prep_fwd || !ops.gdr_fwd || !ops.layernorm_fwd)
    fail("--device", std::string("RWKV-7 layers have no ") + ops.name + " kernels yet; run this model on the CPU");
}

Rwkv7::LayerParams Rwkv7::layer(float* base, int l) const {
  const size_t C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const size_t rw = cfg_.rwkv_decay_rank, ra = cfg_.rwkv_a_rank, rv = cfg_.rwkv_v_rank, rg = cfg_.rwkv_gate_rank;
  float* p = base + layer_off_[l];
  auto take = [&](size_t n) { float* q = p; p += n; return q; };
  LayerParams w{};
  w.ln1_w = take(C), w.ln1_b = take(C), w.mu = take(6 * C), w.kkw = take(C), w.ka = take(C), w.rk = take(C);
  w.wr = take(C * C), w.wk = take(C * C), w.wv = take(C * C), w.wo = take(C * C);
  w.w1 = take(rw * C), w.w2 = take(C * rw), w.w0 = take(C);
  w.a1 = take(ra * C), w.a2 = take(C * ra), w.a0 = take(C);
  if (l > 0) w.v1 = take(rv * C), w.v2 = take(C * rv), w.v0 = take(C);
  w.g1 = take(rg * C), w.g2 = take(C * rg);
  w.gn_w = take(C), w.gn_b = take(C), w.ln2_w = take(C), w.ln2_b = take(C);
  w.ffn_mu = take(C), w.fkey = take(F * C), w.fval = take(C * F);
  return w;
}

void Rwkv7::init_random(uint64_t seed, float) {
  Rng rng(seed);
  const int C = cfg_.hidden_size, F = cfg_.intermediate_size, L = cfg_.num_layers, D = cfg_.head_dim;
  auto normal = [&](float* p, size_t n, float sd) {
    for (size_t i = 0; i < n; ++i) p[i] = rng.normal() * sd;
  };
  std::fill(params_.begin(), params_.end(), 0.0f);
  float* P = params_.data();
  for (size_t i = 0; i < size_t(cfg_.vocab_size) * C; ++i) P[off_embed_ + i] = float(rng.uniform() * 2e-4 - 1e-4);
  std::fill_n(P + off_pre_, C, 1.0f);
  std::fill_n(P + off_norm_, C, 1.0f);
  for (int l = 0; l < L; ++l) {
    LayerParams w = layer(P, l);
    const double r01 = L > 1 ? double(l) / (L - 1) : 0.0, r10 = 1.0 - double(l) / L;
    std::fill_n(w.ln1_w, C, 1.0f), std::fill_n(w.ln2_w, C, 1.0f);
    const double mix_pow[6] = {0.2, 0.9, 0.7, 0.7, 0.9, 0.2};  // x_r x_w x_k x_v x_a x_g
    for (int n = 0; n < C; ++n) {
      const double ddd = double(n) / C, linear = double(n) / (C - 1 > 0 ? C - 1 : 1) - 0.5;
      double zig = ((n % D) - (D - 1) / 2.0) / ((D - 1) / 2.0 > 0 ? (D - 1) / 2.0 : 1.0);
      zig *= std::abs(zig);
      const double www = -6 + 6 * std::pow(double(n) / (C - 1 > 0 ? C - 1 : 1), 1 + std::pow(r01, 0.3));
      for (int m = 0; m < 6; ++m) w.mu[m * C + n] = float(1.0 - std::pow(ddd, mix_pow[m] * r10));
      w.kkw[n] = float(0.71 - linear * 0.1);
      w.ka[n] = 1.02f;
      w.rk[n] = -0.04f;
      w.w0[n] = float(www + 0.5 + zig * 2.5);
      w.a0[n] = float(-0.19 + zig * 0.3 + linear * 0.4);
      if (w.v0) w.v0[n] = float(0.73 - linear * 0.4);
      w.gn_w[n] = float(std::pow(double(l + 1) / L, 0.7));
      w.ffn_mu[n] = float(1.0 - std::pow(ddd, std::pow(r10, 4)));
    }
    const float inv = 1.0f / std::sqrt(float(C));
    normal(w.wr, size_t(C) * C, inv);
    normal(w.wk, size_t(C) * C, 0.1f * inv);
    normal(w.wv, size_t(C) * C, inv);  // wo, fval stay zero (BlinkDL)
    normal(w.w2, size_t(C) * cfg_.rwkv_decay_rank, 0.1f * inv);  // the LoRAs' first matrices stay zero
    normal(w.a2, size_t(C) * cfg_.rwkv_a_rank, 0.1f * inv);
    if (w.v2) normal(w.v2, size_t(C) * cfg_.rwkv_v_rank, 0.1f * inv);
    normal(w.g2, size_t(C) * cfg_.rwkv_gate_rank, 0.1f * inv);
    normal(w.fkey, size_t(F) * C, 1.0f / std::sqrt(float(F)));
  }
  if (!cfg_.tie_word_embeddings) normal(P + off_lm_head_, size_t(cfg_.vocab_size) * C, 0.5f / std::sqrt(float(C)));
  upload_params();
}

size_t Rwkv7::floats_per_token() const {
  const size_t C = cfg_.hidden_size, F = cfg_.intermediate_size, H = cfg_.num_heads;
  const size_t rw = cfg_.rwkv_decay_rank, ra = cfg_.rwkv_a_rank, rv = cfg_.rwkv_v_rank, rg = cfg_.rwkv_gate_rank;
  return 25 * C + 2 * rw + ra + rv + 2 * rg + 2 * F + 4 + 3 * H;
}

// Carves one layer's activations for N tokens (sizes per token: floats_per_token()).
Rwkv7::Acts Rwkv7::carve(float* p, size_t N) const {
  const size_t C = cfg_.hidden_size, F = cfg_.intermediate_size, H = cfg_.num_heads;
  const size_t rw = cfg_.rwkv_decay_rank, ra = cfg_.rwkv_a_rank, rv = cfg_.rwkv_v_rank, rg = cfg_.rwkv_gate_rank;
  auto take = [&](size_t n) { float* q = p; p += N * n; return q; };
  Acts t{};
  t.h1 = take(C), t.m1 = take(1), t.r1 = take(1), t.mix = take(6 * C), t.r = take(C), t.k = take(C), t.v = take(C);
  t.whp = take(rw), t.wha = take(rw), t.wl = take(C), t.ah = take(ra), t.al = take(C), t.vh = take(rv), t.vl = take(C);
  t.gp = take(rg), t.ga = take(rg), t.g = take(C), t.w = take(C), t.kmod = take(C), t.vmod = take(C);
  t.alpha = take(C), t.beta = take(C), t.rnorm = take(H), t.y = take(C), t.yn = take(C), t.gm = take(H), t.gr = take(H);
  t.o = take(C), t.xmid = take(C), t.h2 = take(C), t.m2 = take(1), t.r2 = take(1), t.fx = take(C), t.fpre = take(F);
  t.fact = take(F);
  return t;
}

Rwkv7::Acts Rwkv7::slot_acts(int slot) {
  return carve(act_.layers.data() + size_t(slot) * act_.N * floats_per_token(), act_.N);
}

void Rwkv7::layer_forward(int l, const Acts& t, const float* x, int B, int T, float* prev, float* state,
                          float* vfirst, float* out) const {
  const int N = B * T, C = cfg_.hidden_size, F = cfg_.intermediate_size, H = cfg_.num_heads, D = cfg_.head_dim;
  const int rw = cfg_.rwkv_decay_rank, ra = cfg_.rwkv_a_rank, rv = cfg_.rwkv_v_rank, rg = cfg_.rwkv_gate_rank;
  const float eps = float(cfg_.norm_eps);
  const MemOps& mem = *ops_->mem;
  LayerParams w = layer(const_cast<Rwkv7*>(this)->backend_params(), l);
  const size_t NC = size_t(N) * C;
  const bool cached = prev != nullptr;  // inference streams its token-shift and wkv states
  // ---- time mix ----
  ops_->layernorm_fwd(t.h1, t.m1, t.r1, x, w.ln1_w, w.ln1_b, N, 1, C, eps);
  ops_->token_shift_fwd(t.mix, t.h1, prev, w.mu, B, T, C, 6);
  if (prev) mem.copy(prev, t.h1 + NC - C, size_t(C) * sizeof(float));  // B == 1 when streaming
  const float *xr = t.mix, *xw = t.mix + NC, *xk = t.mix + 2 * NC, *xv = t.mix + 3 * NC, *xa = t.mix + 4 * NC,
              *xg = t.mix + 5 * NC;
  linear(t.r, xr, w.wr, nullptr, N, C, C, cached);
  linear(t.k, xk, w.wk, nullptr, N, C, C, cached);
  linear(t.v, xv, w.wv, nullptr, N, C, C, cached);
  linear(t.whp, xw, w.w1, nullptr, N, C, rw, cached);
  ops_->act_fwd(t.wha, t.whp, size_t(N) * rw, 0);
  linear(t.wl, t.wha, w.w2, w.w0, N, rw, C, cached);
  linear(t.ah, xa, w.a1, nullptr, N, C, ra, cached);
  linear(t.al, t.ah, w.a2, w.a0, N, ra, C, cached);
  if (l > 0) {
    linear(t.vh, xv, w.v1, nullptr, N, C, rv, cached);
    linear(t.vl, t.vh, w.v2, w.v0, N, rv, C, cached);
  } else {
    mem.copy(vfirst, t.v, NC * sizeof(float));
  }
  linear(t.gp, xg, w.g1, nullptr, N, C, rg, cached);
  ops_->act_fwd(t.ga, t.gp, size_t(N) * rg, 1);
  linear(t.g, t.ga, w.g2, nullptr, N, rg, C, cached);
  ops_->rwkv7_prep_fwd(t.w, t.kmod, t.vmod, t.alpha, t.beta, t.rnorm, t.k, t.v, t.wl, t.al, t.vl,
                       l > 0 ? vfirst : nullptr, w.kkw, w.ka, N, H, D);
  GdrShape s;
  s.B = B, s.T = T, s.H = H, s.Dk = D, s.Dv = D;
  ops_->gdr_fwd(t.y, state, t.r, t.w, t.alpha, t.beta, t.kmod, t.vmod, s);
  ops_->layernorm_fwd(t.yn, t.gm, t.gr, t.y, w.gn_w, w.gn_b, N, H, D, eps * D);
  ops_->rwkv7_out_fwd(t.o, t.yn, t.r, t.kmod, t.vmod, w.rk, t.g, N, H, D);
  linear(t.xmid, t.o, w.wo, nullptr, N, C, C, cached);
  ops_->add(t.xmid, t.xmid, x, NC);
  // ---- channel mix ----
  ops_->layernorm_fwd(t.h2, t.m2, t.r2, t.xmid, w.ln2_w, w.ln2_b, N, 1, C, eps);
  float* prev_ffn = prev ? prev + C : nullptr;
  ops_->token_shift_fwd(t.fx, t.h2, prev_ffn, w.ffn_mu, B, T, C, 1);
  if (prev_ffn) mem.copy(prev_ffn, t.h2 + NC - C, size_t(C) * sizeof(float));
  linear(t.fpre, t.fx, w.fkey, nullptr, N, C, F, cached);
  ops_->act_fwd(t.fact, t.fpre, size_t(N) * F, 2);
  linear(out, t.fact, w.fval, nullptr, N, F, C, cached);
  ops_->add(out, out, t.xmid, NC);
}

float Rwkv7::forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) {
  const int N = B * T, C = cfg_.hidden_size, V = cfg_.vocab_size, L = cfg_.num_layers, D = cfg_.head_dim;
  check_ids(ids, targets, N, "forward");
  B_ = B, T_ = T;
  Activations& A = act_;
  if (A.N != N || A.res.mem() != ops_->mem) {
    A.N = N;
    A.logit_rows = int(std::max<size_t>(1, std::min<size_t>(N, logits_chunk_floats() / size_t(V))));
    const size_t S = recompute_ ? 1 : size_t(L);
    fit(A.emb, size_t(N) * C), fit(A.m0, N), fit(A.r0, N);
    fit(A.res, size_t(L + 1) * N * C);
    fit(A.layers, S * N * floats_per_token());
    fit(A.vfirst, size_t(N) * C);
    fit(A.state, size_t(B) * C * D);
    fit(A.hf, size_t(N) * C), fit(A.mf, N), fit(A.rf, N), fit(A.logits, size_t(A.logit_rows) * V);
    fit(A.lse_x, N), fit(A.loss, N), fit(A.ids, N), fit(A.targets, N);
  }
  A.ids.upload(ids, N);
  A.targets.upload(targets, N);
  A.host_weights.assign(weights, weights + N);
  float* P = backend_params();
  const float eps = float(cfg_.norm_eps);
  ops_->embedding_fwd(A.emb.data(), A.ids.data(), P + off_embed_, N, C);
  ops_->layernorm_fwd(A.res.data(), A.m0.data(), A.r0.data(), A.emb.data(), P + off_pre_, P + off_pre_ + C, N, 1, C, eps);
  for (int l = 0; l < L; ++l) {
    A.state.zero();  // each training sequence starts from an empty state
    layer_forward(l, slot_acts(recompute_ ? 0 : l), A.res.data() + size_t(l) * N * C, B, T, nullptr, A.state.data(),
                  A.vfirst.data(), A.res.data() + size_t(l + 1) * N * C);
  }
  ops_->layernorm_fwd(A.hf.data(), A.mf.data(), A.rf.data(), A.res.data() + size_t(L) * N * C, P + off_norm_,
                      P + off_norm_ + C, N, 1, C, eps);
  // the LM head chunk by chunk, the last chunk first: backward() starts with chunk 0, still held
  for (int r0 = (N - 1) / A.logit_rows * A.logit_rows; r0 >= 0; r0 -= A.logit_rows)
    lm_head_rows(r0, std::min(A.logit_rows, N - r0));
  return reduce_loss(A.loss.to_vector(), targets, weights, N);
}

void Rwkv7::lm_head_rows(int r0, int rows) {
  Activations& A = act_;
  const int C = cfg_.hidden_size, V = cfg_.vocab_size;
  ops_->linear_fwd(A.logits.data(), A.hf.data() + size_t(r0) * C, backend_params() + off_lm_head_, nullptr, rows, C, V);
  ops_->xent_fwd(A.loss.data() + r0, A.lse_x.data() + r0, A.logits.data(), A.targets.data() + r0, rows, V);
  A.logits_r0 = r0;
}

std::vector<float> Rwkv7::last_logits() const {
  SR_ASSERT(act_.N > 0 && act_.logit_rows == act_.N, "last_logits: the last batch's logits were computed in chunks");
  return act_.logits.to_vector();
}

void Rwkv7::backward(float loss_scale) {
  drop_decode_weights();  // training changes the weights: decode reads fp32 again
  Activations& A = act_;
  const int N = A.N, B = B_, T = T_, C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int L = cfg_.num_layers, H = cfg_.num_heads, D = cfg_.head_dim;
  const int rw = cfg_.rwkv_decay_rank, ra = cfg_.rwkv_a_rank, rv = cfg_.rwkv_v_rank, rg = cfg_.rwkv_gate_rank;
  SR_ASSERT(N > 0, "backward() without forward()");
  const size_t NC = size_t(N) * C;
  Workspace& W = work_;
  fit(W.g, N), fit(W.dlogits, size_t(A.logit_rows) * V), fit(W.dx, NC), fit(W.dh, NC), fit(W.dtmp, NC);
  fit(W.dvfirst, NC), fit(W.dstate, A.state.size());
  // scratch: dmix [6C], dr dk dv dw dalpha dbeta dkmod dvmod dy dyn do dg dwl dal dvl + 3 out grads [18C],
  // LoRA hiddens [rw + ra + rv + rg], channel mix [F]
  fit(W.scratch, size_t(N) * (24 * size_t(C) + rw + ra + rv + rg + F));
  upload_loss_grad(W.g, A.host_weights, loss_scale);
  W.dvfirst.zero();
  float *P = backend_params(), *G = begin_backward_grads();
  float *dx = W.dx.data(), *dh = W.dh.data(), *dtmp = W.dtmp.data();
  for (int r0 = 0; r0 < N; r0 += A.logit_rows) {
    const int rows = std::min(A.logit_rows, N - r0);
    if (A.logits_r0 != r0) lm_head_rows(r0, rows);  // recomputed unless held
    ops_->xent_bwd(W.dlogits.data(), A.logits.data(), A.lse_x.data() + r0, A.targets.data() + r0, W.g.data() + r0,
                   rows, V);
    linear_bwd(dh + size_t(r0) * C, G + off_lm_head_, nullptr, W.dlogits.data(), A.hf.data() + size_t(r0) * C,
                     P + off_lm_head_, rows, C, V, false);
  }
  ops_->layernorm_bwd(dx, G + off_norm_, G + off_norm_ + C, dh, A.res.data() + size_t(L) * NC, P + off_norm_,
                      A.mf.data(), A.rf.data(), N, 1, C);
  float* p = W.scratch.data();
  auto take = [&](size_t n) { float* q = p; p += size_t(N) * n; return q; };
  float *dmix = take(6 * C), *dr = take(C), *dk = take(C), *dv = take(C), *dw = take(C), *dalpha = take(C);
  float *dbeta = take(C), *dkmod = take(C), *dvmod = take(C), *dy = take(C), *dyn = take(C), *dout = take(C);
  float *dg = take(C), *dwl = take(C), *dal = take(C), *dvl = take(C), *dr2 = take(C), *dk2 = take(C), *dv2 = take(C);
  float *dwh = take(rw), *dah = take(ra), *dvh = take(rv), *dgh = take(rg), *dF = take(F);
  GdrShape s;
  s.B = B, s.T = T, s.H = H, s.Dk = D, s.Dv = D;
  for (int l = L - 1; l >= 0; --l) {
    const int slot = recompute_ ? 0 : l;
    const Acts t = slot_acts(slot);
    const float* x = A.res.data() + size_t(l) * NC;
    if (recompute_) {
      A.state.zero();
      layer_forward(l, t, x, B, T, nullptr, A.state.data(), A.vfirst.data(), dtmp);  // output unused
    }
    LayerParams w = layer(P, l), gw = layer(G, l);
    // ---- channel mix: out = xmid + W_value relu^2(W_key fx) ----
    linear_bwd(dF, gw.fval, nullptr, dx, t.fact, w.fval, N, F, C, false);
    ops_->act_bwd(dF, dF, t.fpre, size_t(N) * F, 2);
    linear_bwd(dtmp, gw.fkey, nullptr, dF, t.fx, w.fkey, N, C, F, false);
    ops_->token_shift_bwd(dh, gw.ffn_mu, dtmp, t.h2, nullptr, w.ffn_mu, B, T, C, 1);
    ops_->layernorm_bwd(dtmp, gw.ln2_w, gw.ln2_b, dh, t.xmid, w.ln2_w, t.m2, t.r2, N, 1, C);
    ops_->add(dx, dx, dtmp, NC);  // dx = d(xmid)
    // ---- time mix: xmid = x + W_o o ----
    linear_bwd(dout, gw.wo, nullptr, dx, t.o, w.wo, N, C, C, false);
    ops_->rwkv7_out_bwd(dyn, dr2, dk2, dv2, gw.rk, dg, dout, t.yn, t.r, t.kmod, t.vmod, w.rk, t.g, N, H, D);
    ops_->layernorm_bwd(dy, gw.gn_w, gw.gn_b, dyn, t.y, w.gn_w, t.gm, t.gr, N, H, D);
    A.state.zero();
    ops_->gdr_bwd(dr, dw, dalpha, dbeta, dkmod, dvmod, W.dstate.data(), dy, nullptr, t.r, t.w, t.alpha, t.beta,
                  t.kmod, t.vmod, A.state.data(), s);
    ops_->add(dr, dr, dr2, NC), ops_->add(dkmod, dkmod, dk2, NC), ops_->add(dvmod, dvmod, dv2, NC);
    ops_->rwkv7_prep_bwd(dk, dv, dwl, dal, dvl, l > 0 ? W.dvfirst.data() : nullptr, gw.kkw, gw.ka, dw, dkmod, dvmod,
                         dalpha, dbeta, t.k, t.v, t.wl, t.al, t.vl, l > 0 ? A.vfirst.data() : nullptr, w.kkw, w.ka,
                         t.rnorm, N, H, D);
    if (l == 0) ops_->add(dv, dv, W.dvfirst.data(), NC);  // every later layer's value residual
    float *dxr = dmix, *dxw = dmix + NC, *dxk = dmix + 2 * NC, *dxv = dmix + 3 * NC, *dxa = dmix + 4 * NC,
          *dxg = dmix + 5 * NC;
    const float *xr = t.mix, *xw = t.mix + NC, *xk = t.mix + 2 * NC, *xv = t.mix + 3 * NC, *xa = t.mix + 4 * NC,
                *xg = t.mix + 5 * NC;
    linear_bwd(dxr, gw.wr, nullptr, dr, xr, w.wr, N, C, C, false);
    linear_bwd(dxk, gw.wk, nullptr, dk, xk, w.wk, N, C, C, false);
    linear_bwd(dxv, gw.wv, nullptr, dv, xv, w.wv, N, C, C, false);
    linear_bwd(dwh, gw.w2, gw.w0, dwl, t.wha, w.w2, N, rw, C, false);
    ops_->act_bwd(dwh, dwh, t.whp, size_t(N) * rw, 0);
    linear_bwd(dxw, gw.w1, nullptr, dwh, xw, w.w1, N, C, rw, false);
    linear_bwd(dah, gw.a2, gw.a0, dal, t.ah, w.a2, N, ra, C, false);
    linear_bwd(dxa, gw.a1, nullptr, dah, xa, w.a1, N, C, ra, false);
    if (l > 0) {
      linear_bwd(dvh, gw.v2, gw.v0, dvl, t.vh, w.v2, N, rv, C, false);
      linear_bwd(dxv, gw.v1, nullptr, dvh, xv, w.v1, N, C, rv, true);
    }
    linear_bwd(dgh, gw.g2, nullptr, dg, t.ga, w.g2, N, rg, C, false);
    ops_->act_bwd(dgh, dgh, t.gp, size_t(N) * rg, 1);
    linear_bwd(dxg, gw.g1, nullptr, dgh, xg, w.g1, N, C, rg, false);
    ops_->token_shift_bwd(dh, gw.mu, dmix, t.h1, nullptr, w.mu, B, T, C, 6);
    ops_->layernorm_bwd(dtmp, gw.ln1_w, gw.ln1_b, dh, x, w.ln1_w, t.m1, t.r1, N, 1, C);
    ops_->add(dx, dx, dtmp, NC);  // dx = d(x) of layer l
  }
  ops_->layernorm_bwd(dh, G + off_pre_, G + off_pre_ + C, dx, A.emb.data(), P + off_pre_, A.m0.data(), A.r0.data(), N,
                      1, C);
  adding_to_grads(G + off_embed_, size_t(cfg_.vocab_size) * C);  // a tied LM head set it first
  ops_->embedding_bwd(G + off_embed_, dh, A.ids.data(), N, C);
  end_backward_grads();
}

std::vector<LayerKVCache> Rwkv7::empty_caches() const {
  const size_t C = cfg_.hidden_size, D = cfg_.head_dim;
  std::vector<LayerKVCache> c(cfg_.num_layers);
  for (auto& l : c) {
    l.k = Buffer<float>(ops_->mem), l.v = Buffer<float>(ops_->mem);
    l.conv_state = Buffer<float>(ops_->mem, 2 * C);  // token-shift vectors: time mix, channel mix
    l.rec_state = Buffer<float>(ops_->mem, C * D);   // wkv state [H, N, N]
    l.conv_state.zero(), l.rec_state.zero();
  }
  return c;
}

void Rwkv7::forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                           bool all_logits) const {
  const int C = cfg_.hidden_size, V = cfg_.vocab_size, L = cfg_.num_layers;
  SR_ASSERT(int(caches.size()) == L, "forward_cached: cache count != layers");
  if (n <= 0) return;
  check_ids(ids, nullptr, n, "input");
  const int64_t pos0 = caches[0].n_seen;
  const MemOps& mem = *ops_->mem;
  float* P = const_cast<Rwkv7*>(this)->backend_params();
  const float eps = float(cfg_.norm_eps);
  Buffer<int32_t> dids(&mem, n);
  dids.upload(ids, n);
  Buffer<float> e(&mem, size_t(n) * C), x(&mem, size_t(n) * C), st(&mem, 2 * size_t(n)), vfirst(&mem, size_t(n) * C);
  Buffer<float> scratch(&mem, size_t(n) * floats_per_token());
  const Acts t = carve(scratch.data(), n);
  const int first = all_logits ? 0 : n - 1, rows = n - first;
  Buffer<float> logits(&mem, size_t(rows) * V);
  for (const LayerKVCache& c : caches) SR_ASSERT(c.n_seen == pos0, "forward_cached: layer caches out of step");
  auto key = [&] {  // the step's buffers and every layer's states
    std::vector<uintptr_t> k =
        step_key(n, first, {dids.data(), e.data(), x.data(), st.data(), vfirst.data(), scratch.data(), logits.data()});
    for (const LayerKVCache& c : caches) k.push_back(uintptr_t(c.conv_state.data())), k.push_back(uintptr_t(c.rec_state.data()));
    return k;
  };
  run_cached_step(n, key, [&] {
    ops_->embedding_fwd(e.data(), dids.data(), P + off_embed_, n, C);
    ops_->layernorm_fwd(x.data(), st.data(), st.data() + n, e.data(), P + off_pre_, P + off_pre_ + C, n, 1, C, eps);
    for (int l = 0; l < L; ++l) {
      LayerKVCache& c = caches[l];
      layer_forward(l, t, x.data(), 1, n, c.conv_state.data(), c.rec_state.data(), vfirst.data(), x.data());
    }
    ops_->layernorm_fwd(e.data(), st.data(), st.data() + n, x.data() + size_t(first) * C, P + off_norm_,
                        P + off_norm_ + C, rows, 1, C, eps);
    linear(logits.data(), e.data(), P + off_lm_head_, nullptr, rows, C, V, true);
  });
  for (LayerKVCache& c : caches) c.n_seen += n;
  logits.download(logits_out, size_t(rows) * V);
}

}  // namespace sr
