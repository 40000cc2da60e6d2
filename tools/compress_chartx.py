#!/usr/bin/python3
"""Compresses the MLP layers of the character-level transformer (examples/fortunes-chartx/)
at several ranks with four methods, and measures validation bits per character.

Every MLP Linear of every block (blocks.<i>.mlp.fc1, 128 -> 512, and blocks.<i>.mlp.fc2,
512 -> 128) becomes nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m)), with k
from the kept fraction of the layer's weights as the engine's --keep computes it
(floor(keep m n / (m + n))). Methods:

  svd         truncated SVD of W (the engine's --method svd)
  asvd        ASVD (Yuan et al. 2023): W S with S = diag(mean |x_j| ^ alpha) over the
              calibration inputs x, truncated SVD, then times S^-1; alpha = 0.5, the ASVD
              paper's choice (--asvd-alpha). Written here in NumPy: a peer, not the engine.
  dalr        the engine's --method dalr, default ridge (lambda_rel 1e-3)
  dalr-exact  the engine's --method dalr-exact with --lambda 0: at lambda = 0 this is
              SVD-LLM's truncation-aware whitening (the rank-k minimiser of ||W X - M X||_F)

All layers are fitted to the inputs the *uncompressed* model gives them on the calibration
data (one pass with forward hooks), as dalr.compress does; the evaluation runs the model
with all eight layers replaced at once.

Two routes to the engine (--route): `cli` writes each layer as a one-layer safetensors
file (NAME.weight, NAME.bias) and its inputs as a float32 .npy (p, n), runs
`build/dalr-gpu compress --model F --layer NAME --acts X.npy --rank K --method M
--precision fp64 --out OUT` and reads NAME.0.weight, NAME.1.weight, NAME.1.bias back;
`python` calls dalr.compress (the Python package, `pip install .`).

Writes OUT/compression.json, OUT/compression.md (the table) and OUT/compression.svg.

Usage: /usr/bin/python3 tools/compress_chartx.py [--route cli|python] [--dalr-gpu build/dalr-gpu]
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chartx  # noqa: E402
import dalr_format  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METHODS = ["svd", "asvd", "dalr", "dalr-exact"]
# lambda per engine method: None = the engine's default ridge
LAMBDA = {"svd": None, "dalr": None, "dalr-exact": 0.0}


def rank_for_keep(m, n, keep):
    """The engine's --keep rule (src/core/ranks.cpp): floor(keep m n / (m + n)), at least 1."""
    return max(1, int(math.floor(keep * m * n / (m + n))))


def factored(w0, w1, b1):
    """nn.Sequential(Linear(n, k, bias=False), Linear(k, m)) holding B = w0 (k x n),
    A = w1 (m x k) and the bias b1 (m)."""
    import torch
    import torch.nn as nn
    k, n = w0.shape
    m = w1.shape[0]
    seq = nn.Sequential(nn.Linear(n, k, bias=False), nn.Linear(k, m))
    with torch.no_grad():
        seq[0].weight.copy_(torch.as_tensor(np.asarray(w0, dtype=np.float32)))
        seq[1].weight.copy_(torch.as_tensor(np.asarray(w1, dtype=np.float32)))
        seq[1].bias.copy_(torch.as_tensor(np.asarray(b1, dtype=np.float32)))
    return seq


def replace(model, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, module)


def collect_inputs(model, names, calib):
    """{name: float32 (rows, n)}: each named Linear's input over the calibration windows,
    (batch, tokens, n) flattened to rows, from one pass with forward hooks."""
    import torch
    rows = {nm: [] for nm in names}
    hooks = [model.get_submodule(nm).register_forward_hook(
        lambda mod, inp, out, nm=nm: rows[nm].append(inp[0].detach().reshape(-1, inp[0].shape[-1])))
        for nm in names]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(calib), 64):
            model(torch.from_numpy(calib[i:i + 64].astype(np.int64)))
    for h in hooks:
        h.remove()
    return {nm: torch.cat(r).numpy().astype(np.float32) for nm, r in rows.items()}


# ----------------------------------------------------------------------------- the methods

def asvd(weight, bias, x, rank, alpha):
    """ASVD: SVD of W S, S = diag(mean |x| ^ alpha), factors (B S^-1, A). Float64."""
    w = weight.astype(np.float64)
    s = np.abs(x.astype(np.float64)).mean(0) ** alpha
    s = np.maximum(s, 1e-6 * s.max())  # a channel that is never active: keep S invertible
    u, sv, vt = np.linalg.svd(w * s[None, :], full_matrices=False)
    a = u[:, :rank] * np.sqrt(sv[:rank])[None, :]
    b = (np.sqrt(sv[:rank])[:, None] * vt[:rank]) / s[None, :]
    return b, a, bias


def engine_cli(model, ranks, acts, method, lam, dalr_gpu, workdir):
    """The engine through its CLI: one `dalr-gpu compress` per layer. Returns the
    compressed copy of the model and {name: the CLI's JSON report}."""
    out = copy.deepcopy(model)
    reports = {}
    for name, k in ranks.items():
        lin = model.get_submodule(name)
        f_model = os.path.join(workdir, "layer.safetensors")
        f_acts = os.path.join(workdir, f"{name}.npy")
        f_out = os.path.join(workdir, "out.safetensors")
        f_rep = os.path.join(workdir, "report.json")
        dalr_format.write_safetensors(f_model, {f"{name}.weight": lin.weight.detach().numpy(),
                                                f"{name}.bias": lin.bias.detach().numpy()})
        if not os.path.exists(f_acts):
            np.save(f_acts, acts[name])
        cmd = [dalr_gpu, "compress", "--model", f_model, "--layer", name, "--acts", f_acts,
               "--rank", str(k), "--method", method, "--precision", "fp64", "--device", "cpu",
               "--out", f_out, "--report", f_rep, "--quiet"]
        if lam is not None:
            cmd += ["--lambda", repr(float(lam))]
        subprocess.run(cmd, check=True)
        t, _ = dalr_format.read_safetensors(f_out)
        replace(out, name, factored(t[f"{name}.0.weight"], t[f"{name}.1.weight"], t[f"{name}.1.bias"]))
        with open(f_rep) as f:
            reports[name] = json.load(f)
    return out, reports


def engine_python(model, ranks, calib, method, lam):
    """The engine through the Python package: dalr.compress in one call."""
    try:
        import dalr
    except ImportError:
        sys.exit("--route python: the package dalr is not importable here; install it "
                 "(tools/install_python.sh) and run this script with build/pyenv/bin/python")
    import torch
    data = [torch.from_numpy(calib[i:i + 64].astype(np.int64)) for i in range(0, len(calib), 64)]
    return dalr.compress(model, ranks, data, method=method, device="cpu", precision="fp64",
                         lam=lam, progress=False)


def compress(args, model, ranks, acts, calib, method, workdir):
    if method == "asvd":
        out = copy.deepcopy(model)
        for name, k in ranks.items():
            lin = model.get_submodule(name)
            replace(out, name, factored(*asvd(lin.weight.detach().numpy(), lin.bias.detach().numpy(),
                                               acts[name], k, args.asvd_alpha)))
        return out
    if args.route == "python":
        return engine_python(model, ranks, calib, method, LAMBDA[method])[0]
    return engine_cli(model, ranks, acts, method, LAMBDA[method], args.dalr_gpu, workdir)[0]


# ----------------------------------------------------------------------------- output

def table_md(res):
    base = res["uncompressed"]
    lines = ["| MLP weights kept | rank fc1 / fc2 | parameters (whole model) | "
             + " | ".join(f"{m} bpc" for m in METHODS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in METHODS) + " |",
             f"| 100% (uncompressed) | - | {base['params']:,} | "
             + " | ".join(f"{base['bpc']:.4f}" for _ in METHODS) + " |"]
    for row in res["rows"]:
        best = min(row["bpc"][m] for m in METHODS)
        cells = [(f"**{row['bpc'][m]:.4f}**" if row["bpc"][m] == best else f"{row['bpc'][m]:.4f}")
                 for m in METHODS]
        lines.append(f"| {row['keep'] * 100:g}% ({row['mlp_params_kept'] / res['mlp_params'] * 100:.1f}%) "
                     f"| {row['rank']} | {row['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_svg(res, path):
    """bpc against the MLP parameters kept, one line per method, the uncompressed dashed."""
    W, H, L, R, T, B = 760, 440, 70, 560, 40, 385
    xs = [r["mlp_params_kept"] / res["mlp_params"] * 100 for r in res["rows"]]
    ys = [r["bpc"][m] for r in res["rows"] for m in METHODS] + [res["uncompressed"]["bpc"]]
    x0, x1 = 0.0, 100.0
    y0 = math.floor(min(ys) * 10) / 10
    y1 = math.ceil(max(ys) * 10) / 10
    px = lambda x: L + (x - x0) / (x1 - x0) * (R - L)
    py = lambda y: B - (y - y0) / (y1 - y0) * (B - T)
    colors = {"svd": "#d62728", "asvd": "#ff7f0e", "dalr": "#1f77b4", "dalr-exact": "#2ca02c"}
    o = ['<?xml version="1.0" encoding="UTF-8"?>',
         f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         'font-family="sans-serif" font-size="12">',
         f'<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>',
         f'<text x="{(L + R) / 2}" y="22" text-anchor="middle" font-size="14">Validation bits per character '
         f'after compressing all {len(res["layers"])} MLP layers</text>']
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        o.append(f'<line x1="{px(x):g}" y1="{B}" x2="{px(x):g}" y2="{T}" stroke="#e0e0e0"/>')
        o.append(f'<text x="{px(x):g}" y="{B + 16}" text-anchor="middle">{x:g}</text>')
    n_y = int(round((y1 - y0) / 0.1))
    step = max(1, n_y // 8)
    for i in range(0, n_y + 1, step):
        y = y0 + 0.1 * i
        o.append(f'<line x1="{L}" y1="{py(y):g}" x2="{R}" y2="{py(y):g}" stroke="#e0e0e0"/>')
        o.append(f'<text x="{L - 6}" y="{py(y) + 4:g}" text-anchor="end">{y:.1f}</text>')
    o.append(f'<text x="{(L + R) / 2}" y="{B + 36}" text-anchor="middle">MLP parameters kept (%)</text>')
    o.append(f'<text x="18" y="{(T + B) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 18 {(T + B) / 2})">bits per character (lower is better)</text>')
    yb = py(res["uncompressed"]["bpc"])
    o.append(f'<line x1="{L}" y1="{yb:g}" x2="{R}" y2="{yb:g}" stroke="#555" stroke-dasharray="6 4"/>')
    for li, m in enumerate(METHODS):
        pts = " ".join(f"{px(x):.2f},{py(r['bpc'][m]):.2f}" for x, r in zip(xs, res["rows"]))
        o.append(f'<polyline points="{pts}" fill="none" stroke="{colors[m]}" stroke-width="2"/>')
        for x, r in zip(xs, res["rows"]):
            o.append(f'<circle cx="{px(x):.2f}" cy="{py(r["bpc"][m]):.2f}" r="3" fill="{colors[m]}"/>')
        ly = T + 10 + 20 * li
        o.append(f'<line x1="{R + 20}" y1="{ly}" x2="{R + 45}" y2="{ly}" stroke="{colors[m]}" stroke-width="2"/>')
        o.append(f'<text x="{R + 52}" y="{ly + 4}">{m}</text>')
    ly = T + 10 + 20 * len(METHODS)
    o.append(f'<line x1="{R + 20}" y1="{ly}" x2="{R + 45}" y2="{ly}" stroke="#555" stroke-dasharray="6 4"/>')
    o.append(f'<text x="{R + 52}" y="{ly + 4}">uncompressed</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--example", default=os.path.join(ROOT, "examples", "fortunes-chartx"))
    ap.add_argument("--out", default=None, help="where the results go (default: --example)")
    ap.add_argument("--route", choices=["cli", "python"], default="cli")
    ap.add_argument("--dalr-gpu", default=os.path.join(ROOT, "build", "dalr-gpu"))
    ap.add_argument("--keep", default="0.75,0.5,0.35,0.25", help="kept fractions of each layer's weights")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--calib", type=int, default=256, help="calibration windows from the training split")
    ap.add_argument("--eval-windows", type=int, default=1024, help="validation windows (0: all)")
    ap.add_argument("--asvd-alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    out_dir = args.out or args.example
    methods = [m for m in args.methods.split(",") if m]

    import torch
    torch.set_num_threads(args.threads)
    t_all = time.time()
    model, cfg = chartx.load_model(os.path.join(args.example, "model.safetensors"))
    train_text, val_text = chartx.splits()
    tr = chartx.encode(train_text)
    # calibration: windows at seeded random offsets of the training split
    starts = np.sort(np.random.RandomState(args.seed).randint(0, len(tr) - cfg["ctx"], args.calib))
    calib = np.stack([tr[s:s + cfg["ctx"]] for s in starts])
    val = chartx.windows(chartx.encode(val_text), cfg["ctx"], args.eval_windows or None)
    names = chartx.mlp_layers(model)
    acts = collect_inputs(model, names, calib)
    n_params = sum(p.numel() for p in model.parameters())
    mlp_params = sum(p.numel() for nm in names for p in model.get_submodule(nm).parameters())

    base = chartx.eval_loss(model, val)
    print(f"uncompressed: {base / math.log(2):.4f} bpc on {val.size - len(val)} characters "
          f"({len(val)} windows); calibration {len(calib)} windows = {acts[names[0]].shape[0]} rows",
          flush=True)
    res = {"route": args.route, "calib_windows": len(calib), "calib_rows": int(acts[names[0]].shape[0]),
           "eval_windows": int(len(val)), "eval_chars": int(val.size - len(val)),
           "asvd_alpha": args.asvd_alpha, "layers": names, "mlp_params": mlp_params, "params": n_params,
           "uncompressed": {"loss": base, "bpc": base / math.log(2), "params": n_params}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="chartx-") as work:
        for keep in [float(s) for s in args.keep.split(",") if s]:
            ranks = {}
            for nm in names:
                lin = model.get_submodule(nm)
                ranks[nm] = rank_for_keep(lin.out_features, lin.in_features, keep)
            kept = sum(k * (model.get_submodule(nm).in_features + model.get_submodule(nm).out_features)
                       + model.get_submodule(nm).out_features for nm, k in ranks.items())
            row = {"keep": keep, "rank": f"{ranks[names[0]]} / {ranks[names[1]]}", "ranks": ranks,
                   "mlp_params_kept": kept, "params": n_params - mlp_params + kept,
                   "loss": {}, "bpc": {}, "seconds": {}}
            for m in methods:
                t0 = time.time()
                cm = compress(args, model, ranks, acts, calib, m, work)
                loss = chartx.eval_loss(cm, val)
                row["loss"][m] = loss
                row["bpc"][m] = loss / math.log(2)
                row["seconds"][m] = round(time.time() - t0, 1)
                print(f"keep {keep:g} (ranks {row['rank']}): {m:10s} {loss / math.log(2):.4f} bpc "
                      f"({row['seconds'][m]} s)", flush=True)
            res["rows"].append(row)
    res["total_s"] = round(time.time() - t_all, 1)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "compression.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    if methods == METHODS:
        with open(os.path.join(out_dir, "compression.md"), "w") as f:
            f.write(table_md(res))
        plot_svg(res, os.path.join(out_dir, "compression.svg"))
        print(table_md(res))
    print(f"{res['total_s']} s in all")


if __name__ == "__main__":
    main()
