// Register-blocked direct convolution on bands of zero-padded planes, used by the grouped / dense
// stride-1 dynamic convolution (dynamic_conv.cpp) instead of im2col + GEMM.
//
// Layout ("padded width"): a band holds `rows` rows of each input channel, zero-padded to a row
// width Wp, channel after channel (channel stride cs). Output pixel q = oh * Wp + ow is then computed
// for every ow < Wp, so that tap (i, j) of a kh x kw kernel with dilation (dh, dw) reads the input at
// the constant shift i * dh * Wp + j * dw from q and a block of consecutive q is one run of vector
// loads. The Wp - Wo columns past each output row are garbage the caller drops (a few % of the work).
//
// The kernels accumulate a block of output channels x pixels in registers (8 x 48 for float on
// AVX-512, 4 x 24 on AVX2, 8 x 12 on aarch64) and loop over input channels and taps; no column
// matrix is ever written.
#pragma once

#include <cstdint>

namespace din_ops::cpu {

// True when these kernels (and winograd.h's) run at speed at the chosen instruction-set level
// (isa.h): they keep their accumulators in registers (24 of 64 bytes at avx512, 12 of 32 bytes at
// avx2, 24 of 16 bytes in aarch64's 32 NEON registers). The x86-64 baseline's 16 xmm registers
// would spill them, and im2col + GEMM is then 30-50x faster, so the callers take that path
// instead. Defined in isa.cpp.
bool direct_kernels_fast();

// Output channels computed together for `cout` channels: 8, or the smallest power of two >= cout.
// Packed weights and output buffers have round_up(cout, direct_block(cout)) rows.
constexpr int64_t direct_block(int64_t cout) { return cout > 4 ? 8 : cout > 2 ? 4 : cout; }

// Pixels computed together at the avx512 level (24 accumulators of 64 bytes; the other levels' step
// divides it): direct_forward writes each output row up to round_up(L, direct_step<T>(cout)).
template <typename T>
constexpr int64_t direct_step(int64_t cout) {
  return 24 / direct_block(cout) * (64 / int64_t(sizeof(T)));
}

// Values read past q = L in the input band and written past L in each output row: allocate each
// output row with a stride >= L + direct_slack<T>() and the band with direct_slack<T>() +
// (kw - 1) * dw values after its last channel, zero-filled.
template <typename T>
constexpr int64_t direct_slack() {
  return 24 * 64 / sizeof(T);
}

// Weights w[o, ci, t] (cout x cin x taps, contiguous) packed for direct_forward:
// packed[(blk * cin + ci) * taps + t) * B + o % B] with blk = o / B, B = direct_block(cout); the rows
// past cout are zero.
void direct_pack(const float* w, int64_t cout, int64_t cin, int64_t taps, float* packed);
void direct_pack(const double* w, int64_t cout, int64_t cin, int64_t taps, double* packed);

// out[o * ld + q] = bias[o] + sum_{ci, t} w[o, ci, t] * in[ci * cs + q + shift[t]] for o < cout and
// q < L (and garbage up to the block edge). `bias` has round_up(cout, B) entries (or is null).
void direct_forward(const float* in, int64_t cs, int64_t cin, const int64_t* shift, int64_t taps,
                    const float* packed, const float* bias, int64_t cout, int64_t L, float* out,
                    int64_t ld);
void direct_forward(const double* in, int64_t cs, int64_t cin, const int64_t* shift, int64_t taps,
                    const double* packed, const double* bias, int64_t cout, int64_t L, double* out,
                    int64_t ld);

// Weight gradient, accumulated per lane: part[(o * K + k) * V + lane] += sum over q < L with
// q % V == lane of g[o * ldg + q] * in[off[k] + q], for o < cout and k < K, V = 64 / sizeof(T)
// (a level with 32-byte vectors sums q % (V / 2) == lane into the first V / 2 lanes).
// `off` (K entries) are the offsets ci * cs + shift[t] of the K = cin * taps weights. g must be
// zero at the garbage columns and up to round_up(L, V). Finish with direct_reduce.
void direct_weight_grad(const float* g, int64_t ldg, int64_t cout, const float* in,
                        const int64_t* off, int64_t K, int64_t L, float* part);
void direct_weight_grad(const double* g, int64_t ldg, int64_t cout, const double* in,
                        const int64_t* off, int64_t K, int64_t L, double* part);

// Size of `part` for direct_weight_grad (in values).
template <typename T>
constexpr int64_t direct_part_size(int64_t cout, int64_t K) {
  return cout * K * (64 / int64_t(sizeof(T)));
}

// gw[i] = sum of the V lanes of part[i * V ...] for i < count.
void direct_reduce(const float* part, int64_t count, float* gw);
void direct_reduce(const double* part, int64_t count, double* gw);

}  // namespace din_ops::cpu
