#include "models/config.h"

#include <iostream>

#include "core/error.h"

namespace sr {

bool ModelConfig::any_sliding() const {
  for (bool s : layer_sliding)
    if (s) return true;
  return false;
}
bool ModelConfig::all_sliding() const {
  for (bool s : layer_sliding)
    if (!s) return false;
  return !layer_sliding.empty();
}

bool ModelConfig::any_linear() const {
  for (bool s : layer_linear)
    if (s) return true;
  return false;
}

std::string ModelConfig::layer_type(int l) const {
  return is_rwkv7() ? "rwkv7" : is_linear(l) ? "linear_attention" : layer_sliding[l] ? "sliding_attention" : "full_attention";
}

int64_t ModelConfig::num_parameters() const {
  if (is_rwkv7()) {
    const int64_t C = hidden_size, F = intermediate_size, V = vocab_size, L = num_layers;
    const int64_t lora = 2 * C * rwkv_decay_rank + C + 2 * C * rwkv_a_rank + C + 2 * C * rwkv_gate_rank;
    const int64_t v_lora = 2 * C * rwkv_v_rank + C;
    const int64_t tmix = 6 * C + 2 * C + C /* r_k */ + 4 * C * C + lora + 2 * C /* ln_x */;
    const int64_t block = 4 * C /* attn_norm, ffn_norm */ + tmix + C + 2 * C * F;
    return V * C * (tie_word_embeddings ? 1 : 2) + 2 * C /* pre_norm */ + L * block + (L - 1) * v_lora + 2 * C;
  }
  int64_t C = hidden_size, F = intermediate_size, qd = int64_t(num_heads) * head_dim, kvd = int64_t(num_kv_heads) * head_dim;
  int64_t attn = C * qd + 2 * C * kvd + qd * C + (attention_bias ? qd + 2 * kvd : 0);
  int64_t Kd = int64_t(linear_num_key_heads) * linear_key_head_dim, Vd = int64_t(linear_num_value_heads) * linear_value_head_dim;
  int64_t Hv = linear_num_value_heads, Cc = 2 * Kd + Vd;
  int64_t gdn = Cc * C + Vd * C + 2 * Hv * C + Cc * linear_conv_kernel_dim + 2 * Hv + linear_value_head_dim + C * Vd;
  int64_t total = int64_t(vocab_size) * C * (tie_word_embeddings ? 1 : 2) + C;
  for (int l = 0; l < num_layers; ++l) total += 2 * C + 3 * C * F + (is_linear(l) ? gdn : attn);
  return total;
}

void ModelConfig::validate(const std::string& where) const {
  auto bad = [&](const std::string& f, const std::string& m) { fail(where + ": field '" + f + "'", m); };
  if (is_rwkv7()) {
    if (hidden_size <= 0) bad("hidden_size", "must be positive");
    if (head_dim <= 0 || hidden_size % head_dim != 0)
      bad("head_dim", "must be positive and divide hidden_size (" + std::to_string(hidden_size) + ")");
    for (auto [f, r] : {std::pair{"decay_low_rank_dim", rwkv_decay_rank}, {"a_low_rank_dim", rwkv_a_rank},
                        {"v_low_rank_dim", rwkv_v_rank}, {"gate_low_rank_dim", rwkv_gate_rank}})
      if (r <= 0) bad(f, "must be positive");
    if (norm_eps <= 0) bad("norm_eps", "must be positive");
  }
  if (vocab_size <= 0) bad("vocab_size", "must be positive");
  if (hidden_size <= 0) bad("hidden_size", "must be positive");
  if (intermediate_size <= 0) bad("intermediate_size", "must be positive");
  if (num_layers <= 0) bad("num_hidden_layers", "must be positive");
  if (num_heads <= 0) bad("num_attention_heads", "must be positive");
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0)
    bad("num_key_value_heads", "must be positive and divide num_attention_heads (" + std::to_string(num_heads) + ")");
  if (head_dim <= 0 || head_dim % 2 != 0) bad("head_dim", "must be a positive even number (RoPE rotates pairs)");
  if (rms_norm_eps <= 0) bad("rms_norm_eps", "must be positive");
  if (rope_theta <= 0) bad("rope_theta", "must be positive");
  if (int(layer_sliding.size()) != num_layers)
    bad("layer_types", "has " + std::to_string(layer_sliding.size()) + " entries, num_hidden_layers is " +
                           std::to_string(num_layers));
  if (any_sliding() && sliding_window <= 0) bad("sliding_window", "must be a positive integer for sliding_attention layers");
  if (!layer_linear.empty() && int(layer_linear.size()) != num_layers) bad("layer_types", "linear layer flags do not match num_hidden_layers");
  if (any_linear()) {
    if (linear_num_key_heads <= 0) bad("linear_num_key_heads", "must be positive for linear_attention layers");
    if (linear_num_value_heads <= 0 || linear_num_value_heads % linear_num_key_heads != 0)
      bad("linear_num_value_heads", "must be a positive multiple of linear_num_key_heads");
    if (linear_key_head_dim <= 0) bad("linear_key_head_dim", "must be positive");
    if (linear_value_head_dim <= 0) bad("linear_value_head_dim", "must be positive");
    if (linear_conv_kernel_dim < 1) bad("linear_conv_kernel_dim", "must be at least 1");
  }
  if (eos_token_id >= vocab_size) bad("eos_token_id", "is outside the vocabulary");
}

static int token_id_field(const json& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  const json& v = j[key];
  if (v.is_array()) return v.empty() ? -1 : v[0].get<int>();  // HF allows a list of eos ids; we stop on the first
  return int(json_int(j, key, where));
}

// RWKV-7 in the fla-hub config.json form (fla's RWKV7Config; defaults as there).
static ModelConfig rwkv7_from_json(const json& j, const std::string& where) {
  ModelConfig c;
  c.model_type = "rwkv7";
  c.vocab_size = int(json_int(j, "vocab_size", where));
  c.hidden_size = int(json_int(j, "hidden_size", where));
  c.num_layers = int(json_int(j, "num_hidden_layers", where));
  c.head_dim = int(json_int_or(j, "head_dim", 64, where));
  if (j.contains("num_heads") && !j["num_heads"].is_null() && (j.value("head_dim", json()).is_null()))
    c.head_dim = c.hidden_size / std::max<int>(1, int(json_int(j, "num_heads", where)));
  c.num_heads = c.head_dim > 0 ? c.hidden_size / c.head_dim : 0;
  c.num_kv_heads = c.num_heads;
  const double ratio = json_num_or(j, "hidden_ratio", 4.0, where);
  const int derived = 32 * ((int(c.hidden_size * ratio) + 31) / 32);
  c.intermediate_size = j.contains("intermediate_size") && !j["intermediate_size"].is_null()
                            ? int(json_int(j, "intermediate_size", where)) : derived;
  c.rwkv_decay_rank = int(json_int_or(j, "decay_low_rank_dim", 64, where));
  c.rwkv_a_rank = int(json_int_or(j, "a_low_rank_dim", 64, where));
  c.rwkv_v_rank = int(json_int_or(j, "v_low_rank_dim", 16, where));
  c.rwkv_gate_rank = int(json_int_or(j, "gate_low_rank_dim", 128, where));
  c.norm_eps = json_num_or(j, "norm_eps", 1e-5, where);
  c.tie_word_embeddings = json_bool_or(j, "tie_word_embeddings", false, where);
  c.max_position_embeddings = int(json_int_or(j, "max_position_embeddings", 2048, where));
  c.bos_token_id = token_id_field(j, "bos_token_id", where);
  c.eos_token_id = token_id_field(j, "eos_token_id", where);
  if (j.contains("hidden_act") && json_str(j, "hidden_act", where) != "sqrelu")
    fail(where + ": field 'hidden_act'", "RWKV-7's channel mix is 'sqrelu'; got '" + json_str(j, "hidden_act", where) + "'");
  if (j.contains("attn") && !j["attn"].is_null())
    fail(where + ": field 'attn'", "RWKV-7 hybrids with attention layers are not supported yet (attn must be null)");
  if (!json_bool_or(j, "norm_first", true, where)) fail(where + ": field 'norm_first'", "only norm_first = true is supported");
  if (!json_bool_or(j, "norm_bias", true, where)) fail(where + ": field 'norm_bias'", "only norm_bias = true is supported");
  if (j.contains("value_dim") && !j["value_dim"].is_null()) {
    const json& vd = j["value_dim"];
    bool ok = true;
    if (vd.is_array()) {
      for (const json& e : vd) ok = ok && e.is_number_integer() && e.get<int64_t>() == c.hidden_size;
    } else {
      ok = vd.is_number_integer() && vd.get<int64_t>() == c.hidden_size;
    }
    if (!ok) fail(where + ": field 'value_dim'", "only value_dim == hidden_size is supported");
  }
  c.layer_sliding.assign(c.num_layers > 0 ? c.num_layers : 0, false);
  c.validate(where);
  return c;
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a JSON object");
  ModelConfig c;
  c.model_type = json_str(j, "model_type", where);
  if (c.model_type == "rwkv7" || c.model_type == "rwkv7_fla") return rwkv7_from_json(j, where);
  if (c.model_type == "qwen3_5") {  // the multimodal checkpoint: its text model
    if (!j.contains("text_config") || !j["text_config"].is_object())
      fail(where + ": field 'text_config'", "a qwen3_5 config needs its text_config");
    json t = j["text_config"];
    if (!t.contains("model_type")) t["model_type"] = "qwen3_5_text";
    for (const char* k : {"tie_word_embeddings", "bos_token_id", "eos_token_id"})
      if (!t.contains(k) && j.contains(k)) t[k] = j[k];
    ModelConfig tc = from_json(t, where + ": field 'text_config'");
    tc.weight_prefix = "model.language_model.";
    return tc;
  }
  const bool q3 = c.model_type == "qwen3", q35 = c.model_type == "qwen3_5_text" || c.model_type == "qwen3_next";
  if (c.model_type != "qwen2" && c.model_type != "llama" && c.model_type != "mistral" && !q3 && !q35)
    fail(where + ": field 'model_type'", "unknown model_type '" + c.model_type +
                                             "' (supported: qwen2, llama, mistral, qwen3, qwen3_5, qwen3_5_text, qwen3_next, rwkv7)");
  if (q35 && json_int_or(j, "num_experts", 0, where) > 0)
    fail(where + ": field 'num_experts'", "mixture-of-experts MLPs are not supported yet (dense Qwen3.5 / Qwen3-Next only)");
  c.qk_norm = q3 || q35;
  c.attn_output_gate = q35;
  c.zero_centered_norm = q35;
  c.vocab_size = int(json_int(j, "vocab_size", where));
  c.hidden_size = int(json_int(j, "hidden_size", where));
  c.intermediate_size = int(json_int(j, "intermediate_size", where));
  c.num_layers = int(json_int(j, "num_hidden_layers", where));
  c.num_heads = int(json_int(j, "num_attention_heads", where));
  c.num_kv_heads = int(json_int_or(j, "num_key_value_heads", c.num_heads, where));
  c.head_dim = int(json_int_or(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0, where));
  c.rms_norm_eps = json_num_or(j, "rms_norm_eps", c.model_type == "qwen2" ? 1e-6 : 1e-5, where);
  // rope_theta: transformers 5.x nests it in rope_parameters; 4.x kept it at top level.
  double theta = c.model_type == "qwen2" ? 1e6 : 1e4;
  double partial = q35 ? 0.25 : 1.0;  // Qwen3-Next / Qwen3.5 rotate a quarter of each head by default
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const json& rp = j["rope_parameters"];
    std::string rt = json_str_or(rp, "rope_type", "default", where + ": field 'rope_parameters'");
    if (rt != "default") fail(where + ": field 'rope_parameters.rope_type'", "only 'default' RoPE is supported, got '" + rt + "'");
    theta = json_num_or(rp, "rope_theta", theta, where + ": field 'rope_parameters'");
    partial = json_num_or(rp, "partial_rotary_factor", partial, where + ": field 'rope_parameters'");
  } else {
    theta = json_num_or(j, "rope_theta", theta, where);
  }
  partial = json_num_or(j, "partial_rotary_factor", partial, where);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    std::string rt = json_str_or(j["rope_scaling"], "rope_type", json_str_or(j["rope_scaling"], "type", "default", where), where);
    if (rt != "default") fail(where + ": field 'rope_scaling'", "RoPE scaling '" + rt + "' is not supported");
  }
  c.rope_theta = theta;
  if (!(partial > 0 && partial <= 1)) fail(where + ": field 'partial_rotary_factor'", "must be in (0, 1]");
  c.rotary_dim = int(c.head_dim * partial);
  if (c.rotary_dim == c.head_dim) c.rotary_dim = 0;
  if (c.rotary_dim % 2 || (c.rotary_dim == 0 && partial < 1))
    fail(where + ": field 'partial_rotary_factor'", "head_dim * factor must be a positive even number");
  c.tie_word_embeddings = json_bool_or(j, "tie_word_embeddings", false, where);
  c.attention_bias = c.model_type == "qwen2" ? true : json_bool_or(j, "attention_bias", false, where);
  if (q35 || q3) c.rms_norm_eps = json_num_or(j, "rms_norm_eps", 1e-6, where);
  c.max_position_embeddings = int(json_int_or(j, "max_position_embeddings", 32768, where));
  c.bos_token_id = token_id_field(j, "bos_token_id", where);
  c.eos_token_id = token_id_field(j, "eos_token_id", where);
  if (j.contains("hidden_act") && json_str(j, "hidden_act", where) != "silu")
    fail(where + ": field 'hidden_act'", "only 'silu' (SwiGLU) is supported");

  // Window and per-layer kinds (see header for the derivation rule).
  int64_t window = json_int_or(j, "sliding_window", 0, where);
  bool use_sw = c.model_type == "mistral" ? window > 0 : json_bool_or(j, "use_sliding_window", false, where);
  if (!use_sw) window = 0;
  c.sliding_window = int(window);
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    const json& lt = j["layer_types"];
    if (!lt.is_array()) fail(where + ": field 'layer_types'", "expected a list of strings");
    for (size_t i = 0; i < lt.size(); ++i) {
      std::string t = lt[i].is_string() ? lt[i].get<std::string>() : "";
      if (t == "full_attention") c.layer_sliding.push_back(false);
      else if (t == "sliding_attention") c.layer_sliding.push_back(true);
      else if (t == "linear_attention") c.layer_sliding.push_back(false), c.layer_linear.resize(i + 1, false), c.layer_linear[i] = true;
      else fail(where + ": field 'layer_types[" + std::to_string(i) + "]'", "expected \"full_attention\", \"sliding_attention\" or \"linear_attention\", got " + lt[i].dump());
    }
    if (c.any_sliding() && c.sliding_window == 0) {
      // transformers nulls sliding_window when use_sliding_window is false, so these layers run full attention.
      std::cerr << "warning: " << where << ": layer_types has sliding_attention but use_sliding_window is false; "
                << "running those layers with full attention, as transformers does\n";
      c.layer_sliding.assign(c.layer_sliding.size(), false);
    }
  } else {
    int mwl = c.model_type == "mistral" ? 0 : int(json_int_or(j, "max_window_layers", c.num_layers, where));
    for (int i = 0; i < c.num_layers; ++i) c.layer_sliding.push_back(c.sliding_window > 0 && i >= mwl);
  }
  if (c.any_linear()) {
    c.layer_linear.resize(c.num_layers, false);
    c.linear_num_key_heads = int(json_int(j, "linear_num_key_heads", where));
    c.linear_num_value_heads = int(json_int(j, "linear_num_value_heads", where));
    c.linear_key_head_dim = int(json_int(j, "linear_key_head_dim", where));
    c.linear_value_head_dim = int(json_int(j, "linear_value_head_dim", where));
    c.linear_conv_kernel_dim = int(json_int_or(j, "linear_conv_kernel_dim", 4, where));
  } else {
    c.layer_linear.clear();
  }
  c.validate(where);
  return c;
}

json ModelConfig::to_json() const {
  json j;
  if (is_rwkv7()) {  // fla-hub form
    j["architectures"] = {"RWKV7ForCausalLM"};
    j["model_type"] = "rwkv7";
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = hidden_size;
    j["num_hidden_layers"] = num_layers;
    j["head_dim"] = head_dim;
    j["num_heads"] = num_heads;
    j["intermediate_size"] = intermediate_size;
    j["hidden_ratio"] = double(intermediate_size) / hidden_size;
    j["decay_low_rank_dim"] = rwkv_decay_rank;
    j["a_low_rank_dim"] = rwkv_a_rank;
    j["v_low_rank_dim"] = rwkv_v_rank;
    j["gate_low_rank_dim"] = rwkv_gate_rank;
    j["hidden_act"] = "sqrelu";
    j["norm_first"] = true;
    j["norm_bias"] = true;
    j["norm_eps"] = norm_eps;
    j["fuse_norm"] = false;
    j["attn"] = nullptr;
    j["attn_mode"] = "chunk";
    j["value_dim"] = json(std::vector<int>(num_layers, hidden_size));
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["max_position_embeddings"] = max_position_embeddings;
    j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
    j["eos_token_id"] = eos_token_id >= 0 ? json(eos_token_id) : json(nullptr);
    j["torch_dtype"] = "float32";
    j["use_cache"] = true;
    return j;
  }
  std::string arch = model_type == "qwen2"          ? "Qwen2ForCausalLM"
                     : model_type == "llama"        ? "LlamaForCausalLM"
                     : model_type == "qwen3"        ? "Qwen3ForCausalLM"
                     : model_type == "qwen3_5_text" ? "Qwen3_5ForCausalLM"
                     : model_type == "qwen3_next"   ? "Qwen3NextForCausalLM"
                                                    : "MistralForCausalLM";
  j["architectures"] = {arch};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", rope_theta}};
  if (rotary_dim > 0) {
    j["partial_rotary_factor"] = double(rotary_dim) / head_dim;
    j["rope_parameters"]["partial_rotary_factor"] = double(rotary_dim) / head_dim;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (model_type != "qwen2") j["attention_bias"] = attention_bias;
  j["max_position_embeddings"] = max_position_embeddings;
  j["use_sliding_window"] = any_sliding();
  j["sliding_window"] = any_sliding() ? json(sliding_window) : json(nullptr);
  int first_sliding = num_layers;
  for (int i = num_layers - 1; i >= 0; --i)
    if (layer_sliding[i]) first_sliding = i;
  j["max_window_layers"] = first_sliding;
  json lt = json::array();
  for (int l = 0; l < num_layers; ++l) lt.push_back(layer_type(l));
  j["layer_types"] = lt;
  if (any_linear()) {
    j["linear_num_key_heads"] = linear_num_key_heads;
    j["linear_num_value_heads"] = linear_num_value_heads;
    j["linear_key_head_dim"] = linear_key_head_dim;
    j["linear_value_head_dim"] = linear_value_head_dim;
    j["linear_conv_kernel_dim"] = linear_conv_kernel_dim;
  }
  j["bos_token_id"] = bos_token_id >= 0 ? json(bos_token_id) : json(nullptr);
  j["eos_token_id"] = eos_token_id >= 0 ? json(eos_token_id) : json(nullptr);
  j["torch_dtype"] = "float32";
  j["dtype"] = "float32";
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  return j;
}

}  // namespace sr

namespace sr {

void ModelConfig::set_window(int W, const std::string& layers, const std::string& where) {
  if (W < 0) fail(where, "window must be >= 0 (0 = full attention), got " + std::to_string(W));
  if (is_rwkv7()) fail(where, "an RWKV-7 model has no attention layers to run with a window");
  std::vector<bool> pick(num_layers, false);
  if (layers == "all" || layers.empty()) {
    for (int l = 0; l < num_layers; ++l) pick[l] = !is_linear(l);
  } else {
    size_t pos = 0;
    while (pos <= layers.size()) {
      size_t comma = layers.find(',', pos);
      std::string item = layers.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? layers.size() + 1 : comma + 1;
      size_t dash = item.find('-');
      auto whole_int = [&](const std::string& t) {
        size_t used = 0;
        int v = -1;
        try {
          v = std::stoi(t, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (t.empty() || used != t.size()) fail(where, "expected layer indices like 0,2,4-7 or 'all', got '" + item + "'");
        return v;
      };
      const int lo = whole_int(item.substr(0, dash));
      const int hi = dash == std::string::npos ? lo : whole_int(item.substr(dash + 1));
      if (lo < 0 || hi >= num_layers || lo > hi)
        fail(where, "layer range '" + item + "' is outside 0-" + std::to_string(num_layers - 1));
      for (int l = lo; l <= hi; ++l) {
        if (is_linear(l)) fail(where, "layer " + std::to_string(l) + " is a Gated DeltaNet layer; only attention layers take a window");
        pick[l] = true;
      }
    }
  }
  sliding_window = W;
  layer_sliding.assign(num_layers, false);
  if (W > 0)
    for (int l = 0; l < num_layers; ++l) layer_sliding[l] = pick[l];
  validate(where);
}

void ModelConfig::set_window_json(json& j, const ModelConfig& c) {
  json ours = c.to_json();
  for (const char* k : {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}) j[k] = ours[k];
}

}  // namespace sr
