"""Measured facts behind `flowkit extract`'s defaults for memory and processes (issue: reliability).

    python benchmarks/reliability.py            # -> benchmarks/results/reliability.md
    python benchmarks/reliability.py --quick    # tiny, to stdout; its numbers mean nothing

1. **Memory per pair**: peak RSS of a fresh process running one engine call on B pairs of random
   frames (one torch thread), minus its RSS before the call; TV-L1 with a one-warp schedule (the
   memory of an iteration does not depend on how many run), the cost volume at its defaults.
2. **HDF5 through the latching file**: the same datasets (encoded 256x340 frames as vlen byte
   strings, 64 per write, as the store writes them) written through HDF5's own POSIX driver and
   through :class:`flowkit.store.diskio.LatchingFile` (h5py's ``fileobj`` driver), best of 5.
3. **Shared CPUs**: `flowkit extract` of the `flowkit samples` folder (8 videos, 128x160, 15 pairs
   each, TV-L1 at OpenCV's defaults, compiled) as before (`--workers 1`, torch's thread per core)
   and as now (`--workers auto`: a process per core, one thread each), alone and beside a competing
   process that keeps one core busy (a Python busy loop), as on a shared node.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MEASURE = """
import resource, sys, time, torch
torch.set_num_threads(1)
import flowkit
method, h, w, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
params = dict(warps=1, outer_iterations=1, inner_iterations=2) if method == "tvl1" else {}
engine = flowkit.create_engine(method, **params)
x = (torch.rand(b, 3, h, w) * 255).to(torch.uint8)
engine(x[:1, :, :16, :16], x[:1, :, :16, :16])  # first-call allocations out of the way
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
engine(x, x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before * 1024, peak * 1024)
"""


def memory_rows(quick: bool) -> list[dict]:
    sizes = [(64, 80)] if quick else [(256, 340), (480, 640), (1080, 1920)]
    rows = []
    for method in ("tvl1", "costvolume"):
        for h, w in sizes:
            for b in (1, 2) if (method, h) != ("costvolume", 1080) else (1,):  # 2 pairs: ~6 GB
                out = subprocess.run([sys.executable, "-c", MEASURE, method, str(h), str(w), str(b)],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                before, peak = map(int, out.stdout.split())
                rows.append({"method": method, "size": f"{h}x{w}", "pairs": b,
                             "peak_gb": peak / 2**30, "delta_gb": (peak - before) / 2**30})
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def driver_rows(quick: bool) -> list[dict]:
    import h5py
    import numpy as np

    from flowkit.store.diskio import LatchingFile, create_hdf5

    frames = 64 if quick else 1024
    rng = np.random.default_rng(0)
    blobs = [rng.integers(0, 256, 24_000, np.uint8) for _ in range(64)]  # ~ a JPEG + a flow pair

    def write(f) -> None:
        ds = f.create_dataset("x", shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                              chunks=(64,))
        for start in range(0, frames, 64):
            batch = np.empty(64, dtype=ds.dtype)
            for i, b in enumerate(blobs):
                batch[i] = b
            ds.resize(start + 64, axis=0)
            ds.write_direct(batch, np.s_[:], np.s_[start:start + 64])

    def posix(path: Path) -> None:
        with h5py.File(path, "w", libver=("v110", "v110")) as f:
            write(f)

    def latching(path: Path) -> None:
        io = LatchingFile(path)
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
        f = create_hdf5(io, fapl, h5py.h5p.create(h5py.h5p.FILE_CREATE))
        del fapl
        write(f)
        f.close()
        io.close()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("HDF5 POSIX driver (sec2)", posix), ("LatchingFile (fileobj)", latching)):
            best = float("inf")
            for rep in range(5):
                path = Path(tmp) / f"{rep}.h5"
                started = time.perf_counter()
                fn(path)
                best = min(best, time.perf_counter() - started)
                path.unlink()
            rows.append({"driver": name, "frames": frames, "mb_per_s": frames * 24_000 / best / 1e6,
                         "frames_per_s": frames / best})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def extract_run(videos: Path, store: Path, workers: str, busy: bool, quick: bool) -> dict:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        cmd = [sys.executable, "-m", "flowkit", "extract", str(videos), "-o", str(store),
               "--workers", workers, "--json"] + (["--param", "warps=1", "--param", "nscales=2"]
                                                  if quick else [])
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - started
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads(proc.stdout)
    return {"workers": workers, "busy": busy, "pairs": summary["pairs"], "seconds": seconds,
            "pairs_per_s": summary["pairs"] / seconds,
            "command": " ".join(shlex.quote(c) for c in ["flowkit", *cmd[3:]]).replace(
                str(videos), "VIDEOS").replace(str(store), "STORE")}


def shared_rows(quick: bool) -> list[dict]:
    from flowkit.samples import make_sample_videos

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        make_sample_videos(videos, classes=("pan_left", "zoom_in") if quick else
                           ("pan_left", "pan_right", "zoom_in", "rotate_cw"),
                           videos_per_class=2, frames=16, size=(64, 80) if quick else (128, 160))
        for busy in (False, True):
            for workers in ("1", "auto"):
                store = Path(tmp) / f"store-{workers}-{busy}"
                rows.append(extract_run(videos, store, workers, busy, quick))
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def render(mem: list[dict], drivers: list[dict], shared: list[dict], quick: bool) -> str:
    from flowkit.bench.harness import machine_info
    import torch

    m = machine_info()
    lines = ["# Memory per pair and extraction on shared CPUs", "",
             f"Command: `python benchmarks/reliability.py{' --quick' if quick else ''}`  ",
             f"Machine: {m['cpu']}, {m['cores']} logical CPUs, {m['platform']}; torch "
             f"{torch.__version__}; load average {m['loadavg_1m']} at the end (other work was "
             "running on this machine: compare rows of one table, not with other tables), no GPU.  ",
             f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             "## Memory per pair (one engine call, one torch thread)", "",
             "Peak RSS of a fresh process; *added by the call* is peak minus the RSS before it "
             "(torch and the engine loaded, about 0.25-0.3 GB).", "",
             "| engine | frames | pairs per call | peak RSS GB | added by the call GB |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['size']} | {r['pairs']} | {r['peak_gb']:.2f} | "
              f"{r['delta_gb']:.2f} |" for r in mem]
    if drivers:
        lines += ["", "## Writing HDF5 through the latching file", "",
                  "24 KB byte strings (about a JPEG frame and a jpegls flow pair at 256x340), 64 per "
                  "write, best of 5; the store writes this way (flowkit/store/diskio.py).", "",
                  "| driver | frames | frames/s | MB/s |", "|---|---|---|---|"]
        lines += [f"| {r['driver']} | {r['frames']} | {r['frames_per_s']:.0f} | "
                  f"{r['mb_per_s']:.0f} |" for r in drivers]
    lines += ["", "## Extraction on shared CPUs", "",
              "`flowkit samples` videos, TV-L1 at OpenCV's defaults, compiled (the default); "
              "*busy*: a competing process keeps one core busy for the whole run. Wall time "
              "includes start-up and compilation (per process).", "",
              "| --workers | competing process | pairs | seconds | pairs/s | command |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {'yes' if r['busy'] else 'no'} | {r['pairs']} | "
              f"{r['seconds']:.1f} | {r['pairs_per_s']:.2f} | `{r['command']}` |" for r in shared]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["memory", "drivers", "shared"], default=None)
    args = ap.parse_args(argv)
    mem = memory_rows(args.quick) if args.only in (None, "memory") else []
    drivers = driver_rows(args.quick) if args.only in (None, "drivers") else []
    shared = shared_rows(args.quick) if args.only in (None, "shared") else []
    text = render(mem, drivers, shared, args.quick)
    if args.quick:
        print(text)
    else:
        (HERE / "results" / "reliability.md").write_text(text)
        print(f"wrote {HERE / 'results' / 'reliability.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
