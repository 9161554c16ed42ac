"""What flowkit prints for a user to act on: the commands it names (`flowkit evaluate RUN`,
`flowkit info STORE --keys`, `--redo KEY`) hold paths and keys shell-quoted, so a path with spaces
pastes back as one word, while a plain path prints as before; `flowkit show -o` into a folder that
takes no file is one line before any work; a video another run holds is skipped with the truth
about when a rerun picks it up."""
from __future__ import annotations

import errno
import json
import os
import queue
import shlex
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from conftest import run_cli
from flowkit.errors import FlowkitError, StoreError
from flowkit.store import FlowStore
from flowkit.store.layout import MANIFEST, now

TINY_TRAIN = ["--model", "resnet2d", "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]",
              "--model-arg", "modality=flow", "--frames", "2", "--size", "16", "--batch-size", "3",
              "--no-flip", "--val-fraction", "0.25", "--workers", "0", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


@pytest.fixture
def spaced_store(tiny_store, tmp_path) -> Path:
    """A copy of the tiny store under a path with spaces and non-ASCII letters."""
    return Path(shutil.copytree(tiny_store, tmp_path / "my data" / "störe ü"))


def pasted(text: str, start: str) -> list[str]:
    """The words of the command in ``text`` that begins with ``start`` and ends at a backtick
    (or the end of the line), as a shell reads them when pasted."""
    rest = text.split(start, 1)[1].splitlines()[0]
    return shlex.split(start + rest.split("`", 1)[0])


# ----------------------------------------------------------------------------- quoted commands


def test_show_names_the_keys_command_with_the_store_quoted(spaced_store, tiny_store, tmp_path):
    r = run_cli("show", spaced_store, "nope/x", "-o", tmp_path / "a.png")
    assert r.returncode == 2, r.stderr
    assert pasted(r.stderr, "flowkit info") == ["flowkit", "info", str(spaced_store), "--keys"]
    r = run_cli("show", tiny_store, "nope/x", "-o", tmp_path / "a.png")  # plain: as before
    assert f"`flowkit info {tiny_store} --keys` lists them" in r.stderr, r.stderr


def test_a_run_under_a_spaced_path_prints_commands_that_paste(spaced_store, tmp_path):
    """train's "evaluate with `flowkit evaluate RUN`" pasted runs; the moved-store errors of
    evaluate and train --resume name the run as one word."""
    from flowkit.cli.train import command as train_command

    run = tmp_path / "runs" / "ré run"
    done = CliRunner().invoke(train_command, [str(a) for a in (spaced_store, "--out", run,
                                                                 *TINY_TRAIN, "--epochs", "1")],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    command = pasted(done.stderr, "flowkit evaluate")
    assert command == ["flowkit", "evaluate", str(run)], done.stderr
    r = run_cli(*command[1:], "--clips", "1", "--crops", "1")
    assert r.returncode == 0, r.stderr

    spaced_store.rename(spaced_store.with_name("moved ü"))
    r = run_cli("evaluate", run)
    assert r.returncode == 2, r.stderr
    assert pasted(r.stderr, "flowkit evaluate") == ["flowkit", "evaluate", str(run), "STORE"]
    r = run_cli("train", spaced_store, "--out", run, "--resume", "--epochs", "2")
    assert r.returncode == 2, r.stderr
    assert pasted(r.stderr, "flowkit train") == ["flowkit", "train", "NEW_STORE", "-o", str(run),
                                                 "--resume"]


def test_evaluate_of_a_run_without_checkpoints_names_the_run_quoted(tmp_path):
    from flowkit.train.evaluate import load_run_model

    run = tmp_path / "runs" / "ré run"
    run.mkdir(parents=True)
    with pytest.raises(FlowkitError) as caught:
        load_run_model(run)
    assert pasted(str(caught.value), "flowkit train") == ["flowkit", "train", "...", "--out",
                                                         str(run)]
    (run / "config.json").write_text("{}")
    with pytest.raises(FlowkitError) as caught:
        load_run_model(run)
    assert pasted(str(caught.value), "flowkit train") == ["flowkit", "train", "...", "--out",
                                                         str(run), "--resume"]


def test_store_hints_quote_the_store_path(spaced_store, tiny_store, tmp_path):
    """The commands of a missing key, an empty store and a store without store.json."""
    from flowkit.data.datasets import _check_keys
    from flowkit.data.splits import missing_keys_error

    message = str(missing_keys_error(FlowStore(spaced_store), ["a b/c"], "the list"))
    assert pasted(message, "flowkit extract") == ["flowkit", "extract", "VIDEOS", "-o",
                                                  str(spaced_store)]
    assert pasted(message, "flowkit import") == ["flowkit", "import", "rawframes",
                                                 "RAWFRAMES_DIR", "-o", str(spaced_store)]
    plain = str(missing_keys_error(FlowStore(tiny_store), ["a/c"], "the list"))
    assert f"(`flowkit extract VIDEOS -o {tiny_store}`)" in plain  # as before

    empty = FlowStore(tmp_path / "my data" / "empty ü", mode="a", classes=["a"])
    with pytest.raises(FlowkitError) as caught:
        _check_keys(empty, None)
    assert pasted(str(caught.value), "flowkit extract")[-1] == str(empty.path)

    (spaced_store / MANIFEST).unlink()
    with pytest.raises(StoreError) as caught:
        FlowStore(spaced_store)
    assert pasted(str(caught.value), "flowkit info") == ["flowkit", "info", str(spaced_store),
                                                         "--repair-manifest"]


def test_missing_flow_fixes_quote_the_store_path(spaced_store):
    from flowkit.data.datasets import _missing_flow_fix

    store = FlowStore(spaced_store)
    keys = store.keys()
    metas = {key: store.meta(key) for key in keys}
    extract = _missing_flow_fix(store, "tvnet", "tvnet", {"tvl1"}, keys[0], metas)
    assert pasted(extract, "flowkit extract")[:5] == ["flowkit", "extract", "VIDEOS", "-o",
                                                      str(spaced_store)], extract
    imported = _missing_flow_fix(store, "rawframes", "rawframes", {"tvl1"}, keys[0], metas)
    assert pasted(imported, "flowkit import")[:6] == ["flowkit", "import", "rawframes",
                                                      "RAWFRAMES_DIR", "-o", str(spaced_store)]


def test_redo_hints_quote_the_key():
    from flowkit.store.reading import redo_hint

    assert pasted(redo_hint("walk/v 1"), "flowkit extract")[-2:] == ["--redo", "walk/v 1"]
    assert "--redo walk/v_1" in redo_hint("walk/v_1")  # a plain key: as before


def test_extract_redo_of_an_unknown_key_names_the_store_quoted(sample_videos, tmp_path):
    out = tmp_path / "my store"
    r = run_cli("extract", sample_videos, "-o", out, "--redo", "pan_left/pan_left_0.mp4",
                "--no-compile")
    assert r.returncode == 2, r.stderr
    assert pasted(r.stderr, "flowkit info") == ["flowkit", "info", str(out), "--keys"]


# ----------------------------------------------------------------------------- show -o


@pytest.mark.parametrize("name", ["x.png", "x.mp4"])
def test_show_into_a_folder_that_takes_no_file_is_one_line(tiny_store, tmp_path, monkeypatch,
                                                           name):
    """A read-only folder: cv2.imwrite returned False ("unsupported extension or folder") and
    PyAV raised a traceback, after the work. Root ignores chmod, so the file system's refusal is
    made here."""
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.path.join(dir, ".tmp"))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    key = FlowStore(tiny_store).keys()[0]
    r = run_cli("show", tiny_store, key, "-o", tmp_path / name)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: read-only file system: {tmp_path}; choose a writable place "
                        "(-o / --out)\n"), r.stderr
    assert not (tmp_path / name).exists()


def test_show_still_names_a_format_it_cannot_write(tiny_store, tmp_path):
    key = FlowStore(tiny_store).keys()[0]
    r = run_cli("show", tiny_store, key, "-o", tmp_path / "x.txt")
    assert r.returncode == 2 and ".txt is not a picture format" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []  # the probe's file is gone


# ----------------------------------------------------------------------------- held videos


def test_a_held_video_is_picked_up_once_its_holder_has_ended(spaced_store):
    """A claim copied with the store (`cp -r` mid-extraction) names a run that writes into the
    original store: a rerun picks the video up once that process has ended, not "if it fails"."""
    from flowkit.feed import _Job, _start
    from flowkit.labels import VideoItem

    key = "right/new_0"
    claim = spaced_store / "videos" / f"{key}.h5.tvl1.claim"
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": now()}))
    results: queue.Queue = queue.Queue()
    with FlowStore(spaced_store, mode="a") as store:
        job = _Job(VideoItem(Path("v.mp4"), key, 0, "right"), store_rgb=True)
        _start(job, store, SimpleNamespace(flow_name="tvl1"), None, results)
    reason = results.get_nowait().reason
    assert reason.startswith("being extracted by pid 4242 on node-17 (since "), reason
    assert reason.endswith("; rerun once pid 4242 has ended to pick it up"), reason
