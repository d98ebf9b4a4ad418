#!/usr/bin/env bash
# Runs the CUDA kernels (csrc/cuda/*.cu) on the CPU: each .cu is compiled as C++ against the host
# emulation of the CUDA API in csrc/tests/cuda_emu/emu.h (one std::thread per CUDA thread, real
# barriers and warp shuffles), after rewriting its `kernel<<<grid, block, smem, stream>>>(args);`
# launches into emu::launch calls, and linked with csrc/tests/test_cuda_emulated.cpp, which compares
# every launcher against double-precision references. Built with AddressSanitizer and UBSan, so an
# out-of-bounds access of a kernel fails the run. Needs only g++ >= 12 (C++20).
set -euo pipefail
cd "$(dirname "$0")/.."

CXX=${CXX:-g++}
OUT=${OUT:-build/cuda-emulate}
SAN=${SAN:-"-fsanitize=address,undefined -fno-sanitize-recover=undefined"}
mkdir -p "$OUT"

flags=(-std=c++20 -O1 -g $SAN -Wall -Wno-unknown-pragmas -Icsrc/tests/cuda_emu -Icsrc -Icsrc/include -Icsrc/cuda -Icsrc/tests)
objs=()
start=$(date +%s)
for cu in csrc/cuda/*.cu; do
  name=$(basename "${cu%.cu}")
  # kernel<targs><<<cfg>>>(args);  ->  ::emu::launch(cfg, [&] { kernel<targs>(args); });
  perl -0pe 's/([\w:]+(?:<[^;(){}<>]*>)?)<<<(.*?)>>>\((.*?)\);/::emu::launch($2, [&] { $1($3); });/sg' \
    "$cu" > "$OUT/$name.cpp"
  if grep -q '<<<' "$OUT/$name.cpp"; then
    echo "cuda-emulate: FAILED: a launch in $cu was not rewritten" >&2
    exit 1
  fi
  "$CXX" "${flags[@]}" -include emu.h -c "$OUT/$name.cpp" -o "$OUT/$name.o" &
  objs+=("$OUT/$name.o")
done
"$CXX" "${flags[@]}" -include emu.h -c csrc/tests/test_cuda_emulated.cpp -o "$OUT/test_cuda_emulated.o" &
wait
"$CXX" "${flags[@]}" "${objs[@]}" "$OUT/test_cuda_emulated.o" -o "$OUT/test_cuda_emulated" -pthread
echo "cuda-emulate: built in $(( $(date +%s) - start ))s"
"$OUT/test_cuda_emulated" "$@"
