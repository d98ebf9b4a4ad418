"""Options of the pytest-benchmark suite (``pytest benchmarks``; not part of ``make test``)."""
from __future__ import annotations

import pytest

from .common import steady_allocations


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("din-bench", "din_ops benchmark cases")
    group.addoption("--din-shapes", default="targets",
                    help="shapes as din-bench --shapes: targets (default), model, model512, quick, NxCxHxW, ...")
    group.addoption("--din-ops", default=None, help="comma-separated op names or parts of them (default: all)")
    group.addoption("--din-backends", default=None, help="comma-separated din_ops backends (default: all available)")
    group.addoption("--din-device", default=None, help="cpu or cuda (default: cuda when present, else cpu)")
    group.addoption("--din-dtypes", default="float32", help="comma-separated dtypes (default: float32)")


def pytest_sessionstart(session: pytest.Session) -> None:
    steady_allocations()
