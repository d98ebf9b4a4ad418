"""din_ops microbenchmarks (``din-bench``; ``python -m din_ops.benchmarks`` where installed,
``python -m benchmarks`` in a source checkout): every op on every backend beside plain PyTorch and
the bare-GEMM / copy floor; see registry.py for how an op declares its cases. The modules import
each other relatively, so the package runs under either name."""
