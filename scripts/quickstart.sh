#!/usr/bin/env bash
# README command 1: set up (apt), build, then read a 32k-token document with the bundled default
# model (models/smoothread-reader-10m) by Smooth Reading on the CPU, and print the answer, the
# rounds and the time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
SR=./build/smoothread
question=$(cat examples/reading/question.txt)
echo "document: examples/reading/document.txt ($(wc -c < examples/reading/document.txt) bytes)"
echo "question: $question"
$SR read --model models/smoothread-reader-10m --doc examples/reading/document.txt --question "$question" --trace runs/quickstart-trace.jsonl
echo "expected: $(cat examples/reading/answer.txt)   (every round's summary: runs/quickstart-trace.jsonl)"
