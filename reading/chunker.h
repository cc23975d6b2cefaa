// Chunker (protocol.md "Chunking"): hierarchical split on a priority list of delimiters
// ("\n\n\n", "\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " "), then a hard cut on character
// boundaries, then greedy packing of the pieces into chunks of at most C tokens counted with
// the model's tokenizer (document text is encoded with special-token parsing OFF, so a document
// can never inject a reading marker). Optionally the paper's estimate tokens = int(1.5 x words).
// Chunks are byte spans: they concatenate back to the input exactly, never inside a UTF-8
// character (unless the input itself is not valid UTF-8).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/utf8.h"
#include "models/tokenizer.h"

namespace sr {

struct Chunk {
  size_t begin = 0, end = 0;  // byte span [begin, end)
  int tokens = 0;             // token count (or the word estimate)
};

struct ChunkerOptions {
  int chunk_tokens = 512;
  bool word_estimate = false;  // count tokens as int(1.5 x words) instead of tokenizing
};

std::vector<Chunk> chunk_text(const std::string& text, const Tokenizer& tok, const ChunkerOptions& opt);

// Number of tokens of `text` as the chunker counts them.
int count_tokens(std::string_view text, const Tokenizer& tok, bool word_estimate);


}  // namespace sr
