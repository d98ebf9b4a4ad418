// The CPU loops whose vector widths and register blocks differ between builds, on any CPU: the
// register-blocked k x k kernels (winograd.cpp, direct_conv.cpp), the deformable loops
// (deformable_loops.cpp) and the streamed elementwise loops (loops.cpp), against plain double sums
// (the transposes exactly, the streamed loops bit for bit against their cached form). This test and
// those files are compiled together, in one of three ways (isa.h):
// - DIN_CPU_WIDE_VECTORS_TEST (namespace wide): the avx512 level's 64-byte vectors and 8 x 3
//   accumulator blocks without its instructions (the compiler splits each vector);
// - DIN_CPU_NARROW_VECTORS_TEST (namespace narrow): aarch64's 16-byte vectors and blocks, on x86-64;
// - for aarch64 with no definition (namespace base): the aarch64 build itself, run under qemu-user
//   where there is no aarch64 CPU (.ci/aarch64_run.sh).
// Built with the extension's optimization flags (-O3, and Python's -fwrapv, which setuptools adds):
// they decide where the compiler fuses multiplies and adds.
// The Python suite runs the x86-64 levels themselves only where the CPU has them; this checks the
// lane arithmetic of the other builds (tile orders, shuffles, remainder blocks) everywhere.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../cpu/deformable_loops.h"
#include "../cpu/direct_conv.h"
#include "../cpu/isa.h"
#include "../cpu/loops.h"
#include "../cpu/winograd.h"
#include "harness.h"

// The kernels of this build, declared as isa.cpp declares each level's (only those of the four
// files above are defined, and only they are called).
namespace din_ops::cpu::DIN_ISA {
#define DIN_KERNEL(id, ret, name, params, args) ret name params;
#include "../cpu/isa_kernels.h"
#undef DIN_KERNEL
}  // namespace din_ops::cpu::DIN_ISA

namespace {

namespace k = din_ops::cpu::DIN_ISA;
namespace bl = din_ops::bilinear;
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

// Transposes: every element copied exactly, for whole tiles and both edges.
template <typename T>
void check_transpose(int64_t rows, int64_t cols) {
  Random rng{uint64_t(rows * 131 + cols)};
  const int64_t ss = cols + 3, ds = rows + 5;
  std::vector<T> src(rows * ss), dst(cols * ds, T(-7));
  for (auto& v : src) v = static_cast<T>(rng.next());
  k::transpose_matrix(src.data(), ss, rows, cols, dst.data(), ds);
  int bad = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) bad += dst[j * ds + i] != src[i * ss + j];
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = rows; i < ds; ++i) bad += dst[j * ds + i] != T(-7);  // nothing past the rows
  DIN_CHECK(bad == 0);

  // gather_channels: channels [c0, c0 + cb) of three P x C planes, summed in part order.
  const int64_t P = rows * 7 + 1, C = cols + 4, c0 = 2, cb = std::min<int64_t>(cols, 16);
  std::vector<T> planes(3 * P * C), out(cb * P, T(0));
  for (auto& v : planes) v = static_cast<T>(rng.next());
  const T* parts[3] = {planes.data(), planes.data() + P * C, planes.data() + 2 * P * C};
  k::gather_channels(parts, 3, P, C, c0, cb, out.data());
  bad = 0;
  for (int64_t cc = 0; cc < cb; ++cc) {
    for (int64_t i = 0; i < P; ++i) {
      const T want = (parts[0][i * C + c0 + cc] + parts[1][i * C + c0 + cc]) + parts[2][i * C + c0 + cc];
      bad += out[cc * P + i] != want;
    }
  }
  DIN_CHECK(bad == 0);
}

// The deformable column loops on sample points of an H x W plane of Cs channels (channels-last,
// one zero row past it for outside corners): channels-last columns (cs = 1) and one matrix per
// channel (cs > 1), forward columns and every backward output against double sums.
template <typename T>
void check_deformable(int64_t Cs, bool contiguous) {
  Random rng{uint64_t(Cs * 17 + contiguous)};
  const int64_t H = 5, W = 6, xs = Cs + 1, KK = 3, Lt = 7, outside = H * W;
  std::vector<T> xg((H * W + 1) * xs, T(0)), gxg((H * W + 1) * xs, T(0));
  for (int64_t p = 0; p < H * W; ++p)
    for (int64_t c = 0; c < Cs; ++c) xg[p * xs + c] = static_cast<T>(rng.next());
  std::vector<bl::Corners<T>> pts(KK * Lt);
  std::vector<T> mv(KK * Lt);
  for (int64_t e = 0; e < KK * Lt; ++e) {
    // Inside, across the border and (every seventh) outside the plane.
    const T y = e % 7 == 6 ? T(H + 1) : static_cast<T>((rng.next() + 1) * 0.5 * (H + 1) - 1);
    const T x = static_cast<T>((rng.next() + 1) * 0.5 * (W + 1) - 1);
    pts[e] = bl::corners<T>(y, x, H, W, outside);
    mv[e] = static_cast<T>(rng.next());
  }
  // Column layout: channels-last (cs = 1, ldt = Cs, ldl = KK * Cs) or a matrix per channel.
  const int64_t cs = contiguous ? 1 : KK * Lt, ldt = contiguous ? Cs : Lt, ldl = contiguous ? KK * Cs : 1;
  auto at = [&](int64_t t, int64_t l, int64_t c) { return l * ldl + t * ldt + c * cs; };
  auto sample = [&](const bl::Corners<T>& p, int64_t c, const T* f) {
    double v = 0.0;
    for (int q = 0; q < 4; ++q) v += double(f[q]) * double(xg[p.index[q] * xs + c]);
    return v;
  };
  const double tol = tolerance<T>(4);

  std::vector<T> col(KK * Lt * Cs, T(0));
  k::deform_columns(xg.data(), xs, pts.data(), KK, Lt, Cs, col.data(), ldl, ldt, cs);
  int bad = 0;
  for (int64_t t = 0; t < KK; ++t)
    for (int64_t l = 0; l < Lt; ++l)
      for (int64_t c = 0; c < Cs; ++c) {
        const double want = sample(pts[t * Lt + l], c, pts[t * Lt + l].weight);
        bad += !din_ops::test::near(col[at(t, l, c)], want, 0.0, tol);
      }
  DIN_CHECK(bad == 0);

  std::vector<T> gcol(KK * Lt * Cs), col2(KK * Lt * Cs, T(0));
  for (auto& v : gcol) v = static_cast<T>(rng.next());
  std::vector<T> gmk(KK * Lt, T(0.5)), goy(KK * Lt, T(0.25)), gox(KK * Lt, T(-0.5));
  k::deform_points_backward(xg.data(), gxg.data(), xs, pts.data(), mv.data(), KK, Lt, Cs,
                            gcol.data(), col2.data(), ldl, ldt, cs, gmk.data(), goy.data(),
                            gox.data());
  std::vector<double> want_gx((H * W + 1) * xs, 0.0);
  bad = 0;
  for (int64_t t = 0; t < KK; ++t) {
    for (int64_t l = 0; l < Lt; ++l) {
      const int64_t e = t * Lt + l;
      const bl::Corners<T>& p = pts[e];
      double sv = 0.0, sy = 0.0, sx = 0.0;
      for (int64_t c = 0; c < Cs; ++c) {
        const double g = gcol[at(t, l, c)];
        bad += !din_ops::test::near(col2[at(t, l, c)], mv[e] * sample(p, c, p.weight), 0.0, tol);
        sv += g * sample(p, c, p.weight);
        sy += g * sample(p, c, p.dy);
        sx += g * sample(p, c, p.dx);
        for (int q = 0; q < 4; ++q) want_gx[p.index[q] * xs + c] += double(mv[e]) * p.weight[q] * g;
      }
      bad += !din_ops::test::near(gmk[e], 0.5 + sv, 0.0, tolerance<T>(8 * Cs));
      bad += !din_ops::test::near(goy[e], 0.25 + mv[e] * sy, 0.0, tolerance<T>(8 * Cs));
      bad += !din_ops::test::near(gox[e], -0.5 + mv[e] * sx, 0.0, tolerance<T>(8 * Cs));
    }
  }
  for (int64_t i = 0; i < H * W * xs; ++i)
    bad += !din_ops::test::near(gxg[i], want_gx[i], 0.0, tolerance<T>(4 * KK * Lt));
  DIN_CHECK(bad == 0);
}

// The elementwise loops' streamed form (non-temporal stores: math::'s formula for the values before
// the first vector-aligned output and after the last whole vector, vmath::'s between) against the
// cached form, bit for bit, in the chunks of 128 values the spatially adaptive op runs them in,
// from outputs at every 8-byte alignment: the Python suite checks this only at the x86-64 levels.
template <typename T>
void check_streamed_equals_cached() {
  Random rng{77};
  const int64_t n = 129 * 127, pad = 16;
  std::vector<T> x(n + pad), gy(n + pad), gamma(n + pad), beta(n + pad);
  for (auto* v : {&x, &gy, &gamma, &beta})
    for (auto& e : *v) e = static_cast<T>(3 * rng.next());
  const T hi = T(0.25), lo = T(-1e-3), r = T(1.375), b = T(0.5), mg = T(0.125), mgxh = T(-0.3);
  int bad = 0;
  auto differ = [](const std::vector<T>& a, const std::vector<T>& c) {
    return std::memcmp(a.data(), c.data(), a.size() * sizeof(T)) != 0;
  };
  for (int64_t off = 0; off < 4; ++off) {
    // Each form of each loop, for beta (or gamma) given and absent.
    for (int form = 0; form < 6; ++form) {
      std::vector<T> out[2], out2[2];
      for (int stream = 0; stream < 2; ++stream) {
        out[stream].assign(n + pad, T(0));
        out2[stream].assign(n + pad, T(0));
        for (int64_t i = 0; i < n; i += 128) {
          const int64_t len = std::min<int64_t>(128, n - i), o = off + i;
          T *y = out[stream].data() + o, *y2 = out2[stream].data() + o;
          const T* bp = form % 2 == 0 ? beta.data() + o : nullptr;
          switch (form / 2) {
            case 0:
              k::normalize_affine(x.data() + o, len, hi, lo, r, gamma.data() + o, bp, b, y, stream);
              break;
            case 1:
              k::normalize_scale_shift(x.data() + o, len, hi, lo, r, bp, b, y, stream);
              break;
            default:
              if (bp != nullptr) {
                k::normalize_affine_backward(gy.data() + o, x.data() + o, gamma.data() + o, len, hi,
                                             lo, r, mg, mgxh, y, y2, stream);
              } else {
                k::normalize_backward_scaled(gy.data() + o, x.data() + o, len, hi, lo, r, b, mg,
                                             mgxh, y, stream);
              }
          }
        }
      }
      if (differ(out[0], out[1]) || differ(out2[0], out2[1])) {
        ++bad;
        std::fprintf(stderr, "  streamed != cached: form %d, offset %lld\n", form, (long long)off);
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

// Tiles of 4 x 4 (16-byte float vectors), 8 x 8 (32 bytes) and 16 x 16 (64 bytes), with edges.
DIN_TEST(transposes_and_gathers_are_exact) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{8, 8}, {13, 11}, {3, 17}, {32, 16}, {1, 5}}) {
    check_transpose<float>(rows, cols);
    check_transpose<double>(rows, cols);
  }
}

// Channel runs below one vector, of several and with a remainder.
DIN_TEST(deformable_loops_match_double_sums) {
  for (int64_t Cs : {1, 3, 8, 19}) {
    for (bool contiguous : {true, false}) {
      check_deformable<float>(Cs, contiguous);
      check_deformable<double>(Cs, contiguous);
    }
  }
}

DIN_TEST(streamed_loops_equal_cached_loops_bit_for_bit) {
  check_streamed_equals_cached<float>();
  check_streamed_equals_cached<double>();
}

}  // namespace

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
