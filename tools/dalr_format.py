"""dalr-gpu model files (`.bin`): safetensors + the `dalr.arch` / `dalr.input` metadata.

numpy only for reading and writing; torch is imported lazily by the functions that
build or inspect an ``nn.Module``. The safetensors container is read and written by
hand (the `safetensors` package is never used, even where it is installed, so that
there is one code path).

File layout: 8-byte little-endian header length N, N bytes of JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
(padded with spaces to a multiple of 8), then the tensor data (offsets relative to
the end of the header).

``dalr.arch`` (a JSON array as a string) lists the layers in order::

    {"type":"conv","name":"features.0","in":3,"out":64,"kernel":3,"stride":1,"pad":1}
    {"type":"relu"}  {"type":"maxpool","kernel":2,"stride":2}
    {"type":"avgpool","kernel":K,"stride":S}  {"type":"adaptive_avgpool","out":[7,7]}
    {"type":"batchnorm","name":...,"eps":...}  {"type":"flatten"}
    {"type":"linear","name":"classifier.0","in":25088,"out":4096}  {"type":"dropout"}

A compressed layer NAME appears as two linear entries ``NAME.0`` (k x n, no bias)
and ``NAME.1`` (m x k, with bias): ``Sequential(Linear(n, k, bias=False), Linear(k, m))``.

``dalr.input``: ``{"channels", "resize" (shorter side, bilinear), "crop": [h, w],
"scale", "mean": [...], "std": [...]}``; a pixel becomes ``(pixel*scale - mean)/std``.
"""
from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict

import numpy as np

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}

IMAGENET_INPUT = {
    "channels": 3,
    "resize": 256,
    "crop": [224, 224],
    "scale": 1.0 / 255.0,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


# ----------------------------------------------------------------------------- safetensors

def read_header(path):
    """(header: name -> {dtype, shape, data_offsets}, metadata dict, offset of the data) of
    a safetensors file, reading only its header (a model of 548 MB stays on disk)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > os.path.getsize(path):
            raise ValueError(f"{path}: header length {n} exceeds the file size")
        header = json.loads(f.read(n).decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    return header, meta, 8 + n


def read_safetensors(path):
    """Returns (OrderedDict name -> float32/int64 numpy array, metadata dict).

    F32, F16, BF16 and F64 tensors come back as float32; I64/I32/U8 keep their type."""
    header, meta, base = read_header(path)
    with open(path, "rb") as f:
        raw = f.read()
    tensors = OrderedDict()
    # keep file order (by offset) so that iteration is deterministic
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
        buf = raw[base + b: base + e]
        dt = info["dtype"]
        if dt == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif dt in _DTYPES:
            arr = np.frombuffer(buf, dtype=_DTYPES[dt])
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: tensor {name}: {arr.size} elements for shape {shape}")
        tensors[name] = np.array(arr.reshape(shape))  # own, writable copy
    return tensors, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes float32 tensors (anything else is converted to float32, int64 kept)."""
    header = {}
    blobs = []
    off = 0
    for name, arr in tensors.items():
        a = np.asarray(arr)
        shape = a.shape  # ascontiguousarray makes a 0-d array 1-d: keep scalars scalar
        if a.dtype.kind in "iu":
            a = np.ascontiguousarray(a, dtype="<i8").reshape(shape)
            dt = "I64"
        else:
            a = np.ascontiguousarray(a, dtype="<f4").reshape(shape)
            dt = "F32"
        data = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_bin(path):
    """Returns (tensors, arch list, input dict or None, metadata)."""
    tensors, meta = read_safetensors(path)
    if "dalr.arch" not in meta:
        raise ValueError(f"{path}: no dalr.arch in the metadata")
    arch = json.loads(meta["dalr.arch"])
    inp = json.loads(meta["dalr.input"]) if "dalr.input" in meta else None
    return tensors, arch, inp, meta


def write_bin(path, tensors, arch, inp=None, extra_meta=None, classes=None):
    """`classes`: the class names, one per output (dalr.classes), so that `evaluate` maps
    class folders to outputs by name."""
    meta = {"dalr.arch": json.dumps(arch, separators=(",", ":"))}
    if inp is not None:
        meta["dalr.input"] = json.dumps(inp, separators=(",", ":"))
    if classes is not None:
        meta["dalr.classes"] = classes_json(classes)
    if extra_meta:
        meta.update(extra_meta)
    check_arch(arch, tensors)
    write_safetensors(path, tensors, meta)


def classes_json(classes):
    """dalr.classes: a JSON list of distinct non-empty names."""
    names = [str(c) for c in classes]
    if not names or not all(names) or len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct and non-empty, got {names[:20]}")
    return json.dumps(names, separators=(",", ":"), ensure_ascii=False)


def read_classes_file(path):
    """Class names from a text file, one per line (blank lines ignored), or a JSON list."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return [str(c) for c in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def update_metadata(path, out, updates):
    """Copies safetensors file `path` to `out` with metadata entries `updates` added
    or replaced; the tensor bytes are copied unchanged (only the header is rewritten)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    meta = header.pop("__metadata__", None) or {}
    meta.update({str(k): str(v) for k, v in updates.items()})
    header["__metadata__"] = meta
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.write(data)
    os.replace(tmp, out)


def check_arch(arch, tensors):
    """Raises ValueError if a named layer's tensors are missing or have the wrong shape."""
    for L in arch:
        t = L["type"]
        if t == "conv":
            w = tensors.get(L["name"] + ".weight")
            exp = (L["out"], L["in"], L["kernel"], L["kernel"])
            if w is None or tuple(w.shape) != exp:
                raise ValueError(f"{L['name']}.weight: expected {exp}, got {None if w is None else w.shape}")
        elif t == "linear":
            w = tensors.get(L["name"] + ".weight")
            exp = (L["out"], L["in"])
            if w is None or tuple(w.shape) != exp:
                raise ValueError(f"{L['name']}.weight: expected {exp}, got {None if w is None else w.shape}")
        elif t == "batchnorm":
            for s in ("weight", "bias", "running_mean", "running_var"):
                if L["name"] + "." + s not in tensors:
                    raise ValueError(f"missing {L['name']}.{s}")


# ----------------------------------------------------------------------------- torch <-> arch

def _pair(v):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError(f"only square kernels/strides/padding are supported, got {v}")
        return int(v[0])
    return int(v)


def _arch_of_layer(prefix, m, out):
    import torch.nn as nn
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            raise ValueError(f"{prefix}: grouped convolutions are not supported")
        L = {"type": "conv", "name": prefix, "in": m.in_channels, "out": m.out_channels,
             "kernel": _pair(m.kernel_size), "stride": _pair(m.stride), "pad": _pair(m.padding)}
        if _pair(m.dilation) != 1:
            L["dilation"] = _pair(m.dilation)
        if m.bias is None:
            L["bias"] = False
        out.append(L)
    elif isinstance(m, nn.ReLU):
        out.append({"type": "relu"})
    elif isinstance(m, nn.MaxPool2d):
        if _pair(m.padding) != 0 or m.ceil_mode:
            raise ValueError(f"{prefix}: max pooling with padding or ceil_mode is not supported")
        out.append({"type": "maxpool", "kernel": _pair(m.kernel_size),
                    "stride": _pair(m.stride if m.stride is not None else m.kernel_size)})
    elif isinstance(m, nn.AvgPool2d):
        if _pair(m.padding) != 0 or m.ceil_mode:
            raise ValueError(f"{prefix}: average pooling with padding or ceil_mode is not supported")
        out.append({"type": "avgpool", "kernel": _pair(m.kernel_size),
                    "stride": _pair(m.stride if m.stride is not None else m.kernel_size)})
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        o = m.output_size
        o = [int(o), int(o)] if isinstance(o, int) else [int(o[0]), int(o[1])]
        out.append({"type": "adaptive_avgpool", "out": o})
    elif isinstance(m, nn.BatchNorm2d):
        out.append({"type": "batchnorm", "name": prefix, "eps": float(m.eps)})
    elif isinstance(m, nn.Flatten):
        out.append({"type": "flatten"})
    elif isinstance(m, nn.Linear):
        # "bias": false only where there is none (the first half NAME.0 of a compressed
        # pair), as the engine writes it and needs it
        out.append({"type": "linear", "name": prefix, "in": m.in_features, "out": m.out_features})
        if m.bias is None:
            out[-1]["bias"] = False
    elif isinstance(m, nn.Dropout):
        out.append({"type": "dropout"})
    elif isinstance(m, nn.Sequential):
        subs = list(m.named_children())
        if (len(subs) == 2 and all(isinstance(s, nn.Linear) for _, s in subs)
                and subs[0][1].bias is None and subs[1][1].bias is not None):
            # a compressed layer: Sequential(Linear(n, k, bias=False), Linear(k, m))
            for name, s in subs:
                _arch_of_layer(f"{prefix}.{name}", s, out)
        else:
            for name, s in subs:
                _arch_of_layer(f"{prefix}.{name}" if prefix else name, s, out)
    elif isinstance(m, nn.Identity):
        pass
    else:
        raise ValueError(f"{prefix}: unsupported module {type(m).__name__}")


def arch_from_module(model):
    """dalr.arch of a VGG-style module (children `features`, `avgpool`, `classifier`;
    torchvision's VGG flattens between avgpool and classifier)."""
    import torch.nn as nn
    arch = []
    names = dict(model.named_children())
    if "features" in names:
        _arch_of_layer("features", names["features"], arch)
        if "avgpool" in names and names["avgpool"] is not None:
            _arch_of_layer("avgpool", names["avgpool"], arch)
        cls = names.get("classifier")
        if cls is not None:
            first = next(iter(cls.children()), cls) if isinstance(cls, nn.Sequential) else cls
            if not isinstance(first, nn.Flatten):
                arch.append({"type": "flatten"})
            _arch_of_layer("classifier", cls, arch)
    else:
        _arch_of_layer("", model, arch)
    return arch


def tensors_from_module(model):
    """float32 numpy tensors of a module's state dict (num_batches_tracked dropped)."""
    out = OrderedDict()
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        out[k] = v.detach().cpu().float().numpy()
    return out


def save_module(path, model, inp=None, extra_meta=None, classes=None):
    arch = arch_from_module(model)
    write_bin(path, tensors_from_module(model), arch, inp, extra_meta, classes)
    return arch


def _module_classes():
    import torch
    import torch.nn as nn

    class DalrNet(nn.Module):
        """features -> avgpool -> flatten -> classifier, as torchvision's VGG."""

        def __init__(self, features, avgpool, classifier, flatten_in_features):
            super().__init__()
            self.features = features
            self.avgpool = avgpool
            self.classifier = classifier
            self._flatten_outside = not flatten_in_features

        def forward(self, x):
            x = self.features(x)
            x = self.avgpool(x)
            if self._flatten_outside:
                x = torch.flatten(x, 1)
            return self.classifier(x)

    return DalrNet


def _split_name(name):
    """'classifier.0' -> ('classifier', ['0']); 'classifier.0.1' -> ('classifier', ['0', '1'])."""
    parts = name.split(".")
    return parts[0], parts[1:]


def _layer_module(L, arch, tensors):
    """The nn.Module of one dalr.arch entry (tensors, if given, decide a linear's bias)."""
    import torch.nn as nn
    t = L["type"]
    name = L.get("name")
    if t == "conv":
        bias = name + ".bias" in tensors if tensors is not None else bool(L.get("bias", True))
        mod = nn.Conv2d(L["in"], L["out"], L["kernel"], stride=L.get("stride", 1), padding=L.get("pad", 0),
                        dilation=L.get("dilation", 1), bias=bias)
    elif t == "relu":
        mod = nn.ReLU(inplace=True)
    elif t == "maxpool":
        mod = nn.MaxPool2d(L["kernel"], L.get("stride", L["kernel"]))
    elif t == "avgpool":
        mod = nn.AvgPool2d(L["kernel"], L.get("stride", L["kernel"]))
    elif t == "adaptive_avgpool":
        mod = nn.AdaptiveAvgPool2d(tuple(L["out"]))
    elif t == "batchnorm":
        c = None
        if tensors is not None:
            c = tensors[name + ".weight"].shape[0]
        else:
            c = _channels_before(arch, L)
        mod = nn.BatchNorm2d(c, eps=L.get("eps", 1e-5))
    elif t == "linear":
        parts = name.split(".")
        if tensors is not None:
            bias = name + ".bias" in tensors
        elif "bias" in L:
            bias = bool(L["bias"])
        else:  # the first half of a compressed pair (features.N.0 or, in a Sequential, N.0)
            bias = not (parts[-1] == "0" and len(parts) == (2 if parts[0].isdigit() else 3))
        mod = nn.Linear(L["in"], L["out"], bias=bias)
    elif t == "dropout":
        mod = nn.Dropout()
    else:
        raise ValueError(f"unsupported layer type {t!r} in dalr.arch")
    return mod


def _is_plain_sequential(arch):
    """True when the layers are named by position ("0", "3", "5.0"): the arch of an
    nn.Sequential, as arch_from_module (save_module) writes it."""
    names = [L["name"] for L in arch if L.get("name")]
    return bool(names) and all(n.split(".")[0].isdigit() for n in names)


def _sequential_from_arch(arch, tensors):
    """An nn.Sequential whose indices are the layers' names; unnamed layers (relu, pool,
    flatten, dropout) take the next index, as in the Sequential that was saved."""
    import torch.nn as nn
    mods, pairs, last = {}, {}, -1
    for L in arch:
        name, mod = L.get("name"), _layer_module(L, arch, tensors) if L["type"] != "flatten" \
            else nn.Flatten()
        if name is None:
            idx = last + 1
        else:
            parts = name.split(".")
            idx = int(parts[0])
            if len(parts) == 2 and L["type"] in ("linear", "conv"):  # a compressed pair N.0, N.1
                pairs.setdefault(idx, {})[int(parts[1])] = mod
                if len(pairs[idx]) < 2:
                    last = idx
                    continue
                mod = nn.Sequential(pairs[idx][0], pairs.pop(idx)[1])
            elif len(parts) != 1:
                raise ValueError(f"unsupported layer name {name}")
        if idx in mods:
            raise ValueError(f"layer {idx} defined twice in dalr.arch")
        mods[idx] = mod
        last = idx
    if pairs:
        raise ValueError(f"incomplete compressed layers: {sorted(pairs)}")
    return nn.Sequential(*[mods.get(i, nn.Identity()) for i in range(max(mods) + 1)])


def module_from_arch(arch, tensors=None):
    """Rebuilds an nn.Module from dalr.arch (and loads `tensors` if given).

    Named layers keep their torchvision index (so that state-dict keys match);
    unnamed ones (relu, pool, dropout, flatten) take the next free index of their
    section. A compressed layer `classifier.0.0`/`classifier.0.1` becomes
    `classifier[0] = Sequential(Linear(n, k, bias=False), Linear(k, m))`, and a compressed
    conv `features.3.0`/`features.3.1` `features[3] = Sequential(Conv2d(c, k, kernel,
    bias=False), Conv2d(k, c_out, 1))`."""
    import torch
    import torch.nn as nn

    if _is_plain_sequential(arch):
        model = _sequential_from_arch(arch, tensors)
        return _load_tensors(model, tensors)
    sections = {"features": OrderedDict(), "avgpool": None, "classifier": OrderedDict()}
    section = "features"
    flatten_in_features = False
    seen_flatten = False
    prev_named_idx = {"features": -1, "classifier": -1}

    def put(sec, idx, mod):
        d = sections[sec]
        if idx in d:
            raise ValueError(f"{sec}.{idx} defined twice in dalr.arch")
        d[idx] = mod
        prev_named_idx[sec] = max(prev_named_idx[sec], idx)

    def next_idx(sec):
        return prev_named_idx[sec] + 1

    pending_lowrank = {}
    for L in arch:
        t = L["type"]
        name = L.get("name")
        if name is not None:
            sec, rest = _split_name(name)
            if sec not in ("features", "classifier"):
                raise ValueError(f"layer name {name}: expected features.N or classifier.N")
            section = sec
        if t == "flatten":
            seen_flatten = True
            section = "classifier"
            continue
        if t in ("adaptive_avgpool", "avgpool") and section == "features" and sections["avgpool"] is None \
                and name is None and _is_last_spatial(arch, L):
            sections["avgpool"] = (nn.AdaptiveAvgPool2d(tuple(L["out"])) if t == "adaptive_avgpool"
                                   else nn.AvgPool2d(L["kernel"], L["stride"]))
            continue
        mod = _layer_module(L, arch, tensors)
        if name is None:
            put(section, next_idx(section), mod)
            continue
        sec, rest = _split_name(name)
        if len(rest) == 1:
            put(sec, int(rest[0]), mod)
        elif len(rest) == 2 and t in ("linear", "conv"):
            idx, sub = int(rest[0]), int(rest[1])
            pending_lowrank.setdefault((sec, idx), {})[sub] = mod
            if len(pending_lowrank[(sec, idx)]) == 2:
                parts = pending_lowrank.pop((sec, idx))
                put(sec, idx, nn.Sequential(parts[0], parts[1]))
        else:
            raise ValueError(f"unsupported layer name {name}")
    if pending_lowrank:
        raise ValueError(f"incomplete compressed layers: {list(pending_lowrank)}")

    def seq(d):
        if not d:
            return nn.Sequential()
        n = max(d) + 1
        mods = [d.get(i, nn.Identity()) for i in range(n)]
        return nn.Sequential(*mods)

    del flatten_in_features, seen_flatten
    avg = sections["avgpool"] if sections["avgpool"] is not None else nn.Identity()
    DalrNet = _module_classes()
    model = DalrNet(seq(sections["features"]), avg, seq(sections["classifier"]), flatten_in_features=False)
    return _load_tensors(model, tensors)


def _load_tensors(model, tensors):
    """Loads numpy `tensors` into `model` (all of them, and all it has); eval mode."""
    import torch
    if tensors is not None:
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"tensors do not match dalr.arch: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model


def _is_last_spatial(arch, L):
    """True if L is the last spatial layer before the flatten (torchvision's `avgpool` slot)."""
    i = next(j for j, x in enumerate(arch) if x is L)
    for x in arch[i + 1:]:
        if x["type"] == "flatten":
            return True
        if x["type"] in ("conv", "maxpool", "avgpool", "adaptive_avgpool", "batchnorm"):
            return False
        if x["type"] == "linear":
            return True
    return True


def _channels_before(arch, L):
    c = None
    for x in arch:
        if x is L:
            return c
        if x["type"] == "conv":
            c = x["out"]
    raise ValueError("batchnorm before any convolution")


def module_from_bin(path):
    """(nn.Module in eval mode, dalr.input dict or None) from a `.bin` file."""
    tensors, arch, inp, _ = read_bin(path)
    return module_from_arch(arch, tensors), inp


def _torch_save_atomic(obj, path):
    """torch.save to PATH.tmp.<pid>, then rename: a failure never leaves a broken PATH."""
    import torch
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_torch(path, bin_path):
    """A `.bin` as a torch.save file that plain torch.load reads (no pickled classes, so
    no dalr_format needed to unpickle it): {"format": "dalr-gpu", "arch": dalr.arch list,
    "input": dalr.input dict or None, "classes": list or None, "state_dict": tensors}.
    Rebuild the module with module_from_torch(path). Written atomically."""
    import torch
    tensors, arch, inp, meta = read_bin(bin_path)
    _torch_save_atomic({"format": "dalr-gpu", "arch": arch, "input": inp,
                        "classes": model_classes(meta),
                        "state_dict": {k: torch.from_numpy(np.ascontiguousarray(v))
                                       for k, v in tensors.items()}}, path)


def module_from_torch(path):
    """(nn.Module in eval mode, dalr.input dict or None) from a file save_torch wrote."""
    import torch
    d = torch.load(path, map_location="cpu")
    if not isinstance(d, dict) or d.get("format") != "dalr-gpu":
        raise ValueError(f"{path}: not a file written by bin_to_torch.py --save")
    tensors = {k: v.numpy() for k, v in d["state_dict"].items()}
    return module_from_arch(d["arch"], tensors), d.get("input")


def fc_layers(arch):
    """[(name, in, out, params)] of the linear layers (a compressed pair counts as two)."""
    out = []
    for L in arch:
        if L["type"] == "linear":
            nobias = len(L["name"].split(".")) == 3 and L["name"].endswith(".0")
            out.append((L["name"], L["in"], L["out"], L["in"] * L["out"] + (0 if nobias else L["out"])))
    return out


# ----------------------------------------------------------------------------- preprocessing
# The engine's rules (src/io/images.cpp, src/io/class_map.cpp), copied so that the tools
# score an image folder as `dalr-gpu evaluate` does, image by image
# (tests/tools/test_eval_agreement.py checks it).

def _pixels(img):
    """8-bit interleaved (h, w, sc) pixels, sc = 1 (grey) or 3 (colour), as the engine's
    PNG decoder gives them: palettes expanded to RGB, alpha dropped, 16-bit samples scaled
    to 8 bits as libpng's png_set_scale_16."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.int64)
        a = ((np.clip(a, 0, 65535) * 255 + 32895) >> 16).astype(np.uint8)
        return a[:, :, None]
    if mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _taps(in_size, out_size, out_first, n):
    """PIL's bilinear (a triangle filter widened when shrinking), for output pixels
    out_first .. out_first + n - 1: (first input pixel, count, float64 weights [n, stride]);
    the engine's bilinear_taps, in the same float64 arithmetic."""
    import math
    scale = float(in_size) / float(out_size)
    support = max(scale, 1.0)
    stride = int(math.ceil(support)) * 2 + 1
    first = np.zeros(n, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    weights = np.zeros((n, stride), dtype=np.float64)
    for i in range(n):
        center = (float(out_first + i) + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        w = [0.0] * (hi - lo)
        total = 0.0
        for x in range(lo, hi):
            d = abs((float(x) - center + 0.5) / support)
            w[x - lo] = 1.0 - d if d < 1.0 else 0.0
            total += w[x - lo]
        for k in range(hi - lo):
            weights[i, k] = w[k] / total if total > 0 else 0.0
        first[i], count[i] = lo, hi - lo
    return first, count, weights


def resized_size(w, h, target):
    """(width, height) with the shorter side `target`, the longer one truncated (the
    engine and torchvision's Resize); `target` falsy: unchanged."""
    if not target or target <= 0:
        return w, h
    if w <= h:
        return int(target), int(float(target) * h / w)
    return int(float(target) * w / h), int(target)


def preprocess_image(img, inp):
    """PIL image -> float32 array (C, H, W) as dalr.input prescribes and as the engine
    computes it (src/io/images.cpp), bit for bit for 8-bit PNGs: resize the shorter side
    to `resize` (PIL's bilinear in float, without rounding to 8 bits; the longer side
    truncated), centre crop (round half to even), grey replicated to 3 channels or colour
    to ITU-R 601 luma after the resize, then (pixel*scale - mean)/std.

    JPEGs agree only approximately: the engine lets libjpeg decode them at a reduced
    (DCT-scaled) size and convert them to grey itself."""
    c = int(inp.get("channels", 3))
    px = _pixels(img)
    h, w, sc = px.shape
    ow, oh = resized_size(w, h, inp.get("resize"))
    ch, cw = [int(v) for v in inp.get("crop", [oh, ow])]
    if ow < cw or oh < ch:
        raise ValueError(f"image is {w}x{h} ({ow}x{oh} after resize), smaller than the {cw}x{ch} crop")
    x0 = int(round((ow - cw) / 2.0))
    y0 = int(round((oh - ch) / 2.0))
    fx, nx, wx = _taps(w, ow, x0, cw)
    fy, ny, wy = _taps(h, oh, y0, ch)
    row_lo, row_hi = int(fy[0]), int(fy[-1] + ny[-1])
    # Horizontal pass over the rows the vertical pass reads, float32 sums in tap order.
    src = px[row_lo:row_hi].astype(np.float32)             # (rows, w, sc)
    wx32 = wx.astype(np.float32)
    tmp = np.zeros((row_hi - row_lo, cw, sc), dtype=np.float32)
    for k in range(wx.shape[1]):
        on = k < nx
        if not on.any():
            break
        idx = np.minimum(fx + k, w - 1)
        wk = np.where(on, wx32[:, k], np.float32(0))[None, :, None]
        tmp += wk * src[:, idx, :]
    # Vertical pass.
    planes = np.zeros((sc, ch, cw), dtype=np.float32)
    tmp = tmp.transpose(2, 0, 1)                            # (sc, rows, cw)
    for y in range(ch):
        for k in range(int(ny[y])):
            planes[:, y, :] += np.float32(wy[y, k]) * tmp[:, int(fy[y]) + k - row_lo, :]
    if sc == c:
        v = planes.astype(np.float64)
    elif sc == 1:
        v = np.repeat(planes.astype(np.float64), c, axis=0)
    else:
        p = planes.astype(np.float64)
        v = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])[None]
    mean = np.asarray(inp.get("mean") or [0.0] * c, dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(inp.get("std") or [1.0] * c, dtype=np.float64).reshape(-1, 1, 1)
    return ((v * float(inp.get("scale", 1.0)) - mean) * (1.0 / std)).astype(np.float32)


IMAGE_EXTS = (".jpg", ".jpeg", ".png")  # the engine's; any case


def model_classes(meta):
    """The class names of a model's metadata (dalr.classes), or None."""
    if "dalr.classes" not in meta:
        return None
    names = json.loads(meta["dalr.classes"])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) \
            or len(set(names)) != len(names):
        raise ValueError("dalr.classes must be a JSON list of distinct non-empty strings")
    return names


def list_image_folder(root, classes=None, outputs=None):
    """([(path, label)], names) of an image folder root/<class>/<file>, by the engine's
    rule: class folders and files sorted by name as strings (so "10" comes before "2");
    .jpg/.jpeg/.png in any case. With `classes` (the model's dalr.classes) a folder's
    label is its name's index there, and a folder that is not a class is an error; without,
    folder i is label i, and more folders than `outputs` is an error. `names` are the
    labels' names (the classes, or the folders)."""
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        raise ValueError(f"image folder {root} has no class subfolders (expected DIR/CLASS/IMAGE)")
    if classes:
        index = {c: i for i, c in enumerate(classes)}
        for f in folders:
            if f not in index:
                raise ValueError(f"{root}: class folder '{f}' is not one of the model's classes")
        labels, names = [index[f] for f in folders], list(classes)
    else:
        if outputs is not None and len(folders) > outputs:
            raise ValueError(f"{root} has {len(folders)} class folders but the model has only "
                             f"{outputs} outputs")
        labels, names = list(range(len(folders))), folders
    items = []
    for f, label in zip(folders, labels):
        d = os.path.join(root, f)
        for fn in sorted(os.listdir(d)):
            if fn.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(d, fn)):
                items.append((os.path.join(d, fn), label))
    return items, names
