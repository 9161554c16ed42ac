"""The registry of video classifiers: ``create_model(name, **kw)`` and ``list_models()``
(a :class:`flowkit.registry.Registry`)."""
from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .base import VideoClassifier

MODELS: Registry[VideoClassifier] = Registry("model", name_attr="model_name")


def register_model(name: str) -> Callable[[type[VideoClassifier]], type[VideoClassifier]]:
    """Class decorator: make the class creatable as ``create_model(name, **kw)``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of the registered classifiers, sorted."""
    return MODELS.names()


def model_class(name: str) -> type[VideoClassifier]:
    return MODELS.get(name)


def model_parameters(name: str) -> list[str]:
    """Keyword arguments accepted by ``create_model(name, ...)``."""
    return MODELS.parameters(name)


def create_model(name: str, **kw) -> VideoClassifier:
    """Build the classifier registered as ``name``.

    Unknown keyword names raise :class:`~flowkit.errors.FlowkitError` listing the accepted ones.
    The keywords are kept on the model (``model.model_kwargs``) so a checkpoint can rebuild it.
    """
    model = MODELS.create(name, **kw)
    model.model_kwargs = dict(kw)
    return model
