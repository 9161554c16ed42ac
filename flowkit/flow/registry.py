"""The registry of motion engines: ``create_engine(name, **params)`` and ``list_engines()``
(a :class:`flowkit.registry.Registry`)."""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import EngineError
from ..registry import Registry
from .base import FlowEngine

ENGINES: Registry[FlowEngine] = Registry("engine", error=EngineError, name_attr="name",
                                         skip=("device", "params"))


def register_engine(cls: type[FlowEngine]) -> type[FlowEngine]:
    """Class decorator: make ``cls`` creatable as ``create_engine(cls.name)``."""
    return ENGINES.register()(cls)


def list_engines() -> list[str]:
    """Names of the registered engines, sorted."""
    return ENGINES.names()


def engine_class(name: str) -> type[FlowEngine]:
    return ENGINES.get(name)


def engine_parameters(name: str) -> list[str]:
    """The keywords ``create_engine(name, ...)`` accepts: the engine's parameters and its
    execution options (``backend``, ``compile``, ...)."""
    return ENGINES.parameters(name)


def execution_options(name: str, backend: str, compile: bool = False) -> dict[str, Any]:
    """The execution options to build engine ``name`` with: ``compile=True`` when ``compile`` and
    the engine has that option (tvl1; others ignore it), ``backend`` when the engine has one
    (engines with CuPy kernels)."""
    accepted = engine_parameters(name)
    options: dict[str, Any] = {"compile": True} if compile and "compile" in accepted else {}
    if "backend" in accepted:
        options["backend"] = backend
    return options


def create_engine(name: str, device: str = "cpu", **params) -> FlowEngine:
    """Build the engine registered as ``name`` on ``device`` with keyword ``params``.

    Unknown parameter names raise :class:`~flowkit.errors.EngineError` listing the accepted ones.
    """
    return ENGINES.create(name, device=device, **params)


def check_engine_params(name: str, params: dict, options: Iterable[str] = ()):
    """The ``Params`` of engine ``name`` for ``params`` (its fields only; execution options such as
    ``backend`` are not looked at), typed and range-checked without building the engine (no
    weights are loaded, no device is touched): :func:`flowkit.flow.params.check_params`.
    ``options``: keywords a command sets by options of its own (``--weights``), left out of the
    accepted ones an unknown keyword's message lists."""
    from dataclasses import fields

    from .params import check_params

    cls = engine_class(name)
    if cls.Params is None:
        return None
    ENGINES.check_keywords(name, params, strict=True, unlisted=options)
    names = {f.name for f in fields(cls.Params)}
    return check_params(cls.Params, {k: v for k, v in params.items() if k in names}, name)
