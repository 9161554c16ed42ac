"""``flowkit evaluate RUN_DIR [STORE]``: multi-clip, multi-crop testing of a trained run.

A thin wrapper over :func:`flowkit.train.evaluate_run`: rebuilds the model from the checkpoint,
averages softmax scores over clips x crops views per video, prints top-1 / top-5 / mean class
accuracy and writes ``eval.json``, ``confusion.json`` and ``confusion.png`` to ``RUN_DIR/eval``
(or ``--out``). Under torchrun the ranks share the videos and rank 0 prints and writes.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from . import KEPT_NOTHING, handle_errors, summary


@click.command("evaluate", short_help=summary("evaluate"))
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("store", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", default="best", show_default=True,
              help="best (the epoch of the best validation top-1: on those videos a note says "
              "so; last gives a test score), last, or a checkpoint file of RUN_DIR's run "
              "(another run's is refused).")
@click.option("--clips", type=int, default=10, show_default=True,
              help="Evenly spaced clips per video (TSN runs: segment offsets).")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default="3", show_default=True,
              help="Crops per clip (centre; left/centre/right; corners+centre and their flips, "
                   "without the flips for a run trained with --no-flip: 5 views).")
@click.option("--split", type=click.Choice(["auto", "val", "all"]), default="auto",
              show_default=True, help="auto: the run's validation videos when STORE is its "
              "training store, else all videos but those the run trained on (by key: a copy of "
              "the training store counts).")
@click.option("--split-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="Evaluate the videos of a UCF101 list (testlist01.txt) "
              "instead; repeatable: the union of the lists' videos.")
@click.option("--skip-missing/--no-skip-missing", default=None,
              help="Leave out listed videos STORE lacks (their extraction failed), counted and "
              "named in a note, instead of refusing the list [default: as the run was trained].")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Videos per batch (each of clips x crops views).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader workers (0: load in the main process).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder for eval.json and the confusion matrix [RUN_DIR/eval].")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
@handle_errors(stopped=KEPT_NOTHING + " to evaluate")  # the results are written at the end only
def command(run_dir, store, checkpoint, clips, crops, split, split_list, skip_missing, batch_size,
            workers, device, out_dir, as_json):
    """Evaluate the classifier trained in RUN_DIR on STORE (default: its training store).

    Scores the run's validation videos by default (or all of STORE's videos, or those of the
    lists) and says which, and how many of them the model was trained on: only a score on videos
    it never saw is called held-out. Videos without a label of the run's classes are left out (a
    note names them), and with --skip-missing listed videos STORE lacks (counted in the split
    described). best.pt was chosen on the run's validation videos: scored on them it is not a
    test score (a note and selected_on say so; use --checkpoint last). Top-5 is reported only
    with more than 5 classes.

    \b
    Examples:
      flowkit evaluate run/                                  # the run's validation videos
      flowkit evaluate run/ store/ --split-list testlist01.txt --checkpoint last
      flowkit evaluate run/ other_store/ --clips 1 --crops 1 --json
    """
    from rich.console import Console
    from rich.markup import escape

    import contextlib

    from .. import distributed
    from ..progress import Progress
    from ..train import evaluate_run
    from ..progress import StopFlag
    from ..train.ddp import rank_device
    from .progress import RichProgress, stop_on_signals

    if skip_missing and not split_list:
        raise click.UsageError("--skip-missing needs --split-list (it leaves out listed videos "
                               "STORE lacks)")
    distributed.init(rank_device(device))
    main = distributed.rank() == 0
    console = Console(stderr=True, soft_wrap=True, quiet=not main)
    bars = RichProgress(console, transient=True) if main else contextlib.nullcontext(Progress())
    stop = StopFlag()
    with bars as progress, stop_on_signals(stop, console, "the current batch"):
        result = evaluate_run(run_dir, store, checkpoint=checkpoint, clips=clips, crops=int(crops),
                              split=list(split_list) if split_list else split,
                              batch_size=batch_size, workers=workers, device=device,
                              out_dir=out_dir, skip_missing=skip_missing, progress=progress,
                              stop=stop)
    distributed.shutdown()
    if not main:
        return
    r = result.report
    for note in r["notes"]:
        console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    top5 = f", top-5 {100 * r['top5']:.2f}%" if r["top5"] is not None else ""
    console.print(f"[bold]top-1 {100 * r['top1']:.2f}%[/bold]{top5}, "
                  f"mean class accuracy {100 * r['mean_class_accuracy']:.2f}% on "
                  f"{r['num_videos']} videos ({r['split']}; {_held_out(r)}), {r['views']} views "
                  f"each ({r['clips']} clips x {_crops(r)}), {r['videos_per_s']:.1f} "
                  f"videos/s -> {escape(str(result.out_dir))}", highlight=False, soft_wrap=True)
    if r["training_videos"]:
        console.print("note: videos the model was trained on score higher than new ones; for a "
                      "held-out score train with a validation split (--val-fraction, --val-list) "
                      "or evaluate with --split-list FILE of other videos", highlight=False)
    if as_json:
        summary = {k: v for k, v in r.items() if k != "predictions"}
        if result.out_dir is not None:
            summary["files"] = {name: str(result.out_dir / name)
                                for name in ("eval.json", "confusion.json", "confusion.png")}
        click.echo(json.dumps(summary, indent=2, allow_nan=False))


def _crops(report: dict) -> str:
    """``"3 crops"``; ten-crop of a run trained with --no-flip says it left out the mirrors."""
    if report["crops"] == 10 and not report.get("mirrored_views", True):
        return (f"{report['crop_views']} crops: ten-crop without mirrored views, as trained "
                "with --no-flip")
    return f"{report['crops']} crops"


def _held_out(report: dict) -> str:
    n, trained = report["num_videos"], report["training_videos"]
    if not trained:
        return "held out: none used in training"
    if trained == n:
        return "NOT held out: all of them were training videos"
    return f"NOT held out: {trained} of them were training videos"
