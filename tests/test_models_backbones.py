"""2D / separable-3D / inflated-3D ResNet backbones, their classifiers, and torchvision-weight init."""
from __future__ import annotations

import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model, list_models
from flowkit.models.init import (init_from_file, is_torchvision_resnet,
                                 load_torchvision_resnet, resnet_view)
from flowkit.models.resnet import BasicBlock, Bottleneck, ResNet2d
from flowkit.models.resnet3d import BasicBlock3d, Bottleneck3d, ResNet3d

TINY = dict(width=8, layers=(1, 1, 1, 1))
B, T, H, W = 2, 4, 32, 32


def torchvision_keys(depth: int) -> set[str]:
    """State-dict keys of torchvision's resnet18 / resnet50 without fc, written from its layout."""
    blocks, convs = {18: ((2, 2, 2, 2), 2), 50: ((3, 4, 6, 3), 3)}[depth]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{p}" for p in bn}
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            pre = f"layer{stage}.{j}"
            for c in range(1, convs + 1):
                keys.add(f"{pre}.conv{c}.weight")
                keys |= {f"{pre}.bn{c}.{p}" for p in bn}
            # resnet18: stage 1 keeps 64 channels at stride 1 -> no projection; resnet50 expands x4
            if j == 0 and (stage > 1 or depth == 50):
                keys.add(f"{pre}.downsample.0.weight")
                keys |= {f"{pre}.downsample.1.{p}" for p in bn}
    return keys


def backbone(kind: str, depth: int = 18, in_channels: int = 3, **kw):
    if kind == "2d":
        return ResNet2d(depth, in_channels, **TINY)
    return ResNet3d(depth, in_channels, **TINY, kind=kind, **kw)


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def saved_2d(tmp_path, depth=18, in_channels=3, fc_classes=None):
    torch.manual_seed(0)
    net = ResNet2d(depth, in_channels, **TINY)
    randomise_bn(net)
    state = net.state_dict()
    if fc_classes:
        state["fc.weight"] = torch.randn(fc_classes, net.stage_channels[-1])
        state["fc.bias"] = torch.randn(fc_classes)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(state, path)
    return net.eval(), path


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("kind", ["2d", "separable", "inflated"])
def test_stage_shapes(kind, depth):
    net = backbone(kind, depth)
    expansion = 1 if depth == 18 else 4
    assert net.stage_channels == tuple(8 * 2 ** i * expansion for i in range(4))
    x = torch.randn(B, 3, T, H, W)
    assert net.forward_stem(x).shape == (B, 8, T, 8, 8)
    outs = net.forward_stages(x)
    expected = [(B, c, T, s, s) for c, s in zip(net.stage_channels, (8, 4, 2, 1))]
    assert [tuple(o.shape) for o in outs] == expected
    assert len(net.stages) == 4 and net.stages[1] is net.layer2
    assert torch.equal(net(x), outs[-1])


def test_resnet2d_image_input_and_channel_check():
    net = ResNet2d(18, 3, **TINY)
    assert net.forward_stages(torch.randn(2, 3, 32, 32))[2].shape == (2, 32, 2, 2)
    with pytest.raises(FlowkitError, match="3 input channels"):
        net(torch.randn(1, 4, 2, 32, 32))
    with pytest.raises(FlowkitError, match="depth"):
        ResNet2d(20)
    with pytest.raises(FlowkitError, match="layers"):
        ResNet2d(18, layers=(1, 1, 1))


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_names_and_shapes(depth):
    with torch.device("meta"):  # full-size nets without allocating weights
        net = ResNet2d(depth)
        sep = ResNet3d(depth, kind="separable")
        inf = ResNet3d(depth, kind="inflated")
    keys = set(net.state_dict())
    assert keys == torchvision_keys(depth)
    assert "layer4.1.bn2.running_var" in keys
    assert ("layer1.0.downsample.0.weight" in keys) == (depth == 50)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    if depth == 18:
        assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
        assert shapes["layer4.1.conv2.weight"] == (512, 512, 3, 3)
    else:
        assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
        assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
        assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    # 3D: the same names for the spatial parts; separable adds only temporal (*_t) modules
    assert set(inf.state_dict()) == keys
    extra = set(sep.state_dict()) - keys
    assert keys <= set(sep.state_dict()) and extra
    assert all(any(p.endswith("_t") for p in k.split(".")) for k in extra)
    assert "layer2.1.conv1_t.weight" in extra if depth == 18 else "layer2.1.conv2_t.weight" in extra
    assert tuple(sep.layer2[1].conv2.weight.shape[2:]) == (1, 3, 3)
    assert tuple(sep.layer2[1].conv1.weight.shape[2:]) == ((1, 3, 3) if depth == 18 else (1, 1, 1))
    assert tuple(inf.layer2[1].conv1.weight.shape[2:]) == ((3, 3, 3) if depth == 18 else (3, 1, 1))
    assert tuple(inf.conv1.weight.shape[2:]) == (5, 7, 7)


@pytest.mark.parametrize("block_cls,dims", [(BasicBlock, 2), (Bottleneck, 2), (BasicBlock3d, 3),
                                            (Bottleneck3d, 3)])
def test_residual_input(block_cls, dims):
    torch.manual_seed(0)
    block = block_cls(8, 4, stride=2).eval()
    randomise_bn(block)
    shape = (2, 8, 3, 8, 8) if dims == 3 else (2, 8, 8, 8)
    x, r = torch.randn(shape), torch.randn(shape)
    assert block.downsample is not None
    expected = torch.relu(block.downsample(x) + block.residual(r))
    assert torch.allclose(block(x, residual_input=r), expected, atol=1e-6)
    assert torch.equal(block(x, residual_input=x), block(x))
    assert not torch.allclose(block(x, residual_input=r), block(x))


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("temporal_bn", [True, False])
def test_identity_temporal_init_equals_2d_per_frame(tmp_path, depth, temporal_bn):
    net2d, path = saved_2d(tmp_path, depth)
    sep = ResNet3d(depth, 3, **TINY, kind="separable", temporal_init="identity", temporal_bn=temporal_bn)
    report = load_torchvision_resnet(sep, path, strict=True)
    assert report["missing"] and all("_t." in k for k in report["missing"])
    assert report["inflated"] and not report["unexpected"]
    w = sep.layer1[0].conv2_t.weight if depth == 50 else sep.layer1[0].conv1_t.weight
    assert torch.equal(w[:, :, 1, 0, 0], torch.eye(w.shape[0])) and not w[:, :, [0, 2]].any()
    sep.eval()
    video = torch.randn(B, 3, T, H, W)
    with torch.no_grad():
        for a, b in zip(sep.forward_stages(video), net2d.forward_stages(video)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        # with the default (random) temporal init the frames do mix: the test above is not vacuous
        other = ResNet3d(depth, 3, **TINY, kind="separable")
        load_torchvision_resnet(other, path)
        assert not torch.allclose(other.eval()(video), net2d(video), atol=1e-2)


@pytest.mark.parametrize("depth", [18, 50])
def test_inflated_static_video_equals_2d(tmp_path, depth):
    net2d, path = saved_2d(tmp_path, depth)
    i3d = ResNet3d(depth, 3, **TINY, kind="inflated")
    report = load_torchvision_resnet(i3d, path, strict=True)
    assert "conv1.weight" in report["inflated"] and not report["missing"]
    kt = i3d.conv1.weight.shape[2]
    assert torch.allclose(i3d.conv1.weight, net2d.conv1.weight.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt)
    i3d.eval()
    frame = torch.randn(B, 3, 1, H, W)
    static = frame.expand(-1, -1, T, -1, -1).contiguous()
    moving = torch.randn(B, 3, T, H, W)
    with torch.no_grad():
        for a, b in zip(i3d.forward_stages(static), net2d.forward_stages(static)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(i3d(moving), net2d(moving), atol=1e-2)


@pytest.mark.parametrize("kind", ["2d", "separable", "inflated"])
def test_cross_modality_first_layer(tmp_path, kind):
    net2d, path = saved_2d(tmp_path)
    flow_net = backbone(kind, 18, in_channels=20)
    report = load_torchvision_resnet(flow_net, path)
    assert report["cross_modality"] == ["conv1.weight"]
    w = flow_net.conv1.weight
    assert w.shape[1] == 20
    mean_rgb = net2d.conv1.weight.mean(dim=1)  # (O, 7, 7)
    if w.dim() == 5:
        w = w.sum(dim=2)  # undo the inflation (repeat / kt)
    for c in range(20):
        assert torch.allclose(w[:, c], mean_rgb, atol=1e-6)
    # the rest of the network is the RGB network's
    assert torch.allclose(flow_net.layer3[0].bn1.running_var, net2d.layer3[0].bn1.running_var)


def test_fc_loaded_or_skipped_and_errors(tmp_path):
    net2d, path = saved_2d(tmp_path, fc_classes=7)
    same = create_model("resnet2d", num_classes=7, **TINY)
    report = load_torchvision_resnet(same, path)
    assert {"fc.weight", "fc.bias"} <= set(report["loaded"])
    assert torch.equal(same.fc.weight, torch.load(path)["fc.weight"])
    assert torch.equal(same.backbone.layer2[0].conv1.weight, net2d.layer2[0].conv1.weight)
    other = create_model("i3d", num_classes=3, **TINY)
    report = load_torchvision_resnet(other, path)
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"} and "fc.weight" not in report["loaded"]
    assert "backbone.layer4.0.conv1.weight" in report["inflated"]
    # a ResNet-50 model cannot take ResNet-18 weights: the error names the file and the key
    with pytest.raises(FlowkitError) as err:
        load_torchvision_resnet(ResNet3d(50, 3, **TINY), path)
    assert str(path) in str(err.value) and "layer1.0.conv1.weight" in str(err.value)
    with pytest.raises(FlowkitError, match="no such weights file"):
        load_torchvision_resnet(same, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(FlowkitError, match="junk.pth"):
        load_torchvision_resnet(same, tmp_path / "junk.pth")
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    with pytest.raises(FlowkitError, match="conv1.weight"):
        load_torchvision_resnet(same, tmp_path / "foreign.pth")
    with pytest.raises(FlowkitError, match="strict"):
        load_torchvision_resnet(ResNet2d(18, 3, width=8, layers=(2, 1, 1, 1)), path, strict=True)


def test_init_from_file_torchvision_and_checkpoint(tmp_path):
    net2d, path = saved_2d(tmp_path)
    model = create_model("i3d", num_classes=3, modality="flow", flow_stack=2, **TINY)
    report = init_from_file(model, path)
    assert report["format"] == "torchvision" and report["cross_modality"] == ["backbone.conv1.weight"]
    assert torch.allclose(model.backbone.layer1[0].conv2.weight[:, :, 0], net2d.layer1[0].conv2.weight)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, ckpt)
    fresh = create_model("i3d", num_classes=3, modality="flow", flow_stack=2, **TINY)
    report = init_from_file(fresh, ckpt)
    assert report["format"] == "model" and not report["missing"]
    assert torch.equal(fresh.fc.weight, model.fc.weight)
    finetune = create_model("i3d", num_classes=5, modality="flow", flow_stack=2, **TINY)
    report = init_from_file(finetune, ckpt)
    assert set(report["skipped"]) == {"fc.weight", "fc.bias"}
    assert torch.equal(finetune.backbone.conv1.weight, model.backbone.conv1.weight)
    with pytest.raises(FlowkitError, match="neither"):
        init_from_file(create_model("resnet2d", num_classes=3, width=4, layers=(1, 1, 1, 1)), ckpt)


def test_torchvision_layout_is_the_files_own_and_views_report_model_names(tmp_path):
    """A file is a torchvision ResNet by its own keys (conv1 and layer1..4), whatever the model
    has at its top level; a model's resnet_view loads into its own tensors and the report names
    them as the model does."""
    net2d, path = saved_2d(tmp_path)
    state = torch.load(path)
    assert is_torchvision_resnet(state)
    assert not is_torchvision_resnet({k: v for k, v in state.items() if not k.startswith("layer4.")})
    assert not is_torchvision_resnet({"backbone." + k: v for k, v in state.items()})

    class Split(torch.nn.Module):      # a ResNet kept in two parts under other names
        def __init__(self):
            super().__init__()
            full = ResNet2d(18, 3, **TINY)
            self.stem = torch.nn.ModuleDict({"conv": full.conv1, "norm": full.bn1})
            self.body = torch.nn.ModuleList([full.layer1, full.layer2, full.layer3, full.layer4])

        def backbones(self):
            return [resnet_view(conv1=self.stem["conv"], bn1=self.stem["norm"],
                                **{f"layer{i + 1}": s for i, s in enumerate(self.body)})]

    split = Split()
    report = init_from_file(split, path)
    assert report["format"] == "torchvision" and not report["missing"] and not report["unexpected"]
    assert set(report["loaded"]) == set(split.state_dict())
    assert torch.equal(split.body[2][0].conv1.weight, net2d.layer3[0].conv1.weight)
    assert torch.equal(split.stem["norm"].running_var, net2d.bn1.running_var)


def test_classifiers_forward_backward():
    assert {"resnet2d", "i3d"} <= set(list_models())
    labels = torch.tensor([0, 2])
    for name, modality in [("resnet2d", "rgb"), ("resnet2d", "flow"), ("i3d", "rgb"), ("i3d", "flow")]:
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, modality=modality, flow_stack=2, dropout=0.2, **TINY)
        assert model.inputs == (modality,) and model.flow_stack == 2
        x = torch.randn(B, 3 if modality == "rgb" else 4, T, H, W)
        out = model({modality: x, "label": labels})
        assert out["logits"].shape == (B, 3)
        loss = classification_loss(out, labels)
        loss.backward()
        assert torch.isfinite(loss)
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        with pytest.raises(FlowkitError, match="needs"):
            model({"other": x})
        with pytest.raises(FlowkitError, match="expects"):
            model({modality: x[:, :1]})
    with pytest.raises(FlowkitError, match="modality"):
        create_model("resnet2d", num_classes=3, modality="depth")


def test_classification_loss_sums_every_streams_cross_entropy_plus_aux():
    """Multi-stream models (CIDC, DDN, ST-MulNet, TVNet) train each stream with its own
    cross-entropy: the loss is the sum over ``stream_logits`` (not the cross-entropy of the fused
    ``logits``) plus ``aux_loss``; without streams it is the cross-entropy of ``logits``."""
    import torch.nn.functional as F
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, -1.0]])
    y = torch.tensor([0, 1])
    fused = (a + b) / 2
    expected = F.cross_entropy(a, y) + F.cross_entropy(b, y)
    assert not torch.allclose(expected, F.cross_entropy(fused, y))
    out = {"logits": fused, "stream_logits": [a, b]}
    torch.testing.assert_close(classification_loss(out, y), expected)
    aux = torch.tensor(0.25)
    torch.testing.assert_close(classification_loss({**out, "aux_loss": aux}, y), expected + aux)
    torch.testing.assert_close(classification_loss({"logits": fused}, y), F.cross_entropy(fused, y))


TWO_STREAM = {
    "ddn": (dict(layers=[1, 1, 1, 1]), ("rgb",)),
    "cidc": (dict(layers=(1, 1, 1, 1), frames=T), ("rgb",)),
    "stmulnet": (dict(layers=[1, 1, 1, 1], flow_stack=1), ("rgb", "flow")),
    "tvnet": (dict(layers=[1, 1, 1, 1], frames=T, flow_source="store", rgb_stream=True),
              ("rgb", "flow")),
}


@pytest.mark.parametrize("name", sorted(TWO_STREAM))
def test_dropout_acts_on_every_stream_in_training_only(name):
    """``dropout`` reaches every stream's classifier: with dropout=0.9 two training-mode forwards
    of the same clip give different logits in every entry of ``stream_logits``, and eval mode is
    deterministic (a ``--model-arg dropout=...`` that silently did nothing would not regularise)."""
    kw, inputs = TWO_STREAM[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, width=4, dropout=0.9, **kw)
    g = torch.Generator().manual_seed(1)
    batch = {"rgb": torch.randn(B, 3, T, H, W, generator=g)}
    if "flow" in inputs:
        batch["flow"] = torch.randn(B, 2, T, H, W, generator=g)
    model.train()
    first, second = model(batch)["stream_logits"], model(batch)["stream_logits"]
    assert len(first) >= 2
    for i, (x, y) in enumerate(zip(first, second)):
        assert not torch.allclose(x, y), f"stream {i} unaffected by dropout"
    model.eval()
    with torch.no_grad():
        first, second = model(batch)["stream_logits"], model(batch)["stream_logits"]
    for x, y in zip(first, second):
        assert torch.equal(x, y)


def test_resnet2d_averages_frame_logits():
    torch.manual_seed(0)
    model = create_model("resnet2d", num_classes=4, **TINY).eval()
    video = torch.randn(1, 3, T, H, W)
    with torch.no_grad():
        clip = model({"rgb": video})["logits"]
        frames = torch.stack([model({"rgb": video[:, :, t:t + 1]})["logits"] for t in range(T)])
    assert torch.allclose(clip, frames.mean(dim=0), atol=1e-5)
