// Winograd F(2x2, 3x3) convolution of a band in the padded-width layout of direct_conv.h, for 3 x 3
// kernels with stride 1 and dilation 1 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", CVPR 2016). Each 2 x 2 output tile takes 16 multiplies per (input, output) channel
// pair instead of 36: the 16 products of the transformed 4 x 4 input tile and kernel are 16
// independent (output x input channel) GEMMs over tiles, run by direct_forward with one tap.
//   U = G g G^T, V = B^T d B, Y = A^T (sum over input channels of U * V) A
//   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// The transforms only add and subtract (and halve, exactly, for U), so float32 results stay within a
// few units in the last place of the direct sum.
#pragma once

#include <cstdint>

namespace din_ops::cpu {

// Values of the transformed, packed weights of `cout` x `cin` 3 x 3 kernels.
int64_t winograd_weights_size(int64_t cout, int64_t cin);
// w[o, ci, 3, 3] (contiguous) -> the packed transformed weights.
void winograd_weights(const float* w, int64_t cout, int64_t cin, float* packed);
void winograd_weights(const double* w, int64_t cout, int64_t cin, double* packed);

// Scratch values needed by winograd_forward for these channel counts and output width.
int64_t winograd_work_size(int64_t cout, int64_t cin, int64_t Wo, int64_t value_size);

// out[o * ld + r * rs + c] = bias[o] + (3 x 3 correlation of the band with kernel o)[r, c] for the
// R output rows and Wo output columns, and nothing else written (so `out` may be the output planes
// themselves: rs = Wo, ld = the plane size); `in` is the band (channel stride cs, row width
// Wp >= Wo + 2, at least round_up(R, 2) + 2 rows per channel and 34 readable values after the last
// row). `work` holds winograd_work_size values; `bias` may be null.
void winograd_forward(const float* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R, int64_t Wo,
                      const float* packed, const float* bias, int64_t cout, float* out, int64_t ld,
                      int64_t rs, float* work);
void winograd_forward(const double* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R,
                      int64_t Wo, const double* packed, const double* bias, int64_t cout,
                      double* out, int64_t ld, int64_t rs, double* work);

// Weight gradient of one band: accumulates
//   part[(xi * cin + ci) * cop + o] += sum over the band's tiles of (B^T d B)[xi] * (A g A^T)[xi]
// (cop = cout rounded up to whole vectors) from the band `in` (as for winograd_forward) and the
// output gradient g in padded width (g[o * ldg + r * Wp + c], zero at columns Wo .. Wp - 1).
// `part` holds winograd_part_size values (zero it first); `work` as for the forward.
void winograd_weight_grad(const float* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R,
                          int64_t Wo, const float* g, int64_t ldg, int64_t cout, float* part,
                          float* work);
void winograd_weight_grad(const double* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R,
                          int64_t Wo, const double* g, int64_t ldg, int64_t cout, double* part,
                          double* work);
int64_t winograd_part_size(int64_t cout, int64_t cin, int64_t value_size);
// gw[o, ci, 3, 3] = G^T part[., ci, o] G.
void winograd_weight_grad_finish(const float* part, int64_t cout, int64_t cin, float* gw);
void winograd_weight_grad_finish(const double* part, int64_t cout, int64_t cin, double* gw);

}  // namespace din_ops::cpu
