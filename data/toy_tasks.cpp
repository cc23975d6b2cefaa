#include "data/toy_tasks.h"

#include "core/error.h"
#include "core/rng.h"

namespace sr {

std::vector<json> make_toy_task(const ToyTaskOptions& o) {
  if (o.task != "copy" && o.task != "recall") fail("--task", "unknown toy task '" + o.task + "' (copy, recall)");
  if (o.min_len < 1 || o.max_len < o.min_len) fail("--min-len/--max-len", "need 1 <= min <= max");
  Rng rng(o.seed);
  std::vector<json> out;
  for (int i = 0; i < o.count; ++i) {
    int len = o.min_len + int(rng.below(uint64_t(o.max_len - o.min_len + 1)));
    std::string prompt, completion;
    if (o.task == "copy") {
      for (int k = 0; k < len; ++k) completion.push_back(char('a' + rng.below(26)));
      prompt = completion + "|";
    } else {
      std::vector<std::string> keys;
      std::vector<char> vals;
      while (int(keys.size()) < len) {
        std::string k = {char('a' + rng.below(26)), char('a' + rng.below(26))};
        bool dup = false;
        for (auto& e : keys) dup |= e == k;
        if (dup) continue;
        keys.push_back(k);
        vals.push_back(char('0' + rng.below(10)));
      }
      for (int k = 0; k < len; ++k) prompt += keys[k] + "=" + vals[k] + " ";
      int q = int(rng.below(uint64_t(len)));
      prompt += "?" + keys[q] + "=";
      completion = std::string(1, vals[q]);
    }
    out.push_back({{"id", o.task + "-" + std::to_string(o.seed) + "-" + std::to_string(i)},
                   {"prompt", prompt},
                   {"completion", completion}});
  }
  return out;
}

}  // namespace sr
