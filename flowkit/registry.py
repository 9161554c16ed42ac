"""One registry type for every kind of thing flowkit builds by name.

::

    ENGINES = Registry("engine", error=EngineError, name_attr="name", skip=("device",))
    @ENGINES.register()                  # the class's own ``name`` attribute names it
    class TVL1(FlowEngine): name = "tvl1"; ...
    ENGINES.names()                      # sorted names
    ENGINES.get("tvl1")                  # the class (error listing the names when unknown)
    ENGINES.parameters("tvl1")           # the keywords ``create`` accepts
    ENGINES.create("tvl1", device="cpu", warps=3)

Motion engines (:mod:`flowkit.flow.registry`), classifiers (:mod:`flowkit.models.registry`) and the
benchmark's OpenCV peers (:mod:`flowkit.bench.peers`) are three instances. A class may declare its
own keywords with a ``parameter_names()`` classmethod (engines whose parameters are a dataclass do);
otherwise they are its constructor's named parameters.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterable, TypeVar

from .errors import FlowkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class table of one kind of thing (see the module docstring)."""

    def __init__(self, kind: str, *, error: type[Exception] = FlowkitError,
                 name_attr: str = "name", skip: tuple[str, ...] = ()):
        self.kind, self.error, self.name_attr = kind, error, name_attr
        self.skip = ("self",) + tuple(skip)
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str | None = None) -> Callable[[type[T]], type[T]]:
        """Class decorator: register under ``name`` (default: the class's ``name_attr``), and set
        that attribute so instances know their registry name."""
        def wrap(cls: type[T]) -> type[T]:
            key = name or getattr(cls, self.name_attr, "")
            if not key:
                raise ValueError(f"{cls.__name__} has no {self.kind} name")
            if key in self._classes and self._classes[key] is not cls:
                raise ValueError(f"{self.kind} name {key!r} is already registered")
            setattr(cls, self.name_attr, key)
            self._classes[key] = cls
            return cls
        return wrap

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self):
        return iter(self.names())

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise self.error(f"unknown {self.kind} {name!r}; available: "
                             f"{', '.join(self.names())}") from None

    def parameters(self, name: str) -> list[str]:
        """The keyword arguments :meth:`create` accepts for ``name``."""
        cls = self.get(name)
        if hasattr(cls, "parameter_names"):
            return [p for p in cls.parameter_names() if p not in self.skip]
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name not in self.skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def check_keywords(self, name: str, keywords: Iterable[str], *, strict: bool = False,
                       unlisted: Iterable[str] = ()) -> None:
        """Raise the registry's error naming the ``keywords`` that ``name`` does not accept and
        listing the accepted ones (less ``unlisted``, names a command sets by options of its own).
        The ``skip`` names (``device``) pass, unless ``strict``: a parameter dict must not hold
        them."""
        accepted = self.parameters(name)
        passing = set(accepted) if strict else set(accepted) | set(self.skip)
        unknown = sorted(k for k in keywords if k not in passing)
        if unknown:
            hidden = set(unlisted)
            listed = [p for p in accepted if p not in hidden]
            raise self.error(f"{self.kind} {name!r} has no parameter {', '.join(unknown)}; "
                             f"accepted: {', '.join(listed)}")

    def create(self, name: str, *args: Any, **kw: Any) -> T:
        """Build ``name`` with ``kw``; unknown keywords raise the registry's error listing the
        accepted ones."""
        self.check_keywords(name, kw)
        return self.get(name)(*args, **kw)


__all__ = ["Registry"]
