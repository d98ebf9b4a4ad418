"""The benchmark command runs end to end (tiny shapes) and writes consistent JSON."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_writes_results(tmp_path):
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(out.read_text())
    assert "threads" in data["machine"]
    ops = {r["op"] for r in data["results"]}
    assert {"dynamic_instance_norm", "instance_norm"} <= ops
    assert any(op.startswith("dynamic_instance_norm depthwise") for op in ops)
    assert any("spatially_adaptive" in op for op in ops)
    for r in data["results"]:
        times = [v for k, v in r.items() if k.endswith("_ms")]
        assert times and all(t > 0 for t in times), r
    assert "vs torch" in run.stdout


def test_gpu_benchmark_rows_run(monkeypatch):
    # The GPU benchmark code, run on the CPU with tiny shapes (on a GPU machine `make gpu` runs it
    # for real): every row is produced with positive times.
    from benchmarks import bench_cuda

    monkeypatch.setattr(bench_cuda, "DEVICE", "cpu")
    monkeypatch.setattr(bench_cuda, "QUICK_SHAPE", (2, 4, 8, 8))
    results = bench_cuda.run(quick=True)
    assert len(results) == 4 * len(bench_cuda.DTYPES)
    for r in results:
        times = [v for k, v in r.items() if k.endswith("_ms")]
        assert times and all(t > 0 for t in times), r
