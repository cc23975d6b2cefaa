// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2 / Qwen / Llama-3 style), as the
// `tokenizers` library runs it:
//   1. added tokens are cut out first (leftmost, then longest match; special ones only when
//      parse_special; lstrip/rstrip honoured);
//   2. the rest is normalized (NFC when the file says so, via utf8proc);
//   3. the pre-tokenizer splits it: a Split regex (behaviour Isolated; PCRE2 with Unicode
//      properties, JIT-compiled) and/or ByteLevel (GPT-2's regex when use_regex, optional prefix
//      space); each piece's UTF-8 bytes become the 256 byte-level symbols;
//   4. BPE merges each piece by rank (the lowest-ranked adjacent pair first, leftmost on ties);
//      with ignore_merges a piece that is itself in the vocabulary is one token.
// Pieces are cached (most words repeat), which is what makes English fast.
// Decoding maps byte-level symbols back to bytes; Utf8StreamDecoder emits only whole characters.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/tokenizer.h"

namespace sr {

class BpeTokenizer : public Tokenizer {
 public:
  // j: the parsed tokenizer.json; where: its path, named in every error.
  BpeTokenizer(const json& j, const std::string& where);
  ~BpeTokenizer() override;

  std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override { return int(id_to_token_.size()); }
  int token_id(const std::string& token) const override;
  bool is_special(int32_t id) const override;
  json to_json() const override { return json_; }
  std::string kind() const;  // e.g. "byte-level BPE (151643 tokens, 151387 merges, NFC, Split regex)"

 private:
  struct Added {
    std::string content;
    int32_t id;
    bool special, lstrip, rstrip;
  };
  struct Regex;  // PCRE2 code + JIT (bpe_tokenizer.cpp)
  // Appends the ids of plain text (no added tokens in it).
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe(std::vector<int32_t>& syms) const;

  json json_;
  std::unordered_map<std::string, int32_t> vocab_;    // token string (byte-level symbols) -> id
  std::vector<std::string> id_to_token_;             // id -> token string ("" for holes)
  std::vector<uint8_t> id_special_;                  // 0 vocabulary, 1 added token, 2 added and special
  std::vector<int32_t> byte_id_;                     // byte -> id of its byte-level symbol (-1: absent)
  std::vector<int16_t> symbol_byte_;                 // code point (< 512) of a byte-level symbol -> byte
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, merged id)
  std::vector<Added> added_;                         // longest first
  bool nfc_ = false, byte_level_regex_ = false, add_prefix_space_ = false, ignore_merges_ = false;
  std::unique_ptr<Regex> split_, gpt2_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece -> ids
};

// Incremental decoding for streaming output: feed ids, get text that never ends inside a UTF-8
// character (the incomplete tail waits for the next ids; flush() returns it as is).
class Utf8StreamDecoder {
 public:
  explicit Utf8StreamDecoder(const Tokenizer& tok, bool skip_special = false) : tok_(tok), skip_(skip_special) {}
  std::string push(const std::vector<int32_t>& ids);
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_;
  std::string pending_;
};

}  // namespace sr
