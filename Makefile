# din_ops: `make bench` installs everything and prints the benchmark table; `make test` installs
# everything and runs the whole test suite (Python and C++). Both work on a fresh machine.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
TRITON_PIN ?= triton==3.8.0
CMAKE_BUILD ?= build/cmake

.PHONY: install test test-python test-cpp test-clang test-gcc-oldest test-aarch64 test-isa-levels test-sanitize test-cuda-compile test-cuda-emulate bench bench-quick bench-sweep bench-pytest gpu gpu-dry gpu-prebuild test-oldest clean

# torch is installed only where none is (pinned: an unpinned torch would pull a multi-GB CUDA
# build); an existing torch >= 2.11, e.g. a CUDA build on a GPU machine, is kept.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_PIN)"
	$(PYTHON) -m pip install --quiet numpy pillow pytest hypothesis expecttest ninja "pytest-benchmark>=5.2" "matplotlib>=3.8"
	@# triton (optional, backend="triton"; CI runs its kernels under the interpreter) only where none is:
	@# GPU machines keep the triton their torch came with. --no-deps: pip must never resolve torch here.
	@$(PYTHON) -c "import triton" 2>/dev/null || $(PYTHON) -m pip install --quiet --no-deps "$(TRITON_PIN)"
	$(PYTHON) -m pip install --no-build-isolation --quiet -e .

test: install test-python test-isa-levels test-clang test-gcc-oldest test-aarch64 test-cuda-compile test-cuda-emulate

test-python:
	$(PYTHON) -m pytest tests -q

test-cpp:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CMAKE_BUILD) -j2
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

# The CPU kernel tests once more at every other instruction-set level this CPU has (test-python ran
# them at the best one): `default` and `avx2` on an AVX-512 machine, `default` on an AVX2 one.
ISA_TESTS ?= tests/test_instance_norm.py tests/test_dynamic_instance_norm.py tests/test_spatially_adaptive.py \
  tests/test_dynamic_conv.py tests/test_deformable.py tests/test_adain.py tests/test_cpu_capability.py
test-isa-levels:
	@best=$$($(PYTHON) -c "import din_ops; print(din_ops.cpu_capability())"); \
	for level in $$($(PYTHON) -c "import din_ops; print(' '.join(din_ops.cpu_capabilities()))"); do \
	  [ "$$level" = "$$best" ] && continue; \
	  echo "test-isa-levels: DIN_OPS_CPU_CAPABILITY=$$level"; \
	  DIN_OPS_CPU_CAPABILITY=$$level $(PYTHON) -m pytest $(ISA_TESTS) -q -m "not gpu" -k "not gradcheck" -p no:cacheprovider || exit 1; \
	done

# The C++ tests built with clang and with the oldest GCC Debian ships (g++-11), the CPU sources
# compiled for aarch64, and the aarch64 build of the vector loops run under qemu-user. Each skips
# with a message where its compiler (or qemu) is missing; on CI (CI=true) it installs it first.
test-clang:
	PYTHON=$(PYTHON) .ci/ctest_with.sh clang++ clang libomp-dev

test-gcc-oldest:
	PYTHON=$(PYTHON) .ci/ctest_with.sh g++-11 g++-11

test-aarch64:
	PYTHON=$(PYTHON) .ci/aarch64_compile.sh
	PYTHON=$(PYTHON) .ci/aarch64_run.sh

# The C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (the pre-release check; see
# docs/testing.md). LibTorch is not instrumented: leak detection is off (its registries live until exit), and
# any report fails the run.
SANITIZE_BUILD ?= build/cmake-sanitize
test-sanitize:
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_OPS_SANITIZE=ON \
	  -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(SANITIZE_BUILD) -j2
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(SANITIZE_BUILD) --output-on-failure

# Compile-only check of the CUDA kernels (nvcc -c for sm_80 and sm_90, and the host glue against the
# torch CUDA headers); runs without a GPU, skips with a message when nvcc is absent.
test-cuda-compile:
	PYTHON=$(PYTHON) .ci/cuda_compile_check.sh

# The CUDA kernels run on the CPU: compiled as C++ against a host emulation of the CUDA API
# (csrc/tests/cuda_emu/) with ASan/UBSan and compared with double-precision references.
test-cuda-emulate:
	.ci/cuda_emulate.sh

# On a GPU machine (CUDA build of torch, nvcc, the test tools installed; nothing is installed here):
# build (or reuse a matching prebuilt library), check the CUDA kernels, run `pytest -m gpu` and the
# GPU benchmarks, all within GPU_TIME_LIMIT seconds (480); each phase's output goes to
# benchmarks/results/ as it finishes. `make gpu-dry` runs the same phases without a GPU, the CUDA
# work skipped (results in build/gpu-dry/). See .ci/gpu_run.sh.
gpu:
	PYTHON=$(PYTHON) .ci/gpu_run.sh

gpu-dry:
	PYTHON=$(PYTHON) GPU_DRY=1 .ci/gpu_run.sh

# The oldest supported versions, for the GPU machines' environment: a Python 3.12 venv with torch
# 2.11.0 (CUDA 13.0 build, from PyPI: ~3 GB with its CUDA wheels) and triton 3.6.0.
#   make gpu-prebuild  builds din_ops/_C.cpython-312-*.so with the CUDA kernels for GPU_ARCHS and
#                      records what it was built from (.ci/build_info.py), so that `make gpu` on a GPU
#                      machine with that environment loads it instead of compiling (never commit it)
#   make test-oldest   the same build, then the CPU test suite and the Triton interpreter tests
#                      under torch 2.11 / triton 3.6 (the pre-release check; not in CI: ~15 min)
# numpy < 2.4 in that venv: triton 3.6's interpreter fails on numpy >= 2.4 (din_ops.triton says so
# and the Triton tests skip with that reason where both meet).
OLDEST_PYTHON ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
OLDEST_VENV ?= build/venv-oldest
GPU_ARCHS ?= 8.0;9.0+PTX
$(OLDEST_VENV)/bin/python:
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet torch==2.11.0 triton==3.6.0 "numpy<2.4" pillow pytest hypothesis expecttest ninja

gpu-prebuild: $(OLDEST_VENV)/bin/python
	@if $(OLDEST_VENV)/bin/python .ci/build_info.py check; then echo "gpu-prebuild: up to date"; else \
	  DIN_OPS_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(GPU_ARCHS)" $(OLDEST_VENV)/bin/python setup.py build_ext --inplace \
	    && TORCH_CUDA_ARCH_LIST="$(GPU_ARCHS)" $(OLDEST_VENV)/bin/python .ci/build_info.py write; fi

test-oldest: gpu-prebuild
	$(OLDEST_VENV)/bin/python -m pytest tests -q -p no:cacheprovider

bench: install
	$(PYTHON) -m benchmarks

bench-quick: install
	$(PYTHON) -m benchmarks --quick

bench-sweep: install
	$(PYTHON) -m benchmarks --sweep

# pytest-benchmark cases (not part of `make test`): compare with the last saved run, save this one.
bench-pytest: install
	$(PYTHON) -m pytest benchmarks --benchmark-autosave --benchmark-compare

clean:
	rm -rf build din_ops/*.so *.egg-info
