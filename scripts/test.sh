#!/usr/bin/env bash
# The README's test command: installs dependencies, builds, and runs the whole test suite.
#   scripts/test.sh           normal build in build/, warnings are errors
#   scripts/test.sh --asan    AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

mode="normal"
[ "${1:-}" = "--asan" ] && mode="asan"

scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
if [ "$mode" = "asan" ]; then
  dir=build-asan
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DAGENTMESH_WERROR=ON -DAGENTMESH_ASAN=ON
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
else
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGENTMESH_WERROR=ON
fi
cmake --build "$dir" -j"$jobs"
ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 300
