"""din_ops.dynamic_instance_norm (1x1) against the float64 reference."""
import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES, DTYPES, LAYOUTS, LOW_PRECISION, SHAPES, assert_close_to_reference, layout
from conftest import assert_batch1_broadcast


def make(shape, co=None, dtype=torch.float64, device="cpu", bias=True, x_mean=0.0):
    n, c = shape[:2]
    co = c if co is None else co
    x = (x_mean + torch.randn(*shape, dtype=torch.float64) * 1.5 + 0.3).to(device, dtype)
    w = (torch.randn(n, co, c, dtype=torch.float64) / c**0.5).to(device, dtype)
    b = torch.randn(n, co, dtype=torch.float64).to(device, dtype) if bias else None
    return x, w, b


def expected(x, w, b):
    return reference.dynamic_instance_norm(x.double(), w.double(), None if b is None else b.double())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("co", [None, 5])
def test_forward_matches_reference(device, dtype, shape, co):
    x, w, b = make(shape, co, dtype, device)
    y = din_ops.dynamic_instance_norm(x, w, b)
    baseline = reference.dynamic_instance_norm(x, w, b) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, expected(x, w, b), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_layouts(device, name, dtype):
    x, w, b = make((3, 24, 7, 10), 17, dtype, device)
    x = layout(x, name)
    y = din_ops.dynamic_instance_norm(x, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last) if name == "channels_last" else y.is_contiguous()
    baseline = reference.dynamic_instance_norm(x, w, b) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, expected(x, w, b), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
def test_weight_views_and_no_bias(device):
    x, w, _ = make((2, 6, 5, 5), 4, torch.float32, device, bias=False)
    ref = expected(x, w, None)
    assert_close_to_reference(din_ops.dynamic_instance_norm(x, w), ref, torch.float32)
    assert_close_to_reference(din_ops.dynamic_instance_norm(x, w[..., None, None]), ref, torch.float32)
    # A transposed (non-contiguous) weight view.
    wt = w.transpose(1, 2).contiguous().transpose(1, 2)
    assert_close_to_reference(din_ops.dynamic_instance_norm(x, wt), ref, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("shape,co", [((2, 3, 5, 7), 4), ((1, 4, 1, 1), 4), ((3, 6, 4, 3), 2)])
def test_gradcheck(device, name, shape, co):
    x, w, b = make(shape, co, torch.float64, device)
    x = layout(x, name).requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(din_ops.dynamic_instance_norm, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: din_ops.dynamic_instance_norm(x, w), (x, w))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("x_mean", [0.0, 1e4])
def test_backward_matches_reference(device, dtype, name, x_mean):
    x, w, b = make((2, 20, 9, 11), 13, dtype, device, x_mean=x_mean)
    x = layout(x, name)
    gy = torch.randn(2, 13, 9, 11, dtype=torch.float64).to(device, dtype)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    din_ops.dynamic_instance_norm(*leaves).backward(gy)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, w, b)]
    reference.dynamic_instance_norm(*leaves64).backward(gy.double())
    baselines = [None] * 3
    if dtype in LOW_PRECISION:
        lowp = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        reference.dynamic_instance_norm(*lowp).backward(gy)
        baselines = [t.grad for t in lowp]
    for ours, exact, base in zip(leaves, leaves64, baselines):
        if dtype in LOW_PRECISION and x_mean != 0.0:
            # A bfloat16/float16 x = 1e4 + noise has lost its noise already; only check finiteness
            # and that plain PyTorch is not better.
            assert torch.isfinite(ours.grad).all()
            assert max_rel(ours.grad, exact.grad) <= max(2 * max_rel(base, exact.grad), 1e-2)
        else:
            assert_close_to_reference(ours.grad, exact.grad, dtype, base)


def max_rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("x_mean", [1e4, 1e6])
def test_large_mean_keeps_its_variance(device, name, x_mean):
    # float32 content with a huge mean: the output must match the exact DIN of that same input.
    x, w, b = make((2, 16, 24, 24), 16, torch.float32, device, x_mean=x_mean)
    x = layout(x, name)
    y = din_ops.dynamic_instance_norm(x, w, b)
    exact = expected(x, w, b)
    assert (y.double() - exact).abs().max().item() < 1e-4 * exact.abs().max().item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_planes_and_single_pixels_give_the_bias(device, dtype):
    for shape in [(2, 3, 1, 1), (2, 3, 4, 4)]:
        x = torch.full(shape, -7.5, device=device, dtype=dtype)
        _, w, b = make(shape, 5, dtype, device)
        y = din_ops.dynamic_instance_norm(x, w, b)
        torch.testing.assert_close(y, b[..., None, None].expand_as(y), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_special_cases_of_the_paper(device):
    # W = I, b = 0 is plain instance norm.
    x = torch.randn(3, 8, 6, 7, dtype=torch.float64, device=device)
    eye = torch.eye(8, dtype=torch.float64, device=device).expand(3, 8, 8)
    torch.testing.assert_close(din_ops.dynamic_instance_norm(x, eye), din_ops.instance_norm(x))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x, w, b = make((0, 3, 4, 4), 2, torch.float32, device)
    x.requires_grad_()
    y = din_ops.dynamic_instance_norm(x, w, b)
    assert y.shape == (0, 2, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_reference_backend_is_selectable():
    x, w, b = make((2, 3, 4, 4), 2)
    torch.testing.assert_close(din_ops.dynamic_instance_norm(x, w, b, backend="reference"), expected(x, w, b))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(device, name, bias):
    x, w, b = make((2, 5, 6, 7), 3, device=device, bias=bias)
    x = layout(x, name)
    torch.library.opcheck(torch.ops.din_ops.dynamic_instance_norm_1x1, (x.requires_grad_(), w.requires_grad_(), b, 1e-5))
    y, mean, rstd = torch.ops.din_ops.dynamic_instance_norm_1x1(x.detach(), w.detach(), b, 1e-5)
    torch.library.opcheck(
        torch.ops.din_ops.dynamic_instance_norm_1x1_backward, (torch.randn_like(y), x.detach(), w.detach(), mean, rstd)
    )


def test_double_backward_raises_clearly():
    x, w, b = make((1, 2, 3, 3), 2)
    x.requires_grad_()
    (g,) = torch.autograd.grad(din_ops.dynamic_instance_norm(x, w, b).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# ---- batch 1 broadcast, (N, C, 1, 1) bias, the diagonal weight ----

@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("which", ["weight", "bias", "both"])
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_batch1_weight_and_bias_broadcast(n, which, name):
    x, w, b = make((n, 6, 5, 7), co=4)
    x = layout(x, name)
    w1, b1 = w[:1].clone(), b[:1].clone()
    args = {"weight": w1 if which != "bias" else None, "bias": b1 if which != "weight" else None}

    def fn(x, weight=None, bias=None):
        return din_ops.dynamic_instance_norm(
            x, weight if weight is not None else w, bias if bias is not None else b
        )

    assert_batch1_broadcast(fn, x, {k: v for k, v in args.items() if v is not None})
    # And against the float64 reference with the operands expanded.
    we = w1.expand(n, -1, -1) if which != "bias" else w
    be = b1.expand(n, -1) if which != "weight" else b
    y = fn(x, args["weight"], args["bias"])
    assert_close_to_reference(y, expected(x, we, be), torch.float64)


def test_batch1_weight_gradcheck():
    x, w, b = make((3, 4, 3, 3), co=3)
    leaves = [t.requires_grad_() for t in (x, w[:1].clone(), b[:1].clone())]
    torch.autograd.gradcheck(lambda x, w, b: din_ops.dynamic_instance_norm(x, w, b), leaves)


def test_bias_shaped_like_statistics():
    x, w, b = make((2, 5, 4, 4))
    y = din_ops.dynamic_instance_norm(x, w, b.reshape(2, 5, 1, 1))
    assert torch.equal(y, din_ops.dynamic_instance_norm(x, w, b))


@pytest.mark.parametrize("batch", [2, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_diagonal_vector_weight_is_the_dense_diagonal(batch, dtype):
    x, _, _ = make((2, 6, 5, 5), dtype=dtype)
    d = torch.randn(batch, 6, dtype=torch.float64).to(dtype)
    b = torch.randn(batch, 6, dtype=torch.float64).to(dtype)
    dense = torch.diag_embed(d.double()).expand(2, -1, -1)
    y = din_ops.dynamic_instance_norm(x, d, b)
    assert_close_to_reference(y, expected(x, dense, b.double().expand(2, -1)), dtype)
    for unbiased in (False, True):
        y = din_ops.dynamic_instance_norm(x, d, b, unbiased=unbiased)
        z = din_ops.dynamic_instance_norm(x, torch.diag_embed(d).expand(2, -1, -1).contiguous(),
                                          b.expand(2, -1).contiguous(), unbiased=unbiased)
        torch.testing.assert_close(y, z, rtol=1e-5, atol=1e-5)
    # The per-channel kernel (spatially adaptive, per-plane gamma) does the work.
    sain = din_ops.spatially_adaptive_instance_norm(x, d.reshape(batch, 6, 1, 1), b.reshape(batch, 6, 1, 1))
    assert torch.equal(din_ops.dynamic_instance_norm(x, d, b), sain)


def test_diagonal_vector_weight_gradcheck():
    x, _, _ = make((2, 3, 4, 3))
    d = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, d, b: din_ops.dynamic_instance_norm(x, d, b, unbiased=True),
                             (x.requires_grad_(), d, b))


def test_broadcast_errors_say_what_fits():
    x, w, b = make((4, 6, 5, 5))
    with pytest.raises(ValueError, match="expand weight to N or pass batch 1"):
        din_ops.dynamic_instance_norm(x, w[:2], b)
    with pytest.raises(ValueError, match="expand bias to N or pass batch 1"):
        din_ops.dynamic_instance_norm(x, w, b[:3])
    with pytest.raises(ValueError, match="groups=C"):
        din_ops.dynamic_instance_norm(x, torch.randn(4, 6, dtype=torch.float64), padding=1)
    # Direct operator calls check batch 1 / N too.
    with pytest.raises(ValueError, match="or \\(1, Co, C\\)"):
        torch.ops.din_ops.dynamic_instance_norm_1x1(x, w[:2], None, 1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("case", ["batch_n", "batch1_weight", "batch1_bias", "no_bias", "channels_last",
                                  "expanded_weight"])
def test_int_and_pair_geometry_give_the_same_results(unbiased, case):
    # The geometry as plain ints (the defaults) and as pairs, the two branches of ops._int_pair:
    # the same values and gradients, those of the reference.
    g = torch.Generator().manual_seed(5)
    n, c, co = 3, 4, 5
    x = torch.randn(n, c, 6, 7, dtype=torch.float64, generator=g) + 2.0
    w = torch.randn(n, co, c, dtype=torch.float64, generator=g)
    b = torch.randn(n, co, dtype=torch.float64, generator=g)
    if case == "batch1_weight":
        w = w[:1]
    elif case == "batch1_bias":
        b = b[:1]
    elif case == "no_bias":
        b = None
    elif case == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif case == "expanded_weight":
        w = w[:1].expand(n, -1, -1)
    results = []
    for kwargs in ({}, {"stride": (1, 1), "padding": (0, 0), "dilation": [1, 1]}):
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        y = din_ops.dynamic_instance_norm(*leaves, unbiased=unbiased, **kwargs)
        y.backward(torch.ones_like(y))
        results.append([y] + [t.grad for t in leaves if t is not None])
    for ints, pairs in zip(*results):
        torch.testing.assert_close(ints, pairs, rtol=1e-13, atol=1e-13)
    expected = reference.dynamic_instance_norm(x, w.expand(n, -1, -1), None if b is None else b.expand(n, -1),
                                               unbiased=unbiased)
    torch.testing.assert_close(results[0][0], expected, rtol=1e-12, atol=1e-12)
