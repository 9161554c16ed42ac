"""Exact backward flow against TrajectoryNet's derived one, ``b_t ~= -f_{t-1}``, on a toy set.

TrajectoryNet follows trajectories backward with the flow from frame t to t-1. Without backward
flow in the store it derives it from the forward flow, ``-f_{t-1}(p)``: the previous pair's flow,
negated, at the same pixel. The exact one is ``-f_{t-1}`` at the pixel of frame t-1 that lands on
p, so the derived one is off by about ``grad(f) b``: exact for a translation (whatever the motion
does in time), wrong in a band about ``|b|`` wide at moving edges and occlusions. ``flowkit extract
--backward`` stores the exact one, TV-L1 from frame t+1 to t. This script measures

1. how far the derived backward flow is from TV-L1's (end-point error per pixel, by class), next to
   the noise level of that comparison, TV-L1's own forward-backward inconsistency
   ``|b_t(p) + f_t(p + b_t(p))|``;
2. whether TrajectoryNet notices: the same runs as ``benchmarks/recognition.py``'s trajectory-conv
   comparison (toy set ``hard``), with ``backward_flow=derived`` (as there) and ``=store``.

    .venv/bin/python benchmarks/backward_flow.py          # writes benchmarks/results/backward_flow.md
    .venv/bin/python benchmarks/backward_flow.py --quick  # smoke run, Markdown to stdout
"""
from __future__ import annotations

import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from recognition import (COMMON, Config, _flowkit, _machine, _toy_command, _toy_facts,
                         command_line, finish, make_store, run_table, table, toy_run_arguments)

from flowkit.conventions import backward_name
from flowkit.flow.ops import warp
from flowkit.store import FlowStore

HERE = Path(__file__).resolve().parent
TOY = "hard"
ROWS = tuple(Config(f"TrajectoryNet, {what}, backward flow {source}", "trajectorynet",
                    (*extra, f"backward_flow={source}"))
             for what, extra in (("trajectory conv + offsets", ("offsets=true",)),
                                 ("trajectory conv only", ()))
             for source in ("derived", "store"))
MOVING = 0.25  # px: a pixel "moves" when TV-L1's backward flow there is longer than this


def approximation_error(store_path: Path, name: str = "tvl1") -> list[str]:
    """Markdown rows: per class, the mean end-point error (px) of ``-f_t`` and of the warped
    ``-f_t(p + b_t(p))`` against ``b_t`` (pair t: frame t+1 -> t), over all and moving pixels."""
    store = FlowStore(store_path)
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(6))
    for key in store.keys():
        forward = torch.from_numpy(store.read_flow(key, name))
        backward = torch.from_numpy(store.read_flow(key, backward_name(name)))
        derived = (backward + forward).norm(dim=1)                       # |b_t - (-f_t)|
        consistent = (backward + warp(forward, backward)).norm(dim=1)   # TV-L1's own floor
        moving = backward.norm(dim=1) > MOVING
        label = store.meta(key)["label_name"] or "(none)"
        for row in (label, "all classes"):
            sums[row] += [derived.sum(), consistent.sum(), derived.numel(),
                          derived[moving].sum(), consistent[moving].sum(), moving.sum()]
    lines = ["| class | derived EPE, all px | TV-L1 inconsistency, all px | derived EPE, moving px "
             "| TV-L1 inconsistency, moving px | moving px % |", "|---|---|---|---|---|---|"]
    for row in sorted(sums, key=lambda r: (r == "all classes", r)):
        d, c, n, dm, cm, m = sums[row]
        lines.append(f"| {row} | {d / n:.3f} | {c / n:.3f} | {dm / max(m, 1):.3f} | "
                     f"{cm / max(m, 1):.3f} | {100 * m / n:.1f} |")
    return lines


def main(argv=None) -> int:
    args = toy_run_arguments(__doc__, argv, work="/tmp/flowkit-backward",
                             out=str(HERE / "results" / "backward_flow.md"), epochs=24,
                             videos_per_class=16, jobs=2, quick_epochs=2)
    seeds, work = args.seeds, Path(args.work)
    log = work / "log.txt"
    t_start = time.perf_counter()
    videos, store, toy = make_store(work, TOY, args.videos_per_class, log)
    _flowkit(["extract", str(videos), "-o", str(store), "--method", "tvl1", "--backward"], log,
             threads=2)
    doc = ["# Exact backward flow vs TrajectoryNet's derived one", "",
           f"Command: `{command_line('backward_flow.py', argv)}`  ",
           f"Machine: {_machine()}, no GPU; {args.jobs} runs at a time with 1 thread each.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           f"Toy set `{TOY}`: `{_toy_command(TOY, args.videos_per_class)}`: "
           f"{_toy_facts(toy, videos)}. Store: `flowkit extract TOY -o STORE --method tvl1`, then "
           "the same with `--backward` (OpenCV-default TV-L1 both ways).", "",
           "## How far the derived backward flow is from TV-L1's", "",
           "End-point error in pixels, mean over every pixel of every pair of every video (train "
           "and held-out). *derived*: `|b_t - (-f_t)|`, what TrajectoryNet uses without backward "
           "flow in the store, against TV-L1's backward flow b_t (frame t+1 -> t). *TV-L1 "
           "inconsistency*: `|b_t(p) + f_t(p + b_t(p))|`, how far TV-L1's two directions "
           "disagree where they should cancel exactly: the noise level of any comparison with "
           "b_t. "
           f"*moving*: pixels where `|b_t| > {MOVING}` px.", ""]
    doc += approximation_error(store)
    doc += ["", "## Does TrajectoryNet notice?", "",
            "Every run: `flowkit train STORE --model trajectorynet ... " + shlex.join(COMMON) +
            f" --epochs {args.epochs} --seed S --split-list trainlist01.txt`, then `flowkit "
            "evaluate RUN STORE --checkpoint last --split-list testlist01.txt --clips 1 --crops "
            "1`; rows differ only in `--model-arg backward_flow=...`.", ""]
    doc += table(run_table(ROWS, seeds, args.epochs, videos, store, work, log, args.jobs), seeds)
    doc.append("")
    return finish(doc, t_start, log, args.out)


if __name__ == "__main__":
    sys.exit(main())
