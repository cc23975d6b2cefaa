#!/usr/bin/env bash
# Times `smoothread longbench --score-only` on 4,750 generated LongBench-shaped predictions
# (bench/longbench_preds.py), best of 3. With LONGBENCH_DIR set to a LongBench v1 checkout (the
# folder holding eval.py and metrics.py, with jieba, fuzzywuzzy and rouge importable by PYTHON,
# default python3), it also times the official eval.py on the same files and compares every task
# score (CODE_SIM=levenshtein when that Python has python-Levenshtein, which fuzzywuzzy then uses).
# Usage: bench/longbench_score.sh [BIN]
set -euo pipefail
BIN=${1:-build/smoothread}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
python3 "$(dirname "$0")/longbench_preds.py" "$DIR/lb/pred/bench" >/dev/null
python3 - "$BIN" "$DIR" "${LONGBENCH_DIR:-}" "${PYTHON:-python3}" "${CODE_SIM:-difflib}" <<'PY'
import json, os, subprocess, sys, time
binary, d, lb, py, sim = sys.argv[1:6]
pred = d + "/lb/pred/bench"
best = None
for _ in range(3):
    t0 = time.perf_counter()
    out = subprocess.run([binary, "longbench", "--score-only", "--pred-dir", pred, "--json", "--code-sim", sim],
                         check=True, capture_output=True, text=True).stdout
    best = min(best or 1e9, time.perf_counter() - t0)
ours = json.loads(out)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
res = {"predictions": ours["samples"], "smoothread_seconds": round(best, 3), "cores": os.cpu_count(), "cpu": cpu,
       "code_sim": sim}
if lb:
    os.remove(pred + "/result.json"); os.remove(pred + "/scores.json")
    t0 = time.perf_counter()
    subprocess.run([py, os.path.join(lb, "eval.py"), "--model", "bench"], cwd=d + "/lb", check=True,
                   capture_output=True)
    res["official_eval_py_seconds"] = round(time.perf_counter() - t0, 3)
    official = json.load(open(pred + "/result.json"))
    res["tasks_equal"] = sum(official[k] == ours["result"].get(k) for k in official)
    res["tasks"] = len(official)
    res["differences"] = {k: [ours["result"].get(k), official[k]] for k in official if official[k] != ours["result"].get(k)}
print(json.dumps(res))
PY
