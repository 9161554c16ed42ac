"""Video folder -> motion engine -> store: the extraction pipeline behind ``flowkit extract``.

Frames are streamed from the decoders in chunks; consecutive-frame pairs, from as many videos as it
takes, fill batches of ``batch`` pairs, one engine call each (:mod:`flowkit.feed`: decoding runs
ahead in threads, a thread writes the store behind). RGB frames and flow are appended to each
video's partial file, which the store renames only once the whole video is written. So memory is
bounded by a few chunks whatever the videos' lengths, a crash loses at most the videos in progress,
and rerunning the same command skips every finished video (resume). With ``backward`` the engine
computes each pair from frame t+1 to frame t (:class:`flowkit.flow.Backward`) into
``flow/<method>_backward``, beside the forward flow of an earlier run.

One bad video never stops a run: its error becomes one line in the summary, also when it kills
the worker process extracting it (``workers`` > 1: the out-of-memory killer, a crash), which is
then replaced. Sharding (``RANK`` / ``WORLD_SIZE`` as set by torchrun, or ``shard=(i, n)``) splits
the video list into shares balanced by expected frame pairs (:mod:`flowkit.shards`); all shards
write into the same store directory, so there is nothing to merge. :meth:`ExtractSummary.combine`
joins the ranks' summaries into one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing as mp
import numbers
import os
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from . import feed
from .conventions import backward_name
from .errors import FlowkitError, StoreWriteError, VideoError, shell_word, use_plain_warnings
from .feed import VideoResult
from .flow import Backward, check_reversible, create_engine, engine_class
from .flow.base import FlowEngine
from .flow.registry import execution_options
from .labels import VideoItem
from .progress import Progress, StopFlag, Stopped
from .shards import ShardPlan, plan_shards
from .store import MANIFEST, FlowStore, StoreError, flow_codec, rgb_codec
from .store import guard
from .store.compat import Request, compare_with_store, describe_difference
from .store.labelling import fill_missing_labels, stand_in_note, unlabelled_note
from .store.layout import class_ids
from .video import iter_frames, output_size, probe

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
        if self.max_frames is not None and self.max_frames < 2:
            raise FlowkitError(f"max_frames must be >= 2 (flow needs a pair of frames), got "
                               f"{self.max_frames}")
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
    #: why the run ended early (the store refused data, no worker process left, a stop request:
    #: "interrupted", "terminated"), "" when it did not
    stopped: str = ""
    #: stopped by a request (Ctrl-C, SIGTERM: the summary :class:`Stopped` carries), not an error
    interrupted: bool = False
    not_started: int = 0    # videos of this shard never started because of that
    #: videos a stop request found in progress, their work discarded (a rerun restarts them), and
    #: the frame pairs computed for them
    in_progress: int = 0
    discarded_pairs: int = 0
    #: seconds before the first video started (engine, store check, scan of the store): not in
    #: ``pairs_per_s``, which covers the same window as the progress bar's rate
    setup_seconds: float = 0.0
    # One {"rank", "done", "skipped", "failed", "pairs", "seconds"} per rank of a combined summary.
    ranks: list[dict] = field(default_factory=list)
    #: videos the store held unlabelled (-1) that this run labelled in place (nothing recomputed)
    labels_filled: int = 0

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
        # The ranks start together: the first video of any rank that ran one starts the window of
        # pairs_per_s (the longest setup would drop the other ranks' work before it from it).
        ran = [p.setup_seconds for p in parts if p.count("done") or p.count("failed")]
        return cls(first.store, first.method, results, max(p.seconds for p in parts),
                   notes=[n for p in parts for n in p.notes], backend=first.backend, ranks=ranks,
                   stopped="; ".join(stopped), not_started=sum(p.not_started for p in parts),
                   in_progress=sum(p.in_progress for p in parts),
                   discarded_pairs=sum(p.discarded_pairs for p in parts),
                   interrupted=any(p.interrupted for p in parts),
                   labels_filled=sum(p.labels_filled for p in parts),
                   setup_seconds=min(ran) if ran else max(p.setup_seconds for p in parts))

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def held(self) -> int:
        """Skipped videos that another live process is extracting (not in the store yet)."""
        return sum(r.held for r in self.results)

    @property
    def pairs(self) -> int:
        return sum(r.pairs for r in self.results if r.status == "done")

    def to_dict(self) -> dict:
        return {"store": self.store, "method": self.method, "backend": self.backend,
                "seconds": round(self.seconds, 3),
                "done": self.count("done"), "skipped": self.count("skipped"), "held": self.held,
                "failed": self.count("failed"), "pairs": self.pairs,
                "labels_filled": self.labels_filled,
                "setup_seconds": round(self.setup_seconds, 3),
                "pairs_per_s": (round(self.pairs / (self.seconds - self.setup_seconds), 3)
                                if self.seconds > self.setup_seconds else None),
                "notes": self.notes, "stopped": self.stopped, "not_started": self.not_started,
                "in_progress": self.in_progress, "discarded_pairs": self.discarded_pairs,
                "interrupted": self.interrupted,
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


def shard_items(items: Sequence[VideoItem], config: ExtractConfig,
                shard: tuple[int, int] | None) -> tuple[list[VideoItem], int]:
    """``(this process's videos, how many processes share the list)``: share ``shard = (i, n)``
    of the balanced plan (an array task), or torchrun's rank's share; with both, share i split
    again over the torchrun ranks, so the array's tasks and their ranks never overlap
    (collective under torchrun)."""
    share, count, _ = _share(items, config, shard)
    return share, count


def _share(items: Sequence[VideoItem], config: ExtractConfig, shard: tuple[int, int] | None
           ) -> tuple[list[VideoItem], int, ShardPlan | None]:
    """:func:`shard_items` and the plan it took the share from (its expected pairs per video),
    None when the list is not shared: no video is probed then."""
    rank, world = shard_from_env()
    select_shard(items, (rank, world))
    if shard is None:
        if world == 1:
            return list(items), 1, None
        plan = shard_plan(items, config, world)
        return plan.share(rank), world, plan
    index, count = shard
    select_shard(items, shard)  # FlowkitError for an invalid shard
    if count == 1 and world == 1:
        return list(items), 1, None
    plan = shard_plan(items, config, count)
    return (plan.subplan(index, world).share(rank) if world > 1 else plan.share(index)), \
        count * world, plan


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
    # The config's backend and compile set these two; engine_params holding them would be dropped.
    for key in ("backend", "compile"):
        if key in params:
            raise FlowkitError(f"engine_params must not hold {key!r}: ExtractConfig.{key} sets it "
                               f"(flowkit extract --{key})")
    options = execution_options(config.method, config.backend, config.compile)
    params.update(options)
    if "backend" not in options and config.backend not in ("auto", "torch"):
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


def unstorable_keys(items: Sequence[VideoItem], flow_name: str) -> dict[str, str]:
    """``{key: reason}`` of the items whose names are too long for the files the store names after
    them while computing ``flow/<flow_name>`` (:meth:`FlowStore.check_writable_key`). Checked
    before any video starts, so that each fails alone instead of ending the run when its turn
    comes (with the videos in flight and, with workers, the other workers' videos)."""
    out = {}
    for item in items:
        try:
            FlowStore.check_writable_key(item.key, flow_name)
        except StoreError as exc:
            out[item.key] = feed.failure_reason(item, exc)
    return out


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
    request = store_request(config, engine)
    return feed.run(items, store, engine, options,
                    finished_meta=finished_meta, should_stop=(stop or StopFlag()).check,
                    on_pairs=on_pairs, redo=frozenset(config.redo),
                    unlike=lambda key, meta, joining: meanwhile_mismatch(request, key, meta,
                                                                         joining))


def held_mismatches(results: list[VideoResult], store: FlowStore, request: Request,
                    flow_name: str, known: dict[str, dict | None],
                    progress: Progress) -> list[VideoResult]:
    """``results`` with each video skipped while another process held it (:attr:`VideoResult.held`)
    that the process has finished since with other options than this run's failed with what
    differs (:func:`meanwhile_mismatch`), and a line logged for it. Read once, at the end of the
    run (one :meth:`FlowStore.metas` of those videos): a video still in progress says nothing
    yet. ``known``: the metas the run started from (a video it had no meta of joins the store)."""
    held = [r.key for r in results if r.held]
    if not held:
        return results
    try:
        metas = store.metas(held)
    except (StoreError, OSError):  # the store's own errors come up where it is read next
        return results
    out = []
    for result in results:
        meta = metas.get(result.key) if result.held else None
        mismatch = "" if meta is None or flow_name not in meta["flows"] else meanwhile_mismatch(
            request, result.key, meta, joining=known.get(result.key) is None)
        if mismatch:
            result = dataclasses.replace(result, status="failed", reason=mismatch)
            progress.log(f"failed {mismatch}")
        out.append(result)
    return out


#: What the line of a video says when another run finished it with other options during this run.
MEANWHILE = "another run wrote it with other options meanwhile"


def meanwhile_mismatch(request: Request, key: str, meta: dict, joining: bool) -> str:
    """Why ``key``, which another process finished while this run went on (``meta``, as
    :meth:`FlowStore.metas` reads it), does not fit this run's ``request``
    (:meth:`Request.differences`; ``joining``: the run would have written its RGB): one line
    naming what differs, or "" when it fits. A run into a new store has nothing to compare its
    options with before it starts (:func:`check_store_options`), so a run started beside it with
    other options is met only here."""
    differing = request.differences(meta, joining)
    if not differing:
        return ""
    parts = [describe_difference(request, option, stored, asked)
             for option, (stored, asked) in differing.items()]
    return f"{key}: {MEANWHILE} ({'; '.join(parts)}); not recomputed"


# Worker-process state for workers > 1 (one engine per process, built once).
_worker: dict = {}
# How often the parent looks at its workers and the stop flag while none reports.
_POLL_S = 0.2
# Seconds a worker has to exit after the run told it to.
_EXIT_WAIT_S = 10.0
# Seconds between a worker's reports of the frame pairs it computed: the parent's bar and log
# lines move while a long video runs, for a few small messages a second.
_PAIRS_EVERY_S = 0.25


def _worker_init(store_path: str, config: ExtractConfig, threads: int, parent: int,
                 hung: dict) -> None:
    # Ctrl-C reaches the whole process group; the parent decides and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    use_plain_warnings()  # a lock wait's note is one line, as in the parent
    guard.remember(hung)  # finished files HDF5 never returned from: never opened here
    torch.set_num_threads(threads)
    _worker["store"] = FlowStore(store_path, "a")
    _worker["engine"] = build_engine(config)
    _worker["config"] = config


class _PairReports:
    """A worker's ``on_pairs``: the pairs of each engine call, sent to the parent as
    ``("pairs", n)`` at most every ``every`` seconds of ``clock`` (the rest waits for the next
    report or :meth:`flush`, which the worker calls before each video's result)."""

    def __init__(self, conn: Connection, every: float = _PAIRS_EVERY_S, clock=time.monotonic):
        self.conn, self.every, self.clock = conn, every, clock
        self.unsent, self.sent = 0, clock()

    def __call__(self, n: int) -> None:
        self.unsent += n
        if self.clock() - self.sent >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.unsent:
            with contextlib.suppress(OSError):  # the parent is gone: the worker ends at its recv
                self.conn.send(("pairs", self.unsent))
            self.unsent = 0
        self.sent = self.clock()


def _worker_run(item: VideoItem, on_pairs=None
                ) -> tuple[list[VideoResult], StoreWriteError | None]:
    """The item's result, and the store's refusal (disk full) that ended it, if any."""
    results = []
    try:
        for result in extract_items([item], _worker["store"], _worker["engine"], _worker["config"],
                                    on_pairs, workers=2):
            results.append(result)
    except StoreWriteError as exc:
        return results, exc  # pickles by its message (errno is not needed past here)
    return results, None


def _worker_main(conn: Connection, store_path: str, config: ExtractConfig, threads: int,
                 parent: int, hung: dict) -> None:
    """A worker process: build the engine, say ``("ready", None)``, then extract each video the
    parent sends and answer ``("result", (results, fatal))``, until it sends None; meanwhile
    ``("pairs", n)``, the frame pairs computed, a few times a second (:class:`_PairReports`). An
    error that is no video's goes back as ``("error", exc)``; one in starting as
    ``("failed", message)``."""
    try:
        _worker_init(store_path, config, threads, parent, hung)
    except Exception as exc:
        conn.send(("failed", str(exc) or type(exc).__name__))
        return
    conn.send(("ready", None))
    reports = _PairReports(conn)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if item is None:
            return
        try:
            reports.flush()  # the time before the first report starts now
            outcome = _worker_run(item, reports)
            reports.flush()  # every pair counted before the result
            conn.send(("result", outcome))
        except Exception as exc:  # a bug, not a bad video: the parent stops the run with it
            conn.send(("error", exc))
            return


@dataclass(eq=False)
class _Worker:
    """One worker process of the run, its end of the pipe, and the video it is extracting (the
    parent hands out one at a time, so a worker that dies loses exactly that one)."""
    process: mp.process.BaseProcess
    conn: Connection
    ready: bool = False
    item: VideoItem | None = None
    taken: int = 0          # videos handed to it so far
    pairs: int = 0          # frame pairs it reported for the video it holds
    replacement: bool = False  # started in place of a worker that died
    #: why it could not start (it sent ``("failed", reason)``), "" otherwise
    failed: str = ""

    @classmethod
    def start(cls, ctx, args: tuple, replacement: bool = False) -> "_Worker":
        here, there = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(there, *args), daemon=True,
                              name="flowkit-extract-worker")
        with _children_ignore_ctrl_c():
            process.start()
        there.close()  # the child holds it now: the parent reads end of file once the child dies
        return cls(process, here, replacement=replacement)

    def give(self, pending: list[VideoItem]) -> None:
        """Send it the next video of ``pending`` (left there if it is already gone)."""
        item = pending.pop()
        try:
            self.conn.send(item)
        except OSError:  # it died meanwhile: the caller finds it dead, holding nothing
            pending.append(item)
            return
        self.item, self.pairs = item, 0
        self.taken += 1

    def messages(self) -> list[tuple[str, object]]:
        """What the worker has sent so far (none once it is gone)."""
        out = []
        try:
            while self.conn.poll():
                out.append(self.conn.recv())
        except (EOFError, OSError):  # its end is closed: it died (or is dying)
            self.process.join(_EXIT_WAIT_S)
        return out

    def dead(self) -> bool:
        return self.process.exitcode is not None or bool(self.failed)


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore SIGINT from their first instruction: an ignored signal
    stays ignored across exec, and Python then installs no KeyboardInterrupt handler. A worker
    still importing torch when Ctrl-C reaches the process group would otherwise print a traceback;
    the parent decides and terminates the workers. (A Ctrl-C within the few milliseconds of a
    start is not seen by the parent; a second one is.) Outside the main thread, a no-op."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # signal handlers can be set only in the main thread
        yield
        return
    try:
        yield
    finally:  # None: a handler set outside Python, which cannot be put back: the default
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _death(process: mp.process.BaseProcess) -> str:
    """How a worker process ended, for the user: the signal that killed it (SIGKILL is most often
    the kernel's out-of-memory killer), or its exit code."""
    code = process.exitcode
    if code is None or code >= 0:
        return f"worker process {process.pid} exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown signal"
    hint = ": out of memory?" if -code == signal.SIGKILL else ""
    return f"worker process {process.pid} died (killed by signal {-code}, {name}{hint})"


class _WorkersGone(FlowkitError):
    """No worker process is left while videos wait (every one died before taking a video, or the
    new ones could not start): the run stops (exit 1), as on a full disk, with the videos not
    started counted in the summary."""


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
            classes: Sequence[str] | None = None, classes_numbered: bool = False,
            shard: tuple[int, int] | None = None, progress: Progress | None = None,
            stop: StopFlag | None = None) -> ExtractSummary:
    """Extract ``items`` into the store at ``store_path`` (created if missing), resuming.

    Args:
        items: videos to process (e.g. from :func:`flowkit.labels.scan_videos`).
        store_path: store directory.
        config: :class:`ExtractConfig`.
        classes: class names recorded in the store (label ids index into them). An existing
            store keeps its own order: items are relabelled by class name with its ids
            (:func:`store_labels`); classes it lacks are refused.
        classes_numbered: the label ids are an annotation or split list's, not positions among
            sorted class folders: a store's stand-in name ``class_<i>`` (an id its list named no
            folder for) then takes this run's name for id i.
        shard: ``(index, count)``; defaults to torchrun's ``RANK`` / ``WORLD_SIZE``.
        progress: :class:`~flowkit.progress.Progress` (tasks "videos" and "frame pairs", the
            latter refreshed while long videos run and with a total when the run is sharded:
            :class:`_PairsBar`; a line per failed video, and first a bar over finished videos
            new to the store's index); silent by default.
        stop: a :class:`~flowkit.progress.StopFlag`; once set, the run stops at the next chunk,
            discards the videos in flight cleanly and raises :class:`~flowkit.progress.Stopped`,
            whose ``summary`` attribute is the :class:`ExtractSummary` of what finished
            (``interrupted`` True, ``stopped`` the stop's reason, the videos discarded in
            ``in_progress``), for the caller to report.

    Returns:
        :class:`ExtractSummary` with one :class:`VideoResult` per item of this shard.
    """
    started = time.perf_counter()
    progress = progress or Progress()
    stop = stop or StopFlag()
    items, count, plan = _share(items, config, shard)
    # Built before the store exists, so bad parameters fail once and leave nothing behind; worker
    # processes build their own.
    engine = build_engine(config)
    backend = engine.backend
    unknown = sorted(set(config.redo) - {item.key for item in items})
    if unknown and count == 1:
        # "walk/v_X.avi": a file name given for its key
        bare = ", without the file extension" if os.path.splitext(unknown[0])[1] else ""
        raise FlowkitError(f"--redo {unknown[0]}: no video with that key in this run (keys are "
                           f"CLASS/VIDEO{bare}, as `flowkit info {shell_word(store_path)} --keys` "
                           "lists them)")
    workers = config.workers or default_workers(config.device, len(items))
    run_items, run_classes = items, classes  # this run's, before the store's ids and stand-ins
    # an existing store's classes this run lacks are refused before anything is written
    items, classes = store_labels(store_path, items, classes, classes_numbered)
    known, mismatched = check_store_options(store_path, items, config, engine, progress)
    request = store_request(config, engine)  # for the videos other runs finish meanwhile
    config = dataclasses.replace(config, workers=workers, redo=tuple(sorted(
        set(config.redo) | mismatched)), max_memory=(
        None if config.max_memory is None else config.max_memory // workers))
    if config.workers > 1:
        engine = None
    store, items, classes = open_store(store_path, run_items, run_classes, classes_numbered)
    store.remove_partials()
    items, labels = settle_labels(store, items, known, progress)
    labels = (labels[0], stand_in_note(store.classes, run_classes) + labels[1])
    todo, metas, results = [], {}, []
    for item in items:
        meta = metas[item.key] = None if item.key in config.redo else known.get(item.key)
        if meta is not None and config.flow_name in meta["flows"]:
            results.append(VideoResult(item.key, str(item.path), "skipped",
                                       reason=f"already in the store with flow/{config.flow_name}"))
        else:
            todo.append(item)
    # Only the videos to compute need the files a name may be too long for (a finished one,
    # written by an older flowkit whose check used this process's pid, is skipped as before).
    unstorable = unstorable_keys(todo, config.flow_name)
    results += [VideoResult(item.key, str(item.path), "failed", reason=unstorable[item.key])
                for item in todo if item.key in unstorable]
    todo = [item for item in todo if item.key not in unstorable]
    setup = time.perf_counter() - started
    videos = progress.start("videos", total=len(items), completed=len(results))
    pairs = _PairsBar(progress, todo, plan)
    for result in results:
        if result.status == "failed":
            progress.log(f"failed {result.reason}")
    stopped, run_notes = "", []
    try:
        for result in _run(todo, store, engine, config, pairs.advance, metas, stop, run_notes):
            results.append(result)
            pairs.ended(result)
            videos.advance()
            if result.status == "failed":
                progress.log(f"failed {result.reason}")
            elif result.status == "skipped":
                progress.log(f"skipped {result.key}: {result.reason}")
    except (StoreWriteError, _WorkersGone) as exc:
        stopped = str(exc)
        progress.log(f"stopping: {stopped}")
    except Stopped as exc:
        # Still raised (a KeyboardInterrupt: callers that let Ctrl-C through keep doing so), but
        # with what finished, which `flowkit extract --json` prints before exiting 130 / 143.
        videos.close()
        pairs.close(finished=False)
        exc.summary = _summary(items, results, store, config, backend, started, setup,
                               str(exc) or "interrupted", run_notes, labels, interrupted=True,
                               in_flight=getattr(exc, "in_flight", {}))
        raise
    results = held_mismatches(results, store, request, config.flow_name, metas, progress)
    videos.close()
    pairs.close(finished=not stopped)
    return _summary(items, results, store, config, backend, started, setup, stopped, run_notes,
                    labels)


class _PairsBar:
    """The "frame pairs" task. Its total is the shard plan's expected pairs of the videos to
    compute (header frame counts, file sizes where a header has none) when the run has a plan: no
    video is probed for a total alone. Those are estimates, so each video's gives way to the pairs
    it yielded once its result is in (none for one failed or skipped), the total never shows
    fewer pairs than were counted, and a run that ends makes it its count: the bar neither stops
    short of its end nor runs past it."""

    def __init__(self, progress: Progress, todo: Sequence[VideoItem], plan: ShardPlan | None):
        self.expected = ({item.key: plan.costs[item.key] for item in todo}
                         if plan is not None and plan.basis == "frame pairs" else None)
        self.total = None if self.expected is None else sum(self.expected.values())
        self.task = progress.start("frame pairs", total=self.total)

    def advance(self, n: int) -> None:
        """``n`` more pairs computed (0: none, but time passed: what is due is shown)."""
        if n:
            self._update(self.task.completed + n)
        else:
            self.task.refresh()

    def ended(self, result: VideoResult) -> None:
        """``result``'s video ended: its pairs replace its estimate in the total."""
        if self.expected is not None and result.key in self.expected:
            made = result.pairs if result.status == "done" else 0
            self.total += made - self.expected.pop(result.key)
            self._update(self.task.completed)

    def close(self, finished: bool) -> None:
        """``finished``: the run did all its videos (not stopped early)."""
        if finished and self.total is not None:
            self.task.update(total=self.task.completed)
        self.task.close()

    def _update(self, completed: int) -> None:
        total = None if self.total is None else max(self.total, completed)
        self.task.update(completed=completed, total=total)


def _summary(items: Sequence[VideoItem], results: list[VideoResult], store: FlowStore,
             config: ExtractConfig, backend: str, started: float, setup: float, stopped: str,
             run_notes: list[str], labels: tuple[int, list[str]],
             interrupted: bool = False, in_flight: dict[str, int] | None = None
             ) -> ExtractSummary:
    """The run's :class:`ExtractSummary`, results in ``items`` order; ``stopped``: why it ended
    early ("" when it did not; the videos without a result then count as not started, but for
    those of ``in_flight``, ``{key: pairs computed}`` of the videos a stop found in progress,
    that had pairs computed: their work is discarded);
    ``labels``: the labels filled in and the notes on labels (:func:`settle_labels`)."""
    order = {item.key: i for i, item in enumerate(items)}
    results.sort(key=lambda r: order[r.key])
    ended = {r.key for r in results}
    discarded = [p for key, p in (in_flight or {}).items() if p and key not in ended]
    summary = ExtractSummary(str(store.path), config.flow_name, results,
                             time.perf_counter() - started, backend=backend, stopped=stopped,
                             setup_seconds=setup, interrupted=interrupted,
                             not_started=len(items) - len(results) - len(discarded)
                             if stopped else 0,
                             in_progress=len(discarded), discarded_pairs=sum(discarded),
                             labels_filled=labels[0])
    summary.notes = (labels[1] + _unlabelled_notes(items, results)
                     + _size_notes(results, config) + _memory_notes(results, config)
                     + _redo_notes(results, config) + _meanwhile_notes(results) + run_notes)
    return summary


def _unlabelled_notes(items: Sequence[VideoItem], results: list[VideoResult]) -> list[str]:
    """The note on the videos without a label that the store holds or will: done or skipped
    (not those that failed, which it lacks)."""
    kept = {r.key for r in results if r.status in ("done", "skipped")}
    return unlabelled_note([item.key for item in items if item.label < 0 and item.key in kept],
                           "a Kinetics CSV or an mmaction2 video list")


def settle_labels(store: FlowStore, items: Sequence[VideoItem], known: dict[str, dict],
                  progress: Progress | None = None
                  ) -> tuple[list[VideoItem], tuple[int, list[str]]]:
    """This run's labels against the store's (``known``: the metas of the items it holds;
    :mod:`flowkit.store.labelling`): a video held unlabelled (-1) takes the run's label in place,
    nothing recomputed (:meth:`FlowStore.fill_labels`); one held under a label keeps it, and its
    item carries that label, which a flow added to the video is committed with. Returns the items
    and ``(labels filled in, notes)``: those filled, those kept against this run's, labels that
    could not be written (a damaged file); the note on the videos left without a label waits for
    the results (:func:`_unlabelled_notes`: only those the store holds)."""
    stored = {key: int(meta.get("label", -1)) for key, meta in known.items()}
    filled, notes = fill_missing_labels(
        store, {item.key: (item.label, item.label_name) for item in items}, stored, progress)
    classes = store.classes
    items = [dataclasses.replace(item, label=stored[item.key], label_name=classes[stored[item.key]])
             if 0 <= stored.get(item.key, -1) < len(classes) else item for item in items]
    return items, (len(filled), notes)


def store_labels(store_path, items: Sequence[VideoItem], classes: Sequence[str] | None,
                 numbered: bool = False) -> tuple[list[VideoItem], list[str] | None]:
    """``items`` and ``classes`` in the class order of the existing store at ``store_path``
    (:func:`~flowkit.store.layout.class_ids`; ``numbered``: the classes' ids are a list's):
    each video labelled by its class name with the store's id. Unchanged without a store or
    classes; StoreError for classes the store lacks, before anything is computed."""
    classes, ids = class_ids(Path(store_path), classes, numbered=numbered)
    if ids is None:
        return list(items), classes
    # the store's name too: an id it calls class_<i> keeps that name in the files it adds
    return [dataclasses.replace(item, label=ids[item.label], label_name=classes[ids[item.label]])
            if item.label >= 0 else item for item in items], classes


def open_store(store_path, items: Sequence[VideoItem], classes: Sequence[str] | None,
               numbered: bool = False) -> tuple[FlowStore, list[VideoItem], list[str] | None]:
    """The store at ``store_path`` opened for writing (created with ``classes`` if missing), and
    ``items`` and ``classes`` in its class order (:func:`store_labels`). Two runs creating the
    store at once with the classes in other orders (a folder scan sorts them, a split list's
    classInd.txt need not) both label by name: store.json is made by one of them
    (:func:`~flowkit.store.layout.create_store`), and the other, refused for bringing its own
    order to the store made meanwhile, reads the store's order and opens it again, instead of
    failing its videos on label ids that name other classes."""
    def labelled() -> tuple[FlowStore, list[VideoItem], list[str] | None]:
        out, ordered = store_labels(store_path, items, classes, numbered)
        return FlowStore(store_path, "a", classes=ordered), out, ordered

    fresh = not (Path(store_path) / MANIFEST).is_file()
    try:
        return labelled()
    except StoreError:
        if not fresh:  # the store was there: the refusal stands
            raise
    return labelled()  # made meanwhile by another run: in its class order now


def store_request(config: ExtractConfig, engine: FlowEngine) -> Request:
    """What this run writes into a store, for :func:`flowkit.store.compat.compare_with_store`."""
    params = engine_class(config.method).Params
    return Request(method=config.flow_name, engine=engine.describe(), size=config.size,
                   step=config.step, rgb=config.rgb, rgb_codec=rgb_codec(config.rgb_codec),
                   flow_codec=flow_codec(config.flow_codec),
                   param_names=tuple(f.name for f in dataclasses.fields(params)) if params else (),
                   max_frames=config.max_frames,
                   unweighted=lambda: _unweighted_params(config))


def _unweighted_params(config: ExtractConfig) -> dict:
    """The engine parameters a run of ``config`` without ``weights`` records (an engine built on
    the CPU, no compile): what the store hint's "without --weights" would give."""
    params = {k: v for k, v in config.engine_params.items() if k != "weights"}
    plain = dataclasses.replace(config, engine_params=params, device="cpu", compile=False,
                                backward=False)
    return build_engine(plain).describe()["params"]


def check_store_options(store_path, items: Sequence[VideoItem], config: ExtractConfig,
                        engine: FlowEngine, progress: Progress | None = None
                        ) -> tuple[dict[str, dict], set[str]]:
    """Before anything is computed or written: does this run fit the existing store?

    Returns the finished videos' metadata among ``items`` (``{key: meta}``) and the keys stored
    with other options, to recompute. Raises :class:`StoreError` naming the options that would
    match the store when they differ and ``config.redo_mismatched`` is off, and also with it when
    none of ``items`` is in the store (the store's other videos differ, and this run does not redo
    them). Besides the options :mod:`flowkit.store.compat` compares, the videos this run adds flow
    to must keep their frame count (:func:`frame_count_mismatches`: another ``max_frames``). A
    store that does not exist yet fits anything. ``progress``: a bar over finished videos new to
    the store's index."""
    if not (Path(store_path) / MANIFEST).is_file():
        return {}, set()
    store = FlowStore(store_path)
    comparison = compare_with_store(store, [item.key for item in items],
                                    store_request(config, engine), progress)
    keys = {item.key for item in items}
    known = {k: m for k, m in comparison.metas.items() if k in keys}
    mismatched: set[str] = set()
    if not comparison.ok:
        if comparison.reference or not config.redo_mismatched:
            # compared with other videos of the store, --redo-mismatched cannot help
            raise StoreError(comparison.message())
        mismatched = comparison.keys() & keys
    # Without --redo-mismatched a few headers tell (a store is made with one --max-frames) and the
    # run starts at once; with it every video is checked, to be redone (its probe is little next
    # to the extraction this run makes of it anyway).
    counts = frame_count_mismatches(items, known, config, skip=mismatched | set(config.redo),
                                    probes=None if config.redo_mismatched else COUNT_PROBES,
                                    records_cut=lambda key: _records_its_cut(store, key))
    if counts and not config.redo_mismatched:
        raise StoreError(_frame_count_refusal(store_path, counts, config))
    return known, mismatched | set(counts)


# Stored and header frame counts this close are taken to agree: headers are often off by a frame
# or two (edit lists, dropped frames; flowkit.video's truncation check allows as much).
_COUNT_SLACK_FRAMES = 2
_COUNT_SLACK_FRACTION = 0.05
#: Headers probed by the frame-count check of a run without ``redo_mismatched``.
COUNT_PROBES = 8


def frame_count_mismatches(items: Sequence[VideoItem], known: dict[str, dict],
                           config: ExtractConfig, skip: set[str] = frozenset(),
                           probes: int | None = None,
                           records_cut: Callable[[str], bool] = lambda key: False
                           ) -> dict[str, tuple[int, int]]:
    """``{key: (stored frames, frames this run makes)}`` of the finished videos among ``items``
    that this run adds flow to (another engine, ``backward``) whose stored frame count clearly
    differs from what this run makes of them (another ``max_frames``): the store would refuse
    each one after its flow is computed. The run's count comes from ``max_frames`` alone when the
    store holds more, else from the frame count the header declares (mp4, avi: a probe, no
    decoding; at most ``probes`` of them, None: all); where the header has only an estimate
    (mkv, webm) the video is not checked here. ``skip``: keys replaced whole anyway (``redo``).
    ``records_cut(key)``: whether the stored video would record a ``max_frames`` cut
    (:func:`_records_its_cut`); one that records none holds every frame its decoder gave, so a
    header counting more (an mp4 edit list's trimmed frames, an avi's dropped ones) is no other
    cut. Where the writer may have cut without a word (an older flowkit), the first such video
    is decoded up to its stored frames (:func:`_holds_more_frames`): a store is made with one
    ``--max-frames``, so that video tells whether the headers' counts are a cut or a trim."""
    out: dict[str, tuple[int, int]] = {}
    unsure: dict[str, tuple[int, int]] = {}  # a header's count against an older flowkit's video
    budget = [len(items) if probes is None else probes]
    for item in items:
        meta = known.get(item.key)
        if meta is None or item.key in skip or config.flow_name in meta["flows"]:
            continue
        stored = int(meta["num_frames"])
        made = _frames_made(item, config, stored, budget)
        # a count the header gave (not this run's own limit) against a video stored whole
        counted = config.max_frames is None or stored < config.max_frames
        if made is None:
            continue
        if not (counted and meta.get("max_frames") is None):
            out[item.key] = (stored, made)
        elif not records_cut(item.key):
            unsure[item.key] = (stored, made)
    if unsure and _decoded_cut(items, unsure, config):
        out.update(unsure)
    return out


def _decoded_cut(items: Sequence[VideoItem], unsure: dict[str, tuple[int, int]],
                 config: ExtractConfig) -> bool:
    """Whether the first of the ``unsure`` videos (``{key: (stored, made)}``) that decodes gives
    this run more frames than the store holds of it: a cut the store did not record. False when
    none decodes (the run reports each with its own reason)."""
    for item in items:
        if item.key in unsure:
            more = _holds_more_frames(item, config, unsure[item.key][0])
            if more is not None:
                return more
    return False


#: The first flowkit version whose videos record a ``--max-frames`` cut (``max_frames``); some
#: 0.1.0 videos did, others (written before the limit was recorded) did not.
RECORDS_CUT_VERSION = (0, 2, 0)


def _records_its_cut(store: FlowStore, key: str) -> bool:
    """Whether ``key``'s stored video would say so had ``--max-frames`` cut it: a video whose
    ``flowkit_version`` is :data:`RECORDS_CUT_VERSION` or later. A video of an older flowkit may
    have been cut without a word (0.1.0 recorded its version but not always its cut). Reads one
    file: only videos whose header counts clearly more frames than the store holds are asked."""
    try:
        version = store.meta(key).get("flowkit_version")
    except (OSError, StoreError):
        return False  # unreadable: decoding decides (_decoded_cut)
    return _version_tuple(version) >= RECORDS_CUT_VERSION


def _version_tuple(version) -> tuple[int, ...]:
    """``"0.2.0"`` -> ``(0, 2, 0)``; the leading digits of each part (``"1rc1"`` -> 1); ``()`` for
    None or a version that does not start with a number."""
    parts = []
    for part in str(version or "").split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _holds_more_frames(item: VideoItem, config: ExtractConfig, stored: int) -> bool | None:
    """Whether decoding ``item`` gives this run more than its ``stored`` frames (every
    ``config.step``-th decoded frame): the store holds a cut, not every frame the decoder gives
    (a header counting more may be a trim: an mp4 edit list). Decodes ``stored * step`` frames
    and up to ``step`` more, in gray; None when the video does not decode."""
    facts: dict = {}
    try:
        for _ in iter_frames(item.path, step=config.step, max_frames=stored, gray=True,
                             strict=False, threads=1, facts=facts):
            pass
    except VideoError:
        return None
    return "max_frames" in facts  # iter_frames found another frame to keep past ``stored``


def _frames_made(item: VideoItem, config: ExtractConfig, stored: int,
                 budget: list[int]) -> int | None:
    """The frames this run makes of ``item`` when that clearly differs from the ``stored`` count,
    else None (they agree, or the header cannot tell, or ``budget[0]``, the probes left, is 0)."""
    limit = config.max_frames
    if limit is not None and stored >= limit:
        return limit if stored > limit else None
    if budget[0] <= 0:
        return None
    budget[0] -= 1
    try:
        info = probe(item.path)
    except VideoError:
        return None  # the run reports the video with its own reason
    if not info.counted or not info.frame_count:
        return None
    made = math.ceil(info.frame_count / config.step)
    made = made if limit is None else min(made, limit)
    slack = max(_COUNT_SLACK_FRAMES, int(_COUNT_SLACK_FRACTION * made))
    return made if made - stored > slack else None


def _frame_count_refusal(store_path, counts: dict[str, tuple[int, int]],
                         config: ExtractConfig) -> str:
    """One line: which videos keep other frame counts in the store, the --max-frames that would
    match it, and the ways out."""
    key, (stored, made) = next(iter(counts.items()))
    kept = f"--step {config.step}" + (f" --max-frames {config.max_frames}"
                                      if config.max_frames is not None else "")
    held = {s for s, _ in counts.values()}
    if len(held) == 1:
        match = f"Rerun with --max-frames {stored} to extend this store"
    elif config.max_frames is not None:
        match = "Rerun without --max-frames to extend this store"
    else:
        match = "Rerun with the --max-frames the store was made with"
    return (f"store {store_path} holds videos with other frame counts than this run makes of "
            f"them (e.g. {key}: {stored} frames stored, {made} with {kept}): it was made with "
            f"another --max-frames. Nothing was computed. {match}, add "
            "--redo-mismatched to recompute those videos (replacing what the store holds for "
            "them), or write a new store (-o NEW_STORE)")


def _meanwhile_notes(results: list[VideoResult]) -> list[str]:
    """The way out for the videos another run finished with other options during this one
    (:func:`meanwhile_mismatch`): the store now mixes both runs' options."""
    unlike = [r for r in results if r.status == "failed" and MEANWHILE in r.reason]
    if not unlike:
        return []
    return [f"{len(unlike)} videos were finished meanwhile by another run with other options "
            "(their lines say what differs): the store now mixes both runs' options. Once that "
            "run has ended, rerun this command with --redo-mismatched to recompute them with "
            "this run's options, rerun with the store's options (a plain rerun names them), or "
            "write a new store (-o NEW_STORE)"]


def _redo_notes(results: list[VideoResult], config: ExtractConfig) -> list[str]:
    """How many videos --redo / --redo-mismatched replaced (each video's line says what of its old
    file was dropped: datasets that no longer decode or no longer fit its frames), and how many
    lost the other direction of this run's flow, made with other options than the new one."""
    redone = [r for r in results if r.status == "done" and r.key in config.redo]
    if not redone:
        return []
    notes = [f"{len(redone)} videos recomputed and replaced (--redo / --redo-mismatched)"]
    # the writer's word for an other direction made otherwise (store.writer.OTHER_ENGINE)
    other = config.method if config.backward else backward_name(config.method)
    unlike = [r.key for r in redone if f"flow/{other} (made with other " in r.reason]
    if unlike:
        again = "run without --backward" if config.backward else "add --backward"
        notes.append(f"{len(unlike)} of them held flow/{other} made with other options than "
                     f"the new flow/{config.flow_name}: it was dropped (the two directions of a "
                     f"video are made alike); {again} to recompute it")
    return notes


def _run(todo: list[VideoItem], store: FlowStore, engine: FlowEngine | None, config: ExtractConfig,
         on_pairs, metas: dict, stop: StopFlag, notes: list[str]) -> Iterable[VideoResult]:
    """The results of ``todo``, in this process or over worker processes; ``on_pairs(n)`` as
    frame pairs are computed (n 0: none, but time passed). A stop raises :class:`Stopped` with
    ``in_flight``, ``{key: pairs computed}`` of the videos it discards (:func:`feed.run`)."""
    if config.workers == 1:
        yield from extract_items(todo, store, engine, config, on_pairs, metas=metas, stop=stop)
        return
    yield from _run_workers(todo, store, config, on_pairs, stop, notes)


def _run_workers(todo: list[VideoItem], store: FlowStore, config: ExtractConfig, on_pairs,
                 stop: StopFlag, notes: list[str]) -> Iterator[VideoResult]:
    """``todo`` over ``config.workers`` processes (each its own engine and feed, few torch
    threads), one video at a time per process. A worker that dies (the out-of-memory killer, a
    crash) fails the video it held, with the reason, and a new one takes its place, as does one
    that died between videos; one that dies before taking a video, or a new one that cannot start,
    is not replaced (a line in ``notes``), and when none is left the run stops
    (:class:`_WorkersGone`). Stopping (``stop``, an error) terminates the workers, which
    leaves their feeds no time to clean up: once they are gone, their claims and partial files are
    removed here (:meth:`FlowStore.remove_dead_writer`), so that no other run, on another host
    above all, takes those videos for being extracted. A worker that dies while a stop is
    requested (SIGTERM to the whole process group, as Slurm sends at its time limit) is part of
    the stop, not a lost video, and the stop's exception carries ``in_flight``, ``{key: pairs
    reported}`` of the videos the workers held. ``on_pairs(n)`` with the pairs the workers
    report, and ``on_pairs(0)`` at each poll (no news: time passed)."""
    threads = max(1, torch.get_num_threads() // config.workers)
    # spawn: a forked child would inherit torch's thread pools and open HDF5 handles.
    ctx = mp.get_context("spawn")
    args = (str(store.path), config, threads, os.getpid(), guard.hung_files())
    pending = list(reversed(todo))  # pop() hands them out in list order
    workers = [_Worker.start(ctx, args) for _ in range(min(config.workers, len(todo)))]
    death = ""
    try:
        while pending or any(w.item is not None for w in workers):
            stop.check()  # polled, so that a stop request is seen even while no video finishes
            if not workers:
                raise _WorkersGone(f"no worker process is left to extract the {len(pending)} "
                                   f"videos not started (the last: {death}); rerun the same "
                                   "command to resume, with fewer --workers if memory ran out")
            for w in workers:
                if w.ready and w.item is None and pending:
                    w.give(pending)
            wait([w.conn for w in workers] + [w.process.sentinel for w in workers], _POLL_S)
            on_pairs(0)  # time passed: the progress shows what is due while long videos run
            for w in list(workers):
                yield from _serve(w, on_pairs)
                if w.dead():
                    stop.check()  # the signal that killed it reached this process too
                    workers.remove(w)
                    death = w.failed or _death(w.process)
                    _remove_leftovers(w, store, config)
                    # One that ran videos is replaced (at most one start per video handed out);
                    # one that never took a video would likely fail again.
                    replace = bool(w.taken and pending)
                    yield from _lost(w, death, notes, len(workers) + replace, replace)
                    if replace:
                        workers.append(_Worker.start(ctx, args, replacement=True))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # a stop: what it discards, for the summary
            exc.in_flight = {w.item.key: w.pairs for w in workers if w.item is not None}
        for w in workers:
            w.process.terminate()
        raise
    else:
        for w in workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
    finally:
        _end_workers(workers, store, config)


def _end_workers(workers: list[_Worker], store: FlowStore, config: ExtractConfig) -> None:
    """Wait for each worker to exit (killed after :data:`_EXIT_WAIT_S`) and remove the claim and
    partial file it held. A second Ctrl-C meanwhile ("stop now": :class:`Stopped` from the signal
    handler) kills the workers still running instead of waiting, and is raised once every
    worker's leftovers are removed: raised from a join, it skipped them all, and the claims then
    held the videos from other hosts for 10 minutes."""
    now: BaseException | None = None
    for w in workers:
        try:
            if now is None:
                w.process.join(_EXIT_WAIT_S)
        except KeyboardInterrupt as exc:
            now = exc
        if w.process.exitcode is None:
            w.process.kill()
            w.process.join()
        w.conn.close()
        _remove_leftovers(w, store, config)
    if now is not None:
        raise now


def _remove_leftovers(w: _Worker, store: FlowStore, config: ExtractConfig) -> None:
    """The claim and partial file of the video the ended worker ``w`` held, if it left them (it
    was killed or terminated mid-video); never an error in place of the one that ended the run."""
    if w.item is None or w.process.exitcode is None:
        return
    with contextlib.suppress(OSError, StoreError):
        store.remove_dead_writer(w.item.key, config.flow_name, w.process.pid)


def _serve(w: _Worker, on_pairs) -> Iterator[VideoResult]:
    """The results of what ``w`` has sent; raises what ended the run in it (a full disk, a bug,
    a first worker that could not start: the run's options are at fault). A replacement that
    could not start (the memory of the worker it replaces not yet free, say) is marked
    ``failed`` and the run goes on without it. ``on_pairs(n)`` as the worker reports pairs
    computed (its results' pairs were reported before them)."""
    for kind, payload in w.messages():
        if kind == "ready":
            w.ready = True
        elif kind == "pairs":
            w.pairs += payload
            on_pairs(payload)
        elif kind == "failed" and w.replacement:
            w.failed = f"a new worker process could not start ({payload})"
            w.process.join(_EXIT_WAIT_S)  # it returns right after saying so
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()
        elif kind == "failed":
            raise FlowkitError(f"a worker process could not start: {payload}")
        elif kind == "error":
            raise payload
        else:
            results, fatal = payload
            w.item = None
            yield from results
            if fatal is not None:
                raise fatal


def _lost(w: _Worker, death: str, notes: list[str], left: int,
          replaced: bool) -> Iterator[VideoResult]:
    """The failed result of the video a dead worker held, or a note when it held none (``left``:
    the workers the run goes on with, ``replaced``: a new one takes its place)."""
    w.conn.close()
    if w.item is None:
        when = " between videos" if w.taken else "" if w.failed else " before taking a video"
        then = "a new one took its place" if replaced else f"the run went on with {left} worker(s)"
        notes.append(f"{death}{when}; {then}")
        return
    yield VideoResult(w.item.key, str(w.item.path), "failed",
                      reason=f"{w.item.path}: {death} while extracting it; the other videos go "
                             "on. Rerun the same command to retry it (with fewer --workers or a "
                             "lower --max-memory if memory ran out)")


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
    """One line per video stored at a size different from the majority: without ``size``, or
    with a short side, which keeps each video's aspect ratio (only ``HxW`` makes one size)."""
    sizes = [r.size for r in results if r.status == "done" and r.size]
    if (config.size is not None and not isinstance(config.size, numbers.Integral)) or not sizes:
        return []
    common = max(set(sizes), key=sizes.count)
    kept = (f": --size {config.size} sets the short side and keeps each video's aspect ratio"
            if config.size is not None else "")
    return [f"{r.source}: stored at {r.size[0]}x{r.size[1]}, unlike most videos "
            f"({common[0]}x{common[1]}){kept}; pass --size HxW (e.g. --size "
            f"{common[0]}x{common[1]}) to store all videos at one size"
            for r in results if r.status == "done" and r.size and r.size != common]
