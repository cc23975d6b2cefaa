// Minimal `--flag value` / `--switch` parser for the CLI subcommands; unknown flags are errors.
#pragma once
#include <omp.h>

#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/model_dir.h"
#include "models/transformer.h"
#include "ops/ops.h"

namespace sr::cli {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: flags without one.
  Args(int argc, char** argv, int first, const std::set<std::string>& valued, const std::set<std::string>& switches) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (valued.count(a)) {
        if (i + 1 >= argc) fail(a, "needs a value");
        vals_[a] = argv[++i];
      } else if (switches.count(a)) {
        sw_.insert(a);
      } else {
        fail(a, "unknown option (see --help)");
      }
    }
  }
  bool has(const std::string& k) const { return vals_.count(k) || sw_.count(k); }
  std::string get(const std::string& k) const {
    auto it = vals_.find(k);
    if (it == vals_.end()) fail(k, "is required");
    return it->second;
  }
  std::string get_or(const std::string& k, const std::string& d) const { return vals_.count(k) ? vals_.at(k) : d; }
  long long get_int(const std::string& k, long long d) const {
    if (!vals_.count(k)) return d;
    try {
      size_t pos;
      long long v = std::stoll(vals_.at(k), &pos);
      if (pos != vals_.at(k).size()) throw std::invalid_argument("");
      return v;
    } catch (...) {
      fail(k, "expected an integer, got '" + vals_.at(k) + "'");
    }
  }
  double get_num(const std::string& k, double d) const {
    if (!vals_.count(k)) return d;
    try {
      size_t pos;
      double v = std::stod(vals_.at(k), &pos);
      if (pos != vals_.at(k).size()) throw std::invalid_argument("");
      return v;
    } catch (...) {
      fail(k, "expected a number, got '" + vals_.at(k) + "'");
    }
  }

 private:
  std::map<std::string, std::string> vals_;
  std::set<std::string> sw_;
};

// Prints `usage` and returns true when --help / -h is among the subcommand's arguments.
inline bool wants_help(int argc, char** argv, const char* usage) {
  for (int i = 2; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::cout << usage;
      return true;
    }
  return false;
}

// Applies --threads N (0 = OpenMP default).
// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t b = 0, e; b <= s.size(); b = e + 1) {
    e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
  }
  return out;
}

inline void set_threads(const Args& a) {
  long long t = a.get_int("--threads", 0);
  if (t < 0) fail("--threads", "must be >= 0");
  if (t > 0) omp_set_num_threads(int(t));
}

// Applies --device cpu|cuda|ref (default cpu): moves the model's parameters to that backend.
// The model directory of --model, with --window W / --swa-layers SPEC applied to its config.
inline LoadedModel load_model(const Args& a, bool require_tokenizer) {
  LoadOptions o;
  o.window = int(a.get_int("--window", -1));
  if (a.has("--window") && o.window < 0) fail("--window", "must be >= 0 (0 = full attention)");
  o.swa_layers = a.get_or("--swa-layers", "all");
  if (a.has("--swa-layers") && !a.has("--window")) fail("--swa-layers", "needs --window W");
  return load_model_dir(a.get("--model"), require_tokenizer, o);
}

// ... and --decode-weights fp32|bf16 (the weights decode steps read; inference commands only).
inline void place_model(const Args& a, LanguageModel& m) {
  const OpsTable& ops = ops_for_device(a.get_or("--device", "cpu"));
  if (&ops != &m.ops()) m.set_ops(&ops);
  if (a.has("--decode-weights")) m.set_decode_weights(a.get("--decode-weights"));
}

}  // namespace sr::cli
