#!/usr/bin/env python3
"""Checks that smoothread model directories load in Hugging Face transformers as they are, and that
transformers computes the same logits and the same token ids as smoothread.

usage: hf_parity.py DIR...   where each DIR holds model/ (a smoothread model dir), ours.json
       (`smoothread score --json` output) and ours.npy (`--logits-out`). Prints one JSON line per DIR.
Needs torch, transformers and tokenizers (run on the GPU machine; not part of CI)."""
import json, sys
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

for d in sys.argv[1:]:
    ours = json.load(open(f"{d}/ours.json"))
    ours_logits = np.load(f"{d}/ours.npy")
    text = open(f"{d}/text.txt", encoding="utf-8").read()
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{d}/model/tokenizer.json")
    hf_ids = tok(text, add_special_tokens=False)["input_ids"]
    res = {"dir": d, "transformers": transformers.__version__, "torch": torch.__version__,
           "tokenizer_ids_equal": hf_ids == ours["ids"], "tokens": len(hf_ids),
           "decode_roundtrip": tok.decode(hf_ids) == text}
    for impl in ["eager", "sdpa"]:
        model, info = AutoModelForCausalLM.from_pretrained(f"{d}/model", dtype=torch.float32, attn_implementation=impl,
                                                           output_loading_info=True)
        res["class"] = type(model).__name__
        res["loading_info"] = {k: sorted(map(str, v)) for k, v in info.items() if v}
        res["layer_types"] = list(model.config.layer_types)
        with torch.no_grad():
            lg = model(torch.tensor([ours["ids"]])).logits[0].numpy()
        diff = np.abs(lg - ours_logits)
        res[f"max_abs_diff_{impl}"] = float(diff.max())
        res[f"max_rel_diff_{impl}"] = float((diff / (np.abs(lg) + 1e-3)).max())
        res[f"argmax_agree_{impl}"] = float((lg.argmax(-1) == ours_logits.argmax(-1)).mean())
    print(json.dumps(res))
