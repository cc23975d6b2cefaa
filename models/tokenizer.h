// Tokenizer interface + the byte-level tokenizer smoothread trains with.
// Byte-level: ids 0..255 are the raw bytes, ids 256.. are named special tokens. It is stored as a
// valid Hugging Face `tokenizer.json` (a BPE model with the 256 GPT-2 byte-level symbols, no
// merges, ByteLevel pre-tokenizer/decoder, specials as added_tokens), so `tokenizers` loads it and
// produces the same ids. BPE tokenizers with merges (Qwen) implement the same interface
// (models/bpe_tokenizer.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/io.h"

namespace sr {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // parse_special: special-token strings in `text` become their ids (HF's default behaviour).
  virtual std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  virtual int vocab_size() const = 0;
  virtual int token_id(const std::string& token) const = 0;  // -1 when absent
  virtual bool is_special(int32_t id) const = 0;
  virtual json to_json() const = 0;  // tokenizer.json content
  // Token count of plain text (no special-token parsing), without materializing the ids when the
  // tokenizer can (byte-level: one token per byte).
  virtual size_t count_plain(std::string_view text) const { return encode(std::string(text), false).size(); }
  // True when count(a + b) == count(a) + count(b) for text without special tokens (byte-level).
  virtual bool counts_are_additive() const { return false; }

  // Loads `path`: a tokenizer.json (byte-level BPE, or our RWKVWorld form), an RWKV World
  // vocabulary .txt, or a directory holding tokenizer.json (else rwkv_vocab_v20230424.txt).
  static std::unique_ptr<Tokenizer> load(const std::string& path);
};

class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(std::vector<std::string> specials);
  // The default special tokens: <|endoftext|> (eos, id 256) and the Smooth Reading markers.
  static std::vector<std::string> default_specials();

  std::vector<int32_t> encode(const std::string& text, bool parse_special = true) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  int vocab_size() const override { return 256 + int(specials_.size()); }
  int token_id(const std::string& token) const override;
  bool is_special(int32_t id) const override { return id >= 256 && id < vocab_size(); }
  json to_json() const override;
  bool counts_are_additive() const override { return true; }
  size_t count_plain(std::string_view text) const override { return text.size(); }
  const std::vector<std::string>& specials() const { return specials_; }

 private:
  std::vector<std::string> specials_;
};

inline constexpr const char* kRwkvWorldVocab = "rwkv_vocab_v20230424.txt";

// GPT-2 byte -> printable unicode symbol (UTF-8), as used by byte-level BPE vocabularies.
std::string byte_level_symbol(unsigned char b);

}  // namespace sr
