#!/usr/bin/env bash
# Installs vismem's build dependencies (Debian 12 packages). Idempotent: packages
# already present are skipped, so running it again costs a second.
#   scripts/setup.sh           what the build and the tests need
#   scripts/setup.sh --bench   also the optional benchmark anchors that nothing
#                              else needs (python3-torch for bench_vit, ~1 GB)
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config
  libsqlite3-dev            # the memory store
  libssl-dev                # sha256 model fingerprints
  libopenblas-dev           # sgemm for exact search and the encoders
  libjpeg62-turbo-dev libpng-dev libwebp-dev   # image decoding
  libcli11-dev              # command line
  nlohmann-json3-dev        # neighbor files, JSON output
  libcpp-httplib-dev        # HTTP service
  libgtest-dev libgmock-dev # tests
  libbenchmark-dev          # micro benchmarks
  libfaiss-dev liblapack-dev libomp-dev   # approximate search (FAISS indexes) and the benchmarks' anchor
  libopencv-dnn-dev         # encoder baseline in bench/
  python3-dev pybind11-dev python3-numpy   # the Python module (python/, `import vismem`)
  python3-pytest            # its tests
  python3-matplotlib        # examples/accuracy_vs_k.py
  python3-pip python3-setuptools python3-wheel python3-venv   # pip install --no-build-isolation . (offline)
  wrk                       # HTTP load figures (bench/wrk_server.sh)
  chromium                  # renders the explain page and the web page in their tests (headless)
  nodejs                    # runs puppeteer-core, which drives chromium in the web page test
)
# Optional: only with --bench (the test suite never needs them).
bench_pkgs=(
  python3-torch             # bench_vit's PyTorch anchor (bench/vit_torch.py, /usr/bin/python3)
)
if [ "${1:-}" = "--bench" ]; then pkgs+=("${bench_pkgs[@]}"); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's package, unless a nodejs build that bundles it is installed.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# puppeteer-core (pinned in tests/web/package.json) for the web page test. Not
# fatal here: without the npm registry that one test fails and says why.
web="$(dirname "$0")/../tests/web"
if [ ! -f "$web/node_modules/puppeteer-core/package.json" ]; then
  (cd "$web" && timeout 300 npm install --no-audit --no-fund >/dev/null 2>&1) \
    || echo "setup: warning: npm could not install puppeteer-core into tests/web (the web page test will fail)"
fi
echo "setup: dependencies present"
