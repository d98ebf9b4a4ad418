// Helpers shared by the CPU kernel files: memory layouts, conversion to the accumulation type, and
// the per-(n, c) instance statistics.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "din_ops/math.h"
#include "loops.h"
#include "parallel.h"

namespace din_ops::cpu {

// Accumulation type: float for float/half/bfloat16 data, double for double.
template <typename T>
using acc_t = at::opmath_type<T>;

// The two memory layouts the kernels handle natively. Any other strides are copied to NCHW first
// (documented: an arbitrary strided view costs one copy).
enum class Layout { NCHW, NHWC };

inline Layout layout_of(const at::Tensor& x) {
  return (!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) ? Layout::NHWC
                                                                                  : Layout::NCHW;
}

inline at::MemoryFormat memory_format(Layout l) {
  return l == Layout::NHWC ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// `t` laid out as `l` (a no-op when it already is).
inline at::Tensor in_layout(const at::Tensor& t, Layout l) { return t.contiguous(memory_format(l)); }

// Asks for `bytes` bytes at `p` to be brought into cache, one request per 64-byte line: for reads
// the hardware prefetcher does not ramp up for in time (short runs, e.g. the rows of a band), or to
// overlap the next plane's reads with this plane's writes (a single read stream alone does not
// keep enough loads in flight to reach the memory bandwidth).
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o);
}

// Values per step of a per-plane elementwise pass that prefetches the next plane as it goes (float
// and double data; half and bfloat16 go by kBlock, their conversion buffers' size): a few lines of
// the next plane per step, among the pass's own loads and streamed stores. Requested a kBlock at a
// time (64 lines per stream at once) the pass was slower: adain at (1, 512, 64, 64) took 1.39 ms
// against 1.11 ms in steps of 128, and steps of 64 measured the same as 128 (means of 5-6
// alternating din-bench runs, 2-core AMD EPYC, 2026-12-06).
template <typename T>
constexpr int64_t prefetch_step() {
  return std::is_same_v<T, acc_t<T>> ? 128 : kBlock;
}

// n values of `src` as acc_t: `src` itself when T is acc_t, otherwise converted into `buf`.
template <typename T>
const acc_t<T>* load(const T* src, int64_t n, acc_t<T>* buf) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return src;
  } else {
    convert(src, n, buf);
    return buf;
  }
}

// Where a kernel writes n acc_t results bound for `dst`: `dst` itself when T is acc_t, else `buf`.
template <typename T>
acc_t<T>* out_ptr(T* dst, acc_t<T>* buf) {
  if constexpr (std::is_same_v<T, acc_t<T>>) {
    return dst;
  } else {
    return buf;
  }
}

// Moves results produced by out_ptr to `dst` (converting; nothing to do when T is acc_t).
template <typename T>
void store(const acc_t<T>* src, int64_t n, T* dst) {
  if constexpr (!std::is_same_v<T, acc_t<T>>) convert(src, n, dst);
}

// Whether an elementwise pass writes its output of `count` values of T with non-temporal stores
// (the `stream` argument of the elementwise loops of loops.h). A plain store first reads each output
// line from memory: for an op that reads one or two inputs of the output's size, a third or a
// quarter of its memory traffic. But a streamed output leaves the cache, and below some size the
// op's consumer would have found it there. The threshold, 8 MiB, is where that stopped paying on a
// 2-core AMD EPYC with a 32 MiB L3 (2026-12-06): adain followed by a relu took 1.6x as long
// streamed at 4 MiB and the same or less at 8 MiB, while adain alone took 0.75-0.85x as long.
// Float and double outputs only: half and bfloat16 ones are converted through a buffer.
template <typename T>
bool stream_output(int64_t count) {
  return std::is_same_v<T, acc_t<T>> && count * int64_t(sizeof(T)) >= (int64_t(8) << 20);
}

// Orders the non-temporal stores made before it ahead of every later store (x86: sfence), so
// that what a task streamed is in place when the task's results are handed to another thread.
inline void stream_fence() {
#if defined(__x86_64__)
  __builtin_ia32_sfence();
#else
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

// A scratch buffer of acc_t that is only allocated when T needs conversion.
template <typename T>
std::vector<acc_t<T>> scratch(int64_t n) {
  return std::vector<acc_t<T>>(std::is_same_v<T, acc_t<T>> ? 0 : n);
}

// Per-channel normalization parameters in the accumulation type: the mean split as hi + lo (see
// din_ops/math.h) and rstd. For double data lo is 0.
template <typename acc>
struct PlaneNorm {
  acc hi, lo, rstd;
};

template <typename acc>
PlaneNorm<acc> plane_norm(double mean, double rstd) {
  if constexpr (std::is_same_v<acc, double>) {
    return {mean, 0.0, rstd};
  } else {
    const auto s = math::split_mean(mean);
    return {s.hi, s.lo, static_cast<acc>(rstd)};
  }
}

template <typename acc>
struct NormParams {
  std::vector<acc> hi, lo, rstd;

  NormParams(const double* mean, const double* rs, int64_t count)
      : hi(count), lo(count), rstd(count) {
    for (int64_t i = 0; i < count; ++i) {
      const PlaneNorm<acc> p = plane_norm<acc>(mean[i], rs[i]);
      hi[i] = p.hi, lo[i] = p.lo, rstd[i] = p.rstd;
    }
  }
};

// The per-(n, c) statistics outputs of the forward ops: mean and rstd, (N, C) float64.
inline std::tuple<at::Tensor, at::Tensor> empty_stats(const at::Tensor& x) {
  const auto opts = x.options().dtype(at::kDouble);
  return {at::empty({x.size(0), x.size(1)}, opts), at::empty({x.size(0), x.size(1)}, opts)};
}

// Grain for parallel_for over tasks of `work` multiply-adds each: small problems run inline on
// the calling thread, since waking the other threads would cost more than the work itself.
inline int64_t grain_for(int64_t work) {
  return std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(work, 1));
}

// Adds the sums over n values of g and of g * xh, xh = ((x - hi) - lo) * rstd, to sg and sgxh (the
// instance-norm backward's two plane sums), for any T (`xbuf`: scratch<T>(kBlock)).
template <typename T>
void add_grad_sums(const acc_t<T>* g, const T* xp, int64_t n, acc_t<T> hi, acc_t<T> lo,
                   acc_t<T> rstd, double* sg, double* sgxh, acc_t<T>* xbuf) {
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t len = std::min(kBlock, n - i);
    grad_sums(g + i, load(xp + i, len, xbuf), len, hi, lo, rstd, sg, sgxh);
  }
}

// dL/dx of a plane of P values from g = dL/dxh, the gradient with respect to the normalized plane
// (docs/math.md): rstd * (g - mean(g) - xh * mean(g * xh)), with sg and sgxh the plane's sums of g
// and g * xh (add_grad_sums), or g itself when the op did not normalize. Computes the `n` values
// at g, xp, gxp: the whole plane (n = P) or a run of its rows. `g` may be gxp itself when T is
// acc_t<T> (in place). `xbuf` and `obuf` are scratch<T>(kBlock) buffers.
template <typename T>
void input_grad_from_sums(const acc_t<T>* g, const T* xp, T* gxp, int64_t n, int64_t P,
                          acc_t<T> hi, acc_t<T> lo, acc_t<T> rstd, bool normalized, double sg,
                          double sgxh, acc_t<T>* xbuf, acc_t<T>* obuf) {
  using acc = acc_t<T>;
  const acc mg = static_cast<acc>(sg / double(P)), mgxh = static_cast<acc>(sgxh / double(P));
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t len = std::min(kBlock, n - i);
    acc* o = out_ptr(gxp + i, obuf);
    if (normalized) {
      normalize_backward(g + i, load(xp + i, len, xbuf), len, hi, lo, rstd, mg, mgxh, o);
    } else if (o != g + i) {  // g may be gx itself (in place)
      std::copy_n(g + i, len, o);
    }
    store<T>(o, len, gxp + i);
  }
}

// The same for a whole plane, computing the sums first (a pass over g and x).
template <typename T>
void plane_input_grad(const acc_t<T>* g, const T* xp, T* gxp, int64_t P, acc_t<T> hi, acc_t<T> lo,
                      acc_t<T> rstd, bool normalized, acc_t<T>* xbuf, acc_t<T>* obuf) {
  double sg = 0.0, sgxh = 0.0;
  if (normalized) add_grad_sums(g, xp, P, hi, lo, rstd, &sg, &sgxh, xbuf);
  input_grad_from_sums(g, xp, gxp, P, P, hi, lo, rstd, normalized, sg, sgxh, xbuf, obuf);
}

// Mean and rstd of one contiguous plane of P values (`buf`: scratch<T>(kBlock)).
template <typename T>
void plane_stats(const T* xp, int64_t P, double eps, double* mean, double* rstd, acc_t<T>* buf) {
  using acc = acc_t<T>;
  const acc shift = static_cast<acc>(xp[0]);
  double s1 = 0.0, s2 = 0.0;
  if constexpr (std::is_same_v<T, acc>) {
    shifted_sums(xp, P, shift, &s1, &s2);  // the whole plane in one call: no conversion needed
  } else {
    for (int64_t i = 0; i < P; i += kBlock) {
      const int64_t len = std::min(kBlock, P - i);
      shifted_sums(load(xp + i, len, buf), len, shift, &s1, &s2);
    }
  }
  const auto m = math::moments_from_shifted_sums(shift, s1, s2, double(P), eps);
  *mean = m.mean;
  *rstd = m.rstd;
}

// plane_stats of two planes of P float or double values at once (loops.h: shifted_sums_pair), the
// same values as two plane_stats calls: a's with eps_a, b's with eps_b.
template <typename T>
void plane_stats_pair(const T* a, const T* b, int64_t P, double eps_a, double eps_b,
                      double* mean_a, double* rstd_a, double* mean_b, double* rstd_b) {
  static_assert(std::is_same_v<T, acc_t<T>>, "half and bfloat16 planes go through plane_stats");
  double sums[4] = {};
  shifted_sums_pair(a, b, P, a[0], b[0], sums);
  const auto ma = math::moments_from_shifted_sums(a[0], sums[0], sums[1], double(P), eps_a);
  const auto mb = math::moments_from_shifted_sums(b[0], sums[2], sums[3], double(P), eps_b);
  *mean_a = ma.mean, *rstd_a = ma.rstd, *mean_b = mb.mean, *rstd_b = mb.rstd;
}

// The fixed row chunks of a channels-last sample (P x C) that the NHWC loops split their work into:
// `count` chunks of `rows` rows (the last one may be shorter), about 64 KiB of float each. Sums over
// the pixels are added per chunk, then over the chunks in order, so the chunking depends only on the
// shape (results do not depend on the thread count).
struct NhwcChunks {
  int64_t rows, count;
};
inline NhwcChunks nhwc_chunks(int64_t P, int64_t C) {
  const int64_t rows =
      std::clamp<int64_t>(kBlock * 16 / std::max<int64_t>(C, 1), 1, std::max<int64_t>(P, 1));
  return {rows, (P + rows - 1) / rows};
}

// K sums per channel over the pixels of channels-last samples [n0, n1) of T: all chunks of all
// samples in one parallel loop, chunk_sums(n, r0, len, out, bufs) adding rows [r0, r0 + len) of
// sample n into out[k * C + c] (zeroed), with kBufs conversion buffers (scratch<T> of a chunk, kept
// by the thread), then the chunks' partials added in chunk order (in parallel over samples and
// channel blocks), so the result does not depend on the thread count. Returns
// sums[((n - n0) * K + k) * C + c].
template <typename T, int kBufs, typename F>
std::vector<double> nhwc_channel_sums(int64_t n0, int64_t n1, int64_t P, int64_t C, int64_t K,
                                      const F& chunk_sums) {
  const NhwcChunks ch = nhwc_chunks(P, C);
  const int64_t S = n1 - n0, tasks = S * ch.count;
  std::unique_ptr<double[]> part(new double[K * tasks * C]);
  parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
    std::array<std::vector<acc_t<T>>, kBufs> bufs;
    for (auto& buf : bufs) buf = scratch<T>(ch.rows * C);
    for (int64_t t = b; t < e; ++t) {
      double* out = part.get() + K * t * C;
      std::fill_n(out, K * C, 0.0);
      const int64_t r0 = (t % ch.count) * ch.rows;
      chunk_sums(n0 + t / ch.count, r0, std::min(ch.rows, P - r0), out, bufs);
    }
  });
  std::vector<double> sums(S * K * C, 0.0);
  constexpr int64_t kCb = 256;  // channels per reduction task
  const int64_t cblocks = (C + kCb - 1) / kCb;
  parallel_for(0, S * cblocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / cblocks, c0 = (t % cblocks) * kCb, cn = std::min(kCb, C - c0);
      for (int64_t k = 0; k < ch.count; ++k) {
        const double* pt = part.get() + K * (i * ch.count + k) * C;
        for (int64_t j = 0; j < K; ++j) {
          double* o = sums.data() + (i * K + j) * C + c0;
          const double* p = pt + j * C + c0;
          for (int64_t c = 0; c < cn; ++c) o[c] += p[c];
        }
      }
    }
  });
  return sums;
}

// Samples per wave of the channels-last two-pass loops (statistics, then the elementwise pass): as
// many as fit in ~8 MiB, so that the second pass finds the wave's input still in cache, and few
// parallel loops when the samples are small.
inline int64_t nhwc_wave(int64_t P, int64_t C, int64_t itemsize) {
  return std::max<int64_t>(1, (int64_t(8) << 20) / std::max<int64_t>(1, P * C * itemsize));
}

// Instance statistics of samples [n0, n1) of x (laid out as `layout`), written to mean/rstd at
// [n0 * C, n1 * C). Deterministic: the summation order does not depend on the thread count.
template <typename T>
void instance_stats(const T* x, Layout layout, int64_t n0, int64_t n1, int64_t C, int64_t P,
                    double eps, double* mean, double* rstd) {
  using acc = acc_t<T>;
  if (layout == Layout::NCHW) {
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(P, 1));
    parallel_for(n0 * C, n1 * C, grain, [&](int64_t b, int64_t e) {
      auto buf = scratch<T>(kBlock);
      for (int64_t plane = b; plane < e; ++plane) {
        plane_stats(x + plane * P, P, eps, mean + plane, rstd + plane, buf.data());
      }
    });
    return;
  }
  // NHWC: shifted sums per chunk of rows (nhwc_channel_sums), the shift of a channel being its
  // value at the sample's first pixel.
  const int64_t S = n1 - n0;
  std::vector<acc> shift(S * C);
  for (int64_t i = 0; i < S; ++i) {
    for (int64_t c = 0; c < C; ++c) shift[i * C + c] = static_cast<acc>(x[(n0 + i) * P * C + c]);
  }
  const auto chunk_sums = [&](int64_t n, int64_t r0, int64_t len, double* out, auto& bufs) {
    shifted_sums_rows(load(x + (n * P + r0) * C, len * C, bufs[0].data()), len, C,
                      shift.data() + (n - n0) * C, out, out + C);
  };
  const std::vector<double> sums = nhwc_channel_sums<T, 1>(n0, n1, P, C, 2, chunk_sums);
  for (int64_t i = 0; i < S; ++i) {
    for (int64_t c = 0; c < C; ++c) {
      const auto m = math::moments_from_shifted_sums(shift[i * C + c], sums[2 * i * C + c],
                                                     sums[(2 * i + 1) * C + c], double(P), eps);
      mean[(n0 + i) * C + c] = m.mean;
      rstd[(n0 + i) * C + c] = m.rstd;
    }
  }
}

}  // namespace din_ops::cpu
