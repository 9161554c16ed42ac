"""How long a training run takes to start on a large store: the labels and the dataset's facts.

Before ``flowkit train`` computes anything it needs, for every video of its split, the label (to
stratify the validation split) and the frame count, RGB and flows (to build the dataset). Reading
them from the HDF5 files costs one open and ~30 attribute reads per video, twice; from the store's
index (``FlowStore.facts``) it costs one ``stat`` per video once the index exists. This script
builds a store of N tiny videos and times both, in one process:

- *files*: ``store.meta(key)`` for every key, twice (what labels + dataset read before the index);
- *index, cold*: ``labels()`` + ``ClipDataset(...)`` with no ``index.json`` (it is built);
- *index, warm*: the same again (every file unchanged: served by the index).

    .venv/bin/python benchmarks/startup.py                 # 3000 videos -> results/startup.md
    .venv/bin/python benchmarks/startup.py --videos 300 --out -
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowkit.bench.harness import machine_info
from flowkit.data import ClipDataset
from flowkit.data.samplers import RandomClipSampler
from flowkit.data.splits import labels
from flowkit.store import FlowStore

HERE = Path(__file__).resolve().parent


def make_store(path: Path, videos: int) -> float:
    """``videos`` videos of 8 frames, 16x16, RGB + TV-L1-like flow, 10 classes; seconds taken."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    flow = rng.normal(0, 1, (7, 2, 16, 16)).astype(np.float32)
    started = time.perf_counter()
    with FlowStore(path, "a", classes=[f"c{i}" for i in range(10)]) as store:
        for i in range(videos):
            with store.writer(f"c{i % 10}/v{i}", source=f"v{i}.mp4", fps=25.0, label=i % 10,
                              label_name=f"c{i % 10}") as w:
                w.append_rgb(rgb)
                w.append_flow("tvl1", flow, engine={"engine": "tvl1", "version": "1",
                                                    "params": {"warps": 5}})
    return time.perf_counter() - started


def start(path: Path) -> float:
    """Seconds for what ``flowkit train`` reads before its first batch: labels, then the dataset."""
    started = time.perf_counter()
    store = FlowStore(path)
    keys = store.keys()
    labels(store, keys)
    ClipDataset(store, keys, inputs=("rgb", "flow"), sampler=RandomClipSampler(frames=4))
    return time.perf_counter() - started


def from_files(path: Path) -> float:
    """Seconds for ``meta()`` of every video, twice (labels, then the dataset, before the index)."""
    started = time.perf_counter()
    for _ in range(2):
        store = FlowStore(path)
        for key in store.keys():
            store.meta(key)
        store.close()
    return time.perf_counter() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=3000)
    ap.add_argument("--out", default=str(HERE / "results" / "startup.md"), help="'-': stdout")
    args = ap.parse_args(argv)
    m = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        built = make_store(path, args.videos)
        files = from_files(path)
        cold = start(path)
        warm = start(path)
        index_mb = (path / "index.json").stat().st_size / 2**20
    n = args.videos
    rows = [("files: `meta()` per video, twice", files), ("index, cold (builds index.json)", cold),
            ("index, warm", warm)]
    text = "\n".join([
        "# Training start on a large store: labels and dataset facts", "",
        f"Command: `{shlex.join(['python', 'benchmarks/startup.py', *(argv or sys.argv[1:])])}`  ",
        f"Machine: {m['cpu']}, {m['cores']} logical CPUs, load average {m['loadavg_1m']} at "
        f"start, local disk (page cache warm: the store was just written).  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"A store of {n} videos (8 frames of 16x16, RGB + flow; written in {built:.0f} s). What "
        "`flowkit train` reads before its first batch: every video's label, then its frame count, "
        f"RGB and flows. index.json: {index_mb:.1f} MiB.", "",
        "| how | seconds | ms per video |", "|---|---|---|",
        *[f"| {what} | {s:.2f} | {1000 * s / n:.2f} |" for what, s in rows], ""])
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
