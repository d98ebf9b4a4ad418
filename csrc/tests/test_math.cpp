// Tests of the per-element arithmetic in din_ops/math.h, the code shared by every backend.
#include "din_ops/math.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "harness.h"

namespace {

using din_ops::math::moments_from_shifted_sums;
using din_ops::math::normalize;
using din_ops::math::normalize_backward;
using din_ops::math::split_mean;

// Mean and 1/sqrt(var + eps) of `x` by the textbook two-pass formula, accumulated in long double.
struct Reference {
  double mean, var, rstd;
};

template <typename T>
Reference two_pass(const std::vector<T>& x, double eps) {
  long double sum = 0;
  for (T v : x) sum += v;
  const long double mean = sum / x.size();
  long double sq = 0;
  for (T v : x) sq += (v - mean) * (v - mean);
  const double var = static_cast<double>(sq / x.size());
  return {static_cast<double>(mean), var, 1.0 / std::sqrt(var + eps)};
}

// What a CPU kernel does for float data: deviations from `shift` in float, sums in double.
din_ops::math::Moments shifted_moments(const std::vector<float>& x, float shift, double eps) {
  double s1 = 0.0, s2 = 0.0;
  for (float v : x) {
    const float d = v - shift;
    s1 += d;
    s2 += static_cast<double>(d) * d;
  }
  return moments_from_shifted_sums(shift, s1, s2, static_cast<double>(x.size()), eps);
}

std::vector<float> normal_floats(std::size_t n, double mean, double stddev, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(mean, stddev);
  std::vector<float> x(n);
  for (auto& v : x) v = static_cast<float>(dist(gen));
  return x;
}

DIN_TEST(moments_match_two_pass_at_large_mean) {
  const double eps = 1e-5;
  for (const double center : {1e6, -1e6, 0.0, 3.0}) {
    const auto x = normal_floats(4096, center, 1.0, 17);
    const Reference ref = two_pass(x, eps);
    // At |mean| = 1e6 every float deviation x - shift is exact (Sterbenz), so the result is exact
    // to double rounding; near zero the deviations round to float precision.
    const bool exact = std::abs(center) >= 1e6;
    const double mean_atol = exact ? 1e-8 : 1e-6, rstd_rtol = exact ? 1e-12 : 1e-6;
    // The result must not depend on which element of the plane is the shift.
    for (const float shift : {x.front(), x.back(), x[x.size() / 2]}) {
      const auto m = shifted_moments(x, shift, eps);
      DIN_CHECK_NEAR(m.mean, ref.mean, 0.0, mean_atol);
      DIN_CHECK_NEAR(m.rstd, ref.rstd, rstd_rtol, 0.0);
    }
  }
}

DIN_TEST(moments_of_small_spread_at_large_mean) {
  // Standard deviation 0.25 around 1e6: float(x) has a spacing of 0.0625 there, so the plane holds
  // only a handful of distinct values; the variance of those values must still be exact.
  const double eps = 1e-8;
  const auto x = normal_floats(1000, 1e6, 0.25, 5);
  const Reference ref = two_pass(x, eps);
  DIN_CHECK(ref.var > 0.01);
  const auto m = shifted_moments(x, x[0], eps);
  DIN_CHECK_NEAR(m.mean, ref.mean, 0.0, 1e-8);
  DIN_CHECK_NEAR(m.rstd, ref.rstd, 1e-12, 0.0);
}

DIN_TEST(constant_plane_has_zero_variance) {
  const double eps = 1e-5;
  const std::vector<float> x(777, 1000000.5f);
  const auto m = shifted_moments(x, x[0], eps);
  DIN_CHECK(m.mean == 1000000.5);
  DIN_CHECK(m.rstd == 1.0 / std::sqrt(eps));
}

DIN_TEST(negative_rounded_variance_is_clamped) {
  // s2 / count - m^2 slightly below zero, as rounding can produce for an almost constant plane.
  const double eps = 1e-5;
  const auto m = moments_from_shifted_sums(2.0, 1.0, 1.0 - 1e-12, 1.0, eps);
  DIN_CHECK(m.mean == 3.0);
  DIN_CHECK(!std::isnan(m.rstd));
  DIN_CHECK(m.rstd == 1.0 / std::sqrt(eps));
}

DIN_TEST(single_element_plane_gives_zero_variance) {
  const double eps = 1e-5;
  for (const double v : {0.0, 3.5, -1e6, 1e6 + 0.25, 1e-30, 123456.789}) {
    // Shifted by the element itself (what the kernels do) and not shifted at all.
    const auto a = moments_from_shifted_sums(v, 0.0, 0.0, 1.0, eps);
    const auto b = moments_from_shifted_sums(0.0, v, v * v, 1.0, eps);
    for (const auto& m : {a, b}) {
      DIN_CHECK(m.mean == v);
      DIN_CHECK(std::isfinite(m.rstd));
      DIN_CHECK(m.rstd == 1.0 / std::sqrt(eps));
    }
  }
}

DIN_TEST(split_mean_is_hi_plus_lo) {
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<double> exponent(-6.0, 8.0), unit(-1.0, 1.0);
  int bad = 0;
  for (int i = 0; i < 20000; ++i) {
    const double mean = unit(gen) * std::pow(10.0, exponent(gen));
    const auto s = split_mean(mean);
    const double hi = s.hi, lo = s.lo;
    // mean - hi is exact in double, so lo is its correctly rounded float: about 48 bits in total.
    const bool ok = s.hi == static_cast<float>(mean) && std::abs(lo) <= std::abs(hi) * 0x1p-24 &&
                    std::abs((hi + lo) - mean) <= std::abs(mean) * 0x1p-47;
    bad += ok ? 0 : 1;
  }
  DIN_CHECK(bad == 0);
  // Values representable in float split into (value, 0).
  for (const float v : {0.0f, 1.0f, -2.5f, 1e6f, 1000000.0625f, 3e-20f}) {
    const auto s = split_mean(static_cast<double>(v));
    DIN_CHECK(s.hi == v);
    DIN_CHECK(s.lo == 0.0f);
  }
  const auto s = split_mean(1e6 + 0.03);
  DIN_CHECK(s.hi == 1e6f);
  DIN_CHECK_NEAR(s.lo, 0.03, 1e-7, 0.0);
}

DIN_TEST(normalize_with_split_mean_is_accurate_in_float) {
  // A float32 mean of 1e6 + 0.0312345 would round to 1e6 and shift every result by 0.22; hi + lo
  // must give the double-precision answer to float accuracy.
  const double mean = 1e6 + 0.0312345;
  const float rstd = 7.0f;
  const auto s = split_mean(mean);
  for (int k = -400; k <= 400; ++k) {
    const float x = 1e6f + 0.0625f * static_cast<float>(k);
    const float got = normalize<float>(x, s.hi, s.lo, rstd);
    const double want = (static_cast<double>(x) - mean) * rstd;
    DIN_CHECK_NEAR(got, want, 2e-7, 1e-6);
  }
  // Double data: lo = 0 and the plain formula.
  for (const double x : {-3.0, 0.0, 0.5, 1e6 + 1.0 / 3.0}) {
    const double m = 0.125 + 1e6, r = 0.3;
    DIN_CHECK(normalize<double>(x, m, 0.0, r) == (x - m) * r);
  }
}

// L(x) = sum_i g_i * xh_i(x), xh = (x - mean(x)) / sqrt(var(x) + eps); dL/dxh = g.
double loss(const std::vector<double>& x, const std::vector<double>& g, double eps) {
  const Reference st = two_pass(x, eps);
  double l = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) l += g[i] * (x[i] - st.mean) * st.rstd;
  return l;
}

DIN_TEST(normalize_backward_matches_finite_differences) {
  std::mt19937_64 gen(11);
  std::normal_distribution<double> dist(0.0, 1.0);
  for (const int P : {2, 3, 16, 49}) {
    for (const double eps : {1e-5, 0.5}) {
      std::vector<double> x(P), g(P);
      for (auto& v : x) v = 2.0 + 1.5 * dist(gen);
      for (auto& v : g) v = dist(gen);

      // Statistics and the per-plane means as a kernel computes them.
      double s1 = 0.0, s2 = 0.0;
      for (double v : x) {
        s1 += v - x[0];
        s2 += (v - x[0]) * (v - x[0]);
      }
      const auto st = moments_from_shifted_sums(x[0], s1, s2, P, eps);
      std::vector<double> xh(P);
      double mean_g = 0.0, mean_gxh = 0.0;
      for (int i = 0; i < P; ++i) {
        xh[i] = normalize<double>(x[i], st.mean, 0.0, st.rstd);
        mean_g += g[i] / P;
        mean_gxh += g[i] * xh[i] / P;
      }

      double sum_gx = 0.0;
      for (int j = 0; j < P; ++j) {
        const double gx = normalize_backward<double>(g[j], xh[j], st.rstd, mean_g, mean_gxh);
        sum_gx += gx;

        // Central difference of L along x_j.
        const double h = 1e-5;
        auto xp = x, xm = x;
        xp[j] += h;
        xm[j] -= h;
        const double fd = (loss(xp, g, eps) - loss(xm, g, eps)) / (2 * h);
        DIN_CHECK_NEAR(gx, fd, 1e-6, 1e-7);

        // The same from the explicit Jacobian dxh_i/dx_j = rstd * (d_ij - 1/P - xh_i xh_j / P).
        double direct = 0.0;
        for (int i = 0; i < P; ++i) {
          direct += g[i] * st.rstd * ((i == j ? 1.0 : 0.0) - 1.0 / P - xh[i] * xh[j] / P);
        }
        DIN_CHECK_NEAR(gx, direct, 1e-12, 1e-12);

        // Float accumulation type: the same formula to float accuracy.
        const float gxf = normalize_backward<float>(
            static_cast<float>(g[j]), static_cast<float>(xh[j]), static_cast<float>(st.rstd),
            static_cast<float>(mean_g), static_cast<float>(mean_gxh));
        DIN_CHECK_NEAR(gxf, gx, 1e-5, 1e-5 * st.rstd);
      }
      // Shifting x does not change xh, so the gradient sums to zero.
      DIN_CHECK_NEAR(sum_gx, 0.0, 0.0, 1e-12 * P);
    }
  }
}

// ---- Functions used by the CUDA kernels (csrc/cuda/) ------------------------------------------

DIN_TEST(norm_coeffs_split_the_mean_for_float_only) {
  using din_ops::math::norm_coeffs;
  const double mean = 1e6 + 0.0312345, rstd = 0.75;
  const auto f = norm_coeffs<float>(mean, rstd);
  const auto s = split_mean(mean);
  DIN_CHECK(f.hi == s.hi);
  DIN_CHECK(f.lo == s.lo);
  DIN_CHECK(f.rstd == 0.75f);
  const auto d = norm_coeffs<double>(mean, rstd);
  DIN_CHECK(d.hi == mean);
  DIN_CHECK(d.lo == 0.0);
  DIN_CHECK(d.rstd == rstd);
}

DIN_TEST(spatially_adaptive_forward_forms_agree) {
  using din_ops::math::normalize_affine;
  using din_ops::math::normalize_scale_shift;
  using din_ops::math::plane_scale;
  std::mt19937_64 gen(23);
  std::normal_distribution<double> dist(0.0, 1.0);
  const double mean = 3.0 + 1.0 / 3.0, rstd = 1.7;
  const auto q = din_ops::math::norm_coeffs<float>(mean, rstd);
  for (int i = 0; i < 1000; ++i) {
    const double x = mean + 2.0 * dist(gen), gamma = dist(gen), beta = dist(gen);
    const double want = (x - mean) * rstd * gamma + beta;
    const float full = normalize_affine<float>(static_cast<float>(x), q.hi, q.lo, q.rstd,
                                               static_cast<float>(gamma), static_cast<float>(beta));
    const float folded = normalize_scale_shift<float>(
        static_cast<float>(x), q.hi, q.lo, plane_scale<float>(rstd, static_cast<float>(gamma)),
        static_cast<float>(beta));
    DIN_CHECK_NEAR(full, want, 1e-6, 1e-5);
    DIN_CHECK_NEAR(folded, want, 1e-6, 1e-5);
    // Double: exactly the formula's operation order.
    DIN_CHECK(normalize_affine<double>(x, mean, 0.0, rstd, gamma, beta) ==
              ((x - mean) * rstd) * gamma + beta);
  }
}

// L(x) = sum_i gy_i * gamma_i * xh_i(x): the spatially adaptive loss through gamma.
double scaled_loss(const std::vector<double>& x, const std::vector<double>& gy,
                   const std::vector<double>& gamma, double eps) {
  const Reference st = two_pass(x, eps);
  double l = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) l += gy[i] * gamma[i] * (x[i] - st.mean) * st.rstd;
  return l;
}

DIN_TEST(normalize_backward_scaled_matches_finite_differences) {
  using din_ops::math::normalize_backward_scaled;
  std::mt19937_64 gen(29);
  std::normal_distribution<double> dist(0.0, 1.0);
  for (const int P : {2, 5, 36}) {
    const double eps = 1e-5;
    std::vector<double> x(P), gy(P), gamma(P), xh(P);
    for (auto& v : x) v = -1.0 + 2.0 * dist(gen);
    for (auto& v : gy) v = dist(gen);
    for (auto& v : gamma) v = 1.0 + 0.5 * dist(gen);
    const Reference st = two_pass(x, eps);
    double mg = 0.0, mgxh = 0.0;
    for (int i = 0; i < P; ++i) {
      xh[i] = (x[i] - st.mean) * st.rstd;
      mg += gy[i] * gamma[i] / P;
      mgxh += gy[i] * gamma[i] * xh[i] / P;
    }
    for (int j = 0; j < P; ++j) {
      const double gx = normalize_backward_scaled<double>(gy[j], gamma[j], xh[j], st.rstd, mg, mgxh);
      const double h = 1e-5;
      auto xp = x, xm = x;
      xp[j] += h;
      xm[j] -= h;
      const double fd = (scaled_loss(xp, gy, gamma, eps) - scaled_loss(xm, gy, gamma, eps)) / (2 * h);
      DIN_CHECK_NEAR(gx, fd, 1e-6, 1e-7);
      // gamma = 1 is the plain instance-norm backward.
      DIN_CHECK(normalize_backward_scaled<double>(gy[j], 1.0, xh[j], st.rstd, mg, mgxh) ==
                normalize_backward<double>(gy[j], xh[j], st.rstd, mg, mgxh));
    }
  }
}

DIN_TEST(conv_out_size_matches_the_formula) {
  using din_ops::math::conv_out_size;
  DIN_CHECK(conv_out_size(9, 1, 1, 3, 1, 1) == 9);
  DIN_CHECK(conv_out_size(9, 1, 1, 3, 2, 1) == 5);
  DIN_CHECK(conv_out_size(9, 0, 0, 3, 1, 2) == 5);
  DIN_CHECK(conv_out_size(2, 0, 0, 3, 1, 1) == 0);
  // A negative span is "does not fit" for every stride (integer division would round it to 0).
  DIN_CHECK(conv_out_size(2, 0, 0, 4, 2, 1) == 0);
  DIN_CHECK(conv_out_size(1, 0, 0, 1, 5, 1) == 1);
}

// 1-D convolution: the gather form (each input sums the outputs that read it, found with
// transposed_tap) must equal the scatter form (each output adds its taps back to the inputs).
DIN_TEST(transposed_tap_gathers_what_the_convolution_scatters) {
  using din_ops::math::conv_out_size;
  using din_ops::math::transposed_tap;
  std::mt19937_64 gen(31);
  std::normal_distribution<double> dist(0.0, 1.0);
  int cases = 0;
  for (int64_t in = 1; in <= 9; ++in) {
    for (int64_t k = 1; k <= 4; ++k) {
      for (int64_t stride = 1; stride <= 3; ++stride) {
        for (int64_t dil = 1; dil <= 2; ++dil) {
          for (int64_t pb = 0; pb <= 2; ++pb) {
            for (int64_t pa = 0; pa <= 2; ++pa) {
              const int64_t out = conv_out_size(in, pb, pa, k, stride, dil);
              if (out <= 0) continue;
              std::vector<double> w(k), gy(out), scatter(in, 0.0), gather(in, 0.0);
              for (auto& v : w) v = dist(gen);
              for (auto& v : gy) v = dist(gen);
              for (int64_t o = 0; o < out; ++o) {
                for (int64_t t = 0; t < k; ++t) {
                  const int64_t i = o * stride - pb + t * dil;
                  if (i >= 0 && i < in) scatter[i] += w[t] * gy[o];
                }
              }
              for (int64_t i = 0; i < in; ++i) {
                for (int64_t t = 0; t < k; ++t) {
                  const int64_t o = transposed_tap(i, t, pb, stride, dil, out);
                  if (o >= 0) gather[i] += w[t] * gy[o];
                }
              }
              for (int64_t i = 0; i < in; ++i) DIN_CHECK_NEAR(gather[i], scatter[i], 1e-12, 1e-12);
              ++cases;
            }
          }
        }
      }
    }
  }
  DIN_CHECK(cases > 500);
}

}  // namespace

DIN_TEST(zero_variance_with_zero_eps_gives_zero_rstd) {
  // A constant plane (or one pixel) with eps = 0: defined as rstd = 0 (normalized output 0), never
  // 1 / sqrt(0) = inf, whose product with x - mean = 0 would be NaN.
  const std::vector<float> x(129, -2.75f);
  const auto m = shifted_moments(x, x[0], 0.0);
  DIN_CHECK(m.mean == -2.75);
  DIN_CHECK(m.rstd == 0.0);
  const auto one = moments_from_shifted_sums(5.0, 0.0, 0.0, 1.0, 0.0);
  DIN_CHECK(one.rstd == 0.0);
  // Any positive variance with eps = 0 keeps the plain formula.
  const auto two = moments_from_shifted_sums(0.0, 0.0, 8.0, 2.0, 0.0);
  DIN_CHECK(two.rstd == 0.5);
}

DIN_TEST(non_finite_inputs_give_nan_statistics) {
  // inf or NaN in a plane: the variance is NaN and must stay NaN (not be clamped to 0), so the
  // whole plane becomes NaN as with the plain formula.
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& [s1, s2] : {std::pair{inf, inf}, std::pair{-inf, inf}, std::pair{nan, nan},
                               std::pair{1.0, nan}}) {
    const auto m = moments_from_shifted_sums(0.5, s1, s2, 4.0, 1e-5);
    DIN_CHECK(std::isnan(m.rstd));
  }
}

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
