#!/usr/bin/env bash
# Regenerates the README's "Results on the shipped example" table: one streamed pass
# collects the statistics of classifier.0 on the target-domain training images, then
# every (method, rank) point is solved from them and evaluated on the test images.
#   tools/sweep_example.sh [RANKS] [OUTDIR]      (after tools/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-"8 16 32 64"}
OUT=${2:-build/sweep}
EX=examples/fashion2digits
D=build/dalr-gpu
mkdir -p "$OUT"
$D --model $EX/model.bin --acts stream --data $EX/train --layer classifier.0 --rank 16 \
  --out "$OUT/base.bin" --save-stats "$OUT/stats.safetensors" -q
echo "| method | rank | weights kept | test top-1 | agreement | train error (relative) |"
echo "| --- | --- | --- | --- | --- | --- |"
for k in $RANKS; do
  for m in dalr dalr-exact svd svd-bc prune-mean prune-max; do
    next=""; case $m in prune*) next="--next-layer classifier.3" ;; esac
    $D --model $EX/model.bin --stats "$OUT/stats.safetensors" --layer classifier.0 --method $m \
      --rank "$k" $next --out "$OUT/$m-$k.bin" --report "$OUT/$m-$k.json" -q 2>/dev/null
    $D evaluate --model "$OUT/$m-$k.bin" --data $EX/test --compare $EX/model.bin -q \
      --report "$OUT/$m-$k.eval.json" >/dev/null
    python3 - "$OUT/$m-$k.json" "$OUT/$m-$k.eval.json" "$m" "$k" <<'PY'
import json, sys
r, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"| {sys.argv[3]} | {sys.argv[4]} | {100 * r['params']['kept_fraction_weights']:.1f}% | "
      f"{100 * e['top1']:.2f}% | {100 * e['agreement']:.2f}% | {r['error_train']['rel']:.3f} |")
PY
  done
done
