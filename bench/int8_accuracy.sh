#!/usr/bin/env bash
# int8_accuracy.sh: kNN accuracy of an encoder's int8 mode against its float32
# mode, on the shipped splits of Imagenette and Tiny-ImageNet (memory = train,
# queries = val), for the four voting rules at k = 1..100.
#
# Usage: bench/int8_accuracy.sh [--model PATH] [--out DIR] [--datasets "imagenette2 tiny-imagenet"] [--vismem BIN]
#   default model: ../shared/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite
#   default out:   /tmp/vismem_int8_accuracy (memories and eval JSON are kept there)
#   default vismem: build/vismem (built if missing); pass a copy to keep building meanwhile
# Each dataset and precision is `vismem create --precision P`, `vismem add`
# (the train folder), `vismem eval --json --k 100` (the val folder); then a
# table per dataset: best accuracy per rule (and its k), accuracy at k = 1, 10,
# 20, and the largest and mean |difference| over k = 1..100, in points.
# About 25 minutes on 2 cores for both datasets and both precisions.
set -euo pipefail
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "$root/.." && pwd)/shared"
model="$shared/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
out=/tmp/vismem_int8_accuracy
datasets="imagenette2 tiny-imagenet"
vismem=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --model|--out|--datasets|--vismem)
      [ $# -ge 2 ] || { echo "int8_accuracy.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --model) model="$(realpath -m "$2")" ;;
        --out) out="$(realpath -m "$2")" ;;
        --datasets) datasets="$2" ;;
        --vismem) vismem="$(realpath -m "$2")" ;;
      esac
      shift 2 ;;
    *) echo "int8_accuracy.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
done
cd "$root"
if [ -z "$vismem" ]; then
  vismem=build/vismem
  [ -x "$vismem" ] || ./scripts/build.sh vismem
fi
[ -x "$vismem" ] || { echo "int8_accuracy.sh: $vismem is not an executable" >&2; exit 2; }
mkdir -p "$out"
for ds in $datasets; do
  for prec in f32 int8; do
    db="$out/$ds-$prec.db"
    rm -f "$db" "$db".*
    start=$(date +%s)
    "$vismem" create "$db" --model "$model" --precision "$prec" > /dev/null
    "$vismem" add "$db" "$shared/data/$ds/train" > "$out/$ds-$prec.add.log" 2>&1
    "$vismem" eval "$db" "$shared/data/$ds/val" --json --k 100 > "$out/$ds-$prec.json" 2> /dev/null
    echo "$ds $prec: add + eval $(( $(date +%s) - start )) s" >&2
  done
done
python3 - "$out" $datasets <<'EOF'
import json, sys
out, datasets = sys.argv[1], sys.argv[2:]
for ds in datasets:
    a = json.load(open(f"{out}/{ds}-f32.json"))
    b = json.load(open(f"{out}/{ds}-int8.json"))
    print(f"\n{ds}: {a['queries']} queries (one query = {100 / a['queries']:.3f} points)\n")
    print("| rule | best f32 (k) | best int8 (k) | int8 - f32 | k=1 f32 / int8 | k=10 | k=20 | max abs diff, k=1..100 | mean abs diff |")
    print("| --- | --- | --- | ---: | --- | --- | --- | ---: | ---: |")
    for rule, ma in a["methods"].items():
        mb = b["methods"][rule]
        fa, fb = ma["accuracy_at_k"], mb["accuracy_at_k"]
        d = [abs(x - y) for x, y in zip(fa, fb)]
        print(f"| {rule} | {ma['best']:.2f} ({ma['best_k']}) | {mb['best']:.2f} ({mb['best_k']}) | "
              f"{mb['best'] - ma['best']:+.2f} | {fa[0]:.2f} / {fb[0]:.2f} | {fa[9]:.2f} / {fb[9]:.2f} | "
              f"{fa[19]:.2f} / {fb[19]:.2f} | {max(d):.2f} | {sum(d) / len(d):.3f} |")
EOF
