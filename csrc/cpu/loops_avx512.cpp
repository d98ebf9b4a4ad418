// loops.cpp compiled for the avx512 level (isa.h); empty except on x86-64.
#if defined(__x86_64__)
#define DIN_CPU_CAPABILITY_AVX512
#include "loops.cpp"
#endif
