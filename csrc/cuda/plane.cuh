// Per-plane building blocks of the instance-norm family of kernels (instance_norm.cu,
// spatially_adaptive_instance_norm.cu): one thread block per (n, c) plane of P contiguous values.
//
// A thread handles the vector slots tid, tid + blockDim, ... of its plane (a slot is VEC values
// read as one 16-byte access, or one value when the plane is not aligned for that). The first
// CACHE slots of each thread are kept in registers between the statistics pass and the elementwise
// pass, so a plane of up to CACHE * blockDim * VEC values is read from memory once; the remaining
// slots are read again in the second pass (from L2 when the planes in flight fit there).
//
// Statistics are the shifted sums of din_ops/math.h: deviations from the plane's first value,
// summed per slot in the accumulation type and across slots and threads in double, with a fixed
// reduction order (bitwise repeatable results).
#pragma once

#include "common.cuh"

namespace din_ops::gpu {

// Maximum threads per block of the per-plane kernels; the register caches are sized for it.
constexpr int kPlaneThreads = 512;

// s[0] += sum(v - shift), s[1] += sum((v - shift)^2) over one slot.
template <typename T, int VEC>
__device__ __forceinline__ void add_shifted(const Vec<T, VEC>& v, acc_t<T> shift, double (&s)[2]) {
  acc_t<T> a1 = 0, a2 = 0;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const acc_t<T> d = to_acc(v.v[j]) - shift;
    a1 += d;
    a2 += d * d;
  }
  s[0] += a1;
  s[1] += a2;
}

// The moments of the plane at xp (nvec slots of VEC values, P values), caching the first CACHE
// slots of this thread in `cache`. Every thread of the block receives the result.
template <typename T, int VEC, int CACHE>
__device__ __forceinline__ math::Moments plane_moments(const T* __restrict__ xp, int64_t nvec,
                                                       int64_t P, double eps,
                                                       Vec<T, VEC> (&cache)[CACHE]) {
  const acc_t<T> shift = to_acc(xp[0]);
  double s[2] = {0.0, 0.0};
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) {
      cache[k] = load_vec<T, VEC>(xp, i);
      add_shifted<T, VEC>(cache[k], shift, s);
    }
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    add_shifted<T, VEC>(load_vec<T, VEC>(xp, i), shift, s);
  }
  block_sum<2>(s);
  return math::moments_from_shifted_sums(static_cast<double>(shift), s[0], s[1],
                                         static_cast<double>(P), eps);
}

// Calls f(std::integral_constant<int, V>) with V = 16-byte vectors when every pointer is aligned
// to them and P is a multiple of their width, else V = 1. `bytes_per_value` lists the element size
// of each pointer (a pointer of the accumulation type needs sizeof(acc) * V alignment).
template <typename T, int N_PTR, typename F>
cudaError_t with_vector_width(int64_t P, const void* const (&ptrs)[N_PTR],
                              const int (&bytes_per_value)[N_PTR], F&& f) {
  constexpr int V = kVec16<T>;
  bool ok = P % V == 0;
  for (int i = 0; i < N_PTR; ++i) ok = ok && aligned_to(ptrs[i], int64_t(bytes_per_value[i]) * V);
  if (ok) return f(std::integral_constant<int, V>{});
  return f(std::integral_constant<int, 1>{});
}

// Grid of one block per plane (the x dimension allows 2^31 - 1 blocks).
inline bool plane_grid_ok(int64_t planes) { return planes > 0 && planes <= 0x7fffffffLL; }

}  // namespace din_ops::gpu
