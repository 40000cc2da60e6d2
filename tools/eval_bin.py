#!/usr/bin/python3
"""Top-1 accuracy of a dalr-gpu `.bin` (compressed or not) on an image folder
DIR/<class>/<image>, with the preprocessing of the file's dalr.input. Classes are
the folder names in sorted order (numerically if all are numbers): label i = i-th class.

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
    args = ap.parse_args()

    import torch
    from PIL import Image
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    model, inp = dalr_format.module_from_bin(args.model)
    if inp is None:
        sys.exit(f"{args.model}: no dalr.input in the metadata")
    items, classes = dalr_format.list_image_folder(args.data)
    if args.limit:
        items = items[:args.limit]
    if not items:
        sys.exit(f"{args.data}: no images")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(items), args.batch):
            chunk = items[i:i + args.batch]
            x = np.stack([dalr_format.preprocess_image(Image.open(p), inp) for p, _ in chunk])
            pred = model(torch.from_numpy(x)).argmax(1).numpy()
            correct += int((pred == np.array([l for _, l in chunk])).sum())
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
