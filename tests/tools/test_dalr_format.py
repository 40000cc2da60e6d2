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

from tool_checks import check, finish  # noqa: E402


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


# dalr.classes added to a model: only the header changes, every tensor byte stays.
with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "classes.bin")
    F.update_metadata(os.path.join(example, "model.bin"), out, {"dalr.classes": F.classes_json("abc")})
    _, meta_a, base_a = F.read_header(os.path.join(example, "model.bin"))
    _, meta_b, base_b = F.read_header(out)
    with open(os.path.join(example, "model.bin"), "rb") as fa, open(out, "rb") as fb:
        check(fa.read()[base_a:] == fb.read()[base_b:], "update_metadata keeps the tensor bytes")
    check(F.model_classes(meta_b) == ["a", "b", "c"] and
          {k: v for k, v in meta_b.items() if k != "dalr.classes"} ==
          {k: v for k, v in meta_a.items() if k != "dalr.classes"},
          "update_metadata adds dalr.classes and keeps the rest")

try:
    import torch
except ImportError:
    torch = None
    print("torch missing: the nn.Module round trips are skipped")

if torch is not None:
    nn = torch.nn
    with tempfile.TemporaryDirectory() as d:
        # save_module on a plain nn.Sequential, module_from_bin reads it back.
        torch.manual_seed(3)
        seq = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(5 * 3 * 4, 9), nn.ReLU(), nn.Dropout(),
                            nn.Sequential(nn.Linear(9, 2, bias=False), nn.Linear(2, 7))).eval()
        path = os.path.join(d, "seq.bin")
        F.save_module(path, seq, {"channels": 3, "resize": 7, "crop": [7, 9], "scale": 1,
                                  "mean": [0] * 3, "std": [1] * 3})
        back, _ = F.module_from_bin(path)
        x = torch.randn(4, 3, 7, 9)
        with torch.no_grad():
            check(isinstance(back, nn.Sequential) and torch.equal(back(x), seq(x)),
                  "module_from_bin reads the nn.Sequential that save_module wrote")
        # The engine runs it too, to the same predictions.
        xs = torch.randn(6, 3, 7, 9)
        np.save(os.path.join(d, "x.npy"), xs.numpy())
        out = subprocess.run([dalr_gpu, "evaluate", "--model", path, "--data",
                              os.path.join(d, "x.npy"), "--device", "cpu", "-q", "--predictions",
                              os.path.join(d, "p.csv")], capture_output=True, text=True)
        with torch.no_grad():
            want = [str(int(k)) for k in seq(xs).argmax(1)]
        got = [line.split(",")[3] for line in open(os.path.join(d, "p.csv")).read().splitlines()[1:]] \
            if out.returncode == 0 else out.stderr
        check(got == want, f"the engine runs it to the same predictions ({got} vs {want})")
        for f in ("x.npy", "p.csv"):
            if os.path.exists(os.path.join(d, f)):
                os.remove(os.path.join(d, f))

        # bin_to_torch.py --save: a plain dict torch.load reads, rebuilt bit for bit.
        pt = os.path.join(d, "model.pt")
        r = subprocess.run([sys.executable, os.path.join(src, "tools", "bin_to_torch.py"),
                            os.path.join(example, "model.bin"), "--save", pt, "--state-dict",
                            os.path.join(d, "model.pth")], capture_output=True, text=True)
        check(r.returncode == 0, "bin_to_torch.py --save runs: " + r.stderr.strip()[-300:])
        if r.returncode == 0:
            raw = torch.load(pt)
            check(raw["format"] == "dalr-gpu" and raw["classes"] == [str(i) for i in range(10)],
                  "the --save file is a plain dict with the arch, input and classes")
            a, _ = F.module_from_torch(pt)
            b, _ = F.module_from_bin(os.path.join(example, "model.bin"))
            x = torch.randn(3, 1, 32, 32)
            with torch.no_grad():
                check(torch.equal(a(x), b(x)), "module_from_torch rebuilds the same network")
            sd = torch.load(os.path.join(d, "model.pth"))
            check(sorted(sd) == sorted(b.state_dict()), "--state-dict holds the state dict")
            check(sorted(os.listdir(d)) == ["model.pt", "model.pth", "seq.bin"],
                  "no temporary file left: " + str(os.listdir(d)))
        # A save that fails (a folder that does not exist) leaves nothing behind.
        bad = os.path.join(d, "missing", "m.pt")
        r = subprocess.run([sys.executable, os.path.join(src, "tools", "bin_to_torch.py"),
                            os.path.join(example, "model.bin"), "--save", bad],
                           capture_output=True, text=True)
        check(r.returncode != 0 and not os.path.exists(os.path.dirname(bad)),
              "a failed --save fails and writes nothing")

# torchvision_to_bin.py checks its sizes before building anything (a full VGG is 0.5 GB).
for extra, what in ((["--input-size", "16"], "at least 32"),
                    (["--input-size", "64", "--resize", "60"], "smaller than --input-size")):
    r = subprocess.run([sys.executable, os.path.join(src, "tools", "torchvision_to_bin.py"),
                        "vgg11", os.path.join(tempfile.gettempdir(), "never.bin")] + extra,
                       capture_output=True, text=True)
    check(r.returncode != 0 and what in r.stderr, f"torchvision_to_bin.py {' '.join(extra)}: "
          f"refused ({r.stderr.strip()[-200:]})")

finish()
