#!/usr/bin/env bash
# The aarch64 build of the CPU loops whose vector widths differ by architecture (the k x k kernels,
# the deformable loops and the streamed elementwise loops: 16-byte NEON vectors on aarch64,
# csrc/cpu/vec.h), run: the C++ test csrc/tests/test_vector_widths.cpp cross-compiled (static)
# with the sources it checks, with the extension's optimization flags (-O3, and Python's -fwrapv),
# and run under qemu-user. Skips, saying so, where the cross compiler or qemu-aarch64 is missing
# (CI installs both). Expects PYTHON (for the torch headers).
set -uo pipefail
cd "$(dirname "$0")/.."
CXX=${AARCH64_CXX:-aarch64-linux-gnu-g++}
OUT=${OUT:-build/aarch64-run}
.ci/need.sh "$CXX" g++-aarch64-linux-gnu
case $? in 0) ;; 3) exit 0 ;; *) exit 1 ;; esac
.ci/need.sh qemu-aarch64 qemu-user
case $? in 0) ;; 3) exit 0 ;; *) exit 1 ;; esac
mkdir -p "$OUT"
includes=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")
# GCC's cross compiler, and clang for the same target where it is installed (what macOS users build
# with; CI installs it for the clang ctest run).
compilers=("$CXX")
command -v clang++ >/dev/null 2>&1 && compilers+=("clang++ --target=aarch64-linux-gnu")
start=$(date +%s)
for cxx in "${compilers[@]}"; do
  exe="$OUT/test_vector_widths_$(echo "$cxx" | cut -d' ' -f1)"
  echo "aarch64-run: $cxx"
  # shellcheck disable=SC2086  # $cxx and $includes are lists of words
  $cxx -std=c++20 -O3 -fwrapv -g0 -Wall -Wno-unknown-pragmas -static -Icsrc -Icsrc/include \
    -Icsrc/tests $includes csrc/tests/test_vector_widths.cpp csrc/cpu/winograd.cpp \
    csrc/cpu/direct_conv.cpp csrc/cpu/deformable_loops.cpp csrc/cpu/loops.cpp -o "$exe" || {
    echo "aarch64-run: FAILED to build the test with $cxx (see the compiler errors above)" >&2
    exit 1
  }
  if ! qemu-aarch64 "$exe"; then
    echo "aarch64-run: FAILED under qemu-aarch64 ($cxx)" >&2
    exit 1
  fi
done
echo "aarch64-run: OK: the aarch64 vector loops (${#compilers[@]} compilers) tested under $(qemu-aarch64 --version | head -1) in $(( $(date +%s) - start ))s"
