// Next-token sampling: greedy (temperature 0), or temperature + top-k + top-p with a seeded RNG.
#pragma once
#include <cstdint>

#include "core/rng.h"

namespace sr {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax, ties -> lowest id)
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  uint64_t seed = 0;
};

int32_t sample_token(const float* logits, int V, const SamplingParams& p, Rng& rng);

}  // namespace sr
