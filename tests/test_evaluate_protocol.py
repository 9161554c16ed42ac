"""flowkit evaluate: an honest protocol and honest scores (best.pt scored on the videos that chose
it, the skip-missing count of the run's own validation split, a diverged model, a checkpoint of
another run)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from flowkit.cli.evaluate import command as evaluate_command
from flowkit.train import Trainer, evaluate_run, load_checkpoint, save_checkpoint
from test_cli_train import write_lists
from test_train import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why

FAST = ["--clips", "1", "--crops", "1", "--device", "cpu"]


def evaluate(*args):
    return CliRunner().invoke(evaluate_command, [str(a) for a in args], catch_exceptions=False)


def test_best_scored_on_the_videos_that_chose_it_says_so(tiny_store, tmp_path):
    """The official-protocol recipe validates on the test list, so best.pt is the epoch with the
    best top-1 on the very videos it is then scored on: held out (never trained on) but not a
    test score. The note and selected_on say so and name --checkpoint last, which says nothing."""
    trainlist, testlist = write_lists(tmp_path)
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=2, split_list=str(trainlist), val_list=str(testlist),
                        skip_missing=True), run).fit()
    best = evaluate(run, "--split-list", testlist, *FAST, "--json")
    assert best.exit_code == 0, best.output
    report = json.loads(best.stdout)
    assert (report["selected_on"], report["num_videos"], report["held_out"]) == (3, 3, True)
    assert "best.pt was selected on 3 of the 3 scored videos" in best.stderr
    assert "use --checkpoint last for a test score" in best.stderr
    last = evaluate(run, "--split-list", testlist, *FAST, "--checkpoint", "last", "--json")
    assert last.exit_code == 0, last.output
    assert json.loads(last.stdout)["selected_on"] == 0 and "selected on" not in last.stderr
    # All videos: best.pt was chosen on 3 of the 12 scored.
    everything = evaluate_run(run, clips=1, crops=1, split="all", out_dir=False)
    assert everything.report["selected_on"] == 3
    assert any("selected on 3 of the 12" in note for note in everything.report["notes"])


def test_default_evaluate_of_a_skip_missing_run_counts_its_left_out_val_videos(tiny_store,
                                                                                 tmp_path):
    """A run trained with --skip-missing left out the listed videos the store lacks; its default
    evaluate (the run's validation split) counts those of the val list as `--split-list
    testlist01.txt` does: not_in_store, "less N" in the split and a note naming them."""
    trainlist, testlist = write_lists(tmp_path)
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1, split_list=str(trainlist), val_list=str(testlist),
                        skip_missing=True), run).fit()
    for split in ("auto", "val"):
        report = evaluate_run(run, clips=1, crops=1, split=split, out_dir=False).report
        assert (report["num_videos"], report["not_in_store"]) == (3, 1)
        assert report["split"] == ("the run's validation split less 1 listed video(s) not in "
                                   "the store (--skip-missing)")
        assert "'right/right_broken'" in report["notes"][0]  # the val list's, not the train's
        assert not any("down_broken" in note for note in report["notes"])


def test_a_diverged_model_is_refused_naming_the_checkpoint(tiny_store, tmp_path):
    """NaN weights give NaN scores: no prediction, so evaluate exits 2 naming the checkpoint and
    the videos, instead of scoring every video as class 0 in an eval.json of bare NaN."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    ckpt["model"] = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                     for k, v in ckpt["model"].items()}
    save_checkpoint(path, ckpt)
    result = evaluate(run, "--checkpoint", "last", *FAST)
    assert result.exit_code == 2, result.output
    assert f"checkpoint {path} (epoch 1) gives non-finite scores" in result.stderr
    assert "for 3 of 3 videos" in result.stderr and "lower --lr" in result.stderr
    assert not (run / "eval").exists()


def test_a_checkpoint_of_another_run_is_refused_naming_its_evaluate(tiny_store, tmp_path):
    """RUN_DIR's config.json chooses the store and videos and eval/ is RUN_DIR's: another run's
    checkpoint (other classes, split, creation time) is refused with the command that evaluates
    it in its own run, and RUN_DIR's evaluation is left alone. The run's own checkpoint files
    (also a copy) are taken; a file that records no run writes beside eval/, never over it."""
    run, other = tmp_path / "run", tmp_path / "other"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    Trainer(tiny_config(tiny_store, epochs=1, val_fraction=0.5), other).fit()
    evaluate_run(run, clips=1, crops=1)
    own = (run / "eval" / "eval.json").read_text()

    refused = evaluate(run, "--checkpoint", other / "checkpoints" / "best.pt", *FAST)
    assert refused.exit_code == 2, refused.output
    assert "is a checkpoint of another run than" in refused.stderr
    assert f"flowkit evaluate {other}\n" in refused.stderr  # best.pt: the default checkpoint
    copied = tmp_path / "copied.pt"
    copied.write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    loose = evaluate(run, "--checkpoint", copied, *FAST)
    assert loose.exit_code == 2 and "flowkit evaluate OTHER_RUN --checkpoint" in loose.stderr
    assert (run / "eval" / "eval.json").read_text() == own

    mine = evaluate(run, "--checkpoint", run / "checkpoints" / "best.pt", *FAST, "--json")
    assert mine.exit_code == 0, mine.output
    assert json.loads(mine.stdout)["selected_on"] == 3  # its own best.pt, by path
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    del ckpt["config"]["created"]  # records no run: cannot tell whose it is
    save_checkpoint(tmp_path / "anon.pt", ckpt)
    anon = evaluate(run, "--checkpoint", tmp_path / "anon.pt", *FAST)
    assert anon.exit_code == 0, anon.output
    assert (run / "eval-anon" / "eval.json").is_file() and "eval-anon" in anon.stderr


def test_a_checkpoint_of_a_run_alike_but_for_its_creation_time_is_refused(tiny_store, tmp_path):
    """Two runs of the same command (same classes, model and split) are still two runs: the
    other's best.pt is refused naming the creation time, and RUN_DIR gets no eval/."""
    run, other = tmp_path / "run", tmp_path / "other"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()
    Trainer(tiny_config(tiny_store, epochs=1), other).fit()
    path = other / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(path)  # the two may start within one second: set it apart
    ckpt["config"]["created"] = "2000-01-01T00:00:00+00:00"
    save_checkpoint(path, ckpt)
    refused = evaluate(run, "--checkpoint", path, *FAST)
    assert refused.exit_code == 2, refused.output
    assert "(its creation time differ)" in refused.stderr, refused.stderr
    assert not (run / "eval").exists()


def test_an_out_folder_below_a_file_is_refused_before_any_prediction(tiny_store, tmp_path,
                                                                      monkeypatch):
    """-o FILE/eval cannot be written: evaluate exits 2 saying a part of the path is a file
    before scoring a single video, not after minutes of predictions."""
    from flowkit.train import evaluate as evaluate_module

    run = tmp_path / "run"
    Trainer(tiny_config(tiny_store, epochs=1), run).fit()

    def no_prediction(*args, **kw):
        pytest.fail("predictions ran before the output folder was checked")

    monkeypatch.setattr(evaluate_module, "predict_sharded", no_prediction)
    (tmp_path / "FILE").write_text("")
    result = evaluate(run, "-o", tmp_path / "FILE" / "eval", *FAST)
    assert result.exit_code == 2, result.output
    assert "a part of the path is a file" in result.stderr, result.stderr
