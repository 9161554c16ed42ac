"""flowkit.train: metrics, schedules, checkpoints, exact resume, learning, evaluation."""
from __future__ import annotations

import json
import math
import multiprocessing
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.progress import Progress
from flowkit.train import (EpochBatchSampler, TrainConfig, Trainer,
                           confusion_matrix, evaluate_run, flatten_views, load_checkpoint,
                           lr_factor, mean_class_accuracy, merge_for_resume, parameter_groups,
                           per_class_accuracy, predict, save_checkpoint,
                           topk_accuracy, topk_correct)
from flowkit.train.loading import make_loader
from flowkit.data import SegmentClipsSampler
from flowkit.store import FlowStore
from test_data import add_unlabelled_videos

TINY_MODEL = {"width": 4, "layers": [1, 1, 1, 1], "modality": "flow"}
TIMING_KEYS = ("clips_per_s", "seconds")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def tiny_config(store, **kw) -> TrainConfig:
    """resnet2d on the flow of the tiny store: 2-frame 16 px clips, 3 steps per epoch."""
    base = dict(store=str(store), model="resnet2d", model_kwargs=TINY_MODEL, frames=2, size=16,
                batch_size=3, epochs=2, lr=0.05, flip=False, val_fraction=0.25, workers=0)
    return TrainConfig(**{**base, **kw})


class StepCounter(Progress):
    """Counts optimiser steps (advances of the epoch tasks)."""

    def __init__(self):
        self.steps = 0

    def _changed(self, task) -> None:
        if task.description.startswith("epoch"):
            self.steps += 1


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------- metrics


def test_topk_accuracy_hand_computed():
    scores = np.array([[0.1, 0.7, 0.2, 0.0],    # label 1: top-1
                       [0.5, 0.2, 0.3, 0.0],    # label 2: 2nd
                       [0.1, 0.2, 0.3, 0.4],    # label 0: 4th
                       [0.3, 0.3, 0.2, 0.2]])   # label 1: tie with 0 -> 2nd (stable order)
    labels = np.array([1, 2, 0, 1])
    assert topk_correct(scores, labels, (1, 2, 3, 4)) == {1: 1, 2: 3, 3: 3, 4: 4}
    acc = topk_accuracy(torch.tensor(scores), torch.tensor(labels), (1, 2, 5))
    assert acc == {1: 0.25, 2: 0.75, 5: 1.0}  # k > K counts as K
    assert math.isnan(topk_accuracy(np.zeros((0, 3)), np.zeros(0, int))[1])
    with pytest.raises(FlowkitError):
        topk_accuracy(scores, labels[:3])


def test_topk_refuses_labels_outside_the_classes():
    """A label -1 (unlabelled video) or K would otherwise count as top-1 correct (the argmax of
    a row without the label is 0)."""
    scores = [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\).*"
                                             rf"e\.g\. {bad} at row 1"):
            topk_accuracy(scores, [1, bad], (1, 2))
    assert topk_accuracy(scores, [2, 0], (1, 2)) == {1: 0.5, 2: 0.5}  # valid labels still work
    assert topk_correct(np.zeros((0, 3)), np.zeros(0, np.int64), (1,)) == {1: 0}


def test_topk_breaks_ties_by_class_index_with_many_classes():
    """With K = 101 (UCF101) and tied scores, the rank of the label counts the classes scored
    above it plus the tied ones of lower index (a stable sort): numpy's default sort is not
    stable beyond 16 elements, and results would then depend on the platform."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(40, 101)).astype(np.float32)  # many ties per row
    labels = rng.integers(0, 101, size=40)
    rows = np.arange(40)
    own = scores[rows, labels][:, None]
    classes = np.arange(101)[None, :]
    rank = ((scores > own) | ((scores == own) & (classes < labels[:, None]))).sum(1)
    topk = (1, 5, 10, 30, 60)
    assert topk_correct(scores, labels, topk) == {k: int((rank < k).sum()) for k in topk}


def test_confusion_matrix_and_mean_class_accuracy():
    labels = [0, 0, 0, 1, 1, 3]
    preds = [0, 1, 0, 1, 1, 0]
    cm = confusion_matrix(torch.tensor(preds), labels, 4)
    expected = np.array([[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    per_class = per_class_accuracy(cm)
    np.testing.assert_allclose(per_class[[0, 1, 3]], [2 / 3, 1.0, 0.0])
    assert np.isnan(per_class[2])  # class 2 has no video: left out of the mean
    assert mean_class_accuracy(cm) == pytest.approx((2 / 3 + 1 + 0) / 3)
    with pytest.raises(FlowkitError, match="labels must be in"):
        confusion_matrix([0], [4], 4)


# ----------------------------------------------------------------------------------------- schedule


def test_lr_factor_warmup_cosine_step_constant():
    kw = dict(total_steps=10, warmup_steps=2)
    assert [lr_factor(s, schedule="cosine", **kw) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(6, schedule="cosine", **kw) == pytest.approx(0.5)   # halfway through decay
    assert lr_factor(10, schedule="cosine", **kw) == pytest.approx(0.0)
    step = [lr_factor(s, schedule="step", milestones=(4, 8), gamma=0.1, **kw) for s in (3, 4, 8)]
    assert step == pytest.approx([1.0, 0.1, 0.01])
    assert lr_factor(9, schedule="constant", **kw) == 1.0


def test_parameter_groups_skip_decay_on_bias_and_norm():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Linear(4, 3))
    decay, no_decay = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight+bias, linear bias


def test_build_optimizer_sets_momentum_and_scaled_lr_on_every_group(tmp_path):
    """SGD gets the configured momentum in every group (without it training is plain SGD, far
    slower), and a model's ``lr_scales()`` prefix trains at ``lr * lr_scale`` with AdamW too."""
    from flowkit.train.optim import build_optimizer

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

        def lr_scales(self):
            return {"head.": 0.1}

    sgd = build_optimizer(Scaled(), TrainConfig(store=str(tmp_path), model="resnet2d", lr=0.2,
                                                momentum=0.8))
    assert len(sgd.param_groups) == 3
    assert [g["momentum"] for g in sgd.param_groups] == [0.8, 0.8, 0.8]
    adamw = build_optimizer(Scaled(), TrainConfig(store=str(tmp_path), model="resnet2d", lr=0.2,
                                                  optimizer="adamw"))
    assert [g["lr_scale"] for g in adamw.param_groups] == [1.0, 1.0, 0.1]
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx([0.2, 0.2, 0.02])


def test_epoch_batch_sampler_is_a_function_of_seed_and_epoch():
    s = EpochBatchSampler(10, 3, seed=5)
    assert s.num_batches == 3 and len(s) == 3  # the last incomplete batch is dropped
    s.set_epoch(0)
    e0 = list(s)
    flat = [i for b in e0 for i in b]
    assert len(set(flat)) == 9 and set(flat) <= set(range(10)) and flat != list(range(9))
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0, skip=2)
    assert list(s) == e0[2:] and len(s) == 1
    assert EpochBatchSampler(10, 3, seed=5).batches() == e0  # fresh object, same epoch: same order
    assert EpochBatchSampler(2, 3).num_batches == 1  # smaller than a batch: kept


class WorkerPids(torch.utils.data.Dataset):
    """Item i: the pid of the process that read it."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return os.getpid()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_loader_workers_survive_a_stop_signal_to_the_process_group(sig):
    # Slurm signals the whole group: the worker must leave the stop to the main process. Sent by
    # another process, as there (torch's worker handler treats its parent's SIGTERM otherwise).
    loader = make_loader(WorkerPids(), batch_size=1, workers=1, device=torch.device("cpu"))
    batches = iter(loader)
    pid = int(next(batches))
    subprocess.run([sys.executable, "-c", f"import os; os.kill({pid}, {int(sig)})"], check=True)
    # Items 3.. need the worker to take new indices, after the pending signal reached it.
    assert [int(b) for b in batches] == [pid] * 7


class SignalAsTheWorkersStart:
    """Batches [0] .. [7]; has another process send SIGTERM to the loader's workers when the loader
    asks for the first one, right after forking them (before their ``worker_init_fn`` may run)."""

    def __len__(self):
        return 8

    def __iter__(self):
        pids = [p.pid for p in multiprocessing.active_children() if p.daemon]  # the workers
        subprocess.run([sys.executable, "-c", f"import os; [os.kill(p, 15) for p in {pids}]"],
                       check=True)
        return iter([[i] for i in range(8)])


def test_loader_workers_survive_a_sigterm_as_they_start(monkeypatch):
    # Widen the moment between torch's worker handlers (SIGTERM kills) and worker_init_fn.
    from torch.utils.data._utils import signal_handling
    torch_handlers = signal_handling._set_worker_signal_handlers

    def slowly(*args):
        torch_handlers(*args)
        time.sleep(1)

    monkeypatch.setattr(signal_handling, "_set_worker_signal_handlers", slowly)
    loader = make_loader(WorkerPids(), batch_sampler=SignalAsTheWorkersStart(), workers=1,
                         device=torch.device("cpu"))
    pids = [int(b) for b in loader]
    assert len(pids) == 8 and len(set(pids)) == 1 and pids[0] != os.getpid()


def test_a_failing_run_with_loader_workers_still_exits(tmp_path):
    # The workers ignore their group's SIGTERM, not their parent's: an error with the loader alive
    # (held by the traceback) ends in multiprocessing's exit, which terminates them and waits.
    script = tmp_path / "fail.py"
    script.write_text(
        "import torch\n"
        "from flowkit.train.loading import make_loader\n"
        "batches = iter(make_loader(list(range(8)), workers=2, device=torch.device('cpu')))\n"
        "next(batches)\n"
        "raise ValueError('boom')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "ValueError: boom" in result.stderr


def test_segment_clips_sampler_matches_centre_segments():
    from flowkit.data import SegmentSampler

    one = SegmentClipsSampler(1, segments=3, frames=2)
    centre = SegmentSampler(3, frames=2, random=False)(20, np.random.default_rng(0))
    np.testing.assert_array_equal(one(20)[0], centre[0])
    two = SegmentClipsSampler(2, segments=3, frames=2)(20)
    assert len(two) == 2 and all(c.shape == (6,) for c in two)
    assert np.all(two[0] <= two[1]) and not np.array_equal(two[0], two[1])


# ----------------------------------------------------------------------------------------- config


def test_merge_for_resume_allows_only_resumable_changes(tmp_path):
    saved = tiny_config(tmp_path)
    assert merge_for_resume(saved, {"epochs": 5, "lr": 0.05}).epochs == 5
    with pytest.raises(FlowkitError, match=r"lr=0\.05 \(given 0\.1\)"):
        merge_for_resume(saved, {"lr": 0.1})
    with pytest.raises(FlowkitError, match="num_classes comes from the store"):
        tiny_config(tmp_path, model_kwargs={"num_classes": 3}).validate()


def test_merge_for_resume_of_an_older_run_with_a_relative_weights_path(tmp_path, monkeypatch):
    """An older run recorded tvnet_weights as typed (relative); resumed from its folder with the
    same path given again, it resumes: both name the same file, not a changed model keyword."""
    monkeypatch.chdir(tmp_path)
    saved = tiny_config(tmp_path, model="tvnet", model_kwargs={"tvnet_weights": "tvnet.pt"})
    given = {"model": "tvnet", "model_kwargs": {"tvnet_weights": "tvnet.pt"}, "epochs": 3}
    merged = merge_for_resume(saved, given)
    assert merged.epochs == 3 and merged.model_kwargs == {"tvnet_weights": "tvnet.pt"}


def test_val_list_without_split_list_is_refused(tmp_path):
    """--val-list alone would be ignored (the split comes from --val-fraction): refused instead."""
    with pytest.raises(FlowkitError, match="--val-list needs --split-list"):
        tiny_config(tmp_path, val_list=str(tmp_path / "testlist.txt")).validate()


# ----------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
                           "history": [{"epoch": 1, "val_top1": None}]})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    ck = load_checkpoint(path)
    assert ck["epoch"] == 3 and ck["history"] == [{"epoch": 1, "val_top1": None}]
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optimizer"])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["momentum_buffer"], s2["state"][i]["momentum_buffer"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FlowkitError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------------------- training


def assert_same_run(a, b):
    sa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert sa["global_step"] == sb["global_step"] and sa["epoch"] == sb["epoch"]
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), f"parameter {k} differs"
    for i, st in sa["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, sb["optimizer"]["state"][i][name])
    assert without_timing(metrics_lines(a)) == without_timing(metrics_lines(b))


@pytest.mark.parametrize("stop_after", [3, 4], ids=["epoch_end", "mid_epoch"])
def test_resume_is_exact(tiny_store, tmp_path, stop_after):
    """2 epochs straight == stopped (after epoch 1, or after step 1 of epoch 2) + resumed; with
    dropout (global RNG) and a resumed run using DataLoader workers."""
    kw = dict(model_kwargs={**TINY_MODEL, "dropout": 0.5}, epochs=2)
    straight = tmp_path / "straight"
    Trainer(tiny_config(tiny_store, **kw), straight).fit()

    stopped = tmp_path / "stopped"
    counter = StepCounter()
    first = Trainer(tiny_config(tiny_store, **kw), stopped).fit(
        counter, stop=lambda: counter.steps >= stop_after)
    assert first.interrupted and first.global_step == stop_after
    ck = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"]) == ((1, 0) if stop_after == 3 else (1, 1))
    assert len(metrics_lines(stopped)) == 1
    created = json.loads((stopped / "config.json").read_text())["created"]
    config = json.loads((stopped / "config.json").read_text())
    config["created"] = "2001-01-01T00:00:00+00:00"  # config.json is not where it is kept
    (stopped / "config.json").write_text(json.dumps(config))
    time.sleep(1.1)  # "created" counts seconds: a resume's own time would differ

    resumed = Trainer.resume(stopped, workers=2).fit()
    assert not resumed.interrupted and resumed.epochs_done == 2
    # the run keeps the start its checkpoint records, not the resume's time
    assert json.loads((stopped / "config.json").read_text())["created"] == created
    assert [r["epoch"] for r in metrics_lines(stopped)] == [1, 2]
    assert_same_run(straight, stopped)
    assert (stopped / "checkpoints" / "best.pt").is_file()


def test_a_kill_between_best_and_last_is_redone_on_resume(tiny_store, tmp_path, monkeypatch):
    """The process dies right after the first checkpoint file of an epoch end that is the best
    so far: after --resume, best.pt is the state last.pt names as the best."""
    import flowkit.train.loop as loop

    class Killed(BaseException):
        pass

    real = loop.save_checkpoint

    def save_then_die(path, payload):
        real(path, payload)
        if payload["epoch"] == 2 and payload["step_in_epoch"] == 0:
            raise Killed

    config = tiny_config(tiny_store, epochs=2, val_fraction=0.0, optimizer="adamw", lr=0.01,
                         batch_size=6)
    run = tmp_path / "run"
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        Trainer(config, run).fit()
    monkeypatch.setattr(loop, "save_checkpoint", real)
    result = Trainer.resume(run).fit()
    assert result.best_epoch == 2, result.history  # the killed epoch end was a new best
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == last["best_epoch"] == 2 and best["best_metric"] == last["best_metric"]
    for k, v in last["model"].items():
        assert torch.equal(best["model"][k], v), k
    assert [r["epoch"] for r in metrics_lines(run)] == [1, 2]


def test_epoch_end_bookkeeping_ties_late_stop_and_checkpoint_every(tiny_store, tmp_path,
                                                                    monkeypatch):
    """2 epochs of 3 steps, --checkpoint-every 2, the same val top-1 both epochs, and a stop that
    turns true only after the last epoch's validation:

    - the best epoch is the first with the best top-1 (a tie is no improvement: best.pt is not
      rewritten with a later, equally good state);
    - the run finished, so it is not ``interrupted`` (the CLI would otherwise say to --resume a
      run with nothing left to train);
    - mid-epoch checkpoints are written every 2 *global* steps (2 and 4), as --checkpoint-every
      says, not every 2 steps of each epoch."""
    calls = []

    def same_top1(self, progress=None):
        calls.append(1)
        return {"loss": 1.0, "top1": 0.5, "top5": None}

    saved_at = []
    real_mid = Trainer._save_mid_epoch

    def recording(self, state, *args):
        saved_at.append(state.global_step)
        return real_mid(self, state, *args)

    monkeypatch.setattr(Trainer, "validate", same_top1)
    monkeypatch.setattr(Trainer, "_save_mid_epoch", recording)
    result = Trainer(tiny_config(tiny_store, epochs=2, checkpoint_every=2), tmp_path / "run").fit(
        stop=lambda: len(calls) == 2)
    assert result.epochs_done == 2 and result.global_step == 6
    assert not result.interrupted
    assert result.best_epoch == 1 and result.best_metric == 0.5
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == 1
    assert saved_at == [2, 4]


def test_training_learns_the_tiny_motion_task(tiny_store, tmp_path):
    """Classes differ only in motion direction: a flow model fits them within a few epochs."""
    config = tiny_config(tiny_store, model_kwargs={**TINY_MODEL}, batch_size=6, epochs=8,
                         optimizer="adamw", lr=0.01, val_fraction=0.0)
    trainer = Trainer(config, tmp_path / "run")
    epochs_sampled = []
    set_epoch = trainer.train_set.set_epoch
    trainer.train_set.set_epoch = lambda e: (epochs_sampled.append(e), set_epoch(e))
    result = trainer.fit()
    assert epochs_sampled == list(range(8))  # new random clips and crops every epoch
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert max(r["train_acc"] for r in result.history[-3:]) >= 0.9, result.history
    lines = metrics_lines(tmp_path / "run")
    assert [r["epoch"] for r in lines] == list(range(1, 9))
    assert set(lines[0]) == {"epoch", "step", "train_loss", "train_acc", "val_loss", "val_top1",
                             "val_top5", "lr", "clips_per_s", "seconds"}
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config_json["model"] == {"name": "resnet2d", "kwargs": {"num_classes": 3, **TINY_MODEL}}
    assert config_json["split"]["train_count"] == 12 and config_json["config"]["seed"] == 0
    assert config_json["flowkit_version"]
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ck["best_epoch"] == result.best_epoch and ck["config"] == config_json


def test_missing_flow_fails_before_writing(tmp_path):
    from conftest import write_tiny_store

    store = write_tiny_store(tmp_path / "s", flow_name=None)
    run = tmp_path / "run"
    with pytest.raises(FlowkitError, match=r"no flow 'tvl1'.*flowkit extract"):
        Trainer(tiny_config(store), run)
    assert not run.exists()


@pytest.mark.parametrize("model, kwargs, options, message", [
    ("cidc", {**TINY_MODEL, "frames": 8}, {},
     r"^model 'cidc': frames=8 \(--model-arg\) does not match the run's clips of 2 frames "
     r"\(--frames 2\); leave `--model-arg frames=8` out \(it follows the clip length\) or pass "
     r"--frames 8$"),
    ("tvnet", {"width": 4, "layers": [1, 1, 1, 1], "frames": 8}, {"segments": 2},
     r"clips of 4 frames \(--segments 2 x --frames 2\); .* or pass --frames 4$"),
    ("ddn", {"width": 4, "layers": [1, 1, 1, 1]}, {"frames": 1},
     r"^ddn's motion and change branch needs clips of at least 2 frames, got 1; pass --frames 2"),
])
def test_a_model_that_cannot_take_the_clips_fails_before_writing(tiny_store, tmp_path, model,
                                                                 kwargs, options, message):
    """These failed on the first batch, after config.json was written: the command the error
    named was then refused ("already holds a training run"), and --resume failed again."""
    run = tmp_path / "run"
    with pytest.raises(FlowkitError, match=message):
        Trainer(tiny_config(tiny_store, model=model, model_kwargs=kwargs, **options), run)
    assert not run.exists()


def test_unlabelled_videos_are_left_out_of_training_and_evaluation(tiny_store, tmp_path):
    """A video outside the class folders (label -1) is neither trained on, validated nor scored,
    and a note names it (it used to reach the loss and crash the run)."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    add_unlabelled_videos(store, "stray")
    logged = []
    trainer = Trainer(tiny_config(store, epochs=1), tmp_path / "run", log=logged.append)
    assert "stray" not in trainer.train_keys + trainer.val_keys
    assert (len(trainer.train_keys), len(trainer.val_keys)) == (9, 3)
    assert len(logged) == 1 and "1 video(s)" in logged[0] and "'stray'" in logged[0]
    assert "with --annotations LIST" in logged[0]  # the rerun that labels it, in place
    result = trainer.fit()
    assert result.epochs_done == 1 and result.notes == logged
    ev = evaluate_run(tmp_path / "run", store, clips=1, crops=1, split="all", checkpoint="last",
                      out_dir=False)  # last: best.pt adds a note (selected on the val videos)
    assert ev.num_videos == 12 and ev.confusion.sum() == 12
    assert "stray" not in [p["key"] for p in ev.report["predictions"]]
    assert len(ev.report["notes"]) == 1 and "'stray'" in ev.report["notes"][0]


def test_a_store_without_labelled_videos_fails_before_writing(tmp_path):
    store = tmp_path / "store"
    FlowStore(store, mode="a", classes=["right", "down"]).close()
    add_unlabelled_videos(store, "a", "b")
    run = tmp_path / "run"
    with pytest.raises(FlowkitError, match=r"no labelled training videos.*2 video\(s\).*'a'"):
        Trainer(tiny_config(store), run)
    assert not run.exists()
    # A flat store (Kinetics-like, no class names): the fix named is the --annotations rerun,
    # which fills in the labels (it said only "extract it from a class-folder tree").
    flat = tmp_path / "flat"
    FlowStore(flat, mode="a").close()
    add_unlabelled_videos(flat, "a", "b")
    with pytest.raises(FlowkitError, match=r"has no class names: its videos are unlabelled; .*"
                                           r"or rerun the store's `flowkit extract` .* with "
                                           r"--annotations LIST .* fills in the labels"):
        Trainer(tiny_config(flat), run)


def test_evaluating_unlabelled_videos_names_the_rerun_that_labels_them(tiny_store, tmp_path):
    """A run evaluated on a store whose videos are unlabelled (a flat extraction): the message
    said "evaluate labelled videos (--split-list FILE)", but a list only chooses videos; the
    store labels them, and an --annotations rerun fills the labels in."""
    Trainer(tiny_config(tiny_store, epochs=1), tmp_path / "run").fit()
    flat = tmp_path / "flat"
    FlowStore(flat, mode="a", classes=["right", "down", "left"]).close()
    add_unlabelled_videos(flat, "a", "b")
    with pytest.raises(FlowkitError, match=r"none of the 2 videos .* \(e\.g\. 'a' is unlabelled\); "
                                           r"label them: rerun the store's `flowkit extract`"):
        evaluate_run(tmp_path / "run", flat, clips=1, crops=1, split="all", out_dir=False)


def test_existing_run_is_refused_without_resume_or_overwrite(tiny_store, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    with pytest.raises(FlowkitError, match="already holds a training run.*--resume.*--overwrite"):
        Trainer(tiny_config(tiny_store, epochs=1), run)
    (run / "checkpoints" / "best.pt").unlink()
    evaluate_run(run, clips=1, crops=1, checkpoint="last")  # RUN_DIR/eval/: the old run's
    (run / "notes.txt").write_text("mine")
    Trainer(tiny_config(tiny_store, epochs=1, seed=1), run, overwrite=True).fit()
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 1
    assert [r["epoch"] for r in metrics_lines(run)] == [1]
    # the old run's results go with it (they would pass for the new one's); other files stay
    assert not (run / "eval").exists() and (run / "notes.txt").read_text() == "mine"


def test_a_run_folder_is_held_by_one_training_from_its_check_to_its_end(tiny_store, tmp_path,
                                                                         monkeypatch):
    """Two trainings (new or --resume) into one folder: the second is refused while the first's
    Trainer exists, with nothing written (an earlier Trainer of this process, a notebook cell run
    again, is named as such, not as "another training" to wait for); evaluate says the run is
    still training (not "stopped", with a --resume it would refuse); the hold ends with fit,
    also when fit raises, and a refused or failed Trainer leaves no folder behind."""
    from flowkit.files import host_name

    run = tmp_path / "a" / "run"
    first = Trainer(tiny_config(tiny_store, epochs=1), run)
    in_use = (rf"^{re.escape(str(run))} is held by an earlier Trainer of this process \(built, "
              r"not yet fitted, or its fit still running\): call its close\(\)")
    for overwrite in (False, True):
        with pytest.raises(FlowkitError, match=in_use):
            Trainer(tiny_config(tiny_store, epochs=1, seed=1), run, overwrite=overwrite)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing of the second
    with pytest.raises(FlowkitError, match=rf"best\.pt does not exist yet: {re.escape(str(run))} "
                                           rf"is still training \(pid {os.getpid()} on "
                                           rf"{host_name()} "):
        evaluate_run(run, clips=1, crops=1, out_dir=False)
    first.fit()
    assert not (run / ".lock").exists()
    resumed = Trainer.resume(run, epochs=2)
    with pytest.raises(FlowkitError, match=in_use):
        Trainer.resume(run, epochs=2)
    monkeypatch.setattr(Trainer, "_train_step", lambda self, batch, opt: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        resumed.fit()
    assert not (run / ".lock").exists() and [r["epoch"] for r in metrics_lines(run)] == [1]
    with pytest.raises(FlowkitError, match="already holds a training run"):
        Trainer(tiny_config(tiny_store, epochs=1), run)
    other = tmp_path / "b" / "run"
    with pytest.raises(FlowkitError, match="needs clips of at least 2 frames"):
        Trainer(tiny_config(tiny_store, model="ddn", model_kwargs={"width": 4, "layers": [1] * 4},
                            frames=1), other)
    assert not (tmp_path / "b").exists()


def test_a_run_folder_on_a_file_system_without_hard_links_is_refused_with_the_fix(
        tiny_store, tmp_path, monkeypatch):
    """The run lock is a hard link (a store claim): exFAT / FAT drives and some FUSE or SMB mounts
    refuse one. One FlowkitError naming the file system (a PermissionError traceback before),
    and the folder the Trainer made is gone."""
    def refuse(src, dst, *a, **kw):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(src), None, str(dst))

    monkeypatch.setattr(os, "link", refuse)
    run = tmp_path / "usb" / "run"
    with pytest.raises(FlowkitError, match=rf"^{re.escape(str(run))}: its file system refuses "
                                           r"hard links \(Operation not permitted\)"):
        Trainer(tiny_config(tiny_store, epochs=1), run)
    assert not (tmp_path / "usb").exists()


def test_resuming_a_run_whose_store_moved_says_so(tiny_store, tmp_path):
    """Not "create it with flowkit extract" (the store exists, elsewhere): --resume takes STORE's
    new path, and the message names the command."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    run = tmp_path / "run"
    Trainer(tiny_config(store, epochs=1), run).fit()
    store.rename(tmp_path / "moved")
    with pytest.raises(FlowkitError, match=rf"^store {re.escape(str(store))} is not there "
                                           r"\(moved or renamed\?\); resume with its path now: "
                                           rf"flowkit train NEW_STORE -o {re.escape(str(run))} "
                                           r"--resume$"):
        Trainer.resume(run, epochs=2)
    Trainer.resume(run, epochs=2, store=str(tmp_path / "moved")).fit()
    assert [r["epoch"] for r in metrics_lines(run)] == [1, 2]


def test_a_dead_trainings_hold_is_taken_over(tiny_store, tmp_path):
    """Claims' rule: a holder of this host whose process is gone, or one of another host whose
    file went untouched for 10 minutes, is taken over; another host's fresh one is not."""
    from flowkit.files import host_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    lock.write_text(json.dumps({"host": host_name(), "pid": dead.pid, "since": "then"}))
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    assert not lock.exists() and [r["epoch"] for r in metrics_lines(run)] == [1]
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then"}))
    with pytest.raises(FlowkitError, match=r"in use by another training \(flowkit train, pid 1 "
                       r"on elsewhere \(since then\)\)"):
        Trainer.resume(run, epochs=2)
    old = time.time() - 11 * 60
    os.utime(lock, (old, old))
    Trainer.resume(run, epochs=2).fit()
    assert not lock.exists() and [r["epoch"] for r in metrics_lines(run)] == [1, 2]


def test_a_batch_the_ranks_cannot_share_is_refused_before_the_header(tiny_store, tmp_path,
                                                                      monkeypatch):
    """Checked when the Trainer is built (the CLI prints each rank's part of the batch then),
    not in fit; a resumed run, whose --batch-size is fixed, is told which rank counts divide it."""
    from flowkit import distributed

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()  # 1 rank, batch of 3
    before = run_files(run)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(FlowkitError, match=r"^the run's batch of 3 clips cannot be split over 2 "
                       r"ranks; resume with a number of ranks that divides 3: 1 or 3$"):
        Trainer.resume(run, epochs=2)
    with pytest.raises(FlowkitError, match=r"^--batch-size 3 .* must be a multiple of the 2 ranks"):
        Trainer(tiny_config(tiny_store), tmp_path / "new")
    with pytest.raises(FlowkitError, match=r"fewer than one global batch of 40 clips, which 2 "
                       r"ranks need; lower --batch-size or train in one process$"):
        Trainer(tiny_config(tiny_store, batch_size=40), tmp_path / "new")
    assert run_files(run) == before and not (tmp_path / "new").exists()


def test_resuming_on_another_rank_count_is_noted_and_kept_in_config(tiny_store, tmp_path):
    """A run of 3 ranks (its checkpoint says so) resumed in one process: a note names the change
    and the batch-norm batch per rank; config.json keeps the history and the current count."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    last = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["config"]["world_size"] = 3
    ckpt["config"].pop("world_sizes", None)  # as a flowkit before the history wrote it
    save_checkpoint(last, ckpt)
    notes = []
    Trainer.resume(run, epochs=2, log=notes.append).fit()
    assert ("the run trained on 3 rank(s) until step 3 and continues on 1: the same batches of 3 "
            "clips; batch-norm statistics are per rank: over 1 clips before, 3 now (--sync-bn "
            "shares them)") in notes
    saved = json.loads((run / "config.json").read_text())
    assert saved["world_size"] == 1
    assert saved["world_sizes"] == [{"from_step": 0, "world_size": 3},
                                    {"from_step": 3, "world_size": 1}]
    notes.clear()  # the same rank count again: nothing to note, the history is kept
    Trainer.resume(run, epochs=3, log=notes.append).fit()
    assert not [n for n in notes if "rank(s)" in n]
    assert json.loads((run / "config.json").read_text())["world_sizes"] == saved["world_sizes"]


# ----------------------------------------------------------------------------------------- evaluation


class MeanFlowModel(torch.nn.Module):
    """Logits = (mean u, mean v, 0) of each view: views differ, so averaging is visible."""
    inputs, flow_stack = ("flow",), 1

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, inputs):
        flow = inputs["flow"]
        self.batches.append(flow.shape)
        m = flow.mean(dim=(2, 3, 4))
        return {"logits": torch.cat([m, torch.zeros_like(m[:, :1])], 1) * 10}


def test_predict_averages_softmax_over_views():
    b, v = 2, 6
    flow = torch.randn(b, v, 2, 3, 4, 4)
    batch = {"flow": flow, "flow_bound": torch.tensor([20.0, 5.0]), "label": torch.tensor([0, 2]),
             "index": torch.tensor([0, 1])}
    flat, views = flatten_views(batch)
    assert views == v and flat["flow"].shape == (b * v, 2, 3, 4, 4)
    assert flat["flow_bound"].tolist() == [20.0] * v + [5.0] * v
    model = MeanFlowModel()
    model.train()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    scores, labels, index = predict(model, [batch], torch.device("cpu"))
    assert seen == [False] and model.training  # in eval mode, then back to training mode
    assert model.batches == [(b * v, 2, 3, 4, 4)]
    m = flow.mean(dim=(3, 4, 5))
    logits = torch.cat([m, torch.zeros(b, v, 1)], 2) * 10
    expected = torch.softmax(logits, dim=2).mean(1)  # softmax per view, then mean
    torch.testing.assert_close(scores, expected)
    assert labels.tolist() == [0, 2] and index.tolist() == [0, 1]


def test_evaluate_writes_results(tiny_store, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    result = evaluate_run(run, clips=2, crops=3, checkpoint="last")
    assert result.views == 6 and result.num_videos == 3  # the run's validation split
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["views"] == 6 and report["split"] == "the run's validation split"
    assert len(report["predictions"]) == 3 and 0 <= report["top1"] <= 1
    assert report["top5"] is None  # 3 classes: every video is in its top 5
    assert report["training_videos"] == 0 and report["held_out"]
    confusion = json.loads((run / "eval" / "confusion.json").read_text())
    assert np.array(confusion["matrix"]).shape == (3, 3) and np.sum(confusion["matrix"]) == 3
    assert confusion["classes"] == ["right", "down", "left"]
    png = (run / "eval" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    everything = evaluate_run(run, clips=1, crops=1, split="all", out_dir=tmp_path / "all")
    assert everything.num_videos == 12 and everything.confusion.sum() == 12
    assert (tmp_path / "all" / "eval.json").is_file()


def test_evaluate_ten_crop_of_a_no_flip_run_has_no_mirrored_views(tiny_store, tmp_path):
    """--no-flip exists because a mirror changes the class (left <-> right): its run is scored on
    the 5 unmirrored crops of ten-crop (mirrored ones read as the other class: 50% instead of
    100% on toy direction classes), and eval.json says which views it used. A run trained with
    flips keeps the standard ten-crop."""
    for flip, views in ((False, 5), (True, 10)):
        run = tmp_path / f"run_flip_{flip}"
        Trainer(tiny_config(tiny_store, epochs=1, flip=flip), run).fit()
        out = tmp_path / f"eval_flip_{flip}"
        result = evaluate_run(run, clips=2, crops=10, checkpoint="last", out_dir=out)
        report = json.loads((out / "eval.json").read_text())
        assert (report["crops"], report["crop_views"]) == (10, views)
        assert report["mirrored_views"] is flip
        assert report["views"] == result.views == 2 * views
    # Of the flip run (the last), one or three crops are not mirrored: the report says so.
    for crops in (1, 3):
        result = evaluate_run(run, clips=1, crops=crops, checkpoint="last", out_dir=False)
        assert result.report["mirrored_views"] is False


def test_evaluate_a_run_stopped_in_its_first_epoch_names_checkpoint_last(tiny_store, tmp_path):
    """A run stopped inside its first epoch has last.pt but no best.pt (written at each epoch's
    end): evaluate names the two ways on (--checkpoint last, train --resume), not `flowkit train
    --out RUN`, which refuses the existing run."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    (run / "checkpoints" / "best.pt").unlink()
    expected = (r"best\.pt does not exist but \S*last\.pt does \(the run stopped before its first "
                r"epoch ended\); evaluate it with --checkpoint last, or finish training with "
                rf"`flowkit train \.\.\. --out {re.escape(str(run))} --resume`$")
    with pytest.raises(FlowkitError, match=expected):
        evaluate_run(run, clips=1, crops=1, out_dir=False)
    assert evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False).num_videos == 3


def test_evaluate_a_run_killed_before_its_first_save_names_resume(tiny_store, tmp_path):
    """config.json but no checkpoint (killed before its first save): `flowkit train --out RUN`
    would refuse the run, so evaluate names --resume; a folder without a run names training."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).unlink()
    expected = (rf"{re.escape(str(run))} has no checkpoint yet \(the run stopped before its first "
                rf"save\); continue training it with `flowkit train \.\.\. --out "
                rf"{re.escape(str(run))} --resume`$")
    for checkpoint in ("best", "last"):
        with pytest.raises(FlowkitError, match=expected):
            evaluate_run(run, clips=1, crops=1, checkpoint=checkpoint, out_dir=False)
    (run / "config.json").unlink()
    with pytest.raises(FlowkitError, match=r"best\.pt does not exist; train the run first"):
        evaluate_run(run, clips=1, crops=1, out_dir=False)


def test_evaluate_after_the_training_store_moved_says_to_pass_its_path(tiny_store, tmp_path):
    """The store a run recorded is gone (moved): evaluate says so and how to name its new place,
    not "create it with flowkit extract" (a fresh store, where the run's store was moved)."""
    store = shutil.copytree(tiny_store, tmp_path / "store")
    run = tmp_path / "run"
    Trainer(tiny_config(store, epochs=1), run).fit()
    moved = store.rename(tmp_path / "moved")
    with pytest.raises(FlowkitError, match=rf"^the run's training store {store} \(recorded in "
                                           rf"{run / 'config.json'}\) is not there; if it was "
                                           rf"moved, pass its new path: flowkit evaluate {run} "
                                           r"STORE$"):
        evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False)
    assert evaluate_run(run, moved, clips=1, crops=1, checkpoint="last",
                        out_dir=False).num_videos == 3


def test_evaluate_defaults_to_the_store_a_resumed_run_moved_to(tiny_store, tmp_path):
    """`--resume` may take the run to another STORE (config.json records it); evaluate's default
    store is then that one, whichever checkpoint is scored (best.pt of an epoch before the move
    names the old store, which evaluate used, and the old store was gone)."""
    store = shutil.copytree(tiny_store, tmp_path / "store")
    run = tmp_path / "run"
    Trainer(tiny_config(store, epochs=1), run).fit()
    moved = store.rename(tmp_path / "moved")
    Trainer.resume(run, store=str(moved), epochs=2).fit()
    for checkpoint in ("best", "last"):
        result = evaluate_run(run, clips=1, crops=1, checkpoint=checkpoint, out_dir=False)
        assert result.report["store"] == str(moved) and result.num_videos == 3


def _labelled_store(path, classes: list[str], videos: list[tuple]):
    """A store of tiny videos ``(motion class, index, label[, folder])`` labelled against
    ``classes``, at keys ``folder/<motion class>_<index>`` (folder: the label's class name)."""
    from conftest import TINY_SIZE, tiny_video

    with FlowStore(path, mode="a", classes=classes) as store:
        for name, i, label, *folder in videos:
            frames, flow = tiny_video(name, i)
            key = f"{folder[0] if folder else classes[label]}/{name}_{i}"
            with store.writer(key, source=f"{name}_{i}.mp4", fps=25.0, label=label,
                              label_name=classes[label], source_size=TINY_SIZE,
                              flow_codec="float16", rgb_codec="raw") as w:
                w.append_rgb(frames)
                w.append_flow("tvl1", flow, engine={"engine": "exact", "version": "1",
                                                    "params": {}})
    return path


def test_evaluate_matches_classes_by_name_in_a_store_numbered_otherwise(tiny_store, tmp_path):
    """A store extracted from another folder numbers its classes by its own folder names: here
    (down, zzz), where the run knows (right, down, left). Its 'down' videos are scored as the
    run's 'down' (label 1, where the store says 0) and its 'zzz' video is left out, named in a
    note; before, the store was refused ("labels would not match"). A store of the run's classes
    and one more leaves that one's videos out (as before), and one of none of them is refused."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()

    def evaluate(store):
        return evaluate_run(run, store, clips=1, crops=1, split="all", checkpoint="last",
                            out_dir=False).report

    other = _labelled_store(tmp_path / "other", ["down", "zzz"],
                            [("down", i, 0) for i in range(4)] + [("left", 0, 1)])
    report = evaluate(other)
    assert sorted(p["key"] for p in report["predictions"]) == [f"down/down_{i}" for i in range(4)]
    assert {p["label"] for p in report["predictions"]} == {1}  # the run's 'down'
    assert report["classes"] == ["right", "down", "left"]
    # and one more note: the stand-in flow here was written without the training flow's params
    label_notes = [n for n in report["notes"] if "extracted otherwise" not in n]
    assert len(label_notes) == 1 and "'zzz/left_0'" in label_notes[0], report["notes"]
    assert "have no label among the run's 3 classes" in label_notes[0]
    assert len(report["notes"]) == 2, report["notes"]
    more = _labelled_store(tmp_path / "more", ["right", "down", "left", "up"],
                           [("right", 0, 0), ("down", 0, 1), ("left", 0, 2), ("down", 1, 3)])
    report = evaluate(more)
    assert sorted(p["label"] for p in report["predictions"]) == [0, 1, 2]
    assert "'up/down_1'" in report["notes"][0], report["notes"]
    with pytest.raises(FlowkitError, match="has a label among the run's 3 classes"):
        evaluate(_labelled_store(tmp_path / "none", ["zzz"], [("left", 0, 0)]))
    # --split val on a store without the run's validation videos: refused, with the way out
    with pytest.raises(FlowkitError, match=r"of the run's validation videos are not in store .*"
                                           "use --split all or a list file"):
        evaluate_run(run, other, clips=1, crops=1, split="val", checkpoint="last", out_dir=False)


def run_files(run_dir) -> dict:
    """Every file of a run directory and its bytes."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file()}


def test_resume_on_a_store_numbering_the_classes_otherwise_keeps_the_runs_classes(tiny_store,
                                                                                  tmp_path):
    """STORE may change on --resume: the same videos extracted with the classes in another order
    (another classInd.txt) are labelled by name with the run's classes, so the resumed run
    trains exactly as on its own store. Before, it took the store's numbering (training on
    wrong labels: val top-1 from 100% to 14% on the toy store) and config.json said so."""
    straight = tmp_path / "straight"
    Trainer(tiny_config(tiny_store), straight).fit()
    run = tmp_path / "run"
    counter = StepCounter()
    Trainer(tiny_config(tiny_store), run).fit(counter, stop=lambda: counter.steps >= 4)
    order = ["left", "right", "down"]
    reordered = _labelled_store(tmp_path / "reordered", order,
                                [(name, i, order.index(name)) for name in ("right", "down", "left")
                                 for i in range(4)])
    Trainer.resume(run, store=str(reordered)).fit()
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["right", "down", "left"]
    assert config["model"]["kwargs"]["num_classes"] == 3
    assert_same_run(straight, run)


def test_resume_on_a_store_with_other_classes(tiny_store, tmp_path):
    """A store lacking one of the run's classes, or labelling a video of the run's split with
    none of them, is refused in one line before anything is written (before: a traceback or
    wrong labels, after config.json was rewritten). A store with one class more resumes with
    the run's 3 outputs and a note naming the class left out (before: a size mismatch of the
    classifier's weights)."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    before = run_files(run)
    videos = [(name, i, label) for label, name in enumerate(("right", "down")) for i in range(4)]
    # the run's split, its left videos labelled with a class the run does not know
    lacking = _labelled_store(tmp_path / "lacking", ["right", "down", "zzz"],
                              videos + [("left", i, 2, "left") for i in range(4)])
    with pytest.raises(FlowkitError, match=r"lacks 1 of the run's 3 classes \(e\.g\. 'left'\); "
                                           "resume with a store that holds all of them"):
        Trainer.resume(run, store=str(lacking), epochs=2)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(tiny_store, relabelled)
    # now label -1 (written anew: a commit without a label keeps the finished file's)
    (relabelled / "videos" / "left" / "left_0.h5").unlink()
    add_unlabelled_videos(relabelled, "left/left_0")
    with pytest.raises(FlowkitError, match=r"1 videos of the run's split have no label among the "
                                           r"run's 3 classes .* \(e\.g\. left/left_0\)"):
        Trainer.resume(run, store=str(relabelled), epochs=2)
    fewer = _labelled_store(tmp_path / "fewer", ["right", "down", "left"],
                            [(name, 0, label) for label, name in enumerate(("right", "down",
                                                                              "left"))])
    with pytest.raises(FlowkitError, match=r"videos of the run's split are not in store .* "
                                           r"\(e\.g\. \w+/\w+_[123]\); resume with the store "
                                           "the run was trained on"):
        Trainer.resume(run, store=str(fewer), epochs=2)
    assert run_files(run) == before

    more = _labelled_store(tmp_path / "more", ["right", "down", "left", "up"],
                           videos + [("left", i, 2) for i in range(4)] + [("down", 9, 3)])
    trainer = Trainer.resume(run, store=str(more), epochs=2)
    assert trainer.classes == ["right", "down", "left"]
    assert any("1 class(es) the run was not trained on ('up')" in n for n in trainer.notes)
    result = trainer.fit()
    assert result.epochs_done == 2
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["right", "down", "left"]
    assert config["model"]["kwargs"]["num_classes"] == 3


@pytest.mark.parametrize("schedule, expected", [("cosine", 0.5 * (1 + math.cos(math.pi / 4))),
                                                ("step", 1.0)], ids=["cosine", "step"])
def test_a_longer_resumed_run_follows_the_new_schedule_from_its_first_step(
        tiny_store, tmp_path, monkeypatch, schedule, expected):
    """1 epoch (3 steps) then --resume with 4 epochs: step 3 takes the lr of the 4-epoch
    schedule (cosine: 0.5 (1 + cos(pi * 3 / 12)); step: 1, the first milestone is epoch 2).
    Before, it took the finished schedule's (cosine: 0; step: 0.01, both milestones at epoch 1)
    and the new one only from step 4."""
    lrs = []
    real = Trainer._train_step

    def recording(self, batch, opt):
        out = real(self, batch, opt)
        lrs.append(out[3])
        return out

    monkeypatch.setattr(Trainer, "_train_step", recording)
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1, schedule=schedule), run).fit()
    assert len(lrs) == 3
    Trainer.resume(run, epochs=4).fit()
    assert lrs[3] == pytest.approx(0.05 * expected)
    assert lrs[4] == pytest.approx(0.05 * lr_factor(4, total_steps=12, warmup_steps=0,
                                                    schedule=schedule, milestones=(6, 9)))


def test_resume_with_fewer_epochs_than_trained_is_refused_before_writing(tiny_store, tmp_path):
    """--epochs below the run's progress (finished epochs, or a step into the next) is refused
    and config.json keeps the length the run trained for; before, nothing trained but
    config.json said the smaller --epochs. Resuming a finished run with its own length trains
    nothing and rewrites nothing."""
    run = tmp_path / "run"
    counter = StepCounter()
    Trainer(tiny_config(tiny_store, epochs=3), run).fit(counter, stop=lambda: counter.steps >= 4)
    before = run_files(run)
    with pytest.raises(FlowkitError, match=r"--epochs 1 is fewer than the 1 epochs and 1 steps "
                                           r"of epoch 2 that .* has already trained; pass "
                                           "--epochs 2 or more"):
        Trainer.resume(run, epochs=1).fit()
    assert run_files(run) == before
    Trainer.resume(run).fit()  # to the end of its 3 epochs
    before = run_files(run)
    with pytest.raises(FlowkitError, match="fewer than the 3 epochs"):
        Trainer.resume(run, epochs=2).fit()
    result = Trainer.resume(run, epochs=3, workers=1).fit()
    assert result.start_epoch == 3 and result.epochs_done == 3
    assert run_files(run) == before  # config.json keeps workers 0: nothing was trained


def test_a_saved_run_loads_with_the_keywords_it_was_made_with(tiny_store, tmp_path):
    """New --model-arg values are typed (width="4" is refused), but a run saved before they were
    holds what its model accepted then: resuming and evaluating it must not type them again."""
    from flowkit.checkpoints import load_checkpoint, save_checkpoint
    from flowkit.models import create_model, rebuild_model

    with pytest.raises(FlowkitError, match="width must be an integer"):
        create_model("resnet2d", num_classes=3, **{**TINY_MODEL, "width": "4"})
    assert rebuild_model("resnet2d", num_classes=3, **{**TINY_MODEL, "width": "4"}) is not None
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path, "classifier")
    ckpt["config"]["model"]["kwargs"]["width"] = "4"  # as an older flowkit let it through
    save_checkpoint(path, "classifier", {k: v for k, v in ckpt.items()
                                         if k not in ("format", "version", "kind")})
    report = evaluate_run(run, clips=1, crops=1, split="all", checkpoint="last",
                          out_dir=False).report
    assert report["num_videos"] == 12


def test_a_run_divides_flow_by_its_own_bound_on_a_store_of_another_codec(tiny_store, tmp_path):
    """Flow was divided by each store's bound: a run trained on float flow (bound 20) and
    evaluated or resumed on the same videos stored as uint8:5 got flow / 5, four times its
    training scale, silently. The run records its bound and datasets built for it use it."""
    from conftest import write_tiny_store
    from flowkit.train.evaluate import load_run_model
    from flowkit.train.loading import make_dataset

    u8 = write_tiny_store(tmp_path / "u8", flow_codec="uint8:5")
    run = tmp_path / "run"
    config = tiny_config(tiny_store, epochs=1)
    Trainer(config, run).fit()
    assert config.flow_bound is None  # the caller's config is left as given
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["flow_bound"] == 20.0
    model, run_config, _ = load_run_model(run, "last")
    assert run_config["config"]["flow_bound"] == 20.0  # the checkpoint's config too
    run_cfg = TrainConfig.from_dict(run_config["config"])
    items = [make_dataset(FlowStore(s), ["down/down_0"], run_cfg, model, train=False)[0]
             for s in (tiny_store, u8)]
    assert [float(i["flow_bound"]) for i in items] == [20.0, 20.0]
    assert torch.allclose(items[0]["flow"], items[1]["flow"], atol=5 / 255 / 20)

    def scores(store):
        report = evaluate_run(run, store, clips=1, crops=1, split="all", checkpoint="last",
                              out_dir=False).report
        return {p["key"]: p["pred"] for p in report["predictions"]}
    assert scores(u8) == scores(tiny_store)
    resumed = Trainer.resume(run, store=str(u8), epochs=2)
    assert resumed.config.flow_bound == 20.0 and resumed.train_set[0]["flow_bound"] == 20.0
    resumed.close()  # not trained: lets the next Trainer into the run
    # a run recorded before the bound was (no flow_bound): each store's own, as then
    del run_config["config"]["flow_bound"]
    old = TrainConfig.from_dict(run_config["config"])
    assert make_dataset(FlowStore(u8), ["down/down_0"], old, model,
                        train=False)[0]["flow_bound"] == 5.0
    # and resuming it keeps that (its earlier epochs and checkpoints divided so)
    saved["config"]["flow_bound"] = None
    (run / "config.json").write_text(json.dumps(saved))
    assert Trainer.resume(run, store=str(u8), epochs=2).config.flow_bound is None


def test_a_copy_of_the_training_store_is_not_held_out(tiny_store, tmp_path):
    """Keys are relative to the dataset: on a copy of the training store, --split auto leaves
    the training videos out, and --split all says it scored them."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    copy = tmp_path / "copy"
    shutil.copytree(tiny_store, copy)
    split = json.loads((run / "config.json").read_text())["split"]
    auto = evaluate_run(run, copy, clips=1, crops=1, checkpoint="last", out_dir=False).report
    assert sorted(p["key"] for p in auto["predictions"]) == sorted(split["val_keys"])
    assert auto["split"] == "all videos but the 9 the run trained on"
    assert auto["training_videos"] == 0 and auto["held_out"] is True
    everything = evaluate_run(run, copy, clips=1, crops=1, checkpoint="last", split="all",
                              out_dir=False).report
    assert everything["num_videos"] == 12
    assert everything["training_videos"] == 9 and everything["held_out"] is False


def test_a_run_without_validation_is_evaluated_on_every_video(tiny_store, tmp_path):
    """--split auto of a run trained on every video (--val-fraction 0) has no held-out video to
    prefer: it scores them all and says they were trained on, rather than scoring none."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1, val_fraction=0.0, batch_size=6), run).fit()
    report = evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False).report
    assert report["num_videos"] == 12 and len(report["predictions"]) == 12
    assert report["split"] == "all videos"
    assert report["training_videos"] == 12 and report["held_out"] is False


def test_top5_is_left_out_with_five_classes(tmp_path):
    """With exactly 5 classes every video is in its top 5: validation's and evaluation's top-5
    are None (not a meaningless 100%), as with fewer classes."""
    classes = ["a", "b", "c", "d", "e"]
    store = _labelled_store(tmp_path / "five", classes,
                            [(("right", "down", "left")[label % 3], i, label)
                             for label in range(5) for i in range(2)])
    run = tmp_path / "run"
    result = Trainer(tiny_config(store, epochs=1, val_fraction=0.5), run).fit()
    assert result.history[0]["val_top1"] is not None and result.history[0]["val_top5"] is None
    ev = evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False)
    assert ev.num_videos == 5 and ev.top5 is None and ev.report["top5"] is None


# ----------------------------------------------------------------------------------------- options


def test_a_video_in_both_split_lists_is_refused(tiny_store, tmp_path):
    """A video listed in --split-list and --val-list would be validated on after training on it
    (an inflated val top-1): refused, naming one shared video."""
    from flowkit.train.loading import make_split

    (tmp_path / "trainlist.txt").write_text("right/right_0.avi 1\nright/right_1.avi 1\n"
                                            "down/down_0.avi 2\n")
    (tmp_path / "testlist.txt").write_text("down/down_1.avi\nright/right_1.avi\n")
    config = tiny_config(tiny_store, split_list=str(tmp_path / "trainlist.txt"),
                         val_list=str(tmp_path / "testlist.txt"))
    with pytest.raises(FlowkitError, match=r"1 videos are in both the training and validation "
                                           r"split \(e\.g\. right/right_1\)"):
        make_split(FlowStore(tiny_store), config)


def test_split_lists_segments_and_init(tiny_store, tmp_path):
    """UCF101 split lists, TSN segments (training and multi-view testing), --init weights."""
    from flowkit.data import SegmentSampler
    from flowkit.models.resnet import ResNet2d

    keys = [f"{c}/{c}_{i}" for c in ("right", "down", "left") for i in range(4)]
    (tmp_path / "trainlist.txt").write_text(
        "".join(f"{k}.avi {1 + ('right', 'down', 'left').index(k.split('/')[0])}\n"
                for k in keys if not k.endswith("_0")))
    (tmp_path / "testlist.txt").write_text("".join(f"{k}.avi\n" for k in keys if k.endswith("_0")))
    rgb = ResNet2d(18, in_channels=3, width=4, layers=(1, 1, 1, 1))
    torch.save(rgb.state_dict(), tmp_path / "resnet.pt")
    config = tiny_config(tiny_store, split_list=str(tmp_path / "trainlist.txt"),
                         val_list=str(tmp_path / "testlist.txt"), segments=2, frames=None,
                         init=str(tmp_path / "resnet.pt"), epochs=1)
    trainer = Trainer(config, tmp_path / "run")
    assert len(trainer.train_keys) == 9 and sorted(trainer.val_keys) == sorted(
        k for k in keys if k.endswith("_0"))
    assert isinstance(trainer.train_set.sampler, SegmentSampler) and config.clip_length == 2
    assert trainer.train_set[0]["flow"].shape == (2, 2, 16, 16)  # (2L, T = 2 segments x 1, h, w)
    assert "backbone.conv1.weight" in trainer.init_report["cross_modality"]
    torch.testing.assert_close(trainer.model.backbone.layer1[0].conv1.weight,
                               rgb.layer1[0].conv1.weight)
    trainer.fit()
    result = evaluate_run(tmp_path / "run", clips=2, crops=1, out_dir=False)
    assert result.views == 2 and result.num_videos == 3 and result.out_dir is None
    assert not (tmp_path / "run" / "eval").exists()


def test_a_read_only_run_folder_is_named_not_the_locks_temporary(tmp_path, monkeypatch):
    """--resume of a run on a read-only mount: the lock's temporary cannot be written, and even
    its unlink says EROFS (before the lookup); the error names RUN_DIR (it named
    RUN/.lock.<host>.<pid>.link.tmp)."""
    import errno

    from pathlib import Path

    from flowkit.train.runlock import RunLock

    run = tmp_path / "run"
    run.mkdir()

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError) as refused:
        RunLock(run)
    assert refused.value.errno == errno.EROFS and refused.value.filename == str(run)
