// Bilinear sampling arithmetic of the deformable kernels, shared by every backend (CPU now; CUDA
// kernels include the same header). Small inline functions usable from host and device code.
//
// Semantics (those of torchvision.ops.deform_conv2d, i.e. DCNv1/DCNv2): a plane of H x W values is
// sampled at a fractional position (y, x). With y0 = floor(y), x0 = floor(x), ly = y - y0,
// lx = x - x0, the value is
//
//   v = (1 - ly)(1 - lx) p[y0, x0] + (1 - ly) lx p[y0, x0 + 1] + ly (1 - lx) p[y0 + 1, x0]
//       + ly lx p[y0 + 1, x0 + 1]
//
// where every corner outside the plane counts as zero. So a position with y <= -1, y >= H, x <= -1
// or x >= W samples zero, and a position on the border interpolates towards zero.
//
// Derivatives with respect to the position, used for the offset gradient:
//
//   dv/dy = (1 - lx)(p[y0 + 1, x0] - p[y0, x0]) + lx (p[y0 + 1, x0 + 1] - p[y0, x0 + 1])
//   dv/dx = (1 - ly)(p[y0, x0 + 1] - p[y0, x0]) + ly (p[y0 + 1, x0 + 1] - p[y0 + 1, x0])
//
// (with outside corners as zero). At integer positions v is not differentiable; these are the
// right-sided derivatives, as autograd of the floor-based formula and torchvision give.
#pragma once

#include <cmath>
#include <cstdint>

#include "din_ops/math.h"  // DIN_HD

namespace din_ops::bilinear {

// The four corners of one sample point, in the order (y0, x0), (y0, x0 + 1), (y0 + 1, x0),
// (y0 + 1, x0 + 1). Corners outside the plane have weight and derivatives 0 and the index the
// caller names (`outside` below). An outside corner must contribute exactly zero, also where the
// input holds an inf or NaN (0 * inf is NaN), as in torchvision: a kernel either reads from a buffer
// whose element `outside` is zero (the CPU kernels: one zero row past the plane), so it loads all
// four corners unconditionally and accumulates without branches, or passes -1 and skips those loads.
template <typename acc_t>
struct Corners {
  int64_t index[4];  // row-major offset y * W + x of the corner in the plane
  acc_t weight[4];   // interpolation weight
  acc_t dy[4];       // d weight / d y
  acc_t dx[4];       // d weight / d x
};

// Corners and weights of the sample point (y, x) in an H x W plane (H, W >= 1). A point outside
// (-1, H) x (-1, W), or a NaN coordinate, gets four zero-weight corners (and no integer overflow).
// Corners outside the plane get index `outside`.
template <typename acc_t>
DIN_HD Corners<acc_t> corners(acc_t y, acc_t x, int64_t H, int64_t W, int64_t outside) {
  Corners<acc_t> c{};
  if (!(y > acc_t(-1) && y < acc_t(H) && x > acc_t(-1) && x < acc_t(W))) {
    for (int k = 0; k < 4; ++k) {
      c.index[k] = outside;
      c.weight[k] = c.dy[k] = c.dx[k] = acc_t(0);
    }
    return c;
  }
  const acc_t fy = std::floor(y), fx = std::floor(x);
  const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  const acc_t ly = y - fy, lx = x - fx, hy = acc_t(1) - ly, hx = acc_t(1) - lx;
  const bool in_y[2] = {y0 >= 0, y0 + 1 < H};
  const bool in_x[2] = {x0 >= 0, x0 + 1 < W};
  const acc_t wy[2] = {hy, ly}, wx[2] = {hx, lx};
  const acc_t sy[2] = {acc_t(-1), acc_t(1)};  // d wy / d y
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      const int k = 2 * a + b;
      const bool inside = in_y[a] && in_x[b];
      c.index[k] = inside ? (y0 + a) * W + (x0 + b) : outside;
      c.weight[k] = inside ? wy[a] * wx[b] : acc_t(0);
      c.dy[k] = inside ? sy[a] * wx[b] : acc_t(0);
      c.dx[k] = inside ? wy[a] * sy[b] : acc_t(0);
    }
  }
  return c;
}

// sum_k coefficient[k] * value[k]: the sampled value (with c.weight) or a position derivative (with
// c.dy, c.dx) from the four corner values.
template <typename acc_t>
DIN_HD acc_t combine(const acc_t coefficient[4], const acc_t value[4]) {
  return (coefficient[0] * value[0] + coefficient[1] * value[1]) +
         (coefficient[2] * value[2] + coefficient[3] * value[3]);
}

// The sampling position of kernel tap (i, j) for output pixel (oh, ow) along one axis:
// o * stride - pad_before + tap * dilation + offset (the offset of that tap, pixel and offset group).
template <typename acc_t>
DIN_HD acc_t position(int64_t o, int64_t stride, int64_t pad_before, int64_t tap, int64_t dilation,
                      acc_t offset) {
  return static_cast<acc_t>(o * stride - pad_before + tap * dilation) + offset;
}

}  // namespace din_ops::bilinear
