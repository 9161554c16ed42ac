"""`flowkit train` / `flowkit evaluate`: CliRunner on the command objects, and a real process that is
killed (SIGKILL), interrupted (SIGINT), terminated (SIGTERM) and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from flowkit.cli.evaluate import command as evaluate_command
from flowkit.cli.train import command as train_command

TINY = ["--model", "resnet2d", "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]",
        "--model-arg", "modality=flow", "--frames", "2", "--size", "16", "--batch-size", "3",
        "--no-flip", "--val-fraction", "0.25", "--workers", "0", "--device", "cpu"]
# One thread: a loaded 2-core machine runs tiny convolutions far slower with more.
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def write_lists(tmp_path):
    """trainlist01.txt (9 videos + one the store lacks) and testlist01.txt (3 + one it lacks)
    over the tiny store."""
    lists = tmp_path / "lists"
    lists.mkdir()
    trainlist, testlist = lists / "trainlist01.txt", lists / "testlist01.txt"
    trainlist.write_text("".join(f"{c}/{c}_{i}.avi\n" for c in ("right", "down", "left")
                                 for i in range(3)) + "down/down_broken.avi\n")
    testlist.write_text("right/right_broken.avi\n" + "".join(f"{c}/{c}_3.avi\n"
                                                               for c in ("right", "down", "left")))
    return trainlist, testlist


def train(*args):
    return CliRunner().invoke(train_command, [str(a) for a in args], catch_exceptions=False)


def epochs_in(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def test_train_resume_and_evaluate(tiny_store, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_store, "--out", run, *TINY, "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_done"] == 2 and len(summary["history"]) == 2
    assert summary["model"]["kwargs"]["num_classes"] == 3
    assert summary["config"]["store"] == str(Path(tiny_store).resolve())
    assert "epoch 2/2" in result.stderr and "done" in result.stderr
    for name in ("config.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name

    again = train(tiny_store, "--out", run, *TINY, "--epochs", "2")
    assert again.exit_code == 2 and "already holds a training run" in again.stderr
    assert "--resume" in again.stderr

    conflict = train(tiny_store, "--out", run, "--resume", "--lr", "0.5")
    assert conflict.exit_code == 2 and "lr=0.01 (given 0.5)" in conflict.stderr

    longer = train(tiny_store, "--out", run, "--resume", "--epochs", "3", "--json")
    assert longer.exit_code == 0, longer.output
    assert json.loads(longer.stdout)["start_epoch"] == 2 and epochs_in(run) == [1, 2, 3]

    done = train(tiny_store, "--out", run, "--resume", "--epochs", "3")
    assert done.exit_code == 0 and "already finished" in done.stderr and epochs_in(run) == [1, 2, 3]

    ev = CliRunner().invoke(evaluate_command, [str(run), "--clips", "2", "--crops", "3", "--json"],
                            catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["views"] == 6 and report["num_videos"] == 3 and "top-1" in ev.stderr
    assert {"top1", "top5", "mean_class_accuracy", "per_class_accuracy"} <= set(report)
    for name in ("eval.json", "confusion.json", "confusion.png"):
        assert Path(report["files"][name]).is_file() and Path(report["files"][name]).parent == run / "eval"


@pytest.mark.parametrize("variant, model_arg, missing", [
    ({"flow_name": None}, "modality=flow", "no flow 'tvl1'"),
    ({"rgb": False}, "modality=rgb", "no rgb frames"),
])
def test_store_without_the_model_input_exits_2(tmp_path, variant, model_arg, missing):
    from conftest import write_tiny_store

    store = write_tiny_store(tmp_path / "s", **variant)
    run = tmp_path / "run"
    result = train(store, "--out", run, *TINY, "--model-arg", model_arg)
    assert result.exit_code == 2, result.output
    assert missing in result.stderr and "flowkit extract" in result.stderr
    assert not run.exists()  # refused before anything was written


def test_amp_on_cpu_is_ignored_with_a_note(tiny_store, tmp_path):
    result = train(tiny_store, "--out", tmp_path / "run", *TINY, "--epochs", "1", "--amp",
                   "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert "--amp is ignored on CPU" in result.stderr


def test_resume_refusals_are_one_line_and_write_nothing(tiny_store, tmp_path):
    """--resume with --epochs below the epochs trained, or on a store lacking one of the run's
    classes: exit 2, one line naming the fix, the run directory as it was. Before, the first
    exited 0 with config.json saying the smaller --epochs, and a store numbering its classes
    otherwise was trained on with wrong labels."""
    from test_train import _labelled_store, run_files

    run = tmp_path / "run"
    assert train(tiny_store, "--out", run, *TINY, "--epochs", "2").exit_code == 0
    before = run_files(run)
    fewer = train(tiny_store, "--out", run, "--resume", "--epochs", "1")
    assert fewer.exit_code == 2, fewer.output
    assert fewer.stderr.strip().splitlines()[-1].startswith("error: --epochs 1 is fewer than the "
                                                            "2 epochs")
    assert "pass --epochs 2 or more" in fewer.stderr
    videos = [(name, i, label) for label, name in enumerate(("right", "down")) for i in range(4)]
    lacking = _labelled_store(tmp_path / "lacking", ["right", "down", "up"],  # 'left' as 'up'
                              videos + [("left", i, 2, "left") for i in range(4)])
    other = train(lacking, "--out", run, "--resume", "--epochs", "3")
    assert other.exit_code == 2, other.output
    assert other.stderr.strip() == (f"error: store {lacking} lacks 1 of the run's 3 classes (e.g. "
                                    "'left'); resume with a store that holds all of them (the "
                                    f"run's classes are in {run / 'config.json'})")
    assert run_files(run) == before


def test_unlabelled_videos_are_named_in_notes_of_train_and_evaluate(tiny_store, tmp_path):
    """A store whose class-folder tree had a video at its root: train and evaluate leave it out
    and say so, instead of crashing in the loss after writing the run."""
    import shutil

    from test_data import add_unlabelled_videos

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    add_unlabelled_videos(store, "stray")
    run = tmp_path / "run"
    result = train(store, "--out", run, *TINY, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert f"note: 1 video(s) of store {store} have no label" in result.stderr
    assert "'stray'" in result.stderr and "9 training / 3 validation" in result.stderr
    ev = CliRunner().invoke(evaluate_command, [str(run), "--split", "all", "--clips", "1",
                                               "--crops", "1", "--json"], catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["num_videos"] == 12
    assert "note: 1 video(s)" in ev.stderr and "'stray'" in ev.stderr


def test_evaluate_a_split_list_with_crops_says_how_many_were_trained_on(tiny_store, tmp_path):
    """`evaluate --split-list FILE --crops 10` scores the list's videos (not the run's 3
    validation videos) with clips x crops views each, and says how many of them the model was
    trained on (9 of the 12 here): a score partly on training videos is not a held-out one, and
    "all of them" would wrongly dismiss the 3 it never saw. The run was trained with --no-flip,
    so its ten-crop has no mirrored views: 5 crops, said in the line and the JSON."""
    from flowkit.store import FlowStore

    run = tmp_path / "run"
    assert train(tiny_store, "--out", run, *TINY, "--epochs", "1").exit_code == 0
    keys = FlowStore(tiny_store).keys()
    listed = tmp_path / "testlist01.txt"
    listed.write_text("".join(f"{key}.mp4\n" for key in keys))
    ev = CliRunner().invoke(evaluate_command, [str(run), "--split-list", str(listed), "--clips",
                                               "1", "--crops", "10", "--json"],
                            catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["num_videos"] == len(keys) == 12 and report["split"] == f"list {listed}"
    assert (report["clips"], report["crops"], report["views"]) == (1, 10, 5)
    assert report["crop_views"] == 5 and report["mirrored_views"] is False
    assert ("5 views each (1 clips x 5 crops: ten-crop without mirrored views, as trained with "
            "--no-flip)") in ev.stderr, ev.stderr
    assert report["training_videos"] == 9
    assert "NOT held out: 9 of them were training videos" in ev.stderr, ev.stderr


def test_skip_missing_leaves_out_listed_videos_the_store_lacks(tiny_store, tmp_path):
    """Official lists name videos whose extraction failed (an unreadable file: reported and
    skipped by `flowkit extract`), so no store ever holds them. Without --skip-missing train and
    evaluate refuse the lists and name the option (extracting again cannot help); with it they
    run on the rest, and count and name those left out. The run keeps the option: its evaluate
    skips them too, and the score says it is over fewer videos than listed."""
    trainlist, testlist = write_lists(tmp_path)
    run = tmp_path / "run"
    args = [tiny_store, "--out", run, *TINY, "--epochs", "1", "--split-list", trainlist,
            "--val-list", testlist]
    strict = train(*args)
    assert strict.exit_code == 2 and "'down/down_broken'" in strict.stderr
    assert "pass --skip-missing" in strict.stderr and not run.exists()

    result = train(*args, "--skip-missing", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["skip_missing"] is True
    assert "9 training / 3 validation" in result.stderr
    notes = [n for n in summary["notes"] if "listed video(s) are not in store" in n]
    assert len(notes) == 1 and notes[0].startswith("2 listed video(s)")
    assert "'down/down_broken'" in notes[0] and "'right/right_broken'" in notes[0]
    split = json.loads((run / "config.json").read_text())["split"]
    assert "less 2 listed video(s) not in the store" in split["source"]

    ev = CliRunner().invoke(evaluate_command, [str(run), "--split-list", str(testlist), "--clips",
                                               "1", "--crops", "1", "--json"],
                            catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert (report["num_videos"], report["not_in_store"]) == (3, 1)
    assert "less 1 listed video(s) not in the store" in report["split"]
    assert "note: 1 listed video(s) are not in store" in ev.stderr
    assert "'right/right_broken'" in ev.stderr
    refused = CliRunner().invoke(evaluate_command, [str(run), "--split-list", str(testlist),
                                                    "--no-skip-missing"])
    assert refused.exit_code == 2 and "pass --skip-missing" in refused.stderr
    no_list = CliRunner().invoke(evaluate_command, [str(run), "--skip-missing"])
    assert no_list.exit_code == 2 and "--skip-missing needs --split-list" in no_list.stderr


def test_a_repeated_split_list_is_never_half_applied(tiny_store, tmp_path):
    """click keeps the last value of a single option, so `--split-list A --split-list B` used to
    train or score B alone, silently. `train` (one list per option in config.json) refuses the
    repeat; `evaluate` scores the union of the lists' videos."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(f"{c}/{c}_{i}.avi\n" for c in ("right", "down", "left") for i in range(2)))
    b.write_text("".join(f"{c}/{c}_{i}.avi\n" for c in ("right", "down", "left") for i in (2, 3)))
    run = tmp_path / "run"
    for repeat in (["--split-list", a, "--split-list", b],
                   ["--split-list", a, "--val-list", a, "--val-list", b]):
        option = repeat[-2]
        twice = train(tiny_store, "--out", run, *TINY, *repeat)
        assert twice.exit_code == 2 and f"Invalid value for {option}: given 2 times" in twice.stderr
        assert not run.exists()
    assert train(tiny_store, "--out", run, *TINY, "--epochs", "1", "--split-list", a).exit_code == 0
    ev = CliRunner().invoke(evaluate_command, [str(run), "--split-list", str(a), "--split-list",
                                               str(b), "--clips", "1", "--crops", "1", "--json"],
                            catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["num_videos"] == 12 and report["split"] == f"lists {a} + {b}"
    assert report["training_videos"] == 6


def _start(store: Path, run: Path, epochs: int, *extra: str) -> subprocess.Popen:
    code = "from flowkit.cli.train import command; command()"
    return subprocess.Popen([sys.executable, "-c", code, str(store), "--out", str(run), *TINY,
                             "--epochs", str(epochs), "--checkpoint-every", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_for_epochs(proc: subprocess.Popen, run: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(epochs_in(run)) < n:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before epoch {n} was written; "
                        f"give it more epochs\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no epoch {n} after {timeout} s")
        time.sleep(0.02)


def test_killed_and_interrupted_training_resumes_without_duplicates(tiny_store, tmp_path):
    """SIGKILL after epoch 1 was saved, resume; Ctrl-C (SIGINT) later, exit 130, resume again:
    metrics.jsonl ends with epochs 1..N once each and last.pt at epoch N."""
    run, epochs = tmp_path / "run", 40
    first = _start(tiny_store, run, epochs)
    _wait_for_epochs(first, run, 1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = epochs_in(run)
    assert first.returncode == -signal.SIGKILL and 1 <= len(killed_at) < epochs

    second = _start(tiny_store, run, epochs, "--resume")
    _wait_for_epochs(second, run, len(killed_at) + 1)
    second.send_signal(signal.SIGINT)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130, err[-3000:]
    assert "stopping after the current step" in err and "--resume" in err

    third = _start(tiny_store, run, epochs, "--resume", "--json")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-3000:]
    assert json.loads(out)["epochs_done"] == epochs
    assert epochs_in(run) == list(range(1, epochs + 1))
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == epochs and ck["step_in_epoch"] == 0 and ck["global_step"] == 3 * epochs


def test_sigterm_saves_exits_143_and_resumes(tiny_store, tmp_path):
    """SIGTERM (Slurm's, Kubernetes') during training: the step finishes, last.pt is saved, exit 143
    with the resume command; --resume completes every epoch once (before: the epoch in progress
    was lost with no message)."""
    run, epochs = tmp_path / "run", 30
    first = _start(tiny_store, run, epochs)
    _wait_for_epochs(first, run, 1)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 143, err[-3000:]
    assert "SIGTERM: stopping after the current step" in err and "--resume" in err
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["global_step"] >= 3
    second = _start(tiny_store, run, epochs, "--resume", "--json")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert epochs_in(run) == list(range(1, epochs + 1))


def test_evaluate_and_train_flow_stop_on_sigterm(tiny_store, tmp_path):
    """evaluate and train-flow handle SIGTERM like Ctrl-C: exit 143 with a message."""
    run = tmp_path / "run"
    assert train(tiny_store, "--out", run, *TINY, "--epochs", "1").exit_code == 0
    # SIGTERM 2 s after the command installed its handler (the work is running by then).
    code = ("import contextlib, os, signal, sys, threading\n"
            "import flowkit.cli.progress as p\n"
            "original = p.stop_on_signals\n"
            "@contextlib.contextmanager\n"
            "def armed(*a, **k):\n"
            "    with original(*a, **k) as stop:\n"
            "        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
            "        yield stop\n"
            "p.stop_on_signals = armed\n"
            "from flowkit.cli import main\n"
            "sys.argv = ['flowkit'] + sys.argv[1:]; main()")
    evaluate = subprocess.run([sys.executable, "-c", code, "evaluate", str(run), "--split", "all",
                               "--clips", "5000", "--crops", "3", "--batch-size", "1", "--device",
                               "cpu"],
                              capture_output=True, text=True, env=ENV, timeout=300)
    assert evaluate.returncode == 143, evaluate.stderr[-3000:]
    assert "terminated (SIGTERM)" in evaluate.stderr
    flow = subprocess.run([sys.executable, "-c", code, "train-flow", "tvnet", "--data",
                           "synthetic", "--out", str(tmp_path / "tvnet.pt"), "--epochs", "200",
                           "--pairs", "8", "--size", "32x32"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert flow.returncode == 143, flow.stderr[-3000:]
    assert "terminated: " in flow.stderr and "--resume" in flow.stderr


@pytest.mark.parametrize("model, arg, expected", [
    ("cidc", "width=abc", "model 'cidc': width must be an integer (default 64), got 'abc'"),
    ("resnet2d", "layers=abc", "model 'resnet2d': layers must be a list of integers"),
    ("s3d", "layers=[1,1", "model 's3d': layers must be a list of integers (or null), got '[1,1'"),
    ("i3d", "dropout=abc", "model 'i3d': dropout must be a number (default 0.0), got 'abc'"),
    ("trajectorynet", "offsets=maybe", "offsets must be true or false"),
], ids=["cidc-width", "resnet2d-layers", "s3d-layers-json", "i3d-dropout", "trajectorynet-offsets"])
def test_model_arg_of_the_wrong_kind_is_one_line_and_writes_nothing(tiny_store, tmp_path, model,
                                                                    arg, expected):
    """--model-arg values are checked against the model's declared argument types before anything
    is written: one line, exit 2, not a ValueError traceback from inside the model."""
    run = tmp_path / "run"
    result = CliRunner().invoke(train_command, [str(tiny_store), "--out", str(run), "--model",
                                                model, "--model-arg", arg, "--workers", "0"])
    assert result.exit_code == 2, (result.exit_code, result.output[-3000:], result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not run.exists()


def test_create_model_checks_its_keywords_kinds():
    from flowkit.errors import FlowkitError
    from flowkit.models import create_model

    with pytest.raises(FlowkitError, match="width must be an integer"):
        create_model("resnet2d", num_classes=3, width="abc")
    with pytest.raises(FlowkitError, match="has no parameter bogus"):
        create_model("resnet2d", num_classes=3, bogus=1)
    model = create_model("resnet2d", num_classes=3, width=4.0, layers=[1, 1, 1, 1], dropout=0)
    assert model.model_kwargs == {"num_classes": 3, "width": 4.0, "layers": [1, 1, 1, 1],
                                  "dropout": 0}


@pytest.mark.parametrize("reason, code, name", [("terminated", 143, "terminated (SIGTERM)"),
                                                ("interrupted", 130, "interrupted")])
def test_a_stopped_evaluate_says_nothing_was_written(tmp_path, monkeypatch, reason, code, name):
    """evaluate writes its results only at the end: stopped, it says nothing was kept (not the
    commands' "finished work is kept, rerun the same command to resume", which it cannot do),
    with the exit code of the signal."""
    from flowkit.progress import Stopped

    def stopped(*args, **kwargs):
        raise Stopped(reason)

    monkeypatch.setattr("flowkit.train.evaluate_run", stopped)
    result = CliRunner().invoke(evaluate_command, [str(tmp_path), "--device", "cpu"])
    assert result.exit_code == code, result.output
    expected = f"{name}; nothing was written; rerun the same command to evaluate"
    assert result.stderr.strip() == expected, result.stderr


def test_resume_with_a_relative_file_keyword_is_the_same_command(tiny_store, tmp_path,
                                                                  monkeypatch):
    """`--model-arg tvnet_weights=tvnet.pt` is recorded absolute, and the same command plus
    --resume was refused ("the run was trained with model_kwargs={... '/abs/tvnet.pt'} (given
    {... 'tvnet.pt'})"). The given file keywords are compared as absolute paths: the same
    command resumes, from this folder or another one naming the same file; another file is
    still refused, in the CLI and in Python."""
    from dataclasses import asdict

    from flowkit import checkpoints
    from flowkit.flow.tvnet import TVNet
    from flowkit.train import Trainer

    net = TVNet(scales=1, warps=1, iterations=2)
    (tmp_path / "here").mkdir()
    for name in ("tvnet.pt", "other.pt"):
        checkpoints.save_checkpoint(tmp_path / "here" / name, "tvnet", {
            "config": asdict(net.config), "state_dict": net.state_dict()})
    monkeypatch.chdir(tmp_path / "here")
    run = tmp_path / "run"
    args = ["--model", "tvnet", "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]",
            "--frames", "2", "--size", "16", "--batch-size", "3", "--no-flip", "--val-fraction",
            "0.25", "--workers", "0", "--device", "cpu"]
    assert train(tiny_store, "--out", run, *args, "--model-arg", "tvnet_weights=tvnet.pt",
                 "--epochs", "1").exit_code == 0
    same = train(tiny_store, "--out", run, *args, "--model-arg", "tvnet_weights=tvnet.pt",
                 "--epochs", "2", "--resume")
    assert same.exit_code == 0, same.output
    assert epochs_in(run) == [1, 2]
    monkeypatch.chdir(tmp_path)
    there = train(tiny_store, "--out", run, *args, "--model-arg", "tvnet_weights=here/tvnet.pt",
                  "--epochs", "3", "--resume")
    assert there.exit_code == 0, there.output
    assert epochs_in(run) == [1, 2, 3]
    other = train(tiny_store, "--out", run, *args, "--model-arg", "tvnet_weights=here/other.pt",
                  "--epochs", "4", "--resume")
    assert other.exit_code == 2 and "other.pt" in other.stderr and epochs_in(run) == [1, 2, 3]
    kwargs = {"width": 4, "layers": [1, 1, 1, 1], "tvnet_weights": "here/tvnet.pt"}
    assert Trainer.resume(run, model_kwargs=kwargs, epochs=3).config.model_kwargs[
        "tvnet_weights"] == str((tmp_path / "here" / "tvnet.pt").resolve())


def test_a_lost_rank_is_one_line_naming_the_checkpoint_and_resume(tiny_store, tmp_path,
                                                                   monkeypatch):
    """A rank killed under torchrun made the others' next collective raise gloo's RuntimeError
    ("... Connection reset by peer"): 95 lines of traceback and no word of --resume. While a group
    is up, such an error is one line (the cause, the step last.pt holds, --resume), exit 1; any
    other RuntimeError, or one without a group, keeps its traceback."""
    from flowkit import distributed
    from flowkit.train import Trainer

    run = tmp_path / "run"
    assert train(tiny_store, "--out", run, *TINY, "--epochs", "1").exit_code == 0
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["global_step"]

    no_group = distributed.active

    def raising(message, group=True):
        def fit(self, progress, stop):  # Trainer.fit's work, inside its hold of the run
            monkeypatch.setattr(distributed, "active", lambda: group)  # as under torchrun
            raise RuntimeError(message)
        return fit

    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
            "[127.0.0.1]:18321: Connection reset by peer. This is typically caused by a remote "
            "worker hanging or bugs in the application.\nmore lines")
    monkeypatch.setattr(Trainer, "_fit", raising(gloo))
    lost = train(tiny_store, "--out", run, "--resume", "--epochs", "2")
    assert lost.exit_code == 1, lost.output
    assert lost.stderr.splitlines()[-1] == (
        "error: a rank of the run failed (Read error [127.0.0.1]:18321: Connection reset by peer); "
        f"{run / 'checkpoints' / 'last.pt'} holds global step {step} (after epoch 1); continue "
        "with the same command plus --resume")
    assert "Traceback" not in lost.stderr
    for message, group in (("shape mismatch: [3, 4] vs [3, 5]", True), (gloo, False)):
        monkeypatch.setattr(distributed, "active", no_group)  # until fit: the CLI's setup
        monkeypatch.setattr(Trainer, "_fit", raising(message, group))
        with pytest.raises(RuntimeError, match="shape mismatch|Connection reset"):
            train(tiny_store, "--out", run, "--resume", "--epochs", "2")


def test_training_hides_the_sync_bn_deprecation_warning_only(tiny_store, tmp_path, monkeypatch):
    """--sync-bn's CPU SyncBatchNorm calls torch.distributed.nn.functional.all_reduce, which
    torch 2.x deprecates: every rank printed the FutureWarning, which no user can act on. It is
    filtered while training; other warnings still show."""
    import warnings

    from flowkit.train import Trainer

    def fit(self, progress, stop):
        warnings.warn("torch.distributed.nn.functional.all_reduce is deprecated, use "
                      "torch.distributed._functional_collectives.all_reduce instead.",
                      FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_fit", fit)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = train(tiny_store, "--out", tmp_path / "run", *TINY, "--epochs", "1")
    assert result.exit_code == 130, result.output
    assert [str(w.message) for w in seen if w.category is FutureWarning] == [
        "something else is deprecated"]


def test_a_folder_the_file_system_refuses_is_one_line_before_any_work(tiny_store, tmp_path,
                                                                      monkeypatch):
    """A read-only run folder (a shared run) or output folder: one line naming it and the fix,
    exit 2 (a traceback before: evaluate's came after every prediction was made)."""
    import errno

    run = tmp_path / "run"
    assert train(str(tiny_store), "--out", str(run), *TINY, "--epochs", "1").exit_code == 0
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name in ("eval", "ro_run"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    import flowkit.train.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "predict_sharded", lambda *a, **k: 1 / 0)  # not reached
    r = CliRunner().invoke(evaluate_command, [str(run), "--clips", "1", "--crops", "1"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == (f"error: read-only file system: {run / 'eval'}; choose a "
                                "writable place (-o / --out)")
    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(evaluate_command, [str(run), "-o", str(tmp_path / "afile" / "ev")])
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"error: a part of the path is a file, not a folder: {tmp_path / 'afile' / 'ev'}; choose "
        "another place"), r.output
    r = train(str(tiny_store), "--out", str(tmp_path / "ro_run"), *TINY, "--epochs", "1")
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"error: read-only file system: {tmp_path / 'ro_run'}; choose a writable place "
        "(-o / --out)"), r.output


def test_an_os_error_on_no_path_of_the_users_keeps_its_traceback():
    """Only a refusal naming a path becomes one line: anything else is a bug to see whole."""
    import click

    from flowkit.cli import handle_errors

    @click.command()
    @handle_errors
    def broken():
        raise OSError(28, "No space left on device")  # no filename

    r = CliRunner().invoke(broken, [])
    assert isinstance(r.exception, OSError) and r.exit_code == 1


def test_a_refusal_that_names_no_path_is_not_made_one_line():
    """A full disk with no file named (a write deep in a library) is not a path the user chose:
    no one line "no space left on device: None", the traceback stays."""
    import errno

    from flowkit.cli import _refused_path

    assert _refused_path(OSError(errno.ENOSPC, "No space left on device")) is None
    assert _refused_path(OSError(errno.ENOSPC, "No space left on device", "/data/run")) == (
        "no space left on device: /data/run; free space or choose another place (-o / --out)")
