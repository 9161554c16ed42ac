"""Stand-ins for an extraction worker process (``flowkit.extract._worker_main``) that fail the way
real ones do, for tests of the worker pool: one killed right after it sent a result (the
out-of-memory killer between two videos), one that cannot start (its engine build fails).

A test sets ``FLOWKIT_TEST_WORKER_ROLES`` to a comma-separated list of roles, one per worker
started, in start order (the last repeats), and ``FLOWKIT_TEST_WORKER_STARTS`` to an empty
directory where each start takes its number; then it patches ``flowkit.extract._worker_main`` with
:func:`worker_main`. The spawned worker imports this module by name (the tests directory is on
the ``sys.path`` it inherits) and plays its role around the real worker:

- ``ok``: the real worker.
- ``dies_after_result``: the real worker, killed with SIGKILL right after it sent its first
  result (the parent most often hands it the next video first; a test that needs it to hold none
  when it dies makes the parent slower to hand out videos).
- ``dies_at_start``: killed with SIGKILL before it says it is ready.
- ``cannot_start``: says ``("failed", reason)`` as a worker whose engine build raised does, then
  leaves a ``failed<N>`` file in the starts directory.
- ``waits_for_failed_start``: the real worker, waiting before each video until some worker left a
  ``failed<N>`` file (at most ``WAIT_S``): keeps videos in hand while a replacement fails.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ROLES = "FLOWKIT_TEST_WORKER_ROLES"
STARTS = "FLOWKIT_TEST_WORKER_STARTS"
WAIT_S = 60.0
CANNOT_START = "no memory left to build the engine (test stand-in)"


def _start_number() -> int:
    """This worker's place in start order: the first free ``start<N>`` file it creates."""
    folder = Path(os.environ[STARTS])
    n = 0
    while True:
        try:
            os.close(os.open(folder / f"start{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


class _Conn:
    """The worker's end of the pipe, with the role's fault around ``send`` and ``recv``."""

    def __init__(self, conn, role: str):
        self.conn, self.role = conn, role

    def send(self, message) -> None:
        self.conn.send(message)
        if self.role == "dies_after_result" and message[0] == "result":
            os.kill(os.getpid(), signal.SIGKILL)

    def recv(self):
        item = self.conn.recv()
        if self.role == "waits_for_failed_start" and item is not None:
            folder, deadline = Path(os.environ[STARTS]), time.monotonic() + WAIT_S
            while not any(folder.glob("failed*")) and time.monotonic() < deadline:
                time.sleep(0.05)
        return item


def worker_main(conn, *args) -> None:
    from flowkit import extract

    roles = os.environ[ROLES].split(",")
    n = _start_number()
    role = roles[min(n, len(roles) - 1)]
    if role == "dies_at_start":
        os.kill(os.getpid(), signal.SIGKILL)
    if role == "cannot_start":
        conn.send(("failed", CANNOT_START))
        (Path(os.environ[STARTS]) / f"failed{n}").touch()
        return
    extract._worker_main(_Conn(conn, role), *args)
