"""One registry of motion engines: ``create_engine(name, **params)`` and ``list_engines()``."""
from __future__ import annotations

import inspect

from ..errors import EngineError
from .base import FlowEngine

_ENGINES: dict[str, type[FlowEngine]] = {}


def register_engine(cls: type[FlowEngine]) -> type[FlowEngine]:
    """Class decorator: make ``cls`` creatable as ``create_engine(cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no engine name")
    if cls.name in _ENGINES and _ENGINES[cls.name] is not cls:
        raise ValueError(f"engine name {cls.name!r} is already registered")
    _ENGINES[cls.name] = cls
    return cls


def list_engines() -> list[str]:
    """Names of the registered engines, sorted."""
    return sorted(_ENGINES)


def engine_class(name: str) -> type[FlowEngine]:
    try:
        return _ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine {name!r}; available: {', '.join(list_engines())}") from None


def create_engine(name: str, device: str = "cpu", **params) -> FlowEngine:
    """Build the engine registered as ``name`` on ``device`` with keyword ``params``.

    Unknown parameter names raise :class:`~flowkit.errors.EngineError` listing the accepted ones.
    """
    cls = engine_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "device")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise EngineError(f"engine {name!r} has no parameter {', '.join(unknown)}; "
                          f"accepted: {', '.join(accepted)}")
    return cls(device=device, **params)
