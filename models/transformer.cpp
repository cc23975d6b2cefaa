#include "models/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace sr {


Transformer::Transformer(const ModelConfig& cfg, const OpsTable* ops) : LanguageModel(cfg) {
  cfg_.validate("model config");
  const int64_t C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const int64_t qd = int64_t(cfg_.num_heads) * cfg_.head_dim, kvd = int64_t(cfg_.num_kv_heads) * cfg_.head_dim;
  off_embed_ = add_param("model.embed_tokens.weight", {V, C});
  for (int l = 0; l < cfg_.num_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    layer_off_.push_back(add_param(p + "input_layernorm.weight", {C}));
    if (cfg_.is_linear(l)) {  // Gated DeltaNet, Qwen3.5 layout
      const int64_t Kd = int64_t(cfg_.linear_num_key_heads) * cfg_.linear_key_head_dim;
      const int64_t Vd = int64_t(cfg_.linear_num_value_heads) * cfg_.linear_value_head_dim, Hv = cfg_.linear_num_value_heads;
      std::string g = p + "linear_attn.";
      add_param(g + "in_proj_qkv.weight", {2 * Kd + Vd, C});
      add_param(g + "in_proj_z.weight", {Vd, C});
      add_param(g + "in_proj_b.weight", {Hv, C});
      add_param(g + "in_proj_a.weight", {Hv, C});
      add_param(g + "conv1d.weight", {2 * Kd + Vd, 1, cfg_.linear_conv_kernel_dim});
      add_param(g + "dt_bias", {Hv});
      add_param(g + "A_log", {Hv});
      add_param(g + "norm.weight", {cfg_.linear_value_head_dim});
      add_param(g + "out_proj.weight", {C, Vd});
    } else {
      const int64_t qrows = qd * (cfg_.attn_output_gate ? 2 : 1);  // Qwen3.5: [q | gate] per head
      add_param(p + "self_attn.q_proj.weight", {qrows, C});
      if (cfg_.attention_bias) add_param(p + "self_attn.q_proj.bias", {qrows});
      add_param(p + "self_attn.k_proj.weight", {kvd, C});
      if (cfg_.attention_bias) add_param(p + "self_attn.k_proj.bias", {kvd});
      add_param(p + "self_attn.v_proj.weight", {kvd, C});
      if (cfg_.attention_bias) add_param(p + "self_attn.v_proj.bias", {kvd});
      add_param(p + "self_attn.o_proj.weight", {C, qd});
      if (cfg_.qk_norm) {
        add_param(p + "self_attn.q_norm.weight", {cfg_.head_dim});
        add_param(p + "self_attn.k_norm.weight", {cfg_.head_dim});
      }
    }
    add_param(p + "post_attention_layernorm.weight", {C});
    add_param(p + "mlp.gate_proj.weight", {F, C});
    add_param(p + "mlp.up_proj.weight", {F, C});
    add_param(p + "mlp.down_proj.weight", {C, F});
  }
  off_norm_ = add_param("model.norm.weight", {C});
  off_lm_head_ = cfg_.tie_word_embeddings ? off_embed_ : add_param("lm_head.weight", {V, C});
  finish_params(ops);
  if (cfg_.zero_centered_norm) {  // every RMSNorm but the GDN gated norm scales by 1 + w
    size_t eff = 0;
    for (const ParamSpec& sp : specs_) {
      const bool norm = sp.name.find("layernorm.weight") != std::string::npos || sp.name == "model.norm.weight" ||
                        sp.name.find("q_norm.weight") != std::string::npos ||
                        sp.name.find("k_norm.weight") != std::string::npos;
      if (!norm) continue;
      const size_t n = size_t(shape_numel(sp.shape));
      norm_map_.push_back({sp.offset, eff, n});
      eff += n;
    }
  }
}

// Zero-centred RMSNorms (Qwen3.5) run with weight 1 + w: the effective weights live in norm_eff_,
// refreshed from the parameters at the start of every forward; gradients still land on w.
void Transformer::refresh_norms() const {
  if (norm_map_.empty()) return;
  const NormSlot& last = norm_map_.back();
  fit(norm_eff_, last.eff + last.n);
  size_t mx = 0;
  for (const NormSlot& ns : norm_map_) mx = std::max(mx, ns.n);
  if (norm_ones_.size() != mx || norm_ones_.mem() != ops_->mem) {
    fit(norm_ones_, mx);
    std::vector<float> ones(mx, 1.0f);
    norm_ones_.upload(ones.data(), mx);
  }
  const float* P = const_cast<Transformer*>(this)->backend_params();
  for (const NormSlot& ns : norm_map_) ops_->add(norm_eff_.data() + ns.eff, P + ns.off, norm_ones_.data(), ns.n);
}

const float* Transformer::nw(const float* w) const {
  if (norm_map_.empty()) return w;
  const size_t off = size_t(w - const_cast<Transformer*>(this)->backend_params());
  for (const NormSlot& ns : norm_map_)
    if (ns.off == off) return norm_eff_.data() + ns.eff;
  return w;
}

void Transformer::check_backend(const OpsTable& ops) const {
  if (cfg_.any_linear() && !ops.delta_rule_fwd)
    fail("--device", std::string("linear_attention (Gated DeltaNet) layers have no ") + ops.name +
                         " kernels yet; run this model on the CPU");
}

std::vector<float> Transformer::last_logits() const {
  SR_ASSERT(act_.N > 0 && act_.logit_rows == act_.N, "last_logits: the last batch's logits were computed in chunks");
  // (the forward keeps them only as bf16 where the backend takes MirrorFill::gemm_output)
  if (std::find(bf16_kept_.begin(), bf16_kept_.end(), act_.logits.data()) == bf16_kept_.end())
    return act_.logits.to_vector();
  const size_t n = act_.logits.size();  // kept as bf16: widened by a copy, which reads the bf16 values
  Buffer<float> wide(ops_->mem, n);
  ops_->strided_copy(wide.data(), n, act_.logits.data(), n, 1, n);
  return wide.to_vector();
}

Transformer::LayerParams Transformer::layer(float* base, int l) const {
  const size_t C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  const bool bias = cfg_.attention_bias;
  float* p = base + layer_off_[l];
  LayerParams w{};
  w.ln1 = p, p += C;
  if (cfg_.is_linear(l)) {
    const size_t Kd = size_t(cfg_.linear_num_key_heads) * cfg_.linear_key_head_dim;
    const size_t Vd = size_t(cfg_.linear_num_value_heads) * cfg_.linear_value_head_dim, Hv = cfg_.linear_num_value_heads;
    const size_t Cc = 2 * Kd + Vd;
    w.qkv = p, p += Cc * C;
    w.wz = p, p += Vd * C;
    w.wb = p, p += Hv * C;
    w.wa = p, p += Hv * C;
    w.conv = p, p += Cc * cfg_.linear_conv_kernel_dim;
    w.dt_bias = p, p += Hv;
    w.A_log = p, p += Hv;
    w.gnorm = p, p += cfg_.linear_value_head_dim;
    w.wout = p, p += C * Vd;
  } else {
    const size_t qrows = qd * (cfg_.attn_output_gate ? 2 : 1);
    w.wq = p, p += qrows * C;
    w.bq = bias ? p : nullptr, p += bias ? qrows : 0;
    w.wk = p, p += kvd * C;
    w.bk = bias ? p : nullptr, p += bias ? kvd : 0;
    w.wv = p, p += kvd * C;
    w.bv = bias ? p : nullptr, p += bias ? kvd : 0;
    w.wo = p, p += C * qd;
    if (cfg_.qk_norm) w.qn = p, p += cfg_.head_dim, w.kn = p, p += cfg_.head_dim;
  }
  w.ln2 = p, p += C;  // the MLP half is the same for every layer kind
  w.wg = p, p += F * C;
  w.wu = p, p += F * C;
  w.wd = p;
  return w;
}

// Gated DeltaNet time step at initialization: dt = softplus(dt_bias) log-uniform in [1e-3, 1e-1]
// (the Mamba2 / flash-linear-attention training init), so the per-token decay exp(-A dt) with A in
// [1, 16) starts between 0.2 and 0.999: heads that remember tens to thousands of tokens. (The
// Qwen3-Next loading default dt_bias = 1 gives dt = 1.31 and decays of 0.27 or less: a state that
// forgets nearly everything after one token, from which a small model trained from scratch never
// learned to recall; docs/RESULTS.md, Gated DeltaNet.) `u` is uniform in [0, 1).
static float gdn_dt_bias_init(float u) {
  const double lo = std::log(1e-3), hi = std::log(1e-1);
  const double dt = std::max(1e-4, std::exp(lo + double(u) * (hi - lo)));
  return float(dt + std::log(-std::expm1(-dt)));  // inverse softplus: softplus(dt_bias) = dt
}

void Transformer::init_random(uint64_t seed, float std) {
  const float out_std = std / std::sqrt(2.0f * cfg_.num_layers);  // residual-branch outputs (GPT-2 style)
  // Each tensor is filled in blocks of 2^16 elements, each from its own stream (seed, tensor,
  // block): the values do not depend on the thread count, and a 3B model initializes on all cores.
  constexpr size_t kBlock = size_t(1) << 16;
  struct Block { size_t spec, begin, end; };
  std::vector<Block> blocks;
  for (size_t t = 0; t < specs_.size(); ++t) {
    const size_t n = size_t(shape_numel(specs_[t].shape));
    for (size_t b = 0; b < n; b += kBlock) blocks.push_back({t, b, std::min(n, b + kBlock)});
  }
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < int64_t(blocks.size()); ++i) {
    const Block& blk = blocks[size_t(i)];
    const auto& s = specs_[blk.spec];
    Rng rng(seed + 0x9e3779b97f4a7c15ULL * (blk.spec + 1) + 0xd1b54a32d192ed03ULL * (blk.begin / kBlock + 1));
    float* p = params_.data() + s.offset;
    bool is_norm = s.name.find("norm") != std::string::npos;
    bool is_bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
    bool is_out = s.name.find("o_proj") != std::string::npos || s.name.find("down_proj") != std::string::npos ||
                  s.name.find("out_proj") != std::string::npos;
    const bool is_alog = s.name.find("A_log") != std::string::npos, is_dtb = s.name.find("dt_bias") != std::string::npos;
    for (size_t j = blk.begin; j < blk.end; ++j) {
      if (is_alog) p[j] = std::log(1.0f + 15.0f * float(rng.uniform()));  // A in [1, 16), as Qwen3-Next inits
      else if (is_dtb) p[j] = gdn_dt_bias_init(rng.uniform());
      else p[j] = is_norm ? (cfg_.zero_centered_norm && s.name.find("linear_attn.norm") == std::string::npos ? 0.0f : 1.0f)
                  : is_bias ? 0.0f : rng.normal() * (is_out ? out_std : std);
    }
  }
  upload_params();
}

AttnShape Transformer::attn_shape(int B, int Tq, int Tk, int l) const {
  AttnShape s;
  s.B = B, s.Tq = Tq, s.Tk = Tk, s.Hq = cfg_.num_heads, s.Hkv = cfg_.num_kv_heads, s.D = cfg_.head_dim;
  s.window = cfg_.window_of(l);
  s.scale = 1.0f / std::sqrt(float(cfg_.head_dim));
  return s;
}

// q[N,Hq*D], k,v[N,Hkv*D] = projections of h[N,C]; RoPE applied to q and k at positions pos[N].
void Transformer::project_qkv(const LayerParams& w, const float* h, int N, const int32_t* pos, float* q, float* k,
                              float* v, float* gate, float* scratch, const QxActs* keep, bool cached) const {
  const int C = cfg_.hidden_size, D = cfg_.head_dim, Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, R = cfg_.rotary();
  const size_t rq = size_t(N) * Hq, rk = size_t(N) * Hkv;
  if (cfg_.attn_output_gate) {  // q_proj rows per head: [q (D) | gate (D)]
    linear(scratch, h, w.wq, w.bq, N, C, 2 * Hq * D, cached);
    ops_->strided_copy(q, D, scratch, 2 * size_t(D), rq, D);
    ops_->strided_copy(gate, D, scratch + D, 2 * size_t(D), rq, D);
  } else {
    linear(q, h, w.wq, w.bq, N, C, Hq * D, cached);
  }
  linear(k, h, w.wk, w.bk, N, C, Hkv * D, cached);
  linear(v, h, w.wv, w.bv, N, C, Hkv * D, cached);
  const float eps = float(cfg_.rms_norm_eps);
  if (cfg_.qk_norm) {  // RMSNorm over each head's D; training keeps the inputs and rstd
    if (keep) {
      ops_->strided_copy(keep->qpre, 1, q, 1, 1, rq * D);
      ops_->strided_copy(keep->kpre, 1, k, 1, 1, rk * D);
    }
    ops_->rmsnorm_fwd(q, keep ? keep->rq : scratch, q, nw(w.qn), int(rq), D, eps);
    ops_->rmsnorm_fwd(k, keep ? keep->rk : scratch, k, nw(w.kn), int(rk), D, eps);
  }
  if (R == D) {
    if (N == 1 && k == q + rq * D) {  // one token, k right after q: one row of Hq + Hkv heads
      ops_->rope_fwd(q, q, pos, 1, Hq + Hkv, D, cfg_.rope_theta);
      return;
    }
    if (keep) {  // training: RoPE writes bf16 copies of q and k, the attention's operands (forward and backward)
      keep_bf16(q, rq * D, MirrorFill::by_next_op);
      keep_bf16(k, rk * D, MirrorFill::by_next_op);
    }
    ops_->rope_fwd(q, q, pos, N, Hq, D, cfg_.rope_theta);
    ops_->rope_fwd(k, k, pos, N, Hkv, D, cfg_.rope_theta);
    return;
  }
  for (auto [x, H, rows] : {std::tuple{q, Hq, rq}, std::tuple{k, Hkv, rk}}) {  // rotate the first R dims only
    ops_->strided_copy(scratch, R, x, D, rows, R);
    ops_->rope_fwd(scratch, scratch, pos, N, H, R, cfg_.rope_theta);
    ops_->strided_copy(x, D, scratch, R, rows, R);
  }
}

// out[N,C] = down(silu(gate h2) * up h2); g,u,a [N,F] kept for backward.
void Transformer::mlp_forward(const LayerParams& w, const float* h2, int N, float* g, float* u, float* a,
                              float* out, bool cached, bool keep_a, const float* res) const {
  const int C = cfg_.hidden_size, F = cfg_.intermediate_size;
  const bool adjacent = w.wu == w.wg + size_t(F) * C;  // [wg; wu]: one [2F, C] block
  if (N == 1 && cached && adjacent && linear_swiglu(a, h2, w.wg, 1, C, F)) {  // decode: one fused op
    linear(out, a, w.wd, nullptr, N, F, C, cached);
    return;
  }
  if (N == 1 && adjacent && u == g + F) {
    linear(g, h2, w.wg, nullptr, 1, C, 2 * F, cached);  // one token: [g | u] = [wg; wu] h2 in one product
  } else {
    if (keep_a) keep_bf16(g, size_t(N) * F, MirrorFill::gemm_output), keep_bf16(u, size_t(N) * F, MirrorFill::gemm_output);
    linear(g, h2, w.wg, nullptr, N, C, F, cached);
    linear(u, h2, w.wu, nullptr, N, C, F, cached);
  }
  if (keep_a) keep_bf16(a, size_t(N) * F, mlp_fill());  // swiglu_fwd writes its bf16 copy (alone)
  ops_->swiglu_fwd(a, g, u, N, F);
  if (!out) return;
  if (res) linear_residual(out, res, a, w.wd, N, F, C, cached);
  else linear(out, a, w.wd, nullptr, N, F, C, cached);
}

void Transformer::linear_residual(float* out, const float* res, const float* x, const float* W, int N, int I, int O,
                                  bool cached) const {
  if (!cached && ops_->linear_fwd_add) {
    ops_->linear_fwd_add(out, res, x, W, N, I, O);
    return;
  }
  linear(out, x, W, nullptr, N, I, O, cached);
  ops_->add(out, res, out, size_t(N) * O);
}

bool Transformer::keep_bf16(const float* x, size_t n, MirrorFill how) const {
  if (!ops_->mirror_activation || act_.N < 64) return false;  // below 64 rows GEMMs keep fp32 operands
  if (bf16_ops_ != ops_) drop_bf16_activations();
  bf16_ops_ = ops_;
  const bool kept = ops_->mirror_activation(x, n, how);
  const auto it = std::find(bf16_kept_.begin(), bf16_kept_.end(), x);
  if (kept && it == bf16_kept_.end()) bf16_kept_.push_back(x);
  if (!kept && it != bf16_kept_.end()) bf16_kept_.erase(it);  // declined: none now (the backend released it)
  return kept;
}
// The SwiGLU product and its two gradients are read only by the MLP's GEMMs (down_proj forward and
// backward; gate_proj / up_proj backward), which all run on bf16 operands when every dimension is
// at least 64 (rows: keep_bf16's own condition): then their bf16 copies are the only ones written.
MirrorFill Transformer::mlp_fill() const {
  return std::min(cfg_.hidden_size, cfg_.intermediate_size) >= 64 ? MirrorFill::only_mirror : MirrorFill::by_next_op;
}
// (through the backend that made them: set_ops() switches ops_ before it drops the activations)
void Transformer::drop_bf16_activations(bool keep_logits) const {
  const float* kept = keep_logits ? act_.logits.data() : nullptr;
  std::erase_if(bf16_kept_, [&](const float* x) {
    if (x == kept) return false;
    bf16_ops_->mirror_activation(x, 0, MirrorFill::copy_now);
    return true;
  });
}

float Transformer::forward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T) {
  const int N = B * T, C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size, L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  check_ids(ids, targets, N, "forward");
  drop_bf16_activations();  // the buffers below are rewritten (or reallocated)
  refresh_norms();
  B_ = B, T_ = T;
  Activations& A = act_;
  if (A.N != N || A.res.mem() != ops_->mem) {  // batches of varying length reuse the same memory
    A.N = N;
    A.logit_rows = int(std::max<size_t>(1, std::min<size_t>(N, logits_chunk_floats() / size_t(V))));
    const size_t S = recompute_ ? 1 : size_t(L);  // activation slots
    fit(A.res, size_t(L + 1) * N * C);
    fit(A.h1, S * N * C), fit(A.rstd1, S * N);
    fit(A.q, S * N * qd), fit(A.k, S * N * kvd), fit(A.v, S * N * kvd);
    fit(A.att, S * N * qd), fit(A.lse, S * N * cfg_.num_heads);
    fit(A.xmid, S * N * C), fit(A.h2, S * N * C), fit(A.rstd2, S * N);
    fit(A.g, S * N * F), fit(A.u, S * N * F), fit(A.a, S * N * F);
    fit(A.hf, size_t(N) * C), fit(A.rstdf, N), fit(A.logits, size_t(A.logit_rows) * V);
    fit(A.lse_x, N), fit(A.loss, N), fit(A.pos, N), fit(A.ids, N), fit(A.targets, N);
    fit(A.tmp, size_t(N) * C);
    fit(A.qx, S * N * qx_floats_per_token());
    if (cfg_.any_linear()) {
      fit(A.gdn, S * N * gdn_floats_per_token());
      fit(A.gdn_state, size_t(B) * cfg_.linear_num_value_heads * cfg_.linear_key_head_dim * cfg_.linear_value_head_dim);
    }
  }
  A.ids.upload(ids, N);
  A.targets.upload(targets, N);
  A.host_targets.assign(targets, targets + N);
  A.host_weights.assign(weights, weights + N);
  std::vector<int32_t> pos(N);
  for (int i = 0; i < N; ++i) pos[i] = i % T;
  A.pos.upload(pos.data(), N);
  // the LM head's product is read only by the cross-entropy ops (and last_logits()): kept as bf16
  keep_bf16(A.logits.data(), size_t(A.logit_rows) * V, MirrorFill::gemm_output);

  float* P = backend_params();
  ops_->embedding_fwd(A.res.data(), A.ids.data(), P + off_embed_, N, C);
  for (int l = 0; l < L; ++l) layer_forward(l, recompute_ ? 0 : l, true);
  keep_bf16(A.hf.data(), size_t(N) * C, MirrorFill::by_next_op);  // rmsnorm_fwd writes the bf16 copy too
  ops_->rmsnorm_fwd(A.hf.data(), A.rstdf.data(), A.res.data() + size_t(L) * N * C, nw(P + off_norm_), N, C,
                    cfg_.rms_norm_eps);
  head_done_ = nullptr;
  if (head_in_forward_) {
    // forward_backward: each chunk's backward while its logits are at hand, in the order backward()
    // takes the chunks (so the head's weight gradient sums them in the same order)
    weight_sum_ = loss_weight_sum(targets, weights, N);  // the loss gradient's denominator
    float* G = head_backward_begin(head_scale_);
    for (int r0 = 0; r0 < N; r0 += A.logit_rows) {
      const int rows = std::min(A.logit_rows, N - r0);
      lm_head_rows(r0, rows);
      head_backward_rows(G, r0, rows);
    }
    head_done_ = G;
  } else {
    // the LM head chunk by chunk, the last chunk first: backward() starts with chunk 0, still held
    for (int r0 = (N - 1) / A.logit_rows * A.logit_rows; r0 >= 0; r0 -= A.logit_rows)
      lm_head_rows(r0, std::min(A.logit_rows, N - r0));
  }
  return reduce_loss(A.loss.to_vector(), targets, weights, N);
}

float Transformer::forward_backward(const int32_t* ids, const int32_t* targets, const float* weights, int B, int T,
                                    float loss_scale) {
  struct Flag {
    bool& f;
    ~Flag() { f = false; }
  } reset{head_in_forward_};
  head_in_forward_ = true, head_scale_ = loss_scale;
  const float loss = forward(ids, targets, weights, B, T);
  backward(loss_scale);
  return loss;
}

Transformer::LayerActs Transformer::layer_acts(int slot) {
  Activations& A = act_;
  const size_t N = A.N, C = cfg_.hidden_size, F = cfg_.intermediate_size, H = cfg_.num_heads;
  const size_t qd = H * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim, o = size_t(slot) * N;
  return {A.h1.data() + o * C,   A.rstd1.data() + o,     A.q.data() + o * qd,   A.k.data() + o * kvd,
          A.v.data() + o * kvd,  A.att.data() + o * qd,  A.lse.data() + o * H,  A.xmid.data() + o * C,
          A.h2.data() + o * C,   A.rstd2.data() + o,     A.g.data() + o * F,    A.u.data() + o * F,
          A.a.data() + o * F};
}

size_t Transformer::qx_floats_per_token() const {
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  return (cfg_.attn_output_gate ? 2 * qd : 0) + (cfg_.qk_norm ? qd + kvd + cfg_.num_heads + cfg_.num_kv_heads : 0);
}

Transformer::QxActs Transformer::qx_acts(int slot) {
  const size_t N = act_.N, qd = size_t(cfg_.num_heads) * cfg_.head_dim;
  const size_t kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  float* p = act_.qx.data() + size_t(slot) * N * qx_floats_per_token();
  auto take = [&](bool on, size_t n) { float* q = on ? p : nullptr; p += on ? N * n : 0; return q; };
  QxActs x{};
  x.gate = take(cfg_.attn_output_gate, qd), x.attg = take(cfg_.attn_output_gate, qd);
  x.qpre = take(cfg_.qk_norm, qd), x.kpre = take(cfg_.qk_norm, kvd);
  x.rq = take(cfg_.qk_norm, cfg_.num_heads), x.rk = take(cfg_.qk_norm, cfg_.num_kv_heads);
  return x;
}

void Transformer::layer_forward(int l, int slot, bool write_out) {
  Activations& A = act_;
  const int N = A.N, C = cfg_.hidden_size, qd = cfg_.num_heads * cfg_.head_dim;
  LayerParams w = layer(backend_params(), l);
  LayerActs t = layer_acts(slot);
  const float* x = A.res.data() + size_t(l) * N * C;
  float* tmp = A.tmp.data();
  keep_bf16(t.h1, size_t(N) * C, MirrorFill::by_next_op);
  ops_->rmsnorm_fwd(t.h1, t.rstd1, x, nw(w.ln1), N, C, cfg_.rms_norm_eps);
  if (cfg_.is_linear(l)) {
    A.gdn_state.zero();  // each training sequence starts from an empty state
    gdn_forward(w, gdn_acts(slot), t.h1, B_, T_, nullptr, A.gdn_state.data(), tmp);
    ops_->add(t.xmid, x, tmp, size_t(N) * C);
  } else {
    const QxActs x2 = qx_acts(slot);
    fit(work_.qx, size_t(N) * 2 * qd);  // projection scratch
    project_qkv(w, t.h1, N, A.pos.data(), t.q, t.k, t.v, x2.gate, work_.qx.data(), &x2);
    ops_->attention_fwd(t.att, t.lse, t.q, t.k, t.v, attn_shape(B_, T_, T_, l));
    const float* o_in = t.att;
    if (cfg_.attn_output_gate) {  // attg = att * sigmoid(gate)
      ops_->act_fwd(x2.attg, x2.gate, size_t(N) * qd, 1);
      ops_->mul(x2.attg, x2.attg, t.att, size_t(N) * qd);
      o_in = x2.attg;
    }
    keep_bf16(o_in, size_t(N) * qd);
    linear_residual(t.xmid, x, o_in, w.wo, N, qd, C, false);  // xmid = x + o_proj(att)
  }
  keep_bf16(t.h2, size_t(N) * C, MirrorFill::by_next_op);
  ops_->rmsnorm_fwd(t.h2, t.rstd2, t.xmid, nw(w.ln2), N, C, cfg_.rms_norm_eps);
  // the layer's output = xmid + down_proj(a) (the recomputation of a layer in the backward needs
  // only its activations: no output then)
  mlp_forward(w, t.h2, N, t.g, t.u, t.a, write_out ? A.res.data() + size_t(l + 1) * N * C : nullptr, false, true,
              t.xmid);
}

// ---- Gated DeltaNet (linear_attention) layers ----
namespace {
struct GdnDims {
  int Hk, Hv, Dk, Dv, K, Kd, Vd;
  explicit GdnDims(const ModelConfig& c)
      : Hk(c.linear_num_key_heads), Hv(c.linear_num_value_heads), Dk(c.linear_key_head_dim),
        Dv(c.linear_value_head_dim), K(c.linear_conv_kernel_dim), Kd(Hk * Dk), Vd(Hv * Dv) {}
  DeltaShape shape(int B, int T) const {
    DeltaShape s;
    s.B = B, s.T = T, s.Hk = Hk, s.Hv = Hv, s.Dk = Dk, s.Dv = Dv, s.scale = 1.0f / std::sqrt(float(Dk));
    return s;
  }
};
}  // namespace

size_t Transformer::gdn_floats_per_token() const {
  GdnDims d(cfg_);
  return size_t(4) * d.Kd + size_t(5) * d.Vd + 2 * size_t(d.Hk) + 5 * size_t(d.Hv);
}

// Carves one slot of N tokens: qp kp vp (conv inputs), qn kn (normalized conv outputs), vc, rq rk,
// z, a, b, g, beta, o (delta rule output), rstd, on (gated-norm output).
Transformer::GdnActs Transformer::carve_gdn(float* p, size_t N) const {
  const GdnDims d(cfg_);
  const int Kd = d.Kd, Vd = d.Vd, Hk = d.Hk, Hv = d.Hv;
  GdnActs t{};
  auto take = [&](size_t n) { float* q = p; p += N * n; return q; };
  t.qp = take(Kd), t.kp = take(Kd), t.vp = take(Vd), t.qn = take(Kd), t.kn = take(Kd), t.vc = take(Vd);
  t.rq = take(Hk), t.rk = take(Hk), t.z = take(Vd), t.a = take(Hv), t.b = take(Hv), t.g = take(Hv);
  t.beta = take(Hv), t.o = take(Vd), t.rstd = take(Hv), t.on = take(Vd);
  return t;
}

Transformer::GdnActs Transformer::gdn_acts(int slot) {
  return carve_gdn(act_.gdn.data() + size_t(slot) * act_.N * gdn_floats_per_token(), act_.N);
}

void Transformer::gdn_forward(const LayerParams& w, const GdnActs& t, const float* h, int B, int T, float* conv_state,
                              float* rec_state, float* out) const {
  const GdnDims d(cfg_);
  const int N = B * T, C = cfg_.hidden_size, K = d.K;
  const bool cached = conv_state != nullptr;  // inference streams its states
  linear(t.qp, h, w.qkv, nullptr, N, C, d.Kd, cached);
  linear(t.kp, h, w.qkv + size_t(d.Kd) * C, nullptr, N, C, d.Kd, cached);
  linear(t.vp, h, w.qkv + size_t(2 * d.Kd) * C, nullptr, N, C, d.Vd, cached);
  float* cs = conv_state;  // [2Kd+Vd, K-1] rows: q channels, k channels, v channels
  ops_->causal_conv_fwd(t.qn, cs, t.qp, w.conv, B, T, d.Kd, K);
  ops_->causal_conv_fwd(t.kn, cs ? cs + size_t(d.Kd) * (K - 1) : nullptr, t.kp, w.conv + size_t(d.Kd) * K, B, T, d.Kd, K);
  ops_->causal_conv_fwd(t.vc, cs ? cs + size_t(2 * d.Kd) * (K - 1) : nullptr, t.vp, w.conv + size_t(2 * d.Kd) * K, B, T,
                        d.Vd, K);
  ops_->l2norm_fwd(t.qn, t.rq, t.qn, N * d.Hk, d.Dk);
  ops_->l2norm_fwd(t.kn, t.rk, t.kn, N * d.Hk, d.Dk);
  linear(t.z, h, w.wz, nullptr, N, C, d.Vd, cached);
  linear(t.a, h, w.wa, nullptr, N, C, d.Hv, cached);
  linear(t.b, h, w.wb, nullptr, N, C, d.Hv, cached);
  ops_->gdn_gates_fwd(t.g, t.beta, t.a, t.b, w.A_log, w.dt_bias, N, d.Hv);
  ops_->delta_rule_fwd(t.o, rec_state, t.qn, t.kn, t.vc, t.g, t.beta, d.shape(B, T));
  ops_->gated_rmsnorm_fwd(t.on, t.rstd, t.o, t.z, w.gnorm, N * d.Hv, d.Dv, float(cfg_.rms_norm_eps));
  linear(out, t.on, w.wout, nullptr, N, d.Vd, C, cached);
}

void Transformer::lm_head_rows(int r0, int rows) {
  Activations& A = act_;
  const int C = cfg_.hidden_size, V = cfg_.vocab_size;
  ops_->linear_fwd(A.logits.data(), A.hf.data() + size_t(r0) * C, lm_head(backend_params()), nullptr, rows, C, V);
  ops_->xent_fwd(A.loss.data() + r0, A.lse_x.data() + r0, A.logits.data(), A.targets.data() + r0, rows, V);
  A.logits_r0 = r0;
}

float* Transformer::head_backward_begin(float loss_scale) {
  drop_decode_weights();  // training changes the weights: decode reads fp32 again
  Activations& A = act_;
  const int N = A.N, C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  Workspace& W = work_;  // grow-only gradient buffers, reused across steps
  fit(W.g, N), fit(W.dlogits, size_t(A.logit_rows) * V), fit(W.dx, size_t(N) * C), fit(W.dh, size_t(N) * C);
  fit(W.dF1, size_t(N) * F), fit(W.dF2, size_t(N) * F), fit(W.dF3, size_t(N) * F);
  fit(W.dq, size_t(N) * qd), fit(W.dk, size_t(N) * kvd), fit(W.dv, size_t(N) * kvd), fit(W.datt, size_t(N) * qd);
  upload_loss_grad(W.g, A.host_weights, loss_scale);
  // dlogits is read only by the LM head's two GEMMs: on bf16 operands when every chunk has 64 rows
  // (and C, V >= 64), xent_bwd writes its bf16 copy alone
  const int last_rows = N - (N - 1) / A.logit_rows * A.logit_rows;
  keep_bf16(W.dlogits.data(), size_t(A.logit_rows) * V,
            std::min({C, V, last_rows}) >= 64 ? MirrorFill::only_mirror : MirrorFill::by_next_op);
  return begin_backward_grads();
}

void Transformer::head_backward_rows(float* G, int r0, int rows) {
  Activations& A = act_;
  Workspace& W = work_;
  const int C = cfg_.hidden_size, V = cfg_.vocab_size;
  ops_->xent_bwd(W.dlogits.data(), A.logits.data(), A.lse_x.data() + r0, A.targets.data() + r0, W.g.data() + r0, rows,
                 V);
  linear_bwd(W.dh.data() + size_t(r0) * C, G + off_lm_head_, nullptr, W.dlogits.data(), A.hf.data() + size_t(r0) * C,
             lm_head(backend_params()), rows, C, V, false);
}

void Transformer::backward(float loss_scale) {
  Activations& A = act_;
  const int N = A.N, B = B_, T = T_, C = cfg_.hidden_size, F = cfg_.intermediate_size, L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  SR_ASSERT(N > 0, "backward() without forward()");
  float* G = head_done_;  // forward_backward's forward ran the LM head's backward
  SR_ASSERT(!G || loss_scale == head_scale_, "backward(): another loss scale than forward_backward's");
  head_done_ = nullptr;
  if (!G) {
    // LM head + cross-entropy, chunk by chunk (logits recomputed, but for the chunk the forward left)
    G = head_backward_begin(loss_scale);
    for (int r0 = 0; r0 < N; r0 += A.logit_rows) {
      const int rows = std::min(A.logit_rows, N - r0);
      if (A.logits_r0 != r0) lm_head_rows(r0, rows);  // recomputed unless held
      head_backward_rows(G, r0, rows);
    }
  }
  Workspace& W = work_;
  float* P = backend_params();
  float *dx = W.dx.data(), *dh = W.dh.data(), *dF1 = W.dF1.data(), *dF2 = W.dF2.data(),
        *dF3 = W.dF3.data(), *dq = W.dq.data(), *dk = W.dk.data(), *dv = W.dv.data(), *datt = W.datt.data();
  // dx (the residual stream's gradient) is written only by rmsnorm_bwd, which writes its bf16 copy
  // too: the dout of the o_proj / out_proj and down_proj products
  keep_bf16(dx, size_t(N) * C, MirrorFill::by_next_op);
  ops_->rmsnorm_bwd(dx, G + off_norm_, dh, A.res.data() + size_t(L) * N * C, nw(P + off_norm_), A.rstdf.data(), N, C, false);
  for (int l = L - 1; l >= 0; --l) {
    const int slot = recompute_ ? 0 : l;
    if (recompute_) layer_forward(l, slot, false);
    LayerParams w = layer(P, l), gw = layer(G, l);
    LayerActs t = layer_acts(slot);
    const float* x = A.res.data() + size_t(l) * N * C;
    const float *h1 = t.h1, *h2 = t.h2, *q = t.q, *k = t.k, *v = t.v, *att = t.att, *xmid = t.xmid;
    const float *ga = t.g, *ua = t.u, *aa = t.a;
    // out = xmid + down(a): dx is d(out); d(xmid) accumulates dx + norm path
    keep_bf16(dF1, size_t(N) * F, MirrorFill::gemm_output);         // read only by swiglu_bwd
    linear_bwd(dF1, gw.wd, nullptr, dx, aa, w.wd, N, F, C, false);  // da
    keep_bf16(dF2, size_t(N) * F, mlp_fill()), keep_bf16(dF3, size_t(N) * F, mlp_fill());  // by swiglu_bwd
    ops_->swiglu_bwd(dF2, dF3, dF1, ga, ua, N, F);                 // dgate, dup
    linear_bwd(dh, gw.wg, nullptr, dF2, h2, w.wg, N, C, F, false);
    linear_bwd(dh, gw.wu, nullptr, dF3, h2, w.wu, N, C, F, true);  // dh += d(up path)
    ops_->rmsnorm_bwd(dx, gw.ln2, dh, xmid, nw(w.ln2), t.rstd2, N, C, true);  // dx is now d(xmid)
    if (cfg_.is_linear(l)) {
      gdn_backward(w, gw, gdn_acts(slot), h1, dx, dh);
      ops_->rmsnorm_bwd(dx, gw.ln1, dh, x, nw(w.ln1), t.rstd1, N, C, true);
      continue;
    }
    // xmid = x + o_proj(att), att gated by sigmoid(gate) for Qwen3.5
    const QxActs x2 = qx_acts(slot);
    const int Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, D = cfg_.head_dim, R = cfg_.rotary();
    const size_t nq = size_t(N) * qd;
    float *dgate = nullptr, *dqg = nullptr;
    if (cfg_.attn_output_gate || cfg_.qk_norm || R != D) {
      fit(W.qx, 3 * nq);
      dgate = W.qx.data(), dqg = dgate + nq;  // dqg: [N, Hq, 2D] (q | gate rows of q_proj)
    }
    if (cfg_.attn_output_gate) {
      linear_bwd(dgate, gw.wo, nullptr, dx, x2.attg, w.wo, N, int(qd), C, false);  // d attg
      ops_->act_fwd(datt, x2.gate, nq, 1);                                         // sigmoid(gate)
      ops_->mul(dqg, dgate, att, nq);                                               // d attg * att
      ops_->mul(datt, datt, dgate, nq);                                             // d att
      ops_->act_bwd(dgate, dqg, x2.gate, nq, 1);                                    // d gate (pre-sigmoid)
    } else {
      linear_bwd(datt, gw.wo, nullptr, dx, att, w.wo, N, int(qd), C, false);
    }
    ops_->attention_bwd(dq, dk, dv, datt, q, k, v, att, t.lse, attn_shape(B, T, T, l));
    for (auto [g, H, rows] : {std::tuple{dq, Hq, size_t(N) * Hq}, std::tuple{dk, Hkv, size_t(N) * Hkv}}) {
      if (R == D) {
        ops_->rope_bwd(g, g, A.pos.data(), N, H, D, cfg_.rope_theta);
      } else {  // only the first R dims were rotated
        ops_->strided_copy(dqg, R, g, D, rows, R);
        ops_->rope_bwd(dqg, dqg, A.pos.data(), N, H, R, cfg_.rope_theta);
        ops_->strided_copy(g, D, dqg, R, rows, R);
      }
    }
    if (cfg_.qk_norm) {  // through the per-head RMSNorms (via scratch: the op's dx must not alias dout)
      ops_->rmsnorm_bwd(dqg, gw.qn, dq, x2.qpre, nw(w.qn), x2.rq, N * Hq, D, false);
      ops_->strided_copy(dq, 1, dqg, 1, 1, nq);
      ops_->rmsnorm_bwd(dqg, gw.kn, dk, x2.kpre, nw(w.kn), x2.rk, N * Hkv, D, false);
      ops_->strided_copy(dk, 1, dqg, 1, 1, size_t(N) * Hkv * D);
    }
    if (cfg_.attn_output_gate) {  // q_proj rows per head are [q | gate]
      ops_->strided_copy(dqg, 2 * size_t(D), dq, D, size_t(N) * Hq, D);
      ops_->strided_copy(dqg + D, 2 * size_t(D), dgate, D, size_t(N) * Hq, D);
      linear_bwd(dh, gw.wq, gw.bq, dqg, h1, w.wq, N, C, int(2 * qd), false);
    } else {
      linear_bwd(dh, gw.wq, gw.bq, dq, h1, w.wq, N, C, int(qd), false);
    }
    linear_bwd(dh, gw.wk, gw.bk, dk, h1, w.wk, N, C, int(kvd), true);
    linear_bwd(dh, gw.wv, gw.bv, dv, h1, w.wv, N, C, int(kvd), true);
    ops_->rmsnorm_bwd(dx, gw.ln1, dh, x, nw(w.ln1), t.rstd1, N, C, true);  // dx is now d(x) of layer l
  }
  adding_to_grads(G + off_embed_, size_t(cfg_.vocab_size) * C);  // a tied LM head set it first
  ops_->embedding_bwd(G + off_embed_, dx, A.ids.data(), N, C);
  end_backward_grads();
  drop_bf16_activations(/*keep_logits=*/true);  // readable by last_logits() until the next forward
}

// Backward of a linear_attention mixer: dmix = d(mixer output) [N, C] -> dh [N, C] (=, input of the
// mixer after the norm); parameter grads accumulate into gw.
void Transformer::gdn_backward(const LayerParams& w, const LayerParams& gw, const GdnActs& t, const float* h,
                               const float* dmix, float* dh) {
  const GdnDims d(cfg_);
  const int N = act_.N, C = cfg_.hidden_size, K = d.K, B = B_, T = T_;
  fit(work_.gdn, size_t(N) * (5 * size_t(d.Vd) + 4 * size_t(d.Kd) + 4 * size_t(d.Hv)));
  fit(work_.gdn_state, act_.gdn_state.size());
  float* p = work_.gdn.data();
  auto take = [&](size_t n) { float* q = p; p += size_t(N) * n; return q; };
  float *don = take(d.Vd), *dO = take(d.Vd), *dz = take(d.Vd), *dvc = take(d.Vd), *dvp = take(d.Vd);
  float *dqn = take(d.Kd), *dkn = take(d.Kd), *dqp = take(d.Kd), *dkp = take(d.Kd);
  float *dg = take(d.Hv), *dbeta = take(d.Hv), *da = take(d.Hv), *db = take(d.Hv);
  linear_bwd(don, gw.wout, nullptr, dmix, t.on, w.wout, N, d.Vd, C, false);
  ops_->gated_rmsnorm_bwd(dO, dz, gw.gnorm, don, t.o, t.z, w.gnorm, t.rstd, N * d.Hv, d.Dv);
  act_.gdn_state.zero();  // the initial state of every training sequence
  ops_->delta_rule_bwd(dqn, dkn, dvc, dg, dbeta, work_.gdn_state.data(), dO, nullptr, t.qn, t.kn, t.vc, t.g, t.beta,
                       act_.gdn_state.data(), d.shape(B, T));
  ops_->gdn_gates_bwd(da, db, gw.A_log, gw.dt_bias, dg, dbeta, t.a, t.b, w.A_log, w.dt_bias, N, d.Hv);
  ops_->l2norm_bwd(dqn, dqn, t.qn, t.rq, N * d.Hk, d.Dk);
  ops_->l2norm_bwd(dkn, dkn, t.kn, t.rk, N * d.Hk, d.Dk);
  ops_->causal_conv_bwd(dqp, gw.conv, dqn, t.qp, w.conv, nullptr, B, T, d.Kd, K);
  ops_->causal_conv_bwd(dkp, gw.conv + size_t(d.Kd) * K, dkn, t.kp, w.conv + size_t(d.Kd) * K, nullptr, B, T, d.Kd, K);
  ops_->causal_conv_bwd(dvp, gw.conv + size_t(2 * d.Kd) * K, dvc, t.vp, w.conv + size_t(2 * d.Kd) * K, nullptr, B, T,
                        d.Vd, K);
  // dh = sum of the six input projections' input gradients
  linear_bwd(dh, gw.qkv, nullptr, dqp, h, w.qkv, N, C, d.Kd, false);
  struct Proj { float* gwp; const float* wp; const float* dy; int O; };
  for (Proj pr : {Proj{gw.qkv + size_t(d.Kd) * C, w.qkv + size_t(d.Kd) * C, dkp, d.Kd},
                  Proj{gw.qkv + size_t(2 * d.Kd) * C, w.qkv + size_t(2 * d.Kd) * C, dvp, d.Vd},
                  Proj{gw.wz, w.wz, dz, d.Vd}, Proj{gw.wa, w.wa, da, d.Hv}, Proj{gw.wb, w.wb, db, d.Hv}}) {
    linear_bwd(dh, pr.gwp, nullptr, pr.dy, h, pr.wp, N, C, pr.O, true);
  }
}

std::vector<LayerKVCache> Transformer::empty_caches() const {
  std::vector<LayerKVCache> c(cfg_.num_layers);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    c[l].window = cfg_.window_of(l);
    c[l].k = Buffer<float>(ops_->mem), c[l].v = Buffer<float>(ops_->mem);
    if (cfg_.is_linear(l)) {
      const GdnDims d(cfg_);
      c[l].conv_state = Buffer<float>(ops_->mem, size_t(2 * d.Kd + d.Vd) * (d.K - 1));
      c[l].rec_state = Buffer<float>(ops_->mem, size_t(d.Hv) * d.Dk * d.Dv);
      c[l].conv_state.zero(), c[l].rec_state.zero();
    }
  }
  return c;
}

namespace {
// Copies rows [first, first+count) of a ring of W rows (row r at slot r % W) to dst: at most two
// contiguous pieces.
void ring_read(const MemOps& mem, float* dst, const float* ring, int64_t first, int64_t count, int W, size_t row) {
  while (count > 0) {
    int64_t slot = first % W, run = std::min<int64_t>(count, W - slot);
    mem.copy(dst, ring + size_t(slot) * row, size_t(run) * row * sizeof(float));
    dst += size_t(run) * row, first += run, count -= run;
  }
}
void ring_write(const MemOps& mem, float* ring, const float* src, int64_t first, int64_t count, int W, size_t row) {
  while (count > 0) {
    int64_t slot = first % W, run = std::min<int64_t>(count, W - slot);
    mem.copy(ring + size_t(slot) * row, src, size_t(run) * row * sizeof(float));
    src += size_t(run) * row, first += run, count -= run;
  }
}
}  // namespace

void Transformer::forward_cached(const int32_t* ids, int n, std::vector<LayerKVCache>& caches, float* logits_out,
                                 bool all_logits) const {
  const int C = cfg_.hidden_size, F = cfg_.intermediate_size, V = cfg_.vocab_size, L = cfg_.num_layers;
  const size_t qd = size_t(cfg_.num_heads) * cfg_.head_dim, kvd = size_t(cfg_.num_kv_heads) * cfg_.head_dim;
  SR_ASSERT(int(caches.size()) == L, "forward_cached: cache count != layers");
  if (n <= 0) return;
  check_ids(ids, nullptr, n, "input");
  const int64_t pos0 = caches[0].n_seen;
  if (pos0 + n > int64_t(INT32_MAX)) fail("input", "sequence longer than 2^31 tokens");
  const MemOps& mem = *ops_->mem;
  std::vector<int32_t> hpos(n);
  for (int i = 0; i < n; ++i) hpos[i] = int32_t(pos0 + i);
  Buffer<int32_t> pos(&mem, n), dids(&mem, n);
  pos.upload(hpos.data(), n), dids.upload(ids, n);
  float* P = const_cast<Transformer*>(this)->backend_params();
  Buffer<float> x(&mem, size_t(n) * C), h(&mem, size_t(n) * C), rstd(&mem, n), tmp(&mem, size_t(n) * C);
  // q [n, qd], then the new keys [n, kvd] and values [n, kvd] in one block: for one token q and k
  // are one row of Hq + Hkv heads, rotated by one RoPE launch (project_qkv)
  Buffer<float> qkv(&mem, size_t(n) * (qd + 2 * kvd)), att(&mem, size_t(n) * qd), lse(&mem, size_t(n) * cfg_.num_heads);
  float *q = qkv.data(), *knew = q + size_t(n) * qd, *vnew = knew + size_t(n) * kvd;
  // the MLP's gate and up activations [n, F] each, in one block (one product for one token)
  Buffer<float> gu(&mem, 2 * size_t(n) * F), a(&mem, size_t(n) * F), kw(&mem), vw(&mem);
  float *g = gu.data(), *u = g + size_t(n) * F;
  // (allocated here, in declaration order, so that the blocks go back in the reverse order and the
  // next step's buffers get the same addresses: a decode graph's key stays the same)
  Buffer<float> gdn_scratch(&mem, cfg_.any_linear() ? size_t(n) * gdn_floats_per_token() : 0),
      gate(&mem, cfg_.attn_output_gate ? size_t(n) * qd : 0),
      qscratch(&mem, cfg_.attn_output_gate || cfg_.qk_norm || cfg_.rotary_dim ? 2 * size_t(n) * qd : 0);
  refresh_norms();
  const int first = all_logits ? 0 : n - 1, rows = n - first;
  Buffer<float> logits(&mem, size_t(rows) * V);
  // Host-side setup before the device work (a replayed decode step runs none of the body): cache
  // buffers on this backend, window rings at their size.
  for (int l = 0; l < L; ++l) {
    LayerKVCache& c = caches[l];
    SR_ASSERT(c.n_seen == pos0, "forward_cached: layer caches out of step");
    if (c.k.mem() != &mem) c.k = Buffer<float>(&mem), c.v = Buffer<float>(&mem);
    if (!cfg_.is_linear(l) && c.window > 0 && c.k.size() != size_t(c.window) * kvd) {
      c.k.resize(size_t(c.window) * kvd), c.v.resize(size_t(c.window) * kvd);
      c.k.zero(), c.v.zero();
    }
  }
  // The step's key: every buffer it touches, and per layer the cache and how many keys it attends
  // over (a full cache: a new count every step, so its steps are always recorded; a full ring: the
  // same count, and its slot is read from `pos` on the device by ring_store_kv).
  auto key = [&] {
    std::vector<uintptr_t> k = step_key(n, first, {pos.data(), dids.data(), x.data(), h.data(), rstd.data(), tmp.data(),
                                                   qkv.data(), att.data(), lse.data(), gu.data(), a.data(),
                                                   gdn_scratch.data(), gate.data(), qscratch.data(), logits.data(),
                                                   norm_eff_.data()});
    for (int l = 0; l < L; ++l) {
      const LayerKVCache& c = caches[l];
      const int64_t keys = cfg_.is_linear(l) ? 0  // a recurrent state: no keys
                           : c.window > 0 ? std::min<int64_t>(pos0 + n, c.window)
                                          : pos0 + n;
      for (const void* b : {c.k.data(), c.v.data(), c.conv_state.data(), c.rec_state.data()}) k.push_back(uintptr_t(b));
      k.push_back(uintptr_t(keys));
    }
    return k;
  };
  run_cached_step(n, key, [&] {
    const float eps = cfg_.rms_norm_eps;
    // x += tmp (a sublayer's output), then h = the next norm of x: one op (add_rmsnorm_fwd)
    auto residual_then_norm = [&](const float* norm_w) {
      ops_->add_rmsnorm_fwd(x.data(), h.data(), rstd.data(), tmp.data(), norm_w, n, C, eps);
    };
    // The end of layer l: the MLP's residual, fused with layer l+1's first norm (the last layer's
    // final norm reads only the logit rows, below)
    auto end_layer = [&](int l) {
      if (l + 1 < L) residual_then_norm(nw(layer(P, l + 1).ln1));
      else ops_->add(x.data(), x.data(), tmp.data(), size_t(n) * C);
    };
    ops_->embedding_fwd(x.data(), dids.data(), P + off_embed_, n, C);
    ops_->rmsnorm_fwd(h.data(), rstd.data(), x.data(), nw(layer(P, 0).ln1), n, C, eps);
    for (int l = 0; l < L; ++l) {  // h = ln1(x) here
      LayerParams w = layer(P, l);
      LayerKVCache& c = caches[l];
      if (cfg_.is_linear(l)) {  // constant-size state: conv inputs + recurrent matrix
        gdn_forward(w, carve_gdn(gdn_scratch.data(), n), h.data(), 1, n, c.conv_state.data(),
                    c.rec_state.data(), tmp.data());
        residual_then_norm(nw(w.ln2));
        mlp_forward(w, h.data(), n, g, u, a.data(), tmp.data(), true);
        end_layer(l);
        continue;
      }
      project_qkv(w, h.data(), n, pos.data(), q, knew, vnew, gate.data(), qscratch.data(), nullptr,
                  true);
      const float *K, *Vv;
      int Tk;
      if (c.window == 0) {  // full: append, attend over the whole cache
        c.k.append(knew, size_t(n) * kvd);
        c.v.append(vnew, size_t(n) * kvd);
        K = c.k.data(), Vv = c.v.data(), Tk = int(pos0 + n);
      } else {  // window W: the cache is a ring of W rows, allocated once (above)
        const int W = c.window;
        if (n == 1) {  // decode: into the ring, then attend over the ring in place. The query sees the
          // last min(pos0 + 1, W) positions, exactly what the ring holds; their order in the ring
          // does not matter to a single query (RoPE is in the keys). The slot, pos0 mod W, is
          // computed on the device from pos, so the step's arguments stay the same.
          ops_->ring_store_kv(c.k.data(), c.v.data(), knew, vnew, pos.data(), W, kvd);
          K = c.k.data(), Vv = c.v.data(), Tk = int(std::min<int64_t>(pos0 + 1, W));
        } else {  // gather the cached keys still visible to the first query, then the new ones
          const int m = int(std::min<int64_t>(pos0, W - 1));
          kw.resize(size_t(m + n) * kvd), vw.resize(size_t(m + n) * kvd);
          ring_read(mem, kw.data(), c.k.data(), pos0 - m, m, W, kvd);
          ring_read(mem, vw.data(), c.v.data(), pos0 - m, m, W, kvd);
          mem.copy(kw.data() + size_t(m) * kvd, knew, size_t(n) * kvd * sizeof(float));
          mem.copy(vw.data() + size_t(m) * kvd, vnew, size_t(n) * kvd * sizeof(float));
          const int keep = std::min(n, W);  // only the last W new rows survive in the ring
          ring_write(mem, c.k.data(), knew + size_t(n - keep) * kvd, pos0 + n - keep, keep, W, kvd);
          ring_write(mem, c.v.data(), vnew + size_t(n - keep) * kvd, pos0 + n - keep, keep, W, kvd);
          K = kw.data(), Vv = vw.data(), Tk = m + n;
        }
      }
      ops_->attention_fwd(att.data(), lse.data(), q, K, Vv, attn_shape(1, n, Tk, l));
      if (cfg_.attn_output_gate) {  // att *= sigmoid(gate)
        ops_->act_fwd(gate.data(), gate.data(), size_t(n) * qd, 1);
        ops_->mul(att.data(), att.data(), gate.data(), size_t(n) * qd);
      }
      linear(tmp.data(), att.data(), w.wo, nullptr, n, int(qd), C, true);
      residual_then_norm(nw(w.ln2));
      mlp_forward(w, h.data(), n, g, u, a.data(), tmp.data(), true);
      end_layer(l);
    }
    ops_->rmsnorm_fwd(h.data(), rstd.data(), x.data() + size_t(first) * C, nw(P + off_norm_), rows, C, eps);
    linear(logits.data(), h.data(), lm_head(P), nullptr, rows, C, V, true);
  });
  for (LayerKVCache& c : caches) c.n_seen += n;
  logits.download(logits_out, size_t(rows) * V);
}

}  // namespace sr
