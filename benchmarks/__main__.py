"""python -m benchmarks [--quick]: print the din_ops benchmark table (and save it as JSON)."""
from __future__ import annotations

import argparse
import json
import os

import din_ops

from . import bench_dynamic_conv, bench_dynamic_instance_norm, bench_instance_norm
from . import bench_spatially_adaptive
from . import bench_cuda
from . import bench_triton
from . import bench_model
from . import bench_deformable
from .common import machine, steady_allocations


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    steady_allocations()
    print(f"din_ops {din_ops.__version__}; backends: {', '.join(din_ops.available_backends())}")
    print(machine())
    results = bench_dynamic_instance_norm.run(args.quick) + bench_instance_norm.run(args.quick)
    results += bench_dynamic_conv.run(args.quick)
    results += bench_spatially_adaptive.run(args.quick)
    results += bench_cuda.run(args.quick)  # GPU rows; skipped (and says so) without a GPU
    results += bench_triton.run(args.quick)
    results += bench_model.run(args.quick)
    results += bench_deformable.run(args.quick)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
