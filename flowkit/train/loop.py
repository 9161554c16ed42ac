"""Train a registered classifier on a flowkit store: the :class:`Trainer`.

Run directory (``RUN_DIR``)::

    config.json            the full run description (see flowkit.train.config)
    metrics.jsonl          one JSON record per finished epoch
    checkpoints/last.pt    the latest state (every epoch end, every --checkpoint-every steps, on stop)
    checkpoints/best.pt    the state with the best validation top-1 (train accuracy without validation)
    .lock                  while a training runs: its host and pid (one training per folder)

Reproducibility and exact resume. Every random choice is a function of (seed, epoch, step): the
dataset's clip/crop sampling of (seed, epoch, index) via ``set_epoch``, the shuffle of a
``torch.Generator`` seeded from (seed, epoch), and the global torch/numpy/Python RNGs (dropout) are
reseeded from (seed, epoch, step, rank) before every optimiser step. A checkpoint written in the
middle of an epoch stores the running sums of the epoch, and a resumed run skips the batches already
seen (the shuffle is recomputed, not replayed), so on a deterministic device training N epochs
straight and stopping/resuming anywhere in between give identical weights and metrics. The rank in
the step seed gives each rank's part of a global batch its own dropout masks (with one seed for all,
the clips at the same position on every rank were dropped alike).

Under torchrun (a process group from :mod:`flowkit.distributed`) the model runs in
DistributedDataParallel and each rank takes its part of every global batch
(:mod:`flowkit.train.ddp`): the same clips, steps and schedule as one process with the same
``batch_size``. Epoch sums and stop requests are reduced over the ranks, validation is sharded and
gathered, and rank 0 alone writes the run directory and checkpoints.

Optimiser and learning-rate schedule: :mod:`flowkit.train.optim`; seeds, splits, datasets and
loaders: :mod:`flowkit.train.loading`. AMP (``torch.autocast`` float16 + GradScaler) is
used on CUDA only; gradients are unscaled before ``clip_grad_norm_``.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import shutil
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import distributed
from ..errors import FlowkitError, shell_word
from ..files import atomic_write_text
from ..progress import Progress
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, merge_for_resume, read_run_config
from .ddp import batch_sampler, check_batches, convert_sync_batchnorm, rank_device, wrap
from .inputs import EXTRACTION_KEY, flow_names, training_extraction
from .loading import (EpochBatchSampler, derive_seed, index_store, keys_digest, make_dataset,
                      make_loader, make_split, seed_everything, store_flow_bound, to_device)
from .optim import build_optimizer, build_scheduler
from .runlock import RunLock

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# What --overwrite deletes (only what a run writes; other files in RUN_DIR are left alone).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR, "eval")
# TrainConfig fields naming a path, which a new run records absolute (absolute_run_paths).
RUN_PATHS = ("store", "split_list", "val_list", "init")


def absolute_run_paths(config: TrainConfig) -> dict[str, str]:
    """``{field: absolute path}`` for the :data:`RUN_PATHS` of ``config`` that are set, resolved
    against the current folder: what a new run records, since evaluate and ``--resume`` read
    them again from whatever folder they run in."""
    return {name: str(Path(getattr(config, name)).resolve())
            for name in RUN_PATHS if getattr(config, name)}


# ----------------------------------------------------------------------------------------- results

@dataclass
class EpochRecord:
    """One line of metrics.jsonl. Accuracies are fractions; ``val_*`` are None without
    validation; ``val_loss`` is the cross-entropy of the fused ``logits`` (auxiliary and per-stream
    losses are training-only); ``lr`` is the learning rate of the epoch's last step;
    ``clips_per_s`` counts training clips over the training time (validation excluded);
    ``seconds`` is training plus validation time (a resumed epoch includes its time before the
    stop)."""
    epoch: int
    step: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_top1: float | None
    val_top5: float | None
    lr: float
    clips_per_s: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: the epoch records of the whole run (resumed ones included),
    whether it stopped early, and where (``start_epoch``: finished epochs when this call began)."""
    run_dir: Path
    history: list[dict]
    epochs_done: int
    global_step: int
    best_metric: float | None
    best_epoch: int | None
    interrupted: bool = False
    seconds: float = 0.0
    start_epoch: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "epochs_done": self.epochs_done,
                "global_step": self.global_step, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "interrupted": self.interrupted,
                "start_epoch": self.start_epoch,
                "seconds": self.seconds, "history": self.history, "notes": self.notes}


def epoch_line(r: EpochRecord, epochs: int) -> str:
    """One finished epoch as the line ``flowkit train`` prints."""
    top5 = f" top-5 {100 * r.val_top5:.1f}%" if r.val_top5 is not None else ""
    val = (f" | val loss {r.val_loss:.3f} top-1 {100 * r.val_top1:.1f}%{top5}"
           if r.val_top1 is not None else "")
    return (f"epoch {r.epoch}/{epochs}: loss {r.train_loss:.3f} acc {100 * r.train_acc:.1f}%{val} | "
            f"lr {r.lr:.3g} | {r.clips_per_s:.1f} clips/s | {r.seconds:.1f} s")


# ------------------------------------------------------------------------------ split warnings

WARNING = "warning: "  # how a note the user should act on starts (the CLI prints it as is)


def ignored_val_fraction(value: float) -> str:
    """The warning of a ``val_fraction`` given with ``split_list``, which ignores it (the user
    asked for a validation split the run does not make)."""
    return (f"{WARNING}--val-fraction {value:g} is ignored with --split-list (the lists make the "
            "split); validate with --val-list FILE")


def split_warnings(config: TrainConfig, store, train_keys: list[str], val_keys: list[str],
                   new_run: bool = True) -> list[str]:
    """The ``warning: ...`` lines of a run's split (``store``: a FlowStore or its path): a new
    run's ``val_fraction`` other than the default given with ``split_list`` (the CLI also warns of
    a typed default, which the config cannot tell from an untyped one), and a split that leaves
    no validation video (a tiny store's ``val_fraction``, ``split_list`` without ``val_list``):
    best.pt is then picked by training accuracy and `flowkit evaluate` has no held-out videos to
    score."""
    out = []
    default = {f.name: f.default for f in fields(TrainConfig)}["val_fraction"]
    if new_run and config.split_list and config.val_fraction != default:
        out.append(ignored_val_fraction(config.val_fraction))
    if val_keys:
        return out
    if config.split_list and config.val_list:  # each listed one missing or unlabelled (noted)
        out.append(f"{WARNING}no video of --val-list {config.val_list} is a labelled video of the "
                   "store (missing, or without a label: see the notes), so there is no "
                   "validation: best.pt is chosen by training accuracy")
    elif config.split_list:
        out.append(f"{WARNING}--split-list without --val-list gives no validation videos: best.pt "
                   "is chosen by training accuracy; pass --val-list FILE (e.g. testlist01.txt)")
    elif config.val_fraction:
        out.append(_small_split_warning(config.val_fraction, store, train_keys))
    return out


def _small_split_warning(val_fraction: float, store, train_keys: list[str]) -> str:
    """The warning of a ``val_fraction`` that gave no validation video, with the fix: the fraction
    that gives one video per class, or --val-list where no fraction can (a class of one video,
    or of a single UCF101 recording group, which a split keeps whole)."""
    from collections import defaultdict

    from ..data.splits import labels, video_group

    classes = defaultdict(list)
    for key, label in zip(train_keys, labels(store, train_keys)):
        classes[label].append(key)
    smallest = min(len(keys) for keys in classes.values())
    enough = math.ceil(100 / smallest) / 100 if smallest >= 2 else None
    whole = [keys[0] for keys in classes.values() if len({video_group(k) for k in keys}) < 2]
    if enough is None:
        fix = "each class needs at least 2 videos for a split; add videos or pass --val-list FILE"
    elif whole and enough <= val_fraction:
        fix = (f"{len(whole)} class(es) hold a single UCF101 recording group (e.g. "
               f"{video_group(whole[0])!r}), which a split keeps whole, so no --val-fraction "
               "validates them; pass --val-list FILE")
    else:
        fix = f"use --val-fraction {enough:.2f} (one video per class) or --val-list FILE"
    return (f"{WARNING}--val-fraction {val_fraction:g} of {len(train_keys)} videos ({smallest} in "
            "the smallest class) gives no validation videos: best.pt is chosen by training "
            f"accuracy and `flowkit evaluate` would score training videos; {fix}")


# ----------------------------------------------------------------------------------------- trainer

class Trainer:
    """Build everything a run needs (store, split, model, datasets) without writing anything but
    rank 0's hold of ``run_dir`` (:class:`RunLock`, until :meth:`fit` ends or :meth:`close`),
    then :meth:`fit`.

    ``Trainer(config, run_dir)`` starts a new run: FlowkitError if ``run_dir`` already holds one,
    unless ``overwrite`` (then the run's files are deleted when :meth:`fit` starts).
    ``Trainer.resume(run_dir, **changes)`` continues one from ``checkpoints/last.pt`` (or from the
    start when no checkpoint was written yet), with the config of ``config.json``. ``progress``
    gets a bar while the store's index takes in videos new to it (a store just extracted).
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, progress: Progress | None = None,
                 _saved: dict | None = None):
        self.run_dir = Path(run_dir)
        self.log = log or (lambda msg: None)
        self.notes: list[str] = []
        self.config = config.validate()
        self.resuming = _saved is not None
        self._saved_model = (_saved or {}).get("model") or {}  # how the run records its model
        self._saved_extraction = (_saved or {}).get(EXTRACTION_KEY)
        if not self.resuming:  # a new run's --model-arg: names and kinds, before any file
            from ..models.registry import absolute_file_kwargs, check_model_kwargs

            check_model_kwargs(config.model, config.model_kwargs)
            # Files the model reads whenever it is rebuilt (tvnet_weights=...), the store, the
            # split lists and --init are recorded absolute, so evaluate and --resume find them
            # from any folder (a relative store would be another folder's store of that name).
            # A copy: the caller's config (and, below, its flow_bound) stays as given.
            self.config = config = dataclasses.replace(config, model_kwargs=absolute_file_kwargs(
                config.model, config.model_kwargs), **absolute_run_paths(config))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        # Rank 0 holds RUN_DIR from this check to the run's end: two trainings checking it
        # before either wrote would both go on and mix their files.
        self._lock = self._hold_run_dir()
        try:
            if not self.resuming and self._holds_run() and not overwrite:
                raise FlowkitError(f"{self.run_dir} already holds a training run; pass --resume "
                                   "to continue it, --overwrite to replace it, or choose another "
                                   "--out")
            self._build(config, overwrite, progress, _saved)
        except BaseException:
            self.close()
            raise

    def _build(self, config: TrainConfig, overwrite: bool, progress: Progress | None,
               _saved: dict | None) -> None:
        """The store, split, model and datasets of the run (``__init__``'s), nothing written."""
        from ..store import FlowStore

        self.overwrite = overwrite and not self.resuming
        self.device = rank_device(config.device)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"

        if self.resuming and not Path(config.store).exists():  # not "create it": it was made
            raise FlowkitError(f"store {config.store} is not there (moved or renamed?); resume "
                               "with its path now: flowkit train NEW_STORE -o "
                               f"{shell_word(self.run_dir)} --resume")
        self.store = FlowStore(config.store)
        self.classes = self._classes(_saved)
        with self.store.index_held():  # the split and both datasets parse index.json once
            index_store(self.store, progress=progress)  # a bar over videos new to the index
            self.train_keys, self.val_keys, self.split_source = self._split(_saved)
            for warning in split_warnings(config, self.store, self.train_keys, self.val_keys,
                                          new_run=not self.resuming):
                self._note(warning)  # Python callers get them too, not only the CLI's user
            self.model = self._create_model()
            if config.flow_bound is None and not self.resuming:  # a new run: the store's
                # (a run recorded before flow_bound existed keeps each store's own bound, as
                # its earlier epochs and checkpoints did)
                config.flow_bound = store_flow_bound(self.store, self.train_keys, config,
                                                     self.model, note=self._note)
            # The datasets check the store holds what the model needs (flow / rgb) before any
            # writing; with the run's classes they label a store numbering them otherwise
            # by name.
            self.train_set = make_dataset(self.store, self.train_keys, config, self.model,
                                          train=True, classes=self.classes)
            self.val_set = (make_dataset(self.store, self.val_keys, config, self.model,
                                         train=False, classes=self.classes)
                            if self.val_keys else None)
        # before the CLI's header, which prints each rank's part of the batch
        check_batches(len(self.train_set), config.batch_size, self.world_size,
                      resuming=self.resuming)
        self.init_report = None
        if config.init and not self._has_checkpoint():
            self.init_report = initialise_from_file(self.model, config.init)
        if config.sync_bn and self.world_size > 1:
            self.model = convert_sync_batchnorm(self.model, self.device)
        self.model.to(self.device)
        # The DDP wrapper computes the training steps; self.model (its module) is what is saved,
        # validated and described.
        self.net = wrap(self.model, self.device)
        self.run_config = self._describe()

    def _classes(self, saved: dict | None) -> list[str]:
        """The class names the model's outputs stand for: the store's for a new run. A resumed
        run keeps its own (the model has one output per class, and STORE may change on resume):
        a store numbering them otherwise is matched by name (``make_dataset(classes=)``), one
        lacking any of them is refused and classes of the store the run does not know are left
        out with a note."""
        store_classes = list(self.store.classes)
        if saved is None or not saved.get("classes"):
            if not store_classes:
                from ..store.labelling import RELABEL_HINT

                raise FlowkitError(f"store {self.config.store} has no class names: its videos "
                                   "are unlabelled; extract it from a class-folder tree or with "
                                   f"--split-list, or {RELABEL_HINT}")
            return store_classes
        classes = list(saved["classes"])
        missing = [c for c in classes if c not in store_classes]
        if missing:
            raise FlowkitError(f"store {self.config.store} lacks {len(missing)} of the run's "
                               f"{len(classes)} classes (e.g. {missing[0]!r}); resume with a "
                               "store that holds all of them (the run's classes are in "
                               f"{self.run_dir / CONFIG_FILE})")
        unknown = [c for c in store_classes if c not in classes]
        if unknown:
            self._note(f"store {self.config.store} has {len(unknown)} class(es) the run was not "
                       f"trained on ({', '.join(map(repr, unknown[:5]))}"
                       f"{', ...' if len(unknown) > 5 else ''}); their videos are left out, the "
                       f"run keeps its {len(classes)} classes")
        return classes

    def _split(self, saved: dict | None) -> tuple[list[str], list[str], str]:
        """``(train_keys, val_keys, source)``: the saved run's split, or a new one."""
        from ..data import labelled_keys

        if saved is None:
            return make_split(self.store, self.config, note=self._note)
        split = saved["split"]
        train_keys, val_keys = list(split["train_keys"]), list(split["val_keys"])
        stored = set(self.store.keys())
        missing = [k for k in train_keys + val_keys if k not in stored]
        if missing:
            raise FlowkitError(f"{len(missing)} videos of the run's split are not in store "
                               f"{self.config.store} (e.g. {missing[0]}); resume with the store "
                               "the run was trained on")
        # Leaving one out would change the epochs' batches (and the run's split): refused.
        _, unlabelled = labelled_keys(self.store, train_keys + val_keys, classes=self.classes)
        if unlabelled:
            raise FlowkitError(f"{len(unlabelled)} videos of the run's split have no label among "
                               f"the run's {len(self.classes)} classes in store "
                               f"{self.config.store} (e.g. {unlabelled[0]}); resume with the "
                               "store the run was trained on")
        return train_keys, val_keys, split.get("source", "")

    def _create_model(self) -> nn.Module:
        """The config's model, seeded; its keywords (the clip length where the model takes one)
        are kept in ``self.model_kwargs`` for the run's description. FlowkitError, before anything
        is written, when the model cannot take the run's clips (a ``frames`` keyword other than
        the clip length, or clips shorter than the model's ``min_frames``): the first batch
        would fail after the run directory exists."""
        from ..models import create_model, model_parameters, rebuild_run_model

        config = self.config
        self.model_kwargs = {"num_classes": len(self.classes), **config.model_kwargs}
        accepted = model_parameters(config.model)
        for name in ("frames", "in_frames"):  # models that must know T get the clip length
            if name in accepted:
                given = self.model_kwargs.setdefault(name, config.clip_length)
                if given != config.clip_length:
                    raise FlowkitError(self._frames_mismatch(name, given))
        torch.manual_seed(derive_seed(config.seed, "init"))
        # a new run's keywords are checked (and typed) afresh; a resumed one keeps those it was
        # made with, and its files must still be where they were recorded unless its checkpoint
        # replaces what they hold
        if self.resuming:
            model = rebuild_run_model(self._recorded_model(), restoring=self._has_checkpoint())
        else:
            model = create_model(config.model, **self.model_kwargs)
        if hasattr(model, "check_clip_length"):
            model.check_clip_length(config.clip_length)
        return model

    def _recorded_model(self) -> dict[str, Any]:
        """How the resumed run recorded its model (config.json's ``model``: ``settings``,
        ``kwargs_without_files``), with this run's name and keywords."""
        return {**self._saved_model, "name": self.config.model, "kwargs": self.model_kwargs}

    def _frames_mismatch(self, name: str, given: Any) -> str:
        """The error for a model keyword ``name`` (``frames``) that is not the clip length."""
        config, length = self.config, self.config.clip_length
        clips = (f"--segments {config.segments} x --frames {config.frames_per_clip}"
                 if config.segments else f"--frames {config.frames_per_clip}")
        if not config.segments:
            other = f"--frames {given}"
        elif isinstance(given, int) and given % config.segments == 0:
            other = f"--frames {given // config.segments}"
        else:
            other = f"--segments and --frames that make clips of {given} frames"
        fix = (f"leave `--model-arg {name}={given}` out (it follows the clip length) or pass "
               f"{other}")
        if self.resuming:  # written by a flowkit that did not check: the run cannot train
            fix = f"start the run again with --overwrite and {fix}"
        return (f"model {self.config.model!r}: {name}={given} (--model-arg) does not match the "
                f"run's clips of {length} frames ({clips}); {fix}")

    @classmethod
    def resume(cls, run_dir: str | Path, *, log: Callable[[str], None] | None = None,
               progress: Progress | None = None, **changes) -> "Trainer":
        """Continue the run in ``run_dir``; ``changes`` are options to change (only those in
        :data:`~flowkit.train.config.RESUMABLE_CHANGES`, e.g. ``epochs``, may differ)."""
        saved = read_run_config(run_dir)
        # A path given here (a moved store) is recorded absolute, as a new run's (RUN_PATHS).
        changes = {k: str(Path(v).resolve()) if k in RUN_PATHS and v else v
                   for k, v in changes.items()}
        config = merge_for_resume(TrainConfig.from_dict(saved["config"]), changes)
        return cls(config, run_dir, log=log, progress=progress, _saved=saved)

    # -- paths and run description

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def _holds_run(self) -> bool:
        return any((self.run_dir / name).exists() for name in RUN_FILES)

    def _hold_run_dir(self) -> "RunLock | None":
        """Rank 0's hold of RUN_DIR (:class:`RunLock`; the other ranks hold nothing). Its
        refusal is every rank's: the others would otherwise wait for rank 0 at the first
        barrier until torchrun ended them."""
        lock, refusal = None, None
        if self.is_main:
            try:
                lock = RunLock(self.run_dir)
            except FlowkitError as exc:
                refusal = str(exc)
        refusal = distributed.gather(refusal)[0]
        if refusal is not None:
            raise FlowkitError(refusal)
        return lock

    def close(self) -> None:
        """Let other trainings into RUN_DIR: rank 0's hold of it ends (fit's end does this; so
        does collecting the Trainer). A later fit takes it again."""
        if self._lock is not None:
            self._lock.release()

    def _has_checkpoint(self) -> bool:
        return self.resuming and (self.checkpoint_dir / LAST).is_file()

    def _describe(self) -> dict[str, Any]:
        from ..version import __version__

        return {
            "flowkit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config.to_dict(),
            "model": self._model_description(),
            "inputs": list(self.model.inputs), "flow_stack": int(self.model.flow_stack),
            "clip_length": self.config.clip_length,
            "classes": self.classes,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "world_size": self.world_size,  # the current one; the history: _restore
            "world_sizes": [{"from_step": 0, "world_size": self.world_size}],
            EXTRACTION_KEY: self._extraction(),
            "split": {"source": self.split_source,
                      "train_count": len(self.train_keys), "val_count": len(self.val_keys),
                      "train_sha1": keys_digest(self.train_keys),
                      "val_sha1": keys_digest(self.val_keys),
                      "train_keys": self.train_keys, "val_keys": self.val_keys},
        }

    def _extraction(self) -> dict[str, Any] | None:
        """What the training videos were extracted with (:mod:`flowkit.train.inputs`), so
        ``flowkit evaluate`` can say when other flow is scored. A resumed run keeps its record
        (None for a run recorded before it: no record is made up from today's store)."""
        if self.resuming:
            return self._saved_extraction
        return training_extraction(self.store, self.train_keys,
                                   flow_names(self.model.inputs, self.config.flow_name))

    def _model_description(self) -> dict[str, Any]:
        """Name and keywords (what rebuilds the model), plus the model's resolved ``settings``
        (``VideoClassifier.describe()``: defaults included, e.g. a loss weight) when it has any."""
        out = {"name": self.config.model, "kwargs": self.model_kwargs}
        if any(self.model_kwargs.get(key) for key in getattr(self.model, "file_kwargs", ())):
            without = self.model.kwargs_without_files()  # evaluate and --resume need no file
            if without is not None:
                out["kwargs_without_files"] = without
        settings = self.model.describe() if hasattr(self.model, "describe") else {}
        if settings:
            out["settings"] = settings
        return out

    def _note(self, msg: str) -> None:
        """A line for the user: kept in ``notes`` (:class:`TrainResult`'s) and passed to ``log``;
        one starting with :data:`WARNING` asks them to act (the CLI prints it as a warning)."""
        self.notes.append(msg)
        self.log(msg)

    # -- run directory

    def _read_checkpoint(self) -> dict | None:
        """The checkpoint to resume from (every rank reads it), None for a fresh start."""
        return load_checkpoint(self.checkpoint_dir / LAST) if self._has_checkpoint() else None

    def _check_length(self, state: "RunState") -> bool:
        """Whether epochs remain to train; FlowkitError when ``epochs`` is below what the run has
        already trained (checked before anything is written, so config.json keeps the length the
        run was trained for)."""
        epochs = self.config.epochs
        if state.epoch > epochs or (state.epoch == epochs and state.step_in_epoch):
            done = (f"{state.epoch} epochs" if not state.step_in_epoch else
                    f"{state.epoch} epochs and {state.step_in_epoch} steps of epoch "
                    f"{state.epoch + 1}")
            least = state.epoch + (1 if state.step_in_epoch else 0)
            raise FlowkitError(f"--epochs {epochs} is fewer than the {done} that {self.run_dir} "
                               f"has already trained; pass --epochs {least} or more with --resume")
        return state.epoch < epochs

    def _write_run_files(self, ckpt: dict | None) -> None:
        """Create (or, when resuming, update) the run directory: config.json, and metrics.jsonl
        from ``ckpt``'s history. Only rank 0 writes."""
        if not self.is_main:
            return
        if self.overwrite:
            for name in RUN_FILES:
                path = self.run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            saved_created = ckpt["config"].get("created")
            if saved_created:
                self.run_config["created"] = saved_created
        atomic_write_text(self.run_dir / CONFIG_FILE, json.dumps(self.run_config, indent=2) + "\n")
        self._write_metrics(ckpt["history"] if ckpt is not None else [])

    def _write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl mirrors the checkpoint's history: epochs a crash left after the
        checkpoint are dropped (they are recomputed identically), none is duplicated, and one a
        crash kept from being appended is restored. Only rank 0 writes."""
        if self.is_main:
            atomic_write_text(self.run_dir / METRICS_FILE,
                              "".join(json.dumps(r) + "\n" for r in history))

    # -- training

    def fit(self, progress: Progress | None = None,
            stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train up to ``config.epochs``; returns a :class:`TrainResult`.

        ``progress`` (:mod:`flowkit.progress`) gets a task per epoch (one step per optimiser step,
        with loss, accuracy and clips/s), one for each validation, and a line per finished epoch.
        ``stop()`` (a :class:`~flowkit.progress.StopFlag`) is polled after every optimiser step:
        when true, the state after that step is saved to ``last.pt`` and ``fit`` returns with
        ``interrupted=True`` (the CLI wires Ctrl-C to it). Resuming then continues at the next step
        exactly.

        Under torchrun the model is trained through a DistributedDataParallel wrapper, released
        when ``fit`` returns or raises: its reducer keeps the process group alive, and a group
        that outlives :func:`flowkit.distributed.shutdown` ends with the interpreter, where gloo's
        threads abort the process (SIGABRT, "terminate called without an active exception"), so
        a finished run exited with a failure (measured: 1 run in 10, torch 2.13, 2 gloo ranks).
        """
        if self.net is self.model:  # released by an earlier fit: wrapped again (no-op alone)
            self.net = wrap(self.model, self.device)
        if self._lock is not None and not self._lock.held:  # released by an earlier fit
            self._lock = RunLock(self.run_dir)
        try:
            return self._fit(progress, stop)
        finally:
            self.close()
            if self.net is not self.model:
                self.net = self.model
                gc.collect()  # the wrapper's hooks make cycles: free it, and the group, now

    def _fit(self, progress: Progress | None, stop: Callable[[], bool] | None) -> TrainResult:
        progress = progress or Progress()
        should_stop = stop or (lambda: False)
        started = time.perf_counter()
        batches = batch_sampler(len(self.train_set), self.config.batch_size, self.config.seed)
        opt = _Optimisation.build(self.model, self.config, batches.num_batches, self.use_amp)
        ckpt = self._read_checkpoint()
        # Every check before anything is written: the checkpoint's shapes and steps per epoch,
        # then the (maybe changed) epochs against the run's progress. A run with nothing left to
        # train keeps its config.json (it must keep the length the run was trained for).
        state = self._restore(ckpt, opt)
        start_epoch, interrupted = state.epoch, False
        if not self._check_length(state):
            self._write_metrics(state.history)
            return TrainResult(self.run_dir, state.history, state.epoch, state.global_step,
                               state.best_metric, state.best_epoch, notes=list(self.notes),
                               seconds=time.perf_counter() - started, start_epoch=start_epoch)
        distributed.barrier()  # every rank has checked the run directory before rank 0 writes
        self._write_run_files(ckpt)
        for epoch in range(state.epoch, self.config.epochs):
            interrupted, sums = self._train_epoch(epoch, state, opt, batches, progress,
                                                  should_stop)
            if interrupted:
                break
            record, is_best = self._finish_epoch(epoch, state, sums, progress)
            # best.pt before last.pt: last.pt records this epoch as the best, so a kill between
            # the two must leave last.pt at the previous epoch, which --resume then redoes
            # (identically, best.pt included).
            if is_best:
                self._save(BEST, state, opt)
            self._save(LAST, state, opt)
            if self.is_main:
                with open(self.run_dir / METRICS_FILE, "a") as f:
                    f.write(json.dumps(record.to_dict()) + "\n")
            progress.log(epoch_line(record, self.config.epochs) + (" best" if is_best else ""))
            if _stop_on_every_rank(should_stop):
                interrupted = epoch + 1 < self.config.epochs
                break
        return TrainResult(self.run_dir, state.history, state.epoch, state.global_step,
                           state.best_metric, state.best_epoch, interrupted=interrupted,
                           seconds=time.perf_counter() - started, notes=list(self.notes),
                           start_epoch=start_epoch)

    def _restore(self, ckpt: dict | None, opt: "_Optimisation") -> "RunState":
        """The run's state: fresh, or the checkpoint's (model and optimisation loaded from it)."""
        if ckpt is None:
            return RunState()
        from ..models import load_run_weights

        load_run_weights(self.model, self._recorded_model(), ckpt["model"],
                         str(self.checkpoint_dir / LAST))
        opt.load(ckpt, self.use_amp)
        state = RunState.from_checkpoint(ckpt)
        where = (f"step {state.step_in_epoch} of epoch {state.epoch + 1}" if state.step_in_epoch
                 else f"epoch {state.epoch}")
        self._note(f"resuming {self.run_dir} after {where} (global step {state.global_step})")
        self._record_world_size(ckpt["config"], state.global_step)
        return state

    def _record_world_size(self, saved: dict, step: int) -> None:
        """Keep the run's rank counts in config.json's ``world_sizes`` (``from_step``: the global
        step each began at), adding this one, with a note, when it differs from the saved one:
        the clips and steps are the same, but without --sync-bn batch norm normalises over
        each rank's part of the batch, which a new rank count changes."""
        old = int(saved.get("world_size", 1))
        history = list(saved.get("world_sizes") or [{"from_step": 0, "world_size": old}])
        if old != self.world_size:
            history.append({"from_step": step, "world_size": self.world_size})
            batch = self.config.batch_size
            bn = ("; --sync-bn keeps batch-norm statistics over the whole batch"
                  if self.config.sync_bn else
                  f"; batch-norm statistics are per rank: over {batch // old} clips before, "
                  f"{batch // self.world_size} now (--sync-bn shares them)")
            self._note(f"the run trained on {old} rank(s) until step {step} and continues on "
                       f"{self.world_size}: the same batches of {batch} clips{bn}")
        self.run_config["world_sizes"] = history

    def _train_epoch(self, epoch: int, state: "RunState", opt: "_Optimisation",
                     batches: EpochBatchSampler, progress: Progress,
                     should_stop: Callable[[], bool]) -> tuple[bool, dict]:
        """The optimiser steps of ``epoch`` (from ``state.step_in_epoch`` when resuming it, with the
        running sums of the checkpoint). Returns ``(interrupted, sums)``: whether a
        stop ended it early (its state is then saved) and the epoch's running sums."""
        cfg, skip = self.config, state.step_in_epoch
        sums = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if skip and state.partial:
            # The saved sums are over all ranks: rank 0 carries them, the others start at zero.
            sums = dict(state.partial) if self.is_main else {**sums, **{
                k: v for k, v in state.partial.items() if k in ("seconds", "lr")}}
        self.train_set.set_epoch(epoch)
        batches.set_epoch(epoch, skip=skip)
        loader = make_loader(self.train_set, batch_sampler=batches, workers=cfg.workers,
                             device=self.device, seed=derive_seed(cfg.seed, epoch, "loader"))
        bar = progress.start(f"epoch {epoch + 1}/{cfg.epochs}", total=opt.steps_per_epoch,
                             completed=skip)
        self.model.train()
        step_in_epoch, interrupted = skip, False
        train_started = time.perf_counter() - sums["seconds"]
        iterator = iter(loader)
        while step_in_epoch < opt.steps_per_epoch:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            except Exception:
                if should_stop():  # a Ctrl-C also reached the loader's workers
                    interrupted = True
                    break
                raise
            seed_everything(derive_seed(cfg.seed, epoch, step_in_epoch, "global", self.rank))
            loss, correct, n, lr = self._train_step(batch, opt)
            last = batch
            step_in_epoch += 1
            state.global_step += 1
            sums.update(loss_sum=sums["loss_sum"] + loss * n, correct=sums["correct"] + correct,
                        seen=sums["seen"] + n, seconds=time.perf_counter() - train_started, lr=lr)
            bar.advance(1, loss=loss, acc=sums["correct"] / sums["seen"],
                        clips_per_s=sums["seen"] / max(sums["seconds"], 1e-9))
            if step_in_epoch == opt.steps_per_epoch:
                break
            if _stop_on_every_rank(should_stop):
                interrupted = True
                break
            if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                self._save_mid_epoch(state, epoch, step_in_epoch, sums, opt)
        del iterator
        bar.close()
        if interrupted and step_in_epoch > skip:
            self._save_mid_epoch(state, epoch, step_in_epoch, sums, opt)
        if not interrupted and step_in_epoch > skip and self.val_set is None:
            self._check_last_update(last, epoch)
        return interrupted, sums

    def _check_last_update(self, batch, epoch: int) -> None:
        """Without validation nothing looks at the model after the epoch's last update (each
        step's loss is computed before its own update): the scores of its last batch, in eval
        mode (no batch-norm statistics change), must be finite before the epoch is saved, or it
        would become best.pt and last.pt with weights that give NaN. Every rank agrees."""
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(to_device(batch, self.device))["logits"]
        finally:
            self.model.train(was)
        if distributed.any_rank(not bool(torch.isfinite(logits).all())):
            raise FlowkitError(f"epoch {epoch + 1}: the model's scores after its last step are "
                               f"not finite: {self._diverged()}")

    def _train_step(self, batch, opt: "_Optimisation") -> tuple[float, int, int, float]:
        """One optimiser step; returns (loss, correct top-1 count, clips, learning rate used)."""
        from ..models import classification_loss

        optimizer, scheduler, scaler = opt.optimizer, opt.scheduler, opt.scaler
        batch = to_device(batch, self.device)
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            output = self.net(batch)
            loss = classification_loss(output, labels)
        if not torch.isfinite(loss):
            step = scheduler.last_epoch  # global steps done before this one
            raise FlowkitError(f"epoch {step // opt.steps_per_epoch + 1}: the training loss is "
                               f"{float(loss.detach())} at step {step + 1}: {self._diverged()}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.config.clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        lr = float(optimizer.param_groups[0]["lr"])
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        correct = int((output["logits"].detach().argmax(1) == labels).sum())
        return float(loss.detach()), correct, int(labels.shape[0]), lr

    def _global_sums(self, sums: dict) -> dict:
        """The epoch's running sums over all ranks (``seconds`` and ``lr`` are this rank's)."""
        if self.world_size == 1:
            return sums
        loss_sum, correct, seen = distributed.sum_values(
            [sums["loss_sum"], sums["correct"], sums["seen"]])
        return {**sums, "loss_sum": loss_sum, "correct": int(round(correct)),
                "seen": int(round(seen))}

    def _finish_epoch(self, epoch: int, state: "RunState", sums: dict, progress: Progress):
        sums = self._global_sums(sums)
        seen = max(sums["seen"], 1)
        val_started = time.perf_counter()
        val = self.validate(progress) if self.val_set is not None else None
        record = EpochRecord(
            epoch=epoch + 1, step=state.global_step,
            train_loss=sums["loss_sum"] / seen, train_acc=sums["correct"] / seen,
            val_loss=val["loss"] if val else None, val_top1=val["top1"] if val else None,
            val_top5=val["top5"] if val else None, lr=float(sums.get("lr", 0.0)),
            clips_per_s=sums["seen"] / max(sums["seconds"], 1e-9),
            seconds=sums["seconds"] + time.perf_counter() - val_started)
        self._check_finite(record)
        metric = record.val_top1 if val else record.train_acc
        is_best = state.best_metric is None or metric > state.best_metric
        if is_best:
            state.best_metric, state.best_epoch = float(metric), epoch + 1
        state.epoch, state.step_in_epoch, state.partial = epoch + 1, 0, None
        state.history = state.history + [record.to_dict()]
        return record, is_best

    def _check_finite(self, record: EpochRecord) -> None:
        """FlowkitError when the epoch's training or validation loss is not finite: its weights
        hold NaN/inf (a step's update diverged), so its validation scores say nothing and it must
        become neither best.pt nor last.pt, which keep the last finite epoch's state."""
        losses = {"training": record.train_loss, "validation": record.val_loss}
        bad = {name: loss for name, loss in losses.items()
               if loss is not None and not math.isfinite(loss)}
        if bad:
            name, loss = next(iter(bad.items()))
            raise FlowkitError(f"epoch {record.epoch}: the {name} loss is {loss}: "
                               f"{self._diverged()}")

    def _diverged(self) -> str:
        """The end of a diverged run's error: what to change, and what was kept. With AMP the
        forward pass runs in float16, whose largest value is 65504: scores beyond it are inf."""
        amp = "; float16 (--amp) overflows at 65504: try --no-amp" if self.use_amp else ""
        return (f"the loss diverged; lower --lr or set --clip-grad{amp} "
                f"({_kept(self.checkpoint_dir / LAST)})")

    def validate(self, progress: Progress | None = None) -> dict[str, float]:
        """Loss, top-1 and top-5 of the current model on the validation set (one centre clip and
        crop per video).

        Under torchrun every rank must call it (the items are shared out and gathered). Every rank
        first takes rank 0's buffers: without ``--sync-bn`` each rank's batch-norm statistics
        follow its own clips, and the model validated must be the one rank 0 saves."""
        from .evaluate import predict_sharded
        from .metrics import topk_accuracy

        distributed.broadcast_buffers(self.model)

        def loader(dataset):
            return make_loader(dataset, batch_size=self.config.batch_size,
                               workers=self.config.workers, device=self.device,
                               seed=derive_seed(self.config.seed, "val"))

        scores, labels, _ = predict_sharded(self.model, self.val_set, loader, self.device,
                                            amp=self.use_amp, progress=progress,
                                            name="validation")
        acc = topk_accuracy(scores, labels, (1, 5))
        true_prob = scores[torch.arange(len(labels)), labels].clamp_min(1e-12)
        # top-5 says something only with more than 5 classes (else it is 100% by definition)
        top5 = acc[5] if scores.shape[1] > 5 else None
        return {"loss": float(-true_prob.log().mean()), "top1": acc[1], "top5": top5}

    # -- checkpoints

    def _save(self, name: str, state: "RunState", opt: "_Optimisation") -> None:
        if not self.is_main:
            return
        save_checkpoint(self.checkpoint_dir / name,
                        {"config": self.run_config, "model": self.model.state_dict(),
                         **opt.state_dicts(), **state.to_dict()})

    def _save_mid_epoch(self, state: "RunState", epoch: int, step_in_epoch: int, sums: dict,
                        opt: "_Optimisation") -> None:
        state.epoch, state.step_in_epoch = epoch, step_in_epoch
        state.partial = dict(self._global_sums(sums))
        self._save(LAST, state, opt)


def _kept(last: Path) -> str:
    """What a diverged run keeps: ``last`` as saved before the loss was seen diverging (a
    diverged epoch is never saved at its end, nor as best.pt), or nothing."""
    kept = f"{last} holds the last state saved before it" if last.is_file() else "nothing was saved"
    return f"{kept}; start again with --overwrite"  # --resume cannot change --lr


def _stop_on_every_rank(should_stop: Callable[[], bool]) -> bool:
    """Whether any rank was asked to stop (all of them then stop at this step). A
    :class:`~flowkit.progress.StopFlag` takes the strongest reason over the ranks, so a SIGTERM
    that reached one rank makes every rank exit as terminated (143), not the others as Ctrl-C."""
    stopping = bool(should_stop())
    if not hasattr(should_stop, "set"):  # a plain callable: nothing to share but the request
        return distributed.any_rank(stopping)
    local = (should_stop.reason or "interrupted") if stopping else ""
    agreed = distributed.strongest_reason(local)
    if agreed and (not stopping or agreed == "terminated"):  # another rank's, or a stronger one
        should_stop.set(agreed)
    return bool(agreed)


@dataclass
class RunState:
    """Where a run is: what a checkpoint stores besides the model and the optimisation.

    ``epoch`` finished epochs; ``step_in_epoch`` optimiser steps already done in epoch
    ``epoch + 1`` (0 at an epoch end); ``partial`` the running sums of that unfinished epoch
    (``loss_sum``, ``correct``, ``seen``, ``seconds``, ``lr``); ``best_metric`` / ``best_epoch`` the
    best validation top-1 (train accuracy without validation); ``history`` the metrics.jsonl records.
    """
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    partial: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "RunState":
        names = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in ckpt.items() if k in names})
        state.epoch, state.step_in_epoch = int(state.epoch), int(state.step_in_epoch)
        state.global_step, state.history = int(state.global_step), list(state.history)
        return state


@dataclass
class _Optimisation:
    """Optimiser, LR schedule and AMP scaler of a run, and the epoch length they assume."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    steps_per_epoch: int

    @classmethod
    def build(cls, model: nn.Module, config: TrainConfig, steps_per_epoch: int,
              use_amp: bool) -> "_Optimisation":
        optimizer = build_optimizer(model, config)
        return cls(optimizer, build_scheduler(optimizer, config, steps_per_epoch),
                   torch.amp.GradScaler("cuda", enabled=use_amp), steps_per_epoch)

    def load(self, ckpt: dict[str, Any], use_amp: bool) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # The saved groups hold the lr the saved schedule set for the next step; the factor is a
        # function of this run's config (another --epochs: another length), so the next step's
        # lr is recomputed from it, as scheduler.step() computes it (the same value when the
        # schedule is unchanged: exact resume).
        sched = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, sched.base_lrs,
                                       sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if use_amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        saved = int(ckpt.get("steps_per_epoch", self.steps_per_epoch))
        if saved != self.steps_per_epoch:
            raise FlowkitError(f"cannot resume: the run had {saved} steps per epoch, now "
                               f"{self.steps_per_epoch} (another batch size or split?)")

    def state_dicts(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "steps_per_epoch": self.steps_per_epoch}


def initialise_from_file(model: nn.Module, path: str) -> dict:
    """Load torchvision-format ResNet weights into ``model`` (inflation to 3D, cross-modality first
    conv; see :func:`flowkit.models.init.init_from_file`); returns its report."""
    from ..models.init import init_from_file
    return init_from_file(model, path)
