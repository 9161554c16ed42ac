"""A toy action dataset whose classes differ only in motion.

Each video shows a random, seamless (periodic) colour texture that fills the frame and moves by its
class's motion, plus optional *distractors*: small textured objects moving in random directions,
independent of the class. Everything a single frame shows (texture, colours, contrast, orientation,
position, distractors, noise) is drawn from one distribution for every class, so an appearance-only
classifier (a 2D CNN on one frame) stays at chance while models that see motion can learn the task.

Class names are a small grammar, usable as folder names:

    class   := segment ("_then_" segment)*
    segment := motion ["_slow" | "_fast"]
    motion  := "right" | "left" | "up" | "down"    translation of the content (flow direction)
             | "cw" | "ccw"                        rotation, clockwise / counter-clockwise on screen
             | "still"                             no motion of the texture

Speed levels are multiples of the base motion: ``slow`` 0.5x, plain 1x, ``fast`` 2x, each video
then scaled by a random factor in [0.8, 1.25]. The bands (0.4-0.625, 0.8-1.25, 1.6-2.5 x motion)
do not overlap, so ``right`` (normal speed) and ``right_fast`` are disjoint classes and a set may
hold both without conflict: the plain name always means the normal band, not "any speed".
A ``_then_`` class splits the video's T-1 frame steps into equal segments (a leftover step is a
still pause at a boundary), so ``left_then_right`` and ``right_then_left`` contain exactly the
same motions, only in opposite order, and zero net displacement.

Rotation turns the texture about a random point in the central half of the frame; ``motion`` for
rotation is the speed of points at distance :func:`rotation_radius` (half the short side) from that
centre, i.e. ``motion / rotation_radius`` radians per frame.

What an appearance-only network could exploit, and how it is avoided:

- *Edges and start positions*: the texture is periodic, sampled with wrap-around at any position,
  so content never enters from one side and every frame is an unbiased view; the start offset and
  orientation are uniform for every class.
- *Resampling blur*: every frame of every class is resampled (bicubic) at a random orientation and
  sub-pixel offset, so rotated frames are no blurrier than translated ones; the texture is
  band-limited (Gaussian cut-off at 0.25 cycles/pixel), so resampling barely blurs at all.
- *Rotation borders*: the periodic texture has no border; its period exceeds the frame diagonal,
  so no repetition is visible in one frame.
- *Motion blur*: frames are rendered sharp (no exposure integration).
- *Distractors*: positions uniform on the frame torus (they wrap at the frame edges), directions
  uniform, speeds from the base motion, never from the class.
- *Encoding artefacts*: H.264 spends more bits on faster motion; i.i.d. pixel noise (``noise``)
  dominates those residuals. At ``noise=0`` a very fine-grained single-frame model might in
  principle pick up compression differences between slow and fast classes.

The true flow of the texture (and, optionally, of the distractors) is known: ``ToySpec.flow``.
"""
from __future__ import annotations

import json
import math
import os
import re
import zlib
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Sequence

import cv2
import numpy as np

from .errors import FlowkitError
from .files import atomic_write_text
from .labels import CLASS_INDEX
from .video import write_video

__all__ = [
    "DEFAULT_CLASSES",
    "DIFFICULTIES",
    "SPEED_LEVELS",
    "SPEED_JITTER",
    "ToySpec",
    "parse_toy_class",
    "toy_parameters",
    "toy_specs",
    "render_toy",
    "rotation_radius",
    "make_toy_videos",
    "load_toy_specs",
]

DEFAULT_CLASSES = ("right", "left", "up", "down", "right_fast", "cw", "ccw",
                   "left_then_right", "right_then_left")

#: Explicit generation parameters per difficulty preset. noise: per-pixel Gaussian std in 0-255
#: intensity units, i.i.d. per frame and channel; motion: base speed in pixels/frame; distractors:
#: number of independently moving objects; contrast: texture and object contrast (1 = full).
DIFFICULTIES = {
    "easy": {"noise": 0.0, "motion": 2.0, "distractors": 0, "contrast": 1.0},
    "default": {"noise": 3.0, "motion": 1.5, "distractors": 2, "contrast": 0.8},
    "hard": {"noise": 10.0, "motion": 0.75, "distractors": 6, "contrast": 0.4},
}

#: Speed suffix -> multiple of the base motion.
SPEED_LEVELS = {"slow": 0.5, "": 1.0, "fast": 2.0}
#: Per-video random speed factor range (log-uniform); keeps the speed bands disjoint.
SPEED_JITTER = (0.8, 1.25)

_TRANSLATIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_ROTATIONS = {"cw": 1.0, "ccw": -1.0}  # positive angle = clockwise on screen (y axis down)
_MOTIONS = (*_TRANSLATIONS, *_ROTATIONS, "still")
_SEGMENT = re.compile(r"^(?P<motion>[a-z]+?)(?:_(?P<speed>slow|fast))?$")
_GRAMMAR = ("classes are motions joined by '_then_', each optionally suffixed '_slow' or '_fast'; "
            f"motions: {', '.join(_MOTIONS)} (e.g. right, cw_fast, left_then_right)")

#: The plan of a toy dataset being written (``toy.json``'s content), written before the first video
#: and removed once ``toy.json`` is: a rerun of the same command finds it and resumes.
PLAN = "toy.partial.json"
_LISTS = ("trainlist01.txt", "testlist01.txt")

_TEXTURE_STD = 45.0  # luminance std of the texture at contrast 1, intensity units
_CUTOFF = 0.25  # Gaussian low-pass of the texture, cycles/pixel (1/e amplitude)


def parse_toy_class(name: str) -> tuple[tuple[str, float], ...]:
    """Motion segments of a class name, e.g. ``"left_then_right_fast"`` ->
    ``(("left", 1.0), ("right", 2.0))``.

    Each segment is (motion, speed multiple of the base motion). Raises :class:`FlowkitError` for
    a name outside the grammar in the module docstring.
    """
    segments = []
    for part in name.split("_then_"):
        m = _SEGMENT.match(part)
        if m is None or m["motion"] not in _MOTIONS:
            raise FlowkitError(f"unknown toy class {name!r}: {_GRAMMAR}")
        speed = m["speed"] or ""
        if m["motion"] == "still" and speed:
            raise FlowkitError(f"unknown toy class {name!r}: 'still' takes no speed suffix")
        segments.append((m["motion"], SPEED_LEVELS[speed]))
    return tuple(segments)


def rotation_radius(size: tuple[int, int]) -> float:
    """Distance (pixels) from the rotation centre at which rotation moves ``speed`` px/frame."""
    return 0.5 * min(size)


def _segment_schedule(steps: int, segments: int) -> list[int]:
    """Segment index of each of ``steps`` frame steps; -1 marks a still pause.

    Every segment gets ``steps // segments`` steps; the remainder (< segments) become pauses at the
    first boundaries, so all segments last equally long.
    """
    per, pauses = divmod(steps, segments)
    schedule: list[int] = []
    for s in range(segments):
        schedule += [s] * per
        if s < segments - 1 and pauses:
            schedule.append(-1)
            pauses -= 1
    return schedule


@dataclass(frozen=True)
class ToySpec:
    """Everything that determines one toy video (JSON-serialisable; ``toy.json`` lists them).

    Attributes:
        class_name: a class name of the grammar in the module docstring.
        index: the video's number within its class.
        frames: number of frames T.
        size: ``(H, W)`` in pixels.
        speed: the video's base speed, pixels/frame (the base motion times a random factor in
            :data:`SPEED_JITTER`); a segment moves at ``speed`` times its speed level.
        motion: the dataset's base motion, pixels/frame (sets the distractors' speeds).
        angle0: texture orientation in frame 0, radians.
        offset0: ``(x, y)`` texture coordinate shown at frame pixel (0, 0) in frame 0.
        centre: ``(x, y)`` rotation centre, frame pixels.
        noise: per-pixel Gaussian noise std, intensity units (0-255).
        contrast: texture and distractor contrast, (0, 1].
        distractors: number of independently moving objects.
        seed: seeds the texture, the distractors and the noise.
    """

    class_name: str
    index: int
    frames: int
    size: tuple[int, int]
    speed: float
    motion: float
    angle0: float
    offset0: tuple[float, float]
    centre: tuple[float, float]
    noise: float
    contrast: float
    distractors: int
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.class_name}_{self.index}.mp4"

    @property
    def period(self) -> int:
        """Side of the square periodic texture, pixels: > the frame diagonal, a multiple of 32."""
        return _period(self.size)

    def steps(self) -> np.ndarray:
        """Per frame step t -> t+1, the 3x3 map of frame pixels (x, y, 1) of the texture layer:
        ``(T-1, 3, 3)`` float64."""
        segments = parse_toy_class(self.class_name)
        out = np.tile(np.eye(3), (self.frames - 1, 1, 1))
        cx, cy = self.centre
        for t, s in enumerate(_segment_schedule(self.frames - 1, len(segments))):
            if s < 0:
                continue
            motion, level = segments[s]
            if motion in _TRANSLATIONS:
                out[t, :2, 2] = np.asarray(_TRANSLATIONS[motion]) * self.speed * level
            elif motion in _ROTATIONS:
                a = _ROTATIONS[motion] * self.speed * level / rotation_radius(self.size)
                c, s_ = math.cos(a), math.sin(a)
                out[t, :2, :2] = [[c, -s_], [s_, c]]
                out[t, :2, 2] = [cx - c * cx + s_ * cy, cy - s_ * cx - c * cy]
        return out

    def texture_maps(self) -> np.ndarray:
        """Per frame, the 3x3 map from texture coordinates to frame pixels: ``(T, 3, 3)``."""
        c, s = math.cos(self.angle0), math.sin(self.angle0)
        first = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        first[:2, 2] = -first[:2, :2] @ np.asarray(self.offset0)
        maps = [first]
        for step in self.steps():
            maps.append(step @ maps[-1])
        return np.stack(maps)

    def flow(self, with_distractors: bool = False) -> np.ndarray:
        """True forward flow ``(T-1, 2, H, W)`` float32, pixels (u +x right, v +y down).

        ``flow[t, :, y, x]`` takes pixel (x, y) of frame t to (x, y) + flow in frame t+1. By
        default the texture layer's motion everywhere (the class's motion); ``with_distractors``
        replaces it by each distractor's velocity where that object covers the pixel (alpha > 0.5)
        in frame t.
        """
        h, w = self.size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        m = self.steps()[:, :2, :, None, None]  # (T-1, 2, 3, 1, 1)
        flow = (m[:, :, 0] * xs + m[:, :, 1] * ys + m[:, :, 2] - np.stack([xs, ys])).astype(np.float32)
        if with_distractors:
            objects = _Distractors(self)
            for t in range(self.frames - 1):
                for alpha, velocity in objects.masks(t):
                    flow[t, :, alpha > 0.5] = velocity.astype(np.float32)
        return flow

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ToySpec":
        names = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**values)


def _period(size: tuple[int, int]) -> int:
    return 32 * math.ceil(1.25 * math.hypot(*size) / 32)


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) for p in parts])


def _class_key(name: str) -> int:
    """A stable integer per class name, so a video's draws do not depend on which other classes
    the set holds (``hash()`` is salted per process)."""
    return zlib.crc32(name.encode())


def _texture(spec: ToySpec) -> np.ndarray:
    """The video's periodic colour texture, ``(P, P, 3)`` float32 intensities (not clipped).

    Power-law filtered noise (random spectral slope) plus a few random discs and squares, drawn
    with wrap-around, all low-passed at :data:`_CUTOFF` so resampling is nearly exact; luminance
    and two random chroma directions mixed into RGB around a random mean colour.
    """
    rng = _rng(spec.seed, 1)
    p = spec.period
    f = np.hypot(np.fft.fftfreq(p)[:, None], np.fft.fftfreq(p)[None, :])
    beta = rng.uniform(0.8, 1.6)
    amplitude = (f**2 + (1.0 / 32) ** 2) ** (-beta / 2)
    fields_ = np.fft.ifft2(np.fft.fft2(rng.standard_normal((3, p, p))) * amplitude).real
    fields_ /= fields_.std(axis=(1, 2), keepdims=True)
    yy, xx = np.mgrid[0:p, 0:p].astype(np.float64)
    for _ in range(rng.integers(3, 9)):
        cx, cy, r = rng.uniform(0, p), rng.uniform(0, p), rng.uniform(0.03, 0.1) * p
        dx, dy = (xx - cx + p / 2) % p - p / 2, (yy - cy + p / 2) % p - p / 2
        if rng.random() < 0.5:
            dist = np.hypot(dx, dy) - r
        else:
            a = rng.uniform(0, math.pi / 2)
            dist = np.maximum(abs(math.cos(a) * dx + math.sin(a) * dy),
                              abs(-math.sin(a) * dx + math.cos(a) * dy)) - 0.85 * r
        alpha = np.clip(0.5 - dist, 0.0, 1.0)
        fields_ = fields_ * (1 - alpha) + rng.normal(0.0, 1.5, size=(3, 1, 1)) * alpha
    lowpass = np.exp(-((f / _CUTOFF) ** 2))
    fields_ = np.fft.ifft2(np.fft.fft2(fields_) * lowpass).real
    fields_ /= fields_.std(axis=(1, 2), keepdims=True)
    # Luminance along (1,1,1), chroma along two random directions of random strength.
    mix = np.full((3, 3), 1.0 / math.sqrt(3))
    mix[:, 1:] = rng.normal(0.0, 1.0, size=(3, 2)) * rng.uniform(0.0, 0.5, size=2)
    mean = rng.uniform(80.0, 175.0, size=3)
    spread = spec.contrast * _TEXTURE_STD * math.sqrt(3)
    image = mean[:, None, None] + spread * np.einsum("cs,shw->chw", mix, fields_)
    return np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float32)


class _Distractors:
    """The video's distractor objects: discs or squares with a moving stripe pattern, constant
    random velocity, positions on the frame torus (they wrap at the frame edges)."""

    def __init__(self, spec: ToySpec):
        rng = _rng(spec.seed, 2)
        h, w = spec.size
        n = spec.distractors
        self.size = spec.size
        self.start = rng.uniform(0, 1, size=(n, 2)) * (w, h)
        heading = rng.uniform(0, 2 * math.pi, size=n)
        speed = rng.uniform(0.5, 1.5, size=n) * spec.motion
        self.velocity = np.stack([np.cos(heading), np.sin(heading)], axis=1) * speed[:, None]
        self.radius = rng.uniform(0.06, 0.12, size=n) * min(h, w)
        self.square = rng.random(n) < 0.5
        self.tilt = rng.uniform(0, math.pi / 2, size=n)
        self.colour = 128.0 + spec.contrast * rng.uniform(-110.0, 110.0, size=(n, 3))
        self.stripes = rng.uniform(0.1, 0.25, size=n)  # cycles/pixel
        self.stripe_angle = rng.uniform(0, math.pi, size=n)
        self.stripe_amp = spec.contrast * rng.uniform(15.0, 40.0, size=n)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        self._grid = xs, ys

    def masks(self, t: int):
        """Yield ``(alpha (H, W), velocity (2,))`` per object in drawing order, in frame t."""
        for j, (dx, dy) in self._offsets(t):
            yield self._alpha(j, dx, dy), self.velocity[j]

    def _offsets(self, t: int):
        """Yield ``(j, (dx, dy))``: pixel offsets from object j's centre, wrapped to the torus."""
        h, w = self.size
        xs, ys = self._grid
        for j in range(len(self.radius)):
            cx, cy = self.start[j] + t * self.velocity[j]
            yield j, ((xs - cx + w / 2) % w - w / 2, (ys - cy + h / 2) % h - h / 2)

    def _alpha(self, j: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        if self.square[j]:
            c, s = math.cos(self.tilt[j]), math.sin(self.tilt[j])
            dist = np.maximum(abs(c * dx + s * dy), abs(-s * dx + c * dy)) - 0.85 * self.radius[j]
        else:
            dist = np.hypot(dx, dy) - self.radius[j]
        return np.clip(0.5 - dist, 0.0, 1.0)

    def paint(self, image: np.ndarray, t: int) -> None:
        """Composite the objects onto ``image`` ``(H, W, 3)`` float32 in place, for frame t."""
        for j, (dx, dy) in self._offsets(t):
            alpha = self._alpha(j, dx, dy)
            a = self.stripe_angle[j]
            phase = 2 * math.pi * self.stripes[j] * (math.cos(a) * dx + math.sin(a) * dy)
            fill = self.colour[j][None, None, :] + (self.stripe_amp[j] * np.sin(phase))[..., None]
            image += alpha[..., None] * (fill - image)


def render_toy(spec: ToySpec) -> np.ndarray:
    """The frames of one toy video, ``(T, H, W, 3)`` uint8 RGB."""
    h, w = spec.size
    texture = _texture(spec)
    p = spec.period
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    objects = _Distractors(spec)
    noise_rng = _rng(spec.seed, 3)
    frames = np.empty((spec.frames, h, w, 3), np.uint8)
    for t, to_frame in enumerate(spec.texture_maps()):
        inv = np.linalg.inv(to_frame)
        qx = (inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]) % p
        qy = (inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]) % p
        image = cv2.remap(texture, qx.astype(np.float32), qy.astype(np.float32), cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_WRAP)
        objects.paint(image, t)
        if spec.noise > 0:
            image += noise_rng.normal(0.0, spec.noise, size=image.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(image), 0, 255)
    return frames


def toy_parameters(difficulty: str = "default", *, noise: float | None = None,
                   motion: float | None = None, distractors: int | None = None,
                   contrast: float | None = None) -> dict:
    """The preset ``difficulty`` with explicit overrides: ``{noise, motion, distractors, contrast}``.

    Raises :class:`FlowkitError` for an unknown preset or an out-of-range value.
    """
    if difficulty not in DIFFICULTIES:
        raise FlowkitError(f"unknown difficulty {difficulty!r}; choose from {', '.join(DIFFICULTIES)}")
    params = dict(DIFFICULTIES[difficulty])
    for name, value in (("noise", noise), ("motion", motion), ("distractors", distractors),
                        ("contrast", contrast)):
        if value is not None:
            params[name] = value
    params = {"noise": float(params["noise"]), "motion": float(params["motion"]),
              "distractors": params["distractors"], "contrast": float(params["contrast"])}
    if not math.isfinite(params["noise"]) or params["noise"] < 0:
        raise FlowkitError(f"noise must be >= 0 (intensity std, 0-255 units), got {params['noise']}")
    if not math.isfinite(params["motion"]) or params["motion"] <= 0:
        raise FlowkitError(f"motion must be > 0 pixels/frame, got {params['motion']}")
    if int(params["distractors"]) != params["distractors"] or params["distractors"] < 0:
        raise FlowkitError(f"distractors must be a whole number >= 0, got {params['distractors']}")
    params["distractors"] = int(params["distractors"])
    if not 0 < params["contrast"] <= 1:
        raise FlowkitError(f"contrast must be in (0, 1], got {params['contrast']}")
    return params


def _check_layout(classes: Sequence[str], videos_per_class: int, frames: int,
                  size: tuple[int, int]) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes:
        raise FlowkitError("no toy classes given")
    if len(set(classes)) != len(classes):
        raise FlowkitError(f"a toy class is listed twice: {', '.join(classes)}")
    longest = max(len(parse_toy_class(c)) for c in classes)
    if frames < longest + 1:
        raise FlowkitError(f"{frames} frames are too few: a class with {longest} motion segments "
                           f"needs at least {longest + 1} frames")
    if videos_per_class < 1:
        raise FlowkitError(f"videos per class must be >= 1, got {videos_per_class}")
    if len(size) != 2 or min(size) < 8:
        raise FlowkitError(f"video size must be (H, W) with both sides >= 8 pixels, got {size}")
    return classes


def toy_specs(*, classes: Sequence[str] | None = None, videos_per_class: int = 8, frames: int = 16,
              size: tuple[int, int] = (64, 64), difficulty: str = "default",
              noise: float | None = None, motion: float | None = None,
              distractors: int | None = None, contrast: float | None = None,
              seed: int = 0) -> list[ToySpec]:
    """The specs :func:`make_toy_videos` renders (same arguments), class by class.

    A video's random draws depend on (seed, class name, index) only, so adding a class to the set
    leaves the other videos unchanged. Motion draws (speed, centre) and appearance draws (texture,
    orientation, offset, distractors, noise) come from separate streams; the appearance
    distribution is the same for every class.
    """
    classes = _check_layout(DEFAULT_CLASSES if classes is None else classes, videos_per_class,
                            frames, size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FlowkitError(f"seed must be a whole number >= 0, got {seed}")
    params = toy_parameters(difficulty, noise=noise, motion=motion, distractors=distractors,
                            contrast=contrast)
    h, w = int(size[0]), int(size[1])
    specs = []
    for name in classes:
        for i in range(videos_per_class):
            looks, moves = _rng(seed, _class_key(name), i, 0), _rng(seed, _class_key(name), i, 1)
            lo, hi = SPEED_JITTER
            speed = params["motion"] * math.exp(moves.uniform(math.log(lo), math.log(hi)))
            centre = (w / 2 + moves.uniform(-w / 4, w / 4), h / 2 + moves.uniform(-h / 4, h / 4))
            angle = float(looks.uniform(0, 2 * math.pi))
            offset = looks.uniform(0, _period((h, w)), size=2)
            specs.append(ToySpec(name, i, int(frames), (h, w), float(speed), params["motion"], angle,
                                 (float(offset[0]), float(offset[1])),
                                 (float(centre[0]), float(centre[1])), params["noise"],
                                 params["contrast"], params["distractors"],
                                 int(looks.integers(0, 2**31 - 1))))
    return specs


def _test_indices(name: str, videos_per_class: int, test_fraction: float, seed: int) -> set[int]:
    """Held-out indices of one class: round(fraction * N), at least 1, leaving at least 1 train."""
    if test_fraction <= 0:
        return set()
    n_test = min(videos_per_class - 1, max(1, round(test_fraction * videos_per_class)))
    order = _rng(seed, _class_key(name), 2**31).permutation(videos_per_class)
    return {int(i) for i in order[:n_test]}


def _partial(rel: str) -> str:
    """Where the video ``rel`` is written before it is renamed into place: a hidden file beside it
    with the same extension (the container follows it), which `flowkit extract` never scans."""
    path = PurePosixPath(rel)
    return (path.parent / f".{path.stem}.partial{path.suffix}").as_posix()


def _read_listing(path: Path) -> dict:
    try:
        listing = json.loads(path.read_text())
        if not isinstance(listing, dict) or not isinstance(listing["files"], list):
            raise TypeError("no list of files")
        return listing
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlowkitError(f"cannot read {path} ({e}); remove {path.parent} by hand") from None


def _remove_listed(out_dir: Path, listed: Sequence[str]) -> None:
    """Remove an earlier toy set's own files (``listed`` videos, their unfinished temporaries, the
    lists, toy.json, the plan) and class folders left empty; FlowkitError if anything else is left."""
    for rel in [*listed, CLASS_INDEX, *_LISTS, "toy.json", PLAN]:
        for target in (out_dir / rel, out_dir / _partial(rel)):
            if out_dir.resolve() in target.resolve().parents:
                target.unlink(missing_ok=True)
                if target.parent != out_dir and target.parent.is_dir() \
                        and not any(target.parent.iterdir()):
                    target.parent.rmdir()
    if any(out_dir.iterdir()):
        left = sorted(p.name for p in out_dir.iterdir())
        raise FlowkitError(f"{out_dir} holds files that are not part of the earlier toy dataset "
                           f"({', '.join(left[:5])}); move them away or choose another folder")


def _only_planned(out_dir: Path, plan: dict) -> bool:
    """Whether every file and folder in ``out_dir`` is one this plan writes (the remains of a run
    interrupted before toy.json was written, by a flowkit that wrote no plan)."""
    files = {*plan["files"], *(_partial(rel) for rel in plan["files"]), CLASS_INDEX, *_LISTS}
    folders = {PurePosixPath(rel).parent.as_posix() for rel in plan["files"]}
    for dirpath, dirnames, filenames in os.walk(out_dir):
        here = Path(dirpath)
        for name in dirnames:
            rel = (here / name).relative_to(out_dir).as_posix()
            if rel not in folders or (here / name).is_symlink():
                return False
        if any((here / name).relative_to(out_dir).as_posix() not in files for name in filenames):
            return False
    return True


def _clear_previous(out_dir: Path, overwrite: bool, plan: dict) -> set[str]:
    """Make ``out_dir`` ready for the toy set ``plan`` (toy.json's content): new or empty; an
    unfinished run of the same plan (its :data:`PLAN` file), whose finished videos are returned to
    be kept; or (with ``overwrite``) an earlier toy set, finished or not, whose own files (listed in
    its toy.json or plan) are removed. Anything else in it is an error: stray class folders would
    become labels when the folder is extracted."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FlowkitError(f"{out_dir} exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return set()
    manifest, unfinished = out_dir / "toy.json", out_dir / PLAN
    if manifest.is_file():
        if not overwrite:
            raise FlowkitError(f"{out_dir} already holds a toy dataset; pass --overwrite "
                               "(overwrite=True) to replace it, or choose another folder")
        _remove_listed(out_dir, _read_listing(manifest)["files"])
        return set()
    if unfinished.is_file():
        earlier = _read_listing(unfinished)
        if earlier == plan:  # the same command again: resume
            return {rel for rel in plan["files"] if (out_dir / rel).is_file()}
        if not overwrite:
            raise FlowkitError(f"{out_dir} holds an unfinished toy dataset made with other options; "
                               "rerun the command that started it to finish it, or pass "
                               "--overwrite (overwrite=True) to replace it")
        _remove_listed(out_dir, earlier["files"])
        return set()
    if not _only_planned(out_dir, plan):
        raise FlowkitError(f"{out_dir} is not empty and holds no toy dataset; choose a new or empty "
                           "folder (other class folders in it would become labels)")
    if not overwrite:
        raise FlowkitError(f"{out_dir} holds some of this toy dataset's videos but no toy.json (an "
                           "interrupted run of an earlier flowkit); pass --overwrite "
                           "(overwrite=True) to write them again")
    return set()


def make_toy_videos(out_dir: str | Path, *, classes: Sequence[str] | None = None,
                    videos_per_class: int = 8, frames: int = 16, size: tuple[int, int] = (64, 64),
                    difficulty: str = "default", noise: float | None = None,
                    motion: float | None = None, distractors: int | None = None,
                    contrast: float | None = None, seed: int = 0, test_fraction: float = 0.25,
                    fps: float = 25.0, overwrite: bool = False) -> list[Path]:
    """Write a toy action dataset; return the video paths.

    Layout: ``out_dir/<class>/<class>_<i>.mp4`` (H.264 via :func:`flowkit.video.write_video`),
    ``classInd.txt`` (``1 classname`` lines, classes sorted by name: the order ``flowkit extract``
    gives a class-folder tree, so labels agree with or without split lists), ``toy.json`` (every
    parameter, the seed, the files and each video's :class:`ToySpec`, see :func:`load_toy_specs`),
    and, when ``test_fraction > 0``, UCF101-style ``trainlist01.txt`` (``class/file.mp4 label``)
    and ``testlist01.txt`` (``class/file.mp4``) holding out ``round(test_fraction * N)`` videos of
    each class (at least one, leaving one for training).

    Args:
        classes: class names (module docstring grammar); ``None`` is :data:`DEFAULT_CLASSES`.
        size: ``(H, W)`` pixels.
        difficulty: a :data:`DIFFICULTIES` preset; ``noise``, ``motion``, ``distractors``,
            ``contrast`` override its values (see :data:`DIFFICULTIES` for units).
        seed: everything random follows from it (a whole number >= 0).
        fps: frame rate of the videos, > 0.
        overwrite: replace an earlier toy dataset in ``out_dir``, finished or not (only its own
            files).

    Every argument is checked before anything is created. The plan (toy.json's content) is written
    first as :data:`PLAN`, each video under a hidden name renamed when complete, and toy.json last:
    a run stopped midway (Ctrl-C, an error) is finished by the same call, which keeps the videos
    already written.

    The frames, and the encoded files, are deterministic for given arguments (on one machine:
    another x264 build may encode the same frames to other bytes).
    """
    out_dir = Path(out_dir)
    if not 0 <= test_fraction < 1:
        raise FlowkitError(f"test fraction must be in [0, 1), got {test_fraction}")
    if test_fraction > 0 and videos_per_class < 2:
        raise FlowkitError("a held-out split needs at least 2 videos per class; pass "
                           "test_fraction=0 (--test-fraction 0) for a single video per class")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) \
            or fps <= 0 or Fraction(fps).limit_denominator(1001) == 0:
        raise FlowkitError(f"fps must be a number > 0 (at least 1/1001), got {fps}")
    specs = toy_specs(classes=classes, videos_per_class=videos_per_class, frames=frames, size=size,
                      difficulty=difficulty, noise=noise, motion=motion, distractors=distractors,
                      contrast=contrast, seed=seed)
    names = sorted({s.class_name for s in specs})
    label = {name: i + 1 for i, name in enumerate(names)}
    files, train, test = [], [], []
    held_out = {n: _test_indices(n, videos_per_class, test_fraction, seed) for n in names}
    for spec in specs:
        rel = f"{spec.class_name}/{spec.filename}"
        files.append(rel)
        if spec.index in held_out[spec.class_name]:
            test.append(rel)
        else:
            train.append(f"{rel} {label[spec.class_name]}")
    params = toy_parameters(difficulty, noise=noise, motion=motion, distractors=distractors,
                            contrast=contrast)
    manifest = {
        "generator": "flowkit.toy",
        "seed": seed,
        "difficulty": difficulty,
        **params,
        "classes": names,
        "videos_per_class": videos_per_class,
        "frames": frames,
        "size": [int(size[0]), int(size[1])],
        "fps": fps,
        "test_fraction": test_fraction,
        "speed_levels": {k or "normal": v for k, v in SPEED_LEVELS.items()},
        "speed_jitter": list(SPEED_JITTER),
        "rotation_radius": rotation_radius(size),
        "files": files,
        "videos": [s.to_json() for s in specs],
    }
    text = json.dumps(manifest, indent=1) + "\n"
    # Everything is checked; now the folder. The plan is written before the first video (each
    # written under a hidden name and renamed when complete) and toy.json last, so an interrupted
    # run is resumed by the same command and replaced with --overwrite.
    finished = _clear_previous(out_dir, overwrite, json.loads(text))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / PLAN, text)
    paths = []
    for spec, rel in zip(specs, files):
        if rel not in finished:
            partial = out_dir / _partial(rel)
            try:
                write_video(partial, render_toy(spec), fps=fps)
                os.replace(partial, out_dir / rel)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        paths.append(out_dir / rel)
    (out_dir / CLASS_INDEX).write_text("".join(f"{label[n]} {n}\n" for n in names))
    if test_fraction > 0:
        (out_dir / "trainlist01.txt").write_text("".join(f"{line}\n" for line in sorted(train)))
        (out_dir / "testlist01.txt").write_text("".join(f"{rel}\n" for rel in sorted(test)))
    atomic_write_text(out_dir / "toy.json", text)
    (out_dir / PLAN).unlink()
    return paths


def load_toy_specs(out_dir: str | Path) -> dict[str, ToySpec]:
    """Each video's spec from a toy dataset's ``toy.json``, by store key (``"right/right_0"``);
    ``spec.flow()`` gives its true flow."""
    manifest = Path(out_dir) / "toy.json"
    try:
        videos = json.loads(manifest.read_text())["videos"]
    except (OSError, ValueError, KeyError) as e:
        raise FlowkitError(f"cannot read toy dataset manifest {manifest}: {e}") from None
    specs = [ToySpec.from_json(v) for v in videos]
    return {f"{s.class_name}/{Path(s.filename).stem}": s for s in specs}
