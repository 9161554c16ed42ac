"""MotionNet, a real (small) unsupervised training run on CPU: does it learn the known flow?

1. Writes a sample video folder with known motion (``flowkit.samples.make_sample_videos``: pans in
   four directions, zoom in, clockwise rotation; real photographs, H.264-encoded).
2. Trains a small MotionNet on it with the code behind ``flowkit train-flow motionnet`` (clips decoded
   from the videos, unsupervised loss only; the known flow is never used for training).
3. Evaluates, through the engine (``create_engine("motionnet", weights=CKPT).flow_clip``), on
   *held-out* rendered clips (other photos, crops and speeds: ``sample_specs(seed=1000)``) against
   their exact flow: the untrained network (its step-0 checkpoint), the trained one, zero flow and
   TV-L1 (flowkit ``tvl1``, OpenCV defaults) on the same frame pairs.

Prints a Markdown table with the command line and the machine and writes it to
``benchmarks/results/motionnet.md``.

    OMP_NUM_THREADS=1 python benchmarks/motionnet_train.py      # ~3-6 min on 2 busy CPU cores
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

import flowkit
from flowkit.bench import end_point_error
from flowkit.bench.harness import machine_info, versions
from flowkit.progress import LineProgress
from flowkit.train.motionnet import ClipSource, save_checkpoint, train
from flowkit.train.motionnet import MotionNetTrainConfig as TrainConfig
from flowkit.flow.motionnet import MotionNet, count_parameters, unsupervised_loss
from flowkit.samples import make_sample_videos, render_sample, sample_specs

RESULTS = Path(__file__).resolve().parent / "results" / "motionnet.md"
CLASSES = ("pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "rotate_cw")


def _eval_clips(size, frames: int, videos_per_class: int):
    specs = sample_specs(classes=CLASSES, videos_per_class=videos_per_class, frames=frames,
                         size=size, seed=1000)
    clips = [torch.from_numpy(render_sample(s)).permute(0, 3, 1, 2).contiguous() for s in specs]
    flows = [torch.from_numpy(s.flow()) for s in specs]
    return specs, clips, flows


def _score(flow_fn, clips, flows, specs):
    """EPE over all pixels of all pairs (overall, pans only, zoom/rotation only) and s per pair."""
    preds, start = [], time.perf_counter()
    for clip in clips:
        preds.append(flow_fn(clip).float().cpu())
    seconds = (time.perf_counter() - start) / sum(len(c) - 1 for c in clips)

    def epe(which):
        idx = [i for i, s in enumerate(specs) if which(s.class_name)]
        p = torch.cat([preds[i] for i in idx])
        g = torch.cat([flows[i][None].expand(len(preds[i]), -1, -1, -1) for i in idx])
        return end_point_error(p, g)

    return {"all": epe(lambda c: True), "pan": epe(lambda c: c.startswith("pan")),
            "zoom/rot": epe(lambda c: not c.startswith("pan")), "s_per_pair": seconds}


def _eval_loss(net: MotionNet, clips) -> float:
    """Mean unsupervised loss on the held-out clips, windows of M+1 frames."""
    m = net.num_frames
    windows = torch.stack([c[s: s + m + 1] for c in clips for s in range(0, len(c) - m, m)])
    net.eval()
    with torch.no_grad():
        loss = unsupervised_loss(windows, net(windows))
    return float(loss)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-frames", type=int, default=2)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--size", default="64x80")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos-per-class", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16, help="frames per training video")
    ap.add_argument("--eval-frames", type=int, default=9, help="frames per held-out clip")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()
    config = TrainConfig(num_frames=args.num_frames, width=args.width, size=size, epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch, batch=args.batch, lr=args.lr,
                         seed=args.seed)
    specs, clips, flows = _eval_clips(size, args.eval_frames, 2)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sample_videos(tmp / "videos", classes=CLASSES, videos_per_class=args.videos_per_class,
                           frames=args.frames, size=size, seed=args.seed)
        source = ClipSource.from_path(tmp / "videos", size)
        # Step-0 checkpoint: the same initial weights train() starts from (same seed).
        torch.manual_seed(config.seed)
        initial = MotionNet(**config.model_config())
        save_checkpoint(tmp / "step0.pt", {"config": config.model_config(),
                                           "state_dict": initial.state_dict()})
        t0 = time.perf_counter()
        net, history = train(source, config, tmp / "motionnet.pt",
                             progress=LineProgress(every=60))
        train_s = time.perf_counter() - t0
        before = flowkit.create_engine("motionnet", weights=str(tmp / "step0.pt"))
        after = flowkit.create_engine("motionnet", weights=str(tmp / "motionnet.pt"))
        tvl1 = flowkit.create_engine("tvl1")
        rows = [
            ("zero flow", _score(lambda c: torch.zeros(len(c) - 1, 2, *c.shape[-2:]), clips, flows, specs),
             "-"),
            ("MotionNet, untrained (step 0)", _score(before.flow_clip, clips, flows, specs),
             f"{_eval_loss(before.net, clips):.2f}"),
            (f"MotionNet, trained ({history[-1]['step']} steps)", _score(after.flow_clip, clips, flows, specs),
             f"{_eval_loss(after.net, clips):.2f}"),
            ("TV-L1, OpenCV defaults (flowkit `tvl1`)",
             _score(lambda c: tvl1(c[:-1], c[1:]), clips, flows, specs), "-"),
        ]
    total_s = time.perf_counter() - started

    info, ver = machine_info(), versions()
    n_pairs = sum(len(c) - 1 for c in clips)
    cmd = "OMP_NUM_THREADS=1 python benchmarks/motionnet_train.py" + (
        " " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else "")
    lines = [
        "# MotionNet: unsupervised training on CPU vs the known flow (flowkit)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {info['cpu']}, {info['cores_usable']} usable cores (shared; load average "
        f"{os.getloadavg()[0]:.2f} at the end), torch {ver['torch']} ({torch.get_num_threads()} "
        f"threads), OpenCV {ver['opencv']}, Python {ver['python']}, {info['platform']}. "
        f"Total {total_s:.0f} s.",
        "",
        f"Network: MotionNet M={config.num_frames} ({config.num_frames + 1} frames in), width "
        f"{config.width} ({count_parameters(net) / 1e6:.2f} M parameters), frames {size[0]}x{size[1]}.",
        f"Training: {len(source.loaders)} sample videos ({', '.join(CLASSES)}; {args.videos_per_class} "
        f"per class, {args.frames} frames, H.264), unsupervised loss only; Adam lr {config.lr}, batch "
        f"{config.batch} clips, {config.epochs} epochs x {config.steps_per_epoch} steps = "
        f"{history[-1]['step']} steps in {train_s:.0f} s ({history[-1]['step'] / train_s:.2f} steps/s); "
        f"training loss {history[0]['loss']:.2f} (epoch 1) -> {history[-1]['loss']:.2f} "
        f"(epoch {history[-1]['epoch']}).",
        f"Evaluation: {len(clips)} held-out rendered clips (same classes, other photos/crops/speeds, "
        f"seed 1000) of {args.eval_frames} frames = {n_pairs} pairs; EPE in pixels over all pixels; "
        f"MotionNet through the engine (`flow_clip`: windows of M+1 frames, finest 1/2-scale output "
        f"upsampled); eval loss = mean unsupervised loss on the held-out clips.",
        "",
        "| Method | EPE all | EPE pans | EPE zoom/rotation | eval loss | ms / pair |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r, loss in rows:
        lines.append(f"| {name} | {r['all']:.3f} | {r['pan']:.3f} | {r['zoom/rot']:.3f} | {loss} | "
                     f"{1000 * r['s_per_pair']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
