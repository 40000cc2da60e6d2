#!/usr/bin/env bash
# Run HERE (a Debian machine with apt), before a device run: downloads the .deb files of
# the build dependencies that a GPU machine with no package registry may lack (OpenBLAS,
# LAPACKE, nlohmann-json, CLI11, GoogleTest) into .devdeps/ (git-ignored), where
# bench/device_check.sh unpacks them into a private prefix when the system lacks them.
# Carry .devdeps along with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devdeps
grep -qxF "/.devdeps/" .git/info/exclude 2>/dev/null || echo "/.devdeps/" >> .git/info/exclude
cd .devdeps
apt-get download libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libopenblas0 \
  liblapacke liblapacke-dev libtmglib3 libtmglib-dev libgfortran5 libquadmath0 \
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
ls -la
