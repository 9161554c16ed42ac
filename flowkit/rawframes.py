"""mmaction2 / TSN / denseflow *rawframes*: one folder of JPEG files per video.

Layout of one video's folder (``OUT_DIR/<class>/<video>/``)::

    img_00001.jpg  img_00002.jpg  ...          RGB frames, n of them
    flow_x_00001.jpg  flow_y_00001.jpg  ...    flow pairs, n - 1 of them (8-bit gray)

- Flow images may also be named ``x_00001.jpg`` / ``y_00001.jpg`` (TSN's dense_flow as mmaction2's
  Kinetics flow configs read it, ``filename_tmpl='{}_{:05d}.jpg'`` with ``'x'`` / ``'y'``; the
  other convention is ``'flow_{}_{:05d}.jpg'``): read as ``flow_x`` / ``flow_y`` (``x_p2_*``,
  ``x_m1_*`` alike). One folder uses one of the two namings; both at once is a problem. Files of
  a video folder that follow none of these names are not read, and the scan names them in a
  note. flowkit writes ``flow_x`` / ``flow_y``.
- ``.flowkit-video.json`` (:data:`INFO_FILE`, written by ``flowkit export rawframes``) records what
  the file names cannot: ``step``, the video's frame step in the store it came from (``flowkit
  extract --step s``: the images are every s-th frame of the video and flow runs between
  consecutive images). It is written only for a step above 1 and read back on import, so the
  store it is imported into has the step again; other readers ignore the hidden file.
- Numbering starts at 1 (mmaction2's ``start_index=1``, TSN's ``dense_flow``) or at 0 (what
  denseflow writes today); both are read, and :func:`write_frames` writes either.
- Flow between frames t and t + s (denseflow ``-s s``, s > 1) is named ``flow_x_p<s>_%05d.jpg``;
  it is read and thinned to every s-th frame, flowkit's ``--step s``.
- Backward flow (denseflow ``-s -s``), from frame t + s to frame t, is named
  ``flow_x_m<s>_%05d.jpg`` and numbered by the frame it starts from, t + s (denseflow's
  ``writeFlowImages``: ``start + i + base`` with base s): ``flow_x_m1_00001.jpg`` is the flow from
  frame 1 to frame 0 when images are numbered from 0. A folder may hold both directions.
- denseflow's PNG output (``denseflow -st png``) is one 3-channel ``flow_%05d.png`` per pair
  (``flow_p<s>_*``, ``flow_m<s>_*`` alike), its own quantisation: see :func:`decode_denseflow_png`.
- Numbers may be padded to any width (``img_000001.jpg``, ``img_1.jpg``): files are read under the
  names found.
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

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import jpeg
from .errors import FlowkitError
from .files import walk_once
from .store.codecs import DEFAULT_BOUND, dequantize, quantize

RGB_PREFIX = "img"
FLOW_X_PREFIX = "flow_x"
FLOW_Y_PREFIX = "flow_y"
FLOW_PNG_PREFIX = "flow"  # denseflow's PNG output: x, y and their bounds in one image
DEFAULT_START_INDEX = 1
DEFAULT_QUALITY = 95  # mmaction2 / denseflow write OpenCV's default JPEG quality, 95
DIGITS = 5
#: A video folder's record of what the file names cannot say (its store step); see the module
#: docstring.
INFO_FILE = ".flowkit-video.json"

# ``x`` / ``y``: TSN's dense_flow naming (mmaction2's filename_tmpl '{}_{:05d}.jpg'), read as
# flow_x / flow_y.
_NAME_RE = re.compile(r"(?P<kind>img|flow_x|flow_y|flow|x|y)(?:_(?P<dir>[pm])(?P<step>\d+))?"
                      r"_(?P<index>\d+)\.(?P<ext>jpg|jpeg|png)")
_SHORT_FLOW = {"x": "flow_x", "y": "flow_y"}


class RawframesError(FlowkitError):
    """A rawframes folder is incomplete or inconsistent; the message names the folder and cause."""


def frame_name(kind: str, index: int, step: int = 1, ext: str = "jpg",
               backward: bool = False) -> str:
    """The file name of frame ``index`` of ``kind`` (``"img"``, ``"flow_x"``, ``"flow_y"``,
    ``"flow"``): ``img_00001.jpg``, ``flow_x_00000.jpg``, ``flow_x_p2_00000.jpg`` (denseflow's
    step variant), ``flow_x_m1_00001.jpg`` (``backward``: from frame ``index`` to
    ``index - step``), ``flow_x_00000.png`` (``ext``), ``flow_00000.png`` (denseflow's PNG)."""
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


def decode_denseflow_png(image: np.ndarray, path: Path | str = "") -> np.ndarray:
    """denseflow's PNG flow (``denseflow -st png``; ``src/common.cpp``, ``convertFlowToPngImage``),
    a BGR ``(H, W, 3)`` uint8 image as OpenCV reads it -> flow ``(2, H, W)`` float32 pixels.

    denseflow picks a bound per pair and component, b = 4 k (k odd, 1..255) just above the
    largest ``|u|`` (capped at the width) or ``|v|`` (capped at the height), writes
    ``round(128 u / b_u + 128)`` in B, ``round(128 v / b_v + 128)`` in G, and k_u in the R
    channel of rows 0 .. H // 2, k_v in the rows below. So ``u = (B - 128) b_u / 128``, within
    b_u / 256 px of the computed flow. :class:`RawframesError` naming ``path`` for an image that
    is not laid out so (another channel count, no bounds in R)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[0] < 2:
        raise RawframesError(f"{path}: not denseflow's PNG flow (an 8-bit 3-channel image of at "
                             f"least 2 rows), got {image.dtype} {image.shape}")
    bounds = image[..., 2]
    k_u, k_v = int(bounds[0, 0]), int(bounds[-1, 0])
    if not k_u or not k_v or not np.all((bounds == k_u) | (bounds == k_v)):
        raise RawframesError(f"{path}: not denseflow's PNG flow (its R channel does not hold the "
                             "two bounds, k_u above k_v); a colour picture of flow cannot be read "
                             "back as flow")
    scale = np.float32([4 * k_u / 128, 4 * k_v / 128])[:, None, None]
    return (np.moveaxis(image[..., :2], -1, 0).astype(np.float32) - 128) * scale


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
    files' extension (``jpg``, ``jpeg`` or ``png``); ``flow_png``: the flow is denseflow's PNG
    output, one ``flow_*.png`` per pair (:func:`decode_denseflow_png`), not ``flow_x`` / ``flow_y``
    images; ``flow_prefix``: ``"flow_"`` for ``flow_x_*`` / ``flow_y_*`` files, ``""`` for TSN's
    ``x_*`` / ``y_*``; ``source_step``: the store step :data:`INFO_FILE` records (1 without one);
    ``names``: the file found for each ``(kind, backward, index)`` (``kind`` ``flow_x`` also for
    an ``x_*`` file), so numbers padded to any width are read under their own names;
    ``problems``: why the folder cannot be imported as it is (empty: it can).
    """

    folder: Path
    rgb: list[int] = field(default_factory=list)
    flow: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    flow_step: int = 1
    rgb_ext: str = "jpg"
    flow_ext: str = "jpg"
    flow_png: bool = False
    flow_prefix: str = "flow_"
    source_step: int = 1
    names: dict[tuple[str, bool, int], str] = field(default_factory=dict, repr=False)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _file(self, kind: str, index: int, backward: bool = False) -> Path:
        """The file of ``kind`` and ``index`` as found (:func:`frame_name`'s if not scanned)."""
        name = self.names.get((kind, backward, index))
        if name is None:
            ext = self.rgb_ext if kind == RGB_PREFIX else self.flow_ext
            name = frame_name(kind, index, self.flow_step, ext, backward)
        return self.folder / name

    def rgb_file(self, index: int) -> Path:
        """The file of image ``index``."""
        return self._file(RGB_PREFIX, index)

    def flow_files(self, index: int, backward: bool = False) -> tuple[Path, Path]:
        """The ``flow_x`` and ``flow_y`` files of flow pair ``index`` (backward: the pair from
        frame ``index``); denseflow's PNG flow (``flow_png``) has one file for both."""
        if self.flow_png:
            path = self._file(FLOW_PNG_PREFIX, index, backward)
            return path, path
        return tuple(self._file(kind, index, backward) for kind in (FLOW_X_PREFIX, FLOW_Y_PREFIX))

    @property
    def rgb_start(self) -> int:
        return self.rgb[0] if self.rgb else DEFAULT_START_INDEX

    @property
    def flow_start(self) -> int:
        return self.flow[0] if self.flow else DEFAULT_START_INDEX

    def naming(self) -> str:
        """How the files are named, e.g. ``"img_{:05d}.jpg from 1, flow_{x,y}_p2_{:05d}.jpg
        from 0"`` (``flow_{:05d}.png`` for denseflow's PNG flow; the padding as found)."""
        parts = []
        flow = FLOW_PNG_PREFIX if self.flow_png else f"{self.flow_prefix}{{x,y}}"
        kind = FLOW_PNG_PREFIX if self.flow_png else FLOW_X_PREFIX
        if self.rgb:
            parts.append(f"img_{self._digits(RGB_PREFIX, self.rgb)}.{self.rgb_ext} from "
                         f"{self.rgb_start}")
        if self.flow:
            tag = f"_p{self.flow_step}" if self.flow_step > 1 else ""
            parts.append(f"{flow}{tag}_{self._digits(kind, self.flow)}.{self.flow_ext} from "
                         f"{self.flow_start}")
        if self.backward:
            parts.append(f"{flow}_m{self.flow_step}_{self._digits(kind, self.backward, True)}."
                         f"{self.flow_ext} from {self.backward[0]}")
        return ", ".join(parts)

    def _digits(self, kind: str, indices: list[int], backward: bool = False) -> str:
        """The number format of these files: ``{:05d}`` (padded to 5), ``{:d}`` (not padded)."""
        names = [self.names.get((kind, backward, i)) for i in indices]
        widths = [len(_NAME_RE.fullmatch(n)["index"]) for n in names if n is not None]
        width = min(widths, default=DIGITS)
        return f"{{:0{width}d}}" if width > 1 else "{:d}"


def is_frame_file(name: str) -> bool:
    """Whether ``name`` is an ``img_*`` / ``flow_x_*`` / ``flow_y_*`` (or TSN's ``x_*`` / ``y_*``)
    file of a rawframes folder (or a ``flow_*`` file, denseflow's PNG flow)."""
    return _NAME_RE.fullmatch(name) is not None


def write_info(folder: Path, step: int) -> None:
    """Record ``step`` (the store step of the video written into ``folder``) in its
    :data:`INFO_FILE`; nothing is written for step 1, what plain names mean."""
    if int(step) != 1:
        (Path(folder) / INFO_FILE).write_text(json.dumps({"step": int(step)}) + "\n",
                                              encoding="utf-8")


def _read_info(video: RawframeVideo) -> None:
    """``video.source_step`` from its folder's :data:`INFO_FILE`, if any; an unreadable one is a
    note (the step is then taken as 1)."""
    path = video.folder / INFO_FILE
    if not path.is_file():
        return
    try:
        step = json.loads(path.read_text(encoding="utf-8"))["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step {step!r} is not a positive integer")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        video.notes.append(f"{INFO_FILE} unreadable ({exc}); the video's store step is taken as 1")
        return
    video.source_step = step


def scan_folder(folder: str | os.PathLike) -> RawframeVideo:
    """Read the file names of one video folder and check them: numbering without gaps, as many
    ``flow_x`` as ``flow_y``, and n - s flow pairs for n images (flow step s). Every finding that
    stops an import is in ``problems``; nothing is padded or dropped silently. Backward flow must
    be of the forward flow's step and start s frames after the first image (or forward pair)."""
    folder = Path(folder)
    video = RawframeVideo(folder)
    _read_info(video)
    found, names, exts = _scan_names(folder, video)
    if any(kind == FLOW_PNG_PREFIX for kind, _, _ in found):
        video.flow_png = True
        if any(kind == FLOW_X_PREFIX for kind, _, _ in found):
            video.problems.append("both flow_x / flow_y images and denseflow's PNG flow_*.png "
                                  "files; keep one")
        for (kind, d, s), indices in list(found.items()):  # one file holds both components
            if kind == FLOW_PNG_PREFIX:
                for axis in (FLOW_X_PREFIX, FLOW_Y_PREFIX):
                    found.setdefault((axis, d, s), []).extend(indices)
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
    flow = FLOW_PNG_PREFIX if video.flow_png else FLOW_X_PREFIX
    for kind, indices in (("img", video.rgb), (flow, video.flow),
                          (f"{flow}_m{video.flow_step}", video.backward)):
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
    video.names = {(kind, d == "m", i): name for (kind, d, s, i), name in names.items()
                   if kind == RGB_PREFIX or s == video.flow_step}
    return video


def _scan_names(folder: Path, video: RawframeVideo
                ) -> tuple[dict[tuple[str, str, int], list[int]],
                           dict[tuple[str, str, int, int], str], dict[str, set[str]]]:
    """The rawframes files of ``folder``: the indices of each ``(kind, direction, step)``, the
    file name of each ``(kind, direction, step, index)``, and the extensions of images and flow.
    Two files of one index (``img_1.jpg``, ``img_00001.jpg``) are a problem of ``video``;
    ``flow_*`` files that are not PNG (denseflow's PNG flow) are left out with a note."""
    found: dict[tuple[str, str, int], list[int]] = {}
    names: dict[tuple[str, str, int, int], str] = {}
    exts: dict[str, set[str]] = {}  # "img" / "flow" -> the extensions seen
    twice, unknown, foreign = [], [], []
    prefixes: set[str] = set()  # "flow_" (flow_x_*), "" (TSN's x_*)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        m = _NAME_RE.fullmatch(entry.name)
        if not m:
            foreign.append(entry.name)
            continue
        if m["kind"] == FLOW_PNG_PREFIX and m["ext"] != "png":
            unknown.append(entry.name)
            continue
        kind = _SHORT_FLOW.get(m["kind"], m["kind"])
        if kind != m["kind"]:
            prefixes.add("")
        elif kind in (FLOW_X_PREFIX, FLOW_Y_PREFIX):
            prefixes.add("flow_")
        key = (kind, m["dir"] or "p", int(m["step"] or 1), int(m["index"]))
        if key in names:
            twice.append(f"{names[key]} and {entry.name}")
            continue
        names[key] = entry.name
        found.setdefault(key[:3], []).append(key[3])
        exts.setdefault("img" if m["kind"] == RGB_PREFIX else "flow", set()).add(m["ext"])
    if twice:
        video.problems.append(f"{len(twice)} frames have two files each ({twice[0]}, ...); keep "
                              "one numbering")
    if len(prefixes) > 1:
        video.problems.append("both flow_x_* / flow_y_* and x_* / y_* flow images; keep one "
                              "naming")
    video.flow_prefix = prefixes.pop() if len(prefixes) == 1 else "flow_"
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        video.notes.append(f"{len(foreign)} files not read, their names are no rawframes names "
                           f"(img_*, flow_x_* / flow_y_*, x_* / y_*, flow_*.png): "
                           f"{', '.join(foreign[:3])}{more}")
    if unknown:
        video.notes.append(f"{len(unknown)} files such as {unknown[0]} left out: flow_* images "
                           "are read as denseflow's PNG flow (flow_00000.png), other flow images "
                           "as flow_x_* / flow_y_*")
    return found, names, exts


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


def decode_image(blob: bytes, path: Path, gray: bool = False, bgr: bool = False) -> np.ndarray:
    """An image file's bytes as RGB ``(H, W, 3)``, gray ``(H, W)`` or, ``bgr``, as stored (OpenCV's
    channel order, as many channels and bits as the file has); :class:`RawframesError` naming
    ``path`` if they cannot be decoded."""
    import cv2

    flags = (cv2.IMREAD_UNCHANGED if bgr else cv2.IMREAD_GRAYSCALE if gray
             else cv2.IMREAD_COLOR)
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), flags)
    if image is None:
        raise RawframesError(f"{path}: cannot be decoded as an image (truncated or not a JPEG)")
    return image if gray or bgr else np.ascontiguousarray(image[..., ::-1])


def read_image(path: Path, gray: bool = False, bgr: bool = False) -> np.ndarray:
    """An image file as RGB ``(H, W, 3)``, gray ``(H, W)`` or as stored (``bgr``) uint8
    (:func:`read_file`, :func:`decode_image`)."""
    return decode_image(read_file(path), path, gray, bgr)


def read_rgb(video: RawframeVideo, indices: list[int]) -> np.ndarray:
    """Images ``indices`` of ``video``: ``(N, H, W, 3)`` uint8."""
    return np.stack([read_image(video.rgb_file(i)) for i in indices])


def read_flow(video: RawframeVideo, indices: list[int], bound: float = DEFAULT_BOUND,
              backward: bool = False) -> np.ndarray:
    """Flow pairs ``indices`` of ``video`` (of ``video.backward`` if ``backward``), dequantised with
    ``bound`` (denseflow's PNG flow carries its own bounds): ``(N, 2, H, W)`` float32."""
    def pair(i: int) -> np.ndarray:
        if video.flow_png:
            path = video.flow_files(i, backward)[0]
            return decode_denseflow_png(read_image(path, bgr=True), path)
        fx, fy = (read_image(path, gray=True) for path in video.flow_files(i, backward))
        if fx.shape != fy.shape:
            raise RawframesError(f"{video.folder}: flow pair {i} has flow_x {fx.shape} but "
                                 f"flow_y {fy.shape}")
        return images_to_flow(fx, fy, bound)

    return np.stack([pair(i) for i in indices])


def find_videos(root: str | os.PathLike, notes: list[str] | None = None) -> list[str]:
    """Relative POSIX paths of the folders under ``root`` that hold rawframes files, sorted, as
    they are on disk (a name that is not UTF-8 keeps its surrogate escapes; the store key is
    :func:`flowkit.files.escape_name` of it).

    A folder is a video when it has ``img_*`` or ``flow_*`` files; hidden folders are skipped.
    Links are followed, each real directory once (:func:`flowkit.files.walk_once`: a link loop or
    a second link to a folder is skipped, with a line in ``notes``). Folders of images none of
    which has a rawframes name (Jester's ``00001.jpg``, EPIC-KITCHENS' ``frame_0000000001.jpg``)
    are not videos either: counted, with one line in ``notes`` (:func:`_unnamed_frames_note`).
    """
    root = Path(root)
    if not root.is_dir():
        raise RawframesError(f"rawframes folder {root} does not exist or is not a directory")
    found, unnamed = [], []  # unnamed: (folder, an image in it) of folders of other names
    for dirpath, _, filenames in walk_once(root, notes, hidden=False):
        if any(is_frame_file(name) for name in filenames):
            found.append(Path(dirpath).relative_to(root).as_posix())
        else:  # names only, no stat: the walk stays one stat per folder
            image = min((name for name in filenames if not name.startswith(".")
                         and name.lower().endswith(IMAGE_EXTENSIONS)), default=None)
            if image is not None:
                unnamed.append((Path(dirpath).relative_to(root), image))
    if unnamed and notes is not None:
        notes.append(_unnamed_frames_note(root, unnamed))
    return sorted(found)


#: The extensions of the images a rawframes folder may hold (:data:`_NAME_RE`'s).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _unnamed_frames_note(root: Path, unnamed: list[tuple[Path, str]]) -> str:
    """The note on folders of images whose names are no rawframes names: how many, an example
    folder and file, and the fix, a rename to ``img_<number>`` (the number padded as it is: any
    padding is read) by a one-line bash loop over folders as deep as the example's. The loop
    never overwrites (an existing target is left alone) and skips what it must not touch: names
    that already are rawframes' (``img_*``, ``flow_*``, ``x_*``, ``y_*``: a root whose other
    folders are fine keeps their flow) and names not ending in a number (``0001_left``: no frame
    index to give)."""
    folder, image = min(unnamed)
    ext = image.rsplit(".", 1)[1]
    glob = shlex.quote(root.as_posix()) + "/*" * len(folder.parts) + f"/*.{ext}"
    target = f'"${{f%/*}}/img_$i.{ext.lower()}"'  # lower case: the extensions flowkit reads
    return (f"{len(unnamed)} folders hold images but no rawframes names (img_*, flow_x_* / "
            f"flow_y_*), e.g. {(folder / image).as_posix()}: not imported. flowkit reads RGB "
            f"frames named img_<number>.{ext.lower()} (img_%05d.{ext.lower()}, mmaction2's default "
            f"filename_tmpl; a lower-case extension); rename them, e.g. with bash: for f in "
            f"{glob}; do n=${{f##*/}}; n=${{n%.*}}; i=${{n##*[!0-9]}}; case $n in "
            f"img_*|flow_*|x_*|y_*) continue;; esac; [ -z \"$i\" ] || [ -e {target} ] || "
            f"mv \"$f\" {target}; done")


__all__ = ["RGB_PREFIX", "FLOW_X_PREFIX", "FLOW_Y_PREFIX", "FLOW_PNG_PREFIX", "DEFAULT_START_INDEX",
           "DEFAULT_QUALITY", "RawframesError", "RawframeVideo", "frame_name", "quantization_error",
           "flow_to_images", "images_to_flow", "decode_denseflow_png", "encode_jpeg", "write_frames",
           "scan_folder", "is_frame_file", "write_info", "INFO_FILE", "read_file", "decode_image",
           "read_image", "read_rgb", "read_flow", "find_videos"]
