// JSONL training data. One sample per line, any of:
//   {"ids": [..], "weights": [..]}        token ids; optional per-token loss weights (default 1)
//   {"text": "..."}                       whole text trained on (weight 1), then <|endoftext|>
//   {"prompt": "...", "completion": "..."} rendered as prompt + completion + <|endoftext|>; loss
//                                          weight `prompt_weight` (default 0) on prompt tokens, 1 after
//   {"query","chunks","summaries","actions","answer"}  a Smooth Reading trajectory, rendered in the
//                                          EMR layout with protocol.md's SFT masks (reading/protocol.h);
//                                          `chunk_weight` (default 0) on chunk text
// The weight of token t is the weight of predicting it (from position t-1).
// Batches: `batch_size` samples in a seeded per-epoch shuffled order, cut to seq_len+1 tokens,
// padded to the longest sample in the batch (padding carries no loss). The cursor (epoch, index)
// and the RNG are part of checkpoints.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/tokenizer.h"

namespace sr {

struct Sample {
  std::vector<int32_t> ids;
  std::vector<float> weights;  // same length as ids
};

struct Batch {
  int B = 0, T = 0;
  std::vector<int32_t> inputs, targets;  // [B,T]; target -1 = no loss
  std::vector<float> weights;            // [B,T]
  int64_t tokens = 0;                    // non-padding input tokens
};

// Parses a JSONL file; errors name "file:line" and the field.
std::vector<Sample> load_jsonl_samples(const std::string& path, const Tokenizer* tok, float prompt_weight = 0.0f,
                                       float chunk_weight = 0.0f);

class DataLoader {
 public:
  // group_by_length: batches of similar-length samples (less padding), still in seeded random order.
  DataLoader(std::vector<Sample> samples, int batch_size, int seq_len, uint64_t seed, bool group_by_length = false);
  Batch next();
  struct Cursor {
    int64_t epoch = 0, index = 0;
    std::array<uint64_t, 4> rng{};
  };
  Cursor cursor() const { return {epoch_, index_, epoch_rng_}; }
  void set_cursor(const Cursor& c);
  size_t size() const { return samples_.size(); }
  // Mean tokens a sample contributes to a batch (its length - 1, capped at seq_len).
  double mean_trained_tokens() const;

 private:
  void shuffle();
  std::vector<Sample> samples_;
  std::vector<size_t> order_;
  int batch_size_, seq_len_;
  Rng rng_;
  bool group_by_length_ = false;
  std::array<uint64_t, 4> epoch_rng_{};  // RNG state at the start of the current epoch's shuffle
  int64_t epoch_ = 0, index_ = 0;
};

}  // namespace sr
