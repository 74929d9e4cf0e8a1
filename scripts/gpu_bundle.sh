#!/usr/bin/env bash
# Builds the CUDA exact-search test and benchmark (cmake -DVISMEM_CUDA=ON, in
# build-cuda/) and gathers them, the shared libraries they load beyond glibc,
# the torch anchor and a run script in gpu_bundle/ (ignored by git): a folder
# that runs on a GPU machine that has the NVIDIA driver but none of our build
# dependencies (the CUDA runtime is linked statically).
#
#   ./scripts/gpu_bundle.sh                 # here (nvcc: $NVCC, else on PATH, else /usr/local/cuda/bin/nvcc)
#   bash gpu_bundle/run.sh OUT [bench flags]   # there: logs in OUT
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "gpu_bundle: nvcc not found (set NVCC)" >&2; exit 1; }
# The binaries find the libraries beside them (rpath $ORIGIN/lib), so nothing
# else on that machine (its python and torch) sees our older libstdc++.
cmake -S . -B build-cuda -DVISMEM_CUDA=ON -DVISMEM_PYTHON=OFF -DVISMEM_BENCH=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
  '-DCMAKE_BUILD_RPATH=$ORIGIN/lib' >/dev/null
cmake --build build-cuda -j"$(nproc)" --target test_gpu_search bench_gpu_search
rm -rf gpu_bundle
mkdir -p gpu_bundle/lib
cp build-cuda/test_gpu_search build-cuda/bench_gpu_search bench/gpu_torch_search.py gpu_bundle/
for bin in build-cuda/test_gpu_search build-cuda/bench_gpu_search; do
  ldd "$bin" | awk '/=> \//{print $3}' | grep -v -E '/(libc|libm|libpthread|libdl|librt)\.so' |
    xargs -r cp -L -u -t gpu_bundle/lib
done
cat > gpu_bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: the test (bit for bit against the CPU), memcheck on a
# short part of it, then the benchmark against torch. Logs in OUT.
#   bash gpu_bundle/run.sh OUT [bench_gpu_search flags]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
shift || true
cd "$here"
nvidia-smi -L || true
./test_gpu_search 2>&1 | tee "$out/test_gpu_search.log"
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck ./test_gpu_search --gtest_filter='*Ties*:*Bad*' >"$out/memcheck.log" 2>&1
  tail -n 3 "$out/memcheck.log"
fi
./bench_gpu_search --script gpu_torch_search.py "$@" 2>&1 | tee "$out/bench_gpu_search.log"
RUN
chmod +x gpu_bundle/run.sh
du -sh gpu_bundle
