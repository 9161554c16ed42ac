"""``flowkit samples OUT_DIR``: a small folder of real-photo videos with known motion."""
from __future__ import annotations

from pathlib import Path

import click

from ..samples import MOTIONS, make_sample_videos
from . import handle_errors, summary
from .options import parse_size


@click.command("samples", short_help=summary("samples"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--classes", default="pan_left,pan_right,zoom_in,rotate_cw", show_default=True,
              help=f"Comma-separated motion classes from: {', '.join(MOTIONS)}.")
@click.option("--videos-per-class", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--frames", type=click.IntRange(min=2), default=16, show_default=True,
              help="Frames per video (at least 2: one frame shows no motion).")
@click.option("--size", default="128x160", show_default=True, help="HxW of the videos.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@handle_errors
def command(out_dir, classes, videos_per_class, frames, size, seed):
    """Write OUT_DIR/<class>/<class>_<i>.mp4: photographs scikit-image ships, panned, zoomed or
    rotated by a known motion. A ready-made input for `flowkit extract`.

    \b
    Examples:
      flowkit samples videos/
      flowkit samples videos/ --classes pan_left,zoom_in --videos-per-class 1 --frames 8
    """
    names = tuple(c.strip() for c in classes.split(",") if c.strip())
    unknown = [c for c in names if c not in MOTIONS]
    if unknown:
        raise click.BadParameter(f"unknown class {unknown[0]!r}; choose from {', '.join(MOTIONS)}",
                                 param_hint="--classes")
    hw = parse_size(size)
    if not isinstance(hw, tuple):
        raise click.BadParameter("expected HxW, e.g. 128x160", param_hint="--size")
    paths = make_sample_videos(out_dir, classes=names, videos_per_class=videos_per_class,
                               frames=frames, size=hw, seed=seed)
    click.echo(f"wrote {len(paths)} videos under {out_dir}")
