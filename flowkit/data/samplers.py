"""Clip samplers: which frames of a video make up a training or test clip.

A sampler is an object called as ``sampler(num_frames, rng, flow_stack=0) -> list[np.ndarray]``:
one int64 array of frame indices per clip, each of length ``sampler.clip_length``,
``sampler.clips`` arrays in all. Indices lie in ``[0, num_frames - 1]``; a video shorter than a
clip repeats its last frame (indices are clamped), so every clip has the same length. ``rng`` is a
``np.random.Generator``; deterministic samplers ignore it. ``flow_stack`` (``L``) is given by a
dataset that reads forward flow stacks at the clip positions (:class:`~flowkit.data.ClipDataset`
with ``"flow"`` among its inputs); clips are then placed so that every position's stack lies inside
the video's flows (see "Flow alignment"). With ``flow_stack=0`` (RGB, backward flow) positions
only need frames, and the indices are exactly those of a call without it.

- :class:`RandomClipSampler` — one clip at a random start (training).
- :class:`SegmentSampler` — TSN: the video is cut into equal segments and one snippet is taken from
  each (random offset in training, the centre for testing), all in one clip.
- :class:`UniformClipSampler` — ``clips`` evenly spaced clips (testing; deterministic).

A clip of ``frames`` frames with temporal ``step`` spans ``(frames - 1) * step + 1`` video frames.

Flow alignment. A video of ``T`` frames has ``T - 1`` flows (flow ``i`` goes from frame ``i`` to
``i + 1``). The flow stack of ``L`` flows at a clip position with frame index ``i`` is flows
``i .. i + L - 1`` (:func:`flow_indices`), inside the video for ``i <= (T - 1) - L``. So with
``flow_stack=L`` a clip's last position is at most ``(T - 1) - L`` (a snippet of one frame starts
at ``0 .. (T - 1) - L``, as TSN / mmaction2 ``SampleFrames(clip_len=L)`` over the ``T - 1`` flow
images): the possible starts are those of a video ``L`` frames shorter (:func:`start_count`).
Only a video too short for one clip and its stacks (``T < span + L``) starts at 0 and is clamped
as above: frames to ``T - 1``, flows to the last flow ``T - 2``.
"""
from __future__ import annotations

import numpy as np

from ..errors import FlowkitError


def clip_span(frames: int, step: int) -> int:
    """Number of video frames a clip of ``frames`` frames taken every ``step`` frames covers."""
    return (frames - 1) * step + 1


def clip_at(start: int, frames: int, step: int, num_frames: int) -> np.ndarray:
    """Frame indices ``start, start + step, ...`` (``frames`` of them), clamped to the video.

    Returns int64 ``(frames,)`` in ``[0, num_frames - 1]``.
    """
    index = int(start) + step * np.arange(frames, dtype=np.int64)
    return np.minimum(index, num_frames - 1)


def start_count(num_frames: int, span: int, flow_stack: int = 0) -> int:
    """Number of possible starts of a clip spanning ``span`` frames in a video of ``num_frames``
    frames whose positions carry forward flow stacks of ``flow_stack`` flows (0: none): starts
    ``0 .. num_frames - span - flow_stack`` keep every frame and every stack inside the video.
    At least 1 (start 0, clamped, for a video too short)."""
    return max(int(num_frames) - span - _check_stack(flow_stack) + 1, 1)


def flow_indices(frame_indices: np.ndarray, num_frames: int, stack: int) -> np.ndarray:
    """Flow indices of the stacks at the given clip positions.

    Args:
        frame_indices: int ``(T,)`` frame indices of a clip in a video of ``num_frames`` frames.
        num_frames: frames in the video (it has ``num_frames - 1`` flows); at least 2.
        stack: L, flows per clip position.

    Returns:
        int64 ``(T, L)``: row ``t`` is ``i_t, i_t + 1, ..., i_t + L - 1`` clamped to
        ``[0, num_frames - 2]``.
    """
    if num_frames < 2:
        raise FlowkitError(f"a video of {num_frames} frame(s) has no flow (flow needs 2 frames)")
    rows = np.asarray(frame_indices, dtype=np.int64)[:, None] + np.arange(stack, dtype=np.int64)
    return np.clip(rows, 0, num_frames - 2)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise FlowkitError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_frames(num_frames: int) -> int:
    if int(num_frames) < 1:
        raise FlowkitError(f"cannot sample a clip from a video of {num_frames} frames")
    return int(num_frames)


def _check_stack(flow_stack: int) -> int:
    if isinstance(flow_stack, bool) or int(flow_stack) != flow_stack or flow_stack < 0:
        raise FlowkitError(f"flow_stack must be an integer >= 0, got {flow_stack!r}")
    return int(flow_stack)


class RandomClipSampler:
    """One clip of ``frames`` frames every ``step`` frames at a uniformly random start (training).

    ``sampler(num_frames, rng, flow_stack=0)`` -> ``[indices (frames,)]``. Starts are
    ``0 .. num_frames - span - flow_stack`` (each position's stack of ``flow_stack`` forward flows
    inside the video); a video shorter than that starts at 0 and repeats its last frame.
    """

    clips = 1

    def __init__(self, frames: int, step: int = 1):
        self.frames = _positive("frames", frames)
        self.step = _positive("step", step)

    @property
    def clip_length(self) -> int:
        return self.frames

    def __call__(self, num_frames: int, rng: np.random.Generator, *,
                 flow_stack: int = 0) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        starts = start_count(num_frames, clip_span(self.frames, self.step), flow_stack)
        start = int(rng.integers(0, starts))
        return [clip_at(start, self.frames, self.step, num_frames)]

    def __repr__(self) -> str:
        return f"RandomClipSampler(frames={self.frames}, step={self.step})"


class SegmentSampler:
    """TSN sampling: ``segments`` equal segments, one snippet of ``frames`` frames from each.

    The possible snippet starts ``0 .. num_frames - span - flow_stack`` (:func:`start_count`: with
    forward flow stacks of ``flow_stack`` flows, every stack inside the video) are cut into
    ``segments`` equal parts; with ``random=True`` (training) each snippet starts at a random
    position inside its part, with ``random=False`` (testing) at the part's centre. The snippets
    are concatenated in time into one clip: ``sampler(num_frames, rng, flow_stack=0)`` ->
    ``[indices (segments * frames,)]``, non-decreasing. A video with fewer possible starts than
    ``segments`` repeats snippets; one too short for a snippet and its stacks is clamped.
    """

    clips = 1

    def __init__(self, segments: int, frames: int = 1, step: int = 1, random: bool = True):
        self.segments = _positive("segments", segments)
        self.frames = _positive("frames", frames)
        self.step = _positive("step", step)
        self.random = bool(random)

    @property
    def clip_length(self) -> int:
        return self.segments * self.frames

    def starts(self, num_frames: int, rng: np.random.Generator, *,
               flow_stack: int = 0) -> np.ndarray:
        """Snippet start frames, int64 ``(segments,)``."""
        starts = start_count(num_frames, clip_span(self.frames, self.step), flow_stack)
        edges = np.linspace(0.0, starts, self.segments + 1)
        width = np.diff(edges)
        offset = rng.random(self.segments) if self.random else np.full(self.segments, 0.5)
        return np.minimum(np.floor(edges[:-1] + offset * width), starts - 1).astype(np.int64)

    def __call__(self, num_frames: int, rng: np.random.Generator, *,
                 flow_stack: int = 0) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        snippets = [clip_at(s, self.frames, self.step, num_frames)
                    for s in self.starts(num_frames, rng, flow_stack=flow_stack)]
        return [np.concatenate(snippets)]

    def __repr__(self) -> str:
        return (f"SegmentSampler(segments={self.segments}, frames={self.frames}, "
                f"step={self.step}, random={self.random})")


class UniformClipSampler:
    """``clips`` evenly spaced clips of ``frames`` frames every ``step`` frames (testing).

    The possible starts ``0 .. num_frames - span - flow_stack`` (:func:`start_count`: with forward
    flow stacks of ``flow_stack`` flows, every stack inside the video) are cut into ``clips`` equal
    parts and clip ``k`` starts at the centre of part ``k`` (one clip: the centre of the video).
    Deterministic; ``sampler(num_frames, rng, flow_stack=0)`` -> ``clips`` arrays ``(frames,)`` in
    time order.
    """

    def __init__(self, clips: int, frames: int, step: int = 1):
        self.clips = _positive("clips", clips)
        self.frames = _positive("frames", frames)
        self.step = _positive("step", step)

    @property
    def clip_length(self) -> int:
        return self.frames

    def starts(self, num_frames: int, *, flow_stack: int = 0) -> np.ndarray:
        """Clip start frames, int64 ``(clips,)``, non-decreasing."""
        starts = start_count(num_frames, clip_span(self.frames, self.step), flow_stack)
        centres = (np.arange(self.clips) + 0.5) * starts / self.clips
        return np.minimum(np.floor(centres), starts - 1).astype(np.int64)

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None, *,
                 flow_stack: int = 0) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        return [clip_at(s, self.frames, self.step, num_frames)
                for s in self.starts(num_frames, flow_stack=flow_stack)]

    def __repr__(self) -> str:
        return f"UniformClipSampler(clips={self.clips}, frames={self.frames}, step={self.step})"


class SegmentClipsSampler:
    """TSN testing with several views: ``clips`` clips of ``segments`` snippets of ``frames`` frames.

    The possible snippet starts (with ``flow_stack``, those whose stacks lie inside the video) are
    cut into ``segments`` equal parts (as in :class:`~flowkit.data.samplers.SegmentSampler`); clip
    ``k`` takes each snippet at offset ``(k + 0.5) / clips`` of its part, so one clip is
    ``SegmentSampler(random=False)``'s centres. Deterministic: ``sampler(num_frames, rng,
    flow_stack=0)`` -> ``clips`` int64 arrays ``(segments * frames,)``.
    """

    def __init__(self, clips: int, segments: int, frames: int = 1, step: int = 1):
        for name, value in (("clips", clips), ("segments", segments), ("frames", frames),
                            ("step", step)):
            if int(value) != value or value < 1:
                raise FlowkitError(f"{name} must be a positive integer, got {value!r}")
        self.clips, self.segments = int(clips), int(segments)
        self.frames, self.step = int(frames), int(step)

    @property
    def clip_length(self) -> int:
        return self.segments * self.frames

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None, *,
                 flow_stack: int = 0) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        starts = start_count(num_frames, clip_span(self.frames, self.step), flow_stack)
        edges = np.linspace(0.0, starts, self.segments + 1)
        width = np.diff(edges)
        clips = []
        for k in range(self.clips):
            first = np.minimum(np.floor(edges[:-1] + (k + 0.5) / self.clips * width), starts - 1)
            clips.append(np.concatenate([clip_at(int(s), self.frames, self.step, num_frames)
                                         for s in first]))
        return clips

    def __repr__(self) -> str:
        return (f"SegmentClipsSampler(clips={self.clips}, segments={self.segments}, "
                f"frames={self.frames}, step={self.step})")
