"""Spatial transforms applied identically to the RGB frames and the flow of one sample.

A *sample* is a dict of torch tensors:

- ``rgb``  float ``(3, T, H, W)``, values 0..255 before :class:`Normalize`;
- ``flow`` float ``(2L, T, H, W)`` in pixels, channels ``(u_0, v_0, u_1, v_1, ...)`` (even channels
  horizontal, odd vertical);
- ``flow_backward`` float ``(2, T, H, W)`` in pixels, channels ``(u, v)``: transformed exactly as
  ``flow`` (everything below said of flow holds for it);
- ``flow_bound`` float (pixels), used by :class:`Normalize`;

any of ``rgb`` / ``flow`` / ``flow_backward`` may be absent. Multi-crop transforms return tensors
with a leading views dim, ``(V, 3, T, h, w)`` and ``(V, 2L, T, h, w)``; the functions below accept
such a dim too.

Every transform is an object called as ``transform(sample, rng) -> sample`` with ``rng`` a
``np.random.Generator`` (deterministic transforms ignore it) and has ``crops``, the number of views
it makes (1 unless it is a multi-crop). Flow stays consistent with the pixels it describes:

- a horizontal flip mirrors the images and negates ``u``;
- resizing a ``crop_h x crop_w`` crop to ``out_h x out_w`` multiplies ``u`` by ``out_w / crop_w``
  and ``v`` by ``out_h / crop_h``, so flow is in pixels of the output.

Resizing is ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` per frame.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..conventions import IMAGENET_MEAN, IMAGENET_STD, MODALITIES
from ..errors import FlowkitError

Sample = dict
Transform = Callable[[Sample, np.random.Generator], Sample]

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)


# ----------------------------------------------------------------------------- functions

def spatial_size(sample: Sample) -> tuple[int, int]:
    """``(H, W)`` of the sample's rgb or flows."""
    for name in MODALITIES:
        if name in sample:
            return tuple(sample[name].shape[-2:])
    raise FlowkitError("sample has neither 'rgb' nor 'flow'")


def _map(sample: Sample, fn: Callable[[torch.Tensor, str], torch.Tensor]) -> Sample:
    """A copy of ``sample`` with ``fn(tensor, name)`` applied to its rgb and flows."""
    out = dict(sample)
    for name in MODALITIES:
        if name in sample:
            out[name] = fn(sample[name], name)
    return out


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop rows ``top .. top+height-1`` and columns ``left .. left+width-1`` (flow unchanged)."""
    return _map(sample, lambda x, _: x[..., top:top + height, left:left + width])


def _interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of every ``(H, W)`` plane of ``(..., C, T, H, W)``."""
    x = x if x.is_floating_point() else x.float()
    planes = x.reshape(-1, *x.shape[-3:])  # (N, T, H, W): each plane is resized on its own
    out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(*x.shape[:-2], *size)


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to ``size = (out_h, out_w)``; flow ``u`` is scaled by ``out_w / W``, ``v`` by
    ``out_h / H`` so it stays in pixels of the output."""
    h, w = spatial_size(sample)
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return dict(sample)

    def one(x: torch.Tensor, name: str) -> torch.Tensor:
        x = _interpolate(x, (out_h, out_w))  # a new tensor: scaling it in place is safe
        if name != "rgb":  # flow or flow_backward
            x[..., 0::2, :, :, :] *= out_w / w  # u, channels of (..., 2L, T, H, W)
            x[..., 1::2, :, :, :] *= out_h / h  # v
        return x

    return _map(sample, one)


def resized_crop(sample: Sample, box: tuple[int, int, int, int], size: tuple[int, int]) -> Sample:
    """:func:`crop` to ``box = (top, left, height, width)`` then :func:`resize` to ``size``."""
    return resize(crop(sample, *box), size)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right; flow ``u`` (even channels) changes sign, ``v`` is unchanged."""
    def one(x: torch.Tensor, name: str) -> torch.Tensor:
        x = x.flip(-1)  # a copy
        if name != "rgb":  # flow or flow_backward
            x[..., 0::2, :, :, :] *= -1  # u
        return x

    return _map(sample, one)


def normalize(sample: Sample, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> Sample:
    """rgb ``(x / 255 - mean) / std`` per channel; flows ``/ sample["flow_bound"]`` (pixels)."""
    def one(x: torch.Tensor, name: str) -> torch.Tensor:
        if name == "rgb":  # one pass: x * 1 / (255 std) - mean / std
            m = torch.tensor(mean, dtype=torch.float32)[:, None, None, None]
            s = torch.tensor(std, dtype=torch.float32)[:, None, None, None]
            return torch.addcmul(-m / s, x.float(), 1.0 / (255.0 * s))
        if "flow_bound" not in sample:
            raise FlowkitError("normalising flow needs sample['flow_bound'] (pixels)")
        return x.float() / float(sample["flow_bound"])

    return _map(sample, one)


def stack_views(samples: Sequence[Sample]) -> Sample:
    """Samples of equal shapes -> one sample with a leading views dim on rgb and flows."""
    out = dict(samples[0])
    for name in MODALITIES:
        if name in out:
            out[name] = torch.stack([s[name] for s in samples])
    return out


def _square_side(sample: Sample, scale: float) -> int:
    h, w = spatial_size(sample)
    return max(1, min(h, w, int(round(min(h, w) * scale))))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise FlowkitError(f"crop size must be a positive integer (pixels), got {size!r}")
    return int(size)


def _check_scale(scale: float) -> float:
    if not 0 < float(scale) <= 1:
        raise FlowkitError(f"crop scale must be in (0, 1] (fraction of the short side), "
                           f"got {scale!r}")
    return float(scale)


# ----------------------------------------------------------------------------- training

class Compose:
    """Apply transforms in order; ``crops`` is the product of theirs."""

    def __init__(self, transforms: Iterable[Transform]):
        self.transforms = list(transforms)

    @property
    def crops(self) -> int:
        return int(np.prod([getattr(t, "crops", 1) for t in self.transforms]))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class MultiScaleCrop:
    """TSN multi-scale crop: a square of side ``short side * s`` (``s`` drawn from ``scales``) at a
    random position, resized to ``size x size``. ``(C, T, H, W)`` -> ``(C, T, size, size)``."""

    crops = 1

    def __init__(self, size: int, scales: Sequence[float] = TSN_SCALES):
        self.size = _check_size(size)
        self.scales = tuple(_check_scale(s) for s in scales)
        if not self.scales:
            raise FlowkitError("MultiScaleCrop needs at least one scale")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = spatial_size(sample)
        side = _square_side(sample, self.scales[int(rng.integers(len(self.scales)))])
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        return resized_crop(sample, (top, left, side, side), (self.size, self.size))

    def __repr__(self) -> str:
        return f"MultiScaleCrop(size={self.size}, scales={self.scales})"


class RandomHorizontalFlip:
    """:func:`hflip` with probability ``p``."""

    crops = 1

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return hflip(sample) if rng.random() < self.p else sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """:func:`normalize`: rgb 0..255 -> ImageNet-normalised, flow pixels -> ``flow/flow_bound``."""

    crops = 1

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return normalize(sample, self.mean, self.std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


# ----------------------------------------------------------------------------- testing

class CenterCrop:
    """The centred square of side ``short side * scale``, resized to ``size x size``.
    ``(C, T, H, W)`` -> ``(C, T, size, size)`` (no views dim)."""

    crops = 1

    def __init__(self, size: int, scale: float = 0.875):
        self.size, self.scale = _check_size(size), _check_scale(scale)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = spatial_size(sample)
        side = _square_side(sample, self.scale)
        box = ((h - side) // 2, (w - side) // 2, side, side)
        return resized_crop(sample, box, (self.size, self.size))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size}, scale={self.scale})"


class ThreeCrop:
    """Three squares of side ``short side * scale`` along the long side (start, centre, end), each
    resized to ``size x size``. ``(C, T, H, W)`` -> ``(3, C, T, size, size)``."""

    crops = 3

    def __init__(self, size: int, scale: float = 1.0):
        self.size, self.scale = _check_size(size), _check_scale(scale)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = spatial_size(sample)
        side = _square_side(sample, self.scale)
        if w >= h:
            boxes = [((h - side) // 2, x, side, side) for x in (0, (w - side) // 2, w - side)]
        else:
            boxes = [(y, (w - side) // 2, side, side) for y in (0, (h - side) // 2, h - side)]
        return stack_views([resized_crop(sample, b, (self.size, self.size)) for b in boxes])

    def __repr__(self) -> str:
        return f"ThreeCrop(size={self.size}, scale={self.scale})"


class TenCrop:
    """TSN ten-crop: squares of side ``short side * scale`` at the four corners and the centre,
    resized to ``size x size``, then the same five flipped (flow ``u`` negated).
    ``(C, T, H, W)`` -> ``(10, C, T, size, size)``; views 5..9 are flips of views 0..4.

    ``flip=False`` (a model trained without flips, whose classes a mirror may change: left vs
    right) keeps only the five unmirrored views: ``(5, C, T, size, size)``, ``crops`` 5."""

    def __init__(self, size: int, scale: float = 0.875, flip: bool = True):
        self.size, self.scale = _check_size(size), _check_scale(scale)
        self.flip = bool(flip)
        self.crops = 10 if self.flip else 5

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = spatial_size(sample)
        side = _square_side(sample, self.scale)
        corners = [(0, 0), (0, w - side), (h - side, 0), (h - side, w - side),
                   ((h - side) // 2, (w - side) // 2)]
        views = [resized_crop(sample, (y, x, side, side), (self.size, self.size))
                 for y, x in corners]
        return stack_views(views + ([hflip(v) for v in views] if self.flip else []))

    def __repr__(self) -> str:
        return f"TenCrop(size={self.size}, scale={self.scale}, flip={self.flip})"


# ----------------------------------------------------------------------------- presets

def train_transform(size: int, scales: Sequence[float] = TSN_SCALES, flip: bool = True) -> Compose:
    """Training augmentation: :class:`MultiScaleCrop`, optional :class:`RandomHorizontalFlip`,
    :class:`Normalize`. ``(C, T, H, W)`` -> ``(C, T, size, size)``."""
    steps: list[Transform] = [MultiScaleCrop(size, scales)]
    if flip:
        steps.append(RandomHorizontalFlip())
    return Compose(steps + [Normalize()])


def test_transform(size: int, crops: int = 1, scale: float | None = None,
                   flip: bool = True) -> Compose:
    """Deterministic test views then :class:`Normalize`.

    ``crops=1``: :class:`CenterCrop` (no views dim); ``3``: :class:`ThreeCrop`; ``10``:
    :class:`TenCrop` (leading views dim of 3 / 10). ``scale`` is the crop side as a fraction of the
    short side; by default 0.875 (224 of 256, as TSN) for 1 and 10 crops, 1.0 for 3 crops.
    ``flip=False`` (a model trained without flips) drops ten-crop's mirrored views: 5 views.
    """
    kinds = {1: CenterCrop, 3: ThreeCrop, 10: TenCrop}
    if crops not in kinds:
        raise FlowkitError(f"test crops must be 1, 3 or 10, got {crops!r}")
    kind = kinds[crops]
    kw = {"flip": flip} if kind is TenCrop else {}
    views = kind(size, **kw) if scale is None else kind(size, scale, **kw)
    return Compose([views, Normalize()])


test_transform.__test__ = False  # not a pytest test, despite its name
