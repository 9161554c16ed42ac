"""The CLI's side of :mod:`flowkit.progress`: rich bars, and Ctrl-C (SIGINT) or SIGTERM as a stop request."""
from __future__ import annotations

import contextlib
import os
import signal
import threading

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _RichBars, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ..progress import Progress, StopFlag, Stopped, Task, _fmt


class RichProgress(Progress):
    """Rich bars on ``console``: description, bar, done/total, the task's fields, elapsed, ETA;
    :meth:`log` lines print above them. A context manager (the bars live inside it)."""

    def __init__(self, console: Console, transient: bool = False):
        self.console = console
        self.bars = _RichBars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                              TimeRemainingColumn(), console=console, transient=transient)
        self._ids: dict[int, int] = {}

    def __enter__(self) -> "RichProgress":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def _started(self, task: Task) -> None:
        self._ids[id(task)] = self.bars.add_task(task.description, total=task.total,
                                                 completed=task.completed, info="")

    def _changed(self, task: Task) -> None:
        rate = task.rate()
        info = "  ".join([f"{k} {_fmt(v)}" for k, v in task.info.items()]
                         + ([f"{rate:.2f}/s"] if rate else []))
        self.bars.update(self._ids[id(task)], completed=task.completed, total=task.total,
                         description=task.description, info=info)

    def _closed(self, task: Task) -> None:
        rich_id = self._ids.pop(id(task), None)
        if rich_id is not None and self.bars.live.transient:
            self.bars.remove_task(rich_id)


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag, console: Console, what: str = "the current step"):
    """While inside: the first Ctrl-C (SIGINT) or SIGTERM (Slurm, Kubernetes, ``timeout``) sets
    ``stop`` (the work ends cleanly at its next safe point; the reason is "interrupted" or
    "terminated", which the CLI turns into exit code 130 or 143); a second one raises at once. A
    no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    pid = os.getpid()
    reasons = {signal.SIGINT: ("interrupted", "Ctrl-C"), signal.SIGTERM: ("terminated", "SIGTERM")}

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker (DataLoader): the main process decides
            return
        reason, name = reasons[signum]
        if stop.is_set():
            raise Stopped(stop.reason)
        stop.set(reason)
        console.print(f"{name}: stopping after {what} ({name} again to stop now)", highlight=False)

    previous = {sig: signal.signal(sig, handler) for sig in reasons}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["RichProgress", "stop_on_signals"]
