#include "data/toy_tasks.h"

#include "core/error.h"
#include "core/rng.h"

namespace sr {

std::vector<json> make_toy_task(const ToyTaskOptions& o) {
  if (o.task != "copy" && o.task != "recall" && o.task != "repeat")
    fail("--task", "unknown toy task '" + o.task + "' (copy, recall, repeat)");
  if (o.min_len < 1 || o.max_len < o.min_len) fail("--min-len/--max-len", "need 1 <= min <= max");
  Rng rng(o.seed);
  std::vector<json> out;
  for (int i = 0; i < o.count; ++i) {
    int len = o.min_len + int(rng.below(uint64_t(o.max_len - o.min_len + 1)));
    std::string prompt, completion;
    if (o.task == "repeat") {  // words and numbers, a gap of other words, then the same text again
      auto word = [&] {
        std::string w;
        if (rng.below(3) == 0) {
          int n = 1 + int(rng.below(9));
          for (int k = 0; k < n; ++k) w.push_back(char('0' + rng.below(10)));
        } else {
          int n = 2 + int(rng.below(7));
          for (int k = 0; k < n; ++k) w.push_back(char('a' + rng.below(26)));
          if (rng.below(5) == 0) w[0] = char(w[0] - 'a' + 'A');
        }
        return w;
      };
      std::string text, gap;
      while (int(text.size()) < len) {
        if (!text.empty()) text.push_back(' ');
        text += word();
      }
      const int gap_len = int(rng.below(uint64_t(2 * len + 1)));
      while (int(gap.size()) < gap_len) {
        gap.push_back(' ');
        gap += word();
      }
      prompt = text + "." + gap + "\nRepeat the first sentence: ";
      completion = text + ".";
    } else if (o.task == "copy") {
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
