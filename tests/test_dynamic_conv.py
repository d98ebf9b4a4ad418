"""k x k, grouped and depthwise dynamic convolution, with (dynamic_instance_norm) and without
(dynamic_conv2d) instance normalization, against the float64 reference."""
import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES, DTYPES, LOW_PRECISION, assert_close_to_reference, layout

# name: (C, Co, kernel, stride, padding, dilation, groups)
CONFIGS = {
    "depthwise3x3": (8, 8, (3, 3), 1, 1, 1, 8),
    "depthwise3x3_stride2": (8, 8, (3, 3), 2, 1, 1, 8),
    "depthwise5x5_dilation2_same": (6, 6, (5, 5), 1, "same", 2, 6),
    "depthwise3x3_dilation2": (6, 6, (3, 3), 1, 2, (2, 1), 6),
    "depthwise7x7_valid": (4, 4, (7, 7), 1, "valid", 1, 4),
    "depthwise_multiplier2": (4, 8, (3, 3), 1, 1, 1, 4),
    "grouped3x3_g2": (8, 6, (3, 3), 1, 1, 1, 2),
    "dense3x3_stride2": (5, 7, (3, 3), 2, 1, 1, 1),
    "dense5x3_nonsquare": (4, 3, (5, 3), (1, 2), (2, 1), 1, 1),
    "dense1x1_stride2": (6, 4, (1, 1), 2, 0, 1, 1),
    "grouped1x1_g3": (6, 9, (1, 1), 1, 0, 1, 3),
    "even2x2_same": (4, 4, (2, 2), 1, "same", 1, 2),
    "dense3x3_dilation2_pad2": (3, 5, (3, 3), 1, 2, (2, 1), 1),
    # Stride 1 runs the direct kernels: output channels per group that are not a multiple of their
    # register block (5 -> 8, 3 -> 4), and a padding past the kernel's extent (its backward takes
    # the GEMM path).
    "grouped3x3_cog5": (8, 20, (3, 3), 1, 1, 1, 4),
    "grouped3x3_cog3": (6, 9, (3, 3), 1, 1, 1, 3),
    "dense3x3_pad3": (4, 6, (3, 3), 1, 3, 1, 1),
    "dense3x3_co40": (6, 40, (3, 3), 1, 1, 1, 1),  # Winograd: 40 output channels = 2.5 vectors
}
SPATIAL = [(9, 11), (1, 1), (6, 6)]


def make(name, h=9, w=11, n=2, dtype=torch.float64, device="cpu", x_mean=0.3):
    c, co, k, *_rest, groups = CONFIGS[name]
    x = (x_mean + 1.5 * torch.randn(n, c, h, w, dtype=torch.float64)).to(device, dtype)
    wt = (torch.randn(n, co, c // groups, *k, dtype=torch.float64) / (k[0] * k[1] * c / groups) ** 0.5).to(device, dtype)
    b = torch.randn(n, co, dtype=torch.float64).to(device, dtype)
    return x, wt, b


def conv_kwargs(name):
    _c, _co, _k, stride, padding, dilation, groups = CONFIGS[name]
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def fits(name, h, w):
    _c, _co, k, _s, padding, dilation, _g = CONFIGS[name]
    pad = (0, 0) if padding == "valid" else ((0, 0) if padding == "same" else (padding, padding) if isinstance(padding, int) else padding)
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    if padding == "same":
        return True
    return h + 2 * pad[0] >= d[0] * (k[0] - 1) + 1 and w + 2 * pad[1] >= d[1] * (k[1] - 1) + 1


OPS = {
    "dynamic_instance_norm": (din_ops.dynamic_instance_norm, reference.dynamic_instance_norm),
    "dynamic_conv2d": (din_ops.dynamic_conv2d, reference.dynamic_conv2d),
}


# Every config at every spatial size where its kernel fits (too-large kernels: test_errors.py).
FITTING = [(name, hw) for name in CONFIGS for hw in SPATIAL if fits(name, *hw)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name,hw", FITTING)
def test_forward_matches_reference(device, op, name, hw):
    ours, ref = OPS[op]
    x, w, b = make(name, *hw, dtype=torch.float32, device=device)
    kw = conv_kwargs(name)
    assert_close_to_reference(ours(x, w, b, **kw), ref(x.double(), w.double(), b.double(), **kw), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["depthwise3x3", "grouped3x3_g2", "dense3x3_stride2"])
def test_dtypes(device, dtype, name):
    x, w, b = make(name, dtype=dtype, device=device)
    kw = conv_kwargs(name)
    baseline = reference.dynamic_instance_norm(x, w, b, **kw) if dtype in LOW_PRECISION else None
    expected = reference.dynamic_instance_norm(x.double(), w.double(), b.double(), **kw)
    assert_close_to_reference(din_ops.dynamic_instance_norm(x, w, b, **kw), expected, dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", CONFIGS)
def test_gradcheck(device, op, name):
    ours, _ = OPS[op]
    x, w, b = make(name, 7, 8, device=device)
    kw = conv_kwargs(name)
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: ours(x, w, b, **kw), (x, w, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["depthwise3x3_stride2", "grouped3x3_g2"])
def test_backward_matches_reference(device, dtype, name):
    x, w, b = make(name, dtype=dtype, device=device)
    kw = conv_kwargs(name)
    y64 = reference.dynamic_instance_norm(x.double(), w.double(), b.double(), **kw)
    gy = torch.randn_like(y64).to(dtype)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    din_ops.dynamic_instance_norm(*leaves, **kw).backward(gy)
    exact = [t.double().requires_grad_() for t in (x, w, b)]
    reference.dynamic_instance_norm(*exact, **kw).backward(gy.double())
    baselines = [None] * 3
    if dtype in LOW_PRECISION:
        lowp = [t.clone().requires_grad_() for t in (x, w, b)]
        reference.dynamic_instance_norm(*lowp, **kw).backward(gy)
        baselines = [t.grad for t in lowp]
    for ours, ref, base in zip(leaves, exact, baselines):
        assert_close_to_reference(ours.grad, ref.grad, dtype, base)


def check_values_and_gradients(name, h, w, n, dtype, device):
    """Forward and every gradient of config `name` on (n, C, h, w) against the float64 reference."""
    x, wt, b = make(name, h, w, n=n, dtype=dtype, device=device)
    kw = conv_kwargs(name)
    leaves = [t.clone().requires_grad_() for t in (x, wt, b)]
    y = din_ops.dynamic_instance_norm(*leaves, **kw)
    exact = [t.double().requires_grad_() for t in (x, wt, b)]
    y64 = reference.dynamic_instance_norm(*exact, **kw)
    assert_close_to_reference(y, y64, dtype)
    gy = torch.randn_like(y64)
    y.backward(gy.to(dtype))
    y64.backward(gy)
    for ours, ref in zip(leaves, exact):
        assert_close_to_reference(ours.grad, ref.grad, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["grouped3x3_cog5", "dense3x3_dilation2_pad2"])
def test_several_bands(device, dtype, name):
    # Planes of 1100 x 45: the direct kernels split them into bands of rows (a few hundred rows
    # each at these channel counts: band_rows in dynamic_conv.cpp) and runs of pixels that end
    # inside a row.
    check_values_and_gradients(name, 1100, 45, 1, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,h,w", [("grouped3x3_g2", 9, 410), ("grouped3x3_cog5", 6, 333)])
def test_wide_planes(device, dtype, name, h, w):
    # Rows of 333 and 410 pixels: Winograd cuts each tile row into blocks of columns, the last one
    # partial, and writes the output planes directly (an odd last row at 9 rows).
    check_values_and_gradients(name, h, w, 2, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["depthwise3x3", "depthwise3x3_dilation2"])
def test_depthwise_wide_planes(device, dtype, name):
    # 19 x 83: the 3x3 depthwise kernels' runs of 4 vectors, of one vector and of single pixels in
    # every row (float32 and float64 lanes at every CPU level), and several row blocks of the
    # weight gradient's partial sums.
    check_values_and_gradients(name, 19, 83, 2, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["depthwise3x3", "grouped3x3_g2", "dense5x3_nonsquare"])
def test_channels_last_and_strided(device, name):
    x, w, b = make(name, dtype=torch.float32, device=device)
    kw = conv_kwargs(name)
    expected = reference.dynamic_instance_norm(x.double(), w.double(), b.double(), **kw)
    for form in ("channels_last", "strided"):
        xl = layout(x, form).requires_grad_()
        y = din_ops.dynamic_instance_norm(xl, w, b, **kw)
        assert y.is_contiguous(memory_format=torch.channels_last) == (form == "channels_last")
        assert_close_to_reference(y, expected, torch.float32)
        y.sum().backward()
        assert xl.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
def test_padding_is_zero_in_the_normalized_domain(device):
    # With a large mean, padding x with zeros would give a very different result from padding xh.
    x, w, b = make("depthwise3x3", device=device, x_mean=50.0)
    expected = reference.dynamic_instance_norm(x, w, b, padding=1, groups=8)
    torch.testing.assert_close(din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=8), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_large_mean_float32(device):
    x, w, b = make("grouped3x3_g2", 24, 24, dtype=torch.float32, device=device, x_mean=1e4)
    kw = conv_kwargs("grouped3x3_g2")
    exact = reference.dynamic_instance_norm(x.double(), w.double(), b.double(), **kw)
    assert (din_ops.dynamic_instance_norm(x, w, b, **kw).double() - exact).abs().max() < 1e-4 * exact.abs().max()


@pytest.mark.parametrize("device", DEVICES)
def test_one_by_one_kernel_matches_the_fused_1x1_op(device):
    # groups=1, stride 1, no padding goes to the 1x1 op; groups=2 to the general kernel.
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, device=device)
    w = torch.randn(2, 4, 6, 1, 1, dtype=torch.float64, device=device)
    y1 = din_ops.dynamic_instance_norm(x, w)
    y2 = din_ops.dynamic_conv2d(din_ops.instance_norm(x), w)
    torch.testing.assert_close(y1, y2)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x, w, b = make("depthwise3x3", n=0, device=device)
    y = din_ops.dynamic_instance_norm(x.requires_grad_(), w, b, **conv_kwargs("depthwise3x3"))
    assert y.shape == (0, 8, 9, 11)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("name", ["depthwise3x3_stride2", "grouped3x3_g2", "even2x2_same"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name, normalize, device):
    x, w, b = make(name, 5, 6, device=device)
    kw = conv_kwargs(name)
    from din_ops.ops import _conv_args

    stride, pad, dilation = _conv_args(x, w, kw["stride"], kw["padding"], kw["dilation"])
    args = (x.requires_grad_(), w.requires_grad_(), b, stride, pad, dilation, kw["groups"], normalize, 1e-5)
    torch.library.opcheck(torch.ops.din_ops.dynamic_conv, args)
    y, mean, rstd = torch.ops.din_ops.dynamic_conv(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    torch.library.opcheck(
        torch.ops.din_ops.dynamic_conv_backward,
        (torch.randn_like(y), x.detach(), w.detach(), mean, rstd, stride, pad, dilation, kw["groups"], normalize),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_compile(device):
    torch._dynamo.reset()
    x, w, b = make("depthwise3x3_stride2", 6, 7, device=device)
    kw = conv_kwargs("depthwise3x3_stride2")
    compiled = torch.compile(lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, **kw).relu(), fullgraph=True, backend="aot_eager")
    x.requires_grad_()
    y = compiled(x, w, b)
    expected = reference.dynamic_instance_norm(x, w, b, **kw).relu()
    torch.testing.assert_close(y, expected)
    (g,) = torch.autograd.grad(y.sum(), x)
    (e,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g, e)
    torch._dynamo.reset()


# ---- batch 1 weight and bias, broadcast over the samples ----

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["depthwise3x3", "grouped3x3_g2", "dense3x3_stride2", "dense3x3_co40",
                                  "dense3x3_pad3"])
def test_batch1_weight_and_bias_broadcast(op, name):
    from conftest import assert_batch1_broadcast

    fn, ref = OPS[op]
    x, wt, b = make(name, n=3)
    kw = conv_kwargs(name)
    assert_batch1_broadcast(lambda x, weight, bias: fn(x, weight, bias, **kw), x,
                            {"weight": wt[:1].clone(), "bias": b[:1].clone()})
    y = fn(x, wt[:1], b, **kw)  # weight batch 1, bias batch N
    torch.testing.assert_close(y, ref(x, wt[:1].expand(3, -1, -1, -1, -1), b, **kw), rtol=1e-10, atol=1e-10)


def test_batch1_weight_gradcheck():
    x, wt, b = make("grouped3x3_g2", h=4, w=5, n=2)
    torch.autograd.gradcheck(
        lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b, **conv_kwargs("grouped3x3_g2")),
        (x.requires_grad_(), wt[:1].clone().requires_grad_(), b[:1].clone().requires_grad_()),
    )
