#include "models/model_dir.h"

#include <filesystem>
#include <iostream>
#include <set>

#include "core/error.h"
#include "models/safetensors.h"

namespace sr {

ModelConfig load_model_config(const std::string& dir) {
  if (!is_directory(dir)) fail(dir, "model directory not found");
  std::string cfg = join_path(dir, "config.json");
  if (!path_exists(cfg)) fail(cfg, "missing config.json");
  return ModelConfig::from_json(load_json_file(cfg), cfg);
}

void load_weights(LanguageModel& model, const std::string& dir) {
  SafeTensorsSet set(dir);
  const std::string& prefix = model.config().weight_prefix;  // e.g. Qwen3.5's "model.language_model."
  std::set<std::string> used;
  for (const ParamSpec& s : model.param_specs()) {
    const SafeTensorsFile* f = nullptr;
    const std::string name = !prefix.empty() && s.name.rfind("model.", 0) == 0 ? prefix + s.name.substr(6) : s.name;
    const TensorInfo* ti = set.find(name, &f);
    if (!ti) fail(dir, "missing tensor '" + name + "' required by config.json");
    if (ti->shape != s.shape)
      fail(f->path() + ": tensor '" + name + "'", "shape " + shape_str(ti->shape) + " does not match config.json, which implies " + shape_str(s.shape));
    f->read_f32(name, model.params() + s.offset, size_t(shape_numel(s.shape)));
    used.insert(name);
  }
  model.upload_params();
  // Tensors the architecture does not use: a vision tower or multi-token-prediction head is
  // expected in Qwen3.5 files; anything else may be a layout we do not understand, so say so.
  size_t skipped = 0;
  std::string example;
  for (const std::string& n : set.names()) {
    if (used.count(n) || n.rfind("model.visual.", 0) == 0 || n.rfind("mtp.", 0) == 0) continue;
    if (skipped++ == 0) example = n;
  }
  if (skipped)
    std::cerr << "warning: " << dir << ": " << skipped << " tensor(s) in the checkpoint are not used by this "
              << model.config().model_type << " model (e.g. '" << example << "')\n";
}

LoadedModel load_model_dir(const std::string& dir, bool require_tokenizer) {
  return load_model_dir(dir, require_tokenizer, LoadOptions{});
}

LoadedModel load_model_dir(const std::string& dir, bool require_tokenizer, const LoadOptions& opt) {
  LoadedModel m;
  m.dir = dir;
  ModelConfig cfg = load_model_config(dir);
  if (opt.window >= 0) cfg.set_window(opt.window, opt.swa_layers, "--window/--swa-layers");
  m.model = make_model(cfg);
  load_weights(*m.model, dir);
  std::string tok = join_path(dir, "tokenizer.json");
  if (!path_exists(tok) && path_exists(join_path(dir, kRwkvWorldVocab))) tok = join_path(dir, kRwkvWorldVocab);
  if (path_exists(tok)) {
    m.tokenizer = Tokenizer::load(tok);
    if (m.tokenizer->vocab_size() > cfg.vocab_size)
      fail(tok, "tokenizer has " + std::to_string(m.tokenizer->vocab_size()) + " tokens but config.json vocab_size is " + std::to_string(cfg.vocab_size));
  } else if (require_tokenizer) {
    fail(tok, "missing tokenizer.json");
  }
  std::string rc = join_path(dir, "smoothread.json");
  if (path_exists(rc)) m.reading_config = load_json_file(rc);
  return m;
}

void save_model_dir(const LanguageModel& model, const Tokenizer* tokenizer, const std::string& dir) {
  make_dirs(dir);
  model.sync_params_to_host();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParamSpec& s : model.param_specs())
    tensors.emplace_back(s.name, Tensor::borrow(const_cast<float*>(model.params()) + s.offset, s.shape));
  write_safetensors(join_path(dir, "model.safetensors"), tensors, {{"format", "pt"}});
  write_file_atomic(join_path(dir, "config.json"), model.config().to_json().dump(2) + "\n");
  if (tokenizer) write_file_atomic(join_path(dir, "tokenizer.json"), tokenizer->to_json().dump(2) + "\n");
}

void write_new_dir(const std::string& out, const std::function<void(const std::string& tmp)>& fill) {
  namespace fs = std::filesystem;
  if (path_exists(out)) fail(out, "already exists (convert writes a new directory)");
  const std::string tmp = out + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  make_dirs(tmp);
  try {
    fill(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::rename(tmp, out, ec);
  if (ec) fail(out, "cannot move " + tmp + " into place: " + ec.message());
}

ModelConfig convert_model_dir(const std::string& dir, const std::string& out, const LoadOptions& opt) {
  namespace fs = std::filesystem;
  ModelConfig cfg = load_model_config(dir);
  if (opt.window >= 0) cfg.set_window(opt.window, opt.swa_layers, "--window/--swa-layers");
  json j = load_json_file(join_path(dir, "config.json"));
  ModelConfig::set_window_json(j, cfg);
  write_new_dir(out, [&](const std::string& tmp) {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir)) {
      if (!e.is_regular_file() || e.path().filename() == "config.json") continue;
      fs::copy_file(e.path(), fs::path(tmp) / e.path().filename(), ec);
      if (ec) fail(e.path().string(), "cannot copy: " + ec.message());
    }
    write_file_atomic(join_path(tmp, "config.json"), j.dump(2) + "\n");
  });
  return cfg;
}

}  // namespace sr
