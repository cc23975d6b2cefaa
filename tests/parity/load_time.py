#!/usr/bin/env python3
"""Checkpoint loading time on a Qwen2.5-3B-shaped bf16 checkpoint written by transformers (random
weights; needs torch + transformers and a GPU for a quick init). usage: load_time.py SMOOTHREAD_BINARY"""
import json, os, subprocess, sys, time
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
cfg = Qwen2Config(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                  num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)
torch.set_default_device("cuda")
t = time.time()
m = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
d = "/tmp/qwen25-3b-shape"
m.save_pretrained(d)
print("wrote", d, sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 1e9, "GB in", round(time.time() - t, 1), "s", flush=True)
json.dump(list(range(100, 116)), open("/tmp/ids16.json", "w"))
for rep in range(2):
    t = time.time()
    subprocess.run([sys.argv[1], "score", "--model", d, "--ids", "/tmp/ids16.json", "--json"], check=True,
                   stdout=subprocess.DEVNULL)
    print(f"score 16 tokens (load + forward), run {rep}: {time.time() - t:.2f} s", flush=True)
t = time.time()
subprocess.run([sys.argv[1], "info", "--model", d], check=True)
print(f"info (load only): {time.time() - t:.2f} s")
