#!/usr/bin/python3
"""The dalr solve of one fc layer from an activation file, written as a NumPy/SciPy user
would write it, to time against `dalr-gpu compress --acts FILE --precision fp32 --no-error`
in the same run (`bench/run.py --solve-shapes`). Same algebra in fp32, same lambda rule
(lambda = lambda_rel trace(C) / n, default lambda_rel 1e-3, as dalr-gpu):

  C = X^T X                     scipy.linalg.blas.ssyrk (upper triangle; no copy of X)
  W C                           ssymm on C's upper triangle (no symmetrised copy of C)
  G = (W C) W^T                 matmul (sgemm)
  U_k = top-k eigenvectors      scipy.linalg.eigh, --eigh: subset (default: `subset_by_index`,
                                driver evx, the fastest measured), subset-evr, or full (evd)
  B = U_k^T W C (C + lambda I)^-1   cho_factor / cho_solve on (W C)^T U_k (k right-hand
                                sides; lambda added to C's diagonal in place)
  A = U_k, bhat = b             written as LAYER.0.weight (B), LAYER.1.weight (A),
                                LAYER.1.bias, with the model's other tensors, as dalr-gpu
                                writes them (temporary file, then rename)

Without SciPy (the system's python3-numpy alone, as in CI) it falls back to what NumPy
has: C = X^T X by matmul (GEMM: twice SYRK's flops), W C by matmul, numpy.linalg.eigh (all
eigenpairs) and numpy.linalg.solve (LU) for the ridge solve; it says so on stderr and in
its JSON (`"scipy": null`, `"fallback"`).

  peer_numpy_dalr.py --make DIR --m 4096 --n 4096 --p 5994   # DIR/model.bin + DIR/acts.npy
  peer_numpy_dalr.py --run DIR --rank 256 [--out F.bin] [--json R.json] [--eigh E]

--make writes random data: W = randn / sqrt(n) (m x n, layer `fc`), b = randn / 10,
X = |randn| scaled by 1/sqrt(1 + unit index) (p x n, a decaying spectrum). The BLAS
threads are the environment's (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS): run it with the
same count and the same OPENBLAS_CORETYPE as the tool it is compared with.

--json: {"tool": "numpy-scipy" | "numpy", "numpy", "scipy" (null without it), "fallback"
(null or why), "eigh", "m", "n", "p", "k", "lambda", "timing_s": {"load", "statistics",
"wc", "g", "eigh", "rhs", "cholesky", "cho_solve", "write", "total"}, "out"}; seconds from
after the imports.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dalr_format import read_header, write_safetensors  # noqa: E402

# --eigh: (SciPy driver, top k only?). At fc7's G (m = 4096, k = 256) on the 2-core Xeon:
# subset evx 3.1 s, subset evr 8.5 s (LAPACK's ?syevr takes bisection and inverse iteration
# for an index range, and reorthogonalises more), all by evd 5.6 s.
EIGH = {"subset": ("evx", True), "subset-evr": ("evr", True), "full": ("evd", False)}
EIGH_TEXT = {"subset": "subset_by_index (evx)", "subset-evr": "subset_by_index (evr)",
             "full": "all eigenpairs (evd)"}
NO_SCIPY = ("SciPy is not importable: C by GEMM instead of SYRK, all eigenpairs "
            "(numpy.linalg.eigh), and LU (numpy.linalg.solve) instead of Cholesky")


def make(d, m, n, p, seed=0):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, n), dtype=np.float32) / np.sqrt(n)).astype(np.float32)
    b = rng.standard_normal(m, dtype=np.float32) * 0.1
    write_safetensors(os.path.join(d, "model.bin"), {"fc.weight": w, "fc.bias": b})
    del w
    # Post-ReLU-like activations whose scale decays across units (a decaying spectrum).
    scale = (1.0 / np.sqrt(1.0 + np.arange(n, dtype=np.float32))).astype(np.float32)
    x = rng.standard_normal((p, n), dtype=np.float32)
    np.abs(x, out=x)
    x *= scale
    np.save(os.path.join(d, "acts.npy"), x)


def load_model(path):
    """{name: float32 array} of a safetensors file of F32 tensors, each read once from the
    file into its own array (no intermediate copy of the whole file)."""
    header, _, base = read_header(path)
    out = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"peer_numpy_dalr: {path}: {name} is {info['dtype']}, not F32")
        b, e = info["data_offsets"]
        out[name] = np.fromfile(path, dtype="<f4", count=(e - b) // 4,
                                offset=base + b).reshape(info["shape"])
    return out


def load_inputs(d, layer):
    """(model tensors, W, b, X) from DIR/model.bin and DIR/acts.npy (fp32)."""
    tensors = load_model(os.path.join(d, "model.bin"))
    w = tensors[layer + ".weight"]
    b = tensors.get(layer + ".bias", np.zeros(w.shape[0], np.float32))
    x = np.load(os.path.join(d, "acts.npy"))
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise SystemExit(f"peer_numpy_dalr: acts.npy is {x.dtype} {x.shape}, expected float32 "
                         f"(p, {w.shape[1]})")
    return tensors, w, b, x


def write_factors(path, tensors, layer, a, bmat, bhat):
    """The compressed model as dalr-gpu writes it, through a temporary file and a rename."""
    out = {k: v for k, v in tensors.items() if k not in (layer + ".weight", layer + ".bias")}
    out[layer + ".0.weight"] = bmat
    out[layer + ".1.weight"] = a
    out[layer + ".1.bias"] = bhat
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        write_safetensors(tmp, out)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Clock:
    """Named intervals: clock.lap("name") records the time since the previous lap (after
    `sync()`, e.g. torch.cuda.synchronize, where one is given)."""

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)
        self.t0 = self.t = time.perf_counter()
        self.laps = {}

    def lap(self, name):
        self.sync()
        now = time.perf_counter()
        self.laps[name] = now - self.t
        self.t = now

    def result(self):
        self.laps["total"] = self.t - self.t0
        return self.laps


def solve_scipy(w, x, k, lambda_rel, eigh_mode, clock):
    from scipy.linalg import blas, cho_factor, cho_solve, eigh
    m, n = w.shape
    # X is p x n in C order: X^T is n x p in Fortran order, what BLAS reads without a copy.
    c = blas.ssyrk(1.0, x.T, trans=0, lower=0)  # n x n, Fortran order, upper triangle
    clock.lap("statistics")
    lam = lambda_rel * float(np.trace(c, dtype=np.float64)) / n
    wct = blas.ssymm(1.0, c, w.T, side=0, lower=0)  # C W^T (n x m, Fortran) = (W C)^T
    wc = wct.T  # m x n, C order
    clock.lap("wc")
    g = wc @ w.T
    clock.lap("g")
    driver, subset = EIGH[eigh_mode]
    _, v = eigh(g, subset_by_index=[m - k, m - 1] if subset else None, driver=driver,
                overwrite_a=True, check_finite=False)
    del g
    u = np.ascontiguousarray(v[:, ::-1][:, :k])  # descending
    clock.lap("eigh")
    rhs = wct @ u  # C W^T U_k (n x k)
    del wct, wc
    clock.lap("rhs")
    c[np.diag_indices(n)] += np.float32(lam)
    cf = cho_factor(c, lower=False, overwrite_a=True, check_finite=False)
    clock.lap("cholesky")
    bt = cho_solve(cf, rhs, overwrite_b=True, check_finite=False)
    clock.lap("cho_solve")
    return u, np.ascontiguousarray(bt.T), lam


def solve_numpy(w, x, k, lambda_rel, clock):
    m, n = w.shape
    c = x.T @ x
    clock.lap("statistics")
    lam = lambda_rel * float(np.trace(c, dtype=np.float64)) / n
    wc = w @ c
    clock.lap("wc")
    g = wc @ w.T
    clock.lap("g")
    _, v = np.linalg.eigh(g)
    del g
    u = np.ascontiguousarray(v[:, ::-1][:, :k])
    clock.lap("eigh")
    rhs = wc.T @ u
    del wc
    clock.lap("rhs")
    c[np.diag_indices(n)] += np.float32(lam)
    clock.lap("cholesky")  # nothing to factor first: LU inside solve
    bt = np.linalg.solve(c, rhs)
    clock.lap("cho_solve")
    return u, np.ascontiguousarray(bt.T), lam


def run(a):
    try:
        import scipy
    except ImportError:
        scipy = None
        print("peer_numpy_dalr: " + NO_SCIPY, file=sys.stderr)
    clock = Clock()
    tensors, w, b, x = load_inputs(a.run, a.layer)
    m, n = w.shape
    k = a.rank
    if not 1 <= k <= min(m, n):
        raise SystemExit(f"peer_numpy_dalr: --rank {k} outside 1..{min(m, n)}")
    clock.lap("load")
    if scipy is not None:
        u, bmat, lam = solve_scipy(w, x, k, a.lambda_rel, a.eigh, clock)
    else:
        u, bmat, lam = solve_numpy(w, x, k, a.lambda_rel, clock)
    out = a.out or os.path.join(a.run, "peer_numpy.bin")
    write_factors(out, tensors, a.layer, u, bmat, b)
    clock.lap("write")
    res = {"tool": "numpy-scipy" if scipy else "numpy", "numpy": np.__version__,
           "scipy": scipy.__version__ if scipy else None,
           "fallback": None if scipy else NO_SCIPY,
           "eigh": (f"scipy.linalg.eigh, {EIGH_TEXT[a.eigh]}" if scipy
                    else "numpy.linalg.eigh (all)"),
           "m": m, "n": n, "p": int(x.shape[0]), "k": k, "lambda": lam,
           "timing_s": clock.result(), "out": out}
    if a.json:
        tmp = f"{a.json}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp, a.json)
    t = res["timing_s"]
    print(f"peer_numpy_dalr ({res['tool']}): {m} x {n}, p {res['p']}, k {k}: "
          + ", ".join(f"{key} {v:.3f}" for key, v in t.items()) + " s")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", metavar="DIR", help="write random DIR/model.bin and DIR/acts.npy")
    ap.add_argument("--run", metavar="DIR", help="solve from DIR/model.bin and DIR/acts.npy")
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--p", type=int, default=5994)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--layer", default="fc")
    ap.add_argument("--lambda-rel", type=float, default=1e-3)
    ap.add_argument("--eigh", choices=list(EIGH), default="subset",
                    help="SciPy: the top k only (subset_by_index, driver evx: bisection and "
                         "inverse iteration; default, the fastest measured), the same with "
                         "driver evr, or all eigenpairs (driver evd)")
    ap.add_argument("--out", help="the compressed model (default DIR/peer_numpy.bin)")
    ap.add_argument("--json", help="write the timings as JSON here")
    a = ap.parse_args()
    if not (a.make or a.run):
        ap.error("--make DIR and/or --run DIR")
    if a.make:
        make(a.make, a.m, a.n, a.p, a.seed)
    if a.run:
        run(a)


if __name__ == "__main__":
    main()
