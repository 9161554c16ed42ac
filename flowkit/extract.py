"""Video folder -> motion engine -> store: the extraction pipeline behind ``flowkit extract``.

Frames are streamed from the decoders in chunks; consecutive-frame pairs, from as many videos as it
takes, fill batches of ``batch`` pairs, one engine call each (:mod:`flowkit.feed`: decoding runs
ahead in threads, a thread writes the store behind). RGB frames and flow are appended to each
video's partial file, which the store renames only once the whole video is written. So memory is
bounded by a few chunks whatever the videos' lengths, a crash loses at most the videos in progress,
and rerunning the same command skips every finished video (resume).

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
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch

from . import feed
from .errors import FlowkitError
from .feed import VideoResult
from .flow import create_engine, engine_class
from .flow.base import FlowEngine
from .labels import VideoItem
from .progress import Progress, StopFlag
from .shards import ShardPlan, plan_shards
from .store import FlowStore, StoreError, flow_codec, rgb_codec
from .video import output_size

# Pairs per engine call when --batch is not given: CPU engines gain nothing from larger batches
# (and TV-L1 drops finished pairs), a GPU needs many pairs per launch to be busy.
DEFAULT_BATCH = {"cpu": 8, "cuda": 64}


@dataclass
class ExtractConfig(feed.FeedOptions):
    """What to compute and how to store it; every field maps to a ``flowkit extract`` option.

    Decoding, batching and storing are the fields of :class:`flowkit.feed.FeedOptions`; these add
    the engine (parameters, device, backend, compile) and the worker processes. ``batch`` None is
    8 pairs on the CPU, 64 on CUDA."""
    engine_params: dict = field(default_factory=dict)
    device: str = "cpu"
    backend: str = "auto"
    compile: bool = False
    batch: int | None = None
    workers: int = 1

    def __post_init__(self):
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
        if self.workers < 1:
            raise FlowkitError(f"workers must be >= 1, got {self.workers}")


@dataclass
class ExtractSummary:
    store: str
    method: str
    results: list[VideoResult]
    seconds: float
    notes: list[str] = field(default_factory=list)
    backend: str = "torch"
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
        return cls(first.store, first.method, results, max(p.seconds for p in parts),
                   notes=[n for p in parts for n in p.notes], backend=first.backend, ranks=ranks)

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
                "pairs_per_s": round(self.pairs / self.seconds, 3) if self.seconds > 0 else None,
                "notes": self.notes,
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
    return create_engine(config.method, device=_device_for_rank(config.device), **params)


def finished_keys(store_path: str | os.PathLike, method: str,
                  items: Sequence[VideoItem]) -> set[str]:
    """Keys of ``items`` the store at ``store_path`` already holds with ``flow/<method>`` (empty
    when there is no store yet)."""
    from pathlib import Path

    from .store.layout import MANIFEST

    if not (Path(store_path) / MANIFEST).is_file():
        return set()
    store = FlowStore(store_path)
    return {item.key for item in items
            if (meta := _finished_meta(store, item.key)) is not None and method in meta["flows"]}


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
                    on_pairs=on_pairs)


# Worker-process state for workers > 1 (one engine per process, built once).
_worker: dict = {}


def _worker_init(store_path: str, config: ExtractConfig, threads: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides and terminates the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _worker["store"] = FlowStore(store_path, "a")
    _worker["engine"] = build_engine(config)
    _worker["config"] = config


def _worker_run(item: VideoItem) -> VideoResult:
    (result,) = extract_items([item], _worker["store"], _worker["engine"], _worker["config"],
                              workers=2)
    return result


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
            per failed video); silent by default.
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
    if config.workers > 1:
        engine = None
    store = FlowStore(store_path, "a", classes=list(classes) if classes is not None else None)
    store.remove_partials()
    todo, results, metas = [], [], {}
    for item in items:
        meta = metas[item.key] = _finished_meta(store, item.key)
        if meta is not None and config.method in meta["flows"]:
            results.append(VideoResult(item.key, str(item.path), "skipped",
                                       reason=f"already in the store with flow/{config.method}"))
        else:
            todo.append(item)
    videos = progress.start("videos", total=len(items), completed=len(results))
    pairs = progress.start("frame pairs")
    for result in _run(todo, store, engine, config, pairs.advance, metas, stop):
        results.append(result)
        videos.advance()
        if result.status == "failed":
            progress.log(f"failed {result.reason}")
    videos.close()
    pairs.close()
    order = {item.key: i for i, item in enumerate(items)}
    results.sort(key=lambda r: order[r.key])
    summary = ExtractSummary(str(store.path), config.method, results, time.perf_counter() - started,
                             backend=backend)
    summary.notes = _size_notes(results, config)
    return summary


def _run(todo: list[VideoItem], store: FlowStore, engine: FlowEngine | None, config: ExtractConfig,
         on_pairs, metas: dict, stop: StopFlag) -> Iterable[VideoResult]:
    if config.workers == 1:
        yield from extract_items(todo, store, engine, config, on_pairs, metas=metas, stop=stop)
        return
    threads = max(1, torch.get_num_threads() // config.workers)
    # spawn: a forked child would inherit torch's thread pools and open HDF5 handles.
    ctx = mp.get_context("spawn")
    with ctx.Pool(config.workers, initializer=_worker_init,
                  initargs=(str(store.path), config, threads)) as pool:
        for result in pool.imap_unordered(_worker_run, todo):
            stop.check()
            if result.pairs:
                on_pairs(result.pairs)
            yield result


def _size_notes(results: list[VideoResult], config: ExtractConfig) -> list[str]:
    """One line per video stored at a size different from the majority (only without ``size``)."""
    sizes = [r.size for r in results if r.status == "done" and r.size]
    if config.size is not None or not sizes:
        return []
    common = max(set(sizes), key=sizes.count)
    return [f"{r.source}: stored at {r.size[0]}x{r.size[1]}, unlike most videos "
            f"({common[0]}x{common[1]}); pass --size to store all videos at one size"
            for r in results if r.status == "done" and r.size and r.size != common]
