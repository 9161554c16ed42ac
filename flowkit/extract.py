"""Video folder -> motion engine -> store: the extraction pipeline behind ``flowkit extract``.

Frames are streamed from the decoders in chunks; consecutive-frame pairs, from as many videos as it
takes, fill batches of ``batch`` pairs, one engine call each (:mod:`flowkit.feed`: decoding runs
ahead in threads, a thread writes the store behind). RGB frames and flow are appended to each
video's partial file, which the store renames only once the whole video is written. So memory is
bounded by a few chunks whatever the videos' lengths, a crash loses at most the videos in progress,
and rerunning the same command skips every finished video (resume). With ``backward`` the engine
computes each pair from frame t+1 to frame t (:class:`flowkit.flow.Backward`) into
``flow/<method>_backward``, beside the forward flow of an earlier run.

One bad video never stops a run: its error becomes one line in the summary. Sharding (``RANK`` /
``WORLD_SIZE`` as set by torchrun, or ``shard=(i, n)``) splits the video list into shares balanced
by expected frame pairs (:mod:`flowkit.shards`); all shards write into the same store directory, so
there is nothing to merge. :meth:`ExtractSummary.combine` joins the ranks' summaries into one.
"""
from __future__ import annotations

import dataclasses
import inspect
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import feed
from .errors import FlowkitError, StoreWriteError
from .feed import VideoResult
from .flow import Backward, check_reversible, create_engine, engine_class
from .flow.base import FlowEngine
from .labels import VideoItem
from .progress import Progress, StopFlag
from .shards import ShardPlan, plan_shards
from .store import MANIFEST, FlowStore, StoreError, flow_codec, rgb_codec
from .store.compat import Request, compare_with_store
from .video import output_size

# Pairs per engine call when --batch is not given: CPU engines gain nothing from larger batches
# (and TV-L1 drops finished pairs), a GPU needs many pairs per launch to be busy.
DEFAULT_BATCH = {"cpu": 8, "cuda": 64}
# Memory for the engine's batches, all worker processes together, unless --max-memory says
# otherwise: 1080p TV-L1 then runs 6 pairs per call in one process (about 0.5 GB per pair,
# benchmarks/results/reliability.md).
DEFAULT_MAX_MEMORY = 4 << 30


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a Slurm or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(device: str, videos: int) -> int:
    """Worker processes when ``workers`` is None: one per usable core on the CPU (each with one
    torch thread: a process with a thread per core slows down far more when another process shares
    the machine, benchmarks/results/reliability.md and distributed.md), shared among torchrun's
    ranks on this node, at most one per video; one on CUDA."""
    if str(device).startswith("cuda"):
        return 1
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))  # torchrun's per node
    return max(1, min(usable_cores() // local_ranks, videos))


@dataclass
class ExtractConfig(feed.FeedOptions):
    """What to compute and how to store it; every field maps to a ``flowkit extract`` option.

    Decoding, batching and storing are the fields of :class:`flowkit.feed.FeedOptions`; these add
    the engine (parameters, device, backend, compile) and the worker processes. ``backward``
    (from FeedOptions) wraps the engine in :class:`~flowkit.flow.Backward`, which writes
    ``flow/<method>_backward`` (:attr:`flow_name`); engines that read pairs as clips refuse it
    (:class:`~flowkit.errors.EngineError`). ``batch`` None is
    8 pairs on the CPU, 64 on CUDA; fewer for large frames, so that the engine's batches of all
    workers together stay under ``max_memory`` bytes (None: no bound). ``workers`` None: one
    process per usable core (:func:`default_workers`)."""
    engine_params: dict = field(default_factory=dict)
    device: str = "cpu"
    backend: str = "auto"
    compile: bool = False
    batch: int | None = None
    workers: int | None = 1
    #: keys to recompute even if finished (e.g. damaged); the old file's datasets that still decode
    #: and fit are kept beside the new flow
    redo: tuple[str, ...] = ()
    #: recompute videos whose stored options (size, step, codecs, engine parameters) differ from
    #: this run's, replacing them; without it such a run is refused before computing anything
    redo_mismatched: bool = False
    max_memory: int | None = DEFAULT_MAX_MEMORY

    def __post_init__(self):
        if self.backward:
            check_reversible(engine_class(self.method))  # EngineError, a FlowkitError
        flow_codec(self.flow_codec)  # StoreError (a FlowkitError) for an unknown codec or value
        rgb_codec(self.rgb_codec)
        try:
            output_size(64, 64, self.size)
        except (TypeError, ValueError, FlowkitError) as exc:
            raise FlowkitError(f"invalid size {self.size!r}: {exc}") from None
        if self.batch is None:
            self.batch = DEFAULT_BATCH["cuda" if str(self.device).startswith("cuda") else "cpu"]
        if self.batch < 1:
            raise FlowkitError(f"batch must be >= 1, got {self.batch}")
        if self.prefetch < 0:
            raise FlowkitError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.step < 1:
            raise FlowkitError(f"step must be >= 1, got {self.step}")
        if self.workers is not None and self.workers < 1:
            raise FlowkitError(f"workers must be >= 1, got {self.workers}")
        if self.max_memory is not None and self.max_memory <= 0:
            raise FlowkitError(f"max_memory must be a positive number of bytes, got {self.max_memory}")


@dataclass
class ExtractSummary:
    """One run's outcome. ``method`` names the flow written, ``flow/<method>`` (``tvl1``,
    ``tvl1_backward``)."""
    store: str
    method: str
    results: list[VideoResult]
    seconds: float
    notes: list[str] = field(default_factory=list)
    backend: str = "torch"
    stopped: str = ""       # why the run ended early (the store refused data), "" when it did not
    not_started: int = 0    # videos of this shard never started because of that
    #: seconds before the first video started (engine, store check, scan of the store): not in
    #: ``pairs_per_s``, which covers the same window as the progress bar's rate
    setup_seconds: float = 0.0
    # One {"rank", "done", "skipped", "failed", "pairs", "seconds"} per rank of a combined summary.
    ranks: list[dict] = field(default_factory=list)

    @classmethod
    def combine(cls, parts: Sequence["ExtractSummary"]) -> "ExtractSummary":
        """One summary of every rank's (in rank order): all videos, the longest rank's time, every
        note, and a line per rank in ``ranks``. A failed video's reason names its rank."""
        results, ranks = [], []
        for r, part in enumerate(parts):
            for res in part.results:
                if res.status == "failed" and len(parts) > 1:
                    res = dataclasses.replace(res, reason=f"[rank {r}] {res.reason}")
                results.append(res)
            ranks.append({"rank": r, "done": part.count("done"), "skipped": part.count("skipped"),
                          "failed": part.count("failed"), "pairs": part.pairs,
                          "seconds": round(part.seconds, 3)})
        first = parts[0]
        stopped = sorted({p.stopped for p in parts if p.stopped})
        return cls(first.store, first.method, results, max(p.seconds for p in parts),
                   notes=[n for p in parts for n in p.notes], backend=first.backend, ranks=ranks,
                   stopped="; ".join(stopped), not_started=sum(p.not_started for p in parts),
                   setup_seconds=max(p.setup_seconds for p in parts))

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def pairs(self) -> int:
        return sum(r.pairs for r in self.results if r.status == "done")

    def to_dict(self) -> dict:
        return {"store": self.store, "method": self.method, "backend": self.backend,
                "seconds": round(self.seconds, 3),
                "done": self.count("done"), "skipped": self.count("skipped"),
                "failed": self.count("failed"), "pairs": self.pairs,
                "setup_seconds": round(self.setup_seconds, 3),
                "pairs_per_s": (round(self.pairs / (self.seconds - self.setup_seconds), 3)
                                if self.seconds > self.setup_seconds else None),
                "notes": self.notes, "stopped": self.stopped, "not_started": self.not_started,
                **({"ranks": self.ranks} if self.ranks else {}),
                "videos": [asdict(r) for r in self.results]}


def shard_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment, ``(0, 1)`` when not set."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as exc:
        raise FlowkitError(f"RANK/WORLD_SIZE must be integers: {exc}") from None


def select_shard(items: Sequence[VideoItem], shard: tuple[int, int]) -> list[VideoItem]:
    """Every ``n``-th item starting at ``i``: shards are disjoint and together cover ``items``."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise FlowkitError(f"invalid shard {i}/{n}: need 0 <= index < count")
    return list(items[i::n])


def _device_for_rank(device: str) -> str:
    """With several GPUs and torchrun, each local rank takes its own device."""
    from .distributed import local_device
    return local_device(device)


def shard_plan(items: Sequence[VideoItem], config: ExtractConfig, count: int) -> ShardPlan:
    """The balanced plan of ``items`` over ``count`` shards for this config's step and max_frames
    (collective under torchrun: every rank must call it)."""
    return plan_shards(items, count, step=config.step, max_frames=config.max_frames)


def build_engine(config: ExtractConfig) -> FlowEngine:
    params = dict(config.engine_params)
    accepted = inspect.signature(engine_class(config.method)).parameters
    # compile is an execution option of engines that have one (tvl1); others ignore it.
    if config.compile and "compile" in accepted:
        params["compile"] = True
    if "backend" in accepted:
        params["backend"] = config.backend
    elif config.backend not in ("auto", "torch"):
        raise FlowkitError(f"engine {config.method!r} has no CuPy kernels; use --backend torch "
                           "(or auto)")
    engine = create_engine(config.method, device=_device_for_rank(config.device), **params)
    return Backward(engine) if config.backward else engine


def finished_keys(store_path: str | os.PathLike, flow_name: str,
                  items: Sequence[VideoItem]) -> set[str]:
    """Keys of ``items`` the store at ``store_path`` already holds with ``flow/<flow_name>`` (empty
    when there is no store yet)."""
    from pathlib import Path

    from .store.layout import MANIFEST

    if not (Path(store_path) / MANIFEST).is_file():
        return set()
    metas = FlowStore(store_path).metas([item.key for item in items])
    return {key for key, meta in metas.items() if flow_name in meta["flows"]}


def _finished_meta(store: FlowStore, key: str) -> dict | None:
    """The finished video's metadata, or None when there is none or it is unreadable (then the
    video is simply redone and the damaged file replaced)."""
    if not store.is_complete(key):
        return None
    try:
        return store.meta(key)
    except (StoreError, OSError):
        return None


def extract_items(items: Sequence[VideoItem], store: FlowStore, engine: FlowEngine,
                  config: ExtractConfig, on_pairs=None, workers: int = 1,
                  metas: dict[str, dict | None] | None = None,
                  stop: StopFlag | None = None) -> Iterable[VideoResult]:
    """One :class:`VideoResult` per item (completion order): the feed of :mod:`flowkit.feed` with
    this run's options and stop flag. ``metas``: the items' finished metadata when already read."""
    def finished_meta(key: str) -> dict | None:
        return metas[key] if metas is not None and key in metas else _finished_meta(store, key)

    # One decoder thread per video when several processes share the cores, ffmpeg's choice else.
    options = dataclasses.replace(config, decode_threads=1 if workers > 1 else 0)
    return feed.run(items, store, engine, options,
                    finished_meta=finished_meta, should_stop=(stop or StopFlag()).check,
                    on_pairs=on_pairs, redo=frozenset(config.redo))


# Worker-process state for workers > 1 (one engine per process, built once).
_worker: dict = {}


def _worker_init(store_path: str, config: ExtractConfig, threads: int, parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides and terminates the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    torch.set_num_threads(threads)
    _worker["store"] = FlowStore(store_path, "a")
    _worker["engine"] = build_engine(config)
    _worker["config"] = config


def _worker_run(item: VideoItem) -> tuple[list[VideoResult], StoreWriteError | None]:
    """The item's result, and the store's refusal (disk full) that ended it, if any."""
    results = []
    try:
        for result in extract_items([item], _worker["store"], _worker["engine"], _worker["config"],
                                    workers=2):
            results.append(result)
    except StoreWriteError as exc:
        return results, exc  # pickles by its message (errno is not needed past here)
    return results, None


def die_with_parent(parent: int) -> None:
    """Make this worker process end when its parent, the run with pid ``parent``, does (never
    write into a store after the run that started it is gone): Linux's parent-death signal, and a
    watchdog thread elsewhere. A worker whose parent is already gone when it gets here ends at
    once: a worker slow to start (importing torch on a loaded machine takes seconds) may outlive a
    ``kill -9`` of its parent, and asking for the parent's pid only now would give the reaper's,
    under which the orphan went on extracting videos from the queue it had been handed."""
    armed = False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # gone before the signal was armed: nobody will collect our work
        os._exit(143)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(143)

    threading.Thread(target=watch, name="flowkit-parent-watchdog", daemon=True).start()


def extract(items: Sequence[VideoItem], store_path: str | os.PathLike, config: ExtractConfig, *,
            classes: Sequence[str] | None = None, shard: tuple[int, int] | None = None,
            progress: Progress | None = None, stop: StopFlag | None = None) -> ExtractSummary:
    """Extract ``items`` into the store at ``store_path`` (created if missing), resuming.

    Args:
        items: videos to process (e.g. from :func:`flowkit.labels.scan_videos`).
        store_path: store directory.
        config: :class:`ExtractConfig`.
        classes: class names recorded in the store (label ids index into them).
        shard: ``(index, count)``; defaults to torchrun's ``RANK`` / ``WORLD_SIZE``.
        progress: :class:`~flowkit.progress.Progress` (tasks "videos" and "frame pairs", a line
            per failed video, and first a bar over finished videos new to the store's index);
            silent by default.
        stop: a :class:`~flowkit.progress.StopFlag`; once set, the run stops at the next chunk,
            discards the videos in flight cleanly and raises :class:`~flowkit.progress.Stopped`.

    Returns:
        :class:`ExtractSummary` with one :class:`VideoResult` per item of this shard.
    """
    started = time.perf_counter()
    progress = progress or Progress()
    stop = stop or StopFlag()
    index, count = shard or shard_from_env()
    select_shard(items, (index, count))  # FlowkitError for an invalid shard
    if count > 1:
        items = shard_plan(items, config, count).share(index)
    # Built before the store exists, so bad parameters fail once and leave nothing behind; worker
    # processes build their own.
    engine = build_engine(config)
    backend = engine.backend
    unknown = sorted(set(config.redo) - {item.key for item in items})
    if unknown and count == 1:
        raise FlowkitError(f"--redo {unknown[0]}: no video with that key in this run (keys are "
                           f"CLASS/VIDEO, as `flowkit info` lists them)")
    workers = config.workers or default_workers(config.device, len(items))
    known, mismatched = check_store_options(store_path, items, config, engine, progress)
    config = dataclasses.replace(config, workers=workers, redo=tuple(sorted(
        set(config.redo) | mismatched)), max_memory=(
        None if config.max_memory is None else config.max_memory // workers))
    if config.workers > 1:
        engine = None
    store = FlowStore(store_path, "a", classes=list(classes) if classes is not None else None)
    store.remove_partials()
    todo, results, metas = [], [], {}
    for item in items:
        meta = metas[item.key] = None if item.key in config.redo else known.get(item.key)
        if meta is not None and config.flow_name in meta["flows"]:
            results.append(VideoResult(item.key, str(item.path), "skipped",
                                       reason=f"already in the store with flow/{config.flow_name}"))
        else:
            todo.append(item)
    setup = time.perf_counter() - started
    videos = progress.start("videos", total=len(items), completed=len(results))
    pairs = progress.start("frame pairs")
    stopped = ""
    try:
        for result in _run(todo, store, engine, config, pairs.advance, metas, stop):
            results.append(result)
            videos.advance()
            if result.status == "failed":
                progress.log(f"failed {result.reason}")
            elif result.status == "skipped":
                progress.log(f"skipped {result.key}: {result.reason}")
    except StoreWriteError as exc:
        stopped = str(exc)
        progress.log(f"stopping: {stopped}")
    videos.close()
    pairs.close()
    order = {item.key: i for i, item in enumerate(items)}
    results.sort(key=lambda r: order[r.key])
    summary = ExtractSummary(str(store.path), config.flow_name, results,
                             time.perf_counter() - started, backend=backend, stopped=stopped,
                             setup_seconds=setup,
                             not_started=len(items) - len(results) if stopped else 0)
    summary.notes = (_size_notes(results, config) + _memory_notes(results, config)
                     + _redo_notes(results, config))
    return summary


def store_request(config: ExtractConfig, engine: FlowEngine) -> Request:
    """What this run writes into a store, for :func:`flowkit.store.compat.compare_with_store`."""
    params = engine_class(config.method).Params
    return Request(method=config.flow_name, engine=engine.describe(), size=config.size,
                   step=config.step, rgb=config.rgb, rgb_codec=rgb_codec(config.rgb_codec),
                   flow_codec=flow_codec(config.flow_codec),
                   param_names=tuple(f.name for f in dataclasses.fields(params)) if params else ())


def check_store_options(store_path, items: Sequence[VideoItem], config: ExtractConfig,
                        engine: FlowEngine, progress: Progress | None = None
                        ) -> tuple[dict[str, dict], set[str]]:
    """Before anything is computed or written: does this run fit the existing store?

    Returns the finished videos' metadata among ``items`` (``{key: meta}``) and the keys stored
    with other options, to recompute. Raises :class:`StoreError` naming the options that would
    match the store when they differ and ``config.redo_mismatched`` is off. A store that does not
    exist yet fits anything. ``progress``: a bar over finished videos new to the store's index."""
    if not (Path(store_path) / MANIFEST).is_file():
        return {}, set()
    comparison = compare_with_store(FlowStore(store_path), [item.key for item in items],
                                    store_request(config, engine), progress)
    keys = {item.key for item in items}
    known = {k: m for k, m in comparison.metas.items() if k in keys}
    if comparison.ok:
        return known, set()
    if not config.redo_mismatched:
        raise StoreError(comparison.message())
    return known, comparison.keys() & keys


def _redo_notes(results: list[VideoResult], config: ExtractConfig) -> list[str]:
    """How many videos --redo / --redo-mismatched replaced (each video's line says what of its old
    file was dropped: datasets that no longer decode or no longer fit its frames)."""
    redone = [r.key for r in results if r.status == "done" and r.key in config.redo]
    if not redone:
        return []
    return [f"{len(redone)} videos recomputed and replaced (--redo / --redo-mismatched)"]


def _run(todo: list[VideoItem], store: FlowStore, engine: FlowEngine | None, config: ExtractConfig,
         on_pairs, metas: dict, stop: StopFlag) -> Iterable[VideoResult]:
    if config.workers == 1:
        yield from extract_items(todo, store, engine, config, on_pairs, metas=metas, stop=stop)
        return
    threads = max(1, torch.get_num_threads() // config.workers)
    # spawn: a forked child would inherit torch's thread pools and open HDF5 handles.
    ctx = mp.get_context("spawn")
    with ctx.Pool(config.workers, initializer=_worker_init,
                  initargs=(str(store.path), config, threads, os.getpid())) as pool:
        outcomes = pool.imap_unordered(_worker_run, todo)
        for _ in todo:
            while True:  # poll, so that a stop request is seen even while no video finishes
                stop.check()
                try:
                    results, fatal = outcomes.next(timeout=0.2)
                    break
                except mp.TimeoutError:
                    continue
            for result in results:
                if result.pairs:
                    on_pairs(result.pairs)
                yield result
            if fatal is not None:
                raise fatal


def _memory_notes(results: list[VideoResult], config: ExtractConfig) -> list[str]:
    """One line per frame size whose batches were cut to stay under ``max_memory``."""
    cls = engine_class(config.method)
    notes = []
    for h, w in sorted({r.size for r in results if r.status == "done" and r.size}):
        limit = feed.batch_limit(cls, config, (h, w))
        if limit < config.batch:
            notes.append(f"{h}x{w} frames: {limit} pairs per engine call instead of {config.batch} "
                         f"(about {cls.memory_per_pair(h, w) / 2**30:.2f} GB per pair; "
                         f"--max-memory allows {config.max_memory / 2**30:.2f} GB per process)")
    return notes


def _size_notes(results: list[VideoResult], config: ExtractConfig) -> list[str]:
    """One line per video stored at a size different from the majority (only without ``size``)."""
    sizes = [r.size for r in results if r.status == "done" and r.size]
    if config.size is not None or not sizes:
        return []
    common = max(set(sizes), key=sizes.count)
    return [f"{r.source}: stored at {r.size[0]}x{r.size[1]}, unlike most videos "
            f"({common[0]}x{common[1]}); pass --size to store all videos at one size"
            for r in results if r.status == "done" and r.size and r.size != common]
