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

Parameters are typed and range-checked like an engine's (:mod:`flowkit.flow.params`): each peer
declares them as a frozen dataclass (``Peer.Params``: :class:`TVL1PeerParams`,
:class:`DISPeerParams`, :class:`FarnebackPeerParams`) whose annotations say the type (a whole float
is taken where an integer belongs, ``2.7`` or the string ``"False"`` is refused) and whose
``__post_init__`` checks the range OpenCV needs (``opencv-tvl1``: the ranges of flowkit's
``tvl1``, and ``median_filtering`` 0, 1, 3 or 5, the kernels OpenCV's median of float flow has;
``opencv-farneback``: ``0 < pyr_scale < 1``, ``flags`` 0 or 256, ``OPTFLOW_FARNEBACK_GAUSSIAN``:
a peer has no initial flow to use). :func:`check_peer_params` runs that check without OpenCV, so
the benchmark refuses a bad ``--param`` before it measures anything. An error OpenCV still raises
(``cv2.error``) while building the solver or computing a pair is a :class:`PeerError` naming the
peer, which the harness reports as that method's failed row.

A peer whose OpenCV function is missing (no OpenCV, or opencv-python without the contrib modules)
cannot be created: :func:`create_peer` raises :class:`PeerMissing` with the reason, and the benchmark
harness reports the method as missing with that reason.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import EngineError
from ..flow.tvl1 import TVL1Params
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
DIS_PRESETS = ("ultrafast", "fast", "medium")

_CONTRIB_HINT = ("install opencv-contrib-python (and uninstall opencv-python / opencv-python-headless, "
                 "which shadow it)")


class PeerMissing(BenchError):
    """The OpenCV function behind a peer is not available; the message says why and what to install."""


class PeerError(BenchError):
    """OpenCV raised an error (``cv2.error``) building a peer's solver or computing a pair; the
    message names the peer and OpenCV's reason."""


def _positive(peer: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if not value > 0:
            raise BenchError(f"{peer}: {key} must be positive, got {value!r}")


@dataclass(frozen=True)
class TVL1PeerParams(TVL1Params):
    """``opencv-tvl1``'s parameters: flowkit ``tvl1``'s (the same names, OpenCV's defaults and
    ranges), with the median filter OpenCV can apply to float flow."""

    def __post_init__(self):
        try:
            super().__post_init__()
        except EngineError as exc:  # "tvl1: ..." -> "opencv-tvl1: ...", the benchmark's error
            raise BenchError(f"opencv-{exc}") from None
        if self.median_filtering not in (0, 1, 3, 5):
            raise BenchError(f"opencv-tvl1: median_filtering must be 0 or 1 (none), 3 or 5 (OpenCV "
                             f"median-filters float flow with those kernels only), got "
                             f"{self.median_filtering!r}")


@dataclass(frozen=True)
class DISPeerParams:
    """``opencv-dis``'s parameters."""

    preset: str = "medium"

    def __post_init__(self):
        preset = self.preset.lower()
        if preset not in DIS_PRESETS:
            raise BenchError(f"opencv-dis: preset must be one of {', '.join(DIS_PRESETS)}, got "
                             f"{self.preset!r}")
        object.__setattr__(self, "preset", preset)


@dataclass(frozen=True)
class FarnebackPeerParams:
    """``opencv-farneback``'s parameters (``cv2.calcOpticalFlowFarneback``'s, snake case)."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    flags: int = 0

    def __post_init__(self):
        if not 0 < self.pyr_scale < 1:
            raise BenchError(f"opencv-farneback: pyr_scale must be in (0, 1), got "
                             f"{self.pyr_scale!r}")
        if self.levels < 0:
            raise BenchError(f"opencv-farneback: levels must be >= 0, got {self.levels!r}")
        _positive("opencv-farneback", {"winsize": self.winsize, "iterations": self.iterations,
                                       "poly_n": self.poly_n, "poly_sigma": self.poly_sigma})
        if self.flags not in (0, 256):
            raise BenchError(f"opencv-farneback: flags must be 0 or 256 "
                             f"(OPTFLOW_FARNEBACK_GAUSSIAN; there is no initial flow to use), got "
                             f"{self.flags!r}")


def _cv_reason(exc: Exception) -> str:
    """``cv2.error``'s message on one line (OpenCV's own text, location and assertion)."""
    return " ".join(str(exc).split())


class Peer:
    """An OpenCV method with the engine call shape (see the module docstring); one subclass per
    peer, registered in :data:`PEERS`.

    Attributes:
        name: ``"opencv-tvl1"``, ``"opencv-dis"`` or ``"opencv-farneback"``.
        Params: the frozen dataclass of its parameters, in flowkit's names, with their defaults
            (OpenCV's), types and ranges (see the module docstring).
        params: the parameters in flowkit's names, typed, JSON-serialisable.
        threads: ``cv2.getNumThreads()`` when the peer was created.
        version: ``cv2.__version__``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = type(None)

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Params)]

    def __init__(self, **params):
        self.params = dataclasses.asdict(check_peer_params(self.name, params))
        cv2 = _import_cv2(self.name)
        try:
            self._flow = self._solver(cv2, dict(self.params))
        except cv2.error as exc:
            raise PeerError(f"{self.name}: OpenCV refused its parameters ({_cv_reason(exc)})") \
                from None
        self.threads = int(cv2.getNumThreads())
        self.version = cv2.__version__
        self._cv_error = cv2.error

    def _solver(self, cv2, prm: dict[str, Any]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``(gray0, gray1) -> (H, W, 2)`` flow; PeerMissing when OpenCV lacks the function."""
        raise NotImplementedError

    def __call__(self, frames0, frames1) -> np.ndarray:
        g0, g1 = _gray_batch(frames0, "frames0"), _gray_batch(frames1, "frames1")
        if g0.shape != g1.shape:
            raise BenchError(f"frame pairs differ in shape: {g0.shape} vs {g1.shape}")
        out = np.empty((g0.shape[0], 2, *g0.shape[1:]), np.float32)
        for i in range(g0.shape[0]):
            try:
                out[i] = self._flow(g0[i], g1[i]).transpose(2, 0, 1)
            except self._cv_error as exc:
                raise PeerError(f"{self.name}: OpenCV failed on a {g0.shape[1]}x{g0.shape[2]} pair "
                                f"({_cv_reason(exc)})") from None
        return out

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "version": f"opencv-{self.version}", "params": self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Peer({self.name!r}, {args})"


PEERS: Registry[Peer] = Registry("peer", error=BenchError, name_attr="name")


def check_peer_params(name: str, params: dict[str, Any]):
    """The ``Params`` of peer ``name`` for ``params``: names, types and ranges checked without
    OpenCV (:func:`flowkit.flow.params.check_params`, the engines' rule).

    Raises:
        BenchError: unknown peer or parameter name, a value of the wrong type or out of range; the
            message names the peer, the parameter and what it must be.
    """
    from ..flow.params import check_params

    cls = PEERS.get(name)
    PEERS.check_keywords(name, params, strict=True)
    try:
        return check_params(cls.Params, dict(params), name)
    except EngineError as exc:  # a type error: same message, the benchmark's error class
        raise BenchError(str(exc)) from None


def create_peer(name: str, **params) -> Peer:
    """Build peer ``name`` with keyword ``params`` (flowkit's names; see the peer's ``Params``).

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
    Params = TVL1PeerParams

    def _solver(self, cv2, prm):
        create = _require(cv2, "optflow.DualTVL1OpticalFlow_create", self.name,
                          f"it is in the contrib modules: {_CONTRIB_HINT}")
        # typed by TVL1PeerParams: ints and floats as OpenCV's binding wants them
        kwargs = {TVL1_TO_OPENCV[k]: v for k, v in prm.items() if k in TVL1_TO_OPENCV}
        if not prm["early_stop"]:
            kwargs["epsilon"] = 0.0
        solver = create(**kwargs)
        return lambda a, b: solver.calc(a, b, None)


@PEERS.register()
class OpenCVDIS(Peer):
    name = "opencv-dis"
    Params = DISPeerParams

    def _solver(self, cv2, prm):
        create = _require(cv2, "DISOpticalFlow_create", self.name, "it needs OpenCV >= 3.4")
        solver = create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{prm['preset'].upper()}"))
        return lambda a, b: solver.calc(a, b, None)


@PEERS.register()
class OpenCVFarneback(Peer):
    name = "opencv-farneback"
    Params = FarnebackPeerParams

    def _solver(self, cv2, prm):
        calc = _require(cv2, "calcOpticalFlowFarneback", self.name, _CONTRIB_HINT)
        args = tuple(prm[k] for k in ("pyr_scale", "levels", "winsize", "iterations", "poly_n",
                                      "poly_sigma", "flags"))
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
