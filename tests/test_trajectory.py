"""Trajectory convolution (op, module) and TrajectoryNet / s3d: each against a direct reference
(temporal neighbours, integer shifts, nn.Conv3d), gradcheck in float64, and bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model
from flowkit.models.resnet3d import TemporalConv3d
from flowkit.models import trajectory as trajectory_module
from flowkit.models.resnet3d import ResNet3d
from flowkit.models.trajectory import (TrajectoryConv, backward_from_forward, downsample_flow,
                                       resize_flow_to, trajectory_conv, trajectory_offsets,
                                       trajectory_sample)

B, C, T, H, W = 2, 3, 5, 6, 7


@pytest.fixture
def x():
    return torch.randn(B, C, T, H, W, generator=torch.Generator().manual_seed(0))


def constant_flow(u, v, t=T, h=H, w=W, b=B):
    flow = torch.zeros(b, 2, t, h, w)
    flow[:, 0], flow[:, 1] = u, v
    return flow


def shifted(x, tau, dy, dx):
    """Reference: ``out[:, :, t, y, x] = x[:, :, t + tau, y + dy, x + dx]``, zero outside."""
    out = torch.zeros_like(x)
    t, h, w = x.shape[2:]
    for ti in range(t):
        if not 0 <= ti + tau < t:
            continue
        for yi in range(h):
            for xi in range(w):
                if 0 <= yi + dy < h and 0 <= xi + dx < w:
                    out[:, :, ti, yi, xi] = x[:, :, ti + tau, yi + dy, xi + dx]
    return out


def test_zero_flow_gives_temporal_neighbours(x):
    out = trajectory_sample(x, torch.zeros(B, 2, T, H, W), kernel_t=3)
    assert out.shape == (B, C, 3, T, H, W)
    for k, tau in enumerate((-1, 0, 1)):
        assert torch.equal(out[:, :, k], shifted(x, tau, 0, 0))
    rep = trajectory_sample(x, torch.zeros(B, 2, T, H, W), kernel_t=3, padding="replicate")
    torch.testing.assert_close(rep[:, :, 0, 0], x[:, :, 0], rtol=0, atol=0)   # edge frame repeated
    torch.testing.assert_close(rep[:, :, 2, -1], x[:, :, -1], rtol=0, atol=0)


def test_constant_integer_flow_is_an_exact_shift(x):
    fwd = constant_flow(2.0, -1.0)
    out = trajectory_sample(x, fwd, backward_from_forward(fwd), kernel_t=3)
    assert torch.equal(out[:, :, 2], shifted(x, 1, -1, 2))     # t+1 at p + (2, -1)
    assert torch.equal(out[:, :, 0], shifted(x, -1, 1, -2))    # t-1 at p - (2, -1)
    assert torch.equal(out[:, :, 1], x)
    # backward_flow=None derives the same backward flow
    assert torch.equal(trajectory_sample(x, fwd, None, kernel_t=3), out)


def test_out_of_frame_and_out_of_clip_are_zero(x):
    out = trajectory_sample(x, constant_flow(50.0, 0.0), kernel_t=3)
    assert out[:, :, 0].abs().max() == 0 and out[:, :, 2].abs().max() == 0
    out = trajectory_sample(x, constant_flow(1.0, 1.0), kernel_t=3)
    assert out[:, :, 2, -1].abs().max() == 0                    # t = T-1: t+1 is outside the clip
    assert out[:, :, 0, 0].abs().max() == 0


def test_accumulation_kt5_is_twice_the_shift(x):
    fwd = constant_flow(1.0, 1.0)
    out = trajectory_sample(x, fwd, kernel_t=5)
    assert out.shape == (B, C, 5, T, H, W)
    assert torch.equal(out[:, :, 4], shifted(x, 2, 2, 2))
    assert torch.equal(out[:, :, 0], shifted(x, -2, -2, -2))
    offsets = trajectory_offsets(fwd, kernel_t=5)
    assert offsets.shape == (B, 8, T, H, W)
    t = 2   # all of t-2 .. t+2 inside the clip
    assert offsets[0, :, t, 3, 3].tolist() == [-2, -2, -1, -1, 1, 1, 2, 2]
    assert offsets[:, 6:, T - 2].abs().max() == 0                # t+2 outside: zero offsets


def test_accumulation_samples_the_flow_along_the_trajectory():
    # Flow 1 px right everywhere at t=0; at t=1 it is 3 px right only in column 1.
    fwd = torch.zeros(1, 2, 3, 4, 8)
    fwd[:, 0, 0] = 1.0
    fwd[:, 0, 1, :, 1] = 3.0
    off = trajectory_offsets(fwd, kernel_t=5)
    # pixel (y, x=0) at t=0: x moves to 1 at t=1, then 1 + f_1(1) = 4 at t=2.
    assert off[0, 6, 0, 2, 0] == 4.0
    # pixel x=2: to 3, where f_1 = 0: stays.
    assert off[0, 6, 0, 2, 2] == 1.0


def test_gradcheck_trajectory_conv():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    fwd = (torch.rand(1, 2, 3, 4, 5, generator=g, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    bwd = (torch.rand(1, 2, 3, 4, 5, generator=g, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    weight = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trajectory_conv, (x, fwd, bwd, weight, bias))
    # kt = 5: the flow is itself resampled along the trajectory
    w5 = torch.randn(2, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: trajectory_conv(x, f, None, w5), (fwd,))


def test_trajectory_conv_zero_flow_equals_conv3d(x):
    weight = torch.randn(4, C, 3)
    out = trajectory_conv(x, torch.zeros(B, 2, T, H, W), None, weight)
    ref = F.conv3d(x, weight[..., None, None], padding=(1, 0, 0))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("conv", [nn.Conv3d(C, 4, (3, 1, 1), padding=(1, 0, 0), bias=True),
                                  TemporalConv3d(C)], ids=["conv3d-zeros", "resnet3d-replicate"])
def test_module_from_conv3d_with_zero_flow_equals_it(x, conv):
    traj = TrajectoryConv.from_conv3d(conv)
    assert traj.weight.shape == conv.weight.shape
    zero = torch.zeros(B, 2, T, H, W)
    torch.testing.assert_close(traj(x, zero), conv(x))
    # through set_flow, as inside a network (a callable asked for the size)
    traj.set_flow(lambda size: (torch.zeros(B, 2, T, *size), None))
    torch.testing.assert_close(traj(x), conv(x))
    # module == function
    fwd = constant_flow(0.5, -0.3)
    torch.testing.assert_close(traj(x, fwd), trajectory_conv(x, fwd, None, traj.weight, traj.bias,
                                                             traj.padding))


def test_module_with_offsets(x):
    conv = TemporalConv3d(C)
    traj = TrajectoryConv.from_conv3d(conv, offsets=True)
    assert traj.offset_channels == 4 and traj.weight.shape == (C, C + 4, 3, 1, 1)
    fwd = constant_flow(1.0, 0.0)
    plain = TrajectoryConv.from_conv3d(conv)
    torch.testing.assert_close(traj(x, fwd), plain(x, fwd))     # offset weights start at zero
    with torch.no_grad():
        traj.weight[:, C:] = 1.0
    assert not torch.allclose(traj(x, fwd), plain(x, fwd))


def test_errors(x):
    with pytest.raises(FlowkitError, match="odd"):
        trajectory_sample(x, torch.zeros(B, 2, T, H, W), kernel_t=2)
    with pytest.raises(FlowkitError, match="does not match"):
        trajectory_sample(x, torch.zeros(B, 2, T, H + 1, W))
    with pytest.raises(FlowkitError, match="needs flow"):
        TrajectoryConv(C, C)(x)
    with pytest.raises(FlowkitError, match="temporal conv"):
        TrajectoryConv.from_conv3d(nn.Conv3d(C, C, (3, 3, 3), padding=1))


def test_downsample_flow():
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 0, :2, :2] = torch.tensor([[8.0, 0.0], [0.0, 0.0]])
    flow[:, 1, :2, :2] = torch.tensor([[0.0, -4.0], [0.0, 0.0]])
    avg = downsample_flow(flow, 2, "avg")
    assert avg.shape == (1, 2, 2, 2)
    assert avg[0, :, 0, 0].tolist() == [1.0, -0.5]                  # mean (2, -1) / 2
    mx = downsample_flow(flow, 2, "max")
    assert mx[0, :, 0, 0].tolist() == [4.0, 0.0]                    # largest vector (8, 0) / 2
    assert downsample_flow(torch.ones(1, 2, 3, 5, 7), 2).shape == (1, 2, 3, 3, 4)   # ceil grid


def test_resize_flow_to_pools_by_the_given_stride():
    """The stride is the network's, not the smallest factor giving the grid: 112 px at stride 32
    is a 4 x 4 grid, which stride 28 gives too (and would make the flow 32/28 too large)."""
    net = ResNet3d(18, 3, width=4, layers=(1, 1, 1, 1))
    grids = [tuple(s.shape[-2:]) for s in net.forward_stages(torch.zeros(1, 3, 1, 112, 112))]
    flow = torch.full((1, 2, 2, 112, 112), 32.0)
    for stride, grid in zip((4, 8, 16, 32), grids):
        out = resize_flow_to(flow, grid, stride=stride)
        assert out.shape[-2:] == grid and torch.all(out == 32.0 / stride)
        assert torch.equal(out, downsample_flow(flow, stride))
    assert torch.all(resize_flow_to(torch.full((1, 2, 1, 20, 20), 8.0), (3, 3), stride=8) == 1.0)
    with pytest.raises(FlowkitError, match="stride 8 gives"):
        resize_flow_to(flow, (4, 4), stride=8)       # a stride that does not give the grid


def test_backbone_output_strides_follow_its_structure():
    basic = ResNet3d(18, 3, width=4, layers=(1, 2, 1, 1))
    assert basic.output_stride("conv1_t") == 2                # the stem's, before the max-pool
    assert [basic.output_stride(f"layer{i}.0.conv1_t") for i in (1, 2, 3, 4)] == [4, 8, 16, 32]
    assert basic.output_stride("layer2.1.conv2_t") == 8
    bottleneck = ResNet3d(50, 3, width=4, layers=(1, 1, 1, 1))
    assert bottleneck.output_stride("layer2.0.conv1") == 4     # before the block's strided conv2
    assert bottleneck.output_stride("layer2.0.conv2_t") == 8
    assert bottleneck.output_stride("layer2.0.downsample") == 8
    with pytest.raises(FlowkitError, match="no submodule"):
        basic.output_stride("layer9")


@pytest.mark.parametrize("size,block,stride", [((112, 112), "layer4.0.conv1_t", 32),
                                               ((20, 20), None, 8), ((32, 32), None, 8),
                                               ((40, 40), "layer3.0.conv2_t", 16),
                                               ((20, 20), "conv1_t", 2)])
def test_store_flow_reaches_the_trajectory_conv_in_pixels_of_its_stride(monkeypatch, size, block,
                                                                         stride):
    """Uniform 16 px/frame store flow (forward and backward) arrives as 16/stride feature pixels,
    also where a smaller factor gives the same grid (112 at stride 32, 20 at stride 8)."""
    seen = []
    original = trajectory_module.trajectory_conv

    def spy(x, forward_flow, backward_flow, *args, **kw):
        seen.append((tuple(x.shape[-2:]), forward_flow, backward_flow))
        return original(x, forward_flow, backward_flow, *args, **kw)

    monkeypatch.setattr(trajectory_module, "trajectory_conv", spy)
    model = create_model("trajectorynet", num_classes=3, width=4, layers=(1, 1, 1, 1),
                         trajectory_block=block, backward_flow="store").eval()
    h, w = size
    flow = torch.full((1, 2, 2, h, w), 16.0 / 20.0)
    with torch.no_grad():
        model({"rgb": torch.randn(1, 3, 2, h, w), "flow": flow, "flow_backward": -flow,
               "flow_bound": torch.tensor([20.0])})
    (grid, forward, backward), = seen
    assert grid == (-(-h // stride), -(-w // stride))
    torch.testing.assert_close(forward, torch.full_like(forward, 16.0 / stride))
    torch.testing.assert_close(backward, torch.full_like(backward, -16.0 / stride))
    assert model.trajectory_stride == stride


def test_motionnet_scale_is_chosen_by_the_blocks_stride():
    """16 px frames: MotionNet's scales 1/16 and 1/32 are both 1 x 1; a layer4 block (stride 32)
    takes the 1/32 one (pixels of 32 input pixels), not the first of that size."""
    model = create_model("trajectorynet", num_classes=3, width=4, layers=(1, 1, 1, 1),
                         trajectory_block="layer4.0.conv1_t", flow_source="motionnet",
                         motionnet_width=0.04, motionnet_frames=1)
    scales = [torch.full((1, 2, 2, -(-16 // 2 ** (k + 1)), -(-16 // 2 ** (k + 1))), float(k))
              for k in range(5)]
    forward, backward = model._flow_provider((16, 16), scales=scales)((1, 1))
    assert forward.shape == (1, 2, 2, 1, 1) and torch.all(forward == 4.0)
    assert backward is None
    forward, _ = create_model("trajectorynet", num_classes=3, width=4, layers=(1, 1, 1, 1),
                              flow_source="motionnet", motionnet_width=0.04, motionnet_frames=1
                              )._flow_provider((16, 16), scales=scales)((2, 2))
    assert torch.all(forward == 2.0)                       # the default block: scale 1/8


def test_motionnet_flow_without_the_blocks_scale_upsamples_the_finest():
    """No MotionNet scale at the block's stride (8): the finest one (1/2) is upsampled to the frame
    (x2 in pixels) and pooled by the stride (/8)."""
    model = create_model("trajectorynet", num_classes=3, width=4, layers=(1, 1, 1, 1),
                         flow_source="motionnet", motionnet_width=0.04, motionnet_frames=1)
    assert model.trajectory_stride == 8
    scales = [torch.full((1, 2, 2, 16 // 2 ** (k + 1), 16 // 2 ** (k + 1)), 1.0) for k in range(2)]
    forward, backward = model._flow_provider((16, 16), scales=scales)((2, 2))
    assert forward.shape == (1, 2, 2, 2, 2) and backward is None
    torch.testing.assert_close(forward, torch.full_like(forward, 2.0 / 8))


# ---------------------------------------------------------------------------- the networks

NET = dict(num_classes=3, width=4, layers=(1, 2, 1, 1))


def batch(seed=0, flow_scale=0.2):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(2, 3, 4, 32, 32, generator=g),
            "flow": torch.randn(2, 2, 4, 32, 32, generator=g) * flow_scale,
            "flow_bound": torch.full((2,), 20.0), "label": torch.tensor([0, 2])}


@pytest.mark.parametrize("kw", [{}, {"flow_pool": "max", "offsets": True}])
def test_trajectorynet_store_flow_forward_backward(kw):
    model = create_model("trajectorynet", **NET, **kw)
    assert model.inputs == ("rgb", "flow")
    out = model(batch())
    assert out["logits"].shape == (2, 3) and "aux_loss" not in out
    # the batch's flow is dropped after the forward: no stale flow (and its graph) is kept for a
    # later bare backbone call
    with pytest.raises(FlowkitError, match="TrajectoryConv needs flow"):
        model.backbone(batch()["rgb"])
    classification_loss(out, batch()["label"]).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.trajectory.weight.grad.abs().sum() > 0


def test_trajectorynet_motionnet_aux_loss_reaches_motionnet():
    model = create_model("trajectorynet", **NET, flow_source="motionnet", motionnet_width=0.04,
                         motionnet_frames=2)
    assert model.inputs == ("rgb",)
    inputs = {"rgb": batch()["rgb"]}
    out = model(inputs)
    assert out["logits"].shape == (2, 3)
    assert out["aux_loss"].dim() == 0 and torch.isfinite(out["aux_loss"]) and out["aux_loss"] > 0
    classification_loss(out, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in model.motionnet.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_trajectorynet_motionnet_sees_the_clip_in_0_255():
    """MotionNet is trained on [0, 255] frames: the ImageNet-normalised clip is mapped back, so a
    clip of known [0, 1] pixels reaches MotionNet as pixels * 255, frames (B, M+1, 3, H, W)."""
    from flowkit.conventions import IMAGENET_MEAN, IMAGENET_STD
    model = create_model("trajectorynet", **NET, flow_source="motionnet", motionnet_width=0.04,
                         motionnet_frames=2).eval()
    seen = {}
    model.motionnet.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0]))
    pixels = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        model({"rgb": (pixels - mean) / std})
    torch.testing.assert_close(seen["x"], pixels.transpose(1, 2) * 255, atol=1e-3, rtol=0)


def test_trajectorynet_gamma_and_flow_pool_reach_the_model():
    """``gamma`` weights MotionNet's loss (aux_loss is linear in it, same weights and input), and
    ``flow_pool`` is used: a small moving patch pooled by max (its full speed) or avg (diluted over
    the block) gives different logits."""
    inputs = {"rgb": batch()["rgb"][:1, :, :3]}
    kw = dict(NET, flow_source="motionnet", motionnet_width=0.04, motionnet_frames=2)
    one = create_model("trajectorynet", **kw, gamma=0.01).eval()
    three = create_model("trajectorynet", **kw, gamma=0.03).eval()
    three.load_state_dict(one.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(three(inputs)["aux_loss"], 3 * one(inputs)["aux_loss"])

    avg = create_model("trajectorynet", **NET, flow_pool="avg").eval()
    mx = create_model("trajectorynet", **NET, flow_pool="max").eval()
    mx.load_state_dict(avg.state_dict())
    patch = batch(flow_scale=0.0)
    patch["flow"][:, 0, :, 10:13, 10:13] = 0.4           # 8 px / frame in a 3 x 3 patch
    with torch.no_grad():
        assert not torch.allclose(avg(patch)["logits"], mx(patch)["logits"], atol=1e-5)


def test_trajectorynet_motionnet_weights_from_checkpoint(tmp_path):
    from flowkit.flow.motionnet import MotionNet
    net = MotionNet(num_frames=1, width=0.04)
    path = tmp_path / "motionnet.pt"
    torch.save({"config": net.config, "state_dict": net.state_dict()}, path)
    model = create_model("trajectorynet", **NET, flow_source="motionnet",
                         motionnet_weights=str(path))
    assert model.motionnet.num_frames == 1
    torch.testing.assert_close(model.motionnet.predict6.weight, net.predict6.weight)
    assert torch.isfinite(model({"rgb": batch()["rgb"]})["aux_loss"])
    # What the file fixes, as keywords: a run rebuilds the model the weights fit without it.
    without = model.kwargs_without_files()
    assert without["motionnet_weights"] is None
    assert (without["motionnet_frames"], without["motionnet_width"]) == (1, 0.04)
    create_model("trajectorynet", **without).load_state_dict(model.state_dict())
    with pytest.raises(FlowkitError, match="not found"):
        create_model("trajectorynet", **NET, flow_source="motionnet",
                     motionnet_weights=str(tmp_path / "missing.pt"))


def test_s3d_matches_trajectorynet_except_the_swapped_module():
    s3d = create_model("s3d", **NET)
    traj = create_model("trajectorynet", **NET)
    assert s3d.inputs == ("rgb",)
    s3d_params = {n: p.shape for n, p in s3d.state_dict().items()}
    traj_params = {n: p.shape for n, p in traj.state_dict().items()}
    assert s3d_params == traj_params        # the trajectory conv keeps the temporal conv's weight
    swapped = {n for n, m in traj.named_modules()
               if n and type(m) is not type(s3d.get_submodule(n))}
    assert swapped == {"backbone.layer2.1.conv1_t"}
    # an s3d checkpoint loads strictly; with zero flow both compute the same
    traj.load_state_dict(s3d.state_dict())
    s3d.eval(), traj.eval()
    inputs = batch(flow_scale=0.0)
    torch.testing.assert_close(traj(inputs)["logits"], s3d(inputs)["logits"])
    # offsets add the normalisation and widen the weight only
    traj_off = create_model("trajectorynet", **NET, offsets=True)
    extra = set(traj_off.state_dict()) - set(s3d_params)
    assert extra and all(n.startswith("backbone.layer2.1.conv1_t.offset_norm.") for n in extra)


def test_flow_changes_trajectorynet_not_s3d():
    s3d = create_model("s3d", **NET).eval()
    traj = create_model("trajectorynet", **NET).eval()
    a, b = batch(flow_scale=0.0), batch(flow_scale=0.0)
    b["flow"] = torch.full_like(b["flow"], 0.3)      # 6 px / frame: ~0.75 px at the block
    assert torch.equal(s3d(a)["logits"], s3d(b)["logits"])
    assert not torch.allclose(traj(a)["logits"], traj(b)["logits"])


def test_store_flow_is_scaled_by_flow_bound():
    """Store flow is saved divided by its clip's ``flow_bound``: the model must multiply it back, so
    (flow, bound b) and (2 flow, bound b/2) are the same motion, and a different bound alone is a
    different motion (otherwise stores written with another bound would be read wrongly)."""
    model = create_model("trajectorynet", **NET).eval()
    base = batch(flow_scale=0.3)
    half = dict(base, flow=base["flow"] * 2, flow_bound=base["flow_bound"] / 2)
    other = dict(base, flow_bound=base["flow_bound"] / 2)
    with torch.no_grad():
        ref = model(base)["logits"]
        torch.testing.assert_close(model(half)["logits"], ref)
        assert not torch.allclose(model(other)["logits"], ref, atol=1e-5)


def test_trajectory_block_default_and_choice():
    assert create_model("trajectorynet", **NET).trajectory_block == "layer2.1.conv1_t"
    one = create_model("trajectorynet", num_classes=3, width=4, layers=(1, 1, 1, 1))
    assert one.trajectory_block == "layer2.0.conv1_t"
    assert isinstance(one.backbone.layer2[0].conv1_t, TrajectoryConv)
    deep = create_model("trajectorynet", **NET, trajectory_block="layer3.0.conv2_t")
    assert isinstance(deep.backbone.layer3[0].conv2_t, TrajectoryConv)
    assert not isinstance(deep.backbone.layer2[1].conv1_t, TrajectoryConv)
    assert deep(batch())["logits"].shape == (2, 3)      # flow pooled to 1/16


def test_trajectory_block_default_in_a_bottleneck_network():
    """A Bottleneck (depth 50) has only ``conv2_t`` per block: the default block is
    ``layer2.1.conv2_t`` (the paper's res3b), so ``trajectorynet`` builds at depth 50."""
    model = create_model("trajectorynet", num_classes=3, depth=50, width=4, layers=[1, 2, 1, 1])
    assert model.trajectory_block == "layer2.1.conv2_t"
    assert isinstance(model.backbone.layer2[1].conv2_t, TrajectoryConv)


def test_trajectorynet_bad_arguments():
    with pytest.raises(FlowkitError, match="temporal conv"):
        create_model("trajectorynet", **NET, trajectory_block="layer9.0.conv1_t")
    with pytest.raises(FlowkitError, match="flow_source"):
        create_model("trajectorynet", **NET, flow_source="tvl1")
    model = create_model("trajectorynet", **NET)
    with pytest.raises(FlowkitError, match="flow"):
        model({"rgb": batch()["rgb"]})
    bad = batch()
    bad["flow"] = bad["flow"][..., :16]
    with pytest.raises(FlowkitError, match="does not match"):
        model(bad)


def test_s3d_flow_modality():
    model = create_model("s3d", **NET, modality="flow", flow_stack=2)
    assert model.inputs == ("flow",)
    out = model({"flow": torch.randn(2, 4, 4, 32, 32)})
    assert out["logits"].shape == (2, 3)


def test_motionnet_keywords_with_store_flow_are_refused_and_old_runs_still_rebuild(tmp_path):
    """motionnet_weights (gamma, motionnet_width, motionnet_frames) with flow_source='store' were
    accepted, recorded with the run and never read: the run looked MotionNet-initialised and was
    not. They are refused naming flow_source=motionnet; the defaults build as before; and a run
    recorded with them by an older flowkit is rebuilt without them (they never changed its
    model), its recorded keywords kept, its file not needed."""
    from flowkit.models import rebuild_model, rebuild_run_model

    with pytest.raises(FlowkitError, match=r"^model 'trajectorynet': motionnet_weights only "
                                           r"applies with flow_source='motionnet' .*; pass "
                                           r"--model-arg flow_source=motionnet or leave it out$"):
        create_model("trajectorynet", **NET, motionnet_weights=str(tmp_path / "mn.pt"))
    with pytest.raises(FlowkitError, match=r"gamma, motionnet_width only apply with "
                                           r"flow_source='motionnet'"):
        create_model("trajectorynet", **NET, flow_source="store", gamma=0.1, motionnet_width=0.5)
    assert create_model("trajectorynet", **NET).motionnet is None  # the defaults: store flow
    assert create_model("trajectorynet", **NET, gamma=0.01).inputs == ("rgb", "flow")
    create_model("trajectorynet", **NET, flow_source="motionnet", motionnet_width=0.04,
                 motionnet_frames=1, gamma=0.1)
    recorded = {**NET, "layers": list(NET["layers"]),
                "motionnet_weights": str(tmp_path / "gone.pt"), "gamma": 0.1}
    old = rebuild_model("trajectorynet", **recorded)
    assert old.motionnet is None and old.model_kwargs == recorded
    entry = {"name": "trajectorynet", "kwargs": recorded,
             "kwargs_without_files": {**recorded, "motionnet_weights": None}}
    restored = rebuild_run_model(entry, restoring=True)
    restored.load_state_dict(create_model("trajectorynet", **NET).state_dict())
    assert restored.model_kwargs == recorded
