"""``flowkit train STORE --model NAME --out RUN_DIR``: train a video classifier on a flowkit store.

A thin wrapper over :class:`flowkit.train.Trainer`: parses options into a
:class:`~flowkit.train.TrainConfig`, shows a rich progress bar, turns Ctrl-C into a clean stop
(the state after the last finished step is saved; exit code 130) and prints a summary (``--json``:
machine-readable on stdout). ``--resume`` continues RUN_DIR exactly where it stopped; options given
with it must match the run's config.json, except those that may change (``--epochs``,
``--workers``, ``--device``, ``--amp``, ``--checkpoint-every``, STORE). The run keeps its classes
(another STORE's labels are matched by name); a STORE lacking one of them, or an ``--epochs``
below the epochs already trained, is one line and exit 2 with RUN_DIR left as it was.

Under torchrun every rank runs this command: the ranks join one process group (gloo on the CPU,
nccl on CUDA) and train one DistributedDataParallel model; rank 0 alone prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from .. import distributed
from ..errors import shell_word
from ..progress import Progress, StopFlag
from ..train.config import TrainConfig, read_run_config
from . import EXIT_PARTIAL, handle_errors, stop_exit_code, summary
from .options import one_file, parse_params
from .progress import RichProgress, stop_on_signals


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


def _option_type(f: dataclasses.Field):
    """The click type of a TrainConfig field (from its annotation and metadata)."""
    meta, kind = f.metadata, f.metadata.get("kind")
    if "choices" in meta:
        return click.Choice(meta["choices"])
    if kind == "file":
        return click.Path(exists=True, dir_okay=False, path_type=Path)
    if kind in ("floats", "ints"):
        return str
    base = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float, "str": str}.get(base, str)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _option_default(f: dataclasses.Field):
    """What --help shows and click passes when the option is absent."""
    value = _default(f)
    if f.metadata.get("kind") == "floats":
        return ",".join(f"{v:g}" for v in value)
    if f.metadata.get("kind") == "ints":
        return None  # "" would mean "no milestones"; None lets the schedule pick them
    return value


def train_options(command):
    """One click option per :class:`TrainConfig` field (name, type, default and help from the
    field), so an option is declared once, in the config."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        if f.name == "store":
            continue
        meta = f.metadata
        decl = meta.get("option", "--" + f.name.replace("_", "-"))
        kw = {"help": meta.get("help")}
        if meta.get("kind") == "params":
            kw.update(multiple=True, metavar=meta.get("metavar"))
        elif meta.get("kind") == "file":
            # multiple so that a repeat is seen and refused (one_file): click would keep only
            # the last --split-list, silently training on one list of two
            kw.update(type=_option_type(f), multiple=True)
        elif str(f.type).startswith("bool"):
            decl = f"{decl}/--no-{decl[2:]}"
            kw.update(default=_default(f), show_default=True)
        else:
            default = _option_default(f)
            kw.update(type=_option_type(f), default=default,
                      show_default=default not in (None, "", ()))
        command = click.option(decl, f.name, **kw)(command)
    return command


def _convert(f: dataclasses.Field, value):
    kind = f.metadata.get("kind")
    if kind == "params":
        return parse_params(value)
    if kind == "floats":
        return _floats(value, "--" + f.name.replace("_", "-"))
    if kind == "ints":
        return tuple(int(m) for m in _floats(value or "", "--" + f.name.replace("_", "-")))
    if kind == "file":
        option = "--" + f.name.replace("_", "-")
        fix = "merge the lists into one file" if option.endswith("-list") else "give one"
        return _absolute(one_file(value, option, fix))
    return value


def _config_values(ctx: click.Context, params: dict, explicit_only: bool) -> dict:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "store" or (explicit_only and ctx.get_parameter_source(f.name)
                                 != ParameterSource.COMMANDLINE):
            continue
        values[f.name] = _convert(f, params[f.name])
    return values


@click.command("train", short_help=summary("train"))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (config.json, metrics.jsonl, checkpoints/).")
@train_options
@click.option("--resume", is_flag=True,
              help="Continue RUN_DIR exactly where it stopped (starts it if it holds no run).")
@click.option("--overwrite", is_flag=True, help="Replace the run in RUN_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.pass_context
@handle_errors
def command(ctx, store, out, resume, overwrite, as_json, **params):
    """Train a video classifier on the videos of STORE (a flowkit store), writing RUN_DIR.

    The model's inputs (rgb, flow, backward flow) decide what is loaded; a store lacking them is
    refused before anything is written. Ctrl-C stops after the current step and saves it; rerun
    with --resume to continue exactly. A split that leaves no validation video is warned about.

    \b
    Examples:
      flowkit train store/ --model cidc --model-arg modality=flow -o run/
      flowkit train store/ --model resnet2d --frames 1 -o rgb_run/ --epochs 10
      flowkit train store/ -o run/ --resume --epochs 40
    """
    from rich.console import Console

    from ..train import Trainer
    from ..train.ddp import rank_device
    from ..train.loop import WARNING, ignored_val_fraction

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other")
    console = Console(stderr=True, soft_wrap=True)
    store_path = str(Path(store).resolve())
    device = params["device"]
    if resume and (out / "config.json").is_file() \
            and ctx.get_parameter_source("device") != ParameterSource.COMMANDLINE:
        device = read_run_config(out)["config"].get("device", device)
    distributed.init(rank_device(device))
    main = distributed.rank() == 0
    if not main:  # the other ranks train silently; errors still reach their stderr
        console = Console(stderr=True, soft_wrap=True, quiet=True)

    def log(msg: str) -> None:  # the Trainer's notes; its warnings (WARNING) say so themselves
        line = msg if msg.startswith(WARNING) else f"note: {msg}"
        console.print(line, highlight=False, markup=False)  # names as they are

    def bars():
        return (RichProgress(console, transient=True) if main
                else contextlib.nullcontext(Progress()))

    if resume and (out / "config.json").is_file():
        changes = _config_values(ctx, params, explicit_only=True)
        with bars() as progress:
            trainer = Trainer.resume(out, log=log, progress=progress, store=store_path, **changes)
    else:
        if params["model"] is None:
            raise click.UsageError("--model is required")
        config = TrainConfig(store=store_path, **_config_values(ctx, params, explicit_only=False))
        with bars() as progress:
            trainer = Trainer(config, out, overwrite=overwrite, log=log, progress=progress)
    cfg = trainer.config
    if (not resume and cfg.split_list and main and cfg.val_fraction == TrainConfig.val_fraction
            and ctx.get_parameter_source("val_fraction") == ParameterSource.COMMANDLINE):
        log(ignored_val_fraction(cfg.val_fraction))  # typed, though the default (the Trainer
        # warns of any other value, but cannot tell a typed default from an untyped one)
    if cfg.amp and ctx.get_parameter_source("amp") == ParameterSource.COMMANDLINE \
            and trainer.device.type != "cuda":
        console.print("note: --amp is ignored on CPU (mixed precision runs on CUDA only)",
                      highlight=False)
    rc = trainer.run_config
    console.print(f"{cfg.model} {json.dumps(rc['model']['kwargs'])} ({rc['num_parameters']:,} "
                  f"parameters, inputs {'+'.join(rc['inputs'])}) on {trainer.device}; "
                  f"{len(trainer.train_keys)} training / {len(trainer.val_keys)} validation videos "
                  f"of {len(trainer.classes)} classes; clips of {cfg.clip_length} frames at "
                  f"{cfg.size}x{cfg.size}"
                  + (f", {trainer.world_size} ranks of {cfg.batch_size // trainer.world_size} "
                     "clips per step" if trainer.world_size > 1 else "")
                  + f" -> {out}", highlight=False, soft_wrap=True, markup=False)
    if lost := trainer.store.unreachable:  # the split was made without their videos
        console.print(f"warning: {len(lost)} folder(s) of the store cannot be read, their videos "
                      f"are left out of this run; e.g. {lost[0]}", highlight=False,
                      soft_wrap=True, markup=False)
    if trainer.init_report is not None:
        console.print(f"initialised from {cfg.init}: {_init_summary(trainer.init_report)}",
                      highlight=False, soft_wrap=True, markup=False)
    stop = StopFlag()
    try:
        with stop_on_signals(stop, console, "the current step and saving it"), \
                bars() as progress, _quiet_torch_warnings():
            result = trainer.fit(progress, stop=stop)
        _finish_a_stopped_rank(stop)
        distributed.shutdown()
    except KeyboardInterrupt:
        console.print(f"{stop.reason or 'interrupted'}; {out / 'checkpoints' / 'last.pt'} holds the "
                      "last saved state; continue with the same command plus --resume",
                      highlight=False, markup=False)
        sys.exit(stop_exit_code(stop))
    except RuntimeError as exc:
        cause = distributed.peer_failure(exc)
        if cause is None:  # not a lost rank: a real error keeps its traceback
            raise
        # Every surviving rank says it (rank 0 may be the one that died); no traceback: the
        # collective's 90 lines say nothing the user can act on, and the run resumes exactly.
        click.echo(f"error: a rank of the run failed ({cause}); {_saved(out)}; continue with the "
                   "same command plus --resume", err=True)
        sys.exit(EXIT_PARTIAL)
    _summary(console, result, cfg, out)
    if as_json and main:
        click.echo(json.dumps({**result.to_dict(), "config": rc["config"],
                               "model": rc["model"]}, indent=2))
    if result.interrupted:
        sys.exit(stop_exit_code(stop))


def _finish_a_stopped_rank(stop: StopFlag) -> None:
    """A rank of a stopped torchrun run ignores SIGTERM from here to its exit (the group's
    shutdown, the summary): the first rank to exit makes torchrun SIGTERM the others, which
    would die of it (-15) instead of exiting 143 as every rank of a SIGTERM stop does. Ranks
    only: one process has no torchrun to signal it, and keeps its handlers."""
    import signal
    import threading

    if (stop.is_set() and distributed.world_size() > 1
            and threading.current_thread() is threading.main_thread()):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _saved(out: Path) -> str:
    """What RUN_DIR/checkpoints/last.pt holds ("... holds global step N (after epoch E)"), read
    lazily (mmap: the weights stay on disk); a run that saved nothing yet says so."""
    import torch

    last = out / "checkpoints" / "last.pt"
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        epoch, step, total = (int(ckpt.get(k, 0))
                              for k in ("epoch", "step_in_epoch", "global_step"))
    except Exception:  # missing, or cut short by the failure: say what is certain
        return f"{last} holds the last saved state" if last.is_file() else "nothing was saved yet"
    where = f"step {step} of epoch {epoch + 1}" if step else f"epoch {epoch}"
    return f"{last} holds global step {total} (after {where})"


@contextlib.contextmanager
def _quiet_torch_warnings():
    """Hide torch's warnings that every rank printed and no user can act on: --sync-bn's
    (flowkit.train.ddp's CPU SyncBatchNorm uses torch.distributed.nn.functional.all_reduce,
    deprecated in torch 2.x: a FutureWarning per rank)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"torch\.distributed\.nn\.functional\.all_reduce is "
                                        r"deprecated")
        yield


def _init_summary(report: dict) -> str:
    counts = ", ".join(f"{len(report[k])} {k.replace('_', '-')}"
                       for k in ("loaded", "inflated", "cross_modality", "missing", "skipped")
                       if report.get(k))
    return f"{report.get('format', '?')} weights; {counts or 'nothing loaded'}"


def _summary(console, result, cfg: TrainConfig, out: Path) -> None:
    from rich.markup import escape

    ckpt = out / "checkpoints"
    if result.interrupted:
        console.print(f"stopped at step {result.global_step} ({result.epochs_done} epochs finished); "
                      f"saved to {ckpt / 'last.pt'}; continue with the same command plus --resume",
                      highlight=False, markup=False)
        return
    if result.start_epoch >= cfg.epochs:
        console.print(f"{out} already finished its {result.epochs_done} epochs; pass a larger "
                      "--epochs with --resume to train longer", highlight=False, markup=False)
        return
    best = ("" if result.best_metric is None else
            f"; best {'val top-1' if result.history[-1]['val_top1'] is not None else 'train acc'} "
            f"{100 * result.best_metric:.1f}% at epoch {result.best_epoch} -> "
            f"{escape(str(ckpt / 'best.pt'))}")
    console.print(f"[bold]done[/bold]: {result.epochs_done} epochs, {result.global_step} steps in "
                  f"{result.seconds:.1f} s{best}; evaluate with `flowkit evaluate "
                  f"{escape(shell_word(out))}`",
                  highlight=False, soft_wrap=True)
