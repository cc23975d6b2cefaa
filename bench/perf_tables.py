#!/usr/bin/env python3
"""Formats bench_ops JSON output as the markdown tables of docs/PERF.md."""
import json, subprocess, sys

d = json.load(open(sys.argv[1]))
runs = [b for b in d["benchmarks"] if b.get("run_type") == "iteration"]
ctx = d["context"]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Machine: {cpu}, {ctx['num_cpus']} cores; commit {commit}; {ctx['date']}\n")

def group(prefix):
    out = {}
    for b in runs:
        name = b["name"].split("/")
        if name[0] == prefix:
            key = "/".join(x for x in name[1:] if not x.startswith(("real_time", "iterations", "min_time", "repeats")))
            out.setdefault(key, []).append(b)
    return out

import statistics
med = lambda runs, key: statistics.median(b[key] for b in runs)
sg, lf, lb = group("BM_sgemm_openblas"), group("BM_linear_fwd"), group("BM_linear_bwd")
print("GEMM-bound ops vs OpenBLAS sgemm (same shape, same run; median of 5 repetitions)\n")
print("| tokens x in -> out | OpenBLAS sgemm GFLOP/s | linear fwd GFLOP/s | fwd / sgemm | linear bwd GFLOP/s | bwd / sgemm |")
print("|---|---|---|---|---|---|")
for k in sg:
    s = med(sg[k], "GFLOPS"); f = med(lf[k], "GFLOPS"); bw = med(lb[k], "GFLOPS")
    n, i, o = k.split("/")
    print(f"| {n} x {i} -> {o} | {s:.1f} | {f:.1f} | {f/s:.2f} | {bw:.1f} | {bw/s:.2f} |")

print("\nAttention forward, 4 q heads / 2 kv heads x 64, one sequence (W = window; full = causal)\n")
print("| L | full: ms | full: GFLOP/s | W=1024: ms | W=1024: GFLOP/s | full / window time |")
print("|---|---|---|---|---|---|")
af = group("BM_attention_fwd")
Ls = sorted({int(k.split("/")[0]) for k in af})
for L in Ls:
    f = af.get(f"{L}/0"); w = af.get(f"{L}/1024")
    fm = min(b["real_time"] for b in f) if f else None
    wm = min(b["real_time"] for b in w) if w else None
    fg = max(b["GFLOPS"] for b in f) if f else None
    wg = max(b["GFLOPS"] for b in w) if w else None
    cell = lambda v, fmt: (fmt % v) if v is not None else "-"
    ratio = f"{fm/wm:.1f}x" if fm and wm else "-"
    print(f"| {L} | {cell(fm,'%.1f')} | {cell(fg,'%.1f')} | {cell(wm,'%.1f')} | {cell(wg,'%.1f')} | {ratio} |")

print("\nAttention forward + backward\n")
print("| L | full: ms | W=1024: ms |")
print("|---|---|---|")
ab = group("BM_attention_fwd_bwd")
for L in sorted({int(k.split("/")[0]) for k in ab}):
    f = ab.get(f"{L}/0"); w = ab.get(f"{L}/1024")
    print(f"| {L} | {f[0]['real_time']:.1f} | {w[0]['real_time']:.1f} |")

mx = group("BM_mixer_fwd_bwd")
if mx:
    print("\nOne mixer layer's core, forward + backward, 4 heads x 64, one sequence (ms)\n")
    print("| L | causal attention | window 4096 | gated delta rule (C=64) | RWKV-7 wkv (generalized delta rule) | attention / GDN | attention / RWKV-7 |")
    print("|---|---|---|---|---|---|---|")
    for L in sorted({int(k.split("/")[0]) for k in mx}):
        t = {kind: mx[f"{L}/{kind}"][0]["real_time"] if f"{L}/{kind}" in mx else None for kind in (0, 1, 2, 3)}
        cell = lambda v: f"{v:.1f}" if v is not None else "-"
        ratio = lambda a, b: f"{a/b:.1f}x" if a and b else "-"
        print(f"| {L} | {cell(t[0])} | {cell(t[1])} | {cell(t[2])} | {cell(t[3])} | {ratio(t[0], t[2])} | {ratio(t[0], t[3])} |")

print("\nWhole model (hidden 384, 4 layers, 6/2 heads x 64, vocab 266)\n")
print("| benchmark | config | tokens/s | model GFLOP/s (6·params·tokens) |")
print("|---|---|---|---|")
for k, v in group("BM_model_train_step").items():
    T, W = k.split("/")
    print(f"| train step fwd+bwd, B=4 x T={T} | {'layers 0,2 SWA W='+W if W!='0' else 'all full'} | {v[0]['tokens/s']:.0f} | {v[0]['GFLOPS']:.1f} |")
for k, v in group("BM_model_decode").items():
    print(f"| decode 1 token after 4k prefill | {'all SWA W='+k if k!='0' else 'all full'} | {v[0]['tokens/s']:.0f} | - |")
