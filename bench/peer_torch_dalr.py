#!/usr/bin/python3
"""The dalr solve of one fc layer from an activation file, written as a PyTorch user would
write it, to time against `dalr-gpu compress --acts FILE --precision fp32 --no-error` in the
same run (`bench/run.py --solve-shapes`). Meant for a current torch (bench/setup_peers.sh
makes build/peer-venv with one from PyPI); it runs on Debian's 1.13 too, where the fp32 CPU
`eigh` fails from m ~ 2900 on and G's eigenvectors are then taken in fp64 (said in `notes`).

Same algebra in fp32 on --device (TF32 off on CUDA), same lambda rule as dalr-gpu:
  C = X^T X (matmul: torch has no SYRK), W C, G = (W C) W^T, U_k = the top k eigenvectors
  of G (torch.linalg.eigh: all eigenpairs, torch has no index range), lambda added to C's
  diagonal in place, torch.linalg.cholesky_ex, B^T = torch.cholesky_solve((W C)^T U_k);
  A = U_k, bhat = b, written as dalr-gpu writes the compressed model (peer_numpy_dalr's
  writer: LAYER.0.weight = B, LAYER.1.weight = A, LAYER.1.bias; temporary file + rename).

  peer_torch_dalr.py --run DIR --rank 256 [--device cpu|cuda] [--threads N] [--out F.bin]
                     [--json R.json]              # DIR from peer_numpy_dalr.py --make

--json: {"tool": "torch", "torch", "device", "threads", "m", "n", "p", "k", "lambda",
"timing_s": {"load" (files read, tensors on the device), "statistics", "wc", "g", "eigh",
"rhs", "cholesky", "cho_solve", "write", "total"}, "notes", "out"}; seconds from after the
imports, the device synchronised at each step.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from peer_numpy_dalr import Clock, load_inputs, write_factors  # noqa: E402
from peer_pytorch import eigh_vectors  # noqa: E402


def solve(torch, w, x, k, lambda_rel, clock, notes):
    """(U_k, B, lambda) on w's device; clock.lap after each step."""
    n = w.shape[1]
    c = x.t() @ x  # n x n
    del x
    clock.lap("statistics")
    lam = lambda_rel * float(c.diagonal().double().sum()) / n
    wc = w @ c
    clock.lap("wc")
    g = wc @ w.t()
    clock.lap("g")
    u = eigh_vectors(torch, g, notes)[:, -k:].flip(-1).contiguous()  # descending
    del g
    clock.lap("eigh")
    rhs = wc.t() @ u  # C W^T U_k (n x k)
    del wc
    clock.lap("rhs")
    c.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(c)
    del c
    if int(info) != 0:
        raise SystemExit(f"peer_torch_dalr: Cholesky of C + lambda I failed at column "
                         f"{int(info)} (lambda {lam:g})")
    clock.lap("cholesky")
    bt = torch.cholesky_solve(rhs, chol)
    clock.lap("cho_solve")
    return u, bt.t().contiguous(), lam


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", metavar="DIR", required=True,
                    help="solve from DIR/model.bin and DIR/acts.npy")
    ap.add_argument("--rank", type=int, default=256)
    ap.add_argument("--layer", default="fc")
    ap.add_argument("--lambda-rel", type=float, default=1e-3)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: os.cpu_count(), here %(default)s)")
    ap.add_argument("--out", help="the compressed model (default DIR/peer_torch.bin)")
    ap.add_argument("--json", help="write the timings as JSON here")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("peer_torch_dalr: --device cuda: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    clock = Clock(torch.cuda.synchronize if cuda else None)
    notes = []
    with torch.inference_mode():
        tensors, w, b, x = load_inputs(a.run, a.layer)
        m, n = w.shape
        if not 1 <= a.rank <= min(m, n):
            raise SystemExit(f"peer_torch_dalr: --rank {a.rank} outside 1..{min(m, n)}")
        p = x.shape[0]
        wt, xt = torch.from_numpy(w).to(dev), torch.from_numpy(x).to(dev)
        del x
        clock.lap("load")
        u, bmat, lam = solve(torch, wt, xt, a.rank, a.lambda_rel, clock, notes)
        del xt
        out = a.out or os.path.join(a.run, "peer_torch.bin")
        write_factors(out, tensors, a.layer, u.cpu().numpy(), bmat.cpu().numpy(), b)
        clock.lap("write")
    name = f"cuda:{torch.cuda.get_device_name(dev)}" if cuda else "cpu"
    res = {"tool": "torch", "torch": torch.__version__, "device": name,
           "threads": torch.get_num_threads(), "m": m, "n": n, "p": p, "k": a.rank,
           "lambda": lam, "timing_s": clock.result(), "notes": notes, "out": out}
    if a.json:
        tmp = f"{a.json}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp, a.json)
    print(f"peer_torch_dalr (torch {torch.__version__}, {name}): {m} x {n}, p {p}, k {a.rank}: "
          + ", ".join(f"{key} {v:.3f}" for key, v in res["timing_s"].items()) + " s")
    for note in notes:
        print("note: " + note)


if __name__ == "__main__":
    main()
