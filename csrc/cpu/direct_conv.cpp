// Register-blocked direct convolution kernels (see direct_conv.h for the layout).
//
// Written with the vector types of vec.h: a block of BR output channels x P vectors of pixels stays in
// registers while the loops over input channels and taps run: BR * P = 24 accumulators of 64 bytes
// in the 32 zmm registers of AVX-512 (8 x 3 for 8 or more output channels), 12 of 32 bytes in the 16
// ymm registers of AVX2 (4 x 3, leaving 3 for the pixel vectors and 1 for the broadcast weight).
// The compiler fuses the multiply-adds.
#include "direct_conv.h"

#include <algorithm>
#include <cstring>

#include "isa.h"
#include "vec.h"


DIN_ISA_BEGIN
namespace {

using simd::kLanes;
using simd::loadu;
using simd::storeu;
using simd::vec_t;

// Accumulators per register block and most output channels in one (vec.h); the rest of a packed
// block of direct_block(cout) channels is done by another pass over the same pixels.
using simd::kAcc;
using simd::kRows;

// One block: B output channels x P vectors of pixels starting at `in` (already offset by q0), with
// weights w[(ci * taps + t) * BP + o] (BP: the packed block, B <= BP).
template <typename T, int BP, int B, int P>
DIN_INLINE void forward_block(const T* in, int64_t cs, int64_t cin, const int64_t* shift,
                              int64_t taps, const T* w, const T* bias, T* out, int64_t ld) {
  using V = vec_t<T>;
  constexpr int n = kLanes<T>;
  V acc[B][P] = {};  // all set below; the initializer stops a false GCC 12 -Wmaybe-uninitialized
  // The unroll pragmas here and at the stores keep the accumulators in registers: rolled, GCC 12
  // turns these loops over acc into a memset / memcpy of a stack copy (see winograd.cpp's gemm).
#pragma GCC unroll 8
  for (int o = 0; o < B; ++o) {
    const V b = -V{} + (bias != nullptr ? bias[o] : T(0));
#pragma GCC unroll 24
    for (int p = 0; p < P; ++p) acc[o][p] = b;
  }
  for (int64_t ci = 0; ci < cin; ++ci) {
    const T* src = in + ci * cs;
    for (int64_t t = 0; t < taps; ++t) {
      const T* s = src + shift[t];
      V xv[P];
      for (int p = 0; p < P; ++p) xv[p] = loadu(s + p * n);
      for (int o = 0; o < B; ++o) {
        const V wv = -V{} + w[o];
        for (int p = 0; p < P; ++p) acc[o][p] = acc[o][p] + wv * xv[p];
      }
      w += BP;
    }
  }
#pragma GCC unroll 8
  for (int o = 0; o < B; ++o)
#pragma GCC unroll 24
    for (int p = 0; p < P; ++p) storeu(out + o * ld + p * n, acc[o][p]);
}

template <typename T, int B>
DIN_INLINE void forward_blocks(const T* in, int64_t cs, int64_t cin, const int64_t* shift,
                               int64_t taps, const T* packed, const T* bias, int64_t cout,
                               int64_t L, T* out, int64_t ld) {
  constexpr int BR = B < kRows ? B : kRows, P = kAcc / BR;
  constexpr int64_t step = P * kLanes<T>;
  // direct_step (the rounding of the callers' output rows) is a whole number of steps.
  static_assert(direct_step<T>(B) % step == 0, "direct_step is a multiple of the pixel step");
  for (int64_t blk = 0; blk * B < cout; ++blk) {
    const T* w = packed + blk * cin * taps * B;
    const T* b = bias != nullptr ? bias + blk * B : nullptr;
    for (int64_t q0 = 0; q0 < L; q0 += step) {
      // The channels of the packed block BR at a time, over the same pixels (still in L1).
      for (int o0 = 0; o0 < B; o0 += BR) {
        forward_block<T, B, BR, P>(in + q0, cs, cin, shift, taps, w + o0,
                                   b != nullptr ? b + o0 : nullptr,
                                   out + (blk * B + o0) * ld + q0, ld);
      }
    }
  }
}

template <typename T>
DIN_INLINE void forward_impl(const T* in, int64_t cs, int64_t cin, const int64_t* shift,
                             int64_t taps, const T* packed, const T* bias, int64_t cout, int64_t L,
                             T* out, int64_t ld) {
  switch (direct_block(cout)) {
    case 8: return forward_blocks<T, 8>(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
    case 4: return forward_blocks<T, 4>(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
    case 2: return forward_blocks<T, 2>(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
    default: return forward_blocks<T, 1>(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
  }
}

// Weight gradient block: B output channels (rows g[o]) x NT weights (input offsets off[t]), summed
// over q < L in vector lanes, then added to the lane partials. Rows past cout and weights past K
// repeat the last valid one and are not stored.
template <typename T, int B, int NT>
DIN_INLINE void weight_grad_block(const T* const* g, int nb, const T* in, const int64_t* off,
                                  int nt, int64_t K, int64_t L, T* part, int64_t o0, int64_t k0) {
  using V = vec_t<T>;
  constexpr int n = kLanes<T>;
  V acc[B][NT] = {};
  const T* src[NT];
  for (int t = 0; t < NT; ++t) src[t] = in + off[std::min(t, nt - 1)];
  for (int64_t q = 0; q < L; q += n) {
    V gv[B];
    for (int o = 0; o < B; ++o) gv[o] = loadu(g[o] + q);
    for (int t = 0; t < NT; ++t) {
      const V xv = loadu(src[t] + q);
      for (int o = 0; o < B; ++o) acc[o][t] = acc[o][t] + gv[o] * xv;
    }
  }
  // Each weight has 64 bytes of lane partials (direct_conv.h); narrower vectors use the first lanes.
  constexpr int64_t slot = 64 / sizeof(T);
  for (int o = 0; o < nb; ++o) {
    for (int t = 0; t < nt; ++t) {
      T* p = part + ((o0 + o) * K + k0 + t) * slot;
      storeu(p, loadu(p) + acc[o][t]);
    }
  }
}

template <typename T, int B>
DIN_INLINE void weight_grad_blocks(const T* g, int64_t ldg, int64_t cout, const T* in,
                                   const int64_t* off, int64_t K, int64_t L, T* part) {
  constexpr int NT = kAcc / B;
  for (int64_t o0 = 0; o0 < cout; o0 += B) {
    const int nb = static_cast<int>(std::min<int64_t>(B, cout - o0));
    const T* rows[B];
    for (int o = 0; o < B; ++o) rows[o] = g + (o0 + std::min(o, nb - 1)) * ldg;
    for (int64_t k0 = 0; k0 < K; k0 += NT) {
      const int nt = static_cast<int>(std::min<int64_t>(NT, K - k0));
      weight_grad_block<T, B, NT>(rows, nb, in, off + k0, nt, K, L, part, o0, k0);
    }
  }
}

template <typename T>
DIN_INLINE void weight_grad_impl(const T* g, int64_t ldg, int64_t cout, const T* in,
                                 const int64_t* off, int64_t K, int64_t L, T* part) {
  // AVX-512: 4 x 6, ten vector loads (four of them reused from L1 across the K loop) per 24
  // multiply-adds. AVX2: 2 x 6, eight loads per 12 (with 14 of the 16 registers live).
  constexpr int wide = kAcc >= 24 ? 4 : 2;
  if (cout >= wide) return weight_grad_blocks<T, wide>(g, ldg, cout, in, off, K, L, part);
  if (cout >= 2) return weight_grad_blocks<T, 2>(g, ldg, cout, in, off, K, L, part);
  weight_grad_blocks<T, 1>(g, ldg, cout, in, off, K, L, part);
}

template <typename T>
DIN_INLINE void reduce_impl(const T* part, int64_t count, T* gw) {
  constexpr int n = 64 / sizeof(T);  // the lane partials of each weight
  for (int64_t i = 0; i < count; ++i) {
    T s = 0;
    for (int l = 0; l < n; ++l) s += part[i * n + l];
    gw[i] = s;
  }
}

template <typename T>
void pack_impl(const T* w, int64_t cout, int64_t cin, int64_t taps, T* packed) {
  const int64_t B = direct_block(cout), rows = (cout + B - 1) / B * B;
  std::fill(packed, packed + rows * cin * taps, T(0));
  for (int64_t o = 0; o < cout; ++o) {
    T* dst = packed + (o / B) * cin * taps * B + o % B;
    const T* src = w + o * cin * taps;
    for (int64_t k = 0; k < cin * taps; ++k) dst[k * B] = src[k];
  }
}

}  // namespace

void direct_pack(const float* w, int64_t cout, int64_t cin, int64_t taps, float* packed) {
  pack_impl(w, cout, cin, taps, packed);
}
void direct_pack(const double* w, int64_t cout, int64_t cin, int64_t taps, double* packed) {
  pack_impl(w, cout, cin, taps, packed);
}

void direct_forward(const float* in, int64_t cs, int64_t cin, const int64_t* shift,
                    int64_t taps, const float* packed, const float* bias, int64_t cout,
                    int64_t L, float* out, int64_t ld) {
  forward_impl(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
}
void direct_forward(const double* in, int64_t cs, int64_t cin, const int64_t* shift,
                    int64_t taps, const double* packed, const double* bias,
                    int64_t cout, int64_t L, double* out, int64_t ld) {
  forward_impl(in, cs, cin, shift, taps, packed, bias, cout, L, out, ld);
}

void direct_weight_grad(const float* g, int64_t ldg, int64_t cout, const float* in,
                        const int64_t* off, int64_t K, int64_t L, float* part) {
  weight_grad_impl(g, ldg, cout, in, off, K, L, part);
}
void direct_weight_grad(const double* g, int64_t ldg, int64_t cout, const double* in,
                        const int64_t* off, int64_t K, int64_t L, double* part) {
  weight_grad_impl(g, ldg, cout, in, off, K, L, part);
}

void direct_reduce(const float* part, int64_t count, float* gw) { reduce_impl(part, count, gw); }
void direct_reduce(const double* part, int64_t count, double* gw) { reduce_impl(part, count, gw); }

DIN_ISA_END  // namespace din_ops::cpu::DIN_ISA
