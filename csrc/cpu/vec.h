// GCC / clang vector types for the CPU kernels: 64 bytes (avx512 level) or 32 bytes (avx2 and the
// x86-64 baseline) for the register-blocked kernels (direct_conv.cpp, winograd.cpp), 32 bytes for
// the deformable loops; on aarch64 16 bytes for all of them. A 64-byte vector is one zmm register;
// in the x86-64 baseline build the compiler splits a 32-byte one in two xmm. Broadcasts are written
// `-V{} + a` inline in the kernels (a + -0 == a for every a, so it folds to one broadcast; GCC 12
// expands it lane by lane when it comes from a helper function inlined into another one).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "isa.h"

// The vector helpers are inlined and never cross a call, so the compilers' notes that their ABI
// differs without AVX do not apply.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

// In the namespace and target region of the level (isa.h): each build has its own vector widths,
// and clang rejects a call that returns a 32- or 64-byte vector from a function compiled without
// the instructions for it, even an inlined one.
DIN_ISA_TARGET_PUSH
namespace din_ops::cpu::DIN_ISA::simd {

// VecOf<T, Bytes>::type: a vector of Bytes / sizeof(T) values of T; ::index: the integer vector of
// the same lanes (shuffle masks).
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
struct VecOf<float, 16> {
  typedef float type __attribute__((vector_size(16)));
  typedef int32_t index __attribute__((vector_size(16)));
};
template <>
struct VecOf<double, 16> {
  typedef double type __attribute__((vector_size(16)));
  typedef int64_t index __attribute__((vector_size(16)));
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

// The vectors of the register-blocked kernels (direct_conv.cpp, winograd.cpp) in this build (isa.h):
// 64 bytes, one zmm register, at the avx512 level; on aarch64 16 bytes, one NEON register, with the
// same blocks in its 32 registers (GCC 12 keeps 32-byte vectors there in memory: ~49 stack accesses
// per 24 multiply-adds, docs/kernels.md); 32 bytes, one ymm register (two xmm in the x86-64
// baseline), elsewhere, where 16 registers hold half as many accumulators.
// kAcc: accumulators of a register block (a GEMM's output tile), kRows: most output channels in one.
#if defined(DIN_CPU_CAPABILITY_AVX512) || defined(DIN_CPU_WIDE_VECTORS_TEST)
constexpr int kVecBytes = 64, kAcc = 24, kRows = 8;
#elif defined(__aarch64__) || defined(DIN_CPU_NARROW_VECTORS_TEST)
constexpr int kVecBytes = 16, kAcc = 24, kRows = 8;
#else
constexpr int kVecBytes = 32, kAcc = 12, kRows = 4;
#endif
template <typename T>
using vec_t = typename VecOf<T, kVecBytes>::type;
template <typename T>
constexpr int kLanes = kVecBytes / sizeof(T);

template <typename T>
DIN_INLINE vec_t<T> loadu(const T* p) {
  vec_t<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
DIN_INLINE void storeu(T* p, const vec_t<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Non-temporal store of v at p, which must be aligned to sizeof(v): the cache lines are written to
// memory without being read first (no read-for-ownership) and without being brought into the
// cache, where they would displace other data. For outputs too large to stay in cache (common.h:
// stream_output). The stores are weakly ordered: common.h's stream_fence() after the last one,
// before the output is handed to another thread.
template <typename T>
DIN_INLINE void stream(T* p, const vec_t<T>& v) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "float or double");
#if defined(__clang__)
  __builtin_nontemporal_store(v, reinterpret_cast<vec_t<T>*>(p));
#elif defined(__x86_64__) && defined(DIN_CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    __builtin_ia32_movntps512(p, v);
  } else {
    __builtin_ia32_movntpd512(p, v);
  }
#elif defined(__x86_64__) && defined(DIN_CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    __builtin_ia32_movntps256(p, v);
  } else {
    __builtin_ia32_movntpd256(p, v);
  }
#elif defined(__x86_64__)
  // The baseline's vectors are pairs of SSE registers: one movntps / movntpd for each 16 bytes.
  typedef T Half __attribute__((vector_size(16)));
  for (int k = 0; k < int(sizeof(v)) / 16; ++k) {
    Half h;
    std::memcpy(&h, reinterpret_cast<const char*>(&v) + 16 * k, 16);
    if constexpr (std::is_same_v<T, float>) {
      __builtin_ia32_movntps(p + 4 * k, h);
    } else {
      __builtin_ia32_movntpd(p + 2 * k, h);
    }
  }
#else
  storeu(p, v);  // GCC on other architectures: a plain store
#endif
}

// Lane selections from the concatenation (a, b) of two n-lane vectors: the even / odd elements, and
// the low / high halves of the interleaving a0 b0 a1 b1 ... (these cross 16-byte chunks: two or
// three instructions each on AVX2);
// and the same selections within each 16-byte chunk of c lanes (one instruction on SSE, AVX2,
// AVX-512 and NEON: shufps / unpcklps / unpckhps, uzp / zip): chunk k of even16 holds a's even
// elements of chunk k, then b's; lo16 / hi16 interleave the low / high halves of chunk k of a and b.
enum class Pick { even, odd, lo, hi, even16, odd16, lo16, hi16 };

// Index of the concatenation that lane i of selection K takes (c lanes per 16-byte chunk).
template <Pick K, int n, int c>
constexpr int pick_index(int i) {
  const int k = i / c * c, j = i % c, h = c / 2;
  switch (K) {
    case Pick::even: return 2 * i;
    case Pick::odd: return 2 * i + 1;
    case Pick::lo: return i / 2 + (i % 2) * n;
    case Pick::hi: return n / 2 + i / 2 + (i % 2) * n;
    case Pick::even16: return j < h ? k + 2 * j : n + k + 2 * (j - h);
    case Pick::odd16: return (j < h ? k + 2 * j : n + k + 2 * (j - h)) + 1;
    case Pick::lo16: return k + j / 2 + (j % 2) * n;
    default: return k + h + j / 2 + (j % 2) * n;
  }
}

// permute<I...>(a, b): lane j is lane I_j of the concatenation (a, b), as __builtin_shufflevector
// spells it; for the fixed patterns of in-register transposes.
template <int... I, typename V>
DIN_INLINE V permute(const V& a, const V& b) {
  static_assert(sizeof...(I) == sizeof(V) / sizeof(a[0]), "one index per lane");
#if defined(__clang__) || __GNUC__ >= 12
  return __builtin_shufflevector(a, b, I...);
#else
  typedef typename std::conditional<sizeof(a[0]) == 8, int64_t, int32_t>::type E;
  typedef E Mask __attribute__((vector_size(sizeof(V))));
  return __builtin_shuffle(a, b, Mask{I...});
#endif
}

template <Pick K, typename V, int... I>
DIN_INLINE V shuffle_lanes(const V& a, const V& b, std::integer_sequence<int, I...>) {
  return permute<pick_index<K, sizeof...(I), int(16 / sizeof(a[0]))>(I)...>(a, b);
}

// shuffle<K>(a, b): the lanes of selection K, for any vector type of vec.h.
template <Pick K, typename V>
DIN_INLINE V shuffle(const V& a, const V& b) {
  constexpr int n = sizeof(V) / sizeof(a[0]);
  return shuffle_lanes<K>(a, b, std::make_integer_sequence<int, n>{});
}

// In-register transpose of n x n values (n = lanes of V): v[i][j] -> v[j][i], by log2(n) rounds of
// interleaving vector i with vector i + n/2 (zip1 / zip2 on NEON, unpcklps / unpckhps on SSE).
template <typename V>
DIN_INLINE void transpose(V* v) {
  constexpr int n = sizeof(V) / sizeof(v[0][0]);
  for (int round = 1; round < n; round *= 2) {
    V t[n];
    for (int i = 0; i < n / 2; ++i) {
      t[2 * i] = shuffle<Pick::lo>(v[i], v[i + n / 2]);
      t[2 * i + 1] = shuffle<Pick::hi>(v[i], v[i + n / 2]);
    }
    for (int i = 0; i < n; ++i) v[i] = t[i];
  }
}

}  // namespace din_ops::cpu::DIN_ISA::simd
DIN_ISA_TARGET_POP
