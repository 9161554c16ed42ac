"""Reads HDF5 may never return from (:mod:`flowkit.store.guard`): a file that hangs or crashes
the reading child is named and remembered; the store's index build, metas, summary, validate,
reads and `flowkit info` get past it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowkit.errors import StoreError
from flowkit.store import FlowStore, guard
from flowkit.store.guard import Failed, HungFileError, guarded_map

from conftest import hang_hdf5, write_tiny_store


def _read(path: Path, scale: int = 1):
    """A stand-in for an HDF5 read (module level: the child imports it by name): a file saying
    "hang" never returns, "crash" kills the reader, "raise" raises; others give their text."""
    text = path.read_text()
    if text == "hang":
        while True:
            time.sleep(60)
    if text == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if text == "raise":
        raise ValueError(f"{path.name} says raise")
    return text * scale


@pytest.fixture
def forget(monkeypatch):
    """This test's failed files, not the session's."""
    monkeypatch.setattr(guard, "_failed", {})


def _files(tmp_path: Path, texts: list[str]) -> list[Path]:
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_text(text)
    return paths


def test_a_hung_or_crashing_read_is_failed_remembered_and_the_rest_read(tmp_path, forget):
    paths = _files(tmp_path, ["a", "hang", "b", "crash", "c"])
    started = time.perf_counter()
    out = list(guarded_map(_read, [(p, 2) for p in paths], timeout=1.0))
    assert time.perf_counter() - started < 30
    assert out[0::2] == ["aa", "bb", "cc"]  # in order, around the failures
    assert out[1] == Failed("HDF5 did not return within 1 s reading it (damage to a file's "
                            "metadata can make it loop forever; on a disk that slow, set "
                            "FLOWKIT_HANG_SECONDS higher)", 1.0)
    assert out[3] == Failed("the reading process died on it (signal 11, SIGSEGV)")
    # remembered: opening them again raises at once, here and in another process told of them
    for path, reason in ((paths[1], out[1].reason), (paths[3], out[3].reason)):
        with pytest.raises(HungFileError, match=f"^{reason}$".replace("(", r"\(").replace(")", r"\)")):
            guard.check(path)
    assert set(guard.hung_files()) == {str(paths[1]), str(paths[3])}
    # a file the next child is told of is not read again: "hang" no longer hangs it
    out = list(guarded_map(_read, [(paths[1],), (paths[0],)], timeout=1.0))
    assert out[1:] == ["a"] and isinstance(out[0], Failed)
    # a new version of the file (another stamp) is read again
    paths[1].write_text("mended")
    guard.check(paths[1])
    assert list(guarded_map(_read, [(paths[1],)], timeout=1.0)) == ["mended"]


def test_an_error_of_the_function_is_raised_as_in_process(tmp_path, forget):
    paths = _files(tmp_path, ["a", "raise", "b"])
    got = []
    with pytest.raises(ValueError, match="f1 says raise"):
        for value in guarded_map(_read, [(p,) for p in paths]):
            got.append(value)
    assert got == ["a"] and guard.hung_files() == {}


def test_a_bad_hang_seconds_warns_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv("FLOWKIT_HANG_SECONDS", "5")
    assert guard.hang_seconds() == 5
    for bad in ("5s", "0", "-1", "inf"):
        monkeypatch.setenv("FLOWKIT_HANG_SECONDS", bad)
        with pytest.warns(UserWarning, match="FLOWKIT_HANG_SECONDS"):
            assert guard.hang_seconds() == guard.HANG_SECONDS


@pytest.fixture
def hung_store(tmp_path, forget, monkeypatch):
    """A tiny store one of whose files makes HDF5 loop forever, files given 2 s each."""
    root = tmp_path / "store"
    write_tiny_store(root)
    FlowStore(root).summary()  # indexed while intact: the damage gives the file a new stamp
    path = root / "videos" / "left" / "left_0.h5"
    hang_hdf5(path)
    monkeypatch.setenv("FLOWKIT_HANG_SECONDS", "2")
    return root, "left/left_0", path


def test_index_summary_metas_validate_and_reads_get_past_a_hung_file(hung_store):
    root, key, path = hung_store
    store = FlowStore(root)
    started = time.perf_counter()
    summary = store.summary()
    assert summary["unreadable"] == 1 and summary["videos"] == 12
    metas = store.metas(store.keys())
    assert key not in metas and len(metas) == 11
    [problem] = store.validate()
    assert problem == (f"videos/{key}.h5: HDF5 did not return within 2 s reading it (damage to "
                       "a file's metadata can make it loop forever; on a disk that slow, set "
                       "FLOWKIT_HANG_SECONDS higher); re-extract it: flowkit "
                       f"extract VIDEO_DIR -o STORE --redo {key}")
    with pytest.raises(StoreError, match=f"^{path}: cannot be read as HDF5 \\(HDF5 did not "
                                         "return within 2 s"):
        store.meta(key)
    # one wait of 2 s (the summary's); metas and reads know the file, validate's child is told
    assert time.perf_counter() - started < 20
    assert store.read_flow("left/left_1", "tvl1").shape[0] == metas["left/left_1"]["num_frames"] - 1


def test_validate_as_the_first_read_names_the_hung_file(hung_store):
    """`validate` in a process that has read nothing before (a fresh `flowkit info --validate`,
    a cron check): its own child hangs on the file, and the time-out is a problem naming the file
    and --redo. Were it dropped, a store whose file HDF5 loops on would be called valid."""
    root, key, _ = hung_store
    assert guard.hung_files() == {}  # nothing known of the file yet: validate finds it itself
    assert FlowStore(root).validate() == [
        f"videos/{key}.h5: HDF5 did not return within 2 s reading it (damage to a file's metadata "
        "can make it loop forever; on a disk that slow, set FLOWKIT_HANG_SECONDS higher); "
        f"re-extract it: flowkit extract VIDEO_DIR -o STORE --redo {key}"]


def test_info_validate_names_the_hung_file_and_exits(hung_store):
    root, key, _ = hung_store
    run = subprocess.run([sys.executable, "-m", "flowkit", "info", str(root), "--validate",
                          "--json"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FLOWKIT_HANG_SECONDS": "2"})
    assert run.returncode == 1, run.stderr
    out = json.loads(run.stdout)
    assert out["unreadable"] == 1
    assert out["problems"] == [f"videos/{key}.h5: HDF5 did not return within 2 s reading it "
                               "(damage to a file's metadata can make it loop forever; on a disk "
                               "that slow, set FLOWKIT_HANG_SECONDS higher); "
                               f"re-extract it: flowkit extract VIDEO_DIR -o STORE --redo {key}"]


def test_one_reader_serves_the_process_and_a_hang_replaces_it(tmp_path, forget):
    paths = _files(tmp_path, ["a", "hang", "b"])
    assert list(guarded_map(_read, [(paths[0],)])) == ["a"]
    first = guard._shared.process.pid
    assert list(guarded_map(_read, [(paths[2],)])) == ["b"]
    assert guard._shared.process.pid == first  # started once: 0.3 s per process, not per call
    out = list(guarded_map(_read, [(paths[1],), (paths[2],)], timeout=1.0))
    assert isinstance(out[0], Failed) and out[1] == "b"
    assert guard._shared.process.pid != first
    # a reader asked while the shared one is busy (a generator not finished) is its own
    outer = guarded_map(_read, [(paths[0],), (paths[2],)])
    assert next(outer) == "a"
    assert list(guarded_map(_read, [(paths[2],)])) == ["b"]
    assert list(outer) == ["b"]


def test_relative_paths_name_the_callers_files_after_it_changes_directory(tmp_path, forget,
                                                                         monkeypatch):
    """The reader outlives a call: a relative path is read from the caller's working directory
    of that call, not the one the reader started in (a notebook's chdir, in-process CLI runs)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    monkeypatch.chdir(tmp_path / "a")
    assert list(guarded_map(_read, [(Path("f"),)])) == ["a"]
    monkeypatch.chdir(tmp_path / "b")
    assert list(guarded_map(_read, [(Path("f"),)])) == ["b"]


def test_sigterm_to_the_process_group_is_not_the_files_fault(tmp_path, forget):
    """Slurm's SIGTERM at a time limit reaches the reading child too: it leaves stopping to its
    parent, so the file it was reading is not named as one it died on."""
    import threading

    [path] = _files(tmp_path, ["hang"])

    def terminate():
        while guard._shared is None:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(guard._shared.process.pid, signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    [out] = guarded_map(_read, [(path,)], timeout=2.0)
    assert out.reason.startswith("HDF5 did not return within 2 s"), out


def test_the_callers_script_is_not_run_again_and_its_forkserver_is_its_own(hung_store, tmp_path):
    """multiprocessing's children (spawn, forkserver) import the caller's ``__main__`` script
    again: a script without ``if __name__ == "__main__"`` would run once more in the reader, for
    every index build. And the caller's forkserver keeps its own preload."""
    root, key, _ = hung_store
    log = tmp_path / "runs.log"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing, multiprocessing.forkserver as fs\n"
        "multiprocessing.set_forkserver_preload(['xml.dom.minidom'])\n"
        f"open({str(log)!r}, 'a').write('run\\n')\n"
        "from flowkit.store import FlowStore\n"
        f"print(FlowStore({str(root)!r}).summary()['unreadable'], fs._forkserver._preload_modules)\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "FLOWKIT_HANG_SECONDS": "2"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "['xml.dom.minidom']"]
    assert log.read_text() == "run\n"


def test_the_index_keeps_a_hung_file_so_no_later_process_waits_for_it(hung_store):
    """One process found the file hung; the index says so (by its stamp and the time limit the
    read ran past), so a next process given no longer neither waits for it nor opens it, until
    the file is replaced. One given longer (FLOWKIT_HANG_SECONDS raised for a slow disk) reads
    it again: a healthy file that was only slow is not unreadable for good."""
    root, key, path = hung_store
    assert FlowStore(root).summary()["unreadable"] == 1
    index = json.loads((root / "index.json").read_text())
    assert list(index["hung"]) == [key] and index["hung"][key][3].startswith("HDF5 did not return")
    assert index["hung"][key][4] == 2
    script = ("import sys; from flowkit.store import FlowStore; s = FlowStore(sys.argv[1]); "
              "print(s.summary()['unreadable'], len(s.metas(s.keys())), len(s.validate())); "
              "s.meta(sys.argv[2])")

    def rerun(seconds: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(root), key], capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, "FLOWKIT_HANG_SECONDS": seconds})

    run = rerun("1")  # a shorter limit: the index's word stands (a read would record 1 s)
    assert run.stdout.split() == ["1", "11", "1"], run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"flowkit.errors.StoreError: {path}: cannot be read as HDF5 ({index['hung'][key][3]}); "
        "delete it and extract the video again")
    assert json.loads((root / "index.json").read_text())["hung"] == index["hung"]
    run = rerun("3")  # a longer one: read again (this file loops, so it hangs again, for 3 s)
    assert run.stdout.split() == ["1", "11", "1"], run.stdout + run.stderr
    again = json.loads((root / "index.json").read_text())["hung"][key]
    assert again[4] == 3 and "within 3 s" in again[3]
    # replaced (as --redo does): read again, and no longer in the index's hung list
    write_tiny_store(root.parent / "fresh")
    path.write_bytes((root.parent / "fresh" / "videos" / "left" / "left_0.h5").read_bytes())
    assert FlowStore(root).summary()["unreadable"] == 0
    assert "hung" not in json.loads((root / "index.json").read_text())
