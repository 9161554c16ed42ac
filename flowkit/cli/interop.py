"""``flowkit export rawframes STORE OUT_DIR`` and ``flowkit import rawframes DIR -o STORE``.

Two command groups (``import`` is a Python keyword, hence this module's name) over
:mod:`flowkit.interop`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from ..conventions import backward_name
from ..interop import ExportConfig, ImportConfig, export_rawframes, import_rawframes
from ..progress import StopFlag
from . import EXIT_OK, EXIT_PARTIAL, handle_errors, summary
from .progress import RichProgress, stop_on_signals


@click.group("export", short_help=summary("export"))
def export_group():
    """Write a store in the formats other tools read: mmaction2 / TSN / denseflow rawframes, with
    the annotation lists mmaction2's RawframeDataset reads.

    \b
    Examples:
      flowkit export rawframes store/ rawframes/
      flowkit export rawframes store/ rawframes/ --bound 20 --quality 95 --start-index 0
    """


@click.group("import", short_help=summary("import"))
def import_group():
    """Read what other tools wrote (mmaction2 rawframes, denseflow's JPEG, PNG or HDF5 flow) into
    a store that `flowkit train` uses unchanged.

    \b
    Examples:
      flowkit import rawframes rawframes/ -o store/
      flowkit import rawframes rawframes/ -o store/ --annotations train_rawframes.txt
    """


def _finish(console: Console, d: dict, what: str, as_json: bool) -> None:
    console.print(f"[bold]{d['done']} done[/bold], {d['skipped']} skipped, "
                  f"[{'red' if d['failed'] else 'green'}]{d['failed']} failed[/] in "
                  f"{d['seconds']:.1f} s -> {escape(what)}", highlight=False)
    for video in d["videos"]:
        if video["status"] == "failed":
            console.print(f"  failed: {video.get('source', video['key'])}: {video['reason']}",
                          highlight=False, soft_wrap=True, markup=False)
    for note in d["notes"]:
        console.print(f"  note: {note}", highlight=False, soft_wrap=True, markup=False)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    sys.exit(EXIT_PARTIAL if d["failed"] else EXIT_OK)


@export_group.command("rawframes", short_help="STORE -> mmaction2 rawframes and annotation lists.")
@click.argument("store", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--flow", "flow_name", default=None, metavar="NAME",
              help="Forward flow to export, with its backward flow NAME_backward where held "
                   "(as flow_x_m1_* / flow_y_m1_*) [default: the store's only forward flow; a "
                   "store of several is refused, naming them].")
@click.option("--bound", default=20.0, show_default=True,
              help="Flow range in pixels: v > B -> 255, v < -B -> 0 (denseflow's quantiser).")
@click.option("--quality", default=95, show_default=True, type=click.IntRange(1, 100),
              help="JPEG quality of frames and flow images (stored JPEG frames of this quality "
                   "are written as they are).")
@click.option("--start-index", default=1, show_default=True, type=click.Choice(["0", "1"]),
              help="Number of the first file: 1 (mmaction2's start_index) or 0 (denseflow).")
@click.option("--rgb/--no-rgb", default=True, show_default=True, help="Write img_*.jpg.")
@click.option("--flow-images/--no-flow-images", "flow", default=True, show_default=True,
              help="Write flow_x_* / flow_y_*.jpg.")
@click.option("--split-list", "split_lists", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also write annotation lists of this split (trainlist01.txt or an mmaction2 "
                   "list); repeatable.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Videos exported in parallel (threads).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@handle_errors
def export_rawframes_command(store, out_dir, flow_name, bound, quality, start_index, rgb, flow,
                             split_lists, workers, as_json):
    """Write STORE as mmaction2 rawframes: OUT_DIR/<class>/<video>/img_00001.jpg,
    flow_x_00001.jpg, flow_y_00001.jpg (and flow_x_m1_00002.jpg ... where the store holds the
    flow's backward flow), plus <split>_rawframes.txt / <split>_flow.txt annotation lists and
    label_map.txt. Rerunning resumes; finished videos are kept.

    \b
    Examples:
      flowkit export rawframes store/ rawframes/
      flowkit export rawframes store/ rawframes/ --split-list trainlist01.txt --workers 2
    """
    config = ExportConfig(flow_name=flow_name, bound=bound, quality=quality,
                          start_index=int(start_index), rgb=rgb, flow=flow, workers=workers,
                          split_lists=split_lists)
    console = Console(stderr=True)
    stop = StopFlag()
    with RichProgress(console) as progress, stop_on_signals(stop, console, "the current videos"):
        result = export_rawframes(store, out_dir, config, progress=progress, stop=stop)
    d = result.to_dict()
    if d["clipped_values"]:
        d["notes"].insert(0, f"{d['clipped_values']} flow values "
                             f"({100 * d['clipped_fraction']:.3f}%) were beyond +-{bound:g} px "
                             "and written as 0 / 255")
    backward = sum(v["backward_pairs"] for v in d["videos"] if v["status"] == "done")
    if backward:
        d["notes"].append(f"{backward} backward flow pairs written as flow_{{x,y}}_m1_*.jpg "
                          "(denseflow's names: numbered by the frame each pair starts from)")
    if d["unlabelled"]:
        d["notes"].append(f"{len(d['unlabelled'])} unlabelled videos are left out of the lists, "
                          f"e.g. {d['unlabelled'][0]}")
    for path in d["lists"]:
        console.print(f"  wrote {path}", highlight=False, soft_wrap=True, markup=False)
    _finish(console, d, str(out_dir), as_json)


@import_group.command("rawframes", short_help="Rawframes folders / denseflow .h5 -> a store.")
@click.argument("rawframes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "store", required=True, type=click.Path(path_type=Path),
              help="Store directory (created if missing; rerunning resumes).")
@click.option("--annotations", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels from an mmaction2 rawframes list (frame_dir total_frames label) or a "
                   "Kinetics CSV; repeatable (train and val). Only labelled videos are imported.")
@click.option("--label-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="Class names, one per line (line i = label i; the ids of annotation lists "
                   "and Kinetics CSV index it), or Something-Something's labels JSON {name: id} "
                   "[default: DIR/label_map.txt when present, else the class folders].")
@click.option("--bound", type=float, default=None,
              help="Range in pixels the 8-bit flow_x / flow_y images were quantised with "
                   "(denseflow -b; denseflow's PNG flow_*.png carries its own) [default: the "
                   "bound a flowkit export recorded in its .flowkit-export.json, else 20; a "
                   "--bound that contradicts the recorded one is refused].")
@click.option("--flow-name", default="tvl1", show_default=True,
              help="Store the flow as flow/NAME (flowkit train reads tvl1 by default).")
@click.option("--flow-codec", default="jpegls:0.1", show_default=True, metavar="SPEC",
              help="How flow is stored (as in flowkit extract); uint8:BOUND keeps 8-bit levels "
                   "exactly.")
@click.option("--rgb-codec", default="jpeg:95", show_default=True, metavar="SPEC",
              help="How RGB frames are stored: jpeg:QUALITY (JPEGs of that quality are kept "
                   "byte for byte) or raw.")
@click.option("--rgb/--no-rgb", default=True, show_default=True, help="Import img_*.jpg.")
@click.option("--flow/--no-flow", default=True, show_default=True,
              help="Import flow (images or denseflow HDF5).")
@click.option("--fps", default=0.0, show_default=True, help="Frame rate to record (0: unknown).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Videos imported in parallel (threads).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@handle_errors
def import_rawframes_command(rawframes_dir, store, annotations, label_map, bound, flow_name,
                            flow_codec, rgb_codec, rgb, flow, fps, workers, as_json):
    """Import RAWFRAMES_DIR (<class>/<video>/img_*.jpg, flow_x_*.jpg, flow_y_*.jpg, 1- or
    0-based, flow_x_p2_* step variants, denseflow's flow_*.png or <video>.h5) into the store
    STORE. Backward flow (flow_x_m1_*, flow_m1_*.png, denseflow <video>_m1.h5) goes to
    flow/<flow-name>_backward. Every video's frame and flow counts are checked; a mismatch is
    reported and the video skipped. Rerunning adds what the store lacks (the flow after
    --no-flow, another --flow-name) and keeps the videos' labels.

    \b
    Examples:
      flowkit import rawframes rawframes/ -o store/
      flowkit import rawframes rawframes/ -o store/ --flow-name rawframes --bound 20
    """
    config = ImportConfig(bound=bound, flow_name=flow_name, flow_codec=flow_codec,
                          rgb_codec=rgb_codec, rgb=rgb, flow=flow, annotations=annotations,
                          label_map=label_map, fps=fps, workers=workers)
    console = Console(stderr=True)
    stop = StopFlag()
    with RichProgress(console) as progress, stop_on_signals(stop, console, "the current videos"):
        result = import_rawframes(rawframes_dir, store, config, progress=progress, stop=stop)
    for line in result.labels:
        console.print(f"  labels: {line}", highlight=False, soft_wrap=True, markup=False)
    d = result.to_dict()
    if rgb and d["frames"]:
        kept = d["rgb_kept_as_is"]
        d["notes"].append(f"{kept} of {d['frames']} RGB JPEGs stored byte for byte" + (
            f"; the others were decoded and stored as {rgb_codec} (another quality or size, "
            "Exif data, or not a colour JPEG)" if kept < d["frames"] else ""))
    backward = sum(v["backward_pairs"] for v in d["videos"] if v["status"] == "done")
    if backward:
        d["notes"].append(f"{backward} backward flow pairs stored as "
                          f"flow/{backward_name(flow_name)}")
    _finish(console, d, str(store), as_json)
