"""Bad input raises ValueError/TypeError naming the argument and what was expected."""
import pytest
import torch

import din_ops


def din_args(n=2, c=3, co=4, h=5, w=5, dtype=torch.float32):
    return torch.randn(n, c, h, w, dtype=dtype), torch.randn(n, co, c, dtype=dtype), torch.randn(n, co, dtype=dtype)


def test_three_dimensional_x():
    with pytest.raises(ValueError, match=r"expected x of shape \(N, C, H, W\), got \(3, 5, 5\)"):
        din_ops.instance_norm(torch.randn(3, 5, 5))
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"expected x of shape \(N, C, H, W\)"):
        din_ops.dynamic_instance_norm(x[0], w, b)


def test_integer_dtype():
    with pytest.raises(TypeError, match="expected x to be float32, float64, float16 or bfloat16, got torch.int64"):
        din_ops.instance_norm(torch.ones(1, 2, 3, 3, dtype=torch.long))
    x, w, b = din_args()
    with pytest.raises(TypeError, match="expected weight to have the dtype of x"):
        din_ops.dynamic_instance_norm(x, w.int(), b)


def test_mismatched_dtypes():
    x, w, b = din_args()
    with pytest.raises(TypeError, match=r"expected bias to have the dtype of x \(torch.float32\), got torch.float64"):
        din_ops.dynamic_instance_norm(x, w, b.double())


def test_mismatched_batch():
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"expected weight of shape \(N, Co, C // groups, kh, kw\) .* N = 2 and C // groups = 3 .* got \(3, 4, 3\)"):
        din_ops.dynamic_instance_norm(x, torch.randn(3, 4, 3), b)
    with pytest.raises(ValueError, match=r"expected bias of shape \(N, 4\) or \(N, 4, 1, 1\) with a batch of N = 2 .* expand bias to N or pass batch 1, got \(3, 4\)"):
        din_ops.dynamic_instance_norm(x, w, torch.randn(3, 4))


def test_wrong_channels():
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"C // groups = 3 \(from x and groups = 1\).* got \(2, 4, 5\)"):
        din_ops.dynamic_instance_norm(x, torch.randn(2, 4, 5), b)
    with pytest.raises(ValueError, match=r"C // groups = 1 .* got \(2, 4, 3, 3, 3\)"):
        din_ops.dynamic_instance_norm(x, torch.randn(2, 4, 3, 3, 3), b, groups=3)
    with pytest.raises(ValueError, match="Co divisible by groups"):
        din_ops.dynamic_conv2d(x, torch.randn(2, 4, 1, 3, 3), None, groups=3)


def test_groups_must_divide_channels():
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"expected groups to be a positive int dividing C = 3, got 2"):
        din_ops.dynamic_instance_norm(x, torch.randn(2, 4, 1, 3, 3), b, groups=2)


def test_kernel_larger_than_padded_input():
    x = torch.randn(2, 3, 4, 4)
    w = torch.randn(2, 3, 3, 5, 5)
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) with dilation \(1, 1\) is larger than the padded input \(4, 4\)"):
        din_ops.dynamic_instance_norm(x, w)
    with pytest.raises(ValueError, match=r"is larger than the padded input \(6, 6\)"):
        din_ops.dynamic_conv2d(x, torch.randn(2, 3, 3, 3, 3), padding=1, dilation=3)
    din_ops.dynamic_conv2d(x, w, padding=1)  # (6, 6) fits a 5x5 kernel


def test_bad_conv_arguments():
    x, _, _ = din_args()
    w = torch.randn(2, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        din_ops.dynamic_instance_norm(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="expected stride to be a positive int or a pair of them, got 0"):
        din_ops.dynamic_instance_norm(x, w, stride=0)
    with pytest.raises(ValueError, match="expected padding to be an int >= 0"):
        din_ops.dynamic_instance_norm(x, w, padding=-1)
    with pytest.raises(ValueError, match="expected padding to be 'same', 'valid' or ints, got 'full'"):
        din_ops.dynamic_instance_norm(x, w, padding="full")
    with pytest.raises(ValueError, match=r"expected dilation to be a positive int or a pair of them, got \(1, 2, 3\)"):
        din_ops.dynamic_instance_norm(x, w, dilation=(1, 2, 3))


def test_weight_on_another_device():
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"expected weight on the device of x \(cpu\), got meta"):
        din_ops.dynamic_instance_norm(x, w.to("meta"), b)


def test_empty_planes_and_channels():
    with pytest.raises(ValueError, match="C, H and W > 0"):
        din_ops.instance_norm(torch.randn(2, 3, 0, 4))
    with pytest.raises(ValueError, match="C, H and W > 0"):
        din_ops.instance_norm(torch.randn(2, 0, 4, 4))


def test_bad_eps():
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="expected eps >= 0, got -1"):
        din_ops.instance_norm(x, -1.0)
    with pytest.raises(TypeError, match="expected eps to be a float"):
        din_ops.instance_norm(x, "1e-5")


def test_not_a_tensor():
    with pytest.raises(TypeError, match="expected x to be a torch.Tensor, got list"):
        din_ops.instance_norm([[1.0]])


def test_direct_operator_calls_are_checked_too():
    # torch.ops.din_ops.* validate in C++ and raise the same exception types.
    x, w, b = din_args()
    with pytest.raises(ValueError, match=r"expected weight of shape \(N, Co, C\)"):
        torch.ops.din_ops.dynamic_instance_norm_1x1(x, torch.randn(3, 4, 3), b, 1e-5)
    with pytest.raises(ValueError, match=r"expected groups to divide C = 3, got groups = 2"):
        torch.ops.din_ops.dynamic_conv(x, torch.randn(2, 4, 1, 3, 3), b, [1, 1], [1, 1, 1, 1], [1, 1], 2, True, 1e-5)
    with pytest.raises(ValueError, match="is larger than the padded input"):
        torch.ops.din_ops.dynamic_conv(x, torch.randn(2, 4, 3, 9, 9), b, [1, 1], [0, 0, 0, 0], [1, 1], 1, True, 1e-5)
    with pytest.raises(TypeError, match="floating-point"):
        torch.ops.din_ops.instance_norm(torch.ones(1, 2, 3, 3, dtype=torch.int32), 1e-5)
    with pytest.raises(ValueError, match=r"expected x of shape \(N, C, H, W\)"):
        torch.ops.din_ops.instance_norm(torch.randn(2, 3, 3), 1e-5)


def test_adain_and_style_stats_name_their_arguments():
    content, style = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 5, 5)
    with pytest.raises(ValueError, match=r"expected content of shape \(N, C, H, W\), got \(4, 8, 8\)"):
        din_ops.adain(torch.randn(4, 8, 8), style)
    with pytest.raises(TypeError, match=r"expected content to be float32.*got torch.int64"):
        din_ops.adain(content.long(), style)
    with pytest.raises(TypeError, match=r"expected style to have the dtype of content \(torch.float32\), got torch.float64"):
        din_ops.adain(content, style.double())
    with pytest.raises(TypeError, match=r"expected style mean to have the dtype of content"):
        din_ops.adain(content, (torch.zeros(4, 8, dtype=torch.float64), torch.ones(4, 8)))
    with pytest.raises(ValueError, match=r"expected style on the device of content \(cpu\), got meta"):
        din_ops.adain(content, style.to("meta"))
    with pytest.raises(ValueError, match=r"expected style of shape \(N, C, H, W\), got \(4, 8, 8\)"):
        din_ops.style_stats(torch.randn(4, 8, 8))
    with pytest.raises(TypeError, match="expected style to be a torch.Tensor, got list"):
        din_ops.style_stats([[1.0]])
    for bad in (lambda: din_ops.adain(torch.randn(4, 8, 8), style), lambda: din_ops.style_stats(torch.randn(4, 8, 8)),
                lambda: din_ops.adain(content, style.double())):
        with pytest.raises((TypeError, ValueError)) as info:
            bad()
        assert " x" not in str(info.value)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("bad", [1.0, None, True, torch.tensor(1), (1.0, 1), (1, None), (True, 1), "1"])
@pytest.mark.parametrize("kernel", ["1x1", "3x3", "diagonal"])
def test_non_integer_conv_geometry_is_refused_by_name(name, bad, kernel):
    x = torch.randn(2, 3, 5, 5)
    w = {"1x1": torch.randn(2, 4, 3), "3x3": torch.randn(2, 4, 3, 3, 3), "diagonal": torch.randn(2, 3)}[kernel]
    if name == "padding" and bad == "1":
        expected = ValueError  # a string other than 'same' or 'valid'
    else:
        expected = TypeError
    with pytest.raises(expected, match=f"expected {name} to be"):
        din_ops.dynamic_instance_norm(x, w, **{name: bad})
    if kernel != "diagonal":
        with pytest.raises(expected, match=f"expected {name} to be"):
            din_ops.dynamic_conv2d(x, w, **{name: bad})


def test_numpy_integers_and_floats_are_accepted():
    np = pytest.importorskip("numpy")
    x, w, b = din_args()
    w3 = torch.randn(2, 4, 3, 3, 3)
    one, two = np.int64(1), np.int32(2)
    for backend in ("cpu", "reference"):
        expected = din_ops.dynamic_instance_norm(x, w3, b, stride=(1, 2), padding=1, dilation=2, backend=backend)
        y = din_ops.dynamic_instance_norm(x, w3, b, stride=(one, two), padding=np.int16(1), dilation=two,
                                          groups=one, eps=np.float32(1e-5), backend=backend)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
        expected = din_ops.dynamic_conv2d(x, w3, b, stride=2, padding=(1, 0), backend=backend)
        torch.testing.assert_close(din_ops.dynamic_conv2d(x, w3, b, stride=[two, two], padding=(one, np.uint8(0)),
                                                          groups=one, backend=backend), expected, rtol=0, atol=0)
        torch.testing.assert_close(din_ops.dynamic_instance_norm(x, torch.randn(2, 3), stride=one, dilation=two,
                                                                 groups=one, backend=backend).shape, x.shape)
    torch.testing.assert_close(din_ops.dynamic_instance_norm(x, w, b, eps=np.float32(1e-3)),
                               din_ops.dynamic_instance_norm(x, w, b, eps=float(np.float32(1e-3))))
    for op in (din_ops.instance_norm, lambda t, eps: din_ops.style_stats(t, eps=eps)[1],
               lambda t, eps: din_ops.adain(t, t.flip(0), eps=eps, alpha=np.float64(0.5))):
        torch.testing.assert_close(op(x, np.float32(0.25)), op(x, 0.25), rtol=0, atol=0)
    with pytest.raises(TypeError, match="expected eps to be a float, got bool"):
        din_ops.instance_norm(x, np.bool_(True))
    with pytest.raises(TypeError, match="expected groups to be a positive int dividing C = 3, got np.True_"):
        din_ops.dynamic_conv2d(x, w3, groups=np.bool_(True))
    with pytest.raises(ValueError, match=r"expected stride to be a positive int or a pair of them, got \(np.int64\(1\), np.int64\(0\)\)"):
        din_ops.dynamic_conv2d(x, w3, stride=(one, np.int64(0)))


@pytest.mark.parametrize("groups", [True, False, 1.0, None, "1"])
def test_groups_of_another_type_are_refused(groups):
    x, w, b = din_args()
    for weight in (w, torch.randn(2, 4, 3, 3, 3), torch.randn(2, 3)):
        with pytest.raises(TypeError, match=r"expected groups to be a positive int dividing C = 3"):
            din_ops.dynamic_instance_norm(x, weight, groups=groups)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_diagonal_weight_checks_dilation_and_groups(backend):
    x, d = torch.randn(2, 3, 5, 5), torch.randn(2, 3)
    for dilation in (0, -1, (1, 0), (1, 2, 3)):
        with pytest.raises(ValueError, match="expected dilation to be a positive int or a pair of them"):
            din_ops.dynamic_instance_norm(x, d, dilation=dilation, backend=backend)
    for dilation in (None, 2.0, True):
        with pytest.raises(TypeError, match="expected dilation to be a positive int or a pair of them"):
            din_ops.dynamic_instance_norm(x, d, dilation=dilation, backend=backend)
    for groups in (0, -1, 2):
        with pytest.raises(ValueError, match="expected groups to be a positive int dividing C = 3"):
            din_ops.dynamic_instance_norm(x, d, groups=groups, backend=backend)
    with pytest.raises(TypeError, match="expected groups to be a positive int dividing C = 3, got True"):
        din_ops.dynamic_instance_norm(x, d, groups=True, backend=backend)
    with pytest.raises(ValueError, match="a diagonal weight .* without padding, stride, groups"):
        din_ops.dynamic_instance_norm(x, d, groups=3, backend=backend)
    # A 1x1 kernel ignores a valid dilation, as F.conv2d does.
    torch.testing.assert_close(din_ops.dynamic_instance_norm(x, d, dilation=(2, 3), backend=backend),
                               din_ops.dynamic_instance_norm(x, d, backend=backend), rtol=0, atol=0)


def test_nn_instance_norm_checks_channels_and_input():
    from din_ops.nn import InstanceNorm2d

    for channels in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match=r"InstanceNorm2d: expected channels to be a positive int, got"):
            InstanceNorm2d(channels)
    layer = InstanceNorm2d(5)
    with pytest.raises(ValueError, match=r"InstanceNorm2d: expected input of shape \(N, 5, H, W\) .*got \(2, 4, 3, 3\)"):
        layer(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"InstanceNorm2d: expected input of shape \(N, 5, H, W\) .*got \(5, 3, 3\)"):
        layer(torch.randn(5, 3, 3))
    assert layer(torch.randn(2, 5, 3, 3)).shape == (2, 5, 3, 3)


def test_nn_dynamic_instance_norm_checks_alpha_hidden_and_code():
    from din_ops.nn import DynamicInstanceNorm2d

    content, style = torch.randn(2, 4, 6, 6), torch.randn(2, 5, 8, 8)
    layer = DynamicInstanceNorm2d(4, 5)
    code = layer.encode_style(style)
    for alpha in (2, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"expected alpha in \[0, 1\]"):
            layer(content, style, alpha=alpha)
        with pytest.raises(ValueError, match=r"expected alpha in \[0, 1\]"):
            layer.apply(content, code, alpha)
    for alpha in (None, "0.5", True):
        with pytest.raises(TypeError, match="expected alpha to be a float"):
            layer(content, style, alpha=alpha)
    torch.testing.assert_close(layer.apply(content, code, 1), layer.apply(content, code))  # an int alpha is fine
    for hidden in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"DynamicInstanceNorm2d: expected hidden to be a positive int or None"):
            DynamicInstanceNorm2d(4, 5, hidden=hidden)
    assert DynamicInstanceNorm2d(4, 5, hidden=3).weight_net[1].out_channels == 3
    assert DynamicInstanceNorm2d(4, 5).weight_net[1].out_channels == 8
    adaptive = DynamicInstanceNorm2d(4, 5, kind="spatially_adaptive", grid=4)
    gamma, beta = adaptive.encode_style(style)
    for bad, name in (((gamma[:, :, 0], beta), "gamma"), ((gamma, beta[:, :3]), "beta"),
                      ((gamma, beta[..., :2, :2]), "beta"), ((gamma, None), "beta")):
        with pytest.raises(ValueError, match=rf"expected a spatially_adaptive style code \(gamma, beta\) of shapes "
                                             rf"\(N, 4, 4, 4\) .*got {name} of shape"):
            adaptive.apply(content, bad)
    assert adaptive.apply(content, (gamma[:1], beta[:1])).shape == content.shape
