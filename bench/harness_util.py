"""What bench/run.py and its modes share: one-line failure, progress log, timed processes."""
import os
import subprocess
import sys
import tempfile
import time

T0 = time.time()


def fail(msg):
    print(f"bench/run.py: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg):
    print(f"[bench +{time.time() - T0:.0f}s] {msg}", file=sys.stderr, flush=True)


def run(cmd, what, env=None, rss=None, usage=None):
    """Runs cmd; returns (wall seconds, output). Fails the harness with its output on error.
    With a list `rss`, appends the process's peak resident memory in MiB (its own, from
    wait4, not its children's); with a list `usage`, appends its resource usage (wait4's
    rusage: CPU seconds, peak memory)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t
        out.seek(0)
        text = out.read()
    if p.returncode != 0:
        fail(f"{what} failed (exit {p.returncode}):\n  {' '.join(cmd)}\n{text[-3000:]}")
    if rss is not None:
        rss.append(ru.ru_maxrss / 1024)  # KiB on Linux
    if usage is not None:
        usage.append(ru)
    return dt, text


def write_atomic(path, text):
    """Writes text to path through a temporary file and a rename."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
