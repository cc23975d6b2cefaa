// The training loop behind `smoothread train --config train.json`.
// train.json fields (all but data/out_dir optional):
//   "model": {HF config.json fields} | "init_from": "DIR"   architecture (+ weights) to start from
//   "tokenizer": "byte" | "PATH"     (default "byte": smoothread's byte-level tokenizer)
//   "data": "FILE.jsonl", "out_dir": "DIR", "prompt_weight": 0, "chunk_weight": 0
//   "seq_len", "batch_size", "grad_accum", "steps", "lr", "min_lr", "warmup_steps",
//   "weight_decay", "beta1", "beta2", "eps", "grad_clip", "seed", "log_every",
//   "checkpoint_every", "group_by_length" (default false; less padding for mixed lengths), "max_seconds" (stop early, with a checkpoint, after this wall time)
//   "device": "cpu" (default) | "cuda" | "ref"   backend the model trains on (`--device` overrides)
//   "recompute": false   activation recomputation per layer (long sequences in less memory)
//   "logits_chunk_mib": 0    the LM head runs over chunks of rows whose logits take this many MiB in
//                        fp32 (larger: fewer passes accumulating its weight gradient, more memory;
//                        0 = the model's default: 512 on the CPU, 2048 on the GPU)
//   "tokens": N          a token budget instead of "steps": steps = ceil(N / (batch_size * grad_accum *
//                        the data's mean trained tokens per sample)), so runs on different data
//                        (EMR trajectories vs one-pass samples) train on the same number of tokens
// Checkpoint = out_dir/checkpoint/: the model directory files + optimizer.safetensors (AdamW m, v)
// + trainer_state.json (step, data cursor, RNG); replaced atomically (write aside, then rename).
// The final model goes to out_dir/model/. Resuming continues bit-for-bit on CPU.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "core/io.h"
#include "models/tokenizer.h"
#include "models/language_model.h"
#include "train/adamw.h"
#include "train/data_loader.h"

namespace sr {

struct TrainConfig {
  json model_config;  // HF config fields (when not init_from)
  std::string init_from, tokenizer = "byte", data, out_dir, device = "cpu";
  int seq_len = 256, batch_size = 8, grad_accum = 1;
  int64_t logits_chunk_mib = 0;  // 0: the model's default for its backend
  int64_t steps = 1000, tokens = 0, warmup_steps = 50, log_every = 10, checkpoint_every = 0;
  float lr = 1e-3f, min_lr = 1e-4f, weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, grad_clip = 1.0f;
  float prompt_weight = 0.0f, chunk_weight = 0.0f;
  bool group_by_length = false, recompute = false;
  double max_seconds = 0;
  uint64_t seed = 0;
  json source;  // the parsed file, saved into checkpoints

  static TrainConfig from_json(const json& j, const std::string& where);
};

class Trainer {
 public:
  explicit Trainer(const TrainConfig& cfg);
  // Runs to cfg.steps (or max_seconds, or `stop_after` steps when > 0, as an interruption would);
  // on_log gets one JSON object per logged step. Always ends with a checkpoint.
  void run(const std::function<void(const json&)>& on_log, bool resume = false, int64_t stop_after = 0);
  LanguageModel& model() { return *model_; }
  int64_t step() const { return step_; }
  int64_t steps() const { return cfg_.steps; }  // after a "tokens" budget is resolved
  void save_checkpoint(const std::string& dir);
  void load_checkpoint(const std::string& dir);

 private:
  TrainConfig cfg_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<DataLoader> loader_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;  // training tokens (unpadded) over all steps, resumed from the checkpoint
};

}  // namespace sr
