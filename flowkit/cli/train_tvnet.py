"""``flowkit train-flow tvnet``: train TVNet's relaxed TV-L1 kernels (:mod:`flowkit.train.tvnet`).

Options in, rich progress out: the data, the loss, the epochs and checkpointing are the library's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape

from ..errors import FlowkitError
from ..progress import StopFlag
from . import KEPT_EPOCHS, handle_errors, stop_exit_code
from .options import parse_present_device, parse_size
from .progress import RichProgress, stop_on_signals


@click.command("tvnet", short_help="Train TVNet (default TVNet-50) into a checkpoint.")
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
              help="Share of the pairs held out for validation (whole videos with --unsupervised "
                   "on a video folder: their pairs share frames).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the synthetic pairs, the split and the shuffling.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Checkpoint to write (rewritten atomically after every epoch).")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint at --out if there is one, with its options (only "
                   "--epochs may change).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
@handle_errors(stopped=KEPT_EPOCHS)
def command(ctx, data, layout, unsupervised, pairs, size, scales, warps, iterations, epochs, batch,
            lr, clip, val_fraction, seed, out, resume, device, as_json):
    """Train TVNet (default TVNet-50: 1 scale, 1 warp, 50 iterations) and write checkpoint --out,
    for `flowkit extract --method tvnet --weights OUT`.

    \b
    Examples:
      flowkit train-flow tvnet --out tvnet.pt
      flowkit train-flow tvnet --out tvnet.pt --epochs 5 --unsupervised
    """
    from ..flow.tvnet import TVNetConfig
    from ..train.tvnet import TVNetTrainConfig, fit, load_samples, recorded_data, saved_options

    device = parse_present_device(device)
    if resume and out.is_file():
        # Options left out come from the checkpoint (given ones must match it: fit checks).
        given = dict(data=data, layout=layout, unsupervised=unsupervised, pairs=pairs, size=size,
                     scales=scales, warps=warps, iterations=iterations, epochs=epochs,
                     batch=batch, lr=lr, clip=clip, val_fraction=val_fraction, seed=seed)
        saved = saved_options(out)
        given.update({k: saved[k] for k in given if k in saved
                      and ctx.get_parameter_source(k) != ParameterSource.COMMANDLINE})
        (data, layout, unsupervised, pairs, size, scales, warps, iterations, epochs, batch, lr,
         clip, val_fraction, seed) = given.values()
        if ctx.get_parameter_source("data") != ParameterSource.COMMANDLINE \
                and data != "synthetic" and not Path(data).is_dir():  # an older relative record
            raise FlowkitError(f"--resume: {out} was trained on --data {data}, which is not a "
                               "folder from here; pass --data with the folder's path")
    console = Console(stderr=True)
    config = TVNetTrainConfig(TVNetConfig(scales=scales, warps=warps, iterations=iterations),
                              epochs=epochs, batch=batch, lr=lr, clip=clip,
                              val_fraction=val_fraction, seed=seed, unsupervised=unsupervised)
    samples = load_samples(data, layout, unsupervised, pairs, parse_size(size), seed,
                           log=lambda msg: console.print(msg, highlight=False, markup=False),
                           on_warning=lambda msg: console.print(
                               f"[yellow]{escape(msg)}[/yellow]", highlight=False))
    stop = StopFlag()
    with stop_on_signals(stop, console, "the current epoch"), RichProgress(console) as progress:
        history = fit(config, samples, out, resume=resume, device=device, progress=progress,
                      stop=stop,
                      args={"data": recorded_data(data), "layout": layout, "pairs": pairs,
                            "size": size})
    # A stop asked for during the last epoch comes after training finished: nothing to resume.
    if stop.is_set() and (history[-1]["epoch"] if history else 0) < epochs:
        console.print(f"{stop.reason}: {out} holds the finished epochs; continue with the same "
                      "command plus --resume", highlight=False, markup=False)
        sys.exit(stop_exit_code(stop))
    if as_json:
        click.echo(json.dumps({"out": str(out), "epochs": history}))
