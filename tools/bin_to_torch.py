#!/usr/bin/python3
"""A dalr-gpu `.bin` (compressed or not) -> a PyTorch nn.Module.

    /usr/bin/python3 tools/bin_to_torch.py model.bin --check        # rebuild, run a random input
    /usr/bin/python3 tools/bin_to_torch.py model.bin --save model.pt  # arch + state dict
    /usr/bin/python3 tools/bin_to_torch.py model.bin --state-dict model.pth

From Python: `from dalr_format import module_from_bin; model, inp = module_from_bin("model.bin")`,
or from a --save file: `model, inp = dalr_format.module_from_torch("model.pt")`
(the file itself is a plain dict that torch.load reads without dalr_format).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the .bin to read")
    ap.add_argument("--check", action="store_true", help="run a random input through it, print the output shape")
    ap.add_argument("--save", metavar="FILE.pt",
                    help="torch.save {arch, input, classes, state_dict} (a plain dict; rebuild "
                         "with dalr_format.module_from_torch)")
    ap.add_argument("--state-dict", metavar="FILE.pth", help="torch.save its state dict")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()

    import torch
    model, inp = dalr_format.module_from_bin(args.model)
    print(model)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{nparams:,} parameters")
    for name, n, m, p in dalr_format.fc_layers(dalr_format.arch_from_module(model)):
        print(f"  {name}: {n} -> {m}, {p:,} parameters")
    if args.check:
        if inp is None:
            sys.exit("--check: the file has no dalr.input, so the input size is unknown")
        h, w = inp["crop"]
        x = torch.randn(args.batch, int(inp["channels"]), h, w)
        with torch.no_grad():
            y = model(x)
        print(f"input {tuple(x.shape)} -> output {tuple(y.shape)}")
    for out in (args.save, args.state_dict):
        if out and os.path.exists(out) and os.path.samefile(out, args.model):
            sys.exit(f"{out} is the input: refusing to overwrite it")
    if args.save:
        dalr_format.save_torch(args.save, args.model)
    if args.state_dict:
        dalr_format._torch_save_atomic(model.state_dict(), args.state_dict)


if __name__ == "__main__":
    main()
