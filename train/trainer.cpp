#include "train/trainer.h"

#include <cmath>
#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "models/model_dir.h"
#include "models/safetensors.h"

namespace sr {

TrainConfig TrainConfig::from_json(const json& j, const std::string& w) {
  if (!j.is_object()) fail(w, "expected a JSON object");
  TrainConfig c;
  c.source = j;
  if (j.contains("model")) {
    if (!j["model"].is_object()) fail(w + ": field 'model'", "expected an object of config.json fields");
    c.model_config = j["model"];
  }
  c.init_from = json_str_or(j, "init_from", "", w);
  if (c.model_config.is_null() && c.init_from.empty()) fail(w, "need field 'model' (config.json fields) or 'init_from' (model directory)");
  c.tokenizer = json_str_or(j, "tokenizer", "byte", w);
  c.data = json_str(j, "data", w);
  c.out_dir = json_str(j, "out_dir", w);
  c.seq_len = int(json_int_or(j, "seq_len", c.seq_len, w));
  c.batch_size = int(json_int_or(j, "batch_size", c.batch_size, w));
  c.grad_accum = int(json_int_or(j, "grad_accum", c.grad_accum, w));
  c.steps = json_int_or(j, "steps", c.steps, w);
  c.tokens = json_int_or(j, "tokens", 0, w);
  if (j.contains("tokens") && c.tokens <= 0) fail(w + ": field 'tokens'", "must be positive");
  c.warmup_steps = json_int_or(j, "warmup_steps", c.warmup_steps, w);
  c.log_every = json_int_or(j, "log_every", c.log_every, w);
  c.checkpoint_every = json_int_or(j, "checkpoint_every", c.checkpoint_every, w);
  c.lr = float(json_num_or(j, "lr", c.lr, w));
  c.min_lr = float(json_num_or(j, "min_lr", c.lr * 0.1, w));
  c.weight_decay = float(json_num_or(j, "weight_decay", c.weight_decay, w));
  c.beta1 = float(json_num_or(j, "beta1", c.beta1, w));
  c.beta2 = float(json_num_or(j, "beta2", c.beta2, w));
  c.eps = float(json_num_or(j, "eps", c.eps, w));
  c.grad_clip = float(json_num_or(j, "grad_clip", c.grad_clip, w));
  c.prompt_weight = float(json_num_or(j, "prompt_weight", 0.0, w));
  c.chunk_weight = float(json_num_or(j, "chunk_weight", 0.0, w));
  c.group_by_length = json_bool_or(j, "group_by_length", false, w);
  c.max_seconds = json_num_or(j, "max_seconds", 0.0, w);
  c.seed = uint64_t(json_int_or(j, "seed", 0, w));
  c.device = json_str_or(j, "device", "cpu", w);
  c.recompute = json_bool_or(j, "recompute", false, w);
  c.logits_chunk_mib = json_int_or(j, "logits_chunk_mib", c.logits_chunk_mib, w);
  auto pos = [&](const char* f, int64_t v) {
    if (v <= 0) fail(w + ": field '" + f + "'", "must be positive");
  };
  pos("seq_len", c.seq_len), pos("batch_size", c.batch_size), pos("grad_accum", c.grad_accum), pos("steps", c.steps);
  pos("log_every", c.log_every);
  if (c.logits_chunk_mib < 0) fail(w + ": field 'logits_chunk_mib'", "must be 0 (the default) or positive");
  if (c.lr <= 0) fail(w + ": field 'lr'", "must be positive");
  return c;
}

Trainer::Trainer(const TrainConfig& cfg) : cfg_(cfg) {
  if (cfg_.tokenizer == "byte") tok_ = std::make_unique<ByteTokenizer>(ByteTokenizer::default_specials());
  else tok_ = Tokenizer::load(cfg_.tokenizer);
  if (!cfg_.init_from.empty()) {
    ModelConfig mc = load_model_config(cfg_.init_from);
    model_ = make_model(mc);
    load_weights(*model_, cfg_.init_from);
  } else {
    json mj = cfg_.model_config;
    if (!mj.contains("model_type")) mj["model_type"] = "qwen2";
    if (!mj.contains("vocab_size")) mj["vocab_size"] = tok_->vocab_size();
    if (!mj.contains("eos_token_id") && tok_->token_id("<|endoftext|>") >= 0) mj["eos_token_id"] = tok_->token_id("<|endoftext|>");
    ModelConfig mc = ModelConfig::from_json(mj, "train config: field 'model'");
    model_ = make_model(mc);
    model_->init_random(cfg_.seed);
  }
  model_->set_ops(&ops_for_device(cfg_.device));
  model_->set_recompute(cfg_.recompute);
  if (cfg_.logits_chunk_mib > 0) model_->set_logits_chunk_floats(size_t(cfg_.logits_chunk_mib) << 18);
  if (tok_->vocab_size() > model_->config().vocab_size)
    fail("train config: field 'tokenizer'", "tokenizer has more tokens than the model's vocab_size");
  opt_ = std::make_unique<AdamW>(model_->num_params(), AdamWConfig{cfg_.lr, cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay},
                                 model_->ops());
  std::vector<uint8_t> decay_mask(model_->num_params(), 1);
  for (auto& s : model_->param_specs()) {  // decay matrices only (BlinkDL's rule): not norms, biases, mixes
    int dims = 0;
    for (int64_t d : s.shape) dims += d > 1;
    bool nodecay = dims < 2 || s.name.find(".weight") == std::string::npos;
    if (nodecay) std::fill(decay_mask.begin() + s.offset, decay_mask.begin() + s.offset + shape_numel(s.shape), 0);
  }
  opt_->set_decay_mask(decay_mask);
  loader_ = std::make_unique<DataLoader>(load_jsonl_samples(cfg_.data, tok_.get(), cfg_.prompt_weight, cfg_.chunk_weight), cfg_.batch_size,
                                         cfg_.seq_len, cfg_.seed, cfg_.group_by_length);
  if (cfg_.tokens > 0) {
    double per_step = double(cfg_.batch_size) * cfg_.grad_accum * loader_->mean_trained_tokens();
    cfg_.steps = std::max<int64_t>(1, int64_t(std::ceil(double(cfg_.tokens) / per_step)));
  }
}

void Trainer::save_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::string tmp = dir + ".tmp", old = dir + ".old";
  fs::remove_all(tmp);
  save_model_dir(*model_, tok_.get(), tmp);
  size_t n = model_->num_params();
  std::vector<float> m = opt_->m_host(), v = opt_->v_host();
  write_safetensors(join_path(tmp, "optimizer.safetensors"),
                    {{"adamw.m", Tensor::borrow(m.data(), {int64_t(n)})}, {"adamw.v", Tensor::borrow(v.data(), {int64_t(n)})}});
  auto cur = loader_->cursor();
  json st = {{"step", step_},
             {"tokens_seen", tokens_seen_},
             {"adamw_t", opt_->t()},
             {"data_epoch", cur.epoch},
             {"data_index", cur.index},
             {"data_rng", cur.rng},
             {"train_config", cfg_.source}};
  write_file_atomic(join_path(tmp, "trainer_state.json"), st.dump(2) + "\n");
  // Swap in: the previous checkpoint survives until the new one is complete.
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

void Trainer::load_checkpoint(const std::string& dir) {
  std::string sp = join_path(dir, "trainer_state.json");
  if (!path_exists(sp)) fail(dir, "not a checkpoint (no trainer_state.json)");
  json st = load_json_file(sp);
  ModelConfig mc = load_model_config(dir);
  if (mc.to_json() != model_->config().to_json()) fail(join_path(dir, "config.json"), "checkpoint model differs from the train config's model");
  load_weights(*model_, dir);
  SafeTensorsFile opt(join_path(dir, "optimizer.safetensors"));
  std::vector<float> m(model_->num_params()), v(model_->num_params());
  opt.read_f32("adamw.m", m.data(), m.size());
  opt.read_f32("adamw.v", v.data(), v.size());
  opt_->set_moments(m, v);
  opt_->set_t(json_int(st, "adamw_t", sp));
  step_ = json_int(st, "step", sp);
  tokens_seen_ = json_int_or(st, "tokens_seen", 0, sp);  // absent in older checkpoints
  DataLoader::Cursor c;
  c.epoch = json_int(st, "data_epoch", sp);
  c.index = json_int(st, "data_index", sp);
  if (!st.contains("data_rng") || !st["data_rng"].is_array() || st["data_rng"].size() != 4) fail(sp + ": field 'data_rng'", "expected 4 integers");
  for (int i = 0; i < 4; ++i) c.rng[i] = st["data_rng"][i].get<uint64_t>();
  loader_->set_cursor(c);
}

void Trainer::run(const std::function<void(const json&)>& on_log, bool resume, int64_t stop_after) {
  using clock = std::chrono::steady_clock;
  std::string ckpt = join_path(cfg_.out_dir, "checkpoint");
  make_dirs(cfg_.out_dir);
  if (resume) load_checkpoint(ckpt);
  auto t0 = clock::now(), tlog = t0;
  int64_t tokens_since_log = 0;
  bool stopped_early = false;
  while (step_ < cfg_.steps) {
    model_->zero_grad();
    double loss = 0;
    for (int a = 0; a < cfg_.grad_accum; ++a) {
      Batch b = loader_->next();
      loss += model_->forward_backward(b.inputs.data(), b.targets.data(), b.weights.data(), b.B, b.T,
                                       1.0f / float(cfg_.grad_accum)) /
              cfg_.grad_accum;
      tokens_since_log += b.tokens;
      tokens_seen_ += b.tokens;
    }
    const GradNorm gn = grad_norm(model_->grads(), model_->num_params(), cfg_.grad_clip, model_->ops());
    const double norm = gn.norm;
    float lr = lr_at(step_, cfg_.warmup_steps, cfg_.steps, cfg_.lr, cfg_.min_lr);
    opt_->step(model_->backend_params(), model_->grads(), lr, gn.clip_scale);  // clipping folded into the update
    ++step_;
    double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    stopped_early = ((cfg_.max_seconds > 0 && elapsed >= cfg_.max_seconds) || (stop_after > 0 && step_ >= stop_after)) &&
                    step_ < cfg_.steps;
    if (step_ % cfg_.log_every == 0 || step_ == cfg_.steps || stopped_early) {
      double dt = std::chrono::duration<double>(clock::now() - tlog).count();
      on_log({{"step", step_}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
              {"tokens_per_s", dt > 0 ? double(tokens_since_log) / dt : 0.0}, {"tokens", tokens_seen_},
              {"elapsed_s", elapsed}});
      tlog = clock::now();
      tokens_since_log = 0;
    }
    if (cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) save_checkpoint(ckpt);
    if (stopped_early) break;
  }
  save_checkpoint(ckpt);
  save_model_dir(*model_, tok_.get(), join_path(cfg_.out_dir, "model"));
}

}  // namespace sr
