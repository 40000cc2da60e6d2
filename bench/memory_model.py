#!/usr/bin/python3
"""The compress job's memory model against measured peaks (bench/RESULTS.md, "memory").

For each shape (m x n layer, p random activations from peer_numpy_dalr.py --make), each
precision and each --solve, runs `dalr-gpu compress --acts FILE --device cpu` and prints a
Markdown table: the model's host peak (the report's memory.host_peak_bytes: the process's
resident bytes before the job, measured, plus the largest stage), the process's peak as the
job left it (memory.host_peak_measured_bytes, VmHWM), and /usr/bin/time's maximum resident
size (which also sees the program's start and exit). "job" columns leave the program's own
bytes out. Then the dual's slope: what one more kept sample costs, predicted and measured
across p.

  memory_model.py --build build --data /tmp/dalr-mem [--shapes 1024x4096:512,1024,2048,4096]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def make(data, m, n, p):
    d = os.path.join(data, f"{m}x{n}-p{p}")
    if not os.path.exists(os.path.join(d, "acts.npy")):
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "peer_numpy_dalr.py"), "--make", d,
                        "--m", str(m), "--n", str(n), "--p", str(p)], check=True)
    return d


def run(binary, d, rank, precision, solve, extra):
    with tempfile.TemporaryDirectory() as tmp:
        rep, timing = os.path.join(tmp, "r.json"), os.path.join(tmp, "time.txt")
        cmd = ["/usr/bin/time", "-f", "%M %e", "-o", timing, binary, "compress", "--model",
               os.path.join(d, "model.bin"), "--layer", "fc", "--acts", os.path.join(d, "acts.npy"),
               "--rank", str(rank), "--out", os.path.join(tmp, "o.bin"), "--report", rep,
               "--device", "cpu", "-q", "--precision", precision, "--solve", solve] + extra
        subprocess.run(cmd, check=True)
        r = json.load(open(rep))
        kb, wall = open(timing).read().split()
        return r, int(kb) * 1024, float(wall)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "dalr-mem"))
    ap.add_argument("--shapes", nargs="+", default=["1024x4096:512,1024,2048,4096"],
                    help="MxN:P1,P2,... (activation counts)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--precisions", default="fp32,fp64")
    ap.add_argument("--json", help="write the rows here too")
    a = ap.parse_args()
    binary = os.path.join(a.build, "dalr-gpu")
    rows = []
    print("| m x n | p | precision | solve | model (stage) | measured in job | error | "
          "job: model / measured | max RSS (time) | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in a.shapes:
        mn, ps = spec.split(":")
        m, n = (int(v) for v in mn.split("x"))
        for p in (int(v) for v in ps.split(",")):
            d = make(a.data, m, n, p)
            for precision in a.precisions.split(","):
                for solve in ("primal", "dual"):
                    r, rss, wall = run(binary, d, a.rank, precision, solve, [])
                    mem = r["memory"]
                    pred, meas, base = (mem["host_peak_bytes"], mem["host_peak_measured_bytes"],
                                        mem["baseline_bytes"])
                    row = dict(m=m, n=n, p=p, precision=precision, solve=r["solve"], pred=pred,
                               measured=meas, baseline=base, max_rss=rss, wall=wall,
                               stage=mem["host_peak_stage"])
                    rows.append(row)
                    print(f"| {m} x {n} | {p} | {precision} | {r['solve']} | "
                          f"{pred / 1e6:.1f} MB ({row['stage']}) | {meas / 1e6:.1f} MB | "
                          f"{100 * (pred - meas) / meas:+.1f}% | "
                          f"{(pred - base) / 1e6:.1f} / {(meas - base) / 1e6:.1f} MB "
                          f"({100 * (pred - meas) / (meas - base):+.1f}%) | {rss / 1e6:.1f} MB | "
                          f"{wall:.2f} s |", flush=True)
    print("\nThe dual's kept activations: bytes per extra sample between successive p")
    print("| m x n | precision | p | model | measured | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in sorted({(r["m"], r["n"], r["precision"]) for r in rows}):
        dual = sorted((r for r in rows if (r["m"], r["n"], r["precision"]) == key and
                       r["solve"] == "dual"), key=lambda r: r["p"])
        for lo, hi in zip(dual, dual[1:]):
            dp = hi["p"] - lo["p"]
            # Each run's own program bytes out: the job's growth per sample.
            pm = ((hi["pred"] - hi["baseline"]) - (lo["pred"] - lo["baseline"])) / dp
            mm = ((hi["measured"] - hi["baseline"]) - (lo["measured"] - lo["baseline"])) / dp
            print(f"| {key[0]} x {key[1]} | {key[2]} | {lo['p']} -> {hi['p']} | {pm:.0f} B | "
                  f"{mm:.0f} B | {100 * (pm - mm) / mm:+.1f}% |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
