// Argument checks shared by every backend's entry points. The Python API validates first with richer
// messages; these make direct torch.ops.din_ops.* calls fail cleanly too (ValueError / TypeError).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "din_ops/math.h"

namespace din_ops {

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()),
                   "din_ops: expected ", name,
                   " to be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
                   t.scalar_type());
}

inline void check_same_dtype_device(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "din_ops: expected ", name,
                   " to have the dtype of x (", x.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), "din_ops: expected ", name,
                    " on the device of x (", x.device(), "), got ", t.device());
}

inline void check_input(const at::Tensor& x) {
  check_float_tensor(x, "x");
  TORCH_CHECK_VALUE(x.dim() == 4, "din_ops: expected x of shape (N, C, H, W), got ", x.sizes());
  TORCH_CHECK_VALUE(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0,
                    "din_ops: expected x with C, H and W > 0 (an empty batch N = 0 is fine), got ",
                    x.sizes());
}

// Whether the leading (batch) dimension of a per-sample operand fits x: N, or 1 for one operand
// broadcast over the batch (the kernels then read it with a batch stride of 0, never copying it).
// `broadcast` is false for backends whose kernels read every operand with batch N.
inline bool batch_fits(const at::Tensor& t, const at::Tensor& x, bool broadcast) {
  return t.dim() > 0 && (t.size(0) == x.size(0) || (broadcast && t.size(0) == 1));
}

// Elements between consecutive samples of a per-sample operand: 0 when it is broadcast (batch 1).
inline int64_t batch_stride(const at::Tensor& t) {
  return t.size(0) == 1 ? 0 : t.numel() / std::max<int64_t>(t.size(0), 1);
}

// weight (N, Co, C) or (1, Co, C), bias (N, Co), (1, Co) or undefined.
inline void check_weight_1x1(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, bool broadcast = false) {
  check_input(x);
  check_same_dtype_device(weight, "weight", x);
  TORCH_CHECK_VALUE(weight.dim() == 3 && batch_fits(weight, x, broadcast) &&
                        weight.size(2) == x.size(1),
                    "din_ops: expected weight of shape (N, Co, C) = (", x.size(0), ", Co, ",
                    x.size(1), ") or (1, Co, C) for one weight applied to every sample, got ",
                    weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_device(*bias, "bias", x);
    TORCH_CHECK_VALUE(bias->dim() == 2 && batch_fits(*bias, x, broadcast) &&
                          bias->size(1) == weight.size(1),
                      "din_ops: expected bias of shape (N, Co) = (", x.size(0), ", ",
                      weight.size(1), ") or (1, Co) for one bias applied to every sample, got ",
                      bias->sizes());
  }
}

inline void check_stats(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd) {
  for (const auto* t : {&mean, &rstd}) {
    TORCH_CHECK_VALUE(t->device() == x.device(),
                      "din_ops: expected the statistics on the device of x (", x.device(),
                      "), got ", t->device());
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == x.size(0) && t->size(1) == x.size(1),
                      "din_ops: expected statistics of shape (N, C) = (", x.size(0), ", ",
                      x.size(1), "), got ", t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == at::kDouble,
                     "din_ops: expected float64 statistics, got ", t->scalar_type());
  }
}

inline void check_grad(const at::Tensor& grad, const at::Tensor& x, int64_t channels) {
  check_same_dtype_device(grad, "grad_y", x);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(1) == channels &&
                        grad.size(2) == x.size(2) && grad.size(3) == x.size(3),
                    "din_ops: expected grad_y of shape (", x.size(0), ", ", channels, ", ",
                    x.size(2), ", ", x.size(3), "), got ", grad.sizes());
}

// gamma / beta of spatially_adaptive_instance_norm: (N, C, H, W) like x, or (N, C, 1, 1); either
// with batch 1 (broadcast over the samples of x).
inline void check_modulation(const at::Tensor& x, const at::Tensor& t, const char* name,
                             bool broadcast = false) {
  check_same_dtype_device(t, name, x);
  const bool fits = t.dim() == 4 && batch_fits(t, x, broadcast) && t.size(1) == x.size(1) &&
                   ((t.size(2) == 1 && t.size(3) == 1) ||
                    (t.size(2) == x.size(2) && t.size(3) == x.size(3)));
  TORCH_CHECK_VALUE(fits, "din_ops: expected ", name, " of shape (N, C, H, W) = ", x.sizes(),
                    " or (N, C, 1, 1) = [", x.size(0), ", ", x.size(1),
                    ", 1, 1], or either with batch 1 for one value applied to every sample, got ",
                    t.sizes());
}

// The style features of adain: (N, C, Hs, Ws) with x's C (any spatial size), or batch 1 for one
// style applied to every sample.
inline void check_style(const at::Tensor& x, const at::Tensor& style) {
  check_same_dtype_device(style, "style", x);
  TORCH_CHECK_VALUE(style.dim() == 4 && batch_fits(style, x, /*broadcast=*/true) &&
                        style.size(1) == x.size(1) && style.size(2) > 0 && style.size(3) > 0,
                    "din_ops: expected style features of shape (N, C, Hs, Ws) with N = ", x.size(0),
                    " (or 1 for one style applied to every sample; expand the style to N or pass "
                    "batch 1), C = ", x.size(1), " and Hs, Ws > 0, got ", style.sizes());
}

inline void check_eps(double eps) {
  TORCH_CHECK_VALUE(eps >= 0.0, "din_ops: expected eps >= 0, got ", eps);
}

// The eps the kernels add to the biased variance of x's planes (math::kernel_eps; called before x
// is checked: another rank, which the checks then refuse, keeps eps).
inline double kernel_eps(double eps, bool unbiased, const at::Tensor& x) {
  return x.dim() == 4 ? math::kernel_eps(eps, unbiased, x.size(2) * x.size(3)) : eps;
}

// Arguments of dynamic_conv / dynamic_conv_backward (every backend): weight (N, Co, C / groups,
// kh, kw), bias (N, Co) or undefined (either with batch 1 when `broadcast`: one operand for every
// sample), stride and dilation of 2 values, padding (top, bottom, left, right), and a kernel that
// fits the padded input.
inline void check_conv_args(const at::Tensor& x, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            bool broadcast = false) {
  check_input(x);
  check_same_dtype_device(w, "weight", x);
  TORCH_CHECK_VALUE(stride.size() == 2 && dilation.size() == 2 && padding.size() == 4,
                    "din_ops: expected stride and dilation of 2 values and padding of 4 "
                    "(top, bottom, left, right)");
  TORCH_CHECK_VALUE(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0,
                    "din_ops: expected positive stride and dilation, got ", stride, " and ",
                    dilation);
  for (auto p : padding) TORCH_CHECK_VALUE(p >= 0, "din_ops: expected padding >= 0, got ", padding);
  TORCH_CHECK_VALUE(groups > 0 && x.size(1) % groups == 0,
                    "din_ops: expected groups to divide C = ", x.size(1), ", got groups = ", groups);
  TORCH_CHECK_VALUE(w.dim() == 5 && batch_fits(w, x, broadcast) &&
                        w.size(2) == x.size(1) / groups && w.size(1) % groups == 0 &&
                        w.size(3) > 0 && w.size(4) > 0,
                    "din_ops: expected weight of shape (N, Co, C / groups, kh, kw) with N = ",
                    x.size(0), " (or 1 for one weight applied to every sample), C / groups = ",
                    x.size(1) / groups, " and Co divisible by groups, got ", w.sizes());
  if (b.has_value() && b->defined()) {
    check_same_dtype_device(*b, "bias", x);
    TORCH_CHECK_VALUE(b->dim() == 2 && batch_fits(*b, x, broadcast) && b->size(1) == w.size(1),
                      "din_ops: expected bias of shape (N, Co) = (", x.size(0), ", ", w.size(1),
                      ") or (1, Co) for one bias applied to every sample, got ", b->sizes());
  }
  // Bounded so that the size arithmetic below cannot overflow int64_t.
  for (auto v : {stride[0], stride[1], dilation[0], dilation[1], padding[0], padding[1],
                 padding[2], padding[3]}) {
    TORCH_CHECK_VALUE(v < (int64_t(1) << 31), "din_ops: expected stride, padding and dilation "
                      "below 2^31, got stride ", stride, ", padding ", padding, ", dilation ",
                      dilation);
  }
  const int64_t Ho = math::conv_out_size(x.size(2), padding[0], padding[1], w.size(3), stride[0],
                                         dilation[0]);
  const int64_t Wo = math::conv_out_size(x.size(3), padding[2], padding[3], w.size(4), stride[1],
                                         dilation[1]);
  TORCH_CHECK_VALUE(Ho > 0 && Wo > 0, "din_ops: the kernel (", w.size(3), ", ", w.size(4),
                    ") with dilation ", dilation, " is larger than the padded input (",
                    x.size(2) + padding[0] + padding[1], ", ", x.size(3) + padding[2] + padding[3],
                    ")");
}

// grad_y of a convolution backward: dtype and device of x, shape (N, Co, Ho, Wo).
inline void check_grad_y(const at::Tensor& grad_y, const at::Tensor& x, int64_t N, int64_t Co,
                         int64_t Ho, int64_t Wo) {
  check_same_dtype_device(grad_y, "grad_y", x);
  TORCH_CHECK_VALUE(grad_y.dim() == 4 && grad_y.size(0) == N && grad_y.size(1) == Co &&
                        grad_y.size(2) == Ho && grad_y.size(3) == Wo,
                    "din_ops: expected grad_y of shape (", N, ", ", Co, ", ", Ho, ", ", Wo,
                    "), got ", grad_y.sizes());
}

}  // namespace din_ops

namespace din_ops {

// offset (N, 2 * G * kk, Ho, Wo) and mask (N, G * kk, Ho, Wo) or undefined, of the deformable
// convolution (torchvision.ops.deform_conv2d layout; kk = kh * kw taps, G offset groups).
inline void check_deformable_offset_mask(const at::Tensor& x, const at::Tensor& offset,
                                         const c10::optional<at::Tensor>& mask, int64_t G,
                                         int64_t kk, int64_t Ho, int64_t Wo) {
  check_same_dtype_device(offset, "offset", x);
  TORCH_CHECK_VALUE(offset.dim() == 4 && offset.size(0) == x.size(0) &&
                        offset.size(1) == 2 * G * kk && offset.size(2) == Ho &&
                        offset.size(3) == Wo,
                    "din_ops: expected offset of shape (N, 2 * offset_groups * kh * kw, Ho, Wo) = (",
                    x.size(0), ", ", 2 * G * kk, ", ", Ho, ", ", Wo, "), got ", offset.sizes());
  if (mask.has_value() && mask->defined()) {
    check_same_dtype_device(*mask, "mask", x);
    TORCH_CHECK_VALUE(mask->dim() == 4 && mask->size(0) == x.size(0) && mask->size(1) == G * kk &&
                          mask->size(2) == Ho && mask->size(3) == Wo,
                      "din_ops: expected mask of shape (N, offset_groups * kh * kw, Ho, Wo) = (",
                      x.size(0), ", ", G * kk, ", ", Ho, ", ", Wo, "), got ", mask->sizes());
  }
}

}  // namespace din_ops
