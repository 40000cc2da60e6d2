#!/usr/bin/env bash
# Makes the virtual environment of the benchmark's current peers, build/peer-venv: pinned
# NumPy, SciPy and PyTorch from PyPI, isolated from Debian's python3-numpy 1.24 and
# python3-torch 1.13 (whose fp32 CPU `eigh` fails from m ~ 2900 on, pytorch/pytorch#145801).
# `bench/run.py --solve-shapes` runs bench/peer_numpy_dalr.py and bench/peer_torch_dalr.py
# in it. PyPI's Linux torch wheel pulls its CUDA libraries (about 4 GB on disk); the same
# environment serves --device cuda on a GPU machine. Idempotent: a second run with the
# versions in place does nothing. Not run by CI (it downloads gigabytes).
#   bench/setup_peers.sh                 # into build/peer-venv
#   DALR_PEER_VENV=DIR bench/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DALR_PEER_VENV:-build/peer-venv}
py=${DALR_PYTHON:-/usr/bin/python3}
NUMPY=2.4.6
SCIPY=1.17.1
TORCH=2.15.0

if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

have() {
  "$venv/bin/python" - "$NUMPY" "$SCIPY" "$TORCH" <<'EOF' 2>/dev/null
import sys
import numpy, scipy, torch
got = (numpy.__version__, scipy.__version__, torch.__version__.split("+")[0])
sys.exit(0 if got == tuple(sys.argv[1:]) else 1)
EOF
}
if ! have; then
  echo "setup_peers: installing numpy $NUMPY, scipy $SCIPY, torch $TORCH into $venv (GBs)"
  "$venv/bin/pip" install -q --no-cache-dir --upgrade pip
  "$venv/bin/pip" install -q --no-cache-dir "numpy==$NUMPY" "scipy==$SCIPY" "torch==$TORCH"
fi
# The check the old torch fails: an fp32 eigh at m = 3000 on the CPU.
"$venv/bin/python" - <<'EOF'
import numpy, scipy, torch
g = torch.randn(3000, 64)
torch.linalg.eigh(g @ g.T)
print(f"setup_peers: {__import__('sys').prefix}: numpy {numpy.__version__}, scipy "
      f"{scipy.__version__}, torch {torch.__version__} (CUDA built: {torch.version.cuda}); "
      "fp32 eigh at m = 3000 works")
EOF
