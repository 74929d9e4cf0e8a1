#!/usr/bin/env bash
# Builds what a borrowed GPU machine should run (cmake -DVISMEM_CUDA=ON, in
# build-cuda/) and packs it, with the shared libraries the programs load
# beyond glibc (found through rpath $ORIGIN/lib, so that machine's python and
# torch never see our older libstdc++), the PyTorch anchors and a run script,
# into device_bundle/ (ignored by git; ~38 MB): it runs on a machine that has
# the NVIDIA driver and python3 with torch but none of our build dependencies
# (the CUDA runtime is linked statically). Besides the GPU search it carries
# the CPU checks an AVX-512 host can answer (the kernels at every ISA level it
# has; bench_vit and bench_search_faiss there).
#
#   ./scripts/device_bundle.sh                        # here (nvcc: $NVCC, else on PATH, else /usr/local/cuda/bin/nvcc)
#   bash device_bundle/run.sh OUT [gpu] [cpu] [vit512] [vit] [mobilenet] [search]   # there: logs in OUT; none named = all
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "device_bundle: nvcc not found (set NVCC)" >&2; exit 1; }
programs=(test_gpu_search bench_gpu_search test_flat_index test_packed_gemm test_qgemm test_vit bench_vit
          bench_search_faiss bench_encoder_opencv)
# The programs find the libraries beside them through an old-style DT_RPATH
# ($ORIGIN/lib, --disable-new-dtags), which also serves those libraries' own
# dependencies (OpenBLAS's libgfortran; a DT_RUNPATH would not), and no
# LD_LIBRARY_PATH, so the python and torch they start never see our older libstdc++.
cmake -S . -B build-cuda -DVISMEM_CUDA=ON -DVISMEM_PYTHON=OFF -DVISMEM_BENCH=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
  '-DCMAKE_BUILD_RPATH=$ORIGIN/lib' -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags >/dev/null
cmake --build build-cuda -j"$(nproc)" --target "${programs[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/vismem/lib"
for p in "${programs[@]}"; do
  cp "build-cuda/$p" "$stage/vismem/"
  ldd "build-cuda/$p" | awk '/=> \//{print $3}' | grep -v -E '/(libc|libm|libpthread|libdl|librt)\.so' |
    xargs -r cp -L -u -t "$stage/vismem/lib"
done
cp bench/gpu_torch_search.py bench/vit_torch.py "$stage/vismem/"
# bench_encoder_opencv's inputs: the two MobileNet files and the 64 Imagenette
# JPEGs it picks (every k-th of the sorted list), as a small ../shared.
shared=../shared
# test_vit's fixtures (HF outputs of two tiny checkpoints, 1.7 MB).
if [ -d "$shared/fixtures/dinov2_tiny" ]; then
  mkdir -p "$stage/vismem/shared/fixtures"
  cp -r "$shared/fixtures/dinov2_tiny" "$shared/fixtures/clip_tiny_f16" "$stage/vismem/shared/fixtures/"
fi
if [ ! -d "$shared/data/imagenette2/val" ]; then
  echo "device_bundle: no $shared/data/imagenette2/val: the mobilenet part will have no images" >&2
else
  mkdir -p "$stage/vismem/shared/models"
  cp "$shared/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite" "$shared/models/mnv1_embedder_fp32.onnx" \
    "$stage/vismem/shared/models/"
  mapfile -t all < <(find "$shared/data/imagenette2/val" -type f \( -iname '*.jpeg' -o -iname '*.jpg' \) | LC_ALL=C sort)
  step=$(( ${#all[@]} / 64 > 0 ? ${#all[@]} / 64 : 1 ))
  for ((i = 0, c = 0; i < ${#all[@]} && c < 64; i += step, c++)); do
    rel=${all[$i]#"$shared/"}
    mkdir -p "$stage/vismem/shared/$(dirname "$rel")"
    cp "${all[$i]}" "$stage/vismem/shared/$rel"
  done
fi
rm -rf device_bundle
mkdir -p device_bundle
tar -C "$stage" -czf device_bundle/vismem.tar.gz vismem
cat > device_bundle/run.sh <<'RUN'
#!/usr/bin/env bash
# On the GPU machine. Parts (all when none is named):
#   gpu:    test_gpu_search (bit for bit against the CPU), memcheck on part of it, bench_gpu_search vs torch
#   cpu:    the search, packed-GEMM and int8-GEMM tests at every ISA level this CPU has, and the ViT's
#           against the HF fixtures (both packed layouts, every level)
#   vit512: bench_vit vs this machine's torch (--quick), the weights packed for the 12 x 32 AVX-512 tile
#           (VISMEM_PACKED=1), --sgemm: against OpenBLAS's AVX-512 sgemm in the same rounds; ViT-S, ViT-B
#   vit:    the same with the weights packed for the 4 x 24 AVX2 tile (VISMEM_ISA=avx2), and ViT-S
#           through OpenBLAS's AVX-512 sgemm alone
#   mobilenet: bench_encoder_opencv (MobileNet V1 vs OpenCV DNN), 1 and 2 threads, with --int8
#   search: bench_search_faiss, batch 1 and 16, 1 thread and all cores
#   (not in the default set) gpu-bench: bench_gpu_search at batches 1 to 256; vit-default: bench_vit with
#   OpenBLAS detecting the host itself
#   bash device_bundle/run.sh OUT [gpu] [cpu] [vit512] [vit] [mobilenet] [search]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
shift || true
parts=${*:-gpu cpu vit512 vit mobilenet search}
dir=/tmp/vismem-device
rm -rf "$dir" && mkdir -p "$dir" && tar -C "$dir" -xzf "$here/vismem.tar.gz" && cd "$dir/vismem" || exit 1
failed=0
log() {
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== $name: exit status $rc"; failed=1; }
}
grep -m1 "model name" /proc/cpuinfo; nproc; nvidia-smi -L 2>/dev/null || true
py=python3  # the one with torch (a venv's, where the image has one)
for p in /opt/torch/.venv/bin/python3 python3; do "$p" -c 'import torch' 2>/dev/null && { py=$p; break; }; done
echo "python: $py"
for part in $parts; do
  case $part in
    gpu)
      log test_gpu_search ./test_gpu_search
      command -v compute-sanitizer >/dev/null &&
        log memcheck compute-sanitizer --tool memcheck ./test_gpu_search --gtest_filter='*Ties*:*Bad*'
      log bench_gpu_search ./bench_gpu_search --script gpu_torch_search.py --python "$py" ;;
    gpu-bench)
      log bench_gpu_search ./bench_gpu_search --script gpu_torch_search.py --python "$py" --batches 1,4,8,16,64,256 ;;
    cpu)
      for t in test_flat_index test_packed_gemm test_qgemm; do log "$t" ./"$t" --gtest_brief=1; done
      log test_vit env VISMEM_SHARED_DIR="$PWD/shared" ./test_vit --gtest_brief=1 ;;
    vit-default)  # OpenBLAS as it detects the host by itself: packed where it falls back to narrow kernels
      log bench_vit_s_default ./bench_vit --model s --threads 1 --batches 1,16 --quick --sgemm --no-torch ;;
    vit512)
      # The 512-bit tile has not been timed yet: packed_gemm_preferred() keeps OpenBLAS's AVX-512 sgemm
      # on such CPUs until it is; VISMEM_PACKED=1 packs anyway. SkylakeX: see vit.
      log bench_vit_s_packed_avx512 env OPENBLAS_CORETYPE=SkylakeX VISMEM_PACKED=1 ./bench_vit --model s \
        --threads 1,2 --batches 1,16 --quick --sgemm --script vit_torch.py --python "$py"
      log bench_vit_b_packed_avx512 env OPENBLAS_CORETYPE=SkylakeX VISMEM_PACKED=1 ./bench_vit --model b \
        --threads 1 --batches 1,16 --quick --sgemm --script vit_torch.py --python "$py" ;;
    vit)
      # OpenBLAS 0.3.21 may not know the host (a VM's generic "Intel Xeon Processor" ran its Prescott
      # kernels): SkylakeX is what it runs on a host it knows. avx512: the weights through that sgemm;
      # avx2: packed once at load (pmatmul), and --sgemm times the same model through OpenBLAS in the same rounds.
      log bench_vit_s_packed_avx2 env OPENBLAS_CORETYPE=SkylakeX VISMEM_ISA=avx2 ./bench_vit --model s \
        --threads 1,2 --batches 1,16 --quick --sgemm --script vit_torch.py --python "$py"
      log bench_vit_s_sgemm_avx512 env OPENBLAS_CORETYPE=SkylakeX ./bench_vit --model s --threads 1 --batches 1,16 \
        --quick --script vit_torch.py --python "$py"
      log bench_vit_b_packed_avx2 env OPENBLAS_CORETYPE=SkylakeX VISMEM_ISA=avx2 ./bench_vit --model b \
        --threads 1 --batches 1 --quick --sgemm --script vit_torch.py --python "$py" ;;
    mobilenet)  # MobileNet V1 against OpenCV DNN, 1 and 2 threads, float32 and int8
      # LD_LIBRARY_PATH: OpenCV's libraries load each other, which rpath $ORIGIN/lib does not cover
      # (no python is started from here, so our libstdc++ meets nothing else).
      log bench_mobilenet_1thread env LD_LIBRARY_PATH=lib ./bench_encoder_opencv --shared shared --threads 1 --reps 5 --int8
      log bench_mobilenet_2threads env LD_LIBRARY_PATH=lib ./bench_encoder_opencv --shared shared --threads 2 --reps 5 ;;
    search)
      log bench_search_1thread ./bench_search_faiss --batches 1,16 --threads 1 --n 250000 --reps 5
      log bench_search_all ./bench_search_faiss --batches 1,16 --reps 5 ;;
    *) echo "unknown part $part (gpu gpu-bench cpu vit512 vit vit-default mobilenet search)"; failed=1 ;;
  esac
done
exit $failed
RUN
chmod +x device_bundle/run.sh
du -sh device_bundle
