#include "core/utf8.h"

#include <cstdint>

namespace sr {

static bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is invalid.
int utf8_len_at(const std::string& s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (!len || i + len > s.size()) return 0;
  uint32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if (!is_continuation(d)) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  // overlong forms, surrogates, beyond U+10FFFF
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

size_t find_invalid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    int len = utf8_len_at(s, i);
    if (!len) return i;
    i += size_t(len);
  }
  return std::string::npos;
}

std::string make_valid_utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    int len = utf8_len_at(s, i);
    if (len) {
      out.append(s, i, size_t(len));
      i += size_t(len);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for one invalid byte
      ++i;
    }
  }
  return out;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s.push_back(char(cp));
  } else if (cp < 0x800) {
    s.push_back(char(0xc0 | (cp >> 6))), s.push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    s.push_back(char(0xe0 | (cp >> 12))), s.push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    s.push_back(char(0x80 | (cp & 0x3f)));
  } else {
    s.push_back(char(0xf0 | (cp >> 18))), s.push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    s.push_back(char(0x80 | ((cp >> 6) & 0x3f))), s.push_back(char(0x80 | (cp & 0x3f)));
  }
}

}  // namespace sr
