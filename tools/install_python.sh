#!/usr/bin/env bash
# Installs the Python package `dalr` (pip install . : scikit-build-core + nanobind, the same
# CMake project; CUDA when nvcc is found) into the virtual environment build/pyenv, made
# from Debian's python3 with its site packages (numpy, and torch for dalr.compress:
# apt-get install python3-torch). ctest's python_api test runs in it; rerun this after
# changing src/python/ or python/dalr/. DALR_WITH_CUDA=OFF skips the CUDA backend (the
# build folder build/pip/ remembers CMake options, so the choice is passed every time);
# extra pip arguments pass through.
# Into your own environment: pip install .   (from the repository's root)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${DALR_PYTHON:-/usr/bin/python3}
missing=()
for p in python3-venv python3-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ -x build/pyenv/bin/python ] || "$py" -m venv --system-site-packages build/pyenv
# The build requirements of pyproject.toml, pinned, installed once so that later installs
# build without fetching anything (--no-build-isolation).
build/pyenv/bin/pip install -q "scikit-build-core==1.1.2" "nanobind==3.1.0"
settings=(--config-settings=cmake.define.DALR_WITH_CUDA="${DALR_WITH_CUDA:-ON}")
if command -v ccache >/dev/null; then
  settings+=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache
            --config-settings=cmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
build/pyenv/bin/pip install -q --no-build-isolation "${settings[@]}" "$@" .
build/pyenv/bin/python -c "import dalr; print('install_python: dalr', dalr.__version__, 'from', dalr.__file__, '| CUDA built:', dalr._api._dalr.cuda_built())"
