// Per-sample k x k (grouped, depthwise, strided, dilated) dynamic convolution on CUDA, with the
// instance normalization applied on load (dynamic_instance_norm) or not (dynamic_conv2d, where the
// coefficients are mean 0, rstd 1).
//
//   forward     : one thread per output value; each tap reads x, normalizes it in registers
//                 (xh = ((x - hi) - lo) * rstd) and treats positions outside the input as 0, so
//                 padding pads xh, not x (docs/math.md: the mean cannot be folded into the weight).
//   grad_weight : one block per (n, o, input channel, tap): a deterministic block reduction of
//                 gy * xh over the output plane.
//   grad_input  : gather form of the transposed convolution, one thread per input value summing
//                 the (output, tap) pairs that read it (din_ops::math::transposed_tap): no atomics,
//                 bitwise repeatable. The result, in the accumulation type, goes through the
//                 instance-norm backward (instance_norm.cu) when normalizing.
//   grad_bias   : plane sums of gy (instance_norm.cu).
// Statistics come from the instance-norm statistics kernel.
#include "common.cuh"

namespace din_ops::gpu {
namespace {

constexpr int kThreads = 256;

template <typename acc>
__global__ void coeffs_kernel(const double* __restrict__ mean, const double* __restrict__ rstd,
                              acc* __restrict__ coeffs, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const auto q = math::norm_coeffs<acc>(mean[i], rstd[i]);
    coeffs[i] = q.hi;
    coeffs[count + i] = q.lo;
    coeffs[2 * count + i] = q.rstd;
  }
}

// The normalized input value of channel nc (= n * C + c) at (ih, iw), 0 outside the input.
template <typename T>
__device__ __forceinline__ acc_t<T> xh_at(const T* __restrict__ x, const acc_t<T>* __restrict__ q,
                                          int64_t count, const ConvGeometry& g, int64_t nc,
                                          int64_t ih, int64_t iw) {
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return acc_t<T>(0);
  return math::normalize(to_acc(x[(nc * g.H + ih) * g.W + iw]), q[nc], q[count + nc],
                         q[2 * count + nc]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(ConvGeometry g, const T* __restrict__ x, const T* __restrict__ w,
                   const T* __restrict__ b, const acc_t<T>* __restrict__ q, T* __restrict__ y) {
  using acc = acc_t<T>;
  const int64_t total = g.N * g.Co * g.Ho * g.Wo, count = g.N * g.C;
  const int64_t Cg = g.C / g.groups, Cog = g.Co / g.groups, taps = g.kh * g.kw;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = idx % g.Wo;
    int64_t t = idx / g.Wo;
    const int64_t oh = t % g.Ho;
    t /= g.Ho;
    const int64_t o = t % g.Co, n = t / g.Co, grp = o / Cog;
    const T* wp = w + (n * g.Co + o) * Cg * taps;
    acc sum = 0;
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const int64_t nc = n * g.C + grp * Cg + ci;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t ih = oh * g.sh - g.pt + i * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t iw = ow * g.sw - g.pl + j * g.dw;
          sum += to_acc(wp[(ci * g.kh + i) * g.kw + j]) * xh_at(x, q, count, g, nc, ih, iw);
        }
      }
    }
    if (b != nullptr) sum += to_acc(b[n * g.Co + o]);
    y[idx] = from_acc<T>(sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(ConvGeometry g, const T* __restrict__ gy, const T* __restrict__ x,
                       const acc_t<T>* __restrict__ q, T* __restrict__ gw) {
  const int64_t Cg = g.C / g.groups, Cog = g.Co / g.groups, taps = g.kh * g.kw;
  const int64_t count = g.N * g.C, Q = g.Ho * g.Wo;
  // blockIdx.x enumerates gw in its memory order: ((n * Co + o) * Cg + ci) * taps + tap.
  const int64_t k = blockIdx.x;
  const int64_t tap = k % taps, i = tap / g.kw, j = tap % g.kw;
  int64_t t = k / taps;
  const int64_t ci = t % Cg;
  t /= Cg;
  const int64_t o = t % g.Co, n = t / g.Co;
  const int64_t nc = n * g.C + (o / Cog) * Cg + ci;
  const T* gyp = gy + (n * g.Co + o) * Q;
  double s[1] = {0.0};
  for (int64_t p = threadIdx.x; p < Q; p += blockDim.x) {
    const int64_t oh = p / g.Wo, ow = p % g.Wo;
    const int64_t ih = oh * g.sh - g.pt + i * g.dh, iw = ow * g.sw - g.pl + j * g.dw;
    s[0] += to_acc(gyp[p]) * xh_at(x, q, count, g, nc, ih, iw);
  }
  block_sum<1>(s);
  if (threadIdx.x == 0) gw[k] = from_acc<T>(static_cast<acc_t<T>>(s[0]));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(ConvGeometry g, const T* __restrict__ gy, const T* __restrict__ w,
                      acc_t<T>* __restrict__ gxh) {
  using acc = acc_t<T>;
  const int64_t total = g.N * g.C * g.H * g.W;
  const int64_t Cg = g.C / g.groups, Cog = g.Co / g.groups, taps = g.kh * g.kw;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = idx % g.W;
    int64_t t = idx / g.W;
    const int64_t ih = t % g.H;
    t /= g.H;
    const int64_t c = t % g.C, n = t / g.C, grp = c / Cg, ci = c % Cg;
    acc sum = 0;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t oh = math::transposed_tap(ih, i, g.pt, g.sh, g.dh, g.Ho);
      if (oh < 0) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t ow = math::transposed_tap(iw, j, g.pl, g.sw, g.dw, g.Wo);
        if (ow < 0) continue;
        for (int64_t ol = 0; ol < Cog; ++ol) {
          const int64_t o = grp * Cog + ol;
          sum += to_acc(w[((n * g.Co + o) * Cg + ci) * taps + i * g.kw + j]) *
                 to_acc(gy[((n * g.Co + o) * g.Ho + oh) * g.Wo + ow]);
        }
      }
    }
    gxh[idx] = sum;
  }
}

// Grid for a grid-stride loop over `total` items: enough blocks to fill any current GPU.
unsigned stride_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 * 8 ? blocks : 65536 * 8);
}

bool geometry_ok(const ConvGeometry& g) {
  return g.N > 0 && g.C > 0 && g.groups > 0 && g.C % g.groups == 0 && g.Co % g.groups == 0 &&
         g.Ho > 0 && g.Wo > 0 && g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 &&
         g.dw > 0;
}

}  // namespace

cudaError_t norm_coeffs(DType dtype, const double* mean, const double* rstd, void* coeffs,
                        int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) {
    using acc = acc_t<decltype(tag)>;
    coeffs_kernel<acc><<<stride_blocks(count), kThreads, 0, stream>>>(
        mean, rstd, static_cast<acc*>(coeffs), count);
    return launched();
  });
}

cudaError_t dynamic_conv_forward(DType dtype, const ConvGeometry& g, const void* x,
                                 const void* weight, const void* bias, const void* coeffs, void* y,
                                 cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  if (!geometry_ok(g)) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<stride_blocks(g.N * g.Co * g.Ho * g.Wo), kThreads, 0, stream>>>(
        g, static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
        static_cast<const acc_t<T>*>(coeffs), static_cast<T*>(y));
    return launched();
  });
}

cudaError_t dynamic_conv_grad_weight(DType dtype, const ConvGeometry& g, const void* gy,
                                     const void* x, const void* coeffs, void* gw,
                                     cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  if (!geometry_ok(g)) return cudaErrorInvalidValue;
  const int64_t blocks = g.N * g.Co * (g.C / g.groups) * g.kh * g.kw;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t Q = g.Ho * g.Wo;
    const int threads = Q >= 256 ? 256 : (Q >= 128 ? 128 : 64);
    grad_weight_kernel<T><<<dim3(static_cast<unsigned>(blocks)), threads, 0, stream>>>(
        g, static_cast<const T*>(gy), static_cast<const T*>(x),
        static_cast<const acc_t<T>*>(coeffs), static_cast<T*>(gw));
    return launched();
  });
}

cudaError_t dynamic_conv_grad_input(DType dtype, const ConvGeometry& g, const void* gy,
                                    const void* weight, void* gxh_acc, cudaStream_t stream) {
  if (g.N == 0) return cudaSuccess;
  if (!geometry_ok(g)) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    grad_input_kernel<T><<<stride_blocks(g.N * g.C * g.H * g.W), kThreads, 0, stream>>>(
        g, static_cast<const T*>(gy), static_cast<const T*>(weight),
        static_cast<acc_t<T>*>(gxh_acc));
    return launched();
  });
}

}  // namespace din_ops::gpu
