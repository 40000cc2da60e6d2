#!/usr/bin/python3
"""The benchmark harness: dalr-gpu against its PyTorch peer and against the machine's floor.

    /usr/bin/python3 bench/run.py [--device cpu|cuda] [--images N] [--layers classifier.0,classifier.3]
                                  [--rank 256] [--precision fp32|tf32|fp16|bf16] [--out bench-out] ...
    /usr/bin/python3 bench/run.py --quick      # CI smoke: the shipped example, a few images
    /usr/bin/python3 bench/run.py --forward [...]  # forward-pass speed of factorised conv
                                                   # layers (bench/forward_sweep.py)

One run, one machine, both tools, the same images and the same random VGG19 (written by
`bench_stream --write-model`, He weights of the real shapes), in this order:

1. the floor: `bench_peak` measures the dense GEMM peak per precision and the copy
   bandwidth (and, on a GPU, the host-to-device bandwidth);
2. end to end, per layer: `dalr-gpu compress --acts stream --method dalr --no-error`
   from the image folder to the written compressed model, and the peer
   (`bench/peer_pytorch.py --mode job`) doing the same job; warm-up, then the median of
   the repeats' process wall times; the factors of the two are checked to agree;
3. the stages, each alone: decode, host-to-device, forward to the layer's input,
   statistics (`bench_stream`), the solve alone at --solve-shape (`bench_solve` on the
   CPU, `bench_gpu` on the GPU) and the write; the peer's same stages
   (`peer_pytorch.py --mode stages`).

Prints one table per layer: seconds for the N images (per-batch rates scaled to N),
dalr-gpu / peer as a speed ratio (peer time over ours: > 1 means dalr-gpu is faster),
and each stage's achieved TFLOP/s or GB/s as a fraction of the measured peak. Writes
OUT/results.json (everything) and OUT/table.md (the tables). Timings never live in
ctest; `--quick` only proves the whole harness runs and writes its JSON.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "fashion2digits")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dalr_format  # noqa: E402  (the project's reader of its model files)
from harness_util import fail, log, run  # noqa: E402
import solve_shapes  # noqa: E402
from solve_shapes import QUICK as QUICK_SHAPES  # noqa: E402


# ---------------------------------------------------------------- model files


def header_of(path):
    """dalr_format.read_header, with its errors as the harness's one-line failure."""
    try:
        return dalr_format.read_header(path)
    except (OSError, ValueError) as e:
        fail(str(e))


def read_tensor(path, name):
    """One F32 tensor of a safetensors file as a numpy array (memory-mapped)."""
    import numpy as np
    header, _, base = header_of(path)
    if name not in header:
        fail(f"{path}: no tensor {name}")
    info = header[name]
    if info["dtype"] != "F32":
        fail(f"{path}: {name} is {info['dtype']}, expected F32")
    b, e = info["data_offsets"]
    return np.memmap(path, dtype="<f4", mode="r", offset=base + b,
                     shape=tuple(info["shape"]))


def layer_shapes(model):
    """Per linear layer: (m, n, forward FLOPs per image up to its input), from the model's
    dalr.arch and dalr.input."""
    _, meta, _ = header_of(model)
    if "dalr.arch" not in meta:
        fail(f"{model} has no dalr.arch metadata")
    arch = json.loads(meta["dalr.arch"])
    inp = json.loads(meta.get("dalr.input", "{}"))
    h, w = inp.get("crop", [224, 224])
    flops, out = 0, {}

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    for L in arch:
        t = L["type"]
        if t == "conv":
            kh, kw = pair(L["kernel"])
            sh, sw = pair(L.get("stride", 1))
            ph, pw = pair(L.get("pad", 0))
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            flops += 2 * L["in"] * kh * kw * L["out"] * h * w
        elif t in ("maxpool", "avgpool"):
            kh, kw = pair(L["kernel"])
            sh, sw = pair(L.get("stride", L["kernel"]))
            ph, pw = pair(L.get("pad", 0))
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        elif t == "adaptive_avgpool":
            h, w = pair(L["out"])
        elif t == "linear":
            out[L["name"]] = (L["out"], L["in"], flops)
            flops += 2 * L["in"] * L["out"]
    return out, inp


# ---------------------------------------------------------------- running things


def timed(cmd, what, repeats, warmup=True, env=None, rss=None):
    """Warm-up (the page cache, cuDNN plans), then the median wall time of the repeats."""
    if warmup:
        run(cmd, what + " (warm-up)", env=env)
    walls = [run(cmd, what, env=env, rss=rss)[0] for _ in range(repeats)]
    return statistics.median(walls), walls


def image_folder(src, count, tmp):
    """`src` if it holds >= count images, else a folder of links repeating its images."""
    exts = (".jpg", ".jpeg", ".png")
    classes = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    files = [(c, f) for c in classes for f in sorted(os.listdir(os.path.join(src, c)))
             if f.lower().endswith(exts)]
    if not files:
        fail(f"{src}: no images")
    if len(files) >= count:
        return src
    out = os.path.join(tmp, f"images-{count}")
    for i in range(count):
        c, f = files[i % len(files)]
        os.makedirs(os.path.join(out, c), exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(src, c, f)),
                   os.path.join(out, c, f"r{i // len(files):04d}_{f}"))
    return out


def have_torch():
    """The peer needs torch; torchvision is optional (peer_pytorch.py falls back to PIL)."""
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# ---------------------------------------------------------------- the floor


def solve_flops(m, n, k):
    """The least the dalr solve must compute (leading terms): W C (2 m n^2) and G = (W C) W^T
    (2 m^2 n); the tridiagonal reduction of G (4/3 m^3) and the back-transformation of k
    eigenvectors (2 m^2 k); (W C)^T U_k (2 m n k); the Cholesky factor of C + lambda I
    (n^3 / 3) and its two triangular solves for k right-hand sides (2 n^2 k)."""
    return (2 * m * n * n + 2 * m * m * n + 4 * m ** 3 / 3 + 2 * m * m * k + 2 * m * n * k
            + n ** 3 / 3 + 2 * n * n * k)


def stats_flops(n, m, images, output_stats=True):
    """SYRK of C = X X^T (n (n + 1) per sample); dalr-gpu also keeps the output statistics
    (relu(W x + b) means and maxima, for pruning and the report): 2 m n more per sample."""
    return images * (n * (n + 1) + (2 * m * n if output_stats else 0))


# ---------------------------------------------------------------- one layer


def dalr_stages(a, layer, model, data, m, n, out):
    """dalr-gpu's stages, each alone: {stage: {"seconds": for the N images, ...}}."""
    js = os.path.join(out, f"ours-stages-{layer}.json")
    cmd = [a.bench_stream, "--data", data, "--model", model, "--device", a.device, "--layer", layer,
           "--images", str(a.images), "--batch", str(a.batch), "--workers", str(a.workers),
           "--repeats", str(a.repeats), "--precision", a.precision, "--no-memory", "--json", js]
    run(cmd, f"bench_stream ({layer})")
    r = json.load(open(js))
    # The statistics at their streaming rate: the final result() (a copy of C, once per
    # job) is a fixed cost that the end-to-end time includes.
    rate = r["statistics"]["images_per_s_without_result"] or r["statistics"]["images_per_s"]
    st = {
        "decode": {"seconds": r["decode"]["seconds"], "images": r["decode"]["images"]},
        "forward": {"seconds": a.images / r["forward"]["images_per_s"], "images": a.images},
        "statistics": {"seconds": a.images / rate, "images": a.images,
                       "result_seconds": r["statistics"]["result_seconds"]},
    }
    return st, r


def solve_alone(a, out):
    """The solve alone at --solve-shape: ours (bench_solve / bench_gpu) in seconds."""
    m, n, p = a.solve_shape
    k = min(a.rank, m, n)
    js = os.path.join(out, "ours-solve.json")
    if a.device == "cuda":
        cmd = [os.path.join(a.build, "bench", "bench_gpu"), "--m", str(m), "--n", str(n),
               "--p", str(p), "--k", str(k), "--methods", "dalr", "--repeats",
               str(a.repeats), "--json", js]
    else:
        cmd = [os.path.join(a.build, "bench", "bench_solve"), "--m", str(m), "--n", str(n),
               "--p", str(p), "--k", str(k), "--methods", "dalr", "--precision", "fp32",
               "--repeats", str(a.repeats), "--json", js]
    run(cmd, "solve alone")
    r = json.load(open(js))
    return (r["gpu_solve_s"] if a.device == "cuda" else r["solve_s"])["dalr"], r


def agreement(model, ours, peer, layer, probes_npy):
    """How far apart the two compressed layers are on the data they were fit to: for the
    layer's first 64 real input activations X (saved by the peer), ||(A B - A' B') X|| /
    ||W X||, and the largest bias difference. Random probes would measure fp32 noise in
    directions the data never reaches (p << n at fc6), which no solver controls."""
    import numpy as np
    x = np.load(probes_npy).astype(np.float64).T  # n x p
    w = read_tensor(model, layer + ".weight")
    b0, a0 = read_tensor(ours, layer + ".0.weight"), read_tensor(ours, layer + ".1.weight")
    b1, a1 = read_tensor(peer, layer + ".0.weight"), read_tensor(peer, layer + ".1.weight")
    if b0.shape != b1.shape or a0.shape != a1.shape:
        return {"agree": False, "why": f"shapes differ: {b0.shape}/{a0.shape} vs {b1.shape}/{a1.shape}"}
    y0 = a0.astype(np.float64) @ (b0.astype(np.float64) @ x)
    y1 = a1.astype(np.float64) @ (b1.astype(np.float64) @ x)
    ref = np.linalg.norm(np.asarray(w, dtype=np.float64) @ x)
    rel = float(np.linalg.norm(y0 - y1) / max(ref, 1e-300))
    c0, c1 = read_tensor(ours, layer + ".1.bias"), read_tensor(peer, layer + ".1.bias")
    bias = float(np.max(np.abs(np.asarray(c0) - np.asarray(c1))))
    return {"rel_diff_on_real_activations": rel, "probes": int(x.shape[1]),
            "max_abs_bias_diff": bias, "agree": rel < AGREE_TOL and bias < 1e-5,
            "tolerance": AGREE_TOL}


# The two tools see slightly different pixels (PIL rounds its resized image to 8 bits and
# decodes JPEGs fully; dalr-gpu resizes in float and may use JPEG DCT scaling) and
# accumulate in fp32 in different orders; relative differences of a few 1e-3 on real
# activations are measured. An error in either method would differ by O(1).
AGREE_TOL = 2e-2


def one_layer(a, layer, model, data, shapes, peak, out, peer_ok, tmp):  # noqa: C901
    m, n, fwd_flops = shapes[layer]
    log(f"{layer}: {m} x {n}, {a.images} images")
    res = {"layer": layer, "m": m, "n": n, "rank": a.rank, "images": a.images,
           "forward_gflop_per_image": fwd_flops / 1e9}
    ours_bin = os.path.join(tmp, f"ours-{layer}.bin")  # models are big: never in --out
    rep = os.path.join(out, f"ours-{layer}.json")
    cmd = [a.dalr_gpu, "compress", "--model", model, "--acts", "stream", "--data", data,
           "--layer", layer, "--method", "dalr", "--rank", str(a.rank), "--limit", str(a.images),
           "--batch", str(a.batch), "--workers", str(a.workers), "--device", a.device,
           "--precision", a.precision, "--no-error", "-q", "--out", ours_bin, "--report", rep]
    rss = []
    wall, walls = timed(cmd, f"dalr-gpu compress ({layer})", a.repeats, rss=rss)
    report = json.load(open(rep))
    res["ours"] = {"end_to_end": {"seconds": wall, "walls": walls, "timing": report["timing_s"],
                                  "peak_rss_mib": max(rss), "command": " ".join(cmd),
                                  "openblas_core": report.get("openblas_core")}}
    if a.memory:
        # The same job on 10x the images, once: the peak memory must not grow with N.
        big = image_folder(a.data, 10 * a.images, tmp)
        swap = {"--data": big, "--limit": str(10 * a.images), "--out": ours_bin + ".10x",
                "--report": rep + ".10x"}
        cmd10 = [swap.get(cmd[i - 1], v) if i else v for i, v in enumerate(cmd)]
        rss10 = []
        wall10, _ = run(cmd10, f"dalr-gpu compress ({layer}, 10x images)", rss=rss10)
        os.remove(ours_bin + ".10x")
        res["ours"]["memory"] = {"images": [a.images, 10 * a.images],
                                 "peak_rss_mib": [max(rss), rss10[0]],
                                 "ratio": rss10[0] / max(rss), "seconds_10x": wall10}
    res["ours"]["stages"], res["ours"]["bench_stream"] = dalr_stages(a, layer, model, data, m, n,
                                                                     out)
    res["ours"]["stages"]["write"] = {"seconds": report["timing_s"]["write"],
                                      "bytes": os.path.getsize(ours_bin)}
    if a.device == "cuda":
        nbytes = a.images * 4 * shapes["_input_elems"]
        res["ours"]["stages"]["h2d"] = {"seconds": nbytes / (peak["h2d_pinned_gbps"] * 1e9),
                                        "bytes": nbytes, "note": "pinned copy at the measured rate"}
    if peer_ok:
        peer_bin = os.path.join(tmp, f"peer-{layer}.bin")
        pj = os.path.join(out, f"peer-{layer}.json")
        base = [sys.executable, os.path.join(HERE, "peer_pytorch.py"), "--model", model,
                "--data", data, "--layer", layer, "--rank", str(a.rank), "--images",
                str(a.images), "--batch", str(a.batch), "--workers", str(a.workers),
                "--device", a.device, "--precision", a.precision, "--repeats", str(a.repeats)]
        probes = os.path.join(tmp, f"probes-{layer}.npy")
        pcmd = base + ["--mode", "job", "--out", peer_bin, "--json", pj, "--save-probes", probes]
        prss = []
        pwall, pwalls = timed(pcmd, f"peer job ({layer})", a.repeats, env=PEER_ENV, rss=prss)
        pjob = json.load(open(pj))
        scmd = base + ["--mode", "stages", "--solve-shape",
                       ",".join(map(str, a.solve_shape)), "--out", peer_bin + ".stages.bin",
                       "--json", pj + ".stages.json"]
        run(scmd, f"peer stages ({layer})", env=PEER_ENV)
        pst = json.load(open(pj + ".stages.json"))["stages"]
        stages = {
            "decode": pst["decode"],
            "forward": {"seconds": pst["forward"]["seconds"] * a.images / pst["forward"]["images"],
                        "images": a.images},
            "statistics": pst["statistics"],
            "write": pst["write"],
        }
        if pst.get("h2d"):
            stages["h2d"] = {"seconds": pst["h2d"]["seconds"] * a.images / a.batch,
                             "bytes": pst["h2d"]["bytes"] * a.images // a.batch}
        res["peer"] = {"end_to_end": {"seconds": pwall, "walls": pwalls, "peak_rss_mib": max(prss),
                                      "timing": pjob["job"]["timing"], "command": " ".join(pcmd)},
                       "stages": stages, "solve_alone": pst["solve"],
                       "torch": pjob.get("torch"), "threads": pjob.get("threads")}
        res["agreement"] = agreement(model, ours_bin, peer_bin, layer, probes)
    # The floor of each stage.
    st = res["ours"]["stages"]
    prec = "fp32" if a.precision == "fp32" else a.precision
    gemm = peak["gemm_tflops"].get(prec, peak["gemm_tflops"]["fp32"])
    floor = {
        "forward": {"flops": fwd_flops * a.images, "peak_tflops": gemm},
        "statistics": {"flops": stats_flops(n, m, a.images), "peak_tflops":
                       peak["gemm_tflops"].get("tf32" if a.precision == "tf32" else "fp32")},
        "write": {"bytes": st["write"]["bytes"]},
    }
    if "h2d" in st:
        floor["h2d"] = {"bytes": st["h2d"]["bytes"], "peak_gbps": peak["h2d_pinned_gbps"]}
    for k, f in floor.items():
        s = st[k]["seconds"]
        if "flops" in f:
            f["achieved_tflops"] = f["flops"] / s / 1e12
            f["fraction_of_peak"] = f["achieved_tflops"] / f["peak_tflops"]
        elif "peak_gbps" in f:
            f["achieved_gbps"] = f["bytes"] / s / 1e9
            f["fraction_of_peak"] = f["achieved_gbps"] / f["peak_gbps"]
        else:
            f["achieved_gbps"] = f["bytes"] / s / 1e9
    res["floor"] = floor
    return res


def table(a, res, solve, peak):
    lines = [f"### {res['layer']} ({res['m']} x {res['n']}), rank {res['rank']}, "
             f"{res['images']} images, {a.device}, {a.precision}", "",
             "| stage | dalr-gpu (s) | peer (s) | speed-up vs peer | achieved | of peak |",
             "| --- | --- | --- | --- | --- | --- |"]
    ours, peer = res["ours"], res.get("peer")

    def row(name, o, p, fl=None):
        ratio = f"{p / o:.2f}x" if (p is not None and o) else "-"
        ach, frac = "-", "-"
        if fl:
            if "achieved_tflops" in fl:
                ach = f"{fl['achieved_tflops']:.3f} TFLOP/s"
            elif "achieved_gbps" in fl:
                ach = f"{fl['achieved_gbps']:.2f} GB/s"
            if "fraction_of_peak" in fl:
                frac = f"{100 * fl['fraction_of_peak']:.1f}%"
        pv = f"{p:.3f}" if p is not None else "-"
        lines.append(f"| {name} | {o:.3f} | {pv} | {ratio} | {ach} | {frac} |")

    for k in ("decode", "h2d", "forward", "statistics", "write"):
        if k not in ours["stages"]:
            continue
        pk = peer["stages"].get(k) if peer else None
        row(k, ours["stages"][k]["seconds"], pk["seconds"] if pk else None, res["floor"].get(k))
    if res is RESULTS["layers"][0]:
        sm, sn, sp = a.solve_shape
        fl = solve_flops(sm, sn, a.rank)
        gemm = peak["gemm_tflops"]["fp32"]
        row(f"solve alone ({sm} x {sn}, p = {sp})", solve["seconds"],
            peer["solve_alone"]["seconds"] if peer else None,
            {"achieved_tflops": fl / solve["seconds"] / 1e12,
             "fraction_of_peak": fl / solve["seconds"] / 1e12 / gemm})
    row("**end to end** (process wall)", ours["end_to_end"]["seconds"],
        peer["end_to_end"]["seconds"] if peer else None)
    row("end to end (in-job total)", ours["end_to_end"]["timing"]["total"],
        peer["end_to_end"]["timing"]["total"] if peer else None)
    pr = peer["end_to_end"]["peak_rss_mib"] if peer else None
    lines.append(f"| peak resident memory, end to end (MiB) | {ours['end_to_end']['peak_rss_mib']:.0f}"
                 f" | {f'{pr:.0f}' if pr else '-'} | - | - | - |")
    if "memory" in ours:
        mm = ours["memory"]
        lines.append("")
        lines.append(f"Memory against the number of images: dalr-gpu's peak resident memory "
                     f"{mm['peak_rss_mib'][0]:.0f} MiB at {mm['images'][0]} images, "
                     f"{mm['peak_rss_mib'][1]:.0f} MiB at {mm['images'][1]} (ratio "
                     f"{mm['ratio']:.3f}).")
    if "agreement" in res:
        ag = res["agreement"]
        lines.append("")
        lines.append(f"Factors agree: {'yes' if ag['agree'] else 'NO'} (relative difference "
                     f"of the compressed layers' outputs on {ag.get('probes', 0)} real "
                     f"activations: {ag.get('rel_diff_on_real_activations', float('nan')):.2e}; "
                     f"tolerance {AGREE_TOL}).")
    return "\n".join(lines)


RESULTS = {}
# The peer's environment. dalr-gpu starts itself with the OpenBLAS kernels the CPU can
# run when OpenBLAS fell back to old ones (src/cpu/blas_core.hpp); Debian's torch uses the
# same OpenBLAS for its matrix products and LAPACK, so the peer gets the same kernels:
# the comparison is between the two programs, not between two kernel choices.
PEER_ENV = None


def main():
    if "--forward" in sys.argv[1:]:  # a separate job with options of its own
        import forward_sweep
        return forward_sweep.main([x for x in sys.argv[1:] if x != "--forward"])
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build folder")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if a GPU is seen")
    ap.add_argument("--model", help="model .bin (default: a random VGG19 written into --out)")
    ap.add_argument("--data", help="image folder (default: build/bench-images, made if missing)")
    ap.add_argument("--images", type=int, help="images per run (default 5994 GPU, 16 CPU)")
    ap.add_argument("--layers", help="linear layers, comma-separated (default: classifier.0,"
                    "classifier.3 on the GPU; classifier.3 on the CPU, where fc6's n = 25088 "
                    "solve takes minutes)")
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default="fp32",
                    help="the forward pass's precision for both tools (fp16/bf16: 16-bit "
                         "activations, statistics and solve fp32); not fp32: --device cuda only")
    ap.add_argument("--batch", type=int, help="images per batch (default 64 GPU, 8 CPU)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=0,
                    help="the random VGG19's crop (S x S, resize S*256/224; 0: 224). VGG's "
                         "adaptive pool keeps fc6's width, so a small S makes a CPU run cheap")
    ap.add_argument("--solve-shape", default="",
                    help="m,n,p of the solve alone (default: fc6 4096,25088,images on the GPU, "
                         "fc7 4096,4096,5994 on the CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--memory", action="store_true",
                    help="also run dalr-gpu's job once on 10x the images and report both peak "
                         "resident memories (flat: memory does not grow with N)")
    ap.add_argument("--out", default="bench-out", help="results folder")
    ap.add_argument("--solve-shapes", nargs="?", const="fc7,pn,fc6", metavar="SHAPES",
                    help="instead of the streaming job: dalr-gpu compress --acts FILE against "
                         "the NumPy/SciPy and the current-torch peers, interleaved, at fc7 "
                         "(4096 x 4096, p = 5994), pn (4096 x 16384, p = 2048) and fc6 "
                         "(4096 x 25088, p = 5994), or at [name=]m:n:p items; see "
                         "bench/solve_shapes.py")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="--solve-shapes: BLAS threads of every tool (default: all cores)")
    ap.add_argument("--peer-python", help="--solve-shapes: the peers' Python (default "
                    "BUILD/peer-venv/bin/python, made by bench/setup_peers.sh)")
    ap.add_argument("--numpy-eigh", choices=["subset", "subset-evr", "full"], default="subset",
                    help="--solve-shapes: the NumPy/SciPy peer's eigensolver (default subset: "
                         "scipy.linalg.eigh's subset_by_index, driver evx)")
    ap.add_argument("--max-busy", type=float, default=0,
                    help="--solve-shapes, on a shared machine: before each run wait until "
                         "other processes keep at most this many cores busy, and run again "
                         "when they took more meanwhile (0: never; default)")
    ap.add_argument("--load-wait", type=int, default=300,
                    help="--solve-shapes: the longest wait for --max-busy per run (s)")
    ap.add_argument("--data-dir", help="--solve-shapes: where the random data of each shape "
                    "is kept (default BUILD/bench/solve-shapes)")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: the shipped example, 16 images, small solve, one repeat")
    a = ap.parse_args()

    a.dalr_gpu = os.path.join(a.build, "dalr-gpu")
    if a.device is None:
        a.device = "cuda" if (shutil.which("nvidia-smi") and os.path.exists(
            os.path.join(a.build, "bench", "bench_gpu"))) else "cpu"
    if a.solve_shapes is not None:
        if a.quick:
            a.solve_shapes = a.solve_shapes if a.solve_shapes != "fc7,pn,fc6" else QUICK_SHAPES
            a.rank, a.repeats = 8, 1
        return solve_shapes.main(a)
    a.bench_stream = os.path.join(a.build, "bench", "bench_stream")
    for exe in (a.dalr_gpu, a.bench_stream, os.path.join(a.build, "bench", "bench_peak")):
        if not os.access(exe, os.X_OK):
            fail(f"{exe} is missing: build first (tools/setup.sh)")
    if a.device == "cpu" and a.precision != "fp32":
        fail(f"--precision {a.precision} needs --device cuda (the peer runs fp32 only on the CPU, "
             "and dalr-gpu's CPU fp16/bf16 is an emulation, not a speed-up)")
    if a.quick:
        a.model = a.model or os.path.join(EXAMPLE, "model.bin")
        a.data = a.data or os.path.join(EXAMPLE, "test")
        a.images = a.images or 16
        a.layers = "classifier.0"
        a.rank, a.batch, a.repeats = 8, a.batch or 8, 1
        a.solve_shape = a.solve_shape or "64,96,50"
        a.workers = min(a.workers, 2)
    gpu = a.device == "cuda"
    a.images = a.images or (5994 if gpu else 16)
    a.batch = a.batch or (64 if gpu else 8)
    a.layers = a.layers or ("classifier.0,classifier.3" if gpu else "classifier.3")
    if a.images < 1 or a.batch < 1 or a.repeats < 1 or a.rank < 1:
        fail("--images, --batch, --repeats and --rank must be positive")
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="dalr-bench-")
    try:
        return harness(a, gpu, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def harness(a, gpu, tmp):
    peer_ok = not a.no_peer and have_torch()
    if not a.no_peer and not peer_ok:
        log("peer: torch/torchvision not importable by this Python: peer skipped "
            "(Debian: apt-get install python3-torch python3-torchvision)")
    # 1. the floor
    pj = os.path.join(a.out, "peak.json")
    pk = [os.path.join(a.build, "bench", "bench_peak"), "--device", a.device, "--json", pj]
    if a.quick:
        pk += ["--size", "256", "--bytes", "4194304", "--repeats", "1"]
    run(pk, "bench_peak")
    peak = json.load(open(pj))
    global PEER_ENV
    if peak.get("openblas_core") and "OPENBLAS_CORETYPE" not in os.environ:
        PEER_ENV = dict(os.environ, OPENBLAS_CORETYPE=peak["openblas_core"])
    log(f"peaks: {peak['gemm_tflops']}, copy {peak['copy_gbps']:.1f} GB/s")
    # 2. model and images
    if not a.model:
        # 548 MiB, kept in the build folder for the next run (never in --out)
        a.model = os.path.join(a.build, "bench", "vgg19-random" +
                               (f"-{a.size}" if a.size else "") + ".bin")
        if not os.path.exists(a.model):
            run([a.bench_stream, "--write-model", a.model, "--size", str(a.size)],
                "writing the random VGG19")
    if not a.data:
        a.data = os.path.join(a.build, "bench-images")
        if not os.path.isdir(a.data):
            run([sys.executable, os.path.join(HERE, "make_bench_images.py"), a.data, "--count",
                 "512"], "making the benchmark images")
    data = image_folder(a.data, a.images, tmp)
    shapes, inp = layer_shapes(a.model)
    crop = inp.get("crop", [224, 224])
    shapes["_input_elems"] = int(inp.get("channels", 3)) * crop[0] * crop[1]
    layers = [x for x in a.layers.split(",") if x]
    for L in layers:
        if L not in shapes:
            fail(f"--layers: {L} is not a linear layer of {a.model} "
                 f"({', '.join(k for k in shapes if not k.startswith('_'))})")
    if a.solve_shape:
        try:
            a.solve_shape = [int(v) for v in a.solve_shape.split(",")]
            assert len(a.solve_shape) == 3 and min(a.solve_shape) > 0
        except (ValueError, AssertionError):
            fail(f"--solve-shape wants m,n,p, not {a.solve_shape}")
    else:
        a.solve_shape = [4096, 25088, a.images] if gpu else [4096, 4096, 5994]
    RESULTS.update({"device": a.device, "precision": a.precision, "peak": peak,
                    "model": a.model, "data": a.data, "images": a.images, "batch": a.batch,
                    "workers": a.workers, "repeats": a.repeats, "layers": [],
                    "peer": peer_ok, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    # 3. the solve alone
    log(f"solve alone at {a.solve_shape}")
    s_sec, s_raw = solve_alone(a, tmp)
    RESULTS["solve_alone"] = {"shape": a.solve_shape, "seconds": s_sec, "raw": s_raw}
    # 4. per layer
    for L in layers:
        RESULTS["layers"].append(one_layer(a, L, a.model, data, shapes, peak, a.out, peer_ok,
                                           tmp))
    tables = [table(a, r, RESULTS["solve_alone"], peak) for r in RESULTS["layers"]]
    name = peak.get("name", f"CPU, {peak.get('threads', '?')} threads, OpenBLAS "
                            f"{peak.get('openblas_core', '?')} kernels for both tools")
    head = (f"dalr-gpu benchmark, {RESULTS['date']}, {a.device} ({name}); peaks: " +
            ", ".join(f"{k} GEMM {v:.3f} TFLOP/s" for k, v in peak["gemm_tflops"].items()) +
            f", copy {peak['copy_gbps']:.1f} GB/s")
    text = head + "\n\n" + "\n\n".join(tables) + "\n"
    print(text)
    tmpj = os.path.join(a.out, ".results.json.tmp")
    with open(tmpj, "w") as f:
        json.dump(RESULTS, f, indent=2)
    os.replace(tmpj, os.path.join(a.out, "results.json"))
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text)
    if a.quick:
        check = json.load(open(os.path.join(a.out, "results.json")))
        need = ["decode", "forward", "statistics", "write"]
        for r in check["layers"]:
            for k in need:
                assert r["ours"]["stages"][k]["seconds"] > 0, k
            assert r["ours"]["end_to_end"]["seconds"] > 0
            if peer_ok:
                for k in need:
                    assert r["peer"]["stages"][k]["seconds"] > 0, k
                if not r["agreement"]["agree"]:
                    fail(f"the factors of dalr-gpu and the peer disagree: {r['agreement']}")
        print("bench/run.py --quick: results.json complete"
              + ("" if peer_ok else " (without the peer)"))
    bad = [r["layer"] for r in RESULTS["layers"] if not r.get("agreement", {"agree": True})["agree"]]
    if bad:
        fail(f"factors disagree with the peer at {', '.join(bad)} (see results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
