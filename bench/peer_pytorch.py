#!/usr/bin/python3
"""The PyTorch peer of `dalr-gpu compress --acts stream --method dalr`: the same job done the
way a PyTorch user would do it, timed the same way, for bench/run.py's dalr-gpu/peer ratios.

    /usr/bin/python3 bench/peer_pytorch.py --model vgg19.bin --data DIR --layer classifier.0 \\
        --rank 256 [--images N] [--device cuda --precision fp32] [--out OUT.bin] [--json R.json]

job (--mode job), end to end with time.perf_counter (CUDA synchronised before each clock read),
from after the imports to the compressed file renamed into place:
  load_model  read the .bin (tools/dalr_format.py); torchvision's VGG when the dalr.arch is
              exactly one of vgg11..vgg19(_bn) (load_state_dict strict), else
              dalr_format.module_from_arch; eval mode; only the part before the layer is kept.
  statistics  torchvision ImageFolder (only .jpg/.jpeg/.png, sorted: dalr-gpu's order) + the
              model's dalr.input preprocessing (Resize bilinear, CenterCrop, ToTensor, Normalize)
              + DataLoader (no shuffle, the first N images); forward to the layer's input;
              C += X^T X (n x n fp32 on the device, addmm_), the count and the column sum.
  solve       dalr (DESIGN.md 1): lambda = lambda_rel trace(C) / n, G = W C W^T,
              U_k = top-k eigenvectors of G (eigh), B = U_k^T W C (C + lambda I)^-1 by Cholesky
              (cholesky_solve on the n x k right-hand side C W^T U_k), A = U_k, bhat = b; fp32.
  write       the compressed model (LAYER.0 = B, LAYER.1 = A, bhat; dalr.arch as dalr-gpu
              writes it) to a temporary file in the output folder, then os.replace.

stages (--mode stages), each alone: one warm-up, then the median of --repeats:
  decode      the DataLoader over the N images, batches discarded (no model)
  h2d         one pinned batch to the device (CUDA only)
  forward     one batch, already on the device, run to the layer's input
  statistics  C.addmm_ on random post-ReLU (|randn|) batch x n blocks, N images' worth
  solve       the dalr solve alone on --solve-shape m,n,p (random W = randn/100, C = X X^T with
              X = |randn| (n x p), built outside the timing)
  write       writing the compressed model (the job's factors, or random ones of the same
              shapes when the job did not run: the time does not depend on the values)

Precision (CUDA): fp32 disallows TF32 in matmuls and cuDNN; tf32 allows both; fp16/bf16 run
the forward under autocast, the Gram and the solve stay fp32 (TF32 off). The CPU runs fp32
(where torch's CPU fp32 eigh fails on m >~ 2900, G's eigenvectors are taken in fp64: `notes`).
On CUDA the context is created before the job's clock starts, and cudnn.benchmark is on.

--json writes one object: {"tool": "pytorch", "torch", "torchvision", "device": "cpu" or
"cuda:<name>", "precision", "threads", "layer", "m", "n", "rank", "images", "batch", "workers",
"input": [c, h, w], "model_builder", "job": {"seconds", "timing": {"load_model", "statistics",
"solve", "write", "total"}, "out", "lambda", "samples", "write_bytes"} or null, "stages":
{"decode": {"images", "seconds"}, "h2d": {"bytes", "seconds"} or null, "forward": {"images",
"seconds"} (one batch), "statistics": {"images", "n", "seconds"}, "solve": {"m", "n", "p", "k",
"seconds"}, "write": {"bytes", "seconds"}} or null, "notes": [str]}; all times in seconds.
Errors exit 1 with one line on stderr.
"""
import argparse
import contextlib
import functools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dalr_format  # noqa: E402

IMAGE_EXTS = (".jpg", ".jpeg", ".png")  # what dalr-gpu's image folder reads
VGGS = {"vgg11": ("A", False), "vgg11_bn": ("A", True), "vgg13": ("B", False),
        "vgg13_bn": ("B", True), "vgg16": ("D", False), "vgg16_bn": ("D", True),
        "vgg19": ("E", False), "vgg19_bn": ("E", True)}


class PeerError(Exception):
    """A caller error: printed as one line, exit status 1."""


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="peer_pytorch.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the .bin to compress (dalr.arch, dalr.input)")
    ap.add_argument("--data", required=True,
                    help="image folder DIR/<class>/<image> (.jpg/.jpeg/.png), read in sorted order")
    ap.add_argument("--layer", required=True,
                    help="the linear layer to compress (classifier.N); one layer only")
    ap.add_argument("--rank", type=int, required=True, help="rank k, 1 <= k <= min(m, n)")
    ap.add_argument("--images", type=int, default=0,
                    help="use the first N images in folder order (0: all; default 0)")
    ap.add_argument("--size", type=int, default=0,
                    help="crop S x S and resize the shorter side to round(S*256/224) instead of "
                         "the model's dalr.input (0: the model's; default 0)")
    ap.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--workers", type=int, default=4,
                    help="DataLoader worker processes (0: decode in the main process; default 4)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="default: cuda when torch sees a GPU, else cpu")
    ap.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default="fp32",
                    help="fp32 (no TF32), tf32 (TF32 matmuls and convolutions), fp16/bf16 "
                         "(forward under autocast; Gram and solve fp32); the CPU: fp32 only")
    ap.add_argument("--lambda-rel", type=float, default=1e-3,
                    help="ridge lambda relative to trace(C)/n, > 0 (default 1e-3, as dalr-gpu)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed repeats of each stage after one warm-up (default 3)")
    ap.add_argument("--out", default=None,
                    help="the compressed model the job writes (default: a temporary file, "
                         "deleted at the end)")
    ap.add_argument("--json", default=None, help="write the result as one JSON object here")
    ap.add_argument("--save-probes", default=None, metavar="FILE.npy",
                    help="job: also save the layer's first 64 input activations (rows), after "
                         "the clock stops, so that factors can be compared on real data")
    ap.add_argument("--mode", choices=["job", "stages", "both"], default="both",
                    help="job: the end-to-end compression; stages: each stage alone; "
                         "both (default): the job, then the stages")
    ap.add_argument("--solve-shape", default=None, metavar="m,n,p",
                    help="shape of the solve stage (default: the layer's m, n and the image count)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: os.cpu_count(), here %(default)s)")
    a = ap.parse_args(argv)
    if "," in a.layer:
        raise PeerError(f"--layer {a.layer}: one layer per run (several layers in one pass are "
                        "not supported by the peer)")
    for name in ("rank", "batch", "repeats", "threads"):
        if getattr(a, name) < 1:
            raise PeerError(f"--{name} must be >= 1")
    for name in ("images", "size", "workers"):
        if getattr(a, name) < 0:
            raise PeerError(f"--{name} must be >= 0")
    if not a.lambda_rel > 0:
        raise PeerError("--lambda-rel must be > 0 (the Cholesky solve needs C + lambda I > 0)")
    if a.solve_shape is not None:
        try:
            a.solve_shape = tuple(int(v) for v in a.solve_shape.split(","))
        except ValueError:
            a.solve_shape = ()
        if len(a.solve_shape) != 3 or min(a.solve_shape) < 1:
            raise PeerError("--solve-shape: expected three positive integers m,n,p")
    return a


# ----------------------------------------------------------------------------- model

def _canonical(layer):
    """A dalr.arch entry with its defaults filled in, for comparison."""
    c = dict(layer)
    t = c["type"]
    if t == "conv":
        c.setdefault("stride", 1)
        c.setdefault("pad", 0)
    elif t in ("maxpool", "avgpool"):
        c.setdefault("stride", c["kernel"])
    elif t == "batchnorm":
        c["eps"] = float(c.get("eps", 1e-5))
    return c


def _torchvision_vgg_arch(cfg, bn, num_classes):
    """dalr.arch of torchvision's VGG (vgg.make_layers + its classifier), from torchvision's own
    configuration table, without building (and randomly initialising) the network."""
    arch, c, i = [], 3, 0
    for v in cfg:
        if v == "M":
            arch.append({"type": "maxpool", "kernel": 2, "stride": 2})
            i += 1
            continue
        arch.append({"type": "conv", "name": f"features.{i}", "in": c, "out": v, "kernel": 3,
                     "stride": 1, "pad": 1})
        i += 1
        if bn:
            arch.append({"type": "batchnorm", "name": f"features.{i}", "eps": 1e-5})
            i += 1
        arch.append({"type": "relu"})
        i += 1
        c = v
    arch += [{"type": "adaptive_avgpool", "out": [7, 7]}, {"type": "flatten"},
             {"type": "linear", "name": "classifier.0", "in": c * 49, "out": 4096},
             {"type": "relu"}, {"type": "dropout"},
             {"type": "linear", "name": "classifier.3", "in": 4096, "out": 4096},
             {"type": "relu"}, {"type": "dropout"},
             {"type": "linear", "name": "classifier.6", "in": 4096, "out": num_classes}]
    return arch


def torchvision_vgg_name(arch, tensors):
    """'vgg19' (etc.) when the file is exactly that torchvision network, else None."""
    import torchvision.models.vgg as tvvgg
    last = [L for L in arch if L["type"] == "linear"]
    if not last or "classifier.6.bias" not in tensors:
        return None
    got = [_canonical(L) for L in arch]
    for name, (key, bn) in VGGS.items():
        if got == [_canonical(L) for L in _torchvision_vgg_arch(tvvgg.cfgs[key], bn,
                                                                 last[-1]["out"])]:
            return name
    return None


class Model:
    pass


def _torchvision():
    """torchvision, or None where it is missing (GPU images often carry torch alone) or
    DALR_PEER_NO_TORCHVISION=1: the peer then builds the network with dalr_format and
    reads the images with PIL, with the same preprocessing."""
    if os.environ.get("DALR_PEER_NO_TORCHVISION") == "1":
        return None
    try:
        import torchvision
        return torchvision
    except ImportError:
        return None


def load_model(args, device):
    """Reads the .bin, builds the module, keeps the part before the layer (on the device)."""
    import torch
    import torch.nn as nn
    torchvision = _torchvision()
    if not os.path.isfile(args.model):
        raise PeerError(f"--model {args.model}: no such file")
    try:
        tensors, arch, inp, _ = dalr_format.read_bin(args.model)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise PeerError(f"--model {args.model}: {e}")
    if inp is None:
        raise PeerError(f"--model {args.model}: no dalr.input metadata, so the preprocessing "
                        "is unknown")
    linears = [L["name"] for L in arch if L["type"] == "linear"]
    entry = next((L for L in arch if L.get("name") == args.layer), None)
    if entry is None or entry["type"] != "linear" or args.layer + ".weight" not in tensors:
        raise PeerError(f"--layer {args.layer}: not a linear layer of {args.model} "
                        f"(its linear layers: {', '.join(linears)})")
    parts = args.layer.split(".")
    if len(parts) != 2 or parts[0] != "classifier" or not parts[1].isdigit():
        raise PeerError(f"--layer {args.layer}: the peer compresses classifier.N layers only")
    index = int(parts[1])
    w = tensors[args.layer + ".weight"]
    m, n = w.shape
    if args.rank > min(m, n):
        raise PeerError(f"--rank {args.rank} exceeds min(m, n) = {min(m, n)} of {args.layer} "
                        f"({m} x {n})")

    vgg = torchvision_vgg_name(arch, tensors) if torchvision else None
    if vgg is not None:
        model = getattr(torchvision.models, vgg)(weights=None, num_classes=arch[-1]["out"])
        sd = {k: torch.from_numpy(v) for k, v in tensors.items()}
        for k in model.state_dict():
            if k.endswith("num_batches_tracked"):
                sd[k] = torch.zeros((), dtype=torch.long)
        model.load_state_dict(sd, strict=True)
        model.eval()
    else:
        model = dalr_format.module_from_arch(arch, tensors)
    if not isinstance(model.classifier[index], nn.Linear):
        raise PeerError(f"--layer {args.layer}: not a plain linear layer in the rebuilt module")
    # torchvision's VGG.forward up to the layer's input: features, avgpool, flatten,
    # classifier[:index] (dropout is the identity in eval mode).
    prefix = nn.Sequential(model.features, model.avgpool, nn.Flatten(1),
                           *list(model.classifier.children())[:index]).eval()
    if device.type == "cuda":
        prefix = prefix.to(device, memory_format=torch.channels_last)
    md = Model()
    md.prefix, md.tensors, md.arch, md.inp, md.vgg = prefix, tensors, arch, inp, vgg
    md.m, md.n = int(m), int(n)
    md.w = torch.from_numpy(w).to(device)
    b = tensors.get(args.layer + ".bias")
    md.b = torch.from_numpy(b).to(device) if b is not None else torch.zeros(m, device=device)
    md.had_bias = b is not None
    return md


# ----------------------------------------------------------------------------- data

def input_spec(inp, size):
    """(channels, resize or 0, crop [h, w], scale, mean, std) of dalr.input, --size applied."""
    c = int(inp.get("channels", 3))
    resize = int(inp.get("resize") or 0)
    crop = [int(v) for v in inp["crop"]]
    if size:
        resize, crop = (size * 256 + 112) // 224, [size, size]  # as bench_stream rounds it
    mean = [float(v) for v in inp.get("mean", [0.0] * c)]
    std = [float(v) for v in inp.get("std", [1.0] * c)]
    return c, resize, crop, float(inp.get("scale", 1.0)), mean, std


def _load_image(mode, path):
    from PIL import Image
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert(mode)


def _is_image(path):
    return path.lower().endswith(IMAGE_EXTS)


class _PilFolder:
    """torchvision's ImageFolder + Resize(bilinear) + CenterCrop + ToTensor + Normalize,
    for when torchvision is missing: the same PIL calls and the same arithmetic."""

    def __init__(self, items, mode, resize, crop, mean, std):
        self.items, self.mode, self.resize, self.crop = items, mode, resize, crop
        self.mean, self.std = mean, std

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image
        path, label = self.items[i]
        img = _load_image(self.mode, path)
        if self.resize:
            w, h = img.size
            if w <= h:
                size = (self.resize, int(self.resize * h / w))
            else:
                size = (int(self.resize * w / h), self.resize)
            img = img.resize(size, Image.BILINEAR)
        w, h = img.size
        ch, cw = self.crop
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        img = img.crop((left, top, left + cw, top + ch))
        a = np.asarray(img, dtype=np.float32) / 255.0
        a = a[:, :, None] if a.ndim == 2 else a
        a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), label


def make_dataset(args, inp):
    import torch.utils.data
    torchvision = _torchvision()
    c, resize, crop, scale, mean, std = input_spec(inp, args.size)
    f = 255.0 * scale
    if torchvision is None:
        if not os.path.isdir(args.data):
            raise PeerError(f"--data {args.data}: no such folder")
        items, _ = dalr_format.list_image_folder(args.data)
        count = len(items) if args.images == 0 else min(args.images, len(items))
        if count == 0:
            raise PeerError(f"--data {args.data}: no .jpg, .jpeg or .png image")
        ds = _PilFolder(items[:count], "L" if c == 1 else "RGB", resize, crop,
                        [v / f for v in mean], [v / f for v in std])
        return ds, [c] + crop
    import torchvision.transforms as T
    # ToTensor divides by 255; pixel*scale = (pixel/255) * (255 scale), folded into Normalize.
    steps = []
    if resize:
        steps.append(T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR))
    steps += [T.CenterCrop(crop), T.ToTensor(),
              T.Normalize([v / f for v in mean], [v / f for v in std])]
    if not os.path.isdir(args.data):
        raise PeerError(f"--data {args.data}: no such folder")
    try:
        ds = torchvision.datasets.ImageFolder(
            args.data, transform=T.Compose(steps),
            loader=functools.partial(_load_image, "L" if c == 1 else "RGB"),
            is_valid_file=_is_image)
    except FileNotFoundError as e:  # no class folder, or a class folder without images
        raise PeerError(f"--data {args.data}: {e}")
    count = len(ds) if args.images == 0 else min(args.images, len(ds))
    if count == 0:
        raise PeerError(f"--data {args.data}: no .jpg, .jpeg or .png image")
    return torch.utils.data.Subset(ds, range(count)), [c] + crop


def make_loader(args, subset, device):
    import torch.utils.data
    return torch.utils.data.DataLoader(subset, batch_size=args.batch, shuffle=False,
                                       num_workers=args.workers,
                                       pin_memory=device.type == "cuda", drop_last=False)


# ----------------------------------------------------------------------------- compute

class Runner:
    """Device, precision policy, synchronisation and the forward to the layer's input."""

    def __init__(self, args, device):
        import torch
        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"
        self.autocast_dtype = None
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            tf32 = args.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            self.autocast_dtype = {"fp16": torch.float16,
                                   "bf16": torch.bfloat16}.get(args.precision)

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def clock(self):
        self.sync()
        return time.perf_counter()

    def to_device(self, x):
        if not self.cuda:
            return x
        return x.to(self.device, non_blocking=True, memory_format=self.torch.channels_last)

    def forward(self, prefix, x):
        """The layer's input (batch x n, fp32) for a batch already on the device."""
        ctx = (self.torch.autocast("cuda", dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            a = prefix(x)
        return a.float()


def accumulate(runner, prefix, loader, n, keep=0):
    """C = sum X^T X (n x n), the count and the column sum, streamed batch by batch; and
    the first `keep` activation rows (on the host), for checking factors on real data."""
    torch = runner.torch
    c = torch.zeros(n, n, device=runner.device)
    colsum = torch.zeros(n, dtype=torch.float64, device=runner.device)
    count, kept = 0, []
    for x, _ in loader:
        a = runner.forward(prefix, runner.to_device(x))
        if a.dim() != 2 or a.shape[1] != n:
            raise PeerError(f"the forward gives {tuple(a.shape)} at the layer's input, "
                            f"expected (batch, {n})")
        c.addmm_(a.t(), a)
        colsum += a.sum(0, dtype=torch.float64)
        if count < keep:
            kept.append(a[:keep - count].float().cpu())
        count += a.shape[0]
    return c, colsum, count, (torch.cat(kept) if kept else None)


EIGH_NOTE = ("torch.linalg.eigh failed in fp32 (LAPACK ssyevd's workspace size returned as a "
             "float and rounded down, pytorch/pytorch#145801): G's eigenvectors were computed "
             "in fp64 and rounded to fp32")


def eigh_vectors(torch, g, notes):
    """Eigenvectors of symmetric g, eigenvalues ascending. Some CPU builds (torch < 2.7 with
    OpenBLAS, as Debian's 1.13) fail ssyevd's workspace query from m ~ 2900 on; a PyTorch user
    would then fall back to fp64, which is what this does (and says so in `notes`)."""
    try:
        return torch.linalg.eigh(g)[1]
    except RuntimeError as e:
        if g.device.type != "cpu" or "illegal value" not in str(e):
            raise
    if EIGH_NOTE not in notes:
        notes.append(EIGH_NOTE)
    return torch.linalg.eigh(g.double())[1].float()


def solve_dalr(torch, w, b, c, k, lambda_rel, notes):
    """dalr (DESIGN.md 1, the table): (A m x k, B k x n, bhat, lambda); fp32, no inverse."""
    n = c.shape[0]
    lam = lambda_rel * float(torch.trace(c)) / n
    creg = c.clone()
    creg.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(creg)   # first: a failure costs no more work
    del creg
    if int(info) != 0:
        raise PeerError(f"the fp32 Cholesky factorisation of C + lambda I failed at column "
                        f"{int(info)} of {n} (lambda {lam:g}): raise --lambda-rel")
    wc = w @ c                                    # W C (m x n)
    g = wc @ w.t()                                # G = W C W^T (m x m)
    vecs = eigh_vectors(torch, g, notes)          # ascending; reads the lower triangle
    u = vecs[:, -k:].flip(-1)                     # U_k, descending (m x k)
    del g, vecs
    # B^T = (C + lambda I)^-1 C W^T U_k: k right-hand sides, not m.
    bt = torch.cholesky_solve(wc.t() @ u, chol)   # n x k
    return u.contiguous(), bt.t().contiguous(), b.clone(), lam


def compressed_file(md, layer, a, bmat, bhat):
    """(tensors, arch) of the compressed model: LAYER -> LAYER.0 (no bias), LAYER.1."""
    k = bmat.shape[0]
    tensors = {}
    for name, v in md.tensors.items():
        if name == layer + ".weight":
            tensors[layer + ".0.weight"] = bmat
            tensors[layer + ".1.weight"] = a
            tensors[layer + ".1.bias"] = bhat
        elif name != layer + ".bias":
            tensors[name] = v
    arch = []
    for L in md.arch:
        if L.get("name") == layer:
            arch.append({"type": "linear", "name": layer + ".0", "in": md.n, "out": k,
                         "bias": False})
            arch.append({"type": "linear", "name": layer + ".1", "in": k, "out": md.m})
        else:
            arch.append(L)
    return tensors, arch


def file_meta(args, lam, count):
    """The metadata dalr-gpu writes into a compressed file, and which tool wrote it."""
    import torch
    return {"dalr.source": os.path.basename(args.model), "dalr.layer": args.layer,
            "dalr.method": "dalr", "dalr.rank": str(args.rank), "dalr.lambda": repr(lam),
            "dalr.samples": str(count), "dalr.acts": "stream:" + args.data,
            "dalr.tool": f"bench/peer_pytorch.py (torch {torch.__version__})"}


def write_atomic(path, tensors, arch, inp, meta):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        dalr_format.write_bin(tmp, tensors, arch, inp, meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.getsize(path)


def _numpy(t):
    return t.detach().float().cpu().numpy()


# ----------------------------------------------------------------------------- job and stages

def run_job(args, device, runner, t0, out_path, notes):
    """The end-to-end compression; t0 = the clock at the start of the job."""
    torch = runner.torch
    md = load_model(args, device)
    t1 = runner.clock()
    subset, _ = make_dataset(args, md.inp)
    keep = 64 if args.save_probes else 0
    c, colsum, count, probes = accumulate(runner, md.prefix, make_loader(args, subset, device),
                                          md.n, keep)
    t2 = runner.clock()
    a, bmat, bhat, lam = solve_dalr(torch, md.w, md.b, c, args.rank, args.lambda_rel, notes)
    del c, colsum
    t3 = runner.clock()
    factors = (_numpy(a), _numpy(bmat), _numpy(bhat))
    tensors, arch = compressed_file(md, args.layer, *factors)
    size = write_atomic(out_path, tensors, arch, md.inp, file_meta(args, lam, count))
    t4 = runner.clock()
    timing = {"load_model": t1 - t0, "statistics": t2 - t1, "solve": t3 - t2, "write": t4 - t3,
              "total": t4 - t0}
    job = {"seconds": t4 - t0, "timing": timing, "out": args.out, "lambda": lam,
           "samples": count, "write_bytes": size}
    if args.save_probes and probes is not None:  # after the clock stopped
        import numpy as np
        np.save(args.save_probes, probes.numpy().astype(np.float32))
        job["probes"] = args.save_probes
    return job, md, factors


def timed(runner, repeats, fn):
    """Seconds of fn: one warm-up, then the median of `repeats` (the upper one, as bench/)."""
    fn()
    times = []
    for _ in range(repeats):
        t = runner.clock()
        fn()
        times.append(runner.clock() - t)
    return sorted(times)[len(times) // 2]


def stage_decode(args, runner, subset, device):
    def decode():
        for _x, _ in make_loader(args, subset, device):
            pass
    return {"images": len(subset), "seconds": timed(runner, args.repeats, decode)}


def stage_h2d(args, runner, shape):
    if not runner.cuda:
        return None
    host = runner.torch.randn(args.batch, *shape).pin_memory()
    copies = 10  # per timed repeat, so that one copy's time is above the clock's noise

    def h2d():
        for _ in range(copies):
            host.to(runner.device, non_blocking=True)
    return {"bytes": host.numel() * host.element_size(),
            "seconds": timed(runner, args.repeats, h2d) / copies}


def stage_forward(args, runner, subset, md):
    first = next(iter(make_loader(args, subset, runner.device)))[0]
    x = runner.to_device(first)
    return {"images": int(x.shape[0]),
            "seconds": timed(runner, args.repeats, lambda: runner.forward(md.prefix, x))}


def stage_statistics(args, runner, count, n, gen):
    torch = runner.torch
    blk = torch.randn(args.batch, n, device=runner.device, generator=gen).abs_()
    c = torch.zeros(n, n, device=runner.device)
    colsum = torch.zeros(n, dtype=torch.float64, device=runner.device)

    def stats():
        for done in range(0, count, args.batch):
            a = blk[:min(args.batch, count - done)]
            c.addmm_(a.t(), a)
            colsum.add_(a.sum(0, dtype=torch.float64))
    return {"images": count, "n": n, "seconds": timed(runner, args.repeats, stats)}


def stage_solve(args, runner, shape, gen, notes):
    torch = runner.torch
    m, n, p = shape
    k = min(args.rank, m, n)  # as bench/run.py asks dalr-gpu's solve alone
    w = torch.randn(m, n, device=runner.device, generator=gen) / 100
    xs = torch.randn(n, p, device=runner.device, generator=gen).abs_()
    cs = xs @ xs.t()
    del xs
    bias = torch.zeros(m, device=runner.device)
    t = timed(runner, args.repeats,
              lambda: solve_dalr(torch, w, bias, cs, k, args.lambda_rel, notes))
    return {"m": m, "n": n, "p": p, "k": k, "seconds": t}


def stage_write(args, runner, md, job, factors, count, out_dir):
    if factors is None:  # random factors of the job's shapes: the write time ignores values
        g = runner.torch.Generator().manual_seed(11)
        factors = tuple(runner.torch.randn(*s, generator=g).numpy()
                        for s in ((md.m, args.rank), (args.rank, md.n), (md.m,)))
    tensors, arch = compressed_file(md, args.layer, *factors)
    meta = file_meta(args, job["lambda"] if job else 0.0, count)
    path = os.path.join(out_dir, f".peer_pytorch_write_stage.{os.getpid()}.bin")
    size = [0]

    def write():
        size[0] = write_atomic(path, tensors, arch, md.inp, meta)
    try:
        t = timed(runner, args.repeats, write)
    finally:
        if os.path.exists(path):
            os.remove(path)
    return {"bytes": size[0], "seconds": t}


def run_stages(args, device, runner, md, job, factors, out_dir, notes):
    subset, shape = make_dataset(args, md.inp)
    count = len(subset)
    gen = runner.torch.Generator(device=device)
    gen.manual_seed(7)
    st = {"decode": stage_decode(args, runner, subset, device),
          "h2d": stage_h2d(args, runner, shape),
          "forward": stage_forward(args, runner, subset, md),
          "statistics": stage_statistics(args, runner, count, md.n, gen)}
    st["solve"] = stage_solve(args, runner, args.solve_shape or (md.m, md.n, count), gen, notes)
    st["write"] = stage_write(args, runner, md, job, factors, count, out_dir)
    return st


# ----------------------------------------------------------------------------- report

def print_table(r):
    print(f"peer_pytorch: torch {r['torch']}, {r['device']}, {r['precision']}, "
          f"{r['threads']} threads; {r['layer']} ({r['m']} x {r['n']}), rank {r['rank']}, "
          f"{r['images']} images of {'x'.join(map(str, r['input']))}, batch {r['batch']}, "
          f"{r['workers']} workers")
    j = r["job"]
    if j is not None:
        t = j["timing"]
        print(f"  job {j['seconds']:9.3f} s  (load_model {t['load_model']:.3f}, statistics "
              f"{t['statistics']:.3f}, solve {t['solve']:.3f}, write {t['write']:.3f}); "
              f"{j['samples']} samples, lambda {j['lambda']:.4g}, {j['write_bytes']:,} bytes")
    s = r["stages"]
    if s is None:
        return
    print(f"  {'stage':<11}{'seconds':>11}  rate")
    d = s["decode"]
    print(f"  {'decode':<11}{d['seconds']:11.4f}  {d['images'] / d['seconds']:.1f} images/s "
          f"({d['images']} images)")
    if s["h2d"] is not None:
        h = s["h2d"]
        print(f"  {'h2d':<11}{h['seconds']:11.4f}  {h['bytes'] / h['seconds'] / 1e9:.2f} GB/s "
              f"({h['bytes']:,} bytes)")
    f = s["forward"]
    print(f"  {'forward':<11}{f['seconds']:11.4f}  {f['images'] / f['seconds']:.1f} images/s "
          f"(batch of {f['images']})")
    c = s["statistics"]
    print(f"  {'statistics':<11}{c['seconds']:11.4f}  {c['images'] / c['seconds']:.1f} images/s "
          f"({c['images']} images, n = {c['n']})")
    v = s["solve"]
    print(f"  {'solve':<11}{v['seconds']:11.4f}  m {v['m']}, n {v['n']}, p {v['p']}, k {v['k']}")
    w = s["write"]
    print(f"  {'write':<11}{w['seconds']:11.4f}  {w['bytes'] / w['seconds'] / 1e6:.1f} MB/s "
          f"({w['bytes']:,} bytes)")


def write_json(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    args = parse_args(argv)
    import tempfile
    import torch
    torchvision = _torchvision()
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise PeerError("--device cuda: torch sees no CUDA device")
    if args.device == "cpu" and args.precision != "fp32":
        raise PeerError(f"--precision {args.precision}: the CPU runs fp32 only")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runner = Runner(args, device)
    for path, what in ((args.json, "--json"), (args.out, "--out")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise PeerError(f"{what} {path}: the folder does not exist")

    with tempfile.TemporaryDirectory(prefix="peer_pytorch.") as tmpdir, torch.inference_mode():
        out_path = args.out or os.path.join(tmpdir, "compressed.bin")
        job = md = factors = None
        notes = []
        if args.mode in ("job", "both"):
            t0 = runner.clock()  # the job starts here: after the imports
            job, md, factors = run_job(args, device, runner, t0, out_path, notes)
            if runner.cuda:
                torch.cuda.empty_cache()
        if md is None:
            md = load_model(args, device)
        stages = None
        if args.mode in ("stages", "both"):
            out_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else tmpdir
            stages = run_stages(args, device, runner, md, job, factors, out_dir, notes)
        images = job["samples"] if job else stages["decode"]["images"]
        channels, _, crop = input_spec(md.inp, args.size)[:3]

    name = "cpu" if not runner.cuda else "cuda:" + torch.cuda.get_device_name(device)
    result = {"tool": "pytorch", "torch": torch.__version__,
              "torchvision": torchvision.__version__ if torchvision else None, "device": name,
              "precision": args.precision, "threads": torch.get_num_threads(),
              "layer": args.layer, "m": md.m, "n": md.n, "rank": args.rank, "images": images,
              "batch": args.batch, "workers": args.workers, "input": [channels] + crop,
              "model_builder": ("torchvision.models." + md.vgg) if md.vgg
              else "dalr_format.module_from_arch",
              "job": job, "stages": stages, "notes": notes}
    print_table(result)
    for note in notes:
        print("note: " + note)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PeerError as e:
        print(f"peer_pytorch: {e}", file=sys.stderr)
        sys.exit(1)
    except (OSError, MemoryError) as e:
        print(f"peer_pytorch: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as e:
        if "out of memory" not in str(e):
            raise
        print(f"peer_pytorch: out of memory: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
