"""ST-MulNet: motion gating of the appearance stream, identity temporal init, fusion and training."""
from __future__ import annotations

import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model
from flowkit.models.init import load_torchvision_resnet
from flowkit.models.resnet import ResNet2d
from flowkit.models.stmulnet import late_fusion_logits, motion_gate

TINY = dict(width=8, layers=(1, 1, 1, 1))
B, T, H, W, L, K = 2, 4, 32, 32, 2, 3


def make(gating="multiplicative", seed=0, **kw):
    torch.manual_seed(seed)
    kw = {**TINY, **kw}
    return create_model("stmulnet", num_classes=K, flow_stack=L, gating=gating, **kw)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(B, 3, T, H, W, generator=g),
            "flow": torch.randn(B, 2 * L, T, H, W, generator=g),
            "label": torch.tensor([0, 2])}


def test_outputs_and_fusion():
    model = make()
    assert model.inputs == ("rgb", "flow") and model.flow_stack == L
    assert model.motion.conv1.in_channels == 2 * L and model.appearance.conv1.in_channels == 3
    out = model(batch())
    assert set(out) == {"logits", "stream_logits"}
    assert out["logits"].shape == (B, K) and len(out["stream_logits"]) == 2
    assert all(s.shape == (B, K) for s in out["stream_logits"])
    # late fusion: softmax of the fused logits is the average of the streams' softmax scores
    mean_prob = sum(s.softmax(dim=1) for s in out["stream_logits"]) / 2
    assert torch.allclose(out["logits"].softmax(dim=1), mean_prob, atol=1e-6)
    assert torch.allclose(late_fusion_logits([out["stream_logits"][0]]).softmax(1),
                          out["stream_logits"][0].softmax(1), atol=1e-6)


def test_default_gating_positions():
    # the paper's res2b..res5b (second unit of each stage); single-unit stages gate their only unit
    assert make().gated_blocks == {0: 0, 1: 0, 2: 0, 3: 0}
    deeper = make(layers=(2, 2, 1, 2), width=4)
    assert deeper.gated_blocks == {0: 1, 1: 1, 2: 0, 3: 1}
    assert make(gated_layers=(3, 4)).gated_blocks == {2: 0, 3: 0}
    assert make("none").gated_blocks == {}
    with pytest.raises(FlowkitError, match="gating"):
        make("concat")
    with pytest.raises(FlowkitError, match="gated_layers"):
        make(gated_layers=(5,))


@pytest.mark.parametrize("gating", ["multiplicative", "additive", "none"])
def test_appearance_depends_on_flow_only_when_gated(gating):
    model = make(gating).eval()
    inputs = batch()
    other = dict(inputs, flow=torch.randn_like(inputs["flow"]))
    with torch.no_grad():
        a1, m1 = model(inputs)["stream_logits"]
        a2, m2 = model(other)["stream_logits"]
    assert not torch.allclose(m1, m2)  # the motion stream sees the flow
    if gating == "none":
        assert torch.equal(a1, a2)
    else:
        assert not torch.allclose(a1, a2, atol=1e-5)


def test_motion_never_gated_by_appearance():
    model = make().eval()
    inputs = batch()
    other = dict(inputs, rgb=torch.randn_like(inputs["rgb"]))
    with torch.no_grad():
        assert torch.equal(model(inputs)["stream_logits"][1], model(other)["stream_logits"][1])


def test_multiplicative_and_additive_differ():
    mul, add = make("multiplicative"), make("additive")
    add.load_state_dict(mul.state_dict())
    inputs = batch()
    with torch.no_grad():
        a_mul = mul.eval()(inputs)["stream_logits"][0]
        a_add = add.eval()(inputs)["stream_logits"][0]
    assert not torch.allclose(a_mul, a_add, atol=1e-5)
    xa, xm = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    assert torch.equal(motion_gate(xa, xm, "multiplicative"), xa * xm.clamp(min=0))
    assert torch.equal(motion_gate(xa, xm, "additive"), xa + xm.clamp(min=0))


@pytest.mark.parametrize("gating", ["multiplicative", "none"])
def test_gradients(gating):
    model = make(gating, dropout=0.5)
    inputs = batch()
    out = model(inputs)
    # the appearance loss alone reaches the motion stream only through the gate
    out["stream_logits"][0].sum().backward(retain_graph=True)
    motion_grad = model.motion.conv1.weight.grad
    if gating == "none":
        assert motion_grad is None or not motion_grad.any()
    else:
        assert motion_grad is not None and motion_grad.abs().sum() > 0
    model.zero_grad()
    loss = classification_loss(out, inputs["label"])
    loss.backward()
    assert torch.isfinite(loss)
    for stream in (model.appearance, model.motion):
        grads = [p.grad for p in stream.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert stream.conv1.weight.grad.abs().sum() > 0
        assert stream.layer4[0].conv2_t.weight.grad.abs().sum() > 0


def test_streams_start_as_2d_resnets(tmp_path):
    """Identity temporal filters, no temporal BN: each stream is its 2D ResNet per frame (train and eval)."""
    torch.manual_seed(0)
    net2d = ResNet2d(18, 3, **TINY)
    path = tmp_path / "r18.pth"
    torch.save(net2d.state_dict(), path)
    model = make("none")
    report = load_torchvision_resnet(model, path)
    assert "motion.conv1.weight" in report["cross_modality"]
    flow2d = ResNet2d(18, 2 * L, **TINY)
    load_torchvision_resnet(flow2d, path)
    inputs = batch()
    for mode in ("train", "eval"):
        for net in (model, net2d, flow2d):
            net.train(mode == "train")
        with torch.no_grad():
            for stream, ref, x in ((model.appearance, net2d, inputs["rgb"]),
                                   (model.motion, flow2d, inputs["flow"])):
                for a, b in zip(stream.forward_stages(x), ref.forward_stages(x)):
                    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_temporal_max_pooling_head():
    model = make("none").eval()
    inputs = batch()
    with torch.no_grad():
        xa, _ = model.forward_features(inputs["rgb"], inputs["flow"])
        expected = model.appearance_fc(xa.amax(dim=2).mean(dim=(2, 3)))
        assert torch.allclose(model(inputs)["stream_logits"][0], expected, atol=1e-6)


def test_input_errors():
    model = make()
    inputs = batch()
    with pytest.raises(FlowkitError, match="flow"):
        model({"rgb": inputs["rgb"]})
    with pytest.raises(FlowkitError, match=r"\(B, 4, T, H, W\)"):
        model({"rgb": inputs["rgb"], "flow": inputs["flow"][:, :2]})
    with pytest.raises(FlowkitError, match="same T"):
        model({"rgb": inputs["rgb"], "flow": inputs["flow"][:, :, :2]})
