#include "reading/chunker.h"

#include <algorithm>

#include "core/error.h"

namespace sr {

namespace {
const std::vector<std::string> kDelimiters = {"\n\n\n", "\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " "};

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Largest char boundary b in (begin, end] with count(text[begin, b)) <= C; at least one character.
size_t hard_cut(const std::string& text, size_t begin, size_t end, const Tokenizer& tok, int C, bool est) {
  std::vector<size_t> bounds;  // candidate cut points: starts of characters, and end
  for (size_t b = begin + 1; b <= end; ++b)
    if (b == end || !is_continuation(static_cast<unsigned char>(text[b]))) bounds.push_back(b);
  size_t lo = 0, hi = bounds.size() - 1;  // bounds[lo] always allowed (a single character)
  while (lo < hi) {
    size_t mid = lo + (hi - lo + 1) / 2;
    if (count_tokens(std::string_view(text).substr(begin, bounds[mid] - begin), tok, est) <= C) lo = mid;
    else hi = mid - 1;
  }
  return bounds[lo];
}

// Splits [begin,end) into pieces of at most C tokens, each ending after its delimiter.
void split(const std::string& text, size_t begin, size_t end, size_t level, const Tokenizer& tok, int C, bool est,
           std::vector<Chunk>& out) {
  if (begin >= end) return;
  int n = count_tokens(std::string_view(text).substr(begin, end - begin), tok, est);
  if (n <= C) {
    out.push_back({begin, end, n});
    return;
  }
  if (level >= kDelimiters.size()) {  // no delimiter left: cut on character boundaries
    size_t at = begin;
    while (at < end) {
      size_t cut = hard_cut(text, at, end, tok, C, est);
      out.push_back({at, cut, count_tokens(std::string_view(text).substr(at, cut - at), tok, est)});
      at = cut;
    }
    return;
  }
  const std::string& d = kDelimiters[level];
  size_t at = begin;
  while (at < end) {
    size_t hit = text.find(d, at);
    size_t stop = (hit == std::string::npos || hit + d.size() > end) ? end : hit + d.size();
    split(text, at, stop, level + 1, tok, C, est, out);
    at = stop;
  }
}
}  // namespace

int count_tokens(std::string_view text, const Tokenizer& tok, bool word_estimate) {
  if (!word_estimate) return int(tok.count_plain(text));
  int words = 0;
  bool in = false;
  for (char c : text) {
    bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in) ++words;
    in = !space;
  }
  return int(1.5 * words);
}

std::vector<Chunk> chunk_text(const std::string& text, const Tokenizer& tok, const ChunkerOptions& opt) {
  const int C = opt.chunk_tokens;
  if (C < 1) fail("--chunk-tokens", "must be positive");
  std::vector<Chunk> pieces, chunks;
  split(text, 0, text.size(), 0, tok, C, opt.word_estimate, pieces);
  // Greedy packing. Token counts of concatenated pieces are checked for real (BPE merges across
  // piece boundaries can change the sum), so no chunk ever exceeds C.
  for (const Chunk& p : pieces) {
    if (!chunks.empty() && chunks.back().tokens + p.tokens <= C) {
      Chunk& c = chunks.back();
      int merged = tok.counts_are_additive() && !opt.word_estimate
                       ? c.tokens + p.tokens
                       : count_tokens(std::string_view(text).substr(c.begin, p.end - c.begin), tok, opt.word_estimate);
      if (merged <= C) {
        c.end = p.end;
        c.tokens = merged;
        continue;
      }
    }
    chunks.push_back(p);
  }
  return chunks;
}

}  // namespace sr
