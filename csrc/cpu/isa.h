// Instruction-set levels of the CPU kernels and how the hot loops are built for each.
//
// The files with the hot loops (loops.cpp, deformable_loops.cpp, direct_conv.cpp, winograd.cpp) put
// their exported functions between DIN_ISA_BEGIN and DIN_ISA_END, i.e. in namespace
// din_ops::cpu::<level>. Each file is compiled once as it is (the baseline level, namespace `base`)
// and, on x86-64, once more per level by a two-line wrapper (loops_avx2.cpp, loops_avx512.cpp, ...)
// that defines DIN_CPU_CAPABILITY_AVX2 or DIN_CPU_CAPABILITY_AVX512 before including it. The level's
// instructions are enabled by a target pragma on the functions of that region only (GCC: `#pragma
// GCC target`, clang: `#pragma clang attribute`), never on the headers included before it, so no
// inline function of the standard library or of torch is ever emitted with instructions the CPU
// may lack, and the build needs no per-file flags.
//
// isa.cpp declares the functions of every level, fills one table of function pointers per level,
// chooses one table once, when the library is loaded (the best level the CPU supports, or the one
// the environment variable DIN_OPS_CPU_CAPABILITY=default|avx2|avx512 asks for), and defines the
// public functions of loops.h, deformable_loops.h, direct_conv.h and winograd.h as calls through
// it. The list of dispatched functions is isa_kernels.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

// Helpers inlined into the exported loops (compiled for each level with the function using them).
#define DIN_INLINE __attribute__((always_inline)) inline

namespace din_ops::cpu {

// The levels, lowest first. base: the architecture's baseline (x86-64: SSE2; aarch64: NEON, with
// 16-byte vectors and the register-blocked k x k kernels of the 32 NEON registers, vec.h).
// avx2: AVX2 + FMA + BMI1/2 (x86-64-v3 without F16C, LZCNT and MOVBE, which the loops do not use).
// avx512: avx2 + AVX-512 F, BW, DQ, VL, CD (x86-64-v4).
enum class Capability : int { base = 0, avx2 = 1, avx512 = 2 };

// The name of a level as DIN_OPS_CPU_CAPABILITY spells it: "default", "avx2" or "avx512".
const char* capability_name(Capability level);

// Whether this build has the level and this CPU (and its operating system) can run it.
bool cpu_supports(Capability level);

// The level the kernels run at, chosen once when the library is loaded. Throws (c10::Error) when
// DIN_OPS_CPU_CAPABILITY names an unknown level or one this CPU lacks; every CPU kernel then
// throws the same error.
Capability cpu_capability();

// The choice behind cpu_capability(), apart from this CPU (so the C++ tests can run it for CPUs
// they are not on): the best level `supports` admits, or the one the override `request` (the value
// of DIN_OPS_CPU_CAPABILITY; null or empty: none, case-insensitive) names; `error` says why a
// request is refused (unknown, or a level `supports` rejects, with `lacks(level)` saying why).
struct LevelChoice {
  Capability level = Capability::base;
  std::string error;  // empty: accepted
};
LevelChoice choose_level(const char* request, const std::function<bool(Capability)>& supports,
                         const std::function<std::string(Capability)>& lacks);

}  // namespace din_ops::cpu

#if defined(DIN_CPU_CAPABILITY_AVX512) || defined(DIN_CPU_CAPABILITY_AVX2)
#if !defined(__x86_64__)
#error "the avx2 / avx512 builds of the CPU loops are for x86-64 only"
#endif
#endif

// The target features of each level (the same strings for GCC's and clang's target attribute);
// cpu_supports checks each of them with __builtin_cpu_supports.
#if defined(DIN_CPU_CAPABILITY_AVX512)
#define DIN_ISA avx512
#define DIN_ISA_TARGET(pragma) \
  pragma(target("avx2,fma,bmi,bmi2,avx512f,avx512bw,avx512dq,avx512vl,avx512cd"))
#elif defined(DIN_CPU_CAPABILITY_AVX2)
#define DIN_ISA avx2
#define DIN_ISA_TARGET(pragma) pragma(target("avx2,fma,bmi,bmi2"))
#elif defined(DIN_CPU_WIDE_VECTORS_TEST)
// The C++ test csrc/tests/test_vector_widths.cpp only: the avx512 level's vector widths and
// register blocks without its instructions (the compiler splits each 64-byte vector), so that the
// lane arithmetic of that level runs and is tested on any CPU.
#define DIN_ISA wide
#elif defined(DIN_CPU_NARROW_VECTORS_TEST)
// The same test built with aarch64's vector widths and register blocks (16-byte vectors, one NEON
// register each; 8 x 3 accumulator blocks for its 32 registers) on x86-64, where the compiler keeps
// them in the 16 SSE registers and spills.
#define DIN_ISA narrow
#else
#define DIN_ISA base
#endif

#define DIN_ISA_PRAGMA(x) _Pragma(#x)
#define DIN_ISA_CLANG_PUSH(attr) \
  DIN_ISA_PRAGMA(clang attribute push(__attribute__((attr)), apply_to = function))
#define DIN_ISA_GCC_PUSH(attr) DIN_ISA_PRAGMA(GCC push_options) DIN_ISA_PRAGMA(GCC attr)
#if defined(DIN_ISA_TARGET) && defined(__clang__)
#define DIN_ISA_TARGET_PUSH DIN_ISA_TARGET(DIN_ISA_CLANG_PUSH)
#define DIN_ISA_TARGET_POP DIN_ISA_PRAGMA(clang attribute pop)
#elif defined(DIN_ISA_TARGET)
#define DIN_ISA_TARGET_PUSH DIN_ISA_TARGET(DIN_ISA_GCC_PUSH)
#define DIN_ISA_TARGET_POP DIN_ISA_PRAGMA(GCC pop_options)
#else
#define DIN_ISA_TARGET_PUSH
#define DIN_ISA_TARGET_POP
#endif

// Open / close the level's namespace and target region; everything between is compiled for it.
// Put them after the last #include.
#define DIN_ISA_BEGIN DIN_ISA_TARGET_PUSH namespace din_ops::cpu::DIN_ISA {
#define DIN_ISA_END } DIN_ISA_TARGET_POP
