#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus: a few tiny valid (and near-valid) files per format,
built by hand from the format specifications. Run from anywhere; rewrites
fuzz/corpus/<target>/. Needs only the Python standard library."""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f64(*v):
    return struct.pack("<%dd" % len(v), *v)


def npy(descr, shape, raw, fortran=False, version=1):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, fortran, "(%s)" % "".join("%d," % s for s in shape))
    pre = 10 if version == 1 else 12
    d += " " * ((64 - (pre + len(d) + 1) % 64) % 64) + "\n"
    size = struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([version, 0]) + size + d.encode() + raw


def png(w, h, color_type, depth, rows, interlace=0, extra=b""):
    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg_header(w, h, comps):
    """Baseline JPEG up to its scan, with standard-less tables (libjpeg-turbo supplies
    the default Huffman tables) and a short, all-zero entropy-coded segment."""
    s = b"\xff\xd8" + b"\xff\xdb\x00\x43\x00" + bytes(range(1, 65))
    s += b"\xff\xc0" + struct.pack(">HBHHB", 8 + 3 * comps, 8, h, w, comps)
    for c in range(comps):
        s += bytes([c + 1, 0x11, 0])
    s += b"\xff\xda" + struct.pack(">HB", 6 + 2 * comps, comps)
    for c in range(comps):
        s += bytes([c + 1, 0])
    s += b"\x00\x3f\x00" + b"\x00" * 32 + b"\xff\xd9"
    return s


def main():
    # safetensors
    put("safetensors", "two_tensors", safetensors(
        [("fc.weight", "F32", [2, 3], f32(1, -2, 3, 0.5, 0, 7)), ("fc.bias", "F32", [2], f32(1, 2))],
        {"format": "pt"}))
    put("safetensors", "halves", safetensors(
        [("a", "F16", [2], b"\x00\x3c\x00\xc0"), ("b", "BF16", [1, 1], b"\x80\x3f"),
         ("c", "F64", [], f64(3.25)), ("e", "F32", [0, 4], b"")]))
    put("safetensors", "empty", safetensors([]))
    # statistics: what LayerStats::save writes
    stats_meta = {"dalr.kind": "stats", "dalr.count": "10", "dalr.precision": "fp64"}
    put("stats", "with_outputs", safetensors(
        [("gram", "F64", [2, 2], f64(2, 1, 1, 3)), ("sum_x", "F64", [2], f64(1, -1)),
         ("max_x", "F64", [2], f64(2, 1)), ("sum_y", "F64", [3], f64(0, 1, 2)),
         ("max_y", "F64", [3], f64(1, 1, 2))], stats_meta))
    put("stats", "fp32_gram", safetensors(
        [("gram", "F32", [1, 1], f32(4)), ("sum_x", "F64", [1], f64(2)),
         ("max_x", "F64", [1], f64(2))], dict(stats_meta, **{"dalr.count": "600"})))
    # .npy
    put("npy", "f4_2x3", npy("<f4", [2, 3], f32(1, 2, 3, 4, 5, 6)))
    put("npy", "f8_fortran", npy("<f8", [3, 2], f64(1, 2, 3, 4, 5, 6), fortran=True))
    put("npy", "f2_v2", npy("<f2", [4], b"\x00\x3c" * 4, version=2))
    put("npy", "f4_3d", npy("<f4", [2, 1, 2], f32(0, 1, 2, 3), version=3))
    # dalr.arch NUL dalr.input
    mlp = [{"type": "flatten"}, {"type": "linear", "name": "fc1", "in": 12, "out": 5},
           {"type": "relu"}, {"type": "dropout"},
           {"type": "linear", "name": "fc2", "in": 5, "out": 3, "bias": False}]
    cnn = [{"type": "conv", "name": "c1", "in": 3, "out": 4, "kernel": 3, "pad": 1},
           {"type": "batchnorm", "name": "bn1"}, {"type": "relu"},
           {"type": "maxpool", "kernel": 2}, {"type": "avgpool", "kernel": 2, "stride": 1},
           {"type": "adaptive_avgpool", "out": [2, 2]}, {"type": "flatten"},
           {"type": "linear", "name": "fc", "in": 16, "out": 10}]
    put("arch", "mlp", json.dumps(mlp) + "\0" + json.dumps({"channels": 3, "crop": [2, 2]}))
    put("arch", "cnn", json.dumps(cnn) + "\0" + json.dumps(
        {"channels": 3, "resize": 36, "crop": [32, 32], "scale": 0.00392156862745098,
         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    put("arch", "grey", json.dumps(mlp[:1] + [{"type": "linear", "name": "l", "in": 4,
                                               "out": 2}]) +
        "\0" + json.dumps({"channels": 1, "crop": [2, 2]}))
    # PNG: RGB, grey, palette, 16-bit, grey + alpha, interlaced
    put("png", "rgb_3x2", png(3, 2, 2, 8, [bytes(range(9)), bytes(range(9, 18))]))
    put("png", "grey_2x2", png(2, 2, 0, 8, [b"\x00\xff", b"\x80\x40"]))
    put("png", "palette_2x1", png(2, 1, 3, 8, [b"\x00\x01"],
                                  extra=struct.pack(">I", 6) + b"PLTE" + bytes(6) +
                                  struct.pack(">I", zlib.crc32(b"PLTE" + bytes(6)))))
    put("png", "rgb16_1x1", png(1, 1, 2, 16, [b"\x12\x34\x56\x78\x9a\xbc"]))
    put("png", "grey_alpha_1x2", png(1, 2, 4, 8, [b"\x10\xff", b"\x20\x00"]))
    put("png", "interlaced_3x3", png(3, 3, 0, 8, [b"\x01\x02\x03"] * 3, interlace=1))
    # JPEG (first byte: the fuzzer's option byte)
    put("jpeg", "grey_16x8", b"\x00" + jpeg_header(16, 8, 1))
    put("jpeg", "ycc_8x8_scaled", b"\x02" + jpeg_header(8, 8, 3))
    put("jpeg", "grey_out_24x16", b"\x81" + jpeg_header(24, 16, 3))


if __name__ == "__main__":
    main()
