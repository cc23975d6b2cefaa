// RWKV-7: the layer pieces' reference backward vs finite differences (fp64), the whole model's
// gradients (reference vs finite differences, CPU == reference, recompute bitwise), streaming
// (prefill in pieces == one shot == the training forward), snapshot/restore and save/load bitwise,
// the fla-hub config and tensor names, and a trajectory against an independent token-by-token
// implementation of BlinkDL's x070 RNN written here from the spec.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "infer/session.h"
#include "model_fixtures.h"
#include "models/model_dir.h"
#include "models/rwkv7.h"
#include "models/tokenizer.h"
#include "ops/ref/rwkv7.h"
#include "test_util.h"

using namespace sr;
using namespace sr::test;

namespace {
std::vector<int32_t> random_ids(int n, int V, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = int32_t(r.below(uint64_t(V)));
  return v;
}

// init_random leaves several tensors at zero (output projections, the LoRAs' first matrices);
// gradient checks need every path alive, so add noise everywhere.
void perturb(LanguageModel& m, uint64_t seed, float sd) {
  Rng r(seed);
  for (size_t i = 0; i < m.num_params(); ++i) m.params()[i] += float(r.normal()) * sd;
  m.upload_params();
}

std::vector<float> prefill_in_pieces(const LanguageModel& m, const std::vector<int32_t>& ids, int piece) {
  Session s(m);
  std::vector<float> all, part;
  for (size_t i = 0; i < ids.size(); i += size_t(piece)) {
    std::vector<int32_t> p(ids.begin() + i, ids.begin() + std::min(ids.size(), i + size_t(piece)));
    s.prefill(p, &part);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}
}  // namespace

TEST(Rwkv7Ops, LayerNormAndGroupNormBackward) {
  for (int G : {1, 3}) {
    const int N = 4, D = 5;
    auto x = randn<double>(size_t(N) * G * D, 1, 2.0), w = randn<double>(size_t(G) * D, 2);
    auto b = randn<double>(size_t(G) * D, 3), dout = randn<double>(x.size(), 4);
    auto fwd = [&] {
      std::vector<double> y(x.size()), m(size_t(N) * G), r(size_t(N) * G);
      ref::layernorm_fwd<double>(y.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, G, D, 1e-5);
      return y;
    };
    std::vector<double> y(x.size()), m(size_t(N) * G), r(size_t(N) * G), dx(x.size()), dw(w.size(), 0.0), db(b.size(), 0.0);
    ref::layernorm_fwd<double>(y.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, G, D, 1e-5);
    ref::layernorm_bwd<double>(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), m.data(), r.data(), N,
                               G, D);
    check_fd(fwd, {&x, &w, &b}, {&dx, &dw, &db}, dout, {"x", "w", "b"});
  }
}

TEST(Rwkv7Ops, TokenShiftAndActivationsBackward) {
  const int B = 2, T = 5, C = 3, M = 4;
  auto x = randn<double>(size_t(B) * T * C, 1), mu = randn<double>(size_t(M) * C, 2);
  auto dout = randn<double>(size_t(M) * B * T * C, 3);
  auto fwd = [&] {
    std::vector<double> o(dout.size());
    ref::token_shift_fwd<double>(o.data(), x.data(), nullptr, mu.data(), B, T, C, M);
    return o;
  };
  std::vector<double> dx(x.size()), dmu(mu.size(), 0.0);
  ref::token_shift_bwd<double>(dx.data(), dmu.data(), dout.data(), x.data(), nullptr, mu.data(), B, T, C, M);
  check_fd(fwd, {&x, &mu}, {&dx, &dmu}, dout, {"x", "mu"});
  // With a previous token: the first row mixes it in; in pieces == one shot.
  std::vector<double> one = fwd(), prev(size_t(C), 0.0), piece(size_t(M) * 2 * C);
  for (int t = 0; t < T; t += 2) {  // sequence 0 in pieces of 2, carrying the last input
    const int n = std::min(2, T - t);
    ref::token_shift_fwd<double>(piece.data(), x.data() + size_t(t) * C, t ? prev.data() : nullptr, mu.data(), 1, n, C, M);
    for (int m = 0; m < M; ++m)
      for (int i = 0; i < n * C; ++i)
        EXPECT_DOUBLE_EQ(piece[size_t(m) * n * C + i], one[(size_t(m) * B * T + t) * C + i]);
    std::copy_n(x.data() + size_t(t + n - 1) * C, C, prev.data());
  }
  for (int kind : {0, 1, 2}) {
    auto a = randn<double>(17, 10 + kind, 1.5), da = randn<double>(17, 20 + kind);
    auto f = [&] {
      std::vector<double> o(a.size());
      ref::act_fwd<double>(o.data(), a.data(), a.size(), kind);
      return o;
    };
    std::vector<double> g(a.size());
    ref::act_bwd<double>(g.data(), da.data(), a.data(), a.size(), kind);
    check_fd(f, {&a}, {&g}, da, {"activation"});
  }
}

TEST(Rwkv7Ops, TimeMixPreludeAndOutputBackward) {
  const int N = 3, H = 2, D = 4, C = H * D;
  const size_t n = size_t(N) * C;
  for (bool residual : {false, true}) {
    SCOPED_TRACE(residual ? "value residual" : "layer 0");
    auto k = randn<double>(n, 1), v = randn<double>(n, 2), wl = randn<double>(n, 3), al = randn<double>(n, 4);
    auto vl = randn<double>(n, 5), vf = randn<double>(n, 6), kkw = randn<double>(C, 7), ka = randn<double>(C, 8);
    auto dcat = randn<double>(5 * n, 9);
    auto fwd = [&] {
      std::vector<double> o(5 * n), rn(size_t(N) * H);
      double* p = o.data();
      ref::rwkv7_prep_fwd<double>(p, p + n, p + 2 * n, p + 3 * n, p + 4 * n, rn.data(), k.data(), v.data(), wl.data(),
                                  al.data(), vl.data(), residual ? vf.data() : nullptr, kkw.data(), ka.data(), N, H, D);
      return o;
    };
    std::vector<double> o(5 * n), rn(size_t(N) * H);
    double* p = o.data();
    ref::rwkv7_prep_fwd<double>(p, p + n, p + 2 * n, p + 3 * n, p + 4 * n, rn.data(), k.data(), v.data(), wl.data(),
                                al.data(), vl.data(), residual ? vf.data() : nullptr, kkw.data(), ka.data(), N, H, D);
    std::vector<double> dk(n), dv(n), dwl(n), dal(n), dvl(n, 0.0), dvf(n, 0.0), dkkw(C, 0.0), dka(C, 0.0);
    const double* d = dcat.data();
    ref::rwkv7_prep_bwd<double>(dk.data(), dv.data(), dwl.data(), dal.data(), dvl.data(), dvf.data(), dkkw.data(),
                                dka.data(), d, d + n, d + 2 * n, d + 3 * n, d + 4 * n, k.data(), v.data(), wl.data(),
                                al.data(), vl.data(), residual ? vf.data() : nullptr, kkw.data(), ka.data(), rn.data(), N,
                                H, D);
    check_fd(fwd, {&k, &v, &wl, &al, &kkw, &ka}, {&dk, &dv, &dwl, &dal, &dkkw, &dka}, dcat,
             {"k", "v", "wl", "al", "k_k", "k_a"});
    if (residual) check_fd(fwd, {&vl, &vf}, {&dvl, &dvf}, dcat, {"vl", "vfirst"});
    for (size_t i = 0; i < n; ++i) {  // decay bound of x070
      EXPECT_GT(o[i], 0.545);
      EXPECT_LT(o[i], 1.0);
    }
  }
  auto yn = randn<double>(n, 11), r = randn<double>(n, 12), km = randn<double>(n, 13), v = randn<double>(n, 14);
  auto rk = randn<double>(C, 15), g = randn<double>(n, 16), dout = randn<double>(n, 17);
  auto fwd = [&] {
    std::vector<double> o(n);
    ref::rwkv7_out_fwd<double>(o.data(), yn.data(), r.data(), km.data(), v.data(), rk.data(), g.data(), N, H, D);
    return o;
  };
  std::vector<double> dyn(n), dr(n), dkm(n), dv(n), drk(C, 0.0), dg(n);
  ref::rwkv7_out_bwd<double>(dyn.data(), dr.data(), dkm.data(), dv.data(), drk.data(), dg.data(), dout.data(), yn.data(),
                             r.data(), km.data(), v.data(), rk.data(), g.data(), N, H, D);
  check_fd(fwd, {&yn, &r, &km, &v, &rk, &g}, {&dyn, &dr, &dkm, &dv, &drk, &dg}, dout, {"yn", "r", "kmod", "v", "r_k", "g"});
}

TEST(Rwkv7Model, GradientMatchesFiniteDifferencesAndBackendsAgree) {
  ModelConfig c = tiny_rwkv7_config(3);
  c.vocab_size = 11;
  Rwkv7 m(c, &ops_ref());
  m.init_random(1);
  perturb(m, 2, 0.3f);
  {  // embeddings of unit scale keep LN0 smooth enough for central differences
    const ParamSpec* e = m.find_param("model.embeddings.weight");
    Rng r(3);
    for (int64_t i = 0; i < shape_numel(e->shape); ++i) m.params()[e->offset + i] = float(r.normal());
  }
  const int B = 2, T = 6;
  auto ids = random_ids(B * T, c.vocab_size, 2), tg = random_ids(B * T, c.vocab_size, 3);
  tg[4] = -1;
  std::vector<float> w(B * T);
  for (int i = 0; i < B * T; ++i) w[i] = 0.5f + 0.25f * (i % 3);
  m.zero_grad();
  m.forward(ids.data(), tg.data(), w.data(), B, T);
  m.backward();
  std::vector<float> analytic(m.grads(), m.grads() + m.num_params());
  Rwkv7 mc(c, &ops_cpu());
  std::memcpy(mc.params(), m.params(), m.num_params() * sizeof(float));
  mc.zero_grad();
  mc.forward(ids.data(), tg.data(), w.data(), B, T);
  mc.backward();
  std::vector<float> gcpu(mc.grads(), mc.grads() + mc.num_params());
  EXPECT_CLOSE(gcpu, analytic, 1e-5, 1e-3);
  Rwkv7 mr(c, &ops_cpu());  // recomputation: bitwise-equal loss and gradients
  std::memcpy(mr.params(), m.params(), m.num_params() * sizeof(float));
  mr.set_recompute(true);
  mr.zero_grad();
  EXPECT_EQ(mr.forward(ids.data(), tg.data(), w.data(), B, T), mc.forward(ids.data(), tg.data(), w.data(), B, T));
  mr.backward();
  EXPECT_EQ(0, std::memcmp(mr.grads(), gcpu.data(), gcpu.size() * sizeof(float)));
  const int checked = expect_grads_match_fd(m, ids, tg, w, B, T, analytic, 2e-3f, 5);
  EXPECT_GT(checked, 150);
}

TEST(Rwkv7Model, StreamingEqualsTrainingForwardInAnyPieces) {
  ModelConfig c = tiny_rwkv7_config(3);
  Rwkv7 m(c);
  m.init_random(3);
  perturb(m, 4, 0.2f);
  const int T = 70;
  auto ids = random_ids(T, c.vocab_size, 5);
  std::vector<int32_t> tg(T, 0);
  std::vector<float> w(T, 1.0f);
  m.forward(ids.data(), tg.data(), w.data(), 1, T);
  std::vector<float> train = m.last_logits();
  std::vector<float> one = prefill_in_pieces(m, ids, T);
  EXPECT_CLOSE(one, train, 1e-5, 1e-4);
  // (GEMM blocking depends on the piece length, so pieces agree to rounding, as for attention models)
  for (int piece : {1, 7, 64}) EXPECT_CLOSE(prefill_in_pieces(m, ids, piece), one, 1e-5, 1e-4) << "piece " << piece;
  // Two sequences in one training batch == each alone (states do not leak across the batch).
  auto ids2 = random_ids(2 * T, c.vocab_size, 6);
  std::vector<int32_t> tg2(2 * T, 0);
  std::vector<float> w2(2 * T, 1.0f);
  m.forward(ids2.data(), tg2.data(), w2.data(), 2, T);
  std::vector<float> both = m.last_logits();
  std::vector<int32_t> second(ids2.begin() + T, ids2.end());
  EXPECT_CLOSE(std::vector<float>(both.begin() + size_t(T) * c.vocab_size, both.end()), prefill_in_pieces(m, second, T),
               1e-5, 1e-4);
}

TEST(Rwkv7Model, SnapshotRestoreSaveLoadAndConstantState) {
  ModelConfig c = tiny_rwkv7_config(2);
  Rwkv7 m(c);
  m.init_random(7);
  perturb(m, 8, 0.2f);
  Session s(m);
  s.prefill(random_ids(40, c.vocab_size, 9));
  const size_t bytes = s.state_bytes();
  Session::State snap = s.snapshot();
  std::vector<int32_t> a = s.generate(20);
  s.restore(snap);
  EXPECT_EQ(s.generate(20), a);
  s.prefill(random_ids(500, c.vocab_size, 10));
  EXPECT_EQ(s.state_bytes(), bytes);  // memory independent of the length read
  const std::string dir = temp_dir("rwkv7");
  s.restore(snap);
  s.save_state(dir + "/state.bin");
  Session t(m);
  t.load_state(dir + "/state.bin");
  EXPECT_TRUE(t.snapshot() == snap);
  EXPECT_EQ(t.generate(20), a);
  // Model directory round trip: fla-hub config.json and tensor names.
  ByteTokenizer tok(ByteTokenizer::default_specials());
  ModelConfig cb = c;
  cb.vocab_size = tok.vocab_size();
  Rwkv7 mb(cb);
  mb.init_random(11);
  save_model_dir(mb, &tok, dir + "/model");
  json cj = load_json_file(dir + "/model/config.json");
  EXPECT_EQ(cj["model_type"], "rwkv7");
  EXPECT_EQ(cj["architectures"][0], "RWKV7ForCausalLM");
  LoadedModel l = load_model_dir(dir + "/model", true);
  ASSERT_NE(dynamic_cast<Rwkv7*>(l.model.get()), nullptr);
  EXPECT_EQ(0, std::memcmp(l.model->params(), mb.params(), mb.num_params() * sizeof(float)));
  EXPECT_EQ(int64_t(mb.num_params()), cb.num_parameters());
  for (const char* name : {"model.embeddings.weight", "model.layers.0.pre_norm.bias", "model.layers.0.attn.x_r",
                           "model.layers.1.attn.v_lora.lora.2.bias", "model.layers.1.attn.g_lora.lora.2.weight",
                           "model.layers.1.attn.r_k", "model.layers.1.ffn.key.weight", "model.norm.bias",
                           "lm_head.weight"})
    EXPECT_NE(mb.find_param(name), nullptr) << name;
  EXPECT_EQ(mb.find_param("model.layers.0.attn.v_lora.lora.0.weight"), nullptr);  // layer 0 has no value residual
  EXPECT_EQ(mb.find_param("model.layers.1.attn.g_lora.lora.2.bias"), nullptr);
}

TEST(Rwkv7Model, ConfigErrorsNameTheField) {
  json j = tiny_rwkv7_config(2).to_json();
  EXPECT_EQ(ModelConfig::from_json(j, "c.json").to_json(), j);
  auto err = [&](json bad) {
    try {
      ModelConfig::from_json(bad, "c.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  json a = j;
  a["head_dim"] = 3;
  EXPECT_NE(err(a).find("head_dim"), std::string::npos) << err(a);
  a = j, a["attn"] = {{"layers", {0}}};
  EXPECT_NE(err(a).find("attn"), std::string::npos);
  a = j, a["hidden_act"] = "gelu";
  EXPECT_NE(err(a).find("hidden_act"), std::string::npos);
  a = j, a["value_dim"] = 16;
  EXPECT_NE(err(a).find("value_dim"), std::string::npos);
  ModelConfig c = tiny_rwkv7_config(2);
  EXPECT_THROW(c.set_window(4, "all", "--window"), Error);
}

// An independent token-by-token x070 RNN (BlinkDL's rwkv_v7_numpy.py structure: [value, key] state
// S, sa = S a, S = S diag(w) + sa b^T + v k^T, out = S r), written from architectures.md §4 in fp64
// over the model's own weights, against the engine's logits.
TEST(Rwkv7Model, MatchesAnIndependentX070Rnn) {
  ModelConfig c = tiny_rwkv7_config(3);
  Rwkv7 m(c);
  m.init_random(12);
  perturb(m, 13, 0.25f);
  const int C = c.hidden_size, H = c.num_heads, N = c.head_dim, F = c.intermediate_size, V = c.vocab_size;
  auto P = [&](const std::string& name) {
    const ParamSpec* s = m.find_param(name);
    if (!s) throw std::runtime_error("no " + name);
    return std::vector<double>(m.params() + s->offset, m.params() + s->offset + shape_numel(s->shape));
  };
  auto ln = [](const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b, int G,
               double eps) {
    const int D = int(x.size()) / G;
    std::vector<double> y(x.size());
    for (int g = 0; g < G; ++g) {
      double mean = 0, var = 0;
      for (int i = 0; i < D; ++i) mean += x[g * D + i];
      mean /= D;
      for (int i = 0; i < D; ++i) var += (x[g * D + i] - mean) * (x[g * D + i] - mean);
      var /= D;
      for (int i = 0; i < D; ++i) y[g * D + i] = (x[g * D + i] - mean) / std::sqrt(var + eps) * w[g * D + i] + b[g * D + i];
    }
    return y;
  };
  auto matvec = [](const std::vector<double>& W, const std::vector<double>& x) {  // W [out, in]
    const size_t in = x.size(), out = W.size() / in;
    std::vector<double> y(out, 0.0);
    for (size_t o = 0; o < out; ++o)
      for (size_t i = 0; i < in; ++i) y[o] += W[o * in + i] * x[i];
    return y;
  };
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  const int L = c.num_layers, T = 25;
  std::vector<std::vector<double>> xa(L, std::vector<double>(C, 0.0)), xf = xa;
  std::vector<std::vector<double>> S(L, std::vector<double>(size_t(H) * N * N, 0.0));  // [h][value i][key j]
  auto ids = random_ids(T, V, 14);
  std::vector<float> ours = prefill_in_pieces(m, ids, T);
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<double> emb = P("model.embeddings.weight");
    std::vector<double> x(emb.begin() + size_t(ids[t]) * C, emb.begin() + size_t(ids[t] + 1) * C);
    x = ln(x, P("model.layers.0.pre_norm.weight"), P("model.layers.0.pre_norm.bias"), 1, 1e-5);
    std::vector<double> v_first;
    for (int l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".", a = p + "attn.";
      std::vector<double> h = ln(x, P(p + "attn_norm.weight"), P(p + "attn_norm.bias"), 1, 1e-5);
      std::vector<double> mix[6];
      const char* mn[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (int q = 0; q < 6; ++q) {
        std::vector<double> mu = P(a + mn[q]);
        mix[q].resize(C);
        for (int i = 0; i < C; ++i) mix[q][i] = h[i] + (xa[l][i] - h[i]) * mu[i];
      }
      xa[l] = h;
      auto lora = [&](const std::string& nm, const std::vector<double>& in, int act) {
        std::vector<double> z = matvec(P(a + nm + ".lora.0.weight"), in);
        for (double& e : z) e = act == 0 ? std::tanh(e) : act == 1 ? sig(e) : e;
        std::vector<double> o = matvec(P(a + nm + ".lora.2.weight"), z);
        if (m.find_param(a + nm + ".lora.2.bias")) {
          std::vector<double> bb = P(a + nm + ".lora.2.bias");
          for (int i = 0; i < C; ++i) o[i] += bb[i];
        }
        return o;
      };
      std::vector<double> r = matvec(P(a + "r_proj.weight"), mix[0]), k = matvec(P(a + "k_proj.weight"), mix[2]);
      std::vector<double> v = matvec(P(a + "v_proj.weight"), mix[3]), wl = lora("w_lora", mix[1], 0);
      std::vector<double> al = lora("a_lora", mix[4], 2), g = lora("g_lora", mix[5], 1);
      if (l == 0) v_first = v;
      else {
        std::vector<double> vl = lora("v_lora", mix[3], 2);
        for (int i = 0; i < C; ++i) v[i] += (v_first[i] - v[i]) * sig(vl[i]);
      }
      std::vector<double> kkw = P(a + "k_k"), ka = P(a + "k_a"), rk = P(a + "r_k"), y(C, 0.0), kk(C);
      std::vector<double> w(C), ai(C);
      for (int i = 0; i < C; ++i) {
        w[i] = std::exp(-std::exp(-0.5) * sig(wl[i]));
        ai[i] = sig(al[i]);
        kk[i] = k[i] * kkw[i];
      }
      for (int hh = 0; hh < H; ++hh) {
        double nrm = 0;
        for (int j = 0; j < N; ++j) nrm += kk[hh * N + j] * kk[hh * N + j];
        nrm = std::max(std::sqrt(nrm), 1e-12);
        for (int j = 0; j < N; ++j) kk[hh * N + j] /= nrm;
      }
      for (int i = 0; i < C; ++i) k[i] *= 1 + (ai[i] - 1) * ka[i];
      for (int hh = 0; hh < H; ++hh) {
        double* s = S[l].data() + size_t(hh) * N * N;
        for (int i = 0; i < N; ++i) {  // value row i
          double sa = 0;
          for (int j = 0; j < N; ++j) sa += s[i * N + j] * -kk[hh * N + j];
          for (int j = 0; j < N; ++j)
            s[i * N + j] = s[i * N + j] * w[hh * N + j] + sa * kk[hh * N + j] * ai[hh * N + j] + v[hh * N + i] * k[hh * N + j];
          for (int j = 0; j < N; ++j) y[hh * N + i] += s[i * N + j] * r[hh * N + j];
        }
      }
      y = ln(y, P(a + "g_norm.weight"), P(a + "g_norm.bias"), H, N * 1e-5);
      for (int hh = 0; hh < H; ++hh) {
        double bonus = 0;
        for (int j = 0; j < N; ++j) bonus += r[hh * N + j] * k[hh * N + j] * rk[hh * N + j];
        for (int j = 0; j < N; ++j) y[hh * N + j] = (y[hh * N + j] + bonus * v[hh * N + j]) * g[hh * N + j];
      }
      std::vector<double> o = matvec(P(a + "o_proj.weight"), y);
      for (int i = 0; i < C; ++i) x[i] += o[i];
      h = ln(x, P(p + "ffn_norm.weight"), P(p + "ffn_norm.bias"), 1, 1e-5);
      std::vector<double> fmu = P(p + "ffn.x_k"), fin(C);
      for (int i = 0; i < C; ++i) fin[i] = h[i] + (xf[l][i] - h[i]) * fmu[i];
      xf[l] = h;
      std::vector<double> kf = matvec(P(p + "ffn.key.weight"), fin);
      for (double& e : kf) e = e > 0 ? e * e : 0;
      std::vector<double> fo = matvec(P(p + "ffn.value.weight"), kf);
      (void)F;
      for (int i = 0; i < C; ++i) x[i] += fo[i];
    }
    x = ln(x, P("model.norm.weight"), P("model.norm.bias"), 1, 1e-5);
    std::vector<double> logits = matvec(P("lm_head.weight"), x);
    for (int i = 0; i < V; ++i) worst = std::max(worst, std::fabs(logits[i] - ours[size_t(t) * V + i]));
  }
  EXPECT_LT(worst, 2e-4) << "max |logit diff| over " << T << " tokens";
}
