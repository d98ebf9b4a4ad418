// Spatially adaptive instance normalization on CUDA: y = gamma * xh + beta, one block per (n, c)
// plane (see plane.cuh), gamma and beta full size or one value per plane, beta optional.
//
//   forward : the statistics pass over x (kept in registers), then one fused pass that reads
//             gamma and beta and writes y: x, gamma and beta are read once and y written once.
//   backward: full-size gamma: sums of gy * gamma, gy * gamma * xh and gy in one pass, then
//             gx = rstd * (gamma * gy - mean(g) - xh * mean(g * xh)) and ggamma = gy * xh;
//             per-plane gamma: the instance-norm sums of gy scaled by gamma, ggamma = sum(gy * xh).
// Channels-last data (nhwc.cuh) takes the same formulas in three passes: partial sums per pixel
// chunk, their sum per (n, c), then the elementwise pass; gamma and beta, when full size, are in
// x's layout.
// The per-element arithmetic is din_ops/math.h (normalize_affine, normalize_scale_shift,
// normalize_backward_scaled), the same functions as the CPU formulas.
#include "nhwc.cuh"
#include "plane.cuh"

namespace din_ops::gpu {
namespace {

constexpr int kForwardCache = 8;
constexpr int kBackwardCache = 4;

// gamma: full size (gamma_full) or one value per plane; beta: null, full size (beta_full) or one
// value per plane.
template <typename T, int VEC, int CACHE>
__global__ void __launch_bounds__(kPlaneThreads)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, bool gamma_full,
                   const T* __restrict__ beta, bool beta_full, T* __restrict__ y,
                   double* __restrict__ mean, double* __restrict__ rstd, int64_t P, double eps) {
  using acc = acc_t<T>;
  const int64_t plane = blockIdx.x, nvec = P / VEC, base = plane * P;
  const T* xp = x + base;
  Vec<T, VEC> cache[CACHE];
  const math::Moments m = plane_moments<T, VEC, CACHE>(xp, nvec, P, eps, cache);
  if (threadIdx.x == 0) {
    mean[plane] = m.mean;
    rstd[plane] = m.rstd;
  }
  const auto q = math::norm_coeffs<acc>(m.mean, m.rstd);
  const bool beta_plane = beta != nullptr && !beta_full;
  const acc b0 = beta_plane ? to_acc(beta[plane]) : acc(0);
  // A per-plane gamma folds into the scale s = rstd * gamma (computed in double).
  const acc s = gamma_full
                    ? acc(0)
                    : math::plane_scale<acc>(m.rstd, static_cast<double>(to_acc(gamma[plane])));
  const T* gp = gamma_full ? gamma + base : nullptr;
  const T* bp = beta_full ? beta + base : nullptr;
  T* yp = y + base;
  auto emit = [&](int64_t i, const Vec<T, VEC>& xv) {
    Vec<T, VEC> gv, bv, out;
    if (gp != nullptr) gv = load_vec<T, VEC>(gp, i);
    if (bp != nullptr) bv = load_vec<T, VEC>(bp, i);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc b = bp != nullptr ? to_acc(bv.v[j]) : b0;
      const acc xj = to_acc(xv.v[j]);
      const acc r = gp != nullptr
                        ? math::normalize_affine(xj, q.hi, q.lo, q.rstd, to_acc(gv.v[j]), b)
                        : math::normalize_scale_shift(xj, q.hi, q.lo, s, b);
      out.v[j] = from_acc<T>(r);
    }
    store_vec<T, VEC>(yp, i, out);
  };
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) emit(i, cache[k]);
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    emit(i, load_vec<T, VEC>(xp, i));
  }
}

// Full-size gamma: s[0] += sum(gy * gamma), s[1] += sum(gy * gamma * xh), s[2] += sum(gy).
// Per-plane gamma (gv unused): s[0] += sum(gy), s[1] += sum(gy * xh).
template <typename T, int VEC, bool FULL>
__device__ __forceinline__ void add_sums(const Vec<T, VEC>& gy, const Vec<T, VEC>& xv,
                                         const Vec<T, VEC>& gv,
                                         const math::NormCoeffs<acc_t<T>>& q, double (&s)[3]) {
  acc_t<T> a[3] = {0, 0, 0};
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const acc_t<T> xh = math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd);
    const acc_t<T> g = to_acc(gy.v[j]);
    if constexpr (FULL) {
      const acc_t<T> gg = g * to_acc(gv.v[j]);
      a[0] += gg;
      a[1] += gg * xh;
      a[2] += g;
    } else {
      a[0] += g;
      a[1] += g * xh;
    }
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) s[k] += a[k];
}

template <typename T, int VEC, int CACHE, bool FULL>
__global__ void __launch_bounds__(kPlaneThreads)
    backward_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                    const T* __restrict__ gamma, const double* __restrict__ mean,
                    const double* __restrict__ rstd, T* __restrict__ gx, T* __restrict__ ggamma,
                    T* __restrict__ gbeta, int64_t P) {
  using acc = acc_t<T>;
  const int64_t plane = blockIdx.x, nvec = P / VEC, base = plane * P;
  const auto q = math::norm_coeffs<acc>(mean[plane], rstd[plane]);
  const T* gyp = gy + base;
  const T* xp = x + base;
  const T* gp = FULL ? gamma + base : nullptr;
  Vec<T, VEC> gyc[CACHE], xc[CACHE], gc[FULL ? CACHE : 1];
  double s[3] = {0.0, 0.0, 0.0};
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) {
      gyc[k] = load_vec<T, VEC>(gyp, i);
      xc[k] = load_vec<T, VEC>(xp, i);
      if constexpr (FULL) {
        gc[k] = load_vec<T, VEC>(gp, i);
        add_sums<T, VEC, true>(gyc[k], xc[k], gc[k], q, s);
      } else {
        add_sums<T, VEC, false>(gyc[k], xc[k], gc[0], q, s);
      }
    }
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    Vec<T, VEC> gv;
    if constexpr (FULL) gv = load_vec<T, VEC>(gp, i);
    add_sums<T, VEC, FULL>(load_vec<T, VEC>(gyp, i), load_vec<T, VEC>(xp, i), gv, q, s);
  }
  block_sum<3>(s);
  acc mg, mgxh, gam = acc(1);
  if constexpr (FULL) {
    mg = static_cast<acc>(s[0] / static_cast<double>(P));
    mgxh = static_cast<acc>(s[1] / static_cast<double>(P));
    if (threadIdx.x == 0 && gbeta != nullptr) gbeta[plane] = from_acc<T>(static_cast<acc>(s[2]));
  } else {
    const double g = static_cast<double>(to_acc(gamma[plane]));
    gam = static_cast<acc>(g);
    mg = static_cast<acc>(g * s[0] / static_cast<double>(P));
    mgxh = static_cast<acc>(g * s[1] / static_cast<double>(P));
    if (threadIdx.x == 0) {
      ggamma[plane] = from_acc<T>(static_cast<acc>(s[1]));
      if (gbeta != nullptr) gbeta[plane] = from_acc<T>(static_cast<acc>(s[0]));
    }
  }
  T* gxp = gx + base;
  T* ggp = FULL ? ggamma + base : nullptr;
  auto emit = [&](int64_t i, const Vec<T, VEC>& gyv, const Vec<T, VEC>& xv, const Vec<T, VEC>& gv) {
    Vec<T, VEC> ox, og;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc xh = math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd);
      const acc g = to_acc(gyv.v[j]);
      const acc gm = FULL ? to_acc(gv.v[j]) : gam;
      ox.v[j] = from_acc<T>(math::normalize_backward_scaled(g, gm, xh, q.rstd, mg, mgxh));
      if constexpr (FULL) og.v[j] = from_acc<T>(g * xh);
    }
    store_vec<T, VEC>(gxp, i, ox);
    if constexpr (FULL) store_vec<T, VEC>(ggp, i, og);
  };
#pragma unroll
  for (int k = 0; k < CACHE; ++k) {
    const int64_t i = threadIdx.x + int64_t(k) * blockDim.x;
    if (i < nvec) emit(i, gyc[k], xc[k], gc[FULL ? k : 0]);
  }
  for (int64_t i = threadIdx.x + int64_t(CACHE) * blockDim.x; i < nvec; i += blockDim.x) {
    Vec<T, VEC> gv;
    if constexpr (FULL) gv = load_vec<T, VEC>(gp, i);
    emit(i, load_vec<T, VEC>(gyp, i), load_vec<T, VEC>(xp, i), gv);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- channels last (nhwc.cuh) -----------------------------------------------------------------

// y = gamma * xh + beta, as forward_kernel's emit.
template <typename T, int VEC>
struct SaApplyOp {
  const T* x;
  const T* gamma;
  bool gamma_full;
  const T* beta;
  bool beta_full;
  T* y;
  const double* mean;
  const double* rstd;
  struct State {
    math::NormCoeffs<acc_t<T>> q[VEC];
    acc_t<T> s[VEC], b0[VEC];
  };
  __device__ State channel(int64_t nc0, int64_t) const {
    using acc = acc_t<T>;
    State st;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      st.q[j] = math::norm_coeffs<acc>(mean[nc0 + j], rstd[nc0 + j]);
      st.s[j] = gamma_full ? acc(0)
                           : math::plane_scale<acc>(rstd[nc0 + j],
                                                    static_cast<double>(to_acc(gamma[nc0 + j])));
      st.b0[j] = beta != nullptr && !beta_full ? to_acc(beta[nc0 + j]) : acc(0);
    }
    return st;
  }
  __device__ void apply(const State& st, int64_t slot) const {
    using acc = acc_t<T>;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
    Vec<T, VEC> gv, bv, out;
    if (gamma_full) gv = load_vec<T, VEC>(gamma, slot);
    if (beta_full) bv = load_vec<T, VEC>(beta, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const auto& q = st.q[j];
      const acc b = beta_full ? to_acc(bv.v[j]) : st.b0[j];
      const acc xj = to_acc(xv.v[j]);
      const acc r = gamma_full ? math::normalize_affine(xj, q.hi, q.lo, q.rstd, to_acc(gv.v[j]), b)
                               : math::normalize_scale_shift(xj, q.hi, q.lo, st.s[j], b);
      out.v[j] = from_acc<T>(r);
    }
    store_vec<T, VEC>(y, slot, out);
  }
};

// Full-size gamma: v = [sum gy * gamma | sum gy * gamma * xh | sum gy]; per-plane gamma:
// v = [sum gy | sum gy * xh], as add_sums.
template <typename T, int VEC, bool FULL>
struct SaSumsOp {
  const T* gy;
  const T* x;
  const T* gamma;
  const double* mean;
  const double* rstd;
  struct Coeffs {
    math::NormCoeffs<acc_t<T>> q[VEC];
  };
  __device__ Coeffs channel(int64_t nc0, int64_t) const {
    Coeffs st;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      st.q[j] = math::norm_coeffs<acc_t<T>>(mean[nc0 + j], rstd[nc0 + j]);
    }
    return st;
  }
  __device__ void add(const Coeffs& st, int64_t slot, double (&v)[(FULL ? 3 : 2) * VEC]) const {
    const Vec<T, VEC> gyv = load_vec<T, VEC>(gy, slot);
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
    Vec<T, VEC> gv;
    if constexpr (FULL) gv = load_vec<T, VEC>(gamma, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const auto& q = st.q[j];
      const acc_t<T> xh = math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd);
      const acc_t<T> g = to_acc(gyv.v[j]);
      if constexpr (FULL) {
        const acc_t<T> gg = g * to_acc(gv.v[j]);
        v[j] += gg;
        v[VEC + j] += gg * xh;
        v[2 * VEC + j] += g;
      } else {
        v[j] += g;
        v[VEC + j] += g * xh;
      }
    }
  }
};

// Keeps the sums for the elementwise pass and writes the per-plane gradients.
template <typename T, bool FULL>
struct SaSumsFin {
  double* sums;
  int64_t NC;
  T* ggamma;  // per-plane gamma only
  T* gbeta;   // may be null
  __device__ void operator()(int64_t nc, const double (&t)[FULL ? 3 : 2]) const {
    using acc = acc_t<T>;
    sums[nc] = t[0];
    sums[NC + nc] = t[1];
    if constexpr (FULL) {
      if (gbeta != nullptr) gbeta[nc] = from_acc<T>(static_cast<acc>(t[2]));
    } else {
      ggamma[nc] = from_acc<T>(static_cast<acc>(t[1]));
      if (gbeta != nullptr) gbeta[nc] = from_acc<T>(static_cast<acc>(t[0]));
    }
  }
};

// gx = rstd * (gamma * gy - mean(g) - xh * mean(g * xh)), and ggamma = gy * xh (full gamma).
template <typename T, int VEC, bool FULL>
struct SaGradOp {
  const T* gy;
  const T* x;
  const T* gamma;
  const double* mean;
  const double* rstd;
  const double* sums;
  int64_t NC, P;
  T* gx;
  T* ggamma;
  struct State {
    math::NormCoeffs<acc_t<T>> q[VEC];
    acc_t<T> mg[VEC], mgxh[VEC], gam[VEC];
  };
  __device__ State channel(int64_t nc0, int64_t) const {
    using acc = acc_t<T>;
    State st;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t nc = nc0 + j;
      st.q[j] = math::norm_coeffs<acc>(mean[nc], rstd[nc]);
      const double g = FULL ? 1.0 : static_cast<double>(to_acc(gamma[nc]));
      st.gam[j] = static_cast<acc>(g);
      st.mg[j] = static_cast<acc>(g * sums[nc] / static_cast<double>(P));
      st.mgxh[j] = static_cast<acc>(g * sums[NC + nc] / static_cast<double>(P));
    }
    return st;
  }
  __device__ void apply(const State& st, int64_t slot) const {
    using acc = acc_t<T>;
    const Vec<T, VEC> gyv = load_vec<T, VEC>(gy, slot);
    const Vec<T, VEC> xv = load_vec<T, VEC>(x, slot);
    Vec<T, VEC> gv, ox, og;
    if constexpr (FULL) gv = load_vec<T, VEC>(gamma, slot);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const auto& q = st.q[j];
      const acc xh = math::normalize(to_acc(xv.v[j]), q.hi, q.lo, q.rstd);
      const acc g = to_acc(gyv.v[j]);
      const acc gm = FULL ? to_acc(gv.v[j]) : st.gam[j];
      ox.v[j] =
          from_acc<T>(math::normalize_backward_scaled(g, gm, xh, q.rstd, st.mg[j], st.mgxh[j]));
      if constexpr (FULL) og.v[j] = from_acc<T>(g * xh);
    }
    store_vec<T, VEC>(gx, slot, ox);
    if constexpr (FULL) store_vec<T, VEC>(ggamma, slot, og);
  }
};

template <typename T, int V, bool FULL>
cudaError_t sa_backward_nhwc(const NhwcShape& s, const T* gy, const T* x, const T* gamma,
                             const double* mean, const double* rstd, T* gx, T* ggamma, T* gbeta,
                             double* workspace, cudaStream_t stream) {
  constexpr int M = FULL ? 3 : 2;
  using Op = SaSumsOp<T, V, FULL>;
  const Op op{gy, x, gamma, mean, rstd};
  nhwc_partial_kernel<T, V, M, Op><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, op, workspace);
  if (const cudaError_t e = launched(); e != cudaSuccess) return e;
  double* sums = nhwc_sums(s, workspace);
  using Fin = SaSumsFin<T, FULL>;
  const Fin fin{sums, s.N * s.C, FULL ? nullptr : ggamma, gbeta};
  nhwc_finalize_kernel<M, Fin><<<nhwc_finalize_blocks(s), 256, 0, stream>>>(s, workspace, fin);
  if (const cudaError_t e = launched(); e != cudaSuccess) return e;
  using Ap = SaGradOp<T, V, FULL>;
  const Ap ap{gy, x, gamma, mean, rstd, sums, s.N * s.C, s.P, gx, FULL ? ggamma : nullptr};
  nhwc_map_kernel<T, V, Ap><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, ap);
  return launched();
}

}  // namespace

cudaError_t spatially_adaptive_forward(DType dtype, const void* x, const void* gamma,
                                       bool gamma_full, const void* beta, bool beta_full, void* y,
                                       double* mean, double* rstd, int64_t planes, int64_t P,
                                       double eps, cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0 || gamma == nullptr) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    // Per-plane operands are read one value at a time: only full-size ones need alignment.
    const void* const ptrs[4] = {x, y, gamma_full ? gamma : nullptr, beta_full ? beta : nullptr};
    const int sizes[4] = {int(sizeof(T)), int(sizeof(T)), int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(P, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const int threads = plane_threads(ceil_div(P / V, kForwardCache), kPlaneThreads);
      forward_kernel<T, V, kForwardCache><<<dim3(static_cast<unsigned>(planes)), threads, 0,
                                            stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(gamma), gamma_full,
          static_cast<const T*>(beta), beta_full, static_cast<T*>(y), mean, rstd, P, eps);
      return launched();
    });
  });
}

cudaError_t spatially_adaptive_backward(DType dtype, const void* gy, const void* x,
                                        const void* gamma, bool gamma_full, const double* mean,
                                        const double* rstd, void* gx, void* ggamma, void* gbeta,
                                        int64_t planes, int64_t P, cudaStream_t stream) {
  if (planes == 0) return cudaSuccess;
  if (!plane_grid_ok(planes) || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[5] = {gy, x, gx, gamma_full ? gamma : nullptr,
                                 gamma_full ? ggamma : nullptr};
    const int sizes[5] = {int(sizeof(T)), int(sizeof(T)), int(sizeof(T)), int(sizeof(T)),
                          int(sizeof(T))};
    return with_vector_width<T>(P, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const int threads = plane_threads(ceil_div(P / V, kBackwardCache), kPlaneThreads);
      const dim3 grid(static_cast<unsigned>(planes));
      const auto* gyp = static_cast<const T*>(gy);
      const auto* xp = static_cast<const T*>(x);
      const auto* gp = static_cast<const T*>(gamma);
      if (gamma_full) {
        backward_kernel<T, V, kBackwardCache, true><<<grid, threads, 0, stream>>>(
            gyp, xp, gp, mean, rstd, static_cast<T*>(gx), static_cast<T*>(ggamma),
            static_cast<T*>(gbeta), P);
      } else {
        backward_kernel<T, V, kBackwardCache, false><<<grid, threads, 0, stream>>>(
            gyp, xp, gp, mean, rstd, static_cast<T*>(gx), static_cast<T*>(ggamma),
            static_cast<T*>(gbeta), P);
      }
      return launched();
    });
  });
}


cudaError_t spatially_adaptive_forward_nhwc(DType dtype, const void* x, const void* gamma,
                                            bool gamma_full, const void* beta, bool beta_full,
                                            void* y, double* mean, double* rstd, int64_t N,
                                            int64_t C, int64_t P, double eps, double* workspace,
                                            cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0 || gamma == nullptr) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[4] = {x, y, gamma_full ? gamma : nullptr, beta_full ? beta : nullptr};
    const int sizes[4] = {int(sizeof(T)), int(sizeof(T)), int(sizeof(T)), int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      const T* xp = static_cast<const T*>(x);
      using Op = NhwcMomentsOp<T, V>;
      const Op op{xp};
      nhwc_partial_kernel<T, V, 2, Op><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, op,
                                                                                 workspace);
      if (const cudaError_t e = launched(); e != cudaSuccess) return e;
      using Fin = NhwcMomentsFin<T>;
      const Fin fin{xp, mean, rstd, C, P, eps};
      nhwc_finalize_kernel<2, Fin><<<nhwc_finalize_blocks(s), 256, 0, stream>>>(s, workspace, fin);
      if (const cudaError_t e = launched(); e != cudaSuccess) return e;
      using Ap = SaApplyOp<T, V>;
      const Ap ap{xp, static_cast<const T*>(gamma), gamma_full, static_cast<const T*>(beta),
                  beta != nullptr && beta_full, static_cast<T*>(y), mean, rstd};
      nhwc_map_kernel<T, V, Ap><<<nhwc_grid(s), nhwc_block(s), 0, stream>>>(s, ap);
      return launched();
    });
  });
}

cudaError_t spatially_adaptive_backward_nhwc(DType dtype, const void* gy, const void* x,
                                             const void* gamma, bool gamma_full,
                                             const double* mean, const double* rstd, void* gx,
                                             void* ggamma, void* gbeta, int64_t N, int64_t C,
                                             int64_t P, double* workspace, cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  if (N < 0 || C < 0 || P <= 0) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const void* const ptrs[5] = {gy, x, gx, gamma_full ? gamma : nullptr,
                                 gamma_full ? ggamma : nullptr};
    const int sizes[5] = {int(sizeof(T)), int(sizeof(T)), int(sizeof(T)), int(sizeof(T)),
                          int(sizeof(T))};
    return with_vector_width<T>(C, ptrs, sizes, [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      const NhwcShape s = nhwc_shape(N, C, P, V);
      if (!nhwc_grid_ok(s)) return cudaErrorInvalidConfiguration;
      const auto* gyp = static_cast<const T*>(gy);
      const auto* xp = static_cast<const T*>(x);
      const auto* gp = static_cast<const T*>(gamma);
      if (gamma_full) {
        return sa_backward_nhwc<T, V, true>(s, gyp, xp, gp, mean, rstd, static_cast<T*>(gx),
                                            static_cast<T*>(ggamma), static_cast<T*>(gbeta),
                                            workspace, stream);
      }
      return sa_backward_nhwc<T, V, false>(s, gyp, xp, gp, mean, rstd, static_cast<T*>(gx),
                                           static_cast<T*>(ggamma), static_cast<T*>(gbeta),
                                           workspace, stream);
    });
  });
}

}  // namespace din_ops::gpu
