// The Smooth Reading protocol's markers and the SFT rendering of trajectories (protocol.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/io.h"
#include "models/tokenizer.h"

namespace sr {

struct Markers {
  std::string query = "<|query|>", chunk = "<|chunk|>", summary = "<|summary|>", memory = "<|memory|>",
              answer = "<|answer|>", eod = "<|eod|>", read = "<READ>", stop = "<STOP>", eos = "<|endoftext|>";
};

// Token ids + per-token loss weights of one training sequence.
struct RenderedSequence {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

// Renders a trajectory record {"query","chunks","summaries","actions","answer"} in the EMR layout:
//   <|query|>{q}\n (<|chunk|>{chunk}[<|eod|>]<|summary|>{summary}\n<READ|STOP>)* <|answer|>{answer}<|endoftext|>
// Loss weight 1 on summary tokens through the action token and on answer tokens through
// <|endoftext|>; `chunk_weight` on chunk text; 0 on the query and on markers the runtime appends.
// `where` names the file:line in errors. The last chunk of the context gets <|eod|> when
// record["eod_after_last"] is true or when the last action is STOP without early stop evidence
// (the generator sets "eod_after_last" explicitly).
RenderedSequence render_trajectory(const json& rec, const Tokenizer& tok, const Markers& m, float chunk_weight,
                                   const std::string& where);

// Baseline layouts (protocol.md "NMR and OR layouts"), selected by record["layout"]:
//   "or":  {"query","context","answer"[, "context_first": true]}
//          <|query|>{q}\n<|chunk|>{context}<|eod|><|answer|>{answer}<|endoftext|>   (or context-first)
//   "nmr": one round {"query","memory","chunk","eod","summary","action"[,"answer" when STOP]}
//          <|query|>{q}\n<|memory|>{memory}<|chunk|>{chunk}[<|eod|>]<|summary|>{summary}\n<ACTION>[<|answer|>...]
// Loss as in EMR: summary through the action, answer through <|endoftext|>; chunk_weight on text.
RenderedSequence render_baseline(const json& rec, const Tokenizer& tok, const Markers& m, float chunk_weight,
                                 const std::string& where);

}  // namespace sr
