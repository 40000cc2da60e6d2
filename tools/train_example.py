#!/usr/bin/python3
"""Trains the shipped real example, examples/fashion2digits/ (a few minutes on 2 CPU cores).

Source domain: Fashion-MNIST (Debian package dataset-fashion-mnist), 28x28 padded to 32x32.
Target domain: the 5,000 handwritten 20x20 digits of OpenCV's digits.png (package
opencv-doc), padded to 32x32; split 3,000 train / 2,000 test, stratified, fixed seed.
As the paper's ImageNet -> birds transfer: train on the source, replace the last
classifier layer for the 10 digit classes, fine-tune all layers on the target.

Writes into OUT (default examples/fashion2digits):
  model.bin                  the fine-tuned network (dalr.arch + dalr.input + dalr.classes)
  train/<d>/NNNN.png, test/<d>/NNNN.png   the target images, grey 32x32 PNG
  acts_{train,test}.npy      float32 (p, n): input of --acts-layer (default classifier.3)
  labels_{train,test}.npy    int64 (p,)
  train_log.json             accuracies, times, parameter counts

Usage: /usr/bin/python3 tools/train_example.py [--out DIR] [--seed 0]
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
DIGITS = "/usr/share/doc/opencv-doc/examples/data/digits.png"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion():
    xtr = read_idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"))
    ytr = read_idx(os.path.join(FASHION, "train-labels-idx1-ubyte.gz"))
    xte = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2)))  # 28x28 -> 32x32
    return pad(xtr), ytr.astype(np.int64), pad(xte), yte.astype(np.int64)


def load_digits(seed):
    from PIL import Image
    img = np.asarray(Image.open(DIGITS).convert("L"))
    assert img.shape == (1000, 2000), img.shape
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10), 500)  # 5 rows of 100 per digit
    cells = np.pad(cells, ((0, 0), (6, 6), (6, 6)))  # 20x20 -> 32x32, centred
    rng = np.random.RandomState(seed)
    tr, te = [], []
    for d in range(10):
        idx = np.where(labels == d)[0]
        idx = idx[rng.permutation(len(idx))]
        tr.append(idx[:300])
        te.append(idx[300:])
    tr = np.concatenate(tr)
    te = np.concatenate(te)
    return cells[tr], labels[tr].astype(np.int64), cells[te], labels[te].astype(np.int64)


def build_net(num_classes=10):
    import torch
    import torch.nn as nn

    class SmallVGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
            self.classifier = nn.Sequential(
                nn.Linear(1024, 256), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(128, num_classes))

        def forward(self, x):
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    return SmallVGG()


def to_tensor(x, mean, std):
    import torch
    return torch.from_numpy(((x.astype(np.float32) / 255.0 - mean) / std)[:, None])


def accuracy(model, x, y, bs=500):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            correct += (model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum().item()
    return correct / len(x)


def train(model, params, x, y, epochs, lr, bs, gen, log, tag):
    import torch
    import torch.nn.functional as F
    opt = torch.optim.Adam(params, lr=lr)
    n = len(x)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot = 0.0
        t0 = time.time()
        for i in range(0, n, bs):
            b = perm[i:i + bs]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            tot += loss.item() * len(b)
        log(f"{tag} epoch {ep + 1}/{epochs}: loss {tot / n:.4f} ({time.time() - t0:.1f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "examples", "fashion2digits"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source-epochs", type=int, default=3)
    ap.add_argument("--probe-epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=20)
    ap.add_argument("--acts-layer", default="classifier.3",
                    help="linear layer whose input is exported as acts_*.npy (classifier.0 is 1024-d, 20 MB)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_all = time.time()
    info = {"seed": args.seed, "torch": torch.__version__, "threads": args.threads}

    def log(s):
        print(s, flush=True)

    # ---- source domain
    fxtr, fytr, fxte, fyte = load_fashion()
    fmean = float(fxtr.mean() / 255.0)
    fstd = float((fxtr / 255.0).std())
    Xs, Ys = to_tensor(fxtr, fmean, fstd), torch.from_numpy(fytr)
    Xst, Yst = to_tensor(fxte, fmean, fstd), torch.from_numpy(fyte)
    model = build_net(10)
    t0 = time.time()
    train(model, model.parameters(), Xs, Ys, args.source_epochs, 1e-3, 128, gen, log, "source")
    info["source_train_s"] = round(time.time() - t0, 1)
    info["source_epochs"] = args.source_epochs
    info["source_test_acc"] = accuracy(model, Xst, Yst)
    log(f"source (Fashion-MNIST) test accuracy: {info['source_test_acc']:.4f}")

    # ---- target domain
    dxtr, dytr, dxte, dyte = load_digits(args.seed)
    tmean = float(dxtr.mean() / 255.0)
    tstd = float((dxtr / 255.0).std())
    Xt, Yt = to_tensor(dxtr, tmean, tstd), torch.from_numpy(dytr)
    Xtt, Ytt = to_tensor(dxte, tmean, tstd), torch.from_numpy(dyte)

    # before fine-tuning: a linear probe, a new classifier.6 trained on the frozen
    # source network's 128-d features (eval mode: no dropout), computed once
    model.eval()
    with torch.no_grad():
        feats = lambda X: model.classifier[:6](torch.flatten(model.avgpool(model.features(X)), 1))
        Ft, Ftt = feats(Xt), feats(Xtt)
    head = torch.nn.Linear(128, 10)
    t0 = time.time()
    train(head, head.parameters(), Ft, Yt, args.probe_epochs, 1e-2, 64, gen, log, "probe")
    info["probe_train_s"] = round(time.time() - t0, 1)
    info["probe_epochs"] = args.probe_epochs
    info["target_test_acc_linear_probe"] = accuracy(head, Ftt, Ytt)
    info["target_train_acc_linear_probe"] = accuracy(head, Ft, Yt)
    log(f"target (digits) test accuracy, frozen source network + linear probe: "
        f"{info['target_test_acc_linear_probe']:.4f}")
    model.classifier[6] = head

    # fine-tune all layers, starting from the probe's classifier.6
    t0 = time.time()
    train(model, model.parameters(), Xt, Yt, args.finetune_epochs, 3e-4, 64, gen, log, "finetune")
    info["finetune_train_s"] = round(time.time() - t0, 1)
    info["finetune_epochs"] = args.finetune_epochs
    info["target_train_acc_finetuned"] = accuracy(model, Xt, Yt)
    info["target_test_acc_finetuned"] = accuracy(model, Xtt, Ytt)
    log(f"target test accuracy after fine-tuning: {info['target_test_acc_finetuned']:.4f} "
        f"(train {info['target_train_acc_finetuned']:.4f})")

    # ---- export
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    model.eval()
    inp = {"channels": 1, "resize": 32, "crop": [32, 32], "scale": 1.0 / 255.0,
           "mean": [tmean], "std": [tstd]}
    arch = dalr_format.save_module(os.path.join(out, "model.bin"), model, inp,
                                   {"dalr.source": "tools/train_example.py: Fashion-MNIST -> OpenCV digits"},
                                   classes=[str(d) for d in range(10)])  # the folders' names
    info["fc_params"] = {n: p for n, _, _, p in dalr_format.fc_layers(arch)}
    info["total_params"] = int(sum(p.numel() for p in model.parameters()))

    from PIL import Image
    for split, x, y in (("train", dxtr, dytr), ("test", dxte, dyte)):
        d = os.path.join(out, split)
        if os.path.isdir(d):
            shutil.rmtree(d)
        count = {}
        for img, lab in zip(x, y):
            os.makedirs(os.path.join(d, str(lab)), exist_ok=True)
            i = count.get(lab, 0)
            count[lab] = i + 1
            Image.fromarray(img).save(os.path.join(d, str(lab), f"{i:04d}.png"), optimize=True)

    # activations at the input of --acts-layer, in image-folder order (class, then file name)
    idx = [i for i, L in enumerate(arch) if L.get("name") == args.acts_layer]
    if not idx:
        sys.exit(f"--acts-layer {args.acts_layer}: no such linear layer")
    cls_idx = int(args.acts_layer.split(".")[1])
    for split, X, y in (("train", Xt, dytr), ("test", Xtt, dyte)):
        order = np.argsort(y, kind="stable")  # class-major, file index = position within class
        with torch.no_grad():
            h = torch.flatten(model.avgpool(model.features(X[order])), 1)
            for m in list(model.classifier)[:cls_idx]:
                h = m(h)
        np.save(os.path.join(out, f"acts_{split}.npy"), h.numpy().astype(np.float32))
        np.save(os.path.join(out, f"labels_{split}.npy"), y[order].astype(np.int64))
    info["acts_layer"] = args.acts_layer
    info["total_s"] = round(time.time() - t_all, 1)
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
    log(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
