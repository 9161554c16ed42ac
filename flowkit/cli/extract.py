"""``flowkit extract VIDEO_DIR -o STORE``: motion features for a folder of videos."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import FlowkitError
from .. import distributed
from ..extract import ExtractConfig, ExtractSummary, extract
from ..flow import list_engines
from ..labels import read_split_list, scan_videos
from ..progress import Progress, StopFlag
from . import EXIT_OK, EXIT_PARTIAL, handle_errors, summary
from .options import parse_params, parse_size
from .progress import RichProgress, stop_on_signals


def _items(video_dir: Path, split_list: Path | None, class_index: Path | None):
    if not video_dir.is_dir():
        raise FlowkitError(f"{video_dir}: not a directory of videos")
    if split_list:
        return read_split_list(split_list, video_dir, class_index)
    items, classes = scan_videos(video_dir)
    if not items:
        raise FlowkitError(f"{video_dir}: no video files found (looked for .mp4, .avi, .mkv, ...)")
    return items, classes


def _print_summary(console: Console, summary) -> None:
    d = summary.to_dict()
    rate = f", {d['pairs_per_s']:.2f} pairs/s" if d["pairs_per_s"] else ""
    console.print(f"[bold]{d['done']} done[/bold], {d['skipped']} skipped (already in the store), "
                  f"[{'red' if d['failed'] else 'green'}]{d['failed']} failed[/]; "
                  f"{d['pairs']} frame pairs in {d['seconds']:.1f} s{rate} with {d['method']} "
                  f"({d['backend']} backend) -> {d['store']}", highlight=False)
    for r in summary.ranks:
        console.print(f"  rank {r['rank']}: {r['done']} done, {r['skipped']} skipped, "
                      f"{r['failed']} failed, {r['pairs']} pairs in {r['seconds']:.1f} s",
                      highlight=False)
    for r in summary.results:
        if r.status == "failed":
            console.print(f"  failed: {r.reason}", highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"  note: {note}", highlight=False, soft_wrap=True)


@click.command("extract", short_help=summary("extract"))
@click.argument("video_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "store", required=True, type=click.Path(path_type=Path),
              help="Store directory (created if missing; rerunning resumes).")
@click.option("--method", default="tvl1", show_default=True, type=click.Choice(list_engines()),
              help="Motion engine.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Engine parameter, repeatable (e.g. --param warps=3).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint of a trained engine (tvnet, motionnet, learned cost-volume features).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--backend", type=click.Choice(["auto", "torch", "cupy"]), default="auto",
              show_default=True,
              help="Numerics of tvl1/tvnet/costvolume: the CuPy kernels (CUDA, pip install "
                   ".[cuda13]) or torch; auto takes CuPy on CUDA when it imports.")
@click.option("--compile/--no-compile", default=True, show_default=True,
              help="Fuse the TV-L1 iteration with torch.compile (~20 s once, ~3x faster on CPU).")
@click.option("--size", default=None, help="Resize: SHORT_SIDE (e.g. 256) or HxW (e.g. 256x340).")
@click.option("--step", default=1, show_default=True, help="Keep every STEP-th frame.")
@click.option("--max-frames", type=int, default=None, help="At most this many frames per video.")
@click.option("--flow-codec", default="jpegls:0.1", show_default=True, metavar="SPEC",
              help="How flow is stored: jpegls:MAX_ERROR (error at most MAX_ERROR px, compact), "
                   "float16 (lossless for training), uint8:BOUND (clipped to +-BOUND px).")
@click.option("--rgb-codec", default="jpeg:95", show_default=True, metavar="SPEC",
              help="How RGB frames are stored: jpeg:QUALITY (as mmaction2 rawframes) or raw "
                   "(lossless).")
@click.option("--lossless", is_flag=True,
              help="Keep everything: float16 flow and raw RGB (about 10x the default's size).")
@click.option("--rgb/--no-rgb", default=True, show_default=True, help="Also store the RGB frames.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Frame pairs per engine call, filled across videos [default: 8 on CPU, 64 on "
                   "CUDA].")
@click.option("--workers", default=1, show_default=True, help="Parallel extraction processes.")
@click.option("--split-list", type=click.Path(exists=True, path_type=Path), default=None,
              help="Videos and labels from a UCF101-style list (trainlist01.txt) instead of a scan.")
@click.option("--class-index", type=click.Path(exists=True, path_type=Path), default=None,
              help="classInd.txt for --split-list (found next to the list by default).")
@click.option("--shard", default=None, metavar="I/N",
              help="Process shard I of N (default: torchrun's RANK/WORLD_SIZE).")
@click.option("--plan", "plan_only", is_flag=True,
              help="Dry run: print which shard (rank) gets which videos and the expected frame "
                   "pairs per shard, then exit (--shard I/N or torchrun gives the count).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@handle_errors
def command(video_dir, store, method, params, weights, device, backend, compile, size, step,
            max_frames, flow_codec, rgb_codec, lossless, rgb, batch, workers, split_list,
            class_index, shard, plan_only,
            as_json):
    """Compute motion features for every video under VIDEO_DIR into the store STORE.

    Labels come from the folder layout VIDEO_DIR/<class>/<video> or from --split-list. Finished
    videos are never recomputed: rerun the same command after a crash to resume. One unreadable
    video is reported and skipped; the exit code is 1 if any video failed.
    """
    shard_tuple = None
    if shard:
        try:
            i, n = (int(v) for v in shard.split("/"))
            shard_tuple = (i, n)
        except ValueError:
            raise click.BadParameter(f"expected I/N, got {shard!r}", param_hint="--shard") from None
    if lossless:
        ctx = click.get_current_context()
        given = [f"--{n.replace('_', '-')}" for n in ("flow_codec", "rgb_codec")
                 if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--lossless chooses both codecs (float16 flow, raw RGB); "
                                   f"drop {' and '.join(given)} or --lossless")
        flow_codec, rgb_codec = "float16", "raw"
    engine_params = parse_params(params)
    if weights:
        engine_params["weights"] = weights
    config = ExtractConfig(method=method, engine_params=engine_params, device=device,
                           backend=backend, compile=compile, size=parse_size(size), step=step,
                           max_frames=max_frames, flow_codec=flow_codec, rgb_codec=rgb_codec, rgb=rgb,
                           batch=batch, workers=workers)
    items, classes = _items(video_dir, split_list, class_index)
    console = Console(stderr=True)
    # Under torchrun the ranks join one gloo group (CPU, whatever --device) to share the probing,
    # the plan and the summaries; rank 0 alone draws and prints.
    distributed.init("cpu", timeout=distributed.LONG_WAIT)
    main = distributed.rank() == 0
    if plan_only:
        _print_plan(console, items, store, config, shard_tuple, as_json, main)
        return
    stop = StopFlag()
    bars = RichProgress(console) if main else contextlib.nullcontext(Progress())
    with bars as progress, stop_on_signals(stop, console, "the current chunk"):
        result = extract(items, store, config, classes=classes, shard=shard_tuple,
                         progress=progress, stop=stop)
    parts = distributed.gather(result)
    distributed.shutdown()
    code = max(EXIT_PARTIAL if part.count("failed") else EXIT_OK for part in parts)
    if len(parts) > 1:
        result = ExtractSummary.combine(parts)
    if not main:  # rank 0 reports this rank's videos and exits with the worst code
        sys.exit(EXIT_OK)
    _print_summary(console, result)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    sys.exit(code)


def _print_plan(console: Console, items, store: Path, config: ExtractConfig, shard, as_json: bool,
                main: bool) -> None:
    """``--plan``: per shard its video count, expected frame pairs and videos already in the store
    (stderr), and one ``RANK<TAB>KEY<TAB>EXPECTED`` line per video (stdout; --json: the plan)."""
    from ..extract import finished_keys, shard_from_env, shard_plan

    count = shard[1] if shard else shard_from_env()[1]
    plan = shard_plan(items, config, count)
    distributed.shutdown()
    if not main:
        return
    done = finished_keys(store, config.method, items)
    unit = "expected frame pairs" if plan.basis == "frame pairs" else "bytes (no frame counts)"
    total = max(sum(plan.costs.values()), 1)
    for r in range(count):
        share = plan.share(r)
        console.print(f"rank {r}: {len(share)} videos, {plan.load(r)} {unit} "
                      f"({100 * plan.load(r) / total:.1f}%), "
                      f"{sum(item.key in done for item in share)} already in the store",
                      highlight=False)
    if plan.estimated:
        console.print(f"note: {len(plan.estimated)} videos declare no frame count; their pairs are "
                      "estimated from the file size", highlight=False)
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    for r in range(count):
        for item in plan.share(r):
            click.echo(f"{r}\t{item.key}\t{plan.costs[item.key]}")
