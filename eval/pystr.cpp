#include "eval/pystr.h"

#include <algorithm>

namespace sr::py {

namespace {
struct CodeRange {
  char32_t lo, hi;
};
struct LowerMap {
  char32_t from, to0, to1;  // to1 = 0: single code point
};
#include "eval/pystr_tables.inc"

template <size_t N>
bool in(const CodeRange (&t)[N], char32_t c) {
  const CodeRange* it = std::upper_bound(t, t + N, c, [](char32_t v, const CodeRange& r) { return v < r.lo; });
  return it != t && c <= (it - 1)->hi;
}
const LowerMap* lower_of(char32_t c) {
  constexpr size_t n = sizeof(kLower) / sizeof(kLower[0]);
  const LowerMap* it = std::lower_bound(kLower, kLower + n, c, [](const LowerMap& m, char32_t v) { return m.from < v; });
  return it != kLower + n && it->from == c ? it : nullptr;
}
bool sigma_ignorable(char32_t c) { return in(kSigmaIgnorable, c); }
bool sigma_cased(char32_t c) { return in(kSigmaCased, c); }
}  // namespace

ustr from_utf8(const std::string& s) {
  ustr out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char b = s[i];
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    char32_t c = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
    bool ok = n > 0 && i + n <= s.size();
    for (int k = 1; ok && k < n; ++k) {
      unsigned char t = s[i + k];
      if ((t >> 6) != 2) ok = false;
      c = (c << 6) | (t & 0x3F);
    }
    if (ok && ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
               (c >= 0xD800 && c <= 0xDFFF)))
      ok = false;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
    } else {
      out.push_back(c);
      i += n;
    }
  }
  return out;
}

std::string to_utf8(const ustr& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xC0 | (c >> 6)), out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += char(0xE0 | (c >> 12)), out += char(0x80 | ((c >> 6) & 0x3F)), out += char(0x80 | (c & 0x3F));
    } else {
      out += char(0xF0 | (c >> 18)), out += char(0x80 | ((c >> 12) & 0x3F));
      out += char(0x80 | ((c >> 6) & 0x3F)), out += char(0x80 | (c & 0x3F));
    }
  }
  return out;
}

bool is_space(char32_t c) { return in(kSpace, c); }
bool is_digit(char32_t c) { return in(kDigit, c); }
bool is_word(char32_t c) { return in(kWord, c); }

ustr lower(const ustr& s) {
  ustr out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c == 0x3A3) {  // final sigma: cased (ignorable)* SIGMA !((ignorable)* cased)
      long j = long(i) - 1;
      while (j >= 0 && sigma_ignorable(s[j])) --j;
      bool fin = j >= 0 && sigma_cased(s[j]);
      if (fin) {
        size_t k = i + 1;
        while (k < s.size() && sigma_ignorable(s[k])) ++k;
        fin = k == s.size() || !sigma_cased(s[k]);
      }
      out.push_back(fin ? 0x3C2 : 0x3C3);
      continue;
    }
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    const LowerMap* m = lower_of(c);
    if (!m) {
      out.push_back(c);
    } else {
      out.push_back(m->to0);
      if (m->to1) out.push_back(m->to1);
    }
  }
  return out;
}

std::vector<ustr> split(const ustr& s) {
  std::vector<ustr> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t b = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > b) out.emplace_back(s, b, i - b);
  }
  return out;
}

std::vector<ustr> split_on(const ustr& s, const ustr& sep) {
  std::vector<ustr> out;
  size_t b = 0;
  for (size_t p; (p = s.find(sep, b)) != ustr::npos; b = p + sep.size()) out.emplace_back(s, b, p - b);
  out.emplace_back(s, b);
  return out;
}

ustr join(const std::vector<ustr>& parts, const ustr& sep) {
  ustr out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

ustr lstrip_char(const ustr& s, char32_t c) {
  size_t i = 0;
  while (i < s.size() && s[i] == c) ++i;
  return s.substr(i);
}

bool contains(const ustr& hay, const ustr& needle) { return hay.find(needle) != ustr::npos; }

std::vector<ustr> digit_runs(const ustr& s) {
  std::vector<ustr> out;
  for (size_t i = 0; i < s.size();) {
    if (!is_digit(s[i])) {
      ++i;
      continue;
    }
    size_t b = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    out.emplace_back(s, b, i - b);
  }
  return out;
}

}  // namespace sr::py
