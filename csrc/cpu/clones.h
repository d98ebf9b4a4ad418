// Function multiversioning for the CPU loops: a function marked DIN_CLONES is compiled for AVX-512
// (x86-64-v4), AVX2 + FMA (x86-64-v3) and baseline x86-64, and the dynamic loader picks the one for
// the CPU it runs on, so the package is never built with -march=native. DIN_INLINE marks the
// helpers inlined into them (compiled for each target with the function that uses them).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define DIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DIN_CLONES
#endif
#define DIN_INLINE __attribute__((always_inline)) inline
