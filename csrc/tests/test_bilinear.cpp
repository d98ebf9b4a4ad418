// Tests of the bilinear sampling arithmetic in din_ops/bilinear.h (shared by every backend), against
// the definition written out directly: corners outside the plane are zero. Planes are stored as the
// CPU kernels store them: H * W values and one zero element past them (index H * W), where the
// corners outside the plane point.
#include "din_ops/bilinear.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "harness.h"

namespace {

namespace bl = din_ops::bilinear;

// The value of plane p (H x W) at integer (y, x), zero outside.
double pixel(const std::vector<double>& p, int64_t H, int64_t W, int64_t y, int64_t x) {
  return (y < 0 || y >= H || x < 0 || x >= W) ? 0.0 : p[y * W + x];
}

// Bilinear interpolation from the definition, in long double.
double interpolate(const std::vector<double>& p, int64_t H, int64_t W, double y, double x) {
  const double y0 = std::floor(y), x0 = std::floor(x);
  const long double ly = y - y0, lx = x - x0;
  const auto Y = static_cast<int64_t>(y0), X = static_cast<int64_t>(x0);
  return static_cast<double>((1 - ly) * (1 - lx) * pixel(p, H, W, Y, X) +
                             (1 - ly) * lx * pixel(p, H, W, Y, X + 1) +
                             ly * (1 - lx) * pixel(p, H, W, Y + 1, X) +
                             ly * lx * pixel(p, H, W, Y + 1, X + 1));
}

template <typename T>
T sample(const std::vector<T>& p, const bl::Corners<T>& c) {
  T v[4];
  for (int k = 0; k < 4; ++k) v[k] = p[c.index[k]];
  return bl::combine(c.weight, v);
}

// H * W normal values, then the zero element.
std::vector<double> random_plane(int64_t H, int64_t W, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> p(H * W + 1, 0.0);
  for (int64_t i = 0; i < H * W; ++i) p[i] = dist(gen);
  return p;
}

DIN_TEST(integer_positions_give_the_pixel) {
  const int64_t H = 5, W = 7;
  const auto p = random_plane(H, W, 1);
  for (int64_t y = 0; y < H; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const auto c = bl::corners<double>(double(y), double(x), H, W, H * W);
      DIN_CHECK(sample(p, c) == p[y * W + x]);
      DIN_CHECK(c.index[0] == y * W + x && c.weight[0] == 1.0);
    }
  }
}

DIN_TEST(matches_the_definition_inside_on_borders_and_outside) {
  const int64_t H = 4, W = 6;
  const auto p = random_plane(H, W, 2);
  std::mt19937_64 gen(3);
  std::uniform_real_distribution<double> ry(-2.0, H + 1.0), rx(-2.0, W + 1.0);
  for (int i = 0; i < 2000; ++i) {
    const double y = ry(gen), x = rx(gen);
    DIN_CHECK_NEAR(sample(p, bl::corners<double>(y, x, H, W, H * W)), interpolate(p, H, W, y, x), 1e-14, 1e-14);
  }
  // Exactly on the borders and half a pixel outside them.
  for (const double y : {-1.0, -0.5, 0.0, H - 1.0, H - 0.5, double(H)}) {
    for (const double x : {-1.0, -0.5, 0.0, 2.5, W - 1.0, W - 0.5, double(W)}) {
      DIN_CHECK_NEAR(sample(p, bl::corners<double>(y, x, H, W, H * W)), interpolate(p, H, W, y, x), 1e-15, 1e-15);
    }
  }
}

DIN_TEST(outside_and_nan_positions_have_no_weight) {
  const int64_t H = 3, W = 3;
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& [y, x] : std::vector<std::pair<double, double>>{
           {-1.0, 1.0}, {3.0, 1.0}, {1.0, -1.0}, {1.0, 3.0}, {-1e30, 1.0}, {1.0, 1e30}, {inf, 0.5},
           {-inf, 0.5}, {nan, 1.0}, {1.0, nan}}) {
    for (const int64_t outside : {H * W, int64_t(-1)}) {
      const auto c = bl::corners<double>(y, x, H, W, outside);
      for (int k = 0; k < 4; ++k) {
        DIN_CHECK(c.index[k] == outside);
        DIN_CHECK(c.weight[k] == 0.0 && c.dy[k] == 0.0 && c.dx[k] == 0.0);
      }
    }
  }
}

DIN_TEST(outside_corners_ignore_infinite_and_nan_pixels) {
  // Every pixel of the plane inf or NaN: a point whose corners are all outside samples exactly 0,
  // and a border point only the inside corners' values (as torchvision.ops.deform_conv2d).
  const int64_t H = 3, W = 4;
  const double inf = std::numeric_limits<double>::infinity();
  for (const double bad : {inf, -inf, std::numeric_limits<double>::quiet_NaN()}) {
    std::vector<double> p(H * W + 1, bad);
    p[H * W] = 0.0;
    for (const auto& [y, x] : std::vector<std::pair<double, double>>{
             {-1.0, 1.0}, {-1.5, 2.0}, {1.0, W + 0.0}, {H + 0.25, 0.5}, {0.5, -1.0}}) {
      const auto c = bl::corners<double>(y, x, H, W, H * W);
      double v[4];
      for (int k = 0; k < 4; ++k) v[k] = p[c.index[k]];
      DIN_CHECK(bl::combine(c.weight, v) == 0.0);
      DIN_CHECK(bl::combine(c.dy, v) == 0.0 && bl::combine(c.dx, v) == 0.0);
    }
    // (-0.5, 1.5): the two corners of row 0 are inside, the two of row -1 are not.
    std::vector<double> q(H * W + 1, 1.0);
    q[H * W] = 0.0;
    q[0] = bad;  // a pixel this point does not touch
    const auto c = bl::corners<double>(-0.5, 1.5, H, W, H * W);
    double v[4];
    for (int k = 0; k < 4; ++k) v[k] = q[c.index[k]];
    DIN_CHECK_NEAR(bl::combine(c.weight, v), 0.5, 1e-15, 1e-15);
  }
}

DIN_TEST(corner_indices_stay_inside_the_plane) {
  const int64_t H = 4, W = 5;
  std::mt19937_64 gen(4);
  std::uniform_real_distribution<float> ry(-3.0f, H + 2.0f), rx(-3.0f, W + 2.0f);
  for (int i = 0; i < 5000; ++i) {
    const auto c = bl::corners<float>(ry(gen), rx(gen), H, W, H * W);
    float total = 0.0f;
    for (int k = 0; k < 4; ++k) {
      DIN_CHECK((c.index[k] >= 0 && c.index[k] < H * W) || (c.index[k] == H * W && c.weight[k] == 0.0f));
      DIN_CHECK(c.weight[k] >= 0.0f && c.weight[k] <= 1.0f);
      total += c.weight[k];
    }
    DIN_CHECK(total <= 1.0f + 1e-6f);
  }
}

DIN_TEST(weights_interpolate_linear_functions_exactly_inside) {
  // a + b y + c x is reproduced exactly where all four corners are inside.
  const int64_t H = 6, W = 9;
  std::vector<double> p(H * W + 1, 0.0);
  for (int64_t y = 0; y < H; ++y) for (int64_t x = 0; x < W; ++x) p[y * W + x] = 0.5 + 2.0 * y - 3.0 * x;
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> ry(0.0, H - 1.0), rx(0.0, W - 1.0);
  for (int i = 0; i < 1000; ++i) {
    const double y = ry(gen), x = rx(gen);
    DIN_CHECK_NEAR(sample(p, bl::corners<double>(y, x, H, W, H * W)), 0.5 + 2.0 * y - 3.0 * x, 1e-12, 1e-12);
  }
}

DIN_TEST(position_derivatives_match_finite_differences) {
  const int64_t H = 5, W = 6;
  const auto p = random_plane(H, W, 6);
  std::mt19937_64 gen(7);
  std::uniform_real_distribution<double> ry(-1.5, H + 0.5), rx(-1.5, W + 0.5);
  const double h = 1e-6;
  int checked = 0;
  for (int i = 0; i < 2000; ++i) {
    const double y = ry(gen), x = rx(gen);
    // Stay away from integer coordinates, where the interpolant has a kink.
    if (std::abs(y - std::round(y)) < 1e-3 || std::abs(x - std::round(x)) < 1e-3) continue;
    const auto c = bl::corners<double>(y, x, H, W, H * W);
    double v[4];
    for (int k = 0; k < 4; ++k) v[k] = p[c.index[k]];
    const double fy = (interpolate(p, H, W, y + h, x) - interpolate(p, H, W, y - h, x)) / (2 * h);
    const double fx = (interpolate(p, H, W, y, x + h) - interpolate(p, H, W, y, x - h)) / (2 * h);
    DIN_CHECK_NEAR(bl::combine(c.dy, v), fy, 1e-6, 1e-7);
    DIN_CHECK_NEAR(bl::combine(c.dx, v), fx, 1e-6, 1e-7);
    ++checked;
  }
  DIN_CHECK(checked > 1500);
}

DIN_TEST(derivatives_at_integer_positions_are_right_sided) {
  const int64_t H = 4, W = 4;
  const auto p = random_plane(H, W, 8);
  const auto c = bl::corners<double>(1.0, 2.0, H, W, H * W);
  double v[4];
  for (int k = 0; k < 4; ++k) v[k] = p[c.index[k]];
  DIN_CHECK_NEAR(bl::combine(c.dy, v), p[2 * W + 2] - p[1 * W + 2], 1e-15, 1e-15);
  DIN_CHECK_NEAR(bl::combine(c.dx, v), p[1 * W + 3] - p[1 * W + 2], 1e-15, 1e-15);
}

DIN_TEST(position_is_the_strided_dilated_tap_plus_offset) {
  DIN_CHECK(bl::position<double>(3, 2, 1, 2, 3, 0.25) == 3 * 2 - 1 + 2 * 3 + 0.25);
  DIN_CHECK(bl::position<float>(0, 1, 2, 0, 1, -0.5f) == -2.5f);
}

}  // namespace

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
