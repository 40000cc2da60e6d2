"""The shared checking of the Python tool tests (tests/tools/test_*.py): `check` prints one
line per check, `failed` counts the failures so far, `finish` prints the count and exits 1 when any failed."""
import sys

_failures = 0


def check(cond, what):
    global _failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    _failures += not cond


def failed():
    return _failures


def finish():
    print("all passed" if not _failures else f"{_failures} check(s) failed")
    sys.exit(1 if _failures else 0)
