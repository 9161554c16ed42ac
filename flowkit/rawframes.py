"""mmaction2 / TSN / denseflow *rawframes*: one folder of JPEG files per video.

Layout of one video's folder (``OUT_DIR/<class>/<video>/``)::

    img_00001.jpg  img_00002.jpg  ...          RGB frames, n of them
    flow_x_00001.jpg  flow_y_00001.jpg  ...    flow pairs, n - 1 of them (8-bit gray)

- Numbering starts at 1 (mmaction2's ``start_index=1``, TSN's ``dense_flow``) or at 0 (what
  denseflow writes today); both are read, and :func:`write_frames` writes either.
- Flow between frames t and t + s (denseflow ``-s s``, s > 1) is named ``flow_x_p<s>_%05d.jpg``;
  it is read and thinned to every s-th frame, flowkit's ``--step s``.
- Backward flow (denseflow ``-s -s``), from frame t + s to frame t, is named
  ``flow_x_m<s>_%05d.jpg`` and numbered by the frame it starts from, t + s (denseflow's
  ``writeFlowImages``: ``start + i + base`` with base s): ``flow_x_m1_00001.jpg`` is the flow from
  frame 1 to frame 0 when images are numbered from 0. A folder may hold both directions.
- Flow is quantised linearly in a bound b (pixels), exactly as denseflow does (``src/common.cpp``,
  ``convertFlowToImage``): ``v > b -> 255``, ``v < -b -> 0``, else ``round(255 (v + b) / (2 b))``
  (:func:`flowkit.store.codecs.quantize`, half to even like OpenCV's ``cvRound``). Decoded
  values are ``q 2b / 255 - b``, so within the bound the quantiser alone is off by at most
  ``b / 255`` px (0.078 px at b = 20); the JPEG coding of the gray images adds its own error, and
  values beyond the bound are lost (clipped). The bound is not recorded in the files: readers are
  told it (``--bound``, 20 by default, mmaction2's ``build_rawframes.py``; denseflow's own
  default is 32).

Arrays follow flowkit's conventions: RGB ``(T, H, W, 3)`` uint8, flow ``(T - 1, 2, H, W)`` float32
pixels, u (+x right) then v (+y down), ``flow[t]`` from frame t to frame t + 1.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import jpeg
from .errors import FlowkitError
from .store.codecs import DEFAULT_BOUND, dequantize, quantize

RGB_PREFIX = "img"
FLOW_X_PREFIX = "flow_x"
FLOW_Y_PREFIX = "flow_y"
DEFAULT_START_INDEX = 1
DEFAULT_QUALITY = 95  # mmaction2 / denseflow write OpenCV's default JPEG quality, 95
DIGITS = 5

_NAME_RE = re.compile(r"(?P<kind>img|flow_x|flow_y)(?:_(?P<dir>[pm])(?P<step>\d+))?_(?P<index>\d+)"
                      r"\.(?P<ext>jpg|jpeg|png)")


class RawframesError(FlowkitError):
    """A rawframes folder is incomplete or inconsistent; the message names the folder and cause."""


def frame_name(kind: str, index: int, step: int = 1, ext: str = "jpg",
               backward: bool = False) -> str:
    """The file name of frame ``index`` of ``kind`` (``"img"``, ``"flow_x"``, ``"flow_y"``):
    ``img_00001.jpg``, ``flow_x_00000.jpg``, ``flow_x_p2_00000.jpg`` (denseflow's step variant),
    ``flow_x_m1_00001.jpg`` (``backward``: from frame ``index`` to ``index - step``),
    ``flow_x_00000.png`` (``ext``: denseflow writes PNG too)."""
    tag = ""
    if kind != RGB_PREFIX:
        tag = f"_m{step}" if backward else f"_p{step}" if step > 1 else ""
    return f"{kind}{tag}_{index:0{DIGITS}d}.{ext}"


def quantization_error(bound: float) -> float:
    """The largest error of the 8-bit quantiser inside ``[-bound, bound]``: half a level,
    ``bound / 255`` pixels."""
    return float(bound) / 255.0


def flow_to_images(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> tuple[np.ndarray, np.ndarray]:
    """One flow pair ``(2, H, W)`` pixels -> gray images ``(flow_x, flow_y)``, ``(H, W)`` uint8."""
    q = quantize(np.asarray(flow), float(bound))
    return q[0], q[1]


def images_to_flow(flow_x: np.ndarray, flow_y: np.ndarray,
                   bound: float = DEFAULT_BOUND) -> np.ndarray:
    """The gray images ``(H, W)`` uint8 of one pair -> flow ``(2, H, W)`` float32 pixels."""
    return dequantize(np.stack([flow_x, flow_y]), float(bound))


# ------------------------------------------------------------------------------ writing

def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """A JPEG of an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 image (OpenCV, like denseflow)."""
    import cv2

    pixels = image[..., ::-1] if image.ndim == 3 else image  # OpenCV writes BGR
    ok, blob = cv2.imencode(".jpg", np.ascontiguousarray(pixels),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RawframesError("OpenCV could not encode a frame as JPEG")
    return blob.tobytes()


def write_frames(folder: Path, first: int, rgb: np.ndarray | None = None,
                 flow: np.ndarray | None = None, *, bound: float = DEFAULT_BOUND,
                 quality: int = DEFAULT_QUALITY, start_index: int = DEFAULT_START_INDEX,
                 backward: np.ndarray | None = None) -> None:
    """Write RGB frames ``(N, H, W, 3)``, flow pairs ``(N, 2, H, W)`` and/or backward flow pairs
    ``(N, 2, H, W)`` (pair i from frame i + 1 to frame i) into ``folder`` as ``img_*`` /
    ``flow_{x,y}_*`` / ``flow_{x,y}_m1_*`` JPEGs; frame and pair ``first`` is numbered
    ``start_index + first`` (a backward pair by the frame it starts from, one more). ``rgb`` may
    also be a list of JPEG files (``bytes``, e.g. a store's frames): written as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(() if rgb is None else rgb):
        data = frame if isinstance(frame, bytes) else encode_jpeg(frame, quality)
        (folder / frame_name(RGB_PREFIX, start_index + first + i)).write_bytes(data)
    for pairs, offset in ((flow, 0), (backward, 1)):
        for i, pair in enumerate(() if pairs is None else pairs):
            index = start_index + first + i + offset
            for kind, image in zip((FLOW_X_PREFIX, FLOW_Y_PREFIX), flow_to_images(pair, bound)):
                (folder / frame_name(kind, index, backward=bool(offset))).write_bytes(
                    encode_jpeg(image, quality))


# ------------------------------------------------------------------------------ reading

@dataclass
class RawframeVideo:
    """What one video folder holds, as found on disk (:func:`scan_folder`).

    ``rgb``: the image indices, sorted; ``flow``: the flow indices of the chosen step, sorted
    (x and y agree, else it is a problem); ``backward``: the same for backward flow
    (``flow_x_m<s>_*``, indexed by the frame each pair starts from); ``flow_step``: s of
    ``flow_x_p<s>_*`` / ``flow_x_m<s>_*`` (1 for plain names); ``rgb_ext`` / ``flow_ext``: the
    files' extension (``jpg``, ``jpeg`` or ``png``); ``problems``: why the folder cannot be
    imported as it is (empty: it can).
    """

    folder: Path
    rgb: list[int] = field(default_factory=list)
    flow: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    flow_step: int = 1
    rgb_ext: str = "jpg"
    flow_ext: str = "jpg"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rgb_file(self, index: int) -> Path:
        """The file of image ``index``."""
        return self.folder / frame_name(RGB_PREFIX, index, ext=self.rgb_ext)

    def flow_files(self, index: int, backward: bool = False) -> tuple[Path, Path]:
        """The ``flow_x`` and ``flow_y`` files of flow pair ``index`` (backward: the pair from
        frame ``index``)."""
        return tuple(self.folder / frame_name(kind, index, self.flow_step, self.flow_ext, backward)
                     for kind in (FLOW_X_PREFIX, FLOW_Y_PREFIX))

    @property
    def rgb_start(self) -> int:
        return self.rgb[0] if self.rgb else DEFAULT_START_INDEX

    @property
    def flow_start(self) -> int:
        return self.flow[0] if self.flow else DEFAULT_START_INDEX

    def naming(self) -> str:
        """How the files are named, e.g. ``"img_{:05d}.jpg from 1, flow_{x,y}_p2_{:05d}.jpg
        from 0"``."""
        parts = []
        if self.rgb:
            parts.append(f"img_{{:05d}}.{self.rgb_ext} from {self.rgb_start}")
        if self.flow:
            tag = f"_p{self.flow_step}" if self.flow_step > 1 else ""
            parts.append(f"flow_{{x,y}}{tag}_{{:05d}}.{self.flow_ext} from {self.flow_start}")
        if self.backward:
            parts.append(f"flow_{{x,y}}_m{self.flow_step}_{{:05d}}.{self.flow_ext} from "
                         f"{self.backward[0]}")
        return ", ".join(parts)


def is_frame_file(name: str) -> bool:
    """Whether ``name`` is an ``img_*`` / ``flow_x_*`` / ``flow_y_*`` file of a rawframes folder."""
    return _NAME_RE.fullmatch(name) is not None


def scan_folder(folder: str | os.PathLike) -> RawframeVideo:
    """Read the file names of one video folder and check them: numbering without gaps, as many
    ``flow_x`` as ``flow_y``, and n - s flow pairs for n images (flow step s). Every finding that
    stops an import is in ``problems``; nothing is padded or dropped silently. Backward flow must
    be of the forward flow's step and start s frames after the first image (or forward pair)."""
    folder = Path(folder)
    found: dict[tuple[str, str, int], list[int]] = {}
    exts: dict[str, set[str]] = {}  # "img" / "flow" -> the extensions seen
    for entry in os.scandir(folder):
        m = _NAME_RE.fullmatch(entry.name)
        if m and entry.is_file():
            key = (m["kind"], m["dir"] or "p", int(m["step"] or 1))
            found.setdefault(key, []).append(int(m["index"]))
            exts.setdefault("img" if m["kind"] == RGB_PREFIX else "flow", set()).add(m["ext"])
    video = RawframeVideo(folder)
    for kind, seen in exts.items():
        if len(seen) > 1:
            video.problems.append(f"{kind} files in several formats ({', '.join(sorted(seen))}); "
                                  "keep one")
        setattr(video, "rgb_ext" if kind == "img" else "flow_ext", min(seen))
    video.rgb = sorted(found.pop(("img", "p", 1), []))
    steps = {d: sorted({s for kind, dd, s in found if dd == d}) for d in "pm"}
    for d, name in (("p", "flow"), ("m", "backward flow")):
        if len(steps[d]) > 1:
            video.notes.append(f"{name} of steps {steps[d]} found; using step {steps[d][0]}")
    video.flow_step = (steps["p"] or steps["m"] or [1])[0]
    if steps["m"] and steps["m"][0] != video.flow_step:
        video.notes.append(f"backward flow of step {steps['m'][0]} ignored (forward flow has "
                           f"step {video.flow_step})")
    for d, attr in (("p", "flow"), ("m", "backward")):
        xs = sorted(found.get(("flow_x", d, video.flow_step), []))
        ys = sorted(found.get(("flow_y", d, video.flow_step), []))
        if xs != ys:
            video.problems.append(f"{len(xs)} flow_x but {len(ys)} flow_y files"
                                  f"{' (backward)' if d == 'm' else ''}{_first_difference(xs, ys)}")
        setattr(video, attr, xs)
    for kind, indices in (("img", video.rgb), ("flow_x", video.flow),
                          (f"flow_x_m{video.flow_step}", video.backward)):
        gap = _gap(indices)
        if gap:
            video.problems.append(f"{kind} numbering has a gap: {gap}")
    s = video.flow_step
    if not video.rgb and not video.flow and not video.backward:
        video.problems.append("no img_* or flow_x_* / flow_y_* files")
    elif video.rgb and video.flow and len(video.flow) != len(video.rgb) - s:
        video.problems.append(f"{len(video.rgb)} frames but {len(video.flow)} flow pairs of step "
                              f"{s} (expected {len(video.rgb) - s})")
    elif len(video.rgb) == 1 and not video.flow:
        video.notes.append("a single frame: no flow")
    if video.backward:
        video.problems += _backward_problems(video)
    return video


def _backward_problems(video: RawframeVideo) -> list[str]:
    """Backward flow must pair with what else the folder holds: as many pairs as forward flow
    (or n - s for n images), numbered from the frame s after the first."""
    s, n = video.flow_step, len(video.backward)
    expected = len(video.flow) if video.flow else len(video.rgb) - s if video.rgb else n
    first = video.flow[0] + s if video.flow else video.rgb[0] + s if video.rgb else None
    if n != expected:
        return [f"{n} backward flow pairs but {expected} expected (as many as "
                f"{'forward pairs' if video.flow else f'frames minus {s}'})"]
    if first is not None and video.backward[0] != first:
        return [f"backward flow numbering starts at {video.backward[0]}, expected {first} (the "
                f"frame {s} after the first; denseflow numbers a backward pair by the frame it "
                "starts from)"]
    return []


def _first_difference(xs: list[int], ys: list[int]) -> str:
    only = sorted(set(xs) ^ set(ys))
    return f" (index {only[0]} is only in {'flow_x' if only[0] in set(xs) else 'flow_y'})" \
        if only else ""


def _gap(indices: list[int]) -> str:
    """'' when ``indices`` run without a gap, else the first missing index."""
    for a, b in zip(indices, indices[1:]):
        if b != a + 1:
            return f"{a} is followed by {b}"
    return ""


def read_file(path: Path) -> bytes:
    """The bytes of one image file; :class:`RawframesError` if it is missing, or a JPEG cut short
    (no end-of-image marker: a copy or an extraction that stopped mid-file), which decoders would
    complete with grey rows without a word."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise RawframesError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if blob[:2] == b"\xff\xd8" and not jpeg.is_complete(blob):
        raise RawframesError(f"{path}: truncated JPEG (no end-of-image marker); extract the "
                             "video's frames again")
    return blob


def decode_image(blob: bytes, path: Path, gray: bool = False) -> np.ndarray:
    """An image file's bytes as RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8; :class:`RawframesError`
    naming ``path`` if they cannot be decoded."""
    import cv2

    image = cv2.imdecode(np.frombuffer(blob, np.uint8),
                         cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        raise RawframesError(f"{path}: cannot be decoded as an image (truncated or not a JPEG)")
    return image if gray else np.ascontiguousarray(image[..., ::-1])


def read_image(path: Path, gray: bool = False) -> np.ndarray:
    """An image file as RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 (:func:`read_file`,
    :func:`decode_image`)."""
    return decode_image(read_file(path), path, gray)


def read_rgb(video: RawframeVideo, indices: list[int]) -> np.ndarray:
    """Images ``indices`` of ``video``: ``(N, H, W, 3)`` uint8."""
    return np.stack([read_image(video.rgb_file(i)) for i in indices])


def read_flow(video: RawframeVideo, indices: list[int], bound: float = DEFAULT_BOUND,
              backward: bool = False) -> np.ndarray:
    """Flow pairs ``indices`` of ``video`` (of ``video.backward`` if ``backward``), dequantised with
    ``bound``: ``(N, 2, H, W)`` float32."""
    def pair(i: int) -> np.ndarray:
        fx, fy = (read_image(path, gray=True) for path in video.flow_files(i, backward))
        if fx.shape != fy.shape:
            raise RawframesError(f"{video.folder}: flow pair {i} has flow_x {fx.shape} but "
                                 f"flow_y {fy.shape}")
        return images_to_flow(fx, fy, bound)

    return np.stack([pair(i) for i in indices])


def find_videos(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the folders under ``root`` that hold rawframes files, sorted.

    A folder is a video when it has ``img_*`` or ``flow_*`` files; hidden folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise RawframesError(f"rawframes folder {root} does not exist or is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(is_frame_file(name) for name in filenames):
            found.append(Path(dirpath).relative_to(root).as_posix())
    return sorted(found)


__all__ = ["RGB_PREFIX", "FLOW_X_PREFIX", "FLOW_Y_PREFIX", "DEFAULT_START_INDEX", "DEFAULT_QUALITY",
           "RawframesError", "RawframeVideo", "frame_name", "quantization_error", "flow_to_images",
           "images_to_flow", "encode_jpeg", "write_frames", "scan_folder", "is_frame_file",
           "read_file", "decode_image", "read_image", "read_rgb", "read_flow",
           "find_videos"]
