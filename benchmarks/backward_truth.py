"""Backward flow derived from forward flow (``-f(p)``) against computing it, on exact ground truth.

Without backward flow in the store, TrajectoryNet takes the flow from frame t to t-1 at pixel p as
``-f_{t-1}(p)``, the forward flow negated at the same pixel (``backward_flow=derived``); ``flowkit
extract --backward`` computes it instead, TV-L1 from frame t to t-1 (``backward_flow=store``).
``benchmarks/backward_flow.py`` compared the two on the toy set, which has almost no motion
boundaries. This script scores both against exact backward ground truth
(:mod:`flowkit.bench.synthetic`: photographs, and in the ``occlusion`` kind an object moving 3-10
px over a moving background), by region of frame 1:

- *matched*: pixels visible in both frames;
- *covered*: where frame 0's content was covered by the object (frame 1 shows the object, which
  was elsewhere in frame 0; ``-f(p)`` gives the background's motion there);
- *uncovered*: background that the object hid in frame 0 (no match in frame 0 exists; ``-f(p)``
  gives the object's motion there).

Rows: the derivation from the exact forward flow (its own error, whatever the flow method), the
derivation from TV-L1's forward flow (what ``derived`` stores amount to), and TV-L1's backward flow
(what ``--backward`` stores), all with OpenCV-default TV-L1 on 1 CPU thread.

    .venv/bin/python benchmarks/backward_truth.py          # -> benchmarks/results/backward_truth.md
    .venv/bin/python benchmarks/backward_truth.py --pairs 2 --size 64x80 --out -
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recognition import _machine, command_line, write_markdown

from flowkit.bench import synthetic_pairs
from flowkit.bench.metrics import epe_map
from flowkit.flow import create_engine

HERE = Path(__file__).resolve().parent
KINDS = ("occlusion", "translation", "affine", "smooth", "large")
REGIONS = ("all", "matched", "covered", "uncovered")
SOURCES = ("-f, exact forward flow", "-f, TV-L1 forward flow", "TV-L1 backward flow")


def regions(pair) -> dict[str, np.ndarray]:
    """The masks of :data:`REGIONS` at frame 1's pixels, within the backward ground truth."""
    valid = pair.backward_valid
    uncovered = valid & pair.backward_occluded
    covered = valid & ~pair.backward_occluded & pair.occluded & pair.valid
    matched = valid & ~pair.backward_occluded & ~pair.occluded
    return {"all": valid, "matched": matched, "covered": covered, "uncovered": uncovered}


def score(pairs, engine, batch: int = 4) -> dict[str, dict[str, list[float]]]:
    """``{source: {region: [sum of EPE, pixels]}}`` over ``pairs``."""
    sums = {s: {r: [0.0, 0] for r in REGIONS} for s in SOURCES}
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        f0 = torch.from_numpy(np.stack([p.frame0 for p in chunk])).permute(0, 3, 1, 2).contiguous()
        f1 = torch.from_numpy(np.stack([p.frame1 for p in chunk])).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            forward, backward = engine(f0, f1).numpy(), engine(f1, f0).numpy()
        for i, pair in enumerate(chunk):
            estimates = {SOURCES[0]: -pair.flow, SOURCES[1]: -forward[i], SOURCES[2]: backward[i]}
            masks = regions(pair)
            for source, flow in estimates.items():
                epe = epe_map(flow, pair.backward)
                for region, mask in masks.items():
                    sums[source][region][0] += float(epe[mask].sum())
                    sums[source][region][1] += int(mask.sum())
    return sums


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs per kind (default 8)")
    parser.add_argument("--size", default="256x340", help="HxW (default 256x340, UCF101's frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "backward_truth.md"),
                        help="results file, or - for stdout")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(1)
    engine = create_engine("tvl1")
    start = time.perf_counter()
    doc = ["# Backward flow: derived from forward flow or computed, against ground truth", "",
           f"Command: `{command_line('backward_truth.py', argv)}`  ",
           f"Machine: {_machine()}, no GPU; 1 thread.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           f"Pairs: `flowkit.bench.synthetic_pairs(size=({height}, {width}), seed={args.seed}, "
           f"kinds=[KIND])`, {args.pairs} per kind, with their exact backward flow (frame 1 -> "
           "frame 0). TV-L1: `create_engine(\"tvl1\")` (OpenCV's defaults), forward on (frame 0, "
           "frame 1) and backward on (frame 1, frame 0), as `flowkit extract --backward` computes "
           "it. End-point error in pixels against the backward ground truth, the mean over the "
           "region's pixels of all pairs of a kind; *% px*: the region's share of frame 1's "
           "pixels with ground truth. Regions: *matched* (visible in both frames), *covered* "
           "(frame 0's content there is hidden by the moving object in frame 1), *uncovered* "
           "(background hidden by the object in frame 0: it has no match there).", "",
           "| kind | backward flow from | all | matched | covered | uncovered | covered / "
           "uncovered % px |", "|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        pairs = synthetic_pairs(args.pairs, (height, width), seed=args.seed, kinds=[kind])
        sums = score(pairs, engine)
        for source in SOURCES:
            cells = [f"{s / n:.3f}" if n else "-" for s, n in sums[source].values()]
            share = sums[source]
            total = share["all"][1]
            extent = (f"{100 * share['covered'][1] / total:.1f} / "
                      f"{100 * share['uncovered'][1] / total:.1f}")
            doc.append(f"| {kind} | {source} | " + " | ".join(cells) + f" | {extent} |")
        print(f"{kind}: done after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    doc += ["", f"Total time {time.perf_counter() - start:.0f} s.", ""]
    write_markdown("\n".join(doc), None if args.out == "-" else args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
