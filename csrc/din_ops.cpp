// Every din_ops operator schema, in one place. Backend files (csrc/cpu/*.cpp, csrc/cuda/*.cu) only
// register implementations; Python adds fake kernels and autograd (din_ops/_registrations.py).
//
// Conventions:
// - Forward ops return the output followed by the per-(n, c) statistics mean and rstd, shape (N, C),
//   float64 for every input dtype (a float32 mean of 1e6 would be off by up to 0.03). Backward ops
//   take those statistics back; nothing of size N*C*H*W other than x is saved.
// - Outputs are channels_last when x is channels_last (and not also contiguous), contiguous otherwise.
#ifndef DIN_OPS_NO_PYTHON
#include <Python.h>
#endif
#include <torch/library.h>

TORCH_LIBRARY(din_ops, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  // The instruction-set level the CPU kernels run at ("default", "avx2" or "avx512"; chosen when
  // the library is loaded, DIN_OPS_CPU_CAPABILITY overrides it) and the levels this CPU can run.
  m.def("cpu_capability() -> str");
  m.def("cpu_capabilities() -> str[]");
  // Every normalizing operator takes `eps` and `unbiased`: the variance is the biased one
  // (F.instance_norm's) or, for unbiased=True, torch.var's; the kernels then use the biased
  // variance with eps * (M - 1) / M (M = H * W) and the caller scales the affine weight by
  // sqrt((M - 1) / M) (docs/math.md, "Unbiased variance"). The returned rstd is 1 / sqrt(var + eps')
  // with that eps' either way.
  m.def("instance_norm(Tensor x, float eps, bool unbiased=False) -> (Tensor y, Tensor mean, Tensor rstd)", tags);
  m.def("instance_norm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd) -> Tensor",
        tags);
  // The statistics alone, without writing a normalized tensor (e.g. the style features of AdaIN):
  // the mean and the biased variance of each (n, c) plane, (N, C) float64, from the same shifted
  // sums as instance_norm.
  m.def("instance_stats(Tensor x) -> (Tensor mean, Tensor var)", tags);
  // Its backward: grad_x = (grad_mean + 2 * grad_var * (x - mean)) / (H * W), one pass over x.
  m.def(
      "instance_stats_backward(Tensor grad_mean, Tensor grad_var, Tensor x, Tensor mean) -> Tensor",
      tags);
  m.def(
      "dynamic_instance_norm_1x1(Tensor x, Tensor weight, Tensor? bias, float eps,"
      " bool unbiased=False)"
      " -> (Tensor y, Tensor mean, Tensor rstd)",
      tags);
  m.def(
      "dynamic_instance_norm_1x1_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mean,"
      " Tensor rstd) -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)",
      tags);
  // k x k grouped/depthwise per-sample convolution, with (normalize=True: dynamic_instance_norm) or
  // without (dynamic_conv2d) instance normalization of x first. weight (N, Co, C / groups, kh, kw);
  // padding is (top, bottom, left, right); without normalization mean = 0 and rstd = 1.
  m.def(
      "dynamic_conv(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[4] padding,"
      " int[2] dilation, int groups, bool normalize, float eps, bool unbiased=False)"
      " -> (Tensor y, Tensor mean, Tensor rstd)",
      tags);
  m.def(
      "dynamic_conv_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mean, Tensor rstd,"
      " int[2] stride, int[4] padding, int[2] dilation, int groups, bool normalize)"
      " -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)",
      tags);
  // y = gamma * instance_norm(x) + beta. gamma and beta are each (N, C, H, W) or (N, C, 1, 1); beta
  // may be None (zero). Backward: grad_gamma has gamma's shape; grad_beta is the per-plane sum of
  // grad_y, (N, C, 1, 1), when beta_defined and an empty (0,) tensor otherwise (the gradient of a
  // full-size beta is grad_y itself, which autograd passes on without a copy).
  m.def(
      "spatially_adaptive_instance_norm(Tensor x, Tensor gamma, Tensor? beta, float eps,"
      " bool unbiased=False)"
      " -> (Tensor y, Tensor mean, Tensor rstd)",
      tags);
  m.def(
      "spatially_adaptive_instance_norm_backward(Tensor grad_y, Tensor x, Tensor gamma,"
      " Tensor mean, Tensor rstd, bool beta_defined)"
      " -> (Tensor grad_x, Tensor grad_gamma, Tensor grad_beta)",
      tags);
  // AdaIN (Huang & Belongie, 2017): y = std_s * IN(content) + mean_s per (n, c) plane, with the
  // style's statistics computed in the same pass (per plane: the style plane's sums, then the
  // content plane's, then y). style (N or 1, C, Hs, Ws); `unbiased` selects torch.var's variance
  // for both. Returns y; the content's mean and rstd in the convention of
  // spatially_adaptive_instance_norm (rstd = 1 / sqrt(var + eps'), eps' = eps (M - 1) / M for the
  // unbiased variance, M = H * W, whose sqrt((M - 1) / M) then scales gamma); and the style's mean
  // and std = sqrt(var_s + eps), (Ns, C) float64. Backward: spatially_adaptive_instance_norm's and
  // instance_stats' (din_ops/_registrations.py).
  m.def(
      "adain(Tensor content, Tensor style, float eps, bool unbiased)"
      " -> (Tensor y, Tensor mean, Tensor rstd, Tensor style_mean, Tensor style_std)",
      tags);
  // Deformable per-sample convolution (DCNv1; DCNv2 with a modulation mask), normalize as in
  // dynamic_conv. offset (N, 2 * offset_groups * kh * kw, Ho, Wo) holds (dy, dx) per tap and mask
  // (N, offset_groups * kh * kw, Ho, Wo), as in torchvision.ops.deform_conv2d; bilinear sampling
  // of the (normalized) input, zero outside it. Backward: grad_mask is an empty (0,) tensor when
  // mask is None.
  m.def(
      "deformable_conv(Tensor x, Tensor weight, Tensor? bias, Tensor offset, Tensor? mask,"
      " int[2] stride, int[4] padding, int[2] dilation, int groups, int offset_groups,"
      " bool normalize, float eps, bool unbiased=False) -> (Tensor y, Tensor mean, Tensor rstd)",
      tags);
  m.def(
      "deformable_conv_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor offset,"
      " Tensor? mask, Tensor mean, Tensor rstd, int[2] stride, int[4] padding, int[2] dilation,"
      " int groups, int offset_groups, bool normalize)"
      " -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias, Tensor grad_offset,"
      " Tensor grad_mask)",
      tags);
}

// `import din_ops._C` loads this library (and with it the registrations above). The module has no
// Python functions: every entry point is a torch operator, so the same sources also build into a
// plain LibTorch library for C++ users and the ctest suite (which do not compile this part).
#ifndef DIN_OPS_NO_PYTHON
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif
