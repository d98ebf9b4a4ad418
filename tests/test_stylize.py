"""din-stylize end to end on small generated images: every option writes real image files, and bad
paths, unreadable images, mismatched masks and a missing model give clear errors."""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_ops.models import DINStyleNet
from din_ops.stylize import main, preserve_color
from din_ops.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
W, H = 30, 22


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny images: one thread (see conftest)


def _save(path: Path, size=(W, H), seed=0, mode="RGB") -> Path:
    g = torch.Generator().manual_seed(seed)
    channels = 3 if mode == "RGB" else 1
    low = torch.rand(channels, 3, 4, generator=g)
    img = torch.nn.functional.interpolate(low[None], size=(size[1], size[0]), mode="bilinear")[0]
    data = (img * 255).round().byte().permute(1, 2, 0).squeeze(-1).contiguous().numpy()
    Image.fromarray(data, mode).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stylize")
    (root / "contents").mkdir()
    for i in range(2):
        _save(root / "contents" / f"photo{i}.png", seed=i)
    _save(root / "style_a.png", (20, 20), seed=10)
    _save(root / "style_b.jpg", (24, 18), seed=11)
    left = torch.zeros(H, W, dtype=torch.uint8)
    left[:, : W // 2] = 255
    Image.fromarray(left.numpy(), "L").save(root / "left.png")
    Image.fromarray((255 - left).numpy(), "L").save(root / "right.png")
    Image.fromarray(torch.zeros(5, 5, dtype=torch.uint8).numpy(), "L").save(root / "small_mask.png")
    (root / "broken.png").write_bytes(b"\x89PNG but not really")
    torch.manual_seed(0)
    model = DINStyleNet(widths=(4, 6, 8), outer_kernel=3)
    for din in model.dins:  # styles that visibly matter
        torch.nn.init.normal_(din.weight_net[4].weight, std=0.5)
        torch.nn.init.normal_(din.bias_net[4].bias, std=0.5)
    save_checkpoint(root / "model.pt", model, None, 0, argparse.Namespace(), {})
    return root


def _read(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32).copy())  # (H, W, 3)


def _run(files: Path, *argv: str) -> None:
    main(["--checkpoint", str(files / "model.pt"), *argv])


def test_single_image_alpha(files, tmp_path):
    out1, out0 = tmp_path / "a1.png", tmp_path / "a0.jpg"
    _run(files, "--content", str(files / "contents" / "photo0.png"), "--style", str(files / "style_a.png"),
         "--output", str(out1))
    _run(files, "--content", str(files / "contents" / "photo0.png"), "--style", str(files / "style_a.png"),
         "--alpha", "0", "--output", str(out0))
    a1, a0 = _read(out1), _read(out0)
    assert a1.shape == a0.shape == (H, W, 3)
    assert (a1 - a0).abs().max() > 5  # the trade-off changes the picture


def test_folder_interpolation_and_max_size(files, tmp_path):
    outdir = tmp_path / "out"
    common = ("--content", str(files / "contents"), "--style", str(files / "style_a.png"), str(files / "style_b.jpg"))
    _run(files, *common, "--style-weights", "1", "0", "--output", str(outdir / "w10"))
    _run(files, *common, "--style-weights", "0", "1", "--output", str(outdir / "w01"))
    _run(files, *common, "--style-weights", "1", "1", "--max-size", "15", "--output", str(outdir / "mix"))
    names = sorted(p.name for p in (outdir / "w10").iterdir())
    assert names == ["photo0_stylized.png", "photo1_stylized.png"]
    assert (_read(outdir / "w10" / names[0]) - _read(outdir / "w01" / names[0])).abs().max() > 5
    assert _read(outdir / "mix" / names[1]).shape == (11, 15, 3)


def test_masks_place_styles(files, tmp_path):
    content = str(files / "contents" / "photo1.png")
    styles = (str(files / "style_a.png"), str(files / "style_b.jpg"))
    _run(files, "--content", content, "--style", *styles, "--masks", str(files / "left.png"),
         str(files / "right.png"), "--output", str(tmp_path / "masked.png"))
    for i, style in enumerate(styles):
        _run(files, "--content", content, "--style", style, "--output", str(tmp_path / f"s{i}.png"))
    masked, s0, s1 = (_read(tmp_path / n) for n in ("masked.png", "s0.png", "s1.png"))
    assert (s0 - s1).abs().max() > 5
    # Away from the border, the left half has style a and the right half style b (up to rounding).
    assert (masked[:, :3] - s0[:, :3]).abs().max() <= 3
    assert (masked[:, -3:] - s1[:, -3:]).abs().max() <= 3


def test_preserve_color(files, tmp_path):
    content = files / "contents" / "photo0.png"
    _run(files, "--content", str(content), "--style", str(files / "style_a.png"), "--preserve-color",
         "--output", str(tmp_path / "pc.png"))
    out, src = _read(tmp_path / "pc.png") / 255, _read(content) / 255
    rgb_to_uv = torch.tensor([[-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
    uv_out, uv_src = out @ rgb_to_uv.T, src @ rgb_to_uv.T
    inside = ((out > 0.02) & (out < 0.98)).all(dim=-1)  # where clamping to [0, 1] did not cut
    assert inside.float().mean() > 0.3
    assert (uv_out - uv_src)[inside].abs().max() < 0.02
    # The tensor function itself: chroma of the content, luminance of the result.
    r, c = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    mixed = preserve_color(r, c)
    y = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((mixed * y).sum(1), (r * y).sum(1), atol=1e-5)


def test_untrained_network(files, tmp_path):
    main(["--untrained", "--content", str(files / "contents" / "photo0.png"), "--style", str(files / "style_a.png"),
          "--output", str(tmp_path / "u.png")])
    assert _read(tmp_path / "u.png").shape == (H, W, 3)


@pytest.mark.parametrize("argv,message", [
    (["--content", "{f}/missing.png"], "content path .*missing.png' does not exist"),
    (["--content", "{f}/broken.png"], "cannot read image .*broken.png"),
    (["--style", "{f}/nothing.jpg"], "image .*nothing.jpg' does not exist"),
    (["--style", "{f}/style_a.png", "{f}/style_b.jpg", "--masks", "{f}/left.png"], "1 masks for 2 styles"),
    (["--style", "{f}/style_a.png", "{f}/style_b.jpg", "--masks", "{f}/left.png", "{f}/small_mask.png"],
     "small_mask.png' is 5x5 pixels but content image .* is 30x22"),
    (["--style-weights", "1", "2"], "2 weights for 1 styles"),
    (["--alpha", "1.5"], "--alpha must be in"),
    (["--checkpoint", "{f}/broken.png"], "not a readable din-train checkpoint"),
    (["--checkpoint", "{f}/none.pt"], "checkpoint .*none.pt' does not exist"),
])
def test_clear_errors(files, tmp_path, capsys, argv, message):
    import re

    defaults = {"--content": [f"{files}/contents/photo0.png"], "--style": [f"{files}/style_a.png"],
                "--checkpoint": [f"{files}/model.pt"], "--output": [str(tmp_path / "x.png")]}
    given, key = {}, None
    for a in argv:
        if a.startswith("--") and not a[2:].replace(".", "").isdigit():
            key = a
            given[key] = []
        else:
            given[key].append(a.replace("{f}", str(files)))
    merged = {**defaults, **given}
    with pytest.raises(SystemExit) as exc:
        main([x for k, v in merged.items() for x in (k, *v)])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "x.png").exists()


def test_no_checkpoint_says_how_to_train(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--content", str(files / "contents"), "--style", str(files / "style_a.png"),
              "--output", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "din-train" in err and "--checkpoint" in err and "--untrained" in err


def test_console_scripts_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["din-train"] == "din_ops.train:main"
    assert scripts["din-stylize"] == "din_ops.stylize:main"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("pillow") for d in deps)
