#!/usr/bin/env bash
# The test command: installs dependencies, builds, runs every test with ctest.
# Needs ../shared (fixtures, models, data) beside the project root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
jobs=$(nproc 2>/dev/null || echo 2)
# Tests run one program at a time per core; each one is itself multi-threaded in places.
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)
