"""din_ops.models: DINStyleNet's cost against the paper's Table 1, its forward on both backends,
style codes, masks and interpolation, gradients; the VGG-19 encoder and its weights-file checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from din_ops.models import DINStyleNet, VGG19Encoder, load_vgg19_state_dict
from din_ops.models.din_style_net import paper_macs

# Table 1 of the paper (512x512 input), giga multiply-accumulates, and the weight/bias nets' cost
# quoted in its Quantitative Evaluation (19.97 M).
PAPER = {"encoder": 3.62e9, "decoder": 3.72e9, "param_nets": 19.97e6}
PAPER_ADAIN_VGG = {"encoder": 63.44e9, "decoder": 63.36e9}

TINY = dict(widths=(4, 6, 8), outer_kernel=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (see conftest)


@pytest.mark.parametrize("backend", [None, "reference"])
def test_cost_matches_paper_table1(backend):
    macs = paper_macs(512, 512, backend=backend)
    for part, expected in PAPER.items():
        assert abs(macs[part] / expected - 1) < 0.10, (part, macs[part], expected)
    # The DIN layers' own 1x1 dynamic convolutions (not in the paper's table) are counted too.
    assert macs["din"] == 128 * 128 * 128**2 + 96 * 96 * 256**2 + 32 * 32 * 512**2
    # The VGG style encoder is AdaIN's encoder (relu4_1): counted the same way as the paper's.
    assert abs(macs["style_encoder"] / PAPER_ADAIN_VGG["encoder"] - 1) < 0.01


def test_counting_reproduces_paper_adain_decoder():
    """Table 1 counts multiply-accumulates: AdaIN's decoder (mirror of VGG to relu4_1, Huang and
    Belongie 2017) counted with FlopCounterMode / 2 gives the paper's 63.36 G."""
    def conv(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]

    up = nn.Upsample(scale_factor=2)
    with FakeTensorMode():
        decoder = nn.Sequential(*conv(512, 256), up, *conv(256, 256), *conv(256, 256), *conv(256, 256),
                                *conv(256, 128), up, *conv(128, 128), *conv(128, 64), up, *conv(64, 64),
                                nn.Conv2d(64, 3, 3, padding=1))
        with FlopCounterMode(display=False) as counter:
            decoder(torch.empty(1, 512, 64, 64))
    assert abs(counter.get_total_flops() / 2 / PAPER_ADAIN_VGG["decoder"] - 1) < 0.01


@pytest.mark.parametrize("config", [
    dict(TINY),
    dict(TINY, style_encoder="mobilenet", din_kind="spatially_adaptive"),
    dict(TINY, din_kernel=3, din_groups=0),
])
def test_forward_backends_agree(config):
    """The whole network on the din_ops kernels equals it on din_ops.reference (float64). The VGG
    style side is plain PyTorch on both backends: its codes are computed once, in float32 (float64
    convolutions have no fast CPU path), and the content side is compared in float64."""
    model = DINStyleNet(**config)
    content = torch.rand(2, 3, 19, 22, dtype=torch.float64)
    style = torch.rand(2, 3, 17, 16)
    with torch.no_grad():
        if config.get("style_encoder") == "mobilenet":
            model.double()
            run = lambda: model(content, style.double(), alpha=0.8)  # noqa: E731
        else:
            codes = [(w.double(), b.double()) for w, b in model.encode_style(style)]
            model.double()
            run = lambda: model.stylize(content, codes, alpha=0.8)  # noqa: E731
        y = run()
        model.set_backend("reference")
        y_ref = run()
    assert y.shape == (2, 3, 19, 22)
    assert (y - y_ref).abs().max() < 1e-9
    assert torch.isfinite(y).all()


def test_channels_last_and_float32():
    model = DINStyleNet(**TINY).eval()
    content, style = torch.rand(1, 3, 24, 20), torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        y = model(content, style)
        model = model.to(memory_format=torch.channels_last)
        y_cl = model(content.contiguous(memory_format=torch.channels_last), style)
    assert (y - y_cl).abs().max() < 1e-4


def test_style_codes_masks_and_interpolation():
    model = DINStyleNet(**TINY).eval()
    for din in model.dins:  # make the styles matter more than the near-identity initialization does
        nn.init.normal_(din.weight_net[4].weight, std=0.5)
        nn.init.normal_(din.bias_net[4].bias, std=0.5)
    content = torch.rand(2, 3, 16, 18)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 20, 16)
    with torch.no_grad():
        ca, cb = model.encode_style(a), model.encode_style(b)
        ya, yb = model.stylize(content, ca), model.stylize(content, cb)
        assert torch.allclose(model(content, a), ya)
        assert (ya - yb).abs().max() > 1e-3
        assert torch.allclose(model.stylize(content, model.mix_styles([ca, cb], [1.0, 0.0])), ya, atol=1e-5)
        mid = model.stylize(content, model.mix_styles([ca, cb], [0.5, 0.5]))
        assert (mid - ya).abs().max() > 1e-4 and (mid - yb).abs().max() > 1e-4
        left = torch.zeros(1, 2, 16, 18)
        left[:, 0, :, :9], left[:, 1, :, 9:] = 1, 1
        masked = model.stylize(content, [ca, cb], masks=left)
        assert torch.allclose(model.stylize(content, [ca, cb], masks=torch.stack(
            [torch.ones(16, 18), torch.zeros(16, 18)])[None]), ya, atol=1e-5)
        # Far from the border between the regions, each side is its style's result.
        assert torch.allclose(masked[..., :2], ya[..., :2], atol=1e-2)
        assert torch.allclose(masked[..., -2:], yb[..., -2:], atol=1e-2)
    with pytest.raises(ValueError, match="masks of shape"):
        model.stylize(content, [ca, cb], masks=torch.ones(1, 3, 16, 18))
    with pytest.raises(ValueError, match=r"masks of shape \(N or 1, K, H, W\) = \(1, 2, 16, 18\) .* got \(1, 3, 16"):
        model.stylize(content[:1], [ca, cb], masks=torch.ones(1, 3, 16, 18))
    with pytest.raises(ValueError, match="2 styles' codes but no masks"):
        model.stylize(content, [ca, cb])
    with pytest.raises(ValueError, match="with masks, expected a list of K styles' codes .* got one style's codes"):
        model.stylize(content, ca, masks=left)
    with pytest.raises(ValueError, match="content images"):
        model(torch.rand(1, 4, 8, 8), a)
    with pytest.raises(ValueError, match="style_encoder"):
        DINStyleNet(style_encoder="resnet")


def test_gradients_reach_every_trainable_parameter():
    model = DINStyleNet(**TINY)
    model(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)).square().mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("style_encoder") for n, _ in trainable)  # frozen VGG
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert {id(p) for p in model.param_net_parameters()} <= {id(p) for _, p in trainable}


def test_vgg_loads_torchvision_layout(tmp_path):
    torch.manual_seed(1)
    source = VGG19Encoder()
    state = dict(source.state_dict())
    state["classifier.0.weight"] = torch.zeros(3, 3)  # extra keys of the full vgg19 are ignored
    state["features.21.weight"] = torch.zeros(512, 512, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "vgg19.pth")
    loaded = VGG19Encoder(tmp_path / "vgg19.pth")
    x = torch.rand(1, 3, 32, 24)
    with torch.no_grad():
        feats, expected = loaded(x), source(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 32, 24), (1, 128, 16, 12), (1, 256, 8, 6), (1, 512, 4, 3)]
    assert all(torch.equal(f, e) for f, e in zip(feats, expected))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_vgg_weights_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*torchvision"):
        load_vgg19_state_dict(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        load_vgg19_state_dict(tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list"):
        load_vgg19_state_dict(tmp_path / "list.pth")
    state = VGG19Encoder().state_dict()
    state["features.19.weight"] = torch.zeros(512, 128, 3, 3)
    del state["features.0.bias"]
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"missing features.0.bias; features.19.weight has shape \(512, 128, 3, 3\)"):
        VGG19Encoder(tmp_path / "wrong.pth")


@pytest.mark.parametrize("cin,cout,k", [(32, 3, 9), (4, 3, 3), (5, 1, 7), (8, 20, 5), (6, 2, 1)])
@pytest.mark.parametrize("mem", ["contiguous", "channels_last"])
def test_row_packed_conv_equals_conv2d(cin, cout, k, mem):
    from din_ops.models.din_style_net import RowPackedConv2d

    conv = RowPackedConv2d(cin, cout, k).double()
    x = torch.randn(2, cin, 11, 7, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last) if mem == "channels_last" else x
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=k // 2)
    y = conv(x)
    assert y.shape == expected.shape and (y - expected).abs().max() < 1e-12
    g = torch.randn_like(expected)
    w_grad = torch.autograd.grad((conv(x) * g).sum(), conv.weight)[0]
    conv.packed = False
    assert conv.row_groups * conv.rows >= k
    assert torch.allclose(w_grad, torch.autograd.grad((conv(x) * g).sum(), conv.weight)[0], atol=1e-10)


def test_style_images_smaller_than_vgg_needs_are_refused():
    model = DINStyleNet(**TINY).eval()
    assert model.min_style_size == 8
    with torch.no_grad():
        model.encode_style(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="style images must be at least 8x8 pixels .* got 12x7"):
            model.encode_style(torch.rand(1, 3, 7, 12))
        with pytest.raises(ValueError, match="VGG19Encoder needs images of at least 8x8 pixels"):
            VGG19Encoder()(torch.rand(1, 3, 4, 4))
        mobile = DINStyleNet(**TINY, style_encoder="mobilenet").eval()
        assert mobile.min_style_size == 1
        assert mobile(torch.rand(1, 3, 5, 6), torch.rand(1, 3, 4, 4)).shape == (1, 3, 5, 6)
