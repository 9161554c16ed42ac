"""``flowkit train-flow motionnet SOURCE --out motionnet.pt``: unsupervised MotionNet
(:mod:`flowkit.train.motionnet`). Options in, rich progress out."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from ..errors import shell_word
from ..progress import StopFlag
from . import KEPT_EPOCHS, handle_errors, stop_exit_code
from .options import parse_present_device, parse_size
from .progress import RichProgress, stop_on_signals


@click.command("motionnet", short_help="Train MotionNet without labels into a checkpoint.")
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
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of initialisation and clip sampling. [default: 0]")
@click.option("--resume", is_flag=True, help="Continue from --out (epoch, step, optimizer, sampler).")
@click.option("--eval-samples", is_flag=True,
              help="Each epoch, report EPE against the known flow of rendered flowkit sample clips.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-epoch history as JSON on stdout.")
@handle_errors(stopped=KEPT_EPOCHS)
def command(source, out, num_frames, width, size, epochs, steps_per_epoch, batch, lr, seed, resume,
            eval_samples, device, as_json):
    """Train MotionNet without ground truth on clips from SOURCE (a video folder, or a store
    extracted with --rgb); then `flowkit extract --method motionnet --weights OUT`.

    \b
    Examples:
      flowkit train-flow motionnet videos/ --out motionnet.pt
      flowkit extract videos/ -o store/ --method motionnet --weights motionnet.pt
    """
    from rich.console import Console
    from rich.markup import escape

    from ..train.motionnet import (ClipSource, finished_steps, resolve_config, sample_eval_set,
                                   train)

    hw = parse_size(size)
    if hw is not None and not isinstance(hw, tuple):
        raise click.BadParameter("expected HxW, e.g. 128x160", param_hint="--size")
    for name, value in (("--num-frames", num_frames), ("--epochs", epochs),
                        ("--steps-per-epoch", steps_per_epoch), ("--batch", batch)):
        if value is not None and value < 1:
            raise click.BadParameter(f"must be >= 1, got {value}", param_hint=name)
    device = parse_present_device(device)
    config = resolve_config(out, resume, dict(num_frames=num_frames, width=width, size=hw,
                                              epochs=epochs, steps_per_epoch=steps_per_epoch,
                                              batch=batch, lr=lr, seed=seed))
    console = Console(stderr=True)
    data = ClipSource.from_path(source, config.size,
                                on_warning=lambda msg: console.print(
                                    f"[yellow]{escape(msg)}[/yellow]", highlight=False))
    eval_set = sample_eval_set(config.num_frames, config.size) if eval_samples else None
    done_steps = finished_steps(out) if resume else 0
    console.print(f"MotionNet M={config.num_frames} width={config.width} size="
                  f"{config.size[0]}x{config.size[1]} batch={config.batch} lr={config.lr} on "
                  f"{len(data.loaders)} videos from {source}"
                  + (f"; resuming at step {done_steps}" if done_steps else ""), highlight=False,
                  markup=False)
    started = time.perf_counter()
    stop = StopFlag()
    with stop_on_signals(stop, console, "the current epoch"), RichProgress(console) as progress:
        _, history = train(data, config, out, resume=resume, device=device, eval_set=eval_set,
                           progress=progress, stop=stop)
    last = history[-1] if history else {}
    # A stop asked for during the last epoch comes after training finished: nothing to resume.
    if stop.is_set() and last.get("epoch", 0) < config.epochs:
        console.print(f"{stop.reason}: {out} holds the finished epochs; continue with the same "
                      "command plus --resume", highlight=False, markup=False)
        sys.exit(stop_exit_code(stop))
    console.print(f"[bold]done[/bold]: {last.get('epoch', 0)} epochs, {last.get('step', 0)} steps, "
                  f"final loss {last.get('loss', float('nan')):.4f}, "
                  f"{time.perf_counter() - started:.1f} s; use it with `flowkit extract --method "
                  f"motionnet --weights {escape(shell_word(out))}`", highlight=False)
    if as_json:
        click.echo(json.dumps({"checkpoint": str(out), "config": asdict(config),
                               "history": history}, indent=2))
