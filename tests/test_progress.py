"""flowkit.progress's plain lines (LineProgress, and the CLI's RichProgress off a terminal) while
nothing changes: a long item must not leave a log file without a line. A controllable clock
stands in for time."""
from __future__ import annotations

import io

import pytest

from flowkit import progress as progress_module
from flowkit.progress import LineProgress


@pytest.fixture
def clock(monkeypatch):
    """``flowkit.progress``'s perf_counter, moved by hand: ``clock[0] += 5`` is 5 s later."""
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    return now


def test_a_line_is_due_every_period_while_nothing_changes(clock):
    """A worker computing one long video reports no pairs for a while: the work's refresh calls
    (the run's poll) print the task's line once a period has passed, none before. Before, a line
    came only with a change: a log showed nothing from the first video's start to its end."""
    out = io.StringIO()
    task = LineProgress(out, every=30).start("frame pairs")
    clock[0] += 10
    task.refresh()
    assert out.getvalue() == ""
    clock[0] += 25
    task.refresh()
    assert out.getvalue() == "frame pairs 0 elapsed 0:00:35\n"
    clock[0] += 20
    task.refresh()  # 20 s after the last line: not yet
    clock[0] += 10
    task.refresh()
    assert out.getvalue().splitlines()[1:] == ["frame pairs 0 elapsed 0:01:05"]


def test_every_zero_is_a_line_per_change_and_none_without_one(clock):
    """FLOWKIT_PROGRESS_SECONDS=0 asks for a line at each change: a refresh (a poll several
    times a second) adds none."""
    out = io.StringIO()
    task = LineProgress(out, every=0).start("frame pairs")
    for _ in range(3):
        clock[0] += 1
        task.refresh()
    assert out.getvalue() == ""
    task.advance(4)
    assert out.getvalue().startswith("frame pairs 4 ")


def test_the_cli_progress_off_a_terminal_refreshes_its_lines_too(clock):
    from rich.console import Console

    from flowkit.cli.progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=False)
    with RichProgress(console, every=30) as bars:
        task = bars.start("frame pairs", total=100)
        clock[0] += 31
        task.refresh()
    assert "frame pairs 0/100 elapsed 0:00:31" in console.file.getvalue()
