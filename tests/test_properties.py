"""Property-based tests (hypothesis): random shapes, convolution arguments, memory layouts and dtypes
for every operator; outputs and gradients against din_ops.reference in float64, and clear
ValueError/TypeError for invalid combinations.

Each operator is one entry of OPS: a strategy that draws a Case (float64 tensors, the memory layout
each is passed in, keyword arguments) plus the din_ops function and its reference. A new operator
(e.g. deformable convolution) is one more strategy and one more OPS entry; the tests below run it
for every dtype and layout. The number of examples comes from the hypothesis profile registered in
conftest.py ("ci" by default, DIN_OPS_HYPOTHESIS_PROFILE=long for a longer local run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import din_ops
from din_ops import reference

from conftest import DTYPES, LOW_PRECISION, assert_close_to_reference, max_error

# Odd, prime and tiny sizes are as likely as the rest.
SIZES = st.sampled_from([1, 1, 2, 3, 5, 7, 8, 11, 13])
EPS = st.sampled_from([1e-5, 1e-3, 0.0, 0.5])


# ---------------------------------------------------------------------------------------------
# Memory layouts. Each form is a value-preserving, differentiable view or copy of a leaf tensor, so
# the same form applied to the float64 leaf gives the reference input and the gradient of the leaf.


def _expand(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:])


FORMS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "contiguous": lambda t, n: t,
    "channels_last": lambda t, n: t.contiguous(memory_format=torch.channels_last),
    # every other element of a wider tensor
    "strided": lambda t, n: torch.stack([t, t], dim=-1)[..., 0],
    # a slice of a tensor with one more channel: each plane contiguous, the whole not
    "sliced": lambda t, n: torch.cat([t, t[:, :1]], dim=1)[:, : t.shape[1]],
    # the last two dimensions swapped in memory
    "transposed": lambda t, n: t.transpose(-1, -2).contiguous().transpose(-1, -2),
    # one sample broadcast over the batch (stride 0): the leaf has batch size 1
    "expanded": lambda t, n: _expand(t, n),
}
X_FORMS = st.sampled_from(["contiguous", "channels_last", "strided", "sliced", "transposed", "expanded"])
PARAM_FORMS = st.sampled_from(["contiguous", "strided", "sliced", "transposed", "expanded"])
BIAS_FORMS = st.sampled_from(["contiguous", "strided", "expanded"])


@dataclass
class Case:
    """One drawn example: float64 leaves (batch 1 for the "expanded" form), the form each tensor is
    passed in, and keyword arguments. Tensor order is the positional order of the op."""

    n: int
    tensors: dict[str, Optional[torch.Tensor]]
    forms: dict[str, str]
    kwargs: dict = field(default_factory=dict)

    def rounded(self, dtype: torch.dtype) -> "Case":
        """The same case with every value rounded to dtype (kept as float64), so that the kernel in
        dtype and the float64 reference see the same numbers."""
        tensors = {k: None if t is None else t.to(dtype).double() for k, t in self.tensors.items()}
        return Case(self.n, tensors, self.forms, self.kwargs)

    def inputs(self, dtype: torch.dtype, grad: bool = True):
        """(leaves, arguments) in `dtype`: leaves require grad, arguments are their forms."""
        leaves, args = {}, []
        for name, t in self.tensors.items():
            if t is None:
                args.append(None)
                continue
            leaf = t.detach().to(dtype).requires_grad_(grad)
            leaves[name] = leaf
            args.append(FORMS[self.forms[name]](leaf, self.n))
        return leaves, args


def _leaf(gen: torch.Generator, shape, form: str, scale=1.0, offset=0.0) -> torch.Tensor:
    shape = (1, *shape[1:]) if form == "expanded" else tuple(shape)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset


@st.composite
def instance_norm_case(draw) -> Case:
    n, c, h, w = draw(st.integers(1, 3)), draw(SIZES), draw(SIZES), draw(SIZES)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    fx = draw(X_FORMS)
    x = _leaf(gen, (n, c, h, w), fx, scale=draw(st.sampled_from([1.0, 3.0])), offset=draw(st.sampled_from([0.0, 2.5])))
    return Case(n, {"x": x}, {"x": fx}, {"eps": draw(EPS)})


@st.composite
def spatially_adaptive_case(draw) -> Case:
    base = draw(instance_norm_case())
    n, (_, c, h, w) = base.n, base.tensors["x"].shape
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    tensors, forms = dict(base.tensors), dict(base.forms)
    for name, offset in (("gamma", 1.0), ("beta", 0.0)):
        kind = draw(st.sampled_from(["full", "plane", None] if name == "beta" else ["full", "plane"]))
        if kind is None:
            tensors[name] = None
            continue
        forms[name] = draw(X_FORMS if kind == "full" else BIAS_FORMS)
        tensors[name] = _leaf(gen, (n, c, h, w) if kind == "full" else (n, c, 1, 1), forms[name], offset=offset)
    return Case(n, tensors, forms, base.kwargs)


@st.composite
def conv_geometry(draw, depthwise: bool):
    """(C, Co, groups, (kh, kw), stride, padding, dilation, (H, W)) with the kernel fitting."""
    groups = draw(st.sampled_from([1, 2, 3, 5]))
    cg = 1 if depthwise else draw(st.integers(1, 3))
    cog = draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 3))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if mode == "same":
        stride = (1, 1)
        padding, pad = "same", (0, 0)
    elif mode == "valid":
        padding, pad = "valid", (0, 0)
    elif mode == "int":
        padding = draw(st.integers(0, 3))
        pad = (padding, padding)
    else:
        padding = pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = []
    for i in range(2):
        extent = dilation[i] * (k[i] - 1) + 1
        low = 1 if mode == "same" else max(1, extent - 2 * pad[i])
        hw.append(draw(st.integers(low, low + 9)))
    return groups * cg, groups * cog, groups, k, stride, padding, dilation, tuple(hw)


def conv_case(depthwise: bool, normalize: bool):
    @st.composite
    def case(draw) -> Case:
        c, co, groups, k, stride, padding, dilation, (h, w) = draw(conv_geometry(depthwise))
        n = draw(st.integers(1, 3))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        fx, fw = draw(X_FORMS), draw(PARAM_FORMS)
        fan_in = (c // groups) * k[0] * k[1]
        tensors = {
            "x": _leaf(gen, (n, c, h, w), fx, scale=1.5, offset=draw(st.sampled_from([0.0, 3.0]))),
            "weight": _leaf(gen, (n, co, c // groups, *k), fw, scale=fan_in**-0.5),
        }
        forms = {"x": fx, "weight": fw}
        if draw(st.booleans()):
            forms["bias"] = draw(BIAS_FORMS)
            tensors["bias"] = _leaf(gen, (n, co), forms["bias"])
        else:
            tensors["bias"] = None
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        if normalize:
            kwargs["eps"] = draw(EPS)
        return Case(n, tensors, forms, kwargs)

    return case()


@st.composite
def din_1x1_case(draw) -> Case:
    n, c, co, h, w = draw(st.integers(1, 3)), draw(SIZES), draw(SIZES), draw(SIZES), draw(SIZES)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    fx, fw = draw(X_FORMS), draw(PARAM_FORMS)
    tensors = {
        "x": _leaf(gen, (n, c, h, w), fx, scale=1.5, offset=draw(st.sampled_from([0.0, 3.0, -40.0]))),
        "weight": _leaf(gen, (n, co, c), fw, scale=c**-0.5),
    }
    forms = {"x": fx, "weight": fw}
    if draw(st.booleans()):
        forms["bias"] = draw(BIAS_FORMS)
        tensors["bias"] = _leaf(gen, (n, co), forms["bias"])
    else:
        tensors["bias"] = None
    return Case(n, tensors, forms, {"eps": draw(EPS)})


def _pads(k, padding, dilation) -> tuple[int, int]:
    """(top, left) padding of conv_geometry's padding argument ("same" puts the odd pixel at the end)."""
    if padding == "same":
        return tuple(dilation[i] * (k[i] - 1) // 2 for i in range(2))
    if padding == "valid":
        return (0, 0)
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def _output_size(hw, k, stride, padding, dilation) -> tuple[int, int]:
    """(Ho, Wo) of a convolution with conv_geometry's arguments (written from F.conv2d's definition)."""
    if padding == "same":
        return tuple(hw)
    pad = _pads(k, padding, dilation)
    return tuple((hw[i] + 2 * pad[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def _offsets(draw, gen: torch.Generator, n: int, g: int, hw, k, stride, padding, dilation) -> torch.Tensor:
    """(N, 2 * G * kh * kw, Ho, Wo) offsets up to `spread` pixels with fractional parts in
    [0.1, 0.9] (bilinear sampling is differentiable there), and, when drawn, a random subset of them
    whole numbers (the sample is then exactly one pixel). Whole offsets that would put a sample
    exactly on row -1 or H (column -1 or W), the edge of the zero region, stay fractional: the
    gradient of the offset there is a one-sided derivative whose side is a convention (the kernel
    takes the outer side, the reference's floor the inner one)."""
    kk = k[0] * k[1]
    ho, wo = _output_size(hw, k, stride, padding, dilation)
    shape = (n, g, kk, 2, ho, wo)
    spread = draw(st.sampled_from([0, 1, 3]))
    whole = torch.randint(-spread, spread + 1, shape, generator=gen).double()
    offset = whole + 0.1 + 0.8 * torch.rand(shape, generator=gen, dtype=torch.float64)
    if draw(st.booleans()):
        pad = _pads(k, padding, dilation)
        grid = []
        for axis, extent in enumerate((ho, wo)):
            taps = torch.arange(kk) // k[1] if axis == 0 else torch.arange(kk) % k[1]
            g_ = (torch.arange(extent) * stride[axis] - pad[axis])[None, :] + (taps * dilation[axis])[:, None]
            grid.append(g_[:, :, None] if axis == 0 else g_[:, None, :])  # (kk, Ho, 1) / (kk, 1, Wo)
        position = torch.stack([grid[0].expand(kk, ho, wo), grid[1].expand(kk, ho, wo)], dim=1) + whole
        edge = torch.tensor(hw, dtype=torch.float64)[:, None, None]
        safe = (position != -1) & (position != edge)
        pick = (torch.rand(shape, generator=gen) < 0.3) & safe
        offset = torch.where(pick, whole, offset)
    return offset.reshape(n, 2 * g * kk, ho, wo)


def deformable_case(depthwise: bool, normalize: bool):
    @st.composite
    def case(draw) -> Case:
        base = draw(conv_case(depthwise, normalize))
        n, c, h, w = base.tensors["x"].shape
        n = base.n
        k = tuple(base.tensors["weight"].shape[3:])
        kw = base.kwargs
        ho, wo = _output_size((h, w), k, kw["stride"], kw["padding"], kw["dilation"])
        g = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        tensors, forms = dict(base.tensors), dict(base.forms)
        forms["offset"] = draw(X_FORMS)
        tensors["offset"] = _offsets(draw, gen, 1 if forms["offset"] == "expanded" else n, g, (h, w), k,
                                     kw["stride"], kw["padding"], kw["dilation"])
        if draw(st.booleans()):
            forms["mask"] = draw(X_FORMS)
            mshape = (1 if forms["mask"] == "expanded" else n, g * k[0] * k[1], ho, wo)
            tensors["mask"] = torch.rand(mshape, generator=gen, dtype=torch.float64) * 1.5 - 0.25
        else:
            tensors["mask"] = None
        return Case(n, tensors, forms, kw)

    return case()


def _deformable_din(x, weight, bias, offset, mask, **kwargs):
    return din_ops.dynamic_instance_norm(x, weight, bias, offset=offset, mask=mask, **kwargs)


def _deformable_conv2d(x, weight, bias, offset, mask, **kwargs):
    return din_ops.dynamic_conv2d(x, weight, bias, offset=offset, mask=mask, **kwargs)


@dataclass(frozen=True)
class Op:
    case: st.SearchStrategy
    ours: Callable
    ref: Callable
    # The yardstick for float16/bfloat16: "torch" is the reference run in that dtype (plain
    # PyTorch's error); "float32" is the float32 reference rounded to the dtype, used for ops whose
    # reference convolves: PyTorch's own bfloat16 F.conv2d on the CPU crashes (segmentation fault,
    # torch 2.13) for some small dilated geometries that the strategies draw.
    lowp_baseline: str = "torch"


# The operator table. Positional tensors follow Case.tensors' order; keyword arguments Case.kwargs.
OPS = {
    "instance_norm": Op(instance_norm_case(), din_ops.instance_norm, reference.instance_norm),
    "din_1x1": Op(din_1x1_case(), din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, "float32"),
    "din_kxk_grouped": Op(conv_case(False, True), din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, "float32"),
    "din_kxk_depthwise": Op(conv_case(True, True), din_ops.dynamic_instance_norm, reference.dynamic_instance_norm, "float32"),
    "dynamic_conv2d": Op(conv_case(False, False), din_ops.dynamic_conv2d, reference.dynamic_conv2d, "float32"),
    "dynamic_conv2d_depthwise": Op(conv_case(True, False), din_ops.dynamic_conv2d, reference.dynamic_conv2d, "float32"),
    "spatially_adaptive": Op(spatially_adaptive_case(), din_ops.spatially_adaptive_instance_norm,
                             reference.spatially_adaptive_instance_norm),
    "deformable_din": Op(deformable_case(False, True), _deformable_din, reference.deformable_instance_norm, "float32"),
    "deformable_din_depthwise": Op(deformable_case(True, True), _deformable_din, reference.deformable_instance_norm, "float32"),
    "deformable_conv2d": Op(deformable_case(False, False), _deformable_conv2d, reference.deformable_conv2d, "float32"),
}


def random_gy(shape, gy_seed: int, dtype: torch.dtype) -> torch.Tensor:
    """The upstream gradient: float64 normals rounded to the tested dtype (the same values for the
    kernel and the reference)."""
    gen = torch.Generator().manual_seed(gy_seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).double()


def forward_backward(fn: Callable, case: Case, dtype: torch.dtype, gy_seed: int,
                     gy_dtype: Optional[torch.dtype] = None):
    """fn on the case's inputs in dtype: the output and the gradient of every leaf for a random gy
    (rounded to gy_dtype, by default dtype)."""
    leaves, args = case.inputs(dtype)
    y = fn(*args, **case.kwargs)
    gy = random_gy(y.shape, gy_seed, gy_dtype or dtype).to(dtype)
    if y.numel():
        y.backward(gy)
    return y.detach(), {name: leaf.grad for name, leaf in leaves.items()}


def lowp_baseline(fn: Callable, case: Case, dtype: torch.dtype, gy_seed: int, kind: str = "torch"):
    """Plain PyTorch's result in the low-precision dtype, the yardstick of assert_close_to_reference.
    Where it overflows (e.g. the float16 gradient of rsqrt(var + eps) for a one-pixel plane), the
    float32 result rounded to dtype stands in for it: no better result exists in that dtype."""
    y32, grads32 = forward_backward(fn, case, torch.float32, gy_seed, gy_dtype=dtype)
    if kind == "float32":
        return y32.to(dtype), {k: g.to(dtype) for k, g in grads32.items()}
    y, grads = forward_backward(fn, case, dtype, gy_seed)
    if all(torch.isfinite(t).all() for t in (y, *grads.values())):
        return y, grads

    def mix(lowp, f32):
        return torch.where(torch.isfinite(lowp), lowp, f32.to(dtype))

    return mix(y, y32), {k: mix(g, grads32[k]) for k, g in grads.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_matches_reference(name, dtype, data):
    op = OPS[name]
    case = data.draw(op.case, label="case").rounded(dtype)
    gy_seed = data.draw(st.integers(0, 2**31 - 1), label="gy_seed")
    y, grads = forward_backward(op.ours, case, dtype, gy_seed)
    y64, grads64 = forward_backward(op.ref, case, torch.float64, gy_seed, gy_dtype=dtype)
    base, base_grads = (None, {})
    if dtype in LOW_PRECISION:
        base, base_grads = lowp_baseline(op.ref, case, dtype, gy_seed, op.lowp_baseline)
    assert_close_to_reference(y, y64, dtype, base)
    assert grads.keys() == grads64.keys()
    for key, g in grads.items():
        assert g is not None, key
        if key == "x" and dtype not in LOW_PRECISION:
            assert_grad_x_close(g, grads64[key], dtype, grad_x_condition(op.ref, case, gy_seed, dtype))
        elif dtype in LOW_PRECISION and case.forms[key] == "expanded":
            per_sample = per_sample_gradient_size(op.ref, case, key, gy_seed, dtype)
            assert_summed_gradient_close(g, grads64[key], dtype, base_grads[key], per_sample)
        else:
            assert_close_to_reference(g, grads64[key], dtype, base_grads.get(key))


def grad_x_condition(fn: Callable, case: Case, gy_seed: int, dtype: torch.dtype) -> float:
    """max over planes of rstd times max |dL/dIN(x)|, in float64 (0 without a normalization).

    The gradient of x is rstd * (g - mean(g) - xh * mean(g * xh)) with g = dL/dIN(x); computed in a
    floating-point type with unit roundoff u it carries an absolute error of about u * rstd * |g|,
    even where the exact result is small (e.g. two-pixel planes, whose normalized values are always
    +-1, have an exact gradient of 0). For nearly constant planes with eps = 0 that error exceeds a
    fixed tolerance however the kernel is written (plain PyTorch in float32 errs 100x more there).
    """
    captured = []
    plain = reference.instance_norm

    def spy(x, eps=1e-5, unbiased=False):
        xh = plain(x, eps, unbiased)
        xh.retain_grad()
        captured.append((x.detach(), eps, xh))
        return xh

    reference.instance_norm = spy  # the reference ops look it up at call time
    try:
        _, args = case.inputs(torch.float64)
        y = (spy if fn is plain else fn)(*args, **case.kwargs)
        y.backward(random_gy(y.shape, gy_seed, dtype))
    finally:
        reference.instance_norm = plain
    if not captured:
        return 0.0
    x, eps, xh = captured[0]
    v = x.var(dim=(2, 3), unbiased=False) + eps
    rstd = torch.where(v > 0, v.clamp_min(1e-300).rsqrt(), torch.zeros_like(v))
    return rstd.max().item() * xh.grad.abs().max().item()


def assert_grad_x_close(g, expected64, dtype, condition: float):
    """assert_close_to_reference's float32/float64 bound plus the rounding that the conditioning of
    the instance-norm gradient allows (see grad_x_condition)."""
    assert g.dtype == dtype and g.shape == expected64.shape
    scale = max(1.0, expected64.abs().max().item())
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    err = max_error(g, expected64)
    assert err <= tol * scale + 8 * torch.finfo(dtype).eps * condition, (err, condition)


def per_sample_gradient_size(fn: Callable, case: Case, key: str, gy_seed: int, dtype) -> float:
    """sum over the samples of max |gradient of that sample| for a leaf that is broadcast over the
    batch (computed in float64 with the leaf materialized per sample)."""
    tensors, forms = dict(case.tensors), dict(case.forms)
    leaf = tensors[key]
    tensors[key], forms[key] = leaf.expand(case.n, *leaf.shape[1:]).clone(), "contiguous"
    _, grads = forward_backward(fn, Case(case.n, tensors, forms, case.kwargs), torch.float64, gy_seed, dtype)
    g = grads[key]
    return g.abs().amax(dim=tuple(range(1, g.dim()))).sum().item()


def assert_summed_gradient_close(g, expected64, dtype, baseline, per_sample: float):
    """assert_close_to_reference for the gradient of a leaf broadcast over the batch: autograd sums
    the per-sample gradients, each already rounded to dtype, so half an ulp of each sample's
    gradient is allowed on top (they may cancel to a much smaller sum)."""
    assert g.dtype == dtype and g.shape == expected64.shape
    scale = max(1.0, expected64.abs().max().item())
    err, torch_err = max_error(g, expected64), max_error(baseline, expected64)
    assert err <= 2 * torch_err + 0.5 * torch.finfo(dtype).eps * (scale + per_sample), (err, torch_err)


# ---------------------------------------------------------------------------------------------
# Invalid combinations: drawn from ranges wider than the valid ones. A valid draw must run and match
# the reference; an invalid one must raise ValueError or TypeError, from the Python API and from the
# operator itself, and never crash or return a wrong answer.


def conv_arguments_valid(n, c, h, w, wshape, bshape, groups, stride, pad, dilation) -> bool:
    """Whether F.conv2d-per-sample semantics accept these arguments (written independently of
    din_ops.ops: from the definition of a grouped convolution)."""
    if groups < 1 or c % groups:
        return False
    if min(stride) < 1 or min(dilation) < 1 or min(pad) < 0:
        return False
    if len(wshape) != 5 or wshape[0] != n or wshape[2] != c // groups or wshape[1] % groups:
        return False
    if bshape is not None and bshape != (n, wshape[1]):
        return False
    return all(size + 2 * p >= d * (k - 1) + 1 for size, p, d, k in zip((h, w), pad, dilation, wshape[3:]))


@given(data=st.data())
def test_invalid_conv_arguments_raise(data):
    n, c, h, w = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    groups = data.draw(st.integers(0, 4))
    co = data.draw(st.integers(1, 6))
    # the matching C // groups half of the time, so that valid draws are common too
    cg = c // groups if groups and data.draw(st.booleans()) else data.draw(st.integers(1, 6))
    k = (data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)))
    wn = data.draw(st.sampled_from([n, n, n + 1]))
    stride = (data.draw(st.integers(0, 2)), data.draw(st.integers(1, 2)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(0, 2)))
    pad = (data.draw(st.integers(-1, 2)), data.draw(st.integers(0, 2)))
    bshape = data.draw(st.sampled_from([None, (n, co), (n, co + 1), (wn, co)]))
    wdtype = data.draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.int32]))
    x = torch.randn(n, c, h, w, dtype=torch.float32)
    wt = torch.randn(wn, co, cg, *k).to(wdtype)
    b = None if bshape is None else torch.randn(bshape)
    valid = conv_arguments_valid(n, c, h, w, tuple(wt.shape), bshape, groups, stride, pad, dilation) and wdtype == torch.float32
    kw = dict(stride=stride, padding=pad, dilation=dilation, groups=groups)
    raw = (list(stride), [pad[0], pad[0], pad[1], pad[1]], list(dilation), groups)
    if valid:
        y = din_ops.dynamic_instance_norm(x, wt, b, **kw)
        expected = reference.dynamic_instance_norm(x.double(), wt.double(), None if b is None else b.double(), **kw)
        assert_close_to_reference(y, expected, torch.float32)
        y2 = torch.ops.din_ops.dynamic_conv(x, wt, b, *raw, True, 1e-5)[0]
        assert_close_to_reference(y2, expected, torch.float32)
    else:
        for fn in (din_ops.dynamic_instance_norm, din_ops.dynamic_conv2d):
            with pytest.raises((ValueError, TypeError), match="din_ops"):
                fn(x, wt, b, **kw)
        with pytest.raises((ValueError, TypeError), match="din_ops"):
            torch.ops.din_ops.dynamic_conv(x, wt, b, *raw, True, 1e-5)


@given(data=st.data())
def test_invalid_normalization_arguments_raise(data):
    dims = data.draw(st.lists(st.integers(0, 4), min_size=2, max_size=5), label="x shape")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))
    eps = data.draw(st.sampled_from([1e-5, 0.0, -1e-3]))
    x = torch.zeros(dims).to(dtype)
    valid = len(dims) == 4 and min(dims[1:]) > 0 and dtype.is_floating_point and eps >= 0
    gform = data.draw(st.sampled_from(["full", "plane", "wrong"]))
    gshape = {"full": dims, "plane": dims[:2] + [1, 1], "wrong": dims[:2] + [2, 3]}[gform]
    gamma = torch.ones(gshape).to(dtype) if len(gshape) >= 2 else torch.ones(1)
    sain_valid = valid and (gform != "wrong" or tuple(gshape) == tuple(dims))
    if valid:
        y = din_ops.instance_norm(x, eps)
        assert y.shape == x.shape and not y.isnan().any()
    else:
        with pytest.raises((ValueError, TypeError), match="din_ops"):
            din_ops.instance_norm(x, eps)
        if eps >= 0:
            with pytest.raises((ValueError, TypeError), match="din_ops"):
                torch.ops.din_ops.instance_norm(x, eps)
    if sain_valid:
        assert din_ops.spatially_adaptive_instance_norm(x, gamma, eps=eps).shape == x.shape
    else:
        with pytest.raises((ValueError, TypeError), match="din_ops"):
            din_ops.spatially_adaptive_instance_norm(x, gamma, eps=eps)


@given(data=st.data())
def test_invalid_offset_and_mask_raise(data):
    # Offsets and masks of drawn shapes and dtypes around the valid ones, for a valid convolution.
    n, c, h, w = data.draw(st.integers(1, 2)), data.draw(st.sampled_from([1, 2, 4, 6])), data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    groups = data.draw(st.sampled_from([d for d in (1, 2) if c % d == 0]))
    pad = (data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1)))
    if h + 2 * pad[0] < k[0] or w + 2 * pad[1] < k[1]:
        pad = (k[0], k[1])
    ho, wo = h + 2 * pad[0] - k[0] + 1, w + 2 * pad[1] - k[1] + 1
    kk = k[0] * k[1]
    g = data.draw(st.integers(1, 4), label="offset groups")
    channels = data.draw(st.sampled_from([2 * g * kk, 2 * g * kk, 2 * g * kk + 1, g * kk, 0]), label="offset channels")
    oshape = (data.draw(st.sampled_from([n, n, n + 1])), channels, *data.draw(st.sampled_from([(ho, wo), (ho, wo), (ho, wo + 1), (ho - 1, wo)])))
    odims = data.draw(st.sampled_from([4, 4, 3]))
    odtype = data.draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.int32]))
    mkind = data.draw(st.sampled_from(["none", "valid", "valid", "channels", "spatial", "no_offset"]))
    mshape = {"none": None, "valid": (n, g * kk, ho, wo), "no_offset": (n, g * kk, ho, wo),
              "channels": (n, g * kk + 1, ho, wo), "spatial": (n, g * kk, ho + 1, wo)}[mkind]
    x = torch.randn(n, c, h, w)
    wt = torch.randn(n, 3 * groups, c // groups, *k)
    offset = None if mkind == "no_offset" or min(oshape) < 0 else (torch.rand(oshape) * 4 - 2).to(odtype)
    if offset is not None and odims == 3:
        offset = offset[0]
    mask = None if mshape is None or min(mshape) < 0 else torch.rand(mshape)
    # the offset groups G that the offset's channel count implies, and validity from the definition
    implied = channels // (2 * kk) if channels and channels % (2 * kk) == 0 else 0
    valid = (offset is not None and odims == 4 and odtype == torch.float32 and oshape[0] == n and oshape[2:] == (ho, wo)
             and implied > 0 and c % implied == 0 and (mask is None or mshape == (n, implied * kk, ho, wo)))
    kw = dict(padding=pad, groups=groups, offset=offset, mask=mask)
    raw = ([1, 1], [pad[0], pad[0], pad[1], pad[1]], [1, 1], groups, g)
    if valid:
        y = din_ops.dynamic_instance_norm(x, wt, **kw)
        expected = reference.deformable_instance_norm(x.double(), wt.double(), None, offset.double(),
                                                      None if mask is None else mask.double(), padding=pad, groups=groups)
        assert_close_to_reference(y, expected, torch.float32)
        raw = (*raw[:-1], implied)
        y2 = torch.ops.din_ops.deformable_conv(x, wt, None, offset, mask, *raw, True, 1e-5)[0]
        assert_close_to_reference(y2, expected, torch.float32)
    else:
        for fn in (din_ops.dynamic_instance_norm, din_ops.dynamic_conv2d):
            with pytest.raises((ValueError, TypeError), match="din_ops"):
                fn(x, wt, **kw)
        if offset is not None:
            with pytest.raises((ValueError, TypeError), match="din_ops"):
                torch.ops.din_ops.deformable_conv(x, wt, None, offset, mask, *raw, True, 1e-5)


def test_kernel_one_pixel_too_wide_with_stride_raises():
    # Found by test_invalid_conv_arguments_raise: with a stride > 1 the output width of a kernel one
    # pixel wider than the padded input truncated to 1 in C++ (not floor division), so the operator
    # ran on a window past the input instead of raising.
    x, w = torch.randn(1, 1, 1, 3), torch.randn(1, 1, 1, 1, 4)
    for normalize in (True, False):
        with pytest.raises(ValueError, match=r"kernel \(1, 4\) .* larger than the padded input \(1, 3\)"):
            torch.ops.din_ops.dynamic_conv(x, w, None, [1, 2], [0, 0, 0, 0], [1, 1], 1, normalize, 1e-5)
    with pytest.raises(ValueError, match="larger than the padded input"):
        din_ops.dynamic_conv2d(x, w, stride=(1, 2))
    with pytest.raises(ValueError, match="below 2"):
        torch.ops.din_ops.dynamic_conv(x, w, None, [1, 2**62], [0, 0, 2**62, 2**62], [1, 1], 1, True, 1e-5)


@pytest.mark.parametrize("fault", ["stats_shape", "stats_dtype", "grad_shape", "grad_dtype", "x_dims"])
@pytest.mark.parametrize("name", ["instance_norm", "din_1x1", "dynamic_conv", "spatially_adaptive"])
def test_backward_operators_reject_inconsistent_arguments(name, fault):
    # The backward ops are public operators too: statistics, grad_y and saved tensors that do not
    # fit together must raise ValueError/TypeError before any kernel reads them.
    n, c, h, w = 2, 3, 4, 5
    x = torch.randn(n, c, h, w)
    wt = torch.randn(n, 4, c, 1, 1)
    y, mean, rstd = torch.ops.din_ops.dynamic_conv(x, wt, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, True, 1e-5)
    gy_in, gy_out = torch.randn_like(x), torch.randn_like(y)
    m, r, xx = mean, rstd, x
    if fault == "stats_shape":
        m = mean[:, :-1]
    elif fault == "stats_dtype":
        r = rstd.float()
    elif fault == "grad_shape":
        gy_in, gy_out = gy_in[:, :, :-1], gy_out[:, :, :-1]
    elif fault == "grad_dtype":
        gy_in, gy_out = gy_in.double(), gy_out.double()
    else:
        xx = x[0]
    calls = {
        "instance_norm": lambda: torch.ops.din_ops.instance_norm_backward(gy_in, xx, m, r),
        "din_1x1": lambda: torch.ops.din_ops.dynamic_instance_norm_1x1_backward(gy_out, xx, wt.flatten(2), m, r),
        "dynamic_conv": lambda: torch.ops.din_ops.dynamic_conv_backward(
            gy_out, xx, wt, m, r, [1, 1], [0, 0, 0, 0], [1, 1], 1, True),
        "spatially_adaptive": lambda: torch.ops.din_ops.spatially_adaptive_instance_norm_backward(
            gy_in, xx, torch.ones_like(x), m, r, True),
    }
    with pytest.raises((ValueError, TypeError), match="din_ops"):
        calls[name]()


def test_bfloat16_same_padding_with_dilation_does_not_crash():
    # Found by the property tests: F.conv2d(padding="same") in bfloat16 crashes torch 2.13 on the
    # CPU for this geometry. din_ops' kernel and (since it pads explicitly) the reference run it.
    x = torch.randn(1, 6, 1, 6).to(torch.bfloat16)
    w = torch.randn(1, 2, 3, 4, 3).to(torch.bfloat16)
    kw = dict(padding="same", dilation=(3, 1), groups=2)
    expected = reference.dynamic_conv2d(x.double(), w.double(), **kw)
    y = din_ops.dynamic_conv2d(x, w, **kw)
    assert_close_to_reference(y, expected, torch.bfloat16, reference.dynamic_conv2d(x, w, **kw))
