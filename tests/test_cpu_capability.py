"""The instruction-set level of the CPU kernels: chosen once at load, forced with
DIN_OPS_CPU_CAPABILITY, refused with a clear error where the CPU lacks it, and reported.

The kernels themselves are tested per level by running the suite with DIN_OPS_CPU_CAPABILITY set
(CI does so for every level its machine has); here each level is also forced in a subprocess and
checked against the reference."""
import os
import subprocess
import sys

import pytest

import din_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = ("default", "avx2", "avx512")

# A 3 x 3 grouped DIN and an instance norm at the forced level against the reference, in a fresh
# process (the level is chosen when the extension loads). Prints the level, then the largest error.
PROBE = r"""
import torch, din_ops
from din_ops import reference
print(din_ops.cpu_capability())
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 8, 19, 23, generator=g, dtype=torch.float64)
w = torch.randn(2, 8, 2, 3, 3, generator=g, dtype=torch.float64)
b = torch.randn(2, 8, generator=g, dtype=torch.float64)
err = 0.0
for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
    y = din_ops.dynamic_instance_norm(x.to(dtype), w.to(dtype), b.to(dtype), padding=1, groups=4)
    r = reference.dynamic_instance_norm(x, w, b, padding=1, groups=4)
    err = max(err, (y.double() - r).abs().max().item() / tol)
    y = din_ops.instance_norm(x.to(dtype))
    err = max(err, (y.double() - reference.instance_norm(x)).abs().max().item() / tol)
print(err)
"""


def run_probe(level: str, code: str = PROBE) -> subprocess.CompletedProcess:
    env = dict(os.environ, DIN_OPS_CPU_CAPABILITY=level)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_reported_level_is_one_this_cpu_has():
    levels = din_ops.cpu_capabilities()
    assert levels[0] == "default"
    assert list(levels) == [lv for lv in LEVELS if lv in levels]  # lowest first, known names
    forced = os.environ.get("DIN_OPS_CPU_CAPABILITY")
    # Unforced, the best level is chosen; forced, the one asked for.
    assert din_ops.cpu_capability() == (forced.lower() if forced else levels[-1])


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_runs_and_matches_the_reference(level):
    if level not in din_ops.cpu_capabilities():
        pytest.skip(f"this CPU or build has no {level} level")
    out = run_probe(level)
    assert out.returncode == 0, out.stderr
    reported, err = out.stdout.split()
    assert reported == level
    assert float(err) < 1.0, f"error {err} x tolerance at level {level}"


def test_unknown_level_is_refused_with_the_choices():
    code = r"""
import torch, din_ops
for call in (din_ops.cpu_capability, lambda: din_ops.instance_norm(torch.randn(1, 2, 3, 3))):
    try:
        call()
    except RuntimeError as e:
        print(str(e).splitlines()[0])
    else:
        print("no error")
"""
    out = run_probe("sse9", code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "DIN_OPS_CPU_CAPABILITY=sse9 is not a level: expected default, avx2 or avx512" in line


def test_level_the_cpu_lacks_is_refused():
    lacking = [lv for lv in LEVELS if lv not in din_ops.cpu_capabilities()]
    if not lacking:
        pytest.skip("this CPU has every level (csrc/tests/test_ops.cpp checks the refusal for CPUs without them)")
    code = r"""
import torch, din_ops
try:
    din_ops.dynamic_instance_norm(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 4, 3, 3), padding=1)
except RuntimeError as e:
    print(str(e).splitlines()[0])
"""
    out = run_probe(lacking[-1], code)
    assert out.returncode == 0, out.stderr
    assert f"DIN_OPS_CPU_CAPABILITY={lacking[-1]} cannot be used" in out.stdout
