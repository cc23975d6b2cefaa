#!/usr/bin/env bash
# The small-scale replication of Smooth Reading (issue 10): data, training, evaluation, tables.
#
#   bash experiments/reader/study.sh data            # training data (EMR trajectories, one-pass and NMR samples)
#   bash experiments/reader/study.sh train NAME      # NAME = emr_swa | or_swa | or_full | nmr_full (configs/NAME.json);
#                                                    # NAME-sN (emr_swa-s2): the same config, training seed N
#                                                    # copy_base: dense copying only (induction heads), then
#                                                    # or_swa_ft | or_full_ft: one-pass SFT from that base
#                                                    # or_full_emrbase | or_swa_emrbase | nmr_full_emrbase:
#                                                    # one-pass / NMR SFT from the trained EMR reader (BASE_MODEL)
#                                                    # emr_rwkv7 | or_rwkv7 | emr_gdn | emr_gdn_lr2 | emr_gdn_hybrid
#                                                    # | or_gdn | or_gdn_hybrid: the recurrent-mixer rows (MIX=v1 data)
#   bash experiments/reader/study.sh evalsets        # held-out evaluation records
#   bash experiments/reader/study.sh eval NAME MODE  # NIAH by length (MODE = emr | or | nmr)
#   bash experiments/reader/study.sh grid NAME       # window x chunk grid and early stop on/off (EMR)
#   bash experiments/reader/study.sh heldout NAME    # unseen phrasings, keys and haystack text (EMR)
#   bash experiments/reader/study.sh tasks NAME [MODEL_DIR]  # every RULER-style task (EMR), TASK_LENGTHS
#   python3 experiments/reader/tables.py             # docs/RESULTS.md tables + plots from runs/reader
#
# Every stage is resumable: finished outputs are kept, a training run continues from its checkpoint,
# predictions from their last complete line. Each output directory gets meta.json (commit, config,
# seed, hardware). Environment: SR (the smoothread binary), DEVICE (cuda | cpu), JOBS (parallel
# evaluation processes), TOKENS (training token budget per model), MAX_SECONDS (wall-time cap per
# training run), N (records per task x length), REPEAT (dense copying samples in each mix), MIX (v1:
# the first shipped model's data; v2: plus number distractors and more distractor needles; v3: the
# wide phrasing pool, mixed value types and the many kinds of text of haystacks.sh; v4: v3 with
# invented keys, near-miss distractor keys and two more distractor-needle parts; v5: v3 whose
# trajectories name the wrong key when a chunk holds another key's fact (--reject-distractors),
# with two more distractor-needle parts and two parts of free-form values: dashes, passwords, phrases).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SR=${SR:-./build/smoothread}
OUT=${OUT:-runs/reader}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-8}
N=${N:-1000}
REPEAT=${REPEAT:-40000}
TOKENS=${TOKENS:-200000000}
HAYSTACK_DIR=${HAYSTACK_DIR:-/usr/share/common-licenses}
HAYSTACKS=${HAYSTACKS:-$OUT/haystacks}  # MIX=v3 and the held-out text tests: experiments/reader/haystacks.sh
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT"

meta() {  # meta.json for an output directory: commit, what ran, hardware
  local dir=$1; shift
  local gpu; gpu=$( (nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true) | head -1)
  local binary; binary=$($SR --version 2>/dev/null || echo unknown)
  python3 - "$dir/meta.json" "$COMMIT" "$gpu" "$*" "$binary" <<'EOF'
import json, os, platform, sys, time
path, commit, gpu, what, binary = sys.argv[1:6]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
json.dump({"commit": commit, "binary": binary, "what": what, "gpu": gpu or None, "cpu": cpu, "cpu_threads": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, open(path, "w"), indent=2)
EOF
}

licenses() {  # English haystack text for training (Debian base-files): a comma-separated list
  local l=""
  for f in GPL-3 GPL-2 LGPL-2.1 GFDL-1.3 MPL-2.0 Apache-2.0 Artistic MPL-1.1; do
    [ -f "$HAYSTACK_DIR/$f" ] && l="$l${l:+,}$HAYSTACK_DIR/$f"
  done
  echo "$l"
}

stage_data() {
  local d=$OUT/data
  [ -f "$d/emr.jsonl" ] && [ -f "$d/or.jsonl" ] && [ -f "$d/nmr.jsonl" ] && [ -f "$d/repeat.jsonl" ] && { echo "data: kept $d"; return; }
  mkdir -p "$d/parts"
  local lic=""; [[ ${MIX:-v1} = v[345] ]] || lic=$(licenses)
  [ -n "$lic" ] || [[ ${MIX:-v1} = v[345] ]] || { echo "error: no haystack text in $HAYSTACK_DIR" >&2; exit 2; }
  # part = task | phrasing | extra gen flags; the same seed gives the same records for both formats.
  local parts=(
    "passkey|varied|"
    "niah_single_1|varied|"
    "niah_single_2|varied|"
    "niah_single_2|varied|--haystack $lic"
    "niah_single_2|ruler|"
    "niah_single_3|varied|"
    "niah_multikey_1|varied|"
    "niah_multikey_1|varied|--haystack $lic"
    "niah_single_2|varied|--values word"
  )
  if [[ ${MIX:-v1} = v[345] ]]; then  # v3: the wide phrasing pool over many kinds of text (haystacks.sh)
    local hs=$HAYSTACKS/train
    [ -f "$hs/fortunes.txt" ] || { echo "error: no $hs/fortunes.txt; run experiments/reader/haystacks.sh" >&2; exit 2; }
    local all; all=$(ls "$hs"/*.txt | paste -sd,)
    parts=(
      "passkey|wide|"
      "passkey|wide|--haystack $all"
      "niah_single_1|wide|"
      "niah_single_2|wide|"
      "niah_single_2|wide|--haystack $all"
      "niah_single_2|wide|--haystack $all --values mixed"
      "niah_single_2|wide|--haystack $all --number-noise 0.2"
      "niah_single_2|ruler|"
      "niah_single_3|wide|--haystack $all"
      "niah_multikey_1|wide|"
      "niah_multikey_1|wide|--haystack $all"
      "niah_multikey_1|wide|--haystack $all --values mixed"
    )
    lic=$all
    if [ "$MIX" = v4 ]; then  # v4: open key space, near-miss distractor keys, more distractor needles
      parts=("${parts[@]/|wide|/|open|}")
      parts+=("niah_multikey_1|open|--haystack $all" "niah_multikey_1|open|--haystack $all --number-noise 0.2")
    fi
    if [ "$MIX" = v5 ]; then  # v5: v3 whose Reasons name a wrong key's fact, and more distractor needles
      parts+=("niah_multikey_1|wide|--haystack $all --number-noise 0.2" "niah_multikey_1|ruler|--haystack $all"
              "niah_single_2|wide|--haystack $all --values free" "niah_multikey_1|wide|--haystack $all --values free")
      parts=("${parts[@]/%/ --reject-distractors}")
    fi
  fi
  if [ "${MIX:-v1}" = v2 ]; then  # v1 trained the shipped model; v2 adds distractors (numbers, other keys)
    parts+=(
      "niah_single_2|varied|--number-noise 0.3"
      "niah_single_2|varied|--haystack $lic --number-noise 0.3"
      "passkey|varied|--number-noise 0.3"
      "niah_multikey_1|varied|--number-noise 0.3"
      "niah_multikey_1|ruler|"
      "niah_multikey_2|varied|"
    )
  fi
  local jobs=() seed=1000 i=0
  for p in "${parts[@]}"; do
    IFS='|' read -r task phr extra <<<"$p"
    for len in 512 1024 2048 4096; do
      seed=$((seed + 1)); i=$((i + 1))
      for fmt in trajectory or nmr; do
        jobs+=("$SR gen --task $task --phrasing $phr $extra --tokens $len --count $N --seed $seed --format $fmt --chunk-tokens 128:512 --out $d/parts/$fmt-$(printf %03d $i).jsonl")
      done
    done
  done
  # Dense copying ("repeat": a sentence of random words and numbers, a gap, the sentence again) in
  # both mixes: a model trained from scratch needs induction heads before it can copy a needle.
  for k in 1 2 3 4; do
    jobs+=("$SR gen --task repeat --count $((REPEAT / 4)) --seed $((500 + k)) --min-len 16 --max-len 400 --out $d/parts/repeat-$k.jsonl")
  done
  printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c '{}'
  cat "$d"/parts/trajectory-*.jsonl "$d"/parts/repeat-*.jsonl > "$d/emr.jsonl.tmp" && mv "$d/emr.jsonl.tmp" "$d/emr.jsonl"
  cat "$d"/parts/or-*.jsonl "$d"/parts/repeat-*.jsonl > "$d/or.jsonl.tmp" && mv "$d/or.jsonl.tmp" "$d/or.jsonl"
  # NMR: one sample per round of the same trajectories (query, previous summary, one chunk)
  cat "$d"/parts/nmr-*.jsonl "$d"/parts/repeat-*.jsonl > "$d/nmr.jsonl.tmp" && mv "$d/nmr.jsonl.tmp" "$d/nmr.jsonl"
  cat "$d"/parts/repeat-*.jsonl > "$d/repeat.jsonl.tmp" && mv "$d/repeat.jsonl.tmp" "$d/repeat.jsonl"
  rm -rf "$d/parts"
  meta "$d" "data MIX=${MIX:-v1} N=$N repeat=$REPEAT parts=${#parts[@]} lengths=512,1024,2048,4096 chunks=128:512 haystack=$lic"
  wc -l "$d/emr.jsonl" "$d/or.jsonl" "$d/nmr.jsonl"
}

stage_train() {  # NAME or NAME-sSEED (another training seed of the same config: emr_swa-s2)
  local name=$1 base=$1 seed=""
  if [[ $name =~ ^(.+)-s([0-9]+)$ ]]; then base=${BASH_REMATCH[1]} seed=${BASH_REMATCH[2]}; fi
  local cfg=$HERE/configs/$base.json run=$OUT/$name
  [ -f "$cfg" ] || { echo "error: no config $cfg" >&2; exit 2; }
  [ -f "$run/model/config.json" ] && { echo "train $name: kept $run/model"; return; }
  mkdir -p "$run"
  local resume=""; [ -f "$run/checkpoint/trainer_state.json" ] && resume=--resume
  python3 - "$cfg" "$run/train.json" "$OUT" "$TOKENS" "$DEVICE" "${MAX_SECONDS:-0}" "$run" "$seed" <<'EOF'
import json, sys
cfg, out, root, tokens, device, max_s, run, seed = sys.argv[1:9]
j = json.load(open(cfg))
j["data"] = j["data"].replace("runs/reader", root); j["out_dir"] = run
if seed: j["seed"] = int(seed)
if "init_from" in j: j["init_from"] = j["init_from"].replace("runs/reader", root)
j["tokens"] = int(tokens); j.pop("steps", None); j["device"] = device
if float(max_s) > 0: j["max_seconds"] = float(max_s)  # a wall-time cap (the run stops early, resumable)
json.dump(j, open(out, "w"), indent=2)
EOF
  meta "$run" "train $name tokens=$TOKENS device=$DEVICE"
  if [ "$name" = or_swa_ft ] && [ ! -f "$OUT/copy_base/model_swa/config.json" ]; then  # the base, as an SWA model
    $SR convert --model "$OUT/copy_base/model" --out "$OUT/copy_base/model_swa" --window 1024
  fi
  if grep -q '"runs/reader/emr_base/' "$cfg"; then
    # the *_emrbase runs start from a trained EMR reader (BASE_MODEL, the default model) as their
    # shared base, as the paper's rows all start from one pretrained model: as it is (W = 1024) and
    # with full attention. Under a lock: runs trained side by side build it once.
    (
      flock 9
      if [ ! -f "$OUT/emr_base/full/config.json" ]; then
        rm -rf "$OUT/emr_base"
        $SR convert --model "${BASE_MODEL:-models/smoothread-reader-10m}" --out "$OUT/emr_base/swa" --window 1024
        $SR convert --model "${BASE_MODEL:-models/smoothread-reader-10m}" --out "$OUT/emr_base/full" --window 0
      fi
    ) 9>"$OUT/.emr_base.lock"
  fi
  $SR train --config "$run/train.json" $resume | tee -a "$run/log.jsonl"
  write_reader_config "$run/model"
}

write_reader_config() {  # the model's smoothread.json: chunk 384 tokens (W/2 < 384 + summary < W)
  cat > "$1/smoothread.json" <<'EOF'
{"protocol": "smoothread-v1", "chunk_tokens": 384, "max_summary_tokens": 96, "max_answer_tokens": 48}
EOF
}

heldout_haystack() {  # prose the models never saw: this repository's own docs, tables and code removed
  # (the docs as they are at the commit that runs the study, recorded in eval/meta.json)
  local f=$OUT/eval/heldout_haystack.txt
  [ -f "$f" ] && { echo "$f"; return; }
  mkdir -p "$OUT/eval"
  python3 - "$f" README.md docs/MODEL_FORMAT.md docs/RESULTS.md docs/PERF.md <<'EOF'
import re, sys
out, files = sys.argv[1], sys.argv[2:]
keep, code = [], False
for f in files:
    for line in open(f, encoding="utf-8"):
        if line.startswith("```"): code = not code; continue
        if code or line.startswith("|") or line.startswith("#") or not line.strip(): continue
        keep.append(re.sub(r"[`*]", "", line.strip()))
open(out, "w", encoding="utf-8").write("\n".join(keep) + "\n")
EOF
  echo "$f"
}

LENGTHS=${LENGTHS:-4096 8192 16384 32768 65536 131072 262144}
PER_LENGTH=${PER_LENGTH:-20}

stage_evalsets() {
  local d=$OUT/eval; mkdir -p "$d"
  local hay; hay=$(heldout_haystack)
  for len in $LENGTHS; do  # NIAH by length: RULER niah_single_2 sentences, held-out seeds, 5 depths
    [ -f "$d/niah-$len.jsonl" ] || $SR gen --task niah_single_2 --tokens "$len" --count "$PER_LENGTH" --seed $((90000 + len % 9973)) \
      --depth-grid 5 --out "$d/niah-$len.jsonl"
  done
  for len in 4096 16384 65536; do  # unseen phrasings + keys, unseen haystack text
    [ -f "$d/heldout-$len.jsonl" ] || $SR gen --task niah_single_2 --phrasing heldout --haystack "$hay" --tokens "$len" \
      --count "$PER_LENGTH" --seed $((70000 + len % 9973)) --out "$d/heldout-$len.jsonl"
    [ -f "$d/heldout-passkey-$len.jsonl" ] || $SR gen --task passkey --phrasing heldout --tokens "$len" \
      --count "$PER_LENGTH" --seed $((71000 + len % 9973)) --out "$d/heldout-passkey-$len.jsonl"
  done
  local other=$HAYSTACKS/heldout/developers-reference.txt  # another held-out text (haystacks.sh)
  if [ -f "$other" ]; then
    for len in 4096 16384 65536; do  # unseen phrasings + keys over a manual no model trained on
      [ -f "$d/heldtext-$len.jsonl" ] || $SR gen --task niah_single_2 --phrasing heldout --haystack "$other" --tokens "$len" \
        --count "$PER_LENGTH" --seed $((72000 + len % 9973)) --out "$d/heldtext-$len.jsonl"
    done
    # the same with 3 distractor needles of other keys (chance 25%): does the reader match the key?
    [ -f "$d/heldkey-4096.jsonl" ] || $SR gen --task niah_multikey_1 --phrasing heldout --haystack "$other" --tokens 4096 \
      --count "$PER_LENGTH" --seed 73001 --out "$d/heldkey-4096.jsonl"
  fi
  [ -f "$d/grid-16384.jsonl" ] || $SR gen --task niah_single_2 --tokens 16384 --count "$PER_LENGTH" --seed 80001 --depth-grid 5 \
    --out "$d/grid-16384.jsonl"
  meta "$d" "evalsets lengths=$LENGTHS per_length=$PER_LENGTH"
}

# run_evals OUTDIR "label|model|data|extra flags" ...: each data file is cut into shards of SHARD
# records, one eval process per shard, JOBS at a time; then the shards' predictions are joined in
# order and scored (OUTDIR/label.pred.jsonl, OUTDIR/label.score.json).
SHARD=${SHARD:-2}
run_evals() {
  local od=$1; shift
  mkdir -p "$od/shards"
  local job label model data extra threads=""
  # CPU: split the cores between the JOBS processes (each would otherwise start one OpenMP thread
  # per core, and oversubscribed spinning threads run a 2-core machine ~10x slower)
  [ "$DEVICE" = cpu ] && threads="--threads $(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))"
  for job in "$@"; do
    IFS='|' read -r label model data extra <<<"$job"
    [ -f "$od/$label.score.json" ] && continue
    split -l "$SHARD" -d -a 4 --additional-suffix=.jsonl "$data" "$od/shards/$label-"
    for f in "$od/shards/$label"-[0-9][0-9][0-9][0-9].jsonl; do
      echo "$SR eval --model $model --data $f --pred ${f%.jsonl}.pred.jsonl --device $DEVICE $threads --json $extra > /dev/null 2>> $od/$label.log"
    done
  done | xargs -P "$JOBS" -I{} sh -c '{}'
  for job in "$@"; do
    IFS='|' read -r label model data extra <<<"$job"
    [ -f "$od/$label.score.json" ] && continue
    cat "$od/shards/$label"-[0-9][0-9][0-9][0-9].pred.jsonl > "$od/$label.pred.jsonl"
    $SR eval --score-only --pred "$od/$label.pred.jsonl" --json > "$od/$label.score.json.tmp" && mv "$od/$label.score.json.tmp" "$od/$label.score.json"
  done
}

stage_eval() {
  local name=$1 mode=$2 od=$OUT/results/$1-$2 jobs=()
  for len in $LENGTHS; do jobs+=("niah-$len|$OUT/$name/model|$OUT/eval/niah-$len.jsonl|--mode $mode --force"); done
  mkdir -p "$od"; meta "$od" "eval $name $mode"
  run_evals "$od" "${jobs[@]}"
}

stage_grid() {
  local name=$1 od=$OUT/results/$1-grid jobs=()
  for c in 128 256 384 512 768 1024 2048; do
    jobs+=("C$c|$OUT/$name/model|$OUT/eval/grid-16384.jsonl|--mode emr --chunk-tokens $c --force")
  done
  for len in 16384 65536; do
    jobs+=("nostop-$len|$OUT/$name/model|$OUT/eval/niah-$len.jsonl|--mode emr --no-early-stop --force")
  done
  mkdir -p "$od"; meta "$od" "grid $name"
  run_evals "$od" "${jobs[@]}"
}

stage_heldout() {
  local name=$1 od=$OUT/results/$1-heldout jobs=()
  for len in 4096 16384 65536; do
    jobs+=("heldout-$len|$OUT/$name/model|$OUT/eval/heldout-$len.jsonl|--mode emr")
    jobs+=("heldout-passkey-$len|$OUT/$name/model|$OUT/eval/heldout-passkey-$len.jsonl|--mode emr")
    [ -f "$OUT/eval/heldtext-$len.jsonl" ] && jobs+=("heldtext-$len|$OUT/$name/model|$OUT/eval/heldtext-$len.jsonl|--mode emr")
  done
  [ -f "$OUT/eval/heldkey-4096.jsonl" ] && jobs+=("heldkey-4096|$OUT/$name/model|$OUT/eval/heldkey-4096.jsonl|--mode emr")
  mkdir -p "$od"; meta "$od" "heldout $name"
  run_evals "$od" "${jobs[@]}"
}

# RULER-style task table: every synthetic task at TASK_LENGTHS (held-out seeds, RULER sentences),
# read by one model (EMR); trained tasks and untrained ones alike, so the table shows both.
TASKS=${TASKS:-passkey niah_single_1 niah_single_2 niah_single_3 niah_multikey_1 niah_multikey_2 niah_multikey_3 niah_multivalue niah_multiquery vt cwe fwe qa_hop}
stage_tasks() {
  local name=$1 model=${2:-$OUT/$1/model} od=$OUT/results/$1-tasks jobs=()
  mkdir -p "$OUT/eval"
  for len in ${TASK_LENGTHS:-4096}; do
    for t in $TASKS; do
      local f=$OUT/eval/task-$t-$len.jsonl
      [ -f "$f" ] || $SR gen --task "$t" --tokens "$len" --count "$PER_LENGTH" --seed $((60000 + len % 9973)) --out "$f"
      jobs+=("$t-$len|$model|$f|--mode emr")
    done
  done
  mkdir -p "$od"; meta "$od" "tasks $name lengths=${TASK_LENGTHS:-4096}"
  run_evals "$od" "${jobs[@]}"
}

case ${1:-} in
  data) stage_data ;;
  train) stage_train "$2" ;;
  evalsets) stage_evalsets ;;
  eval) stage_eval "$2" "$3" ;;
  grid) stage_grid "$2" ;;
  heldout) stage_heldout "$2" ;;
  tasks) stage_tasks "$2" "${3:-}" ;;
  all)
    stage_data
    for m in emr_swa or_swa or_full nmr_full; do stage_train $m; done
    stage_evalsets
    stage_eval emr_swa emr; stage_eval or_swa or; stage_eval or_full or; stage_eval nmr_full nmr
    stage_grid emr_swa; stage_heldout emr_swa ;;
  *) sed -n '2,/^set -e/{/^set -e/!p}' "$0"; exit 2 ;;
esac
