"""tools/eval_bin.py and `dalr-gpu evaluate` agree image by image: the same class order
(folder names sorted as strings, or the model's dalr.classes), the same preprocessing
(dalr_format.preprocess_image is the engine's, bit for bit on PNGs), so the same label
and prediction for every image. Run by ctest: test_eval_agreement.py DALR_GPU SOURCE_DIR.
Exit 77 = skipped (no numpy, torch or PIL)."""
import csv
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from PIL import Image
except ImportError as e:
    print(f"{e.name} missing: skipped")
    sys.exit(77)

dalr_gpu, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tools"))
import dalr_format as F  # noqa: E402

from tool_checks import check, failed, finish  # noqa: E402


def make_images(root, rng):
    """Folders 1, 10, 2 (string order 1 < 10 < 2; numeric order 1 < 2 < 10) of PNGs in
    several colour models and odd sizes, so that the resize's truncation matters."""
    modes = ["RGB", "L", "RGBA", "P", "LA"]
    n = 0
    for folder in ("1", "10", "2"):
        os.makedirs(os.path.join(root, folder))
        for i in range(6):
            w, h = int(rng.integers(19, 47)), int(rng.integers(19, 47))
            a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            # smooth structure plus noise, so the bilinear weights matter
            yy, xx = np.mgrid[0:h, 0:w]
            a = (a // 4 + (96 + 80 * np.sin(xx / 3.0 + n)[..., None] *
                           np.cos(yy / 4.0)[..., None])).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(a, "RGB").convert(modes[n % len(modes)])
            img.save(os.path.join(root, folder, f"img{i}.png"))
            n += 1
    return n


def make_model(path, channels, classes, seed):
    torch.manual_seed(seed)
    nn = torch.nn
    model = nn.Sequential()
    model.features = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(),
                                   nn.MaxPool2d(2))
    model.avgpool = nn.AdaptiveAvgPool2d((3, 3))
    model.classifier = nn.Sequential(nn.Linear(54, 24), nn.ReLU(), nn.Linear(24, 11))
    m = torch.nn.Module()
    m.features, m.avgpool, m.classifier = model.features, model.avgpool, model.classifier
    inp = {"channels": channels, "resize": 20, "crop": [17, 18], "scale": 1 / 255.0,
           "mean": [0.4] * channels, "std": [0.25] * channels}
    F.save_module(path, m, inp, classes=classes)


def make_conv_model(path, channels, classes, seed):
    """A dilated, bias-free conv and a strided one: the arch fields a compressed conv layer
    keeps, rebuilt by dalr_format as nn.Conv2d."""
    torch.manual_seed(seed)
    nn = torch.nn
    m = torch.nn.Module()
    m.features = nn.Sequential(nn.Conv2d(channels, 5, 3, padding=2, dilation=2, bias=False),
                               nn.ReLU(), nn.Conv2d(5, 6, 3, stride=2, padding=1), nn.ReLU())
    m.avgpool = nn.AdaptiveAvgPool2d((3, 3))
    m.classifier = nn.Sequential(nn.Linear(54, 24), nn.ReLU(), nn.Linear(24, 11))
    inp = {"channels": channels, "resize": 20, "crop": [17, 18], "scale": 1 / 255.0,
           "mean": [0.4] * channels, "std": [0.25] * channels}
    F.save_module(path, m, inp, classes=classes)


def make_compressed_conv_model(path, channels, classes, seed):
    """make_conv_model's network with both conv layers compressed by dalr-gpu (each an
    NAME.0 conv with the original kernel, stride, padding and dilation, then a 1x1 NAME.1)."""
    src_model = path + ".orig.bin"
    make_conv_model(src_model, channels, classes, seed)
    r = subprocess.run([dalr_gpu, "compress", "--model", src_model, "--acts", "stream", "--data",
                        os.path.join(os.path.dirname(path), "data"), "--layer",
                        "features.0,features.2", "--rank", "3", "--device", "cpu", "-q",
                        "--out", path], capture_output=True, text=True)
    check(r.returncode == 0, "dalr-gpu compresses the conv layers " + r.stderr.strip()[-300:])


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], {r[0]: r for r in rows[1:]}


with tempfile.TemporaryDirectory() as d:
    rng = np.random.default_rng(2024)
    data = os.path.join(d, "data")
    count = make_images(data, rng)

    # The rounding that preprocess_image had: 27 x 43 to a shorter side of 20 is 20 x 31
    # (31.85 truncated), not 20 x 32.
    check(F.resized_size(27, 43, 20) == (20, 31), "the resize truncates the longer side")

    cases = [("3 channels, no dalr.classes (by sorted folder name)", 3, None, make_model),
             ("1 channel, no dalr.classes", 1, None, make_model),
             ("3 channels, dalr.classes (by name)", 3, [str(i) for i in range(11)], make_model),
             ("a dilated conv without bias", 3, None, make_conv_model),
             ("compressed conv layers", 1, None, make_compressed_conv_model)]
    for k, (what, channels, classes, maker) in enumerate(cases):
        model = os.path.join(d, f"m{k}.bin")
        maker(model, channels, classes, seed=k)
        py_csv, cpp_csv = os.path.join(d, f"py{k}.csv"), os.path.join(d, f"cpp{k}.csv")
        r = subprocess.run([sys.executable, os.path.join(src, "tools", "eval_bin.py"), model,
                            "--data", data, "--batch", "7", "--predictions", py_csv],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"{what}: eval_bin.py runs " + (r.stderr.strip()[-300:] if r.returncode else ""))
        r = subprocess.run([dalr_gpu, "evaluate", "--model", model, "--data", data, "--device",
                            "cpu", "-q", "--batch", "5", "--predictions", cpp_csv],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"{what}: dalr-gpu evaluate runs " + (r.stderr.strip()[-300:] if r.returncode else ""))
        if failed():
            break
        h1, py = read_csv(py_csv)
        h2, cpp = read_csv(cpp_csv)
        check(h1 == h2, f"{what}: the same CSV header {h2}")
        check(len(py) == len(cpp) == count and set(py) == set(cpp),
              f"{what}: the same {count} images")
        want = {"1": 1, "10": 10, "2": 2} if classes else {"1": 0, "10": 1, "2": 2}
        labels_ok = all(int(row[2]) == want[os.path.basename(os.path.dirname(p))]
                        for p, row in cpp.items())
        check(labels_ok, f"{what}: folders 1, 10, 2 are outputs {sorted(want.values())}")
        same = [p for p in cpp if py[p][1:5] == cpp[p][1:5]]
        check(len(same) == count, f"{what}: the same label and prediction for every image "
              f"({len(same)}/{count})")
        diff = max(abs(float(py[p][5]) - float(cpp[p][5])) for p in cpp)
        check(diff < 1e-5, f"{what}: softmax probabilities within 1e-5 (max difference {diff:.2e})")

    # Preprocessing bit for bit: a model that is the identity on its input (flatten,
    # linear I, so its logits are the preprocessed pixels exactly) predicts the brightest
    # pixel, and its softmax probability is a function of every pixel: the two sides'
    # inputs must agree to the last bit (the softmax sums in float64 in either order).
    for channels in (3, 1):
        n = channels * 9 * 10
        ident = os.path.join(d, f"ident{channels}.bin")
        F.write_bin(ident, {"classifier.0.weight": np.eye(n, dtype=np.float32),
                            "classifier.0.bias": np.zeros(n, dtype=np.float32)},
                    [{"type": "flatten"},
                     {"type": "linear", "name": "classifier.0", "in": n, "out": n}],
                    {"channels": channels, "resize": 13, "crop": [9, 10], "scale": 1 / 255.0,
                     "mean": [0.45] * channels, "std": [0.22] * channels})
        py_csv, cpp_csv = os.path.join(d, "ipy.csv"), os.path.join(d, "icpp.csv")
        r1 = subprocess.run([sys.executable, os.path.join(src, "tools", "eval_bin.py"), ident,
                             "--data", data, "--predictions", py_csv],
                            capture_output=True, text=True)
        r2 = subprocess.run([dalr_gpu, "evaluate", "--model", ident, "--data", data, "--device",
                             "cpu", "-q", "--predictions", cpp_csv], capture_output=True, text=True)
        check(r1.returncode == 0 and r2.returncode == 0,
              f"identity model, {channels} channel(s), runs" +
              (f": {r1.stderr[-300:]} {r2.stderr[-300:]}" if r1.returncode or r2.returncode else ""))
        if r1.returncode or r2.returncode:
            continue
        _, py = read_csv(py_csv)
        _, cpp = read_csv(cpp_csv)
        same = sum(py[p][3] == cpp[p][3] for p in cpp)
        diff = max(abs(float(py[p][5]) / float(cpp[p][5]) - 1) for p in cpp)
        check(same == count and diff < 1e-8,
              f"identity model, {channels} channel(s): the same brightest pixel in {same}/{count} "
              f"images, probabilities within {diff:.1e} (relative; < 1e-8)")

finish()
