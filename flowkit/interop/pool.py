"""Videos processed by a few threads, in completion order, with the stop protocol.

The per-video work of export and import is JPEG and JPEG-LS coding, HDF5 reads and file writes,
which release the GIL, so threads run it in parallel without the start-up and pickling costs of
processes. At most ``2 * workers`` videos are in flight, whatever the number of videos.
:func:`check_common` holds the checks the export and import configs share.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

from ..progress import StopFlag

T = TypeVar("T")
R = TypeVar("R")


def check_common(config, what: str) -> None:
    """FlowkitError for an export or import config (``what``: "export" or "import") with a
    ``bound`` (pixels) that is not a positive number (None passes: an import's bound not given,
    resolved per root later), ``workers`` below 1, or both ``rgb`` and ``flow`` switched off."""
    import numpy as np

    from ..errors import FlowkitError

    if config.bound is not None and not (np.isfinite(config.bound) and config.bound > 0):
        raise FlowkitError(f"bound must be a positive number of pixels, got {config.bound!r}")
    if config.workers < 1:
        raise FlowkitError(f"workers must be >= 1, got {config.workers}")
    if not (config.rgb or config.flow):
        raise FlowkitError(f"nothing to {what}: both RGB and flow are switched off")


def failure_reason(exc: BaseException) -> str:
    """One line for a video that failed: a user-facing error's own message, else its type too."""
    from ..errors import FlowkitError

    return str(exc) if isinstance(exc, (FlowkitError, OSError)) else f"{type(exc).__name__}: {exc}"


def run_threads(items: Iterable[T], work: Callable[[T], R], workers: int,
                stop: StopFlag) -> Iterator[R]:
    """``work(item)`` for every item in ``workers`` threads; results in completion order.

    Once ``stop`` is set no new item starts; the ones in flight finish (their ``work`` polls
    ``stop`` itself and cleans up) and :class:`~flowkit.progress.Stopped` is raised. An exception
    from ``work`` propagates after the items in flight have finished.
    """
    pending = iter(items)
    with ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="flowkit-video") as pool:
        running: set[Future] = set()
        try:
            while True:
                while len(running) < 2 * max(1, int(workers)) and not stop.is_set():
                    item = next(pending, _END)
                    if item is _END:
                        break
                    running.add(pool.submit(work, item))
                if not running:
                    break
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            wait(running)
    stop.check()


_END = object()

__all__ = ["run_threads"]
