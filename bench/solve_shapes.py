"""bench/run.py --solve-shapes: dalr-gpu's solve from an activation file against its two
peers, side by side, in one run on one machine.

    /usr/bin/python3 bench/run.py --solve-shapes [fc7,pn,fc6] [--device cpu|cuda] [--repeats 3]
                                  [--threads N] [--max-load L] [--out bench-out]

Per shape (m x n, p samples; random data from `peer_numpy_dalr.py --make`, kept in
BUILD/bench/solve-shapes/), rank --rank (256), fp32, each tool one process timed by its wall
time from start to exit:
  dalr-gpu   `dalr-gpu compress --acts FILE --method dalr --precision fp32 --no-error`
             (its defaults: `--solve auto`, `--eigensolver auto`)
  NumPy/SciPy  bench/peer_numpy_dalr.py (SYRK, SYMM, scipy.linalg.eigh of the top k,
             cho_factor/cho_solve; NumPy alone where SciPy is missing, which it says)
  torch      bench/peer_torch_dalr.py (matmul, torch.linalg.eigh, cholesky_ex,
             cholesky_solve) on --device
The peers run in BUILD/peer-venv (bench/setup_peers.sh: current NumPy, SciPy and torch from
PyPI) or --peer-python; where it is missing, the NumPy peer runs on this Python and the torch
peer on this Python's torch if it has one (else it is skipped), and the table says which.
All three get the same BLAS thread count (--threads; OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS, torch.set_num_threads) and OPENBLAS_CORETYPE as dalr-gpu picks it.

Order: a warm-up of each tool at the first shape; then per shape its files are read once
(page cache), and --repeats rounds run the tools interleaved (A, B, C, A, B, C, ...). Each
run records its wall and CPU seconds (CPU / wall: the cores it got), the cores other
processes kept busy meanwhile (/proc/stat's busy time less the run's own CPU time), peak
resident memory, the load average before and after, and the tool's own stage times. On a
shared machine, --max-busy C makes each run first wait (at most --load-wait s) until other
processes use at most C cores over 5 s, and run again (twice at most) when they took more
than C while it ran, keeping the attempt they disturbed least; the others stay in the JSON. Afterwards the three compressed layers are compared on the first 1,024 samples in
float64: each one's relative training error ||W X - A B X|| / ||W X|| (they must agree to
1e-3 relative) and their outputs' difference from dalr-gpu's.

Prints the table (speed-up = peer's median wall / dalr-gpu's), writes OUT/solve_shapes.json
and OUT/solve_shapes.md.
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness_util import fail, log, run, write_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {"fc7": (4096, 4096, 5994), "pn": (4096, 16384, 2048), "fc6": (4096, 25088, 5994)}
QUICK = "tiny-pn=96:160:64,tiny=120:80:150"
# Issue 15's CPU targets, fp32, one run on one machine.
TARGETS = {"fc7": ("NumPy/SciPy >= 1.5x", lambda s: s["ratio"].get("numpy", 0) >= 1.5),
           "pn": ("NumPy/SciPy >= 3x", lambda s: s["ratio"].get("numpy", 0) >= 3.0),
           "fc6": ("dalr-gpu < 20 s", lambda s: s["tools"]["dalr-gpu"]["median_s"] < 20.0)}
QUIET = 0.3  # cores other processes may keep busy during a "quiet" run (without --max-busy)
AGREE_ERR = 1e-3  # relative difference of the training errors
SAMPLES = 1024  # samples the agreement is measured on
NAMES = {"dalr-gpu": "dalr-gpu", "numpy": "NumPy/SciPy", "torch": "torch"}


def parse_shapes(spec):
    """[(name, m, n, p)] from `fc7,pn,fc6`, `m:n:p` or `name=m:n:p` items."""
    out = []
    for item in filter(None, spec.split(",")):
        if item in SHAPES:
            out.append((item, *SHAPES[item]))
            continue
        name, _, dims = item.rpartition("=")
        try:
            m, n, p = (int(v) for v in dims.split(":"))
            assert min(m, n, p) > 0
        except (ValueError, AssertionError):
            fail(f"--solve-shapes: {item} is neither {', '.join(SHAPES)} nor [name=]m:n:p")
        out.append((name or f"{m}x{n}-p{p}", m, n, p))
    return out


def imports(py, module):
    """True when the Python `py` can import `module`."""
    if not py or not os.access(py, os.X_OK):
        return False
    return subprocess.run([py, "-c", f"import {module}"], capture_output=True).returncode == 0


def peer_pythons(a):
    """{"numpy": python, "torch": python or None}, and a line saying where they came from."""
    venv = a.peer_python or os.path.join(a.build, "peer-venv", "bin", "python")
    if imports(venv, "scipy") and imports(venv, "torch"):
        return {"numpy": venv, "torch": None if a.no_peer else venv}, f"peers in {venv}"
    torch_py = None if a.no_peer else next(
        (py for py in (venv, sys.executable) if imports(py, "torch")), None)
    why = (f"{venv} lacks SciPy or torch (bench/setup_peers.sh makes it: current NumPy, "
           f"SciPy and torch from PyPI): the NumPy peer runs on {sys.executable}"
           + (f", the torch peer on {torch_py}'s torch" if torch_py else
              ", the torch peer is skipped" + (" (--no-peer)" if a.no_peer else
                                               " (no torch)")))
    log(why)
    return {"numpy": venv if imports(venv, "numpy") else sys.executable, "torch": torch_py}, why


def shape_data(a, m, n, p):
    """BUILD/bench/solve-shapes/MxN-pP: model.bin (layer fc) and acts.npy, made once."""
    d = os.path.join(a.data_dir, f"{m}x{n}-p{p}")
    if not (os.path.isfile(os.path.join(d, "model.bin"))
            and os.path.isfile(os.path.join(d, "acts.npy"))):
        log(f"making {d} ({p * n * 4 / 2**20:.0f} MiB of activations)")
        os.makedirs(a.data_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".making-", dir=a.data_dir)
        run([sys.executable, os.path.join(HERE, "peer_numpy_dalr.py"), "--make", tmp, "--m",
             str(m), "--n", str(n), "--p", str(p)], f"making the {m} x {n}, p = {p} data")
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
    return d


def commands(a, d, k, tmp, tag, pys):
    """{tool: (command, its JSON, its compressed model)}, in the interleaving order."""
    out = {}
    ours = os.path.join(tmp, f"ours-{tag}")
    out["dalr-gpu"] = ([a.dalr_gpu, "compress", "--model", os.path.join(d, "model.bin"),
                        "--layer", "fc", "--acts", os.path.join(d, "acts.npy"), "--method",
                        "dalr", "--rank", str(k), "--precision", "fp32", "--no-error",
                        "--device", a.device, "-q", "--out", ours + ".bin", "--report",
                        ours + ".json"], ours + ".json", ours + ".bin")
    peers = [("numpy", "peer_numpy_dalr.py", ["--eigh", a.numpy_eigh])]
    if pys["torch"]:
        peers.append(("torch", "peer_torch_dalr.py", ["--device", a.device, "--threads",
                                                      str(a.threads)]))
    for tool, script, extra in peers:
        base = os.path.join(tmp, f"{tool}-{tag}")
        out[tool] = ([pys[tool], os.path.join(HERE, script), "--run", d, "--rank", str(k),
                      "--out", base + ".bin", "--json", base + ".json"] + extra,
                     base + ".json", base + ".bin")
    return out


def tool_env(a, core):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(a.threads)
    if core:
        env.setdefault("OPENBLAS_CORETYPE", core)
    return env


def busy_cpu_s():
    """CPU seconds the whole machine has been busy since boot (/proc/stat: all but idle
    and iowait), to tell how much other processes ran alongside a timed one."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def others_busy(seconds=5.0):
    """Cores the machine's processes keep busy now, over `seconds` (the harness sleeps)."""
    b0, t0 = busy_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return (busy_cpu_s() - b0) / (time.perf_counter() - t0)


def wait_for_quiet(a):
    """Seconds waited until other processes keep at most --max-busy cores busy (0: no
    wait), in 30 s steps, at most --load-wait seconds."""
    waited = 0
    while a.max_busy > 0 and waited < a.load_wait:
        busy = others_busy()
        if busy <= a.max_busy:
            break
        log(f"other processes keep {busy:.2f} cores busy (> --max-busy {a.max_busy}, load "
            f"{os.getloadavg()[0]:.1f}): waiting")
        time.sleep(25)
        waited += 30
    return waited


def one_run(a, tool, cmd, js, env, what):
    """One timed run; with --max-busy, run again (at most twice) when other processes took
    more than --max-busy cores while it ran, and keep the least disturbed attempt."""
    attempts = []
    for attempt in range(3):
        waited = wait_for_quiet(a)
        load0, busy0 = os.getloadavg()[0], busy_cpu_s()
        usage = []
        wall, _ = run(cmd, what, env=env, usage=usage)
        ru = usage[0]
        cpu = ru.ru_utime + ru.ru_stime
        rec = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": ru.ru_maxrss / 1024,
               "others_cores": max(0.0, busy_cpu_s() - busy0 - cpu) / wall,
               "load_before": load0, "load_after": os.getloadavg()[0], "waited_s": waited,
               "timing_s": json.load(open(js)).get("timing_s")}
        log(f"{what}: {wall:.2f} s (CPU {cpu / wall:.2f} cores, others "
            f"{rec['others_cores']:.2f} cores, load {load0:.1f} -> {rec['load_after']:.1f})")
        attempts.append(rec)
        if a.max_busy <= 0 or rec["others_cores"] <= a.max_busy or attempt == 2:
            break
        log(f"{what}: other processes took {rec['others_cores']:.2f} cores: run again")
    # The attempt that other processes disturbed least (chosen by their CPU use, not by its
    # own time). The tool's versions and solve path are the same in every attempt.
    rec = min(attempts, key=lambda r: r["others_cores"])
    attempts.remove(rec)
    rep = json.load(open(js))
    for key in ("solve", "openblas_core", "tool", "numpy", "scipy", "fallback", "eigh",
                "torch", "device", "notes"):
        if key in rep:
            rec[key] = rep[key]
    rec["discarded"] = attempts
    return rec


def read_through(paths):
    """Reads files once so that every tool finds them in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def agreement(d, outs):
    """Each tool's relative training error on the first SAMPLES samples (float64), and its
    outputs' difference from dalr-gpu's, relative to ||W X||."""
    import numpy as np
    from peer_numpy_dalr import load_model
    x = np.load(os.path.join(d, "acts.npy"), mmap_mode="r")[:SAMPLES].astype(np.float64)
    w = load_model(os.path.join(d, "model.bin"))["fc.weight"].astype(np.float64)
    y = x @ w.T
    ref = np.linalg.norm(y)
    pred, res = {}, {}
    for tool, path in outs.items():
        t = load_model(path)
        pred[tool] = (x @ t["fc.0.weight"].T.astype(np.float64)) @ t["fc.1.weight"].T.astype(
            np.float64)
        res[tool] = {"error_rel": float(np.linalg.norm(y - pred[tool]) / ref)}
    e0 = res["dalr-gpu"]["error_rel"]
    for tool, r in res.items():
        r["output_diff_vs_dalr_gpu"] = float(np.linalg.norm(pred[tool] - pred["dalr-gpu"]) / ref)
        r["agree"] = abs(r["error_rel"] - e0) <= AGREE_ERR * e0
    return {"samples": int(x.shape[0]), "tolerance": AGREE_ERR, "tools": res}


def summarise(runs, quiet):
    """Median and spread of a tool's runs; "quiet": the same over the runs during which
    other processes kept at most `quiet` cores busy."""
    walls = [r["wall_s"] for r in runs]
    med = statistics.median(walls)
    mid = min(runs, key=lambda r: abs(r["wall_s"] - med))
    loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    calm = [r["wall_s"] for r in runs if r["others_cores"] <= quiet]
    return {"median_s": med, "walls_s": walls, "timing_s_median_run": mid["timing_s"],
            "cores_used": statistics.median(r["cpu_s"] / r["wall_s"] for r in runs),
            "others_cores": max(r["others_cores"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "load": [min(loads), max(loads)],
            "quiet": {"max_others_cores": quiet, "runs": len(calm),
                      "median_s": statistics.median(calm) if calm else None},
            "runs": runs}


def summarise_shape(s, device, quiet):
    """Fills s["tools"] from the runs, the speed-ups (all runs; quiet runs only) and the
    target."""
    s["tools"] = {t: summarise(v["runs"], quiet) for t, v in s["tools"].items()}
    tv = s["tools"]
    s["ratio"] = {t: v["median_s"] / tv["dalr-gpu"]["median_s"] for t, v in tv.items()
                  if t != "dalr-gpu"}
    q0 = tv["dalr-gpu"]["quiet"]["median_s"]
    s["ratio_quiet"] = {t: (v["quiet"]["median_s"] / q0 if q0 and v["quiet"]["median_s"]
                            else None) for t, v in tv.items() if t != "dalr-gpu"}
    if device == "cpu" and s["name"] in TARGETS:
        what, ok = TARGETS[s["name"]]
        s["target"] = {"what": what, "met": bool(ok(s))}
        q = dict(s, ratio={t: r for t, r in s["ratio_quiet"].items() if r},
                 tools={t: dict(v, median_s=v["quiet"]["median_s"]) for t, v in tv.items()})
        if q0 and (s["name"] == "fc6" or "numpy" in q["ratio"]):
            s["target"]["met_quiet_runs"] = bool(ok(q))


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            info = dict((key.strip(), val) for key, _, val in (
                line.partition(":") for line in f.read().split("\n\n")[0].splitlines()))
        model = (f"{info['model name'].strip()} (family {info['cpu family'].strip()}, model "
                 f"{info['model'].strip()})")
    except (OSError, KeyError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30}


def measure(a, shapes, pys, tmp):
    """{"shapes": [...]} with every run; the warm-up first."""
    results, core, env = [], None, None
    for i, (name, m, n, p) in enumerate(shapes):
        k = min(a.rank, m, n)
        d = shape_data(a, m, n, p)
        cmds = commands(a, d, k, tmp, name, pys)
        if i == 0:  # libraries into the page cache; dalr-gpu says which OpenBLAS kernels
            for tool, (cmd, js, _) in cmds.items():
                run(cmd, f"{tool} at {name} (warm-up)", env=tool_env(a, core))
                if tool == "dalr-gpu":
                    core = json.load(open(js)).get("openblas_core")
            env = tool_env(a, core)
        read_through([os.path.join(d, "model.bin"), os.path.join(d, "acts.npy")])
        runs = {tool: [] for tool in cmds}
        for r in range(a.repeats):
            for tool, (cmd, js, _) in cmds.items():
                rec = one_run(a, tool, cmd, js, env, f"{tool} at {name}, round {r + 1}")
                runs[tool].append(dict(rec, round=r + 1))
        s = {"name": name, "m": m, "n": n, "p": p, "k": k, "data": d,
             "tools": {tool: {"runs": v} for tool, v in runs.items()}}
        summarise_shape(s, a.device, a.max_busy or QUIET)
        s["agreement"] = agreement(d, {tool: c[2] for tool, c in cmds.items()})
        results.append(s)
        # What is done so far survives an interrupted run.
        write_atomic(os.path.join(a.out, "solve_shapes.partial.json"),
                     json.dumps({"device": a.device, "shapes": results}, indent=2) + "\n")
        log(f"{name}: " + ", ".join(f"{t} {v['median_s']:.2f} s" for t, v in s["tools"].items()))
    return results, core, env


def fmt_load(lo_hi):
    return f"{lo_hi[0]:.1f}-{lo_hi[1]:.1f}"


def table(res):
    tools = [t for t in ("dalr-gpu", "numpy", "torch") if any(t in s["tools"]
                                                             for s in res["shapes"])]
    v = res["versions"]
    scipy = v.get("scipy") or "(missing: NumPy fallback)"
    names = dict(NAMES, numpy="NumPy/SciPy" if v.get("scipy") else "NumPy (no SciPy)",
                 torch=f"torch {v.get('torch')}")
    head = (f"dalr-gpu's solve from an activation file against its peers, {res['date']}, "
            f"{res['device']}; {res['machine']['cpu']}, {res['threads']} threads, "
            f"OPENBLAS_CORETYPE={res['openblas_core']}; rank {res['rank']}, fp32, --no-error; "
            f"process wall time, median of {res['repeats']} interleaved rounds.\n"
            f"Peers: NumPy {v.get('numpy')} + SciPy {scipy} (eigh: {v.get('eigh')}), torch "
            f"{v.get('torch') or '(skipped)'}; "
            f"{res['peers_from']}.")
    cols = ["shape (m x n, p)", "dalr-gpu (s)"]
    for t in tools[1:]:
        cols += [f"{names[t]} (s)", f"{names[t]} / dalr-gpu"]
    cols += ["target", "load (1 min)"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for s in res["shapes"]:
        row = [f"{s['name']} ({s['m']} x {s['n']}, p = {s['p']:,})",
               f"**{s['tools']['dalr-gpu']['median_s']:.2f}**"]
        for t in tools[1:]:
            tv = s["tools"].get(t)
            row += [f"{tv['median_s']:.2f}", f"**{s['ratio'][t]:.2f}x**"] if tv else ["-", "-"]
        tg = s.get("target")
        row.append(f"{tg['what']}: {'met' if tg['met'] else 'MISSED'}" if tg else "-")
        loads = [x for tv in s["tools"].values() for x in tv["load"]]
        row.append(fmt_load([min(loads), max(loads)]))
        lines.append("| " + " | ".join(row) + " |")
    quiet = res["shapes"][0]["tools"]["dalr-gpu"]["quiet"]["max_others_cores"]
    lines += ["", f"The same, over the quiet runs only (other processes kept at most {quiet} "
              "cores busy while they ran; count in brackets):", "",
              "| " + " | ".join(cols[:-1]) + " |", "|" + " --- |" * (len(cols) - 1)]
    for s in res["shapes"]:
        def q(t):
            v = s["tools"].get(t)
            if not v or v["quiet"]["median_s"] is None:
                return f"- ({v['quiet']['runs'] if v else 0})"
            return f"{v['quiet']['median_s']:.2f} ({v['quiet']['runs']})"
        row = [s["name"], q("dalr-gpu")]
        for t in tools[1:]:
            r = s["ratio_quiet"].get(t)
            row += [q(t), f"{r:.2f}x" if r else "-"]
        tg = s.get("target", {})
        row.append(f"{tg['what']}: {'met' if tg['met_quiet_runs'] else 'MISSED'}"
                   if "met_quiet_runs" in tg else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| shape | tool | walls (s) | cores used | others' cores (max) | peak RSS "
              "(MiB) | stages (s) | training error (rel.) | outputs vs dalr-gpu |",
              "|" + " --- |" * 9]
    for s in res["shapes"]:
        for t, tv in s["tools"].items():
            ag = s["agreement"]["tools"][t]
            st = tv["timing_s_median_run"] or {}
            stages = ", ".join(f"{key} {val:.2f}" for key, val in st.items()
                               if key != "total" and val >= 0.005)
            path = tv["runs"][0].get("solve")
            lines.append(f"| {s['name']} | {names[t]}{f' ({path})' if path else ''} | "
                         + ", ".join(f"{w:.2f}" for w in tv["walls_s"])
                         + f" | {tv['cores_used']:.2f} | {tv['others_cores']:.2f} | "
                         f"{tv['peak_rss_mib']:.0f} | {stages} | "
                         f"{ag['error_rel']:.7f}{'' if ag['agree'] else ' (DISAGREES)'} | "
                         f"{ag['output_diff_vs_dalr_gpu']:.1e} |")
    return "\n".join(lines) + "\n"


def main(a):
    """The --solve-shapes mode of bench/run.py (a: its parsed arguments)."""
    if not os.access(a.dalr_gpu, os.X_OK):
        fail(f"{a.dalr_gpu} is missing: build first (tools/setup.sh)")
    if a.repeats < 1 or a.rank < 1 or a.threads < 1:
        fail("--repeats, --rank and --threads must be positive")
    shapes = parse_shapes(a.solve_shapes)
    a.data_dir = a.data_dir or os.path.join(a.build, "bench", "solve-shapes")
    pys, peers_from = peer_pythons(a)
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="dalr-solve-shapes-")
    try:
        shapes_res, core, _ = measure(a, shapes, pys, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = {t: v["runs"][0] for t, v in shapes_res[0]["tools"].items()}
    versions = {"dalr-gpu": subprocess.run([a.dalr_gpu, "--version"], capture_output=True,
                                           text=True).stdout.strip(),
                "numpy": first["numpy"].get("numpy"), "scipy": first["numpy"].get("scipy"),
                "eigh": first["numpy"].get("eigh"),
                "torch": first["torch"].get("torch") if "torch" in first else None,
                "numpy_python": pys["numpy"], "torch_python": pys["torch"]}
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": a.device, "rank": a.rank,
           "repeats": a.repeats, "threads": a.threads, "openblas_core": core,
           "machine": machine(), "versions": versions, "peers_from": peers_from,
           "max_busy": a.max_busy, "shapes": shapes_res}
    text = table(res)
    print(text)
    write_atomic(os.path.join(a.out, "solve_shapes.json"), json.dumps(res, indent=2) + "\n")
    write_atomic(os.path.join(a.out, "solve_shapes.md"), text)
    os.remove(os.path.join(a.out, "solve_shapes.partial.json"))
    bad = [f"{s['name']}: {t}" for s in shapes_res for t, r in s["agreement"]["tools"].items()
           if not r["agree"]]
    if bad:
        fail(f"training errors disagree with dalr-gpu's ({', '.join(bad)}; solve_shapes.json)")
    if a.quick:
        for s in shapes_res:
            assert all(v["median_s"] > 0 for v in s["tools"].values()), s["name"]
            assert "numpy" in s["tools"], s["name"]
        print("bench/run.py --quick --solve-shapes: solve_shapes.json complete ("
              + ", ".join(NAMES[t] for t in shapes_res[0]["tools"]) + ")")
    return 0


if __name__ == "__main__":
    # python3 bench/solve_shapes.py OUT/solve_shapes.json [QUIET]: the table again, with the
    # quiet runs counted at another threshold of other processes' cores.
    res = json.load(open(sys.argv[1]))
    for s in res["shapes"]:
        summarise_shape(s, res["device"], float(sys.argv[2]) if len(sys.argv) > 2 else QUIET)
    print(table(res))
