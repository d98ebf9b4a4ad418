#include "deformable_loops.h"

#include "isa.h"
#include "vec.h"

#include <algorithm>
#include <cstring>

// Each exported loop is compiled for AVX-512, AVX2 + FMA and the baseline (isa.h; the wrappers
// deformable_loops_avx2.cpp and deformable_loops_avx512.cpp include this file). The loops use
// vectors of kBytes: on x86-64 32 bytes (8 floats or 4 doubles; one register with AVX2, two with
// SSE2), on aarch64 16 bytes, one NEON register (GCC keeps wider generic vectors there in memory).

// The aarch64 width is also built on x86-64 by the C++ test of the vector widths (isa.h).
#if defined(__aarch64__) || defined(DIN_CPU_NARROW_VECTORS_TEST)
#define DIN_DEFORM_VECTOR_BYTES 16
#else
#define DIN_DEFORM_VECTOR_BYTES 32
#endif

DIN_ISA_BEGIN
namespace {

namespace bl = din_ops::bilinear;

constexpr int kBytes = DIN_DEFORM_VECTOR_BYTES;

template <typename T>
struct Vec {
  using type = typename simd::VecOf<T, kBytes>::type;
  static constexpr int lanes = kBytes / sizeof(T);
};

template <typename T>
DIN_INLINE typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
DIN_INLINE void store(T* p, const typename Vec<T>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

// dst[j * ds + i] = src[i * ss + j] for i, j < lanes: one square tile transposed in registers.
#if DIN_DEFORM_VECTOR_BYTES == 32
using f8 = simd::VecOf<float, 32>::type;
using d4 = simd::VecOf<double, 32>::type;

DIN_INLINE void transpose_tile(const float* src, int64_t ss, float* dst, int64_t ds) {
  f8 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load(src + i * ss);
  for (int i = 0; i < 8; i += 2) {
    t[i] = simd::permute<0, 8, 1, 9, 4, 12, 5, 13>(r[i], r[i + 1]);
    t[i + 1] = simd::permute<2, 10, 3, 11, 6, 14, 7, 15>(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = simd::permute<0, 1, 8, 9, 4, 5, 12, 13>(t[i], t[i + 2]);
    u[i + 1] = simd::permute<2, 3, 10, 11, 6, 7, 14, 15>(t[i], t[i + 2]);
    u[i + 2] = simd::permute<0, 1, 8, 9, 4, 5, 12, 13>(t[i + 1], t[i + 3]);
    u[i + 3] = simd::permute<2, 3, 10, 11, 6, 7, 14, 15>(t[i + 1], t[i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    store(dst + j * ds, simd::permute<0, 1, 2, 3, 8, 9, 10, 11>(u[j], u[j + 4]));
    store(dst + (j + 4) * ds, simd::permute<4, 5, 6, 7, 12, 13, 14, 15>(u[j], u[j + 4]));
  }
}

DIN_INLINE void transpose_tile(const double* src, int64_t ss, double* dst, int64_t ds) {
  d4 r[4], t[4];
  for (int i = 0; i < 4; ++i) r[i] = load(src + i * ss);
  for (int i = 0; i < 4; i += 2) {
    t[i] = simd::permute<0, 4, 2, 6>(r[i], r[i + 1]);
    t[i + 1] = simd::permute<1, 5, 3, 7>(r[i], r[i + 1]);
  }
  store(dst, simd::permute<0, 1, 4, 5>(t[0], t[2]));
  store(dst + ds, simd::permute<0, 1, 4, 5>(t[1], t[3]));
  store(dst + 2 * ds, simd::permute<2, 3, 6, 7>(t[0], t[2]));
  store(dst + 3 * ds, simd::permute<2, 3, 6, 7>(t[1], t[3]));
}
#else
// 16-byte vectors: simd::transpose (zip rounds).
template <typename T>
DIN_INLINE void transpose_tile(const T* src, int64_t ss, T* dst, int64_t ds) {
  constexpr int n = Vec<T>::lanes;
  typename Vec<T>::type v[n];
  for (int i = 0; i < n; ++i) v[i] = load(src + i * ss);
  simd::transpose(v);
  for (int j = 0; j < n; ++j) store(dst + j * ds, v[j]);
}
#endif

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols: square tiles in registers, the edges
// element by element.
template <typename T>
DIN_INLINE void transpose(const T* src, int64_t ss, int64_t rows, int64_t cols, T* dst,
                          int64_t ds) {
  constexpr int S = Vec<T>::lanes;
  const int64_t rf = rows - rows % S, cf = cols - cols % S;
  for (int64_t i = 0; i < rf; i += S) {
    for (int64_t j = 0; j < cf; j += S) transpose_tile(src + i * ss + j, ss, dst + j * ds + i, ds);
  }
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t i0 = j < cf ? rf : 0;
    for (int64_t i = i0; i < rows; ++i) dst[j * ds + i] = src[i * ss + j];
  }
}

// A vector of column values of consecutive channels: contiguous (kContig) or `cs` apart.
template <typename T, bool kContig>
DIN_INLINE typename Vec<T>::type load_cols(const T* p, int64_t cs) {
  if constexpr (kContig) {
    return load(p);
  } else {
    typename Vec<T>::type v;
    for (int j = 0; j < Vec<T>::lanes; ++j) v[j] = p[j * cs];
    return v;
  }
}
template <typename T, bool kContig>
DIN_INLINE void store_cols(T* p, int64_t cs, const typename Vec<T>::type& v) {
  if constexpr (kContig) {
    store(p, v);
  } else {
    for (int j = 0; j < Vec<T>::lanes; ++j) p[j * cs] = v[j];
  }
}

template <typename T, bool kContig>
DIN_INLINE void deform_columns_run(const T* xg, int64_t xs, const bl::Corners<T>* pts, int64_t KK,
                                   int64_t Lt, int64_t Cs, T* col, int64_t ldl, int64_t ldt,
                                   int64_t cs_) {
  constexpr int S = Vec<T>::lanes;
  const int64_t cs = kContig ? 1 : cs_, cf = Cs - Cs % S;
  for (int64_t t = 0; t < KK; ++t) {
    for (int64_t l = 0; l < Lt; ++l) {
      const bl::Corners<T>& p = pts[t * Lt + l];
      const T *r0 = xg + p.index[0] * xs, *r1 = xg + p.index[1] * xs;
      const T *r2 = xg + p.index[2] * xs, *r3 = xg + p.index[3] * xs;
      const T w0 = p.weight[0], w1 = p.weight[1], w2 = p.weight[2], w3 = p.weight[3];
      T* out = col + l * ldl + t * ldt;
      for (int64_t cc = 0; cc < cf; cc += S) {  // the order of bilinear::combine
        store_cols<T, kContig>(out + cc * cs, cs,
                               (w0 * load(r0 + cc) + w1 * load(r1 + cc)) +
                                   (w2 * load(r2 + cc) + w3 * load(r3 + cc)));
      }
      for (int64_t cc = cf; cc < Cs; ++cc) {
        out[cc * cs] = (w0 * r0[cc] + w1 * r1[cc]) + (w2 * r2[cc] + w3 * r3[cc]);
      }
    }
  }
}

template <typename T>
DIN_INLINE T lane_sum(const typename Vec<T>::type& v) {
  T s = 0;
  for (int j = 0; j < Vec<T>::lanes; ++j) s += v[j];
  return s;
}

template <typename T>
DIN_INLINE void deform_columns_impl(const T* xg, int64_t xs, const bl::Corners<T>* pts, int64_t KK,
                                    int64_t Lt, int64_t Cs, T* col, int64_t ldl, int64_t ldt,
                                    int64_t cs) {
  if (cs == 1) {
    deform_columns_run<T, true>(xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs);
  } else {
    deform_columns_run<T, false>(xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs);
  }
}

template <typename T, bool kContig>
DIN_INLINE void deform_points_backward_run(const T* xg, T* gxg, int64_t xs,
                                           const bl::Corners<T>* pts, const T* mv, int64_t KK,
                                           int64_t Lt, int64_t Cs, const T* gcol, T* col,
                                           int64_t ldl, int64_t ldt, int64_t cs_, T* gmk, T* goy,
                                           T* gox) {
  using V = typename Vec<T>::type;
  constexpr int S = Vec<T>::lanes;
  const int64_t cs = kContig ? 1 : cs_, cf = Cs - Cs % S;
  for (int64_t t = 0; t < KK; ++t) {
    for (int64_t l = 0; l < Lt; ++l) {
      const int64_t e = t * Lt + l;
      const bl::Corners<T>& p = pts[e];
      const T *r0 = xg + p.index[0] * xs, *r1 = xg + p.index[1] * xs;
      const T *r2 = xg + p.index[2] * xs, *r3 = xg + p.index[3] * xs;
      T *q0 = gxg + p.index[0] * xs, *q1 = gxg + p.index[1] * xs;
      T *q2 = gxg + p.index[2] * xs, *q3 = gxg + p.index[3] * xs;
      const T w0 = p.weight[0], w1 = p.weight[1], w2 = p.weight[2], w3 = p.weight[3];
      const T y0 = p.dy[0], y1 = p.dy[1], y2 = p.dy[2], y3 = p.dy[3];
      const T x0 = p.dx[0], x1 = p.dx[1], x2 = p.dx[2], x3 = p.dx[3];
      const T m = mv[e];
      const T m0 = m * w0, m1 = m * w1, m2 = m * w2, m3 = m * w3;
      const T* gc = gcol + l * ldl + t * ldt;
      T* out = col + l * ldl + t * ldt;
      V sv = {}, sy = {}, sx = {};
      for (int64_t cc = 0; cc < cf; cc += S) {
        const V v0 = load(r0 + cc), v1 = load(r1 + cc), v2 = load(r2 + cc), v3 = load(r3 + cc);
        const V g = load_cols<T, kContig>(gc + cc * cs, cs);
        const V val = (w0 * v0 + w1 * v1) + (w2 * v2 + w3 * v3);
        store_cols<T, kContig>(out + cc * cs, cs, m * val);
        sv += g * val;
        sy += g * ((y0 * v0 + y1 * v1) + (y2 * v2 + y3 * v3));
        sx += g * ((x0 * v0 + x1 * v1) + (x2 * v2 + x3 * v3));
        // The x-gradient onto the four corners, one after the other (corners outside the plane
        // share the row past it, with weight 0).
        store(q0 + cc, load(q0 + cc) + m0 * g);
        store(q1 + cc, load(q1 + cc) + m1 * g);
        store(q2 + cc, load(q2 + cc) + m2 * g);
        store(q3 + cc, load(q3 + cc) + m3 * g);
      }
      T tv = lane_sum<T>(sv), ty = lane_sum<T>(sy), tx = lane_sum<T>(sx);
      for (int64_t cc = cf; cc < Cs; ++cc) {
        const T v0 = r0[cc], v1 = r1[cc], v2 = r2[cc], v3 = r3[cc], g = gc[cc * cs];
        const T val = (w0 * v0 + w1 * v1) + (w2 * v2 + w3 * v3);
        out[cc * cs] = m * val;
        tv += g * val;
        ty += g * ((y0 * v0 + y1 * v1) + (y2 * v2 + y3 * v3));
        tx += g * ((x0 * v0 + x1 * v1) + (x2 * v2 + x3 * v3));
        q0[cc] += m0 * g;
        q1[cc] += m1 * g;
        q2[cc] += m2 * g;
        q3[cc] += m3 * g;
      }
      gmk[e] += tv;
      goy[e] += m * ty;
      gox[e] += m * tx;
    }
  }
}

template <typename T>
DIN_INLINE void deform_points_backward_impl(const T* xg, T* gxg, int64_t xs,
                                            const bl::Corners<T>* pts, const T* mv, int64_t KK,
                                            int64_t Lt, int64_t Cs, const T* gcol, T* col,
                                            int64_t ldl, int64_t ldt, int64_t cs, T* gmk, T* goy,
                                            T* gox) {
  if (cs == 1) {
    deform_points_backward_run<T, true>(xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt, cs,
                                        gmk, goy, gox);
  } else {
    deform_points_backward_run<T, false>(xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt,
                                         cs, gmk, goy, gox);
  }
}

template <typename T>
DIN_INLINE void gather_channels_impl(const T* const* parts, int64_t nparts, int64_t P, int64_t C,
                                     int64_t c0, int64_t cb, T* out) {
  constexpr int64_t kRows = 64;  // pixels per step: cb x kRows values stay in L1
  T buf[kRows * 16];
  for (int64_t i0 = 0; i0 < P; i0 += kRows) {
    const int64_t ib = std::min(kRows, P - i0);
    for (int64_t k = 0; k < nparts; ++k) {
      const T* src = parts[k] + i0 * C + c0;
      if (k == 0) {
        transpose(src, C, ib, cb, out + i0, P);
      } else {
        transpose(src, C, ib, cb, buf, kRows);
        for (int64_t cc = 0; cc < cb; ++cc) {
          T* o = out + cc * P + i0;
          const T* b = buf + cc * kRows;
          for (int64_t i = 0; i < ib; ++i) o[i] += b[i];
        }
      }
    }
  }
}

}  // namespace

void deform_columns(const float* xg, int64_t xs, const bl::Corners<float>* pts,
                    int64_t KK, int64_t Lt, int64_t Cs, float* col, int64_t ldl,
                    int64_t ldt, int64_t cs) {
  deform_columns_impl(xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs);
}
void deform_columns(const double* xg, int64_t xs, const bl::Corners<double>* pts,
                    int64_t KK, int64_t Lt, int64_t Cs, double* col, int64_t ldl,
                    int64_t ldt, int64_t cs) {
  deform_columns_impl(xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs);
}

void deform_points_backward(const float* xg, float* gxg, int64_t xs,
                            const bl::Corners<float>* pts, const float* mv, int64_t KK,
                            int64_t Lt, int64_t Cs, const float* gcol, float* col,
                            int64_t ldl, int64_t ldt, int64_t cs, float* gmk,
                            float* goy, float* gox) {
  deform_points_backward_impl(xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt, cs, gmk,
                              goy, gox);
}
void deform_points_backward(const double* xg, double* gxg, int64_t xs,
                            const bl::Corners<double>* pts, const double* mv,
                            int64_t KK, int64_t Lt, int64_t Cs, const double* gcol,
                            double* col, int64_t ldl, int64_t ldt, int64_t cs,
                            double* gmk, double* goy, double* gox) {
  deform_points_backward_impl(xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt, cs, gmk,
                              goy, gox);
}

void gather_channels(const float* const* parts, int64_t nparts, int64_t P, int64_t C,
                     int64_t c0, int64_t cb, float* out) {
  gather_channels_impl(parts, nparts, P, C, c0, cb, out);
}
void gather_channels(const double* const* parts, int64_t nparts, int64_t P, int64_t C,
                     int64_t c0, int64_t cb, double* out) {
  gather_channels_impl(parts, nparts, P, C, c0, cb, out);
}

void transpose_matrix(const float* src, int64_t ss, int64_t rows, int64_t cols,
                      float* dst, int64_t ds) {
  transpose(src, ss, rows, cols, dst, ds);
}
void transpose_matrix(const double* src, int64_t ss, int64_t rows, int64_t cols,
                      double* dst, int64_t ds) {
  transpose(src, ss, rows, cols, dst, ds);
}

DIN_ISA_END  // namespace din_ops::cpu::DIN_ISA
