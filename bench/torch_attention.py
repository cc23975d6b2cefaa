#!/usr/bin/env python3
"""PyTorch baselines for bench_cuda attention, same shapes, same card, bf16.

  sdpa_flash: torch.nn.functional.scaled_dot_product_attention(is_causal=True) restricted to the
              flash backend (full causal attention only: SDPA has no sliding window);
  flex:       torch.nn.attention.flex_attention with a causal sliding-window block mask (compiled),
              when available -- the windowed baseline.
One JSON object per line, the same keys as bench_cuda.
usage: torch_attention.py --L 4096 [--window 0] [--heads 16] [--dim 128] [--tokens 16384] [--reps 10]
                          [--impls sdpa,flex] (which baselines to run)
"""
import argparse, json, sys

import torch
import torch.nn.functional as F


def median_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def visible_pairs(L, W):
    if W <= 0 or W >= L:
        return L * (L + 1) / 2
    return W * (W + 1) / 2 + (L - W) * W


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=4096)
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--impls", default="sdpa,flex")
    a = ap.parse_args()
    L, W, H, D = a.L, a.window, a.heads, a.dim
    B = max(1, a.tokens // L)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)
    flops = 4.0 * B * H * D * visible_pairs(L, W)
    base = {"bench": "attention", "L": L, "window": W, "batch": B, "heads": H, "dim": D}

    def report(impl, fwd):
        def fb():
            q.grad = k.grad = v.grad = None
            fwd().backward(do)
        with torch.no_grad():
            tf = median_ms(fwd, a.reps)
        tfb = median_ms(fb, a.reps)
        print(json.dumps(dict(base, impl=impl, fwd_ms=round(tf, 4), fwdbwd_ms=round(tfb, 4),
                              fwd_tflops=round(flops / tf * 1e-9, 1), fwdbwd_tflops=round(3.5 * flops / tfb * 1e-9, 1))),
              flush=True)

    impls = a.impls.split(",")
    if W == 0 and "sdpa" in impls:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            report("torch_sdpa_flash", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    if "flex" not in impls:
        return 0
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        def mask(b, h, i, j):
            ok = j <= i
            return ok & (i - j < W) if W > 0 else ok
        bm = create_block_mask(mask, None, None, L, L, device="cuda")
        flex = torch.compile(flex_attention)
        report("torch_flex", lambda: flex(q, k, v, block_mask=bm))
    except Exception as e:  # flex needs triton + a working compiler toolchain
        print(json.dumps(dict(base, impl="torch_flex", error=str(e)[:200])), flush=True)


if __name__ == "__main__":
    sys.exit(main())
