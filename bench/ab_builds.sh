#!/usr/bin/env bash
# Two builds in one run on a GPU machine: NEW and OLD bench_cuda binaries alternated new-old-old-new
# per row, each line tagged "build"; then the table (docs/PERF.md "Decode kernels", and with STEPS
# the training-step A/Bs: "bf16 activation mirrors", "Cross-entropy in one pass"; with ATTN the
# attention A/Bs).
# usage: [STEPS=3] [ALSO="label:args"] [ATTN=1 [SDPA=1]] bench/ab_builds.sh NEW_BENCH_CUDA OLD_BENCH_CUDA OUT.jsonl [rows ...]
#   STEPS unset or 0: decode A/B (128 tokens after a 4k prefill); default rows 0.5b:1024 3b:1024
#     0.5b:0 3b:0 0.5b-gdn:1024 0.5b-rwkv7:0
#   STEPS > 0: training-step A/B (median of STEPS steps, no decode); default rows 3b:0 0.5b:0 (L 4096)
#   ALSO="noact:--act-mirror 0": a third label, the NEW binary with those flags, in the same rotation
#   ATTN=1: attention A/B instead (bench_cuda attention, forward and forward+backward); rows L[:window],
#     default 4096 16384 65536 65536:4096; SDPA=1 adds bench/torch_attention.py's SDPA flash row per
#     full-attention row (docs/PERF.md "Attention: lazy rescaling ...")
set -uo pipefail
cd "$(dirname "$0")/.."
NEW=${1:?new bench_cuda}; OLD=${2:?old bench_cuda}; J=${3:?out jsonl}; shift 3
if [ "${ATTN:-0}" = 1 ]; then
  for R in ${*:-4096 16384 65536 65536:4096}; do
    IFS=: read -r L W <<< "$R"
    for V in new old old new; do
      B=$NEW; [ $V = old ] && B=$OLD
      timeout 300 "$B" attention --L $L --window ${W:-0} | sed "s/{/{\"build\":\"$V\",/" >> "$J"
    done
    if [ "${SDPA:-0}" = 1 ] && [ "${W:-0}" = 0 ]; then
      timeout 300 python3 bench/torch_attention.py --L $L --impls sdpa >> "$J"
    fi
  done
  python3 bench/cuda_tables.py --attn-builds "$J"
  exit 0
fi
STEPS=${STEPS:-0}
if [ "$STEPS" -gt 0 ]; then ROWS=${*:-3b:0 0.5b:0}; WORK="--steps $STEPS --decode 0"
else ROWS=${*:-0.5b:1024 3b:1024 0.5b:0 3b:0 0.5b-gdn:1024 0.5b-rwkv7:0}; WORK="--steps 0 --decode 128"; fi
LABELS="new old old new"; [ -n "${ALSO:-}" ] && LABELS="new old ${ALSO%%:*} ${ALSO%%:*} old new"
for R in $ROWS; do
  IFS=: read -r P W L <<< "$R"
  for V in $LABELS; do
    B=$NEW EX=""; [ $V = old ] && B=$OLD
    [ -n "${ALSO:-}" ] && [ $V = "${ALSO%%:*}" ] && EX=${ALSO#*:}
    timeout 300 "$B" model --preset $P --window $W --L ${L:-4096} $WORK $EX | sed "s/{/{\"build\":\"$V\",/" >> "$J"
  done
done
if [ "$STEPS" -gt 0 ]; then python3 bench/cuda_tables.py --train-builds "$J"; else python3 bench/cuda_tables.py --builds "$J"; fi
