// Instance normalization on the CPU.
//
//   forward : mean, rstd per (n, c) plane;  y = (x - mean) * rstd
//   backward: gx = rstd * (gy - mean_p(gy) - xh * mean_p(gy * xh)),  xh = (x - mean) * rstd
//
// NCHW: one task per plane, statistics and the elementwise pass back to back while the plane is in
// L1/L2, so x is read from memory once; y (gx) of 8 MiB and more is written with non-temporal
// stores (common.h: stream_output). NHWC: per sample, fixed row chunks with per-channel partial
// sums (vectorized over channels), then the elementwise pass. Statistics and xh are accumulated in
// float (double for double data) with the shifted sums of din_ops/math.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "common.h"

namespace din_ops::cpu {
namespace {

template <typename T>
void forward_nchw(const T* x, T* y, int64_t planes, int64_t P, double eps, double* mean,
                  double* rstd) {
  using acc = acc_t<T>;
  const int64_t grain = std::max<int64_t>(1, 32768 / P);
  const bool stream = stream_output<T>(planes * P);
  at::parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
    auto in = scratch<T>(kBlock), out = scratch<T>(kBlock);
    for (int64_t plane = b; plane < e; ++plane) {
      const T* xp = x + plane * P;
      T* yp = y + plane * P;
      const acc shift = static_cast<acc>(xp[0]);
      double s1 = 0.0, s2 = 0.0;
      for (int64_t i = 0; i < P; i += kBlock) {
        const int64_t len = std::min(kBlock, P - i);
        shifted_sums(load(xp + i, len, in.data()), len, shift, &s1, &s2);
      }
      const auto m = math::moments_from_shifted_sums(shift, s1, s2, double(P), eps);
      mean[plane] = m.mean;
      rstd[plane] = m.rstd;
      const NormParams<acc> q(&m.mean, &m.rstd, 1);
      for (int64_t i = 0; i < P; i += kBlock) {
        const int64_t len = std::min(kBlock, P - i);
        acc* o = out_ptr(yp + i, out.data());
        normalize(load(xp + i, len, in.data()), len, q.hi[0], q.lo[0], q.rstd[0], o, stream);
        store<T>(o, len, yp + i);
      }
    }
    if (stream) stream_fence();
  });
}

template <typename T>
void forward_nhwc(const T* x, T* y, int64_t N, int64_t C, int64_t P, double eps, double* mean,
                  double* rstd) {
  using acc = acc_t<T>;
  instance_stats(x, Layout::NHWC, 0, N, C, P, eps, mean, rstd);
  const int64_t rows = std::max<int64_t>(1, kBlock * 16 / C);
  const int64_t chunks = (P + rows - 1) / rows;
  for (int64_t n = 0; n < N; ++n) {
    const NormParams<acc> q(mean + n * C, rstd + n * C, C);
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      auto in = scratch<T>(rows * C), out = scratch<T>(rows * C);
      for (int64_t k = b; k < e; ++k) {
        const int64_t r0 = k * rows, len = std::min(rows, P - r0);
        const int64_t off = (n * P + r0) * C;
        acc* o = out_ptr(y + off, out.data());
        normalize_rows(load(x + off, len * C, in.data()), len, C, q.hi.data(), q.lo.data(),
                       q.rstd.data(), o);
        store<T>(o, len * C, y + off);
      }
    });
  }
}

template <typename T>
void backward_nchw(const T* gy, const T* x, const double* mean, const double* rstd, T* gx,
                   int64_t planes, int64_t P) {
  using acc = acc_t<T>;
  const int64_t grain = std::max<int64_t>(1, 16384 / P);
  const bool stream = stream_output<T>(planes * P);
  at::parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
    auto gbuf = scratch<T>(kBlock), xbuf = scratch<T>(kBlock), out = scratch<T>(kBlock);
    for (int64_t plane = b; plane < e; ++plane) {
      const int64_t base = plane * P;
      const NormParams<acc> q(mean + plane, rstd + plane, 1);
      double sg = 0.0, sgxh = 0.0;
      for (int64_t i = 0; i < P; i += kBlock) {
        const int64_t len = std::min(kBlock, P - i);
        grad_sums(load(gy + base + i, len, gbuf.data()), load(x + base + i, len, xbuf.data()), len,
                  q.hi[0], q.lo[0], q.rstd[0], &sg, &sgxh);
      }
      const acc mg = static_cast<acc>(sg / double(P)), mgxh = static_cast<acc>(sgxh / double(P));
      for (int64_t i = 0; i < P; i += kBlock) {
        const int64_t len = std::min(kBlock, P - i);
        acc* o = out_ptr(gx + base + i, out.data());
        normalize_backward(load(gy + base + i, len, gbuf.data()),
                           load(x + base + i, len, xbuf.data()), len, q.hi[0], q.lo[0], q.rstd[0],
                           mg, mgxh, o, stream);
        store<T>(o, len, gx + base + i);
      }
    }
    if (stream) stream_fence();
  });
}

template <typename T>
void backward_nhwc(const T* gy, const T* x, const double* mean, const double* rstd, T* gx,
                   int64_t N, int64_t C, int64_t P) {
  using acc = acc_t<T>;
  const int64_t rows = std::max<int64_t>(1, kBlock * 16 / C);
  const int64_t chunks = (P + rows - 1) / rows;
  for (int64_t n = 0; n < N; ++n) {
    const NormParams<acc> q(mean + n * C, rstd + n * C, C);
    const T* gyn = gy + n * P * C;
    const T* xn = x + n * P * C;
    // Per-chunk partial sums, added in chunk order (deterministic for any thread count).
    std::vector<double> part(2 * chunks * C, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      auto gbuf = scratch<T>(rows * C), xbuf = scratch<T>(rows * C);
      for (int64_t k = b; k < e; ++k) {
        const int64_t r0 = k * rows, len = std::min(rows, P - r0);
        grad_sums_rows(load(gyn + r0 * C, len * C, gbuf.data()),
                       load(xn + r0 * C, len * C, xbuf.data()), len, C, q.hi.data(), q.lo.data(),
                       q.rstd.data(), &part[(2 * k) * C], &part[(2 * k + 1) * C]);
      }
    });
    std::vector<acc> mg(C), mgxh(C);
    for (int64_t c = 0; c < C; ++c) {
      double sg = 0.0, sgxh = 0.0;
      for (int64_t k = 0; k < chunks; ++k) {
        sg += part[(2 * k) * C + c];
        sgxh += part[(2 * k + 1) * C + c];
      }
      mg[c] = static_cast<acc>(sg / double(P));
      mgxh[c] = static_cast<acc>(sgxh / double(P));
    }
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      auto gbuf = scratch<T>(rows * C), xbuf = scratch<T>(rows * C), out = scratch<T>(rows * C);
      for (int64_t k = b; k < e; ++k) {
        const int64_t r0 = k * rows, len = std::min(rows, P - r0);
        const int64_t off = (n * P + r0) * C;
        acc* o = out_ptr(gx + off, out.data());
        normalize_backward_rows(load(gy + off, len * C, gbuf.data()),
                                load(x + off, len * C, xbuf.data()), len, C, q.hi.data(),
                                q.lo.data(), q.rstd.data(), mg.data(), mgxh.data(), o);
        store<T>(o, len * C, gx + off);
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_cpu(const at::Tensor& x_in,
                                                                 double eps) {
  check_input(x_in);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto y = at::empty_like(x, x.options().memory_format(memory_format(layout)));
  at::Tensor mean, rstd;
  std::tie(mean, rstd) = empty_stats(x);
  if (x.numel() == 0) return {y, mean, rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm", [&] {
    if (layout == Layout::NCHW) {
      forward_nchw(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), N * C, P, eps,
                   mean.mutable_data_ptr<double>(), rstd.mutable_data_ptr<double>());
    } else {
      forward_nhwc(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), N, C, P, eps,
                   mean.mutable_data_ptr<double>(), rstd.mutable_data_ptr<double>());
    }
  });
  return {y, mean, rstd};
}

at::Tensor instance_norm_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in,
                                      const at::Tensor& mean, const at::Tensor& rstd) {
  check_input(x_in);
  check_grad(grad_y, x_in, x_in.size(1));
  check_stats(x_in, mean, rstd);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor gy = in_layout(grad_y, layout);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto gx = at::empty_like(x, x.options().memory_format(memory_format(layout)));
  if (x.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_backward", [&] {
        if (layout == Layout::NCHW) {
          backward_nchw(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                        m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                        gx.mutable_data_ptr<scalar_t>(), N * C, P);
        } else {
          backward_nhwc(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                        m.const_data_ptr<double>(), r.const_data_ptr<double>(),
                        gx.mutable_data_ptr<scalar_t>(), N, C, P);
        }
      });
  return gx;
}

// Mean and biased variance per (n, c) plane, (N, C) float64, reading x once and writing nothing
// else. The shifted sums give rstd = 1 / sqrt(var) (with eps = 0, and 0 for a zero variance);
// var = 1 / rstd^2 is then within a few ulp of the double-precision variance of the sums.
std::tuple<at::Tensor, at::Tensor> instance_stats_cpu(const at::Tensor& x_in) {
  check_input(x_in);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto [mean, var] = empty_stats(x);
  if (x.numel() == 0) return {mean, var};
  double* m = mean.mutable_data_ptr<double>();
  double* v = var.mutable_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_stats", [&] {
    instance_stats(x.const_data_ptr<scalar_t>(), layout, 0, N, C, P, 0.0, m, v);
  });
  for (int64_t i = 0; i < N * C; ++i) v[i] = v[i] == 0.0 ? 0.0 : 1.0 / (v[i] * v[i]);
  return {mean, var};
}

// gx = (gm + 2 * gv * (x - mean)) / P per plane: the elementwise pass of a per-plane affine map,
// ((x - hi) - lo) * s + b0 with s = 2 gv / P and b0 = gm / P (mean split as hi + lo, so a large
// mean does not cost precision), in x's layout.
template <typename T>
void stats_backward(const T* x, const double* gm, const double* gv, const double* mean, T* gx,
                    Layout l, int64_t N, int64_t C, int64_t P) {
  using acc = acc_t<T>;
  if (l == Layout::NCHW) {
    const int64_t grain = std::max<int64_t>(1, 32768 / P);
    at::parallel_for(0, N * C, grain, [&](int64_t b, int64_t e) {
      auto in = scratch<T>(kBlock), out = scratch<T>(kBlock);
      for (int64_t plane = b; plane < e; ++plane) {
        const PlaneNorm<acc> q = plane_norm<acc>(mean[plane], 1.0);
        const acc s = static_cast<acc>(2.0 * gv[plane] / double(P));
        const acc b0 = static_cast<acc>(gm[plane] / double(P));
        for (int64_t i = 0; i < P; i += kBlock) {
          const int64_t len = std::min(kBlock, P - i), off = plane * P + i;
          acc* o = out_ptr(gx + off, out.data());
          normalize_scale_shift(load(x + off, len, in.data()), len, q.hi, q.lo, s, nullptr, b0, o);
          store<T>(o, len, gx + off);
        }
      }
    });
    return;
  }
  const int64_t rows = std::max<int64_t>(1, kBlock * 16 / C);
  const int64_t chunks = (P + rows - 1) / rows;
  const std::vector<double> ones(C, 1.0);
  for (int64_t n = 0; n < N; ++n) {
    const NormParams<acc> q(mean + n * C, ones.data(), C);
    std::vector<acc> s(C), b0(C);
    for (int64_t c = 0; c < C; ++c) {
      s[c] = static_cast<acc>(2.0 * gv[n * C + c] / double(P));
      b0[c] = static_cast<acc>(gm[n * C + c] / double(P));
    }
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      auto in = scratch<T>(rows * C), out = scratch<T>(rows * C);
      for (int64_t k = b; k < e; ++k) {
        const int64_t r0 = k * rows, len = std::min(rows, P - r0), off = (n * P + r0) * C;
        acc* o = out_ptr(gx + off, out.data());
        normalize_scale_shift_rows(load(x + off, len * C, in.data()), len, C, q.hi.data(),
                                   q.lo.data(), s.data(), nullptr, b0.data(), o);
        store<T>(o, len * C, gx + off);
      }
    });
  }
}

at::Tensor instance_stats_backward_cpu(const at::Tensor& grad_mean, const at::Tensor& grad_var,
                                       const at::Tensor& x_in, const at::Tensor& mean) {
  check_input(x_in);
  check_stats(x_in, grad_mean, grad_var);
  check_stats(x_in, mean, mean);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto gx = at::empty_like(x, x.options().memory_format(memory_format(layout)));
  if (x.numel() == 0) return gx;
  const at::Tensor gm = grad_mean.contiguous(), gv = grad_var.contiguous(), m = mean.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "instance_stats_backward", [&] {
        stats_backward(x.const_data_ptr<scalar_t>(), gm.const_data_ptr<double>(),
                       gv.const_data_ptr<double>(), m.const_data_ptr<double>(),
                       gx.mutable_data_ptr<scalar_t>(), layout, N, C, P);
      });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CPU, m) {
  m.impl("instance_stats", &instance_stats_cpu);
  m.impl("instance_stats_backward", &instance_stats_backward_cpu);
  m.impl("instance_norm", &instance_norm_cpu);
  m.impl("instance_norm_backward", &instance_norm_backward_cpu);
}

}  // namespace din_ops::cpu
