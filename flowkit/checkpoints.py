"""One checkpoint format for everything flowkit trains, one writer, one reader.

A checkpoint is a dict saved with ``torch.save`` and read with ``weights_only=True``::

    format   "flowkit-checkpoint"
    version  1
    kind     "classifier" (flowkit train), "tvnet" or "motionnet" (flowkit train-flow)
    ...      the kind's payload: ``config`` and the weights (``model`` for classifiers,
             ``state_dict`` for engines), the optimiser's state, ``epoch``, ``history``, ...
             (the trainers in flowkit/train/ document theirs)

:func:`save_checkpoint` writes atomically (:func:`flowkit.files.atomic_write`); :func:`load_checkpoint`
checks format, version and kind, and also reads the checkpoints of earlier flowkit versions
(``"flowkit-train-checkpoint"``: a classifier; ``"flowkit-tvnet"``: TVNet; a dict with ``config`` and
``state_dict`` but no ``format``: MotionNet). :func:`state_dict_of` unwraps weights from any of these
or from a plain (torchvision-style) state dict.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .errors import FlowkitError
from .files import atomic_write

FORMAT = "flowkit-checkpoint"
VERSION = 1
KINDS = ("classifier", "tvnet", "motionnet")
_KIND_NAMES = {"classifier": "classifier", "tvnet": "TVNet", "motionnet": "MotionNet"}
_LEGACY_FORMATS = {"flowkit-train-checkpoint": "classifier", "flowkit-tvnet": "tvnet"}
# Keys under which training checkpoints of flowkit and other tools keep their weights.
_WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "model_state")


def save_checkpoint(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> None:
    """``torch.save`` the envelope plus ``payload`` to ``path``, atomically."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    data = {**payload, "format": FORMAT, "version": VERSION, "kind": kind}
    atomic_write(path, lambda f: torch.save(data, f))


def read_torch_file(path: str | os.PathLike, *, what: str = "checkpoint", hint: str = "",
                    error: type[Exception] = FlowkitError, map_location="cpu",
                    expected: str = "file torch.save wrote") -> Any:
    """The object in a ``torch.save`` file (``weights_only=True``); ``error`` naming the file when
    it is missing or unreadable, in one line: "cannot read WHAT FILE: it is not a EXPECTED (torch
    cannot read it: REASON)". ``hint`` (e.g. how to make one) ends both messages."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"no such {what}: {path} (not found: it does not exist){tail}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated files, foreign pickles: torch raises many types
        raise error(f"cannot read {what} {path}: it is not a {expected} (torch cannot read it: "
                    f"{_torch_reason(exc)}){tail}") from None


def _torch_reason(exc: Exception) -> str:
    """The one line of torch's load error that says what is wrong with the file, without torch's
    advice to load it with ``weights_only=False`` (which would run code from the file)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "Weights only load failed" in text:
        marker = "WeightsUnpickler error:"
        text = (text.split(marker, 1)[1] if marker in text
                else text.split("Weights only load failed", 1)[1].lstrip(". "))
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and "weights_only" not in line
             and not line.startswith(("Check the documentation", "Please file an issue"))]
    reason = re.split(r"(?<=\.)\s", lines[0], maxsplit=1)[0] if lines else ""  # first sentence
    return reason or type(exc).__name__


def kind_of(obj: Any) -> str | None:
    """The kind of a loaded checkpoint, or None when it is not one of flowkit's."""
    if not isinstance(obj, dict):
        return None
    fmt = obj.get("format")
    if fmt == FORMAT:
        return obj.get("kind")
    if fmt in _LEGACY_FORMATS:
        return _LEGACY_FORMATS[fmt]
    if fmt is None and "config" in obj and "state_dict" in obj:
        return "motionnet"
    return None


def load_checkpoint(path: str | os.PathLike, kind: str, *, what: str | None = None,
                    hint: str = "", error: type[Exception] = FlowkitError,
                    map_location="cpu") -> dict[str, Any]:
    """A checkpoint of ``kind`` written by :func:`save_checkpoint` (or an earlier flowkit); ``error``
    with the file's name and the reason otherwise."""
    name = _KIND_NAMES[kind]
    what = what or f"{name} checkpoint"
    ckpt = read_torch_file(path, what=what, hint=hint, error=error, map_location=map_location,
                           expected="flowkit checkpoint")
    found = kind_of(ckpt)
    tail = f"; {hint}" if hint else ""
    if found is None:
        raise error(f"{path} is not a {name} checkpoint{tail}")
    if found != kind:
        raise error(f"{path} is a {_KIND_NAMES.get(found, found)} checkpoint, not a {name} one"
                    f"{tail}")
    if int(ckpt.get("version", 1)) > VERSION:
        raise error(f"{path} was written by a newer flowkit (checkpoint version "
                    f"{ckpt['version']}); upgrade flowkit to read it")
    return ckpt


def state_dict_of(obj: Any, source: str, *, error: type[Exception] = FlowkitError
                  ) -> dict[str, torch.Tensor]:
    """The weights in ``obj``: a state dict, or a checkpoint holding one under ``state_dict`` /
    ``model`` / ``model_state_dict`` / ``model_state`` (nested wrappers too); DataParallel's
    ``module.`` prefix removed. ``error`` naming ``source`` when there is none."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WEIGHT_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor)
                                                       for v in obj.values()):
        raise error(f"{source} is not a state dict of tensors (got {type(obj).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


__all__ = ["FORMAT", "VERSION", "KINDS", "save_checkpoint", "load_checkpoint", "read_torch_file",
           "kind_of", "state_dict_of"]
