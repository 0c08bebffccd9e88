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
# Line tables only (-g1): enough for file:line in sanitizer reports and backtraces, and a third
# less compile time than full debug information at -O2. The sanitizer build leaves out the
# benchmark programs and the vector generators, which the normal build already compiles.
if [ "$mode" = "asan" ]; then
  dir=build-asan
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DAGENTMESH_WERROR=ON -DAGENTMESH_ASAN=ON \
    -DAGENTMESH_BUILD_BENCH=OFF -DAGENTMESH_BUILD_TOOLS=OFF \
    -DCMAKE_C_FLAGS_DEBUG="-O0 -g1" -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
else
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGENTMESH_WERROR=ON \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
fi
cmake --build "$dir" -j"$jobs"
ctest --test-dir "$dir" --output-on-failure -j"$jobs" --timeout 300
