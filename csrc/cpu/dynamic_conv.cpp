// Per-sample k x k (grouped, depthwise, strided, dilated) dynamic convolution on the CPU, with the
// instance normalization applied on load (dynamic_instance_norm) or not (dynamic_conv2d).
//
//   forward : y[n] = conv2d(xh[n], W[n], b[n], stride, padding, dilation, groups)
//             xh = (x - mean) * rstd, and zero outside the input (padding pads xh, not x)
//   backward: gb[n, o]   = sum_p gy[n, o, p]
//             gW[n]      = correlation of gy[n] with xh[n]  (the usual conv2d weight gradient)
//             g          = conv_transpose2d(gy[n], W[n])     (gradient with respect to xh)
//             gx         = rstd * (g - mean_p(g) - xh * mean_p(g * xh))  (identity when not normalizing)
//
// A weight or bias of batch 1 applies to every sample: the kernels read it with a batch stride of 0
// (ConvGeometry::ws, bs), and backward returns the per-sample gW and gb, which autograd sums.
//
// The mean cannot be folded into the weights here: zero padding of xh is padding x with the mean.
// So the kernels read x and normalize in registers, per tile:
// - depthwise (one input and one output channel per group): one task per (n, c) plane builds the
//   zero-padded normalized plane in a cache-resident buffer, then accumulates the kh * kw taps as
//   vectorized row updates; backward works on the same plane buffer (taps as dot products and
//   transposed row updates), then applies the instance-norm backward while the plane is in cache.
// - grouped or dense, stride 1: register-blocked direct convolution (direct_conv.h) on bands of
//   normalized, zero-padded rows, or Winograd F(2x2, 3x3) on the same bands for 3 x 3 kernels
//   without dilation (winograd.h); the backward's input gradient is the same convolution run on
//   grad_y with the flipped kernel, its weight gradient a register-blocked correlation of the same
//   bands (direct or in the Winograd domain).
//   These need AVX2 or AVX-512 on x86-64, or aarch64 (direct_kernels_fast()); at the x86-64
//   baseline level stride 1 takes the path below too.
// - everything else (stride > 1): im2col of normalized tiles of output rows, one GEMM per tile with
//   W[n, group] (forward), and per (n, group) task the weight-gradient GEMM, the W^T GEMM and
//   col2im into the gradient planes (backward).
// In every backward each (n, group) is owned by one task, so nothing races and results are
// deterministic for a fixed thread count.
// Inputs are computed in NCHW; channels_last inputs are converted once on entry and the output
// converted back (documented cost).
#include <memory>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "blas.h"
#include "common.h"
#include "conv_geometry.h"
#include "direct_conv.h"
#include "winograd.h"

namespace din_ops::cpu {
namespace {

using Geometry = ConvGeometry;

Geometry geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  const at::Tensor& b = at::Tensor()) {
  return conv_geometry(x, w, stride, padding, dilation, groups, b);
}

// Rows [r0, r1) of the zero-padded, normalized plane of one channel, into `pad` (width Wp, row r of
// the padded plane at pad + (r - r0) * Wp). Padded row r is input row r - pt.
template <typename T>
void padded_rows(const T* xc, const Geometry& s, int64_t Wp, int64_t r0, int64_t r1, acc_t<T> hi,
                 acc_t<T> lo, acc_t<T> r, acc_t<T>* pad, acc_t<T>* conv) {
  using acc = acc_t<T>;
  const int64_t c0 = std::min(s.pl, Wp), c1 = std::min(s.pl + s.W, Wp);
  for (int64_t row = r0; row < r1; ++row) {
    acc* dst = pad + (row - r0) * Wp;
    const int64_t ih = row - s.pt;
    if (ih < 0 || ih >= s.H || c1 <= c0) {
      std::fill(dst, dst + Wp, acc(0));
      continue;
    }
    std::fill(dst, dst + c0, acc(0));
    normalize(load(xc + ih * s.W, c1 - c0, conv), c1 - c0, hi, lo, r, dst + c0);
    std::fill(dst + c1, dst + Wp, acc(0));
  }
}

// ---------------------------------------------------------------------------------------------
// Depthwise: one task per (n, c) plane.

// The statistics of each plane are computed in its task, just before the plane is normalized, so
// x is read from memory once (the second read hits the cache).
template <typename T>
void depthwise_forward(const T* x, const T* w, const T* b, T* y, const Geometry& s, bool normalize,
                       double eps, double* mean, double* rstd) {
  using acc = acc_t<T>;
  const int64_t Hp = (s.Ho - 1) * s.sh + (s.kh - 1) * s.dh + 1;
  const int64_t Wp = (s.Wo - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  parallel_for(0, s.N * s.C, grain_for(Hp * Wp * s.kh * s.kw), [&](int64_t p0, int64_t p1) {
    std::vector<acc> pad(Hp * Wp), conv = scratch<T>(std::max(s.W, kBlock)), out = scratch<T>(s.Q());
    std::vector<acc> wv(s.kh * s.kw);
    for (int64_t plane = p0; plane < p1; ++plane) {
      if (normalize) {
        plane_stats(x + plane * s.P(), s.P(), eps, mean + plane, rstd + plane, conv.data());
      } else {
        mean[plane] = 0.0, rstd[plane] = 1.0;
      }
      const PlaneNorm<acc> q = plane_norm<acc>(mean[plane], rstd[plane]);
      padded_rows(x + plane * s.P(), s, Wp, 0, Hp, q.hi, q.lo, q.rstd, pad.data(), conv.data());
      const T* wp = w + s.w_at(plane / s.C, plane % s.C);
      for (int64_t i = 0; i < s.kh * s.kw; ++i) wv[i] = static_cast<acc>(wp[i]);
      const acc bias =
          b != nullptr ? static_cast<acc>(b[s.b_at(plane / s.C, plane % s.C)]) : acc(0);
      T* yp = y + plane * s.Q();
      acc* o = out_ptr(yp, out.data());
      depthwise_plane(pad.data(), Wp, wv.data(), s.kh, s.kw, s.sh, s.sw, s.dh, s.dw, s.Ho, s.Wo,
                      bias, o);
      store<T>(o, s.Q(), yp);
    }
  });
}

template <typename T>
void depthwise_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb,
                        const Geometry& s, const NormParams<acc_t<T>>& q, bool normalized) {
  using acc = acc_t<T>;
  const int64_t Hp = (s.Ho - 1) * s.sh + (s.kh - 1) * s.dh + 1;
  const int64_t Wp = (s.Wo - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  parallel_for(0, s.N * s.C, grain_for(2 * Hp * Wp * s.kh * s.kw), [&](int64_t p0, int64_t p1) {
    std::vector<acc> pad(Hp * Wp), gpad(Hp * Wp), g(s.Q()), wv(s.kh * s.kw);
    std::vector<acc> conv = scratch<T>(std::max({s.W, s.Q(), s.P()})), out = scratch<T>(s.P());
    std::vector<double> gwd(s.kh * s.kw);
    // gy zero-padded by the kernel extent on every side (its border stays zero), and the flipped
    // kernel, for the stride-1 input gradient.
    const bool unit_stride = s.sh == 1 && s.sw == 1;
    const int64_t eh = (s.kh - 1) * s.dh, ew = (s.kw - 1) * s.dw, Wg = s.Wo + 2 * ew;
    std::vector<acc> gpadded(unit_stride ? (s.Ho + 2 * eh) * Wg : 0, acc(0)), wflip(s.kh * s.kw);
    // Every input pixel is reached by some output window: the correlation can write gx directly.
    const bool direct = unit_stride && Hp - s.pt >= s.H && Wp - s.pl >= s.W;
    for (int64_t plane = p0; plane < p1; ++plane) {
      const acc hi = q.hi[plane], lo = q.lo[plane], r = q.rstd[plane];
      padded_rows(x + plane * s.P(), s, Wp, 0, Hp, hi, lo, r, pad.data(), conv.data());
      const T* wp = w + s.w_at(plane / s.C, plane % s.C);
      for (int64_t i = 0; i < s.kh * s.kw; ++i) wv[i] = static_cast<acc>(wp[i]);
      const acc* gp = load(gy + plane * s.Q(), s.Q(), g.data());
      gb[plane] = static_cast<T>(sum(gp, s.Q()));
      // Weight gradient: each tap is a dot product of gy with a shifted view of the padded plane.
      std::fill(gwd.begin(), gwd.end(), 0.0);
      for (int64_t i = 0; i < s.kh * s.kw; ++i) wflip[i] = wv[s.kh * s.kw - 1 - i];
      if (unit_stride) {
        // Stride 1: the input gradient is a correlation of the zero-padded gy with the flipped
        // kernel, computed like the forward (register-blocked, each output stored once).
        depthwise_weight_grad(pad.data(), Wp, s.kh, s.kw, 1, 1, s.dh, s.dw, s.Ho, s.Wo, gp,
                              gwd.data());
        for (int64_t r = 0; r < s.Ho; ++r) {
          std::copy_n(gp + r * s.Wo, s.Wo, gpadded.data() + (r + eh) * Wg + ew);
        }
        if (direct) {  // only the H x W interior, straight into the gradient plane
          depthwise_plane(gpadded.data() + s.pt * Wg + s.pl, Wg, wflip.data(), s.kh, s.kw, 1, 1,
                          s.dh, s.dw, s.H, s.W, acc(0), out_ptr(gx + plane * s.P(), out.data()));
        } else {
          depthwise_plane(gpadded.data(), Wg, wflip.data(), s.kh, s.kw, 1, 1, s.dh, s.dw, Hp, Wp,
                          acc(0), gpad.data());
        }
      } else {
        std::fill(gpad.begin(), gpad.end(), acc(0));
        depthwise_plane_backward(pad.data(), Wp, wv.data(), s.kh, s.kw, s.sh, s.sw, s.dh, s.dw,
                                 s.Ho, s.Wo, gp, gwd.data(), gpad.data());
      }
      for (int64_t i = 0; i < s.kh * s.kw; ++i) gw[plane * s.kh * s.kw + i] = static_cast<T>(gwd[i]);
      // gpad now holds the gradient with respect to the padded xh; its interior is g(xh).
      const T* xp = x + plane * s.P();
      T* gxp = gx + plane * s.P();
      const int64_t rows = std::min(s.H, Hp - s.pt), cols = std::min(s.W, Wp - s.pl);
      // The interior as one contiguous plane (in gx itself for float/double); input pixels that no
      // output window reaches (past the last tap) get g = 0.
      acc* o = out_ptr(gxp, out.data());
      for (int64_t ih = 0; !direct && ih < s.H; ++ih) {
        acc* orow = o + ih * s.W;
        const int64_t n = ih < rows ? std::max<int64_t>(cols, 0) : 0;
        std::copy_n(gpad.data() + (ih + s.pt) * Wp + s.pl, n, orow);
        std::fill(orow + n, orow + s.W, acc(0));
      }
      if (normalized) {
        const acc* xv = load(xp, s.P(), conv.data());
        double sg = 0.0, sgxh = 0.0;
        grad_sums(o, xv, s.P(), hi, lo, r, &sg, &sgxh);
        normalize_backward(o, xv, s.P(), hi, lo, r, static_cast<acc>(sg / double(s.P())),
                           static_cast<acc>(sgxh / double(s.P())), o);
      }
      store<T>(o, s.P(), gxp);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// General grouped / dense convolution: im2col of normalized tiles and GEMMs.

// Output rows per tile: the column tile (K x rows * Wo) stays around 1 MiB (in L2).
int64_t tile_rows(const Geometry& s) {
  const int64_t per_row = std::max<int64_t>(1, s.K() * s.Wo);
  return std::max<int64_t>(1, std::min(s.Ho, (int64_t(1) << 18) / per_row));
}

// Columns for output rows [r0, r1) of group g of one sample: cols[k, (oh - r0) * Wo + ow] with
// k = (ci * kh + i) * kw + j holds xh[ci, oh * sh - pt + i * dh, ow * sw - pl + j * dw] (0 outside).
// Each channel's input rows are normalized once into a zero-padded strip (`strip`, sized by
// strip_size), from which the kh * kw column rows are plain copies.
int64_t strip_rows(const Geometry& s, int64_t R) { return (R - 1) * s.sh + (s.kh - 1) * s.dh + 1; }
int64_t strip_width(const Geometry& s) { return (s.Wo - 1) * s.sw + (s.kw - 1) * s.dw + 1; }

template <typename T>
void im2col(const T* xs, const Geometry& s, int64_t g, int64_t r0, int64_t r1,
            const NormParams<acc_t<T>>& q, int64_t qbase, acc_t<T>* cols, acc_t<T>* strip,
            acc_t<T>* conv) {
  using acc = acc_t<T>;
  const int64_t L = (r1 - r0) * s.Wo, Wp = strip_width(s);
  const int64_t rows = strip_rows(s, r1 - r0);
  for (int64_t ci = 0; ci < s.Cg; ++ci) {
    const int64_t c = g * s.Cg + ci;
    // Padded rows r0 * sh .. r0 * sh + rows of this channel.
    padded_rows(xs + c * s.P(), s, Wp, r0 * s.sh, r0 * s.sh + rows, q.hi[qbase + c],
                q.lo[qbase + c], q.rstd[qbase + c], strip, conv);
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        acc* dst = cols + ((ci * s.kh + i) * s.kw + j) * L;
        for (int64_t oh = r0; oh < r1; ++oh) {
          const acc* src = strip + ((oh - r0) * s.sh + i * s.dh) * Wp + j * s.dw;
          acc* d = dst + (oh - r0) * s.Wo;
          if (s.sw == 1) {
            std::copy_n(src, s.Wo, d);
          } else {
            for (int64_t ow = 0; ow < s.Wo; ++ow) d[ow] = src[ow * s.sw];
          }
        }
      }
    }
  }
}

// Adds the columns of a tile back onto the gradient planes of group g (the transpose of im2col).
template <typename acc>
void col2im(const acc* cols, const Geometry& s, int64_t r0, int64_t r1, acc* gplanes) {
  const int64_t L = (r1 - r0) * s.Wo;
  for (int64_t ci = 0; ci < s.Cg; ++ci) {
    acc* gc = gplanes + ci * s.P();
    for (int64_t i = 0; i < s.kh; ++i) {
      for (int64_t j = 0; j < s.kw; ++j) {
        const acc* src = cols + ((ci * s.kh + i) * s.kw + j) * L;
        const int64_t off = j * s.dw - s.pl;
        const int64_t lo_ow = off >= 0 ? 0 : (-off + s.sw - 1) / s.sw;
        const int64_t hi_ow = std::min(s.Wo, s.W - 1 - off >= 0 ? (s.W - 1 - off) / s.sw + 1 : 0);
        if (hi_ow <= lo_ow) continue;
        for (int64_t oh = r0; oh < r1; ++oh) {
          const int64_t ih = oh * s.sh - s.pt + i * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          scatter_axpy(gc + ih * s.W + lo_ow * s.sw + off, s.sw, src + (oh - r0) * s.Wo + lo_ow,
                       hi_ow - lo_ow, acc(1));
        }
      }
    }
  }
}

template <typename T>
void grouped_forward(const T* x, const T* w, const T* b, T* y, const Geometry& s,
                     const NormParams<acc_t<T>>& q) {
  using acc = acc_t<T>;
  const int64_t R = tile_rows(s), tiles = (s.Ho + R - 1) / R, K = s.K();
  parallel_for(0, s.N * s.groups * tiles, grain_for(s.Cog * K * R * s.Wo), [&](int64_t t0, int64_t t1) {
    std::vector<acc> cols(K * R * s.Wo), conv = scratch<T>(s.W), wbuf(s.Cog * K);
    std::vector<acc> strip(strip_rows(s, R) * strip_width(s));
    std::vector<acc> obuf = scratch<T>(s.Cog * R * s.Wo);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ng = t / tiles, n = ng / s.groups, g = ng % s.groups;
      const int64_t r0 = (t % tiles) * R, r1 = std::min(s.Ho, r0 + R), L = (r1 - r0) * s.Wo;
      im2col(x + n * s.C * s.P(), s, g, r0, r1, q, n * s.C, cols.data(), strip.data(), conv.data());
      const T* wg = w + s.w_at(n, g * s.Cog);
      for (int64_t i = 0; i < s.Cog * K; ++i) wbuf[i] = static_cast<acc>(wg[i]);
      T* yp = y + (n * s.Co + g * s.Cog) * s.Q() + r0 * s.Wo;
      Mat<acc> yt;
      if constexpr (std::is_same_v<T, acc>) {
        yt = {yp, s.Cog, L, s.Q(), 1};
      } else {
        yt = {obuf.data(), s.Cog, L, L, 1};
      }
      gemm(Mat<const acc>{wbuf.data(), s.Cog, K, K, 1}, Mat<const acc>{cols.data(), K, L, L, 1},
           acc(0), yt);
      for (int64_t o = 0; o < s.Cog; ++o) {
        if (b != nullptr) {
          add_scalar(yt.data + o * yt.rs, L, static_cast<acc>(b[s.b_at(n, g * s.Cog + o)]));
        }
        store<T>(yt.data + o * yt.rs, L, yp + o * s.Q());
      }
    }
  });
}

// The input gradient of a stride-1 convolution is itself a stride-1 convolution: of grad_y, with
// the kernel flipped and its in/out channels swapped, padded by (k - 1) * d - p on each side:
//   g[ci, h, w] = sum_{co, i, j} W[co, ci, kh-1-i, kw-1-j] * gy[co, h - pt' + i * dh, w - pl' + j * dw]
// with pt' = (kh - 1) * dh - pt (zero where the row is outside grad_y). When those paddings are all
// >= 0 the backward computes g with the forward's direct kernel; otherwise with GEMMs and col2im.
std::optional<Geometry> transposed_geometry(const Geometry& s) {
  if (s.sh != 1 || s.sw != 1) return std::nullopt;
  Geometry t = s;
  t.C = s.Co, t.H = s.Ho, t.W = s.Wo, t.Co = s.C, t.Cg = s.Cog, t.Cog = s.Cg;
  t.pt = (s.kh - 1) * s.dh - s.pt, t.pl = (s.kw - 1) * s.dw - s.pl;
  t.Ho = s.H, t.Wo = s.W;
  const int64_t pb = s.H + s.pt - s.Ho, pr = s.W + s.pl - s.Wo;  // bottom / right of grad_y
  if (t.pt < 0 || t.pl < 0 || pb < 0 || pr < 0) return std::nullopt;
  return t;
}

// Backward for the geometries the direct kernels do not take (stride > 1, or a padding larger than
// the kernel's extent): per (n, group) task the weight-gradient GEMM, the W^T GEMM and col2im into
// the gradient planes.
template <typename T>
void grouped_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const Geometry& s,
                      const NormParams<acc_t<T>>& q, bool normalized) {
  using acc = acc_t<T>;
  const int64_t R = tile_rows(s), K = s.K();
  // One task per (n, group): it owns that group's weight gradient and input-gradient planes.
  parallel_for(0, s.N * s.groups, grain_for(s.Cog * K * s.Q()), [&](int64_t t0, int64_t t1) {
    std::vector<acc> cols(K * R * s.Wo), conv = scratch<T>(std::max({s.W, s.Wo, s.Cog * R * s.Wo, kBlock}));
    std::vector<acc> strip(strip_rows(s, R) * strip_width(s));
    std::vector<acc> wbuf(s.Cog * K), gwacc(s.Cog * K), gcols(K * R * s.Wo);
    std::vector<acc> gplanes(s.Cg * s.P()), out = scratch<T>(kBlock);
    std::vector<double> gbd(s.Cog);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / s.groups, g = t % s.groups;
      const T* wg = w + s.w_at(n, g * s.Cog);
      for (int64_t i = 0; i < s.Cog * K; ++i) wbuf[i] = static_cast<acc>(wg[i]);
      std::fill(gplanes.begin(), gplanes.end(), acc(0));
      std::fill(gwacc.begin(), gwacc.end(), acc(0));
      std::fill(gbd.begin(), gbd.end(), 0.0);
      for (int64_t r0 = 0; r0 < s.Ho; r0 += R) {
        const int64_t r1 = std::min(s.Ho, r0 + R), L = (r1 - r0) * s.Wo;
        im2col(x + n * s.C * s.P(), s, g, r0, r1, q, n * s.C, cols.data(), strip.data(), conv.data());
        // gy tile (Cog x L) as acc.
        const T* gp = gy + (n * s.Co + g * s.Cog) * s.Q() + r0 * s.Wo;
        Mat<const acc> gt;
        if constexpr (std::is_same_v<T, acc>) {
          gt = {gp, s.Cog, L, s.Q(), 1};
        } else {
          for (int64_t o = 0; o < s.Cog; ++o) convert(gp + o * s.Q(), L, conv.data() + o * L);
          gt = {conv.data(), s.Cog, L, L, 1};
        }
        for (int64_t o = 0; o < s.Cog; ++o) gbd[o] += sum(gt.data + o * gt.rs, L);
        // gW += gy_tile @ cols^T ; gcols = W^T @ gy_tile.
        gemm(gt, Mat<const acc>{cols.data(), L, K, 1, L}, acc(1),
             Mat<acc>{gwacc.data(), s.Cog, K, K, 1});
        gemm(Mat<const acc>{wbuf.data(), K, s.Cog, 1, K}, gt, acc(0),
             Mat<acc>{gcols.data(), K, L, L, 1});
        col2im(gcols.data(), s, r0, r1, gplanes.data());
      }
      for (int64_t o = 0; o < s.Cog; ++o) gb[n * s.Co + g * s.Cog + o] = static_cast<T>(gbd[o]);
      T* gwp = gw + (n * s.Co + g * s.Cog) * K;
      for (int64_t i = 0; i < s.Cog * K; ++i) gwp[i] = static_cast<T>(gwacc[i]);
      // gplanes holds g = dL/dxh for the group's input channels: apply the instance-norm backward.
      for (int64_t ci = 0; ci < s.Cg; ++ci) {
        const int64_t qi = n * s.C + g * s.Cg + ci;
        plane_input_grad(gplanes.data() + ci * s.P(), x + qi * s.P(), gx + qi * s.P(), s.P(),
                         q.hi[qi], q.lo[qi], q.rstd[qi], normalized, conv.data(), out.data());
      }
    }
  });
}

// Statistics (or mean 0, rstd 1 when not normalizing) for every (n, c).
template <typename T>
void statistics(const T* x, const Geometry& s, bool normalize, double eps, double* mean,
                double* rstd) {
  if (normalize) {
    instance_stats(x, Layout::NCHW, 0, s.N, s.C, s.P(), eps, mean, rstd);
  } else {
    std::fill(mean, mean + s.N * s.C, 0.0);
    std::fill(rstd, rstd + s.N * s.C, 1.0);
  }
}

// ---------------------------------------------------------------------------------------------
// Stride 1, grouped or dense: register-blocked direct convolution (direct_conv.h) or Winograd
// (winograd.h) on bands of normalized, zero-padded rows in the padded-width layout. No column
// matrix: each normalized input value is written once per band and read from L1/L2 by every tap
// and output channel.

// Output rows per band: as many as keep the band's input (cin channels of R + kernel extent rows)
// and output (cout channels of R + 1 rows) within ~448 KiB, so both stay in L2 for the long
// weight-gradient sweeps; at least 2 and even where the plane allows (Winograd's tiles are 2 rows
// high, and a band of one row would also normalize every input row kh times).
int64_t band_rows(const Geometry& s, int64_t Wp, int64_t cin, int64_t cout, int64_t value_size) {
  const int64_t row = (cin + cout) * Wp * value_size;
  const int64_t fixed = (cin * ((s.kh - 1) * s.dh + 1) + cout) * Wp * value_size;
  int64_t R = std::max<int64_t>((448 * 1024 - fixed) / row, 2);
  if (R % 2 == 1 && R > 2) --R;
  return std::clamp<int64_t>(R, 1, s.Ho);
}

// Flat shifts of the kh x kw taps in a padded-width layout of row width Wp.
std::vector<int64_t> tap_shifts(const Geometry& s, int64_t Wp) {
  std::vector<int64_t> shift(s.kh * s.kw);
  for (int64_t i = 0; i < s.kh; ++i)
    for (int64_t j = 0; j < s.kw; ++j) shift[i * s.kw + j] = i * s.dh * Wp + j * s.dw;
  return shift;
}

// Padded-width bands of one group: `rows` = band output rows plus the kernel's extent, per channel.
struct Bands {
  int64_t Wp, R, count, cs, size;

  template <typename acc>
  Bands(const Geometry& s, int64_t cin, acc /*tag*/) {
    Wp = strip_width(s);
    R = band_rows(s, Wp, cin, s.Cog, sizeof(acc));
    count = (s.Ho + R - 1) / R;
    // One row more than the kernel's extent: Winograd's 2 x 2 tiles read one past an odd R.
    cs = (R + (s.kh - 1) * s.dh + 1) * Wp;
    size = cin * cs + direct_slack<acc>() + (s.kw - 1) * s.dw;  // the tail stays zero
  }
  // Row stride of a band's output: R + 1 rows (Winograd writes row R of an odd R) and the slack.
  template <typename acc>
  int64_t out_stride(acc /*tag*/) const {
    return (R + 1) * Wp + direct_slack<acc>();
  }
};

// Output rows [r0, r1) of `cout` channels from a padded-width result (rows of stride ld) into the
// planes at dst (plane stride `ps`, row width Wo), dropping the garbage columns.
template <typename T>
void store_band(const acc_t<T>* out, int64_t ld, int64_t Wp, int64_t cout, int64_t r0, int64_t r1,
                int64_t Wo, T* dst, int64_t ps) {
  for (int64_t co = 0; co < cout; ++co) {
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t<T>* src = out + co * ld + (r - r0) * Wp;
      T* d = dst + co * ps + r * Wo;
      if constexpr (std::is_same_v<T, acc_t<T>>) {
        std::copy_n(src, Wo, d);
      } else {
        convert(src, Wo, d);
      }
    }
  }
}

// The stride-1 convolution of a band (cout x cin kernels of geometry s): by the direct kernel or,
// for 3 x 3 kernels without dilation, by Winograd F(2x2, 3x3) (winograd.h: 2.25x fewer multiplies).
// Winograd is only used when normalizing: its transforms add and subtract neighbouring values, so
// one infinite input gives NaN where the direct sum gives +-inf; after instance normalization an
// infinite input has already made its whole plane NaN, and both give the same result.
template <typename acc>
struct BandConv {
  const Geometry& s;
  int64_t cout, cin, Wp, taps;
  bool winograd;
  std::vector<int64_t> shift;
  std::vector<acc> packed, work;

  BandConv(const Geometry& g, int64_t cout_, int64_t cin_, int64_t Wp_, bool normalized)
      : s(g), cout(cout_), cin(cin_), Wp(Wp_), taps(g.kh * g.kw),
        winograd(normalized && g.kh == 3 && g.kw == 3 && g.dh == 1 && g.dw == 1 && g.sh == 1 &&
                 g.sw == 1),
        shift(tap_shifts(g, Wp_)) {
    const int64_t B = direct_block(cout);
    packed.resize(winograd ? winograd_weights_size(cout, cin) : (cout + B - 1) / B * B * cin * taps);
    if (winograd) work.resize(winograd_work_size(cout, cin, s.Wo, sizeof(acc)));
  }
  // w: cout x cin x taps.
  void pack(const acc* w) {
    if (winograd) {
      winograd_weights(w, cout, cin, packed.data());
    } else {
      direct_pack(w, cout, cin, taps, packed.data());
    }
  }
  // Output rows [0, R) of the band into out (row stride Wp, channel stride ld).
  void run(const acc* band, int64_t cs, int64_t R, const acc* bias, acc* out, int64_t ld) {
    if (winograd) {
      winograd_forward(band, cs, cin, Wp, R, s.Wo, packed.data(), bias, cout, out, ld, Wp,
                       work.data());
    } else {
      direct_forward(band, cs, cin, shift.data(), taps, packed.data(), bias, cout, R * Wp, out, ld);
    }
  }
  // Output rows [r0, r1) of the band into the planes at dst (channel stride ps, row width Wo):
  // Winograd writes them there itself where T is acc; otherwise through `out` and store_band.
  template <typename T>
  void run_to_planes(const acc* band, int64_t cs, int64_t r0, int64_t r1, const acc* bias, acc* out,
                     int64_t ld, T* dst, int64_t ps) {
    if constexpr (std::is_same_v<T, acc>) {
      if (winograd) {
        winograd_forward(band, cs, cin, Wp, r1 - r0, s.Wo, packed.data(), bias, cout,
                         dst + r0 * s.Wo, ps, s.Wo, work.data());
        return;
      }
    }
    run(band, cs, r1 - r0, bias, out, ld);
    store_band(out, ld, Wp, cout, r0, r1, s.Wo, dst, ps);
  }

  // Weight gradient: partial sums over bands in `part` (part_size() values, zeroed first), from
  // each band and the output gradient of its R rows in padded width (g[o * ldg + r * Wp + c], zero
  // at the garbage columns and up to round_up(R * Wp, 64 bytes)); finish() writes cout x cin x taps.
  int64_t part_size() const {
    return winograd ? winograd_part_size(cout, cin, sizeof(acc))
                    : direct_part_size<acc>(cout, cin * taps);
  }
  void weight_grad(const acc* band, int64_t cs, int64_t R, const acc* g, int64_t ldg, acc* part) {
    if (winograd) {
      winograd_weight_grad(band, cs, cin, Wp, R, s.Wo, g, ldg, cout, part, work.data());
      return;
    }
    if (static_cast<int64_t>(offsets.size()) != cin * taps || offsets_cs != cs) {
      offsets.resize(cin * taps), offsets_cs = cs;
      for (int64_t ci = 0; ci < cin; ++ci)
        for (int64_t k = 0; k < taps; ++k) offsets[ci * taps + k] = ci * cs + shift[k];
    }
    direct_weight_grad(g, ldg, cout, band, offsets.data(), cin * taps, R * Wp, part);
  }
  void finish(const acc* part, acc* gw) {
    if (winograd) {
      winograd_weight_grad_finish(part, cout, cin, gw);
    } else {
      direct_reduce(part, cout * cin * taps, gw);
    }
  }

 private:
  std::vector<int64_t> offsets;
  int64_t offsets_cs = -1;
};

// Band b of the zero-padded (normalized) rows of channels c0 .. c0 + cin of one sample (hi, lo, rstd
// of those channels, or null: no normalization); every row of the band is written (rows past the
// padded plane are zero), so no stale values are read.
template <typename T>
void fill_band(const T* xs, const Geometry& s, const Bands& bd, int64_t b, int64_t c0, int64_t cin,
               const acc_t<T>* hi, const acc_t<T>* lo, const acc_t<T>* rstd, acc_t<T>* band,
               acc_t<T>* conv) {
  const int64_t r0 = b * bd.R, rows = bd.cs / bd.Wp;
  // The input rows of the band, clipped to the plane: one short run per channel, which the hardware
  // prefetcher does not ramp up for; they are prefetched one channel ahead instead.
  const int64_t ih0 = std::clamp<int64_t>(r0 - s.pt, 0, s.H), ih1 = std::clamp<int64_t>(r0 + rows - s.pt, 0, s.H);
  const auto prefetch = [&](int64_t c) {
    prefetch_bytes(xs + c * s.P() + ih0 * s.W, (ih1 - ih0) * s.W * int64_t(sizeof(T)));
  };
  if (cin > 0) prefetch(c0);
  for (int64_t ci = 0; ci < cin; ++ci) {
    const int64_t c = c0 + ci;
    if (ci + 1 < cin) prefetch(c + 1);
    padded_rows(xs + c * s.P(), s, bd.Wp, r0, r0 + rows, hi ? hi[ci] : acc_t<T>(0),
                lo ? lo[ci] : acc_t<T>(0), rstd ? rstd[ci] : acc_t<T>(1), band + ci * bd.cs, conv);
  }
}

// With enough (n, group) pairs for the threads, one task per pair computes the statistics of its
// planes first (x then comes from cache for the bands); otherwise the statistics are a separate
// pass and the tasks are (n, group, band).
template <typename T>
void direct_grouped_forward(const T* x, const T* w, const T* b, T* y, const Geometry& s,
                            bool normalize, double eps, double* mean, double* rstd) {
  using acc = acc_t<T>;
  const Bands bd(s, s.Cg, acc(0));
  const int64_t K = s.K(), ld = bd.out_stride(acc(0));
  const int64_t B = direct_block(s.Cog), cpad = (s.Cog + B - 1) / B * B;
  const bool per_group = s.N * s.groups >= 2 * at::get_num_threads();
  std::optional<NormParams<acc>> q;
  if (!per_group) {
    statistics(x, s, normalize, eps, mean, rstd);
    q.emplace(mean, rstd, s.N * s.C);
  }
  const int64_t bands_per_task = per_group ? bd.count : 1;
  const int64_t tasks = s.N * s.groups * bd.count / bands_per_task;
  parallel_for(0, tasks, grain_for(s.Cog * K * bd.R * bd.Wp * bands_per_task), [&](int64_t t0, int64_t t1) {
    BandConv<acc> conv2d(s, s.Cog, s.Cg, bd.Wp, normalize);
    std::vector<acc> band(bd.size), wnat(s.Cog * K), bias(cpad, acc(0)), hi(s.Cg), lo(s.Cg), rs(s.Cg);
    std::vector<acc> out(cpad * ld), conv = scratch<T>(std::max(s.W, kBlock));
    int64_t packed_for = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ng = t * bands_per_task / bd.count, n = ng / s.groups, g = ng % s.groups;
      const int64_t b0 = per_group ? 0 : t % bd.count, b1 = per_group ? bd.count : b0 + 1;
      if (ng != packed_for) {
        const T* wg = w + s.w_at(n, g * s.Cog);
        for (int64_t i = 0; i < s.Cog * K; ++i) wnat[i] = static_cast<acc>(wg[i]);
        conv2d.pack(wnat.data());
        for (int64_t o = 0; o < s.Cog && b != nullptr; ++o)
          bias[o] = static_cast<acc>(b[s.b_at(n, g * s.Cog + o)]);
        for (int64_t ci = 0; ci < s.Cg; ++ci) {
          const int64_t i = n * s.C + g * s.Cg + ci;
          if (per_group && normalize) {
            plane_stats(x + i * s.P(), s.P(), eps, mean + i, rstd + i, conv.data());
          } else if (per_group) {
            mean[i] = 0.0, rstd[i] = 1.0;
          }
          const PlaneNorm<acc> p = plane_norm<acc>(mean[i], rstd[i]);
          hi[ci] = p.hi, lo[ci] = p.lo, rs[ci] = p.rstd;
        }
        packed_for = ng;
      }
      for (int64_t bi = b0; bi < b1; ++bi) {
        const int64_t r0 = bi * bd.R, r1 = std::min(s.Ho, r0 + bd.R);
        fill_band(x + n * s.C * s.P(), s, bd, bi, g * s.Cg, s.Cg, hi.data(), lo.data(), rs.data(),
                  band.data(), conv.data());
        conv2d.run_to_planes(band.data(), bd.cs, r0, r1, bias.data(), out.data(), ld,
                             y + (n * s.Co + g * s.Cog) * s.Q(), s.Q());
      }
    }
  });
}

// For the instance-norm backward of the direct path: the sums over a plane of g = dL/dxh follow
// from grad_y and the weight gradient, without a pass over g (docs/math.md, "The plane sums of the
// input gradient"). With g[ci] = sum_{co, t} W[co, ci, t] * gy[co] shifted by tap t:
//   sum_p g[ci]      = sum_{co, t} W[co, ci, t] * S[co, t]
//   sum_p g[ci] * xh = sum_{co, t} W[co, ci, t] * gW[co, ci, t]
// where S[co, t] is the sum of gy[co] over the outputs whose tap t reads inside the input: a
// rectangle of rows [a_i, b_i) and columns [c_j, d_j) for tap t = (i, j) (stride 1). S is the
// total of gy[co] (the bias gradient) less the rows outside [a_i, b_i) and, within them, the values
// outside [c_j, d_j): only a few border rows are summed whole, and a few values of every row.
struct TapRegionSums {
  int64_t kh, kw, Wo, inner0, inner1;  // rows [inner0, inner1) lie in every [a_i, b_i)
  std::vector<int64_t> a, b, c, d;
  std::vector<double> rows_out;  // cout x kh: the rows outside [a_i, b_i), summed
  std::vector<double> cols_out;  // cout x kh x kw: in the other rows, the values outside [c_j, d_j)
  std::vector<double> inner;     // cout x kw: cols_out's share of the rows [inner0, inner1)

  TapRegionSums(const Geometry& s, int64_t cout)
      : kh(s.kh), kw(s.kw), Wo(s.Wo), inner0(0), inner1(s.Ho), a(s.kh), b(s.kh), c(s.kw),
        d(s.kw), rows_out(cout * s.kh), cols_out(cout * s.kh * s.kw), inner(cout * s.kw) {
    // Tap (i, j) of output (oh, ow) reads input row oh - pt + i * dh and column ow - pl + j * dw.
    for (int64_t i = 0; i < kh; ++i) {
      a[i] = std::clamp<int64_t>(s.pt - i * s.dh, 0, s.Ho);
      b[i] = std::clamp<int64_t>(s.H + s.pt - i * s.dh, a[i], s.Ho);
      inner0 = std::max(inner0, a[i]), inner1 = std::min(inner1, b[i]);
    }
    inner1 = std::max(inner0, inner1);
    for (int64_t j = 0; j < kw; ++j) {
      c[j] = std::clamp<int64_t>(s.pl - j * s.dw, 0, s.Wo);
      d[j] = std::clamp<int64_t>(s.W + s.pl - j * s.dw, c[j], s.Wo);
    }
  }
  void clear() {
    for (auto* v : {&rows_out, &cols_out, &inner}) std::fill(v->begin(), v->end(), 0.0);
  }
  // Output row oh of channel co (Wo values).
  template <typename acc>
  void add_row(int64_t co, int64_t oh, const acc* row) {
    const bool everywhere = inner0 <= oh && oh < inner1;
    for (int64_t j = 0; j < kw; ++j) {
      double out = 0.0;
      for (int64_t k = 0; k < c[j]; ++k) out += row[k];
      for (int64_t k = d[j]; k < Wo; ++k) out += row[k];
      if (everywhere) {
        inner[co * kw + j] += out;
        continue;
      }
      for (int64_t i = 0; i < kh; ++i) {
        if (a[i] <= oh && oh < b[i]) cols_out[(co * kh + i) * kw + j] += out;
      }
    }
    if (everywhere) return;
    double full = 0.0;
    for (int64_t k = 0; k < Wo; ++k) full += row[k];
    for (int64_t i = 0; i < kh; ++i) {
      if (oh < a[i] || oh >= b[i]) rows_out[co * kh + i] += full;
    }
  }
  // S[co, (i, j)] from the total of gy[co].
  double at(int64_t co, int64_t i, int64_t j, double total) const {
    return total - rows_out[co * kh + i] - cols_out[(co * kh + i) * kw + j] - inner[co * kw + j];
  }
};

// Backward, one task per (n, group) (it owns the group's weight gradient and input planes):
// 1. per band of output rows: the weight gradient from the normalized band and grad_y laid out in
//    padded width (zero at the garbage columns), and the bias gradient;
// 2. the instance-norm backward's plane sums of g = dL/dxh from step 1's results (TapRegionSums);
// 3. per band of input rows: g = grad_y (zero-padded) convolved with the flipped, transposed
//    kernel (the transposed geometry `tg`), by the forward kernel, and at once, while those rows
//    are in cache, the instance-norm backward that turns them into dL/dx.
template <typename T>
void direct_grouped_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb,
                             const Geometry& s, const Geometry& tg, const NormParams<acc_t<T>>& q,
                             bool normalized) {
  using acc = acc_t<T>;
  constexpr int64_t V = 64 / sizeof(acc);
  const Bands bd(s, s.Cg, acc(0)), bt(tg, tg.Cg, acc(0));
  const int64_t taps = s.kh * s.kw, K = s.K();
  const int64_t ldg = (bd.R * bd.Wp + V - 1) / V * V, ldt = bt.out_stride(acc(0));
  const int64_t B = direct_block(s.Cg), cpad = (s.Cg + B - 1) / B * B;
  parallel_for(0, s.N * s.groups, grain_for(3 * s.Cog * K * s.Q()), [&](int64_t t0, int64_t t1) {
    BandConv<acc> forward(s, s.Cog, s.Cg, bd.Wp, normalized);
    BandConv<acc> transposed(tg, s.Cg, s.Cog, bt.Wp, normalized);
    // gyf: + one vector, read past the last row.
    std::vector<acc> band(std::max(bd.size, bt.size)), gyf(s.Cog * ldg + V), part(forward.part_size());
    std::vector<acc> wt(s.Cg * s.Cog * taps), out(cpad * ldt);
    std::vector<acc> gwacc(s.Cog * K);
    // g = dL/dxh of the group's input planes (step 2 writes every value): straight into gx where
    // it has the accumulation type (step 3 then works in place), else into an uninitialized buffer.
    std::unique_ptr<acc[]> gbuf(std::is_same_v<T, acc> ? nullptr : new acc[s.Cg * s.P()]);
    std::vector<acc> conv = scratch<T>(std::max({s.W, s.Wo, kBlock})), obuf = scratch<T>(kBlock);
    std::vector<double> gbd(s.Cog), sg(s.Cg), sgxh(s.Cg);
    TapRegionSums region(s, s.Cog);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / s.groups, g = t % s.groups, q0 = n * s.C + g * s.Cg;
      const T* gyg = gy + (n * s.Co + g * s.Cog) * s.Q();
      acc* gplanes = gbuf.get();
      if constexpr (std::is_same_v<T, acc>) gplanes = gx + (n * s.C + g * s.Cg) * s.P();
      // 1. Weight and bias gradients.
      std::fill(part.begin(), part.end(), acc(0));
      std::fill(gbd.begin(), gbd.end(), 0.0);
      region.clear();
      for (int64_t bi = 0; bi < bd.count; ++bi) {
        const int64_t r0 = bi * bd.R, r1 = std::min(s.Ho, r0 + bd.R), L = (r1 - r0) * bd.Wp;
        fill_band(x + n * s.C * s.P(), s, bd, bi, g * s.Cg, s.Cg, q.hi.data() + q0,
                  q.lo.data() + q0, q.rstd.data() + q0, band.data(), conv.data());
        for (int64_t co = 0; co < s.Cog; ++co) {
          acc* row = gyf.data() + co * ldg;
          for (int64_t r = r0; r < r1; ++r) {
            acc* d = row + (r - r0) * bd.Wp;
            const acc* src = load(gyg + co * s.Q() + r * s.Wo, s.Wo, conv.data());
            std::copy_n(src, s.Wo, d);
            std::fill(d + s.Wo, d + bd.Wp, acc(0));
            if (normalized) region.add_row(co, r, d);
          }
          std::fill(row + L, row + ldg, acc(0));
          gbd[co] += sum(row, L);
        }
        forward.weight_grad(band.data(), bd.cs, r1 - r0, gyf.data(), ldg, part.data());
      }
      forward.finish(part.data(), gwacc.data());
      T* gwp = gw + (n * s.Co + g * s.Cog) * K;
      for (int64_t i = 0; i < s.Cog * K; ++i) gwp[i] = static_cast<T>(gwacc[i]);
      for (int64_t o = 0; o < s.Cog; ++o) gb[n * s.Co + g * s.Cog + o] = static_cast<T>(gbd[o]);
      // 2. The plane sums of g = dL/dxh.
      const T* wg = w + s.w_at(n, g * s.Cog);
      for (int64_t ci = 0; ci < s.Cg && normalized; ++ci) {
        double s1 = 0.0, s2 = 0.0;
        for (int64_t co = 0; co < s.Cog; ++co) {
          for (int64_t k = 0; k < taps; ++k) {
            const double wv = static_cast<double>(wg[(co * s.Cg + ci) * taps + k]);
            s1 += wv * region.at(co, k / s.kw, k % s.kw, gbd[co]);
            s2 += wv * static_cast<double>(gwacc[co * K + ci * taps + k]);
          }
        }
        sg[ci] = s1, sgxh[ci] = s2;
      }
      // 3. g = dL/dxh, wt[ci, co, t'] = W[co, ci, taps - 1 - t'], and dL/dx.
      for (int64_t co = 0; co < s.Cog; ++co)
        for (int64_t ci = 0; ci < s.Cg; ++ci)
          for (int64_t k = 0; k < taps; ++k)
            wt[(ci * s.Cog + co) * taps + (taps - 1 - k)] = static_cast<acc>(wg[(co * s.Cg + ci) * taps + k]);
      transposed.pack(wt.data());
      for (int64_t bi = 0; bi < bt.count; ++bi) {
        const int64_t r0 = bi * bt.R, r1 = std::min(tg.Ho, r0 + bt.R);
        fill_band(gy + n * s.Co * s.Q(), tg, bt, bi, g * s.Cog, s.Cog, nullptr, nullptr, nullptr,
                  band.data(), conv.data());
        transposed.run_to_planes(band.data(), bt.cs, r0, r1, nullptr, out.data(), ldt, gplanes,
                                 s.P());
        for (int64_t ci = 0; ci < s.Cg; ++ci) {
          const int64_t qi = q0 + ci, off = qi * s.P() + r0 * s.W;
          input_grad_from_sums(gplanes + ci * s.P() + r0 * s.W, x + off, gx + off, (r1 - r0) * s.W,
                               s.P(), q.hi[qi], q.lo[qi], q.rstd[qi], normalized, sg[ci], sgxh[ci],
                               conv.data(), obuf.data());
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_conv_cpu(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    bool normalize, double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_conv_args(x_in, weight, bias, stride, padding, dilation, groups, /*broadcast=*/true);
  const Layout l = layout_of(x_in);
  const at::Tensor x = x_in.contiguous();  // computed in NCHW (a copy for channels_last)
  const at::Tensor w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  const Geometry s = geometry(x, w, stride, padding, dilation, groups, b);
  auto y = at::empty({s.N, s.Co, s.Ho, s.Wo}, x.options());
  at::Tensor mean, rstd;
  std::tie(mean, rstd) = empty_stats(x);
  if (s.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dynamic_conv", [&] {
      using acc = acc_t<scalar_t>;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* bp = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
      if (s.Co == 0) {  // no output channels: the statistics only
        statistics(xp, s, normalize, eps, mean.mutable_data_ptr<double>(),
                   rstd.mutable_data_ptr<double>());
      } else if (s.depthwise()) {
        depthwise_forward(xp, w.const_data_ptr<scalar_t>(), bp, y.mutable_data_ptr<scalar_t>(), s,
                          normalize, eps, mean.mutable_data_ptr<double>(),
                          rstd.mutable_data_ptr<double>());
      } else {
        double* mp = mean.mutable_data_ptr<double>();
        double* rp = rstd.mutable_data_ptr<double>();
        if (s.sh == 1 && s.sw == 1 && direct_kernels_fast()) {
          direct_grouped_forward(xp, w.const_data_ptr<scalar_t>(), bp,
                                 y.mutable_data_ptr<scalar_t>(), s, normalize, eps, mp, rp);
        } else {
          statistics(xp, s, normalize, eps, mp, rp);
          const NormParams<acc> q(mp, rp, s.N * s.C);
          grouped_forward(xp, w.const_data_ptr<scalar_t>(), bp, y.mutable_data_ptr<scalar_t>(), s, q);
        }
      }
    });
  }
  return {y.contiguous(memory_format(l)), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_conv_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& mean, const at::Tensor& rstd, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool normalize) {
  check_conv_args(x_in, weight, c10::nullopt, stride, padding, dilation, groups,
                  /*broadcast=*/true);
  check_stats(x_in, mean, rstd);
  const Layout l = layout_of(x_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor w = weight.contiguous();
  const Geometry s = geometry(x, w, stride, padding, dilation, groups);
  check_grad_y(grad_y, x, s.N, s.Co, s.Ho, s.Wo);
  const at::Tensor gy = grad_y.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, x.options().memory_format(at::MemoryFormat::Contiguous));
  // Per-sample weight gradients (N, ...), also for a batch-1 weight: autograd sums those.
  auto gw = at::empty({s.N, w.size(1), w.size(2), w.size(3), w.size(4)}, x.options());
  auto gb = at::empty({s.N, s.Co}, x.options());
  if (s.N > 0 && s.Co == 0) {
    gx.zero_();  // nothing depends on x: y is empty
  } else if (s.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "dynamic_conv_backward", [&] {
          using acc = acc_t<scalar_t>;
          const NormParams<acc> q(m.const_data_ptr<double>(), r.const_data_ptr<double>(), s.N * s.C);
          const scalar_t* gyp = gy.const_data_ptr<scalar_t>();
          const scalar_t* xp = x.const_data_ptr<scalar_t>();
          const scalar_t* wp = w.const_data_ptr<scalar_t>();
          scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
          scalar_t* gwp = gw.mutable_data_ptr<scalar_t>();
          scalar_t* gbp = gb.mutable_data_ptr<scalar_t>();
          const std::optional<Geometry> tg = transposed_geometry(s);
          if (s.depthwise()) {
            depthwise_backward(gyp, xp, wp, gxp, gwp, gbp, s, q, normalize);
          } else if (tg && direct_kernels_fast()) {
            direct_grouped_backward(gyp, xp, wp, gxp, gwp, gbp, s, *tg, q, normalize);
          } else {
            grouped_backward(gyp, xp, wp, gxp, gwp, gbp, s, q, normalize);
          }
        });
  }
  return {gx.contiguous(memory_format(l)), gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CPU, m) {
  m.impl("dynamic_conv", &dynamic_conv_cpu);
  m.impl("dynamic_conv_backward", &dynamic_conv_backward_cpu);
}

}  // namespace din_ops::cpu
