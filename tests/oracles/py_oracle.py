#!/usr/bin/python3
"""Oracle for tests/test_longbench.cpp: answers with the real Python implementations the official
LongBench scorer uses (Debian's python3-jieba 0.42.1, the standard library's difflib, and
python3-levenshtein when installed). Reads JSON lines {"op": ..., ...}, writes one JSON line each.
  {"op": "cut", "text": s}                  -> list(jieba.cut(s, cut_all=False))
  {"op": "difflib", "a": a, "b": b}         -> difflib.SequenceMatcher(None, a, b).ratio()
  {"op": "levenshtein", "a": a, "b": b}     -> Levenshtein.ratio(a, b)
Exit code 3 when a needed module is missing (the test then skips)."""
import json, sys, logging, difflib

ops = set(sys.argv[1:])
try:
    if "cut" in ops:
        import jieba
        jieba.setLogLevel(logging.ERROR)
        jieba.initialize()
    if "levenshtein" in ops:
        import Levenshtein
except ImportError as e:
    print("missing module: %s" % e, file=sys.stderr)
    sys.exit(3)

for line in sys.stdin:
    q = json.loads(line)
    op = q["op"]
    if op == "cut":
        r = list(jieba.cut(q["text"], cut_all=False))
    elif op == "difflib":
        r = difflib.SequenceMatcher(None, q["a"], q["b"]).ratio()
    elif op == "levenshtein":
        r = Levenshtein.ratio(q["a"], q["b"])
    else:
        raise SystemExit("unknown op " + op)
    print(json.dumps(r, ensure_ascii=False))
