// Op contracts. Every op exists twice with the same signature:
//   ref::  plain loops (ops/ref/ref_ops.h, templated on the scalar so tests can run it in fp64
//          against finite differences) -- the oracle;
//   cpu::  optimized (OpenMP + OpenBLAS, blocked attention) -- what the engine runs.
// Conventions (llm.c style): row-major raw pointers, shapes in comments.
//   * parameter gradients ACCUMULATE (+=), so gradient accumulation needs no extra buffers;
//   * activation/input gradients are OVERWRITTEN (=); a null gradient pointer means "not needed".
// Attention positions: queries are the LAST Tq of Tk positions (bottom-right aligned), so query i
// sits at absolute position p = i + Tk - Tq and sees keys j with p - W < j <= p (W = window, or all
// j <= p when window == 0). This one rule covers training (Tq == Tk) and chunked prefill / decode
// into a cache (Tq < Tk).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>
#include <string>

#include "core/bf16.h"
#include "core/buffer.h"

namespace sr {

struct AttnShape {
  int B = 1, Tq = 1, Tk = 1, Hq = 1, Hkv = 1, D = 1;
  int window = 0;      // 0 = full causal attention; W > 0 = W keys including the query's own
  float scale = 1.0f;  // usually 1/sqrt(D)
};

// Gated delta rule (Gated DeltaNet's recurrence), per batch b and value head h (key head
// h / (Hv/Hk), consecutive value heads share a key head), state H = S^T in [Dk, Dv] layout (HF/fla):
//   H <- exp(g_t) H;  u = H^T k_t;  delta = beta_t (v_t - u);  H <- H + k_t delta^T;  o_t = H^T (scale q_t)
// q, k arrive already L2-normalized; g_t = log decay (<= 0); everything fp32.
struct DeltaShape {
  int B = 1, T = 1, Hk = 1, Hv = 1, Dk = 1, Dv = 1;
  float scale = 1.0f;  // usually 1/sqrt(Dk)
  int chunk = 64;      // chunk length of the chunked form (optimized backends); results do not depend on it
};

// Generalized delta rule (RWKV-7's recurrence; the gated delta rule is a special case), per batch b
// and head h, state H = S^T [Dk, Dv]:  u = H^T a_t;  H <- diag(w_t) H + b_t u^T + k_t v_t^T;  y_t = H^T r_t.
struct GdrShape {
  int B = 1, T = 1, H = 1, Dk = 1, Dv = 1;
  int chunk = 64;  // checkpoint interval of the optimized backward; results do not depend on it
};

// One AdamW update's scalars (bias corrections precomputed on the host).
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2;
  float grad_scale = 1.0f;  // the update uses g * grad_scale: gradient clipping folded into the step
};

// OpsTable::linear_bwd's flags
enum LinearBwdFlags : int {
  kAddDx = 1,  // dx += dout W (else dx = dout W)
  kSetDW = 2,  // dW = dout^T x (else dW += dout^T x)
};

// How OpsTable::mirror_activation gets its bf16 values (see there).
enum class MirrorFill { copy_now, by_next_op, only_mirror, gemm_output };

// Function table so the model, tests and benchmarks can run any backend. All pointers are in
// the backend's memory (`mem`): host memory for ref/cpu, device memory for cuda.
struct OpsTable {
  const char* name;
  const MemOps* mem;
  // out[N,C] = table[ids[n], :]
  void (*embedding_fwd)(float* out, const int32_t* ids, const float* table, int N, int C);
  // dtable[V,C] += scatter(dout[N,C]) by ids
  void (*embedding_bwd)(float* dtable, const float* dout, const int32_t* ids, int N, int C);
  // out[N,C] = x * rsqrt(mean(x^2) + eps) * w[C]; rstd[N] saved for backward
  void (*rmsnorm_fwd)(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);
  // dx[N,C] = d(x) (add_dx: dx += d(x)); dw[C] += d(w)
  void (*rmsnorm_bwd)(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int N, int C, bool add_dx);
  // out[N,O] = x[N,I] W[O,I]^T + b[O] (b may be null) -- W in Hugging Face [out, in] layout
  void (*linear_fwd)(float* out, const float* x, const float* W, const float* b, int N, int I, int O);
  // dx[N,I] = dout W (flags & kAddDx: dx += dout W, one pass instead of a product and an add);
  // dW[O,I] += dout^T x (flags & kSetDW: dW = dout^T x, the first contribution to a gradient that
  // was not zeroed: no memset, no read of zeros); db[O] += column sums of dout. (flags: LinearBwdFlags;
  // true = kAddDx)
  void (*linear_bwd)(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I,
                     int O, int flags);
  // RoPE, HF rotate-half layout: x[N,H,D] at positions pos[N]; out may alias x
  void (*rope_fwd)(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta);
  void (*rope_bwd)(float* dx, const float* dout, const int32_t* pos, int N, int H, int D, float theta);
  // out[B,Tq,Hq,D], lse[B,Hq,Tq]; q[B,Tq,Hq,D], k,v[B,Tk,Hkv,D]
  void (*attention_fwd)(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
  void (*attention_bwd)(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnShape& s);
  // out[N,F] = silu(gate) * up
  void (*swiglu_fwd)(float* out, const float* gate, const float* up, int N, int F);
  void (*swiglu_bwd)(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N, int F);
  // loss[N] = lse[N] - logits[n, target[n]] (0 where target < 0); lse saved
  void (*xent_fwd)(float* loss, float* lse, const float* logits, const int32_t* targets, int N, int V);
  // dlogits[N,V] = g[n] * (softmax(logits[n]) - onehot(target[n])); g = dL/dloss[n] (weights folded in)
  void (*xent_bwd)(float* dlogits, const float* logits, const float* lse, const int32_t* targets, const float* g,
                   int N, int V);
  // out[n] = a[n] + b[n]; out may alias a or b
  void (*add)(float* out, const float* a, const float* b, size_t n);
  // x[n] *= s
  void (*scale)(float* x, size_t n, float s);
  // sum of x[n]^2, accumulated in fp64 in a fixed order (same result whatever the thread count)
  double (*sum_squares)(const float* x, size_t n);
  // AdamW on flat arrays: m,v updated; p -= lr (mhat/(sqrt(vhat)+eps) + wd*decay[i]*p);
  // decay may be null (decay everywhere)
  void (*adamw)(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWStep& a);
  // ---- Gated DeltaNet layer pieces (ops/ref/gated_deltanet.h; CUDA: ops/cuda/gated_deltanet.cu) ----
  // Depthwise causal conv + SiLU over time: x[B,T,Cc], w[Cc,K], state[B,Cc,K-1] = the K-1 inputs
  // before x (oldest first; null = zeros) -> out[B,T,Cc] = silu(sum_j w[c,j] x[t-K+1+j, c]).
  // When state is non-null it is advanced in place to the last K-1 inputs (streaming).
  void (*causal_conv_fwd)(float* out, float* state, const float* x, const float* w, int B, int T, int Cc, int K);
  // dx (=), dw (+=) for the last call with initial state state0 (null = zeros).
  void (*causal_conv_bwd)(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* state0,
                          int B, int T, int Cc, int K);
  // out[N,D] = x / sqrt(sum x^2 + 1e-6) per row; rnorm[N] = 1 / sqrt(...) kept for backward
  void (*l2norm_fwd)(float* out, float* rnorm, const float* x, int N, int D);
  void (*l2norm_bwd)(float* dx, const float* dout, const float* out, const float* rnorm, int N, int D);
  // g[N,H] = -exp(A_log[h]) softplus(a + dt_bias[h]); beta[N,H] = sigmoid(b)
  void (*gdn_gates_fwd)(float* g, float* beta, const float* a, const float* b, const float* A_log,
                        const float* dt_bias, int N, int H);
  // da, db (=); dA_log, ddt_bias (+=)
  void (*gdn_gates_bwd)(float* da, float* db, float* dA_log, float* ddt_bias, const float* dg, const float* dbeta,
                        const float* a, const float* b, const float* A_log, const float* dt_bias, int N, int H);
  // Gated RMSNorm (norm before gate), rows of D: out = w * (o * rstd) * silu(z), rstd[rows] kept
  void (*gated_rmsnorm_fwd)(float* out, float* rstd, const float* o, const float* z, const float* w, int rows, int D,
                            float eps);
  // do_, dz (=), dw (+=)
  void (*gated_rmsnorm_bwd)(float* do_, float* dz, float* dw, const float* dout, const float* o, const float* z,
                            const float* w, const float* rstd, int rows, int D);
  // Generalized delta rule: r,w,a,b,k [B,T,H,Dk], v [B,T,H,Dv] -> y [B,T,H,Dv]; state [B,H,Dk,Dv]
  // initial in, final out. Backward: all gradients overwritten; dstate_in may be null (= 0).
  void (*gdr_fwd)(float* y, float* state, const float* r, const float* w, const float* a, const float* b,
                  const float* k, const float* v, const GdrShape& s);
  void (*gdr_bwd)(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
                  const float* dstate_in, const float* r, const float* w, const float* a, const float* b,
                  const float* k, const float* v, const float* state0, const GdrShape& s);
  // Gated delta rule. q,k[B,T,Hk,Dk], v[B,T,Hv,Dv], g,beta[B,T,Hv] -> out[B,T,Hv,Dv];
  // state[B,Hv,Dk,Dv]: the initial state on entry, the final state on return (in place).
  void (*delta_rule_fwd)(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                         const float* beta, const DeltaShape& s);
  // Gradients for the last call's inputs given dout and d(final state) (dstate_in: [B,Hv,Dk,Dv] or
  // null = 0). state0: the INITIAL state. dstate0 gets d(initial state). All outputs overwritten.
  void (*delta_rule_bwd)(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                         const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                         const float* beta, const float* state0, const DeltaShape& s);
  // ---- RWKV-7 layer pieces (ops/ref/rwkv7.h); the recurrence is gdr_fwd/gdr_bwd ----
  // LayerNorm per group with bias: x, out [N, G*D], each row's G groups of D normalized separately
  // (biased variance): out = (x - mean) * rstd * w + b, w, b [G*D]; mean, rstd [N*G] kept.
  // G = 1 is LayerNorm; G = heads is RWKV-7's GroupNorm (ln_x).
  void (*layernorm_fwd)(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                        int G, int D, float eps);
  // dx (=), dw, db (+=)
  void (*layernorm_bwd)(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int G, int D);
  // Token shift + mix: out[m, n, :] = x[n] + (x_prev(n) - x[n]) * mu[m, :] for m < M; x [B,T,C],
  // out [M, B*T, C]; x_prev(n) = the previous token of the same sequence, prev[b] (null = 0) at t = 0.
  void (*token_shift_fwd)(float* out, const float* x, const float* prev, const float* mu, int B, int T, int C, int M);
  // dx (=), dmu (+=)
  void (*token_shift_bwd)(float* dx, float* dmu, const float* dout, const float* x, const float* prev,
                          const float* mu, int B, int T, int C, int M);
  // Elementwise out = f(x): kind 0 tanh, 1 sigmoid, 2 relu^2 (RWKV-7's LoRA activations, channel mix)
  void (*act_fwd)(float* out, const float* x, size_t n, int kind);
  void (*act_bwd)(float* dx, const float* dout, const float* x, size_t n, int kind);
  // Time-mix prelude, [N, H*D] rows, per head h: w = exp(-e^-0.5 sigmoid(wl)); a = sigmoid(al);
  // kk = L2-normalize_head(k * kkw) (rnorm [N,H] kept); kmod = k (1 + (a - 1) ka);
  // vmod = v + (vfirst - v) sigmoid(vl) (vfirst null: vmod = v, layer 0); alpha = -kk; beta = kk a.
  void (*rwkv7_prep_fwd)(float* w, float* kmod, float* vmod, float* alpha, float* beta, float* rnorm, const float* k,
                         const float* v, const float* wl, const float* al, const float* vl, const float* vfirst,
                         const float* kkw, const float* ka, int N, int H, int D);
  // dk, dv, dwl, dal, dvl (=); dvfirst, dkkw, dka (+=)
  void (*rwkv7_prep_bwd)(float* dk, float* dv, float* dwl, float* dal, float* dvl, float* dvfirst, float* dkkw,
                         float* dka, const float* dw, const float* dkmod, const float* dvmod, const float* dalpha,
                         const float* dbeta, const float* k, const float* v, const float* wl, const float* al,
                         const float* vl, const float* vfirst, const float* kkw, const float* ka, const float* rnorm,
                         int N, int H, int D);
  // Output: out = (yn + (sum_i r kmod rk) v) * g per head ("bonus" term, then the gate); rk [H*D]
  void (*rwkv7_out_fwd)(float* out, const float* yn, const float* r, const float* kmod, const float* v,
                        const float* rk, const float* g, int N, int H, int D);
  // dyn, dr, dkmod, dv, dg (=); drk (+=)
  void (*rwkv7_out_bwd)(float* dyn, float* dr, float* dkmod, float* dv, float* drk, float* dg, const float* dout,
                        const float* yn, const float* r, const float* kmod, const float* v, const float* rk,
                        const float* g, int N, int H, int D);
  // ---- layout helpers (Qwen3/Qwen3.5 attention: the q/gate split, partial rotary) ----
  // rows x width floats: dst[r * dst_stride + i] = src[r * src_stride + i]
  void (*strided_copy)(float* dst, size_t dst_stride, const float* src, size_t src_stride, size_t rows, size_t width);
  // out[n] = a[n] * b[n]; out may alias a or b
  void (*mul)(float* out, const float* a, const float* b, size_t n);
  // ring_k[(pos[0] mod W) * width + i] = k[i], and the same slot of ring_v = v[i], i < width: one
  // decode step's key and value rows into a window's rings (one launch), at the slot of a position
  // read from memory (device memory on a GPU backend), so the step's arguments do not change with
  // the position (decode graphs replay it as it is)
  void (*ring_store_kv)(float* ring_k, float* ring_v, const float* k, const float* v, const int32_t* pos, int W,
                        size_t width);
  // The residual add and the next RMSNorm in one pass: x[N,C] += t, then out = rmsnorm(x) * w and
  // rstd[N] exactly as rmsnorm_fwd (the same bits as add() then rmsnorm_fwd()). Inference
  // (forward_cached); its backward is rmsnorm_bwd plus the add's identity.
  void (*add_rmsnorm_fwd)(float* x, float* out, float* rstd, const float* t, const float* w, int N, int C, float eps);
  // ---- inference with bf16 weights (null where a backend has none) ----
  // out[N,O] = x[N,I] W[O,I]^T + b[O] with W stored as bf16 (core/bf16.h), fp32 accumulation
  void (*linear_fwd_bf16w)(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O) = nullptr;
  // ---- decode fusions (null where a backend has none; the model then runs the plain ops) ----
  // out[N,F] = silu(x W_g^T) * (x W_u^T) with W = [W_g; W_u] ([2F, I] rows: gate rows, then up
  // rows), fp32 or bf16 weights: linear_fwd over the 2F rows then swiglu_fwd, in one pass over the
  // weights for a few tokens (decode's MLP; it is no GEMM for many rows)
  void (*linear_swiglu_fwd)(float* out, const float* x, const float* W, int N, int I, int F) = nullptr;
  void (*linear_swiglu_fwd_bf16w)(float* out, const float* x, const uint16_t* W, int N, int I, int F) = nullptr;
  // out[N,O] = res[N,O] + x[N,I] W[O,I]^T: linear_fwd then add(out, res, .) (the residual stream's
  // adds after o_proj and down_proj), the add made in the GEMM's epilogue; out may be res
  void (*linear_fwd_add)(float* out, const float* res, const float* x, const float* W, int N, int I, int O) = nullptr;
  // ---- bf16 weight mirror (null where a backend has none) ----
  // Keeps a bf16 copy of the fp32 weights [base, base+n) (rewritten by each call and by adamw() on
  // that range), which GEMMs read instead of rounding a weight on every call; n = 0 releases it.
  void (*mirror_weights)(const float* base, size_t n) = nullptr;
  // The mirror's bf16 copy of the weights W[0, n) (device memory), or null when none holds them:
  // what linear_fwd_bf16w reads for decode with set_decode_weights("bf16") on such a backend.
  const uint16_t* (*weight_mirror_of)(const float* W, size_t n) = nullptr;
  // Keeps a bf16 copy of the activation x[0, n), which GEMMs reading it take instead of rounding it
  // on each call (the same values: results unchanged); a call on the same x and n refreshes it,
  // n = 0 releases it. how (MirrorFill): copy_now rounds x as it is now; by_next_op only allocates
  // it, for an output of the next op that writes x, which must be rmsnorm_fwd, rmsnorm_bwd (dx),
  // swiglu_fwd or swiglu_bwd: they write the mirrors of their outputs in the same pass; only_mirror
  // (swiglu_fwd/bwd outputs) also leaves x itself unwritten: the caller promises that only GEMMs on
  // bf16 operands (every dimension >= 64) read x until it is released, and the backend refuses an
  // fp32-operand GEMM on it; the backend may keep that copy in x's own memory, so x's fp32 values are
  // gone until x is written again. gemm_output: as only_mirror, for x written next by linear_fwd (its
  // output) or linear_bwd (dx, not added to): the GEMM writes its product rounded to bf16, alone,
  // and x may be read only by those GEMMs and by swiglu_fwd / swiglu_bwd, xent_fwd / xent_bwd (the
  // logits) and strided_copy (src), which then read the bf16 values. Unlike the other kinds this rounds a value the model would otherwise keep
  // in fp32 (mixed precision's bf16 activation storage); a backend may decline it (returns false:
  // x is written and read in fp32 as without a mirror). Returns whether x has a mirror now (false:
  // off, or not the bf16 GEMM mode). The caller releases it before anything else changes x or
  // frees it.
  bool (*mirror_activation)(const float* x, size_t n, MirrorFill how) = nullptr;
  // ---- decode graphs (null where a backend has none) ----
  // Runs body(), ops on this backend and no host transfers or host bookkeeping, as one captured
  // graph where the backend has graphs switched on (otherwise body() runs as it is): the ops are
  // recorded, then launched together. The same kernels run on the same data, so results are
  // bitwise the same. key: every pointer and number the body's work depends on (buffers, states,
  // shapes); when it equals the key of the graph launched last, that graph is launched again
  // without running body() at all. A key is recorded when it comes twice in a row; other steps,
  // and an empty key, run body() as it is.
  void (*run_captured)(const std::vector<uintptr_t>& key, const std::function<void()>& body) = nullptr;
};

const OpsTable& ops_ref();  // plain loops, fp32 instantiation of ref_ops.h
const OpsTable& ops_cpu();  // optimized
// CUDA (device memory, see ops/cuda/cuda_backend.h); fails with a clear error when smoothread was
// built without -DSMOOTHREAD_CUDA=ON or no GPU is visible.
const OpsTable& ops_cuda();
bool cuda_built();
// "cpu" | "ref" | "cuda"; anything else is an error naming the valid choices.
const OpsTable& ops_for_device(const std::string& device);

}  // namespace sr
