"""What feeds :class:`flowkit.train.Trainer`: seeds, device, splits, datasets, batches, loaders.

Every random choice is a function of (seed, epoch, ...) through :func:`derive_seed`, so batches do
not depend on the worker count and a resumed run sees exactly the batches it had not seen.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import FlowkitError
from .config import TrainConfig


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that is a function of ``parts`` (ints/strings), independent across parts:
    ``derive_seed(seed, epoch, "shuffle")``. Unlike ``seed + epoch`` it never makes seed 0 epoch 1
    repeat seed 1 epoch 0."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; FlowkitError for an unavailable CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FlowkitError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlowkitError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed the global torch (all devices), numpy and Python RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class EpochBatchSampler:
    """Batches of dataset indices for one epoch, shuffled by a generator seeded from (seed, epoch).

    ``set_epoch(epoch, skip=n)`` makes the next iteration yield the epoch's batches from batch ``n``
    on: the order is recomputed, so a resumed run sees exactly the batches it had not seen. With
    ``drop_last`` the final incomplete batch is dropped (batch-norm statistics of a 1-clip batch are
    poor), except when the dataset is smaller than one batch.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        self.size, self.batch_size = int(size), int(batch_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.drop_last = bool(drop_last) and self.size >= self.batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch (ignoring ``skip``)."""
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def batches(self) -> list[list[int]]:
        """All of the current epoch's batches."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, "shuffle"))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.num_batches)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.skip:])

    def __len__(self) -> int:
        return max(self.num_batches - self.skip, 0)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device`` (non-blocking from pinned memory)."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def index_store(store, keys: Sequence[str] | None = None, progress=None) -> None:
    """Bring the store's index up to date for ``keys`` (None: every video) before a run reads
    it, with a ``progress`` bar over the videos new to the index (:meth:`FlowStore.metas`: about
    4 ms each, 20 minutes for 300k videos just extracted). Under torchrun each rank opens its
    share (1/world) and then waits for the others; otherwise every rank would open every new
    video. Inside :meth:`FlowStore.index_held` the run's later reads then take the index's facts
    without opening or checking the files again."""
    from .. import distributed

    world = distributed.world_size()
    keys = store.keys() if keys is None else list(keys)
    store.metas(keys[distributed.rank()::world], progress)
    if world > 1:
        distributed.barrier()


def make_split(store, config: TrainConfig, note: Callable[[str], None] | None = None
               ) -> tuple[list[str], list[str], str]:
    """``(train_keys, val_keys, description)`` from ``split_list``/``val_list`` or ``val_fraction``.

    Unlabelled videos (label -1, e.g. a video at the root of a class-folder tree) are left out of
    both, and ``note`` gets one line saying how many and naming a few; so do listed videos the
    store lacks with ``skip_missing`` (the description counts them; without it they are an
    error). FlowkitError when no video is left to train on."""
    from ..data import labelled_keys, stratified_split, unlabelled_note, video_group
    from ..data.splits import as_store, listed_keys, missing_note

    def from_list(path: str) -> tuple[list[str], list[str]]:
        """(labelled keys of the list in the store, the unlabelled ones); the list's keys the
        store lacks go to ``absent`` with ``skip_missing``, else they raise."""
        keys, missing = listed_keys(store, path)
        if missing and not config.skip_missing:
            raise missing_listed_error(as_store(store), missing, f"split list {path}")
        absent.extend(missing)
        return labelled_keys(store, keys)

    absent: list[str] = []
    if config.split_list:
        train, left_out = from_list(config.split_list)
        val, left_val = from_list(config.val_list) if config.val_list else ([], [])
        left_out += left_val
        source = f"lists {config.split_list}" + (f" / {config.val_list}" if config.val_list else "")
        if absent:  # the count stays in config.json's split.source: the run trained on fewer
            source += f" less {len(absent)} listed video(s) not in the store (--skip-missing)"
    else:
        keys, left_out = labelled_keys(store, store.keys())
        if not keys:
            train, val, source = [], [], "all videos"
        elif config.val_fraction > 0:
            train, val = stratified_split(store, config.val_fraction, seed=config.seed, keys=keys)
            source = f"stratified val_fraction={config.val_fraction} seed={config.seed}"
            if any(video_group(key) != key for key in keys):
                source += " (whole UCF101 groups)"
        else:
            train, val, source = keys, [], "all videos, no validation"
    train, val = list(train), list(val)
    overlap = set(train) & set(val)
    if overlap:
        raise FlowkitError(f"{len(overlap)} videos are in both the training and validation split "
                           f"(e.g. {sorted(overlap)[0]}); check --split-list/--val-list")
    if not train and left_out:
        raise FlowkitError(f"no labelled training videos in store {config.store} ({source}): "
                           f"{len(left_out)} video(s) have no label (e.g. {left_out[0]!r}); "
                           "extract them from class folders (VIDEOS/<class>/<video>) or with "
                           "--split-list so that each gets its class")
    if not train:
        raise FlowkitError(f"no training videos in store {config.store} ({source})")
    if absent and note is not None:
        busy = as_store(store).in_flight(absent)
        note(missing_note(store, absent, "training and validation")
             + (f"; {in_flight_line(busy)}" if busy else ""))
    if left_out and note is not None:
        note(unlabelled_note(store, left_out, "training and validation"))
    return train, val, source


def in_flight_line(busy: dict[str, str], which: str = "of them") -> str:
    """That the videos ``busy`` ({key: who extracts it}, :meth:`FlowStore.in_flight`), ``which``
    of a list, are being extracted by other runs, naming the first and its process, and what to
    do: "2 of them are being extracted by other runs now ('up/up_3' by pid 7 on HOST (since
    ...) and 1 more): rerun when they are done"."""
    key, holder = next(iter(busy.items()))
    more = f" and {len(busy) - 1} more" if len(busy) > 1 else ""
    return (f"{len(busy)} {which} are being extracted by other runs now ({key!r} by "
            f"{holder}{more}): rerun when they are done")


def missing_listed_error(store, missing: Sequence[str], where: str) -> FlowkitError:
    """The error for the videos of ``where`` (a split list) that ``store`` lacks: those another
    run is extracting now (a live claim) are counted apart and named with their process, since
    they will be there when it is done (``--skip-missing`` would train without them); the others
    are missing (:func:`~flowkit.data.splits.missing_keys_error`)."""
    from ..data.splits import missing_keys_error

    found = store.in_flight(missing)
    busy = {key: found[key] for key in missing if key in found}  # in list order
    gone = [key for key in missing if key not in busy]
    if not gone and len(busy) == 1:
        key, holder = next(iter(busy.items()))
        return FlowkitError(f"video {key!r} of {where} is being extracted by {holder}; rerun "
                            "when it is done")
    if not gone:
        return FlowkitError(in_flight_line(busy, f"video(s) of {where}"))
    error = missing_keys_error(store, gone, where, skip_option="--skip-missing")
    if not busy:
        return error
    return FlowkitError(f"{error}; besides, {in_flight_line(busy, 'more video(s)')}")


def keys_digest(keys: Sequence[str]) -> str:
    """sha1 of the sorted keys, one per line: identifies a split in a few characters."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()


def train_sampler(config: TrainConfig):
    from ..data import RandomClipSampler, SegmentSampler

    if config.segments:
        return SegmentSampler(config.segments, frames=config.frames_per_clip, step=config.step,
                              random=True)
    return RandomClipSampler(config.frames_per_clip, step=config.step)


def test_sampler(config: TrainConfig, clips: int = 1):
    """Deterministic sampler of ``clips`` views for validation/evaluation, same clip length as
    training: evenly spaced clips, or TSN segments at ``clips`` evenly spaced offsets."""
    from ..data import SegmentClipsSampler, UniformClipSampler

    if config.segments:
        return SegmentClipsSampler(clips, config.segments, frames=config.frames_per_clip,
                                   step=config.step)
    return UniformClipSampler(clips, config.frames_per_clip, step=config.step)


def make_dataset(store, keys, config: TrainConfig, model, *, train: bool, clips: int = 1,
                 crops: int = 1, views: bool = False, classes=None):
    """A ClipDataset of ``keys`` with the inputs (and flow stack) ``model`` needs (``classes``:
    the run's, when the store may number them otherwise: :class:`~flowkit.data.ClipDataset`),
    its flow divided by the run's ``config.flow_bound`` (None, a run recorded before it: by the
    store's bound). Test views (``train=False``) of a run trained with ``config.flip`` off have no
    mirrored ones: ``crops=10`` makes 5 views (``dataset.crops``).

    Raises FlowkitError at once when the store lacks a modality the model needs.
    """
    from ..data import ClipDataset, test_transform, train_transform

    if train:
        sampler = train_sampler(config)
        transform = train_transform(config.size, scales=config.scales, flip=config.flip)
    else:
        sampler = test_sampler(config, clips)
        # A run trained without flips (a mirror changes its classes: left vs right) is not
        # tested on mirrored views either: ten-crop keeps its 5 unmirrored ones.
        transform = test_transform(config.size, crops=crops, flip=config.flip)
    kw = {"views": True} if views else {}
    return ClipDataset(store, keys, inputs=tuple(model.inputs), sampler=sampler,
                       transform=transform, flow_name=config.flow_name,
                       flow_stack=int(model.flow_stack), seed=config.seed, classes=classes,
                       flow_bound=config.flow_bound, **kw)


def store_flow_bound(store, keys, config: TrainConfig, model,
                     note: Callable[[str], None] | None = None) -> float | None:
    """The flow normalisation of a run that records none yet (pixels mapped to 1 at the model's
    input): the bound of the store's flow of ``keys`` (20 for float flow, a uint8 codec's own),
    what :class:`~flowkit.data.ClipDataset` divides by by default. None for a model without flow
    inputs. Videos of several bounds (a store extracted with several codecs) all take the largest,
    with a ``note``: one scale for the whole run. FlowkitError, as ``make_dataset``, when the store
    lacks a flow the model needs."""
    from ..data.datasets import read_video_info

    inputs = tuple(model.inputs)
    if not {"flow", "flow_backward"} & set(inputs):
        return None
    info = read_video_info(store, sorted(set(keys)), inputs, config.flow_name)
    bounds = sorted({v.flow_bound for v in info.values()})
    if len(bounds) > 1 and note is not None:
        note(f"the training videos' flow in store {config.store} has bounds "
             f"{', '.join(f'{b:g}' for b in bounds)} px (several flow codecs); the run divides all "
             f"of it by {bounds[-1]:g} (choose with --flow-bound)")
    return bounds[-1]


# Slurm (and a Ctrl-C, a `kill -- -PGID`) signal every process of the job, DataLoader workers too.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT, and SIGTERM unless its parent
    sends it. torch's own worker handler dies of any other SIGTERM, and the main process (whose
    handler stops after the current step and saves it) then fails on the lost worker. The parent's
    SIGTERM (the loader's shutdown, multiprocessing's exit) still ends the worker at once, as in
    torch; a thread takes it with ``sigwaitinfo``, the only way to learn the sender. Without
    ``sigwaitinfo`` (macOS, Windows) SIGTERM keeps torch's handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops one pending since the fork
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signals to a process group
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if hasattr(signal, "sigwaitinfo"):
        # Blocked (StopSafeLoader forked it so) in this thread and every thread it starts: the
        # one below takes it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_parents_sigterm, args=(os.getppid(),), daemon=True,
                         name="sigterm").start()
    else:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _exit_on_parents_sigterm(parent: int) -> None:
    """Wait for SIGTERMs (blocked in the whole worker); the parent's ends the worker, as torch's
    handler does, the others (its process group's) are dropped."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


class StopSafeLoader(torch.utils.data.DataLoader):
    """A DataLoader that starts its workers with SIGTERM and SIGINT blocked, so they have no
    moment (before :func:`ignore_stop_signals` runs) when a signal to the group kills them. A
    signal to the main process meanwhile waits until they are started."""

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return super()._get_iterator()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def make_loader(dataset, *, batch_sampler=None, batch_size: int = 1, workers: int = 0,
                device: torch.device, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader whose own seed comes from ``seed`` (so creating it never draws from the global
    RNG, which dropout uses), whose workers are not persistent (each epoch's workers copy the
    dataset after ``set_epoch``) and ignore SIGTERM and SIGINT sent to the process group (the main
    process decides: see :func:`ignore_stop_signals`). No seeding in the workers to keep: the
    datasets seed each item."""
    g = torch.Generator().manual_seed(seed)
    kw: dict[str, Any] = dict(num_workers=workers, pin_memory=device.type == "cuda", generator=g,
                              worker_init_fn=ignore_stop_signals if workers else None)
    if batch_sampler is not None:
        return StopSafeLoader(dataset, batch_sampler=batch_sampler, **kw)
    return StopSafeLoader(dataset, batch_size=batch_size, shuffle=False, **kw)
