"""The identities of docs/math.md, checked in float64 against autograd on the plain formulas.

These test the rearrangements the kernels are built on (the 1x1 fold and its backward epilogue,
the unbiased-variance rescaling, the fold of the normalization into a bilinear sampler, ...), not the
kernels themselves: those are compared with din_ops.reference in the other test files.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from din_ops.ops import _unbiased_scale

DT = torch.float64


def stats(x, eps):
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return mu, (var + eps).rsqrt()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(7)


def test_instance_norm_backward(gen):
    x = (3.0 + torch.randn(2, 3, 5, 6, dtype=DT, generator=gen)).requires_grad_()
    g = torch.randn(2, 3, 5, 6, dtype=DT, generator=gen)
    mu, rstd = stats(x, 1e-5)
    xh = (x - mu) * rstd
    (expected,) = torch.autograd.grad(xh, x, g)
    xh = xh.detach()
    gx = rstd.detach() * (g - g.mean((2, 3), keepdim=True) - xh * (g * xh).mean((2, 3), keepdim=True))
    torch.testing.assert_close(gx, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hw", [(1, 1), (1, 2), (4, 5)])
def test_unbiased_variance_as_rescaled_biased(gen, hw):
    x = torch.randn(2, 3, *hw, dtype=DT, generator=gen)
    eps = 1e-3
    m = hw[0] * hw[1]
    var = x.var(dim=(2, 3), unbiased=True, keepdim=True) if m > 1 else torch.zeros(2, 3, 1, 1, dtype=DT)
    expected = (x - x.mean((2, 3), keepdim=True)) / (var + eps).sqrt()
    scale, eps_ = _unbiased_scale(x, eps, True)
    mu, rstd = stats(x, eps_)
    torch.testing.assert_close(scale * (x - mu) * rstd, expected, rtol=1e-12, atol=1e-12)
    if m > 1:
        assert math.isclose(eps_, eps * (m - 1) / m) and math.isclose(scale, math.sqrt((m - 1) / m))
    else:  # x - mu is 0 whatever the scale: the one-value case is defined by the arguments
        assert (scale, eps_) == (1.0, eps)


def test_1x1_fold_forward_and_backward(gen):
    n, c, co, h, w = 2, 5, 4, 6, 7
    x = (10.0 + 2.0 * torch.randn(n, c, h, w, dtype=DT, generator=gen)).requires_grad_()
    W = torch.randn(n, co, c, dtype=DT, generator=gen).requires_grad_()
    b = torch.randn(n, co, dtype=DT, generator=gen).requires_grad_()
    gy = torch.randn(n, co, h * w, dtype=DT, generator=gen)
    mu, rstd = stats(x, 1e-5)
    y = W @ ((x - mu) * rstd).reshape(n, c, -1) + b[:, :, None]
    gx_ref, gW_ref, gb_ref = torch.autograd.grad(y, (x, W, b), gy)

    with torch.no_grad():
        X, mu, rstd, M = x.reshape(n, c, -1), mu.reshape(n, c, 1), rstd.reshape(n, c, 1), h * w
        Wf = W * rstd.transpose(1, 2)  # W' = W * rstd per input channel
        bf = b - (Wf @ mu).squeeze(2)  # b' = b - W' mu
        torch.testing.assert_close(Wf @ X + bf[:, :, None], y, rtol=1e-12, atol=1e-12)

        gb = gy.sum(2)
        gW = rstd.transpose(1, 2) * (gy @ X.transpose(1, 2) - gb[:, :, None] * mu.transpose(1, 2))
        m1 = (W.transpose(1, 2) @ gb[:, :, None]) / M
        m2 = (W * gW).sum(1)[:, :, None] / M
        k1 = rstd**2 * m2
        k0 = rstd * (rstd * mu * m2 - m1)
        gx = Wf.transpose(1, 2) @ gy - k1 * X + k0
    torch.testing.assert_close(gb, gb_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gW, gW_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx.reshape(n, c, h, w), gx_ref, rtol=1e-10, atol=1e-12)


def test_kxk_folds_rstd_but_not_the_mean(gen):
    x = 5.0 + torch.randn(1, 3, 6, 6, dtype=DT, generator=gen)
    W = torch.randn(4, 3, 3, 3, dtype=DT, generator=gen)
    mu, rstd = stats(x, 1e-5)
    y = F.conv2d((x - mu) * rstd, W, padding=1)
    # rstd folds into the weight exactly (the kernels scale the weight, not every value of x) ...
    torch.testing.assert_close(F.conv2d(x - mu, W * rstd.reshape(1, 3, 1, 1), padding=1), y,
                               rtol=1e-12, atol=1e-12)
    # ... the mean does not: W' x + b' differs at the border, where padding x with 0 is not padding xh
    Wf = W * rstd.reshape(1, 3, 1, 1)
    folded = F.conv2d(x, Wf, padding=1) - (Wf.sum((2, 3)) @ mu.reshape(3, 1)).reshape(1, 4, 1, 1)
    torch.testing.assert_close(folded[..., 1:-1, 1:-1], y[..., 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    assert (folded[..., 0, :] - y[..., 0, :]).abs().max() > 1.0


def test_normalization_folds_into_the_bilinear_sampler(gen):
    x = 4.0 + torch.randn(2, 3, 7, 8, dtype=DT, generator=gen)
    grid = 2.4 * torch.rand(2, 5, 6, 2, dtype=DT, generator=gen) - 1.2  # some points near or past the edge
    grid[0, 0, 0] = torch.tensor([1.2, -1.3], dtype=DT)  # one beyond the plane on both axes
    mu, rstd = stats(x, 1e-5)
    sample = lambda t: F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=True)  # noqa: E731
    weights = sample(torch.ones_like(x))  # sum of the in-plane corner weights
    assert weights.min() < 1.0  # the folded form must handle corners outside the plane
    torch.testing.assert_close(rstd * (sample(x) - mu * weights), sample((x - mu) * rstd), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_plane", [False, True])
def test_spatially_adaptive_backward(gen, per_plane):
    shape = (2, 3, 4, 5)
    mshape = (2, 3, 1, 1) if per_plane else shape
    x = (2.0 + torch.randn(*shape, dtype=DT, generator=gen)).requires_grad_()
    gamma = torch.randn(*mshape, dtype=DT, generator=gen).requires_grad_()
    beta = torch.randn(*mshape, dtype=DT, generator=gen).requires_grad_()
    gy = torch.randn(*shape, dtype=DT, generator=gen)
    mu, rstd = stats(x, 1e-5)
    xh = (x - mu) * rstd
    gx_ref, gg_ref, gbeta_ref = torch.autograd.grad(gamma * xh + beta, (x, gamma, beta), gy)
    xh, rstd = xh.detach(), rstd.detach()
    g = gamma.detach() * gy
    gx = rstd * (g - g.mean((2, 3), keepdim=True) - xh * (g * xh).mean((2, 3), keepdim=True))
    gg, gbeta = gy * xh, gy
    if per_plane:
        gg, gbeta = gg.sum((2, 3), keepdim=True), gbeta.sum((2, 3), keepdim=True)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gg, gg_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gbeta, gbeta_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kernel,padding,dilation",
    [((3, 3), (1, 1, 1, 1), (1, 1)), ((2, 3), (0, 1, 2, 0), (2, 1)), ((3, 1), (2, 2, 0, 0), (1, 1))],
)
def test_plane_sums_of_the_input_gradient_from_the_weight_gradient(gen, kernel, padding, dilation):
    # g = dL/dxh of a stride-1 convolution: sum_p g = sum_{co,t} W * S and sum_p g * xh =
    # sum_{co,t} W * gW, S[co, t] the sum of gy over the outputs whose tap t reads inside the input.
    kh, kw = kernel
    pt, pb, pl, pr = padding
    dh, dw = dilation
    H, W, C, Co = 6, 7, 3, 4
    xh = torch.randn(1, C, H, W, dtype=DT, generator=gen).requires_grad_()
    w = torch.randn(Co, C, kh, kw, dtype=DT, generator=gen).requires_grad_()
    y = F.conv2d(F.pad(xh, (pl, pr, pt, pb)), w, dilation=dilation)
    gy = torch.randn(y.shape, dtype=DT, generator=gen)
    g, gw = torch.autograd.grad(y, (xh, w), gy)
    Ho, Wo = y.shape[2], y.shape[3]
    S = torch.zeros(Co, kh, kw, dtype=DT)
    for i in range(kh):
        a, b = max(0, pt - i * dh), min(Ho, H + pt - i * dh)
        for j in range(kw):
            c, d = max(0, pl - j * dw), min(Wo, W + pl - j * dw)
            S[:, i, j] = gy[0, :, a:b, c:d].sum((1, 2))
    w = w.detach()
    torch.testing.assert_close(g.sum((0, 2, 3)), (w * S[:, None]).sum((0, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        (g * xh.detach()).sum((0, 2, 3)), (w * gw).sum((0, 2, 3)), rtol=1e-12, atol=1e-12
    )
