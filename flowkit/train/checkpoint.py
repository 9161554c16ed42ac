"""Classifier checkpoints (kind ``"classifier"`` of :mod:`flowkit.checkpoints`).

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

No RNG state: the trainer reseeds the global RNGs before every step from (seed, epoch, step, rank)
(:mod:`flowkit.train.loop`), so a resumed run needs none.

Written atomically (:mod:`flowkit.files`): a crash leaves the old checkpoint or the new one.

Also the ``--resume`` checks the flow trainers share (:mod:`flowkit.train.motionnet`,
:mod:`flowkit.train.tvnet`): :func:`check_resumable`, :func:`existing_out_error`.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .. import checkpoints
from ..errors import FlowkitError

KIND = "classifier"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write a classifier checkpoint atomically (:func:`flowkit.checkpoints.save_checkpoint`)."""
    checkpoints.save_checkpoint(path, KIND, payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a classifier checkpoint; FlowkitError naming the file if it is not one."""
    return checkpoints.load_checkpoint(path, KIND, what="checkpoint", map_location=map_location)


# ------------------------------------------------------------------------- resuming a flow trainer

def check_resumable(path: str | os.PathLike, saved: dict[str, Any], given: dict[str, Any], *,
                    changeable: frozenset[str] = frozenset({"epochs"}),
                    new_out: str = "choose another --out") -> None:
    """FlowkitError naming every option of ``given`` (but ``changeable``) that differs from the
    ``saved`` one of the checkpoint at ``path`` (a list and a tuple of equal values are alike: a
    size read back from a checkpoint); ``new_out``: the way out the message offers."""
    conflicts = [f"--{k.replace('_', '-')}={saved[k]!r} (given {given[k]!r})"
                 for k in given if k in saved and k not in changeable
                 and _plain(saved[k]) != _plain(given[k])]
    if conflicts:
        flags = ", ".join(f"--{k}" for k in sorted(changeable))
        raise FlowkitError(f"--resume: {path} was trained with {', '.join(conflicts)}; leave these "
                           f"options out (they come from the checkpoint) or {new_out}; only "
                           f"{flags} may change")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def existing_out_error(out: str | os.PathLike) -> FlowkitError:
    """The refusal to train over an existing checkpoint without ``--resume``."""
    return FlowkitError(f"{out} exists; pass --resume to continue training it, or choose "
                        "another --out")
