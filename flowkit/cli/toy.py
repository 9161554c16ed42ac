"""``flowkit toy OUT_DIR``: a toy action dataset whose classes differ only in motion."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..toy import DEFAULT_CLASSES, DIFFICULTIES, make_toy_videos, parse_toy_class
from . import handle_errors, summary
from .options import parse_size


# Motions a horizontal mirror turns into another class's (right <-> left, cw <-> ccw).
_MIRRORED = {"right", "left", "cw", "ccw"}


def _mirror_hint(names) -> str:
    """The line telling to train with --no-flip, for classes a mirror turns into one another
    (train's default random flips show rightward motion labelled `left`); else ""."""
    if not any(m in _MIRRORED for name in names for m, _ in parse_toy_class(name)):
        return ""
    return ("train on it with `flowkit train ... --no-flip`: a mirror turns left into right and "
            "cw into ccw, so random flips would mislabel those classes")


def _presets(param: str) -> str:
    """``"easy 0, default 3, hard 10"``: ``param`` in each difficulty preset, for --help."""
    return ", ".join(f"{name} {values[param]:g}" for name, values in DIFFICULTIES.items())


@click.command("toy", short_help=summary("toy"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--classes", default=",".join(DEFAULT_CLASSES), show_default=True,
              help="Comma-separated classes: right, left, up, down, cw, ccw, still, each optionally "
                   "suffixed _slow/_fast, joined by _then_ for a sequence (e.g. left_then_right).")
@click.option("--videos-per-class", default=8, show_default=True)
@click.option("--frames", default=16, show_default=True, help="Frames per video.")
@click.option("--size", default="64x64", show_default=True, help="HxW of the videos.")
@click.option("--difficulty", type=click.Choice(list(DIFFICULTIES)), default="default",
              show_default=True,
              help="Preset for noise, motion, distractors and contrast; the options below override it.")
@click.option("--noise", type=float, default=None,
              help="Per-pixel Gaussian noise std, 0-255 units [preset: " + _presets("noise") + "].")
@click.option("--motion", type=float, default=None,
              help="Base speed in pixels/frame [preset: " + _presets("motion") + "].")
@click.option("--distractors", type=int, default=None,
              help="Randomly moving objects per video [preset: " + _presets("distractors") + "].")
@click.option("--contrast", type=float, default=None,
              help="Texture contrast in (0, 1] [preset: " + _presets("contrast") + "].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--test-fraction", default=0.25, show_default=True,
              help="Held-out videos per class for trainlist01.txt/testlist01.txt; 0 writes no lists.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="Frame rate the videos are written with.")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier toy dataset in OUT_DIR (finished or interrupted).")
@handle_errors
def command(out_dir, classes, videos_per_class, frames, size, difficulty, noise, motion,
            distractors, contrast, seed, test_fraction, fps, overwrite):
    """Write OUT_DIR/<class>/<class>_<i>.mp4 of random textures moved by each class's motion, plus
    classInd.txt, toy.json and UCF101-style split lists. Appearance is drawn independently of the
    class, so only motion tells classes apart. Ready for `flowkit extract`, then `flowkit train
    ... --no-flip` (a mirror turns left into right and cw into ccw: random flips would mislabel
    them). An interrupted run is finished by the same command (toy.json is written last).

    \b
    Examples:
      flowkit toy toy/ --videos-per-class 8
      flowkit toy toy/ --classes left,right,cw,ccw --difficulty hard
    """
    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    hw = parse_size(size)
    if not isinstance(hw, tuple):
        raise click.BadParameter("expected HxW, e.g. 64x64", param_hint="--size")
    start = time.perf_counter()
    paths = make_toy_videos(out_dir, classes=names, videos_per_class=videos_per_class,
                            frames=frames, size=hw, difficulty=difficulty, noise=noise,
                            motion=motion, distractors=distractors, contrast=contrast, seed=seed,
                            test_fraction=test_fraction, fps=fps, overwrite=overwrite)
    click.echo(f"wrote {len(paths)} videos of {len(names)} classes under {out_dir} "
               f"in {time.perf_counter() - start:.1f} s")
    hint = _mirror_hint(names)
    if hint:
        click.echo(f"note: {hint}")
