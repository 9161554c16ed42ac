"""``flowkit train STORE --model NAME --out RUN_DIR``: train a video classifier on a flowkit store.

A thin wrapper over :class:`flowkit.train.Trainer`: parses options into a
:class:`~flowkit.train.TrainConfig`, shows a rich progress bar, turns Ctrl-C into a clean stop
(the state after the last finished step is saved; exit code 130) and prints a summary (``--json``:
machine-readable on stdout). ``--resume`` continues RUN_DIR exactly where it stopped; options given
with it must match the run's config.json, except those that may change (``--epochs``,
``--workers``, ``--device``, ``--amp``, ``--checkpoint-every``, STORE).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import click
from click.core import ParameterSource

from ..train.config import OPTIMIZERS, SCHEDULES, TrainConfig
from . import EXIT_INTERRUPTED, handle_errors, summary
from .options import parse_params

_D = TrainConfig(store="", model="")  # the defaults, shown in --help


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}",
                                 param_hint=option) from None


def _absolute(path: Path | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


# click parameter name -> TrainConfig field, and how to convert the value
_FIELDS = {
    "model": ("model", lambda v: v),
    "model_args": ("model_kwargs", lambda v: parse_params(v)),
    "frames": ("frames", lambda v: v), "step": ("step", lambda v: v),
    "segments": ("segments", lambda v: v), "size": ("size", lambda v: v),
    "scales": ("scales", lambda v: _floats(v, "--scales")), "flip": ("flip", lambda v: v),
    "batch_size": ("batch_size", lambda v: v), "epochs": ("epochs", lambda v: v),
    "optimizer": ("optimizer", lambda v: v), "lr": ("lr", lambda v: v),
    "momentum": ("momentum", lambda v: v), "weight_decay": ("weight_decay", lambda v: v),
    "schedule": ("schedule", lambda v: v), "warmup_epochs": ("warmup_epochs", lambda v: v),
    "milestones": ("milestones", lambda v: tuple(int(m) for m in _floats(v or "", "--milestones"))),
    "gamma": ("gamma", lambda v: v), "clip_grad": ("clip_grad", lambda v: v),
    "amp": ("amp", lambda v: v), "seed": ("seed", lambda v: v), "workers": ("workers", lambda v: v),
    "device": ("device", lambda v: v), "flow_name": ("flow_name", lambda v: v),
    "val_fraction": ("val_fraction", lambda v: v),
    "split_list": ("split_list", _absolute), "val_list": ("val_list", _absolute),
    "init": ("init", _absolute), "checkpoint_every": ("checkpoint_every", lambda v: v),
}


def _config_values(ctx: click.Context, params: dict, explicit_only: bool) -> dict:
    values = {}
    for name, (field, convert) in _FIELDS.items():
        if explicit_only and ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        values[field] = convert(params[name])
    return values


class _StopFlag:
    """First Ctrl-C: finish the current step, save, exit 130. Second: stop at once (the last
    checkpoint stays)."""

    def __init__(self, console):
        self.console, self.event = console, threading.Event()
        self.pid = os.getpid()

    def __call__(self) -> bool:
        return self.event.is_set()

    def handler(self, signum, frame):
        if os.getpid() != self.pid:  # a forked DataLoader worker: the main process decides
            return
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.console.print("stopping after the current step and saving it (Ctrl-C again to stop "
                           "now)", highlight=False)


@contextlib.contextmanager
def _sigint(stop: _StopFlag):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, stop.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _RichCallbacks:
    """Progress of ``flowkit train``: one bar of optimiser steps per epoch with loss, accuracy and
    clips/s, a validation bar, and one line per finished epoch."""

    def __init__(self, console, epochs: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console, self.epochs = console, epochs
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
        self.task = self.val_task = None

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def on_start(self, trainer, start_epoch: int, skip_steps: int) -> None:
        pass

    def on_epoch_start(self, epoch: int, steps: int, skip_steps: int) -> None:
        for task in (self.task, self.val_task):
            if task is not None:
                self.bar.remove_task(task)
        self.val_task = None
        self.task = self.bar.add_task(f"epoch {epoch}/{self.epochs}", total=steps,
                                      completed=skip_steps, stats="")

    def on_step(self, epoch, step_in_epoch, loss, acc, clips_per_s, lr) -> None:
        self.bar.update(self.task, completed=step_in_epoch,
                        stats=f"loss {loss:.3f} acc {100 * acc:.1f}% {clips_per_s:.1f} clips/s")

    def on_validate(self, done: int, total: int) -> None:
        if self.val_task is None:
            self.val_task = self.bar.add_task("validation", total=total, stats="")
        self.bar.update(self.val_task, completed=done)

    def on_epoch(self, record, is_best: bool) -> None:
        self.console.print(_epoch_line(record, self.epochs) + (" [bold green]best[/]" if is_best
                                                               else ""), highlight=False,
                           soft_wrap=True)


def _epoch_line(r, epochs: int) -> str:
    val = (f" | val loss {r.val_loss:.3f} top-1 {100 * r.val_top1:.1f}% top-5 "
           f"{100 * r.val_top5:.1f}%" if r.val_top1 is not None else "")
    return (f"epoch {r.epoch}/{epochs}: loss {r.train_loss:.3f} acc {100 * r.train_acc:.1f}%{val} | "
            f"lr {r.lr:.3g} | {r.clips_per_s:.1f} clips/s | {r.seconds:.1f} s")


@click.command("train", short_help=summary("train"))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Registered classifier (resnet2d, i3d, s3d, "
              "trajectorynet, cidc, stmulnet, ...). Required unless resuming.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.json, metrics.jsonl, checkpoints/).")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Model keyword, repeatable, JSON values (e.g. --model-arg modality=flow "
                   "--model-arg layers=[2,2,2,2]). num_classes comes from the store.")
@click.option("--frames", type=int, default=_D.frames,
              help="Frames per clip T [default: 8]; with --segments, frames per segment [1].")
@click.option("--step", type=int, default=_D.step, show_default=True, help="Temporal stride.")
@click.option("--segments", type=int, default=_D.segments,
              help="TSN sampling: this many segments, a snippet from each (instead of one clip).")
@click.option("--size", type=int, default=_D.size, show_default=True, help="Crop side, pixels.")
@click.option("--scales", default=",".join(f"{s:g}" for s in _D.scales), show_default=True,
              help="Multi-scale crop sides as fractions of the short side.")
@click.option("--flip/--no-flip", default=_D.flip, show_default=True,
              help="Random horizontal flips (negating u); off for direction-sensitive classes.")
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True, help="Clips per step.")
@click.option("--epochs", type=int, default=_D.epochs, show_default=True,
              help="Total epochs (with --resume: train up to this many).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_D.optimizer, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True, help="Peak learning rate.")
@click.option("--momentum", type=float, default=_D.momentum, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=float, default=_D.weight_decay, show_default=True,
              help="Not applied to biases and normalisation parameters.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=_D.schedule, show_default=True,
              help="Learning-rate schedule, stepped per iteration after the warmup.")
@click.option("--warmup-epochs", type=float, default=_D.warmup_epochs, show_default=True,
              help="Linear warmup length (fractions allowed).")
@click.option("--milestones", default=None,
              help="Epochs where --schedule step multiplies the lr by --gamma (e.g. 30,40) "
                   "[default: 1/2 and 3/4 of --epochs].")
@click.option("--gamma", type=float, default=_D.gamma, show_default=True, help="Step decay factor.")
@click.option("--clip-grad", type=float, default=_D.clip_grad,
              help="Clip the gradient norm to this value.")
@click.option("--amp/--no-amp", default=_D.amp, show_default=True,
              help="Mixed precision (CUDA only; ignored on CPU).")
@click.option("--seed", type=int, default=_D.seed, show_default=True,
              help="Seed of initialisation, split, sampling and shuffling.")
@click.option("--workers", type=int, default=_D.workers, show_default=True,
              help="DataLoader worker processes.")
@click.option("--device", default=_D.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--flow-name", default=_D.flow_name, show_default=True,
              help="Flow dataset of the store (the extraction --method).")
@click.option("--val-fraction", type=float, default=_D.val_fraction, show_default=True,
              help="Stratified validation split (0: none). Ignored with --split-list.")
@click.option("--split-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Training videos from a UCF101 list (trainlist01.txt).")
@click.option("--val-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Validation videos from a UCF101 list (testlist01.txt).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="torchvision-format ResNet weights (inflated to 3D, cross-modality for flow).")
@click.option("--checkpoint-every", type=int, default=_D.checkpoint_every, show_default=True,
              help="Also save last.pt every N steps (0: at epoch ends only).")
@click.option("--resume", is_flag=True,
              help="Continue RUN_DIR exactly where it stopped (starts it if it holds no run).")
@click.option("--overwrite", is_flag=True, help="Replace the run in RUN_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.pass_context
@handle_errors
def command(ctx, store, out, resume, overwrite, as_json, **params):
    """Train a video classifier on the videos of STORE (a flowkit store), writing RUN_DIR.

    The model's inputs (rgb and/or flow) decide what is loaded; a store lacking them is refused
    before anything is written. Ctrl-C stops after the current step and saves it; rerun with
    --resume to continue exactly.
    """
    from rich.console import Console

    from ..train import Trainer
    from ..train.loading import resolve_device

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    console = Console(stderr=True, soft_wrap=True)
    store_path = str(Path(store).resolve())

    def log(msg: str) -> None:
        console.print(f"note: {msg}", highlight=False)

    if resume and (out / "config.json").is_file():
        changes = _config_values(ctx, params, explicit_only=True)
        trainer = Trainer.resume(out, log=log, store=store_path, **changes)
    else:
        if params["model"] is None:
            raise click.UsageError("--model is required (see `flowkit train --help`)")
        config = TrainConfig(store=store_path, **_config_values(ctx, params, explicit_only=False))
        trainer = Trainer(config, out, overwrite=overwrite, log=log)
    cfg = trainer.config
    if cfg.amp and ctx.get_parameter_source("amp") == ParameterSource.COMMANDLINE \
            and resolve_device(cfg.device).type != "cuda":
        console.print("note: --amp is ignored on CPU (mixed precision runs on CUDA only)",
                      highlight=False)
    rc = trainer.run_config
    console.print(f"{cfg.model} {json.dumps(rc['model']['kwargs'])} ({rc['num_parameters']:,} "
                  f"parameters, inputs {'+'.join(rc['inputs'])}) on {trainer.device}; "
                  f"{len(trainer.train_keys)} training / {len(trainer.val_keys)} validation videos "
                  f"of {len(trainer.classes)} classes; clips of {cfg.clip_length} frames at "
                  f"{cfg.size}x{cfg.size} -> {out}", highlight=False, soft_wrap=True)
    if trainer.init_report is not None:
        console.print(f"initialised from {cfg.init}: {_init_summary(trainer.init_report)}",
                      highlight=False, soft_wrap=True)
    stop = _StopFlag(console)
    try:
        with _sigint(stop), _RichCallbacks(console, cfg.epochs) as callbacks:
            result = trainer.fit(callbacks, should_stop=stop)
    except KeyboardInterrupt:
        console.print(f"interrupted; {out / 'checkpoints' / 'last.pt'} holds the last saved state; "
                      "continue with the same command plus --resume", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    _summary(console, result, cfg, out)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "config": rc["config"],
                               "model": rc["model"]}, indent=2))
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _init_summary(report: dict) -> str:
    counts = ", ".join(f"{len(report[k])} {k.replace('_', '-')}"
                       for k in ("loaded", "inflated", "cross_modality", "missing", "skipped")
                       if report.get(k))
    return f"{report.get('format', '?')} weights; {counts or 'nothing loaded'}"


def _summary(console, result, cfg: TrainConfig, out: Path) -> None:
    ckpt = out / "checkpoints"
    if result.interrupted:
        console.print(f"stopped at step {result.global_step} ({result.epochs_done} epochs finished); "
                      f"saved to {ckpt / 'last.pt'}; continue with the same command plus --resume",
                      highlight=False)
        return
    if result.start_epoch >= cfg.epochs:
        console.print(f"{out} already finished its {result.epochs_done} epochs; pass a larger "
                      "--epochs with --resume to train longer", highlight=False)
        return
    best = ("" if result.best_metric is None else
            f"; best {'val top-1' if result.history[-1]['val_top1'] is not None else 'train acc'} "
            f"{100 * result.best_metric:.1f}% at epoch {result.best_epoch} -> {ckpt / 'best.pt'}")
    console.print(f"[bold]done[/bold]: {result.epochs_done} epochs, {result.global_step} steps in "
                  f"{result.seconds:.1f} s{best}; evaluate with `flowkit evaluate {out}`",
                  highlight=False, soft_wrap=True)
