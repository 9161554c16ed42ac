"""The TVNet end-to-end classifier (flowkit.models.tvnet_classifier): shapes, the loss
L_c + lambda * L_f, gradients into TVNet, its reduced-learning-rate group, freezing, the store-flow
baseline and the weighted two-stream fusion."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flowkit.errors import FlowkitError
from flowkit.flow.tvnet import TVNet, flow_loss
from flowkit.models import classification_loss, create_model, list_models
from flowkit.models.branches import weighted_late_fusion
from flowkit.train import TrainConfig, build_optimizer

TINY = dict(num_classes=3, frames=4, width=4, layers=[1, 1, 1, 1], tvnet_iterations=3)
TVNET_PARAMS = ("u0", "grad_kernels", "forward_kernels", "divergence_kernels")


def tiny(**kw):
    torch.manual_seed(0)
    base = TINY if kw.get("flow_source", "tvnet") == "tvnet" else {  # no TVNet to size
        k: v for k, v in TINY.items() if k != "tvnet_iterations"}
    return create_model("tvnet", **{**base, **kw})


def clip(b=2, t=4, h=24, w=24):
    """A normalised RGB clip of a smooth texture moving right by 1 px per frame."""
    torch.manual_seed(1)
    texture = F.avg_pool2d(torch.randn(b, 3, h, w + 8), 3, 1, 1)
    return torch.stack([texture[..., 8 - i: 8 - i + w] for i in range(t)], dim=2)


def test_registered_and_shapes():
    assert "tvnet" in list_models()
    model = tiny()
    assert model.inputs == ("rgb",)
    out = model({"rgb": clip()})
    assert out["logits"].shape == (2, 3) and out["aux_loss"].dim() == 0
    flow, _ = model.motion({"rgb": clip()})
    assert flow.shape == (2, 3, 2, 24, 24)                      # (B, T-1, 2, H, W) pixels
    assert model.backbone.in_channels == 6                       # 2 (T - 1) stacked channels


@pytest.mark.parametrize("flow_lambda", [0.1, 0.5])
def test_loss_is_classification_plus_lambda_times_tvnet_flow_loss(flow_lambda):
    model = tiny(flow_lambda=flow_lambda)
    x, labels = clip(), torch.tensor([0, 2])
    out = model({"rgb": x})
    i0, i1 = model.tvnet_pairs(x)
    l_f = flow_loss(i0, i1, model.tvnet(i0, i1), model.tvnet.config.lambda_)
    l_c = F.cross_entropy(out["logits"], labels)
    assert torch.allclose(classification_loss(out, labels), l_c + flow_lambda * l_f, rtol=1e-5)
    assert model.describe()["flow_lambda"] == flow_lambda
    assert "aux_loss" not in tiny(flow_lambda=0.0)({"rgb": x})


def test_gradients_reach_tvnet_from_the_classifier_and_the_flow_loss():
    for kw in ({"flow_lambda": 0.0}, {}):  # classification alone, then L_c + lambda L_f
        model = tiny(**kw)
        classification_loss(model({"rgb": clip()}), torch.tensor([1, 0])).backward()
        for name in TVNET_PARAMS:
            grad = getattr(model.tvnet, name).grad
            assert grad is not None and grad.abs().sum() > 0, (kw, name)


def test_tvnet_trains_in_its_own_reduced_learning_rate_group():
    model = tiny(tvnet_lr_scale=0.25)
    opt = build_optimizer(model, TrainConfig(store="s", model="tvnet", lr=0.02, weight_decay=1e-3))
    tvnet_ids = {id(p) for p in model.tvnet.parameters()}
    groups = [g for g in opt.param_groups if {id(p) for p in g["params"]} & tvnet_ids]
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == tvnet_ids
    assert groups[0]["lr"] == pytest.approx(0.005) and groups[0]["weight_decay"] == 0.0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)    # the rate the trainer reports


def test_frozen_tvnet_gets_no_gradient_no_flow_loss_and_no_optimiser_group():
    model = tiny(freeze_tvnet=True)
    out = model({"rgb": clip()})
    assert "aux_loss" not in out
    classification_loss(out, torch.tensor([1, 0])).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.tvnet.parameters())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    opt = build_optimizer(model, TrainConfig(store="s", model="tvnet"))
    assert not {id(p) for g in opt.param_groups for p in g["params"]} & \
        {id(p) for p in model.tvnet.parameters()}
    assert model.describe()["freeze_tvnet"] and model.describe()["flow_lambda"] == 0.0


def test_untrained_tvnet_inside_is_the_engine_network():
    """Frozen and untrained, the flow the classifier sees is plain TVNet (= fixed-schedule TV-L1)
    on the clip's luma pairs."""
    model = tiny(freeze_tvnet=True)
    x = clip()
    flow, _ = model.motion({"rgb": x})
    i0, i1 = model.tvnet_pairs(x)
    expected = TVNet(scales=1, warps=1, iterations=3)(i0, i1)
    assert torch.allclose(flow.reshape(-1, 2, 24, 24), expected, atol=1e-5)
    assert flow[:, :, 0].mean() > 0.2                           # the texture moves right


def test_store_flow_source_uses_the_batch_flow_in_pixels():
    model = tiny(flow_source="store")
    assert model.inputs == ("flow",) and model.tvnet is None and model.lr_scales() == {}
    flow = torch.zeros(2, 2, 4, 24, 24)
    flow[:, 0] = 0.25                                            # u = 0.25 * bound px
    got, aux = model.motion({"flow": flow, "flow_bound": torch.tensor([20.0, 8.0])})
    assert aux is None and got.shape == (2, 3, 2, 24, 24)
    assert torch.allclose(got[0, :, 0], torch.full((3, 24, 24), 5.0))
    assert torch.allclose(got[1, :, 0], torch.full((3, 24, 24), 2.0))
    assert model({"flow": flow})["logits"].shape == (2, 3)


def test_two_stream_late_fusion_weights():
    model = tiny(rgb_stream=True, fusion=[1, 2])
    assert model.inputs == ("rgb",) and len(model.backbones()) == 2
    out = model({"rgb": clip()})
    rgb, motion = out["stream_logits"]
    expected = (rgb.softmax(1) + 2 * motion.softmax(1)) / 3
    assert torch.allclose(out["logits"].softmax(1), expected, atol=1e-6)
    assert torch.allclose(weighted_late_fusion([rgb, motion], [0, 1]).softmax(1), motion.softmax(1),
                          atol=1e-6)
    assert tiny(rgb_stream=True, flow_source="store").inputs == ("rgb", "flow")


def test_store_flow_reaches_the_motion_backbone_as_pairs_0_to_T_minus_2_over_flow_scale():
    """The store's flow at clip position t is the flow t -> t+1: the T-1 pairs are positions
    0 .. T-2 (the last position has no next frame), in pixels (x flow_bound) and divided by
    FLOW_SCALE, so the classifier sees what TVNet would give for the same pairs."""
    from flowkit.models.tvnet_classifier import FLOW_SCALE
    model = tiny(flow_source="store").eval()
    seen = {}
    model.backbone.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
    flow = (torch.arange(4, dtype=torch.float32).view(1, 1, 4, 1, 1) * 0.1).expand(2, 2, 4, 8, 8)
    bound = torch.tensor([20.0, 8.0])
    with torch.no_grad():
        model({"flow": flow.contiguous(), "flow_bound": bound})
    x = seen["x"]
    assert x.shape == (2, 6, 8, 8)
    for t in range(3):
        for b in range(2):
            expected = 0.1 * t * bound[b].item() / FLOW_SCALE
            torch.testing.assert_close(x[b, 2 * t: 2 * t + 2],
                                       torch.full((2, 8, 8), expected), msg=f"pair {t}, clip {b}")


def test_tvnet_gets_gray_frames_in_0_255():
    """TVNet's schedule is tuned for [0, 255] intensities: the ImageNet normalisation is undone,
    so a uniform 0.5-grey clip reaches TVNet as 127.5 in both frames of every pair."""
    from flowkit.conventions import IMAGENET_MEAN, IMAGENET_STD
    model = tiny(freeze_tvnet=True).eval()
    seen = {}
    model.tvnet.register_forward_pre_hook(lambda mod, args: seen.__setitem__("pair", args[:2]))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    grey = torch.full((1, 3, 4, 16, 16), 0.5)
    with torch.no_grad():
        model({"rgb": (grey - mean) / std})
    i0, i1 = seen["pair"]
    assert i0.shape == i1.shape == (3, 1, 16, 16)
    torch.testing.assert_close(i0, torch.full_like(i0, 127.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(i1, torch.full_like(i1, 127.5), atol=1e-3, rtol=0)


def test_two_stream_rgb_logits_average_all_frames_and_fuse_with_motion():
    """The RGB stream scores every one of the T frames and averages them (the last frame counts
    even though it starts no flow pair), and the logits are exactly the weighted late fusion of
    [rgb, motion] with the model's ``fusion`` weights."""
    from flowkit.models.tvnet_classifier import FLOW_SCALE
    model = tiny(flow_source="store", rgb_stream=True, fusion=[1, 3]).eval()
    rgb = clip(t=4)
    flow = torch.randn(2, 2, 4, 24, 24, generator=torch.Generator().manual_seed(2)) * 0.1
    bound = torch.full((2,), 20.0)
    with torch.no_grad():
        out = model({"rgb": rgb, "flow": flow, "flow_bound": bound})
        per_frame = model.rgb_fc(model.rgb_backbone(rgb).mean(dim=(3, 4)).transpose(1, 2))
        rgb_ref = per_frame.mean(dim=1)
        stacked = (flow[:, :, :-1] * 20.0 / FLOW_SCALE).transpose(1, 2).reshape(2, 6, 24, 24)
        motion_ref = model.fc(model.backbone(stacked).mean(dim=(2, 3)))
        torch.testing.assert_close(out["stream_logits"][0], rgb_ref)
        torch.testing.assert_close(out["stream_logits"][1], motion_ref)
        torch.testing.assert_close(out["logits"],
                                   weighted_late_fusion([rgb_ref, motion_ref], [1.0, 3.0]))
        last = rgb.clone()
        last[:, :, -1] = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
        out2 = model({"rgb": last, "flow": flow, "flow_bound": bound})
    assert not torch.allclose(out2["stream_logits"][0], out["stream_logits"][0], atol=1e-5)
    torch.testing.assert_close(out2["stream_logits"][1], out["stream_logits"][1])


def test_layers_reach_both_backbones():
    """``layers`` sizes the motion and the RGB ResNet alike (not the depth's default layout)."""
    model = tiny(rgb_stream=True, layers=[1, 2, 1, 1])
    assert tuple(model.backbone.layers) == (1, 2, 1, 1)
    assert tuple(model.rgb_backbone.layers) == (1, 2, 1, 1)
    assert len(model.backbone.layer2) == len(model.rgb_backbone.layer2) == 2


def test_tvnet_weights_are_loaded_and_checked(tmp_path):
    """``tvnet_weights`` starts TVNet from a ``train-flow tvnet`` checkpoint (its architecture and
    weights), and a requested architecture that contradicts it is refused, not silently used."""
    from dataclasses import asdict
    from flowkit import checkpoints
    from flowkit.errors import EngineError
    net = TVNet(scales=1, warps=1, iterations=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    path = tmp_path / "tvnet.pt"
    checkpoints.save_checkpoint(path, "tvnet", {"config": asdict(net.config),
                                                "state_dict": net.state_dict()})
    model = tiny(tvnet_iterations=None, tvnet_weights=str(path))
    assert model.tvnet.config == net.config
    loaded = model.tvnet.state_dict()
    assert loaded.keys() == net.state_dict().keys()
    for k, v in net.state_dict().items():
        assert torch.equal(loaded[k], v), k
    with pytest.raises(EngineError, match="iterations=2"):
        tiny(tvnet_iterations=5, tvnet_weights=str(path))
    # Without the file, its architecture as keywords builds a model the weights fit ...
    rebuilt = create_model("tvnet", **model.kwargs_without_files())
    assert rebuilt.tvnet.config == net.config
    rebuilt.load_state_dict(model.state_dict())
    # ... unless the checkpoint's TV-L1 constants are ones no keyword sets.
    odd = TVNet(scales=1, warps=1, iterations=2, tau=0.2)
    checkpoints.save_checkpoint(path, "tvnet", {"config": asdict(odd.config),
                                                "state_dict": odd.state_dict()})
    assert tiny(tvnet_iterations=None, tvnet_weights=str(path)).kwargs_without_files() is None


@pytest.mark.parametrize("constant,value", [("tau", 0.2), ("lambda_", 0.1), ("theta", 0.4),
                                            ("zfactor", 0.7)])
def test_no_keywords_stand_for_a_checkpoint_of_other_tvl1_constants(tmp_path, constant, value):
    """A TVNet checkpoint whose tau, lambda, theta or zfactor is not TVNet's default has no
    keywords to rebuild it without the file (None): a model rebuilt with the defaults would run
    other TV-L1 than the one trained."""
    from dataclasses import asdict
    from flowkit import checkpoints
    odd = TVNet(scales=1, warps=1, iterations=2, **{constant: value})
    path = tmp_path / "tvnet.pt"
    checkpoints.save_checkpoint(path, "tvnet", {"config": asdict(odd.config),
                                                "state_dict": odd.state_dict()})
    model = tiny(tvnet_iterations=None, tvnet_weights=str(path))
    assert getattr(model.tvnet.config, constant) == value
    assert model.kwargs_without_files() is None


def test_tvnet_weights_are_recorded_by_absolute_path_and_not_needed_once_checkpointed(
        tiny_store, tmp_path, monkeypatch):
    """``tvnet_weights=tvnet.pt`` was recorded as typed, so evaluate and --resume from another
    folder failed ("no such tvnet weights: tvnet.pt"). It is recorded absolute. A file gone since
    (a run copied without it) is not needed: the run records the architecture the file fixed
    (``kwargs_without_files``) and its checkpoint holds the weights; before, evaluate and
    --resume refused. A run recorded without them names the path it expected the file at."""
    import json
    import re
    from dataclasses import asdict
    from flowkit import checkpoints
    from flowkit.train import Trainer, evaluate_run

    net = TVNet(scales=1, warps=1, iterations=2)
    (tmp_path / "here").mkdir()
    checkpoints.save_checkpoint(tmp_path / "here" / "tvnet.pt", "tvnet", {
        "config": asdict(net.config), "state_dict": net.state_dict()})
    monkeypatch.chdir(tmp_path / "here")
    config = TrainConfig(store=str(tiny_store), model="tvnet", model_kwargs={
        "width": 4, "layers": [1, 1, 1, 1], "tvnet_weights": "tvnet.pt"}, frames=2, size=16,
        batch_size=3, epochs=1, flip=False, val_fraction=0.25, workers=0)
    run = tmp_path / "run"
    Trainer(config, run).fit()
    recorded = json.loads((run / "config.json").read_text())["model"]["kwargs"]["tvnet_weights"]
    assert recorded == str((tmp_path / "here" / "tvnet.pt").resolve())
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["kwargs_without_files"] == {**model["kwargs"], "tvnet_weights": None,
                                             "tvnet_scales": 1, "tvnet_warps": 1,
                                             "tvnet_iterations": 2}
    monkeypatch.chdir(tmp_path)
    before = evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False)
    assert before.num_videos == 3
    (tmp_path / "here" / "tvnet.pt").rename(tmp_path / "moved.pt")
    after = evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False)
    assert after.report["predictions"] == before.report["predictions"]
    resumed = Trainer.resume(run, epochs=2)
    assert resumed.model.tvnet.config == net.config
    assert resumed.fit().epochs_done == 2
    assert json.loads((run / "config.json").read_text())["model"] == model  # recorded as it was
    # Nor is a file retrained under the same name read: its weights would not fit (a traceback).
    other = TVNet(scales=2, warps=1, iterations=3)
    checkpoints.save_checkpoint(tmp_path / "here" / "tvnet.pt", "tvnet", {
        "config": asdict(other.config), "state_dict": other.state_dict()})
    last = evaluate_run(run, clips=1, crops=1, checkpoint="last", out_dir=False)
    assert last.num_videos == 3 and Trainer.resume(run, epochs=2).model.tvnet.config == net.config
    # A run recorded without kwargs_without_files (an older flowkit) is rebuilt from the file:
    # one that now holds another architecture is named, with the way out.
    from flowkit.models import load_run_weights, rebuild_model, rebuild_run_model
    older = {"name": "tvnet", "kwargs": model["kwargs"]}
    rebuilt = rebuild_run_model(older, restoring=True)
    from flowkit.train.checkpoint import load_checkpoint
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    with pytest.raises(FlowkitError, match=r"^the weights of last.pt do not fit the model rebuilt "
                                           r"from the run's keywords \(size mismatch for tvnet\..*"
                                           rf"\); the model was rebuilt from tvnet_weights "
                                           rf"{re.escape(recorded)}, which now holds another "
                                           r"architecture .* put the original file back"):
        load_run_weights(rebuilt, older, state, "last.pt")
    (tmp_path / "here" / "tvnet.pt").unlink()
    gone = (rf"^model 'tvnet': tvnet_weights {re.escape(recorded)}, recorded with the run, is not "
            r"there; the model is rebuilt from that file .* put it back at that path$")
    with pytest.raises(FlowkitError, match=gone):
        rebuild_run_model({"name": "tvnet", "kwargs": model["kwargs"]}, restoring=True)
    with pytest.raises(FlowkitError, match=gone):  # nor without a checkpoint to restore
        rebuild_run_model(model, restoring=False)
    # A run recorded by an older flowkit holds the path as typed: read against this folder.
    from flowkit.models.registry import absolute_file_kwargs
    with pytest.raises(FlowkitError, match=r"tvnet_weights tvnet.pt, recorded with the run as a "
                                           r"relative path .*, is not in this folder \(.*tvnet.pt\)"
                                           r"; .*run from the folder the run was trained in"):
        rebuild_model("tvnet", num_classes=3, tvnet_weights="tvnet.pt")
    assert absolute_file_kwargs("trajectorynet", {"motionnet_weights": "mn.pt", "gamma": 0.1}) \
        == {"motionnet_weights": str(tmp_path.resolve() / "mn.pt"), "gamma": 0.1}


def test_errors_are_actionable():
    with pytest.raises(FlowkitError, match=r"built for clips of 4 frames, got 5 .*; create the "
                                           r"model with frames=5 \(flowkit train sets it from --frames\)$"):
        tiny()({"rgb": clip(t=5)})
    with pytest.raises(FlowkitError, match="at least 2 frames"):
        tiny(frames=1)
    with pytest.raises(FlowkitError, match="flow_source"):
        tiny(flow_source="motionnet")
    with pytest.raises(FlowkitError, match="fusion"):
        tiny(rgb_stream=True, fusion=[1, 2, 3])
    with pytest.raises(FlowkitError, match="needs rgb"):
        tiny()({"flow": torch.zeros(2, 2, 4, 24, 24)})


def test_tvnet_keywords_with_store_flow_are_refused_and_old_runs_still_rebuild(tmp_path):
    """tvnet_weights, freeze_tvnet and TVNet's other keywords with flow_source='store' were
    accepted, recorded and never read (no TVNet is built). They are refused naming
    flow_source=tvnet; a run recorded with them by an older flowkit still rebuilds (without
    them: they never changed its model) and keeps its recorded keywords."""
    from flowkit.models import rebuild_model, rebuild_run_model

    with pytest.raises(FlowkitError, match=r"^model 'tvnet': freeze_tvnet, tvnet_weights only "
                                           r"apply with flow_source='tvnet' \(with "
                                           r"flow_source='store' nothing reads them\); pass "
                                           r"--model-arg flow_source=tvnet or leave them out$"):
        tiny(flow_source="store", freeze_tvnet=True, tvnet_weights=str(tmp_path / "tvnet.pt"))
    with pytest.raises(FlowkitError, match="tvnet_iterations only applies"):
        tiny(flow_source="store", tvnet_iterations=3)
    assert tiny(flow_source="store", flow_lambda=0.1).tvnet is None  # a default: allowed
    recorded = {**TINY, "flow_source": "store", "tvnet_weights": str(tmp_path / "gone.pt"),
                "freeze_tvnet": True}
    old = rebuild_model("tvnet", **recorded)
    assert old.tvnet is None and old.model_kwargs == recorded
    restored = rebuild_run_model({"name": "tvnet", "kwargs": recorded, "kwargs_without_files": {
        **recorded, "tvnet_weights": None}}, restoring=True)
    restored.load_state_dict(tiny(flow_source="store").state_dict())


def test_a_run_recorded_without_flow_source_rebuilds_with_its_tvnet_keywords(tmp_path):
    """A run's kwargs that leave flow_source at its default (tvnet) build a TVNet, so its TVNet
    keywords are used, not dropped as a store-flow run's: the rebuild runs the TVNet trained
    (3 iterations, not the default 50), and a tvnet_weights file gone is still named."""
    from flowkit.models import rebuild_model

    recorded = {**TINY, "frames": 2, "tvnet_scales": 1, "tvnet_warps": 1}
    assert "flow_source" not in recorded
    model = rebuild_model("tvnet", **recorded)
    assert (model.tvnet.config.scales, model.tvnet.config.warps,
            model.tvnet.config.iterations) == (1, 1, 3)
    with pytest.raises(FlowkitError, match="tvnet_weights .*gone.pt, recorded with the run, is "
                                           "not there"):
        rebuild_model("tvnet", **recorded, tvnet_weights=str(tmp_path / "gone.pt"))


def test_wrong_kinds_of_input_are_one_line_naming_the_fix():
    """model(tensor) raised torch's "Tensor.__contains__ only supports Tensor or scalar", and
    uint8 frames "expected scalar type Byte": the model says what to pass instead."""
    resnet = create_model("resnet2d", num_classes=3, width=4, layers=[1, 1, 1, 1])
    with pytest.raises(FlowkitError, match=r"^model 'resnet2d' takes a dict of inputs, got "
                                           r"Tensor; call it as model\(\{'rgb': x\}\)$"):
        resnet(torch.zeros(2, 3, 4, 16, 16))
    i3d = create_model("i3d", num_classes=3, width=4, layers=[1, 1, 1, 1])
    with pytest.raises(FlowkitError, match=r"^model 'i3d': rgb must be a floating tensor, got "
                                           r"torch.uint8; pass it normalised as float"):
        i3d({"rgb": torch.zeros(2, 3, 4, 16, 16, dtype=torch.uint8)})
    with pytest.raises(FlowkitError, match="rgb must be a floating tensor, got ndarray"):
        tiny()({"rgb": clip().numpy()})
    assert resnet({"rgb": torch.zeros(2, 3, 4, 16, 16)})["logits"].shape == (2, 3)
