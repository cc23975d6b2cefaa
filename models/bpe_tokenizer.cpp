#include "models/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <queue>

#include "core/error.h"
#include "core/utf8.h"

namespace sr {

// ---- PCRE2 regex with JIT, UTF + Unicode properties ----
struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  Regex(const std::string& pattern, bool literal, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0);
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(where, "cannot compile the pre-tokenizer regex at offset " + std::to_string(off) + ": " +
                      reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  }
  ~Regex() { pcre2_code_free(code); }
  // Calls f(begin, end) for every match in s (non-empty matches; an empty match advances by one character).
  template <class F>
  void for_each_match(std::string_view s, F f) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    size_t pos = 0;
    while (pos < s.size()) {
      int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step over one character
        pos = b + std::max(1, utf8_len_at(std::string(s.substr(b, 4)), 0));
        continue;
      }
      f(b, e);
      pos = e;
    }
    pcre2_match_data_free(md);
  }
};

namespace {
uint32_t decode_cp(const std::string& s, size_t& i) {  // valid UTF-8 assumed
  unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
  uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  i += size_t(n);
  return cp;
}
// True when NFC cannot change s: every code point is below U+0300 (no combining marks, no Hangul
// jamo; Latin-1 and Latin Extended-A/B are NFC-stable), i.e. no UTF-8 lead byte >= 0xCC.
bool nfc_stable(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0xcc) return false;
  return true;
}
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
}  // namespace

BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer::BpeTokenizer(const json& j, const std::string& where) : json_(j) {
  const json& m = j["model"];
  const std::string mw = where + ": field 'model";
  if (json_bool_or(m, "byte_fallback", false, mw + "'"))
    fail(mw + ".byte_fallback'", "byte_fallback (SentencePiece-style BPE) is not supported; only byte-level BPE");
  for (const char* f : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(f) && !m[f].is_null() && !(m[f].is_string() && m[f].get<std::string>().empty()))
      fail(mw + "." + f + "'", "must be empty for byte-level BPE");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0)
    fail(mw + ".dropout'", "BPE dropout is not supported (inference tokenizers have none)");
  ignore_merges_ = json_bool_or(m, "ignore_merges", false, mw + "'");
  // vocabulary
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail(mw + ".vocab'", "missing or not an object");
  int32_t max_id = -1;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
      fail(mw + ".vocab." + it.key() + "'", "token ids must be non-negative integers");
    vocab_.emplace(it.key(), it->get<int32_t>());
    max_id = std::max(max_id, it->get<int32_t>());
  }
  const json empty = json::array();
  const json& added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : empty;
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string aw = where + ": field 'added_tokens[" + std::to_string(i) + "]'";
    Added a{json_str(added[i], "content", aw), int32_t(json_int(added[i], "id", aw)),
            json_bool_or(added[i], "special", false, aw), json_bool_or(added[i], "lstrip", false, aw),
            json_bool_or(added[i], "rstrip", false, aw)};
    if (a.content.empty() || a.id < 0) fail(aw, "needs a non-empty content and a non-negative id");
    max_id = std::max(max_id, a.id);
    added_.push_back(a);
  }
  std::stable_sort(added_.begin(), added_.end(), [](const Added& x, const Added& y) { return x.content.size() > y.content.size(); });
  id_to_token_.assign(size_t(max_id + 1), "");
  id_special_.assign(size_t(max_id + 1), 0);
  for (auto& [tok, id] : vocab_) id_to_token_[size_t(id)] = tok;
  for (const Added& a : added_) id_to_token_[size_t(a.id)] = a.content, id_special_[size_t(a.id)] = a.special ? 2 : 1;
  // the 256 byte-level symbols
  byte_id_.assign(256, -1);
  symbol_byte_.assign(512, -1);
  for (int b = 0; b < 256; ++b) {
    const std::string sym = byte_level_symbol(static_cast<unsigned char>(b));
    size_t i = 0;
    symbol_byte_[decode_cp(sym, i)] = int16_t(b);
    auto it = vocab_.find(sym);
    if (it != vocab_.end()) byte_id_[size_t(b)] = it->second;
  }
  // merges: "a b" strings or [a, b] pairs, ranked by position
  const json& merges = m.contains("merges") && m["merges"].is_array() ? m["merges"] : empty;
  merges_.reserve(merges.size() * 2);
  for (size_t i = 0; i < merges.size(); ++i) {
    std::string a, b;
    if (merges[i].is_string()) {
      const std::string s = merges[i].get<std::string>();
      const size_t sp = s.find(' ');
      if (sp != std::string::npos) a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() && merges[i][1].is_string()) {
      a = merges[i][0].get<std::string>(), b = merges[i][1].get<std::string>();
    }
    const std::string fw = mw + ".merges[" + std::to_string(i) + "]'";
    if (a.empty() || b.empty()) fail(fw, "expected \"left right\" or [left, right]");
    auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || ic == vocab_.end())
      fail(fw, "'" + a + "' + '" + b + "' is not in the vocabulary");
    merges_.emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second), std::make_pair(int32_t(i), ic->second));
  }
  // normalizer: none or NFC (possibly in a Sequence)
  auto normalizer = [&](const json& n, const std::string& nw, auto& self) -> void {
    if (n.is_null()) return;
    const std::string t = json_str_or(n, "type", "", nw);
    if (t == "NFC") nfc_ = true;
    else if (t == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array())
      for (size_t i = 0; i < n["normalizers"].size(); ++i) self(n["normalizers"][i], nw + ".normalizers[" + std::to_string(i) + "]", self);
    else fail(where + ": field '" + nw + "'", "normalizer '" + t + "' is not supported (supported: NFC)");
  };
  if (j.contains("normalizer")) normalizer(j["normalizer"], "normalizer", normalizer);
  // pre-tokenizer: Split (Isolated) and/or ByteLevel
  bool byte_level = false;
  auto pre = [&](const json& p, const std::string& pw, auto& self) -> void {
    if (p.is_null()) return;
    const std::string t = json_str_or(p, "type", "", pw);
    const std::string fw = where + ": field '" + pw + "'";
    if (t == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array()) {
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i)
        self(p["pretokenizers"][i], pw + ".pretokenizers[" + std::to_string(i) + "]", self);
    } else if (t == "ByteLevel") {
      byte_level = true;
      add_prefix_space_ = json_bool_or(p, "add_prefix_space", false, fw);
      byte_level_regex_ = json_bool_or(p, "use_regex", true, fw);
      if (byte_level_regex_) gpt2_ = std::make_unique<Regex>(kGpt2Regex, false, fw);
    } else if (t == "Split") {
      if (split_) fail(fw, "only one Split pre-tokenizer is supported");
      if (json_str_or(p, "behavior", "Isolated", fw) != "Isolated")
        fail(fw + ".behavior", "only 'Isolated' is supported");
      if (json_bool_or(p, "invert", false, fw)) fail(fw + ".invert", "inverted splits are not supported");
      if (!p.contains("pattern") || !p["pattern"].is_object()) fail(fw + ".pattern", "missing");
      const json& pat = p["pattern"];
      if (pat.contains("Regex")) split_ = std::make_unique<Regex>(json_str(pat, "Regex", fw + ".pattern"), false, fw);
      else split_ = std::make_unique<Regex>(json_str(pat, "String", fw + ".pattern"), true, fw);
    } else {
      fail(fw, "pre-tokenizer '" + t + "' is not supported (supported: Split, ByteLevel, Sequence)");
    }
  };
  if (j.contains("pre_tokenizer")) pre(j["pre_tokenizer"], "pre_tokenizer", pre);
  if (!byte_level) fail(where + ": field 'pre_tokenizer'", "only byte-level BPE is supported (no ByteLevel pre-tokenizer found)");
  for (int b = 0; b < 256; ++b)
    if (byte_id_[size_t(b)] < 0)
      fail(where + ": field 'model.vocab'", "byte-level symbol for byte " + std::to_string(b) + " is missing");
}

std::string BpeTokenizer::kind() const {
  std::string k = "byte-level BPE (" + std::to_string(vocab_.size()) + " tokens, " + std::to_string(merges_.size()) +
                  " merges";
  if (nfc_) k += ", NFC";
  if (split_) k += ", Split regex";
  if (ignore_merges_) k += ", ignore_merges";
  return k + ")";
}

int BpeTokenizer::token_id(const std::string& token) const {
  for (const Added& a : added_)
    if (a.content == token) return a.id;
  auto it = vocab_.find(token);
  if (it != vocab_.end()) return it->second;
  std::string sym;  // the plain text's byte-level spelling
  for (unsigned char c : token) sym += byte_level_symbol(c);
  it = vocab_.find(sym);
  return it == vocab_.end() ? -1 : it->second;
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < id_special_.size() && id_special_[size_t(id)] == 2;
}

// Lowest-ranked adjacent pair first (leftmost on ties), as tokenizers' priority queue does.
void BpeTokenizer::bpe(std::vector<int32_t>& s) const {
  const size_t n = s.size();
  if (n < 2) return;
  auto rank_of = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  if (n <= 48) {  // short pieces: a scan per merge
    std::vector<int32_t> v = s;
    while (v.size() > 1) {
      int32_t best = INT32_MAX, merged = -1;
      size_t at = 0;
      for (size_t i = 0; i + 1 < v.size(); ++i)
        if (auto r = rank_of(v[i], v[i + 1]); r && r->first < best) best = r->first, merged = r->second, at = i;
      if (merged < 0) break;
      v[at] = merged;
      v.erase(v.begin() + long(at) + 1);
    }
    s.swap(v);
    return;
  }
  // long pieces: linked list + heap of (rank, position)
  std::vector<int> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) prev[i] = int(i) - 1, next[i] = i + 1 < n ? int(i + 1) : -1;
  struct Cand {
    int32_t rank;
    int pos;
    int32_t left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> pq;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    if (auto r = rank_of(s[size_t(i)], s[size_t(next[i])])) pq.push({r->first, i, s[size_t(i)], s[size_t(next[i])]});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int(i));
  while (!pq.empty()) {
    Cand c = pq.top();
    pq.pop();
    const int i = c.pos, jn = next[size_t(i)];
    if (!alive[size_t(i)] || jn < 0 || s[size_t(i)] != c.left || s[size_t(jn)] != c.right) continue;  // stale
    s[size_t(i)] = rank_of(c.left, c.right)->second;
    alive[size_t(jn)] = 0;
    next[size_t(i)] = next[size_t(jn)];
    if (next[size_t(i)] >= 0) prev[size_t(next[size_t(i)])] = i;
    push(prev[size_t(i)]);
    push(i);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0; i = next[size_t(i)]) out.push_back(s[size_t(i)]);
  s.swap(out);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  std::string key(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bool whole = false;
  if (ignore_merges_) {
    std::string sym;
    for (unsigned char c : piece) sym += byte_level_symbol(c);
    auto it = vocab_.find(sym);
    if (it != vocab_.end()) ids.push_back(it->second), whole = true;
  }
  if (!whole) {
    ids.reserve(piece.size());
    for (unsigned char c : piece) ids.push_back(byte_id_[c]);
    bpe(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.size() > 200000) cache_.clear();
  cache_.emplace(std::move(key), std::move(ids));
}

void BpeTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string norm;
  if (nfc_ && !nfc_stable(text)) {
    utf8proc_uint8_t* p = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(std::string(text).c_str()));
    if (!p) fail("tokenizer", "NFC normalization failed (invalid UTF-8?)");
    norm = reinterpret_cast<char*>(p);
    std::free(p);
  } else {
    norm.assign(text);
  }
  if (add_prefix_space_ && !norm.empty() && norm[0] != ' ') norm.insert(norm.begin(), ' ');
  auto by_gpt2 = [&](std::string_view s) {
    if (!gpt2_) return encode_piece(s, out);
    gpt2_->for_each_match(s, [&](size_t b, size_t e) { encode_piece(s.substr(b, e - b), out); });
  };
  const std::string_view s(norm);
  if (!split_) return by_gpt2(s);
  size_t last = 0;  // Isolated: the gaps between matches are pieces too
  split_->for_each_match(s, [&](size_t b, size_t e) {
    if (b > last) by_gpt2(s.substr(last, b - last));
    by_gpt2(s.substr(b, e - b));
    last = e;
  });
  if (last < s.size()) by_gpt2(s.substr(last));
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text, bool parse_special) const {
  const size_t bad = find_invalid_utf8(text);
  if (bad != std::string::npos) fail("tokenizer", "invalid UTF-8 at byte " + std::to_string(bad));
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  bool first_byte[256] = {};
  for (const Added& a : added_)
    if (parse_special || !a.special) first_byte[static_cast<unsigned char>(a.content[0])] = true;
  size_t seg = 0, i = 0;
  while (i < text.size()) {
    if (!first_byte[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const Added* hit = nullptr;
    for (const Added& a : added_)  // longest first
      if ((parse_special || !a.special) && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    size_t end_plain = i, next = i + hit->content.size();
    if (hit->lstrip)
      while (end_plain > seg && (text[end_plain - 1] == ' ' || text[end_plain - 1] == '\t' || text[end_plain - 1] == '\n'))
        --end_plain;
    if (hit->rstrip)
      while (next < text.size() && (text[next] == ' ' || text[next] == '\t' || text[next] == '\n')) ++next;
    encode_plain(std::string_view(text).substr(seg, end_plain - seg), out);
    out.push_back(hit->id);
    seg = i = next;
  }
  encode_plain(std::string_view(text).substr(seg), out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= id_to_token_.size() || id_to_token_[size_t(id)].empty())
      fail("decode", "token id " + std::to_string(id) + " is outside the vocabulary (size " + std::to_string(vocab_size()) + ")");
    const std::string& t = id_to_token_[size_t(id)];
    if (id_special_[size_t(id)]) {  // an added token: its text as is
      if (!(skip_special && id_special_[size_t(id)] == 2)) out += t;
      continue;
    }
    for (size_t i = 0; i < t.size();) {  // byte-level symbols back to bytes
      const size_t i0 = i;
      const uint32_t cp = decode_cp(t, i);
      if (cp < symbol_byte_.size() && symbol_byte_[cp] >= 0) out.push_back(char(symbol_byte_[cp]));
      else out.append(t, i0, i - i0);
    }
  }
  return out;
}

std::string Utf8StreamDecoder::push(const std::vector<int32_t>& ids) {
  pending_ += tok_.decode(ids, skip_);
  // keep back an incomplete UTF-8 sequence at the end (at most 3 bytes)
  size_t keep = 0;
  for (size_t k = 1; k <= std::min<size_t>(3, pending_.size()); ++k) {
    const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - k]);
    if ((c & 0xc0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (need > k) keep = k;
    break;
  }
  std::string ready = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return ready;
}

std::string Utf8StreamDecoder::flush() {
  std::string r;
  r.swap(pending_);
  return r;
}

}  // namespace sr
