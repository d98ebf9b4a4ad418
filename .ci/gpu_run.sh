#!/usr/bin/env bash
# `make gpu`: on a machine with an NVIDIA GPU, a CUDA build of torch and nvcc, build the CUDA
# extension in place, run the whole test suite (the cuda cases included) and the GPU benchmarks,
# and write both outputs to benchmarks/results/ under a name with the device and the date. Each
# file starts with the device name, torch and CUDA versions, date and commit.
#
# Exits non-zero when the build fails, when no GPU or CUDA kernels are found, or when any test fails
# (the benchmark results are written in any case).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "make gpu: no CUDA device visible to torch ($("$PYTHON" -c 'import torch; print(torch.__version__)'))" >&2
  exit 1
fi
"$PYTHON" -m pip install --quiet numpy pytest hypothesis expecttest || exit 1

echo "make gpu: building the CUDA extension (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-<the visible GPUs>})"
if ! "$PYTHON" setup.py build_ext --inplace > build-gpu.log 2>&1; then
  tail -n 60 build-gpu.log
  echo "make gpu: the build failed (full log: build-gpu.log)" >&2
  exit 1
fi
grep "^din_ops:" build-gpu.log

header=$("$PYTHON" - <<'PY'
import datetime, subprocess, torch
p = torch.cuda.get_device_properties(0)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"device: {p.name} ({p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB), "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}, commit {commit}")
PY
)
slug=$("$PYTHON" -c "import re, torch, datetime; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-') + '-' + datetime.date.today().isoformat())")
mkdir -p benchmarks/results
out="benchmarks/results/gpu-$slug"
echo "$header"

if ! "$PYTHON" -c "import din_ops, sys; sys.exit(0 if 'cuda' in din_ops.available_backends() else 1)"; then
  echo "make gpu: the build has no CUDA kernels (see build-gpu.log)" >&2
  exit 1
fi

{ echo "$header"; echo; } > "$out-tests.txt"
"$PYTHON" -m pytest tests -q -ra -p no:cacheprovider 2>&1 | tee -a "$out-tests.txt"
test_status=${PIPESTATUS[0]}

{ echo "$header"; } > "$out-bench.txt"
"$PYTHON" -m benchmarks.bench_cuda --json "$out-bench.json" 2>&1 | tee -a "$out-bench.txt"
bench_status=${PIPESTATUS[0]}

echo "make gpu: tests exit status $test_status, benchmarks exit status $bench_status;"
echo "  results in $out-tests.txt, $out-bench.txt and $out-bench.json"
[[ $test_status -eq 0 && $bench_status -eq 0 ]]
