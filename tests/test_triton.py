"""backend="triton" against the float64 reference: instance_norm, the 1x1 dynamic_instance_norm and
spatially_adaptive_instance_norm, forward and backward, layouts, gradcheck, opcheck, torch.compile,
errors and backend reporting.

On a GPU these run the compiled kernels on CUDA tensors. Without one, conftest.py sets
TRITON_INTERPRET=1 and the same kernels run under the Triton interpreter on CPU tensors, which is
slow (~0.1 s for a call on these shapes): the shapes are small but still cross every block boundary
of the interpreter's configs (16 channels x 64 pixels for the plane kernels, 32 x 32 x 16 tiles for
the GEMMs, P chunks of 32 in the weight gradient), so the loops and the masks are exercised.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import din_ops
import din_ops.triton as din_triton
from din_ops import reference

from conftest import LOW_PRECISION, assert_close_to_reference, layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

needs_triton = pytest.mark.skipif(
    not din_triton.available(), reason=f"backend 'triton' unavailable: {din_triton.why_unavailable()}"
)
ops = torch.ops.din_ops


def _x(shape, dtype=torch.float32, mean=0.5, scale=2.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + mean).to(DEVICE, dtype)


def _grads(fn, inputs, gy):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    fn(*leaves).backward(gy)
    return [None if t is None else t.grad for t in leaves]


def _check_grads(fn, inputs, gy, dtype, lowp_fn=None):
    """Gradients of fn (triton) against the float64 reference `lowp_fn` evaluated in float64."""
    ours = _grads(fn, inputs, gy)
    exact = _grads(lowp_fn, [None if t is None else t.double() for t in inputs], gy.double())
    base = _grads(lowp_fn, inputs, gy) if dtype in LOW_PRECISION else [None] * len(inputs)
    for g, e, b in zip(ours, exact, base):
        if g is not None:
            assert_close_to_reference(g, e, dtype, b)


# ---------------------------------------------------------------------------------------------
# instance_norm

IN_SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (2, 20, 10, 11), (3, 17, 1, 1)]


def triton_in(x):
    return din_ops.instance_norm(x, backend="triton")


def torch_in_lowp(x):
    return F.instance_norm(x) if x.shape[2] * x.shape[3] > 1 else reference.instance_norm(x)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", IN_SHAPES)
def test_instance_norm_forward(dtype, shape):
    x = _x(shape, dtype)
    y = triton_in(x)
    baseline = torch_in_lowp(x) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype, baseline)


@needs_triton
@pytest.mark.parametrize("name", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_instance_norm_layouts_and_backward(name, dtype):
    x = layout(_x((2, 18, 9, 11), dtype), name)
    y = triton_in(x)
    if name == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    baseline = torch_in_lowp(x) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, reference.instance_norm(x.double()), dtype, baseline)
    gy = layout(_x((2, 18, 9, 11), dtype, mean=0.0, scale=1.0), name)
    _check_grads(triton_in, [x], gy, dtype, reference.instance_norm)


@needs_triton
def test_instance_norm_statistics_match_the_cpu_operator():
    # Same schema as din_ops::instance_norm: float64 (N, C) mean and rstd, like the C++ kernels'.
    x = _x((2, 20, 10, 11), torch.float32)
    y, mean, rstd = ops.triton_instance_norm(x, 1e-5)
    assert mean.dtype == rstd.dtype == torch.float64 and mean.shape == rstd.shape == (2, 20)
    exact = x.double()
    torch.testing.assert_close(mean, exact.mean(dim=(2, 3)), rtol=0, atol=1e-6)
    var = exact.var(dim=(2, 3), unbiased=False)
    torch.testing.assert_close(rstd, (var + 1e-5).rsqrt(), rtol=1e-5, atol=0)


@needs_triton
@pytest.mark.parametrize("mean", [1e4, 1e6])
def test_instance_norm_large_mean_keeps_its_variance(mean):
    x = (mean + torch.randn(2, 8, 12, 12, dtype=torch.float64)).float().to(DEVICE)
    y = triton_in(x)
    assert (y.double() - reference.instance_norm(x.double())).abs().max().item() < 1e-4


@needs_triton
def test_instance_norm_gradcheck():
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(triton_in, (x,))
    x = layout(torch.randn(2, 18, 9, 11, dtype=torch.float64, device=DEVICE), "channels_last").requires_grad_()
    assert torch.autograd.gradcheck(triton_in, (x,), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# dynamic_instance_norm, 1x1

def din_inputs(shape, co, dtype=torch.float32, bias=True, x_mean=0.0):
    n, c = shape[:2]
    x = _x(shape, dtype, mean=x_mean + 0.3, scale=1.5)
    w = (torch.randn(n, co, c, dtype=torch.float64) / c**0.5).to(DEVICE, dtype)
    b = torch.randn(n, co, dtype=torch.float64).to(DEVICE, dtype) if bias else None
    return x, w, b


def triton_din(x, w, b=None):
    return din_ops.dynamic_instance_norm(x, w, b, backend="triton")


def din_expected(x, w, b):
    return reference.dynamic_instance_norm(x.double(), w.double(), None if b is None else b.double())


# (shape, Co): one tile; Co, C and P past one tile (K loop, masks, several P chunks); single pixels.
DIN_CASES = [((2, 3, 5, 7), 4), ((2, 40, 9, 11), 37), ((3, 16, 1, 1), 16), ((1, 1, 1, 1), 2)]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,co", DIN_CASES)
def test_din_forward(dtype, shape, co):
    x, w, b = din_inputs(shape, co, dtype)
    y = triton_din(x, w, b)
    baseline = reference.dynamic_instance_norm(x, w, b) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, din_expected(x, w, b), dtype, baseline)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["contiguous", "channels_last"])
def test_din_backward(dtype, name):
    x, w, b = din_inputs((2, 40, 9, 11), 37, dtype)
    x = layout(x, name)
    gy = layout(_x((2, 37, 9, 11), dtype, mean=0.0, scale=1.0), name)
    _check_grads(triton_din, [x, w, b], gy, dtype, reference.dynamic_instance_norm)


@needs_triton
def test_din_layouts_weight_views_and_no_bias():
    x, w, _ = din_inputs((2, 6, 5, 9), 5, bias=False)
    expected = din_expected(x, w, None)
    for name in ["channels_last", "strided"]:
        y = triton_din(layout(x, name), w)
        assert y.is_contiguous(memory_format=torch.channels_last) if name == "channels_last" else y.is_contiguous()
        assert_close_to_reference(y, expected, torch.float32)
    assert_close_to_reference(triton_din(x, w[..., None, None]), expected, torch.float32)
    wt = w.transpose(1, 2).contiguous().transpose(1, 2)  # a non-contiguous weight view
    assert_close_to_reference(triton_din(x, wt), expected, torch.float32)
    _check_grads(triton_din, [x, wt], _x((2, 5, 5, 9), mean=0.0, scale=1.0), torch.float32,
                 reference.dynamic_instance_norm)


@needs_triton
@pytest.mark.parametrize("x_mean", [1e4, 1e6])
def test_din_large_mean_keeps_its_variance(x_mean):
    x, w, b = din_inputs((2, 16, 12, 12), 16, x_mean=x_mean)
    y = triton_din(layout(x, "channels_last"), w, b)
    exact = din_expected(x, w, b)
    assert (y.double() - exact).abs().max().item() < 1e-4 * exact.abs().max().item()
    gy = _x((2, 16, 12, 12), mean=0.0, scale=1.0)
    _check_grads(triton_din, [x, w, b], gy, torch.float32, reference.dynamic_instance_norm)


@needs_triton
def test_din_gradcheck():
    x, w, b = din_inputs((1, 3, 2, 3), 2, torch.float64)
    args = tuple(t.requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(triton_din, args)
    x, w, b = din_inputs((2, 40, 9, 11), 37, torch.float64)
    args = (layout(x, "channels_last").requires_grad_(), w.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(triton_din, args, fast_mode=True)


@needs_triton
def test_din_constant_planes_give_the_bias():
    x = torch.full((2, 3, 4, 4), -7.5, device=DEVICE)
    _, w, b = din_inputs((2, 3, 4, 4), 5)
    torch.testing.assert_close(triton_din(x, w, b), b[..., None, None].expand(2, 5, 4, 4), atol=0, rtol=0)


@needs_triton
def test_din_backward_is_bitwise_repeatable():
    # The weight gradient is split over P into partial sums added in a fixed order.
    x, w, b = din_inputs((2, 40, 9, 11), 37)
    gy = _x((2, 37, 9, 11), mean=0.0)
    first = _grads(triton_din, [x, w, b], gy)
    second = _grads(triton_din, [x, w, b], gy)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# spatially_adaptive_instance_norm

FORMS = [("full", "full"), ("plane", "plane"), ("full", None), ("plane", None), ("full", "plane"), ("plane", "full")]


def modulation(x, form, offset=0.0):
    if form is None:
        return None
    n, c, h, w = x.shape
    shape = (n, c, h, w) if form == "full" else (n, c, 1, 1)
    return (torch.randn(shape, dtype=torch.float64) + offset).to(x.device, x.dtype)


def triton_sain(x, gamma, beta=None):
    return din_ops.spatially_adaptive_instance_norm(x, gamma, beta, backend="triton")


def sain_expected(x, gamma, beta):
    return reference.spatially_adaptive_instance_norm(
        x.double(), gamma.double(), None if beta is None else beta.double())


@needs_triton
@pytest.mark.parametrize("forms", FORMS, ids=str)
@pytest.mark.parametrize("shape", [(2, 20, 10, 11), (2, 3, 1, 1)])
def test_sain_forward_and_backward(forms, shape):
    x = _x(shape)
    gamma, beta = modulation(x, forms[0], offset=1.0), modulation(x, forms[1])
    assert_close_to_reference(triton_sain(x, gamma, beta), sain_expected(x, gamma, beta), torch.float32)
    gy = _x(shape, mean=0.0, scale=1.0)
    _check_grads(triton_sain, [x, gamma, beta], gy, torch.float32, reference.spatially_adaptive_instance_norm)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["channels_last", "strided"])
def test_sain_dtypes_and_layouts(dtype, name):
    x = layout(_x((2, 18, 9, 11), dtype), name)
    gamma, beta = layout(modulation(x, "full", offset=1.0), "contiguous"), modulation(x, "plane")
    y = triton_sain(x, gamma, beta)
    assert y.is_contiguous(memory_format=torch.channels_last) if name == "channels_last" else y.is_contiguous()
    baseline = reference.spatially_adaptive_instance_norm(x, gamma, beta) if dtype in LOW_PRECISION else None
    assert_close_to_reference(y, sain_expected(x, gamma, beta), dtype, baseline)
    gy = layout(_x((2, 18, 9, 11), dtype, mean=0.0, scale=1.0), name)
    _check_grads(triton_sain, [x, gamma, beta], gy, dtype, reference.spatially_adaptive_instance_norm)


@needs_triton
@pytest.mark.parametrize("forms", [("full", "full"), ("plane", "plane"), ("plane", None)], ids=str)
def test_sain_gradcheck(forms):
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64, device=DEVICE)
    gamma, beta = modulation(x, forms[0], offset=1.0), modulation(x, forms[1])
    args = tuple(t.requires_grad_() for t in (x, gamma, beta) if t is not None)
    assert torch.autograd.gradcheck(triton_sain, args)


# ---------------------------------------------------------------------------------------------
# Operator registration: opcheck, torch.compile, empty batches, double backward


def _opcheck_cases():
    x, w, b = din_inputs((2, 5, 6, 7), 3, torch.float64)
    xc = layout(x, "channels_last")
    gamma, beta = modulation(x, "full", offset=1.0), modulation(x, "plane")
    y, mean, rstd = ops.triton_instance_norm(x, 1e-5)
    yd, md, rd = ops.triton_dynamic_instance_norm_1x1(xc, w, b, 1e-5)
    ys, ms, rs = ops.triton_spatially_adaptive_instance_norm(x, gamma, beta, 1e-5)
    return [
        (ops.triton_instance_norm, (xc.clone().requires_grad_(), 1e-5)),
        (ops.triton_instance_norm_backward, (torch.randn_like(y), x, mean, rstd)),
        (ops.triton_dynamic_instance_norm_1x1, (xc.clone().requires_grad_(), w.clone().requires_grad_(), b, 1e-5)),
        (ops.triton_dynamic_instance_norm_1x1, (x, w, None, 1e-5)),
        (ops.triton_dynamic_instance_norm_1x1_backward, (torch.randn_like(yd), xc, w, md, rd)),
        (ops.triton_spatially_adaptive_instance_norm,
         (x.clone().requires_grad_(), gamma.clone().requires_grad_(), beta, 1e-5)),
        (ops.triton_spatially_adaptive_instance_norm_backward, (torch.randn_like(ys), x, gamma, ms, rs, True)),
    ]


@needs_triton
def test_opcheck():
    for op, args in _opcheck_cases():
        torch.library.opcheck(op, args)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@needs_triton
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_compile_fullgraph(fresh_dynamo, compiler):
    def layer(x, w, b, gamma):
        h = torch.relu(triton_din(x, w, b)) * 2
        return triton_sain(triton_in(h), gamma) + 1

    compiled = torch.compile(layer, fullgraph=True, backend=compiler)
    x, w, b = din_inputs((2, 6, 5, 7), 4, torch.float32)
    gamma = modulation(torch.empty(2, 4, 5, 7, device=DEVICE), "full", offset=1.0)
    leaves = [t.clone().requires_grad_() for t in (x, w, b, gamma)]
    y = compiled(*leaves)
    expected_leaves = [t.double().requires_grad_() for t in (x, w, b, gamma)]

    def expected_layer(x, w, b, gamma):
        h = torch.relu(reference.dynamic_instance_norm(x, w, b)) * 2
        return reference.spatially_adaptive_instance_norm(reference.instance_norm(h), gamma) + 1

    expected = expected_layer(*expected_leaves)
    assert_close_to_reference(y, expected, torch.float32)
    grads = torch.autograd.grad(y.square().sum(), leaves)
    expected_grads = torch.autograd.grad(expected.square().sum(), expected_leaves)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g.double(), e, atol=2e-4, rtol=1e-4)


@needs_triton
def test_compile_dynamic_shapes(fresh_dynamo):
    compiled = torch.compile(triton_din, fullgraph=True, dynamic=True, backend="aot_eager")
    for n, c, h in [(2, 3, 5), (3, 4, 7)]:
        x, w, _ = din_inputs((n, c, h, h + 1), c + 1, torch.float64)
        torch.testing.assert_close(compiled(x, w), din_expected(x, w, None))


@needs_triton
def test_empty_batch():
    x, w, b = din_inputs((0, 3, 4, 4), 2)
    gamma = torch.randn(0, 3, 1, 1, device=DEVICE)
    for fn, args in [(triton_in, [x]), (triton_din, [x, w, b]), (triton_sain, [x, gamma])]:
        leaves = [t.clone().requires_grad_() for t in args]
        y = fn(*leaves)
        assert y.shape[0] == 0
        y.sum().backward()
        assert leaves[0].grad.shape == x.shape


@needs_triton
def test_double_backward_raises_clearly():
    x, w, b = din_inputs((1, 2, 3, 3), 2, torch.float64)
    x.requires_grad_()
    (g,) = torch.autograd.grad(triton_din(x, w, b).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# ---------------------------------------------------------------------------------------------
# Errors and backend reporting


@needs_triton
def test_triton_covers_only_the_1x1_din():
    x, _, _ = din_inputs((1, 4, 6, 6), 4)
    w3 = torch.randn(1, 4, 4, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="backend 'triton' covers only the 1x1 dynamic instance norm"):
        triton_din(x, w3)
    w1 = torch.randn(1, 4, 4, 1, 1, device=DEVICE)
    with pytest.raises(ValueError, match="covers only the 1x1 .* stride \\[2, 2\\]"):
        din_ops.dynamic_instance_norm(x, w1, stride=2, backend="triton")
    with pytest.raises(ValueError, match="backend 'triton' has no dynamic_conv2d kernels"):
        din_ops.dynamic_conv2d(x, w3, backend="triton")


@needs_triton
def test_bad_input_is_checked_before_the_kernels():
    with pytest.raises(ValueError, match=r"expected x of shape \(N, C, H, W\)"):
        triton_in(torch.randn(3, 5, 5, device=DEVICE))
    x, w, b = din_inputs((2, 3, 4, 4), 2)
    with pytest.raises(TypeError, match="expected weight to have the dtype of x"):
        triton_din(x, w.double(), b)
    with pytest.raises(ValueError, match=r"expected gamma of shape"):
        triton_sain(x, torch.randn(2, 3, 4, 1, device=DEVICE))


@needs_triton
def test_triton_backend_is_reported_and_never_the_default():
    assert "triton" in din_ops.available_backends()
    assert din_ops.available_backends()[-1] == "reference"
    assert din_triton.why_unavailable() == ""
    try:
        default = din_ops.backends.resolve(None, torch.device(DEVICE))
    except RuntimeError:  # a GPU machine whose din_ops build has no CUDA kernels
        default = None
    assert default != "triton"
    with pytest.raises(ValueError, match="backend 'triton' runs on CUDA tensors"):
        din_ops.instance_norm(torch.empty(1, 2, 3, 3, device="meta"), backend="triton")


def _probe(code: str, env_change: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_change)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


PROBE = """
import torch, din_ops
print(din_ops.available_backends())
x = torch.randn(1, 2, 3, 3)
torch.testing.assert_close(din_ops.instance_norm(x), din_ops.reference.instance_norm(x))
try:
    din_ops.instance_norm(x, backend="triton")
except RuntimeError as error:
    print(error)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU makes the backend available without the interpreter")
def test_without_gpu_or_interpreter_the_backend_says_why():
    out = _probe(PROBE, {})
    assert "'triton'" not in out.splitlines()[0]
    assert "backend 'triton' is not available: " in out
    assert "TRITON_INTERPRET" in out or "triton is not installed" in out


def test_without_triton_installed_nothing_else_breaks():
    # A missing package, simulated: importing it fails as if it were not installed.
    out = _probe("import sys; sys.modules['triton'] = None\n" + PROBE, {"TRITON_INTERPRET": "1"})
    assert "'triton'" not in out.splitlines()[0] and "'cpu'" in out.splitlines()[0]
    assert "backend 'triton' is not available: triton is not installed: `pip install triton`" in out


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the test suite compiles and runs every kernel")
def test_kernels_compile_for_hopper():
    # The interpreter accepts code that a GPU compile rejects (e.g. dot blocks < 16): compile every
    # kernel for sm_90 in float32 and bfloat16, first config, through Triton's real GPU pipeline.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, os.path.join("tests", "triton_aot.py"), "--arch", "90", "--configs", "1",
         "--dtypes", "fp32", "bf16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all compiled" in run.stdout


@needs_triton
def test_benchmark_rows(capsys):
    # The GPU benchmark's bookkeeping, driven on this machine's device with a stand-in timer.
    from benchmarks import bench_triton

    rows = bench_triton.measure(True, DEVICE, lambda fn: (fn(), 1.0)[1])
    out = capsys.readouterr().out
    assert {r["op"] for r in rows} == {"triton dynamic_instance_norm 1x1", "triton instance_norm"}
    assert len(rows) == 8 and all(r["triton_ms"] == 1.0 and r["reference_ms"] == 1.0 for r in rows)
    assert "of floor" in out and "100%" in out and "1.00x" in out


def _nan_fenced(t, gap=True):
    """t's values in a view of a larger NaN-filled buffer: NaN before and after it, and (gap=True)
    between its elements along W. A kernel reading anything but t's own elements produces NaN (the
    interpreter does not trap out-of-bounds loads)."""
    step = 2 if gap and t.dim() == 4 else 1
    size = t.numel() * step + 64
    buf = torch.full((size,), float("nan"), dtype=t.dtype, device=t.device)
    if step == 1:
        view = buf[32:32 + t.numel()].view(t.shape)
    else:
        n, c, h, w = t.shape
        view = buf[32:32 + t.numel() * 2].view(n, c, h, 2 * w)[..., ::2]
    view.copy_(t)
    return view


@needs_triton
@pytest.mark.parametrize("gap", [False, True])
def test_masks_never_read_past_the_tensors(gap):
    # Every operator, forward and backward, on NaN-fenced inputs gives exactly its results on plain
    # copies of them (the fenced views are addressed in place, not copied).
    x, w, b = din_inputs((2, 21, 9, 11), 19)
    gamma, beta = modulation(x, "full", offset=1.0), modulation(x, "plane")
    gy, gy_in = _x((2, 19, 9, 11), mean=0.0), _x((2, 21, 9, 11), mean=0.0)
    y, mean, rstd = ops.triton_instance_norm(x, 1e-5)
    yd, md, rd = ops.triton_dynamic_instance_norm_1x1(x, w, b, 1e-5)
    ys, ms, rs = ops.triton_spatially_adaptive_instance_norm(x, gamma, beta, 1e-5)
    calls = [
        (ops.triton_instance_norm, (x, 1e-5)),
        (ops.triton_instance_norm_backward, (gy_in, x, mean, rstd)),
        (ops.triton_dynamic_instance_norm_1x1, (x, w, b, 1e-5)),
        (ops.triton_dynamic_instance_norm_1x1_backward, (gy, x, w, md, rd)),
        (ops.triton_spatially_adaptive_instance_norm, (x, gamma, beta, 1e-5)),
        (ops.triton_spatially_adaptive_instance_norm_backward, (gy_in, x, gamma, ms, rs, True)),
    ]
    for op, args in calls:
        fenced = [_nan_fenced(a, gap) if isinstance(a, torch.Tensor) else a for a in args]
        assert fenced[0].data_ptr() != args[0].data_ptr()
        for ours, plain in zip(op(*fenced), op(*args)):
            assert not ours.isnan().any(), op
            assert torch.equal(ours, plain), op
