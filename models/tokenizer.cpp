#include "models/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "core/utf8.h"
#include "models/bpe_tokenizer.h"
#include "models/rwkv_world_tokenizer.h"

namespace sr {

std::string byte_level_symbol(unsigned char b) {
  // Printable bytes keep their own code point; the rest map to 256, 257, ... in byte order.
  auto printable = [](int c) { return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255); };
  uint32_t cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int c = 0; c < b; ++c) cp += !printable(c);
  }
  std::string s;
  append_utf8(s, cp);
  return s;
}

ByteTokenizer::ByteTokenizer(std::vector<std::string> specials) : specials_(std::move(specials)) {
  for (auto& s : specials_)
    if (s.empty()) fail("tokenizer", "empty special token");
}

std::vector<std::string> ByteTokenizer::default_specials() {
  return {"<|endoftext|>", "<|query|>", "<|chunk|>", "<|summary|>", "<|memory|>",
          "<|answer|>",    "<|eod|>",   "<READ>",    "<STOP>",      "<|pad|>"};
}

std::vector<int32_t> ByteTokenizer::encode(const std::string& text, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (parse_special) {
      int best = -1;
      size_t best_len = 0;
      for (size_t k = 0; k < specials_.size(); ++k) {
        const std::string& s = specials_[k];
        if (s.size() > best_len && text.compare(i, s.size(), s) == 0) best = int(k), best_len = s.size();
      }
      if (best >= 0) {
        ids.push_back(256 + best);
        i += best_len;
        continue;
      }
    }
    ids.push_back(int32_t(static_cast<unsigned char>(text[i])));
    ++i;
  }
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) out.push_back(char(id));
    else if (is_special(id)) {
      if (!skip_special) out += specials_[size_t(id - 256)];
    } else {
      fail("decode", "token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    }
  }
  return out;
}

int ByteTokenizer::token_id(const std::string& token) const {
  for (size_t k = 0; k < specials_.size(); ++k)
    if (specials_[k] == token) return 256 + int(k);
  if (token.size() == 1) return static_cast<unsigned char>(token[0]);
  return -1;
}

json ByteTokenizer::to_json() const {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_symbol(static_cast<unsigned char>(b))] = b;
  json added = json::array();
  for (size_t k = 0; k < specials_.size(); ++k)
    added.push_back({{"id", 256 + int(k)}, {"content", specials_[k]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", bl},
          {"post_processor", nullptr},
          {"decoder", bl},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array()}}}};
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  std::string file = is_directory(path) ? join_path(path, "tokenizer.json") : path;
  if (is_directory(path) && !path_exists(file) && path_exists(join_path(path, kRwkvWorldVocab)))
    file = join_path(path, kRwkvWorldVocab);
  if (file.size() > 4 && file.compare(file.size() - 4, 4, ".txt") == 0) return RwkvWorldTokenizer::from_vocab_file(file);
  json j = load_json_file(file);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail(file + ": field 'model'", "missing or not an object");
  const json& m = j["model"];
  std::string type = json_str_or(m, "type", "", file + ": field 'model'");
  if (type == "RWKVWorld") return RwkvWorldTokenizer::from_json(j, file);
  if (type != "BPE")
    fail(file + ": field 'model.type'", "unsupported tokenizer model '" + type + "' (supported: BPE, RWKVWorld)");
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail(file + ": field 'model.vocab'", "missing or not an object");
  bool merges = m.contains("merges") && m["merges"].is_array() && !m["merges"].empty();
  const json& vocab = m["vocab"];
  bool byte_level = !merges && vocab.size() == 256;
  for (int b = 0; byte_level && b < 256; ++b) {
    auto it = vocab.find(byte_level_symbol(static_cast<unsigned char>(b)));
    byte_level = it != vocab.end() && it->is_number_integer() && it->get<int>() == b;
  }
  if (!byte_level) return std::make_unique<BpeTokenizer>(j, file);  // a real vocabulary (Qwen, GPT-2, Llama-3)
  std::vector<std::pair<int, std::string>> sp;
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const json& t = j["added_tokens"][i];
      std::string where = file + ": field 'added_tokens[" + std::to_string(i) + "]'";
      sp.emplace_back(int(json_int(t, "id", where)), json_str(t, "content", where));
    }
  std::sort(sp.begin(), sp.end());
  std::vector<std::string> specials;
  for (size_t k = 0; k < sp.size(); ++k) {
    if (sp[k].first != 256 + int(k))
      fail(file + ": field 'added_tokens'", "special token ids must be 256, 257, ... without gaps (found " + std::to_string(sp[k].first) + ")");
    specials.push_back(sp[k].second);
  }
  return std::make_unique<ByteTokenizer>(specials);
}

}  // namespace sr
