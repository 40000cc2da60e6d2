"""Saves PyTorch reference outputs of the shipped example for the C++ tests: the input
of classifier.0 and the logits of 64 test images (every 31st in ImageFolder order),
computed by torch on the network rebuilt from model.bin (tools/dalr_format.py).
    /usr/bin/python3 tools/make_reference.py [EXAMPLE_DIR]"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format as F  # noqa: E402

ex = sys.argv[1] if len(sys.argv) > 1 else "examples/fashion2digits"
model, inp = F.module_from_bin(os.path.join(ex, "model.bin"))
items, _ = F.list_image_folder(os.path.join(ex, "test"))
picked = items[::31][:64]
x = np.stack([F.preprocess_image(Image.open(p), inp) for p, _ in picked])
captured = {}
fc0 = model.classifier[0]


def keep_input(module, args, output):  # returns None: the output is left as it is
    captured["in"] = args[0].detach()


hook = fc0.register_forward_hook(keep_input)
with torch.no_grad():
    logits = model(torch.from_numpy(x).to(next(model.parameters()).dtype))
hook.remove()
np.save(os.path.join(ex, "reference_logits.npy"), logits.numpy().astype(np.float32))
np.save(os.path.join(ex, "reference_fc0_input.npy"), captured["in"].numpy().astype(np.float32))
with open(os.path.join(ex, "reference.json"), "w") as f:
    json.dump({"images": [os.path.relpath(p, ex) for p, _ in picked],
               "labels": [int(l) for _, l in picked],
               "torch": torch.__version__,
               "note": "tools/make_reference.py: PyTorch outputs for tests/test_example.cpp"},
              f, indent=1)
print(f"saved {len(picked)} reference outputs, logits {tuple(logits.shape)}")
