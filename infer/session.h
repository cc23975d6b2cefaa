// Streaming inference over one sequence: prefill in pieces of any size, decode token by token,
// snapshot/restore the whole state (KV caches, last logits, sampler RNG) bitwise, save/load it.
// Sliding-window layers keep a W-row ring buffer, so an all-SWA model reads any length in
// constant memory; full-attention layers grow with the sequence.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "models/language_model.h"

namespace sr {

class Session {
 public:
  struct State {
    std::vector<LayerKVCache> caches;
    std::vector<float> logits;  // [V] logits after the last fed token (empty before any)
    std::array<uint64_t, 4> rng{};
    bool operator==(const State& o) const = default;
  };

  explicit Session(const LanguageModel& model, SamplingParams sampling = {});

  // Feeds tokens; returns the logits after the last one. all_logits (optional) gets [n, V].
  // Long inputs go through the model in pieces of at most prefill_batch() tokens (chunked prefill
  // into the existing cache), so activation memory stays bounded by the piece, not the input.
  const std::vector<float>& prefill(const std::vector<int32_t>& ids, std::vector<float>* all_logits = nullptr);
  // Picks the next token from the current logits (does not feed it).
  int32_t sample();
  // sample() then feed the token; returns it.
  int32_t decode();
  // Decodes up to max_tokens, stopping after `stop_id` (when >= 0). Returns the new tokens.
  std::vector<int32_t> generate(int max_tokens, int32_t stop_id = -1);

  int64_t position() const { return state_.caches.empty() ? 0 : state_.caches[0].n_seen; }
  const std::vector<float>& logits() const { return state_.logits; }
  size_t state_bytes() const;  // bytes held by the caches
  static constexpr int kDefaultPrefillBatch = 8192;
  int prefill_batch() const { return prefill_batch_; }
  void set_prefill_batch(int tokens);  // >= 1

  State snapshot() const { return state_; }
  void restore(const State& s);
  void save_state(const std::string& path) const;  // binary, atomic
  void load_state(const std::string& path);

 private:
  const LanguageModel& model_;
  SamplingParams sampling_;
  Rng rng_;
  State state_;
  int prefill_batch_ = kDefaultPrefillBatch;
};

}  // namespace sr
