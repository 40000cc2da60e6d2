#!/usr/bin/python3
"""A Caffe `.caffemodel` + `.prototxt` (VGG-style or LeNet-style chain) -> dalr-gpu `.bin`.

No Caffe and no protobuf package: the caffemodel's protobuf wire format and the
prototxt text format are decoded by hand. The architecture comes from the prototxt,
the weights from the caffemodel (matched by layer name; new `layer` and V1 `layers`
both work). Layers are renamed as torchvision names them: features.N before the first
InnerProduct, classifier.N from it on (N counts every module, relu/pool/dropout included).

Supported layers: Convolution, ReLU, Pooling (MAX/AVE, no padding), InnerProduct,
Dropout, Flatten; Input/Data/Softmax/Accuracy/loss layers are skipped.

Input transform: Caffe computes (pixel - mean_value) * scale; dalr.input stores
(pixel*scale - mean)/std, so mean = mean_value*scale and std = 1. Scale and mean come
from the prototxt's transform_param if present, else from --scale/--mean. A 3-channel
Caffe model expects BGR; the first convolution's input channels are reversed so that
the `.bin` takes RGB like every other dalr-gpu model (--keep-bgr to leave it).

    /usr/bin/python3 tools/caffe_to_bin.py lenet.prototxt lenet_iter_10000.caffemodel lenet.bin --scale 0.00390625
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dalr_format  # noqa: E402


# ----------------------------------------------------------------------------- protobuf wire format

def _varint(buf, i):
    r = 0
    shift = 0
    while True:
        b = buf[i]
        i += 1
        r |= (b & 0x7F) << shift
        if b < 0x80:
            return r, i
        shift += 7


def pb_fields(buf):
    """[(field number, wire type, value)]: value is an int (varint, fixed32/64 as raw
    bytes) or a memoryview (length-delimited)."""
    out = []
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v = buf[i:i + 8]
            i += 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            v = buf[i:i + ln]
            i += ln
        elif wt == 5:
            v = buf[i:i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt} (field {f})")
        out.append((f, wt, v))
    return out


def _packed_varints(v):
    r = []
    i = 0
    while i < len(v):
        x, i = _varint(v, i)
        r.append(x)
    return r


def decode_blob(buf):
    """BlobProto -> float32 array: data = 5 (packed or not), double_data = 8,
    shape = 7 (BlobShape dim = 1), legacy num/channels/height/width = 1..4."""
    data = []
    ddata = []
    shape = None
    legacy = {}
    for f, wt, v in pb_fields(buf):
        if f == 5:
            data.append(np.frombuffer(bytes(v), dtype="<f4") if wt == 2 else np.frombuffer(bytes(v), dtype="<f4"))
        elif f == 8:
            ddata.append(np.frombuffer(bytes(v), dtype="<f8"))
        elif f == 7:
            dims = []
            for f2, wt2, v2 in pb_fields(v):
                if f2 == 1:
                    dims.extend(_packed_varints(v2) if wt2 == 2 else [v2])
            shape = dims
        elif f in (1, 2, 3, 4) and wt == 0:
            legacy[f] = v
    arr = np.concatenate(data) if data else (np.concatenate(ddata).astype(np.float32) if ddata else
                                             np.zeros(0, np.float32))
    if shape is None:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    if int(np.prod(shape)) != arr.size:
        raise ValueError(f"blob with shape {shape} holds {arr.size} values")
    return arr.reshape(shape).astype(np.float32)


V1_TYPES = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 6: "Dropout", 8: "Flatten",
            20: "Softmax", 21: "SoftmaxWithLoss", 5: "Data", 1: "Accuracy", 15: "LRN", 22: "Split",
            12: "ImageData", 29: "MemoryData", 9: "HDF5Data", 3: "Concat", 19: "Sigmoid", 23: "TanH"}


def read_caffemodel(path):
    """{layer name: (type, [blobs])} from a NetParameter (field 100 `layer`, or V1 field 2 `layers`)."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    layers = {}
    for f, wt, v in pb_fields(buf):
        if f == 100 and wt == 2:  # LayerParameter: name 1, type 2, blobs 7
            name, typ, blobs = None, None, []
            for f2, wt2, v2 in pb_fields(v):
                if f2 == 1:
                    name = bytes(v2).decode()
                elif f2 == 2:
                    typ = bytes(v2).decode()
                elif f2 == 7:
                    blobs.append(decode_blob(v2))
            layers[name] = (typ, blobs)
        elif f == 2 and wt == 2:  # V1LayerParameter: name 4, type 5 (enum), blobs 6
            name, typ, blobs = None, None, []
            for f2, wt2, v2 in pb_fields(v):
                if f2 == 4:
                    name = bytes(v2).decode()
                elif f2 == 5:
                    typ = V1_TYPES.get(v2, f"V1:{v2}")
                elif f2 == 6:
                    blobs.append(decode_blob(v2))
            layers[name] = (typ, blobs)
    return layers


# ----------------------------------------------------------------------------- prototxt text format

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?\s*)*(?:("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}:<>\[\],])|([^\s{}:<>\[\],#"\']+))')


def _tokens(text):
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "" or text[pos:].lstrip().startswith("#"):
                return
            raise ValueError(f"prototxt: cannot parse at {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.group(1):
            yield ("str", m.group(1)[1:-1])
        elif m.group(2):
            yield ("sym", m.group(2))
        elif m.group(3):
            yield ("word", m.group(3))


def parse_prototxt(text):
    """Text format -> dict: every key maps to a list of values (str, number, or dict)."""
    toks = list(_tokens(text))
    pos = 0

    def value(tok):
        kind, s = tok
        if kind == "str":
            return s
        try:
            return int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                return s  # enum or identifier

    def message(end):
        nonlocal pos
        msg = {}
        while pos < len(toks):
            kind, s = toks[pos]
            if kind == "sym" and s == end:
                pos += 1
                return msg
            if kind != "word":
                raise ValueError(f"prototxt: expected a field name, got {s!r}")
            key = s
            pos += 1
            if toks[pos] == ("sym", ":"):
                pos += 1
            if toks[pos][0] == "sym" and toks[pos][1] in "{<":
                close = "}" if toks[pos][1] == "{" else ">"
                pos += 1
                msg.setdefault(key, []).append(message(close))
            elif toks[pos] == ("sym", "["):
                pos += 1
                while toks[pos] != ("sym", "]"):
                    if toks[pos] != ("sym", ","):
                        msg.setdefault(key, []).append(value(toks[pos]))
                    pos += 1
                pos += 1
            else:
                msg.setdefault(key, []).append(value(toks[pos]))
                pos += 1
            if pos < len(toks) and toks[pos] in (("sym", ","), ("sym", ";")):
                pos += 1
        if end is not None:
            raise ValueError("prototxt: unexpected end of file")
        return msg

    return message(None)


def _get(msg, key, default=None):
    v = msg.get(key) if msg else None
    return v[0] if v else default


def _getint(msg, key, default):
    v = msg.get(key) if msg else None
    if not v:
        return default
    return int(v[0])


V1_PROTOTXT_TYPES = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "POOLING": "Pooling",
                     "RELU": "ReLU", "DROPOUT": "Dropout", "FLATTEN": "Flatten", "SOFTMAX": "Softmax",
                     "SOFTMAX_LOSS": "SoftmaxWithLoss", "DATA": "Data", "ACCURACY": "Accuracy",
                     "LRN": "LRN", "SPLIT": "Split", "IMAGE_DATA": "ImageData", "MEMORY_DATA": "MemoryData"}
SKIP = {"Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "Softmax", "SoftmaxWithLoss",
        "Accuracy", "Split", "Silence", "EuclideanLoss", "SigmoidCrossEntropyLoss"}


def convert(proto, model_layers, args):
    layers = proto.get("layer") or proto.get("layers") or []
    # input shape and transform
    shape = None
    if "input_shape" in proto:
        shape = [int(d) for d in proto["input_shape"][0].get("dim", [])]
    elif "input_dim" in proto:
        shape = [int(d) for d in proto["input_dim"]]
    scale, mean = None, None
    for L in layers:
        if L.get("include") and any(_get(inc, "phase") == "TRAIN" for inc in L["include"]):
            continue
        t = V1_PROTOTXT_TYPES.get(_get(L, "type"), _get(L, "type"))
        if t == "Input" and "input_param" in L:
            shape = [int(d) for d in _get(_get(L, "input_param"), "shape").get("dim", [])]
        tp = _get(L, "transform_param")
        if tp:
            if "scale" in tp:
                scale = float(tp["scale"][0])
            if "mean_value" in tp:
                mean = [float(m) for m in tp["mean_value"]]
            if "crop_size" in tp and shape is None:
                cs = int(tp["crop_size"][0])
                shape = [1, None, cs, cs]
    if args.input:
        shape = [1] + [int(s) for s in args.input.split(",")]
    if args.scale is not None:
        scale = args.scale
    if args.mean is not None:
        mean = [float(m) for m in args.mean.split(",")]
    if shape is None or len(shape) != 4 or None in shape:
        sys.exit("input shape unknown: give --input C,H,W")
    C, H, W = shape[1:]
    scale = 1.0 if scale is None else scale
    mean = mean or [0.0] * C
    if len(mean) == 1 and C > 1:
        mean = mean * C

    arch, tensors = [], {}
    section, idx = "features", 0
    c, h, w = C, H, W
    flat = None
    first_conv = True
    bgr = C == 3 and not args.keep_bgr
    for L in layers:
        if L.get("include") and any(_get(inc, "phase") == "TRAIN" for inc in L["include"]):
            continue
        name = _get(L, "name")
        t = V1_PROTOTXT_TYPES.get(_get(L, "type"), _get(L, "type"))
        if t in SKIP or t.endswith("Loss"):
            continue
        if t == "Convolution":
            p = _get(L, "convolution_param", {}) or _get(L, "convolution_param")
            out = int(_get(p, "num_output"))
            k = _getint(p, "kernel_size", None) or _getint(p, "kernel_h", None)
            if _getint(p, "kernel_w", k) != k or _getint(p, "group", 1) != 1 or _getint(p, "dilation", 1) != 1:
                sys.exit(f"{name}: only square, ungrouped, undilated convolutions are supported")
            s, pad = _getint(p, "stride", 1), _getint(p, "pad", 0)
            blobs = model_layers[name][1]
            wgt = blobs[0].reshape(out, c, k, k)
            bias = blobs[1].reshape(out) if len(blobs) > 1 else np.zeros(out, np.float32)
            if first_conv and bgr:
                wgt = wgt[:, ::-1].copy()
            first_conv = False
            lname = f"{section}.{idx}"
            arch.append({"type": "conv", "name": lname, "in": c, "out": out, "kernel": k, "stride": s, "pad": pad})
            tensors[lname + ".weight"] = wgt
            tensors[lname + ".bias"] = bias
            c, h, w = out, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            idx += 1
        elif t == "Pooling":
            p = _get(L, "pooling_param", {})
            pool = str(_get(p, "pool", "MAX"))
            if _getint(p, "pad", 0) != 0:
                sys.exit(f"{name}: padded pooling is not supported")
            if _get(p, "global_pooling", "false") in (True, "true"):
                k, s = h, 1
            else:
                k = _getint(p, "kernel_size", None) or _getint(p, "kernel_h", None)
                s = _getint(p, "stride", 1)
            # Caffe rounds the output size up, PyTorch (ceil_mode=False) down
            if (h - k) % s or (w - k) % s:
                sys.exit(f"{name}: {h}x{w} input, kernel {k}, stride {s}: Caffe's ceil rounding differs "
                         "from floor rounding here; not supported")
            arch.append({"type": "maxpool" if pool in ("MAX", "0") else "avgpool", "kernel": k, "stride": s})
            h, w = (h - k) // s + 1, (w - k) // s + 1
            idx += 1
        elif t == "ReLU":
            arch.append({"type": "relu"})
            idx += 1
        elif t == "Dropout":
            arch.append({"type": "dropout"})
            idx += 1
        elif t == "Flatten":
            if section == "features":
                arch.append({"type": "flatten"})
                section, idx = "classifier", 0
                flat = c * h * w
        elif t == "InnerProduct":
            p = _get(L, "inner_product_param", {})
            if _get(p, "transpose", "false") in (True, "true"):
                sys.exit(f"{name}: transposed InnerProduct is not supported")
            if section == "features":
                arch.append({"type": "flatten"})
                section, idx = "classifier", 0
                flat = c * h * w
            out = int(_get(p, "num_output"))
            blobs = model_layers[name][1]
            wgt = blobs[0].reshape(out, -1)
            if wgt.shape[1] != flat:
                sys.exit(f"{name}: weight {wgt.shape} does not take the {flat} inputs that reach it")
            bias = blobs[1].reshape(out) if len(blobs) > 1 else np.zeros(out, np.float32)
            lname = f"{section}.{idx}"
            arch.append({"type": "linear", "name": lname, "in": flat, "out": out})
            tensors[lname + ".weight"] = wgt
            tensors[lname + ".bias"] = bias
            flat = out
            idx += 1
        else:
            sys.exit(f"{name}: layer type {t} is not supported")
        if t in ("Convolution", "InnerProduct"):
            print(f"  {name:>10} -> {arch[-1]['name']}: {tuple(tensors[arch[-1]['name'] + '.weight'].shape)}")
    if bgr:
        mean = mean[::-1]
    side = min(H, W)
    inp = {"channels": C, "resize": int(args.resize or side), "crop": [H, W], "scale": scale,
           "mean": [m * scale for m in mean], "std": [1.0] * C}
    return arch, tensors, inp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prototxt")
    ap.add_argument("caffemodel")
    ap.add_argument("output", help="the .bin to write")
    ap.add_argument("--input", metavar="C,H,W", help="input shape (default: from the prototxt)")
    ap.add_argument("--scale", type=float, help="pixel scale (default: transform_param.scale, else 1)")
    ap.add_argument("--mean", metavar="M[,M,M]", help="Caffe mean_value, in the model's channel order "
                    "(BGR for 3-channel Caffe models; default: transform_param.mean_value, else 0)")
    ap.add_argument("--resize", type=int, help="shorter side before the centre crop (default: the crop; "
                    "256 is usual for a 224 VGG)")
    ap.add_argument("--keep-bgr", action="store_true", help="do not reverse a 3-channel model to RGB")
    ap.add_argument("--classes", metavar="FILE",
                    help="class names, one per line in output order (or a JSON list): written as "
                         "dalr.classes, so that `evaluate` maps class folders by name")
    args = ap.parse_args()

    with open(args.prototxt) as f:
        proto = parse_prototxt(f.read())
    model_layers = read_caffemodel(args.caffemodel)
    arch, tensors, inp = convert(proto, model_layers, args)
    classes = dalr_format.read_classes_file(args.classes) if args.classes else None
    outputs = next(L["out"] for L in reversed(arch) if L["type"] == "linear")
    if classes is not None and len(classes) != outputs:
        sys.exit(f"--classes {args.classes}: {len(classes)} names for {outputs} outputs")
    dalr_format.write_bin(args.output, tensors, arch, inp,
                          {"dalr.source": f"caffe: {os.path.basename(args.caffemodel)}"}, classes)
    n = sum(t.size for t in tensors.values())
    print(f"{args.output}: {len(arch)} layers, {n:,} parameters; dalr.input {json.dumps(inp)}")


if __name__ == "__main__":
    main()
