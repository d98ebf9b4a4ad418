#include "loops.h"

#include "isa.h"
#include "vec.h"

#include "din_ops/math.h"

#include <algorithm>
#include <cstdint>

// The per-element formulas are those of din_ops/math.h, the functions the CUDA kernels run too.
// Each exported loop is compiled for AVX-512, AVX2 + FMA and the baseline (isa.h: this file is the
// baseline build; loops_avx2.cpp and loops_avx512.cpp include it for the others).

DIN_ISA_BEGIN
namespace {

// Lanes of independent partial sums: enough for two AVX-512 registers of float per accumulator.
template <typename T>
constexpr int kLanes = 64 / sizeof(T) * 2;
// Partial sums live in the data type for at most this many values per lane before they are flushed
// to double; this bounds the float rounding error of a sum to ~kFlush * 2^-24 relative.
constexpr int64_t kFlush = 256;

// The sum of L float (or double) lanes in double, as a fixed pairwise tree: written out so that it
// vectorizes (a loop of `total += a[j]` is a serial chain of L dependent double adds, which costs
// more than the streaming loop it ends whenever the block is short).
template <int L, typename T>
DIN_INLINE double lane_total(const T* a) {
  double d[L];
  for (int j = 0; j < L; ++j) d[j] = static_cast<double>(a[j]);
  for (int w = L / 2; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) d[j] += d[j + w];
  }
  return d[0];
}

// Non-temporal forms of the elementwise loops (their `stream` argument; common.h: stream_output):
// values one at a time up to the first output aligned to a vector, then whole vectors streamed to
// memory, then the rest one at a time: math::'s formula for one value, vmath::'s (below, the same
// operations) for a vector, its scalar arguments broadcast by the caller.
template <typename T>
DIN_INLINE int64_t stream_head(const T* out, int64_t n) {
  constexpr int64_t vbytes = sizeof(simd::vec_t<T>);
  const int64_t misaligned = int64_t(uintptr_t(out) % vbytes);
  return misaligned == 0 ? 0 : std::min(n, (vbytes - misaligned) / int64_t(sizeof(T)));
}

// The formulas of din_ops/math.h on vectors, operation for operation (clang rejects a call that
// passes or returns the level's vectors to a function compiled without its instructions, as
// math.h's templates are). The streamed tests compare the two forms' results bit for bit.
namespace vmath {
template <typename V>
DIN_INLINE V normalize(V x, V hi, V lo, V r) {
  return ((x - hi) - lo) * r;
}
template <typename V>
DIN_INLINE V normalize_affine(V x, V hi, V lo, V r, V gamma, V beta) {
  return normalize(x, hi, lo, r) * gamma + beta;
}
template <typename V>
DIN_INLINE V normalize_scale_shift(V x, V hi, V lo, V s, V beta) {
  return ((x - hi) - lo) * s + beta;
}
template <typename V>
DIN_INLINE V normalize_backward(V g, V xh, V r, V mg, V mgxh) {
  return r * (g - mg - xh * mgxh);
}
template <typename V>
DIN_INLINE V normalize_backward_scaled(V gy, V gamma, V xh, V r, V mg, V mgxh) {
  return r * (gamma * gy - mg - xh * mgxh);
}
}  // namespace vmath

// The index loop of a streamed pass over n outputs at `out`: one(i) for the values before the first
// vector-aligned output and after the last whole vector, vec(i) for each aligned vector [i, i + L)
// in between (vec makes the non-temporal stores; other outputs at the same alignment can follow).
template <typename T, typename One, typename Vec>
DIN_INLINE void stream_loop(const T* out, int64_t n, const One& one, const Vec& vec) {
  constexpr int L = simd::kLanes<T>;
  int64_t i = 0;
  for (const int64_t h = stream_head(out, n); i < h; ++i) one(i);
  for (; i + L <= n; i += L) vec(i);
  for (; i < n; ++i) one(i);
}

// out[i] = one(i) for i < n, the aligned vectors out[i, i + L) = vec(i) with non-temporal stores.
template <typename T, typename One, typename Vec>
DIN_INLINE void stream_map(T* out, int64_t n, const One& one, const Vec& vec) {
  stream_loop(
      out, n, [&](int64_t i) { out[i] = one(i); },
      [&](int64_t i) { simd::stream(out + i, vec(i)); });
}

// Shifted sums of K planes of n values at once (x[k], shift[k]; s1[k] += sum(x[k] - shift[k]),
// s2[k] += sum of the squares): for each plane the same additions in the same order whatever K is,
// so a plane's sums do not depend on which others it was summed beside. Per plane the L lanes are
// independent chains, flushed to double every kFlush values per lane.
template <int K, typename T>
DIN_INLINE void shifted_sums_impl(const T* const* x, int64_t n, const T* shift, double* s1,
                                  double* s2) {
  constexpr int L = kLanes<T>;
  double t1[K] = {}, t2[K] = {};
  for (int64_t b = 0; b < n; b += kFlush * L) {
    const int64_t e = std::min(n, b + kFlush * L);
    T a1[K][L] = {}, a2[K][L] = {};
    int64_t i = b;
    for (; i + L <= e; i += L) {
      for (int k = 0; k < K; ++k) {
        for (int j = 0; j < L; ++j) {
          const T d = x[k][i + j] - shift[k];
          a1[k][j] += d;
          a2[k][j] += d * d;
        }
      }
    }
    for (; i < e; ++i) {
      for (int k = 0; k < K; ++k) {
        const T d = x[k][i] - shift[k];
        a1[k][0] += d;
        a2[k][0] += d * d;
      }
    }
    for (int k = 0; k < K; ++k) {
      t1[k] += lane_total<L>(a1[k]);
      t2[k] += lane_total<L>(a2[k]);
    }
  }
  for (int k = 0; k < K; ++k) {
    s1[k] += t1[k];
    s2[k] += t2[k];
  }
}

// Two planes' shifted sums. Float at the avx512 level: in one loop, which keeps twice the
// independent add chains and two read streams going (the 4 * kLanes partial sums take 8 of the 32
// vector registers). Elsewhere one plane after the other: AVX2's 16 registers (or NEON's 32 of 16
// bytes) hold one plane's partial sums only, and GCC 12 vectorizes the double form of the loop with
// 16-byte vectors. The same sums either way, bit for bit (tests/test_adain.py checks them at every
// level).
template <typename T>
DIN_INLINE void shifted_sums_pair_impl(const T* a, const T* b, int64_t n, T shift_a, T shift_b,
                                       double* sums) {
#if defined(DIN_CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    const T* x[2] = {a, b};
    const T shift[2] = {shift_a, shift_b};
    double s1[2] = {sums[0], sums[2]}, s2[2] = {sums[1], sums[3]};
    shifted_sums_impl<2>(x, n, shift, s1, s2);
    sums[0] = s1[0], sums[1] = s2[0], sums[2] = s1[1], sums[3] = s2[1];
    return;
  }
#endif
  shifted_sums_impl<1>(&a, n, &shift_a, sums, sums + 1);
  shifted_sums_impl<1>(&b, n, &shift_b, sums + 2, sums + 3);
}

// The channels-last sums (the *_sums_rows loops) take up to kCh channels per pass over the rows:
// with C <= kCh a chunk is read once, row after row in memory order, while the float partial sums
// of its channels (2-3 arrays, at most 24 KiB for double) stay in L1. (With 64 channels per pass a
// chunk was read once per block, a few cache lines per row at the row stride: a pattern the
// hardware prefetchers follow poorly, so those loops waited on memory.) Per channel the order of
// the additions is the same either way: rows in order, flushed to double every kFlush rows.
constexpr int64_t kCh = 1024;

template <typename T>
DIN_INLINE void shifted_sums_rows_impl(const T* x, int64_t rows, int64_t C, const T* shift,
                                       double* s1, double* s2) {
  for (int64_t c0 = 0; c0 < C; c0 += kCh) {
    const int64_t cn = std::min(kCh, C - c0);
    const T* sh = shift + c0;
    for (int64_t r0 = 0; r0 < rows; r0 += kFlush) {
      const int64_t re = std::min(rows, r0 + kFlush);
      alignas(64) T a1[kCh], a2[kCh];
      std::fill_n(a1, cn, T(0));
      std::fill_n(a2, cn, T(0));
      for (int64_t r = r0; r < re; ++r) {
        const T* xr = x + r * C + c0;
        for (int64_t j = 0; j < cn; ++j) {
          const T d = xr[j] - sh[j];
          a1[j] += d;
          a2[j] += d * d;
        }
      }
      for (int64_t j = 0; j < cn; ++j) {
        s1[c0 + j] += a1[j];
        s2[c0 + j] += a2[j];
      }
    }
  }
}

template <typename T>
DIN_INLINE void grad_sums_impl(const T* g, const T* x, int64_t n, T hi, T lo, T r, double* sg,
                               double* sgxh) {
  constexpr int L = kLanes<T>;
  double t1 = 0.0, t2 = 0.0;
  for (int64_t b = 0; b < n; b += kFlush * L) {
    const int64_t e = std::min(n, b + kFlush * L);
    T a1[L] = {}, a2[L] = {};
    int64_t i = b;
    for (; i + L <= e; i += L) {
      for (int j = 0; j < L; ++j) {
        const T xh = math::normalize(x[i + j], hi, lo, r);
        a1[j] += g[i + j];
        a2[j] += g[i + j] * xh;
      }
    }
    for (; i < e; ++i) {
      const T xh = math::normalize(x[i], hi, lo, r);
      a1[0] += g[i];
      a2[0] += g[i] * xh;
    }
    t1 += lane_total<L>(a1);
    t2 += lane_total<L>(a2);
  }
  *sg += t1;
  *sgxh += t2;
}

template <typename T>
DIN_INLINE void grad_sums_rows_impl(const T* g, const T* x, int64_t rows, int64_t C, const T* hi,
                                    const T* lo, const T* r, double* sg, double* sgxh) {
  for (int64_t c0 = 0; c0 < C; c0 += kCh) {
    const int64_t cn = std::min(kCh, C - c0);
    for (int64_t r0 = 0; r0 < rows; r0 += kFlush) {
      const int64_t re = std::min(rows, r0 + kFlush);
      alignas(64) T a1[kCh], a2[kCh];
      std::fill_n(a1, cn, T(0));
      std::fill_n(a2, cn, T(0));
      for (int64_t p = r0; p < re; ++p) {
        const T* xr = x + p * C + c0;
        const T* gr = g + p * C + c0;
        for (int64_t j = 0; j < cn; ++j) {
          const T xh = math::normalize(xr[j], hi[c0 + j], lo[c0 + j], r[c0 + j]);
          a1[j] += gr[j];
          a2[j] += gr[j] * xh;
        }
      }
      for (int64_t j = 0; j < cn; ++j) {
        sg[c0 + j] += a1[j];
        sgxh[c0 + j] += a2[j];
      }
    }
  }
}

template <typename T>
DIN_INLINE void normalize_impl(const T* x, int64_t n, T hi, T lo, T r, T* out, bool stream) {
  if (stream) {
    using V = simd::vec_t<T>;
    const V hv = -V{} + hi, lv = -V{} + lo, rv = -V{} + r;
    stream_map(
        out, n, [&](int64_t i) { return math::normalize(x[i], hi, lo, r); },
        [&](int64_t i) { return vmath::normalize(simd::loadu(x + i), hv, lv, rv); });
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = math::normalize(x[i], hi, lo, r);
}

template <typename T>
DIN_INLINE void normalize_rows_impl(const T* x, int64_t rows, int64_t C, const T* hi, const T* lo,
                                    const T* rstd, T* out, bool stream) {
  if (stream) {
    for (int64_t p = 0; p < rows; ++p) {
      const T* xr = x + p * C;
      stream_map(
          out + p * C, C, [&](int64_t c) { return math::normalize(xr[c], hi[c], lo[c], rstd[c]); },
          [&](int64_t c) {
            return vmath::normalize(simd::loadu(xr + c), simd::loadu(hi + c), simd::loadu(lo + c),
                                    simd::loadu(rstd + c));
          });
    }
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    T* o = out + p * C;
    for (int64_t c = 0; c < C; ++c) o[c] = math::normalize(xr[c], hi[c], lo[c], rstd[c]);
  }
}

template <typename T>
DIN_INLINE void normalize_backward_impl(const T* g, const T* x, int64_t n, T hi, T lo, T r, T mg,
                                        T mgxh, T* out, bool stream) {
  if (stream && g != nullptr) {
    using V = simd::vec_t<T>;
    const V hv = -V{} + hi, lv = -V{} + lo, rv = -V{} + r, mgv = -V{} + mg, mxv = -V{} + mgxh;
    stream_map(
        out, n,
        [&](int64_t i) {
          return math::normalize_backward(g[i], math::normalize(x[i], hi, lo, r), r, mg, mgxh);
        },
        [&](int64_t i) {
          const V xh = vmath::normalize(simd::loadu(x + i), hv, lv, rv);
          return vmath::normalize_backward(simd::loadu(g + i), xh, rv, mgv, mxv);
        });
  } else if (g != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const T xh = math::normalize(x[i], hi, lo, r);
      out[i] = math::normalize_backward(g[i], xh, r, mg, mgxh);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const T xh = math::normalize(x[i], hi, lo, r);
      out[i] = -r * (mg + xh * mgxh);
    }
  }
}

template <typename T>
DIN_INLINE void normalize_backward_rows_impl(const T* g, const T* x, int64_t rows, int64_t C,
                                             const T* hi, const T* lo, const T* r, const T* mg,
                                             const T* mgxh, T* out, bool stream) {
  if (stream && g != nullptr) {
    for (int64_t p = 0; p < rows; ++p) {
      const T *xr = x + p * C, *gr = g + p * C;
      stream_map(
          out + p * C, C,
          [&](int64_t c) {
            const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
            return math::normalize_backward(gr[c], xh, r[c], mg[c], mgxh[c]);
          },
          [&](int64_t c) {
            const auto rv = simd::loadu(r + c);
            const auto xh =
                vmath::normalize(simd::loadu(xr + c), simd::loadu(hi + c), simd::loadu(lo + c), rv);
            return vmath::normalize_backward(simd::loadu(gr + c), xh, rv, simd::loadu(mg + c),
                                             simd::loadu(mgxh + c));
          });
    }
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    T* o = out + p * C;
    if (g != nullptr) {
      const T* gr = g + p * C;
      for (int64_t c = 0; c < C; ++c) {
        const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
        o[c] = math::normalize_backward(gr[c], xh, r[c], mg[c], mgxh[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
        o[c] = -r[c] * (mg[c] + xh * mgxh[c]);
      }
    }
  }
}

template <typename T>
DIN_INLINE double sum_impl(const T* x, int64_t n) {
  constexpr int L = kLanes<T>;
  double total = 0.0;
  for (int64_t b = 0; b < n; b += kFlush * L) {
    const int64_t e = std::min(n, b + kFlush * L);
    T a[L] = {};
    int64_t i = b;
    for (; i + L <= e; i += L) {
      for (int j = 0; j < L; ++j) a[j] += x[i + j];
    }
    for (; i < e; ++i) a[0] += x[i];
    total += lane_total<L>(a);
  }
  return total;
}

}  // namespace

void shifted_sums(const float* x, int64_t n, float shift, double* s1, double* s2) {
  shifted_sums_impl<1>(&x, n, &shift, s1, s2);
}
void shifted_sums(const double* x, int64_t n, double shift, double* s1, double* s2) {
  shifted_sums_impl<1>(&x, n, &shift, s1, s2);
}
void shifted_sums_pair(const float* a, const float* b, int64_t n, float shift_a, float shift_b,
                       double* sums) {
  shifted_sums_pair_impl(a, b, n, shift_a, shift_b, sums);
}
void shifted_sums_pair(const double* a, const double* b, int64_t n, double shift_a,
                       double shift_b, double* sums) {
  shifted_sums_pair_impl(a, b, n, shift_a, shift_b, sums);
}
void shifted_sums_rows(const float* x, int64_t rows, int64_t C, const float* shift,
                       double* s1, double* s2) {
  shifted_sums_rows_impl(x, rows, C, shift, s1, s2);
}
void shifted_sums_rows(const double* x, int64_t rows, int64_t C, const double* shift,
                       double* s1, double* s2) {
  shifted_sums_rows_impl(x, rows, C, shift, s1, s2);
}
void grad_sums(const float* g, const float* x, int64_t n, float hi, float lo, float r,
               double* sg, double* sgxh) {
  grad_sums_impl(g, x, n, hi, lo, r, sg, sgxh);
}
void grad_sums(const double* g, const double* x, int64_t n, double hi, double lo,
               double r, double* sg, double* sgxh) {
  grad_sums_impl(g, x, n, hi, lo, r, sg, sgxh);
}
void grad_sums_rows(const float* g, const float* x, int64_t rows, int64_t C,
                    const float* hi, const float* lo, const float* r, double* sg,
                    double* sgxh) {
  grad_sums_rows_impl(g, x, rows, C, hi, lo, r, sg, sgxh);
}
void grad_sums_rows(const double* g, const double* x, int64_t rows, int64_t C,
                    const double* hi, const double* lo, const double* r, double* sg,
                    double* sgxh) {
  grad_sums_rows_impl(g, x, rows, C, hi, lo, r, sg, sgxh);
}
void normalize(const float* x, int64_t n, float hi, float lo, float r, float* out,
               bool stream) {
  normalize_impl(x, n, hi, lo, r, out, stream);
}
void normalize(const double* x, int64_t n, double hi, double lo, double r, double* out,
               bool stream) {
  normalize_impl(x, n, hi, lo, r, out, stream);
}
void normalize_rows(const float* x, int64_t rows, int64_t C, const float* hi,
                    const float* lo, const float* rstd, float* out, bool stream) {
  normalize_rows_impl(x, rows, C, hi, lo, rstd, out, stream);
}
void normalize_rows(const double* x, int64_t rows, int64_t C, const double* hi,
                    const double* lo, const double* rstd, double* out, bool stream) {
  normalize_rows_impl(x, rows, C, hi, lo, rstd, out, stream);
}
void normalize_backward(const float* g, const float* x, int64_t n, float hi, float lo,
                        float r, float mg, float mgxh, float* out, bool stream) {
  normalize_backward_impl(g, x, n, hi, lo, r, mg, mgxh, out, stream);
}
void normalize_backward(const double* g, const double* x, int64_t n, double hi,
                        double lo, double r, double mg, double mgxh, double* out,
                        bool stream) {
  normalize_backward_impl(g, x, n, hi, lo, r, mg, mgxh, out, stream);
}
void normalize_backward_rows(const float* g, const float* x, int64_t rows, int64_t C,
                             const float* hi, const float* lo, const float* r,
                             const float* mg, const float* mgxh, float* out, bool stream) {
  normalize_backward_rows_impl(g, x, rows, C, hi, lo, r, mg, mgxh, out, stream);
}
void normalize_backward_rows(const double* g, const double* x, int64_t rows, int64_t C,
                             const double* hi, const double* lo, const double* r,
                             const double* mg, const double* mgxh, double* out, bool stream) {
  normalize_backward_rows_impl(g, x, rows, C, hi, lo, r, mg, mgxh, out, stream);
}
void add_scalar(float* dst, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i) dst[i] += value;
}
void add_scalar(double* dst, int64_t n, double value) {
  for (int64_t i = 0; i < n; ++i) dst[i] += value;
}
double sum(const float* x, int64_t n) { return sum_impl(x, n); }
double sum(const double* x, int64_t n) { return sum_impl(x, n); }
void add_to(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}
void add_to(double* dst, const double* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}
template <typename T>
DIN_INLINE void scatter_axpy_impl(T* y, int64_t ys, const T* x, int64_t n, T a) {
  if (ys == 1) {
    for (int64_t k = 0; k < n; ++k) y[k] += a * x[k];
  } else {
    for (int64_t k = 0; k < n; ++k) y[k * ys] += a * x[k];
  }
}

void scatter_axpy(float* y, int64_t ys, const float* x, int64_t n, float a) {
  scatter_axpy_impl(y, ys, x, n, a);
}
void scatter_axpy(double* y, int64_t ys, const double* x, int64_t n, double a) {
  scatter_axpy_impl(y, ys, x, n, a);
}
// The 3x3 depthwise kernels below keep one vector register per tap (vec.h's vec_t: 64 bytes at
// avx512, 32 at avx2), nine of them and a few more in the level's registers. The baseline level
// keeps the general loops (lane arrays the compiler vectorizes): vector versions showed no gain.
#if defined(DIN_CPU_CAPABILITY_AVX512) || defined(DIN_CPU_CAPABILITY_AVX2)
constexpr bool kTapKernels = true;
#else
constexpr bool kTapKernels = false;
#endif

// depthwise_plane_impl (below) for a KH x KW kernel known at compile time and unit column stride:
// the taps' weights stay in registers (broadcast once per plane) and P vectors of outputs are
// computed together, each summed in the general loop's order (bias, then the taps row by row).
template <typename T, int KH, int KW>
DIN_INLINE void depthwise_plane_fixed(const T* pad, int64_t Wp, const T* w, int64_t sh, int64_t dh,
                                      int64_t dw, int64_t Ho, int64_t Wo, T bias, T* out) {
  using V = simd::vec_t<T>;
  constexpr int L = simd::kLanes<T>, P = 4;
  V wv[KH * KW];
#pragma GCC unroll 16
  for (int t = 0; t < KH * KW; ++t) wv[t] = -V{} + w[t];
  const V bv = -V{} + bias;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    T* o = out + oh * Wo;
    const T* base = pad + oh * sh * Wp;
    int64_t ow = 0;
    for (; ow + P * L <= Wo; ow += P * L) {
      V acc[P];
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[p] = bv;
#pragma GCC unroll 4
      for (int i = 0; i < KH; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < KW; ++j) {
          const T* src = base + i * dh * Wp + j * dw + ow;
#pragma GCC unroll 4
          for (int p = 0; p < P; ++p) acc[p] += wv[i * KW + j] * simd::loadu(src + p * L);
        }
      }
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) simd::storeu(o + ow + p * L, acc[p]);
    }
    for (; ow + L <= Wo; ow += L) {
      V acc = bv;
#pragma GCC unroll 16
      for (int t = 0; t < KH * KW; ++t) {
        acc += wv[t] * simd::loadu(base + t / KW * dh * Wp + t % KW * dw + ow);
      }
      simd::storeu(o + ow, acc);
    }
    for (; ow < Wo; ++ow) {
      T v = bias;
      for (int i = 0; i < KH; ++i) {
        for (int j = 0; j < KW; ++j) v += w[i * KW + j] * base[i * dh * Wp + j * dw + ow];
      }
      o[ow] = v;
    }
  }
}

template <typename T>
DIN_INLINE void depthwise_plane_impl(const T* pad, int64_t Wp, const T* w, int64_t kh, int64_t kw,
                                     int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t Ho,
                                     int64_t Wo, T bias, T* out) {
  if constexpr (kTapKernels) {
    if (kh == 3 && kw == 3 && sw == 1) {
      depthwise_plane_fixed<T, 3, 3>(pad, Wp, w, sh, dh, dw, Ho, Wo, bias, out);
      return;
    }
  }
  constexpr int L = kLanes<T>;
  for (int64_t oh = 0; oh < Ho; ++oh) {
    T* o = out + oh * Wo;
    int64_t ow0 = 0;
    if (sw == 1) {
      // L outputs at a time stay in registers across all taps; each is stored once.
      for (; ow0 + L <= Wo; ow0 += L) {
        T acc[L];
        for (int k = 0; k < L; ++k) acc[k] = bias;
        for (int64_t i = 0; i < kh; ++i) {
          const T* row = pad + (oh * sh + i * dh) * Wp + ow0;
          for (int64_t j = 0; j < kw; ++j) {
            const T a = w[i * kw + j];
            const T* src = row + j * dw;
            for (int k = 0; k < L; ++k) acc[k] += a * src[k];
          }
        }
        for (int k = 0; k < L; ++k) o[ow0 + k] = acc[k];
      }
    }
    for (int64_t ow = ow0; ow < Wo; ++ow) {
      T v = bias;
      for (int64_t i = 0; i < kh; ++i) {
        const T* row = pad + (oh * sh + i * dh) * Wp + ow * sw;
        for (int64_t j = 0; j < kw; ++j) v += w[i * kw + j] * row[j * dw];
      }
      o[ow] = v;
    }
  }
}

// gw[i, j] += sum_{oh, ow} g[oh, ow] * pad[oh * sh + i * dh, ow * sw + j * dw], in lanes flushed to
// double every kRows rows.
// The same for a KH x KW kernel known at compile time and unit column stride: all taps in one pass
// over g, their lane accumulators in registers.
template <typename T, int KH, int KW>
DIN_INLINE void depthwise_weight_grad_fixed(const T* pad, int64_t Wp, int64_t sh, int64_t dh,
                                            int64_t dw, int64_t Ho, int64_t Wo, const T* g,
                                            double* gw) {
  if constexpr (!kTapKernels) {  // the baseline level: 64-byte lane arrays (see kTapKernels)
    constexpr int L = 64 / sizeof(T);
    constexpr int64_t kRows = 16;
    for (int64_t r0 = 0; r0 < Ho; r0 += kRows) {
      T d[KH * KW][L] = {};
      for (int64_t oh = r0; oh < std::min(Ho, r0 + kRows); ++oh) {
        const T* gr = g + oh * Wo;
        const T* base = pad + oh * sh * Wp;
        int64_t ow = 0;
        for (; ow + L <= Wo; ow += L) {
          for (int i = 0; i < KH; ++i) {
            for (int j = 0; j < KW; ++j) {
              const T* src = base + i * dh * Wp + j * dw + ow;
              for (int k = 0; k < L; ++k) d[i * KW + j][k] += gr[ow + k] * src[k];
            }
          }
        }
        for (; ow < Wo; ++ow) {
          for (int i = 0; i < KH; ++i) {
            for (int j = 0; j < KW; ++j) d[i * KW + j][0] += gr[ow] * base[i * dh * Wp + j * dw + ow];
          }
        }
      }
      for (int t = 0; t < KH * KW; ++t) gw[t] += lane_total<L>(d[t]);
    }
    return;
  }
  // avx2 / avx512: one vector register per tap, written with vector types and unrolled so that
  // the compiler keeps them in registers (as 64-byte lane arrays, GCC 12 kept them on the stack at
  // avx2 and zeroed them with `rep stos`).
  using V = simd::vec_t<T>;
  constexpr int L = simd::kLanes<T>;
  constexpr int64_t kRows = simd::kVecBytes / 4;  // about Wo values per lane between flushes
  for (int64_t r0 = 0; r0 < Ho; r0 += kRows) {
    V d[KH * KW];
#pragma GCC unroll 16
    for (int t = 0; t < KH * KW; ++t) d[t] = V{};
    for (int64_t oh = r0; oh < std::min(Ho, r0 + kRows); ++oh) {
      const T* gr = g + oh * Wo;
      const T* base = pad + oh * sh * Wp;
      int64_t ow = 0;
      for (; ow + L <= Wo; ow += L) {
        const V gv = simd::loadu(gr + ow);
#pragma GCC unroll 4
        for (int i = 0; i < KH; ++i) {
#pragma GCC unroll 4
          for (int j = 0; j < KW; ++j) {
            d[i * KW + j] += gv * simd::loadu(base + i * dh * Wp + j * dw + ow);
          }
        }
      }
      for (; ow < Wo; ++ow) {
        for (int i = 0; i < KH; ++i) {
          for (int j = 0; j < KW; ++j) d[i * KW + j][0] += gr[ow] * base[i * dh * Wp + j * dw + ow];
        }
      }
    }
    for (int t = 0; t < KH * KW; ++t) {
      T lanes[L];
      simd::storeu(lanes, d[t]);
      gw[t] += lane_total<L>(lanes);
    }
  }
}

template <typename T>
DIN_INLINE void depthwise_weight_grad_impl(const T* pad, int64_t Wp, int64_t kh, int64_t kw,
                                           int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                                           int64_t Ho, int64_t Wo, const T* g, double* gw) {
  if (kh == 3 && kw == 3 && sw == 1) {
    depthwise_weight_grad_fixed<T, 3, 3>(pad, Wp, sh, dh, dw, Ho, Wo, g, gw);
    return;
  }
  constexpr int L = kLanes<T>;
  constexpr int64_t kRows = 16;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      double total = 0.0;
      for (int64_t r0 = 0; r0 < Ho; r0 += kRows) {
        T d[L] = {};
        for (int64_t oh = r0; oh < std::min(Ho, r0 + kRows); ++oh) {
          const T* gr = g + oh * Wo;
          const T* src = pad + (oh * sh + i * dh) * Wp + j * dw;
          int64_t ow = 0;
          if (sw == 1) {
            for (; ow + L <= Wo; ow += L) {
              for (int k = 0; k < L; ++k) d[k] += gr[ow + k] * src[ow + k];
            }
          }
          for (; ow < Wo; ++ow) d[ow % L] += gr[ow] * src[ow * sw];
        }
        total += lane_total<L>(d);
      }
      gw[i * kw + j] += total;
    }
  }
}

template <typename T>
DIN_INLINE void depthwise_plane_backward_impl(const T* pad, int64_t Wp, const T* w, int64_t kh,
                                              int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                                              int64_t dw, int64_t Ho, int64_t Wo, const T* g,
                                              double* gw, T* gpad) {
  // Tap by tap over the whole (cache-resident) plane: the weight-gradient dot product accumulates
  // in independent lanes (vectorizes without reassociation), flushed to double every kRows rows.
  constexpr int L = kLanes<T>;
  constexpr int64_t kRows = 16;
  for (int64_t i = 0; i < kh; ++i) {
    for (int64_t j = 0; j < kw; ++j) {
      const T a = w[i * kw + j];
      double total = 0.0;
      for (int64_t r0 = 0; r0 < Ho; r0 += kRows) {
        T d[L] = {};
        for (int64_t oh = r0; oh < std::min(Ho, r0 + kRows); ++oh) {
          const T* gr = g + oh * Wo;
          const int64_t off = (oh * sh + i * dh) * Wp + j * dw;
          const T* src = pad + off;
          T* dst = gpad + off;
          int64_t ow = 0;
          if (sw == 1) {
            for (; ow + L <= Wo; ow += L) {
              for (int k = 0; k < L; ++k) {
                d[k] += gr[ow + k] * src[ow + k];
                dst[ow + k] += a * gr[ow + k];
              }
            }
          }
          for (; ow < Wo; ++ow) {
            d[ow % L] += gr[ow] * src[ow * sw];
            dst[ow * sw] += a * gr[ow];
          }
        }
        total += lane_total<L>(d);
      }
      gw[i * kw + j] += total;
    }
  }
}

void depthwise_plane(const float* pad, int64_t Wp, const float* w, int64_t kh,
                     int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                     int64_t Ho, int64_t Wo, float bias, float* out) {
  depthwise_plane_impl(pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, bias, out);
}
void depthwise_plane(const double* pad, int64_t Wp, const double* w, int64_t kh,
                     int64_t kw, int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                     int64_t Ho, int64_t Wo, double bias, double* out) {
  depthwise_plane_impl(pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, bias, out);
}
void depthwise_weight_grad(const float* pad, int64_t Wp, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t Ho,
                           int64_t Wo, const float* g, double* gw) {
  depthwise_weight_grad_impl(pad, Wp, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw);
}
void depthwise_weight_grad(const double* pad, int64_t Wp, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t Ho,
                           int64_t Wo, const double* g, double* gw) {
  depthwise_weight_grad_impl(pad, Wp, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw);
}
void depthwise_plane_backward(const float* pad, int64_t Wp, const float* w, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, int64_t dh,
                              int64_t dw, int64_t Ho, int64_t Wo, const float* g,
                              double* gw, float* gpad) {
  depthwise_plane_backward_impl(pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw, gpad);
}
void depthwise_plane_backward(const double* pad, int64_t Wp, const double* w,
                              int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                              int64_t dh, int64_t dw, int64_t Ho, int64_t Wo,
                              const double* g, double* gw, double* gpad) {
  depthwise_plane_backward_impl(pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw, gpad);
}
void convert(const c10::BFloat16* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
void convert(const c10::Half* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
void convert(const float* src, int64_t n, c10::BFloat16* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<c10::BFloat16>(src[i]);
}
void convert(const float* src, int64_t n, c10::Half* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<c10::Half>(src[i]);
}

// Spatially adaptive instance norm loops.
namespace {

// The streamed loops below compute a value in one of two forms, math::'s scalar formula (head and
// tail) or vmath::'s on vectors, and the cached loops in the form the compiler vectorizes; all must
// round alike, also where the compiler fuses a multiply and an add (aarch64 always, x86-64 at
// avx2/avx512). A run-time choice inside them (`beta != nullptr ? beta[i] : b`) can leave the
// multiply and the add in different blocks and unfused in one form only (GCC 12 on aarch64, with
// -fwrapv as Python's flags give it: 1 ulp in float64), so each choice is a template argument.

// gx and, with kFull (gamma and ggamma given), ggamma = gy * xh; without, gamma is the constant
// gam. The caller streams only when gx and ggamma have the same alignment.
template <bool kFull, typename T>
DIN_INLINE void normalize_backward_streamed(const T* gy, const T* x, const T* gamma, T gam,
                                            int64_t n, T hi, T lo, T r, T mg, T mgxh, T* gx,
                                            T* ggamma) {
  using V = simd::vec_t<T>;
  const V hv = -V{} + hi, lv = -V{} + lo, rv = -V{} + r, gv = -V{} + gam, mgv = -V{} + mg,
          mxv = -V{} + mgxh;
  stream_loop(
      gx, n,
      [&](int64_t i) {
        const T xh = math::normalize(x[i], hi, lo, r);
        gx[i] = math::normalize_backward_scaled(gy[i], kFull ? gamma[i] : gam, xh, r, mg, mgxh);
        if constexpr (kFull) ggamma[i] = gy[i] * xh;
      },
      [&](int64_t i) {
        const V xh = vmath::normalize(simd::loadu(x + i), hv, lv, rv), g = simd::loadu(gy + i);
        const V w = kFull ? simd::loadu(gamma + i) : gv;
        simd::stream(gx + i, vmath::normalize_backward_scaled(g, w, xh, rv, mgv, mxv));
        if constexpr (kFull) simd::stream(ggamma + i, g * xh);
      });
}

// out = normalize_affine(x, gamma) + beta (kBeta) or + b, streamed.
template <bool kBeta, typename T>
DIN_INLINE void normalize_affine_streamed(const T* x, int64_t n, T hi, T lo, T r, const T* gamma,
                                          const T* beta, T b, T* out) {
  using V = simd::vec_t<T>;
  const V hv = -V{} + hi, lv = -V{} + lo, rv = -V{} + r, bv = -V{} + b;
  stream_map(
      out, n,
      [&](int64_t i) {
        return math::normalize_affine(x[i], hi, lo, r, gamma[i], kBeta ? beta[i] : b);
      },
      [&](int64_t i) {
        const V bi = kBeta ? simd::loadu(beta + i) : bv, w = simd::loadu(gamma + i);
        return vmath::normalize_affine(simd::loadu(x + i), hv, lv, rv, w, bi);
      });
}

template <typename T>
DIN_INLINE void normalize_affine_impl(const T* x, int64_t n, T hi, T lo, T r, const T* gamma,
                                      const T* beta, T b, T* out, bool stream) {
  if (stream && beta != nullptr) {
    normalize_affine_streamed<true>(x, n, hi, lo, r, gamma, beta, b, out);
  } else if (stream) {
    normalize_affine_streamed<false>(x, n, hi, lo, r, gamma, beta, b, out);
  } else if (beta != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = math::normalize_affine(x[i], hi, lo, r, gamma[i], beta[i]);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = math::normalize_affine(x[i], hi, lo, r, gamma[i], b);
  }
}

// out = ((x - hi) - lo) * s + beta (kBeta) or + b, streamed.
template <bool kBeta, typename T>
DIN_INLINE void normalize_scale_shift_streamed(const T* x, int64_t n, T hi, T lo, T s,
                                               const T* beta, T b, T* out) {
  using V = simd::vec_t<T>;
  const V hv = -V{} + hi, lv = -V{} + lo, sv = -V{} + s, bv = -V{} + b;
  stream_map(
      out, n,
      [&](int64_t i) { return math::normalize_scale_shift(x[i], hi, lo, s, kBeta ? beta[i] : b); },
      [&](int64_t i) {
        const V bi = kBeta ? simd::loadu(beta + i) : bv;
        return vmath::normalize_scale_shift(simd::loadu(x + i), hv, lv, sv, bi);
      });
}

template <typename T>
DIN_INLINE void normalize_scale_shift_impl(const T* x, int64_t n, T hi, T lo, T s, const T* beta,
                                           T b, T* out, bool stream) {
  if (stream && beta != nullptr) {
    normalize_scale_shift_streamed<true>(x, n, hi, lo, s, beta, b, out);
  } else if (stream) {
    normalize_scale_shift_streamed<false>(x, n, hi, lo, s, beta, b, out);
  } else if (beta != nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] = math::normalize_scale_shift(x[i], hi, lo, s, beta[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = math::normalize_scale_shift(x[i], hi, lo, s, b);
  }
}

// Requests the values [done, upto) of p into cache, a 64-byte line at a time (done advances).
template <typename T>
DIN_INLINE void prefetch_upto(const T* p, int64_t& done, int64_t upto) {
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  for (; done < upto; done += kLine) __builtin_prefetch(p + done);
}

// One plane's output pass, ((x - hi) - lo) * s (+ b with kShift: normalize_scale_shift with a
// constant beta), while the next planes' values are requested into cache: after each step of kStep
// values (the spacing of common.h's prefetch_step, without its call per step), the same fraction
// of next.a and next.b.
template <bool kShift, typename T>
DIN_INLINE void normalize_plane_impl(const T* x, int64_t n, T hi, T lo, T s, T b, T* out,
                                     bool stream, PlanePrefetch<T> next) {
  using V = simd::vec_t<T>;
  constexpr int64_t L = simd::kLanes<T>, kStep = 128;
  const V hv = -V{} + hi, lv = -V{} + lo, sv = -V{} + s, bv = -V{} + b;
  const auto one = [&](int64_t i) {
    return kShift ? math::normalize_scale_shift(x[i], hi, lo, s, b)
                  : math::normalize(x[i], hi, lo, s);
  };
  const double fa = n > 0 ? double(next.na) / double(n) : 0.0;
  const double fb = n > 0 ? double(next.nb) / double(n) : 0.0;
  int64_t da = 0, db = 0, i = 0;
  for (const int64_t h = stream ? stream_head(out, n) : 0; i < h; ++i) out[i] = one(i);
  while (i < n) {
    const int64_t e = std::min(n, i + kStep);
    if (next.a != nullptr) prefetch_upto(next.a, da, e == n ? next.na : int64_t(double(e) * fa));
    if (next.b != nullptr) prefetch_upto(next.b, db, e == n ? next.nb : int64_t(double(e) * fb));
    for (; i + L <= e; i += L) {
      const V xv = simd::loadu(x + i);
      const V v = kShift ? vmath::normalize_scale_shift(xv, hv, lv, sv, bv)
                         : vmath::normalize(xv, hv, lv, sv);
      if (stream) {
        simd::stream(out + i, v);
      } else {
        simd::storeu(out + i, v);
      }
    }
    for (; i < e; ++i) out[i] = one(i);
  }
}

template <typename T>
DIN_INLINE void normalize_plane_any(const T* x, int64_t n, T hi, T lo, T s, const T* shift, T* out,
                                    bool stream, PlanePrefetch<T> next) {
  if (shift != nullptr) {
    normalize_plane_impl<true>(x, n, hi, lo, s, *shift, out, stream, next);
  } else {
    normalize_plane_impl<false>(x, n, hi, lo, s, T(0), out, stream, next);
  }
}

template <typename T>
DIN_INLINE void normalize_affine_rows_impl(const T* x, int64_t rows, int64_t C, const T* hi,
                                           const T* lo, const T* r, const T* gamma, const T* beta,
                                           const T* b, T* out, bool stream) {
  if (stream) {
    for (int64_t p = 0; p < rows; ++p) {
      const T *xr = x + p * C, *gr = gamma + p * C;
      const T* br = beta != nullptr ? beta + p * C : b;  // beta's row, or the per-channel b
      stream_map(
          out + p * C, C,
          [&](int64_t c) { return math::normalize_affine(xr[c], hi[c], lo[c], r[c], gr[c], br[c]); },
          [&](int64_t c) {
            return vmath::normalize_affine(simd::loadu(xr + c), simd::loadu(hi + c),
                                           simd::loadu(lo + c), simd::loadu(r + c),
                                           simd::loadu(gr + c), simd::loadu(br + c));
          });
    }
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    const T* gr = gamma + p * C;
    T* o = out + p * C;
    if (beta != nullptr) {
      const T* br = beta + p * C;
      for (int64_t c = 0; c < C; ++c) {
        o[c] = math::normalize_affine(xr[c], hi[c], lo[c], r[c], gr[c], br[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        o[c] = math::normalize_affine(xr[c], hi[c], lo[c], r[c], gr[c], b[c]);
      }
    }
  }
}

template <typename T>
DIN_INLINE void normalize_scale_shift_rows_impl(const T* x, int64_t rows, int64_t C, const T* hi,
                                                const T* lo, const T* s, const T* beta,
                                                const T* b, T* out, bool stream) {
  if (stream) {
    for (int64_t p = 0; p < rows; ++p) {
      const T* xr = x + p * C;
      const T* br = beta != nullptr ? beta + p * C : b;  // beta's row, or the per-channel b
      stream_map(
          out + p * C, C,
          [&](int64_t c) { return math::normalize_scale_shift(xr[c], hi[c], lo[c], s[c], br[c]); },
          [&](int64_t c) {
            return vmath::normalize_scale_shift(simd::loadu(xr + c), simd::loadu(hi + c),
                                                simd::loadu(lo + c), simd::loadu(s + c),
                                                simd::loadu(br + c));
          });
    }
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    T* o = out + p * C;
    if (beta != nullptr) {
      const T* br = beta + p * C;
      for (int64_t c = 0; c < C; ++c) {
        o[c] = math::normalize_scale_shift(xr[c], hi[c], lo[c], s[c], br[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        o[c] = math::normalize_scale_shift(xr[c], hi[c], lo[c], s[c], b[c]);
      }
    }
  }
}

template <typename T>
DIN_INLINE void affine_grad_sums_impl(const T* gy, const T* x, const T* gamma, int64_t n, T hi,
                                      T lo, T r, double* sg, double* sgxh, double* sgy) {
  constexpr int L = kLanes<T>;
  double t1 = 0.0, t2 = 0.0, t3 = 0.0;
  for (int64_t b = 0; b < n; b += kFlush * L) {
    const int64_t e = std::min(n, b + kFlush * L);
    T a1[L] = {}, a2[L] = {}, a3[L] = {};
    int64_t i = b;
    for (; i + L <= e; i += L) {
      for (int j = 0; j < L; ++j) {
        const T xh = math::normalize(x[i + j], hi, lo, r);
        const T g = gy[i + j] * gamma[i + j];
        a1[j] += g;
        a2[j] += g * xh;
        a3[j] += gy[i + j];
      }
    }
    for (; i < e; ++i) {
      const T xh = math::normalize(x[i], hi, lo, r);
      const T g = gy[i] * gamma[i];
      a1[0] += g;
      a2[0] += g * xh;
      a3[0] += gy[i];
    }
    t1 += lane_total<L>(a1);
    t2 += lane_total<L>(a2);
    t3 += lane_total<L>(a3);
  }
  *sg += t1;
  *sgxh += t2;
  *sgy += t3;
}

template <typename T>
DIN_INLINE void affine_grad_sums_rows_impl(const T* gy, const T* x, const T* gamma, int64_t rows,
                                           int64_t C, const T* hi, const T* lo, const T* r,
                                           double* sg, double* sgxh, double* sgy) {
  for (int64_t c0 = 0; c0 < C; c0 += kCh) {
    const int64_t cn = std::min(kCh, C - c0);
    for (int64_t r0 = 0; r0 < rows; r0 += kFlush) {
      const int64_t re = std::min(rows, r0 + kFlush);
      alignas(64) T a1[kCh], a2[kCh], a3[kCh];
      std::fill_n(a1, cn, T(0));
      std::fill_n(a2, cn, T(0));
      std::fill_n(a3, cn, T(0));
      for (int64_t p = r0; p < re; ++p) {
        const T* xr = x + p * C + c0;
        const T* gr = gy + p * C + c0;
        const T* wr = gamma + p * C + c0;
        for (int64_t j = 0; j < cn; ++j) {
          const T xh = math::normalize(xr[j], hi[c0 + j], lo[c0 + j], r[c0 + j]);
          const T g = gr[j] * wr[j];
          a1[j] += g;
          a2[j] += g * xh;
          a3[j] += gr[j];
        }
      }
      for (int64_t j = 0; j < cn; ++j) {
        sg[c0 + j] += a1[j];
        sgxh[c0 + j] += a2[j];
        sgy[c0 + j] += a3[j];
      }
    }
  }
}

template <typename T>
DIN_INLINE void normalize_affine_backward_impl(const T* gy, const T* x, const T* gamma, int64_t n,
                                               T hi, T lo, T r, T mg, T mgxh, T* gx, T* ggamma,
                                               bool stream) {
  if (stream) {
    return normalize_backward_streamed<true>(gy, x, gamma, T(0), n, hi, lo, r, mg, mgxh, gx,
                                             ggamma);
  }
  for (int64_t i = 0; i < n; ++i) {
    const T xh = math::normalize(x[i], hi, lo, r);
    const T g = gy[i];
    gx[i] = math::normalize_backward_scaled(g, gamma[i], xh, r, mg, mgxh);
    ggamma[i] = g * xh;
  }
}

template <typename T>
DIN_INLINE void normalize_affine_backward_rows_impl(const T* gy, const T* x, const T* gamma,
                                                    int64_t rows, int64_t C, const T* hi,
                                                    const T* lo, const T* r, const T* mg,
                                                    const T* mgxh, T* __restrict__ gx,
                                                    T* __restrict__ ggamma, bool stream) {
  if (stream) {
    // gx and ggamma streamed together: the caller gives them the same alignment.
    for (int64_t p = 0; p < rows; ++p) {
      const T *xr = x + p * C, *gr = gy + p * C, *wr = gamma + p * C;
      T *o = gx + p * C, *og = ggamma + p * C;
      stream_loop(
          o, C,
          [&](int64_t c) {
            const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
            o[c] = math::normalize_backward_scaled(gr[c], wr[c], xh, r[c], mg[c], mgxh[c]);
            og[c] = gr[c] * xh;
          },
          [&](int64_t c) {
            const auto rv = simd::loadu(r + c), g = simd::loadu(gr + c);
            const auto xh = vmath::normalize(simd::loadu(xr + c), simd::loadu(hi + c),
                                             simd::loadu(lo + c), rv);
            simd::stream(o + c, vmath::normalize_backward_scaled(g, simd::loadu(wr + c), xh, rv,
                                                                 simd::loadu(mg + c),
                                                                 simd::loadu(mgxh + c)));
            simd::stream(og + c, g * xh);
          });
    }
    return;
  }
  // The outputs are declared restrict: with two of them against eight inputs the compiler would
  // otherwise need more run-time alias checks than it is willing to emit, and not vectorize.
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    const T* gr = gy + p * C;
    const T* wr = gamma + p * C;
    T* o = gx + p * C;
    T* og = ggamma + p * C;
    for (int64_t c = 0; c < C; ++c) {
      const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
      o[c] = math::normalize_backward_scaled(gr[c], wr[c], xh, r[c], mg[c], mgxh[c]);
      og[c] = gr[c] * xh;
    }
  }
}

template <typename T>
DIN_INLINE void normalize_backward_scaled_impl(const T* gy, const T* x, int64_t n, T hi, T lo, T r,
                                               T gam, T mg, T mgxh, T* gx, bool stream) {
  if (stream) {
    return normalize_backward_streamed<false>(gy, x, static_cast<const T*>(nullptr), gam, n, hi, lo,
                                              r, mg, mgxh, gx, static_cast<T*>(nullptr));
  }
  for (int64_t i = 0; i < n; ++i) {
    const T xh = math::normalize(x[i], hi, lo, r);
    gx[i] = math::normalize_backward_scaled(gy[i], gam, xh, r, mg, mgxh);
  }
}

template <typename T>
DIN_INLINE void normalize_backward_scaled_rows_impl(const T* gy, const T* x, int64_t rows,
                                                    int64_t C, const T* hi, const T* lo,
                                                    const T* r, const T* gam, const T* mg,
                                                    const T* mgxh, T* gx, bool stream) {
  if (stream) {
    for (int64_t p = 0; p < rows; ++p) {
      const T *xr = x + p * C, *gr = gy + p * C;
      stream_map(
          gx + p * C, C,
          [&](int64_t c) {
            const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
            return math::normalize_backward_scaled(gr[c], gam[c], xh, r[c], mg[c], mgxh[c]);
          },
          [&](int64_t c) {
            const auto rv = simd::loadu(r + c);
            const auto xh =
                vmath::normalize(simd::loadu(xr + c), simd::loadu(hi + c), simd::loadu(lo + c), rv);
            return vmath::normalize_backward_scaled(simd::loadu(gr + c), simd::loadu(gam + c), xh,
                                                    rv, simd::loadu(mg + c),
                                                    simd::loadu(mgxh + c));
          });
    }
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* xr = x + p * C;
    const T* gr = gy + p * C;
    T* o = gx + p * C;
    for (int64_t c = 0; c < C; ++c) {
      const T xh = math::normalize(xr[c], hi[c], lo[c], r[c]);
      o[c] = math::normalize_backward_scaled(gr[c], gam[c], xh, r[c], mg[c], mgxh[c]);
    }
  }
}

}  // namespace

void normalize_affine(const float* x, int64_t n, float hi, float lo, float r,
                      const float* gamma, const float* beta, float b, float* out, bool stream) {
  normalize_affine_impl(x, n, hi, lo, r, gamma, beta, b, out, stream);
}
void normalize_affine(const double* x, int64_t n, double hi, double lo, double r,
                      const double* gamma, const double* beta, double b, double* out, bool stream) {
  normalize_affine_impl(x, n, hi, lo, r, gamma, beta, b, out, stream);
}
void normalize_scale_shift(const float* x, int64_t n, float hi, float lo, float s,
                           const float* beta, float b, float* out, bool stream) {
  normalize_scale_shift_impl(x, n, hi, lo, s, beta, b, out, stream);
}
void normalize_scale_shift(const double* x, int64_t n, double hi, double lo, double s,
                           const double* beta, double b, double* out, bool stream) {
  normalize_scale_shift_impl(x, n, hi, lo, s, beta, b, out, stream);
}
void normalize_plane(const float* x, int64_t n, float hi, float lo, float s, const float* shift,
                     float* out, bool stream, PlanePrefetch<float> next) {
  normalize_plane_any(x, n, hi, lo, s, shift, out, stream, next);
}
void normalize_plane(const double* x, int64_t n, double hi, double lo, double s,
                     const double* shift, double* out, bool stream, PlanePrefetch<double> next) {
  normalize_plane_any(x, n, hi, lo, s, shift, out, stream, next);
}
void normalize_affine_rows(const float* x, int64_t rows, int64_t C, const float* hi,
                           const float* lo, const float* r, const float* gamma,
                           const float* beta, const float* b, float* out, bool stream) {
  normalize_affine_rows_impl(x, rows, C, hi, lo, r, gamma, beta, b, out, stream);
}
void normalize_affine_rows(const double* x, int64_t rows, int64_t C, const double* hi,
                           const double* lo, const double* r, const double* gamma,
                           const double* beta, const double* b, double* out, bool stream) {
  normalize_affine_rows_impl(x, rows, C, hi, lo, r, gamma, beta, b, out, stream);
}
void normalize_scale_shift_rows(const float* x, int64_t rows, int64_t C,
                                const float* hi, const float* lo, const float* s,
                                const float* beta, const float* b, float* out, bool stream) {
  normalize_scale_shift_rows_impl(x, rows, C, hi, lo, s, beta, b, out, stream);
}
void normalize_scale_shift_rows(const double* x, int64_t rows, int64_t C,
                                const double* hi, const double* lo, const double* s,
                                const double* beta, const double* b, double* out, bool stream) {
  normalize_scale_shift_rows_impl(x, rows, C, hi, lo, s, beta, b, out, stream);
}
void affine_grad_sums(const float* gy, const float* x, const float* gamma, int64_t n,
                      float hi, float lo, float r, double* sg, double* sgxh,
                      double* sgy) {
  affine_grad_sums_impl(gy, x, gamma, n, hi, lo, r, sg, sgxh, sgy);
}
void affine_grad_sums(const double* gy, const double* x, const double* gamma, int64_t n,
                      double hi, double lo, double r, double* sg, double* sgxh,
                      double* sgy) {
  affine_grad_sums_impl(gy, x, gamma, n, hi, lo, r, sg, sgxh, sgy);
}
void affine_grad_sums_rows(const float* gy, const float* x, const float* gamma,
                           int64_t rows, int64_t C, const float* hi, const float* lo,
                           const float* r, double* sg, double* sgxh, double* sgy) {
  affine_grad_sums_rows_impl(gy, x, gamma, rows, C, hi, lo, r, sg, sgxh, sgy);
}
void affine_grad_sums_rows(const double* gy, const double* x, const double* gamma,
                           int64_t rows, int64_t C, const double* hi, const double* lo,
                           const double* r, double* sg, double* sgxh, double* sgy) {
  affine_grad_sums_rows_impl(gy, x, gamma, rows, C, hi, lo, r, sg, sgxh, sgy);
}
void normalize_affine_backward(const float* gy, const float* x, const float* gamma,
                               int64_t n, float hi, float lo, float r, float mg,
                               float mgxh, float* gx, float* ggamma, bool stream) {
  normalize_affine_backward_impl(gy, x, gamma, n, hi, lo, r, mg, mgxh, gx, ggamma, stream);
}
void normalize_affine_backward(const double* gy, const double* x, const double* gamma,
                               int64_t n, double hi, double lo, double r, double mg,
                               double mgxh, double* gx, double* ggamma, bool stream) {
  normalize_affine_backward_impl(gy, x, gamma, n, hi, lo, r, mg, mgxh, gx, ggamma, stream);
}
void normalize_affine_backward_rows(const float* gy, const float* x, const float* gamma,
                                    int64_t rows, int64_t C, const float* hi,
                                    const float* lo, const float* r, const float* mg,
                                    const float* mgxh, float* gx, float* ggamma, bool stream) {
  normalize_affine_backward_rows_impl(gy, x, gamma, rows, C, hi, lo, r, mg, mgxh, gx, ggamma,
                                      stream);
}
void normalize_affine_backward_rows(const double* gy, const double* x,
                                    const double* gamma, int64_t rows, int64_t C,
                                    const double* hi, const double* lo, const double* r,
                                    const double* mg, const double* mgxh, double* gx,
                                    double* ggamma, bool stream) {
  normalize_affine_backward_rows_impl(gy, x, gamma, rows, C, hi, lo, r, mg, mgxh, gx, ggamma,
                                      stream);
}
void normalize_backward_scaled(const float* gy, const float* x, int64_t n, float hi,
                               float lo, float r, float gam, float mg, float mgxh,
                               float* gx, bool stream) {
  normalize_backward_scaled_impl(gy, x, n, hi, lo, r, gam, mg, mgxh, gx, stream);
}
void normalize_backward_scaled(const double* gy, const double* x, int64_t n, double hi,
                               double lo, double r, double gam, double mg, double mgxh,
                               double* gx, bool stream) {
  normalize_backward_scaled_impl(gy, x, n, hi, lo, r, gam, mg, mgxh, gx, stream);
}
void normalize_backward_scaled_rows(const float* gy, const float* x, int64_t rows,
                                    int64_t C, const float* hi, const float* lo,
                                    const float* r, const float* gam, const float* mg,
                                    const float* mgxh, float* gx, bool stream) {
  normalize_backward_scaled_rows_impl(gy, x, rows, C, hi, lo, r, gam, mg, mgxh, gx, stream);
}
void normalize_backward_scaled_rows(const double* gy, const double* x, int64_t rows,
                                    int64_t C, const double* hi, const double* lo,
                                    const double* r, const double* gam,
                                    const double* mg, const double* mgxh, double* gx, bool stream) {
  normalize_backward_scaled_rows_impl(gy, x, rows, C, hi, lo, r, gam, mg, mgxh, gx, stream);
}

DIN_ISA_END  // namespace din_ops::cpu::DIN_ISA
