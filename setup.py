"""Build din_ops._C, the C++ (and, where a CUDA toolchain and a CUDA build of torch exist, CUDA)
kernels registered as torch operators.

Build against the torch that is already installed:  pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cxx_flags():
    # -g0: setuptools adds -g, which doubles the compile time of ATen-heavy files.
    # -fopenmp: at::parallel_for is only parallel with OpenMP. No -march: the loops that matter are
    # compiled for several x86-64 levels and chosen at run time (csrc/cpu/loops.cpp).
    return ["-O3", "-g0", "-std=c++20", "-fopenmp", "-Wall", "-Wno-unknown-pragmas"]


def extension():
    sources = sorted(
        os.path.relpath(p, ROOT)
        for p in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
        if os.sep + "tests" + os.sep not in p
    )
    return CppExtension(
        name="din_ops._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")],
        extra_compile_args={"cxx": cxx_flags()},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )


setup(
    packages=find_packages(include=["din_ops", "din_ops.*", "benchmarks"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
)
