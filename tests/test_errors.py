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
