#!/usr/bin/env python3
"""RWKV World tokenizer parity with BlinkDL's reference TRIE_TOKENIZER (RWKV-LM,
RWKV-v5/tokenizer/rwkv_tokenizer.py), which is not part of this repository: pass its path.

  smoothread gen --task text_mix --count 2600 --seed 7 --out corpus.jsonl
  smoothread tokenize --tokenizer rwkv_vocab_v20230424.txt --no-special --jsonl < corpus.jsonl > ours.jsonl
  python3 tests/parity/rwkv_world_parity.py --reference RWKV-LM/RWKV-v5/tokenizer/rwkv_tokenizer.py \
      --vocab rwkv_vocab_v20230424.txt --corpus corpus.jsonl --ours ours.jsonl

The reference has no special tokens, hence --no-special. Exits non-zero on any difference.
"""
import argparse, importlib.util, json, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--reference", required=True)
ap.add_argument("--vocab", required=True)
ap.add_argument("--corpus", required=True)
ap.add_argument("--ours", required=True)
a = ap.parse_args()
spec = importlib.util.spec_from_file_location("rwkv_tokenizer", a.reference)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
tok = mod.TRIE_TOKENIZER(a.vocab)
docs = [json.loads(l)["text"] for l in open(a.corpus, encoding="utf-8")]
ours = [json.loads(l)["ids"] for l in open(a.ours)]
t0 = time.time()
bad = 0
for i, (d, o) in enumerate(zip(docs, ours)):
    r = tok.encode(d)
    if r != o:
        bad += 1
        if bad <= 5:
            k = next((j for j in range(min(len(r), len(o))) if r[j] != o[j]), min(len(r), len(o)))
            print(f"doc {i}: first difference at {k}: reference {r[k:k+5]} ours {o[k:k+5]}")
nbytes = sum(len(d.encode("utf-8")) for d in docs)
print(f"{len(docs) - bad}/{len(docs)} documents identical ({nbytes/1e6:.2f} MB, {sum(map(len, ours))} tokens; "
      f"reference took {time.time() - t0:.0f} s)")
sys.exit(1 if bad or len(docs) != len(ours) else 0)
