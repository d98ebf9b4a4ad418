"""Cases aimed at the CUDA backend's code paths: the current stream, the device guard, planes larger
than the kernels' register cache, planes whose size or address rules out 16-byte vector access,
and device checks. The shape cases run on every device in DEVICES (the CPU too, as a cross-check);
the stream and multi-GPU cases need CUDA and are skipped elsewhere with the reason."""
import functools

import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES, HAS_CUDA, assert_close_to_reference

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA build of din_ops or no GPU")


def ops_under_test(device, dtype=torch.float32, shape=(2, 6, 9, 11)):
    """(name, function of x, extra leaves) for one op of each family, on tensors of `device`."""
    n, c = shape[:2]
    g = torch.Generator().manual_seed(1)

    def rand(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    w1, b1 = rand(n, 5, c, scale=c**-0.5), rand(n, 5)
    wd, bd = rand(n, c, 1, 3, 3, scale=1 / 3), rand(n, c)
    wg, bg = rand(n, 4, c // 2, 3, 3, scale=(9 * c / 2) ** -0.5), rand(n, 4)
    gamma, beta = rand(*shape) + 1.0, rand(*shape)
    gp, bp = rand(n, c, 1, 1) + 1.0, rand(n, c, 1, 1)
    wf, bf = rand(n, 4, c, 3, 3, scale=(9 * c) ** -0.5), rand(n, 4)
    # Offsets with fractional parts in [0.1, 0.9]: no sample point near an integer position, where
    # the offset gradient jumps (float32 and float64 positions could fall on different sides).
    whole = torch.randint(-2, 3, (n, 18, *shape[2:]), generator=g, dtype=torch.float64)
    off = (whole + 0.1 + 0.8 * torch.rand(whole.shape, generator=g, dtype=torch.float64)).to(device, dtype)
    msk = rand(n, 9, *shape[2:]) * 0.5 + 1.0
    sain = din_ops.spatially_adaptive_instance_norm
    return [
        ("instance_norm", lambda x, backend=None: din_ops.instance_norm(x, backend=backend), []),
        ("din_1x1", lambda x, w, b, backend=None: din_ops.dynamic_instance_norm(x, w, b, backend=backend), [w1, b1]),
        (
            "din_depthwise",
            lambda x, w, b, backend=None: din_ops.dynamic_instance_norm(x, w, b, padding=1, groups=c, backend=backend),
            [wd, bd],
        ),
        (
            "conv_grouped_stride2",
            lambda x, w, b, backend=None: din_ops.dynamic_conv2d(x, w, b, stride=2, padding=1, groups=2, backend=backend),
            [wg, bg],
        ),
        ("sain_full", lambda x, g_, b_, backend=None: sain(x, g_, b_, backend=backend), [gamma, beta]),
        ("sain_plane", lambda x, g_, b_, backend=None: sain(x, g_, b_, backend=backend), [gp, bp]),
        (
            "deformable_din",
            lambda x, w, b, o, m, backend=None: din_ops.dynamic_instance_norm(
                x, w, b, offset=o, mask=m, padding=1, backend=backend
            ),
            [wf, bf, off, msk],
        ),
    ]


def run(op, x, params, gy=None):
    leaves = [t.detach().clone().requires_grad_() for t in (x, *params)]
    y = op(*leaves)
    y.backward(torch.ones_like(y) if gy is None else gy)
    return [y.detach()] + [t.grad for t in leaves]


def check_against_reference(op, x, params):
    """Forward and all gradients of `op` (float32) against din_ops.reference in float64."""
    gy = torch.randn_like(op(x, *params), dtype=torch.float64)
    ours = run(op, x, params, gy.to(x.dtype))
    exact = run(functools.partial(op, backend="reference"), x.double(), [p.double() for p in params], gy)
    for a, e in zip(ours, exact):
        assert_close_to_reference(a, e, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 4, 300, 301), (1, 2, 128, 128), (3, 4, 7, 5)], ids=str)
def test_large_odd_and_exact_cache_sized_planes(device, shape):
    # 300 x 301: larger than the register cache and not a multiple of the vector width;
    # 128 x 128: exactly the cached size for float32; 7 x 5: smaller than one warp's worth.
    for name, op, params in ops_under_test(device, torch.float32, shape):
        if shape[1] % 2 and "grouped" in name:
            continue
        if name == "deformable_din" and max(shape[2:]) > 256:
            # float32 sample positions near 300 are rounded to 3e-5 pixels, which moves the
            # samples by ~1e-4 against the float64 reference: beyond the float32 tolerance.
            continue
        x = (torch.randn(*shape, dtype=torch.float64) * 2 + 3).to(device, torch.float32)
        check_against_reference(op, x, params)


@pytest.mark.parametrize("device", DEVICES)
def test_unaligned_storage_offset(device):
    # x starts one element into its storage: contiguous, but not 16-byte aligned.
    shape = (2, 6, 8, 8)
    storage = torch.randn(1 + 2 * 6 * 8 * 8, dtype=torch.float64).to(device, torch.float32)
    x = storage[1:].view(shape)
    assert x.is_contiguous() and x.data_ptr() % 16 != 0
    for name, op, params in ops_under_test(device, torch.float32, shape):
        check_against_reference(op, x, params)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_din_1x1_samples_on_both_sides_of_the_fold_limit(device, layout, dtype):
    # The 1x1 DIN folds the normalization into the weights only for the samples whose every channel
    # has |mean| * rstd <= 16, decided per sample on the device on CUDA. One batch mixes a centred
    # sample, one at 1e4 + noise, one with a single channel off centre (both refused) and one at
    # 8 + noise (folded): every sample must match the reference, forward and backward, and
    # channels_last inputs must give channels_last outputs and gradients.
    g = torch.Generator().manual_seed(3)
    n, c, co, h, w = 4, 6, 5, 9, 7
    x64 = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    x64[1] += 1e4
    x64[2, 3] += 100.0
    x64[3] += 8.0
    weight = torch.randn(n, co, c, generator=g, dtype=torch.float64) * c**-0.5
    bias = torch.randn(n, co, generator=g, dtype=torch.float64)
    gy = torch.randn(n, co, h, w, generator=g, dtype=torch.float64)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x64.to(dtype)  # the reference sees the same rounded input

    def run(dev, dt, backend):
        xx = x.to(dev, dt).contiguous(memory_format=fmt).detach().requires_grad_()
        ww = weight.to(dev, dt).detach().requires_grad_()
        bb = bias.to(dev, dt).detach().requires_grad_()
        y = din_ops.dynamic_instance_norm(xx, ww, bb, backend=backend)
        y.backward(gy.to(dev, dt))
        return y, xx.grad, ww.grad, bb.grad

    ours = run(device, dtype, None)
    exact = run("cpu", torch.float64, "reference")
    for a, e in zip(ours, exact):
        assert_close_to_reference(a.cpu(), e, dtype)
    if layout == "channels_last":
        assert ours[0].is_contiguous(memory_format=torch.channels_last)
        assert ours[1].is_contiguous(memory_format=torch.channels_last)


@needs_cuda
@pytest.mark.parametrize("index", range(7))
def test_runs_on_the_current_stream(index):
    # The side stream first sleeps, then writes x, then runs the op. A kernel launched on any other
    # stream would read x before it is written.
    name, op, params = ops_under_test("cuda")[index]
    src = torch.randn(2, 6, 9, 11, device="cuda") + 2
    params = [p.to("cuda") for p in params]
    expected = run(op, src, params)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.zeros_like(src)
        torch.cuda._sleep(50_000_000)
        x.copy_(src)
        got = run(op, x, params)
    side.synchronize()
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=name)


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_device_guard_second_gpu():
    for name, op, params in ops_under_test("cuda:1"):
        x = torch.randn(2, 6, 9, 11, device="cuda:1")
        with torch.cuda.device(0):
            got = run(op, x, params)
        assert all(t.device == torch.device("cuda:1") for t in got), name
        expected = run(functools.partial(op, backend="reference"), x.cpu(), [p.cpu() for p in params])
        for a, e in zip(got, expected):
            torch.testing.assert_close(a.cpu(), e, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_statistics_on_another_device_are_rejected():
    x = torch.randn(2, 3, 4, 4, device="cuda")
    y, mean, rstd = torch.ops.din_ops.instance_norm(x, 1e-5)
    with pytest.raises(ValueError, match="statistics on the device of x"):
        torch.ops.din_ops.instance_norm_backward(torch.ones_like(y), x, mean.cpu(), rstd.cpu())
    with pytest.raises(ValueError, match="expected weight on the device of x"):
        din_ops.dynamic_instance_norm(x, torch.randn(2, 3, 3))


@needs_cuda
def test_cuda_is_listed_first():
    assert din_ops.available_backends()[0] == "cuda"
    x = torch.randn(1, 2, 3, 3, device="cuda")
    torch.testing.assert_close(din_ops.instance_norm(x), reference.instance_norm(x), atol=1e-5, rtol=1e-5)
