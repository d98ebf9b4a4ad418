#!/usr/bin/env bash
# `make gpu`: one run on a GPU machine (H100/H200, CUDA build of torch, nvcc, Python with torch,
# numpy, pytest, hypothesis already installed; no package index) that fits in a few minutes:
#
#   1 env        what is installed; a GPU is required (except in the dry mode)
#   2 build      reuse din_ops/_C*.so when its build record matches (.ci/build_info.py; e.g. a
#                library prebuilt with `make gpu-prebuild` on a CPU machine), else build it with every
#                core for the GPU's own architecture
#   3 backends   available_backends() has "cuda" and every operator has a CUDA kernel
#   4 tests      pytest -m gpu: every cuda case, the CUDA-only tests, the Triton tests on the GPU
#   5 bench      benchmarks/bench_cuda.py and bench_triton.py, with the GPU targets checked
#
# It installs nothing: a phase whose tools are missing is skipped and says what is missing. Each
# phase runs under its own time budget and the whole run under GPU_TIME_LIMIT (default 480 s), so
# the run ends in time even when a phase hangs. Each phase writes its output to the results folder
# as it goes (a run cut off still leaves what it finished), and one line per phase goes to the
# summary file:
#   <results>/gpu-<device>-<date>-summary.txt   phase, status, seconds, budget
#   <results>/gpu-<device>-<date>-{env,build,backends,tests,bench}.txt, -bench.json
# The results folder is benchmarks/results/ (GPU_RESULTS overrides it).
#
# Dry mode (GPU_DRY=1, or `make gpu-dry`): the same phases on a machine without a GPU, with the CUDA
# work skipped: the build says what it would do, the tests are collected but not run, the benchmarks
# list their rows and targets. Results go to build/gpu-dry/.
#
# Exit status: 0 when every phase that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DRY=${GPU_DRY:-0}
LIMIT=${GPU_TIME_LIMIT:-480}
# Budgets in seconds, each at most what is left of LIMIT; the tests get what the phases before
# them left over, less the benchmarks' share.
B_ENV=15 B_BUILD=180 B_BACKENDS=15 B_BENCH=120

start_all=$(date +%s)
remaining() { echo $(( LIMIT - ($(date +%s) - start_all) )); }

if [[ $DRY == 1 ]]; then
  slug="dry-$(hostname -s | tr -c 'a-zA-Z0-9\n' '-')-$(date -u +%Y-%m-%d-%H%M)"
  results=${GPU_RESULTS:-build/gpu-dry}
else
  slug=$("$PYTHON" -c "
import datetime, re, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no-gpu'
print(re.sub('[^a-z0-9]+', '-', name.lower()).strip('-') + '-' + datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d-%H%M'))
" 2>/dev/null || echo "unknown-$(date -u +%Y-%m-%d-%H%M)")
  results=${GPU_RESULTS:-benchmarks/results}
fi
mkdir -p "$results"
out="$results/gpu-$slug"
summary="$out-summary.txt"
status_all=0

# phase NAME BUDGET FUNCTION: runs FUNCTION under min(BUDGET, time left), output to $out-NAME.txt,
# one line to the summary. FUNCTION returns 0 (ok), 3 (skipped; it printed why) or another code.
phase() {
  local name=$1 budget=$2 fn=$3 left t0 rc
  left=$(remaining)
  (( budget > left )) && budget=$left
  if (( budget <= 0 )); then
    echo "phase $name: not started: the run's $LIMIT s are spent" | tee -a "$summary"
    status_all=1
    return
  fi
  echo "== phase $name (budget ${budget}s) ==" | tee "$out-$name.txt"
  t0=$(date +%s)
  PHASE_BUDGET=$budget "$fn" 2>&1 | tee -a "$out-$name.txt"
  rc=${PIPESTATUS[0]}
  local secs=$(( $(date +%s) - t0 )) word
  case $rc in
    0) word=ok ;;
    3) word=skipped ;;
    124|137) word="FAILED (out of time)"; status_all=1 ;;
    *) word="FAILED (exit $rc)"; status_all=1 ;;
  esac
  echo "phase $name: $word in ${secs}s (budget ${budget}s)" | tee -a "$summary"
}

# ---- 1 env --------------------------------------------------------------------------------------
have_module() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
TEST_IGNORES=()

env_phase() {
  "$PYTHON" - <<'PY'
import platform, subprocess, sys, datetime
import torch
print(f"date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}, "
      f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = ""
print(f"commit {commit or 'unknown (no git here)'}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, "
          f"compute capability {p.major}.{p.minor}")
else:
    print("device: no CUDA device visible to torch")
for mod in ("numpy", "triton", "torchvision", "pytest", "hypothesis", "expecttest", "PIL"):
    try:
        m = __import__(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}")
    except ImportError:
        print(f"{mod}: MISSING")
PY
  command -v nvcc >/dev/null && nvcc --version | tail -n 1 || echo "nvcc: MISSING (a build is impossible; a prebuilt library can still be used)"
  echo "cores $(nproc)"
  if [[ $DRY != 1 ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no GPU: run the dry mode (GPU_DRY=1) on a machine without one"
    return 1
  fi
}

# ---- 2 build ------------------------------------------------------------------------------------
build_phase() {
  local why
  if why=$("$PYTHON" .ci/build_info.py check); then
    echo "reusing the built library: $why"
    return 0
  fi
  echo "a build is needed: $why"
  local arch=${TORCH_CUDA_ARCH_LIST:-}
  if [[ -z $arch && $DRY != 1 ]]; then
    arch=$("$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}.{p.minor}')")
  fi
  local cmd=(env MAX_JOBS="$(nproc)" DIN_OPS_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${arch:-8.0;9.0+PTX}"
             "$PYTHON" setup.py build_ext --inplace)
  if [[ $DRY == 1 ]]; then
    echo "dry: would run: ${cmd[*]}"
    return 3
  fi
  command -v nvcc >/dev/null || { echo "skipped: nvcc is missing and no matching prebuilt library"; return 3; }
  have_module ninja || command -v ninja >/dev/null || echo "note: ninja is missing: the build runs one file at a time"
  echo "running: ${cmd[*]}"
  timeout $(( PHASE_BUDGET - 5 )) "${cmd[@]}" > "$out-build.log" 2>&1
  local rc=$?
  grep "^din_ops:" "$out-build.log"
  if (( rc != 0 )); then
    tail -n 40 "$out-build.log"
    return $rc
  fi
  "$PYTHON" .ci/build_info.py write
}

# ---- 3 backends ---------------------------------------------------------------------------------
backends_phase() {
  GPU_DRY=$DRY "$PYTHON" - <<'PY'
import os, sys
import torch
import din_ops
from din_ops import backends

dry = os.environ.get("GPU_DRY") == "1"
print("available_backends():", din_ops.available_backends())
# Every operator of the schema (csrc/din_ops.cpp) that takes tensors: not the Triton ones (Python)
# nor the CPU-level queries.
ops = sorted(name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
             if name.startswith("din_ops::") and not name.startswith(("din_ops::triton_", "din_ops::cpu_capabilit")))
missing = []
for name in ops:
    # A CUDA kernel of its own, or a composite one (CompositeExplicitAutograd: composed of din_ops
    # operators that have CUDA kernels, e.g. din_ops::adain).
    own = backends.has_kernel(f"din_ops::{name}", "CUDA")
    composite = backends.has_kernel(f"din_ops::{name}", "CompositeExplicitAutograd")
    print(f"  din_ops::{name:45s} CUDA kernel: {'yes' if own else 'composite' if composite else 'no'}")
    if not (own or composite):
        missing.append(name)
if dry:
    print("dry: CUDA kernels are not expected here")
    sys.exit(3)
if "cuda" not in din_ops.available_backends() or missing:
    print(f"FAILED: backend 'cuda' missing or operators without a CUDA kernel: {missing}")
    sys.exit(1)
PY
}

# ---- 4 tests ------------------------------------------------------------------------------------
tests_phase() {
  local mod
  for mod in pytest hypothesis; do
    have_module $mod || { echo "skipped: $mod is missing"; return 3; }
  done
  local extra=()
  have_module PIL || { echo "note: pillow is missing: tests/test_stylize.py is left out"; extra+=(--ignore=tests/test_stylize.py); }
  have_module expecttest || echo "note: expecttest is missing: opcheck cases may fail"
  if [[ $DRY == 1 ]]; then
    "$PYTHON" -m pytest tests -m gpu --collect-only -q -p no:cacheprovider "${extra[@]}" | tail -n 1
    echo "dry: the tests above were collected, not run"
    return 3
  fi
  # The first Triton config only: autotuning every config costs minutes here and tests nothing more.
  DIN_OPS_TRITON_AUTOTUNE=0 timeout $(( PHASE_BUDGET - 5 )) \
    "$PYTHON" -m pytest tests -m gpu -q -ra -p no:cacheprovider --durations=15 "${extra[@]}"
}

# ---- 5 bench ------------------------------------------------------------------------------------
bench_phase() {
  if [[ $DRY == 1 ]]; then
    "$PYTHON" -m benchmarks.bench_cuda --dry
    "$PYTHON" -m benchmarks.bench_triton --dry --targets-only
    return 3
  fi
  local half=$(( (PHASE_BUDGET - 5) * 2 / 3 ))
  timeout $half "$PYTHON" -m benchmarks.bench_cuda --json "$out-bench.json" || return $?
  timeout $(( PHASE_BUDGET - 5 - half )) "$PYTHON" -m benchmarks.bench_triton --targets-only --json "$out-bench-triton.json"
}

echo "make gpu: results in $results/, summary $summary (dry: $DRY, time limit ${LIMIT}s)"
: > "$summary"
phase env $B_ENV env_phase
if grep -q "^phase env: FAILED" "$summary"; then
  echo "make gpu: stopped after the env phase" | tee -a "$summary"
  exit 1
fi
phase build $B_BUILD build_phase
phase backends $B_BACKENDS backends_phase
if grep -q "^phase backends: FAILED" "$summary"; then
  echo "make gpu: no CUDA kernels: tests and benchmarks not run" | tee -a "$summary"
  exit 1
fi
phase tests $(( $(remaining) - B_BENCH )) tests_phase
phase bench $B_BENCH bench_phase
echo "make gpu: done in $(( $(date +%s) - start_all ))s; exit status $status_all" | tee -a "$summary"
exit $status_all
