// The CUDA ops behind ops_cuda() (device pointers, contracts in ops/ops.h).
#pragma once
#include <cuda_bf16.h>

#include "ops/ops.h"

namespace sr::cuda::ops {
void embedding_fwd(float* out, const int32_t* ids, const float* table, int N, int C);
void embedding_bwd(float* dtable, const float* dout, const int32_t* ids, int N, int C);
void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);
void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N, int C,
                 bool add_dx = false);
void linear_fwd(float* out, const float* x, const float* W, const float* b, int N, int I, int O);
void linear_fwd_add(float* out, const float* res, const float* x, const float* W, int N, int I, int O);
void linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I, int O,
                int flags = 0);
void linear_fwd_bf16w(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O);
void linear_swiglu_fwd(float* out, const float* x, const float* W, int N, int I, int F);
void linear_swiglu_fwd_bf16w(float* out, const float* x, const uint16_t* W, int N, int I, int F);
void rope_fwd(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta);
void rope_bwd(float* dx, const float* dout, const int32_t* pos, int N, int H, int D, float theta);
void attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const AttnShape& s);
void swiglu_fwd(float* out, const float* gate, const float* up, int N, int F);
void swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N, int F);
void xent_fwd(float* loss, float* lse, const float* logits, const int32_t* targets, int N, int V);
void xent_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets, const float* g, int N, int V);
void add(float* out, const float* a, const float* b, size_t n);
void scale(float* x, size_t n, float s);
void mul(float* out, const float* a, const float* b, size_t n);
void strided_copy(float* dst, size_t dst_stride, const float* src, size_t src_stride, size_t rows, size_t width);
void ring_store_kv(float* ring_k, float* ring_v, const float* k, const float* v, const int32_t* pos, int W,
                   size_t width);
void add_rmsnorm_fwd(float* x, float* out, float* rstd, const float* t, const float* w, int N, int C, float eps);
double sum_squares(const float* x, size_t n);
void adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWStep& a);
}  // namespace sr::cuda::ops
namespace sr::cuda {
void mirror_weights(const float* base, size_t n);
bool mirror_activation(const float* x, size_t n, MirrorFill how);
// A bf16 view of an fp32 operand of `count` floats (a GEMM's, the attention's): the mirror when one
// holds the operand, else a rounded copy (one elementwise pass, freed stream-ordered when the view
// goes). Fails when the operand lies in an activation kept only as bf16 but not in its mirror.
class Bf16Operand {
 public:
  Bf16Operand(const float* x, size_t count);
  ~Bf16Operand();
  Bf16Operand(const Bf16Operand&) = delete;
  Bf16Operand& operator=(const Bf16Operand&) = delete;
  const __nv_bfloat16* get() const { return p_; }

 private:
  const __nv_bfloat16* p_ = nullptr;
  __nv_bfloat16* owned_ = nullptr;
};
}  // namespace sr::cuda
namespace sr::cuda::ops {
// Gated DeltaNet layer pieces (gated_deltanet.cu)
void causal_conv_fwd(float* out, float* state, const float* x, const float* w, int B, int T, int Cc, int K);
void causal_conv_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* state0,
                     int B, int T, int Cc, int K);
void l2norm_fwd(float* out, float* rnorm, const float* x, int N, int D);
void l2norm_bwd(float* dx, const float* dout, const float* out, const float* rnorm, int N, int D);
void gdn_gates_fwd(float* g, float* beta, const float* a, const float* b, const float* A_log, const float* dt_bias,
                   int N, int H);
void gdn_gates_bwd(float* da, float* db, float* dA_log, float* ddt_bias, const float* dg, const float* dbeta,
                   const float* a, const float* b, const float* A_log, const float* dt_bias, int N, int H);
void gated_rmsnorm_fwd(float* out, float* rstd, const float* o, const float* z, const float* w, int rows, int D,
                       float eps);
void gated_rmsnorm_bwd(float* do_, float* dz, float* dw, const float* dout, const float* o, const float* z,
                       const float* w, const float* rstd, int rows, int D);
void delta_rule_fwd(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const DeltaShape& s);
void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s);
// RWKV-7 layer pieces and the generalized delta rule (rwkv7.cu)
void gdr_fwd(float* y, float* state, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const GdrShape& s);
void gdr_bwd(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
             const float* dstate_in, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const float* state0, const GdrShape& s);
void layernorm_fwd(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N, int G,
                   int D, float eps);
void layernorm_bwd(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                   const float* mean, const float* rstd, int N, int G, int D);
void token_shift_fwd(float* out, const float* x, const float* prev, const float* mu, int B, int T, int C, int M);
void token_shift_bwd(float* dx, float* dmu, const float* dout, const float* x, const float* prev, const float* mu,
                     int B, int T, int C, int M);
void act_fwd(float* out, const float* x, size_t n, int kind);
void act_bwd(float* dx, const float* dout, const float* x, size_t n, int kind);
void rwkv7_prep_fwd(float* w, float* kmod, float* vmod, float* alpha, float* beta, float* rnorm, const float* k,
                    const float* v, const float* wl, const float* al, const float* vl, const float* vfirst,
                    const float* kkw, const float* ka, int N, int H, int D);
void rwkv7_prep_bwd(float* dk, float* dv, float* dwl, float* dal, float* dvl, float* dvfirst, float* dkkw, float* dka,
                    const float* dw, const float* dkmod, const float* dvmod, const float* dalpha, const float* dbeta,
                    const float* k, const float* v, const float* wl, const float* al, const float* vl,
                    const float* vfirst, const float* kkw, const float* ka, const float* rnorm, int N, int H, int D);
void rwkv7_out_fwd(float* out, const float* yn, const float* r, const float* kmod, const float* v, const float* rk,
                   const float* g, int N, int H, int D);
void rwkv7_out_bwd(float* dyn, float* dr, float* dkmod, float* dv, float* drk, float* dg, const float* dout,
                   const float* yn, const float* r, const float* kmod, const float* v, const float* rk, const float* g,
                   int N, int H, int D);
}  // namespace sr::cuda::ops
