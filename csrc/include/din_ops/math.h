// Per-element arithmetic shared by every din_ops backend (CPU now; CUDA kernels include the same
// header). Everything here is a small inline function usable from host and device code, so that the
// CPU tests exercise exactly the arithmetic the GPU kernels run.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DIN_HD __host__ __device__ __forceinline__
#else
#define DIN_HD inline
#endif

namespace din_ops::math {

// Statistics of one (n, c) plane from shifted sums.
//
// A kernel accumulates s1 = sum(x - shift) and s2 = sum((x - shift)^2) with `shift` a value of the
// plane itself (its first element). The deviations are then of the order of the standard deviation
// even when the mean is huge (x = 1e6 + noise), so the variance does not cancel away the way
// E[x^2] - E[x]^2 does. The mean is kept in double: a float32 mean of 1e6 has a rounding step of
// 0.06, which would shift every normalized value by 0.06 * rstd.
struct Moments {
  double mean;
  double rstd;
};

//
// Edge cases (the same in every op and in din_ops.reference):
// - var + eps == 0 (a constant plane, or a single pixel, with eps = 0): rstd is defined as 0, so the
//   plane normalizes to 0 and its gradient is 0, as it does for eps > 0, instead of 0 / 0 = NaN.
// - an inf or NaN in the plane gives a NaN variance, hence NaN for the whole plane, as the plain
//   formula (x - mean) / sqrt(var + eps) does; the clamp below must not turn that NaN into 0.
DIN_HD Moments moments_from_shifted_sums(double shift, double s1, double s2, double count,
                                         double eps) {
  const double m = s1 / count;
  double var = s2 / count - m * m;
  if (var < 0.0) var = 0.0;  // rounding can push a nearly constant plane below zero; NaN stays
  const double v = var + eps;
  return {shift + m, v == 0.0 ? 0.0 : 1.0 / std::sqrt(v)};
}

// The unbiased variance as a multiple of the biased one of `count` values: count / (count - 1), and
// 0 for one value (din_ops defines its unbiased variance as 0, as din_ops.reference.unbiased_variance).
DIN_HD double unbiased_variance_factor(int64_t count) {
  return count > 1 ? double(count) / double(count - 1) : 0.0;
}

// The eps that the kernels add to the biased variance for a normalization with `unbiased`
// (torch.var's variance) over `count` values: eps * (count - 1) / count, with the affine weight
// scaled by sqrt((count - 1) / count) by the caller; eps itself otherwise (and for one value).
DIN_HD double kernel_eps(double eps, bool unbiased, int64_t count) {
  return unbiased && count > 1 ? eps * double(count - 1) / double(count) : eps;
}

// The mean as an unevaluated float sum hi + lo. For float data, (x - hi) - lo is then as accurate as
// x - mean computed in double: x - hi is exact whenever x is within a factor of two of hi (Sterbenz).
struct SplitMean {
  float hi;
  float lo;
};

DIN_HD SplitMean split_mean(double mean) {
  const float hi = static_cast<float>(mean);
  return {hi, static_cast<float>(mean - static_cast<double>(hi))};
}

// xh = (x - mean) * rstd, with the mean given as hi + lo (lo is 0 for double data).
template <typename acc_t>
DIN_HD acc_t normalize(acc_t x, acc_t mean_hi, acc_t mean_lo, acc_t rstd) {
  return ((x - mean_hi) - mean_lo) * rstd;
}

// Gradient of instance normalization for one element.
//   g      : gradient with respect to xh at this element (gy for IN, (W^T gy) for DIN 1x1)
//   mean_g : mean over the plane of g
//   mean_gxh : mean over the plane of g * xh
// gx = rstd * (g - mean_g - xh * mean_gxh)
template <typename acc_t>
DIN_HD acc_t normalize_backward(acc_t g, acc_t xh, acc_t rstd, acc_t mean_g, acc_t mean_gxh) {
  return rstd * (g - mean_g - xh * mean_gxh);
}

}  // namespace din_ops::math

// ---------------------------------------------------------------------------------------------
// Additions used by the CUDA kernels (csrc/cuda/); tested on the CPU in csrc/tests/test_math.cpp.
namespace din_ops::math {

// The per-plane normalization coefficients in the accumulation type acc_t (float for float, half
// and bfloat16 data, double for double): the mean split as hi + lo (lo = 0 for double) and rstd.
template <typename acc_t>
struct NormCoeffs {
  acc_t hi;
  acc_t lo;
  acc_t rstd;
};

template <typename acc_t>
DIN_HD NormCoeffs<acc_t> norm_coeffs(double mean, double rstd) {
  if constexpr (sizeof(acc_t) == sizeof(double)) {
    return {static_cast<acc_t>(mean), acc_t(0), static_cast<acc_t>(rstd)};
  } else {
    const SplitMean s = split_mean(mean);
    return {s.hi, s.lo, static_cast<acc_t>(rstd)};
  }
}

// Spatially adaptive forward with a full-size gamma: y = xh * gamma + beta, xh = normalize(x).
// Same operation order as the CPU loop (csrc/cpu/loops.cpp, normalize_affine).
template <typename acc_t>
DIN_HD acc_t normalize_affine(acc_t x, acc_t mean_hi, acc_t mean_lo, acc_t rstd, acc_t gamma,
                              acc_t beta) {
  return normalize(x, mean_hi, mean_lo, rstd) * gamma + beta;
}

// A per-plane gamma folded into the scale: y = ((x - hi) - lo) * s + beta with s = rstd * gamma
// computed in double (plane_scale).
template <typename acc_t>
DIN_HD acc_t normalize_scale_shift(acc_t x, acc_t mean_hi, acc_t mean_lo, acc_t s, acc_t beta) {
  return ((x - mean_hi) - mean_lo) * s + beta;
}

template <typename acc_t>
DIN_HD acc_t plane_scale(double rstd, double gamma) {
  return static_cast<acc_t>(rstd * gamma);
}

// Instance-norm backward with the gradient scaled by gamma first (spatially adaptive backward):
// gx = rstd * (gamma * gy - mean_g - xh * mean_gxh), where the means are those of gamma * gy.
template <typename acc_t>
DIN_HD acc_t normalize_backward_scaled(acc_t gy, acc_t gamma, acc_t xh, acc_t rstd, acc_t mean_g,
                                       acc_t mean_gxh) {
  return rstd * (gamma * gy - mean_g - xh * mean_gxh);
}

// Output size of a convolution along one axis; padding given per side. <= 0 when the (dilated)
// kernel does not fit.
DIN_HD int64_t conv_out_size(int64_t in, int64_t pad_before, int64_t pad_after, int64_t kernel,
                             int64_t stride, int64_t dilation) {
  const int64_t span = in + pad_before + pad_after - dilation * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

// The transposed tap of a convolution, used by the gather form of the input gradient: input
// position `in` (0 <= in < size) is read by tap k of output position `out` iff
// out * stride - pad + k * dilation == in. Returns that output position, or -1 when `in` is not
// on the stride grid for this tap or the output is outside [0, out_size).
DIN_HD int64_t transposed_tap(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation,
                              int64_t out_size) {
  const int64_t t = in + pad - k * dilation;
  if (t < 0 || t % stride != 0) return -1;
  const int64_t out = t / stride;
  return out < out_size ? out : -1;
}

}  // namespace din_ops::math

// ---------------------------------------------------------------------------------------------
// Folding the normalization of a 1x1 DIN into its weights (docs/math.md): W' = W * rstd per input
// channel, b' = b - W' mean, y = W' x + b'. W' x and b' are up to |mean| * rstd times larger than y
// and cancel, so a sample folds only when every channel has |mean| * rstd <= fold_limit(): the
// rounding error is then at most about fold_limit() times that of normalizing first. Same limit as
// the CPU kernel (csrc/cpu/dynamic_instance_norm.cpp, kFoldLimit). False for NaN statistics.
namespace din_ops::math {

DIN_HD double fold_limit() { return 16.0; }

DIN_HD bool fold_channel_ok(double mean, double rstd) {
  return std::fabs(mean) * rstd <= fold_limit();
}

}  // namespace din_ops::math
