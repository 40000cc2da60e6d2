#!/usr/bin/env bash
# The README's main job on the shipped real example: streams the target-domain
# training images through the network up to classifier.0 (its largest fc layer) once,
# compresses the layer with dalr and with svd at the same rank from those statistics,
# evaluates both on the held-out images and prints the comparison.
#   tools/run_example.sh [RANK] [OUTDIR]      (after tools/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RANK=${1:-16}
OUT=${2:-build/example-run}
EX=examples/fashion2digits
D=build/dalr-gpu
mkdir -p "$OUT"
$D --model $EX/model.bin --acts stream --data $EX/train --layer classifier.0 --method dalr \
  --rank "$RANK" --out "$OUT/dalr.bin" --report "$OUT/dalr.json" --save-stats "$OUT/stats.safetensors"
$D --model $EX/model.bin --stats "$OUT/stats.safetensors" --layer classifier.0 --method svd \
  --rank "$RANK" --out "$OUT/svd.bin" --report "$OUT/svd.json" -q
echo
echo "classifier.0 at rank $RANK, evaluated on $EX/test:"
$D evaluate --model $EX/model.bin --data $EX/test -q
for m in dalr svd; do
  $D evaluate --model "$OUT/$m.bin" --data $EX/test --compare $EX/model.bin -q
done
