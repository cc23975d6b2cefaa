// Synthetic long-context tasks with known answers at any length (issue 4; RULER / passkey
// conventions, ../shared/docs/evals.md), and Smooth Reading training trajectories built from them
// with rule-based Target / Clues / Reason summaries (protocol.md).
// Implemented families: passkey, niah_single_1 (noise haystack, number values), niah_single_2
// (pseudo-essay haystack, number values), niah_single_3 (pseudo-essay, uuid values),
// niah_multikey_1 (3 distractor needles), niah_multikey_2 / _3 (the haystack is distractor needles;
// number values / uuid keys and values), niah_multivalue (4 values), niah_multiquery (4 keys asked),
// vt (variable tracking: assignment chains in a noise haystack; chains and hops configurable),
// qa_hop (two-hop QA over generated facts, "P works for C" + "C is based in X", with distractor
// pairs; its records add "clues": the facts needed, in evidence order), cwe / fwe (RULER common- and
// frequent-word extraction; records carry "aggregate": k and no evidence spans; their trajectories
// keep running counts of the top k words in Clues and read to the end).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/io.h"
#include "models/tokenizer.h"

namespace sr {

struct SyntheticOptions {
  std::string task = "passkey";
  int tokens = 4096;   // target context length in tokens of `tok`
  int count = 100;
  uint64_t seed = 0;
  double depth = -1;   // fixed needle depth in [0,1]; < 0 = uniform random per sample
  int depth_grid = 0;  // > 0: sample i puts its needles at depth (i mod G) / (G - 1) (RULER/NIAH grids)
  int vt_chains = 1, vt_hops = 4;
  double number_noise = 0;  // probability that a haystack sentence is followed by a keyless number sentence
  // passkey / niah sentences: "ruler" | "varied" | "wide" (training pools; wide contains varied) |
  // "open" (wide, half the keys with an invented word, distractor keys sharing a word with the
  // asked one) | "heldout"
  std::string phrasing = "ruler";
  // niah value type override: "number" | "word" | "uuid" | "mixed" (3-10 digits, codes, words, uuids) |
  // "free" (numbers, dashed combinations, lowercase passwords, short phrases);
  // "" = the task's own
  std::string values;
  // User haystack texts (--haystack FILE...): replace the task's filler (essay or noise) for every
  // needle task except niah_multikey_2/3, whose haystack is needles;
  // sentences are taken in order from a random starting point, cycling through the files.
  std::vector<std::string> haystack_files;  // variable tracking: chains (1 asked, the rest distract), hops
};

// Records: {"id","task","context","input","answers","length","depths","evidence":[[b,e]],"target"}
// ("target": the short restated goal that trajectories put in their Target line; niah records with
// needles of other keys add "distractors": [[value begin, value end, key], ...]).
std::vector<json> make_synthetic(const SyntheticOptions& o, const Tokenizer& tok);
std::vector<std::string> synthetic_task_names();

// Trajectory per protocol.md from a record: chunk the context with a chunk size drawn from
// [cmin, cmax], rule-based summaries, STOP once every evidence span is read (or at the end).
// reject_distractors: a chunk that holds a needle of another key (record "distractors") says so in
// its Reason ("the value here is for <key>, not the one asked") instead of "not in this part".
json make_trajectory(const json& record, const Tokenizer& tok, int cmin, int cmax, uint64_t seed,
                     bool reject_distractors = false);

// Baseline training samples from the same trajectory (reading/protocol.h render_baseline):
// one OR sample over the whole context, or one NMR sample per round (memory = previous summary).
json make_or_sample(const json& record, bool context_first);
std::vector<json> make_nmr_samples(const json& trajectory);

}  // namespace sr
