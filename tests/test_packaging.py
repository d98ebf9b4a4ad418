"""The source distribution: everything a build from it needs (every tracked source, header, CUDA
file, the CMake project and the C++ tests), and nothing that does not belong there."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tracked(*paths: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory) -> set[str]:
    # .git is a directory in a clone and a file in a worktree or submodule checkout.
    if not os.path.exists(os.path.join(ROOT, ".git")) or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    out = tmp_path_factory.mktemp("sdist")
    env = dict(os.environ, DIN_OPS_FORCE_CUDA="0")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--formats=gztar", "-d", str(out)], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    (archive,) = list(out.iterdir())
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    prefix = os.path.commonprefix(names).split("/")[0] + "/"
    return {n[len(prefix):] for n in names if n.startswith(prefix)}


def test_sdist_holds_every_build_and_test_file(sdist_names):
    needed = tracked("csrc", "din_ops", "benchmarks/*.py", "tests", ".ci") | {
        "CMakeLists.txt", "Makefile", "MANIFEST.in", "README.md", "pyproject.toml", "setup.py"}
    missing = sorted(needed - sdist_names)
    assert not missing, f"missing from the sdist: {missing}"
    # The kinds of file an earlier sdist lacked, named so that a glob gone wrong shows here.
    for suffix in (".h", ".cu", ".cuh"):
        assert any(n.startswith("csrc/") and n.endswith(suffix) for n in sdist_names), suffix


def test_sdist_leaves_out_built_and_result_files(sdist_names):
    unwanted = [n for n in sdist_names
                if n.endswith((".so", ".o", ".pyc")) or n.startswith("benchmarks/results/") or "/build/" in f"/{n}"]
    assert not unwanted, unwanted
