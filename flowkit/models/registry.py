"""One registry of video classifiers: ``create_model(name, **kw)`` and ``list_models()``."""
from __future__ import annotations

import inspect
from typing import Callable

from ..errors import FlowkitError
from .base import VideoClassifier

_MODELS: dict[str, type[VideoClassifier]] = {}


def register_model(name: str) -> Callable[[type[VideoClassifier]], type[VideoClassifier]]:
    """Class decorator: make the class creatable as ``create_model(name, **kw)``."""
    def wrap(cls: type[VideoClassifier]) -> type[VideoClassifier]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.model_name = name
        _MODELS[name] = cls
        return cls
    return wrap


def list_models() -> list[str]:
    """Names of the registered classifiers, sorted."""
    return sorted(_MODELS)


def model_class(name: str) -> type[VideoClassifier]:
    try:
        return _MODELS[name]
    except KeyError:
        raise FlowkitError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def model_parameters(name: str) -> list[str]:
    """Keyword arguments accepted by ``create_model(name, ...)``."""
    return [p for p in inspect.signature(model_class(name).__init__).parameters if p != "self"]


def create_model(name: str, **kw) -> VideoClassifier:
    """Build the classifier registered as ``name``.

    Unknown keyword names raise :class:`~flowkit.errors.FlowkitError` listing the accepted ones.
    The keywords are kept on the model (``model.model_kwargs``) so a checkpoint can rebuild it.
    """
    cls = model_class(name)
    accepted = model_parameters(name)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise FlowkitError(f"model {name!r} has no parameter {', '.join(unknown)}; "
                           f"accepted: {', '.join(accepted)}")
    model = cls(**kw)
    model.model_kwargs = dict(kw)
    return model
