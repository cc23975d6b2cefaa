// Model hyper-parameters, read from / written to a Hugging Face `config.json`.
// Supported model_type: "qwen2" (q/k/v bias), "llama" and "mistral" (bias from `attention_bias`),
// "qwen3" (q/k norms), "qwen3_5_text" / "qwen3_5" (its text_config) / "qwen3_next" with dense MLPs
// (Gated DeltaNet + gated attention hybrids: q/k norms, output gate, partial rotary, zero-centred norms),
// and "rwkv7" (also "rwkv7_fla"): RWKV-7 in the fla-hub layout (models/rwkv7.h), sized by
// hidden_size, num_hidden_layers, head_dim, intermediate_size and the *_low_rank_dim fields.
// Per-layer mixer comes from `layer_types` when present ("full_attention", "sliding_attention", or
// "linear_attention" = a Gated DeltaNet layer in the Qwen3.5 layout, sized by the linear_* fields
// as Qwen3-Next/Qwen3.5 name them); otherwise it is derived exactly
// as transformers' Qwen2Config does it:
//   sliding_window := use_sliding_window ? sliding_window : null
//   layer i is "sliding_attention" iff sliding_window != null and i >= max_window_layers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/io.h"

namespace sr {

struct ModelConfig {
  std::string model_type = "qwen2";
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // defaults to hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  bool tie_word_embeddings = false;
  bool attention_bias = true;  // q/k/v bias (always true for qwen2)
  int sliding_window = 0;      // W (keys including self) for sliding layers; 0 = none
  std::vector<bool> layer_sliding;  // per layer: true = sliding_attention
  std::vector<bool> layer_linear;   // per layer: true = linear_attention (Gated DeltaNet)
  // Gated DeltaNet dims (used when any layer is linear_attention)
  int linear_num_key_heads = 0, linear_num_value_heads = 0, linear_key_head_dim = 0, linear_value_head_dim = 0;
  int linear_conv_kernel_dim = 4;
  // RWKV-7 (model_type "rwkv7"): LoRA ranks of the decay, in-context learning rate, value residual
  // and output gate; LayerNorm eps (GroupNorm eps = head_dim * norm_eps)
  int rwkv_decay_rank = 0, rwkv_a_rank = 0, rwkv_v_rank = 0, rwkv_gate_rank = 0;
  double norm_eps = 1e-5;
  // Qwen3 / Qwen3.5 / Qwen3-Next attention: per-head q/k RMSNorm, a sigmoid output gate (q_proj
  // doubled per head: [q | gate]), RoPE on the first rotary_dim dims only (0 = all), and RMSNorms
  // whose weight is zero-centred (scale 1 + w). weight_prefix: where the text model's tensors live
  // in the checkpoint (Qwen3.5's multimodal files: "model.language_model." instead of "model.").
  bool qk_norm = false, attn_output_gate = false, zero_centered_norm = false;
  int rotary_dim = 0;
  std::string weight_prefix;
  int max_position_embeddings = 32768;
  int bos_token_id = -1, eos_token_id = -1;

  int window_of(int layer) const { return layer_sliding[layer] ? sliding_window : 0; }
  bool is_linear(int layer) const { return !layer_linear.empty() && layer_linear[layer]; }
  bool any_linear() const;
  bool is_rwkv7() const { return model_type == "rwkv7"; }
  int rotary() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  // "full_attention" | "sliding_attention" | "linear_attention" (Gated DeltaNet) | "rwkv7"
  std::string layer_type(int layer) const;
  bool any_sliding() const;
  bool all_sliding() const;
  int64_t num_parameters() const;

  // Parse `j`, naming `where` (the file) in every error; validates all shapes.
  static ModelConfig from_json(const json& j, const std::string& where);
  json to_json() const;  // in the form transformers writes (loads as Qwen2ForCausalLM)
  // Runs the attention layers with a sliding window of W tokens, like the paper's SWA-3B-4k made
  // from Qwen2.5-3B: `layers` is "all" (every attention layer) or a list of layer indices and
  // ranges ("0,2,4-7"); W = 0 makes every attention layer full. Gated DeltaNet layers stay as they
  // are (naming one is an error). Errors name `where`.
  void set_window(int W, const std::string& layers, const std::string& where);
  // The same change on a config.json object, keeping every other field (for `smoothread convert`).
  static void set_window_json(json& j, const ModelConfig& c);
  void validate(const std::string& where) const;
};

}  // namespace sr
