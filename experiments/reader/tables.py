#!/usr/bin/env python3
"""Tables (markdown) and a plot (SVG) of the small-scale Smooth Reading study (issue 10).

    python3 experiments/reader/tables.py [RESULTS_DIR] [--svg docs/figures/niah_by_length.svg]

RESULTS_DIR holds one folder per evaluation (study.sh's runs/reader/results, or the committed copy
experiments/reader/results) with `smoothread eval --json` score files, and train/ with the training
logs. Prints the markdown that docs/RESULTS.md carries.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from svg_plot import line_plot, pop_option, size_label as k  # noqa: E402

LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072, 262144]
TRAIN_LEN = 4096


def row(path):
    if not os.path.exists(path):
        return None
    return json.load(open(path))["rows"][0]


def cell(r, extra=""):
    if r is None:
        return "—"
    s = "%.0f" % r["score"]
    if r["n"] != 10:
        s += " (n=%d)" % r["n"]
    return s + extra


def niah_table(d):
    out = ["| model (6 layers, 384 wide, 9.5M params) | mode | " + " | ".join(
        "%s (%dx)" % (k(n), n // TRAIN_LEN) for n in LENGTHS) + " |",
        "|---|---|" + "---|" * len(LENGTHS)]
    rows = [("SWA W=1024", "EMR (Smooth Reading), C=384", "emr_swa-emr"),
            ("SWA W=1024", "one-pass (OR)", "or_swa-or"),
            ("full attention", "one-pass (OR)", "or_full-or")]
    series = {}
    for name, mode, sub in rows:
        cells, pts = [], []
        for n in LENGTHS:
            r = row(os.path.join(d, sub, "niah-%d.score.json" % n))
            cells.append(cell(r))
            pts.append(None if r is None else r["score"])
        series[name + ", " + mode.split(",")[0]] = pts
        out.append("| %s | %s | %s |" % (name, mode, " | ".join(cells)))
    read = []
    for n in LENGTHS:
        r = row(os.path.join(d, "emr_swa-emr", "niah-%d.score.json" % n))
        read.append("—" if r is None else "%.0f%% / %.0f" % (100 * r["tokens_read"] / n, r["rounds"]))
    out.append("| SWA W=1024 | EMR: share of the document read / rounds | %s |" % " | ".join(read))
    return "\n".join(out), series


def grid_table(d):
    out = ["| chunk C (tokens) | C / W | accuracy | share of the document read | rounds |", "|---|---|---|---|---|"]
    for c in [128, 256, 384, 512, 768, 1024, 2048]:
        r = row(os.path.join(d, "emr_swa-grid", "C%d.score.json" % c))
        if r is None:
            continue
        out.append("| %d | %.2f | %s | %.0f%% | %.1f |" % (c, c / 1024, cell(r), 100 * r["tokens_read"] / 16384, r["rounds"]))
    return "\n".join(out)


def early_stop_table(d):
    out = ["| length | early stop | accuracy | tokens read | rounds | s / sample |", "|---|---|---|---|---|---|"]
    for n in [16384, 65536]:
        on = row(os.path.join(d, "emr_swa-emr", "niah-%d.score.json" % n))
        off = row(os.path.join(d, "emr_swa-grid", "nostop-%d.score.json" % n))
        for label, r in [("on", on), ("off", off)]:
            if r is None:
                continue
            out.append("| %s | %s | %s | %.0f | %.1f | %.1f |" % (k(n), label, cell(r), r["tokens_read"], r["rounds"],
                                                                   r["seconds_per_sample"]))
    return "\n".join(out)


def heldout_table(d):
    out = ["| test (EMR, C=384) | 4k | 16k | 64k |", "|---|---|---|---|"]
    for label, pat in [("niah_single_2, held-out sentences, keys and haystack (this repository's docs)", "heldout-%d"),
                       ("passkey, held-out sentences", "heldout-passkey-%d")]:
        cells = [cell(row(os.path.join(d, "emr_swa-heldout", (pat % n) + ".score.json"))) for n in [4096, 16384, 65536]]
        out.append("| %s | %s |" % (label, " | ".join(cells)))
    mk = row(os.path.join(d, "emr_swa-multikey-cpu", "multikey-4096.score.json"))
    out.append("| niah_multikey_1 (3 distractor needles, RULER sentences; chance = 25%%) | %s | — | — |" % cell(mk))
    return "\n".join(out)


def train_table(d):
    out = ["| model | data | tokens | steps | wall s | tokens/s | last 20 logged losses (mean) |", "|---|---|---|---|---|---|---|"]
    for name, data in [("emr_swa", "EMR trajectories + repeat"), ("or_swa", "one-pass samples + repeat"),
                       ("or_full", "one-pass samples + repeat")]:
        p = os.path.join(d, "train", name + ".log.jsonl")
        if not os.path.exists(p):
            continue
        logs = [json.loads(l) for l in open(p) if l.startswith("{")]
        last = logs[-1]
        tail = [x["loss"] for x in logs[-20:]]
        out.append("| %s | %s | %.0fM | %d | %.0f | %.0fk | %.3f |" % (
            name, data, last["tokens"] / 1e6, last["step"], last["elapsed_s"], last["tokens"] / last["elapsed_s"] / 1e3,
            sum(tail) / len(tail)))
    return "\n".join(out)


def svg(series, path):
    line_plot(path, [k(n) for n in LENGTHS], series, "NIAH accuracy (%)",
              "document length (tokens); trained on 512-4k", ymax=100)


def main():
    args = sys.argv[1:]
    out_svg = pop_option(args, "--svg")
    d = args[0] if args else "experiments/reader/results"
    t, series = niah_table(d)
    print("### NIAH by length\n\n" + t + "\n")
    print("### Window x chunk (W = 1024, 16k-token documents)\n\n" + grid_table(d) + "\n")
    print("### Early stop\n\n" + early_stop_table(d) + "\n")
    print("### Generalization of the EMR model\n\n" + heldout_table(d) + "\n")
    print("### Training runs\n\n" + train_table(d))
    if out_svg:
        svg(series, out_svg)


if __name__ == "__main__":
    main()
