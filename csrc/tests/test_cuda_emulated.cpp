// The CUDA launchers of csrc/cuda/*.cu run on the CPU through the host emulation of
// csrc/tests/cuda_emu/emu.h (built and run by .ci/cuda_emulate.sh, with AddressSanitizer), compared
// with straightforward double-precision references. Shapes are chosen to exercise the vectorized and
// the scalar (misaligned or odd-sized) paths, planes larger than the register caches, planes smaller
// than a warp, a single pixel, strided / dilated / grouped / depthwise convolutions with asymmetric
// padding. The emulation also reports barriers in divergent code and bad launch configurations.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "emu.h"
#include "harness.h"
#include "launchers.h"

namespace {

using din_ops::gpu::ConvGeometry;
using din_ops::gpu::DType;

// ---- storage types ----------------------------------------------------------------------------
template <typename T>
struct Traits;
template <>
struct Traits<float> {
  static constexpr DType dtype = DType::Float;
  static constexpr double tol = 2e-5;
  static double get(float v) { return v; }
  static float put(double v) { return static_cast<float>(v); }
  static const char* name() { return "float"; }
};
template <>
struct Traits<double> {
  static constexpr DType dtype = DType::Double;
  static constexpr double tol = 1e-11;
  static double get(double v) { return v; }
  static double put(double v) { return v; }
  static const char* name() { return "double"; }
};
template <>
struct Traits<__half> {
  static constexpr DType dtype = DType::Half;
  static constexpr double tol = 4e-3;
  static double get(__half v) { return __half2float(v); }
  static __half put(double v) { return __float2half_rn(static_cast<float>(v)); }
  static const char* name() { return "half"; }
};
template <>
struct Traits<__nv_bfloat16> {
  static constexpr DType dtype = DType::BFloat16;
  static constexpr double tol = 3e-2;
  static double get(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __nv_bfloat16 put(double v) { return __float2bfloat16_rn(static_cast<float>(v)); }
  static const char* name() { return "bfloat16"; }
};

// Values of T in a vector with `offset` leading elements (a misaligned start when offset > 0);
// data() + offset is what the kernels get.
template <typename T>
struct Buf {
  std::vector<T> v;
  int64_t offset;
  Buf(int64_t n, int64_t off, std::mt19937& rng, double lo = -2.0, double hi = 2.0)
      : v(n + off), offset(off) {
    std::uniform_real_distribution<double> d(lo, hi);
    for (auto& e : v) e = Traits<T>::put(d(rng));
  }
  T* ptr() { return v.data() + offset; }
  double at(int64_t i) const { return Traits<T>::get(v[offset + i]); }
};

std::string where(const char* what, const char* type, int64_t a, int64_t b, int64_t i) {
  return std::string(what) + " " + type + " (" + std::to_string(a) + ", " + std::to_string(b) +
         ") at " + std::to_string(i);
}

// Checks `got` against `want` with the dtype tolerance relative to `scale`; reports the first miss.
#define CHECK_CLOSE(got, want, tol, scale, label)                                          \
  do {                                                                                     \
    const double g_ = (got), w_ = (want);                                                  \
    if (!(std::abs(g_ - w_) <= (tol) * ((scale) + std::abs(w_)))) {                        \
      ::din_ops::test::fail(__FILE__, __LINE__,                                            \
                            (label) + ": got " + std::to_string(g_) + ", expected " +      \
                                std::to_string(w_));                                       \
      return;                                                                              \
    }                                                                                      \
  } while (0)

void check_emulation_clean() {
  for (const auto& e : emu::take_errors()) ::din_ops::test::fail(__FILE__, __LINE__, e);
}

// ---- instance norm ----------------------------------------------------------------------------
struct Stats {
  std::vector<double> mean, rstd;
};

template <typename T>
Stats ref_stats(const Buf<T>& x, int64_t planes, int64_t P, double eps) {
  Stats s{std::vector<double>(planes), std::vector<double>(planes)};
  for (int64_t p = 0; p < planes; ++p) {
    long double sum = 0, sq = 0;
    for (int64_t i = 0; i < P; ++i) sum += x.at(p * P + i);
    const long double m = sum / P;
    for (int64_t i = 0; i < P; ++i) sq += (x.at(p * P + i) - m) * (x.at(p * P + i) - m);
    s.mean[p] = double(m);
    s.rstd[p] = 1.0 / std::sqrt(double(sq / P) + eps);
  }
  return s;
}

template <typename T>
void instance_norm_case(int64_t planes, int64_t P, int64_t off, double shift) {
  using Tr = Traits<T>;
  std::mt19937 rng(planes * 1000 + P + off);
  const double eps = 1e-5;
  Buf<T> x(planes * P, off, rng, shift - 2.0, shift + 2.0), y(planes * P, off, rng);
  std::vector<double> mean(planes, -7), rstd(planes, -7);
  DIN_CHECK(din_ops::gpu::instance_norm_forward(Tr::dtype, x.ptr(), y.ptr(), mean.data(),
                                                rstd.data(), planes, P, eps, nullptr) == cudaSuccess);
  check_emulation_clean();
  const Stats r = ref_stats(x, planes, P, eps);
  const std::string label = where("instance_norm_forward", Tr::name(), planes, P, off);
  for (int64_t p = 0; p < planes; ++p) {
    CHECK_CLOSE(mean[p], r.mean[p], Tr::tol, 1.0, label + " mean");
    CHECK_CLOSE(rstd[p], r.rstd[p], Tr::tol, 0.0, label + " rstd");
    for (int64_t i = 0; i < P; ++i) {
      const double want = (x.at(p * P + i) - r.mean[p]) * r.rstd[p];
      CHECK_CLOSE(y.at(p * P + i), want, Tr::tol, 1.0, label + " y");
    }
  }
  // Statistics only (y = null), as dynamic_conv uses it.
  std::vector<double> mean2(planes), rstd2(planes);
  DIN_CHECK(din_ops::gpu::instance_norm_forward(Tr::dtype, x.ptr(), nullptr, mean2.data(),
                                                rstd2.data(), planes, P, eps, nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t p = 0; p < planes; ++p) DIN_CHECK(mean2[p] == mean[p] && rstd2[p] == rstd[p]);

  // apply: y = (x - mean) * rstd with the reference statistics.
  Buf<T> y2(planes * P, off, rng);
  DIN_CHECK(din_ops::gpu::instance_norm_apply(Tr::dtype, x.ptr(), r.mean.data(), r.rstd.data(),
                                              y2.ptr(), planes, P, nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t i = 0; i < planes * P; ++i) {
    const int64_t p = i / P;
    CHECK_CLOSE(y2.at(i), (x.at(i) - r.mean[p]) * r.rstd[p], Tr::tol, 1.0, label + " apply");
  }

  // backward, with g in T and in the accumulation type.
  Buf<T> g(planes * P, off, rng), gx(planes * P, off, rng);
  using acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  std::vector<acc> gacc(planes * P + off);
  for (int64_t i = 0; i < planes * P; ++i) gacc[off + i] = static_cast<acc>(g.at(i));
  for (int as_acc = 0; as_acc < 2; ++as_acc) {
    const void* gp = as_acc ? static_cast<const void*>(gacc.data() + off) : g.ptr();
    DIN_CHECK(din_ops::gpu::instance_norm_backward(Tr::dtype, gp, as_acc == 1, x.ptr(),
                                                   r.mean.data(), r.rstd.data(), gx.ptr(), planes,
                                                   P, nullptr) == cudaSuccess);
    check_emulation_clean();
    for (int64_t p = 0; p < planes; ++p) {
      long double sg = 0, sgx = 0;
      for (int64_t i = 0; i < P; ++i) {
        const double xh = (x.at(p * P + i) - r.mean[p]) * r.rstd[p];
        sg += g.at(p * P + i);
        sgx += g.at(p * P + i) * xh;
      }
      for (int64_t i = 0; i < P; ++i) {
        const double xh = (x.at(p * P + i) - r.mean[p]) * r.rstd[p];
        const double want = r.rstd[p] * (g.at(p * P + i) - double(sg / P) - xh * double(sgx / P));
        // rstd amplifies the rounding of g - mean(g): scale the tolerance with it.
        CHECK_CLOSE(gx.at(p * P + i), want, Tr::tol, 4.0 * std::min(r.rstd[p], 1e3),
                    label + (as_acc ? " backward (acc g)" : " backward"));
      }
    }
  }

  // plane sums
  Buf<T> sums(planes, 0, rng);
  DIN_CHECK(din_ops::gpu::plane_sums(Tr::dtype, x.ptr(), sums.ptr(), planes, P, nullptr) ==
            cudaSuccess);
  check_emulation_clean();
  for (int64_t p = 0; p < planes; ++p) {
    long double s = 0;
    for (int64_t i = 0; i < P; ++i) s += x.at(p * P + i);
    CHECK_CLOSE(sums.at(p), double(s), Tr::tol, 1.0 + std::abs(shift) * P * 1e-3, label + " sums");
  }
}

template <typename T>
void instance_norm_all() {
  // (planes, P, misalignment, shift): vectorized (P multiple of 8, aligned), scalar (odd P or
  // misaligned start), P < warp, P = 1, planes larger than the register caches (P > 512 * 8 * 8).
  const int64_t cases[][3] = {{3, 64, 0},  {2, 100, 0}, {5, 7, 0},     {2, 1, 0},    {1, 33, 1},
                              {2, 96, 1},  {3, 1000, 0}, {1, 40000, 0}, {1, 40003, 0}, {2, 4096, 1}};
  for (const auto& c : cases) instance_norm_case<T>(c[0], c[1], c[2], 0.0);
  instance_norm_case<T>(2, 256, 0, std::is_same_v<T, float> || std::is_same_v<T, double> ? 1e4 : 8);
}

DIN_TEST(instance_norm_float) { instance_norm_all<float>(); }
DIN_TEST(instance_norm_double) { instance_norm_all<double>(); }
DIN_TEST(instance_norm_half) { instance_norm_all<__half>(); }
DIN_TEST(instance_norm_bfloat16) { instance_norm_all<__nv_bfloat16>(); }

// ---- spatially adaptive instance norm ------------------------------------------------------
// gamma_full / beta_mode (0 none, 1 per plane, 2 full).
template <typename T>
void spatially_adaptive_case(int64_t planes, int64_t P, int64_t off, bool gamma_full,
                             int beta_mode) {
  using Tr = Traits<T>;
  std::mt19937 rng(planes * 7 + P * 3 + off + gamma_full * 11 + beta_mode);
  const double eps = 1e-5;
  const int64_t n = planes * P;
  Buf<T> x(n, off, rng), y(n, off, rng), gy(n, off, rng), gx(n, off, rng);
  Buf<T> gamma(gamma_full ? n : planes, gamma_full ? off : 0, rng, 0.5, 1.5);
  Buf<T> beta(beta_mode == 2 ? n : planes, beta_mode == 2 ? off : 0, rng);
  Buf<T> ggamma(gamma_full ? n : planes, gamma_full ? off : 0, rng), gbeta(planes, 0, rng);
  std::vector<double> mean(planes), rstd(planes);
  const std::string label =
      where("spatially_adaptive", Tr::name(), planes, P, off) + " gamma_full " +
      std::to_string(gamma_full) + " beta " + std::to_string(beta_mode);
  DIN_CHECK(din_ops::gpu::spatially_adaptive_forward(
                Tr::dtype, x.ptr(), gamma.ptr(), gamma_full, beta_mode ? beta.ptr() : nullptr,
                beta_mode == 2, y.ptr(), mean.data(), rstd.data(), planes, P, eps,
                nullptr) == cudaSuccess);
  check_emulation_clean();
  const Stats r = ref_stats(x, planes, P, eps);
  auto gam = [&](int64_t i) { return gamma.at(gamma_full ? i : i / P); };
  auto bet = [&](int64_t i) {
    return beta_mode == 0 ? 0.0 : beta.at(beta_mode == 2 ? i : i / P);
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = i / P;
    if (i % P == 0) {
      CHECK_CLOSE(mean[p], r.mean[p], Tr::tol, 1.0, label + " mean");
      CHECK_CLOSE(rstd[p], r.rstd[p], Tr::tol, 0.0, label + " rstd");
    }
    const double xh = (x.at(i) - r.mean[p]) * r.rstd[p];
    CHECK_CLOSE(y.at(i), xh * gam(i) + bet(i), Tr::tol, 2.0, label + " y");
  }
  const bool want_gbeta = beta_mode != 0;
  DIN_CHECK(din_ops::gpu::spatially_adaptive_backward(
                Tr::dtype, gy.ptr(), x.ptr(), gamma.ptr(), gamma_full, r.mean.data(),
                r.rstd.data(), gx.ptr(), ggamma.ptr(), want_gbeta ? gbeta.ptr() : nullptr, planes,
                P, nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t p = 0; p < planes; ++p) {
    long double sg = 0, sgxh = 0, sgy = 0, sgyxh = 0;
    for (int64_t i = p * P; i < (p + 1) * P; ++i) {
      const double xh = (x.at(i) - r.mean[p]) * r.rstd[p];
      sg += gy.at(i) * gam(i);
      sgxh += gy.at(i) * gam(i) * xh;
      sgy += gy.at(i);
      sgyxh += gy.at(i) * xh;
    }
    for (int64_t i = p * P; i < (p + 1) * P; ++i) {
      const double xh = (x.at(i) - r.mean[p]) * r.rstd[p];
      const double want =
          r.rstd[p] * (gy.at(i) * gam(i) - double(sg / P) - xh * double(sgxh / P));
      if (P > 1) {
        CHECK_CLOSE(gx.at(i), want, Tr::tol, 4.0 * std::min(r.rstd[p], 1e3), label + " gx");
      }
      if (gamma_full) CHECK_CLOSE(ggamma.at(i), gy.at(i) * xh, Tr::tol, 1.0, label + " ggamma");
    }
    if (!gamma_full) {
      CHECK_CLOSE(ggamma.at(p), double(sgyxh), Tr::tol, 1.0 + std::sqrt(double(P)), label + " ggamma");
    }
    if (want_gbeta) {
      CHECK_CLOSE(gbeta.at(p), double(sgy), Tr::tol, 1.0 + std::sqrt(double(P)), label + " gbeta");
    }
  }
}

template <typename T>
void spatially_adaptive_all() {
  const int64_t cases[][3] = {{3, 64, 0}, {2, 100, 0}, {4, 7, 0},      {2, 1, 0},
                              {2, 96, 1}, {2, 4096, 0}, {1, 20000, 0}, {1, 20001, 0}};
  for (const auto& c : cases) {
    for (int gf = 0; gf < 2; ++gf) {
      for (int bm = 0; bm < 3; ++bm) spatially_adaptive_case<T>(c[0], c[1], c[2], gf == 1, bm);
    }
  }
}

DIN_TEST(spatially_adaptive_float) { spatially_adaptive_all<float>(); }
DIN_TEST(spatially_adaptive_double) { spatially_adaptive_all<double>(); }
DIN_TEST(spatially_adaptive_half) { spatially_adaptive_all<__half>(); }
DIN_TEST(spatially_adaptive_bfloat16) { spatially_adaptive_all<__nv_bfloat16>(); }

// ---- largest errors seen, per family and dtype ------------------------------------------------
// |got - want| / (scale + |want|), the quantity CHECK_CLOSE bounds by the dtype tolerance; printed
// by the report_max_errors case.
std::map<std::string, double>& max_errors() {
  static std::map<std::string, double> m;
  return m;
}

void note_error(const std::string& key, double got, double want, double scale) {
  const double e = std::abs(got - want) / (scale + std::abs(want));
  double& worst = max_errors()[key];
  if (!(e <= worst)) worst = e;  // NaN sticks
}

#define CHECK_NOTE(key, got, want, tol, scale, label)     \
  do {                                                    \
    note_error((key), (got), (want), (scale));            \
    CHECK_CLOSE((got), (want), (tol), (scale), (label)); \
  } while (0)

// ---- channels last (NHWC) ---------------------------------------------------------------------
// x of shape (N, C, H, W) stored as (N, P, C).
inline int64_t nhwc_index(int64_t C, int64_t P, int64_t n, int64_t c, int64_t p) {
  return (n * P + p) * C + c;
}

template <typename T>
Stats ref_stats_nhwc(const Buf<T>& x, int64_t N, int64_t C, int64_t P, double eps) {
  Stats s{std::vector<double>(N * C), std::vector<double>(N * C)};
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      long double sum = 0, sq = 0;
      for (int64_t p = 0; p < P; ++p) sum += x.at(nhwc_index(C, P, n, c, p));
      const long double m = sum / P;
      for (int64_t p = 0; p < P; ++p) {
        const long double d = x.at(nhwc_index(C, P, n, c, p)) - m;
        sq += d * d;
      }
      s.mean[n * C + c] = double(m);
      s.rstd[n * C + c] = 1.0 / std::sqrt(double(sq / P) + eps);
    }
  }
  return s;
}

// A workspace filled with garbage: the launchers must not depend on its content.
std::vector<double> workspace(int64_t N, int64_t C, int64_t P) {
  return std::vector<double>(din_ops::gpu::nhwc_workspace_size(N, C, P), std::nan(""));
}

template <typename T>
void nhwc_instance_norm_case(int64_t N, int64_t C, int64_t P, int64_t off, double shift) {
  using Tr = Traits<T>;
  using acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  std::mt19937 rng(N * 7919 + C * 131 + P * 3 + off);
  const double eps = 1e-5;
  const int64_t total = N * C * P, NC = N * C;
  Buf<T> x(total, off, rng, shift - 2.0, shift + 2.0), y(total, off, rng);
  std::vector<double> ws = workspace(N, C, P), mean(NC, -7), rstd(NC, -7);
  const std::string label = std::string("nhwc instance_norm ") + Tr::name() + " N " +
                            std::to_string(N) + " C " + std::to_string(C) + " P " +
                            std::to_string(P) + " off " + std::to_string(off);
  const std::string key = std::string("nhwc instance_norm ") + Tr::name();
  DIN_CHECK(din_ops::gpu::instance_norm_forward_nhwc(Tr::dtype, x.ptr(), y.ptr(), mean.data(),
                                                     rstd.data(), N, C, P, eps, ws.data(),
                                                     nullptr) == cudaSuccess);
  check_emulation_clean();
  const Stats r = ref_stats_nhwc(x, N, C, P, eps);
  for (int64_t nc = 0; nc < NC; ++nc) {
    CHECK_NOTE(key + " mean", mean[nc], r.mean[nc], Tr::tol, 1.0, label + " mean");
    CHECK_NOTE(key + " rstd", rstd[nc], r.rstd[nc], Tr::tol, 0.0, label + " rstd");
  }
  auto xh = [&](int64_t n, int64_t c, int64_t p) {
    return (x.at(nhwc_index(C, P, n, c, p)) - r.mean[n * C + c]) * r.rstd[n * C + c];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p) {
        CHECK_NOTE(key + " y", y.at(nhwc_index(C, P, n, c, p)), xh(n, c, p), Tr::tol, 1.0,
                   label + " y");
      }
  // Statistics only: the same values bit for bit.
  std::vector<double> mean2(NC), rstd2(NC);
  DIN_CHECK(din_ops::gpu::instance_norm_forward_nhwc(Tr::dtype, x.ptr(), nullptr, mean2.data(),
                                                     rstd2.data(), N, C, P, eps, ws.data(),
                                                     nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t nc = 0; nc < NC; ++nc) DIN_CHECK(mean2[nc] == mean[nc] && rstd2[nc] == rstd[nc]);

  Buf<T> y2(total, off, rng);
  DIN_CHECK(din_ops::gpu::instance_norm_apply_nhwc(Tr::dtype, x.ptr(), r.mean.data(),
                                                   r.rstd.data(), y2.ptr(), N, C, P,
                                                   nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p) {
        CHECK_NOTE(key + " apply", y2.at(nhwc_index(C, P, n, c, p)), xh(n, c, p), Tr::tol, 1.0,
                   label + " apply");
      }

  // Backward with g in T and in the accumulation type.
  Buf<T> g(total, off, rng), gx(total, off, rng);
  std::vector<acc> gacc(total + off);
  for (int64_t i = 0; i < total; ++i) gacc[off + i] = static_cast<acc>(g.at(i));
  for (int as_acc = 0; as_acc < 2; ++as_acc) {
    const void* gp = as_acc ? static_cast<const void*>(gacc.data() + off) : g.ptr();
    DIN_CHECK(din_ops::gpu::instance_norm_backward_nhwc(Tr::dtype, gp, as_acc == 1, x.ptr(),
                                                        r.mean.data(), r.rstd.data(), gx.ptr(), N,
                                                        C, P, ws.data(), nullptr) == cudaSuccess);
    check_emulation_clean();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        long double sg = 0, sgx = 0;
        for (int64_t p = 0; p < P; ++p) {
          sg += g.at(nhwc_index(C, P, n, c, p));
          sgx += g.at(nhwc_index(C, P, n, c, p)) * xh(n, c, p);
        }
        const double rs = r.rstd[n * C + c];
        for (int64_t p = 0; p < P; ++p) {
          const double want = rs * (g.at(nhwc_index(C, P, n, c, p)) - double(sg / P) -
                                    xh(n, c, p) * double(sgx / P));
          CHECK_NOTE(key + " backward", gx.at(nhwc_index(C, P, n, c, p)), want, Tr::tol,
                     4.0 * std::min(rs, 1e3), label + (as_acc ? " backward (acc g)" : " backward"));
        }
      }
  }

  // Channel sums.
  Buf<T> sums(NC, 0, rng);
  DIN_CHECK(din_ops::gpu::channel_sums_nhwc(Tr::dtype, x.ptr(), sums.ptr(), N, C, P, ws.data(),
                                            nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      long double s = 0;
      for (int64_t p = 0; p < P; ++p) s += x.at(nhwc_index(C, P, n, c, p));
      CHECK_NOTE(key + " sums", sums.at(n * C + c), double(s), Tr::tol,
                 1.0 + std::abs(shift) * P * 1e-3, label + " sums");
    }
}

// The emulation runs one std::thread per CUDA thread, so the channels-last cases are the slow ones:
// float runs every geometry, the other dtypes (which differ in their loads, stores and accumulator,
// not in the indexing) every other one.
template <typename T>
bool geometry_for(int i) {
  return std::is_same_v<T, float> || i % 2 == 0;
}

template <typename T>
void nhwc_instance_norm_all() {
  // (N, C, P, misalignment): vectorized (C a multiple of 16 bytes), C not a multiple of the vector
  // width, C = 1, P = 1, a misaligned start, many pixel chunks, several channel tiles, fewer
  // than 32 slots.
  const int64_t cases[][4] = {{2, 8, 50, 0},  {2, 13, 37, 0}, {1, 1, 300, 0}, {3, 6, 1, 0},
                              {2, 16, 20, 1}, {1, 4, 1000, 0}, {1, 260, 9, 0}, {2, 64, 130, 0},
                              {1, 3, 2000, 0}, {2, 24, 7, 0}};
  int i = 0;
  for (const auto& c : cases) {
    if (geometry_for<T>(i++)) nhwc_instance_norm_case<T>(c[0], c[1], c[2], c[3], 0.0);
  }
  // |mean| >> std: the shifted sums keep the variance.
  const bool wide = std::is_same_v<T, float> || std::is_same_v<T, double>;
  nhwc_instance_norm_case<T>(2, 16, 200, 0, wide ? 1e4 : 8.0);
  nhwc_instance_norm_case<T>(1, 5, 300, 0, wide ? 1e4 : 8.0);
}

DIN_TEST(nhwc_instance_norm_float) { nhwc_instance_norm_all<float>(); }
DIN_TEST(nhwc_instance_norm_double) { nhwc_instance_norm_all<double>(); }
DIN_TEST(nhwc_instance_norm_half) { nhwc_instance_norm_all<__half>(); }
DIN_TEST(nhwc_instance_norm_bfloat16) { nhwc_instance_norm_all<__nv_bfloat16>(); }

// gamma_full / beta_mode (0 none, 1 per plane, 2 full); full-size gamma and beta in x's layout.
template <typename T>
void nhwc_spatially_adaptive_case(int64_t N, int64_t C, int64_t P, int64_t off, bool gamma_full,
                                  int beta_mode, double shift) {
  using Tr = Traits<T>;
  std::mt19937 rng(N * 17 + C * 5 + P * 3 + off + gamma_full * 11 + beta_mode);
  const double eps = 1e-5;
  const int64_t n_all = N * C * P, NC = N * C;
  Buf<T> x(n_all, off, rng, shift - 2.0, shift + 2.0), y(n_all, off, rng), gy(n_all, off, rng);
  Buf<T> gx(n_all, off, rng);
  Buf<T> gamma(gamma_full ? n_all : NC, gamma_full ? off : 0, rng, 0.5, 1.5);
  Buf<T> beta(beta_mode == 2 ? n_all : NC, beta_mode == 2 ? off : 0, rng);
  Buf<T> ggamma(gamma_full ? n_all : NC, gamma_full ? off : 0, rng), gbeta(NC, 0, rng);
  std::vector<double> ws = workspace(N, C, P), mean(NC), rstd(NC);
  const std::string label = std::string("nhwc spatially_adaptive ") + Tr::name() + " N " +
                            std::to_string(N) + " C " + std::to_string(C) + " P " +
                            std::to_string(P) + " off " + std::to_string(off) + " gamma_full " +
                            std::to_string(gamma_full) + " beta " + std::to_string(beta_mode);
  const std::string key = std::string("nhwc spatially_adaptive ") + Tr::name();
  DIN_CHECK(din_ops::gpu::spatially_adaptive_forward_nhwc(
                Tr::dtype, x.ptr(), gamma.ptr(), gamma_full, beta_mode ? beta.ptr() : nullptr,
                beta_mode == 2, y.ptr(), mean.data(), rstd.data(), N, C, P, eps, ws.data(),
                nullptr) == cudaSuccess);
  check_emulation_clean();
  const Stats r = ref_stats_nhwc(x, N, C, P, eps);
  auto gam = [&](int64_t n, int64_t c, int64_t p) {
    return gamma.at(gamma_full ? nhwc_index(C, P, n, c, p) : n * C + c);
  };
  auto bet = [&](int64_t n, int64_t c, int64_t p) {
    return beta_mode == 0 ? 0.0 : beta.at(beta_mode == 2 ? nhwc_index(C, P, n, c, p) : n * C + c);
  };
  auto xh = [&](int64_t n, int64_t c, int64_t p) {
    return (x.at(nhwc_index(C, P, n, c, p)) - r.mean[n * C + c]) * r.rstd[n * C + c];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      CHECK_NOTE(key + " mean", mean[n * C + c], r.mean[n * C + c], Tr::tol, 1.0, label + " mean");
      CHECK_NOTE(key + " rstd", rstd[n * C + c], r.rstd[n * C + c], Tr::tol, 0.0, label + " rstd");
      for (int64_t p = 0; p < P; ++p) {
        CHECK_NOTE(key + " y", y.at(nhwc_index(C, P, n, c, p)),
                   xh(n, c, p) * gam(n, c, p) + bet(n, c, p), Tr::tol, 2.0, label + " y");
      }
    }
  const bool want_gbeta = beta_mode != 0;
  DIN_CHECK(din_ops::gpu::spatially_adaptive_backward_nhwc(
                Tr::dtype, gy.ptr(), x.ptr(), gamma.ptr(), gamma_full, r.mean.data(),
                r.rstd.data(), gx.ptr(), ggamma.ptr(), want_gbeta ? gbeta.ptr() : nullptr, N, C,
                P, ws.data(), nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      long double sg = 0, sgxh = 0, sgy = 0, sgyxh = 0;
      for (int64_t p = 0; p < P; ++p) {
        const double g = gy.at(nhwc_index(C, P, n, c, p));
        sg += g * gam(n, c, p);
        sgxh += g * gam(n, c, p) * xh(n, c, p);
        sgy += g;
        sgyxh += g * xh(n, c, p);
      }
      const double rs = r.rstd[n * C + c];
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = nhwc_index(C, P, n, c, p);
        const double want =
            rs * (gy.at(i) * gam(n, c, p) - double(sg / P) - xh(n, c, p) * double(sgxh / P));
        if (P > 1) {
          CHECK_NOTE(key + " gx", gx.at(i), want, Tr::tol, 4.0 * std::min(rs, 1e3), label + " gx");
        }
        if (gamma_full) {
          CHECK_NOTE(key + " ggamma", ggamma.at(i), gy.at(i) * xh(n, c, p), Tr::tol, 1.0,
                     label + " ggamma");
        }
      }
      if (!gamma_full) {
        CHECK_NOTE(key + " ggamma", ggamma.at(n * C + c), double(sgyxh), Tr::tol,
                   1.0 + std::sqrt(double(P)), label + " ggamma");
      }
      if (want_gbeta) {
        CHECK_NOTE(key + " gbeta", gbeta.at(n * C + c), double(sgy), Tr::tol,
                   1.0 + std::sqrt(double(P)), label + " gbeta");
      }
    }
}

template <typename T>
void nhwc_spatially_adaptive_all() {
  const int64_t cases[][4] = {{2, 8, 30, 0}, {2, 13, 21, 0}, {1, 1, 200, 0},  {3, 5, 1, 0},
                              {1, 16, 9, 1}, {1, 4, 900, 0}, {1, 130, 3, 0}, {1, 64, 40, 0}};
  // Every gamma / beta combination on the small shapes; full/full and plane/plane on the larger
  // ones (the emulation runs one thread per CUDA thread: keep it quick).
  int k = 0;
  for (const auto& c : cases) {
    if (!geometry_for<T>(k)) {
      ++k;
      continue;
    }
    for (int gf = 0; gf < 2; ++gf) {
      for (int bm = 0; bm < 3; ++bm) {
        if (k >= 4 && bm != 1 + gf) continue;
        nhwc_spatially_adaptive_case<T>(c[0], c[1], c[2], c[3], gf == 1, bm, 0.0);
      }
    }
    ++k;
  }
  const bool wide = std::is_same_v<T, float> || std::is_same_v<T, double>;
  nhwc_spatially_adaptive_case<T>(2, 8, 150, 0, true, 2, wide ? 1e4 : 8.0);
  nhwc_spatially_adaptive_case<T>(2, 8, 150, 0, false, 1, wide ? 1e4 : 8.0);
}

DIN_TEST(nhwc_spatially_adaptive_float) { nhwc_spatially_adaptive_all<float>(); }
DIN_TEST(nhwc_spatially_adaptive_double) { nhwc_spatially_adaptive_all<double>(); }
DIN_TEST(nhwc_spatially_adaptive_half) { nhwc_spatially_adaptive_all<__half>(); }
DIN_TEST(nhwc_spatially_adaptive_bfloat16) { nhwc_spatially_adaptive_all<__nv_bfloat16>(); }

// ---- 1x1 DIN: folding and its on-device fallback ----------------------------------------------
// The glue runs: statistics, fold flags, folded weights, the cuBLAS GEMM on x, then the unfolded
// kernel for the samples whose flag is 0. Here the GEMM is a host product that accumulates in the
// accumulation type, as cuBLAS does, so the folded samples show the fold's real rounding.
template <typename T>
void din1x1_case(int64_t N, int64_t C, int64_t Co, int64_t P, bool nhwc, bool bias) {
  using Tr = Traits<T>;
  using acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const bool wide = std::is_same_v<T, float> || std::is_same_v<T, double>;
  std::mt19937 rng(N * 101 + C * 37 + Co * 11 + P + nhwc * 5 + bias);
  const double eps = 1e-5;
  const int64_t NC = N * C, nx = N * C * P, ny = N * Co * P;
  // Sample n is x = shift(n, c) + U(-2, 2): sample 0 centred, sample 1 far off centre (|mean| *
  // rstd ~ 8700 for float/double, ~26 for half/bfloat16), sample 2 with one channel off centre,
  // sample 3 near the fold limit (|mean| * rstd ~ 13).
  auto shift = [&](int64_t n, int64_t c) {
    switch (n % 4) {
      case 1:
        return wide ? 1e4 : 30.0;
      case 2:
        return c == C / 2 ? 100.0 : 0.0;
      case 3:
        return 11.0;
      default:
        return 0.0;
    }
  };
  auto xi = [&](int64_t n, int64_t c, int64_t p) {
    return nhwc ? (n * P + p) * C + c : (n * C + c) * P + p;
  };
  auto yi = [&](int64_t n, int64_t o, int64_t p) {
    return nhwc ? (n * P + p) * Co + o : (n * Co + o) * P + p;
  };
  Buf<T> x(nx, 0, rng);
  {
    std::uniform_real_distribution<double> d(-2.0, 2.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = 0; p < P; ++p) x.v[xi(n, c, p)] = Tr::put(shift(n, c) + d(rng));
  }
  Buf<T> w(N * Co * C, 0, rng, -1.0, 1.0), b(N * Co, 0, rng), y(ny, 0, rng), gy(ny, 0, rng);
  const std::string label = std::string("1x1 ") + Tr::name() + " N " + std::to_string(N) + " C " +
                            std::to_string(C) + " Co " + std::to_string(Co) + " P " +
                            std::to_string(P) + (nhwc ? " nhwc" : " nchw") +
                            (bias ? " bias" : "");
  const std::string key = std::string("1x1 ") + Tr::name();
  const T* bp = bias ? b.ptr() : nullptr;

  // Statistics as the glue computes them.
  std::vector<double> mean(NC), rstd(NC), ws = workspace(N, C, P);
  if (nhwc) {
    DIN_CHECK(din_ops::gpu::instance_norm_forward_nhwc(Tr::dtype, x.ptr(), nullptr, mean.data(),
                                                       rstd.data(), N, C, P, eps, ws.data(),
                                                       nullptr) == cudaSuccess);
  } else {
    DIN_CHECK(din_ops::gpu::instance_norm_forward(Tr::dtype, x.ptr(), nullptr, mean.data(),
                                                  rstd.data(), NC, P, eps, nullptr) == cudaSuccess);
  }
  check_emulation_clean();
  // Reference statistics and xh, in long double.
  std::vector<double> rm(NC), rr(NC);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      long double s = 0, sq = 0;
      for (int64_t p = 0; p < P; ++p) s += x.at(xi(n, c, p));
      const long double m = s / P;
      for (int64_t p = 0; p < P; ++p) sq += (x.at(xi(n, c, p)) - m) * (x.at(xi(n, c, p)) - m);
      rm[n * C + c] = double(m);
      rr[n * C + c] = 1.0 / std::sqrt(double(sq / P) + eps);
    }
  auto xh = [&](int64_t n, int64_t c, int64_t p) {
    return (x.at(xi(n, c, p)) - rm[n * C + c]) * rr[n * C + c];
  };

  // Flags: the criterion on the kernel's statistics, for float/double only.
  std::vector<int32_t> flag(N, -1);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_fold_flags(Tr::dtype, mean.data(), rstd.data(), flag.data(),
                                                 N, C, nullptr) == cudaSuccess);
  check_emulation_clean();
  int folded = 0;
  for (int64_t n = 0; n < N; ++n) {
    bool ok = wide;
    for (int64_t c = 0; c < C; ++c) ok = ok && std::abs(mean[n * C + c]) * rstd[n * C + c] <= 16.0;
    DIN_CHECK(flag[n] == (ok ? 1 : 0));
    folded += flag[n];
    // With enough pixels the statistics are close to those of U(-2, 2) around the shift.
    if (P >= 30) DIN_CHECK(flag[n] == (wide && (n % 4 == 0 || n % 4 == 3) ? 1 : 0));
  }

  // Folded weights and bias, and the GEMM on x with them (only float and double fold: for half and
  // bfloat16 every flag is 0 and y is left as it is, random, for the unfolded kernel to overwrite).
  auto y_ref = [&](int64_t n, int64_t o, int64_t p) {
    double s = bias ? b.at(n * Co + o) : 0.0;
    for (int64_t c = 0; c < C; ++c) s += w.at((n * Co + o) * C + c) * xh(n, c, p);
    return s;
  };
  const double yscale = 1.0 + std::sqrt(double(C));
  if (wide) {
    Buf<T> wf(N * Co * C, 0, rng), bf(N * Co, 0, rng);
    DIN_CHECK(din_ops::gpu::dynamic_1x1_fold_weights(Tr::dtype, w.ptr(), bp, mean.data(),
                                                     rstd.data(), wf.ptr(), bf.ptr(), N, Co, C,
                                                     nullptr) == cudaSuccess);
    check_emulation_clean();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < Co; ++o) {
        long double s = 0, mag = 0;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = (n * Co + o) * C + c;
          CHECK_NOTE(key + " folded W", wf.at(i), w.at(i) * rstd[n * C + c], Tr::tol, 0.0,
                     label + " folded W");
          s += (long double)wf.at(i) * mean[n * C + c];
          mag += std::abs((long double)wf.at(i) * mean[n * C + c]);
        }
        const double want = (bias ? b.at(n * Co + o) : 0.0) - double(s);
        CHECK_NOTE(key + " folded b", bf.at(n * Co + o), want, Tr::tol, 1.0 + double(mag) * 1e-3,
                   label + " folded b");
      }

    // The GEMM on x with the folded weights, for every sample.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < Co; ++o)
        for (int64_t p = 0; p < P; ++p) {
          acc s = 0;
          for (int64_t c = 0; c < C; ++c) {
            s += static_cast<acc>(wf.at((n * Co + o) * C + c)) *
                 static_cast<acc>(x.at(xi(n, c, p)));
          }
          y.v[yi(n, o, p)] = Tr::put(double(s + static_cast<acc>(bf.at(n * Co + o))));
        }
    // Informative: how far the fold is off where the flag refuses it.
    for (int64_t n = 0; n < N; ++n) {
      if (flag[n] == 1) continue;
      for (int64_t o = 0; o < Co; ++o)
        for (int64_t p = 0; p < P; ++p) {
          note_error(key + " y if folded where the flag refuses (not used)", y.at(yi(n, o, p)),
                     y_ref(n, o, p), yscale);
        }
    }
  }
  const std::vector<T> y_folded = y.v;
  DIN_CHECK(din_ops::gpu::dynamic_1x1_forward_unfolded(Tr::dtype, x.ptr(), w.ptr(), bp,
                                                       mean.data(), rstd.data(), flag.data(),
                                                       y.ptr(), N, C, Co, P, nhwc,
                                                       nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t p = 0; p < P; ++p) {
        const int64_t i = yi(n, o, p);
        if (flag[n] == 1) {  // gated: untouched
          DIN_CHECK(std::memcmp(&y.v[i], &y_folded[i], sizeof(T)) == 0);
          CHECK_NOTE(key + " y folded", y.at(i), y_ref(n, o, p), Tr::tol, yscale,
                     label + " y folded");
        } else {
          CHECK_NOTE(key + " y unfolded", y.at(i), y_ref(n, o, p), Tr::tol, yscale,
                     label + " y unfolded");
        }
      }
  // Without flags: every sample normalized on load (the half / bfloat16 path's arithmetic).
  Buf<T> y2(ny, 0, rng);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_forward_unfolded(Tr::dtype, x.ptr(), w.ptr(), bp,
                                                       mean.data(), rstd.data(), nullptr,
                                                       y2.ptr(), N, C, Co, P, nhwc,
                                                       nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t p = 0; p < P; ++p) {
        CHECK_NOTE(key + " y unfolded", y2.at(yi(n, o, p)), y_ref(n, o, p), Tr::tol, yscale,
                   label + " y all unfolded");
      }

  // Backward: gb, then gW folded (gy @ x^T from the host GEMM, then the correction) with the
  // unfolded kernel for the flag-0 samples.
  Buf<T> gb(N * Co, 0, rng);
  if (nhwc) {
    DIN_CHECK(din_ops::gpu::channel_sums_nhwc(Tr::dtype, gy.ptr(), gb.ptr(), N, Co, P, ws.data(),
                                              nullptr) == cudaSuccess);
  } else {
    DIN_CHECK(din_ops::gpu::plane_sums(Tr::dtype, gy.ptr(), gb.ptr(), N * Co, P, nullptr) ==
              cudaSuccess);
  }
  check_emulation_clean();
  const double pscale = 1.0 + std::sqrt(double(P));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o) {
      double s = 0;
      for (int64_t p = 0; p < P; ++p) s += gy.at(yi(n, o, p));
      CHECK_NOTE(key + " gb", gb.at(n * Co + o), s, Tr::tol, pscale, label + " gb");
    }
  Buf<T> gw(N * Co * C, 0, rng);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t c = 0; c < C; ++c) {
        acc s = 0;
        for (int64_t p = 0; p < P; ++p) {
          s += static_cast<acc>(gy.at(yi(n, o, p))) * static_cast<acc>(x.at(xi(n, c, p)));
        }
        gw.v[(n * Co + o) * C + c] = Tr::put(double(s));
      }
  DIN_CHECK(din_ops::gpu::dynamic_1x1_grad_weight_folded(Tr::dtype, gw.ptr(), gb.ptr(),
                                                         mean.data(), rstd.data(), flag.data(), N,
                                                         Co, C, nullptr) == cudaSuccess);
  check_emulation_clean();
  const std::vector<T> gw_folded = gw.v;
  DIN_CHECK(din_ops::gpu::dynamic_1x1_grad_weight_unfolded(Tr::dtype, gy.ptr(), x.ptr(),
                                                           mean.data(), rstd.data(), flag.data(),
                                                           gw.ptr(), N, C, Co, P, nhwc,
                                                           nullptr) == cudaSuccess);
  check_emulation_clean();
  auto gw_ref = [&](int64_t n, int64_t o, int64_t c) {
    double s = 0;
    for (int64_t p = 0; p < P; ++p) s += gy.at(yi(n, o, p)) * xh(n, c, p);
    return s;
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (n * Co + o) * C + c;
        if (flag[n] == 1) {
          DIN_CHECK(std::memcmp(&gw.v[i], &gw_folded[i], sizeof(T)) == 0);
          CHECK_NOTE(key + " gW folded", gw.at(i), gw_ref(n, o, c), Tr::tol, pscale,
                     label + " gW folded");
        } else {
          CHECK_NOTE(key + " gW unfolded", gw.at(i), gw_ref(n, o, c), Tr::tol, pscale,
                     label + " gW unfolded");
        }
      }
  Buf<T> gw2(N * Co * C, 0, rng);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_grad_weight_unfolded(Tr::dtype, gy.ptr(), x.ptr(),
                                                           mean.data(), rstd.data(), nullptr,
                                                           gw2.ptr(), N, C, Co, P, nhwc,
                                                           nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Co; ++o)
      for (int64_t c = 0; c < C; ++c) {
        CHECK_NOTE(key + " gW unfolded", gw2.at((n * Co + o) * C + c), gw_ref(n, o, c), Tr::tol,
                   pscale, label + " gW all unfolded");
      }
}

template <typename T>
void din1x1_all() {
  // (N, C, Co, P): one tile; several output, channel and pixel tiles (K steps); C = 1; P = 1
  // (rstd = 1 / sqrt(eps): no sample folds).
  const int64_t cases[][4] = {{4, 5, 3, 37}, {4, 40, 33, 70}, {2, 1, 2, 45}, {3, 3, 4, 1},
                              {5, 7, 2, 33}};
  for (const auto& c : cases) {
    for (int nhwc = 0; nhwc < 2; ++nhwc) {
      din1x1_case<T>(c[0], c[1], c[2], c[3], nhwc == 1, (c[0] + nhwc) % 2 == 0);
    }
  }
}

DIN_TEST(din1x1_fold_float) { din1x1_all<float>(); }
DIN_TEST(din1x1_fold_double) { din1x1_all<double>(); }
DIN_TEST(din1x1_fold_half) { din1x1_all<__half>(); }
DIN_TEST(din1x1_fold_bfloat16) { din1x1_all<__nv_bfloat16>(); }

DIN_TEST(nhwc_and_1x1_empty_and_invalid) {
  double m = 0, r = 0, ws = 0;
  float x = 0;
  int32_t f = 0;
  const int64_t before = emu::launches();
  DIN_CHECK(din_ops::gpu::nhwc_workspace_size(0, 4, 4) == 0);
  DIN_CHECK(din_ops::gpu::instance_norm_forward_nhwc(DType::Float, &x, &x, &m, &r, 0, 4, 4, 1e-5,
                                                     &ws, nullptr) == cudaSuccess);
  DIN_CHECK(din_ops::gpu::instance_norm_backward_nhwc(DType::Float, &x, false, &x, &m, &r, &x, 2,
                                                      4, 0, &ws, nullptr) ==
            cudaErrorInvalidConfiguration);
  DIN_CHECK(din_ops::gpu::spatially_adaptive_forward_nhwc(DType::Half, &x, nullptr, false, nullptr,
                                                          false, &x, &m, &r, 1, 1, 1, 1e-5, &ws,
                                                          nullptr) ==
            cudaErrorInvalidConfiguration);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_fold_flags(DType::Float, &m, &r, &f, 0, 4, nullptr) ==
            cudaSuccess);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_forward_unfolded(DType::Float, &x, &x, nullptr, &m, &r, &f,
                                                       &x, 1, 0, 1, 1, false, nullptr) ==
            cudaErrorInvalidConfiguration);
  DIN_CHECK(din_ops::gpu::dynamic_1x1_fold_weights(DType::Float, &x, nullptr, &m, &r, &x, &x,
                                                   int64_t(1) << 20, int64_t(1) << 12, 4,
                                                   nullptr) == cudaErrorInvalidConfiguration);
  DIN_CHECK(emu::launches() == before);
  check_emulation_clean();
}

DIN_TEST(report_max_errors) {
  for (const auto& [key, worst] : max_errors()) {
    std::printf("  max error %-60s %.3g\n", key.c_str(), worst);
  }
}

// ---- dynamic conv -----------------------------------------------------------------------------
template <typename T>
void conv_case(ConvGeometry g, int64_t pb, int64_t pr, bool normalize, bool bias) {
  using Tr = Traits<T>;
  using acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  g.Ho = (g.H + g.pt + pb - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + g.pl + pr - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  std::mt19937 rng(g.C * 31 + g.kh * 7 + g.sh + g.groups * 5 + normalize);
  const int64_t Cg = g.C / g.groups, Cog = g.Co / g.groups, P = g.H * g.W, Q = g.Ho * g.Wo;
  const int64_t nx = g.N * g.C * P, ny = g.N * g.Co * Q, nw = g.N * g.Co * Cg * g.kh * g.kw;
  Buf<T> x(nx, 0, rng, 1.0, 3.0), w(nw, 0, rng), b(g.N * g.Co, 0, rng), y(ny, 0, rng);
  Buf<T> gy(ny, 0, rng), gw(nw, 0, rng), gb(g.N * g.Co, 0, rng);
  const std::string label = std::string("conv ") + Tr::name() + " C " + std::to_string(g.C) +
                            " Co " + std::to_string(g.Co) + " groups " + std::to_string(g.groups) +
                            " k " + std::to_string(g.kh) + "x" + std::to_string(g.kw) + " s " +
                            std::to_string(g.sh) + " d " + std::to_string(g.dh);
  std::vector<double> mean(g.N * g.C, 0.0), rstd(g.N * g.C, 1.0);
  if (normalize) {
    DIN_CHECK(din_ops::gpu::instance_norm_forward(Tr::dtype, x.ptr(), nullptr, mean.data(),
                                                  rstd.data(), g.N * g.C, P, 1e-5, nullptr) ==
              cudaSuccess);
  }
  std::vector<acc> q(3 * g.N * g.C);
  DIN_CHECK(din_ops::gpu::norm_coeffs(Tr::dtype, mean.data(), rstd.data(), q.data(), g.N * g.C,
                                      nullptr) == cudaSuccess);
  DIN_CHECK(din_ops::gpu::dynamic_conv_forward(Tr::dtype, g, x.ptr(), w.ptr(),
                                               bias ? b.ptr() : nullptr, q.data(), y.ptr(),
                                               nullptr) == cudaSuccess);
  check_emulation_clean();
  auto xh = [&](int64_t n, int64_t c, int64_t ih, int64_t iw) {
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.0;
    const int64_t nc = n * g.C + c;
    return (x.at((nc * g.H + ih) * g.W + iw) - mean[nc]) * rstd[nc];
  };
  auto widx = [&](int64_t n, int64_t o, int64_t ci, int64_t i, int64_t j) {
    return (((n * g.Co + o) * Cg + ci) * g.kh + i) * g.kw + j;
  };
  std::vector<double> gxh(nx, 0.0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t o = 0; o < g.Co; ++o)
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          double s = bias ? b.at(n * g.Co + o) : 0.0;
          const int64_t yi = ((n * g.Co + o) * g.Ho + oh) * g.Wo + ow;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t i = 0; i < g.kh; ++i)
              for (int64_t j = 0; j < g.kw; ++j) {
                const int64_t c = (o / Cog) * Cg + ci;
                const int64_t ih = oh * g.sh - g.pt + i * g.dh, iw = ow * g.sw - g.pl + j * g.dw;
                s += w.at(widx(n, o, ci, i, j)) * xh(n, c, ih, iw);
                if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) {
                  gxh[((n * g.C + c) * g.H + ih) * g.W + iw] += w.at(widx(n, o, ci, i, j)) * gy.at(yi);
                }
              }
          CHECK_CLOSE(y.at(yi), s, Tr::tol, 1.0 + std::sqrt(double(Cg * g.kh * g.kw)), label + " y");
        }
  DIN_CHECK(din_ops::gpu::dynamic_conv_grad_weight(Tr::dtype, g, gy.ptr(), x.ptr(), q.data(),
                                                   gw.ptr(), nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t o = 0; o < g.Co; ++o)
      for (int64_t ci = 0; ci < Cg; ++ci)
        for (int64_t i = 0; i < g.kh; ++i)
          for (int64_t j = 0; j < g.kw; ++j) {
            double s = 0;
            for (int64_t oh = 0; oh < g.Ho; ++oh)
              for (int64_t ow = 0; ow < g.Wo; ++ow) {
                s += gy.at(((n * g.Co + o) * g.Ho + oh) * g.Wo + ow) *
                     xh(n, (o / Cog) * Cg + ci, oh * g.sh - g.pt + i * g.dh,
                        ow * g.sw - g.pl + j * g.dw);
              }
            CHECK_CLOSE(gw.at(widx(n, o, ci, i, j)), s, Tr::tol, 1.0 + std::sqrt(double(Q)),
                        label + " gw");
          }
  std::vector<acc> gin(nx, acc(-99));
  DIN_CHECK(din_ops::gpu::dynamic_conv_grad_input(Tr::dtype, g, gy.ptr(), w.ptr(), gin.data(),
                                                  nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t i = 0; i < nx; ++i) {
    CHECK_CLOSE(gin[i], gxh[i], Tr::tol, 1.0 + std::sqrt(double(Cog * g.kh * g.kw)),
                label + " gxh");
  }
  DIN_CHECK(din_ops::gpu::plane_sums(Tr::dtype, gy.ptr(), gb.ptr(), g.N * g.Co, Q, nullptr) ==
            cudaSuccess);
  check_emulation_clean();
}

template <typename T>
void conv_all() {
  // N, C, H, W, Co, groups, kh, kw, sh, sw, pt, pl, dh, dw (Ho, Wo computed); then pb, pr.
  struct Case {
    ConvGeometry g;
    int64_t pb, pr;
  };
  const Case cases[] = {
      {{2, 4, 7, 9, 6, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0}, 1, 1},   // dense 3x3 same
      {{1, 4, 8, 8, 4, 2, 3, 2, 2, 1, 0, 2, 1, 2, 0, 0}, 2, 1},   // grouped, strided, dilated, asym.
      {{2, 3, 6, 5, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0}, 1, 1},   // depthwise
      {{1, 2, 9, 7, 4, 2, 5, 3, 3, 2, 2, 0, 2, 1, 0, 0}, 3, 2},   // depthwise multiplier 2
      {{1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0}, 0, 0},   // one pixel
      {{1, 2, 20, 20, 2, 1, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0}, 0, 1}, // Q >= 64 threads
  };
  for (const auto& c : cases) {
    for (int norm = 0; norm < 2; ++norm) conv_case<T>(c.g, c.pb, c.pr, norm == 1, norm == 1);
  }
}

DIN_TEST(dynamic_conv_float) { conv_all<float>(); }
DIN_TEST(dynamic_conv_double) { conv_all<double>(); }
DIN_TEST(dynamic_conv_half) { conv_all<__half>(); }
DIN_TEST(dynamic_conv_bfloat16) { conv_all<__nv_bfloat16>(); }

// Random geometries: groups, channel multipliers, kernel sizes, strides, dilations and asymmetric
// paddings (only those whose kernel fits the padded input), and random plane sizes and alignments.
template <typename T>
void fuzz(unsigned seed, int rounds) {
  std::mt19937 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  for (int r = 0; r < rounds; ++r) {
    ConvGeometry g{};
    g.groups = pick(1, 3);
    g.N = pick(1, 2);
    g.C = g.groups * pick(1, 3);
    g.Co = g.groups * pick(1, 3);
    g.H = pick(1, 9);
    g.W = pick(1, 9);
    g.kh = pick(1, 4);
    g.kw = pick(1, 4);
    g.sh = pick(1, 3);
    g.sw = pick(1, 3);
    g.dh = pick(1, 2);
    g.dw = pick(1, 2);
    g.pt = pick(0, 2);
    g.pl = pick(0, 2);
    const int64_t pb = pick(0, 2), pr = pick(0, 2);
    if (g.H + g.pt + pb < g.dh * (g.kh - 1) + 1 || g.W + g.pl + pr < g.dw * (g.kw - 1) + 1) {
      continue;
    }
    conv_case<T>(g, pb, pr, r % 2 == 0, r % 3 == 0);
    instance_norm_case<T>(pick(1, 3), pick(1, 300), pick(0, 1), 0.0);
    spatially_adaptive_case<T>(pick(1, 3), pick(1, 300), pick(0, 1), r % 2 == 1, int(r % 3));
  }
}

DIN_TEST(fuzz_float) { fuzz<float>(1, 40); }
DIN_TEST(fuzz_half) { fuzz<__half>(2, 15); }
DIN_TEST(fuzz_double) { fuzz<double>(3, 15); }

DIN_TEST(empty_and_invalid) {
  // An empty batch launches nothing and succeeds; sizes a grid cannot hold are refused before any
  // launch (the pointers are never touched).
  double m = 0, r = 0;
  float x = 0;
  const int64_t before = emu::launches();
  DIN_CHECK(din_ops::gpu::instance_norm_forward(DType::Float, &x, &x, &m, &r, 0, 4, 1e-5,
                                                nullptr) == cudaSuccess);
  DIN_CHECK(din_ops::gpu::spatially_adaptive_backward(DType::Half, &x, &x, &x, true, &m, &r, &x,
                                                      &x, nullptr, 0, 4, nullptr) == cudaSuccess);
  ConvGeometry g{0, 4, 5, 5, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5};
  DIN_CHECK(din_ops::gpu::dynamic_conv_forward(DType::Float, g, &x, &x, nullptr, &x, &x,
                                               nullptr) == cudaSuccess);
  DIN_CHECK(din_ops::gpu::instance_norm_forward(DType::Float, &x, &x, &m, &r, int64_t(1) << 31, 4,
                                                1e-5, nullptr) == cudaErrorInvalidConfiguration);
  DIN_CHECK(din_ops::gpu::instance_norm_backward(DType::Float, &x, false, &x, &m, &r, &x, 4, 0,
                                                 nullptr) == cudaErrorInvalidConfiguration);
  g.N = int64_t(1) << 20;
  g.Co = g.C = 1024;
  DIN_CHECK(din_ops::gpu::dynamic_conv_grad_weight(DType::Float, g, &x, &x, &x, &x, nullptr) ==
            cudaErrorInvalidConfiguration);
  DIN_CHECK(emu::launches() == before);
  check_emulation_clean();
}

// ---- deformable conv --------------------------------------------------------------------------
// The launchers of deformable_conv.cu against a double-precision reference written from the
// definition (din_ops.reference.deformable_conv2d with DCN's border convention, as
// din_ops/bilinear.h documents it): forward and every gradient, with sample points far outside,
// exactly on the lines -1, H - 1, H (and W), on integer positions and at random fractional ones.
using din_ops::gpu::DeformGeometry;

// The bilinear corners of (y, x) in an H x W plane: a point on or beyond -1 / H / W samples
// nothing (zero value and derivatives); otherwise the corners inside the plane with their weights
// and the (right-sided) derivatives of the weights along y and x.
struct RefPoint {
  int64_t idx[4];
  double w[4], wy[4], wx[4];
};

RefPoint ref_point(double y, double x, int64_t H, int64_t W) {
  RefPoint p{};
  if (!(y > -1.0 && y < double(H) && x > -1.0 && x < double(W))) return p;
  const double fy = std::floor(y), fx = std::floor(x), ly = y - fy, lx = x - fx;
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      const int k = 2 * a + b;
      const int64_t yy = int64_t(fy) + a, xx = int64_t(fx) + b;
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
      const double wy = a ? ly : 1.0 - ly, wx = b ? lx : 1.0 - lx;
      p.idx[k] = yy * W + xx;
      p.w[k] = wy * wx;
      p.wy[k] = (a ? 1.0 : -1.0) * wx;
      p.wx[k] = wy * (b ? 1.0 : -1.0);
    }
  }
  return p;
}

// Largest |got - want| / max |want| per output seen so far, per dtype (reported by the tests).
struct DeformErrors {
  double y = 0, gx = 0, gw = 0, gb = 0, goffset = 0, gmask = 0;
  int cases = 0;
};

template <typename T>
DeformErrors& deform_errors() {
  static DeformErrors e;
  return e;
}

// Compares got (T values) with want over a tensor with the tolerance tol relative to the largest
// |want|; returns the relative error, reports the first miss.
template <typename T>
double compare_tensor(const Buf<T>& got, const std::vector<double>& want, double tol,
                      const std::string& label) {
  double scale = 0, err = 0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  scale = std::max(scale, 1e-6);
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::abs(got.at(int64_t(i)) - want[i]);
    if (!(e <= tol * scale)) {
      ::din_ops::test::fail(__FILE__, __LINE__,
                            label + " at " + std::to_string(i) + ": got " +
                                std::to_string(got.at(int64_t(i))) + ", expected " +
                                std::to_string(want[i]) + " (scale " + std::to_string(scale) + ")");
      return e / scale;
    }
    err = std::max(err, e);
  }
  return err / scale;
}

template <typename T>
void deform_case(DeformGeometry g, int64_t pb, int64_t pr, bool with_mask, bool normalize,
                 const char* name, bool check_repeatable) {
  using Tr = Traits<T>;
  g.Ho = (g.H + g.pt + pb - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.Wo = (g.W + g.pl + pr - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  std::mt19937 rng(g.C * 131 + g.H * 17 + g.offset_groups * 7 + g.groups * 3 + with_mask +
                   2 * normalize);
  const int64_t G = g.offset_groups, KK = g.kh * g.kw, Cg = g.C / g.groups, Cog = g.Co / g.groups;
  const int64_t Cgo = g.C / G, P = g.H * g.W, Q = g.Ho * g.Wo;
  const int64_t nx = g.N * g.C * P, nw = g.N * g.Co * Cg * KK, ny = g.N * g.Co * Q;
  const int64_t noff = g.N * 2 * G * KK * Q, nm = g.N * G * KK * Q;
  Buf<T> x(nx, 0, rng, -1.7, 2.3), w(nw, 0, rng, -0.5, 0.5), b(g.N * g.Co, 0, rng);
  Buf<T> offset(noff, 0, rng), mask(nm, 0, rng, 0.0, 1.0), gy(ny, 0, rng);
  Buf<T> y(ny, 0, rng), gx(nx, 0, rng), gw(nw, 0, rng), gb(g.N * g.Co, 0, rng);
  Buf<T> goffset(noff, 0, rng), gmask(nm, 0, rng);
  // Offsets: 40% of the points on special positions (per axis), the others at random fractional
  // offsets of up to 3 pixels (some of them outside the plane).
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto special = [&](int64_t size) {
    const double s = double(size);
    const double list[] = {-1.0, -1.0, -3.0, -0.5, 0.0, s - 1.0, s - 1.0, s - 0.5, s, s, s + 2.0,
                           std::floor(u(rng) * s), -1.0 + 1.0 / 64, s - 1.0 / 64};
    return list[std::uniform_int_distribution<int>(0, 13)(rng)];
  };
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t go = 0; go < G; ++go)
      for (int64_t t = 0; t < KK; ++t)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t base = ((n * G + go) * KK + t) * 2 * Q + q;
          const int64_t gy0 = (q / g.Wo) * g.sh - g.pt + (t / g.kw) * g.dh;
          const int64_t gx0 = (q % g.Wo) * g.sw - g.pl + (t % g.kw) * g.dw;
          for (int axis = 0; axis < 2; ++axis) {
            const int64_t grid = axis == 0 ? gy0 : gx0, size = axis == 0 ? g.H : g.W;
            double off;
            if (u(rng) < 0.4) {
              off = special(size) - double(grid);
            } else {
              off = std::floor(u(rng) * 7.0) - 3.0 + 0.1 + 0.8 * u(rng);
            }
            offset.v[base + axis * Q] = Tr::put(off);
          }
        }
  const std::string label = std::string("deformable ") + Tr::name() + " " + name +
                            (with_mask ? " mask" : " no-mask") +
                            (normalize ? " normalized" : " plain");

  // Statistics as the glue computes them (or mean 0, rstd 1), and the reference's own.
  std::vector<double> mean(g.N * g.C, 0.0), rstd(g.N * g.C, 1.0);
  if (normalize) {
    DIN_CHECK(din_ops::gpu::instance_norm_forward(Tr::dtype, x.ptr(), nullptr, mean.data(),
                                                  rstd.data(), g.N * g.C, P, 1e-5, nullptr) ==
              cudaSuccess);
  }
  Stats r{std::vector<double>(g.N * g.C, 0.0), std::vector<double>(g.N * g.C, 1.0)};
  if (normalize) r = ref_stats(x, g.N * g.C, P, 1e-5);
  const void* mp = with_mask ? static_cast<const void*>(mask.ptr()) : nullptr;

  std::vector<double> ws_fwd(din_ops::gpu::deformable_workspace_bytes(Tr::dtype, g, false) / 8 + 1);
  DIN_CHECK(din_ops::gpu::deformable_conv_forward(Tr::dtype, g, x.ptr(), w.ptr(), b.ptr(),
                                                  offset.ptr(), mp, mean.data(), rstd.data(),
                                                  y.ptr(), ws_fwd.data(), nullptr) == cudaSuccess);
  check_emulation_clean();
  std::vector<double> ws(din_ops::gpu::deformable_workspace_bytes(Tr::dtype, g, true) / 8 + 1);
  DIN_CHECK(din_ops::gpu::deformable_conv_backward(
                Tr::dtype, g, gy.ptr(), x.ptr(), w.ptr(), offset.ptr(), mp, mean.data(),
                rstd.data(), normalize, gx.ptr(), gw.ptr(), gb.ptr(), goffset.ptr(),
                with_mask ? static_cast<void*>(gmask.ptr()) : nullptr, ws.data(),
                nullptr) == cudaSuccess);
  check_emulation_clean();

  // The reference: columns, their position derivatives, then every output from the definition.
  auto xh = [&](int64_t nc, int64_t pix) { return (x.at(nc * P + pix) - r.mean[nc]) * r.rstd[nc]; };
  auto widx = [&](int64_t n, int64_t o, int64_t cc, int64_t t) {
    return ((n * g.Co + o) * Cg + cc) * KK + t;
  };
  const int64_t ncol = g.N * g.C * KK * Q;
  std::vector<double> S(ncol), Sy(ncol), Sx(ncol), M(ncol);
  std::vector<RefPoint> pts(g.N * G * KK * Q);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t go = 0; go < G; ++go)
      for (int64_t t = 0; t < KK; ++t)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t pi = ((n * G + go) * KK + t) * Q + q;
          const int64_t ob = ((n * G + go) * KK + t) * 2 * Q + q;
          const double py = double((q / g.Wo) * g.sh - g.pt + (t / g.kw) * g.dh) + offset.at(ob);
          const double px = double((q % g.Wo) * g.sw - g.pl + (t % g.kw) * g.dw) + offset.at(ob + Q);
          const RefPoint p = ref_point(py, px, g.H, g.W);
          pts[pi] = p;
          const double m = with_mask ? mask.at(pi) : 1.0;
          for (int64_t c = go * Cgo; c < (go + 1) * Cgo; ++c) {
            const int64_t ci = ((n * g.C + c) * KK + t) * Q + q;
            double s = 0, sy = 0, sx = 0;
            for (int k = 0; k < 4; ++k) {
              if (p.w[k] == 0 && p.wy[k] == 0 && p.wx[k] == 0) continue;
              const double v = xh(n * g.C + c, p.idx[k]);
              s += p.w[k] * v, sy += p.wy[k] * v, sx += p.wx[k] * v;
            }
            S[ci] = s, Sy[ci] = sy, Sx[ci] = sx, M[ci] = m;
          }
        }
  std::vector<double> ry(ny), rgw(nw, 0.0), rgb(g.N * g.Co, 0.0), rgoff(noff, 0.0), rgm(nm, 0.0);
  std::vector<double> gcol(ncol, 0.0), gxh(nx, 0.0), rgx(nx);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t o = 0; o < g.Co; ++o) {
      const int64_t grp = o / Cog;
      for (int64_t q = 0; q < Q; ++q) {
        const double gyv = gy.at((n * g.Co + o) * Q + q);
        double s = b.at(n * g.Co + o);
        for (int64_t cc = 0; cc < Cg; ++cc)
          for (int64_t t = 0; t < KK; ++t) {
            const int64_t ci = ((n * g.C + grp * Cg + cc) * KK + t) * Q + q;
            const double wv = w.at(widx(n, o, cc, t));
            s += wv * M[ci] * S[ci];
            rgw[widx(n, o, cc, t)] += gyv * M[ci] * S[ci];
            gcol[ci] += wv * gyv;
          }
        ry[(n * g.Co + o) * Q + q] = s;
        rgb[n * g.Co + o] += gyv;
      }
    }
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      const int64_t go = c / Cgo;
      for (int64_t t = 0; t < KK; ++t)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t ci = ((n * g.C + c) * KK + t) * Q + q, pi = ((n * G + go) * KK + t) * Q + q;
          const int64_t ob = ((n * G + go) * KK + t) * 2 * Q + q;
          rgm[pi] += gcol[ci] * S[ci];
          rgoff[ob] += gcol[ci] * M[ci] * Sy[ci];
          rgoff[ob + Q] += gcol[ci] * M[ci] * Sx[ci];
          const RefPoint& p = pts[pi];
          for (int k = 0; k < 4; ++k) {
            if (p.w[k] != 0) gxh[(n * g.C + c) * P + p.idx[k]] += gcol[ci] * M[ci] * p.w[k];
          }
        }
    }
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
    double sg = 0, sgx = 0;
    for (int64_t i = 0; i < P; ++i) sg += gxh[nc * P + i], sgx += gxh[nc * P + i] * xh(nc, i);
    for (int64_t i = 0; i < P; ++i) {
      rgx[nc * P + i] = normalize ? r.rstd[nc] * (gxh[nc * P + i] - sg / P - xh(nc, i) * sgx / P)
                                  : gxh[nc * P + i];
    }
  }
  DeformErrors& e = deform_errors<T>();
  const double tol = 4 * Tr::tol;
  e.y = std::max(e.y, compare_tensor(y, ry, tol, label + " y"));
  e.gx = std::max(e.gx, compare_tensor(gx, rgx, tol, label + " gx"));
  e.gw = std::max(e.gw, compare_tensor(gw, rgw, tol, label + " gw"));
  e.gb = std::max(e.gb, compare_tensor(gb, rgb, tol, label + " gb"));
  e.goffset = std::max(e.goffset, compare_tensor(goffset, rgoff, tol, label + " goffset"));
  if (with_mask) e.gmask = std::max(e.gmask, compare_tensor(gmask, rgm, tol, label + " gmask"));
  ++e.cases;

  // Bitwise repeatable: a second backward (whose entry lists fill in another thread order).
  if (!check_repeatable) return;
  Buf<T> gx2(nx, 0, rng), goffset2(noff, 0, rng);
  DIN_CHECK(din_ops::gpu::deformable_conv_backward(
                Tr::dtype, g, gy.ptr(), x.ptr(), w.ptr(), offset.ptr(), mp, mean.data(),
                rstd.data(), normalize, gx2.ptr(), gw.ptr(), gb.ptr(), goffset2.ptr(),
                with_mask ? static_cast<void*>(gmask.ptr()) : nullptr, ws.data(),
                nullptr) == cudaSuccess);
  check_emulation_clean();
  DIN_CHECK(std::memcmp(gx.ptr(), gx2.ptr(), nx * sizeof(T)) == 0);
  DIN_CHECK(std::memcmp(goffset.ptr(), goffset2.ptr(), noff * sizeof(T)) == 0);
}

struct DeformCase {
  const char* name;
  DeformGeometry g;  // Ho, Wo computed from pb, pr
  int64_t pb, pr;
};

// N, C, H, W, Co, groups, offset_groups, kh, kw, sh, sw, pt, pl, dh, dw, (Ho, Wo), column_budget.
const DeformCase kDeformCases[] = {
    {"3x3", {2, 4, 7, 8, 5, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0}, 1, 1},
    {"offset_groups2_groups2", {2, 4, 9, 10, 6, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0}, 1, 1},
    {"groups2_offset_groups1", {1, 4, 6, 7, 4, 2, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0}, 1, 1},
    {"stride2_asymmetric_padding", {1, 3, 9, 11, 4, 1, 1, 3, 3, 2, 2, 1, 2, 1, 1, 0, 0, 0}, 0, 2},
    // Several steps per sample (10 positions each, the last one shorter).
    {"dilation2_steps", {2, 4, 8, 8, 4, 1, 2, 3, 3, 1, 1, 2, 2, 2, 2, 0, 0, 4 * 9 * 10}, 2, 2},
    {"5x3_stride1x2_dilation1x2", {1, 2, 7, 9, 3, 1, 1, 5, 3, 1, 2, 2, 1, 1, 2, 0, 0, 0}, 1, 0},
    {"depthwise", {1, 4, 6, 7, 4, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0}, 1, 1},
    // Beyond every tile: Co = 40 and 37-position steps > the 32 x 32 GEMM tile, K = 72 > 16,
    // 156 pixels per plane > the 128 scan threads.
    {"large_plane_steps", {1, 8, 12, 13, 40, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 8 * 9 * 37}, 1, 1},
    {"1x1", {2, 3, 5, 5, 2, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0}, 0, 0},
    // Two whole samples per step, then one.
    {"samples_per_step", {3, 2, 5, 6, 3, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 2 * 9 * 30 * 2}, 1, 1},
};

template <typename T>
void deform_report() {
  const DeformErrors& e = deform_errors<T>();
  std::printf("  deformable %s: %d cases, max |error| / max |reference|: y %.2e gx %.2e gw %.2e "
              "gb %.2e goffset %.2e gmask %.2e\n",
              Traits<T>::name(), e.cases, e.y, e.gx, e.gw, e.gb, e.goffset, e.gmask);
}

// Variant v of a case: 0 mask and normalized, 1 neither, 2 mask only, 3 normalized only.
template <typename T>
void deform_variant(const DeformCase& c, int v) {
  deform_case<T>(c.g, c.pb, c.pr, v == 0 || v == 2, v == 0 || v == 3, c.name, v == 0);
}

// float: variants 0 and 1 of every case, and 2 or 3 of every other case; double: one variant per
// case in turn (the emulation runs one std::thread per CUDA thread: this keeps the run short).
DIN_TEST(deformable_float) {
  int i = 0;
  for (const auto& c : kDeformCases) {
    deform_variant<float>(c, 0);
    deform_variant<float>(c, 1);
    if (i % 2 == 0) deform_variant<float>(c, 2 + (i / 2) % 2);
    ++i;
  }
  deform_report<float>();
}
DIN_TEST(deformable_double) {
  int i = 0;
  for (const auto& c : kDeformCases) deform_variant<double>(c, i++ % 4);
  deform_report<double>();
}
DIN_TEST(deformable_half) {
  deform_variant<__half>(kDeformCases[1], 0);
  deform_variant<__half>(kDeformCases[7], 1);
  deform_report<__half>();
}
DIN_TEST(deformable_bfloat16) {
  deform_variant<__nv_bfloat16>(kDeformCases[3], 0);
  deform_report<__nv_bfloat16>();
}

// An inf pixel reaches only the outputs that sample it, and an inf gradient only the pixels its
// output samples: the corners outside the input are never loaded (0 * inf would be NaN). Plain
// 3x3 convolution with padding 1 and zero offsets (integer positions), float.
DIN_TEST(deformable_outside_corners_ignore_nonfinite_values) {
  DeformGeometry g{1, 2, 4, 5, 2, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 4, 5, 0};
  std::mt19937 rng(17);
  const int64_t P = g.H * g.W, Q = g.Ho * g.Wo, nx = g.C * P, ny = g.Co * Q;
  const float inf = std::numeric_limits<float>::infinity();
  Buf<float> x(nx, 0, rng), w(g.Co * g.C * 9, 0, rng, 0.5, 1.5), offset(18 * Q, 0, rng);
  Buf<float> y(ny, 0, rng), gy(ny, 0, rng), gx(nx, 0, rng), gw(g.Co * g.C * 9, 0, rng);
  Buf<float> gb(g.Co, 0, rng), goffset(18 * Q, 0, rng);
  std::fill(offset.v.begin(), offset.v.end(), 0.0f);
  x.v[0] = inf;                // channel 0, pixel (0, 0)
  gy.v[0 * Q + g.Wo - 1] = inf;  // output channel 0, pixel (0, W - 1)
  const std::vector<double> mean(g.C, 0.0), rstd(g.C, 1.0);
  std::vector<double> ws(din_ops::gpu::deformable_workspace_bytes(DType::Float, g, true) / 8 + 1);
  DIN_CHECK(din_ops::gpu::deformable_conv_forward(DType::Float, g, x.ptr(), w.ptr(), nullptr,
                                                  offset.ptr(), nullptr, mean.data(), rstd.data(),
                                                  y.ptr(), ws.data(), nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t o = 0; o < g.Co; ++o) {
    for (int64_t q = 0; q < Q; ++q) {
      const bool samples_it = q / g.Wo <= 1 && q % g.Wo <= 1;  // taps reach pixel (0, 0)
      DIN_CHECK(std::isfinite(y.at(o * Q + q)) != samples_it);
    }
  }
  DIN_CHECK(din_ops::gpu::deformable_conv_backward(
                DType::Float, g, gy.ptr(), x.ptr(), w.ptr(), offset.ptr(), nullptr, mean.data(),
                rstd.data(), false, gx.ptr(), gw.ptr(), gb.ptr(), goffset.ptr(), nullptr, ws.data(),
                nullptr) == cudaSuccess);
  check_emulation_clean();
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t p = 0; p < P; ++p) {
      const bool sampled = p / g.W <= 1 && p % g.W >= g.W - 2;  // by output (0, W - 1)
      DIN_CHECK(std::isfinite(gx.at(c * P + p)) != sampled);
    }
  }
}

DIN_TEST(deformable_empty_and_invalid) {
  float f = 0;
  double m = 0, r = 1;
  const int64_t before = emu::launches();
  DeformGeometry g{0, 4, 5, 5, 4, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5, 0};
  DIN_CHECK(din_ops::gpu::deformable_workspace_bytes(DType::Float, g, true) == 0);
  DIN_CHECK(din_ops::gpu::deformable_conv_forward(DType::Float, g, &f, &f, nullptr, &f, nullptr,
                                                  &m, &r, &f, nullptr, nullptr) == cudaSuccess);
  g.N = 1;
  g.offset_groups = 3;  // does not divide C
  DIN_CHECK(din_ops::gpu::deformable_conv_backward(DType::Float, g, &f, &f, &f, &f, nullptr, &m,
                                                   &r, true, &f, &f, &f, &f, nullptr, nullptr,
                                                   nullptr) == cudaErrorInvalidValue);
  DIN_CHECK(emu::launches() == before);
  check_emulation_clean();
}

}  // namespace

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
