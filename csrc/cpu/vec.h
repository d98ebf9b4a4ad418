// GCC vector types for the CPU kernels: 64 bytes for the register-blocked kernels (direct_conv.cpp,
// winograd.cpp), 32 bytes for the deformable loops. Compiled inside a function cloned for AVX-512
// (clones.h) a 64-byte vector is one zmm register; for the AVX2 and baseline clones the compiler
// splits it. Broadcasts are written `-V{} + a` inline in the kernels (a + -0 ==
// a for every a, so it folds to one broadcast; GCC 12 expands it lane by lane when it comes from a
// helper function inlined into a cloned one).
#pragma once

#include <cstdint>
#include <cstring>

#include "clones.h"

// The vector helpers are inlined and never cross a call, so GCC's note that their ABI differs
// without AVX does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace din_ops::cpu::simd {

// VecOf<T, Bytes>::type: a vector of Bytes / sizeof(T) values of T; ::index: the integer vector of
// the same lanes, for __builtin_shuffle masks.
template <typename T, int Bytes>
struct VecOf;
template <>
struct VecOf<float, 64> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t index __attribute__((vector_size(64)));
};
template <>
struct VecOf<double, 64> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t index __attribute__((vector_size(64)));
};
template <>
struct VecOf<float, 32> {
  typedef float type __attribute__((vector_size(32)));
  typedef int32_t index __attribute__((vector_size(32)));
};
template <>
struct VecOf<double, 32> {
  typedef double type __attribute__((vector_size(32)));
  typedef int64_t index __attribute__((vector_size(32)));
};

// The 64-byte vectors of the register-blocked kernels and their shuffle masks.
template <typename T>
using vec_t = typename VecOf<T, 64>::type;
template <typename T>
using index_t = typename VecOf<T, 64>::index;
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

template <typename T>
DIN_INLINE vec_t<T> loadu(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
DIN_INLINE void storeu(T* p, vec_t<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace din_ops::cpu::simd
