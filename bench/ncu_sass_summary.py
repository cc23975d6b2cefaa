#!/usr/bin/env python3
"""Summarize Nsight Compute's per-instruction (SASS) source counters of one kernel.

Input: `ncu -i REPORT --page source --csv --print-source sass > FILE.csv` (plain or .xz), from a
report taken with `--section SourceCounters --section WarpStateStats --import-source yes`.
Prints, for each file:
  - executed instructions and warp-stall samples by opcode;
  - the stall reasons over the whole kernel;
  - the code as straight-line runs (consecutive instructions with the same execution count: a basic
    block, or a run of them) that hold at least --min-share of the stall samples, with their opcodes.
usage: ncu_sass_summary.py FILE.csv[.xz] [FILE2 ...] [--top 25] [--min-share 0.005]
"""
import argparse, collections, csv, io, lzma, re


def read_rows(path):
    raw = lzma.open(path, "rt") if path.endswith(".xz") else open(path, newline="")
    with raw as f:
        header, rows = None, []
        for row in csv.reader(f):
            if len(row) > 3 and row[0] == "Address":
                header = row
            elif header and len(row) == len(header):
                rows.append(dict(zip(header, row)))
    if not rows:
        raise SystemExit(f"{path}: no per-instruction rows (expected an ncu --page source --csv export)")
    return rows


def count(row, key):
    v = row.get(key, "") or "0"
    return int(v.replace(",", "")) if v.replace(",", "").isdigit() else 0


def opcode(source):
    s = re.sub(r"^@!?U?P\w+\s+", "", source.strip())  # drop a predicate guard
    return s.split(" ")[0].split(".")[0]


def summarize(path, top, min_share):
    rows = read_rows(path)
    instrs = sum(count(r, "Instructions Executed") for r in rows)
    samples = sum(count(r, "Warp Stall Sampling (All Samples)") for r in rows)
    print(f"== {path}: {len(rows)} SASS lines, {instrs / 1e6:.1f} M instructions executed, {samples} stall samples")
    by_op, stall_op = collections.Counter(), collections.Counter()
    for r in rows:
        o = opcode(r["Source"])
        by_op[o] += count(r, "Instructions Executed")
        stall_op[o] += count(r, "Warp Stall Sampling (All Samples)")
    print("| opcode | M executed | share of instructions | share of stall samples |\n|---|---|---|---|")
    for o, n in by_op.most_common(top):
        print(f"| {o} | {n / 1e6:.1f} | {100 * n / max(instrs, 1):.1f}% | {100 * stall_op[o] / max(samples, 1):.1f}% |")
    reasons = collections.Counter()
    for r in rows:
        for k in r:
            if k.startswith("stall_") and "Not Issued" not in k:
                reasons[k[6:]] += count(r, k)
    total = sum(reasons.values()) or 1
    print("stall reasons: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in reasons.most_common(10)))
    runs, cur = [], None
    for i, r in enumerate(rows):
        e = count(r, "Instructions Executed")
        if cur is None or cur["exec"] != e:
            cur = {"first": i, "exec": e, "ops": collections.Counter(), "samples": 0}
            runs.append(cur)
        cur["last"] = i
        cur["ops"][opcode(r["Source"])] += 1
        cur["samples"] += count(r, "Warp Stall Sampling (All Samples)")
    print("| SASS lines | executions a line (M) | instructions | share of stall samples | most common opcodes |\n|---|---|---|---|---|")
    for c in runs:
        if c["samples"] >= min_share * samples:
            ops = " ".join(f"{k}:{v}" for k, v in c["ops"].most_common(7))
            print(f"| {c['first']}-{c['last']} | {c['exec'] / 1e6:.2f} | {c['last'] - c['first'] + 1} | "
                  f"{100 * c['samples'] / max(samples, 1):.1f}% | {ops} |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--min-share", type=float, default=0.005)
    a = ap.parse_args()
    for f in a.files:
        summarize(f, a.top, a.min_share)


if __name__ == "__main__":
    main()
