"""Train a registered classifier on a flowkit store: the :class:`Trainer`.

Run directory (``RUN_DIR``)::

    config.json            the full run description (see flowkit.train.config)
    metrics.jsonl          one JSON record per finished epoch
    checkpoints/last.pt    the latest state (every epoch end, every --checkpoint-every steps, on stop)
    checkpoints/best.pt    the state with the best validation top-1 (train accuracy without validation)

Reproducibility and exact resume. Every random choice is a function of (seed, epoch, step): the
dataset's clip/crop sampling of (seed, epoch, index) via ``set_epoch``, the shuffle of a
``torch.Generator`` seeded from (seed, epoch), and the global torch/numpy/Python RNGs (dropout) are
reseeded from (seed, epoch) at each epoch start. A checkpoint written in the middle of an epoch stores
the RNG states and the running sums of the epoch, and a resumed run skips the batches already seen
(the shuffle is recomputed, not replayed), so on a deterministic device training N epochs straight
and stopping/resuming anywhere in between give identical weights and metrics.

Optimiser and learning-rate schedule: :mod:`flowkit.train.optim`; seeds, splits, datasets and
loaders: :mod:`flowkit.train.loading`. AMP (``torch.autocast`` float16 + GradScaler) is
used on CUDA only; gradients are unscaled before ``clip_grad_norm_``.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import FlowkitError
from .checkpoint import (atomic_write_text, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .config import TrainConfig, merge_for_resume, read_run_config
from .loading import (EpochBatchSampler, derive_seed, keys_digest, make_dataset, make_loader,
                      make_split, resolve_device, seed_everything, to_device)
from .optim import build_optimizer, build_scheduler

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# What --overwrite deletes (only what a run writes; other files in RUN_DIR are left alone).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR, "eval")


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


class TrainCallbacks:
    """Hooks for progress display; every method is optional (these defaults do nothing)."""

    def on_start(self, trainer: "Trainer", start_epoch: int, skip_steps: int) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int, skip_steps: int) -> None: ...

    def on_step(self, epoch: int, step_in_epoch: int, loss: float, acc: float, clips_per_s: float,
                lr: float) -> None: ...

    def on_validate(self, done: int, total: int) -> None: ...

    def on_epoch(self, record: EpochRecord, is_best: bool) -> None: ...


# ----------------------------------------------------------------------------------------- trainer

class Trainer:
    """Build everything a run needs (store, split, model, datasets) without writing anything, then
    :meth:`fit`.

    ``Trainer(config, run_dir)`` starts a new run: FlowkitError if ``run_dir`` already holds one,
    unless ``overwrite`` (then the run's files are deleted when :meth:`fit` starts).
    ``Trainer.resume(run_dir, **changes)`` continues one from ``checkpoints/last.pt`` (or from the
    start when no checkpoint was written yet), with the config of ``config.json``.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, _saved: dict | None = None):
        from ..models import create_model, model_parameters
        from ..store import FlowStore

        self.run_dir = Path(run_dir)
        self.log = log or (lambda msg: None)
        self.notes: list[str] = []
        self.config = config.validate()
        self.resuming = _saved is not None
        if not self.resuming and self._holds_run() and not overwrite:
            raise FlowkitError(f"{self.run_dir} already holds a training run; pass --resume to "
                               "continue it, --overwrite to replace it, or choose another --out")
        self.overwrite = overwrite and not self.resuming
        self.device = resolve_device(config.device)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"

        self.store = FlowStore(config.store)
        self.classes = self.store.classes
        if not self.classes:
            raise FlowkitError(f"store {config.store} has no class names; extract it from a "
                               "class-folder tree or with --split-list")
        if _saved is not None:
            split = _saved["split"]
            self.train_keys, self.val_keys = list(split["train_keys"]), list(split["val_keys"])
            self.split_source = split.get("source", "")
            missing = [k for k in self.train_keys + self.val_keys if k not in self.store]
            if missing:
                raise FlowkitError(f"{len(missing)} videos of the run's split are not in store "
                                   f"{config.store} (e.g. {missing[0]}); resume with the store "
                                   "the run was trained on")
        else:
            self.train_keys, self.val_keys, self.split_source = make_split(self.store, config)

        self.model_kwargs = {"num_classes": len(self.classes), **config.model_kwargs}
        accepted = model_parameters(config.model)
        for name in ("frames", "in_frames"):  # models that must know T get the clip length
            if name in accepted and name not in self.model_kwargs:
                self.model_kwargs[name] = config.clip_length
        torch.manual_seed(derive_seed(config.seed, "init"))
        self.model = create_model(config.model, **self.model_kwargs)
        # The datasets check the store holds what the model needs (flow / rgb) before any writing.
        self.train_set = make_dataset(self.store, self.train_keys, config, self.model, train=True)
        self.val_set = (make_dataset(self.store, self.val_keys, config, self.model, train=False)
                        if self.val_keys else None)
        self.init_report = None
        if config.init and not self._has_checkpoint():
            self.init_report = initialise_from_file(self.model, config.init)
        self.model.to(self.device)
        self.run_config = self._describe()

    @classmethod
    def resume(cls, run_dir: str | Path, *, log: Callable[[str], None] | None = None,
               **changes) -> "Trainer":
        """Continue the run in ``run_dir``; ``changes`` are options to change (only those in
        :data:`~flowkit.train.config.RESUMABLE_CHANGES`, e.g. ``epochs``, may differ)."""
        saved = read_run_config(run_dir)
        config = merge_for_resume(TrainConfig.from_dict(saved["config"]), changes)
        return cls(config, run_dir, log=log, _saved=saved)

    # -- paths and run description

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def _holds_run(self) -> bool:
        return any((self.run_dir / name).exists() for name in RUN_FILES)

    def _has_checkpoint(self) -> bool:
        return self.resuming and (self.checkpoint_dir / LAST).is_file()

    def _describe(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "flowkit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config.to_dict(),
            "model": {"name": self.config.model, "kwargs": self.model_kwargs},
            "inputs": list(self.model.inputs), "flow_stack": int(self.model.flow_stack),
            "clip_length": self.config.clip_length,
            "classes": self.classes,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "split": {"source": self.split_source,
                      "train_count": len(self.train_keys), "val_count": len(self.val_keys),
                      "train_sha1": keys_digest(self.train_keys),
                      "val_sha1": keys_digest(self.val_keys),
                      "train_keys": self.train_keys, "val_keys": self.val_keys},
        }

    def _note(self, msg: str) -> None:
        self.notes.append(msg)
        self.log(msg)

    # -- run directory

    def _prepare_run_dir(self) -> dict | None:
        """Create (or, when resuming, read) the run directory; returns the checkpoint to resume."""
        if self.overwrite:
            for name in RUN_FILES:
                path = self.run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt = load_checkpoint(self.checkpoint_dir / LAST) if self._has_checkpoint() else None
        if ckpt is not None:
            saved_created = ckpt["config"].get("created")
            if saved_created:
                self.run_config["created"] = saved_created
        atomic_write_text(self.run_dir / CONFIG_FILE, json.dumps(self.run_config, indent=2) + "\n")
        history = ckpt["history"] if ckpt is not None else []
        # metrics.jsonl mirrors the checkpoint's history: epochs a crash left after the checkpoint
        # are dropped (they are recomputed identically), none is duplicated.
        atomic_write_text(self.run_dir / METRICS_FILE,
                          "".join(json.dumps(r) + "\n" for r in history))
        return ckpt

    # -- training

    def fit(self, callbacks: TrainCallbacks | None = None,
            should_stop: Callable[[], bool] | None = None) -> TrainResult:
        """Train up to ``config.epochs``; returns a :class:`TrainResult`.

        ``should_stop()`` is polled after every optimiser step: when true, the state after that step
        is saved to ``last.pt`` and ``fit`` returns with ``interrupted=True`` (the CLI wires Ctrl-C
        to it). Resuming then continues at the next step exactly.
        """
        cb = callbacks or TrainCallbacks()
        should_stop = should_stop or (lambda: False)
        cfg = self.config
        started = time.perf_counter()
        batches = EpochBatchSampler(len(self.train_set), cfg.batch_size, seed=cfg.seed)
        steps_per_epoch = batches.num_batches
        optimizer = build_optimizer(self.model, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

        ckpt = self._prepare_run_dir()
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_metric": None,
                 "best_epoch": None, "history": [], "partial": None}
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if self.use_amp and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            if int(ckpt.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
                raise FlowkitError(f"cannot resume: the run had {ckpt['steps_per_epoch']} steps per "
                                   f"epoch, now {steps_per_epoch} (another batch size or split?)")
            for key in state:
                state[key] = ckpt.get(key, state[key])
            state["history"] = list(state["history"])
            where = (f"step {state['step_in_epoch']} of epoch {state['epoch'] + 1}"
                     if state["step_in_epoch"] else f"epoch {state['epoch']}")
            self._note(f"resuming {self.run_dir} after {where} (global step {state['global_step']})")
        skip = int(state["step_in_epoch"])
        start_epoch = int(state["epoch"])
        cb.on_start(self, int(state["epoch"]), skip)

        interrupted = False
        for epoch in range(int(state["epoch"]), cfg.epochs):
            if skip and ckpt is not None:
                set_rng_state(ckpt["rng"])
            else:
                seed_everything(derive_seed(cfg.seed, epoch, "global"))
            partial = state["partial"] if skip else None
            sums = dict(partial) if partial else {"loss_sum": 0.0, "correct": 0, "seen": 0,
                                                  "seconds": 0.0}
            self.train_set.set_epoch(epoch)
            batches.set_epoch(epoch, skip=skip)
            loader = make_loader(self.train_set, batch_sampler=batches, workers=cfg.workers,
                                 device=self.device, seed=derive_seed(cfg.seed, epoch, "loader"))
            cb.on_epoch_start(epoch + 1, steps_per_epoch, skip)
            self.model.train()
            step_in_epoch = skip
            train_started = time.perf_counter() - sums["seconds"]
            iterator = iter(loader)
            while step_in_epoch < steps_per_epoch:
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    if should_stop():  # a Ctrl-C also reached the loader's workers
                        interrupted = True
                        break
                    raise
                loss, correct, n, lr = self._train_step(batch, optimizer, scheduler, scaler)
                step_in_epoch += 1
                state["global_step"] += 1
                sums["loss_sum"] += loss * n
                sums["correct"] += correct
                sums["seen"] += n
                sums["seconds"] = time.perf_counter() - train_started
                sums["lr"] = lr
                cb.on_step(epoch + 1, step_in_epoch, loss, sums["correct"] / sums["seen"],
                           sums["seen"] / max(sums["seconds"], 1e-9), lr)
                if step_in_epoch == steps_per_epoch:
                    break
                if should_stop():
                    interrupted = True
                    break
                if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0:
                    self._save_mid_epoch(state, epoch, step_in_epoch, sums, optimizer, scheduler,
                                         scaler, steps_per_epoch)
            del iterator
            if interrupted:
                if step_in_epoch > skip:
                    self._save_mid_epoch(state, epoch, step_in_epoch, sums, optimizer, scheduler,
                                         scaler, steps_per_epoch)
                break
            skip = 0
            record, is_best = self._finish_epoch(epoch, state, sums, cb)
            self._save(LAST, state, optimizer, scheduler, scaler, steps_per_epoch)
            if is_best:
                self._save(BEST, state, optimizer, scheduler, scaler, steps_per_epoch)
            with open(self.run_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record.to_dict()) + "\n")
            cb.on_epoch(record, is_best)
            if should_stop():
                interrupted = epoch + 1 < cfg.epochs
                break
        return TrainResult(self.run_dir, state["history"], int(state["epoch"]),
                           int(state["global_step"]), state["best_metric"], state["best_epoch"],
                           interrupted=interrupted, seconds=time.perf_counter() - started,
                           notes=list(self.notes), start_epoch=start_epoch)

    def _train_step(self, batch, optimizer, scheduler, scaler) -> tuple[float, int, int, float]:
        """One optimiser step; returns (loss, correct top-1 count, clips, learning rate used)."""
        from ..models import classification_loss

        batch = to_device(batch, self.device)
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            output = self.model(batch)
            loss = classification_loss(output, labels)
        if not torch.isfinite(loss):
            raise FlowkitError(f"the training loss became {float(loss)} at step "
                               f"{scheduler.last_epoch + 1}; lower --lr or set --clip-grad")
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

    def _finish_epoch(self, epoch, state, sums, cb):
        seen = max(sums["seen"], 1)
        val_started = time.perf_counter()
        val = self.validate(cb.on_validate) if self.val_set is not None else None
        record = EpochRecord(
            epoch=epoch + 1, step=int(state["global_step"]),
            train_loss=sums["loss_sum"] / seen, train_acc=sums["correct"] / seen,
            val_loss=val["loss"] if val else None, val_top1=val["top1"] if val else None,
            val_top5=val["top5"] if val else None, lr=float(sums.get("lr", 0.0)),
            clips_per_s=sums["seen"] / max(sums["seconds"], 1e-9),
            seconds=sums["seconds"] + time.perf_counter() - val_started)
        metric = record.val_top1 if val else record.train_acc
        is_best = state["best_metric"] is None or metric > state["best_metric"]
        if is_best:
            state["best_metric"], state["best_epoch"] = float(metric), epoch + 1
        state.update(epoch=epoch + 1, step_in_epoch=0, partial=None)
        state["history"] = state["history"] + [record.to_dict()]
        return record, is_best

    def validate(self, on_progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
        """Loss, top-1 and top-5 of the current model on the validation set (one centre clip and
        crop per video)."""
        from .evaluate import predict
        from .metrics import topk_accuracy

        loader = make_loader(self.val_set, batch_size=self.config.batch_size,
                             workers=self.config.workers, device=self.device,
                             seed=derive_seed(self.config.seed, "val"))
        scores, labels, _ = predict(self.model, loader, self.device, amp=self.use_amp,
                                    on_progress=on_progress)
        acc = topk_accuracy(scores, labels, (1, 5))
        true_prob = scores[torch.arange(len(labels)), labels].clamp_min(1e-12)
        return {"loss": float(-true_prob.log().mean()), "top1": acc[1], "top5": acc[5]}

    # -- checkpoints

    def _payload(self, state, optimizer, scheduler, scaler, steps_per_epoch) -> dict[str, Any]:
        return {"config": self.run_config, "model": self.model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "steps_per_epoch": steps_per_epoch,
                **{k: state[k] for k in ("epoch", "step_in_epoch", "global_step", "best_metric",
                                         "best_epoch", "history", "partial")},
                "rng": rng_state()}

    def _save(self, name, state, optimizer, scheduler, scaler, steps_per_epoch) -> None:
        save_checkpoint(self.checkpoint_dir / name,
                        self._payload(state, optimizer, scheduler, scaler, steps_per_epoch))

    def _save_mid_epoch(self, state, epoch, step_in_epoch, sums, optimizer, scheduler, scaler,
                        steps_per_epoch) -> None:
        state.update(epoch=epoch, step_in_epoch=step_in_epoch, partial=dict(sums))
        self._save(LAST, state, optimizer, scheduler, scaler, steps_per_epoch)


def initialise_from_file(model: nn.Module, path: str) -> dict:
    """Load torchvision-format ResNet weights into ``model`` (inflation to 3D, cross-modality first
    conv; see :func:`flowkit.models.init.init_from_file`); returns its report."""
    from ..models.init import init_from_file
    return init_from_file(model, path)
