"""din_ops.spatially_adaptive_instance_norm (y = gamma * IN(x) + beta) against the float64 reference:
values, gradients, both gamma/beta forms, layouts, numerics, errors, opcheck and torch.compile."""
import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES, DTYPES, LAYOUTS, LOW_PRECISION, SHAPES, assert_close_to_reference, layout

sain = din_ops.spatially_adaptive_instance_norm

# (gamma form, beta form): "full" is (N, C, H, W), "plane" is (N, C, 1, 1), None is no beta.
FORMS = [("full", "full"), ("plane", "plane"), ("full", None), ("plane", None), ("full", "plane"), ("plane", "full")]


def modulation(x, form, scale=1.0, offset=0.0):
    """A random gamma or beta for x in the given form (float64 values rounded to x's dtype)."""
    if form is None:
        return None
    n, c, h, w = x.shape
    shape = (n, c, h, w) if form == "full" else (n, c, 1, 1)
    return (torch.randn(shape, dtype=torch.float64) * scale + offset).to(x.device, x.dtype)


def inputs(shape, dtype, device, forms):
    x = (torch.randn(*shape, dtype=torch.float64) * 2 + 0.5).to(device, dtype)
    return x, modulation(x, forms[0], offset=1.0), modulation(x, forms[1])


def as64(t):
    return None if t is None else t.double()


def reference64(x, gamma, beta, eps=1e-5):
    return reference.spatially_adaptive_instance_norm(x.double(), gamma.double(), as64(beta), eps)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("forms", FORMS[:4], ids=str)
def test_forward_matches_reference(device, dtype, shape, forms):
    x, gamma, beta = inputs(shape, dtype, device, forms)
    y = sain(x, gamma, beta)
    baseline = reference.spatially_adaptive_instance_norm(x, gamma, beta) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference64(x, gamma, beta), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("forms", FORMS, ids=str)
def test_mixed_forms(device, forms):
    x, gamma, beta = inputs((2, 6, 5, 9), torch.float32, device, forms)
    assert_close_to_reference(sain(x, gamma, beta), reference64(x, gamma, beta), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("forms", [("full", "full"), ("plane", "plane")], ids=str)
def test_layouts(device, name, dtype, forms):
    x, gamma, beta = inputs((3, 24, 7, 10), dtype, device, forms)
    x = layout(x, name)
    if forms[0] == "full":
        gamma, beta = layout(gamma, name), layout(beta, name)
    y = sain(x, gamma, beta)
    if name == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    baseline = reference.spatially_adaptive_instance_norm(x, gamma, beta) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference64(x, gamma, beta), dtype, baseline)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_name,g_name", [("channels_last", "contiguous"), ("contiguous", "channels_last")])
def test_gamma_in_another_layout_than_x(device, x_name, g_name):
    x, gamma, beta = inputs((2, 8, 6, 5), torch.float32, device, ("full", "full"))
    x, gamma, beta = layout(x, x_name), layout(gamma, g_name), layout(beta, "strided")
    assert_close_to_reference(sain(x, gamma, beta), reference64(x, gamma, beta), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (2, 16, 4, 3)])
@pytest.mark.parametrize("forms", FORMS[:3], ids=str)
def test_gradcheck(device, name, shape, forms):
    x, gamma, beta = inputs(shape, torch.float64, device, forms)
    x = layout(x, name).requires_grad_()
    if forms[0] == "full":
        gamma = layout(gamma, name)
    gamma.requires_grad_()
    if beta is None:
        assert torch.autograd.gradcheck(lambda x, g: sain(x, g), (x, gamma))
    else:
        beta.requires_grad_()
        assert torch.autograd.gradcheck(sain, (x, gamma, beta))


def grads(fn, x, gamma, beta, gy):
    leaves = [t.detach().clone().requires_grad_() for t in (x, gamma, beta) if t is not None]
    fn(*leaves).backward(gy)
    return [t.grad for t in leaves]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("forms", FORMS[:4], ids=str)
def test_backward_matches_reference(device, dtype, name, forms):
    x, gamma, beta = inputs((2, 12, 9, 11), dtype, device, forms)
    x = layout(x, name)
    gy = layout(torch.randn(x.shape, dtype=torch.float64).to(device, dtype), name)
    ours = grads(sain, x, gamma, beta, gy)
    expected = grads(reference.spatially_adaptive_instance_norm, as64(x), as64(gamma), as64(beta), gy.double())
    baselines = [None] * len(ours)
    if dtype in LOW_PRECISION:
        baselines = grads(reference.spatially_adaptive_instance_norm, x, gamma, beta, gy)
    for got, want, base in zip(ours, expected, baselines):
        assert_close_to_reference(got, want, dtype, base)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forms", FORMS[:4], ids=str)
def test_single_pixel_gives_beta(device, dtype, forms):
    # H * W == 1: the variance is 0, IN(x) = 0 exactly, so y = beta (0 without beta) and nothing is NaN.
    x, gamma, beta = inputs((3, 5, 1, 1), dtype, device, forms)
    x, gamma = x.requires_grad_(), gamma.requires_grad_()
    y = sain(x, gamma, beta)
    assert torch.equal(y, torch.zeros_like(y) if beta is None else beta)
    y.backward(torch.randn_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(gamma.grad, torch.zeros_like(gamma))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mean", [1e4, 1e6])
@pytest.mark.parametrize("forms", [("full", "full"), ("plane", "plane")], ids=str)
def test_large_mean_keeps_its_variance(device, name, mean, forms):
    # float32 x = mean + unit noise, gamma in [0.5, 1.5]: the output must match the exact result for
    # those same float32 inputs (shifted sums and the split mean keep the digits).
    x = layout((mean + torch.randn(2, 8, 32, 32, dtype=torch.float64)).float().to(device), name)
    gamma = modulation(x, forms[0], scale=0.0, offset=0.5)
    gamma += torch.rand_like(gamma)
    beta = modulation(x, forms[1])
    y = sain(x, gamma, beta)
    assert (y.double() - reference64(x, gamma, beta)).abs().max().item() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("forms", [("plane", "plane"), ("plane", "full"), ("plane", None), ("full", "full"),
                                   ("full", None)], ids=str)
def test_large_outputs_streamed_match_the_cached_path(dtype, forms):
    # Outputs of 8 MiB and more are written with non-temporal stores (csrc/cpu/common.h:
    # stream_output): y, and in backward gx and a full-size ggamma. Planes of 129 x 127 values start
    # at every alignment. Each plane's values and gradients depend on that plane only: the streamed
    # results equal, bit for bit, those of a few planes computed alone (small outputs, plain stores).
    C = 130 if dtype == torch.float32 else 66
    x, gamma, beta = inputs((1, C, 129, 127), dtype, "cpu", forms)
    assert x.numel() * x.element_size() >= 8 << 20
    gy = torch.randn_like(x)
    part = slice(5, 14)
    few = [x[:, part], gamma[:, part], None if beta is None else beta[:, part]]
    assert torch.equal(sain(x, gamma, beta)[:, part], sain(*few))
    for big, small in zip(grads(sain, x, gamma, beta, gy), grads(sain, *few, gy[:, part])):
        assert torch.equal(big[:, part], small)
    assert_close_to_reference(sain(x, gamma, beta), reference64(x, gamma, beta), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("forms", FORMS, ids=str)
def test_large_channels_last_outputs_streamed_match_the_cached_path(dtype, forms):
    # Channels-last outputs of 8 MiB and more are streamed too (y; gx and a full-size ggamma); with
    # an odd C a pixel's channels start at every alignment. A sample's results depend on that sample
    # only: the second sample of a streamed batch equals, bit for bit, that sample computed alone
    # (half the size, plain stores).
    C = 129 if dtype == torch.float32 else 65
    x, gamma, beta = (None if t is None else t.contiguous(memory_format=torch.channels_last)
                      for t in inputs((2, C, 91, 91), dtype, "cpu", forms))
    assert x.numel() * x.element_size() >= 8 << 20 > x[1:].numel() * x.element_size()
    gy = torch.randn_like(x)
    one = [x[1:], gamma[1:], None if beta is None else beta[1:]]
    y = sain(x, gamma, beta)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y[1:], sain(*one))
    for big, small in zip(grads(sain, x, gamma, beta, gy), grads(sain, *one, gy[1:])):
        assert torch.equal(big[1:], small)
    assert_close_to_reference(y, reference64(x, gamma, beta), dtype)


@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("forms", [("full", "full"), ("plane", "plane")], ids=str)
def test_same_result_for_any_thread_count(name, forms):
    x, gamma, beta = inputs((2, 64, 40, 40), torch.float32, "cpu", forms)
    x = layout(x, name)
    gy = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append([sain(x, gamma, beta)] + grads(sain, x, gamma, beta, gy))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("forms", FORMS[:3], ids=str)
def test_empty_batch(device, forms):
    x, gamma, beta = inputs((0, 3, 4, 4), torch.float32, device, forms)
    leaves = [t.requires_grad_() for t in (x, gamma, beta) if t is not None]
    y = sain(x, gamma, beta)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    for t in leaves:
        assert t.grad.shape == t.shape


def test_eps_and_reference_backend():
    x, gamma, beta = inputs((2, 3, 4, 4), torch.float64, "cpu", ("full", "plane"))
    for eps in (0.0, 1e-3, 10.0):
        torch.testing.assert_close(sain(x, gamma, beta, eps=eps), reference64(x, gamma, beta, eps))
    torch.testing.assert_close(sain(x, gamma, beta, backend="reference"), reference64(x, gamma, beta))


# Errors ------------------------------------------------------------------------------------------

SHAPE_MSG = (r"expected {} of shape \(N, C, H, W\) = \(2, 3, 5, 7\), \(N, C, 1, 1\) = \(2, 3, 1, 1\) or "
             r"\(N, C\) = \(2, 3\), with a batch of N = 2 .* expand .* to N or pass batch 1, got {}")


# (N, C) and a batch of 1 are valid forms (test_batch1_gamma_beta_broadcast); a batch of 3 is not.
@pytest.mark.parametrize("bad", [(2, 3, 5, 1), (2, 3, 1, 7), (2, 4), (2, 4, 1, 1), (3, 3, 5, 7), (3, 3),
                                 (2, 3, 5, 7, 1), (2, 3, 1)])
def test_bad_gamma_and_beta_shapes(bad):
    x = torch.randn(2, 3, 5, 7)
    shown = str(bad).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=SHAPE_MSG.format("gamma", shown)):
        sain(x, torch.randn(bad))
    with pytest.raises(ValueError, match=SHAPE_MSG.format("beta", shown)):
        sain(x, torch.randn(2, 3, 1, 1), torch.randn(bad))


def test_bad_dtypes_and_devices():
    x = torch.randn(2, 3, 5, 7)
    with pytest.raises(TypeError, match=r"expected gamma to have the dtype of x \(torch.float32\), got torch.float64"):
        sain(x, torch.randn(2, 3, 5, 7, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"expected beta to have the dtype of x \(torch.float32\), got torch.float16"):
        sain(x, torch.randn(2, 3, 1, 1), torch.randn(2, 3, 1, 1, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"expected gamma on the device of x \(cpu\), got meta"):
        sain(x, torch.randn(2, 3, 5, 7, device="meta"))
    with pytest.raises(TypeError, match="expected gamma to be a torch.Tensor, got float"):
        sain(x, 2.0)
    with pytest.raises(TypeError, match="expected x to be float32, float64, float16 or bfloat16"):
        sain(x.int(), torch.ones(2, 3, 5, 7, dtype=torch.int32))
    with pytest.raises(ValueError, match="expected eps >= 0"):
        sain(x, torch.randn(2, 3, 1, 1), eps=-1.0)


def test_direct_operator_calls_are_checked_too():
    op = torch.ops.din_ops.spatially_adaptive_instance_norm
    x = torch.randn(2, 3, 5, 7)
    expected = r"expected gamma of shape \(N, C, H, W\) = \[2, 3, 5, 7\] or \(N, C, 1, 1\)"
    with pytest.raises(ValueError, match=expected):
        op(x, torch.randn(2, 3, 5, 1), None, 1e-5)
    with pytest.raises(ValueError, match=r"expected beta of shape"):
        op(x, torch.randn(2, 3, 1, 1), torch.randn(3, 1, 1), 1e-5)
    with pytest.raises(TypeError, match="expected gamma to have the dtype of x"):
        op(x, torch.randn(2, 3, 1, 1, dtype=torch.float64), None, 1e-5)
    y, mean, rstd = op(x, torch.randn(2, 3, 1, 1), None, 1e-5)
    with pytest.raises(ValueError, match=r"expected grad_y of shape"):
        torch.ops.din_ops.spatially_adaptive_instance_norm_backward(y[:1], x, torch.randn(2, 3, 1, 1), mean, rstd, False)


# Operator registration, torch.compile, double backward -------------------------------------------

@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
@pytest.mark.parametrize("forms", FORMS[:3], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(name, forms, device):
    x, gamma, beta = inputs((2, 5, 6, 7), torch.float64, device, forms)
    x = layout(x, name)
    args = [t.requires_grad_() for t in (x, gamma, beta) if t is not None]
    if beta is None:
        args.append(None)
    torch.library.opcheck(torch.ops.din_ops.spatially_adaptive_instance_norm, (*args, 1e-5))
    y, mean, rstd = torch.ops.din_ops.spatially_adaptive_instance_norm(x.detach(), gamma.detach(), as64(beta), 1e-5)
    for beta_defined in (True, False):
        torch.library.opcheck(
            torch.ops.din_ops.spatially_adaptive_instance_norm_backward,
            (torch.randn_like(y), x.detach(), gamma.detach(), mean, rstd, beta_defined),
        )


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("forms", FORMS[:3], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_compiles_with_backward(memory_format, forms, device):
    torch._dynamo.reset()

    def layer(x, gamma, beta):
        return torch.relu(sain(x, gamma, beta)) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x, gamma, beta = inputs((2, 6, 5, 7), torch.float64, device, forms)
    x = x.contiguous(memory_format=memory_format)
    leaves = [t.requires_grad_() for t in (x, gamma, beta) if t is not None]
    y = compiled(x, gamma, beta)
    expected = torch.relu(reference.spatially_adaptive_instance_norm(x, gamma, beta)) * 2
    torch.testing.assert_close(y, expected)
    got = torch.autograd.grad(y.square().sum(), leaves)
    want = torch.autograd.grad(expected.square().sum(), leaves)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)
    torch._dynamo.reset()


def test_double_backward_raises_clearly():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(sain(x, gamma).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# ---- batch 1 broadcast and (N, C) statistics ----

@pytest.mark.parametrize("forms", FORMS, ids=str)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_batch1_gamma_beta_broadcast(forms, name):
    from conftest import assert_batch1_broadcast

    x, gamma, beta = inputs((3, 5, 4, 6), torch.float64, "cpu", forms)
    x = layout(x, name)
    ops = {"gamma": gamma[:1].clone()}
    if beta is not None:
        ops["beta"] = beta[:1].clone()
    assert_batch1_broadcast(lambda x, gamma, beta=None: sain(x, gamma, beta), x, ops)
    # One of the two batch 1, the other batch N.
    if beta is not None:
        y = sain(x, gamma, beta[:1])
        torch.testing.assert_close(y, reference64(x, gamma, beta[:1].expand(3, -1, -1, -1)), rtol=1e-12, atol=1e-12)


def test_batch1_gradcheck_and_statistics_shape():
    x = torch.randn(3, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, g, b: sain(x, g, b), (x, gamma, beta))
    g2 = torch.randn(3, 4, dtype=torch.float64)
    assert torch.equal(sain(x, g2, beta), sain(x, g2.reshape(3, 4, 1, 1), beta.reshape(1, 4, 1, 1)))


def test_batch1_error_says_what_fits():
    x = torch.randn(4, 3, 5, 5)
    with pytest.raises(ValueError, match="expand gamma to N or pass batch 1"):
        sain(x, torch.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match="batch 1"):
        torch.ops.din_ops.spatially_adaptive_instance_norm(x, torch.randn(2, 3, 1, 1), None, 1e-5)
