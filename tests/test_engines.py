"""Every registered engine keeps the engine contract (one parametrised walk over the registry, as
timm's tests do for models), and several engines write side by side into one store."""
import warnings

import numpy as np
import pytest
import torch

import flowkit
from flowkit.extract import ExtractConfig, extract
from flowkit.labels import scan_videos
from flowkit.store import FlowStore

CHEAP = {"tvl1": dict(nscales=2, warps=1, outer_iterations=1, inner_iterations=5),
         "tvnet": dict(scales=1, warps=1, iterations=5),
         "costvolume": dict(max_displacement=2)}
NEEDS_WEIGHTS = {"motionnet"}


def test_registry_names_the_four_engines():
    assert {"tvl1", "tvnet", "motionnet", "costvolume"} <= set(flowkit.list_engines())


@pytest.mark.parametrize("name", sorted(set(flowkit.list_engines()) - NEEDS_WEIGHTS))
def test_engine_contract(name):
    engine = flowkit.create_engine(name, **CHEAP.get(name, {}))
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(3, 3, 40, 48, generator=g) * 255).to(torch.uint8)
    flow = engine(frames[:2], frames[1:])
    assert flow.shape == (2, 2, 40, 48) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
    described = engine.describe()
    assert described["engine"] == name and described["version"]
    import json
    json.dumps(described)  # recorded in the store: must be JSON-serialisable
    with pytest.raises(flowkit.EngineError):
        engine(frames[:2], frames[1:, :, :20])


@pytest.mark.parametrize("name", sorted(set(flowkit.list_engines()) - NEEDS_WEIGHTS))
def test_channels_last_frames_are_refused_with_the_permute(name):
    """Frames as load_frames returns them, (T, H, W, 3), took H for the channels: "got 40"
    said neither the shape nor the fix. (The cost volume checks both frames stacked: B 2.)"""
    engine = flowkit.create_engine(name, **CHEAP.get(name, {}))
    frames = torch.zeros(2, 40, 48, 3, dtype=torch.uint8)
    with pytest.raises(flowkit.EngineError, match=r"got shape \(\d, 40, 48, 3\); they look "
                                                  r"channels-last .*permute\(0, 3, 1, 2\)"):
        engine(frames[:1], frames[1:])
    two = torch.zeros(1, 2, 40, 48, dtype=torch.uint8)  # not channels-last: no permute advice
    with pytest.raises(flowkit.EngineError, match=r"1 or 3 channels, got shape \(\d, 2, 40, 48\)$"):
        engine(two, two)


@pytest.mark.parametrize("name", sorted(NEEDS_WEIGHTS))
def test_engines_needing_weights_refuse_without(name):
    with pytest.raises(flowkit.EngineError, match="weights"):
        engine = flowkit.create_engine(name)
        engine(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """What each engine needing weights is built with: an untrained tiny MotionNet checkpoint."""
    from flowkit.flow.motionnet import MotionNet
    from flowkit.train.motionnet import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("engines") / "motionnet.pt"
    save_checkpoint(path, {"config": {"num_frames": 2, "width": 1 / 16},
                           "state_dict": MotionNet(num_frames=2, width=1 / 16).state_dict(),
                           "epoch": 0, "step": 0, "loss": None})
    return {"motionnet": {"weights": str(path)}}


@pytest.mark.parametrize("name", sorted(flowkit.list_engines()))
def test_an_empty_batch_gives_an_empty_flow(name, weights):
    """Zero pairs give zero flows (0, 2, H, W) float32 on the engine's device, whatever the
    engine: the cost volume failed to unpack its empty volume, MotionNet to concatenate no clip."""
    engine = flowkit.create_engine(name, **CHEAP.get(name, {}), **weights.get(name, {}))
    for dtype in (torch.uint8, torch.float32):
        frames = torch.zeros(0, 3, 40, 48, dtype=dtype)
        flow = engine(frames, frames)
        assert flow.shape == (0, 2, 40, 48) and flow.dtype == torch.float32
        assert flow.device == engine.device


@pytest.mark.parametrize("name", sorted(flowkit.list_engines()))
def test_frames_in_zero_one_with_a_white_pixel_are_refused(name, weights):
    """Float frames in [0, 1] (torchvision's to_tensor of an image) are refused with the
    "multiply by 255" hint, also when the brightest pixel is exactly 1.0, as any image with one
    white pixel gives: they would otherwise run as near-black frames and give near-zero flow."""
    engine = flowkit.create_engine(name, **CHEAP.get(name, {}), **weights.get(name, {}))
    frames = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 0.9
    frames[:, 0, 5, 7] = 1.0
    with pytest.raises(flowkit.EngineError, match=r"\[0, 1\].*multiply by 255"):
        engine(frames[:1], frames[1:])


def test_dark_float_frames_get_the_uint8_fix_beside_the_times_255_one():
    """Float [0, 255] frames no brighter than 1 (a fade from black) read as [0, 1] frames; the
    error cannot tell them apart, so it names both fixes: "multiply by 255" alone would have
    turned them into bright frames. As uint8 they run."""
    engine = flowkit.create_engine("tvl1", **CHEAP["tvl1"])
    dark = torch.zeros(2, 3, 32, 32)
    dark[..., 8:24, 8:24] = 1.0
    dark[1] = dark[1].roll(2, -1)
    with pytest.raises(flowkit.EngineError, match=r"if these are \[0, 1\] frames, multiply by 255 "
                                                  r".*dark \[0, 255\] frames, pass them as uint8"):
        engine(dark[:1], dark[1:])
    as_uint8 = dark.to(torch.uint8)
    assert engine(as_uint8[:1], as_uint8[1:]).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int32, torch.float32])
def test_sixteen_bit_frames_are_refused_with_the_scaling_fix(dtype):
    """Frames of 16-bit video ([0, 255] frames x 257) ran silently and gave flow far off (a 2 px
    shift read as -1.27 px): integer or float, they are refused with the scaling that fixes them,
    which then runs. uint16 has no max kernel on CPU: the check must not fail on it."""
    engine = flowkit.create_engine("tvl1", **CHEAP["tvl1"])
    frames = (torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 255).round()
    sixteen = (frames.to(torch.int32) * 257).to(dtype)
    with pytest.raises(flowkit.EngineError, match=r"frames0 has values up to 6\d{4}: .*\[0, 255\]"
                                                  r".*\(frames / 65535 \* 255\)\.round\(\)"):
        engine(sixteen[:1], sixteen[1:])
    scaled = (sixteen / 65535 * 255).round().to(torch.uint8)  # the fix, as the error spells it
    assert torch.equal(scaled, frames.to(torch.uint8))
    assert engine(scaled[:1], scaled[1:]).shape == (1, 2, 24, 32)


def test_integer_frames_within_255_and_a_resampling_overshoot_still_run():
    """The limits refuse high-bit-depth frames only: uint16 / int32 frames with values <= 255
    and float frames that overshoot 255 a little (bicubic resampling of uint8 frames, here a
    peak of 300) run as before, as do uint8 frames."""
    engine = flowkit.create_engine("tvl1", **CHEAP["tvl1"])
    frames = (torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 255).round()
    frames[:, 0, 4, 4] = 255.0
    overshoot = frames.clone()
    overshoot[:, 0, 4, 5] = 300.0
    for ok in (frames.to(torch.uint8), frames.to(torch.int32).to(torch.uint16),
               frames.to(torch.int32), overshoot):
        assert engine(ok[:1], ok[1:]).shape == (1, 2, 24, 32)


@pytest.mark.parametrize("name", sorted(set(flowkit.list_engines()) - NEEDS_WEIGHTS))
def test_frames_that_require_grad_give_flow_without_a_torch_warning(name):
    """Engine calls are inference only (no_grad, documented): frames that require grad give a
    flow without gradient, and no warning from inside flowkit (the [0, 1] check converted a
    tensor that requires grad to a number, which torch warns about)."""
    engine = flowkit.create_engine(name, **CHEAP.get(name, {}))
    frames = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 255
    frames.requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow = engine(frames[:1], frames[1:])
    assert flow.shape == (1, 2, 24, 32) and not flow.requires_grad
    assert "Inference only" in type(engine).__call__.__doc__


@pytest.mark.parametrize("name", sorted(flowkit.list_engines()))
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps", "meta"])
def test_engines_refuse_a_device_they_cannot_run_on_when_created(name, device):
    """An unknown device is one EngineError line, not torch's RuntimeError listing twenty device
    types; a device type other than cpu or cuda (mps, meta) is refused at once, not at the first
    batch of a run."""
    with pytest.raises(flowkit.EngineError, match=f"device '{device}'.*cpu, cuda or cuda:N"):
        flowkit.create_engine(name, device=device, **CHEAP.get(name, {}))


def test_cuda_where_there_is_none_names_the_fix_in_python_too(monkeypatch):
    """create_engine is a library call: the fix is spelled for Python, not only as a CLI flag."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(flowkit.EngineError, match=r"CUDA is not available .*; use --device cpu "
                                                  r"\(device=\"cpu\" in Python\)$"):
        flowkit.create_engine("tvl1", device="cuda")


def test_engines_write_side_by_side(sample_videos, tmp_path):
    items, classes = scan_videos(sample_videos)
    store_path = tmp_path / "store"
    first = extract(items, store_path, ExtractConfig(method="tvl1", engine_params=CHEAP["tvl1"]),
                    classes=classes)
    assert first.count("done") == len(items)
    store = FlowStore(store_path)
    key = store.keys()[0]
    tvl1_before, rgb_before = store.read_flow(key, "tvl1"), store.read_rgb(key)
    store.close()

    second = extract(items, store_path, ExtractConfig(method="costvolume", rgb=True,
                                                      engine_params=CHEAP["costvolume"]),
                     classes=classes)
    assert second.count("done") == len(items)  # not skipped: this engine's flow was missing
    store = FlowStore(store_path)
    assert store.flow_names(key) == ["costvolume", "tvl1"]
    np.testing.assert_array_equal(store.read_flow(key, "tvl1"), tvl1_before)
    np.testing.assert_array_equal(store.read_rgb(key), rgb_before)
    assert store.read_flow(key, "costvolume").shape == tvl1_before.shape
    assert store.meta(key)["flows"]["costvolume"]["engine"] == "costvolume"
    assert store.validate() == []
    store.close()

    again = extract(items, store_path, ExtractConfig(method="costvolume",
                                                     engine_params=CHEAP["costvolume"]),
                    classes=classes)
    assert again.count("skipped") == len(items)
