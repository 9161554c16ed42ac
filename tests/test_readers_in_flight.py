"""Readers of a store while another run extracts into it: a video it has claimed but not finished
is named as being extracted (by whom, and to rerun when it is done), not as missing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from flowkit.errors import FlowkitError
from flowkit.files import host_name, process_identity
from flowkit.interop import export_rawframes
from flowkit.store import FlowStore
from flowkit.store.claims import claim_path

BUSY = "right/right_9"  # the tiny store holds right_0 .. right_3


def claim(store: Path, key: str, pid: int | None = None) -> Path:
    """Write the claim of ``key``'s tvl1 as an extracting run does: this live process's by
    default, else that of ``pid`` (an ended process of this host: a stale claim)."""
    path = claim_path(store / "videos" / f"{key}.h5", "tvl1")
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": host_name(), "pid": os.getpid() if pid is None else pid,
          "since": "2026-11-30T15:00:00+00:00", **process_identity()}
    path.write_text(json.dumps(me), encoding="utf-8")
    return path


def ended_pid() -> int:
    """The pid of a process of this host that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture()
def store(tiny_store, tmp_path) -> Path:
    """A copy of the tiny store with a live claim on :data:`BUSY`, which it does not hold."""
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    claim(copy, BUSY)
    return copy


def test_in_flight_names_live_claims_of_missing_videos_only(store):
    """A live claim of a missing video is named with its process; a dead process's claim, a claim
    on a finished video (another flow being added), the commit lock's file and invalid keys are
    not; with no keys, one walk finds the same."""
    claim(store, "down/down_9", ended_pid())
    claim(store, "right/right_0")  # finished: its file reads
    (store / "videos" / ".commit.lock.claim").write_text(json.dumps({"pid": os.getpid()}))
    who = f"pid {os.getpid()} on {host_name()} (since 2026-11-30T15:00:00+00:00)"
    fs = FlowStore(store)
    assert fs.in_flight([BUSY, "down/down_9", "right/right_0", "left/left_9", "../x", "x"]) \
        == {BUSY: who}
    assert fs.in_flight() == {BUSY: who}
    assert fs.in_flight(["right/right_8"]) == {}


def test_show_names_the_run_extracting_the_video(store, tmp_path):
    """`flowkit show` of a video being extracted says by whom and to rerun, not "no video"."""
    result = run_cli("show", str(store), BUSY, "-o", str(tmp_path / "f.png"))
    assert result.returncode != 0
    assert (f"video {BUSY!r} is being extracted by pid {os.getpid()} on {host_name()} (since "
            "2026-11-30T15:00:00+00:00); rerun when it is done") in result.stderr
    assert "no video" not in result.stderr
    result = run_cli("show", str(store), "right/right_8", "-o", str(tmp_path / "f.png"))
    assert "no video 'right/right_8'" in result.stderr  # not claimed: missing


def test_split_list_counts_videos_being_extracted_apart(store, tmp_path):
    """A split list naming a video being extracted is refused with "rerun when it is done", not
    --skip-missing (which would train without it); truly missing ones are counted apart; with
    --skip-missing the note says which of the left-out ones are being extracted."""
    from flowkit.train import TrainConfig
    from flowkit.train.loading import make_split

    listed = tmp_path / "trainlist.txt"
    listed.write_text(f"right/right_0.avi 1\ndown/down_0.avi 2\n{BUSY}.avi 1\n")
    config = TrainConfig(store=str(store), model="resnet2d", split_list=str(listed))
    with pytest.raises(FlowkitError) as caught:
        make_split(FlowStore(store), config)
    assert str(caught.value) == (f"video {BUSY!r} of split list {listed} is being extracted by "
                                 f"pid {os.getpid()} on {host_name()} (since "
                                 "2026-11-30T15:00:00+00:00); rerun when it is done")
    listed.write_text(listed.read_text() + "left/left_9.avi 3\n")
    with pytest.raises(FlowkitError) as caught:
        make_split(FlowStore(store), config)
    message = str(caught.value)
    assert message.startswith(f"1 video(s) of split list {listed} are not in store {store}: "
                              "'left/left_9'; a video whose extraction failed")
    assert message.endswith(f"; besides, 1 more video(s) are being extracted by other runs now "
                            f"({BUSY!r} by pid {os.getpid()} on {host_name()} (since "
                            "2026-11-30T15:00:00+00:00)): rerun when they are done")
    notes = []
    config = TrainConfig(store=str(store), model="resnet2d", split_list=str(listed),
                         skip_missing=True)
    train, _, _ = make_split(FlowStore(store), config, note=notes.append)
    assert train == ["right/right_0", "down/down_0"]
    assert notes[0].startswith("2 listed video(s) are not in store")
    assert f"1 of them are being extracted by other runs now ({BUSY!r} by pid" in notes[0]


def test_export_notes_videos_being_extracted(store, tmp_path):
    """An export taken while a run extracts into the store says how many videos it lacks for
    that, and to rerun export when they are done."""
    summary = export_rawframes(store, tmp_path / "out")
    assert summary.count("done") == 12
    assert (f"1 videos being extracted by other runs were not exported (e.g. {BUSY} by pid "
            f"{os.getpid()} on {host_name()} (since 2026-11-30T15:00:00+00:00)); rerun export "
            "when they are done") in summary.notes
    claim_path(store / "videos" / f"{BUSY}.h5", "tvl1").unlink()
    summary = export_rawframes(store, tmp_path / "out")
    assert not any("being extracted" in note for note in summary.notes)
