#!/usr/bin/env bash
# Load figures for `vismem serve` with wrk (Debian package wrk): classify
# requests/s and p50/p99 latency for 1, 8 and 64 connections, one JSON
# embedding per request (a stored item's vector), one search thread each.
# The library-side baseline is `build/bench_server MEM.db` (same queries).
#
#   bench/wrk_server.sh MEM.db [SECONDS=10]
set -euo pipefail
mem=$1; secs=${2:-10}
cd "$(dirname "$0")/.."
V=build/vismem
port=$((20000 + RANDOM % 20000))
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
$V serve "$mem" --port $port --threads 1 --max-connections 128 >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# A query: a random vector of the memory's dimension (its cost is the same as any).
dim=$(curl -sf "http://127.0.0.1:$port/v1/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dim"])')
python3 -c "import json,random; random.seed(1); print(json.dumps({'embedding': [random.gauss(0, 1) for _ in range($dim)], 'k': 20}))" >"$tmp/body.json"
for c in 1 8 64; do
  t=$(( c < 2 ? 1 : 2 ))
  printf '%3d connections: ' "$c"
  wrk -t$t -c$c -d${secs}s --timeout 30s -s bench/wrk_classify.lua "http://127.0.0.1:$port" -- "$tmp/body.json" | tail -1
done
