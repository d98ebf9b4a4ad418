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
A new run refuses an OUT that holds a run (``--resume`` continues it, ``--overwrite`` starts
afresh). An image that cannot be read is skipped with a warning; Ctrl-C saves the last completed
step to ``OUT/checkpoint.pt`` and exits with status 130.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TextIO

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from . import nn as din_nn
from .images import ImageError, check_folder, grid, list_images, load_image, save_image
from .models import DINStyleNet, VGG19Encoder
from .models.vgg import MIN_SIZE as VGG_MIN_SIZE

CHECKPOINT_FORMAT = 1


class ProgressBar:
    """A one-line progress bar with running figures; plain lines when the stream is not a terminal."""

    def __init__(self, total: int, start: int = 0, stream: Optional[TextIO] = None, every: int = 10) -> None:
        self.total, self.step, self.stream = total, start, stream or sys.stderr
        self.start_step, self.t0, self.every = start, time.perf_counter(), max(1, every)
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, step: int, **figures: float) -> None:
        """Shows progress: in place at every step on a terminal, else a line every ``every`` steps
        and at the last.

        Args:
            step: the number of steps done.
            **figures: numbers to show by name, e.g. ``loss=0.5``.
        """
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
        """Ends the bar's line on a terminal (plain lines need nothing)."""
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
    """Random crops from a folder of images; the batch of a step is a function of (seed, step, rank).

    A file that cannot be read is skipped with a warning (once) and each pick of it is drawn again
    from the step's generator, so the batches stay a function of (seed, step, rank) as long as the
    same files are unreadable, whichever step found them.
    """

    def __init__(self, folder: str, what: str, size: int, load_size: int) -> None:
        self.files = list_images(folder, what)
        self.folder, self.size, self.load_size, self.what = folder, size, load_size, what
        self._cache: dict[int, Tensor] = {}
        self._unreadable: set[int] = set()

    def _image(self, index: int) -> Optional[Tensor]:
        """Image ``index`` scaled for cropping, or None if it cannot be read."""
        if index in self._unreadable:
            return None
        if index not in self._cache:
            try:
                img = load_image(self.files[index], max_size=self.load_size)
            except ImageError as error:
                self._unreadable.add(index)
                print(f"din-train: warning: skipping a {self.what} image: {error}", file=sys.stderr)
                if len(self._unreadable) == len(self.files):
                    raise ImageError(f"no readable {self.what} image left: all {len(self.files)} files under "
                                     f"{self.folder!r} failed to load") from error
                return None
            if min(img.shape[2:]) < self.size:
                img = F.interpolate(img, scale_factor=self.size / min(img.shape[2:]) + 1e-6, mode="bilinear",
                                    align_corners=False)
            if len(self._cache) < 512:
                self._cache[index] = img
            return img
        return self._cache[index]

    def batch(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` random crops of ``size`` x ``size`` pixels.

        Args:
            n: the batch size.
            generator: the source of the picks and crop positions (a step's, see ``_step_generator``).

        Returns:
            The crops (n, 3, size, size) in [0, 1].
        """
        out = []
        for i in torch.randint(len(self.files), (n,), generator=generator).tolist():
            img = self._image(i)
            while img is None:  # an unreadable file: draw again
                img = self._image(int(torch.randint(len(self.files), (1,), generator=generator)))
            h, w = img.shape[2:]
            top = int(torch.randint(h - self.size + 1, (1,), generator=generator))
            left = int(torch.randint(w - self.size + 1, (1,), generator=generator))
            out.append(img[:, :, top:top + self.size, left:left + self.size])
        return torch.cat(out)


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + rank)


def build_parser() -> argparse.ArgumentParser:
    """The din-train command line.

    Returns:
        The parser; :func:`train` takes what it parses.
    """
    p = argparse.ArgumentParser(prog="din-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--content", required=True, help="folder of content images (e.g. MS-COCO)")
    p.add_argument("--style", required=True, help="folder of style images (e.g. WikiArt)")
    p.add_argument("--vgg", help="torchvision vgg19 state dict (loss network, and the style encoder "
                                 "with --style-encoder vgg); required unless --random-vgg")
    p.add_argument("--random-vgg", action="store_true",
                   help="random VGG weights instead of --vgg (tests and timing only: useless results)")
    p.add_argument("--out", required=True, help="folder for checkpoint.pt, model.pt and samples/; a new run "
                                                "refuses one that holds a run (see --resume, --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one: its checkpoint.pt, model.pt and "
                        "samples/step_*.png are deleted first")
    p.add_argument("--steps", type=int, default=160_000,
                   help="total training steps, a resumed run's included (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step and process (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=256,
                   help=f"training crop size, at least {VGG_MIN_SIZE} (default: %(default)s)")
    p.add_argument("--load-size", type=int, default=512,
                   help="images are scaled down to this longer side before cropping (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--param-net-lr-mult", type=float, default=10.0,
                   help="learning-rate multiplier of the DIN weight and bias nets (default: %(default)s)")
    p.add_argument("--content-weight", type=float, default=1.0,
                   help="weight of the content loss (default: %(default)s)")
    p.add_argument("--style-weight", type=float, default=10.0, help="weight of the style loss (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--style-encoder", choices=("vgg", "mobilenet"), default="vgg",
                   help="VGG-19 features (frozen, the paper's) or a trained MobileNet (default: %(default)s)")
    p.add_argument("--widths", type=int, nargs=3, default=(32, 96, 128), metavar=("C1", "C2", "C3"),
                   help="channels at full, 1/2 and 1/4 resolution (default: 32 96 128)")
    p.add_argument("--outer-kernel", type=int, default=9,
                   help="kernel size of the first and the last convolution (default: %(default)s)")
    p.add_argument("--din-kind", choices=din_nn.KINDS, default="conv",
                   help="kind of the DIN layers (see din_ops.nn; default: %(default)s)")
    p.add_argument("--din-kernel", type=int, default=1,
                   help="kernel size of the DIN layers' dynamic convolutions (default: %(default)s)")
    p.add_argument("--din-groups", type=int, default=1,
                   help="groups of the DIN layers' convolutions, 0 for depthwise (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=1000,
                   help="write OUT/checkpoint.pt every this many steps, 0 for only at the end (default: %(default)s)")
    p.add_argument("--sample-every", type=int, default=1000,
                   help="write OUT/samples/step_K.png every this many steps, 0 for never (default: %(default)s)")
    p.add_argument("--log-every", type=int, default=10,
                   help="a progress line every this many steps when stderr is not a terminal (default: %(default)s)")
    p.add_argument("--resume", help="a run's OUT/checkpoint.pt to continue (same network, --seed and --batch-size)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialization and of every step's batches (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--backend", default=None, help="din_ops backend (default: the compiled kernels)")
    return p


def resolve_device(name: Optional[str], probe: bool = True) -> torch.device:
    """The device that a --device option names, checked to be usable here.

    Args:
        name: "cpu", "cuda", "cuda:1", ...; None for cuda when available, else cpu.
        probe: check that a tensor can be made on it (False: only that torch knows the name).

    Returns:
        The device. Raises ValueError for a name torch does not know or a device it cannot use
        (e.g. cuda on a torch built without CUDA).
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:N, ...)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} cannot be used here: this torch has no CUDA support or sees no GPU")
    if not probe:
        return device
    try:
        torch.empty(0, device=device)
    except Exception as error:  # AssertionError without CUDA support, RuntimeError for a bad index
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ValueError(f"--device {name!r} cannot be used here: {first}") from error
    return device


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def save_checkpoint(path: Path, model: DINStyleNet, optimizer: Optional[torch.optim.Optimizer],
                    step: int, args: argparse.Namespace, losses: dict[str, float],
                    scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """Writes a checkpoint that ``torch.load(path, weights_only=True)`` reads (tensors, numbers,
    strings, lists and dicts only). Written to a temporary file first, then renamed. The optimizer
    and the gradient scaler (mixed precision's loss scale; empty when disabled) are left out when
    None."""
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
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
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


# What a run writes into OUT (besides temporary files): a new run refuses an OUT holding any.
_RUN_FILES = ("checkpoint.pt", "model.pt")


def _run_files(out: Path) -> list[Path]:
    """The files of an earlier run in ``out``."""
    files = [out / name for name in _RUN_FILES if (out / name).exists()]
    return files + sorted((out / "samples").glob("step_*.png"))


def _resume(path: str, args: argparse.Namespace, model: DINStyleNet, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, device: torch.device) -> int:
    """Loads a checkpoint into the model, the optimizer and the gradient scaler, after checking that
    it continues this command line (network, --seed and --batch-size).

    Returns:
        The checkpoint's step.
    """
    state = load_checkpoint(path, map_location=device)
    if "optimizer" not in state:
        raise ValueError(f"{path!r} holds no optimizer state (a final model.pt?): pass the run's checkpoint.pt "
                         f"to --resume")
    if state["config"] != model.config:
        raise ValueError(f"{path!r} holds a {state['config']} network, but the command line asks for "
                         f"{model.config}")
    saved = state.get("args", {})
    for name in ("seed", "batch_size"):
        if name in saved and saved[name] != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{path!r} was trained with {flag} {saved[name]}, but the command line gives "
                             f"{flag} {getattr(args, name)}; a resumed run must keep it (the batches depend on it)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler") and scaler.is_enabled():  # checkpoints before the scaler was saved have none
        scaler.load_state_dict(state["scaler"])
    return int(state["step"])


@contextlib.contextmanager
def _hold_sigint() -> Iterator[None]:
    """Holds Ctrl-C (SIGINT) back until the block ends, so that an interrupt never leaves a weight
    update half done (in the main thread; other threads get no signals)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    caught: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, caught[0])
    elif caught and previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says which step was saved where."""


def train(args: argparse.Namespace) -> list[dict[str, float]]:
    """Runs training as configured by the parsed command line.

    Args:
        args: the parsed command line (:func:`build_parser`).

    Returns:
        The losses of every step this call ran (on this process); empty when a resumed checkpoint
        is already at ``--steps`` (nothing is written then). Raises ValueError (ImageError for
        image files) for a configuration that cannot run, and :class:`TrainingInterrupted` after
        saving the last completed step on Ctrl-C.
    """
    rank, world, local_rank = _distributed()
    requested = resolve_device(args.device, probe=world == 1)  # DDP: no CUDA context before set_device
    if world > 1:
        use_cuda = requested.type == "cuda"
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
    else:
        device = requested
    if args.vgg is None and not args.random_vgg:
        raise SystemExit("din-train: --vgg PATH (a torchvision vgg19 state dict) is required; see "
                         "din_ops.models.vgg for how to save one (or --random-vgg for a smoke test)")
    if args.image_size < VGG_MIN_SIZE:
        raise ValueError(f"--image-size must be at least {VGG_MIN_SIZE} (the VGG-19 loss network halves it "
                         f"three times), got {args.image_size}")
    out = Path(args.out)
    check_folder(out, "--out")
    overwrite = getattr(args, "overwrite", False)
    earlier = _run_files(out) if not args.resume else []
    if earlier and not overwrite:
        names = ", ".join(str(f.relative_to(out)) for f in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise ValueError(f"--out {args.out!r} holds a run ({names}): pass --resume {out / 'checkpoint.pt'} to "
                         f"continue it, --overwrite to replace it, or another --out")

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
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)
    start = 0
    if args.resume:
        start = _resume(args.resume, args, model, optimizer, scaler, device)
        if start >= args.steps:
            if rank == 0:
                print(f"din-train: nothing to do: {args.resume} is already at step {start} (--steps "
                      f"{args.steps}); nothing written", file=sys.stderr)
            if world > 1:
                dist.destroy_process_group()
            return []

    # Everything is checked: only now touch OUT.
    if rank == 0:
        for f in earlier:  # --overwrite
            f.unlink()
        (out / "samples").mkdir(parents=True, exist_ok=True)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                        else None)
    bar = ProgressBar(args.steps, start, every=args.log_every) if rank == 0 else None
    losses: dict[str, float] = {}
    history: list[dict[str, float]] = []
    done = start  # steps completed: model, optimizer and scaler are those after step `done`
    model.train()
    try:
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
            with _hold_sigint():
                scaler.step(optimizer)
                scaler.update()
                losses = {"loss": loss.item(), "content": lc.item(), "style": ls.item()}
                history.append(losses)
                done = step + 1
            if rank == 0:
                bar.update(done, **losses)
                if args.sample_every and done % args.sample_every == 0:
                    save_image(grid([content[:4], style[:4], result[:4]]),
                               out / "samples" / f"step_{done:07d}.png")
                if args.checkpoint_every and done % args.checkpoint_every == 0:
                    save_checkpoint(out / "checkpoint.pt", model, optimizer, done, args, losses, scaler)
        if rank == 0:
            bar.close()
            save_checkpoint(out / "checkpoint.pt", model, optimizer, args.steps, args, losses, scaler)
            save_checkpoint(out / "model.pt", model, None, args.steps, args, losses)
    except KeyboardInterrupt as error:
        if rank != 0:
            raise
        bar.close()
        if done == start:
            raise TrainingInterrupted(f"interrupted before step {start + 1} finished: nothing saved") from error
        save_checkpoint(out / "checkpoint.pt", model, optimizer, done, args, losses, scaler)
        raise TrainingInterrupted(f"interrupted: step {done} of {args.steps} saved to {out / 'checkpoint.pt'} "
                                  f"(continue with --resume {out / 'checkpoint.pt'})") from error
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The din-train command: trains as ``argv`` (default: ``sys.argv[1:]``) says. Exits with status
    2 and a one-line message on a usage, file or configuration error, and with status 130 after
    saving the last completed step on Ctrl-C.

    Args:
        argv: the command-line arguments, without the program name.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "image_size", "load_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    try:
        train(args)
    except (ImageError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"din-train: error: {error}\n")
    except KeyboardInterrupt as error:
        parser.exit(130, f"din-train: {error or 'interrupted'}\n")


if __name__ == "__main__":
    main()
