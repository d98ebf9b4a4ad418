"""din-train on a tiny generated data set: losses decrease, checkpoints resume bit for bit, mixed
precision runs, a 2-process DDP run with gloo works, and bad input gives clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from din_ops.models import VGG19Encoder
from din_ops.train import ProgressBar, build_parser, load_checkpoint, main, train

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread (see conftest)


def _write_images(folder: Path, count: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        # Smooth random colour fields (low-frequency noise upsampled), like tiny photos.
        low = torch.rand(3, 4, 5, generator=g)
        img = torch.nn.functional.interpolate(low[None], size=(20, 24), mode="bilinear")[0]
        data = (img * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(data).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_images(root / "content", 4, 0)
    _write_images(root / "style", 3, 1)
    torch.manual_seed(0)
    torch.save(VGG19Encoder().state_dict(), root / "vgg19.pth")
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--content", str(data / "content"), "--style", str(data / "style"), "--vgg", str(data / "vgg19.pth"),
            "--out", str(out), "--batch-size", "2", "--image-size", "16", "--load-size", "24",
            "--widths", "4", "6", "8", "--outer-kernel", "3", "--log-every", "1000", *extra]


def test_losses_decrease(data, tmp_path):
    history = train(build_parser().parse_args(_args(data, tmp_path / "run", "--steps", "24",
                                                   "--sample-every", "12", "--checkpoint-every", "12")))
    assert len(history) == 24
    losses = [h["loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    samples = sorted((tmp_path / "run" / "samples").glob("*.png"))
    assert [p.name for p in samples] == ["step_0000012.png", "step_0000024.png"]
    final = load_checkpoint(str(tmp_path / "run" / "model.pt"))
    assert final["step"] == 24 and "optimizer" not in final
    assert final["losses"]["loss"] == pytest.approx(losses[-1])


def test_resume_is_bit_for_bit(data, tmp_path):
    common = ("--style-weight", "5", "--checkpoint-every", "3", "--sample-every", "0", "--seed", "3")
    train(build_parser().parse_args(_args(data, tmp_path / "straight", "--steps", "6", *common)))
    train(build_parser().parse_args(_args(data, tmp_path / "first", "--steps", "3", *common)))
    # weights_only=True loads the checkpoint (tensors, numbers and strings only).
    half = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    assert half["step"] == 3 and "optimizer" in half
    train(build_parser().parse_args(_args(data, tmp_path / "resumed", "--steps", "6", *common,
                                          "--resume", str(tmp_path / "first" / "checkpoint.pt"))))
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    half_model = half["model"]
    assert not all(torch.equal(a[k], half_model[k]) for k in a)  # training did change the weights


def test_mixed_precision_and_mobilenet_style_encoder(data, tmp_path):
    history = train(build_parser().parse_args(_args(data, tmp_path / "amp", "--steps", "2", "--amp",
                                                    "--style-encoder", "mobilenet", "--sample-every", "0")))
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    state = load_checkpoint(str(tmp_path / "amp" / "model.pt"))
    assert state["config"]["style_encoder"] == "mobilenet"
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())


def test_ddp_two_processes_gloo(data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "din_ops.train", *_args(data, tmp_path / "ddp", "--steps", "3", "--sample-every", "0",
                                          "--device", "cpu")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(str(tmp_path / "ddp" / "model.pt"))
    assert state["step"] == 3
    assert "3/3" in proc.stderr  # rank 0's progress line


def test_progress_bar_plain_stream():
    import io

    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream, every=2)
    for step in range(1, 5):
        bar.update(step, loss=1.0 / step)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("[#") and "4/4" in lines[-1] and "loss 0.25" in lines[-1]


def test_clear_errors(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path / "a", "--steps", "1")[:4] + ["--vgg", str(tmp_path / "none.pth"),
                                                                "--out", str(tmp_path / "a")])
    assert exc.value.code == 2 and "vgg" in capsys.readouterr().err.lower()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--content", str(tmp_path / "empty"), *_args(data, tmp_path / "b", "--steps", "1")[2:]])
    assert exc.value.code == 2 and "holds no images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path / "c", "--steps", "1", "--widths", "4", "6", "10", "--resume",
                   str(tmp_path / "none.pt")))
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path / "d", "--steps", "0"))
    assert exc.value.code == 2 and "--steps must be > 0" in capsys.readouterr().err
