#!/usr/bin/env bash
# The C++ library and its tests built with clang (CMake + ctest), as on macOS and many Linux
# machines; GCC builds the same with `make test-cpp`. Skips, and says so, without clang++ (on CI it
# is installed first: .ci/need.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUILD=${BUILD:-build/cmake-clang}
.ci/need.sh clang++ clang libomp-dev
case $? in 0) ;; 3) exit 0 ;; *) exit 1 ;; esac
set -e
echo "test-clang: $(clang++ --version | head -n 1)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_PREFIX_PATH="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" >/dev/null
# Not make's directory chatter of the calling make: a build of its own.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL cmake --build "$BUILD" -j2
ctest --test-dir "$BUILD" --output-on-failure
