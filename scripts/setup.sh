#!/usr/bin/env bash
# Installs every build and test dependency of smoothread from Debian 12 packages.
# Idempotent: packages already present are skipped; safe to run on a fresh machine.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev   # GEMM (OpenMP flavour, so it nests with our OpenMP loops)
  libomp-dev               # OpenMP runtime headers (gcc uses libgomp from build-essential)
  nlohmann-json3-dev       # JSON (configs, headers, JSONL)
  libpcre2-dev             # byte-level BPE pre-tokenizer regexes (Unicode properties, JIT)
  libutf8proc-dev          # NFC normalization for BPE tokenizers
  libgtest-dev libgmock-dev googletest  # unit tests
  libbenchmark-dev         # bench/
  python3-jieba            # jieba 0.42.1's dictionary + HMM tables: LongBench's Chinese metrics (eval/jieba.cpp reads them)
  python3-levenshtein      # test oracle only: python-Levenshtein's ratio for the code-similarity option
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all dependencies present"
