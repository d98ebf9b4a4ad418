# din_ops: `make bench` installs everything and prints the benchmark table; `make test` installs
# everything and runs the whole test suite (Python and C++). Both work on a fresh machine.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
CMAKE_BUILD ?= build/cmake

.PHONY: install test test-python test-cpp test-sanitize bench clean

# torch is installed only where none is (pinned: an unpinned torch would pull a multi-GB CUDA
# build); an existing torch >= 2.11, e.g. a CUDA build on a GPU machine, is kept.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_PIN)"
	$(PYTHON) -m pip install --quiet numpy pytest hypothesis expecttest
	$(PYTHON) -m pip install --no-build-isolation --quiet -e .

test: install test-python test-cpp

test-python:
	$(PYTHON) -m pytest tests -q

test-cpp:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CMAKE_BUILD) -j2
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

# The C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (the pre-release check; see the
# README). LibTorch is not instrumented: leak detection is off (its registries live until exit), and
# any report fails the run.
SANITIZE_BUILD ?= build/cmake-sanitize
test-sanitize:
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIN_OPS_SANITIZE=ON \
	  -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(SANITIZE_BUILD) -j2
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(SANITIZE_BUILD) --output-on-failure

bench: install
	$(PYTHON) -m benchmarks

clean:
	rm -rf build din_ops/*.so *.egg-info
