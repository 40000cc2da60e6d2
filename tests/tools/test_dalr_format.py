"""The Python tools and the C++ engine agree on the model format: each reads what the
other writes. Run by ctest: test_dalr_format.py DALR_GPU SOURCE_DIR. Exit 77 = skipped
(no numpy)."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy missing: skipped")
    sys.exit(77)

dalr_gpu, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tools"))
import dalr_format as F  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    failures += not cond


example = os.path.join(src, "examples", "fashion2digits")
tensors, meta = F.read_safetensors(os.path.join(example, "model.bin"))
arch = json.loads(meta["dalr.arch"])
check([l.get("name") for l in arch if l["type"] == "linear"] ==
      ["classifier.0", "classifier.3", "classifier.6"], "Python reads the shipped model's arch")

with tempfile.TemporaryDirectory() as d:
    # Python writes, C++ reads.
    rng = np.random.default_rng(5)
    w = rng.standard_normal((7, 11)).astype(np.float32)
    path = os.path.join(d, "py.safetensors")
    F.write_safetensors(path, {"fc.weight": w, "fc.bias": np.arange(7, dtype=np.float32)},
                        {"origin": "python"})
    out = subprocess.run([dalr_gpu, "inspect", "--json", "--model", path],
                         capture_output=True, text=True)
    check(out.returncode == 0, "C++ inspects a file written by Python")
    info = json.loads(out.stdout) if out.returncode == 0 else {}
    check(info.get("total_params") == 84 and info.get("metadata", {}).get("origin") == "python",
          "shapes and metadata survive")

    # A scalar tensor (batchnorm's num_batches_tracked) keeps its shape () through Python,
    # and through the engine: the README's "own model" recipe loads the result back.
    plain = os.path.join(d, "plain.safetensors")
    F.write_safetensors(plain, {"fc.weight": tensors["classifier.3.weight"],
                                "fc.bias": tensors["classifier.3.bias"],
                                "bn.num_batches_tracked": np.array(5, dtype=np.int64)})
    check(F.read_header(plain)[0]["bn.num_batches_tracked"]["shape"] == [],
          "a 0-d tensor is written with shape []")
    small = os.path.join(d, "small.safetensors")
    r = subprocess.run([dalr_gpu, "--model", plain, "--layer", "fc", "--acts",
                        os.path.join(example, "acts_train.npy"), "--rank", "8", "--out", small,
                        "--device", "cpu", "-q"], capture_output=True, text=True)
    check(r.returncode == 0, "a plain state dict without dalr.arch compresses from --acts: " +
          r.stderr.strip())
    if r.returncode == 0:
        t, _ = F.read_safetensors(small)
        check(sorted(t) == ["bn.num_batches_tracked", "fc.0.weight", "fc.1.bias", "fc.1.weight"]
              and t["bn.num_batches_tracked"].shape == () and
              int(t["bn.num_batches_tracked"]) == 5, "the other tensors come back unchanged")

    # C++ writes (compresses classifier.3 from the shipped activations), Python reads.
    out_bin = os.path.join(d, "c.bin")
    r = subprocess.run([dalr_gpu, "compress", "--model", os.path.join(example, "model.bin"),
                        "--layer", "classifier.3", "--acts",
                        os.path.join(example, "acts_train.npy"), "--rank", "8", "--out", out_bin,
                        "--device", "cpu", "-q"], capture_output=True, text=True)
    check(r.returncode == 0, "C++ compresses classifier.3 from the shipped activations: " +
          r.stderr.strip())
    if r.returncode == 0:
        t, m = F.read_safetensors(out_bin)
        check(t["classifier.3.0.weight"].shape == (8, 256) and
              t["classifier.3.1.weight"].shape == (128, 8), "Python reads the factors")
        names = [l.get("name") for l in json.loads(m["dalr.arch"]) if l["type"] == "linear"]
        check(names == ["classifier.0", "classifier.3.0", "classifier.3.1", "classifier.6"],
              "the compressed arch names the factored layers")
        # The factorisation reproduces the layer on its own training activations.
        x = np.load(os.path.join(example, "acts_train.npy"))[:500].astype(np.float64)
        y = x @ tensors["classifier.3.weight"].T.astype(np.float64)
        yh = x @ (t["classifier.3.1.weight"] @ t["classifier.3.0.weight"]).T
        rel = np.linalg.norm(y - yh) / np.linalg.norm(y)
        check(rel < 0.5, f"the rank-8 factors reconstruct the layer (relative error {rel:.3f})")

print(f"{failures} failed")
sys.exit(1 if failures else 0)
