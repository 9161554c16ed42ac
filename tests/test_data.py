"""flowkit.data: clip samplers, flow alignment, transforms, datasets with DataLoader workers and
splits."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import TINY_SIZE, TINY_SPEED, tiny_video, write_tiny_store
from flowkit.data import (IMAGENET_MEAN, IMAGENET_STD, CenterCrop, ClipDataset, MultiScaleCrop,
                          RandomClipSampler, SegmentClipsSampler, SegmentSampler, ThreeCrop,
                          UniformClipSampler, clip_at, flow_indices, hflip, labelled_keys, labels,
                          num_classes, resized_crop, split_from_list, stratified_split,
                          test_transform, train_transform, video_group)
from flowkit.errors import FlowkitError
from flowkit.labels import scan_videos
from flowkit.store import FlowStore

CODED_SIZE = (8, 12)  # (H, W)


def identity(sample, rng):
    """A transform that leaves rgb at 0..255 and flow in pixels, to check raw values."""
    return sample


def write_coded_store(path, lengths=None, flow_codec="float16", backward=False):
    """Videos whose frame t is filled with the value t and whose flow t is (u, v) = (t, -t); with
    ``backward``, backward pair t (frame t+1 -> t) is (u, v) = (-(t + 0.5), t + 0.5)."""
    lengths = lengths or {"a/long": 12, "b/short": 3}
    classes = sorted({key.split("/")[0] for key in lengths})
    h, w = CODED_SIZE
    with FlowStore(path, mode="a", classes=classes) as store:
        for key, frames in lengths.items():
            name = key.split("/")[0]
            t = np.arange(frames, dtype=np.float32)[:, None, None]
            rgb = np.broadcast_to(t[..., None], (frames, h, w, 3)).astype(np.uint8)
            flow = np.stack([np.broadcast_to(t[:-1], (frames - 1, h, w)),
                             np.broadcast_to(-t[:-1], (frames - 1, h, w))], axis=1)
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=classes.index(name),
                              label_name=name, flow_codec=flow_codec, rgb_codec="raw") as writer:
                writer.append_rgb(rgb)
                writer.append_flow("tvl1", flow, engine={"engine": "coded", "version": "1",
                                                         "params": {}})
                if backward:
                    writer.append_flow("tvl1_backward", -flow - np.float32(0.5) * np.array(
                        [1, -1], np.float32)[:, None, None], engine={"engine": "coded",
                                                                     "version": "1", "params": {},
                                                                     "direction": "backward"})
    return path


@pytest.fixture(scope="module")
def coded_store(tmp_path_factory):
    return write_coded_store(tmp_path_factory.mktemp("coded") / "store")


def raw_sample(store, key, frames=4, step=2, inputs=("rgb", "flow")):
    """One un-normalised sample ``{"rgb" (3, T, H, W), "flow" (2, T, H, W), ...}`` of ``key``."""
    ds = ClipDataset(store, [key], inputs=inputs, sampler=UniformClipSampler(1, frames, step),
                     transform=identity)
    item = ds[0]
    return {"rgb": item["rgb"], "flow": item["flow"], "flow_bound": float(item["flow_bound"])}, ds


def rgb_from_store(store, key, frames):
    """Store frames as the dataset lays them out: float ``(3, T, H, W)``."""
    return torch.from_numpy(FlowStore(store).read_rgb(key, frames)).permute(3, 0, 1, 2).float()


# ----------------------------------------------------------------------------- samplers

def test_random_clip_sampler_range_step_and_determinism():
    sampler = RandomClipSampler(frames=4, step=2)
    starts = set()
    for seed in range(400):
        (clip,) = sampler(20, np.random.default_rng(seed))
        assert clip.dtype == np.int64 and clip.shape == (4,)
        assert (np.diff(clip) == 2).all() and clip.min() >= 0 and clip.max() <= 19
        starts.add(int(clip[0]))
    assert starts == set(range(14))  # span 7: every start 0..13 occurs
    a = sampler(20, np.random.default_rng(7))[0]
    assert np.array_equal(a, sampler(20, np.random.default_rng(7))[0])


def test_samplers_clamp_short_videos():
    assert RandomClipSampler(5, step=2)(4, np.random.default_rng(0))[0].tolist() == [0, 2, 3, 3, 3]
    assert [c.tolist() for c in UniformClipSampler(2, frames=4)(2)] == [[0, 1, 1, 1]] * 2
    (clip,) = SegmentSampler(4)(2, np.random.default_rng(0))
    assert len(clip) == 4 and clip.min() >= 0 and clip.max() <= 1 and (np.diff(clip) >= 0).all()
    assert RandomClipSampler(3)(1, np.random.default_rng(0))[0].tolist() == [0, 0, 0]


def test_segment_sampler_tsn():
    sampler = SegmentSampler(segments=4)
    for seed in range(50):
        (clip,) = sampler(20, np.random.default_rng(seed))
        assert clip.shape == (4,)
        assert all(5 * k <= i <= 5 * k + 4 for k, i in enumerate(clip))  # one per segment
    assert SegmentSampler(4, random=False)(20, None)[0].tolist() == [2, 7, 12, 17]
    (clip,) = SegmentSampler(3, frames=2, step=2)(30, np.random.default_rng(0))
    assert clip.shape == (6,) and (clip[1::2] - clip[::2] == 2).all()
    assert sampler.clips == 1 and SegmentSampler(3, frames=2).clip_length == 6


def test_uniform_clip_sampler_evenly_spaced_and_deterministic():
    sampler = UniformClipSampler(clips=3, frames=4)
    clips = sampler(16, np.random.default_rng(0))
    assert [c[0] for c in clips] == [2, 6, 10] and all(len(c) == 4 for c in clips)
    again = sampler(16, np.random.default_rng(1))
    assert [c.tolist() for c in again] == [c.tolist() for c in clips]
    assert UniformClipSampler(1, frames=4)(16)[0].tolist() == [6, 7, 8, 9]  # the centre clip
    with pytest.raises(FlowkitError, match="clips must be a positive integer"):
        UniformClipSampler(0, frames=4)
    with pytest.raises(FlowkitError, match="frames must be a positive integer"):
        RandomClipSampler(frames=0)


def test_samplers_keep_flow_stacks_inside_the_video():
    """With ``flow_stack=L`` every clip position's stack of L flows lies in the T - 1 flows (TSN /
    mmaction2 over the flow images: snippet starts 0 .. (T - 1) - L); ``flow_stack=0`` is the
    plain call, index for index (RGB)."""
    T, L = 31, 5
    starts = set()
    for seed in range(500):
        (clip,) = SegmentSampler(3)(T, np.random.default_rng(seed), flow_stack=L)
        assert all(len(set(row)) == L for row in flow_indices(clip, T, L))  # nothing clamped
        starts.update(clip.tolist())
    assert starts == set(range((T - 1) - L + 1))  # starts 0 .. 25: every one occurs, none beyond
    samplers = [RandomClipSampler(4, step=2), SegmentSampler(3, frames=2, step=2),
                SegmentSampler(3, random=False), UniformClipSampler(3, 4, step=2),
                SegmentClipsSampler(2, 3, frames=2)]
    for sampler in samplers:
        for seed in range(100):
            for clip in sampler(T, np.random.default_rng(seed), flow_stack=L):
                assert clip.min() >= 0 and clip.max() + L - 1 <= T - 2, sampler
            plain = sampler(T, np.random.default_rng(seed))
            none = sampler(T, np.random.default_rng(seed), flow_stack=0)
            assert all(np.array_equal(a, b) for a, b in zip(plain, none, strict=True)), sampler
    assert UniformClipSampler(1, 4, step=2)(12, flow_stack=3)[0].tolist() == [1, 3, 5, 7]
    assert UniformClipSampler(1, 4, step=2)(12)[0].tolist() == [3, 5, 7, 9]
    # A video too short for one clip and its stacks starts at 0 and is clamped: 8 positions need
    # 8 flows, 8 frames have 7.
    (clip,) = UniformClipSampler(1, 8)(8, flow_stack=1)
    assert clip.tolist() == list(range(8)) and flow_indices(clip, 8, 1)[:, 0].tolist() == [
        0, 1, 2, 3, 4, 5, 6, 6]
    assert RandomClipSampler(2)(4, np.random.default_rng(0), flow_stack=5)[0].tolist() == [0, 1]
    with pytest.raises(FlowkitError, match="flow_stack must be an integer >= 0"):
        SegmentSampler(3)(T, np.random.default_rng(0), flow_stack=-1)


def test_flow_indices_clamp_to_last_flow():
    assert flow_indices(np.array([0, 5, 8, 9]), 10, 3).tolist() == [
        [0, 1, 2], [5, 6, 7], [8, 8, 8], [8, 8, 8]]
    with pytest.raises(FlowkitError, match="no flow"):
        flow_indices(np.array([0]), 1, 1)


# ----------------------------------------------------------------------------- alignment

def test_flow_stack_aligned_with_frames(coded_store):
    ds = ClipDataset(coded_store, ["a/long"], inputs=("rgb", "flow"), flow_stack=3,
                     sampler=UniformClipSampler(clips=3, frames=4, step=2), transform=identity)
    item, clips = ds[0], ds.clip_indices(0)
    assert item["rgb"].shape == (3, 3, 4, *CODED_SIZE)
    assert item["flow"].shape == (3, 6, 4, *CODED_SIZE)
    assert clips[-1].tolist() == [2, 4, 6, 8]  # its last stack, flows 8..10, ends at the last flow
    for view, frames in enumerate(clips):
        for t, i in enumerate(frames):
            assert (item["rgb"][view, :, t] == i).all()
            for k in range(3):
                assert i + k <= 12 - 2  # flow i+k, inside the 11 flows: nothing clamped
                assert (item["flow"][view, 2 * k, t] == i + k).all()
                assert (item["flow"][view, 2 * k + 1, t] == -(i + k)).all()
    # RGB alone needs no flow after its frames: the same sampler still reaches the last frame.
    rgb = ClipDataset(coded_store, ["a/long"], sampler=UniformClipSampler(3, 4, 2))
    assert rgb.clip_indices(0)[-1].tolist() == [5, 7, 9, 11]


def test_tsn_flow_stacks_never_repeat_the_last_flow(tmp_path):
    """TSN flow, 3 segments x 5-flow stacks, on a 31-frame video (30 flows): over many epochs
    every stack is flows i .. i+4 of its frame i, none past the last flow (the old sampling
    clamped about half of them to flow 29); a clip starting at frame 0 has backward flow zeros
    there. The RGB-only dataset keeps its clips, index for index."""
    store = write_coded_store(tmp_path / "store", {"a/v": 31, "b/v": 9}, backward=True)
    ds = ClipDataset(store, ["a/v"], inputs=("rgb", "flow", "flow_backward"), flow_stack=5,
                     sampler=SegmentSampler(3), transform=identity, seed=3)
    rgb = ClipDataset(store, ["a/v"], sampler=SegmentSampler(3), transform=identity, seed=3)
    firsts, lasts = set(), set()
    for epoch in range(200):
        ds.set_epoch(epoch)
        rgb.set_epoch(epoch)
        item, (frames,) = ds[0], ds.clip_indices(0)
        firsts.add(int(frames[0]))
        lasts.add(int(frames[-1]))
        for t, i in enumerate(frames.tolist()):
            assert (item["rgb"][:, t] == i).all()
            assert item["flow"][0::2, t, 0, 0].tolist() == list(range(i, i + 5))   # u: flows i..
            assert item["flow"][1::2, t, 0, 0].tolist() == [-j for j in range(i, i + 5)]
            back = [0.0, 0.0] if i == 0 else [-(i - 0.5), i - 0.5]  # pair i - 1, none at frame 0
            assert item["flow_backward"][:, t, 0, 0].tolist() == back
        assert np.array_equal(rgb.clip_indices(0)[0], SegmentSampler(3)(31, rgb.rng(0))[0])
    assert 0 in firsts and max(lasts) == (31 - 1) - 5  # the first and the last possible starts

    # A sampler that takes no flow_stack is called as before; its stacks are clamped.
    def plain(num_frames, rng):
        return [clip_at(num_frames - 2, 2, 1, num_frames)]
    item = ClipDataset(store, ["b/v"], inputs=("flow",), flow_stack=2, sampler=plain,
                       transform=identity)[0]
    assert item["flow"][0::2, :, 0, 0].tolist() == [[7, 7], [7, 7]]  # frames 7, 8: flows 7, 8->7


def test_short_video_clamps_frames_and_flow(coded_store):
    ds = ClipDataset(coded_store, ["b/short"], inputs=("rgb", "flow"), flow_stack=2,
                     sampler=RandomClipSampler(frames=5), transform=identity)
    item = ds[0]
    assert item["rgb"][0, :, 0, 0].tolist() == [0, 1, 2, 2, 2]
    assert item["flow"][0, :, 0, 0].tolist() == [0, 1, 1, 1, 1]  # u of flows i, clamped to 1
    assert item["flow"][2, :, 0, 0].tolist() == [1, 1, 1, 1, 1]  # u of flows i+1


def test_tiny_store_flow_matches_store(tiny_store):
    ds = ClipDataset(tiny_store, ["right/right_1", "down/down_2"], inputs=("rgb", "flow"),
                     sampler=RandomClipSampler(frames=4, step=2))
    store = FlowStore(tiny_store)
    for index, (u, v) in enumerate([(TINY_SPEED, 0), (0, TINY_SPEED)]):
        item = ds[index]
        frames = ds.clip_indices(index)[0]
        assert item["flow_bound"] == 20.0 and item["label"] == [0, 1][index]
        pixels = item["flow"] * item["flow_bound"]
        flows = flow_indices(frames, 10, 1)[:, 0]
        expected = torch.from_numpy(store.read_flow(ds.keys[index], "tvl1", flows))
        assert torch.allclose(pixels, expected.permute(1, 0, 2, 3), atol=1e-6)
        assert torch.allclose(pixels[0], torch.tensor(float(u))) and torch.allclose(
            pixels[1], torch.tensor(float(v)))


# ----------------------------------------------------------------------------- transforms

def test_flip_mirrors_images_and_negates_u(tiny_store):
    for key, (u, v) in [("right/right_0", (TINY_SPEED, 0)), ("down/down_0", (0, TINY_SPEED))]:
        sample, ds = raw_sample(tiny_store, key)
        frames = ds.clip_indices(0)[0]
        flipped = hflip(sample)
        stored = FlowStore(tiny_store).read_rgb(key, frames)  # (T, H, W, 3)
        mirrored = torch.from_numpy(np.flip(stored, axis=2).copy()).permute(3, 0, 1, 2).float()
        assert torch.equal(flipped["rgb"], mirrored)
        assert (flipped["flow"][0] == -u).all() and (flipped["flow"][1] == v).all()
    # Physically: mirrored 'right' content moves left by 2 px per frame, as the negated u says.
    sample, _ = raw_sample(tiny_store, "right/right_0", frames=2, step=1)
    flipped = hflip(sample)["rgb"]
    assert torch.equal(flipped[:, 1], torch.roll(flipped[:, 0], -TINY_SPEED, dims=-1))


def test_crop_resize_scales_flow_per_axis():
    sample = {"rgb": torch.rand(3, 2, 24, 32) * 255, "flow": torch.ones(4, 2, 24, 32),
              "flow_bound": 20.0}
    out = resized_crop(sample, (2, 3, 12, 16), (24, 24))  # height x2, width x1.5
    assert out["rgb"].shape == (3, 2, 24, 24) and out["flow"].shape == (4, 2, 24, 24)
    assert torch.allclose(out["flow"][0::2], torch.tensor(1.5))  # u of both stacked flows
    assert torch.allclose(out["flow"][1::2], torch.tensor(2.0))  # v


def test_multiscale_crop_half_scale_doubles_flow(tiny_store):
    sample, _ = raw_sample(tiny_store, "right/right_2", frames=2, step=1)
    out = MultiScaleCrop(24, scales=(0.5,))(sample, np.random.default_rng(3))
    assert out["rgb"].shape == (3, 2, 24, 24)
    assert torch.allclose(out["flow"][0], torch.tensor(2.0 * TINY_SPEED))
    assert torch.allclose(out["flow"][1], torch.tensor(0.0))
    # The upscaled content indeed moves 4 px per frame (away from the interpolation borders).
    rgb = out["rgb"]
    assert torch.allclose(rgb[:, 1, :, 6:18], rgb[:, 0, :, 2:14], atol=1e-3)


def test_multiscale_crop_without_resize_is_a_window(tiny_store):
    sample, _ = raw_sample(tiny_store, "left/left_1", frames=2, step=1)
    lefts = set()
    for seed in range(20):
        out = MultiScaleCrop(24, scales=(1.0,))(sample, np.random.default_rng(seed))
        left = next(x for x in range(9) if torch.equal(out["rgb"], sample["rgb"][..., x:x + 24]))
        lefts.add(left)
        assert torch.equal(out["flow"], sample["flow"][..., left:left + 24])
    assert len(lefts) > 1  # the position is random


def index_image(h, w):
    """rgb ``(3, 1, h, w)`` whose pixel (y, x) holds ``w * y + x``: a crop's first pixel says
    where its box starts."""
    return {"rgb": torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).repeat(3, 1, 1, 1)}


def test_evaluation_crops_sit_at_the_centre_and_the_ends():
    """CenterCrop takes the centred square, ThreeCrop the squares at the start, middle and end of
    the long side: evaluation scores the parts of the frame the protocol names, not a corner."""
    wide = index_image(8, 16)
    centre = CenterCrop(4, scale=0.5)(wide)["rgb"]  # side 4 of 8 x 16: rows 2..5, columns 6..9
    assert torch.equal(centre, wide["rgb"][..., 2:6, 6:10])
    views = ThreeCrop(8)(wide, None)["rgb"]  # (3, C, T, 8, 8)
    for view, left in zip(views, (0, 4, 8)):
        assert torch.equal(view, wide["rgb"][..., :, left:left + 8])
    tall = index_image(16, 8)
    views = ThreeCrop(8)(tall, None)["rgb"]
    for view, top in zip(views, (0, 4, 8)):
        assert torch.equal(view, tall["rgb"][..., top:top + 8, :])


def test_multiscale_crop_reaches_every_offset():
    """Over many draws the random square starts at every row and column it fits at, the last
    ones included: training sees the bottom and right edges of the frame too."""
    image = index_image(8, 16)
    crop = MultiScaleCrop(4, scales=(0.5,))  # side 4: top 0..4, left 0..12, no resize
    tops, lefts = set(), set()
    for seed in range(300):
        first = int(crop(image, np.random.default_rng(seed))["rgb"][0, 0, 0, 0])
        tops.add(first // 16)
        lefts.add(first % 16)
    assert tops == set(range(5)) and lefts == set(range(13))


def test_normalisation_float16_store(tiny_store):
    sample, _ = raw_sample(tiny_store, "right/right_3")
    ds = ClipDataset(tiny_store, ["right/right_3"], inputs=("rgb", "flow"),
                     sampler=UniformClipSampler(1, 4, 2))
    item = ds[0]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None, None]
    assert item["rgb"].dtype == torch.float32
    assert torch.allclose(item["rgb"], (sample["rgb"] / 255 - mean) / std, atol=1e-6)
    assert item["flow_bound"] == 20.0
    assert torch.allclose(item["flow"][0], torch.tensor(TINY_SPEED / 20.0))


def test_normalisation_uint8_store_uses_its_bound(tmp_path):
    store = write_tiny_store(tmp_path / "u8", flow_codec="uint8")
    ds = ClipDataset(store, ["right/right_0"], inputs=("flow",), sampler=UniformClipSampler(1, 3))
    item = ds[0]
    flows = flow_indices(ds.clip_indices(0)[0], 10, 1)[:, 0]
    dequantised = torch.from_numpy(FlowStore(store).read_flow("right/right_0", "tvl1", flows))
    assert item["flow_bound"] == 20.0
    assert torch.allclose(item["flow"] * 20.0, dequantised.permute(1, 0, 2, 3), atol=1e-5)
    assert torch.allclose(item["flow"][0] * 20.0, torch.tensor(2.0), atol=20 / 255)

    coded = write_coded_store(tmp_path / "coded_u8", flow_codec="uint8:16")
    ds = ClipDataset(coded, ["a/long"], inputs=("flow",), sampler=UniformClipSampler(1, 4))
    item = ds[0]
    assert item["flow_bound"] == 16.0
    expected = torch.tensor(ds.clip_indices(0)[0], dtype=torch.float32) / 16.0
    assert torch.allclose(item["flow"][0, :, 0, 0], expected, atol=1 / 255)


def test_a_given_flow_bound_replaces_the_stores(tmp_path):
    """A trained run's bound (``flow_bound=``) divides the flow whatever the store's codec: the
    same videos stored as uint8:5 give a run trained on float flow (bound 20) the flow / 20 it
    was trained on, not / 5; items carry that bound, so models that need pixels get them back."""
    store = write_tiny_store(tmp_path / "u8", flow_codec="uint8:5")
    kw = dict(inputs=("flow",), sampler=UniformClipSampler(1, 3))
    own = ClipDataset(store, ["right/right_0"], **kw)
    run = ClipDataset(store, ["right/right_0"], flow_bound=20, **kw)
    assert own[0]["flow_bound"] == 5.0 and run[0]["flow_bound"] == 20.0 and run.flow_bound == 20.0
    assert torch.allclose(run[0]["flow"] * 20.0, own[0]["flow"] * 5.0, atol=1e-5)
    assert torch.allclose(run[0]["flow"][0], torch.tensor(TINY_SPEED / 20.0), atol=5 / 255 / 20)
    for bad in (0, -1.0, float("nan"), "20", True):
        with pytest.raises(FlowkitError, match="flow_bound must be a positive number"):
            ClipDataset(store, ["right/right_0"], flow_bound=bad, **kw)


def test_multi_crop_shapes_and_ten_crop_flips(tiny_store):
    sample, _ = raw_sample(tiny_store, "right/right_0", frames=3, step=1)
    three = test_transform(16, crops=3)(sample, None)
    assert three["rgb"].shape == (3, 3, 3, 16, 16) and three["flow"].shape == (3, 2, 3, 16, 16)
    ten = test_transform(16, crops=10)(sample, None)
    assert ten["rgb"].shape == (10, 3, 3, 16, 16) and ten["flow"].shape == (10, 2, 3, 16, 16)
    assert torch.allclose(ten["rgb"][5:], ten["rgb"][:5].flip(-1))
    assert torch.allclose(ten["flow"][5:, 0], -ten["flow"][:5, 0].flip(-1))
    single = test_transform(16)(sample, None)
    assert single["rgb"].shape == (3, 3, 16, 16)
    assert test_transform(16, crops=10).crops == 10 and train_transform(16).crops == 1
    with pytest.raises(FlowkitError, match="1, 3 or 10"):
        test_transform(16, crops=5)


def test_ten_crop_without_flips_keeps_the_five_unmirrored_views(tiny_store):
    """A model trained without flips (a mirror turns `left` into `right`) is tested without
    mirrored views: ten-crop with flip=False is the corners and centre only, its `crops` 5 so a
    dataset counts its views right."""
    sample, _ = raw_sample(tiny_store, "right/right_0", frames=3, step=1)
    ten = test_transform(16, crops=10)(sample, None)
    five = test_transform(16, crops=10, flip=False)
    assert five.crops == 5
    out = five(sample, None)
    assert out["rgb"].shape == (5, 3, 3, 16, 16) and out["flow"].shape == (5, 2, 3, 16, 16)
    assert torch.equal(out["flow"], ten["flow"][:5]) and torch.equal(out["rgb"], ten["rgb"][:5])
    assert (out["flow"][:, 0] > 0).all()  # rightward flow stays rightward in every view
    assert test_transform(16, crops=3, flip=False).crops == 3  # no mirrors there to drop


def test_multi_clip_multi_crop_dataset_is_clip_major(coded_store):
    ds = ClipDataset(coded_store, ["a/long", "b/short"], inputs=("rgb", "flow"),
                     sampler=UniformClipSampler(clips=2, frames=3), transform=test_transform(8, 3))
    assert ds.views and ds.num_views == 6
    item = ds[0]
    assert item["rgb"].shape == (6, 3, 3, 8, 8) and item["flow"].shape == (6, 2, 3, 8, 8)
    red = item["rgb"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # (V, T, h, w), 0..1
    clips = ds.clip_indices(0)
    for view in range(6):
        expected = torch.tensor(clips[view // 3], dtype=torch.float32) / 255
        assert torch.allclose(red[view, :, 0, 0], expected, atol=1e-5)
        assert torch.allclose(item["flow"][view, 0, :, 0, 0] * 20,
                              torch.tensor(clips[view // 3], dtype=torch.float32))


def test_views_flag(coded_store):
    one = ClipDataset(coded_store, inputs=("rgb",), sampler=UniformClipSampler(1, 2),
                      transform=test_transform(8), views=True)
    assert one.num_views == 1 and one[1]["rgb"].shape == (1, 3, 2, 8, 8)
    train = ClipDataset(coded_store, sampler=RandomClipSampler(2), transform=train_transform(8))
    assert not train.views and train[0]["rgb"].shape == (3, 2, 8, 8)
    with pytest.raises(FlowkitError, match="views=False"):
        ClipDataset(coded_store, sampler=UniformClipSampler(2, 2), views=False)


# ----------------------------------------------------------------------------- DataLoader

def batches(ds, workers):
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
    return list(loader)


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            assert torch.equal(x[name], y[name]), name


def test_dataloader_workers_do_not_change_samples(tiny_store):
    ds = ClipDataset(tiny_store, inputs=("rgb", "flow"), sampler=RandomClipSampler(4, step=2),
                     transform=train_transform(16, scales=(1, 0.75, 0.5)), seed=5)
    ds.set_epoch(1)
    serial, parallel = batches(ds, 0), batches(ds, 2)
    assert_same_batches(serial, parallel)
    first = serial[0]
    assert first["rgb"].shape == (4, 3, 4, 16, 16) and first["rgb"].dtype == torch.float32
    assert first["flow"].shape == (4, 2, 4, 16, 16) and first["flow_bound"].shape == (4,)
    assert first["flow_bound"].dtype == torch.float32
    assert first["label"].dtype == torch.int64 and first["index"].tolist() == [0, 1, 2, 3]

    # Resuming: a new dataset at epoch 1 reproduces it; another epoch gives other clips and crops.
    resumed = ClipDataset(tiny_store, inputs=("rgb", "flow"), sampler=RandomClipSampler(4, step=2),
                          transform=train_transform(16, scales=(1, 0.75, 0.5)), seed=5)
    resumed.set_epoch(1)
    assert_same_batches(serial, batches(resumed, 0))
    resumed.set_epoch(2)
    other = batches(resumed, 0)
    assert not all(torch.equal(x["rgb"], y["rgb"]) for x, y in zip(serial, other))


def test_dataset_pickles_for_spawned_workers(tiny_store):
    ds = ClipDataset(tiny_store, inputs=("flow",), sampler=SegmentSampler(3),
                     transform=train_transform(16))
    ds.set_epoch(3)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.epoch == 3
    assert torch.equal(copy[5]["flow"], ds[5]["flow"])


# ----------------------------------------------------------------------------- errors

def test_missing_flow_errors(tmp_path, tiny_store):
    store = write_tiny_store(tmp_path / "noflow", flow_name=None)
    with pytest.raises(FlowkitError) as err:
        ClipDataset(store, inputs=("flow",), sampler=RandomClipSampler(2))
    message = str(err.value)
    assert str(store) in message and "no flow 'tvl1'" in message
    assert f"flowkit extract VIDEOS -o {store} --method tvl1" in message
    ClipDataset(store, inputs=("rgb",), sampler=RandomClipSampler(2))  # rgb alone is fine
    with pytest.raises(FlowkitError, match=r"no flow 'tvnet'.*they have: tvl1.*--method tvnet"):
        ClipDataset(tiny_store, inputs=("rgb", "flow"), flow_name="tvnet",
                    sampler=RandomClipSampler(2))


def test_missing_flow_error_lists_the_flows_of_the_videos_lacking_it(tmp_path):
    """Half the videos have backward flow: "they have" lists what the other half hold (tvl1),
    not every flow in the store (which would claim they have the one they lack)."""
    path = write_coded_store(tmp_path / "store", {"a/with": 4}, backward=True)
    write_coded_store(path, {"a/without": 4})
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("flow", "flow_backward"), sampler=RandomClipSampler(2))
    message = str(err.value)
    assert "1 of 2 videos have no backward flow 'tvl1_backward' (e.g. 'a/without')" in message
    assert "they have: tvl1; add it with" in message


def test_missing_flow_fix_follows_the_kind_of_the_stores_flow(tmp_path):
    """An extracted store (tvl1 computed) plus a video imported with --flow-name denseflow: the
    import it lacks tvl1 from would be refused (one name holds one kind of flow), so the fix
    names extract and leaving it out, and no --flow-name the other videos lack."""
    from flowkit.store.reading import IMPORTED_ATTR

    path = write_coded_store(tmp_path / "store", {"a/x": 3, "b/y": 3})
    flow = np.zeros((2, 2, *CODED_SIZE), np.float32)
    with FlowStore(path, mode="a") as store:
        with store.writer("a/imp", source="rawframes/a/imp", fps=25.0, label=0, label_name="a",
                          flow_codec="float16", rgb_codec="raw") as writer:
            writer.update_attrs({IMPORTED_ATTR: True})
            writer.append_rgb(np.zeros((3, *CODED_SIZE, 3), np.uint8))
            writer.append_flow("denseflow", flow, engine={
                "engine": "denseflow-png", "version": "1", "backend": "external",
                "params": {"source_format": "denseflow-png"}})
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("flow",), sampler=RandomClipSampler(2))
    message = str(err.value)
    assert "1 of 3 videos have no flow 'tvl1' (e.g. 'a/imp'); they have: denseflow" in message
    assert f"`flowkit extract VIDEOS -o {path} --method tvl1`" in message
    assert (f"leave these videos out: train on a --split-list of the others, one KEY.mp4 a line "
            f"(`flowkit info {path} --keys` lists the keys)") in message
    assert "flowkit import" not in message and "--flow-name" not in message
    # the same video lacking flow the store holds as imported flow: the import adds it
    with pytest.raises(FlowkitError, match=r"`flowkit import rawframes RAWFRAMES_DIR -o .* "
                                           r"--flow-name denseflow`"):
        ClipDataset(path, inputs=("flow",), flow_name="denseflow", sampler=RandomClipSampler(2))


def test_missing_rgb_errors(tmp_path):
    store = write_tiny_store(tmp_path / "norgb", rgb=False)
    with pytest.raises(FlowkitError, match=r"12 of 12 videos have no rgb frames.*--rgb") as err:
        ClipDataset(store, inputs=("rgb", "flow"), sampler=RandomClipSampler(2))
    assert str(store) in str(err.value)
    flow_only = ClipDataset(store, inputs=("flow",), sampler=RandomClipSampler(2))
    assert flow_only[0]["flow"].shape == (2, 2, 24, 32)


def test_one_frame_video_is_refused_up_front_for_flow(tmp_path):
    """A 1-frame video has no flow pair: a flow dataset naming it raises at construction, saying
    which video and what to do, not at some batch deep into training."""
    store = write_coded_store(tmp_path / "store", {"a/long": 6, "b/one": 1})
    with pytest.raises(FlowkitError, match=r"1 of 2 videos have no flow \(fewer than 2 frames\) "
                                           r"\(e.g. 'b/one'\); leave these videos out of the keys"):
        ClipDataset(store, inputs=("flow",), sampler=RandomClipSampler(2))
    assert len(ClipDataset(store, ["a/long"], inputs=("flow",), sampler=RandomClipSampler(2))) == 1


def test_key_and_argument_errors(tiny_store):
    sampler = RandomClipSampler(2)
    with pytest.raises(FlowkitError, match="key list .* is empty"):
        ClipDataset(tiny_store, [], sampler=sampler)
    with pytest.raises(FlowkitError, match=r"1 video\(s\) .* not in store .*'up/up_0'"):
        ClipDataset(tiny_store, ["right/right_0", "up/up_0"], sampler=sampler)
    with pytest.raises(FlowkitError, match="inputs must be"):
        ClipDataset(tiny_store, inputs=("depth",), sampler=sampler)
    with pytest.raises(FlowkitError, match="flow_stack"):
        ClipDataset(tiny_store, inputs=("flow",), flow_stack=0, sampler=sampler)
    # the class, not an instance: refused up front, not a TypeError at ds[0]
    with pytest.raises(FlowkitError, match=r"sampler must be a clip sampler \(e.g. Random"):
        ClipDataset(tiny_store, sampler=RandomClipSampler)
    with pytest.raises(FlowkitError, match="transform a callable"):
        ClipDataset(tiny_store, sampler=sampler, transform=MultiScaleCrop)
    ds = ClipDataset(tiny_store, ["left/left_0"], sampler=sampler)
    with pytest.raises(IndexError):
        ds[1]


# ----------------------------------------------------------------------------- splits

def test_num_classes_and_labels(tiny_store):
    assert num_classes(tiny_store) == 3
    assert labels(tiny_store, ["right/right_0", "down/down_1", "left/left_3"]) == [0, 1, 2]
    ds = ClipDataset(tiny_store, ["left/left_0", "right/right_2"], sampler=RandomClipSampler(2))
    assert ds.labels == [2, 0]


def test_stratified_split(tiny_store):
    keys = FlowStore(tiny_store).keys()
    train, val = stratified_split(tiny_store, 0.25, seed=0)
    assert len(val) == 3 and len(train) == 9 and sorted(train + val) == keys
    assert sorted(labels(tiny_store, val)) == [0, 1, 2]  # one per class
    assert stratified_split(tiny_store, 0.25, seed=0) == (train, val)
    assert len({tuple(stratified_split(tiny_store, 0.25, seed=s)[1]) for s in range(8)}) > 1
    train, val = stratified_split(tiny_store, 0.9)
    assert sorted(labels(tiny_store, train)) == [0, 1, 2]  # every class keeps a training video
    assert stratified_split(tiny_store, 0.0) == (keys, [])
    with pytest.raises(FlowkitError, match="val_fraction"):
        stratified_split(tiny_store, 1.0)


def test_video_group_reads_ucf101_clip_names():
    assert video_group("Archery/v_Archery_g08_c03") == "Archery/v_Archery_g08"
    assert video_group("v_Archery_g08_c03") == "v_Archery_g08"
    assert video_group("YoYo/v_YoYo_g25_c05") == "YoYo/v_YoYo_g25"
    for key in ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", "a/long", "x/v_g1_c2x"):
        assert video_group(key) == key  # no recording group in the name: its own group


def write_labelled_store(path, keys):
    """A store of 3-frame RGB videos labelled by their class folder."""
    classes = sorted({key.split("/")[0] for key in keys})
    with FlowStore(path, mode="a", classes=classes) as store:
        for key in keys:
            name = key.split("/")[0]
            with store.writer(key, source=f"{key}.avi", fps=25.0, label=classes.index(name),
                              label_name=name, rgb_codec="raw") as writer:
                writer.append_rgb(np.zeros((3, 4, 4, 3), np.uint8))


def test_stratified_split_keeps_ucf101_groups_whole(tmp_path):
    """UCF101 clips of one group (g08: one actor, one scene) never land on both sides."""
    keys = [f"{c}/v_{c}_g{g:02d}_c{k:02d}" for c in ("Archery", "Bowling")
            for g in range(1, 9) for k in range(1, 3 + g % 3)]  # 2-4 clips per group
    write_labelled_store(tmp_path / "store", keys)
    splits = [stratified_split(tmp_path / "store", 0.25, seed=s) for s in range(6)]
    assert len({tuple(val) for _, val in splits}) > 1
    for train, val in splits:
        assert sorted(train + val) == sorted(keys)
        assert not {video_group(k) for k in train} & {video_group(k) for k in val}
        for c in ("Archery", "Bowling"):
            n = sum(k.startswith(c) for k in keys)
            n_val = sum(k.startswith(c) for k in val)
            assert round(n * 0.25) <= n_val < round(n * 0.25) + 4  # whole groups of 2-4
    train, val = stratified_split(tmp_path / "store", 0.9)
    assert {k.split("/")[0] for k in train} == {"Archery", "Bowling"}  # each keeps a group


def test_stratified_split_keeps_a_class_of_one_group_for_training(tmp_path):
    """A class whose videos are all clips of one recording cannot give validation a group
    without leaving training nothing of it: the whole group stays in training, whatever the seed
    (a classifier cannot learn a class it never sees)."""
    archery = [f"Archery/v_Archery_g01_c0{k}" for k in range(1, 5)]
    bowling = [f"Bowling/v_Bowling_g0{g}_c01" for g in range(1, 5)]
    write_labelled_store(tmp_path / "store", archery + bowling)
    for seed in range(4):
        train, val = stratified_split(tmp_path / "store", 0.25, seed=seed)
        assert set(archery) <= set(train)
        assert len(val) == 1 and val[0] in bowling


def test_stratified_split_of_ungrouped_videos_is_per_video(tiny_store):
    """Keys without a group split video by video, as before groups were known."""
    keys = FlowStore(tiny_store).keys()
    for seed in range(4):
        expected = []
        for label in range(3):
            members = [k for k, y in zip(keys, labels(tiny_store, keys)) if y == label]
            order = np.random.default_rng([seed, label + 1]).permutation(len(members))
            expected += [members[i] for i in order[:min(round(len(members) * 0.5),
                                                        len(members) - 1)]]
        assert stratified_split(tiny_store, 0.5, seed=seed)[1] == sorted(expected)


def add_unlabelled_videos(store_path, *keys: str) -> None:
    """Add videos with label -1 to a store, as `flowkit extract` writes a video that is not in a
    class folder (e.g. at the root of the tree)."""
    with FlowStore(store_path, mode="a") as store:
        for key in keys:
            frames, flow = tiny_video("right", 9)
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=-1, label_name="",
                              source_size=TINY_SIZE, flow_codec="float16", rgb_codec="raw") as w:
                w.append_rgb(frames)
                w.append_flow("tvl1", flow, engine={"engine": "exact", "version": "1",
                                                    "params": {}})


def test_unlabelled_videos_are_in_no_stratified_split(tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    add_unlabelled_videos(store, "stray_a", "stray_b")
    keys = FlowStore(store).keys()
    assert labelled_keys(store, keys) == ([k for k in keys if not k.startswith("stray")],
                                          ["stray_a", "stray_b"])
    assert labelled_keys(store, ["right/right_0", "left/left_0"], num_classes=2) == (
        ["right/right_0"], ["left/left_0"])  # a class beyond num_classes is no label either
    for fraction in (0.0, 0.25, 0.9):
        train, val = stratified_split(store, fraction, seed=0)
        assert sorted(train + val) == [k for k in keys if not k.startswith("stray")]
        assert stratified_split(tiny_store, fraction, seed=0) == (train, val)  # otherwise alike


def test_unlabelled_videos_stay_unlabelled_under_a_runs_classes(tiny_store, tmp_path):
    """A store numbering its classes otherwise than the run (matched by name) still has its
    unlabelled video (label -1) unlabelled: it is neither trained on nor scored as some class."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    add_unlabelled_videos(store, "stray")
    keys = ["right/right_0", "down/down_0", "left/left_0", "stray"]
    run_classes = ["left", "right", "down"]  # the store's are right, down, left
    assert labelled_keys(store, keys, classes=run_classes) == (keys[:3], ["stray"])
    ds = ClipDataset(store, keys, sampler=RandomClipSampler(2), classes=run_classes)
    assert ds.labels == [1, 2, 0, -1]


def test_split_from_list(tiny_store, tmp_path):
    with_labels = tmp_path / "trainlist01.txt"
    with_labels.write_text("right/right_0.avi 1\ndown/down_2.avi 2\n\nleft/left_1.avi 3\n")
    assert split_from_list(tiny_store, with_labels) == ["right/right_0", "down/down_2",
                                                        "left/left_1"]
    without = tmp_path / "testlist01.txt"
    without.write_text("# test videos\nleft/left_3.avi\r\nright/right_1.mp4\n")
    assert split_from_list(tiny_store, without) == ["left/left_3", "right/right_1"]

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("right/right_0.avi\n" + "".join(f"up/up_{i}.avi\n" for i in range(7)))
    with pytest.raises(FlowkitError, match="7 video") as err:
        split_from_list(tiny_store, unknown)
    assert "'up/up_4'" in str(err.value) and "'up/up_5'" not in str(err.value)
    assert "and 2 more" in str(err.value)

    # A list's ids are its own (the store labels the videos): "2" for 'right' is no error, but an
    # id naming two folders, or a folder with two ids, contradicts the list itself.
    assert split_from_list(tiny_store, write(tmp_path / "own.txt", "right/right_0.avi 2\n")) == [
        "right/right_0"]
    two_folders = write(tmp_path / "two_folders.txt",
                        "right/right_0.avi 2\nleft/left_0.avi 1\ndown/down_0.avi 2\n")
    with pytest.raises(FlowkitError, match=r"two_folders.txt:3: label 2 is given to folder 'down', "
                                           r"but .*two_folders.txt:1 gives it to folder 'right'"):
        split_from_list(tiny_store, two_folders)
    two_ids = write(tmp_path / "two_ids.txt", "right/right_0.avi 1\n\nright/right_1.avi 3\n")
    with pytest.raises(FlowkitError, match=r"two_ids.txt:3: folder 'right' has label 3, but "
                                           r".*two_ids.txt:1 gives it label 1"):
        split_from_list(tiny_store, two_ids)
    with pytest.raises(FlowkitError, match="does not exist"):
        split_from_list(tiny_store, tmp_path / "missing.txt")


def test_split_from_list_refuses_a_video_listed_twice(tiny_store, tmp_path):
    """A list naming a video twice (a merge or copy slip) would weigh it double; the error names
    the file, the line of the repeat and the first line, so it can be fixed."""
    twice = write(tmp_path / "twice.txt",
                  "right/right_0.avi 1\ndown/down_2.avi 2\n\nright/right_0.avi 1\n")
    with pytest.raises(FlowkitError, match=r"twice.txt:4: video 'right/right_0' is listed twice "
                                           r"\(first at line 1\)"):
        split_from_list(tiny_store, twice)


def test_listed_videos_missing_from_the_store_name_skip_missing(tiny_store, tmp_path):
    """A listed video whose extraction failed is never in the store, so extracting again cannot
    fix the error: it names --skip-missing; listed_keys gives the listed keys the store holds and
    those it lacks, each in list order, for the train/evaluate that skip them."""
    from flowkit.data.splits import listed_keys, missing_note

    listed = write(tmp_path / "trainlist01.txt", "right/right_0.avi 1\nright/right_gone.avi 1\n"
                                                 "down/down_2.avi 2\nleft/left_gone.avi 3\n")
    with pytest.raises(FlowkitError, match="2 video") as err:
        split_from_list(tiny_store, listed)
    assert "pass --skip-missing (listed_keys() in Python) to leave the missing ones out" in str(err.value)
    assert "'right/right_gone'" in str(err.value)
    present, missing = listed_keys(tiny_store, listed)
    assert present == ["right/right_0", "down/down_2"]
    assert missing == ["right/right_gone", "left/left_gone"]
    note = missing_note(tiny_store, missing, "training")
    assert note.startswith("2 listed video(s) are not in store") and "'left/left_gone'" in note


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_split_from_list_takes_ucf101_official_ids(tmp_path):
    """UCF101 extracted from its folders has sorted() class ids ('HammerThrow' < 'Hammering');
    its official lists number classes as classInd.txt does (case-insensitively: 35 Hammering,
    36 HammerThrow, 47 JumpingJack, 48 JumpRope). The list is taken as it is, and the store's
    labels stay those of the store. A classInd.txt beside the list is checked line by line."""
    official = {"Hammering": 35, "HammerThrow": 36, "JumpingJack": 47, "JumpRope": 48}
    root = tmp_path / "UCF-101"
    for name in official:
        write(root / name / f"v_{name}_g08_c01.avi", "")
    items, classes = scan_videos(root)  # what `flowkit extract UCF-101 -o STORE` labels with
    assert classes == ["HammerThrow", "Hammering", "JumpRope", "JumpingJack"]
    with FlowStore(tmp_path / "store", mode="a", classes=classes) as store:
        for item in items:
            with store.writer(item.key, source=str(item.path), fps=25.0, label=item.label,
                              label_name=item.label_name, rgb_codec="raw") as writer:
                writer.append_rgb(np.zeros((2, 4, 4, 3), np.uint8))
    lists = tmp_path / "ucfTrainTestlist"
    index = "".join(f"{i} {name}\n" for i, name in enumerate(
        [f"Class{i}" for i in range(1, 35)] + ["Hammering", "HammerThrow"]
        + [f"Class{i}" for i in range(37, 47)] + ["JumpingJack", "JumpRope"]
        + [f"Class{i}" for i in range(49, 102)], 1))
    write(lists / "classInd.txt", index)
    lines = "".join(f"{name}/v_{name}_g08_c01.avi {i}\n" for name, i in official.items())
    keys = [f"{name}/v_{name}_g08_c01" for name in official]
    for where in (lists, tmp_path / "alone"):  # with the official classInd.txt beside it, and not
        assert split_from_list(tmp_path / "store", write(where / "trainlist01.txt", lines)) == keys
    # The same four classes numbered 1..4 in the official order (ids within the store's count).
    four = tmp_path / "four"
    write(four / "classInd.txt", "".join(f"{i} {name}\n" for i, name in enumerate(official, 1)))
    lines = "".join(f"{name}/v_{name}_g08_c01.avi {i}\n" for i, name in enumerate(official, 1))
    assert split_from_list(tmp_path / "store", write(four / "trainlist01.txt", lines)) == keys
    assert labels(tmp_path / "store", keys) == [1, 0, 3, 2]  # the store's own, sorted() ids

    # With classInd.txt beside it, each line's id must name its folder there, within its range.
    swapped = write(lists / "swapped.txt", "Hammering/v_Hammering_g08_c01.avi 35\n"
                                           "HammerThrow/v_HammerThrow_g08_c01.avi 47\n")
    with pytest.raises(FlowkitError, match=r"swapped.txt:2: label 47 is class 'JumpingJack' in "
                                           r".*classInd.txt but the video is in folder "
                                           r"'HammerThrow'"):
        split_from_list(tmp_path / "store", swapped)
    beyond = write(lists / "beyond.txt", "JumpRope/v_JumpRope_g08_c01.avi 102\n")
    with pytest.raises(FlowkitError, match=r"beyond.txt:1: label 102 is out of range 1..101 of "
                                           r".*classInd.txt"):
        split_from_list(tmp_path / "store", beyond)
    alone = write(tmp_path / "alone" / "beyond.txt", "JumpRope/v_JumpRope_g08_c01.avi 102\n")
    assert split_from_list(tmp_path / "store", alone) == ["JumpRope/v_JumpRope_g08_c01"]


def test_a_0_based_list_of_a_class_subset_beside_its_class_index(tiny_store, tmp_path):
    """An mmaction2 video list of some classes (no label 0) beside a classInd.txt reads 0-based,
    the one base under which its labels name their folders there. Before: read 1-based and
    refused ("label 1 is class 'down' ... but the video is in folder 'left'"). A list that fits
    no base says when a line would fit 0-based."""
    write(tmp_path / "classInd.txt", "1 down\n2 left\n3 right\n")
    subset = write(tmp_path / "val_list_videos.txt", "left/left_1.mp4 1\nright/right_0.mp4 2\n")
    assert split_from_list(tiny_store, subset) == ["left/left_1", "right/right_0"]
    mixed = write(tmp_path / "mixed.txt", "left/left_1.mp4 1\nright/right_0.mp4 3\n")
    with pytest.raises(FlowkitError, match=r"mixed.txt:1: label 1 is class 'down' in "
                                           r".*classInd.txt but the video is in folder 'left' "
                                           r"\(read 0-based, as mmaction2 writes labels, it "
                                           r"would be 'left', but then other lines"):
        split_from_list(tiny_store, mixed)


def test_missing_flow_hint_extracts_with_the_stores_engine_options(tmp_path):
    """The hint named `flowkit extract --method motionnet` without the --weights the store's
    motionnet flow was made with (that command refuses: no weights), and in evaluation suggested
    training on another flow. The command carries the record's --weights and each --param
    other than the engine's default (one whose default is None, as tvnet's scales, too: only
    weights would fix it); an evaluation's ways out are an evaluation's."""
    path = write_coded_store(tmp_path / "store", {"a/x": 3, "b/y": 3})
    flow = np.zeros((2, 2, *CODED_SIZE), np.float32)
    engines = {"motionnet": {"weights": "/w/mn.pt", "weights_sha256": "ab12", "num_frames": 4,
                             "width": 0.125},
               "costvolume": {"weights": None, "max_displacement": [4, 4], "stride": 2,
                              "dilation": 1, "tau": 0.02, "radius": 3, "sigma": 0.0, "scale": 1.0,
                              "features": None, "layer": "layer1"},
               "tvnet": {"scales": 2, "iterations": None, "weights": None}}
    with FlowStore(path, mode="a") as store:
        for key in ("a/m", "b/m"):
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label="ab".index(key[0]),
                              label_name=key[0], flow_codec="float16", rgb_codec="raw") as w:
                w.append_rgb(np.zeros((3, *CODED_SIZE, 3), np.uint8))
                w.append_flow("tvl1", flow, engine={"engine": "coded", "version": "1",
                                                    "params": {}})
                for name, params in engines.items():
                    w.append_flow(name, flow, engine={"engine": name, "version": "1",
                                                      "params": params})
    for name, options in (("motionnet", "--weights /w/mn.pt"), ("costvolume", "--param stride=2"),
                          ("tvnet", "--param scales=2")):
        with pytest.raises(FlowkitError) as err:
            ClipDataset(path, inputs=("flow",), flow_name=name, sampler=RandomClipSampler(2))
        message = str(err.value)
        assert f"`flowkit extract VIDEOS -o {path} --method {name} {options}` (VIDEOS:" in message
        assert "train on a --split-list of the others" in message
        assert "(`flowkit train --flow-name tvl1`, flow_name='tvl1' in Python)" in message
    with pytest.raises(FlowkitError) as err:  # evaluation: the run's model takes this flow
        ClipDataset(path, ["a/x", "a/m"], inputs=("flow",), flow_name="motionnet", views=True,
                    sampler=RandomClipSampler(2))
    message = str(err.value)
    assert "--method motionnet --weights /w/mn.pt`" in message
    assert "evaluate a --split-list of the others" in message and "flowkit train" not in message
    other = write_coded_store(tmp_path / "other", {"a/x": 3})  # no video has it: no record
    with pytest.raises(FlowkitError, match=r"--method motionnet --weights CKPT` \(VIDEOS: .*; "
                                           r"CKPT and any --param: those the run's flow was "
                                           r"extracted with, which `flowkit info` of the store it "
                                           r"was trained on shows\)$"):
        ClipDataset(other, inputs=("flow",), flow_name="motionnet", views=True,
                    sampler=RandomClipSampler(2))


def test_missing_backward_flow_hint_extracts_with_the_forward_flows_options(tmp_path):
    """No video holds tvnet's backward flow, so no record of it says how it was made: the
    `--backward` command carries the options the store's forward tvnet flow was made with (the
    backward flow must come from the same TVNet), not `--weights CKPT`."""
    path = tmp_path / "store"
    flow = np.zeros((2, 2, *CODED_SIZE), np.float32)
    record = {"engine": "tvnet", "version": "1",
              "params": {"scales": 2, "warps": 1, "iterations": 10, "weights": None}}
    with FlowStore(path, mode="a", classes=["a"]) as store:
        for key in ("a/x", "a/y"):
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=0, label_name="a",
                              flow_codec="float16", rgb_codec="raw") as w:
                w.append_rgb(np.zeros((3, *CODED_SIZE, 3), np.uint8))
                w.append_flow("tvnet", flow, engine=record)
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("flow", "flow_backward"), flow_name="tvnet",
                    sampler=RandomClipSampler(2))
    assert (f"`flowkit extract VIDEOS -o {path} --backward --method tvnet --param iterations=10 "
            "--param scales=2 --param warps=1` (VIDEOS:") in str(err.value)


def _rgb_only_import(path, keys):
    """A store as `flowkit import rawframes` makes it of folders of img_* files only (Jester's
    frames): imported videos, RGB frames, no flow."""
    from flowkit.store.reading import IMPORTED_ATTR

    with FlowStore(path, mode="a", classes=["a"]) as store:
        for key in keys:
            with store.writer(key, source=f"raw/{key}", fps=0.0, label=0, label_name="a",
                              rgb_codec="raw") as writer:
                writer.update_attrs({IMPORTED_ATTR: True})
                writer.append_rgb(np.zeros((3, *CODED_SIZE, 3), np.uint8))
    return path


def test_missing_flow_of_an_rgb_only_import_says_to_extract_the_videos_or_train_rgb(tmp_path):
    """A flow model on a store imported from frames without flow images said "add it with
    flowkit import rawframes RAWFRAMES_DIR", which adds nothing ("0 done, 10 skipped"): the fix
    says no rerun adds flow frames lack, that flowkit computes flow from video files, and
    (training) names the models that need none; evaluation, whose model is fixed, names no other
    model. The import rerun stays, for an import run with --no-flow (the store cannot tell)."""
    path = _rgb_only_import(tmp_path / "store", ["a/v0", "a/v1"])
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("flow",), sampler=RandomClipSampler(2))
    message = str(err.value)
    assert "2 of 2 videos have no flow 'tvl1'" in message
    assert "they have: no flow; they were imported without flow" in message
    assert "Imported from frames without flow images (img_* files only" in message
    assert "`flowkit extract VIDEOS -o NEW_STORE --method tvl1`" in message
    assert "train a model that needs no flow: ddn;" in message and "modality=rgb" in message
    assert "import ran with --no-flow, rerun `flowkit import rawframes" in message
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("flow",), views=True, sampler=RandomClipSampler(2))
    assert "--method tvl1`" in str(err.value) and "needs no flow" not in str(err.value)


def test_the_rgb_models_named_need_no_flow():
    """Every model (and arguments) the RGB-only fix names reads RGB alone, by the registry."""
    from flowkit.data.datasets import RGB_MODELS
    from flowkit.models import create_model, list_models

    named = {"ddn": {}, "tvnet": {"flow_source": "tvnet"},
             "trajectorynet": {"flow_source": "motionnet"},
             **{name: {"modality": "rgb"} for name in ("cidc", "resnet2d", "i3d", "s3d")}}
    assert all(name in " ".join(RGB_MODELS) for name in named)
    for name, kw in named.items():
        assert create_model(name, num_classes=2, **kw).inputs == ("rgb",), name
    rgb_only = {n for n in list_models() if create_model(n, num_classes=2).inputs == ("rgb",)}
    assert rgb_only <= set(named), rgb_only  # a new RGB model by default: name it there
