#!/usr/bin/env bash
# Run HERE (a Debian machine with apt), before a device run:
# 1. downloads the .deb files of the build dependencies that a GPU machine with no package
#    registry may lack (OpenBLAS, LAPACKE, nlohmann-json, CLI11, GoogleTest) into .devdeps/
#    (git-ignored), where bench/device_check.sh unpacks them into a private prefix when the
#    system lacks them;
# 2. installs python3-skimage when its photographs are missing (the streaming benchmark's
#    images are made from them: bench/make_bench_images.py) and makes the images in
#    build/bench-images (512 JPEGs, about 13 MB), unless they are there already.
# Carry .devdeps and build/bench-images along with the working tree. No ctest needs
# python3-skimage (bench_harness_smoke runs on the shipped example's images).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .devdeps
grep -qxF "/.devdeps/" .git/info/exclude 2>/dev/null || echo "/.devdeps/" >> .git/info/exclude
(
  cd .devdeps
  apt-get download libopenblas0-pthread libopenblas-pthread-dev libopenblas-dev libopenblas0 \
    liblapacke liblapacke-dev libtmglib3 libtmglib-dev libgfortran5 libquadmath0 \
    nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
  ls -la
)

IMGS=${DALR_BENCH_IMAGES:-build/bench-images}
if [ ! -d "$IMGS" ]; then
  if ! dpkg-query -W -f='${Status}' python3-skimage 2>/dev/null | grep -q "install ok installed"; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-skimage
  fi
  /usr/bin/python3 bench/make_bench_images.py "$IMGS" --count 512
fi
echo "device_deps: carry .devdeps and $IMGS ($(du -sh "$IMGS" | cut -f1))"
