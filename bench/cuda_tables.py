#!/usr/bin/env python3
"""docs/PERF.md tables from bench/run_cuda.sh output (JSON lines)."""
import json, sys


def chunked_tables(jpath):
    """The delta-rule scans, chunked (1) against the token kernels (0), from `run_cuda.sh ... chunked`."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{")]
    mx = {(r["L"], r["chunked"]): r for r in rows if r.get("bench") == "mixer"}
    print("| L | attention fwd+bwd | window 4096 fwd+bwd | GDN chunked | GDN token | speed-up | "
          "RWKV-7 chunked | RWKV-7 token | speed-up | GDN fwd chunked / token | RWKV-7 fwd chunked / token |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for L in sorted({k[0] for k in mx}):
        c, t = mx.get((L, 1)), mx.get((L, 0))
        if not c or not t:
            continue
        win = f"{c['attn_w4096_fwdbwd_ms']:.2f}" if "attn_w4096_fwdbwd_ms" in c else "-"
        print(f"| {L} | {c['attn_w0_fwdbwd_ms']:.2f} | {win} | {c['delta_rule_fwdbwd_ms']:.2f} | "
              f"{t['delta_rule_fwdbwd_ms']:.2f} | {t['delta_rule_fwdbwd_ms'] / c['delta_rule_fwdbwd_ms']:.1f}x | "
              f"{c['rwkv7_wkv_fwdbwd_ms']:.2f} | {t['rwkv7_wkv_fwdbwd_ms']:.2f} | "
              f"{t['rwkv7_wkv_fwdbwd_ms'] / c['rwkv7_wkv_fwdbwd_ms']:.1f}x | "
              f"{c['delta_rule_fwd_ms']:.2f} / {t['delta_rule_fwd_ms']:.2f} | "
              f"{c['rwkv7_wkv_fwd_ms']:.2f} / {t['rwkv7_wkv_fwd_ms']:.2f} |")
    md = [r for r in rows if r.get("bench") == "model"]
    if md:
        print("\n| model | L | recompute | scan | train tok/s | MFU | peak GiB | prefill tok/s | decode tok/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in md:
            dec = f"{r['decode_tokens_per_s']:.0f}" if r["decode_tokens_per_s"] else "-"
            print(f"| {r['preset']} | {r['L']} | {'yes' if r['recompute'] else 'no'} | "
                  f"{'chunked' if r['chunked'] else 'token'} | {r['train_tokens_per_s']:.0f} | "
                  f"{100 * r['train_mfu']:.1f}% | {r['train_peak_gib']:.1f} | {r['prefill_tokens_per_s']:.0f} | {dec} |")


def mean(xs):
    return sum(xs) / len(xs)


def ab_groups(rows, pick):
    """Per model (preset, and window when there is one; in file order), the rows of each A/B setting:
    {setting: rows} for every model that has all of them. pick: {setting: predicate on a row}."""
    def label(r):
        return r["preset"] + (" W=%d" % r["window"] if r.get("window") else "")
    for p in dict.fromkeys(label(r) for r in rows):
        by = {k: [r for r in rows if label(r) == p and f(r)] for k, f in pick.items()}
        if all(by.values()):
            yield p, by


def mirror_tables(jpath):
    """The bf16 weight mirror on / off (training) and bf16 / fp32 decode weights, from `run_cuda.sh ... mirror`:
    means over the repeated runs of each setting (the script alternates them)."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{")]
    # run_cuda.sh tags each line with its A/B ("ab": "train" | "decode"); untagged files (before the tag)
    # hold, per preset, the script's 4 training runs and then its 4 decode runs
    seen = {}
    for r in rows:
        i = seen[r["preset"]] = seen.get(r["preset"], -1) + 1
        r.setdefault("ab", "train" if i < 4 else "decode")
    print("| model | L | weight mirror | runs | train ms / step | train tok/s | MFU | peak GiB | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    train = {m: (lambda r, m=m: r["ab"] == "train" and r["weight_mirror"] == m) for m in (1, 0)}
    for p, ab in ab_groups(rows, train):
        base = mean([r["train_ms"] for r in ab[0]])
        for m in (1, 0):
            rs = ab[m]
            ms = mean([r["train_ms"] for r in rs])
            print(f"| {p} | {rs[0]['L']} | {'on' if m else 'off'} | {len(rs)} | {ms:.1f} | "
                  f"{mean([r['train_tokens_per_s'] for r in rs]):.0f} | {100 * mean([r['train_mfu'] for r in rs]):.1f}% | "
                  f"{rs[0]['train_peak_gib']:.1f} | {base / ms:.2f}x |")
    print("\n| model | decode weights | runs | decode tok/s | GB/s read | speed-up |")
    print("|---|---|---|---|---|---|")
    decode = {d: (lambda r, d=d: r["ab"] == "decode" and r["decode_weights"] == d) for d in ("bf16", "fp32")}
    for p, dec in ab_groups(rows, decode):
        base = mean([r["decode_tokens_per_s"] for r in dec["fp32"]])
        for d in ("bf16", "fp32"):
            tps = mean([r["decode_tokens_per_s"] for r in dec[d]])
            print(f"| {p} | {d} | {len(dec[d])} | {tps:.1f} | {mean([r['decode_GBps'] for r in dec[d]]):.0f} | "
                  f"{tps / base:.2f}x |")


def graphs_tables(jpath):
    """Decode with each step captured as one CUDA graph vs op by op, from `run_cuda.sh ... graphs`: means
    over the repeated runs of each setting (the script alternates them)."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{") and "decode_graphs" in l]
    print("| model | decode graphs | runs | decode tok/s | ms / token | GB/s read | graphs built / replayed / launched | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for p, by in ab_groups(rows, {g: (lambda r, g=g: r["decode_graphs"] == g) for g in (1, 0)}):
        base = mean([r["decode_tokens_per_s"] for r in by[0]])
        for g in (1, 0):
            rs = by[g]
            tps = mean([r["decode_tokens_per_s"] for r in rs])
            built = "%d / %s / %d" % (sum(r["graph_instantiations"] for r in rs),
                                      sum(r["graph_replays"] for r in rs) if "graph_replays" in rs[0] else "-",
                                      sum(r["graph_launches"] for r in rs)) if g else "-"
            print(f"| {p} | {'on' if g else 'off'} | {len(rs)} | {tps:.1f} | {1e3 / tps:.2f} | "
                  f"{mean([r['decode_GBps'] for r in rs]):.0f} | {built} | {tps / base:.2f}x |")


def build_table(rows, key, key_head, key_cells, head, cells, speedup):
    """A/B table of builds or settings in one run (lines tagged "build": "new" | "old" | any other
    label, alternated): per key(row), in file order, one line per label: key_cells(key), the label,
    its runs, cells(runs) and speedup(runs, baseline runs); the baseline is "old", else the last label."""
    print("| " + " | ".join(key_head + ["build", "runs"] + head) + " | speed-up |")
    print("|" + "---|" * (len(key_head) + len(head) + 3))
    for k in dict.fromkeys(key(r) for r in rows):
        here = [r for r in rows if key(r) == k]
        by = {v: [r for r in here if r["build"] == v] for v in dict.fromkeys(r["build"] for r in here)}
        base = by["old" if "old" in by else list(by)[-1]]
        for v, rs in by.items():
            print("| " + " | ".join(key_cells(k) + [v, str(len(rs))] + cells(rs)) + f" | {speedup(rs, base)} |")


def builds_tables(jpath):
    """Decode of builds or settings in one run: means of each label's runs per model."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{") and "build" in l]
    def model(r):  # bf16 decode weights: a model of its own
        w = r.get("decode_weights", "fp32")
        return (r["preset"] + (" (%s decode weights)" % w if w != "fp32" else "") +
                (" W=%d" % r["window"] if r.get("window") else ""))
    tps = lambda rs: mean([r["decode_tokens_per_s"] for r in rs])
    build_table(rows, model, ["model"], lambda k: [k], ["decode tok/s", "ms / token", "GB/s read"],
                lambda rs: [f"{tps(rs):.1f}", f"{1e3 / tps(rs):.2f}", f"{mean([r['decode_GBps'] for r in rs]):.0f}"],
                lambda rs, base: f"{tps(rs) / tps(base):.2f}x")


def train_builds_tables(jpath):
    """Training steps of builds or settings in one run: per model, L and window, the means of each
    label's runs."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{") and "build" in l and l.find("train_ms") > 0]
    ms = lambda rs: mean([r["train_ms"] for r in rs])
    seqs = lambda r: "%d x %d" % (r.get("batch", 1), r.get("accum", 1))  # sequences a step: batch x accum
    build_table(rows, lambda r: (r["preset"], r["L"], r.get("window", 0), seqs(r)),
                ["model", "L", "window", "sequences / step (batch x accum)"],
                lambda k: [k[0], str(k[1]), str(k[2] or "full"), k[3]],
                ["ms / step", "tokens/s", "MFU", "peak GiB"],
                lambda rs: [f"{ms(rs):.2f}", f"{mean([r['train_tokens_per_s'] for r in rs]):.0f}",
                               f"{100 * mean([r['train_mfu'] for r in rs]):.1f}%",
                               f"{mean([r['train_peak_gib'] for r in rs]):.1f}"],
                lambda rs, base: f"{ms(base) / ms(rs):.3f}x")


def attention_ab_tables(jpath, key, title, names, base, default, speed="fwd_ms"):
    """Attention under each setting of `key` (alternated in one run) and torch SDPA flash, same run:
    means of each setting's runs per shape; speed-up of `speed` (fwd_ms or fwdbwd_ms) over setting
    `base`, and each row's time ratio to SDPA (SDPA time / ours: 1.00 = parity). names: {value: label}."""
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{")]
    rows = [r for r in rows if "fwd_ms" in r]
    dims = len({r.get("dim", 128) for r in rows}) > 1
    head = (["L", "window"] + (["head dim"] if dims else []) + [title, "runs", "fwd ms", "fwd TFLOP/s"] +
            (["fwd speed-up"] if speed == "fwd_ms" else ["bwd ms"]) + ["fwd+bwd ms", "fwd+bwd TFLOP/s"] +
            ([] if speed == "fwd_ms" else ["fwd+bwd speed-up"]) + ["fwd / fwd+bwd vs SDPA"])
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for L, W, D in dict.fromkeys((r["L"], r["window"], r.get("dim", 128)) for r in rows):
        here = [r for r in rows if (r["L"], r["window"], r.get("dim", 128)) == (L, W, D)]
        sdpa = [r for r in here if r["impl"] == "torch_sdpa_flash"]
        ours = lambda v: [r for r in here if r["impl"] == "smoothread" and r.get(key) == v]
        groups = [(names[v] + (" (default)" if v == default else ""), ours(v)) for v in names]
        for label, rs in groups + [("torch SDPA flash", sdpa)]:
            if not rs:
                continue
            f, fb = mean([r["fwd_ms"] for r in rs]), mean([r["fwdbwd_ms"] for r in rs])
            t = f if speed == "fwd_ms" else fb
            up = (f"{mean([r[speed] for r in ours(base)]) / t:.2f}x" if ours(base) and label != "torch SDPA flash"
                  else "")
            vs = (f"{mean([r['fwd_ms'] for r in sdpa]) / f:.2f} / {mean([r['fwdbwd_ms'] for r in sdpa]) / fb:.2f}"
                  if sdpa else "")
            cells = [str(L), str(W or "full")] + ([str(D)] if dims else []) + [label, str(len(rs)), f"{f:.3f}",
                     f"{mean([r['fwd_tflops'] for r in rs]):.0f}"]
            if speed == "fwd_ms":
                cells += [up, f"{fb:.3f}", f"{mean([r['fwdbwd_tflops'] for r in rs]):.0f}", vs]
            else:
                cells += [f"{fb - f:.3f}", f"{fb:.3f}", f"{mean([r['fwdbwd_tflops'] for r in rs]):.0f}", up, vs]
            print("| " + " | ".join(cells) + " |")


def main(jpath, gpu_path):
    rows = [json.loads(l) for l in open(jpath) if l.strip().startswith("{")]
    print(open(gpu_path).read().strip().replace("\n", ", "))
    att = [r for r in rows if r.get("bench") == "attention"]
    if att:
        print("\n| L | window | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
        print("|---|---|---|---|---|---|---|")
        for r in att:
            if "error" in r:
                print(f"| {r['L']} | {r['window']} | {r['impl']} | error: {r['error'][:60]} | | | |")
                continue
            print(f"| {r['L']} | {r['window']} | {r['impl']} | {r['fwd_ms']:.3f} | {r['fwd_tflops']:.0f} | "
                  f"{r['fwdbwd_ms']:.3f} | {r['fwdbwd_tflops']:.0f} |")
    gm = [r for r in rows if r.get("bench") == "gemm"]
    if gm:
        print("\n| GEMM | N x I -> O | fp32 storage, bf16 TC | fp32 storage, tf32 TC | bf16 storage | linear_fwd op |")
        print("|---|---|---|---|---|---|")
        for r in gm:
            print(f"| {r['shape']} | {r['N']} x {r['I']} -> {r['O']} | {r['fp32_fast16bf_tflops']:.0f} | "
                  f"{r['fp32_tf32_tflops']:.0f} | {r['bf16_tflops']:.0f} | {r.get('ops_linear_tflops', 0):.0f} |")
    mx = [r for r in rows if r.get("bench") == "mixer"]
    if mx:
        print("\n| L | heads x dim | attention fwd+bwd ms | window 4096 fwd+bwd ms | GDN delta rule fwd+bwd ms | "
              "RWKV-7 wkv fwd+bwd ms | attention fwd ms | GDN fwd ms | RWKV-7 wkv fwd ms |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in mx:
            g = lambda k: f"{r[k]:.2f}" if k in r else "-"
            print(f"| {r['L']} | {r['heads']} x {r['dim']} | {g('attn_w0_fwdbwd_ms')} | {g('attn_w4096_fwdbwd_ms')} | "
                  f"{g('delta_rule_fwdbwd_ms')} | {g('rwkv7_wkv_fwdbwd_ms')} | {g('attn_w0_fwd_ms')} | "
                  f"{g('delta_rule_fwd_ms')} | {g('rwkv7_wkv_fwd_ms')} |")
    mod = [r for r in rows if r.get("bench") == "model"]
    if mod:
        print("\n| model | L | window | recompute | sequences / step (batch x accum) | train ms / step | train tok/s | MFU | "
              "peak GiB | prefill tok/s | decode tok/s | decode GB/s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in mod:
            tr = (f"{r['train_ms']:.1f} | {r['train_tokens_per_s']:.0f} | {100*r['train_mfu']:.1f}% | {r['train_peak_gib']:.1f}"
                  if "train_tokens_per_s" in r else f"{r.get('train_error', '')[:50]} | | | ")
            inf = (f"{r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} | {r['decode_GBps']:.0f}"
                   if "prefill_tokens_per_s" in r else f"{r.get('infer_error', '')[:50]} | | ")
            seqs = "%d x %d" % (r.get("batch", 1), r.get("accum", 1))
            print(f"| {r['preset']} | {r['L']} | {r['window'] or 'full'} | {'yes' if r.get('recompute') else 'no'} | {seqs} | "
                  f"{tr} | {inf} |")


if __name__ == "__main__":
    if sys.argv[1] == "--chunked":
        chunked_tables(sys.argv[2])
    elif sys.argv[1] == "--mirror":
        mirror_tables(sys.argv[2])
    elif sys.argv[1] == "--graphs":
        graphs_tables(sys.argv[2])
    elif sys.argv[1] == "--builds":
        builds_tables(sys.argv[2])
    elif sys.argv[1] == "--train-builds":
        train_builds_tables(sys.argv[2])
    elif sys.argv[1] == "--fwd-tiles":  # bench_cuda attention --fwd-tiles 1|2|3, alternated
        attention_ab_tables(sys.argv[2], "fwd_tiles", "forward tiles (queries x keys)", {1: "64 x 64", 2: "128 x 64", 3: "128 x 32"}, 1, 2)
    elif sys.argv[1] == "--bwd-kernel":  # bench_cuda attention --bwd-kernel 1|2, alternated
        attention_ab_tables(sys.argv[2], "bwd_kernel", "backward kernel", {1: "64 keys, 4 warps", 2: "128 keys, 8 warps, 2-D"}, 1, 2,
                            "fwdbwd_ms")
    elif sys.argv[1] == "--attn-builds":  # lines tagged "build": "old" | "new" | any label, alternated
        labels = [json.loads(l).get("build") for l in open(sys.argv[2]) if l.strip().startswith("{")]
        labels = sorted(dict.fromkeys(v for v in labels if v), key=lambda v: (v != "old", v != "new"))  # old, new, others (stable)
        base = "old" if "old" in labels else labels[0]  # speed-ups over "old", else over the first label
        attention_ab_tables(sys.argv[2], "build", "build", {v: v for v in labels}, base, None, "fwdbwd_ms")
    else:
        main(*sys.argv[1:3])
