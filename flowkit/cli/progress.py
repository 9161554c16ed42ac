"""The CLI's side of :mod:`flowkit.progress`: rich bars on a terminal, plain periodic lines
elsewhere (a log file, a pipe), and Ctrl-C (SIGINT) or SIGTERM as a stop request."""
from __future__ import annotations

import contextlib
import os
import signal
import threading

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _RichBars, TextColumn,
                           TimeElapsedColumn)

from ..progress import (LineProgress, Progress, StopFlag, Stopped, Task, _fmt, clock,
                        env_seconds)

# Seconds between plain progress lines when the output is not a terminal (a log file, a pipe);
# FLOWKIT_PROGRESS_SECONDS overrides it.
PLAIN_EVERY = 30.0


def plain_every(console: Console) -> float:
    """Seconds between plain progress lines: ``FLOWKIT_PROGRESS_SECONDS`` or :data:`PLAIN_EVERY`;
    a value that is not a number of seconds >= 0 is named in a warning and the default used (a
    typo in a log setting must not stop a day of extraction)."""
    every, warning = env_seconds("FLOWKIT_PROGRESS_SECONDS", PLAIN_EVERY, zero=True)
    if warning:
        console.print(f"warning: {warning} between progress lines", highlight=False,
                      markup=False)
    return every


class RichProgress(Progress):
    """Rich bars on ``console``: description, bar, done/total, the task's fields and rate,
    elapsed, ETA; :meth:`log` lines print above them. A context manager (the bars live inside it).

    The rate and the ETA are the task's own (:meth:`flowkit.progress.Task.rate`: items done in
    this run over the time since the task started, the window the commands' summaries use), not
    rich's 30-second sampling, which shows no ETA when an item takes longer than that. When the
    console is not a terminal, the same facts go out as plain lines (:class:`LineProgress`) every
    ``every`` seconds and when a task ends, instead of a bar that would show only at the end.
    """

    def __init__(self, console: Console, transient: bool = False, every: float | None = None):
        self.console = console
        self.plain, self.transient = not console.is_terminal, transient
        if every is None:
            every = plain_every(console)
        self.lines = LineProgress(console.file, every=every) if self.plain else None
        # Descriptions and fields are data, shown as they are (no rich markup; see log).
        self.bars = _RichBars(TextColumn("{task.description}", markup=False), BarColumn(),
                              MofNCompleteColumn(), TextColumn("{task.fields[info]}", markup=False),
                              TimeElapsedColumn(),
                              TextColumn("{task.fields[eta]}"), console=console,
                              transient=transient, disable=self.plain)
        self._ids: dict[int, int] = {}

    def __enter__(self) -> "RichProgress":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def log(self, message: str) -> None:
        # Plain text, never rich markup: the lines carry file names and reasons ("dog [live].mp4",
        # a closing "[/b]" would even raise MarkupError), printed as they are.
        self.console.print(message, highlight=False, soft_wrap=True, markup=False)

    def _started(self, task: Task) -> None:
        if self.plain:
            return
        self._ids[id(task)] = self.bars.add_task(task.description, total=task.total,
                                                 completed=task.completed, info="", eta="")

    def _changed(self, task: Task) -> None:
        if self.plain:
            self.lines._changed(task)
            return
        rate, eta = task.rate(), task.eta()
        info = "  ".join([f"{k} {_fmt(v)}" for k, v in task.info.items()]
                         + ([f"{rate:.3g}/s"] if rate else []))
        self.bars.update(self._ids[id(task)], completed=task.completed, total=task.total,
                         description=task.description, info=info,
                         eta=f"eta {clock(eta)}" if eta is not None else "")

    def _refreshed(self, task: Task) -> None:
        # the rate and ETA fields are ours (rich redraws only its own columns)
        if self.plain:
            self.lines._refreshed(task)
        else:
            self._changed(task)

    def _closed(self, task: Task) -> None:
        if self.plain:
            if not self.transient:  # a transient bar's work logs its own line when it ends
                self.lines._closed(task)
            return
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
