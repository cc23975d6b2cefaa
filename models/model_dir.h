// A model directory in Hugging Face layout:
//   config.json                   (models/config.h)
//   model.safetensors | model.safetensors.index.json + shards
//   tokenizer.json                (models/tokenizer.h)
//   smoothread.json               optional reading config (reading runtime)
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "models/tokenizer.h"
#include "models/language_model.h"

namespace sr {

struct LoadedModel {
  std::string dir;
  std::unique_ptr<LanguageModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.json
  json reading_config;                   // contents of smoothread.json, or null
};

ModelConfig load_model_config(const std::string& dir);
// Loads config + weights (+ tokenizer when present). Errors name the file and field/tensor.
LoadedModel load_model_dir(const std::string& dir, bool require_tokenizer = false);
// Changes applied to config.json before the model is built.
struct LoadOptions {
  int window = -1;                  // >= 0: ModelConfig::set_window(window, swa_layers)
  std::string swa_layers = "all";
};
LoadedModel load_model_dir(const std::string& dir, bool require_tokenizer, const LoadOptions& opt);
// Copies a model directory to `out` (which must not exist) with the window change of `opt` written
// into its config.json (every other field kept); weights and other files are copied as they are.
// Returns the new config.
ModelConfig convert_model_dir(const std::string& dir, const std::string& out, const LoadOptions& opt);
// Reads weights from `dir` into an existing model whose config matches.
void load_weights(LanguageModel& model, const std::string& dir);
// Creates the new directory `out` (which must not exist) atomically: `fill` writes its files into
// a temporary sibling, which is renamed to `out` only when fill returns (removed if it throws).
void write_new_dir(const std::string& out, const std::function<void(const std::string& tmp)>& fill);
// Writes config.json, model.safetensors and tokenizer.json (when given) into `dir`, each atomically.
void save_model_dir(const LanguageModel& model, const Tokenizer* tokenizer, const std::string& dir);

}  // namespace sr
