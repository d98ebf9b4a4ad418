// The geometry of a per-sample convolution (x: N x C x H x W, weight: N x Co x C/groups x kh x kw),
// shared by the k x k (dynamic_conv.cpp) and deformable (deformable_conv.cpp) CPU kernels.
#pragma once

#include <ATen/ATen.h>

namespace din_ops::cpu {

struct ConvGeometry {
  int64_t N, C, H, W, Co, groups, Cg, Cog, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo;
  // Batch strides of weight and bias in elements: Co * K() and Co, or 0 for an operand of batch 1
  // that applies to every sample (read in place, never repeated).
  int64_t ws, bs;
  // Offsets of output channel o of sample n in weight (its first tap) and in bias.
  int64_t w_at(int64_t n, int64_t o) const { return n * ws + o * K(); }
  int64_t b_at(int64_t n, int64_t o) const { return n * bs + o; }
  int64_t KK() const { return kh * kw; }
  int64_t K() const { return Cg * kh * kw; }  // GEMM depth of one convolution group
  int64_t P() const { return H * W; }
  int64_t Q() const { return Ho * Wo; }
  bool depthwise() const { return Cg == 1 && Cog == 1; }
};

// padding = (top, bottom, left, right); `b` the bias (undefined when absent).
inline ConvGeometry conv_geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups, const at::Tensor& b = at::Tensor()) {
  ConvGeometry s{};
  s.N = x.size(0), s.C = x.size(1), s.H = x.size(2), s.W = x.size(3);
  s.Co = w.size(1), s.groups = groups, s.Cg = s.C / groups, s.Cog = s.Co / groups;
  s.kh = w.size(3), s.kw = w.size(4);
  s.sh = stride[0], s.sw = stride[1], s.pt = padding[0], s.pl = padding[2];
  s.dh = dilation[0], s.dw = dilation[1];
  s.Ho = (s.H + padding[0] + padding[1] - s.dh * (s.kh - 1) - 1) / s.sh + 1;
  s.Wo = (s.W + padding[2] + padding[3] - s.dw * (s.kw - 1) - 1) / s.sw + 1;
  s.ws = w.size(0) == 1 ? 0 : s.Co * s.K();
  s.bs = b.defined() && b.size(0) == 1 ? 0 : s.Co;
  return s;
}

}  // namespace din_ops::cpu
