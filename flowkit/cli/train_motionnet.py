"""``flowkit train-flow motionnet VIDEO_DIR_OR_STORE --out motionnet.pt``: unsupervised MotionNet.

Trains :class:`flowkit.flow.motionnet.MotionNet` on random clips of M+1 consecutive frames drawn
from a folder of videos (decoded with :mod:`flowkit.video`) or from a flowkit store extracted with
RGB frames (:meth:`FlowStore.read_rgb`). No ground truth is needed: the loss is the unsupervised
photometric + SSIM + smoothness loss of :func:`~flowkit.flow.motionnet.unsupervised_loss`.

Checkpoints (``--out``) are written atomically at the end of every epoch as a dict
``{"config", "state_dict", "optimizer", "epoch", "step", "loss", "rng", "history"}``; ``epoch`` is the
number of finished epochs and ``step`` the number of optimiser steps. ``--resume`` continues from
``--out`` exactly (weights, Adam state, epoch, step and the clip sampler's random state), so
``--epochs 2`` in one go and ``--epochs 1`` then ``--epochs 2 --resume`` give the same weights.
The result is used with ``flowkit extract --method motionnet --weights motionnet.pt``.

The training functions (:class:`ClipSource`, :func:`train`, :func:`sample_eval_set`,
:func:`evaluate_epe`) are importable for scripts and tests.
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import click
import cv2
import numpy as np
import torch

from ..errors import FlowkitError, VideoError
from ..train.checkpoint import atomic_write_bytes
from . import handle_errors
from .options import parse_size

# Decoded videos kept in memory between draws (a clip sampler revisits videos often).
VIDEO_CACHE = 16


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint as ``config``)."""
    num_frames: int = 10
    width: float = 1.0
    size: tuple[int, int] = (128, 160)
    epochs: int = 10
    steps_per_epoch: int = 100
    batch: int = 8
    lr: float = 1e-4
    seed: int = 0

    def model_config(self) -> dict:
        return {"num_frames": self.num_frames, "width": self.width}


# ----------------------------------------------------------------------------------------- data

class ClipSource:
    """Random clips of consecutive RGB frames from many videos, all resized to one ``size``.

    Each video is a zero-argument loader returning ``(T, H, W, 3)`` uint8; decoded videos are cached
    (``VIDEO_CACHE`` most recent). A video that fails to load is reported once and dropped, so one
    bad file never stops training.
    """

    def __init__(self, loaders: Sequence[tuple[str, Callable[[], np.ndarray]]], size: tuple[int, int],
                 on_warning: Callable[[str], None] | None = None):
        self.loaders = list(loaders)
        self.size = (int(size[0]), int(size[1]))
        self.on_warning = on_warning or (lambda msg: None)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        if not self.loaders:
            raise FlowkitError("no videos to train on")

    @classmethod
    def from_path(cls, path: str | os.PathLike, size: tuple[int, int], **kw) -> "ClipSource":
        """A video folder (``root/<class>/<video>``) or a flowkit store directory with RGB frames."""
        from ..store import MANIFEST, FlowStore

        path = Path(path)
        if (path / MANIFEST).is_file():
            store = FlowStore(path)
            keys = store.keys()
            if not keys:
                raise FlowkitError(f"store {path} holds no finished videos")
            return cls([(f"{path}:{k}", lambda k=k: store.read_rgb(k)) for k in keys], size, **kw)
        from ..labels import scan_videos
        from ..video import load_frames

        items, _ = scan_videos(path)
        if not items:
            raise FlowkitError(f"{path}: no video files found (and not a flowkit store)")
        return cls([(str(it.path), lambda p=it.path: load_frames(p, size=size)) for it in items],
                   size, **kw)

    @classmethod
    def from_arrays(cls, videos: Sequence[np.ndarray], **kw) -> "ClipSource":
        """In-memory videos ``(T, H, W, 3)`` uint8 of one size (tests, benchmarks)."""
        size = videos[0].shape[1:3]
        return cls([(f"video{i}", lambda v=v: v) for i, v in enumerate(videos)], size, **kw)

    def _frames(self, index: int) -> np.ndarray | None:
        name, load = self.loaders[index]
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        try:
            frames = np.asarray(load())
        except (VideoError, FlowkitError, OSError) as exc:
            self.on_warning(f"skipping {name}: {exc}")
            return None
        if frames.shape[1:3] != self.size:
            frames = np.stack([cv2.resize(f, self.size[::-1], interpolation=cv2.INTER_AREA)
                               for f in frames])
        self._cache[name] = frames
        if len(self._cache) > VIDEO_CACHE:
            self._cache.popitem(last=False)
        return frames

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> torch.Tensor:
        """``(batch, length, 3, H, W)`` uint8: random videos, random start frames."""
        clips = []
        tries = 0
        while len(clips) < batch:
            if not self.loaders:
                raise FlowkitError("no usable video left to train on (all failed to load)")
            tries += 1
            if tries > 100 * batch:
                raise FlowkitError(f"no video has the {length} frames a clip needs "
                                   f"(--num-frames + 1); use shorter clips or longer videos")
            i = int(rng.integers(len(self.loaders)))
            frames = self._frames(i)
            if frames is None:
                self.loaders.pop(i)
                continue
            if len(frames) < length:
                continue
            start = int(rng.integers(len(frames) - length + 1))
            clips.append(frames[start: start + length])
        return torch.from_numpy(np.stack(clips)).permute(0, 1, 4, 2, 3).contiguous()


# ----------------------------------------------------------------------------------------- evaluation

@dataclass
class EvalSet:
    """Clips with known flow: ``clips (N, M+1, 3, H, W)`` uint8, ``flows (N, 2, H, W)`` (same for every
    pair of a clip, as in :mod:`flowkit.samples`)."""
    clips: torch.Tensor
    flows: torch.Tensor
    names: list[str]


def sample_eval_set(num_frames: int, size: tuple[int, int],
                    classes: Sequence[str] = ("pan_left", "pan_right", "pan_up", "pan_down"),
                    videos_per_class: int = 1, seed: int = 1000) -> EvalSet:
    """Rendered (not encoded) sample clips of ``num_frames + 1`` frames and their exact flow."""
    from ..samples import render_sample, sample_specs

    specs = sample_specs(classes=tuple(classes), videos_per_class=videos_per_class,
                         frames=num_frames + 1, size=tuple(size), seed=seed)
    clips = np.stack([render_sample(s) for s in specs])
    flows = np.stack([s.flow() for s in specs])
    return EvalSet(torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous(),
                   torch.from_numpy(flows), [f"{s.class_name}_{s.index}" for s in specs])


def evaluate_epe(model, data: EvalSet) -> dict[str, float]:
    """Mean end-point error (pixels, all pixels of all pairs) of the model's full-resolution flow
    against the known flow, and of zero flow."""
    from ..bench import end_point_error
    from ..flow.motionnet import MotionNet

    was_training = model.training
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        clips = data.clips.to(device)
        full = MotionNet.full_resolution(model(clips), tuple(clips.shape[-2:]))
        n, m = clips.shape[0], clips.shape[1] - 1
        pred = full.reshape(n, m, 2, *clips.shape[-2:]).cpu()
    model.train(was_training)
    pred = pred.reshape(n * m, 2, *pred.shape[-2:])
    gt = data.flows[:, None].expand(n, m, *data.flows.shape[1:]).reshape(pred.shape)
    return {"epe": end_point_error(pred, gt), "epe_zero": end_point_error(torch.zeros_like(gt), gt)}


# ----------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` atomically: a crash leaves either the previous checkpoint or the new one."""
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def _check_resumable(ckpt: dict, config: TrainConfig, path: Path) -> None:
    saved = ckpt.get("config", {})
    for key in ("num_frames", "width", "size", "batch", "steps_per_epoch"):
        if key in saved and _norm(saved[key]) != _norm(getattr(config, key)):
            raise FlowkitError(f"--resume: {path} was trained with {key}={saved[key]}, not "
                               f"{getattr(config, key)}; use the same options (or leave them out)")


def _norm(value):
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


# ----------------------------------------------------------------------------------------- training

@dataclass
class EpochResult:
    epoch: int
    step: int
    loss: float
    seconds: float
    epe: float | None = None
    epe_zero: float | None = None


def train(source: ClipSource, config: TrainConfig, out: Path | None = None, *, resume: bool = False,
          device: str = "cpu", eval_set: EvalSet | None = None,
          on_step: Callable[[int, float], None] | None = None,
          on_epoch: Callable[[EpochResult], None] | None = None):
    """Train (or continue training) a MotionNet; returns ``(model, history)``.

    ``history`` is the list of per-epoch dicts (:class:`EpochResult` fields) since the start of
    training, including epochs of a resumed run. With ``out``, a checkpoint is written after each
    epoch; with ``resume`` and an existing ``out``, training continues from it up to
    ``config.epochs``.
    """
    from ..flow.motionnet import MotionNet, unsupervised_loss

    torch.manual_seed(config.seed)
    model = MotionNet(**config.model_config()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    epoch = step = 0
    history: list[dict] = []
    if resume and out is not None and out.is_file():
        ckpt = torch.load(out, map_location=device, weights_only=True)
        _check_resumable(ckpt, config, out)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        rng.bit_generator.state = json.loads(ckpt["rng"])
        history = list(ckpt.get("history", []))
    length = config.num_frames + 1
    model.train()
    while epoch < config.epochs:
        start, total = time.perf_counter(), 0.0
        for _ in range(config.steps_per_epoch):
            clips = source.sample(rng, config.batch, length).to(device)
            loss, _parts = unsupervised_loss(clips, model(clips))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach())
            if on_step:
                on_step(step, float(loss.detach()))
        epoch += 1
        result = EpochResult(epoch, step, total / config.steps_per_epoch, time.perf_counter() - start)
        if eval_set is not None:
            metrics = evaluate_epe(model, eval_set)
            result.epe, result.epe_zero = metrics["epe"], metrics["epe_zero"]
        history.append(asdict(result))
        if out is not None:
            save_checkpoint(out, {
                "config": {**asdict(config), "size": list(config.size)},
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "step": step, "loss": result.loss,
                "rng": json.dumps(rng.bit_generator.state), "history": history,
            })
        if on_epoch:
            on_epoch(result)
    return model, history


# ----------------------------------------------------------------------------------------- command

def _resolve(out: Path, resume: bool, options: dict) -> TrainConfig:
    """Options not given come from the checkpoint when resuming, else from TrainConfig's defaults."""
    saved = {}
    if resume and out.is_file():
        try:
            saved = torch.load(out, map_location="cpu", weights_only=True).get("config", {})
        except Exception as exc:
            raise FlowkitError(f"--resume: cannot read {out} ({exc})") from None
    elif out.exists() and not resume:
        raise FlowkitError(f"{out} exists; pass --resume to continue training it, or choose "
                           f"another --out")
    defaults = asdict(TrainConfig())
    values = {k: (options[k] if options.get(k) is not None else saved.get(k, defaults[k]))
              for k in defaults}
    values["size"] = tuple(int(v) for v in values["size"])
    return TrainConfig(**values)


@click.command("motionnet")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (atomically, after every epoch).")
@click.option("--num-frames", type=int, default=None,
              help="M: flows per clip, M+1 frames in (paper: 10; MotionNet-(2) is 1). [default: 10]")
@click.option("--width", type=float, default=None,
              help="Channel multiplier (1.0 = the paper's network). [default: 1.0]")
@click.option("--size", default=None, help="HxW the frames are resized to. [default: 128x160]")
@click.option("--epochs", type=int, default=None, help="Total epochs (with --resume: up to). [default: 10]")
@click.option("--steps-per-epoch", type=int, default=None, help="Optimiser steps per epoch. [default: 100]")
@click.option("--batch", type=int, default=None, help="Clips per step. [default: 8]")
@click.option("--lr", type=float, default=None, help="Adam learning rate. [default: 1e-4]")
@click.option("--seed", type=int, default=None, help="Seed of initialisation and clip sampling. [default: 0]")
@click.option("--resume", is_flag=True, help="Continue from --out (epoch, step, optimizer, sampler).")
@click.option("--eval-samples", is_flag=True,
              help="Each epoch, report EPE against the known flow of rendered flowkit sample clips.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-epoch history as JSON on stdout.")
@handle_errors
def command(source, out, num_frames, width, size, epochs, steps_per_epoch, batch, lr, seed, resume,
            eval_samples, device, as_json):
    """Train MotionNet without ground truth on clips from SOURCE (a video folder, or a store
    extracted with --rgb); then `flowkit extract --method motionnet --weights OUT`."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    hw = parse_size(size) if size else None
    if hw is not None and not isinstance(hw, tuple):
        raise click.BadParameter("expected HxW, e.g. 128x160", param_hint="--size")
    for name, value in (("--num-frames", num_frames), ("--epochs", epochs),
                        ("--steps-per-epoch", steps_per_epoch), ("--batch", batch)):
        if value is not None and value < 1:
            raise click.BadParameter(f"must be >= 1, got {value}", param_hint=name)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FlowkitError(f"--device {device}: CUDA is not available; use --device cpu")
    config = _resolve(out, resume, dict(num_frames=num_frames, width=width, size=hw, epochs=epochs,
                                        steps_per_epoch=steps_per_epoch, batch=batch, lr=lr,
                                        seed=seed))
    console = Console(stderr=True)
    data = ClipSource.from_path(source, config.size,
                                on_warning=lambda msg: console.print(f"[yellow]{msg}[/yellow]",
                                                                     highlight=False))
    eval_set = sample_eval_set(config.num_frames, config.size) if eval_samples else None
    done_steps = 0
    if resume and out.is_file():
        done_steps = int(torch.load(out, map_location="cpu", weights_only=True)["step"])
    total = config.epochs * config.steps_per_epoch
    console.print(f"MotionNet M={config.num_frames} width={config.width} size="
                  f"{config.size[0]}x{config.size[1]} batch={config.batch} lr={config.lr} on "
                  f"{len(data.loaders)} videos from {source}"
                  + (f"; resuming at step {done_steps}" if done_steps else ""), highlight=False)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("steps", total=total, completed=min(done_steps, total), loss="-")

        def on_step(step, loss):
            bar.update(task, completed=step, loss=f"{loss:.3f}")

        def on_epoch(r: EpochResult):
            epe = (f", EPE {r.epe:.3f} px (zero flow {r.epe_zero:.3f})" if r.epe is not None else "")
            bar.console.print(f"epoch {r.epoch}/{config.epochs}: step {r.step}, loss {r.loss:.4f}"
                              f"{epe}, {r.seconds:.1f} s -> {out}", highlight=False)

        _, history = train(data, config, out, resume=resume, device=device, eval_set=eval_set,
                           on_step=on_step, on_epoch=on_epoch)
    last = history[-1] if history else {}
    console.print(f"[bold]done[/bold]: {last.get('epoch', 0)} epochs, {last.get('step', 0)} steps, "
                  f"final loss {last.get('loss', float('nan')):.4f}, "
                  f"{time.perf_counter() - started:.1f} s; use it with `flowkit extract --method "
                  f"motionnet --weights {out}`", highlight=False)
    if as_json:
        click.echo(json.dumps({"checkpoint": str(out), "config": asdict(config),
                               "history": history}, indent=2))
