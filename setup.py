"""Build din_ops._C, the C++ (and, where a CUDA toolchain and a CUDA build of torch exist, CUDA)
kernels registered as torch operators.

Build against the torch that is already installed:  pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import find_packages, setup
import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cxx_flags():
    # -g0: setuptools adds -g, which doubles the compile time of ATen-heavy files.
    # -fopenmp: at::parallel_for is only parallel with OpenMP. No -march: the loops that matter are
    # compiled for several x86-64 levels and chosen at run time (csrc/cpu/loops.cpp).
    return ["-O3", "-g0", "-std=c++20", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]


def extension():
    # The CPU sources: csrc/**/*.cpp without the C++ tests and the CUDA glue (paths relative to the
    # repository, so the name of the folder it sits in does not matter).
    sources = sorted(
        rel
        for rel in (
            os.path.relpath(p, ROOT)
            for p in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
        )
        if rel.split(os.sep)[1] not in ("tests", "cuda")
    )
    if want_cuda():
        return cuda_extension(sources)
    return CppExtension(
        name="din_ops._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")],
        extra_compile_args={"cxx": cxx_flags()},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )


# ---- CUDA ------------------------------------------------------------------------------------
# A CUDAExtension is built when torch is a CUDA build and the CUDA toolkit (nvcc) is found, or
# when DIN_OPS_FORCE_CUDA=1 (e.g. to build on a machine without a GPU; it still needs a CUDA
# torch to link against). DIN_OPS_FORCE_CUDA=0 forces a CPU-only build. The GPU architectures
# follow TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0"), which torch's BuildExtension reads; without it,
# the architectures of the GPUs visible at build time are used.


def want_cuda() -> bool:
    force = os.environ.get("DIN_OPS_FORCE_CUDA", "")
    if force == "0":
        print("din_ops: DIN_OPS_FORCE_CUDA=0, building the CPU kernels only")
        return False
    if force == "1":
        print("din_ops: DIN_OPS_FORCE_CUDA=1, building the CUDA kernels")
        return True
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is None:
        print("din_ops: this torch has no CUDA support, building the CPU kernels only")
        return False
    if CUDA_HOME is None:
        print("din_ops: torch has CUDA but no CUDA toolkit (nvcc / CUDA_HOME) was found, building the CPU kernels only")
        return False
    print(f"din_ops: building the CUDA kernels (CUDA {torch.version.cuda}, toolkit at {CUDA_HOME})")
    return True


def cuda_extension(cpu_sources):
    from torch.utils.cpp_extension import CUDAExtension

    cuda_dir = os.path.join(ROOT, "csrc", "cuda")
    sources = cpu_sources + sorted(
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(cuda_dir, "*.cu")) + glob.glob(os.path.join(cuda_dir, "*.cpp"))
    )
    return CUDAExtension(
        name="din_ops._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")],
        extra_compile_args={"cxx": cxx_flags(), "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )


setup(
    packages=find_packages(include=["din_ops", "din_ops.*", "benchmarks"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
