"""CIDC: the directional mask (checked by autograd on the unit), the weight normalisation, T -> T'
shapes, and the multi-scale network on each backbone."""
import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model
from flowkit.models.cidc import CIDCUnit, cidc_mask, cidc_weights

C, T, HW = 3, 6, 4


def dependence(unit: CIDCUnit, t_in: int) -> torch.Tensor:
    """``(T', T)`` bool: does output time t' depend on input time t? (autograd, eval mode)."""
    unit.eval()
    g = torch.Generator().manual_seed(0)           # seeded: the outcome never depends on test order
    with torch.no_grad():                          # random parameters: no accidental zero weights
        for p in unit.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(2, unit.channels, t_in, HW, HW, generator=g).requires_grad_()
    y = unit(x)
    dep = torch.zeros(y.shape[2], t_in, dtype=torch.bool)
    for t_out in range(y.shape[2]):
        (grad,) = torch.autograd.grad(y[:, :, t_out].sum(), x, retain_graph=True)
        dep[t_out] = grad.abs().sum(dim=(0, 1, 3, 4)) > 0
    return dep


def test_uni_output_never_sees_the_future():
    dep = dependence(CIDCUnit(C, T, T, "uni"), T)
    assert torch.equal(dep, torch.ones(T, T).tril().bool())


def test_none_sees_everything_and_bi_sees_both_sides():
    assert dependence(CIDCUnit(C, T, T, "none"), T).all()
    assert dependence(CIDCUnit(C, T, T, "bi"), T).all()
    # bi's reversed branch alone is anti-causal: output t sees inputs >= t
    unit = CIDCUnit(C, T, T, "bi")
    x = torch.randn(1, C, T, HW, HW, requires_grad=True)
    backward_half = unit.mix(x)[:, C:]
    (grad,) = torch.autograd.grad(backward_half[:, :, 2].sum(), x)
    assert torch.equal(grad.abs().sum(dim=(0, 1, 3, 4)) > 0, torch.arange(T) >= 2)


def test_perturbing_future_frames_leaves_uni_past_outputs_unchanged():
    unit = CIDCUnit(C, T, T, "uni").eval()
    x = torch.randn(1, C, T, HW, HW)
    y = x.clone()
    y[:, :, 4:] += 10.0
    assert torch.equal(unit(x)[:, :, :4], unit(y)[:, :, :4])
    assert not torch.allclose(unit(x)[:, :, 4:], unit(y)[:, :, 4:])


@pytest.mark.parametrize("direction", ["uni", "bi", "none"])
def test_weights_are_row_softmax_in_range(direction):
    params = torch.randn(C, 3, T) * 5
    w = cidc_weights(params, T, 3, direction)
    assert w.shape == (C, 3, T)
    assert w.min() >= -1 and w.max() <= 1 and w.min() >= 0       # softmax: [0, 1] within [-1, 1]
    torch.testing.assert_close(w.sum(-1), torch.ones(C, 3))
    if direction != "none":
        assert torch.equal(w[:, ~cidc_mask(T, 3)], torch.zeros_like(w[:, ~cidc_mask(T, 3)]))


def test_mask_for_t_out_different_from_t_in():
    # T=6 -> T'=3: output t' covers inputs up to 2t'+1
    assert cidc_mask(6, 3).int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                                               [1, 1, 1, 1, 1, 1]]
    assert torch.equal(cidc_mask(5, 5), torch.ones(5, 5).tril().bool())
    assert cidc_mask(4, 1).all()
    dep = dependence(CIDCUnit(C, 6, 3, "uni"), 6)
    assert torch.equal(dep, cidc_mask(6, 3))


@pytest.mark.parametrize("t_in,t_out", [(6, 3), (4, 4), (4, 6), (5, 1)])
def test_unit_shapes(t_in, t_out):
    unit = CIDCUnit(C, t_in, t_out, "bi", out_channels=5)
    assert unit(torch.randn(2, C, t_in, HW, HW + 1)).shape == (2, 5, t_out, HW, HW + 1)
    with pytest.raises(FlowkitError, match="built for"):
        unit(torch.randn(2, C, t_in + 1, HW, HW))


def test_bad_arguments():
    with pytest.raises(FlowkitError, match="direction"):
        CIDCUnit(C, T, T, "forward")
    with pytest.raises(FlowkitError, match="t_out"):
        cidc_weights(torch.zeros(C, 2, T), T, 3)
    with pytest.raises(FlowkitError, match="backbone"):
        create_model("cidc", num_classes=2, backbone="vgg")


NET = dict(num_classes=3, width=4, layers=(1, 1, 1, 1), frames=4)


@pytest.mark.parametrize("backbone,modality", [("resnet2d", "rgb"), ("s3d", "rgb"), ("i3d", "flow")])
def test_network_forward_backward(backbone, modality):
    model = create_model("cidc", **NET, backbone=backbone, modality=modality, t_out=2)
    assert model.inputs == (modality,)
    channels = 3 if modality == "rgb" else 2
    out = model({modality: torch.randn(2, channels, 4, 32, 32)})
    assert out["logits"].shape == (2, 3)
    assert len(out["stream_logits"]) == 2 and all(s.shape == (2, 3) for s in out["stream_logits"])
    torch.testing.assert_close(out["logits"], 0.5 * (out["stream_logits"][0] + out["stream_logits"][1]))
    classification_loss(out, torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.units[0].params.grad.abs().sum() > 0
    assert model.backbones() == [model.backbone] and model.heads() == [model.fc]


def test_network_cidc_features_and_frames_check():
    model = create_model("cidc", **NET, direction="uni")
    assert model.t_out == 2 and model.cidc_channels == 8
    stages = model.backbone.forward_stages(torch.randn(2, 3, 4, 32, 32))
    assert model.cidc_features(stages).shape == (2, 8, 3 * 2)     # (B, D, 3 T')
    with pytest.raises(FlowkitError, match="frames=4"):
        model({"rgb": torch.randn(2, 3, 6, 32, 32)})


def test_network_uses_temporal_order():
    # The CIDC branch's input keeps time: reversing the clip changes the CIDC logits even with a
    # per-frame backbone, whose pooled branch is blind to order.
    model = create_model("cidc", **NET, backbone="resnet2d", direction="uni").eval()
    x = torch.randn(1, 3, 4, 32, 32)
    a, b = model({"rgb": x}), model({"rgb": x.flip(2)})
    torch.testing.assert_close(a["stream_logits"][0], b["stream_logits"][0])
    assert not torch.allclose(a["stream_logits"][1], b["stream_logits"][1])
