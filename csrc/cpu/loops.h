// Vectorized inner loops shared by the CPU kernels. They work on the accumulation type only (float or
// double): kernels convert half/bfloat16 data to float in small blocks before calling them.
//
// The loops are plain C++ written so that the compiler vectorizes them (independent lanes, no
// reductions that need reassociation). loops.cpp is compiled once per instruction-set level and the
// level is chosen at run time (isa.h), so the package never needs -march=native.
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
// shifted_sums of two planes a and b of n values each, in one pass where the level has the
// registers for it: sums[0], sums[1] += a's s1, s2; sums[2], sums[3] += b's (the same values as two
// shifted_sums calls, bit for bit).
void shifted_sums_pair(const float* a, const float* b, int64_t n, float shift_a, float shift_b,
                       double* sums);
void shifted_sums_pair(const double* a, const double* b, int64_t n, double shift_a,
                       double shift_b, double* sums);

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

// out[i] = ((x[i] - hi) - lo) * r: the normalized value (hi + lo is the mean, r = rstd). `stream`
// (here and in the plane forms below): out is written with non-temporal stores (common.h:
// stream_output), same values; the caller ends its task with stream_fence() (once per task: a
// fence waits for the stores to reach memory).
void normalize(const float* x, int64_t n, float hi, float lo, float r, float* out,
               bool stream = false);
void normalize(const double* x, int64_t n, double hi, double lo, double r, double* out,
               bool stream = false);
// Channels-last: out[r, c] = ((x[r, c] - hi[c]) - lo[c]) * rstd[c]; rows of x and out have stride C.
void normalize_rows(const float* x, int64_t rows, int64_t C, const float* hi, const float* lo,
                    const float* rstd, float* out, bool stream = false);
void normalize_rows(const double* x, int64_t rows, int64_t C, const double* hi, const double* lo,
                    const double* rstd, double* out, bool stream = false);

// Instance-norm backward: out = r * (g - mg - xh * mgxh), xh = ((x - hi) - lo) * r. `out` may be `g`
// (in place); `g` may be null, meaning zero.
void normalize_backward(const float* g, const float* x, int64_t n, float hi, float lo, float r,
                        float mg, float mgxh, float* out, bool stream = false);
void normalize_backward(const double* g, const double* x, int64_t n, double hi, double lo, double r,
                        double mg, double mgxh, double* out, bool stream = false);
void normalize_backward_rows(const float* g, const float* x, int64_t rows, int64_t C,
                             const float* hi, const float* lo, const float* r, const float* mg,
                             const float* mgxh, float* out, bool stream = false);
void normalize_backward_rows(const double* g, const double* x, int64_t rows, int64_t C,
                             const double* hi, const double* lo, const double* r, const double* mg,
                             const double* mgxh, double* out, bool stream = false);

// dst[i] += value (a bias row).
void add_scalar(float* dst, int64_t n, float value);
void add_scalar(double* dst, int64_t n, double value);
// sum of n values, accumulated in double.
double sum(const float* x, int64_t n);
double sum(const double* x, int64_t n);
// dst[i] += src[i]
void add_to(float* dst, const float* src, int64_t n);
void add_to(double* dst, const double* src, int64_t n);

// y[k * ys] += a * x[k]: a transposed convolution tap, scattering a gradient row onto an input row.
void scatter_axpy(float* y, int64_t ys, const float* x, int64_t n, float a);
void scatter_axpy(double* y, int64_t ys, const double* x, int64_t n, double a);

// Depthwise convolution of one zero-padded plane (row stride Wp) with a kh x kw kernel:
// out[oh, ow] = bias + sum_ij w[i, j] * pad[oh * sh + i * dh, ow * sw + j * dw], for Ho x Wo outputs.
void depthwise_plane(const float* pad, int64_t Wp, const float* w, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                     float bias, float* out);
void depthwise_plane(const double* pad, int64_t Wp, const double* w, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                     double bias, double* out);
// The weight gradient alone: gw[i, j] += sum g * (the plane shifted by tap (i, j)), in double.
void depthwise_weight_grad(const float* pad, int64_t Wp, int64_t kh, int64_t kw, int64_t sh,
                           int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                           const float* g, double* gw);
void depthwise_weight_grad(const double* pad, int64_t Wp, int64_t kh, int64_t kw, int64_t sh,
                           int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                           const double* g, double* gw);
// Its backward for gradient g (Ho x Wo): gw[i, j] += sum g * (shifted pad) (in double), and
// gpad[...] += w[i, j] * g (the transposed taps; gpad must start zeroed).
void depthwise_plane_backward(const float* pad, int64_t Wp, const float* w, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                              int64_t Ho, int64_t Wo, const float* g, double* gw, float* gpad);
void depthwise_plane_backward(const double* pad, int64_t Wp, const double* w, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                              int64_t Ho, int64_t Wo, const double* g, double* gw, double* gpad);

// Conversions between storage and accumulation types.
void convert(const c10::BFloat16* src, int64_t n, float* dst);
void convert(const c10::Half* src, int64_t n, float* dst);
void convert(const float* src, int64_t n, c10::BFloat16* dst);
void convert(const float* src, int64_t n, c10::Half* dst);

// Spatially adaptive instance norm (xh = ((x - hi) - lo) * r as above). `beta` may be null, meaning
// the constant `b` (per channel in the _rows forms) is added instead. `stream`: as normalize's.
// out = xh * gamma[i] + beta[i]: a full-size gamma.
void normalize_affine(const float* x, int64_t n, float hi, float lo, float r, const float* gamma,
                      const float* beta, float b, float* out, bool stream = false);
void normalize_affine(const double* x, int64_t n, double hi, double lo, double r,
                      const double* gamma, const double* beta, double b, double* out,
                      bool stream = false);
// out = ((x - hi) - lo) * s + beta[i]: a per-plane gamma folded into s = rstd * gamma.
void normalize_scale_shift(const float* x, int64_t n, float hi, float lo, float s,
                           const float* beta, float b, float* out, bool stream = false);
void normalize_scale_shift(const double* x, int64_t n, double hi, double lo, double s,
                           const double* beta, double b, double* out, bool stream = false);
// Values of the next planes that a per-plane pass requests into cache as it goes: na values at a
// and nb at b (a pointer may be null).
template <typename T>
struct PlanePrefetch {
  const T* a = nullptr;
  int64_t na = 0;
  const T* b = nullptr;
  int64_t nb = 0;
};
// One plane of n values: out = ((x - hi) - lo) * s, plus *shift where shift is not null (bit for
// bit normalize with r = s, or normalize_scale_shift with a constant beta), requesting `next` into
// cache in proportion to its progress.
void normalize_plane(const float* x, int64_t n, float hi, float lo, float s, const float* shift,
                     float* out, bool stream, PlanePrefetch<float> next);
void normalize_plane(const double* x, int64_t n, double hi, double lo, double s,
                     const double* shift, double* out, bool stream, PlanePrefetch<double> next);
// Channels-last forms: hi, lo, r, s, b per channel; x, gamma, beta and out rows of stride C.
void normalize_affine_rows(const float* x, int64_t rows, int64_t C, const float* hi,
                           const float* lo, const float* r, const float* gamma, const float* beta,
                           const float* b, float* out, bool stream = false);
void normalize_affine_rows(const double* x, int64_t rows, int64_t C, const double* hi,
                           const double* lo, const double* r, const double* gamma,
                           const double* beta, const double* b, double* out, bool stream = false);
void normalize_scale_shift_rows(const float* x, int64_t rows, int64_t C, const float* hi,
                                const float* lo, const float* s, const float* beta,
                                const float* b, float* out, bool stream = false);
void normalize_scale_shift_rows(const double* x, int64_t rows, int64_t C, const double* hi,
                                const double* lo, const double* s, const double* beta,
                                const double* b, double* out, bool stream = false);
// Backward sums for a full-size gamma: sg += sum(gy * gamma), sgxh += sum(gy * gamma * xh),
// sgy += sum(gy).
void affine_grad_sums(const float* gy, const float* x, const float* gamma, int64_t n, float hi,
                      float lo, float r, double* sg, double* sgxh, double* sgy);
void affine_grad_sums(const double* gy, const double* x, const double* gamma, int64_t n, double hi,
                      double lo, double r, double* sg, double* sgxh, double* sgy);
void affine_grad_sums_rows(const float* gy, const float* x, const float* gamma, int64_t rows,
                           int64_t C, const float* hi, const float* lo, const float* r, double* sg,
                           double* sgxh, double* sgy);
void affine_grad_sums_rows(const double* gy, const double* x, const double* gamma, int64_t rows,
                           int64_t C, const double* hi, const double* lo, const double* r,
                           double* sg, double* sgxh, double* sgy);
// gx = r * (gy * gamma - mg - xh * mgxh) and ggamma = gy * xh for a full-size gamma (gx and
// ggamma must not overlap each other or the inputs; streamed, they must share their alignment).
void normalize_affine_backward(const float* gy, const float* x, const float* gamma, int64_t n,
                               float hi, float lo, float r, float mg, float mgxh, float* gx,
                               float* ggamma, bool stream = false);
void normalize_affine_backward(const double* gy, const double* x, const double* gamma, int64_t n,
                               double hi, double lo, double r, double mg, double mgxh, double* gx,
                               double* ggamma, bool stream = false);
void normalize_affine_backward_rows(const float* gy, const float* x, const float* gamma,
                                    int64_t rows, int64_t C, const float* hi, const float* lo,
                                    const float* r, const float* mg, const float* mgxh, float* gx,
                                    float* ggamma, bool stream = false);
void normalize_affine_backward_rows(const double* gy, const double* x, const double* gamma,
                                    int64_t rows, int64_t C, const double* hi, const double* lo,
                                    const double* r, const double* mg, const double* mgxh,
                                    double* gx, double* ggamma, bool stream = false);
// gx = r * (gam * gy - mg - xh * mgxh) for a per-plane gamma `gam` (per channel in the _rows form).
void normalize_backward_scaled(const float* gy, const float* x, int64_t n, float hi, float lo,
                               float r, float gam, float mg, float mgxh, float* gx,
                               bool stream = false);
void normalize_backward_scaled(const double* gy, const double* x, int64_t n, double hi, double lo,
                               double r, double gam, double mg, double mgxh, double* gx,
                               bool stream = false);
void normalize_backward_scaled_rows(const float* gy, const float* x, int64_t rows, int64_t C,
                                    const float* hi, const float* lo, const float* r,
                                    const float* gam, const float* mg, const float* mgxh,
                                    float* gx, bool stream = false);
void normalize_backward_scaled_rows(const double* gy, const double* x, int64_t rows, int64_t C,
                                    const double* hi, const double* lo, const double* r,
                                    const double* gam, const double* mg, const double* mgxh,
                                    double* gx, bool stream = false);

}  // namespace din_ops::cpu
