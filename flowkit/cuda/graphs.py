"""CUDA graphs for fixed launch sequences: record once, replay for the cost of one launch.

A TV-L1 warp is hundreds of tiny launches (two iteration passes and the stopping rule per iteration);
on small pyramid levels each launch does less work than its launch overhead. :func:`capture` records
such a sequence, issued by a Python function against static buffers, into a CUDA graph; replaying it
re-runs every kernel with the same arguments (pointers and scalars), so the function must only launch
kernels on buffers that stay alive and in place, and must not read results back to the host.

Capture uses ``capture_error_mode="thread_local"``, so other threads of the process (decoders, the
store writer) may keep calling CUDA while a graph is recorded. Where capture fails (an old driver,
a debugging tool), :func:`capture` warns once and returns the function itself: the same launches,
issued eagerly at every replay.
"""
from __future__ import annotations

import warnings
from typing import Callable

_capture_failed = False


def capture(record: Callable[[], None], device) -> Callable[[], None]:
    """Record the launches ``record()`` issues on ``device`` into a CUDA graph.

    Nothing runs during the capture: the kernels execute at each call of the returned ``replay()``,
    on torch's current stream, in the recorded order.
    """
    global _capture_failed
    if _capture_failed:
        return record
    import torch

    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.device(device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            record()
    except Exception as exc:  # the device stays usable: torch ends the capture on error
        _capture_failed = True
        warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); launching "
                      "kernels one by one instead (same results, more launch overhead)",
                      RuntimeWarning, stacklevel=2)
        return record
    return graph.replay


__all__ = ["capture"]
