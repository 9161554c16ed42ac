"""Cost volume, soft-argmax displacement, warped difference, features and the "costvolume" engine
(kornia's template: smoke/shape, bad input, gradcheck in float64, module == function; plus recovery
of known motion on a real photograph)."""
import json
from dataclasses import asdict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color, data

import flowkit
from flowkit.bench import synthetic_pairs
from flowkit.errors import EngineError
from flowkit.files import file_sha256
from flowkit.flow import costvolume as cv

SIZE = (64, 80)
BORDER = 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def photo():
    gray = (color.rgb2gray(data.astronaut()) * 255).astype(np.float32)
    return cv2.resize(gray, SIZE[::-1], interpolation=cv2.INTER_AREA)


def _shifted(photo, u, v):
    """Frame 1 is the photo, frame 0 samples it at p + (u, v): the flow is exactly (u, v)."""
    h, w = photo.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    i0 = cv2.remap(photo, xx + u, yy + v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return torch.from_numpy(i0)[None, None], torch.from_numpy(photo)[None, None]


def _errors(disp, u, v):
    inner = disp[0, :, BORDER:-BORDER, BORDER:-BORDER]
    return (inner - torch.tensor([u, v], dtype=disp.dtype).view(2, 1, 1)).norm(dim=0)


# ------------------------------------------------------------------------------- cost volume


@pytest.mark.parametrize("window,stride,dilation", [
    (0, 1, 1), (1, 1, 1), ((1, 2), 1, 1), (3, 2, 1), ((2, 1), 3, 2), (2, 1, 3)])
def test_cost_volume_shape(window, stride, dilation):
    f0, f1 = torch.randn(2, 4, 9, 11), torch.randn(2, 4, 9, 11)
    cost = cv.cost_volume(f0, f1, window, stride, dilation)
    dh, dw = (window, window) if isinstance(window, int) else window
    assert cost.shape == (2, (2 * dh + 1) * (2 * dw + 1), -(-9 // stride), -(-11 // stride))
    assert cost.abs().max() <= 1 + 1e-5


def test_identical_features_peak_at_zero_offset():
    f = torch.randn(2, 8, 10, 12)
    cost = cv.cost_volume(f, f, (2, 3))
    centre = 2 * 7 + 3
    assert (cost.argmax(1) == centre).all()
    torch.testing.assert_close(cost[:, centre], torch.ones(2, 10, 12))
    assert (cv.soft_argmax_displacement(cost, (2, 3), tau=0) == 0).all()


def test_cost_volume_matches_direct_definition():
    """Entry k = (iy, ix) at position (i, j) is cos(f0[stride*(i, j)], f1[stride*(i, j) + d]), 0 outside."""
    f0, f1 = torch.randn(1, 3, 7, 8, dtype=torch.float64), torch.randn(1, 3, 7, 8, dtype=torch.float64)
    stride, dilation, (dh, dw) = 2, 2, (1, 2)
    cost = cv.cost_volume(f0, f1, (dh, dw), stride, dilation)
    a, b = F.normalize(f0, dim=1), F.normalize(f1, dim=1)
    for k, (dx, dy) in enumerate(cv.window_offsets((dh, dw), dilation).long().tolist()):
        for i in range(cost.shape[2]):
            for j in range(cost.shape[3]):
                y, x = stride * i, stride * j
                inside = 0 <= y + dy < 7 and 0 <= x + dx < 8
                want = float((a[0, :, y, x] * b[0, :, y + dy, x + dx]).sum()) if inside else 0.0
                assert cost[0, k, i, j].item() == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------------------ soft-argmax


def test_soft_argmax_units_and_sign():
    """Candidate (iy, ix) = (0, 2) of a (1, 1) window is d = (x +1, y -1); dilation multiplies it."""
    cost = torch.full((1, 9, 2, 3), -1.0)
    cost[:, 2] = 1.0
    for dilation in (1, 3):
        for tau in (0, 0.01):
            disp = cv.soft_argmax_displacement(cost, 1, tau=tau, dilation=dilation)
            torch.testing.assert_close(disp, torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 3)
                                       * dilation, atol=1e-6, rtol=0)


def test_soft_argmax_uniform_cost_gives_zero():
    cost = torch.zeros(1, 25, 3, 3)
    assert cv.soft_argmax_displacement(cost, 2, tau=0.1).abs().max() < 1e-6
    assert (cv.soft_argmax_displacement(cost, 2, tau=0) == 0).all()  # ties go to zero offset


@pytest.mark.parametrize("u,v", [(-3, 1), (2, -1)])
def test_integer_shift_recovered(photo, u, v):
    """Measured (64x80 astronaut, 7x7 patches, window 4, 8-px border excluded): WTA exact on all
    pixels for (-3, 1) and on 99.9 % for (2, -1) (2 ambiguous pixels); soft-argmax with tau 0.005:
    mean error 0.007 / 0.012 px."""
    i0, i1 = _shifted(photo, u, v)
    f0, f1 = cv.patch_features(i0, 3), cv.patch_features(i1, 3)
    wta = _errors(cv.displacement_map(f0, f1, 4, tau=0), u, v)
    assert (wta == 0).float().mean() >= 0.995
    assert wta.median() == 0
    soft = _errors(cv.displacement_map(f0, f1, 4, tau=0.005), u, v)
    assert soft.mean() < 0.05
    assert (soft < 0.2).float().mean() > 0.98


@pytest.mark.parametrize("u,v", [(0.5, -0.5), (1.3, 0.6)])
def test_subpixel_shift_better_soft_than_wta(photo, u, v):
    """Measured mean error (same setup): (0.5, -0.5) WTA 0.80, soft tau 0.05 0.40;
    (1.3, 0.6) WTA 0.60, soft 0.42 px."""
    i0, i1 = _shifted(photo, u, v)
    f0, f1 = cv.patch_features(i0, 3), cv.patch_features(i1, 3)
    wta = _errors(cv.displacement_map(f0, f1, 4, tau=0), u, v).mean()
    soft = _errors(cv.displacement_map(f0, f1, 4, tau=0.05), u, v).mean()
    assert soft < 0.8 * wta


# -------------------------------------------------------------------------------- gradcheck


def test_gradcheck_cost_volume():
    f0 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f1 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cv.cost_volume(a, b, (1, 2), 2, 1), (f0, f1))
    assert torch.autograd.gradcheck(lambda a, b: cv.cost_volume(a, b, 1, 1, 2), (f0, f1))


def test_gradcheck_soft_argmax_and_displacement_map():
    cost = torch.randn(1, 15, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: cv.soft_argmax_displacement(c, (1, 2), 0.5, 2), (cost,))
    f0 = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    f1 = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cv.displacement_map(a, b, 1, tau=0.3), (f0, f1))


def test_gradcheck_warped_difference_and_patch_features():
    x0 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    x1 = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    flow = (0.3 * torch.randn(1, 2, 4, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(cv.warped_difference, (x0, x1, flow))
    img = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: cv.patch_features(x, 1, sigma=0.8), (img,))


# --------------------------------------------------------------------------- module == function


def test_modules_equal_functions():
    f0, f1 = torch.randn(2, 5, 8, 9), torch.randn(2, 5, 8, 9)
    kw = dict(max_displacement=(2, 1), stride=2, dilation=2)
    cost = cv.cost_volume(f0, f1, **kw)
    torch.testing.assert_close(cv.CostVolume(**kw)(f0, f1), cost, rtol=0, atol=0)
    torch.testing.assert_close(cv.SoftArgmaxDisplacement((2, 1), 0.1, 2)(cost),
                               cv.soft_argmax_displacement(cost, (2, 1), 0.1, 2), rtol=0, atol=0)
    torch.testing.assert_close(cv.DisplacementMap(**kw, tau=0.1)(f0, f1),
                               cv.displacement_map(f0, f1, **kw, tau=0.1), rtol=0, atol=0)


# ------------------------------------------------------------------------------------ bad input


def test_bad_input():
    f = torch.randn(1, 3, 8, 8)
    with pytest.raises(EngineError, match="differ in shape"):
        cv.cost_volume(f, torch.randn(1, 3, 8, 9))
    with pytest.raises(EngineError, match="shape"):
        cv.cost_volume(f[0], f[0])
    with pytest.raises(EngineError, match="non-negative"):
        cv.cost_volume(f, f, -1)
    with pytest.raises(EngineError, match="non-negative"):
        cv.CostVolume((1, -2))
    with pytest.raises(EngineError, match="stride"):
        cv.cost_volume(f, f, 1, stride=0)
    with pytest.raises(EngineError, match="dilation"):
        cv.cost_volume(f, f, 1, dilation=0)
    with pytest.raises(EngineError, match="floating"):
        cv.cost_volume(f.long(), f.long())
    with pytest.raises(EngineError, match="candidates"):
        cv.soft_argmax_displacement(torch.randn(1, 10, 4, 4), 1)
    with pytest.raises(EngineError, match="tau"):
        cv.soft_argmax_displacement(torch.randn(1, 9, 4, 4), 1, tau=-0.1)
    with pytest.raises(EngineError, match="does not match"):
        cv.warped_difference(f, f, torch.zeros(1, 2, 8, 7))
    with pytest.raises(EngineError, match="radius"):
        cv.patch_features(f, 0)


# ---------------------------------------------------------------------------- warped difference


def test_warped_difference_sign_and_border():
    x0 = torch.rand(1, 3, 6, 7) * 100
    diff = cv.warped_difference(x0, x0 + 10, torch.zeros(1, 2, 6, 7))
    torch.testing.assert_close(diff, torch.full_like(diff, 10.0))  # later minus earlier
    flow = torch.zeros(1, 2, 6, 7)
    flow[:, 0] = 2.0                                                # source 2 px right
    diff, valid = cv.warped_difference(x0, x0, flow, return_valid=True)
    assert (diff[..., -2:] == 0).all() and not valid[..., -2:].any() and valid[..., :-2].all()


def test_warped_difference_vanishes_under_true_flow():
    """Synthetic pairs from real photos (smooth and affine motion): with the ground truth the
    difference on valid non-occluded pixels is small (measured mean |diff| ~1-2 grey levels, the
    blur of bilinear sampling), with zero flow it is several times larger."""
    for pair in synthetic_pairs(2, size=(48, 64), kinds=("smooth", "affine")):
        x0 = torch.from_numpy(pair.frame0).permute(2, 0, 1)[None].float()
        x1 = torch.from_numpy(pair.frame1).permute(2, 0, 1)[None].float()
        mask = torch.from_numpy(pair.valid & ~pair.occluded)
        true = cv.warped_difference(x0, x1, torch.from_numpy(pair.flow)[None])[0].abs().mean(0)[mask]
        zero = cv.warped_difference(x0, x1, torch.zeros(1, 2, 48, 64))[0].abs().mean(0)[mask]
        assert true.mean() < 3.0, pair.name
        assert zero.mean() > 2.5 * true.mean(), pair.name


# ------------------------------------------------------------------------------------- features


def test_patch_features_are_normalised_ncc():
    frames = torch.randint(0, 256, (2, 3, 10, 12), dtype=torch.uint8)
    feats = cv.patch_features(frames, 2)
    assert feats.shape == (2, 25, 10, 12) and feats.dtype == torch.float32
    norms = feats.norm(dim=1)
    assert torch.allclose(norms[norms > 0.5], torch.ones(()), atol=1e-5)
    # gain and offset invariant (NCC)
    torch.testing.assert_close(cv.patch_features(frames.float() * 0.5 + 20, 2), feats, atol=1e-5, rtol=0)
    assert cv.patch_features(frames, 1, gray=False).shape == (2, 27, 10, 12)


# ------------------------------------------------------------------------------- engine


def test_engine_registered_and_output_shape():
    assert "costvolume" in flowkit.list_engines()
    frames0 = torch.randint(0, 256, (2, 3, 37, 45), dtype=torch.uint8)
    frames1 = torch.roll(frames0, 1, dims=-1)
    for kw in ({}, {"scale": 0.5, "stride": 2}, {"tau": 0, "dilation": 2, "max_displacement": [1, 2]}):
        engine = flowkit.create_engine("costvolume", **kw)
        flow = engine(frames0, frames1)
        assert flow.shape == (2, 2, 37, 45) and flow.dtype == torch.float32
        assert torch.isfinite(flow).all()
    json.dumps(engine.describe())
    assert engine.describe()["engine"] == "costvolume"


@pytest.mark.parametrize("scale,stride", [(1.0, 1), (0.5, 1), (1.0, 2)])
def test_engine_recovers_translation_in_input_pixels(photo, scale, stride):
    """Units through the reduced resolution and strided positions: a (-2, 2) shift comes back in
    input pixels (median over the interior; WTA at scale 0.5 sees a 1-feature-pixel shift)."""
    i0, i1 = _shifted(photo, -2.0, 2.0)
    flow = flowkit.create_engine("costvolume", max_displacement=4, scale=scale, stride=stride,
                                 tau=0)(i0, i1)
    inner = flow[0, :, BORDER:-BORDER, BORDER:-BORDER].reshape(2, -1)
    torch.testing.assert_close(inner.median(dim=1).values, torch.tensor([-2.0, 2.0]))


def test_engine_scales_each_axis_by_its_own_ratio():
    """At scale 0.25 a 90x128 frame is computed at 22x32 (rounded): the two axes are reduced by
    unequal ratios (90/22 vs 128/32), and each flow component is scaled back by its own axis's
    ratio. An 8 px x-translation comes back as 8, not 8.18 (the y ratio)."""
    gray = (color.rgb2gray(data.astronaut()) * 255).astype(np.float32)
    photo = cv2.resize(gray, (128, 90), interpolation=cv2.INTER_AREA)
    flow = flowkit.create_engine("costvolume", scale=0.25, max_displacement=4)(*_shifted(photo, 8.0, 0.0))
    inner = flow[0, :, BORDER:-BORDER, BORDER:-BORDER].reshape(2, -1)
    torch.testing.assert_close(inner.median(dim=1).values, torch.tensor([8.0, 0.0]),
                               atol=0.05, rtol=0)


def test_engine_bad_params():
    with pytest.raises(EngineError, match="scale"):
        flowkit.create_engine("costvolume", scale=0)
    with pytest.raises(EngineError, match="tau"):
        flowkit.create_engine("costvolume", tau=-1)
    with pytest.raises(EngineError, match="features"):
        flowkit.create_engine("costvolume", features="sift")
    with pytest.raises(EngineError, match="needs a checkpoint"):
        flowkit.create_engine("costvolume", features="learned")


def test_engine_channel_error_shows_the_frames_shape():
    """Frames of 2 channels are refused with the shape the user passed, as tvl1 says it (the
    engine joins the two batches before reading channels: it said (2, 2, 67, 91) for one pair)."""
    frames = torch.zeros(1, 2, 67, 91)
    expected = r"1 or 3 channels, got shape \(1, 2, 67, 91\)$"
    for name in ("costvolume", "tvl1"):
        with pytest.raises(EngineError, match=expected):
            flowkit.create_engine(name)(frames, frames)


# --------------------------------------------------------------------------- learned features


def _bn(state, name, c, gen):
    state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=gen)
    state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
    state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
    state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=gen)
    state[f"{name}.num_batches_tracked"] = torch.tensor(7)


def _tiny_resnet_state(c=8):
    """A torchvision-ResNet-named state dict: conv1 7x7/2, bn1, layer1 (two BasicBlocks), layer2
    (one BasicBlock, stride 2, with downsample)."""
    gen = torch.Generator().manual_seed(0)
    s = {"conv1.weight": 0.1 * torch.randn(c, 3, 7, 7, generator=gen)}
    _bn(s, "bn1", c, gen)
    for prefix, cin, cout, down in (("layer1.0", c, c, False), ("layer1.1", c, c, False),
                                    ("layer2.0", c, 2 * c, True)):
        s[f"{prefix}.conv1.weight"] = 0.1 * torch.randn(cout, cin, 3, 3, generator=gen)
        _bn(s, f"{prefix}.bn1", cout, gen)
        s[f"{prefix}.conv2.weight"] = 0.1 * torch.randn(cout, cout, 3, 3, generator=gen)
        _bn(s, f"{prefix}.bn2", cout, gen)
        if down:
            s[f"{prefix}.downsample.0.weight"] = 0.1 * torch.randn(cout, cin, 1, 1, generator=gen)
            _bn(s, f"{prefix}.downsample.1", cout, gen)
    s["fc.weight"] = torch.randn(10, 2 * c, generator=gen)  # the classifier is ignored
    return s


def _reference_layer1(s, frames):
    """conv1 -> bn1 -> relu -> maxpool -> layer1 written out with torch.nn.functional."""
    bn = lambda x, n: F.batch_norm(x, s[f"{n}.running_mean"], s[f"{n}.running_var"], s[f"{n}.weight"],
                                   s[f"{n}.bias"], False, 0.0, 1e-5)
    mean = torch.tensor(cv.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cv.IMAGENET_STD).view(1, 3, 1, 1)
    x = (frames.float() / 255 - mean) / std
    x = F.max_pool2d(F.relu(bn(F.conv2d(x, s["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for b in ("layer1.0", "layer1.1"):
        y = F.relu(bn(F.conv2d(x, s[f"{b}.conv1.weight"], padding=1), f"{b}.bn1"))
        x = F.relu(bn(F.conv2d(y, s[f"{b}.conv2.weight"], padding=1), f"{b}.bn2") + x)
    return x


def test_feature_extractor_loads_resnet_state_dict(tmp_path):
    state = _tiny_resnet_state()
    path = tmp_path / "tiny_resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    frames = torch.randint(0, 256, (2, 3, 30, 42), dtype=torch.uint8)
    ext = cv.FeatureExtractor(path, "layer1")
    assert ext.stride == 4 and not ext.training
    with torch.no_grad():
        feats = ext(frames)
        torch.testing.assert_close(feats, _reference_layer1(state, frames), atol=1e-5, rtol=1e-5)
        assert ext(frames[:, :1]).shape == feats.shape  # gray frames are repeated to 3 channels
        deep = cv.FeatureExtractor(path, "layer2")
        assert deep.stride == 8 and deep(frames).shape == (2, 16, 4, 6)
        assert cv.FeatureExtractor(state, "relu").stride == 2

    engine = flowkit.create_engine("costvolume", features="learned", weights=str(path),
                                   max_displacement=2)
    flow = engine(frames, frames)
    assert flow.shape == (2, 2, 30, 42) and torch.isfinite(flow).all()
    assert engine.params["weights"] == str(path)
    # --weights alone (the extract CLI's way) selects learned features
    assert flowkit.create_engine("costvolume", weights=str(path)).params["features"] == "learned"
    with pytest.raises(EngineError, match="only used with features='learned'"):
        flowkit.create_engine("costvolume", features="patch", weights=str(path))


def test_learned_features_give_flow_in_input_pixels(photo, tmp_path):
    """Learned features sit on the extractor's strided grid (conv1 7x7/2: every 2nd pixel), so
    their offsets are scaled back to input pixels: a (4, -2) px shift comes back as (4, -2), not
    as (2, -1) feature pixels. WTA (tau=0): the untrained tiny features give a flat cost volume
    that a soft-argmax pulls towards zero."""
    path = tmp_path / "tiny_resnet.pth"
    torch.save(_tiny_resnet_state(), path)
    engine = flowkit.create_engine("costvolume", weights=str(path), layer="relu",
                                   max_displacement=3, tau=0)
    assert engine.extractor.stride == 2
    flow = engine(*_shifted(photo, 4.0, -2.0))
    inner = flow[0, :, BORDER:-BORDER, BORDER:-BORDER].reshape(2, -1)
    torch.testing.assert_close(inner.median(dim=1).values, torch.tensor([4.0, -2.0]))


def test_parameters_of_the_other_feature_mode_are_refused(tmp_path):
    """layer is checked and belongs to learned features, radius and sigma to patch features: a
    value for the other mode would change nothing but the recorded params (and so make a store
    refuse a run computing the same flow). Defaults, given or not, record what they always did."""
    path = tmp_path / "tiny_resnet.pth"
    torch.save(_tiny_resnet_state(), path)
    for kw in ({"layer": "bogus"}, {"layer": "bogus", "weights": str(path)}):
        with pytest.raises(EngineError, match="unknown feature layer 'bogus'"):
            flowkit.create_engine("costvolume", **kw)
    with pytest.raises(EngineError, match="layer is only used with features='learned'"):
        flowkit.create_engine("costvolume", layer="layer2")
    with pytest.raises(EngineError, match="radius is only used with features='patch'"):
        flowkit.create_engine("costvolume", weights=str(path), radius=5)
    with pytest.raises(EngineError, match="radius and sigma are only used with features='patch'"):
        flowkit.create_engine("costvolume", features="learned", weights=str(path), radius=2,
                              sigma=1.0)
    with pytest.raises(EngineError, match="only used with features='learned'"):  # CLI's check
        flowkit.flow.check_engine_params("costvolume", {"layer": "layer3"})
    patch = flowkit.create_engine("costvolume").params
    assert patch == {"max_displacement": [4, 4], "stride": 1, "dilation": 1, "tau": 0.02,
                     "features": "patch", "radius": 3, "sigma": 0.0, "scale": 1.0,
                     "weights": None, "layer": "layer1", "weights_sha256": None}
    assert flowkit.create_engine("costvolume", layer="layer1").params == patch
    assert flowkit.create_engine("costvolume", radius=2, sigma=0.5).params == dict(
        patch, radius=2, sigma=0.5)
    learned = flowkit.create_engine("costvolume", weights=str(path), max_displacement=2).params
    assert learned == dict(patch, max_displacement=[2, 2], features="learned", weights=str(path),
                           weights_sha256=file_sha256(path, 12))
    assert flowkit.create_engine("costvolume", weights=str(path), max_displacement=2, radius=3,
                                 sigma=0).params == learned
    assert flowkit.create_engine("costvolume", weights=str(path), max_displacement=2,
                                 layer="layer2").params == dict(learned, layer="layer2")


def test_weights_are_recorded_by_absolute_path_and_content(tmp_path, monkeypatch):
    """The path as given used to be all a store saw: a replaced file (other flow) recorded the
    same, one file named relative or absolute recorded differently."""
    monkeypatch.chdir(tmp_path)
    torch.save(_tiny_resnet_state(), "w.pth")
    relative = flowkit.create_engine("costvolume", weights="w.pth", max_displacement=2)
    absolute = flowkit.create_engine("costvolume", weights=str(tmp_path / "w.pth"),
                                     max_displacement=2)
    assert relative.describe() == absolute.describe()
    assert relative.params["weights"] == str(tmp_path / "w.pth")
    assert relative.params["weights_sha256"] == file_sha256("w.pth", 12)
    torch.save(_tiny_resnet_state(c=4), "w.pth")  # other weights under the same name
    replaced = flowkit.create_engine("costvolume", weights="w.pth", max_displacement=2)
    assert replaced.params["weights_sha256"] != relative.params["weights_sha256"]


def _extract(videos, store, weights, *extra):
    from conftest import run_cli

    return run_cli("extract", videos, "-o", store, "--method", "costvolume", "--weights", weights,
                   "--param", "max_displacement=2", "--no-rgb", "--workers", "1", *extra)


def test_store_tells_weights_by_content(sample_videos, tmp_path, monkeypatch):
    """One store, one feature extractor: a replaced weights file is refused (it used to add videos
    silently), the same weights under another name or from another directory resume."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    torch.save(_tiny_resnet_state(), "w.pth")
    first = _extract(sample_videos, store, "w.pth", "--max-frames", "3")
    assert first.returncode == 0, first.stderr
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "copy.pth").write_bytes((tmp_path / "w.pth").read_bytes())
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = _extract(sample_videos, store, "copy.pth", "--max-frames", "3", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == 4, again.stderr
    monkeypatch.chdir(tmp_path)
    torch.save(_tiny_resnet_state(c=4), "w.pth")
    replaced = _extract(sample_videos, store, "w.pth", "--max-frames", "3")
    assert replaced.returncode != 0
    assert f"a file whose weights_sha256 is {file_sha256('elsewhere/copy.pth', 12)}" in \
        replaced.stderr and "Nothing was computed" in replaced.stderr, replaced.stderr


def test_store_written_before_weights_digests_is_refused_clearly(sample_videos, tmp_path,
                                                                  monkeypatch):
    """Records of an older flowkit name the weights by the path as given and keep no digest:
    which weights made them cannot be checked. A rerun is refused naming the ways out (not
    `--weights w.pth`, the option it already has), and --redo-mismatched recomputes them."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    torch.save(_tiny_resnet_state(), "w.pth")
    legacy = lambda engine: dict(asdict(engine.config), weights="w.pth")  # the old record
    with monkeypatch.context() as m:
        m.setattr(cv.CostVolumeEngine, "params", property(legacy))
        assert _extract(sample_videos, store, "w.pth", "--max-frames", "3").returncode == 0
    refused = _extract(sample_videos, store, "w.pth", "--max-frames", "3")
    assert refused.returncode != 0
    message = refused.stderr
    assert "recorded by path alone" in message and "--redo-mismatched" in message, message
    assert "--weights" not in message and "Rerun with" not in message, message
    redo = _extract(sample_videos, store, "w.pth", "--max-frames", "3", "--redo-mismatched",
                    "--json")
    assert redo.returncode == 0 and json.loads(redo.stdout)["done"] == 4, redo.stderr
    resumed = _extract(sample_videos, store, "w.pth", "--max-frames", "3", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["skipped"] == 4, resumed.stderr


def test_learned_features_bad_checkpoints(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        flowkit.create_engine("costvolume", features="learned", weights=str(tmp_path / "nope.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="cannot read"):
        cv.FeatureExtractor(garbage)
    state = _tiny_resnet_state()
    no_conv1 = tmp_path / "no_conv1.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("conv1")}, no_conv1)
    with pytest.raises(EngineError, match="conv1.weight"):
        cv.FeatureExtractor(no_conv1)
    no_layer1 = tmp_path / "no_layer1.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer1")}, no_layer1)
    with pytest.raises(EngineError, match="layer1"):
        cv.FeatureExtractor(no_layer1, "layer1")
    misshapen = dict(state, **{"bn1.running_var": torch.ones(5)})
    with pytest.raises(EngineError, match="does not fit|size mismatch"):
        cv.FeatureExtractor(misshapen, "bn1")
    with pytest.raises(EngineError, match="unknown feature layer"):
        cv.FeatureExtractor(state, "layer9")
