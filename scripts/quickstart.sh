#!/usr/bin/env bash
# README command 1: set up, build, train a tiny model for about a minute, then generate with it.
# (Until the default Smooth Reading model ships, this is the main job; see README.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
SR=./build/smoothread
mkdir -p runs
$SR gen --task copy --count 20000 --seed 1 --min-len 3 --max-len 8 --out runs/copy.jsonl
$SR train --config examples/tiny_copy.json
$SR info --model runs/tiny-copy/model
for s in "smooth|" "reading|" "qwerty|"; do
  printf '%-10s -> ' "$s"
  $SR generate --model runs/tiny-copy/model --prompt "$s" --max-tokens 16
done
