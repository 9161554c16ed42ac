"""Option parsers shared by the commands: engine parameters, devices, frame sizes and output
files."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import click

from ..errors import FlowkitError


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``("warps=3", "tau=0.2", "early_stop=false")`` -> ``{"warps": 3, "tau": 0.2, "early_stop": False}``.

    Values are read as JSON where they parse (numbers, true/false, lists), else kept as strings.
    """
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


#: ``--backend`` choices of the commands that take one.
BACKENDS = ("auto", "torch", "cupy")


def backend_option(value: Any) -> str:
    """The ``--backend`` option for a ``--param backend=VALUE`` (:func:`refuse_option_params`)."""
    return f"--backend {value if value in BACKENDS else '|'.join(BACKENDS)}"


def param_text(value: Any) -> str:
    """A parsed ``--param`` value as it was typed: ``False`` -> ``false``, ``"cupy"`` -> ``cupy``."""
    return value if isinstance(value, str) else json.dumps(value)


def refuse_option_params(params: Mapping[str, Any],
                         options: Mapping[str, Callable[[Any], str]]) -> None:
    """Refuse a ``--param`` whose key has an option of its own, naming that option, before
    anything is created: ``--param backend=cupy: use --backend cupy``. ``options`` maps such a key
    to the option line for a value; a key may carry a ``METHOD:`` prefix (``flowkit benchmark``).

    Raises:
        FlowkitError: one line (the CLI exits 2).
    """
    for key, value in params.items():
        name = key.rpartition(":")[2]
        if name in options:
            raise FlowkitError(f"--param {key}={param_text(value)}: use {options[name](value)}")


def one_file(values: tuple[Path, ...], option: str, fix: str) -> Path | None:
    """The one file given to ``option`` (declared ``multiple=True`` so that a repeat is seen:
    click would keep only the last one, silently); None when absent. A repeat is refused,
    naming ``fix``."""
    if len(values) > 1:
        raise click.BadParameter(f"given {len(values)} times ({', '.join(map(str, values))}); "
                                 f"a run takes one file here: {fix}", param_hint=option)
    return values[0] if values else None


def parse_size(text: str | None) -> int | tuple[int, int] | None:
    """``--size``: :func:`flowkit.video.parse_size` (None, SHORT_SIDE or HxW) as a click error."""
    from ..errors import FlowkitError
    from ..video import parse_size as parse

    try:
        return parse(text)
    except FlowkitError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None


def parse_device(text: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, checked before anything is read or created
    (a click error, exit 2); whether CUDA is there is the engine's check
    (:class:`~flowkit.flow.base.FlowEngine`)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {text!r}",
                                 param_hint="--device")
    return text


def parse_present_device(text: str) -> str:
    """``--device`` of a command that computes on it itself, with no engine to check it (``flowkit
    train-flow``): :func:`parse_device`, then the device must be on this machine: CUDA available
    and ``cuda:N`` one of its GPUs. One line, exit 2, before anything is read or created (torch
    would fail at the first tensor moved, with a traceback)."""
    device = parse_device(text)
    if not device.startswith("cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        raise FlowkitError(f"--device {device}: CUDA is not available here "
                           "(torch.cuda.is_available() is False); use --device cpu")
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise FlowkitError(f"--device {device}: this machine has {count} CUDA device(s); use "
                           f"cuda:0 to cuda:{count - 1}")
    return device


def check_output_file(option: str, path: str | Path) -> None:
    """Before any work: ``path`` can be written as a file, its folder existing and no folder of
    that name in the way (the write at the end would fail with a traceback, the work lost)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FlowkitError(f"{option} {path}: folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise FlowkitError(f"{option} {path} is a folder; name a file")
