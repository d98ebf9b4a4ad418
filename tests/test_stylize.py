"""din-stylize end to end on small generated images: every option writes real image files, outputs
never overwrite inputs or existing files, and bad paths, unreadable images, mismatched masks, sizes
and devices and a missing model give clear errors; din_ops.images reads 16-bit, float and
EXIF-rotated images."""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from din_ops.images import load_image
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
    (root / "afile").write_text("a file, not a folder")
    _save(root / "tiny_style.png", (12, 6), seed=12)
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
    (["--style", "{f}/tiny_style.png"], "tiny_style.png' is 12x6 pixels .* needs at least 8x8"),
    (["--style-size", "4"], "--style-size must be at least 8"),
    (["--style-size", "0"], "--style-size must be > 0"),
    (["--max-size", "0"], "--max-size must be > 0"),
    (["--max-size", "-3"], "--max-size must be > 0"),
    (["--device", "gpu"], "--device 'gpu' is not a device name"),
    pytest.param(["--device", "cuda"], "--device 'cuda' cannot be used here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA works here")),
    (["--output", "{f}/afile/x.png"], "--output folder .*afile' is a file, not a folder"),
    (["--content", "{f}/contents", "--output", "{f}/afile"], "--output .*afile' is a file, not a folder"),
    (["--content", "{f}/contents"], "x.png' names one image file, but there are 2 content images"),
    (["--output", "{f}/x.psd"], "cannot write '.psd' images"),
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
    err = capsys.readouterr().err
    assert re.search(message, err), message
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


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_outputs_never_overwrite_inputs_or_each_other(files, tmp_path, capsys):
    style = str(files / "style_a.png")
    victim = _save(tmp_path / "victim.png", seed=3)
    before = victim.read_bytes()
    for argv in (["--content", str(victim), "--output", str(victim)],
                 ["--content", str(victim), "--output", style, "--overwrite"]):
        with pytest.raises(SystemExit) as exc:
            _run(files, "--style", style, *argv)
        assert exc.value.code == 2 and "would overwrite the" in capsys.readouterr().err
    assert victim.read_bytes() == before
    # Same names in subfolders and with another suffix: the subfolders are kept.
    coll = tmp_path / "coll"
    for name in ("a/photo.png", "b/photo.png", "photo.jpg"):
        (coll / name).parent.mkdir(parents=True, exist_ok=True)
        _save(coll / name, seed=len(name))
    _run(files, "--content", str(coll), "--style", style, "--output", str(tmp_path / "out"))
    assert sorted(_tree(tmp_path / "out")) == ["a/photo_stylized.png", "b/photo_stylized.png", "photo_stylized.png"]
    written = _tree(tmp_path / "out")
    with pytest.raises(SystemExit) as exc:  # existing files: only with --overwrite
        _run(files, "--content", str(coll), "--style", style, "--output", str(tmp_path / "out"), "--alpha", "0")
    assert exc.value.code == 2 and "and 2 more files exist; pass --overwrite" in capsys.readouterr().err
    assert _tree(tmp_path / "out") == written
    _run(files, "--content", str(coll), "--style", style, "--output", str(tmp_path / "out"), "--alpha", "0",
         "--overwrite")
    assert all(_tree(tmp_path / "out")[k] != v for k, v in written.items())
    # Two contents with one output name.
    with pytest.raises(SystemExit) as exc:
        _run(files, "--content", str(coll / "photo.jpg"), str(coll / "a"), "--style", style,
             "--output", str(tmp_path / "two"))
    assert exc.value.code == 2 and "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "two").exists()
    # Into the content folder itself: a second run skips the first one's outputs.
    _run(files, "--content", str(coll), "--style", style, "--output", str(coll))
    first = _tree(coll)
    assert len(first) == 6
    with pytest.raises(SystemExit) as exc:
        _run(files, "--content", str(coll), "--style", style, "--output", str(coll))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("skipping") == 3 and "pass --overwrite" in err
    _run(files, "--content", str(coll), "--style", style, "--output", str(coll), "--overwrite")
    assert sorted(_tree(coll)) == sorted(first) and not list(coll.rglob("*_stylized_stylized.png"))


def test_output_with_image_suffix_is_a_file(files, tmp_path):
    content = str(files / "contents" / "photo0.png")
    _run(files, "--content", content, "--style", str(files / "style_a.png"), "--output", str(tmp_path / "r.gif"))
    assert (tmp_path / "r.gif").is_file()
    with Image.open(tmp_path / "r.gif") as img:
        assert img.format == "GIF" and img.size == (W, H)
    # A name without an image suffix is a folder.
    _run(files, "--content", content, "--style", str(files / "style_a.png"), "--output", str(tmp_path / "run.v2"))
    assert (tmp_path / "run.v2" / "photo0_stylized.png").is_file()


def test_load_image_16_bit_and_float_greyscale(tmp_path):
    grey = np.full((6, 8), round(0.51 * 65535), dtype=np.uint16)
    grey[0, 0] = 65535
    Image.fromarray(grey).save(tmp_path / "g16.png")
    Image.fromarray(np.full((6, 8), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    rgb = load_image(tmp_path / "g16.png")
    assert rgb.shape == (1, 3, 6, 8) and rgb.dtype == torch.float32
    assert rgb[0, :, 1, 1].tolist() == pytest.approx([0.51] * 3, abs=1e-4) and rgb[0, :, 0, 0].tolist() == [1.0] * 3
    assert load_image(tmp_path / "g16.png", mode="L")[0, 0, 2, 3].item() == pytest.approx(0.51, abs=1e-4)
    assert load_image(tmp_path / "g16.png", max_size=4).shape == (1, 3, 3, 4)
    assert torch.allclose(load_image(tmp_path / "f.tif"), torch.full((1, 3, 6, 8), 0.5))
    with pytest.raises(ValueError, match="max_size must be a positive"):
        load_image(tmp_path / "f.tif", max_size=0)


def test_exif_orientation(files, tmp_path):
    upright = _save(tmp_path / "upright.png", seed=4)  # W x H as shown
    with Image.open(upright) as img:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored turned left: to be shown turned right by 90 degrees
        img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    assert torch.equal(load_image(tmp_path / "rotated.png"), load_image(upright))
    # Masks of the upright size fit the rotated content.
    _run(files, "--content", str(tmp_path / "rotated.png"), "--style", str(files / "style_a.png"),
         str(files / "style_b.jpg"), "--masks", str(files / "left.png"), str(files / "right.png"),
         "--output", str(tmp_path / "out.png"))
    assert _read(tmp_path / "out.png").shape == (H, W, 3)
