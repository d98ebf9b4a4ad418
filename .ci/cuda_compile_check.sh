#!/usr/bin/env bash
# Compile-only check of the CUDA sources, for machines without a GPU (CI): every csrc/cuda/*.cu is
# compiled with nvcc -c for each architecture in CUDA_ARCHS (default: sm_80 and sm_90), with the
# macros torch's BuildExtension passes to nvcc, and the host glue csrc/cuda/register_cuda.cpp is
# compiled with the host compiler against torch's ATen/c10 CUDA headers and the CUDA include
# folder. Nothing is linked: a CPU build of torch has no libtorch_cuda to link against.
#
# Fails on any compile error. Skips, and says so, only when nvcc is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}
PYTHON=${PYTHON:-python3}
CUDA_ARCHS=${CUDA_ARCHS:-"80 90"}
OUT=${OUT:-build/cuda-compile}
JOBS=${JOBS:-2}

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "test-cuda-compile: SKIPPED: nvcc not found (set NVCC=/path/to/nvcc); the CUDA sources were not compiled"
  exit 0
fi

# The CUDA include folder: from CUDA_HOME, else from nvcc itself (nvcc may be a wrapper script).
if [[ -n "${CUDA_HOME:-}" && -f "$CUDA_HOME/include/cuda_runtime_api.h" ]]; then
  CUDA_INCLUDE="$CUDA_HOME/include"
else
  CUDA_INCLUDE=$("$NVCC" -v -x cu -E /dev/null -o /dev/null 2>&1 |
    sed -n 's/^#\$ INCLUDES="-I\([^" ]*\)".*/\1/p' | head -n 1)
fi
if [[ ! -f "$CUDA_INCLUDE/cuda_runtime_api.h" ]]; then
  echo "test-cuda-compile: FAILED: cannot find cuda_runtime_api.h (set CUDA_HOME)" >&2
  exit 1
fi
TORCH_INCLUDES=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")

mkdir -p "$OUT"
gencode=()
for arch in $CUDA_ARCHS; do gencode+=("-gencode=arch=compute_${arch},code=sm_${arch}"); done
# The macros and options torch.utils.cpp_extension adds to every nvcc command line.
torch_nvcc_flags=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr)

commands=()
for cu in csrc/cuda/*.cu; do
  obj="$OUT/$(basename "${cu%.cu}").o"
  commands+=("$NVCC -std=c++17 -O3 -lineinfo ${torch_nvcc_flags[*]} ${gencode[*]} -Xcompiler -Wall -Icsrc -Icsrc/include -c $cu -o $obj")
done
for cpp in csrc/cuda/*.cpp; do
  obj="$OUT/$(basename "${cpp%.cpp}").o"
  commands+=("$CXX -std=c++20 -O0 -g0 -Wall -Werror -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE $TORCH_INCLUDES -I$CUDA_INCLUDE -Icsrc -Icsrc/include -c $cpp -o $obj")
done

start=$(date +%s)
status=0
printf '%s\n' "${commands[@]}" | xargs -P "$JOBS" -I{} sh -c 'echo "  {}" | cut -c1-150; {}' || status=$?
elapsed=$(( $(date +%s) - start ))
if [[ $status -ne 0 ]]; then
  echo "test-cuda-compile: FAILED (see the compiler errors above)" >&2
  exit 1
fi
echo "test-cuda-compile: OK: ${#commands[@]} files compiled for sm_${CUDA_ARCHS// /, sm_} in ${elapsed}s"
