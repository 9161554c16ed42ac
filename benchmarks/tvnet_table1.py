"""TVNet paper, Table 1 trend: TV-L1 (5 scales, 5 warps) vs untrained and trained TVNet-50.

Ground truth: ``flowkit.bench.synthetic_pairs`` (exact flow, real photographs). Each data set has a
training split (``--train-seed``) and a disjoint test split (``--test-seed``; pairs are drawn from
``default_rng([seed, i])``, so different seeds give different photos, crops and motions). Two sets:

- ``all``: every synthetic kind (smooth, translation, affine, small, large 6.5-13.5 px, occlusion);
- ``small``: the ``small`` kind only, |flow| < 2 px, closer to the small motions of Middlebury
  "other" on which the paper reports Table 1.

Rows, scored by EPE (pixels, all valid pixels, pixel-weighted) on the test split:

(a) TV-L1 with OpenCV's defaults (5 scales, step 0.8, 5 warps, 10x30 iterations, epsilon stop,
    median 5): ``flowkit.create_engine("tvl1")``;
(b) TVNet-50 untrained (1 scale, 1 warp, 50 iterations) = fixed-schedule TV-L1;
(c) TVNet-50 trained on the set's training split with the EPE loss (Adam, see the arguments).

Prints a Markdown table with the command line and the machine and writes it to
``benchmarks/results/tvnet_table1.md``. CPU-feasible by design: 64x80 frames, a few hundred steps.

    OMP_NUM_THREADS=1 python benchmarks/tvnet_table1.py   # ~4-5 min on 2 busy CPU cores
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import flowkit
from flowkit.bench import synthetic_pairs
from flowkit.bench.harness import machine_info, versions
from flowkit.train.tvnet import evaluate, samples_from_pairs, train_epoch
from flowkit.flow.tvnet import TVNet

RESULTS = Path(__file__).resolve().parent / "results" / "tvnet_table1.md"
SETS = {"all": None, "small": ("small",)}


def _tvl1_epe(samples, batch: int) -> tuple[float, float]:
    """Pixel-weighted EPE of flowkit's TV-L1 (OpenCV defaults) and seconds per pair."""
    engine = flowkit.create_engine("tvl1")
    err, n, start = 0.0, 0, time.perf_counter()
    for k in range(0, len(samples), batch):
        chunk = samples[k:k + batch]
        flow = engine(torch.stack([s.i0 for s in chunk]), torch.stack([s.i1 for s in chunk]))
        gt = torch.stack([s.flow for s in chunk])
        valid = torch.stack([s.valid for s in chunk])
        err += float(torch.linalg.vector_norm(flow - gt, dim=1)[valid].sum())
        n += int(valid.sum())
    return err / n, (time.perf_counter() - start) / len(samples)


def run_set(name: str, args) -> dict:
    kinds = SETS[name]
    size = (args.height, args.width)
    train = samples_from_pairs(synthetic_pairs(args.train_pairs, size=size, seed=args.train_seed,
                                               kinds=kinds))
    test = samples_from_pairs(synthetic_pairs(args.test_pairs, size=size, seed=args.test_seed,
                                              kinds=kinds))
    both = train + test
    train_idx = list(range(len(train)))
    test_idx = list(range(len(train), len(both)))

    tvl1_epe, tvl1_s = _tvl1_epe(test, args.batch)
    torch.manual_seed(args.seed)
    net = TVNet(scales=1, warps=1, iterations=50)
    untrained = evaluate(net, both, test_idx, args.batch)["epe"]
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    start, curve = time.perf_counter(), []
    for epoch in range(1, args.epochs + 1):
        r = train_epoch(net, optimizer, both, train_idx, args.batch,
                        np.random.default_rng([args.seed, epoch]))
        curve.append(r["epe"])
        print(f"[{name}] epoch {epoch}/{args.epochs}: train EPE {r['epe']:.4f}", file=sys.stderr,
              flush=True)
    train_s = time.perf_counter() - start
    trained = evaluate(net, both, test_idx, args.batch)["epe"]
    steps = args.epochs * -(-len(train) // args.batch)
    return {"tvl1": tvl1_epe, "tvl1_s": tvl1_s, "untrained": untrained, "trained": trained,
            "train_s": train_s, "steps": steps, "curve": curve,
            "train_epe_trained": evaluate(net, both, train_idx, args.batch)["epe"]}


def markdown(results: dict, args, seconds: float) -> str:
    m = machine_info("cpu")
    v = versions()
    cmd = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/tvnet_table1.py", *sys.argv[1:]])
    if os.environ.get("OMP_NUM_THREADS"):
        cmd = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {cmd}"
    names = list(results)
    head = "| Method | S-W-I | " + " | ".join(f"EPE test `{n}`" for n in names) + " |"
    lines = [
        "# TVNet Table 1 trend (flowkit)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {m['cpu']}, {m['cores_usable']} usable cores (shared; load average "
        f"{m['loadavg_1m']} at the end), torch {v['torch']} ({m['torch_threads']} threads), "
        f"OpenCV {v['opencv']}, Python {v['python']}, {platform.platform()}. Total {seconds:.0f} s.",
        "",
        f"Data: `synthetic_pairs`, {args.height}x{args.width}; train split {args.train_pairs} pairs "
        f"(seed {args.train_seed}), test split {args.test_pairs} pairs (seed {args.test_seed}). "
        "`all` = every kind (motions up to 15 px), `small` = the `small` kind (|flow| < 2 px). "
        "EPE in pixels over all valid pixels of the test split.",
        "",
        head,
        "|---|---|" + "---:|" * len(names),
        "| (a) TV-L1, OpenCV defaults (flowkit `tvl1`) | 5-5-300 (step 0.8, eps stop, median 5) | "
        + " | ".join(f"{results[n]['tvl1']:.3f}" for n in names) + " |",
        "| (b) TVNet-50 untrained (= fixed-schedule TV-L1) | 1-1-50 | "
        + " | ".join(f"{results[n]['untrained']:.3f}" for n in names) + " |",
        "| (c) TVNet-50 trained (EPE loss on the set's train split) | 1-1-50 | "
        + " | ".join(f"{results[n]['trained']:.3f}" for n in names) + " |",
        "",
        f"Training of (c): Adam lr {args.lr}, batch {args.batch}, {args.epochs} epochs, gradient-norm "
        f"clip 1.0, seed {args.seed}; "
        + "; ".join(f"`{n}`: {results[n]['steps']} steps in {results[n]['train_s']:.0f} s, train EPE "
                    f"{results[n]['curve'][0]:.3f} (epoch 1) -> {results[n]['train_epe_trained']:.3f} "
                    f"(trained model)" for n in names) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--train-pairs", type=int, default=32)
    p.add_argument("--test-pairs", type=int, default=24)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", default="all,small", help="comma-separated subset of: all, small")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = {name: run_set(name, args) for name in args.sets.split(",")}
    text = markdown(results, args, time.perf_counter() - start)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
