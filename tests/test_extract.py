"""extract(): folder -> store, options (size, step, rgb, uint8), accuracy against the samples' true
flow, resume, sharding, worker processes, bad input, and bounded memory on a long video."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flowkit import create_engine
from flowkit.errors import FlowkitError, StoreError
from flowkit.extract import ExtractConfig, extract, select_shard, shard_from_env
from flowkit.files import stamp
from flowkit.labels import scan_videos
from flowkit.progress import Progress
from flowkit.samples import make_sample_videos, sample_specs
from flowkit.store import FlowStore
from flowkit.store.index import load_index
from flowkit.video import load_frames, write_video

import worker_faults
from conftest import rotate_mp4

# Cheap TV-L1 for everything that does not check accuracy (~100 pairs/s at 64x80 on one core).
CHEAP = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}
# Cheapest possible engine, for the long-video memory test (accuracy is irrelevant there).
MINIMAL = {"nscales": 1, "warps": 1, "outer_iterations": 1, "inner_iterations": 1,
           "median_filtering": 1}

# Matches tests/conftest.py's sample_videos fixture.
T, H, W = 8, 64, 80


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def _config(**kw) -> ExtractConfig:
    """Cheap TV-L1 into lossless codecs (these tests check extraction, not compression; the
    compact default codecs have their own test below and in tests/test_store_codecs.py)."""
    kw.setdefault("engine_params", dict(CHEAP))
    kw.setdefault("flow_codec", "float16")
    kw.setdefault("rgb_codec", "raw")
    return ExtractConfig(**kw)


def _stamps(store_path: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every finished video file."""
    return {str(p.relative_to(store_path)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted((Path(store_path) / "videos").rglob("*.h5"))}


@pytest.fixture(scope="module")
def items(sample_videos):
    return scan_videos(sample_videos)


@pytest.fixture(scope="module")
def base_store(items, tmp_path_factory):
    """The sample folder extracted with cheap params, batch=3 (chunks 3+3+2: crosses boundaries)."""
    videos, classes = items
    path = tmp_path_factory.mktemp("base") / "store"
    summary = extract(videos, path, _config(batch=3), classes=classes)
    return path, summary


# ----------------------------------------------------------------------------- folder -> store

def test_folder_to_store_layout_labels_shapes(items, base_store):
    videos, classes = items
    path, summary = base_store
    assert classes == ["pan_left", "zoom_in"]
    assert [r.status for r in summary.results] == ["done"] * 4, summary.to_dict()
    assert all(r.frames == T and r.pairs == T - 1 and r.size == (H, W) for r in summary.results)
    assert summary.count("failed") == 0 and summary.pairs == 4 * (T - 1) and summary.notes == []

    store = FlowStore(path)
    assert store.keys() == sorted(v.key for v in videos) == [
        "pan_left/pan_left_0", "pan_left/pan_left_1", "zoom_in/zoom_in_0", "zoom_in/zoom_in_1"]
    assert store.classes == classes
    assert store.partials() == [] and store.validate() == []
    for key in store.keys():
        meta = store.meta(key)
        name = key.split("/")[0]
        assert meta["label_name"] == name and meta["label"] == classes.index(name)
        assert meta["frame_count"] == meta["num_frames"] == T
        assert (meta["height"], meta["width"]) == (H, W)
        assert (meta["source_height"], meta["source_width"]) == (H, W)
        assert meta["complete"] is True and meta["step"] == 1 and meta["fps"] == pytest.approx(25.0)
        assert meta["source"].endswith(key + ".mp4")
        rgb = store.read_rgb(key)
        assert rgb.shape == (T, H, W, 3) and rgb.dtype == np.uint8
        raw = store.read_flow(key, "tvl1", dequantize=False)
        assert raw.shape == (T - 1, 2, H, W) and raw.dtype == np.float16
        flow = meta["flows"]["tvl1"]
        assert flow["engine"] == "tvl1" and flow["engine_version"] == "1"
        assert flow["quantization"] == "float16"
        # Every parameter the engine has is recorded, the ones we passed with our values.
        assert {k: flow["params"][k] for k in CHEAP} == CHEAP
        assert flow["params"] == create_engine("tvl1", **CHEAP).params


def test_stored_frames_and_flow_match_a_direct_engine_run(items, base_store):
    """Chunking (batch=3) must neither drop nor shift pairs across chunk boundaries: the stored
    RGB is the decoded video and flow[t] is the engine's flow from frame t to frame t+1."""
    videos, _ = items
    store = FlowStore(base_store[0])
    engine = create_engine("tvl1", **CHEAP)
    for video in videos[::3]:  # one pan, one zoom
        frames = load_frames(video.path)
        np.testing.assert_array_equal(store.read_rgb(video.key), frames)
        t = torch.from_numpy(frames).permute(0, 3, 1, 2)
        expected = engine(t[:-1], t[1:]).numpy()
        stored = store.read_flow(video.key)
        # float16 storage: |f| < 8 px -> rounding error < 8 * 2^-11 = 0.004.
        np.testing.assert_allclose(stored, expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("size, hw", [(48, (48, 60)), ((32, 40), (32, 40))], ids=["short", "HxW"])
def test_size_option(items, tmp_path, size, hw):
    videos, classes = items
    summary = extract(videos[:1], tmp_path / "s", _config(size=size), classes=classes)
    assert summary.results[0].status == "done" and summary.results[0].size == hw
    store = FlowStore(tmp_path / "s")
    key = videos[0].key
    meta = store.meta(key)
    assert (meta["height"], meta["width"]) == hw
    assert (meta["source_height"], meta["source_width"]) == (H, W)
    assert store.read_rgb(key).shape == (T, *hw, 3)
    assert store.read_flow(key).shape == (T - 1, 2, *hw)
    assert store.validate() == []


def test_step_two_halves_the_frames(items, base_store, tmp_path):
    videos, classes = items
    summary = extract(videos[:1], tmp_path / "s", _config(step=2), classes=classes)
    r = summary.results[0]
    assert (r.status, r.frames, r.pairs) == ("done", T // 2, T // 2 - 1)
    store, base = FlowStore(tmp_path / "s"), FlowStore(base_store[0])
    key = videos[0].key
    meta = store.meta(key)
    assert meta["frame_count"] == T // 2 and meta["step"] == 2
    assert meta["fps"] == pytest.approx(12.5)
    # Frames 0, 2, 4, 6 of the video, exactly.
    np.testing.assert_array_equal(store.read_rgb(key), base.read_rgb(key)[::2])
    assert store.read_flow(key).shape == (T // 2 - 1, 2, H, W)
    assert store.validate() == []


def test_no_rgb(items, tmp_path):
    videos, classes = items
    summary = extract(videos[:1], tmp_path / "s", _config(rgb=False), classes=classes)
    assert summary.results[0].status == "done"
    store = FlowStore(tmp_path / "s")
    key = videos[0].key
    meta = store.meta(key)
    assert meta["has_rgb"] is False and meta["frame_count"] == T
    assert store.read_flow(key).shape == (T - 1, 2, H, W)
    with pytest.raises(StoreError, match="no rgb"):
        store.read_rgb(key)
    assert store.validate() == []
    assert store.summary()["rgb_frames"] == 0


def test_a_run_asking_for_rgb_is_refused_by_videos_made_without_and_a_redo_adds_it(items,
                                                                                    tmp_path):
    """A rerun with RGB (the default) over videos made with --no-rgb would skip them and write no
    RGB, exit 0 (a rgb model then found none): refused, naming --no-rgb; --redo-mismatched
    recomputes them with RGB; a run adding another flow writes RGB into the video with it."""
    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:2], path, _config(rgb=False), classes=classes)
    before = _stamps(path)
    with pytest.raises(StoreError) as refused:
        extract(videos[:2], path, _config(), classes=classes)
    assert ("RGB frames none (--no-rgb) in the store, stored (--rgb) asked (2 of 2 videos "
            "checked). Nothing was computed. Rerun with --no-rgb to extend this store"
            in str(refused.value)), str(refused.value)
    assert _stamps(path) == before
    kept = extract(videos[:2], path, _config(rgb=False), classes=classes)
    assert [r.status for r in kept.results] == ["skipped", "skipped"]
    redone = extract(videos[:1], path, _config(redo_mismatched=True), classes=classes)
    assert [r.status for r in redone.results] == ["done"]
    added = extract(videos[1:2], path, _config(method="costvolume", engine_params={}),
                    classes=classes)
    assert [r.status for r in added.results] == ["done"]
    store = FlowStore(path)
    assert [store.meta(v.key)["has_rgb"] for v in videos[:2]] == [True, True]


def test_uint8_flow_round_trips_within_bound_over_255(items, base_store, tmp_path):
    videos, classes = items
    bound = 2.5  # below the samples' 1-3 px/frame speeds, so clipping is exercised too
    extract(videos, tmp_path / "s", _config(batch=3, flow_codec=f"uint8:{bound}"),
            classes=classes)
    store, base = FlowStore(tmp_path / "s"), FlowStore(base_store[0])
    assert store.validate() == []
    clipped_any = False
    for video in videos:
        meta = store.meta(video.key)["flows"]["tvl1"]
        assert meta["quantization"] == "uint8" and meta["dtype"] == "uint8"
        assert meta["bound"] == bound and meta["offset"] == -bound
        assert meta["scale"] == pytest.approx(2 * bound / 255)
        raw = store.read_flow(video.key, dequantize=False)
        assert raw.dtype == np.uint8 and raw.shape == (T - 1, 2, H, W)
        flow = store.read_flow(video.key)
        assert flow.dtype == np.float32
        reference = np.clip(base.read_flow(video.key), -bound, bound)  # same config, float16
        err = np.abs(flow - reference).max()
        # bound/255 is half a quantisation step; + float16 rounding of the reference (< 0.002).
        assert err <= bound / 255 + 2e-3, (video.key, err)
        clipped_any |= bool((raw == 0).any() or (raw == 255).any())
    assert clipped_any, "expected some flow beyond the bound (pan speeds are 1-3 px)"
    assert store.summary()["quantization"] == {"tvl1": [f"uint8 (bound {bound:g})"]}


@pytest.mark.parametrize("bad", [{"flow_codec": "float32"}, {"flow_codec": "uint8:0"}, {"size": 0},
                                 {"size": (0, 40)}, {"max_frames": 1}, {"max_frames": 0}],
                         ids=["dtype", "bound", "size", "hw", "max-frames-1", "max-frames-0"])
def test_bad_config_fails_fast(bad):
    with pytest.raises(FlowkitError):
        ExtractConfig(**bad)


def test_a_step_that_keeps_one_frame_says_what_was_decoded_and_what_to_change(items, tmp_path):
    videos, classes = items
    summary = extract(videos[:1], tmp_path / "s", _config(step=T), classes=classes)
    r = summary.results[0]
    assert r.status == "failed", r
    assert f"{T} frames decoded, but --step {T} keeps only 1 of them" in r.reason, r.reason
    assert f"use --step {T - 1} or less" in r.reason


# ----------------------------------------------------------------------------- accuracy

ACC_KW = dict(classes=("pan_left", "pan_right", "pan_up"), videos_per_class=1, frames=3,
              size=(64, 80))
ACC_BORDER = 8
# Measured (default TV-L1, 2 pairs per video, 8 px border, h264 crf 15 source, float16 store):
# mean EPE 0.066 (pan_left, 2.27 px/frame) and 0.028 (pan_right, 2.78 px/frame); see the report.
# The bound leaves ~4x margin for codec/platform noise and is still < 1/4 of the smallest speed
# (1 px/frame), so a wrong sign, swapped u/v, a reversed pair or a scale error all fail it.
ACC_MAX_MEAN_EPE = 0.25


@pytest.mark.slow
def test_pan_flow_matches_true_flow(tmp_path):
    root = tmp_path / "videos"
    make_sample_videos(root, **ACC_KW)
    videos, classes = scan_videos(root)
    summary = extract(videos, tmp_path / "s", ExtractConfig(), classes=classes)  # default TV-L1
    assert summary.count("done") == 3, summary.to_dict()
    store = FlowStore(tmp_path / "s")
    b = ACC_BORDER
    epes = {}
    for spec in sample_specs(**ACC_KW):
        key = f"{spec.class_name}/{Path(spec.filename).stem}"
        assert store.meta(key)["flows"]["tvl1"]["params"]["warps"] == 5  # OpenCV defaults
        flow, truth = store.read_flow(key), spec.flow()
        assert flow.shape == (ACC_KW["frames"] - 1, 2, *ACC_KW["size"])
        err = np.sqrt(((flow - truth[None]) ** 2).sum(axis=1))[:, b:-b, b:-b]
        epes[key] = float(err.mean())
        # Direction check independent of the EPE bound: the median flow is the pan's velocity.
        median = np.median(flow[:, :, b:-b, b:-b], axis=(0, 2, 3))
        np.testing.assert_allclose(median, truth[:, 0, 0], atol=0.2, err_msg=key)
    print("mean EPE per video:", epes)
    assert max(epes.values()) < ACC_MAX_MEAN_EPE, epes


# ----------------------------------------------------------------------------- resume

def test_rerun_skips_everything_and_rewrites_nothing(items, tmp_path):
    videos, classes = items
    path = tmp_path / "s"
    first = extract(videos, path, _config(), classes=classes)
    assert first.count("done") == 4
    before = _stamps(path)
    assert len(before) == 4
    second = extract(videos, path, _config(), classes=classes)
    assert [r.status for r in second.results] == ["skipped"] * 4
    assert [r.key for r in second.results] == [v.key for v in videos]
    assert all("already in the store" in r.reason for r in second.results)
    assert second.pairs == 0
    assert _stamps(path) == before
    assert FlowStore(path).validate() == []


def test_rerun_redoes_only_missing_videos(items, tmp_path):
    videos, classes = items
    path = tmp_path / "s"
    extract(videos, path, _config(), classes=classes)
    gone = path / "videos" / (videos[1].key + ".h5")
    gone.unlink()
    before = _stamps(path)
    summary = extract(videos, path, _config(), classes=classes)
    assert [r.status for r in summary.results] == ["skipped", "done", "skipped", "skipped"]
    after = _stamps(path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == 4


def test_a_rotated_video_resumes_with_the_same_command(items, tmp_path):
    """A portrait (rotated) video is stored upright with its upright source size, so the store
    check of the same command finds it fits: skipped, neither refused nor redone."""
    videos, _ = items
    (tmp_path / "v" / "cls").mkdir(parents=True)
    rotate_mp4(videos[0].path, tmp_path / "v" / "cls" / "r.mp4")
    rotated, classes = scan_videos(tmp_path / "v")
    path = tmp_path / "s"
    first = extract(rotated, path, _config(), classes=classes)
    assert first.results[0].status == "done", first.results[0].reason
    meta = FlowStore(path).meta("cls/r")
    assert meta["rotation"] == 270 and (meta["height"], meta["width"]) == (W, H)
    assert (meta["source_height"], meta["source_width"]) == (W, H)
    before = _stamps(path)
    for config in (_config(), _config(redo_mismatched=True)):
        again = extract(rotated, path, config, classes=classes)
        assert [r.status for r in again.results] == ["skipped"], again.results
        assert again.notes == []
    assert _stamps(path) == before


def test_the_max_frames_that_cut_a_video_is_kept_and_a_run_keeping_more_is_refused(items,
                                                                                    tmp_path):
    """A video cut by --max-frames records the limit; a run that would keep more of it (no limit,
    a larger one) or join longer videos to it is refused before computing, naming the option
    that matches (before, a rerun without --max-frames skipped the cut videos as finished and the
    store silently held 3 of their 8 frames). The same limit resumes; --redo-mismatched redoes
    them whole; and a store of whole videos refuses new ones cut shorter."""
    import h5py

    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:2], path, _config(max_frames=3), classes=classes)
    store = FlowStore(path)
    assert [store.meta(v.key)["max_frames"] for v in videos[:2]] == [3, 3]
    assert store.metas([videos[0].key])[videos[0].key]["max_frames"] == 3  # the index has it
    before = _stamps(path)
    for config, asked in ((_config(), "none"), (_config(max_frames=5), "5"),
                          (_config(backward=True), "none")):
        with pytest.raises(StoreError) as refused:
            extract(videos[:2], path, config, classes=classes)
        message = str(refused.value)
        assert f"frames cut at (--max-frames) 3 in the store, {asked} asked (2 of 2 videos " \
               "checked)" in message, message
        assert "Nothing was computed. Rerun with --max-frames 3 to extend this store" in message
    with pytest.raises(StoreError, match="Rerun with --max-frames 3"):  # joins a whole video
        extract(videos[:3], path, _config(max_frames=20), classes=classes)
    assert _stamps(path) == before
    again = extract(videos[:2], path, _config(max_frames=3), classes=classes)
    assert [r.status for r in again.results] == ["skipped"] * 2
    redone = extract(videos[:2], path, _config(redo_mismatched=True), classes=classes)
    assert [(r.status, r.frames) for r in redone.results] == [("done", T)] * 2, redone.results
    with h5py.File(path / "videos" / f"{videos[0].key}.h5", "r") as f:
        assert "max_frames" not in f.attrs and f.attrs["frame_count"] == T
    with pytest.raises(StoreError) as shorter:  # whole videos; a new one would be cut at 3
        extract(videos[:3], path, _config(max_frames=3), classes=classes)
    assert "frames cut at (--max-frames) none in the store, 3 asked" in str(shorter.value)
    assert "Rerun without --max-frames to extend this store" in str(shorter.value)
    assert [r.status for r in extract(videos[:3], path, _config(), classes=classes).results] \
        == ["skipped", "skipped", "done"]


def test_another_max_frames_is_refused_before_computing(items, tmp_path):
    """A store made with --max-frames 3 before the limit was recorded: adding backward flow
    without it would make 8 frames of each video, which the store refuses; refused up front (the
    headers' frame counts tell), with the matching option, unless --redo-mismatched replaces the
    videos."""
    import h5py

    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:2], path, _config(max_frames=3), classes=classes)
    for file in (path / "videos").rglob("*.h5"):  # as an older flowkit wrote them
        with h5py.File(file, "a") as f:
            del f.attrs["max_frames"], f.attrs["flowkit_version"]
    before = _stamps(path)
    with pytest.raises(StoreError) as refused:
        extract(videos[:2], path, _config(backward=True), classes=classes)
    message = str(refused.value)
    assert "Nothing was computed" in message and "Rerun with --max-frames 3" in message, message
    assert f"{videos[0].key}: 3 frames stored, {T} with --step 1" in message
    assert _stamps(path) == before
    fits = extract(videos[:1], path, _config(backward=True, max_frames=3), classes=classes)
    assert [(r.status, r.frames) for r in fits.results] == [("done", 3)], fits.results
    redone = extract(videos[1:2], path, _config(backward=True, redo_mismatched=True),
                     classes=classes)
    assert [(r.status, r.frames) for r in redone.results] == [("done", T)], redone.results
    assert FlowStore(path).meta(videos[1].key)["num_frames"] == T


def _cut_without_a_word(path, videos, classes):
    """A store of ``videos`` cut at 3 frames, rewritten as flowkit 0.1.0 wrote it: its version
    recorded, its --max-frames not."""
    import h5py

    extract(videos, path, _config(max_frames=3), classes=classes)
    for file in (path / "videos").rglob("*.h5"):
        with h5py.File(file, "a") as f:
            del f.attrs["max_frames"]
            f.attrs["flowkit_version"] = "0.1.0"
    return path


def test_a_max_frames_that_flowkit_0_1_0_did_not_record_is_refused_before_computing(
        items, tmp_path, monkeypatch):
    """flowkit 0.1.0 recorded its version in each video but, before the limit was recorded, not
    the --max-frames that cut it: adding --backward without the limit was taken for a trimmed
    clip (a version-recording flowkit was trusted to record its cuts), so every video's flow was
    computed and then refused at commit. Decoding the first video shows frames past the stored 3:
    refused before any engine call, naming --max-frames 3."""
    from flowkit.flow.base import FlowEngine

    videos, classes = items
    path = _cut_without_a_word(tmp_path / "s", videos[:2], classes)
    before = _stamps(path)
    calls = []
    call = FlowEngine.__call__
    monkeypatch.setattr(FlowEngine, "__call__", lambda self, *a: calls.append(1) or call(self, *a))
    with pytest.raises(StoreError) as refused:
        extract(videos[:2], path, _config(backward=True), classes=classes)
    message = str(refused.value)
    assert f"{videos[0].key}: 3 frames stored, {T} with --step 1" in message, message
    assert "Nothing was computed. Rerun with --max-frames 3 to extend this store" in message
    assert calls == [] and _stamps(path) == before
    fits = extract(videos[:2], path, _config(backward=True, max_frames=3), classes=classes)
    assert [(r.status, r.frames) for r in fits.results] == [("done", 3)] * 2, fits.results
    assert calls  # the counter counts


def test_a_video_refused_at_commit_for_its_frame_count_alone_names_the_max_frames(
        items, tmp_path, monkeypatch):
    """A cut the check before computing cannot see (no header probed here, as for an mkv, whose
    header has no frame count) is refused at commit; when only the frame count differs, the
    line names the --max-frames that matches the store, not "another --size, --step or
    --max-frames"."""
    import flowkit.extract as extract_module

    videos, classes = items
    path = _cut_without_a_word(tmp_path / "s", videos[:1], classes)
    monkeypatch.setattr(extract_module, "COUNT_PROBES", 0)
    summary = extract(videos[:1], path, _config(backward=True), classes=classes)
    [result] = summary.results
    assert result.status == "failed" and f"3 frames of {H}x{W}, but this run made {T} frames " \
        f"of {H}x{W} (another --max-frames); extract with --max-frames 3, or replace the " \
        f"video with --redo {videos[0].key}" in result.reason, result.reason


def test_a_header_counting_frames_a_trim_hid_is_no_other_max_frames(tmp_path):
    """An mp4 whose edit list hides 10 of its 40 counted frames (a trimmed clip) holds 30 frames
    in the store, recorded without a cut: adding backward flow is not refused as "made with
    another --max-frames" (the header's 40 is no cut the store made). Nor is one of a flowkit that
    did not always record its cuts (0.1.0): decoding it finds no frame past the stored 30."""
    import h5py

    from flowkit.labels import VideoItem
    from test_video import _trimmed_mp4

    source = _trimmed_mp4(tmp_path / "trimmed.mp4", 40, 10)
    video = VideoItem(path=source, key="trimmed", label=-1, label_name="")
    path = tmp_path / "s"
    first = extract([video], path, _config())
    assert [(r.status, r.frames) for r in first.results] == [("done", 30)], first.results
    added = extract([video], path, _config(backward=True))
    assert [(r.status, r.frames) for r in added.results] == [("done", 30)], added.results
    assert set(FlowStore(path).meta("trimmed")["flows"]) == {"tvl1", "tvl1_backward"}
    with h5py.File(path / "videos" / "trimmed.h5", "a") as f:  # as flowkit 0.1.0 wrote it
        f.attrs["flowkit_version"] = "0.1.0"
        del f["flow/tvl1_backward"]
    again = extract([video], path, _config(backward=True))
    assert [(r.status, r.frames) for r in again.results] == [("done", 30)], again.results


def test_a_smaller_max_frames_on_whole_videos_is_refused_before_computing(items, tmp_path):
    """A store of whole videos (recording no cut) and a run adding flow with a smaller
    --max-frames: its count is this run's own limit, not a header's, so the run is refused
    before computing, and --redo-mismatched redoes the videos (the trimmed-clip exemption made
    every video fail after its flow was computed, --redo-mismatched too)."""
    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:2], path, _config(), classes=classes)
    before = _stamps(path)
    with pytest.raises(StoreError, match=rf"{videos[0].key}: {T} frames stored, 4 with --step 1 "
                                         r"--max-frames 4.*Nothing was computed"):
        extract(videos[:2], path, _config(backward=True, max_frames=4), classes=classes)
    assert _stamps(path) == before
    redone = extract(videos[:2], path, _config(backward=True, max_frames=4,
                                               redo_mismatched=True), classes=classes)
    assert [(r.status, r.frames) for r in redone.results] == [("done", 4)] * 2, redone.results


def test_a_rerun_whose_label_map_names_the_stores_stand_ins_says_the_store_keeps_them(
        sample_videos, tmp_path):
    """A flat folder labelled by a 0-based list without a label map: the store calls its ids
    class_<i>. The same command with the dataset's --label-map exits 0 and the store keeps its
    stand-ins (its videos record them), which a note now says, with the way to the names."""
    import json

    from conftest import run_cli

    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("pan_left_0", "pan_right_0"):
        (flat / f"{name}.mp4").symlink_to(sample_videos / name.rsplit("_", 1)[0] / f"{name}.mp4")
    (tmp_path / "list.txt").write_text("pan_left_0.mp4 0\npan_right_0.mp4 1\n")
    (tmp_path / "map.txt").write_text("pan left\npan right\n")
    cheap = [a for k, v in CHEAP.items() for a in ("--param", f"{k}={v}")]
    common = ["extract", flat, "-o", tmp_path / "s", "--annotations", tmp_path / "list.txt",
              "--size", "16", "--workers", "1", "--json", *cheap]
    first = run_cli(*common)
    assert first.returncode == 0, first.stderr
    assert FlowStore(tmp_path / "s").classes == ["class_0", "class_1"]
    again = run_cli(*common, "--label-map", tmp_path / "map.txt")
    assert again.returncode == 0, again.stderr
    notes = json.loads(again.stdout)["notes"]
    assert [n for n in notes if n.startswith("2 label ids the store calls class_<id> are named by "
                                             "this run (e.g. class_0: 'pan left')")], notes
    assert FlowStore(tmp_path / "s").classes == ["class_0", "class_1"]


def test_a_flow_another_engine_wrote_is_named_not_blamed_on_params(items, tmp_path):
    """An imported flow under the name a run computes (rawframes imported as flow/tvl1): the run is
    refused naming the importer, not with "rerun without --param ..." options nobody gave; with
    --redo-mismatched it computes the flow of its videos anew."""
    videos, classes = items
    path = tmp_path / "s"
    imported = {"engine": "mmaction2-rawframes", "version": "0.1.0", "backend": "external",
                "params": {"bound": 20.0, "source_format": "mmaction2-rawframes"}}
    with FlowStore(path, mode="a", classes=classes) as store:
        with store.writer(videos[0].key, source=str(videos[0].path), fps=25.0,
                          label=videos[0].label, label_name=videos[0].label_name,
                          source_size=(H, W), flow_codec="float16", rgb_codec="raw") as w:
            w.append_rgb(load_frames(videos[0].path))
            w.append_flow("tvl1", np.zeros((T - 1, 2, H, W), np.float32), engine=imported)
    with pytest.raises(StoreError) as refused:
        extract(videos[:1], path, _config(), classes=classes)
    message = str(refused.value)
    assert "written by engine 'mmaction2-rawframes' (imported from rawframes" in message, message
    assert "--param" not in message and "--flow-name rawframes" in message
    assert "add --redo-mismatched" in message
    redone = extract(videos[:1], path, _config(redo_mismatched=True), classes=classes)
    assert [r.status for r in redone.results] == ["done"], redone.results
    assert FlowStore(path).meta(videos[0].key)["flows"]["tvl1"]["engine"] == "tvl1"


def test_redo_mismatched_cannot_mix_new_videos_into_a_store_of_another_size(items, tmp_path):
    """None of the run's videos is in the store, whose videos have another size: --redo-mismatched
    would redo none of them and store the new ones at the new size, so it is refused too, saying
    why and without suggesting it."""
    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:1], path, _config(), classes=classes)
    for redo in (False, True):
        with pytest.raises(StoreError) as refused:
            extract(videos[1:2], path, _config(size=32, redo_mismatched=redo), classes=classes)
        message = str(refused.value)
        assert "None of this run's videos is in the store" in message, message
        assert f"frame size {H}x{W} in the store, 32x40 asked" in message
        assert "Rerun without --size" in message and "add --redo-mismatched" not in message
    assert FlowStore(path).keys() == [videos[0].key]


def _tvnet_checkpoint(path: Path, **config) -> Path:
    """An untrained TVNet of ``config`` saved as a ``flowkit train-flow tvnet`` checkpoint."""
    from flowkit.checkpoints import save_checkpoint
    from flowkit.flow.tvnet import TVNet

    save_checkpoint(path, "tvnet", {"config": config, "state_dict": TVNet(**config).state_dict(),
                                    "epoch": 1})
    return path


def test_the_hint_without_weights_names_the_architecture_they_fixed(items, tmp_path):
    """A store of untrained tvnet made with --param scales=1 warps=1 iterations=10, extended with
    --weights of a checkpoint of that architecture: refused (other weights), and the options the
    hint names (dropping --weights) fit the store. Before, it said "Rerun without --weights"
    alone, which ran tvnet at its defaults (5/5/50) and was refused again."""
    import re

    videos, classes = items
    path = tmp_path / "s"
    arch = {"scales": 1, "warps": 1, "iterations": 10}
    tvnet = dict(method="tvnet", flow_codec="float16", rgb_codec="raw")
    extract(videos[:1], path, ExtractConfig(engine_params=dict(arch), **tvnet), classes=classes)
    ckpt = _tvnet_checkpoint(tmp_path / "tv.pt", **arch)
    with pytest.raises(StoreError) as refused:
        extract(videos[:1], path, ExtractConfig(engine_params={"weights": str(ckpt)}, **tvnet),
                classes=classes)
    hint = re.search(r"Rerun (.*) to extend this store", str(refused.value)).group(1)
    assert hint == ("with --param iterations=10 --param scales=1 --param warps=1 and without "
                    "--weights"), refused.value
    params = {k: json.loads(v) for k, v in re.findall(r"--param (\w+)=(\S+)", hint)}
    again = extract(videos[:1], path, ExtractConfig(engine_params=params, **tvnet),
                    classes=classes)
    assert [r.status for r in again.results] == ["skipped"], again.results


def test_the_hint_without_weights_names_the_architecture_of_the_other_direction(items, tmp_path):
    """A store holding only untrained tvnet_backward (--param scales=1 warps=1 iterations=10)
    extended by a forward run with --weights of a checkpoint of that architecture: refused, its
    hint naming the other direction's --param values (before: a KeyError traceback)."""
    videos, classes = items
    path = tmp_path / "s"
    arch = {"scales": 1, "warps": 1, "iterations": 10}
    tvnet = dict(method="tvnet", flow_codec="float16", rgb_codec="raw")
    extract(videos[:1], path, ExtractConfig(engine_params=dict(arch), backward=True, **tvnet),
            classes=classes)
    ckpt = _tvnet_checkpoint(tmp_path / "tv.pt", **arch)
    with pytest.raises(StoreError) as refused:
        extract(videos[:1], path, ExtractConfig(engine_params={"weights": str(ckpt)}, **tvnet),
                classes=classes)
    assert "--param iterations=10 --param scales=1 --param warps=1" in str(refused.value), \
        refused.value


def test_a_store_takes_runs_that_order_its_classes_otherwise_labelled_by_name(items, tmp_path):
    """A store made from a folder scan (sorted class names) takes videos and flow from a run whose
    class list orders the same names otherwise (UCF101's classInd.txt puts Hammering before
    HammerThrow, a scan after it) or holds some of them: each video is labelled by its class name
    with the store's id. Only classes the store lacks are refused, before anything is computed."""
    from dataclasses import replace

    videos, classes = items
    path = tmp_path / "s"
    extract(videos[:1], path, _config(), classes=classes)
    official = list(reversed(classes))  # another order of the same names
    listed = [replace(v, label=official.index(v.label_name)) for v in videos]
    added = extract(listed, path, _config(), classes=official)
    assert [r.status for r in added.results] == ["skipped"] + ["done"] * (len(videos) - 1)
    flowed = extract(listed, path, _config(backward=True), classes=official)
    assert [r.status for r in flowed.results] == ["done"] * len(videos)
    some = [v for v in videos if v.label_name == classes[-1]]
    one_class = [replace(v, label=0) for v in some]
    assert extract(one_class, path, _config(), classes=classes[-1:]).count("skipped") == len(some)
    store = FlowStore(path)
    assert store.classes == classes
    for key in store.keys():
        meta = store.meta(key)
        assert set(meta["flows"]) == {"tvl1", "tvl1_backward"}
        assert (meta["label"], meta["label_name"]) == (classes.index(key.split("/")[0]),
                                                       key.split("/")[0]), key
    before = _stamps(path)
    with pytest.raises(StoreError, match=r"this run has 1 it lacks \(\['new_class'\]\).*"
                                         r"pass the --split-list / --class-index"):
        extract(videos, path, _config(max_frames=4), classes=classes + ["new_class"])
    assert _stamps(path) == before


def test_a_store_whose_ids_are_stand_ins_takes_the_names_the_run_gives_them(items, tmp_path):
    """A store made from a class-subset mmaction2 list before its rows named the ids (every id
    ``class_<i>``) takes the same command after the upgrade, which names them by the rows' class
    folders: a stand-in matches whatever the run calls its id, and the store keeps its name,
    also in the files it adds. Before: refused, "this run has 2 it lacks"."""
    from dataclasses import replace

    from flowkit.store.layout import class_ids

    videos, classes = items
    stand_ins = ["class_0"] + [f"class_{i + 1}" for i in range(len(classes))]  # id 0 unlisted
    listed = [replace(v, label=v.label + 1) for v in videos]  # the list's ids 1.. for the classes
    path = tmp_path / "s"
    extract([replace(v, label_name=stand_ins[v.label]) for v in listed[:1]], path, _config(),
            classes=stand_ins)
    rerun = extract(listed[:2], path, _config(), classes=["class_0"] + classes,
                    classes_numbered=True)
    assert [r.status for r in rerun.results] == ["skipped", "done"]
    store = FlowStore(path)
    assert store.classes == stand_ins and store.validate() == []
    for v in listed[:2]:
        assert (store.meta(v.key)["label"], store.meta(v.key)["label_name"]) == \
            (v.label, stand_ins[v.label])
    # the other way round: a run that knows an id only as class_<i> takes the store's name
    assert class_ids(path, ["class_0", "pan", "class_2"]) == (stand_ins, [0, 1, 2])
    named = tmp_path / "named"
    FlowStore(named, "a", classes=["pan_left", "zoom_in"])
    assert class_ids(named, ["class_0", "zoom_in"]) == (["pan_left", "zoom_in"], [0, 1])
    with pytest.raises(StoreError, match=r"this run has 1 it lacks \(\['class_0'\]\)"):
        class_ids(named, ["class_0", "pan_left"])  # id 0 would be two of the run's classes
    # A folder scan's ids are places in sorted order, not a list's: its new class must not take
    # the store's stand-in id by chance (rotate_cw became class_1, silently).
    mixed = tmp_path / "mixed"
    FlowStore(mixed, "a", classes=["pan_left", "class_1", "zoom_in"])
    with pytest.raises(StoreError, match=r"this run has 1 it lacks \(\['rotate_cw'\]\)"):
        class_ids(mixed, ["pan_left", "rotate_cw"])
    assert class_ids(mixed, ["pan_left", "rotate_cw"], numbered=True) == (
        ["pan_left", "class_1", "zoom_in"], [0, 1])
    scanned = [replace(v, label=i, label_name=name)
               for i, (v, name) in enumerate(zip(videos, ["pan_left", "rotate_cw"]))]
    with pytest.raises(StoreError, match=r"this run has 1 it lacks \(\['rotate_cw'\]\)"):
        extract(scanned, mixed, _config(), classes=["pan_left", "rotate_cw"])


def _flat(sample_videos: Path, root: Path):
    """The sample videos directly under ``root`` (a Kinetics-like folder: no class folders, so
    scanned unlabelled) and the same items labelled by their old class folder, with the classes."""
    from dataclasses import replace

    root.mkdir()
    for path in sorted(sample_videos.rglob("*.mp4")):
        (root / path.name).write_bytes(path.read_bytes())
    bare, _ = scan_videos(root)
    classes = sorted({p.parent.name for p in sample_videos.rglob("*.mp4")})
    named = [replace(v, label=classes.index(v.key.rsplit("_", 1)[0]),
                     label_name=v.key.rsplit("_", 1)[0]) for v in bare]
    return bare, named, classes


def test_a_rerun_fills_in_the_labels_the_store_lacks_and_keeps_the_others(sample_videos,
                                                                          tmp_path):
    """A flat folder extracted without labels says its videos are unlabelled and how to label
    them; the same run with labels then writes them into the store in place (nothing recomputed,
    counted, the classes recorded, the index current), so training finds them. A rerun labelling
    a video otherwise keeps the stored label and says so. Before: all skipped, labels -1 kept
    silently, and `flowkit train` refused the store."""
    from dataclasses import replace

    bare, named, classes = _flat(sample_videos, tmp_path / "flat")
    path = tmp_path / "s"
    first = extract(bare, path, _config())
    assert first.count("done") == 4 and first.labels_filled == 0
    assert any(n.startswith("4 videos have no label") and "rerun with --annotations LIST" in n
               for n in first.notes), first.notes
    flows = {k: FlowStore(path).read_flow(k) for k in FlowStore(path).keys()}
    rerun = extract(named, path, _config(), classes=classes)
    assert [r.status for r in rerun.results] == ["skipped"] * 4 and rerun.pairs == 0
    assert rerun.labels_filled == 4 and rerun.to_dict()["labels_filled"] == 4
    assert any(n.startswith("4 labels filled in") for n in rerun.notes), rerun.notes
    assert not any("have no label" in n for n in rerun.notes)
    store = FlowStore(path)
    assert store.classes == classes and store.validate() == [] and store.partials() == []
    for v in named:
        meta = store.meta(v.key)
        assert (meta["label"], meta["label_name"]) == (v.label, v.label_name)
        np.testing.assert_array_equal(store.read_flow(v.key), flows[v.key])
    index = load_index(path)  # current for the relabelled files: nothing is read again
    assert {k: (e.stamp, e.meta["label"]) for k, e in index.items()} == \
        {v.key: (stamp(path / "videos" / f"{v.key}.h5"), v.label) for v in named}
    other = [replace(v, label=1 - v.label, label_name=classes[1 - v.label]) for v in named[:1]]
    kept = extract(other, path, _config(backward=True), classes=classes)
    assert kept.count("done") == 1 and kept.labels_filled == 0
    assert any(n.startswith(f"1 videos already in the store keep their stored label, not this "
                            f"run's (e.g. {named[0].key}: label {named[0].label} in the store")
               and "-o NEW_STORE" in n for n in kept.notes), kept.notes
    meta = FlowStore(path).meta(named[0].key)
    assert set(meta["flows"]) == {"tvl1", "tvl1_backward"}
    assert (meta["label"], meta["label_name"]) == (named[0].label, named[0].label_name)


def test_the_unlabelled_note_counts_only_videos_the_store_holds(sample_videos, tmp_path):
    """A flat folder of one good video and two that fail: the note on videos without a label
    counted and named the failed ones too, which are not in the store ("3 videos have no
    label", e.g. a failed one)."""
    import shutil

    root = tmp_path / "flat"
    root.mkdir()
    (root / "a_not_a_video.mp4").write_bytes(b"not a video")
    (root / "b_empty.mp4").write_bytes(b"")
    shutil.copy(sample_videos / "pan_left" / "pan_left_0.mp4", root / "good.mp4")
    videos, _ = scan_videos(root)
    summary = extract(videos, tmp_path / "s", _config())
    assert (summary.count("done"), summary.count("failed")) == (1, 2)
    notes = [n for n in summary.notes if "have no label" in n]
    assert len(notes) == 1 and notes[0].startswith("1 videos have no label") \
        and "e.g. good;" in notes[0], summary.notes
    again = extract(videos, tmp_path / "s", _config())  # skipped: in the store, still unlabelled
    assert [n for n in again.notes if "have no label" in n] == notes


def test_a_short_side_size_that_leaves_sizes_mixed_keeps_the_note_naming_hxw(tmp_path):
    """--size 32 sets the short side and keeps aspect ratios, so videos of other shapes are
    stored at other sizes; the note said "pass --size" and fell silent once --size was given.
    It now says that and names --size HxW; with HxW there is nothing to note."""
    for name, hw in (("a", (64, 80)), ("b", (64, 80)), ("c", (48, 80))):
        write_video(tmp_path / "v" / "k" / f"{name}.mp4", _moving_texture(3, hw=hw))
    videos, classes = scan_videos(tmp_path / "v")
    plain = extract(videos, tmp_path / "s0", _config(), classes=classes)
    assert [n.split(": ", 1)[1] for n in plain.notes] == [
        "stored at 48x80, unlike most videos (64x80); pass --size HxW (e.g. --size 64x80) to "
        "store all videos at one size"]
    short = extract(videos, tmp_path / "s1", _config(size=32), classes=classes)
    assert [n.split(": ", 1)[1] for n in short.notes] == [
        "stored at 32x53, unlike most videos (32x40): --size 32 sets the short side and keeps "
        "each video's aspect ratio; pass --size HxW (e.g. --size 32x40) to store all videos at "
        "one size"], short.notes
    assert str(videos[2].path) in short.notes[0]
    assert extract(videos, tmp_path / "s2", _config(size=(32, 40)), classes=classes).notes == []


def test_a_label_that_cannot_be_written_is_a_note_naming_the_redo(tmp_path):
    """A video held unlabelled whose file was damaged after indexing cannot take this run's
    label: the run says so and how to re-extract it (``--redo KEY``), not silently."""
    from flowkit.extract import settle_labels
    from flowkit.labels import VideoItem
    from test_store import make_video, write_video as write_stored

    store = FlowStore(tmp_path / "s.flowkit", mode="a", classes=["pan_left", "zoom"])
    rgb, flow = make_video(10)
    write_stored(store, "zoom/v", rgb, {"tvl1": flow})
    known = store.metas(["zoom/v"])
    (store.path / "videos" / "zoom" / "v.h5").write_bytes(b"not hdf5 any more")
    _, (filled, notes) = settle_labels(store, [VideoItem(Path("/x/zoom/v.mp4"), "zoom/v", 1,
                                                         "zoom")], known)
    assert filled == 0
    assert any("zoom/v.h5: its label could not be written" in n and "--redo zoom/v" in n
               for n in notes), notes


# ----------------------------------------------------------------------------- sharding

def test_shards_are_disjoint_and_cover_all(items, tmp_path):
    videos, classes = items
    path = tmp_path / "s"
    a = extract(videos, path, _config(), classes=classes, shard=(0, 2))
    b = extract(videos, path, _config(), classes=classes, shard=(1, 2))
    keys_a = {r.key for r in a.results}
    keys_b = {r.key for r in b.results}
    assert keys_a and keys_b and not keys_a & keys_b
    assert keys_a | keys_b == {v.key for v in videos}
    assert all(r.status == "done" for r in a.results + b.results)
    store = FlowStore(path)
    assert store.keys() == sorted(v.key for v in videos) and store.validate() == []


def test_rank_and_world_size_from_env(items, tmp_path, monkeypatch):
    videos, classes = items
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_from_env() == (1, 2)
    summary = extract(videos, tmp_path / "s", _config(), classes=classes)  # shard=None
    assert [r.key for r in summary.results] == [v.key for v in videos[1::2]]
    assert FlowStore(tmp_path / "s").keys() == [v.key for v in videos[1::2]]
    # An explicit shard under torchrun: this rank takes its part of that shard.
    other = extract(videos, tmp_path / "s", _config(), classes=classes, shard=(0, 2))
    assert [r.key for r in other.results] == [v.key for v in videos[0::2][1::2]]
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    alone = extract(videos, tmp_path / "s", _config(), classes=classes, shard=(0, 2))
    assert [r.key for r in alone.results] == [v.key for v in videos[0::2]]
    assert FlowStore(tmp_path / "s").keys() == sorted(v.key for v in videos)


def test_bad_shard_values(items, monkeypatch):
    videos, _ = items
    for shard in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(FlowkitError, match="invalid shard"):
            select_shard(videos, shard)
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(FlowkitError, match="RANK/WORLD_SIZE"):
        shard_from_env()


# ----------------------------------------------------------------------------- workers

@pytest.mark.slow
def test_two_workers_match_one(items, base_store, tmp_path):
    videos, classes = items
    summary = extract(videos, tmp_path / "s", _config(batch=3, workers=2), classes=classes)
    assert [r.key for r in summary.results] == [v.key for v in videos]  # input order kept
    assert all(r.status == "done" and r.pairs == T - 1 for r in summary.results)
    store, base = FlowStore(tmp_path / "s"), FlowStore(base_store[0])
    assert store.keys() == base.keys()
    assert store.validate() == [] and store.partials() == []
    for key in store.keys():
        np.testing.assert_array_equal(store.read_rgb(key), base.read_rgb(key))
        # Different torch thread counts may reorder float sums; float16 storage rounds to ~0.002.
        np.testing.assert_allclose(store.read_flow(key), base.read_flow(key), atol=0.01, rtol=0)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_video_name_too_long_for_the_store_fails_alone(sample_videos, tmp_path, workers):
    """A name whose claim file would be too long (the claim adds ~32 bytes) is one failed line,
    found before any video starts; it no longer ends the run when it enters the decode window
    (exit 2, no summary, the videos in flight lost and, with workers, the other workers'). Whether
    it fits does not depend on the pid of the process that would write it."""
    import shutil

    root = tmp_path / "videos"
    shutil.copytree(sample_videos, root)
    long = root / "pan_left" / ("m" + "x" * 240 + ".mp4")  # a legal file name, its .h5 too
    shutil.copy(root / "pan_left" / "pan_left_0.mp4", long)
    videos, classes = scan_videos(root)
    summary = extract(videos, tmp_path / "s", _config(workers=workers), classes=classes)
    status = {r.key: r for r in summary.results}
    failed = status[f"pan_left/{long.stem}"]
    assert failed.status == "failed" and str(long) in failed.reason
    assert "is too long" in failed.reason and "rename the video to at most" in failed.reason
    assert summary.count("done") == 4 and summary.count("failed") == 1 and not summary.stopped
    assert [r.key for r in summary.results] == [v.key for v in videos]
    store = FlowStore(tmp_path / "s")
    assert len(store.keys()) == 4 and store.partials() == []
    assert not list((tmp_path / "s" / "videos").rglob("*.claim*"))


@pytest.mark.slow  # worker processes take ~6 s to start
def test_max_memory_is_shared_by_the_workers(items, tmp_path):
    """--max-memory bounds the whole run, not each worker: with 2 workers and a budget of 4 pairs
    at the videos' size, each worker's engine calls take 2 pairs (4 would let the run use twice
    the memory asked for), and the note says so."""
    from flowkit.flow.tvl1 import TVL1

    videos, classes = items
    budget = 4 * TVL1.memory_per_pair(H, W)
    summary = extract(videos[:2], tmp_path / "s", _config(engine_params=dict(MINIMAL), batch=8,
                                                          workers=2, max_memory=budget),
                      classes=classes)
    assert summary.count("done") == 2, summary.results
    notes = [n for n in summary.notes if "pairs per engine call" in n]
    assert len(notes) == 1 and notes[0].startswith(
        f"{H}x{W} frames: 2 pairs per engine call instead of 8"), summary.notes


class _Conn:
    """A worker's end of the pipe that keeps what it sent."""

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def test_a_worker_reports_its_pairs_as_it_computes_them_a_few_times_a_second(items, tmp_path,
                                                                              monkeypatch):
    """A worker sent nothing until its video's result, so under --workers auto the bar, its rate
    and ETA froze for a whole video and a log had no line. It now reports the pairs of its engine
    calls as ``("pairs", n)``, at most every ``every`` seconds (the rest before the result)."""
    from flowkit import extract as extract_module
    from flowkit.extract import _PairReports, _worker_run, build_engine

    videos, classes = items
    config = _config(batch=3, engine_params=dict(MINIMAL))
    for key, value in (("store", FlowStore(tmp_path / "s", "a", classes=classes)),
                       ("engine", build_engine(config)), ("config", config)):
        monkeypatch.setitem(extract_module._worker, key, value)
    now = [0.0]

    def clock():  # one second per look
        now[0] += 1.0
        return now[0]

    conn = _Conn()
    results, fatal = _worker_run(videos[0], _PairReports(conn, every=0.5, clock=clock))
    assert fatal is None and [r.pairs for r in results] == [T - 1], results
    assert conn.sent == [("pairs", 3), ("pairs", 3), ("pairs", 1)]  # each engine call

    conn, still = _Conn(), lambda: 0.0  # no time passes: nothing is due until the flush
    reports = _PairReports(conn, every=0.5, clock=still)
    _worker_run(videos[1], reports)
    assert conn.sent == []
    reports.flush()
    assert conn.sent == [("pairs", T - 1)]


def test_a_worker_sends_every_pair_before_the_videos_result(monkeypatch):
    """The pairs a worker has not reported yet go to the parent before its video's result, which
    counts none, so a --workers run's "frame pairs" bar ends at the summary's pairs (sent after
    the result, or never for a worker's last video, they were left out: 90 of 120)."""
    from flowkit import extract as extract_module

    class Pipe(_Conn):
        def __init__(self, items):
            super().__init__()
            self.items = list(items)

        def recv(self):
            return self.items.pop(0)

    def run(item, reports):
        reports(5)  # too soon after the flush before the video to be sent on its own
        return [], None

    monkeypatch.setattr(extract_module, "_worker_init", lambda *args: None)
    monkeypatch.setattr(extract_module, "_worker_run", run)
    conn = Pipe(["video", None])
    extract_module._worker_main(conn, "store", None, 1, 0, {})
    assert conn.sent == [("ready", None), ("pairs", 5), ("result", ([], None))]


def test_the_parent_counts_the_pairs_workers_report_once(items):
    """The pairs a worker reports move the bar as they come; its result, which follows them,
    adds none (it counted them before)."""
    from flowkit.extract import _serve
    from flowkit.feed import VideoResult

    videos, _ = items

    class Worker:
        item, pairs, replacement = videos[0], 0, False

        def messages(self):
            return [("pairs", 4), ("pairs", 3),
                    ("result", ([VideoResult(videos[0].key, "v.mp4", "done", pairs=7)], None))]

    counted, worker = [], Worker()
    results = list(_serve(worker, counted.append))
    assert counted == [4, 3] and [r.pairs for r in results] == [7]
    assert worker.item is None


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """One 64x80 video long enough that a worker reports its pairs several times before its end
    (about 2 s of cheap TV-L1 on one core)."""
    root = tmp_path_factory.mktemp("long_one")
    write_video(root / "clip" / "long.mp4", _moving_texture(200, hw=(H, W)))
    return root


class _PairsWatch(Progress):
    """Keeps, for each change of the frame pairs, ``(videos done, pairs)``, and counts the
    refreshes while no video is done."""

    def __init__(self):
        self.videos, self.pairs, self.refreshes = 0, [], 0

    def _changed(self, task):
        if task.description == "videos":
            self.videos = task.completed
        elif task.description == "frame pairs":
            self.pairs.append((self.videos, task.completed))

    def _refreshed(self, task):
        self.refreshes += not self.videos


@pytest.mark.slow  # a worker process takes ~6 s to start
def test_with_workers_the_pairs_move_and_lines_come_while_a_long_video_runs(long_video,
                                                                            tmp_path):
    """Under --workers (auto: the default) the pairs advanced only when a whole video finished:
    `frame pairs 11/?` for a minute, then 1510, and a log no line. Now the bar counts the pairs
    before the video's end, and the run's poll refreshes the display meanwhile (a log line every
    FLOWKIT_PROGRESS_SECONDS even while no pair is reported)."""
    videos, classes = scan_videos(long_video)
    watch = _PairsWatch()
    summary = extract(videos, tmp_path / "s", _config(workers=2), classes=classes,
                      progress=watch)
    assert summary.count("done") == 1 and summary.pairs == 199
    before_end = [pairs for done, pairs in watch.pairs if done == 0]
    assert any(0 < pairs < 199 for pairs in before_end), watch.pairs
    assert watch.refreshes > 0


@pytest.mark.slow
def test_a_stop_counts_the_video_a_worker_held_in_progress(long_video, tmp_path):
    """With workers too, a stop mid video counts it in progress with the pairs it reported."""
    from flowkit.progress import Progress, StopFlag, Stopped

    stop = StopFlag()

    class StopAtFirstPairs(Progress):
        def _changed(self, task):
            if task.description == "frame pairs" and task.completed:
                stop.set("terminated")

    videos, classes = scan_videos(long_video)
    with pytest.raises(Stopped) as stopped:
        extract(videos, tmp_path / "s", _config(workers=2), classes=classes,
                progress=StopAtFirstPairs(), stop=stop)
    summary = stopped.value.summary
    assert (summary.in_progress, summary.not_started, summary.results) == (1, 0, [])
    assert 0 < summary.discarded_pairs < 199


def test_a_sharded_runs_pairs_bar_has_the_plans_total_and_ends_at_its_count(items, tmp_path):
    """A shard's plan already holds each video's expected pairs (header frame counts): the pairs
    task takes their sum as its total instead of none, and ends at the pairs counted."""
    from test_store import TaskRecorder

    videos, classes = items
    progress = TaskRecorder()
    summary = extract(videos, tmp_path / "s", _config(), classes=classes, shard=(0, 2),
                      progress=progress)
    share = len(summary.results)
    assert 1 <= share < len(videos) and summary.count("done") == share
    steps = [s for s in progress.steps if s[0] == "frame pairs"]
    assert steps[0][2] == share * (T - 1), steps
    assert ("frame pairs", share * (T - 1), share * (T - 1)) in progress.tasks


def test_an_estimated_pairs_total_never_makes_the_bar_lie():
    """The plan's counts are estimates (a header that declares frames it lacks, sizes from file
    bytes): each video's yield replaces its estimate when it ends, the total never shows fewer
    pairs than counted, and a run that ends is at its count, not short of or past it."""
    from flowkit.extract import _PairsBar
    from flowkit.feed import VideoResult
    from flowkit.labels import VideoItem
    from flowkit.shards import ShardPlan
    from test_store import TaskRecorder

    todo = [VideoItem(Path(f"/v/{k}.mp4"), k, -1, "") for k in ("a", "b", "c")]
    plan = ShardPlan([todo], {"a": 10, "b": 10, "c": 10})
    progress = TaskRecorder()
    bar = _PairsBar(progress, todo, plan)
    assert bar.task.total == 30
    bar.advance(12)  # a is longer than its header said
    bar.ended(VideoResult("a", "/v/a.mp4", "done", pairs=12))
    assert (bar.task.completed, bar.task.total) == (12, 32)
    bar.advance(4)
    bar.ended(VideoResult("b", "/v/b.mp4", "failed"))  # its pairs will never come
    assert bar.task.total == 22
    bar.advance(3)  # c is shorter
    bar.ended(VideoResult("c", "/v/c.mp4", "done", pairs=3))
    assert bar.task.total == 19 and bar.task.completed == 19
    bar.close(finished=True)
    assert progress.tasks == [("frame pairs", 19, 19)]
    plain = _PairsBar(TaskRecorder(), todo, ShardPlan([todo], {"a": 1}, basis="file size"))
    assert plain.task.total is None  # bytes are no pairs


def test_a_stopped_runs_pairs_bar_keeps_the_plans_total():
    """A run stopped (Ctrl-C, --max-hours) part way shows how far it got of the plan: its bar
    closes at 42 of 120 pairs, not at 42 of 42 as if it had done all its videos."""
    from flowkit.extract import _PairsBar
    from flowkit.feed import VideoResult
    from flowkit.labels import VideoItem
    from flowkit.shards import ShardPlan
    from test_store import TaskRecorder

    todo = [VideoItem(Path(f"/v/{k}.mp4"), k, -1, "") for k in "abcd"]
    progress = TaskRecorder()
    bar = _PairsBar(progress, todo, ShardPlan([todo], {k: 30 for k in "abcd"}))
    bar.advance(30)
    bar.ended(VideoResult("a", "/v/a.mp4", "done", pairs=30))
    bar.advance(12)  # stopped part way through b
    bar.close(finished=False)
    assert progress.tasks == [("frame pairs", 42, 120)]


def _with_worker_roles(monkeypatch, tmp_path, roles: str) -> None:
    """Workers started from now on play ``roles`` (tests/worker_faults.py), in start order."""
    from flowkit import extract as extract_module

    starts = tmp_path / "worker_starts"
    starts.mkdir()
    monkeypatch.setenv(worker_faults.ROLES, roles)
    monkeypatch.setenv(worker_faults.STARTS, str(starts))
    monkeypatch.setattr(extract_module, "_worker_main", worker_faults.worker_main)


def _lost_while_extracting(summary) -> int:
    """Videos failed because their worker died: the parent most often hands a worker its next
    video before it sees that worker die (the video then fails, named)."""
    return sum(r.status == "failed" and "while extracting it" in r.reason
               for r in summary.results)


@pytest.mark.slow
def test_a_worker_killed_between_videos_is_replaced(items, tmp_path, monkeypatch):
    """Both workers are killed right after sending their first result, before the parent hands
    them the next video (the out-of-memory killer between two videos): each is replaced, and the
    run finishes every video. Before, a worker that held no video when it died was taken for one
    that never started: not replaced, and with both gone the run stopped, videos never started."""
    from flowkit.extract import _Worker

    _with_worker_roles(monkeypatch, tmp_path, "dies_after_result,dies_after_result,ok")
    give = _Worker.give

    def slow_give(self, pending):  # the parent is busy a moment: the kill comes first
        if self.taken:
            self.process.join(5.0)
        give(self, pending)

    monkeypatch.setattr(_Worker, "give", slow_give)
    videos, classes = items
    summary = extract(videos, tmp_path / "s", _config(workers=2), classes=classes)
    assert summary.stopped == "" and summary.not_started == 0, summary.stopped
    assert [r.status for r in summary.results] == ["done"] * len(videos), summary.results
    replaced = [n for n in summary.notes if "between videos; a new one took its place" in n]
    assert len(replaced) == 2 and all("killed by signal 9" in n for n in replaced), summary.notes
    assert FlowStore(tmp_path / "s").partials() == []


@pytest.mark.slow
def test_a_replacement_that_cannot_start_leaves_the_run_to_the_others(items, tmp_path,
                                                                      monkeypatch):
    """The worker that took a dead one's place cannot start (its engine build fails: memory the
    dead one held not free yet): a note, and the other worker finishes the videos. Before, that
    ended the whole run with an error."""
    _with_worker_roles(monkeypatch, tmp_path,
                       "dies_after_result,waits_for_failed_start,cannot_start")
    videos, classes = items
    summary = extract(videos, tmp_path / "s", _config(workers=2), classes=classes)
    assert summary.stopped == "" and len(summary.results) == len(videos)
    assert summary.count("done") + _lost_while_extracting(summary) == len(videos)
    assert _lost_while_extracting(summary) <= 1
    assert f"a new worker process could not start ({worker_faults.CANNOT_START}); the run went " \
           "on with 1 worker(s)" in summary.notes, summary.notes


@pytest.mark.slow
def test_no_worker_left_stops_the_run_and_counts_what_did_not_start(items, tmp_path,
                                                                    monkeypatch):
    """Every worker dies before taking a video: the run stops (as on a full disk: the CLI exits
    1), says why, and the summary counts the videos never started."""
    _with_worker_roles(monkeypatch, tmp_path, "dies_at_start")
    videos, classes = items
    summary = extract(videos, tmp_path / "s", _config(workers=2), classes=classes)
    assert summary.stopped.startswith(f"no worker process is left to extract the {len(videos)} "
                                      "videos not started (the last: worker process "), \
        summary.stopped
    assert "killed by signal 9" in summary.stopped
    assert summary.results == [] and summary.not_started == len(videos)
    assert sum("before taking a video" in n for n in summary.notes) == 2, summary.notes


def _stopping_at_first(stop, description: str) -> Progress:
    """A Progress that asks ``stop`` to stop ("terminated", as SIGTERM does) once the task
    ``description`` counts its first unit."""
    class StopAtFirst(Progress):
        def _changed(self, task):
            if task.description == description and task.completed:
                stop.set("terminated")

    return StopAtFirst()


def test_a_stop_raises_stopped_carrying_the_summary_of_what_finished(items, tmp_path):
    """A stop request (Ctrl-C, SIGTERM) still raises Stopped, now with the summary of the videos
    that finished: `flowkit extract --json` printed nothing on stdout for a run Slurm stopped."""
    from flowkit.progress import StopFlag, Stopped

    stop = StopFlag()
    videos, classes = items
    with pytest.raises(Stopped) as stopped:
        extract(videos, tmp_path / "s", _config(), classes=classes,
                progress=_stopping_at_first(stop, "videos"), stop=stop)
    summary = stopped.value.summary
    assert summary.interrupted and summary.stopped == "terminated"
    done = [r.key for r in summary.results if r.status == "done"]
    assert 1 <= len(done) < len(videos)
    assert summary.not_started + summary.in_progress == len(videos) - len(done)
    # A video committed while the stop came has its result too: done is what the store holds.
    assert set(done) == set(FlowStore(tmp_path / "s").keys())
    d = summary.to_dict()
    assert d["interrupted"] is True and d["done"] == len(done)
    assert extract(videos, tmp_path / "s", _config(), classes=classes).interrupted is False


def test_a_stop_mid_video_counts_it_in_progress_with_its_pairs_not_as_not_started(items,
                                                                                tmp_path):
    """SIGTERM while a video is computed discards its pairs (a rerun restarts it): the summary
    said "1 videos not started" and 0 pairs, hiding the work lost. It is now counted apart, with
    the pairs discarded; "not_started" keeps the videos never begun."""
    from flowkit.progress import StopFlag, Stopped

    stop = StopFlag()
    videos, classes = items
    with pytest.raises(Stopped) as stopped:
        extract(videos, tmp_path / "s", _config(batch=3), classes=classes,
                progress=_stopping_at_first(stop, "frame pairs"), stop=stop)
    summary = stopped.value.summary
    assert summary.results == [] and FlowStore(tmp_path / "s").keys() == []
    assert (summary.in_progress, summary.discarded_pairs) == (1, 3)  # its first batch
    assert summary.not_started == len(videos) - 1
    d = summary.to_dict()
    assert (d["in_progress"], d["discarded_pairs"], d["not_started"]) == (1, 3, len(videos) - 1)


def test_a_finished_video_named_to_the_old_limit_is_skipped_not_failed(sample_videos, tmp_path,
                                                                        monkeypatch):
    """Names are checked with the widest pid now; a video extracted by an older flowkit, whose
    check used its own (shorter) pid, is finished: a rerun skips it as before (exit 0), and only a
    video still to compute fails for its name."""
    import shutil

    from flowkit.store import claims, flowstore

    root = tmp_path / "videos"
    shutil.copytree(sample_videos, root)

    def fits(stem: str) -> bool:
        try:
            FlowStore.check_writable_key(f"pan_left/{stem}", "tvl1")
        except StoreError:
            return False
        return True

    for mod in (claims, flowstore):  # the older check: this process's pid
        monkeypatch.setattr(mod, "WIDEST_PID", os.getpid())
    stem = "m"
    while fits(stem + "x"):
        stem += "x"
    long = root / "pan_left" / f"{stem}.mp4"
    shutil.copy(root / "pan_left" / "pan_left_0.mp4", long)
    videos, classes = scan_videos(root)
    first = extract(videos, tmp_path / "s", _config(), classes=classes)
    assert first.count("done") == 5, first.results
    monkeypatch.undo()
    assert os.getpid() < 10 ** 6 and not fits(stem)  # too long for the widest pid
    again = extract(videos, tmp_path / "s", _config(), classes=classes)
    assert [r.status for r in again.results] == ["skipped"] * 5, again.results


def test_videos_another_process_holds_are_not_counted_as_in_the_store(items, tmp_path):
    """A video another live process (here on another host) has claimed is skipped, and the
    summary says it is being extracted elsewhere: it is not in the store yet."""
    import json

    from rich.console import Console

    from flowkit.cli.extract import _print_summary
    from flowkit.store.layout import now

    videos, classes = items
    extract(videos[:1], tmp_path / "s", _config(), classes=classes)
    claim = tmp_path / "s" / "videos" / f"{videos[1].key}.h5.tvl1.claim"
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(json.dumps({"host": "node-17", "pid": 4242, "since": now()}))
    summary = extract(videos, tmp_path / "s", _config(), classes=classes)
    assert [r.status for r in summary.results] == ["skipped", "skipped", "done", "done"]
    assert [r.held for r in summary.results] == [False, True, False, False]
    d = summary.to_dict()
    assert (d["done"], d["skipped"], d["held"], d["failed"]) == (2, 2, 1, 0)
    console = Console(record=True, width=250)
    _print_summary(console, summary)
    line = console.export_text().splitlines()[0]
    assert line.startswith("2 done, 1 skipped (already in the store), 1 skipped (being extracted "
                           "by another process"), line


# ----------------------------------------------------------------------------- bad input

BAD_CAUSES = {
    "empty": "empty file",
    "text": "not a video",
    "audio_only": "no video stream",
    "truncated": "truncated",
    "truncated_faststart": "truncated",
    "truncated_mkv": "truncated",
    "one_frame": "only 1 frame",
}
GOOD = {"good_0": (24, 64, 80), "good_1": (24, 64, 80), "odd_size": (12, 45, 61)}


def test_bad_videos_fail_one_by_one_and_the_rest_is_done(bad_videos, tmp_path):
    videos, classes = scan_videos(bad_videos.root)
    assert classes == ["classA", "classB"]
    by_name = {Path(v.path).stem: v for v in videos}
    assert set(by_name) == set(BAD_CAUSES) | set(GOOD)  # notes.txt is not a video
    summary = extract(videos, tmp_path / "s", _config(), classes=classes)
    results = {Path(r.source).stem: r for r in summary.results}
    assert len(summary.results) == len(videos)
    for name, cause in BAD_CAUSES.items():
        r = results[name]
        assert r.status == "failed", (name, r)
        assert str(bad_videos.paths[name]) in r.reason and cause in r.reason, (name, r.reason)
        assert "\n" not in r.reason
    for name, (frames, h, w) in GOOD.items():
        r = results[name]
        assert r.status == "done", (name, r.reason)
        assert (r.frames, r.pairs, r.size) == (frames, frames - 1, (h, w))
    assert summary.count("failed") == len(BAD_CAUSES) and summary.count("done") == len(GOOD)
    # The odd-size video is stored at its own size, and the summary says so.
    assert len(summary.notes) == 1
    assert str(bad_videos.paths["odd_size"]) in summary.notes[0] and "45x61" in summary.notes[0]
    store = FlowStore(tmp_path / "s")
    assert store.keys() == sorted(by_name[n].key for n in GOOD)
    assert store.validate() == [] and store.partials() == []
    assert store.read_flow(by_name["odd_size"].key).shape == (11, 2, 45, 61)
    # With --size every video is stored at one size, and there is nothing to note.
    sized = extract(videos, tmp_path / "s2", _config(size=(32, 40)), classes=classes)
    assert sized.notes == [] and sized.count("done") == len(GOOD)


# ----------------------------------------------------------------------------- long video, memory

LONG_FRAMES, SHORT_FRAMES, LONG_HW = 2000, 200, (96, 128)


def _moving_texture(n: int, hw=LONG_HW, seed: int = 0):
    """A smooth random texture scrolling 1 px/frame to the left, generated lazily."""
    rng = np.random.default_rng(seed)
    h, w = hw
    texture = cv2.GaussianBlur(rng.integers(0, 256, (h, 4 * w, 3), dtype=np.uint8), (0, 0), 1.5)
    for t in range(n):
        yield np.ascontiguousarray(np.roll(texture, -t, axis=1)[:, :w])


@pytest.fixture(scope="session")
def long_and_short_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("long_videos")
    write_video(root / "long" / "clip" / "long.mp4", _moving_texture(LONG_FRAMES))
    write_video(root / "short" / "clip" / "short.mp4", _moving_texture(SHORT_FRAMES))
    return root / "long", root / "short"


def _peak_rss_kib(args: list[str]) -> int:
    """Peak RSS (KiB) of `python -m flowkit ARGS`, measured in a fresh wrapper process so that
    RUSAGE_CHILDREN covers exactly that one child."""
    wrapper = textwrap.dedent("""
        import json, resource, subprocess, sys
        r = subprocess.run([sys.executable, "-m", "flowkit", *sys.argv[1:]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        print(json.dumps({"rc": r.returncode, "stderr": r.stderr[-2000:],
                          "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
    """)
    import json
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True,
                         timeout=900, check=True, env=env)
    result = json.loads(out.stdout)
    assert result["rc"] == 0, result["stderr"]
    return result["maxrss"]


@pytest.mark.slow
def test_long_video_memory_is_bounded(long_and_short_videos, tmp_path):
    long_dir, short_dir = long_and_short_videos
    params = [a for k, v in MINIMAL.items() for a in ("--param", f"{k}={v}")]
    common = ["--no-compile", "--batch", "8", *params]
    short_rss = _peak_rss_kib(["extract", str(short_dir), "-o", str(tmp_path / "short"), *common])
    long_rss = _peak_rss_kib(["extract", str(long_dir), "-o", str(tmp_path / "long"), *common])

    h, w = LONG_HW
    decoded_kib = LONG_FRAMES * h * w * 3 // 1024            # 72,000 KiB of RGB frames
    flow_kib = (LONG_FRAMES - 1) * 2 * h * w * 4 // 1024     # 191,904 KiB of float32 flow
    growth = long_rss - short_rss
    print(f"peak RSS short={short_rss} KiB long={long_rss} KiB growth={growth} KiB; "
          f"decoded RGB of the long video={decoded_kib} KiB, its float32 flow={flow_kib} KiB")
    # Measured (1 torch thread, minimal TV-L1, 96x128): peak RSS 345 MB for 200 frames, 360 MB
    # for 2000 (growth 14.6 MB), 364 MB for 4000 (growth from 2000 to 4000 only 3.9 MB: it
    # saturates, allocator/HDF5 metadata, not per-frame data; the same with --no-rgb). Holding
    # the decoded video would add 72 MB, its float32 flow 192 MB. Bound: half the decoded RGB.
    assert growth < decoded_kib // 2, (short_rss, long_rss, decoded_kib)

    store = FlowStore(tmp_path / "long")
    assert store.keys() == ["clip/long"] and store.validate() == []
    meta = store.meta("clip/long")
    assert meta["frame_count"] == LONG_FRAMES
    assert meta["flows"]["tvl1"]["shape"] == [LONG_FRAMES - 1, 2, h, w]
    last = store.read_flow("clip/long", index=LONG_FRAMES - 2)
    assert np.isfinite(last).all() and last.shape == (2, h, w)
    assert store.read_rgb("clip/long", index=-1).shape == (h, w, 3)


def _rawframes_bytes(store: FlowStore, bound: float = 20.0, quality: int = 95) -> tuple[float, float]:
    """Bytes per RGB frame and per flow pair of mmaction2/denseflow rawframes of a store's videos:
    img_*.jpg at ``quality``, flow_x/flow_y_*.jpg of flow clipped to +-bound in 8 bits."""
    rgb_bytes, flow_bytes, frames, pairs = 0, 0, 0, 0
    jpeg = lambda image: len(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1])
    for key in store.keys():
        for frame in store.read_rgb(key):
            rgb_bytes += jpeg(np.ascontiguousarray(frame[..., ::-1]))
            frames += 1
        for flow in store.read_flow(key, "tvl1"):
            q = np.rint((np.clip(flow, -bound, bound) + bound) * 255 / (2 * bound)).astype(np.uint8)
            flow_bytes += jpeg(q[0]) + jpeg(q[1])
            pairs += 1
    return rgb_bytes / frames, flow_bytes / pairs


def test_default_store_is_no_larger_than_rawframes_and_its_flow_error_is_bounded(items, tmp_path):
    """The default codecs (jpegls flow at 0.1 px, JPEG q95 RGB) against mmaction2 rawframes of the
    same frames and flow (TV-L1 at OpenCV's defaults: converged flow, as users store it; the cheap
    schedule's unconverged noise codes larger), per frame of coded data. Whole files, HDF5 overhead
    included, on longer videos: benchmarks/results/store_codecs.md."""
    videos, classes = items
    stores = {}
    for name, codecs in (("compact", {}), ("lossless", {"flow_codec": "float16", "rgb_codec": "raw"})):
        extract(videos, tmp_path / name, ExtractConfig(compile=False, batch=3, **codecs),
                classes=classes)
        stores[name] = FlowStore(tmp_path / name)
    compact, lossless = stores["compact"], stores["lossless"]
    summary = compact.summary()
    assert summary["quantization"] == {"tvl1": ["jpegls (max error 0.1 px)"]}
    assert summary["rgb_codec"] == ["jpeg (quality 95)"]
    ours = summary["bytes_per_rgb_frame"] + summary["bytes_per_flow_pair"]["tvl1"]
    rawframes = sum(_rawframes_bytes(lossless))
    print(f"bytes per frame: flowkit default {ours:.0f}, rawframes {rawframes:.0f}")
    assert ours <= rawframes  # measured 3594 vs 4021 on these videos
    for key in compact.keys():
        exact = lossless.read_flow(key, "tvl1")  # float16 of the same flow: within 4e-3 px here
        assert np.abs(compact.read_flow(key, "tvl1") - exact).max() <= 0.1 + 4e-3
    assert 0 < summary["max_error_seen"]["tvl1"] <= 0.1
    assert compact.validate(deep=True) == []
