"""Crash safety with real processes and real files: `kill -9` of a running `flowkit extract` at
several moments, then the same command again; and Ctrl-C (SIGINT) -> exit 130, finished work kept.

Each run extracts a folder of 6 small videos (24 frames, 64x80) with TV-L1 params chosen so that a
video takes about a second; the test polls the store directory every few milliseconds and kills the
process at the wanted moment. If a moment is missed (the run finished first) the test fails saying
so, rather than passing without having tested anything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowkit.labels import scan_videos
from flowkit.samples import make_sample_videos
from flowkit.store import FlowStore, VideoWriter

pytestmark = pytest.mark.slow

FRAMES, SIZE = 24, (64, 80)
N_VIDEOS = 6
# ~2x the cheap test params, fixed schedule: roughly 1 s per 23-pair video on one core (more under
# load, which only makes the moments easier to hit).
PARAMS = {"nscales": 2, "warps": 1, "outer_iterations": 4, "inner_iterations": 10,
          "early_stop": "false"}
# One torch thread: on a loaded 2-core machine OpenMP's spinning threads make tiny TV-L1 batches
# up to ~60x slower with 2 threads than with 1 (measured: 51 s vs 0.9 s for 8 pairs at 64x80).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
START_TIMEOUT = 300.0   # interpreter + torch import + first video, on a loaded machine
POLL = 0.005


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash_videos")
    make_sample_videos(root, classes=("pan_left", "pan_right", "zoom_in"), videos_per_class=2,
                       frames=FRAMES, size=SIZE)
    assert len(scan_videos(root)[0]) == N_VIDEOS
    return root


def _command(video_dir: Path, store: Path, workers: int = 1) -> list[str]:
    params = [a for k, v in PARAMS.items() for a in ("--param", f"{k}={v}")]
    return [sys.executable, "-m", "flowkit", "extract", str(video_dir), "-o", str(store),
            "--no-compile", "--batch", "8", "--workers", str(workers), "--json", *params]


class Run:
    """A `flowkit extract` subprocess in its own session, with output captured to files."""

    def __init__(self, cmd: list[str], workdir: Path, name: str, env: dict | None = None):
        self.out = open(workdir / f"{name}.stdout", "w+")
        self.err = open(workdir / f"{name}.stderr", "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, start_new_session=True,
                                     env={**ENV, **(env or {})})

    def stderr(self) -> str:
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def stdout(self) -> str:
        self.out.flush()
        self.out.seek(0)
        return self.out.read()

    def wait(self, timeout: float = 600.0) -> int:
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()
        self.err.close()


def _finished(store: Path) -> list[Path]:
    return sorted((store / "videos").rglob("*.h5")) if (store / "videos").is_dir() else []


def _partials(store: Path) -> list[Path]:
    return sorted((store / "videos").rglob("*.partial")) if (store / "videos").is_dir() else []


def _stamps(paths) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def _wait_for(run: Run, store: Path, moment: str, condition, timeout: float = START_TIMEOUT):
    """Poll the store until ``condition(finished, partials)`` holds; fail clearly if the run ends
    (or the timeout passes) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished, partials = _finished(store), _partials(store)
        if condition(finished, partials):
            return finished, partials
        if run.proc.poll() is not None:
            pytest.fail(f"missed the moment '{moment}': the extract run ended (exit "
                        f"{run.proc.returncode}, {len(_finished(store))}/{N_VIDEOS} videos "
                        "finished) "
                        f"before it came; make the videos slower.\nstderr:\n{run.stderr()[-3000:]}")
        time.sleep(POLL)
    pytest.fail(f"moment '{moment}' did not come within {timeout:.0f} s "
                f"({len(_finished(store))} finished, {len(_partials(store))} partial)")


def _check_store_after_crash(store: Path, finished: list[Path]) -> None:
    """The killed store opens, validates, and every finished video reads back whole."""
    fs = FlowStore(store)
    assert fs.validate() == []
    keys = fs.keys()
    assert len(keys) == len(finished)
    for key in keys:
        meta = fs.meta(key)
        assert meta["complete"] is True and meta["frame_count"] == FRAMES
        flow = fs.read_flow(key)
        assert flow.shape == (FRAMES - 1, 2, *SIZE) and np.isfinite(flow).all()
        assert fs.read_rgb(key).shape == (FRAMES, *SIZE, 3)
    assert fs.validate(deep=True) == []
    summary = fs.summary()
    assert summary["videos"] == len(keys) and summary["unreadable"] == 0


def _rerun_and_check(video_dir: Path, store: Path, tmp_path: Path, before: dict,
                     workers: int = 1) -> None:
    """Run the same command to completion: finished videos skipped and untouched, rest done."""
    run = Run(_command(video_dir, store, workers), tmp_path, "rerun")
    try:
        rc = run.wait()
        assert rc == 0, run.stderr()[-3000:]
        result = json.loads(run.stdout())
    finally:
        run.cleanup()
    status = {v["key"]: v["status"] for v in result["videos"]}
    done_before = {str(Path(p).relative_to(store / "videos").with_suffix("")) for p in before}
    assert {k for k, s in status.items() if s == "skipped"} == done_before, status
    assert {k for k, s in status.items() if s == "done"} == set(status) - done_before, status
    assert result["failed"] == 0 and result["skipped"] == len(done_before)
    assert _stamps(Path(p) for p in before) == before  # same inode and mtime_ns: not rewritten
    fs = FlowStore(store)
    assert len(fs.keys()) == N_VIDEOS and fs.validate() == []
    assert fs.partials() == []  # the killed writer's leftover was cleaned up


@pytest.mark.parametrize("moment", ["before_first_video", "after_first_video",
                                    "mid_video_after_two"])
def test_kill_9_then_resume(video_dir, tmp_path, moment):
    store = tmp_path / "store"
    conditions = {
        # a partial of the first video exists and nothing is finished yet
        "before_first_video": lambda fin, par: bool(par) and not fin,
        # the first finished file has just appeared
        "after_first_video": lambda fin, par: len(fin) >= 1,
        # a video is being written after at least two finished
        "mid_video_after_two": lambda fin, par: len(fin) >= 2 and bool(par),
    }
    run = Run(_command(video_dir, store), tmp_path, "killed")
    try:
        seen_finished, seen_partials = _wait_for(run, store, moment, conditions[moment])
        os.kill(run.proc.pid, signal.SIGKILL)
        assert run.wait(60) == -signal.SIGKILL
    finally:
        run.cleanup()
    finished = _finished(store)
    print(f"{moment}: killed with {len(finished)} finished and {len(_partials(store))} partial")
    if moment == "before_first_video":
        # The moment was caught unless the video finished in the few ms between poll and kill.
        assert len(finished) <= 1
    assert len(finished) < N_VIDEOS, "the run finished before the kill; nothing was tested"
    # The partial we saw is either still there (killed mid-write) or was committed just before.
    for partial in seen_partials:
        final = partial.with_name(partial.name.split(".h5.")[0] + ".h5")
        assert partial.exists() or final.exists()
    if set(finished) == set(seen_finished) and seen_partials:
        assert _partials(store), "killed while writing, so its .partial must be left behind"
        assert FlowStore(store).summary()["partials"] >= 1
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    assert _stamps(finished) == before  # reading and validating changed nothing
    _rerun_and_check(video_dir, store, tmp_path, before)


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_exits_130_and_keeps_finished_work(video_dir, tmp_path, workers):
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers), tmp_path, "interrupted")
    try:
        _wait_for(run, store, "first video finished", lambda fin, par: len(fin) >= 1)
        os.killpg(run.proc.pid, signal.SIGINT)  # what Ctrl-C sends: the foreground process group
        rc = run.wait(120)
        stderr = run.stderr()
    finally:
        run.cleanup()
    assert rc == 130, stderr[-3000:]
    assert "interrupted" in stderr and "rerun the same command" in stderr
    finished = _finished(store)
    assert 1 <= len(finished) < N_VIDEOS, "the run finished before Ctrl-C; nothing was tested"
    # With one process a leftover .partial is allowed here (the rerun below must remove it):
    # Ctrl-C can land inside VideoWriter.__enter__, which leaves its file
    # (test_writer_enter_failure_leaves_no_partial). A pool's workers are terminated mid-video,
    # and the run removes what they held.
    if workers > 1:
        assert not _claims(store) and not _partials(store), _claims(store) + _partials(store)
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    _rerun_and_check(video_dir, store, tmp_path, before, workers)


def _sitecustomize(folder: Path, code: str) -> dict:
    """The environment of a run whose Python processes (the run and its workers) first run
    ``code``: a ``sitecustomize.py`` in ``folder``, put on PYTHONPATH."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(folder)}


def _session_pids(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (a Run's parent and its workers)."""
    ps = subprocess.run(["ps", "-o", "pid=,stat=", "--sid", str(sid)], capture_output=True,
                        text=True).stdout.splitlines()
    return [int(line.split()[0]) for line in ps if line.split() and "Z" not in line.split()[-1]]


def test_ctrl_c_while_the_workers_start_prints_no_traceback(video_dir, tmp_path):
    """Ctrl-C (SIGINT to the process group) while the worker processes start (importing torch
    takes seconds on a loaded machine; here a sitecustomize makes each worker's start last 3 s):
    exit 130 and the usual lines. Before, each worker printed a KeyboardInterrupt traceback: it
    ignored SIGINT only once its imports were done."""
    slow = _sitecustomize(tmp_path / "slow_start",
                          "import sys, time\n"
                          "if '--multiprocessing-fork' in sys.argv:  # a spawned worker\n"
                          "    time.sleep(3)\n")
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers=2), tmp_path, "ctrl_c_at_start", env=slow)
    try:
        deadline = time.monotonic() + 120
        while len(_session_pids(run.proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # the parent and its two workers
        assert len(_session_pids(run.proc.pid)) >= 3, "the workers did not start"
        time.sleep(0.5)  # inside their 3 s start
        os.killpg(run.proc.pid, signal.SIGINT)
        rc = run.wait(120)
        stderr = run.stderr()
    finally:
        run.cleanup()
    assert rc == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert "interrupted; finished work is kept" in stderr
    assert not _finished(store)


def test_ctrl_c_again_while_the_workers_stop_still_removes_their_claims(video_dir, tmp_path):
    """Ctrl-C again ("stop now") while the run waits for its terminated workers: the second
    Stopped, raised out of the first join, skipped removing every worker's claim and partial
    file, and the claims kept those videos from other hosts for 10 minutes. Deterministic: a
    sitecustomize in the run sends the second SIGINT from inside that first join."""
    sent = tmp_path / "sent"
    site = _sitecustomize(
        tmp_path / "second_ctrl_c",
        "import multiprocessing, os, signal, sys, threading, time\n"
        "if '--multiprocessing-fork' not in sys.argv:  # the run itself, not a worker\n"
        "    import multiprocessing.process as mpp\n"
        "    join = mpp.BaseProcess.join\n"
        "    def join_then_ctrl_c(self, timeout=None):\n"
        "        if threading.current_thread() is threading.main_thread() and \\\n"
        f"                not os.path.exists({str(sent)!r}):\n"
        f"            open({str(sent)!r}, 'w').close()\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "            time.sleep(0.05)\n"
        "        return join(self, timeout)\n"
        "    mpp.BaseProcess.join = join_then_ctrl_c\n")
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers=2), tmp_path, "ctrl_c_twice", env=site)
    try:
        _wait_for(run, store, "both workers mid-video", lambda fin, par: len(par) >= 2)
        os.kill(run.proc.pid, signal.SIGINT)  # the first Ctrl-C; the second comes from the join
        rc = run.wait(120)
        stderr = run.stderr()
    finally:
        run.cleanup()
    assert sent.exists(), "the second Ctrl-C was not sent: nothing was tested"
    assert rc == 130, stderr[-3000:]
    assert not _claims(store) and not _partials(store), _claims(store) + _partials(store)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_exits_143_and_workers_die_with_the_parent(video_dir, tmp_path, workers):
    """SIGTERM to the parent only (what `timeout`, Kubernetes and `kill PID` send): a message, exit
    143, finished work kept; pool workers end with it and write nothing afterwards."""
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers), tmp_path, "terminated")
    try:
        _wait_for(run, store, "first video finished", lambda fin, par: len(fin) >= 1)
        os.kill(run.proc.pid, signal.SIGTERM)
        rc = run.wait(120)
        stderr = run.stderr()
        after_parent = _stamps(_finished(store))
        time.sleep(3)  # a surviving worker would commit its video meanwhile
        alive = _session_pids(run.proc.pid)
    finally:
        run.cleanup()
    assert rc == 143, stderr[-3000:]
    assert "SIGTERM: stopping after the current chunk" in stderr
    assert "terminated (SIGTERM); finished work is kept" in stderr
    assert not alive, f"workers outlived the parent: {alive}"
    if workers > 1:  # the workers it terminated: their claims and partials are removed
        assert not _claims(store) and not _partials(store), _claims(store) + _partials(store)
    finished = _finished(store)
    assert _stamps(finished) == after_parent, "a video was written after the parent exited"
    assert 1 <= len(finished) < N_VIDEOS, "the run finished before SIGTERM; nothing was tested"
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    _rerun_and_check(video_dir, store, tmp_path, before, workers)


def test_sigterm_to_the_process_group_leaves_no_claims_and_loses_no_video(video_dir, tmp_path):
    """SIGTERM to every process of the run, workers included (what Slurm sends at a time limit,
    and `kill -TERM -PGID`): exit 143 as for the parent alone, the workers' deaths are that stop
    and not lost videos, and what the killed workers held (claims, partial files) is gone, so a
    rerun on another host, which cannot check their pids and would take their claims for live
    ones for 10 minutes, does not skip those videos as "already in the store"."""
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers=2), tmp_path, "group_terminated")
    try:
        _wait_for(run, store, "a video finished and a worker holds another",
                  lambda fin, par: len(fin) >= 1 and bool(_claims(store)))
        os.killpg(run.proc.pid, signal.SIGTERM)
        rc = run.wait(120)
        stderr = run.stderr()
    finally:
        run.cleanup()
    assert rc == 143, stderr[-3000:]
    assert "terminated (SIGTERM); finished work is kept" in stderr
    assert "died (killed by signal 15" not in stderr and "the other videos go on" not in stderr, \
        stderr[-3000:]
    assert not _claims(store) and not _partials(store), _claims(store) + _partials(store)
    finished = _finished(store)
    assert 1 <= len(finished) < N_VIDEOS, "the run finished before SIGTERM; nothing was tested"
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    _rerun_and_check(video_dir, store, tmp_path, before, workers=2)

# A worker: arms die_with_parent for the pid it was handed, then leaves a mark (its work).
_WORKER = """
import os, sys, time
from flowkit.extract import die_with_parent
time.sleep(float(sys.argv[3]))
die_with_parent(int(sys.argv[1]))
open(sys.argv[2], "w").write(str(os.getpid()))
"""
# Its parent: starts the worker with its own pid, says which pid the worker has, and dies at once.
_PARENT = """
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2], "1"])
print(worker.pid, flush=True)
os._exit(0)
"""


def test_a_worker_slower_to_start_than_its_parent_lives_does_no_work(tmp_path):
    """A pool worker that reaches die_with_parent after a `kill -9` of its parent (importing torch
    on a loaded machine takes seconds) ends there instead of extracting videos as an orphan of
    the reaper; with its parent alive it goes on."""
    orphan_mark, child_mark = tmp_path / "orphan", tmp_path / "child"
    out = subprocess.run([sys.executable, "-c", _PARENT, _WORKER, str(orphan_mark)],
                         capture_output=True, text=True, check=True).stdout
    pid = int(out.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:  # gone, or a zombie its reaper has not collected yet
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the orphaned worker (pid {pid}) still runs after 60 s")
    assert not orphan_mark.exists(), "a worker whose parent was gone did its work"
    subprocess.run([sys.executable, "-c", _WORKER, str(os.getpid()), str(child_mark), "0"],
                   check=True, timeout=60)
    assert child_mark.read_text().strip().isdigit()


def test_kill_9_of_the_parent_with_workers_then_resume(video_dir, tmp_path):
    """`kill -9` of `flowkit extract --workers 2` (the parent only, as `kill -9 PID` does): the
    pool workers die with it (a parent-death signal) and start nothing afterwards (a commit already
    under way when the parent died may land: it is atomic), the store stays valid, and the same
    command resumes."""
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers=2), tmp_path, "killed")
    try:
        _wait_for(run, store, "first video finished", lambda fin, par: len(fin) >= 1)
        os.kill(run.proc.pid, signal.SIGKILL)
        assert run.wait(60) == -signal.SIGKILL
        # In flight when the parent was gone (a SIGKILLed process with torch loaded takes a
        # while to die, and until then its workers run on): videos being written (a partial) or
        # claimed and being computed (the claim comes before the first pair, the partial at the
        # first write). Whatever finishes later must be one of them.
        claims = sorted((store / "videos").rglob("*.claim"))
        in_flight = {p.name.split(".h5.")[0] for p in _partials(store) + claims}
        at_kill = _stamps(_finished(store))
        # Orphans would be reparented but stay in the run's session: none may be running.
        deadline, alive = time.monotonic() + 10, ["?"]
        while alive and time.monotonic() < deadline:
            ps = subprocess.run(["ps", "-o", "pid=,stat=", "--sid", str(run.proc.pid)],
                                capture_output=True, text=True).stdout.splitlines()
            alive = [line for line in ps if line.split() and "Z" not in line.split()[-1]]
            time.sleep(0.2)
        assert not alive, f"pool workers still running 10 s after the parent was killed: {alive}"
    finally:
        run.cleanup()
    finished = _finished(store)
    later = {Path(p).stem for p in set(_stamps(finished)) - set(at_kill)}
    assert later <= in_flight, f"workers started {later - in_flight} after their parent died"
    assert all(_stamps(finished)[p] == stamp for p, stamp in at_kill.items())
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    _rerun_and_check(video_dir, store, tmp_path, before, workers=2)


def _claims(store: Path) -> list[Path]:
    """Claims on videos (``<key>.h5.<flow>.claim``): a process is computing that video."""
    return sorted(p for p in (store / "videos").rglob("*.claim") if ".h5." in p.name) \
        if (store / "videos").is_dir() else []


def test_a_worker_killed_mid_video_fails_that_video_and_the_run_ends(video_dir, tmp_path):
    """`kill -9` of one pool worker (what the out-of-memory killer does) while it extracts a
    video: that video fails with the reason, the other worker and a replacement finish the rest,
    the run ends (exit 1) instead of waiting forever, and the same command then redoes it."""
    store = tmp_path / "store"
    run = Run(_command(video_dir, store, workers=2), tmp_path, "worker_killed")
    try:
        _wait_for(run, store, "a worker holds a video", lambda fin, par: bool(_claims(store)))
        claim = _claims(store)[0]
        holder = json.loads(claim.read_text())
        key = str(claim.relative_to(store / "videos")).split(".h5.")[0]
        assert holder["pid"] != run.proc.pid  # a worker's, not the parent's
        os.kill(holder["pid"], signal.SIGKILL)
        try:
            rc = run.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not end {START_TIMEOUT:.0f} s after its worker was killed "
                        f"(it waits for the lost video forever)\nstderr:\n{run.stderr()[-3000:]}")
        result = json.loads(run.stdout())
        stderr = run.stderr()
    finally:
        run.cleanup()
    status = {v["key"]: v for v in result["videos"]}
    if status[key]["status"] == "done":
        pytest.fail(f"missed the moment: {key} was committed before its worker was killed")
    assert rc == 1, stderr[-3000:]
    reason = status[key]["reason"]
    assert status[key]["status"] == "failed" and f"worker process {holder['pid']} died" in reason
    assert "killed by signal 9, SIGKILL: out of memory?" in reason, reason
    assert f"failed: {reason}" in " ".join(stderr.split()), stderr[-3000:]
    assert result["done"] == N_VIDEOS - 1 and result["failed"] == 1, result
    # what the killed worker held is removed: a run on another host would skip that video
    assert not _claims(store) and not _partials(store), _claims(store) + _partials(store)
    finished = _finished(store)
    before = _stamps(finished)
    _check_store_after_crash(store, finished)
    _rerun_and_check(video_dir, store, tmp_path, before, workers=2)


def test_writer_enter_failure_leaves_no_partial(tmp_path):
    """Deterministic version of what a Ctrl-C right after a video's commit sometimes hits: the next
    video's writer fails inside __enter__, after h5py created its .partial file."""
    store = FlowStore(tmp_path / "s", "a")
    writer = store.writer("cls/v", source="v.mp4", fps=25.0)
    assert isinstance(writer, VideoWriter)
    writer._attrs["unstorable"] = object()  # h5py raises TypeError storing it, inside __enter__
    with pytest.raises(TypeError):
        with writer:
            pass
    assert store.partials() == []
