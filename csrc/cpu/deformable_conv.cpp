// Per-sample deformable convolution (DCNv1, and DCNv2 with a modulation mask) on the CPU, with the
// instance normalization applied on load (deformable dynamic instance norm) or not. Offsets and mask
// follow torchvision.ops.deform_conv2d: offset (N, 2 * G * kh * kw, Ho, Wo) holds the (dy, dx) pair
// of tap t = i * kw + j of offset group g at channels 2 * (g * kh * kw + t) + {0, 1}; mask
// (N, G * kh * kw, Ho, Wo). Channel c belongs to offset group c / (C / G).
//
// A weight or bias of batch 1 applies to every sample (read with a batch stride of 0; backward
// returns per-sample gW and gb, which autograd sums).
//
//   forward : col[c, t, q] = m[g, t, q] * S(xh[c], p(t, q))      S: bilinear sample, 0 outside
//             y[n]        = W[n] @ col + b[n]                    (per convolution group)
//             p(t, q)     = (oh * sh - pt + i * dh + dy, ow * sw - pl + j * dw + dx)
//   backward: gb          = sum_q gy
//             gW[n]       = gy @ col^T
//             gcol        = W[n]^T @ gy
//             gm[g, t, q] = sum_{c in g} gcol[c, t, q] * S(xh[c], p)
//             gp[g, t, q] = sum_{c in g} gcol[c, t, q] * m * dS(xh[c], p)/dp   (dy, dx)
//             gxh[c]     += gcol * m * (corner weights), scattered onto the four corners of p
//             gx          = rstd * (gxh - mean(gxh) - xh * mean(gxh * xh))   (identity unnormalized)
//
// Normalization folds into the sampler (docs/math.md): a task normalizes the one sample it works
// on, ((x - mean_hi) - mean_lo) * rstd, into a channels-last buffer (P x C), from which the four
// corners of a sample point are contiguous runs over the channels, so the interpolation (and, in
// backward, the scatter of the x-gradient into a channels-last buffer) is vectorized over channels.
// Neither the normalized input nor the sampled columns of the whole batch are ever written. The
// bilinear corner and weight arithmetic is din_ops/bilinear.h, shared with the CUDA kernels.
//
// Work and workspace. Output pixels of one sample are cut into tiles of L flattened positions, with
// L chosen so that a column tile (C * kh * kw x L) is about 0.5 MiB. A tile builds its columns
// offset group by offset group (corners and weights of its kh * kw * L sample points once, then
// every channel of the group gathers through them) and does one GEMM per convolution group
// (blas.h). Column tiles are tap-major and channels-last (a point's channels are contiguous, so
// the interpolation writes them, and backward reads their gradients, without transposes), with
// the sample's weight permuted to the same order once per sample; the inner loops are
// deformable_loops.cpp, compiled for several x86-64 levels.
// The work is split into T = min(threads, tiles, work / grain) fixed chunks of consecutive tiles, and
// every chunk owns one slice of a single workspace tensor allocated up front, so the workspace is
// bounded by T * (column tile + corner table + one normalized sample + the sample's weight and one
// output tile), plus in backward T * (a second column tile and per-sample x-gradient and
// weight-gradient buffers): chunk_elems gives the exact size.
//
// Determinism of the x-gradient scatter: several output pixels sample the same input pixel, so the
// x-gradient is a scatter. It goes to per-chunk buffers (C * H * W of one sample), never to shared
// memory, in one of two fixed schemes (backward_plan picks the one with the shorter critical path):
// - whole samples: chunk k owns consecutive samples and does all tiles of each, in tile order, so
//   nothing needs reducing (many or small samples);
// - split samples: one sample at a time, its tiles cut into T chunks, each accumulating into its
//   own buffer in tile order; the T buffers are then added in chunk order (per channel, in parallel
//   over channels), followed by the instance-norm backward. Weight-gradient partials likewise.
// The scheme and chunking depend only on the shape and the thread count, so results are bitwise
// repeatable for a fixed thread count (they may differ in the last bits between thread counts).
// The offset and mask gradients, and the forward output, are owned by exactly one tile.
//
// Accumulation: float (double for double data), with the statistics, the bias gradient and the
// instance-norm backward sums in double like the other kernels. Inputs are computed in NCHW;
// channels_last x is converted once on entry and the outputs converted back (documented cost).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "blas.h"
#include "common.h"
#include "conv_geometry.h"
#include "deformable_loops.h"
#include "din_ops/bilinear.h"

namespace din_ops::cpu {
namespace {

namespace bl = din_ops::bilinear;

// The convolution's geometry plus the offset groups: G groups of Cgo channels.
struct Geometry : ConvGeometry {
  int64_t G, Cgo;
};

Geometry geometry(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                  int64_t offset_groups, const at::Tensor& b = at::Tensor()) {
  Geometry s{conv_geometry(x, w, stride, padding, dilation, groups, b), offset_groups,
             x.size(1) / offset_groups};
  return s;
}

void check_args(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b,
                const at::Tensor& offset, const c10::optional<at::Tensor>& mask,
                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                int64_t groups, int64_t offset_groups) {
  // The k x k convolution's checks; weight and bias may have batch 1 (one for every sample).
  check_conv_args(x, w, b, stride, padding, dilation, groups, /*broadcast=*/true);
  TORCH_CHECK_VALUE(offset_groups > 0 && x.size(1) % offset_groups == 0,
                    "din_ops: expected offset_groups to divide C = ", x.size(1),
                    ", got offset_groups = ", offset_groups);
  const Geometry s = geometry(x, w, stride, padding, dilation, groups, offset_groups);
  check_deformable_offset_mask(x, offset, mask, offset_groups, s.KK(), s.Ho, s.Wo);
}

// ---------------------------------------------------------------------------------------------
// Tiles, chunks and the workspace.

template <typename acc>
constexpr int64_t point_bytes() {
  return static_cast<int64_t>(sizeof(bl::Corners<acc>));
}

// Flattened output positions per tile: a column tile of C * kh * kw x L values is ~0.5 MiB (the two
// column tiles of backward, the weight and the sampled rows stay in L2; the GEMMs are as fast as
// with larger tiles), and the corner table of its kh * kw x L points (64-96 bytes each) at most
// ~1.5 MiB. L is a multiple of 8: MKL's sgemm ran the tile product about 2% slower on an odd L
// (2-core AMD EPYC, 2026-12-07, one thread, 128 x 1152 weight: 96 GFLOP/s at L = 113 against 98 at
// 112 and 120; 97.7 at 227 against 99.7 at 228).
int64_t tile_len(const Geometry& s) {
  const int64_t by_cols = (int64_t(1) << 17) / std::max<int64_t>(1, s.C * s.KK());
  const int64_t by_points = (int64_t(1) << 14) / s.KK();
  const int64_t L = std::max<int64_t>(16, std::min(by_cols, by_points)) / 8 * 8;
  return std::max<int64_t>(1, std::min(s.Q(), L));
}

int64_t tiles_of(const Geometry& s) {
  const int64_t L = tile_len(s);
  return (s.Q() + L - 1) / L;
}

// Number of fixed chunks the `tasks` tiles (of `work` multiply-adds each) are split into: one per
// thread, fewer when there is little work. Depends only on the shape and the thread count.
int64_t chunks_for(int64_t tasks, int64_t work) {
  const int64_t by_work = std::max<int64_t>(1, (tasks * work) >> 17);
  return std::max<int64_t>(1, std::min({int64_t(at::get_num_threads()), tasks, by_work}));
}

// Multiply-adds per tile (sampling counted as ~8 per value), for the chunk count.
int64_t tile_work(const Geometry& s) { return tile_len(s) * s.C * s.KK() * (s.Cog + 8); }

// Elements of the accumulation type per chunk (forward and backward), besides the point table.
template <typename T>
int64_t chunk_elems(const Geometry& s, bool backward) {
  const bool conv = !std::is_same_v<T, acc_t<T>>;  // half/bfloat16 need conversion buffers
  const int64_t L = tile_len(s), KKL = s.KK() * L, colsz = s.C * KKL;
  int64_t e = colsz + s.Co * s.K() + s.Co * L;         // columns, tap-major weight, y/gy tile
  if (conv && !backward) e += s.Co * L;                 // the output tile converted
  if (backward) {
    e += colsz + 4 * KKL + s.C * (s.P() + 1) + s.Co * s.K();  // gcols, mask/goffset/gmask, gx, gW
    e += s.C * (s.P() + 1);                                  // normalized channels-last x
  }
  return e;
}

// The corner tables of the kh * kw x Lt sample points of offset group g for the output positions
// [q0, q0 + Lt) of sample n (offsets and mask as acc). With `mask` given and `fold_mask`, the mask
// is folded into the interpolation weights (forward); otherwise it is copied to `mvals`.
template <typename T>
void sample_points(const T* offset, const T* mask, const Geometry& s, int64_t n, int64_t g,
                   int64_t q0, int64_t Lt, bool fold_mask, bl::Corners<acc_t<T>>* pts,
                   acc_t<T>* mvals) {
  using acc = acc_t<T>;
  for (int64_t t = 0; t < s.KK(); ++t) {
    const int64_t i = t / s.kw, j = t % s.kw;
    const T* oy = offset + ((n * s.G + g) * s.KK() + t) * 2 * s.Q() + q0;
    const T* ox = oy + s.Q();
    const T* m = mask != nullptr ? mask + ((n * s.G + g) * s.KK() + t) * s.Q() + q0 : nullptr;
    int64_t oh = q0 / s.Wo, ow = q0 % s.Wo;  // of output position q0 + l, stepped along
    for (int64_t l = 0; l < Lt; ++l) {
      const acc y = bl::position<acc>(oh, s.sh, s.pt, i, s.dh, static_cast<acc>(oy[l]));
      const acc x = bl::position<acc>(ow, s.sw, s.pl, j, s.dw, static_cast<acc>(ox[l]));
      auto& p = pts[t * Lt + l];
      p = bl::corners<acc>(y, x, s.H, s.W, s.P());  // outside: the zero row P
      const acc mv = m != nullptr ? static_cast<acc>(m[l]) : acc(1);
      if (fold_mask) {
        for (int k = 0; k < 4; ++k) p.weight[k] *= mv;
      } else {
        mvals[t * Lt + l] = mv;
      }
      if (++ow == s.Wo) ow = 0, ++oh;
    }
  }
}

// Sample n of x normalized into a channels-last buffer of P + 1 rows, xcl[p * C + c] = xh[n, c, p]:
// the four corners of a point are then C contiguous values each, for all channels at once. Row P
// is zero: the corners outside the plane point there (bilinear.h), so they add exactly zero even
// next to an inf or NaN pixel. Blocks of 64 pixels are transposed in registers, then normalized
// per channel in place (loops.h).
template <typename T>
void normalized_channels_last(const T* x, const Geometry& s, const NormParams<acc_t<T>>& q,
                              int64_t n, acc_t<T>* xcl) {
  using acc = acc_t<T>;
  constexpr int64_t kPixels = 64;
  const int64_t C = s.C, P = s.P();
  std::vector<acc> cvt = scratch<T>(C * kPixels);
  for (int64_t p0 = 0; p0 < P; p0 += kPixels) {
    const int64_t pb = std::min(kPixels, P - p0);
    const T* xp = x + n * C * P + p0;
    const acc* src;
    int64_t ss;
    if constexpr (std::is_same_v<T, acc>) {
      src = xp, ss = P;
    } else {
      for (int64_t c = 0; c < C; ++c) convert(xp + c * P, pb, cvt.data() + c * kPixels);
      src = cvt.data(), ss = kPixels;
    }
    acc* out = xcl + p0 * C;
    transpose_matrix(src, ss, C, pb, out, C);
    normalize_rows(out, pb, C, q.hi.data() + n * C, q.lo.data() + n * C, q.rstd.data() + n * C,
                   out);
  }
  std::fill(xcl + P * C, xcl + (P + 1) * C, acc(0));
}

// Calls f(c, len, off, cs) for runs of offset group g's channels [g * Cgo, (g + 1) * Cgo) whose
// columns in a tile of Lt positions (layout below) start at cols + off, channel c + i at
// cols + off + i * cs: the parts of the group in one convolution group (contiguous, cs = 1), or
// with one channel per convolution group (depthwise) the whole group, a column matrix apart.
template <typename F>
void for_each_run(const Geometry& s, int64_t g, int64_t Lt, F&& f) {
  const int64_t end = (g + 1) * s.Cgo, K = s.K();
  if (s.Cg == 1) {
    f(g * s.Cgo, s.Cgo, g * s.Cgo * Lt * K, Lt * K);
    return;
  }
  for (int64_t c = g * s.Cgo; c < end;) {
    const int64_t grp = c / s.Cg, len = std::min(end, (grp + 1) * s.Cg) - c;
    f(c, len, grp * Lt * K + c - grp * s.Cg, int64_t(1));
    c += len;
  }
}

// Column tiles are tap-major and channels-last per convolution group: the column of channel
// c = grp * Cg + cc, tap t and tile position l is cols[(grp * Lt + l) * K + t * Cg + cc], so a
// sample point's values for a run of channels are contiguous (deformable_loops.h) and group grp's
// columns are the K x Lt matrix at cols + grp * Lt * K with unit row stride. The weight is used in
// the same (tap-major) order.

// Columns of tile [q0, q0 + Lt) of sample n, interpolated from the normalized channels-last sample
// `xcl`.
template <typename T>
void build_columns(const acc_t<T>* xcl, const T* offset, const T* mask, const Geometry& s,
                   int64_t n, int64_t q0, int64_t Lt, bl::Corners<acc_t<T>>* pts, acc_t<T>* cols) {
  using acc = acc_t<T>;
  const int64_t K = s.K();
  for (int64_t g = 0; g < s.G; ++g) {
    sample_points(offset, mask, s, n, g, q0, Lt, true, pts, static_cast<acc*>(nullptr));
    for_each_run(s, g, Lt, [&](int64_t c, int64_t len, int64_t off, int64_t cs) {
      deform_columns(xcl + c, s.C, pts, s.KK(), Lt, len, cols + off, K, s.Cg, cs);
    });
  }
}

// The weight of sample n as acc in tap-major order, buf[o * K + t * Cg + cc] = w[n, o, cc, t].
template <typename T>
const acc_t<T>* tap_major_weight(const T* w, const Geometry& s, int64_t n, acc_t<T>* buf) {
  using acc = acc_t<T>;
  const int64_t K = s.K(), KK = s.KK();
  const T* wn = w + s.w_at(n, 0);
  for (int64_t o = 0; o < s.Co; ++o) {
    for (int64_t cc = 0; cc < s.Cg; ++cc) {
      for (int64_t t = 0; t < KK; ++t) {
        buf[o * K + t * s.Cg + cc] = static_cast<acc>(wn[o * K + cc * KK + t]);
      }
    }
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Forward: tasks are (n, tile) pairs, each writing its own output columns.

template <typename T>
void forward(const T* x, const T* w, const T* b, const T* offset, const T* mask, T* y,
             const Geometry& s, const NormParams<acc_t<T>>& q, acc_t<T>* ws, uint8_t* pws,
             int64_t T_) {
  using acc = acc_t<T>;
  constexpr bool conv = !std::is_same_v<T, acc>;
  const int64_t L = tile_len(s), tiles = tiles_of(s), tasks = s.N * tiles, K = s.K();
  const int64_t per_chunk = chunk_elems<T>(s, false);
  parallel_for(0, T_, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      acc* cols = ws + k * per_chunk;
      acc* wbuf = cols + s.C * s.KK() * L;  // tap-major weight
      acc* ytile = wbuf + s.Co * K;         // output tile, transposed
      acc* obuf = ytile + s.Co * L;         // conv only
      auto* pts = reinterpret_cast<bl::Corners<acc>*>(pws + k * s.KK() * L * point_bytes<acc>());
      int64_t loaded = -1;  // sample whose weight is in wbuf
      int64_t normalized = -1;  // sample in xcl
      const acc* wn = nullptr;
      // Written whole (normalized_channels_last) before it is read: left uninitialized.
      std::unique_ptr<acc[]> xcl(new acc[(s.P() + 1) * s.C]);
      for (int64_t task = k * tasks / T_; task < (k + 1) * tasks / T_; ++task) {
        const int64_t n = task / tiles, q0 = (task % tiles) * L, Lt = std::min(L, s.Q() - q0);
        if (n != normalized) {
          normalized_channels_last(x, s, q, n, xcl.get());
          normalized = n;
        }
        build_columns(xcl.get(), offset, mask, s, n, q0, Lt, pts, cols);
        if (n != loaded) {
          wn = tap_major_weight(w, s, n, wbuf);
          loaded = n;
        }
        for (int64_t grp = 0; grp < s.groups; ++grp) {
          // The product transposed, (Lt x Cog) = cols^T @ W^T: MKL runs this operand order faster
          // than W @ cols on channels-last columns. Then transposed into the output rows.
          gemm(Mat<const acc>{cols + grp * Lt * K, Lt, K, K, 1},
               Mat<const acc>{wn + grp * s.Cog * K, K, s.Cog, 1, K}, acc(0),
               Mat<acc>{ytile, Lt, s.Cog, s.Cog, 1});
          T* yp = y + (n * s.Co + grp * s.Cog) * s.Q() + q0;
          acc* yo;
          int64_t ys;
          if constexpr (conv) {
            yo = obuf, ys = Lt;
          } else {
            yo = yp, ys = s.Q();
          }
          transpose_matrix(ytile, s.Cog, Lt, s.Cog, yo, ys);
          for (int64_t o = 0; o < s.Cog; ++o) {
            if (b != nullptr) {
              add_scalar(yo + o * ys, Lt, static_cast<acc>(b[s.b_at(n, grp * s.Cog + o)]));
            }
            store<T>(yo + o * ys, Lt, yp + o * s.Q());
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Backward. Two fixed schemes, chosen from the shape and the thread count (see the file comment):
// - split: one sample at a time, its tiles split into T_ chunks with private gx / gW buffers that
//   are then added in chunk order;
// - whole: T_ chunks of consecutive samples, each sample done entirely by its chunk in tile order
//   (no reduction). Used when it balances the work at least as well (many or small samples).

// One chunk's slice of the workspace.
template <typename acc>
struct ChunkBuffers {
  acc* cols;   // C * KK * L: the columns of a tile (recomputed)
  acc* gcols;  // C * KK * L: W^T @ gy of a tile
  acc* mv;     // KK * L: mask values of a tile and offset group
  acc* goy;    // 3 * KK * L: goffset y, goffset x and gmask accumulators
  acc* gxh;    // (P + 1) * C: gradient with respect to xh of the current sample, channels-last
               // (row P takes the outside corners' zero contributions and is never read)
  acc* gwk;    // Co * K: weight gradient of the current sample
  acc* wbuf;   // Co * K: the sample's weight, tap-major
  acc* gyb;    // Co * L: converted gy tile (half/bfloat16 only)
  acc* xcl;    // (P + 1) * C: the sample normalized, channels-last, and the zero row
  bl::Corners<acc>* pts;  // KK * L points
};

template <typename T>
ChunkBuffers<acc_t<T>> chunk_buffers(const Geometry& s, acc_t<T>* ws, uint8_t* pws, int64_t k) {
  using acc = acc_t<T>;
  const int64_t L = tile_len(s), KKL = s.KK() * L, colsz = s.C * KKL;
  ChunkBuffers<acc> b{};
  b.cols = ws + k * chunk_elems<T>(s, true);
  b.gcols = b.cols + colsz;
  b.mv = b.gcols + colsz;
  b.goy = b.mv + KKL;
  b.gxh = b.goy + 3 * KKL;
  b.gwk = b.gxh + s.C * (s.P() + 1);
  b.xcl = b.gwk + s.Co * s.K();
  b.wbuf = b.xcl + s.C * (s.P() + 1);
  b.gyb = b.wbuf + s.Co * s.K();  // half/bfloat16 only
  b.pts = reinterpret_cast<bl::Corners<acc>*>(pws + k * KKL * point_bytes<acc>());
  return b;
}

// Tiles [t0, t1) of sample n: adds their contributions to b.gxh and b.gwk (zeroed by the caller)
// and writes their goffset and gmask.
template <typename T>
void backward_tiles(const T* gy, const T* x, const T* w, const T* offset, const T* mask,
                    T* goffset, T* gmask, const Geometry& s, const NormParams<acc_t<T>>& q,
                    int64_t n, int64_t t0, int64_t t1, const ChunkBuffers<acc_t<T>>& b) {
  using acc = acc_t<T>;
  constexpr bool conv = !std::is_same_v<T, acc>;
  const int64_t L = tile_len(s), K = s.K(), KK = s.KK();
  const acc* wn = tap_major_weight(w, s, n, b.wbuf);
  if (t0 < t1) normalized_channels_last(x, s, q, n, b.xcl);
  for (int64_t tile = t0; tile < t1; ++tile) {
    const int64_t q0 = tile * L, Lt = std::min(L, s.Q() - q0), KKL = KK * Lt;
    // gy tile (Co x Lt) as acc.
    const T* gp = gy + n * s.Co * s.Q() + q0;
    Mat<const acc> gt;
    if constexpr (conv) {
      for (int64_t o = 0; o < s.Co; ++o) convert(gp + o * s.Q(), Lt, b.gyb + o * Lt);
      gt = {b.gyb, s.Co, Lt, Lt, 1};
    } else {
      gt = {gp, s.Co, Lt, s.Q(), 1};
    }
    // gcols = W^T @ gy, per convolution group.
    for (int64_t grp = 0; grp < s.groups; ++grp) {
      gemm(Mat<const acc>{gt.data + grp * s.Cog * gt.rs, Lt, s.Cog, 1, gt.rs},
           Mat<const acc>{wn + grp * s.Cog * K, s.Cog, K, K, 1}, acc(0),
           Mat<acc>{b.gcols + grp * Lt * K, Lt, K, K, 1});
    }
    acc *goy = b.goy, *gox = b.goy + KKL, *gmk = b.goy + 2 * KKL;
    for (int64_t g = 0; g < s.G; ++g) {
      sample_points(offset, mask, s, n, g, q0, Lt, false, b.pts, b.mv);
      // Vectorized over the group's channels on the channels-last copies of xh (b.xcl) and of
      // the x-gradient (b.gxh, P x C), run by run (deformable_loops.h).
      std::fill(b.goy, b.goy + 3 * KKL, acc(0));
      for_each_run(s, g, Lt, [&](int64_t c, int64_t len, int64_t off, int64_t cs) {
        deform_points_backward(b.xcl + c, b.gxh + c, s.C, b.pts, b.mv, KK, Lt, len,
                               b.gcols + off, b.cols + off, K, s.Cg, cs, gmk, goy, gox);
      });
      for (int64_t t = 0; t < KK; ++t) {
        T* go = goffset + ((n * s.G + g) * KK + t) * 2 * s.Q() + q0;
        for (int64_t l = 0; l < Lt; ++l) {
          go[l] = static_cast<T>(goy[t * Lt + l]);
          go[s.Q() + l] = static_cast<T>(gox[t * Lt + l]);
        }
        if (gmask != nullptr) {
          T* gm = gmask + ((n * s.G + g) * KK + t) * s.Q() + q0;
          for (int64_t l = 0; l < Lt; ++l) gm[l] = static_cast<T>(gmk[t * Lt + l]);
        }
      }
    }
    // gW += gy @ cols^T, per convolution group.
    for (int64_t grp = 0; grp < s.groups; ++grp) {
      gemm(Mat<const acc>{gt.data + grp * s.Cog * gt.rs, s.Cog, Lt, gt.rs, 1},
           Mat<const acc>{b.cols + grp * Lt * K, Lt, K, K, 1}, acc(1),
           Mat<acc>{b.gwk + grp * s.Cog * K, s.Cog, K, K, 1});
    }
  }
}

// Sample n's gradients from the partial sums of `parts` chunks (buffers of chunks k0 .. k0 + parts,
// added in chunk order): gW, then per channel gx (with the instance-norm backward while the plane is
// in cache, channels in parallel), and gb in double.
template <typename T>
void finish_sample(const T* gy, const T* x, T* gx, T* gw, T* gb, const Geometry& s,
                   const NormParams<acc_t<T>>& q, bool normalized, int64_t n,
                   const std::vector<ChunkBuffers<acc_t<T>>>& parts) {
  using acc = acc_t<T>;
  const int64_t K = s.K(), T_ = static_cast<int64_t>(parts.size());
  acc* gw0 = parts[0].gwk;
  for (int64_t k = 1; k < T_; ++k) add_to(gw0, parts[k].gwk, s.Co * K);
  T* gwp = gw + n * s.Co * K;  // back from the tap-major order
  for (int64_t o = 0; o < s.Co; ++o) {
    for (int64_t cc = 0; cc < s.Cg; ++cc) {
      for (int64_t t = 0; t < s.KK(); ++t) {
        gwp[o * K + cc * s.KK() + t] = static_cast<T>(gw0[o * K + t * s.Cg + cc]);
      }
    }
  }
  // The chunks' x-gradients are channels-last (P x C): the planes of kGatherChannels channels at
  // a time are gathered from them, added in chunk order.
  constexpr int64_t kGatherChannels = 8;
  std::vector<const acc*> gxs(T_);
  for (int64_t k = 0; k < T_; ++k) gxs[k] = parts[k].gxh;
  const int64_t blocks = (s.C + kGatherChannels - 1) / kGatherChannels;
  const int64_t grain = grain_for(kGatherChannels * s.P() * (T_ + 4));
  parallel_for(0, blocks, grain, [&](int64_t j0, int64_t j1) {
    std::vector<acc> xbuf = scratch<T>(kBlock), obuf = scratch<T>(kBlock);
    std::vector<acc> g(kGatherChannels * s.P());
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t c0 = j * kGatherChannels, cb = std::min(kGatherChannels, s.C - c0);
      gather_channels(gxs.data(), T_, s.P(), s.C, c0, cb, g.data());
      for (int64_t cc = 0; cc < cb; ++cc) {
        const int64_t qi = n * s.C + c0 + cc;
        plane_input_grad(g.data() + cc * s.P(), x + qi * s.P(), gx + qi * s.P(), s.P(), q.hi[qi],
                         q.lo[qi], q.rstd[qi], normalized, xbuf.data(), obuf.data());
      }
    }
  });
  std::vector<acc> gbuf = scratch<T>(kBlock);
  for (int64_t o = 0; o < s.Co; ++o) {
    const T* gp = gy + (n * s.Co + o) * s.Q();
    double total = 0.0;
    for (int64_t i = 0; i < s.Q(); i += kBlock) {
      const int64_t len = std::min(kBlock, s.Q() - i);
      total += sum(load(gp + i, len, gbuf.data()), len);
    }
    gb[n * s.Co + o] = static_cast<T>(total);
  }
}

// The backward scheme: whole samples per chunk, or each sample split into chunks of tiles, and the
// chunk count. Whole samples win when their makespan ceil(N / T) * tiles is no longer.
struct BackwardPlan {
  bool whole;
  int64_t chunks;
};

BackwardPlan backward_plan(const Geometry& s) {
  const int64_t tiles = tiles_of(s), work = tile_work(s);
  const int64_t split = chunks_for(tiles, work), whole = chunks_for(s.N, tiles * work);
  const int64_t split_span = s.N * ((tiles + split - 1) / split);
  const int64_t whole_span = ((s.N + whole - 1) / whole) * tiles;
  return whole_span <= split_span ? BackwardPlan{true, whole} : BackwardPlan{false, split};
}

template <typename T>
void backward(const T* gy, const T* x, const T* w, const T* offset, const T* mask, T* gx, T* gw,
              T* gb, T* goffset, T* gmask, const Geometry& s, const NormParams<acc_t<T>>& q,
              bool normalized, acc_t<T>* ws, uint8_t* pws, const BackwardPlan& plan) {
  using acc = acc_t<T>;
  const int64_t tiles = tiles_of(s), T_ = plan.chunks;
  auto zero = [&](const ChunkBuffers<acc>& b) {
    std::fill(b.gxh, b.gxh + s.C * (s.P() + 1), acc(0));
    std::fill(b.gwk, b.gwk + s.Co * s.K(), acc(0));
  };
  if (plan.whole) {
    parallel_for(0, T_, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const std::vector<ChunkBuffers<acc>> mine{chunk_buffers<T>(s, ws, pws, k)};
        for (int64_t n = k * s.N / T_; n < (k + 1) * s.N / T_; ++n) {
          zero(mine[0]);
          backward_tiles(gy, x, w, offset, mask, goffset, gmask, s, q, n, 0, tiles, mine[0]);
          finish_sample(gy, x, gx, gw, gb, s, q, normalized, n, mine);
        }
      }
    });
    return;
  }
  std::vector<ChunkBuffers<acc>> parts;
  for (int64_t k = 0; k < T_; ++k) parts.push_back(chunk_buffers<T>(s, ws, pws, k));
  for (int64_t n = 0; n < s.N; ++n) {
    parallel_for(0, T_, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        zero(parts[k]);
        backward_tiles(gy, x, w, offset, mask, goffset, gmask, s, q, n, k * tiles / T_,
                       (k + 1) * tiles / T_, parts[k]);
      }
    });
    finish_sample(gy, x, gx, gw, gb, s, q, normalized, n, parts);
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points.

using Five = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor contiguous_or_empty(const c10::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// The workspace of one call: acc elements and corner-table bytes, as two tensors (so that
// allocation profilers see them).
std::pair<at::Tensor, at::Tensor> allocate_workspace(const at::Tensor& x, int64_t acc_elems,
                                                     int64_t point_table_bytes) {
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {at::empty({acc_elems}, x.options().dtype(acc_type)),
          at::empty({point_table_bytes}, x.options().dtype(at::kByte))};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> deformable_conv_cpu(
    const at::Tensor& x_in, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const at::Tensor& offset_in, const c10::optional<at::Tensor>& mask_in, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t offset_groups,
    bool normalize, double eps, bool unbiased) {
  check_eps(eps);
  eps = kernel_eps(eps, unbiased, x_in);
  check_args(x_in, weight, bias, offset_in, mask_in, stride, padding, dilation, groups,
             offset_groups);
  const Layout l = layout_of(x_in);
  const at::Tensor x = x_in.contiguous();  // computed in NCHW (a copy for channels_last)
  const at::Tensor w = weight.contiguous(), offset = offset_in.contiguous();
  const at::Tensor b = contiguous_or_empty(bias), mask = contiguous_or_empty(mask_in);
  const Geometry s = geometry(x, w, stride, padding, dilation, groups, offset_groups, b);
  auto y = at::empty({s.N, s.Co, s.Ho, s.Wo}, x.options());
  at::Tensor mean, rstd;
  std::tie(mean, rstd) = empty_stats(x);
  if (s.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "deformable_conv", [&] {
      using acc = acc_t<scalar_t>;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      double* mp = mean.mutable_data_ptr<double>();
      double* rp = rstd.mutable_data_ptr<double>();
      if (normalize) {
        instance_stats(xp, Layout::NCHW, 0, s.N, s.C, s.P(), eps, mp, rp);
      } else {
        std::fill(mp, mp + s.N * s.C, 0.0);
        std::fill(rp, rp + s.N * s.C, 1.0);
      }
      const NormParams<acc> q(mp, rp, s.N * s.C);
      const int64_t T_ = chunks_for(s.N * tiles_of(s), tile_work(s));
      auto [ws, pws] = allocate_workspace(x, T_ * chunk_elems<scalar_t>(s, false),
                                          T_ * s.KK() * tile_len(s) * point_bytes<acc>());
      forward(xp, w.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b),
              offset.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(mask),
              y.mutable_data_ptr<scalar_t>(), s, q, ws.mutable_data_ptr<acc>(),
              pws.mutable_data_ptr<uint8_t>(), T_);
    });
  }
  return {y.contiguous(memory_format(l)), mean, rstd};
}

Five deformable_conv_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x_in,
                                  const at::Tensor& weight, const at::Tensor& offset_in,
                                  const c10::optional<at::Tensor>& mask_in, const at::Tensor& mean,
                                  const at::Tensor& rstd, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                  int64_t offset_groups, bool normalize) {
  check_args(x_in, weight, c10::nullopt, offset_in, mask_in, stride, padding, dilation, groups,
             offset_groups);
  check_stats(x_in, mean, rstd);
  const Layout l = layout_of(x_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor w = weight.contiguous(), offset = offset_in.contiguous();
  const at::Tensor mask = contiguous_or_empty(mask_in);
  const Geometry s = geometry(x, w, stride, padding, dilation, groups, offset_groups);
  check_grad_y(grad_y, x, s.N, s.Co, s.Ho, s.Wo);
  const at::Tensor gy = grad_y.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  auto gx = at::empty_like(x, x.options().memory_format(at::MemoryFormat::Contiguous));
  // Per-sample weight gradients (N, ...), also for a batch-1 weight: autograd sums those.
  auto gw = at::empty({s.N, w.size(1), w.size(2), w.size(3), w.size(4)}, x.options());
  auto gb = at::empty({s.N, s.Co}, x.options());
  auto goffset = at::empty(offset.sizes(), x.options());
  auto gmask = mask.defined() ? at::empty(mask.sizes(), x.options()) : at::empty({0}, x.options());
  if (s.N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "deformable_conv_backward", [&] {
          using acc = acc_t<scalar_t>;
          const NormParams<acc> q(m.const_data_ptr<double>(), r.const_data_ptr<double>(), s.N * s.C);
          const BackwardPlan plan = backward_plan(s);
          const int64_t T_ = plan.chunks;
          auto [ws, pws] = allocate_workspace(x, T_ * chunk_elems<scalar_t>(s, true),
                                              T_ * s.KK() * tile_len(s) * point_bytes<acc>());
          backward(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                   w.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                   ptr_or_null<scalar_t>(mask), gx.mutable_data_ptr<scalar_t>(),
                   gw.mutable_data_ptr<scalar_t>(), gb.mutable_data_ptr<scalar_t>(),
                   goffset.mutable_data_ptr<scalar_t>(),
                   mask.defined() ? gmask.mutable_data_ptr<scalar_t>() : nullptr, s, q, normalize,
                   ws.mutable_data_ptr<acc>(), pws.mutable_data_ptr<uint8_t>(), plan);
        });
  }
  return {gx.contiguous(memory_format(l)), gw, gb, goffset, gmask};
}

}  // namespace

TORCH_LIBRARY_IMPL(din_ops, CPU, m) {
  m.impl("deformable_conv", &deformable_conv_cpu);
  m.impl("deformable_conv_backward", &deformable_conv_backward_cpu);
}

}  // namespace din_ops::cpu
