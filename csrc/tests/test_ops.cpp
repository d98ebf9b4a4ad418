// Tests of the din_ops operators, called through the dispatcher as any LibTorch user would, against
// float64 references written with ATen (explicit formulas, at::instance_norm, at::bmm, autograd).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/isa.h"
#include "cpu/parallel.h"
#include "harness.h"

namespace {

using at::Tensor;
using Triple = std::tuple<Tensor, Tensor, Tensor>;

// ---------------------------------------------------------------------------------------------
// The operators.

c10::OperatorHandle find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

Triple instance_norm(const Tensor& x, double eps, bool unbiased = false) {
  static const auto op =
      find_op("din_ops::instance_norm").typed<Triple(const Tensor&, double, bool)>();
  return op.call(x, eps, unbiased);
}

Tensor instance_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean,
                              const Tensor& rstd) {
  static const auto op =
      find_op("din_ops::instance_norm_backward")
          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>();
  return op.call(gy, x, mean, rstd);
}

Triple din_1x1(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, double eps) {
  static const auto op =
      find_op("din_ops::dynamic_instance_norm_1x1")
          .typed<Triple(const Tensor&, const Tensor&, const std::optional<Tensor>&, double,
                        bool)>();
  return op.call(x, w, b, eps, false);
}

Triple din_1x1_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean,
                        const Tensor& rstd) {
  static const auto op =
      find_op("din_ops::dynamic_instance_norm_1x1_backward")
          .typed<Triple(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&)>();
  return op.call(gy, x, w, mean, rstd);
}

// ---------------------------------------------------------------------------------------------
// Checks.

// max |actual - expected| <= tol * max(1, max |expected|), compared in float64; shapes must match
// and `actual` must be finite.
void check_tensor(const Tensor& actual, const Tensor& expected, double tol, const char* what,
                  const char* file, int line) {
  if (!actual.defined() || actual.sizes() != expected.sizes()) {
    std::ostringstream s;
    s << what << ": shape " << (actual.defined() ? actual.sizes() : at::IntArrayRef{})
      << ", expected " << expected.sizes();
    din_ops::test::fail(file, line, s.str());
    return;
  }
  if (actual.numel() == 0) return;
  const Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  if (!at::isfinite(a).all().item<bool>()) {
    din_ops::test::fail(file, line, std::string(what) + ": result is not finite");
    return;
  }
  const double err = (a - e).abs().max().item<double>();
  const double scale = std::max(1.0, e.abs().max().item<double>());
  if (!(err <= tol * scale)) {
    std::ostringstream s;
    s << what << ": max abs error " << err << " > " << tol << " * " << scale;
    din_ops::test::fail(file, line, s.str());
  }
}

#define CHECK_TENSOR(actual, expected, tol) \
  check_tensor((actual), (expected), (tol), #actual, __FILE__, __LINE__)

// Output tolerance (relative to the largest reference value) for results stored in `dtype`.
double tol_for(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble:
      return 1e-12;
    case at::kFloat:
      return 1e-5;
    case at::kHalf:
      return 2e-3;  // 11-bit significand
    default:
      return 1e-2;  // bfloat16: 8-bit significand
  }
}

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

bool is_channels_last(const Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

// ---------------------------------------------------------------------------------------------
// Float64 references.

Tensor plane(const Tensor& s) { return s.unsqueeze(-1).unsqueeze(-1); }  // (N, C) -> (N, C, 1, 1)

struct NormRef {
  Tensor y, mean, rstd;  // y = xh
};

NormRef ref_instance_norm(const Tensor& x, double eps) {
  const Tensor xd = x.to(at::kDouble);
  const Tensor mean = xd.mean({2, 3});
  const Tensor var = (xd - plane(mean)).square().mean({2, 3});
  const Tensor rstd = (var + eps).rsqrt();
  return {(xd - plane(mean)) * plane(rstd), mean, rstd};
}

// gx = rstd * (g - mean(g) - xh * mean(g * xh)), per (n, c) plane.
Tensor ref_instance_norm_backward(const Tensor& g, const Tensor& x, double eps) {
  const NormRef r = ref_instance_norm(x, eps);
  const Tensor gd = g.to(at::kDouble);
  const Tensor mg = gd.mean({2, 3}, /*keepdim=*/true);
  const Tensor mgxh = (gd * r.y).mean({2, 3}, /*keepdim=*/true);
  return plane(r.rstd) * (gd - mg - r.y * mgxh);
}

// y[n] = W[n] @ xh[n] + b[n] on (C, H*W) matrices.
Tensor ref_din(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, double eps) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Co = w.size(1);
  const Tensor xh = ref_instance_norm(x, eps).y.reshape({N, C, H * W});
  Tensor y = at::bmm(w.to(at::kDouble), xh).reshape({N, Co, H, W});
  if (b.has_value()) y = y + plane(b->to(at::kDouble));
  return y;
}

// gb = sum_p gy, gW = gy @ xh^T, gx = IN backward of g = W^T gy.
Triple ref_din_backward(const Tensor& gy, const Tensor& x, const Tensor& w, double eps) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Co = w.size(1);
  const Tensor g = gy.to(at::kDouble).reshape({N, Co, H * W});
  const Tensor wd = w.to(at::kDouble);
  const Tensor xh = ref_instance_norm(x, eps).y.reshape({N, C, H * W});
  const Tensor gb = g.sum(2);
  const Tensor gw = at::bmm(g, xh.transpose(1, 2));
  const Tensor gx = ref_instance_norm_backward(at::bmm(wd.transpose(1, 2), g).reshape({N, C, H, W}),
                                               x, eps);
  return {gx, gw, gb};
}

Tensor randn(at::IntArrayRef shape, at::ScalarType dtype, double mean = 0.0, double scale = 1.0) {
  return (at::randn(shape, at::kDouble) * scale + mean).to(dtype);
}

// ---------------------------------------------------------------------------------------------
// Registration.

// DIN_OPS_CPU_CAPABILITY on CPUs other than this one: an AVX2-only CPU, a baseline-only one and
// one with every level.
DIN_TEST(cpu_capability_override_is_checked_against_the_cpu) {
  using din_ops::cpu::Capability;
  using din_ops::cpu::choose_level;
  auto up_to = [](Capability best) {
    return [best](Capability level) { return static_cast<int>(level) <= static_cast<int>(best); };
  };
  auto lacks = [](Capability) { return std::string("this CPU lacks avx512f"); };
  const auto avx2_cpu = up_to(Capability::avx2);
  DIN_CHECK(choose_level(nullptr, avx2_cpu, lacks).level == Capability::avx2);
  DIN_CHECK(choose_level("", avx2_cpu, lacks).error.empty());
  DIN_CHECK(choose_level("default", avx2_cpu, lacks).level == Capability::base);
  const auto upper = choose_level("AVX2", avx2_cpu, lacks);
  DIN_CHECK(upper.level == Capability::avx2 && upper.error.empty());
  const auto refused = choose_level("avx512", avx2_cpu, lacks);
  DIN_CHECK(refused.error ==
            "DIN_OPS_CPU_CAPABILITY=avx512 cannot be used: this CPU lacks avx512f (the best level "
            "here is avx2; unset the variable to use it)");
  const auto unknown = choose_level("sse4", avx2_cpu, lacks);
  DIN_CHECK(unknown.error.find("DIN_OPS_CPU_CAPABILITY=sse4 is not a level: expected default, "
                               "avx2 or avx512") == 0);
  DIN_CHECK(unknown.error.find("the best this CPU has: avx2") != std::string::npos);
  const auto base_cpu = up_to(Capability::base);
  DIN_CHECK(choose_level(nullptr, base_cpu, lacks).level == Capability::base);
  DIN_CHECK(choose_level("avx2", base_cpu, lacks).error.find("the best level here is default") !=
            std::string::npos);
  const auto every = up_to(Capability::avx512);
  DIN_CHECK(choose_level(nullptr, every, lacks).level == Capability::avx512);
  DIN_CHECK(choose_level("avx2", every, lacks).level == Capability::avx2);
  // This CPU: the library's own choice is the best level it supports.
  DIN_CHECK(din_ops::cpu::cpu_supports(din_ops::cpu::cpu_capability()));
}

DIN_TEST(schemas_are_registered_with_cpu_kernels) {
  const std::vector<std::tuple<const char*, size_t, size_t>> ops = {
      {"din_ops::instance_norm", 3, 3},
      {"din_ops::instance_norm_backward", 4, 1},
      {"din_ops::dynamic_instance_norm_1x1", 5, 3},
      {"din_ops::dynamic_instance_norm_1x1_backward", 5, 3},
  };
  for (const auto& [name, args, returns] : ops) {
    const auto op = find_op(name);
    DIN_CHECK(op.schema().arguments().size() == args);
    DIN_CHECK(op.schema().returns().size() == returns);
    DIN_CHECK(op.hasKernelForDispatchKey(c10::DispatchKey::CPU));
    DIN_CHECK(op.hasTag(at::Tag::pt2_compliant_tag));
  }
  DIN_CHECK_THROWS(find_op("din_ops::no_such_op"), c10::Error);
}

// ---------------------------------------------------------------------------------------------
// instance_norm

DIN_TEST(instance_norm_matches_reference) {
  at::manual_seed(1);
  const double eps = 1e-5;
  for (const auto dtype : kDtypes) {
    for (const bool channels_last : {false, true}) {
      Tensor x = randn({3, 5, 7, 6}, dtype, 0.5, 2.0);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const auto [y, mean, rstd] = instance_norm(x, eps);
      const NormRef ref = ref_instance_norm(x, eps);
      DIN_CHECK(y.scalar_type() == dtype);
      DIN_CHECK(mean.scalar_type() == at::kDouble && rstd.scalar_type() == at::kDouble);
      DIN_CHECK(is_channels_last(y) == channels_last);
      DIN_CHECK(y.is_contiguous() == !channels_last);
      CHECK_TENSOR(y, ref.y, tol_for(dtype));
      // Statistics are exact up to the float accumulation of the deviations.
      const double stats_tol = dtype == at::kDouble ? 1e-12 : 1e-6;
      CHECK_TENSOR(mean, ref.mean, stats_tol);
      CHECK_TENSOR(rstd, ref.rstd, stats_tol);
    }
  }
}

DIN_TEST(instance_norm_agrees_with_aten) {
  at::manual_seed(2);
  const double eps = 1e-3;
  const Tensor x = randn({2, 4, 9, 11}, at::kDouble, -1.0, 0.7);
  const Tensor ref = at::instance_norm(x, {}, {}, {}, {}, /*use_input_stats=*/true,
                                       /*momentum=*/0.1, eps, /*cudnn_enabled=*/false);
  CHECK_TENSOR(std::get<0>(instance_norm(x, eps)), ref, 1e-12);
  CHECK_TENSOR(std::get<0>(instance_norm(x.to(at::kFloat), eps)), ref, 1e-5);
}

DIN_TEST(instance_norm_large_mean_float32) {
  // x = 1e6 + noise: a float32 mean or E[x^2] - E[x]^2 would lose most of the signal.
  at::manual_seed(3);
  for (const bool channels_last : {false, true}) {
    Tensor x = randn({2, 3, 16, 16}, at::kFloat, 1e6, 1.0);
    if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const auto [y, mean, rstd] = instance_norm(x, 1e-5);
    const NormRef ref = ref_instance_norm(x, 1e-5);
    CHECK_TENSOR(y, ref.y, 1e-5);
    DIN_CHECK((mean - ref.mean).abs().max().item<double>() <= 1e-6);
    CHECK_TENSOR(rstd, ref.rstd, 1e-9);
  }
}

DIN_TEST(instance_norm_degenerate_planes) {
  const double eps = 1e-5;
  for (const auto dtype : kDtypes) {
    // Constant planes: zero variance, y = 0, no NaN.
    const Tensor c = (at::arange(6, at::kDouble) * 100.0 + 1e3).reshape({2, 3, 1, 1})
                         .expand({2, 3, 4, 5}).to(dtype).contiguous();
    const auto [yc, mc, rc] = instance_norm(c, eps);
    DIN_CHECK(at::equal(yc, at::zeros_like(yc)));
    DIN_CHECK(at::equal(mc, c.select(3, 0).select(2, 0).to(at::kDouble)));
    DIN_CHECK(at::allclose(rc, at::full_like(rc, 1.0 / std::sqrt(eps))));
    // One pixel per plane (H = W = 1), in both layouts.
    for (const bool channels_last : {false, true}) {
      Tensor x = randn({4, 6, 1, 1}, dtype);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const auto [y, mean, rstd] = instance_norm(x, eps);
      DIN_CHECK(at::equal(y, at::zeros_like(y)));
      CHECK_TENSOR(mean, x.reshape({4, 6}), 0.0);
      DIN_CHECK(at::allclose(rstd, at::full_like(rstd, 1.0 / std::sqrt(eps))));
    }
  }
}

DIN_TEST(instance_norm_empty_batch_and_strided_input) {
  const auto [y, mean, rstd] = instance_norm(at::empty({0, 3, 4, 4}), 1e-5);
  DIN_CHECK(y.sizes() == at::IntArrayRef({0, 3, 4, 4}));
  DIN_CHECK(mean.sizes() == at::IntArrayRef({0, 3}) && rstd.sizes() == at::IntArrayRef({0, 3}));

  // Neither NCHW nor NHWC: handled through a copy, output contiguous.
  at::manual_seed(4);
  const Tensor x = randn({2, 3, 8, 5}, at::kFloat).transpose(2, 3);
  DIN_CHECK(!x.is_contiguous() && !x.is_contiguous(at::MemoryFormat::ChannelsLast));
  const Tensor ys = std::get<0>(instance_norm(x, 1e-5));
  DIN_CHECK(ys.is_contiguous());
  CHECK_TENSOR(ys, ref_instance_norm(x, 1e-5).y, 1e-5);
}

DIN_TEST(instance_norm_backward_matches_reference) {
  at::manual_seed(5);
  const double eps = 1e-5;
  for (const auto dtype : kDtypes) {
    for (const bool channels_last : {false, true}) {
      Tensor x = randn({3, 4, 6, 7}, dtype, 3.0, 1.5);
      Tensor gy = randn({3, 4, 6, 7}, dtype);
      if (channels_last) {
        x = x.contiguous(at::MemoryFormat::ChannelsLast);
        gy = gy.contiguous(at::MemoryFormat::ChannelsLast);
      }
      const auto [y, mean, rstd] = instance_norm(x, eps);
      const Tensor gx = instance_norm_backward(gy, x, mean, rstd);
      DIN_CHECK(gx.scalar_type() == dtype);
      DIN_CHECK(is_channels_last(gx) == channels_last);
      CHECK_TENSOR(gx, ref_instance_norm_backward(gy, x, eps), tol_for(dtype));
    }
  }
  // grad_y in the other layout than x.
  const Tensor x = randn({2, 3, 5, 5}, at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  const Tensor gy = randn({2, 3, 5, 5}, at::kFloat);
  const auto [y, mean, rstd] = instance_norm(x, eps);
  CHECK_TENSOR(instance_norm_backward(gy, x, mean, rstd), ref_instance_norm_backward(gy, x, eps),
               1e-5);
}

DIN_TEST(instance_norm_backward_matches_autograd) {
  at::manual_seed(6);
  const double eps = 0.1;  // large enough that eps matters in the gradient
  const Tensor x = randn({2, 3, 5, 4}, at::kDouble, 1.0, 0.5);
  const Tensor gy = randn({2, 3, 5, 4}, at::kDouble);

  const Tensor xr = x.clone().set_requires_grad(true);
  const Tensor mean = xr.mean({2, 3}, /*keepdim=*/true);
  const Tensor var = (xr - mean).square().mean({2, 3}, /*keepdim=*/true);
  const Tensor y = (xr - mean) * (var + eps).rsqrt();
  const Tensor expected = torch::autograd::grad({y}, {xr}, {gy})[0];

  const auto [yo, m, r] = instance_norm(x, eps);
  CHECK_TENSOR(instance_norm_backward(gy, x, m, r), expected, 1e-12);
}

DIN_TEST(instance_norm_is_independent_of_thread_count) {
  // Large enough that at::parallel_for splits the work in both layouts.
  at::manual_seed(7);
  const int threads = at::get_num_threads();
  for (const bool channels_last : {false, true}) {
    Tensor x = randn({2, 8, 64, 64}, at::kFloat, 10.0, 3.0);
    Tensor gy = randn({2, 8, 64, 64}, at::kFloat);
    if (channels_last) {
      x = x.contiguous(at::MemoryFormat::ChannelsLast);
      gy = gy.contiguous(at::MemoryFormat::ChannelsLast);
    }
    std::vector<Tensor> results[2];
    for (int i = 0; i < 2; ++i) {
      at::set_num_threads(i == 0 ? 1 : 4);
      const auto [y, mean, rstd] = instance_norm(x, 1e-5);
      results[i] = {y, mean, rstd, instance_norm_backward(gy, x, mean, rstd)};
    }
    for (size_t k = 0; k < results[0].size(); ++k) {
      DIN_CHECK(at::equal(results[0][k], results[1][k]));
    }
  }
  at::set_num_threads(threads);
}

DIN_TEST(parallel_for_runs_on_torchs_team) {
  // csrc/cpu/parallel.h: the kernels' parallel regions have the team torch.set_num_threads asks for,
  // thread ids below it, and count as parallel regions for what they call (MKL, nested loops),
  // whatever the compiler. 3 threads: more than a 2-core machine's OpenMP default.
  const int threads = at::get_num_threads();
  for (const int team : {1, 2, 3}) {
    at::set_num_threads(team);
    std::vector<int> chunks(8, 0);
    std::atomic<bool> inside{true};
    din_ops::cpu::parallel_for(0, 30, 1, [&](int64_t b, int64_t e) {
      const int tid = at::get_thread_num();
      if (tid >= 0 && tid < 8) chunks[tid] += static_cast<int>(e - b);
      if (team > 1 && !at::in_parallel_region()) inside = false;
    });
    for (int t = 0; t < 8; ++t) DIN_CHECK(chunks[t] == (t < team ? 30 / team : 0));
    DIN_CHECK(inside);
  }
  at::set_num_threads(threads);
}

// ---------------------------------------------------------------------------------------------
// dynamic_instance_norm_1x1

DIN_TEST(din_1x1_matches_reference) {
  at::manual_seed(8);
  const double eps = 1e-5;
  const int64_t N = 3, C = 6, Co = 5, H = 7, W = 9;
  for (const auto dtype : kDtypes) {
    for (const bool channels_last : {false, true}) {
      for (const bool with_bias : {true, false}) {
        Tensor x = randn({N, C, H, W}, dtype, -0.5, 2.0);
        if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        const Tensor w = randn({N, Co, C}, dtype, 0.0, 1.0 / std::sqrt(double(C)));
        const std::optional<Tensor> b =
            with_bias ? std::optional<Tensor>(randn({N, Co}, dtype)) : std::nullopt;
        const auto [y, mean, rstd] = din_1x1(x, w, b, eps);
        const NormRef ref = ref_instance_norm(x, eps);
        DIN_CHECK(y.scalar_type() == dtype);
        DIN_CHECK(is_channels_last(y) == channels_last);
        DIN_CHECK(y.is_contiguous() == !channels_last);
        CHECK_TENSOR(y, ref_din(x, w, b, eps), tol_for(dtype));
        const double stats_tol = dtype == at::kDouble ? 1e-12 : 1e-6;
        CHECK_TENSOR(mean, ref.mean, stats_tol);
        CHECK_TENSOR(rstd, ref.rstd, stats_tol);
      }
    }
  }
}

DIN_TEST(din_1x1_large_mean_and_shapes) {
  at::manual_seed(9);
  const double eps = 1e-5;
  // Means of 1e4 and 1e6 (|mean| * rstd far above any folding limit), a 1x1 image, Co = 1, C = 1,
  // and a larger problem that spans several pixel tiles.
  struct Shape {
    int64_t N, C, Co, H, W;
    double mean;
  };
  for (const Shape s : {Shape{2, 4, 3, 8, 8, 1e4}, Shape{2, 4, 3, 8, 8, 1e6},
                        Shape{3, 5, 2, 1, 1, 0.0}, Shape{2, 1, 4, 6, 6, 2.0},
                        Shape{2, 7, 1, 5, 6, -3.0}, Shape{2, 24, 40, 45, 50, 0.5}}) {
    for (const bool channels_last : {false, true}) {
      Tensor x = randn({s.N, s.C, s.H, s.W}, at::kFloat, s.mean, 1.0);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      const Tensor w = randn({s.N, s.Co, s.C}, at::kFloat, 0.0, 1.0 / std::sqrt(double(s.C)));
      const Tensor b = randn({s.N, s.Co}, at::kFloat);
      const auto [y, mean, rstd] = din_1x1(x, w, b, eps);
      CHECK_TENSOR(y, ref_din(x, w, b, eps), 1e-5);
    }
  }
  // H = W = 1: xh = 0, so y = bias.
  const Tensor x = randn({2, 3, 1, 1}, at::kFloat);
  const Tensor b = randn({2, 4}, at::kFloat);
  const Tensor y = std::get<0>(din_1x1(x, randn({2, 4, 3}, at::kFloat), b, 1e-5));
  CHECK_TENSOR(y, b.reshape({2, 4, 1, 1}), 1e-6);
}

DIN_TEST(din_1x1_empty_batch) {
  const auto [y, mean, rstd] =
      din_1x1(at::empty({0, 3, 4, 4}), at::empty({0, 5, 3}), at::empty({0, 5}), 1e-5);
  DIN_CHECK(y.sizes() == at::IntArrayRef({0, 5, 4, 4}));
  DIN_CHECK(mean.sizes() == at::IntArrayRef({0, 3}));
  const auto [gx, gw, gb] =
      din_1x1_backward(at::empty({0, 5, 4, 4}), at::empty({0, 3, 4, 4}), at::empty({0, 5, 3}),
                       mean, rstd);
  DIN_CHECK(gx.sizes() == at::IntArrayRef({0, 3, 4, 4}));
  DIN_CHECK(gw.sizes() == at::IntArrayRef({0, 5, 3}) && gb.sizes() == at::IntArrayRef({0, 5}));
}

DIN_TEST(din_1x1_backward_matches_reference) {
  at::manual_seed(10);
  const double eps = 1e-5;
  struct Shape {
    int64_t N, C, Co, H, W;
    double mean;
  };
  for (const Shape s : {Shape{3, 6, 5, 7, 9, -0.5}, Shape{2, 4, 8, 5, 5, 1e4},
                        Shape{2, 24, 40, 45, 50, 0.5}}) {
    for (const auto dtype : kDtypes) {
      if (s.mean == 1e4 && (dtype == at::kHalf || dtype == at::kBFloat16)) continue;
      for (const bool channels_last : {false, true}) {
        Tensor x = randn({s.N, s.C, s.H, s.W}, dtype, s.mean, 2.0);
        Tensor gy = randn({s.N, s.Co, s.H, s.W}, dtype);
        if (channels_last) {
          x = x.contiguous(at::MemoryFormat::ChannelsLast);
          gy = gy.contiguous(at::MemoryFormat::ChannelsLast);
        }
        const Tensor w = randn({s.N, s.Co, s.C}, dtype, 0.0, 1.0 / std::sqrt(double(s.C)));
        const auto [y, mean, rstd] = din_1x1(x, w, std::nullopt, eps);
        const auto [gx, gw, gb] = din_1x1_backward(gy, x, w, mean, rstd);
        const auto [rgx, rgw, rgb] = ref_din_backward(gy, x, w, eps);
        DIN_CHECK(gx.scalar_type() == dtype && gw.scalar_type() == dtype &&
                  gb.scalar_type() == dtype);
        DIN_CHECK(is_channels_last(gx) == channels_last);
        // For double data a large mean costs |mean| * rstd ulps in xh, in the reference as well.
        const double tol =
            dtype == at::kDouble ? 1e-12 * (1.0 + std::abs(s.mean)) : tol_for(dtype);
        CHECK_TENSOR(gx, rgx, tol);
        CHECK_TENSOR(gw, rgw, tol);
        CHECK_TENSOR(gb, rgb, tol);
      }
    }
  }
}

DIN_TEST(din_1x1_backward_matches_autograd) {
  at::manual_seed(11);
  const double eps = 0.05;
  const int64_t N = 2, C = 3, Co = 4, H = 5, W = 6;
  const Tensor x = randn({N, C, H, W}, at::kDouble, 0.3, 1.2);
  const Tensor w = randn({N, Co, C}, at::kDouble);
  const Tensor b = randn({N, Co}, at::kDouble);
  const Tensor gy = randn({N, Co, H, W}, at::kDouble);

  const Tensor xr = x.clone().set_requires_grad(true);
  const Tensor wr = w.clone().set_requires_grad(true);
  const Tensor br = b.clone().set_requires_grad(true);
  const Tensor mean = xr.mean({2, 3}, /*keepdim=*/true);
  const Tensor var = (xr - mean).square().mean({2, 3}, /*keepdim=*/true);
  const Tensor xh = ((xr - mean) * (var + eps).rsqrt()).reshape({N, C, H * W});
  const Tensor y = (at::bmm(wr, xh) + br.unsqueeze(-1)).reshape({N, Co, H, W});
  const auto grads = torch::autograd::grad({y}, {xr, wr, br}, {gy});

  const auto [yo, m, r] = din_1x1(x, w, b, eps);
  CHECK_TENSOR(yo, y.detach(), 1e-12);
  const auto [gx, gw, gb] = din_1x1_backward(gy, x, w, m, r);
  CHECK_TENSOR(gx, grads[0], 1e-12);
  CHECK_TENSOR(gw, grads[1], 1e-12);
  CHECK_TENSOR(gb, grads[2], 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Argument checks

DIN_TEST(bad_arguments_throw) {
  const Tensor x = at::randn({2, 3, 4, 4});
  const Tensor w = at::randn({2, 5, 3});
  const Tensor b = at::randn({2, 5});
  const auto [y, mean, rstd] = instance_norm(x, 1e-5);
  const Tensor gy = at::randn({2, 5, 4, 4});

  // instance_norm
  DIN_CHECK_THROWS(instance_norm(at::randn({2, 3, 4}), 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(instance_norm(at::randn({2, 0, 4, 4}), 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(instance_norm(at::ones({2, 3, 4, 4}, at::kInt), 1e-5), c10::TypeError);
  DIN_CHECK_THROWS(instance_norm_backward(at::randn({2, 3, 4, 5}), x, mean, rstd), c10::ValueError);
  DIN_CHECK_THROWS(instance_norm_backward(x.to(at::kDouble), x, mean, rstd), c10::TypeError);
  DIN_CHECK_THROWS(instance_norm_backward(x, x, mean.to(at::kFloat), rstd), c10::TypeError);
  DIN_CHECK_THROWS(instance_norm_backward(x, x, mean, rstd.reshape({3, 2})), c10::ValueError);

  // dynamic_instance_norm_1x1
  DIN_CHECK_THROWS(din_1x1(at::randn({2, 3, 16}), w, b, 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(din_1x1(x, at::randn({3, 5, 3}), b, 1e-5), c10::ValueError);  // N
  DIN_CHECK_THROWS(din_1x1(x, at::randn({2, 5, 4}), b, 1e-5), c10::ValueError);  // C
  DIN_CHECK_THROWS(din_1x1(x, at::randn({2, 5}), b, 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(din_1x1(x, w, at::randn({2, 4}), 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(din_1x1(x, w, at::randn({3, 5}), 1e-5), c10::ValueError);
  DIN_CHECK_THROWS(din_1x1(x, w.to(at::kDouble), b, 1e-5), c10::TypeError);
  DIN_CHECK_THROWS(din_1x1(x, w, b.to(at::kHalf), 1e-5), c10::TypeError);
  DIN_CHECK_THROWS(din_1x1_backward(gy, x, at::randn({3, 5, 3}), mean, rstd), c10::ValueError);
  // grad_y with C instead of Co channels.
  DIN_CHECK_THROWS(din_1x1_backward(at::randn({2, 3, 4, 4}), x, w, mean, rstd), c10::ValueError);
  DIN_CHECK_THROWS(din_1x1_backward(gy, x, w, mean.to(at::kFloat), rstd), c10::TypeError);
  DIN_CHECK_THROWS(din_1x1_backward(gy, x, w, mean, rstd.narrow(0, 0, 1)), c10::ValueError);

  // Valid calls with the same tensors still work.
  DIN_CHECK(std::get<0>(din_1x1(x, w, b, 1e-5)).sizes() == at::IntArrayRef({2, 5, 4, 4}));
  DIN_CHECK(std::get<0>(din_1x1_backward(gy, x, w, mean, rstd)).sizes() == x.sizes());
}


// ---------------------------------------------------------------------------------------------
// deformable_conv (through the dispatcher; the full checks are in tests/test_deformable.py)

using Five = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

Triple deformable_conv(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
                       const Tensor& offset, const std::optional<Tensor>& mask, bool normalize) {
  static const auto op =
      find_op("din_ops::deformable_conv")
          .typed<Triple(const Tensor&, const Tensor&, const std::optional<Tensor>&, const Tensor&,
                        const std::optional<Tensor>&, c10::IntArrayRef, c10::IntArrayRef,
                        c10::IntArrayRef, int64_t, int64_t, bool, double, bool)>();
  return op.call(x, w, b, offset, mask, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, 1, normalize, 1e-5,
                 false);
}

DIN_TEST(deformable_conv_zero_offsets_is_conv2d_and_far_offsets_give_the_bias) {
  at::manual_seed(7);
  const Tensor x = randn({2, 3, 6, 5}, at::kDouble), w = randn({2, 4, 3, 3, 3}, at::kDouble);
  const Tensor b = randn({2, 4}, at::kDouble), zero = at::zeros({2, 18, 6, 5}, at::kDouble);
  const auto [y, mean, rstd] = deformable_conv(x, w, b, zero, std::nullopt, false);
  for (int64_t n = 0; n < 2; ++n) {
    CHECK_TENSOR(y[n], at::conv2d(x[n].unsqueeze(0), w[n], b[n], 1, 1)[0], 1e-12);
  }
  const Tensor mask = at::rand({2, 9, 6, 5}, at::kDouble);
  const auto far = deformable_conv(x, w, b, at::full({2, 18, 6, 5}, 1e9, at::kDouble), mask, true);
  CHECK_TENSOR(std::get<0>(far), b.view({2, 4, 1, 1}).expand({2, 4, 6, 5}), 0.0);
  const auto op = find_op("din_ops::deformable_conv_backward");
  DIN_CHECK(op.schema().returns().size() == 5 && op.hasKernelForDispatchKey(c10::DispatchKey::CPU));
  DIN_CHECK_THROWS(deformable_conv(x, w, b, zero.narrow(1, 0, 16), std::nullopt, false),
                   c10::ValueError);
}

// ---------------------------------------------------------------------------------------------
// adain (the C++ user's AdaIN: one operator; the full checks are in tests/test_adain.py)

Five adain(const Tensor& content, const Tensor& style, bool unbiased) {
  static const auto op =
      find_op("din_ops::adain").typed<Five(const Tensor&, const Tensor&, double, bool)>();
  return op.call(content, style, 1e-5, unbiased);
}

DIN_TEST(adain_matches_the_formula_for_both_variances_and_a_batch1_style) {
  at::manual_seed(8);
  const Tensor content = randn({3, 4, 5, 6}, at::kDouble, 2.0, 3.0);
  for (const bool unbiased : {false, true}) {
    for (const int64_t ns : {3, 1}) {
      const Tensor style = randn({ns, 4, 7, 3}, at::kDouble, -1.0, 2.0);
      const auto [y, mean, rstd, style_mean, style_std] = adain(content, style, unbiased);
      const Tensor sm = style.mean({2, 3}, true);
      const Tensor ss = (style.var({2, 3}, unbiased, true) + 1e-5).sqrt();
      const Tensor cm = content.mean({2, 3}, true);
      const Tensor cs = (content.var({2, 3}, unbiased, true) + 1e-5).sqrt();
      CHECK_TENSOR(y, (content - cm) / cs * ss + sm, 1e-12);
      CHECK_TENSOR(style_mean, sm.view({ns, 4}), 1e-13);
      CHECK_TENSOR(style_std, ss.view({ns, 4}), 1e-13);
      CHECK_TENSOR(mean, cm.view({3, 4}), 1e-13);
    }
  }
  const auto op = find_op("din_ops::adain");
  DIN_CHECK(op.hasKernelForDispatchKey(c10::DispatchKey::CPU));
  DIN_CHECK(op.hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd));
  DIN_CHECK_THROWS(adain(content, randn({2, 4, 3, 3}, at::kDouble), false), c10::ValueError);
}

DIN_TEST(adain_fused_statistics_equal_the_separate_passes_bit_for_bit) {
  // A style of the content's batch is summed with the content in one pass (loops.h:
  // shifted_sums_pair, one loop for float at the avx512 level); a batch-1 style gets its statistics
  // first and each content plane is summed alone. The same additions per plane in the same order,
  // so the outputs are equal bit for bit, whichever compiler built the kernels. Planes: a tail after
  // the last whole vector, and more than one flush block (101 x 99 > 8192 values).
  at::manual_seed(11);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    for (const int64_t hw : {35, 4096, 9999}) {
      const int64_t h = hw == 9999 ? 101 : hw == 4096 ? 64 : 5, w = hw / h;
      const Tensor content = randn({2, 6, h, w}, dtype, 40.0, 3.0);
      const Tensor style = randn({1, 6, h, w}, dtype, -7.0, 0.5);
      const Five fused = adain(content, style.expand({2, -1, -1, -1}).contiguous(), true);
      const Five separate = adain(content, style, true);
      DIN_CHECK(at::equal(std::get<0>(fused), std::get<0>(separate)));
      DIN_CHECK(at::equal(std::get<1>(fused), std::get<1>(separate)));
      DIN_CHECK(at::equal(std::get<2>(fused), std::get<2>(separate)));
      DIN_CHECK(at::equal(std::get<3>(fused), std::get<3>(separate).expand({2, -1})));
      DIN_CHECK(at::equal(std::get<4>(fused), std::get<4>(separate).expand({2, -1})));
    }
  }
}

DIN_TEST(large_outputs_streamed_equal_the_cached_path) {
  // Outputs of 8 MiB and more are written with non-temporal stores (csrc/cpu/common.h:
  // stream_output); planes of 129 x 127 values start at every alignment. A plane's results depend
  // on that plane only, so they equal those of a few planes computed alone (small outputs, plain
  // stores), whichever compiler built the kernels.
  at::manual_seed(9);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const int64_t C = dtype == at::kFloat ? 130 : 66;
    const Tensor x = randn({1, C, 129, 127}, dtype, 0.5, 2.0);
    const Tensor gy = randn({1, C, 129, 127}, dtype);
    const Tensor style = randn({1, C, 129, 127}, dtype, -1.0, 3.0);
    DIN_CHECK(x.numel() * x.element_size() >= (int64_t(8) << 20));
    const auto few = [](const Tensor& t) { return t.slice(1, 5, 14).contiguous(); };
    const auto [y, mean, rstd] = instance_norm(x, 1e-5);
    const auto [y_few, mean_few, rstd_few] = instance_norm(few(x), 1e-5);
    DIN_CHECK(at::equal(few(y), y_few));
    DIN_CHECK(at::equal(few(instance_norm_backward(gy, x, mean, rstd)),
                        instance_norm_backward(few(gy), few(x), mean_few, rstd_few)));
    DIN_CHECK(at::equal(few(std::get<0>(adain(x, style, true))),
                        std::get<0>(adain(few(x), few(style), true))));
  }
}

DIN_TEST(large_channels_last_outputs_streamed_equal_the_cached_path) {
  // Channels-last outputs of 8 MiB and more are streamed too; with an odd C a pixel's channels start
  // at every alignment. A sample's results depend on that sample only (its row chunks are fixed by
  // its shape), so the second sample of a streamed batch equals that sample computed alone (half
  // the size, plain stores), whichever compiler built the kernels.
  at::manual_seed(10);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const int64_t C = dtype == at::kFloat ? 129 : 65;
    const auto cl = [](const Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); };
    const Tensor x = cl(randn({2, C, 91, 91}, dtype, 0.5, 2.0));
    const Tensor gy = cl(randn({2, C, 91, 91}, dtype));
    const Tensor style = cl(randn({2, C, 91, 91}, dtype, -1.0, 3.0));
    DIN_CHECK(x.numel() * x.element_size() >= (int64_t(8) << 20));
    const auto second = [](const Tensor& t) { return t.slice(0, 1, 2); };
    const auto [y, mean, rstd] = instance_norm(x, 1e-5);
    const auto [y_one, mean_one, rstd_one] = instance_norm(second(x), 1e-5);
    DIN_CHECK(y.is_contiguous(at::MemoryFormat::ChannelsLast));
    DIN_CHECK(at::equal(second(y), y_one));
    DIN_CHECK(at::equal(second(instance_norm_backward(gy, x, mean, rstd)),
                        instance_norm_backward(second(gy), second(x), mean_one, rstd_one)));
    DIN_CHECK(at::equal(second(std::get<0>(adain(x, style, true))),
                        std::get<0>(adain(second(x), second(style), true))));
  }
}

}  // namespace

DIN_TEST(eps_zero_constant_planes_and_non_finite_inputs) {
  // eps = 0 and zero variance: rstd is defined as 0, so y = 0 (DIN: y = bias) and gx = 0.
  const Tensor c = at::full({2, 3, 4, 5}, 2.5, at::kFloat);
  const auto [y, mean, rstd] = instance_norm(c, 0.0);
  DIN_CHECK(at::equal(y, at::zeros_like(y)));
  DIN_CHECK(at::equal(rstd, at::zeros_like(rstd)));
  DIN_CHECK(at::equal(instance_norm_backward(at::ones_like(y), c, mean, rstd), at::zeros_like(c)));
  const Tensor w = randn({2, 4, 3}, at::kFloat), b = randn({2, 4}, at::kFloat);
  const auto [yd, md, rd] = din_1x1(c, w, b, 0.0);
  CHECK_TENSOR(yd, plane(b).expand({2, 4, 4, 5}), 1e-6);
  const auto [gx, gw, gb] = din_1x1_backward(at::ones_like(yd), c, w, md, rd);
  DIN_CHECK(at::equal(gx, at::zeros_like(gx)));
  // inf or NaN in a plane: that plane is NaN, the other planes are untouched.
  for (const double bad : {std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()}) {
    for (const auto dtype : kDtypes) {
      Tensor x = randn({1, 2, 3, 3}, dtype);
      x.select(1, 0).select(1, 1).select(1, 2).fill_(bad);
      const auto [yn, mn, rn] = instance_norm(x, 1e-5);
      DIN_CHECK(at::isnan(yn.select(1, 0)).all().item<bool>());
      CHECK_TENSOR(yn.select(1, 1), ref_instance_norm(x, 1e-5).y.select(1, 1), tol_for(dtype));
    }
  }
}

DIN_TEST(autocast_computes_in_float32_and_returns_the_autocast_dtype) {
  const Tensor x = randn({2, 3, 4, 5}, at::kFloat, 50.0, 2.0);
  const Tensor w = randn({2, 4, 3}, at::kBFloat16);  // mixed dtypes are fine under autocast
  const auto [y32, m32, r32] = din_1x1(x, w.to(at::kFloat), std::nullopt, 1e-5);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  const auto [y, mean, rstd] = din_1x1(x, w, std::nullopt, 1e-5);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  DIN_CHECK(y.scalar_type() == at::kBFloat16);
  DIN_CHECK(mean.scalar_type() == at::kDouble);
  DIN_CHECK(at::equal(y, y32.to(at::kBFloat16)));
  DIN_CHECK(at::equal(mean, m32));
}

int main(int argc, char** argv) { return din_ops::test::run_all(argc, argv); }
