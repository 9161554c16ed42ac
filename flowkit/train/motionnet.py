"""Train MotionNet without labels (``flowkit train-flow motionnet`` is a thin wrapper).

Trains :class:`flowkit.flow.motionnet.MotionNet` on random clips of M+1 consecutive frames drawn
from a folder of videos (decoded with :mod:`flowkit.video`) or from a flowkit store extracted with
RGB frames (:meth:`FlowStore.read_rgb`). No ground truth is needed: the loss is the unsupervised
photometric + SSIM + smoothness loss of :func:`~flowkit.flow.motionnet.unsupervised_loss`.

Checkpoints (kind ``"motionnet"`` of :mod:`flowkit.checkpoints`) are written atomically at the end of
every epoch: ``{"config", "state_dict", "optimizer", "epoch", "step", "loss", "rng", "dropped",
"history"}``; ``epoch`` is the number of finished epochs, ``step`` the number of optimiser steps and
``dropped`` the videos that failed to load, named relative to the source (a video folder's path
below its root, ``class/video.mp4``; a store's key), so a resume finds them however the source is
spelled (``naming`` ``"relative"``; checkpoints before it named them by the path as typed and are
matched by that path's ending). Resuming continues exactly (weights, Adam state, epoch,
step, the clip sampler's random state and the videos it left out), so 2 epochs in one go and 1 then
2 with ``resume=True`` give the same weights; it therefore takes every option from the checkpoint
but ``epochs`` (another learning rate or seed is a new run, as in classifier training). The result is used with
``flowkit extract --method motionnet --weights motionnet.pt``.
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .. import checkpoints
from ..errors import FlowkitError, VideoError
from ..progress import Progress, StopFlag
from .checkpoint import check_resumable, existing_out_error

# Decoded videos kept in memory between draws (a clip sampler revisits videos often).
VIDEO_CACHE = 16


@dataclass
class MotionNetTrainConfig:
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
    (``VIDEO_CACHE`` most recent). A video that fails to load is reported once and dropped (its
    name added to ``dropped``), so one bad file never stops training. :meth:`from_path` names the
    videos relative to the source (path below the folder, or store key), not by the path as typed.
    """

    def __init__(self, loaders: Sequence[tuple[str, Callable[[], np.ndarray]]], size: tuple[int, int],
                 on_warning: Callable[[str], None] | None = None):
        self.loaders = list(loaders)
        self.size = (int(size[0]), int(size[1]))
        self.on_warning = on_warning or (lambda msg: None)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.dropped: list[str] = []
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
            return cls([(k, lambda k=k: store.read_rgb(k)) for k in keys], size, **kw)
        from ..labels import scan_videos
        from ..video import load_frames

        items, _ = scan_videos(path)
        if not items:
            raise FlowkitError(f"{path}: no video files found (and not a flowkit store)")
        return cls([(it.path.relative_to(path).as_posix(),
                     lambda p=it.path: load_frames(p, size=size)) for it in items], size, **kw)

    @classmethod
    def from_arrays(cls, videos: Sequence[np.ndarray], **kw) -> "ClipSource":
        """In-memory videos ``(T, H, W, 3)`` uint8 of one size (tests)."""
        size = videos[0].shape[1:3]
        return cls([(f"video{i}", lambda v=v: v) for i, v in enumerate(videos)], size, **kw)

    def drop(self, names: Sequence[str], *, legacy: bool = False) -> tuple[list[str], list[str]]:
        """Leave out the videos ``names`` (those a resumed run's checkpoint says failed to load), so
        that clips are drawn from the same list as in the interrupted run. Returns ``(dropped, not
        found)``: the names of the videos left out and the given names no video has.

        ``legacy``: ``names`` come from a checkpoint that named videos by the path as typed
        (``videos/a/x.mp4``, ``/abs/videos/a/x.mp4``, ``store:a/x``); each is matched to the video
        whose name is the longest ending of it after a ``/`` or ``:``.
        """
        present = [name for name, _ in self.loaders]
        matched, missing = [], []
        for given in names:
            if given in present:
                found = given
            elif legacy:
                endings = [name for name in present if given.endswith(("/" + name, ":" + name))]
                found = max(endings, key=len) if endings else None
            else:
                found = None
            if found is None:
                missing.append(given)
            elif found not in matched:
                matched.append(found)
        self.dropped += [name for name in matched if name not in self.dropped]
        self.loaders = [(name, load) for name, load in self.loaders if name not in set(matched)]
        return matched, missing

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
                self.dropped.append(self.loaders.pop(i)[0])
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


def sample_eval_set(num_frames: int, size: tuple[int, int]) -> EvalSet:
    """Rendered (not encoded) sample clips of ``num_frames + 1`` frames and their exact flow: one
    pan per direction, seed 1000 (other photos and speeds than the sample training videos)."""
    from ..samples import render_sample, sample_specs

    specs = sample_specs(classes=("pan_left", "pan_right", "pan_up", "pan_down"),
                         videos_per_class=1, frames=num_frames + 1, size=tuple(size), seed=1000)
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

def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write a MotionNet checkpoint atomically (:func:`flowkit.checkpoints.save_checkpoint`)."""
    checkpoints.save_checkpoint(path, "motionnet", payload)


# ----------------------------------------------------------------------------------------- training

@dataclass
class EpochResult:
    epoch: int
    step: int
    loss: float
    seconds: float
    epe: float | None = None
    epe_zero: float | None = None


def train(source: ClipSource, config: MotionNetTrainConfig, out: Path | None = None, *,
          resume: bool = False, device: str = "cpu", eval_set: EvalSet | None = None,
          progress: Progress | None = None, stop: StopFlag | None = None):
    """Train (or continue training) a MotionNet; returns ``(model, history)``.

    ``history`` is the list of per-epoch dicts (:class:`EpochResult` fields) since the start of
    training, including epochs of a resumed run. With ``out``, a checkpoint is written after each
    epoch; with ``resume`` and an existing ``out``, training continues from it up to
    ``config.epochs``. ``progress`` gets a task of optimiser steps (with the loss) and a line per
    epoch; ``stop`` is polled after each epoch (its checkpoint is kept).
    """
    from ..flow.motionnet import MotionNet, unsupervised_loss

    torch.manual_seed(config.seed)
    model = MotionNet(**config.model_config()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    epoch = step = 0
    history: list[dict] = []
    progress = progress or Progress()
    if resume and out is not None and out.is_file():
        ckpt = checkpoints.load_checkpoint(out, "motionnet", what="--resume checkpoint",
                                           map_location=device)
        check_resumable(out, ckpt.get("config", {}), asdict(config))
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        rng.bit_generator.state = json.loads(ckpt["rng"])
        history = list(ckpt.get("history", []))
        if ckpt.get("dropped"):
            dropped, missing = source.drop(ckpt["dropped"], legacy=ckpt.get("naming") != "relative")
            if dropped:
                progress.log(f"leaving out {len(dropped)} videos that failed to load before: "
                             + ", ".join(dropped))
            if missing:
                progress.log(f"{len(missing)} videos that failed to load before are not in the "
                             "source any more: " + ", ".join(missing))
    length = config.num_frames + 1
    model.train()
    task = progress.start("steps", total=config.epochs * config.steps_per_epoch,
                          completed=min(step, config.epochs * config.steps_per_epoch))
    while epoch < config.epochs:
        start, total = time.perf_counter(), 0.0
        for _ in range(config.steps_per_epoch):
            clips = source.sample(rng, config.batch, length).to(device)
            loss = unsupervised_loss(clips, model(clips))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach())
            task.advance(1, loss=float(loss.detach()))
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
                "rng": json.dumps(rng.bit_generator.state), "dropped": list(source.dropped),
                "naming": "relative", "history": history,
            })
        epe = (f", EPE {result.epe:.3f} px (zero flow {result.epe_zero:.3f})"
               if result.epe is not None else "")
        progress.log(f"epoch {result.epoch}/{config.epochs}: step {result.step}, loss "
                     f"{result.loss:.4f}{epe}, {result.seconds:.1f} s"
                     + (f" -> {out}" if out is not None else ""))
        if stop is not None and stop.is_set() and epoch < config.epochs:
            progress.log(f"stopped after epoch {epoch}; continue with --resume")
            break
    task.close()
    return model, history


def resolve_config(out: Path, resume: bool, options: dict) -> MotionNetTrainConfig:
    """Options not given (None) come from the checkpoint at ``out`` when resuming, else from
    :class:`MotionNetTrainConfig`'s defaults; FlowkitError when ``out`` exists without ``resume``."""
    saved = {}
    if resume and out.is_file():
        saved = checkpoints.load_checkpoint(out, "motionnet", what="--resume checkpoint"
                                            ).get("config", {})
    elif out.exists() and not resume:
        raise existing_out_error(out)
    defaults = asdict(MotionNetTrainConfig())
    values = {k: (options[k] if options.get(k) is not None else saved.get(k, defaults[k]))
              for k in defaults}
    values["size"] = tuple(int(v) for v in values["size"])
    return MotionNetTrainConfig(**values)


def finished_steps(out: Path) -> int:
    """Optimiser steps done by the checkpoint at ``out`` (0 when there is none)."""
    if not out.is_file():
        return 0
    return int(checkpoints.load_checkpoint(out, "motionnet", what="--resume checkpoint")["step"])


__all__ = ["MotionNetTrainConfig", "ClipSource", "EvalSet", "sample_eval_set", "evaluate_epe",
           "save_checkpoint", "EpochResult", "train", "resolve_config", "finished_steps"]
