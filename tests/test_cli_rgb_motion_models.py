"""`flowkit train` / `evaluate` / `--resume` of the models that compute motion from RGB (ddn, tvnet)
on a store that holds RGB only: tiny and fast (CliRunner, in process)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from flowkit import create_engine
from flowkit.cli.evaluate import command as evaluate_command
from flowkit.cli.train import command as train_command
from flowkit.train.checkpoint import load_checkpoint

from conftest import write_tiny_store

COMMON = ["--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]", "--frames", "3",
          "--size", "16", "--batch-size", "4", "--no-flip", "--val-fraction", "0", "--workers", "0",
          "--device", "cpu"]
MODELS = {
    "ddn": (["--model-arg", "branches=motion,change"], "branches", ["motion", "change"]),
    "tvnet": (["--model-arg", "tvnet_iterations=2", "--model-arg", "flow_lambda=0.3"],
              "flow_lambda", 0.3),
}


@pytest.fixture(scope="module")
def rgb_store(tmp_path_factory):
    """The tiny store with RGB frames and no flow at all."""
    return write_tiny_store(tmp_path_factory.mktemp("rgbonly") / "store", flow_name=None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_train_resume_evaluate_from_rgb_only(rgb_store, tmp_path, model):
    extra, key, value = MODELS[model]
    run = tmp_path / model
    first = invoke(train_command, rgb_store, "-o", run, "--model", model, *extra, *COMMON,
                   "--epochs", "1")
    assert first.exit_code == 0, first.output
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == ["rgb"]
    assert config["model"]["settings"][key] == value             # recorded in the run's config
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["config"]["model"]["settings"][key] == value     # and in every checkpoint
    weights = {k: v.clone() for k, v in ckpt["model"].items()}

    resumed = invoke(train_command, rgb_store, "-o", run, "--resume", "--epochs", "2", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.stderr and json.loads(resumed.stdout)["epochs_done"] == 2
    after = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(weights[k], after[k]) for k in weights if k.startswith(
        "tvnet." if model == "tvnet" else "conv1."))             # the motion front end trained

    if model == "ddn":  # its run checkpoint is a learned-feature checkpoint of the engine
        engine = create_engine("costvolume", weights=str(run / "checkpoints" / "last.pt"))
        assert engine.features == "learned" and engine.extractor.stride == 4
        assert engine(torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 3, 16, 16) * 255).shape == \
            (1, 2, 16, 16)

    result = invoke(evaluate_command, run, rgb_store, "--checkpoint", "last", "--split", "all",
                    "--clips", "2", "--crops", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_videos"] == 12 and 0.0 <= report["top1"] <= 1.0


def test_store_flow_baseline_needs_flow_and_says_how_to_add_it(rgb_store, tmp_path):
    result = invoke(train_command, rgb_store, "-o", tmp_path / "run", "--model", "tvnet",
                    "--model-arg", "flow_source=store", *COMMON, "--epochs", "1")
    assert result.exit_code == 2
    assert "flowkit extract" in result.output and not (tmp_path / "run" / "config.json").exists()
