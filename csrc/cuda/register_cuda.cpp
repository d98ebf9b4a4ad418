// CUDA implementations of the din_ops operators: argument checks (csrc/checks.h), device guard,
// memory layout, allocation, and calls into the kernels of csrc/cuda/*.cu on the current stream.
// Compiled by the host compiler only in CUDA builds (setup.py); the kernels themselves are in light
// .cu files behind plain launchers (launchers.h), so this file needs the ATen/c10 headers and the
// CUDA runtime header, but no CUDA device code.
//
// Layouts: instance_norm, spatially_adaptive_instance_norm and dynamic_instance_norm_1x1 (forward
// and backward) run a channels_last x in place, with the NHWC kernels (the *_nhwc launchers) and
// cuBLAS on x viewed as (N, P, C); their outputs are channels_last then, as the op convention
// says. Other strided inputs are made contiguous NCHW first. dynamic_conv still copies a
// channels_last x to NCHW on entry and its results back (one extra read and write of x and of
// the output).
//
// DIN 1x1, float (unless TF32 is allowed for cuBLAS) and double: the normalization is folded into
// the weights (docs/math.md): statistics, a flag per sample (fold allowed: every channel has
// |mean| * rstd <= math::fold_limit()), W' = W * rstd and b' = b - W' mean, then one cuBLAS GEMM
// on x itself with b' as its beta = 1 input; no normalized copy of x is written. The samples whose
// flag is 0 are then recomputed by a kernel that normalizes x on load, its blocks for the other
// samples returning at once: the decision stays on the device, nothing waits for the host.
// Backward: gb by a sum kernel, gW = rstd * (gy x^T - gb mean^T) from cuBLAS and a correction
// kernel (recomputed with normalization on load for flag-0 samples), W^T gy from cuBLAS, and the
// instance-norm backward kernel applied to it. Half and bfloat16 (and float with TF32) never fold,
// as on the CPU: the instance-norm kernel writes xh and cuBLAS multiplies that.
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

at::MemoryFormat memory_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// t as the kernels take it: contiguous channels_last (NHWC) or contiguous NCHW.
at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(memory_format(channels_last));
}

// Scratch for the NHWC reductions of an (N, C, P) tensor (see nhwc_workspace_size).
at::Tensor nhwc_workspace(const at::Tensor& x, int64_t N, int64_t C, int64_t P) {
  return at::empty({nhwc_workspace_size(N, C, P)}, x.options().dtype(at::kDouble));
}

// A channels_last (N, C, H, W) tensor as its (N, P, C) matrix; a view.
at::Tensor nhwc_matrix(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).view({t.size(0), t.size(2) * t.size(3), t.size(1)});
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
}

std::tuple<at::Tensor, at::Tensor> empty_stats(const at::Tensor& x) {
  const auto opts = x.options().dtype(at::kDouble);
  return {at::empty({x.size(0), x.size(1)}, opts), at::empty({x.size(0), x.size(1)}, opts)};
}

// ---- instance_norm ---------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_cuda(const at::Tensor& x_in,
                                                                  double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_input(x_in);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  auto y = at::empty_like(x, memory_format(cl));
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {y, mean, rstd};
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(instance_norm_forward_nhwc(dtype_of(x), x.const_data_ptr(), y.mutable_data_ptr(),
                                            mean.mutable_data_ptr<double>(),
                                            rstd.mutable_data_ptr<double>(), N, C, P, eps,
                                            ws.mutable_data_ptr<double>(), stream()),
                 "instance_norm");
  } else {
    check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), y.mutable_data_ptr(),
                                       mean.mutable_data_ptr<double>(),
                                       rstd.mutable_data_ptr<double>(), N * C, P, eps, stream()),
                 "instance_norm");
  }
  return {y, mean, rstd};
}

at::Tensor instance_norm_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x_in,
                                       const at::Tensor& mean, const at::Tensor& rstd) {
  check_input(x_in);
  check_backward_on_cuda(grad_y, x_in, x_in.size(1), mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), gy = in_layout(grad_y, cl);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, memory_format(cl));
  if (x.numel() == 0) return gx;
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(instance_norm_backward_nhwc(dtype_of(x), gy.const_data_ptr(), false,
                                             x.const_data_ptr(), m.const_data_ptr<double>(),
                                             r.const_data_ptr<double>(), gx.mutable_data_ptr(), N,
                                             C, P, ws.mutable_data_ptr<double>(), stream()),
                 "instance_norm_backward");
  } else {
    check_launch(instance_norm_backward(dtype_of(x), gy.const_data_ptr(), false,
                                        x.const_data_ptr(), m.const_data_ptr<double>(),
                                        r.const_data_ptr<double>(), gx.mutable_data_ptr(), N * C,
                                        P, stream()),
                 "instance_norm_backward");
  }
  return gx;
}

// ---- dynamic_instance_norm_1x1 ---------------------------------------------------------------

// Whether cuBLAS may run float32 GEMMs in TF32 (or lower) now. torch refuses to answer when its
// old and new precision settings disagree; then it may.
bool reduced_float32_matmul() {
  auto& ctx = at::globalContext();
  if (ctx.float32MatmulPrecision() != at::Float32MatmulPrecision::HIGHEST) return true;
  try {
    return ctx.allowTF32CuBLAS();
  } catch (const c10::Error&) {
    return true;
  }
}

// Whether x's dtype folds the normalization into the weights (per sample, subject to the flags):
// double, and float when cuBLAS keeps float32 products. With TF32 the GEMM rounds its operands to
// 10 bits, and the folded products W' x are up to fold_limit() times larger than y.
bool may_fold(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ||
         (x.scalar_type() == at::kFloat && !reduced_float32_matmul());
}

// The GEMM operand of a 1x1 DIN: (N, C, P) for NCHW data, (N, P, C) for channels_last; a view.
at::Tensor matrix(const at::Tensor& t, bool channels_last) {
  return channels_last ? nhwc_matrix(t) : t.view({t.size(0), t.size(1), t.size(2) * t.size(3)});
}

// y = w[n] @ a[n] + b[n] per sample, a the operand of `matrix`: (N, Co, P), or (N, P, Co) for
// channels_last. The bias (undefined: none) is the GEMM's beta = 1 input, a stride-0 view.
at::Tensor gemm_1x1(const at::Tensor& a, const at::Tensor& w, const at::Tensor& b, bool cl) {
  const int64_t N = w.size(0), Co = w.size(1), P = cl ? a.size(1) : a.size(2);
  at::Tensor y;
  if (cl) {
    const at::Tensor wt = w.transpose(1, 2);
    y = b.defined() ? at::baddbmm(b.unsqueeze(1).expand({N, P, Co}), a, wt) : at::bmm(a, wt);
  } else {
    y = b.defined() ? at::baddbmm(b.unsqueeze(2).expand({N, Co, P}), w, a) : at::bmm(w, a);
  }
  // The unfolded kernels write into y by its (N, Co, P) / (N, P, Co) layout.
  TORCH_INTERNAL_ASSERT(y.is_contiguous(), "din_ops: expected a contiguous GEMM result");
  return y;
}

// The (N, Co, H, W) output of a gemm_1x1 result: NCHW, or channels_last for channels_last.
at::Tensor output_1x1(const at::Tensor& y3, int64_t N, int64_t Co, int64_t H, int64_t W,
                      bool cl) {
  return cl ? y3.view({N, H, W, Co}).permute({0, 3, 1, 2}) : y3.view({N, Co, H, W});
}

at::Tensor fold_flags(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd) {
  auto flags = at::empty({x.size(0)}, x.options().dtype(at::kInt));
  check_launch(dynamic_1x1_fold_flags(dtype_of(x), mean.const_data_ptr<double>(),
                                      rstd.const_data_ptr<double>(),
                                      flags.mutable_data_ptr<int32_t>(), x.size(0), x.size(1),
                                      stream()),
               "dynamic_instance_norm_1x1 (fold flags)");
  return flags;
}

// Statistics of x (N, C, P) and, when xh is defined, xh in x's layout.
void stats_1x1(const at::Tensor& x, at::Tensor& xh, at::Tensor& mean, at::Tensor& rstd,
               double eps, bool cl) {
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  void* out = xh.defined() ? xh.mutable_data_ptr() : nullptr;
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(instance_norm_forward_nhwc(dtype_of(x), x.const_data_ptr(), out,
                                            mean.mutable_data_ptr<double>(),
                                            rstd.mutable_data_ptr<double>(), N, C, P, eps,
                                            ws.mutable_data_ptr<double>(), stream()),
                 "dynamic_instance_norm_1x1 (statistics)");
  } else {
    check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), out,
                                       mean.mutable_data_ptr<double>(),
                                       rstd.mutable_data_ptr<double>(), N * C, P, eps, stream()),
                 "dynamic_instance_norm_1x1 (statistics)");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_cuda(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_weight_1x1(x_in, weight, bias);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), P = H * W;
  const int64_t Co = weight.size(1);
  auto [mean, rstd] = empty_stats(x);
  if (N == 0) {
    return {at::empty({N, Co, H, W}, x.options().memory_format(memory_format(cl))), mean, rstd};
  }
  const DType dt = dtype_of(x);
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  if (!may_fold(x) || Co == 0) {
    // xh from the statistics kernel, then y = W xh + b.
    at::Tensor xh = at::empty_like(x, memory_format(cl));
    stats_1x1(x, xh, mean, rstd, eps, cl);
    return {output_1x1(gemm_1x1(matrix(xh, cl), w, b, cl), N, Co, H, W, cl), mean, rstd};
  }
  at::Tensor none;
  stats_1x1(x, none, mean, rstd, eps, cl);
  const at::Tensor flags = fold_flags(x, mean, rstd);
  auto wf = at::empty_like(w);
  auto bf = at::empty({N, Co}, x.options());
  check_launch(dynamic_1x1_fold_weights(dt, w.const_data_ptr(),
                                        has_bias ? b.const_data_ptr() : nullptr,
                                        mean.const_data_ptr<double>(),
                                        rstd.const_data_ptr<double>(), wf.mutable_data_ptr(),
                                        bf.mutable_data_ptr(), N, Co, C, stream()),
               "dynamic_instance_norm_1x1 (folded weights)");
  // Every sample through cuBLAS on x; the flag-0 samples recomputed on top.
  at::Tensor y3 = gemm_1x1(matrix(x, cl), wf, bf, cl);
  check_launch(dynamic_1x1_forward_unfolded(dt, x.const_data_ptr(), w.const_data_ptr(),
                                            has_bias ? b.const_data_ptr() : nullptr,
                                            mean.const_data_ptr<double>(),
                                            rstd.const_data_ptr<double>(),
                                            flags.const_data_ptr<int32_t>(), y3.mutable_data_ptr(),
                                            N, C, Co, P, cl, stream()),
               "dynamic_instance_norm_1x1 (unfolded samples)");
  return {output_1x1(y3, N, Co, H, W, cl), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& mean, const at::Tensor& rstd) {
  check_weight_1x1(x_in, weight, c10::nullopt);
  check_backward_on_cuda(grad_y, x_in, weight.size(1), mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), gy = in_layout(grad_y, cl);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), Co = weight.size(1);
  auto gx = at::empty_like(x, memory_format(cl));
  auto gb = at::empty({N, Co}, x.options());
  if (N == 0) return {gx, at::empty({N, Co, C}, x.options()), gb};
  const DType dt = dtype_of(x);
  const at::Tensor w = weight.contiguous();
  // One workspace for the two NHWC reductions (over gy's Co and over x's C channels).
  const at::Tensor ws =
      cl ? at::empty({std::max(nhwc_workspace_size(N, C, P), nhwc_workspace_size(N, Co, P))},
                     x.options().dtype(at::kDouble))
         : at::Tensor();
  double* wsp = cl ? ws.mutable_data_ptr<double>() : nullptr;
  // gy and x as GEMM operands: (N, Co, P) and (N, C, P), or (N, P, Co) and (N, P, C).
  const at::Tensor gy3 = matrix(gy, cl), x3 = matrix(x, cl);
  if (cl) {
    check_launch(channel_sums_nhwc(dt, gy.const_data_ptr(), gb.mutable_data_ptr(), N, Co, P, wsp,
                                   stream()),
                 "dynamic_instance_norm_1x1_backward (bias gradient)");
  } else {
    check_launch(plane_sums(dt, gy.const_data_ptr(), gb.mutable_data_ptr(), N * Co, P, stream()),
                 "dynamic_instance_norm_1x1_backward (bias gradient)");
  }
  // gW = gy xh^T, (N, Co, C).
  auto gy_times = [&](const at::Tensor& a3) {
    return (cl ? at::bmm(gy3.transpose(1, 2), a3) : at::bmm(gy3, a3.transpose(1, 2))).contiguous();
  };
  at::Tensor gw;
  if (may_fold(x) && Co > 0) {
    // gy x^T from cuBLAS, corrected to gy xh^T for the flag-1 samples, recomputed for the others.
    const at::Tensor flags = fold_flags(x, m, r);
    gw = gy_times(x3);
    check_launch(dynamic_1x1_grad_weight_folded(dt, gw.mutable_data_ptr(), gb.const_data_ptr(),
                                                m.const_data_ptr<double>(),
                                                r.const_data_ptr<double>(),
                                                flags.const_data_ptr<int32_t>(), N, Co, C,
                                                stream()),
                 "dynamic_instance_norm_1x1_backward (folded weight gradient)");
    check_launch(dynamic_1x1_grad_weight_unfolded(dt, gy.const_data_ptr(), x.const_data_ptr(),
                                                  m.const_data_ptr<double>(),
                                                  r.const_data_ptr<double>(),
                                                  flags.const_data_ptr<int32_t>(),
                                                  gw.mutable_data_ptr(), N, C, Co, P, cl,
                                                  stream()),
                 "dynamic_instance_norm_1x1_backward (unfolded weight gradient)");
  } else {
    auto xh = at::empty_like(x, memory_format(cl));
    if (cl) {
      check_launch(instance_norm_apply_nhwc(dt, x.const_data_ptr(), m.const_data_ptr<double>(),
                                            r.const_data_ptr<double>(), xh.mutable_data_ptr(), N,
                                            C, P, stream()),
                   "dynamic_instance_norm_1x1_backward (normalize)");
    } else {
      check_launch(instance_norm_apply(dt, x.const_data_ptr(), m.const_data_ptr<double>(),
                                       r.const_data_ptr<double>(), xh.mutable_data_ptr(), N * C,
                                       P, stream()),
                   "dynamic_instance_norm_1x1_backward (normalize)");
    }
    gw = gy_times(matrix(xh, cl));
  }
  // gxh = W^T gy in x's layout: (N, C, P), or (N, P, C) = gy3 @ W for channels_last.
  const at::Tensor gxh =
      (cl ? at::bmm(gy3, w) : at::bmm(w.transpose(1, 2), gy3)).contiguous();
  if (cl) {
    check_launch(instance_norm_backward_nhwc(dt, gxh.const_data_ptr(), false, x.const_data_ptr(),
                                             m.const_data_ptr<double>(),
                                             r.const_data_ptr<double>(), gx.mutable_data_ptr(), N,
                                             C, P, wsp, stream()),
                 "dynamic_instance_norm_1x1_backward (normalization)");
  } else {
    check_launch(instance_norm_backward(dt, gxh.const_data_ptr(), false, x.const_data_ptr(),
                                        m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                                        gx.mutable_data_ptr(), N * C, P, stream()),
                 "dynamic_instance_norm_1x1_backward (normalization)");
  }
  return {gx, gw, gb};
}

// ---- dynamic_conv ----------------------------------------------------------------------------

// The statistics of a convolution's input: those of x when normalizing, else mean 0 and rstd 1
// (the k x k and deformable convolutions without normalization).
void conv_statistics(const at::Tensor& x, bool normalize, double eps, at::Tensor& mean,
                     at::Tensor& rstd, const char* what) {
  if (!normalize) {
    mean.zero_();
    rstd.fill_(1.0);
    return;
  }
  check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), nullptr,
                                     mean.mutable_data_ptr<double>(),
                                     rstd.mutable_data_ptr<double>(), x.size(0) * x.size(1),
                                     x.size(2) * x.size(3), eps, stream()),
               what);
}

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
    bool normalize, double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
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
  conv_statistics(x, normalize, eps, mean, rstd, "dynamic_conv (statistics)");
  if (g.Co == 0) return {in_layout_of(y, cl), mean, rstd};  // no output channel: no launch
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
  if (g.Co == 0) return {in_layout_of(gx.zero_(), cl), gw, gb};  // y is empty: nothing flows back
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

// gamma or beta for the kernels: full size in x's layout, or N * C contiguous values.
at::Tensor prepare(const at::Tensor& t, const at::Tensor& x, bool cl) {
  return is_full(t, x) ? in_layout(t, cl) : t.reshape({x.size(0) * x.size(1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_cuda(
    const at::Tensor& x_in, const at::Tensor& gamma_in, const c10::optional<at::Tensor>& beta_in,
    double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_input(x_in);
  check_on_cuda(x_in);
  const bool has_beta = beta_in.has_value() && beta_in->defined();
  check_modulation(x_in, gamma_in, "gamma");
  if (has_beta) check_modulation(x_in, *beta_in, "beta");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  auto y = at::empty_like(x, memory_format(cl));
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {y, mean, rstd};
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const at::Tensor gamma = prepare(gamma_in, x, cl);
  const at::Tensor beta = has_beta ? prepare(*beta_in, x, cl) : at::Tensor();
  const bool gamma_full = is_full(gamma_in, x), beta_full = has_beta && is_full(*beta_in, x);
  const void* beta_ptr = has_beta ? beta.const_data_ptr() : nullptr;
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(spatially_adaptive_forward_nhwc(
                     dtype_of(x), x.const_data_ptr(), gamma.const_data_ptr(), gamma_full, beta_ptr,
                     beta_full, y.mutable_data_ptr(), mean.mutable_data_ptr<double>(),
                     rstd.mutable_data_ptr<double>(), N, C, P, eps, ws.mutable_data_ptr<double>(),
                     stream()),
                 "spatially_adaptive_instance_norm");
  } else {
    check_launch(spatially_adaptive_forward(dtype_of(x), x.const_data_ptr(), gamma.const_data_ptr(),
                                            gamma_full, beta_ptr, beta_full, y.mutable_data_ptr(),
                                            mean.mutable_data_ptr<double>(),
                                            rstd.mutable_data_ptr<double>(), N * C, P, eps,
                                            stream()),
                 "spatially_adaptive_instance_norm");
  }
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& gamma_in,
    const at::Tensor& mean, const at::Tensor& rstd, bool beta_defined) {
  check_input(x_in);
  check_on_cuda(x_in);
  check_modulation(x_in, gamma_in, "gamma");
  check_grad(grad_y, x_in, x_in.size(1));
  check_stats(x_in, mean, rstd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const bool full = is_full(gamma_in, x);
  auto gx = at::empty_like(x, memory_format(cl));
  auto ggamma = full ? at::empty_like(x, memory_format(cl)) : at::empty({N, C, 1, 1}, x.options());
  auto gbeta = beta_defined ? at::empty({N, C, 1, 1}, x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) return {gx, ggamma, gbeta};
  const at::Tensor gy = in_layout(grad_y, cl);
  const at::Tensor gamma = prepare(gamma_in, x, cl);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  void* gbeta_ptr = beta_defined ? gbeta.mutable_data_ptr() : nullptr;
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(spatially_adaptive_backward_nhwc(
                     dtype_of(x), gy.const_data_ptr(), x.const_data_ptr(), gamma.const_data_ptr(),
                     full, m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                     gx.mutable_data_ptr(), ggamma.mutable_data_ptr(), gbeta_ptr, N, C, P,
                     ws.mutable_data_ptr<double>(), stream()),
                 "spatially_adaptive_instance_norm_backward");
  } else {
    check_launch(spatially_adaptive_backward(
                     dtype_of(x), gy.const_data_ptr(), x.const_data_ptr(), gamma.const_data_ptr(),
                     full, m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                     gx.mutable_data_ptr(), ggamma.mutable_data_ptr(), gbeta_ptr, N * C, P,
                     stream()),
                 "spatially_adaptive_instance_norm_backward");
  }
  // One pixel per plane: x - mean is identically 0 and gx exactly 0 (as the CPU backend).
  if (P == 1) gx.zero_();
  return {gx, ggamma, gbeta};
}

// ---- instance_stats --------------------------------------------------------------------------
// The style statistics of AdaIN: the statistics kernel of instance_norm with eps = 0 and no output
// tensor, var = 1 / rstd^2 (0 for a zero variance, whose rstd is infinite or 0).

std::tuple<at::Tensor, at::Tensor> instance_stats_cuda(const at::Tensor& x_in) {
  check_input(x_in);
  check_on_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl);
  auto [mean, rstd] = empty_stats(x);
  if (x.numel() == 0) return {mean, rstd};
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  if (cl) {
    const at::Tensor ws = nhwc_workspace(x, N, C, P);
    check_launch(instance_norm_forward_nhwc(dtype_of(x), x.const_data_ptr(), nullptr,
                                            mean.mutable_data_ptr<double>(),
                                            rstd.mutable_data_ptr<double>(), N, C, P, 0.0,
                                            ws.mutable_data_ptr<double>(), stream()),
                 "instance_stats");
  } else {
    check_launch(instance_norm_forward(dtype_of(x), x.const_data_ptr(), nullptr,
                                       mean.mutable_data_ptr<double>(),
                                       rstd.mutable_data_ptr<double>(), N * C, P, 0.0, stream()),
                 "instance_stats");
  }
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
    bool normalize, double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
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
  conv_statistics(x, normalize, eps, mean, rstd, "deformable_conv (statistics)");
  if (g.Co == 0) return {in_layout_of(y, cl), mean, rstd};  // no output channel: no launch
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
  if (g.Co == 0) {  // y is empty: nothing flows back to x, the offsets or the mask
    goffset.zero_();
    gmask.zero_();
    return {in_layout_of(gx.zero_(), cl), gw, gb, goffset, gmask};
  }
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
