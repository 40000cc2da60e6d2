#!/usr/bin/python3
"""The dalr solve of one fc layer as a NumPy user would write it, to time against
`dalr-gpu compress --acts FILE --precision fp32 --no-error` in the same run
(bench/RESULTS.md, "CPU solve against NumPy"). Same algebra in fp32: C = X^T X, W C,
G = W C W^T, numpy.linalg.eigh(G) (all eigenpairs; NumPy has no index-range solver),
U_k its top k, B = U_k^T W C (C + lambda I)^-1 by numpy.linalg.solve (LU: SciPy's
cho_solve is not installed here), lambda = 1e-3 trace(C) / n; writes A and B.

  peer_numpy_dalr.py --make DIR --m 4096 --n 4096 --p 5994     # model.bin + acts.npy
  peer_numpy_dalr.py --run DIR --rank 256                      # timed by the caller

Run with OPENBLAS_CORETYPE set as dalr-gpu sets it (both use the system OpenBLAS).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dalr_format import read_safetensors, write_safetensors  # noqa: E402


def make(d, m, n, p, seed=0):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, n), dtype=np.float32) / np.sqrt(n)).astype(np.float32)
    b = rng.standard_normal(m, dtype=np.float32) * 0.1
    write_safetensors(os.path.join(d, "model.bin"), {"fc.weight": w, "fc.bias": b})
    # Post-ReLU-like activations whose scale decays across units (a decaying spectrum).
    scale = (1.0 / np.sqrt(1.0 + np.arange(n, dtype=np.float32))).astype(np.float32)
    x = np.abs(rng.standard_normal((p, n), dtype=np.float32)) * scale
    np.save(os.path.join(d, "acts.npy"), x.astype(np.float32))


def run(d, k, lambda_rel=1e-3):
    w = read_safetensors(os.path.join(d, "model.bin"))[0]["fc.weight"].astype(np.float32)
    x = np.load(os.path.join(d, "acts.npy")).astype(np.float32)
    n = w.shape[1]
    c = x.T @ x  # n x n
    lam = lambda_rel * float(np.trace(c)) / n
    wc = w @ c
    g = wc @ w.T
    _, v = np.linalg.eigh(g)
    u = np.ascontiguousarray(v[:, ::-1][:, :k])
    rhs = wc.T @ u  # C W^T U_k
    bt = np.linalg.solve(c + lam * np.eye(n, dtype=np.float32), rhs)
    np.save(os.path.join(d, "peer_factors.npy"), np.concatenate([u.ravel(), bt.ravel()]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make")
    ap.add_argument("--run")
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--p", type=int, default=5994)
    ap.add_argument("--rank", type=int, default=256)
    a = ap.parse_args()
    if a.make:
        make(a.make, a.m, a.n, a.p)
    if a.run:
        run(a.run, a.rank)


if __name__ == "__main__":
    main()
