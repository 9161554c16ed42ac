"""``flowkit train-flow tvnet``: train TVNet's relaxed TV-L1 kernels.

Supervised on ground-truth pairs (EPE loss): ``--data synthetic`` (:func:`flowkit.bench.synthetic_pairs`)
or ``--data PATH --layout middlebury|sintel`` (:func:`flowkit.bench.load_flow_folder`); or
unsupervised (TVNet's flow loss L_f, :func:`flowkit.flow.tvnet.flow_loss`) with ``--unsupervised``,
on consecutive frames of the videos under ``--data VIDEO_DIR`` (or on any of the sources above,
ignoring their ground truth for the loss but still reporting EPE).

The checkpoint is ``{"format", "config", "state_dict", "epoch", "optimizer", "val_epe", "val_loss",
"history", "args"}``, rewritten atomically (temporary file + ``os.replace``) after every epoch;
``--resume`` continues from it up to ``--epochs``. ``flowkit extract --method tvnet --weights CKPT``
uses it.

The training functions (:func:`load_samples`, :func:`split`, :func:`train_epoch`, :func:`evaluate`,
:func:`save_checkpoint`) are importable; ``benchmarks/tvnet_table1.py`` uses them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ..errors import FlowkitError
from ..flow import ops
from ..train.checkpoint import atomic_write_bytes
from ..flow.tvnet import CHECKPOINT_FORMAT, TVNet, TVNetConfig, epe_loss, flow_loss, load_checkpoint
from . import handle_errors
from .options import parse_size


@dataclass
class Sample:
    """One training pair: gray frames ``(1, H, W)`` in [0, 255]; flow ``(2, H, W)`` and valid
    ``(H, W)`` bool when ground truth is known, else None."""

    i0: torch.Tensor
    i1: torch.Tensor
    flow: torch.Tensor | None = None
    valid: torch.Tensor | None = None


def _gray(rgb: np.ndarray) -> torch.Tensor:
    return ops.to_gray(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])[0]


def samples_from_pairs(pairs) -> list[Sample]:
    """:class:`flowkit.bench.FlowPair` list -> samples (RGB converted to luma like the engines)."""
    return [Sample(_gray(p.frame0), _gray(p.frame1), torch.from_numpy(p.flow).float(),
                   torch.from_numpy(p.valid)) for p in pairs]


def samples_from_videos(root: Path, size, max_pairs: int) -> list[Sample]:
    """Consecutive frame pairs of the videos under ``root`` (sorted), at most ``max_pairs``."""
    from ..labels import scan_videos
    from ..video import iter_frames

    items, _ = scan_videos(root)
    if not items:
        raise FlowkitError(f"{root}: no video files found (looked for .mp4, .avi, .mkv, ...)")
    samples: list[Sample] = []
    for item in items:
        previous = None
        for frame in iter_frames(item.path, size=size, max_frames=max_pairs - len(samples) + 1,
                                 threads=1):
            current = _gray(frame)
            if previous is not None:
                samples.append(Sample(previous, current))
            previous = current
        if len(samples) >= max_pairs:
            break
    if not samples:
        raise FlowkitError(f"{root}: the videos hold no pair of consecutive frames")
    return samples


def load_samples(data: str, layout: str | None, unsupervised: bool, pairs: int,
                 size: tuple[int, int] | int | None, seed: int) -> list[Sample]:
    """The training pairs a command line asks for (see the module docstring)."""
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
        return samples_from_pairs(load_flow_folder(root, layout)[:pairs])
    if not unsupervised:
        raise FlowkitError(f"--data {data}: pass --layout middlebury|sintel for a ground-truth "
                           "folder, or --unsupervised to train on the videos in it")
    return samples_from_videos(root, size, pairs)


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) index split; validation gets ``round(n * fraction)``
    items (at least one when the fraction is positive and n > 1)."""
    order = np.random.default_rng([seed, 7919]).permutation(n).tolist()
    n_val = 0 if val_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


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
                clip: float | None = 1.0, on_step=None) -> dict:
    """One pass over ``indices``; returns ``{"loss": mean batch loss, "epe": pixel mean or None}``.

    ``on_step(loss, epe)`` is called after every optimiser step (for progress display).
    """
    net.train()
    losses, epe_sum, epe_n = [], 0.0, 0
    for idx in batches(samples, indices, batch, rng):
        i0, i1, gt, valid = _stack(samples, idx, device)
        if gt is None and not unsupervised:
            raise FlowkitError("supervised training needs ground-truth flow; use --unsupervised")
        flow = net(i0, i1)
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
        if on_step:
            on_step(losses[-1], epe_sum / epe_n if epe_n else None)
    return {"loss": float(np.mean(losses)) if losses else float("nan"),
            "epe": epe_sum / epe_n if epe_n else None}


@torch.no_grad()
def evaluate(net: TVNet, samples: list[Sample], indices: list[int], batch: int,
             unsupervised: bool = False, device="cpu") -> dict:
    """Mean loss and pixel-weighted EPE (None without ground truth) over ``indices``."""
    net.eval()
    loss_sum, count, epe_sum, epe_n = 0.0, 0, 0.0, 0
    for idx in batches(samples, indices, batch, None):
        i0, i1, gt, valid = _stack(samples, idx, device)
        flow = net(i0, i1)
        if unsupervised or gt is not None:
            loss_sum += float(_loss(net, flow, i0, i1, gt, valid, unsupervised)) * len(idx)
            count += len(idx)
        if gt is not None:
            s, n = _epe_sums(flow, gt, valid)
            epe_sum, epe_n = epe_sum + s, epe_n + n
    return {"loss": loss_sum / count if count else None, "epe": epe_sum / epe_n if epe_n else None}


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write ``checkpoint`` atomically: a temporary file in the same folder, fsync, then rename."""
    atomic_write_bytes(Path(path), lambda f: torch.save(checkpoint, f))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


@click.command("tvnet")
@click.option("--data", default="synthetic", show_default=True,
              help="'synthetic', a ground-truth folder (with --layout), or a video folder "
                   "(with --unsupervised).")
@click.option("--layout", type=click.Choice(["middlebury", "sintel"]), default=None,
              help="Layout of a ground-truth folder given as --data.")
@click.option("--unsupervised", is_flag=True,
              help="Train on TVNet's flow loss L_f instead of EPE (needs no ground truth).")
@click.option("--pairs", type=click.IntRange(min=1), default=64, show_default=True,
              help="Synthetic pairs to generate / most pairs to read from a folder.")
@click.option("--size", default=None,
              help="HxW of synthetic pairs (default 64x80); SHORT_SIDE or HxW resize of video frames.")
@click.option("--scales", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--warps", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Iterations per warp (the defaults give the paper's TVNet-50).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Total epochs (with --resume: train until this many are done).")
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--lr", type=float, default=5e-3, show_default=True, help="Adam learning rate.")
@click.option("--clip", type=float, default=1.0, show_default=True,
              help="Gradient-norm clipping (0: none).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 0.9), default=0.2, show_default=True,
              help="Share of the pairs held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the synthetic pairs, the split and the shuffling.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (rewritten atomically after every epoch).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint at --out if there is one.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@handle_errors
def command(data, layout, unsupervised, pairs, size, scales, warps, iterations, epochs, batch, lr,
            clip, val_fraction, seed, out, resume, device, as_json):
    """Train TVNet (default TVNet-50: 1 scale, 1 warp, 50 iterations) and write checkpoint --out."""
    console = Console(stderr=True)
    torch.manual_seed(seed)
    config = TVNetConfig(scales=scales, warps=warps, iterations=iterations)
    net = TVNet(**asdict(config)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    start, history = 0, []
    if resume and out.is_file():
        ckpt = load_checkpoint(out, map_location=device)
        if ckpt["config"] != asdict(config):
            raise FlowkitError(f"--resume: {out} was trained with {ckpt['config']}, not "
                               f"{asdict(config)}; pass the same --scales/--warps/--iterations "
                               "or a new --out")
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        console.print(f"resuming {out} from epoch {start}", highlight=False)
    elif resume:
        console.print(f"no checkpoint at {out} yet; starting from scratch", highlight=False)

    samples = load_samples(data, layout, unsupervised, pairs, parse_size(size), seed)
    train_idx, val_idx = split(len(samples), val_fraction, seed)
    has_gt = samples[0].flow is not None
    console.print(f"TVNet-{scales}-{warps}-{iterations}: {len(train_idx)} training / {len(val_idx)} "
                  f"validation pairs, {'L_f' if unsupervised else 'EPE'} loss", highlight=False)
    steps = len(batches(samples, train_idx, batch, None))
    summary = {"out": str(out), "epochs": history}
    result = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}  EPE {task.fields[epe]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("training", total=steps * max(epochs - start, 0), loss="-", epe="-")
        for epoch in range(start + 1, epochs + 1):
            bar.update(task, description=f"epoch {epoch}/{epochs}")
            step = lambda loss, epe: bar.update(task, advance=1, loss=_fmt(loss), epe=_fmt(epe))
            train = train_epoch(net, optimizer, samples, train_idx, batch,
                                np.random.default_rng([seed, epoch]), unsupervised, device, clip,
                                on_step=step)
            val = evaluate(net, samples, val_idx, batch, unsupervised, device) if val_idx else {
                "loss": None, "epe": None}
            result = {"epoch": epoch, "train_loss": train["loss"], "train_epe": train["epe"],
                      "val_loss": val["loss"], "val_epe": val["epe"]}
            history.append(result)
            save_checkpoint(out, {
                "format": CHECKPOINT_FORMAT, "config": asdict(config),
                "state_dict": net.state_dict(), "epoch": epoch, "optimizer": optimizer.state_dict(),
                "val_epe": val["epe"], "val_loss": val["loss"], "history": history,
                "args": {"data": str(data), "layout": layout, "unsupervised": unsupervised,
                         "pairs": pairs, "size": size, "seed": seed, "batch": batch, "lr": lr,
                         "clip": clip, "val_fraction": val_fraction}})
            bar.console.print(f"epoch {epoch}/{epochs}: train loss {_fmt(train['loss'])}, train EPE "
                              f"{_fmt(train['epe'])}, val loss {_fmt(val['loss'])}, val EPE "
                              f"{_fmt(val['epe'] if has_gt else None)} -> {out}", highlight=False)
    if result is None:
        console.print(f"{out} is already trained for {start} epochs (--epochs {epochs}); nothing to do",
                      highlight=False)
    summary["epochs"] = history
    if as_json:
        click.echo(json.dumps(summary))
