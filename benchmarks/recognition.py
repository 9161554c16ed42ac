"""Do the classifiers use motion? Toy videos whose classes differ only in motion, trained from the CLI.

Three toy sets (``flowkit toy``): ``default`` difficulty, where the motion models should saturate
and the appearance-only baseline (a single-frame 2D ResNet) should stay near chance; ``hard`` (more
noise, smaller motion, more distractors, lower contrast), where trajectory convolution is compared
with its S3D baseline on RGB input; and ``harder`` (``hard`` with still more noise and distractors,
less motion and contrast), where the flow-input models no longer saturate and CIDC bi- vs uni- vs
non-directional and ST-MulNet multiplicative vs additive gating are compared (on ``hard`` they
scored 96-99% in an earlier run of this script). CIDC's directions are also compared on RGB input,
on ``default`` (in a 1-seed pilot on ``hard``, RGB CIDC scored 17%). Every run is ``flowkit train`` on the toy
set's ``trainlist01.txt`` (no validation split, so nothing is selected on the held-out videos), then
``flowkit evaluate --checkpoint last`` on ``testlist01.txt``; mean and spread over seeds.

    .venv/bin/python benchmarks/recognition.py             # writes benchmarks/results/recognition.md
    .venv/bin/python benchmarks/recognition.py --quick     # smoke run, Markdown to stdout
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOWKIT = [sys.executable, "-m", "flowkit"]

# One recipe for every run, so rows differ only in the model: tiny ResNet-18 layout (one block per
# stage, stem width 8), whole 16-frame videos, 48 px crops, no flips (left/right are classes).
COMMON = ["--model-arg", "width=8", "--model-arg", "layers=[1,1,1,1]", "--frames", "16",
          "--size", "48", "--no-flip", "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.003",
          "--weight-decay", "0.01", "--warmup-epochs", "1", "--val-fraction", "0", "--workers", "0"]


@dataclass(frozen=True)
class Config:
    """One row of a table: a model and its arguments (``--model-arg`` pairs and other options)."""
    label: str
    model: str
    args: tuple[str, ...] = ()

    def train_args(self) -> list[str]:
        out = ["--model", self.model]
        for a in self.args:
            out += (["--model-arg", a] if "=" in a and not a.startswith("--") else [a])
        return out


DEFAULT_ROWS = (
    Config("appearance only: 2D ResNet, 1 RGB frame", "resnet2d", ("--frames", "1")),
    Config("TrajectoryNet (RGB, TV-L1 trajectories, offsets)", "trajectorynet", ("offsets=true",)),
    Config("CIDC (TV-L1 flow, bidirectional)", "cidc", ("modality=flow",)),
    Config("ST-MulNet (RGB + 5-flow stacks, multiplicative)", "stmulnet", ("flow_stack=5",)),
)
#: Toy sets: name -> ``flowkit toy`` options.
TOY_SETS = {
    "default": ("--difficulty", "default"),
    "hard": ("--difficulty", "hard"),
    "harder": ("--difficulty", "hard", "--noise", "28", "--motion", "0.5", "--distractors", "10",
               "--contrast", "0.2"),
}
#: The papers' comparisons: title -> (toy set, rows). Each on the easiest set where it does not saturate.
COMPARISONS = {
    "Trajectory convolution vs S3D (RGB input)": ("hard", (
        Config("S3D (plain temporal conv)", "s3d"),
        Config("TrajectoryNet, trajectory conv only", "trajectorynet"),
        Config("TrajectoryNet, trajectory conv + offsets", "trajectorynet", ("offsets=true",)),
    )),
    "CIDC direction (TV-L1 flow input)": ("harder", (
        Config("CIDC bidirectional", "cidc", ("modality=flow", "direction=bi")),
        Config("CIDC unidirectional", "cidc", ("modality=flow", "direction=uni")),
        Config("CIDC non-directional", "cidc", ("modality=flow", "direction=none")),
    )),
    "CIDC direction (RGB input)": ("default", (
        Config("CIDC bidirectional", "cidc", ("modality=rgb", "direction=bi")),
        Config("CIDC unidirectional", "cidc", ("modality=rgb", "direction=uni")),
        Config("CIDC non-directional", "cidc", ("modality=rgb", "direction=none")),
    )),
    "ST-MulNet gating (RGB + 5-flow stacks)": ("harder", (
        Config("multiplicative gating", "stmulnet", ("flow_stack=5", "gating=multiplicative")),
        Config("additive gating", "stmulnet", ("flow_stack=5", "gating=additive")),
        Config("no gating (two independent streams)", "stmulnet", ("flow_stack=5", "gating=none")),
    )),
}
ORDER_CLASSES = ("left_then_right", "right_then_left")


def _machine() -> str:
    import torch
    from flowkit.bench.harness import machine_info
    m = machine_info()
    return (f"{m['cpu']}, {m['cores']} logical CPUs, torch {torch.__version__}, {m['platform']}, "
            f"load average {m['loadavg_1m']} at start")


def _flowkit(args: list[str], log: Path, threads: int = 1) -> str:
    """Run ``flowkit ARGS`` with ``threads`` torch/OpenMP threads; return stdout, raise on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(FLOWKIT + args, capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"$ flowkit {shlex.join(args)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"flowkit {shlex.join(args)} failed ({proc.returncode}); see {log}")
    return proc.stdout


@functools.cache
def make_store(work: Path, name: str, videos_per_class: int, log: Path) -> tuple[Path, Path, dict]:
    """Toy videos + TV-L1 store for toy set ``name``; reused when already there. -> (videos, store, toy.json)."""
    videos, store = work / f"toy_{name}", work / f"store_{name}"
    if not (videos / "toy.json").is_file():
        _flowkit(["toy", str(videos), *TOY_SETS[name], "--videos-per-class", str(videos_per_class)], log)
    t0 = time.perf_counter()
    _flowkit(["extract", str(videos), "-o", str(store), "--method", "tvl1"], log, threads=2)
    print(f"[{name}] store ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return videos, store, json.loads((videos / "toy.json").read_text())


@dataclass
class Result:
    top1: float
    mean_class: float
    order_pair: float  # accuracy on the two temporal-order classes alone
    seconds: float


def train_and_evaluate(config: Config, seed: int, epochs: int, videos: Path, store: Path,
                       run_dir: Path, log: Path, common: tuple[str, ...] | list[str] = tuple(COMMON)
                       ) -> Result:
    t0 = time.perf_counter()
    _flowkit(["train", str(store), *config.train_args(), *common, "--epochs", str(epochs),
              "--seed", str(seed), "--split-list", str(videos / "trainlist01.txt"),
              "-o", str(run_dir), "--overwrite"], log)
    seconds = time.perf_counter() - t0
    _flowkit(["evaluate", str(run_dir), str(store), "--checkpoint", "last",
              "--split-list", str(videos / "testlist01.txt"), "--clips", "1", "--crops", "1"], log)
    ev = json.loads((run_dir / "eval" / "eval.json").read_text())
    order = [p for p in ev["predictions"] if ev["classes"][p["label"]] in ORDER_CLASSES]
    order_acc = sum(p["pred"] == p["label"] for p in order) / len(order) if order else float("nan")
    return Result(ev["top1"], ev["mean_class_accuracy"], order_acc, seconds)


def _slug(config: Config) -> str:
    return "_".join([config.model, *(a.strip("-").replace("=", "-") for a in config.args)])


def run_table(rows, seeds, epochs, videos, store, work: Path, log: Path, jobs: int,
              common: tuple[str, ...] | list[str] = tuple(COMMON)) -> dict:
    """{config: [Result per seed]}; ``jobs`` single-threaded runs at a time; ``common``: the
    options every run shares."""
    tasks = {(c, s): work / "runs" / store.name / f"{_slug(c)}_seed{s}" for c in rows for s in seeds}
    results: dict = {c: [None] * len(seeds) for c in rows}
    with cf.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(train_and_evaluate, c, s, epochs, videos, store, d, log, common): (c, s)
                   for (c, s), d in tasks.items()}
        for fut in cf.as_completed(futures):
            c, s = futures[fut]
            r = fut.result()
            results[c][seeds.index(s)] = r
            print(f"[{store.name}] {c.label} seed {s}: top-1 {r.top1:.3f} ({r.seconds:.0f} s)",
                  file=sys.stderr)
    return results


def _pct(values) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(results: dict, seeds) -> list[str]:
    lines = ["| model | top-1 % (mean ± sd) | per seed | mean class acc % | order-pair acc % | train s/run |",
             "|---|---|---|---|---|---|"]
    for c, rs in results.items():
        lines.append(f"| {c.label} (`{c.model}` {' '.join(c.args)}) | {_pct([r.top1 for r in rs])} | "
                     f"{' / '.join(f'{100 * r.top1:.1f}' for r in rs)} | "
                     f"{_pct([r.mean_class for r in rs])} | {_pct([r.order_pair for r in rs])} | "
                     f"{statistics.mean(r.seconds for r in rs):.0f} |")
    return lines


def _toy_facts(toy: dict, videos: Path) -> str:
    params = {k: toy[k] for k in ("noise", "motion", "distractors", "contrast", "frames", "size")
              if k in toy}
    test = sum(1 for line in (videos / "testlist01.txt").read_text().splitlines() if line.strip())
    train = sum(1 for line in (videos / "trainlist01.txt").read_text().splitlines() if line.strip())
    classes = toy.get("classes", [])
    return (f"{len(classes)} classes ({', '.join(classes)}), {train} training / {test} held-out "
            f"videos, parameters {json.dumps(params)}; chance = {100 / max(len(classes), 1):.1f}%")


def _toy_command(name: str, videos_per_class: int) -> str:
    return shlex.join(["flowkit", "toy", "TOY", *TOY_SETS[name], "--videos-per-class", str(videos_per_class)])


def toy_run_arguments(doc: str, argv, *, work: str, out: str, epochs: int, videos_per_class: int,
                      jobs: int, quick_epochs: int, extra=None) -> argparse.Namespace:
    """The options of every script that trains on a toy set (this one, ``ddn_tvnet.py``,
    ``backward_flow.py``), parsed from ``argv``; ``--quick``: 1 seed, ``quick_epochs``, 4 videos
    per class, Markdown on stdout. ``extra(parser)`` adds a script's own options."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if extra is not None:
        extra(ap)
    ap.add_argument("--work", default=work, help="toy data, stores and runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--videos-per-class", type=int, default=videos_per_class)
    ap.add_argument("--jobs", type=int, default=jobs, help="runs at a time, one thread each")
    ap.add_argument("--quick", action="store_true",
                    help=f"1 seed, {quick_epochs} epochs, 4 videos/class; stdout")
    ap.add_argument("--out", default=out)
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.videos_per_class, args.out = (0,), quick_epochs, 4, None
    args.seeds = list(args.seeds)
    return args


def command_line(script: str, argv) -> str:
    """How the script was run, for a results file's "Command:" line."""
    return shlex.join([Path(sys.executable).name, f"benchmarks/{script}",
                       *(argv if argv is not None else sys.argv[1:])])


def write_markdown(text: str, out: str | None) -> None:
    """The results file ``out``, or stdout when None (``--quick``)."""
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text)


def write_partial(doc: list[str], out: str | None) -> None:
    """The tables finished so far, marked incomplete, so they survive an interrupted run."""
    if out:
        Path(out).write_text("\n".join(doc + ["**INCOMPLETE**"]) + "\n")


def finish(doc: list[str], started: float, log: Path, out: str | None) -> int:
    """The results file with its total wall time and where the logs are; the script's exit code."""
    doc.append(f"Total time {time.perf_counter() - started:.0f} s (wall). Logs of every command: "
               f"`{log}`.")
    write_markdown("\n".join(doc) + "\n", out)
    return 0


def main(argv=None) -> int:
    args = toy_run_arguments(__doc__, argv, work="/tmp/flowkit-recognition",
                             out=str(HERE / "results" / "recognition.md"), epochs=24,
                             videos_per_class=16, jobs=2, quick_epochs=2)
    seeds = args.seeds
    work = Path(args.work)
    log = work / "log.txt"
    t_start = time.perf_counter()
    doc = ["# Recognition on toy motion classes: do the models use motion?", "",
           f"Command: `{command_line('recognition.py', argv)}`  ",
           f"Machine: {_machine()}, no GPU; {args.jobs} runs at a time with 1 thread each.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           "Every run: `flowkit train STORE --model M ... " + shlex.join(COMMON) +
           f" --epochs {args.epochs} --seed S --split-list trainlist01.txt`, then "
           "`flowkit evaluate RUN STORE --checkpoint last --split-list testlist01.txt --clips 1 "
           "--crops 1`. Stores: `flowkit extract TOY -o STORE --method tvl1` (OpenCV-default "
           "TV-L1). *order-pair acc* is the accuracy on the two classes that differ only in "
           "temporal order (left_then_right, right_then_left).", ""]

    videos, store, toy = make_store(work, "default", args.videos_per_class, log)
    doc += ["## Default difficulty: the motion models should saturate, appearance should not", "",
            f"Toy set: `{_toy_command('default', args.videos_per_class)}`: {_toy_facts(toy, videos)}.", ""]
    doc += table(run_table(DEFAULT_ROWS, seeds, args.epochs, videos, store, work, log, args.jobs), seeds)
    doc += ["", "## The papers' comparisons, where they do not saturate", ""]
    for title, (name, rows) in COMPARISONS.items():
        videos, store, toy = make_store(work, name, args.videos_per_class, log)
        doc += [f"### {title}", "",
                f"Toy set `{name}`: `{_toy_command(name, args.videos_per_class)}`: "
                f"{_toy_facts(toy, videos)}.", ""]
        doc += table(run_table(rows, seeds, args.epochs, videos, store, work, log, args.jobs), seeds)
        doc.append("")
    return finish(doc, t_start, log, args.out)


if __name__ == "__main__":
    sys.exit(main())
