"""din-bench runs end to end on tiny shapes and writes consistent JSON, tables, sweeps and plots.

The command is run the way the ``din-bench`` console script runs it (``benchmarks.__main__:main``),
in a subprocess, so the test process keeps its own allocator settings. About 20 s on 2 busy cores.
"""
import collections
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tomllib

import pytest
import torch

import din_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE = "import sys; from benchmarks.__main__ import main; sys.argv[0] = 'din-bench'; sys.exit(main())"


def din_bench(*args, timeout=300):
    """Runs din-bench with args (as the console script does) from the repository root."""
    return subprocess.run([sys.executable, "-c", CONSOLE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def registered_ops():
    sys.path.insert(0, ROOT)
    try:
        from benchmarks import registry
    finally:
        sys.path.remove(ROOT)
    return registry.ops()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run = din_bench("--quick", "--device", "cpu", "--json", str(out / "results.json"), "--out", str(out / "saved"))
    assert run.returncode == 0, run.stderr
    return run, json.loads((out / "results.json").read_text()), out


def test_console_script_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["scripts"]["din-bench"] == "din_ops.benchmarks.__main__:main"
    assert any(dep.startswith("pytest-benchmark") for dep in project["optional-dependencies"]["test"])
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["plot"])


def test_quick_run_covers_every_op_and_backend(quick_run):
    run, data, _ = quick_run
    ops = registered_ops()
    names = {b.name for b in ops}
    assert {"instance_norm", "dynamic_instance_norm_1x1", "dynamic_instance_norm_dw3x3",
            "dynamic_instance_norm_g4_3x3", "spatially_adaptive_full", "spatially_adaptive_plane",
            "dynamic_instance_norm_deform3x3"} <= names
    cpu_backends = []
    for backend in din_ops.available_backends():
        if backend == "triton":  # on CPU tensors that is the interpreter: benchmarked only on request
            continue
        try:
            din_ops.backends.resolve(backend, torch.device("cpu"))
        except (ValueError, RuntimeError):
            continue
        cpu_backends.append(backend)
    assert "cpu" in cpu_backends and "reference" in cpu_backends
    for bench in ops:
        for passes in ("fwd", "fwd+bwd"):
            got = {r["provider"] for r in data["results"] if r["op"] == bench.name and r["pass"] == passes}
            want = {b for b in cpu_backends if bench.backends is None or b in bench.backends}
            want |= {"torch", bench.floor.name}
            want |= {e.name for e in bench.extras if e.available(torch.device("cpu"), torch.float32)}
            assert got == want, (bench.name, passes, got)
    # The table went to stdout, the progress to stderr.
    assert "vs torch" in run.stdout and "% floor" in run.stdout
    assert "[1/" in run.stderr and "[1/" not in run.stdout
    # No profiler log lines (the model benchmark profiles one call) in either stream.
    assert "profiler_start" not in run.stdout + run.stderr and "USDT" not in run.stdout + run.stderr


def test_quick_run_times_and_ratios_are_consistent(quick_run):
    _, data, _ = quick_run
    rows = data["results"]
    assert rows
    by_case = {}
    for r in rows:
        assert r["median_ms"] > 0 and r["min_ms"] > 0, r
        assert r["min_ms"] <= r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] <= r["max_ms"], r
        assert math.isclose(r["iqr_ms"], r["q3_ms"] - r["q1_ms"], rel_tol=1e-9, abs_tol=1e-12)
        assert r["reps"] >= 3
        by_case.setdefault((r["op"], tuple(r["shape"]), r["dtype"], r["pass"]), {})[r["provider"]] = r
    for case, providers in by_case.items():
        torch_ms = providers["torch"]["median_ms"]
        floor = next(r for r in providers.values() if r["kind"] == "floor")
        for r in providers.values():
            assert math.isclose(r["vs_torch"], torch_ms / r["median_ms"], rel_tol=1e-9), (case, r)
            assert math.isclose(r["floor_pct"], 100 * floor["median_ms"] / r["median_ms"], rel_tol=1e-9)
            assert r["rate"] > 0
            if r["kind"] in ("backend", "baseline"):
                assert r["peak_extra_bytes"] is not None and r["peak_extra_bytes"] >= 0
                if r["pass"] == "fwd+bwd":
                    assert r["saved_bytes"] > 0
        # The rate is the op's work over the median: for a fixed case it scales as 1 / time.
        cpu, torch_row = providers["cpu"], providers["torch"]
        assert math.isclose(cpu["rate"] * cpu["median_ms"], torch_row["rate"] * torch_row["median_ms"], rel_tol=1e-9)


def test_machine_description_records_the_allocator_settings(monkeypatch):
    from benchmarks import measure

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    info = measure.machine_info(torch.device("cpu"))
    assert info["env"].get("THP_MEM_ALLOC_ENABLE") == "1" and "LD_PRELOAD" not in info["env"]
    assert ", THP_MEM_ALLOC_ENABLE=1" in measure.describe(info)


def test_quick_run_saves_results_with_machine_description(quick_run):
    _, data, out = quick_run
    machine = data["machine"]
    for key in ("cpu", "usable_cpus", "threads", "torch", "din_ops", "date", "load_average_1m"):
        assert machine[key] is not None, key
    assert machine["din_ops"] == din_ops.__version__
    assert isinstance(machine["env"], dict) and machine["load_average_1m_end"] is not None
    saved = sorted(os.listdir(out / "saved"))
    assert [f for f in saved if f.endswith("-quick.json")] and [f for f in saved if f.endswith("-quick.txt")]
    again = json.loads((out / "saved" / next(f for f in saved if f.endswith(".json"))).read_text())
    assert again["results"] == data["results"]
    assert "vs torch" in (out / "saved" / next(f for f in saved if f.endswith(".txt"))).read_text()


def test_options_pick_ops_backends_and_shapes(tmp_path):
    out = tmp_path / "r.json"
    run = din_bench("--device", "cpu", "--quick", "--ops", "instance_norm", "--backends", "cpu",
                    "--shapes", "1x4x8x8,2x3x5x7", "--dtypes", "float32,float64", "--no-memory", "--no-save",
                    "--json", str(out))
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["results"]
    assert {r["op"] for r in rows} == {"instance_norm"}
    assert {r["provider"] for r in rows} == {"cpu", "torch", "copy"}
    assert {tuple(r["shape"]) for r in rows} == {(1, 4, 8, 8), (2, 3, 5, 7)}
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    assert all(r["saved_bytes"] is None and r["peak_extra_bytes"] is None for r in rows)


def test_cold_run_evicts_the_caches_before_every_timed_call(tmp_path):
    run = din_bench("--device", "cpu", "--quick", "--cold", "--ops", "instance_norm", "--backends", "cpu",
                    "--shapes", "1x4x8x8", "--no-memory", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    saved = sorted(os.listdir(tmp_path))
    assert [f for f in saved if f.endswith("-cold-quick.json")], saved
    data = json.loads((tmp_path / next(f for f in saved if f.endswith(".json"))).read_text())
    assert data["settings"]["cache"] == "cold"
    assert data["results"] and {r["cache"] for r in data["results"]} == {"cold"}
    assert "cache-cold: before every timed call" in run.stdout


def test_calls_are_balanced_over_predecessors():
    # What ran in the two calls before a call changes its time (the caches): every function must
    # come after every (second-to-last, last) pair of others equally often, in whole cycles of
    # balanced_order.
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.measure import balanced_order, measure
    finally:
        sys.path.remove(ROOT)
    assert balanced_order(1) == [0] and balanced_order(2) == [0, 1]
    for n in range(3, 9):
        order = balanced_order(n)
        assert sorted(order) == sorted(list(range(n)) * (n - 1) ** 2)
        cyclic = order[-2:] + order  # the cycle repeats: its last calls come before its first
        triples = collections.Counter(zip(cyclic, cyclic[1:], cyclic[2:]))
        assert set(triples) == {(a, b, c) for a in range(n) for b in range(n) for c in range(n)
                                if a != b and b != c}
        assert set(triples.values()) == {1}
    assert balanced_order(6, random.Random(1)) != balanced_order(6)
    with pytest.raises(ValueError):
        balanced_order(0)
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    timings = measure(fns, min_time=0.0, min_reps=4, max_reps=4, warmup=0)
    # 4 reps each, rounded up to a whole cycle of 36 calls (9 each).
    assert len(calls) == 36 and all(t.reps == 9 for t in timings.values())
    after = collections.Counter(zip(calls, calls[1:]))
    assert all(after[(a, b)] >= 2 for a in "abcd" for b in "abcd" if a != b)
    # A slow case stops within a cycle once max_time is spent and each function ran 3 times.
    calls.clear()
    measure(fns, min_time=0.0, min_reps=5, max_time=0.0, warmup=0)
    assert min(calls.count(name) for name in "abcd") == 3 and len(calls) < 36


def test_flush_runs_untimed_before_each_call_and_covers_the_cache(tmp_path):
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.measure import MIN_FLUSH_BYTES, cache_flusher, last_level_cache_bytes, measure
    finally:
        sys.path.remove(ROOT)
    calls = []
    timings = measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, min_time=0.0,
                      min_reps=4, max_reps=4, warmup=1,
                      before=lambda: (calls.append("flush"), __import__("time").sleep(0.02)))
    timed = calls[2:]  # after one warm-up call each: a flush before every call
    assert timed[0::2] == ["flush"] * 8 and sorted(timed[1::2]) == ["a"] * 4 + ["b"] * 4
    assert all(t.reps == 4 and t.max < 0.01 for t in timings.values())  # the 20 ms flush is not timed
    # Every distinct cache of the highest level counts (two L3 of 32 MiB here), each once.
    for cpu in range(4):
        caches = [(2, "512K", str(cpu)), (3, "32768K", "0-1" if cpu < 2 else "2-3")]
        for index, (level, size, shared) in enumerate(caches):
            folder = tmp_path / f"cpu{cpu}" / "cache" / f"index{index}"
            folder.mkdir(parents=True)
            for name, text in (("level", str(level)), ("size", size), ("shared_cpu_list", shared)):
                (folder / name).write_text(text + "\n")
    assert last_level_cache_bytes(torch.device("cpu"), sysfs=str(tmp_path)) == 64 * 2**20
    assert last_level_cache_bytes(torch.device("cpu"), sysfs=str(tmp_path / "none")) is None
    llc = last_level_cache_bytes(torch.device("cpu"))
    if os.path.isdir("/sys/devices/system/cpu/cpu0/cache"):
        assert llc is not None and llc >= 2**16
    flush, size = cache_flusher(torch.device("cpu"))
    assert size >= max(MIN_FLUSH_BYTES, 2 * (llc or 0))
    flush()


def bench_main():
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.__main__ import main
    finally:
        sys.path.remove(ROOT)
    return main


@pytest.mark.parametrize("args, message", [
    (["--ops", "no_such_op"], "no benchmark matches"),
    (["--backends", "no_such_backend"], "not available"),
    (["--shapes", "2x16x16"], "NxCxHxW"),
    (["--dtypes", "int8"], "unknown dtype"),
    (["--device", "meta"], "not usable here"),
])
def test_bad_options_fail_clearly(args, message, capsys):
    # Argument errors stop before anything is measured, so this runs in the test process.
    with pytest.raises(SystemExit) as stop:
        bench_main()(["--quick", "--no-save", *args])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_default_shapes_are_the_model_and_the_targets(capsys):
    assert bench_main()(["--list", "--ops", "dynamic_instance_norm_1x1"]) == 0
    listed = capsys.readouterr().out.split(":", 1)[1]
    for shape in ("1x32x512x512", "1x64x256x256", "1x128x128x128", "1x32x1024x1024", "1x64x512x512",
                  "1x128x256x256", "8x64x128x128", "8x128x64x64", "4x256x32x32"):
        assert shape in listed


def test_old_style_module_plugs_in_with_one_line(tmp_path):
    script = (
        "import sys\n"
        "from benchmarks import registry\n"
        "from benchmarks.__main__ import main\n"
        "registry.add_legacy('toy', lambda quick: [{'op': 'toy', 'quick': quick, 'fwd_ms': 1.5}])\n"
        f"sys.exit(main(['--quick', '--ops', 'toy', '--no-save', '--json', {str(tmp_path / 'r.json')!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["legacy"] == {"toy": [{"op": "toy", "quick": True, "fwd_ms": 1.5}]}
    assert data["results"] == []


def test_quick_sweep_writes_json_and_plot(tmp_path):
    run = din_bench("--device", "cpu", "--sweep", "--quick", "--ops", "instance_norm", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    files = os.listdir(tmp_path)
    data = json.loads((tmp_path / next(f for f in files if f.endswith(".json"))).read_text())
    rows = data["results"]
    assert {r["axis"] for r in rows} == {"H*W", "C", "N"}
    for axis in ("H*W", "C", "N"):
        sizes = {r["size"] for r in rows if r["axis"] == axis}
        assert len(sizes) == 2
        for provider in ("cpu", "reference", "torch", "copy"):
            assert len([r for r in rows if r["axis"] == axis and r["provider"] == provider]) == 4  # 2 sizes x 2 passes
    assert all(r["median_ms"] > 0 for r in rows)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in run.stderr
    else:
        png = next(f for f in files if f.endswith(".png"))
        with open(tmp_path / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_pytest_benchmark_suite_is_outside_make_test():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert os.path.exists(os.path.join(ROOT, "benchmarks", "test_pytest_benchmark.py"))


def test_targets_are_checked_from_the_measured_times():
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.registry import Floor, OpBench, Target, Work
        from benchmarks.runner import check_targets
    finally:
        sys.path.remove(ROOT)
    bench = OpBench(
        name="toy", title="toy", inputs=None, din=None, pytorch=None, floor=Floor("copy", fwd=None),
        work=lambda shape, itemsize: Work(1, 1),
        checks=[Target((1, 2, 3, 4), "fwd", "cpu", "speedup", 2.0, "issue x"),
                Target(None, "fwd", "cpu", "over_floor", 1.5, "issue y"),
                Target(None, "fwd", "cpu", "speedup", 1.0, "issue z", versus="other")],
    )

    def row(provider, ms, floor_pct=None):
        return {"op": "toy", "shape": [1, 2, 3, 4], "dtype": "float32", "pass": "fwd", "provider": provider,
                "median_ms": ms, "vs_torch": 6.0 / ms, "floor_pct": floor_pct}

    rows = [row("cpu", 4.0, 50.0), row("torch", 6.0), row("other", 3.0), row("cuda", 1.0)]
    found = {t["source"]: t for t in check_targets([bench], rows)}
    assert math.isclose(found["issue x"]["value"], 1.5) and not found["issue x"]["holds"]
    assert math.isclose(found["issue y"]["value"], 2.0) and not found["issue y"]["holds"]
    assert math.isclose(found["issue z"]["value"], 0.75) and not found["issue z"]["holds"]
    rows[0].update(median_ms=2.0, vs_torch=3.0, floor_pct=80.0)
    rows[2]["median_ms"] = 2.5
    assert all(t["holds"] for t in check_targets([bench], rows))


def test_deformable_rows_and_their_guards():
    sys.path.insert(0, ROOT)
    try:
        from benchmarks import bench_deformable_din
    finally:
        sys.path.remove(ROOT)
    bench = bench_deformable_din.BENCHES[0]
    assert bench in registered_ops()
    # The grid_sample composition runs everywhere; torchvision's rows only on a GPU with torchvision,
    # in a dtype it has a kernel for.
    extras = {e.name: e for e in bench.extras}
    assert extras["grid_sample"].available(torch.device("cpu"), torch.float32)
    assert not extras["torchvision"].available(torch.device("cpu"), torch.float32)


def test_gpu_benchmark_rows_run(monkeypatch):
    # The GPU benchmark code, run on the CPU with tiny shapes (on a GPU machine `make gpu` runs it
    # for real): every row is produced with positive times.
    from benchmarks import bench_cuda

    monkeypatch.setattr(bench_cuda, "DEVICE", "cpu")
    monkeypatch.setattr(bench_cuda, "QUICK_SHAPE", (2, 4, 8, 8))
    results = bench_cuda.run(quick=True)
    # Four rows per dtype, and the deformable one where torchvision runs in that dtype.
    compared = [d for d in bench_cuda.DTYPES if not bench_cuda.torchvision_deform_missing("cpu", d)]
    assert len(results) == 4 * len(bench_cuda.DTYPES) + len(compared)
    assert [r["dtype"] for r in results if r["op"] == "cuda deformable 3x3"] == [str(d) for d in compared]
    for r in results:
        times = [v for k, v in r.items() if k.endswith("_ms")]
        assert times and all(t > 0 for t in times), r


def test_gpu_targets_are_checked():
    # The GPU run's verdicts: each target line says HOLDS or DOES NOT HOLD from the row's figures.
    from benchmarks import bench_cuda

    rows = [
        dict(op="cuda instance_norm", shape=[16, 256, 128, 128], dtype="torch.float32", copy_fraction=0.85),
        dict(op="cuda dynamic_instance_norm 1x1", shape=[16, 256, 128, 128], dtype="torch.bfloat16",
             fwd_ms=1.5, bmm_ms=1.0, fwdbwd_ms=2.0, fwdbwd_torch_ms=5.0),
        dict(op="cuda deformable 3x3", shape=[8, 64, 64, 64], dtype="torch.float32", fwdbwd_ms=2.0,
             fwdbwd_torch_ms=5.0),
    ]
    lines = bench_cuda.targets(rows)
    assert len(lines) == 4
    assert "0.85" in lines[0] and lines[0].endswith(": HOLDS")
    assert "1.50" in lines[1] and lines[1].endswith("DOES NOT HOLD")
    assert "2.50" in lines[2] and lines[2].endswith(": HOLDS")
    assert "2.50" in lines[3] and lines[3].endswith("DOES NOT HOLD")


def test_gpu_benchmarks_dry_mode(capsys):
    # `make gpu-dry` lists the GPU rows and targets without a GPU.
    from benchmarks import bench_cuda, bench_triton

    bench_cuda.main(["--dry"])
    bench_triton.main(["--dry", "--targets-only"])
    out = capsys.readouterr().out
    assert "deformable" in out and "fwd+bwd, torchvision / din_ops >= 3.0" in out
    assert "(16, 256, 64, 64)" in out and "75% of the copy floor" in out


def test_results_go_to_the_checkout_only_from_a_checkout(tmp_path):
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.__main__ import USER_RESULTS, checkout_results, default_out
    finally:
        sys.path.remove(ROOT)
    here = os.path.join(ROOT, "benchmarks")
    if os.path.exists(os.path.join(ROOT, ".git")):  # the tests run from a clone (or a git worktree)
        assert checkout_results() == os.path.join(here, "results") == default_out()
    else:  # e.g. an unpacked sdist: not a checkout
        assert checkout_results() is None and default_out() == os.path.join(os.getcwd(), USER_RESULTS)
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    assert checkout_results(str(repo / "benchmarks")) is None  # no .git: not a checkout
    (repo / ".git").write_text("gitdir: elsewhere\n")  # a git worktree's .git is a file
    assert checkout_results(str(repo / "benchmarks")) == str(repo / "benchmarks" / "results")
    installed = tmp_path / "site" / "din_ops" / "benchmarks"
    (installed / "results").mkdir(parents=True)
    assert checkout_results(str(installed)) is None  # din_ops.benchmarks in site-packages: no .git above


def test_installed_layout_runs_as_din_ops_benchmarks_and_saves_where_the_user_is(tmp_path):
    # The package as an install lays it out: din_ops/ with the built extension and benchmarks/
    # under it (without the committed results), imported from a site folder, run from an empty one.
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "din_ops"), site / "din_ops",
                    ignore=shutil.ignore_patterns("__pycache__", "benchmarks"))
    shutil.copytree(os.path.join(ROOT, "benchmarks"), site / "din_ops" / "benchmarks",
                    ignore=shutil.ignore_patterns("__pycache__", "results"))
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)

    listed = run("-m", "din_ops.benchmarks", "--list")
    assert listed.returncode == 0, listed.stderr
    for name in ("instance_norm", "dynamic_instance_norm_1x1", "model"):
        assert name in listed.stdout
    assert "not importable" not in listed.stdout  # every bench_*.py imports under the new name
    bench = run("-m", "din_ops.benchmarks", "--quick", "--device", "cpu", "--ops", "instance_norm",
                "--backends", "cpu", "--shapes", "1x4x8x8", "--no-memory", "--no-progress")
    assert bench.returncode == 0, bench.stderr
    saved = sorted(os.listdir(work / "din-bench-results"))
    assert [f for f in saved if f.endswith("-quick.json")] and [f for f in saved if f.endswith("-quick.txt")]
    data = json.loads((work / "din-bench-results" / next(f for f in saved if f.endswith(".json"))).read_text())
    assert {r["op"] for r in data["results"]} == {"instance_norm"}
    assert not (site / "din_ops" / "benchmarks" / "results").exists()
    assert str(work / "din-bench-results") in bench.stderr  # "wrote ..." names the files
    # Nothing named benchmarks is importable from that layout.
    found = run("-c", "import importlib.util; print(importlib.util.find_spec('benchmarks'))")
    assert found.returncode == 0 and found.stdout.strip() == "None", found.stdout
