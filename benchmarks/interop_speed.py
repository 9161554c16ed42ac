"""How fast are ``flowkit export rawframes`` and ``flowkit import rawframes``?

A store of the sample videos (scikit-image photographs panned and zoomed, rendered at 256x340,
RGB as JPEG q95) with smooth affine flow fields (default ``jpegls`` codec) stands in for an
extracted store; the flow is synthetic because only the coding is timed, not an engine. The store
is exported to rawframes and imported back with 1 and 2 worker threads, ``--repeats`` times each
(the table gives the range); frames/s counts video frames (one RGB JPEG and one flow_x / flow_y
pair each). RGB JPEGs cross byte for byte in both directions (the store's quality is the export's,
``flowkit/jpeg.py``); the table says how many did.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/interop_speed.py     # -> results/interop_speed.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/interop_speed.py --videos 2 --frames 16 --quick

Writes the Markdown table, with the command, the machine and its load average, to
``benchmarks/results/interop_speed.md`` (stdout with ``--quick``).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowkit.bench.harness import machine_info
from flowkit.interop import ExportConfig, ImportConfig, export_rawframes, import_rawframes
from flowkit.samples import render_sample, sample_specs
from flowkit.store import FlowStore

CLASSES = ("pan_left", "zoom_in")
SIZE = (256, 340)


def affine_flow(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 2, H, W)`` smooth flow of up to about 15 px, float32."""
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, 2, h, w), np.float32)
    for t in range(n):
        a, b, c, d = rng.uniform(-0.04, 0.04, 4)
        out[t, 0] = a * (xx - w / 2) + b * (yy - h / 2) + rng.uniform(-3, 3)
        out[t, 1] = c * (xx - w / 2) + d * (yy - h / 2) + rng.uniform(-3, 3)
    return out


def write_store(path: Path, videos: int, frames: int) -> None:
    rng = np.random.default_rng(0)
    specs = sample_specs(classes=CLASSES, videos_per_class=(videos + 1) // 2, frames=frames,
                         size=SIZE)[:videos]
    with FlowStore(path, "a", classes=list(CLASSES)) as store:
        for i, spec in enumerate(specs):
            label = i % len(CLASSES)
            with store.writer(f"{CLASSES[label]}/v{i}", source="synthetic", fps=25.0, label=label,
                              label_name=CLASSES[label]) as w:
                w.append_rgb(render_sample(spec))
                w.append_flow("tvl1", affine_flow(rng, frames - 1),
                              engine={"engine": "synthetic", "version": "1", "params": {}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="print, do not write results/")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="flowkit-interop-"))
    shutil.rmtree(work / "store", ignore_errors=True)
    write_store(work / "store", args.videos, args.frames)
    total = args.videos * args.frames
    load = os.getloadavg()[0]
    rows = []
    for workers in (1, 2):
        speeds: dict[str, list[float]] = {"export": [], "import": []}
        kept = {}
        for _ in range(args.repeats):
            raw, back = work / f"raw{workers}", work / f"back{workers}"
            shutil.rmtree(raw, ignore_errors=True)
            shutil.rmtree(back, ignore_errors=True)
            t = time.perf_counter()
            exported = export_rawframes(work / "store", raw, ExportConfig(workers=workers))
            speeds["export"].append(total / (time.perf_counter() - t))
            t = time.perf_counter()
            imported = import_rawframes(raw, back, ImportConfig(workers=workers))
            speeds["import"].append(total / (time.perf_counter() - t))
            assert exported.count("done") == imported.count("done") == args.videos
            kept = {"export": exported.to_dict()["rgb_kept_as_is"],
                    "import": imported.to_dict()["rgb_kept_as_is"]}
        span = {k: f"{min(v):.0f}-{max(v):.0f}" if len(v) > 1 else f"{v[0]:.0f}"
                for k, v in speeds.items()}
        rows.append(f"| {workers} | {span['export']} | {span['import']} | "
                    f"{kept['export']} / {kept['import']} of {total} |")
    threads = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ \
        else []
    text = "\n".join([
        "# Rawframes export and import speed", "",
        f"Command: `{shlex.join([*threads, 'python', *sys.argv])}`  ",
        f"Machine: {machine_info()['cpu']}, {os.cpu_count()} logical CPUs, "
        f"{platform.platform()}; load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end.  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"{args.videos} videos x {args.frames} frames at {SIZE[0]}x{SIZE[1]}, RGB (JPEG q95) + "
        f"flow (jpegls 0.1 px in the store, 8-bit JPEG in the rawframes); {args.repeats} runs per "
        "row, the range of frames/s.", "",
        "| worker threads | export frames/s | import frames/s | RGB JPEGs kept byte for byte "
        "(export / import) |", "|---|---|---|---|", *rows, ""])
    if args.quick:
        print(text)
    else:
        path = Path(__file__).resolve().parent / "results" / "interop_speed.md"
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
