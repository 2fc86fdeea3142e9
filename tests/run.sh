#!/bin/sh
# The whole suite: installs what is missing, builds with AddressSanitizer
# and UBSan, and runs every unit and integration test through ctest.
# Integration suites start their own redis-server, mock upstream and
# gateways on free loopback ports. Then the libFuzzer targets, built with
# clang, replay their seed corpora once. Exits non-zero on any failure.
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
ctest --test-dir "$build" --output-on-failure --timeout 900 "$@"

fuzz_build="$build-fuzz"
CC=clang cmake -S "$top" -B "$fuzz_build" -DCMAKE_BUILD_TYPE=Debug \
    -DACRGW_FUZZ=ON >/dev/null
cmake --build "$fuzz_build" -j "$(nproc)" --target fuzz_order fuzz_answer \
    fuzz_percent fuzz_config fuzz_auth
ctest --test-dir "$fuzz_build" --output-on-failure -R '^fuzz_'
