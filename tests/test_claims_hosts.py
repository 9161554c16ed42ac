"""Claims and lock files of other machines: a lock file's waiter says who holds it and when it is
taken over (a dead host's lock file with ``FLOWKIT_COMMIT_LOCK=file`` kept every command silent for
10 minutes), and a machine with this host name but another boot id (cloned VMs, containers given
one ``--hostname``) is judged by heartbeat age, not by its pids (its live claims were taken over at
once, its partial files deleted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings

import pytest

from flowkit.errors import FlowkitError
from flowkit.files import host_name, on_this_machine, process_identity
from flowkit.store import FlowStore, claims
from flowkit.store.layout import STALE_CLAIM_SECONDS
from flowkit.train.runlock import RunLock

OTHER_BOOT = "11111111-2222-3333-4444-555555555555"


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def _twin(pid: int) -> dict:
    """A holder record of another machine with this host name (another boot) and process ``pid``."""
    return {"host": host_name(), "pid": pid, "since": "now", "start": 123, "boot": OTHER_BOOT}


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


# ----------------------------------------------------------------------------- lock waits say why

def test_a_long_lock_wait_says_once_who_holds_it_and_when_it_is_taken_over(tmp_path, monkeypatch):
    """A lock file of a dead host (fresh heartbeat) is waited for until it is 10 minutes old: the
    waiter says so once, after LOCK_NOTE_SECONDS, naming the holder and the minutes left."""
    monkeypatch.setattr(claims, "LOCK_NOTE_SECONDS", 0.1)
    monkeypatch.setattr(claims, "_noted", set())
    lock = tmp_path / ".commit.lock.claim"
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    _age(lock, 3 * 60)  # last beat 3 minutes ago (stale after 3 minutes and 0.4 s here)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with claims._lock_file(lock, stale_after=3 * 60 + 0.4):  # stale 0.4 s from now
            assert json.loads(lock.read_text())["pid"] == os.getpid()  # taken over
    notes = [str(w.message) for w in said]
    assert len(notes) == 1, notes
    assert "pid 4242 on node-17" in notes[0] and str(lock) in notes[0]
    assert "taken over in about 1 min if its heartbeat stays still" in notes[0]
    assert "delete the file" in notes[0]
    # a second long wait for the same lock file (a busy store's slow commits) says nothing more
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "later"}))
    _age(lock, 3 * 60)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with claims._lock_file(lock, stale_after=3 * 60 + 0.4):
            pass
    assert [str(w.message) for w in said] == []


def test_a_short_lock_wait_says_nothing(tmp_path, monkeypatch):
    """A lock held for a moment (a commit) is waited for silently."""
    monkeypatch.setenv(claims.LOCK_ENV, "file")
    held, go = threading.Event(), threading.Event()

    def hold():
        with claims.commit_lock(tmp_path):
            held.set()
            go.wait(10)
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        threading.Timer(0.05, go.set).start()
        with claims.commit_lock(tmp_path):
            pass
    holder.join(10)
    assert [str(w.message) for w in said] == []


# ----------------------------------------------------------------------------- same host name

def test_on_this_machine_needs_the_host_name_and_the_boot():
    mine = {"host": host_name(), "pid": 1, **process_identity()}
    assert on_this_machine(mine) and on_this_machine({"host": host_name(), "pid": 1})
    assert not on_this_machine({**mine, "host": "node-17"})
    if "boot" in process_identity():  # Linux
        assert not on_this_machine(_twin(1))


@pytest.mark.skipif("boot" not in process_identity(), reason="no boot id here (not Linux)")
def test_a_claim_of_another_machine_with_this_host_name_lives_by_its_heartbeat(tmp_path):
    """Its pid (dead here) says nothing: its fresh claim is live, its partial file kept; untouched
    for 10 minutes both are a dead writer's leftovers. A claim of another boot with this process's
    pid is not this process's either."""
    store = FlowStore(tmp_path / "s", "a")
    claim = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    claim.parent.mkdir(parents=True)
    pid = _dead_pid()
    partial = claim.with_name(f"v.h5.{host_name()}.{pid}.partial")
    claim.write_text(json.dumps(_twin(pid)))
    partial.write_bytes(b"written elsewhere")
    assert f"pid {pid} on {host_name()}" in store.claim("c/v", "tvl1")
    assert store.remove_partials() == [] and partial.exists()
    assert claims.release(claim.with_name("v.h5"), "tvl1", pid=pid) is False
    _age(claim, STALE_CLAIM_SECONDS + 30)  # no beat for 10.5 minutes: that writer is gone
    assert set(store.remove_partials()) == {claim, partial}
    claim.write_text(json.dumps(_twin(os.getpid())))  # my pid, another machine's
    assert f"pid {os.getpid()}" in store.claim("c/v", "tvl1")
    assert claims.release(claim.with_name("v.h5"), "tvl1") is False and claim.exists()


@pytest.mark.skipif("boot" not in process_identity(), reason="no boot id here (not Linux)")
def test_locks_and_run_locks_of_another_machine_with_this_host_name_live_by_heartbeat(
        tmp_path, monkeypatch):
    """The commit lock file, its break token and a run's lock follow the claims' rule."""
    monkeypatch.setenv(claims.LOCK_ENV, "file")
    pid = _dead_pid()
    lock = tmp_path / ".commit.lock.claim"
    lock.write_text(json.dumps(_twin(pid)))
    assert claims.break_lock_of(tmp_path / ".commit.lock", pid) is None and lock.exists()
    token = lock.with_name(lock.name + claims.BREAK_TOKEN)
    token.write_text(json.dumps(_twin(pid)))
    assert claims._take_token(token) is False  # another machine's breaker, fresh
    token.unlink()
    got = threading.Event()

    def take():
        with claims.commit_lock(tmp_path):
            got.set()
    taker = threading.Thread(target=take, daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the wait's note (tested above)
        taker.start()
        assert not got.wait(0.5)  # fresh: its holder may be alive
        _age(lock, STALE_CLAIM_SECONDS + 30)
        assert got.wait(10)
        taker.join(10)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps(_twin(pid)))
    with pytest.raises(FlowkitError, match="in use by another training"):
        RunLock(run)
    _age(run / ".lock", STALE_CLAIM_SECONDS + 30)
    RunLock(run).release()


@pytest.mark.skipif("boot" not in process_identity(), reason="no boot id here (not Linux)")
def test_a_lock_waiters_temporary_of_another_machine_with_this_host_name_is_kept(tmp_path):
    """A lock file's waiter links its temporary (its record) again and again: one of another
    machine of this host name is not a dead process's leftover; one recording this boot is."""
    from flowkit.files import remove_stale_temporaries

    store = FlowStore(tmp_path / "s", "a")
    pid = _dead_pid()
    videos = tmp_path / "s" / "videos"
    theirs = videos / f".commit.lock.claim.{host_name()}.{pid}.1234.tmp"
    theirs.write_text(json.dumps(_twin(pid)))
    assert store.remove_partials() == [] and remove_stale_temporaries(videos) == []
    mine = videos / f".commit.lock.claim.{host_name()}.{pid}.5678.tmp"
    mine.write_text(json.dumps({**_twin(pid), **process_identity()}))  # this boot: dead here
    assert store.remove_partials() == [mine] and theirs.exists()
