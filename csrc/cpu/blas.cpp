#include "blas.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

// Fortran BLAS entry points exported by libtorch_cpu (MKL or OpenBLAS). Declared weak: on a torch
// build without them they resolve to null and the at::mm fallback below is used instead.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace din_ops::cpu {
namespace {

int as_blas_int(int64_t v) {
  TORCH_CHECK(v <= std::numeric_limits<int>::max(), "din_ops: matrix dimension ", v,
              " is too large for the BLAS interface");
  return static_cast<int>(v);
}

// How a row-major-or-column-major view is passed to column-major BLAS as an (r x c) operand.
struct Operand {
  char trans;
  int64_t ld;
};

// View `m` as the column-major operand of shape (m.rows x m.cols): 'N' when rows are the unit-stride
// dimension, 'T' (of the transposed storage) when columns are.
template <typename T>
Operand as_operand(const Mat<T>& m) {
  if (m.rs == 1 || m.rows == 1) return {'N', std::max<int64_t>({m.cs, m.rows, 1})};
  TORCH_CHECK(m.cs == 1 || m.cols == 1, "din_ops: gemm operand needs a unit stride");
  return {'T', std::max<int64_t>({m.rs, m.cols, 1})};
}

template <typename T>
Mat<T> transposed(const Mat<T>& m) {
  return {m.data, m.cols, m.rows, m.cs, m.rs};
}

template <typename T, typename Fn>
void gemm_impl(Fn* blas, Mat<const T> A, Mat<const T> B, T beta, Mat<T> C) {
  const int64_t M = C.rows, N = C.cols, K = A.cols;
  if (M == 0 || N == 0) return;
  if (blas == nullptr || K == 0) {  // K == 0: BLAS may not accept it
    if (blas == nullptr) {
      TORCH_WARN_ONCE("din_ops: libtorch exports no Fortran BLAS (sgemm_/dgemm_) here; the CPU "
                      "kernels fall back to at::mm per tile, which is correct but slower");
    }
    auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    auto c = at::from_blob(C.data, {M, N}, {C.rs, C.cs}, opts);
    // As in BLAS, beta == 0 means C is not read (it may hold garbage).
    auto product = K == 0 ? at::zeros({M, N}, opts)
                          : at::mm(at::from_blob(const_cast<T*>(A.data), {M, K}, {A.rs, A.cs}, opts),
                                   at::from_blob(const_cast<T*>(B.data), {K, N}, {B.rs, B.cs}, opts));
    if (beta == T(0)) {
      c.copy_(product);
    } else {
      c.mul_(beta).add_(product);
    }
    return;
  }
  // Column-major BLAS computes C = op(A) op(B) with C column-major. If C is row-major instead,
  // compute C^T = B^T A^T, whose storage is column-major.
  // A single column is column-major only when its elements are adjacent (rs == 1); one with a row
  // stride (a column of a wider row-major matrix) is handled as the row C^T, with ldc = rs.
  const bool c_col_major = C.rs == 1 && (C.cs != 1 || C.cols == 1);
  if (!c_col_major) {
    TORCH_CHECK(C.cs == 1 || C.cols == 1, "din_ops: gemm output needs a unit stride");
    Mat<const T> At = transposed(A), Bt = transposed(B);
    A = Bt;
    B = At;
    C = transposed(C);
  }
  const Operand a = as_operand(A), b = as_operand(B);
  const int m = as_blas_int(C.rows), n = as_blas_int(C.cols), k = as_blas_int(A.cols);
  const int lda = as_blas_int(a.ld), ldb = as_blas_int(b.ld);
  const int ldc = as_blas_int(std::max<int64_t>({C.cs, C.rows, 1}));
  const T alpha = 1;
  blas(&a.trans, &b.trans, &m, &n, &k, &alpha, A.data, &lda, B.data, &ldb, &beta, C.data, &ldc);
}

}  // namespace

void gemm(Mat<const float> A, Mat<const float> B, float beta, Mat<float> C) {
  gemm_impl<float>(sgemm_, A, B, beta, C);
}

void gemm(Mat<const double> A, Mat<const double> B, double beta, Mat<double> C) {
  gemm_impl<double>(dgemm_, A, B, beta, C);
}

bool have_fast_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

}  // namespace din_ops::cpu
