#!/usr/bin/env python3
"""How well the attention kernels' blocks fill the GPU under each launch order: a list-scheduling model.

A prediction, not a measurement (bench_cuda attention --order 0|1 measures). The model: every block
slot of the GPU (SMs x blocks per SM) takes the next block in launch order as soon as its previous
block ends; a block's time is its number of key (forward) or query (backward) tiles plus one tile of
fixed cost, at the same rate in every slot (a block alone on its SM runs faster in reality, which
shortens the tails the model counts). Printed: the makespan over the perfect packing (total work /
slots) for order 0 (each head's tiles in turn, heaviest first) and order 1 (every head's heaviest
tile first: ops/cuda/attention_schedule.h), causal full attention, head dim 64/128 tilings.
usage: attention_block_order_model.py [--sms 132]
"""
import argparse, heapq


def makespan(works, slots):
    free = [0.0] * slots
    for w in works:
        t = heapq.heappop(free)
        heapq.heappush(free, t + w)
    return max(free)


def orders(work_of_tile, tiles, heads, batch):
    """Block works in launch order for order 0 and order 1 (tile 0 = the heaviest)."""
    order0 = [work_of_tile(t) for _ in range(heads * batch) for t in range(tiles)]
    order1 = [work_of_tile(t) for t in range(tiles) for _ in range(heads * batch)]
    return order0, order1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sms", type=int, default=132)
    a = ap.parse_args()
    print("| kernel | L | batch x heads (grid rows) | blocks | order 0 / perfect | order 1 / perfect | order 0 / order 1 |")
    print("|---|---|---|---|---|---|---|")
    rows = [("forward", L, B, H) for L, B, H in [(4096, 1, 16), (4096, 4, 16), (16384, 1, 16), (65536, 1, 16)]]
    rows += [("backward", L, B, H) for L, B, H in [(4096, 1, 16), (4096, 4, 16), (16384, 1, 16), (65536, 1, 16)]]
    for kernel, L, B, H in rows:
        if kernel == "forward":  # 128-query blocks of 4 warps, 2 an SM; tile t = query tile nq-1-t: 2 (nq - t) key tiles of 64
            tiles, slots = L // 128, 2 * a.sms
            work = lambda t, tiles=tiles: 2 * (tiles - t) + 1
        else:  # 128-key blocks of 8 warps, 1 an SM; key tile t sees (L - 128 t) / 64 query tiles of 64
            tiles, slots = L // 128, a.sms
            work = lambda t, L=L: (L - 128 * t) / 64 + 1
        o0, o1 = orders(work, tiles, H, B)
        perfect = sum(o0) / slots
        m0, m1 = makespan(o0, slots), makespan(o1, slots)
        print(f"| {kernel} | {L} | {B} x {H} | {len(o0)} | {m0 / perfect:.3f} | {m1 / perfect:.3f} | {m0 / m1:.2f}x |")


if __name__ == "__main__":
    main()
