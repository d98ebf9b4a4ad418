"""The oracle itself: din_ops.reference against PyTorch built-ins and the paper's special cases."""
import pytest
import torch
import torch.nn.functional as F

from din_ops import reference

from conftest import SHAPES


def torch_instance_norm(x):
    # F.instance_norm refuses single-pixel planes; their normalized value is 0 by definition.
    return F.instance_norm(x) if x.shape[2] * x.shape[3] > 1 else torch.zeros_like(x)


@pytest.mark.parametrize("shape", SHAPES)
def test_instance_norm_matches_torch(shape):
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 2
    torch.testing.assert_close(reference.instance_norm(x), torch_instance_norm(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_weight_is_instance_norm(shape):
    n, c = shape[:2]
    x = torch.randn(*shape, dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64).expand(n, c, c)
    torch.testing.assert_close(reference.dynamic_instance_norm(x, eye), torch_instance_norm(x))


def test_diagonal_weight_is_adain():
    # W = diag(sigma(style)), b = mu(style): DIN reduces to AdaIN (paper Eq. 3).
    content = torch.randn(2, 8, 6, 5, dtype=torch.float64)
    style = torch.randn(2, 8, 7, 7, dtype=torch.float64) * 2 + 1
    mu, sigma = style.mean((2, 3)), style.var((2, 3), unbiased=False).sqrt()
    adain = sigma[..., None, None] * F.instance_norm(content) + mu[..., None, None]
    din = reference.dynamic_instance_norm(content, torch.diag_embed(sigma), mu)
    torch.testing.assert_close(din, adain)


def test_dynamic_conv_is_per_sample_matmul():
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(3, 7, 4, dtype=torch.float64)
    b = torch.randn(3, 7, dtype=torch.float64)
    expected = torch.einsum("noc,nchw->nohw", w, x) + b[..., None, None]
    torch.testing.assert_close(reference.dynamic_conv2d(x, w, b), expected)
    torch.testing.assert_close(reference.dynamic_conv2d(x, w[..., None, None], b), expected)
