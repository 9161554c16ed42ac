"""What a run records of its training videos' extraction (and evaluate's notes on other flow), the
warnings of a split without validation, a diverged run's stop, and the paths a run records."""
from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner

from conftest import TINY_CLASSES, TINY_SIZE, TINY_SPEED, TINY_VIDEOS_PER_CLASS, tiny_video
from flowkit.cli.train import command as train_command
from flowkit.errors import FlowkitError
from flowkit.store import FlowStore
from flowkit.train import Trainer, evaluate_run, load_checkpoint
from flowkit.train.inputs import extraction_notes
from test_cli_train import TINY
from test_train import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def write_store_like_tiny(path, step: int = 1, speed: float = TINY_SPEED, version: str = "1"):
    """The tiny store's videos (conftest ``write_tiny_store``) recorded as extracted with frame
    ``step`` and engine parameter ``speed`` / ``version``: the same keys and labels, other flow."""
    with FlowStore(path, mode="a", classes=list(TINY_CLASSES)) as store:
        for label, name in enumerate(TINY_CLASSES):
            for i in range(TINY_VIDEOS_PER_CLASS):
                frames, flow = tiny_video(name, i)
                with store.writer(f"{name}/{name}_{i}", source=f"{name}/{name}_{i}.mp4", fps=25.0,
                                  label=label, label_name=name, source_size=TINY_SIZE, step=step,
                                  flow_codec="float16", rgb_codec="raw") as w:
                    w.append_rgb(frames)
                    w.append_flow("tvl1", flow, engine={
                        "engine": "exact", "version": version, "params": {"speed": speed}})
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_store, tmp_path_factory):
    """A 1-epoch run on the tiny store (read it, never train it further)."""
    run = tmp_path_factory.mktemp("inputs") / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    return run


# ------------------------------------------------------------------------ extraction record

def test_a_run_records_the_extraction_of_its_training_videos(tiny_run):
    """config.json and the checkpoints hold the frame step and the flow's engine record of the
    training videos, what evaluate compares other stores with."""
    record = {"step": 1, "flow": {"tvl1": {"engine_version": "1",
                                           "params": {"speed": TINY_SPEED}}}}
    assert json.loads((tiny_run / "config.json").read_text())["extraction"] == record
    assert load_checkpoint(tiny_run / "checkpoints" / "last.pt")["config"]["extraction"] == record


def test_evaluating_flow_of_another_step_or_params_is_noted(tiny_run, tiny_store, tmp_path):
    """The user's report: a run evaluated on a store extracted with --step 2 scored other flow
    without a word. The note names what differs and what the run was trained on; the same
    extraction (the training store) gets none."""
    same = evaluate_run(tiny_run, tiny_store, clips=1, crops=1, split="all", checkpoint="last",
                        out_dir=False)
    assert not [n for n in same.report["notes"] if "extracted otherwise" in n]
    other = write_store_like_tiny(tmp_path / "step2", step=2, speed=3)
    result = evaluate_run(tiny_run, other, clips=1, crops=1, split="all", checkpoint="last",
                          out_dir=tmp_path / "eval")
    notes = [n for n in result.report["notes"] if "extracted otherwise" in n]
    assert len(notes) == 1
    assert "made with --step 2, --param speed=3 here, the run was trained on --step 1 " \
           "--param speed=2: re-extract with --step 1 --param speed=2" in notes[0]
    assert notes == [n for n in json.loads((tmp_path / "eval" / "eval.json").read_text())["notes"]
                     if "extracted otherwise" in n]


def test_another_engine_version_is_noted_and_an_older_run_gets_no_note(tmp_path):
    other = FlowStore(write_store_like_tiny(tmp_path / "v2", version="2"))
    keys = other.keys()
    record = {"step": 1, "flow": {"tvl1": {"engine_version": "1",
                                           "params": {"speed": TINY_SPEED}}}}
    notes = extraction_notes(other, keys, {"extraction": record})
    assert len(notes) == 1 and "tvl1 engine version 2 here" in notes[0]
    assert extraction_notes(other, keys, {}) == []  # recorded before flowkit kept it


def test_a_resumed_run_keeps_its_record(tiny_store, tmp_path):
    """--resume keeps what config.json records, also no record (an older run's): its earlier
    epochs may have read other videos than today's STORE holds."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    saved = json.loads((run / "config.json").read_text())
    del saved["extraction"]  # as a run of an older flowkit recorded it
    (run / "config.json").write_text(json.dumps(saved))
    Trainer.resume(run, epochs=2).fit()
    assert "extraction" in json.loads((run / "config.json").read_text()) \
        and json.loads((run / "config.json").read_text())["extraction"] is None


# ----------------------------------------------------------------------- validation honesty

@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_validation_loss_stops_the_run_before_saving_it(tiny_store, tmp_path,
                                                                     monkeypatch, bad):
    """--lr 1e8: the weights turn NaN, validation scores NaN (a "top-1 25%") and that epoch became
    best.pt. Now the run stops with one line naming the epoch, and best.pt and last.pt keep the
    last finite epoch; an infinite loss (not NaN) stops it the same way."""
    validate, calls = Trainer.validate, []

    def nan_in_epoch_2(self, progress=None):
        calls.append(1)
        result = validate(self, progress)
        return {**result, "loss": bad} if len(calls) == 2 else result

    monkeypatch.setattr(Trainer, "validate", nan_in_epoch_2)
    trainer = Trainer(tiny_config(tiny_store, epochs=3), tmp_path / "run")
    with pytest.raises(FlowkitError, match=rf"^epoch 2: the validation loss is {bad}: the loss "
                                           r"diverged; lower --lr"):
        trainer.fit()
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / name)["epoch"] == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


def test_a_non_finite_training_loss_names_the_epoch(tiny_store, tmp_path, monkeypatch):
    from flowkit import models

    loss = models.classification_loss
    monkeypatch.setattr(models, "classification_loss",
                        lambda output, labels: loss(output, labels) * math.inf)
    with pytest.raises(FlowkitError, match=r"^epoch 1: the training loss is (inf|nan) at step 1: "
                                           r"the loss diverged; lower --lr .*nothing was saved; "
                                           r"start again with --overwrite"):
        Trainer(tiny_config(tiny_store, epochs=1), tmp_path / "run").fit()


def test_a_diverged_amp_run_names_no_amp(tiny_store, tmp_path):
    """With AMP (CUDA only) the forward pass runs in float16: scores past 65504 are inf, so the
    diverged run's error names --no-amp beside --lr and --clip-grad; without AMP it does not."""
    trainer = Trainer(tiny_config(tiny_store, epochs=1), tmp_path / "run")
    assert not trainer.use_amp and "--no-amp" not in trainer._diverged()
    trainer.use_amp = True  # what a CUDA device sets
    assert re.match(r"the loss diverged; lower --lr or set --clip-grad; float16 \(--amp\) "
                    r"overflows at 65504: try --no-amp \(nothing was saved", trainer._diverged())


@pytest.mark.parametrize("diverged", ["all weights", "one class's bias"])
def test_without_validation_a_last_update_that_diverged_is_never_saved(tiny_store, tmp_path,
                                                                        monkeypatch, diverged):
    """--val-fraction 0 --lr 1e38: each step's loss is computed before its own update, so the
    epoch's last update was looked at by nothing and a model scoring NaN became best.pt and
    last.pt. The last batch is scored after the epoch: not finite, the epoch is not saved; one
    class's score at inf (the others finite, none NaN) is as diverged."""
    import torch

    def diverge_after_epoch_1(self, batch, epoch):
        if epoch == 1:  # the update of epoch 2's last step went to inf
            with torch.no_grad():
                if diverged == "all weights":
                    for p in self.model.parameters():
                        p.fill_(float("inf"))
                else:
                    last = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)][-1]
                    last.bias[0] = float("inf")
        return check(self, batch, epoch)

    check = Trainer._check_last_update
    monkeypatch.setattr(Trainer, "_check_last_update", diverge_after_epoch_1)
    trainer = Trainer(tiny_config(tiny_store, epochs=3, val_fraction=0.0), tmp_path / "run")
    with pytest.raises(FlowkitError, match=r"^epoch 2: the model's scores after its last step "
                                           r"are not finite: the loss diverged; lower --lr"):
        trainer.fit()
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / name)["epoch"] == 1


def split_lists(tmp_path):
    """A UCF101 trainlist (videos 1-3 of each class) and testlist (videos 0) of the tiny store."""
    keys = [f"{c}/{c}_{i}" for c in TINY_CLASSES for i in range(TINY_VIDEOS_PER_CLASS)]
    (tmp_path / "trainlist.txt").write_text(
        "".join(f"{k}.avi {1 + TINY_CLASSES.index(k.split('/')[0])}\n"
                for k in keys if not k.endswith("_0")))
    (tmp_path / "testlist.txt").write_text("".join(f"{k}.avi\n" for k in keys if k.endswith("_0")))
    return tmp_path / "trainlist.txt", tmp_path / "testlist.txt"


def test_split_list_without_val_list_warns_and_an_explicit_val_fraction_is_ignored(
        tiny_store, tmp_path):
    """The user's report: --split-list with --val-fraction 0.25 trained on 0 validation videos
    with no word. Now both are warned about; with --val-list neither."""
    trainlist, testlist = split_lists(tmp_path)
    runner = CliRunner()
    r = runner.invoke(train_command, [str(a) for a in (
        tiny_store, "--out", tmp_path / "run", *TINY, "--epochs", "1", "--split-list",
        trainlist)], catch_exceptions=False)  # TINY passes --val-fraction 0.25
    assert r.exit_code == 0, r.output
    assert "warning: --val-fraction 0.25 is ignored with --split-list" in r.stderr
    assert "warning: --split-list without --val-list gives no validation videos: best.pt is " \
           "chosen by training accuracy; pass --val-list FILE" in r.stderr
    r = runner.invoke(train_command, [str(a) for a in (
        tiny_store, "--out", tmp_path / "run2", *[a for a in TINY if a not in ("--val-fraction",
                                                                               "0.25")],
        "--epochs", "1", "--split-list", trainlist, "--val-list", testlist)],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    absent = tmp_path / "absent.txt"  # a val list none of whose videos the store holds
    absent.write_text("right/right_99.avi\n")
    r = runner.invoke(train_command, [str(a) for a in (
        tiny_store, "--out", tmp_path / "run3", *[a for a in TINY if a not in ("--val-fraction",
                                                                               "0.25")],
        "--epochs", "1", "--split-list", trainlist, "--val-list", absent, "--skip-missing")],
        catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (f"warning: no video of --val-list {absent} is a labelled video of the store "
            "(missing, or without a label: see the notes)") in r.stderr \
        and "without --val-list" not in r.stderr, r.stderr


def test_a_typed_default_val_fraction_with_a_split_list_is_warned_of_once(tiny_store, tmp_path):
    """The Trainer cannot tell a typed --val-fraction 0.1 (the default) from an untyped one, so
    the CLI warns of it; a resume, where nothing was typed, repeats no such warning."""
    trainlist, testlist = split_lists(tmp_path)
    runner = CliRunner()
    tiny = [a for a in TINY if a not in ("--val-fraction", "0.25")]
    args = [str(a) for a in (tiny_store, "--out", tmp_path / "run", *tiny, "--epochs", "1",
                             "--split-list", trainlist, "--val-list", testlist)]
    r = runner.invoke(train_command, args + ["--val-fraction", "0.1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.stderr.count("warning: --val-fraction 0.1 is ignored with --split-list") == 1
    r = runner.invoke(train_command, [str(tiny_store), "--out", str(tmp_path / "run"), "--resume",
                                      "--epochs", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "is ignored" not in r.stderr


def test_the_library_trainer_warns_of_a_split_without_validation(tiny_store, tmp_path):
    """Only `flowkit train` warned: a Python run whose --val-fraction gave 0 validation videos
    (0.1 of 4 per class), or a split list without --val-list beside a --val-fraction it ignores,
    trained without a word. Now the Trainer notes them (``log`` and ``notes``) as warnings."""
    logged = []
    trainer = Trainer(tiny_config(tiny_store, val_fraction=0.1), tmp_path / "run",
                      log=logged.append)
    assert trainer.val_keys == [] and logged == trainer.notes
    assert [n for n in logged if n.startswith("warning: ")] == [
        "warning: --val-fraction 0.1 of 12 videos (4 in the smallest class) gives no validation "
        "videos: best.pt is chosen by training accuracy and `flowkit evaluate` would score "
        "training videos; use --val-fraction 0.25 (one video per class) or --val-list FILE"]
    trainlist, _ = split_lists(tmp_path)
    trainer = Trainer(tiny_config(tiny_store, split_list=str(trainlist)), tmp_path / "run2")
    warnings = [n for n in trainer.notes if n.startswith("warning: ")]
    assert len(warnings) == 2 and "--val-fraction 0.25 is ignored with --split-list" in warnings[0]
    assert "--split-list without --val-list gives no validation videos" in warnings[1]
    quiet = Trainer(tiny_config(tiny_store), tmp_path / "run3")  # 0.25: one video per class
    assert not [n for n in quiet.notes if n.startswith("warning: ")]


# ------------------------------------------------------------------------ paths of the run

def test_a_run_made_with_relative_paths_is_evaluated_on_its_store_from_any_folder(
        tiny_store, tmp_path, monkeypatch):
    """The user's report: a run trained in Python with store="toystore" and relative split lists
    recorded them as given, so evaluate_run from another folder holding another "toystore"
    scored that store. Now config.json records them absolute (as the CLI does, and as model file
    arguments already were), and the caller's config stays as given."""
    import torch

    from flowkit.models.resnet import ResNet2d

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    (home / "toystore").symlink_to(tiny_store)
    (home / "toy").mkdir()
    trainlist, testlist = split_lists(home / "toy")
    torch.save(ResNet2d(18, in_channels=3, width=4, layers=(1, 1, 1, 1)).state_dict(),
               home / "resnet.pt")
    monkeypatch.chdir(home)
    config = tiny_config("toystore", split_list="toy/trainlist.txt", val_list="toy/testlist.txt",
                         init="resnet.pt", epochs=1)
    Trainer(config, tmp_path / "run").fit()
    assert config.store == "toystore"  # a copy was resolved
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert {k: recorded[k] for k in ("store", "split_list", "val_list", "init")} == {
        "store": str(tiny_store.resolve()), "split_list": str(trainlist.resolve()),
        "val_list": str(testlist.resolve()), "init": str((home / "resnet.pt").resolve())}
    write_store_like_tiny(elsewhere / "toystore", step=2)  # same name, other flow
    monkeypatch.chdir(elsewhere)
    result = evaluate_run(tmp_path / "run", clips=1, crops=1, out_dir=False)
    assert result.report["store"] == str(tiny_store.resolve()) and result.num_videos == 3
    assert not [n for n in result.report["notes"] if "extracted otherwise" in n]
    # A resume given the store's (new) path relative to its folder records it absolute too.
    monkeypatch.chdir(home)
    Trainer.resume(tmp_path / "run", store="toystore", epochs=2).fit()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert recorded["store"] == str(tiny_store.resolve())


def test_imported_flow_is_compared_by_what_made_its_values_not_its_file_names():
    """Two imports of one export (with and without RGB, numbered from 0 or 1) hold the same flow:
    no note (it said 'made with --param naming=... here'); another bound is one."""
    from flowkit.train.inputs import _differences

    def record(naming, bound=20.0, version="0.2.0"):
        return {"engine_version": version,
                "params": {"source_format": "mmaction2-rawframes", "bound": bound,
                           "quantization_error": bound / 255, "image_format": "jpeg",
                           "naming": naming, "step": 1}}

    trained = {"step": 1, "flow": {"tvl1": record("img_{:05d}.jpg from 1")}}
    meta = {"step": 1, "flows": {"tvl1": record("flow_{x,y}_{:05d}.jpg from 0", version="0.3")}}
    assert _differences(meta, trained) == {}
    meta["flows"]["tvl1"] = record("flow_{x,y}_{:05d}.jpg from 0", bound=32.0)
    assert list(_differences(meta, trained)) == ["tvl1 bound"]
