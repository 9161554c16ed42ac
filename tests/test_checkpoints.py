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
