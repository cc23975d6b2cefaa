#!/usr/bin/env bash
# The test command (README command 2; .ci/run runs it on a fresh clone after scripts/setup.sh).
#  1. Release build;
#  2. the loader tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#  3. `cmake --install` and a user project built with find_package(smoothread);
#  4. when nvcc is present (/usr/local/cuda or PATH): the CUDA build (-DSMOOTHREAD_CUDA=ON); its
#     `cuda` test label runs when a GPU is visible (the tests skip cleanly without one);
#  5. last, the default ctest suite (everything but the `slow` and `cuda` labels), so its summary
#     is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$JOBS"

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSMOOTHREAD_SANITIZE=ON -DSMOOTHREAD_BENCH=OFF
cmake --build build-asan -j"$JOBS" --target test_loader smoothread_cli
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan -L loader --output-on-failure

rm -rf build/install build/consumer
cmake --install build --prefix build/install >/dev/null
cmake -S examples/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer -j"$JOBS" >/dev/null
./build/consumer/consumer

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DSMOOTHREAD_CUDA=ON -DSMOOTHREAD_BENCH=ON >/dev/null
  cmake --build build-cuda -j"$JOBS" --target test_cuda bench_cuda smoothread_cli
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    ctest --test-dir build-cuda -L cuda --output-on-failure
  else
    echo "CUDA build compiled; no GPU visible, so the cuda test label is not run here (see docs/PERF.md)"
  fi
else
  echo "nvcc not found: CUDA build skipped"
fi

ctest --test-dir build -LE 'slow|cuda' --output-on-failure
echo "all tests passed"
