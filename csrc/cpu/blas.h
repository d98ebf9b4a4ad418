// Matrix products for the CPU kernels: a thin wrapper over the BLAS that libtorch itself links
// (MKL on x86-64 wheels), called on small cache-resident tiles from inside parallel_for
// (parallel.h), where the BLAS runs single-threaded. Where libtorch exports no Fortran BLAS symbols
// the wrapper falls back to at::mm on the same memory (correct, slower) and warns once that it does.
#pragma once

#include <cstdint>

namespace din_ops::cpu {

// A strided matrix view: element (i, j) lives at data[i * rs + j * cs]. The GEMM needs one of the two
// strides to be 1 (a dimension of size 1 may carry any stride).
template <typename T>
struct Mat {
  T* data;
  int64_t rows, cols, rs, cs;
};

// C = A @ B + beta * C, with A (M x K), B (K x N), C (M x N). T is float or double.
void gemm(Mat<const float> A, Mat<const float> B, float beta, Mat<float> C);
void gemm(Mat<const double> A, Mat<const double> B, double beta, Mat<double> C);

// True when the products go to the optimized BLAS that libtorch links.
bool have_fast_blas();

}  // namespace din_ops::cpu
