#include "eval/metrics.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace sr {

namespace {
std::string strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n\r\v\f"), e = s.find_last_not_of(" \t\n\r\v\f");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}
std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return s;
}
}  // namespace

std::string ruler_postprocess(const std::string& pred) {
  std::string s = strip(pred);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  return strip(s);
}

double string_match_all(const std::string& pred, const std::vector<std::string>& refs) {
  if (refs.empty()) return 0;
  std::string p = lower(pred);
  int hit = 0;
  for (auto& r : refs) hit += p.find(lower(r)) != std::string::npos;
  return double(hit) / double(refs.size());
}

double string_match_part(const std::string& pred, const std::vector<std::string>& refs) {
  std::string p = lower(pred);
  for (auto& r : refs)
    if (p.find(lower(r)) != std::string::npos) return 1.0;
  return 0.0;
}

ScoreCell summarize(const std::vector<double>& x) {
  ScoreCell c;
  c.n = int(x.size());
  if (x.empty()) return c;
  double s = 0, ss = 0;
  for (double v : x) s += v;
  c.mean = s / c.n;
  for (double v : x) ss += (v - c.mean) * (v - c.mean);
  double sd = c.n > 1 ? std::sqrt(ss / (c.n - 1)) : 0;
  c.ci95 = 100 * 1.96 * sd / std::sqrt(double(c.n));
  c.mean *= 100;
  return c;
}

json score_predictions(const std::string& path, const std::string& metric, int64_t* skipped) {
  if (metric != "all" && metric != "part") fail("--metric", "expected 'all' or 'part'");
  std::map<std::pair<std::string, int64_t>, std::vector<double>> cells;
  struct Eff {  // efficiency sums per cell (when the predictions carry them, as `read --batch` writes)
    double seconds = 0, tokens_read = 0, rounds = 0, early = 0, peak_rss = 0;
    int n = 0;
  };
  std::map<std::pair<std::string, int64_t>, Eff> eff;
  for_each_jsonl(path, [&](json& j, const std::string& where) {
    std::string task = json_str_or(j, "task", "unknown", where);
    std::string pred = ruler_postprocess(json_str(j, "answer", where));
    std::vector<std::string> refs = json_str_list(j, "answers", where);
    int64_t len = json_int_or(j, "length", json_int_or(j, "context_tokens", 0, where), where);
    int64_t bucket = (len + 512) / 1024;  // nearest 1k
    cells[{task, bucket}].push_back(metric == "all" ? string_match_all(pred, refs) : string_match_part(pred, refs));
    if (j.contains("seconds")) {
      Eff& e = eff[{task, bucket}];
      e.seconds += json_num_or(j, "seconds", 0, where), e.tokens_read += json_num_or(j, "tokens_read", 0, where);
      e.rounds += json_num_or(j, "rounds", 0, where), e.early += json_bool_or(j, "stopped_early", false, where);
      e.peak_rss = std::max(e.peak_rss, json_num_or(j, "peak_rss_bytes", 0, where));
      ++e.n;
    }
  }, skipped);
  json rows = json::array();
  std::string md = "| task | length | n | string_match_" + metric +
                   " | 95% CI | s/sample | tokens read | rounds | early stop | peak RSS MB |\n"
                   "|---|---|---|---|---|---|---|---|---|---|\n";
  for (auto& [key, v] : cells) {
    ScoreCell c = summarize(v);
    json row = {{"task", key.first}, {"length_k", key.second}, {"n", c.n}, {"score", std::round(c.mean * 100) / 100},
                {"ci95", c.ci95}};
    char buf[512];
    std::snprintf(buf, sizeof buf, "| %s | %lldk | %d | %.2f | ±%.2f |", key.first.c_str(), (long long)key.second, c.n,
                  c.mean, c.ci95);
    md += buf;
    auto it = eff.find(key);
    if (it != eff.end() && it->second.n > 0) {
      const Eff& e = it->second;
      row["seconds_per_sample"] = e.seconds / e.n, row["tokens_read"] = e.tokens_read / e.n;
      row["rounds"] = e.rounds / e.n, row["early_stop_rate"] = e.early / e.n, row["peak_rss_bytes"] = e.peak_rss;
      std::snprintf(buf, sizeof buf, " %.2f | %.0f | %.1f | %.0f%% | %.1f |\n", e.seconds / e.n, e.tokens_read / e.n,
                    e.rounds / e.n, 100 * e.early / e.n, e.peak_rss / 1e6);
    } else {
      std::snprintf(buf, sizeof buf, " - | - | - | - | - |\n");
    }
    md += buf;
    rows.push_back(row);
  }
  return {{"rows", rows}, {"markdown", md}, {"metric", "string_match_" + metric}};
}

}  // namespace sr
