"""A small, deterministic video folder made from real photographs moved by known motion.

scikit-image ships a few photographs inside its wheel (no download needed); each sample video is a
crop of one of them, moved frame after frame by one similarity transform per class, so the true
optical flow is known exactly (see :func:`sample_motion`). The folder layout is the one flowkit's
extractor reads, ``root/<class>/<class>_<i>.mp4``, so the samples double as a toy action dataset.

Class names say which way the *image content* moves, i.e. the direction of the flow:
``pan_left`` has flow u < 0 everywhere (a camera panning right), ``rotate_cw`` turns the content
clockwise on screen (y axis down), ``zoom_in`` magnifies it about the frame centre.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flowkit.errors import FlowkitError
from flowkit.video import write_video

__all__ = [
    "MOTIONS",
    "PHOTOS",
    "SampleSpec",
    "sample_specs",
    "sample_motion",
    "render_sample",
    "make_sample_videos",
]

# Photographs bundled in scikit-image's wheel (loaded offline); textured ones, since flow needs
# texture. hubble_deep_field and retina are left out: mostly black, they give flow little to see.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")

# Per class: (translation direction (x, y), zoom sign, rotation sign). Speeds are set per video.
MOTIONS = {
    "pan_left": ((-1.0, 0.0), 0, 0),
    "pan_right": ((1.0, 0.0), 0, 0),
    "pan_up": ((0.0, -1.0), 0, 0),
    "pan_down": ((0.0, 1.0), 0, 0),
    "zoom_in": ((0.0, 0.0), 1, 0),
    "zoom_out": ((0.0, 0.0), -1, 0),
    "rotate_cw": ((0.0, 0.0), 0, 1),
    "rotate_ccw": ((0.0, 0.0), 0, -1),
}


@dataclass(frozen=True)
class SampleSpec:
    """Everything that determines one sample video.

    Attributes:
        class_name: a key of :data:`MOTIONS`.
        index: the video's number within its class.
        photo: a name from :data:`PHOTOS`.
        speed: motion in pixels per frame (translation everywhere; at the frame corners for zoom and
            rotation).
        scale: how much the photo is resized before moving it (>= what the motion needs to stay
            inside the photo).
        centre: ``(x, y)`` point of the resized photo shown at the frame centre in frame 0.
        frames: number of frames.
        size: ``(H, W)`` frame size in pixels.
    """

    class_name: str
    index: int
    photo: str
    speed: float
    scale: float
    centre: tuple[float, float]
    frames: int
    size: tuple[int, int]

    @property
    def filename(self) -> str:
        return f"{self.class_name}_{self.index}.mp4"

    def flow(self) -> np.ndarray:
        """The true flow between any two consecutive frames, ``(2, H, W)`` float32 pixels."""
        return sample_motion(self.class_name, self.speed, self.size)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """An skimage photograph as ``(H, W, 3)`` uint8 RGB (gray ones are replicated)."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _step_transform(class_name: str, speed: float, size: tuple[int, int]) -> tuple[float, float, np.ndarray]:
    """Per-frame motion of a class: (zoom factor k, angle w in radians, translation v (x, y)).

    Zoom and angle are chosen so the frame corners move by ``speed`` pixels per frame, making
    ``speed`` comparable across classes.
    """
    if class_name not in MOTIONS:
        raise ValueError(f"unknown sample class {class_name!r}; choose from {sorted(MOTIONS)}")
    direction, zoom, turn = MOTIONS[class_name]
    corner = 0.5 * math.hypot(size[0], size[1])
    k = 1.0 + zoom * speed / corner
    w = turn * 2.0 * math.asin(min(1.0, speed / (2.0 * corner)))  # chord of length `speed`
    return k, w, speed * np.asarray(direction)


def _frame_matrix(spec: SampleSpec, t: int) -> np.ndarray:
    """2x3 affine map from resized-photo pixels to frame-t pixels.

    Frame t shows the photo scaled by k^t, rotated by t*w and shifted by t*v about the frame
    centre c_f:  p = k^t R(t w) (q - centre) + c_f + t v.  Powers (not sums) of the per-frame
    transform make consecutive frames differ by the same transform, so the flow is constant in t.
    """
    k, w, v = _step_transform(spec.class_name, spec.speed, spec.size)
    h, wd = spec.size
    c_f = np.array([(wd - 1) / 2.0, (h - 1) / 2.0])
    s, a = k**t, t * w
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    offset = c_f + t * v - lin @ np.asarray(spec.centre)
    return np.hstack([lin, offset[:, None]])


def sample_motion(class_name: str, speed: float, size: tuple[int, int]) -> np.ndarray:
    """True flow from frame t to t+1 of a sample video, the same for every t.

    Args:
        class_name: a key of :data:`MOTIONS`.
        speed: the video's speed in pixels per frame (``SampleSpec.speed``).
        size: ``(H, W)`` frame size.

    Returns:
        ``(2, H, W)`` float32, channel 0 = u (+x right), channel 1 = v (+y down), in pixels;
        ``flow[:, y, x]`` takes pixel (x, y) of frame t to (x, y) + flow in frame t+1.
        Exact where the content comes from inside the photo, which :func:`sample_specs` ensures.
    """
    k, w, v = _step_transform(class_name, speed, size)
    h, wd = size
    ys, xs = np.mgrid[0:h, 0:wd].astype(np.float64)
    dx, dy = xs - (wd - 1) / 2.0, ys - (h - 1) / 2.0
    # p' = k R(w) (p - c_f - t v) + c_f + (t+1) v; with t v folded into the centre this is
    # p' - p = k R(w) d - d + v for d = p - c_f (the t-dependence cancels for a single motion type).
    u = k * (math.cos(w) * dx - math.sin(w) * dy) - dx + v[0]
    vv = k * (math.sin(w) * dx + math.cos(w) * dy) - dy + v[1]
    return np.stack([u, vv]).astype(np.float32)


def _reach(class_name: str, speed: float, frames: int, size: tuple[int, int]) -> tuple[float, float]:
    """Half-extent (x, y) of photo area (in frame-0 pixels) that any frame of the video shows."""
    k, w, v = _step_transform(class_name, speed, size)
    h, wd = size
    corners = np.array([[dx, dy] for dx in (-wd / 2, wd / 2) for dy in (-h / 2, h / 2)])
    reach = np.zeros(2)
    for t in range(frames):
        a = -t * w
        inv = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / k**t
        reach = np.maximum(reach, np.abs((corners - t * v) @ inv.T).max(axis=0))
    return float(reach[0]), float(reach[1])


def sample_specs(
    *,
    classes: tuple[str, ...] = ("pan_left", "pan_right", "zoom_in", "rotate_cw"),
    videos_per_class: int = 2,
    frames: int = 16,
    size: tuple[int, int] = (128, 160),
    seed: int = 0,
) -> list[SampleSpec]:
    """The specs :func:`make_sample_videos` renders, for callers that want the true motion.

    Raises :class:`FlowkitError` for fewer than one frame, a negative seed or a class listed
    twice (its videos would share names: the second overwrites the first)."""
    if len(set(classes)) != len(tuple(classes)):
        raise FlowkitError(f"a sample class is listed twice: {', '.join(classes)}")
    if isinstance(frames, bool) or int(frames) != frames or frames < 1:
        raise FlowkitError(f"frames must be a whole number >= 1, got {frames}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise FlowkitError(f"seed must be a whole number >= 0, got {seed}")
    specs = []
    for ci, class_name in enumerate(classes):
        for i in range(videos_per_class):
            rng = np.random.default_rng([seed, ci, i])
            photo = PHOTOS[(ci + i * len(classes)) % len(PHOTOS)]
            speed = float(rng.uniform(1.0, 3.0))
            half_x, half_y = _reach(class_name, speed, frames, size)
            ph, pw = _photo(photo).shape[:2]
            # Smallest photo scale that keeps every frame inside the photo (1 px margin for the
            # bilinear footprint), then a random extra zoom so crops differ between videos.
            need = max((2 * half_x + 2) / pw, (2 * half_y + 2) / ph)
            scale = need * float(rng.uniform(1.05, 1.4))
            slack_x, slack_y = pw * scale / 2 - half_x - 1, ph * scale / 2 - half_y - 1
            centre = (pw * scale / 2 + float(rng.uniform(-slack_x, slack_x)),
                      ph * scale / 2 + float(rng.uniform(-slack_y, slack_y)))
            specs.append(SampleSpec(class_name, i, photo, speed, scale, centre, int(frames),
                                    (int(size[0]), int(size[1]))))
    return specs


def render_sample(spec: SampleSpec) -> np.ndarray:
    """The frames of one sample video, ``(T, H, W, 3)`` uint8 RGB."""
    photo = _photo(spec.photo)
    ph, pw = photo.shape[:2]
    # Resample the photo once with a proper filter (area when shrinking: no aliasing), so the
    # per-frame warps only ever magnify slightly and bilinear interpolation is enough.
    interp = cv2.INTER_AREA if spec.scale < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(photo, (round(pw * spec.scale), round(ph * spec.scale)), interpolation=interp)
    h, w = spec.size
    return np.stack([
        cv2.warpAffine(scaled, _frame_matrix(spec, t), (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT101)
        for t in range(spec.frames)
    ])


def make_sample_videos(
    root: str | Path,
    *,
    classes: tuple[str, ...] = ("pan_left", "pan_right", "zoom_in", "rotate_cw"),
    videos_per_class: int = 2,
    frames: int = 16,
    size: tuple[int, int] = (128, 160),
    seed: int = 0,
    fps: float = 25.0,
) -> list[Path]:
    """Write ``root/<class>/<class>_<i>.mp4`` for every class and index; return the paths.

    Deterministic for a given set of arguments (same photos, crops and speeds; the encoder output
    is byte-identical for the same PyAV build). ``sample_specs`` with the same arguments gives each
    video's true motion. Speeds are 1-3 px/frame.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FlowkitError(f"{root} exists and is not a folder")
    specs = sample_specs(classes=classes, videos_per_class=videos_per_class, frames=frames, size=size,
                         seed=seed)
    return [write_video(root / spec.class_name / spec.filename, render_sample(spec), fps=fps) for spec in specs]
