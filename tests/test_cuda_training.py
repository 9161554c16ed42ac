"""Training on a GPU: what the CPU suite cannot run (AMP, CUDA checkpoints, nccl, CUDA engines).

1. Every registered classifier trains with AMP (autocast float16 + GradScaler, the default
   ``amp=True``) on the tiny store; its checkpoint loads on the CPU and evaluates on the device.
2. Without AMP (and without TF32), a GPU step gives the CPU's loss.
3. The learnable flow engines (motionnet; tvnet and costvolume, backend torch) give the CPU's flow.
4. ``train-flow``'s trainers (TVNet, MotionNet) run on the device; their weights load on the CPU.
5. torchrun with one rank in a process group (nccl on CUDA): one epoch, a checkpoint.

All are marked ``gpu``. ``FLOWKIT_GPU_TEST_DEVICE=cpu`` runs them on the CPU (conftest.py does not
skip them then): a dry run of the file where no GPU is; AMP is off there (flowkit ignores it on the
CPU), so only the device runs the AMP path. Budget: under a minute on an H200.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import flowkit
from flowkit.models import list_models, load_run_weights, rebuild_run_model
from flowkit.train import TrainConfig, Trainer, evaluate_run, load_checkpoint

DEVICE = os.environ.get("FLOWKIT_GPU_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("one_torch_thread")]

TINY_NET = {"width": 4, "layers": [1, 1, 1, 1]}
# Per model: its keywords beyond TINY_NET and the clip length (the models' own tests' tiny settings:
# tests/test_train.py, test_cli_rgb_motion_models.py, test_trajectory.py).
MODELS = {
    "resnet2d": ({"modality": "flow"}, 2),
    "i3d": ({"modality": "flow"}, 4),
    "s3d": ({"modality": "rgb"}, 4),
    "trajectorynet": ({"layers": [1, 2, 1, 1]}, 4),
    "cidc": ({}, 4),
    "stmulnet": ({}, 2),
    "ddn": ({}, 3),
    "tvnet": ({"tvnet_iterations": 2}, 3),
}


def tiny_config(store, model: str, **kw) -> TrainConfig:
    """``model`` on the tiny store at 16 px, on DEVICE with AMP: 9 training videos in batches of 3,
    3 validation videos."""
    extra, frames = MODELS[model]
    base = dict(store=str(store), model=model, model_kwargs={**TINY_NET, **extra}, frames=frames,
                size=16, batch_size=3, epochs=2, lr=0.05, flip=False, val_fraction=0.25,
                workers=0, device=DEVICE, amp=True, seed=0)
    return TrainConfig(**{**base, **kw})


def _tensors(obj):
    """Every tensor inside nested dicts/lists."""
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@contextlib.contextmanager
def no_tf32():
    """TF32 off for matmuls and cuDNN convolutions, restored afterwards. flowkit leaves both flags
    as torch sets them (matmul off, cuDNN on): with cuDNN's TF32 a convolution keeps 10 mantissa
    bits, relative errors ~1e-3, which is no parity test of float32."""
    with warnings.catch_warnings():  # newer torch prefers fp32_precision and may warn
        warnings.simplefilter("ignore")
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------- 1. classifiers with AMP

def test_model_table_covers_every_registered_classifier():
    """The parametrisation below is every registered classifier (a new one must be added here)."""
    assert sorted(MODELS) == list_models()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_classifier_trains_with_amp_and_its_checkpoint_loads_on_the_cpu(model, tiny_store,
                                                                         tmp_path):
    """Two epochs (6 steps; AMP on the GPU) give finite losses and changed weights; AMP really ran
    (the GradScaler's state is saved); last.pt holds CPU-loadable tensors only after
    ``map_location="cpu"`` (as torch.load with weights_only reads it) that fit the model rebuilt on
    the CPU; and evaluating the run on the device gives finite scores. Six steps, not one: the
    scaler's first scale (65536) may overflow float16 gradients and skip a step or two."""
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(tiny_store, model), run)
    assert trainer.device.type == torch.device(DEVICE).type and trainer.use_amp == ON_GPU
    before = {k: v.detach().cpu().clone() for k, v in trainer.model.named_parameters()}
    result = trainer.fit()
    assert result.epochs_done == 2 and result.global_step == 6
    for record in result.history:
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"]), record

    path = run / "checkpoints" / "last.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in _tensors(raw))
    ckpt = load_checkpoint(path)
    assert bool(ckpt["scaler"]) == ON_GPU  # an enabled GradScaler saves its scale, else {}
    if ON_GPU:
        assert np.isfinite(float(ckpt["scaler"]["scale"]))
    cpu_model = rebuild_run_model(ckpt["config"]["model"], restoring=True)
    load_run_weights(cpu_model, ckpt["config"]["model"], ckpt["model"], str(path))
    after = dict(cpu_model.named_parameters())
    changed = [k for k, v in before.items() if not torch.equal(v, after[k].detach())]
    assert changed, "no parameter changed in 6 steps"
    assert all(torch.isfinite(v).all() for v in after.values())

    report = evaluate_run(run, clips=1, crops=1, checkpoint="last", device=DEVICE, out_dir=False)
    scores = [p["score"] for p in report.report["predictions"]]
    assert report.num_videos == 3 and np.isfinite(scores).all() and 0 <= report.top1 <= 1


# ----------------------------------------------------------------------- 2. float32 parity

@pytest.mark.parametrize("model, kwargs", [("resnet2d", {"modality": "flow"}),
                                           ("i3d", {"modality": "rgb"})])
def test_float32_steps_on_the_device_match_the_cpu(model, kwargs, tiny_store, tmp_path):
    """Two optimiser steps (batch 6, no validation) without AMP and TF32 on DEVICE give the CPU's
    losses from the same seed (same clips, crops and initial weights; no dropout, whose masks
    come from another generator on CUDA) to 1e-3 relative. float32 in another summation order
    (cuDNN's algorithms, atomics in backward) differs by ~1e-6; the margin is for cuDNN's FFT and
    Winograd convolutions, whose float32 error is larger. A wrong device-only path (AMP left on,
    TF32, a layer skipped) is off by more than 1e-3. The loss compared is the epoch mean, so the
    second step's loss checks the first update too."""
    losses = {}
    with no_tf32():
        for run, device in (("cpu", "cpu"), ("device", DEVICE)):
            config = tiny_config(tiny_store, model, model_kwargs={**TINY_NET, **kwargs},
                                 epochs=1, batch_size=6, val_fraction=0.0, amp=False,
                                 device=device)
            result = Trainer(config, tmp_path / run).fit()
            assert result.global_step == 2
            losses[run] = result.history[0]["train_loss"]
    assert np.isfinite(losses["cpu"])
    assert losses["device"] == pytest.approx(losses["cpu"], rel=1e-3), losses


# ----------------------------------------------------------------------- 3. flow engines

@pytest.fixture(scope="module")
def rgb_pair():
    """Two real frames (B=2: astronaut and camera, 60x80 RGB uint8); frame 1 is frame 0 moved by a
    smooth sub-pixel flow (tests/test_cuda_kernels.py's photo_pair, in colour)."""
    import cv2
    from skimage import data

    frames0, frames1 = [], []
    yy, xx = np.mgrid[0:60, 0:80].astype(np.float32)
    fu, fv = 1.5 + 0.8 * np.sin(yy / 9.0), -0.75 + 0.5 * np.cos(xx / 13.0)
    for rgb in (data.astronaut(), np.dstack([data.camera()] * 3)):
        small = cv2.resize(rgb, (80, 60), interpolation=cv2.INTER_AREA)
        frames0.append(small)
        frames1.append(cv2.remap(small, xx - fu, yy - fv, cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT))
    as_t = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()
    return as_t(frames0), as_t(frames1)


@pytest.fixture(scope="module")
def motionnet_weights(tmp_path_factory) -> Path:
    """A MotionNet-(2) checkpoint (width 1/4, seeded initial weights) as train-flow writes it."""
    from flowkit.flow.motionnet import MotionNet
    from flowkit.train.motionnet import MotionNetTrainConfig, save_checkpoint

    torch.manual_seed(0)
    config = MotionNetTrainConfig(num_frames=1, width=0.25, size=(60, 80))
    path = tmp_path_factory.mktemp("motionnet") / "motionnet.pt"
    save_checkpoint(path, {"config": {**asdict(config), "size": [60, 80]}, "epoch": 0, "step": 0,
                           "state_dict": MotionNet(**config.model_config()).state_dict()})
    return path


@pytest.mark.parametrize("name, kw", [("motionnet", {}),
                                      ("tvnet", {"backend": "torch", "scales": 2, "warps": 1,
                                                 "iterations": 30}),
                                      ("costvolume", {"backend": "torch"})])
def test_learnable_flow_engines_on_the_device_match_the_cpu(name, kw, rgb_pair, motionnet_weights):
    """The same engine on DEVICE and on the CPU gives the same flow on real frames: mean absolute
    difference below 1e-3 px, largest below 0.1 px, with TF32 off (TF32 keeps 10 mantissa bits:
    relative errors ~1e-3 in every convolution). Not in test_cuda_kernels.py, which compares the
    cupy and torch backends with each other on CUDA, never CUDA with the CPU. float32 rounding of
    another summation order is ~1e-6 px; the largest difference leaves room for what 30 TV-L1
    iterations and the cost volume's soft arg-max (temperature 0.02: x50) make of it at a few
    ill-conditioned pixels. A real device difference (padding, a resize, an op's semantics) moves
    whole regions by more."""
    if name == "motionnet":
        kw = {"weights": str(motionnet_weights)}
    with no_tf32():
        cpu = flowkit.create_engine(name, device="cpu", **kw)(*rgb_pair)
        dev = flowkit.create_engine(name, device=DEVICE, **kw)(*rgb_pair)
    assert dev.device.type == torch.device(DEVICE).type and dev.shape == cpu.shape == (2, 2, 60, 80)
    diff = (dev.cpu() - cpu).abs()
    assert torch.isfinite(dev).all() and cpu.abs().max() > 0.01  # not a trivially zero flow
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 0.1, (name, float(diff.mean()),
                                                                   float(diff.max()))


# ----------------------------------------------------------------------- 4. train-flow

def test_tvnet_training_on_the_device_saves_weights_the_cpu_engine_loads(tmp_path):
    """``train-flow tvnet``'s trainer (:func:`flowkit.train.tvnet.fit`, in-memory synthetic pairs:
    no video decoding) runs 2 epochs on DEVICE: finite losses, changed weights, and the checkpoint
    builds a CPU engine (``create_engine("tvnet", weights=...)``) that gives finite flow."""
    from flowkit.bench import synthetic_pairs
    from flowkit.flow.tvnet import TVNet, TVNetConfig
    from flowkit.train.tvnet import TVNetTrainConfig, fit, samples_from_pairs

    samples = samples_from_pairs(synthetic_pairs(4, size=(24, 32), seed=0))
    config = TVNetTrainConfig(TVNetConfig(scales=1, warps=1, iterations=5), epochs=2, batch=2,
                              lr=0.05)
    out = tmp_path / "tvnet.pt"
    history = fit(config, samples, out, device=DEVICE)
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in history)
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in _tensors(saved))
    torch.manual_seed(config.seed)
    initial = TVNet(**asdict(config.architecture)).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in saved["state_dict"].items())
    engine = flowkit.create_engine("tvnet", device="cpu", weights=str(out))
    flow = engine(samples[0].i0[None], samples[0].i1[None])
    assert flow.shape == (1, 2, 24, 32) and torch.isfinite(flow).all()


def test_motionnet_training_on_the_device_saves_weights_the_cpu_engine_loads(tmp_path):
    """``train-flow motionnet``'s trainer (:func:`flowkit.train.motionnet.train`, in-memory clips:
    no PyAV) runs 4 Adam steps on DEVICE: finite losses, changed weights, and the checkpoint builds
    a CPU engine that gives finite flow."""
    from flowkit.flow.motionnet import MotionNet
    from flowkit.train.motionnet import ClipSource, MotionNetTrainConfig, train

    rng = np.random.default_rng(0)
    textures = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(2)]
    videos = [np.stack([np.roll(tex, 2 * t, axis=1) for t in range(4)]) for tex in textures]
    config = MotionNetTrainConfig(num_frames=1, width=0.125, size=(32, 48), epochs=2,
                                  steps_per_epoch=2, batch=2, lr=1e-3)
    out = tmp_path / "motionnet.pt"
    model, history = train(ClipSource.from_arrays(videos), config, out, device=DEVICE)
    assert next(model.parameters()).device.type == torch.device(DEVICE).type
    assert [row["step"] for row in history] == [2, 4]
    assert all(np.isfinite(row["loss"]) for row in history)
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in _tensors(saved))
    torch.manual_seed(config.seed)
    initial = MotionNet(**config.model_config()).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in saved["state_dict"].items())
    engine = flowkit.create_engine("motionnet", device="cpu", weights=str(out))
    frames = torch.from_numpy(videos[0]).permute(0, 3, 1, 2)
    flow = engine(frames[:-1], frames[1:])
    assert flow.shape == (3, 2, 32, 48) and torch.isfinite(flow).all()


# ----------------------------------------------------------------------- 5. torchrun

# Run by torchrun as the one rank. flowkit joins a process group only with WORLD_SIZE > 1
# (distributed.launched), and one GPU cannot hold two nccl ranks: here it joins the group of one
# rank, through its own distributed.init (which picks the backend), then `flowkit train` runs as
# under torchrun, every collective (all_gather_object, all_reduce, barrier) on that backend.
RANK_SCRIPT = """
import os, sys
import flowkit.distributed as d
from flowkit.cli import main

d.launched = lambda: bool(os.environ.get("MASTER_ADDR"))
init = d.init
def reporting_init(*args, **kwargs):
    joined = init(*args, **kwargs)
    print("backend", d.dist.get_backend() if joined else None, "world", d.world_size(), flush=True)
    return joined
d.init = reporting_init
main(sys.argv[1:], prog_name="flowkit")
"""


def test_torchrun_one_rank_trains_an_epoch_with_the_devices_backend(tiny_store, tmp_path):
    """``torchrun --nproc-per-node 1`` around ``flowkit train --device DEVICE`` with the rank in a
    process group (see RANK_SCRIPT): flowkit picks nccl on CUDA (gloo on the CPU), trains one
    epoch with AMP through the group's collectives, exits 0 and writes last.pt, loadable on the
    CPU. (DDP's wrapper itself needs two ranks: tests/test_torchrun.py, gloo.)"""
    run, script = tmp_path / "run", tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])  # flowkit need not be installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--standalone",
           str(script), "train", str(tiny_store), "--out", str(run), "--model", "resnet2d",
           "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]", "--model-arg",
           "modality=flow", "--frames", "2", "--size", "16", "--batch-size", "3", "--epochs", "1",
           "--no-flip", "--workers", "0", "--device", DEVICE]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"backend {'nccl' if ON_GPU else 'gloo'} world 1" in proc.stdout, proc.stdout
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["config"]["world_size"] == 1
    assert bool(ckpt["scaler"]) == ON_GPU
    assert np.isfinite(ckpt["history"][0]["train_loss"])
