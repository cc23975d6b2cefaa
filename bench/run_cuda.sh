#!/usr/bin/env bash
# GPU parity tests + benchmarks in one go, on a machine with an NVIDIA GPU. Prints JSON lines
# (bench_cuda and the PyTorch baselines, same card, same run) and the docs/PERF.md tables.
# usage: bench/run_cuda.sh BIN_DIR [OUT_DIR] [what...]
#   BIN_DIR holds test_cuda, bench_cuda (and their non-CUDA shared libraries when carried);
#   what: tests attention gemm mixer model chunked mirror graphs order sass (default: the first five)
#     order = the attention blocks' launch orders 0 / 1 / 2 (attention at 4k/16k/64k, the 3b shape at 4k, the 3b step)
#     sass = Nsight Compute per-instruction counters of our attention kernels and SDPA flash's at 16k, summarized
#            by bench/ncu_sass_summary.py (needs ncu on the PATH)
#     mirror = the 0.5b and 3b training steps at 4k with the bf16 weight mirror on and off (A/B),
#              and their decode on bf16 (mirror) vs fp32 weights
#     graphs = decode (128 tokens after a 4k prefill) with each step as one CUDA graph vs op by op (A/B)
#     chunked = the delta-rule scans, chunked against the token kernels (SMOOTHREAD_DELTA_CHUNKED=0)
#     in the same run: the mixer at 4k/16k/64k and the 0.5b-gdn / 0.5b-rwkv7 models at 4k and 64k
#   env GRAPH_ROWS="0.5b:0 0.5b:1024 ..." (graphs rows, preset:window), PRESETS="0.5b 3b" (model sizes; 0.5b-gdn = the Gated DeltaNet hybrid, 0.5b-rwkv7 = RWKV-7), SKIP="3b-65536-0 ..." (model rows to leave out),
#     ACCUM_ROWS="1:8 2:4" (extra 4k rows, batch:accumulation sequences a training step; "" for none)
# Build BIN_DIR with: cmake -S . -B build-cuda -DSMOOTHREAD_CUDA=ON && cmake --build build-cuda
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?bin dir}; OUTD=${2:-build-cuda/bench-out}; shift 2 || true
WHAT=${*:-tests attention gemm mixer model}
mkdir -p "$OUTD"
export LD_LIBRARY_PATH="$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUTD/gpu.txt"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$OUTD/gpu.txt"
if [[ " $WHAT " == *" tests "* ]]; then
  "$BIN/test_cuda" --gtest_brief=1 2>&1 | tee "$OUTD/test_cuda.txt" | tail -40
fi
J="$OUTD/bench.jsonl"
if [[ " $WHAT " == *" attention "* ]]; then
  for L in 4096 16384 65536; do
    for W in 0 4096; do
      [[ $L -le $W ]] && continue
      "$BIN/bench_cuda" attention --L $L --window $W | tee -a "$J"
      timeout 240 python3 bench/torch_attention.py --L $L --window $W 2>>"$OUTD/torch.err" | tee -a "$J"
    done
  done
fi
if [[ " $WHAT " == *" gemm "* ]]; then
  "$BIN/bench_cuda" gemm | tee -a "$J"
fi
if [[ " $WHAT " == *" mixer "* ]]; then  # one layer's core: attention (full, W=4096), GDN, RWKV-7; heads of 64
  for L in 4096 16384 65536; do
    timeout 200 "$BIN/bench_cuda" mixer --L $L --heads 16 --dim 64 --reps 3 | tee -a "$J"
  done
fi
if [[ " $WHAT " == *" model "* ]]; then
  for P in ${PRESETS:-0.5b 3b}; do
    for L in 4096 65536; do
      for W in 0 4096; do
        [[ $L -le $W ]] && continue
        [[ " ${SKIP:-} " == *" $P-$L-$W "* ]] && continue
        [[ $P == *rwkv7* && $W -gt 0 ]] && continue  # no attention layers to window
        # 64k steps take seconds each: fewer repeats there
        S=3; [[ $L -gt 16384 ]] && S=1
        timeout 300 "$BIN/bench_cuda" model --preset $P --L $L --window $W --steps $S --decode 32 | tee -a "$J"
      done
    done
    # several sequences a step at 4k, full attention: batch x accumulation (AdamW once a step)
    for BA in ${ACCUM_ROWS-1:8 2:4}; do
      timeout 300 "$BIN/bench_cuda" model --preset $P --L 4096 --steps 3 --decode 32 --batch ${BA%:*} --accum ${BA#*:} |
        tee -a "$J"
    done
  done
fi
if [[ " $WHAT " == *" chunked "* ]]; then
  JC="$OUTD/chunked.jsonl"
  for L in 4096 16384 65536; do
    for E in 1 0; do
      SMOOTHREAD_DELTA_CHUNKED=$E timeout 100 "$BIN/bench_cuda" mixer --L $L --heads 16 --dim 64 --reps 3 |
        sed "s/{/{\"chunked\":$E,/" | tee -a "$JC"
    done
  done
  for P in 0.5b-gdn 0.5b-rwkv7; do
    for E in 1 0; do
      SMOOTHREAD_DELTA_CHUNKED=$E timeout 120 "$BIN/bench_cuda" model --preset $P --L 4096 --steps 3 --decode 32 |
        sed "s/{/{\"chunked\":$E,/" | tee -a "$JC"
      SMOOTHREAD_DELTA_CHUNKED=$E timeout 150 "$BIN/bench_cuda" model --preset $P --L 65536 --steps 1 --recompute 1 \
        --decode 0 | sed "s/{/{\"chunked\":$E,/" | tee -a "$JC"
    done
  done
  python3 bench/cuda_tables.py --chunked "$JC" | tee "$OUTD/chunked.md"
fi
if [[ " $WHAT " == *" mirror "* ]]; then  # the bf16 weight mirror on / off, alternated twice, same run
  JM="$OUTD/mirror.jsonl"
  for P in 0.5b 3b; do
    for M in 1 0 0 1; do
      timeout 120 "$BIN/bench_cuda" model --preset $P --L 4096 --steps 5 --decode 32 --mirror $M |
        sed 's/{/{"ab":"train",/' | tee -a "$JM"
    done
    for D in bf16 fp32 bf16 fp32; do  # decode GEMVs on the mirror's bf16 weights vs fp32
      timeout 120 "$BIN/bench_cuda" model --preset $P --L 4096 --steps 1 --decode 64 --decode-weights $D |
        sed 's/{/{"ab":"decode",/' | tee -a "$JM"
    done
  done
  python3 bench/cuda_tables.py --mirror "$JM" | tee "$OUTD/mirror.md"
fi
if [[ " $WHAT " == *" graphs "* ]]; then  # decode steps as CUDA graphs vs one launch per op, alternated, same run
  JG="$OUTD/graphs.jsonl"
  # full attention (a new key count every step: recorded every step), windows past their ring (the
  # same key every step: the graph launched again as it is), the GDN hybrid, RWKV-7
  for PW in ${GRAPH_ROWS:-0.5b:0 0.5b:1024 3b:0 3b:1024 0.5b-gdn:0 0.5b-rwkv7:0}; do
    for G in 1 0 0 1; do
      timeout 120 "$BIN/bench_cuda" model --preset ${PW%:*} --window ${PW#*:} --L 4096 --steps 0 --decode 128 --graphs $G |
        tee -a "$JG"
    done
  done
  python3 bench/cuda_tables.py --graphs "$JG" | tee "$OUTD/graphs.md"
fi
if [[ " $WHAT " == *" order "* ]]; then  # the attention blocks' launch orders 0 / 1 / 2 (set_attention_block_order), alternated
  JO="$OUTD/order.jsonl"
  for L in 4096 16384 65536; do
    for O in 0 1 2 2 1 0; do "$BIN/bench_cuda" attention --L $L --order $O | sed "s/{/{\"build\":\"order $O\",/" | tee -a "$JO"; done
  done
  # one 4k sequence of the 3b model's attention shape (16 query heads on 2 kv heads, the fp32 entry
  # points the model calls), and the 3b step itself
  JQ="$OUTD/order-3b-shape.jsonl"
  for O in 0 2 2 0; do
    "$BIN/bench_cuda" attention --L 4096 --tokens 4096 --kv-heads 2 --path model --order $O |
      sed "s/{/{\"build\":\"order $O\",/" | tee -a "$JQ"
  done
  python3 bench/cuda_tables.py --attn-builds "$JO" | tee "$OUTD/order.md"
  python3 bench/cuda_tables.py --attn-builds "$JQ" | tee -a "$OUTD/order.md"
  JM="$OUTD/order-model.jsonl"
  for O in 0 2 2 0; do
    SMOOTHREAD_ATTN_ORDER=$O timeout 120 "$BIN/bench_cuda" model --preset 3b --L 4096 --steps 3 --decode 0 |
      sed "s/{/{\"build\":\"order $O\",/" | tee -a "$JM"
  done
  python3 bench/cuda_tables.py --train-builds "$JM" | tee -a "$OUTD/order.md"
fi
if [[ " $WHAT " == *" sass "* ]]; then  # Nsight Compute per-instruction counters: our attention and SDPA's at 16k
  SEC="--section SourceCounters --section WarpStateStats --section InstructionStats --section SpeedOfLight --import-source yes"
  cat > "$OUTD/sdpa_once.py" <<'PY'
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn(1, 16, 16384, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(torch.randn_like(q))
torch.cuda.synchronize()
PY
  for NK in "ours-fwd attn_fwd_kernel bench" "ours-bwd attn_bwd bench" "sdpa-fwd flash_fwd_kernel torch" "sdpa-bwd dq_dk_dv torch"; do
    set -- $NK
    if [[ $3 == bench ]]; then CMD=("$BIN/bench_cuda" attention --L 16384 --tokens 16384 --reps 1); else CMD=(python3 "$OUTD/sdpa_once.py"); fi
    ncu $SEC --kernel-name regex:$2 --launch-count 1 -f -o "$OUTD/$1" "${CMD[@]}" > "$OUTD/$1-run.txt" 2>&1
    ncu -i "$OUTD/$1.ncu-rep" --page source --csv --print-source sass > "$OUTD/sass-$1.csv"
  done
  python3 bench/ncu_sass_summary.py "$OUTD"/sass-ours-fwd.csv "$OUTD"/sass-sdpa-fwd.csv "$OUTD"/sass-ours-bwd.csv \
    "$OUTD"/sass-sdpa-bwd.csv | tee "$OUTD/sass.md"
fi
[[ -s "$J" ]] && python3 bench/cuda_tables.py "$J" "$OUTD/gpu.txt" | tee "$OUTD/tables.md"
