"""DDN against the size of the motion: does its cost volume need motion of a feature pixel or more?

DDN matches features of stride 4 (``conv1`` /2, ``maxpool`` /2) over a window of +-3 feature
pixels and reads the displacement as a soft-argmax. On the 48x48 toy set of ``ddn_tvnet.py`` (base
motion 1.5 px/frame, 40 px crops) the texture moves 0.25-0.6 feature pixels a frame, and DDN
learned little. This script trains the same DDN, with the same recipe (``ddn_tvnet.py``'s
options), on toy sets that differ only in their base motion (``flowkit toy --motion M``;
everything else, including the seed that draws the textures and speeds, as in ``ddn_tvnet.py``),
3 seeds each: all three branches, the motion branch alone, and all three branches on features of
stride 2 (``feature_stride=2``: the stem without its max-pool)::

    .venv/bin/python benchmarks/ddn_motion.py                 # writes benchmarks/results/ddn_motion.md
    .venv/bin/python benchmarks/ddn_motion.py --quick         # smoke run, Markdown to stdout
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import recognition as rec  # noqa: E402  (the recognition evidence's helpers: runs, tables, machine)
from ddn_tvnet import COMMON, toy_options  # noqa: E402  (the same toy set and recipe)
from recognition import Config  # noqa: E402

#: Base motions, pixels/frame: ddn_tvnet.py's 1.5, then 2x and 4x.
MOTIONS = (1.5, 3.0, 6.0)
ROWS = (Config("DDN, all three branches", "ddn"),
        Config("DDN, motion branch only", "ddn", ("branches=motion",)),
        Config("DDN, all three branches, feature stride 2", "ddn", ("feature_stride=2",)))
#: Input pixels per feature pixel where DDN's cost volume works (ddn.py: stride 4 by default).
FEATURE_STRIDE = 4


def make_store(work: Path, motion: float, videos_per_class: int, log: Path):
    """Toy videos of base ``motion`` + their store (RGB; TV-L1 flow, unused by DDN); reused."""
    import json

    videos, store = work / f"toy_m{motion:g}", work / f"store_m{motion:g}"
    args = [*toy_options("default"), "--motion", f"{motion:g}", "--videos-per-class",
            str(videos_per_class)]
    if not (videos / "toy.json").is_file():
        rec._flowkit(["toy", str(videos), *args], log)
    rec._flowkit(["extract", str(videos), "-o", str(store), "--method", "tvl1"], log, threads=2)
    return videos, store, json.loads((videos / "toy.json").read_text()), args


def main(argv=None) -> int:
    args = rec.toy_run_arguments(__doc__, argv, work="/tmp/flowkit-ddn-motion",
                                 out=str(HERE / "results" / "ddn_motion.md"), epochs=12,
                                 videos_per_class=12, jobs=2, quick_epochs=1)
    seeds, work = args.seeds, Path(args.work)
    log = work / "log.txt"
    t_start = time.perf_counter()
    doc = ["# DDN against the size of the motion (toy motion classes)", "",
           f"Command: `{rec.command_line('ddn_motion.py', argv)}`  ",
           f"Machine: {rec._machine()}, no GPU, shared with other jobs (wall times are not CPU "
           f"times); {args.jobs} run(s) at a time with 1 thread each.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           "Every run: `flowkit train STORE --model ddn ... " + shlex.join(COMMON) +
           f" --epochs {args.epochs} --seed S --split-list trainlist01.txt`, then `flowkit "
           "evaluate RUN STORE --checkpoint last --split-list testlist01.txt --clips 1 --crops 1` "
           "(the recipe of `ddn_tvnet.py`). A video's speed is its base motion times 0.8-1.25 "
           "(`right_fast` 2x); 40 px crops of 48 px frames scale it by 0.83-1.25 in training. "
           f"DDN matches features of stride {FEATURE_STRIDE} (or 2 with `feature_stride=2`) "
           "over +-3 feature pixels.", ""]
    summary = ["| base motion px/frame | feature px/frame (normal speed, stride 4) | DDN all, "
               "top-1 % | DDN motion only, top-1 % | DDN all, feature stride 2, top-1 % |",
               "|---|---|---|---|---|"]
    for motion in MOTIONS:
        videos, store, toy, toy_args = make_store(work, motion, args.videos_per_class, log)
        results = rec.run_table(ROWS, seeds, args.epochs, videos, store, work, log, args.jobs,
                                common=COMMON)
        low, high = 0.8 * 0.83 * motion / FEATURE_STRIDE, 1.25 * 1.25 * motion / FEATURE_STRIDE
        top1 = [rec._pct([r.top1 for r in rs]) for rs in results.values()]
        summary.append(f"| {motion:g} | {low:.2f}-{high:.2f} | {' | '.join(top1)} |")
        doc += [f"## Base motion {motion:g} px/frame", "",
                f"Toy set: `{shlex.join(['flowkit', 'toy', 'TOY', *toy_args])}`: "
                f"{rec._toy_facts(toy, videos)}.", "", *rec.table(results, seeds), ""]
        rec.write_partial(doc, args.out)
    doc[8:8] = ["## Summary", "", *summary, ""]
    return rec.finish(doc, t_start, log, args.out)


if __name__ == "__main__":
    sys.exit(main())
