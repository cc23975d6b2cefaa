// Every op: optimized CPU vs reference (forward and backward) at awkward sizes, and the
// reference backward vs central finite differences in fp64.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/cpu/cpu_ops.h"
#include "ops/cuda/attention_schedule.h"
#include "ops/ref/ref_ops.h"
#include "test_util.h"

using namespace sr;
using namespace sr::test;

namespace {
const int kTileQ = cpu::kAttnTileQ;
const std::vector<int> kRows = {1, 2, 63, 64, 65, 130};  // 1, tile-1, tile, tile+1, >2 tiles
}  // namespace

// ---------------------------------------------------------------- embedding
TEST(Ops, EmbeddingCpuMatchesRef) {
  for (int N : kRows)
    for (int C : {1, 7, 16, 33}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
      const int V = 11;
      auto table = randn(size_t(V) * C, 1);
      std::vector<int32_t> ids(N);
      for (int i = 0; i < N; ++i) ids[i] = (i * 7 + 3) % V;  // repeated ids exercise accumulation
      std::vector<float> o1(size_t(N) * C), o2(size_t(N) * C);
      ref::embedding_fwd(o1.data(), ids.data(), table.data(), N, C);
      cpu::embedding_fwd(o2.data(), ids.data(), table.data(), N, C);
      EXPECT_EQ(o1, o2);
      auto dout = randn(size_t(N) * C, 2);
      std::vector<float> d1(size_t(V) * C, 0.5f), d2(size_t(V) * C, 0.5f);
      ref::embedding_bwd(d1.data(), dout.data(), ids.data(), N, C);
      cpu::embedding_bwd(d2.data(), dout.data(), ids.data(), N, C);
      EXPECT_CLOSE(d2, d1, 1e-6, 1e-6);
    }
}

TEST(Ops, EmbeddingRefBackwardFiniteDiff) {
  const int N = 5, C = 3, V = 4;
  std::vector<int32_t> ids = {0, 2, 2, 3, 0};
  auto table = randn<double>(size_t(V) * C, 3);
  auto R = randn<double>(size_t(N) * C, 4);
  std::vector<double> out(size_t(N) * C), g(size_t(V) * C, 0.0);
  auto f = [&] { ref::embedding_fwd(out.data(), ids.data(), table.data(), N, C); return dot(out, R); };
  ref::embedding_bwd(g.data(), R.data(), ids.data(), N, C);
  EXPECT_CLOSE(g, numeric_grad(table, f), 1e-7, 1e-6);
}

// ---------------------------------------------------------------- rmsnorm
TEST(Ops, RmsNormCpuMatchesRef) {
  for (int N : kRows)
    for (int C : {1, 5, 64, 67}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
      auto x = randn(size_t(N) * C, 5), w = randn(C, 6), dout = randn(size_t(N) * C, 7);
      std::vector<float> o1(x.size()), o2(x.size()), r1(N), r2(N);
      ref::rmsnorm_fwd<float>(o1.data(), r1.data(), x.data(), w.data(), N, C, 1e-6f);
      cpu::rmsnorm_fwd(o2.data(), r2.data(), x.data(), w.data(), N, C, 1e-6f);
      EXPECT_CLOSE(o2, o1, 1e-6, 1e-5);
      std::vector<float> dx1(x.size()), dx2(x.size()), dw1(C, 0.f), dw2(C, 0.f);
      ref::rmsnorm_bwd(dx1.data(), dw1.data(), dout.data(), x.data(), w.data(), r1.data(), N, C);
      cpu::rmsnorm_bwd(dx2.data(), dw2.data(), dout.data(), x.data(), w.data(), r2.data(), N, C);
      EXPECT_CLOSE(dx2, dx1, 1e-5, 1e-4);
      EXPECT_CLOSE(dw2, dw1, 1e-4, 1e-4);
      // add_dx: dx += d(x), onto a prior gradient (the reference adds its own dx exactly so)
      const auto prior = randn(x.size(), 8);
      std::vector<float> a1 = prior, a2 = prior, want(x.size());
      ref::rmsnorm_bwd<float>(a1.data(), nullptr, dout.data(), x.data(), w.data(), r1.data(), N, C, true);
      cpu::rmsnorm_bwd(a2.data(), nullptr, dout.data(), x.data(), w.data(), r2.data(), N, C, true);
      for (size_t i = 0; i < want.size(); ++i) want[i] = prior[i] + dx1[i];
      EXPECT_EQ(a1, want);
      EXPECT_CLOSE(a2, a1, 1e-5, 1e-4);
    }
}

// the residual add fused into the next RMSNorm: x and the norm equal add() then rmsnorm_fwd(),
// bit for bit on the same backend, and the CPU version is close to the reference's
TEST(Ops, AddRmsNormEqualsAddThenRmsNorm) {
  for (int N : kRows)
    for (int C : {1, 5, 64, 67}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
      const auto x0 = randn(size_t(N) * C, 8), t = randn(size_t(N) * C, 9), w = randn(C, 10);
      for (const OpsTable* o : {&ops_ref(), &ops_cpu()}) {
        SCOPED_TRACE(o->name);
        auto xa = x0, xb = x0;
        std::vector<float> oa(x0.size()), ob(x0.size()), ra(N), rb(N);
        o->add(xa.data(), xa.data(), t.data(), xa.size());
        o->rmsnorm_fwd(oa.data(), ra.data(), xa.data(), w.data(), N, C, 1e-6f);
        o->add_rmsnorm_fwd(xb.data(), ob.data(), rb.data(), t.data(), w.data(), N, C, 1e-6f);
        EXPECT_EQ(xb, xa);
        EXPECT_EQ(ob, oa);
        EXPECT_EQ(rb, ra);
      }
      auto x1 = x0, x2 = x0;
      std::vector<float> o1(x0.size()), o2(x0.size()), r1(N), r2(N);
      ref::add_rmsnorm_fwd<float>(x1.data(), o1.data(), r1.data(), t.data(), w.data(), N, C, 1e-6f);
      ops_cpu().add_rmsnorm_fwd(x2.data(), o2.data(), r2.data(), t.data(), w.data(), N, C, 1e-6f);
      EXPECT_EQ(x2, x1);
      EXPECT_CLOSE(o2, o1, 1e-6, 1e-5);
    }
}

// a decode step's row into a window ring at the slot pos mod W
TEST(Ops, RingStoreWritesTheSlotOfThePosition) {
  const int W = 3;
  const size_t width = 5;
  for (const OpsTable* o : {&ops_ref(), &ops_cpu()})
    for (int32_t pos : {0, 1, 2, 3, 7, 2147483646}) {
      std::vector<float> rk(W * width, -1.f), rv(W * width, -2.f), k = randn(width, pos % 97), v = randn(width, 5);
      o->ring_store_kv(rk.data(), rv.data(), k.data(), v.data(), &pos, W, width);
      for (int s = 0; s < W; ++s)
        for (size_t i = 0; i < width; ++i) {
          EXPECT_EQ(rk[s * width + i], s == pos % W ? k[i] : -1.f) << o->name << " pos " << pos;
          EXPECT_EQ(rv[s * width + i], s == pos % W ? v[i] : -2.f) << o->name << " pos " << pos;
        }
    }
}

TEST(Ops, RmsNormRefBackwardFiniteDiff) {
  const int N = 3, C = 5;
  auto x = randn<double>(N * C, 8), w = randn<double>(C, 9), R = randn<double>(N * C, 10);
  std::vector<double> out(N * C), rstd(N), dx(N * C), dw(C, 0.0);
  auto f = [&] { ref::rmsnorm_fwd<double>(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6); return dot(out, R); };
  f();
  ref::rmsnorm_bwd(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_CLOSE(dx, numeric_grad(x, f), 1e-7, 1e-6);
  EXPECT_CLOSE(dw, numeric_grad(w, f), 1e-7, 1e-6);
}

// ---------------------------------------------------------------- linear
TEST(Ops, LinearCpuMatchesRef) {
  for (int N : kRows)
    for (auto [I, O] : std::vector<std::pair<int, int>>{{1, 1}, {7, 3}, {64, 65}, {33, 128}}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " I=" + std::to_string(I) + " O=" + std::to_string(O));
      auto x = randn(size_t(N) * I, 11), W = randn(size_t(O) * I, 12), b = randn(O, 13), dout = randn(size_t(N) * O, 14);
      std::vector<float> o1(size_t(N) * O), o2(size_t(N) * O);
      ref::linear_fwd(o1.data(), x.data(), W.data(), b.data(), N, I, O);
      cpu::linear_fwd(o2.data(), x.data(), W.data(), b.data(), N, I, O);
      EXPECT_CLOSE(o2, o1, 1e-4, 1e-4);
      std::vector<float> dx1(x.size()), dx2(x.size()), dW1(W.size(), 1.f), dW2(W.size(), 1.f), db1(O, 1.f), db2(O, 1.f);
      ref::linear_bwd(dx1.data(), dW1.data(), db1.data(), dout.data(), x.data(), W.data(), N, I, O);
      cpu::linear_bwd(dx2.data(), dW2.data(), db2.data(), dout.data(), x.data(), W.data(), N, I, O);
      EXPECT_CLOSE(dx2, dx1, 1e-4, 1e-4);
      EXPECT_CLOSE(dW2, dW1, 1e-4, 1e-4);  // accumulated onto 1.0
      EXPECT_CLOSE(db2, db1, 1e-4, 1e-4);
      // add_dx: dx += dout W (the residual branches' gradients summed in the product)
      const auto prior = randn(x.size(), 15);
      std::vector<float> a1 = prior, a2 = prior, want(x.size());
      ref::linear_bwd<float>(a1.data(), nullptr, nullptr, dout.data(), x.data(), W.data(), N, I, O, true);
      cpu::linear_bwd(a2.data(), nullptr, nullptr, dout.data(), x.data(), W.data(), N, I, O, true);
      for (size_t i = 0; i < want.size(); ++i) want[i] = prior[i] + dx1[i];
      EXPECT_EQ(a1, want);
      EXPECT_CLOSE(a2, a1, 1e-4, 1e-4);
      // kSetDW: dW = dout^T x over whatever dW held (NaN here): the accumulated result less its 1.0
      std::vector<float> s1(W.size(), NAN), s2(W.size(), NAN), z(W.size(), 0.f);
      ref::linear_bwd<float>(nullptr, s1.data(), nullptr, dout.data(), x.data(), W.data(), N, I, O, kSetDW);
      cpu::linear_bwd(nullptr, s2.data(), nullptr, dout.data(), x.data(), W.data(), N, I, O, kSetDW);
      ref::linear_bwd<float>(nullptr, z.data(), nullptr, dout.data(), x.data(), W.data(), N, I, O);
      EXPECT_EQ(s1, z);  // set = added onto zeros, bitwise
      EXPECT_CLOSE(s2, s1, 1e-4, 1e-4);
      for (size_t i = 0; i < s1.size(); ++i) ASSERT_NEAR(s1[i], dW1[i] - 1.0f, 1e-4);
    }
  // no rows: a set dW is zero, an added one unchanged
  std::vector<float> none(6, NAN), kept(6, 2.f);
  cpu::linear_bwd(nullptr, none.data(), nullptr, nullptr, nullptr, nullptr, 0, 2, 3, kSetDW);
  cpu::linear_bwd(nullptr, kept.data(), nullptr, nullptr, nullptr, nullptr, 0, 2, 3, 0);
  EXPECT_EQ(none, std::vector<float>(6, 0.f));
  EXPECT_EQ(kept, std::vector<float>(6, 2.f));
}

// bf16-stored weights (inference decode): the reference is the fp32 loop on the widened weights,
// bitwise; the CPU kernel matches it at awkward shapes, with and without bias; rounding is to
// nearest even and keeps NaN and infinities.
TEST(Ops, LinearBf16WeightsCpuMatchesRef) {
  EXPECT_EQ(bf16_round(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(bf16_round(1.0f + 1.0f / 256)), 1.0f);              // halfway, rounds to even (down)
  EXPECT_EQ(bf16_to_f32(bf16_round(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);  // halfway, rounds to even (up)
  EXPECT_EQ(bf16_to_f32(bf16_round(1.0f + 1.5f / 256)), 1.0f + 2.0f / 256);  // above half: up
  EXPECT_TRUE(std::isnan(bf16_to_f32(bf16_round(std::nanf("")))));
  EXPECT_EQ(bf16_to_f32(bf16_round(-INFINITY)), -INFINITY);
  for (int N : {1, 2, 3, 4})
    for (auto [I, O] : std::vector<std::pair<int, int>>{{1, 1}, {7, 3}, {64, 65}, {33, 128}, {384, 1024}}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " I=" + std::to_string(I) + " O=" + std::to_string(O));
      auto x = randn(size_t(N) * I, 21), W = randn(size_t(O) * I, 22), b = randn(O, 23);
      std::vector<uint16_t> Wb(W.size());
      std::vector<float> Ww(W.size());
      for (size_t i = 0; i < W.size(); ++i) Wb[i] = bf16_round(W[i]), Ww[i] = bf16_to_f32(Wb[i]);
      for (const float* bias : std::vector<const float*>{b.data(), nullptr}) {
        std::vector<float> want(size_t(N) * O), r(want.size()), c(want.size());
        ref::linear_fwd(want.data(), x.data(), Ww.data(), bias, N, I, O);
        ref::linear_fwd_bf16w(r.data(), x.data(), Wb.data(), bias, N, I, O);
        cpu::linear_fwd_bf16w(c.data(), x.data(), Wb.data(), bias, N, I, O);
        EXPECT_EQ(r, want);
        EXPECT_CLOSE(c, want, 1e-4, 1e-4);
      }
    }
}

TEST(Ops, LinearRefBackwardFiniteDiff) {
  const int N = 3, I = 4, O = 5;
  auto x = randn<double>(N * I, 15), W = randn<double>(O * I, 16), b = randn<double>(O, 17), R = randn<double>(N * O, 18);
  std::vector<double> out(N * O), dx(N * I), dW(O * I, 0.0), db(O, 0.0);
  auto f = [&] { ref::linear_fwd(out.data(), x.data(), W.data(), b.data(), N, I, O); return dot(out, R); };
  ref::linear_bwd(dx.data(), dW.data(), db.data(), R.data(), x.data(), W.data(), N, I, O);
  EXPECT_CLOSE(dx, numeric_grad(x, f), 1e-7, 1e-6);
  EXPECT_CLOSE(dW, numeric_grad(W, f), 1e-7, 1e-6);
  EXPECT_CLOSE(db, numeric_grad(b, f), 1e-7, 1e-6);
}

// ---------------------------------------------------------------- rope
TEST(Ops, RopeCpuMatchesRef) {
  for (int N : {1, 63, 65})
    for (int H : {1, 3})
      for (int D : {2, 6, 64}) {
        SCOPED_TRACE("N=" + std::to_string(N) + " H=" + std::to_string(H) + " D=" + std::to_string(D));
        auto x = randn(size_t(N) * H * D, 19), dout = randn(x.size(), 20);
        std::vector<int32_t> pos(N);
        for (int i = 0; i < N; ++i) pos[i] = i * 37 + 5;  // large, uneven positions
        std::vector<float> o1(x.size()), o2(x.size()), d1(x.size()), d2(x.size());
        ref::rope_fwd(o1.data(), x.data(), pos.data(), N, H, D, 10000.f);
        cpu::rope_fwd(o2.data(), x.data(), pos.data(), N, H, D, 10000.f);
        EXPECT_CLOSE(o2, o1, 1e-6, 1e-6);
        ref::rope_bwd(d1.data(), dout.data(), pos.data(), N, H, D, 10000.f);
        cpu::rope_bwd(d2.data(), dout.data(), pos.data(), N, H, D, 10000.f);
        EXPECT_CLOSE(d2, d1, 1e-6, 1e-6);
      }
}

TEST(Ops, RopeHalfSplitConvention) {
  // HF rotate-half: pair m couples x[m] and x[m + D/2] with angle pos * theta^(-2m/D).
  const int D = 4;
  std::vector<float> x = {1, 0, 0, 0}, o(4);
  int32_t pos = 3;
  ref::rope_fwd(o.data(), x.data(), &pos, 1, 1, D, 10000.f);
  EXPECT_NEAR(o[0], std::cos(3.0), 1e-6);
  EXPECT_NEAR(o[2], std::sin(3.0), 1e-6);  // partner is m + D/2, not m + 1
  EXPECT_NEAR(o[1], 0.0, 1e-7);
}

TEST(Ops, RopeRefBackwardFiniteDiff) {
  const int N = 3, H = 2, D = 6;
  auto x = randn<double>(N * H * D, 21), R = randn<double>(N * H * D, 22);
  std::vector<int32_t> pos = {0, 4, 9};
  std::vector<double> out(x.size()), dx(x.size());
  auto f = [&] { ref::rope_fwd(out.data(), x.data(), pos.data(), N, H, D, 100.f); return dot(out, R); };
  ref::rope_bwd(dx.data(), R.data(), pos.data(), N, H, D, 100.f);
  EXPECT_CLOSE(dx, numeric_grad(x, f), 1e-7, 1e-6);
}

// ---------------------------------------------------------------- attention
namespace {
struct AttnCase {
  int B, Tq, Tk, Hq, Hkv, D, W;
};
std::string name(const AttnCase& c) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "B=%d Tq=%d Tk=%d Hq=%d Hkv=%d D=%d W=%d", c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.D, c.W);
  return buf;
}
std::vector<AttnCase> attn_cases() {
  std::vector<AttnCase> cs;
  for (int T : {1, 2, kTileQ - 1, kTileQ, kTileQ + 1, 2 * kTileQ + 3})
    for (auto [Hq, Hkv] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {4, 1}, {3, 3}, {6, 3}, {8, 2}})
      for (int W : {0, 1, 5, kTileQ, 300}) cs.push_back({Hq == 1 ? 2 : 1, T, T, Hq, Hkv, (Hq == 3 ? 12 : 8), W});
  // queries at the end of a longer key range (chunked prefill / decode into a cache)
  for (int W : {0, 7, 100}) {
    cs.push_back({1, 1, 150, 4, 2, 16, W});
    cs.push_back({2, 2, 150, 4, 2, 16, W});  // two decode rows per sequence (the one-sgemv decode path)
    cs.push_back({1, 7, 150, 4, 2, 16, W});
    cs.push_back({2, 65, 200, 2, 2, 8, W});
  }
  cs.push_back({1, 1, 1500, 6, 2, 64, 1024});  // the default model's decode: a full 1k window ring
  return cs;
}
}  // namespace

TEST(Ops, AttentionCpuMatchesRef) {
  for (const AttnCase& c : attn_cases()) {
    SCOPED_TRACE(name(c));
    AttnShape s{c.B, c.Tq, c.Tk, c.Hq, c.Hkv, c.D, c.W, 1.0f / std::sqrt(float(c.D))};
    size_t nq = size_t(c.B) * c.Tq * c.Hq * c.D, nk = size_t(c.B) * c.Tk * c.Hkv * c.D, nl = size_t(c.B) * c.Hq * c.Tq;
    auto q = randn(nq, 23), k = randn(nk, 24), v = randn(nk, 25), dout = randn(nq, 26);
    std::vector<float> o1(nq), o2(nq, NAN), l1(nl), l2(nl, NAN);
    ref::attention_fwd(o1.data(), l1.data(), q.data(), k.data(), v.data(), s);
    cpu::attention_fwd(o2.data(), l2.data(), q.data(), k.data(), v.data(), s);
    EXPECT_CLOSE(o2, o1, 1e-5, 1e-4);
    EXPECT_CLOSE(l2, l1, 1e-5, 1e-5);
    std::vector<float> dq1(nq), dk1(nk), dv1(nk), dq2(nq, NAN), dk2(nk, NAN), dv2(nk, NAN);
    ref::attention_bwd(dq1.data(), dk1.data(), dv1.data(), dout.data(), q.data(), k.data(), v.data(), o1.data(), l1.data(), s);
    cpu::attention_bwd(dq2.data(), dk2.data(), dv2.data(), dout.data(), q.data(), k.data(), v.data(), o2.data(), l2.data(), s);
    EXPECT_CLOSE(dq2, dq1, 1e-4, 1e-3);
    EXPECT_CLOSE(dk2, dk1, 1e-4, 1e-3);
    EXPECT_CLOSE(dv2, dv1, 1e-4, 1e-3);
  }
}

TEST(Ops, AttentionWindowCountsKeys) {
  // With V = identity-like one-hot rows and q = 0 (uniform softmax), out = mean of visible values;
  // visible-key count per row must be min(p+1, W): [1, 2, ..., W, W, ...] at T = 2W+3.
  const int W = 5, T = 2 * W + 3, D = T;
  AttnShape s{1, T, T, 1, 1, D, W, 1.0f};
  std::vector<float> q(size_t(T) * D, 0.f), k(size_t(T) * D, 0.f), v(size_t(T) * D, 0.f), o(size_t(T) * D), l(T);
  for (int j = 0; j < T; ++j) v[size_t(j) * D + j] = 1.f;
  cpu::attention_fwd(o.data(), l.data(), q.data(), k.data(), v.data(), s);
  for (int i = 0; i < T; ++i) {
    int visible = 0;
    for (int j = 0; j < T; ++j) visible += o[size_t(i) * D + j] > 0;
    EXPECT_EQ(visible, std::min(i + 1, W)) << "row " << i;
    EXPECT_NEAR(l[i], std::log(double(std::min(i + 1, W))), 1e-6);
  }
}

TEST(Ops, AttentionRefBackwardFiniteDiff) {
  for (int W : {0, 3}) {
    for (auto [Tq, Tk] : std::vector<std::pair<int, int>>{{7, 7}, {3, 8}}) {
      SCOPED_TRACE("W=" + std::to_string(W) + " Tq=" + std::to_string(Tq) + " Tk=" + std::to_string(Tk));
      AttnShape s{2, Tq, Tk, 4, 2, 4, W, 0.5f};
      size_t nq = size_t(2) * Tq * 4 * 4, nk = size_t(2) * Tk * 2 * 4;
      auto q = randn<double>(nq, 27), k = randn<double>(nk, 28), v = randn<double>(nk, 29), R = randn<double>(nq, 30);
      std::vector<double> out(nq), lse(size_t(2) * 4 * Tq), dq(nq), dk(nk), dv(nk);
      auto f = [&] { ref::attention_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), s); return dot(out, R); };
      f();
      ref::attention_bwd(dq.data(), dk.data(), dv.data(), R.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), s);
      EXPECT_CLOSE(dq, numeric_grad(q, f), 1e-7, 1e-6);
      EXPECT_CLOSE(dk, numeric_grad(k, f), 1e-7, 1e-6);
      EXPECT_CLOSE(dv, numeric_grad(v, f), 1e-7, 1e-6);
    }
  }
}

// ---------------------------------------------------------------- swiglu
TEST(Ops, SwigluCpuMatchesRef) {
  for (int N : kRows)
    for (int F : {1, 7, 64}) {
      auto g = randn(size_t(N) * F, 31, 3.0), u = randn(size_t(N) * F, 32), dout = randn(size_t(N) * F, 33);
      std::vector<float> o1(g.size()), o2(g.size()), dg1(g.size()), dg2(g.size()), du1(g.size()), du2(g.size());
      ref::swiglu_fwd(o1.data(), g.data(), u.data(), N, F);
      cpu::swiglu_fwd(o2.data(), g.data(), u.data(), N, F);
      EXPECT_CLOSE(o2, o1, 1e-6, 1e-5);
      ref::swiglu_bwd(dg1.data(), du1.data(), dout.data(), g.data(), u.data(), N, F);
      cpu::swiglu_bwd(dg2.data(), du2.data(), dout.data(), g.data(), u.data(), N, F);
      EXPECT_CLOSE(dg2, dg1, 1e-6, 1e-5);
      EXPECT_CLOSE(du2, du1, 1e-6, 1e-5);
    }
}

TEST(Ops, SwigluRefBackwardFiniteDiff) {
  const int N = 3, F = 4;
  auto g = randn<double>(N * F, 34, 2.0), u = randn<double>(N * F, 35), R = randn<double>(N * F, 36);
  std::vector<double> out(N * F), dg(N * F), du(N * F);
  auto f = [&] { ref::swiglu_fwd(out.data(), g.data(), u.data(), N, F); return dot(out, R); };
  ref::swiglu_bwd(dg.data(), du.data(), R.data(), g.data(), u.data(), N, F);
  EXPECT_CLOSE(dg, numeric_grad(g, f), 1e-7, 1e-6);
  EXPECT_CLOSE(du, numeric_grad(u, f), 1e-7, 1e-6);
}

// ---------------------------------------------------------------- cross-entropy
TEST(Ops, CrossEntropyCpuMatchesRef) {
  for (int N : kRows)
    for (int V : {1, 2, 63, 300}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " V=" + std::to_string(V));
      auto z = randn(size_t(N) * V, 37, 4.0);
      std::vector<int32_t> t(N);
      std::vector<float> g(N);
      for (int i = 0; i < N; ++i) t[i] = (i % 5 == 4) ? -1 : (i * 13) % V, g[i] = 0.1f * (i % 3);
      std::vector<float> l1(N), l2(N), s1(N), s2(N), d1(z.size()), d2(z.size(), NAN);
      ref::xent_fwd(l1.data(), s1.data(), z.data(), t.data(), N, V);
      cpu::xent_fwd(l2.data(), s2.data(), z.data(), t.data(), N, V);
      EXPECT_CLOSE(l2, l1, 1e-5, 1e-5);
      ref::xent_bwd(d1.data(), z.data(), s1.data(), t.data(), g.data(), N, V);
      cpu::xent_bwd(d2.data(), z.data(), s2.data(), t.data(), g.data(), N, V);
      EXPECT_CLOSE(d2, d1, 1e-6, 1e-5);
    }
}

TEST(Ops, CrossEntropyRefBackwardFiniteDiff) {
  const int N = 4, V = 5;
  auto z = randn<double>(N * V, 38);
  std::vector<int32_t> t = {1, -1, 4, 0};
  std::vector<double> w = {0.5, 1.0, 2.0, 0.0}, loss(N), lse(N), dz(N * V);
  auto f = [&] { ref::xent_fwd(loss.data(), lse.data(), z.data(), t.data(), N, V); return dot(loss, w); };
  f();
  ref::xent_bwd(dz.data(), z.data(), lse.data(), t.data(), w.data(), N, V);
  EXPECT_CLOSE(dz, numeric_grad(z, f), 1e-7, 1e-6);
}

// The CPU softmax's exponential: within 2 ulp of std::exp (relative 2.4e-7) on (-87, 0], exactly 0
// below -87 and at -inf, exactly 1 at 0
TEST(Ops, ExpNonpositiveIsWithinTwoUlpOfStdExp) {
  float worst = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.0f * float(i) / 2000000.0f;
    const float e = std::exp(x), a = cpu::exp_nonpositive(x);
    worst = std::max(worst, std::fabs(a - e) / e);
  }
  EXPECT_LE(worst, 2.4e-7f);
  EXPECT_EQ(cpu::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(cpu::exp_nonpositive(-87.5f), 0.0f);
  EXPECT_EQ(cpu::exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
}

// The CUDA attention kernels' launch orders (plain C++, checked here without a GPU): every section
// size visits every (tile, head, batch) once; section 1 is the grid's own (x, y, z) order; a
// section of S (head, batch) pairs runs its pairs' tile t before any of their tile t + 1, and the
// sections in turn; attn_section picks 1, every pair, or enough pairs to fill the GPU four times.
TEST(Ops, AttentionBlockOrdersVisitEveryBlockOnce) {
  for (unsigned tiles : {1u, 3u, 32u})
    for (unsigned heads : {1u, 5u, 16u})
      for (unsigned batch : {1u, 2u, 4u})
        for (unsigned section : {1u, 2u, 3u, 7u, 1000u}) {
          SCOPED_TRACE(std::to_string(tiles) + " tiles, " + std::to_string(heads) + " heads, batch " +
                       std::to_string(batch) + ", section " + std::to_string(section));
          const unsigned n = tiles * heads * batch, pairs = heads * batch, S = std::min(section, pairs);
          const unsigned sections = pairs / S;  // the last one also takes the remainder
          std::vector<int> seen(n, 0);
          for (unsigned id = 0; id < n; ++id) {
            const sr::cuda::AttnBlockPlace p = sr::cuda::attn_block_place(id, tiles, heads, batch, section);
            ASSERT_LT(p.tile, tiles);
            ASSERT_LT(p.head, heads);
            ASSERT_LT(p.batch, batch);
            const unsigned pair = p.head + heads * p.batch;
            ++seen[p.tile + tiles * pair];
            const unsigned sec = std::min(id / (S * tiles), sections - 1);
            const unsigned in_sec = sec == sections - 1 ? pairs - sec * S : S;
            EXPECT_GE(in_sec, S);
            EXPECT_EQ(std::min(pair / S, sections - 1), sec);  // the sections in turn
            EXPECT_EQ(p.tile, (id - sec * S * tiles) / in_sec);  // tile by tile within a section
            EXPECT_EQ(pair, sec * S + (id - sec * S * tiles) % in_sec);
            if (S == 1) EXPECT_EQ(p.tile + tiles * pair, id);  // the 3-D grid's linear order
          }
          for (unsigned i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "block " << i;
        }
  using namespace sr::cuda;
  EXPECT_EQ(attn_section(kTilesFastest, 32, 16, 132), 1u);
  EXPECT_EQ(attn_section(kHeaviestFirst, 512, 16, 132), 16u);
  EXPECT_EQ(attn_section(kSectioned, 32, 16, 132), 9u);    // 4k, 128-row tiles: ceil(264 / 32) (one section of 16)
  EXPECT_EQ(attn_section(kSectioned, 128, 16, 132), 3u);   // 16k: ceil(264 / 128)
  EXPECT_EQ(attn_section(kSectioned, 512, 16, 132), 1u);   // 64k: the grid's own order
  EXPECT_EQ(attn_section(kSectioned, 0, 16, 132), 16u);    // an empty grid: any section
}
