// CPython 3.11 string semantics on code points, as LongBench's scorer (Python) sees strings:
// str.lower() (full mapping, final sigma), str.split() (Unicode whitespace), re's \s \d \w.
// Tables: eval/pystr_tables.inc, generated from the interpreter by scripts/gen_pystr_tables.py.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sr::py {

using ustr = std::u32string;

// Hash for unordered containers keyed by code-point strings (FNV-1a).
struct UHash {
  size_t operator()(const ustr& s) const noexcept {
    uint64_t h = 1469598103934665603ull;
    for (char32_t c : s) h = (h ^ c) * 1099511628211ull;
    return size_t(h);
  }
};

ustr from_utf8(const std::string& s);  // invalid bytes become U+FFFD (the scorer reads JSON: valid)
std::string to_utf8(const ustr& s);

bool is_space(char32_t c);  // str.isspace() == re \s
bool is_digit(char32_t c);  // re \d (Unicode Nd)
bool is_word(char32_t c);   // re \w (str.isalnum() or '_')

ustr lower(const ustr& s);                   // str.lower()
std::vector<ustr> split(const ustr& s);      // str.split()
std::vector<ustr> split_on(const ustr& s, const ustr& sep);  // str.split(sep), sep non-empty
ustr join(const std::vector<ustr>& parts, const ustr& sep);
ustr lstrip_char(const ustr& s, char32_t c);  // str.lstrip(c)
bool contains(const ustr& hay, const ustr& needle);  // `needle in hay`
// re.findall(r"\d+", s)
std::vector<ustr> digit_runs(const ustr& s);

}  // namespace sr::py
