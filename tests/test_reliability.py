"""Reliability under faults, with real processes and real files: a full disk (a real 3-400 KB tmpfs
in a private mount namespace, and an injected ENOSPC), concurrent writers (two engines, two
identical runs, commits racing), damaged chunks (read errors name file and key, `info --deep`,
`train` in one line, `extract --redo`), hostile folders (link loops, a file reached twice, FIFOs,
non-UTF-8 names), rotation and variable frame rate, memory-bounded batches, and engine input checks.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from flowkit import feed
from flowkit.errors import DamagedDataError, EngineError, StoreWriteError
from flowkit.extract import ExtractConfig, default_workers, extract, usable_cores
from flowkit.feed import FeedOptions, batch_limit
from flowkit.flow import create_engine, engine_class
from flowkit.labels import scan_videos
from flowkit.samples import make_sample_videos
from flowkit.store import FlowStore
from flowkit.store import diskio, guard
from flowkit.video import iter_frames, write_video

from conftest import hang_hdf5, rotate_mp4
from test_store import damage_attributes

# Cheap TV-L1 (fixed schedule): a 7-pair 64x80 video takes well under a second on one core.
PARAMS = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 5,
          "early_stop": False}
CLI_PARAMS = [a for k, v in PARAMS.items() for a in ("--param", f"{k}={str(v).lower()}")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowkit", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def config(**kw) -> ExtractConfig:
    return ExtractConfig(engine_params=dict(PARAMS), workers=1, **kw)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """4 classes x 2 videos, 8 frames of 64x80."""
    root = tmp_path_factory.mktemp("rel_videos")
    make_sample_videos(root, classes=("pan_left", "pan_right", "zoom_in", "rotate_cw"),
                       videos_per_class=2, frames=8, size=(64, 80))
    return root


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.rglob("*")
                  if p.name.endswith((".partial", ".tmp", ".claim")))


# ----------------------------------------------------------------------------- disk full

def test_injected_enospc_stops_the_run_cleanly(videos, tmp_path, monkeypatch):
    """The second video's writes fail with ENOSPC: it gets one line naming the store, the run stops
    (the rest is not started, not failed), nothing is left behind, and a rerun completes."""
    items, classes = scan_videos(videos)
    real_init = diskio.LatchingFile.__init__
    victim = items[1].key.split("/")[1]

    class FullDisk:
        """The file under HDF5 on a disk that is full: every write fails with ENOSPC."""

        def __init__(self, raw):
            self.raw = raw

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.raw, name)

    def init(self, path, mode="w+b"):
        real_init(self, path, mode)
        if victim in self.path.name:
            self._raw = FullDisk(self._raw)

    monkeypatch.setattr(diskio.LatchingFile, "__init__", init)
    store = tmp_path / "store"
    summary = extract(items, store, config(), classes=classes)
    assert summary.stopped.startswith(f"no space left on {store}")
    assert [r.status for r in summary.results] == ["done", "failed"]
    assert "no space left on" in summary.results[1].reason
    assert summary.not_started == len(items) - 2
    assert leftovers(store) == [] and FlowStore(store).validate() == []
    monkeypatch.setattr(diskio.LatchingFile, "__init__", real_init)
    again = extract(items, store, config(), classes=classes)
    assert again.count("done") == len(items) - 1 and not again.stopped
    assert len(FlowStore(store).keys()) == len(items)


@pytest.mark.parametrize("code,says", [(errno.ENOSPC, "no space left on /data/store; free space"),
                                       (errno.EDQUOT, "disk quota exceeded on /data/store; free "
                                                      "space within your quota"),
                                       (errno.EROFS, "read-only file system: /data/store; choose "
                                                     "a writable -o")])
def test_storage_errors_name_the_store_and_the_fix(code, says):
    """A full disk, an exhausted quota (a cluster's home or scratch) or a read-only mount is a
    property of the store, not of one video: it becomes a StoreWriteError naming the store and
    what to do, which stops the run instead of failing every video one by one."""
    err = diskio.storage_error(OSError(code, os.strerror(code)), "/data/store")
    assert isinstance(err, StoreWriteError) and err.errno == code
    assert str(err).startswith(says)
    from_hdf5 = RuntimeError(f"Can't write data (file write failed: errno = {code}, ...)")
    assert str(diskio.storage_error(from_hdf5, "/data/store")).startswith(says)
    assert diskio.storage_error(OSError(errno.EIO, "I/O error"), "/data/store") is None


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` (user + mount namespaces) "
                    "to mount a private tmpfs; the injected-ENOSPC test covers the logic")
def test_full_tmpfs_no_segfault_summary_and_resume(videos, tmp_path):
    """A real 300 KB tmpfs: extract stops with exit 1 and 'no space left on STORE' (before: exit 139,
    h5py dumps); after the tmpfs grows, the same command completes. A store created on a full disk:
    one line, exit 2, no temporary left."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    extract_args = " ".join(["-m flowkit extract", str(videos), "--no-compile", "--workers 1",
                             "--json", *CLI_PARAMS])
    script = f"""
mount -t tmpfs -o size=300k tmpfs {mnt} || exit 99
run() {{ name=$1; shift; {sys.executable} "$@" > {out}/$name.out 2> {out}/$name.err; echo $? > {out}/$name.rc; }}
run full {extract_args} -o {mnt}/store
find {mnt} > {out}/full.ls
mount -o remount,size=20m {mnt}
run resumed {extract_args} -o {mnt}/store
run info -m flowkit info {mnt}/store --validate --deep
find {mnt} -name '*.partial' -o -name '*.tmp' -o -name '*.claim' > {out}/leftovers
mount -o remount,size=1m {mnt}
dd if=/dev/zero of={mnt}/fill bs=4k count=4096 2> /dev/null
run created {extract_args} -o {mnt}/store2
find {mnt}/store2 > {out}/created.ls 2>&1
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, timeout=900,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    read = lambda name: (out / name).read_text()
    first_err = read("full.err")
    assert read("full.rc").strip() == "1", first_err[-3000:]
    assert "Traceback" not in first_err and "Exception ignored" not in first_err
    summary = json.loads(read("full.out"))
    assert summary["stopped"].startswith(f"no space left on {mnt}/store")
    # How many videos fit before the disk is full depends on how many were in flight (partial
    # files) when it filled: every video is accounted for, at most the one met failed (the
    # injected-ENOSPC test above pins the counts).
    assert summary["done"] + summary["failed"] + summary["not_started"] == 8, summary
    assert summary["failed"] <= 1 and summary["done"] < 8, [v["reason"] for v in summary["videos"]]
    assert "stopped early: no space left on" in first_err
    assert not [line for line in read("full.ls").splitlines()
                if line.endswith((".partial", ".tmp", ".claim"))]
    assert read("resumed.rc").strip() == "0", read("resumed.err")[-3000:]
    resumed = json.loads(read("resumed.out"))
    assert resumed["skipped"] + resumed["done"] == 8 and resumed["failed"] == 0
    assert read("info.rc").strip() == "0" and read("leftovers") == ""
    assert read("created.rc").strip() == "2"
    created_err = read("created.err").strip().splitlines()
    assert created_err == [f"error: no space left on {mnt}/store2; free space (or choose another "
                           "-o), then rerun the same command to resume"]
    assert not [line for line in read("created.ls").splitlines() if line.endswith(".tmp")]


def test_stale_manifest_temporary_is_removed(tmp_path):
    store = FlowStore(tmp_path / "s", "a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    from flowkit.files import host_name
    stale = tmp_path / "s" / f"store.json.{host_name()}.{dead}.abc123.tmp"
    stale.write_bytes(b"")
    mine = tmp_path / "s" / f"store.json.{host_name()}.{os.getpid()}.xyz.tmp"
    mine.write_bytes(b"")
    claim = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": host_name(), "pid": int(dead), "since": "then"}))
    link = claim.with_name(f"{claim.name}.{host_name()}.{dead}.link.tmp")
    link.write_text("")
    removed = store.remove_partials()
    assert {stale, claim, link} <= set(removed) and mine.exists()
    assert not stale.exists() and not claim.exists() and not link.exists()


def test_another_hosts_manifest_temporary_is_left_alone(tmp_path):
    """On a shared file system a temporary named by another host is that host's, in flight: its
    pid means nothing here (dead here, it may be writing there), so it is never removed; removing
    it made the other host's rename of its manifest fail."""
    from flowkit.files import is_stale_temporary, remove_stale_temporaries

    store = FlowStore(tmp_path / "s", "a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    theirs = tmp_path / "s" / f"store.json.othernode.{dead}.abcd1234.tmp"
    theirs.write_text("{}")
    assert not is_stale_temporary(theirs.name)
    assert remove_stale_temporaries(tmp_path / "s") == [] and store.remove_partials() == []
    assert theirs.read_text() == "{}"


def test_files_follow_the_umask_for_a_shared_group(tmp_path):
    """A store (manifest, index, videos) and a checkpoint made under umask 002 are group-writable
    like any new file; the manifest and index were 0o600 (tempfile.mkstemp), so nobody else in a
    shared group could open a store another member made."""
    from flowkit.checkpoints import save_checkpoint

    old = os.umask(0o002)
    try:
        store = FlowStore(tmp_path / "s", "a")
        with _writer(store, "c/v") as w:
            w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
        store.metas(["c/v"])  # writes the index
        save_checkpoint(tmp_path / "run" / "last.pt", "classifier", {"epoch": 1})
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"store.json", "index.json", "v.h5", "last.pt"} <= {p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o664" for p in files}


# ----------------------------------------------------------------------------- concurrent writers

def _writer(store: FlowStore, key: str, frames: int = 5):
    return store.writer(key, source=f"{key}.mp4", fps=25.0, flow_codec="float16", rgb_codec="raw")


def test_two_engines_committing_at_once_keep_both_flows(tmp_path):
    """Both writers start before either video file exists; the second commit merges the first's
    flow instead of replacing the file (before: the video ended with only the second engine)."""
    store = FlowStore(tmp_path / "s", "a")
    rgb = np.zeros((5, 8, 8, 3), np.uint8)
    a, b = _writer(store, "c/v"), _writer(store, "c/v")
    b.partial = b.partial.with_name(b.partial.name.replace(".partial", "b.partial"))
    with a, b:
        a.append_rgb(rgb)
        a.append_flow("tvl1", np.ones((4, 2, 8, 8), np.float32), {"engine": "tvl1", "version": "1", "params": {}})
        b.append_flow("costvolume", np.full((4, 2, 8, 8), 2, np.float32),
                      {"engine": "costvolume", "version": "1", "params": {}})
    assert store.flow_names("c/v") == ["costvolume", "tvl1"]
    assert store.read_rgb("c/v").shape == (5, 8, 8, 3)
    np.testing.assert_array_equal(store.read_flow("c/v", "tvl1"), 1)
    np.testing.assert_array_equal(store.read_flow("c/v", "costvolume"), 2)
    assert store.validate(deep=True) == []


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_two_processes_merging_into_one_video_at_once_keep_both_flows(tmp_path, monkeypatch):
    """Two processes (two engines) commit into a finished video at the same moment, each merge
    slowed: the commit lock makes the second merge the first's result, so the video ends with both
    flows. Unlocked, both merged the same old file and the last rename dropped the other's flow.
    Each merge waits (up to 1 s) for the other's, so an unlocked pair certainly overlaps."""
    import multiprocessing

    from flowkit.store import writer

    store = FlowStore(tmp_path / "s", "a")
    with _writer(store, "c/v") as w:
        w.append_rgb(np.full((5, 8, 8, 3), 7, np.uint8))
    marks = tmp_path / "marks"
    marks.mkdir()
    real_commit, real_merge = writer.VideoWriter._commit, writer.VideoWriter._merge_finished

    def other(engine: str) -> str:
        return "tvnet" if engine == "tvl1" else "tvl1"

    def commit(self):  # both processes reach their commit before either takes the lock
        (marks / f"ready.{self.test_engine}").touch()
        _wait_for(marks / f"ready.{other(self.test_engine)}", 10)
        real_commit(self)

    def slow_merge(self):  # a merge that takes a while (a big finished file, a slow disk)
        real_merge(self)
        (marks / f"merged.{self.test_engine}").touch()
        _wait_for(marks / f"merged.{other(self.test_engine)}", 1)

    monkeypatch.setattr(writer.VideoWriter, "_commit", commit)
    monkeypatch.setattr(writer.VideoWriter, "_merge_finished", slow_merge)

    def extract_one(engine: str, value: float) -> None:
        w = _writer(FlowStore(tmp_path / "s", "a"), "c/v")
        w.test_engine = engine  # which process this is
        with w:
            w.append_flow(engine, np.full((4, 2, 8, 8), value, np.float32),
                          {"engine": engine, "version": "1", "params": {}})

    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=extract_one, args=a) for a in (("tvl1", 1.0), ("tvnet", 2.0))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    reader = FlowStore(tmp_path / "s")
    assert reader.flow_names("c/v") == ["tvl1", "tvnet"]
    np.testing.assert_array_equal(reader.read_flow("c/v", "tvl1"), 1)
    np.testing.assert_array_equal(reader.read_flow("c/v", "tvnet"), 2)
    np.testing.assert_array_equal(reader.read_rgb("c/v"), 7)
    assert leftovers(tmp_path / "s") == []


def test_commit_refuses_a_video_stored_at_another_size(tmp_path):
    store = FlowStore(tmp_path / "s", "a")
    with _writer(store, "c/v") as w:
        w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
    with pytest.raises(Exception, match=r"already in the store with 5 frames of 8x8.*--redo c/v"):
        with _writer(store, "c/v") as w:
            w.append_flow("tvl1", np.zeros((3, 2, 8, 8), np.float32), {"engine": "tvl1", "version": "1", "params": {}})
    assert store.partials() == []


def test_claims_live_holder_and_stale_takeover(tmp_path):
    store = FlowStore(tmp_path / "s", "a")
    code = ("import sys, time; from flowkit.store import FlowStore; "
            "s = FlowStore(sys.argv[1], 'a'); print(s.claim('c/v', 'tvl1'), flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s")], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "None"
        busy = store.claim("c/v", "tvl1")
        assert busy and f"pid {holder.pid}" in busy
        assert store.claim("c/v", "costvolume") is None  # another engine: its own claim
    finally:
        holder.kill()
        holder.wait()
    assert store.claim("c/v", "tvl1") is None  # its holder died: taken over
    store.release("c/v", "tvl1")
    store.release("c/v", "costvolume")
    assert leftovers(tmp_path / "s") == []


def test_a_claim_of_an_earlier_process_given_the_same_pid_is_stale(tmp_path):
    """A container restarted under the same host name numbers its processes alike: the old run's
    claims name pids that the new run's processes now have. Such a claim was taken for live (its
    pid runs), so the video was skipped as "being extracted by" that process, on every rerun. The
    claim records its process's start time and the host's boot: a live pid that started at
    another time is another process. A boot that is not this one is another machine of this host
    name (tests/test_claims_hosts.py): its fresh claim is live. A claim of an older flowkit (no
    start time) keeps the pid rule."""
    from flowkit.files import host_name, process_identity, process_start

    store = FlowStore(tmp_path / "s", "a")
    claim = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    claim.parent.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])  # the live process that got the old pid
    try:
        start = process_start(sleeper.pid)
        assert start is not None and process_identity()["start"] == process_start(os.getpid())
        mine = {"host": host_name(), "pid": sleeper.pid, "since": "then"}
        for identity, held in (({"start": start}, True), ({}, True),
                               ({"start": start - 1}, False),
                               ({"start": start, "boot": "another-boot"}, True)):
            claim.write_text(json.dumps({**mine, **identity}))
            busy = store.claim("c/v", "tvl1")
            assert (busy is not None) == held, (identity, busy)
            if held:
                assert f"pid {sleeper.pid}" in busy and store.remove_partials() == []
            else:  # taken over, recording this process
                assert json.loads(claim.read_text())["start"] == process_start(os.getpid())
                store.release("c/v", "tvl1")
        claim.write_text(json.dumps({**mine, "start": start - 1}))
        assert store.remove_partials() == [claim]  # a leftover too
    finally:
        sleeper.kill()
        sleeper.wait()


def test_claims_of_another_host_live_by_heartbeat_stale_after_ten_minutes(tmp_path):
    """A claim from another host is live while its holder's heartbeat touches it; untouched for
    STALE_CLAIM_SECONDS (the holder or its host died) it is taken over, and removed as a leftover."""
    from flowkit.store.layout import STALE_CLAIM_SECONDS

    store = FlowStore(tmp_path / "s", "a")
    foreign = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    assert "pid 4242 on node-17" in store.claim("c/v", "tvl1")  # fresh: its holder is alive
    now = foreign.stat().st_mtime
    os.utime(foreign, (now - STALE_CLAIM_SECONDS + 30,) * 2)  # last beat 9.5 minutes ago
    assert "node-17" in store.claim("c/v", "tvl1") and store.remove_partials() == []
    os.utime(foreign, (now - STALE_CLAIM_SECONDS - 30,) * 2)  # no beat for 10.5 minutes
    assert store.claim("c/v", "tvl1") is None  # taken over
    assert json.loads(foreign.read_text())["pid"] == os.getpid()
    store.release("c/v", "tvl1")
    assert not foreign.exists()
    # the holder's heartbeat keeps its claim fresh for the other hosts (a real process, its
    # heartbeat shortened to 0.1 s)
    code = ("import sys, time; from flowkit.store import FlowStore, claims; "
            "claims.HEARTBEAT_SECONDS = 0.1; s = FlowStore(sys.argv[1], 'a'); "
            "print(s.claim('c/h', 'tvl1'), flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s")], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    held = tmp_path / "s" / "videos" / "c" / "h.h5.tvl1.claim"
    try:
        assert holder.stdout.readline().strip() == "None"
        os.utime(held, (1.0, 1.0))
        deadline = time.time() + 20
        while held.stat().st_mtime < now - 60 and time.time() < deadline:
            time.sleep(0.05)
        assert held.stat().st_mtime >= now - 60, "the heartbeat did not touch the claim"
    finally:
        holder.kill()
        holder.wait()
    assert store.claim("c/h", "tvl1") is None  # its holder died: taken over
    store.release("c/h", "tvl1")
    assert leftovers(tmp_path / "s") == []
    # a dead foreign holder's claim is a leftover for remove_partials
    foreign.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    os.utime(foreign, (now - STALE_CLAIM_SECONDS - 30,) * 2)
    assert store.remove_partials() == [foreign]


def test_a_claim_of_another_host_with_my_pid_is_not_mine(tmp_path):
    """Pids repeat across hosts (every container's first process is pid 1): a fresh claim held on
    another host by a process that has this process's pid is that host's, not ours. Taken for
    ours, two hosts extracted the same video at once."""
    store = FlowStore(tmp_path / "s", "a")
    theirs = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    theirs.parent.mkdir(parents=True)
    held = {"host": "othernode", "pid": os.getpid(), "since": "now"}
    theirs.write_text(json.dumps(held))
    busy = store.claim("c/v", "tvl1")
    assert busy and f"pid {os.getpid()} on othernode" in busy
    assert json.loads(theirs.read_text()) == held  # still theirs


def test_remove_partials_keeps_a_stale_claim_taken_over_meanwhile(tmp_path, monkeypatch):
    """remove_partials judges a stale claim again under the commit lock, as a taker takes it
    over: a writer that took the claim over between the look and the delete keeps its live
    claim (deleting it let a third writer compute the video again). The commit lock's own lock
    file, stale, is broken by the lock's rule, not under itself."""
    import contextlib

    from flowkit.store import claims
    from flowkit.store.layout import STALE_CLAIM_SECONDS

    store = FlowStore(tmp_path / "s", "a")
    stale = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    old = time.time() - STALE_CLAIM_SECONDS - 30
    os.utime(stale, (old, old))
    taker = {"host": "node-18", "pid": 77, "since": "now"}
    locked = claims.commit_lock

    @contextlib.contextmanager
    def racing_taker(videos):
        with locked(videos):  # node-18 took the claim over just before this process locked
            stale.write_text(json.dumps(taker))
            yield

    monkeypatch.setattr(claims, "commit_lock", racing_taker)
    assert store.remove_partials() == []
    assert json.loads(stale.read_text()) == taker
    monkeypatch.setattr(claims, "commit_lock", locked)
    lock = tmp_path / "s" / "videos" / ".commit.lock.claim"
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "thread": 1, "since": "then"}))
    os.utime(lock, (old, old))
    assert store.remove_partials() == [lock] and not lock.exists()


def test_remove_partials_leaves_what_a_read_only_store_refuses(tmp_path, monkeypatch):
    """On a read-only store a killed run's leftovers cannot be deleted: the commit lock a stale
    claim is judged under cannot be opened, a dead writer's partial cannot be unlinked. They are
    left (readers ignore them) and the run goes on, as it does on a read-only store without
    leftovers; it crashed with a PermissionError traceback."""
    import contextlib

    from flowkit.files import host_name
    from flowkit.store import claims

    store = FlowStore(tmp_path / "s", "a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    claim = tmp_path / "s" / "videos" / "c" / "v.h5.tvl1.claim"
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": host_name(), "pid": int(dead), "since": "then"}))
    partial = claim.with_name(f"v.h5.{host_name()}.{dead}.partial")
    partial.write_bytes(b"")

    @contextlib.contextmanager
    def refused_lock(videos):  # what os.open(O_RDWR | O_CREAT) of .commit.lock says there
        raise PermissionError(errno.EACCES, "Permission denied", str(videos / ".commit.lock"))
        yield

    def refused_unlink(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(claims, "commit_lock", refused_lock)
    monkeypatch.setattr(Path, "unlink", refused_unlink)
    assert store.remove_partials() == []
    monkeypatch.undo()
    assert claim.exists() and partial.exists()
    assert set(store.remove_partials()) == {claim, partial}  # writable again: removed


def _count_under_lock(videos: Path, counter: Path, rounds: int) -> None:
    """Read-modify-write ``counter`` ``rounds`` times under the commit lock, slowly enough that an
    unlocked pair of writers would lose updates."""
    from flowkit.store.claims import commit_lock

    for _ in range(rounds):
        with commit_lock(videos):
            n = int(counter.read_text())
            time.sleep(0.002)
            counter.write_text(str(n + 1))


@pytest.mark.parametrize("how", ["no flock (ENOSYS)", "FLOWKIT_COMMIT_LOCK=file"])
def test_commit_lock_without_flock_is_a_lock_file_that_excludes(tmp_path, monkeypatch, how):
    """Lustre without -o flock answers flock with ENOSYS (some NFS / FUSE mounts EOPNOTSUPP or
    ENOLCK): commits then lock with a linked lock file, which excludes other processes and other
    threads, and leaves nothing behind. FLOWKIT_COMMIT_LOCK=file picks it where flock works only
    on each host (NFS mounted nolock)."""
    import fcntl
    import threading

    from flowkit.store import claims

    if how.startswith("no flock"):
        def no_flock(fd, op):
            raise OSError(errno.ENOSYS, "Function not implemented")
        monkeypatch.setattr(fcntl, "flock", no_flock)
        env = {**ENV, "FLOWKIT_TEST_NO_FLOCK": "1"}
    else:
        monkeypatch.setenv(claims.LOCK_ENV, "file")
        env = {**ENV, claims.LOCK_ENV: "file"}
    store = FlowStore(tmp_path / "s", "a")
    with _writer(store, "c/v") as w:  # a commit through the lock file
        w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
    assert store.keys() == ["c/v"]
    videos, counter = tmp_path / "s" / "videos", tmp_path / "count"
    counter.write_text("0")
    code = ("import errno, fcntl, os, sys, time\n"
            "if os.environ.get('FLOWKIT_TEST_NO_FLOCK'):\n"
            "    def no(fd, op): raise OSError(errno.ENOSYS, 'no flock')\n"
            "    fcntl.flock = no\n"
            "sys.path.insert(0, sys.argv[3])\n"
            "from test_reliability import _count_under_lock\n"
            "from pathlib import Path\n"
            "_count_under_lock(Path(sys.argv[1]), Path(sys.argv[2]), 40)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(videos), str(counter),
                              str(Path(__file__).parent)], env=env)
    threads = [threading.Thread(target=_count_under_lock, args=(videos, counter, 40))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other.wait(timeout=120) == 0
    assert int(counter.read_text()) == 120  # no update lost between processes or threads
    assert leftovers(tmp_path / "s") == []


def test_commit_lock_file_of_a_dead_holder_is_broken(tmp_path, monkeypatch):
    """A lock file whose holder died (this host: its pid is gone; another host: untouched for
    STALE_CLAIM_SECONDS) is broken; a live foreign holder's is waited for."""
    import threading

    from flowkit.store import claims
    from flowkit.store.layout import STALE_CLAIM_SECONDS

    monkeypatch.setenv(claims.LOCK_ENV, "file")
    videos = tmp_path / "videos"
    videos.mkdir()
    lock = videos / ".commit.lock.claim"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    lock.write_text(json.dumps({"host": claims.host_name(), "pid": int(dead), "since": "then"}))
    with claims.commit_lock(videos):  # this host, pid gone: broken at once
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    got = threading.Event()

    def take():
        with claims.commit_lock(videos):
            got.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert not got.wait(0.5)  # fresh: node-17's holder may be alive
    old = time.time() - STALE_CLAIM_SECONDS - 30
    os.utime(lock, (old, old))  # no heartbeat for 10.5 minutes: its holder is gone
    assert got.wait(10)
    taker.join(10)
    assert not lock.exists()


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def test_breaking_a_dead_lock_never_removes_a_live_one_taken_meanwhile(tmp_path, monkeypatch):
    """Three processes at a lock file: C judged the dead holder's lock stale, but B broke it first
    and D took the lock. C's break must leave D's lock alone, even if E tries to link its own at
    the moment C acts (the old break renamed D's lock aside to check it, E linked into the gap,
    D's lock was lost and D and E both held the lock)."""
    from flowkit.store import claims

    lock = tmp_path / ".commit.lock.claim"
    dead = {"host": claims.host_name(), "pid": _dead_pid(), "thread": 1, "since": "then"}
    live = {"host": claims.host_name(), "pid": os.getpid(), "thread": 2, "since": "now",
            **claims.process_identity()}
    lock.write_text(json.dumps(live))  # D's lock: the dead one was broken meanwhile
    intruder = {"host": claims.host_name(), "pid": os.getpid(), "thread": 3, "since": "now"}
    rename = os.rename

    def rename_then_intrude(src, dst):  # E links its lock the moment the path is free
        rename(src, dst)
        if not lock.exists():
            lock.write_text(json.dumps(intruder))
    monkeypatch.setattr(os, "rename", rename_then_intrude)
    assert claims._break(lock, dead) is False
    assert json.loads(lock.read_text()) == live
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.name]


def test_breakers_take_turns_and_a_dead_breakers_token_is_dropped(tmp_path):
    """A break token held by a live breaker makes others wait (no break); one left by a breaker
    that died is dropped, and the dead holder's lock is broken."""
    from flowkit.store import claims

    lock = tmp_path / ".commit.lock.claim"
    token = tmp_path / f"{lock.name}{claims.BREAK_TOKEN}"
    dead = {"host": claims.host_name(), "pid": _dead_pid(), "thread": 1, "since": "then"}
    lock.write_text(json.dumps(dead))
    token.write_text(json.dumps({"host": claims.host_name(), "pid": os.getpid(), "thread": 9,
                                 "since": "now", **claims.process_identity()}))
    assert claims._break(lock, dead) is False and lock.exists()  # another breaker is at it
    token.write_text(json.dumps({**dead, "thread": 2}))  # that breaker died mid-break
    assert claims._break(lock, dead) is True
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_concurrent_processes_two_engines_and_identical_runs(videos, tmp_path):
    """Real processes: tvl1 and costvolume at once on one store (every video ends with both), and two
    identical runs at once (every video computed exactly once between them)."""
    store = tmp_path / "engines"
    base = ["-m", "flowkit", "extract", videos, "-o", store, "--no-compile", "--workers", "1",
            "--json"]
    runs = [subprocess.Popen([sys.executable, *map(str, base), *extra], env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for extra in (CLI_PARAMS, ["--method", "costvolume"])]
    outs = [r.communicate(timeout=900) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for _, e in outs]
    fs = FlowStore(store)
    assert len(fs.keys()) == 8
    assert all(fs.flow_names(k) == ["costvolume", "tvl1"] for k in fs.keys())
    assert fs.validate(deep=True) == [] and leftovers(store) == []

    store = tmp_path / "same"
    runs = [subprocess.Popen([sys.executable, *map(str, base[:5]), store, *map(str, base[6:]),
                              *CLI_PARAMS], env=ENV, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for _ in range(2)]
    outs = [r.communicate(timeout=900) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [e[-2000:] for _, e in outs]
    done = [{v["key"] for v in json.loads(o)["videos"] if v["status"] == "done"} for o, _ in outs]
    assert not done[0] & done[1], f"computed twice: {done[0] & done[1]}"
    assert len(done[0] | done[1]) == 8 and len(FlowStore(store).keys()) == 8
    reasons = [v["reason"] for o, _ in outs for v in json.loads(o)["videos"] if v["status"] == "skipped"]
    assert all("being extracted by pid" in r or "already in the store" in r for r in reasons)


# ----------------------------------------------------------------------------- damaged chunks

def _damage_flow_chunk(path: Path, index: int = 2, name: str = "flow/tvl1") -> None:
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(index)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(np.random.default_rng(0).integers(0, 256, info.size, np.uint8).tobytes())


def test_damaged_chunk_is_named_by_reads_deep_validate_and_train(tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    key = "down/down_1"
    path = store / "videos" / f"{key}.h5"
    _damage_flow_chunk(path)
    fs = FlowStore(store)
    with pytest.raises(DamagedDataError) as err:
        fs.read_flow(key, "tvl1")
    assert str(path) in str(err.value) and f"--redo {key}" in str(err.value)
    assert "/flow/tvl1" in str(err.value)
    info = cli("info", store, "--validate", "--deep")
    assert info.returncode == 1 and f"{key}.h5" in info.stdout + info.stderr
    assert "/flow/tvl1" in info.stdout + info.stderr
    for workers in ("0", "1"):
        run = cli("train", store, "--out", tmp_path / f"run{workers}", "--model", "resnet2d",
                  "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]", "--model-arg",
                  "modality=flow", "--frames", "8", "--size", "16", "--batch-size", "12",
                  "--val-fraction", "0", "--epochs", "1", "--workers", workers, "--device", "cpu")
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2, run.stderr[-3000:]
        assert "Traceback" not in run.stderr
        assert lines[-1].startswith("error: ") and key in lines[-1] and f"--redo {key}" in lines[-1]


def test_redo_keeps_only_what_still_decodes(tmp_path):
    """--redo of one engine's flow: the old file's other datasets are kept where they decode,
    a damaged one is dropped and named."""
    store = FlowStore(tmp_path / "s", "a")
    record = {"version": "1", "params": {}}
    with _writer(store, "c/v") as w:
        w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
        for name in ("tvl1", "costvolume", "tvnet"):
            w.append_flow(name, np.ones((4, 2, 8, 8), np.float32), {"engine": name, **record})
    _damage_flow_chunk(tmp_path / "s" / "videos" / "c" / "v.h5", name="flow/costvolume")
    w = store.writer("c/v", source="c/v.mp4", fps=25.0, flow_codec="float16", rgb_codec="raw",
                     redo=True)
    with w:
        w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
        w.append_flow("tvl1", np.full((4, 2, 8, 8), 3, np.float32), {"engine": "tvl1", **record})
    assert [(d.name, d.damaged) for d in w.dropped] == [("flow/costvolume", True)]
    assert FlowStore(tmp_path / "s").flow_names("c/v") == ["tvl1", "tvnet"]
    assert FlowStore(tmp_path / "s").validate(deep=True) == []


@pytest.mark.slow
def test_redo_repairs_a_damaged_video(videos, tmp_path):
    store = tmp_path / "store"
    items, classes = scan_videos(videos)
    items = items[:2]
    extract(items, store, config(flow_codec="float16", rgb_codec="raw"), classes=classes)
    key = items[0].key
    _damage_flow_chunk(store / "videos" / f"{key}.h5")
    assert any("/flow/tvl1" in p for p in FlowStore(store).validate(deep=True))
    again = extract(items, store, config(flow_codec="float16", rgb_codec="raw", redo=(key,)),
                    classes=classes)
    assert [r.status for r in again.results] == ["done", "skipped"]
    assert FlowStore(store).validate(deep=True) == []
    with pytest.raises(Exception, match="--redo nope/nope: no video with that key"):
        extract(items, store, config(flow_codec="float16", rgb_codec="raw", redo=("nope/nope",)),
                classes=classes)


@pytest.mark.slow
@pytest.mark.parametrize("damage,method", [("hang", "tvl1"), ("flow header", "tvl1"),
                                           ("flow attributes", "tvl1"),
                                           ("flow attributes", "costvolume")])
def test_extraction_fails_a_damaged_finished_file_before_computing_it(videos, tmp_path,
                                                                      monkeypatch, damage, method):
    """A finished file HDF5 never returns from, or whose ``flow`` group header or ``flow/tvl1``
    attributes are damaged: committing new flow into it would fail, so extraction fails the video
    at once (its frames never decoded), naming the file and ``--redo``; ``--redo`` replaces it.
    Before, a hung file hung the run and a damaged one was computed in full, then failed at
    commit; damaged attributes went unseen: extracting that flow again skipped the video as
    "finished by another process" (exit 0), another engine computed it, then failed at commit."""
    monkeypatch.setattr(guard, "_failed", {})
    monkeypatch.setenv("FLOWKIT_HANG_SECONDS", "2")
    store = tmp_path / "store"
    items, classes = scan_videos(videos)
    items = items[:2]
    extract(items, store, config(flow_codec="float16", rgb_codec="raw"), classes=classes)
    key = items[0].key
    path = store / "videos" / f"{key}.h5"
    if damage == "hang":
        hang_hdf5(path)
    elif damage == "flow header":
        _damage_header(path, "flow")
    else:
        damage_attributes(path, "flow/tvl1")
    decoded = []  # the videos whose decoding started (feed.run binds decode_video as a default)
    start_decoding = feed._decode
    monkeypatch.setattr(feed, "_decode", lambda job, opts, decode: (
        decoded.append(job.item.key), start_decoding(job, opts, decode))[1])

    def run(**kw):
        if method == "tvl1":
            return extract(items, store, config(flow_codec="float16", rgb_codec="raw", **kw),
                           classes=classes)
        return extract(items, store, ExtractConfig(method=method, workers=1, flow_codec="float16",
                                                   rgb_codec="raw", **kw), classes=classes)
    again = run()
    [failed] = [r for r in again.results if r.status == "failed"]
    assert failed.key == key and decoded == ([] if method == "tvl1" else [items[1].key]), \
        (again.results, decoded)
    assert failed.reason.startswith(str(path)) and failed.reason.endswith(f"--redo {key}")
    assert {"hang": "HDF5 did not return within 2 s", "flow header": "/flow of video",
            "flow attributes": "/flow/tvl1 attributes of video"}[damage] in failed.reason
    assert "another process" not in failed.reason
    repaired = run(redo=(key,))
    assert [r.status for r in repaired.results] == ["done", "skipped"]
    assert FlowStore(store).validate() == []


@pytest.mark.slow
def test_extraction_workers_are_told_of_a_hung_file(videos, tmp_path):
    """The run found the file hung while indexing; its worker processes must not open it (they
    would hang with it): the video fails with the reason and the run ends."""
    store = tmp_path / "store"
    items, classes = scan_videos(videos)
    extract(items, store, config(flow_codec="float16"), classes=classes)
    key = items[0].key
    hang_hdf5(store / "videos" / f"{key}.h5")
    run = subprocess.run([sys.executable, "-m", "flowkit", "extract", str(videos), "-o",
                          str(store), *CLI_PARAMS, "--flow-codec", "float16", "--workers", "2"],
                         capture_output=True, text=True, timeout=300,
                         env={**ENV, "FLOWKIT_HANG_SECONDS": "2"})
    assert run.returncode == 1, run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert "HDF5 did not return within 2 s" in out and f"--redo {key}" in out
    assert "Traceback" not in out


def _damage_header(path: Path, name: str = "flow") -> None:
    """Break the object header of ``name`` (its version byte): the file still opens and links
    ``name``, but opening it fails ("bad object header version number"), which h5py raises as the
    KeyError of an absent name."""
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f[name].id).addr
    with open(path, "r+b") as raw:
        raw.seek(addr)
        at = addr + 4 if raw.read(4) == b"OHDR" else addr
        raw.seek(at)
        raw.write(b"\x07")


def test_damaged_flow_group_is_named_by_validate_reads_and_train(tiny_store, tmp_path):
    """A video whose ``flow`` group header is damaged: `info --validate` (shallow too) names the
    file and the group, exit 1; a read and `train` stop with one line naming the video and
    ``--redo``, whether the index still holds the video's facts (bit rot leaves the file's stamp
    as it was) or not; before, validate said "valid" and train "has no flow", advising an
    extraction that failed."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    key = "down/down_1"
    path = store / "videos" / f"{key}.h5"
    FlowStore(store).summary()  # indexed while intact
    stamp = path.stat()
    _damage_header(path, "flow")
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert "tvl1" in FlowStore(store).metas([key])[key]["flows"]  # the index serves it
    with pytest.raises(DamagedDataError) as err:
        FlowStore(store).read_flow(key, "tvl1")
    line = str(err.value)
    assert line.startswith(f"{path}: /flow of video {key!r} cannot be opened, it is damaged (")
    assert line.endswith(f"--redo {key}")

    def train(workers: str) -> None:
        run = cli("train", store, "--out", tmp_path / f"run{workers}", "--model", "resnet2d",
                  "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]", "--model-arg",
                  "modality=flow", "--frames", "8", "--size", "16", "--batch-size", "12",
                  "--val-fraction", "0", "--epochs", "1", "--workers", workers, "--device", "cpu")
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
        assert lines[-1] == f"error: {line}" and "has no flow" not in run.stderr

    train("1")  # the DataLoader worker's read finds it
    path.touch()  # a new stamp: indexed again, an unreadable video
    for deep in ([], ["--deep"]):
        info = cli("info", store, "--validate", *deep, "--json")
        assert info.returncode == 1, info.stdout + info.stderr
        summary = json.loads(info.stdout)
        assert summary["unreadable"] == 1 and summary["flow_pairs"] == {"tvl1": 11 * 9}
        assert summary["problems"] == [line.removeprefix(f"{store}/")] \
            == [f"videos/{key}.h5: /flow of video {key!r} cannot be opened, it is damaged (Unable "
                "to synchronously open object (bad object header version number)); re-extract "
                f"it: flowkit extract VIDEO_DIR -o STORE --redo {key}"]
    train("0")  # the dataset's metadata (meta() of a video the index leaves out) finds it


@pytest.mark.parametrize("name", ["/", "flow", "flow/tvnet"])
def test_commit_over_a_damaged_header_names_redo_and_redo_drops_it(tmp_path, name):
    """Committing into a video whose finished file has a damaged root, flow group or dataset
    header: without redo a DamagedDataError naming --redo, the finished file left alone; with
    redo what cannot be opened is dropped and named, what opens is kept (the RGB frames)."""
    store = FlowStore(tmp_path / "s", "a")
    record = {"version": "1", "params": {}}
    with _writer(store, "c/v") as w:
        w.append_rgb(np.full((5, 8, 8, 3), 7, np.uint8))
        for engine in ("tvl1", "tvnet"):
            w.append_flow(engine, np.ones((4, 2, 8, 8), np.float32), {"engine": engine, **record})
    final = tmp_path / "s" / "videos" / "c" / "v.h5"
    _damage_header(final, name)
    before = final.read_bytes()
    shown = "/" if name == "/" else f"/{name}"
    # a damaged tvnet: the redo that computes tvnet (--redo alone would compute tvl1, drop it)
    # (its record unreadable, whether it was imported cannot be told: the import's repair too)
    method = (r" --method tvnet, with the options it was extracted with \(flowkit info shows "
              r"them\), or if it was imported \(flowkit import rawframes\), delete the video's "
              r"file and rerun the import with --flow-name tvnet") if name == "flow/tvnet" else ""
    with pytest.raises(DamagedDataError, match=rf"^{final}: {shown} of video 'c/v' cannot be "
                                               r"opened, it is damaged \(.*object header.*"
                                               rf"--redo c/v{method}$"):
        with _writer(store, "c/v") as w:
            w.append_flow("costvolume", np.ones((4, 2, 8, 8), np.float32),
                          {"engine": "costvolume", **record})
    assert final.read_bytes() == before and store.partials() == []
    w = store.writer("c/v", source="c/v.mp4", fps=25.0, flow_codec="float16", rgb_codec="raw",
                     redo=True)
    with w:
        w.append_flow("tvl1", np.full((4, 2, 8, 8), 3, np.float32), {"engine": "tvl1", **record})
    assert len(w.dropped) == 1
    assert w.dropped[0].damaged and \
        str(w.dropped[0]).startswith(f"{'v.h5' if name == '/' else name} (damaged: "), w.dropped
    reader = FlowStore(tmp_path / "s")
    assert reader.flow_names("c/v") == ["tvl1"]
    if name != "/":
        np.testing.assert_array_equal(reader.read_rgb("c/v"), 7)
    np.testing.assert_array_equal(reader.read_flow("c/v", "tvl1"), 3)
    assert reader.validate(deep=True) == []


def test_commit_over_a_truncated_file_names_redo_and_keeps_it(tmp_path):
    """A finished file that HDF5 cannot open at all (truncated by an interrupted copy): a commit
    into it without redo stops with a DamagedDataError naming --redo and leaves the file as it was
    (the user may still recover it from a backup); it never silently replaces the video by one
    holding only the new flow."""
    store = FlowStore(tmp_path / "s", "a")
    record = {"version": "1", "params": {}}
    with _writer(store, "c/v") as w:
        w.append_rgb(np.full((5, 8, 8, 3), 7, np.uint8))
        w.append_flow("tvl1", np.ones((4, 2, 8, 8), np.float32), {"engine": "tvl1", **record})
    final = tmp_path / "s" / "videos" / "c" / "v.h5"
    final.write_bytes(final.read_bytes()[:3000])
    before = final.read_bytes()
    with pytest.raises(DamagedDataError, match=rf"^{final}: cannot be read as HDF5 \(.*truncated"
                                               r".*--redo c/v$"):
        with _writer(store, "c/v") as w:
            w.append_flow("tvnet", np.ones((4, 2, 8, 8), np.float32), {"engine": "tvnet", **record})
    assert final.read_bytes() == before and store.partials() == []


def test_redo_drops_a_flow_whose_copy_fails_half_way(tmp_path, monkeypatch):
    """With redo, HDF5 failing in the middle of copying a kept flow (a bad checksum) drops that
    flow whole: the half-made copy is deleted, so the committed file holds only what is sound and
    validates clean (not an empty ``flow/tvl1`` that reads fail on)."""
    store = FlowStore(tmp_path / "s", "a")
    record = {"version": "1", "params": {}}
    with _writer(store, "c/v") as w:
        w.append_rgb(np.full((5, 8, 8, 3), 7, np.uint8))
        w.append_flow("tvl1", np.ones((4, 2, 8, 8), np.float32), {"engine": "tvl1", **record})
    real = h5py.Group.copy

    def failing_copy(self, source, dest, name=None, **kw):
        if name == "tvl1":  # the target made, then HDF5 fails reading the source
            dest.create_dataset(name, shape=(0,), dtype="f4")
            raise OSError("Can't read data (bad checksum)")
        return real(self, source, dest, name=name, **kw)

    monkeypatch.setattr(h5py.Group, "copy", failing_copy)
    w = store.writer("c/v", source="c/v.mp4", fps=25.0, flow_codec="float16", rgb_codec="raw",
                     redo=True)
    with w:
        w.append_flow("tvnet", np.full((4, 2, 8, 8), 2, np.float32), {"engine": "tvnet", **record})
    monkeypatch.setattr(h5py.Group, "copy", real)
    assert [str(d) for d in w.dropped] == [
        "flow/tvl1 (damaged: Can't read data (bad checksum)); compute it again: flowkit extract "
        "VIDEO_DIR -o STORE, with the options it was extracted with (flowkit info shows them)"]
    with h5py.File(tmp_path / "s" / "videos" / "c" / "v.h5", "r") as f:
        assert list(f["flow"]) == ["tvnet"]
    reader = FlowStore(tmp_path / "s")
    assert reader.flow_names("c/v") == ["tvnet"]
    np.testing.assert_array_equal(reader.read_rgb("c/v"), 7)
    assert reader.validate(deep=True) == []


def test_extract_over_a_damaged_flow_group_fails_naming_redo_and_redo_repairs(videos, tmp_path):
    """Extraction's resume check: a video whose flow group cannot be opened is damaged, not
    missing its flow: the run fails it with one line naming --redo (before: "Unable to
    synchronously copy object"), and --redo recomputes it."""
    store = tmp_path / "store"
    items, classes = scan_videos(videos)
    items = items[:1]
    key = items[0].key
    extract(items, store, config(flow_codec="float16", rgb_codec="raw"), classes=classes)
    _damage_header(store / "videos" / f"{key}.h5", "flow")
    again = extract(items, store, config(flow_codec="float16", rgb_codec="raw"), classes=classes)
    [result] = again.results
    assert result.status == "failed", result
    assert f"/flow of video {key!r} cannot be opened, it is damaged" in result.reason
    assert result.reason.endswith(f"--redo {key}") and "copy object" not in result.reason
    redone = extract(items, store, config(flow_codec="float16", rgb_codec="raw", redo=(key,)),
                     classes=classes)
    assert [r.status for r in redone.results] == ["done"]
    assert FlowStore(store).validate(deep=True) == []
    assert FlowStore(store).read_flow(key, "tvl1").shape == (7, 2, 64, 80)


def test_a_video_found_finished_is_said_finished_by_another_process_only_when_it_was(videos,
                                                                                     tmp_path):
    """A video the run set out to compute holds the flow once claimed. "finished by another
    process" only where the run read the store without that flow and the file now reads with it;
    a run told nothing of the store just says it is in the store; a file whose flow is on disk
    but that the index cannot read (a newer flowkit's codec here) fails with what is wrong with it,
    naming the file and ``--redo``. Before, each was "finished by another process", exit 0."""
    from flowkit.extract import extract_items

    store = tmp_path / "store"
    items, classes = scan_videos(videos)
    items = items[:1]
    key = items[0].key
    cfg = config(flow_codec="float16", rgb_codec="raw")
    extract(items, store, cfg, classes=classes)
    engine = create_engine("tvl1", **PARAMS)
    # the run read the store before another process wrote the video
    [late] = extract_items(items, FlowStore(store, "a"), engine, cfg, metas={key: None})
    assert (late.status, late.reason) == (
        "skipped", "already in the store with flow/tvl1 (finished by another process)")
    # the feed given no view of the store
    [told_nothing] = feed.run(items, FlowStore(store, "a"), engine,
                              FeedOptions(flow_codec="float16", rgb_codec="raw"))
    assert (told_nothing.status, told_nothing.reason) == (
        "skipped", "already in the store with flow/tvl1")
    # a file the index cannot read
    path = store / "videos" / f"{key}.h5"
    with h5py.File(path, "r+") as f:
        f["flow/tvl1"].attrs["codec"] = "a-newer-codec"
    assert FlowStore(store).finished_state(key) == (["tvl1"], "")
    [unreadable] = extract(items, store, cfg, classes=classes).results
    assert unreadable.status == "failed", unreadable
    assert unreadable.reason.startswith(f"{path}: /flow/tvl1: unknown or incomplete codec ")
    assert "a-newer-codec" in unreadable.reason and unreadable.reason.endswith(f"--redo {key}")
    assert "another process" not in unreadable.reason


def test_redo_mismatched_tells_dropped_other_frames_from_damage(tmp_path):
    """A video recomputed for other frames (``--redo-mismatched``): its line says which datasets
    of the old file were damaged and which were sound but stored for other frames. Before, both
    were "damaged and dropped"."""
    from flowkit.labels import VideoItem
    from flowkit.video import VideoInfo

    store = FlowStore(tmp_path / "s", "a", classes=["c"])
    record = {"version": "1", "params": {}}
    with _writer(store, "c/v") as w:
        w.append_rgb(np.zeros((5, 8, 8, 3), np.uint8))
        for name in ("costvolume", "tvnet", "raft"):
            w.append_flow(name, np.ones((4, 2, 8, 8), np.float32), {"engine": name, **record})
    _damage_header(tmp_path / "s" / "videos" / "c" / "v.h5", "flow/tvnet")
    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 20, 3), np.uint8)

    def decode(item, opts):
        return VideoInfo(path=item.path, width=20, height=16, fps=25.0, frame_count=6,
                         duration=0.24, codec="mem"), iter(frames)

    item = VideoItem(path=Path("/mem/v.mp4"), key="c/v", label=0, label_name="c")
    [result] = feed.run([item], store, create_engine("tvl1", **PARAMS),
                        FeedOptions(flow_codec="float16", rgb_codec="raw"), decode=decode,
                        redo=frozenset({"c/v"}))
    assert result.status == "done", result
    assert re.fullmatch(r"replaced; dropped from the old file \(stored for other frames\): "
                        r"flow/costvolume, flow/raft; damaged and dropped from the old file: "
                        r"flow/tvnet \(damaged: .*object header.*\)", result.reason), result.reason
    assert FlowStore(tmp_path / "s").flow_names("c/v") == ["tvl1"]


# ----------------------------------------------------------------------------- hostile folders

def test_scan_visits_each_directory_and_file_once(videos, tmp_path):
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    shutil.copy(videos / "pan_left" / "pan_left_0.mp4", root / "cls" / "a.mp4")
    os.symlink(".", root / "cls" / "loop")
    os.symlink("..", root / "cls" / "up")
    os.symlink("a.mp4", root / "cls" / "b.mp4")
    os.mkfifo(root / "cls" / "pipe.mp4")
    (root / "cls" / "dir.mp4").mkdir()
    notes: list[str] = []
    items, classes = scan_videos(root, notes=notes)
    assert [i.key for i in items] == ["cls/a"] and classes == ["cls"]
    text = "\n".join(notes)
    assert "loop: skipped, the same directory" in text and "up: skipped, the same directory" in text
    assert "b.mp4: skipped, the same file as" in text
    assert "pipe.mp4: skipped, a FIFO" in text
    assert "dir.mp4: a directory, not a video file" in text


def test_store_lists_videos_in_linked_class_folders_once(tmp_path):
    """A class folder moved to another disk and linked back is listed like any other (keys, len,
    summary, validate, partials), as reading it already works; a link loop or a second link to a
    folder lists nothing twice."""
    store = FlowStore(tmp_path / "s", mode="a")
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    for key in ("a/v1", "b/v2"):
        with store.writer(key, source="x", fps=25, rgb_codec="raw") as w:
            w.append_rgb(rgb)
    videos = tmp_path / "s" / "videos"
    shutil.move(videos / "b", tmp_path / "other_disk")
    os.symlink(tmp_path / "other_disk", videos / "b")
    os.symlink(tmp_path / "other_disk", videos / "c")  # a second link to the same folder
    os.symlink("..", videos / "a" / "loop")
    (tmp_path / "other_disk" / "v3.h5.otherhost.1.partial").write_bytes(b"")
    reader = FlowStore(tmp_path / "s")
    assert reader.keys() == ["a/v1", "b/v2"] and len(reader) == 2 and "b/v2" in reader
    assert reader.summary()["videos"] == 2 and reader.validate() == []
    assert [p.name for p in reader.partials()] == ["v3.h5.otherhost.1.partial"]


def test_non_utf8_name_gets_an_escaped_key_and_extracts(videos, tmp_path):
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.mp4")  # Latin-1 bytes: not UTF-8
    shutil.copy(videos / "pan_left" / "pan_left_0.mp4", root / "cls" / name)
    items, classes = scan_videos(root)
    assert [i.key for i in items] == ["cls/caf%E9"]
    summary = extract(items, tmp_path / "store", config(), classes=classes)
    assert [r.status for r in summary.results] == ["done"], summary.results
    assert FlowStore(tmp_path / "store").keys() == ["cls/caf%E9"]
    again = extract(items, tmp_path / "store", config(), classes=classes)
    assert [r.status for r in again.results] == ["skipped"]


# ----------------------------------------------------------------------------- rotation, VFR

def test_rotation_metadata_is_applied(videos, tmp_path):
    src = videos / "pan_left" / "pan_left_0.mp4"
    rotate_mp4(src, tmp_path / "r.mp4")
    upright = list(iter_frames(src))
    facts: dict = {}
    turned = list(iter_frames(tmp_path / "r.mp4", facts=facts))
    assert facts["rotation"] == 270 and turned[0].shape == (80, 64, 3)
    np.testing.assert_array_equal(turned[0], np.rot90(upright[0], 3))
    (tmp_path / "v" / "cls").mkdir(parents=True)
    shutil.copy(tmp_path / "r.mp4", tmp_path / "v" / "cls" / "r.mp4")
    items, classes = scan_videos(tmp_path / "v")
    summary = extract(items, tmp_path / "store", config(), classes=classes)
    assert "rotated 270 degrees" in summary.results[0].reason
    meta = FlowStore(tmp_path / "store").meta("cls/r")
    assert meta["rotation"] == 270 and (meta["height"], meta["width"]) == (80, 64)


def test_variable_frame_rate_is_noted(tmp_path):
    import av
    path = tmp_path / "v" / "cls" / "vfr.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 25)
        rng = np.random.default_rng(0)
        for pts in (0, 1, 2, 5, 6, 9, 10, 11):  # 40 ms and 120 ms apart
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb24")
            frame.pts = pts
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    items, classes = scan_videos(tmp_path / "v")
    summary = extract(items, tmp_path / "store", config(), classes=classes)
    assert summary.results[0].status == "done", summary.results[0].reason
    assert "variable frame rate (frames 40-120 ms apart)" in summary.results[0].reason
    meta = FlowStore(tmp_path / "store").meta("cls/vfr")
    assert meta["variable_frame_rate"] is True
    assert meta["frame_interval_max"] == pytest.approx(0.12, abs=1e-3)


# ----------------------------------------------------------------------------- memory, workers

def test_batches_shrink_to_the_memory_budget():
    tvl1 = engine_class("tvl1")
    opts = FeedOptions(batch=8, max_memory=int(1.5 * 2**30))
    assert batch_limit(tvl1, opts, (256, 340)) == 8
    assert batch_limit(tvl1, opts, (1080, 1920)) == 2  # 0.58 GB per pair
    assert batch_limit(tvl1, FeedOptions(batch=8, max_memory=1), (1080, 1920)) == 1
    assert batch_limit(tvl1, FeedOptions(batch=8), (1080, 1920)) == 8


def _peak_rss_gb(video_dir: Path, store: Path, max_memory: str) -> tuple[float, str]:
    """Peak RSS (GB) of `flowkit extract` of ``video_dir`` (one process) and its stderr."""
    code = ("import resource, sys, runpy; sys.argv = ['flowkit'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('flowkit', run_name='__main__')\n"
            "finally:\n    print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "extract", video_dir, "-o", store,
                           "--no-compile", "--workers", "1", "--batch", "8", "--max-memory",
                           max_memory, "--param", "warps=1", "--param", "outer_iterations=1",
                           "--param", "inner_iterations=2"],
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stderr.split("maxrss_kb")[1].split()[0]) / 2**20, proc.stderr


@pytest.mark.slow
def test_full_hd_batches_follow_the_memory_budget(tmp_path):
    """5 frames of 1920x1080 with --batch 8: --max-memory 1G gives one pair per call and a peak
    RSS at least 0.5 GB below the unbounded run's four pairs at once (0.55 GB per pair)."""
    frames = np.random.default_rng(0).integers(0, 255, (5, 1080, 1920, 3), np.uint8)
    write_video(tmp_path / "v" / "cls" / "hd.mp4", frames)
    bounded, err = _peak_rss_gb(tmp_path / "v", tmp_path / "s1", "1G")
    assert "1 pairs per engine call instead of 8" in err
    unbounded, err = _peak_rss_gb(tmp_path / "v", tmp_path / "s2", "none")
    assert "pairs per engine call" not in err
    print(f"1080p, 4 pairs: peak RSS {bounded:.2f} GB with --max-memory 1G, {unbounded:.2f} GB "
          "without")
    assert bounded < unbounded - 0.5


def test_default_workers_one_per_core_on_cpu():
    assert default_workers("cpu", 1000) == usable_cores()
    assert default_workers("cpu", 1) == 1
    assert default_workers("cuda", 1000) == default_workers("cuda:1", 5) == 1


# ----------------------------------------------------------------------------- engine input

@pytest.mark.parametrize("name", ["tvl1", "costvolume"])
def test_engines_validate_their_input(name):
    engine = create_engine(name, **(dict(nscales=1, warps=1, outer_iterations=1)
                                    if name == "tvl1" else {}))
    good = torch.rand(1, 3, 16, 16) * 255
    cases = {"[0, 255]": good / 255, "NaN": good.clone().index_fill_(3, torch.tensor([2]), float("nan")),
             "dtype torch.bool": good > 100, "dtype torch.complex64": good.to(torch.complex64)}
    for expected, frames in cases.items():
        with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            engine(frames, good)
    assert issubclass(EngineError, ValueError)
    assert engine(good, good).shape == (1, 2, 16, 16)
    assert engine(good.to(torch.uint8), good.to(torch.uint8)).shape == (1, 2, 16, 16)
    assert engine(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_store_write_error_is_a_store_error():
    from flowkit.errors import StoreError
    assert issubclass(StoreWriteError, StoreError) and issubclass(DamagedDataError, StoreError)
