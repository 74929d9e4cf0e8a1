#!/usr/bin/env bash
# Long fuzzing runs with libFuzzer + AddressSanitizer (clang, Debian's clang
# package). Builds only the sources each target needs into build-fuzz/, then
# runs every target (or the ones named) for SECONDS each, in parallel over
# the cores, growing a corpus in build-fuzz/corpus/NAME from fuzz/corpus/NAME.
#   scripts/fuzz.sh                 # every target, 60 s each
#   scripts/fuzz.sh 3600 image npy  # an hour each for two
# A crash stops its target and leaves crash-* in build-fuzz/; replay it with
# build/fuzz_NAME FILE (the ordinary build) or build-fuzz/fuzz_NAME FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image npy neighbors tflite safetensors)
command -v clang++ >/dev/null || { echo "fuzz.sh needs clang++ (apt-get install clang)" >&2; exit 1; }

declare -A sources=(
  [image]="src/encoders/image.cpp"
  [npy]="src/util/npy.cpp src/util/textio.cpp"
  [neighbors]="src/vote/neighbors.cpp src/util/textio.cpp"
  [tflite]="src/encoders/tflite.cpp"
  [safetensors]="src/encoders/safetensors.cpp src/util/npy.cpp src/util/textio.cpp"
)
declare -A libs=([image]="-ljpeg -lpng -lwebp")
mkdir -p build-fuzz
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Ifuzz -Isrc/util -Isrc/index -Isrc/store -Isrc/vote -Isrc/encoders)
for t in "${targets[@]}"; do
  [ -n "${sources[$t]:-}" ] || { echo "unknown fuzz target '$t'" >&2; exit 1; }
  echo "building build-fuzz/fuzz_$t"
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" fuzz/fuzz_$t.cpp ${sources[$t]} ${libs[$t]:-} -o build-fuzz/fuzz_$t
done
jobs=$(nproc 2>/dev/null || echo 2)
pids=()
for t in "${targets[@]}"; do
  mkdir -p build-fuzz/corpus/$t
  (cd build-fuzz && rc=0 && ./fuzz_$t -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 corpus/$t ../fuzz/corpus/$t >"fuzz_$t.log" 2>&1 || rc=$?; echo "fuzz_$t: exit $rc" >>"fuzz_$t.log") &
  pids+=($!)
  # At most one target per core at a time.
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || true; pids=("${pids[@]:1}"); fi
done
wait || true
for t in "${targets[@]}"; do
  runs=$(grep -E '^stat::number_of_executed_units' build-fuzz/fuzz_$t.log | awk '{print $2}' || true)
  echo "== $t: ${runs:-?} runs in ${seconds}s, $(tail -1 build-fuzz/fuzz_$t.log)"
  grep -E 'ERROR: |SUMMARY: |fuzz: ' build-fuzz/fuzz_$t.log | head -5 || true
done
ls build-fuzz/crash-* build-fuzz/leak-* build-fuzz/timeout-* build-fuzz/oom-* 2>/dev/null && exit 1 || true
