#include "data/text_mix.h"

#include <cctype>

#include "core/rng.h"
#include "core/utf8.h"

namespace sr {

namespace {
const char* const kWords[] = {
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "it", "with", "as", "his", "on", "be", "at", "by",
    "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you", "were", "her", "all",
    "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "more", "no", "if", "out",
    "reading", "model", "window", "state", "memory", "chunk", "summary", "question", "answer", "context", "token",
    "recurrent", "attention", "sliding", "smooth", "engine", "gradient", "kernel", "tensor", "Paris", "London",
    "Tokyo", "Zürich", "naïve", "café", "résumé", "coöperate", "Straße", "façade", "jalapeño", "München", "ÉCOLE",
    "internationalization", "antidisestablishmentarianism", "pneumonoultramicroscopic", "GPT", "HTTP", "JSON",
    "iPhone", "eBay", "McDonald", "O'Neill", "x86_64", "snake_case", "camelCase", "kebab-case", "CONSTANT_VALUE"};
const char* const kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D"};
const char* const kPunct[] = {".", ",", ";", ":", "!", "?", "...", " -- ", " - ", "(", ")", "\"", "'", "[", "]",
                              "{", "}", "/", "\\", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "|", "~", "`"};
const char* const kCode[] = {
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if x != None and y >= 0:\r\n        pass\r\n", "    # comment with  two spaces\n",
    "const auto& [k, v] = *it;  // C++17\n", "SELECT id, name FROM users WHERE age > 30;\n",
    "<div class=\"row\">\n  <span>&nbsp;</span>\n</div>\n", "x = {'a': 1, \"b\": [2, 3.5e-7], 'c': None}\n",
    "\t\t\tdeeply.nested(call)\n", "$ ls -la /usr/local/bin | grep -v '^d'\n", "λx. x → y ≠ z ≤ w\n",
    "fn main() { println!(\"{}\", 42_u64); }\n"};
const char* const kEmoji[] = {"😀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "🇫🇷", "❤️", "🧑🏿‍💻", "🏳️‍🌈", "🤔", "✅", "🔥🔥🔥", "👋🏻", "🙂",
                              "😂🤣", "☕", "🚀", "🎉", "💯", "1️⃣", "©️", "™"};
const char* const kSpecial[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
                                "<|fim_prefix|>"};
const uint32_t kSpaces[] = {0x20, 0x20, 0x20, 0x09, 0x0a, 0x0d, 0xa0, 0x3000, 0x2009, 0x200b, 0x2028, 0x0b, 0x0c,
                            0x85, 0x1680, 0x202f};
const uint32_t kNumLike[] = {0x2160, 0x216b, 0xb2, 0xb3, 0xb9, 0xbd, 0xbc, 0x2153, 0x0660, 0x0663, 0x0966, 0xff11,
                             0x2460, 0x3007};

struct Range {
  uint32_t lo, hi;
};
const Range kScripts[] = {
    {0x4e00, 0x9fa5},  // CJK ideographs
    {0x3041, 0x3096},  // hiragana
    {0x30a1, 0x30fa},  // katakana
    {0xac00, 0xd7a3},  // hangul syllables
    {0x0410, 0x044f},  // Cyrillic
    {0x0391, 0x03c9},  // Greek
    {0x0627, 0x064a},  // Arabic letters
    {0x0905, 0x0939},  // Devanagari letters
    {0x0e01, 0x0e30},  // Thai
    {0x05d0, 0x05ea},  // Hebrew
};
}  // namespace

std::vector<std::string> make_text_mix(uint64_t seed, int count, int doc_bytes) {
  Rng r(seed);
  auto pick = [&](auto& arr) -> decltype(arr[0]) { return arr[r.below(sizeof(arr) / sizeof(arr[0]))]; };
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string s;
    while (int(s.size()) < doc_bytes) {
      const uint64_t kind = r.below(100);
      if (kind < 40) {  // English-like sentence
        const int n = 3 + int(r.below(14));
        for (int i = 0; i < n; ++i) {
          std::string w = pick(kWords);
          if (i == 0 || r.below(20) == 0) w[0] = char(std::toupper(static_cast<unsigned char>(w[0])));
          if (r.below(40) == 0)
            for (auto& c : w) c = char(std::toupper(static_cast<unsigned char>(c)));
          s += w;
          if (r.below(12) == 0) s += pick(kContractions);
          if (r.below(10) == 0) s += pick(kPunct);
          s += i + 1 < n ? " " : "";
        }
        s += r.below(3) ? ". " : r.below(2) ? "!\n" : "?\n\n";
      } else if (kind < 50) {  // numbers, dates, versions
        const uint64_t f = r.below(5);
        if (f == 0) s += std::to_string(r.below(1000000000));
        else if (f == 1) s += std::to_string(1900 + r.below(200)) + "-" + std::to_string(1 + r.below(12)) + "-" + std::to_string(1 + r.below(28));
        else if (f == 2) s += std::to_string(r.below(100)) + "." + std::to_string(r.below(100000));
        else if (f == 3) s += "v" + std::to_string(r.below(10)) + "." + std::to_string(r.below(30)) + ".0-rc" + std::to_string(r.below(9));
        else s += "$" + std::to_string(r.below(10000)) + ",000.00";
        s += " ";
      } else if (kind < 60) {  // code
        s += pick(kCode);
      } else if (kind < 75) {  // another script, runs of letters with its punctuation
        const Range sc = pick(kScripts);
        const int n = 2 + int(r.below(30));
        for (int i = 0; i < n; ++i) {
          append_utf8(s, sc.lo + uint32_t(r.below(sc.hi - sc.lo + 1)));
          if (sc.lo == 0x0905 && r.below(3) == 0) append_utf8(s, 0x093e + uint32_t(r.below(8)));  // Devanagari vowel sign
          if (r.below(15) == 0) s += sc.lo == 0x4e00 ? (r.below(2) ? "，" : "。") : " ";
        }
        s += r.below(2) ? "" : "\n";
      } else if (kind < 82) {  // emoji
        const int n = 1 + int(r.below(4));
        for (int i = 0; i < n; ++i) s += pick(kEmoji), s += r.below(2) ? "" : " ";
      } else if (kind < 88) {  // whitespace runs, exotic spaces included
        const int n = 1 + int(r.below(r.below(4) == 0 ? 60 : 6));
        for (int i = 0; i < n; ++i) append_utf8(s, pick(kSpaces));
      } else if (kind < 93) {  // decomposed letters (NFC composes them) and letter-like numbers
        const int n = 1 + int(r.below(6));
        for (int i = 0; i < n; ++i) {
          if (r.below(2)) {
            s.push_back("aeiouAEIOUnc"[r.below(12)]);
            append_utf8(s, 0x0300 + uint32_t(r.below(0x0c)));  // a combining accent
          } else {
            append_utf8(s, pick(kNumLike));
          }
        }
        s += " ";
      } else if (kind < 96) {  // chat / tool markers
        s += pick(kSpecial);
        if (r.below(2)) s += "user\n";
      } else {  // long repeats (BPE's long-piece path)
        const int n = 20 + int(r.below(200));
        const char* rep[] = {"=", "-", "a", "ab", "0", "\xe4\xb8\xad"};
        const char* x = rep[r.below(6)];
        for (int i = 0; i < n; ++i) s += x;
        s += "\n";
      }
    }
    docs.push_back(std::move(s));
  }
  return docs;
}

}  // namespace sr
