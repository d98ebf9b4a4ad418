// Winograd F(2x2, 3x3) kernels (see winograd.h for the formulas). The input and output transforms
// are vectorized across tiles: one vector holds the same element of n horizontally adjacent tiles
// (n = lanes), gathered from two n-value loads of a band row with even/odd shuffles within 16-byte
// chunks (one instruction each; a pick across the whole vector costs two or three on AVX2). The
// tiles then sit in the vector in the order of tile_slot, which the output transform undoes with
// the matching in-chunk interleave, and the weight gradient follows for the output gradient's
// tiles; the GEMMs do not care about the order of the tiles.
#include "winograd.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "direct_conv.h"
#include "isa.h"
#include "vec.h"

DIN_ISA_BEGIN
namespace {

using simd::Pick;
using simd::shuffle;
using simd::kLanes;
using simd::loadu;
using simd::storeu;
using simd::vec_t;

using simd::kAcc;
using simd::kRows;

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The widest block of tiles in one tile row (see Tiles).
constexpr int64_t kBlockTiles = 96;

// Output channels of one GEMM register block and tiles per block (`lanes` per vector).
constexpr int rows_for(int64_t cout) {
  return static_cast<int>(std::min<int64_t>(direct_block(cout), kRows));
}
constexpr int64_t gemm_step(int64_t cout, int64_t lanes) { return kAcc / rows_for(cout) * lanes; }

// Geometry of the tile blocks of one band.
struct Tiles {
  int64_t TW, TWp, TH, tb, TC, TB, cpad, ldm;
  Tiles(int64_t cout, int64_t R, int64_t Wo, int64_t lanes, int64_t step) {
    TW = (Wo + 1) / 2;            // tiles per tile row
    TWp = round_up(TW, lanes);    // ... rounded up to whole vectors
    TH = (R + 1) / 2;             // tile rows
    // Blocks of ~64 tiles or more: whole tile rows, tb of them, a multiple of the GEMM's pixel
    // step where that is close (no partial blocks); rows wider than kBlockTiles are cut into
    // blocks of TC columns instead, so that a block's transformed input and products (16 x
    // channels x TB values each) stay in L1 rather than streaming through L2.
    TC = TWp;
    if (TWp > kBlockTiles) TC = std::max<int64_t>(step, kBlockTiles / step * step);
    tb = std::max<int64_t>(1, 64 / TC);
    for (int64_t t = tb; t <= 2 * tb; ++t) {
      if (t * TC % step == 0) {
        tb = t;
        break;
      }
    }
    TB = tb * TC;
    cpad = round_up(cout, direct_block(cout));
    ldm = round_up(TB, step);     // row stride of the transformed input and of the products
    line = lanes;
  }
  // Strides between the 16 transformed elements of V (cin rows), M (cpad rows) and Zt (TB tiles
  // of cop channels): one cache line more than their size, so the 16 streams a transform writes do
  // not all fall in the same L1 set (their sizes are often multiples of 4 KiB).
  int64_t vs(int64_t cin) const { return cin * ldm + line; }
  int64_t ms() const { return cpad * ldm + line; }
  int64_t zs(int64_t cop) const { return TB * cop + line; }
  int64_t line;
};

// The lane that tile t (0 <= t < n, the t-th of n adjacent tiles) takes in a transformed vector:
// with c lanes per 16-byte chunk and h = c / 2, chunk k holds tiles k h .. k h + h - 1 (from the
// first load) and then n / 2 + k h .. (from the second); e.g. n = 8, c = 4: 0 1 4 5 | 2 3 6 7.
template <typename T>
constexpr int64_t tile_slot(int64_t t) {
  constexpr int64_t n = kLanes<T>, c = 16 / sizeof(T), h = c / 2;
  return t < n / 2 ? t / h * c + t % h : (t - n / 2) / h * c + h + (t - n / 2) % h;
}

// One block of tiles: tile rows [th0, th1) x tile columns [c0, c1) (c1 - c0: whole vectors), tile
// t = (th - th0) * w() + (column - c0) in V, M and Zt (within each group of n, at tile_slot).
struct Block {
  int64_t th0, th1, c0, c1;
  int64_t w() const { return c1 - c0; }
  int64_t tiles() const { return (th1 - th0) * w(); }
};

// Calls f(block) for the blocks of k in order.
template <typename F>
DIN_INLINE void for_blocks(const Tiles& k, F&& f) {
  for (int64_t th0 = 0; th0 < k.TH; th0 += k.tb)
    for (int64_t c0 = 0; c0 < k.TWp; c0 += k.TC)
      f(Block{th0, std::min(k.TH, th0 + k.tb), c0, std::min(k.TWp, c0 + k.TC)});
}

// The transformed input of the tiles of block b of the band, per element xi (at stride k.vs(cin)):
// the vector of tiles t .. t + n - 1 of channel ci at V + ci * cstride + t / n * vstride. The
// forward's GEMM takes channel rows (cstride = k.ldm, vstride = n: V[xi][ci][t]); the weight
// gradient's takes the channels of n tiles together (cstride = n, vstride = cin * n), so that its
// broadcasts of one tile's channels sit at fixed offsets from one pointer.
template <typename T>
DIN_INLINE void input_transform(const T* in, int64_t cs, int64_t cin, int64_t Wp,
                                const Tiles& k, const Block& b, int64_t cstride, int64_t vstride,
                                T* V) {
  using Vt = vec_t<T>;
  constexpr int n = kLanes<T>;
  for (int64_t ci = 0; ci < cin; ++ci) {
    for (int64_t th = b.th0; th < b.th1; ++th) {
      for (int64_t tv = b.c0; tv < b.c1; tv += n) {
        const T* base = in + ci * cs + 2 * th * Wp + 2 * tv;
        Vt d[4][4];
        for (int r = 0; r < 4; ++r) {
          const T* row = base + r * Wp;
          const Vt a = loadu(row), b = loadu(row + n), a2 = loadu(row + 2), b2 = loadu(row + n + 2);
          d[r][0] = shuffle<Pick::even16>(a, b);  // tiles in tile_slot order
          d[r][1] = shuffle<Pick::odd16>(a, b);
          d[r][2] = shuffle<Pick::even16>(a2, b2);
          d[r][3] = shuffle<Pick::odd16>(a2, b2);
        }
        Vt t[4][4];
        for (int c = 0; c < 4; ++c) {  // B^T d
          t[0][c] = d[0][c] - d[2][c];
          t[1][c] = d[1][c] + d[2][c];
          t[2][c] = d[2][c] - d[1][c];
          t[3][c] = d[1][c] - d[3][c];
        }
        T* dst = V + ci * cstride + ((th - b.th0) * b.w() + (tv - b.c0)) / n * vstride;
        const int64_t xs = k.vs(cin);  // stride between the 16 transformed elements
        for (int i = 0; i < 4; ++i) {  // (B^T d) B
          storeu(dst + (4 * i + 0) * xs, t[i][0] - t[i][2]);
          storeu(dst + (4 * i + 1) * xs, t[i][1] + t[i][2]);
          storeu(dst + (4 * i + 2) * xs, t[i][2] - t[i][1]);
          storeu(dst + (4 * i + 3) * xs, t[i][1] - t[i][3]);
        }
      }
    }
  }
}

// Y = A^T M A (+ bias) for the tiles of block b: rows < R and columns < Wo of the output (row
// stride rs).
template <typename T>
DIN_INLINE void output_transform(const T* M, const Tiles& k, const Block& b, int64_t rs,
                                 int64_t R, int64_t Wo, const T* bias, int64_t cout, T* out,
                                 int64_t ld) {
  using Vt = vec_t<T>;
  constexpr int n = kLanes<T>;
  const int64_t xs = k.ms();
  for (int64_t co = 0; co < cout; ++co) {
    const Vt bv = -Vt{} + (bias != nullptr ? bias[co] : T(0));
    for (int64_t th = b.th0; th < b.th1; ++th) {
      for (int64_t tv = b.c0; tv < b.c1; tv += n) {
        const T* src = M + co * k.ldm + (th - b.th0) * b.w() + (tv - b.c0);
        Vt s[2][4];
        for (int c = 0; c < 4; ++c) {  // A^T M
          const Vt m0 = loadu(src + (0 + c) * xs), m1 = loadu(src + (4 + c) * xs);
          const Vt m2 = loadu(src + (8 + c) * xs), m3 = loadu(src + (12 + c) * xs);
          s[0][c] = m0 + m1 + m2;
          s[1][c] = m1 - m2 - m3;
        }
        const int64_t count = std::min<int64_t>(2 * n, Wo - 2 * tv);
        if (count <= 0) continue;  // tiles past the last column
        for (int i = 0; i < 2 && 2 * th + i < R; ++i) {  // (A^T M) A: two rows of 2 n values
          const Vt y0 = s[i][0] + s[i][1] + s[i][2] + bv;
          const Vt y1 = s[i][1] - s[i][2] - s[i][3] + bv;
          // Back from tile_slot order: columns 0 .. n - 1 and n .. 2 n - 1 of the tiles' outputs.
          const Vt first = shuffle<Pick::lo16>(y0, y1), second = shuffle<Pick::hi16>(y0, y1);
          T* dst = out + co * ld + (2 * th + i) * rs + 2 * tv;
          if (count == 2 * n) {
            storeu(dst, first);
            storeu(dst + n, second);
          } else {
            T buf[2 * n];
            storeu(buf, first);
            storeu(buf + n, second);
            std::copy_n(buf, count, dst);
          }
        }
      }
    }
  }
}

// M[o, t] = sum_ci U[o, ci] V[ci, t] for one of the 16 transformed elements: BR output channels x P
// vectors of tiles in registers (vec.h's budget), the input channels streamed (rows of V at stride
// ldm); the BR-channel parts of a packed block of B one after the other over the same tiles.
template <typename T, int B>
DIN_INLINE void gemm(const T* V, int64_t cin, const T* packed, int64_t cout, int64_t L,
                     int64_t ldm, T* M) {
  using Vt = vec_t<T>;
  constexpr int BR = B < kRows ? B : kRows;
  constexpr int n = kLanes<T>, P = kAcc / BR;
  for (int64_t blk = 0; blk * B < cout; ++blk) {
    for (int64_t q0 = 0; q0 < L; q0 += P * n) {
      for (int o0 = 0; o0 < B; o0 += BR) {
        Vt acc[BR][P] = {};
        const T* w = packed + blk * cin * B + o0;
        const T* src = V + q0;
        for (int64_t ci = 0; ci < cin; ++ci, src += ldm, w += B) {
          Vt xv[P];
          for (int p = 0; p < P; ++p) xv[p] = loadu(src + p * n);
          for (int o = 0; o < BR; ++o) {
            const Vt wv = -Vt{} + w[o];
            for (int p = 0; p < P; ++p) acc[o][p] = acc[o][p] + wv * xv[p];
          }
        }
        // Unrolled by pragma, here and in direct_conv.cpp: GCC 12 otherwise keeps acc in a stack
        // array (zeroed by `rep stos`) and copies it out in a loop, which cost ~40% of the AVX2
        // block's time when cin is small (8 channels per group).
        T* dst = M + (blk * B + o0) * ldm + q0;
#pragma GCC unroll 8
        for (int o = 0; o < BR; ++o)
#pragma GCC unroll 24
          for (int p = 0; p < P; ++p) storeu(dst + o * ldm + p * n, acc[o][p]);
      }
    }
  }
}

template <typename T>
DIN_INLINE void gemms(const T* V, int64_t cin, const T* packed, int64_t cout, int64_t L,
                      const Tiles& k, T* M) {
  for (int xi = 0; xi < 16; ++xi) {
    const T* v = V + xi * k.vs(cin);
    const T* u = packed + xi * k.cpad * cin;
    T* m = M + xi * k.ms();
    switch (direct_block(cout)) {
      case 8: gemm<T, 8>(v, cin, u, cout, L, k.ldm, m); break;
      case 4: gemm<T, 4>(v, cin, u, cout, L, k.ldm, m); break;
      case 2: gemm<T, 2>(v, cin, u, cout, L, k.ldm, m); break;
      default: gemm<T, 1>(v, cin, u, cout, L, k.ldm, m); break;
    }
  }
}

template <typename T>
DIN_INLINE void forward_impl(const T* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R,
                             int64_t Wo, const T* packed, const T* bias, int64_t cout, T* out,
                             int64_t ld, int64_t rs, T* work) {
  const Tiles k(cout, R, Wo, kLanes<T>, gemm_step(cout, kLanes<T>));
  // V and M at a 64-byte boundary: their rows (ldm values) then start on cache lines.
  T* V = work + (-(reinterpret_cast<uintptr_t>(work) / sizeof(T))) % kLanes<T>;
  T* M = V + 16 * k.vs(cin);
  for_blocks(k, [&](const Block& b) {
    input_transform(in, cs, cin, Wp, k, b, k.ldm, kLanes<T>, V);
    gemms(V, cin, packed, cout, b.tiles(), k, M);
    output_transform(M, k, b, rs, R, Wo, bias, cout, out, ld);
  });
}

// The output gradient of block b channels-last: gt[(r * 2 w + c) * cop + o] for the block's rows
// r < 2 (th1 - th0) and columns c < 2 w (zero past row R, column Wo and channel cout).
template <typename T>
DIN_INLINE void grad_channels_last(const T* g, int64_t ldg, int64_t cout, int64_t cop,
                                   int64_t Wp, int64_t R, int64_t Wo, const Block& b, T* gt) {
  using Vt = vec_t<T>;
  constexpr int n = kLanes<T>;
  const int64_t cols = 2 * b.w();
  for (int64_t r = 2 * b.th0; r < 2 * b.th1; ++r) {
    T* dst_row = gt + (r - 2 * b.th0) * cols * cop;
    for (int64_t c0 = 2 * b.c0; c0 < 2 * b.c1; c0 += n) {
      for (int64_t o0 = 0; o0 < cop; o0 += n) {
        Vt v[n];
        for (int i = 0; i < n; ++i) {
          const int64_t o = o0 + i;
          if (o < cout && r < R && c0 < Wo) {
            v[i] = loadu(g + o * ldg + r * Wp + c0);
            if (c0 + n > Wo) {
              for (int l = 0; l < n; ++l) {
                if (c0 + l >= Wo) v[i][l] = T(0);
              }
            }
          } else {
            v[i] = Vt{};
          }
        }
        simd::transpose(v);
        for (int l = 0; l < n; ++l) storeu(dst_row + (c0 - 2 * b.c0 + l) * cop + o0, v[l]);
      }
    }
  }
}

// Zt[xi][t][o] = (A g A^T)[xi] for the tiles t of block b, vectorized over channels; the tiles in
// the order of the input transform's vectors (tile_slot within each group of n).
template <typename T>
DIN_INLINE void grad_transform(const T* gt, int64_t cop, const Tiles& k, const Block& b, T* Zt) {
  using Vt = vec_t<T>;
  constexpr int n = kLanes<T>;
  const int64_t cols = 2 * b.w(), xs = k.zs(cop);
  for (int64_t th = 0; th < b.th1 - b.th0; ++th) {
    for (int64_t tw = 0; tw < b.w(); ++tw) {
      const T* p0 = gt + ((2 * th) * cols + 2 * tw) * cop;
      const T* p1 = p0 + cols * cop;
      T* dst = Zt + (th * b.w() + tw / n * n + tile_slot<T>(tw % n)) * cop;
      for (int64_t o = 0; o < cop; o += n) {
        const Vt g00 = loadu(p0 + o), g01 = loadu(p0 + cop + o);
        const Vt g10 = loadu(p1 + o), g11 = loadu(p1 + cop + o);
        const Vt h[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11}, {-g10, -g11}};
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {  // (A g) A^T (unrolled: GCC 12 keeps h on the stack otherwise)
          storeu(dst + (4 * i + 0) * xs + o, h[i][0]);
          storeu(dst + (4 * i + 1) * xs + o, h[i][0] + h[i][1]);
          storeu(dst + (4 * i + 2) * xs + o, h[i][0] - h[i][1]);
          storeu(dst + (4 * i + 3) * xs + o, -h[i][1]);
        }
      }
    }
  }
}

// Input channels of one weight-gradient register block: with 2 vectors of output channels, 8 x 2
// accumulators on AVX-512 (16 of the 32 registers) and 6 x 2 on AVX2 (12 of 16); with one vector,
// 8 on both (on AVX2 the 6 of the two-vector block left 8 input channels as 6 + 2, the 2 computed
// in a block of 6).
template <int CV>
constexpr int grad_rows() {
  return CV == 1 ? 8 : kAcc >= 24 ? 8 : 6;
}

// part[xi][ci][o] += sum_t V[xi][ci][t] Zt[xi][t][o]: NR input channels x CV vectors of output
// channels in registers, the tiles streamed. V: the block's first channel in the weight gradient's
// layout (input_transform: tile t of channel i at V[t / n * vstride + i * n + t % n]); L: a
// multiple of n.
template <typename T, int CV, int NR>
DIN_INLINE void grad_gemm_block(const T* V, int64_t vstride, const T* Zt, int64_t cop, int64_t L,
                                T* part) {
  using Vt = vec_t<T>;
  constexpr int n = kLanes<T>;
  Vt acc[NR][CV] = {};
  for (int64_t t0 = 0; t0 < L; t0 += n, V += vstride) {
#pragma GCC unroll 16
    for (int l = 0; l < n; ++l, Zt += cop) {
      Vt z[CV];
      for (int c = 0; c < CV; ++c) z[c] = loadu(Zt + c * n);
      for (int i = 0; i < NR; ++i) {
        const Vt b = -Vt{} + V[i * n + l];
        for (int c = 0; c < CV; ++c) acc[i][c] = acc[i][c] + b * z[c];
      }
    }
  }
  for (int i = 0; i < NR; ++i) {
    for (int c = 0; c < CV; ++c) {
      T* p = part + i * cop + c * n;
      storeu(p, loadu(p) + acc[i][c]);
    }
  }
}

// grad_gemm_block over the input channels [0, cin): blocks of grad_rows<CV>() and one block of the
// exact remainder (no rows computed twice).
template <typename T, int CV>
DIN_INLINE void grad_gemm(const T* V, int64_t cin, const T* Zt, int64_t cop, int64_t L, T* part) {
  constexpr int NR = grad_rows<CV>(), n = kLanes<T>;
  const int64_t vstride = cin * n;
  int64_t ci = 0;
  for (; ci + NR <= cin; ci += NR) {
    grad_gemm_block<T, CV, NR>(V + ci * n, vstride, Zt, cop, L, part + ci * cop);
  }
  const T* v = V + ci * n;
  T* p = part + ci * cop;
  switch (cin - ci) {
    case 0: break;
    case 1: grad_gemm_block<T, CV, 1>(v, vstride, Zt, cop, L, p); break;
    case 2: grad_gemm_block<T, CV, 2>(v, vstride, Zt, cop, L, p); break;
    case 3: grad_gemm_block<T, CV, 3>(v, vstride, Zt, cop, L, p); break;
    case 4: grad_gemm_block<T, CV, 4>(v, vstride, Zt, cop, L, p); break;
    case 5: grad_gemm_block<T, CV, 5>(v, vstride, Zt, cop, L, p); break;
    case 6: grad_gemm_block<T, CV, 6>(v, vstride, Zt, cop, L, p); break;
    default: grad_gemm_block<T, CV, 7>(v, vstride, Zt, cop, L, p); break;
  }
}

template <typename T>
DIN_INLINE void weight_grad_impl(const T* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R,
                                 int64_t Wo, const T* g, int64_t ldg, int64_t cout, T* part,
                                 T* work) {
  constexpr int n = kLanes<T>;
  const Tiles k(cout, R, Wo, n, gemm_step(cout, n));
  const int64_t cop = round_up(cout, n);
  T* V = work + (-(reinterpret_cast<uintptr_t>(work) / sizeof(T))) % n;
  T* Zt = V + 16 * k.vs(cin);
  T* gt = Zt + 16 * k.zs(cop);
  for_blocks(k, [&](const Block& b) {
    const int64_t L = b.tiles();
    input_transform(in, cs, cin, Wp, k, b, n, cin * n, V);
    grad_channels_last(g, ldg, cout, cop, Wp, R, Wo, b, gt);
    grad_transform(gt, cop, k, b, Zt);
    for (int xi = 0; xi < 16; ++xi) {
      const T* z = Zt + xi * k.zs(cop);
      const T* v = V + xi * k.vs(cin);
      T* p = part + xi * cin * cop;
      int64_t o = 0;
      for (; o + 2 * n <= cop; o += 2 * n) grad_gemm<T, 2>(v, cin, z + o, cop, L, p + o);
      if (o < cop) grad_gemm<T, 1>(v, cin, z + o, cop, L, p + o);
    }
  });
}

template <typename T>
void weight_grad_finish_impl(const T* part, int64_t cout, int64_t cin, T* gw) {
  const int64_t cop = round_up(cout, kLanes<T>);
  for (int64_t o = 0; o < cout; ++o) {
    for (int64_t ci = 0; ci < cin; ++ci) {
      double s[4][4], a[3][4];
      for (int xi = 0; xi < 16; ++xi) s[xi / 4][xi % 4] = part[(xi * cin + ci) * cop + o];
      for (int j = 0; j < 4; ++j) {  // G^T s
        a[0][j] = s[0][j] + 0.5 * (s[1][j] + s[2][j]);
        a[1][j] = 0.5 * (s[1][j] - s[2][j]);
        a[2][j] = 0.5 * (s[1][j] + s[2][j]) + s[3][j];
      }
      T* d = gw + (o * cin + ci) * 9;
      for (int u = 0; u < 3; ++u) {  // (G^T s) G
        d[u * 3 + 0] = static_cast<T>(a[u][0] + 0.5 * (a[u][1] + a[u][2]));
        d[u * 3 + 1] = static_cast<T>(0.5 * (a[u][1] - a[u][2]));
        d[u * 3 + 2] = static_cast<T>(0.5 * (a[u][1] + a[u][2]) + a[u][3]);
      }
    }
  }
}

template <typename T>
void weights_impl(const T* w, int64_t cout, int64_t cin, T* packed) {
  const int64_t B = direct_block(cout), cpad = round_up(cout, B);
  // U[(o * cin + ci) * 16 + xi] first, then each element's GEMM operand written in order (writing
  // the 16 elements of one kernel directly would hit 16 addresses 16 * cpad * cin apart).
  std::vector<T> U(cout * cin * 16);
  for (int64_t k = 0; k < cout * cin; ++k) {
    const T* g = w + k * 9;
    double a[4][3];  // G g
    for (int v = 0; v < 3; ++v) {
      const double g0 = g[v], g1 = g[3 + v], g2 = g[6 + v];
      a[0][v] = g0;
      a[1][v] = 0.5 * (g0 + g1 + g2);
      a[2][v] = 0.5 * (g0 - g1 + g2);
      a[3][v] = g2;
    }
    for (int i = 0; i < 4; ++i) {  // (G g) G^T
      T* u = U.data() + k * 16 + 4 * i;
      u[0] = static_cast<T>(a[i][0]);
      u[1] = static_cast<T>(0.5 * (a[i][0] + a[i][1] + a[i][2]));
      u[2] = static_cast<T>(0.5 * (a[i][0] - a[i][1] + a[i][2]));
      u[3] = static_cast<T>(a[i][2]);
    }
  }
  // direct_pack's layout per element xi: packed[xi * cpad * cin + ((o / B) * cin + ci) * B + o % B].
  for (int xi = 0; xi < 16; ++xi) {
    T* dst = packed + xi * cpad * cin;
    for (int64_t blk = 0; blk < cpad / B; ++blk) {
      for (int64_t ci = 0; ci < cin; ++ci) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t o = blk * B + b;
          *dst++ = o < cout ? U[(o * cin + ci) * 16 + xi] : T(0);
        }
      }
    }
  }
}

}  // namespace

int64_t winograd_weights_size(int64_t cout, int64_t cin) {
  return 16 * round_up(cout, direct_block(cout)) * cin;
}

void winograd_weights(const float* w, int64_t cout, int64_t cin, float* packed) {
  weights_impl(w, cout, cin, packed);
}
void winograd_weights(const double* w, int64_t cout, int64_t cin, double* packed) {
  weights_impl(w, cout, cin, packed);
}

int64_t winograd_work_size(int64_t cout, int64_t cin, int64_t Wo, int64_t value_size) {
  const int64_t lanes = simd::kVecBytes / value_size;
  const int64_t step = gemm_step(cout, lanes);
  // R only sets the number of blocks, not their size: any R >= 2 tile rows gives the largest.
  const Tiles k(cout, 1 << 20, Wo, lanes, step);
  const int64_t cop = round_up(cout, lanes);
  // forward: V and M; weight gradient: V, Zt and the channels-last gradient rows.
  const int64_t fwd = 16 * (k.vs(cin) + k.ms());
  const int64_t bwd = 16 * k.vs(cin) + 16 * k.zs(cop) + 2 * k.tb * 2 * k.TC * cop;
  return std::max(fwd, bwd) + lanes;  // + alignment
}

void winograd_forward(const float* in, int64_t cs, int64_t cin, int64_t Wp,
                      int64_t R, int64_t Wo, const float* packed,
                      const float* bias, int64_t cout, float* out, int64_t ld,
                      int64_t rs, float* work) {
  forward_impl(in, cs, cin, Wp, R, Wo, packed, bias, cout, out, ld, rs, work);
}
void winograd_forward(const double* in, int64_t cs, int64_t cin, int64_t Wp,
                      int64_t R, int64_t Wo, const double* packed,
                      const double* bias, int64_t cout, double* out, int64_t ld,
                      int64_t rs, double* work) {
  forward_impl(in, cs, cin, Wp, R, Wo, packed, bias, cout, out, ld, rs, work);
}

void winograd_weight_grad(const float* in, int64_t cs, int64_t cin, int64_t Wp,
                          int64_t R, int64_t Wo, const float* g, int64_t ldg,
                          int64_t cout, float* part, float* work) {
  weight_grad_impl(in, cs, cin, Wp, R, Wo, g, ldg, cout, part, work);
}
void winograd_weight_grad(const double* in, int64_t cs, int64_t cin, int64_t Wp,
                          int64_t R, int64_t Wo, const double* g, int64_t ldg,
                          int64_t cout, double* part, double* work) {
  weight_grad_impl(in, cs, cin, Wp, R, Wo, g, ldg, cout, part, work);
}

int64_t winograd_part_size(int64_t cout, int64_t cin, int64_t value_size) {
  return 16 * cin * round_up(cout, 64 / value_size);
}

void winograd_weight_grad_finish(const float* part, int64_t cout, int64_t cin, float* gw) {
  weight_grad_finish_impl(part, cout, cin, gw);
}
void winograd_weight_grad_finish(const double* part, int64_t cout, int64_t cin, double* gw) {
  weight_grad_finish_impl(part, cout, cin, gw);
}

DIN_ISA_END  // namespace din_ops::cpu::DIN_ISA
