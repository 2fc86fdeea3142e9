#!/bin/sh
# The whole suite: installs what is missing, builds with AddressSanitizer
# and UBSan, and runs every unit and integration test through ctest.
# Integration suites start their own redis-server, mock upstream and
# gateways on free loopback ports. Exits non-zero on any failure.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
build=${ACRGW_BUILD_DIR:-"$top/build-test"}

. "$top/tests/deps.sh"
acrgw_install_deps

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DACRGW_SANITIZE=ON \
    >/dev/null
cmake --build "$build" -j "$(nproc)"

# Leaks fail the run; a report names the allocation.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure --timeout 900 "$@"
