// Host entry points of the din_ops CUDA kernels (csrc/cuda/*.cu). Plain C++: no ATen, no CUDA
// device code, so the kernels compile in seconds with nvcc and the g++-compiled glue
// (register_cuda.cpp) only needs the CUDA runtime header for cudaStream_t / cudaError_t.
//
// Conventions for every launcher:
// - tensors are contiguous NCHW, or, for the *_nhwc launchers, contiguous channels_last (the
//   glue makes them so): x of shape (N, C, H, W) is then (N, P, C) in memory, P = H * W; pointers
//   are device pointers;
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

// Channels last. The reductions run over pixel chunks and need a float64 workspace of
// nhwc_workspace_size(N, C, P) values (scratch, any content), which one launch uses at a time.
int64_t nhwc_workspace_size(int64_t N, int64_t C, int64_t P);
// Statistics of the N * C channels and, when y is not null, y = (x - mean) * rstd.
cudaError_t instance_norm_forward_nhwc(DType dtype, const void* x, void* y, double* mean,
                                       double* rstd, int64_t N, int64_t C, int64_t P, double eps,
                                       double* workspace, cudaStream_t stream);
cudaError_t instance_norm_apply_nhwc(DType dtype, const void* x, const double* mean,
                                     const double* rstd, void* y, int64_t N, int64_t C, int64_t P,
                                     cudaStream_t stream);
// As instance_norm_backward.
cudaError_t instance_norm_backward_nhwc(DType dtype, const void* g, bool g_is_acc, const void* x,
                                        const double* mean, const double* rstd, void* gx,
                                        int64_t N, int64_t C, int64_t P, double* workspace,
                                        cudaStream_t stream);
// out[n * C + c] = sum over the pixels of channel c of sample n (in double, stored in dtype).
cudaError_t channel_sums_nhwc(DType dtype, const void* x, void* out, int64_t N, int64_t C,
                              int64_t P, double* workspace, cudaStream_t stream);

// ---- dynamic_instance_norm_1x1.cu --------------------------------------------------------------
// W: (N, Co, C) contiguous, b: (N, Co) or null; flags are int32, one per sample.
// flag[n] = 1 when sample n folds its normalization into the weights: float or double data and
// every channel passes math::fold_channel_ok (|mean| * rstd <= math::fold_limit()).
cudaError_t dynamic_1x1_fold_flags(DType dtype, const double* mean, const double* rstd,
                                   int32_t* flag, int64_t N, int64_t C, cudaStream_t stream);
// For every sample: W' = W * rstd (per input channel) and b' = b - W' @ mean, so that
// W' @ x + b' = W @ xh + b.
cudaError_t dynamic_1x1_fold_weights(DType dtype, const void* weight, const void* bias,
                                     const double* mean, const double* rstd, void* wf, void* bf,
                                     int64_t N, int64_t Co, int64_t C, cudaStream_t stream);
// y[n] = W[n] @ xh[n] + b[n] (x normalized on load) for the samples with flag[n] == 0, or for all
// when flag is null; the other samples of y are not touched. y is (N, Co, P), or (N, P, Co) with
// x (N, P, C) when nhwc.
cudaError_t dynamic_1x1_forward_unfolded(DType dtype, const void* x, const void* weight,
                                         const void* bias, const double* mean, const double* rstd,
                                         const int32_t* flag, void* y, int64_t N, int64_t C,
                                         int64_t Co, int64_t P, bool nhwc, cudaStream_t stream);
// In place, for the samples with flag[n] == 1: gw[n] = (gw[n] - gb[n] mean[n]^T) * rstd[n] per
// input channel, turning gy @ x^T into gy @ xh^T; gb (N, Co) is sum_p gy.
cudaError_t dynamic_1x1_grad_weight_folded(DType dtype, void* gw, const void* gb,
                                           const double* mean, const double* rstd,
                                           const int32_t* flag, int64_t N, int64_t Co, int64_t C,
                                           cudaStream_t stream);
// gw[n] = gy[n] @ xh[n]^T (x normalized on load) for the samples with flag[n] == 0, or for all
// when flag is null. gy is (N, Co, P), or (N, P, Co) with x (N, P, C) when nhwc.
cudaError_t dynamic_1x1_grad_weight_unfolded(DType dtype, const void* gy, const void* x,
                                             const double* mean, const double* rstd,
                                             const int32_t* flag, void* gw, int64_t N, int64_t C,
                                             int64_t Co, int64_t P, bool nhwc,
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
// Channels last (workspace: nhwc_workspace_size): full-size gamma, beta and ggamma are in x's
// layout; per-plane ones are N * C values as above.
cudaError_t spatially_adaptive_forward_nhwc(DType dtype, const void* x, const void* gamma,
                                            bool gamma_full, const void* beta, bool beta_full,
                                            void* y, double* mean, double* rstd, int64_t N,
                                            int64_t C, int64_t P, double eps, double* workspace,
                                            cudaStream_t stream);
cudaError_t spatially_adaptive_backward_nhwc(DType dtype, const void* gy, const void* x,
                                             const void* gamma, bool gamma_full,
                                             const double* mean, const double* rstd, void* gx,
                                             void* ggamma, void* gbeta, int64_t N, int64_t C,
                                             int64_t P, double* workspace, cudaStream_t stream);

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
