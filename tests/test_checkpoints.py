"""flowkit.checkpoints: the one checkpoint format, its kinds and the formats of earlier flowkits."""
from __future__ import annotations

import pytest
import torch

from flowkit.checkpoints import (FORMAT, VERSION, kind_of, load_checkpoint, save_checkpoint,
                                 state_dict_of)
from flowkit.errors import FlowkitError


def test_load_checkpoint_refuses_another_kind_and_a_newer_version(tmp_path):
    """A classifier checkpoint given where a TVNet one is expected (``--init`` of the wrong run)
    is named as what it is; a checkpoint of a newer flowkit says to upgrade instead of failing
    later on keys it does not know."""
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, "classifier", {"model": {"w": torch.zeros(2)}, "epoch": 1})
    assert load_checkpoint(path, "classifier")["epoch"] == 1
    with pytest.raises(FlowkitError, match="is a classifier checkpoint, not a TVNet one"):
        load_checkpoint(path, "tvnet")
    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1, "kind": "tvnet", "state_dict": {}},
               newer)
    with pytest.raises(FlowkitError, match=rf"newer flowkit \(checkpoint version {VERSION + 1}\)"
                                           "; upgrade flowkit to read it"):
        load_checkpoint(newer, "tvnet")


def test_kind_of_recognises_the_formats_of_earlier_flowkits():
    """Checkpoints written before the common format still load as what they are."""
    weights = {"w": torch.zeros(2)}
    assert kind_of({"format": FORMAT, "version": VERSION, "kind": "motionnet"}) == "motionnet"
    assert kind_of({"format": "flowkit-train-checkpoint", "model": weights}) == "classifier"
    assert kind_of({"format": "flowkit-tvnet", "state_dict": weights}) == "tvnet"
    assert kind_of({"config": {}, "state_dict": weights}) == "motionnet"  # no format at all
    assert kind_of({"state_dict": weights}) is None and kind_of(weights) is None
    assert kind_of({"format": "other-tool", "config": {}, "state_dict": weights}) is None
    assert kind_of([weights]) is None


def test_legacy_checkpoints_load_as_their_kind(tmp_path):
    for name, obj, kind in (("train.pt", {"format": "flowkit-train-checkpoint"}, "classifier"),
                            ("tvnet.pt", {"format": "flowkit-tvnet"}, "tvnet"),
                            ("motionnet.pt", {"config": {}, "state_dict": {}}, "motionnet")):
        torch.save(obj, tmp_path / name)
        assert load_checkpoint(tmp_path / name, kind) == obj


def test_state_dict_of_unwraps_weights_and_refuses_other_values():
    """Weights come out of flowkit's and other tools' wrappers (DataParallel's ``module.``
    removed); a dict holding anything but tensors is refused naming its source, rather than
    reaching ``load_state_dict`` with a confusing error."""
    w = torch.ones(3)
    assert state_dict_of({"model": {"module.fc.weight": w}}, "x.pt") == {"fc.weight": w}
    assert state_dict_of({"checkpoint": 1, "state_dict": {"a": w}}, "x.pt") == {"a": w}
    with pytest.raises(FlowkitError, match=r"x\.pt is not a state dict of tensors \(got dict\)"):
        state_dict_of({"a": w, "epoch": 3}, "x.pt")
    with pytest.raises(FlowkitError, match="is not a state dict of tensors"):
        state_dict_of({}, "x.pt")


def test_run_models_rebuild_from_what_a_user_holds():
    """rebuild_run_model(json.load(config.json)) raised KeyError 'name', and load_run_weights
    with a whole run checkpoint (torch.load(last.pt)) a 7,000-character list of every key: the
    first names what to pass, the second loads the checkpoint's weights, and weights that do not
    fit are one short line."""
    from flowkit.models import create_model, load_run_weights, rebuild_run_model

    entry = {"name": "resnet2d", "kwargs": {"num_classes": 3, "width": 4, "layers": [1, 1, 1, 1]}}
    config = {"flowkit_version": "0", "config": {"lr": 0.1}, "model": entry, "classes": ["a"]}
    with pytest.raises(FlowkitError, match=r"^rebuild_run_model takes a run's model entry, a dict "
                                           r"with name and kwargs; got a dict of flowkit_version, "
                                           r"config, model, classes \(a whole run config\?\); "
                                           r"pass its model entry: rebuild_run_model\("
                                           r"config\['model'\], \.\.\.\)$"):
        rebuild_run_model(config, restoring=True)
    with pytest.raises(FlowkitError, match=r"got str; pass config\['model'\] of the run's"):
        rebuild_run_model("resnet2d", restoring=True)
    trained = create_model(**{"name": "resnet2d", **entry["kwargs"]})
    checkpoint = {"config": config, "model": trained.state_dict(), "optimizer": {"state": {}},
                  "epoch": 1, "format": FORMAT, "version": VERSION, "kind": "run"}
    model = rebuild_run_model(config["model"], restoring=True)
    load_run_weights(model, entry, checkpoint, "last.pt")
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    wider = create_model("resnet2d", num_classes=3, width=8, layers=[1, 2, 1, 1])
    with pytest.raises(FlowkitError, match=r"^the weights of last.pt do not fit") as err:
        load_run_weights(model, entry, {**checkpoint, "model": wider.state_dict()}, "last.pt")
    assert len(str(err.value)) < 500 and "\n" not in str(err.value)
