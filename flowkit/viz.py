"""Flow colour coding (Middlebury) and small composite images for ``flowkit show``.

The colour code is the one of Baker et al., "A Database and Evaluation Methodology for Optical Flow"
(IJCV 2011): a 55-colour wheel running red -> yellow -> green -> cyan -> blue -> magenta -> red in
segments of 15, 6, 4, 11, 13 and 6 colours (more colours where the eye separates hues better). For a
flow vector (u, v):

- hue: the flow direction. +x (right) is red, +y (down) orange-yellow, -x cyan, -y (up) blue-violet;
  the angle runs clockwise on screen. The mapping is the reference code's (``colorcode.cpp``; the
  same in the ``flow_vis`` Python port), exactly: with u, v divided by ``max_flow``,
  ``fk = (atan2(-v, -u) / pi + 1) / 2 * (55 - 1)``, ``k0 = floor(fk)``, ``k1 = k0 + 1`` (0 past
  the last colour), ``f = fk - k0``, colour ``(1 - f) * wheel[k0] + f * wheel[k1]``. One turn is
  thus spread over 54 intervals: the wheel's last colour (255, 0, 43) sits just above +x, next to
  its first, red, at +x (a hue step of 1/55 of a turn there, as in every Middlebury picture).
  A signed zero is read as +0, so ``v = -0.0`` (e.g. negated flow) is red like ``v = 0``.
- saturation: ``r = |(u, v)| / max_flow``; ``r <= 1``: ``1 - r * (1 - colour)`` (``r = 0`` is
  white, ``r = 1`` the full wheel colour); vectors beyond ``max_flow`` (``r > 1``) are drawn at
  75 % brightness to flag them. Each channel is ``floor(255 * value)``, as the reference writes it.
- unknown flow (NaN, inf, or above 1e9 in magnitude, Middlebury's marker) is black.

Pictures (:func:`flow_grid`, ``flowkit show``) take ``max_flow`` from :func:`robust_max_flow`, the
98th percentile of the magnitude, so a few stray fast vectors do not wash the scene out, and carry
the colour wheel with that scale printed under it (:func:`colorwheel_legend`).

Images are RGB uint8 ``(H, W, 3)``; flow is ``(2, H, W)`` in pixels, numpy or torch.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import FlowkitError

# Colours per wheel segment: red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta, magenta-red.
_SEGMENTS = (15, 6, 4, 11, 13, 6)
_UNKNOWN_FLOW = 1e9
# Floor of the normalising radius: an all-zero field divides 0 by this and comes out white, not NaN.
_MIN_RADIUS = 1e-6
_OUT_OF_RANGE_BRIGHTNESS = 0.75
#: Percentile of the flow magnitude drawn at full saturation by default in pictures
#: (:func:`robust_max_flow`): a few fast pixels at a border or occlusion no longer wash the
#: typical motion out to near-white; the faster ones are drawn darkened.
ROBUST_PERCENTILE = 98.0


def make_colorwheel() -> np.ndarray:
    """The 55 Middlebury wheel colours, ``(55, 3)`` uint8 RGB, starting at red (255, 0, 0).

    Each segment ramps one channel linearly (``floor(255 * i / n)``) from one primary/secondary colour
    to the next while the other two channels hold.
    """
    ry, yg, gc, cb, bm, mr = _SEGMENTS

    def up(n):
        return np.floor(255 * np.arange(n) / n)

    def ramp(n, rising, channel_values):
        seg = np.zeros((n, 3))
        for channel, value in channel_values.items():
            seg[:, channel] = value
        seg[:, rising[0]] = up(n) if rising[1] else 255 - up(n)
        return seg

    wheel = np.concatenate([
        ramp(ry, (1, True), {0: 255}),    # red -> yellow: G rises
        ramp(yg, (0, False), {1: 255}),   # yellow -> green: R falls
        ramp(gc, (2, True), {1: 255}),    # green -> cyan: B rises
        ramp(cb, (1, False), {2: 255}),   # cyan -> blue: G falls
        ramp(bm, (0, True), {2: 255}),    # blue -> magenta: R rises
        ramp(mr, (2, False), {0: 255}),   # magenta -> red: B falls
    ])
    return wheel.astype(np.uint8)


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """Middlebury colour coding of one flow field.

    Args:
        flow: ``(2, H, W)`` numpy array or torch tensor, pixels.
        max_flow: magnitude drawn at full saturation. ``None``: the largest known magnitude in
            ``flow`` (so the fastest pixel is fully saturated). Fix it to compare several images.

    Returns:
        ``(H, W, 3)`` uint8 RGB; unknown flow is black.
    """
    u, v, known = _split(flow)
    if max_flow is None:
        max_flow = float(np.hypot(u, v)[known].max()) if known.any() else 0.0
    elif not max_flow > 0:
        raise FlowkitError(f"max_flow must be positive, got {max_flow}")
    scale = max(float(max_flow), _MIN_RADIUS)
    # The reference's order of operations (colorcode.cpp / flow_vis), so that every pixel comes out
    # bit for bit alike: normalise, then radius and angle; + 0.0 turns -0.0 into +0.0.
    u, v = u / scale + 0.0, v / scale + 0.0
    radius = np.sqrt(u * u + v * v)

    wheel = make_colorwheel().astype(np.float64)
    n = len(wheel)
    fk = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = k0 + 1
    k1[k1 == n] = 0
    f = fk - k0
    out = np.zeros(u.shape + (3,), np.uint8)
    for channel in range(3):
        column = wheel[:, channel] / 255.0
        colour = (1 - f) * column[k0] + f * column[k1]
        inside = radius <= 1
        colour = np.where(inside, 1 - radius * (1 - colour), colour * _OUT_OF_RANGE_BRIGHTNESS)
        out[..., channel] = np.where(known, np.floor(255 * colour), 0).astype(np.uint8)
    return out


def save_flow_png(path: str | os.PathLike, flow, max_flow: float | None = None) -> None:
    """Write the colour coding of ``flow`` (see :func:`flow_to_color`) as an image file (PNG, JPEG...)."""
    _write_rgb(path, flow_to_color(flow, max_flow))


def robust_max_flow(flows: Sequence, percentile: float = ROBUST_PERCENTILE) -> float:
    """The colour scale of a picture: the ``percentile`` of the known flow magnitudes over all
    ``flows`` (each ``(2, H, W)``, pixels), at least 1e-3 px.

    The largest magnitude (Middlebury's choice) lets one stray border vector set the scale: on a
    leftward pan with a median motion of 2.2 px, one 14 px vector left the pan at ~16% saturation.
    """
    magnitudes = []
    for flow in flows:
        u, v, known = _split(flow)
        magnitudes.append(np.hypot(u, v)[known])
    values = np.concatenate(magnitudes) if magnitudes else np.zeros(0)
    if not values.size:
        return 1e-3
    return max(float(np.percentile(values, percentile)), 1e-3)


def colorwheel_legend(size: int = 128, max_flow: float | None = None) -> np.ndarray:
    """The colour key: a disc whose pixel at offset d from the centre shows the colour of flow d,
    with the disc's radius as ``max_flow``; white outside the disc. With ``max_flow`` (pixels),
    the disc shrinks to leave a line below it that prints the scale (``"rim 2.9 px"``).

    Returns:
        ``(size, size, 3)`` uint8 RGB.
    """
    if size < 2:
        raise FlowkitError(f"legend size must be at least 2, got {size}")
    image = np.full((size, size, 3), 255, np.uint8)
    text_height = max(8, size // 5) if max_flow is not None and size >= 24 else 0
    disc = size - text_height
    centre = (disc - 1) / 2.0
    ys, xs = np.mgrid[0:disc, 0:disc].astype(np.float64)
    flow = np.stack((xs - centre, ys - centre))
    wheel = flow_to_color(flow, max_flow=max(centre, _MIN_RADIUS))
    wheel[np.hypot(*flow) > centre] = 255
    left = (size - disc) // 2
    image[:disc, left:left + disc] = wheel
    if text_height:
        _put_text(image, f"rim {max_flow:.3g} px", top=disc, height=text_height)
    return image


def _put_text(image: np.ndarray, text: str, top: int, height: int) -> None:
    """Black text centred in rows ``top .. top + height`` of ``image`` (in place), shrunk to fit."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 1.0
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    scale = min((height - 2) / (h + base), (image.shape[1] - 2) / w)
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    origin = ((image.shape[1] - w) // 2, top + (height + h) // 2)
    canvas = np.ascontiguousarray(image)
    cv2.putText(canvas, text, origin, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    image[...] = canvas


def flow_grid(frames: Sequence | None, flows: Sequence, max_flow: float | None = None,
              gap: int = 2, legend: bool = False) -> np.ndarray:
    """Rows of ``[frame | flow colour]`` side by side, one row per flow, all with one colour scale.

    Args:
        frames: sequence (or ``(T, H, W, 3)`` array, or ``(T, 3, H, W)`` tensor) of RGB uint8 frames.
            ``T`` may equal the number of flows or exceed it by one (flow t is drawn next to frame t).
            None: flow tiles only (a store without RGB).
        flows: sequence (or ``(T, 2, H, W)`` array/tensor) of ``(2, H, W)`` flow fields.
        max_flow: shared saturation magnitude, pixels; ``None``: :func:`robust_max_flow` over all
            flows (the 98th percentile of the magnitude).
        gap: white pixels between tiles.
        legend: append a colour-key column (:func:`colorwheel_legend` with the scale printed, tile
            height) to the first row.

    Returns:
        ``(rows * H + (rows - 1) * gap, 2 * W + gap [+ H + gap], 3)`` uint8 RGB (without the
        frame column when ``frames`` is None).
    """
    flows = [np.asarray(_to_numpy(f), np.float32) for f in flows]
    if not flows:
        raise FlowkitError("flow_grid needs at least one flow")
    frames = None if frames is None else [_frame_rgb(f) for f in frames]
    if frames is not None and len(frames) not in (len(flows), len(flows) + 1):
        raise FlowkitError(f"flow_grid: {len(frames)} frames do not go with {len(flows)} flows")
    if max_flow is None:
        max_flow = robust_max_flow(flows)
    height, width = (frames[0] if frames else flows[0].transpose(1, 2, 0)).shape[:2]
    rows = []
    for i, flow in enumerate(flows):
        frame = frames[i] if frames else None
        if (frame is not None and frame.shape[:2] != (height, width)) \
                or flow.shape[-2:] != (height, width):
            raise FlowkitError(f"flow_grid: every frame and flow must be {height}x{width}, got "
                               f"frame {None if frame is None else frame.shape[:2]} and flow "
                               f"{flow.shape[-2:]}")
        tiles = ([] if frame is None else [frame]) + [flow_to_color(flow, max_flow)]
        if legend:
            tiles.append(colorwheel_legend(height, max_flow) if not rows
                         else np.full((height, height, 3), 255, np.uint8))
        rows.append(_join(tiles, gap, axis=1))
    return _join(rows, gap, axis=0)


def _split(flow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u, v (float64, zero where unknown) and the known-flow mask of a ``(2, H, W)`` field."""
    arr = np.asarray(_to_numpy(flow), np.float64)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise FlowkitError(f"flow must have shape (2, H, W), got {tuple(arr.shape)}")
    known = np.isfinite(arr).all(0) & (np.abs(arr) < _UNKNOWN_FLOW).all(0)
    u = np.where(known, arr[0], 0.0)
    v = np.where(known, arr[1], 0.0)
    return u, v, known


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def _frame_rgb(frame) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB frame from HWC numpy, CHW torch, or grey ``(H, W)``."""
    is_tensor = hasattr(frame, "detach")
    arr = np.asarray(_to_numpy(frame))
    if is_tensor and arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise FlowkitError(f"frame must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def _join(tiles: list[np.ndarray], gap: int, axis: int) -> np.ndarray:
    parts = []
    for i, tile in enumerate(tiles):
        if i and gap:
            shape = list(tile.shape)
            shape[axis] = gap
            parts.append(np.full(shape, 255, np.uint8))
        parts.append(tile)
    return np.concatenate(parts, axis=axis)


def _write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    import cv2

    # cv2.imwrite takes BGR; its False return (no exception) covers bad folders and extensions.
    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(image[..., ::-1])):
        raise FlowkitError(f"{path}: cannot write image (missing folder or unknown extension?)")
