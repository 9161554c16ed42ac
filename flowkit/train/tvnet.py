"""Train TVNet's relaxed TV-L1 kernels (``flowkit train-flow tvnet`` is a thin wrapper).

Supervised on ground-truth pairs (EPE loss): ``data="synthetic"`` (:func:`flowkit.bench.synthetic_pairs`)
or a folder with ``layout="middlebury"|"sintel"`` (:func:`flowkit.bench.load_flow_folder`); or
unsupervised (TVNet's flow loss L_f, :func:`flowkit.flow.tvnet.flow_loss`), on consecutive frames of
the videos under a folder (an even share of the pairs from each; an unreadable one is skipped), or
on any of the sources above, ignoring their ground truth for the loss but still reporting EPE::

    samples = load_samples("synthetic", None, unsupervised=False, pairs=64, size=(64, 80), seed=0)
    history = fit(TVNetTrainConfig(epochs=10), samples, "tvnet.pt")   # resumable: resume=True

The checkpoint (kind ``"tvnet"`` of :mod:`flowkit.checkpoints`) holds ``config`` (the architecture,
:class:`~flowkit.flow.tvnet.TVNetConfig`), ``state_dict``, ``epoch``, ``optimizer``, ``val_epe``,
``val_loss``, ``history`` and ``args`` (the training options; a data folder by its absolute path,
:func:`recorded_data`), rewritten atomically after every epoch. ``flowkit extract --method tvnet
--weights CKPT`` uses it.

Resuming continues exactly (weights, Adam state, epoch; the split and each epoch's shuffle are
functions of the seed) and so takes every option from the checkpoint: only ``epochs``
(:data:`RESUMABLE_CHANGES`) may differ, as in classifier training (:mod:`flowkit.train.config`);
another learning rate, batch, seed, validation share or data is a new run (a new ``--out``). The
data folder may be typed otherwise, or given from another directory (:func:`same_data`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import checkpoints
from ..errors import FlowkitError, VideoError
from ..flow import ops
from ..flow.tvnet import TVNet, TVNetConfig, epe_loss, flow_loss, load_checkpoint
from ..progress import Progress, StopFlag, Task
from .checkpoint import check_resumable, existing_out_error


@dataclass
class Sample:
    """One training pair: gray frames ``(1, H, W)`` in [0, 255]; flow ``(2, H, W)`` and valid
    ``(H, W)`` bool when ground truth is known, else None; ``video`` the file a pair of
    consecutive video frames came from (pairs of one video share frames, so :func:`split` keeps
    them apart), else None."""

    i0: torch.Tensor
    i1: torch.Tensor
    flow: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    video: str | None = None


def _gray(rgb: np.ndarray) -> torch.Tensor:
    return ops.to_gray(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])[0]


def samples_from_pairs(pairs) -> list[Sample]:
    """:class:`flowkit.bench.FlowPair` list -> samples (RGB converted to luma like the engines)."""
    return [Sample(_gray(p.frame0), _gray(p.frame1), torch.from_numpy(p.flow).float(),
                   torch.from_numpy(p.valid)) for p in pairs]


def samples_from_videos(root: Path, size, max_pairs: int, seed: int = 0, *,
                        log: Callable[[str], None] | None = None,
                        on_warning: Callable[[str], None] | None = None) -> list[Sample]:
    """Consecutive frame pairs of the videos under ``root``, at most ``max_pairs``, spread evenly
    over the videos (each gives the pairs of its first frames; when there are more videos than
    pairs, ``seed`` draws which ones), in video name order.

    A video that cannot be read is skipped with a line to ``on_warning`` (one bad file never stops
    a run); ``log`` gets one line saying how many videos of how many found gave pairs.
    """
    from ..labels import scan_videos

    items, _ = scan_videos(root)
    if not items:
        raise FlowkitError(f"{root}: no video files found (looked for .mp4, .avi, .mkv, ...)")
    warn = on_warning or (lambda msg: None)
    pairs: dict[int, list[Sample]] = {}
    done: set[int] = set()  # read to their end, or unreadable
    # Which videos share the pairs when there are more videos than pairs: a seeded draw, not the
    # first ones by name (often all of one class).
    order = np.random.default_rng([seed, 4099]).permutation(len(items)).tolist()
    while True:
        # Each pass hands what is missing to the videos not yet read to their end, those with the
        # fewest pairs first (a short or unreadable video's unused share goes to the others on the
        # next pass), until enough or all are read.
        todo = sorted((i for i in order if i not in done), key=lambda i: len(pairs.get(i, [])))
        missing = max_pairs - sum(len(p) for p in pairs.values())
        if missing <= 0 or not todo:
            break
        for i, share in zip(todo, _shares(missing, len(todo))):
            if share == 0:
                continue
            want = len(pairs.get(i, [])) + share
            try:
                pairs[i] = _video_pairs(items[i].path, size, want)
            except (VideoError, FlowkitError, OSError) as exc:
                name = items[i].path.relative_to(root).as_posix()
                warn(f"skipping {name}: {exc}")
                pairs.pop(i, None)
                done.add(i)
                continue
            if len(pairs[i]) < want:
                done.add(i)
    samples = [s for i in range(len(items)) for s in pairs.get(i, [])]
    if not samples:
        unreadable = len(done - set(pairs))
        raise FlowkitError(f"{root}: the videos hold no pair of consecutive frames"
                           + (f" ({unreadable} of {len(items)} unreadable, see above)"
                              if unreadable else ""))
    used = sum(1 for p in pairs.values() if p)
    if log is not None:
        log(f"{root}: {len(samples)} pairs from {used} of {len(items)} videos"
            + (f" (--pairs {max_pairs}, shared evenly)" if len(samples) >= max_pairs else ""))
    return samples


def _shares(total: int, n: int) -> list[int]:
    """``total`` split over ``n`` as evenly as integers allow, the first ones one more."""
    return [total // n + (i < total % n) for i in range(n)]


def _video_pairs(path: Path, size, count: int) -> list[Sample]:
    """The first ``count`` consecutive frame pairs of the video at ``path`` (fewer if shorter)."""
    from ..video import iter_frames

    samples, previous = [], None
    for frame in iter_frames(path, size=size, max_frames=count + 1, threads=1):
        current = _gray(frame)
        if previous is not None:
            samples.append(Sample(previous, current, video=str(path)))
        previous = current
    return samples


def load_samples(data: str, layout: str | None, unsupervised: bool, pairs: int,
                 size: tuple[int, int] | int | None, seed: int, *,
                 log: Callable[[str], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> list[Sample]:
    """The training pairs a command line asks for (see the module docstring); ``log`` and
    ``on_warning``: see :func:`samples_from_videos`."""
    from ..bench import load_flow_folder, synthetic_pairs

    if data == "synthetic":
        if size is None:
            size = (64, 80)
        if not isinstance(size, tuple):
            raise FlowkitError("--size for synthetic data must be HxW (e.g. 64x80)")
        return samples_from_pairs(synthetic_pairs(pairs, size=size, seed=seed))
    root = Path(data)
    if not root.is_dir():
        raise FlowkitError(f"--data {data}: not 'synthetic' and not a folder")
    if layout:
        if size is not None:
            raise FlowkitError(f"--size: the pairs of a ground-truth folder (--layout {layout}) are "
                               "used at their own size (resizing would change their flow); leave "
                               "--size out")
        return samples_from_pairs(load_flow_folder(root, layout)[:pairs])
    if not unsupervised:
        raise FlowkitError(f"--data {data}: pass --layout middlebury|sintel for a ground-truth "
                           "folder, or --unsupervised to train on the videos in it")
    return samples_from_videos(root, size, pairs, seed, log=log, on_warning=on_warning)


def split(n: int, val_fraction: float, seed: int, videos: list[str | None] | None = None
          ) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) split of ``n`` sample indices; validation asks for
    ``round(n * fraction)`` of them (at least one when the fraction is positive and n > 1).

    Independent pairs (``videos`` None or all None) are drawn at random, exactly that many.
    Consecutive pairs of videos (``videos[i]`` the file of sample i) share frames, so a pair on
    each side would score memory: with two videos or more, whole videos go to validation, drawn at
    random, each taken only if it brings the count closer to the one asked (the smallest video
    when none does; one video always stays for training); from a single video, validation is its
    last pairs and the training pair that shares a frame with them is left out (from 3 pairs on,
    so at most ``n - 2`` validate; of 2 pairs, one is each side).
    """
    n_val = 0 if val_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    if videos is None or all(v is None for v in videos):
        order = np.random.default_rng([seed, 7919]).permutation(n).tolist()
        return sorted(order[n_val:]), sorted(order[:n_val])
    members: dict[str | None, list[int]] = {}
    for i, video in enumerate(videos):
        members.setdefault(video, []).append(i)
    if n_val == 0:
        return list(range(n)), []
    if len(members) == 1:  # one video: a block at its end, one pair apart from training
        if n < 3:
            return [0], [1]
        n_val = min(n_val, n - 2)
        return list(range(n - n_val - 1)), list(range(n - n_val, n))
    names = sorted(members, key=str)
    order = [names[j] for j in np.random.default_rng([seed, 7919]).permutation(len(names))]
    val_names: list = []
    taken = 0
    for name in order:
        size = len(members[name])
        if abs(taken + size - n_val) < abs(taken - n_val) and size < n - taken:
            val_names.append(name)
            taken += size
    if not val_names:  # every video overshoots: the smallest one
        val_names = [min(order, key=lambda name: (len(members[name]), order.index(name)))]
    val = sorted(i for name in val_names for i in members[name])
    held = set(val)
    return [i for i in range(n) if i not in held], val


def batches(samples: list[Sample], indices: list[int], batch: int, rng: np.random.Generator | None
            ) -> list[list[int]]:
    """Batches of indices with one frame size each (shuffled when ``rng`` is given)."""
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault(tuple(samples[i].i0.shape), []).append(i)
    out = []
    for members in groups.values():
        if rng is not None:
            members = [members[j] for j in rng.permutation(len(members))]
        out += [members[k:k + batch] for k in range(0, len(members), batch)]
    if rng is not None:
        out = [out[j] for j in rng.permutation(len(out))]
    return out


def _stack(samples: list[Sample], idx: list[int], device) -> tuple:
    i0 = torch.stack([samples[i].i0 for i in idx]).to(device)
    i1 = torch.stack([samples[i].i1 for i in idx]).to(device)
    if samples[idx[0]].flow is None:
        return i0, i1, None, None
    gt = torch.stack([samples[i].flow for i in idx]).to(device)
    valid = torch.stack([samples[i].valid for i in idx]).to(device)
    return i0, i1, gt, valid


def _loss(net: TVNet, flow, i0, i1, gt, valid, unsupervised: bool) -> torch.Tensor:
    if unsupervised:
        return flow_loss(i0, i1, flow, net.config.lambda_)
    return epe_loss(flow, gt, valid)


def _epe_sums(flow, gt, valid) -> tuple[float, int]:
    epe = torch.linalg.vector_norm(flow.detach() - gt, dim=1)
    return float(epe[valid].sum()), int(valid.sum())


def train_epoch(net: TVNet, optimizer, samples: list[Sample], indices: list[int], batch: int,
                rng: np.random.Generator, unsupervised: bool = False, device="cpu",
                clip: float | None = 1.0, task: Task | None = None) -> dict:
    """One pass over ``indices``; returns ``{"loss": mean batch loss, "epe": pixel mean or None}``.

    ``task`` (a :class:`~flowkit.progress.Task`) advances after every optimiser step, with the loss
    and the running EPE.
    """
    net.train()
    losses, epe_sum, epe_n = [], 0.0, 0
    for idx in batches(samples, indices, batch, rng):
        i0, i1, gt, valid = _stack(samples, idx, device)
        if gt is None and not unsupervised:
            raise FlowkitError("supervised training needs ground-truth flow; use --unsupervised")
        flow = net(i0, i1, check=False)  # [0, 255] samples; a dark pair must not stop training
        loss = _loss(net, flow, i0, i1, gt, valid, unsupervised)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        if gt is not None:
            s, n = _epe_sums(flow, gt, valid)
            epe_sum, epe_n = epe_sum + s, epe_n + n
        if task is not None:
            task.advance(1, loss=losses[-1], epe=epe_sum / epe_n if epe_n else "-")
    return {"loss": float(np.mean(losses)) if losses else float("nan"),
            "epe": epe_sum / epe_n if epe_n else None}


@torch.no_grad()
def evaluate(net: TVNet, samples: list[Sample], indices: list[int], batch: int,
             unsupervised: bool = False, device="cpu") -> dict:
    """Mean loss and pixel-weighted EPE (None without ground truth) over ``indices``, whatever
    ``batch``: each batch's loss is weighted as it averages (supervised: its valid pixels, as
    :func:`~flowkit.flow.tvnet.epe_loss` does; unsupervised: its pairs, all of one size)."""
    net.eval()
    loss_sum, count, epe_sum, epe_n = 0.0, 0, 0.0, 0
    for idx in batches(samples, indices, batch, None):
        i0, i1, gt, valid = _stack(samples, idx, device)
        flow = net(i0, i1, check=False)
        if unsupervised or gt is not None:
            weight = len(idx) if unsupervised else int(valid.sum())
            loss_sum += float(_loss(net, flow, i0, i1, gt, valid, unsupervised)) * weight
            count += weight
        if gt is not None:
            s, n = _epe_sums(flow, gt, valid)
            epe_sum, epe_n = epe_sum + s, epe_n + n
    return {"loss": loss_sum / count if count else None, "epe": epe_sum / epe_n if epe_n else None}


#: Training options a resumed run may change; any other must equal the checkpoint's.
RESUMABLE_CHANGES = frozenset({"epochs"})


def saved_options(path: str | os.PathLike) -> dict:
    """The options the TVNet checkpoint at ``path`` was trained with: its ``args`` (data and
    training options) plus its architecture's ``scales``, ``warps`` and ``iterations``."""
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    return {**ckpt.get("args", {}), **{k: config[k] for k in ("scales", "warps", "iterations")
                                       if k in config}}


def recorded_data(data: str | os.PathLike) -> str:
    """``--data`` as a checkpoint records it: "synthetic" as is, a folder by its absolute path (so
    that a resume from another directory, or with the folder typed otherwise, finds it)."""
    return "synthetic" if str(data) == "synthetic" else str(Path(data).resolve())


def same_data(saved: str | None, given: str | None) -> bool:
    """Whether ``--data given`` names the data a checkpoint recorded as ``saved``: the same folder,
    however typed. Older checkpoints recorded a folder as typed: a relative one matches the folder
    it names from the current directory, or (its directory was not recorded) any folder whose path
    ends with it."""
    if saved == given:
        return True
    if saved is None or given is None or "synthetic" in (saved, given):
        return False
    here = Path(given).resolve()
    if Path(saved).resolve() == here:  # absolute, or relative to the current directory
        return True
    if Path(saved).is_absolute():
        return False
    tail = Path(os.path.normpath(saved)).parts
    return ".." not in tail and here.parts[-len(tail):] == tail


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write a TVNet checkpoint atomically (:func:`flowkit.checkpoints.save_checkpoint`)."""
    checkpoints.save_checkpoint(path, "tvnet", checkpoint)


@dataclass
class TVNetTrainConfig:
    """A TVNet training run: the ``architecture`` (default: the paper's TVNet-50, 1 scale, 1 warp,
    50 iterations) and the optimisation."""
    architecture: TVNetConfig = field(
        default_factory=lambda: TVNetConfig(scales=1, warps=1, iterations=50))
    epochs: int = 10
    batch: int = 4
    lr: float = 5e-3
    clip: float = 1.0
    val_fraction: float = 0.2
    seed: int = 0
    unsupervised: bool = False


def fit(config: TVNetTrainConfig, samples: list[Sample], out: str | os.PathLike, *,
        resume: bool = False, device="cpu", args: dict | None = None,
        progress: Progress | None = None, stop: StopFlag | None = None) -> list[dict]:
    """Train (or, with ``resume`` and a checkpoint at ``out``, continue training) a TVNet up to
    ``config.epochs``; returns the per-epoch history (``epoch``, ``train_loss``, ``train_epe``,
    ``val_loss``, ``val_epe``), resumed epochs included.

    ``progress`` gets one task of optimiser steps and a line per epoch; ``stop`` is polled after
    each epoch (the checkpoint of the last finished epoch is kept). ``args`` (the data options) are
    recorded in the checkpoint. Resuming with options other than the checkpoint's (but
    ``epochs``), or writing over an existing ``out`` without ``resume``, raises FlowkitError.
    """
    progress = progress or Progress()
    out = Path(out)
    run_args = {**(args or {}), **{k: v for k, v in asdict(config).items() if k != "architecture"}}
    torch.manual_seed(config.seed)
    arch = config.architecture
    net = TVNet(**asdict(arch)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    start, history = 0, []
    if resume and out.is_file():
        ckpt = load_checkpoint(out, map_location=device)
        if ckpt["config"] != asdict(arch):
            raise FlowkitError(f"--resume: {out} was trained with {ckpt['config']}, not "
                               f"{asdict(arch)}; pass the same --scales/--warps/--iterations "
                               "or a new --out")
        saved_args = dict(ckpt.get("args", {}))
        if "data" in saved_args and same_data(saved_args["data"], run_args.get("data")):
            saved_args["data"] = run_args["data"]  # one folder, however typed
        check_resumable(out, saved_args, run_args, changeable=RESUMABLE_CHANGES,
                        new_out="pass a new --out")
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        progress.log(f"resuming {out} from epoch {start}")
    elif resume:
        progress.log(f"no checkpoint at {out} yet; starting from scratch")
    elif out.exists():
        raise existing_out_error(out)
    train_idx, val_idx = split(len(samples), config.val_fraction, config.seed,
                               [sample.video for sample in samples])
    has_gt = samples[0].flow is not None
    progress.log(f"TVNet-{arch.scales}-{arch.warps}-{arch.iterations}: {len(train_idx)} training "
                 f"/ {len(val_idx)} validation pairs{_videos(samples, train_idx, val_idx)}, "
                 f"{'L_f' if config.unsupervised else 'EPE'} loss")
    steps = len(batches(samples, train_idx, config.batch, None))
    task = progress.start("training", total=steps * max(config.epochs - start, 0))
    for epoch in range(start + 1, config.epochs + 1):
        task.update(description=f"epoch {epoch}/{config.epochs}")
        train = train_epoch(net, optimizer, samples, train_idx, config.batch,
                            np.random.default_rng([config.seed, epoch]), config.unsupervised,
                            device, config.clip, task=task)
        val = (evaluate(net, samples, val_idx, config.batch, config.unsupervised, device)
               if val_idx else {"loss": None, "epe": None})
        history.append({"epoch": epoch, "train_loss": train["loss"], "train_epe": train["epe"],
                        "val_loss": val["loss"], "val_epe": val["epe"]})
        save_checkpoint(out, {
            "config": asdict(arch), "state_dict": net.state_dict(), "epoch": epoch,
            "optimizer": optimizer.state_dict(), "val_epe": val["epe"], "val_loss": val["loss"],
            "history": history, "args": run_args})
        progress.log(f"epoch {epoch}/{config.epochs}: train loss {_fmt(train['loss'])}, train EPE "
                     f"{_fmt(train['epe'])}, val loss {_fmt(val['loss'])}, val EPE "
                     f"{_fmt(val['epe'] if has_gt else None)} -> {out}")
        if stop is not None and stop.is_set() and epoch < config.epochs:
            progress.log(f"stopped after epoch {epoch}; continue with --resume")
            break
    task.close()
    if start >= config.epochs:
        progress.log(f"{out} is already trained for {start} epochs (--epochs {config.epochs}); "
                     "nothing to do")
    return history


def _videos(samples: list[Sample], train_idx: list[int], val_idx: list[int]) -> str:
    """" (from T / V videos)" for pairs read from videos, else ""."""
    if samples[0].video is None:
        return ""
    count = [len({samples[i].video for i in idx}) for idx in (train_idx, val_idx)]
    return f" (from {count[0]} / {count[1]} videos)"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


__all__ = ["Sample", "samples_from_pairs", "samples_from_videos", "load_samples", "split",
           "batches", "train_epoch", "evaluate", "save_checkpoint", "saved_options",
           "recorded_data", "same_data", "RESUMABLE_CHANGES", "TVNetTrainConfig", "fit"]
