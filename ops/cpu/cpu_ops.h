// Optimized CPU ops (OpenMP over rows, OpenBLAS for GEMMs, blocked attention). Contracts in ops/ops.h.
#pragma once
#include <bit>
#include <cstdint>

#include "ops/ops.h"

namespace sr::cpu {
// e^x for x <= 0 (x = -inf gives exactly 0), within 2 ulp of std::exp, branch-free so that a loop
// of it vectorizes (std::exp is a scalar libm call per element). Cody-Waite reduction
// x = k ln2 + r, |r| <= ln2 / 2, then Cephes' degree-7 polynomial for e^r, times 2^k built from
// bits. Softmax arguments (scores minus the row's running maximum) are never positive.
inline float exp_nonpositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;  // e^-87 is still a normal float; below that: 0
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - kf * 0.693359375f) - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float two_k = std::bit_cast<float>((int32_t(kf) + 127) << 23);
  return x < -87.0f ? 0.0f : p * two_k;
}

void embedding_fwd(float* out, const int32_t* ids, const float* table, int N, int C);
void embedding_bwd(float* dtable, const float* dout, const int32_t* ids, int N, int C);
void rmsnorm_fwd(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps);
void add_rmsnorm_fwd(float* x, float* out, float* rstd, const float* t, const float* w, int N, int C, float eps);
void rmsnorm_bwd(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int N,
                 int C, bool add_dx = false);
void linear_fwd(float* out, const float* x, const float* W, const float* b, int N, int I, int O);
void linear_fwd_bf16w(float* out, const float* x, const uint16_t* W, const float* b, int N, int I, int O);
void linear_bwd(float* dx, float* dW, float* db, const float* dout, const float* x, const float* W, int N, int I,
                int O, int flags = 0);
void rope_fwd(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta);
void rope_bwd(float* dx, const float* dout, const int32_t* pos, int N, int H, int D, float theta);
void attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s);
void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const AttnShape& s);
void swiglu_fwd(float* out, const float* gate, const float* up, int N, int F);
void swiglu_bwd(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N, int F);
void xent_fwd(float* loss, float* lse, const float* logits, const int32_t* targets, int N, int V);
void xent_bwd(float* dlogits, const float* logits, const float* lse, const int32_t* targets, const float* g, int N,
              int V);
void add(float* out, const float* a, const float* b, size_t n);
void scale(float* x, size_t n, float s);
double sum_squares(const float* x, size_t n);
void adamw(float* p, const float* g, float* m, float* v, const uint8_t* decay, size_t n, const AdamWStep& a);
void delta_rule_fwd(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const DeltaShape& s);
void delta_rule_bwd(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0, const float* dout,
                    const float* dstate_in, const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const float* state0, const DeltaShape& s);
void gdr_fwd(float* y, float* state, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const GdrShape& s);
void gdr_bwd(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
             const float* dstate_in, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const float* state0, const GdrShape& s);

// Blocked attention tile sizes (queries x keys); exposed so tests can probe tile-1 / tile / tile+1.
constexpr int kAttnTileQ = 64;
constexpr int kAttnTileK = 64;
}  // namespace sr::cpu
