#!/usr/bin/env python3
"""RWKV-7 logit parity with BlinkDL's own x070 reference (RWKV-LM RWKV-v7/rwkv_v7_numpy.py, by
johanwind; not part of this repository: pass its path). Its model definitions (everything above
its "# Verification" section) run unchanged on weights converted from a smoothread / fla-hub RWKV-7
directory to BlinkDL's .pth names and orientation; `smoothread score --ids` gives ours.

  python3 tests/parity/rwkv7_x070.py --reference RWKV-LM/RWKV-v7/rwkv_v7_numpy.py \
      --model DIR --smoothread build/smoothread [--tokens 200]

Needs numpy only. BlinkDL's GroupNorm eps is 64e-5, fla's head_dim * 1e-5: use head_dim 64.
"""
import argparse, json, os, struct, subprocess, sys, tempfile

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        assert v["dtype"] == "F32", "convert to fp32 first"
        out[k] = np.frombuffer(data[b:e], dtype=np.float32).reshape(v["shape"])
    return out


def blinkdl_weights(w, L):
    """fla-hub names -> BlinkDL .pth names, in the .pth's key order (params(prefix) relies on it)."""
    d = {"emb.weight": w["model.embeddings.weight"],
         "blocks.0.ln0.weight": w["model.layers.0.pre_norm.weight"], "blocks.0.ln0.bias": w["model.layers.0.pre_norm.bias"]}
    for i in range(L):
        p, a, b = f"model.layers.{i}.", f"model.layers.{i}.attn.", f"blocks.{i}."
        d[b + "ln1.weight"], d[b + "ln1.bias"] = w[p + "attn_norm.weight"], w[p + "attn_norm.bias"]
        d[b + "ln2.weight"], d[b + "ln2.bias"] = w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"]
        for m in "rwkvag":
            d[b + f"att.x_{m}"] = w[a + f"x_{m}"]
        d[b + "att.w0"] = w[a + "w_lora.lora.2.bias"]
        d[b + "att.r_k"] = w[a + "r_k"]
        d[b + "att.w1"], d[b + "att.w2"] = w[a + "w_lora.lora.0.weight"].T, w[a + "w_lora.lora.2.weight"].T
        d[b + "att.a1"], d[b + "att.a2"] = w[a + "a_lora.lora.0.weight"].T, w[a + "a_lora.lora.2.weight"].T
        d[b + "att.a0"] = w[a + "a_lora.lora.2.bias"]
        d[b + "att.g1"], d[b + "att.g2"] = w[a + "g_lora.lora.0.weight"].T, w[a + "g_lora.lora.2.weight"].T
        if i > 0:
            d[b + "att.v2"], d[b + "att.v1"] = w[a + "v_lora.lora.2.weight"].T, w[a + "v_lora.lora.0.weight"].T
            d[b + "att.v0"] = w[a + "v_lora.lora.2.bias"]
        d[b + "att.k_k"], d[b + "att.k_a"] = w[a + "k_k"], w[a + "k_a"]
        for ours, theirs in [("r_proj", "receptance"), ("k_proj", "key"), ("v_proj", "value"), ("o_proj", "output")]:
            d[b + f"att.{theirs}.weight"] = w[a + ours + ".weight"]
        d[b + "att.ln_x.weight"], d[b + "att.ln_x.bias"] = w[a + "g_norm.weight"], w[a + "g_norm.bias"]
        d[b + "ffn.x_k"] = w[p + "ffn.x_k"]
        d[b + "ffn.key.weight"], d[b + "ffn.value.weight"] = w[p + "ffn.key.weight"], w[p + "ffn.value.weight"]
    d["ln_out.weight"], d["ln_out.bias"] = w["model.norm.weight"], w["model.norm.bias"]
    d["head.weight"] = w.get("lm_head.weight", w["model.embeddings.weight"])
    return {k: np.squeeze(np.asarray(v, dtype=np.float64)) for k, v in d.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--smoothread", required=True)
    ap.add_argument("--tokens", type=int, default=200)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    L, C, N = cfg["num_hidden_layers"], cfg["hidden_size"], cfg.get("head_dim", 64)
    src = open(a.reference).read()
    src = src[: src.index("# Verification")].replace("from torch import load as torch_load", "")
    if not hasattr(np.ndarray, "mT"):  # numpy < 2.0 (Debian 12): the same transpose of the last two axes
        src = src.replace(".mT", ".swapaxes(-1, -2)")
    g = {"N_LAYER": L, "N_EMBD": C, "HEAD_SIZE": N, "N_HEAD": C // N}
    exec(compile(src, a.reference, "exec"), g)
    weights = blinkdl_weights(read_safetensors(os.path.join(a.model, "model.safetensors")), L)
    params = lambda prefix: [weights[k] for k in weights.keys() if k.startswith(prefix)]
    ids = np.random.default_rng(0).integers(0, cfg["vocab_size"], a.tokens).tolist()
    with tempfile.TemporaryDirectory() as t:
        json.dump(ids, open(os.path.join(t, "ids.json"), "w"))
        subprocess.run([a.smoothread, "score", "--model", a.model, "--ids", os.path.join(t, "ids.json"),
                        "--logits-out", os.path.join(t, "ours.npy")], check=True, stdout=subprocess.DEVNULL)
        ours = np.load(os.path.join(t, "ours.npy"))
    state = (np.zeros((L, 2, C)), np.zeros((L, C // N, N, N)))
    worst, agree = 0.0, 0
    for t, tok in enumerate(ids):
        ref, state = g["RWKV7"](params, tok, state)
        worst = max(worst, float(np.abs(ref - ours[t]).max()))
        agree += int(ref.argmax() == ours[t].argmax())
    print(json.dumps({"model": a.model, "positions": len(ids), "max_abs_diff": worst,
                      "argmax_agree": agree / len(ids)}))
    sys.exit(0 if worst < 1e-3 and agree == len(ids) else 1)


if __name__ == "__main__":
    main()
