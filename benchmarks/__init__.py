"""din_ops microbenchmarks (``din-bench``, ``python -m benchmarks``): every op on every backend beside
plain PyTorch and the bare-GEMM / copy floor; see registry.py for how an op declares its cases."""
