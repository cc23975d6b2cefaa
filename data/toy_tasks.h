// Small built-in tasks for smoke training and tests (the full synthetic suite is `smoothread gen`'s
// RULER/NIAH family, issue 4). Each sample is {"prompt", "completion"}; deterministic per seed.
//   copy:   "<letters>|"            -> "<letters>"            (needs an induction head)
//   recall: "k1=v1 k2=v2 ...?kj="   -> "vj"                   (key-value lookup in context)
//   repeat: "<words and numbers>. <a gap of up to 2x as many other words>\nRepeat the first
//           sentence: " -> "<the same words and numbers>." (dense long-range copying: builds the
//           induction heads a from-scratch reader needs before it can copy a needle into Clues)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/io.h"

namespace sr {

struct ToyTaskOptions {
  std::string task = "copy";  // copy | recall
  int count = 1000;
  uint64_t seed = 0;
  int min_len = 4, max_len = 12;  // copy: string length; recall: number of pairs; repeat: bytes
};

std::vector<json> make_toy_task(const ToyTaskOptions& o);

}  // namespace sr
