// GPU benchmarks (CUDA build only). One JSON object per line on stdout; bench/run_cuda.sh runs the
// PyTorch baselines on the same card in the same call and prints the docs/PERF.md tables.
//   bench_cuda attention --L 4096 [--window 0] [--heads 16] [--dim 128] [--tokens 16384] [--reps 10]
//       [--fwd-tiles 0|1|2|3|4] (the forward's tiling, set_attention_fwd_tiles; 0 = automatic)
//       [--bwd-kernel 0|1|2|3] (the backward's kernel, set_attention_bwd_kernel; 0 = automatic)
//       [--order -1|0|1|2] (the blocks' launch order, set_attention_block_order; -1 = SMOOTHREAD_ATTN_ORDER or 2)
//       [--section N] (order 2's section in (head, batch) pairs, set_attention_block_section; 0 = automatic)
//       [--named-barriers -1|0|1] (the 2-D backward's P/dS barrier, set_attention_named_barriers; -1 = automatic)
//       [--path bf16|model] (bf16: the bf16 kernels alone; model: the fp32 entry points the model calls,
//       with their bf16 roundings and GQA head split)
//       [--kv-heads H] (GQA: H kv heads shared by the query heads; default = heads)
//       bf16 attention, forward and forward+backward, batch = max(1, tokens / L)
//   bench_cuda mixer --L 4096 [--heads 16] [--dim 128] [--window 4096] [--reps 3]
//       one layer's core on one sequence (fp32 entry points, as the model calls them): causal
//       attention, full and windowed, vs the gated delta rule; forward and forward+backward ms
//   bench_cuda gemm
//       cuBLAS at the models' projection shapes: fp32 storage (bf16 / tf32 tensor cores), bf16
//       operands with fp32 output (what linear_fwd runs after rounding), bf16 storage, and the op
//   bench_cuda model --preset 0.5b|0.5b-gdn|0.5b-rwkv7|3b --L 4096 [--window 0] [--steps 5 (0: no training)] [--decode 64] [--recompute 0|1]
//       [--batch 1] [--accum 1] (a training step = accum forward+backward passes over batch sequences of L tokens, then AdamW)
//       [--logits-chunk-mib 0] (the LM head runs over chunks of rows whose logits take this many MiB in fp32;
//       0 = the model's default, 2048 on the GPU)
//       [--first-write 1|0] (0: zero_grad() memsets every gradient instead of the backward setting them)
//       [--head-in-forward 1|0] (0: forward() then backward() instead of forward_backward(), which runs the LM
//       head's backward in the forward while the logits are at hand)
//       [--mirror 1|0] [--act-mirror 1|0] [--mirror-only 1|0] [--decode-weights fp32|bf16] [--graphs 1|0] (recompute defaults to 1 above
//       16k tokens; mirror 0: no bf16 weight copy, every GEMM rounds its weights; act-mirror 0: no bf16 activation
//       copies, every GEMM rounds its activation operand; mirror-only 0: the SwiGLU product and its gradients
//       are written in fp32 beside their bf16 copies; all for A/B runs; graphs: decode steps as CUDA graphs, default
//       SMOOTHREAD_CUDA_GRAPHS); --profile 1 adds the per-op time split of one
//       training step ("profile_ms") and of 16 decode steps ("decode_profile_ms"; ops synchronize one by
//       one, so only the split is meaningful)
//       Qwen2-shaped random model: training step tokens/s + MFU, prefill and decode tokens/s
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <cublas_v2.h>

#include "core/error.h"
#include "core/rng.h"
#include "infer/session.h"
#include "models/transformer.h"
#include "ops/cuda/cuda_backend.h"
#include "train/adamw.h"

using namespace sr;

namespace {
using clk = std::chrono::steady_clock;
constexpr double kPeakBf16 = 989e12;  // H100/H200 SXM dense bf16 tensor-core peak (datasheet)

std::map<std::string, std::string> parse(int argc, char** argv, int from) {
  std::map<std::string, std::string> a;
  for (int i = from; i + 1 < argc; i += 2) a[std::string(argv[i]).substr(2)] = argv[i + 1];
  return a;
}
int geti(std::map<std::string, std::string>& a, const char* k, int d) { return a.count(k) ? std::stoi(a[k]) : d; }
std::string gets(std::map<std::string, std::string>& a, const char* k, const char* d) {
  return a.count(k) ? a[k] : d;
}

// n standard normal draws (seeded) on the GPU, fp32 and rounded to bf16
Buffer<float> random_f32(size_t n, uint64_t seed) {
  std::vector<float> h(n);
  Rng r(seed);
  for (auto& x : h) x = float(r.normal());
  Buffer<float> f(ops_cuda().mem, n);
  f.upload(h.data(), n);
  return f;
}
Buffer<uint16_t> random_bf16(size_t n, uint64_t seed) {
  Buffer<float> f = random_f32(n, seed);
  Buffer<uint16_t> b(ops_cuda().mem, n);
  cuda::to_bf16(b.data(), f.data(), n);
  return b;
}

template <class F>
double median_ms(F f, int reps, const std::function<void()>& after_warm_up = [] {}) {
  f();  // warm-up
  cuda::synchronize();
  after_warm_up();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = clk::now();
    f();
    cuda::synchronize();
    t.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// query-key pairs visible under causal (+ window) attention for one head of length L
double visible_pairs(double L, double W) {
  if (W <= 0 || W >= L) return L * (L + 1) / 2;
  return W * (W + 1) / 2 + (L - W) * W;
}

int attention(std::map<std::string, std::string> a) {
  const int L = geti(a, "L", 4096), W = geti(a, "window", 0), H = geti(a, "heads", 16), D = geti(a, "dim", 128);
  const int B = std::max(1, geti(a, "tokens", 16384) / L), reps = geti(a, "reps", 10);
  const int fwd_tiles = geti(a, "fwd-tiles", 0);  // 1 | 2 | 3 | 4 forces the forward's tiling (cuda_backend.h)
  cuda::set_attention_fwd_tiles(fwd_tiles);
  const int bwd_kernel = geti(a, "bwd-kernel", 0);  // 1 | 2 | 3 forces the backward's kernel (cuda_backend.h)
  cuda::set_attention_bwd_kernel(bwd_kernel);
  const int order = geti(a, "order", -1);  // 0 | 1 | 2 forces the blocks' launch order (cuda_backend.h)
  cuda::set_attention_block_order(order);
  const int section = geti(a, "section", 0);
  cuda::set_attention_block_section(section);
  const int named = geti(a, "named-barriers", -1);  // 0 | 1 forces the 2-D backward's barrier kind (cuda_backend.h)
  cuda::set_attention_named_barriers(named);
  const std::string path = gets(a, "path", "bf16");
  if (path != "bf16" && path != "model") fail("bench_cuda attention", "--path must be bf16 or model");
  const int Hkv = geti(a, "kv-heads", H);
  if (Hkv < 1 || H % Hkv != 0) fail("bench_cuda attention", "--heads must be a multiple of --kv-heads");
  AttnShape s;
  s.B = B, s.Tq = L, s.Tk = L, s.Hq = H, s.Hkv = Hkv, s.D = D, s.window = W, s.scale = 1.0f / std::sqrt(float(D));
  const size_t n = size_t(B) * L * H * D, nk = size_t(B) * L * Hkv * D, nl = size_t(B) * H * L;
  const bool model_path = path == "model";
  const size_t nb = model_path ? 0 : n, nkb = model_path ? 0 : nk, nf = model_path ? n : 0, nkf = model_path ? nk : 0;
  auto q = random_bf16(nb, 1), k = random_bf16(nkb, 2), v = random_bf16(nkb, 3), dout = random_bf16(nb, 4);
  Buffer<uint16_t> out(ops_cuda().mem, nb), dq(ops_cuda().mem, nb), dk(ops_cuda().mem, nkb), dv(ops_cuda().mem, nkb);
  Buffer<float> lse(ops_cuda().mem, nl), delta(ops_cuda().mem, nb ? nl : 0), dqws(ops_cuda().mem, nb);
  // the model path's fp32 tensors (the same random draws, rounded to bf16 by the entry points)
  auto qf = random_f32(nf, 1), kf = random_f32(nkf, 2), vf = random_f32(nkf, 3), doutf = random_f32(nf, 4);
  Buffer<float> outf(ops_cuda().mem, nf), dqf(ops_cuda().mem, nf), dkf(ops_cuda().mem, nkf), dvf(ops_cuda().mem, nkf);
  const OpsTable& o = ops_cuda();
  auto fwd = [&] {
    if (model_path) o.attention_fwd(outf.data(), lse.data(), qf.data(), kf.data(), vf.data(), s);
    else cuda::attention_fwd_bf16(out.data(), lse.data(), q.data(), k.data(), v.data(), s);
  };
  auto bwd = [&] {
    if (model_path)
      o.attention_bwd(dqf.data(), dkf.data(), dvf.data(), doutf.data(), qf.data(), kf.data(), vf.data(), outf.data(),
                      lse.data(), s);
    else
      cuda::attention_bwd_bf16(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                               lse.data(), delta.data(), dqws.data(), s);
  };
  double tf = median_ms(fwd, reps), tfb = median_ms([&] { fwd(), bwd(); }, reps);
  const double flops = 4.0 * B * H * D * visible_pairs(L, W);  // forward; backward = 2.5x
  std::printf("{\"bench\":\"attention\",\"impl\":\"smoothread\",\"L\":%d,\"window\":%d,\"batch\":%d,\"heads\":%d,"
              "\"kv_heads\":%d,\"dim\":%d,\"fwd_tiles\":%d,\"bwd_kernel\":%d,\"order\":%d,\"section\":%d,"
              "\"named_barriers\":%d,\"path\":\"%s\",\"fwd_ms\":%.4f,\"fwdbwd_ms\":%.4f,\"fwd_tflops\":%.1f,\"fwdbwd_tflops\":%.1f}\n",
              L, W, B, H, Hkv, D, fwd_tiles, bwd_kernel, order, section, named, path.c_str(), tf, tfb, flops / tf * 1e-9,
              3.5 * flops / tfb * 1e-9);
  return 0;
}

// One mixer layer's core on one sequence of L tokens, fp32 entry points as the model calls them:
// causal attention (full and window W) vs the gated delta rule, forward and forward+backward.
int mixer(std::map<std::string, std::string> a) {
  const int L = geti(a, "L", 4096), H = geti(a, "heads", 16), D = geti(a, "dim", 128), W = geti(a, "window", 4096);
  const int reps = geti(a, "reps", 3);
  const OpsTable& o = ops_cuda();
  const size_t n = size_t(L) * H * D;
  auto randf = [&](size_t m, uint64_t seed, double scale) {
    std::vector<float> h(m);
    Rng r(seed);
    for (auto& x : h) x = float(scale * r.normal());
    Buffer<float> b(o.mem, m);
    b.upload(h.data(), m);
    return b;
  };
  auto q = randf(n, 1, 1), k = randf(n, 2, 1.0 / std::sqrt(double(D))), v = randf(n, 3, 1), dout = randf(n, 4, 1);
  Buffer<float> out(o.mem, n), dq(o.mem, n), dk(o.mem, n), dv(o.mem, n), lse(o.mem, size_t(H) * L);
  std::printf("{\"bench\":\"mixer\",\"L\":%d,\"heads\":%d,\"dim\":%d", L, H, D);
  for (int win : {0, W}) {
    if (win >= L) continue;
    AttnShape s;
    s.B = 1, s.Tq = L, s.Tk = L, s.Hq = H, s.Hkv = H, s.D = D, s.window = win, s.scale = 1.0f / std::sqrt(float(D));
    auto fwd = [&] { o.attention_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), s); };
    auto bwd = [&] {
      o.attention_bwd(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), s);
    };
    std::printf(",\"attn_w%d_fwd_ms\":%.3f,\"attn_w%d_fwdbwd_ms\":%.3f", win, median_ms(fwd, reps), win,
                median_ms([&] { fwd(), bwd(); }, reps));
  }
  DeltaShape ds;
  ds.B = 1, ds.T = L, ds.Hk = H, ds.Hv = H, ds.Dk = D, ds.Dv = D, ds.scale = 1.0f / std::sqrt(float(D));
  auto g = randf(size_t(L) * H, 5, 0.01), beta = randf(size_t(L) * H, 6, 0.1);
  Buffer<float> st(o.mem, size_t(H) * D * D), dst(o.mem, size_t(H) * D * D), dg(o.mem, size_t(L) * H),
      db(o.mem, size_t(L) * H), st0(o.mem, size_t(H) * D * D);
  st0.zero();
  auto dfwd = [&] {
    st.zero();
    o.delta_rule_fwd(out.data(), st.data(), q.data(), k.data(), v.data(), g.data(), beta.data(), ds);
  };
  auto dbwd = [&] {
    o.delta_rule_bwd(dq.data(), dk.data(), dv.data(), dg.data(), db.data(), dst.data(), dout.data(), nullptr, q.data(),
                     k.data(), v.data(), g.data(), beta.data(), st0.data(), ds);
  };
  std::printf(",\"delta_rule_fwd_ms\":%.3f,\"delta_rule_fwdbwd_ms\":%.3f", median_ms(dfwd, reps),
              median_ms([&] { dfwd(), dbwd(); }, reps));
  // RWKV-7's wkv (generalized delta rule): decays in (0.545, 1), a = -kk, b = kk * iclr
  GdrShape gs;
  gs.B = 1, gs.T = L, gs.H = H, gs.Dk = D, gs.Dv = D;
  auto w = randf(n, 7, 0.0), ga = randf(n, 8, 0.3 / std::sqrt(double(D))), bb = randf(n, 9, 0.1 / std::sqrt(double(D)));
  {
    std::vector<float> h(n, 0.9f);
    w.upload(h.data(), n);
  }
  Buffer<float> dw(o.mem, n), da(o.mem, n), dbb(o.mem, n);
  auto gfwd = [&] {
    st.zero();
    o.gdr_fwd(out.data(), st.data(), q.data(), w.data(), ga.data(), bb.data(), k.data(), v.data(), gs);
  };
  auto gbwd = [&] {
    o.gdr_bwd(dq.data(), dw.data(), da.data(), dbb.data(), dk.data(), dv.data(), dst.data(), dout.data(), nullptr,
              q.data(), w.data(), ga.data(), bb.data(), k.data(), v.data(), st0.data(), gs);
  };
  std::printf(",\"rwkv7_wkv_fwd_ms\":%.3f,\"rwkv7_wkv_fwdbwd_ms\":%.3f}\n", median_ms(gfwd, reps),
              median_ms([&] { gfwd(), gbwd(); }, reps));
  return 0;
}

int gemm(std::map<std::string, std::string> a) {
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) fail("cublas", "cublasCreate failed");
  const int reps = geti(a, "reps", 20);
  struct Shape { int N, I, O; const char* what; };
  for (Shape sh : {Shape{4096, 896, 4864, "0.5b mlp up"}, Shape{4096, 4864, 896, "0.5b mlp down"},
                   Shape{4096, 2048, 11008, "3b mlp up"}, Shape{4096, 896, 151936, "0.5b lm head"}}) {
    const size_t nx = size_t(sh.N) * sh.I, nw = size_t(sh.O) * sh.I, ny = size_t(sh.N) * sh.O;
    Buffer<float> x(ops_cuda().mem, nx), w(ops_cuda().mem, nw), y(ops_cuda().mem, ny);
    Buffer<uint16_t> xb = random_bf16(nx, 1), wb = random_bf16(nw, 2), yb(ops_cuda().mem, ny);
    cuda::from_bf16(x.data(), xb.data(), nx), cuda::from_bf16(w.data(), wb.data(), nw);
    const float alpha = 1, beta = 0;
    // t: operand type; tc: output type (fp32 or bf16)
    auto run = [&](cudaDataType_t t, cublasComputeType_t c, cudaDataType_t tc) {
      const void *A = t == CUDA_R_32F ? (const void*)w.data() : (const void*)wb.data();
      const void *B = t == CUDA_R_32F ? (const void*)x.data() : (const void*)xb.data();
      void* C = tc == CUDA_R_32F ? (void*)y.data() : (void*)yb.data();
      return median_ms([&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.O, sh.N, sh.I, &alpha, A, t, sh.I, B, t, sh.I, &beta, C, tc, sh.O, c,
                     CUBLAS_GEMM_DEFAULT);
      }, reps);
    };
    const double fl = 2.0 * sh.N * sh.I * sh.O;
    cuda::set_gemm_precision("bf16");
    double tops = median_ms([&] { ops_cuda().linear_fwd(y.data(), x.data(), w.data(), nullptr, sh.N, sh.I, sh.O); }, reps);
    double t32 = run(CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_16BF, CUDA_R_32F),
           ttf = run(CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F), tbf = run(CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_16BF),
           tmix = run(CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F);  // bf16 operands, fp32 output: linear_fwd's GEMM
    std::printf("{\"bench\":\"gemm\",\"shape\":\"%s\",\"N\":%d,\"I\":%d,\"O\":%d,\"fp32_fast16bf_tflops\":%.1f,"
                "\"fp32_tf32_tflops\":%.1f,\"bf16_tflops\":%.1f,\"bf16_in_fp32_out_tflops\":%.1f,"
                "\"ops_linear_tflops\":%.1f}\n",
                sh.what, sh.N, sh.I, sh.O, fl / t32 * 1e-9, fl / ttf * 1e-9, fl / tbf * 1e-9, fl / tmix * 1e-9,
                fl / tops * 1e-9);
  }
  cublasDestroy(h);
  return 0;
}

ModelConfig preset(const std::string& p, int window, int L) {
  json j = {{"model_type", "qwen2"}, {"vocab_size", 151936}, {"tie_word_embeddings", true}, {"rope_theta", 1e6},
            {"rms_norm_eps", 1e-6}, {"max_position_embeddings", std::max(L, 32768)}};
  if (p == "0.5b-rwkv7")  // RWKV-7 of the 0.5b shape: 24 layers x 896 (14 heads of 64), fla's LoRA ranks
    return ModelConfig::from_json({{"model_type", "rwkv7"}, {"vocab_size", 151936}, {"tie_word_embeddings", true},
                                   {"hidden_size", 896}, {"num_hidden_layers", 24}, {"head_dim", 64},
                                   {"intermediate_size", 3584}, {"decay_low_rank_dim", 64}, {"a_low_rank_dim", 64},
                                   {"v_low_rank_dim", 64}, {"gate_low_rank_dim", 160}},
                                  "preset " + p);
  const bool gdn = p == "0.5b-gdn";  // Qwen3.5-style hybrid: 3 Gated DeltaNet layers per attention layer
  if (p == "0.5b" || gdn) j.update({{"hidden_size", 896}, {"num_hidden_layers", 24}, {"num_attention_heads", 14},
                             {"num_key_value_heads", 2}, {"intermediate_size", 4864}, {"attention_bias", true}});
  else if (p == "3b") j.update({{"hidden_size", 2048}, {"num_hidden_layers", 36}, {"num_attention_heads", 16},
                                {"num_key_value_heads", 2}, {"intermediate_size", 11008}, {"attention_bias", true}});
  else fail("--preset", "choose 0.5b, 0.5b-gdn, 0.5b-rwkv7 or 3b");
  if (gdn) {
    json types = json::array();
    for (int l = 0; l < 24; ++l)  // --window: the attention layers are windowed
      types.push_back(l % 4 == 3 ? (window > 0 ? "sliding_attention" : "full_attention") : "linear_attention");
    j.update({{"layer_types", types}, {"linear_num_key_heads", 4}, {"linear_num_value_heads", 8},
              {"linear_key_head_dim", 128}, {"linear_value_head_dim", 128}, {"linear_conv_kernel_dim", 4}});
  }
  if (window > 0) j.update({{"use_sliding_window", true}, {"sliding_window", window}, {"max_window_layers", 0}});
  return ModelConfig::from_json(j, "preset " + p);
}

int model(std::map<std::string, std::string> a) {
  const std::string p = a.count("preset") ? a["preset"] : "0.5b";
  const int L = geti(a, "L", 4096), W = geti(a, "window", 0), steps = geti(a, "steps", 5), ndec = geti(a, "decode", 64);
  ModelConfig c = preset(p, W, L);
  std::unique_ptr<LanguageModel> mp = make_model(c);
  LanguageModel& m = *mp;
  m.init_random(1);
  const bool mirror = geti(a, "mirror", 1) != 0;  // 0: every GEMM rounds its weights itself (A/B)
  cuda::set_weight_mirrors(mirror);
  const bool act_mirror = geti(a, "act-mirror", 1) != 0;  // 0: every GEMM rounds its activations itself (A/B)
  cuda::set_activation_mirrors(act_mirror);
  const bool mirror_only = geti(a, "mirror-only", 1) != 0;  // 0: SwiGLU outputs written in fp32 too (A/B)
  cuda::set_mirror_only(mirror_only);
  const bool first_write = geti(a, "first-write", 1) != 0;  // 0: zero_grad() memsets every gradient (A/B)
  m.set_first_write_grads(first_write);
  // 0: forward() then backward(), the LM head's logits computed again in the backward (A/B)
  const bool head_in_forward = geti(a, "head-in-forward", 1) != 0;
  m.set_ops(&ops_cuda());
  const bool recompute = geti(a, "recompute", L > 16384 ? 1 : 0) != 0;
  m.set_recompute(recompute);
  // the LM head's rows a chunk: MiB of fp32 logits (set_logits_chunk_floats; 0 = the model's default)
  const int chunk_mib_set = geti(a, "logits-chunk-mib", 0);
  if (chunk_mib_set < 0) fail("--logits-chunk-mib", "must be 0 (the default) or positive");
  if (chunk_mib_set > 0) m.set_logits_chunk_floats(size_t(chunk_mib_set) << 18);
  const int chunk_mib = int(m.logits_chunk_floats() >> 18);
  const double P = double(m.num_params()), V = c.vocab_size, C = c.hidden_size;
  // matmul FLOPs per token (forward): 2 * (params - embedding table + LM head) ; attention per layer
  const double mm = 2.0 * (P - V * C + V * C);
  // attention layers only (the delta rule's state FLOPs are left out of MFU)
  int attn_layers = 0;
  for (int l = 0; l < c.num_layers; ++l) attn_layers += !c.is_linear(l) && !c.is_rwkv7();
  const double attn_fwd = 4.0 * c.num_heads * c.head_dim * attn_layers * visible_pairs(L, W) / L;
  std::printf("{\"bench\":\"model\",\"preset\":\"%s\",\"params\":%.0f,\"L\":%d,\"window\":%d,\"recompute\":%d,"
              "\"weight_mirror\":%d,\"act_mirror\":%d,\"mirror_only\":%d,\"first_write\":%d,\"head_in_forward\":%d,\"device\":\"%s\"",
              p.c_str(), P, L, W, int(recompute), int(mirror), int(act_mirror), int(mirror_only), int(first_write), int(head_in_forward),
              cuda::device_summary().c_str());
  // training step: zero_grad, then `accum` forward+backward passes over `batch` sequences of L
  // tokens each (gradient accumulation, as the trainer's grad_accum), then clip + AdamW
  const int batch = geti(a, "batch", 1), accum = geti(a, "accum", 1);
  if (batch < 1 || accum < 1) fail("--batch/--accum", "must be at least 1");
  std::printf(",\"batch\":%d,\"accum\":%d,\"logits_chunk_mib\":%d", batch, accum, chunk_mib);
  if (steps > 0) try {
    AdamW opt(m.num_params(), {}, ops_cuda());
    const size_t n = size_t(batch) * L;
    std::vector<int32_t> ids(n), tg(n);
    Rng r(3);
    for (size_t i = 0; i < n; ++i) ids[i] = int32_t(r.below(uint64_t(V))), tg[i] = int32_t(r.below(uint64_t(V)));
    std::vector<float> w(n, 1.0f);
    auto make_step = [&](AdamW& o, const OpsTable& ops) {
      return [&] {
        m.zero_grad();
        for (int i = 0; i < accum; ++i) {
          if (head_in_forward) {
            m.forward_backward(ids.data(), tg.data(), w.data(), batch, L, 1.0f / float(accum));
          } else {
            m.forward(ids.data(), tg.data(), w.data(), batch, L);
            m.backward(1.0f / float(accum));
          }
        }
        o.step(m.backend_params(), m.grads(), 1e-4f, grad_norm(m.grads(), m.num_params(), 1.0, ops).clip_scale);
      };
    };
    auto step = make_step(opt, ops_cuda());
    cuda::reset_peak();
    cuda::GemmPlanStats tuned;  // after the warm-up step, which makes the GEMM plans (and times their candidates)
    double ms = median_ms(step, steps, [&] { tuned = cuda::gemm_plan_stats(); });
    const cuda::GemmPlanStats after = cuda::gemm_plan_stats();
    double tps = double(n) * accum / (ms * 1e-3);
    std::printf(",\"train_ms\":%.2f,\"train_tokens_per_s\":%.0f,\"train_mfu\":%.4f,\"train_peak_gib\":%.2f", ms, tps,
                tps * 3 * (mm + attn_fwd) / kPeakBf16, double(cuda::memory_stats().peak_in_use) / (1 << 30));
    // plans made in the timed steps: 0 unless a shape or an operand's alignment changed between steps
    std::printf(",\"gemm_plans\":%lld,\"gemm_plans_in_timed_steps\":%lld,\"gemm_tuning_ms\":%.1f", tuned.plans,
                after.plans - tuned.plans, tuned.timing_ms);
    if (geti(a, "profile", 0)) {
      m.set_ops(&ops_cuda_profiled());
      m.set_recompute(recompute);
      AdamW popt(m.num_params(), {}, ops_cuda_profiled());
      auto pstep = make_step(popt, ops_cuda_profiled());
      pstep();
      cuda::profile_reset();
      auto t0 = clk::now();
      pstep();
      cuda::synchronize();
      double tot = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
      std::printf(",\"profile_step_ms\":%.2f,\"profile_ms\":%s", tot, cuda::profile_report().c_str());
      m.set_ops(&ops_cuda());
    }
  } catch (const Error& e) {
    std::printf(",\"train_error\":\"%s\"", e.what());
  }
  m.set_recompute(false);  // drops the training activations before inference
  cuda::empty_cache();
  try {
    std::vector<int32_t> ids(L);
    for (int i = 0; i < L; ++i) ids[i] = i % 1000 + 10;
    double pre_ms = median_ms(
        [&] {
          Session s(m);
          s.prefill(ids);
        },
        3);
    const std::string dw = a.count("decode-weights") ? a["decode-weights"] : "fp32";
    m.set_decode_weights(dw);  // bf16: decode GEMVs read the weight mirror (half the bytes)
    if (a.count("graphs")) cuda::set_decode_graphs(geti(a, "graphs", 0) != 0);
    const cuda::DecodeGraphStats g0 = cuda::decode_graph_stats();
    Session s(m, SamplingParams{});
    s.prefill(ids);
    auto t0 = clk::now();
    for (int i = 0; i < ndec; ++i) s.prefill({int32_t(100 + i)});
    cuda::synchronize();
    double dec_s = std::chrono::duration<double>(clk::now() - t0).count() / ndec;
    // bytes per decoded token: the weights once (fp32, or bf16 with --decode-weights bf16; the
    // embedding table's rows are gathered, not read whole, but the tied LM head reads it all) + the
    // visible KV cache (fp32 k and v, every layer)
    const double wbytes = dw == "bf16" ? 2 : 4;
    double kv_rows = W > 0 ? std::min(W, L) : L;
    double bytes = P * wbytes + 2.0 * kv_rows * c.num_kv_heads * c.head_dim * 4 * c.num_layers;
    if (c.is_rwkv7()) bytes = P * wbytes + 2.0 * double(s.state_bytes());  // state read and written
    const cuda::DecodeGraphStats g1 = cuda::decode_graph_stats();
    std::printf(",\"prefill_tokens_per_s\":%.0f,\"decode_weights\":\"%s\",\"decode_tokens_per_s\":%.1f,\"decode_GBps\":%.0f",
                L / (pre_ms * 1e-3), dw.c_str(), 1.0 / dec_s, bytes / dec_s * 1e-9);
    std::printf(",\"decode_graphs\":%d,\"graph_launches\":%lld,\"graph_instantiations\":%lld,\"graph_replays\":%lld",
                int(cuda::decode_graphs()), (long long)(g1.launches - g0.launches),
                (long long)(g1.instantiations - g0.instantiations), (long long)(g1.replays - g0.replays));
    if (geti(a, "profile", 0) && ndec > 0) {  // the per-op split of decode steps (op by op, no graphs)
      const bool graphs = cuda::decode_graphs();
      cuda::set_decode_graphs(false);
      m.set_ops(&ops_cuda_profiled());
      cuda::profile_reset();
      const int np = std::min(ndec, 16);
      for (int i = 0; i < np; ++i) s.prefill({int32_t(200 + i)});
      cuda::synchronize();
      std::printf(",\"decode_profile_steps\":%d,\"decode_profile_ms\":%s", np, cuda::profile_report().c_str());
      m.set_ops(&ops_cuda());
      cuda::set_decode_graphs(graphs);
    }
  } catch (const Error& e) {
    std::printf(",\"infer_error\":\"%s\"", e.what());
  }
  std::printf("}\n");
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    if (!cuda::available()) {
      std::fprintf(stderr, "bench_cuda: no CUDA GPU (%s)\n", cuda::device_summary().c_str());
      return 2;
    }
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "attention") return attention(parse(argc, argv, 2));
    if (mode == "model") return model(parse(argc, argv, 2));
    if (mode == "gemm") return gemm(parse(argc, argv, 2));
    if (mode == "mixer") return mixer(parse(argc, argv, 2));
    std::fprintf(stderr, "usage: bench_cuda attention|model|gemm|mixer [--flag value ...]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
}
