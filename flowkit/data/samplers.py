"""Clip samplers: which frames of a video make up a training or test clip.

A sampler is an object called as ``sampler(num_frames, rng) -> list[np.ndarray]``: one int64 array
of frame indices per clip, each of length ``sampler.clip_length``, ``sampler.clips`` arrays in all.
Indices lie in ``[0, num_frames - 1]``; a video shorter than a clip repeats its last frame (indices
are clamped), so every clip has the same length. ``rng`` is a ``np.random.Generator``; deterministic
samplers ignore it.

- :class:`RandomClipSampler` — one clip at a random start (training).
- :class:`SegmentSampler` — TSN: the video is cut into equal segments and one snippet is taken from
  each (random offset in training, the centre for testing), all in one clip.
- :class:`UniformClipSampler` — ``clips`` evenly spaced clips (testing; deterministic).

A clip of ``frames`` frames with temporal ``step`` spans ``(frames - 1) * step + 1`` video frames.

Flow alignment. A video of ``T`` frames has ``T - 1`` flows (flow ``i`` goes from frame ``i`` to
``i + 1``). The flow stack of ``L`` flows at a clip position with frame index ``i`` is flows
``i .. i + L - 1``, each clamped to the last flow ``T - 2``: :func:`flow_indices`.
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


class RandomClipSampler:
    """One clip of ``frames`` frames every ``step`` frames at a uniformly random start (training).

    ``sampler(num_frames, rng)`` -> ``[indices (frames,)]``. A video shorter than the clip's span
    starts at 0 and repeats its last frame.
    """

    clips = 1

    def __init__(self, frames: int, step: int = 1):
        self.frames = _positive("frames", frames)
        self.step = _positive("step", step)

    @property
    def clip_length(self) -> int:
        return self.frames

    def __call__(self, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        last_start = max(num_frames - clip_span(self.frames, self.step), 0)
        start = int(rng.integers(0, last_start + 1))
        return [clip_at(start, self.frames, self.step, num_frames)]

    def __repr__(self) -> str:
        return f"RandomClipSampler(frames={self.frames}, step={self.step})"


class SegmentSampler:
    """TSN sampling: ``segments`` equal segments, one snippet of ``frames`` frames from each.

    The possible snippet starts ``0 .. num_frames - span`` are cut into ``segments`` equal parts;
    with ``random=True`` (training) each snippet starts at a random position inside its part, with
    ``random=False`` (testing) at the part's centre. The snippets are concatenated in time into one
    clip: ``sampler(num_frames, rng)`` -> ``[indices (segments * frames,)]``, non-decreasing. A
    video shorter than ``segments`` snippets repeats frames.
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

    def starts(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Snippet start frames, int64 ``(segments,)``."""
        starts = max(num_frames - clip_span(self.frames, self.step) + 1, 1)
        edges = np.linspace(0.0, starts, self.segments + 1)
        width = np.diff(edges)
        offset = rng.random(self.segments) if self.random else np.full(self.segments, 0.5)
        return np.minimum(np.floor(edges[:-1] + offset * width), starts - 1).astype(np.int64)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        snippets = [clip_at(s, self.frames, self.step, num_frames)
                    for s in self.starts(num_frames, rng)]
        return [np.concatenate(snippets)]

    def __repr__(self) -> str:
        return (f"SegmentSampler(segments={self.segments}, frames={self.frames}, "
                f"step={self.step}, random={self.random})")


class UniformClipSampler:
    """``clips`` evenly spaced clips of ``frames`` frames every ``step`` frames (testing).

    The possible starts ``0 .. num_frames - span`` are cut into ``clips`` equal parts and clip ``k``
    starts at the centre of part ``k`` (one clip: the centre of the video). Deterministic;
    ``sampler(num_frames, rng)`` -> ``clips`` arrays ``(frames,)`` in time order.
    """

    def __init__(self, clips: int, frames: int, step: int = 1):
        self.clips = _positive("clips", clips)
        self.frames = _positive("frames", frames)
        self.step = _positive("step", step)

    @property
    def clip_length(self) -> int:
        return self.frames

    def starts(self, num_frames: int) -> np.ndarray:
        """Clip start frames, int64 ``(clips,)``, non-decreasing."""
        starts = max(num_frames - clip_span(self.frames, self.step) + 1, 1)
        centres = (np.arange(self.clips) + 0.5) * starts / self.clips
        return np.minimum(np.floor(centres), starts - 1).astype(np.int64)

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        num_frames = _check_frames(num_frames)
        return [clip_at(s, self.frames, self.step, num_frames) for s in self.starts(num_frames)]

    def __repr__(self) -> str:
        return f"UniformClipSampler(clips={self.clips}, frames={self.frames}, step={self.step})"


class SegmentClipsSampler:
    """TSN testing with several views: ``clips`` clips of ``segments`` snippets of ``frames`` frames.

    The possible snippet starts are cut into ``segments`` equal parts (as in
    :class:`~flowkit.data.samplers.SegmentSampler`); clip ``k`` takes each snippet at offset
    ``(k + 0.5) / clips`` of its part, so one clip is ``SegmentSampler(random=False)``'s centres.
    Deterministic: ``sampler(num_frames, rng)`` -> ``clips`` int64 arrays ``(segments * frames,)``.
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

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        if int(num_frames) < 1:
            raise FlowkitError(f"cannot sample a clip from a video of {num_frames} frames")
        starts = max(num_frames - clip_span(self.frames, self.step) + 1, 1)
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
