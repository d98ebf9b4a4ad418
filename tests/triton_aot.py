"""Compile the din_ops Triton kernels for NVIDIA GPUs ahead of time, without a GPU.

    python tests/triton_aot.py [--all] [--arch 90 80]

The Triton interpreter (which CI runs the kernels with) accepts code that a GPU compile rejects, such
as dot blocks smaller than 16 or mixed-dtype dots. This compiles every kernel through Triton's real
GPU pipeline (TTIR, TTGIR, LLVM, PTX and ptxas, which ships with the triton wheel) for the given
compute capabilities, for every dtype, and for the first two autotune configs of each kernel (all
of them with --all, the first N with --configs N). It needs no driver, but must run without TRITON_INTERPRET.

Prints one line per kernel and exits non-zero if any compile failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("run without TRITON_INTERPRET: the kernels must be real @triton.jit functions")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# The kernel modules import without a GPU (only din_ops.triton.available() says they cannot run).
from din_ops.triton import dynamic_instance_norm as din  # noqa: E402
from din_ops.triton import instance_norm as inorm  # noqa: E402
from din_ops.triton import spatially_adaptive_instance_norm as sain  # noqa: E402

DTYPES = {"fp32": "fp32", "fp64": "fp64", "bf16": "bf16", "fp16": "fp16"}


def _jit(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


# (kernel, its pointer dtypes with DATA for the tensor dtype, float scalars, constexprs given a dtype)
def _cases():
    f64 = "*fp64"
    plane_ptrs = {"X": "*DATA", "Y": "*DATA", "MEAN": f64, "RSTD": f64, "GY": "*DATA", "GX": "*DATA",
                  "G": "*DATA", "B": "*DATA", "GG": "*DATA", "GB": "*DATA"}
    eps = ("eps_hi", "eps_lo")

    def gemm_ptrs(data):
        acc = "*fp64" if data == "fp64" else "*fp32"
        return {"X": "*DATA", "W": "*DATA", "B": "*DATA", "MEAN": f64, "RSTD": f64, "Y": "*DATA",
                "GY": "*DATA", "GX": "*DATA", "GW_PART": acc, "GB_PART": acc, "GW": acc, "GB": acc}

    def flags(data, **extra):
        return dict(ACC_F64=data == "fp64", **extra)

    def gemm_flags(data, **extra):
        return dict(ACC_F64=data == "fp64", UPCAST=False,
                    PRECISION="tf32x3" if data == "fp32" else "ieee", **extra)

    yield inorm.stats_kernel, lambda d: plane_ptrs, eps, lambda d: flags(d)
    yield inorm._forward_kernel, lambda d: plane_ptrs, eps, lambda d: flags(d)
    yield inorm._backward_kernel, lambda d: plane_ptrs, (), lambda d: flags(d)
    yield sain._forward_kernel, lambda d: plane_ptrs, eps, lambda d: flags(
        d, GAMMA_FULL=True, HAS_BETA=True, BETA_FULL=False)
    yield sain._backward_kernel, lambda d: plane_ptrs, (), lambda d: flags(
        d, GAMMA_FULL=False, BETA_DEFINED=True)
    yield din._forward_kernel, gemm_ptrs, (), lambda d: gemm_flags(d, HAS_BIAS=True)
    yield din._grad_weight_kernel, gemm_ptrs, (), lambda d: gemm_flags(d)
    yield din._grad_x_kernel, gemm_ptrs, (), lambda d: gemm_flags(d)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every autotune config")
    parser.add_argument("--configs", type=int, default=2, help="how many autotune configs (default 2)")
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="compute capabilities")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = parser.parse_args(argv)
    failures = 0
    print(f"triton {triton.__version__}")
    for kernel, pointers, floats, constexprs in _cases():
        fn = _jit(kernel)
        configs = kernel.configs if args.all else kernel.configs[: args.configs]
        for arch in args.arch:
            for data in args.dtypes:
                start = time.perf_counter()
                errors = []
                for config in configs:
                    consts = dict(constexprs(data), **config.kwargs)
                    sig = {}
                    for name in fn.arg_names:
                        if name in consts:
                            sig[name] = "constexpr"
                        elif name in pointers(data):
                            sig[name] = pointers(data)[name].replace("DATA", DTYPES[data])
                        elif name in floats:
                            sig[name] = "fp32"
                        else:
                            sig[name] = "i32"
                    try:
                        triton.compile(
                            ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=config.num_warps, num_stages=config.num_stages),
                        )
                    except Exception as error:  # report every failure, then fail
                        errors.append(f"{config.kwargs}: {type(error).__name__}: {str(error)[-600:]}")
                status = "ok" if not errors else "FAILED"
                print(f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__} sm_{arch} {data}: {status} "
                      f"({len(configs)} configs, {time.perf_counter() - start:.1f} s)", flush=True)
                for e in errors:
                    print("   ", e)
                failures += len(errors)
    print("all compiled" if not failures else f"{failures} compiles failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
