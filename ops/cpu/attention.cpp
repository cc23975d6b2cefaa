// Blocked causal / sliding-window attention with online softmax (FlashAttention-2 style) on CPU.
// Never materializes a Tq x Tk matrix: per (batch, head, query tile) it walks only the key tiles
// that intersect the tile's visible band [first query's lo, last query's hi], so with a window W
// the cost is O(Tq * (W + tile)) instead of O(Tq * Tk). Tile products go through sgemm with the
// natural [B,T,H,D] strides (no copies). Backward recomputes P from the saved log-sum-exp.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace sr::cpu {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct TileRange {
  int kmin, kmax;  // inclusive key range needed by query rows [i0, i0+nq)
};

TileRange tile_keys(const AttnShape& s, int i0, int nq) {
  const int off = s.Tk - s.Tq;
  int kmax = std::min(s.Tk - 1, i0 + nq - 1 + off);
  int kmin = s.window > 0 ? std::max(0, i0 + off - s.window + 1) : 0;
  return {kmin, kmax};
}

// max of row[0, n) (scores: finite or -inf, never NaN, so the order of the comparisons cannot
// change the result): two 4-wide running maxima in GCC/Clang vectors (maxps on x86), then across
// them. A plain max loop stays one scalar dependency chain: compilers do not vectorize a float max
// reduction without -ffast-math.
inline float row_max(const float* row, int n) {
  typedef float v4 __attribute__((vector_size(16)));
  v4 a = {kNegInf, kNegInf, kNegInf, kNegInf}, b = a;
  int c = 0;
  for (; c + 8 <= n; c += 8) {
    v4 x, y;
    std::memcpy(&x, row + c, sizeof x);
    std::memcpy(&y, row + c + 4, sizeof y);
    a = x > a ? x : a;
    b = y > b ? y : b;
  }
  a = b > a ? b : a;
  float mx = std::max(std::max(a[0], a[1]), std::max(a[2], a[3]));
  for (; c < n; ++c) mx = std::max(mx, row[c]);
  return mx;
}

// The online-softmax step of one tile (FlashAttention-2): per row r of the scores S[nq, nk] (row
// stride kAttnTileK), the new running max m[r], S -> exp(S - m), the running sum l[r], and the
// accumulator rows acc[r, D] rescaled by exp(old m - new m). Built for AVX-512, AVX2 and the
// baseline, picked at load time where the compiler offers target_clones (GCC on x86-64): the
// exponential loop is most of it, and its vector width follows the instruction set.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void online_softmax_tile(float* S, int nq, int nk, float* m, float* l, float* acc, int D) {
  for (int r = 0; r < nq; ++r) {
    float* row = S + size_t(r) * kAttnTileK;
    const float mnew = std::max(m[r], row_max(row, nk));
    if (mnew == kNegInf) {  // nothing visible yet in this row
      std::fill(row, row + nk, 0.0f);
      continue;
    }
    const float corr = exp_nonpositive(m[r] - mnew);
#pragma omp simd
    for (int c = 0; c < nk; ++c) row[c] = exp_nonpositive(row[c] - mnew);
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < nk; ++c) sum += row[c];  // vector partial sums (a fixed order per build target)
    l[r] = l[r] * corr + sum;
    m[r] = mnew;
    if (corr != 1.0f)
      for (int d = 0; d < D; ++d) acc[size_t(r) * D + d] *= corr;
  }
}

// Scores for a (nq x nk) tile, scaled, with positions outside each row's band set to -inf.
void masked_scores(float* S, const float* Q, const float* K, int nq, int nk, int i0, int j0, const AttnShape& s) {
  const int ldq = s.Hq * s.D, ldk = s.Hkv * s.D, off = s.Tk - s.Tq;
  if (nq <= 2) {  // decode: plain dot products beat a BLAS call per tile
    for (int r = 0; r < nq; ++r)
      for (int c = 0; c < nk; ++c) {
        const float *qr = Q + size_t(r) * ldq, *kc = K + size_t(c) * ldk;
        float d = 0;  // simd: 8-16 partial sums (a fixed order), not one 64-long dependency chain
#pragma omp simd reduction(+ : d)
        for (int e = 0; e < s.D; ++e) d += qr[e] * kc[e];
        S[size_t(r) * kAttnTileK + c] = d * s.scale;
      }
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, s.D, s.scale, Q, ldq, K, ldk, 0.0f, S, kAttnTileK);
  }
  for (int r = 0; r < nq; ++r) {
    int p = i0 + r + off;
    int lo = s.window > 0 ? p - s.window + 1 : 0;
    if (j0 >= lo && j0 + nk - 1 <= p) continue;  // the whole row is visible
    float* row = S + size_t(r) * kAttnTileK;
    for (int c = 0; c < nk; ++c) {
      int j = j0 + c;
      if (j > p || j < lo) row[c] = kNegInf;
    }
  }
}
}  // namespace

// Decode (one or two query rows per sequence): per (batch, query head, row) the whole visible band
// of keys at once, scores = scale K q by one sgemv, the softmax in one pass, out = V^T p / sum by a
// second sgemv: two BLAS calls instead of a walk over 64-key tiles with per-key dot products.
void attention_decode_rows(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  const int D = s.D, G = s.Hq / s.Hkv, off = s.Tk - s.Tq, ldq = s.Hq * D, ldk = s.Hkv * D;
  const long units = long(s.B) * s.Hq * s.Tq;
#pragma omp parallel
  {
    std::vector<float> S;
#pragma omp for schedule(static)
    for (long u = 0; u < units; ++u) {
      const int r = int(u % s.Tq), h = int((u / s.Tq) % s.Hq), b = int(u / (long(s.Tq) * s.Hq)), kh = h / G;
      const int p = r + off, lo = s.window > 0 ? std::max(0, p - s.window + 1) : 0, hi = std::min(p, s.Tk - 1);
      const int n = hi - lo + 1;
      float* o = out + (size_t(b) * s.Tq + r) * ldq + size_t(h) * D;
      float* l = lse + (size_t(b) * s.Hq + h) * s.Tq + r;
      if (n <= 0) {  // nothing visible
        std::fill(o, o + D, 0.0f);
        *l = kNegInf;
        continue;
      }
      const float* Q = q + (size_t(b) * s.Tq + r) * ldq + size_t(h) * D;
      const float* K = k + ((size_t(b) * s.Tk + lo) * s.Hkv + kh) * D;
      const float* V = v + ((size_t(b) * s.Tk + lo) * s.Hkv + kh) * D;
      if (S.size() < size_t(n)) S.resize(size_t(n));
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, D, s.scale, K, ldk, Q, 1, 0.0f, S.data(), 1);  // S[n] = scale K q
      const float mx = row_max(S.data(), n);
      float sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < n; ++j) {
        S[j] = exp_nonpositive(S[j] - mx);
        sum += S[j];
      }
      cblas_sgemv(CblasRowMajor, CblasTrans, n, D, 1.0f / sum, V, ldk, S.data(), 1, 0.0f, o, 1);  // o[D] = V^T p / sum
      *l = mx + std::log(sum);
    }
  }
}

void attention_fwd(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s) {
  if (s.Tq <= 2) return attention_decode_rows(out, lse, q, k, v, s);
  const int D = s.D, G = s.Hq / s.Hkv;
  const int nqt = (s.Tq + kAttnTileQ - 1) / kAttnTileQ;
  const long units = long(s.B) * s.Hq * nqt;
#pragma omp parallel
  {
    std::vector<float> S(size_t(kAttnTileQ) * kAttnTileK), acc(size_t(kAttnTileQ) * D), m(kAttnTileQ), l(kAttnTileQ);
#pragma omp for schedule(static)
    for (long u = 0; u < units; ++u) {
      const int qt = int(u % nqt), h = int((u / nqt) % s.Hq), b = int(u / (long(nqt) * s.Hq));
      const int kh = h / G, i0 = qt * kAttnTileQ, nq = std::min(kAttnTileQ, s.Tq - i0);
      const float* Q = q + ((size_t(b) * s.Tq + i0) * s.Hq + h) * D;
      std::fill(acc.begin(), acc.begin() + size_t(nq) * D, 0.0f);
      std::fill(m.begin(), m.end(), kNegInf);
      std::fill(l.begin(), l.end(), 0.0f);
      TileRange tr = tile_keys(s, i0, nq);
      for (int j0 = tr.kmin; j0 <= tr.kmax; j0 += kAttnTileK) {
        const int nk = std::min(kAttnTileK, tr.kmax - j0 + 1);
        const float* K = k + ((size_t(b) * s.Tk + j0) * s.Hkv + kh) * D;
        const float* V = v + ((size_t(b) * s.Tk + j0) * s.Hkv + kh) * D;
        masked_scores(S.data(), Q, K, nq, nk, i0, j0, s);
        online_softmax_tile(S.data(), nq, nk, m.data(), l.data(), acc.data(), D);
        // acc[nq,D] += P[nq,nk] . V[nk,D]
        if (nq <= 2) {
          for (int r = 0; r < nq; ++r)
            for (int c = 0; c < nk; ++c) {
              const float p = S[size_t(r) * kAttnTileK + c], *vc = V + size_t(c) * s.Hkv * D;
              float* a = acc.data() + size_t(r) * D;
              for (int d = 0; d < D; ++d) a[d] += p * vc[d];
            }
        } else {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, nk, 1.0f, S.data(), kAttnTileK, V, s.Hkv * D,
                      1.0f, acc.data(), D);
        }
      }
      for (int r = 0; r < nq; ++r) {
        float* o = out + ((size_t(b) * s.Tq + i0 + r) * s.Hq + h) * D;
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < D; ++d) o[d] = acc[size_t(r) * D + d] * inv;
        lse[(size_t(b) * s.Hq + h) * s.Tq + i0 + r] = l[r] > 0 ? m[r] + std::log(l[r]) : kNegInf;
      }
    }
  }
}

// Parallel over (batch, kv head): the thread owning a kv head owns its dK/dV rows and the dQ rows
// of the query heads in its group, so there are no races and the summation order is fixed.
void attention_bwd(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const AttnShape& s) {
  const int D = s.D, G = s.Hq / s.Hkv;
  const int ldq = s.Hq * D, ldk = s.Hkv * D;
  const int nqt = (s.Tq + kAttnTileQ - 1) / kAttnTileQ;
  const long units = long(s.B) * s.Hkv;
#pragma omp parallel
  {
    std::vector<float> P(size_t(kAttnTileQ) * kAttnTileK), dS(size_t(kAttnTileQ) * kAttnTileK), Drow(kAttnTileQ);
#pragma omp for schedule(static)
    for (long u = 0; u < units; ++u) {
      const int kh = int(u % s.Hkv), b = int(u / s.Hkv);
      for (int t = 0; t < s.Tk; ++t) {
        size_t o = ((size_t(b) * s.Tk + t) * s.Hkv + kh) * D;
        std::memset(dk + o, 0, sizeof(float) * D);
        std::memset(dv + o, 0, sizeof(float) * D);
      }
      for (int h = kh * G; h < (kh + 1) * G; ++h) {
        for (int t = 0; t < s.Tq; ++t) std::memset(dq + ((size_t(b) * s.Tq + t) * s.Hq + h) * D, 0, sizeof(float) * D);
        for (int qt = 0; qt < nqt; ++qt) {
          const int i0 = qt * kAttnTileQ, nq = std::min(kAttnTileQ, s.Tq - i0);
          const size_t qoff = ((size_t(b) * s.Tq + i0) * s.Hq + h) * D;
          const float *Q = q + qoff, *dO = dout + qoff, *O = out + qoff;
          float* dQ = dq + qoff;
          const float* L = lse + (size_t(b) * s.Hq + h) * s.Tq + i0;
          for (int r = 0; r < nq; ++r) {
            float acc = 0;
            for (int d = 0; d < D; ++d) acc += dO[size_t(r) * ldq + d] * O[size_t(r) * ldq + d];
            Drow[r] = acc;
          }
          TileRange tr = tile_keys(s, i0, nq);
          for (int j0 = tr.kmin; j0 <= tr.kmax; j0 += kAttnTileK) {
            const int nk = std::min(kAttnTileK, tr.kmax - j0 + 1);
            const size_t koff = ((size_t(b) * s.Tk + j0) * s.Hkv + kh) * D;
            const float *K = k + koff, *V = v + koff;
            masked_scores(P.data(), Q, K, nq, nk, i0, j0, s);
            for (int r = 0; r < nq; ++r) {
              float* row = P.data() + size_t(r) * kAttnTileK;
              const float Lr = L[r];
              if (Lr == kNegInf) {
                std::fill(row, row + nk, 0.0f);
                continue;
              }
#pragma omp simd
              for (int c = 0; c < nk; ++c) row[c] = exp_nonpositive(row[c] - Lr);  // -inf scores: 0
            }
            // dV[nk,D] += P^T . dO
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, nq, 1.0f, P.data(), kAttnTileK, dO, ldq, 1.0f,
                        dv + koff, ldk);
            // dP[nq,nk] = dO . V^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, D, 1.0f, dO, ldq, V, ldk, 0.0f, dS.data(),
                        kAttnTileK);
            for (int r = 0; r < nq; ++r)
              for (int c = 0; c < nk; ++c) {
                size_t i = size_t(r) * kAttnTileK + c;
                dS[i] = P[i] * (dS[i] - Drow[r]) * s.scale;
              }
            // dQ[nq,D] += dS . K ; dK[nk,D] += dS^T . Q
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, nk, 1.0f, dS.data(), kAttnTileK, K, ldk, 1.0f,
                        dQ, ldq);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, nq, 1.0f, dS.data(), kAttnTileK, Q, ldq, 1.0f,
                        dk + koff, ldk);
          }
        }
      }
    }
  }
}

// The reference table with every optimized op swapped in; the Gated DeltaNet layer's memory-bound
// pieces (conv, L2 norm, gates, gated norm) keep the reference loops.
const OpsTable& ops_table() {
  static const OpsTable t = [] {
    OpsTable o = ops_ref();
    o.name = "cpu";
    o.embedding_fwd = embedding_fwd, o.embedding_bwd = embedding_bwd;
    o.rmsnorm_fwd = rmsnorm_fwd, o.rmsnorm_bwd = rmsnorm_bwd, o.add_rmsnorm_fwd = add_rmsnorm_fwd;
    o.linear_fwd = linear_fwd, o.linear_bwd = linear_bwd, o.linear_fwd_bf16w = linear_fwd_bf16w;
    o.rope_fwd = rope_fwd, o.rope_bwd = rope_bwd;
    o.attention_fwd = attention_fwd, o.attention_bwd = attention_bwd;
    o.swiglu_fwd = swiglu_fwd, o.swiglu_bwd = swiglu_bwd;
    o.xent_fwd = xent_fwd, o.xent_bwd = xent_bwd;
    o.add = add, o.scale = scale, o.sum_squares = sum_squares, o.adamw = adamw;
    o.gdr_fwd = gdr_fwd, o.gdr_bwd = gdr_bwd;
    o.delta_rule_fwd = delta_rule_fwd, o.delta_rule_bwd = delta_rule_bwd;
    return o;
  }();
  return t;
}

}  // namespace sr::cpu

namespace sr {
const OpsTable& ops_cpu() { return cpu::ops_table(); }
}  // namespace sr
