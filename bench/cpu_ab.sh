#!/usr/bin/env bash
# Two CPU builds on the default model in one session, alternated old-new-new-old twice: `bench`
# (prefill 384 and 4096, decode 128 at depth 0 and 1024) and the README's `read` (answer, rounds, seconds,
# decode and prefill seconds summed from the trace), raw lines into OUT_DIR, then the table.
# usage: bench/cpu_ab.sh OLD_SMOOTHREAD NEW_SMOOTHREAD OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?old smoothread}; NEW=${2:?new smoothread}; D=${3:?out dir}
mkdir -p "$D"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
Q="$(cat examples/reading/question.txt)"
for round in 1 2; do
  for tag in old new new old; do
    b=$OLD; [ $tag = new ] && b=$NEW
    "$b" bench --model models/smoothread-reader-10m -p 384,4k -n 128 -d 0,1k --reps 5 --threads 2 --format json |
      python3 -c "import json,sys; d=json.load(sys.stdin); d['binary']='$tag'; print(json.dumps(d))" >> "$D/bench.jsonl"
    "$b" read --model models/smoothread-reader-10m --doc examples/reading/document.txt --question "$Q" --json \
      --threads 2 --trace "$T/trace.jsonl" > "$T/read.json"
    python3 - "$tag" "$T" >> "$D/read.jsonl" <<'PY'
import json, sys
tag, t = sys.argv[1:3]
d = json.load(open(t + "/read.json"))
rs = [json.loads(l) for l in open(t + "/trace.jsonl")]
out = {"binary": tag, **{k: d.get(k) for k in ("answer", "rounds", "tokens_read", "tokens_generated", "seconds")}}
out["decode_s"] = round(sum(r.get("decode_s", 0) for r in rs), 3)
out["prefill_s"] = round(sum(r.get("prefill_s", 0) for r in rs), 3)
print(json.dumps(out))
PY
  done
done
python3 bench/cpu_ab_table.py "$D"
