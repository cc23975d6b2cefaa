#!/usr/bin/env bash
# End-to-end check of `--device cuda` through the CLI on a GPU machine: generate data, train the
# README's tiny model on the GPU (same config as scripts/quickstart.sh), resume it, inspect it with
# the memory report, generate on GPU and CPU, and read a document with EMR on the GPU.
# usage: bench/gpu_cli_check.sh BIN_DIR OUT_DIR [EMR_MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1; O=$2; EMR=${3:-}
export LD_LIBRARY_PATH="$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
SR=$BIN/smoothread
mkdir -p "$O"
$SR gen --task copy --count 20000 --seed 1 --min-len 3 --max-len 8 --out "$O/copy.jsonl"
$SR train --config examples/tiny_copy.json --data "$O/copy.jsonl" --out "$O/tiny-gpu" --device cuda --steps 600 \
  | tee "$O/train_gpu.jsonl"
$SR train --config examples/tiny_copy.json --data "$O/copy.jsonl" --out "$O/tiny-gpu" --device cuda --steps 1200 --resume \
  | tee -a "$O/train_gpu.jsonl"
$SR train --config examples/tiny_copy.json --data "$O/copy.jsonl" --out "$O/tiny-cpu" --steps 300 | tee "$O/train_cpu.jsonl"
$SR info --model "$O/tiny-gpu/model" --device cuda
for s in "smooth|" "reading|" "qwerty|"; do
  printf '%-10s gpu -> %s   cpu -> %s\n' "$s" "$($SR generate --model "$O/tiny-gpu/model" --prompt "$s" --max-tokens 16 --device cuda)" \
    "$($SR generate --model "$O/tiny-gpu/model" --prompt "$s" --max-tokens 16)"
done
if [ -n "$EMR" ]; then
  $SR gen --task niah_single_2 --tokens 2048 --count 8 --seed 7 --out "$O/niah.jsonl"
  $SR eval --model "$EMR" --data "$O/niah.jsonl" --pred "$O/pred_gpu.jsonl" --device cuda --quiet --json
  $SR eval --model "$EMR" --data "$O/niah.jsonl" --pred "$O/pred_cpu.jsonl" --quiet --json
  python3 - "$O/pred_gpu.jsonl" "$O/pred_cpu.jsonl" <<'PY'
import json, sys
g = [json.loads(l) for l in open(sys.argv[1])]
c = [json.loads(l) for l in open(sys.argv[2])]
same = sum(a.get("answer") == b.get("answer") and a.get("rounds") == b.get("rounds") for a, b in zip(g, c))
print(f"EMR on GPU vs CPU: {same}/{len(g)} records with the same answer and rounds")
PY
fi
