#!/usr/bin/env bash
# Reading cost vs document length on CPU (docs/PERF.md, issue 3): EMR on an all-sliding-window
# model against OR (one pass) on the same architecture with full attention. Tiny random-init
# models (the cost does not depend on the weights: budgets are fixed, no early stop).
# usage: bench/reading_cost.sh [max_or_tokens]   (default 65536; OR is quadratic)
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_OR=${1:-65536}
SR=./build/smoothread
W=runs/reading-cost; mkdir -p $W
$SR gen --task copy --count 100 --seed 1 --out $W/d.jsonl
for kind in swa full; do
  if [ $kind = swa ]; then extra='"use_sliding_window": true, "sliding_window": 256, "max_window_layers": 0'; else extra='"use_sliding_window": false'; fi
  cat > $W/$kind.json <<JSON
{"model": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, $extra},
 "data": "$W/d.jsonl", "out_dir": "$W/$kind", "steps": 1, "log_every": 1}
JSON
  $SR train --config $W/$kind.json >/dev/null 2>&1
done
python3 - "$W" <<'PY'
import random, sys
w = sys.argv[1]; random.seed(0)
words = "river stone green light market paper window silver garden field".split()
for n in [4096, 16384, 65536, 262144]:
    s = []
    size = 0
    while size < n:
        t = random.choice(words) + (".\n\n" if random.random() < 0.08 else " ")
        s.append(t); size += len(t)
    open(f"{w}/doc{n}.txt", "w").write("".join(s)[:n])
PY
echo "commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo
echo "| tokens | EMR (SWA W=256, C=192, S=16): s | EMR peak RSS MB | EMR rounds | OR (full attention): s | OR peak RSS MB | OR/EMR time |"
echo "|---|---|---|---|---|---|---|"
for n in 4096 16384 65536 262144; do
  e=$($SR read --model $W/swa/model --doc $W/doc$n.txt --question "What is the code?" --chunk-tokens 192 \
        --max-summary-tokens 16 --max-answer-tokens 8 --no-early-stop --json --quiet)
  if [ $n -le $MAX_OR ]; then
    o=$($SR read --model $W/full/model --doc $W/doc$n.txt --question "What is the code?" --mode or \
          --max-answer-tokens 8 --json --quiet)
  else o='{}'; fi
  python3 -c "
import json,sys
e=json.loads('''$e'''); o=json.loads('''$o''')
ot = '%.2f' % o['seconds'] if o else '(skipped)'
om = '%.1f' % (o['peak_rss_bytes']/1e6) if o else '-'
ratio = '%.1fx' % (o['seconds']/e['seconds']) if o else '-'
print('| %d | %.2f | %.1f | %d | %s | %s | %s |' % ($n, e['seconds'], e['peak_rss_bytes']/1e6, e['rounds'], ot, om, ratio))"
done
