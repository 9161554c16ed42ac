"""Store codecs (flowkit/store/codecs.py): the error bound of ``jpegls`` holds on real flow and on
adversarial values, clipping is counted, every codec is recorded and read back without flags, deep
validation decodes everything and checks the bound, stores written before codecs still read, and
parallel encoding writes what serial encoding writes."""
from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from skimage import data

from flowkit.errors import DamagedDataError, StoreError
from flowkit.store import FlowStore, codecs, flow_codec, rgb_codec

ENGINE = {"engine": "tvl1", "version": "1", "params": {}}
DATA = Path(__file__).parent / "data"


def _photo_frames(n=4, size=(48, 64)) -> np.ndarray:
    rgb = cv2.resize(data.astronaut(), size[::-1], interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(rgb, 2 * t, axis=1) for t in range(n)])


def _flow(n=3, size=(48, 64), seed=0) -> np.ndarray:
    """Smooth motion plus noise and a few large values: what real flow fields look like."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    base = np.stack([3 * np.sin(yy / 9) + 1.5, -2 * np.cos(xx / 13)])
    flow = base[None] + rng.normal(0, 0.4, (n, 2, *size)).astype(np.float32)
    flow[:, 0, :3, :3] = 45.0  # beyond rawframes' +-20 clip: kept within the bound here
    return flow.astype(np.float32)


def _write(store, key, flow, frames=None, **codecs_):
    with store.writer(key, source=f"{key}.mp4", fps=25, **codecs_) as w:
        if frames is not None:
            w.append_rgb(frames)
        w.append_flow("tvl1", flow[:2], ENGINE)
        w.append_flow("tvl1", flow[2:])


@pytest.fixture
def store(tmp_path):
    return FlowStore(tmp_path / "s", mode="a", classes=["c"])


@pytest.mark.parametrize("max_error", [0.1, 0.05, 0.5])
def test_jpegls_error_is_bounded_and_recorded(store, max_error):
    flow = _flow()
    _write(store, "v", flow, flow_codec=f"jpegls:{max_error}")
    back = store.read_flow("v")
    assert back.shape == flow.shape and back.dtype == np.float32
    err = np.abs(back - flow)
    assert err.max() <= max_error and err.max() > max_error / 4  # bounded, and really lossy
    meta = store.meta("v")["flows"]["tvl1"]
    assert meta["codec"] == "jpegls" and meta["max_error"] == max_error
    assert meta["shape"] == list(flow.shape) and meta["dtype"] == "float32"
    assert 0 < meta["max_error_seen"] <= max_error and meta["clipped_values"] == 0
    np.testing.assert_array_equal(store.read_flow("v", index=[2, 0, 2]), back[[2, 0, 2]])
    np.testing.assert_array_equal(store.read_flow("v", index=1), back[1])
    assert store.validate(deep=True) == []


def test_adversarial_values_stay_within_the_bound():
    """Noise with no structure, steps and extreme values: the bound does not rely on smoothness."""
    codec = flow_codec("jpegls")
    rng = np.random.default_rng(3)
    for frame in (rng.uniform(-190, 190, (2, 16, 24)), rng.normal(0, 40, (2, 31, 17)),
                  rng.uniform(5000, 5300, (2, 9, 9)),
                  np.full((2, 8, 8), 0.05), np.kron(rng.integers(-3, 4, (2, 4, 4)), np.ones((5, 5)))):
        frame = frame.astype(np.float32)
        blob, stats = codec.encode(frame)
        back = codec.decode(blob)
        assert back.shape == frame.shape and np.abs(back - frame).max() <= 0.1
        assert stats["error"] <= 0.1 and stats["clipped"] == 0


@pytest.mark.parametrize("near, far", [(0, 50_000.0), (16, 5000.0)])
def test_values_beyond_the_range_are_counted_not_silent(store, near, far):
    """A frame's values may span 65535 steps: 13107 px at 0.1 px with near 0, 390 px with near 16."""
    flow = _flow()
    flow[1, 1, 5, 5] = far
    flow[2, 0, 0, 0] = -2 * far
    _write(store, "far", flow, flow_codec=flow_codec("jpegls", near=near))
    meta = store.meta("far")["flows"]["tvl1"]
    assert meta["clipped_values"] == 2 and meta["near"] == near
    summary = store.summary()
    assert summary["clipped"] == {"tvl1": 2}
    assert any("2 values beyond the codec's range were clipped in 1 videos (e.g. far)" in w
               for w in summary["warnings"])
    back = store.read_flow("far")
    inside = np.abs(flow) < 1000
    assert np.abs(back - flow)[inside].max() <= 0.1


def test_identical_frames_in_one_batch(store):
    """Equal-length encoded frames (here identical ones) are still one byte string each."""
    flow = np.full((5, 2, 16, 20), 1.25, np.float32)
    _write(store, "still", flow, np.zeros((6, 16, 20, 3), np.uint8))
    assert np.abs(store.read_flow("still") - flow).max() <= 0.1
    np.testing.assert_array_equal(store.read_rgb("still"), np.zeros((6, 16, 20, 3), np.uint8))


def test_jpeg_rgb_quality_is_recorded_and_close(store):
    frames = _photo_frames()
    _write(store, "v", _flow(), frames, rgb_codec="jpeg:90")
    back = store.read_rgb("v")
    assert back.shape == frames.shape and back.dtype == np.uint8
    mse = np.mean((back.astype(np.float64) - frames) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 25  # PSNR in dB (a small, detailed photo)
    store.close()  # its read handle has HDF5 locking off; h5py's default open would clash
    with h5py.File(store.path / "videos" / "v.h5") as f:
        assert f["rgb"].attrs["codec"] == "jpeg" and f["rgb"].attrs["quality"] == 90
    assert store.read_rgb("v", index=-1).shape == frames.shape[1:]
    summary = store.summary()
    assert summary["rgb_codec"] == ["jpeg (quality 90)"] and summary["bytes_per_rgb_frame"] > 0


def test_summary_reports_bytes_per_frame_and_codecs(store):
    flow, frames = _flow(), _photo_frames()
    _write(store, "compact", flow, frames)
    _write(store, "lossless", flow, frames, flow_codec="float16", rgb_codec="raw")
    compact = FlowStore(store.path).summary()
    assert compact["quantization"] == {"tvl1": ["float16", "jpegls (max error 0.1 px)"]}
    assert sorted(compact["rgb_codec"]) == ["jpeg (quality 95)", "raw"]
    sizes = {}
    for key in ("compact", "lossless"):
        with h5py.File(store.path / "videos" / f"{key}.h5") as f:
            sizes[key] = (int(f["flow/tvl1"].attrs["encoded_bytes"]), int(f["rgb"].attrs["encoded_bytes"]))
    assert sizes["compact"][0] < sizes["lossless"][0] / 3 and sizes["compact"][1] < sizes["lossless"][1]
    assert compact["bytes_per_flow_pair"]["tvl1"] == pytest.approx(
        (sizes["compact"][0] + sizes["lossless"][0]) / 6)


def test_deep_validation_finds_a_damaged_frame_and_a_broken_bound(store):
    _write(store, "v", _flow(), _photo_frames())
    path = store.path / "videos" / "v.h5"
    with h5py.File(path, "r+") as f:  # damage one encoded frame in place
        f["flow/tvl1"][1] = np.frombuffer(b"not a jpeg-ls stream", np.uint8)
    problems = FlowStore(store.path).validate(deep=True)
    assert len(problems) == 1 and "/flow/tvl1[1] is damaged: its bytes fail their" in problems[0]
    assert FlowStore(store.path).validate(deep=False) == []
    with h5py.File(path, "r+") as f:  # a dataset without frame CRCs: its decoder finds it
        del f["flow/tvl1"].attrs[codecs.FRAME_CRC_ATTR]
    problems = FlowStore(store.path).validate(deep=True)
    assert len(problems) == 1 and "/flow/tvl1[1] cannot be read or decoded" in problems[0]
    with h5py.File(path, "r+") as f:
        f["flow/tvl1"].attrs["max_error_seen"] = 0.3
    assert any("above the bound 0.1 px" in p for p in FlowStore(store.path).validate())


def _flip_in_file(path: Path, blob: bytes, at: int) -> None:
    """XOR one bit of the stored bytes ``blob`` (an encoded frame) at offset ``at`` of them, where
    they lie in the HDF5 file ``path`` (the vlen heap: no HDF5 checksum covers them)."""
    data = bytearray(path.read_bytes())
    start = data.index(blob)
    assert data.find(blob, start + 1) < 0  # the only copy
    data[start + at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_jpeg_frame_is_damage(store):
    """A decoder repairs or ignores most damage to a JPEG's entropy-coded data (other pixels, no
    error): the frame's CRC32 finds it. Reads of that frame stop naming file, dataset, frame and
    video, decoded or not; deep validation names the dataset; the other frames still read."""
    flow, frames = _flow(), _photo_frames()
    _write(store, "v", flow, frames)
    before = store.read_rgb("v")
    blob = store.read_rgb("v", 2, decode=False)
    store.close()
    path = store.path / "videos" / "v.h5"
    _flip_in_file(path, blob, blob.index(b"\xff\xda") + 40)  # inside the scan, after its header
    reader = FlowStore(store.path)
    damaged = (rf"^{re.escape(str(path))}: /rgb frames {{}} of video 'v' are damaged \(frame 2 "
               r"fails its CRC32 check: its bytes changed since they were written\); "
               r"re-extract it: .*--redo v$")
    # the frames the video holds (4), plain ints (not np.int64(3)), the first 8 of a long list
    for index, shown in ((slice(None), r"\[0:4\]"), (slice(1, 32), r"\[1:4\]"), (2, "2"),
                         (np.array([3, 2]), r"\[3, 2\]"),
                         ([2] * 9, r"\[2, 2, 2, 2, 2, 2, 2, 2, \.\.\.\]")):
        with pytest.raises(DamagedDataError, match=damaged.format(shown)):
            reader.read_rgb("v", index)
    with pytest.raises(DamagedDataError, match=damaged.format("2")):
        reader.read_rgb("v", 2, decode=False)  # what export copies as it is
    np.testing.assert_array_equal(reader.read_rgb("v", [0, 1, 3]), before[[0, 1, 3]])
    assert np.abs(reader.read_flow("v") - flow).max() <= 0.1
    assert reader.validate(deep=True) == [
        "videos/v.h5: /rgb[2] is damaged: its bytes fail their CRC32 check; re-extract it: "
        "flowkit extract VIDEO_DIR -o STORE --redo v"]
    assert reader.validate(deep=False) == []  # frames are read by the deep check only


def test_frame_crcs_are_recorded_kept_on_merge_and_never_in_metas(store):
    """Every encoded dataset (jpeg RGB, JPEG files stored as they are, jpegls flow) records each
    frame's CRC32; merging another engine's flow into the video copies them with the frames;
    array codecs record none; metas do not carry them."""
    flow, frames = _flow(), _photo_frames()
    with store.writer("v", source="v.mp4", fps=25) as w:
        w.append_rgb_encoded([cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]),
                                           [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
                              for f in frames[:2]])
        w.append_rgb(frames[2:])
        w.append_flow("tvl1", flow, ENGINE)
    with store.writer("v", source="v.mp4", fps=25, flow_codec="float16") as w:
        w.append_flow("farneback", flow, {**ENGINE, "engine": "farneback"})
    store.close()
    with h5py.File(store.path / "videos" / "v.h5") as f:
        for name in ("rgb", "flow/tvl1"):
            crcs = f[name].attrs[codecs.FRAME_CRC_ATTR]
            assert crcs.dtype == np.uint32 and crcs.shape == f[name].shape
            assert crcs.tolist() == [zlib.crc32(bytes(b)) for b in f[name][:]]
        assert codecs.FRAME_CRC_ATTR not in f["flow/farneback"].attrs
    meta = store.meta("v")
    assert all(codecs.FRAME_CRC_ATTR not in m for m in meta["flows"].values())
    assert store.validate(deep=True) == []
    store.close()
    with h5py.File(store.path / "videos" / "v.h5", "r+") as f:  # a record of other frames
        f["rgb"].attrs[codecs.FRAME_CRC_ATTR] = f["rgb"].attrs[codecs.FRAME_CRC_ATTR][:-1]
    assert store.validate() == ["videos/v.h5: /rgb records the CRCs of 3 frames, it holds 4"]
    with pytest.raises(DamagedDataError, match=r"\(its frame CRCs record 3 frames, it holds 4\)"):
        store.read_rgb("v", 0)


def test_encoded_frames_without_crcs_read_as_before(store):
    """Encoded datasets of stores written before frame CRCs: read and validated unchecked."""
    flow, frames = _flow(), _photo_frames()
    _write(store, "v", flow, frames)
    before = (store.read_rgb("v"), store.read_flow("v"))
    store.close()
    with h5py.File(store.path / "videos" / "v.h5", "r+") as f:
        for name in ("rgb", "flow/tvl1"):
            del f[name].attrs[codecs.FRAME_CRC_ATTR]
    reader = FlowStore(store.path)
    np.testing.assert_array_equal(reader.read_rgb("v"), before[0])
    np.testing.assert_array_equal(reader.read_flow("v"), before[1])
    assert reader.read_rgb("v", 1, decode=False)[:2] == b"\xff\xd8"
    assert reader.validate(deep=True) == []


def test_slices_of_encoded_frames_are_checked_against_their_own_crcs(store):
    """A slice that does not start at frame 0 (or steps backwards) checks each frame read against
    the CRC of that frame: a healthy video never reads as damaged (what a clip sampler asks)."""
    flow, frames = _flow(n=7), _photo_frames(n=8)
    _write(store, "v", flow, frames)  # the default codecs: jpeg RGB, jpegls flow (frame CRCs)
    rgb, back = store.read_rgb("v"), store.read_flow("v")
    np.testing.assert_array_equal(store.read_rgb("v", slice(3, 6)), rgb[3:6])
    np.testing.assert_array_equal(store.read_rgb("v", slice(1, None, 3)), rgb[1::3])
    np.testing.assert_array_equal(store.read_flow("v", index=slice(2, 5)), back[2:5])
    np.testing.assert_array_equal(store.read_flow("v", index=slice(None, None, -2)), back[::-2])
    np.testing.assert_array_equal(store.read_rgb("v", slice(6, 0, -2)), rgb[6:0:-2])


def test_max_error_seen_is_the_largest_over_every_batch(store):
    """A video's recorded coding error covers all its batches: a later batch coded exactly (here
    all zeros) does not hide the error of an earlier one from summaries and validation."""
    flow = _flow()
    flow[2:] = 0.0  # _write appends flow[:2], then flow[2:]
    _write(store, "v", flow)
    seen = store.meta("v")["flows"]["tvl1"]["max_error_seen"]
    first = np.abs(store.read_flow("v", index=slice(0, 2)) - flow[:2]).max()
    assert 0 < seen <= 0.1 and seen == pytest.approx(first, rel=1e-4)
    np.testing.assert_array_equal(store.read_flow("v", index=2), flow[2])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float16_refuses_flow_beyond_its_range(store):
    """Finite flow beyond float16's 65504 would be stored as inf, which breaks training: the
    writer refuses it, naming the video and the dataset, and stores nothing."""
    flow = _flow()
    flow[1, 0, 4, 4] = 1e5
    with pytest.raises(StoreError, match=r"video 'big': flow/tvl1: flow exceeds the float16 "
                                         r"range \(65504 pixels\); the engine output is broken"):
        _write(store, "big", flow, flow_codec="float16")
    assert "big" not in store.keys()


def test_a_coding_error_above_the_bound_is_never_committed(store, monkeypatch):
    """The writer checks each batch's measured error against the codec's bound: a codec that
    misses it (a flowkit bug) fails the video loudly rather than storing flow that breaks the
    stated guarantee."""
    encode = codecs.JpegLS.encode

    def too_lossy(self, frame):
        blob, stats = encode(self, frame)
        return blob, {**stats, "error": 0.5}

    monkeypatch.setattr(codecs.JpegLS, "encode", too_lossy)
    with pytest.raises(StoreError, match=r"video 'v': flow/tvl1 was coded with an error of 0\.5 "
                                         r"px, above its bound 0\.1 px \(a flowkit bug; please "
                                         r"report it\)"):
        _write(store, "v", _flow())
    assert "v" not in store.keys() and store.partials() == []


def test_an_undecodable_jpeg_frame_without_crcs_is_damage(store):
    """A stored JPEG frame that OpenCV cannot decode at all (a store written before frame CRCs,
    so no CRC finds it first) reads as damaged data naming the fix, never as a None frame or a
    TypeError; deep validation names the frame."""
    _write(store, "v", _flow(), _photo_frames())
    store.close()
    with h5py.File(store.path / "videos" / "v.h5", "r+") as f:
        del f["rgb"].attrs[codecs.FRAME_CRC_ATTR]
        f["rgb"][1] = np.frombuffer(b"\xff\xd8garbage" * 4, np.uint8)
    reader = FlowStore(store.path)
    for index in (1, slice(None)):
        with pytest.raises(DamagedDataError, match=r"a stored JPEG frame cannot be decoded\); "
                                                   r"re-extract it: .*--redo v$"):
            reader.read_rgb("v", index)
    assert reader.read_rgb("v", 2).shape == (48, 64, 3)
    problems = reader.validate(deep=True)
    assert len(problems) == 1 and problems[0].startswith(
        "videos/v.h5: /rgb[1] cannot be read or decoded: DamagedDataError: a stored JPEG frame "
        "cannot be decoded; re-extract it:")


def test_a_store_written_before_codecs_still_reads(tmp_path):
    """``tests/data/store_v1``: a version-1 store written by flowkit 0.1.0 (commit dfaa041, before
    codecs): float16 and uint8 (bound 20) flow without codec attributes, raw RGB, its old index."""
    shutil.copytree(DATA / "store_v1", tmp_path / "old")
    expected = np.load(DATA / "store_v1_expected.npz")
    frames, flow = expected["rgb"], expected["flow"]
    old = FlowStore(tmp_path / "old")
    assert old.keys() == ["pan/a16", "pan/a8"]
    for key in old.keys():
        np.testing.assert_array_equal(old.read_rgb(key), frames)
        assert old.meta(key)["version"] == 1
    np.testing.assert_allclose(old.read_flow("pan/a16"), flow, rtol=1e-3, atol=1e-3)
    inside = np.abs(flow) <= 20
    assert np.abs(old.read_flow("pan/a8") - flow)[inside].max() <= 20 / 255 + 1e-5
    assert old.read_flow("pan/a8").max() == pytest.approx(20.0)  # the old clip, as written
    assert old.validate(deep=True) == []
    summary = old.summary()
    assert summary["quantization"] == {"tvl1": ["float16", "uint8 (bound 20)"]}
    assert summary["rgb_codec"] == ["raw"]
    # a version-2 video written beside them: one store, both versions
    with FlowStore(tmp_path / "old", mode="a").writer("pan/new", source="new.mp4", fps=25) as w:
        w.append_rgb(frames)
        w.append_flow("tvl1", flow, ENGINE)
    assert np.abs(FlowStore(tmp_path / "old").read_flow("pan/new") - flow).max() <= 0.1


def test_parallel_encoding_writes_what_serial_encoding_writes(tmp_path):
    flow, frames = _flow(n=8), _photo_frames(n=9)
    out = {}
    for threads in (1, 4):
        store = FlowStore(tmp_path / f"t{threads}", mode="a", encode_threads=threads)
        _write(store, "v", flow, frames)
        out[threads] = (store.read_flow("v"), store.read_rgb("v"))
    np.testing.assert_array_equal(out[1][0], out[4][0])
    np.testing.assert_array_equal(out[1][1], out[4][1])


def test_codec_specs_and_errors():
    assert flow_codec("jpegls").describe() == "jpegls (max error 0.1 px)"
    assert flow_codec("jpegls:0.25", near=0).step == pytest.approx(0.25 / 0.5 * 0.999)
    assert rgb_codec("jpeg:80").quality == 80 and rgb_codec("raw").name == "raw"
    assert set(codecs.FLOW_CODECS) == {"jpegls", "float16", "uint8"}
    with pytest.raises(StoreError, match="unknown flow codec 'lzma'.*float16"):
        flow_codec("lzma")
    with pytest.raises(StoreError, match="not a number"):
        flow_codec("jpegls:tiny")
    with pytest.raises(StoreError, match="takes no value"):
        rgb_codec("raw:3")
    with pytest.raises(StoreError, match="quality"):
        rgb_codec("jpeg:101")


def test_a_replaced_video_is_read_with_its_new_codec(store):
    """Codecs are cached per open file: reopening a replaced video rebuilds them."""
    flow = _flow()
    _write(store, "v", flow)  # jpegls
    reader = FlowStore(store.path)
    assert np.abs(reader.read_flow("v") - flow).max() > 1e-2
    _write(FlowStore(store.path, mode="a"), "v", flow, flow_codec="float16")
    reader.close()
    np.testing.assert_allclose(reader.read_flow("v"), flow, atol=0.02)
    assert reader.meta("v")["flows"]["tvl1"]["codec"] == "float16"
