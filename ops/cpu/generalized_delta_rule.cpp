// Optimized CPU generalized delta rule (RWKV-7's recurrence, and Gated DeltaNet's as its special
// case; contract in ops/ops.h). Parallel over (batch, head).
// Forward: the chunked DPLR form, chunks of at most min(s.chunk, 64) tokens, GEMMs through OpenBLAS.
// With g_t = sum_{s<=t} log w_s per key channel (within the chunk) and D_t = diag(exp(g_t)):
//   H_t = D_t [H_0 + sum_{s<=t} (b^_s u_s^T + k^_s v_s^T)],  b^ = b e^{-g}, k^ = k e^{-g}
//   u_t = H_0^T a~_t + sum_{s<t} (a~_t.b^_s) u_s + (a~_t.k^_s) v_s,  a~_t = a_t e^{g_{t-1}}
//       -> a unit lower-triangular solve for U [n, Dv]
//   y_t = H_0^T r~_t + sum_{s<=t} (r~_t.b^_s) u_s + (r~_t.k^_s) v_s,  r~_t = r_t e^{g_t}
//   H_n = D_n (H_0 + B^^T U + K^^T V)
// The split exponentials stay in fp32 range while |g| <= kMaxLogDecay: a chunk ends early where the
// cumulative decay of some channel would leave that range (RWKV-7's decay bound gives |g| <= 38.8
// for 64 tokens, so its chunks are full; Gated DeltaNet's fast-forgetting heads get shorter ones),
// and a token whose own decay is out of range (w < e^-40) takes one exact step. Chunked and
// token-serial forms agree to rounding; results do not depend on the chunk size beyond that.
// Backward: the same chunks in reverse. Chunk-start states come from one forward pass (memory
// O(T/C * Dk*Dv) per head); each chunk's forward is recomputed from its start state and
// differentiated in the same GEMM form (chunk_bwd below), then the per-channel log decays are
// handled by a reverse cumulative sum.
// The scan works on chunk-local rows (ops/cpu/gdr_scan.h); gdr_fwd/gdr_bwd here feed it RWKV-7's
// [B,T,H,D] tensors, ops/cpu/gated_deltanet.cpp feeds it Gated DeltaNet's.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "ops/cpu/gdr_scan.h"
#include "ops/ref/generalized_delta_rule.h"

namespace sr::cpu {

namespace {
constexpr float kMaxLogDecay = 40.0f;  // |cumulative log decay| per chunk; e^40 = 2.4e17 stays well inside fp32
constexpr int kMaxChunk = 64;          // chunk length: s.chunk capped here

// C [m, n] (+)= op(A) op(B), row-major, leading dimensions = the row lengths.
void gemm(bool ta, bool tb, int m, int n, int kdim, const float* A, const float* B, float* C, float beta) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, kdim, 1.0f, A,
              ta ? m : kdim, B, tb ? kdim : n, beta, C, n);
}

struct ChunkScratch {
  GdrRows x, dx;  // the chunk's inputs and their gradients
  // forward: g, at, rt, bh, kh [C, Dk]; V = x.v, U, Y [C, Dv]; Lab, Lak, Mrb, Mrk [C, C]; H0 [Dk, Dv]
  std::vector<float> g, at, rt, bh, kh, U, Y, Lab, Lak, Mrb, Mrk, H0, u;
  // backward: dY, dU, dR [C, Dv]; drt, dat, dbh, dkh [C, Dk]; dL [C, C]; dG [Dk, Dv]; du [Dv]
  std::vector<float> dY, dU, dR, drt, dat, dbh, dkh, dL, dG, du;
  void fit(int C, int Dk, int Dv) {
    x.fit(C, Dk, Dv), dx.fit(C, Dk, Dv);
    for (auto* p : {&g, &at, &rt, &bh, &kh, &drt, &dat, &dbh, &dkh}) p->resize(size_t(C) * Dk);
    for (auto* p : {&U, &Y, &dY, &dU, &dR}) p->resize(size_t(C) * Dv);
    for (auto* p : {&Lab, &Lak, &Mrb, &Mrk, &dL}) p->resize(size_t(C) * C);
    H0.resize(size_t(Dk) * Dv), dG.resize(size_t(Dk) * Dv), u.resize(size_t(Dv)), du.resize(size_t(Dv));
  }
};

// The chunk's length among the n loaded tokens: the longest prefix whose cumulative log decays
// stay within kMaxLogDecay, with c.g filled for it. 0 or 1 means "one exact token step".
int chunk_length(int n, int Dk, ChunkScratch& c) {
  for (int t = 0; t < n; ++t) {
    const float* wt = c.x.w.data() + size_t(t) * Dk;
    float* gt = c.g.data() + size_t(t) * Dk;
    for (int i = 0; i < Dk; ++i) {
      gt[i] = (t ? gt[i - Dk] : 0.0f) + std::log(wt[i]);
      if (!(std::fabs(gt[i]) <= kMaxLogDecay)) return t;  // also catches NaN and w <= 0
    }
  }
  return n;
}

// One exact token step (row 0 of c.x) on H, the reference's math; y row into c.Y when want_y.
void token_step(float* H, int Dk, int Dv, ChunkScratch& c, bool want_y) {
  const GdrRows& x = c.x;
  ref::gdr_step(H, x.w.data(), x.a.data(), x.b.data(), x.k.data(), x.v.data(), c.u.data(), Dk, Dv);
  if (!want_y) return;
  float* y = c.Y.data();
  std::fill_n(y, Dv, 0.0f);
  for (int i = 0; i < Dk; ++i) {
    const float ri = x.r[i];
    const float* Hi = H + size_t(i) * Dv;
    for (int j = 0; j < Dv; ++j) y[j] += Hi[j] * ri;
  }
}

// One chunk of n >= 2 tokens (rows of c.x; c.g from chunk_length); H [Dk, Dv] advanced in place,
// its start kept in c.H0, every intermediate the backward needs left in c; Y [n, Dv] when want_y.
void chunk_fwd(float* H, int n, int Dk, int Dv, ChunkScratch& c, bool want_y) {
  const GdrRows& x = c.x;
  std::copy_n(H, size_t(Dk) * Dv, c.H0.data());
  for (size_t o = 0; o < size_t(n) * Dk; ++o) {
    const float eprev = o >= size_t(Dk) ? std::exp(c.g[o - Dk]) : 1.0f, e = std::exp(c.g[o]), einv = std::exp(-c.g[o]);
    c.at[o] = x.a[o] * eprev;
    c.rt[o] = x.r[o] * e;
    c.bh[o] = x.b[o] * einv;
    c.kh[o] = x.k[o] * einv;
  }
  const float* V = x.v.data();
  gemm(false, true, n, n, Dk, c.at.data(), c.bh.data(), c.Lab.data(), 0.0f);
  gemm(false, true, n, n, Dk, c.at.data(), c.kh.data(), c.Lak.data(), 0.0f);
  gemm(false, true, n, n, Dk, c.rt.data(), c.bh.data(), c.Mrb.data(), 0.0f);
  gemm(false, true, n, n, Dk, c.rt.data(), c.kh.data(), c.Mrk.data(), 0.0f);
  for (int t = 0; t < n; ++t)  // masks: strictly lower for u, lower (with the diagonal) for y
    for (int q = t; q < n; ++q) {
      c.Lab[size_t(t) * n + q] = c.Lak[size_t(t) * n + q] = 0.0f;
      if (q > t) c.Mrb[size_t(t) * n + q] = c.Mrk[size_t(t) * n + q] = 0.0f;
    }
  // U: rhs = A~ H0 + L_ak V, then forward substitution u_t = rhs_t + sum_{q<t} L_ab[t,q] u_q
  gemm(false, false, n, Dv, Dk, c.at.data(), c.H0.data(), c.U.data(), 0.0f);
  gemm(false, false, n, Dv, n, c.Lak.data(), V, c.U.data(), 1.0f);
  for (int t = 1; t < n; ++t) {
    float* ut = c.U.data() + size_t(t) * Dv;
    for (int q = 0; q < t; ++q) {
      const float l = c.Lab[size_t(t) * n + q];
      const float* uq = c.U.data() + size_t(q) * Dv;
      for (int j = 0; j < Dv; ++j) ut[j] += l * uq[j];
    }
  }
  if (want_y) {  // Y = R~ H0 + M_rb U + M_rk V
    gemm(false, false, n, Dv, Dk, c.rt.data(), c.H0.data(), c.Y.data(), 0.0f);
    gemm(false, false, n, Dv, n, c.Mrb.data(), c.U.data(), c.Y.data(), 1.0f);
    gemm(false, false, n, Dv, n, c.Mrk.data(), V, c.Y.data(), 1.0f);
  }
  // H_n = D_n (H0 + B^^T U + K^^T V)
  gemm(true, false, Dk, Dv, n, c.bh.data(), c.U.data(), H, 1.0f);
  gemm(true, false, Dk, Dv, n, c.kh.data(), V, H, 1.0f);
  const float* gn = c.g.data() + size_t(n - 1) * Dk;
  for (int i = 0; i < Dk; ++i) {
    const float d = std::exp(gn[i]);
    for (int j = 0; j < Dv; ++j) H[size_t(i) * Dv + j] *= d;
  }
}

// Backward of chunk_fwd (intermediates in c, its end state in Hn, dy rows in c.dY). dH holds
// d(end state) on entry and d(start state) on return; the gradients go to c.dx (w: d log w).
void chunk_bwd(float* dH, const float* Hn, int n, int Dk, int Dv, ChunkScratch& c) {
  GdrRows& dx = c.dx;
  const float* V = c.x.v.data();
  const float* gn = c.g.data() + size_t(n - 1) * Dk;
  // H_n = D_n G: dG = D_n dH_n; the end decay's log gradient sum_j dH_n H_n joins dlogw's row n-1
  float* dg = dx.w.data();  // d g_t first, d log w after the reverse cumulative sum
  std::fill_n(dg, size_t(n) * Dk, 0.0f);
  for (int i = 0; i < Dk; ++i) {
    const float d = std::exp(gn[i]);
    float acc = 0.0f;
    for (int j = 0; j < Dv; ++j) {
      const size_t e = size_t(i) * Dv + j;
      acc += dH[e] * Hn[e];
      c.dG[e] = d * dH[e];
    }
    dg[size_t(n - 1) * Dk + i] = acc;
  }
  float* dH0 = dH;  // G = H0 + B^^T U + K^^T V
  float* dV = dx.v.data();
  std::copy_n(c.dG.data(), size_t(Dk) * Dv, dH0);
  gemm(false, false, n, Dv, Dk, c.bh.data(), c.dG.data(), c.dU.data(), 0.0f);
  gemm(false, false, n, Dv, Dk, c.kh.data(), c.dG.data(), dV, 0.0f);
  gemm(false, true, n, Dk, Dv, c.U.data(), c.dG.data(), c.dbh.data(), 0.0f);
  gemm(false, true, n, Dk, Dv, V, c.dG.data(), c.dkh.data(), 0.0f);
  // Y = R~ H0 + M_rb U + M_rk V
  gemm(true, false, Dk, Dv, n, c.rt.data(), c.dY.data(), dH0, 1.0f);
  gemm(false, true, n, Dk, Dv, c.dY.data(), c.H0.data(), c.drt.data(), 0.0f);
  gemm(true, false, n, Dv, n, c.Mrb.data(), c.dY.data(), c.dU.data(), 1.0f);
  gemm(true, false, n, Dv, n, c.Mrk.data(), c.dY.data(), dV, 1.0f);
  auto masked_outer = [&](const float* X, const float* Z, bool diagonal) {  // dL = mask(X Z^T), X, Z [n, Dv]
    gemm(false, true, n, n, Dv, X, Z, c.dL.data(), 0.0f);
    for (int t = 0; t < n; ++t)
      for (int q = diagonal ? t + 1 : t; q < n; ++q) c.dL[size_t(t) * n + q] = 0.0f;
  };
  // M = mask(X K^T): dX += dM K, dK += dM^T X
  auto back_product = [&](const float* X, const float* K, float* dX, float* dK) {
    gemm(false, false, n, Dk, n, c.dL.data(), K, dX, 1.0f);
    gemm(true, false, n, Dk, n, c.dL.data(), X, dK, 1.0f);
  };
  masked_outer(c.dY.data(), c.U.data(), true);  // M_rb = lower(R~ B^^T)
  back_product(c.rt.data(), c.bh.data(), c.drt.data(), c.dbh.data());
  masked_outer(c.dY.data(), V, true);  // M_rk = lower(R~ K^^T)
  back_product(c.rt.data(), c.kh.data(), c.drt.data(), c.dkh.data());
  // (I - L_ab) U = A~ H0 + L_ak V: dR = (I - L_ab)^-T dU (back substitution)
  std::copy_n(c.dU.data(), size_t(n) * Dv, c.dR.data());
  for (int t = n - 2; t >= 0; --t) {
    float* dRt = c.dR.data() + size_t(t) * Dv;
    for (int q = t + 1; q < n; ++q) {
      const float l = c.Lab[size_t(q) * n + t];
      const float* dRq = c.dR.data() + size_t(q) * Dv;
      for (int j = 0; j < Dv; ++j) dRt[j] += l * dRq[j];
    }
  }
  gemm(false, true, n, Dk, Dv, c.dR.data(), c.H0.data(), c.dat.data(), 0.0f);
  gemm(true, false, Dk, Dv, n, c.at.data(), c.dR.data(), dH0, 1.0f);
  gemm(true, false, n, Dv, n, c.Lak.data(), c.dR.data(), dV, 1.0f);
  masked_outer(c.dR.data(), c.U.data(), false);  // L_ab = strict_lower(A~ B^^T)
  back_product(c.at.data(), c.bh.data(), c.dat.data(), c.dbh.data());
  masked_outer(c.dR.data(), V, false);  // L_ak = strict_lower(A~ K^^T)
  back_product(c.at.data(), c.kh.data(), c.dat.data(), c.dkh.data());
  // the scaled inputs: a~ = a e^{g_{t-1}}, r~ = r e^{g_t}, b^ = b e^{-g_t}, k^ = k e^{-g_t}
  for (size_t o = 0; o < size_t(n) * Dk; ++o) {
    const float eprev = o >= size_t(Dk) ? std::exp(c.g[o - Dk]) : 1.0f, e = std::exp(c.g[o]), einv = std::exp(-c.g[o]);
    dx.r[o] = c.drt[o] * e;
    dx.a[o] = c.dat[o] * eprev;
    dx.b[o] = c.dbh[o] * einv;
    dx.k[o] = c.dkh[o] * einv;
    dg[o] += c.drt[o] * c.rt[o] - c.dbh[o] * c.bh[o] - c.dkh[o] * c.kh[o];
    if (o >= size_t(Dk)) dg[o - Dk] += c.dat[o] * c.at[o];
  }
  // g_t = sum_{s<=t} log w_s: d log w_s = sum_{t>=s} dg_t
  for (int t = n - 2; t >= 0; --t)
    for (int i = 0; i < Dk; ++i) dg[size_t(t) * Dk + i] += dg[size_t(t + 1) * Dk + i];
}

// Backward of token_step (row 0 of c.x, states Hs [before, after]); gradients into row 0 of c.dx.
void token_bwd(float* dH, const float* Hs, int Dk, int Dv, ChunkScratch& c) {
  GdrShape one;
  one.Dk = Dk, one.Dv = Dv;
  const GdrRows& x = c.x;
  GdrRows& dx = c.dx;
  ref::gdr_bwd_segment(dx.r.data(), dx.w.data(), dx.a.data(), dx.b.data(), dx.k.data(), dx.v.data(), dH, Hs,
                       c.dY.data(), x.r.data(), x.w.data(), x.a.data(), x.b.data(), x.k.data(), x.v.data(), one, 0, 0,
                       0, 1, c.u.data(), c.du.data());
  for (int i = 0; i < Dk; ++i) dx.w[i] *= x.w[i];  // -> d log w
}

// Loads the next chunk from t0 and returns its length (>= 1; 1 = a token step).
int next_chunk(GdrSource& src, int t0, int T, int C, int Dk, ChunkScratch& c) {
  const int avail = std::min(C, T - t0);
  src.load(t0, avail, c.x);
  return std::max(1, chunk_length(avail, Dk, c));
}
}  // namespace

void gdr_scan_fwd(float* H, GdrSource& src, const GdrHeadShape& s) {
  const int C = std::clamp(s.chunk, 1, kMaxChunk);
  ChunkScratch c;
  c.fit(C, s.Dk, s.Dv);
  for (int t0 = 0; t0 < s.T;) {
    const int n = next_chunk(src, t0, s.T, C, s.Dk, c);
    if (n >= 2) chunk_fwd(H, n, s.Dk, s.Dv, c, true);
    else token_step(H, s.Dk, s.Dv, c, true);
    src.store_y(t0, n, c.Y.data());
    t0 += n;
  }
}

void gdr_scan_bwd(float* dH0, const float* dH_final, const float* H0, GdrSource& src, const GdrHeadShape& s) {
  const int Dk = s.Dk, Dv = s.Dv, S = Dk * Dv, C = std::clamp(s.chunk, 1, kMaxChunk);
  ChunkScratch c;
  c.fit(C, Dk, Dv);
  // forward: the chunks and their start states
  std::vector<int> starts;
  std::vector<float> ckpt, H(H0, H0 + S);
  for (int t0 = 0; t0 < s.T;) {
    const int n = next_chunk(src, t0, s.T, C, Dk, c);
    starts.push_back(t0);
    ckpt.insert(ckpt.end(), H.begin(), H.end());
    if (n >= 2) chunk_fwd(H.data(), n, Dk, Dv, c, false);
    else token_step(H.data(), Dk, Dv, c, false);
    t0 += n;
  }
  // backward, chunk by chunk from the last; dH0 carries d(state after the chunk), then before it
  std::vector<float> Hs(2 * size_t(S));
  if (dH_final) std::copy_n(dH_final, S, dH0);
  else std::fill_n(dH0, S, 0.0f);
  int t1 = s.T;
  for (int ci = int(starts.size()) - 1; ci >= 0; --ci) {
    const int t0 = starts[ci], n = t1 - t0;
    src.load(t0, n, c.x);
    src.load_dy(t0, n, c.dY.data());
    std::copy_n(ckpt.data() + size_t(ci) * S, S, Hs.data());
    std::copy_n(Hs.data(), S, Hs.data() + S);
    if (n >= 2) {
      chunk_length(n, Dk, c);  // refills c.g
      chunk_fwd(Hs.data() + S, n, Dk, Dv, c, false);
      chunk_bwd(dH0, Hs.data() + S, n, Dk, Dv, c);
    } else {
      token_step(Hs.data() + S, Dk, Dv, c, false);
      token_bwd(dH0, Hs.data(), Dk, Dv, c);
    }
    src.store_grads(t0, n, c.x, c.dx);
    t1 = t0;
  }
}

namespace {
// RWKV-7's layout: r, w, a, b, k [B,T,H,Dk], v, y [B,T,H,Dv], one (batch, head) pair.
class GdrTensors final : public GdrSource {
 public:
  struct In { const float *r, *w, *a, *b, *k, *v; };
  struct Grad { float *dr, *dw, *da, *db, *dk, *dv; };
  GdrTensors(const GdrShape& s, int bb, int h, In in, float* y, const float* dy, Grad g)
      : s_(s), bb_(bb), h_(h), in_(in), y_(y), dy_(dy), g_(g) {}
  void load(int t0, int n, GdrRows& x) override {
    for (int t = 0; t < n; ++t) {
      const size_t ik = row(t0 + t, s_.Dk), o = size_t(t) * s_.Dk;
      std::copy_n(in_.r + ik, s_.Dk, x.r.data() + o), std::copy_n(in_.w + ik, s_.Dk, x.w.data() + o);
      std::copy_n(in_.a + ik, s_.Dk, x.a.data() + o), std::copy_n(in_.b + ik, s_.Dk, x.b.data() + o);
      std::copy_n(in_.k + ik, s_.Dk, x.k.data() + o);
      std::copy_n(in_.v + row(t0 + t, s_.Dv), s_.Dv, x.v.data() + size_t(t) * s_.Dv);
    }
  }
  void store_y(int t0, int n, const float* y) override {
    for (int t = 0; t < n; ++t) std::copy_n(y + size_t(t) * s_.Dv, s_.Dv, y_ + row(t0 + t, s_.Dv));
  }
  void load_dy(int t0, int n, float* dy) override {
    for (int t = 0; t < n; ++t) std::copy_n(dy_ + row(t0 + t, s_.Dv), s_.Dv, dy + size_t(t) * s_.Dv);
  }
  void store_grads(int t0, int n, const GdrRows& x, const GdrRows& dx) override {
    for (int t = 0; t < n; ++t) {
      const size_t ik = row(t0 + t, s_.Dk), o = size_t(t) * s_.Dk;
      std::copy_n(dx.r.data() + o, s_.Dk, g_.dr + ik), std::copy_n(dx.a.data() + o, s_.Dk, g_.da + ik);
      std::copy_n(dx.b.data() + o, s_.Dk, g_.db + ik), std::copy_n(dx.k.data() + o, s_.Dk, g_.dk + ik);
      for (int i = 0; i < s_.Dk; ++i) g_.dw[ik + i] = dx.w[o + i] / x.w[o + i];
      std::copy_n(dx.v.data() + size_t(t) * s_.Dv, s_.Dv, g_.dv + row(t0 + t, s_.Dv));
    }
  }

 private:
  size_t row(int t, int D) const { return ref::gdr_at(s_, bb_, t, h_, D); }
  const GdrShape& s_;
  int bb_, h_;
  In in_;
  float* y_;
  const float* dy_;
  Grad g_;
};

}  // namespace

void gdr_fwd(float* y, float* state, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const GdrShape& s) {
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      GdrTensors src(s, bb, h, {r, w, a, b, k, v}, y, nullptr, {});
      gdr_scan_fwd(state + (size_t(bb) * s.H + h) * s.Dk * s.Dv, src, GdrHeadShape::of(s));
    }
}

void gdr_bwd(float* dr, float* dw, float* da, float* db, float* dk, float* dv, float* dstate0, const float* dy,
             const float* dstate_in, const float* r, const float* w, const float* a, const float* b, const float* k,
             const float* v, const float* state0, const GdrShape& s) {
  const size_t S = size_t(s.Dk) * s.Dv;
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int bb = 0; bb < s.B; ++bb)
    for (int h = 0; h < s.H; ++h) {
      GdrTensors src(s, bb, h, {r, w, a, b, k, v}, nullptr, dy, {dr, dw, da, db, dk, dv});
      const size_t so = (size_t(bb) * s.H + h) * S;
      gdr_scan_bwd(dstate0 + so, dstate_in ? dstate_in + so : nullptr, state0 + so, src, GdrHeadShape::of(s));
    }
}

}  // namespace sr::cpu
