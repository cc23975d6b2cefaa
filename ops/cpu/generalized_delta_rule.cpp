// Optimized CPU generalized delta rule (RWKV-7's recurrence; contract in ops/ops.h). Parallel over
// (batch, head). Forward: the token scan (fp32 state, O(T Dk Dv)). Backward: exact backprop through
// time with checkpoints every s.chunk tokens: chunk-start states from one forward pass, then each
// chunk's states recomputed and walked in reverse (memory O(chunk Dk Dv) per thread instead of the
// reference's O(T Dk Dv)). The per-token math is the reference's (ops/ref/generalized_delta_rule.h).
#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "ops/ref/generalized_delta_rule.h"

namespace sr::cpu {

using ref::gdr_at;

void gdr_fwd(float* y, float* state, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const GdrShape& s) {
  const int Dk = s.Dk, Dv = s.Dv;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      std::vector<float> u(Dv);
      float* H = state + (size_t(bb) * s.H + h) * Dk * Dv;
      for (int t = 0; t < s.T; ++t) {
        const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
        ref::gdr_step(H, w + ik, a + ik, b + ik, k + ik, v + iv, u.data(), Dk, Dv);
        float* yt = y + iv;
        std::fill_n(yt, Dv, 0.0f);
        for (int i = 0; i < Dk; ++i) {
          const float ri = r[ik + i];
          const float* Hi = H + size_t(i) * Dv;
          for (int j = 0; j < Dv; ++j) yt[j] += Hi[j] * ri;
        }
      }
    }
}

void gdr_bwd(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
             const float* dstate_in, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const float* state0, const GdrShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv, C = std::max(1, s.chunk), nchunks = (s.T + C - 1) / C;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      std::vector<float> ckpt(size_t(nchunks) * S), Hs(size_t(C + 1) * S), dH(S), u(Dv), du(Dv);
      std::copy_n(state0 + (size_t(bb) * s.H + h) * S, S, Hs.data());
      for (int c = 0; c < nchunks; ++c) {
        std::copy_n(Hs.data(), S, ckpt.data() + size_t(c) * S);
        for (int t = c * C; t < std::min(s.T, (c + 1) * C); ++t) {
          const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
          ref::gdr_step(Hs.data(), w + ik, a + ik, b + ik, k + ik, v + iv, u.data(), Dk, Dv);
        }
      }
      if (dstate_in) std::copy_n(dstate_in + (size_t(bb) * s.H + h) * S, S, dH.data());
      else std::fill(dH.begin(), dH.end(), 0.0f);
      for (int c = nchunks - 1; c >= 0; --c) {
        const int t0 = c * C, t1 = std::min(s.T, t0 + C);
        std::copy_n(ckpt.data() + size_t(c) * S, S, Hs.data());
        for (int t = t0; t < t1; ++t) {
          float* Hn = Hs.data() + size_t(t - t0 + 1) * S;
          std::copy_n(Hn - S, S, Hn);
          const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
          ref::gdr_step(Hn, w + ik, a + ik, b + ik, k + ik, v + iv, u.data(), Dk, Dv);
        }
        ref::gdr_bwd_segment(dr, dw, da, db, dk, dv, dH.data(), Hs.data(), dy, r, w, a, b, k, v, s, bb, h, t0, t1,
                             u.data(), du.data());
      }
      std::copy_n(dH.data(), S, dstate0 + (size_t(bb) * s.H + h) * S);
    }
}

}  // namespace sr::cpu
