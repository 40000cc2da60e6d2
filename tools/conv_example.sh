#!/usr/bin/env bash
# The conv-layer table of the README and examples/fashion2digits/README.md: compresses
# features.3 and features.6 of the shipped example together at several budgets with dalr
# sequentially (asymmetric, the default; and --sequential symmetric), dalr --independent
# and svd, evaluates each result on the
# held-out digits and prints a markdown table (ranks, multiply-adds kept, top-1).
#   tools/conv_example.sh [OUTDIR]      (after tools/setup.sh; about 2 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/conv-example}
EX=examples/fashion2digits
D=build/dalr-gpu
mkdir -p "$OUT"
run() {  # NAME then compress options; prints the top-1 of the result on the test split
  local name=$1
  shift
  $D compress --model $EX/model.bin --acts stream --data $EX/train \
    --layer features.3,features.6 --device cpu -q --out "$OUT/$name.bin" \
    --report "$OUT/$name.json" "$@"
  $D evaluate --model "$OUT/$name.bin" --data $EX/test --device cpu -q |
    sed 's/.*top-1 \([0-9.]*%\).*/\1/'
}
# Multiply-adds per image of the two layers before/after, and of the whole network
# (its other layers unchanged), from a report.
macs() {
  /usr/bin/python3 - "$1" "$($D inspect --model $EX/model.bin --json)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
layers = r["layers"]
before = sum(l["flops"]["before"] for l in layers)
after = sum(l["flops"]["after"] for l in layers)
# The whole network: every conv at its positions (32x32, 16x16, 8x8 after the pools)
# and every fc layer once.
model = json.loads(sys.argv[2])
pos = {"features.0": 32 * 32, "features.3": 16 * 16, "features.6": 8 * 8}
total = 0
for t in model["tensors"]:
    if t["name"].endswith(".weight") and len(t["shape"]) in (2, 4):
        n = 1
        for d in t["shape"]:
            n *= d
        total += n * pos.get(t["name"][:-7], 1)
ranks = ", ".join(str(l["rank"]) for l in layers)
print(f"{ranks} | {100 * after / before:.1f}% / {100 * (total - before + after) / total:.1f}%")
EOF
}
echo "| budget | ranks (features.3, features.6) | multiply-adds kept: the two layers / network |" \
  "dalr, sequential (asymmetric) | dalr, --sequential symmetric | dalr, --independent | svd |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for sel in "--keep 0.5" "--keep 0.3" "--keep 0.2" "--keep 0.1" "--rank 8" "--rank 6" "--rank 4"; do
  tag=$(echo "$sel" | tr -d ' -')
  seq=$(run "$tag.seq" $sel)
  sym=$(run "$tag.sym" $sel --sequential symmetric)
  ind=$(run "$tag.ind" $sel --independent)
  svd=$(run "$tag.svd" $sel --method svd)
  echo "| \`$sel\` | $(macs "$OUT/$tag.seq.json") | $seq | $sym | $ind | $svd |"
done
