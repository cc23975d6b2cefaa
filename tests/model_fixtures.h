// Tiny in-process model configs for the model-level tests (no files, no downloads).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

#include "models/config.h"

namespace sr::test {

// layers: string of 'f' (full) / 's' (sliding) / 'l' (linear_attention = Gated DeltaNet) per layer.
inline ModelConfig tiny_config(const std::string& layers = "fs", int window = 5, int Hq = 4, int Hkv = 2) {
  ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 23;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = int(layers.size());
  c.num_heads = Hq;
  c.num_kv_heads = Hkv;
  c.head_dim = 4;
  c.rope_theta = 10000.f;
  c.sliding_window = window;
  for (char ch : layers) c.layer_sliding.push_back(ch == 's'), c.layer_linear.push_back(ch == 'l');
  if (!c.any_sliding()) c.sliding_window = 0;
  if (c.any_linear()) {
    c.linear_num_key_heads = 1, c.linear_num_value_heads = 2, c.linear_key_head_dim = 4, c.linear_value_head_dim = 3;
    c.linear_conv_kernel_dim = 4;
  } else {
    c.layer_linear.clear();
  }
  c.eos_token_id = 0;
  return c;
}

inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("smoothread_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace sr::test
