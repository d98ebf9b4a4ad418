// CUDA implementations of the din_ops operators: argument checks (csrc/checks.h), device guard,
// memory layout, allocation, and calls into the kernels of csrc/cuda/*.cu on the current stream.
// Compiled by the host compiler only in CUDA builds (setup.py); the kernels themselves are in light
// .cu files behind plain launchers (launchers.h), so this file needs the ATen/c10 headers and the
// CUDA runtime header, but no CUDA device code.
//
// Layouts: the kernels work on contiguous NCHW tensors. A channels_last x (and any other strided
// input) is copied to NCHW on entry and the result copied back to channels_last: one extra read
// and write of x and of the output (documented cost; channels_last-native kernels are future work).
//
// DIN 1x1: the instance-norm kernel writes xh, then cuBLAS (through at::bmm / at::baddbmm) runs
// the per-sample GEMM with the bias as its beta = 1 epilogue; backward recomputes xh from the
// saved statistics, takes gW = gy xh^T and W^T gy from cuBLAS, gb from a plane-sum kernel, and
// applies the instance-norm backward kernel to W^T gy.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "launchers.h"

namespace din_ops::gpu {
namespace {

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::Float;
    case at::kDouble:
      return DType::Double;
    case at::kHalf:
      return DType::Half;
    case at::kBFloat16:
      return DType::BFloat16;
    default:
      TORCH_CHECK_TYPE(false, "din_ops: unsupported dtype ", t.scalar_type());
  }
}

// The accumulation dtype of the kernels for data of t's dtype.
at::ScalarType acc_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "din_ops: CUDA kernel launch for ", what, " failed: ",
              cudaGetErrorString(err));
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

bool is_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// An NCHW result returned in the layout the CPU backend would use for this x.
at::Tensor in_layout_of(const at::Tensor& t, bool channels_last) {
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
}

void check_on_cuda(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.is_cuda(), "din_ops: expected x on a CUDA device, got ", x.device());
}

// The checks of a backward after those of its forward's arguments: x on a CUDA device, grad_y of
// shape (N, grad_channels, H, W) with x's dtype and device, (N, C) float64 statistics on x's device.
void check_backward_on_cuda(const at::Tensor& grad_y, const at::Tensor& x, int64_t grad_channels,
                            const at::Tensor& mean, const at::Tensor& rstd) {
  check_on_cuda(x);
  check_grad(grad_y, x, grad_channels);
  check_stats(x, mean, rstd);
  check_stats_device(x, mean, rstd);
}

std::tuple<at::Tensor, at::Tensor> empty_stats(const at::Tensor& x) {
  const auto opts = x.options().dtype(at::kDouble);
  return {at::empty({x.size(0), x.size(1)}, opts), at::empty({x.size(0), x.size(1)}, opts)};
}

// ---- instance_norm ---------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_cuda(const at::Tensor& x_in,
                                                                  double eps) {
  check_input(x_in);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {in_layout_of(y, cl), mean, rstd};
  const int64_t P = x.size(2) * x.size(3);
  check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), y.mutable_data_ptr(),
                                     mean.mutable_data_ptr<double>(),
                                     rstd.mutable_data_ptr<double>(), x.size(0) * x.size(1), P,
                                     eps, stream()),
               "instance_norm");
  return {in_layout_of(y, cl), mean, rstd};
}

at::Tensor instance_norm_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in,
                                       const at::Tensor& mean, const at::Tensor& rstd) {
  check_input(x_in);
  check_backward_on_cuda(grad_y, x_in, x_in.size(1), mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), gy = grad_y.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return in_layout_of(gx, cl);
  check_launch(instance_norm_backward(dtype_of(x), gy.const_data_ptr(), false, x.const_data_ptr(),
                                      m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                                      gx.mutable_data_ptr(), x.size(0) * x.size(1),
                                      x.size(2) * x.size(3), stream()),
               "instance_norm_backward");
  return in_layout_of(gx, cl);
}

// ---- dynamic_instance_norm_1x1 ---------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_cuda(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps) {
  check_weight_1x1(x_in, weight, bias);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t Co = weight.size(1);
  auto [mean, rstd] = empty_stats(x);
  if (N == 0) {
    return {in_layout_of(at::empty({N, Co, H, W}, x.options()), cl), mean, rstd};
  }
  auto xh = at::empty_like(x, at::MemoryFormat::Contiguous);
  check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), xh.mutable_data_ptr(),
                                     mean.mutable_data_ptr<double>(),
                                     rstd.mutable_data_ptr<double>(), N * C, P, eps, stream()),
               "dynamic_instance_norm_1x1 (statistics)");
  const at::Tensor xh3 = xh.view({N, C, P});
  const bool has_bias = bias.has_value() && bias->defined();
  // y[n] = W[n] @ xh[n] (+ b[n] as the GEMM's beta = 1 input, a stride-0 view over the pixels).
  at::Tensor y3 = has_bias ? at::baddbmm(bias->unsqueeze(2).expand({N, Co, P}), weight, xh3)
                           : at::bmm(weight, xh3);
  return {in_layout_of(y3.view({N, Co, H, W}), cl), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& mean, const at::Tensor& rstd) {
  check_weight_1x1(x_in, weight, c10::nullopt);
  check_backward_on_cuda(grad_y, x_in, weight.size(1), mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), gy = grad_y.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), Co = weight.size(1);
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gb = at::empty({N, Co}, x.options());
  if (N == 0) return {in_layout_of(gx, cl), at::empty({N, Co, C}, x.options()), gb};
  const DType dt = dtype_of(x);
  auto xh = at::empty_like(x, at::MemoryFormat::Contiguous);
  check_launch(instance_norm_apply(dt, x.const_data_ptr(), m.const_data_ptr<double>(),
                                   r.const_data_ptr<double>(), xh.mutable_data_ptr(), N * C, P,
                                   stream()),
               "dynamic_instance_norm_1x1_backward (normalize)");
  const at::Tensor gy3 = gy.view({N, Co, P}), xh3 = xh.view({N, C, P});
  at::Tensor gw = at::bmm(gy3, xh3.transpose(1, 2));                       // (N, Co, C)
  const at::Tensor gxh = at::bmm(weight.transpose(1, 2), gy3).contiguous();  // (N, C, P)
  check_launch(plane_sums(dt, gy.const_data_ptr(), gb.mutable_data_ptr(), N * Co, P, stream()),
               "dynamic_instance_norm_1x1_backward (bias gradient)");
  check_launch(instance_norm_backward(dt, gxh.const_data_ptr(), false, x.const_data_ptr(),
                                      m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                                      gx.mutable_data_ptr(), N * C, P, stream()),
               "dynamic_instance_norm_1x1_backward (normalization)");
  return {in_layout_of(gx, cl), gw, gb};
}

// ---- dynamic_conv ----------------------------------------------------------------------------

ConvGeometry geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  ConvGeometry g{};
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.Co = w.size(1), g.groups = groups, g.kh = w.size(3), g.kw = w.size(4);
  g.sh = stride[0], g.sw = stride[1], g.pt = padding[0], g.pl = padding[2];
  g.dh = dilation[0], g.dw = dilation[1];
  g.Ho = math::conv_out_size(g.H, padding[0], padding[1], g.kh, g.sh, g.dh);
  g.Wo = math::conv_out_size(g.W, padding[2], padding[3], g.kw, g.sw, g.dw);
  return g;
}

// hi, lo, rstd per (n, c) in the accumulation type, from the float64 statistics.
at::Tensor coefficients(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd) {
  const int64_t count = x.size(0) * x.size(1);
  auto q = at::empty({3 * count}, x.options().dtype(acc_dtype(x)));
  check_launch(norm_coeffs(dtype_of(x), mean.const_data_ptr<double>(),
                           rstd.const_data_ptr<double>(), q.mutable_data_ptr(), count, stream()),
               "dynamic_conv (coefficients)");
  return q;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_conv_cuda(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    bool normalize, double eps) {
  check_conv_args(x_in, weight, bias, stride, padding, dilation, groups);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  const ConvGeometry g = geometry(x, w, stride, padding, dilation, groups);
  auto y = at::empty({g.N, g.Co, g.Ho, g.Wo}, x.options());
  auto [mean, rstd] = empty_stats(x);
  if (g.N == 0) return {in_layout_of(y, cl), mean, rstd};
  const DType dt = dtype_of(x);
  if (normalize) {
    check_launch(instance_norm_forward(dt, x.const_data_ptr(), nullptr,
                                       mean.mutable_data_ptr<double>(),
                                       rstd.mutable_data_ptr<double>(), g.N * g.C, g.H * g.W, eps,
                                       stream()),
                 "dynamic_conv (statistics)");
  } else {
    mean.zero_();
    rstd.fill_(1.0);
  }
  const at::Tensor q = coefficients(x, mean, rstd);
  check_launch(dynamic_conv_forward(dt, g, x.const_data_ptr(), w.const_data_ptr(),
                                    has_bias ? b.const_data_ptr() : nullptr, q.const_data_ptr(),
                                    y.mutable_data_ptr(), stream()),
               "dynamic_conv");
  return {in_layout_of(y, cl), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_conv_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& mean, const at::Tensor& rstd, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool normalize) {
  check_conv_args(x_in, weight, c10::nullopt, stride, padding, dilation, groups);
  check_on_cuda(x_in);
  check_stats(x_in, mean, rstd);
  check_stats_device(x_in, mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), w = weight.contiguous();
  const ConvGeometry g = geometry(x, w, stride, padding, dilation, groups);
  check_grad_y(grad_y, x, g.N, g.Co, g.Ho, g.Wo);
  const at::Tensor gy = grad_y.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gw = at::empty(w.sizes(), x.options());
  auto gb = at::empty({g.N, g.Co}, x.options());
  if (g.N == 0) return {in_layout_of(gx, cl), gw, gb};
  const DType dt = dtype_of(x);
  const at::Tensor q = coefficients(x, m, r);
  check_launch(plane_sums(dt, gy.const_data_ptr(), gb.mutable_data_ptr(), g.N * g.Co,
                          g.Ho * g.Wo, stream()),
               "dynamic_conv_backward (bias gradient)");
  check_launch(dynamic_conv_grad_weight(dt, g, gy.const_data_ptr(), x.const_data_ptr(),
                                        q.const_data_ptr(), gw.mutable_data_ptr(), stream()),
               "dynamic_conv_backward (weight gradient)");
  auto gxh = at::empty(x.sizes(), x.options().dtype(acc_dtype(x)));
  check_launch(dynamic_conv_grad_input(dt, g, gy.const_data_ptr(), w.const_data_ptr(),
                                       gxh.mutable_data_ptr(), stream()),
               "dynamic_conv_backward (input gradient)");
  if (normalize) {
    check_launch(instance_norm_backward(dt, gxh.const_data_ptr(), true, x.const_data_ptr(),
                                        m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                                        gx.mutable_data_ptr(), g.N * g.C, g.H * g.W, stream()),
                 "dynamic_conv_backward (normalization)");
  } else {
    gx.copy_(gxh);
  }
  return {in_layout_of(gx, cl), gw, gb};
}

// ---- spatially_adaptive_instance_norm --------------------------------------------------------

bool is_full(const at::Tensor& t, const at::Tensor& x) {
  return t.size(2) == x.size(2) && t.size(3) == x.size(3);
}

// gamma or beta for the kernels: full size as contiguous NCHW, or N * C contiguous values.
at::Tensor prepare(const at::Tensor& t, const at::Tensor& x) {
  return is_full(t, x) ? t.contiguous() : t.reshape({x.size(0) * x.size(1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_cuda(
    const at::Tensor& x_in, const at::Tensor& gamma_in, const c10::optional<at::Tensor>& beta_in,
    double eps) {
  check_input(x_in);
  check_on_cuda(x_in);
  const bool has_beta = beta_in.has_value() && beta_in->defined();
  check_modulation(x_in, gamma_in, "gamma");
  if (has_beta) check_modulation(x_in, *beta_in, "beta");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {in_layout_of(y, cl), mean, rstd};
  const at::Tensor gamma = prepare(gamma_in, x);
  const at::Tensor beta = has_beta ? prepare(*beta_in, x) : at::Tensor();
  check_launch(spatially_adaptive_forward(
                   dtype_of(x), x.const_data_ptr(), gamma.const_data_ptr(), is_full(gamma_in, x),
                   has_beta ? beta.const_data_ptr() : nullptr, has_beta && is_full(*beta_in, x),
                   y.mutable_data_ptr(), mean.mutable_data_ptr<double>(),
                   rstd.mutable_data_ptr<double>(), x.size(0) * x.size(1), x.size(2) * x.size(3),
                   eps, stream()),
               "spatially_adaptive_instance_norm");
  return {in_layout_of(y, cl), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& gamma_in,
    const at::Tensor& mean, const at::Tensor& rstd, bool beta_defined) {
  check_input(x_in);
  check_on_cuda(x_in);
  check_modulation(x_in, gamma_in, "gamma");
  check_grad(grad_y, x_in, x_in.size(1));
  check_stats(x_in, mean, rstd);
  check_stats_device(x_in, mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const bool full = is_full(gamma_in, x);
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto ggamma = full ? at::empty_like(x, at::MemoryFormat::Contiguous)
                     : at::empty({N, C, 1, 1}, x.options());
  auto gbeta = beta_defined ? at::empty({N, C, 1, 1}, x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) {
    return {in_layout_of(gx, cl), full ? in_layout_of(ggamma, cl) : ggamma, gbeta};
  }
  const at::Tensor gy = grad_y.contiguous();
  const at::Tensor gamma = prepare(gamma_in, x);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  check_launch(spatially_adaptive_backward(
                   dtype_of(x), gy.const_data_ptr(), x.const_data_ptr(), gamma.const_data_ptr(),
                   full, m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                   gx.mutable_data_ptr(), ggamma.mutable_data_ptr(),
                   beta_defined ? gbeta.mutable_data_ptr() : nullptr, N * C, P, stream()),
               "spatially_adaptive_instance_norm_backward");
  // One pixel per plane: x - mean is identically 0 and gx exactly 0 (as the CPU backend).
  if (P == 1) gx.zero_();
  return {in_layout_of(gx, cl), full ? in_layout_of(ggamma, cl) : ggamma, gbeta};
}

// ---- instance_stats --------------------------------------------------------------------------
// The style statistics of AdaIN: the statistics kernel of instance_norm with eps = 0 and no output
// tensor, var = 1 / rstd^2 (0 for a zero variance, whose rstd is infinite or 0).

std::tuple<at::Tensor, at::Tensor> instance_stats_cuda(const at::Tensor& x_in) {
  check_input(x_in);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {mean, rstd};
  check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), nullptr,
                                     mean.mutable_data_ptr<double>(),
                                     rstd.mutable_data_ptr<double>(), x.size(0) * x.size(1),
                                     x.size(2) * x.size(3), 0.0, stream()),
               "instance_stats");
  const at::Tensor degenerate = at::logical_or(at::isinf(rstd), rstd == 0);
  const at::Tensor var = at::where(degenerate, at::zeros_like(rstd), at::reciprocal(rstd * rstd));
  return {mean, var};
}

// gx = (gm + 2 gv (x - mean)) / P, with the mean split as hi + lo in the accumulation type (so a
// large mean costs no precision), in x's memory layout.
at::Tensor instance_stats_backward_cuda(const at::Tensor& grad_mean, const at::Tensor& grad_var,
                                        const at::Tensor& x, const at::Tensor& mean) {
  check_input(x);
  check_on_cuda(x);
  check_stats(x, grad_mean, grad_var);
  check_stats(x, mean, mean);
  check_stats_device(x, grad_mean, grad_var);
  check_stats_device(x, mean, mean);
  const c10::cuda::CUDAGuard guard(x.device());
  if (x.numel() == 0) return at::empty_like(x);
  const at::ScalarType acc = acc_dtype(x);
  const double P = static_cast<double>(x.size(2) * x.size(3));
  const auto plane = [&](const at::Tensor& t) { return t.unsqueeze(-1).unsqueeze(-1); };
  const at::Tensor hi = mean.to(acc), lo = (mean - hi.to(at::kDouble)).to(acc);
  const at::Tensor centered = (x.to(acc) - plane(hi)) - plane(lo);
  const at::Tensor gx = centered * plane((grad_var * (2.0 / P)).to(acc)) + plane((grad_mean / P).to(acc));
  return gx.to(x.scalar_type());
}

// ---- deformable_conv ------------------------------------------------------------------------
// The kernels (deformable_conv.cu) take the statistics from the instance-norm statistics kernel
// (mean 0 and rstd 1 without normalization, as the CPU op returns them) and one byte workspace
// sized by deformable_workspace_bytes. Every result is bitwise repeatable on one stream (no
// floating-point atomics), so nothing changes under torch.use_deterministic_algorithms(True).

DeformGeometry deformable_geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups, int64_t offset_groups) {
  const ConvGeometry c = geometry(x, w, stride, padding, dilation, groups);
  return DeformGeometry{c.N,  c.C,  c.H,  c.W,  c.Co, c.groups, offset_groups, c.kh, c.kw,
                        c.sh, c.sw, c.pt, c.pl, c.dh, c.dw,     c.Ho,          c.Wo, 0};
}

// The checks of the CPU operator: the k x k convolution's, offset_groups dividing C, and the
// offset and mask shapes, dtypes and devices.
void check_deformable_args(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& b, const at::Tensor& offset,
                           const c10::optional<at::Tensor>& mask, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           int64_t offset_groups) {
  check_conv_args(x, w, b, stride, padding, dilation, groups);
  TORCH_CHECK_VALUE(offset_groups > 0 && x.size(1) % offset_groups == 0,
                    "din_ops: expected offset_groups to divide C = ", x.size(1),
                    ", got offset_groups = ", offset_groups);
  const ConvGeometry c = geometry(x, w, stride, padding, dilation, groups);
  check_deformable_offset_mask(x, offset, mask, offset_groups, c.kh * c.kw, c.Ho, c.Wo);
  check_on_cuda(x);
}

at::Tensor defined_contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

at::Tensor deformable_workspace(const at::Tensor& x, const DeformGeometry& g, bool backward) {
  return at::empty({deformable_workspace_bytes(dtype_of(x), g, backward)},
                   x.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> deformable_conv_cuda(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const at::Tensor& offset_in, const c10::optional<at::Tensor>& mask_in, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t offset_groups,
    bool normalize, double eps) {
  check_deformable_args(x_in, weight, bias, offset_in, mask_in, stride, padding, dilation, groups,
                        offset_groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), w = weight.contiguous(), offset = offset_in.contiguous();
  const at::Tensor b = defined_contiguous(bias), mask = defined_contiguous(mask_in);
  const DeformGeometry g =
      deformable_geometry(x, w, stride, padding, dilation, groups, offset_groups);
  auto y = at::empty({g.N, g.Co, g.Ho, g.Wo}, x.options());
  auto [mean, rstd] = empty_stats(x);
  if (g.N == 0) return {in_layout_of(y, cl), mean, rstd};
  const DType dt = dtype_of(x);
  if (normalize) {
    check_launch(instance_norm_forward(dt, x.const_data_ptr(), nullptr,
                                       mean.mutable_data_ptr<double>(),
                                       rstd.mutable_data_ptr<double>(), g.N * g.C, g.H * g.W, eps,
                                       stream()),
                 "deformable_conv (statistics)");
  } else {
    mean.zero_();
    rstd.fill_(1.0);
  }
  at::Tensor ws = deformable_workspace(x, g, false);
  check_launch(deformable_conv_forward(dt, g, x.const_data_ptr(), w.const_data_ptr(),
                                       b.defined() ? b.const_data_ptr() : nullptr,
                                       offset.const_data_ptr(),
                                       mask.defined() ? mask.const_data_ptr() : nullptr,
                                       mean.const_data_ptr<double>(), rstd.const_data_ptr<double>(),
                                       y.mutable_data_ptr(), ws.mutable_data_ptr(), stream()),
               "deformable_conv");
  return {in_layout_of(y, cl), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
deformable_conv_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in,
                              const at::Tensor& weight, const at::Tensor& offset_in,
                              const c10::optional<at::Tensor>& mask_in, const at::Tensor& mean,
                              const at::Tensor& rstd, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              int64_t offset_groups, bool normalize) {
  check_deformable_args(x_in, weight, c10::nullopt, offset_in, mask_in, stride, padding, dilation,
                        groups, offset_groups);
  check_stats(x_in, mean, rstd);
  check_stats_device(x_in, mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = x_in.contiguous(), w = weight.contiguous(), offset = offset_in.contiguous();
  const at::Tensor mask = defined_contiguous(mask_in);
  const DeformGeometry g =
      deformable_geometry(x, w, stride, padding, dilation, groups, offset_groups);
  check_grad_y(grad_y, x, g.N, g.Co, g.Ho, g.Wo);
  const at::Tensor gy = grad_y.contiguous(), m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gw = at::empty(w.sizes(), x.options());
  auto gb = at::empty({g.N, g.Co}, x.options());
  auto goffset = at::empty(offset.sizes(), x.options());
  auto gmask = mask.defined() ? at::empty(mask.sizes(), x.options()) : at::empty({0}, x.options());
  if (g.N == 0) return {in_layout_of(gx, cl), gw, gb, goffset, gmask};
  at::Tensor ws = deformable_workspace(x, g, true);
  check_launch(deformable_conv_backward(
                   dtype_of(x), g, gy.const_data_ptr(), x.const_data_ptr(), w.const_data_ptr(),
                   offset.const_data_ptr(), mask.defined() ? mask.const_data_ptr() : nullptr,
                   m.const_data_ptr<double>(), r.const_data_ptr<double>(), normalize,
                   gx.mutable_data_ptr(), gw.mutable_data_ptr(), gb.mutable_data_ptr(),
                   goffset.mutable_data_ptr(), mask.defined() ? gmask.mutable_data_ptr() : nullptr,
                   ws.mutable_data_ptr(), stream()),
               "deformable_conv_backward");
  return {in_layout_of(gx, cl), gw, gb, goffset, gmask};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CUDA, m) {
  m.impl("instance_norm", &instance_norm_cuda);
  m.impl("instance_norm_backward", &instance_norm_backward_cuda);
  m.impl("instance_stats", &instance_stats_cuda);
  m.impl("instance_stats_backward", &instance_stats_backward_cuda);
  m.impl("dynamic_instance_norm_1x1", &dynamic_instance_norm_1x1_cuda);
  m.impl("dynamic_instance_norm_1x1_backward", &dynamic_instance_norm_1x1_backward_cuda);
  m.impl("dynamic_conv", &dynamic_conv_cuda);
  m.impl("dynamic_conv_backward", &dynamic_conv_backward_cuda);
  m.impl("spatially_adaptive_instance_norm", &spatially_adaptive_instance_norm_cuda);
  m.impl("spatially_adaptive_instance_norm_backward",
         &spatially_adaptive_instance_norm_backward_cuda);
  m.impl("deformable_conv", &deformable_conv_cuda);
  m.impl("deformable_conv_backward", &deformable_conv_backward_cuda);
}

}  // namespace din_ops::gpu
