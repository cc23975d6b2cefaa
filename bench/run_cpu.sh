#!/usr/bin/env bash
# Runs the CPU benchmarks and prints the docs/PERF.md tables (markdown) for this machine + commit.
# usage: bench/run_cpu.sh [extra google-benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target bench_ops >/dev/null
out=build/bench_cpu.json
./build/bench/bench_ops --benchmark_format=json --benchmark_out="$out" --benchmark_out_format=json "$@" >/dev/null
python3 bench/perf_tables.py "$out"
