#!/usr/bin/env bash
# Packs a CUDA build for a GPU machine that has the CUDA runtime but not this machine's Debian
# libraries: the stripped binaries plus the non-CUDA shared libraries they load, in one tarball
# (~20 MB) small enough to travel with the working tree.
#   scripts/pack_for_device.sh OUT_DIR [BUILD_DIR=build-cuda]
# On the GPU machine:
#   mkdir -p /tmp/bin && tar xzf OUT_DIR/bin.tgz -C /tmp/bin && export LD_LIBRARY_PATH=/tmp/bin
#   /tmp/bin/smoothread ...   bench/run_cuda.sh /tmp/bin OUT what...
set -euo pipefail
OUT=${1:?usage: scripts/pack_for_device.sh OUT_DIR [BUILD_DIR]}
BUILD=${2:-build-cuda}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
for b in "$BUILD/smoothread" "$BUILD/bench/bench_cuda" "$BUILD/tests/test_cuda"; do
  [ -x "$b" ] || { echo "error: $b not built (cmake --build $BUILD --target smoothread_cli bench_cuda test_cuda)" >&2; exit 2; }
  strip -o "$STAGE/$(basename "$b")" "$b"
done
# every library the binaries load from the system's lib directories (the CUDA ones and glibc's
# stay: the GPU machine has its own)
ldd "$STAGE"/* | awk '$3 ~ /^\/(usr\/)?lib\/x86_64-linux-gnu\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so' |
  while read -r lib; do cp -L "$lib" "$STAGE/"; done
mkdir -p "$OUT"
tar czf "$OUT/bin.tgz" -C "$STAGE" .
echo "$OUT/bin.tgz: $(ls "$STAGE" | tr '\n' ' ')($(du -h "$OUT/bin.tgz" | cut -f1))"
