// Instance normalization on the CPU.
//
//   forward : mean, rstd per (n, c) plane;  y = (x - mean) * rstd
//   backward: gx = rstd * (gy - mean_p(gy) - xh * mean_p(gy * xh)),  xh = (x - mean) * rstd
//
// NCHW: one task per plane, statistics and the elementwise pass back to back while the plane is in
// L1/L2, so x is read from memory once; y (gx) of 8 MiB and more is written with non-temporal
// stores (common.h: stream_output). NHWC: a few samples at a time (common.h: nhwc_wave), fixed row
// chunks with per-channel partial sums (vectorized over channels), then the elementwise pass
// (streamed likewise).
// Statistics and xh are accumulated in float (double for double data) with the shifted sums of
// din_ops/math.h.
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
  parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
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
      // The next plane's statistics come after this pass: its reads are requested while this
      // plane's output is written (loops.h: normalize_plane; common.h: prefetch_step).
      const bool next = plane + 1 < e;
      if constexpr (std::is_same_v<T, acc>) {  // one call per plane
        PlanePrefetch<T> pf;
        if (next) pf.a = xp + P, pf.na = P;
        normalize_plane(xp, P, q.hi[0], q.lo[0], q.rstd[0], nullptr, yp, stream, pf);
        continue;
      }
      for (int64_t i = 0; i < P; i += prefetch_step<T>()) {
        const int64_t len = std::min(prefetch_step<T>(), P - i);
        if (next) prefetch_bytes(xp + P + i, len * int64_t(sizeof(T)));
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
  const NhwcChunks ch = nhwc_chunks(P, C);
  const int64_t wave = nhwc_wave(P, C, sizeof(T));
  const bool stream = stream_output<T>(N * P * C);
  for (int64_t n0 = 0; n0 < N; n0 += wave) {
    const int64_t n1 = std::min(N, n0 + wave);
    instance_stats(x, Layout::NHWC, n0, n1, C, P, eps, mean, rstd);
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, (n1 - n0) * C);
    parallel_for(0, (n1 - n0) * ch.count, 1, [&](int64_t b, int64_t e) {
      auto in = scratch<T>(ch.rows * C), out = scratch<T>(ch.rows * C);
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = t / ch.count, r0 = (t % ch.count) * ch.rows;
        const int64_t len = std::min(ch.rows, P - r0), off = ((n0 + i) * P + r0) * C;
        acc* o = out_ptr(y + off, out.data());
        normalize_rows(load(x + off, len * C, in.data()), len, C, q.hi.data() + i * C,
                       q.lo.data() + i * C, q.rstd.data() + i * C, o, stream);
        store<T>(o, len * C, y + off);
      }
      if (stream) stream_fence();
    });
  }
}

template <typename T>
void backward_nchw(const T* gy, const T* x, const double* mean, const double* rstd, T* gx,
                   int64_t planes, int64_t P) {
  using acc = acc_t<T>;
  const int64_t grain = std::max<int64_t>(1, 16384 / P);
  const bool stream = stream_output<T>(planes * P);
  parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
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
      // The next plane's gy and x are requested while this plane's gx is written, as in forward.
      const bool next = plane + 1 < e;
      for (int64_t i = 0; i < P; i += prefetch_step<T>()) {
        const int64_t len = std::min(prefetch_step<T>(), P - i);
        if (next) {
          prefetch_bytes(gy + base + P + i, len * int64_t(sizeof(T)));
          prefetch_bytes(x + base + P + i, len * int64_t(sizeof(T)));
        }
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
  const NhwcChunks ch = nhwc_chunks(P, C);
  const int64_t wave = nhwc_wave(P, C, 2 * sizeof(T));  // gy and x
  const bool stream = stream_output<T>(N * P * C);
  for (int64_t n0 = 0; n0 < N; n0 += wave) {
    const int64_t n1 = std::min(N, n0 + wave), S = n1 - n0;
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, S * C);
    // sum(gy) and sum(gy * xh) per channel
    const auto chunk_sums = [&](int64_t n, int64_t r0, int64_t len, double* out, auto& bufs) {
      const int64_t off = (n * P + r0) * C, i = (n - n0) * C;
      grad_sums_rows(load(gy + off, len * C, bufs[0].data()),
                     load(x + off, len * C, bufs[1].data()), len, C, q.hi.data() + i,
                     q.lo.data() + i, q.rstd.data() + i, out, out + C);
    };
    const std::vector<double> sums = nhwc_channel_sums<T, 2>(n0, n1, P, C, 2, chunk_sums);
    std::vector<acc> mg(S * C), mgxh(S * C);
    for (int64_t i = 0; i < S; ++i) {
      for (int64_t c = 0; c < C; ++c) {
        mg[i * C + c] = static_cast<acc>(sums[2 * i * C + c] / double(P));
        mgxh[i * C + c] = static_cast<acc>(sums[(2 * i + 1) * C + c] / double(P));
      }
    }
    parallel_for(0, S * ch.count, 1, [&](int64_t b, int64_t e) {
      auto gbuf = scratch<T>(ch.rows * C), xbuf = scratch<T>(ch.rows * C),
           out = scratch<T>(ch.rows * C);
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = (t / ch.count) * C, r0 = (t % ch.count) * ch.rows;
        const int64_t len = std::min(ch.rows, P - r0), off = ((n0 + t / ch.count) * P + r0) * C;
        acc* o = out_ptr(gx + off, out.data());
        normalize_backward_rows(load(gy + off, len * C, gbuf.data()),
                                load(x + off, len * C, xbuf.data()), len, C, q.hi.data() + i,
                                q.lo.data() + i, q.rstd.data() + i, mg.data() + i,
                                mgxh.data() + i, o, stream);
        store<T>(o, len * C, gx + off);
      }
      if (stream) stream_fence();
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_cpu(const at::Tensor& x_in,
                                                                 double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
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
    parallel_for(0, N * C, grain, [&](int64_t b, int64_t e) {
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
  const NhwcChunks ch = nhwc_chunks(P, C);
  const bool stream = stream_output<T>(N * P * C);
  const std::vector<double> ones(N * C, 1.0);
  const NormParams<acc> q(mean, ones.data(), N * C);
  std::vector<acc> s(N * C), b0(N * C);
  for (int64_t i = 0; i < N * C; ++i) {
    s[i] = static_cast<acc>(2.0 * gv[i] / double(P));
    b0[i] = static_cast<acc>(gm[i] / double(P));
  }
  parallel_for(0, N * ch.count, 1, [&](int64_t b, int64_t e) {
    auto in = scratch<T>(ch.rows * C), out = scratch<T>(ch.rows * C);
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / ch.count, r0 = (t % ch.count) * ch.rows, i = n * C;
      const int64_t len = std::min(ch.rows, P - r0), off = (n * P + r0) * C;
      acc* o = out_ptr(gx + off, out.data());
      normalize_scale_shift_rows(load(x + off, len * C, in.data()), len, C, q.hi.data() + i,
                                 q.lo.data() + i, s.data() + i, nullptr, b0.data() + i, o,
                                 stream);
      store<T>(o, len * C, gx + off);
    }
    if (stream) stream_fence();
  });
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
