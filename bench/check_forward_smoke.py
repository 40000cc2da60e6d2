#!/usr/bin/python3
"""bench_forward on the shipped example, untimed (ctest's bench_forward_smoke):

    check_forward_smoke.py BENCH_FORWARD SOURCE_DIR OUT_DIR

1. --factor features.3:8,features.6:16 (random factors): the JSON parses; the compressed
   network's output has the original's shape (10 classes x batch) and differs from it
   (random factors); each layer's rank and multiply-adds equal those computed here from the
   model's own arch, and so do each part's (NAME.0, NAME.1 timed alone); the same for a
   linear layer (classifier.0); --round-rank and 'half' pick the ranks compress would.
2. --compressed on a file that factorises features.3 exactly at full rank (NAME.0 = the
   original filters, NAME.1 = the 1 x 1 identity with the bias): the outputs, of the whole
   network and of the layer alone, equal the original's (needs numpy; skipped without).
3. Errors a user can make are refused with a message.
"""
import json
import os
import struct
import subprocess
import sys

bench, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(src, "tests", "tools"))
from tool_checks import check, finish  # noqa: E402

MODEL = os.path.join(src, "examples", "fashion2digits", "model.bin")
BATCH = 3
os.makedirs(out, exist_ok=True)


def run(name, *args):
    path = os.path.join(out, name + ".json")
    if os.path.exists(path):
        os.remove(path)
    r = subprocess.run([bench, "--device", "cpu", "--repeats", "1", "--batch", str(BATCH),
                        "--json", path, *args], capture_output=True, text=True)
    print(r.stdout, r.stderr, sep="", end="")
    if r.returncode != 0 or not os.path.exists(path):
        return None, r
    with open(path) as f:
        return json.load(f), r


def arch_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["dalr.arch"]), header


# Each conv's input size on the example's 1 x 32 x 32 input (conv k3 p1 keeps it; the 2/2
# max pools halve it), and its multiply-adds for rank k (None: the original).
arch, _ = arch_of(MODEL)
side, convs = 32, {}
for layer in arch:
    if layer["type"] == "conv":
        convs[layer["name"]] = (layer, side)
    if layer["type"] == "maxpool":
        side //= 2


def macs(name, k=None):
    layer, s = convs[name]
    patch = layer["in"] * layer["kernel"] ** 2
    return s * s * (layer["out"] * patch if k is None else k * (patch + layer["out"]))


# 1. random factors
r, _ = run("factor", "--model", MODEL, "--factor", "features.3:8,features.6:16")
check(r is not None, "bench_forward --factor runs and writes its JSON")
if r:
    net = r["network"]
    check(net["output"]["rows"] == 10 and net["output"]["cols"] == BATCH
          and net["output"]["finite"], "the compressed network's output is 10 x batch, finite")
    check(net["output"]["rel_diff"] > 0.01, "random factors change the output (%.3g)"
          % net["output"]["rel_diff"])
    check(net["original"]["seconds"] > 0 and net["compressed"]["seconds"] > 0
          and abs(net["speedup"] - net["original"]["seconds"] / net["compressed"]["seconds"])
          < 1e-9, "network times are positive and the speed-up is their ratio")
    saved = macs("features.3") + macs("features.6") - macs("features.3", 8) - \
        macs("features.6", 16)
    check(net["original"]["macs_per_image"] - net["compressed"]["macs_per_image"] == saved,
          "the network's multiply-adds drop by the two layers' savings (%d)" % saved)
    layers = {x["layer"]: x for x in r["layers"]}
    check(sorted(layers) == ["features.3", "features.6"], "both layers timed alone")
    for name, k in (("features.3", 8), ("features.6", 16)):
        x = layers.get(name, {})
        check(x.get("k") == k and x.get("macs_per_image_before") == macs(name)
              and x.get("macs_per_image_after") == macs(name, k),
              f"{name}: rank {k}, multiply-adds {macs(name)} -> {macs(name, k)}")
        check(x.get("output", {}).get("rows") == convs[name][0]["out"] * convs[name][1] ** 2,
              f"{name}: the pair's output has the layer's shape")
        check(x.get("seconds_before", 0) > 0 and x.get("seconds_after", 0) > 0,
              f"{name}: times are positive")
        layer, side = convs[name]
        parts = [(p.get("layer"), p.get("macs_per_image")) for p in x.get("parts", [])]
        check(parts == [(name + ".0", k * layer["in"] * layer["kernel"] ** 2 * side * side),
                        (name + ".1", layer["out"] * k * side * side)],
              f"{name}: each part timed alone, with its own multiply-adds")

r, _ = run("linear", "--model", MODEL, "--factor", "classifier.0:16")
x = r["layers"][0] if r and r["layers"] else {}
check(x.get("type") == "linear" and x.get("macs_per_image_before") == 256 * 1024
      and x.get("macs_per_image_after") == 16 * (1024 + 256)
      and [p["macs_per_image"] for p in x.get("parts", [])] == [16 * 1024, 256 * 16]
      and x.get("output", {}).get("rows") == 256,
      "a linear layer (classifier.0, 256 x 1024) at rank 16: multiply-adds, parts, shape")

r, _ = run("round", "--model", MODEL, "--factor", "features.3:half,features.6:20",
           "--round-rank", "16", "--no-layers")
if r:
    ranks = {f["layer"]: (f["requested"], f["rank"]) for f in r["factor"]}
    # features.3: 32 x 144, half = floor(32 * 144 / (2 * 176)) = 13 -> 16; features.6: 20 -> 32.
    check(ranks == {"features.3": (13, 16), "features.6": (20, 32)},
          "'half' and --round-rank 16 give ranks 13 -> 16 and 20 -> 32: %s" % ranks)
    check(r["layers"] == [], "--no-layers times the network only")
else:
    check(False, "bench_forward --round-rank runs")

# 2. an exact full-rank factorisation as a compressed file
try:
    import numpy as np
    sys.path.insert(0, os.path.join(src, "tools"))
    import dalr_format as F
except ImportError:
    np = None
    print("numpy missing: the full-rank check is skipped")
if np is not None:
    tensors, meta = F.read_safetensors(MODEL)
    w, b = tensors.pop("features.3.weight"), tensors.pop("features.3.bias")
    tensors["features.3.0.weight"] = w
    tensors["features.3.1.weight"] = np.eye(w.shape[0], dtype=np.float32)[:, :, None, None]
    tensors["features.3.1.bias"] = b
    i = next(j for j, layer in enumerate(arch) if layer.get("name") == "features.3")
    first = dict(arch[i], name="features.3.0", bias=False)
    second = {"type": "conv", "name": "features.3.1", "in": w.shape[0], "out": w.shape[0],
              "kernel": 1}
    meta = dict(meta, **{"dalr.arch": json.dumps(arch[:i] + [first, second] + arch[i + 1:])})
    full = os.path.join(out, "full-rank.bin")
    F.write_safetensors(full, tensors, meta)
    r, _ = run("full", "--model", MODEL, "--compressed", full)
    check(r is not None, "bench_forward --compressed runs on a compressed file")
    if r:
        check(r["network"]["output"]["rel_diff"] < 1e-5,
              "a full-rank exact factorisation gives the original's outputs (%.2g)"
              % r["network"]["output"]["rel_diff"])
        check([x["layer"] for x in r["layers"]] == ["features.3"] and r["layers"][0]["k"] == 32
              and r["layers"][0]["output"]["rel_diff"] < 1e-5,
              "the layer alone: rank 32, the same output")

# 3. errors
for args, what, says in (
        (["--factor", "features.3:8", "--compressed", MODEL], "both inputs", "either"),
        (["--factor", "features.3"], "a missing rank", "NAME:K"),
        (["--factor", "features.4:8"], "an unknown layer", "no layer named"),
        (["--factor", "features.3:0"], "rank 0", ">= 1"),
        (["--factor", "features.3:8,features.3:4"], "a layer twice", "twice")):
    r, p = run("error", "--model", MODEL, *args)
    check(r is None and p.returncode != 0 and says in p.stderr, f"refused: {what}")

finish()
