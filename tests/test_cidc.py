"""CIDC: the directional mask (checked by autograd on the unit), the weight normalisation, T -> T'
shapes, and the multi-scale network on each backbone."""
import pytest
import torch
import torch.nn.functional as F

from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model
from flowkit.models.cidc import DIRECTIONS, CIDCUnit, cidc_mask, cidc_weights
from flowkit.models.resnet import ResNet2d
from flowkit.models.resnet3d import ResNet3d

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


def test_unit_output_is_relu_of_bn_of_the_projection():
    """A unit ends with ReLU(BN(conv 1x1x1)): its output is non-negative (the attention and the
    classifier downstream are built on rectified features), with BN centring making about half
    of it exactly zero in training mode."""
    torch.manual_seed(0)
    unit = CIDCUnit(C, T, 3, "bi", out_channels=5)
    y = unit(torch.randn(2, C, T, HW, HW))
    assert y.min() >= 0 and (y == 0).any() and (y > 0).any()


def test_network_cidc_features_follow_the_documented_layout():
    """``cidc_features`` is the module docstring's multi-scale layout, recomputed here from the
    units: fine-to-coarse aggregation ``z_i += avgpool(z_{i-1})``, attention propagated from the
    coarsest stage (``a_i = sigmoid(mean_c z_i) * upsample(a_{i+1})``), spatial means of
    ``z_i * a_i`` concatenated along time in stage order (stage 2 first)."""
    torch.manual_seed(0)
    model = create_model("cidc", **NET, t_out=2).eval()
    with torch.no_grad():
        stages = model.backbone.forward_stages(torch.randn(2, 3, 4, 64, 64))
        assert [s.shape[-1] for s in stages[-3:]] == [8, 4, 2]      # three distinct scales
        got = model.cidc_features(stages)
        z = [unit(s) for unit, s in zip(model.units, stages[-3:])]
        z[1] = z[1] + F.adaptive_avg_pool3d(z[0], z[1].shape[2:])
        z[2] = z[2] + F.adaptive_avg_pool3d(z[1], z[2].shape[2:])
        def up(a, like):
            return F.interpolate(a, size=like.shape[2:], mode="nearest")
        a4 = torch.sigmoid(z[2].mean(1, keepdim=True))
        a3 = torch.sigmoid(z[1].mean(1, keepdim=True)) * up(a4, z[1])
        a2 = torch.sigmoid(z[0].mean(1, keepdim=True)) * up(a3, z[0])
        ref = torch.cat([(z[0] * a2).mean((3, 4)), (z[1] * a3).mean((3, 4)),
                         (z[2] * a4).mean((3, 4))], dim=2)
    assert got.shape == (2, model.cidc_channels, 3 * 2)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("backbone,expected", [("s3d", "separable"), ("i3d", "inflated"),
                                               ("resnet2d", None)])
def test_network_backbone_names_pick_the_right_kind(backbone, expected):
    """``backbone="s3d"`` is the separable (2+1)D ResNet3d, ``"i3d"`` the inflated one and
    ``"resnet2d"`` the per-frame 2D ResNet: the paper's comparisons depend on which one is built."""
    model = create_model("cidc", **NET, backbone=backbone)
    if expected is None:
        assert isinstance(model.backbone, ResNet2d)
    else:
        assert isinstance(model.backbone, ResNet3d) and model.backbone.kind == expected


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_network_direction_reaches_every_unit(direction):
    """The network's ``direction`` is every unit's: ``"uni"`` / ``"none"`` units have no reversed
    branch (``params_reverse`` None, a C-channel projection), only ``"bi"`` builds one."""
    model = create_model("cidc", **NET, direction=direction)
    assert model.direction == direction and len(model.units) == 3
    for unit in model.units:
        assert unit.direction == direction
        assert (unit.params_reverse is None) == (direction != "bi")
        assert unit.proj.in_channels == (2 if direction == "bi" else 1) * unit.channels
