// Device helpers shared by the din_ops CUDA kernels: storage <-> accumulation conversions, aligned
// vector access, deterministic block reductions in double, and the dtype dispatch of launchers.
// Only the CUDA runtime and our own headers are included (fast nvcc compiles).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "din_ops/math.h"
#include "launchers.h"

namespace din_ops::gpu {

// Accumulation type: float for float/half/bfloat16, double for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// VEC consecutive values loaded or stored as one access (16 bytes for the vectorized kernels).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> load_vec(const T* base, int64_t i) {
  return reinterpret_cast<const Vec<T, VEC>*>(base)[i];
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* base, int64_t i, const Vec<T, VEC>& v) {
  reinterpret_cast<Vec<T, VEC>*>(base)[i] = v;
}

// Elements per 16-byte access.
template <typename T>
constexpr int kVec16 = 16 / sizeof(T);

inline bool aligned_to(const void* p, int64_t bytes) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sums each of v[0..M) over the block; every thread receives the totals. blockDim.x must be a
// multiple of 32 (at most 1024). The order of additions depends only on blockDim.x, so results are
// bitwise repeatable. Ends with a barrier: safe to call again.
template <int M>
__device__ __forceinline__ void block_sum(double (&v)[M]) {
  __shared__ double partial[M][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    v[m] = warp_sum(v[m]);
    if (lane == 0) partial[m][warp] = v[m];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      double s = lane < warps ? partial[m][lane] : 0.0;
      s = warp_sum(s);
      if (lane == 0) partial[m][0] = s;
    }
  }
  __syncthreads();
#pragma unroll
  for (int m = 0; m < M; ++m) v[m] = partial[m][0];
  __syncthreads();
}

// Threads per block for a per-plane kernel that handles `work` vector slots: a multiple of 32,
// from 64 up to `max_threads`.
inline int plane_threads(int64_t work, int max_threads) {
  int t = 64;
  while (t < max_threads && t < work) t *= 2;
  return t;
}

// Calls f(T{}) with T the CUDA storage type of `dtype`.
template <typename F>
cudaError_t dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float:
      return f(float{});
    case DType::Double:
      return f(double{});
    case DType::Half:
      return f(__half{});
    case DType::BFloat16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Launch bookkeeping: the error of the last launch (a bad configuration shows up here; faults
// inside a kernel surface at the next synchronizing call, as for any CUDA op).
inline cudaError_t launched() { return cudaGetLastError(); }

}  // namespace din_ops::gpu
