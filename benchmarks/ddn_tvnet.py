"""Motion computed inside the network from RGB: DDN's branches and TVNet end to end, on toy motion.

One toy set (``flowkit toy``, classes that differ only in motion), one TV-L1 store (for the
store-flow baseline and the existing flow models; DDN and TVNet read only its RGB), and one recipe
for every run (``flowkit train`` on ``trainlist01.txt``, no validation split, then ``flowkit
evaluate --checkpoint last`` on ``testlist01.txt``), 3 seeds, mean and spread:

- DDN: all three branches, each branch alone, each pair of branches (``branches=...``);
- TVNet: end to end (``L_c + 0.1 L_f``, TVNet at 0.1x the learning rate), frozen (fixed TV-L1
  iterations), and the same classifier on the store's precomputed OpenCV-default TV-L1 flow;
- the appearance-only baseline (one RGB frame) and existing motion models (CIDC on TV-L1 flow,
  TrajectoryNet on RGB with TV-L1 trajectories).

Sized for one CPU core (tiny widths, 40 px crops of 48 px videos, 8-frame clips, few epochs, and
TVNet with 10 unrolled iterations instead of the paper's 50)::

    .venv/bin/python benchmarks/ddn_tvnet.py                 # writes benchmarks/results/ddn_tvnet.md
    .venv/bin/python benchmarks/ddn_tvnet.py --quick         # smoke run, Markdown to stdout
    .venv/bin/python benchmarks/ddn_tvnet.py --difficulty hard --tables tvnet \
        --out benchmarks/results/tvnet_hard.md               # TVNet's rows on the hard toy set
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import recognition as rec  # noqa: E402  (the recognition evidence's helpers: runs, tables, machine)
from recognition import Config  # noqa: E402

#: The toy set: 12 frames of 48x48 (small, so one core extracts it quickly), of a difficulty.
TOY = ("--frames", "12", "--size", "48x48")
#: Every run's options (rows differ only in the model): tiny ResNet-18 layout, 8-frame clips.
COMMON = ("--model-arg", "width=8", "--model-arg", "layers=[1,1,1,1]", "--frames", "8",
          "--size", "40", "--no-flip", "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.003",
          "--weight-decay", "0.01", "--warmup-epochs", "1", "--val-fraction", "0", "--workers", "0")
TVNET = "tvnet_iterations=10"

#: --tables names -> the tables' titles below.
TABLE_NAMES = {"ddn": "DDN:", "tvnet": "TVNet:", "baselines": "Baselines"}
TABLES = {
    "DDN: full network, single branches, pairs of branches (RGB only)": (
        Config("DDN, all three branches", "ddn"),
        Config("DDN, appearance branch only", "ddn", ("branches=appearance",)),
        Config("DDN, motion branch only", "ddn", ("branches=motion",)),
        Config("DDN, appearance-change branch only", "ddn", ("branches=change",)),
        Config("DDN, appearance + motion", "ddn", ("branches=appearance,motion",)),
        Config("DDN, appearance + change", "ddn", ("branches=appearance,change",)),
        Config("DDN, motion + change", "ddn", ("branches=motion,change",)),
    ),
    "TVNet: end to end vs frozen vs precomputed TV-L1 flow (same classifier)": (
        Config("TVNet end to end (L_c + 0.1 L_f, RGB only)", "tvnet", (TVNET,)),
        Config("TVNet frozen (fixed TV-L1 iterations, RGB only)", "tvnet",
               (TVNET, "freeze_tvnet=true")),
        Config("same classifier on the store's TV-L1 flow", "tvnet", ("flow_source=store",)),
    ),
    "Baselines on the same set": (
        Config("appearance only: 2D ResNet, 1 RGB frame", "resnet2d", ("--frames", "1")),
        Config("CIDC (TV-L1 flow, bidirectional)", "cidc", ("modality=flow",)),
        Config("TrajectoryNet (RGB, TV-L1 trajectories, offsets)", "trajectorynet",
               ("offsets=true",)),
    ),
}


def toy_options(difficulty: str) -> tuple[str, ...]:
    """``flowkit toy`` options of a toy set of ``recognition.py`` (default, hard, harder)."""
    return (*rec.TOY_SETS[difficulty], *TOY)


def make_store(work: Path, difficulty: str, videos_per_class: int, log: Path
               ) -> tuple[Path, Path, dict]:
    """Toy videos + TV-L1 store (RGB and flow); reused when already there."""
    import json

    suffix = "" if difficulty == "default" else f"_{difficulty}"
    videos, store = work / f"toy{suffix}", work / f"store{suffix}"
    if not (videos / "toy.json").is_file():
        rec._flowkit(["toy", str(videos), *toy_options(difficulty), "--videos-per-class",
                      str(videos_per_class)], log)
    t0 = time.perf_counter()
    rec._flowkit(["extract", str(videos), "-o", str(store), "--method", "tvl1"], log, threads=1)
    print(f"store ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return videos, store, json.loads((videos / "toy.json").read_text())


def _options(ap) -> None:
    ap.add_argument("--difficulty", default="default", choices=tuple(rec.TOY_SETS),
                    help="the toy set (recognition.py's: presets, and 'harder')")
    ap.add_argument("--tables", default=",".join(TABLE_NAMES),
                    help=f"comma-separated subset of {', '.join(TABLE_NAMES)}")


def main(argv=None) -> int:
    args = rec.toy_run_arguments(__doc__, argv, work="/tmp/flowkit-ddn-tvnet",
                                 out=str(HERE / "results" / "ddn_tvnet.md"), epochs=12,
                                 videos_per_class=12, jobs=1, quick_epochs=1, extra=_options)
    wanted = [t.strip() for t in args.tables.split(",") if t.strip()]
    if not wanted or set(wanted) - set(TABLE_NAMES):
        raise SystemExit(f"--tables: a comma-separated subset of {', '.join(TABLE_NAMES)}")
    tables = {title: rows for title, rows in TABLES.items()
              if any(title.startswith(TABLE_NAMES[t]) for t in wanted)}
    seeds, work = args.seeds, Path(args.work)
    log = work / "log.txt"
    t_start = time.perf_counter()
    cmd = rec.command_line("ddn_tvnet.py", argv)
    videos, store, toy = make_store(work, args.difficulty, args.videos_per_class, log)
    toy_cmd = shlex.join(["flowkit", "toy", "TOY", *toy_options(args.difficulty),
                          "--videos-per-class", str(args.videos_per_class)])
    which = "" if args.difficulty == "default" else f" ({args.difficulty} toy set)"
    doc = ["# DDN and TVNet end to end: motion computed inside the network, on toy motion classes"
           + which, "",
           f"Command: `{cmd}`  ",
           f"Machine: {rec._machine()}, no GPU, shared with other jobs (wall times are not CPU "
           f"times); {args.jobs} run(s) at a time with 1 thread each.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           f"Toy set: `{toy_cmd}`: {rec._toy_facts(toy, videos)}. Store: `flowkit extract TOY -o "
           "STORE --method tvl1` (OpenCV-default TV-L1; DDN and TVNet read only its RGB).", "",
           "Every run: `flowkit train STORE --model M ... " + shlex.join(COMMON) +
           f" --epochs {args.epochs} --seed S --split-list trainlist01.txt`, then `flowkit "
           "evaluate RUN STORE --checkpoint last --split-list testlist01.txt --clips 1 --crops 1`. "
           f"TVNet rows use `{TVNET}` (1 scale, 1 warp, 10 unrolled iterations: the paper's TVNet-50 "
           "made cheaper for one core). *order-pair acc* is the accuracy on left_then_right and "
           "right_then_left, which differ only in temporal order.", ""]
    for title, rows in tables.items():
        results = rec.run_table(rows, seeds, args.epochs, videos, store, work, log, args.jobs,
                                common=COMMON)
        doc += [f"## {title}", "", *rec.table(results, seeds), ""]
        rec.write_partial(doc, args.out)
    return rec.finish(doc, t_start, log, args.out)


if __name__ == "__main__":
    sys.exit(main())
