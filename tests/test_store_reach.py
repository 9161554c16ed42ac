"""A store that cannot be fully read says so: a class folder behind a link that dangles or one
this user may not list is named (summary warnings, validate problems, train's warning), a file
this user may not read is a permission to fix (never a redo), and a store moved away while a run
reads it is named, not one of its videos. Running as root ignores permissions: refusals are
simulated with monkeypatch."""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowkit.store.flowstore as flowstore_module
import flowkit.store.validate as validate_module
from flowkit.errors import StoreError
from flowkit.store import FlowStore
from flowkit.store.validate import video_problems
from test_store import make_video, write_video

LINK_FIX = "a link to a folder that is not there"


@pytest.fixture
def root(tmp_path) -> Path:
    """A store of two classes, ``a`` and ``b``, one video each."""
    store = FlowStore(tmp_path / "s", mode="a", classes=["a", "b"])
    for label, key in enumerate(["a/v0", "b/v0"]):
        rgb, flow = make_video(label, frames=3, height=4, width=4)
        write_video(store, key, rgb, {"tvl1": flow}, label=label, label_name=key[0])
    return tmp_path / "s"


def _dangle(root: Path, folder: str) -> None:
    """``videos/FOLDER`` moved away and replaced by a relative link that no longer resolves (a
    class moved to another disk, then the store moved)."""
    shutil.rmtree(root / "videos" / folder)
    os.symlink(os.path.join("..", "..", "elsewhere", folder), root / "videos" / folder)


def _unlistable(monkeypatch, folder: Path) -> None:
    """``os.scandir`` of ``folder`` refused, as for a user without read permission on it."""
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)


def test_a_class_folder_behind_a_dangling_link_is_named_not_silently_dropped(root):
    _dangle(root, "b")
    store = FlowStore(root)
    assert store.keys() == ["a/v0"]
    [line] = store.unreachable
    assert f"{root / 'videos' / 'b'}: skipped, {LINK_FIX}" in line
    assert "restore it or re-create the link" in line
    summary = store.summary()
    assert summary["videos"] == 1 and LINK_FIX in summary["warnings"][0]
    problems = store.validate()
    assert len(problems) == 1 and LINK_FIX in problems[0] and "left out" in problems[0]


def test_a_videos_folder_that_dangles_is_a_problem_not_an_empty_valid_store(root):
    shutil.rmtree(root / "videos")
    os.symlink("../elsewhere/videos", root / "videos")
    store = FlowStore(root)
    assert len(store) == 0
    assert [LINK_FIX in line for line in store.unreachable] == [True]
    assert store.validate() and LINK_FIX in store.summary()["warnings"][0]


def test_a_class_folder_this_user_may_not_list_says_chmod(root, monkeypatch):
    _unlistable(monkeypatch, root / "videos" / "b")
    store = FlowStore(root)
    assert store.keys() == ["a/v0"]
    [line] = store.unreachable
    assert "videos/b: skipped, no permission to list it: chmod a+rx" in line
    assert "chmod" in store.validate()[0] and "chmod" in store.summary()["warnings"][0]


def test_a_folder_reached_twice_is_no_problem(root):
    os.symlink("b", root / "videos" / "c")  # a second link to b: its videos are listed once
    store = FlowStore(root)
    assert store.keys() == ["a/v0", "b/v0"] and store.unreachable == []
    assert store.validate() == [] and store.summary()["warnings"] == []


def test_a_complete_store_has_nothing_unreachable(root):
    store = FlowStore(root)
    assert len(store) == 2 and store.unreachable == []


def test_store_json_is_not_rebuilt_while_a_class_folder_cannot_be_read(root):
    _dangle(root, "b")
    (root / "store.json").unlink()
    with pytest.raises(StoreError, match=f"cannot be rebuilt while a folder .*{LINK_FIX}"):
        FlowStore.rebuild_manifest(root)
    assert not (root / "store.json").exists()


def test_store_json_is_not_rebuilt_without_the_last_class_behind_a_dangling_link(tiny_store,
                                                                                  tmp_path):
    """--repair-manifest with the folder of the last class id behind a link that dangles: no id
    is left without a name, yet store.json is not written without that class; the link is
    named."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    last = FlowStore(store).classes[-1]
    _dangle(store, last)
    (store / "store.json").unlink()
    with pytest.raises(StoreError, match=f"cannot be rebuilt while a folder of videos cannot be "
                                         f"read: .*{LINK_FIX}"):
        FlowStore.rebuild_manifest(store)
    assert not (store / "store.json").exists()


def test_train_warns_that_a_class_folder_is_left_out(tiny_store, tmp_path, monkeypatch):
    from flowkit.cli.train import command as train_command
    from flowkit.train import Trainer
    from test_cli_train import TINY

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    (store / "index.json").unlink(missing_ok=True)
    _dangle(store, "left")

    def fit(self, progress, stop):  # the warning is printed before any step
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_fit", fit)
    result = CliRunner().invoke(train_command, [str(store), "--out", str(tmp_path / "run"), *TINY,
                                                "--epochs", "1"], catch_exceptions=False)
    assert result.exit_code == 130, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning: 1 folder")]
    assert len(warning) == 1 and "left out of this run" in warning[0], result.output
    assert LINK_FIX in warning[0]


# ----------------------------------------------------------------------------- one file


def _refusing_open_read(monkeypatch, module, path: Path) -> None:
    """``open_read`` of ``path`` refused as h5py refuses a file of mode 600 another user owns."""
    real = module.open_read

    def refusing(p):
        if Path(p) == path:
            raise OSError(errno.EACCES, f"Unable to synchronously open file (unable to open file: "
                                        f"name = '{p}', errno = 13, error message = 'Permission "
                                        "denied', flags = 0, o_flags = 0)")
        return real(p)

    monkeypatch.setattr(module, "open_read", refusing)


def test_a_video_this_user_may_not_read_is_a_permission_not_a_redo(root, monkeypatch):
    path = root / "videos" / "b" / "v0.h5"
    _refusing_open_read(monkeypatch, flowstore_module, path)
    store = FlowStore(root)
    with pytest.raises(StoreError) as err:
        store.read_flow("b/v0")
    assert str(err.value) == (f"permission denied reading {path}; ask the store's owner to make "
                              "it readable (chmod a+r)")
    store.read_flow("a/v0")  # the others read


def test_validate_names_an_unreadable_video_a_permission_not_damage(root, monkeypatch):
    path = root / "videos" / "b" / "v0.h5"
    _refusing_open_read(monkeypatch, validate_module, path)
    [problem] = video_problems(path, "b/v0", False)
    assert problem == ("permission denied reading it; ask the store's owner to make it readable "
                       "(chmod a+r)")
    assert "--redo" not in problem and "corrupt" not in problem


# ----------------------------------------------------------------------------- the store moved


def test_a_store_renamed_while_read_is_named_not_one_of_its_videos(root):
    store = FlowStore(root)
    assert store.keys() == ["a/v0", "b/v0"]
    root.rename(root.with_name("s_renamed"))
    with pytest.raises(StoreError) as err:
        store.read_flow("b/v0")
    assert str(err.value) == (f"store {root} is no longer there (moved or renamed?); rerun with "
                              "its new path (a training: flowkit train NEW_PATH -o RUN --resume)")


def test_a_video_missing_from_a_store_still_there_is_that_video(root):
    store = FlowStore(root)
    (root / "videos" / "b" / "v0.h5").unlink()
    with pytest.raises(StoreError, match="video 'b/v0' is not in store"):
        store.read_flow("b/v0")


def test_evaluate_notes_a_class_folder_left_out(tiny_store, tmp_path):
    """A run evaluated on a store whose class folder dangles: the score is over fewer classes,
    and a note says which folder and the fix (it was silent: mean class accuracy over 2 of 3)."""
    from flowkit.train import Trainer
    from flowkit.train.evaluate import evaluate_run
    from test_train import tiny_config

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    run = tmp_path / "run"
    Trainer(tiny_config(store, epochs=1), run).fit()
    (store / "index.json").unlink(missing_ok=True)
    _dangle(store, "left")
    report = evaluate_run(run, clips=1, crops=1, split="all", checkpoint="last",
                          out_dir=False).report
    lost = [n for n in report["notes"] if n.startswith("1 folder(s) of the store cannot be read")]
    assert len(lost) == 1 and "left out of this evaluation" in lost[0], report["notes"]
    assert LINK_FIX in lost[0]


def test_the_chmod_of_an_unlistable_folder_pastes():
    from flowkit.files import _lost_note

    note = _lost_note(Path("s 10/videos/left side"), PermissionError(13, "Permission denied"))
    assert note == ("s 10/videos/left side: skipped, no permission to list it: chmod a+rx "
                    "'s 10/videos/left side' (or ask its owner to)")
