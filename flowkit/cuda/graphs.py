"""CUDA graphs for fixed launch sequences: record once, replay for the cost of one launch.

A TV-L1 warp is hundreds of tiny launches (two iteration passes and the stopping rule per iteration);
on small pyramid levels each launch does less work than its launch overhead. :func:`capture` records
such a sequence, issued by a Python function against static buffers, into a CUDA graph; replaying it
re-runs every kernel with the same arguments (pointers and scalars), so the function must only launch
kernels on buffers that stay alive and in place, and must not read results back to the host. Every
kernel it launches must be compiled and loaded before the capture (``flowkit.cuda.load_kernel`` does
both): loading a module or a function while a stream is captured is illegal on older drivers.

Capture uses ``capture_error_mode="thread_local"``, so other threads of the process (decoders, the
store writer) may keep calling CUDA while a graph is recorded. Where capture fails (an old driver,
a debugging tool), :func:`capture` warns once and returns the function itself: the same launches,
issued eagerly at every replay, for the rest of the process. :func:`capture_failed` says whether and
why that happened (benchmarks and the ``gpu`` tests record it), :func:`captures` how many graphs
were recorded.
"""
from __future__ import annotations

import warnings
from typing import Callable

_failure: str | None = None  # why the first failed capture failed; then every capture is skipped
_captured = 0


def capture_failed() -> str | None:
    """None while every CUDA-graph capture of this process succeeded; otherwise the reason of the
    failed one (``"<ExceptionType>: <message>"``): since then, captured sequences launch eagerly."""
    return _failure


def captures() -> int:
    """How many CUDA graphs :func:`capture` recorded in this process."""
    return _captured


def capture(record: Callable[[], None], device) -> Callable[[], None]:
    """Record the launches ``record()`` issues on ``device`` into a CUDA graph.

    Nothing runs during the capture: the kernels execute at each call of the returned ``replay()``,
    on torch's current stream, in the recorded order.
    """
    global _failure, _captured
    if _failure is not None:
        return record
    import torch

    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            record()
    except Exception as exc:  # the device stays usable: torch ends the capture on error
        _failure = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"CUDA graph capture failed ({_failure}); launching kernels one by one "
                      "instead (same results, more launch overhead)", RuntimeWarning, stacklevel=2)
        return record
    _captured += 1
    return graph.replay


__all__ = ["capture", "capture_failed", "captures"]
