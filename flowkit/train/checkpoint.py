"""Classifier checkpoints (kind ``"classifier"`` of :mod:`flowkit.checkpoints`) and the RNG
states they carry.

A checkpoint is a dict saved with ``torch.save`` and loadable with ``weights_only=True``::

    format, version, kind   "flowkit-checkpoint", 1, "classifier"
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

Written atomically (:mod:`flowkit.files`): a crash leaves the old checkpoint or the new one.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
import torch

from .. import checkpoints

KIND = "classifier"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a classifier checkpoint atomically (:func:`flowkit.checkpoints.save_checkpoint`)."""
    checkpoints.save_checkpoint(path, KIND, payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a classifier checkpoint; FlowkitError naming the file if it is not one."""
    return checkpoints.load_checkpoint(path, KIND, what="checkpoint", map_location=map_location)


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
