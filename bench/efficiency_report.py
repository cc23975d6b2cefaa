#!/usr/bin/env python3
"""The efficiency table and plot from bench/efficiency.sh's JSON files (smoothread bench --format json).

    python3 bench/efficiency_report.py runs/efficiency-cpu [--svg docs/figures/efficiency-cpu.svg]
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from svg_plot import line_plot, pop_option, size_label as size  # noqa: E402


def load(d, name):
    """(environment, {size: result}) from NAME.json, plus NAME_long.json when there is one."""
    j = json.load(open(os.path.join(d, name + ".json")))
    rows = {r["test"].split()[-1]: r for r in j["results"]}
    long_path = os.path.join(d, name + "_long.json")
    if os.path.exists(long_path):
        rows.update({r["test"].split()[-1]: r for r in json.load(open(long_path))["results"]})
    return j["environment"], rows


def main():
    args = sys.argv[1:]
    out_svg = pop_option(args, "--svg")
    d = args[0]
    env, emr = load(d, "emr")
    _, one = load(d, "or")
    mib = lambda b: "%.0f MiB" % (b / 2**20) if b else "—"
    mem = lambda r: mib(r["peak_device_bytes"] or r["peak_rss_bytes"])
    print("commit %s (%s), %s, %s threads%s; model %s, %.1fM parameters; time = mean ± std over the runs\n" % (
        env["commit"], env["build_type"], env["cpu"], env["threads"], ", GPU " + env["gpu"] if env["gpu"] else "",
        env["model"]["model_type"], env["model"]["params"] / 1e6))
    bare = load(d, "emr_nosummary")[1] if os.path.exists(os.path.join(d, "emr_nosummary.json")) else {}
    state = lambda r: mib(r["extra"].get("state_bytes", 0))
    print("| document | runs | SWA + EMR: time (s) | rounds | state | peak memory | full attention + OR: time (s) | "
          "state (KV cache) | peak memory | EMR speed-up | EMR without summaries: time (s) | its speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lengths = sorted(set(emr) & set(one), key=int)
    for n in lengths:
        e, o = emr[n], one[n]
        b = bare.get(n)
        print("| %s | %d | %.2f ± %.2f | %d | %s | %s | %.2f ± %.2f | %s | %s | %.2fx | %s | %s |" % (
            size(n), len(e["seconds"]), e["mean_s"], e["std_s"], e["extra"]["rounds"], state(e), mem(e),
            o["mean_s"], o["std_s"], state(o), mem(o), o["mean_s"] / e["mean_s"],
            "%.2f" % b["mean_s"] if b else "—", "%.2fx" % (o["mean_s"] / b["mean_s"]) if b else "—"))
    if os.path.exists(os.path.join(d, "train_swa.json")):
        _, ts = load(d, "train_swa")
        _, tf = load(d, "train_full")
        print("\n| training, one sequence per step | SWA tokens/s | full attention tokens/s | SWA / full |")
        print("|---|---:|---:|---:|")
        for n in sorted(set(ts) & set(tf), key=int):
            print("| %s | %.0f ± %.0f | %.0f ± %.0f | %.2fx |" % (size(n), ts[n]["tokens_per_s"], ts[n]["tokens_per_s_std"],
                                                             tf[n]["tokens_per_s"], tf[n]["tokens_per_s_std"],
                                                             ts[n]["tokens_per_s"] / tf[n]["tokens_per_s"]))
    if out_svg:
        line_plot(out_svg, [size(n) for n in lengths],
                  dict([("SWA + EMR (Smooth Reading)", [emr[n]["mean_s"] for n in lengths]),
                        ("full attention + one pass", [one[n]["mean_s"] for n in lengths])] +
                       ([("SWA + EMR, no summaries", [bare[n]["mean_s"] for n in lengths])]
                        if all(n in bare for n in lengths) else [])),
                  "reading time (s), log scale", "document length (tokens)", log_y=True)


if __name__ == "__main__":
    main()
