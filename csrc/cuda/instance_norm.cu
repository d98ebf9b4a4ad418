// Instance normalization on CUDA: one block per (n, c) plane (see plane.cuh) for NCHW data, and
// channel-tiled blocks over pixel chunks (see nhwc.cuh) for channels-last data.
//
//   forward : mean, rstd per plane (one read of x when the plane fits the register cache);
//             y = ((x - hi) - lo) * rstd with the mean split as hi + lo (din_ops/math.h)
//   backward: gx = rstd * (g - mean_p(g) - xh * mean_p(g * xh)), the sums in double
//   NHWC    : the same formulas in three passes (partial sums per pixel chunk, their sum per
//             (n, c) in chunk order, then the elementwise pass), so x is read twice.
//
// The same kernels serve the 1x1 DIN (statistics, xh for the GEMMs, and the backward of the
// normalization applied to g = W^T gy) and the k x k DIN (backward applied to the gathered
// gradient, held in the accumulation type).
#include "nhwc.cuh"
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

// ---- channels last (nhwc.cuh) -----------------------------------------------------------------

template <typename T, int VEC>
struct CoeffState {
  math::NormCoeffs<acc_t<T>> q[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ CoeffState<T, VEC> coeffs_of(const double* mean, const double* rstd,
                                                        int64_t nc0) {
  CoeffState<T, VEC> st;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    st.q[j] = math::norm_coeffs<acc_t<T>>(mean[nc0 + j], rstd[nc0 + j]);
  }
  return st;
}

// y = ((x - hi) - lo) * rstd.
template <typename T, int VEC>
struct NormalizeOp {
  const T* x;
  T* y;
  const double* mean;
  const double* rstd;
  using State = CoeffState<T, VEC>;
  __device__ State channel(int64_t nc0, int64_t) const {
    return coeffs_of<T, VEC>(mean, rstd, nc0);
  }
  __device__ void apply(const State& st, int64_t slot) const {
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
    Vec<T, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const auto& q = st.q[j];
      out.v[j] = from_acc<T>(math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd));
    }
    store_vec<T, VEC>(y, slot, out);
  }
};

// v[j] += g, v[VEC + j] += g * xh.
template <typename T, typename G, int VEC>
struct GradSumsOp {
  const G* g;
  const T* x;
  const double* mean;
  const double* rstd;
  using State = CoeffState<T, VEC>;
  __device__ State channel(int64_t nc0, int64_t) const {
    return coeffs_of<T, VEC>(mean, rstd, nc0);
  }
  __device__ void add(const State& st, int64_t slot, double (&v)[2 * VEC]) const {
    const Vec<G, VEC> gv = load_vec<G, VEC>(g, slot);
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t<T> gj = to_acc(gv.v[j]);
      v[j] += gj;
      v[VEC + j] += gj * math::normalize(to_acc(xv.v[j]), st.q[j].hi, st.q[j].lo, st.q[j].rstd);
    }
  }
};

// gx = rstd * (g - mean_p(g) - xh * mean_p(g * xh)), the sums from the finalize pass.
template <typename T, typename G, int VEC>
struct GradApplyOp {
  const G* g;
  const T* x;
  T* gx;
  const double* mean;
  const double* rstd;
  const double* sums;  // [sum g | sum g * xh], N * C each
  int64_t NC, P;
  struct State {
    math::NormCoeffs<acc_t<T>> q[VEC];
    acc_t<T> mg[VEC], mgxh[VEC];
  };
  __device__ State channel(int64_t nc0, int64_t) const {
    State st;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      st.q[j] = math::norm_coeffs<acc_t<T>>(mean[nc0 + j], rstd[nc0 + j]);
      st.mg[j] = static_cast<acc_t<T>>(sums[nc0 + j] / static_cast<double>(P));
      st.mgxh[j] = static_cast<acc_t<T>>(sums[NC + nc0 + j] / static_cast<double>(P));
    }
    return st;
  }
  __device__ void apply(const State& st, int64_t slot) const {
    const Vec<G, VEC> gv = load_vec<G, VEC>(g, slot);
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
    Vec<T, VEC> out;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const auto& q = st.q[j];
      const acc_t<T> xh = math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd);
      out.v[j] = from_acc<T>(
          math::normalize_backward(to_acc(gv.v[j]), xh, q.rstd, st.mg[j], st.mgxh[j]));
    }
    store_vec<T, VEC>(gx, slot, out);
  }
};

// v[j] += x.
template <typename T, int VEC>
struct SumOp {
  const T* x;
  struct State {};
  __device__ State channel(int64_t, int64_t) const { return {}; }
  __device__ void add(const State&, int64_t slot, double (&v)[VEC]) const {
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] += to_acc(xv.v[j]);
  }
};

template <typename T>
struct StoreSumAsT {
  T* out;
  __device__ void operator()(int64_t nc, const double (&t)[1]) const {
    out[nc] = from_acc<T>(static_cast<acc_t<T>>(t[0]));
  }
};

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


// ---- channels last ----------------------------------------------------------------------------

int64_t nhwc_workspace_size(int64_t N, int64_t C, int64_t P) {
  if (N <= 0 || C <= 0 || P <= 0) return 0;
  return kNhwcMaxSums * N * C * (nhwc_chunks(N, C, P) + 1);
}

cudaError_t instance_norm_forward_nhwc(DType dtype, const void* x, void* y, double* mean,
                                       double* rstd, int64_t N, int64_t C, int64_t P, double eps,
                                       double* workspace, cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[2] = {x, y};
    const int sizes[2] = {int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      const T* xp = static_cast<const T*>(x);
      using Op = NhwcMomentsOp<T, V>;
      nhwc_partial_kernel<T, V, 2, Op><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, Op{xp},
                                                                                 workspace);
      if (const cudaError_t e = launched(); e != cudaSuccess) return e;
      using Fin = NhwcMomentsFin<T>;
      const Fin fin{xp, mean, rstd, C, P, eps};
      nhwc_finalize_kernel<2, Fin><<<nhwc_finalize_blocks(s), 256, 0, stream>>>(s, workspace, fin);
      if (const cudaError_t e = launched(); e != cudaSuccess || y == nullptr) return e;
      using Ap = NormalizeOp<T, V>;
      const Ap ap{xp, static_cast<T*>(y), mean, rstd};
      nhwc_map_kernel<T, V, Ap><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, ap);
      return launched();
    });
  });
}

cudaError_t instance_norm_apply_nhwc(DType dtype, const void* x, const double* mean,
                                     const double* rstd, void* y, int64_t N, int64_t C, int64_t P,
                                     cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[2] = {x, y};
    const int sizes[2] = {int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      using Ap = NormalizeOp<T, V>;
      const Ap ap{static_cast<const T*>(x), static_cast<T*>(y), mean, rstd};
      nhwc_map_kernel<T, V, Ap><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, ap);
      return launched();
    });
  });
}

namespace {

template <typename T, typename G, int V>
cudaError_t backward_nhwc(const NhwcShape& s, const G* g, const T* x, const double* mean,
                          const double* rstd, T* gx, double* workspace, cudaStream_t stream) {
  using Op = GradSumsOp<T, G, V>;
  const Op op{g, x, mean, rstd};
  nhwc_partial_kernel<T, V, 2, Op><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, op, workspace);
  if (const cudaError_t e = launched(); e != cudaSuccess) return e;
  double* sums = nhwc_sums(s, workspace);
  using Fin = StoreSums<2>;
  const Fin fin{sums, s.N * s.C};
  nhwc_finalize_kernel<2, Fin><<<nhwc_finalize_blocks(s), 256, 0, stream>>>(s, workspace, fin);
  if (const cudaError_t e = launched(); e != cudaSuccess) return e;
  using Ap = GradApplyOp<T, G, V>;
  const Ap ap{g, x, gx, mean, rstd, sums, s.N * s.C, s.P};
  nhwc_map_kernel<T, V, Ap><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, ap);
  return launched();
}

}  // namespace

cudaError_t instance_norm_backward_nhwc(DType dtype, const void* g, bool g_is_acc, const void* x,
                                        const double* mean, const double* rstd, void* gx,
                                        int64_t N, int64_t C, int64_t P, double* workspace,
                                        cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc = acc_t<T>;
    const void* const ptrs[3] = {g, x, gx};
    const int sizes[3] = {int(g_is_acc ? sizeof(acc) : sizeof(T)), int(sizeof(T)),
                          int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      if (g_is_acc) {
        return backward_nhwc<T, acc, V>(s, static_cast<const acc*>(g), static_cast<const T*>(x),
                                        mean, rstd, static_cast<T*>(gx), workspace, stream);
      }
      return backward_nhwc<T, T, V>(s, static_cast<const T*>(g), static_cast<const T*>(x), mean,
                                    rstd, static_cast<T*>(gx), workspace, stream);
    });
  });
}

cudaError_t channel_sums_nhwc(DType dtype, const void* x, void* out, int64_t N, int64_t C,
                              int64_t P, double* workspace, cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[1] = {x};
    const int sizes[1] = {int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      using Op = SumOp<T, V>;
      const Op op{static_cast<const T*>(x)};
      nhwc_partial_kernel<T, V, 1, Op><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, op,
                                                                                 workspace);
      if (const cudaError_t e = launched(); e != cudaSuccess) return e;
      using Fin = StoreSumAsT<T>;
      const Fin fin{static_cast<T*>(out)};
      nhwc_finalize_kernel<1, Fin><<<nhwc_finalize_blocks(s), 256, 0, stream>>>(s, workspace, fin);
      return launched();
    });
  });
}

}  // namespace din_ops::gpu
