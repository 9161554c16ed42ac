"""Training checkpoints: atomic writes, loading with a clear error, and the RNG states they carry.

A checkpoint is a dict saved with ``torch.save`` and loadable with ``weights_only=True``::

    format, version      "flowkit-train-checkpoint", 1
    config               the run's config.json content (model name + kwargs, options, split)
    model                state_dict of the classifier
    optimizer, scheduler, scaler   their state_dicts (scaler: AMP GradScaler, empty when unused)
    epoch                finished epochs
    step_in_epoch        optimiser steps already done in epoch ``epoch + 1`` (0 at an epoch end)
    global_step          optimiser steps since the start
    partial              running sums of the unfinished epoch (loss_sum, correct, seen, seconds)
    best_metric, best_epoch   best validation top-1 so far (train accuracy without validation)
    history              the metrics.jsonl records of the finished epochs
    rng                  torch (CPU and CUDA), numpy and Python RNG states

Files are written to a temporary name in the same folder, fsynced and renamed over the target, so
a crash leaves the old checkpoint or the new one, never half a file.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FlowkitError

CHECKPOINT_FORMAT = "flowkit-train-checkpoint"
CHECKPOINT_VERSION = 1


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, rename it over
    ``path`` (atomic on POSIX), then fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save(payload)`` to ``path`` atomically (see the module docstring)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; FlowkitError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FlowkitError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, foreign pickle, ...
        raise FlowkitError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FlowkitError(f"{path} is not a flowkit training checkpoint")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise FlowkitError(f"{path} was written by a newer flowkit (checkpoint version "
                           f"{ckpt['version']}); upgrade flowkit to read it")
    return ckpt


def rng_state() -> dict[str, Any]:
    """The global RNG states that training can consume (dropout, stochastic layers, user code).

    Stored in a form ``torch.load(weights_only=True)`` accepts (tensors, strings, numbers).
    """
    state = {"torch": torch.get_rng_state(),
             "numpy": json.dumps(np.random.get_state(legacy=False), default=_json_array),
             "python": json.dumps(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state` (a missing CUDA state is left alone)."""
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    np_state = json.loads(state["numpy"])
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _json_array(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
