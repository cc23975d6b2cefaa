// Exact backpropagation through time for a matrix-state recurrence (the gated and generalized delta
// rules), with checkpoints every C tokens: chunk-start states come from one forward pass, then each
// chunk's per-token states are recomputed and walked in reverse. Memory O((T/C + C) S) instead of
// O(T S). One head at a time; callers parallelize over heads.
#pragma once
#include <algorithm>
#include <vector>

namespace sr::cpu {

struct ScanScratch {
  std::vector<float> ckpt, Hs, dH;
};

// step(H, t): advances the state H [S] in place by token t.
// step_bwd(dH, t, Hprev): backpropagates token t; Hprev = state before it, Hprev + S = after it;
// dH holds d(state after t) on entry and d(state before t) on return.
// dstate_in (d final state) may be null; dstate0 receives d(initial state).
template <class Step, class StepBwd>
void checkpointed_bptt(int T, int C, int S, const float* state0, const float* dstate_in, float* dstate0,
                       ScanScratch& w, Step step, StepBwd step_bwd) {
  C = std::max(1, C);
  const int nchunks = (T + C - 1) / C;
  w.ckpt.resize(size_t(nchunks) * S), w.Hs.resize(size_t(C + 1) * S), w.dH.resize(S);
  float *Hs = w.Hs.data(), *dH = w.dH.data();
  std::copy_n(state0, S, Hs);
  for (int c = 0; c < nchunks; ++c) {
    std::copy_n(Hs, S, w.ckpt.data() + size_t(c) * S);
    for (int t = c * C; t < std::min(T, (c + 1) * C); ++t) step(Hs, t);
  }
  if (dstate_in) std::copy_n(dstate_in, S, dH);
  else std::fill_n(dH, S, 0.0f);
  for (int c = nchunks - 1; c >= 0; --c) {
    const int t0 = c * C, n = std::min(C, T - t0);
    std::copy_n(w.ckpt.data() + size_t(c) * S, S, Hs);
    for (int r = 0; r < n; ++r) {  // Hs[r+1] = state after token t0 + r
      std::copy_n(Hs + size_t(r) * S, S, Hs + size_t(r + 1) * S);
      step(Hs + size_t(r + 1) * S, t0 + r);
    }
    for (int r = n - 1; r >= 0; --r) step_bwd(dH, t0 + r, Hs + size_t(r) * S);
  }
  std::copy_n(dH, S, dstate0);
}

}  // namespace sr::cpu
