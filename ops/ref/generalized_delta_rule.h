// Reference generalized delta rule (diagonal-plus-low-rank state transition): the recurrence
// family shared by RWKV-7 and Gated DeltaNet (issue 7: "one kernel family, not two").
// Per batch b and head h, state H = S^T in [Dk, Dv] layout (HF/fla, as the gated delta rule):
//   u_t = H_{t-1}^T a_t                         [Dv]
//   H_t = diag(w_t) H_{t-1} + b_t u_t^T + k_t v_t^T
//   y_t = H_t^T r_t                             [Dv]
// RWKV-7 (x070): w = the per-channel decay, a = -kappa_hat, b = kappa_hat * a_iclr, r = receptance
// (no scale). Gated DeltaNet is the special case w = e^g (scalar per head), a = k, b = -e^g beta k,
// v <- beta v, r = scale q (gdn_as_generalized below; tested equal).
// Inputs r, w, a, b, k: [B,T,H,Dk]; v, y: [B,T,H,Dv]; state [B,H,Dk,Dv] (initial in, final out).
// Backward = exact backpropagation through time over the stored states.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

#include "ops/ops.h"

namespace sr::ref {

inline size_t gdr_at(const GdrShape& s, int b, int t, int h, int D) { return ((size_t(b) * s.T + t) * s.H + h) * size_t(D); }

// One token on H [Dk, Dv] in place; u: scratch [Dv].
template <class T>
void gdr_step(T* H, const T* w, const T* a, const T* b, const T* k, const T* v, T* u, int Dk, int Dv) {
  for (int j = 0; j < Dv; ++j) {
    T acc = 0;
    for (int i = 0; i < Dk; ++i) acc += a[i] * H[size_t(i) * Dv + j];
    u[j] = acc;
  }
  for (int i = 0; i < Dk; ++i)
    for (int j = 0; j < Dv; ++j) {
      T& h = H[size_t(i) * Dv + j];
      h = w[i] * h + b[i] * u[j] + k[i] * v[j];
    }
}

template <class T>
void gdr_fwd(T* y, T* state, const T* r, const T* w, const T* a, const T* b, const T* k, const T* v, const GdrShape& s) {
  const int Dk = s.Dk, Dv = s.Dv;
  std::vector<T> u(Dv);
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      T* H = state + (size_t(bb) * s.H + h) * Dk * Dv;
      for (int t = 0; t < s.T; ++t) {
        const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
        gdr_step(H, w + ik, a + ik, b + ik, k + ik, v + iv, u.data(), Dk, Dv);
        for (int j = 0; j < Dv; ++j) {
          T acc = 0;
          for (int i = 0; i < Dk; ++i) acc += H[size_t(i) * Dv + j] * r[ik + i];
          y[iv + j] = acc;
        }
      }
    }
}

// Backpropagates tokens [t0, t1) of head (bb, h): Hs[0..t1-t0] = states before/after each token
// (Hs[r+1] = after token t0 + r); dH holds d(state after t1-1) on entry, d(state before t0) on return.
template <class T>
void gdr_bwd_segment(T* dr, T* dw, T* da, T* db, T* dk, T* dv, T* dH, const T* Hs, const T* dy, const T* r,
                     const T* w, const T* a, const T* b, const T* k, const T* v, const GdrShape& s, int bb, int h,
                     int t0, int t1, T* u, T* du) {
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv;
  for (int t = t1 - 1; t >= t0; --t) {
    const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
    const T *Ht = Hs + size_t(t - t0 + 1) * S, *Hp = Hs + size_t(t - t0) * S;
    // y = H_t^T r
    for (int i = 0; i < Dk; ++i) {
      T acc = 0;
      for (int j = 0; j < Dv; ++j) acc += Ht[size_t(i) * Dv + j] * dy[iv + j], dH[size_t(i) * Dv + j] += r[ik + i] * dy[iv + j];
      dr[ik + i] = acc;
    }
    // H_t = diag(w) H_{t-1} + b u^T + k v^T, u = H_{t-1}^T a
    for (int j = 0; j < Dv; ++j) {
      T acc_u = 0, acc_du = 0, acc_dv = 0;
      for (int i = 0; i < Dk; ++i) {
        acc_u += a[ik + i] * Hp[size_t(i) * Dv + j];
        acc_du += dH[size_t(i) * Dv + j] * b[ik + i];
        acc_dv += dH[size_t(i) * Dv + j] * k[ik + i];
      }
      u[j] = acc_u, du[j] = acc_du, dv[iv + j] = acc_dv;
    }
    for (int i = 0; i < Dk; ++i) {
      T sk = 0, sb = 0, sw = 0, sa = 0;
      for (int j = 0; j < Dv; ++j) {
        const T g = dH[size_t(i) * Dv + j];
        sk += g * v[iv + j], sb += g * u[j], sw += g * Hp[size_t(i) * Dv + j], sa += Hp[size_t(i) * Dv + j] * du[j];
      }
      dk[ik + i] = sk, db[ik + i] = sb, dw[ik + i] = sw, da[ik + i] = sa;
    }
    // dH_{t-1} = diag(w) dH + a du^T
    for (int i = 0; i < Dk; ++i)
      for (int j = 0; j < Dv; ++j) {
        T& g = dH[size_t(i) * Dv + j];
        g = w[ik + i] * g + a[ik + i] * du[j];
      }
  }
}

// Gradients (all overwritten) for the last call, given dy and d(final state) (dstate_in may be
// null = 0); state0 is the INITIAL state; dstate0 gets d(initial state).
template <class T>
void gdr_bwd(T* dr, T* dw, T* da, T* db, T* dk, T* dv, T* dstate0, const T* dy, const T* dstate_in, const T* r,
             const T* w, const T* a, const T* b, const T* k, const T* v, const T* state0, const GdrShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv;
  std::vector<T> Hs(size_t(s.T + 1) * S), dH(S), u(Dv), du(Dv);
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      const T* H0 = state0 + (size_t(bb) * s.H + h) * S;
      for (int i = 0; i < S; ++i) Hs[i] = H0[i];
      for (int t = 0; t < s.T; ++t) {
        const size_t ik = gdr_at(s, bb, t, h, Dk), iv = gdr_at(s, bb, t, h, Dv);
        T* Hn = Hs.data() + size_t(t + 1) * S;
        for (int i = 0; i < S; ++i) Hn[i] = Hn[i - S];
        gdr_step(Hn, w + ik, a + ik, b + ik, k + ik, v + iv, u.data(), Dk, Dv);
      }
      for (int i = 0; i < S; ++i) dH[i] = dstate_in ? dstate_in[(size_t(bb) * s.H + h) * S + i] : T(0);
      gdr_bwd_segment(dr, dw, da, db, dk, dv, dH.data(), Hs.data(), dy, r, w, a, b, k, v, s, bb, h, 0, s.T, u.data(),
                      du.data());
      for (int i = 0; i < S; ++i) dstate0[(size_t(bb) * s.H + h) * S + i] = dH[i];
    }
}

// Gated DeltaNet inputs (one value head per key head: Hk == Hv) mapped onto the generalized form.
// q, k [B,T,H,Dk] (L2-normalized), v [B,T,H,Dv], g, beta [B,T,H] -> r, w, a, b, k2 [B,T,H,Dk], v2.
template <class T>
void gdn_as_generalized(std::vector<T>& r, std::vector<T>& w, std::vector<T>& a, std::vector<T>& b, std::vector<T>& k2,
                        std::vector<T>& v2, const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                        const std::vector<T>& g, const std::vector<T>& beta, const GdrShape& s, T scale) {
  r.resize(q.size()), w.resize(q.size()), a.resize(q.size()), b.resize(q.size()), k2.resize(q.size()), v2.resize(v.size());
  for (size_t row = 0; row < g.size(); ++row) {  // row = (b, t, h)
    const T e = std::exp(g[row]), bt = beta[row];
    for (int i = 0; i < s.Dk; ++i) {
      const size_t x = row * s.Dk + i;
      r[x] = scale * q[x], w[x] = e, a[x] = k[x], b[x] = -e * bt * k[x], k2[x] = k[x];
    }
    for (int j = 0; j < s.Dv; ++j) v2[row * s.Dv + j] = bt * v[row * s.Dv + j];
  }
}

}  // namespace sr::ref
