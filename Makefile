# din_ops: `make bench` installs everything and prints the benchmark table; `make test` installs
# everything and runs the whole test suite (Python and C++). Both work on a fresh machine.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
CMAKE_BUILD ?= build/cmake

.PHONY: install test test-python test-cpp bench bench-quick bench-sweep bench-pytest clean

# torch is installed only where none is (pinned: an unpinned torch would pull a multi-GB CUDA
# build); an existing torch >= 2.11, e.g. a CUDA build on a GPU machine, is kept.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_PIN)"
	$(PYTHON) -m pip install --quiet numpy pytest hypothesis expecttest "pytest-benchmark>=5.2" "matplotlib>=3.8"
	$(PYTHON) -m pip install --no-build-isolation --quiet -e .

test: install test-python test-cpp

test-python:
	$(PYTHON) -m pytest tests -q

test-cpp:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CMAKE_BUILD) -j2
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

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
