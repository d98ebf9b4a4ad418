"""setup.py's build decisions: where the CUDA toolkit is, when a build must stop at once instead of
compiling for minutes and then failing or silently leaving the CUDA kernels out, and which OpenMP
runtime the CPU kernels' parallel regions run on."""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def setup_py(monkeypatch):
    for var in ("CUDA_HOME", "CUDA_PATH", "DIN_OPS_FORCE_CUDA", "TORCH_CUDA_ARCH_LIST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)
    spec = importlib.util.spec_from_file_location("din_ops_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    # want_cuda() sets these for torch's build; monkeypatch restores what was there before.
    os.environ.pop("CUDA_HOME", None)
    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)


def fake_toolkit(root, *, headers=True, library=True):
    os.makedirs(root / "bin")
    (root / "bin" / "nvcc").write_text("#!/bin/sh\nexit 1\n")
    if headers:
        os.makedirs(root / "include")
        (root / "include" / "cuda_runtime.h").write_text("")
    if library:
        os.makedirs(root / "lib64")
        (root / "lib64" / "libcudart.so").write_text("")
    return root


def real_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH")
    return nvcc


def test_toolkit_of_a_wrapper_script_is_the_real_one(setup_py, tmp_path):
    # A wrapper like /usr/local/bin/nvcc (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`): torch would take
    # its parent folder; nvcc itself names its toolkit.
    real = setup_py.toolkit_of_nvcc(real_nvcc())
    wrapper = tmp_path / "bin" / "nvcc"
    os.makedirs(wrapper.parent)
    wrapper.write_text(f'#!/bin/sh\nexec {os.path.join(real, "bin", "nvcc")} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    assert setup_py.toolkit_of_nvcc(str(wrapper)) == real
    assert os.path.isfile(os.path.join(real, "include", "cuda_runtime.h"))
    assert setup_py.missing_toolkit_parts(real) == []


def test_toolkit_from_cuda_home_first(setup_py, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert setup_py.find_toolkit() == (os.path.realpath(tmp_path), "CUDA_HOME")


def test_missing_parts_are_named(setup_py, tmp_path):
    home = fake_toolkit(tmp_path / "cuda", headers=False, library=False)
    missing = " ".join(setup_py.missing_toolkit_parts(str(home)))
    assert "cuda_runtime.h" in missing and "libcudart.so" in missing and "bin/nvcc" not in missing


def test_cpu_only_when_asked(setup_py, monkeypatch):
    monkeypatch.setenv("DIN_OPS_FORCE_CUDA", "0")
    assert setup_py.want_cuda() is False


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_forced_cuda_with_a_cpu_torch_stops(setup_py, monkeypatch):
    monkeypatch.setenv("DIN_OPS_FORCE_CUDA", "1")
    with pytest.raises(SystemExit, match="CPU-only build"):
        setup_py.want_cuda()


def test_cuda_torch_with_an_incomplete_toolkit_stops(setup_py, monkeypatch, tmp_path):
    # torch is a CUDA build and a toolkit is there, but without its headers: stop before compiling,
    # naming what is missing and the variable to set.
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_HOME", str(fake_toolkit(tmp_path / "cuda", headers=False)))
    with pytest.raises(SystemExit, match=r"lacks .*cuda_runtime\.h.*Set CUDA_HOME"):
        setup_py.want_cuda()


def test_cuda_torch_with_a_complete_toolkit_builds_cuda(setup_py, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    home = fake_toolkit(tmp_path / "cuda")
    monkeypatch.setenv("CUDA_HOME", str(home))
    assert setup_py.want_cuda() is True
    # torch's build reads its own copy of CUDA_HOME; without a GPU the default architectures apply.
    assert cpp_extension.CUDA_HOME == os.path.realpath(home)
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == setup_py.DEFAULT_CUDA_ARCHS == "8.0;9.0+PTX"


def test_no_toolkit_with_a_cuda_torch_builds_the_cpu_kernels(setup_py, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(setup_py, "find_toolkit", lambda: (None, "nowhere"))
    assert setup_py.want_cuda() is False
    monkeypatch.setenv("DIN_OPS_FORCE_CUDA", "1")
    with pytest.raises(SystemExit, match="no CUDA toolkit was found"):
        setup_py.want_cuda()


def _torch_runtime_or_skip(setup_py):
    runtime = setup_py.torch_openmp_runtime()
    if runtime is None or not os.path.basename(runtime).startswith("libgomp"):
        pytest.skip(f"torch does not run libgomp here ({runtime})")
    return runtime


def test_torch_openmp_runtime_is_the_loaded_one(setup_py):
    runtime = _torch_runtime_or_skip(setup_py)
    assert os.path.isfile(runtime)
    with open("/proc/self/maps") as f:
        assert runtime in f.read()


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_openmp_runtime_is_torchs_whatever_the_compiler(setup_py, monkeypatch, compiler):
    # GCC: -fopenmp (libgomp, torch's runtime). clang: not its own libomp beside torch's libgomp, but
    # torch's libgomp called directly (csrc/cpu/parallel.h).
    runtime = _torch_runtime_or_skip(setup_py)
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} on PATH")
    monkeypatch.setenv("CXX", compiler)
    compile_flags, link_flags = setup_py.openmp_flags()
    if compiler == "g++":
        assert setup_py.compiler_is_gcc(compiler)
        assert (compile_flags, link_flags) == (["-fopenmp"], ["-fopenmp"])
    else:
        assert not setup_py.compiler_is_gcc(compiler)
        assert (compile_flags, link_flags) == (["-DDIN_OPS_PARALLEL_GOMP"], [runtime])
