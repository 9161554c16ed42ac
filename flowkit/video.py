"""Video decoding and encoding with PyAV.

Frames are numpy arrays in the layout OpenCV and PyAV use: RGB ``(H, W, 3)`` uint8, or grayscale
``(H, W)`` uint8; a clip is ``(T, H, W, 3)`` / ``(T, H, W)``. Converting to flowkit's torch layout
``(T, C, H, W)`` is the caller's job (one ``permute``), so this module needs no torch.

Every failure a user can cause (missing, empty, non-video, truncated or corrupt file) raises
:class:`flowkit.errors.VideoError` whose message starts with the path and says the cause. Nothing
here ever returns an empty result: a video that decodes to zero frames is an error too.
"""

from __future__ import annotations

import functools
import os
import re
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import cv2
import numpy as np

from flowkit.errors import FlowkitError, VideoError

if TYPE_CHECKING:  # PyAV is imported where video is decoded (_av), not here
    import av

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "probe",
    "output_size",
    "parse_size",
    "iter_frames",
    "load_frames",
    "write_video",
]

# Containers PyAV decodes, camcorders' (AVCHD .mts/.m2ts, broadcast .ts, .mxf, DVD .vob) and
# phones' (.3gp/.3g2) too; flowkit.labels keeps the same list (scanning imports no decoder).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".vob")

# A decoded count this far below the count the container declares means the file was cut short.
# Headers are often off by a frame or two (mp4 edit lists drop leading frames, avi indexes count
# dropped frames), so only a clear shortfall is an error; a truncated file loses far more.
_SHORTFALL_FRAMES = 2
_SHORTFALL_FRACTION = 0.05
# A container that records only a duration (mkv, webm): frames ending this many frame intervals (or
# the fraction above of the duration) before it mean the file was cut short. Its frame count is
# only duration x average rate, wrong for a variable frame rate, so the time is compared instead.
_SHORTFALL_INTERVALS = 3

# ffmpeg's "tty" demuxer renders any text file as a video of ANSI art; a text file is not a video.
_NON_VIDEO_FORMATS = {"tty"}
# Containers whose frame count spans the whole video, a chunk per frame interval, dropped frames
# included (:func:`_counted_length`).
_CHUNKED_FORMATS = {"avi"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream, without decoding it.

    Attributes:
        path: the file, as given.
        width, height: frame size in pixels.
        fps: average frame rate in frames per second (0.0 when the container does not say).
        frame_count: the container's frame count; for mkv/webm, which record only a duration,
            duration x fps; ``None`` when neither is known. An estimate: the decoded count can
            differ by a frame or two (edit lists), by far more for a variable frame rate when
            the count is estimated (``counted`` False).
        duration: stream duration in seconds, or ``None`` when unknown.
        codec: decoder name, e.g. ``"h264"``.
        counted: ``frame_count`` is the container's own count (mp4 sample table, avi header), not
            an estimate from the duration.
    """

    path: str
    width: int
    height: int
    fps: float
    frame_count: int | None
    duration: float | None
    codec: str
    counted: bool = False


def _fail(path: str | os.PathLike, cause: str) -> VideoError:
    return VideoError(f"{os.fspath(path)}: {cause}")


def _av():
    """PyAV, imported on first use: ``import flowkit`` and everything that decodes no video (the
    engines, the store, ``flowkit benchmark``, the GPU check) work without it."""
    try:
        import av
    except ImportError:
        raise VideoError("decoding and encoding video needs PyAV, which is not installed: "
                         "pip install av") from None
    return av


def _ffmpeg_reason(err: Exception) -> str:
    """The useful part of a PyAV/ffmpeg error: its strerror, without the errno and file echo."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _open(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return (container, first video stream); VideoError on any failure.

    The size checks come first because ffmpeg reports a missing, empty or truncated-header file
    with the same "Invalid data" message; users need to know which it is.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as err:
        raise _fail(path, f"cannot read ({err.strerror})") from None
    if os.path.isdir(path):
        raise _fail(path, "is a directory, not a video file")
    if size == 0:
        raise _fail(path, "empty file (0 bytes)")
    av = _av()
    try:
        container = av.open(os.fspath(path), mode="r")
    except av.error.InvalidDataError:
        raise _fail(path, "not a video, or its header is truncated/corrupt "
                          "(ffmpeg: invalid data found when processing input)") from None
    except (av.error.FFmpegError, OSError) as err:
        raise _fail(path, f"cannot open ({_ffmpeg_reason(err)})") from None
    if container.format.name in _NON_VIDEO_FORMATS or not container.streams.video:
        container.close()
        raise _fail(path, "not a video (no video stream)")
    return container, container.streams.video[0]


def _parse_duration_tag(text: str) -> float | None:
    """Seconds from a Matroska track's "DURATION" tag, ``"HH:MM:SS.nnnnnnnnn"``."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", text.strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _video_duration(stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's own duration in seconds (never the container's, which includes audio)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    return _parse_duration_tag(tag) if tag else None


def _counted_frames(stream: av.video.stream.VideoStream) -> int | None:
    """Frame count the container records (mp4 sample table, avi header), else None."""
    return int(stream.frames) if stream.frames and stream.frames > 0 else None


def _declared_frames(stream: av.video.stream.VideoStream) -> int | None:
    """Frame count the container records, else duration x fps (mkv/webm record only a duration;
    an estimate, wrong for a variable frame rate), else None."""
    counted = _counted_frames(stream)
    if counted is not None:
        return counted
    duration, rate = _video_duration(stream), stream.average_rate
    if duration and rate:
        return int(round(duration * float(rate)))
    return None


def _stream_duration(container, stream) -> float | None:
    """Duration in seconds: the video stream's own if recorded, else the container's."""
    duration = _video_duration(stream)
    if duration is None and container.duration is not None:
        duration = container.duration / _av().time_base
    return duration


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's size, frame rate, frame count and codec from its header (no decoding).

    Raises:
        VideoError: the file is missing, empty, not a video, or its header cannot be parsed.
    """
    container, stream = _open(path)
    try:
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            path=os.fspath(path),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=float(rate) if rate else 0.0,
            frame_count=_declared_frames(stream),
            duration=_stream_duration(container, stream),
            codec=stream.codec_context.name,
            counted=_counted_frames(stream) is not None,
        )
    finally:
        container.close()


def parse_size(text: str | None, *, scale: bool = False) -> int | tuple[int, int] | float | None:
    """A frame size as the command line writes it.

    ``None`` or ``""`` -> None (keep the size); ``"256x340"`` -> ``(256, 340)`` (height, width);
    ``"256"`` -> ``256``, the short side (see :func:`output_size`); with ``scale=True`` a number
    means a scale factor in (0, 4] instead (``"0.5"`` -> ``0.5``). FlowkitError otherwise.
    """
    if text is None or str(text).strip() == "":
        return None
    h, sep, w = str(text).strip().lower().partition("x")
    try:
        if sep:
            size = (int(h), int(w))
            if min(size) >= 1:
                return size
        elif scale:
            value = float(text)
            if 0 < value <= 4:
                return value
        elif int(text) >= 1:
            return int(text)
    except ValueError:
        pass
    want = "HxW (e.g. 128x160) or a scale (e.g. 0.5)" if scale else \
        "SHORT_SIDE or HxW (e.g. 256 or 256x340)"
    raise FlowkitError(f"size {text!r} is not {want}")


def output_size(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The ``(H, W)`` frames of a ``height x width`` video get when resized to ``size``.

    Args:
        height, width: source frame size in pixels.
        size: ``None`` keeps the source size; an ``int`` is the short side in pixels, the long side
            follows the aspect ratio rounded to the nearest pixel; ``(H, W)`` is exact.

    >>> output_size(240, 320, 120)
    (120, 160)
    >>> output_size(240, 320, (64, 64))
    (64, 64)
    """
    if size is None:
        return int(height), int(width)
    if isinstance(size, (int, np.integer)):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if height <= width:
            return int(size), max(1, int(round(width * size / height)))
        return max(1, int(round(height * size / width))), int(size)
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def _resize(frame: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W[, 3])`` uint8 frame to ``out_hw``.

    cv2 rather than PyAV's ``reformat``: INTER_AREA is exact pixel-area averaging when shrinking (no
    aliasing, which flow engines would read as motion), it is what denseflow-style pipelines use
    (``cv::resize``), so frames match theirs, and resizing after colour conversion lets the gray
    path resize a single channel. When enlarging INTER_AREA behaves like nearest neighbour, so
    INTER_LINEAR is used there. A frame that keeps its size is returned untouched.
    """
    h, w = frame.shape[:2]
    if (h, w) == out_hw:
        return frame
    shrinking = out_hw[0] <= h and out_hw[1] <= w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (out_hw[1], out_hw[0]), interpolation=interp)


def _conversion(frame) -> dict:
    """Keyword arguments of ``to_ndarray`` for this video's frames. 8-bit video: swscale's
    defaults (what OpenCV reads, bit for bit). Deeper video (10/12-bit HEVC from phones, ProRes):
    the defaults map limited range to about 0..253 (white 253, mid-grey 126), so these frames are
    converted with accurate rounding and full chroma interpolation, which gives 255 and 128."""
    if frame.format.components[0].bits <= 8:
        return {}
    from av.video.reformatter import Interpolation

    flags = (getattr(Interpolation, "ACCURATE_RND", None),
             getattr(Interpolation, "FULL_CHR_H_INT", None))
    if None in flags:  # an old PyAV without these flags: its default conversion
        return {}
    return {"interpolation": Interpolation.BILINEAR | flags[0] | flags[1]}


def _another_kept(frames: Iterator, decoded: int, step: int, errors: tuple) -> bool:
    """Whether the decoder ``frames``, past its first ``decoded`` frames, holds another frame that
    ``step`` keeps (frame ``i`` is kept when ``i % step == 0``): decodes at most ``step`` more. A
    decoding error there (one of ``errors``) says no: the frames already kept are whole."""
    for index in range(decoded, decoded + step):
        try:
            next(frames)
        except (StopIteration, *errors):
            return False
        if index % step == 0:
            return True
    return False


def _quarter_turns(frame) -> int:
    """Counterclockwise quarter turns that make ``frame`` upright (its display matrix's rotation,
    e.g. a phone video recorded in portrait); 0 when there is none or PyAV cannot tell."""
    try:
        rotation = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(rotation / 90.0)) % 4


def _check_args(step: int, max_frames: int | None) -> None:
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer, got {step}")
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames}")


class _Timestamps:
    """The decoded frames' presentation times in seconds, in decoding order (which is not always
    presentation order: avi has no presentation timestamps, so with B-frames its frames' times come
    out of order)."""

    def __init__(self):
        self.times = array("d")
        self.missing = 0  # frames without a time

    def add(self, time: float | None) -> None:
        if time is None:
            self.missing += 1
        else:
            self.times.append(float(time))

    def span(self) -> tuple[float, float] | None:
        """(first, last) presentation time; None when no frame had one."""
        return (min(self.times), max(self.times)) if self.times else None

    def intervals(self) -> tuple[float, float] | None:
        """(shortest, longest) seconds between frames consecutive in presentation order (the
        times sorted); None for fewer than two frames or unreliable times (a frame without one,
        two frames with the same one), from which no frame rate can be concluded."""
        if self.missing or len(self.times) < 2:
            return None
        ordered = sorted(self.times)
        steps = [b - a for a, b in zip(ordered, ordered[1:])]
        if min(steps) <= 0:
            return None
        return min(steps), max(steps)


def _clearly_fewer(found: int, declared: int) -> bool:
    """Whether ``found`` frames fall short of ``declared`` by more than a header can be off."""
    return declared - found > max(_SHORTFALL_FRAMES, int(_SHORTFALL_FRACTION * declared))


def _check_count(path, decoded: int, declared: int | None) -> None:
    """Raise when clearly fewer frames decoded than the container counts."""
    if declared is None:
        return
    if _clearly_fewer(decoded, declared):
        raise _fail(path, f"truncated: decoded {decoded} of the {declared} frames the container "
                          "declares (file cut short or corrupt)")


def _reach(stream, times: _Timestamps, duration: float) -> tuple[float, bool]:
    """``(seconds the frames reach, whether that is clearly short of duration)``, from the
    timestamps (``times.span()`` must not be None).

    The last frame's time is compared with ``duration``, with a few frame intervals of slack (the
    longer of the average rate's and the longest seen; the last frame lasts one), so a variable
    frame rate is no shortfall. Where the duration is a length and the frames start late, the
    last time is measured from 0, which can only hide a shortfall, never invent one."""
    first, last = times.span()
    reached = max(last, last - first)
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    interval = max(1.0 / rate if rate else 0.0, (times.intervals() or (0.0, 0.0))[1])
    allowed = max(_SHORTFALL_INTERVALS * interval, _SHORTFALL_FRACTION * duration)
    return reached, duration - reached > allowed


def _check_duration(path, decoded: int, stream, times: _Timestamps) -> None:
    """Raise when the frames end clearly before the duration the container records (mkv, webm;
    :func:`_reach`)."""
    duration = _video_duration(stream)
    if not duration:
        return
    if times.span() is None:  # no timestamps: the duration x rate estimate is all there is
        _check_count(path, decoded, _declared_frames(stream))
        return
    reached, short = _reach(stream, times, duration)
    if not short:
        return
    estimate = _declared_frames(stream)
    count = f" of the {estimate} frames its duration implies" if estimate else " frames"
    raise _fail(path, f"truncated: decoded {decoded}{count} (frames end at {reached:.2f} s of the "
                      f"{duration:.2f} s the container declares; file cut short or corrupt)")


def _counted_length(container, stream) -> float | None:
    """Seconds a counted container (mp4, mov, avi) says its video lasts, None when unknown.

    mp4/mov: the stream duration, which follows the edit list (a clip trimmed by ``ffmpeg -ss T
    -c copy`` or a phone keeps the cut frames' samples, counted, but lasts as long as the frames
    it shows) and survives a cut file (the sample table is whole). avi: the header count x the
    frame interval (the time base: one chunk per interval, an empty chunk for a dropped frame),
    since its demuxer's duration covers only the chunks the file still holds (a cut avi reports
    a cut duration)."""
    if container.format.name in _CHUNKED_FORMATS and stream.time_base is not None:
        return float(_counted_frames(stream) * stream.time_base)
    return _video_duration(stream)


def _check_index(path, container, stream) -> None:
    """Raise, before anything is decoded, when an avi's index holds clearly fewer chunks than
    its header counts frames: the file lost its tail (the avi demuxer rebuilt the index from the
    chunks left; a dropped frame is a chunk too, so it shortens neither). Header facts only, so
    free. A cut mp4 (its sample table still lists every frame) or mkv (its header still records
    the whole duration) shows nothing before decoding: :func:`_check_complete` tells them."""
    counted = _counted_frames(stream)
    if (counted is None or container.format.name not in _CHUNKED_FORMATS
            or stream.duration is None):
        return
    indexed = int(stream.duration)  # in the time base: one chunk per frame interval
    if _clearly_fewer(indexed, counted):
        raise _fail(path, f"truncated: its index holds {indexed} of the {counted} frames the "
                          "header declares (file cut short or corrupt)")


def _check_complete(path, decoded: int, container, stream, times: _Timestamps) -> None:
    """Raise when the whole file decoded cleanly but clearly ended early: frames ending before
    the duration of a container that records only a duration (mkv, webm; :func:`_check_duration`),
    or, for a container that counts its frames (mp4, avi), fewer frames than it counts that also
    end clearly before its length (:func:`_counted_length`).

    The count alone is no proof: an mp4 edit list hides the frames a trim cut (1400 of 1500 shown),
    an avi counts dropped frames (empty chunks) that decode to nothing, and both files play
    whole. A cut file loses the end of its timeline as well as frames. Truncated avi/mkv files
    end without any decoder error (the demuxer just meets end of file), so this comparison is
    the only way to tell a cut file from a short one.
    """
    counted = _counted_frames(stream)
    if counted is None:
        _check_duration(path, decoded, stream, times)
        return
    length = _counted_length(container, stream)
    if not length or times.span() is None:  # no timeline to tell: the count alone decides
        _check_count(path, decoded, counted)
        return
    if not _clearly_fewer(decoded, counted):
        return
    reached, short = _reach(stream, times, length)
    if short:
        raise _fail(path, f"truncated: decoded {decoded} of the {counted} frames the container "
                          f"declares (frames end at {reached:.2f} s of its {length:.2f} s; file "
                          "cut short or corrupt)")


def iter_frames(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    step: int = 1,
    max_frames: int | None = None,
    gray: bool = False,
    strict: bool = True,
    threads: int = 0,
    facts: dict | None = None,
) -> Iterator[np.ndarray]:
    """Stream a video's frames one at a time; memory stays bounded whatever the video's length.

    Args:
        path: video file.
        size: output size, see :func:`output_size` (``None``: keep; ``int``: short side; ``(H, W)``).
        step: keep every ``step``-th decoded frame (frames 0, step, 2*step, ...).
        max_frames: stop after yielding this many frames (``None``: all).
        gray: yield luma ``(H, W)`` instead of RGB ``(H, W, 3)``. Luma is the decoder's own Y plane
            converted to full range, which skips chroma upsampling and colour conversion.
        strict: when the whole video was decoded, compare the last frame's time with the
            duration the container declares, and where it counts frames the count too, and
            raise on a clear shortfall of both (a truncated file; :func:`_check_complete`). A cut
            avi is refused before its first frame (its index is short: :func:`_check_index`).
            Turn off only for files whose headers are known to be wrong.
        threads: decoder threads; 0 lets ffmpeg choose (one per core). Set 1 when many decoding
            processes already share the machine, to avoid oversubscription.
        facts: a dict that receives what only decoding tells: ``rotation`` (degrees
            counterclockwise that the container's display matrix asks for; the frames are yielded
            already turned upright, as players show them), ``frame_interval`` (``[min, max]``
            seconds between frames consecutive in presentation order; far apart for a variable
            frame rate; absent when the timestamps cannot tell, e.g. repeated ones),
            ``decoded`` (frames decoded, before ``step`` and ``max_frames``) and
            ``max_frames``, only when that limit cut the video (it holds another frame to keep:
            up to ``step`` frames past the limit are decoded to tell). ``rotation`` is there
            once the first frame is yielded, the others once the generator ends (or is closed).

    Yields:
        uint8 frames, ``(H, W, 3)`` RGB or ``(H, W)`` gray, each a fresh array the caller may keep.

    Raises:
        VideoError: file missing/empty/not a video; decoding failed (the message names the last
            good frame); zero frames decoded; or (``strict``) the file is truncated.

    The container is closed when the generator finishes, raises, or is closed/garbage collected.
    """
    _check_args(step, max_frames)
    container, stream = _open(path)
    av = _av()
    with container:
        if strict and max_frames is None:  # a cut avi fails before its frames are used
            _check_index(path, container, stream)
        # Frame + slice threading: several times faster on multi-core machines for h264/hevc; the
        # added latency of frame threading is irrelevant when streaming a whole file. Frame threads
        # swallow some decoder errors (a truncated mp4 just ends early), which is one reason for the
        # frame-count check at the end.
        stream.thread_type = "AUTO"
        stream.thread_count = int(threads)
        fmt = "gray" if gray else "rgb24"
        decoded = yielded = 0
        out_hw = None
        turns = 0
        facts = facts if facts is not None else {}
        times = _Timestamps()
        frames = container.decode(stream)
        try:
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except (av.error.FFmpegError, OSError) as err:
                    where = f"after frame {decoded - 1}" if decoded else "at the first frame"
                    raise _fail(path, f"decoding failed {where} ({decoded} frames decoded): "
                                      f"{_ffmpeg_reason(err)}") from None
                index = decoded
                decoded += 1
                times.add(frame.time)
                if index % step:
                    continue
                if out_hw is None:
                    turns = _quarter_turns(frame)
                    facts["rotation"] = 90 * turns
                    h, w = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
                    out_hw = output_size(h, w, size)
                    convert = _conversion(frame)
                image = frame.to_ndarray(format=fmt, **convert)
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                resized = _resize(image, out_hw)
                # to_ndarray returns a view into the AVFrame's buffer; copy so callers own their
                # data and the decoder's frame is released now.
                yield resized.copy() if resized is image else resized
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    if _another_kept(frames, decoded, step, (av.error.FFmpegError, OSError)):
                        facts["max_frames"] = int(max_frames)  # the limit cut the video
                    return
            if decoded == 0:
                raise _fail(path, "no frames could be decoded (empty or corrupt video stream)")
            if strict:
                _check_complete(path, decoded, container, stream, times)
        finally:
            facts["decoded"] = decoded
            interval = times.intervals()
            if interval is not None:
                facts["frame_interval"] = list(interval)


def load_frames(path: str | os.PathLike, **kwargs) -> np.ndarray:
    """Decode a whole video into one array: ``(T, H, W, 3)`` uint8, or ``(T, H, W)`` if ``gray``.

    Takes the keyword arguments of :func:`iter_frames`. Holds every frame in memory; use
    :func:`iter_frames` for long videos.
    """
    return np.stack(list(iter_frames(path, **kwargs)))


def _default_codec(path: Path) -> list[str]:
    """Encoders to try, best first, for the container the file extension names."""
    if path.suffix.lower() == ".webm":
        return ["libvpx-vp9", "libvpx"]
    # libx264 gives far better quality per byte; mpeg4 (ffmpeg's native encoder) is always built.
    return ["libx264", "mpeg4"]


def _pixel_format(codec: str, height: int, width: int) -> str:
    """yuv420p for compatibility; libx264 rejects odd sizes in 4:2:0, so odd sizes get yuv444p.

    4:4:4 keeps the exact frame size (padding would change it, and the tests and the store rely on
    sizes surviving a round trip); ffmpeg/PyAV decode it, some hardware players do not.
    ffmpeg's mpeg4 encoder accepts odd sizes in yuv420p.
    """
    if codec == "libx264" and (height % 2 or width % 2):
        return "yuv444p"
    return "yuv420p"


def _x264_params() -> str:
    """x264 settings that make its output a function of the frames alone.

    x264's AVX-512 code reads memory it never wrote: with it, the same frames encoded to other
    bytes from run to run (decoded pixels up to 28 levels apart at crf 15; 12-15 of 16 toy videos
    differed between runs under other ``MALLOC_PERTURB_`` fillings, 0 of 16 with ``asm=avx2``).
    On a CPU with AVX-512 the encoder is capped at AVX2; elsewhere x264 picks its own code, which
    from SSE4 to AVX2 writes the same bytes as AVX2 (benchmarks/results/x264_levels.md).
    """
    params = "sync-lookahead=0"
    return params + ":asm=avx2" if _cpu_has_avx512() else params


@functools.cache
def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def _add_stream(container, codec: str, fps: float, height: int, width: int, quality: int | None):
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = _pixel_format(codec, height, width)
    if codec == "libx264":
        # crf 15, a little better than the usual "visually lossless" 18: small, textured frames (the
        # samples, flow visualisations) lose visibly more at 18, and these files are small anyway.
        # "fast" keeps test/demo encoding quick at little size cost. The same frames encode to the
        # same bytes every run: one encoder thread, no lookahead thread, and no AVX-512 (see
        # _x264_params).
        stream.options = {"crf": str(15 if quality is None else quality), "preset": "fast",
                          "x264-params": _x264_params()}
        stream.codec_context.thread_count = 1
    elif codec.startswith("libvpx"):
        stream.options = {"crf": str(24 if quality is None else quality), "b": "0", "deadline": "realtime",
                          "cpu-used": "8"}
    else:
        # Constant quantiser (ffmpeg -q:v): 2 is near the best mpeg4 can do.
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = (3 if quality is None else quality) * 118  # FF_QP2LAMBDA
    return stream


def _as_rgb(frame, shape: tuple[int, int] | None, path) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{path}: frames must be (H, W, 3) RGB or (H, W) gray, got {frame.shape}")
    if shape is not None and frame.shape[:2] != shape:
        raise ValueError(f"{path}: frame size {frame.shape[:2]} differs from the first frame's {shape}")
    return np.ascontiguousarray(frame)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str | None = None,
    quality: int | None = None,
) -> Path:
    """Encode frames into a video file; the container follows the extension (.mp4, .avi, .mkv ...).

    Args:
        path: output file; parent folders are created.
        frames: iterable of ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) frames, all one size.
            Consumed lazily, so a generator of any length is fine.
        fps: frame rate in frames per second.
        codec: encoder name; ``None`` tries libx264 then mpeg4 (vp9 for .webm).
        quality: encoder quality, lower is better: crf for libx264/vp9 (default 15/24), the
            constant quantiser for mpeg4 (default 3).

    Returns:
        The path written.

    Odd frame sizes are kept exactly (libx264 switches to 4:4:4, see ``_pixel_format``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    first = _as_rgb(first, None, path)
    height, width = first.shape[:2]
    candidates = [codec] if codec else _default_codec(path)
    av = _av()
    for i, name in enumerate(candidates):
        container = av.open(os.fspath(path), mode="w")
        try:
            stream = _add_stream(container, name, fps, height, width, quality)
            packets = stream.encode(av.VideoFrame.from_ndarray(first, format="rgb24"))
        except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError):
            # The encoder exists in this PyAV build's list but would not open (e.g. a wheel
            # without GPL x264): try the next one.
            container.close()
            if i == len(candidates) - 1:
                raise
            continue
        break
    try:
        container.mux(packets)
        for frame in frames:
            image = _as_rgb(frame, (height, width), path)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    finally:
        container.close()
    return path
