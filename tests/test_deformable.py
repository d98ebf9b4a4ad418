"""Deformable dynamic convolution and deformable DIN (offset=..., mask=...) against the float64
reference written from the definition (din_ops.reference.deformable_conv2d)."""
import pytest
import torch
import torch.nn.functional as F

import din_ops
from din_ops import reference

from conftest import DEVICES, DTYPES, LOW_PRECISION, assert_close_to_reference, layout

# name: (C, Co, kernel, stride, padding, dilation, groups, offset_groups)
CONFIGS = {
    "3x3": (4, 5, (3, 3), 1, 1, 1, 1, 1),
    "3x3_offset_groups2": (4, 6, (3, 3), 1, 1, 1, 2, 2),
    "3x3_groups2_offset_groups1": (4, 6, (3, 3), 1, 1, 1, 2, 1),
    "3x3_stride2": (3, 4, (3, 3), 2, 1, 1, 1, 1),
    "3x3_dilation2": (4, 4, (3, 3), 1, 2, 2, 1, 2),
    "5x3_nonsquare": (2, 3, (5, 3), (1, 2), (2, 1), 1, 1, 1),
    "depthwise3x3": (4, 4, (3, 3), 1, 1, 1, 4, 4),
    "1x1": (3, 2, (1, 1), 1, 0, 1, 1, 1),
}

OPS = {
    "dynamic_instance_norm": (din_ops.dynamic_instance_norm, reference.deformable_instance_norm),
    "dynamic_conv2d": (din_ops.dynamic_conv2d, reference.deformable_conv2d),
}


def assert_same_forward_backward(y, expected, leaves, expected_leaves, tol):
    """y and expected agree, and so do the gradients of their leaves for one random grad_y."""
    torch.testing.assert_close(y, expected, rtol=tol, atol=tol)
    gy = torch.randn_like(y)
    y.backward(gy)
    expected.backward(gy)
    for a, e in zip(leaves, expected_leaves):
        torch.testing.assert_close(a.grad, e.grad, rtol=tol, atol=tol)


def conv_kwargs(name):
    _c, _co, _k, stride, padding, dilation, groups, _g = CONFIGS[name]
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def out_size(name, h, w):
    _c, _co, k, stride, padding, dilation, _groups, _g = CONFIGS[name]
    s = (stride, stride) if isinstance(stride, int) else stride
    p = (padding, padding) if isinstance(padding, int) else padding
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    return ((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1, (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)


def fractional(shape, spread=2.5):
    """Random offsets whose fractional part stays in [0.1, 0.9]: sample points never sit on integer
    positions, where bilinear interpolation is not differentiable (for gradcheck)."""
    whole = torch.randint(-int(spread), int(spread) + 1, shape, dtype=torch.float64)
    return whole + 0.1 + 0.8 * torch.rand(shape, dtype=torch.float64)


def make(name, h=7, w=8, n=2, dtype=torch.float64, device="cpu", with_mask=True, x_mean=0.3):
    """x, weight, bias, offset, mask (float64 draws converted to dtype)."""
    c, co, k, *_rest, groups, g = CONFIGS[name]
    ho, wo = out_size(name, h, w)
    kk = k[0] * k[1]
    x = x_mean + 1.5 * torch.randn(n, c, h, w, dtype=torch.float64)
    wt = torch.randn(n, co, c // groups, *k, dtype=torch.float64) / (kk * c / groups) ** 0.5
    b = torch.randn(n, co, dtype=torch.float64)
    offset = fractional((n, 2 * g * kk, ho, wo))
    mask = torch.rand(n, g * kk, ho, wo, dtype=torch.float64) if with_mask else None
    return [t if t is None else t.to(device, dtype) for t in (x, wt, b, offset, mask)]


def positions_to_offsets(name, py, px, n=2, h=7, w=8):
    """Offsets that put tap t of every output pixel exactly at (py[t], px[t]) (same for every pixel
    and offset group): offset = target position - regular grid position."""
    _c, _co, k, stride, padding, dilation, _groups, g = CONFIGS[name]
    ho, wo = out_size(name, h, w)
    s = (stride, stride) if isinstance(stride, int) else stride
    p = (padding, padding) if isinstance(padding, int) else padding
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    kk = k[0] * k[1]
    ti = torch.arange(kk) // k[1]
    tj = torch.arange(kk) % k[1]
    grid_y = (torch.arange(ho) * s[0] - p[0])[None, :, None] + (ti * d[0])[:, None, None]
    grid_x = (torch.arange(wo) * s[1] - p[1])[None, None, :] + (tj * d[1])[:, None, None]
    dy = torch.as_tensor(py, dtype=torch.float64)[:, None, None] - grid_y
    dx = torch.as_tensor(px, dtype=torch.float64)[:, None, None] - grid_x
    off = torch.stack(torch.broadcast_tensors(dy, dx), dim=1).reshape(1, 1, 2 * kk, ho, wo)
    return off.expand(n, g, 2 * kk, ho, wo).reshape(n, 2 * g * kk, ho, wo).clone()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("with_mask", [False, True], ids=["dcnv1", "dcnv2"])
@pytest.mark.parametrize("name", CONFIGS)
def test_forward_matches_reference(device, op, with_mask, name):
    ours, ref = OPS[op]
    x, w, b, off, m = make(name, dtype=torch.float32, device=device, with_mask=with_mask)
    kw = conv_kwargs(name)
    expected = ref(x.double(), w.double(), b.double(), off.double(), None if m is None else m.double(), **kw)
    assert_close_to_reference(ours(x, w, b, offset=off, mask=m, **kw), expected, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["3x3_offset_groups2", "3x3_stride2", "3x3_dilation2", "5x3_nonsquare"])
def test_gradcheck(device, op, name):
    ours, _ = OPS[op]
    x, w, b, off, m = make(name, 5, 6, n=1, device=device)
    kw = conv_kwargs(name)
    inputs = [t.requires_grad_() for t in (x, w, b, off, m)]
    assert torch.autograd.gradcheck(lambda x, w, b, o, m: ours(x, w, b, offset=o, mask=m, **kw), inputs)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_without_mask_and_bias(device):
    x, w, _b, off, _m = make("3x3", 5, 6, device=device, with_mask=False)  # N = 2 here
    inputs = [t.requires_grad_() for t in (x, w, off)]
    assert torch.autograd.gradcheck(
        lambda x, w, o: din_ops.dynamic_instance_norm(x, w, offset=o, padding=1), inputs
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(device, op):
    ours, ref = OPS[op]
    x, w, b, off, m = make("3x3_offset_groups2", 9, 10, device=device)
    kw = conv_kwargs("3x3_offset_groups2")
    mine = [t.clone().requires_grad_() for t in (x, w, b, off, m)]
    exact = [t.clone().requires_grad_() for t in (x, w, b, off, m)]
    y = ours(*mine[:3], offset=mine[3], mask=mine[4], **kw)
    gy = torch.randn_like(y)
    y.backward(gy)
    ref(*exact, **kw).backward(gy)
    for a, e in zip(mine, exact):
        torch.testing.assert_close(a.grad, e.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_integer_positions_are_exact_pixels(device, op):
    # One integer shift (a, c) of every tap equals the plain convolution of the zero-padded input
    # shifted by (a, c); checked without normalization (whose statistics would see the shift) and,
    # for both ops, against the reference.
    ours, ref = OPS[op]
    x, w, b, _off, _m = make("3x3", 9, 10, device=device)
    a, c = 2, -1
    off = torch.zeros(2, 18, 9, 10, dtype=torch.float64, device=device)
    off[:, 0::2], off[:, 1::2] = a, c
    y = ours(x, w, b, offset=off, padding=1)
    torch.testing.assert_close(y, ref(x, w, b, off, padding=1), rtol=1e-12, atol=1e-12)
    if op == "dynamic_conv2d":
        padded = F.pad(x, (1, 1, 1, 1))  # (11, 12); shifted[k, l] = padded[k + a, l + c], 0 outside
        shifted = torch.zeros_like(padded)
        shifted[:, :, : 11 - a, -c:] = padded[:, :, a:, : 12 + c]
        torch.testing.assert_close(y, reference.dynamic_conv2d(shifted, w, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_borders_and_integer_positions(device, op):
    # Every tap sits exactly on an integer position, a border pixel, half a pixel outside, or just on
    # the edge of the zero region (-1 and H): forward and the x, weight, bias and mask gradients
    # (defined everywhere) match the reference.
    ours, ref = OPS[op]
    h, w_ = 7, 8
    x, w, b, _off, m = make("3x3", h, w_, device=device)
    py = [-1.0, -0.5, 0.0, 3.0, h - 1.0, h - 0.5, h, 2.25, 0.0]
    px = [0.0, w_ - 1.0, -0.5, 4.0, -1.0, 3.0, 2.0, w_ - 0.5, w_]
    off = positions_to_offsets("3x3", py, px, h=h, w=w_).to(device)
    mine = [t.clone().requires_grad_() for t in (x, w, b, m)]
    exact = [t.clone().requires_grad_() for t in (x, w, b, m)]
    y = ours(*mine[:3], offset=off, mask=mine[3], padding=1)
    expected = ref(*exact[:3], off, exact[3], padding=1)
    assert_same_forward_backward(y, expected, mine, exact, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_fully_outside_gives_the_bias(device, op):
    ours, _ = OPS[op]
    x, w, b, off, m = make("3x3_offset_groups2", device=device)
    kw = conv_kwargs("3x3_offset_groups2")
    for far in (8.0, -8.5, 1e7, float("inf")):
        o = torch.full_like(off, far).requires_grad_()
        xg = x.clone().requires_grad_()
        mg = m.clone().requires_grad_()
        y = ours(xg, w, b, offset=o, mask=mg, **kw)
        torch.testing.assert_close(y, b[:, :, None, None].expand_as(y), rtol=0, atol=0)
        y.backward(torch.randn_like(y))
        for g in (xg.grad, o.grad, mg.grad):
            assert g.abs().max().item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["3x3_offset_groups2", "3x3_groups2_offset_groups1", "3x3_stride2", "3x3_dilation2", "5x3_nonsquare", "depthwise3x3"])
def test_zero_offsets_equal_the_kxk_op(device, op, name):
    ours, _ = OPS[op]
    x, w, b, off, _m = make(name, device=device, with_mask=False)
    kw = conv_kwargs(name)
    zero = torch.zeros_like(off)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    plain = [t.clone().requires_grad_() for t in (x, w, b)]
    y = ours(*leaves, offset=zero, **kw)
    expected = ours(*plain, **kw)  # the grouped k x k kernel (no offset)
    assert_same_forward_backward(y, expected, leaves, plain, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_mask_of_ones_is_dcnv1(device, op):
    ours, _ = OPS[op]
    x, w, b, off, m = make("3x3_offset_groups2", device=device)
    kw = conv_kwargs("3x3_offset_groups2")
    ones = torch.ones_like(m)
    with_mask = [t.clone().requires_grad_() for t in (x, w, b, off)]
    without = [t.clone().requires_grad_() for t in (x, w, b, off)]
    y1 = ours(*with_mask[:3], offset=with_mask[3], mask=ones, **kw)
    y2 = ours(*without[:3], offset=without[3], **kw)
    assert_same_forward_backward(y1, y2, with_mask, without, 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_forward_and_backward(device, dtype):
    name = "3x3_offset_groups2"
    x, w, b, off, m = make(name, 9, 10, dtype=dtype, device=device)
    kw = conv_kwargs(name)
    leaves = [t.clone().requires_grad_() for t in (x, w, b, off, m)]
    y = din_ops.dynamic_instance_norm(*leaves[:3], offset=leaves[3], mask=leaves[4], **kw)
    exact = [t.double().requires_grad_() for t in (x, w, b, off, m)]
    y64 = reference.deformable_instance_norm(*exact, **kw)
    gy = torch.randn_like(y64).to(dtype)
    y.backward(gy)
    y64.backward(gy.double())
    base_y, base_grads = None, [None] * 5
    if dtype in LOW_PRECISION:
        lowp = [t.clone().requires_grad_() for t in (x, w, b, off, m)]
        base_y = reference.deformable_instance_norm(*lowp, **kw)
        base_y.backward(gy)
        base_grads = [t.grad for t in lowp]
    assert_close_to_reference(y, y64, dtype, base_y)
    for a, e, base in zip(leaves, exact, base_grads):
        assert_close_to_reference(a.grad, e.grad, dtype, base)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_and_strided(device):
    name = "3x3_offset_groups2"
    x, w, b, off, m = make(name, dtype=torch.float32, device=device)
    kw = conv_kwargs(name)
    expected = reference.deformable_instance_norm(x.double(), w.double(), b.double(), off.double(), m.double(), **kw)
    ref_leaf = x.double().requires_grad_()
    reference.deformable_instance_norm(ref_leaf, w.double(), b.double(), off.double(), m.double(), **kw).sum().backward()
    for form in ("channels_last", "strided"):
        xl = layout(x, form).requires_grad_()
        y = din_ops.dynamic_instance_norm(xl, w, b, offset=layout(off, form), mask=layout(m, form), **kw)
        assert y.is_contiguous(memory_format=torch.channels_last) == (form == "channels_last")
        assert_close_to_reference(y, expected, torch.float32)
        y.sum().backward()
        assert xl.grad.is_contiguous(memory_format=torch.channels_last) == (form == "channels_last")
        assert_close_to_reference(xl.grad, ref_leaf.grad, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_large_mean_is_normalized_on_load(device):
    # A mean of 1e4 in float32: the sampler normalizes each corner before interpolating.
    x, w, b, off, m = make("3x3", 12, 12, dtype=torch.float32, device=device, x_mean=1e4)
    exact = reference.deformable_instance_norm(x.double(), w.double(), b.double(), off.double(), m.double(), padding=1)
    y = din_ops.dynamic_instance_norm(x, w, b, offset=off, mask=m, padding=1)
    assert (y.double() - exact).abs().max() < 1e-4 * exact.abs().max()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 2], ids=["split_sample", "whole_samples"])
def test_backward_is_bitwise_repeatable(device, n):
    # Five tiles per sample: with two threads, one sample is split into two chunks whose x-gradient
    # buffers are added in order; two samples go one to each chunk (csrc/cpu/deformable_conv.cpp).
    torch.manual_seed(1)
    x = torch.randn(n, 64, 24, 40, device=device)
    w = torch.randn(n, 32, 64, 3, 3, device=device) / 24
    off = 2 * torch.randn(n, 18, 24, 40, device=device)
    m = torch.rand(n, 9, 24, 40, device=device)
    grads = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (x, w, off, m)]
        din_ops.dynamic_instance_norm(leaves[0], leaves[1], offset=leaves[2], mask=leaves[3], padding=1).square().sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    exact = [t.double().requires_grad_() for t in (x, w, off, m)]
    reference.deformable_instance_norm(exact[0], exact[1], None, exact[2], exact[3], padding=1).square().sum().backward()
    for a, e in zip(grads[0], exact):
        assert_close_to_reference(a, e.grad, torch.float32)


def test_empty_batch():
    x, w, b, off, m = make("3x3", n=0)
    x.requires_grad_()
    y = din_ops.dynamic_instance_norm(x, w, b, offset=off, mask=m, padding=1)
    assert y.shape == (0, 5, 7, 8)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_reference_backend_matches():
    x, w, b, off, m = make("3x3_stride2")
    kw = conv_kwargs("3x3_stride2")
    torch.testing.assert_close(
        din_ops.dynamic_conv2d(x, w, b, offset=off, mask=m, backend="reference", **kw),
        din_ops.dynamic_conv2d(x, w, b, offset=off, mask=m, **kw),
    )


def test_reference_matches_conv2d_and_grid_sample():
    # The reference itself: zero offsets give F.conv2d per sample, and a constant fractional offset
    # gives the bilinear sample that F.grid_sample (zeros padding, align_corners=True) computes.
    x, w, b, off, _m = make("3x3", 6, 7, n=1, with_mask=False)
    y = reference.deformable_conv2d(x, w, b, torch.zeros_like(off), padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w[0], b[0], padding=1))
    w1 = torch.zeros(1, 4, 4, 1, 1, dtype=torch.float64)
    w1[0, :, :, 0, 0] = torch.eye(4, dtype=torch.float64)
    dy, dx = 0.3, -1.6
    o = torch.tensor([dy, dx], dtype=torch.float64).reshape(1, 2, 1, 1).expand(1, 2, 6, 7)
    y = reference.deformable_conv2d(x, w1, None, o)
    gy, gx = torch.meshgrid(torch.arange(6.0, dtype=torch.float64) + dy, torch.arange(7.0, dtype=torch.float64) + dx, indexing="ij")
    grid = torch.stack([2 * gx / 6 - 1, 2 * gy / 5 - 1], dim=-1)[None]
    torch.testing.assert_close(y, F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True))


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_opcheck(with_mask, normalize):
    x, w, b, off, m = make("3x3_offset_groups2", 5, 6, with_mask=with_mask)
    args = (x.requires_grad_(), w.requires_grad_(), b, off.requires_grad_(), m, [1, 1], [1, 1, 1, 1], [1, 1], 2, 2, normalize, 1e-5)
    torch.library.opcheck(torch.ops.din_ops.deformable_conv, args)
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    y, mean, rstd = torch.ops.din_ops.deformable_conv(*detached)
    torch.library.opcheck(
        torch.ops.din_ops.deformable_conv_backward,
        (torch.randn_like(y), x.detach(), w.detach(), off.detach(), m, mean, rstd, [1, 1], [1, 1, 1, 1], [1, 1], 2, 2, normalize),
    )


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_compile_fullgraph(memory_format):
    torch._dynamo.reset()
    x, w, b, off, m = make("3x3_offset_groups2", 6, 7)
    kw = conv_kwargs("3x3_offset_groups2")

    def layer(x, w, b, off, m):
        return din_ops.dynamic_instance_norm(x, w, b, offset=off, mask=m.sigmoid(), **kw).relu()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    inputs = [x.contiguous(memory_format=memory_format), w, b, off, m]
    inputs = [t.requires_grad_() for t in inputs]
    y = compiled(*inputs)
    expected = reference.deformable_instance_norm(*inputs[:4], inputs[4].sigmoid(), **kw).relu()
    torch.testing.assert_close(y, expected)
    grads = torch.autograd.grad(y.sum(), inputs)
    expected_grads = torch.autograd.grad(expected.sum(), inputs)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)
    torch._dynamo.reset()


def test_double_backward_raises():
    x, w, b, off, m = make("3x3", 5, 6)
    off.requires_grad_()
    y = din_ops.dynamic_instance_norm(x, w, b, offset=off, mask=m, padding=1)
    (g,) = torch.autograd.grad(y.square().sum(), off, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# ---------------------------------------------------------------------------------------------
# Errors

@pytest.mark.parametrize(
    "case,match",
    [
        ("offset_channels", r"expected offset of shape \(N, 2 \* G \* kh \* kw, Ho, Wo\)"),
        ("offset_odd_channels", r"expected offset of shape \(N, 2 \* G \* kh \* kw, Ho, Wo\)"),
        ("offset_groups_not_dividing_c", r"G offset groups dividing C = 4"),
        ("offset_batch", r"expected offset of shape"),
        ("offset_3d", r"expected offset of shape"),
        ("offset_spatial", r"expected offset of spatial size \(Ho, Wo\) = \(7, 8\)"),
        ("mask_channels", r"expected mask of shape \(N, G \* kh \* kw, Ho, Wo\) = \(2, 9, 7, 8\)"),
        ("mask_spatial", r"expected mask of shape .* = \(2, 9, 7, 8\)"),
        ("mask_without_offset", r"mask needs offset"),
    ],
)
def test_bad_offset_or_mask_raises_value_error(case, match):
    x, w, b, off, m = make("3x3")
    bad = dict(offset=off, mask=m)
    if case == "offset_channels":
        bad["offset"] = off[:, :16]
    elif case == "offset_odd_channels":
        bad["offset"] = torch.zeros(2, 19, 7, 8, dtype=off.dtype)
    elif case == "offset_groups_not_dividing_c":
        bad["offset"] = torch.zeros(2, 3 * 18, 7, 8, dtype=off.dtype)
    elif case == "offset_batch":
        bad["offset"] = off[:1]
    elif case == "offset_3d":
        bad["offset"] = off[0]
    elif case == "offset_spatial":
        bad["offset"] = off[:, :, :, :7]
    elif case == "mask_channels":
        bad["mask"] = torch.ones(2, 18, 7, 8, dtype=off.dtype)
    elif case == "mask_spatial":
        bad["mask"] = m[:, :, 1:]
    elif case == "mask_without_offset":
        bad["offset"] = None
    for fn in (din_ops.dynamic_instance_norm, din_ops.dynamic_conv2d):
        for backend in (None, "reference"):
            with pytest.raises(ValueError, match=match):
                fn(x, w, b, padding=1, backend=backend, **bad)


def test_bad_offset_dtype_raises_type_error():
    x, w, b, off, m = make("3x3")
    with pytest.raises(TypeError, match="expected offset to have the dtype of x"):
        din_ops.dynamic_instance_norm(x, w, b, offset=off.float(), padding=1)
    with pytest.raises(TypeError, match="expected mask to have the dtype of x"):
        din_ops.dynamic_instance_norm(x, w, b, offset=off, mask=m.float(), padding=1)


@pytest.mark.skipif("triton" not in din_ops.available_backends(), reason="triton is not installed")
def test_triton_backend_refuses_offsets():
    # The Triton backend has no deformable kernels: it says so instead of running another backend.
    x, w, b, off, m = make("3x3")
    for fn in (din_ops.dynamic_instance_norm, din_ops.dynamic_conv2d):
        with pytest.raises(ValueError, match="backend .triton. has no"):
            fn(x, w, b, offset=off, mask=m, padding=1, backend="triton")


def test_operator_checks_its_arguments():
    # Direct calls of the operator (no Python checks) fail cleanly too.
    x, w, b, off, m = make("3x3")
    args = [x, w, b, off, m, [1, 1], [1, 1, 1, 1], [1, 1], 1, 1, True, 1e-5]
    op = torch.ops.din_ops.deformable_conv
    with pytest.raises(ValueError, match="expected offset of shape"):
        op(*args[:3], off[:, :, :, :5], *args[4:])
    with pytest.raises(ValueError, match="expected mask of shape"):
        op(*args[:4], m[:, :4], *args[5:])
    with pytest.raises(ValueError, match="expected offset_groups to divide C"):
        op(*args[:9], 3, *args[10:])
    with pytest.raises(TypeError, match="expected offset to have the dtype of x"):
        op(*args[:3], off.float(), *args[4:])


@pytest.mark.parametrize("device", DEVICES)
def test_tile_of_one_pixel(device):
    # 64 channels x 9 taps make tiles of 227 output pixels; 4 x 57 = 228 pixels leave a last tile of
    # one pixel, a single-row GEMM operand and a single-column output.
    torch.manual_seed(2)
    x = torch.randn(1, 64, 4, 57, dtype=torch.float64, device=device)
    w = torch.randn(1, 8, 64, 3, 3, dtype=torch.float64, device=device) / 24
    b = torch.randn(1, 8, dtype=torch.float64, device=device)
    off = fractional((1, 18, 4, 57)).to(device)
    mine = [t.clone().requires_grad_() for t in (x, w, b, off)]
    exact = [t.clone().requires_grad_() for t in (x, w, b, off)]
    y = din_ops.dynamic_instance_norm(*mine[:3], offset=mine[3], padding=1)
    expected = reference.deformable_instance_norm(*exact, padding=1)
    assert_same_forward_backward(y, expected, mine, exact, 1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "channels,groups,offset_groups",
    [(20, 1, 1), (24, 4, 2), (36, 3, 3), (20, 20, 2)],
    ids=["vector_and_tail", "offset_group_across_conv_groups", "aligned_groups", "depthwise_strided"],
)
def test_channel_runs(device, channels, groups, offset_groups):
    # The CPU kernel interpolates runs of channels as vectors of 8 (float) or 4 (double) with a
    # scalar tail: 20 channels leave a tail; with 4 convolution groups of 6 channels and 2 offset
    # groups of 12, an offset group spans convolution groups; depthwise runs are strided.
    torch.manual_seed(3)
    n, h, w, g = 2, 9, 11, offset_groups
    x = torch.randn(n, channels, h, w, dtype=torch.float64, device=device)
    wt = torch.randn(n, channels, channels // groups, 3, 3, dtype=torch.float64, device=device) / 4
    b = torch.randn(n, channels, dtype=torch.float64, device=device)
    off = fractional((n, 2 * g * 9, h, w)).to(device)
    m = torch.rand(n, g * 9, h, w, dtype=torch.float64, device=device)
    mine = [t.clone().requires_grad_() for t in (x, wt, b, off, m)]
    exact = [t.clone().requires_grad_() for t in (x, wt, b, off, m)]
    y = din_ops.dynamic_instance_norm(*mine[:3], offset=mine[3], mask=mine[4], padding=1, groups=groups)
    expected = reference.deformable_instance_norm(*exact, padding=1, groups=groups)
    assert_same_forward_backward(y, expected, mine, exact, 1e-10)


# ---- batch 1 weight and bias, broadcast over the samples ----

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["3x3", "3x3_groups2_offset_groups1", "depthwise3x3"])
def test_batch1_weight_and_bias_broadcast(op, name):
    from conftest import assert_batch1_broadcast

    fn, ref = OPS[op]
    x, wt, b, offset, mask = make(name, n=3)
    kw = conv_kwargs(name)
    assert_batch1_broadcast(
        lambda x, weight, bias: fn(x, weight, bias, offset=offset, mask=mask, **kw), x,
        {"weight": wt[:1].clone(), "bias": b[:1].clone()},
    )
    y = fn(x, wt[:1], b[:1], offset=offset, mask=mask, **kw)
    e = ref(x, wt[:1].expand(3, -1, -1, -1, -1), b[:1].expand(3, -1), offset, mask, **kw)
    torch.testing.assert_close(y, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_infinite_offsets_sample_zero(device, bad):
    # A tap at a NaN or infinite position samples zero with zero gradients, in the kernels and in
    # the reference alike (din_ops/bilinear.h); every other tap is unaffected.
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g)
    w = torch.randn(1, 2, 2, 3, 3, dtype=torch.float64, generator=g)
    off = torch.randn(1, 18, 5, 6, dtype=torch.float64, generator=g)
    off[0, 3, 2, 2] = bad  # tap 1, x coordinate, output pixel (2, 2)
    results = {}
    for backend, dev in (("reference", "cpu"), (None, device)):
        leaves = [t.to(dev).requires_grad_() for t in (x, w, off)]
        y = din_ops.dynamic_conv2d(leaves[0], leaves[1], padding=1, offset=leaves[2], backend=backend)
        y.square().sum().backward()
        results[backend] = [y.detach().cpu()] + [t.grad.cpu() for t in leaves]
    clean = off.clone()
    clean[0, 2:4, 2, 2] = -10.0  # the same tap moved far outside: zero
    expected = din_ops.dynamic_conv2d(x, w, padding=1, offset=clean, backend="reference")
    for ours, ref in zip(results[None], results["reference"]):
        assert torch.isfinite(ref).all() and torch.isfinite(ours).all()
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results["reference"][0], expected, rtol=0, atol=0)
    assert results["reference"][3][0, 2:4, 2, 2].eq(0).all()  # no gradient at the bad position


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_pixel_reaches_only_the_taps_that_sample_it(device, bad):
    # As torchvision.ops.deform_conv2d: a corner outside the input adds exactly zero, so an inf or
    # NaN pixel reaches the outputs whose taps interpolate it with a nonzero weight and no others
    # (before, the outside corners read pixel 0 with weight 0: 0 * inf made the whole border NaN).
    g = torch.Generator().manual_seed(12)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g)
    w = torch.randn(1, 3, 2, 3, 3, dtype=torch.float64, generator=g)
    offsets = {"zero": torch.zeros(1, 18, 5, 6, dtype=torch.float64),
               "fractional": fractional((1, 18, 5, 6), spread=1.5)}
    for name, off in offsets.items():
        # Which outputs sample pixel (0, 0) of channel 0 (the op is linear in x without normalization).
        e = torch.zeros_like(x)
        e[0, 0, 0, 0] = 1.0
        reached = din_ops.dynamic_conv2d(e, w, padding=1, offset=off, backend="reference") != 0
        assert reached.any() and not reached.all()
        xb = x.clone()
        xb[0, 0, 0, 0] = bad
        ref = din_ops.dynamic_conv2d(xb, w, padding=1, offset=off, backend="reference")
        ours = din_ops.dynamic_conv2d(xb.to(device), w.to(device), padding=1, offset=off.to(device)).cpu()
        assert torch.equal(~torch.isfinite(ref), reached), name
        assert torch.equal(~torch.isfinite(ours), reached), name
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10, equal_nan=True)
        if name == "zero":  # integer positions: a padded convolution
            torch.testing.assert_close(ref, F.conv2d(xb, w[0], padding=1), rtol=1e-12, atol=1e-12,
                                       equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalized", [False, True])
def test_nonfinite_grad_y_reaches_only_the_pixels_it_samples(device, normalized):
    # The x-gradient of an output whose taps partly fall outside the input: an inf there reaches
    # the pixels those taps interpolate, and no other (the outside corners' zero contributions
    # must not land on pixel 0).
    fn = din_ops.dynamic_instance_norm if normalized else din_ops.dynamic_conv2d
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g)
    w = torch.randn(1, 3, 2, 3, 3, dtype=torch.float64, generator=g)
    off = fractional((1, 18, 5, 6), spread=1.5)
    corner = (0, 1, 0, 5)  # top right: its top and right taps sample partly outside
    # Which pixels the corner output samples (without normalization; with it, every pixel).
    one = torch.zeros(1, 3, 5, 6, dtype=torch.float64)
    one[corner] = 1.0
    xs = x.clone().requires_grad_()
    din_ops.dynamic_conv2d(xs, w, padding=1, offset=off, backend="reference").backward(one)
    sampled = xs.grad != 0
    assert sampled.any() and not sampled[0, :, 0, 0].any()
    gy = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=g)
    gy[corner] = float("inf")
    grads = {}
    for backend, dev in (("reference", "cpu"), (None, device)):
        xl = x.to(dev).requires_grad_()
        fn(xl, w.to(dev), padding=1, offset=off.to(dev), backend=backend).backward(gy.to(dev))
        grads[backend] = xl.grad.cpu()
    for backend, gx in grads.items():
        if normalized:  # the instance-norm backward spreads an inf over its plane's sums: all NaN
            assert not torch.isfinite(gx).any(), backend
        else:
            assert torch.equal(~torch.isfinite(gx), sampled), backend
    torch.testing.assert_close(grads[None], grads["reference"], rtol=1e-10, atol=1e-10, equal_nan=True)



@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_pixel_indices_beyond_2_to_the_24(backend):
    # A float32 plane of more than 2^24 pixels: a tap on its last pixels reads them exactly (an index
    # computed in float32 rounds to the neighbouring pixel, or past the end of the plane).
    h, w = 4097, 4100
    x = torch.zeros(1, 1, h, w)
    x[0, 0, h - 1, w - 2], x[0, 0, h - 1, w - 1] = 7.0, 3.0
    weight = torch.ones(1, 1, 1, 1, 1)
    for col, value in ((w - 1, 3.0), (w - 2, 7.0), (w - 1.5, 5.0)):
        off = torch.tensor([float(h - 1), float(col)]).reshape(1, 2, 1, 1)
        y = din_ops.dynamic_conv2d(x, weight, stride=(h, w), offset=off, backend=backend)
        assert y.shape == (1, 1, 1, 1) and y.item() == value, (col, y.item())

def _torchvision_deform_conv2d():
    """torchvision.ops.deform_conv2d where torchvision imports beside this torch (it is not a
    dependency; PyPI's torchvision fails to import beside a torch it was not built for)."""
    try:
        from torchvision.ops import deform_conv2d
    except Exception as error:  # ImportError, or RuntimeError from a mismatched build
        pytest.skip(f"torchvision is not importable here ({type(error).__name__}: {error})")
    return deform_conv2d


def test_matches_torchvision():
    # The oracle where it is installed (not in CI: no torchvision build matches the CPU torch
    # there): torchvision.ops.deform_conv2d, one sample at a time (its weight is shared by the
    # batch), forward with inf/NaN pixels (same NaN and inf patterns) and every gradient with finite
    # inputs, for zero, fractional and wide offsets, with and without a mask.
    deform_conv2d = _torchvision_deform_conv2d()
    g = torch.Generator().manual_seed(14)
    n, c, co, h, w = 2, 4, 5, 6, 7

    def theirs(x, wt, b, off, m=None):
        return torch.cat([deform_conv2d(x[i:i + 1], off[i:i + 1], wt[i], b[i], padding=1,
                                        mask=None if m is None else m[i:i + 1]) for i in range(n)])

    for offsets in ("zero", "fractional", "wide"):
        for with_mask in (False, True):
            for bad in (None, float("inf"), float("nan")):
                case = f"offsets {offsets}, mask {with_mask}, bad {bad}"
                x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
                if bad is not None:
                    x[0, 0, 0, 0] = x[1, 2, h - 1, w - 1] = x[1, 3, 2, 3] = bad
                wt = torch.randn(n, co, c, 3, 3, dtype=torch.float64, generator=g)
                b = torch.randn(n, co, dtype=torch.float64, generator=g)
                off = {"zero": torch.zeros(n, 18, h, w, dtype=torch.float64),
                       "fractional": fractional((n, 18, h, w)),
                       "wide": 4 * torch.randn(n, 18, h, w, dtype=torch.float64, generator=g)}[offsets]
                m = torch.rand(n, 9, h, w, dtype=torch.float64, generator=g) if with_mask else None
                inputs = (x, wt, b, off) + ((m,) if with_mask else ())
                leaves = [t.clone().requires_grad_() for t in inputs]
                tv_leaves = [t.clone().requires_grad_() for t in inputs]
                y = din_ops.dynamic_conv2d(*leaves[:3], padding=1, offset=leaves[3],
                                           mask=leaves[4] if with_mask else None)
                expected = theirs(*tv_leaves)
                assert torch.equal(y.isnan(), expected.isnan()), case
                assert torch.equal(y.isinf(), expected.isinf()), case
                torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12, equal_nan=True, msg=case)
                if bad is not None:
                    continue
                gy = torch.randn(n, co, h, w, dtype=torch.float64, generator=g)
                y.backward(gy)
                expected.backward(gy)
                for name, ours, ref in zip(["x", "weight", "bias", "offset", "mask"], leaves, tv_leaves):
                    if offsets == "zero" and name == "offset":
                        continue  # integer positions: one-sided derivatives, conventions differ
                    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-10, atol=1e-10,
                                               msg=f"{case}: {name}")
