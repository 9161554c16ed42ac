"""How long work reports progress and is asked to stop: one protocol for every command.

Library code (extraction, training, evaluation, flow-model training, benchmarks) never draws
anything. It takes a :class:`Progress` and a :class:`StopFlag`::

    bar = progress.start("frame pairs", total=None)     # a counter; total=N makes it a bar
    bar.advance(8, loss=0.31)                           # n done, and fields shown beside it
    bar.update(completed=40, total=64, description="epoch 2/10")
    bar.refresh()                                       # nothing done, time passed (a long item)
    bar.close()
    progress.log("epoch 2/10: loss 0.310")              # a line above the bars
    stop.check()                                        # raises Stopped once stop.set() was called

:class:`Progress` itself shows nothing (the default everywhere); :class:`LineProgress` prints plain
periodic lines (logs, scripts, a pipe); the CLI's rich bars are ``flowkit.cli.progress.RichProgress``.
A :class:`StopFlag` is set by the CLI's Ctrl-C / SIGTERM handler; work polls it at safe points
(between videos' chunks, after an optimiser step), saves what it must, and ends cleanly.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO


class Stopped(KeyboardInterrupt):
    """Raised by :meth:`StopFlag.check` once a stop was requested (a KeyboardInterrupt, so code
    that lets Ctrl-C through lets it through too)."""


class StopFlag:
    """A request to stop, set from a signal handler or another thread and polled by the work.

    ``flag()`` (call it) is True once set; :meth:`check` raises :class:`Stopped` then.
    """

    def __init__(self):
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    __call__ = is_set

    def clear(self) -> None:
        self._event.clear()
        self.reason = ""

    def check(self) -> None:
        if self._event.is_set():
            raise Stopped(self.reason)


class Task:
    """One line of progress (a bar with a total, a counter without); made by :meth:`Progress.start`."""

    def __init__(self, progress: "Progress", name: str, total: int | None, completed: int):
        self.progress, self.description = progress, name
        self.total, self.completed = total, completed
        self.info: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.initial = completed  # done before this run (resumed): not counted in the rate

    def advance(self, n: int = 1, **info) -> None:
        """``n`` more done; ``info`` fields (e.g. ``loss=0.3``) replace those shown so far."""
        self.update(completed=self.completed + n, **info)

    def update(self, *, completed: int | None = None, total: int | None = None,
               description: str | None = None, **info) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self.info.update(info)
        self.progress._changed(self)

    def rate(self) -> float | None:
        """Items per second since the task started, counting only the items done since then
        (a resumed run's finished items are not work of this run)."""
        elapsed = time.perf_counter() - self.started
        done = self.completed - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta(self) -> float | None:
        """Seconds left at :meth:`rate` (None without a total or before the first item)."""
        rate = self.rate()
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.completed) / rate)

    def refresh(self) -> None:
        """Nothing more done, but time passed: show what is due (its elapsed time, rate and ETA,
        :class:`LineProgress`'s periodic line), so that a long item does not freeze the display.
        Work that waits on something slow calls it now and then."""
        self.progress._refreshed(self)

    def close(self) -> None:
        self.progress._closed(self)

    def text(self) -> str:
        """``description done/total k v ...`` as one plain line."""
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        return " ".join([self.description, count] + [f"{k} {_fmt(v)}" for k, v in self.info.items()])


class Progress:
    """The protocol, doing nothing: what library code gets when nobody watches."""

    def start(self, name: str, total: int | None = None, completed: int = 0) -> Task:
        task = Task(self, name, total, completed)
        self._started(task)
        return task

    def log(self, message: str) -> None:
        """A line of text for the user (a finished epoch, a failed video)."""

    # -- what subclasses show
    def _started(self, task: Task) -> None: ...

    def _changed(self, task: Task) -> None: ...

    def _refreshed(self, task: Task) -> None: ...

    def _closed(self, task: Task) -> None: ...


class LineProgress(Progress):
    """Plain lines: each log message, and each task's state at most every ``every`` seconds (and
    when it closes). For log files, pipes and scripts. A line is due every ``every`` seconds also
    while nothing changes, if the work calls :meth:`Task.refresh` meanwhile (``every`` 0: a line
    at each change, none without one)."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0):
        self.stream, self.every = stream or sys.stderr, float(every)
        self._last: dict[int, float] = {}

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def _changed(self, task: Task) -> None:
        now = time.perf_counter()
        if now - self._last.get(id(task), task.started) >= self.every:
            self._last[id(task)] = now
            self._line(task)

    def _refreshed(self, task: Task) -> None:
        if self.every > 0:
            self._changed(task)

    def _closed(self, task: Task) -> None:
        self._last.pop(id(task), None)
        self._line(task)

    def _line(self, task: Task) -> None:
        rate, eta = task.rate(), task.eta()
        self.log(task.text() + (f" {rate:.3g}/s" if rate else "")
                 + f" elapsed {clock(time.perf_counter() - task.started)}"
                 + (f" eta {clock(eta)}" if eta is not None else ""))


def clock(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def env_seconds(name: str, default: float, *, zero: bool = False) -> tuple[float, str]:
    """Seconds from the environment variable ``name`` (``default`` when unset), and a warning
    ("" when none): a value that is not a finite number of seconds > 0 (>= 0 with ``zero``) is
    named and ``default`` used, since a typo in a setting must not stop a day of work."""
    text = os.environ.get(name)
    if text is None:
        return default, ""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if (0 <= value if zero else 0 < value) and value < float("inf"):
        return value, ""
    return default, (f"{name}={text!r} is not a number of seconds {'>=' if zero else '>'} 0; "
                     f"using {default:g} s")


__all__ = ["Progress", "LineProgress", "Task", "StopFlag", "Stopped", "clock", "env_seconds"]
