"""Scale-out on this machine: extraction pairs/s and training clips/s for 1 process against 2
processes started by torchrun (gloo on the CPU).

Each configuration is a real command line (``python -m flowkit ...`` or ``python -m
torch.distributed.run --nproc-per-node 2 --standalone -m flowkit ...``) run in a subprocess:

- extraction: ``flowkit extract`` of generated sample videos (scikit-image photographs moved by
  known motions) with OpenCV-default TV-L1 (``--no-compile``: torch.compile's one-off warm-up would
  dominate a run this short) into a fresh store; pairs/s is the summary's (all pairs over the
  slowest rank's time, process start excluded); wall s includes starting the processes.
- training: ``flowkit train`` of a small 2D ResNet on flow of that store, global batch 8 clips,
  no validation; clips/s is the last epoch's from ``metrics.jsonl`` (all ranks' clips over the
  epoch's time).

Configurations: 1 process with 1 thread, 1 process with 2 threads, 2 processes with 1 thread each
(every configuration uses at most 2 cores; extraction runs with ``--workers 1``, no worker processes
of its own). The machine, its load average before and after each
configuration, and the date are written with the table: on a shared machine the numbers move with
the other users' load.

    .venv/bin/python benchmarks/distributed.py            # writes benchmarks/results/distributed.md
    .venv/bin/python benchmarks/distributed.py --quick    # smoke run, Markdown to stdout
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOWKIT = [sys.executable, "-m", "flowkit"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
            "-m", "flowkit"]
# (label, launcher, threads per process)
CONFIGS = [("1 process x 1 thread", FLOWKIT, 1), ("1 process x 2 threads", FLOWKIT, 2),
           ("2 processes (torchrun) x 1 thread", TORCHRUN, 1)]
TRAIN = ["--model", "resnet2d", "--model-arg", "width=8", "--model-arg", "layers=[1,1,1,1]",
         "--model-arg", "modality=flow", "--frames", "4", "--size", "48", "--val-fraction", "0", "--workers", "0", "--device", "cpu", "--no-flip"]


def _run(cmd: list[str], threads: int) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """``(process, wall seconds, load before, load after)``; raises with stderr on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc, wall, load, os.getloadavg()[0]


def _machine() -> str:
    import torch
    from flowkit.bench.harness import machine_info
    m = machine_info()
    return (f"{m['cpu']}, {m['cores']} logical CPUs ({m['cores_usable']} usable), torch "
            f"{torch.__version__}, {m['platform']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run, Markdown to stdout")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder [a temporary one]")
    ap.add_argument("--out", default=None, help="Markdown file ('-': stdout)")
    opts = ap.parse_args()
    from flowkit.samples import make_sample_videos

    videos_per_class, frames, epochs = (1, 4, 2) if opts.quick else (8, 12, 4)
    train = [*TRAIN, "--batch-size", "2" if opts.quick else "8"]
    size = (64, 80)
    work = opts.work or Path(tempfile.mkdtemp(prefix="flowkit-distributed-"))
    videos = work / "videos"
    if not videos.exists():
        make_sample_videos(videos, classes=("pan_left", "zoom_in"),
                           videos_per_class=videos_per_class, frames=frames, size=size)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows, commands = [], {}
    for i, (label, launcher, threads) in enumerate(CONFIGS):
        store = work / f"store{i}"
        shutil.rmtree(store, ignore_errors=True)  # a fresh store: nothing skipped
        # --workers 1: one extraction process per launched process, as the label says (auto
        # would start one per core on this machine).
        extract_cmd = [*launcher, "extract", str(videos), "-o", str(store), "--no-compile",
                       "--workers", "1", "--json"]
        proc, e_wall, e_load0, e_load1 = _run(extract_cmd, threads)
        summary = json.loads(proc.stdout)
        run = work / f"run{i}"
        train_cmd = [*launcher, "train", str(store), "--out", str(run), *train, "--epochs",
                     str(epochs), "--overwrite"]
        _, t_wall, t_load0, t_load1 = _run(train_cmd, threads)
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        rows.append((label, summary["pairs"], summary["pairs_per_s"], e_wall,
                     last["clips_per_s"], t_wall, max(e_load0, t_load0), max(e_load1, t_load1)))
        commands[label] = (extract_cmd, train_cmd, threads)

    base_e, base_t = rows[0][2], rows[0][4]
    doc = ["# Scale-out: 1 process against 2 torchrun processes", "",
           f"Command: `python benchmarks/distributed.py{' --quick' if opts.quick else ''}`  ",
           f"Machine: {_machine()}; no GPU. **Shared**: other engineers' jobs ran on the same 2 "
           "cores during the measurement (the load averages below), so these figures show what "
           "this busy machine gave, not what 2 free cores give.  ",
           f"Date: {when}.", "",
           f"Data: {2 * videos_per_class} sample videos of {frames} frames, {size[0]}x{size[1]}; "
           f"extraction with OpenCV-default TV-L1 (`--no-compile`); training "
           f"`{shlex.join(train)} --epochs {epochs}` (clips/s of the last epoch).", "",
           "| configuration | pairs | extract pairs/s | vs 1x1 | extract wall s | train clips/s "
           "| vs 1x1 | train wall s | load avg before / after |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, pairs, pps, e_wall, cps, t_wall, l0, l1 in rows:
        doc.append(f"| {label} | {pairs} | {pps:.2f} | {pps / base_e:.2f}x | {e_wall:.1f} | "
                   f"{cps:.1f} | {cps / base_t:.2f}x | {t_wall:.1f} | {l0:.2f} / {l1:.2f} |")
    doc += ["", "Commands (threads = `OMP_NUM_THREADS` per process):", ""]
    for label, (extract_cmd, train_cmd, threads) in commands.items():
        for cmd in (extract_cmd, train_cmd):
            shown = shlex.join(["python", *cmd[1:]]).replace(str(work), "WORK")
            doc.append(f"- {label}: `OMP_NUM_THREADS={threads} {shown}`")
    text = "\n".join(doc) + "\n"
    out = opts.out or ("-" if opts.quick else str(HERE / "results" / "distributed.md"))
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
