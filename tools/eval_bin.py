#!/usr/bin/python3
"""Top-1 accuracy of a dalr-gpu `.bin` (compressed or not) on an image folder
DIR/<class>/<image>, by the engine's rules (tools/dalr_format.py copies them): the
file's dalr.input preprocessing computed as `dalr-gpu evaluate` computes it, class
folders mapped to outputs by the model's class names (dalr.classes) or, without them,
by sorted folder name as strings (so "10" comes before "2"), as `evaluate` does.

    /usr/bin/python3 tools/eval_bin.py examples/fashion2digits/model.bin --data examples/fashion2digits/test
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the .bin to evaluate")
    ap.add_argument("--data", required=True, help="image folder DIR/<class>/<image>")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N images (0: all)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ap.add_argument("--predictions", metavar="FILE.csv",
                    help="one row per image, as `dalr-gpu evaluate --predictions` writes it")
    args = ap.parse_args()

    import torch
    from PIL import Image
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    tensors, arch, inp, meta = dalr_format.read_bin(args.model)
    model = dalr_format.module_from_arch(arch, tensors)
    if inp is None:
        sys.exit(f"{args.model}: no dalr.input in the metadata")
    outputs = next(L["out"] for L in reversed(arch) if L["type"] == "linear")
    try:
        items, classes = dalr_format.list_image_folder(
            args.data, dalr_format.model_classes(meta), outputs)
    except ValueError as e:
        sys.exit(f"eval_bin: {e}")
    if dalr_format.model_classes(meta) is None:
        print(f"warning: {args.model} has no class names (dalr.classes): class folders are "
              f"mapped to outputs by sorted folder name", file=sys.stderr)
    if args.limit:
        items = items[:args.limit]
    if not items:
        sys.exit(f"{args.data}: no images")
    correct = 0
    rows = []
    with torch.no_grad():
        for i in range(0, len(items), args.batch):
            chunk = items[i:i + args.batch]
            x = np.stack([dalr_format.preprocess_image(Image.open(p), inp) for p, _ in chunk])
            logits = model(torch.from_numpy(x)).double()
            prob, pred = torch.softmax(logits, 1).max(1)
            pred = pred.numpy()
            correct += int((pred == np.array([l for _, l in chunk])).sum())
            for (path, label), k, pk in zip(chunk, pred, prob.numpy()):
                name = lambda j: classes[j] if 0 <= j < len(classes) else ""  # noqa: E731
                rows.append([path, name(label), label, int(k), name(int(k)), f"{pk:.9g}"])
    if args.predictions:
        import csv
        tmp = args.predictions + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "true_class", "true_index", "predicted_index", "predicted_class",
                        "softmax_probability"])
            w.writerows(rows)
        os.replace(tmp, args.predictions)
    acc = correct / len(items)
    nparams = sum(p.numel() for p in model.parameters())
    res = {"model": args.model, "data": args.data, "images": len(items), "classes": len(classes),
           "correct": correct, "top1": acc, "params": nparams, "seconds": round(time.time() - t0, 2)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.model}: top-1 {100 * acc:.2f}% ({correct}/{len(items)} images, {len(classes)} classes), "
              f"{nparams:,} parameters, {res['seconds']} s")


if __name__ == "__main__":
    main()
