"""Engine parameters typed from their ``Params`` dataclass, before any engine is built.

Every engine declares its parameters as one frozen dataclass (``Engine.Params``, docs/architecture.md,
"Conventions"); its field annotations say what each value must be (``int``, ``float``, ``bool``,
``str``, ``X | None``, ``int | Sequence[int]``). :func:`typed_params` checks and converts values
given as keywords or on the command line (``--param warps=3``) against those annotations, so a
string or a fractional number where an integer belongs is one clear :class:`ParameterError`
instead of a ``TypeError`` deep inside the numerics. Ranges (``warps >= 1``, ``0 < scale_step <
1``) stay where they are declared: each dataclass's ``__post_init__``, which :func:`check_params`
runs. :func:`weights_identity` is what an engine records of the weights file it loads.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import EngineError
from ..files import file_sha256


class ParameterError(EngineError):
    """A parameter value of the wrong type; ``name`` is the parameter, ``value`` what was given."""

    def __init__(self, message: str, name: str, value: Any):
        super().__init__(message)
        self.name, self.value = name, value


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def typed_params(params_class: type, values: dict[str, Any], engine: str) -> dict[str, Any]:
    """``values`` converted to the types the fields of ``params_class`` declare.

    Integers are accepted where a float is declared (and become floats), whole floats (``5.0``)
    where an integer is; names that are not fields pass through unchanged (the registry reports
    unknown names). Raises :class:`ParameterError` naming the parameter, the expected kind and
    the field's default as an example.
    """
    hints = typing.get_type_hints(params_class)
    defaults = {f.name: f.default for f in dataclasses.fields(params_class)}
    out = {}
    for name, value in values.items():
        if name not in hints:
            out[name] = value
            continue
        ok, converted = coerce_value(hints[name], value)
        if not ok:
            example = defaults.get(name)
            hint = "" if example in (None, dataclasses.MISSING) else f" (default {example!r})"
            kind = describe_annotation(hints[name])
            raise ParameterError(f"{engine}: {name} must be {kind}{hint}, got {value!r}", name,
                                 value)
        out[name] = converted
    return out


def check_params(params_class: type, values: dict[str, Any], engine: str):
    """The ``params_class`` instance for ``values``: types checked (:func:`typed_params`), then the
    dataclass's own range checks; every failure an :class:`~flowkit.errors.EngineError`."""
    typed = typed_params(params_class, values, engine)
    try:
        return params_class(**typed)
    except TypeError as exc:  # an unknown field, or a range check that met an unexpected value
        raise EngineError(f"engine {engine!r}: {exc}") from None


def weights_identity(path: str | os.PathLike, digits: int | None = 12) -> tuple[str, str]:
    """What an engine records of the weights file it loaded (``params["weights"]`` and
    ``params["weights_sha256"]``): ``(absolute path, SHA-256 of the content)``, the first
    ``digits`` hex digits of it (None: all). The path alone would tell a store neither a replaced
    file (same name, other weights) nor the same file named relative or absolute apart.

    Each engine keeps the length it has always recorded (tvnet and costvolume 12, motionnet all
    64): a store compares digests as text (``flowkit.store.compat``), so a change of length would
    refuse every rerun on a store written before it."""
    path = os.path.abspath(os.fspath(path))
    return path, file_sha256(path, digits)


def coerce_value(annotation: Any, value: Any) -> tuple[bool, Any]:
    """(accepted, converted value) of ``value`` for the type ``annotation`` (``int``, ``float``,
    ``bool``, ``str``, ``X | None``, sequences of them; another annotation accepts anything): the
    typing of engine parameters, also used for model keywords (:mod:`flowkit.models.registry`)."""
    if annotation is Any:
        return True, value
    if annotation is type(None):
        return value is None, None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            ok, converted = coerce_value(arm, value)
            if ok:
                return True, converted
        return False, value
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence) \
            and origin is not str:
        (item,) = typing.get_args(annotation) or (Any,)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False, value
        items = [coerce_value(item, v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if annotation is bool:
        return _is_bool(value), bool(value) if _is_bool(value) else value
    if annotation is int:  # numpy integers too (numbers.Integral); a whole float becomes an int
        if _is_bool(value):
            return False, value
        if isinstance(value, numbers.Integral):
            return True, int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return True, int(value)
        return False, value
    if annotation is float:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            return False, value
        return math.isfinite(float(value)), float(value)
    if annotation is str:
        if isinstance(value, os.PathLike):
            return True, os.fspath(value)
        return isinstance(value, str), value
    return True, value  # an annotation this check does not know: the dataclass decides


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def describe_annotation(annotation: Any) -> str:
    """What ``annotation`` asks for, for a user: "an integer", "a list of integers (or null)"."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(annotation) if a is not type(None)]
        text = " or ".join(describe_annotation(a) for a in arms)
        return text + (" (or null)" if len(arms) < len(typing.get_args(annotation)) else "")
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence):
        (item,) = typing.get_args(annotation) or (Any,)
        return f"a list of {describe_annotation(item).removeprefix('an ').removeprefix('a ')}s"
    return _KINDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


__all__ = ["ParameterError", "typed_params", "check_params", "coerce_value", "describe_annotation",
           "weights_identity"]
