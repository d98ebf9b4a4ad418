"""din-train on a tiny generated data set: losses decrease, checkpoints resume bit for bit, mixed
precision runs, a 2-process DDP run with gloo works, runs are never overwritten by accident,
unreadable images are skipped, Ctrl-C saves the last step, and bad input gives clear errors."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from din_ops.models import VGG19Encoder
from din_ops.models import DINStyleNet
from din_ops.train import (ImageSampler, ProgressBar, _step_generator, build_parser, load_checkpoint, main,
                           save_checkpoint, train)

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
    # A run that stops on an error leaves no OUT folder behind.
    assert not any((tmp_path / name).exists() for name in "abc")
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path / "d", "--steps", "0"))
    assert exc.value.code == 2 and "--steps must be > 0" in capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(f.relative_to(folder)): (f.stat().st_mtime_ns, f.read_bytes())
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_new_run_refuses_an_out_that_holds_a_run(data, tmp_path, capsys):
    out = tmp_path / "run"
    main(_args(data, out, "--steps", "2", "--sample-every", "1"))
    before = _snapshot(out)
    assert sorted(before) == ["checkpoint.pt", "model.pt", "samples/step_0000001.png", "samples/step_0000002.png"]
    with pytest.raises(SystemExit) as exc:
        main(_args(data, out, "--steps", "1"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before
    main(_args(data, out, "--steps", "1", "--sample-every", "0", "--overwrite"))
    assert sorted(_snapshot(out)) == ["checkpoint.pt", "model.pt"]
    assert load_checkpoint(str(out / "model.pt"))["step"] == 1


def test_resume_checks_the_checkpoint_and_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    main(_args(data, out, "--steps", "2", "--sample-every", "0", "--seed", "3"))
    assert "scaler" in load_checkpoint(str(out / "checkpoint.pt"))
    before = _snapshot(out)
    checkpoint = str(out / "checkpoint.pt")
    for extra, message in [
        (["--resume", str(out / "model.pt")], r"model.pt' holds no optimizer state .* checkpoint.pt"),
        (["--resume", checkpoint, "--seed", "4"], r"trained with --seed 3, but the command line gives --seed 4"),
        (["--resume", checkpoint, "--seed", "3", "--batch-size", "1"], r"trained with --batch-size 2, but"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(_args(data, out, "--steps", "3", "--seed", "3", *extra))
        assert exc.value.code == 2 and re.search(message, capsys.readouterr().err), message
    for steps in ("2", "1"):  # nothing to do: the files stay as they are
        main(_args(data, out, "--steps", steps, "--seed", "3", "--resume", checkpoint))
        assert f"already at step 2 (--steps {steps}); nothing written" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_resume_restores_the_grad_scaler(tmp_path):
    from din_ops.train import _resume

    torch.manual_seed(0)
    model = DINStyleNet(widths=(4, 6, 8), outer_kernel=3)
    optimizer = torch.optim.Adam(model.parameters())
    args = argparse.Namespace(seed=0, batch_size=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    save_checkpoint(tmp_path / "ck.pt", model, optimizer, 5, args, {}, scaler)
    restored = torch.amp.GradScaler("cpu")
    assert _resume(str(tmp_path / "ck.pt"), args, model, optimizer, restored, torch.device("cpu")) == 5
    assert restored.state_dict() == scaler.state_dict() and restored.get_scale() == 512.0
    # A checkpoint written before the scaler was saved still resumes, with a fresh scaler.
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    del state["scaler"]
    torch.save(state, tmp_path / "old.pt")
    fresh = torch.amp.GradScaler("cpu")
    assert _resume(str(tmp_path / "old.pt"), args, model, optimizer, fresh, torch.device("cpu")) == 5
    assert fresh.get_scale() == 65536.0


def test_unreadable_images_are_skipped(data, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(data / "content", mixed)
    for name in ("x.png", "y.jpg", "zz.png"):
        (mixed / name).write_bytes(b"not an image")
    history = train(build_parser().parse_args(["--content", str(mixed), *_args(data, tmp_path / "run", "--steps",
                                                                                "3", "--sample-every", "0")[2:]]))
    assert len(history) == 3
    err = capsys.readouterr().err
    assert "skipping a content image: cannot read image" in err and "zz.png" in err
    # The batch of a step does not depend on which unreadable files earlier steps found.
    walked, fresh = ImageSampler(str(mixed), "content", 16, 24), ImageSampler(str(mixed), "content", 16, 24)
    for step in range(6):
        batch = walked.batch(2, _step_generator(0, step, 0))
    assert torch.equal(fresh.batch(2, _step_generator(0, 5, 0)), batch)
    assert len(walked._unreadable) == 3
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exc:
        main(["--content", str(bad), *_args(data, tmp_path / "bad_run", "--steps", "2")[2:]])
    assert exc.value.code == 2 and "no readable content image left" in capsys.readouterr().err


def test_ctrl_c_saves_the_last_completed_step(data, tmp_path, capsys, monkeypatch):
    common = ("--sample-every", "0", "--checkpoint-every", "0")
    train(build_parser().parse_args(_args(data, tmp_path / "two", "--steps", "2", *common)))
    adam_step, calls = torch.optim.Adam.step, []

    def step_with_ctrl_c(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == 2:  # Ctrl-C in the middle of the second weight update
            signal.raise_signal(signal.SIGINT)
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_with_ctrl_c)
    # Python's own Ctrl-C handler, whatever this process inherited (a job started in the background
    # by a non-interactive shell ignores SIGINT, and Python then installs no handler).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main(_args(data, tmp_path / "run", "--steps", "5", *common))
        stopped: BaseException | None = None
    except BaseException as error:  # before the fix, a KeyboardInterrupt
        stopped = error
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert isinstance(stopped, SystemExit) and stopped.code == 130
    err = capsys.readouterr().err
    assert f"step 2 of 5 saved to {tmp_path / 'run' / 'checkpoint.pt'}" in err and "--resume" in err
    saved = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    straight = load_checkpoint(str(tmp_path / "two" / "checkpoint.pt"))
    assert saved["step"] == 2 and saved["model"].keys() == straight["model"].keys()
    assert all(torch.equal(saved["model"][k], straight["model"][k]) for k in saved["model"])
    assert not (tmp_path / "run" / "model.pt").exists()


def test_help_shows_defaults_once():
    parser = build_parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert action.help and "default" in action.help, action.option_strings
    for shown in ("(default: 160000)", "(default: 0.0001)", "(default: 10)", "(default: cuda when available)"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "deformable" in text


@pytest.mark.parametrize("argv,message", [
    (["--image-size", "4"], "--image-size must be at least 8"),
    (["--device", "gpu"], "--device 'gpu' is not a device name"),
    pytest.param(["--device", "cuda"], "--device 'cuda' cannot be used here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA works here")),
    (["--out", "{tmp}/afile"], "--out .*afile' is a file, not a folder"),
    (["--out", "{tmp}/afile/run"], "--out .*run' cannot be created: .*afile' is a file"),
])
def test_clear_errors_for_sizes_devices_and_paths(data, tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("a file")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(_args(data, tmp_path / "run", "--steps", "1", *argv))
    assert exc.value.code == 2 and re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "run").exists() and (tmp_path / "afile").is_file()
