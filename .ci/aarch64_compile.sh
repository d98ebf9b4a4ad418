#!/usr/bin/env bash
# Compile-only check of the CPU sources for aarch64 (Graviton, Apple Silicon under Linux) with
# Debian's cross compiler: the files with the hot loops (and their instruction-set wrappers, empty
# on aarch64) to objects at -O2, the rest to a syntax check, against the torch headers. Nothing is
# linked or run (see docs/testing.md for running the suite under emulation). Skips, and says so,
# without the cross compiler (on CI it is installed first: .ci/need.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CXX=${AARCH64_CXX:-aarch64-linux-gnu-g++}
OUT=${OUT:-build/aarch64-compile}
.ci/need.sh "$CXX" g++-aarch64-linux-gnu
case $? in 0) ;; 3) exit 0 ;; *) exit 1 ;; esac
mkdir -p "$OUT"
includes=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")
flags="-std=c++20 -fopenmp -Wall -Wno-unknown-pragmas -DDIN_OPS_NO_PYTHON -Icsrc -Icsrc/include $includes"
commands=()
for src in csrc/din_ops.cpp csrc/cpu/*.cpp csrc/composite/*.cpp; do
  case $(basename "$src") in
    loops*.cpp | deformable_loops*.cpp | direct_conv*.cpp | winograd*.cpp | isa.cpp)
      commands+=("$CXX $flags -O2 -c $src -o $OUT/$(basename "${src%.cpp}").o") ;;
    *) commands+=("$CXX $flags -fsyntax-only $src") ;;
  esac
done
start=$(date +%s)
if ! printf '%s\n' "${commands[@]}" | xargs -P 2 -I{} sh -c '{}'; then
  echo "aarch64-compile: FAILED (see the compiler errors above)" >&2
  exit 1
fi
echo "aarch64-compile: OK: ${#commands[@]} files compiled for aarch64 with $($CXX -dumpversion) in $(( $(date +%s) - start ))s"
