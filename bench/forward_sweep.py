#!/usr/bin/python3
"""Forward-pass speed of factorised conv layers at several ranks (`bench_forward`, one run
per rank): VGG19 with random He weights, its last two blocks' conv layers factorised.

    /usr/bin/python3 bench/forward_sweep.py [--device cpu|cuda] [--size 224] [--batch 8]
        [--ranks 64,128,256,half] [--layers features.19,...,features.34] [--round-rank R]
        [--repeats 3] [--out bench-out]
    /usr/bin/python3 bench/run.py --forward ...    (the same)

Each rank factorises every listed layer (K = "half": each layer's rank at which its
multiply-adds halve) and times the whole network and each layer alone against the
original (bench_forward). Writes OUT/forward-<K>.json per rank and OUT/forward.md, one
Markdown table of all ranks (the layout of bench/RESULTS.md), and prints it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# VGG19's conv layers at 28 x 28 (block 4) and 14 x 14 (block 5) on a 224 x 224 input.
LAST_BLOCKS = ",".join(f"features.{i}" for i in (19, 21, 23, 25, 28, 30, 32, 34))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _cells(before_s, after_s, cpu_b, cpu_a, macs_b, macs_a, batch, digits):
    """ms and speed-up by wall clock; by CPU time with GFLOP per CPU-second when measured."""
    f = f"{{:.{digits}f}}"
    cells = [f.format(1e3 * before_s), f.format(1e3 * after_s), f"{before_s / after_s:.2f}x"]
    if cpu_b is None:
        return cells + ["-", "-", "-", f"{2 * macs_b * batch / before_s / 1e9:.0f}",
                        f"{2 * macs_a * batch / after_s / 1e9:.0f}"]
    return cells + [f.format(1e3 * cpu_b), f.format(1e3 * cpu_a), f"{cpu_b / cpu_a:.2f}x",
                    f"{2 * macs_b * batch / cpu_b / 1e9:.0f}",
                    f"{2 * macs_a * batch / cpu_a / 1e9:.0f}"]


def _share(x):
    """The 1 x 1 part's share of the two parts' time, each timed alone (CPU time if any)."""
    parts = x.get("parts")
    if not parts:
        return "-"
    key = "cpu_seconds" if "cpu_seconds" in parts[0] else "seconds"
    return f"{100 * parts[1][key] / (parts[0][key] + parts[1][key]):.0f}%"


def table(runs):
    """One Markdown table: per rank, the network then each layer alone."""
    first = runs[0][1]
    m = first["machine"]
    b = first["batch"]
    head = (f"{time.strftime('%Y-%m-%d')}, {first['device']}"
            + (f" ({m['cpu']}, {m['hardware_threads']} hardware threads, OMP_NUM_THREADS "
               f"{m['omp_num_threads']}, OpenBLAS {m['openblas_kernels']} kernels, "
               f"OPENBLAS_CORETYPE {m['openblas_coretype']}, convolutions: {m['cpu_conv']})"
               if "cpu_conv" in m else "")
            + f", {first['precision']}, {first['model']}, input {first['input']}, batch "
            f"{b}, median of {first['repeats']}. Milliseconds per batch; GFLOP/s per CPU "
            "second where the CPU time was measured (else per wall second); NAME.1 share: "
            "the 1 x 1 conv's part of the time of the two parts, each timed alone.")
    lines = [head, "",
             "| rank | layer | k | MMAC/image before | after | kept | wall ms before | after "
             "| wall speed-up | CPU ms before | after | CPU speed-up | GFLOP/s before | after "
             "| NAME.1 share | load avg |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]
    for k, r in runs:
        n = r["network"]
        o, c = n["original"], n["compressed"]
        load = f"{r['machine']['load_average_start'].split()[0]}-" \
               f"{r['machine']['load_average_end'].split()[0]}"
        cells = _cells(o["seconds"], c["seconds"], o.get("cpu_seconds"), c.get("cpu_seconds"),
                       o["macs_per_image"], c["macs_per_image"], b, 0)
        lines.append(f"| {k} | **network** | - | {o['macs_per_image'] / 1e6:.0f} | "
                     f"{c['macs_per_image'] / 1e6:.0f} | {100 * n['macs_kept']:.1f}% | "
                     + " | ".join(cells) + f" | | {load} |")
        for x in r["layers"]:
            cells = _cells(x["seconds_before"], x["seconds_after"], x.get("cpu_seconds_before"),
                           x.get("cpu_seconds_after"), x["macs_per_image_before"],
                           x["macs_per_image_after"], b, 1)
            lines.append(f"| {k} | {x['layer']} {x['input'][1]}x{x['input'][2]} | {x['k']} | "
                         f"{x['macs_per_image_before'] / 1e6:.1f} | "
                         f"{x['macs_per_image_after'] / 1e6:.1f} | {100 * x['macs_kept']:.1f}% | "
                         + " | ".join(cells) + f" | {_share(x)} | |")
        if "end_to_end" in n:
            lines.append(f"| {k} | network end to end (upload, download) | - | | | | | | "
                         f"{n['end_to_end']['speedup']:.2f}x | | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build folder")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--model", help="model file (default: random VGG19, --arch vgg19)")
    ap.add_argument("--size", type=int, default=224, help="input crop (VGG19: 224)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", default="64,128,256,half",
                    help="ranks, comma-separated; 'half': where each layer's FLOPs halve")
    ap.add_argument("--layers", default=LAST_BLOCKS, help="layers to factorise")
    ap.add_argument("--round-rank", type=int, default=0)
    ap.add_argument("--out", default="bench-out", help="results folder")
    a = ap.parse_args(argv)
    exe = os.path.join(a.build, "bench", "bench_forward")
    if not os.access(exe, os.X_OK):
        print(f"bench/forward_sweep.py: {exe} is missing: build first (tools/setup.sh)",
              file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    layers = [x for x in a.layers.split(",") if x]
    runs = []
    for k in [x for x in a.ranks.split(",") if x]:
        path = os.path.join(a.out, f"forward-{k}.json")
        cmd = [exe, "--device", a.device, "--precision", a.precision, "--size", str(a.size),
               "--batch", str(a.batch), "--repeats", str(a.repeats), "--json", path,
               "--factor", ",".join(f"{layer}:{k}" for layer in layers)]
        cmd += ["--model", a.model] if a.model else ["--arch", "vgg19"]
        if a.round_rank > 1:
            cmd += ["--round-rank", str(a.round_rank)]
        print(f"[forward_sweep] rank {k} (load {loadavg()}): {' '.join(cmd)}", file=sys.stderr,
              flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"bench/forward_sweep.py: bench_forward failed at rank {k}", file=sys.stderr)
            return 1
        with open(path) as f:
            runs.append((k, json.load(f)))
    text = table(runs)
    with open(os.path.join(a.out, "forward.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
