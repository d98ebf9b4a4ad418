// Channels-last (NHWC) building blocks of the instance-norm family of kernels (instance_norm.cu,
// spatially_adaptive_instance_norm.cu): x is (N, P, C) in memory, and the per-(n, c) reductions
// run over P pixels at stride C.
//
// Work decomposition: the C channels are read in slots of VEC consecutive channels (one 16-byte
// access, or one channel when C or a pointer is not aligned for that). A block of TC x TR threads
// covers TC consecutive slots (threadIdx.x) of one sample and one chunk of pixels, its TR rows
// (threadIdx.y) striding over the chunk's pixels. A warp therefore reads TC * VEC consecutive
// channels of 32 / TC consecutive pixels: contiguous memory when TC * VEC covers C, and 32 full
// slots (512 bytes) otherwise. Splitting P into chunks gives enough blocks to fill the GPU when
// N * C is small; the per-chunk partial sums go to a float64 workspace and are added in chunk
// order by a finalize kernel, so results are bitwise repeatable.
//
// Every reduction keeps a value per channel in double (deviations from a shift, as the plane
// kernels, see plane.cuh); a kernel is a partial pass, a finalize pass over N * C, and a map pass
// (nhwc_partial_kernel, nhwc_finalize_kernel, nhwc_map_kernel) parametrized by an Op.
#pragma once

#include <algorithm>

#include "common.cuh"

namespace din_ops::gpu {

constexpr int kNhwcThreads = 256;            // threads per block (TC * TR)
constexpr int64_t kNhwcTargetBlocks = 1024;  // pixels are chunked until about this many blocks
constexpr int64_t kNhwcMinChunk = 64;        // but a chunk has at least this many pixels
constexpr int kNhwcMaxSums = 3;              // sums per channel the workspace has room for

// Pixel chunks of an (N, P, C) reduction. Independent of the vector width, so the workspace size
// (nhwc_workspace_size) is known before the dtype dispatch.
inline int64_t nhwc_chunks(int64_t N, int64_t C, int64_t P) {
  const int64_t tiles = N * ((C + 127) / 128);
  const int64_t by_blocks = (kNhwcTargetBlocks + tiles - 1) / tiles;
  const int64_t by_pixels = (P + kNhwcMinChunk - 1) / kNhwcMinChunk;
  const int64_t chunks = std::max<int64_t>(1, std::min(by_blocks, by_pixels));
  const int64_t pc = (P + chunks - 1) / chunks;
  return (P + pc - 1) / pc;
}

struct NhwcShape {
  int64_t N, C, P;
  int64_t CV;          // channel slots: C / VEC
  int64_t ctiles;      // blocks along the slots of one sample
  int64_t chunks, Pc;  // pixel chunks and pixels per chunk
  int TC, TR;          // block shape: TC threads along slots, TR along pixels
};

inline NhwcShape nhwc_shape(int64_t N, int64_t C, int64_t P, int vec) {
  NhwcShape s{};
  s.N = N, s.C = C, s.P = P, s.CV = C / vec;
  s.TC = 1;
  while (s.TC < 32 && s.TC < s.CV) s.TC *= 2;
  s.TR = kNhwcThreads / s.TC;
  s.ctiles = (s.CV + s.TC - 1) / s.TC;
  s.chunks = nhwc_chunks(N, C, P);
  s.Pc = (P + s.chunks - 1) / s.chunks;
  return s;
}

inline bool nhwc_grid_ok(const NhwcShape& s) {
  return s.N > 0 && s.C > 0 && s.P > 0 && s.N * s.chunks * s.ctiles <= 0x7fffffffLL;
}
inline dim3 nhwc_grid(const NhwcShape& s) {
  return dim3(static_cast<unsigned>(s.N * s.chunks * s.ctiles));
}
inline dim3 nhwc_block(const NhwcShape& s) {
  return dim3(static_cast<unsigned>(s.TC), static_cast<unsigned>(s.TR));
}

// Where this thread works: sample n, chunk, channel slot cv (valid when `active`), its first
// pixel p0 (it then strides by TR) and the end p1 of the chunk.
struct NhwcPos {
  int64_t n, chunk, cv, p0, p1;
  bool active;
};

__device__ __forceinline__ NhwcPos nhwc_pos(const NhwcShape& s) {
  int64_t b = blockIdx.x;
  const int64_t ctile = b % s.ctiles;
  b /= s.ctiles;
  NhwcPos q;
  q.chunk = b % s.chunks;
  q.n = b / s.chunks;
  q.cv = ctile * s.TC + threadIdx.x;
  q.active = q.cv < s.CV;
  q.p0 = q.chunk * s.Pc + threadIdx.y;
  const int64_t end = (q.chunk + 1) * s.Pc;
  q.p1 = end < s.P ? end : s.P;
  return q;
}

// Sums each v[k] over the threads of the block with the same threadIdx.x (the TR rows), in a fixed
// order; the totals are valid in the threads of row 0. Every thread of the block must call it
// (blockDim.x a power of two <= 32, kNhwcThreads threads in all).
template <int K>
__device__ __forceinline__ void column_sums(double (&v)[K]) {
  __shared__ double part[kNhwcThreads / 32][32];
  const int tc = blockDim.x;
  const int tid = threadIdx.x + tc * threadIdx.y, lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    double s = v[k];
    // Lanes of a warp with the same threadIdx.x differ in the lane bits at and above tc.
    for (int offset = 16; offset >= tc; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane < tc) part[warp][lane] = s;
    __syncthreads();
    if (threadIdx.y == 0) {
      double t = 0.0;
      for (int w = 0; w < kNhwcThreads / 32; ++w) t += part[w][threadIdx.x];
      v[k] = t;
    }
    __syncthreads();
  }
}

// Index of the first of `count` per-channel values in the workspace layout
// ws[(m * N * C + n * C + c) * chunks + chunk].
__device__ __forceinline__ int64_t nhwc_ws_index(const NhwcShape& s, int m, int64_t nc,
                                                 int64_t chunk) {
  return (m * s.N * s.C + nc) * s.chunks + chunk;
}

// Op interface of the partial and map kernels (VEC channels per slot; `slot` indexes the data in
// VEC-wide units, slot = (n * P + p) * CV + cv; nc0 = n * C + cv * VEC is the (n, c) index of the
// slot's first channel):
//   State channel(int64_t nc0, int64_t slot0) const;   per-thread setup (slot0: pixel 0)
//   void add(const State&, int64_t slot, double (&v)[M * VEC]) const;   (partial kernels)
//   void apply(const State&, int64_t slot) const;                        (map kernels)
template <typename T, int VEC, int M, typename Op>
__global__ void __launch_bounds__(kNhwcThreads)
    nhwc_partial_kernel(NhwcShape s, Op op, double* __restrict__ ws) {
  const NhwcPos q = nhwc_pos(s);
  double v[M * VEC];
#pragma unroll
  for (int k = 0; k < M * VEC; ++k) v[k] = 0.0;
  const int64_t nc0 = q.n * s.C + q.cv * VEC, slot0 = q.n * s.P * s.CV + q.cv;
  if (q.active) {
    const auto st = op.channel(nc0, slot0);
    for (int64_t p = q.p0; p < q.p1; p += s.TR) op.add(st, slot0 + p * s.CV, v);
  }
  column_sums<M * VEC>(v);
  if (threadIdx.y == 0 && q.active) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) ws[nhwc_ws_index(s, m, nc0 + j, q.chunk)] = v[m * VEC + j];
    }
  }
}

template <typename T, int VEC, typename Op>
__global__ void __launch_bounds__(kNhwcThreads) nhwc_map_kernel(NhwcShape s, Op op) {
  const NhwcPos q = nhwc_pos(s);
  if (!q.active) return;
  const int64_t nc0 = q.n * s.C + q.cv * VEC, slot0 = q.n * s.P * s.CV + q.cv;
  const auto st = op.channel(nc0, slot0);
  for (int64_t p = q.p0; p < q.p1; p += s.TR) op.apply(st, slot0 + p * s.CV);
}

// One thread per (n, c): the M partial sums added in chunk order, then fin(nc, sums).
template <int M, typename Fin>
__global__ void nhwc_finalize_kernel(NhwcShape s, const double* __restrict__ ws, Fin fin) {
  const int64_t NC = s.N * s.C;
  for (int64_t nc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; nc < NC;
       nc += int64_t(gridDim.x) * blockDim.x) {
    double t[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const double* w = ws + nhwc_ws_index(s, m, nc, 0);
      double a = 0.0;
      for (int64_t k = 0; k < s.chunks; ++k) a += w[k];
      t[m] = a;
    }
    fin(nc, t);
  }
}

inline unsigned nhwc_finalize_blocks(const NhwcShape& s) {
  const int64_t b = (s.N * s.C + 255) / 256;
  return static_cast<unsigned>(b < 65536 ? b : 65536);
}

// The sums of a finalize, in double, after the partials: ws + M_max * N * C * chunks, laid out
// [m * N * C + nc].
inline double* nhwc_sums(const NhwcShape& s, double* ws) {
  return ws + kNhwcMaxSums * s.N * s.C * s.chunks;
}

// Writes the M sums to `out` (laid out [m * N * C + nc]).
template <int M>
struct StoreSums {
  double* out;
  int64_t NC;
  __device__ void operator()(int64_t nc, const double (&t)[M]) const {
#pragma unroll
    for (int m = 0; m < M; ++m) out[m * NC + nc] = t[m];
  }
};

// The statistics of channels-last planes (instance_norm.cu, spatially_adaptive_instance_norm.cu):
// v[j] += x - shift, v[VEC + j] += (x - shift)^2 per channel, shift = the channel's first pixel.
template <typename T, int VEC>
struct NhwcMomentsOp {
  const T* x;
  struct State {
    acc_t<T> shift[VEC];
  };
  __device__ State channel(int64_t, int64_t slot0) const {
    State st;
    const Vec<T, VEC> v = load_vec<T, VEC>(x, slot0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) st.shift[j] = to_acc(v.v[j]);
    return st;
  }
  __device__ void add(const State& st, int64_t slot, double (&v)[2 * VEC]) const {
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t<T> d = to_acc(xv.v[j]) - st.shift[j];
      v[j] += d;
      v[VEC + j] += d * d;
    }
  }
};

// mean and rstd of (n, c) from the shifted sums (the shift read again from pixel 0).
template <typename T>
struct NhwcMomentsFin {
  const T* x;
  double* mean;
  double* rstd;
  int64_t C, P;
  double eps;
  __device__ void operator()(int64_t nc, const double (&t)[2]) const {
    const double shift = static_cast<double>(to_acc(x[(nc / C) * P * C + nc % C]));
    const math::Moments m =
        math::moments_from_shifted_sums(shift, t[0], t[1], static_cast<double>(P), eps);
    mean[nc] = m.mean;
    rstd[nc] = m.rstd;
  }
};

}  // namespace din_ops::gpu
