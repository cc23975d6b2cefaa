#!/usr/bin/env python3
"""The table of bench/cpu_ab.sh: per binary (old, new) the mean of each run's tokens/s in `bench`
and of the README read's seconds (total, decode, prefill), with the runs' range; speed-up new/old.
usage: python3 bench/cpu_ab_table.py OUT_DIR   (bench.jsonl: one JSON object per run, possibly
pretty-printed; read.jsonl: one line per read)"""
import json
import sys


def objects(path):
    s, dec, i, out = open(path).read(), json.JSONDecoder(), 0, []
    while True:
        while i < len(s) and s[i].isspace():
            i += 1
        if i >= len(s):
            return out
        o, i = dec.raw_decode(s, i)
        out.append(o)


def cell(xs, fmt):
    m = sum(xs) / len(xs)
    return m, (fmt % m) + " (" + ", ".join(fmt % x for x in xs) + ")"


def main(d):
    bench, reads = objects(d + "/bench.jsonl"), objects(d + "/read.jsonl")
    tests = [r["test"] for r in bench[0]["results"]]
    print("| binary | " + " | ".join("`bench` %s tokens/s" % t for t in tests) +
          " | read s | read decode s | read prefill s | answer, rounds |")
    print("|---|" + "---|" * (len(tests) + 4))
    means = {}
    for tag in ("old", "new"):
        cells = []
        for t in tests:
            xs = [r["tokens_per_s"] for b in bench if b["binary"] == tag for r in b["results"] if r["test"] == t]
            m, c = cell(xs, "%.0f")
            means[(tag, t)] = m
            cells.append(c)
        rs = [r for r in reads if r["binary"] == tag]
        for k in ("seconds", "decode_s", "prefill_s"):
            m, c = cell([r[k] for r in rs], "%.2f")
            means[(tag, k)] = m
            cells.append(c)
        cells.append(", ".join(sorted({"%s in %d rounds" % (r["answer"], r["rounds"]) for r in rs})))
        print("| %s | %s |" % (tag, " | ".join(cells)))
    ups = ["%.2fx" % (means[("new", t)] / means[("old", t)]) for t in tests]
    ups += ["%.2fx" % (means[("old", k)] / means[("new", k)]) for k in ("seconds", "decode_s", "prefill_s")]
    print("| speed-up | %s | |" % " | ".join(ups))


if __name__ == "__main__":
    main(sys.argv[1])
