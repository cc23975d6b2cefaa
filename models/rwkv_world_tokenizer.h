// The RWKV World tokenizer (RWKV-5/6/7 World and G1 models): a vocabulary file
// `rwkv_vocab_v20230424.txt` of lines `<id> <Python str or bytes literal> <byte length>`, and
// greedy longest match over the text's UTF-8 bytes (a byte trie), as BlinkDL's TRIE_TOKENIZER does.
// Id 0 is the end-of-text token; we name it <|endoftext|> and, like HF special tokens, match that
// string in text when special tokens are parsed (the reference tokenizer has no specials).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace sr {

class RwkvWorldTokenizer : public Tokenizer {
 public:
  // Parses the vocabulary file; errors name the file and line.
  static std::unique_ptr<RwkvWorldTokenizer> from_vocab_file(const std::string& path);
  // The form this tokenizer takes inside a tokenizer.json we write (model.type "RWKVWorld").
  static std::unique_ptr<RwkvWorldTokenizer> from_json(const json& j, const std::string& where);

  std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override { return int(tokens_.size()); }
  int token_id(const std::string& token) const override;
  bool is_special(int32_t id) const override { return id == 0; }
  json to_json() const override;

 private:
  explicit RwkvWorldTokenizer(std::vector<std::string> tokens);
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t id = -1;                                // token ending here
  };
  int32_t child(int32_t node, uint8_t b) const;
  std::vector<std::string> tokens_;  // id -> bytes ("" for id 0 and holes)
  std::vector<Node> trie_;
};

}  // namespace sr
