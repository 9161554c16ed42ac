"""The store index at Kinetics scale: what every run pays to list and look up 300k videos.

A run over a store lists its videos (``FlowStore.keys``) and reads each one's metadata from
``index.json`` (``FlowStore.metas``: one ``stat`` per video, the file opened only when it changed
since it was indexed). This script times both on a store of N videos (default 300k, Kinetics-400's
size) without writing 300k real videos: it writes one real video, indexes it, then places N
one-byte stand-in files and an index whose entries carry the real video's facts and each stand-in's
stamp, so every lookup takes the warm path a real store takes (the stand-ins are never opened; the
script checks it). Each measurement runs in a fresh process, for its peak memory.

    .venv/bin/python benchmarks/index_scale.py                     # -> results/index_scale.md
    .venv/bin/python benchmarks/index_scale.py --videos 30000 --out -
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STEPS = ("imports", "keys", "load_index", "metas", "metas x3", "metas x3 held", "summary")


def make_store(root: Path, videos: int) -> None:
    """One real video's facts, repeated under ``videos`` keys in 400 class folders."""
    from flowkit.store import FlowStore
    from flowkit.store.index import Entry, load_index, save_index, stamp

    store = FlowStore(root / "real", "a")
    with store.writer("c/v", source="v.mp4", fps=25.0, flow_codec="jpegls:0.1",
                      rgb_codec="jpeg:95") as w:
        w.append_rgb(np.zeros((8, 16, 16, 3), np.uint8))
        w.append_flow("tvl1", np.zeros((7, 2, 16, 16), np.float32),
                      {"engine": "tvl1", "version": "1", "params": {"tau": 0.25, "warps": 5}})
    store.metas(["c/v"])
    facts = load_index(root / "real")["c/v"].facts
    big = FlowStore(root / "big", "a")
    entries = {}
    for i in range(videos):
        key = f"class{i % 400:03d}/video_{i:07d}"
        path = big.path / "videos" / f"{key}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        entries[key] = Entry(stamp(path), facts)
    save_index(big.path, entries)


def measure(root: Path, step: str) -> dict:
    """Run one step in this process: seconds and peak resident memory."""
    from flowkit.store import FlowStore, index, summary

    def never(path):
        raise AssertionError(f"{path} was opened: the index should serve every stand-in")

    summary.video_facts = never
    store = FlowStore(root / "big")
    keys = store.keys() if step.startswith("metas") else None
    started = time.perf_counter()
    if step == "imports":
        count = 0
    elif step == "keys":
        count = len(store.keys())
    elif step == "load_index":
        count = len(index.load_index(store.path))
    elif step == "metas":
        count = len(store.metas(keys))
    elif step == "metas x3":
        count = min(len(store.metas(keys)) for _ in range(3))
    elif step == "summary":
        count = store.summary()["videos"]
    else:
        with store.index_held():
            count = min(len(store.metas(keys)) for _ in range(3))
    seconds = time.perf_counter() - started
    return {"step": step, "count": count, "seconds": seconds,
            "peak_mib": peak_mib()}


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec
    from the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=300_000)
    ap.add_argument("--out", default=str(HERE / "results" / "index_scale.md"), help="'-': stdout")
    ap.add_argument("--measure", nargs=2, metavar=("ROOT", "STEP"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return 0
    from flowkit.bench.harness import machine_info
    from flowkit.store import FlowStore

    m = machine_info()
    with tempfile.TemporaryDirectory(prefix="index_scale_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_store(root, args.videos)
        made = time.perf_counter() - started
        size = (root / "big" / "index.json").stat().st_size
        rows = []
        for step in STEPS:
            if step == "metas x3 held" and not hasattr(FlowStore, "index_held"):
                continue  # measuring a flowkit from before index_held
            out = subprocess.run([sys.executable, __file__, "--measure", str(root), step],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.splitlines()[-1]))
    command = "python benchmarks/index_scale.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        f"# The store index at {args.videos} videos",
        "",
        f"Command: `{command}`  ",
        f"Machine: {m['cpu']}, {m['cores']} logical CPUs, load average {m['loadavg_1m']} at "
        "start, local disk, page cache warm.  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"{args.videos} stand-in video files in 400 class folders and an index.json of "
        f"{size / 2**20:.0f} MiB ({size / args.videos:.0f} bytes a video) whose entries carry one "
        f"real video's facts (8 frames, RGB + one flow); made in {made:.0f} s. Each step runs in a "
        "fresh process; its peak memory includes the interpreter and flowkit's imports (the "
        "first row).",
        "",
        "| step | what a run does | seconds | peak MiB |",
        "|---|---|---|---|",
    ]
    what = {"imports": "nothing: the process with flowkit.store imported",
            "keys": "`FlowStore.keys()`: list the videos",
            "load_index": "parse index.json (inside `metas`)",
            "metas": "`FlowStore.metas(all keys)`: parse + one stat per video",
            "metas x3": "the same 3 times, as `flowkit train` did with a validation split "
                        "(labels, train set, val set)",
            "metas x3 held": "the same inside `FlowStore.index_held()`, as `flowkit train` now "
                             "does: parsed once",
            "summary": "`FlowStore.summary()`, as `flowkit info` shows it: every video's facts"}
    for r in rows:
        assert r["count"] == (0 if r["step"] == "imports" else args.videos), r
        lines.append(f"| {r['step']} | {what[r['step']]} | {r['seconds']:.2f} | "
                     f"{r['peak_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    if args.out != "-":
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
