#!/usr/bin/env bash
# The demo: the main job end to end on real photos.
#   1. builds a visual memory of Imagenette train (2,500 photos, 10 classes) with
#      the default encoder (MobileNet V1 embedder, ../shared/models),
#   2. evaluates it on Imagenette val (1,500 photos): accuracy@k for the four voting rules,
#   3. classifies one photo and shows the neighbors that decided,
#   4. writes the same decision as a self-contained HTML page (.cache/demo/explain.html).
# The memory and the query neighbors are cached in .cache/demo/: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
./scripts/build.sh vismem >/dev/null
SHARED=${VISMEM_SHARED:-../shared}
MODEL=${VISMEM_MODEL:-$SHARED/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite}
DATA=${VISMEM_DATA:-$SHARED/data/imagenette2}
CACHE=.cache/demo
MEM=$CACHE/imagenette_train.db
NEIGHBORS=$CACHE/val_neighbors.json
mkdir -p "$CACHE"
V=build/vismem

echo "== 1. memory: $DATA/train with $(basename "$MODEL")"
if [ -f "$MEM" ]; then $V migrate "$MEM" >/dev/null; else $V create "$MEM" --model "$MODEL"; fi   # a cache from an older vismem is upgraded
$V add "$MEM" "$DATA/train"          # resumable: images already in the memory are skipped
$V info "$MEM"

echo
echo "== 2. evaluation on $DATA/val (k = 1..100)"
if [ ! -f "$NEIGHBORS" ] || [ "$MEM" -nt "$NEIGHBORS" ]; then
  $V eval "$MEM" "$DATA/val" --k 100 --out-neighbors "$NEIGHBORS"
else
  echo "(query neighbors cached in $NEIGHBORS)"
  $V eval --neighbors "$NEIGHBORS"
fi

echo
echo "== 3. one decision, explained by its neighbors"
imgs=("$DATA/val/n03888257"/*)   # a glob, not ls | head: that can die of SIGPIPE under pipefail
IMG=${imgs[0]}
$V classify "$MEM" "$IMG" --k 20 --vote rank --show 8 --label-names "$DATA/classes.tsv"

echo
echo "== 4. the same decision as a page: neighbors' thumbnails, vote weights, the residual's second concept"
$V explain "$MEM" "$IMG" --k 20 --vote rank --label-names "$DATA/classes.tsv" --html "$CACHE/explain.html"
echo "open $CACHE/explain.html in a browser"
