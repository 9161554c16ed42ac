"""How long a run takes to start on a large store: training's labels and dataset, extraction's
resume check.

Before ``flowkit train`` computes anything it needs, for every video of its split, the label (to
stratify the validation split) and the frame count, RGB and flows (to build the dataset); a resumed
``flowkit extract`` compares every finished video's size, step, codecs and engine parameters with
its own. Reading them from the HDF5 files costs one open and ~30 attribute reads per video; from
the store's index (``FlowStore.metas``) one ``stat`` per video once the index exists. This script
builds a store of N tiny videos and times, in one process:

- training, *files*: ``store.meta(key)`` for every key, twice (labels + dataset before the index);
- training, *index, cold*: ``labels()`` + ``ClipDataset(...)`` with no ``index.json`` (built);
- training, *index, warm*: the same again (every file unchanged: served by the index);
- extraction, *files*: ``store.meta(key)`` for every key once (the resume check before the index);
- extraction, *index*: ``compare_with_store`` + ``finished_keys`` over every key.

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
from flowkit.extract import finished_keys
from flowkit.labels import VideoItem
from flowkit.store import FlowStore, flow_codec, rgb_codec
from flowkit.store.compat import Request, compare_with_store

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


def resume_check(path: Path) -> float:
    """Seconds for what a resumed ``flowkit extract --method tvl1`` reads before computing: the
    store-options comparison and the finished videos."""
    started = time.perf_counter()
    store = FlowStore(path)
    keys = store.keys()
    request = Request(method="tvl1", engine={"engine": "tvl1", "version": "1",
                                              "params": {"warps": 5}},
                      size=None, step=1, rgb=True, rgb_codec=rgb_codec("jpeg:95"),
                      flow_codec=flow_codec("jpegls:0.1"))
    assert compare_with_store(store, keys, request).ok
    items = [VideoItem(Path(f"{key}.mp4"), key, -1, "") for key in keys]
    assert len(finished_keys(path, "tvl1", items)) == len(keys)
    return time.perf_counter() - started


def from_files(path: Path, passes: int = 2) -> float:
    """Seconds for ``meta()`` of every video, ``passes`` times (before the index: labels, then the
    dataset; or extraction's resume check)."""
    started = time.perf_counter()
    for _ in range(passes):
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
        extract_files = from_files(path, passes=1)
        extract_index = resume_check(path)
        index_mb = (path / "index.json").stat().st_size / 2**20
    n = args.videos
    rows = [("training, files: `meta()` per video, twice", files),
            ("training, index, cold (builds index.json)", cold), ("training, index, warm", warm),
            ("extraction resume check, files: `meta()` per video", extract_files),
            ("extraction resume check, index", extract_index)]
    text = "\n".join([
        "# Starting a run on a large store: training's dataset, extraction's resume check", "",
        f"Command: `{shlex.join(['python', 'benchmarks/startup.py', *(argv or sys.argv[1:])])}`  ",
        f"Machine: {m['cpu']}, {m['cores']} logical CPUs, load average {m['loadavg_1m']} at "
        f"start, local disk (page cache warm: the store was just written).  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"A store of {n} videos (8 frames of 16x16, RGB + flow; written in {built:.0f} s). What "
        "`flowkit train` reads before its first batch: every video's label, then its frame count, "
        "RGB and flows; what a resumed `flowkit extract` reads before computing: every finished "
        f"video's size, step, codecs and engine record. index.json: {index_mb:.1f} MiB.", "",
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
