// The per-sample 1x1 DIN on CUDA: the kernels around the cuBLAS GEMMs of register_cuda.cpp.
//
//   folded:            y[n]  = W'[n] @ x[n] + b'[n],  W' = W * rstd (per input channel),
//                              b' = b - W' @ mean     (one GEMM on x itself: xh is never written)
//                      gW[n] = rstd_c * ((gy[n] @ x[n]^T)[o, c] - gb[n, o] * mean_c)
//   unfolded:          y[n]  = W[n] @ xh[n] + b[n],   gW[n] = gy[n] @ xh[n]^T
//   (derivations: docs/math.md)
//
// The folded products cancel when |mean| >> std, so a sample folds only when its data is float or
// double and every channel passes math::fold_channel_ok (the CPU kernel's rule). The choice is made
// on the device, per sample, without a host synchronization: fold_flags writes a flag per sample,
// every sample goes through the folded GEMM, and the unfolded kernels below then recompute the
// samples whose flag is 0; their blocks for samples with flag 1 return at once.
//
// The unfolded kernels are tiled GEMMs (32 x 32 outputs per block, K in steps of 32) that normalize
// x as they load it into shared memory, for NCHW (x as (C, P)) and NHWC (x as (P, C)) data. Each
// K step is summed in the accumulation type and the steps in double. They serve the rare samples
// the fold rejects; the common case is cuBLAS.
#include <algorithm>

#include "common.cuh"

namespace din_ops::gpu {
namespace {

constexpr int kTile = 32;
constexpr int kGemmThreads = 256;  // 32 columns x 8 rows, 4 rows of the tile per thread

// flag[n] = 1 when sample n may fold: `may_fold` (float or double data) and every channel passes.
__global__ void fold_flags_kernel(const double* __restrict__ mean, const double* __restrict__ rstd,
                                  int32_t* __restrict__ flag, int64_t C, bool may_fold) {
  const int64_t n = blockIdx.x;
  double bad[1] = {0.0};
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    if (!math::fold_channel_ok(mean[n * C + c], rstd[n * C + c])) bad[0] += 1.0;
  }
  block_sum<1>(bad);
  if (threadIdx.x == 0) flag[n] = may_fold && bad[0] == 0.0 ? 1 : 0;
}

// One block per (n, o): W'[n, o, :] and b'[n, o] (b' from the rounded W', so that W' x + b' is
// W' (x - mean) + b up to the GEMM's rounding).
template <typename T>
__global__ void fold_weights_kernel(const T* __restrict__ w, const T* __restrict__ b,
                                    const double* __restrict__ mean,
                                    const double* __restrict__ rstd, T* __restrict__ wf,
                                    T* __restrict__ bf, int64_t Co, int64_t C) {
  using acc = acc_t<T>;
  const int64_t row = blockIdx.x, n = row / Co;
  const T* wr = w + row * C;
  T* out = wf + row * C;
  double s[1] = {0.0};
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T v = from_acc<T>(static_cast<acc>(static_cast<double>(to_acc(wr[c])) * rstd[n * C + c]));
    out[c] = v;
    s[0] += static_cast<double>(to_acc(v)) * mean[n * C + c];
  }
  block_sum<1>(s);
  if (threadIdx.x == 0) {
    const double bias = b != nullptr ? static_cast<double>(to_acc(b[row])) : 0.0;
    bf[row] = from_acc<T>(static_cast<acc>(bias - s[0]));
  }
}

// In place, for the samples with flag 1: gw = rstd * (gw - gb * mean), gw holding gy @ x^T.
template <typename T>
__global__ void grad_weight_folded_kernel(T* __restrict__ gw, const T* __restrict__ gb,
                                          const double* __restrict__ mean,
                                          const double* __restrict__ rstd,
                                          const int32_t* __restrict__ flag, int64_t N, int64_t Co,
                                          int64_t C) {
  using acc = acc_t<T>;
  const int64_t total = N * Co * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, row = i / C, n = row / Co;
    if (flag[n] == 0) continue;
    const double g = static_cast<double>(to_acc(gw[i]));
    const double m = mean[n * C + c], r = rstd[n * C + c];
    gw[i] = from_acc<T>(static_cast<acc>(r * (g - static_cast<double>(to_acc(gb[row])) * m)));
  }
}

// out[n] (M x J) = A[n] (M x K) @ B^[n] (K x J) (+ bias[n * M + m]), B^ = B normalized with the
// statistics of channel k (CH_K: B is x as (C, P), the forward) or j (B is x^T as (P, C), the
// weight gradient). Strides in elements; the statistics of sample n start at n * C.
struct GemmDesc {
  int64_t M, J, K, C;
  int64_t a_n, a_m, a_k;
  int64_t b_n, b_k, b_j;
  int64_t o_n, o_m, o_j;
  int64_t tiles_j, tiles, blocks_per_sample;
};

template <typename T, bool CH_K>
__global__ void __launch_bounds__(kGemmThreads)
    unfolded_gemm_kernel(GemmDesc d, const T* __restrict__ A, const T* __restrict__ B,
                         const T* __restrict__ bias, const double* __restrict__ mean,
                         const double* __restrict__ rstd, const int32_t* __restrict__ flag,
                         T* __restrict__ out) {
  using acc = acc_t<T>;
  __shared__ acc As[kTile][kTile + 1];  // [m][k]
  __shared__ acc Bs[kTile][kTile + 1];  // [k][j]
  const int64_t n = blockIdx.x / d.blocks_per_sample;
  if (flag != nullptr && flag[n] != 0) return;  // folded: done by the GEMM on x
  const int tx = threadIdx.x % kTile, ty = threadIdx.x / kTile;
  constexpr int kRows = kGemmThreads / kTile;
  const T* an = A + n * d.a_n;
  const T* bn = B + n * d.b_n;
  T* on = out + n * d.o_n;
  const double* mn = mean + n * d.C;
  const double* rn = rstd + n * d.C;
  for (int64_t t = blockIdx.x % d.blocks_per_sample; t < d.tiles; t += d.blocks_per_sample) {
    const int64_t m0 = (t / d.tiles_j) * kTile, j0 = (t % d.tiles_j) * kTile;
    double total[kTile / kRows] = {};
    for (int64_t k0 = 0; k0 < d.K; k0 += kTile) {
      for (int e = threadIdx.x; e < kTile * kTile; e += kGemmThreads) {
        const int r = e / kTile, c = e % kTile;
        const int64_t m = m0 + r, k = k0 + c;
        As[r][c] = m < d.M && k < d.K ? to_acc(an[m * d.a_m + k * d.a_k]) : acc(0);
        const int64_t kb = k0 + r, j = j0 + c;
        acc v = acc(0);
        if (kb < d.K && j < d.J) {
          const int64_t ch = CH_K ? kb : j;
          const auto q = math::norm_coeffs<acc>(mn[ch], rn[ch]);
          v = math::normalize(to_acc(bn[kb * d.b_k + j * d.b_j]), q.hi, q.lo, q.rstd);
        }
        Bs[r][c] = v;
      }
      __syncthreads();
      acc part[kTile / kRows] = {};
      for (int kk = 0; kk < kTile; ++kk) {
        const acc bv = Bs[kk][tx];
#pragma unroll
        for (int i = 0; i < kTile / kRows; ++i) part[i] += As[ty + kRows * i][kk] * bv;
      }
#pragma unroll
      for (int i = 0; i < kTile / kRows; ++i) total[i] += part[i];
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kTile / kRows; ++i) {
      const int64_t m = m0 + ty + kRows * i, j = j0 + tx;
      if (m >= d.M || j >= d.J) continue;
      double v = total[i];
      if (bias != nullptr) v += static_cast<double>(to_acc(bias[n * d.M + m]));
      on[m * d.o_m + j * d.o_j] = from_acc<T>(static_cast<acc>(v));
    }
  }
}

// Tiles of the output and blocks per sample: enough blocks for the GPU when every sample is
// recomputed, few enough that the blocks of folded samples (which return at once) cost little.
bool finish_desc(GemmDesc& d, int64_t N) {
  const int64_t tiles_m = (d.M + kTile - 1) / kTile;
  d.tiles_j = (d.J + kTile - 1) / kTile;
  d.tiles = tiles_m * d.tiles_j;
  const int64_t want = std::max<int64_t>(8, (1024 + N - 1) / N);
  d.blocks_per_sample = std::min(d.tiles, want);
  return d.tiles > 0 && N * d.blocks_per_sample <= 0x7fffffffLL;
}

bool sizes_ok(int64_t N, int64_t C, int64_t Co, int64_t P) {
  return N >= 0 && C > 0 && Co > 0 && P > 0;
}

unsigned stride_blocks(int64_t total) {
  const int64_t blocks = (total + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 * 8 ? blocks : 65536 * 8);
}

}  // namespace

cudaError_t dynamic_1x1_fold_flags(DType dtype, const double* mean, const double* rstd,
                                   int32_t* flag, int64_t N, int64_t C, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if (N < 0 || N > 0x7fffffffLL || C <= 0) return cudaErrorInvalidConfiguration;
  // Half and bfloat16 never fold (the CPU rule): their GEMM rounds W' x to 8 or 11 bits before
  // the cancellation.
  const bool may_fold = dtype == DType::Float || dtype == DType::Double;
  fold_flags_kernel<<<dim3(static_cast<unsigned>(N)), 128, 0, stream>>>(mean, rstd, flag, C,
                                                                         may_fold);
  return launched();
}

cudaError_t dynamic_1x1_fold_weights(DType dtype, const void* weight, const void* bias,
                                     const double* mean, const double* rstd, void* wf, void* bf,
                                     int64_t N, int64_t Co, int64_t C, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if (N < 0 || Co <= 0 || C <= 0 || N * Co > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int threads = C >= 256 ? 256 : (C >= 128 ? 128 : 64);
    fold_weights_kernel<T><<<dim3(static_cast<unsigned>(N * Co)), threads, 0, stream>>>(
        static_cast<const T*>(weight), static_cast<const T*>(bias), mean, rstd,
        static_cast<T*>(wf), static_cast<T*>(bf), Co, C);
    return launched();
  });
}

cudaError_t dynamic_1x1_forward_unfolded(DType dtype, const void* x, const void* weight,
                                         const void* bias, const double* mean, const double* rstd,
                                         const int32_t* flag, void* y, int64_t N, int64_t C,
                                         int64_t Co, int64_t P, bool nhwc, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if (!sizes_ok(N, C, Co, P)) return cudaErrorInvalidConfiguration;
  // y (Co x P) = W (Co x C) @ xh (C x P) + b.
  GemmDesc d{};
  d.M = Co, d.J = P, d.K = C, d.C = C;
  d.a_n = Co * C, d.a_m = C, d.a_k = 1;
  d.b_n = C * P, d.b_k = nhwc ? 1 : P, d.b_j = nhwc ? C : 1;
  d.o_n = Co * P, d.o_m = nhwc ? 1 : P, d.o_j = nhwc ? Co : 1;
  if (!finish_desc(d, N)) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    unfolded_gemm_kernel<T, true><<<dim3(static_cast<unsigned>(N * d.blocks_per_sample)),
                                    kGemmThreads, 0, stream>>>(
        d, static_cast<const T*>(weight), static_cast<const T*>(x), static_cast<const T*>(bias),
        mean, rstd, flag, static_cast<T*>(y));
    return launched();
  });
}

cudaError_t dynamic_1x1_grad_weight_folded(DType dtype, void* gw, const void* gb,
                                           const double* mean, const double* rstd,
                                           const int32_t* flag, int64_t N, int64_t Co, int64_t C,
                                           cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if (N < 0 || Co <= 0 || C <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    grad_weight_folded_kernel<T><<<stride_blocks(N * Co * C), 256, 0, stream>>>(
        static_cast<T*>(gw), static_cast<const T*>(gb), mean, rstd, flag, N, Co, C);
    return launched();
  });
}

cudaError_t dynamic_1x1_grad_weight_unfolded(DType dtype, const void* gy, const void* x,
                                             const double* mean, const double* rstd,
                                             const int32_t* flag, void* gw, int64_t N, int64_t C,
                                             int64_t Co, int64_t P, bool nhwc,
                                             cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if (!sizes_ok(N, C, Co, P)) return cudaErrorInvalidConfiguration;
  // gW (Co x C) = gy (Co x P) @ xh^T (P x C).
  GemmDesc d{};
  d.M = Co, d.J = C, d.K = P, d.C = C;
  d.a_n = Co * P, d.a_m = nhwc ? 1 : P, d.a_k = nhwc ? Co : 1;
  d.b_n = C * P, d.b_k = nhwc ? C : 1, d.b_j = nhwc ? 1 : P;
  d.o_n = Co * C, d.o_m = C, d.o_j = 1;
  if (!finish_desc(d, N)) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    unfolded_gemm_kernel<T, false><<<dim3(static_cast<unsigned>(N * d.blocks_per_sample)),
                                     kGemmThreads, 0, stream>>>(
        d, static_cast<const T*>(gy), static_cast<const T*>(x), nullptr, mean, rstd, flag,
        static_cast<T*>(gw));
    return launched();
  });
}

}  // namespace din_ops::gpu
