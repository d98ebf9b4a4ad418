// Per-sample deformable convolution (DCNv1, and DCNv2 with a modulation mask) on CUDA, with the
// instance normalization folded into the bilinear sampler (deformable DIN) or not (mean 0, rstd 1).
// Same operator, layouts and arithmetic as the CPU kernel (csrc/cpu/deformable_conv.cpp):
//
//   col[c, t, q] = m[g, t, q] * S(xh[c], p(t, q))      S: bilinear sample of the normalized plane
//   y[n]         = W[n] @ col + b[n]                   (per convolution group)
//   gcol         = W[n]^T @ gy,   gW[n] = gy @ col^T,   gb = sum_q gy
//   gm[g, t, q]  = sum_{c in g} gcol * S(xh[c], p),     gp = m * sum_{c in g} gcol * dS/dp
//   gxh[c]      += gcol * m * (corner weights) on the four corners of p
//   gx           = rstd * (gxh - mean(gxh) - xh * mean(gxh * xh))   (gxh itself unnormalized)
//
// The sampler normalizes each of the four corners, ((x - hi) - lo) * rstd with the mean split as
// hi + lo (din_ops/math.h), and interpolates the normalized values with the corner weights of
// din_ops/bilinear.h (the header the CPU kernel uses): corners outside the plane have weight 0, and a
// point on or beyond row/column -1 or H/W samples 0 with zero derivatives (DCN's convention). So a
// sample is sum_k w_k * xh_k over the corners inside the plane, not (S(x) - mean) * rstd. The mask
// is folded into the corner weights for the columns, as on the CPU.
//
// Work. The output positions are cut into steps: B whole samples at a time when their columns fit
// the column budget (DeformGeometry::column_budget elements, 2^23 by default; the entry lists of the
// backward, 4 per point and offset group, count against it too), else one sample and L positions
// at a time. A step runs:
//   forward : columns (one thread per sample point and run of up to 8 channels of its offset group,
//             corners computed once per point), then a tiled GEMM per (sample, convolution group)
//             that adds the bias and writes y in x's dtype;
//   backward: the columns again, gcol = W^T gy and gW (+)= gy col^T (tiled GEMMs into an
//             accumulation-type buffer, steps of one sample added in step order), the offset and
//             mask gradients (one thread per sample point summing over its group's channels), and
//             the x-gradient by a gather (below).
// Then gW is converted, gb comes from the plane-sum kernel (instance_norm.cu), and gx from the
// instance-norm backward kernel applied to gxh (or gxh converted when not normalizing).
//
// Determinism. Every result is bitwise repeatable: no floating-point atomics, every sum in a fixed
// order. The x-gradient is a scatter (output points sample arbitrary input pixels), turned into a
// gather per step and offset group: (1) count the corner entries (point, corner) with nonzero
// weight per input pixel (integer atomics: exact, order-free), (2) exclusive scan of the counts per
// plane, (3) write the entries into their pixel's segment (slot order depends on the hardware
// schedule), (4) sort each segment by its unique key (point, corner) with a heapsort (O(n log n)
// also when every point falls on one pixel), which makes the list order independent of the
// schedule, (5) one thread per (channel, pixel) sums coefficient * gcol over its pixel's sorted
// list and adds the sum to gxh, steps in order. Nothing depends on
// torch.are_deterministic_algorithms_enabled(): the deterministic path is the only one. Its cost is
// a few passes over the step's points and pixels; a pixel sampled by very many points (offsets
// that all point at one place) makes its sorting thread the step's critical path.
//
// Performance has not been measured on a GPU yet. The GEMMs are plain SIMT tiles in the
// accumulation type (no tensor cores, also for half/bfloat16), chosen for exact float32
// accumulation and for the host emulation tests (csrc/tests/test_cuda_emulated.cpp).
//
// Accumulation: float for float/half/bfloat16, double for double; statistics, gb and the
// instance-norm backward sums in double (instance_norm.cu). Indices are 64-bit except the entry
// keys and per-pixel counts of one step (int32; plan() keeps kh * kw * L * 4 below 2^30).
#include <algorithm>

#include "common.cuh"
#include "din_ops/bilinear.h"

namespace din_ops::gpu {
namespace {

namespace bl = din_ops::bilinear;

constexpr int kThreads = 128;          // elementwise / per-point kernels
constexpr int kRunChannels = 8;        // channels per thread in the column kernel
constexpr int kScanThreads = 128;      // per-plane exclusive scan
constexpr int64_t kDefaultBudget = int64_t(1) << 23;  // column elements per step
constexpr int kTile = 32, kTileK = 16, kGemmSide = 8;  // GEMM: 32 x 32 outputs, 8 x 8 threads

// One step: samples [n0, n0 + Bn), output positions [q0, q0 + Lt); column rows have stride L.
struct Step {
  int64_t n0, Bn, q0, Lt, L;
};

struct Plan {
  int64_t B, L;  // samples per step (L == Q) or positions per step (B == 1)
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t taps(const DeformGeometry& g) { return g.kh * g.kw; }
int64_t out_positions(const DeformGeometry& g) { return g.Ho * g.Wo; }

Plan plan(const DeformGeometry& g) {
  const int64_t budget = g.column_budget > 0 ? g.column_budget : kDefaultBudget;
  const int64_t rows = g.C * taps(g), Q = out_positions(g);
  // The column tile, and the backward's entry lists (4 per point and offset group) within the
  // budget too; keys (t * L + l) * 4 + k and per-plane offsets below 2^30 (int32).
  const int64_t per_position = std::max(rows, 4 * g.offset_groups * taps(g));
  int64_t L = std::max<int64_t>(1, std::min(Q, budget / per_position));
  L = std::min<int64_t>(L, (int64_t(1) << 28) / taps(g));
  int64_t B = 1;
  if (L == Q) {
    B = std::max<int64_t>(1, std::min(g.N, budget / (per_position * Q)));
    B = std::max<int64_t>(1, std::min<int64_t>(B, 65535 / g.groups));  // GEMM grid z = B * groups
  }
  return {B, L};
}

// Byte offsets of the workspace regions (each 256-byte aligned).
struct Layout {
  int64_t coeffs, cols, gcols, gw, gxh, keys, coefs, counts, starts, total;
};

template <typename acc>
Layout layout(const DeformGeometry& g, bool backward) {
  const Plan p = plan(g);
  const int64_t KK = taps(g), P = g.H * g.W, Kg = (g.C / g.groups) * KK;
  const int64_t col_elems = p.B * g.C * KK * p.L;
  const int64_t entries = p.B * g.offset_groups * KK * p.L * 4;
  const int64_t pixels = p.B * g.offset_groups * P;
  Layout l{};
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t start = at;
    at += ceil_div(bytes, 256) * 256;
    return start;
  };
  l.coeffs = take(3 * g.N * g.C * int64_t(sizeof(acc)));
  l.cols = take(col_elems * int64_t(sizeof(acc)));
  if (backward) {
    l.gcols = take(col_elems * int64_t(sizeof(acc)));
    l.gw = take(g.N * g.Co * Kg * int64_t(sizeof(acc)));
    l.gxh = take(g.N * g.C * P * int64_t(sizeof(acc)));
    l.keys = take(entries * int64_t(sizeof(int)));
    l.coefs = take(entries * int64_t(sizeof(acc)));
    l.counts = take(pixels * int64_t(sizeof(int)));
    l.starts = take(pixels * int64_t(sizeof(int)));
  }
  l.total = at;
  return l;
}

unsigned stride_blocks(int64_t total) {
  const int64_t blocks = ceil_div(total, kThreads);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65536 * 8)));
}

bool geometry_ok(const DeformGeometry& g) {
  return g.N >= 0 && g.C > 0 && g.H > 0 && g.W > 0 && g.Co > 0 && g.groups > 0 &&
         g.C % g.groups == 0 && g.Co % g.groups == 0 && g.offset_groups > 0 &&
         g.C % g.offset_groups == 0 && g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 &&
         g.dh > 0 && g.dw > 0 && g.Ho > 0 && g.Wo > 0;
}

// ---------------------------------------------------------------------------------------------
// Sample points.

// The corners of tap t of output position q (flattened) of sample n and offset group go, with the
// mask value in *m (1 without a mask).
template <typename T>
__device__ __forceinline__ bl::Corners<acc_t<T>> point_corners(
    const DeformGeometry& g, const T* __restrict__ offset, const T* __restrict__ mask, int64_t n,
    int64_t go, int64_t t, int64_t q, acc_t<T>* m) {
  using acc = acc_t<T>;
  const int64_t Q = g.Ho * g.Wo, KK = g.kh * g.kw, oh = q / g.Wo, ow = q % g.Wo;
  const int64_t i = t / g.kw, j = t % g.kw, pt = (n * g.offset_groups + go) * KK + t;
  const acc dy = to_acc(offset[pt * 2 * Q + q]), dx = to_acc(offset[pt * 2 * Q + Q + q]);
  *m = mask != nullptr ? to_acc(mask[pt * Q + q]) : acc(1);
  const acc y = bl::position<acc>(oh, g.sh, g.pt, i, g.dh, dy);
  const acc x = bl::position<acc>(ow, g.sw, g.pl, j, g.dw, dx);
  return bl::corners<acc>(y, x, g.H, g.W, -1);  // outside corners: index -1, never loaded
}

// The four corner values of plane nc, normalized on load; a corner outside the plane is 0 without a
// load (so an inf or NaN pixel elsewhere in the plane never reaches it through a zero weight).
template <typename T>
__device__ __forceinline__ void corner_values(const T* __restrict__ x,
                                              const acc_t<T>* __restrict__ q, int64_t count,
                                              int64_t nc, int64_t P, const bl::Corners<acc_t<T>>& p,
                                              acc_t<T> (&v)[4]) {
  const T* xp = x + nc * P;
  const acc_t<T> hi = q[nc], lo = q[count + nc], r = q[2 * count + nc];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[k] = p.index[k] >= 0 ? math::normalize(to_acc(xp[p.index[k]]), hi, lo, r) : acc_t<T>(0);
  }
}

// cols[b][(c * KK + t) * L + l] for the points of the step; one thread per point and run of up
// to kRunChannels channels of its offset group.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    columns_kernel(DeformGeometry g, Step s, const T* __restrict__ x, const T* __restrict__ offset,
                   const T* __restrict__ mask, const acc_t<T>* __restrict__ q,
                   acc_t<T>* __restrict__ cols) {
  using acc = acc_t<T>;
  const int64_t KK = g.kh * g.kw, Cgo = g.C / g.offset_groups, P = g.H * g.W;
  const int64_t runs = (Cgo + kRunChannels - 1) / kRunChannels;
  const int64_t total = s.Bn * g.offset_groups * runs * KK * s.Lt, count = g.N * g.C;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = idx % s.Lt;
    int64_t r = idx / s.Lt;
    const int64_t t = r % KK;
    r /= KK;
    const int64_t run = r % runs;
    r /= runs;
    const int64_t go = r % g.offset_groups, b = r / g.offset_groups, n = s.n0 + b;
    acc m;
    bl::Corners<acc> p = point_corners(g, offset, mask, n, go, t, s.q0 + l, &m);
#pragma unroll
    for (int k = 0; k < 4; ++k) p.weight[k] *= m;  // the mask folded into the weights
    const int64_t c0 = go * Cgo + run * kRunChannels;
    const int64_t c1 = c0 + kRunChannels < (go + 1) * Cgo ? c0 + kRunChannels : (go + 1) * Cgo;
    acc* out = cols + b * g.C * KK * s.L + t * s.L + l;
    for (int64_t c = c0; c < c1; ++c) {
      acc v[4];
      corner_values(x, q, count, n * g.C + c, P, p, v);
      out[c * KK * s.L] = bl::combine(p.weight, v);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Batched GEMM: C[z] (M x Nc) = A[z] (M x K) @ B[z] (K x Nc) (+ C[z] when accumulate) (+ bias per
// row), z = b * groups + grp. Each operand is addressed as base + b * bs + grp * gs + row * rs +
// col * cs. 8 x 8 threads compute a 32 x 32 tile, 4 x 4 outputs each; the sum over K runs in a
// fixed order (bitwise repeatable).
struct Operand {
  int64_t rs, cs, bs, gs;
};

template <typename TA, typename TB, typename TC, typename acc>
__global__ void __launch_bounds__(kGemmSide * kGemmSide)
    gemm_kernel(int64_t M, int64_t Nc, int64_t K, int64_t groups, const TA* __restrict__ A,
                Operand a, const TB* __restrict__ B, Operand bo, TC* __restrict__ C, Operand c,
                const TC* __restrict__ bias, int64_t bias_bs, int64_t bias_gs, bool accumulate) {
  __shared__ acc As[kTileK][kTile + 1];
  __shared__ acc Bs[kTileK][kTile + 1];
  const int64_t z = blockIdx.z, b = z / groups, grp = z % groups;
  const TA* Ap = A + b * a.bs + grp * a.gs;
  const TB* Bp = B + b * bo.bs + grp * bo.gs;
  const int64_t i0 = int64_t(blockIdx.y) * kTile, j0 = int64_t(blockIdx.x) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kGemmSide + tx;
  acc sum[4][4];
#pragma unroll
  for (int u = 0; u < 4; ++u) {
#pragma unroll
    for (int v = 0; v < 4; ++v) sum[u][v] = acc(0);
  }
  // Consecutive threads load along the operand's unit-stride dimension (coalesced).
  const bool a_along_rows = a.rs == 1, b_along_k = bo.rs == 1 && bo.cs != 1;
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    for (int e = tid; e < kTile * kTileK; e += kGemmSide * kGemmSide) {
      const int r = a_along_rows ? e % kTile : e / kTileK;
      const int kk = a_along_rows ? e / kTile : e % kTileK;
      const int64_t gi = i0 + r, gk = k0 + kk;
      As[kk][r] = gi < M && gk < K ? to_acc(Ap[gi * a.rs + gk * a.cs]) : acc(0);
      const int kb = b_along_k ? e % kTileK : e / kTile;
      const int cc = b_along_k ? e / kTileK : e % kTile;
      const int64_t gkb = k0 + kb, gj = j0 + cc;
      Bs[kb][cc] = gkb < K && gj < Nc ? to_acc(Bp[gkb * bo.rs + gj * bo.cs]) : acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      acc av[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) av[u] = As[kk][ty + kGemmSide * u];
#pragma unroll
      for (int v = 0; v < 4; ++v) bv[v] = Bs[kk][tx + kGemmSide * v];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int v = 0; v < 4; ++v) sum[u][v] += av[u] * bv[v];
      }
    }
    __syncthreads();
  }
  TC* Cp = C + b * c.bs + grp * c.gs;
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int64_t i = i0 + ty + kGemmSide * u;
    if (i >= M) continue;
    const acc add = bias != nullptr ? to_acc(bias[b * bias_bs + grp * bias_gs + i]) : acc(0);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int64_t j = j0 + tx + kGemmSide * v;
      if (j >= Nc) continue;
      TC* out = Cp + i * c.rs + j * c.cs;
      acc r = sum[u][v] + add;
      if (accumulate) r = to_acc(*out) + r;
      *out = from_acc<TC>(r);
    }
  }
}

template <typename TA, typename TB, typename TC, typename acc>
cudaError_t gemm(int64_t M, int64_t Nc, int64_t K, int64_t batches, int64_t groups, const TA* A,
                 Operand a, const TB* B, Operand b, TC* C, Operand c, const TC* bias,
                 int64_t bias_bs, int64_t bias_gs, bool accumulate, cudaStream_t stream) {
  const int64_t gx = ceil_div(Nc, kTile), gy = ceil_div(M, kTile), gz = batches * groups;
  if (gx > 0x7fffffffLL || gy > 65535 || gz > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz));
  const dim3 block(kGemmSide, kGemmSide);
  gemm_kernel<TA, TB, TC, acc><<<grid, block, 0, stream>>>(M, Nc, K, groups, A, a, B, b, C, c,
                                                           bias, bias_bs, bias_gs, accumulate);
  return launched();
}

// ---------------------------------------------------------------------------------------------
// Backward kernels.

// Offset and mask gradients of the step's points: one thread per (sample, offset group, tap,
// position), summing over the group's channels in order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    point_grad_kernel(DeformGeometry g, Step s, const T* __restrict__ x,
                      const T* __restrict__ offset, const T* __restrict__ mask,
                      const acc_t<T>* __restrict__ q, const acc_t<T>* __restrict__ gcols,
                      T* __restrict__ goffset, T* __restrict__ gmask) {
  using acc = acc_t<T>;
  const int64_t KK = g.kh * g.kw, Cgo = g.C / g.offset_groups, P = g.H * g.W;
  const int64_t Q = g.Ho * g.Wo, count = g.N * g.C;
  const int64_t total = s.Bn * g.offset_groups * KK * s.Lt;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = idx % s.Lt;
    int64_t r = idx / s.Lt;
    const int64_t t = r % KK;
    r /= KK;
    const int64_t go = r % g.offset_groups, b = r / g.offset_groups, n = s.n0 + b;
    const int64_t qq = s.q0 + l;
    acc m;
    const bl::Corners<acc> p = point_corners(g, offset, mask, n, go, t, qq, &m);
    const acc* gc = gcols + b * g.C * KK * s.L + t * s.L + l;
    acc sv = 0, sy = 0, sx = 0;
    for (int64_t c = go * Cgo; c < (go + 1) * Cgo; ++c) {
      acc v[4];
      corner_values(x, q, count, n * g.C + c, P, p, v);
      const acc gcv = gc[c * KK * s.L];
      sv += gcv * bl::combine(p.weight, v);
      sy += gcv * bl::combine(p.dy, v);
      sx += gcv * bl::combine(p.dx, v);
    }
    const int64_t pt = (n * g.offset_groups + go) * KK + t;
    goffset[pt * 2 * Q + qq] = from_acc<T>(m * sy);
    goffset[pt * 2 * Q + Q + qq] = from_acc<T>(m * sx);
    if (gmask != nullptr) gmask[pt * Q + qq] = from_acc<T>(sv);
  }
}

// The corner entries of the step's points, (point, corner) with nonzero weight, keyed
// (t * L + l) * 4 + k. kFill = false: count them per pixel of their (sample, offset group) plane;
// kFill = true: write key and coefficient m * weight into the pixel's segment.
template <typename T, bool kFill>
__global__ void __launch_bounds__(kThreads)
    entries_kernel(DeformGeometry g, Step s, const T* __restrict__ offset,
                   const T* __restrict__ mask, int* __restrict__ counts,
                   const int* __restrict__ starts, int* __restrict__ keys,
                   acc_t<T>* __restrict__ coefs) {
  using acc = acc_t<T>;
  const int64_t KK = g.kh * g.kw, P = g.H * g.W, cap = KK * s.L * 4;
  const int64_t total = s.Bn * g.offset_groups * KK * s.Lt;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = idx % s.Lt;
    int64_t r = idx / s.Lt;
    const int64_t t = r % KK;
    r /= KK;
    const int64_t go = r % g.offset_groups, b = r / g.offset_groups, n = s.n0 + b;
    const int64_t plane = b * g.offset_groups + go;
    acc m;
    const bl::Corners<acc> p = point_corners(g, offset, mask, n, go, t, s.q0 + l, &m);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (p.weight[k] == acc(0)) continue;  // outside the plane (or an exactly zero weight)
      const int64_t pix = plane * P + p.index[k];
      const int slot = atomicAdd(counts + pix, 1);
      if constexpr (kFill) {
        const int64_t e = plane * cap + starts[pix] + slot;
        keys[e] = static_cast<int>((t * s.L + l) * 4 + k);
        coefs[e] = m * p.weight[k];
      }
    }
  }
}

// Exclusive scan of the counts of one (sample, offset group) plane of P pixels into starts, and
// the counts reset to 0 (they are the slot cursors of the fill). One block per plane: each thread
// scans a contiguous segment, thread 0 scans the segment totals.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(int* __restrict__ counts, int* __restrict__ starts, int64_t P) {
  __shared__ int64_t part[kScanThreads];
  const int64_t plane = blockIdx.x, tid = threadIdx.x, T_ = blockDim.x;
  int* cp = counts + plane * P;
  int* sp = starts + plane * P;
  const int64_t lo = tid * P / T_, hi = (tid + 1) * P / T_;
  int64_t sum = 0;
  for (int64_t i = lo; i < hi; ++i) sum += cp[i];
  part[tid] = sum;
  __syncthreads();
  if (tid == 0) {
    int64_t run = 0;
    for (int64_t i = 0; i < T_; ++i) {
      const int64_t v = part[i];
      part[i] = run;
      run += v;
    }
  }
  __syncthreads();
  int64_t run = part[tid];
  for (int64_t i = lo; i < hi; ++i) {
    const int v = cp[i];
    sp[i] = static_cast<int>(run);
    run += v;
    cp[i] = 0;
  }
}

// Heapsort of n (key, coefficient) pairs by key (keys are unique).
template <typename acc>
__device__ __forceinline__ void sift_down(int* key, acc* coef, int64_t root, int64_t n) {
  while (true) {
    int64_t child = 2 * root + 1;
    if (child >= n) return;
    if (child + 1 < n && key[child + 1] > key[child]) ++child;
    if (key[root] >= key[child]) return;
    const int tk = key[root];
    key[root] = key[child];
    key[child] = tk;
    const acc tc = coef[root];
    coef[root] = coef[child];
    coef[child] = tc;
    root = child;
  }
}

template <typename acc>
__global__ void __launch_bounds__(kThreads)
    sort_kernel(int64_t planes, int64_t P, int64_t cap, const int* __restrict__ counts,
                const int* __restrict__ starts, int* __restrict__ keys, acc* __restrict__ coefs) {
  const int64_t total = planes * P;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = counts[idx];
    if (n < 2) continue;
    const int64_t base = (idx / P) * cap + starts[idx];
    int* k = keys + base;
    acc* c = coefs + base;
    for (int64_t i = n / 2; i-- > 0;) sift_down(k, c, i, n);
    for (int64_t end = n - 1; end > 0; --end) {
      const int tk = k[0];
      k[0] = k[end];
      k[end] = tk;
      const acc tc = c[0];
      c[0] = c[end];
      c[end] = tc;
      sift_down(k, c, 0, end);
    }
  }
}

// gxh[n, c, pix] += sum over the pixel's sorted entries of coefficient * gcol: one thread per
// (sample, channel, pixel), the pixels of a channel on consecutive threads.
template <typename acc>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(DeformGeometry g, Step s, const int* __restrict__ counts,
                  const int* __restrict__ starts, const int* __restrict__ keys,
                  const acc* __restrict__ coefs, const acc* __restrict__ gcols,
                  acc* __restrict__ gxh) {
  const int64_t KK = g.kh * g.kw, P = g.H * g.W, Cgo = g.C / g.offset_groups;
  const int64_t cap = KK * s.L * 4, total = s.Bn * g.C * P;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pix = idx % P, bc = idx / P, c = bc % g.C, b = bc / g.C;
    const int64_t plane = b * g.offset_groups + c / Cgo, list = plane * P + pix;
    const int64_t n = counts[list];
    if (n == 0) continue;
    const int64_t base = plane * cap + starts[list];
    const acc* gc = gcols + (b * g.C + c) * KK * s.L;
    acc sum = 0;
    for (int64_t e = 0; e < n; ++e) sum += coefs[base + e] * gc[keys[base + e] >> 2];
    acc* out = gxh + ((s.n0 + b) * g.C + c) * P + pix;
    *out += sum;
  }
}

template <typename U>
__global__ void __launch_bounds__(kThreads) fill_kernel(U* __restrict__ p, int64_t n, U v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    p[i] = v;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    convert_kernel(const acc_t<T>* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = from_acc<T>(src[i]);
  }
}

template <typename F>
cudaError_t for_each_step(const DeformGeometry& g, F&& f) {
  const Plan p = plan(g);
  const int64_t Q = out_positions(g);
  for (int64_t n0 = 0; n0 < g.N; n0 += p.B) {
    const int64_t Bn = std::min(p.B, g.N - n0);
    for (int64_t q0 = 0; q0 < Q; q0 += p.L) {
      const Step s{n0, Bn, q0, std::min(p.L, Q - q0), p.L};
      const cudaError_t err = f(s);
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

}  // namespace

int64_t deformable_workspace_bytes(DType dtype, const DeformGeometry& g, bool backward) {
  if (!geometry_ok(g) || g.N == 0) return 0;
  return dtype == DType::Double ? layout<double>(g, backward).total
                                : layout<float>(g, backward).total;
}

cudaError_t deformable_conv_forward(DType dtype, const DeformGeometry& g, const void* x,
                                    const void* weight, const void* bias, const void* offset,
                                    const void* mask, const double* mean, const double* rstd,
                                    void* y, void* workspace, cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  if (!geometry_ok(g)) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc = acc_t<T>;
    const Layout lay = layout<acc>(g, false);
    char* ws = static_cast<char*>(workspace);
    acc* q = reinterpret_cast<acc*>(ws + lay.coeffs);
    acc* cols = reinterpret_cast<acc*>(ws + lay.cols);
    cudaError_t err = norm_coeffs(dtype, mean, rstd, q, g.N * g.C, stream);
    if (err != cudaSuccess) return err;
    const T *xp = static_cast<const T*>(x), *wp = static_cast<const T*>(weight);
    const T *bp = static_cast<const T*>(bias), *op = static_cast<const T*>(offset);
    const T* mp = static_cast<const T*>(mask);
    T* yp = static_cast<T*>(y);
    const int64_t KK = taps(g), Q = out_positions(g), Kg = (g.C / g.groups) * KK;
    const int64_t Cog = g.Co / g.groups, Cgo = g.C / g.offset_groups;
    return for_each_step(g, [&](const Step& s) {
      const int64_t runs = ceil_div(Cgo, kRunChannels);
      columns_kernel<T><<<stride_blocks(s.Bn * g.offset_groups * runs * KK * s.Lt), kThreads, 0,
                          stream>>>(g, s, xp, op, mp, q, cols);
      cudaError_t e = launched();
      if (e != cudaSuccess) return e;
      // y[n][grp] (Cog x Lt) = W[n][grp] (Cog x Kg) @ cols[b][grp] (Kg x Lt) + b[n][grp].
      return gemm<T, acc, T, acc>(
          Cog, s.Lt, Kg, s.Bn, g.groups, wp + s.n0 * g.Co * Kg, Operand{Kg, 1, g.Co * Kg, Cog * Kg},
          cols, Operand{s.L, 1, g.C * KK * s.L, Kg * s.L}, yp + s.n0 * g.Co * Q + s.q0,
          Operand{Q, 1, g.Co * Q, Cog * Q}, bp != nullptr ? bp + s.n0 * g.Co : nullptr, g.Co, Cog,
          false, stream);
    });
  });
}

cudaError_t deformable_conv_backward(DType dtype, const DeformGeometry& g, const void* grad_y,
                                     const void* x, const void* weight, const void* offset,
                                     const void* mask, const double* mean, const double* rstd,
                                     bool normalize, void* gx, void* gw, void* gb, void* goffset,
                                     void* gmask, void* workspace, cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  if (!geometry_ok(g)) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc = acc_t<T>;
    const Layout lay = layout<acc>(g, true);
    char* ws = static_cast<char*>(workspace);
    acc* q = reinterpret_cast<acc*>(ws + lay.coeffs);
    acc* cols = reinterpret_cast<acc*>(ws + lay.cols);
    acc* gcols = reinterpret_cast<acc*>(ws + lay.gcols);
    acc* gw_acc = reinterpret_cast<acc*>(ws + lay.gw);
    acc* gxh = reinterpret_cast<acc*>(ws + lay.gxh);
    int* keys = reinterpret_cast<int*>(ws + lay.keys);
    acc* coefs = reinterpret_cast<acc*>(ws + lay.coefs);
    int* counts = reinterpret_cast<int*>(ws + lay.counts);
    int* starts = reinterpret_cast<int*>(ws + lay.starts);
    const T *gyp = static_cast<const T*>(grad_y), *xp = static_cast<const T*>(x);
    const T *wp = static_cast<const T*>(weight), *op = static_cast<const T*>(offset);
    const T* mp = static_cast<const T*>(mask);
    const int64_t KK = taps(g), Q = out_positions(g), P = g.H * g.W;
    const int64_t Kg = (g.C / g.groups) * KK, Cog = g.Co / g.groups;
    const int64_t Cgo = g.C / g.offset_groups, nx = g.N * g.C * P;

    cudaError_t err = norm_coeffs(dtype, mean, rstd, q, g.N * g.C, stream);
    if (err != cudaSuccess) return err;
    fill_kernel<acc><<<stride_blocks(nx), kThreads, 0, stream>>>(gxh, nx, acc(0));
    if ((err = launched()) != cudaSuccess) return err;
    err = for_each_step(g, [&](const Step& s) {
      const int64_t points = s.Bn * g.offset_groups * KK * s.Lt;
      const int64_t planes = s.Bn * g.offset_groups;
      const int64_t runs = ceil_div(Cgo, kRunChannels);
      const Operand col_op{s.L, 1, g.C * KK * s.L, Kg * s.L};     // cols / gcols, (Kg x Lt)
      const Operand gy_op{Q, 1, g.Co * Q, Cog * Q};                // gy, (Cog x Lt)
      const T* gys = gyp + s.n0 * g.Co * Q + s.q0;
      const T* ws_ = wp + s.n0 * g.Co * Kg;
      columns_kernel<T><<<stride_blocks(s.Bn * g.offset_groups * runs * KK * s.Lt), kThreads, 0,
                          stream>>>(g, s, xp, op, mp, q, cols);
      cudaError_t e = launched();
      if (e != cudaSuccess) return e;
      // gcols[b][grp] (Kg x Lt) = W[n][grp]^T (Kg x Cog) @ gy[n][grp] (Cog x Lt).
      e = gemm<T, T, acc, acc>(Kg, s.Lt, Cog, s.Bn, g.groups, ws_,
                               Operand{1, Kg, g.Co * Kg, Cog * Kg}, gys, gy_op, gcols, col_op,
                               static_cast<const acc*>(nullptr), 0, 0, false, stream);
      if (e != cudaSuccess) return e;
      // gW[n][grp] (Cog x Kg) (+)= gy[n][grp] (Cog x Lt) @ cols[b][grp]^T (Lt x Kg).
      e = gemm<T, acc, acc, acc>(Cog, Kg, s.Lt, s.Bn, g.groups, gys, gy_op, cols,
                                 Operand{1, s.L, g.C * KK * s.L, Kg * s.L},
                                 gw_acc + s.n0 * g.Co * Kg, Operand{Kg, 1, g.Co * Kg, Cog * Kg},
                                 static_cast<const acc*>(nullptr), 0, 0, s.q0 > 0, stream);
      if (e != cudaSuccess) return e;
      point_grad_kernel<T><<<stride_blocks(points), kThreads, 0, stream>>>(
          g, s, xp, op, mp, q, gcols, static_cast<T*>(goffset), static_cast<T*>(gmask));
      if ((e = launched()) != cudaSuccess) return e;
      // The x-gradient as a gather over sorted per-pixel entry lists (see the file comment).
      fill_kernel<int><<<stride_blocks(planes * P), kThreads, 0, stream>>>(counts, planes * P, 0);
      if ((e = launched()) != cudaSuccess) return e;
      entries_kernel<T, false><<<stride_blocks(points), kThreads, 0, stream>>>(
          g, s, op, mp, counts, starts, keys, coefs);
      if ((e = launched()) != cudaSuccess) return e;
      scan_kernel<<<dim3(static_cast<unsigned>(planes)), kScanThreads, 0, stream>>>(counts, starts,
                                                                                  P);
      if ((e = launched()) != cudaSuccess) return e;
      entries_kernel<T, true><<<stride_blocks(points), kThreads, 0, stream>>>(
          g, s, op, mp, counts, starts, keys, coefs);
      if ((e = launched()) != cudaSuccess) return e;
      sort_kernel<acc><<<stride_blocks(planes * P), kThreads, 0, stream>>>(
          planes, P, KK * s.L * 4, counts, starts, keys, coefs);
      if ((e = launched()) != cudaSuccess) return e;
      gather_kernel<acc><<<stride_blocks(s.Bn * g.C * P), kThreads, 0, stream>>>(
          g, s, counts, starts, keys, coefs, gcols, gxh);
      return launched();
    });
    if (err != cudaSuccess) return err;
    const int64_t nw = g.N * g.Co * Kg;
    convert_kernel<T><<<stride_blocks(nw), kThreads, 0, stream>>>(gw_acc, static_cast<T*>(gw), nw);
    if ((err = launched()) != cudaSuccess) return err;
    err = plane_sums(dtype, grad_y, gb, g.N * g.Co, Q, stream);
    if (err != cudaSuccess) return err;
    if (normalize) {
      return instance_norm_backward(dtype, gxh, true, x, mean, rstd, gx, g.N * g.C, P, stream);
    }
    convert_kernel<T><<<stride_blocks(nx), kThreads, 0, stream>>>(gxh, static_cast<T*>(gx), nx);
    return launched();
  });
}

}  // namespace din_ops::gpu
