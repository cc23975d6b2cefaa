#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace sr {

int32_t sample_token(const float* logits, int V, const SamplingParams& p, Rng& rng) {
  if (p.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // Stable order: by logit descending, then id ascending, so sampling is reproducible.
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
  std::vector<double> prob(k);
  double mx = logits[idx[0]] / p.temperature, sum = 0;
  for (int i = 0; i < k; ++i) sum += prob[i] = std::exp(logits[idx[i]] / p.temperature - mx);
  int keep = k;
  if (p.top_p < 1.0f) {
    double c = 0;
    for (int i = 0; i < k; ++i) {
      c += prob[i] / sum;
      if (c >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int i = 0; i < keep; ++i) total += prob[i];
  double r = rng.uniform_double() * total;
  for (int i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace sr
