"""FlowStore: round trips, lazy reads, metadata, crash safety, multi-process reading, errors."""
from __future__ import annotations

import dataclasses
import errno
import json
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch

from flowkit.errors import DamagedDataError, FlowkitError, StoreError
from flowkit.files import host_name
from flowkit.progress import Progress
from flowkit.files import stamp as file_stamp
from flowkit.store import FORMAT, VERSION, VIDEO_VERSION, FlowStore, dequantize, quantize
from flowkit.store.index import load_index

ENGINE = {"engine": "tvl1", "version": "1", "params": {"tau": 0.25, "warps": 5}}


def make_video(seed: int, frames: int = 6, height: int = 12, width: int = 16, scale: float = 6.0):
    """Deterministic rgb (T, H, W, 3) uint8 and flow (T-1, 2, H, W) float32 (float16-exact)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    flow = (rng.normal(0, scale, (frames - 1, 2, height, width))).astype(np.float16)
    return rgb, flow.astype(np.float32)


def write_video(store, key, rgb=None, flows=None, engine=ENGINE, batch=2, **kw):
    """Lossless codecs unless the test names others: these tests check exact round trips. A
    ``*_backward`` flow is recorded as backward flow (the writer refuses it otherwise)."""
    kw.setdefault("source", f"/data/{key}.mp4")
    kw.setdefault("fps", 25.0)
    kw.setdefault("flow_codec", "float16")
    kw.setdefault("rgb_codec", "raw")
    with store.writer(key, **kw) as w:
        if rgb is not None:
            for i in range(0, len(rgb), batch):
                w.append_rgb(rgb[i:i + batch])
        for name, flow in (flows or {}).items():
            record = {**engine, "direction": "backward"} if name.endswith("_backward") else engine
            for i in range(0, len(flow), batch):
                w.append_flow(name, flow[i:i + batch], record if i == 0 else None)


class TaskRecorder(Progress):
    """A Progress that records each step (``steps``) and each closed task (``tasks``) as
    ``(description, completed, total)``."""

    def __init__(self):
        super().__init__()
        self.steps, self.tasks = [], []

    def _changed(self, task):
        self.steps.append((task.description, task.completed, task.total))

    def _closed(self, task):
        self.tasks.append((task.description, task.completed, task.total))


@pytest.fixture
def store(tmp_path):
    return FlowStore(tmp_path / "s.flowkit", mode="a", classes=["pan_left", "zoom"])


# ----------------------------------------------------------------------------- round trips

def test_round_trip_rgb_and_float16_flow(store):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 12, 16, 3), dtype=np.uint8)
    flow = rng.normal(0, 8, (6, 2, 12, 16)).astype(np.float32)
    write_video(store, "pan_left/v0", rgb, {"tvl1": torch.from_numpy(flow)}, label=0,
                label_name="pan_left")

    back = FlowStore(store.path)
    assert back.keys() == ["pan_left/v0"]
    np.testing.assert_array_equal(back.read_rgb("pan_left/v0"), rgb)
    out = back.read_flow("pan_left/v0")
    assert out.dtype == np.float32 and out.shape == (6, 2, 12, 16)
    assert np.all(np.abs(out - flow) <= 1e-3 * np.abs(flow) + 1e-6)
    assert back.read_flow("pan_left/v0", dequantize=False).dtype == np.float16


def test_round_trip_uint8_quantised_flow(store):
    bound = 20.0
    rng = np.random.default_rng(2)
    flow = rng.uniform(-30, 30, (4, 2, 10, 12)).astype(np.float32)
    write_video(store, "q", flows={"tvl1": flow}, flow_codec=f"uint8:{bound}")

    out = store.read_flow("q")
    inside = np.abs(flow) <= bound
    assert np.abs(out - flow)[inside].max() <= bound / 255 + 1e-5
    np.testing.assert_allclose(out[flow > bound + 1], bound, atol=1e-5)
    np.testing.assert_allclose(out[flow < -bound - 1], -bound, atol=1e-5)
    raw = store.read_flow("q", dequantize=False)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, quantize(flow, bound))
    np.testing.assert_allclose(dequantize(raw, bound), out, atol=1e-6)
    attrs = store.meta("q")["flows"]["tvl1"]
    assert attrs["quantization"] == "uint8" and attrs["bound"] == bound
    assert attrs["scale"] == pytest.approx(2 * bound / 255) and attrs["offset"] == -bound


def test_lazy_partial_reads(store):
    rgb, flow = make_video(3, frames=8)
    write_video(store, "zoom/v1", rgb, {"tvl1": flow})
    read = store.read_flow
    np.testing.assert_array_equal(read("zoom/v1", index=3), flow[3])
    np.testing.assert_array_equal(read("zoom/v1", index=-1), flow[-1])
    np.testing.assert_array_equal(read("zoom/v1", index=slice(2, 5)), flow[2:5])
    np.testing.assert_array_equal(read("zoom/v1", index=slice(None, None, 3)), flow[::3])
    np.testing.assert_array_equal(read("zoom/v1", index=slice(None, None, -2)), flow[::-2])
    np.testing.assert_array_equal(read("zoom/v1", index=[0, 2, 6]), flow[[0, 2, 6]])
    np.testing.assert_array_equal(read("zoom/v1", index=[5, 1, 1]), flow[[5, 1, 1]])
    np.testing.assert_array_equal(read("zoom/v1", index=np.array([4])), flow[[4]])
    assert read("zoom/v1", index=[]).shape == (0, 2, 12, 16)
    np.testing.assert_array_equal(store.read_rgb("zoom/v1", index=[1, 7]), rgb[[1, 7]])
    np.testing.assert_array_equal(store.read_rgb("zoom/v1", index=0), rgb[0])
    with pytest.raises(IndexError, match="out of range"):
        read("zoom/v1", index=7)
    with pytest.raises(IndexError, match="out of range"):
        read("zoom/v1", index=[0, 9])
    # one past the end (7 pairs, 8 frames) is out of range too, never wrapped round to frame 0
    with pytest.raises(IndexError, match="out of range for 7 frames of /flow/tvl1"):
        read("zoom/v1", index=[7])
    with pytest.raises(IndexError, match="out of range for 8 frames of /rgb"):
        store.read_rgb("zoom/v1", index=[0, 8])


def test_bad_index_is_the_callers_mistake_not_damaged_data(store):
    """A caller's bad index says so (ValueError / IndexError) before anything is read; it never
    tells the user to re-extract a healthy video."""
    rgb, flow = make_video(4, frames=6)
    write_video(store, "zoom/v", rgb, {"tvl1": flow}, rgb_codec="jpeg")
    for index in (slice(None, None, 0), slice(0, 3, 0)):
        with pytest.raises(ValueError, match="video 'zoom/v': slice step cannot be zero"):
            store.read_flow("zoom/v", index=index)
        with pytest.raises(ValueError, match="slice step cannot be zero"):
            store.read_rgb("zoom/v", index=index)
    with pytest.raises(IndexError, match="a list of ints"):
        store.read_flow("zoom/v", index=[[0, 1]])
    np.testing.assert_array_equal(store.read_flow("zoom/v", index=slice(9, 2, -3)), flow[9:2:-3])


def test_empty_selection_keeps_the_frame_dtype(store):
    """No frames is an empty array of the frames' dtype: uint8 RGB, float32 flow, whatever the
    codec."""
    rgb, flow = make_video(5, frames=4, height=8, width=10)
    write_video(store, "zoom/j", rgb, {"tvl1": flow}, rgb_codec="jpeg", flow_codec="jpegls")
    write_video(store, "zoom/r", rgb, {"tvl1": flow})  # raw, float16
    for key in ("zoom/j", "zoom/r"):
        for index in ([], slice(2, 2)):
            frames = store.read_rgb(key, index)
            assert (frames.dtype, frames.shape) == (np.uint8, (0, 8, 10, 3)), key
            pairs = store.read_flow(key, index=index)
            assert (pairs.dtype, pairs.shape) == (np.float32, (0, 2, 8, 10)), key


def test_metadata(store):
    rgb, flow = make_video(4, frames=5, height=8, width=10)
    write_video(store, "zoom/v2", rgb, {"tvl1": flow}, source="/videos/zoom/v2.avi", fps=29.97,
                label=1, label_name="zoom", source_size=(240, 320), step=2)
    meta = store.meta("zoom/v2")
    json.dumps(meta)
    expected = {"format": "flowkit-video", "version": VIDEO_VERSION, "key": "zoom/v2", "complete": True,
                "source": "/videos/zoom/v2.avi", "fps": 29.97, "frame_count": 5, "height": 8,
                "width": 10, "source_height": 240, "source_width": 320, "step": 2, "label": 1,
                "label_name": "zoom", "has_rgb": True, "num_frames": 5}
    assert {k: meta[k] for k in expected} == expected
    assert meta["created"].startswith("20")
    tvl1 = meta["flows"]["tvl1"]
    assert tvl1["engine"] == "tvl1" and tvl1["engine_version"] == "1"
    assert tvl1["params"] == ENGINE["params"] and tvl1["quantization"] == "float16"
    assert tvl1["shape"] == [4, 2, 8, 10] and tvl1["dtype"] == "float16"
    store.close()  # HDF5 refuses a second open of one file with other locking flags
    with h5py.File(store.path / "videos/zoom/v2.h5", "r") as f:  # the on-disk contract
        ds = f["flow/tvl1"]
        assert ds.chunks == (1, 2, 8, 10) and ds.maxshape == (None, 2, 8, 10)
        assert ds.compression == "gzip" and ds.shuffle
        assert json.loads(ds.attrs["params"]) == ENGINE["params"]
        assert f["rgb"].chunks == (1, 8, 10, 3)


def test_several_flow_names_side_by_side(store):
    rgb, flow = make_video(5)
    other = {"engine": "costvolume", "version": "3", "params": {"radius": 4}}
    with store.writer("zoom/both", source="x", fps=25, flow_codec="float16") as w:
        w.append_rgb(rgb)
        w.append_flow("tvl1", flow, ENGINE)
        w.append_flow("other", -flow, other)
    assert store.flow_names("zoom/both") == ["other", "tvl1"]
    np.testing.assert_array_equal(store.read_flow("zoom/both", "tvl1"), flow)
    np.testing.assert_array_equal(store.read_flow("zoom/both", "other"), -flow)
    assert store.meta("zoom/both")["flows"]["other"]["params"] == {"radius": 4}
    summary = store.summary()
    assert summary["flow_pairs"] == {"other": 5, "tvl1": 5}
    assert summary["engines"]["other"] == {"engine": "costvolume", "version": "3",
                                           "params": {"radius": 4}}
    with pytest.raises(StoreError, match="has no flow 'missing'; it has: other, tvl1"):
        store.read_flow("zoom/both", "missing")


def test_fill_labels_writes_a_missing_label_through_a_new_file(store):
    """A video stored unlabelled (-1) takes a label in place, nothing recomputed: a copy with the
    new label replaces its file (a reader holding the old one keeps reading it), and the index is
    current at once. A labelled video keeps its label; an id beyond the classes is refused; a file
    that cannot be read fails alone, naming --redo."""
    rgb, flow = make_video(9)
    write_video(store, "flat_a", rgb, {"tvl1": flow})
    write_video(store, "flat_b", rgb, {"tvl1": flow}, label=0, label_name="pan_left")
    held = store.read_flow("flat_a", index=0)  # this thread's handle of the old file
    old = store._open_files().handles["flat_a"]
    (store.path / "videos" / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match=r"has 2 classes \(pan_left, zoom\), so no label id 2: "
                                         r"its ids are 0\.\.1; labels of other classes need"):
        store.fill_labels({"flat_a": 2})
    filled, failed = store.fill_labels({"flat_a": 1, "flat_b": 1, "broken": 0})
    assert filled == ["flat_a"] and list(failed) == ["broken"]
    assert "its label could not be written" in failed["broken"] and "--redo broken" in \
        failed["broken"]
    assert old.attrs["label"] == -1  # the old file, complete, for the reader that holds it
    np.testing.assert_array_equal(store.read_flow("flat_a", index=0), held)
    meta = store.meta("flat_a")
    assert (meta["label"], meta["label_name"]) == (1, "zoom")
    assert store.meta("flat_b")["label"] == 0
    np.testing.assert_array_equal(store.read_flow("flat_a"), flow)
    np.testing.assert_array_equal(store.read_rgb("flat_a"), rgb)
    entry = load_index(store.path)["flat_a"]
    assert entry.stamp == file_stamp(store.path / "videos" / "flat_a.h5") and \
        entry.meta["label"] == 1
    assert store.partials() == [] and store.fill_labels({"flat_a": 0}) == ([], {})
    (store.path / "videos" / "broken.h5").unlink()
    assert store.validate() == []


@pytest.mark.parametrize("label,label_name", [(1, "zoom"), (0, "pan_left")])
def test_a_commit_without_a_label_keeps_the_finished_videos_label(store, label, label_name):
    """Adding a flow from a run that does not know the video's class (label -1) keeps the label
    the finished file has, the first class (0) included; before, the new file's -1 replaced it."""
    rgb, flow = make_video(10)
    write_video(store, "v", rgb, {"tvl1": flow}, label=label, label_name=label_name)
    write_video(store, "v", None, {"other": -flow})
    meta = store.meta("v")
    assert set(meta["flows"]) == {"other", "tvl1"}
    assert (meta["label"], meta["label_name"]) == (label, label_name)


FACTS = {"max_frames": 5, "rotation": 90, "variable_frame_rate": True,
         "frame_interval_min": 0.03, "frame_interval_max": 0.05}


def _facts(meta):
    return {k: meta.get(k) for k in ("step", "source_height", "source_width", *FACTS)}


def test_a_flow_added_by_a_writer_keeps_the_videos_frame_facts(store):
    """A writer that adds another engine's flow to a finished video, told only its source and
    fps, keeps what the video records of its frames (step, source size, frame limit, rotation,
    frame rate); one given another value is refused naming the stored one, unless it redoes the
    video (before: step 1, source size -1 and no max_frames replaced them, and the store's
    check then asked reruns for --step 1)."""
    rgb, flow = make_video(11, frames=5)
    with store.writer("zoom/v", source="v.mp4", fps=12.5, step=2, source_size=(240, 320),
                      flow_codec="float16", rgb_codec="raw") as w:
        w.append_rgb(rgb)
        w.append_flow("tvl1", flow, ENGINE)
        w.update_attrs(FACTS)
    facts = _facts(store.meta("zoom/v"))
    other = {"engine": "costvolume", "version": "1", "params": {}}
    with store.writer("zoom/v", source="v.mp4", fps=12.5, flow_codec="float16") as w:
        w.append_flow("costvolume", -flow, other)
    meta = store.meta("zoom/v")
    assert set(meta["flows"]) == {"costvolume", "tvl1"} and _facts(meta) == facts
    assert (meta["step"], meta["max_frames"]) == (2, 5)
    for given, told in (({"step": 3}, "step 2, but these frames were made with 3"),
                        ({"max_frames": 9}, "max_frames 5, but these frames were made with 9")):
        kw = {k: v for k, v in given.items() if k != "max_frames"}
        with pytest.raises(StoreError, match=rf"^video 'zoom/v' is already in the store with "
                                             rf"{re.escape(told)}; make them as the store's "
                                             r"were, or replace the video with --redo zoom/v"):
            with store.writer("zoom/v", source="v.mp4", **{"fps": 12.5, **kw},
                              flow_codec="float16") as w:
                w.append_flow("tvnet", flow, {**other, "engine": "tvnet"})
                w.update_attrs({k: v for k, v in given.items() if k == "max_frames"})
    assert store.flow_names("zoom/v") == ["costvolume", "tvl1"] and store.partials() == []
    # Another source size for the same frames (an import recorded its images' size, an older
    # flowkit a rotated video's header size) is no other frames: the flow is added and the video
    # keeps its size; a redo of the same frames drops nothing, and its size replaces a stale one
    # (--redo-mismatched repairs what the store's check refused, once and for all).
    for redo, size in ((False, (240, 320)), (True, (320, 240))):
        with store.writer("zoom/v", source="v.mp4", fps=12.5, source_size=(320, 240),
                          flow_codec="float16", redo=redo) as w:
            w.append_flow(f"swapped_{redo}", flow, {**other, "engine": "tvnet"})
        assert w.dropped == []
        meta = store.meta("zoom/v")
        assert {"costvolume", "tvl1", f"swapped_{redo}"} <= set(meta["flows"])
        assert (meta["source_height"], meta["source_width"], meta["step"]) == (*size, 2)
    with store.writer("zoom/v", source="v.mp4", fps=12.5, step=3, flow_codec="float16",
                      redo=True) as w:  # a redo's frames replace the video's, facts and all
        w.append_flow("tvnet", flow, {**other, "engine": "tvnet"})
    assert [(d.name, d.why) for d in w.dropped] == [
        (name, "stored for other frames") for name in
        ("rgb", "flow/costvolume", "flow/swapped_False", "flow/swapped_True", "flow/tvl1")]
    meta = store.meta("zoom/v")
    assert set(meta["flows"]) == {"tvnet"} and (meta["step"], meta.get("max_frames")) == (3, None)
    write_video(store, "zoom/new", rgb, {"tvl1": flow})  # a new video: the defaults
    assert _facts(store.meta("zoom/new"))["step"] == 1
    assert (store.meta("zoom/new")["source_height"], store.meta("zoom/new")["source_width"]) == \
        (-1, -1)
    write_video(store, "zoom/new", None, {"other": flow}, source_size=(24, 32))  # was unknown
    assert (store.meta("zoom/new")["source_height"], store.meta("zoom/new")["source_width"]) == \
        (24, 32)


def test_a_frame_fact_found_out_by_an_adding_writer_is_checked_against_the_video(store):
    """A writer told only source and fps that adds a flow to a video stored with step 2, then
    finds out (update_attrs) that its frames were made with step 3, is refused naming the
    stored step, and the video keeps its flows (a fact given late counts as given)."""
    _, flow = make_video(11, frames=3)
    with store.writer("zoom/v", source="v.mp4", fps=25.0, step=2, flow_codec="float16") as w:
        w.append_flow("tvl1", flow, ENGINE)
    other = {"engine": "costvolume", "version": "1", "params": {}}
    with pytest.raises(StoreError, match=r"^video 'zoom/v' is already in the store with step 2, "
                                         r"but these frames were made with 3"):
        with store.writer("zoom/v", source="v.mp4", fps=25.0, flow_codec="float16") as w:
            w.append_flow("costvolume", flow, other)
            w.update_attrs({"step": 3})
    assert store.flow_names("zoom/v") == ["tvl1"] and store.meta("zoom/v")["step"] == 2


def test_frame_intervals_found_out_again_match_to_rounding_only(store):
    """Frame intervals an adding writer measures again must be the stored ones to rounding: a
    video stored with intervals 0.03..0.05 refuses a flow whose frames had 0.01..0.09, and takes
    one whose intervals differ by float rounding."""
    _, flow = make_video(11, frames=3)
    intervals = {"variable_frame_rate": True, "frame_interval_min": 0.03,
                 "frame_interval_max": 0.05}
    with store.writer("zoom/v", source="v.mp4", fps=25.0, flow_codec="float16") as w:
        w.append_flow("tvl1", flow, ENGINE)
        w.update_attrs(intervals)
    other = {"engine": "costvolume", "version": "1", "params": {}}
    with pytest.raises(StoreError, match=r"^video 'zoom/v' is already in the store with "
                                         r"frame_interval_min 0\.03"):
        with store.writer("zoom/v", source="v.mp4", fps=25.0, flow_codec="float16") as w:
            w.append_flow("costvolume", flow, other)
            w.update_attrs({**intervals, "frame_interval_min": 0.01, "frame_interval_max": 0.09})
    assert store.flow_names("zoom/v") == ["tvl1"]
    with store.writer("zoom/v", source="v.mp4", fps=25.0, flow_codec="float16") as w:
        w.append_flow("costvolume", flow, other)
        w.update_attrs({**intervals, "frame_interval_min": 0.03 + 1e-12})
    assert store.flow_names("zoom/v") == ["costvolume", "tvl1"]


def test_a_second_method_through_the_feed_keeps_the_videos_frame_facts(tmp_path):
    """What `flowkit extract` does per video (flowkit.feed) adding a second --method to a store
    with the options of the first: both commit, and the video keeps its step, frame limit and
    rotation (the feed gives them all; they equal the stored ones)."""
    from pathlib import Path

    from flowkit import feed
    from flowkit.feed import FeedOptions
    from flowkit.flow import create_engine
    from flowkit.labels import VideoItem
    from flowkit.video import VideoInfo

    store = FlowStore(tmp_path / "s", "a", classes=["c"])
    frames = np.random.default_rng(12).integers(0, 256, (4, 16, 12, 3), dtype=np.uint8)

    class Frames:  # decoded as --step 2 --max-frames 4 would of a portrait video
        facts = {"max_frames": 4, "rotation": 90}

        def __iter__(self):
            return iter(frames)

    def decode(item, opts):
        return VideoInfo(path=item.path, width=32, height=24, fps=25.0, frame_count=12,
                         duration=0.48, codec="mem"), Frames()

    item = VideoItem(path=Path("/mem/c/v.mp4"), key="c/v", label=0, label_name="c")
    params = {"tvl1": {"nscales": 1, "warps": 1, "outer_iterations": 1, "inner_iterations": 2},
              "costvolume": {}}
    for method in ("tvl1", "costvolume"):
        [result] = feed.run([item], store, create_engine(method, **params[method]),
                            FeedOptions(method=method, step=2, max_frames=4, flow_codec="float16",
                                        rgb_codec="raw"), decode=decode)
        assert result.status == "done", result
    meta = store.meta("c/v")
    assert set(meta["flows"]) == {"costvolume", "tvl1"}
    assert {k: meta.get(k) for k in ("step", "max_frames", "rotation", "source_height",
                                     "source_width", "fps", "label")} == \
        {"step": 2, "max_frames": 4, "rotation": 90, "source_height": 32, "source_width": 24,
         "fps": 12.5, "label": 0}


def test_writer_refuses_labels_the_store_cannot_name(store, tmp_path):
    """A writer's label is an id of the store's classes, named as the store names it: an id
    beyond them, or a name the store gives another id, is refused before anything is written,
    and a label without a name takes the store's (before: label 7 of 2 classes was stored, and
    labels without names stored as '' rebuilt the manifest as ['', ''])."""
    rgb, flow = make_video(13, frames=3)
    for label, name, told in ((2, "", r"has 2 classes \(pan_left, zoom\), so no label id 2"),
                              (-2, "", r"so no label id -2"),
                              (1, "pan_left", r"label 1 is 'zoom' in store .*, not 'pan_left'; "
                                              r"leave label_name out")):
        with pytest.raises(StoreError, match=rf"^video 'v': .*{told}"):
            write_video(store, "v", rgb, {"tvl1": flow}, label=label, label_name=name)
    assert store.keys() == [] and store.partials() == []
    write_video(store, "v", rgb, {"tvl1": flow}, label=1)
    assert (store.meta("v")["label"], store.meta("v")["label_name"]) == (1, "zoom")
    bare = FlowStore(tmp_path / "bare", "a")  # no classes yet
    with pytest.raises(StoreError, match="has no classes, so no label id 0"):
        write_video(bare, "v", rgb, {"tvl1": flow}, label=0)
    FlowStore(tmp_path / "bare", "a", classes=["walk"])  # another process gives it its classes
    write_video(bare, "v", rgb, {"tvl1": flow}, label=0)
    assert bare.meta("v")["label_name"] == "walk"


def test_writer_refuses_flow_whose_direction_its_name_contradicts(store):
    """Readers take a flow's direction from its name (``*_backward``): backward flow under a
    forward name, or forward flow under a backward one, is refused naming the right name
    (before: stored, then served with the wrong sign)."""
    rgb, flow = make_video(14, frames=3)
    backward = {**ENGINE, "direction": "backward"}
    for name, record, told in (("tvl1", backward, "a forward flow's name but its engine record "
                                                  "says direction 'backward'; store backward "
                                                  "flow as 'tvl1_backward'"),
                               ("tvl1_backward", ENGINE, "a backward flow's name but its engine "
                                                         "record is a forward flow's .*; store it "
                                                         "as 'tvl1'")):
        with pytest.raises(StoreError, match=rf"^video 'v': flow '{name}' is {told}"):
            with store.writer("v", source="v.mp4", fps=25.0) as w:
                w.append_rgb(rgb)
                w.append_flow(name, flow, record)
    assert store.keys() == []
    with store.writer("v", source="v.mp4", fps=25.0, flow_codec="float16") as w:
        w.append_flow("tvl1", flow, ENGINE)
        w.append_flow("tvl1_backward", -flow, backward)
    assert store.meta("v")["flows"]["tvl1_backward"]["direction"] == "backward"


def test_fill_labels_keeps_a_flow_committed_while_it_copied_the_file(store, monkeypatch):
    """A flow another writer commits while fill_labels copies the video's file is kept: the file
    is copied again under the commit lock, so the user sees both flows and the new label."""
    from flowkit.store import writer

    rgb, flow = make_video(10)
    write_video(store, "v", rgb, {"tvl1": flow})
    original, calls = writer._relabelled_copy, []

    def copy_then_commit(*args):
        done = original(*args)
        if not calls:  # another writer commits a new flow into the finished file meanwhile
            with FlowStore(store.path, "a") as other:
                write_video(other, "v", None, {"other": -flow})
        calls.append(1)
        return done

    monkeypatch.setattr(writer, "_relabelled_copy", copy_then_commit)
    assert store.fill_labels({"v": 1}) == (["v"], {})
    meta = store.meta("v")
    assert set(meta["flows"]) == {"other", "tvl1"}
    assert (meta["label"], meta["label_name"]) == (1, "zoom")
    np.testing.assert_array_equal(store.read_flow("v", "other"), -flow)
    assert store.validate() == []


def test_fill_labels_reports_a_key_the_store_does_not_hold(store):
    """A key the store does not hold (never extracted, deleted since the labels were listed, or
    given with its video's extension) is not labelled and says so in the why-not dict, with the
    key to use where it has an extension (before: left out silently, ``([], {})``)."""
    rgb, flow = make_video(9, frames=3)
    write_video(store, "walk/a", rgb, {"tvl1": flow})
    done, failed = store.fill_labels({"deleted/meanwhile": 1, "walk/a.mp4": 0})
    assert done == [] and failed == {
        "deleted/meanwhile": f"video 'deleted/meanwhile' is not in store {store.path}, so it was "
                             "not labelled",
        "walk/a.mp4": f"video 'walk/a.mp4' is not in store {store.path}, so it was not labelled; "
                      "keys have no extension: 'walk/a'"}
    assert store.meta("walk/a")["label"] == -1


def test_fill_labels_reports_a_video_deleted_while_it_was_labelled(store, monkeypatch):
    """A video deleted (by another process) after fill_labels found it held is not labelled and
    says so in the why-not dict, like one never held (before: left out silently)."""
    rgb, flow = make_video(9, frames=3)
    write_video(store, "walk/a", rgb, {"tvl1": flow})
    found = store.is_complete

    def then_deleted(key):
        held = found(key)
        (store.path / "videos" / f"{key}.h5").unlink()
        return held

    monkeypatch.setattr(store, "is_complete", then_deleted)
    assert store.fill_labels({"walk/a": 0}) == ([], {
        "walk/a": f"video 'walk/a' is not in store {store.path}, so it was not labelled"})


def test_fill_labels_says_which_ids_the_store_takes(store, tmp_path):
    """An id fill_labels cannot set is refused with what to do for that case: a store with
    classes keeps them (other classes need a new store: opening it with other classes is
    refused), one without takes a list, and -1 is no label to set (before: each was told to
    open the store with the run's classes)."""
    rgb, flow = make_video(9, frames=3)
    write_video(store, "walk/a", rgb, {"tvl1": flow})
    with pytest.raises(StoreError, match=r"has 2 classes \(pan_left, zoom\), so no label id 5: "
                                         r"its ids are 0\.\.1; labels of other classes need a "
                                         r"new store made with them \(FlowStore\(NEW_PATH"):
        store.fill_labels({"walk/a": 5})
    with pytest.raises(StoreError, match=r": label -1 means unlabelled; fill_labels only sets "
                                         r"labels \(ids of the store's classes\)$"):
        store.fill_labels({"walk/a": -1})
    bare = FlowStore(tmp_path / "bare", "a")
    write_video(bare, "walk/a", rgb, {"tvl1": flow})
    with pytest.raises(StoreError, match=r"has no classes, so no label id 0: open it with the "
                                         r"classes the ids index first \(FlowStore\(path, 'a', "
                                         r"classes=\[\.\.\.\]\): a store without classes takes"):
        bare.fill_labels({"walk/a": 0})
    assert store.meta("walk/a")["label"] == -1 and bare.meta("walk/a")["label"] == -1


def test_flow_only_video_counts_frames(store):
    _, flow = make_video(6, frames=4)
    write_video(store, "flowonly", flows={"tvl1": flow})
    meta = store.meta("flowonly")
    assert meta["frame_count"] == 4 and not meta["has_rgb"]
    with pytest.raises(StoreError, match="no rgb"):
        store.read_rgb("flowonly")


def test_summary_counts_one_configuration_as_the_store_check_does(store, tmp_path):
    """The same weights under another path (a rerun from another directory; the relative path an
    older flowkit recorded) and a record without ``weights_sha256`` beside one with it as None
    (patch features before and after the key came) are one configuration, as the store check
    treats them: `flowkit info` warned "made with 2 different engine configurations"."""
    def engine(**params):
        return {"engine": "costvolume", "version": "1", "params": {"radius": 4, **params}}

    records = {"a/v0": engine(weights="w.pt", weights_sha256="abc"),
               "a/v1": engine(weights="/runs/w.pt", weights_sha256="abc"),
               "b/v0": engine(), "b/v1": engine(weights_sha256=None)}
    for i, (key, record) in enumerate(records.items()):
        name = "learned" if key.startswith("a/") else "patch"
        write_video(store, key, flows={name: make_video(i, frames=3)[1]}, engine=record)
    s = store.summary()
    assert not s["warnings"], s["warnings"]
    assert s["engines"]["learned"]["params"]["weights"] in ("w.pt", "/runs/w.pt")
    write_video(store, "a/v2", flows={"learned": make_video(9, frames=3)[1]},
                engine=engine(weights="/runs/w.pt", weights_sha256="def"))  # other weights
    assert store.summary()["warnings"] == ["flow 'learned' was made with 2 different engine "
                                           "configurations; the most common is listed"]


def test_summary_and_validate(store):
    for i, key in enumerate(["pan_left/a", "zoom/b", "zoom/c"]):
        rgb, flow = make_video(10 + i, frames=4 + i)
        write_video(store, key, rgb, {"tvl1": flow})
    s = store.summary()
    json.dumps(s)
    assert s["format"] == FORMAT and s["version"] == VERSION
    assert s["videos"] == 3 and s["frames"] == 4 + 5 + 6 and s["rgb_frames"] == 15
    assert s["flow_pairs"] == {"tvl1": 12}
    assert s["classes"] == {"count": 2, "names": ["pan_left", "zoom"]}
    assert s["bytes"] == sum(p.stat().st_size for p in (store.path / "videos").rglob("*.h5"))
    assert s["engines"]["tvl1"] == ENGINE and s["quantization"] == {"tvl1": ["float16"]}
    assert s["sizes"] == {"12x16": 3} and s["partials"] == 0 and s["warnings"] == []
    assert store.validate() == [] and store.validate(deep=True) == []
    assert len(store) == 3 and "zoom/b" in store and "zoom/x" not in store


def test_validate_reports_progress_per_video(store):
    """300k videos take about 15 minutes to validate (more with deep): a bar over the videos,
    advanced as each file's check comes back, and with deep one more over the frames' pass."""

    for i, key in enumerate(["pan_left/a", "zoom/b", "zoom/c"]):
        write_video(store, key, *make_video(20 + i, frames=3)[:1], flows={})
    seen = TaskRecorder()
    assert store.validate(progress=seen) == []
    assert seen.steps == [("validating videos", n, 3) for n in (1, 2, 3)]
    assert seen.tasks == [("validating videos", 3, 3)]
    seen = TaskRecorder()
    assert store.validate(deep=True, progress=seen) == []
    assert seen.tasks == [("validating videos", 3, 3),
                          ("decoding every frame of sound videos", 3, 3)]


# ----------------------------------------------------------------------------- writer failures

def test_exception_inside_writer_leaves_no_file(store):
    rgb, flow = make_video(7)
    write_video(store, "zoom/redo", rgb, {"tvl1": flow})
    with pytest.raises(RuntimeError, match="decoder died"):
        with store.writer("zoom/redo", source="x", fps=25) as w:
            w.append_rgb(rgb[:3] // 2)
            raise RuntimeError("decoder died")
    with pytest.raises(KeyboardInterrupt):
        with store.writer("zoom/new", source="x", fps=25) as w:
            w.append_rgb(rgb)
            raise KeyboardInterrupt
    assert store.keys() == ["zoom/redo"] and store.partials() == []
    np.testing.assert_array_equal(store.read_rgb("zoom/redo"), rgb)  # the old video survives


@pytest.mark.parametrize("case", ["lengths", "size", "empty", "no_rgb_frames", "nan", "no_engine",
                                  "changed_engine", "bad_rgb", "bad_flow"])
def test_writer_rejects_inconsistent_input(store, case):
    rgb, flow = make_video(8, frames=5)
    bad = flow.copy()
    bad[0, 0, 0, 0] = np.nan
    steps = {
        "lengths": lambda w: (w.append_rgb(rgb), w.append_flow("tvl1", flow[:3], ENGINE)),
        "size": lambda w: (w.append_rgb(rgb), w.append_flow("tvl1", flow[:, :, :6], ENGINE)),
        "empty": lambda w: None,
        "no_rgb_frames": lambda w: w.append_rgb(rgb[:0]),
        "nan": lambda w: w.append_flow("tvl1", bad, ENGINE),
        "no_engine": lambda w: w.append_flow("tvl1", flow),
        "changed_engine": lambda w: (w.append_flow("tvl1", flow[:2], ENGINE),
                                     w.append_flow("tvl1", flow[2:], {**ENGINE, "version": "2"})),
        "bad_rgb": lambda w: w.append_rgb(rgb.astype(np.float32)),
        "bad_flow": lambda w: w.append_flow("tvl1", flow[:, :1], ENGINE),
    }
    with pytest.raises(StoreError, match="video 'v'"):
        with store.writer("v", source="x", fps=25) as w:
            steps[case](w)
    assert store.keys() == [] and store.partials() == []


def test_writer_argument_errors(store, tmp_path):
    with pytest.raises(StoreError, match="unknown flow codec 'float32'"):
        store.writer("v", source="x", fps=25, flow_codec="float32")
    with pytest.raises(StoreError, match="max_error"):
        store.writer("v", source="x", fps=25, flow_codec="jpegls:0")
    with pytest.raises(StoreError, match="invalid video key"):
        store.writer("../escape", source="x", fps=25)
    with pytest.raises(StoreError, match="context manager"):
        store.writer("v", source="x", fps=25).append_rgb(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(StoreError, match="read-only"):
        FlowStore(store.path).writer("v", source="x", fps=25)


def test_key_too_long_for_the_stores_file_names_is_refused_up_front(store):
    """A key whose .h5 name fits but whose partial (or claim) name would not is refused before
    anything is created, with what to do; a writer whose file cannot be created says why, never
    a bare OSError from cleaning up."""
    from flowkit.store import SUFFIX, claims, codecs, layout, writer

    room = layout.NAME_MAX - len(SUFFIX + layout.partial_ending(layout.WIDEST_PID))
    key = "zoom/" + "v" * (room + 1)  # its .h5 name is legal: 3 bytes of suffix, not the partial's
    assert key not in store and ("zoom/" + "v" * layout.NAME_MAX) not in store
    with pytest.raises(StoreError, match=rf"is too long.*rename the video to at most {room} bytes"):
        with store.writer(key, source="x", fps=25) as w:
            w.append_rgb(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(StoreError, match="is too long"):
        store.claim("zoom/" + "v" * (layout.NAME_MAX - len(SUFFIX + claims.claim_ending("tvl1"))
                                     + 1), "tvl1")
    write_video(store, "zoom/" + "v" * room, make_video(1, frames=2)[0])  # the longest that fits
    assert store.keys() == ["zoom/" + "v" * room] and store.partials() == []

    # too long with this process's shortest partial name (its writer 0): too long for any writer
    key = "zoom/" + "v" * (layout.NAME_MAX - len(SUFFIX + layout.partial_ending(writer=0)) + 1)
    unchecked = writer.VideoWriter(store.path / "videos" / (key + SUFFIX), {"key": key},
                                   codecs.flow_codec(), codecs.rgb_codec(),
                                   videos=store.path / "videos")  # its partial cannot be made
    with pytest.raises(StoreError, match=f"video '{key}': writing .* failed: .*File name too long"):
        with unchecked:
            pass


def test_a_non_ascii_key_is_measured_in_bytes(store):
    """File names are limited in bytes, not characters: a key of CJK characters (3 bytes each in
    UTF-8) short enough in characters but not in bytes is refused up front with the same advice."""
    from flowkit.store import SUFFIX, layout

    room = layout.NAME_MAX - len(SUFFIX + layout.partial_ending(layout.WIDEST_PID))
    key = "zoom/" + "视" * (room // 3 + 1)
    assert len(key.split("/")[-1]) <= room < len(os.fsencode(key.split("/")[-1]))
    with pytest.raises(StoreError, match=rf"is too long.*rename the video to at most {room} bytes"):
        with store.writer(key, source="x", fps=25) as w:
            w.append_rgb(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(StoreError, match=r"is too long.*at most \d+ bytes"):
        FlowStore.check_writable_key(key, "tvl1")
    assert list((store.path / "videos").rglob("*")) == []  # nothing was created
    write_video(store, "zoom/" + "视" * (room // 3), make_video(1, frames=2)[0])  # fits
    assert store.keys() == ["zoom/" + "视" * (room // 3)]


def test_whether_a_key_fits_does_not_depend_on_the_pid(store):
    """A video's claim and partial names hold the pid of the process writing it: a name just
    under the limit must not fit for one run (or worker) and fail for the next, whose pid has
    more digits. Keys are checked with the widest pid, before anything is created."""
    from flowkit.store import SUFFIX, claims, layout

    mine = len(SUFFIX + f".tvl1{layout.CLAIM}.{host_name()}.{os.getpid()}.link.tmp")
    widest = len(SUFFIX + claims.claim_ending("tvl1"))
    assert widest - mine == len(str(layout.WIDEST_PID)) - len(str(os.getpid()))
    if widest == mine:
        pytest.skip(f"this process's pid {os.getpid()} is as wide as the widest")
    fits_this_pid = "zoom/" + "v" * (layout.NAME_MAX - mine)
    with pytest.raises(StoreError, match=rf"is too long.*at most {layout.NAME_MAX - widest} bytes"):
        store.claim(fits_this_pid, "tvl1")
    with pytest.raises(StoreError, match="is too long"):
        FlowStore.check_writable_key(fits_this_pid, "tvl1")
    assert list((store.path / "videos").rglob("*")) == []  # nothing was created
    longest = "zoom/" + "v" * (layout.NAME_MAX - widest)
    assert FlowStore.check_writable_key(longest, "tvl1") == longest
    assert store.claim(longest, "tvl1") is None
    store.release(longest, "tvl1")
    # the partial's name is shorter than the claim's temporary: whatever fits a claim fits it
    assert len(SUFFIX + layout.partial_ending(layout.WIDEST_PID)) < widest


def test_remove_dead_writer_removes_only_that_process_leftovers(store):
    """What a run removes after terminating a worker process: the claim and partial file the
    worker's pid holds on this host, nothing of a live process or of another host."""
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    videos = store.path / "videos" / "zoom"
    videos.mkdir(parents=True)

    def leftovers(key: str, pid: int, host: str) -> list:
        claim = videos / f"{key}.h5.tvl1.claim"
        claim.write_text(json.dumps({"host": host, "pid": pid, "since": "then"}))
        partial = videos / f"{key}.h5.{host}.{pid}.partial"
        partial.write_bytes(b"half a video")
        link = videos / f"{key}.h5.tvl1.claim.{host}.{pid}.link.tmp"
        link.write_text("{}")
        return [claim, partial, link]

    gone = leftovers("a", dead, host_name())
    assert sorted(store.remove_dead_writer("zoom/a", "tvl1", dead)) == sorted(gone)
    assert not any(p.exists() for p in gone)
    live = leftovers("b", os.getpid(), host_name())  # a live pid: nothing is removed
    assert store.remove_dead_writer("zoom/b", "tvl1", os.getpid()) == []
    other = leftovers("c", dead, "node-17")  # the same pid on another host: not ours
    assert store.remove_dead_writer("zoom/c", "tvl1", dead) == []
    assert all(p.exists() for p in live + other)
    (videos / "b.h5.tvl1.claim").write_text(json.dumps({"host": host_name(), "pid": 4242}))
    store.remove_dead_writer("zoom/b", "tvl1", dead)  # another process's claim on the video
    assert (videos / "b.h5.tvl1.claim").exists()
    # terminated while committing with the lock file (no flock, FLOWKIT_COMMIT_LOCK=file): other
    # hosts would wait 10 minutes for its heartbeat to age
    lock = store.path / "videos" / ".commit.lock.claim"
    for holder, kept in (({"host": "node-17", "pid": dead}, True),
                         ({"host": host_name(), "pid": os.getpid()}, True),
                         ({"host": host_name(), "pid": dead}, False)):
        lock.write_text(json.dumps({**holder, "thread": 1, "since": "then"}))
        assert (lock in store.remove_dead_writer("zoom/a", "tvl1", dead)) is not kept
        assert lock.exists() is kept


# ----------------------------------------------------------------------------- partials

def test_a_commit_is_durable_before_it_is_visible(store, monkeypatch):
    """The finished file's bytes reach the disk (fsync of the partial) before the rename makes it
    the video's file, and the rename reaches the disk after (fsync of its folder): a power cut
    never leaves a complete-looking video whose data was still in the page cache."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    w = store.writer("zoom/durable", source="x", fps=25)
    with w:
        w.append_rgb(make_video(5, frames=3)[0])
    partial, final = str(w.partial), str(w.final)
    moved = events.index(("replace", partial))
    assert ("fsync", partial) in events[:moved]
    assert ("fsync", os.path.dirname(final)) in events[moved + 1:]


def test_leftover_partial_is_ignored_and_removed(store):
    rgb, flow = make_video(9)
    write_video(store, "zoom/done", rgb, {"tvl1": flow})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with store.writer("zoom/dead", source="x", fps=25) as w:  # open: must survive remove_partials
        dead_partial = w.partial.with_name(w.partial.name.replace(f".{os.getpid()}.", f".{dead}."))
        dead_partial.write_bytes(b"\x89HDF\r\n\x1a\n truncated garbage")

        assert store.keys() == ["zoom/done"] and "zoom/dead" not in store
        assert store.validate() == []
        summary = store.summary()
        assert summary["videos"] == 1 and summary["partials"] == 2
        assert store.remove_partials() == [dead_partial]
        assert store.partials() == [w.partial]
        w.append_rgb(rgb)
    assert store.partials() == [] and "zoom/dead" in store


def test_partials_of_another_host_are_removed_only_when_stale(store):
    """On a shared file system a partial written on another host has a pid this host cannot
    check: it is kept while it may still be written (deleting it would break that extraction)
    and removed once its writer's heartbeat stopped touching it for 10 minutes, as that host's
    claims are (it waited a day, so a dead node's partials outlived the rerun that took over its
    claims). A partial whose name flowkit does not recognise still waits a day."""
    from flowkit.store.layout import STALE_CLAIM_SECONDS

    videos = store.path / "videos"
    assert host_name() != "node-17"
    fresh = videos / "a.h5.node-17.999999.partial"
    fresh.write_bytes(b"being written on node-17")
    beaten = time.time() - STALE_CLAIM_SECONDS + 30  # its last heartbeat 9.5 minutes ago
    os.utime(fresh, (beaten, beaten))
    old = videos / "b.h5.node-17.999998.partial"
    old.write_bytes(b"left by a writer that is gone")
    dead = time.time() - STALE_CLAIM_SECONDS - 30
    os.utime(old, (dead, dead))
    odd = videos / "c.h5.partial"  # no host, no pid: a tool other than flowkit
    odd.write_bytes(b"whose writer nothing says")
    os.utime(odd, (dead, dead))
    assert store.remove_partials() == [old]
    assert fresh.exists() and not old.exists()
    assert sorted(store.partials()) == sorted([fresh, odd])
    two_days_ago = time.time() - 2 * 86400
    os.utime(odd, (two_days_ago, two_days_ago))
    assert store.remove_partials() == [odd]


def _no_hard_links(monkeypatch, code=errno.EPERM):
    """os.link as exFAT / FAT drives and some FUSE or SMB mounts answer it."""
    def refuse(src, dst, *a, **kw):
        raise OSError(code, os.strerror(code), str(src), None, str(dst))
    monkeypatch.setattr(os, "link", refuse)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_a_file_system_without_hard_links_is_named_with_the_fix(store, monkeypatch, code):
    """Claims are hard links; where the file system has none, the user is told so, not "operation
    not permitted ...; fix the permissions" (the folder is writable), and no temporary is left."""
    _no_hard_links(monkeypatch, code)
    with pytest.raises(FlowkitError, match=r"/videos/zoom: its file system refuses hard links "
                                           r"\(.*\), which flowkit takes its claims and locks "
                                           r"with .* exFAT/FAT drives .* write to a folder on "
                                           r"another file system$"):
        store.claim("zoom/v1", "tvl1")
    assert not [p for p in (store.path / "videos").rglob("*") if p.is_file()]


def test_a_writer_touches_its_partial_with_its_claims(store, monkeypatch):
    """Other hosts judge a partial by its age: its writer's heartbeat keeps it young while the
    video is computed (a chunk may take minutes), and lets go of it once committed."""
    from flowkit.store import claims

    rgb, flow = make_video(3)
    with store.writer("zoom/beat", source="x", fps=25) as w:
        w.append_rgb(rgb)
        os.utime(w.partial, (1.0, 1.0))  # as if untouched since 1970
        claims._heartbeat.beat()
        assert w.partial.stat().st_mtime > time.time() - 60
        w.append_flow("tvl1", flow, ENGINE)
    assert store.keys() == ["zoom/beat"]
    assert w.partial not in claims._heartbeat._paths  # committed: let go


# ------------------------------------------------------------------------ writers of one process

def test_nested_writers_of_one_video_keep_both_flows(store):
    """Two writers of one video in one process, one inside the other, each write their own partial
    file, as two processes do (they shared one: the inner one truncated the outer one's open file,
    and the outer one said it committed while its flow was lost)."""
    rgb, tvl1 = make_video(4)
    costvolume = 2 * tvl1
    with store.writer("zoom/v", source="x", fps=25, flow_codec="float16", rgb_codec="raw") as a:
        a.append_rgb(rgb)
        a.append_flow("tvl1", tvl1, ENGINE)
        with store.writer("zoom/v", source="x", fps=25, flow_codec="float16",
                          rgb_codec="raw") as b:
            b.append_rgb(rgb)
            b.append_flow("costvolume", costvolume, {**ENGINE, "engine": "costvolume"})
    assert store.flow_names("zoom/v") == ["costvolume", "tvl1"]
    np.testing.assert_array_equal(store.read_flow("zoom/v", "tvl1"), tvl1)
    np.testing.assert_array_equal(store.read_flow("zoom/v", "costvolume"), costvolume)
    assert store.partials() == []


def test_two_threads_adding_flows_to_one_video_keep_both(store):
    """Two threads sharing one FlowStore, each adding its engine's flow to one video, both open
    before either commits: both flows are kept, as two processes' are."""
    import threading

    rgb, tvl1 = make_video(5)
    flows = {"tvl1": tvl1, "costvolume": 2 * tvl1}
    both_open, errors = threading.Barrier(2, timeout=30), []

    def add(name):
        try:
            with store.writer("zoom/v", source="x", fps=25, flow_codec="float16",
                              rgb_codec="raw") as w:
                w.append_rgb(rgb)
                both_open.wait()
                w.append_flow(name, flows[name], {**ENGINE, "engine": name})
        except Exception as exc:  # the test fails on it below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(name,)) for name in flows]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and store.flow_names("zoom/v") == ["costvolume", "tvl1"]
    for name, flow in flows.items():
        np.testing.assert_array_equal(store.read_flow("zoom/v", name), flow)
    assert store.partials() == []


def test_a_claim_held_by_this_process_is_refused_to_its_other_claims(store):
    """A claim file names a process, not a thread: two threads of one process extracting into one
    store (through two FlowStores of it, too) both got the claim, computed the video twice, and the
    first to finish released the claim the other still worked under. A second claim is refused
    (naming this process) until the first is released."""
    assert store.claim("zoom/v", "tvl1") is None
    held = FlowStore(store.path, "a").claim("zoom/v", "tvl1")
    assert held is not None and f"pid {os.getpid()} on {host_name()}" in held
    assert "this process" in store.claim("zoom/v", "tvl1")
    assert store.claim("zoom/v", "costvolume") is None  # another flow: its own claim
    assert store.in_flight() == {"zoom/v": store.in_flight()["zoom/v"]}  # still held
    store.release("zoom/v", "tvl1")
    assert FlowStore(store.path, "a").claim("zoom/v", "tvl1") is None
    store.release("zoom/v", "tvl1")
    store.release("zoom/v", "costvolume")
    assert store.in_flight() == {}


def test_numbered_partials_are_judged_by_their_host_and_pid(store):
    """A writer's partial is numbered within its process (``<host>.<pid>.<writer>``): a dead
    writer's is still recognised (another host's removed after 10 minutes, not a day; a killed
    worker's by remove_dead_writer), a live process's kept."""
    from flowkit.store.layout import STALE_CLAIM_SECONDS

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    videos = store.path / "videos" / "zoom"
    videos.mkdir(parents=True)
    elsewhere = videos / "b.h5.node-17.999999.3.partial"
    killed = [videos / f"c.h5.{host_name()}.{dead}.{n}.partial" for n in (0, 7)]
    for path in (elsewhere, *killed):
        path.write_bytes(b"half a video")
    gone = time.time() - STALE_CLAIM_SECONDS - 30
    os.utime(elsewhere, (gone, gone))
    with store.writer("zoom/a", source="x", fps=25) as w:  # this live process's: kept
        assert sorted(store.remove_dead_writer("zoom/c", "tvl1", dead)) == sorted(killed)
        assert store.remove_partials() == [elsewhere]
        assert store.partials() == [w.partial]
        w.append_rgb(make_video(2)[0])


def test_a_partial_of_a_live_pid_that_no_live_writer_has_is_removed(store):
    """A container restarted under its host name gives its processes the old pids (flowkit is pid
    1 each time): a crashed run's partial named with this process's pid, which no open writer of
    it has, or with the pid of a process that started after the partial was last changed, is a
    leftover (it was kept as a live writer's, and shown in progress forever); an open writer's
    partial, and one the live process may be writing, are kept."""
    videos = store.path / "videos" / "zoom"
    videos.mkdir(parents=True)
    host, me = host_name(), os.getpid()
    crashed = [videos / f"a.h5.{host}.{me}.4000000000.partial",  # a number no writer has
               videos / f"b.h5.{host}.{me}.partial"]  # a flowkit before writers were numbered
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process that got a crashed run's pid
    try:
        before = videos / f"c.h5.{host}.{sleeper.pid}.0.partial"  # changed before it started
        after = videos / f"d.h5.{host}.{sleeper.pid}.0.partial"  # it may be writing this one
        for path in (*crashed, before, after):
            path.write_bytes(b"half a video")
        an_hour_ago = time.time() - 3600
        os.utime(before, (an_hour_ago, an_hour_ago))
        with store.writer("zoom/e", source="x", fps=25) as w:
            assert sorted(store.remove_partials()) == sorted([*crashed, before])
            assert sorted(store.partials()) == sorted([after, w.partial])
            w.append_rgb(make_video(2)[0])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.remove_partials() == [after]  # its process ended


# ----------------------------------------------------------------------------- errors

def test_missing_store(tmp_path):
    with pytest.raises(StoreError, match=r"does not exist; create it with `flowkit extract"):
        FlowStore(tmp_path / "nope")


def test_foreign_directory(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a flowkit store"):
        FlowStore(tmp_path / "photos")
    with pytest.raises(StoreError, match="not a flowkit store"):
        FlowStore(tmp_path / "photos", mode="a")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "store.json").write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(StoreError, match="not a flowkit store"):
        FlowStore(tmp_path / "other")


def test_a_lost_or_damaged_store_json_is_rebuilt_from_the_videos_labels(tmp_path):
    """A store whose store.json was lost or half-written is told a repair that works (it was told
    to create it with extract, which refuses a non-empty directory, or to "rewrite store.json"):
    rebuild_manifest writes the class list again from the labels its videos record, in label-id
    order; where a label id has no video to name it, it says how to write the file by hand."""
    classes = ["zoom", "pan_left", "rotate"]
    store = FlowStore(tmp_path / "s", "a", classes=classes)
    rgb, flow = make_video(17)
    for key, label in (("zoom/a", 0), ("rotate/a", 2), ("pan_left/a", 1), ("pan_left/b", 1),
                       ("misc/u", -1)):
        write_video(store, key, rgb, {"tvl1": flow}, label=label,
                    label_name=classes[label] if label >= 0 else "")
    manifest = tmp_path / "s" / "store.json"
    repair = rf"rebuild it from the videos' labels: `flowkit info {tmp_path / 's'} --repair-manifest`"
    manifest.unlink()
    for mode in ("r", "a"):  # info; extract into it
        with pytest.raises(StoreError, match=rf"has no store.json but holds videos/: .*{repair}$"):
            FlowStore(tmp_path / "s", mode)
    assert FlowStore.rebuild_manifest(tmp_path / "s") == classes
    assert FlowStore(tmp_path / "s").classes == classes
    with pytest.raises(StoreError, match="reads as JSON; there is nothing to rebuild"):
        FlowStore.rebuild_manifest(tmp_path / "s")
    manifest.write_text(manifest.read_text()[:50])  # half-written
    with pytest.raises(StoreError, match=rf"unreadable store manifest .*{repair}$"):
        FlowStore(tmp_path / "s")
    (tmp_path / "s/videos/pan_left/a.h5").unlink()
    (tmp_path / "s/videos/pan_left/b.h5").unlink()  # label 1 named by no video
    with pytest.raises(StoreError, match=r"label ids \[1\] have no video to name them; write it "
                                         r'by hand: \{"format": "flowkit-store", "version": 1, '
                                         r'"classes": \[the class names in label-id order\]\}'):
        FlowStore.rebuild_manifest(tmp_path / "s")


def test_an_unreadable_flow_record_names_the_import_beside_the_extract():
    """A flow whose header cannot be opened cannot tell whether it was imported (`flowkit import
    rawframes --flow-name rawframes`: no engine's --method), so its repair names both."""
    from flowkit.store.reading import DamagedObject

    problem = DamagedObject.of("/s/videos/a/b.h5", "/flow/rawframes", "a/b", "bad header").problem
    assert "--redo a/b --method rawframes" in problem
    assert problem.endswith("or if it was imported (flowkit import rawframes), delete the "
                            "video's file and rerun the import with --flow-name rawframes")


def test_newer_store_version(store):
    """A newer flowkit's store is refused, and its store.json is never "repaired" (rebuilt as
    this version's, its classes and fields lost): only a lost or unparseable one is."""
    manifest = json.loads((store.path / "store.json").read_text())
    newer = json.dumps({**manifest, "version": VERSION + 1, "future_field": 1})
    (store.path / "store.json").write_text(newer)
    with pytest.raises(StoreError, match=r"newer flowkit \(format version 2 > 1\); upgrade flowkit"):
        FlowStore(store.path)
    with pytest.raises(StoreError, match="reads as JSON; there is nothing to rebuild"):
        FlowStore.rebuild_manifest(store.path)
    assert (store.path / "store.json").read_text() == newer


def test_plain_hdf5_file_instead_of_store(tmp_path):
    with h5py.File(tmp_path / "flow.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="plain HDF5 file, not a flowkit store"):
        FlowStore(tmp_path / "flow.h5")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(StoreError, match="is a file"):
        FlowStore(tmp_path / "notes.txt", mode="a")


def test_missing_video_and_newer_video_file(store):
    with pytest.raises(StoreError, match="not in store"):
        store.read_flow("zoom/none")
    rgb, flow = make_video(11)
    write_video(store, "zoom/v", rgb, {"tvl1": flow})
    with h5py.File(store.path / "videos/zoom/v.h5", "r+") as f:
        f.attrs["version"] = 7
    with pytest.raises(StoreError, match="newer flowkit"):
        FlowStore(store.path).read_flow("zoom/v")


def test_a_key_read_with_the_videos_extension_names_the_key_without_it(store):
    """Keys have no extension: reading 'zoom/v.mp4' of a stored 'zoom/v' names 'zoom/v', not
    "not extracted; `flowkit extract` writes it" (extracting again only skips it)."""
    rgb, flow = make_video(12)
    write_video(store, "zoom/v", rgb, {"tvl1": flow})
    for read in (lambda: store.read_flow("zoom/v.mp4", "tvl1"),
                 lambda: store.read_rgb("zoom/v.MP4"), lambda: store.meta("zoom/v.mp4")):
        with pytest.raises(StoreError) as info:
            read()
        assert str(info.value).endswith("; keys have no extension: 'zoom/v'")
        assert "flowkit extract" not in str(info.value)
    with pytest.raises(StoreError, match=r"not extracted.*; keys have no extension: 'zoom/w'$"):
        store.read_rgb("zoom/w.mp4")  # not held either way: extracting writes it


def test_classes_in_store_json(tmp_path):
    path = tmp_path / "s"
    FlowStore(path, mode="a")
    assert FlowStore(path, mode="a", classes=["a", "b"]).classes == ["a", "b"]  # adopted
    assert FlowStore(path).classes == ["a", "b"]
    assert FlowStore(path, mode="a").classes == ["a", "b"]  # no request keeps them
    assert FlowStore(path, mode="a", classes=["a", "b"]).classes == ["a", "b"]
    with pytest.raises(StoreError, match="label ids would not match"):
        FlowStore(path, mode="a", classes=["a", "b", "c"])
    with pytest.raises(StoreError, match="other order"):
        FlowStore(path, mode="a", classes=["b", "a"])
    manifest = json.loads((path / "store.json").read_text())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    assert "created" in manifest and "flowkit_version" in manifest


def test_a_rebuilt_store_json_takes_an_empty_label_name_for_no_name(tmp_path):
    """A video whose label has no name ('': written by a flowkit whose writer took labels without
    names) names no class when store.json is rebuilt: the other videos of its id name it, and an
    id only such videos hold is a gap, refused as one (before: classes ['', ...], or a clash)."""
    store = FlowStore(tmp_path / "s", "a", classes=["walk", "run"])
    rgb, flow = make_video(15, frames=3)
    for key, label in (("walk/a", 0), ("walk/c", 0), ("run/b", 1)):
        write_video(store, key, rgb, {"tvl1": flow}, label=label)
    manifest = tmp_path / "s" / "store.json"

    def unnamed(key):
        with h5py.File(store.path / "videos" / f"{key}.h5", "r+") as f:
            f.attrs["label_name"] = ""

    unnamed("walk/a")
    manifest.unlink()
    assert FlowStore.rebuild_manifest(tmp_path / "s") == ["walk", "run"]
    unnamed("run/b")
    manifest.unlink()
    with pytest.raises(StoreError, match=r"label ids \[1\] have no video to name them"):
        FlowStore.rebuild_manifest(tmp_path / "s")


def test_a_broken_store_json_of_unlabelled_videos_is_rebuilt_without_classes(tmp_path):
    """A store holding only unlabelled videos (no classes) whose store.json was half-written is
    rebuilt with no classes, and opens again."""
    store = FlowStore(tmp_path / "s", "a")
    rgb, flow = make_video(15, frames=3)
    write_video(store, "misc/u", rgb, {"tvl1": flow})
    store.close()
    (tmp_path / "s" / "store.json").write_text("{broken")
    assert FlowStore.rebuild_manifest(tmp_path / "s") == []
    assert FlowStore(tmp_path / "s").classes == []


# ----------------------------------------------------------------------------- validation

def test_validate_detects_tampered_files(store):
    for key in ("zoom/a", "zoom/b", "zoom/c"):
        rgb, flow = make_video(12)
        write_video(store, key, rgb, {"tvl1": flow})
    videos = store.path / "videos"
    data = (videos / "zoom/a.h5").read_bytes()
    (videos / "truncated.h5").write_bytes(data[: len(data) // 2])
    with h5py.File(videos / "zoom/b.h5", "r+") as f:
        f.attrs["version"] = 99
    with h5py.File(videos / "zoom/c.h5", "r+") as f:
        f.attrs["frame_count"] = 9
    problems = store.validate()
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "truncated.h5: cannot be opened as HDF5" in text
    assert "zoom/b.h5: version attribute is 99" in text
    assert "zoom/c.h5: /rgb has shape (6, 12, 16, 3), expected (9, 12, 16, 3)" in text
    assert "zoom/c.h5: /flow/tvl1 has shape (5, 2, 12, 16), expected (8, 2, 12, 16)" in text
    assert store.summary()["unreadable"] == 2  # truncated, and b of a newer format
    with pytest.raises(StoreError, match="cannot be read as HDF5"):
        store.read_flow("truncated")


def test_whole_file_damage_names_its_repair(store):
    """Problems of a whole file (truncated, empty, damaged root attributes, a copy kept under
    videos/ whose key is another video's) name the repair as the same files' extraction errors
    do: the redo, the re-import for an imported video, deleting or moving out a stray copy."""
    rgb, flow = make_video(15)
    for key in ("zoom/a", "zoom/b", "zoom/c"):
        write_video(store, key, rgb, {"tvl1": flow})
    videos = store.path / "videos"
    (videos / "old").mkdir()
    (videos / "old/b.h5").write_bytes((videos / "zoom/b.h5").read_bytes())
    (videos / "zoom/a.h5").write_bytes((videos / "zoom/a.h5").read_bytes()[:3000])
    (videos / "zoom/empty.h5").write_bytes(b"")
    with h5py.File(videos / "zoom/b.h5", "r+") as f:
        f.attrs["format"] = "flowkit-vi>eo"
    with h5py.File(videos / "zoom/c.h5", "r+") as f:
        f.attrs["format"], f.attrs["imported"] = "flowkit-vi>eo", True
    redo = "re-extract it: flowkit extract VIDEO_DIR -o STORE --redo"
    problems = sorted(store.validate())
    assert [p.split(": ", 1)[0] for p in problems] == [
        "videos/old/b.h5", "videos/zoom/a.h5", "videos/zoom/b.h5", "videos/zoom/c.h5",
        "videos/zoom/empty.h5"]
    assert problems[0].endswith("if it is a copy of video 'zoom/b', delete it or move it out of "
                                f"videos/, else {redo} old/b")
    assert "cannot be opened as HDF5" in problems[1] and problems[1].endswith(f"; {redo} zoom/a")
    assert problems[2].endswith(f"expected 'flowkit-video'; {redo} zoom/b")
    assert problems[3].endswith(f"expected 'flowkit-video'; re-import it: delete "
                                f"{videos / 'zoom/c.h5'} and rerun flowkit import rawframes "
                                "RAWFRAMES_DIR -o STORE (flowkit extract cannot recompute "
                                "imported flow)")
    assert "cannot be opened as HDF5" in problems[4] and problems[4].endswith(f"; {redo} zoom/empty")
    # the line an extraction fails such a video with names one repair
    assert store.problems_line("zoom/a").count("re-extract it") == 1
    assert store.problems_line("zoom/c").count("re-") == 1


def test_validate_detects_records_that_contradict_the_data(store):
    """Files that open and whose shapes look right but whose records lie (a writer that died
    before marking the file complete, a file moved to another key, a dtype, frame shape or
    jpegls step other than recorded) are problems; deep validation also finds decoded frames
    that are non-finite or of another size, though their bytes pass their CRC (a writer's bug,
    not bit rot). Each names the file, what is wrong and, for frames, how to repair it."""
    from flowkit.store.codecs import flow_codec, frame_crc

    rgb, flow = make_video(15, frames=4)
    for key in ("zoom/incomplete", "zoom/moved", "zoom/dtype", "zoom/inf"):
        write_video(store, key, rgb, {"tvl1": flow})  # float16 flow, raw RGB
    for key in ("zoom/shape", "zoom/step", "zoom/size"):
        write_video(store, key, rgb, {"tvl1": flow}, flow_codec="jpegls", rgb_codec="jpeg")
    store.close()
    videos = store.path / "videos" / "zoom"

    def rewrite(f, change):  # the flow dataset recreated from changed data, its attributes kept
        attrs, data = dict(f["flow/tvl1"].attrs), change(f["flow/tvl1"][...])
        del f["flow/tvl1"]
        f.create_dataset("flow/tvl1", data=data).attrs.update(attrs)

    def with_inf(data):
        data[1, 0, 0, 0] = np.inf
        return data

    with h5py.File(videos / "incomplete.h5", "r+") as f:
        f.attrs["complete"] = False
    with h5py.File(videos / "moved.h5", "r+") as f:
        f.attrs["key"] = "pan_left/other"
    with h5py.File(videos / "dtype.h5", "r+") as f:
        rewrite(f, lambda data: data.astype(np.float32))
    with h5py.File(videos / "inf.h5", "r+") as f:
        rewrite(f, with_inf)
    with h5py.File(videos / "shape.h5", "r+") as f:
        f["flow/tvl1"].attrs["frame_shape"] = [2, 6, 32]
    with h5py.File(videos / "step.h5", "r+") as f:
        f["flow/tvl1"].attrs["step"] = step = 2 * float(f["flow/tvl1"].attrs["step"])
    with h5py.File(videos / "size.h5", "r+") as f:
        blob, _ = flow_codec("jpegls").encode(np.ones((2, 12, 24), np.float32))
        ds = f["flow/tvl1"]
        ds[0] = np.frombuffer(blob, np.uint8)
        crcs = ds.attrs["frame_crc32"].copy()
        crcs[0] = frame_crc(blob)
        ds.attrs["frame_crc32"] = crcs
    shallow = [
        "videos/zoom/dtype.h5: /flow/tvl1 has dtype float32, expected float16 (float16)",
        "videos/zoom/incomplete.h5: not marked complete; re-extract it: flowkit extract "
        "VIDEO_DIR -o STORE --redo zoom/incomplete",
        "videos/zoom/moved.h5: key attribute 'pan_left/other' does not match its path "
        "(key 'zoom/moved'); if it is a copy of video 'pan_left/other', delete it or move it out "
        "of videos/, else re-extract it: flowkit extract VIDEO_DIR -o STORE --redo zoom/moved",
        "videos/zoom/shape.h5: /flow/tvl1 frames are [2, 6, 32], expected [2, 12, 16]",
        f"videos/zoom/step.h5: /flow/tvl1: step {step} and near 0 allow errors above the stated "
        "max_error 0.1 px"]
    reader = FlowStore(store.path)
    assert sorted(reader.validate()) == shallow
    redo = "; re-extract it: flowkit extract VIDEO_DIR -o STORE --redo"
    assert sorted(reader.validate(deep=True)) == sorted(shallow + [
        f"videos/zoom/inf.h5: /flow/tvl1[1] decodes to non-finite values{redo} zoom/inf",
        "videos/zoom/size.h5: /flow/tvl1[0] decodes to shape (2, 12, 24), expected (2, 12, 16)"
        f"{redo} zoom/size"])


def test_video_of_a_newer_flowkit_is_unreadable_not_fatal(store):
    """A file with a codec or a format version this flowkit does not know (written by a newer
    one) is an unreadable video, like a damaged one: summary() counts it and points to validate(),
    which names the file; metas() (datasets, extraction's resume check) leaves it out."""
    rgb, flow = make_video(13, frames=3)
    for key in ("zoom/good", "zoom/codec", "zoom/version"):
        write_video(store, key, rgb, {"tvl1": flow})
    videos = store.path / "videos"
    with h5py.File(videos / "zoom/codec.h5", "r+") as f:
        f["flow/tvl1"].attrs["codec"] = "jpegxl"
    with h5py.File(videos / "zoom/version.h5", "r+") as f:
        f.attrs["version"] = VIDEO_VERSION + 1
    reader = FlowStore(store.path)
    summary = reader.summary()
    assert (summary["videos"], summary["unreadable"], summary["frames"]) == (3, 2, 3)
    assert ("2 video files cannot be read; `flowkit info STORE --validate` names them "
            "(FlowStore.validate() in Python)") in summary["warnings"]
    assert list(reader.metas(reader.keys())) == ["zoom/good"]
    text = "\n".join(reader.validate())
    assert "zoom/codec.h5: /flow/tvl1: unknown or incomplete codec" in text
    assert f"zoom/version.h5: version attribute is {VIDEO_VERSION + 1}" in text
    # Reading that video directly names its file, the dataset and what to do.
    for read in (lambda: reader.meta("zoom/codec"), lambda: reader.read_flow("zoom/codec")):
        with pytest.raises(StoreError, match=r"zoom/codec\.h5: /flow/tvl1 of video 'zoom/codec': "
                                             r"unknown flow codec 'jpegxl'.*upgrade flowkit"):
            read()


def test_validate_reports_a_video_without_frames(store):
    write_video(store, "zoom/v", make_video(14, frames=2)[0])
    with h5py.File(store.path / "videos/zoom/v.h5", "r+") as f:  # as an older flowkit committed it
        f["rgb"].resize(0, axis=0)
        f.attrs["frame_count"] = 0
    assert store.validate() == [
        "videos/zoom/v.h5: frame_count is 0, not a positive number of frames; re-extract it: "
        "flowkit extract VIDEO_DIR -o STORE --redo zoom/v"]


def test_a_lossless_run_refused_by_the_stores_codecs_is_told_to_drop_lossless(store):
    """--lossless chooses float16 flow and raw RGB and refuses codec options: a run refused for
    its codecs is told both of the store's codecs and to drop --lossless (it was told the
    codec options alone, which --lossless then refused)."""
    from flowkit.store import flow_codec, rgb_codec
    from flowkit.store.compat import Request, compare_with_store

    rgb, flow = make_video(16)
    write_video(store, "zoom/a", rgb, {"tvl1": flow}, flow_codec="jpegls", rgb_codec="jpeg")
    write_video(store, "pan_left/a", rgb, {"tvl1": flow}, rgb_codec="jpeg")  # float16 flow
    lossless = Request(method="tvl1", engine=ENGINE, size=None, step=1, rgb=True,
                       rgb_codec=rgb_codec("raw"), flow_codec=flow_codec("float16"))
    both = compare_with_store(store, ["zoom/a", "zoom/new"], lossless).message()
    assert "Rerun with --rgb-codec jpeg:95 --flow-codec jpegls:0.1 and without --lossless to " \
        "extend this store" in both, both
    rgb_only = compare_with_store(store, ["pan_left/a", "pan_left/new"], lossless).message()
    assert "Rerun with --rgb-codec jpeg:95 --flow-codec float16 and without --lossless to " \
        "extend this store" in rgb_only, rgb_only
    chosen = dataclasses.replace(lossless, flow_codec=flow_codec("jpegls:0.05"))  # not --lossless
    assert "--lossless" not in compare_with_store(store, ["zoom/a"], chosen).message()


def damage_object_header(path, name: str) -> None:
    """Break the object header of group or dataset ``name`` of the HDF5 file ``path`` (its
    version byte) while the file still opens and still links ``name``: opening it then fails with
    HDF5's "bad object header version number", which h5py raises as a KeyError, as if absent."""
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f[name].id).addr
    with open(path, "r+b") as raw:
        raw.seek(addr)
        at = addr + 4 if raw.read(4) == b"OHDR" else addr  # version 2 headers start "OHDR"
        raw.seek(at)
        raw.write(b"\x07")
    with h5py.File(path, "r") as f:
        assert name == "/" or name.split("/")[0] in f
        with pytest.raises(KeyError, match="object header"):
            f[name]


def test_a_damaged_root_group_header_is_damage(store):
    """The file opens but its root group does not: reads name the video's damage, not a
    KeyError; validate, metas and summary report the file."""
    write_video(store, "zoom/a", *make_video(71)[:1])
    path = store.path / "videos/zoom/a.h5"
    damage_object_header(path, "/")
    reader = FlowStore(store.path)
    damaged = (r"/ of video 'zoom/a' cannot be opened, it is damaged \(.*object header.*\); "
               r"re-extract it: flowkit extract VIDEO_DIR -o STORE --redo zoom/a")
    for read in (reader.meta, reader.read_rgb, lambda key: reader.read_flow(key, "tvl1")):
        with pytest.raises(DamagedDataError, match=f"^{re.escape(str(path))}: {damaged}$"):
            read("zoom/a")
    assert reader.metas(["zoom/a"]) == {} and reader.summary()["unreadable"] == 1
    [problem] = reader.validate()
    assert re.fullmatch(rf"videos/zoom/a\.h5: {damaged}", problem), problem


@pytest.mark.parametrize("name", ["flow", "flow/tvl1", "rgb"])
def test_a_damaged_group_or_dataset_header_is_damage_not_absence(store, name):
    """h5py says "not there" and "cannot open it" with one KeyError: a video whose ``flow`` group
    (or a dataset) header is damaged must read as damaged, naming file, object and ``--redo``,
    never as a video without that flow (train would then advise an extraction that fails)."""
    rgb, flow = make_video(70)
    for key in ("zoom/a", "zoom/b"):
        write_video(store, key, rgb, {"tvl1": flow, "tvnet": flow})
    path = store.path / "videos/zoom/a.h5"
    damage_object_header(path, name)
    reader = FlowStore(store.path)
    damaged = (rf"/{name} of video 'zoom/a' cannot be opened, it is damaged \(.*object header.*\); "
               r"re-extract it: flowkit extract VIDEO_DIR -o STORE --redo zoom/a")
    reads = [reader.meta] + ([reader.read_rgb, reader.rgb_codec] if name == "rgb" else
                             [lambda key: reader.read_flow(key, "tvl1")])
    if name == "flow":
        reads.append(reader.flow_names)
    for read in reads:
        with pytest.raises(DamagedDataError, match=f"^{re.escape(str(path))}: {damaged}$") as err:
            read("zoom/a")
    # crosses processes as it is (DataLoader workers re-raise a worker's error from its message)
    again = pickle.loads(pickle.dumps(err.value))
    assert type(again) is type(err.value) and str(again) == str(err.value)
    assert str(type(err.value)(str(err.value))) == str(err.value)
    if name != "rgb":  # what is not damaged still reads
        np.testing.assert_array_equal(reader.read_rgb("zoom/a"), rgb)
    if name != "flow":
        np.testing.assert_array_equal(reader.read_flow("zoom/a", "tvnet"), flow)
    # index, metas (datasets, extraction's resume check), summary: an unreadable video
    assert list(reader.metas(["zoom/a", "zoom/b"])) == ["zoom/b"]
    summary = reader.summary()
    assert summary["unreadable"] == 1 and summary["flow_pairs"] == {"tvl1": 5, "tvnet": 5}
    # extraction: the flows that open are on disk; the damage fails a new flow before computing
    on_disk = {"flow": [], "flow/tvl1": ["tvnet"], "rgb": ["tvl1", "tvnet"]}[name]
    assert reader.flows_on_disk("zoom/a") == on_disk
    flows, damage = reader.finished_state("zoom/a")
    assert flows == on_disk and re.fullmatch(f"{re.escape(str(path))}: {damaged}", damage), damage
    assert reader.finished_state("zoom/b") == (["tvl1", "tvnet"], "")
    assert reader.finished_state("zoom/none") == ([], "")
    # the shallow check opens every group and dataset header (no frame is decoded)
    for deep in (False, True):
        problems = reader.validate(deep=deep)
        assert len(problems) == 1, problems
        assert re.fullmatch(rf"videos/zoom/a\.h5: {damaged}", problems[0]), problems


def test_damaged_flow_names_the_redo_that_computes_that_flow(store):
    """A redo computes one flow and keeps of the old file only what still decodes: the repair of
    a damaged ``tvnet`` or ``tvl1_backward`` names its ``--method`` and ``--backward`` (``--redo
    KEY`` alone computed tvl1 and dropped the damaged flow, after which the store validated), and
    a redo that drops one says what computes it again."""
    rgb, flow = make_video(72)
    write_video(store, "zoom/a", rgb, {n: flow for n in ("tvl1", "tvnet", "tvl1_backward")},
                flow_codec="jpegls")
    with h5py.File(store.path / "videos/zoom/a.h5", "r+") as f:
        for name in ("tvnet", "tvl1_backward"):
            blob = f[f"flow/{name}"][1].copy()
            blob[len(blob) // 2] ^= 0x5A  # fails its CRC
            f[f"flow/{name}"][1] = blob
    reader = FlowStore(store.path)
    same = ", with the options it was extracted with (flowkit info shows them)"
    redo = "re-extract it: flowkit extract VIDEO_DIR -o STORE --redo zoom/a"
    tvnet, backward = f"{redo} --method tvnet{same}", f"{redo} --backward{same}"
    for name, hint in (("tvnet", tvnet), ("tvl1_backward", backward)):
        with pytest.raises(DamagedDataError, match=re.escape(hint) + "$"):
            reader.read_flow("zoom/a", name)
    problems = sorted(reader.validate(deep=True))
    assert len(problems) == 2 and problems[0].endswith(backward) and problems[1].endswith(tvnet)
    w = store.writer("zoom/a", source="/data/zoom/a.mp4", fps=25.0, flow_codec="jpegls",
                     rgb_codec="raw", redo=True)
    with w:
        w.append_rgb(rgb)
        w.append_flow("tvl1", flow, ENGINE)
    again = "compute it again: flowkit extract VIDEO_DIR -o STORE"
    assert sorted(str(d).rsplit("; ", 1)[1] for d in w.dropped) == [
        f"{again} --backward{same}", f"{again} --method tvnet{same}"]


def damage_attributes(path, name: str, attr: str = "params") -> None:
    """Break the value of the string attribute ``attr`` of dataset ``name`` of the HDF5 file
    ``path`` where it lives, in a global heap collection the file's other strings share (the index
    of its heap object): ``name`` and every other object still open, the other attributes still
    read, but reading ``name``'s attributes fails ("bad heap pointer")."""
    import struct

    with h5py.File(path, "r") as f:
        header = h5py.h5o.get_info(f[name].id).addr
    data = path.read_bytes()
    # the attribute message (version 3): version, flags, name, datatype and dataspace sizes,
    # encoding, then the name, datatype, dataspace and value (length, collection, object index)
    at = data.index(attr.encode() + b"\0", header)
    version, _, name_size, type_size, space_size, _ = struct.unpack_from("<BBHHHB", data, at - 9)
    assert version == 3 and name_size == len(attr) + 1, (version, name_size)
    _, collection, index = struct.unpack_from("<IQI", data, at + name_size + type_size + space_size)
    assert data[collection:collection + 4] == b"GCOL"
    end = collection + struct.unpack_from("<Q", data, collection + 8)[0]
    pos = collection + 16  # the objects: index, references, reserved, size, value (8-aligned)
    while pos < end and struct.unpack_from("<H", data, pos)[0] != index:
        pos += 16 + (struct.unpack_from("<Q", data, pos + 8)[0] + 7) // 8 * 8
    assert pos < end, "no heap object of that index"
    with open(path, "r+b") as raw:
        raw.seek(pos)
        raw.write(struct.pack("<H", 0xFFF0))
    with h5py.File(path, "r") as f:  # only what was meant is broken
        f[name]
        dict(f.attrs)
        with pytest.raises(Exception, match="heap"):
            dict(f[name].attrs)
        for other in ["rgb"] + [f"flow/{n}" for n in f["flow"]]:
            if other != name:
                dict(f[other].attrs)


def test_damaged_flow_attributes_are_damage_to_an_extraction(store):
    """A flow dataset whose header opens but whose attributes cannot be read (damage in the global
    heap holding their strings): extraction's view of the finished file counts that flow as
    damaged, naming the file, the attributes and ``--redo``, and not as on disk (committing
    copies those attributes and reading decodes with them). Before, the flow counted as on disk
    and the damage went unseen: an extraction of that flow skipped the video as "finished by
    another process", one of another flow computed it and failed at commit."""
    rgb, flow = make_video(71)
    for key in ("zoom/a", "zoom/b"):
        write_video(store, key, rgb, {"tvl1": flow, "tvnet": flow})
    path = store.path / "videos/zoom/a.h5"
    damage_attributes(path, "flow/tvl1")
    reader = FlowStore(store.path)
    damaged = (rf"{re.escape(str(path))}: /flow/tvl1 attributes of video 'zoom/a' cannot be "
               r"opened, it is damaged \(.*heap.*\); "
               r"re-extract it: flowkit extract VIDEO_DIR -o STORE --redo zoom/a")
    flows, damage = reader.finished_state("zoom/a")
    assert flows == ["tvnet"] and re.fullmatch(damaged, damage), (flows, damage)
    assert reader.flows_on_disk("zoom/a") == ["tvnet"]
    assert reader.finished_state("zoom/b") == (["tvl1", "tvnet"], "")
    # the index cannot read it either (which is why a run sets out to extract it)
    assert list(reader.metas(["zoom/a", "zoom/b"])) == ["zoom/b"]
    with pytest.raises(DamagedDataError, match=damaged):
        reader.meta("zoom/a")
    [problem] = reader.validate()
    assert "/flow/tvl1 attributes of video 'zoom/a'" in problem and "--redo zoom/a" in problem


# ----------------------------------------------------------------------------- many processes

class _FlowFrames(torch.utils.data.Dataset):
    def __init__(self, store, keys, per_video):
        self.store, self.items = store, [(k, i) for k in keys for i in range(per_video)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, n):
        key, i = self.items[n]
        return n, torch.from_numpy(self.store.read_flow(key, index=i)), os.getpid()


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_dataloader_workers_read_correct_data(store):
    expected = {}
    for v in range(3):
        rgb, flow = make_video(20 + v, frames=5)
        write_video(store, f"zoom/w{v}", rgb, {"tvl1": flow})
        expected[f"zoom/w{v}"] = flow
    reader = FlowStore(store.path)
    reader.read_flow("zoom/w0", index=0)  # a handle opened before the fork must not be shared
    dataset = _FlowFrames(reader, sorted(expected), per_video=4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=4,
                                         multiprocessing_context="fork")
    pids = set()
    for n, flow, pid in loader:
        key, i = dataset.items[int(n)]
        np.testing.assert_array_equal(flow[0].numpy(), expected[key][i])
        pids.add(int(pid))
    assert len(pids) == 4 and os.getpid() not in pids
    np.testing.assert_array_equal(reader.read_flow("zoom/w0", index=0), expected["zoom/w0"][0])


def test_store_pickles_without_handles(store):
    """Spawned workers get a pickled store: it must travel without h5py handles and reopen."""
    rgb, flow = make_video(30)
    write_video(store, "zoom/p", rgb, {"tvl1": flow})
    reader = FlowStore(store.path, max_open_files=1)
    reader.read_flow("zoom/p", index=0)
    copy = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(copy.read_flow("zoom/p"), flow)
    np.testing.assert_array_equal(reader.read_rgb("zoom/p"), rgb)


def _write_keys(path, keys):
    store = FlowStore(path, mode="a")
    for key in keys:
        rgb, flow = make_video(int(key[1:]))
        write_video(store, key, rgb, {"tvl1": flow})


def test_concurrent_writers_share_one_store(tmp_path):
    path = tmp_path / "shared"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_keys, args=(path, [f"k{r}{i}" for i in range(3)]))
             for r in range(1, 4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = FlowStore(path)
    assert len(store) == 9 and store.validate() == [] and store.partials() == []
    np.testing.assert_array_equal(store.read_rgb("k21"), make_video(21)[0])


# ----------------------------------------------------------------------------- a real crash

CRASH_WRITER = textwrap.dedent('''
    import sys, time
    import numpy as np

    def make(i):
        rng = np.random.default_rng(100 + i)
        rgb = rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8)
        flow = rng.normal(0, 6, (5, 2, 24, 32)).astype(np.float16).astype(np.float32)
        return rgb, flow

    ENGINE = {"engine": "tvl1", "version": "1", "params": {}}

    if __name__ == "__main__":
        from flowkit.store import FlowStore
        store = FlowStore(sys.argv[1], mode="a")
        for i in range(100):
            rgb, flow = make(i)
            with store.writer(f"cls/v{i}", source=f"v{i}.mp4", fps=25,
                              flow_codec="uint8" if i % 2 else "float16", rgb_codec="raw") as w:
                w.append_rgb(rgb)
                w.append_flow("tvl1", flow, ENGINE)
                if i == 2:
                    print("WRITING", i, flush=True)
                    while True:  # keep streaming into the third video until killed
                        w.append_rgb(rgb)
                        time.sleep(0.001)
            print("DONE", i, flush=True)
''')


def test_sigkill_while_writing_loses_only_the_video_in_progress(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(CRASH_WRITER)
    path = tmp_path / "crash"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        while not lines or lines[-1] != "WRITING 2":
            line = proc.stdout.readline()
            assert line, f"writer exited early: {lines}"
            lines.append(line.strip())
        time.sleep(0.05)  # let it stream more frames into the partial
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and lines == ["DONE 0", "DONE 1", "WRITING 2"]

    namespace = {}
    exec(CRASH_WRITER, namespace)
    store = FlowStore(path, mode="a")
    assert store.keys() == ["cls/v0", "cls/v1"] and not store.is_complete("cls/v2")
    assert store.validate(deep=True) == []
    assert len(store.partials()) == 1 and store.summary()["partials"] == 1
    for i, key in enumerate(store.keys()):
        rgb, flow = namespace["make"](i)
        np.testing.assert_array_equal(store.read_rgb(key), rgb)
        expected = flow if i % 2 == 0 else dequantize(quantize(flow, 20.0), 20.0)
        np.testing.assert_array_equal(store.read_flow(key), expected)
    assert len(store.remove_partials()) == 1 and store.partials() == []
    rgb, flow = namespace["make"](2)  # rerunning redoes the lost video
    write_video(store, "cls/v2", rgb, {"tvl1": flow})
    assert store.keys() == ["cls/v0", "cls/v1", "cls/v2"] and store.validate() == []


def test_open_file_limit_evicts_least_recently_used(store):
    videos = {f"zoom/l{i}": make_video(40 + i)[1] for i in range(3)}
    for key, flow in videos.items():
        write_video(store, key, flows={"tvl1": flow})
    reader = FlowStore(store.path, max_open_files=2)
    for key in ["zoom/l0", "zoom/l1", "zoom/l2", "zoom/l0", "zoom/l2"]:
        np.testing.assert_array_equal(reader.read_flow(key), videos[key])
        assert len(reader._handles) <= 2
    reader.close()
    assert not reader._handles


def test_codec_cache_is_dropped_with_its_file(store):
    """Each open file's codecs are kept beside its handle and dropped with it: a DataLoader worker
    reading 300k videos holds max_open_files videos' codecs, not 130 MB of them."""
    for i in range(5):
        write_video(store, f"zoom/c{i}", *make_video(45 + i, frames=2)[:1], flows={})
    reader = FlowStore(store.path, max_open_files=2)
    for key in reader.keys():
        reader.read_rgb(key)
        assert set(reader._codecs) == set(reader._handles)
    assert len(reader._codecs) == 2
    assert pickle.loads(pickle.dumps(reader))._codecs == {}
    reader.close()
    assert reader._codecs == {}


def test_metas_are_meta_abridged_and_come_from_the_index_once_indexed(store, monkeypatch):
    """What datasets read and extraction compares of every video, without opening 300k files at
    every start: each field equals meta()'s, the index serves unchanged files, a redone file is
    read again, a missing one is left out."""
    from flowkit.store import summary

    rgb, flow = make_video(60, frames=5)
    write_video(store, "zoom/a", rgb, {"tvl1": flow}, label=1, label_name="zoom",
                rgb_codec="jpeg:90")
    write_video(store, "zoom/b", None, {"tvl1": flow, "tvl1_backward": flow}, label=1,
                flow_codec="uint8:16", step=2)
    first = store.metas(["zoom/a", "zoom/b", "zoom/gone"])
    assert set(first) == {"zoom/a", "zoom/b"}
    for key, brief in first.items():
        meta = store.meta(key)
        assert sorted(brief["flows"]) == sorted(meta["flows"])
        for field in summary.BRIEF_ATTRS + ("num_frames", "has_rgb", "rgb_codec"):
            assert brief.get(field) == meta.get(field), (key, field)
        for name, flow_brief in brief["flows"].items():
            for field in ("codec_spec", "engine_version", "params", "bound"):
                assert flow_brief[field] == meta["flows"][name].get(field), (key, name, field)
    assert first["zoom/a"]["rgb_codec"] == "jpeg:90" and first["zoom/b"]["step"] == 2
    assert first["zoom/b"]["flows"]["tvl1"]["codec_spec"] == "uint8:16"
    assert first["zoom/b"]["flows"]["tvl1"]["bound"] == 16.0 and not first["zoom/b"]["has_rgb"]
    index = json.loads((store.path / "index.json").read_text())
    # one layout per kind of video (RGB + one flow, two flows), each flow's parameters in it once;
    # a video is a row of numbers
    assert len(index["layouts"]) == 2 and index["version"] == 4
    assert json.dumps(index["layouts"]).count('"warps"') == 3
    assert all(isinstance(v, (int, float, str)) or v is None
               for row in index["videos"].values() for v in row)

    def no_open(path):
        raise AssertionError(f"opened {path}: the index should have served it")
    monkeypatch.setattr(summary, "video_facts", no_open)
    assert FlowStore(store.path).metas(["zoom/a", "zoom/b"]) == first
    monkeypatch.undo()
    write_video(store, "zoom/a", *make_video(61, frames=8)[:1], flows={}, label=0, redo=True)
    again = store.metas(["zoom/a"])["zoom/a"]
    assert (again["num_frames"], again["label"], again["flows"]) == (8, 0, {})


def test_index_rows_give_back_every_fact_and_read_version_3(store, monkeypatch):
    """index.json (version 4) keeps each video as a row of its per-video facts on a shared layout:
    the facts built from it equal the file's own, whatever the video (sizes, labels, flows,
    clipped values); a version-3 index (facts in full) serves without opening a file and is
    written back as version 4; a damaged row costs only its video a read."""
    from flowkit.store import index, summary

    rgb, flow = make_video(70, frames=5)
    write_video(store, "zoom/a", rgb, {"tvl1": flow}, label=1, label_name="zoom")
    write_video(store, "zoom/b", make_video(71, frames=7, height=8, width=10)[0], {}, label=0,
                label_name="pan_left")
    write_video(store, "zoom/c", None, {"tvl1": flow * 9, "tvl1_backward": flow},
                flow_codec="uint8:4")  # clipped values: a per-video fact
    summary_before = store.summary()
    keys = store.keys()
    files = {k: store.path / "videos" / f"{k}.h5" for k in keys}
    loaded = index.load_index(store.path)
    assert {k: loaded[k].facts for k in keys} == {k: summary.video_facts(files[k]) for k in keys}
    assert loaded["zoom/c"].facts["flows"]["tvl1"]["clipped"] > 0
    metas = store.metas(keys)

    def no_open(path):
        raise AssertionError(f"opened {path}: the index should have served it")
    # the same facts written as version 3 (one "params" table, facts in full)
    table, v3 = [ENGINE["params"]], {}
    for key, entry in loaded.items():
        facts = json.loads(json.dumps(entry.facts))
        for record in facts["meta"]["flows"].values():
            record["params"] = 0
        v3[key] = {"stamp": entry.stamp, "facts": facts}
    (store.path / "index.json").write_text(json.dumps(
        {"format": "flowkit-store-index", "version": 3, "params": table, "videos": v3}))
    monkeypatch.setattr(summary, "video_facts", no_open)
    assert FlowStore(store.path).summary() == summary_before
    assert json.loads((store.path / "index.json").read_text())["version"] == 4
    assert FlowStore(store.path).metas(keys) == metas
    monkeypatch.undo()

    data = json.loads((store.path / "index.json").read_text())
    data["videos"]["zoom/b"] = data["videos"]["zoom/b"][:-1]  # damaged: one fact short
    (store.path / "index.json").write_text(json.dumps(data))
    opened, real = [], summary.video_facts
    monkeypatch.setattr(summary, "video_facts", lambda path: opened.append(path.stem) or real(path))
    assert FlowStore(store.path).metas(keys) == metas and opened == ["b"]


def test_summary_bytes_per_rgb_frame_counts_only_the_rgb_dataset(store):
    """``bytes_per_rgb_frame`` is what one stored RGB frame costs (the figure a user sizes a
    store by): the RGB dataset's bytes over its frames, not the whole file's (flow included)."""
    from flowkit.store.summary import dataset_bytes

    rgb, flow = make_video(80, frames=5)
    write_video(store, "zoom/a", rgb, {"tvl1": flow})
    with h5py.File(store.path / "videos" / "zoom" / "a.h5", "r") as f:
        rgb_bytes = dataset_bytes(f["rgb"])
    s = store.summary()
    assert s["bytes"] > rgb_bytes  # the flow takes room too
    assert s["bytes_per_rgb_frame"] == pytest.approx(rgb_bytes / 5)


def test_summary_bytes_count_unreadable_files_too(store):
    """A file that is not HDF5 still takes disk space: ``bytes`` is what the store's video files
    take (as ``du`` would say), and the file is counted as unreadable."""
    write_video(store, "zoom/a", *make_video(81, frames=4)[:1], flows={})
    (store.path / "videos" / "zoom" / "broken.h5").write_bytes(b"not hdf5" * 1000)
    s = store.summary()
    assert s["unreadable"] == 1 and s["videos"] == 2
    assert s["bytes"] == sum(p.stat().st_size for p in (store.path / "videos").rglob("*.h5"))


def test_summary_max_error_seen_is_the_worst_over_videos(tmp_path):
    """``max_error_seen`` tells the user the largest 8-bit coding error in the whole store: the
    worst video's, whether a video coded more exactly is read before or after it (two stores,
    the worst video first in one and last in the other)."""
    from flowkit.store import dequantize, quantize

    _, flow = make_video(82, frames=4, scale=4.0)
    exact = dequantize(quantize(flow, 8.0), 8.0)  # on the codec's grid: coded without error
    for i, worst in enumerate(("zoom/a", "zoom/b")):
        store = FlowStore(tmp_path / f"s{i}", mode="a", classes=["zoom"])
        for key in ("zoom/a", "zoom/b"):
            write_video(store, key, flows={"tvl1": flow if key == worst else exact},
                        flow_codec="uint8:8")
        seen = {k: store.meta(k)["flows"]["tvl1"]["max_error_seen"] for k in ("zoom/a", "zoom/b")}
        assert min(seen.values()) < seen[worst]
        assert store.summary()["max_error_seen"]["tvl1"] == pytest.approx(seen[worst]), worst


def test_summary_backends_default_to_torch_and_name_the_recorded_one(tmp_path):
    """Flow written without a ``backend`` (every store before backends were recorded) was
    computed with torch; a recorded backend is reported as recorded."""
    plain = FlowStore(tmp_path / "plain", mode="a", classes=["zoom"])
    write_video(plain, "zoom/a", flows={"tvl1": make_video(83, frames=3)[1]})
    assert plain.summary()["backends"] == {"tvl1": ["torch"]}
    named = FlowStore(tmp_path / "named", mode="a", classes=["zoom"])
    write_video(named, "zoom/a", flows={"tvl1": make_video(83, frames=3)[1]},
                engine={**ENGINE, "backend": "external"})
    assert named.summary()["backends"] == {"tvl1": ["external"]}


def test_a_checked_key_missing_from_the_index_is_read_again(store):
    """``checked`` (keys found current earlier in the process) serves an index entry without a
    stat; a key in it whose entry is not in the index (a rebuilt or reloaded index) is a file to
    read, never a found video without facts."""
    from flowkit.store.index import current

    write_video(store, "zoom/a", *make_video(84, frames=3)[:1], flows={})
    path = str(store.path / "videos" / "zoom" / "a.h5")
    found, stale = current(["zoom/a"], lambda key: path, {}, {"zoom/a"})
    assert found == {} and [(k, p) for k, p, _ in stale] == [("zoom/a", path)]


def test_an_index_row_with_a_negative_layout_is_read_again(store, monkeypatch):
    """A row whose layout id is -1 (a damaged or hand-edited index.json) must not index the
    layouts from the end (Python's ``[-1]``): the row is dropped and its video read again."""
    from flowkit.store import summary

    rgb, flow = make_video(85, frames=4)
    write_video(store, "zoom/a", rgb, {"tvl1": flow})
    metas = store.metas(["zoom/a"])
    data = json.loads((store.path / "index.json").read_text())
    assert data["videos"]["zoom/a"][3] == 0
    data["videos"]["zoom/a"][3] = -1
    (store.path / "index.json").write_text(json.dumps(data))
    opened, real = [], summary.video_facts
    monkeypatch.setattr(summary, "video_facts", lambda path: opened.append(path.stem) or real(path))
    assert FlowStore(store.path).metas(["zoom/a"]) == metas and opened == ["a"]


def test_summary_cache_follows_replaced_videos(store):
    for i in range(2):
        write_video(store, f"zoom/c{i}", *make_video(50 + i, frames=4)[:1], flows={})
    assert store.summary()["frames"] == 8
    assert (store.path / "index.json").is_file()
    rgb, flow = make_video(52, frames=7)
    write_video(store, "zoom/c1", rgb, {"tvl1": flow})  # redone: a new file under the same key
    fresh = store.summary()
    assert fresh["frames"] == 11 and fresh["flow_pairs"] == {"tvl1": 6}
    (store.path / "index.json").write_text("{not json")  # a broken cache is rebuilt
    assert store.summary() == fresh
    (store.path / "videos/zoom/c0.h5").unlink()
    assert store.summary()["videos"] == 1
    assert sorted(p.name for p in store.path.iterdir()) == ["index.json", "store.json", "videos"]


def test_index_held_parses_the_index_once_while_no_one_rewrites_it(store, monkeypatch):
    """Inside index_held() metas/summary reuse the parsed index.json (a run's split and datasets
    parse 300k videos' index once, not three times); a rewrite by another process is seen; the
    held copy is dropped at the end of the block and never pickled to DataLoader workers."""
    import pickle

    from flowkit.store import flowstore

    for i in range(3):
        write_video(store, f"zoom/h{i}", *make_video(70 + i, frames=3)[:1], flows={})
    store.metas(store.keys())  # indexed
    parsed = []
    real = flowstore.load_index
    monkeypatch.setattr(flowstore, "load_index", lambda root: parsed.append(1) or real(root))
    with store.index_held():
        first = store.metas(["zoom/h0", "zoom/h1"])
        assert store.metas(["zoom/h0", "zoom/h1"]) == first and store.summary()["videos"] == 3
        assert len(parsed) == 1
        assert pickle.loads(pickle.dumps(store))._held_index is None
        write_video(store, "zoom/h3", *make_video(73, frames=3)[:1], flows={})
        assert len(store.metas(store.keys())) == 4  # indexes h3: rewrites index.json, kept held
        FlowStore(store.path).metas(["zoom/h9"])  # another store object parses; nothing new
        assert len(store.metas(store.keys())) == 4 and len(parsed) == 2
        write_video(store, "zoom/h4", *make_video(74, frames=3)[:1], flows={})
        FlowStore(store.path).metas(["zoom/h4"])  # another process rewrites the index
        assert len(store.metas(store.keys())) == 5 and len(parsed) == 4  # 1 there, 1 here
    assert store._held_index is None
    store.metas(["zoom/h0"])
    assert len(parsed) == 5


def test_index_held_serves_a_replaced_video_anew_where_the_index_cannot_be_written(store,
                                                                                   monkeypatch):
    """On a read-only store a video replaced since it was indexed is read from its file; inside
    index_held() every later call describes it so too, never by its old entry."""
    import errno

    from flowkit.store import index

    write_video(store, "zoom/r", make_video(75, frames=4)[0])
    store.summary()  # indexed: 4 frames
    write_video(store, "zoom/r", make_video(76, frames=6)[0])  # replaced: a new file

    def read_only(root, videos):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(index, "save_index", read_only)
    reader = FlowStore(store.path)
    with reader.index_held():
        for _ in range(2):
            assert reader.metas(["zoom/r"])["zoom/r"]["num_frames"] == 6
        assert reader.summary()["frames"] == 6


def test_threads_sharing_a_store_take_turns_at_the_held_index(store, monkeypatch):
    """Threads sharing one store (and its index_held blocks) read and extend the held index one
    at a time: one thread's update of the held copy broke another's walk over it ("dictionary
    changed size during iteration"), and the block count was shared without a lock."""
    import threading

    from flowkit.store import flowstore

    for i in range(2):
        write_video(store, f"zoom/t{i}", *make_video(90 + i, frames=3)[:1], flows={})
    inside, overlaps = [], []
    real = flowstore.indexed_facts

    def slow_facts(*args, **kwargs):
        overlaps.append(bool(inside))
        inside.append(1)
        time.sleep(0.2)  # long enough for the other thread to come in, were it let in
        inside.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(flowstore, "indexed_facts", slow_facts)

    def run(key):
        with store.index_held():
            store.metas([key])
            store.summary()

    threads = [threading.Thread(target=run, args=(f"zoom/t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 4 and not any(overlaps)
    assert store._holding == 0 and store._held_index is None


def test_videos_new_to_the_index_are_read_under_a_progress_bar(store, monkeypatch):
    """A store just extracted may hold 300k videos the index has not seen (20 minutes of reading):
    metas() and summary() read them under one bar, after every stamp was compared, once reading
    takes a second (here: at once); a few quick ones show none."""
    from flowkit.store import summary

    for i in range(4):
        write_video(store, f"zoom/p{i}", *make_video(80 + i, frames=3)[:1], flows={})
    seen = TaskRecorder()
    store.metas(["zoom/p3"], seen)
    assert seen.tasks == []  # under a second
    monkeypatch.setattr(summary, "BAR_AFTER_SECONDS", 0.0)
    assert len(store.metas(["zoom/p0", "zoom/p1"], seen)) == 2
    assert seen.tasks == [("indexing videos new to the store's index", 2, 2)]
    seen.tasks.clear()
    assert store.summary(seen)["videos"] == 4 and seen.tasks == [
        ("indexing videos new to the store's index", 1, 1)]
    seen.tasks.clear()
    store.metas(store.keys(), seen)
    store.summary(seen)
    assert seen.tasks == []  # all indexed: nothing to read, no bar
