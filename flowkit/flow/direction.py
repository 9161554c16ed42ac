"""Backward flow of any pairwise engine: :class:`Backward` computes each pair the other way round.

``Backward(engine)(frames0, frames1)`` is ``engine(frames1, frames0)``: ``flow[t]`` maps pixel p of
frame t+1 to ``p + flow(p)`` in frame t, the convention of the datasets named
:func:`flowkit.conventions.backward_name` (``flow/tvl1_backward``). Extraction builds it for
``flowkit extract --backward``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import EngineError
from .base import FlowEngine


def check_reversible(engine: FlowEngine | type[FlowEngine]) -> None:
    """Refuse engines (or engine classes) that read a batch of consecutive pairs as one clip: the
    backward flow of a clip is not the flow of its pairs each swapped."""
    if not engine.independent_pairs:
        raise EngineError(f"engine {engine.name!r} has no backward flow: it reads consecutive "
                          "pairs as one clip, and swapping each pair does not reverse the clip; "
                          "use an engine that treats pairs independently (tvl1, tvnet, "
                          "costvolume)")


class Backward(FlowEngine):
    """``engine`` with every pair swapped. It keeps the engine's name, version, parameters,
    backend, device and memory per pair; :meth:`describe` adds ``"direction": "backward"``, so the
    store records how the dataset was made."""

    def __init__(self, engine: FlowEngine):
        check_reversible(engine)
        self.engine = engine
        self.name, self.version, self.Params = engine.name, engine.version, engine.Params
        self.backend, self.device = engine.backend, engine.device
        self.bytes_per_pixel, self.memory_per_pair = engine.bytes_per_pixel, engine.memory_per_pair

    @property
    def params(self) -> dict[str, Any]:
        return self.engine.params

    def describe(self) -> dict[str, Any]:
        return {**self.engine.describe(), "direction": "backward"}

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        return self.engine.forward(frames1, frames0)

    def __repr__(self) -> str:
        return f"Backward({self.engine!r})"


__all__ = ["Backward", "check_reversible"]
