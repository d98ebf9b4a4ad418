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
  m.def("instance_norm(Tensor x, float eps) -> (Tensor y, Tensor mean, Tensor rstd)", tags);
  m.def("instance_norm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd) -> Tensor",
        tags);
  m.def(
      "dynamic_instance_norm_1x1(Tensor x, Tensor weight, Tensor? bias, float eps)"
      " -> (Tensor y, Tensor mean, Tensor rstd)",
      tags);
  m.def(
      "dynamic_instance_norm_1x1_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mean,"
      " Tensor rstd) -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)",
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
