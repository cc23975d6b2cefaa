// A deterministic multilingual text mix for tokenizer checks and benchmarks: English prose with
// contractions in any case, numbers and dates, code with tabs/spaces/CRLF, Chinese, Japanese,
// Korean, Cyrillic, Greek, Arabic, Devanagari (combining marks), emoji (ZWJ sequences, skin tones,
// flags), decomposed letters (NFC work), exotic whitespace (NBSP, ideographic, thin space, ZWSP)
// and runs of it, letter-like numbers (Ⅻ, ², ½), and chat special-token strings. Only valid
// Unicode scalar values (no surrogates). Same seed -> same bytes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sr {

// count documents of about doc_bytes bytes each.
std::vector<std::string> make_text_mix(uint64_t seed, int count, int doc_bytes = 4096);

}  // namespace sr
