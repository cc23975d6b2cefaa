#!/usr/bin/env bash
# Training trajectories for the small EMR reader: 4 tasks x 4 context lengths, chunk sizes drawn
# per sample from 64..256 tokens (byte-level tokenizer), rule-based summaries (protocol.md).
set -euo pipefail
SR=${SR:-./build/smoothread}
OUT=${1:-runs/emr_small}
N=${N:-600}
mkdir -p "$OUT"
: > "$OUT/train.jsonl"
seed=100
for task in passkey niah_single_1 niah_single_2 niah_single_3; do
  for len in 256 512 1024 2048; do
    seed=$((seed + 1))
    $SR gen --task $task --tokens $len --count "$N" --seed $seed --format trajectory --chunk-tokens 64:256 --out "$OUT/part.jsonl"
    cat "$OUT/part.jsonl" >> "$OUT/train.jsonl"
  done
done
rm -f "$OUT/part.jsonl"
wc -l "$OUT/train.jsonl"
