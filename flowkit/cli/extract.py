"""``flowkit extract VIDEO_DIR -o STORE``: motion features for a folder of videos (``--backward``:
backward flow into ``flow/<method>_backward``)."""
from __future__ import annotations

import contextlib
import json
import re
import sys
from datetime import timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from .. import distributed
from ..errors import EngineError, FlowkitError, shell_word
from ..extract import ExtractConfig, ExtractSummary, extract
from ..flow import check_engine_params, engine_parameters, list_engines
from ..labels import VIDEO_EXTENSIONS, VideoItem, read_split_lists, scan_videos
from ..progress import Progress, StopFlag, Stopped
from ..store.compat import LOSSLESS
from . import EXIT_OK, EXIT_PARTIAL, handle_errors, summary
from .options import (BACKENDS, backend_option, one_file, parse_device, parse_params,
                      parse_size, refuse_option_params)
from .progress import RichProgress, stop_on_signals


def _items(video_dir: Path, split_lists: tuple[Path, ...], class_index: Path | None,
           notes: list[str]):
    if video_dir.is_file() and not split_lists:
        return [_single_video(video_dir)], []
    if not video_dir.exists():
        raise FlowkitError(f"{video_dir}: no such file or directory; give a folder of videos "
                           "(VIDEO_DIR/<class>/<video>.mp4) or one video file")
    if not video_dir.is_dir():
        raise FlowkitError(f"{video_dir}: not a directory of videos")
    if split_lists:
        return read_split_lists(split_lists, video_dir, class_index)
    items, classes = scan_videos(video_dir, notes=notes)
    if not items:  # the scan's notes say what it found instead (other extensions, FIFOs, ...)
        raise FlowkitError(f"{video_dir}: no video files found (looked for .mp4, .avi, .mkv, ...)"
                           + "".join(f"; {note}" for note in notes))
    return items, classes


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise click.BadParameter(f"expected a number >= 1 or auto, got {text!r}",
                                 param_hint="--workers")
    return value


def _bytes(text: str) -> int | None:
    """``4G``, ``512M``, ``1.5GB``, ``2GiB``, ``100000`` (bytes) or ``none``."""
    if text.strip().lower() == "none":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"expected a size such as 4G, 512M or none, got {text!r}",
                                 param_hint="--max-memory")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _annotated(items, annotations: tuple[Path, ...], label_map: Path | None, console: Console):
    """``items`` relabelled by Kinetics CSVs or mmaction2 video lists (several: merged as
    ``flowkit import rawframes`` merges its lists, :func:`flowkit.interop.ingest.match_all`); only
    labelled videos stay, and what matched nothing is reported (flowkit/annotations.py). Returns
    the items, the class names and the match (its report goes into ``--json``, :func:`_json`)."""
    from dataclasses import replace

    from ..interop.ingest import match_all

    match = match_all(annotations, [i.key for i in items], label_map, kind="videos")
    for line in match.report():
        console.print(f"labels: {line}", highlight=False, soft_wrap=True, markup=False)
    kept = [replace(i, label=match.labels[i.key][0], label_name=match.labels[i.key][1])
            for i in items if i.key in match.labels]
    if not kept:
        raise FlowkitError(f"{' and '.join(map(str, annotations))} "
                           f"label{'s' * (len(annotations) == 1)} none of the videos found")
    return kept, match.classes, match


def _single_video(path: Path) -> VideoItem:
    """One video file given instead of a folder: extracted unlabelled, under its file name."""
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise FlowkitError(f"{path}: a file but not a video ({', '.join(VIDEO_EXTENSIONS[:4])}, "
                           "...); give a folder of videos or one video file")
    return VideoItem(path, path.stem, -1, "")


#: Engine keywords that have an option of their own, and that option for a ``--param`` value:
#: ``build_engine`` sets them from the options, so a ``--param`` for one is refused, not dropped.
OPTION_PARAMS = {
    "backend": backend_option,
    "compile": lambda v: ("--compile (the default)" if v is True else "--no-compile" if v is False
                          else "--compile or --no-compile"),
    "weights": lambda v: f"--weights {v}",
}


def _engine_params(method: str, params: dict, weights: str | None) -> dict:
    """The engine's parameters: the ``--param`` ones and ``--weights``, typed and range-checked
    together from the engine's Params dataclass before any file is touched
    (flowkit.flow.check_engine_params): the checkpoint decides what else is valid (costvolume's
    ``layer`` belongs to the learned features ``--weights`` selects). A ``--param`` key that has
    its own option (:data:`OPTION_PARAMS`) is refused naming the option."""
    refuse_option_params(params, OPTION_PARAMS)
    if weights:
        takes = [n for n in list_engines() if "weights" in engine_parameters(n)]
        if method not in takes:
            raise FlowkitError(f"--weights: engine {method!r} takes no checkpoint (only "
                               f"{', '.join(takes)} do); drop --weights")
        params = {**params, "weights": weights}
    try:
        check_engine_params(method, params, options=OPTION_PARAMS)
    except EngineError as exc:
        raise FlowkitError(f"--param: {exc}") from None
    return params


def _print_summary(console: Console, summary) -> None:
    d = summary.to_dict()
    setup = f" after {d['setup_seconds']:.1f} s of setup" if d["setup_seconds"] >= 0.5 else ""
    rate = f", {d['pairs_per_s']:.3g} pairs/s{setup}" if d["pairs"] and d["pairs_per_s"] else ""
    # Videos another live run holds are not in the store yet: never counted as if they were.
    held = (f", {d['held']} skipped (being extracted by another process; rerun once it has "
            "ended to pick them up)" if d["held"] else "")
    console.print(f"[bold]{d['done']} done[/bold], {d['skipped'] - d['held']} skipped (already in "
                  f"the store){held}, "
                  f"[{'red' if d['failed'] else 'green'}]{d['failed']} failed[/]; "
                  f"{d['pairs']} frame pairs in {d['seconds']:.1f} s{rate} with {d['method']} "
                  f"({d['backend']} backend) -> {escape(d['store'])}", highlight=False, soft_wrap=True)
    for r in summary.ranks:
        console.print(f"  rank {r['rank']}: {r['done']} done, {r['skipped']} skipped, "
                      f"{r['failed']} failed, {r['pairs']} pairs in {r['seconds']:.1f} s",
                      highlight=False)
    for r in summary.results:
        if r.status == "failed":
            console.print(f"  failed: {r.reason}", highlight=False, soft_wrap=True,
                          markup=False)  # names and reasons as they are: no rich markup
        elif r.status == "done" and r.reason:
            console.print(f"  {r.key}: {r.reason}", highlight=False, soft_wrap=True,
                          markup=False)
    if summary.stopped:
        console.print(f"[red]stopped early[/red]: {escape(summary.stopped)} "
                      f"({_unfinished(summary)})", highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"  note: {note}", highlight=False, soft_wrap=True, markup=False)


def _unfinished(summary: ExtractSummary) -> str:
    """What a run stopped early left undone: the videos a stop found in progress, whose work it
    discarded (a rerun restarts them), and those never begun."""
    parts = []
    if summary.in_progress:
        n = summary.in_progress
        parts.append(f"{n} video{'s' * (n != 1)} in progress discarded with "
                     f"{'its' if n == 1 else 'their'} {summary.discarded_pairs} frame pairs, a "
                     f"rerun restarts {'it' if n == 1 else 'them'}")
    if summary.not_started or not parts:
        parts.append(f"{summary.not_started} video{'s' * (summary.not_started != 1)} not started")
    return "; ".join(parts)


@click.command("extract", short_help=summary("extract"))
@click.argument("video_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "store", required=True, type=click.Path(path_type=Path),
              help="Store directory (created if missing; rerunning resumes).")
@click.option("--method", default="tvl1", show_default=True, type=click.Choice(list_engines()),
              help="Motion engine.")
@click.option("--backward", is_flag=True,
              help="Compute backward flow (frame t+1 -> t) into flow/<method>_backward; run again "
                   "without it for forward flow.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Engine parameter, repeatable (e.g. --param warps=3).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Checkpoint of a trained engine (tvnet, motionnet, learned cost-volume features).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True,
              help="Numerics of tvl1/tvnet/costvolume: the CuPy kernels (CUDA, pip install "
                   ".[cuda13]) or torch; auto takes CuPy on CUDA when it imports.")
@click.option("--compile/--no-compile", default=True, show_default=True,
              help="Fuse the TV-L1 iteration with torch.compile (~20 s once, then several times "
                   "faster on CPU: benchmarks/RESULTS.md).")
@click.option("--size", default=None, help="Resize: SHORT_SIDE (e.g. 256) or HxW (e.g. 256x340).")
@click.option("--step", default=1, show_default=True, help="Keep every STEP-th frame.")
@click.option("--max-frames", type=int, default=None,
              help="At most this many frames per video (at least 2: flow needs a pair).")
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
@click.option("--workers", default="auto", show_default=True, metavar="N|auto",
              help="Extraction processes, sharing the torch threads (1: this process, all of "
                   "them); auto: one per usable core on the CPU (at most one per video), one on "
                   "CUDA.")
@click.option("--max-memory", default="4G", show_default=True, metavar="SIZE",
              help="Memory for the engine's batches, all workers together (e.g. 2G, 512M, none): "
                   "large frames get fewer pairs per call. TV-L1 needs ~0.5 GB per 1080p pair.")
@click.option("--split-list", "split_lists", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Videos and labels from a UCF101-style list (trainlist01.txt) instead of a "
                   "scan; repeatable (the videos of all the lists, one class index).")
@click.option("--class-index", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True,  # so that a repeat is seen and refused (one_file), not dropped
              help="classInd.txt for --split-list (found next to the lists by default).")
@click.option("--annotations", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels from a Kinetics CSV or an mmaction2 video list (path label); "
                   "repeatable (train and val, as import rawframes merges them). Only the videos "
                   "they label are extracted.")
@click.option("--label-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="Class names for --annotations lists, one per line (line i = "
                   "label i), or Something-Something's labels JSON {name: id}.")
@click.option("--shard", default=None, metavar="I/N",
              help="Process shard I of N (default: torchrun's RANK/WORLD_SIZE; under torchrun, its "
                   "ranks split shard I).")
@click.option("--redo", multiple=True, metavar="KEY",
              help="Recompute this video even if it is finished (e.g. a damaged one that `flowkit "
                   "info --validate --deep` or `flowkit train` named), repeatable.")
@click.option("--redo-mismatched", is_flag=True,
              help="Recompute the videos the store holds with other options (size, step, "
                   "max-frames, codecs, engine parameters), replacing them; without it such a run "
                   "is refused before computing anything.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Dry run: print which shard (rank) gets which videos and the expected frame "
                   "pairs per shard, then exit (--shard I/N or torchrun gives the count).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@handle_errors
def command(video_dir, store, method, backward, params, weights, device, backend, compile, size,
            step, max_frames, flow_codec, rgb_codec, lossless, rgb, batch, workers, max_memory,
            split_lists, class_index, annotations, label_map, shard, redo, redo_mismatched,
            plan_only, as_json):
    """Compute motion features for every video under VIDEO_DIR (or one video file) into the store
    given with -o.

    Labels come from the folder layout VIDEO_DIR/<class>/<video> or from --split-list. Finished
    videos are never recomputed: rerun the same command after a crash to resume. A store that
    already holds videos made with other options (size, step, codecs, engine parameters) is
    checked before anything is computed: the run is refused with the options that match, unless
    --redo-mismatched. One unreadable video is reported and skipped; the exit code is 1 if any
    video failed or the store's disk filled up. --backward stores the flow from frame t+1 to frame
    t as flow/<method>_backward: run once without and once with it for both directions.

    \b
    Examples:
      flowkit extract videos/ -o store/                      # TV-L1 flow + RGB, short side kept
      flowkit extract videos/ -o store/ --size 128 --step 2  # smaller, every 2nd frame
      flowkit extract videos/ -o store/ --method costvolume  # add a second engine beside tvl1
    """
    shard_tuple = None
    if shard:
        try:
            i, n = (int(v) for v in shard.split("/"))
            shard_tuple = (i, n)
        except ValueError:
            raise click.BadParameter(f"expected I/N, got {shard!r}", param_hint="--shard") from None
        # Checked here, not only where the run selects its share, so that --plan (which never
        # selects one) refuses what the run refuses: a 1-based Slurm array index gives N/N.
        if not (n >= 1 and 0 <= i < n):
            raise click.BadParameter(f"invalid shard {shard}: need 0 <= I < N (shards count from "
                                     "0; for a 1-based array index pass I-1)",
                                     param_hint="--shard")
    class_index = one_file(class_index, "--class-index", "give the classInd.txt the lists index")
    label_map = one_file(label_map, "--label-map", "give the label map all the --annotations "
                          "lists index (their ids must mean the same classes)")
    # Each only means something with the option it completes; ignored alone, it would leave the
    # store in a folder scan's sorted class order where the user asked for classInd.txt's.
    if class_index and not split_lists:
        raise click.UsageError("--class-index numbers the classes of --split-list lists; add "
                               "--split-list trainlist01.txt, or drop --class-index (a folder scan "
                               "numbers classes in sorted order)")
    if label_map and not annotations:
        raise click.UsageError("--label-map names the classes of an --annotations list; add "
                               "--annotations LIST, or drop --label-map")
    if lossless:
        ctx = click.get_current_context()
        given = [f"--{n.replace('_', '-')}" for n in ("flow_codec", "rgb_codec")
                 if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(f"--lossless chooses both codecs (float16 flow, raw RGB); "
                                   f"drop {' and '.join(given)} or --lossless")
        flow_codec, rgb_codec = LOSSLESS
    engine_params = _engine_params(method, parse_params(params), weights)
    config = ExtractConfig(method=method, backward=backward, engine_params=engine_params,
                           device=parse_device(device), backend=backend, compile=compile,
                           size=parse_size(size), step=step, max_frames=max_frames,
                           flow_codec=flow_codec, rgb_codec=rgb_codec, rgb=rgb, batch=batch,
                           workers=_workers(workers), redo=tuple(redo),
                           redo_mismatched=redo_mismatched,
                           max_memory=_bytes(max_memory))
    scan_notes: list[str] = []
    items, classes = _items(video_dir, split_lists, class_index, scan_notes)
    console = Console(stderr=True)
    match = None
    if annotations:
        items, classes, match = _annotated(items, annotations, label_map, console)
    labels = _label_report(match, items)
    # Under torchrun the ranks join one gloo group (CPU, whatever --device) to share the probing,
    # the plan and the summaries; rank 0 alone draws and prints.
    distributed.init("cpu", timeout=distributed.LONG_WAIT)
    main = distributed.rank() == 0
    if plan_only:
        for note in scan_notes if main else ():  # every rank scanned: rank 0 alone says so
            console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
        _print_plan(console, items, store, config, shard_tuple, as_json, main)
        return
    stop = StopFlag()
    bars = RichProgress(console) if main else contextlib.nullcontext(Progress())
    with stop_on_signals(stop, console, "the current chunk"):
        try:
            with bars as progress:
                result = extract(items, store, config, classes=classes,
                                 classes_numbered=bool(split_lists or annotations),
                                 shard=shard_tuple, progress=progress, stop=stop)
        except Stopped as exc:
            # A signal to the job stops every rank at its next chunk; a rank that had finished
            # its share waits in the gather below, which this one matches. Briefly: STOP_WAIT.
            parts = _gather_summaries(getattr(exc, "summary", None), STOP_WAIT)
            if main:
                _report_stop(console, exc, parts, as_json, scan_notes, labels)
            raise  # handle_errors: the line saying how to resume, exit 130 (Ctrl-C) or 143
        # Still under the signal handlers: a rank done with its share may wait here for hours,
        # and SIGTERM's default would kill it, losing its summary to the stopped ranks' gather.
        parts = _ranks_in_place(_gather_summaries(result, distributed.LONG_WAIT) or [result])
    world = distributed.world_size()
    distributed.shutdown()
    code = max(EXIT_PARTIAL if part.count("failed") or part.stopped else EXIT_OK for part in parts)
    if len(parts) > 1:
        result = ExtractSummary.combine(parts)
    if not main:  # rank 0 reports this rank's videos and exits with the worst code
        sys.exit(EXIT_OK)
    _add_scan_notes(result, scan_notes)
    _print_summary(console, result)
    if as_json:
        click.echo(json.dumps(_json(result, len(parts), world, labels), indent=2))
    if stop.is_set():  # signalled while waiting for the others: their stop is the run's
        raise Stopped(stop.reason)
    sys.exit(max(code, EXIT_PARTIAL if result.stopped else EXIT_OK))


#: How long a stopped rank waits for the others' summaries. torchrun's agent (and Slurm, by its
#: default KillWait) kills the ranks 30 s after its SIGTERM; the ranks, signalled together, stop
#: within about one chunk of each other. A rank that is not there by then (dead, or in a long
#: chunk) is left out, and rank 0 says its report covers itself only.
STOP_WAIT = timedelta(seconds=15)


def _gather_summaries(summary: ExtractSummary | None, wait: timedelta
                      ) -> list[ExtractSummary | None] | None:
    """Every rank's summary in rank order (``None`` for a rank stopped before its videos started);
    ``[summary]`` without torchrun. ``None`` when a rank does not reach the gather within ``wait``:
    the gather itself would wait for the group's timeout (days), so a barrier that gives up first
    (gloo's monitored barrier; the extraction group is always gloo) goes before it."""
    if not distributed.active():
        return [summary]
    import torch.distributed as dist

    try:
        dist.monitored_barrier(timeout=wait)
        return distributed.gather(summary)
    except RuntimeError:  # a rank late or gone (gloo's timeout or a closed connection)
        return None


def _json(result: ExtractSummary, reported: int, world: int, labels: dict | None = None) -> dict:
    """The summary's JSON; under torchrun also how many of the ranks it covers (``ranks_reported``
    of ``world_size``: fewer when a stopped run's ranks could not all be gathered). ``labels``
    (:func:`_label_report`): its keys join the summary's and its ``notes`` go first in ``notes``,
    as ``flowkit import rawframes --json`` reports its labels."""
    d = result.to_dict()
    if labels:
        videos = d.pop("videos")  # the long list stays last
        d = {**d, **{k: v for k, v in labels.items() if k != "notes"},
             "notes": labels["notes"] + d["notes"], "videos": videos}
    return {**d, "ranks_reported": reported, "world_size": world} if world > 1 else d


def _label_report(match, items: list[VideoItem]) -> dict:
    """What ``--json`` says of the labels, under ``flowkit import rawframes --json``'s keys:
    ``labels`` (the report printed as ``labels:`` lines), ``unmatched_rows`` (``file:line
    text``), ``unlabelled_videos`` (left out by ``--annotations``; without it, those extracted
    unlabelled, -1) and ``notes``: the report's findings (rows matching no video, videos without
    a label, ``class_<id>`` stand-ins), so a script reading ``notes`` sees them as the text does.
    ``match``: the :class:`~flowkit.annotations.LabelMatch` of ``--annotations``, None without."""
    if match is None:
        return {"labels": [], "unmatched_rows": [], "notes": [],
                "unlabelled_videos": [item.key for item in items if item.label < 0]}
    report = match.report()
    return {"labels": report, "unmatched_rows": list(match.unmatched),
            "unlabelled_videos": list(match.unlabelled), "notes": report[1:]}  # [0]: the count


def _ranks_in_place(parts: list[ExtractSummary | None]) -> list[ExtractSummary]:
    """The gathered summaries with an empty one for each rank stopped before its videos started
    (``None``: a second signal during its setup), so that the ranks keep their positions."""
    known = next(p for p in parts if p is not None)
    empty = ExtractSummary(known.store, known.method, [], 0.0, backend=known.backend,
                           stopped="stopped before its videos started", interrupted=True)
    return [p if p is not None else empty for p in parts]


def _add_scan_notes(result: ExtractSummary, scan_notes: tuple[str, ...] | list[str]) -> None:
    """Put the scan's notes (a video skipped as a second link to another, ...) first among the
    summary's notes: printed once with them and kept in ``--json``, as import keeps its walk's.
    Rank 0's alone: every rank scans the same folder, and the ranks' summaries are combined."""
    result.notes[:0] = scan_notes


def _report_stop(console: Console, stopped: Stopped, parts: list | None, as_json: bool,
                 scan_notes: tuple[str, ...] | list[str] = (), labels: dict | None = None
                 ) -> None:
    """What a run stopped by Ctrl-C or SIGTERM finished: the summary of every rank (``parts``,
    :func:`_gather_summaries`), and with ``--json`` its JSON (``"interrupted": true``), so that a
    script or a Slurm job cut at its time limit learns what is in the store. When the ranks could
    not be gathered (``parts`` None), rank 0's own summary, labelled "rank 0 of N only".
    ``scan_notes``: the scan's (:func:`_add_scan_notes`); ``labels``: :func:`_label_report`."""
    if parts is None:
        parts, alone = [getattr(stopped, "summary", None)], True
    else:
        alone = False
    if all(p is None for p in parts):
        return
    parts = _ranks_in_place(parts)
    result = ExtractSummary.combine(parts) if len(parts) > 1 else parts[0]
    _add_scan_notes(result, scan_notes)
    _print_summary(console, result)
    world = distributed.world_size()
    if alone and world > 1:
        console.print(f"[red]rank 0 of {world} only[/red]: the other ranks did not report within "
                      f"{STOP_WAIT.seconds} s; `flowkit info {escape(shell_word(result.store))}` "
                      "counts what the store holds", highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps(_json(result, len(parts), world, labels), indent=2))


def _print_plan(console: Console, items, store: Path, config: ExtractConfig, shard, as_json: bool,
                main: bool) -> None:
    """``--plan``: per shard its video count, expected frame pairs and videos already in the store
    (stderr), and one ``RANK<TAB>KEY<TAB>EXPECTED`` line per video (stdout; --json: the plan).
    ``--shard K/N`` under torchrun: share K split over the job's ranks, as the run would split it
    (:func:`flowkit.extract.shard_items`)."""
    from ..extract import finished_keys, shard_from_env, shard_plan

    world = shard_from_env()[1]
    count = shard[1] if shard else world
    plan = shard_plan(items, config, count)
    share_of = ""
    if shard and world > 1:  # an array task run by torchrun: its ranks split share K again
        plan, count = plan.subplan(shard[0], world), world
        share_of = f"share {shard[0]}/{shard[1]} "
    distributed.shutdown()
    if not main:
        return
    done = finished_keys(store, config.flow_name, items)
    unit = "expected frame pairs" if plan.basis == "frame pairs" else "bytes (no frame counts)"
    total = max(sum(plan.costs.values()), 1)
    for r in range(count):
        share = plan.share(r)
        console.print(f"{share_of}rank {r}: {len(share)} videos, {plan.load(r)} {unit} "
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
