"""din-train: train the DIN style-transfer network (din_ops.models.DINStyleNet).

Losses (paper, Implementation Details): the perceptual content loss at VGG-19 relu4_1,
``mean((phi4(out) - phi4(content))^2)`` (Johnson et al. 2016), and the BN-statistic style loss
(Li et al. 2017) over relu1_1..relu4_1, ``sum_l mean((mu_l(out) - mu_l(style))^2) +
mean((sigma_l(out) - sigma_l(style))^2)``; total = content_weight * content + style_weight * style.
Adam, lr 1e-4, and 10x that for the weight and bias nets of the DIN layers.

Usage::

    din-train --content coco/ --style wikiart/ --vgg vgg19.pth --out runs/din
    torchrun --nproc_per_node 4 -m din_ops.train --content ... (DDP: NCCL on GPUs, gloo on CPUs)

Every ``--checkpoint-every`` steps the run writes ``OUT/checkpoint.pt`` (loadable with
``torch.load(weights_only=True)``; ``--resume`` continues it exactly: the batches of step k depend
only on the seed, k and the rank), and every ``--sample-every`` steps ``OUT/samples/step_K.png``
(rows: content, style, result). ``OUT/model.pt`` is the final checkpoint; din-stylize reads it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .images import ImageError, grid, list_images, load_image, save_image
from .models import DINStyleNet, VGG19Encoder

CHECKPOINT_FORMAT = 1


class ProgressBar:
    """A one-line progress bar with running figures; plain lines when the stream is not a terminal."""

    def __init__(self, total: int, start: int = 0, stream=None, every: int = 10) -> None:
        self.total, self.step, self.stream = total, start, stream or sys.stderr
        self.start_step, self.t0, self.every = start, time.perf_counter(), max(1, every)
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, step: int, **figures: float) -> None:
        self.step = step
        if not self.tty and step % self.every and step != self.total:
            return
        done = step - self.start_step
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * step / max(self.total, 1))
        text = " ".join(f"{k} {v:.4g}" for k, v in figures.items())
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} {text} "
                f"{rate:.2f} it/s eta {eta:.0f}s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def mean_std(f: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-(n, c) mean and standard deviation of a feature map."""
    f = f.float().flatten(2)
    return f.mean(dim=2), (f.var(dim=2, unbiased=False) + eps).sqrt()


def content_loss(out_feats: Sequence[Tensor], content_feats: Sequence[Tensor]) -> Tensor:
    """Perceptual loss at relu4_1 (paper Eq. 5)."""
    return F.mse_loss(out_feats[-1].float(), content_feats[-1].float())


def style_loss(out_feats: Sequence[Tensor], style_feats: Sequence[Tensor]) -> Tensor:
    """Mean/std (BN-statistic) loss over relu1_1..relu4_1 (paper Eq. 6)."""
    total = out_feats[0].new_zeros((), dtype=torch.float32)
    for o, s in zip(out_feats, style_feats):
        mo, so = mean_std(o)
        ms, ss = mean_std(s)
        if ms.shape[0] != mo.shape[0]:
            ms, ss = ms.expand_as(mo), ss.expand_as(so)
        total = total + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
    return total


class ImageSampler:
    """Random crops from a folder of images; the batch of a step is a function of (seed, step, rank)."""

    def __init__(self, folder: str, what: str, size: int, load_size: int) -> None:
        self.files = list_images(folder, what)
        self.size, self.load_size, self.what = size, load_size, what
        self._cache: dict[int, Tensor] = {}

    def _image(self, index: int) -> Tensor:
        if index not in self._cache:
            img = load_image(self.files[index], max_size=self.load_size)
            if min(img.shape[2:]) < self.size:
                img = F.interpolate(img, scale_factor=self.size / min(img.shape[2:]) + 1e-6, mode="bilinear",
                                    align_corners=False)
            if len(self._cache) < 512:
                self._cache[index] = img
            return img
        return self._cache[index]

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        out = []
        for i in torch.randint(len(self.files), (n,), generator=generator).tolist():
            img = self._image(i)
            h, w = img.shape[2:]
            top = int(torch.randint(h - self.size + 1, (1,), generator=generator))
            left = int(torch.randint(w - self.size + 1, (1,), generator=generator))
            out.append(img[:, :, top:top + self.size, left:left + self.size])
        return torch.cat(out)


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + rank)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="din-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--content", required=True, help="folder of content images (e.g. MS-COCO)")
    p.add_argument("--style", required=True, help="folder of style images (e.g. WikiArt)")
    p.add_argument("--vgg", help="torchvision vgg19 state dict (loss network, and the style encoder "
                                 "with --style-encoder vgg); required unless --random-vgg")
    p.add_argument("--random-vgg", action="store_true",
                   help="random VGG weights instead of --vgg (tests and timing only: useless results)")
    p.add_argument("--out", required=True, help="folder for checkpoints and sample grids")
    p.add_argument("--steps", type=int, default=160_000)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--image-size", type=int, default=256, help="training crop size")
    p.add_argument("--load-size", type=int, default=512, help="images are scaled down to this longer side")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--param-net-lr-mult", type=float, default=10.0,
                   help="learning-rate multiplier of the DIN weight and bias nets")
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=10.0)
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--style-encoder", choices=("vgg", "mobilenet"), default="vgg")
    p.add_argument("--widths", type=int, nargs=3, default=(32, 96, 128), metavar=("C1", "C2", "C3"))
    p.add_argument("--outer-kernel", type=int, default=9)
    p.add_argument("--din-kind", default="conv", help="conv or spatially_adaptive (see din_ops.nn)")
    p.add_argument("--din-kernel", type=int, default=1)
    p.add_argument("--din-groups", type=int, default=1, help="0 for depthwise")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--backend", default=None, help="din_ops backend (default: compiled kernels)")
    return p


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def save_checkpoint(path: Path, model: DINStyleNet, optimizer: Optional[torch.optim.Optimizer],
                    step: int, args: argparse.Namespace, losses: dict[str, float]) -> None:
    """Writes a checkpoint that ``torch.load(path, weights_only=True)`` reads (tensors, numbers,
    strings, lists and dicts only). Written to a temporary file first, then renamed."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "model": model.state_dict(),
        "step": step,
        "losses": losses,
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Reads a din-train checkpoint (``weights_only=True``) and checks that it is one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise ValueError(f"{path!r} is not a readable din-train checkpoint "
                         f"({type(error).__name__}: {first})") from error
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path!r} is not a din-train checkpoint (no 'config' and 'model' entries)")
    return state


def model_from_checkpoint(path: str, backend: Optional[str] = None, map_location: Any = "cpu") -> DINStyleNet:
    """The trained DINStyleNet stored in a din-train checkpoint."""
    state = load_checkpoint(path, map_location)
    model = DINStyleNet.from_config(state["config"], backend=backend)
    model.load_state_dict(state["model"])
    return model


def train(args: argparse.Namespace) -> list[dict[str, float]]:
    """Runs training as configured by the parsed command line; returns the losses of every step
    this call ran (on this process)."""
    rank, world, local_rank = _distributed()
    if world > 1:
        use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.vgg is None and not args.random_vgg:
        raise SystemExit("din-train: --vgg PATH (a torchvision vgg19 state dict) is required; see "
                         "din_ops.models.vgg for how to save one (or --random-vgg for a smoke test)")
    out = Path(args.out)
    if rank == 0:
        (out / "samples").mkdir(parents=True, exist_ok=True)

    content_data = ImageSampler(args.content, "content", args.image_size, args.load_size)
    style_data = ImageSampler(args.style, "style", args.image_size, args.load_size)

    torch.manual_seed(args.seed)
    model = DINStyleNet(args.widths, args.outer_kernel, style_encoder=args.style_encoder,
                        vgg_weights=args.vgg, din_kind=args.din_kind, din_kernel=args.din_kernel,
                        din_groups=args.din_groups, backend=args.backend).to(device)
    loss_net = model.style_encoder if args.style_encoder == "vgg" else VGG19Encoder(args.vgg).to(device)
    param_ids = {id(p) for p in model.param_net_parameters()}
    base = [p for p in model.parameters() if p.requires_grad and id(p) not in param_ids]
    optimizer = torch.optim.Adam([
        {"params": base, "lr": args.lr},
        {"params": model.param_net_parameters(), "lr": args.lr * args.param_net_lr_mult},
    ])
    start = 0
    if args.resume:
        state = load_checkpoint(args.resume, map_location=device)
        if state["config"] != model.config:
            raise SystemExit(f"din-train: {args.resume} holds a {state['config']} network, but the command "
                             f"line asks for {model.config}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                        else None)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)
    bar = ProgressBar(args.steps, start, every=args.log_every) if rank == 0 else None
    losses: dict[str, float] = {}
    history: list[dict[str, float]] = []
    model.train()
    for step in range(start, args.steps):
        gen = _step_generator(args.seed, step, rank)
        content = content_data.batch(args.batch_size, gen).to(device)
        style = style_data.batch(args.batch_size, gen).to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            result = net(content, style)
            out_feats = loss_net(result)
            with torch.no_grad():
                content_feats = loss_net(content)
                style_feats = loss_net(style)
            lc = content_loss(out_feats, content_feats)
            ls = style_loss(out_feats, style_feats)
            loss = args.content_weight * lc + args.style_weight * ls
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses = {"loss": loss.item(), "content": lc.item(), "style": ls.item()}
        history.append(losses)
        done = step + 1
        if rank == 0:
            bar.update(done, **losses)
            if args.sample_every and done % args.sample_every == 0:
                save_image(grid([content[:4], style[:4], result[:4]]), out / "samples" / f"step_{done:07d}.png")
            if args.checkpoint_every and done % args.checkpoint_every == 0:
                save_checkpoint(out / "checkpoint.pt", model, optimizer, done, args, losses)
    if rank == 0:
        bar.close()
        save_checkpoint(out / "checkpoint.pt", model, optimizer, args.steps, args, losses)
        save_checkpoint(out / "model.pt", model, None, args.steps, args, losses)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "image_size", "load_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    try:
        train(args)
    except (ImageError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"din-train: error: {error}\n")


if __name__ == "__main__":
    main()
