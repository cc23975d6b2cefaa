#!/usr/bin/env bash
# The paper's efficiency comparison with `smoothread bench` (issue 11): Smooth Reading (EMR) with
# sliding-window attention vs one-pass (OR) reading with full attention, same model shape, same
# run; then training tokens/s. One command per device:
#   bash bench/efficiency.sh cpu              # the default model's shape (9.5M), 4k and 16k
#   bash bench/efficiency.sh cuda             # Qwen2.5-3B shape, bf16 GEMMs, 4k..256k (GPU machine)
# Documents in LONG (cuda: 128k, 256k) are timed once without warm-up (emr_long, or_long).
# Each bench (emr, or, emr_long, or_long, emr_nosummary, train_swa, train_full) is skipped when its JSON exists (delete
# runs/efficiency-DEVICE to rerun); ONLY=emr,or runs just those; the report comes once all four exist.
# Output: runs/efficiency-DEVICE/ (the bench JSON files and report.md: one table with commit, build,
# CPU/GPU, threads) and docs/figures/efficiency-DEVICE.svg (reading time by document length).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-cpu}
SR=${SR:-./build/smoothread}
tmp=$(mktemp -d)
if [ "$DEV" = cpu ]; then
  M=models/smoothread-reader-10m
  READ=${READ:-4k,16k,32k}; LONG=${LONG:-}; TRAIN=${TRAIN:-1k,4k}; REPS=${REPS:-2}; CHUNK=${CHUNK:-384}  # W = 1024
  swa=(--model $M); full=(--model $M --window 0)
else
  python3 - "$tmp" <<'PY'
import json, sys
base = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
        "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "rope_theta": 1e6,
        "tie_word_embeddings": True}
json.dump(dict(base, use_sliding_window=True, sliding_window=4096, max_window_layers=0), open(sys.argv[1] + "/swa.json", "w"))
json.dump(dict(base, use_sliding_window=False), open(sys.argv[1] + "/full.json", "w"))
PY
  READ=${READ:-4k,16k,64k}; LONG=${LONG:-128k,256k}; TRAIN=${TRAIN:-4k,64k}; REPS=${REPS:-2}; CHUNK=${CHUNK:-2048}  # W = 4096
  swa=(--config $tmp/swa.json --device cuda); full=(--config $tmp/full.json --device cuda)
fi
common=(--chunk-tokens "$CHUNK" --summary-tokens ${SUMMARY:-64} --format json)
D=runs/efficiency-$DEV
mkdir -p "$D"
run() {  # run NAME ARGS...: one bench into $D/NAME.json; a finished one is kept (resumable)
  local name=$1; shift
  [ -s "$D/$name.json" ] && { echo "efficiency: kept $D/$name.json"; return; }
  [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]] && return
  $SR bench "${common[@]}" "$@" --out "$D/$name.json"  # later flags win
}
reps=(--reps "$REPS" --warmup "${WARMUP:-1}")
long=(--reps "${LONG_REPS:-1}" --warmup 0)  # the longest documents: one timed run each, no warm-up
run emr "${swa[@]}" --read "$READ" --mode emr "${reps[@]}"
run or "${full[@]}" --read "$READ" --mode or "${reps[@]}"
if [ -n "$LONG" ]; then
  run emr_long "${swa[@]}" --read "$LONG" --mode emr "${long[@]}"
  run or_long "${full[@]}" --read "$LONG" --mode or "${long[@]}"
fi
# The same EMR reading with no summary tokens: the chunked sliding-window prefill alone, i.e. what
# the summaries cost on top of it (the time decoding them takes).
run emr_nosummary "${swa[@]}" --read "$READ${LONG:+,$LONG}" --mode emr "${long[@]}" --summary-tokens 0
run train_swa "${swa[@]}" --train "$TRAIN" ${RECOMPUTE:+--recompute} "${reps[@]}"
run train_full "${full[@]}" --train "$TRAIN" ${RECOMPUTE:+--recompute} "${reps[@]}"
rm -rf "$tmp"
for f in emr or emr_nosummary train_swa train_full ${LONG:+emr_long or_long}; do [ -s "$D/$f.json" ] || { echo "efficiency: $D/$f.json not run yet (ONLY=${ONLY:-})"; exit 0; }; done
python3 bench/efficiency_report.py "$D" --svg "docs/figures/efficiency-$DEV.svg" | tee "$D/report.md"
