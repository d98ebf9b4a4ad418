"""din_ops.nn: the DIN layer module (all kinds, both backends, style codes) and the fused affine
instance norm, checked against din_ops.reference in float64; flop formulas of the ops."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import din_ops
from din_ops import reference
from din_ops.nn import DynamicInstanceNorm2d, InstanceNorm2d, deformable_supported, mix_codes, set_backend

from conftest import assert_close_to_reference, layout

# (kind, kernel_size, groups): the paper's 1x1, a grouped 3x3, a depthwise 3x3, spatially adaptive.
VARIANTS = [("conv", 1, 1), ("conv", 3, 2), ("conv", 3, 6), ("spatially_adaptive", 1, 1)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (see conftest)


def _layer(kind, k, groups, channels=6, style_channels=5, **kw) -> DynamicInstanceNorm2d:
    layer = DynamicInstanceNorm2d(channels, style_channels, kind=kind, kernel_size=k, groups=groups,
                                  hidden=7, grid=3, **kw)
    # A larger last layer than the near-identity default, so the predicted kernels matter.
    for net in (layer.weight_net, layer.bias_net):
        torch.nn.init.normal_(net[4].weight, std=0.3)
        torch.nn.init.normal_(net[4].bias, std=0.3)
    return layer


def _expected(layer: DynamicInstanceNorm2d, x, code):
    """The layer's output written with din_ops.reference (float64 when the inputs are)."""
    weight, bias = code
    if layer.kind == "spatially_adaptive":
        gamma = F.interpolate(weight, size=x.shape[2:], mode="bilinear", align_corners=False)
        beta = F.interpolate(bias, size=x.shape[2:], mode="bilinear", align_corners=False)
        return reference.spatially_adaptive_instance_norm(x, gamma, beta, layer.eps)
    return reference.dynamic_instance_norm(x, weight, bias, padding=layer.kernel_size // 2,
                                           groups=layer.groups, eps=layer.eps)


@pytest.mark.parametrize("kind,k,groups", VARIANTS)
@pytest.mark.parametrize("mem", ["contiguous", "channels_last"])
def test_matches_reference(kind, k, groups, mem):
    layer = _layer(kind, k, groups)
    x, s = torch.randn(3, 6, 9, 11), torch.randn(3, 5, 13, 10)
    code = layer.encode_style(s)
    if kind == "conv":
        assert code[0].shape == ((3, 6, 6) if k == 1 else (3, 6, 6 // groups, k, k))
    else:
        assert code[0].shape == (3, 6, 3, 3)
    assert code[1].shape[:2] == (3, 6)
    with torch.no_grad():
        expected = _expected(layer.double(), x.double(), tuple(c.double() for c in code))
        layer.float()
        y = layer(layout(x, mem), s)
    assert_close_to_reference(y, expected, torch.float32)
    assert y.is_contiguous(memory_format=torch.channels_last if mem == "channels_last" else torch.contiguous_format)


@pytest.mark.parametrize("kind,k,groups", VARIANTS)
def test_gradcheck(kind, k, groups):
    groups = min(groups, 4)  # depthwise at 4 channels
    layer = _layer(kind, k, groups, channels=4, style_channels=3, backend="cpu").double()
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    # fast_mode: random projections of the Jacobian (the ops' full Jacobians are checked in their
    # own tests); this checks the module's composition of nets, reshapes and the op.
    assert torch.autograd.gradcheck(lambda x, s: layer(x, s), (x, s), eps=1e-6, atol=1e-5, fast_mode=True)


def test_backends_agree_and_set_backend():
    layer = _layer("conv", 3, 2)
    x, s = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 8, 8)
    with torch.no_grad():
        y_cpu = layer(x, s)
        set_backend(layer, "reference")
        assert layer.backend == "reference"
        y_ref = layer(x, s)
    assert (y_cpu - y_ref).abs().max() < 1e-4
    with pytest.raises(ValueError, match="backend"):
        set_backend(layer, "tpu")


def test_fresh_layer_is_instance_norm():
    """The default initialization starts close to IN(x); with a zero last layer it is exactly IN."""
    for kind, k, groups in VARIANTS:
        layer = DynamicInstanceNorm2d(6, 5, kind=kind, kernel_size=k, groups=groups)
        for net in (layer.weight_net, layer.bias_net):
            torch.nn.init.zeros_(net[4].weight)
        x, s = torch.randn(2, 6, 7, 7), torch.randn(2, 5, 9, 9)
        with torch.no_grad():
            y = layer(x, s)
        assert_close_to_reference(y, reference.instance_norm(x.double()), torch.float32)


def test_style_codes_reused_broadcast_alpha_and_mixed():
    layer = _layer("conv", 1, 1)
    x, s = torch.randn(4, 6, 8, 8), torch.randn(1, 5, 8, 8)
    with torch.no_grad():
        code = layer.encode_style(s)
        y = layer.apply(x, code)
        # One style for the whole content batch: same as repeating the style.
        assert torch.allclose(y, layer(x, s.expand(4, -1, -1, -1)), atol=1e-5)
        assert torch.equal(layer.apply(x, code, alpha=0.0), x)
        assert torch.allclose(layer.apply(x, code, alpha=0.25), 0.75 * x + 0.25 * y, atol=1e-5)
        other = layer.encode_style(torch.randn(1, 5, 8, 8))
        mixed = layer.apply(x, mix_codes([code, other], [0.3, 0.7]))
        assert torch.allclose(mixed, 0.3 * y + 0.7 * layer.apply(x, other), atol=1e-4)
        assert not torch.allclose(y, layer.apply(x, other), atol=1e-3)
    with pytest.raises(ValueError, match="batch"):
        layer.apply(x, layer.encode_style(torch.randn(2, 5, 8, 8)))
    with pytest.raises(ValueError, match="weights"):
        mix_codes([code], [0.5, 0.5])


def test_errors():
    with pytest.raises(ValueError, match="'conv', 'spatially_adaptive'"):
        DynamicInstanceNorm2d(4, 4, kind="bogus")
    with pytest.raises(ValueError, match="odd"):
        DynamicInstanceNorm2d(4, 4, kernel_size=2)
    with pytest.raises(ValueError, match="groups"):
        DynamicInstanceNorm2d(6, 4, groups=4)
    with pytest.raises(ValueError, match="channels"):
        DynamicInstanceNorm2d(0, 4)
    with pytest.raises(ValueError, match="spatially_adaptive"):
        DynamicInstanceNorm2d(4, 4, kind="spatially_adaptive", kernel_size=3)
    layer = DynamicInstanceNorm2d(4, 3)
    with pytest.raises(ValueError, match=r"style features of shape \(N, 3, H, W\)"):
        layer.encode_style(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"content features of shape \(N, 4, H, W\)"):
        layer(torch.randn(1, 5, 5, 5), torch.randn(1, 3, 5, 5))


def test_deformable_kind():
    """Deformable DIN runs where the op takes offset=; elsewhere it is refused with the kinds that work."""
    if deformable_supported():
        layer = DynamicInstanceNorm2d(4, 3, kind="deformable", kernel_size=3)
        plain = DynamicInstanceNorm2d(4, 3, kind="conv", kernel_size=3)
        plain.load_state_dict(layer.state_dict(), strict=False)
        x, s = torch.randn(2, 4, 6, 6), torch.randn(2, 3, 6, 6)
        with torch.no_grad():  # zero-initialized offsets: the plain k x k kernel
            assert torch.allclose(layer(x, s), plain(x, s), atol=1e-5)
    else:
        with pytest.raises(ValueError, match="offset=.*supported kinds: 'conv', 'spatially_adaptive'"):
            DynamicInstanceNorm2d(4, 3, kind="deformable", kernel_size=3)


@pytest.mark.parametrize("mem", ["contiguous", "channels_last"])
def test_instance_norm_module(mem):
    ours, theirs = InstanceNorm2d(5), torch.nn.InstanceNorm2d(5, affine=True)
    torch.nn.init.normal_(ours.weight)
    torch.nn.init.normal_(ours.bias)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 7, 6)
    with torch.no_grad():
        assert_close_to_reference(ours(layout(x, mem)), theirs.double()(x.double()), torch.float32)
    g = torch.randn(3, 5, 7, 6)
    ours(x).backward(g)
    theirs.float()(x).backward(g)
    assert torch.allclose(ours.weight.grad, theirs.weight.grad, atol=1e-4)
    assert torch.allclose(ours.bias.grad, theirs.bias.grad, atol=1e-4)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("k,groups", [(1, 1), (3, 1), (3, 2), (3, 6)])
def test_flop_formulas_match_conv2d(k, groups):
    """The din_ops ops count like the F.conv2d the reference runs (2 FLOPs per multiply-add)."""
    x = torch.randn(2, 6, 9, 10)
    w = torch.randn(2, 6, 6 // groups, k, k)
    b = torch.randn(2, 6)
    ours = _flops(lambda: din_ops.dynamic_instance_norm(x, w, b, padding=k // 2, groups=groups))
    ref = _flops(lambda: din_ops.dynamic_instance_norm(x, w, b, padding=k // 2, groups=groups, backend="reference"))
    assert ours == ref == 2 * 2 * 6 * 9 * 10 * (6 // groups) * k * k
    assert _flops(lambda: din_ops.dynamic_conv2d(x, w, b, padding=k // 2, groups=groups)) == ours
    xr = x.clone().requires_grad_()
    y = din_ops.dynamic_instance_norm(xr, w.requires_grad_(), b, padding=k // 2, groups=groups)
    assert _flops(lambda: y.sum().backward()) == 2 * ours  # input and weight gradients
    assert _flops(lambda: din_ops.spatially_adaptive_instance_norm(x, x, x)) == 0
    assert _flops(lambda: din_ops.instance_norm(x)) == 0
