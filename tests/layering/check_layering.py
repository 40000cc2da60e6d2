#!/usr/bin/env python3
"""The folder rule of docs/architecture.md, checked on every build.

Each folder of src/ may include only the folders listed for it below (and the public
headers in include/dalr/, which include nothing of src/). The allowed edges form a
chain, so no include cycle between folders can exist:

    cli -> core -> io -> common      (the jobs reach both backends through dalr::Backend)
    cuda -> cpu -> io -> common

A backend (cpu, cuda) never includes the jobs (core) or the command line (cli).
kernels/ holds device code and includes only kernels/ and cuda/cuda_check.hpp.
No file in src/ or kernels/ has more than 600 lines.

Usage: check_layering.py SOURCE_DIR    (exit 0: the rule holds; 1: it lists what breaks it)
"""
import os
import re
import sys

ALLOWED = {
    "common": {"common"},
    "io": {"io", "common"},
    "cpu": {"cpu", "io", "common"},
    # The GPU backend runs a few host parts through its CPU twin (pruning's error).
    "cuda": {"cuda", "cpu", "io", "common"},
    # The jobs reach both backends only through dalr::Backend.
    "core": {"core", "io", "common"},
    "cli": {"cli", "core", "io", "common"},
    # The Python extension: like the command line, a client of the public headers.
    "python": {"python", "core", "io", "common"},
}
MAX_LINES = 600
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def main(root):
    problems = []
    src = os.path.join(root, "src")
    for folder in sorted(os.listdir(src)):
        d = os.path.join(src, folder)
        if not os.path.isdir(d):
            continue
        if folder not in ALLOWED:
            problems.append(f"src/{folder}/ is not in the folder rule (tests/layering)")
            continue
        for name in sorted(os.listdir(d)):
            for inc in includes(os.path.join(d, name)):
                top = inc.split("/")[0] if "/" in inc else None
                if top in (None, "dalr"):
                    continue  # public headers, or a kernel header (.cuh) of kernels/
                if top not in ALLOWED[folder]:
                    problems.append(f"src/{folder}/{name} includes {inc}: "
                                    f"src/{folder}/ may include only {sorted(ALLOWED[folder])}")
    for name in sorted(os.listdir(os.path.join(root, "include", "dalr"))):
        for inc in includes(os.path.join(root, "include", "dalr", name)):
            if not inc.startswith("dalr/"):
                problems.append(f"include/dalr/{name} includes {inc}: public headers "
                                f"include only dalr/")
    for name in sorted(os.listdir(os.path.join(root, "kernels"))):
        for inc in includes(os.path.join(root, "kernels", name)):
            if "/" in inc and inc != "cuda/cuda_check.hpp":
                problems.append(f"kernels/{name} includes {inc}")
    # A file that grows past this usually holds two ideas (CONVENTIONS.md).
    for folder in ["src/" + f for f in sorted(os.listdir(src))] + ["kernels"]:
        d = os.path.join(root, folder)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                lines = sum(1 for _ in f)
            if lines > MAX_LINES:
                problems.append(f"{folder}/{name} has {lines} lines (at most {MAX_LINES}): "
                                f"split it by concern")
    for p in problems:
        print("layering:", p)
    print(f"layering: {len(problems)} problem(s)")
    return 1 if problems else 0


def self_test():
    """The check fails on a tree that breaks the rule (a backend including a job)."""
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        for d in ("src/core", "src/cpu", "include/dalr", "kernels"):
            os.makedirs(os.path.join(t, d))
        with open(os.path.join(t, "src/core/job.cpp"), "w") as f:
            f.write('#include "io/atomic_file.hpp"\n#include "dalr/backend.hpp"\n')
        with open(os.path.join(t, "src/cpu/solver.cpp"), "w") as f:
            f.write('#include "common/finite.hpp"\n')
        good = main(t)
        with open(os.path.join(t, "src/cpu/solver.cpp"), "a") as f:
            f.write('#include "core/job.hpp"\n')
        bad = main(t)
        with open(os.path.join(t, "src/cpu/solver.cpp"), "w") as f:
            f.write('#include "common/finite.hpp"\n')
        with open(os.path.join(t, "src/core/job.cpp"), "a") as f:
            f.write('#include "cpu/recon.hpp"\n')
        job_to_backend = main(t)
        with open(os.path.join(t, "src/core/job.cpp"), "w") as f:
            f.write('#include "dalr/backend.hpp"\n')
        with open(os.path.join(t, "src/cpu/solver.cpp"), "w") as f:
            f.write("// x\n" * (MAX_LINES + 1))
        long_file = main(t)
    ok = good == 0 and bad == 1 and job_to_backend == 1 and long_file == 1
    print("layering self-test:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
