// UTF-8 validation and repair (documents, questions, and model output that goes into JSON).
#pragma once
#include <cstdint>
#include <string>

namespace sr {
// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is invalid (overlong,
// surrogate, beyond U+10FFFF, truncated).
int utf8_len_at(const std::string& s, size_t i);
// Byte offset of the first invalid sequence, or npos when `s` is valid UTF-8.
size_t find_invalid_utf8(const std::string& s);
// Replaces every invalid byte with U+FFFD.
std::string make_valid_utf8(const std::string& s);
// Appends code point cp (<= U+10FFFF) encoded as UTF-8.
void append_utf8(std::string& s, uint32_t cp);
}  // namespace sr
