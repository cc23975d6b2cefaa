// CPU micro-benchmarks (Google Benchmark). Not tests: numbers go to docs/PERF.md via
// bench/run_cpu.sh. Each GEMM-bound op is measured next to raw OpenBLAS sgemm on the same shape
// in the same run, so the ratio is meaningful on any machine.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "core/rng.h"
#include "data/synthetic.h"
#include "data/text_mix.h"
#include "models/bpe_tokenizer.h"
#include "models/transformer.h"
#include "ops/cpu/cpu_ops.h"

#include <cmath>

using namespace sr;

namespace {
std::vector<float> randv(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal();
  return v;
}
// Shapes: tokens N x in I -> out O (a 1024-token micro-batch through typical projections).
void gemm_shapes(benchmark::internal::Benchmark* b) {
  for (auto [N, I, O] : std::vector<std::tuple<int, int, int>>{{1024, 512, 512}, {1024, 512, 1536}, {1024, 1536, 512}, {4096, 256, 266}})
    b->Args({N, I, O});
}
}  // namespace

static void BM_sgemm_openblas(benchmark::State& st) {
  int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  auto x = randv(size_t(N) * I, 1), W = randv(size_t(O) * I, 2);
  std::vector<float> y(size_t(N) * O);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, I, 1.0f, x.data(), I, W.data(), I, 0.0f, y.data(), O);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter((2.0 * N * I * O) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_sgemm_openblas)->Apply(gemm_shapes)->UseRealTime()->Repetitions(5);

static void BM_linear_fwd(benchmark::State& st) {
  int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  auto x = randv(size_t(N) * I, 1), W = randv(size_t(O) * I, 2), b = randv(O, 3);
  std::vector<float> y(size_t(N) * O);
  for (auto _ : st) {
    cpu::linear_fwd(y.data(), x.data(), W.data(), b.data(), N, I, O);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter((2.0 * N * I * O) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_linear_fwd)->Apply(gemm_shapes)->UseRealTime()->Repetitions(5);

static void BM_linear_bwd(benchmark::State& st) {  // dx and dW (+db): two GEMMs
  int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  auto x = randv(size_t(N) * I, 1), W = randv(size_t(O) * I, 2), dy = randv(size_t(N) * O, 3);
  std::vector<float> dx(size_t(N) * I), dW(size_t(O) * I), db(O);
  for (auto _ : st) {
    cpu::linear_bwd(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), N, I, O);
    benchmark::DoNotOptimize(dW.data());
  }
  st.counters["GFLOPS"] = benchmark::Counter((4.0 * N * I * O) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_linear_bwd)->Apply(gemm_shapes)->UseRealTime()->Repetitions(5);

// Attention forward, 4 query heads / 2 kv heads of 64, window 0 (full) or 1024, L = 1k..32k.
static void BM_attention_fwd(benchmark::State& st) {
  int L = int(st.range(0)), W = int(st.range(1));
  AttnShape s{1, L, L, 4, 2, 64, W, 0.125f};
  auto q = randv(size_t(L) * 4 * 64, 1), k = randv(size_t(L) * 2 * 64, 2), v = randv(size_t(L) * 2 * 64, 3);
  std::vector<float> o(q.size()), lse(size_t(L) * 4);
  for (auto _ : st) {
    cpu::attention_fwd(o.data(), lse.data(), q.data(), k.data(), v.data(), s);
    benchmark::DoNotOptimize(o.data());
  }
  double keys = 0;  // visible (query, key) pairs
  for (int i = 0; i < L; ++i) keys += W > 0 ? std::min(i + 1, W) : i + 1;
  st.counters["GFLOPS"] = benchmark::Counter((4.0 * keys * 64 * 4) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["tokens/s"] = benchmark::Counter(L, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_attention_fwd)
    ->ArgsProduct({{1024, 2048, 4096, 8192, 16384}, {0, 1024}})
    ->Args({32768, 1024})
    ->Args({32768, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(0.5);

static void BM_attention_fwd_bwd(benchmark::State& st) {
  int L = int(st.range(0)), W = int(st.range(1));
  AttnShape s{1, L, L, 4, 2, 64, W, 0.125f};
  auto q = randv(size_t(L) * 4 * 64, 1), k = randv(size_t(L) * 2 * 64, 2), v = randv(size_t(L) * 2 * 64, 3);
  std::vector<float> o(q.size()), lse(size_t(L) * 4), dq(q.size()), dk(k.size()), dv(v.size());
  for (auto _ : st) {
    cpu::attention_fwd(o.data(), lse.data(), q.data(), k.data(), v.data(), s);
    cpu::attention_bwd(dq.data(), dk.data(), dv.data(), q.data(), q.data(), k.data(), v.data(), o.data(), lse.data(), s);
    benchmark::DoNotOptimize(dq.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(L, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_attention_fwd_bwd)->ArgsProduct({{1024, 4096, 16384}, {0, 1024}})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// Whole model, training step (forward + backward): ~7M params, 4 layers (2 SWA W=256), B=4 x T=512.
// One mixer layer's core, forward + backward, one sequence of L tokens, 4 heads x 64:
// kind 0 = causal attention, 1 = sliding window 4096, 2 = gated delta rule (chunked, C = 64),
// 3 = generalized delta rule (RWKV-7's wkv: per-channel decay, token scan, checkpoints every 64).
static void BM_mixer_fwd_bwd(benchmark::State& st) {
  const int L = int(st.range(0)), kind = int(st.range(1)), H = 4, D = 64;
  auto q = randv(size_t(L) * H * D, 1), k = randv(size_t(L) * H * D, 2), v = randv(size_t(L) * H * D, 3);
  auto dout = randv(size_t(L) * H * D, 4);
  std::vector<float> o(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
  if (kind == 3) {
    GdrShape s;
    s.B = 1, s.T = L, s.H = H, s.Dk = D, s.Dv = D;
    std::vector<float> w(q.size(), 0.9f), a(q.size()), b(q.size()), dr(q.size()), dw(q.size()), da(q.size()),
        db(q.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = -0.1f * k[i], b[i] = 0.05f * k[i];
    std::vector<float> st0(size_t(H) * D * D, 0.0f), state(st0.size()), dst(st0.size());
    for (auto _ : st) {
      state = st0;
      cpu::gdr_fwd(o.data(), state.data(), q.data(), w.data(), a.data(), b.data(), k.data(), v.data(), s);
      cpu::gdr_bwd(dr.data(), dw.data(), da.data(), db.data(), dk.data(), dv.data(), dst.data(), dout.data(), nullptr,
                   q.data(), w.data(), a.data(), b.data(), k.data(), v.data(), st0.data(), s);
      benchmark::DoNotOptimize(dr.data());
    }
  } else if (kind < 2) {
    AttnShape s{1, L, L, H, H, D, kind == 1 ? 4096 : 0, 0.125f};
    std::vector<float> lse(size_t(L) * H);
    for (auto _ : st) {
      cpu::attention_fwd(o.data(), lse.data(), q.data(), k.data(), v.data(), s);
      cpu::attention_bwd(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), o.data(),
                         lse.data(), s);
      benchmark::DoNotOptimize(dq.data());
    }
  } else {
    for (size_t r = 0; r < size_t(L) * H; ++r)  // the layer feeds L2-normalized q, k
      for (auto* x : {&q, &k}) {
        float n = 0;
        for (int i = 0; i < D; ++i) n += (*x)[r * D + i] * (*x)[r * D + i];
        for (int i = 0; i < D; ++i) (*x)[r * D + i] /= std::sqrt(n + 1e-6f);
      }
    DeltaShape s;
    s.B = 1, s.T = L, s.Hk = H, s.Hv = H, s.Dk = D, s.Dv = D, s.scale = 0.125f;
    std::vector<float> g(size_t(L) * H, -0.05f), beta(size_t(L) * H, 0.5f), dg(g.size()), db(g.size());
    std::vector<float> st0(size_t(H) * D * D, 0.0f), state(st0.size()), dst(st0.size());
    for (auto _ : st) {
      state = st0;
      cpu::delta_rule_fwd(o.data(), state.data(), q.data(), k.data(), v.data(), g.data(), beta.data(), s);
      cpu::delta_rule_bwd(dq.data(), dk.data(), dv.data(), dg.data(), db.data(), dst.data(), dout.data(), nullptr,
                          q.data(), k.data(), v.data(), g.data(), beta.data(), st0.data(), s);
      benchmark::DoNotOptimize(dq.data());
    }
  }
  st.counters["tokens/s"] = benchmark::Counter(L, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_mixer_fwd_bwd)
    ->ArgsProduct({{2048, 4096, 8192, 16384}, {0, 1, 2, 3}})
    ->Args({32768, 1})->Args({32768, 2})->Args({32768, 3})->Args({65536, 1})->Args({65536, 2})->Args({65536, 3})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

static void BM_model_train_step(benchmark::State& st) {
  ModelConfig c;
  c.vocab_size = 266, c.hidden_size = 384, c.intermediate_size = 1024, c.num_layers = 4, c.num_heads = 6;
  c.num_kv_heads = 2, c.head_dim = 64, c.sliding_window = int(st.range(1));
  c.layer_sliding = {true, false, true, false};
  if (c.sliding_window == 0) c.layer_sliding.assign(4, false);
  Transformer m(c);
  m.init_random(1);
  const int B = 4, T = int(st.range(0));
  std::vector<int32_t> ids(size_t(B) * T), tg(size_t(B) * T);
  Rng r(2);
  for (auto& x : ids) x = int32_t(r.below(266));
  for (auto& x : tg) x = int32_t(r.below(266));
  std::vector<float> w(ids.size(), 1.f);
  for (auto _ : st) {
    m.forward(ids.data(), tg.data(), w.data(), B, T);
    m.backward();
  }
  st.counters["params"] = double(c.num_parameters());
  st.counters["tokens/s"] = benchmark::Counter(double(B) * T, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOPS"] = benchmark::Counter((6.0 * c.num_parameters() * B * T) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_model_train_step)->Args({512, 256})->Args({512, 0})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// Whole model, streaming decode tokens/s after a 4k-token prefill (SWA ring vs full cache).
static void BM_model_decode(benchmark::State& st) {
  ModelConfig c;
  c.vocab_size = 266, c.hidden_size = 384, c.intermediate_size = 1024, c.num_layers = 4, c.num_heads = 6;
  c.num_kv_heads = 2, c.head_dim = 64, c.sliding_window = int(st.range(0));
  c.layer_sliding.assign(4, c.sliding_window > 0);
  Transformer m(c);
  m.init_random(1);
  std::vector<LayerKVCache> caches = m.empty_caches();
  std::vector<int32_t> prompt(4096, 65);
  std::vector<float> logits(266);
  m.forward_cached(prompt.data(), int(prompt.size()), caches, logits.data(), false);
  int32_t tok = 66;
  for (auto _ : st) m.forward_cached(&tok, 1, caches, logits.data(), false);
  st.counters["tokens/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_model_decode)->Arg(0)->Arg(256)->UseRealTime()->MinTime(1.0);

// RWKV-7's wkv forward alone (4 heads x 64, one sequence): arg 1 = chunk; chunk 1 is the token
// scan, 64 the chunked DPLR form (same op, ops/cpu/generalized_delta_rule.cpp).
static void BM_gdr_fwd(benchmark::State& st) {
  const int L = int(st.range(0)), H = 4, D = 64;
  GdrShape s;
  s.B = 1, s.T = L, s.H = H, s.Dk = D, s.Dv = D, s.chunk = int(st.range(1));
  const size_t n = size_t(L) * H * D;
  auto r = randv(n, 1), k = randv(n, 2), v = randv(n, 3), kk = randv(n, 4);
  std::vector<float> w(n), a(n), b(n), y(n), state(size_t(H) * D * D);
  for (size_t i = 0; i < n; ++i) w[i] = 0.6f + 0.39f * float(i % 97) / 97.0f, a[i] = -0.1f * kk[i], b[i] = 0.05f * kk[i];
  for (auto _ : st) {
    std::fill(state.begin(), state.end(), 0.0f);
    cpu::gdr_fwd(y.data(), state.data(), r.data(), w.data(), a.data(), b.data(), k.data(), v.data(), s);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["tokens/s"] = benchmark::Counter(L, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gdr_fwd)->ArgsProduct({{4096, 65536}, {1, 64}})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);

// Byte-level BPE encode on one core with the real Qwen vocabulary (third_party/, fetched by
// scripts/setup.sh), MB/s of UTF-8 input: kind 0 = English prose (the pseudo-essay haystack of the
// synthetic tasks, 4 MB), 1 = the multilingual text_mix corpus (4 MB; code, CJK, emoji, ...).
// The tokenizer's piece cache starts empty in every iteration.
static void BM_bpe_encode(benchmark::State& st) {
  const std::string path = std::string(SMOOTHREAD_SOURCE_DIR) + "/third_party/qwen3-tokenizer/tokenizer.json";
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(path);
  } catch (const std::exception& e) {
    st.SkipWithError("Qwen tokenizer missing: run scripts/setup.sh");
    return;
  }
  std::string text;
  if (st.range(0) == 0) {
    ByteTokenizer bytes(ByteTokenizer::default_specials());
    SyntheticOptions o;
    o.task = "niah_single_2", o.count = 1, o.seed = 3, o.tokens = 4 << 20;
    text = make_synthetic(o, bytes)[0]["context"].get<std::string>();
  } else {
    for (auto& d : make_text_mix(11, 1024, 4096)) text += d;
  }
  const json tj = tok->to_json();
  size_t n = 0;
  for (auto _ : st) {
    st.PauseTiming();
    BpeTokenizer fresh(tj, path);  // empty cache
    st.ResumeTiming();
    n = fresh.encode(text, false).size();
    benchmark::DoNotOptimize(n);
  }
  st.counters["MB/s"] = benchmark::Counter(double(text.size()) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["bytes/token"] = double(text.size()) / double(n);
}
BENCHMARK(BM_bpe_encode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
