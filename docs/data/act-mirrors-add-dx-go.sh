#!/usr/bin/env bash
# Device call: GPU tests at ffbd4da+ (activation mirrors, add_dx, SwiGLU 4-wide writing mirrors);
# A/B against b446383 ("old") alternated, plus new with --act-mirror 0; then per-op profiles of 3b.
set -uo pipefail
mkdir -p /tmp/bin
tar xJf runs/c11/bin.txz -C /tmp/bin 2>/dev/null || python3 -c "import tarfile;tarfile.open('runs/c11/bin.txz').extractall('/tmp/bin')"
export LD_LIBRARY_PATH=/tmp/bin:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 /tmp/bin/test_cuda --gtest_brief=1 2>&1 | tee $OUT/test_cuda.txt | tail -15
run() { X=$1; shift; BB=/tmp/bin/bench_cuda; [ $X = old ] && BB=/tmp/bin/bench_cuda_old
  EX=""; [ $X = noact ] && EX="--act-mirror 0"
  timeout 150 $BB "$@" $EX | sed "s/{/{\"build\":\"$X\",/"; }
for P in 3b 0.5b; do for X in old new noact noact new old; do run $X model --preset $P --L 4096 --steps 3 --decode 0 >> $OUT/model.jsonl; done; done
for X in old new noact; do run $X model --preset 3b --L 4096 --steps 2 --decode 0 --profile 1 >> $OUT/profile.jsonl; done
python3 - $OUT <<'PY'
import json,sys,collections
o=sys.argv[1]; d=collections.defaultdict(list)
for l in open(o+'/model.jsonl'):
    r=json.loads(l); d[(r['preset'],r['build'])].append((r['train_ms'], r['train_mfu'], r.get('train_peak_gib')))
for k,v in d.items(): print(k, v)
for l in open(o+'/profile.jsonl'):
    r=json.loads(l); p=r['profile_ms']; print(r['build'], r['profile_step_ms'], {k:round(v['ms'],2) for k,v in sorted(p.items(), key=lambda kv:-kv[1]['ms'])[:12]})
PY
