#!/usr/bin/env bash
# .ci/ctest_with.sh CXX PACKAGE...: the C++ library and its tests built with the compiler CXX
# (CMake + ctest), in build/cmake-CXX. `make test-cpp` builds them with the default compiler;
# `make test-clang` with clang (what macOS and many Linux machines have) and `make test-gcc-oldest`
# with the oldest GCC Debian ships (g++-11: the fallbacks for GCC before 12, e.g. __builtin_shuffle
# in csrc/cpu/vec.h). Skips, and says so, without CXX (on CI the Debian PACKAGEs are installed
# first: .ci/need.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
CXX=$1; shift
PYTHON=${PYTHON:-python3}
BUILD=${BUILD:-build/cmake-$CXX}
.ci/need.sh "$CXX" "$@"
case $? in 0) ;; 3) exit 0 ;; *) exit 1 ;; esac
set -e
echo "ctest with $CXX: $("$CXX" --version | head -n 1)"
mkdir -p "$BUILD"
# Quiet configure; its din_ops lines (which OpenMP runtime the kernels run on) are shown.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_PREFIX_PATH="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  >"$BUILD/configure.log" || { cat "$BUILD/configure.log"; exit 1; }
grep "din_ops:" "$BUILD/configure.log" || true
# Not make's directory chatter of the calling make: a build of its own.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL cmake --build "$BUILD" -j2
ctest --test-dir "$BUILD" --output-on-failure
