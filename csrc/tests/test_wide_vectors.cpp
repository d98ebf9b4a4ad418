// The register-blocked k x k kernels (winograd.cpp, direct_conv.cpp) at the avx512 level's vector
// widths and register blocks, on any CPU: this test and those two files are compiled with
// DIN_CPU_WIDE_VECTORS_TEST (isa.h), which gives them the avx512 level's 64-byte vectors (16 float /
// 8 double lanes, 8 x 3 accumulator blocks) without its instructions. The Python suite runs the
// avx512 build itself only where the CPU has AVX-512; this checks the lane arithmetic of that build
// (tile orders, shuffles, remainder blocks) everywhere, against plain double sums.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../cpu/deformable_loops.h"
#include "../cpu/direct_conv.h"
#include "../cpu/loops.h"
#include "../cpu/winograd.h"
#include "harness.h"

// The kernels of the wide build, declared as isa.cpp declares each level's (only those of
// winograd.cpp and direct_conv.cpp are defined, and only they are called).
namespace din_ops::cpu::wide {
#define DIN_KERNEL(id, ret, name, params, args) ret name params;
#include "../cpu/isa_kernels.h"
#undef DIN_KERNEL
}  // namespace din_ops::cpu::wide

namespace {

namespace k = din_ops::cpu::wide;
using din_ops::cpu::direct_block;
using din_ops::cpu::direct_part_size;
using din_ops::cpu::direct_slack;

// Values in [-1, 1) from a fixed linear congruential sequence.
struct Random {
  uint64_t state;
  double next() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return double(state >> 11) / double(1ULL << 52) - 1.0;
  }
};

// A band of cin channels of `rows` rows of width Wp (channel stride cs), random inside rows x Wp and
// zero in the `tail` values after the last channel (read past by the kernels, never used).
template <typename T>
std::vector<T> random_band(int64_t cin, int64_t cs, int64_t tail, Random& rng) {
  std::vector<T> band(cin * cs + tail, T(0));
  for (int64_t i = 0; i < cin * cs; ++i) band[i] = static_cast<T>(rng.next());
  return band;
}

// The tolerance of a float / double result with `terms` products of values of magnitude <= 1.
template <typename T>
double tolerance(int64_t terms) {
  return (sizeof(T) == 4 ? 1e-6 : 1e-14) * 4.0 * double(terms);
}

// 3 x 3 correlation (stride 1) of the band, both ways: Winograd F(2x2, 3x3) forward and weight
// gradient against double sums.
template <typename T>
void check_winograd(int64_t cin, int64_t cout, int64_t R, int64_t Wo) {
  Random rng{uint64_t(cin * 1000003 + cout * 1009 + R * 31 + Wo)};
  const int64_t Wp = Wo + 2, rows = (R + 1) / 2 * 2 + 2, cs = rows * Wp;
  const std::vector<T> band = random_band<T>(cin, cs, 2 * 64 + 2, rng);
  std::vector<T> w(cout * cin * 9), bias(cout);
  for (auto& v : w) v = static_cast<T>(rng.next());
  for (auto& v : bias) v = static_cast<T>(rng.next());
  auto in = [&](int64_t ci, int64_t r, int64_t c) { return double(band[ci * cs + r * Wp + c]); };

  // Forward: out[o, r, c] = bias[o] + sum w[o, ci, i, j] in[ci, r + i, c + j].
  std::vector<T> packed(k::winograd_weights_size(cout, cin));
  k::winograd_weights(w.data(), cout, cin, packed.data());
  std::vector<T> work(k::winograd_work_size(cout, cin, Wo, sizeof(T)));
  const int64_t ld = R * Wo;
  const T sentinel = T(12345);
  std::vector<T> out(cout * ld + 1, sentinel);
  k::winograd_forward(band.data(), cs, cin, Wp, R, Wo, packed.data(), bias.data(), cout,
                      out.data(), ld, Wo, work.data());
  int bad = 0;
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < Wo; ++c) {
        double s = bias[o];
        for (int64_t ci = 0; ci < cin; ++ci)
          for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) s += double(w[(o * cin + ci) * 9 + i * 3 + j]) * in(ci, r + i, c + j);
        const double got = out[o * ld + r * Wo + c];
        if (!din_ops::test::near(got, s, 0.0, tolerance<T>(9 * cin + 1)) && bad++ < 3) {
          DIN_CHECK_NEAR(got, s, 0.0, tolerance<T>(9 * cin + 1));
        }
      }
    }
  }
  DIN_CHECK(bad == 0);
  DIN_CHECK(out[cout * ld] == sentinel);  // nothing written past the R x Wo outputs

  // Weight gradient: gw[o, ci, i, j] = sum_{r < R, c < Wo} g[o, r, c] in[ci, r + i, c + j], with g
  // in padded width (zero at the columns past Wo and after the last row).
  const int64_t ldg = R * Wp + 64;
  std::vector<T> g(cout * ldg, T(0));
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < Wo; ++c) g[o * ldg + r * Wp + c] = static_cast<T>(rng.next());
  std::vector<T> part(k::winograd_part_size(cout, cin, sizeof(T)), T(0)), gw(cout * cin * 9);
  k::winograd_weight_grad(band.data(), cs, cin, Wp, R, Wo, g.data(), ldg, cout, part.data(),
                          work.data());
  k::winograd_weight_grad_finish(part.data(), cout, cin, gw.data());
  bad = 0;
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t ci = 0; ci < cin; ++ci) {
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
          double s = 0.0;
          for (int64_t r = 0; r < R; ++r)
            for (int64_t c = 0; c < Wo; ++c) s += double(g[o * ldg + r * Wp + c]) * in(ci, r + i, c + j);
          const double got = gw[(o * cin + ci) * 9 + i * 3 + j];
          if (!din_ops::test::near(got, s, 0.0, tolerance<T>(R * Wo)) && bad++ < 3) {
            DIN_CHECK_NEAR(got, s, 0.0, tolerance<T>(R * Wo));
          }
        }
      }
    }
  }
  DIN_CHECK(bad == 0);
}

// kh x kw correlation with dilation d by the direct kernels, forward and weight gradient.
template <typename T>
void check_direct(int64_t cin, int64_t cout, int64_t kh, int64_t kw, int64_t d, int64_t R,
                  int64_t Wo) {
  Random rng{uint64_t(cin * 7919 + cout * 104729 + kh * 13 + R * 3 + Wo)};
  const int64_t taps = kh * kw, Wp = Wo + (kw - 1) * d, rows = R + (kh - 1) * d, cs = rows * Wp;
  const int64_t L = R * Wp, B = direct_block(cout), cpad = (cout + B - 1) / B * B;
  const std::vector<T> band = random_band<T>(cin, cs, direct_slack<T>() + (kw - 1) * d, rng);
  std::vector<T> w(cout * cin * taps), bias(cpad, T(0));
  for (auto& v : w) v = static_cast<T>(rng.next());
  for (int64_t o = 0; o < cout; ++o) bias[o] = static_cast<T>(rng.next());
  std::vector<int64_t> shift(taps);
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j) shift[i * kw + j] = i * d * Wp + j * d;
  auto in = [&](int64_t ci, int64_t q) { return double(band[ci * cs + q]); };

  std::vector<T> packed(cpad * cin * taps);
  k::direct_pack(w.data(), cout, cin, taps, packed.data());
  const int64_t ld = L + direct_slack<T>();
  std::vector<T> out(cpad * ld, T(0));
  k::direct_forward(band.data(), cs, cin, shift.data(), taps, packed.data(), bias.data(), cout, L,
                    out.data(), ld);
  int bad = 0;
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < Wo; ++c) {
        const int64_t q = r * Wp + c;
        double s = bias[o];
        for (int64_t ci = 0; ci < cin; ++ci)
          for (int64_t t = 0; t < taps; ++t) s += double(w[(o * cin + ci) * taps + t]) * in(ci, q + shift[t]);
        if (!din_ops::test::near(out[o * ld + q], s, 0.0, tolerance<T>(taps * cin + 1)) && bad++ < 3) {
          DIN_CHECK_NEAR(out[o * ld + q], s, 0.0, tolerance<T>(taps * cin + 1));
        }
      }
    }
  }
  DIN_CHECK(bad == 0);

  // Weight gradient over the K = cin * taps offsets.
  constexpr int64_t V = 64 / sizeof(T);
  const int64_t K = cin * taps, ldg = (L + V - 1) / V * V;
  std::vector<T> g(cout * ldg, T(0));
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < Wo; ++c) g[o * ldg + r * Wp + c] = static_cast<T>(rng.next());
  std::vector<int64_t> off(K);
  for (int64_t ci = 0; ci < cin; ++ci)
    for (int64_t t = 0; t < taps; ++t) off[ci * taps + t] = ci * cs + shift[t];
  std::vector<T> part(direct_part_size<T>(cout, K), T(0)), gw(cout * K);
  k::direct_weight_grad(g.data(), ldg, cout, band.data(), off.data(), K, L, part.data());
  k::direct_reduce(part.data(), cout * K, gw.data());
  bad = 0;
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t kk = 0; kk < K; ++kk) {
      double s = 0.0;
      for (int64_t q = 0; q < L; ++q) s += double(g[o * ldg + q]) * in(0, off[kk] + q);
      if (!din_ops::test::near(gw[o * K + kk], s, 0.0, tolerance<T>(L)) && bad++ < 3) {
        DIN_CHECK_NEAR(gw[o * K + kk], s, 0.0, tolerance<T>(L));
      }
    }
  }
  DIN_CHECK(bad == 0);
}

// Channel counts: the grouped 3x3 g4 at C = 32 (8 x 8), remainders of the register blocks (3, 5,
// 7, 20), two vectors of output channels (16, 20); widths: below one vector of tiles, several, and
// over the 96-tile column blocks (333 columns = 167 tiles); one and several tile rows.
DIN_TEST(winograd_float_matches_double_sums) {
  for (auto [cin, cout] : {std::pair<int64_t, int64_t>{8, 8}, {3, 5}, {16, 16}, {7, 20}, {1, 2}}) {
    for (auto [R, Wo] : {std::pair<int64_t, int64_t>{1, 7}, {2, 40}, {5, 333}}) {
      check_winograd<float>(cin, cout, R, Wo);
    }
  }
}

DIN_TEST(winograd_double_matches_double_sums) {
  for (auto [cin, cout] : {std::pair<int64_t, int64_t>{8, 8}, {5, 3}, {9, 12}}) {
    for (auto [R, Wo] : {std::pair<int64_t, int64_t>{1, 9}, {3, 35}, {4, 200}}) {
      check_winograd<double>(cin, cout, R, Wo);
    }
  }
}

DIN_TEST(direct_float_matches_double_sums) {
  check_direct<float>(8, 8, 3, 3, 1, 3, 30);
  check_direct<float>(3, 5, 3, 3, 2, 2, 17);
  check_direct<float>(4, 12, 5, 5, 1, 2, 50);
  check_direct<float>(2, 3, 1, 3, 1, 4, 9);
}

DIN_TEST(direct_double_matches_double_sums) {
  check_direct<double>(8, 8, 3, 3, 1, 3, 30);
  check_direct<double>(5, 9, 3, 3, 2, 2, 21);
}

}  // namespace

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
