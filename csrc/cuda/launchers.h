// Host entry points of the din_ops CUDA kernels (csrc/cuda/*.cu). Plain C++: no ATen, no CUDA
// device code, so the kernels compile in seconds with nvcc and the g++-compiled glue
// (register_cuda.cpp) only needs the CUDA runtime header for cudaStream_t / cudaError_t.
//
// Conventions for every launcher:
// - tensors are contiguous NCHW (the glue makes them so), pointers are device pointers;
// - statistics are float64 (N, C): mean and rstd;
// - work is enqueued on `stream`; the return value is the launch error (cudaSuccess otherwise);
// - indexing is 64-bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace din_ops::gpu {

enum class DType : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

// ---- instance_norm.cu ------------------------------------------------------------------------
// Statistics of `planes` planes of P values and, when y is not null, y = (x - mean) * rstd.
cudaError_t instance_norm_forward(DType dtype, const void* x, void* y, double* mean, double* rstd,
                                  int64_t planes, int64_t P, double eps, cudaStream_t stream);
// y = (x - mean) * rstd with given statistics (recomputes xh for the 1x1 backward).
cudaError_t instance_norm_apply(DType dtype, const void* x, const double* mean, const double* rstd,
                                void* y, int64_t planes, int64_t P, cudaStream_t stream);
// gx = rstd * (g - mean_p(g) - xh * mean_p(g * xh)). `g` has x's dtype, or, when g_is_acc, the
// accumulation type (float for float/half/bfloat16, double for double).
cudaError_t instance_norm_backward(DType dtype, const void* g, bool g_is_acc, const void* x,
                                   const double* mean, const double* rstd, void* gx,
                                   int64_t planes, int64_t P, cudaStream_t stream);
// out[plane] = sum of the plane's P values (accumulated in double, stored in dtype).
cudaError_t plane_sums(DType dtype, const void* x, void* out, int64_t planes, int64_t P,
                       cudaStream_t stream);

// ---- spatially_adaptive_instance_norm.cu -----------------------------------------------------
// gamma and beta are full size (like x) when *_full, else one value per plane; beta may be null.
cudaError_t spatially_adaptive_forward(DType dtype, const void* x, const void* gamma,
                                       bool gamma_full, const void* beta, bool beta_full, void* y,
                                       double* mean, double* rstd, int64_t planes, int64_t P,
                                       double eps, cudaStream_t stream);
// ggamma: full size when gamma_full, else one value per plane (sum of gy * xh). gbeta (one value
// per plane, sum of gy) may be null.
cudaError_t spatially_adaptive_backward(DType dtype, const void* gy, const void* x,
                                        const void* gamma, bool gamma_full, const double* mean,
                                        const double* rstd, void* gx, void* ggamma, void* gbeta,
                                        int64_t planes, int64_t P, cudaStream_t stream);

// ---- dynamic_conv.cu -------------------------------------------------------------------------
struct ConvGeometry {
  int64_t N, C, H, W, Co, groups, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo;
};

// Per-(n, c) normalization coefficients (hi, lo, rstd in the accumulation type, 3 * N * C values
// in `coeffs`, laid out [hi..., lo..., rstd...]) from the float64 statistics.
cudaError_t norm_coeffs(DType dtype, const double* mean, const double* rstd, void* coeffs,
                        int64_t count, cudaStream_t stream);
// y = conv2d(xh, w[n], b[n]) with xh = ((x - hi) - lo) * rstd inside the input, 0 outside.
cudaError_t dynamic_conv_forward(DType dtype, const ConvGeometry& g, const void* x,
                                 const void* weight, const void* bias, const void* coeffs, void* y,
                                 cudaStream_t stream);
// gw = correlation of gy with xh (the conv2d weight gradient), per sample.
cudaError_t dynamic_conv_grad_weight(DType dtype, const ConvGeometry& g, const void* gy,
                                     const void* x, const void* coeffs, void* gw,
                                     cudaStream_t stream);
// gxh = conv_transpose2d(gy, w[n]) in the accumulation type (gather form, no atomics).
cudaError_t dynamic_conv_grad_input(DType dtype, const ConvGeometry& g, const void* gy,
                                    const void* weight, void* gxh_acc, cudaStream_t stream);

// ---- deformable_conv.cu ----------------------------------------------------------------------
// The deformable convolution (offset groups G = offset_groups; offset (N, 2 * G * kh * kw, Ho, Wo)
// and mask (N, G * kh * kw, Ho, Wo) as the CPU operator). column_budget: the most column elements
// one step of the kernels holds (0: the default, 2^23); smaller values cut the work into more steps.
struct DeformGeometry {
  int64_t N, C, H, W, Co, groups, offset_groups, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo;
  int64_t column_budget;
};

// Bytes of device workspace the forward (backward = false) or backward launcher needs.
int64_t deformable_workspace_bytes(DType dtype, const DeformGeometry& g, bool backward);
// y = deformable conv of xh (x normalized with the given float64 statistics; pass mean 0 and
// rstd 1 for the plain convolution). bias and mask may be null.
cudaError_t deformable_conv_forward(DType dtype, const DeformGeometry& g, const void* x,
                                    const void* weight, const void* bias, const void* offset,
                                    const void* mask, const double* mean, const double* rstd,
                                    void* y, void* workspace, cudaStream_t stream);
// All gradients: gx (like x), gw (like weight), gb (N, Co), goffset (like offset) and gmask (like
// mask; null when mask is null). normalize selects the instance-norm backward for gx.
cudaError_t deformable_conv_backward(DType dtype, const DeformGeometry& g, const void* grad_y,
                                     const void* x, const void* weight, const void* offset,
                                     const void* mask, const double* mean, const double* rstd,
                                     bool normalize, void* gx, void* gw, void* gb, void* goffset,
                                     void* gmask, void* workspace, cudaStream_t stream);

}  // namespace din_ops::gpu
