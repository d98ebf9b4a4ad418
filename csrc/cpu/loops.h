// Vectorized inner loops shared by the CPU kernels. They work on the accumulation type only (float or
// double): kernels convert half/bfloat16 data to float in small blocks before calling them.
//
// The loops are plain C++ written so that the compiler vectorizes them (independent lanes, no
// reductions that need reassociation). loops.cpp compiles each one for several x86-64 levels and
// picks the best at run time, so the package never needs -march=native.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace din_ops::cpu {

// Number of elements the kernels convert or process at a time (fits in L1).
constexpr int64_t kBlock = 1024;

// s1 += sum(x - shift), s2 += sum((x - shift)^2) over n contiguous values.
void shifted_sums(const float* x, int64_t n, float shift, double* s1, double* s2);
void shifted_sums(const double* x, int64_t n, double shift, double* s1, double* s2);

// The same per channel for `rows` pixels of channels-last data (row stride C):
// s1[c] += sum_r(x[r, c] - shift[c]), s2[c] += sum_r(...)^2.
void shifted_sums_rows(const float* x, int64_t rows, int64_t C, const float* shift, double* s1,
                       double* s2);
void shifted_sums_rows(const double* x, int64_t rows, int64_t C, const double* shift, double* s1,
                       double* s2);

// sum(g) and sum(g * xh) with xh = ((x - hi) - lo) * r, over n contiguous values.
void grad_sums(const float* g, const float* x, int64_t n, float hi, float lo, float r, double* sg,
               double* sgxh);
void grad_sums(const double* g, const double* x, int64_t n, double hi, double lo, double r,
               double* sg, double* sgxh);
// Per channel over `rows` channels-last pixels.
void grad_sums_rows(const float* g, const float* x, int64_t rows, int64_t C, const float* hi,
                    const float* lo, const float* r, double* sg, double* sgxh);
void grad_sums_rows(const double* g, const double* x, int64_t rows, int64_t C, const double* hi,
                    const double* lo, const double* r, double* sg, double* sgxh);

// out[i] = ((x[i] - hi) - lo) * r: the normalized value (hi + lo is the mean, r = rstd).
void normalize(const float* x, int64_t n, float hi, float lo, float r, float* out);
void normalize(const double* x, int64_t n, double hi, double lo, double r, double* out);
// Channels-last: out[r, c] = ((x[r, c] - hi[c]) - lo[c]) * rstd[c]; rows of x and out have stride C.
void normalize_rows(const float* x, int64_t rows, int64_t C, const float* hi, const float* lo,
                    const float* rstd, float* out);
void normalize_rows(const double* x, int64_t rows, int64_t C, const double* hi, const double* lo,
                    const double* rstd, double* out);

// Instance-norm backward: out = r * (g - mg - xh * mgxh), xh = ((x - hi) - lo) * r. `out` may be `g`
// (in place); `g` may be null, meaning zero.
void normalize_backward(const float* g, const float* x, int64_t n, float hi, float lo, float r,
                        float mg, float mgxh, float* out);
void normalize_backward(const double* g, const double* x, int64_t n, double hi, double lo, double r,
                        double mg, double mgxh, double* out);
void normalize_backward_rows(const float* g, const float* x, int64_t rows, int64_t C,
                             const float* hi, const float* lo, const float* r, const float* mg,
                             const float* mgxh, float* out);
void normalize_backward_rows(const double* g, const double* x, int64_t rows, int64_t C,
                             const double* hi, const double* lo, const double* r, const double* mg,
                             const double* mgxh, double* out);

// dst[i] += value (a bias row).
void add_scalar(float* dst, int64_t n, float value);
void add_scalar(double* dst, int64_t n, double value);
// sum of n values, accumulated in double.
double sum(const float* x, int64_t n);
double sum(const double* x, int64_t n);
// dst[i] += src[i]
void add_to(float* dst, const float* src, int64_t n);
void add_to(double* dst, const double* src, int64_t n);

// Conversions between storage and accumulation types.
void convert(const c10::BFloat16* src, int64_t n, float* dst);
void convert(const c10::Half* src, int64_t n, float* dst);
void convert(const float* src, int64_t n, c10::BFloat16* dst);
void convert(const float* src, int64_t n, c10::Half* dst);

}  // namespace din_ops::cpu
