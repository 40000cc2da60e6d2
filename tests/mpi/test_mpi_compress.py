#!/usr/bin/env python3
"""mpirun -np N dalr-gpu compress --acts FILE equals the single process.

Each rank accumulates the statistics of its share of the file's rows and rank 0 solves
(dalr/communicator.hpp). Checked here, on seeded random activations with an odd number
of samples: -np 1, 2 and 3 give the single process's factors (their product W1 W0,
which eigenvector signs do not change) and training error to 1e-9 relative in fp64;
more ranks than samples (-np 3 on 2 rows) works; --lambda auto holds out the same
samples; a NaN in the last rank's share stops every rank, non-zero, with the message
naming the sample, within seconds. Exit 77 (skip) when dalr-gpu was built without MPI
or mpirun is missing; then it checks that a start as several ranks is refused.

--acts stream over the shipped example's images (--limit 301, shuffled, --lambda auto)
with -np 3 equals the single process too.

Usage: test_mpi_compress.py DALR_GPU HAVE_MPI(ON|OFF) SOURCE_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

SEED = 15003


def write_model(path, w, b):
    tensors = {"fc.weight": w.astype(np.float32), "fc.bias": b.astype(np.float32)}
    header, blobs, at = {}, [], 0
    for name, t in tensors.items():
        raw = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (hl,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hl])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = {"F32": np.float32, "F64": np.float64}[info["dtype"]]
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + hl + a:8 + hl + b], dtype=dt).reshape(info["shape"])
    return out


def product(path, layer):
    """The compressed layer as one matrix: second factor times first (sign-free)."""
    t = read_tensors(path)
    return t[layer + ".1.weight"].astype(np.float64) @ t[layer + ".0.weight"].astype(np.float64)


def run(cmd, env, timeout=120):
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return r, time.time() - t0


def main():
    exe, have_mpi = sys.argv[1], sys.argv[2].upper() in ("ON", "1", "TRUE")
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    m, n, p, k = 23, 31, 101, 7
    tmp = tempfile.mkdtemp(prefix="dalr-mpi-")
    try:
        model = os.path.join(tmp, "m.bin")
        write_model(model, rng.standard_normal((m, n)) / np.sqrt(n), rng.standard_normal(m) * 0.1)
        acts = os.path.join(tmp, "a.npy")
        x = np.maximum(rng.standard_normal((p, n)), 0) * rng.uniform(0.5, 2, n)
        np.save(acts, x)  # float64: the sums round differently by shares
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1")
        base = [exe, "compress", "--model", model, "--layer", "fc", "--rank", str(k),
                "--device", "cpu", "--precision", "fp64", "--batch", "16"]

        if not have_mpi:
            # Several ranks of a build without MPI: refused, not the job run N times.
            r, _ = run(base + ["--acts", acts, "--out", os.path.join(tmp, "x.bin")],
                       dict(env, OMPI_COMM_WORLD_SIZE="2"))
            assert r.returncode != 0 and "built without MPI" in r.stderr, r.stderr
            print("built without MPI: a start as 2 ranks is refused; MPI checks skipped")
            return 77
        mpirun = shutil.which("mpirun")
        if not mpirun:
            print("mpirun not found: skipped")
            return 77

        def compress(nproc, acts_path, tag, extra=(), args=None, layer="fc"):
            out = os.path.join(tmp, f"{tag}.bin")
            rep = os.path.join(tmp, f"{tag}.json")
            cmd = (args or base) + ["--acts", acts_path, "--out", out, "--report", rep] + \
                list(extra)
            if nproc:
                cmd = [mpirun, "--oversubscribe", "-np", str(nproc)] + cmd
            r, secs = run(cmd, env)
            assert r.returncode == 0, f"{tag}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
            with open(rep) as f:
                return product(out, layer), json.load(f), r

        # The factors are written in the model's fp32 (a last-bit flip: ~6e-8 relative),
        # the report's lambda and error in float64 from the statistics.
        def same(tag, ref, got, tol=1e-9, tol_w=1e-6):
            (wr, jr, _), (wg, jg, rg) = ref, got
            rel = np.linalg.norm(wg - wr) / np.linalg.norm(wr)
            er, eg = jr["error_train"]["abs"], jg["error_train"]["abs"]
            assert jr["samples"] == jg["samples"], (jr["samples"], jg["samples"])
            print(f"{tag}: factors rel diff {rel:.2e}, error_train {er} vs {eg}, "
                  f"lambda {jr['lambda']} vs {jg['lambda']}")
            assert rel < max(tol, tol_w), tag
            assert abs(er - eg) <= tol * abs(er), tag
            assert abs(jr["lambda"] - jg["lambda"]) <= tol * abs(jr["lambda"]), tag

        single = compress(0, acts, "single")
        for nproc in (1, 2, 3):
            got = compress(nproc, acts, f"np{nproc}")
            same(f"-np {nproc}", single, got)
            if nproc > 1:
                assert got[1]["acts"]["processes"] == nproc, got[1]["acts"]
            # Only rank 0 prints the summary.
            assert got[2].stdout.count("\n") == single[2].stdout.count("\n"), got[2].stdout

        # fp32 statistics: the shares' sums round differently, within fp32's tolerance.
        same("fp32 -np 3", compress(0, acts, "f1", ["--precision", "fp32"]),
             compress(3, acts, "f3", ["--precision", "fp32"]), tol=1e-4)

        # Resumed statistics (--stats, merged by rank 0 only) plus the file's rows.
        half = os.path.join(tmp, "half.npy")
        np.save(half, x[:40])
        saved = os.path.join(tmp, "half.safetensors")
        compress(0, half, "half", ["--save-stats", saved])
        same("--stats + --acts -np 3", compress(0, acts, "res1", ["--stats", saved]),
             compress(3, acts, "res3", ["--stats", saved]))

        # More ranks than samples: rank 2 has none (k 1 <= 2 samples).
        tiny = os.path.join(tmp, "tiny.npy")
        np.save(tiny, x[:2].astype(np.float32))
        base_k = base[:]
        base[base.index("--rank") + 1] = "1"
        same("-np 3 on 2 samples", compress(0, tiny, "tiny1"), compress(3, tiny, "tiny3"))
        base = base_k

        # --lambda auto: every 10th sample held out, numbered as in the whole file.
        same("--lambda auto -np 3", compress(0, acts, "auto1", ["--lambda", "auto"]),
             compress(3, acts, "auto3", ["--lambda", "auto"]))

        # --acts stream: each rank runs the network on its share of the image list.
        ex = os.path.join(sys.argv[3], "examples", "fashion2digits")
        sargs = [exe, "compress", "--model", os.path.join(ex, "model.bin"), "--layer",
                 "classifier.0", "--rank", "8", "--device", "cpu", "--precision", "fp64",
                 "--data", os.path.join(ex, "train"), "--limit", "301", "--shuffle", "--seed",
                 "3", "--lambda", "auto", "--batch", "32", "--workers", "1"]
        s1 = compress(0, "stream", "s1", args=sargs, layer="classifier.0")
        s3 = compress(3, "stream", "s3", args=sargs, layer="classifier.0")
        assert s3[1]["data"]["images"] == 301 and s3[1]["data"]["processes"] == 3, s3[1]["data"]
        same("--acts stream -np 3", s1, s3)

        # A NaN in the last rank's share: every rank stops, non-zero, with the message.
        bad = os.path.join(tmp, "bad.npy")
        xb = x.astype(np.float32).copy()
        xb[p - 3, 5] = np.nan
        np.save(bad, xb)
        cmd = [mpirun, "--oversubscribe", "-np", "3"] + base + [
            "--acts", bad, "--out", os.path.join(tmp, "bad.bin")]
        r, secs = run(cmd, env, timeout=60)
        print(f"NaN on rank 2: exit {r.returncode} after {secs:.1f} s")
        assert r.returncode != 0, r.stdout + r.stderr
        assert f"sample {p - 3}, unit 5 is NaN" in r.stderr, r.stderr
        assert secs < 30, secs
        assert not os.path.exists(os.path.join(tmp, "bad.bin"))
        print("OK")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
