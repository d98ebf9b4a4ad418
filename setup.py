"""Build din_ops._C: the C++ kernels for the CPU and, where torch is a CUDA build and a CUDA toolkit
is found, the CUDA kernels, all registered as torch operators.

Build against the torch that is already installed:  pip install --no-build-isolation .

Environment variables read here:
  DIN_OPS_FORCE_CUDA=1    build the CUDA kernels or stop with an error saying what is missing
  DIN_OPS_FORCE_CUDA=0    build the CPU kernels only
  CUDA_HOME / CUDA_PATH   the CUDA toolkit (default: the toolkit of the `nvcc` on PATH, found even
                          when that nvcc is a wrapper script, then /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST    GPU architectures, e.g. "9.0" (default: the GPUs visible at build time,
                          or DEFAULT_CUDA_ARCHS when none is visible)
  MAX_JOBS                parallel compile jobs (default: the number of cores)
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
INCLUDE_DIRS = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
# Without a GPU at build time: Ampere and Hopper machine code, plus PTX that newer GPUs JIT-compile.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def say(message: str) -> None:
    print(f"din_ops: {message}", flush=True)


def fail(message: str) -> None:
    """Stops the build at once (before anything is compiled) with `message`."""
    sys.exit(f"din_ops: build stopped: {message}")


def torch_openmp_runtime() -> str | None:
    """The file of the OpenMP runtime that the imported torch loaded (libgomp, libomp or libiomp5), read
    from this process's memory map; None where there is none or the map cannot be read (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return None
    runtimes = [p for p in paths if os.path.basename(p).startswith(("libgomp", "libomp", "libiomp5"))]
    return sorted(runtimes)[0] if runtimes else None


def compiler_is_gcc(compiler: str) -> bool:
    """Whether `compiler` is GCC (defines __GNUC__ but not __clang__, as clang and Intel's icpx do)."""
    try:
        out = subprocess.run(shlex.split(compiler) + ["-dM", "-E", "-x", "c++", os.devnull],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "#define __GNUC__ " in out and "#define __clang__ " not in out


def openmp_flags() -> tuple[list[str], list[str]]:
    """(compile flags, link flags) that run the kernels' parallel regions (csrc/cpu/parallel.h) on
    torch's OpenMP runtime.

    - GCC: -fopenmp, i.e. libgomp, the runtime of torch's Linux builds.
    - Another compiler where torch runs libgomp (clang on Linux): DIN_OPS_PARALLEL_GOMP and torch's
      libgomp itself. clang's -fopenmp means libomp, a second runtime beside torch's, whose teams
      ignore torch.set_num_threads and make MKL start threads of its own (parallel.h).
    - Otherwise (torch on libomp, e.g. macOS): -fopenmp where the compiler takes it, else Apple
      clang's -Xpreprocessor -fopenmp -lomp with libomp found (torch's own lib folder first), else
      none: a serial build, said out loud."""
    from torch.utils.cpp_extension import get_cxx_compiler

    compiler = get_cxx_compiler()  # what compiles the sources: $CXX, else c++
    runtime = torch_openmp_runtime()
    if runtime and os.path.basename(runtime).startswith("libgomp") and not compiler_is_gcc(compiler):
        say(f"{compiler} is not GCC and torch runs libgomp: the CPU kernels' parallel regions call "
            f"{runtime} directly (csrc/cpu/parallel.h)")
        return ["-DDIN_OPS_PARALLEL_GOMP"], [runtime]
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    probe = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], [f"-L{torch_lib}", "-lomp"])]
    for compile_flags, link_flags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp.cpp")
            with open(src, "w") as f:
                f.write(probe)
            cmd = shlex.split(compiler) + [src, *compile_flags, *link_flags, "-o", os.path.join(tmp, "a.out")]
            try:
                if subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0:
                    return compile_flags, link_flags
            except (OSError, subprocess.TimeoutExpired):
                pass
    say(f"{compiler} has no OpenMP (tried -fopenmp and -Xpreprocessor -fopenmp -lomp): the CPU kernels "
        "will run on one thread (install libomp, e.g. `brew install libomp` or Debian's libomp-dev)")
    return [], []


def cxx_flags(openmp: list[str]) -> list[str]:
    # -g0: setuptools adds -g, which doubles the compile time of ATen-heavy files. No -march: the
    # files with the hot loops are compiled once per instruction-set level under target pragmas
    # and chosen when the library loads (csrc/cpu/isa.h).
    return ["-O3", "-g0", "-std=c++20", *openmp, "-Wall", "-Wno-unknown-pragmas"]


def cpu_sources() -> list[str]:
    """csrc/**/*.cpp without the C++ tests and the CUDA glue, relative to the repository (so the name
    of the folder it sits in does not matter)."""
    return sorted(
        rel
        for rel in (
            os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
        )
        if rel.split(os.sep)[1] not in ("tests", "cuda")
    )


def cuda_sources() -> list[str]:
    cuda_dir = os.path.join(ROOT, "csrc", "cuda")
    return sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(cuda_dir, "*.cu")) + glob.glob(os.path.join(cuda_dir, "*.cpp"))
    )


# ---- Finding the CUDA toolkit ------------------------------------------------------------------
# torch guesses CUDA_HOME as the parent of the folder holding `nvcc`: wrong where nvcc is a wrapper
# script or a symlink farm (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda-13.0/bin/nvcc). nvcc
# itself knows where it lives: its dry run prints `#$ TOP=<toolkit>/bin/..`.


def toolkit_of_nvcc(nvcc: str) -> str | None:
    """The toolkit folder of the nvcc at `nvcc`, asked of nvcc itself; None if it does not answer."""
    try:
        out = subprocess.run(
            [nvcc, "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    if match:
        return os.path.realpath(match.group(1).strip())
    # An nvcc that prints no TOP: the folder above the real file's bin/.
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def find_toolkit() -> tuple[str | None, str]:
    """(toolkit folder or None, where it came from)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.path.realpath(os.environ[var]), var
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        home = toolkit_of_nvcc(nvcc)
        if home is not None:
            return home, f"the nvcc on PATH ({nvcc})"
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return os.path.realpath("/usr/local/cuda"), "/usr/local/cuda"
    return None, "nowhere: no CUDA_HOME/CUDA_PATH, no nvcc on PATH, no /usr/local/cuda"


def missing_toolkit_parts(home: str) -> list[str]:
    """What a CUDA build needs from the toolkit at `home` and does not find there."""
    missing = []
    if not os.path.isfile(os.path.join(home, "bin", "nvcc")):
        missing.append(f"{home}/bin/nvcc")
    if not os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
        missing.append(f"{home}/include/cuda_runtime.h (the CUDA runtime headers)")
    if not any(glob.glob(os.path.join(home, lib, "libcudart.so*")) for lib in ("lib64", "lib")):
        missing.append(f"{home}/lib64/libcudart.so (the CUDA runtime library)")
    return missing


def want_cuda() -> bool:
    """Whether to build the CUDA kernels. Stops the build where CUDA is wanted but cannot be built:
    asked for with DIN_OPS_FORCE_CUDA=1, or torch is a CUDA build and a toolkit was found that lacks
    its headers or libraries. Never starts a long CPU-only build silently."""
    force = os.environ.get("DIN_OPS_FORCE_CUDA", "")
    if force == "0":
        say("DIN_OPS_FORCE_CUDA=0: building the CPU kernels only")
        return False
    if torch.version.cuda is None:
        if force == "1":
            fail(f"DIN_OPS_FORCE_CUDA=1, but torch {torch.__version__} is a CPU-only build: install a "
                 "CUDA build of torch first (then build again with --no-build-isolation)")
        say(f"torch {torch.__version__} has no CUDA support: building the CPU kernels only")
        return False
    home, source = find_toolkit()
    if home is None:
        if force == "1":
            fail(f"DIN_OPS_FORCE_CUDA=1, but no CUDA toolkit was found ({source}): set "
                 "CUDA_HOME=/path/to/cuda (the folder with bin/nvcc, include/ and lib64/)")
        say(f"torch {torch.__version__} is a CUDA build but no CUDA toolkit was found ({source}): "
            "building the CPU kernels only (set CUDA_HOME to build the CUDA kernels)")
        return False
    missing = missing_toolkit_parts(home)
    if missing:
        fail(f"the CUDA toolkit at {home} (from {source}) lacks " + "; ".join(missing)
             + ". Set CUDA_HOME to a complete CUDA toolkit (e.g. CUDA_HOME=/usr/local/cuda), or "
             "DIN_OPS_FORCE_CUDA=0 for a CPU-only build")
    # torch.utils.cpp_extension reads CUDA_HOME when first imported and keeps it in a module global.
    os.environ["CUDA_HOME"] = home
    import torch.utils.cpp_extension as cpp_extension

    cpp_extension.CUDA_HOME = home
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    say(f"building the CUDA kernels: torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit {home} "
        f"(from {source}), architectures {os.environ.get('TORCH_CUDA_ARCH_LIST') or 'of the visible GPUs'}")
    return True


# ---- The extension --------------------------------------------------------------------------------


def extension():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    omp_compile, omp_link = openmp_flags()
    common = dict(
        name="din_ops._C",
        include_dirs=INCLUDE_DIRS,
        extra_link_args=omp_link,
        py_limited_api=False,
    )
    if want_cuda():
        return CUDAExtension(
            sources=cpu_sources() + cuda_sources(),
            extra_compile_args={"cxx": cxx_flags(omp_compile), "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            **common,
        )
    return CppExtension(sources=cpu_sources(), extra_compile_args={"cxx": cxx_flags(omp_compile)}, **common)


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension, is_ninja_available

    # ninja: parallel (MAX_JOBS jobs, all cores by default) and incremental.
    if not is_ninja_available():
        say("ninja not found (pip install ninja): compiling one file at a time, several times slower")
    return BuildExtension.with_options(use_ninja=True)


# The repository's benchmarks/ folder is installed as din_ops.benchmarks (`din-bench`, `python -m
# din_ops.benchmarks`): nothing named `benchmarks` lands in site-packages.
# `python setup.py ...` and pip's build backend both run this file as __main__; tests/test_build.py
# imports it under another name to test the functions above.
if __name__ == "__main__":
    setup(
        packages=find_packages(include=["din_ops", "din_ops.*"]) + ["din_ops.benchmarks"],
        package_dir={"din_ops.benchmarks": "benchmarks"},
        ext_modules=[extension()],
        cmdclass={"build_ext": build_ext_class()},
    )
