"""What determines a training run: :class:`TrainConfig`, its checks, and resuming with changes.

The run directory's ``config.json`` holds ``{"config": TrainConfig as a dict, "model": {"name",
"kwargs"}, "classes", "split", "clip_length", "inputs", "flow_stack", "extraction",
"flowkit_version", ...}`` (written by :mod:`flowkit.train.loop`; ``extraction``: what the training
videos were extracted with, :mod:`flowkit.train.inputs`); checkpoints carry the same dict. A new run records in
``config.flow_bound`` the pixels its flow inputs were divided by (the training store's bound unless
given), so datasets built for the run later divide by the same whatever store they read; a run
recorded without it (older flowkit) divides by each store's own bound.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.transforms import TSN_SCALES as DEFAULT_SCALES
from ..errors import FlowkitError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")

# Options a resumed run may change: they do not alter what the finished steps computed. Changing
# ``epochs`` changes a cosine/step schedule's length, so the resumed run no longer matches one
# trained with the new value from the start (it is still allowed: extending a run is common).
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "device", "amp", "checkpoint_every", "store"})

# DataLoader workers at most, by default: enough to keep a GPU fed on small clips.
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """DataLoader workers by default: the cores this process may use, at most
    :data:`MAX_DEFAULT_WORKERS` (more than the cores only slows decoding down, and torch warns)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_DEFAULT_WORKERS, usable or 1))


@dataclass
class TrainConfig:
    """Options of ``flowkit train``: each field's ``metadata["help"]`` is its ``--help`` text, and
    ``flowkit train`` builds its options from these fields (``flowkit/cli/train.py``).

    ``frames`` is the clip length T for random-clip sampling, or the frames per segment with
    ``segments`` (TSN); ``None`` means 8 for clips and 1 per segment. ``size`` is the square crop
    side in pixels; ``scales`` the multi-scale crop fractions of the short side. ``warmup_epochs``
    and ``milestones`` are in epochs (fractions allowed for warmup); the learning rate follows the
    schedule per optimiser step. ``val_fraction`` makes a stratified split of the store unless
    ``split_list`` (UCF101 ``trainlist``) is given, with ``val_list`` (``testlist``) as validation;
    ``skip_missing`` leaves out listed videos the store lacks instead of refusing the lists (kept
    in ``config.json``, so ``flowkit evaluate --split-list`` of the run does the same).
    """
    store: str
    model: str = field(metadata={"help": "Registered classifier (resnet2d, i3d, s3d, trajectorynet, "
                                         "cidc, stmulnet, ddn, tvnet, ...). Required unless "
                                         "resuming."})
    model_kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "option": "--model-arg", "kind": "params", "metavar": "KEY=VALUE",
        "help": "Model keyword, repeatable, JSON values (e.g. --model-arg modality=flow "
                "--model-arg layers=[2,2,2,2]). num_classes comes from the store."})
    frames: int | None = field(default=None, metadata={
        "help": "Frames per clip T [default: 8]; with --segments, frames per segment [1]."})
    step: int = field(default=1, metadata={"help": "Temporal stride."})
    segments: int | None = field(default=None, metadata={
        "help": "TSN sampling: this many segments, a snippet from each (instead of one clip)."})
    size: int = field(default=112, metadata={"help": "Crop side, pixels."})
    scales: tuple[float, ...] = field(default=DEFAULT_SCALES, metadata={
        "kind": "floats", "help": "Multi-scale crop sides as fractions of the short side."})
    flip: bool = field(default=True, metadata={
        "help": "Random horizontal flips (negating u); off for direction-sensitive classes."})
    batch_size: int = field(default=8, metadata={"help": "Clips per step."})
    epochs: int = field(default=10, metadata={
        "help": "Total epochs (with --resume: train up to this many)."})
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS, "help": "Optimiser."})
    lr: float = field(default=0.01, metadata={"help": "Peak learning rate."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    weight_decay: float = field(default=1e-4, metadata={
        "help": "Not applied to biases and normalisation parameters."})
    schedule: str = field(default="cosine", metadata={
        "choices": SCHEDULES, "help": "Learning-rate schedule, stepped per iteration after the warmup."})
    warmup_epochs: float = field(default=0.0, metadata={
        "help": "Linear warmup length (fractions allowed)."})
    milestones: tuple[int, ...] = field(default=(), metadata={
        "kind": "ints", "help": "Epochs where --schedule step multiplies the lr by --gamma (e.g. "
                                "30,40) [default: 1/2 and 3/4 of --epochs]."})
    gamma: float = field(default=0.1, metadata={"help": "Step decay factor."})
    clip_grad: float | None = field(default=None, metadata={
        "help": "Clip the gradient norm to this value."})
    amp: bool = field(default=True, metadata={
        "help": "Mixed precision (CUDA only; ignored on CPU)."})
    sync_bn: bool = field(default=False, metadata={
        "help": "Under torchrun: batch-norm statistics over all ranks' clips (SyncBatchNorm)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of initialisation, split, sampling and shuffling."})
    workers: int = field(default_factory=default_workers, metadata={
        "help": "DataLoader worker processes [default: the usable cores, at most 4]."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    flow_name: str = field(default="tvl1", metadata={
        "help": "Flow dataset of the store (the extraction --method)."})
    flow_bound: float | None = field(default=None, metadata={
        "help": "Flow pixels mapped to 1 at the model's input [default: the bound of the store's "
                "flow: 20, or a uint8 codec's]. Recorded in config.json, so evaluating or "
                "resuming the run on a store of another flow codec divides by the same."})
    val_fraction: float = field(default=0.1, metadata={
        "help": "Stratified validation split (0: none), keeping UCF101 groups (_g08_) whole. "
                "Ignored with --split-list."})
    split_list: str | None = field(default=None, metadata={
        "kind": "file", "help": "Training videos from a UCF101 list (trainlist01.txt)."})
    val_list: str | None = field(default=None, metadata={
        "kind": "file", "help": "Validation videos from a UCF101 list (testlist01.txt)."})
    skip_missing: bool = field(default=False, metadata={
        "help": "Leave out videos of --split-list/--val-list that STORE lacks (their extraction "
                "failed or they were never extracted), counted and named in a note; without it "
                "they are an error. `flowkit evaluate` of the run does the same."})
    init: str | None = field(default=None, metadata={
        "kind": "file",
        "help": "torchvision-format ResNet weights (inflated to 3D, cross-modality for flow)."})
    checkpoint_every: int = field(default=0, metadata={
        "help": "Also save last.pt every N steps (0: at epoch ends only)."})

    def __post_init__(self):
        self.scales = tuple(float(s) for s in self.scales)
        self.milestones = tuple(int(m) for m in self.milestones)
        self.model_kwargs = dict(self.model_kwargs)

    @property
    def frames_per_clip(self) -> int:
        """Frames the sampler draws per clip position: ``frames`` or its default (8, or 1 per
        segment)."""
        if self.frames is not None:
            return int(self.frames)
        return 1 if self.segments else 8

    @property
    def clip_length(self) -> int:
        """T, the frames a training clip has: ``segments * frames_per_clip`` or ``frames``."""
        return (self.segments or 1) * self.frames_per_clip

    def validate(self) -> "TrainConfig":
        """Raise FlowkitError for values no run can use; return self.

        Files (split lists, ``init``) are checked where they are read, at the start of a new run:
        a resumed run does not need them any more.
        """
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise FlowkitError(msg)

        need(bool(self.model), "no model given; pass --model NAME (see `flowkit train --help`)")
        for name in ("step", "size", "batch_size", "epochs"):
            need(int(getattr(self, name)) >= 1, f"{name.replace('_', '-')} must be >= 1, got "
                                                f"{getattr(self, name)}")
        need(self.frames is None or self.frames >= 1, f"frames must be >= 1, got {self.frames}")
        need(self.segments is None or self.segments >= 1, f"segments must be >= 1, got {self.segments}")
        need(len(self.scales) > 0 and all(0 < s <= 1 for s in self.scales),
             f"scales must be fractions in (0, 1], got {list(self.scales)}")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.momentum >= 0 and self.weight_decay >= 0 and self.warmup_epochs >= 0,
             "momentum, weight-decay and warmup-epochs must be >= 0")
        need(all(m >= 1 for m in self.milestones), f"milestones are epochs >= 1, got "
                                                    f"{list(self.milestones)}")
        need(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(self.clip_grad is None or self.clip_grad > 0, f"clip-grad must be > 0, got {self.clip_grad}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(self.flow_bound is None or (math.isfinite(self.flow_bound) and self.flow_bound > 0),
             f"flow-bound must be a positive number of pixels, got {self.flow_bound}")
        need(self.workers >= 0 and self.checkpoint_every >= 0,
             "workers and checkpoint-every must be >= 0")
        need(0 <= self.val_fraction < 1, f"val-fraction must be in [0, 1), got {self.val_fraction}")
        need(self.val_list is None or self.split_list is not None,
             "--val-list needs --split-list (the training list)")
        need(not self.skip_missing or self.split_list is not None,
             "--skip-missing needs --split-list (without a list every video is in the store)")
        if "num_classes" in self.model_kwargs:
            raise FlowkitError("num_classes comes from the store; leave it out of --model-arg")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scales"], d["milestones"] = list(self.scales), list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from :meth:`to_dict` output; unknown keys (from a newer flowkit) are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise FlowkitError(f"unknown training options {', '.join(unknown)} (written by a newer "
                               "flowkit?)")
        return cls(**d)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory; FlowkitError when missing or unreadable."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FlowkitError(f"{run_dir} is not a training run (no config.json)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FlowkitError(f"cannot read {path} ({exc})") from None


def merge_for_resume(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """The config a resumed run uses: ``saved`` with the explicitly ``given`` options applied.

    Options in :data:`RESUMABLE_CHANGES` may change; any other given option must equal the saved
    value, else FlowkitError names it (resuming with another learning rate or model is a new run).
    File keywords of ``model_kwargs`` (``tvnet_weights=w.pt``) are compared as absolute paths, as
    the run recorded them: the same command plus ``--resume`` names the same file.
    """
    values = saved.to_dict()
    conflicts = []
    for key, value in given.items():
        if key not in values:
            raise FlowkitError(f"unknown training option {key!r}")
        new = TrainConfig(**{**values, key: value}).to_dict()[key]  # normalise tuples etc.
        if key == "model_kwargs":
            new = _absolute_files(given.get("model", saved.model), new)
            if new == _absolute_files(saved.model, values[key]):  # (older runs: relative)
                continue
        if new == values[key]:
            continue
        if key in RESUMABLE_CHANGES:
            values[key] = new
        else:
            conflicts.append(f"{key}={values[key]!r} (given {new!r})")
    if conflicts:
        raise FlowkitError("--resume: the run was trained with " + ", ".join(conflicts) +
                           "; leave these options out (they come from config.json) or start a new "
                           f"run; only {', '.join(sorted(RESUMABLE_CHANGES))} may change")
    return TrainConfig.from_dict(values)


def _absolute_files(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with model ``model``'s file keywords as absolute paths (how a run records them;
    :func:`flowkit.models.registry.absolute_file_kwargs`); unchanged for an unknown model, which
    the resumed run refuses by name."""
    from ..models.registry import MODELS, absolute_file_kwargs  # torch: only when resuming

    return absolute_file_kwargs(model, kwargs) if model in MODELS else dict(kwargs)
