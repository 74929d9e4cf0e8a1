#!/usr/bin/env bash
# Configures and builds vismem (Release) into build/. Used by test.sh and demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ $# -gt 0 ]; then cmake --build build -j"$jobs" --target "$@"; else cmake --build build -j"$jobs"; fi
