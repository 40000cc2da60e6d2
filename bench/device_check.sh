#!/usr/bin/env bash
# One call on a GPU machine verifies everything: configures for the GPU present, finds
# cuDNN (the CUDA toolkit, or the nvidia-cudnn wheel inside PyTorch's Python), builds,
# runs the whole test suite including the GPU tests, runs the benchmarks, and prints a
# short summary table last. Full logs go to the folder given as the first argument.
#   bench/device_check.sh LOGDIR
# Needs: nvcc, CMake, a C++ compiler; build dependencies from the system or from
# .devdeps/*.deb (made by bench/device_deps.sh where apt works); for the streaming
# benchmark, build/bench-images (bench/make_bench_images.py, carried). Budget: about 7 min, 13 at the timeouts.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=$(mkdir -p "${1:-device-logs}" && cd "${1:-device-logs}" && pwd)
BUILD=${DALR_DEVICE_BUILD:-build-device}
T0=$(date +%s)
note() { echo "[device_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG/summary.log"; }

# ---- the GPU ----
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
CC_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
ARCH=${DALR_CUDA_ARCH:-${CC_CAP:-90}}
note "GPU: ${GPU:-none found}; CUDA arch ${ARCH}; nvcc $(nvcc --version | grep -o 'release [0-9.]*')"

# ---- cuDNN: the toolkit, or the nvidia-cudnn wheel inside PyTorch's Python ----
CUDNN_ROOT=""
for d in "${CUDNN_ROOT_HINT:-}" /usr/local/cuda /usr; do
  [ -n "$d" ] && [ -f "$d/include/cudnn.h" ] && { CUDNN_ROOT=$d; break; }
done
if [ -z "$CUDNN_ROOT" ]; then
  CUDNN_ROOT=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null || true)
fi
if [ -n "$CUDNN_ROOT" ]; then
  export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
  note "cuDNN: $CUDNN_ROOT ($(ls "$CUDNN_ROOT"/lib/libcudnn.so* 2>/dev/null | head -1))"
else
  note "cuDNN: not found (not needed by this version)"
fi

# ---- configure: with the system's dependencies, else with the carried .debs ----
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
configure() {
  cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    ${CUDNN_ROOT:+"-DCUDNN_ROOT=$CUDNN_ROOT"} "$@" >>"$LOG/configure.log" 2>&1
}
unpack_devdeps() {
  local P=/tmp/dalr-deps L
  rm -rf "$P" && mkdir -p "$P"
  for f in .devdeps/*.deb; do dpkg-deb -x "$f" "$P" || return 1; done
  L=$P/usr/lib/x86_64-linux-gnu
  # Debian sets these links with update-alternatives, which dpkg-deb -x does not run.
  for lib in libopenblas.so libopenblas.so.0 libblas.so libblas.so.3 liblapack.so liblapack.so.3; do
    [ -e "$L/openblas-pthread/$lib" ] && ln -sf "openblas-pthread/$lib" "$L/$lib"
  done
  export LD_LIBRARY_PATH="$L:$L/openblas-pthread:${LD_LIBRARY_PATH:-}"
  export LIBRARY_PATH="$L:$L/openblas-pthread:${LIBRARY_PATH:-}"
  DEPS_ARGS=("-DCMAKE_PREFIX_PATH=$P/usr;$L/cmake;$P/usr/share/cmake"
             "-DCMAKE_INCLUDE_PATH=$P/usr/include;$P/usr/include/x86_64-linux-gnu"
             "-DCMAKE_LIBRARY_PATH=$L;$L/openblas-pthread")
}
DEPS_ARGS=()
: >"$LOG/configure.log"
if [ -z "${DALR_FORCE_DEVDEPS:-}" ] && configure; then
  DEPS="system"
elif ls .devdeps/*.deb >/dev/null 2>&1 && unpack_devdeps; then
  rm -rf "$BUILD"
  DEPS="$(ls .devdeps/*.deb | wc -l) carried .debs"
  configure "${DEPS_ARGS[@]}" || DEPS="$DEPS (configure failed)"
else
  DEPS="missing: run bench/device_deps.sh where apt works, carry .devdeps"
fi
note "dependencies: $DEPS"

# ---- build ----
if grep -q "Build files have been written" "$LOG/configure.log" &&
   cmake --build "$BUILD" -j"$(nproc)" >"$LOG/build.log" 2>&1; then
  BUILD_OK=yes
else
  BUILD_OK=no
fi
note "build: $BUILD_OK (logs: configure.log, build.log)"
[ "$BUILD_OK" = yes ] || { tail -30 "$LOG/configure.log" "$LOG/build.log"; exit 1; }

# ---- tests, GPU ones included ----
# DALR_DEVICE_SKIP_TESTS=1 skips them: a second call on a still-warm machine (its build
# folder kept) that only needs the benchmarks, when the first ran out of time.
if [ "${DALR_DEVICE_SKIP_TESTS:-0}" = 1 ]; then
  CTEST_RC=0 PASSED=0 FAILED=0 SKIPPED=0
  note "tests: skipped (DALR_DEVICE_SKIP_TESTS=1)"
else
  ctest --test-dir "$BUILD" --output-on-failure -j4 --timeout 300 >"$LOG/ctest.log" 2>&1
  CTEST_RC=$?
  TOTAL=$(grep -oE 'tests failed out of [0-9]+' "$LOG/ctest.log" | grep -oE '[0-9]+$')
  FAILED=$(grep -oE '[0-9]+ tests failed' "$LOG/ctest.log" | grep -oE '^[0-9]+')
  SKIPPED=$(grep -cE '\(Skipped\)' "$LOG/ctest.log")
  PASSED=$(( ${TOTAL:-0} - ${FAILED:-0} - SKIPPED ))
  note "tests: ${PASSED} passed, ${FAILED:-?} failed, ${SKIPPED} skipped (ctest rc $CTEST_RC; ctest.log)"
  # The conv layers' GPU twins (device im2row, patch statistics, the compressed conv pair
  # and dilation in the cuDNN forward pass), counted apart: they are new to the device.
  CONV_RE='(GpuIm2row|GpuConvStats|CudnnDilation|CompressedConvPair)'
  conv_count() { grep -E "Test +#[0-9]+: $CONV_RE" "$LOG/ctest.log" | grep -c "$1"; }
  note "conv GPU tests: $(conv_count ' Passed') passed, $(conv_count '\*\*\*Failed') failed," \
       "$(conv_count 'Skipped') skipped"
fi

# ---- several processes: the NCCL path as a single-rank smoke test ----
# mpirun -np 1 with --device cuda sums C through NCCL (one rank) and must give the
# single process's report; skipped when the build has no NCCL or mpirun is missing.
if command -v mpirun >/dev/null && ldd "$BUILD/dalr-gpu" 2>/dev/null | grep libnccl >/dev/null; then
  EX=examples/fashion2digits
  MPI_ARGS=(compress --model "$EX/model.bin" --acts "$EX/acts_train.npy" --layer classifier.3
            --rank 12 --device cuda --precision fp32 -q)
  "$BUILD/dalr-gpu" "${MPI_ARGS[@]}" --out "$LOG/nccl1.bin" --report "$LOG/nccl1.json" \
    >"$LOG/nccl.log" 2>&1
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun -np 1 \
    "$BUILD/dalr-gpu" "${MPI_ARGS[@]}" --out "$LOG/nccl2.bin" --report "$LOG/nccl2.json" \
    >>"$LOG/nccl.log" 2>&1
  NCCL_RC=$?
  NCCL_SAME=$(python3 - "$LOG/nccl1.json" "$LOG/nccl2.json" <<'PY' 2>>"$LOG/nccl.log"
import json, sys
a, b = (json.load(open(f))["error_train"]["abs"] for f in sys.argv[1:])
print("same" if abs(a - b) <= 1e-5 * abs(a) else f"differ: {a} vs {b}")
PY
)
  note "NCCL smoke (mpirun -np 1 --device cuda): rc $NCCL_RC, error_train ${NCCL_SAME:-unread} (nccl.log)"
else
  note "NCCL smoke: not run (no mpirun, or dalr-gpu built without NCCL)"
fi

# ---- the GPU tests under compute-sanitizer (memcheck) when it is present ----
# Out-of-bounds and misaligned device accesses, invalid frees and API errors that the
# tests' comparisons cannot see. Each binary gets 40 s (memcheck is 10-100x slower);
# DALR_DEVICE_SANITIZE=0 skips the step.
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ "${DALR_DEVICE_SANITIZE:-1}" = 1 ] && [ -n "$CS" ] && [ "$BUILD_OK" = yes ]; then
  : >"$LOG/sanitizer.log"
  SAN_BAD=()
  for t in "$BUILD"/test_gpu_* "$BUILD"/test_row_stats "$BUILD"/test_storage16 \
           "$BUILD"/test_cudnn_forward "$BUILD"/test_cudnn_dilation "$BUILD"/test_stream_device; do
    [ -x "$t" ] || continue
    echo "== $t" >>"$LOG/sanitizer.log"
    timeout 40 "$CS" --tool memcheck --error-exitcode 99 --leak-check no "$t" \
      >>"$LOG/sanitizer.log" 2>&1
    rc=$?
    [ $rc -eq 99 ] && SAN_BAD+=("$(basename "$t")")
    [ $rc -eq 124 ] && echo "(timed out: partial run)" >>"$LOG/sanitizer.log"
  done
  note "compute-sanitizer memcheck: ${#SAN_BAD[@]} binaries with errors ${SAN_BAD[*]:-} (sanitizer.log)"
else
  note "compute-sanitizer: not run (${CS:-not found})"
fi

# ---- benchmarks ----
BENCH_ROWS=()
if [ -x "$BUILD/bench/bench_gpu" ]; then
  timeout 100 "$BUILD/bench/bench_gpu" --json "$LOG/bench_gpu.json" >"$LOG/bench_gpu.log" 2>&1
  note "bench_gpu: rc $? (bench_gpu.log, bench_gpu.json)"
  BENCH_ROWS+=("$(python3 - "$LOG/bench_gpu.json" <<'PY' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
for k, v in r.get("summary", {}).items():
    print(f"{k}: {v}")
PY
)")
fi
# Conv patch statistics (a VGG-like 512-channel 3x3 layer at 14x14 and 28x28): images/s
# on the GPU from device maps and from host maps, against the CPU twin.
if [ -x "$BUILD/bench/bench_conv_stats" ]; then
  timeout 60 "$BUILD/bench/bench_conv_stats" --json "$LOG/bench_conv_stats.json" \
    >"$LOG/bench_conv_stats.log" 2>&1
  note "bench_conv_stats (512 ch 3x3 at 14x14, 28x28): rc $? (bench_conv_stats.log, .json)"
  BENCH_ROWS+=("$(python3 - "$LOG/bench_conv_stats.json" <<'PY' 2>/dev/null
import json, sys
for k, v in json.load(open(sys.argv[1])).get("summary", {}).items():
    print(f"{k}: {v}")
PY
)")
fi
timeout 60 "$BUILD/bench/bench_solve" --m 1024 --n 2048 --p 1500 --k 128 --repeats 3 \
  --json "$LOG/bench_solve_cpu.json" >"$LOG/bench_solve_cpu.log" 2>&1
note "bench_solve (CPU, 1024 x 2048): rc $?"
# Streaming: random VGG19 at fc6 on real-sized JPEGs. The images are carried in
# build/bench-images (made by bench/make_bench_images.py where the photographs are,
# about 13 MB for 512) or made here when python3-skimage's photographs are present.
IMGS=${DALR_BENCH_IMAGES:-build/bench-images}
if [ ! -d "$IMGS" ]; then
  /usr/bin/python3 bench/make_bench_images.py "$IMGS" --count 512 >"$LOG/bench_images.log" 2>&1 ||
    note "bench images: none carried in $IMGS and none could be made (bench_images.log)"
fi
if [ -x "$BUILD/bench/bench_stream" ] && [ -d "$IMGS" ]; then
  timeout 100 "$BUILD/bench/bench_stream" --data "$IMGS" --device cuda --layer classifier.0 \
    --images 512 --batch 64 --workers "$(nproc)" --repeats 3 \
    --json "$LOG/bench_stream.json" >"$LOG/bench_stream.log" 2>&1
  note "bench_stream (GPU, VGG19 fc6, 512 and 5120 images): rc $? (bench_stream.log, .json)"
  BENCH_ROWS+=("$(sed -n '/, layer /,$p' "$LOG/bench_stream.log")")
  # The same stages with 16-bit activations (tensor cores, channels-last), no memory runs.
  timeout 45 "$BUILD/bench/bench_stream" --data "$IMGS" --device cuda --layer classifier.0 \
    --images 512 --batch 64 --workers "$(nproc)" --repeats 3 --precision bf16 --no-memory \
    --json "$LOG/bench_stream_bf16.json" >"$LOG/bench_stream_bf16.log" 2>&1
  note "bench_stream (GPU, VGG19 fc6, bf16 activations, 512 images): rc $? (bench_stream_bf16.log)"
  BENCH_ROWS+=("bf16 activations:" "$(sed -n '/, layer /,$p' "$LOG/bench_stream_bf16.log")")
fi

# Forward speed of factorised conv layers: VGG19 (random He weights, 224 x 224), the conv
# layers of blocks 4 and 5 (features.19-34) factorised at rank 128 with random factors, the
# whole network and each layer alone against the original, device events (bench_forward).
if [ -x "$BUILD/bench/bench_forward" ]; then
  FWD_LAYERS=$(for i in 19 21 23 25 28 30 32 34; do printf 'features.%s:128,' "$i"; done)
  timeout 120 "$BUILD/bench/bench_forward" --device cuda --arch vgg19 --size 224 --batch 32 \
    --repeats 5 --factor "${FWD_LAYERS%,}" --json "$LOG/bench_forward.json" \
    >"$LOG/bench_forward.log" 2>&1
  note "bench_forward (GPU, VGG19 blocks 4-5 at rank 128, batch 32): rc $? (bench_forward.log, .json)"
  BENCH_ROWS+=("$(sed -n '/^network/,$p' "$LOG/bench_forward.log")")
fi

# The harness: dalr-gpu against the PyTorch peer (torch with CUDA: the python3 on PATH
# there, which also holds the nvidia-cudnn wheel) and against the card's measured floor.
# fc6 only and one repeat after a warm-up, to fit the device budget.
PY=python3
$PY -c 'import torch, torchvision, numpy' 2>/dev/null || PY=/usr/bin/python3
if [ -x "$BUILD/bench/bench_peak" ] && [ -d "$IMGS" ]; then
  timeout 200 $PY bench/run.py --build "$BUILD" --device cuda --data "$IMGS" --images 5994 \
    --layers classifier.0 --repeats 1 --out "$LOG/harness" >"$LOG/harness.log" 2>&1
  note "bench/run.py (VGG19 fc6, 5994 images, vs the PyTorch peer and the floor): rc $? (harness.log, harness/)"
  BENCH_ROWS+=("$(cat "$LOG/harness/table.md" 2>/dev/null || tail -5 "$LOG/harness.log")")
fi
# The solve from an activation file (fc7's and fc6's shapes, one round): dalr-gpu and the
# torch peer on the GPU, the NumPy/SciPy peer on the CPU, in $PY (the table says which
# versions; without SciPy the NumPy peer falls back and says so).
if [ -x "$BUILD/dalr-gpu" ]; then
  timeout 180 $PY bench/run.py --solve-shapes fc7,fc6 --build "$BUILD" --device cuda \
    --repeats 1 --peer-python "$(command -v $PY)" --out "$LOG/solve-shapes" \
    >"$LOG/solve_shapes.log" 2>&1
  note "bench/run.py --solve-shapes fc7,fc6 (GPU; NumPy peer on the CPU): rc $? (solve_shapes.log)"
  BENCH_ROWS+=("$(cat "$LOG/solve-shapes/solve_shapes.md" 2>/dev/null || tail -5 "$LOG/solve_shapes.log")")
fi

# ---- summary, last ----
echo
echo "==================== dalr-gpu device check ===================="
printf '%-14s %s\n' "card" "${GPU:-none}" "arch" "sm_${ARCH}" "cuDNN" "${CUDNN_ROOT:-not found}" \
  "build" "$BUILD_OK" "tests" "${PASSED} passed, ${FAILED:-?} failed, ${SKIPPED} skipped" \
  "time" "$(( $(date +%s) - T0 )) s"
for row in "${BENCH_ROWS[@]}"; do echo "$row"; done
echo "logs in $LOG"
[ "$CTEST_RC" -eq 0 ]
