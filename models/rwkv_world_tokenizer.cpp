#include "models/rwkv_world_tokenizer.h"

#include <algorithm>
#include <fstream>

#include "core/error.h"
#include "core/utf8.h"

namespace sr {

namespace {
constexpr const char* kEndOfText = "<|endoftext|>";

// A Python str or bytes literal as repr() writes it ('...', "...", b'...'): the token's bytes.
// In a str, \xHH, \uHHHH and \UHHHHHHHH are code points (UTF-8 encoded); in bytes, \xHH is a byte.
bool parse_py_literal(const std::string& lit, std::string& out) {
  size_t i = 0;
  const bool bytes = !lit.empty() && lit[0] == 'b';
  if (bytes) ++i;
  if (i >= lit.size() || (lit[i] != '\'' && lit[i] != '"')) return false;
  const char q = lit[i++];
  if (lit.size() < i + 1 || lit.back() != q) return false;
  const size_t end = lit.size() - 1;
  auto hex = [&](size_t at, int n, uint32_t& v) {
    if (at + size_t(n) > end) return false;
    v = 0;
    for (int k = 0; k < n; ++k) {
      const char c = lit[at + size_t(k)];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return false;
      v = v * 16 + uint32_t(d);
    }
    return true;
  };
  while (i < end) {
    const char c = lit[i];
    if (c != '\\') {
      out.push_back(c), ++i;
      continue;
    }
    if (i + 1 >= end) return false;
    const char e = lit[i + 1];
    uint32_t v = 0;
    i += 2;
    switch (e) {
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'x':
        if (!hex(i, 2, v)) return false;
        i += 2;
        if (bytes) out.push_back(char(v));
        else append_utf8(out, v);
        break;
      case 'u':
      case 'U': {
        const int n = e == 'u' ? 4 : 8;
        if (bytes || !hex(i, n, v) || v > 0x10ffff) return false;
        i += size_t(n);
        append_utf8(out, v);
        break;
      }
      default: return false;
    }
  }
  return true;
}
}  // namespace

RwkvWorldTokenizer::RwkvWorldTokenizer(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
  trie_.emplace_back();
  for (size_t id = 1; id < tokens_.size(); ++id) {
    const std::string& t = tokens_[id];
    if (t.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : t) {
      int32_t c = child(node, b);
      if (c < 0) {
        c = int32_t(trie_.size());
        trie_.emplace_back();
        auto& nx = trie_[size_t(node)].next;
        nx.insert(std::lower_bound(nx.begin(), nx.end(), std::make_pair(b, int32_t(-1))), {b, c});
      }
      node = c;
    }
    trie_[size_t(node)].id = int32_t(id);
  }
}

int32_t RwkvWorldTokenizer::child(int32_t node, uint8_t b) const {
  const auto& nx = trie_[size_t(node)].next;
  auto it = std::lower_bound(nx.begin(), nx.end(), std::make_pair(b, int32_t(-1)));
  return it != nx.end() && it->first == b ? it->second : -1;
}

std::unique_ptr<RwkvWorldTokenizer> RwkvWorldTokenizer::from_vocab_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open the RWKV vocabulary file");
  std::vector<std::string> tokens(1);  // id 0: end of text
  std::string line;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string where = path + ": line " + std::to_string(n);
    const size_t a = line.find(' '), b = line.rfind(' ');
    if (a == std::string::npos || b <= a) fail(where, "expected '<id> <literal> <length>'");
    int64_t id = -1, len = -1;
    try {
      size_t used = 0;
      id = std::stoll(line.substr(0, a), &used);
      if (used != a) id = -1;
      len = std::stoll(line.substr(b + 1), &used);
      if (used != line.size() - b - 1) len = -1;
    } catch (const std::exception&) {
    }
    if (id <= 0 || id > (1 << 24) || len < 0) fail(where, "bad id or length");
    std::string bytes;
    if (!parse_py_literal(line.substr(a + 1, b - a - 1), bytes)) fail(where, "cannot parse the token literal");
    if (int64_t(bytes.size()) != len)
      fail(where, "token is " + std::to_string(bytes.size()) + " bytes but the line says " + std::to_string(len));
    if (size_t(id) >= tokens.size()) tokens.resize(size_t(id) + 1);
    if (!tokens[size_t(id)].empty()) fail(where, "id " + std::to_string(id) + " appears twice");
    tokens[size_t(id)] = bytes;
  }
  if (tokens.size() < 2) fail(path, "empty vocabulary");
  return std::unique_ptr<RwkvWorldTokenizer>(new RwkvWorldTokenizer(std::move(tokens)));
}

std::unique_ptr<RwkvWorldTokenizer> RwkvWorldTokenizer::from_json(const json& j, const std::string& where) {
  const json& t = j["model"]["tokens"];
  if (!t.is_array()) fail(where + ": field 'model.tokens'", "expected a list of hex strings");
  std::vector<std::string> tokens(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    const std::string h = t[i].is_string() ? t[i].get<std::string>() : std::string("?");
    if (h.size() % 2) fail(where + ": field 'model.tokens[" + std::to_string(i) + "]'", "expected hex bytes");
    for (size_t k = 0; k < h.size(); k += 2) tokens[i].push_back(char(std::stoi(h.substr(k, 2), nullptr, 16)));
  }
  return std::unique_ptr<RwkvWorldTokenizer>(new RwkvWorldTokenizer(std::move(tokens)));
}

json RwkvWorldTokenizer::to_json() const {
  json t = json::array();
  static const char* hexd = "0123456789abcdef";
  for (const std::string& s : tokens_) {
    std::string h;
    for (unsigned char c : s) h.push_back(hexd[c >> 4]), h.push_back(hexd[c & 15]);
    t.push_back(h);
  }
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", 0}, {"content", kEndOfText}, {"special", true}}}},
          {"model", {{"type", "RWKVWorld"}, {"source", "rwkv_vocab_v20230424.txt"}, {"tokens", t}}}};
}

std::vector<int32_t> RwkvWorldTokenizer::encode(const std::string& text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  const size_t eot = std::char_traits<char>::length(kEndOfText);
  size_t i = 0;
  while (i < text.size()) {
    if (parse_special && text[i] == '<' && text.compare(i, eot, kEndOfText) == 0) {
      out.push_back(0), i += eot;
      continue;
    }
    int32_t node = 0, best = -1;
    size_t best_end = i;
    for (size_t k = i; k < text.size(); ++k) {  // walk the trie as far as the bytes go
      node = child(node, static_cast<unsigned char>(text[k]));
      if (node < 0) break;
      if (trie_[size_t(node)].id >= 0) best = trie_[size_t(node)].id, best_end = k + 1;
    }
    if (best < 0) fail("tokenizer", "byte " + std::to_string(static_cast<unsigned char>(text[i])) + " at offset " +
                                        std::to_string(i) + " is not in the RWKV vocabulary");
    out.push_back(best);
    i = best_end;
  }
  return out;
}

std::string RwkvWorldTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id == 0) {
      if (!skip_special) out += kEndOfText;
      continue;
    }
    if (id < 0 || size_t(id) >= tokens_.size() || tokens_[size_t(id)].empty())
      fail("decode", "token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    out += tokens_[size_t(id)];
  }
  return out;
}

int RwkvWorldTokenizer::token_id(const std::string& token) const {
  if (token == kEndOfText) return 0;
  int32_t node = 0;
  for (unsigned char b : token) {
    node = child(node, b);
    if (node < 0) return -1;
  }
  return trie_[size_t(node)].id;
}

}  // namespace sr
