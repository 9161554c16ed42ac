"""Peer methods: OpenCV's optical flow behind the engine call shape, for benchmarks.

A peer is called like an engine, ``peer(frames0, frames1) -> flow``: frames ``(B, C, H, W)`` RGB (C = 3)
or gray (C = 1), uint8 (float input is rounded and clipped to uint8, which is what OpenCV's 8-bit
methods take), numpy or torch (CPU); flow ``(B, 2, H, W)`` float32 numpy, pixels, channel 0 u
(+x right), channel 1 v (+y down), frame 0 -> frame 1 (OpenCV's convention, the same as flowkit's).
RGB is converted with ``cv2.cvtColor(..., COLOR_RGB2GRAY)``, the weights flowkit's ``tvl1`` uses.

OpenCV computes one pair per call (its own threads parallelise inside the pair), so a peer loops over
the batch; ``peer.threads`` is ``cv2.getNumThreads()`` at creation.

Peers:

``opencv-tvl1``       ``cv2.optflow.DualTVL1OpticalFlow`` (opencv-contrib) created with the parameters of
                      flowkit's ``tvl1`` under the same names (:data:`TVL1_TO_OPENCV`); defaults are
                      OpenCV's (tau 0.25, lambda 0.15, theta 0.3, nscales 5, warps 5, epsilon 0.01,
                      30 inner x 10 outer iterations, scale step 0.8, median filter 5). flowkit's
                      ``early_stop=False`` maps to ``epsilon=0`` (OpenCV always tests its epsilon rule;
                      with 0 it never stops early unless an update is exactly zero).
``opencv-dis``        ``cv2.DISOpticalFlow`` with ``preset`` ``"medium"`` (default), ``"fast"`` or
                      ``"ultrafast"``.
``opencv-farneback``  ``cv2.calcOpticalFlowFarneback`` with the usual parameters: pyr_scale 0.5,
                      levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2, flags 0.

A peer whose OpenCV function is missing (no OpenCV, or opencv-python without the contrib modules)
cannot be created: :func:`create_peer` raises :class:`PeerMissing` with the reason, and the benchmark
harness reports the method as missing with that reason.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from ..registry import Registry
from .flo import BenchError

# flowkit tvl1 parameter -> cv2.optflow.DualTVL1OpticalFlow_create keyword (OpenCV spells
# "innnerIterations" with three n's in its Python binding).
TVL1_TO_OPENCV = {
    "tau": "tau", "lambda_": "lambda_", "theta": "theta", "nscales": "nscales", "warps": "warps",
    "epsilon": "epsilon", "inner_iterations": "innnerIterations",
    "outer_iterations": "outerIterations", "scale_step": "scaleStep",
    "median_filtering": "medianFiltering",
}
TVL1_DEFAULTS = {"tau": 0.25, "lambda_": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
                 "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8,
                 "median_filtering": 5, "early_stop": True}
DIS_PRESETS = ("ultrafast", "fast", "medium")
FARNEBACK_DEFAULTS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                      "poly_sigma": 1.2, "flags": 0}

_CONTRIB_HINT = ("install opencv-contrib-python (and uninstall opencv-python / opencv-python-headless, "
                 "which shadow it)")


class PeerMissing(BenchError):
    """The OpenCV function behind a peer is not available; the message says why and what to install."""


class Peer:
    """An OpenCV method with the engine call shape (see the module docstring); one subclass per
    peer, registered in :data:`PEERS`.

    Attributes:
        name: ``"opencv-tvl1"``, ``"opencv-dis"`` or ``"opencv-farneback"``.
        defaults: the parameters it accepts, in flowkit's names, with their defaults.
        params: the parameters in flowkit's names, JSON-serialisable.
        threads: ``cv2.getNumThreads()`` when the peer was created.
        version: ``cv2.__version__``.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def parameter_names(cls) -> list[str]:
        return list(cls.defaults)

    def __init__(self, **params):
        cv2 = _import_cv2(self.name)
        self.params = {**self.defaults, **params}
        self._flow = self._solver(cv2, self.params)
        self.threads = int(cv2.getNumThreads())
        self.version = cv2.__version__

    def _solver(self, cv2, prm: dict[str, Any]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``(gray0, gray1) -> (H, W, 2)`` flow; PeerMissing when OpenCV lacks the function."""
        raise NotImplementedError

    def __call__(self, frames0, frames1) -> np.ndarray:
        g0, g1 = _gray_batch(frames0, "frames0"), _gray_batch(frames1, "frames1")
        if g0.shape != g1.shape:
            raise BenchError(f"frame pairs differ in shape: {g0.shape} vs {g1.shape}")
        out = np.empty((g0.shape[0], 2, *g0.shape[1:]), np.float32)
        for i in range(g0.shape[0]):
            out[i] = self._flow(g0[i], g1[i]).transpose(2, 0, 1)
        return out

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "version": f"opencv-{self.version}", "params": self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Peer({self.name!r}, {args})"


PEERS: Registry[Peer] = Registry("peer", error=BenchError, name_attr="name")


def peer_defaults(name: str) -> dict[str, Any]:
    """The parameters a peer accepts, with their defaults."""
    return dict(PEERS.get(name).defaults)


def create_peer(name: str, **params) -> Peer:
    """Build peer ``name`` with keyword ``params`` (flowkit's names; see :func:`peer_defaults`).

    Raises:
        PeerMissing: the OpenCV function is not available (the message says why).
        BenchError: unknown peer or parameter, or a bad parameter value.
    """
    return PEERS.create(name, **params)


def peer_available(name: str) -> str | None:
    """None when peer ``name`` can be created, else the reason it cannot."""
    try:
        create_peer(name)
    except PeerMissing as exc:
        return str(exc)
    return None


def _import_cv2(name: str):
    try:
        import cv2
    except ImportError as exc:
        raise PeerMissing(f"{name}: OpenCV cannot be imported ({exc}); {_CONTRIB_HINT}") from None
    return cv2


def _require(cv2, dotted: str, name: str, hint: str):
    obj = cv2
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PeerMissing(f"{name}: cv2.{dotted} is missing in OpenCV {cv2.__version__}; {hint}")
    return obj


@PEERS.register()
class OpenCVTVL1(Peer):
    name = "opencv-tvl1"
    defaults = TVL1_DEFAULTS

    def _solver(self, cv2, prm):
        create = _require(cv2, "optflow.DualTVL1OpticalFlow_create", self.name,
                          f"it is in the contrib modules: {_CONTRIB_HINT}")
        kwargs = {TVL1_TO_OPENCV[k]: v for k, v in prm.items() if k in TVL1_TO_OPENCV}
        if not prm["early_stop"]:
            kwargs["epsilon"] = 0.0
        for key in ("nscales", "warps", "innnerIterations", "outerIterations", "medianFiltering"):
            kwargs[key] = int(kwargs[key])
        for key in ("tau", "lambda_", "theta", "epsilon", "scaleStep"):
            kwargs[key] = float(kwargs[key])
        solver = create(**kwargs)
        return lambda a, b: solver.calc(a, b, None)


@PEERS.register()
class OpenCVDIS(Peer):
    name = "opencv-dis"
    defaults = {"preset": "medium"}

    def _solver(self, cv2, prm):
        create = _require(cv2, "DISOpticalFlow_create", self.name, "it needs OpenCV >= 3.4")
        preset = str(prm["preset"]).lower()
        if preset not in DIS_PRESETS:
            raise BenchError(f"opencv-dis: preset must be one of {', '.join(DIS_PRESETS)}, got "
                             f"{preset!r}")
        prm["preset"] = preset
        solver = create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        return lambda a, b: solver.calc(a, b, None)


@PEERS.register()
class OpenCVFarneback(Peer):
    name = "opencv-farneback"
    defaults = FARNEBACK_DEFAULTS

    def _solver(self, cv2, prm):
        calc = _require(cv2, "calcOpticalFlowFarneback", self.name, _CONTRIB_HINT)
        args = (float(prm["pyr_scale"]), int(prm["levels"]), int(prm["winsize"]),
                int(prm["iterations"]), int(prm["poly_n"]), float(prm["poly_sigma"]),
                int(prm["flags"]))
        return lambda a, b: calc(a, b, None, *args)


def _gray_batch(frames, what: str) -> np.ndarray:
    """``(B, C, H, W)`` numpy/torch, C in {1, 3} RGB -> ``(B, H, W)`` contiguous uint8 gray."""
    import cv2

    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise BenchError(f"{what} must have shape (B, C, H, W) with C = 1 or 3, got {x.shape}")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0])
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
                     for f in x])
