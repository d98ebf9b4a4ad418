"""The din-bench cases as a pytest-benchmark suite, to catch regressions between commits.

    pytest benchmarks --benchmark-autosave                 # on the old commit: saves .benchmarks/...
    pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%   # on the new one

Every (op, shape, dtype, provider, pass) of ``din-bench --shapes targets`` is one test: the din_ops
backends, the PyTorch composition ("torch") and the floor, forward and forward+backward. Before timing,
each din_ops backend's forward is checked against the PyTorch composition, so a wrong kernel fails
here instead of looking fast. ``make test`` does not run this folder (pytest's testpaths is tests/).
Options: --din-shapes, --din-ops, --din-backends, --din-device, --din-dtypes (see conftest.py).
"""
from __future__ import annotations

import pytest
import torch

from . import registry
from .__main__ import DTYPES
from .runner import PASSES, Settings, _fwdbwd, backends_for, dtype_name, plan
from .shapes import label

TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-8, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    device = torch.device(opt("--din-device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = Settings(device=device, dtypes=[DTYPES[d] for d in _csv(opt("--din-dtypes"))],
                        backends=_csv(opt("--din-backends")), shapes=opt("--din-shapes"))
    benches, _ = registry.select(_csv(opt("--din-ops")))
    providers = backends_for(device, settings.backends) + ["torch"]
    cases, ids = [], []
    for bench, _, shape, dtype in plan(benches, settings):
        for passes in PASSES:
            for provider in providers + [bench.floor.name]:
                if passes == "fwd+bwd" and provider == bench.floor.name and bench.floor.fwdbwd is None:
                    continue
                cases.append((bench, shape, dtype, device, provider, passes))
                ids.append(f"{bench.name}-{label(shape)}-{dtype_name(dtype)}-{provider}-{passes}")
    metafunc.parametrize("case", cases, ids=ids)


def test_op(benchmark, case) -> None:
    bench, shape, dtype, device, provider, passes = case
    torch.manual_seed(0)
    inputs = bench.inputs(shape, dtype, device)
    with torch.no_grad():
        expected = bench.pytorch(*inputs)
    gy = torch.randn_like(expected)
    benchmark.group = f"{bench.name} {label(shape)} {dtype_name(dtype)} {passes}"
    benchmark.extra_info.update(op=bench.name, shape=list(shape), dtype=dtype_name(dtype), device=device.type,
                                provider=provider, passes=passes)
    if provider == bench.floor.name:
        fn = bench.floor.fwd(*inputs) if passes == "fwd" else bench.floor.fwdbwd(*inputs, gy)
    else:
        call = bench.pytorch if provider == "torch" else bench.din(provider)
        with torch.no_grad():
            got = call(*inputs)
        scale = expected.abs().max().item() + 1
        assert (got - expected).abs().max().item() <= TOLERANCE[dtype] * scale, f"{provider} disagrees with torch"
        fn = (lambda: call(*inputs)) if passes == "fwd" else _fwdbwd(call, inputs, gy)
    if device.type == "cuda":
        inner = fn

        def fn():
            inner()
            torch.cuda.synchronize(device)

    benchmark(fn)
