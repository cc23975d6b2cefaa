#!/usr/bin/env bash
# Decode of two builds in one run on a GPU machine: NEW and OLD bench_cuda binaries alternated
# new-old-old-new per model, each line tagged "build"; then the table (docs/PERF.md "Decode kernels").
# usage: bench/ab_builds.sh NEW_BENCH_CUDA OLD_BENCH_CUDA OUT.jsonl [preset:window ...]
#   default rows: 0.5b:1024 3b:1024 0.5b:0 3b:0 0.5b-gdn:1024 0.5b-rwkv7:0
set -uo pipefail
cd "$(dirname "$0")/.."
NEW=${1:?new bench_cuda}; OLD=${2:?old bench_cuda}; J=${3:?out jsonl}; shift 3
for PW in ${*:-0.5b:1024 3b:1024 0.5b:0 3b:0 0.5b-gdn:1024 0.5b-rwkv7:0}; do
  for V in new old old new; do
    B=$NEW; [ $V = old ] && B=$OLD
    timeout 120 "$B" model --preset ${PW%:*} --window ${PW#*:} --L 4096 --steps 0 --decode 128 |
      sed "s/{/{\"build\":\"$V\",/" >> "$J"
  done
done
python3 bench/cuda_tables.py --builds "$J"
