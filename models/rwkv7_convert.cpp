#include "models/rwkv7_convert.h"

#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/io.h"
#include "models/language_model.h"
#include "models/model_dir.h"
#include "models/tokenizer.h"
#include "models/torch_checkpoint.h"

namespace sr {

namespace {
struct Pth {
  std::string path;
  std::map<std::string, TorchTensor> t;
  const TorchTensor& at(const std::string& name) const {
    auto it = t.find(name);
    if (it == t.end()) fail(path, "has no tensor '" + name + "' (not an RWKV-7 x070 checkpoint?)");
    return it->second;
  }
  int64_t dim(const std::string& name, size_t d) const {
    const TorchTensor& x = at(name);
    if (d >= x.shape.size()) fail(path + ": tensor '" + name + "'", "has rank " + std::to_string(x.shape.size()));
    return x.shape[d];
  }
};
// The model, its config from the shapes, every parameter from the .pth.
std::unique_ptr<LanguageModel> model_from_pth(const std::string& pth) {
  Pth w{pth, {}};
  for (auto& [name, tensor] : read_torch_checkpoint(pth)) w.t.emplace(name, std::move(tensor));
  int L = 0;
  while (w.t.count("blocks." + std::to_string(L) + ".ln1.weight")) ++L;
  if (L == 0) fail(pth, "has no blocks.0.ln1.weight: not an RWKV-7 checkpoint");
  const int64_t V = w.dim("emb.weight", 0), C = w.dim("emb.weight", 1);
  const int64_t H = w.dim("blocks.0.att.r_k", 0), N = w.dim("blocks.0.att.r_k", 1);
  if (H * N != C) fail(pth + ": tensor 'blocks.0.att.r_k'", "heads x head size != the embedding width");
  json cj = {{"model_type", "rwkv7"}, {"vocab_size", V}, {"hidden_size", C}, {"num_hidden_layers", L},
             {"head_dim", N}, {"intermediate_size", w.dim("blocks.0.ffn.key.weight", 0)},
             {"decay_low_rank_dim", w.dim("blocks.0.att.w1", 1)}, {"a_low_rank_dim", w.dim("blocks.0.att.a1", 1)},
             {"v_low_rank_dim", L > 1 ? w.dim("blocks.1.att.v1", 1) : 16}, {"gate_low_rank_dim", w.dim("blocks.0.att.g1", 1)},
             {"tie_word_embeddings", false}, {"norm_eps", 1e-5}, {"hidden_act", "sqrelu"}};
  auto model = make_model(ModelConfig::from_json(cj, pth));
  std::map<std::string, bool> used;
  // ours <- theirs, copied or transposed ([in, out] -> [out, in]); element counts must match.
  auto put = [&](const std::string& ours, const std::string& theirs, bool transpose = false) {
    const ParamSpec* s = model->find_param(ours);
    SR_ASSERT(s, "rwkv7 param " + ours);
    const TorchTensor& x = w.at(theirs);
    const int64_t n = shape_numel(s->shape);
    if (int64_t(x.data.size()) != n)
      fail(pth + ": tensor '" + theirs + "'", "has " + std::to_string(x.data.size()) + " elements, the model needs " +
                                                  std::to_string(n) + " for " + ours);
    float* dst = model->params() + s->offset;
    if (!transpose) {
      std::copy(x.data.begin(), x.data.end(), dst);
    } else {
      if (x.shape.size() != 2) fail(pth + ": tensor '" + theirs + "'", "must be a matrix");
      const int64_t R = x.shape[0], K = x.shape[1];  // theirs [R, K] -> ours [K, R]
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < K; ++k) dst[k * R + r] = x.data[size_t(r * K + k)];
    }
    used[theirs] = true;
  };
  put("model.embeddings.weight", "emb.weight");
  put("model.layers.0.pre_norm.weight", "blocks.0.ln0.weight");
  put("model.layers.0.pre_norm.bias", "blocks.0.ln0.bias");
  for (int i = 0; i < L; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".", a = p + "attn.", b = "blocks." + std::to_string(i) + ".";
    put(p + "attn_norm.weight", b + "ln1.weight"), put(p + "attn_norm.bias", b + "ln1.bias");
    put(p + "ffn_norm.weight", b + "ln2.weight"), put(p + "ffn_norm.bias", b + "ln2.bias");
    for (const char* m : {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"}) put(a + m, b + "att." + m);
    for (const char* m : {"k_k", "k_a", "r_k"}) put(a + m, b + "att." + m);
    // LoRAs: BlinkDL's w1 [C, r], w2 [r, C] and bias w0 -> fla's lora.0 [r, C], lora.2 [C, r] + bias
    for (auto [lora, x] : {std::pair{"w_lora", 'w'}, {"a_lora", 'a'}, {"g_lora", 'g'}, {"v_lora", 'v'}}) {
      if (x == 'v' && i == 0) continue;  // layer 0 has no value residual (its v0/v1/v2, if any, are unused)
      put(a + lora + ".lora.0.weight", b + "att." + x + "1", true);
      put(a + lora + ".lora.2.weight", b + "att." + x + "2", true);
      if (x != 'g') put(a + lora + ".lora.2.bias", b + "att." + x + "0");
    }
    for (auto [ours, theirs] : {std::pair{"r_proj", "receptance"}, {"k_proj", "key"}, {"v_proj", "value"}, {"o_proj", "output"}})
      put(a + ours + ".weight", b + "att." + theirs + ".weight");
    put(a + "g_norm.weight", b + "att.ln_x.weight"), put(a + "g_norm.bias", b + "att.ln_x.bias");
    put(p + "ffn.x_k", b + "ffn.x_k");
    put(p + "ffn.key.weight", b + "ffn.key.weight"), put(p + "ffn.value.weight", b + "ffn.value.weight");
  }
  put("model.norm.weight", "ln_out.weight"), put("model.norm.bias", "ln_out.bias");
  put("lm_head.weight", "head.weight");
  for (auto& [name, tensor] : w.t)
    if (!used.count(name) && !(name.rfind("blocks.0.att.v", 0) == 0))
      fail(pth + ": tensor '" + name + "'", "is not part of RWKV-7 x070 (no place for it in the model)");
  return model;
}
}  // namespace

ModelConfig convert_rwkv7_pth(const std::string& pth, const std::string& out_dir, const std::string& tokenizer) {
  namespace fs = std::filesystem;
  ModelConfig cfg;
  write_new_dir(out_dir, [&](const std::string& tmp) {
    auto model = model_from_pth(pth);
    cfg = model->config();
    save_model_dir(*model, nullptr, tmp);
    if (!tokenizer.empty()) {
      std::string src = tokenizer;
      if (fs::is_directory(src)) src = path_exists(join_path(src, "tokenizer.json")) ? join_path(src, "tokenizer.json")
                                                                                   : join_path(src, kRwkvWorldVocab);
      if (!path_exists(src)) fail(tokenizer, "no tokenizer.json or " + std::string(kRwkvWorldVocab) + " there");
      const std::string name = fs::path(src).extension() == ".json" ? "tokenizer.json" : kRwkvWorldVocab;
      std::error_code ec;
      fs::copy_file(src, fs::path(tmp) / name, ec);
      if (ec) fail(src, "cannot copy: " + ec.message());
    }
  });
  return cfg;
}

}  // namespace sr
