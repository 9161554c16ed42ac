"""Optical-flow ground truth: synthetic pairs from real photographs, a real stereo pair, dataset folders.

Every source returns :class:`FlowPair` objects: RGB uint8 frames ``(H, W, 3)``, the flow from frame 0
to frame 1 ``(2, H, W)`` float32 in pixels (channel 0 u, +x right; channel 1 v, +y down; pixel p of
frame 0 is at p + flow(p) in frame 1), ``valid`` (ground truth known) and ``occluded`` (pixel of frame 0
not visible in frame 1), both ``(H, W)`` bool. Benchmarks score ``epe`` on ``valid`` and ``epe_noc`` on
``valid & ~occluded`` (:func:`flowkit.bench.metrics.flow_metrics`).

Synthetic pairs (:func:`synthetic_pairs`)
-----------------------------------------
Built offline from photographs that scikit-image ships (``PHOTOS``; nothing is downloaded), fully
determined by ``seed`` and the pair's index: pair i is drawn from ``numpy.random.default_rng([seed,
i])``, so it does not depend on ``n``. Kinds (pair i has kind ``kinds[i % len(kinds)]``):

``smooth``       a sum of three low-frequency sinusoids per component (at most 1.5 cycles per frame,
                 amplitudes summing to 2-4 px) plus a translation of up to 2 px per component.
                 On small frames the amplitudes are scaled down so that the field stays invertible
                 (``MAX_GRADIENT``, below).
``translation``  a rigid sub-pixel translation, 0.3-4 px in a random direction.
``affine``       rotation and zoom about a random centre (scaled to 3-8 px at the farthest corner
                 by an upper bound, so often less; at most 0.08 rad and 8% zoom) plus a translation
                 of up to 2 px per component: the largest displacement in a 128x160 frame is
                 2.7-7.2 px in 90% of fields (1.5-9.8 px over 2000 draws).
``small``        a smooth field (as ``smooth``) bounded by 1.35 px per component, so |flow| < 2 px.
``large``        a translation of 6.5-13.5 px plus a smooth field bounded by 1 px per component, so
                 5 px < |flow| < 15 px everywhere.
``occlusion``    two layers: a background photo moving with a translation of up to 3 px plus a
                 smooth field (1 px per component), and an elliptical foreground cut from another
                 photo translating by 3-10 px on top of it.

Every sinusoidal field keeps the gradient of each component at most ``MAX_GRADIENT`` (0.5): a
component's amplitudes are scaled down where the sum over its waves of ``amplitude * 2 pi *
|(cycles_x / W, cycles_y / H)|`` would exceed it, so that ``p -> p + flow(p)`` is one-to-one (the
Jacobian's norm stays below 0.71) and the backward ground truth's fixed point converges. Only small
frames need it: the ``smooth`` kind's gradient is at most ``2 pi * 4 px * 1.5 * |(1 / W, 1 / H)|``,
0.38 at 128x160, so no field is scaled at 128x160 or larger (those pairs are bit for bit what they
were before the rule); over seeds 0-29, 3 of 90 ``smooth`` fields are scaled at 64x80, 76 at 32x48
and 89 at 24x32 (29 of which failed to generate at 24x32 before). The other kinds' 1 px fields
are scaled only below about 26x26.

Construction, which makes the ground truth exact. Each layer is a photo (rescaled with INTER_AREA so
that the frame covers 50-100 % of it, then blurred with a Gaussian of ``OPTICAL_BLUR`` = 0.5 output
pixels, a lens's point-spread function: without it the photos' texture at the pixel scale aliases
and no interpolation of frame 1 can reproduce a sub-pixel shift of it) and a flow field given as a
formula, so it can be evaluated at any point. Frame 1 is the composite of the layers on the photos' own pixel grid, with no
resampling. Frame 0 samples each layer at p + flow(p) (bicubic, torch ``grid_sample``, in float32)
and shows at p the top-most layer whose frame-1 support contains p + flow(p): the foreground's region
in frame 0 is its region in frame 1 moved back by its motion. Both frames are rendered at
``SUPERSAMPLE`` (2) times the output resolution and reduced by averaging 2x2 blocks, which hides the
blur of bicubic interpolation (otherwise frame 0 would be softer than frame 1) and anti-aliases the
foreground's outline. The ground truth is the layer flow evaluated at the output pixel centres; it is
exact up to the curvature of the flow within one output pixel (the 2x2 block average of
``I(q + f(q))`` equals ``I(p + f(p))`` to first order) and 8-bit rounding of the frames. Sampling
beyond the crop reads the rest of the photo (reflected at the photo's own border), so frame 0 has
real content everywhere. Optional Gaussian noise (``noise`` grey levels, independent per frame) is
added before rounding.

Masks: ``valid`` is False where p + flow(p) lies outside frame 1 (beyond the centres of the border
pixels). ``occluded`` is True there too and where a background pixel of frame 0 lands under the
foreground in frame 1.

Backward ground truth (``FlowPair.backward``, frame 1 -> frame 0 at frame 1's pixels) comes from the
same layers: pixel q of frame 1 shows the top-most layer whose support holds q, and its flow is
p - q for the p of frame 0 with p + flow(p) = q (a fixed-point iteration). Where a layer moves over
another, ``-flow(q)`` (the forward flow negated at the same pixel, what is used when only forward
flow is at hand) takes the wrong layer's motion in a band as wide as their relative motion;
``benchmarks/backward_truth.py`` measures that against computing the backward flow.
``backward_occluded`` marks pixels of frame 1 hidden in frame 0 (disoccluded) or whose source lies
outside it.

Measured (seed 0, 16 pairs 128x160, ``tests/test_bench_synthetic.py``): backward-warping frame 1 with
the ground truth (``ops.warp``, bilinear) reproduces frame 0 on valid non-occluded pixels to a mean
absolute error of 0.5-1.9 grey levels per pair, 1.33 on average (the residual is the blur of bilinear
interpolation at sub-pixel offsets; integer translations reproduce frame 0 to < 0.001 before
rounding). The same comparison with zero flow gives 4.1-35 grey levels, 13 on average, at least
3.3 times the ground truth's error on every pair. Generating the 16 pairs takes about 0.6 s (1.2 s
with the first load of the photos).

Real stereo (:func:`stereo_pairs`)
----------------------------------
``skimage.data.stereo_motorcycle()`` (Middlebury 2014 "Motorcycle", 4x down-sampled, 500x741): left,
right and the left disparity, ``inf`` where unknown. A left pixel at column x is at column x - d in
the right image, so the flow left -> right is u = -d, v = 0. (skimage's docstring example reads the
other way round; the numbers decide: on valid non-occluded pixels, warping the right image with
u = -d matches the left image to a mean absolute error of 7.7 grey levels at full size, 6.6 at 1/2,
6.0 at 1/4; with u = +d it is 48.9 / 46.9 / 44.4 and with zero flow 39.5 / 36.9 / 33.6. The residual
is real: the ground truth includes half-occluded pixels and the two views differ in lighting.) ``valid`` excludes non-finite and non-positive disparities;
``occluded`` marks invalid pixels and pixels whose match lies left of the right image. At scale s the
images are reduced with INTER_AREA and the disparity is the INTER_AREA mean of the valid disparities
times s, valid only where every contributing full-resolution pixel was valid.

Dataset folders (:func:`load_flow_folder`)
-----------------------------------------
Middlebury (``other-data/<seq>/frame10.png``, ``frame11.png`` with ``other-gt-flow/<seq>/flow10.flo``,
or flat ``<seq>/frame10.png, frame11.png, flow10.flo``; flow above 1e9 is unknown) and MPI-Sintel
(``training/<pass>/<scene>/frame_%04d.png``, ``training/flow/<scene>/frame_%04d.flo``, and
``training/occlusions`` / ``training/invalid`` masks when present). Pairs are loaded eagerly: select
sequences with ``sequences=`` for large sets (all of Sintel's training pass is several GB in memory).
Unknown flow is set to 0 and marked invalid, so arrays stay finite.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .flo import BenchError, read_flo

KINDS = ("smooth", "translation", "affine", "small", "large", "occlusion")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SUPERSAMPLE = 2
# Gaussian sigma of the simulated lens blur, in output pixels (see the module docstring).
OPTICAL_BLUR = 0.5
UNKNOWN_FLOW = 1e9
# Largest gradient of one component of a sinusoidal field (see the module docstring): below
# 1 / sqrt(2), so the map p -> p + flow(p) is a bijection and the backward fixed point contracts.
MAX_GRADIENT = 0.5

# A flow field as a formula: (x, y) pixel coordinates of frame 0 (any shape) -> (u, v) in pixels.
FlowField = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# A layer's footprint in frame 1: (x, y) -> bool.
Support = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class FlowPair:
    """Two frames and the ground-truth flow between them (see the module docstring for conventions).

    Attributes:
        name: identifies the pair within its source (e.g. ``"affine-02-coffee"``, ``"alley_1/frame_0001"``).
        frame0, frame1: ``(H, W, 3)`` uint8 RGB.
        flow: ``(2, H, W)`` float32 pixels, frame 0 -> frame 1; 0 where not ``valid``.
        valid: ``(H, W)`` bool, ground truth known.
        occluded: ``(H, W)`` bool, pixel of frame 0 not visible in frame 1.
        backward: ``(2, H, W)`` float32 pixels, frame 1 -> frame 0 at frame 1's pixels; None where
            the source has no backward ground truth (only synthetic pairs have it).
        backward_valid, backward_occluded: ``(H, W)`` bool, as ``valid`` and ``occluded`` for
            ``backward`` (a pixel of frame 1 not visible in frame 0 is occluded: disoccluded).
    """

    name: str
    frame0: np.ndarray
    frame1: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    occluded: np.ndarray
    backward: np.ndarray | None = None
    backward_valid: np.ndarray | None = None
    backward_occluded: np.ndarray | None = None


# ---------------------------------------------------------------------------------------- synthetic

@dataclass
class _Layer:
    photo: np.ndarray            # (Hp, Wp, 3) float32, rescaled; frame pixel q (hi-res) is photo[origin + q]
    origin: tuple[int, int]      # (x, y) of the frame's top-left hi-res pixel in the photo
    flow: FlowField
    support: Support | None      # None: covers the whole frame


def synthetic_pairs(n: int = 16, size: tuple[int, int] = (128, 160), seed: int = 0,
                    kinds: Sequence[str] | None = None, noise: float = 0.0) -> list[FlowPair]:
    """Deterministic synthetic pairs with exact ground truth, made from real photographs.

    Args:
        n: number of pairs.
        size: ``(H, W)`` of the frames.
        seed: the same seed gives identical pairs.
        kinds: subset of ``KINDS`` to cycle through (default all, in ``KINDS`` order).
        noise: standard deviation of Gaussian noise added to each frame, grey levels.

    Returns:
        ``n`` :class:`FlowPair` named ``"<kind>-<index>-<photo>"``.

    Raises:
        BenchError: unknown kinds, frames below 16x16, or a pair whose backward ground truth does
            not converge (the message names the pair).
    """
    kinds = tuple(KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise BenchError(f"unknown synthetic kinds {unknown or '(none given)'}; choose from {KINDS}")
    height, width = size
    if height < 16 or width < 16:
        raise BenchError(f"synthetic frames must be at least 16x16, got size {size}")
    pairs = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = kinds[i % len(kinds)]
        layers, photo_name = _scene(kind, rng, height, width)
        frame0, frame1 = _render(layers, height, width)
        flow, valid, occluded = _ground_truth(layers, height, width)
        try:
            backward, backward_valid, backward_occluded = _backward_truth(layers, height, width)
        except BenchError as exc:
            raise BenchError(f"synthetic pair {i} ({kind}, seed {seed}, size {height}x{width}): "
                             f"{exc}") from None
        if noise > 0:
            frame0 = frame0 + rng.normal(0.0, noise, frame0.shape)
            frame1 = frame1 + rng.normal(0.0, noise, frame1.shape)
        pairs.append(FlowPair(f"{kind}-{i:02d}-{photo_name}", _to_uint8(frame0), _to_uint8(frame1),
                              flow, valid, occluded, backward, backward_valid, backward_occluded))
    return pairs


def _scene(kind: str, rng: np.random.Generator, height: int, width: int
           ) -> tuple[list[_Layer], str]:
    names = rng.permutation(len(PHOTOS))
    background = PHOTOS[names[0]]
    if kind == "smooth":
        flow = _sum(_sinusoids(rng, height, width, rng.uniform(2.0, 4.0)),
                    _translation(*rng.uniform(-2.0, 2.0, 2)))
    elif kind == "translation":
        flow = _translation(*_polar(rng, rng.uniform(0.3, 4.0)))
    elif kind == "affine":
        flow = _rotation_zoom(rng, height, width)
    elif kind == "small":
        flow = _sum(_sinusoids(rng, height, width, 1.0), _translation(*rng.uniform(-0.35, 0.35, 2)))
    elif kind == "large":
        flow = _sum(_sinusoids(rng, height, width, 1.0), _translation(*_polar(rng, rng.uniform(6.5, 13.5))))
    else:  # occlusion
        flow = _sum(_sinusoids(rng, height, width, 1.0), _translation(*_polar(rng, rng.uniform(0.0, 3.0))))
    layers = [_photo_layer(background, rng, height, width, flow, None)]
    if kind == "occlusion":
        foreground = PHOTOS[names[1]]
        fg_flow = _translation(*_polar(rng, rng.uniform(3.0, 10.0)))
        layers.append(_photo_layer(foreground, rng, height, width, fg_flow, _ellipse(rng, height, width)))
        background = f"{background}+{foreground}"
    return layers, background


def _polar(rng: np.random.Generator, magnitude: float) -> tuple[float, float]:
    angle = rng.uniform(0.0, 2 * np.pi)
    return magnitude * np.cos(angle), magnitude * np.sin(angle)


def _translation(u: float, v: float) -> FlowField:
    return lambda x, y: (np.full(np.shape(x), u), np.full(np.shape(x), v))


def _sum(a: FlowField, b: FlowField) -> FlowField:
    def field(x, y):
        (ua, va), (ub, vb) = a(x, y), b(x, y)
        return ua + ub, va + vb
    return field


def _sinusoids(rng: np.random.Generator, height: int, width: int, bound: float, terms: int = 3
               ) -> FlowField:
    """Per component, ``terms`` plane waves of at most 1.5 cycles per frame whose amplitudes sum to
    ``bound``, so each component is bounded by ``bound`` px; where that component's gradient could
    exceed ``MAX_GRADIENT`` (small frames), its amplitudes are scaled down to keep it there."""
    cycles = rng.uniform(-1.5, 1.5, (2, terms, 2))
    phase = rng.uniform(0.0, 2 * np.pi, (2, terms))
    amplitude = rng.dirichlet(np.ones(terms), size=2) * bound
    # |grad| of a * sin(2 pi (cx x / W + cy y / H) + phi) is at most a * 2 pi * |(cx / W, cy / H)|.
    gradient = (amplitude * 2 * np.pi * np.hypot(cycles[..., 0] / width, cycles[..., 1] / height)
                ).sum(axis=1)
    over = gradient > MAX_GRADIENT
    amplitude[over] *= (MAX_GRADIENT / gradient[over])[:, None]

    def field(x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        out = []
        for c in range(2):
            total = np.zeros(x.shape)
            for k in range(terms):
                arg = 2 * np.pi * (cycles[c, k, 0] * x / width + cycles[c, k, 1] * y / height)
                total += amplitude[c, k] * np.sin(arg + phase[c, k])
            out.append(total)
        return out[0], out[1]
    return field


def _rotation_zoom(rng: np.random.Generator, height: int, width: int) -> FlowField:
    """x -> c + z R(theta) (x - c) + t, the rotation and zoom scaled to 3-8 px at the farthest
    corner by an upper bound (the module docstring says what the displacement comes to)."""
    cx, cy = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
    theta = rng.uniform(-1.0, 1.0)
    dz = rng.uniform(-1.0, 1.0)
    t = rng.uniform(-2.0, 2.0, 2)
    reach = np.hypot(max(cx, width - 1 - cx), max(cy, height - 1 - cy))
    # Displacement of the farthest corner is about reach * |z e^{i theta} - 1| <= reach (|dz| + |theta|).
    scale = rng.uniform(3.0, 8.0) / (reach * (abs(theta) + abs(dz)) + 1e-9)
    scale = min(scale, 0.08 / max(abs(theta), abs(dz), 1e-9))   # at most 0.08 rad and 8 % zoom
    theta, zoom = theta * scale, 1.0 + dz * scale
    a, b = zoom * np.cos(theta), zoom * np.sin(theta)

    def field(x, y):
        dx, dy = x - cx, y - cy
        return cx + a * dx - b * dy + t[0] - x, cy + b * dx + a * dy + t[1] - y
    return field


def _ellipse(rng: np.random.Generator, height: int, width: int) -> Support:
    """An ellipse inside frame 1 with radii 15-30 % of the frame size."""
    rx, ry = width * rng.uniform(0.15, 0.3), height * rng.uniform(0.15, 0.3)
    cx = rng.uniform(rx + 1, width - 2 - rx)
    cy = rng.uniform(ry + 1, height - 2 - ry)
    return lambda x, y: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3], dtype=np.float32)
    image.setflags(write=False)
    return image


def _photo_layer(name: str, rng: np.random.Generator, height: int, width: int, flow: FlowField,
                 support: Support | None) -> _Layer:
    """A random crop of photo ``name``, rescaled so that the (super-sampled) frame covers 50-100 % of
    its limiting side (never enlarged unless the photo is smaller than the frame), then blurred by
    ``OPTICAL_BLUR``."""
    import cv2

    photo = _photo(name)
    hh, hw = height * SUPERSAMPLE, width * SUPERSAMPLE
    ph, pw = photo.shape[:2]
    fit = max(hh / ph, hw / pw)
    zoom = max(min(fit / rng.uniform(0.5, 1.0), 1.0), fit)
    if zoom != 1.0:
        new_size = (max(hw, round(pw * zoom)), max(hh, round(ph * zoom)))
        interp = cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC
        photo = cv2.resize(photo, new_size, interpolation=interp)
    photo = cv2.GaussianBlur(photo, (0, 0), OPTICAL_BLUR * SUPERSAMPLE)
    ph, pw = photo.shape[:2]
    origin = (int(rng.integers(0, pw - hw + 1)), int(rng.integers(0, ph - hh + 1)))
    return _Layer(photo, origin, flow, support)


def _render(layers: list[_Layer], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames 0 and 1 as float64 ``(H, W, 3)``, rendered super-sampled and block-averaged."""
    s = SUPERSAMPLE
    hh, hw = height * s, width * s
    qy, qx = np.mgrid[0:hh, 0:hw].astype(np.float64)
    # Output-pixel coordinates of the hi-res pixel centres (the 2x2 block of p is centred on p).
    x, y = (qx + 0.5) / s - 0.5, (qy + 0.5) / s - 0.5

    frame1 = np.zeros((hh, hw, 3), np.float32)
    for layer in layers:
        ox, oy = layer.origin
        crop = layer.photo[oy:oy + hh, ox:ox + hw]
        if layer.support is None:
            frame1[:] = crop
        else:
            frame1 = np.where(layer.support(x, y)[..., None], crop, frame1)

    frame0 = np.zeros((hh, hw, 3), np.float32)
    todo = np.ones((hh, hw), bool)
    for layer in reversed(layers):
        u, v = layer.flow(x, y)
        shown = todo.copy() if layer.support is None else todo & layer.support(x + u, y + v)
        if shown.any():
            ox, oy = layer.origin
            sampled = _sample_bicubic(layer.photo, qx + ox + s * u, qy + oy + s * v)
            frame0 = np.where(shown[..., None], sampled, frame0)
            todo &= ~shown
    return _block_mean(frame0, s), _block_mean(frame1, s)


def _sample_bicubic(photo: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``photo`` at float pixel coordinates (bicubic, reflected at the photo's border)."""
    import torch
    import torch.nn.functional as F

    ph, pw = photo.shape[:2]
    grid = np.stack((px * (2.0 / (pw - 1)) - 1.0, py * (2.0 / (ph - 1)) - 1.0), axis=-1)
    image = torch.from_numpy(photo).permute(2, 0, 1)[None]
    out = F.grid_sample(image, torch.from_numpy(grid.astype(np.float32))[None], mode="bicubic",
                        padding_mode="reflection", align_corners=True)
    return out[0].permute(1, 2, 0).numpy()


def _block_mean(image: np.ndarray, s: int) -> np.ndarray:
    import cv2

    # INTER_AREA with an integer factor is exactly the mean of each s x s block.
    h, w = image.shape[0] // s, image.shape[1] // s
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)


def _ground_truth(layers: list[_Layer], height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    flow = np.zeros((2, height, width))
    owner = np.full((height, width), -1)
    for i in reversed(range(len(layers))):
        u, v = layers[i].flow(x, y)
        support = layers[i].support
        shown = (owner < 0) if support is None else (owner < 0) & support(x + u, y + v)
        flow[0][shown], flow[1][shown] = u[shown], v[shown]
        owner[shown] = i
    tx, ty = x + flow[0], y + flow[1]
    valid = (tx >= 0) & (tx <= width - 1) & (ty >= 0) & (ty <= height - 1)
    covered = np.zeros((height, width), bool)
    for i, layer in enumerate(layers):
        if layer.support is not None:
            covered |= (owner < i) & layer.support(tx, ty)
    return flow.astype(np.float32), valid, covered | ~valid


def _backward_truth(layers: list[_Layer], height: int, width: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow frame 1 -> frame 0 at frame 1's pixel centres, its ``valid`` and ``occluded`` masks.

    Pixel q of frame 1 shows the top-most layer whose support contains q; it came from the point
    p of frame 0 with ``p + flow(p) = q`` (found by the fixed-point iteration ``p <- q - flow(p)``,
    a contraction for these fields: each component's gradient stays below ``MAX_GRADIENT``), so
    its backward flow is ``p - q``. It is occluded (disoccluded, seen forward) where a layer above
    it covers p in frame 0, and not valid where p lies outside frame 0."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    back = np.zeros((2, height, width))
    owner = np.full((height, width), -1)
    for i in reversed(range(len(layers))):
        support = layers[i].support
        shown = (owner < 0) if support is None else (owner < 0) & support(x, y)
        px, py = _preimage(layers[i].flow, x[shown], y[shown])
        back[0][shown], back[1][shown] = px - x[shown], py - y[shown]
        owner[shown] = i
    px, py = x + back[0], y + back[1]
    valid = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
    covered = np.zeros((height, width), bool)
    for i, layer in enumerate(layers):
        if layer.support is not None:
            u, v = layer.flow(px, py)
            covered |= (owner < i) & layer.support(px + u, py + v)
    return back.astype(np.float32), valid, covered | ~valid


def _preimage(flow: FlowField, qx: np.ndarray, qy: np.ndarray, steps: int = 200
              ) -> tuple[np.ndarray, np.ndarray]:
    """The points p with ``p + flow(p) = q``, to 1e-9 px; :class:`BenchError` if the iteration
    does not converge (a field whose gradient reaches 1 is not invertible)."""
    px, py = qx.copy(), qy.copy()
    for _ in range(steps):
        u, v = flow(px, py)
        nx, ny = qx - u, qy - v
        done = max(np.abs(nx - px).max(initial=0.0), np.abs(ny - py).max(initial=0.0)) < 1e-9
        px, py = nx, ny
        if done:
            return px, py
    raise BenchError("its backward ground truth did not converge (the flow field folds over "
                     "itself at this frame size); use a larger --size or another --seed")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- stereo

def stereo_pairs(scales: Sequence[float] = (1.0, 0.5, 0.25)) -> list[FlowPair]:
    """The Middlebury 2014 "Motorcycle" stereo pair shipped with scikit-image, as flow left -> right.

    Args:
        scales: resolutions relative to skimage's 500x741 images, each in (0, 1].

    Returns:
        one :class:`FlowPair` per scale, named ``"motorcycle-x<scale>"``, with ``v = 0`` and
        ``u = -disparity`` (see the module docstring for the sign check and the masks).
    """
    import cv2
    from skimage import data

    left, right, disparity = data.stereo_motorcycle()
    known = np.isfinite(disparity) & (disparity > 0)
    disparity = np.where(known, disparity, 0.0).astype(np.float32)
    pairs = []
    for scale in scales:
        if not 0 < scale <= 1:
            raise BenchError(f"stereo scale must be in (0, 1], got {scale}")
        if scale == 1:
            l_img, r_img, disp, ok = left, right, disparity, known
        else:
            h, w = left.shape[:2]
            new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
            shrink = functools.partial(cv2.resize, dsize=new_size, interpolation=cv2.INTER_AREA)
            l_img, r_img = shrink(left), shrink(right)
            fraction = shrink(known.astype(np.float32))
            ok = fraction > 1 - 1e-4
            disp = np.where(ok, shrink(disparity) / np.maximum(fraction, 1e-6), 0.0)
            # Column maps are affine with the same factor (x' + 0.5 = s (x + 0.5)): offsets scale by s.
            disp = (disp * (new_size[0] / w)).astype(np.float32)
        flow = np.stack((-disp, np.zeros_like(disp))).astype(np.float32)
        leaves = np.arange(disp.shape[1])[None, :] - disp < 0
        pairs.append(FlowPair(f"motorcycle-x{scale:g}", np.ascontiguousarray(l_img),
                              np.ascontiguousarray(r_img), flow, ok.copy(), ~ok | leaves))
    return pairs


# ------------------------------------------------------------------------------------------ folders

def load_flow_folder(path: str | os.PathLike, layout: str = "middlebury", *,
                     sintel_pass: str = "clean", sequences: Sequence[str] | None = None
                     ) -> list[FlowPair]:
    """Read a ground-truth dataset folder.

    Args:
        path: the dataset root (see the module docstring for the layouts). For Sintel, the folder
            holding ``training/`` or the ``training`` folder itself.
        layout: ``"middlebury"`` or ``"sintel"``.
        sintel_pass: ``"clean"`` or ``"final"`` (the image folder under ``training``).
        sequences: only these Middlebury sequences / Sintel scenes (default all).

    Returns:
        pairs sorted by name: Middlebury ``"<seq>"``, Sintel ``"<scene>/frame_%04d"``.

    Raises:
        BenchError: the folder does not exist, holds no pair of the layout, or a file of a pair is
            missing or unreadable; the message names the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise BenchError(f"{root}: no such folder")
    if layout == "middlebury":
        jobs = _middlebury_jobs(root)
    elif layout == "sintel":
        jobs = _sintel_jobs(root, sintel_pass)
    else:
        raise BenchError(f"unknown layout {layout!r}; choose 'middlebury' or 'sintel'")
    if sequences is not None:
        wanted = set(sequences)
        jobs = [job for job in jobs if job[0].split("/")[0] in wanted]
    return [_load_pair(*job) for job in jobs]


# (name, frame0, frame1, flow, occlusion mask or None, invalid mask or None)
_Job = tuple[str, Path, Path, Path, "Path | None", "Path | None"]


def _middlebury_jobs(root: Path) -> list[_Job]:
    if (root / "other-gt-flow").is_dir():
        data_dir = root / "other-data"
        if not data_dir.is_dir():
            raise BenchError(f"{root}: has other-gt-flow/ but no other-data/ with the frames")
        seqs = sorted(p.name for p in (root / "other-gt-flow").iterdir() if (p / "flow10.flo").is_file())
        jobs = [(s, data_dir / s / "frame10.png", data_dir / s / "frame11.png",
                 root / "other-gt-flow" / s / "flow10.flo", None, None) for s in seqs]
    else:
        dirs = [root] if (root / "flow10.flo").is_file() else sorted(
            p for p in root.iterdir() if (p / "flow10.flo").is_file())
        jobs = [(d.name, d / "frame10.png", d / "frame11.png", d / "flow10.flo", None, None)
                for d in dirs]
    if not jobs:
        raise BenchError(f"{root}: no Middlebury pairs (expected other-data/<seq>/frame10.png, "
                         f"frame11.png with other-gt-flow/<seq>/flow10.flo, or <seq>/frame10.png, "
                         f"frame11.png, flow10.flo)")
    return jobs


def _sintel_jobs(root: Path, sintel_pass: str) -> list[_Job]:
    if (root / "training").is_dir():
        root = root / "training"
    if not (root / "flow").is_dir():
        raise BenchError(f"{root}: not a Sintel training folder (no flow/ in it)")
    images = root / sintel_pass
    if not images.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "flow")
        raise BenchError(f"{root}: no {sintel_pass}/ image folder (found {have})")
    jobs = []
    for scene in sorted(p for p in (root / "flow").iterdir() if p.is_dir()):
        for flo in sorted(scene.glob("frame_*.flo")):
            try:
                index = int(flo.stem.split("_")[-1])
            except ValueError:
                continue
            name = f"frame_{index:04d}"
            occ = root / "occlusions" / scene.name / f"{name}.png"
            inv = root / "invalid" / scene.name / f"{name}.png"
            jobs.append((f"{scene.name}/{name}", images / scene.name / f"{name}.png",
                         images / scene.name / f"frame_{index + 1:04d}.png", flo,
                         occ if occ.is_file() else None, inv if inv.is_file() else None))
    if not jobs:
        raise BenchError(f"{root}: no Sintel pairs (expected flow/<scene>/frame_%04d.flo)")
    return jobs


def _load_pair(name: str, frame0: Path, frame1: Path, flow_path: Path, occ_path: Path | None,
               invalid_path: Path | None) -> FlowPair:
    img0, img1 = _read_rgb(frame0), _read_rgb(frame1)
    flow = read_flo(flow_path)
    shape = img0.shape[:2]
    if img1.shape[:2] != shape or flow.shape[1:] != shape:
        raise BenchError(f"{flow_path}: flow {flow.shape[1:]} does not match frames {frame0.name} "
                         f"{shape} and {frame1.name} {img1.shape[:2]}")
    valid = np.isfinite(flow).all(0) & (np.abs(flow) < UNKNOWN_FLOW).all(0)
    if invalid_path is not None:
        valid &= ~_read_mask(invalid_path, shape)
    occluded = np.zeros(shape, bool) if occ_path is None else _read_mask(occ_path, shape)
    flow = np.where(valid, flow, 0.0).astype(np.float32)
    return FlowPair(name, img0, img1, flow, valid, occluded)


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise BenchError(f"{path}: missing frame")
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BenchError(f"{path}: cannot decode image")
    return np.ascontiguousarray(image[..., ::-1])


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    mask = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise BenchError(f"{path}: cannot decode mask image")
    if mask.shape != shape:
        raise BenchError(f"{path}: mask {mask.shape} does not match frames {shape}")
    return mask > 127
