#!/usr/bin/env bash
# Regenerates the README's "Results on the shipped example" table with `dalr-gpu sweep`:
# one streamed pass collects the statistics of classifier.0 on the target-domain training
# images, one caches the test images' features at its input, then every (method, rank)
# point is solved from the statistics and evaluated on the cached features.
#   tools/sweep_example.sh [RANKS] [OUTDIR]      (after tools/setup.sh)
# Also leaves OUTDIR/sweep.{csv,md,json,svg} and OUTDIR/sweep-spectrum.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-"8 16 32 64"}
OUT=${2:-build/sweep}
EX=examples/fashion2digits
mkdir -p "$OUT"
build/dalr-gpu sweep --model $EX/model.bin --layer classifier.0 --data $EX/train \
  --test $EX/test --methods dalr,dalr-exact,svd,svd-bc,prune-mean,prune-max \
  --ranks "${RANKS// /,}" --out "$OUT/sweep" -q
python3 - "$OUT/sweep.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("| method | rank | weights kept | test top-1 | agreement | train error (relative) |")
print("| --- | --- | --- | --- | --- | --- |")
for p in sorted(s["points"], key=lambda p: p["rank"]):  # stable: methods keep their order
    if p["skipped"]:
        print(f"| {p['method']} | {p['rank']} | skipped: {p['note']} | | | |")
        continue
    print(f"| {p['method']} | {p['rank']} | {100 * p['kept_fraction']:.1f}% | "
          f"{100 * p['top1']:.2f}% | {100 * p['agreement']:.2f}% | {p['error_train']['rel']:.3f} |")
PY

# PNG copies of the plots where Debian's librsvg2-bin (rsvg-convert) is installed.
if command -v rsvg-convert >/dev/null; then
  for f in "$OUT/sweep.svg" "$OUT/sweep-spectrum.svg"; do rsvg-convert -o "${f%.svg}.png" "$f"; done
fi
