#!/usr/bin/env python3
"""Tokenizer parity with Hugging Face `tokenizers` (run where it is installed, e.g. the GPU machine).

Writes the compact fixture tests/data/qwen3_tokenizer_parity.json that the C++ test
(test_tokenizer: BpeParity.QwenMatchesHuggingFaceOnTenMegabytes) checks in CI: per document of
the corpus, the number of ids and a 64-bit FNV-1a hash of them (int32 little-endian), as HF's
tokenizer encodes it with add_special_tokens=False (added tokens in the text are still matched).

  smoothread gen --task text_mix --count 2600 --seed 7 --out corpus.jsonl
  python3 tests/parity/tokenizer_parity.py --tokenizer tokenizer.json --corpus corpus.jsonl \
      --out tests/data/qwen3_tokenizer_parity.json [--ours ours.jsonl]

--ours: smoothread's ids (`smoothread tokenize --tokenizer ... --jsonl < corpus.jsonl`), compared
id by id, with the first differences printed.
"""
import argparse, hashlib, json, struct, sys, time


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for b in struct.pack("<%di" % len(ids), *ids):
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ours")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--doc-bytes", type=int, default=4096)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    import tokenizers
    tok = Tokenizer.from_file(a.tokenizer)
    docs = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8")]
    t0 = time.time()
    ref = [tok.encode(d, add_special_tokens=False).ids for d in docs]
    secs = time.time() - t0
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    out = {
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_sha256": hashlib.sha256(open(a.tokenizer, "rb").read()).hexdigest(),
        "corpus": {"task": "text_mix", "seed": a.seed, "count": len(docs), "doc_bytes": a.doc_bytes},
        "bytes": nbytes,
        "tokens": sum(len(r) for r in ref),
        "docs": [[len(r), fnv1a64(r)] for r in ref],
    }
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"tokenizers {tokenizers.__version__}: {len(docs)} docs, {nbytes/1e6:.2f} MB, {out['tokens']} tokens, "
          f"{nbytes/1e6/secs:.1f} MB/s (one thread, Python loop)")
    if a.ours:
        ours = [json.loads(l)["ids"] for l in open(a.ours)]
        bad = 0
        for i, (r, o) in enumerate(zip(ref, ours)):
            if r != o:
                bad += 1
                if bad <= 8:
                    k = next((j for j in range(min(len(r), len(o))) if r[j] != o[j]), min(len(r), len(o)))
                    ctx = lambda ids: repr(tok.decode(ids[max(0, k - 3):k + 4]))
                    print(f"doc {i}: first difference at id {k}: ref {r[max(0,k-3):k+4]} {ctx(r)} "
                          f"ours {o[max(0,k-3):k+4]} {ctx(o)}")
        print(f"ours vs tokenizers: {len(ref) - bad}/{len(ref)} documents identical"
              + ("" if len(ours) == len(ref) else f" (ours has {len(ours)} lines)"))
        sys.exit(1 if bad or len(ours) != len(ref) else 0)


if __name__ == "__main__":
    main()
