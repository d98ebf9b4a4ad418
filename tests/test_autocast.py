"""torch.autocast: the forward operators compute in float32 and return the autocast dtype
(csrc/cpu/autocast.cpp); float64 calls are untouched; gradients reach every input in its own dtype."""
import pytest
import torch

import din_ops

AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]


def _params(gen, dtype):
    r = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    return {
        "instance_norm": (lambda x: din_ops.instance_norm(x), []),
        "din_1x1": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), [r(2, 5, 6), r(2, 5)]),
        "din_depthwise": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=6), [r(2, 6, 1, 3, 3), r(2, 6)]),
        "din_grouped": (lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, stride=2, groups=2), [r(2, 4, 3, 3, 3), r(2, 4)]),
        "dynamic_conv2d": (lambda x, w: din_ops.dynamic_conv2d(x, w, padding="same"), [r(2, 3, 6, 2, 2)]),
        "spatially_adaptive": (lambda x, g, b: din_ops.spatially_adaptive_instance_norm(x, g, b), [r(2, 6, 7, 9), r(2, 6, 1, 1)]),
        "deformable": (lambda x, w, b, o, m: din_ops.dynamic_instance_norm(x, w, b, offset=o, mask=m, padding=1, groups=2),
                       [r(2, 4, 3, 3, 3), r(2, 4), r(2, 36, 7, 9), r(2, 18, 7, 9)]),
        "adain": (lambda x, s: din_ops.adain(x, s, unbiased=True), [r(2, 6, 5, 4) * 2 + 1]),
        "adain_style_batch1": (lambda x, s: din_ops.adain(x, s), [r(1, 6, 7, 9)]),
    }


OPS = list(_params(torch.Generator(), torch.float32))


def forward_backward(fn, leaves, gy=None):
    y = fn(*leaves)
    if gy is None:
        gy = torch.linspace(-1, 1, y.numel()).view(y.shape).to(y.dtype)
    y.backward(gy)
    return y, [t.grad for t in leaves], gy


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("autocast_dtype", AUTOCAST_DTYPES, ids=str)
@pytest.mark.parametrize("param_dtype", [torch.float32, "autocast"], ids=["fp32_params", "lowp_params"])
def test_computes_in_float32_returns_autocast_dtype(name, autocast_dtype, param_dtype):
    gen = torch.Generator().manual_seed(0)
    pdtype = autocast_dtype if param_dtype == "autocast" else torch.float32
    fn, params = _params(gen, pdtype)[name]
    x = (torch.randn(2, 6, 7, 9, generator=gen) * 3 + 100).requires_grad_()
    leaves = [x, *[p.requires_grad_() for p in params]]
    with torch.autocast("cpu", dtype=autocast_dtype):
        y, grads, gy = forward_backward(fn, leaves)
    assert y.dtype == autocast_dtype
    # The same as the float32 op (parameters upcast exactly) with its output rounded.
    exact = [t.detach().float().requires_grad_() for t in leaves]
    y32, grads32, _ = forward_backward(fn, exact, gy.float())
    assert torch.equal(y, y32.to(autocast_dtype))
    for leaf, g, g32 in zip(leaves, grads, grads32):
        assert g.dtype == leaf.dtype
        assert torch.equal(g, g32.to(leaf.dtype))


def test_float64_is_left_alone_under_autocast():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = din_ops.dynamic_instance_norm(x, w)
        z = din_ops.instance_norm(x)
    assert y.dtype == z.dtype == torch.float64
    torch.testing.assert_close(y, din_ops.dynamic_instance_norm(x, w), rtol=0, atol=0)


def test_direct_operator_call_and_statistics():
    x = torch.randn(2, 3, 4, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, mean, rstd = torch.ops.din_ops.instance_norm(x, 1e-5)
    assert y.dtype == torch.bfloat16 and mean.dtype == rstd.dtype == torch.float64
    y32, mean32, _ = torch.ops.din_ops.instance_norm(x.float(), 1e-5)
    assert torch.equal(y, y32.to(torch.bfloat16)) and torch.equal(mean, mean32)


def test_mixed_dtypes_need_autocast():
    # Outside autocast the dtypes must agree, as always; inside, float16/bfloat16/float32 may mix.
    x = torch.randn(2, 3, 4, 5)
    w = torch.randn(2, 3, 3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="expected weight to have the dtype of x"):
        din_ops.dynamic_instance_norm(x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert din_ops.dynamic_instance_norm(x, w).dtype == torch.bfloat16
        with torch.autocast("cpu", enabled=False):
            with pytest.raises(TypeError, match="expected weight to have the dtype of x"):
                din_ops.dynamic_instance_norm(x, w)


def test_compiled_under_autocast_matches_eager():
    torch._dynamo.reset()
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    w = torch.randn(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    fn = lambda x, w: din_ops.dynamic_instance_norm(x, w).relu()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = compiled(x, w)
        expected = fn(x, w)
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected)
    grads = torch.autograd.grad(y.float().sum(), (x, w))
    expected_grads = torch.autograd.grad(expected.float().sum(), (x, w))
    for g, e in zip(grads, expected_grads):
        assert g.dtype == e.dtype and torch.equal(g, e)
    torch._dynamo.reset()


@pytest.mark.parametrize("style_given_as", ["features", "statistics"])
def test_adain_alpha_under_autocast(style_given_as):
    # The blend with the (float32) content runs in float32; the output comes in the autocast dtype.
    content = torch.randn(2, 6, 7, 9) * 3 + 1
    style = torch.randn(2, 6, 5, 5).to(torch.bfloat16)
    if style_given_as == "statistics":
        style = din_ops.style_stats(style)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = din_ops.adain(content, style, alpha=0.25)
    assert y.dtype == torch.bfloat16
    s32 = style.float() if isinstance(style, torch.Tensor) else tuple(t.float() for t in style)
    expected = din_ops.adain(content, s32, alpha=0.25)
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=2e-2)
