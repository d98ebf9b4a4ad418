"""din_ops.adain, din_ops.style_stats and din_ops.nn.AdaIN against AdaIN written the way style-transfer
code writes it (``calc_mean_std`` with ``torch.var`` and eps inside the square root), the unbiased
variance option of every normalizing function, and the din_ops::instance_stats operator."""
import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES


# ---- AdaIN as such code writes it (the oracle of this file; independent of din_ops.reference) ----

def calc_mean_std(feat: torch.Tensor, eps: float = 1e-5, unbiased: bool = True):
    n, c = feat.shape[:2]
    var = feat.reshape(n, c, -1).var(dim=2, unbiased=unbiased) + eps
    return feat.reshape(n, c, -1).mean(dim=2).reshape(n, c, 1, 1), var.sqrt().reshape(n, c, 1, 1)


def plain_adain(content, style, alpha=1.0, eps=1e-5, unbiased=True):
    style_mean, style_std = calc_mean_std(style, eps, unbiased)
    content_mean, content_std = calc_mean_std(content, eps, unbiased)
    normalized = (content - content_mean.expand(content.shape)) / content_std.expand(content.shape)
    t = normalized * style_std.expand(content.shape) + style_mean.expand(content.shape)
    return alpha * t + (1 - alpha) * content


def features(shape, dtype=torch.float64, device="cpu", scale=2.0, offset=0.5):
    return (torch.randn(*shape, dtype=torch.float64) * scale + offset).to(device, dtype)


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


# ---- values ----

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize(
    "content_shape, style_shape",
    [((2, 8, 16, 16), (2, 8, 16, 16)), ((3, 5, 7, 9), (3, 5, 11, 4)), ((4, 16, 8, 8), (1, 16, 8, 8)),
     ((1, 3, 2, 1), (1, 3, 1, 2))],
)
def test_float64_matches_plain_adain(device, unbiased, content_shape, style_shape):
    content = features(content_shape, device=device)
    style = features(style_shape, device=device, scale=3.0, offset=-1.0)
    y = din_ops.adain(content, style, unbiased=unbiased)
    expected = plain_adain(content, style.expand(content.shape[0], *style.shape[1:]), unbiased=unbiased)
    assert y.shape == content.shape and y.dtype == torch.float64
    assert rel_err(y, expected) <= 1e-12


def test_default_is_biased_and_differs_from_unbiased_by_the_expected_amount():
    content, style = features((2, 4, 16, 16)), features((2, 4, 8, 8))
    y = din_ops.adain(content, style)
    assert rel_err(y, plain_adain(content, style, unbiased=False)) <= 1e-12
    # The unbiased std is sqrt(M / (M - 1)) times the biased one (eps aside): ~1 + 1 / (2 M). With
    # equal sizes the factors of style and content cancel; here the scale of std_s * xh changes by
    # about 1 / (2 * 64) - 1 / (2 * 256).
    yu = din_ops.adain(content, style, unbiased=True)
    mean_s = style.mean(dim=(2, 3), keepdim=True)
    ratio = ((yu - mean_s).norm() / (y - mean_s).norm()).item()
    assert abs(ratio - 1 - (1 / 128 - 1 / 512)) < 2e-4
    assert rel_err(yu, plain_adain(content, style, unbiased=True)) <= 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_low_precision(device, dtype, tol):
    content = features((2, 32, 16, 16), device=device)
    style = features((2, 32, 12, 12), device=device, scale=1.5, offset=0.3)
    y = din_ops.adain(content.to(dtype), style.to(dtype), unbiased=True)
    assert y.dtype == dtype
    # Against the exact AdaIN of the rounded inputs, relative to the output's scale.
    expected = plain_adain(content.to(dtype).double(), style.to(dtype).double())
    assert rel_err(y, expected) <= tol
    # And no worse than the plain formula computed in that dtype (bfloat16/float16 only).
    if dtype != torch.float32:
        assert rel_err(y, expected) <= 2 * rel_err(plain_adain(content.to(dtype), style.to(dtype)), expected) + 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last(device):
    content = features((2, 8, 6, 10), device=device).contiguous(memory_format=torch.channels_last)
    style = features((1, 8, 5, 5), device=device).contiguous(memory_format=torch.channels_last)
    y = din_ops.adain(content, style, unbiased=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, plain_adain(content, style.expand(2, -1, -1, -1))) <= 1e-12


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_alpha(alpha):
    content, style = features((2, 6, 8, 8)), features((2, 6, 9, 7))
    y = din_ops.adain(content, style, alpha=alpha, unbiased=True)
    assert rel_err(y, plain_adain(content, style, alpha=alpha)) <= 1e-12
    if alpha == 0.0:
        assert torch.equal(y, content)


def test_batch1_style_broadcast_equals_expanded_style():
    content, style = features((5, 8, 8, 8)), features((1, 8, 6, 6))
    y = din_ops.adain(content, style)
    assert torch.allclose(y, din_ops.adain(content, style.expand(5, -1, -1, -1).contiguous()),
                          rtol=0, atol=1e-13)
    for n in range(5):  # every sample took the one style
        assert rel_err(y[n:n + 1], din_ops.adain(content[n:n + 1], style)) <= 1e-13


def test_precomputed_stats_and_mixing():
    content, s1, s2 = features((3, 8, 8, 8)), features((1, 8, 10, 10)), features((1, 8, 10, 10))
    mean, std = din_ops.style_stats(s1, unbiased=True)
    assert mean.shape == std.shape == (1, 8, 1, 1)
    m_ref, s_ref = calc_mean_std(s1)
    assert rel_err(mean, m_ref) <= 1e-13 and rel_err(std, s_ref) <= 1e-13
    y = din_ops.adain(content, (mean, std), unbiased=True)
    assert rel_err(y, din_ops.adain(content, s1, unbiased=True)) <= 1e-13
    # (N, C) statistics are accepted too.
    y2 = din_ops.adain(content, (mean.reshape(1, 8), std.reshape(1, 8)), unbiased=True)
    assert torch.equal(y, y2)
    # Style interpolation by mixing statistics: AdaIN is affine in (mean, std) for a fixed content,
    # so mixing the statistics equals mixing the outputs.
    m2, sd2 = din_ops.style_stats(s2, unbiased=True)
    w = 0.25
    mixed = din_ops.adain(content, (w * mean + (1 - w) * m2, w * std + (1 - w) * sd2), unbiased=True)
    outs = w * din_ops.adain(content, s1, unbiased=True) + (1 - w) * din_ops.adain(content, s2, unbiased=True)
    assert rel_err(mixed, outs) <= 1e-12


def test_reference_backend_and_module():
    content, style = features((2, 4, 5, 5)), features((2, 4, 6, 6))
    expected = plain_adain(content, style, alpha=0.7)
    assert rel_err(din_ops.adain(content, style, alpha=0.7, unbiased=True, backend="reference"),
                   expected) <= 1e-12
    layer = din_ops.nn.AdaIN(alpha=0.7, unbiased=True)
    assert list(layer.parameters()) == []
    assert rel_err(layer(content, style), expected) <= 1e-12
    assert rel_err(layer(content, style, alpha=1.0), plain_adain(content, style)) <= 1e-12
    assert "unbiased=True" in repr(layer)


# ---- gradients ----

@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("style_batch", [2, 1])
def test_gradcheck_content_and_style(unbiased, style_batch):
    content = features((2, 3, 4, 5)).requires_grad_()
    style = features((style_batch, 3, 3, 4)).requires_grad_()
    torch.autograd.gradcheck(lambda c, s: din_ops.adain(c, s, alpha=0.8, unbiased=unbiased),
                             (content, style))


def test_gradcheck_precomputed_stats():
    content = features((3, 4, 5, 5)).requires_grad_()
    mean = torch.randn(1, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    std = (torch.rand(3, 4, dtype=torch.float64) + 0.5).requires_grad_()
    torch.autograd.gradcheck(lambda c, m, s: din_ops.adain(c, (m, s), unbiased=True), (content, mean, std))


def test_gradcheck_style_stats():
    style = features((2, 3, 4, 3)).requires_grad_()
    torch.autograd.gradcheck(lambda s: din_ops.style_stats(s, unbiased=True), (style,))
    torch.autograd.gradcheck(lambda s: torch.ops.din_ops.instance_stats(s), (style,))


def test_gradients_match_plain_adain():
    content = features((3, 8, 6, 6)).requires_grad_()
    style = features((1, 8, 7, 7)).requires_grad_()
    g = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    gc, gs = torch.autograd.grad(din_ops.adain(content, style, unbiased=True), (content, style), g)
    ec, es = torch.autograd.grad(plain_adain(content, style.expand(3, -1, -1, -1)), (content, style), g)
    assert rel_err(gc, ec) <= 1e-10 and rel_err(gs, es) <= 1e-10


def test_float32_gradients():
    content = features((2, 16, 8, 8), torch.float32).requires_grad_()
    style = features((2, 16, 8, 8), torch.float32).requires_grad_()
    g = torch.randn(2, 16, 8, 8)
    gc, gs = torch.autograd.grad(din_ops.adain(content, style, unbiased=True), (content, style), g)
    c64, s64 = content.detach().double().requires_grad_(), style.detach().double().requires_grad_()
    ec, es = torch.autograd.grad(plain_adain(c64, s64), (c64, s64), g.double())
    assert rel_err(gc, ec) <= 1e-4 and rel_err(gs, es) <= 1e-4


# ---- the unbiased variance, and H * W = 1 ----

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 1, 7), (2, 2, 2, 1)])
def test_unbiased_instance_norm_matches_torch_var(shape):
    x = features(shape)
    n, c = shape[:2]
    mean = x.reshape(n, c, -1).mean(2)[..., None, None]
    var = x.reshape(n, c, -1).var(2, unbiased=True)[..., None, None]
    expected = (x - mean) / torch.sqrt(var + 1e-5)
    for backend in ("cpu", "reference"):
        y = din_ops.instance_norm(x, unbiased=True, backend=backend)
        assert rel_err(y, expected) <= 1e-12
    gamma, beta = features((n, c, 1, 1)), features((1, c, 1, 1))
    y = din_ops.spatially_adaptive_instance_norm(x, gamma, beta, unbiased=True)
    assert rel_err(y, gamma * expected + beta) <= 1e-12
    w, b = features((n, 6, c)), features((n, 6))
    y = din_ops.dynamic_instance_norm(x, w, b, unbiased=True)
    assert rel_err(y, torch.einsum("noc,nchw->nohw", w, expected) + b[..., None, None]) <= 1e-12
    w3 = features((n, 4, c, 3, 3))
    y = din_ops.dynamic_instance_norm(x, w3, None, padding=1, unbiased=True)
    assert rel_err(y, reference.dynamic_conv2d(expected, w3, None, padding=1)) <= 1e-12
    offset = 0.3 * torch.randn(n, 2 * 9, *shape[2:], dtype=torch.float64)
    for backend in ("cpu", "reference"):
        y = din_ops.dynamic_instance_norm(x, w3, None, padding=1, offset=offset, unbiased=True, backend=backend)
        e = reference.deformable_conv2d(expected, w3, None, offset, padding=1)
        assert rel_err(y, e) <= 1e-12
    d = features((1, c))
    y = din_ops.dynamic_instance_norm(x, d, b[:, :c], unbiased=True)
    assert rel_err(y, d[..., None, None] * expected + b[:, :c, None, None]) <= 1e-12


def test_single_pixel_unbiased_is_defined_as_zero_variance():
    style = features((2, 3, 1, 1))
    # torch.var of one value is NaN; din_ops defines that variance as 0.
    with pytest.warns(UserWarning):
        assert torch.isnan(style.reshape(2, 3, -1).var(2, unbiased=True)).all()
    mean, std = din_ops.style_stats(style, unbiased=True, eps=1e-5)
    assert torch.equal(mean, style)
    assert torch.allclose(std, torch.full_like(std, 1e-5 ** 0.5), rtol=1e-15, atol=0)
    ref_mean, ref_std = reference.style_stats(style, 1e-5, True)
    assert torch.equal(ref_mean, mean) and torch.allclose(ref_std, std, rtol=1e-15, atol=0)
    content = features((2, 3, 1, 1))
    # A single-pixel content plane normalizes to 0 in either convention: the output is the style mean.
    y = din_ops.adain(content, style, unbiased=True)
    assert torch.allclose(y, style, rtol=0, atol=1e-15)
    assert torch.equal(din_ops.instance_norm(content, unbiased=True), torch.zeros_like(content))


# ---- instance_stats: the statistics operator ----

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_instance_stats(dtype, memory_format):
    x = (features((3, 5, 7, 6)) + 1e3).to(dtype).contiguous(memory_format=memory_format)
    mean, var = torch.ops.din_ops.instance_stats(x)
    x64 = x.double().reshape(3, 5, -1)
    assert mean.dtype == var.dtype == torch.float64 and mean.shape == (3, 5)
    assert torch.allclose(mean, x64.mean(2), rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    assert torch.allclose(var, x64.var(2, unbiased=False), rtol=1e-10 if dtype == torch.float64 else 1e-3, atol=0)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_instance_stats_backward(memory_format):
    x = features((2, 5, 4, 6)).contiguous(memory_format=memory_format).requires_grad_()
    gm, gv = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    mean, var = torch.ops.din_ops.instance_stats(x)
    (gx,) = torch.autograd.grad((mean * gm).sum() + (var * gv).sum(), x)
    x64 = x.detach().clone().requires_grad_()
    m64 = x64.mean(dim=(2, 3))
    v64 = x64.var(dim=(2, 3), unbiased=False)
    (ex,) = torch.autograd.grad((m64 * gm).sum() + (v64 * gv).sum(), x64)
    assert rel_err(gx, ex) <= 1e-12
    assert gx.is_contiguous(memory_format=memory_format)
    # float32 with a large mean: the split mean keeps x - mean accurate.
    xf = (x.detach() + 1e4).float().requires_grad_()
    mean, var = torch.ops.din_ops.instance_stats(xf)
    (gf,) = torch.autograd.grad((var * gv).sum(), xf)
    xd = xf.detach().double().requires_grad_()
    (ed,) = torch.autograd.grad((xd.var(dim=(2, 3), unbiased=False) * gv).sum(), xd)
    assert rel_err(gf, ed) <= 1e-5


def test_style_stats_large_mean_float32():
    style = features((2, 8, 16, 16)) + 1e4
    mean, std = din_ops.style_stats(style.float(), unbiased=True)
    m64, s64 = calc_mean_std(style.float().double())
    assert rel_err(mean, m64) <= 1e-7 and rel_err(std, s64) <= 1e-6


def test_instance_stats_opcheck_and_compile():
    x = features((2, 3, 4, 5)).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.instance_stats, (x,))
    grads = (torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    mean = torch.ops.din_ops.instance_stats(x)[0].detach()
    torch.library.opcheck(torch.ops.din_ops.instance_stats_backward, (*grads, x.detach(), mean))
    content, style = features((2, 3, 4, 5)), features((1, 3, 6, 6))
    compiled = torch.compile(lambda c, s: din_ops.adain(c, s, alpha=0.5, unbiased=True), fullgraph=True)
    assert rel_err(compiled(content, style), din_ops.adain(content, style, alpha=0.5, unbiased=True)) <= 1e-13


# ---- the din_ops::adain operator: one pass over content and style ----

def _op_outputs_expected(content, style, eps, unbiased):
    """What din_ops::adain returns, from plain formulas: y, the content statistics in the convention
    of spatially_adaptive_instance_norm (rstd with eps * k, k = (M - 1) / M when unbiased), and the
    style's mean and std = sqrt(var_s + eps)."""
    n, c, h, w = content.shape
    m = h * w
    k = (m - 1) / m if unbiased and m > 1 else 1.0
    flat = content.double().reshape(n, c, m)
    mean = flat.mean(2)
    var = flat.var(2, unbiased=False) if n else flat.new_zeros(0, c)  # (torch.var warns on 0 / 0)
    rstd = 1 / torch.sqrt(var + eps * k)
    s_mean, s_std = reference.style_stats(style.double(), eps, unbiased)
    if n == 0:
        y = content.double()
    elif unbiased and m == 1:  # torch.var gives NaN; din_ops defines the variance as 0: y = mean_s
        y = s_mean.expand(n, -1, -1, -1).expand(content.shape)
    else:
        y = plain_adain(content.double(), style.double().expand(n, -1, -1, -1), eps=eps, unbiased=unbiased)
    return y, mean, rstd, s_mean.reshape(-1, c), s_std.reshape(-1, c)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize(
    "content_shape, style_shape, content_format, style_format",
    [((3, 5, 6, 7), (3, 5, 4, 9), "nchw", "nchw"),      # fused: style planes read in the plane loop
     ((3, 5, 6, 7), (1, 5, 4, 9), "nchw", "nchw"),      # batch-1 style: its statistics first
     ((3, 5, 6, 7), (3, 5, 4, 9), "nhwc", "nchw"),
     ((3, 5, 6, 7), (3, 5, 4, 9), "nchw", "nhwc"),
     ((2, 4, 1, 1), (2, 4, 1, 3), "nchw", "nchw"),
     ((0, 4, 3, 3), (1, 4, 2, 2), "nchw", "nchw")],     # empty batch: the style statistics still come
)
def test_adain_op_outputs(unbiased, content_shape, style_shape, content_format, style_format):
    fmt = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
    content = features(content_shape, offset=3.0).contiguous(memory_format=fmt[content_format])
    style = features(style_shape, scale=3.0, offset=-1.0).contiguous(memory_format=fmt[style_format])
    out = torch.ops.din_ops.adain(content, style, 1e-5, unbiased)
    expected = _op_outputs_expected(content, style, 1e-5, unbiased)
    for name, got, exp in zip(("y", "mean", "rstd", "style_mean", "style_std"), out, expected):
        assert got.shape == exp.shape, name
        if got.numel():
            assert rel_err(got, exp) <= 1e-12, name
    assert out[0].is_contiguous(memory_format=fmt[content_format])
    # The composite kernel (the CUDA path: instance_stats + spatially_adaptive_instance_norm) gives
    # the same results from the same formulas.
    composite = torch.ops.din_ops.adain.default._op_dk(
        torch._C.DispatchKey.CompositeExplicitAutograd, content, style, 1e-5, unbiased)
    for got, exp in zip(composite, out):
        assert got.shape == exp.shape
        assert torch.allclose(got, exp, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_adain_op_fused_and_precomputed_paths_agree(dtype, tol):
    content = features((4, 16, 9, 11), offset=50.0).to(dtype)
    style = features((1, 16, 8, 8), scale=3.0).to(dtype)
    fused = torch.ops.din_ops.adain(content, style.expand(4, -1, -1, -1).contiguous(), 1e-5, True)[0]
    broadcast = torch.ops.din_ops.adain(content, style, 1e-5, True)[0]
    expected = plain_adain(content.double(), style.double().expand(4, -1, -1, -1))
    assert rel_err(fused, expected) <= tol and rel_err(broadcast, expected) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("hw", [(5, 7), (64, 64), (101, 99)])
def test_fused_statistics_equal_the_separate_passes_bit_for_bit(dtype, hw):
    # A style of the content's batch is summed in the content's plane loop, each style plane in one
    # pass with its content plane where the instruction-set level allows (loops.h:
    # shifted_sums_pair); a batch-1 style gets its statistics first, and each content plane is
    # summed alone. Per plane the same additions in the same order, so every output must be equal
    # bit for bit. Plane sizes: a tail after the last whole vector, 4096 values, and more than one
    # flush block (101 x 99 > 8192).
    content = features((2, 6, *hw), scale=3.0, offset=40.0).to(dtype)
    style = features((1, 6, *hw), scale=0.5, offset=-7.0).to(dtype)
    for unbiased in (False, True):
        fused = torch.ops.din_ops.adain(content, style.expand(2, -1, -1, -1).contiguous(), 1e-5, unbiased)
        separate = torch.ops.din_ops.adain(content, style, 1e-5, unbiased)
        for name, a, b in zip(("y", "mean", "rstd"), fused[:3], separate[:3]):
            assert torch.equal(a, b), name
        for name, a, b in zip(("style_mean", "style_std"), fused[3:], separate[3:]):
            assert torch.equal(a, b.expand_as(a)), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_outputs_streamed_match_the_cached_path(dtype):
    # Outputs of 8 MiB and more are written with non-temporal stores (csrc/cpu/common.h:
    # stream_output); planes of 129 x 127 values start at every alignment. Each plane's result
    # depends on that plane only, so the streamed output must equal, bit for bit, that of a few of
    # its planes computed alone (a small output, written with plain stores).
    C = 130 if dtype == torch.float32 else 66
    content = features((1, C, 129, 127), offset=3.0).to(dtype)
    style = features((1, C, 129, 127), scale=3.0).to(dtype)
    assert content.numel() * content.element_size() >= 8 << 20
    y = din_ops.adain(content, style)
    assert torch.equal(y[:, 3:12], din_ops.adain(content[:, 3:12], style[:, 3:12]))
    assert rel_err(y, plain_adain(content.double(), style.double(), unbiased=False)) <= (
        2e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_channels_last_outputs_streamed_match_the_cached_path(dtype):
    # A channels_last content of 8 MiB and more is streamed too: the second sample of the batch
    # equals, bit for bit, that sample computed alone (half the size, plain stores). An odd C puts a
    # pixel's channels at every alignment.
    C = 129 if dtype == torch.float32 else 65
    cl = torch.channels_last
    content = features((2, C, 91, 91), offset=3.0).to(dtype).contiguous(memory_format=cl)
    style = features((2, C, 91, 91), scale=3.0).to(dtype).contiguous(memory_format=cl)
    assert content.numel() * content.element_size() >= 8 << 20
    y = din_ops.adain(content, style)
    assert y.is_contiguous(memory_format=cl)
    assert torch.equal(y[1:], din_ops.adain(content[1:], style[1:]))
    assert rel_err(y, plain_adain(content.double(), style.double(), unbiased=False)) <= (
        2e-6 if dtype == torch.float32 else 1e-12)


def test_adain_op_opcheck_and_compile():
    content = features((3, 4, 5, 6)).requires_grad_()
    for style in (features((3, 4, 3, 7)), features((1, 4, 5, 6)),
                  features((3, 4, 5, 6)).contiguous(memory_format=torch.channels_last)):
        for unbiased in (True, False):
            torch.library.opcheck(torch.ops.din_ops.adain,
                                  (content, style.requires_grad_(), 1e-5, unbiased))
    cl = content.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.adain, (cl, features((1, 4, 2, 2)), 1e-5, True))
    compiled = torch.compile(lambda c, s: din_ops.adain(c, s, unbiased=True), fullgraph=True)
    style = features((1, 4, 3, 3)).requires_grad_()
    y = compiled(content, style)
    assert rel_err(y, din_ops.adain(content, style, unbiased=True)) <= 1e-13
    (gs,) = torch.autograd.grad(y.sum() + (y * y).sum(), style)
    (es,) = torch.autograd.grad(plain_adain(content, style.expand(3, -1, -1, -1)).sum()
                                + plain_adain(content, style.expand(3, -1, -1, -1)).square().sum(), style)
    assert gs.shape == (1, 4, 3, 3) and rel_err(gs, es) <= 1e-10


@pytest.mark.parametrize("unbiased", [True, False])
def test_gradcheck_adain_op_single_pixel_and_channels_last(unbiased):
    # H * W = 1 for the content (unbiased: its variance is defined as 0) and for the style.
    for cs, ss in (((2, 3, 1, 1), (2, 3, 3, 2)), ((2, 3, 3, 4), (1, 3, 1, 1))):
        content, style = features(cs).requires_grad_(), features(ss).requires_grad_()
        torch.autograd.gradcheck(lambda c, s: din_ops.adain(c, s, unbiased=unbiased), (content, style))
    content = features((2, 3, 4, 3)).contiguous(memory_format=torch.channels_last).requires_grad_()
    style = features((2, 3, 3, 3)).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.autograd.gradcheck(lambda c, s: din_ops.adain(c, s, unbiased=unbiased), (content, style))
    # Only the content (or only the style) requiring a gradient.
    c_only = features((2, 3, 4, 4)).requires_grad_()
    torch.autograd.gradcheck(lambda c: din_ops.adain(c, style.detach(), unbiased=unbiased), (c_only,))


def test_adain_op_errors():
    content = features((2, 4, 5, 5))
    with pytest.raises(ValueError, match="expand the style to N or pass batch 1"):
        torch.ops.din_ops.adain(content, features((3, 4, 5, 5)), 1e-5, False)
    with pytest.raises(ValueError, match="C = 4"):
        torch.ops.din_ops.adain(content, features((2, 5, 5, 5)), 1e-5, False)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.din_ops.adain(content, features((2, 4, 5, 5)).float(), 1e-5, False)
    with pytest.raises(ValueError, match="eps >= 0"):
        torch.ops.din_ops.adain(content, content, -1.0, False)
    with pytest.raises(ValueError, match="Hs, Ws > 0"):
        torch.ops.din_ops.adain(content, features((2, 4, 0, 5)), 1e-5, False)
    with pytest.raises(ValueError, match="Hs, Ws > 0"):
        din_ops.adain(content, features((2, 4, 0, 5)))


# ---- errors ----

def test_errors_say_what_fits():
    content = features((4, 8, 6, 6))
    with pytest.raises(ValueError, match="expand style to N or pass batch 1"):
        din_ops.adain(content, features((2, 8, 6, 6)))
    with pytest.raises(ValueError, match="C = 8"):
        din_ops.adain(content, features((4, 7, 6, 6)))
    with pytest.raises(ValueError, match="expand style std to N or pass batch 1"):
        din_ops.adain(content, (torch.zeros(4, 8, dtype=torch.float64), torch.ones(3, 8, dtype=torch.float64)))
    with pytest.raises(TypeError, match="mean, std"):
        din_ops.adain(content, 3.0)
    with pytest.raises(ValueError, match="alpha in"):
        din_ops.adain(content, content, alpha=1.5)
    with pytest.raises(TypeError, match="unbiased"):
        din_ops.adain(content, content, unbiased=1)
    with pytest.raises(TypeError, match="dtype"):
        din_ops.adain(content, content.float())


def test_batch1_operands_opcheck_and_compile():
    """The operators with batch-1 weight, bias, gamma and beta: fake kernels (per-sample gradients
    of batch N) and autograd (summed to batch 1) agree with the CPU kernels."""
    x = features((3, 4, 5, 5)).requires_grad_()
    w = features((1, 6, 4)).requires_grad_()
    b = features((1, 6)).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.dynamic_instance_norm_1x1, (x, w, b, 1e-5))
    w5 = features((1, 6, 2, 3, 3)).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.dynamic_conv, (x, w5, b, [1, 1], [1, 1, 1, 1], [1, 1], 2, True, 1e-5))
    g, be = features((1, 4, 5, 5)).requires_grad_(), features((1, 4, 1, 1)).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.spatially_adaptive_instance_norm, (x, g, be, 1e-5))
    off = (0.5 * torch.randn(3, 18, 5, 5, dtype=torch.float64)).requires_grad_()
    w3 = features((1, 6, 4, 3, 3)).requires_grad_()
    torch.library.opcheck(torch.ops.din_ops.deformable_conv,
                          (x, w3, b, off, None, [1, 1], [1, 1, 1, 1], [1, 1], 1, 1, True, 1e-5))
    compiled = torch.compile(lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, unbiased=True), fullgraph=True)
    y = compiled(x, w, b)
    assert rel_err(y, din_ops.dynamic_instance_norm(x, w, b, unbiased=True)) <= 1e-13
    (gw,) = torch.autograd.grad(y.sum(), w)
    assert gw.shape == (1, 6, 4)
