// Optimized CPU generalized delta rule (RWKV-7's recurrence; contract in ops/ops.h). Parallel over
// (batch, head). Forward: the token scan (fp32 state, O(T Dk Dv)). Backward: exact backprop through
// time with checkpoints every s.chunk tokens (ops/cpu/checkpointed_scan.h). The per-token math is
// the reference's (ops/ref/generalized_delta_rule.h).
#include <algorithm>
#include <vector>

#include "ops/cpu/checkpointed_scan.h"
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
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      ScanScratch scratch;
      std::vector<float> u(Dv), du(Dv);
      auto step = [&](float* H, int t) {
        const size_t ik = gdr_at(s, bb, t, h, Dk);
        ref::gdr_step(H, w + ik, a + ik, b + ik, k + ik, v + gdr_at(s, bb, t, h, Dv), u.data(), Dk, Dv);
      };
      auto step_bwd = [&](float* dH, int t, const float* Hprev) {
        ref::gdr_bwd_segment(dr, dw, da, db, dk, dv, dH, Hprev, dy, r, w, a, b, k, v, s, bb, h, t, t + 1, u.data(),
                             du.data());
      };
      const size_t so = (size_t(bb) * s.H + h) * S;
      checkpointed_bptt(s.T, s.chunk, S, state0 + so, dstate_in ? dstate_in + so : nullptr, dstate0 + so, scratch, step,
                        step_bwd);
    }
}

}  // namespace sr::cpu
