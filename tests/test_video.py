"""flowkit.video: probing, streaming, resizing, encoding, and one clear error per broken file."""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
import warnings

import cv2
import numpy as np
import pytest

from flowkit.errors import FlowkitError, VideoError
from flowkit.samples import MOTIONS, render_sample, sample_motion, sample_specs
from flowkit.video import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    iter_frames,
    load_frames,
    output_size,
    probe,
    write_video,
)

# What the ``sample_videos`` fixture (conftest.py) makes; conftest is not imported, since pytest's
# importlib mode would not allow it.
SAMPLE_FRAMES, SAMPLE_SIZE = 8, (64, 80)


@pytest.fixture(scope="module")
def clip(sample_videos):
    """One sample video: ``pan_left_0.mp4``, 8 frames of 64x80."""
    return sample_videos / "pan_left" / "pan_left_0.mp4"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# --- probe / decode ------------------------------------------------------------------------------

def test_probe(clip):
    info = probe(clip)
    assert isinstance(info, VideoInfo)
    assert (info.height, info.width) == SAMPLE_SIZE
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == SAMPLE_FRAMES
    assert info.duration == pytest.approx(SAMPLE_FRAMES / 25.0, abs=0.05)
    assert info.codec in {"h264", "mpeg4"}
    assert info.path == str(clip)


def test_load_frames_shape_and_dtype(clip):
    frames = load_frames(clip)
    assert frames.shape == (SAMPLE_FRAMES, *SAMPLE_SIZE, 3)
    assert frames.dtype == np.uint8
    assert frames.std() > 10  # a real picture, not a blank decode


def test_iter_frames_yields_owned_arrays(clip):
    frames = list(iter_frames(clip))
    assert len(frames) == SAMPLE_FRAMES
    assert all(f.flags["C_CONTIGUOUS"] and f.flags["OWNDATA"] for f in frames)
    np.testing.assert_array_equal(np.stack(frames), load_frames(clip))


def test_sample_video_matches_rendered_frames(clip):
    """Decoding gives back what was encoded, up to lossy compression and 4:2:0 chroma."""
    spec = sample_specs(classes=("pan_left", "zoom_in"), videos_per_class=2, frames=SAMPLE_FRAMES,
                        size=SAMPLE_SIZE)[0]
    error = np.abs(load_frames(clip).astype(np.float32) - render_sample(spec)).mean()
    assert error < 5.0


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        (240, 320, None, (240, 320)),
        (240, 320, 120, (120, 160)),
        (320, 240, 120, (160, 120)),  # portrait: the short side is the width
        (240, 320, 100, (100, 133)),  # 133.33 rounds to nearest
        (90, 160, 64, (64, 114)),  # 113.78 rounds up
        (240, 320, 480, (480, 640)),  # enlarging
        (240, 320, (30, 50), (30, 50)),  # exact, aspect ignored
    ],
)
def test_output_size(height, width, size, expected):
    assert output_size(height, width, size) == expected


@pytest.mark.parametrize("size", [0, -3, (0, 10)])
def test_output_size_rejects_non_positive(size):
    with pytest.raises(ValueError):
        output_size(10, 10, size)


def test_resize_short_side(clip):
    frames = load_frames(clip, size=32)
    assert frames.shape == (SAMPLE_FRAMES, 32, 40, 3)
    # Area-averaged shrink of the full-size decode, not a different picture.
    reference = np.stack([cv2.resize(f, (40, 32), interpolation=cv2.INTER_AREA) for f in load_frames(clip)])
    np.testing.assert_array_equal(frames, reference)


@pytest.mark.parametrize("size", [(30, 50), (128, 100)])
def test_resize_exact(clip, size):
    frames = load_frames(clip, size=size)
    assert frames.shape == (SAMPLE_FRAMES, *size, 3)
    assert abs(float(frames.mean()) - float(load_frames(clip).mean())) < 2.0


def test_step_and_max_frames(clip):
    full = load_frames(clip)
    np.testing.assert_array_equal(load_frames(clip, step=3), full[::3])  # frames 0, 3, 6
    np.testing.assert_array_equal(load_frames(clip, max_frames=5), full[:5])
    np.testing.assert_array_equal(load_frames(clip, step=2, max_frames=2), full[[0, 2]])
    assert len(load_frames(clip, max_frames=100)) == SAMPLE_FRAMES


@pytest.mark.parametrize("step, max_frames, cut", [
    (1, SAMPLE_FRAMES - 1, True), (1, SAMPLE_FRAMES, False), (1, SAMPLE_FRAMES + 5, False),
    (3, 2, True), (3, 3, False),  # 8 frames, step 3: frames 0, 3, 6 are kept
    (2, 3, True), (2, 4, False)])
def test_facts_say_max_frames_only_when_it_cut_the_video(clip, step, max_frames, cut):
    """``facts["max_frames"]`` (recorded in the store, compared by later runs) only when another
    frame to keep follows the limit: a video of exactly ``max_frames`` kept frames is whole, and
    was recorded as cut (a later run without --max-frames adding flow to it was refused)."""
    facts = {}
    frames = list(iter_frames(clip, step=step, max_frames=max_frames, facts=facts))
    assert len(frames) == min(max_frames, -(-SAMPLE_FRAMES // step))
    assert facts.get("max_frames") == (max_frames if cut else None), facts


@pytest.mark.parametrize("kwargs", [{"step": 0}, {"step": 1.5}, {"max_frames": 0}])
def test_bad_arguments(clip, kwargs):
    with pytest.raises(ValueError):
        load_frames(clip, **kwargs)


def test_gray(clip):
    gray = load_frames(clip, gray=True)
    assert gray.shape == (SAMPLE_FRAMES, *SAMPLE_SIZE)
    assert gray.dtype == np.uint8
    # The decoder's luma and the BT.601 luma of the decoded RGB agree up to rounding/chroma loss.
    reference = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in load_frames(clip)])
    assert np.abs(gray.astype(np.float32) - reference).mean() < 3.0
    assert load_frames(clip, gray=True, size=32).shape == (SAMPLE_FRAMES, 32, 40)


def test_gray_frames_of_a_rotated_video_are_turned_too(clip, tmp_path):
    """A phone's portrait video (rotation in the container) is turned upright whether it is
    decoded as RGB or as gray: gray=True must not give landscape frames the RGB path turns."""
    from conftest import rotate_mp4

    rotate_mp4(clip, tmp_path / "r.mp4")
    upright = load_frames(clip, gray=True)
    facts: dict = {}
    turned = np.stack(list(iter_frames(tmp_path / "r.mp4", gray=True, facts=facts)))
    assert facts["rotation"] == 270
    assert turned.shape == (SAMPLE_FRAMES, SAMPLE_SIZE[1], SAMPLE_SIZE[0])
    np.testing.assert_array_equal(turned, np.rot90(upright, 3, axes=(1, 2)))


def test_video_extensions():
    assert {".mp4", ".avi", ".mkv", ".mov", ".webm"} <= set(VIDEO_EXTENSIONS)
    assert all(ext.startswith(".") and ext == ext.lower() for ext in VIDEO_EXTENSIONS)


# --- write_video round trips ---------------------------------------------------------------------

def _moving_photo(frames: int, size: tuple[int, int]) -> np.ndarray:
    spec = sample_specs(classes=("rotate_cw",), videos_per_class=1, frames=frames, size=size)[0]
    return render_sample(spec)


@pytest.mark.parametrize(
    "name, size, codec",
    [
        ("even.mp4", (48, 64), None),  # libx264, yuv420p
        ("odd.mp4", (45, 61), None),  # libx264 switches to yuv444p to keep the odd size
        ("mpeg4.avi", (48, 64), "mpeg4"),  # the always-available fallback encoder
        ("odd_mpeg4.mkv", (45, 61), "mpeg4"),
    ],
)
def test_write_video_round_trip(tmp_path, name, size, codec):
    frames = _moving_photo(10, size)
    path = write_video(tmp_path / "sub" / name, iter(frames), fps=12.5, codec=codec)
    assert path == tmp_path / "sub" / name
    decoded = load_frames(path)
    assert decoded.shape == frames.shape
    # Small, highly textured frames are the hard case for lossy codecs; 4:2:0 chroma alone costs
    # ~2.5 grey levels of RGB error here. Luma, what flow engines see, is kept closer.
    assert np.abs(decoded.astype(np.float32) - frames).mean() < 6.0
    luma = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
    assert np.abs(load_frames(path, gray=True) - luma).mean() < 4.0
    info = probe(path)
    assert info.fps == pytest.approx(12.5)
    assert (info.height, info.width) == size


_ENCODE_IN_CHILD = """
import sys, numpy as np
from flowkit.video import write_video
frames = np.load(sys.argv[1])
for i, clip in enumerate(frames):
    write_video(f"{sys.argv[2]}/{i}.mp4", clip)
"""


@pytest.mark.parametrize("size", [(64, 64), (45, 61)])  # yuv420p, yuv444p
def test_write_video_same_bytes_whatever_the_memory(tmp_path, size):
    """The same frames encode to the same bytes in a process whose fresh memory is filled with
    another pattern (glibc's MALLOC_PERTURB_). x264's AVX-512 code failed this for 12-15 of 16
    toy videos before it was capped (flowkit/video.py, _x264_params)."""
    import subprocess

    from flowkit.toy import render_toy, toy_specs

    clips = np.stack([render_toy(s) for s in toy_specs(videos_per_class=1, frames=8, size=size)])
    np.save(tmp_path / "clips.npy", clips)
    runs = {}
    for perturb in ("0", "165"):
        out = tmp_path / perturb
        out.mkdir()
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        subprocess.run([sys.executable, "-c", _ENCODE_IN_CHILD, str(tmp_path / "clips.npy"), str(out)],
                       check=True, env=env)
        runs[perturb] = [(out / f"{i}.mp4").read_bytes() for i in range(len(clips))]
    assert runs["0"] == runs["165"]


def test_write_video_accepts_gray(tmp_path):
    frames = _moving_photo(4, (32, 32))[..., 0]
    assert load_frames(write_video(tmp_path / "g.mp4", frames)).shape == (4, 32, 32, 3)


def test_write_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", [])
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", [np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="differs"):
        write_video(tmp_path / "sizes.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)])


# --- timestamps: variable frame rate, reordered frames -------------------------------------------

VFR_PTS = list(range(30)) + list(range(30, 90, 6))  # time base 1/30: 1 s at 30 fps, then 2 s at 5


def _vfr_mkv(path) -> None:
    """An mkv (duration only, no frame count) at 30 fps for 1 s, then 5 fps for 2 s: 40 frames, a
    duration of 3 s, which its average rate (30) makes 90 frames."""
    from fractions import Fraction

    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for pts in VFR_PTS:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (32, 32, 3), np.uint8), "rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def test_variable_frame_rate_mkv_is_complete_and_a_cut_one_truncated(tmp_path):
    """mkv records a duration, not a frame count: the estimate (duration x average rate) is far
    off for a variable frame rate, so completeness is judged by the last frame's time."""
    path = tmp_path / "vfr.mkv"
    _vfr_mkv(path)
    info = probe(path)
    assert not info.counted and info.frame_count != len(VFR_PTS)  # the estimate is wrong
    facts: dict = {}
    assert len(load_frames(path, facts=facts)) == len(VFR_PTS)
    assert facts["frame_interval"] == pytest.approx([1 / 30, 0.2], abs=2e-3)
    assert facts["decoded"] == len(VFR_PTS)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"cut\.mkv: truncated: decoded \d+ .*frames end at"):
        load_frames(cut)


def test_10_bit_video_decodes_to_the_full_8_bit_range(tmp_path):
    """Limited-range 10-bit video (phones' HEVC, H.264 High 10): white is 255 and mid-grey 128,
    as for 8-bit video. swscale's default conversion gave 253 and 126, darkening every frame."""
    import av

    from flowkit.video import load_frames

    path = tmp_path / "ten_bit.mp4"
    greys = [255, 128, 16, 235]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p10le"
        stream.options = {"crf": "0"}
        for grey in greys:
            frame = np.full((48, 64, 3), grey, np.uint8)
            ten = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p10le")
            for packet in stream.encode(ten):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = load_frames(path)
    assert frames.shape == (4, 48, 64, 3)
    assert np.abs(frames[:, 24, 32].astype(int) - np.array(greys)[:, None]).max() <= 1, \
        frames[:, 24, 32]


def test_avi_with_b_frames_has_a_constant_frame_rate(tmp_path):
    """avi has no presentation timestamps: with B-frames the frames' times come out of order;
    sorted, they are 40 ms apart (25 fps), not a variable frame rate."""
    path = write_video(tmp_path / "cfr.avi", _moving_photo(12, (48, 64)), fps=25)
    facts: dict = {}
    assert len(load_frames(path, facts=facts)) == 12
    assert facts["frame_interval"] == pytest.approx([0.04, 0.04], abs=1e-3)
    assert probe(path).counted


# --- broken input: one VideoError naming the file and the cause ---------------------------------

BROKEN = {
    "empty": "empty file (0 bytes)",
    "text": "not a video",
    "audio_only": "no video stream",
    "truncated": "header is truncated",
    "truncated_faststart": "truncated",
    "truncated_mkv": "truncated",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_video_raises_video_error(bad_videos, case):
    path = bad_videos.paths[case]
    with pytest.raises(VideoError) as info:
        load_frames(path)
    message = str(info.value)
    assert path.name in message
    assert BROKEN[case] in message
    assert isinstance(info.value, FlowkitError)


@pytest.mark.parametrize("case", ["empty", "text", "audio_only", "truncated"])
def test_probe_rejects_unopenable(bad_videos, case):
    with pytest.raises(VideoError, match=bad_videos.paths[case].name):
        probe(bad_videos.paths[case])


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match=r"nope\.mp4: file not found"):
        load_frames(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="file not found"):
        probe(tmp_path / "nope.mp4")


def test_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="directory"):
        load_frames(tmp_path)


def test_text_named_txt_is_not_a_video(tmp_path):
    """ffmpeg's tty demuxer would render a .txt file as a video; flowkit refuses it."""
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 100)
    with pytest.raises(VideoError, match="notes.txt: not a video"):
        load_frames(path)


@pytest.mark.parametrize("decoded, declared, ok", [
    (48, 48, True), (47, 48, True), (46, 48, True), (45, 48, False),
    (95, 100, True), (94, 100, False),
])
def test_frame_count_shortfall_tolerance(decoded, declared, ok):
    """A container's frame count may be off by a little (2 frames, or 5% of a long video: edit
    lists, a dropped last frame), so such a video decodes; more missing than that is a cut file,
    a VideoError naming the counts rather than silently short features."""
    from flowkit.video import _check_count

    if ok:
        _check_count("v.mp4", decoded, declared)
    else:
        with pytest.raises(VideoError, match=f"decoded {decoded} of the {declared} frames"):
            _check_count("v.mp4", decoded, declared)


def test_truncated_file_reports_decoded_count(bad_videos):
    with pytest.raises(VideoError, match=r"decoded \d+ of the 48 frames"):
        load_frames(bad_videos.paths["truncated_mkv"])


def test_truncated_file_decodes_partially_when_not_strict(bad_videos):
    """The good head of a cut file is still readable, on request (and within max_frames)."""
    for case in ("truncated_mkv", "truncated_faststart"):
        frames = load_frames(bad_videos.paths[case], strict=False)
        assert 0 < len(frames) < 48
        assert len(load_frames(bad_videos.paths[case], max_frames=2)) == 2


def _trimmed_mp4(path, frames: int, cut: int, options: dict | None = None):
    """An mp4 whose first ``cut`` of ``frames`` frames an edit list hides (what ``ffmpeg -ss T -c
    copy`` or a phone's trim writes): their packets stay, with negative times; the sample table
    counts all ``frames``, ``frames - cut`` decode, and the stream lasts as long as they do.
    ``options``: the mp4 muxer's (e.g. ``video_track_timescale``)."""
    import av

    source = write_video(path.with_name("source.mp4"), _moving_photo(frames, (32, 32)), fps=25)
    with av.open(str(source)) as inp, av.open(str(path), "w", options=options or {}) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = int(cut / (stream.time_base * stream.average_rate))
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)
    return path


def _dropped_avi(path, slots: int):
    """An avi of ``slots`` frame intervals whose capture dropped every 4th frame: ffmpeg's avi
    muxer keeps the timeline with empty chunks, so the header counts ``slots`` frames and fewer
    decode; the file is whole and plays through."""
    from fractions import Fraction

    import av

    kept = [i for i in range(slots) if i % 4 != 3]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 25)
        for pts, image in zip(kept, _moving_photo(len(kept), (32, 32))):
            frame = av.VideoFrame.from_ndarray(image, "rgb24")
            frame.pts = pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path, len(kept)


def test_trimmed_mp4_and_avi_with_dropped_frames_are_complete(tmp_path):
    """A frame count above the frames decoded is no cut file when the frames reach the end of the
    video's length: an mp4 edit list hides the trimmed frames (its duration is the kept frames'),
    an avi counts dropped frames (empty chunks). Both were refused as "truncated"."""
    trimmed = _trimmed_mp4(tmp_path / "trimmed.mp4", 40, 10)
    assert probe(trimmed).frame_count == 40 and probe(trimmed).duration == pytest.approx(1.2)
    assert len(load_frames(trimmed)) == 30
    dropped, kept = _dropped_avi(tmp_path / "dropped.avi", 21)
    assert probe(dropped).frame_count == 21
    assert len(load_frames(dropped)) == kept == 16


def test_a_trimmed_mp4_whose_time_base_is_one_frame_is_complete(tmp_path):
    """A trimmed mp4 muxed with one tick per frame (``-video_track_timescale 25``: its stream
    duration, in ticks, is the kept frame count) is no avi: its duration in ticks is no index
    of chunks, so it loads its 30 frames, not refused as "truncated" before decoding."""
    trimmed = _trimmed_mp4(tmp_path / "trimmed.mp4", 40, 10, {"video_track_timescale": "25"})
    assert len(load_frames(trimmed)) == 30


def _encoded(path, pts: list[int], last_duration: float | None = None):
    """A 32x32 mpeg4 video at 25 fps whose frames have times ``pts`` (in 1/25 s); its last packet
    lasts ``last_duration`` seconds where given (the last frame held)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        packets = []
        for t, image in zip(pts, _moving_photo(len(pts), (32, 32))):
            frame = av.VideoFrame.from_ndarray(image, "rgb24")
            frame.pts = t
            packets += stream.encode(frame)
        packets += stream.encode()
        if last_duration is not None:
            packets[-1].duration = int(last_duration / packets[-1].time_base)
        for packet in packets:
            out.mux(packet)
    return path


def test_an_mp4_whose_last_frame_is_held_long_is_complete(tmp_path):
    """An mp4 of 20 frames whose last frame is held 10 s (a slideshow's, a screen recording's
    end) decodes every frame it counts: it loads all 20, not refused as "truncated" for frames
    ending long before its length."""
    path = _encoded(tmp_path / "held.mp4", list(range(20)), last_duration=10.0)
    assert probe(path).frame_count == 20
    assert len(load_frames(path)) == 20


def test_an_mkv_whose_frames_start_late_is_complete(tmp_path):
    """An mkv whose 20 frames start at 1.0 s (a clip cut from a stream keeps its times) is whole:
    it loads all 20, not refused as "truncated" for frames measured from the first one."""
    path = _encoded(tmp_path / "late.mkv", [25 + i for i in range(20)])
    assert len(load_frames(path)) == 20


@pytest.mark.parametrize("name, codec", [("cut.avi", "mpeg4"), ("cut_h264.avi", None),
                                         ("cut.mkv", None), ("cut.webm", None)])
def test_a_video_cut_in_half_is_truncated(tmp_path, name, codec):
    """Every container cut in half is still refused, whole files decode (the faststart mp4 cut in
    half is bad_videos' ``truncated_faststart``). A cut avi is refused before its first frame: its
    rebuilt index holds half the chunks its header counts."""
    whole = write_video(tmp_path / name.replace("cut", "whole"), _moving_photo(24, (32, 32)),
                        fps=25, codec=codec)
    assert len(load_frames(whole)) == 24
    cut = tmp_path / name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(VideoError, match=rf"{cut.name}: truncated: .*file cut short or corrupt"):
        load_frames(cut)
    if cut.suffix == ".avi":
        frames = iter_frames(cut)
        with pytest.raises(VideoError, match=r"truncated: its index holds \d+ of the 24 frames"):
            next(frames)  # before any frame is decoded
        # with the limit, the head is read; all of it read, the timeline tells the cut
        with pytest.raises(VideoError, match=r"decoded \d+ of the 24 frames .* of its 0\.96 s"):
            load_frames(cut, max_frames=100)
        assert 0 < len(load_frames(cut, strict=False)) < 24


def test_valid_edge_cases(bad_videos):
    assert load_frames(bad_videos.paths["one_frame"]).shape == (1, 64, 80, 3)
    assert load_frames(bad_videos.paths["odd_size"]).shape == (12, 45, 61, 3)
    for case in ("good_0", "good_1"):
        assert load_frames(bad_videos.paths[case]).shape == (24, 64, 80, 3)


def test_bad_videos_layout(bad_videos):
    assert {p.parent.name for p in bad_videos.paths.values()} == {"classA", "classB"}
    assert all(p.is_relative_to(bad_videos.root) for p in bad_videos.paths.values())
    assert bad_videos.paths["empty"].stat().st_size == 0


# --- streaming: bounded memory, no leaked handles ------------------------------------------------

LONG_FRAMES, LONG_SIZE = 2000, (64, 64)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """2000 frames of 64x64: 24.6 MB decoded. Frames come from a generator, so writing is bounded too."""
    ys, xs = np.mgrid[0 : LONG_SIZE[0], 0 : LONG_SIZE[1]]

    def frames():
        for t in range(LONG_FRAMES):
            pattern = (128 + 100 * np.sin((xs + 2 * t) / 6.0) * np.cos(ys / 5.0)).astype(np.uint8)
            yield np.stack([pattern, pattern[::-1], pattern[:, ::-1]], axis=-1)

    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", frames())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_long_video_streams_with_bounded_memory(long_video):
    full_size = LONG_FRAMES * LONG_SIZE[0] * LONG_SIZE[1] * 3
    gc.collect()
    rss_warm, rss_peak = None, 0
    tracemalloc.start()
    count = 0
    try:
        for frame in iter_frames(long_video):
            count += 1
            if count == 100:
                # The decoder's threads and buffer pools are set up by now; measure growth from here,
                # which stays flat when streaming and grows with every frame if anything leaks.
                rss_warm = _rss_bytes()
            elif count % 100 == 0:
                rss_peak = max(rss_peak, _rss_bytes())
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == LONG_FRAMES
    assert frame.shape == (*LONG_SIZE, 3)
    # numpy reports its buffers to tracemalloc: only a frame or two may be alive at once.
    assert python_peak < full_size / 50
    # Decoder-side memory (ffmpeg frames, thread buffers) is invisible to tracemalloc: bound RSS.
    # Keeping every frame would grow it by ~full_size.
    assert rss_peak - rss_warm < full_size / 8


def test_generator_close_closes_container(clip):
    gc.collect()
    before = _open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        frames = iter_frames(clip)
        next(frames)
        assert _open_fds() > before  # the container holds the file open while streaming
        frames.close()
        assert _open_fds() == before

        for _ in iter_frames(clip):
            break  # abandoned generator: refcount drop closes it
        gc.collect()
        assert _open_fds() == before

        with pytest.raises(VideoError):
            next(iter_frames(clip.with_name("missing.mp4")))
        assert _open_fds() == before


def test_error_mid_stream_closes_container(bad_videos):
    gc.collect()
    before = _open_fds()
    with pytest.raises(VideoError):
        for _ in iter_frames(bad_videos.paths["truncated_mkv"]):
            pass
    gc.collect()
    assert _open_fds() == before


# --- sample videos the other tests rely on --------------------------------------------------------

def test_sample_folder_layout(sample_videos):
    found = sorted(p.relative_to(sample_videos).as_posix() for p in sample_videos.rglob("*.mp4"))
    assert found == ["pan_left/pan_left_0.mp4", "pan_left/pan_left_1.mp4",
                     "zoom_in/zoom_in_0.mp4", "zoom_in/zoom_in_1.mp4"]


@pytest.mark.parametrize("class_name", ["pan_left", "pan_right", "zoom_in", "rotate_cw"])
def test_sample_motion_is_the_true_flow(class_name):
    """Warping frame t+1 by the stated flow gives back frame t; without it, it does not."""
    spec = sample_specs(classes=(class_name,), videos_per_class=1, frames=4, size=(64, 80))[0]
    frames = render_sample(spec).astype(np.float32)
    flow = sample_motion(class_name, spec.speed, spec.size)
    assert flow.shape == (2, 64, 80) and flow.dtype == np.float32
    assert 1.0 <= spec.speed <= 3.0
    ys, xs = np.mgrid[0:64, 0:80].astype(np.float32)
    warped = cv2.remap(frames[1], xs + flow[0], ys + flow[1], cv2.INTER_LINEAR)
    inner = (slice(4, -4), slice(4, -4))
    warped_error = np.abs(warped - frames[0])[inner].mean()
    still_error = np.abs(frames[1] - frames[0])[inner].mean()
    assert warped_error < 0.5 * still_error
    if class_name == "pan_left":
        assert np.allclose(flow[0], -spec.speed) and np.allclose(flow[1], 0)


@pytest.mark.parametrize("class_name", sorted(MOTIONS))
def test_sample_motion_matches_its_class_name(class_name):
    """Each sample class moves the way its name says (x right, y down): a pan's flow points its
    way, zoom_in spreads content out (divergence > 0), zoom_out pulls it in, rotate_cw turns it
    clockwise on screen (curl > 0 with y down): the labels a classifier learns are the motions."""
    u, v = sample_motion(class_name, 2.0, (64, 80)).astype(np.float64)
    divergence = np.gradient(u, axis=1).mean() + np.gradient(v, axis=0).mean()
    curl = np.gradient(v, axis=1).mean() - np.gradient(u, axis=0).mean()
    kind, _, way = class_name.partition("_")
    if kind == "pan":
        direction = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[way]
        np.testing.assert_allclose([u.mean(), v.mean()], 2.0 * np.array(direction), atol=1e-6)
        assert abs(divergence) < 1e-6 and abs(curl) < 1e-6
    elif kind == "zoom":
        assert divergence * (1 if way == "in" else -1) > 0.01 and abs(curl) < 1e-6
    else:
        assert curl * (1 if way == "cw" else -1) > 0.01 and abs(divergence) < 0.01


def test_samples_are_deterministic():
    args = dict(classes=("zoom_in",), videos_per_class=2, frames=3, size=(32, 40), seed=7)
    first, again = sample_specs(**args), sample_specs(**args)
    assert first == again
    assert first[0].photo != first[1].photo
    np.testing.assert_array_equal(render_sample(first[0]), render_sample(again[0]))
