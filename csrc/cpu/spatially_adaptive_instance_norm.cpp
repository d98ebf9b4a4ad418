// Spatially adaptive instance normalization on the CPU (SPADE-style modulation of IN; AdaIN when
// gamma and beta are per channel).
//
//   forward : mean, rstd per (n, c) plane;  xh = (x - mean) * rstd;  y = gamma * xh + beta
//   backward: g      = gy * gamma
//             gx     = rstd * (g - mean_p(g) - xh * mean_p(g * xh))
//             ggamma = gy * xh           (summed over the plane when gamma is (N, C, 1, 1))
//             gbeta  = sum_p gy          (per plane, (N, C, 1, 1); see the convention below)
//
// gamma and beta are each either full size, (N, C, H, W), or per plane, (N, C, 1, 1); beta may be
// absent (zero). With a per-plane gamma the sums reduce to those of plain instance norm:
// mean_p(g) = gamma * mean_p(gy), mean_p(g * xh) = gamma * mean_p(gy * xh), ggamma = sum_p gy * xh.
//
// grad_beta convention: the backward op returns the per-plane sums of gy, shape (N, C, 1, 1), when
// beta_defined, and an empty (0,) tensor otherwise. The gradient of a full-size beta is gy itself;
// autograd passes grad_y on for it (din_ops/_registrations.py) instead of the op writing a copy.
//
// gamma and beta of batch 1 apply to every sample: read in place (Modulation::period); backward
// returns per-sample ggamma and gbeta, which autograd sums over the batch.
//
// NCHW: one task per plane: the shifted-sum statistics, then one fused elementwise pass while the
// plane of x is still in L1/L2, so x, gamma and beta are read from memory once and y written once.
// Backward likewise: the sums over gy, x, gamma, then gx (and a full-size ggamma) from cache.
// Outputs of 8 MiB and more (float, double) are written with non-temporal stores (common.h:
// stream_output).
// NHWC: for a few samples at a time (common.h: nhwc_wave), the statistics in fixed row chunks
// (vectorized over channels), then the elementwise pass over the same chunks; outputs of 8 MiB and
// more streamed as in NCHW. A full-size gamma/beta is brought to x's layout first, so a
// channels_last x with contiguous gamma/beta costs one copy of them (and vice versa).
// Statistics and xh are computed in float for float/half/bfloat16 (half and bfloat16 converted in
// blocks), in double for double, with the mean split as hi + lo (din_ops/math.h). The reduction
// order is fixed by plane and chunk, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <utility>

#include "../checks.h"
#include "common.h"

namespace din_ops::cpu {
namespace {

// A gamma or beta operand as the kernels read it: full size in x's layout, or one value per plane
// (N * C contiguous values). `data` is null for an absent beta. A batch-1 operand (one gamma or
// beta for every sample) is read in place: element i of the batch-N operand is element
// i % period of the batch-1 one (period = C * P when full, C per plane; 0 when not broadcast).
// Kernels index it at the start of a block that lies within one sample, then advance linearly.
template <typename T>
struct Modulation {
  const T* data = nullptr;
  bool full = false;
  int64_t period = 0;
  const T* at(int64_t i) const { return data + (period != 0 ? i % period : i); }
  T operator[](int64_t i) const { return *at(i); }
};

// adain's per-plane gamma and beta, gamma = std_s * gamma_scale and beta = mean_s, from the style
// features (the op's statistics outputs `mean` and `std`, Ns * C values). Fused (`data` set: an
// NCHW style of the content's batch): the plane loop of forward_nchw sums the style plane of the
// same (n, c) with the content plane (plane_stats), so style and content stream through in one
// pass. Otherwise `mean` and `std` already hold every style plane's statistics and plane i reads
// entry i % period (period C for a batch-1 style, 0 for none).
template <typename T>
struct AdainStyle {
  const T* data = nullptr;
  int64_t P = 0;             // values per style plane
  double var_scale = 1.0;    // Ms / (Ms - 1) for the unbiased variance (0 for Ms = 1), else 1
  double eps = 0.0;          // std = sqrt(var_scale * var + eps)
  double gamma_scale = 1.0;  // sqrt((M - 1) / M) when the content variance is unbiased (ops.py)
  double* mean = nullptr;
  double* std = nullptr;
  int64_t period = 0;

  // std from the rstd that the statistics give for eps = 0 (1 / sqrt(var), 0 for var = 0).
  double std_from(double rstd0) const {
    return std::sqrt(var_scale * (rstd0 == 0.0 ? 0.0 : 1.0 / (rstd0 * rstd0)) + eps);
  }

  // Fused: the statistics of content plane `plane` (x, xP values, with eps) and of the style plane
  // of the same (n, c). Float and double planes of one size in one pass over both
  // (common.h: plane_stats_pair), others one after the other; the same values either way.
  // `buf`: scratch<T>(kBlock) for half and bfloat16.
  void plane_stats(const T* x, int64_t xP, int64_t plane, double eps, double* x_mean,
                   double* x_rstd, acc_t<T>* buf) const {
    double rstd0 = 0.0;
    const T* s = data + plane * P;
    if constexpr (std::is_same_v<T, acc_t<T>>) {
      if (xP == P) {
        plane_stats_pair(x, s, P, eps, 0.0, x_mean, x_rstd, mean + plane, &rstd0);
        std[plane] = std_from(rstd0);
        return;
      }
    }
    cpu::plane_stats(x, xP, eps, x_mean, x_rstd, buf);
    cpu::plane_stats(s, P, 0.0, mean + plane, &rstd0, buf);
    std[plane] = std_from(rstd0);
  }

  // (gamma, beta) of `plane` (a fused plane's after plane_stats above).
  std::pair<double, double> at(int64_t plane) const {
    const int64_t i = period != 0 ? plane % period : plane;
    return {std[i] * gamma_scale, mean[i]};
  }
};

// The per-plane gamma and beta of `plane` (0 where they are full size or absent): from the style
// for adain, else from the operands.
template <typename T>
std::pair<double, double> plane_gamma_beta(Modulation<T> gamma, Modulation<T> beta,
                                           const AdainStyle<T>* style, int64_t plane) {
  if (style != nullptr) return style->at(plane);
  return {gamma.full ? 0.0 : double(gamma[plane]),
          beta.data != nullptr && !beta.full ? double(beta[plane]) : 0.0};
}

template <typename T>
void forward_nchw(const T* x, Modulation<T> gamma, Modulation<T> beta, T* y, int64_t planes,
                  int64_t P, double eps, double* mean, double* rstd,
                  const AdainStyle<T>* style = nullptr) {
  using acc = acc_t<T>;
  const int64_t grain = std::max<int64_t>(1, 32768 / P);
  const bool stream = stream_output<T>(planes * P);
  parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
    auto in = scratch<T>(kBlock), gbuf = scratch<T>(kBlock), bbuf = scratch<T>(kBlock),
         out = scratch<T>(kBlock);
    for (int64_t plane = b; plane < e; ++plane) {
      const int64_t base = plane * P;
      if (style != nullptr && style->data != nullptr) {  // adain, fused: the style plane too
        style->plane_stats(x + base, P, plane, eps, mean + plane, rstd + plane, in.data());
      } else {
        plane_stats(x + base, P, eps, mean + plane, rstd + plane, in.data());
      }
      const PlaneNorm<acc> q = plane_norm<acc>(mean[plane], rstd[plane]);
      // Per-plane gamma folds into the scale: ((x - hi) - lo) * (rstd * gamma).
      const auto [g, b0d] = plane_gamma_beta(gamma, beta, style, plane);
      const acc s = static_cast<acc>(rstd[plane] * g), b0 = static_cast<acc>(b0d);
      // The statistics of the next plane come after this pass: its reads (and the next style
      // plane's, in proportion) are requested while this plane's output is written.
      const bool next = plane + 1 < e;
      const bool next_style = next && style != nullptr && style->data != nullptr;
      if constexpr (std::is_same_v<T, acc>) {
        if (!gamma.full && !beta.full) {  // per-plane gamma and beta (adain): one call per plane
          PlanePrefetch<T> pf;
          if (next) pf.a = x + base + P, pf.na = P;
          if (next_style) pf.b = style->data + (plane + 1) * style->P, pf.nb = style->P;
          normalize_plane(x + base, P, q.hi, q.lo, s, &b0, y + base, stream, pf);
          continue;
        }
      }
      int64_t s0 = 0;  // the next style plane's values prefetched so far
      for (int64_t i = 0; i < P; i += prefetch_step<T>()) {
        const int64_t len = std::min(prefetch_step<T>(), P - i);
        if (next) prefetch_bytes(x + base + P + i, len * int64_t(sizeof(T)));
        if (next_style) {
          // In proportion to this plane's progress (the style may have another size).
          const int64_t s1 = (i + len) * style->P / P;
          prefetch_bytes(style->data + (plane + 1) * style->P + s0, (s1 - s0) * int64_t(sizeof(T)));
          s0 = s1;
        }
        const acc* xin = load(x + base + i, len, in.data());
        const acc* bb = beta.full ? load(beta.at(base + i), len, bbuf.data()) : nullptr;
        acc* o = out_ptr(y + base + i, out.data());
        if (gamma.full) {
          normalize_affine(xin, len, q.hi, q.lo, q.rstd, load(gamma.at(base + i), len, gbuf.data()),
                           bb, b0, o, stream);
        } else {
          normalize_scale_shift(xin, len, q.hi, q.lo, s, bb, b0, o, stream);
        }
        store<T>(o, len, y + base + i);
      }
    }
    if (stream) stream_fence();
  });
}

template <typename T>
void forward_nhwc(const T* x, Modulation<T> gamma, Modulation<T> beta, T* y, int64_t N, int64_t C,
                  int64_t P, double eps, double* mean, double* rstd,
                  const AdainStyle<T>* style = nullptr) {
  using acc = acc_t<T>;
  const NhwcChunks ch = nhwc_chunks(P, C);
  const int64_t wave = nhwc_wave(P, C, sizeof(T));
  const bool stream = stream_output<T>(N * P * C);
  for (int64_t n0 = 0; n0 < N; n0 += wave) {
    // Statistics of these samples, then their elementwise pass while they may still be cached.
    const int64_t n1 = std::min(N, n0 + wave), S = n1 - n0;
    instance_stats(x, Layout::NHWC, n0, n1, C, P, eps, mean, rstd);
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, S * C);
    std::vector<acc> s(S * C, acc(0)), b0(S * C, acc(0));
    for (int64_t i = 0; i < S * C; ++i) {
      // (adain's style statistics are precomputed here: style->data is null)
      const auto [g, b] = plane_gamma_beta(gamma, beta, style, n0 * C + i);
      s[i] = static_cast<acc>(rstd[n0 * C + i] * g);
      b0[i] = static_cast<acc>(b);
    }
    parallel_for(0, S * ch.count, 1, [&](int64_t b, int64_t e) {
      auto in = scratch<T>(ch.rows * C), gbuf = scratch<T>(ch.rows * C),
           bbuf = scratch<T>(ch.rows * C), out = scratch<T>(ch.rows * C);
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = (t / ch.count) * C, r0 = (t % ch.count) * ch.rows;
        const int64_t len = std::min(ch.rows, P - r0), off = ((n0 + t / ch.count) * P + r0) * C;
        const acc* xin = load(x + off, len * C, in.data());
        const acc* bb = beta.full ? load(beta.at(off), len * C, bbuf.data()) : nullptr;
        acc* o = out_ptr(y + off, out.data());
        if (gamma.full) {
          normalize_affine_rows(xin, len, C, q.hi.data() + i, q.lo.data() + i, q.rstd.data() + i,
                                load(gamma.at(off), len * C, gbuf.data()), bb, b0.data() + i, o,
                                stream);
        } else {
          normalize_scale_shift_rows(xin, len, C, q.hi.data() + i, q.lo.data() + i, s.data() + i,
                                     bb, b0.data() + i, o, stream);
        }
        store<T>(o, len * C, y + off);
      }
      if (stream) stream_fence();
    });
  }
}

// Backward outputs: gx like x; ggamma full size (like x) or one value per plane; gbeta one value
// per plane, or null when beta is absent.
template <typename T>
struct Grads {
  T* gx;
  T* ggamma;
  T* gbeta;
};

template <typename T>
void backward_nchw(const T* gy, const T* x, Modulation<T> gamma, const double* mean,
                   const double* rstd, Grads<T> out, int64_t planes, int64_t P) {
  using acc = acc_t<T>;
  const int64_t grain = std::max<int64_t>(1, 16384 / P);
  // Streamed gx (and full-size ggamma, at the same offsets of a tensor of the same size).
  const bool stream = stream_output<T>(planes * P) &&
                      (!gamma.full || reinterpret_cast<uintptr_t>(out.gx) % 64 ==
                                          reinterpret_cast<uintptr_t>(out.ggamma) % 64);
  parallel_for(0, planes, grain, [&](int64_t b, int64_t e) {
    auto gbuf = scratch<T>(kBlock), xbuf = scratch<T>(kBlock), wbuf = scratch<T>(kBlock),
         obuf = scratch<T>(kBlock), pbuf = scratch<T>(kBlock);
    for (int64_t plane = b; plane < e; ++plane) {
      const int64_t base = plane * P;
      const PlaneNorm<acc> q = plane_norm<acc>(mean[plane], rstd[plane]);
      const acc hi = q.hi, lo = q.lo, r = q.rstd;
      if (gamma.full) {
        // sg = sum(gy * gamma), sgxh = sum(gy * gamma * xh), sgy = sum(gy)
        double sg = 0.0, sgxh = 0.0, sgy = 0.0;
        for (int64_t i = 0; i < P; i += kBlock) {
          const int64_t len = std::min(kBlock, P - i);
          affine_grad_sums(load(gy + base + i, len, gbuf.data()),
                           load(x + base + i, len, xbuf.data()),
                           load(gamma.at(base + i), len, wbuf.data()), len, hi, lo, r, &sg,
                           &sgxh, &sgy);
        }
        const acc mg = static_cast<acc>(sg / double(P)), mgxh = static_cast<acc>(sgxh / double(P));
        for (int64_t i = 0; i < P; i += kBlock) {
          const int64_t len = std::min(kBlock, P - i);
          acc* ogx = out_ptr(out.gx + base + i, obuf.data());
          acc* ogg = out_ptr(out.ggamma + base + i, pbuf.data());
          normalize_affine_backward(load(gy + base + i, len, gbuf.data()),
                                    load(x + base + i, len, xbuf.data()),
                                    load(gamma.at(base + i), len, wbuf.data()), len, hi, lo, r,
                                    mg, mgxh, ogx, ogg, stream);
          store<T>(ogx, len, out.gx + base + i);
          store<T>(ogg, len, out.ggamma + base + i);
        }
        if (out.gbeta != nullptr) out.gbeta[plane] = static_cast<T>(static_cast<acc>(sgy));
      } else {
        // sgy = sum(gy), sgyxh = sum(gy * xh); the gamma-weighted means follow from them.
        double sgy = 0.0, sgyxh = 0.0;
        for (int64_t i = 0; i < P; i += kBlock) {
          const int64_t len = std::min(kBlock, P - i);
          grad_sums(load(gy + base + i, len, gbuf.data()), load(x + base + i, len, xbuf.data()),
                    len, hi, lo, r, &sgy, &sgyxh);
        }
        const double g = double(gamma[plane]);
        const acc mg = static_cast<acc>(g * sgy / double(P));
        const acc mgxh = static_cast<acc>(g * sgyxh / double(P));
        for (int64_t i = 0; i < P; i += kBlock) {
          const int64_t len = std::min(kBlock, P - i);
          acc* ogx = out_ptr(out.gx + base + i, obuf.data());
          normalize_backward_scaled(load(gy + base + i, len, gbuf.data()),
                                    load(x + base + i, len, xbuf.data()), len, hi, lo, r,
                                    static_cast<acc>(g), mg, mgxh, ogx, stream);
          store<T>(ogx, len, out.gx + base + i);
        }
        out.ggamma[plane] = static_cast<T>(static_cast<acc>(sgyxh));
        if (out.gbeta != nullptr) out.gbeta[plane] = static_cast<T>(static_cast<acc>(sgy));
      }
    }
    if (stream) stream_fence();
  });
}

template <typename T>
void backward_nhwc(const T* gy, const T* x, Modulation<T> gamma, const double* mean,
                   const double* rstd, Grads<T> out, int64_t N, int64_t C, int64_t P) {
  using acc = acc_t<T>;
  const NhwcChunks ch = nhwc_chunks(P, C);
  const int64_t wave = nhwc_wave(P, C, (gamma.full ? 3 : 2) * sizeof(T));  // gy, x (and gamma)
  // Streamed gx (and full-size ggamma, at the same offsets of a tensor of the same size).
  const bool stream = stream_output<T>(N * P * C) &&
                      (!gamma.full || reinterpret_cast<uintptr_t>(out.gx) % 64 ==
                                          reinterpret_cast<uintptr_t>(out.ggamma) % 64);
  for (int64_t n0 = 0; n0 < N; n0 += wave) {
    const int64_t n1 = std::min(N, n0 + wave), S = n1 - n0;
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, S * C);
    // Three sums per channel (full gamma: sum(g), sum(g * xh), sum(gy) with g = gy * gamma;
    // per-plane gamma: sum(gy), sum(gy * xh), unused).
    const auto chunk_sums = [&](int64_t n, int64_t r0, int64_t len, double* pk, auto& bufs) {
      const int64_t off = (n * P + r0) * C, i = (n - n0) * C;
      const acc* g = load(gy + off, len * C, bufs[0].data());
      const acc* xv = load(x + off, len * C, bufs[1].data());
      if (gamma.full) {
        affine_grad_sums_rows(g, xv, load(gamma.at(off), len * C, bufs[2].data()), len, C,
                              q.hi.data() + i, q.lo.data() + i, q.rstd.data() + i, pk, pk + C,
                              pk + 2 * C);
      } else {
        grad_sums_rows(g, xv, len, C, q.hi.data() + i, q.lo.data() + i, q.rstd.data() + i, pk,
                       pk + C);
      }
    };
    const std::vector<double> sums = nhwc_channel_sums<T, 3>(n0, n1, P, C, 3, chunk_sums);
    std::vector<acc> mg(S * C), mgxh(S * C), gam(S * C);
    for (int64_t i = 0; i < S; ++i) {
      for (int64_t c = 0; c < C; ++c) {
        const double* sc = sums.data() + 3 * i * C + c;
        const int64_t plane = (n0 + i) * C + c, j = i * C + c;
        if (gamma.full) {
          mg[j] = static_cast<acc>(sc[0] / double(P));
          mgxh[j] = static_cast<acc>(sc[C] / double(P));
          if (out.gbeta != nullptr) out.gbeta[plane] = static_cast<T>(static_cast<acc>(sc[2 * C]));
        } else {
          const double g = double(gamma[plane]);
          gam[j] = static_cast<acc>(g);
          mg[j] = static_cast<acc>(g * sc[0] / double(P));
          mgxh[j] = static_cast<acc>(g * sc[C] / double(P));
          out.ggamma[plane] = static_cast<T>(static_cast<acc>(sc[C]));
          if (out.gbeta != nullptr) out.gbeta[plane] = static_cast<T>(static_cast<acc>(sc[0]));
        }
      }
    }
    parallel_for(0, S * ch.count, 1, [&](int64_t b, int64_t e) {
      auto gbuf = scratch<T>(ch.rows * C), xbuf = scratch<T>(ch.rows * C),
           wbuf = scratch<T>(ch.rows * C), obuf = scratch<T>(ch.rows * C),
           pbuf = scratch<T>(ch.rows * C);
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = (t / ch.count) * C, r0 = (t % ch.count) * ch.rows;
        const int64_t len = std::min(ch.rows, P - r0), off = ((n0 + t / ch.count) * P + r0) * C;
        const acc* g = load(gy + off, len * C, gbuf.data());
        const acc* xv = load(x + off, len * C, xbuf.data());
        acc* ogx = out_ptr(out.gx + off, obuf.data());
        if (gamma.full) {
          acc* ogg = out_ptr(out.ggamma + off, pbuf.data());
          normalize_affine_backward_rows(g, xv, load(gamma.at(off), len * C, wbuf.data()), len,
                                         C, q.hi.data() + i, q.lo.data() + i, q.rstd.data() + i,
                                         mg.data() + i, mgxh.data() + i, ogx, ogg, stream);
          store<T>(ogg, len * C, out.ggamma + off);
        } else {
          normalize_backward_scaled_rows(g, xv, len, C, q.hi.data() + i, q.lo.data() + i,
                                         q.rstd.data() + i, gam.data() + i, mg.data() + i,
                                         mgxh.data() + i, ogx, stream);
        }
        store<T>(ogx, len * C, out.gx + off);
      }
      if (stream) stream_fence();
    });
  }
}

bool is_full(const at::Tensor& t, const at::Tensor& x) {
  return t.size(2) == x.size(2) && t.size(3) == x.size(3);
}

// gamma or beta prepared for the kernels: full size in layout l, or (N * C) contiguous values
// (C for a batch-1 operand, which stays batch 1).
at::Tensor prepare(const at::Tensor& t, const at::Tensor& x, Layout l) {
  return is_full(t, x) ? in_layout(t, l) : t.reshape({t.size(0) * x.size(1)}).contiguous();
}

template <typename T>
Modulation<T> modulation(const at::Tensor& prepared, const at::Tensor& x) {
  if (!prepared.defined()) return {};
  const bool full = prepared.dim() == 4;
  const bool broadcast = prepared.numel() != 0 &&
                         (full ? prepared.size(0) : prepared.numel() / x.size(1)) != x.size(0);
  const int64_t period = broadcast ? (full ? x.size(1) * x.size(2) * x.size(3) : x.size(1)) : 0;
  return {prepared.const_data_ptr<T>(), full, period};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_cpu(
    const at::Tensor& x_in, const at::Tensor& gamma_in, const c10::optional<at::Tensor>& beta_in,
    double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_input(x_in);
  const bool has_beta = beta_in.has_value() && beta_in->defined();
  check_modulation(x_in, gamma_in, "gamma", /*broadcast=*/true);
  if (has_beta) check_modulation(x_in, *beta_in, "beta", /*broadcast=*/true);
  const Layout l = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, l);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  auto y = at::empty_like(x, x.options().memory_format(memory_format(l)));
  at::Tensor mean, rstd;
  std::tie(mean, rstd) = empty_stats(x);
  if (x.numel() == 0) return {y, mean, rstd};
  const at::Tensor gamma = prepare(gamma_in, x, l);
  const at::Tensor beta = has_beta ? prepare(*beta_in, x, l) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "spatially_adaptive_instance_norm", [&] {
        const auto g = modulation<scalar_t>(gamma, x), b = modulation<scalar_t>(beta, x);
        if (l == Layout::NCHW) {
          forward_nchw(x.const_data_ptr<scalar_t>(), g, b, y.mutable_data_ptr<scalar_t>(), N * C,
                       P, eps, mean.mutable_data_ptr<double>(), rstd.mutable_data_ptr<double>());
        } else {
          forward_nhwc(x.const_data_ptr<scalar_t>(), g, b, y.mutable_data_ptr<scalar_t>(), N, C,
                       P, eps, mean.mutable_data_ptr<double>(), rstd.mutable_data_ptr<double>());
        }
      });
  return {y, mean, rstd};
}

// grad_gamma has gamma's shape with batch N: full size in x's output layout, or (N, C, 1, 1)
// contiguous; for a batch-1 gamma these are the per-sample gradients, which autograd sums over the
// batch (din_ops/_registrations.py).
// grad_beta is (N, C, 1, 1), the per-plane sums of grad_y, when beta_defined; else shape (0,).
std::tuple<at::Tensor, at::Tensor, at::Tensor> spatially_adaptive_instance_norm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& gamma_in,
    const at::Tensor& mean, const at::Tensor& rstd, bool beta_defined) {
  check_input(x_in);
  check_modulation(x_in, gamma_in, "gamma", /*broadcast=*/true);
  check_grad(grad_y, x_in, x_in.size(1));
  check_stats(x_in, mean, rstd);
  const Layout l = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, l);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const bool full = is_full(gamma_in, x);
  const auto out_opts = x.options().memory_format(memory_format(l));
  auto gx = at::empty_like(x, out_opts);
  auto ggamma = full ? at::empty_like(x, out_opts) : at::empty({N, C, 1, 1}, x.options());
  auto gbeta = beta_defined ? at::empty({N, C, 1, 1}, x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) return {gx, ggamma, gbeta};
  const at::Tensor gy = in_layout(grad_y, l);
  const at::Tensor gamma = prepare(gamma_in, x, l);
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "spatially_adaptive_instance_norm_backward", [&] {
        const auto g = modulation<scalar_t>(gamma, x);
        const Grads<scalar_t> out{gx.mutable_data_ptr<scalar_t>(),
                                  ggamma.mutable_data_ptr<scalar_t>(),
                                  beta_defined ? gbeta.mutable_data_ptr<scalar_t>() : nullptr};
        if (l == Layout::NCHW) {
          backward_nchw(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g,
                        m.const_data_ptr<double>(), r.const_data_ptr<double>(), out, N * C, P);
        } else {
          backward_nhwc(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g,
                        m.const_data_ptr<double>(), r.const_data_ptr<double>(), out, N, C, P);
        }
      });
  // One pixel per plane: x - mean is identically 0, so y = beta and gx is exactly 0. The general
  // formula gives 0 only up to rounding there (gy * gamma - mean(gy * gamma) may be contracted into
  // an FMA that keeps the product's rounding error, then scaled by rstd = 1 / sqrt(eps)).
  if (P == 1) gx.zero_();
  return {gx, ggamma, gbeta};
}

// adain: the kernels above with gamma and beta from the style's statistics (AdainStyle). An NCHW
// content and style of one batch run fused, plane by plane; a batch-1 style, a channels_last one or
// a channels_last content get the style statistics first (style is 1/N of the work for batch 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_cpu(
    const at::Tensor& content_in, const at::Tensor& style_in, double eps, bool unbiased) {
  check_input(content_in);
  check_style(content_in, style_in);
  check_eps(eps);
  const Layout l = layout_of(content_in), ls = layout_of(style_in);
  const at::Tensor x = in_layout(content_in, l), style = in_layout(style_in, ls);
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const int64_t Ns = style.size(0), Ps = style.size(2) * style.size(3);
  auto y = at::empty_like(x, x.options().memory_format(memory_format(l)));
  // std::tie, not structured bindings: the dispatch lambda below captures them (clang 14 rejects
  // captured bindings).
  at::Tensor mean, rstd, style_mean, style_std;
  std::tie(mean, rstd) = empty_stats(x);
  std::tie(style_mean, style_std) = empty_stats(style);
  // The unbiased content variance as a scaled gamma and eps (ops.py, _unbiased_scale): with
  // k = (M - 1) / M, (x - mu) / sqrt(var / k + eps) = sqrt(k) (x - mu) / sqrt(var + k eps).
  const double k = unbiased && P > 1 ? double(P - 1) / double(P) : 1.0;
  const bool fused = x.numel() > 0 && l == Layout::NCHW && ls == Layout::NCHW && Ns == N;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "adain", [&] {
    AdainStyle<scalar_t> st;
    st.P = Ps;
    st.var_scale = unbiased ? math::unbiased_variance_factor(Ps) : 1.0;
    st.eps = eps;
    st.gamma_scale = std::sqrt(k);
    st.mean = style_mean.mutable_data_ptr<double>();
    st.std = style_std.mutable_data_ptr<double>();
    if (fused) {
      st.data = style.const_data_ptr<scalar_t>();
    } else if (style.numel() > 0) {
      instance_stats(style.const_data_ptr<scalar_t>(), ls, 0, Ns, C, Ps, 0.0, st.mean, st.std);
      for (int64_t i = 0; i < Ns * C; ++i) st.std[i] = st.std_from(st.std[i]);
      st.period = Ns == N ? 0 : C;
    }
    if (x.numel() == 0) return;
    double* m = mean.mutable_data_ptr<double>();
    double* r = rstd.mutable_data_ptr<double>();
    if (l == Layout::NCHW) {
      forward_nchw<scalar_t>(x.const_data_ptr<scalar_t>(), {}, {}, y.mutable_data_ptr<scalar_t>(),
                             N * C, P, math::kernel_eps(eps, unbiased, P), m, r, &st);
    } else {
      forward_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), {}, {}, y.mutable_data_ptr<scalar_t>(),
                             N, C, P, math::kernel_eps(eps, unbiased, P), m, r, &st);
    }
  });
  return {y, mean, rstd, style_mean, style_std};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CPU, m) {
  m.impl("adain", &adain_cpu);
  m.impl("spatially_adaptive_instance_norm", &spatially_adaptive_instance_norm_cpu);
  m.impl("spatially_adaptive_instance_norm_backward",
         &spatially_adaptive_instance_norm_backward_cpu);
}

}  // namespace din_ops::cpu
