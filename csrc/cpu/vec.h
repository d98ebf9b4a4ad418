// 64-byte GCC vector types for the register-blocked kernels (direct_conv.cpp, winograd.cpp).
// Compiled inside a function cloned for AVX-512 each is one zmm register; for the AVX2 and baseline
// clones the compiler splits it. Broadcasts are written `-V{} + a` inline in the kernels (a + -0 ==
// a for every a, so it folds to one broadcast; GCC 12 expands it lane by lane when it comes from a
// helper function inlined into a cloned one).
#pragma once

#include <cstdint>
#include <cstring>

#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define DIN_VEC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DIN_VEC_CLONES
#endif
#define DIN_VEC_INLINE __attribute__((always_inline)) inline

namespace din_ops::cpu::simd {

typedef float vfloat __attribute__((vector_size(64)));
typedef double vdouble __attribute__((vector_size(64)));
typedef int32_t vint32 __attribute__((vector_size(64)));
typedef int64_t vint64 __attribute__((vector_size(64)));

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type = vfloat;
  using index = vint32;
};
template <>
struct Vec<double> {
  using type = vdouble;
  using index = vint64;
};
template <typename T>
using vec_t = typename Vec<T>::type;
// Lane indices for __builtin_shuffle on vec_t<T>.
template <typename T>
using index_t = typename Vec<T>::index;
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

template <typename T>
DIN_VEC_INLINE vec_t<T> loadu(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
DIN_VEC_INLINE void storeu(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace din_ops::cpu::simd
