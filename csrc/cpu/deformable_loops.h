// Inner loops of the deformable convolution (deformable_conv.cpp) on the CPU: the bilinear
// interpolation of sample points vectorized over channels into (and, in backward, the gradients out
// of) channels-last column tiles, and the gather of the chunks' channels-last x-gradients. Float
// and double (the accumulation types) only. deformable_loops.cpp is compiled once per
// instruction-set level and the level is chosen at run time (isa.h), like loops.cpp, so no -march
// is needed.
//
// Channels are the vector lanes: a point's four corners are runs of Cs contiguous values in the
// normalized channels-last sample (rows of stride `xs`, one row per input pixel). Sums over the
// channels (the offset and mask gradients) go to a fixed number of lanes that are added in a fixed
// order, so results do not depend on the instruction set chosen beyond the rounding of fused
// multiply-adds.
#pragma once

#include <cstdint>

#include "din_ops/bilinear.h"

namespace din_ops::cpu {

// The column tiles are tap-major: the value of channel cc (of a run of Cs channels) at tap t and
// tile position l lives at col[l * ldl + t * ldt + cc * cs]. cs = 1 (channels-last, vectorized)
// except for one channel per convolution group (depthwise), where channels are whole column
// matrices apart. The sample points are pts[t * Lt + l] for t < KK, l < Lt.

// Columns of a run of Cs channels:
//   col[l * ldl + t * ldt + cc * cs] = sum_k p.weight[k] * xg[p.index[k] * xs + cc],
//   p = pts[t * Lt + l] (weights in the order of bilinear::combine).
void deform_columns(const float* xg, int64_t xs, const bilinear::Corners<float>* pts, int64_t KK,
                    int64_t Lt, int64_t Cs, float* col, int64_t ldl, int64_t ldt, int64_t cs);
void deform_columns(const double* xg, int64_t xs, const bilinear::Corners<double>* pts, int64_t KK,
                    int64_t Lt, int64_t Cs, double* col, int64_t ldl, int64_t ldt, int64_t cs);

// Backward of a run of Cs channels for the points e = t * Lt + l with mask values mv[e], given the
// column gradient gcol (laid out like col), with S(v, p) the bilinear sample of p:
//   col[...]       = mv[e] * S(xg[cc], p)                  (the columns, for the weight gradient)
//   gmk[e]        += sum_cc gcol[...] * S(xg[cc], p)
//   goy[e], gox[e] += mv[e] * sum_cc gcol[...] * dS/dy, dS/dx
//   gxg[p.index[k] * xs + cc] += mv[e] * p.weight[k] * gcol[...]   (points in order t, l)
// gmk, goy and gox are added to, so that runs of one offset group sum into them.
void deform_points_backward(const float* xg, float* gxg, int64_t xs,
                            const bilinear::Corners<float>* pts, const float* mv, int64_t KK,
                            int64_t Lt, int64_t Cs, const float* gcol, float* col, int64_t ldl,
                            int64_t ldt, int64_t cs, float* gmk, float* goy, float* gox);
void deform_points_backward(const double* xg, double* gxg, int64_t xs,
                            const bilinear::Corners<double>* pts, const double* mv, int64_t KK,
                            int64_t Lt, int64_t Cs, const double* gcol, double* col, int64_t ldl,
                            int64_t ldt, int64_t cs, double* gmk, double* goy, double* gox);

// Channels [c0, c0 + cb) of `parts` channels-last planes (P x C each), added in part order, into
// channel-major rows: out[cc * P + i] = sum_k parts[k][i * C + c0 + cc].
void gather_channels(const float* const* parts, int64_t nparts, int64_t P, int64_t C, int64_t c0,
                     int64_t cb, float* out);
void gather_channels(const double* const* parts, int64_t nparts, int64_t P, int64_t C, int64_t c0,
                     int64_t cb, double* out);

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols (in register tiles).
void transpose_matrix(const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst,
                      int64_t ds);
void transpose_matrix(const double* src, int64_t ss, int64_t rows, int64_t cols, double* dst,
                      int64_t ds);

}  // namespace din_ops::cpu
