"""Optical-flow accuracy against ground truth: end-point error, angular error, outlier rate.

Inputs are numpy arrays or torch tensors (any device), flow ``(2, H, W)`` or batched ``(B, 2, H, W)``,
in pixels, channel 0 u (+x right), channel 1 v (+y down). Masks are boolean ``(H, W)`` or ``(B, H, W)``
(an ``(H, W)`` mask applies to every item of a batch). Scalar metrics are means over all valid pixels
of all items (pixel-weighted, as the Middlebury and Sintel tables compute them), returned as Python
floats computed in float64; with no valid pixel they are NaN.

Ground truth that is not finite or larger than 1e9 in magnitude (Middlebury's "unknown flow") is
excluded automatically, in addition to ``valid``. A non-finite *estimate* at a valid pixel is not
excluded: it makes the metric NaN, which is the honest answer.

Definitions (Baker et al., "A Database and Evaluation Methodology for Optical Flow", IJCV 2011):

- end-point error ``EPE = |(u, v) - (u_gt, v_gt)|``;
- angular error ``AE = arccos(((u, v, 1) . (u_gt, v_gt, 1)) / (|(u, v, 1)| |(u_gt, v_gt, 1)|))``, degrees;
- outlier rate: fraction of valid pixels with ``EPE > threshold`` (strictly greater).
"""
from __future__ import annotations

import numpy as np

from .flo import BenchError, _as_numpy

UNKNOWN_FLOW = 1e9


def epe_map(flow, gt):
    """Per-pixel end-point error ``|flow - gt|``.

    Shape: ``(..., 2, H, W)`` twice -> ``(..., H, W)``. Returns a torch tensor (differentiable, on the
    input's device) when ``flow`` is a tensor, else a float32 numpy array.
    """
    if hasattr(flow, "detach"):
        import torch

        f = flow if flow.is_floating_point() else flow.float()
        g = torch.as_tensor(gt, device=f.device).to(f.dtype)
        _check_pair(tuple(f.shape), tuple(g.shape))
        return torch.linalg.vector_norm(f - g, dim=-3)
    f, g = np.asarray(flow, np.float32), np.asarray(gt, np.float32)
    _check_pair(f.shape, g.shape)
    return np.sqrt(((f - g) ** 2).sum(-3))


def end_point_error(flow, gt, valid=None) -> float:
    """Mean end-point error in pixels over valid pixels (see the module docstring for shapes)."""
    f, g, m = _prepare(flow, gt, valid)
    return _masked_mean(_epe(f, g), m)


def angular_error(flow, gt, valid=None) -> float:
    """Mean angular error in degrees between ``(u, v, 1)`` and ``(u_gt, v_gt, 1)`` over valid pixels."""
    f, g, m = _prepare(flow, gt, valid)
    return _masked_mean(_angular(f, g), m)


def outlier_rate(flow, gt, valid=None, threshold: float = 3.0) -> float:
    """Fraction in [0, 1] of valid pixels whose end-point error is strictly above ``threshold`` px."""
    f, g, m = _prepare(flow, gt, valid)
    epe = _epe(f, g)
    # NaN estimates count as outliers: an engine that produces NaN got those pixels wrong.
    return _masked_mean(~(epe <= threshold), m)


def flow_metrics(flow, gt, valid=None, occluded=None, threshold: float = 3.0) -> dict[str, float]:
    """All standard metrics at once.

    Args:
        flow, gt: ``(2, H, W)`` or ``(B, 2, H, W)``, numpy or torch.
        valid: pixels with ground truth (default all with finite, known ``gt``).
        occluded: pixels of frame 0 not visible in frame 1 (default none).
        threshold: outlier threshold in pixels.

    Returns:
        ``{"epe": all valid pixels, "epe_noc": valid and not occluded, "outliers": rate over valid
        pixels at ``threshold``, "angular": degrees over valid pixels}``.
    """
    f, g, m = _prepare(flow, gt, valid)
    epe = _epe(f, g)
    noc = m if occluded is None else m & ~_mask(occluded, f.shape, "occluded")
    return {
        "epe": _masked_mean(epe, m),
        "epe_noc": _masked_mean(epe, noc),
        "outliers": _masked_mean(~(epe <= threshold), m),
        "angular": _masked_mean(_angular(f, g), m),
    }


def _check_pair(fshape: tuple, gshape: tuple) -> None:
    if len(fshape) not in (3, 4) or fshape[-3] != 2:
        raise BenchError(f"flow must have shape (2, H, W) or (B, 2, H, W), got {fshape}")
    if fshape != gshape:
        raise BenchError(f"flow {fshape} and ground truth {gshape} differ in shape")


def _mask(mask, shape: tuple, name: str) -> np.ndarray:
    """A boolean mask broadcast to the flow's ``(..., H, W)``."""
    m = _as_numpy(mask)
    target = shape[:-3] + shape[-2:]
    if m.shape not in (target, shape[-2:]):
        raise BenchError(f"{name} must have shape {shape[-2:]} or {target}, got {m.shape}")
    return np.broadcast_to(m.astype(bool), target)


def _prepare(flow, gt, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = _as_numpy(flow).astype(np.float64)
    g = _as_numpy(gt).astype(np.float64)
    _check_pair(f.shape, g.shape)
    known = np.isfinite(g).all(-3) & (np.abs(g) < UNKNOWN_FLOW).all(-3)
    m = known if valid is None else known & _mask(valid, f.shape, "valid")
    return f, g, m


def _epe(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.sqrt(((f - g) ** 2).sum(-3))


def _angular(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    u, v = f[..., 0, :, :], f[..., 1, :, :]
    ug, vg = g[..., 0, :, :], g[..., 1, :, :]
    with np.errstate(invalid="ignore", over="ignore"):
        cos = (u * ug + v * vg + 1.0) / np.sqrt((u * u + v * v + 1.0) * (ug * ug + vg * vg + 1.0))
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    n = int(mask.sum())
    if n == 0:
        return float("nan")
    return float(np.where(mask, values, 0.0).sum() / n)
