"""Evaluate a trained run: multi-clip, multi-crop testing with softmax averaging per video.

``evaluate_run(run_dir, store)`` rebuilds the classifier from a checkpoint's config
(``rebuild_run_model``), samples ``clips`` evenly spaced clips and ``crops`` crops of
every video (V = clips x crops views), averages the softmax scores of the views, and reports top-1,
top-5, mean class accuracy and the confusion matrix. Results go to ``RUN_DIR/eval/``:
``eval.json`` (metrics, options, per-video predictions), ``confusion.json`` and ``confusion.png``.

Which videos: :func:`select_keys`, then those labelled with one of the run's classes (the others
are named in ``notes``; so are listed videos the store lacks, left out with ``skip_missing`` and
counted in ``not_in_store``). ``training_videos`` counts the scored videos the run trained on by
key, whatever store holds them, and ``held_out`` is true only when there are none.
``selected_on`` counts the scored videos that chose the checkpoint (``best``: the run's
validation videos), whose score is then optimistic (a note says so: ``last`` gives a test score).
A video's non-finite scores (a diverged model) are an error, never a class-0 prediction. A
``--checkpoint FILE`` of another run is refused (:func:`checkpoint_run`).

Under torchrun each rank predicts every ``world_size``-th video and the scores are gathered
(:func:`predict_sharded`); rank 0 writes the files.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import distributed
from ..conventions import MODALITIES
from ..errors import FlowkitError, shell_word
from ..files import atomic_write, atomic_write_text, check_writable_folder
from ..progress import Progress, StopFlag
from .checkpoint import load_checkpoint
from .config import TrainConfig, read_run_config
from .metrics import confusion_matrix, mean_class_accuracy, per_class_accuracy, topk_accuracy
from .runlock import training_in

VIEW_INPUTS = MODALITIES  # the batch entries that carry a views dim: rgb, flow, flow_backward


def flatten_views(batch: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Fold the views dim of an evaluation batch into the batch dim for the model.

    ``rgb`` ``(B, V, 3, T, H, W)`` -> ``(B*V, 3, T, H, W)``, ``flow`` ``(B, V, 2L, T, H, W)`` ->
    ``(B*V, 2L, T, H, W)`` (``flow_backward`` alike), ``flow_bound`` ``(B,)`` -> ``(B*V,)``. A
    batch without a views dim (5-D inputs) is returned as it is with V = 1. Returns
    ``(inputs, V)``.
    """
    views = None
    for name in VIEW_INPUTS:
        if name in batch and batch[name].ndim == 6:
            v = batch[name].shape[1]
            if views is not None and v != views:
                raise FlowkitError(f"inputs disagree on the number of views ({views} vs {v})")
            views = v
    if views is None:
        return dict(batch), 1
    size = next(batch[n].shape[0] for n in VIEW_INPUTS if n in batch)
    out = {}
    for name, value in batch.items():
        if name in VIEW_INPUTS:
            out[name] = value.reshape(value.shape[0] * views, *value.shape[2:])
        elif torch.is_tensor(value) and value.ndim >= 1 and value.shape[0] == size:
            out[name] = value.repeat_interleave(views, dim=0)  # flow_bound, label, index
        else:
            out[name] = value
    return out, views


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, *, amp: bool = False,
            progress: Progress | None = None, name: str = "batches", stop: StopFlag | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax scores averaged over each video's views (``progress``: a task ``name`` counting
    batches; ``stop`` is checked after each batch).

    Returns ``(scores (N, K) float32 CPU, labels (N,) int64, index (N,) int64)`` in loader order.
    The model is put in eval mode and restored to its previous mode afterwards.
    """
    from .loading import to_device

    was_training = model.training
    model.eval()
    scores, labels, indices = [], [], []
    bar = (progress or Progress()).start(name, total=len(loader))
    try:
        for batch in loader:
            b = batch["label"].shape[0]
            inputs, views = flatten_views(batch)
            inputs = to_device(inputs, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(inputs)["logits"]
            prob = torch.softmax(logits.float(), dim=1).reshape(b, views, -1).mean(1)
            scores.append(prob.cpu())
            labels.append(batch["label"].cpu())
            indices.append(batch["index"].cpu() if "index" in batch
                           else torch.arange(sum(map(len, labels[:-1])), sum(map(len, labels))))
            bar.advance()
            if stop is not None:
                stop.check()
    finally:
        bar.close()
        model.train(was_training)
    if not scores:
        raise FlowkitError("nothing to evaluate: the evaluation set is empty")
    return torch.cat(scores), torch.cat(labels).long(), torch.cat(indices).long()


def predict_sharded(model: torch.nn.Module, dataset, make_loader, device: torch.device, *,
                    amp: bool = False, progress: Progress | None = None, name: str = "batches",
                    stop: StopFlag | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`predict` over ``dataset`` split across the ranks: rank ``r`` predicts items
    ``r, r + W, ...`` (``make_loader(subset)`` builds its loader), and every rank returns all
    items' ``(scores (N, K), labels (N,), index (N,))`` sorted by dataset index. One process: plain
    :func:`predict` of the whole dataset. ``model`` must be the plain module (not the DDP wrapper,
    whose forward would synchronise ranks that run different numbers of batches)."""
    world = distributed.world_size()
    if world == 1:
        return predict(model, make_loader(dataset), device, amp=amp, progress=progress, name=name,
                       stop=stop)
    part = torch.utils.data.Subset(dataset, range(distributed.rank(), len(dataset), world))
    if len(part):
        mine = predict(model, make_loader(part), device, amp=amp, progress=progress, name=name,
                       stop=stop)
    else:  # more ranks than items
        mine = (torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    parts = [p for p in distributed.gather(mine) if len(p[1])]
    scores, labels, index = (torch.cat([p[i] for p in parts]) for i in range(3))
    order = torch.argsort(index)
    return scores[order], labels[order], index[order]


@dataclass
class EvalResult:
    """Metrics of one evaluation (accuracies are fractions) and where the files went."""
    top1: float
    top5: float | None  # None with 5 classes or fewer
    mean_class_accuracy: float
    num_videos: int
    views: int
    confusion: np.ndarray
    out_dir: Path | None
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.report


def load_run_model(run_dir: str | Path, checkpoint: str = "best",
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """``(model, run_config, checkpoint)``: the classifier rebuilt with ``rebuild_run_model`` from the
    checkpoint's config and loaded with its weights, in eval mode.

    ``checkpoint`` is ``best``, ``last`` or a path to a checkpoint file.
    """
    from ..models import load_run_weights, rebuild_run_model

    path = Path(checkpoint)
    if checkpoint in ("best", "last"):
        path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
        last = path.with_name("last.pt")
        training = None if path.is_file() else training_in(run_dir)
        if training is not None:  # not stopped: still in its first epoch, nothing to resume
            raise FlowkitError(f"{path} does not exist yet: {run_dir} is still training "
                               f"({training}); {checkpoint}.pt is written when its first "
                               "epoch ends (--checkpoint-every N saves last.pt sooner)")
        if not path.is_file() and last.is_file():
            # Stopped inside its first epoch (best.pt is written at each epoch's end): the
            # run exists, so `flowkit train --out RUN` without --resume would be refused.
            raise FlowkitError(f"{path} does not exist but {last} does (the run stopped before "
                               f"its first epoch ended); evaluate it with --checkpoint last, or "
                               "finish training with `flowkit train ... --out "
                               f"{shell_word(run_dir)} --resume`")
        if not path.is_file() and (Path(run_dir) / "config.json").is_file():
            # Stopped before its first save: the run exists, so only --resume continues it.
            raise FlowkitError(f"{run_dir} has no checkpoint yet (the run stopped before its "
                               f"first save); continue training it with `flowkit train ... "
                               f"--out {shell_word(run_dir)} --resume`")
        if not path.is_file():
            raise FlowkitError(f"{path} does not exist; train the run first (`flowkit train ... "
                               f"--out {shell_word(run_dir)}`)")
    ckpt = load_checkpoint(path)
    run_config = ckpt["config"]
    model = rebuild_run_model(run_config["model"], restoring=True)
    load_run_weights(model, run_config["model"], ckpt["model"], str(path))
    model.to(device).eval()
    return model, run_config, ckpt


def _with_current_store(run_dir: Path, run_config: dict) -> dict:
    """``run_config`` (a checkpoint's) with the run's current training store, from
    ``RUN_DIR/config.json``: ``--resume`` may move a run to another STORE, and a checkpoint
    saved before (``best.pt`` of an earlier epoch) still names the old one, which the default
    store and the "is this the training store" test would use."""
    try:
        current = read_run_config(run_dir)["config"]["store"]
    except (FlowkitError, KeyError, TypeError):  # no readable config.json: the checkpoint's
        return run_config
    return {**run_config, "config": {**run_config["config"], "store": current}}


def _identity(run_config: dict) -> dict[str, Any]:
    """What tells one run from another, of those a run config (a checkpoint's or config.json's)
    records: ``created``, classes, model name and split digests (all kept by --resume)."""
    split = run_config.get("split") or {}
    fields = {"creation time": run_config.get("created"), "classes": run_config.get("classes"),
              "model name": (run_config.get("model") or {}).get("name"),
              "train split": split.get("train_sha1"), "validation split": split.get("val_sha1")}
    return {name: value for name, value in fields.items() if value is not None}


def checkpoint_run(run_dir: Path, checkpoint: str, run_config: dict) -> str:
    """Whose checkpoint a ``--checkpoint FILE`` is: ``"own"`` (``best``/``last``, or a file of
    the run in ``run_dir``: same creation time, classes, model and split), ``"unknown"`` (the
    checkpoint or ``run_dir`` records too little to tell). A checkpoint of another run is refused:
    scored with ``run_dir``'s store and split, its results would overwrite ``run_dir``'s own."""
    if checkpoint in ("best", "last"):
        return "own"
    try:
        recorded = read_run_config(run_dir)
    except FlowkitError:  # no config.json: nothing to compare with
        return "unknown"
    mine, theirs = _identity(recorded), _identity(run_config)
    differ = [name for name in mine if name in theirs and mine[name] != theirs[name]]
    if differ:
        path = Path(checkpoint)
        other = path.parent.parent if path.parent.name == "checkpoints" else None
        if other is not None and (other / "config.json").is_file():
            which = {"best.pt": "", "last.pt": " --checkpoint last"}.get(
                path.name, f" --checkpoint {shell_word(path)}")
            fix = f"flowkit evaluate {shell_word(other)}{which}"
        else:
            fix = (f"flowkit evaluate OTHER_RUN --checkpoint {shell_word(path)} with the run "
                   f"directory it was trained in (created {theirs.get('creation time', '?')})")
        raise FlowkitError(f"{path} is a checkpoint of another run than {run_dir} (its "
                           f"{' and '.join(differ)} differ): evaluate it with its own run's "
                           f"store and split: {fix}")
    return "own" if "creation time" in mine and "creation time" in theirs else "unknown"


def _same_store(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def select_keys(store, run_config: dict, split: str | Path | Sequence[str | Path] = "auto",
                skip_missing: bool = False) -> tuple[list[str], str, list[str]]:
    """``(keys, description, absent)``: the videos to evaluate, and listed ones left out.

    ``auto``: the run's validation keys when ``store`` is the training store and the run had a
    validation split, else every video (of which :func:`evaluate_run` then scores those the run
    did not train on, :func:`held_out_first`); ``val``: the run's validation keys (which must be
    in the store); ``all``: every video; a path: a UCF101-style list (``testlist01.txt``); a list
    of paths: the union of their videos, in list order. A listed video the store lacks is an
    error, or with ``skip_missing`` left out and returned in ``absent`` (else ``absent`` is empty;
    ``val`` of a run trained with ``--skip-missing``: the videos of its val list it left out).
    """
    if isinstance(split, (list, tuple)):
        return _from_lists(store, [Path(p) for p in split], skip_missing)
    if split not in ("auto", "val", "all"):
        return _from_lists(store, [Path(split)], skip_missing)
    val_keys = list(run_config.get("split", {}).get("val_keys", []))
    same = _same_store(store.path, run_config["config"]["store"])
    if split == "auto":
        split = "val" if same and val_keys else "all"
    if split == "all":
        return store.keys(), "all videos", []
    if not val_keys:  # split == "val"
        raise FlowkitError("the run has no validation split (trained with --val-fraction 0 "
                           "and no --val-list); use --split all or --split-list FILE")
    missing = [k for k in val_keys if k not in store]
    if missing:
        raise FlowkitError(f"{len(missing)} of the run's validation videos are not in store "
                           f"{store.path} (e.g. {missing[0]}); use --split all or a list file")
    absent = _val_list_absent(store, run_config, val_keys)
    desc = "the run's validation split"
    if absent:  # as a --split-list of the run's val list says: the score is over fewer videos
        desc += f" less {len(absent)} listed video(s) not in the store (--skip-missing)"
    return val_keys, desc, absent


def _val_list_absent(store, run_config: dict, val_keys: list[str]) -> list[str]:
    """The videos of the run's ``--val-list`` that a run trained with ``--skip-missing`` left out
    of its validation split because the store lacks them (``[]`` otherwise). config.json's split
    ``source`` counts those of both lists together, so the val list is read again: its keys
    neither in ``val_keys`` nor in ``store``. A list that is gone or no longer reads leaves
    ``[]`` (the split ``source`` still tells the total)."""
    from ..data.splits import listed_keys

    options = run_config.get("config", {})
    val_list = options.get("val_list")
    if not options.get("skip_missing") or not val_list:
        return []
    try:
        _, missing = listed_keys(store, val_list)
    except (FlowkitError, OSError):
        return []
    chosen = set(val_keys)
    return [k for k in missing if k not in chosen]


def _from_lists(store, paths: list[Path], skip_missing: bool) -> tuple[list[str], str, list[str]]:
    """:func:`select_keys` of split list files: the union of their keys in list order, the
    description (``list A``, ``lists A + B``, with how many listed videos were left out) and the
    listed keys the store lacks (left out with ``skip_missing``, else an error)."""
    from ..data.splits import listed_keys, split_from_list

    if not paths:
        raise FlowkitError("no split list given")
    keys: dict[str, None] = {}  # ordered set: a video in two lists is scored once
    absent: dict[str, None] = {}
    for path in paths:
        if not path.is_file():
            raise FlowkitError(f"split list {path}: no such file")
        if skip_missing:
            present, missing = listed_keys(store, path)
            absent.update(dict.fromkeys(missing))
        else:
            present = split_from_list(store, path)
        keys.update(dict.fromkeys(present))
    desc = ("list " if len(paths) == 1 else "lists ") + " + ".join(map(str, paths))
    if absent:  # the score is over fewer videos than listed: the description says so
        desc += f" less {len(absent)} listed video(s) not in the store (--skip-missing)"
    return list(keys), desc, list(absent)


def save_confusion_png(confusion: np.ndarray, classes: Sequence[str], path: Path,
                       title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG: true classes on the y axis, predicted on x, class
    names on both axes (smaller font for many classes). Matplotlib's Agg canvas, no GUI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(classes)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    side = min(4 + 0.25 * k, 30)
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    fontsize = max(3, min(9, 400 // max(k, 1)))
    ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), labels=list(classes), fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                            fontsize=fontsize, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _train_keys(run_config: dict) -> set[str]:
    return set(run_config.get("split", {}).get("train_keys", []))


def held_out_first(keys: list[str], run_config: dict, split_desc: str) -> tuple[list[str], str]:
    """``--split auto``'s videos: ``keys`` less those the run trained on (by key, whatever store
    holds them: a copy of the training store is recognised), unless that leaves none; and the
    description ``split_desc`` says so."""
    trained = _train_keys(run_config)
    unseen = [k for k in keys if k not in trained]
    if not unseen or len(unseen) == len(keys):
        return keys, split_desc
    return unseen, f"{split_desc} but the {len(keys) - len(unseen)} the run trained on"


def training_videos(keys: list[str], run_config: dict) -> int:
    """How many of ``keys`` the run trained on. Keys are paths relative to the dataset root, so
    they are compared whatever store holds the videos (a copy of the training store, a store
    extracted again from the same videos)."""
    train = _train_keys(run_config)
    return sum(key in train for key in keys)


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """The file of ``--checkpoint`` (``best``/``last``: in ``RUN_DIR/checkpoints``)."""
    if checkpoint in ("best", "last"):
        return Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    return Path(checkpoint)


def _check_finite(scores: torch.Tensor, path: Path, epoch: int) -> None:
    """FlowkitError when a video's ``scores`` ``(N, K)`` are not all finite: a diverged model
    (NaN weights) has no prediction, and the argmax of a NaN row would score it as class 0."""
    bad = int((~torch.isfinite(scores).all(dim=1)).sum())
    if bad:
        raise FlowkitError(f"checkpoint {path} (epoch {epoch}) gives non-finite scores (NaN or "
                           f"inf) for {bad} of {len(scores)} videos: the model diverged in "
                           "training; evaluate an earlier checkpoint or train again with a "
                           "lower --lr")


def _default_out(run_dir: Path, checkpoint: str, whose: str) -> Path:
    """``RUN_DIR/eval``, or for a checkpoint that may not be the run's own (:func:`checkpoint_run`
    ``"unknown"``) ``RUN_DIR/eval-<file stem>``: it never overwrites the run's own evaluation."""
    if whose == "unknown":
        return run_dir / f"eval-{Path(checkpoint).stem}"
    return run_dir / "eval"


def _selected_on(keys: list[str], run_config: dict, checkpoint: str, whose: str) -> int:
    """How many of the scored ``keys`` chose the checkpoint: best.pt is the epoch with the best
    top-1 on the run's validation videos, so its score on them is not a test score (0 for
    ``last`` and for other checkpoint files, which no validation chose)."""
    if checkpoint != "best" and not (whose == "own" and Path(checkpoint).name == "best.pt"):
        return 0
    val = set(run_config.get("split", {}).get("val_keys", []))
    return sum(key in val for key in keys)


def _scoreable(store, keys: list[str], classes: list[str], split_desc: str
               ) -> tuple[list[str], list[str]]:
    """``(keys, notes)``: the videos of ``keys`` labelled with one of the run's classes, and a note
    naming those left out (label -1, or a class of the store the run was not trained on).
    FlowkitError when none is left."""
    from ..data import labelled_keys, unlabelled_note
    from ..store.labelling import RELABEL_HINT

    scoreable, left_out = labelled_keys(store, keys, classes=classes)
    if not scoreable:
        unlabelled = int(store.meta(left_out[0]).get("label", -1)) < 0
        fix = (f"label them: {RELABEL_HINT}" if unlabelled else
               "evaluate videos of the run's classes (--split-list FILE)")
        raise FlowkitError(f"none of the {len(keys)} videos to evaluate in {store.path} "
                           f"({split_desc}) has a label among the run's {len(classes)} classes "
                           f"(e.g. {left_out[0]!r}{' is unlabelled' if unlabelled else ''}); "
                           f"{fix}")
    notes = ([unlabelled_note(store, left_out, "evaluation",
                              reason=f"have no label among the run's {len(classes)} classes")]
             if left_out else [])
    return scoreable, notes


def evaluate_run(run_dir: str | Path, store: str | Path | None = None, *,
                 checkpoint: str = "best", clips: int = 10, crops: int = 3,
                 split: str | Path | Sequence[str | Path] = "auto", batch_size: int = 8,
                 workers: int = 0, device: str = "auto", out_dir: str | Path | None = None,
                 skip_missing: bool | None = None, progress: Progress | None = None,
                 stop: StopFlag | None = None) -> EvalResult:
    """Evaluate a run's checkpoint on ``store`` (default: the training store).

    ``split``: :func:`select_keys` (split list files: the union of their videos).
    ``skip_missing`` leaves out listed videos the store lacks instead of refusing the lists
    (default: as the run was trained, ``--skip-missing``); ``not_in_store`` in the report counts
    them and a note names a few, so the score says it is over fewer videos than listed.
    ``batch_size`` counts videos (each of V = clips x crops views). A run trained without flips
    (``--no-flip``: a mirror may change its classes) is not scored on mirrored views: ``crops=10``
    is then the 5 unmirrored crops (the report's ``crop_views``, ``mirrored_views`` and
    ``views`` say so). ``out_dir`` (default ``RUN_DIR/eval``; ``RUN_DIR/eval-<stem>`` for a
    checkpoint file that records no run to compare with, :func:`checkpoint_run`) receives
    ``eval.json``, ``confusion.json`` and ``confusion.png``; pass ``out_dir=False`` to write
    nothing.
    """
    from ..data.splits import missing_note
    from ..store import FlowStore
    from .loading import derive_seed, index_store, make_dataset, make_loader

    if crops not in (1, 3, 10):
        raise FlowkitError(f"crops must be 1, 3 or 10, got {crops}")
    if clips < 1 or batch_size < 1:
        raise FlowkitError("clips and batch size must be >= 1")
    from .ddp import rank_device

    run_dir = Path(run_dir)
    dev = rank_device(device)
    model, run_config, ckpt = load_run_model(run_dir, checkpoint, dev)
    whose = checkpoint_run(run_dir, checkpoint, run_config)
    run_config = _with_current_store(run_dir, run_config)
    config = TrainConfig.from_dict(run_config["config"])
    store_path = Path(store) if store is not None else Path(config.store)
    if store is None and not store_path.exists():  # moved since: FlowStore would say extract
        raise FlowkitError(f"the run's training store {store_path} (recorded in "
                           f"{run_dir / 'config.json'}) is not there; if it was moved, pass its "
                           f"new path: flowkit evaluate {shell_word(run_dir)} STORE")
    flow_store = FlowStore(store_path)
    classes = run_config["classes"]
    if skip_missing is None:
        skip_missing = config.skip_missing
    keys, split_desc, absent = select_keys(flow_store, run_config, split, skip_missing)
    if not keys:
        raise FlowkitError(f"no videos to evaluate in {store_path} ({split_desc})")
    with flow_store.index_held():
        index_store(flow_store, keys, progress)
        keys, notes = _scoreable(flow_store, keys, classes, split_desc)
        if split == "auto":
            keys, split_desc = held_out_first(keys, run_config, split_desc)
        dataset = make_dataset(flow_store, keys, config, model, train=False, clips=clips,
                               crops=crops, views=True, classes=classes)
        # flow of another --step or engine parameters changes the score silently: say so
        from .inputs import extraction_notes
        notes += extraction_notes(flow_store, keys, run_config)
        if lost := flow_store.unreachable:  # listed without their videos (a dangling link)
            notes.append(f"{len(lost)} folder(s) of the store cannot be read, their videos are "
                         f"left out of this evaluation; e.g. {lost[0]}")
    if absent:
        notes.insert(0, missing_note(flow_store, absent, "evaluation"))
    def loader(subset):
        return make_loader(subset, batch_size=batch_size, workers=workers, device=dev,
                           seed=derive_seed(config.seed, "evaluate"))

    out = None
    if out_dir is not False and distributed.rank() == 0:  # before the predictions: an output
        out = Path(out_dir) if out_dir is not None else _default_out(run_dir, checkpoint, whose)
        check_writable_folder(out)  # a folder it cannot write is said now, not after the work
    started = time.perf_counter()
    use_amp = bool(config.amp) and dev.type == "cuda"
    scores, labels, index = predict_sharded(model, dataset, loader, dev, amp=use_amp,
                                            progress=progress, stop=stop)
    seconds = time.perf_counter() - started
    _check_finite(scores, checkpoint_path(run_dir, checkpoint), int(ckpt["epoch"]))

    k = len(classes)
    acc = topk_accuracy(scores, labels, (1, 5))
    acc[5] = acc[5] if k > 5 else None  # with <= 5 classes every video is in its top 5
    training = training_videos(keys, run_config)
    selected = _selected_on(keys, run_config, checkpoint, whose)
    if selected:  # held out still (not trained on), but the checkpoint was chosen on them
        notes.append(f"best.pt was selected on {selected} of the {len(keys)} scored videos (the "
                     "epoch with the best validation top-1 on them), so this score is optimistic; "
                     "use --checkpoint last for a test score")
    if whose == "unknown" and out_dir is None:
        notes.append(f"{checkpoint} records no run to compare with {run_dir}'s, so the results go "
                     f"to {_default_out(run_dir, checkpoint, whose)}, not {run_dir / 'eval'} "
                     "(which holds the run's own evaluation)")
    pred = scores.argmax(1)
    confusion = confusion_matrix(pred, labels, k)
    per_class = per_class_accuracy(confusion)
    ordered_keys = [keys[int(i)] for i in index]
    top5 = torch.topk(scores, min(5, k), dim=1).indices
    report = {
        "run_dir": str(run_dir), "checkpoint": checkpoint, "epoch": int(ckpt["epoch"]),
        "store": str(store_path), "split": split_desc, "num_videos": len(keys),
        "not_in_store": len(absent),
        "training_videos": training, "held_out": training == 0, "selected_on": selected,
        "clips": clips, "crops": crops, "crop_views": dataset.crops,
        "mirrored_views": crops == 10 and bool(config.flip), "views": clips * dataset.crops,
        "top1": acc[1], "top5": acc[5], "mean_class_accuracy": mean_class_accuracy(confusion),
        "per_class_accuracy": {c: (None if np.isnan(a) else float(a))
                               for c, a in zip(classes, per_class)},
        "classes": classes, "notes": notes, "seconds": seconds,
        "world_size": distributed.world_size(),
        "videos_per_s": len(keys) / max(seconds, 1e-9),
        "predictions": [{"key": key, "label": int(y), "pred": int(p),
                         "score": float(scores[i, p]), "top5": top5[i].tolist()}
                        for i, (key, y, p) in enumerate(zip(ordered_keys, labels, pred))],
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "confusion.json", json.dumps(
            {"classes": classes, "rows": "true", "columns": "predicted",
             "matrix": confusion.tolist()}, indent=1) + "\n")
        save_confusion_png(confusion, classes, out / "confusion.png",
                           title=f"{run_config['model']['name']}: top-1 {100 * acc[1]:.1f}%")
        # allow_nan=False: a bare NaN is not JSON (the scores were checked finite above)
        atomic_write_text(out / "eval.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return EvalResult(top1=acc[1], top5=acc[5], mean_class_accuracy=report["mean_class_accuracy"],
                      num_videos=len(keys), views=report["views"], confusion=confusion,
                      out_dir=out, report=report)
