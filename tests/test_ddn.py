"""DDN (flowkit.models.ddn): shapes, branch subsets, gradients into the shared features through the
cost volume, the feature export to the costvolume engine, and errors."""
from __future__ import annotations

import pytest
import torch

from flowkit import create_engine
from flowkit.conventions import IMAGENET_MEAN, IMAGENET_STD
from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model, list_models
from flowkit.models.ddn import BRANCHES, parse_branches

TINY = dict(num_classes=3, width=4, layers=[1, 1, 1, 1])


def tiny_ddn(**kw):
    torch.manual_seed(0)
    return create_model("ddn", **{**TINY, **kw})


def clip(b=2, t=4, h=32, w=32):
    torch.manual_seed(1)
    return torch.randn(b, 3, t, h, w)


def test_registered_and_shapes():
    assert "ddn" in list_models()
    model = tiny_ddn()
    x = clip()
    out = model({"rgb": x})
    assert out["logits"].shape == (2, 3) and len(out["stream_logits"]) == 3
    feats = model.features(x)
    assert feats.shape == (2, 4, 4, 8, 8)                        # stride 4, layer1 channels
    disp, change = model.dynamics(feats)
    assert disp.shape == (2, 2, 3, 8, 8) and change.shape == (2, 4, 3, 8, 8)
    assert disp.abs().max() <= 3 + 1e-5                          # inside the window (d = 3)
    # The fused prediction is the average of the branches' softmax scores.
    mean_prob = torch.stack([s.softmax(1) for s in out["stream_logits"]]).mean(0)
    assert torch.allclose(out["logits"].softmax(1), mean_prob, atol=1e-6)


@pytest.mark.parametrize("branches", [("appearance",), ("motion",), ("change",),
                                      ("appearance", "motion"), ("motion", "change"),
                                      ("appearance", "change")])
def test_branch_subsets_build_and_train_only_those(branches):
    model = tiny_ddn(branches=",".join(branches))
    assert model.branches == branches
    for name in BRANCHES:
        assert hasattr(model, name) == (name in branches)
    out = model({"rgb": clip()})
    assert len(out["stream_logits"]) == len(branches)
    classification_loss(out, torch.tensor([0, 2])).backward()
    assert model.conv1.weight.grad.abs().sum() > 0


def test_branch_order_is_canonical_and_bad_names_fail():
    assert parse_branches("change, motion") == ("motion", "change")
    assert parse_branches(["appearance"]) == ("appearance",)
    for bad in ("", "motion,motion", "flow", []):
        with pytest.raises(FlowkitError, match="branches"):
            parse_branches(bad)


def test_motion_gradient_reaches_shared_features_through_the_cost_volume():
    """With only the motion branch, the features enter the loss only through the cost volume and
    the soft-argmax, so a gradient on conv1 proves that path is differentiable end to end."""
    model = tiny_ddn(branches="motion")
    loss = classification_loss(model({"rgb": clip()}), torch.tensor([1, 0]))
    loss.backward()
    for name in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_displacement_follows_a_shifted_clip():
    """A smooth texture moved right by 8 px per frame (2 feature px) gives u near +2, v near 0,
    even with untrained features (the sign and units of the model's displacement maps)."""
    model = tiny_ddn(width=8, branches="motion", max_displacement=3, tau=0.02).eval()
    torch.manual_seed(3)
    texture = torch.nn.functional.avg_pool2d(torch.randn(1, 3, 96, 96), 3, 1, 1)
    frames = torch.stack([torch.roll(texture, 8 * t, dims=3) for t in range(3)], dim=2)
    with torch.no_grad():
        disp, _ = model.dynamics(model.features(frames))
    inner = disp[..., 2:-2, 2:-2]                                # away from the zero-padded border
    assert 1.2 < inner[:, 0].median() < 2.5 and inner[:, 1].abs().median() < 0.4


def test_feature_stride_2_drops_the_max_pool():
    """feature_stride=2: features, displacement maps and changes at half the stride, the window
    in those finer feature pixels; the setting is recorded; other strides are refused."""
    model = tiny_ddn(feature_stride=2)
    x = clip()
    feats = model.features(x)
    assert feats.shape == (2, 4, 4, 16, 16)
    disp, change = model.dynamics(feats)
    assert disp.shape == (2, 2, 3, 16, 16) and change.shape == (2, 4, 3, 16, 16)
    out = model({"rgb": x})
    assert out["logits"].shape == (2, 3) and model.describe()["feature_stride"] == 2
    classification_loss(out, torch.tensor([0, 2])).backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    assert tiny_ddn().describe()["feature_stride"] == 4
    # what config.json records is what was built
    described = tiny_ddn(max_displacement=2, dilation=2, tau=0.5).describe()
    assert (described["max_displacement"], described["dilation"], described["tau"]) == (2, 2, 0.5)
    with pytest.raises(FlowkitError, match="feature_stride"):
        tiny_ddn(feature_stride=8)


@pytest.mark.parametrize("feature_stride", [4, 2])
def test_shared_features_load_into_the_costvolume_engine(tmp_path, feature_stride):
    """A DDN checkpoint is a learned-feature checkpoint of the costvolume engine: the engine's
    FeatureExtractor computes exactly the model's shared features, with the max-pool or without
    it as the checkpoint's model settings say (feature_stride 4 or 2)."""
    model = tiny_ddn(feature_stride=feature_stride)
    with torch.no_grad():                                        # non-trivial BN statistics
        for bn in (model.bn1, model.layer1[0].bn1, model.layer1[0].bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    path = tmp_path / "best.pt"
    torch.save({"format": "flowkit-checkpoint", "kind": "classifier",
                "config": {"model": {"name": "ddn", "settings": model.describe()}},
                "model": model.state_dict()}, path)
    engine = create_engine("costvolume", weights=str(path), layer="layer1")
    assert engine.extractor.stride == feature_stride
    torch.manual_seed(4)
    frames = torch.rand(2, 3, 32, 32) * 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.features(((frames / 255 - mean) / std)[:, :, None])[:, :, 0]
        theirs = engine.extractor(frames)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert engine(frames[:1], frames[1:]).shape == (1, 2, 32, 32)


def _torchvision_file(tmp_path, fc_classes=10):
    """A torchvision-format ResNet-18 (DDN's tiny width and layout) with non-trivial BN statistics
    and an ImageNet-style classifier of ``fc_classes`` classes."""
    from flowkit.models.resnet import ResNet2d
    torch.manual_seed(5)
    net = ResNet2d(18, 3, width=TINY["width"], layers=TINY["layers"]).eval()
    with torch.no_grad():
        for bn in net.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
    state = dict(net.state_dict(), **{"fc.weight": torch.randn(fc_classes, net.stage_channels[-1]),
                                      "fc.bias": torch.randn(fc_classes)})
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return net, state, path


def test_init_from_torchvision_resnet_fills_the_stem_and_every_branch(tmp_path):
    """``flowkit train --model ddn --init resnet18.pth``: the shared conv1/bn1/layer1 and each
    branch's stages 2-4 take the ImageNet ResNet's; with T = 1 the appearance path is then exactly
    the 2D ResNet. Reports name the model's own tensors; the model's names do not change."""
    from flowkit.models.init import init_from_file
    net, state, path = _torchvision_file(tmp_path)
    model = tiny_ddn()
    names = set(model.state_dict())
    report = init_from_file(model, path)
    assert report["format"] == "torchvision" and not report["unexpected"]
    assert set(model.state_dict()) == names                       # no view left registered
    assert {"conv1.weight", "layer1.0.conv2.weight", "appearance.stages.0.0.conv1.weight",
            "motion.stages.2.0.downsample.0.weight", "change.stages.1.0.bn2.running_var"
            } <= set(report["loaded"])
    assert report["missing"] and all(k.startswith("motion.entry.") for k in report["missing"])
    assert set(report["skipped"]) == {f"{b}.fc.{p}" for b in BRANCHES for p in ("weight", "bias")}
    loaded = set(report["loaded"]) | set(report["missing"]) | set(report["skipped"])
    assert loaded == names                                        # every tensor accounted for
    for branch in BRANCHES:
        stages = getattr(model, branch).stages
        for i, stage in enumerate(stages):
            torch.testing.assert_close(stage[0].conv1.weight, state[f"layer{i + 2}.0.conv1.weight"],
                                       rtol=0, atol=0)
    model.eval()
    x = clip(t=1)
    with torch.no_grad():
        feats = model.features(x)
        ref = net.forward_stages(x)
        torch.testing.assert_close(feats, ref[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.appearance.forward_features(feats), ref[3],
                                   atol=1e-5, rtol=1e-5)
    # a head of the file's class count loads too; a branch subset uses what it has
    same = tiny_ddn(num_classes=10, branches="motion")
    report = init_from_file(same, path)
    assert {"motion.fc.weight", "motion.fc.bias"} <= set(report["loaded"])
    assert not report["skipped"] and not report["unexpected"]
    torch.testing.assert_close(same.motion.fc.weight, state["fc.weight"], rtol=0, atol=0)


def test_init_from_a_ddn_checkpoint_is_still_a_model_checkpoint(tmp_path):
    """DDN keeps a torchvision-named stem at its top level: its own checkpoint (no layer2-4 there)
    must still load as a checkpoint of the model, not as a torchvision file."""
    from flowkit.models.init import init_from_file
    trained = tiny_ddn()
    with torch.no_grad():
        trained.motion.fc.weight.fill_(0.5)
    path = tmp_path / "ddn.pt"
    torch.save({"model": trained.state_dict()}, path)
    fresh = create_model("ddn", **TINY)
    report = init_from_file(fresh, path)
    assert report["format"] == "model" and not report["missing"]
    assert torch.equal(fresh.motion.fc.weight, trained.motion.fc.weight)


def test_temporal_max_pool_keeps_an_odd_last_frame():
    """The branches halve time with a max over pairs of frames, keeping an odd last frame as it is
    (ceil(T / 2) outputs): dropping it would lose the clip's last frame (or its last displacement
    map) whenever T is odd, e.g. the T - 1 = 3 maps of a 4-frame clip."""
    from flowkit.models.branches import temporal_max_pool
    x = torch.arange(3.0).view(1, 1, 3, 1, 1)
    assert temporal_max_pool(x).flatten().tolist() == [1.0, 2.0]
    x = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(2, 3, 5, 2, 2)
    assert temporal_max_pool(x).shape == (2, 3, 3, 2, 2)
    assert temporal_max_pool(x)[0, 0, :, 0, 0].tolist() == [1.0, 3.0, 4.0]


def test_motion_branch_sees_displacements_divided_by_the_window_reach():
    """The motion branch's input is the displacement map divided by the window's reach
    ``max_displacement * dilation`` (about [-1, 1], the scale its weights were initialised for),
    not the raw feature-pixel displacements nor a division by ``max_displacement`` alone."""
    model = tiny_ddn(max_displacement=2, dilation=2).eval()
    assert model.reach == 4.0
    x = clip(b=1)
    seen = {}
    model.motion.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0].clone()))
    with torch.no_grad():
        model({"rgb": x})
        disp, _ = model.dynamics(model.features(x))
    assert disp.abs().max() > 0.1                                 # non-trivial displacements
    torch.testing.assert_close(seen["x"], disp / 4.0)


def test_change_is_the_warped_difference_of_consecutive_features_at_every_step():
    """The change branch's map at step t is ``warped_difference(F_t, F_t+1, D_t)`` (frame t+1
    sampled along frame t's displacement, minus frame t), for every t: the appearance change that
    motion does not explain, in the paper's sign and on frame t's grid."""
    from flowkit.flow.costvolume import warped_difference
    model = tiny_ddn().eval()
    x = clip(b=2, t=4)
    with torch.no_grad():
        feats = model.features(x)
        disp, change = model.dynamics(feats)
        for t in range(3):
            ref = warped_difference(feats[:, :, t], feats[:, :, t + 1], disp[:, :, t])
            assert ref.abs().max() > 0
            torch.testing.assert_close(change[:, :, t], ref, atol=1e-6, rtol=1e-5)


def test_errors_are_actionable():
    with pytest.raises(FlowkitError, match="at least 2 frames"):
        tiny_ddn(branches="motion")({"rgb": clip(t=1)})
    assert tiny_ddn(branches="appearance")({"rgb": clip(t=1)})["logits"].shape == (2, 3)
    with pytest.raises(FlowkitError, match="tau"):
        tiny_ddn(tau=0)
    with pytest.raises(FlowkitError, match="max_displacement"):
        tiny_ddn(max_displacement=0)
    with pytest.raises(FlowkitError, match="needs rgb"):
        tiny_ddn()({"flow": clip()})
