#!/usr/bin/env python3
"""Logit parity on checkpoints that Hugging Face transformers itself writes (issue 8), run on a
machine with torch + transformers (the GPU machine). For each case transformers builds a random
Qwen2ForCausalLM (fp32 or bf16; sharded when max_shard_size is small; tied or untied head; full
attention or sliding-window layers), Qwen3ForCausalLM (q/k norms) or Qwen3_5ForCausalLM (Gated
DeltaNet layers + gated attention with q/k norms, partial rotary, zero-centred norms), and
save_pretrained()s it; then `smoothread score --ids`
loads the directory as it is and writes its logits; transformers' own logits (eager and sdpa,
fp32) are compared over every position.

  python3 tests/parity/hf_logits.py --smoothread build/smoothread --out parity-out [--tokens 300]

Prints one JSON line per case (max |diff|, max relative diff, argmax agreement) and exits non-zero
when a case misses the tolerance (fp32: max |diff| <= 1e-3 and argmax agreement >= 0.99).
"""
import argparse, json, os, subprocess, sys

import numpy as np
import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM, AutoModelForCausalLM

QWEN35 = dict(head_dim=64, layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
              num_hidden_layers=4, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32,
              linear_value_head_dim=32, linear_conv_kernel_dim=4,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                               "mrope_section": [3, 3, 2], "mrope_interleaved": True})
CASES = [
    # name, model family, config overrides, save dtype, max_shard_size
    ("full-fp32-tied", "qwen2", dict(tie_word_embeddings=True), torch.float32, None),
    ("full-bf16-untied-sharded", "qwen2", dict(tie_word_embeddings=False), torch.bfloat16, "300KB"),
    ("swa-fp32-layers1+", "qwen2", dict(use_sliding_window=True, sliding_window=48, max_window_layers=1), torch.float32, None),
    ("swa-fp32-all-gqa", "qwen2", dict(use_sliding_window=True, sliding_window=33, max_window_layers=0,
                                       num_key_value_heads=1), torch.float32, None),
    ("qwen3-fp32", "qwen3", dict(head_dim=48, tie_word_embeddings=True), torch.float32, None),
    ("qwen3.5-gdn-hybrid-fp32", "qwen3_5", dict(QWEN35, tie_word_embeddings=False), torch.float32, None),
    ("qwen3.5-gdn-hybrid-bf16-tied", "qwen3_5", dict(QWEN35, tie_word_embeddings=True), torch.bfloat16, None),
]


def build(family, cfg):
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**cfg))
    if family == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM
        return Qwen3ForCausalLM(Qwen3Config(**cfg))
    from transformers import Qwen3_5TextConfig, Qwen3_5ForCausalLM
    cfg = dict(cfg)
    cfg.pop("rope_theta", None)
    return Qwen3_5ForCausalLM(Qwen3_5TextConfig(**cfg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoothread", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=300)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    ok = True
    for i, (name, family, over, dtype, shard) in enumerate(CASES):
        torch.manual_seed(100 + i)
        cfg = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6)
        cfg.update(over)
        model = build(family, cfg).eval()
        with torch.no_grad():  # make the random weights less tame than the init (norms, biases)
            for n, p in model.named_parameters():
                if "norm" in n or "bias" in n or "A_log" in n:
                    p.add_(0.1 * torch.randn_like(p))
        d = os.path.join(a.out, name)
        model.to(dtype).save_pretrained(d, **({"max_shard_size": shard} if shard else {}))
        ids = torch.randint(0, cfg["vocab_size"], (a.tokens,), generator=torch.Generator().manual_seed(i)).tolist()
        json.dump(ids, open(os.path.join(d, "ids.json"), "w"))
        subprocess.run([a.smoothread, "score", "--model", d, "--ids", os.path.join(d, "ids.json"), "--logits-out",
                        os.path.join(d, "ours.npy"), "--json"], check=True, stdout=subprocess.DEVNULL)
        ours = np.load(os.path.join(d, "ours.npy"))
        res = {"case": name, "class": type(model).__name__, "transformers": transformers.__version__, "torch": torch.__version__,
               "files": sorted(f for f in os.listdir(d) if f.endswith((".safetensors", ".json"))), "positions": a.tokens}
        for impl in ["eager", "sdpa"]:
            m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=impl).eval()
            res["layer_types"] = list(m.config.layer_types)
            with torch.no_grad():
                lg = m(torch.tensor([ids])).logits[0].float().numpy()
            diff = np.abs(lg - ours)
            res[f"max_abs_diff_{impl}"] = float(diff.max())
            res[f"max_rel_diff_{impl}"] = float((diff / (np.abs(lg) + 1e-3)).max())
            res[f"argmax_agree_{impl}"] = float((lg.argmax(-1) == ours.argmax(-1)).mean())
            ok = ok and res[f"max_abs_diff_{impl}"] <= 1e-3 and res[f"argmax_agree_{impl}"] >= 0.99
        print(json.dumps(res), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
