// Autocast for the din_ops forward operators on the CPU (torch.autocast("cpu", dtype=...)).
//
// Policy: under autocast, every forward op computes in float32 and returns its output in the
// autocast dtype (bfloat16 or float16). Tensor arguments of float16, bfloat16 or float32 are cast to
// float32 first (so x, weight, bias, gamma and beta may come in different ones of these dtypes, as
// autocast produces them); float64 arguments are left alone and a float64 op stays float64. The
// (N, C) statistics stay float64. Normalization needs float32 statistics and a float32 epilogue to
// be accurate (a bfloat16 x - mean loses the signal at large means), and the callers of these ops
// (convolutions, linear layers) run in the autocast dtype, so the output is returned in it.
//
// The casts are ordinary differentiable ops recorded by autograd, so gradients reach each input in
// its own dtype. Backward ops need no autocast kernel: autograd calls them with the float32 tensors
// saved by the forward op. Registered for the AutocastCPU dispatch key, which runs before Autograd,
// so direct torch.ops.din_ops.* calls and LibTorch callers get the same behaviour as the Python API.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace din_ops::cpu {
namespace {

using at::Tensor;
using Triple = std::tuple<Tensor, Tensor, Tensor>;
constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;

c10::OperatorHandle find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

// float16/bfloat16/float32 -> float32; float64 (and anything else) unchanged.
Tensor to_float(const Tensor& t) { return at::autocast::cached_cast(at::kFloat, t, kDevice); }

std::optional<Tensor> to_float(const std::optional<Tensor>& t) {
  return at::autocast::cached_cast(at::kFloat, t, kDevice);
}

// The output in the autocast dtype when the op ran in float32 (a float64 op stays float64).
template <typename Outputs>
Outputs finish(Outputs out) {
  auto& y = std::get<0>(out);
  if (y.scalar_type() == at::kFloat) y = y.to(at::autocast::get_autocast_dtype(kDevice));
  return out;
}

// Runs the op below the autocast key (the guard keeps this kernel from being re-entered).
#define DIN_NO_AUTOCAST                                       \
  c10::impl::ExcludeDispatchKeyGuard no_autocast(             \
      at::autocast::get_autocast_dispatch_key_from_device_type(kDevice))

Triple instance_norm_autocast(const Tensor& x, double eps, bool unbiased) {
  static const auto op =
      find_op("din_ops::instance_norm").typed<Triple(const Tensor&, double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(x), eps, unbiased));
}

Triple din_1x1_autocast(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                        double eps, bool unbiased) {
  static const auto op = find_op("din_ops::dynamic_instance_norm_1x1")
                             .typed<Triple(const Tensor&, const Tensor&,
                                           const std::optional<Tensor>&, double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(x), to_float(w), to_float(b), eps, unbiased));
}

Triple dynamic_conv_autocast(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, int64_t groups, bool normalize,
                             double eps, bool unbiased) {
  static const auto op =
      find_op("din_ops::dynamic_conv")
          .typed<Triple(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, bool,
                        double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(x), to_float(w), to_float(b), stride, padding, dilation,
                        groups, normalize, eps, unbiased));
}

Triple sain_autocast(const Tensor& x, const Tensor& gamma, const std::optional<Tensor>& beta,
                     double eps, bool unbiased) {
  static const auto op = find_op("din_ops::spatially_adaptive_instance_norm")
                             .typed<Triple(const Tensor&, const Tensor&,
                                           const std::optional<Tensor>&, double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(x), to_float(gamma), to_float(beta), eps, unbiased));
}

Triple deformable_conv_autocast(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                                const Tensor& offset, const std::optional<Tensor>& mask,
                                at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t groups, int64_t offset_groups,
                                bool normalize, double eps, bool unbiased) {
  static const auto op =
      find_op("din_ops::deformable_conv")
          .typed<Triple(const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&,
                        const std::optional<Tensor>&, at::IntArrayRef, at::IntArrayRef,
                        at::IntArrayRef, int64_t, int64_t, bool, double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(x), to_float(w), to_float(b), to_float(offset), to_float(mask),
                        stride, padding, dilation, groups, offset_groups, normalize, eps,
                        unbiased));
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> adain_autocast(const Tensor& content,
                                                                  const Tensor& style, double eps,
                                                                  bool unbiased) {
  using Five = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
  static const auto op =
      find_op("din_ops::adain").typed<Five(const Tensor&, const Tensor&, double, bool)>();
  DIN_NO_AUTOCAST;
  return finish(op.call(to_float(content), to_float(style), eps, unbiased));
}

#undef DIN_NO_AUTOCAST

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, AutocastCPU, m) {
  m.impl("instance_norm", &instance_norm_autocast);
  m.impl("dynamic_instance_norm_1x1", &din_1x1_autocast);
  m.impl("dynamic_conv", &dynamic_conv_autocast);
  m.impl("spatially_adaptive_instance_norm", &sain_autocast);
  m.impl("deformable_conv", &deformable_conv_autocast);
  m.impl("adain", &adain_autocast);
}

}  // namespace din_ops::cpu
