#!/usr/bin/env bash
# Set-up for a fresh Debian 12 machine (or CI): installs the build dependencies that
# are missing, configures and builds dalr-gpu into build/ (the CPU core always, the
# CUDA backend whenever nvcc is found), and generates the small example into
# build/example/. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(cmake make g++ pkg-config libopenblas-dev liblapacke-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev libjpeg-dev libpng-dev python3-numpy libdnnl-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The CUDA toolkit is not on PATH everywhere it is installed.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${DALR_CMAKE_ARGS:-}
cmake --build build -j"$(nproc)"
build/make_example build/example
echo "setup: built build/dalr-gpu; example in build/example/"
