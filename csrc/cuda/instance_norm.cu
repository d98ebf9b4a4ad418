// Instance normalization on CUDA: one block per (n, c) plane (see plane.cuh).
//
//   forward : mean, rstd per plane (one read of x when the plane fits the register cache);
//             y = ((x - hi) - lo) * rstd with the mean split as hi + lo (din_ops/math.h)
//   backward: gx = rstd * (g - mean_p(g) - xh * mean_p(g * xh)), the sums in double
//
// The same kernels serve the 1x1 DIN (statistics, xh for the GEMMs, and the backward of the
// normalization applied to g = W^T gy) and the k x k DIN (backward applied to the gathered
// gradient, held in the accumulation type).
#include "plane.cuh"

namespace din_ops::gpu {
namespace {

constexpr int kForwardCache = 8;   // slots of x kept in registers per thread
constexpr int kBackwardCache = 4;  // slots of g and of x

template <typename T, int VEC>
__device__ __forceinline__ Vec<T, VEC> normalized(const Vec<T, VEC>& v,
                                                  const math::NormCoeffs<acc_t<T>>& q) {
  Vec<T, VEC> out;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    out.v[j] = from_acc<T>(math::normalize(to_acc(v.v[j]), q.hi, q.lo, q.rstd));
  }
  return out;
}

template <typename T, int VEC, int CACHE>
__global__ void __launch_bounds__(kPlaneThreads)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, double* __restrict__ mean,
                   double* __restrict__ rstd, int64_t P, double eps) {
  const int64_t plane = blockIdx.x, nvec = P / VEC;
  const T* xp = x + plane * P;
  Vec<T, VEC> cache[CACHE];
  const math::Moments m = plane_moments<T, VEC, CACHE>(xp, nvec, P, eps, cache);
  if (threadIdx.x == 0) {
    mean[plane] = m.mean;
    rstd[plane] = m.rstd;
  }
  if (y == nullptr) return;
  const auto q = math::norm_coeffs<acc_t<T>>(m.mean, m.rstd);
  T* yp = y + plane * P;
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) store_vec<T, VEC>(yp, i, normalized<T, VEC>(cache[k], q));
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    store_vec<T, VEC>(yp, i, normalized<T, VEC>(load_vec<T, VEC>(xp, i), q));
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kPlaneThreads)
    apply_kernel(const T* __restrict__ x, const double* __restrict__ mean,
                 const double* __restrict__ rstd, T* __restrict__ y, int64_t P) {
  const int64_t plane = blockIdx.x, nvec = P / VEC;
  const auto q = math::norm_coeffs<acc_t<T>>(mean[plane], rstd[plane]);
  const T* xp = x + plane * P;
  T* yp = y + plane * P;
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    store_vec<T, VEC>(yp, i, normalized<T, VEC>(load_vec<T, VEC>(xp, i), q));
  }
}

// s[0] += sum(g), s[1] += sum(g * xh) over one slot.
template <typename T, typename G, int VEC>
__device__ __forceinline__ void add_grad(const Vec<G, VEC>& g, const Vec<T, VEC>& x,
                                         const math::NormCoeffs<acc_t<T>>& q, double (&s)[2]) {
  acc_t<T> a1 = 0, a2 = 0;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const acc_t<T> gj = to_acc(g.v[j]);
    a1 += gj;
    a2 += gj * math::normalize(to_acc(x.v[j]), q.hi, q.lo, q.rstd);
  }
  s[0] += a1;
  s[1] += a2;
}

template <typename T, typename G, int VEC>
__device__ __forceinline__ Vec<T, VEC> grad_x(const Vec<G, VEC>& g, const Vec<T, VEC>& x,
                                              const math::NormCoeffs<acc_t<T>>& q, acc_t<T> mg,
                                              acc_t<T> mgxh) {
  Vec<T, VEC> out;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const acc_t<T> xh = math::normalize(to_acc(x.v[j]), q.hi, q.lo, q.rstd);
    out.v[j] = from_acc<T>(math::normalize_backward(to_acc(g.v[j]), xh, q.rstd, mg, mgxh));
  }
  return out;
}

// G is T, or acc_t<T> for a gradient held in the accumulation type.
template <typename T, typename G, int VEC, int CACHE>
__global__ void __launch_bounds__(kPlaneThreads)
    backward_kernel(const G* __restrict__ g, const T* __restrict__ x,
                    const double* __restrict__ mean, const double* __restrict__ rstd,
                    T* __restrict__ gx, int64_t P) {
  using acc = acc_t<T>;
  const int64_t plane = blockIdx.x, nvec = P / VEC;
  const auto q = math::norm_coeffs<acc>(mean[plane], rstd[plane]);
  const G* gp = g + plane * P;
  const T* xp = x + plane * P;
  Vec<G, VEC> gc[CACHE];
  Vec<T, VEC> xc[CACHE];
  double s[2] = {0.0, 0.0};
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) {
      gc[k] = load_vec<G, VEC>(gp, i);
      xc[k] = load_vec<T, VEC>(xp, i);
      add_grad<T, G, VEC>(gc[k], xc[k], q, s);
    }
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    add_grad<T, G, VEC>(load_vec<G, VEC>(gp, i), load_vec<T, VEC>(xp, i), q, s);
  }
  block_sum<2>(s);
  const acc mg = static_cast<acc>(s[0] / static_cast<double>(P));
  const acc mgxh = static_cast<acc>(s[1] / static_cast<double>(P));
  T* gxp = gx + plane * P;
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) store_vec<T, VEC>(gxp, i, grad_x<T, G, VEC>(gc[k], xc[k], q, mg, mgxh));
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    store_vec<T, VEC>(gxp, i,
                      grad_x<T, G, VEC>(load_vec<G, VEC>(gp, i), load_vec<T, VEC>(xp, i), q, mg,
                                        mgxh));
  }
}

template <typename T>
__global__ void __launch_bounds__(kPlaneThreads)
    sum_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t P) {
  const int64_t plane = blockIdx.x;
  const T* xp = x + plane * P;
  double s[1] = {0.0};
  for (int64_t i = threadIdx.x; i < P; i += blockDim.x) s[0] += to_acc(xp[i]);
  block_sum<1>(s);
  if (threadIdx.x == 0) out[plane] = from_acc<T>(static_cast<acc_t<T>>(s[0]));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

cudaError_t instance_norm_forward(DType dtype, const void* x, void* y, double* mean, double* rstd,
                                  int64_t planes, int64_t P, double eps, cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[2] = {x, y};
    const int sizes[2] = {int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(P, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const int threads = plane_threads(ceil_div(P / V, kForwardCache), kPlaneThreads);
      forward_kernel<T, V, kForwardCache><<<dim3(unsigned(planes)), threads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(y), mean, rstd, P, eps);
      return launched();
    });
  });
}

cudaError_t instance_norm_apply(DType dtype, const void* x, const double* mean, const double* rstd,
                                void* y, int64_t planes, int64_t P, cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[2] = {x, y};
    const int sizes[2] = {int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(P, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const int threads = plane_threads(ceil_div(P / V, 8), kPlaneThreads);
      apply_kernel<T, V><<<dim3(unsigned(planes)), threads, 0, stream>>>(
          static_cast<const T*>(x), mean, rstd, static_cast<T*>(y), P);
      return launched();
    });
  });
}

cudaError_t instance_norm_backward(DType dtype, const void* g, bool g_is_acc, const void* x,
                                   const double* mean, const double* rstd, void* gx,
                                   int64_t planes, int64_t P, cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc = acc_t<T>;
    const void* const ptrs[3] = {g, x, gx};
    const int sizes[3] = {int(g_is_acc ? sizeof(acc) : sizeof(T)), int(sizeof(T)),
                          int(sizeof(T))};
    return with_vector_width<T>(P, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const int threads = plane_threads(ceil_div(P / V, kBackwardCache), kPlaneThreads);
      const dim3 grid(static_cast<unsigned>(planes));
      if (g_is_acc) {
        backward_kernel<T, acc, V, kBackwardCache><<<grid, threads, 0, stream>>>(
            static_cast<const acc*>(g), static_cast<const T*>(x), mean, rstd,
            static_cast<T*>(gx), P);
      } else {
        backward_kernel<T, T, V, kBackwardCache><<<grid, threads, 0, stream>>>(
            static_cast<const T*>(g), static_cast<const T*>(x), mean, rstd, static_cast<T*>(gx),
            P);
      }
      return launched();
    });
  });
}

cudaError_t plane_sums(DType dtype, const void* x, void* out, int64_t planes, int64_t P,
                       cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int threads = plane_threads(ceil_div(P, 8), 256);
    sum_kernel<T><<<dim3(unsigned(planes)), threads, 0, stream>>>(static_cast<const T*>(x),
                                                                  static_cast<T*>(out), P);
    return launched();
  });
}

}  // namespace din_ops::gpu
