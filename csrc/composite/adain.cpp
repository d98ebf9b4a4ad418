// adain for every device without a fused kernel of its own (CUDA): the same op composed of
// din_ops::instance_stats (the style's statistics) and din_ops::spatially_adaptive_instance_norm
// (the content), with the results the CPU kernel gives (csrc/din_ops.cpp has the conventions).
// Registered as CompositeExplicitAutograd: autograd comes from din_ops/_registrations.py, and a
// device's own kernel (CPU) takes precedence over this one.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "../checks.h"

namespace din_ops {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> adain_composite(const Tensor& content,
                                                                   const Tensor& style, double eps,
                                                                   bool unbiased) {
  check_input(content);
  check_style(content, style);
  check_eps(eps);
  static const auto stats_op = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow("din_ops::instance_stats", "")
                                   .typed<std::tuple<Tensor, Tensor>(const Tensor&)>();
  static const auto sain_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("din_ops::spatially_adaptive_instance_norm", "")
          .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                    const std::optional<Tensor>&, double, bool)>();
  const int64_t N = content.size(0), C = content.size(1);
  const int64_t P = content.size(2) * content.size(3), Ps = style.size(2) * style.size(3);
  auto [style_mean, style_var] = stats_op.call(style);
  // std_s = sqrt(var_s + eps), var_s unbiased (Ms / (Ms - 1), 0 for one value) when asked.
  const double var_scale = unbiased ? math::unbiased_variance_factor(Ps) : 1.0;
  Tensor style_std = (style_var * var_scale + eps).sqrt();
  // The unbiased content variance as gamma * sqrt(k), k = (M - 1) / M (the operator below then
  // uses eps * k).
  const double k = unbiased && P > 1 ? double(P - 1) / double(P) : 1.0;
  // These kernels read per-sample operands of batch N: a batch-1 style's (C) values are repeated.
  Tensor gamma = (style_std * std::sqrt(k)).to(content.scalar_type()).view({-1, C, 1, 1});
  Tensor beta = style_mean.to(content.scalar_type()).view({-1, C, 1, 1});
  if (gamma.size(0) != N) {
    gamma = gamma.expand({N, C, 1, 1}).contiguous();
    beta = beta.expand({N, C, 1, 1}).contiguous();
  }
  auto [y, mean, rstd] = sain_op.call(content, gamma, beta, eps, unbiased);
  return {y, mean, rstd, style_mean, style_std};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CompositeExplicitAutograd, m) { m.impl("adain", &adain_composite); }

}  // namespace din_ops
