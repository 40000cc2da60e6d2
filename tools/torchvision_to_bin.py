#!/usr/bin/python3
"""A torchvision VGG -> dalr-gpu `.bin` (safetensors + dalr.arch + dalr.input).

The network is built by name with weights=None (nothing is downloaded); its weights
come from --state-dict FILE.pth if given (a state dict as torch.save writes it, or a
checkpoint with a "state_dict"/"model" entry), otherwise they stay random.

    /usr/bin/python3 tools/torchvision_to_bin.py vgg19 vgg19.bin --state-dict vgg19-dcbb9e9d.pth
    /usr/bin/python3 tools/torchvision_to_bin.py vgg11 small.bin --num-classes 10 --input-size 64 --classes names.txt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format  # noqa: E402

ARCHS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=ARCHS)
    ap.add_argument("output", help="the .bin to write")
    ap.add_argument("--state-dict", metavar="FILE.pth", help="weights (default: random initialisation)")
    ap.add_argument("--num-classes", type=int, default=None,
                    help="classes of the last layer (default: from the state dict, else 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    ap.add_argument("--input-size", type=int, default=224,
                    help="centre crop (square) the network sees (default: ImageNet's 224)")
    ap.add_argument("--resize", type=int, default=None,
                    help="shorter side before the crop (default: input size * 256/224, "
                         "truncated: 256 for 224)")
    ap.add_argument("--classes", metavar="FILE",
                    help="class names, one per line in output order (or a JSON list): written as "
                         "dalr.classes, so that `evaluate` maps class folders by name")
    args = ap.parse_args()
    if args.input_size < 32:
        sys.exit(f"--input-size {args.input_size}: VGG needs at least 32 (five 2x2 poolings)")
    resize = args.resize if args.resize is not None else args.input_size * 256 // 224
    if resize < args.input_size:
        sys.exit(f"--resize {resize} is smaller than --input-size {args.input_size}")
    classes = dalr_format.read_classes_file(args.classes) if args.classes else None

    import torch
    import torchvision
    torch.manual_seed(args.seed)
    sd = None
    num_classes = args.num_classes
    if args.state_dict:
        sd = torch.load(args.state_dict, map_location="cpu")
        if isinstance(sd, dict) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            for key in ("state_dict", "model", "model_state_dict"):
                if key in sd:
                    sd = sd[key]
                    break
        if hasattr(sd, "state_dict"):
            sd = sd.state_dict()
        sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
        if num_classes is None:
            last = max((k for k in sd if k.startswith("classifier.") and k.endswith(".weight")),
                       key=lambda k: int(k.split(".")[1]))
            num_classes = sd[last].shape[0]
    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=num_classes or 1000)
    if sd is not None:
        model.load_state_dict(sd)
    model.eval()
    if classes is not None and len(classes) != (num_classes or 1000):
        sys.exit(f"--classes {args.classes}: {len(classes)} names for {num_classes or 1000} outputs")
    inp = dict(dalr_format.IMAGENET_INPUT, resize=resize, crop=[args.input_size, args.input_size])
    arch = dalr_format.save_module(args.output, model, inp,
                                   {"dalr.source": f"torchvision.models.{args.arch}"
                                    + (f" + {os.path.basename(args.state_dict)}" if args.state_dict else
                                       f" (random weights, seed {args.seed})")}, classes)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.output}: {args.arch}, {len(arch)} layers, {nparams:,} parameters, "
          f"{os.path.getsize(args.output) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
