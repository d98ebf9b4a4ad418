"""Numerical edge cases of every normalizing operator (and dynamic_conv2d where it applies): large
means, tiny variances, constant planes, eps = 0, inf/NaN inputs, and float16/bfloat16 inputs whose
squares would overflow in their own dtype. Always compared with din_ops.reference in float64 on the
same (rounded) input."""
from __future__ import annotations

import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DTYPES, layout, max_error

# name: (din_ops function, reference, parameter factory (x, generator) -> (args, kwargs))


def _w(shape, gen, dtype, fan_in):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * fan_in**-0.5).to(dtype)


def _din_1x1(x, gen):
    n, c = x.shape[:2]
    return [_w((n, 5, c), gen, x.dtype, c), _w((n, 5), gen, x.dtype, 1)], {}


def _din_grouped(x, gen):
    n, c = x.shape[:2]
    return [_w((n, 6, c // 2, 3, 3), gen, x.dtype, 9 * c // 2), _w((n, 6), gen, x.dtype, 1)], dict(padding=1, groups=2)


def _din_depthwise(x, gen):
    n, c = x.shape[:2]
    return [_w((n, c, 1, 3, 3), gen, x.dtype, 9), _w((n, c), gen, x.dtype, 1)], dict(padding=1, groups=c, stride=(1, 2))


def _sain_full(x, gen):
    return [(1 + torch.randn(x.shape, generator=gen, dtype=torch.float64)).to(x.dtype),
            torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)], {}


def _sain_plane(x, gen):
    n, c = x.shape[:2]
    return [(1 + torch.randn(n, c, 1, 1, generator=gen, dtype=torch.float64)).to(x.dtype),
            torch.randn(n, c, 1, 1, generator=gen, dtype=torch.float64).to(x.dtype)], {}


def _deformable_din(x, w, b, offset, mask, **kwargs):
    return din_ops.dynamic_instance_norm(x, w, b, offset=offset, mask=mask, **kwargs)


def _deformable(x, gen):
    # 3x3, two offset groups, padding 1: Ho, Wo = H, W. Offsets with fractional parts in [0.1, 0.9]
    # (bilinear sampling is differentiable there), up to 2 pixels away, some taps outside the input.
    n, c, h, w = x.shape
    whole = torch.randint(-2, 3, (n, 36, h, w), generator=gen).double()
    offset = whole + 0.1 + 0.8 * torch.rand(n, 36, h, w, generator=gen, dtype=torch.float64)
    mask = torch.rand(n, 18, h, w, generator=gen, dtype=torch.float64)
    return ([_w((n, 6, c, 3, 3), gen, x.dtype, 9 * c), _w((n, 6), gen, x.dtype, 1), offset.to(x.dtype), mask.to(x.dtype)],
            dict(padding=1))


NORMALIZING = {
    "instance_norm": (din_ops.instance_norm, reference.instance_norm, lambda x, gen: ([], {})),
    "din_1x1": (din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, _din_1x1),
    "din_grouped3x3": (din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, _din_grouped),
    "din_depthwise3x3": (din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, _din_depthwise),
    "sain_full": (din_ops.spatially_adaptive_instance_norm, reference.spatially_adaptive_instance_norm, _sain_full),
    "sain_plane": (din_ops.spatially_adaptive_instance_norm, reference.spatially_adaptive_instance_norm, _sain_plane),
    "deformable_din": (_deformable_din, reference.deformable_instance_norm, _deformable),
}


def run(name, x, eps=None, seed=0, grad=False, gy=None):
    """The op and its float64 reference on x (and the gradients of x and the parameters when grad)."""
    ours, ref, params = NORMALIZING[name]
    args, kwargs = params(x, torch.Generator().manual_seed(seed))
    if eps is not None:
        kwargs["eps"] = eps
    leaves = [t.detach().clone().requires_grad_(grad) for t in (x, *args)]
    leaves64 = [t.detach().double().requires_grad_(grad) for t in (x, *args)]
    y = ours(*leaves, **kwargs)
    y64 = ref(*leaves64, **kwargs)
    if not grad:
        return y, y64
    if gy is None:
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    y.backward(gy.to(y.dtype))
    y64.backward(gy)
    return y, y64, [t.grad for t in leaves], [t.grad for t in leaves64]


def rel_error(actual, expected):
    return max_error(actual, expected) / max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("name", NORMALIZING)
@pytest.mark.parametrize("mean", [1e4, 1e6])
@pytest.mark.parametrize("form", ["contiguous", "channels_last"])
def test_large_mean_float32_matches_exact(name, mean, form):
    # float32 x = mean + unit noise: within 1e-4 (of the output's scale) of the exact float64 result
    # on that same float32 input; F.instance_norm is off by ~5e-2 at 1e6.
    gen = torch.Generator().manual_seed(1)
    x = layout((mean + torch.randn(2, 8, 17, 19, generator=gen, dtype=torch.float64)).float(), form)
    y, y64, grads, grads64 = run(name, x, grad=True)
    assert rel_error(y, y64) < 1e-4
    for g, g64 in zip(grads, grads64):
        assert rel_error(g, g64) < 1e-4


@pytest.mark.parametrize("name", NORMALIZING)
@pytest.mark.parametrize("spread,eps", [(1e-4, 1e-12), (1e-4, 1e-5), (1e-20, 0.0)])
def test_tiny_variances(name, spread, eps):
    # A variance far below eps (the output shrinks towards 0) or far above a tiny eps (the output
    # is O(1) however small the spread), float32 and float64.
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(2)
        x = (3.0 + spread * torch.randn(2, 4, 9, 10, generator=gen, dtype=torch.float64)).to(dtype)
        y, y64, grads, grads64 = run(name, x, eps=eps, grad=True)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        assert rel_error(y, y64) < tol
        for g, g64 in zip(grads[1:], grads64[1:]):  # parameter gradients; grad_x scales with rstd
            assert rel_error(g, g64) < tol
        gx, gx64 = grads[0], grads64[0]
        assert max_error(gx, gx64) <= tol * gx64.abs().max().item() + 1e-30


@pytest.mark.parametrize("name", NORMALIZING)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_constant_planes(name, dtype, eps):
    # Some planes constant (every pixel equal), the others random: a constant plane normalizes to
    # exactly 0 (with eps = 0 as well: var + eps == 0 is defined as rstd = 0), never NaN, and its
    # gradient is finite and matches the reference; the other planes are unaffected.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 7, 5, generator=gen, dtype=torch.float64)
    x[0, 1] = 2.5
    x[1, 4] = -1e3
    x[1, 0] = 0.0
    x = x.to(dtype)
    y, y64, grads, grads64 = run(name, x, eps=eps, grad=True)
    assert torch.isfinite(y).all()
    for g in grads:
        assert torch.isfinite(g).all()
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 2 * torch.finfo(dtype).eps)
    scale = max(1.0, y64.abs().max().item())
    assert max_error(y, y64) <= 10 * tol * scale
    if name == "instance_norm":
        for n, c in ((0, 1), (1, 4), (1, 0)):
            assert torch.equal(y[n, c], torch.zeros_like(y[n, c]))
            if eps == 0.0:
                assert torch.equal(grads[0][n, c], torch.zeros_like(grads[0][n, c]))


@pytest.mark.parametrize("name", NORMALIZING)
def test_eps_zero_constant_plane_is_defined(name):
    # eps = 0 and a constant plane: rstd is reported as 0, the plane's normalized value is 0, so
    # DIN gives its bias there, spatially adaptive IN its beta; the gradient of x in that plane is 0.
    x = torch.full((1, 4, 6, 6), 7.0, dtype=torch.float64)
    y, y64, grads, grads64 = run(name, x, eps=0.0, grad=True)
    torch.testing.assert_close(y, y64, rtol=0, atol=1e-12)
    assert torch.equal(grads[0], torch.zeros_like(grads[0]))
    for g, g64 in zip(grads, grads64):
        torch.testing.assert_close(g, g64, rtol=0, atol=1e-12)
    _, mean, rstd = torch.ops.din_ops.instance_norm(x, 0.0)
    assert torch.equal(rstd, torch.zeros_like(rstd)) and torch.equal(mean, torch.full_like(mean, 7.0))
    # The same for a single pixel, where the variance is always 0.
    one = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    assert torch.equal(din_ops.instance_norm(one, 0.0), torch.zeros_like(one))


@pytest.mark.parametrize("name", [*NORMALIZING, "dynamic_conv2d"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=str)
@pytest.mark.parametrize("where", ["first", "middle"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_finite_inputs_propagate_like_the_reference(name, value, where, dtype):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 7, generator=gen, dtype=torch.float64)
    x[1, 2, *((0, 0) if where == "first" else (3, 4))] = value
    x = x.to(dtype)
    if name == "dynamic_conv2d":
        w = torch.randn(2, 4, 2, 3, 3, generator=gen, dtype=torch.float64).to(dtype)
        y = din_ops.dynamic_conv2d(x, w, padding=1, groups=2)
        y64 = reference.dynamic_conv2d(x.double(), w.double(), padding=1, groups=2)
    else:
        y, y64 = run(name, x)
    # NaN exactly where the reference has NaN (the whole plane, and whatever mixes it in), the same
    # infinities, and the finite values close.
    assert torch.equal(y.isnan(), y64.isnan())
    assert torch.equal(y.isinf(), y64.isinf())
    assert torch.equal(y[y.isinf()], y64[y64.isinf()].to(dtype))
    finite = torch.isfinite(y64)
    assert finite.any()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert max_error(y[finite], y64[finite]) <= tol * max(1.0, y64[finite].abs().max().item())


@pytest.mark.parametrize("name", NORMALIZING)
@pytest.mark.parametrize("dtype,center,spread", [(torch.float16, 3e4, 1e3), (torch.float16, -5e4, 5e3),
                                                  (torch.bfloat16, 1e17, 1e16)], ids=str)
def test_low_precision_does_not_overflow(name, dtype, center, spread):
    # (x - mean)^2 overflows float16 (max 65504) here, and the plain float16 formula returns inf or
    # NaN; the normalized output is O(1) and fits, and so must the kernels' output and gradients.
    gen = torch.Generator().manual_seed(5)
    x = center + spread * torch.randn(2, 4, 8, 9, generator=gen, dtype=torch.float64)
    x = (x.clamp(-65000, 65000) if dtype == torch.float16 else x).to(dtype)
    y, y64, grads, grads64 = run(name, x, grad=True)
    assert torch.isfinite(y).all()
    ulp = torch.finfo(dtype).eps
    assert rel_error(y, y64) <= 2 * ulp
    for g, g64 in zip(grads, grads64):
        assert torch.isfinite(g).all()
        assert max_error(g, g64) <= 4 * ulp * max(g64.abs().max().item(), torch.finfo(dtype).tiny)
