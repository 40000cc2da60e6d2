#!/usr/bin/env bash
# Checks that tests/docker/lint_dockerfile.sh's structural rules catch what they are meant
# to: docker/Dockerfile passes, and each copy of it broken in one way (made with sed, which
# must change the copy) fails with that rule's message. Structure only (no hadolint).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v python3 >/dev/null || { echo "lint_self_test: no python3: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# lint FILE: the structure's exit status (77 = passed, hadolint pointed at nothing).
lint() { HADOLINT=/nonexistent bash tests/docker/lint_dockerfile.sh "$1" >"$tmp/out" 2>&1 || return $?; }

expect_pass() {
  local rc=0
  lint docker/Dockerfile || rc=$?
  if [ "$rc" -ne 77 ]; then
    echo "FAIL docker/Dockerfile: rc $rc, want 77 (structure passed, no hadolint)"; cat "$tmp/out"
    fails=$((fails + 1))
  else echo "ok   docker/Dockerfile passes"; fi
}

# expect_fail NAME 'SED SCRIPT' 'MESSAGE'
expect_fail() {
  local name=$1 script=$2 message=$3 rc=0
  sed -e "$script" docker/Dockerfile >"$tmp/$name"
  if cmp -s docker/Dockerfile "$tmp/$name"; then
    echo "FAIL $name: the sed script changed nothing (the Dockerfile moved on: update the test)"
    fails=$((fails + 1)); return
  fi
  lint "$tmp/$name" || rc=$?
  if [ "$rc" -ne 1 ] || ! grep -qF -- "$message" "$tmp/out"; then
    echo "FAIL $name: rc $rc, want 1 and '$message'"; cat "$tmp/out"
    fails=$((fails + 1))
  else echo "ok   $name: $message"; fi
}

expect_pass
expect_fail unpinned 's#^FROM nvidia/cuda:12.9.2-cudnn-devel-ubuntu24.04@sha256:[0-9a-f]*#FROM nvidia/cuda:latest#' \
  'FROM nvidia/cuda:latest: not pinned'
expect_fail unnamed 's#^\(FROM nvidia/cuda:13.0.3-cudnn-devel[^ ]*\) AS devel-13#\1#' 'the stage has no name'
expect_fail bad_default 's#^ARG CUDA=12#ARG CUDA=11#' 'with the defaults it is devel-11'
expect_fail no_default 's#^ARG CUDA=12#ARG CUDA#' 'has no default in an ARG before the first FROM'
expect_fail one_sided 's#^\(FROM nvidia/cuda:13.0.3-cudnn-runtime[^ ]*\) AS runtime-13#\1 AS runtime-13x#' \
  '13 selects a stage in only one of them'
expect_fail root_user 's#^USER 1000:1000#USER root#' 'does not end on a USER that is not root'
expect_fail recommends '0,/--no-install-recommends/s/ --no-install-recommends//' \
  'apt-get install without --no-install-recommends'
expect_fail apt_lists '0,/rm -rf \/var\/lib\/apt\/lists/s#rm -rf /var/lib/apt/lists/\*#true#' \
  'apt-get install without rm -rf /var/lib/apt/lists/*'

if [ "$fails" -ne 0 ]; then echo "lint_self_test: $fails failed"; exit 1; fi
echo "lint_self_test: all passed"
