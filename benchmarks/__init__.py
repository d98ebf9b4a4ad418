"""din_ops microbenchmarks: every op beside plain PyTorch and the bare-GEMM / copy floor."""
