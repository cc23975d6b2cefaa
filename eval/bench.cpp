#include "eval/bench.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "infer/session.h"
#include "ops/cpu/blas_kernels.h"
#include "ops/cuda/cuda_backend.h"
#include "smoothread_version.h"  // SMOOTHREAD_GIT_COMMIT, generated at build time
#include "train/adamw.h"

namespace sr {

size_t peak_rss_now() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::stoull(line.substr(6))) * 1024;  // "VmHWM:  1234 kB"
  return 0;
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";  // resets VmHWM to the current RSS (Linux >= 4.0)
}

json BenchResult::to_json() const {
  return {{"test", test}, {"tokens", tokens}, {"reps", seconds.size()}, {"seconds", seconds},
          {"mean_s", mean_s}, {"std_s", std_s}, {"tokens_per_s", tokens_per_s}, {"tokens_per_s_std", tokens_per_s_std},
          {"peak_rss_bytes", peak_rss_bytes}, {"peak_device_bytes", peak_device_bytes}, {"extra", extra}};
}

namespace {
using clock_t_ = std::chrono::steady_clock;

void sync(const LanguageModel& m) {
  if (m.on_device()) cuda::synchronize();
}

std::vector<int32_t> random_ids(Rng& r, int n, int vocab) {
  std::vector<int32_t> v(size_t(std::max(n, 0)));
  for (auto& x : v) x = int32_t(r.below(uint64_t(vocab)));
  return v;
}

// Times `body` reps times after warm-up runs; peak memory over the timed runs.
template <class F>
BenchResult measure(const std::string& test, int64_t tokens, const BenchOptions& o, const LanguageModel& m, F body) {
  BenchResult r;
  r.test = test, r.tokens = tokens;
  for (int w = 0; w < o.warmup; ++w) body(r.extra);
  sync(m);
  reset_peak_rss();
  if (m.on_device()) cuda::reset_peak();
  for (int i = 0; i < o.reps; ++i) {
    auto t0 = clock_t_::now();
    body(r.extra);
    sync(m);
    r.seconds.push_back(std::chrono::duration<double>(clock_t_::now() - t0).count());
  }
  r.peak_rss_bytes = peak_rss_now();
  if (m.on_device()) r.peak_device_bytes = cuda::memory_stats().peak_in_use;
  double s = 0, s2 = 0, q = 0, q2 = 0;
  for (double t : r.seconds) s += t, q += double(tokens) / t;
  const double n = double(r.seconds.size());
  r.mean_s = s / n, r.tokens_per_s = q / n;
  for (double t : r.seconds) s2 += (t - r.mean_s) * (t - r.mean_s), q2 += std::pow(double(tokens) / t - r.tokens_per_s, 2);
  r.std_s = n > 1 ? std::sqrt(s2 / (n - 1)) : 0.0;
  r.tokens_per_s_std = n > 1 ? std::sqrt(q2 / (n - 1)) : 0.0;
  return r;
}

void check_sizes(const std::vector<int>& v, const char* flag, int min) {
  for (int x : v)
    if (x < min) fail(flag, "sizes must be >= " + std::to_string(min) + ", got " + std::to_string(x));
}
}  // namespace

std::vector<BenchResult> run_bench(LanguageModel& model, const BenchOptions& o,
                                   const std::function<void(const std::string&)>& progress,
                                   const std::function<void(const std::vector<BenchResult>&)>& done) {
  check_sizes(o.prompt_sizes, "-p", 1), check_sizes(o.gen_sizes, "-n", 1), check_sizes(o.depths, "-d", 0);
  check_sizes(o.read_sizes, "--read", 1), check_sizes(o.train_sizes, "--train", 2);
  if (o.reps < 1) fail("--reps", "must be >= 1");
  if (o.warmup < 0) fail("--warmup", "must be >= 0");
  if (o.chunk_tokens < 1 || o.summary_tokens < 0 || o.query_tokens < 0 || o.answer_tokens < 1)
    fail("--chunk-tokens/--summary-tokens", "need chunk >= 1, summary >= 0, answer >= 1");
  if (o.prefill_batch < 1) fail("--prefill-batch", "must be >= 1");
  if (!o.read_sizes.empty() && o.read_modes.empty()) fail("--mode", "needs emr and/or or");
  for (auto& m : o.read_modes)
    if (m != "emr" && m != "or") fail("--mode", "expected emr and/or or, got '" + m + "'");
  const int V = model.config().vocab_size;
  Rng rng(o.seed);
  std::vector<BenchResult> out;
  auto note = [&](const std::string& s) {
    if (progress) progress(s);
  };
  auto add = [&](BenchResult r) {
    out.push_back(std::move(r));
    if (done) done(out);
  };

  for (int P : o.prompt_sizes) {  // prefill
    note("pp" + std::to_string(P));
    auto ids = random_ids(rng, P, V);
    add(measure("pp" + std::to_string(P), P, o, model, [&](json& x) {
      Session s(model);
      s.set_prefill_batch(o.prefill_batch);
      s.prefill(ids);
      x["state_bytes"] = s.state_bytes();
      x["prefill_batch"] = o.prefill_batch;
    }));
  }
  for (int d : o.depths)
    for (int N : o.gen_sizes) {  // decode after a context of d tokens (untimed)
      std::string name = "tg" + std::to_string(N) + (d ? "@d" + std::to_string(d) : "");
      note(name);
      auto ctx = random_ids(rng, std::max(d, 1), V);
      Session base(model);
      base.set_prefill_batch(o.prefill_batch);
      base.prefill(ctx);
      const Session::State start = base.snapshot();
      add(measure(name, N, o, model, [&](json&) {
        base.restore(start);
        for (int i = 0; i < N; ++i) base.decode();
      }));
    }
  for (int L : o.read_sizes) {
    const auto doc = random_ids(rng, L, V), query = random_ids(rng, std::max(o.query_tokens, 1), V);
    for (const std::string& mode : o.read_modes) {
      std::string name = "read-" + mode + " " + std::to_string(L);
      note(name);
      add(measure(name, L, o, model, [&](json& x) {
        Session s(model);
        s.set_prefill_batch(o.prefill_batch);
        s.prefill(query);
        int rounds = 0;
        if (mode == "or") {
          s.prefill(doc);
          rounds = 1;
        } else {
          for (int b = 0; b < L; b += o.chunk_tokens, ++rounds) {
            const int e = std::min(L, b + o.chunk_tokens);
            s.prefill(std::vector<int32_t>(doc.begin() + b, doc.begin() + e));
            for (int t = 0; t < o.summary_tokens; ++t) s.decode();  // forced summary length
            s.prefill({int32_t(rng.below(uint64_t(V)))});         // the action token
          }
        }
        for (int t = 0; t < o.answer_tokens; ++t) s.decode();
        x["rounds"] = rounds;
        x["state_bytes"] = s.state_bytes();
        if (mode == "emr") x["chunk_tokens"] = o.chunk_tokens, x["summary_tokens"] = o.summary_tokens;
        else x["prefill_batch"] = o.prefill_batch;
      }));
    }
  }
  if (!o.train_sizes.empty()) {
    AdamW opt(model.num_params(), AdamWConfig{}, model.ops());
    for (int T : o.train_sizes) {
      note("train " + std::to_string(T));
      auto ids = random_ids(rng, T + 1, V);
      std::vector<int32_t> in(ids.begin(), ids.end() - 1), tg(ids.begin() + 1, ids.end());
      std::vector<float> w(size_t(T), 1.0f);
      add(measure("train " + std::to_string(T), T, o, model, [&](json& x) {
        model.zero_grad();
        x["loss"] = model.forward(in.data(), tg.data(), w.data(), 1, T);
        model.backward();
        opt.step(model.backend_params(), model.grads(), 1e-6f,
                 grad_norm(model.grads(), model.num_params(), 1.0, model.ops()).clip_scale);
      }));
    }
  }
  return out;
}

std::string build_version() { return std::string(SMOOTHREAD_GIT_COMMIT) + " (" + SMOOTHREAD_BUILD_TYPE + ")"; }

json bench_environment(const LanguageModel& model) {
  std::string cpu = "unknown";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  const ModelConfig& c = model.config();
  json env = {{"commit", SMOOTHREAD_GIT_COMMIT},
              {"build_type", SMOOTHREAD_BUILD_TYPE},
              {"cpu", cpu},
              {"threads", omp_get_max_threads()},
              {"blas_kernels", cpu::blas_kernels()},
              {"device", model.on_device() ? "cuda" : "cpu"},
              {"gpu", model.on_device() ? json(cuda::device_summary()) : json(nullptr)},
              {"model", {{"model_type", c.model_type}, {"params", c.num_parameters()}, {"layers", c.num_layers},
                         {"hidden_size", c.hidden_size}, {"config", c.to_json()}}}};
  if (model.on_device()) env["gemm_precision"] = cuda::gemm_precision();
  return env;
}

std::string format_bench(const json& env, const std::vector<BenchResult>& rows, const std::string& format) {
  std::ostringstream s;
  auto mib = [](size_t b) { return double(b) / (1024.0 * 1024.0); };
  char buf[512];
  if (format == "json") {
    json r = json::array();
    for (auto& x : rows) r.push_back(x.to_json());
    return json{{"environment", env}, {"results", r}}.dump(2) + "\n";
  }
  const std::string model = env["model"]["model_type"].get<std::string>() + " " +
                            std::to_string(env["model"]["params"].get<int64_t>() / 1000000) + "M";
  if (format == "csv") {
    s << "commit,build_type,cpu,gpu,threads,device,model,params,test,tokens,reps,mean_s,std_s,tokens_per_s,"
         "tokens_per_s_std,peak_rss_mib,peak_device_mib,rounds\n";
    for (auto& x : rows) {
      std::snprintf(buf, sizeof buf, "%s,%s,\"%s\",\"%s\",%d,%s,%s,%lld,%s,%lld,%zu,%.6f,%.6f,%.3f,%.3f,%.1f,%.1f,%s\n",
                    env["commit"].get<std::string>().c_str(), env["build_type"].get<std::string>().c_str(),
                    env["cpu"].get<std::string>().c_str(), env["gpu"].is_null() ? "" : env["gpu"].get<std::string>().c_str(),
                    env["threads"].get<int>(), env["device"].get<std::string>().c_str(),
                    env["model"]["model_type"].get<std::string>().c_str(), (long long)env["model"]["params"].get<int64_t>(),
                    x.test.c_str(), (long long)x.tokens, x.seconds.size(), x.mean_s, x.std_s, x.tokens_per_s,
                    x.tokens_per_s_std, mib(x.peak_rss_bytes), mib(x.peak_device_bytes),
                    x.extra.contains("rounds") ? std::to_string(x.extra["rounds"].get<int>()).c_str() : "");
      s << buf;
    }
    return s.str();
  }
  if (format != "md") fail("--format", "expected md, csv or json, got '" + format + "'");
  s << "commit " << env["commit"].get<std::string>() << " (" << env["build_type"].get<std::string>() << "), CPU "
    << env["cpu"].get<std::string>() << ", " << env["threads"].get<int>() << " threads";
  if (env.contains("blas_kernels")) s << ", OpenBLAS " << env["blas_kernels"].get<std::string>() << " kernels";
  if (!env["gpu"].is_null()) s << ", GPU " << env["gpu"].get<std::string>();
  s << "\n\n| model | device | test | tokens/s | time (s) | peak RSS MiB | peak GPU MiB | rounds |\n"
       "|---|---|---|---:|---:|---:|---:|---:|\n";
  for (auto& x : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %s | %s | %.1f ± %.1f | %.4f ± %.4f | %.0f | %s | %s |\n", model.c_str(),
                  env["device"].get<std::string>().c_str(), x.test.c_str(), x.tokens_per_s, x.tokens_per_s_std, x.mean_s,
                  x.std_s, mib(x.peak_rss_bytes),
                  x.peak_device_bytes ? std::to_string(int64_t(mib(x.peak_device_bytes))).c_str() : "—",
                  x.extra.contains("rounds") ? std::to_string(x.extra["rounds"].get<int>()).c_str() : "");
    s << buf;
  }
  return s.str();
}

}  // namespace sr
