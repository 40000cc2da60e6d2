#!/usr/bin/env bash
# Runs one libFuzzer target (or all) for a fixed time on its seed corpus.
#   fuzz/run.sh TARGET|all SECONDS [extra libFuzzer flags]
# TARGET: safetensors stats npy arch png jpeg. Builds build-fuzz/ with clang first
# (DALR_FUZZ=ON). New inputs go to build-fuzz/corpus/TARGET (the seeds in
# fuzz/corpus/ are read, never written); a crash leaves build-fuzz/crash-TARGET-* and
# makes the script fail: turn it into a regression test in tests/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh TARGET|all SECONDS}
seconds=${2:?usage: fuzz/run.sh TARGET|all SECONDS}
shift 2
all=(safetensors stats npy arch png jpeg)
if [ "$target" = all ]; then targets=("${all[@]}"); else targets=("$target"); fi

build=${DALR_FUZZ_BUILD:-build-fuzz}
if [ ! -f "$build/CMakeCache.txt" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DDALR_FUZZ=ON -DDALR_WITH_CUDA=OFF -DDALR_BUILD_TESTS=OFF \
    "${launcher[@]}" >/dev/null
fi
cmake --build "$build" -j"${JOBS:-2}" --target "${targets[@]/#/fuzz_}"

# Leaks: the readers own everything by RAII; a leak is a finding, so detection stays on.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in "${targets[@]}"; do
  work="$build/corpus/$t"
  mkdir -p "$work"
  echo "== fuzz_$t for ${seconds}s"
  # -rss_limit_mb: an input that makes a reader allocate more than 2 GB is a finding
  # (resource exhaustion), as is one that takes over 10 s.
  if ! "$build/fuzz/fuzz_$t" "$work" "fuzz/corpus/$t" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$build/crash-$t-" "$@" 2>"$build/fuzz_$t.log"; then
    echo "fuzz_$t FOUND A PROBLEM: see $build/fuzz_$t.log and $build/crash-$t-*"
    tail -40 "$build/fuzz_$t.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$build/fuzz_$t.log" | tail -2
  fi
done
exit $status
