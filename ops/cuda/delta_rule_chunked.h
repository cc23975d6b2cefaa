// The chunked delta-rule scans on the GPU (ops/cuda/delta_rule_chunked.cu), for RWKV-7's wkv and
// Gated DeltaNet's gated delta rule. Each returns false, having written nothing, when the shape
// is outside the chunked kernels' range (T < kDeltaChunkMinTokens, head dims above 128) or some
// chunk's cumulative |log decay| exceeds 40; the caller then runs the token-serial kernels.
#pragma once
#include "ops/ops.h"

namespace sr::cuda {
constexpr int kDeltaChunkMax = 64;         // chunk length: the shape's chunk, capped here
constexpr int kDeltaChunkMinTokens = 128;  // shorter calls (decode, small pieces) take the token kernels

// False when the environment sets SMOOTHREAD_DELTA_CHUNKED=0 (every call then takes the token
// kernels: for A/B benchmarks and for bisecting).
bool delta_chunked_enabled();

bool gdr_fwd_chunked(float* y, float* state, const float* r, const float* w, const float* a, const float* b,
                     const float* k, const float* v, const GdrShape& s);
bool gdr_bwd_chunked(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
                     const float* dstate_in, const float* r, const float* w, const float* a, const float* b,
                     const float* k, const float* v, const float* state0, const GdrShape& s);
bool delta_rule_fwd_chunked(float* out, float* state, const float* q, const float* k, const float* v, const float* g,
                            const float* beta, const DeltaShape& s);
bool delta_rule_bwd_chunked(float* dq, float* dk, float* dv, float* dg, float* dbeta, float* dstate0,
                            const float* dout, const float* dstate_in, const float* q, const float* k, const float* v,
                            const float* g, const float* beta, const float* state0, const DeltaShape& s);
}  // namespace sr::cuda
