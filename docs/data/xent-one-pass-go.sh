#!/usr/bin/env bash
# Device call: GPU tests (cross-entropy in one pass, four-wide); A/B vs 3902def ("old"): 4k steps
# (3b, 0.5b) alternated old-new-new-old, per-op profiles of both, 0.5b at 64k (full, SWA-4k).
set -uo pipefail
mkdir -p /tmp/bin
tar xJf runs/c14/bin.txz -C /tmp/bin 2>/dev/null || python3 -c "import tarfile;tarfile.open('runs/c14/bin.txz').extractall('/tmp/bin')"
export LD_LIBRARY_PATH=/tmp/bin:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 120 /tmp/bin/test_cuda --gtest_brief=1 2>&1 | tee $OUT/test_cuda.txt | tail -6
run() { X=$1; shift; BB=/tmp/bin/bench_cuda; [ $X = old ] && BB=/tmp/bin/bench_cuda_old
  timeout 170 $BB "$@" | sed "s/{/{\"build\":\"$X\",/"; }
for P in 3b 0.5b; do for X in old new new old; do run $X model --preset $P --L 4096 --steps 3 --decode 0 >> $OUT/model.jsonl; done; done
for P in 3b 0.5b; do for X in old new; do run $X model --preset $P --L 4096 --steps 2 --decode 0 --profile 1 >> $OUT/profile.jsonl; done; done
for W in 0 4096; do for X in old new; do run $X model --preset 0.5b --L 65536 --window $W --steps 2 --decode 0 >> $OUT/model64k.jsonl; done; done
python3 - $OUT <<'PY'
import json,sys,collections,os
o=sys.argv[1]
for f in ('model.jsonl','model64k.jsonl'):
    if not os.path.exists(o+'/'+f): continue
    d=collections.defaultdict(list)
    for l in open(o+'/'+f):
        r=json.loads(l); d[(r['preset'],r['L'],r['window'],r['build'])].append((r.get('train_ms'), r.get('train_mfu'), r.get('train_peak_gib')))
    for k,v in d.items(): print(k, v)
for l in open(o+'/profile.jsonl'):
    r=json.loads(l); p=r['profile_ms']; print(r['preset'], r['build'], r['profile_step_ms'], {k:round(v['ms'],2) for k,v in sorted(p.items(), key=lambda kv:-kv[1]['ms'])[:14]})
PY
