// Dynamic instance normalization with a per-sample 1x1 convolution on the CPU.
//
//   forward : y[n] = W[n] @ xh[n] + b[n],          xh = (x - mean) * rstd,  W: (Co, C), xh: (C, P)
//   backward: gb[n] = sum_p gy[n]
//             gW[n] = gy[n] @ xh[n]^T
//             gx    = rstd * (W^T gy - m1 - xh * m2),  m1 = (W^T gb) / P,  m2 = sum_o W * gW / P
//
// A weight (1, Co, C) and a bias (1, Co) apply to every sample (read with a batch stride of 0);
// backward then returns the per-sample gW and gb, (N, Co, C) and (N, Co), which autograd sums.
//
// (m1 and m2 are mean_p(W^T gy) and mean_p(W^T gy * xh), written without another pass over P;
// see docs/math.md.) Samples are processed in groups whose x fits in cache: first the statistics of
// the group, then tasks over (sample, pixel tile). A task normalizes its tile of x into a small
// L2-resident buffer and multiplies it with W[n] through the BLAS, on top of the bias. xh is never
// written for a whole plane, and backward saves only x and the (N, C) statistics.
//
// Two ways to apply the normalization, chosen per sample from its statistics:
// - folded (docs/math.md): W' = W * rstd, b' = b - W' mean, and the GEMM reads x itself. No extra
//   pass, but W' x and b' are |mean| * rstd times larger than y and cancel; so it is used only for
//   float32 and float64 samples whose every channel has |mean| * rstd <= kFoldLimit (rounding error
//   at most ~kFoldLimit times that of the exact formula, a few ulps).
// - normalized tiles: the task writes xh for its tile into an L2-resident buffer and multiplies
//   that. It costs one pass over cache and keeps x = 1e4 + noise (or 1e6) as accurate as float32
//   allows. Half/bfloat16 data always take it: their tiles are converted to float anyway.
// The weight gradient follows the same choice (gy @ x^T with the mean subtracted, or gy @ xh^T).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "blas.h"
#include "common.h"

namespace din_ops::cpu {
namespace {

// Largest |mean| * rstd for which a sample takes the folded path (see above).
constexpr double kFoldLimit = 16.0;

// Whether the samples [n0, n1) can fold their normalization into the weights.
template <typename T>
std::vector<char> fold_flags(const double* mean, const double* rstd, int64_t n0, int64_t n1,
                             int64_t C) {
  std::vector<char> fold(n1 - n0, std::is_same_v<T, acc_t<T>> ? 1 : 0);
  for (int64_t g = 0; g < n1 - n0; ++g) {
    for (int64_t c = 0; fold[g] && c < C; ++c) {
      const int64_t i = (n0 + g) * C + c;
      if (!(std::abs(mean[i]) * rstd[i] <= kFoldLimit)) fold[g] = 0;
    }
  }
  return fold;
}

// Pixels per tile. Products that write a P-sized output (forward, grad_x) use tiles whose input and
// output parts together are ~128 KiB (they stay in L2 between the GEMM and its epilogue), but at
// least 256 pixels wide so the GEMM stays efficient for wide channels. The weight-gradient product
// reduces over pixels and runs faster on long tiles (~1 MiB).
int64_t tile_pixels(int64_t C, int64_t Co, int64_t P) {
  const int64_t L = std::max<int64_t>(256, (int64_t(1) << 15) / (C + Co) / 16 * 16);
  return std::min(L, P);
}

int64_t reduce_tile_pixels(int64_t C, int64_t Co, int64_t P) {
  const int64_t L = std::max<int64_t>(256, (int64_t(1) << 18) / std::max(C, Co) / 16 * 16);
  return std::min(L, P);
}

// Samples per group: the group's x (and grad) should stay in the last-level cache between the
// statistics and the GEMM passes; the per-thread weight-gradient partials stay bounded.
int64_t group_samples(int64_t N, int64_t C, int64_t Co, int64_t P) {
  const int64_t by_bytes = (int64_t(2) << 20) / std::max<int64_t>(1, C * P);
  const int64_t by_partials = (int64_t(1) << 20) / std::max<int64_t>(1, Co * C);
  return std::max<int64_t>(1, std::min({N, by_bytes, by_partials}));
}

// Writes xh for pixels [p0, p0 + L) of a sample into `tile` (C x L, same orientation as the layout).
template <typename T>
Mat<acc_t<T>> normalized_tile(const T* xn, Layout l, int64_t C, int64_t P, int64_t p0, int64_t L,
                              const NormParams<acc_t<T>>& q, int64_t c0, acc_t<T>* tile,
                              acc_t<T>* conv) {
  if (l == Layout::NCHW) {
    for (int64_t c = 0; c < C; ++c) {
      normalize(load(xn + c * P + p0, L, conv), L, q.hi[c0 + c], q.lo[c0 + c], q.rstd[c0 + c],
                tile + c * L);
    }
    return {tile, C, L, L, 1};
  }
  normalize_rows(load(xn + p0 * C, L * C, conv), L, C, q.hi.data() + c0, q.lo.data() + c0,
                 q.rstd.data() + c0, tile);
  return {tile, C, L, 1, C};
}

// Adds a per-row value to a tile (rows x L, layout orientation): the bias epilogue. It runs after
// the GEMM, while the tile is still in L2, rather than as a fill before it: a fill would be the
// first touch of the output and stall on memory that the GEMM otherwise overlaps with compute.
template <typename acc>
void add_rows(Mat<acc> o, const acc* value) {
  if (o.cs == 1) {
    for (int64_t r = 0; r < o.rows; ++r) add_scalar(o.data + r * o.rs, o.cols, value[r]);
  } else {
    for (int64_t p = 0; p < o.cols; ++p) add_to(o.data + p * o.cs, value, o.rows);
  }
}

// A (rows x L) tile of a P-pixel sample as acc_t: a view when T is acc_t, else converted into buf.
template <typename T>
Mat<const acc_t<T>> input_tile(const T* p, int64_t rows, int64_t P, int64_t L, Layout l,
                               acc_t<T>* buf) {
  using acc = acc_t<T>;
  if constexpr (std::is_same_v<T, acc>) {
    return l == Layout::NCHW ? Mat<const acc>{p, rows, L, P, 1} : Mat<const acc>{p, rows, L, 1, rows};
  } else {
    if (l == Layout::NCHW) {
      for (int64_t r = 0; r < rows; ++r) convert(p + r * P, L, buf + r * L);
      return {buf, rows, L, L, 1};
    }
    convert(p, L * rows, buf);
    return {buf, rows, L, 1, rows};
  }
}

// Copies an acc_t tile to the T output (only used when T is half/bfloat16).
template <typename T>
void store_tile(Mat<acc_t<T>> src, T* dst, int64_t P, Layout l) {
  if (l == Layout::NCHW) {
    for (int64_t r = 0; r < src.rows; ++r) store<T>(src.data + r * src.rs, src.cols, dst + r * P);
  } else {
    store<T>(src.data, src.rows * src.cols, dst);
  }
}

// A tile of an output sample: directly in the output when T is acc_t, else in `buf`.
template <typename T>
Mat<acc_t<T>> out_tile(T* dst, int64_t rows, int64_t P, int64_t L, Layout l, acc_t<T>* buf) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return l == Layout::NCHW ? Mat<T>{dst, rows, L, P, 1} : Mat<T>{dst, rows, L, 1, rows};
  } else {
    return l == Layout::NCHW ? Mat<acc_t<T>>{buf, rows, L, L, 1}
                             : Mat<acc_t<T>>{buf, rows, L, 1, rows};
  }
}

// Pointer to pixel p0 of a sample whose matrix has `rows` rows.
template <typename T>
T* at_pixel(T* base, int64_t rows, int64_t p0, Layout l) {
  return l == Layout::NCHW ? base + p0 : base + p0 * rows;
}

// weight[n] (Co x C) as a contiguous acc_t matrix for every sample of a group; `ws` is the batch
// stride of weight (Co * C, or 0 for one weight broadcast over the batch).
template <typename T>
std::vector<acc_t<T>> weights_as_acc(const T* w, int64_t ws, int64_t n0, int64_t n1, int64_t Co,
                                     int64_t C) {
  std::vector<acc_t<T>> out((n1 - n0) * Co * C);
  for (int64_t n = n0; n < n1; ++n) {
    const T* wn = w + n * ws;
    acc_t<T>* o = out.data() + (n - n0) * Co * C;
    for (int64_t i = 0; i < Co * C; ++i) o[i] = static_cast<acc_t<T>>(wn[i]);
  }
  return out;
}

template <typename T>
void forward(const T* x, const T* w, int64_t ws, const T* b, int64_t bs, T* y, Layout l, int64_t N,
             int64_t C, int64_t Co, int64_t P, double eps, double* mean, double* rstd) {
  using acc = acc_t<T>;
  const int64_t L = tile_pixels(C, Co, P), tiles = (P + L - 1) / L;
  const int64_t G = group_samples(N, C, Co, P);
  for (int64_t n0 = 0; n0 < N; n0 += G) {
    const int64_t n1 = std::min(N, n0 + G), ng = n1 - n0;
    instance_stats(x, l, n0, n1, C, P, eps, mean, rstd);
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, ng * C);
    const std::vector<char> fold = fold_flags<T>(mean, rstd, n0, n1, C);
    // The GEMM operands of each sample: W and b, or the folded W' and b'.
    std::vector<acc> wg(ng * Co * C), bg(ng * Co);
    parallel_for(0, ng * Co, std::max<int64_t>(1, 4096 / C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = n0 + r / Co;
        const T* wrow = w + n * ws + (r % Co) * C;
        acc* out = wg.data() + r * C;
        double bias = b != nullptr ? double(b[n * bs + r % Co]) : 0.0;
        if (fold[r / Co]) {
          for (int64_t c = 0; c < C; ++c) {
            out[c] = static_cast<acc>(double(wrow[c]) * rstd[n * C + c]);
            bias -= double(out[c]) * mean[n * C + c];
          }
        } else {
          for (int64_t c = 0; c < C; ++c) out[c] = static_cast<acc>(wrow[c]);
        }
        bg[r] = static_cast<acc>(bias);
      }
    });
    parallel_for(0, ng * tiles, grain_for(Co * C * L), [&](int64_t t0, int64_t t1) {
      std::vector<acc> tile(C * L), conv = scratch<T>(C * L), obuf = scratch<T>(Co * L);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = t / tiles, n = n0 + g, p0 = (t % tiles) * L, len = std::min(L, P - p0);
        Mat<const acc> xt;
        if (fold[g]) {  // only for T == acc: a view of x
          xt = input_tile(at_pixel(x + n * C * P, C, p0, l), C, P, len, l, conv.data());
        } else {
          auto m = normalized_tile(x + n * C * P, l, C, P, p0, len, q, g * C, tile.data(),
                                   conv.data());
          xt = {m.data, m.rows, m.cols, m.rs, m.cs};
        }
        T* yp = at_pixel(y + n * Co * P, Co, p0, l);
        auto yt = out_tile(yp, Co, P, len, l, obuf.data());
        gemm(Mat<const acc>{wg.data() + g * Co * C, Co, C, C, 1}, xt, acc(0), yt);
        if (b != nullptr || fold[g]) add_rows(yt, bg.data() + g * Co);
        if constexpr (!std::is_same_v<T, acc>) store_tile(yt, yp, P, l);
      }
    });
  }
}

template <typename T>
void backward(const T* gy, const T* x, const T* w, int64_t ws, const double* mean,
              const double* rstd, T* gx, T* gw, T* gb, Layout l, int64_t N, int64_t C, int64_t Co,
              int64_t P) {
  using acc = acc_t<T>;
  const int64_t L = tile_pixels(C, Co, P), tiles = (P + L - 1) / L;
  const int64_t G = group_samples(N, C, Co, P);
  const int threads = at::get_num_threads();
  for (int64_t n0 = 0; n0 < N; n0 += G) {
    const int64_t n1 = std::min(N, n0 + G), ng = n1 - n0;
    const NormParams<acc> q(mean + n0 * C, rstd + n0 * C, ng * C);
    // W of the group as acc_t: a view of weight itself for float/double with a weight per sample;
    // converted, or repeated for a broadcast weight (a group's copy is bounded by group_samples).
    std::vector<acc> wconv;
    const acc* wacc = reinterpret_cast<const acc*>(w) + n0 * ws;
    if (!std::is_same_v<T, acc> || (ws == 0 && ng > 1)) {
      wconv = weights_as_acc(w, ws, n0, n1, Co, C);
      wacc = wconv.data();
    }
    const std::vector<char> fold = fold_flags<T>(mean, rstd, n0, n1, C);

    const int64_t L1 = reduce_tile_pixels(C, Co, P), tiles1 = (P + L1 - 1) / L1;
    // Pass 1: per-thread partial gW = gy @ xh^T (by GEMM on normalized tiles) and gb = sum_p gy.
    // Each thread owns a fixed, contiguous range of tasks, so for a given thread count the
    // summation order, and the result, is fixed.
    std::vector<acc> part_w(threads * ng * Co * C, acc(0));
    std::vector<double> part_b(threads * ng * Co, 0.0);
    parallel_for(0, ng * tiles1, grain_for(Co * C * L1), [&](int64_t t0, int64_t t1) {
      const int tid = at::get_thread_num();
      TORCH_CHECK(tid < threads, "din_ops: thread ", tid, " of a team larger than torch's ", threads,
                  " threads (parallel.h)");
      std::vector<acc> tile(C * L1), conv = scratch<T>(std::max(C, Co) * L1);
      std::vector<acc> gbuf = scratch<T>(Co * L1), colsum(l == Layout::NHWC ? Co : 0);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = t / tiles1, n = n0 + g, p0 = (t % tiles1) * L1, len = std::min(L1, P - p0);
        Mat<const acc> xt;
        if (fold[g]) {  // gy @ x^T; the mean is subtracted after the reduction
          xt = input_tile(at_pixel(x + n * C * P, C, p0, l), C, P, len, l, conv.data());
        } else {
          auto m = normalized_tile(x + n * C * P, l, C, P, p0, len, q, g * C, tile.data(),
                                   conv.data());
          xt = {m.data, m.rows, m.cols, m.rs, m.cs};
        }
        const auto gt = input_tile(at_pixel(gy + n * Co * P, Co, p0, l), Co, P, len, l, gbuf.data());
        acc* pw = part_w.data() + (tid * ng + g) * Co * C;
        double* pb = part_b.data() + (tid * ng + g) * Co;
        gemm(gt, Mat<const acc>{xt.data, len, C, xt.cs, xt.rs}, acc(1), Mat<acc>{pw, Co, C, C, 1});
        if (l == Layout::NCHW) {
          for (int64_t o = 0; o < Co; ++o) pb[o] += sum(gt.data + o * gt.rs, len);
        } else {
          std::fill(colsum.begin(), colsum.end(), acc(0));
          for (int64_t p = 0; p < len; ++p) add_to(colsum.data(), gt.data + p * Co, Co);
          for (int64_t o = 0; o < Co; ++o) pb[o] += colsum[o];
        }
      }
    });

    // Reduce the partials (in thread order), then m1 and m2 per sample.
    std::vector<double> gwd(ng * Co * C), gbd(ng * Co);
    // W^T per sample, contiguous: the grad_x GEMM is then a plain NN product for the BLAS.
    std::vector<acc> m1(ng * C), m2(ng * C), wt(ng * C * Co);
    parallel_for(0, ng * Co, std::max<int64_t>(1, 4096 / C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t g = r / Co, n = n0 + g;
        double* row = gwd.data() + r * C;
        std::fill(row, row + C, 0.0);
        gbd[r] = 0.0;
        for (int th = 0; th < threads; ++th) {
          const acc* pw = part_w.data() + (th * ng * Co + r) * C;
          for (int64_t c = 0; c < C; ++c) row[c] += pw[c];
          gbd[r] += part_b[th * ng * Co + r];
        }
        if (fold[g]) {  // gy @ xh^T = (gy @ x^T - gb mean^T) * rstd
          for (int64_t c = 0; c < C; ++c) {
            row[c] = (row[c] - gbd[r] * mean[n * C + c]) * rstd[n * C + c];
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          gw[(n0 * Co + r) * C + c] = static_cast<T>(row[c]);
        }
        gb[n0 * Co + r] = static_cast<T>(gbd[r]);
      }
    });
    // m1 = W^T gb / P and m2 = sum_o W * gW / P, in blocks of channels so the rows of W and gW are
    // read contiguously; W^T is written on the way.
    constexpr int64_t kCb = 64;
    const int64_t cblocks = (C + kCb - 1) / kCb;
    parallel_for(0, ng * cblocks, grain_for(Co * kCb), [&](int64_t k0, int64_t k1) {
      double s1[kCb], s2[kCb];
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t g = k / cblocks, c0 = (k % cblocks) * kCb, cn = std::min(kCb, C - c0);
        std::fill(s1, s1 + cn, 0.0);
        std::fill(s2, s2 + cn, 0.0);
        for (int64_t o = 0; o < Co; ++o) {
          const int64_t row = (g * Co + o) * C + c0;
          const double gbo = gbd[g * Co + o];
          for (int64_t j = 0; j < cn; ++j) {
            s1[j] += double(wacc[row + j]) * gbo;
            s2[j] += double(wacc[row + j]) * gwd[row + j];
            wt[(g * C + c0 + j) * Co + o] = wacc[row + j];
          }
        }
        for (int64_t j = 0; j < cn; ++j) {
          m1[g * C + c0 + j] = static_cast<acc>(s1[j] / double(P));
          m2[g * C + c0 + j] = static_cast<acc>(s2[j] / double(P));
        }
      }
    });

    // Pass 2: gx = rstd * (W^T gy - m1 - xh * m2): the GEMM writes W^T gy into the tile, then the
    // instance-norm backward is applied in place while the tile is in L2.
    parallel_for(0, ng * tiles, grain_for(Co * C * L), [&](int64_t t0, int64_t t1) {
      std::vector<acc> conv = scratch<T>(C * L), obuf = scratch<T>(C * L);
      std::vector<acc> gbuf = scratch<T>(Co * L);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t g = t / tiles, n = n0 + g, p0 = (t % tiles) * L, len = std::min(L, P - p0);
        const T* xp = at_pixel(x + n * C * P, C, p0, l);
        T* gxp = at_pixel(gx + n * C * P, C, p0, l);
        auto ot = out_tile(gxp, C, P, len, l, obuf.data());
        const auto gt = input_tile(at_pixel(gy + n * Co * P, Co, p0, l), Co, P, len, l, gbuf.data());
        gemm(Mat<const acc>{wt.data() + g * C * Co, C, Co, Co, 1}, gt, acc(0), ot);
        const acc* hi = q.hi.data() + g * C;
        const acc* lo = q.lo.data() + g * C;
        const acc* rs = q.rstd.data() + g * C;
        if (l == Layout::NCHW) {
          for (int64_t c = 0; c < C; ++c) {
            acc* row = ot.data + c * ot.rs;
            normalize_backward(row, load(xp + c * P, len, conv.data()), len, hi[c], lo[c], rs[c],
                               m1[g * C + c], m2[g * C + c], row);
          }
        } else {
          normalize_backward_rows(ot.data, load(xp, len * C, conv.data()), len, C, hi, lo, rs,
                                  m1.data() + g * C, m2.data() + g * C, ot.data);
        }
        if constexpr (!std::is_same_v<T, acc>) store_tile(ot, gxp, P, l);
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_cpu(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_weight_1x1(x_in, weight, bias, /*broadcast=*/true);
  const Layout l = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, l);
  const at::Tensor w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), Co = w.size(1);
  auto y = at::empty({N, Co, x.size(2), x.size(3)}, x.options().memory_format(memory_format(l)));
  at::Tensor mean, rstd;
  std::tie(mean, rstd) = empty_stats(x);
  if (N == 0) return {y, mean, rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "dynamic_instance_norm_1x1", [&] {
        forward(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), batch_stride(w),
                has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
                has_bias ? batch_stride(b) : 0, y.mutable_data_ptr<scalar_t>(), l, N, C, Co, P,
                eps, mean.mutable_data_ptr<double>(), rstd.mutable_data_ptr<double>());
      });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_instance_norm_1x1_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& mean, const at::Tensor& rstd) {
  check_weight_1x1(x_in, weight, c10::nullopt, /*broadcast=*/true);
  check_grad(grad_y, x_in, weight.size(1));
  check_stats(x_in, mean, rstd);
  const Layout l = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, l);
  const at::Tensor gy = in_layout(grad_y, l);
  const at::Tensor w = weight.contiguous(), m = mean.contiguous(), r = rstd.contiguous();
  const int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), Co = w.size(1);
  auto gx = at::empty_like(x, x.options().memory_format(memory_format(l)));
  auto gw = at::empty({N, Co, C}, x.options());
  auto gb = at::empty({N, Co}, x.options());
  if (N == 0) return {gx, gw, gb};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "dynamic_instance_norm_1x1_backward", [&] {
        backward(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                 w.const_data_ptr<scalar_t>(), batch_stride(w), m.const_data_ptr<double>(),
                 r.const_data_ptr<double>(), gx.mutable_data_ptr<scalar_t>(),
                 gw.mutable_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(), l, N, C, Co, P);
      });
  // One pixel per plane: x - mean is identically 0 and so is gx. The general formula gives 0 only
  // up to rounding there (W^T gy from the GEMM minus m1 = W^T gb / P from double sums), scaled by
  // rstd = 1 / sqrt(eps), which can be large.
  if (P == 1) gx.zero_();
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CPU, m) {
  m.impl("dynamic_instance_norm_1x1", &dynamic_instance_norm_1x1_cpu);
  m.impl("dynamic_instance_norm_1x1_backward", &dynamic_instance_norm_1x1_backward_cpu);
}

}  // namespace din_ops::cpu
