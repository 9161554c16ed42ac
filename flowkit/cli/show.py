"""``flowkit show STORE VIDEO -o out.png|out.mp4``: look at stored flow."""
from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from ..conventions import is_backward
from ..errors import FlowkitError, shell_word
from ..files import check_writable_folder
from ..labels import VIDEO_EXTENSIONS
from ..store import FlowStore
from ..video import write_video
from ..viz import flow_grid, robust_max_flow
from . import handle_errors, summary
from .options import check_output_file

_VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


DEFAULT_FLOW = "tvl1"  # extract's default engine


def _pick_flow(store: FlowStore, key: str, name: str | None) -> str:
    """``name``, checked; by default tvl1 where the video has it, else its first forward flow by
    name (adding an engine beside tvl1 does not change what the same command draws)."""
    names = store.flow_names(key)
    if not names:
        raise FlowkitError(f"video {key!r} holds no flow; extract it with `flowkit extract`")
    if name is None:
        if DEFAULT_FLOW in names:
            return DEFAULT_FLOW
        return next((n for n in names if not is_backward(n)), names[0])
    if name not in names:
        raise FlowkitError(f"video {key!r} has no flow {name!r}; it has: {', '.join(names)}")
    return name


def _missing_key_hint(fs: FlowStore, store: str, key: str) -> str:
    """What to try for a key the store lacks: keys with ``key`` in them, and the command that lists
    them all. A key names a video without its file extension (``walk/v_X``, not
    ``walk/v_X.avi``), so one given with an extension is told so and matched without it."""
    stem, ext = os.path.splitext(key)
    no_ext = ext.lower() in VIDEO_EXTENSIONS
    if no_ext:
        key = stem
    close = [k for k in fs.keys() if key in k][:5]
    hint = "; keys have no file extension" if no_ext else ""
    if close:
        return f"{hint}; did you mean: {', '.join(close)}"
    return f"{hint}; `flowkit info {shell_word(store)} --keys` lists them"


def _missing_video(fs: FlowStore, store: str, key: str) -> str:
    """Why the store lacks ``key``, as one line: another run is extracting it now (a live claim:
    rerun when it is done), else no such video (:func:`_missing_key_hint`)."""
    holder = fs.in_flight([key]).get(key)
    if holder is not None:
        return f"video {key!r} is being extracted by {holder}; rerun when it is done"
    return f"no video {key!r} in {store}{_missing_key_hint(fs, store, key)}"


def _check_output(out: Path) -> None:
    """Before reading anything: the folder exists and takes a new file, and the extension is a
    picture or video format this machine can write."""
    check_output_file("-o", out)
    check_writable_folder(out.parent)  # cv2.imwrite only returns False, PyAV raises late
    if out.suffix.lower() in _VIDEO_SUFFIXES:
        return
    import cv2

    if not out.suffix or not cv2.haveImageWriter(str(out)):
        raise FlowkitError(f"-o {out}: {out.suffix or 'no extension'} is not a picture format; "
                           f"use .png or .jpg (a picture) or {', '.join(sorted(_VIDEO_SUFFIXES))} "
                           "(a video)")


def _frame_offset(store: FlowStore, key: str, name: str) -> int:
    """Which RGB frame flow pair t lives on: t for forward flow, t + 1 for backward flow (pair t
    maps frame t+1's pixels to frame t, so it is drawn on frame t+1's grid)."""
    record = store.meta(key)["flows"].get(name, {})
    return 1 if record.get("direction") == "backward" or is_backward(name) else 0


def _write_png(out: Path, store: FlowStore, key: str, name: str, frames: list[int],
               max_flow: float | None) -> float:
    """Rows of [frame | flow | colour wheel]; returns the colour scale used (pixels)."""
    flows = store.read_flow(key, name, index=frames)
    offset = _frame_offset(store, key, name)
    rgb = (store.read_rgb(key, index=[t + offset for t in frames])
           if store.meta(key)["has_rgb"] else None)
    max_flow = max_flow or robust_max_flow(flows)
    image = flow_grid(rgb, flows, max_flow=max_flow, legend=True)
    import cv2
    if not cv2.imwrite(str(out), image[..., ::-1]):
        # extension and folder were checked before the work (_check_output): what is left is
        # the file system changing since (full, remounted read-only)
        raise FlowkitError(f"{out}: could not write the image; check the folder's free space "
                           "and permissions, then rerun")
    return max_flow


def _write_video(out: Path, store: FlowStore, key: str, name: str, max_flow: float | None,
                 fps: float) -> float:
    """One video frame per flow pair: [frame | flow | colour wheel], as a PNG's first row."""
    n = store.meta(key)["num_frames"] - 1
    has_rgb = store.meta(key)["has_rgb"]
    offset = _frame_offset(store, key, name)
    # One colour scale for the whole clip: flicker-free, and comparable from frame to frame.
    if max_flow is None:
        max_flow = robust_max_flow([store.read_flow(key, name, index=t)
                                    for t in range(0, n, max(1, n // 16))])

    def frames():
        for t in range(n):
            rgb = [store.read_rgb(key, index=t + offset)] if has_rgb else None
            yield flow_grid(rgb, [store.read_flow(key, name, index=t)], max_flow=max_flow,
                            legend=True)

    write_video(out, frames(), fps=fps)
    return max_flow


@click.command("show", short_help=summary("show"))
@click.argument("store")
@click.argument("video")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="out.png (frames and flow colour side by side) or out.mp4 (the whole video).")
@click.option("--flow", "name", default=None,
              help="Flow dataset name [default: tvl1, else the video's first forward flow].")
@click.option("--frame", "frames", multiple=True, type=int,
              help="Frame pair index for a PNG, repeatable (default: first, middle, last).")
@click.option("--max-flow", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Flow magnitude drawn at full colour, pixels [default: the 98th percentile of "
                   "the shown flow; faster pixels are drawn darker].")
@handle_errors(stopped="the picture or video is not finished; rerun the same command")
def command(store, video, output, name, frames, max_flow):
    """Colour-code the flow of VIDEO (its key, e.g. class/video_name) from STORE.

    Hue is the direction (right red, down yellow, left cyan, up blue), saturation the speed; the
    colour wheel beside the first row (every frame of a video) prints the speed at its rim. A PNG
    shows three frame pairs (or those given with --frame) beside their frames when the store has
    RGB; a video file shows the whole clip. Backward flow (tvl1_backward) is drawn beside frame
    t+1, the frame whose pixels it moves.

    \b
    Examples:
      flowkit show store/ pan_left/pan_left_0 -o flow.png
      flowkit show store/ pan_left/pan_left_0 -o flow.png --frame 0 --frame 10 --max-flow 4
      flowkit show store/ -o flow.png -- -1Kf0ktVsQ4_000005_000015  # a key that starts with '-'
    """
    _check_output(output)
    with FlowStore(store) as fs:
        if video not in fs:
            raise FlowkitError(_missing_video(fs, store, video))
        name = _pick_flow(fs, video, name)
        n = fs.meta(video)["num_frames"] - 1
        if output.suffix.lower() in _VIDEO_SUFFIXES:
            scale = _write_video(output, fs, video, name, max_flow,
                                 float(fs.meta(video)["fps"]) or 25.0)
        else:
            picked = sorted(set(frames)) if frames else sorted({0, n // 2, n - 1})
            bad = [t for t in picked if not 0 <= t < n]
            if bad:
                raise FlowkitError(f"frame {bad[0]} out of range: {video!r} has {n} flow frames")
            scale = _write_png(output, fs, video, name, picked, max_flow)
    click.echo(f"wrote {output}: flow/{name}, full colour at {scale:.3g} px")
