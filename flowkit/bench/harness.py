"""The benchmark measurement: speed (pairs/s), memory and accuracy of flow methods on ground truth.

    from flowkit.bench import harness
    pairs, info = harness.load_dataset("synthetic", size=(128, 160), pairs=8)
    results = harness.run_benchmark(["tvl1", "opencv-tvl1"], pairs, batch=8, repeats=3,
                                    dataset=info)

Methods (:func:`available_methods`): every registered engine (``tvl1`` first) and every registered
OpenCV peer (``opencv-tvl1``, ``opencv-dis``, ``opencv-farneback``, :mod:`flowkit.bench.peers`) by
its name; ``all`` names every one of them. ``compile="on"`` runs the engines that have a
``compile`` option compiled, ``"both"`` runs them eagerly and compiled (results labelled
``"tvl1 (compiled)"``, with ``compile: true``).

What is measured, per method:

- **warm-up** (``warmup_s``, excluded from the speed): one call on the first batch of every
  distinct batch shape (pairs per batch and frame size: a dataset of several frame sizes, the
  shorter last batch), so that no one-off cost of a new shape falls into a timed pass. It
  contains one-off costs: torch.compile's compilation for a compiled method (~20 s on CPU the
  first time, once per shape it specialises; inductor's on-disk cache makes later processes
  faster; the compile cache is reset before every compiled method, so this is always in),
  allocator and thread-pool start-up.
- **passes**: ``repeats`` timed passes over the whole dataset in batches of ``batch`` pairs (OpenCV
  peers run one pair per call, recorded as ``batch`` 1). A pass times, for every batch, the method's
  call on uint8 ``(B, 3, H, W)`` CPU tensors (an engine copies them to its device) and the copy of
  the flow back to host memory as numpy, which also synchronises CUDA. Building the batches from the
  dataset is not timed. ``pairs_per_s = pairs / median pass time``; min / max pass times are kept.
- **peak memory** (``peak_mem_mb``, MiB): the peak during the timed passes minus the level just
  before the method was created, so it counts what the method keeps from its warm-up (OpenCV's
  solver buffers) and what a pass allocates, including the flow copies it returns. On CUDA, from
  ``torch.cuda.max_memory_allocated`` / ``memory_allocated`` (tensors, not the caching allocator's
  reserve). On CPU, the process's resident set size sampled every 5 ms from ``/proc/self/statm`` by a
  background thread (spikes shorter than that can be missed); where ``/proc`` is missing, the growth
  of ``getrusage``'s lifetime maximum RSS, a lower bound. ``peak_mem_kind`` names which. Methods share
  one process, so the figure is indicative: memory an earlier method freed but the allocator kept
  is reused without growth, and a compiled method also counts the compiler loaded in its warm-up
  when it is the first one.
- **accuracy** from the flows of the last pass, per pair with
  :func:`flowkit.bench.metrics.flow_metrics`, then the mean over pairs (each pair counts once,
  whatever its size; a pair without any valid pixel is left out of that metric): ``epe`` (valid
  pixels), ``epe_noc`` (valid, not occluded), ``outliers`` (fraction of valid pixels with EPE > 3 px),
  ``angular`` (degrees).

Parameters are checked before any method is built (:func:`check_method_params`): a name no method
has, or a value of the wrong type or out of range for an engine or an OpenCV peer (``nscales=2.7``,
``early_stop=False`` given as a string, ``opencv-tvl1:scale_step=1.5``), or ``weights`` an engine
cannot load (no such file, another kind of checkpoint, ``iterations=50`` against a checkpoint
trained with 10) is a :class:`~flowkit.bench.flo.BenchError` and nothing is measured.

Each result is a JSON-serialisable dict (non-finite numbers become None). A method that cannot be
created because something it needs is absent here (OpenCV function missing, no CUDA, no CuPy) gives
``status: "missing"`` with ``reason``; one that refuses to be built or raises a
:class:`~flowkit.errors.FlowkitError` while running (e.g. an engine without trained weights, or
OpenCV raising ``cv2.error`` inside a peer, :class:`~flowkit.bench.peers.PeerError`) gives
``status: "failed"`` with ``reason``, and the methods after it still run; the list never silently
gets shorter.
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import FlowkitError
from ..progress import Progress
from .flo import BenchError
from .metrics import flow_metrics
from .peers import PEERS, PeerError, check_peer_params, create_peer
from .synthetic import FlowPair, load_flow_folder, stereo_pairs, synthetic_pairs

COMPILE_MODES = ("off", "on", "both")
DEFAULT_METHODS = "tvl1,opencv-tvl1,opencv-dis,opencv-farneback"
# Small enough that the default run takes well under a minute on 2 CPU cores (about 20 s when idle).
DEFAULT_SYNTHETIC_PAIRS = 8
DATASETS = ("synthetic", "stereo", "middlebury", "sintel")
# Accuracy keys of a result, in table order.
METRICS = ("epe", "epe_noc", "outliers", "angular")
_RSS_INTERVAL_S = 0.005


# ------------------------------------------------------------------------------------------ methods

@dataclass
class Method:
    """A flow method as the harness runs it.

    Attributes:
        name: what the result calls it (``"tvl1"``, ``"tvl1 (compiled)"``, ``"opencv-dis"``, ...).
        fn: ``fn(frames0, frames1) -> flow``: uint8 ``(B, 3, H, W)`` CPU tensors twice -> ``(B, 2, H, W)``
            numpy or torch (any device).
        device: where it computes (``"cpu"``, ``"cuda:0"``).
        params: its parameters, recorded in the result.
        batch: pairs per call; None takes the run's ``batch`` (OpenCV peers use 1).
        extra: more fields for the result (e.g. ``opencv_threads``).
    """

    name: str
    fn: Callable
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)
    batch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    compile: bool = False


def available_methods() -> list[str]:
    """Every method name the harness knows: flowkit engines (``tvl1`` first), then the OpenCV
    peers."""
    from ..flow import list_engines

    engines = list_engines()
    return [n for n in engines if n == "tvl1"] + [n for n in engines if n != "tvl1"] + list(PEERS)


def resolve_methods(spec: str | Iterable[str]) -> list[str]:
    """Method names from ``"tvl1,opencv-dis"`` or a list; ``all`` expands to :func:`available_methods`.

    Raises:
        BenchError: an unknown name; the message lists the valid ones.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    valid = available_methods()
    names: list[str] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        expanded = valid if item == "all" else [item]
        unknown = [n for n in expanded if n not in valid]
        if unknown:
            raise BenchError(f"unknown method {unknown[0]!r}; valid methods: {', '.join(valid)}, all")
        names += [n for n in expanded if n not in names]
    if not names:
        raise BenchError(f"no method given; valid methods: {', '.join(valid)}, all")
    return names


def accepted_params(method: str) -> list[str]:
    """Parameter names ``method`` accepts (for engines: their parameters, not the execution options
    ``compile`` and ``backend``, which the harness sets)."""
    if method in PEERS:
        return PEERS.parameters(method)
    from ..flow import engine_parameters

    return [p for p in engine_parameters(method) if p not in ("compile", "backend")]


def compile_variants(name: str, mode: str) -> list[bool]:
    """The ``compile`` values ``name`` runs with under ``mode`` (``off`` / ``on`` / ``both``):
    only engines with a ``compile`` option are compiled."""
    if mode not in COMPILE_MODES:
        raise BenchError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if name in PEERS or mode == "off":
        return [False]
    from ..flow import engine_parameters

    if "compile" not in engine_parameters(name):
        return [False]
    return [True] if mode == "on" else [False, True]


def split_params(params: Mapping[str, Any] | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Distribute parameters over methods.

    ``"key"`` goes to every method in ``methods`` that accepts it (so ``nscales=2`` sets both
    ``tvl1`` and ``opencv-tvl1``); ``"method:key"`` goes to that method only.

    Raises:
        BenchError: a key no selected method accepts, or a prefix naming a method not selected.
    """
    per: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for key, value in (params or {}).items():
        target, sep, name = key.rpartition(":")
        if sep:
            if target not in per:
                raise BenchError(f"parameter {key!r} names method {target!r}, which is not among the "
                                 f"methods run ({', '.join(methods)})")
            if name not in accepted_params(target):
                raise BenchError(f"{target} has no parameter {name!r}; accepted: "
                                 f"{', '.join(accepted_params(target))}")
            per[target][name] = value
            continue
        takers = [m for m in methods if name in accepted_params(m)]
        if not takers:
            raise BenchError(f"no selected method ({', '.join(methods)}) has a parameter {name!r}")
        for m in takers:
            per[m][name] = value
    return per


def check_method_params(per_method: Mapping[str, Mapping[str, Any]]) -> None:
    """Type- and range-check each method's parameters (:func:`split_params`' result) before
    anything is built or measured: engines against their ``Params`` dataclass
    (:func:`flowkit.flow.check_engine_params`), OpenCV peers against theirs
    (:func:`flowkit.bench.peers.check_peer_params`); an engine given ``weights`` is also built once
    on the CPU, as ``flowkit extract`` builds its engine before any video, so that a checkpoint that
    is missing, of another kind or at odds with the other parameters is refused up front.

    Raises:
        BenchError: the first bad value, on one line naming the method and the parameter.
    """
    from ..flow import create_engine
    from ..flow.registry import check_engine_params

    for name, params in per_method.items():
        try:
            if name in PEERS:
                check_peer_params(name, dict(params))
            else:
                check_engine_params(name, dict(params))
                if params.get("weights") is not None:
                    # Loading the checkpoint is the only full check of it (its kind, its config
                    # against iterations=...); this engine is dropped, build_method makes the one
                    # that is measured.
                    create_engine(name, device="cpu", **params)
        except FlowkitError as exc:  # BenchError, EngineError, ParameterError
            raise BenchError(f"--param: {weights_as_param(str(exc), name)}") from None


def build_method(name: str, device: str = "cpu", params: Mapping[str, Any] | None = None,
                 backend: str = "auto", compile: bool = False) -> Method:
    """The :class:`Method` for a name of :func:`available_methods`; flowkit engines that have CuPy
    kernels compute with ``backend`` (``"auto"``, ``"torch"`` or ``"cupy"``), those with a
    ``compile`` option are compiled when ``compile``.

    Raises:
        PeerMissing: an OpenCV peer's function is not available.
        FlowkitError: the engine cannot be created (bad parameter, CUDA missing, ...).
    """
    params = dict(params or {})
    if name in PEERS:
        peer = create_peer(name, **params)
        return Method(name, peer, "cpu", peer.params, batch=1,
                      extra={"opencv_threads": peer.threads, "backend": "opencv"})
    from ..flow import create_engine
    from ..flow.registry import execution_options

    options = execution_options(name, backend, compile)
    try:
        engine = create_engine(name, device=device, **params, **options)
    except FlowkitError as exc:  # same error type, its hint in the benchmark's options
        exc.args = (weights_as_param(str(exc), name),) + exc.args[1:]
        raise
    record = dict(engine.describe()["params"])
    label = f"{name} (compiled)" if options.get("compile") else name
    if options.get("compile"):
        record["compile"] = True
    return Method(label, engine, str(engine.device), record, extra={"backend": engine.backend},
                  compile=bool(options.get("compile")))


def weights_as_param(message: str, name: str) -> str:
    """An engine's ``message`` in the benchmark's terms: engines tell how to pass a checkpoint
    with ``flowkit extract``'s option (`flowkit extract --method motionnet --weights FILE`), which
    the benchmark lacks; it takes the file as ``--param motionnet:weights=FILE``."""
    return re.sub(r"`?flowkit extract (?:--method \S+ )?--weights ([^\s`)]+)`?",
                  lambda m: f"`--param {name}:weights={m.group(1)}`", message)


# ----------------------------------------------------------------------------------------- datasets

def parse_size(text: str | None) -> tuple[int, int] | float | None:
    """``--size`` of a benchmark: ``"256x340"`` -> ``(256, 340)`` (H, W); ``"0.5"`` -> ``0.5`` (a
    scale); None -> None (:func:`flowkit.video.parse_size` with ``scale=True``)."""
    from ..video import parse_size as parse

    try:
        return parse(text, scale=True)
    except FlowkitError as exc:
        raise BenchError(str(exc)) from None


def load_dataset(dataset: str = "synthetic", path: str | os.PathLike | None = None,
                 size: tuple[int, int] | float | None = None, pairs: int | None = None,
                 seed: int = 0) -> tuple[list[FlowPair], dict[str, Any]]:
    """Ground-truth pairs for a benchmark, and a description of them for the results.

    Args:
        dataset: ``"synthetic"`` (generated at ``size``, default 128x160, ``pairs`` of them, default
            16, from ``seed``), ``"stereo"`` (the Motorcycle pair at one scale: ``size`` a scale in
            (0, 1] or HxW whose height picks the scale = H / 500; default 0.25; ``pairs`` must be
            None or 1), ``"middlebury"`` or ``"sintel"`` (folder ``path``; the first ``pairs`` pairs
            in name order, default all; ``size`` HxW or a scale resizes frames and scales the flow).
        path: dataset folder, for ``middlebury`` and ``sintel`` only.

    Returns:
        ``(pairs, info)``; ``info`` has ``dataset``, ``path``, ``seed``, ``size`` (``"HxW"`` or
        ``"mixed"``) and ``scale`` (stereo).
    """
    if dataset not in DATASETS:
        raise BenchError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    folder = dataset in ("middlebury", "sintel")
    if folder and path is None:
        raise BenchError(f"dataset {dataset} needs the dataset folder: --dataset {dataset} PATH")
    if not folder and path is not None:
        raise BenchError(f"dataset {dataset} is built in and takes no PATH (got {path})")
    if pairs is not None and pairs < 1:
        raise BenchError(f"pairs must be at least 1, got {pairs}")
    info: dict[str, Any] = {"dataset": dataset, "path": None if path is None else str(path)}
    if dataset == "synthetic":
        if isinstance(size, float):
            raise BenchError("synthetic pairs need --size HxW (e.g. 128x160), not a scale")
        items = synthetic_pairs(16 if pairs is None else pairs, size or (128, 160), seed=seed)
        info["seed"] = seed
    elif dataset == "stereo":
        if pairs not in (None, 1):
            raise BenchError("the stereo dataset is one pair per scale; leave --pairs out")
        scale = 0.25 if size is None else size if isinstance(size, float) else size[0] / 500
        if not 0 < scale <= 1:
            raise BenchError(f"stereo scale must be in (0, 1] (height up to 500), got {scale:g}")
        items = stereo_pairs([scale])
        info["scale"] = scale
    else:
        items = _load_folder(Path(path), dataset, pairs)
        if size is not None:
            items = [_resize_pair(p, size) for p in items]
    shapes = {p.frame0.shape[:2] for p in items}
    info["size"] = "x".join(map(str, shapes.pop())) if len(shapes) == 1 else "mixed"
    return items, info


def _load_folder(root: Path, layout: str, pairs: int | None) -> list[FlowPair]:
    if pairs is None:
        return load_flow_folder(root, layout)
    # Only the first ``pairs`` are read: a whole Sintel pass is several GB.
    from . import synthetic

    if not root.is_dir():
        raise BenchError(f"{root}: no such folder")
    jobs = synthetic._middlebury_jobs(root) if layout == "middlebury" else \
        synthetic._sintel_jobs(root, "clean")
    return [synthetic._load_pair(*job) for job in jobs[:pairs]]


def _resize_pair(pair: FlowPair, size: tuple[int, int] | float) -> FlowPair:
    """Frames resized (INTER_AREA down, INTER_LINEAR up), flow resized over valid pixels only and
    scaled per axis; valid where every contributing pixel was valid, occluded where any was."""
    import cv2

    h, w = pair.frame0.shape[:2]
    nh, nw = size if isinstance(size, tuple) else (max(1, round(h * size)), max(1, round(w * size)))
    interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
    rs = lambda a: cv2.resize(a, (nw, nh), interpolation=interp)
    valid = pair.valid.astype(np.float32)
    fraction = rs(valid)
    ok = fraction > 1 - 1e-4
    flow = np.stack([np.where(ok, rs(pair.flow[c] * valid) / np.maximum(fraction, 1e-6), 0.0)
                     for c in range(2)]).astype(np.float32)
    flow[0] *= nw / w
    flow[1] *= nh / h
    occluded = rs(pair.occluded.astype(np.float32)) > 1e-4
    return FlowPair(pair.name, rs(pair.frame0), rs(pair.frame1), flow, ok, occluded | ~ok)


# ------------------------------------------------------------------------------------ machine state

def versions() -> dict[str, str | None]:
    """flowkit, torch, OpenCV, numpy versions (None where not installed)."""
    import torch

    from ..version import __version__
    try:
        import cv2
        opencv = cv2.__version__
    except ImportError:
        opencv = None
    return {"flowkit": __version__, "torch": torch.__version__, "opencv": opencv,
            "numpy": np.__version__, "python": platform.python_version()}


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, thread counts, GPU name and the 1-minute load average when called
    (:func:`run_benchmark` adds ``loadavg_1m_end``, the load when it finished)."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(), "opencv_threads": None,
        "platform": platform.platform(), "gpu": None,
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    try:
        import cv2
        info["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------------ memory

def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _PeakMemory:
    """Peak memory of one method above a baseline (see the module docstring).

    Created before the method is built (that is the baseline); :meth:`sampling` wraps the timed
    passes; ``peak_mb`` is then the peak during the passes minus the baseline.
    """

    def __init__(self, device: str):
        gc.collect()
        self.cuda = str(device).startswith("cuda")
        self.peak_mb: float | None = None
        if self.cuda:
            import torch
            torch.cuda.synchronize()
            self.kind, self._base = "cuda-allocated", torch.cuda.memory_allocated()
        elif _rss_bytes() is not None:
            self.kind, self._base = "rss-sampled", _rss_bytes()
        else:
            self.kind, self._base = "rss-lifetime-max-growth", _max_rss_bytes()

    @contextlib.contextmanager
    def sampling(self):
        if self.cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()
            yield self
            peak = torch.cuda.max_memory_allocated()
        elif self.kind == "rss-sampled":
            box = [_rss_bytes() or 0]
            stop = threading.Event()

            def sample():
                while not stop.wait(_RSS_INTERVAL_S):
                    box[0] = max(box[0], _rss_bytes() or 0)
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            try:
                yield self
            finally:
                stop.set()
                thread.join()
            peak = max(box[0], _rss_bytes() or 0)
        else:
            yield self
            peak = _max_rss_bytes()
        self.peak_mb = max(0, peak - self._base) / 2**20


def _max_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    unit = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


# --------------------------------------------------------------------------------------- measuring

def run_benchmark(methods: Sequence[str | Method], pairs: Sequence[FlowPair], *, device: str = "cpu",
                  batch: int = 8, repeats: int = 3, params: Mapping[str, Any] | None = None,
                  dataset: Mapping[str, Any] | None = None, progress: Progress | None = None,
                  backend: str = "auto", compile: str = "off") -> list[dict[str, Any]]:
    """Measure every method on ``pairs`` (see the module docstring for what is measured).

    Args:
        methods: names (:func:`available_methods`) or ready :class:`Method` objects, run in order.
        pairs: ground truth, e.g. from :func:`load_dataset`.
        device: ``"cpu"`` or ``"cuda"`` for flowkit engines (OpenCV peers always run on the CPU).
        batch: pairs per engine call.
        repeats: timed passes over the dataset.
        params: parameters, as :func:`split_params` distributes them.
        dataset: description recorded in each result (``info`` of :func:`load_dataset`).
        progress: a :class:`~flowkit.progress.Progress` (one task: the method and phase running).
        backend: numerics of the engines that have CuPy kernels (recorded per result).
        compile: ``"off"``, ``"on"`` or ``"both"`` (:func:`compile_variants`).

    Returns:
        one dict per method, in order (keys: see :func:`result_keys`).
    """
    if not pairs:
        raise BenchError("the dataset has no pairs")
    if batch < 1 or repeats < 1:
        raise BenchError(f"batch and repeats must be at least 1, got batch={batch}, repeats={repeats}")
    methods = _expand(methods)
    names = [m for m in methods if isinstance(m, str)]
    per_params = split_params(params, names)
    check_method_params(per_params)
    runs = [(m, c) for m in methods
            for c in (compile_variants(m, compile) if isinstance(m, str) else [m.compile])]
    dataset = dict(dataset or {})
    shapes = {p.frame0.shape[:2] for p in pairs}
    dataset.setdefault("size", "x".join(map(str, next(iter(shapes)))) if len(shapes) == 1 else "mixed")
    common = {"dataset": dataset.get("dataset", "custom"), "size": dataset["size"],
              "pairs": len(pairs), "repeats": repeats, "versions": versions(),
              "machine": machine_info(device), "dataset_info": dataset}
    results = []
    bar = (progress or Progress()).start("benchmark", total=len(runs) * (1 + repeats))

    def advance(description: str, steps: int) -> None:
        bar.update(completed=bar.completed + steps, description=description)
    try:
        for method, compiled in runs:
            label = (method if not compiled else f"{method} (compiled)") if isinstance(
                method, str) else method.name
            memory = _PeakMemory(method.device if isinstance(method, Method) else
                                 "cpu" if method in PEERS else device)
            try:
                m = method if isinstance(method, Method) else build_method(
                    method, device, per_params.get(method), backend, compiled)
            except FlowkitError as exc:  # PeerMissing, an engine without CUDA, ...
                status = _build_status(method, per_params.get(method), exc)
                results.append(_missing(label, device, batch, common, str(exc), status))
                advance(label, 1 + repeats)
                continue
            steps = [0]

            def step(phase: str, n: int, label=label):
                steps[0] += n
                advance(f"{label} {phase}", n)
            try:
                results.append(_measure(m, pairs, batch, repeats, common, memory, step))
            except FlowkitError as exc:  # e.g. an engine that refuses to run without weights
                results.append(_missing(label, m.device, m.batch or batch, common, str(exc), "failed"))
                advance(label, 1 + repeats - steps[0])
    finally:
        bar.close()
    # The load at the end too: a busy machine during the run makes every timing low.
    end_load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    for r in results:
        r["machine"]["loadavg_1m_end"] = end_load
    return results


def _expand(methods: Sequence[str | Method]) -> list[str | Method]:
    """``methods`` with every name resolved (:func:`resolve_methods`: ``"all"`` expanded, a name
    given twice run once), :class:`Method` objects kept in place."""
    out: list[str | Method] = []
    for m in methods:
        if isinstance(m, Method):
            out.append(m)
        else:
            out += [n for n in resolve_methods([m]) if n not in out]
    return out


def collect(methods: str = DEFAULT_METHODS, device: str = "cpu", size: str | None = None,
            batch: int = 8, dataset: str = "synthetic", path: str | None = None,
            pairs: int | None = None, repeats: int = 3, seed: int = 0,
            params: Mapping[str, Any] | None = None, threads: int | None = None,
            progress: Progress | None = None, backend: str = "auto",
            compile: str = "off") -> list[dict[str, Any]]:
    """Everything ``flowkit benchmark`` does except the output, from its options (strings where the
    command line has strings: ``methods="tvl1,opencv-tvl1"``, ``size="256x340"``) to the result
    list of :func:`run_benchmark`; ``threads`` sets torch's and OpenCV's threads for the run."""
    names = resolve_methods(methods)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available (torch.cuda.is_available() "
                             "is False); use --device cpu")
    elif device != "cpu":
        raise BenchError(f"--device must be cpu or cuda[:N], got {device!r}")
    if pairs is None and dataset == "synthetic":
        pairs = DEFAULT_SYNTHETIC_PAIRS
    items, info = load_dataset(dataset, path, parse_size(size), pairs, seed)
    import cv2
    import torch

    saved = torch.get_num_threads(), cv2.getNumThreads()
    if threads is not None:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    try:
        return run_benchmark(names, items, device=device, batch=batch, repeats=repeats,
                             params=params, dataset=info, progress=progress, backend=backend,
                             compile=compile)
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def result_keys() -> list[str]:
    """The keys of every result dict."""
    return ["method", "status", "reason", "device", "backend", "compile", "dataset", "size", "batch",
            "pairs", "repeats",
            "pairs_per_s", "median_pass_s", "min_pass_s", "max_pass_s", "warmup_s", "peak_mem_mb",
            "peak_mem_kind", *METRICS, "params", "opencv_threads", "versions", "machine",
            "dataset_info"]


def _measure(m: Method, pairs: Sequence[FlowPair], batch: int, repeats: int, common: dict,
             memory: _PeakMemory, advance: Callable) -> dict[str, Any]:
    size = m.batch or batch
    batches = _batches(pairs, size)
    # One call per distinct batch shape: a compiled method compiles (and any method allocates) per
    # shape, and a cost first met in a timed pass would lower pairs/s far below its steady rate.
    warm, shapes = [], set()
    for f0, f1 in batches:
        if tuple(f0.shape) not in shapes:
            shapes.add(tuple(f0.shape))
            warm.append((f0, f1))
    if m.compile:
        import torch

        # Start from an empty compile cache: warm-up then always includes the compilation, and
        # shapes compiled for earlier runs in this process do not use up dynamo's recompile limit
        # (past it, dynamo silently runs the function eagerly).
        torch._dynamo.reset()
    advance("warm-up", 0)
    start = time.perf_counter()
    for f0, f1 in warm:
        _host(m.fn(f0, f1))
    warmup_s = time.perf_counter() - start

    times: list[float] = []
    flows: list[np.ndarray] = []
    with memory.sampling():
        for r in range(repeats):
            advance(f"pass {r + 1}/{repeats}", 1)
            flows = []
            start = time.perf_counter()
            for f0, f1 in batches:
                flows.append(_host(m.fn(f0, f1)))
            times.append(time.perf_counter() - start)
    advance("done", 1)
    estimates = [f for chunk in flows for f in chunk]
    _check_flows(m.name, estimates, pairs)
    median = statistics.median(times)
    result = {
        "method": m.name, "status": "ok", "reason": None, "device": m.device, **common,
        "batch": size, "pairs_per_s": len(pairs) / median if median > 0 else None,
        "median_pass_s": median, "min_pass_s": min(times), "max_pass_s": max(times),
        "warmup_s": warmup_s, "peak_mem_mb": memory.peak_mb, "peak_mem_kind": memory.kind,
        **accuracy(estimates, pairs), "params": m.params, "opencv_threads": None,
        "compile": m.compile, **m.extra,
    }
    return _clean({k: result.get(k) for k in result_keys()})


def accuracy(flows: Sequence, pairs: Sequence[FlowPair]) -> dict[str, float | None]:
    """Mean over pairs of :func:`flow_metrics` (a pair with no pixel under a metric's mask is left
    out of that metric); None where no pair counts."""
    sums = {k: [] for k in METRICS}
    for flow, pair in zip(flows, pairs):
        metrics = flow_metrics(flow, pair.flow, pair.valid, pair.occluded)
        has_valid = bool(pair.valid.any())
        has_noc = bool((pair.valid & ~pair.occluded).any())
        for key, value in metrics.items():
            if has_noc if key == "epe_noc" else has_valid:
                sums[key].append(value)
    return {k: float(np.mean(v)) if v else None for k, v in sums.items()}


def _build_status(method: str, params: Mapping[str, Any] | None,
                  exc: FlowkitError) -> str:
    """The status of a method that could not be built: ``"missing"`` when what it needs is
    absent here (an OpenCV function, CUDA, CuPy), ``"failed"`` when the method itself refused:
    OpenCV refusing a peer's solver, or an engine that cannot be built on the CPU with torch
    either (an engine without its trained weights, a checkpoint that stopped loading)."""
    if isinstance(exc, PeerError):
        return "failed"
    if method in PEERS:
        return "missing"
    from ..flow import create_engine

    try:  # built with the execution defaults, the device and the backend are out of the question
        create_engine(method, device="cpu", **dict(params or {}))
    except FlowkitError:
        return "failed"
    return "missing"


def _missing(name: str, device: str, batch: int, common: dict, reason: str,
             status: str = "missing") -> dict[str, Any]:
    result = {"method": name, "status": status, "reason": reason,
              "device": "cpu" if name in PEERS else device, **common,
              "batch": 1 if name in PEERS else batch}
    return _clean({k: result.get(k) for k in result_keys()})


def _batches(pairs: Sequence[FlowPair], size: int) -> list[tuple[Any, Any]]:
    """Consecutive pairs, ``size`` at a time, as uint8 ``(B, 3, H, W)`` CPU tensors; a batch also
    ends where the frame size changes."""
    import torch

    groups: list[list[FlowPair]] = []
    for p in pairs:
        if groups and len(groups[-1]) < size and groups[-1][0].frame0.shape == p.frame0.shape:
            groups[-1].append(p)
        else:
            groups.append([p])
    as_t = lambda frames: torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    return [(as_t([p.frame0 for p in g]), as_t([p.frame1 for p in g])) for g in groups]


def _host(flow) -> np.ndarray:
    if hasattr(flow, "detach"):
        return flow.detach().cpu().numpy()
    return np.asarray(flow)


def _check_flows(name: str, flows: Sequence[np.ndarray], pairs: Sequence[FlowPair]) -> None:
    if len(flows) != len(pairs):
        raise BenchError(f"{name} returned {len(flows)} flows for {len(pairs)} pairs")
    for flow, pair in zip(flows, pairs):
        if flow.shape != pair.flow.shape:
            raise BenchError(f"{name} returned flow of shape {flow.shape} for pair {pair.name}, "
                             f"expected {pair.flow.shape}")


def _clean(value):
    """JSON-safe: non-finite floats -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
