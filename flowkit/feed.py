"""Feeding an engine at the speed of the device: decode ahead, batch pairs across videos, write behind.

::

    decode threads (``prefetch`` videos ahead)      main thread                        write thread
    probe + iter_frames -> bounded chunk queues -> pairs of many videos -> engine -> store (in order)
                                                    └── RGB chunks ────────────────────────┘

- **Decode ahead.** Each video is probed and decoded in its own thread into a small bounded queue of
  chunks, ``prefetch`` videos ahead of the one being batched (PyAV and OpenCV release the GIL), so
  the engine never waits for a decoder at a video boundary.
- **Batches across video boundaries.** A batch holds ``batch`` consecutive-frame pairs from as many
  videos as it takes: the last pairs of one video and the first of the next share one engine call,
  so the device sees full batches (e.g. 64-256 pairs of 256x340 on a GPU) whatever the video
  lengths. Pairs of different frame sizes never share a batch. Each pair is computed exactly as in a
  batch of its own video where the engine treats pairs independently
  (``engine.independent_pairs``); a multi-frame engine (MotionNet reads a batch as one clip) gets
  batches of one video each.
- **Pinned, asynchronous copies on CUDA.** The frames of a batch are assembled once in pinned host
  memory (pairs share their frames: ``B + videos`` frames, not ``2B``) and copied with
  ``non_blocking=True``; the pairs are gathered on the device. Flows come back into pinned memory
  asynchronously; the write thread waits for the copy, so the main thread already prepares and
  launches the next batch.
- **Write behind.** One thread owns the store's writers: RGB chunks and flows are appended in order,
  a video is committed (its partial file renamed) once its last flow is written, so HDF5
  compression overlaps the next engine call and a crash still loses only the videos in flight.
- **Failures stay per video.** A decode error fails that video (its pairs still waiting in the
  batch are dropped), an engine error fails the videos of that batch, a store error the video
  being written; every other video goes on. Each video gets exactly one :class:`VideoResult`.
  A full (or read-only) store is not a video's failure: the run ends at once with
  :class:`~flowkit.errors.StoreWriteError` instead of failing every remaining video.
- **Claims.** A video is claimed in the store (:mod:`flowkit.store.claims`) before it is decoded;
  one claimed by another live process, or finished by one meanwhile, is skipped, so concurrent runs
  share the work instead of doubling it; one finished meanwhile with other options than this run's
  (``unlike``) fails, naming what differs.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .conventions import backward_name
from .errors import FlowkitError, StoreError, StoreWriteError, VideoError
from .labels import VideoItem
from .store import FlowStore, flow_codec, rgb_codec
from .store.writer import OTHER_FRAMES, Dropped
from .video import VideoInfo, iter_frames, probe

# Decoded chunks buffered per video: enough to hide a decoder hiccup, bounded memory.
_QUEUE_CHUNKS = 2
_POLL_S = 0.05
_JOIN_S = 10.0  # the longest a finished run waits for its cancelled decode threads, in seconds
# Errors that fail one video (or the videos of one batch) and never the run.
VIDEO_ERRORS = (FlowkitError, OSError, RuntimeError, ValueError)


# How the reason of a video skipped because another live process holds its claim begins.
HELD = "being extracted by"


@dataclass
class VideoResult:
    """Outcome of one video: ``status`` is "done", "skipped" (already in the store, or being
    extracted by another process: :attr:`held`) or "failed"."""
    key: str
    source: str
    status: str
    reason: str = ""
    frames: int = 0
    pairs: int = 0
    size: tuple[int, int] | None = None
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        """Skipped because another live process is extracting it: not in the store yet."""
        return self.status == "skipped" and self.reason.startswith(HELD)


def _dropped_note(dropped: Sequence[Dropped]) -> str:
    """What a replaced video's line says of the old file's datasets it did not keep
    (:attr:`VideoWriter.dropped <flowkit.store.writer.VideoWriter.dropped>`): the sound ones that
    hold other frames apart from the damaged ones."""
    unfit = [d.name for d in dropped if not d.damaged and not d.unlike]
    damaged = [str(d) for d in dropped if d.damaged]
    unlike = [str(d) for d in dropped if d.unlike]
    parts = ["dropped from the old file to keep its two directions alike: " + ", ".join(unlike)
             ] if unlike else []
    if unfit:
        parts.append(f"dropped from the old file ({OTHER_FRAMES}): " + ", ".join(unfit))
    if damaged:
        parts.append("damaged and dropped from the old file: " + ", ".join(damaged))
    return "; ".join(parts)


def failure_reason(item: VideoItem, exc: BaseException) -> str:
    """One line naming the video and the cause."""
    reason = str(exc)
    if isinstance(exc, FlowkitError):  # its message is written for the user: no type name
        return reason if str(item.path) in reason else f"{item.path}: {reason}"
    return f"{item.path}: {type(exc).__name__}: {exc}"


@dataclass
class FeedOptions:
    """How videos are decoded, batched and stored (``ExtractConfig`` extends it with the engine
    and the processes). ``method`` is the engine's name; ``backward`` says the engine computes
    backward flow (:class:`flowkit.flow.Backward`); the flow is stored as ``flow/<flow_name>``.
    ``flow_codec`` and ``rgb_codec`` are codec specs (:func:`flowkit.store.flow_codec`:
    ``"jpegls:0.1"``, ``"float16"``, ``"uint8:20"``; ``"jpeg:95"``, ``"raw"``)."""
    method: str = "tvl1"
    size: int | tuple[int, int] | None = None
    step: int = 1
    max_frames: int | None = None
    flow_codec: str = "jpegls"
    rgb_codec: str = "jpeg"
    rgb: bool = True
    batch: int = 8
    prefetch: int = 2
    decode_threads: int = 0
    max_memory: int | None = None  # bytes for the engine's batches; None: ``batch`` pairs whatever their size
    backward: bool = False

    @property
    def flow_name(self) -> str:
        """The flow dataset written: ``method``, or its :func:`~flowkit.conventions.backward_name`
        (``tvl1_backward``) with ``backward``."""
        return backward_name(self.method) if self.backward else self.method


@dataclass(eq=False)
class _Job:
    """One video on its way through the feed, from when it enters the decode window until its
    result (:func:`run` keeps no more: about 5.5 KB each with its queue and event)."""
    item: VideoItem
    store_rgb: bool
    redo: bool = False
    # whether what the run read of the store (``finished_meta``) had this flow; None: not told
    knew_flow: bool | None = None
    claimed: bool = False   # this process holds the video's claim
    skipped: bool = False   # nothing to compute: held or finished elsewhere, or failed at start
    reported: bool = False  # the write thread has emitted its result
    info: VideoInfo | None = None
    frames: int = 0
    pairs: int = 0
    size: tuple[int, int] | None = None
    started: float = field(default_factory=time.perf_counter)
    failed: str | None = None  # set by whichever stage failed it first
    facts: dict = field(default_factory=dict)  # what decoding found out (rotation, intervals)
    chunks: queue.Queue = field(default_factory=lambda: queue.Queue(_QUEUE_CHUNKS))
    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


_END = object()


class _Frames:
    """A video's decoded frames (an iterable) and ``facts``, what decoding found out on the way
    (rotation applied, frame intervals; :func:`flowkit.video.iter_frames`)."""

    def __init__(self, item: VideoItem, opts: FeedOptions):
        self.item, self.opts, self.facts = item, opts, {}

    def __iter__(self) -> Iterator[np.ndarray]:
        o = self.opts
        return iter_frames(self.item.path, size=o.size, step=o.step, max_frames=o.max_frames,
                           threads=o.decode_threads, facts=self.facts)


def decode_video(item: VideoItem, opts: FeedOptions) -> tuple[VideoInfo, Iterable[np.ndarray]]:
    """The default decoder: the file's header facts and its frames, ``(H, W, 3)`` uint8 RGB, upright,
    resized and subsampled as ``opts`` asks (PyAV, :mod:`flowkit.video`). The frames' ``facts``
    (rotation, frame intervals) become video attributes and notes."""
    return probe(item.path), _Frames(item, opts)


# A video whose longest frame interval exceeds its shortest by this factor has a variable frame rate.
VFR_RATIO = 1.5


def video_notes(facts: dict, fps: float) -> tuple[dict, list[str]]:
    """Attributes to store and notes to print from what decoding found out (``facts``): among
    them ``max_frames`` when that limit cut the video (a later run with another limit would make
    other frames of it: :mod:`flowkit.store.compat` compares)."""
    attrs, notes = {}, []
    if facts.get("max_frames"):
        attrs["max_frames"] = int(facts["max_frames"])
    rotation = int(facts.get("rotation", 0))
    if rotation:
        attrs["rotation"] = rotation
        notes.append(f"rotated {rotation} degrees counterclockwise to upright, as its display "
                     "matrix asks")
    lo, hi = facts.get("frame_interval", (0.0, 0.0))
    if lo > 0 and hi > VFR_RATIO * lo:
        attrs.update(variable_frame_rate=True, frame_interval_min=float(lo),
                     frame_interval_max=float(hi))
        notes.append(f"variable frame rate (frames {1000 * lo:.0f}-{1000 * hi:.0f} ms apart); "
                     f"stored with its average rate {fps:.3g} fps and no timestamps")
    return attrs, notes


def _upright_size(info: VideoInfo, facts: dict) -> tuple[int, int]:
    """The source's (height, width) as its frames are stored, before any resize: the header's
    size, turned when decoding turned the frames upright a quarter turn (``facts["rotation"]``
    90 or 270, a portrait phone video), so that it compares with the stored frames'."""
    if int(facts.get("rotation", 0)) % 180 == 90:
        return info.width, info.height
    return info.height, info.width


def _too_few_frames(item: VideoItem, opts: FeedOptions, kept: int, facts: dict) -> VideoError:
    """Why a video gave fewer than the 2 frames one flow pair needs, and what to change: too few
    decoded, or too few kept of them by ``step`` / ``max_frames`` (``facts["decoded"]``, the
    frames decoded, from :func:`flowkit.video.iter_frames`)."""
    decoded = int(facts.get("decoded", kept))
    if opts.max_frames is not None and opts.max_frames < 2:
        return VideoError(f"{item.path}: --max-frames {opts.max_frames} keeps {kept} frame(s); "
                          "flow needs at least 2: use --max-frames 2 or more")
    if decoded >= 2 and kept < 2:
        return VideoError(f"{item.path}: {decoded} frames decoded, but --step {opts.step} keeps "
                          f"only {kept} of them; flow needs at least 2: use --step {decoded - 1} "
                          "or less")
    return VideoError(f"{item.path}: only {decoded} frame(s) decoded; flow needs at least 2")


def _decode(job: _Job, opts: FeedOptions, decode) -> None:
    """Decode thread: ``decode(item, opts)``, then chunks of up to ``batch`` frames into
    ``job.chunks``; ends with ``_END`` or the exception that stopped it."""
    def put(obj) -> bool:
        while not job.cancelled.is_set():
            try:
                job.chunks.put(obj, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        job.info, frames = decode(job.item, opts)
        job.facts = getattr(frames, "facts", job.facts)
        chunk: list[np.ndarray] = []
        for frame in frames:
            if job.cancelled.is_set():  # failed or stopped: decode no further
                return
            chunk.append(frame)
            if len(chunk) == opts.batch:
                if not put(np.stack(chunk)):
                    return
                chunk = []
        if chunk and not put(np.stack(chunk)):
            return
        put(_END)
    except BaseException as exc:  # delivered to the main thread, which fails this video
        put(exc)


def _chunks(job: _Job, should_stop: Callable[[], None]) -> Iterator[np.ndarray]:
    """The job's decoded chunks until its decoder's ``_END`` (raising the error it sent), or until
    the job is cancelled: failed meanwhile (an engine error on a batch of its pairs), its decoder
    stops without ``_END``, and waiting for one would hang the run."""
    while True:
        should_stop()
        if job.cancelled.is_set():
            return
        try:
            obj = job.chunks.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if obj is _END:
            return
        if isinstance(obj, BaseException):
            raise obj
        yield obj


class _Writer(threading.Thread):
    """The write thread: owns every open :class:`~flowkit.store.VideoWriter`, emits the results."""

    def __init__(self, store: FlowStore, opts: FeedOptions, engine_record: dict):
        super().__init__(name="flowkit-store-writer", daemon=True)
        self.store, self.opts, self.record = store, opts, engine_record
        self.flow_codec = flow_codec(opts.flow_codec)
        self.rgb_codec = rgb_codec(opts.rgb_codec)
        self.inbox: queue.Queue = queue.Queue(maxsize=8)
        self.results: queue.Queue = queue.Queue()
        self.crashed: BaseException | None = None
        self.fatal: StoreWriteError | None = None  # the store refuses data: the run must end
        self._open: dict[_Job, object] = {}

    # -- called from the main thread
    def send(self, *message) -> None:
        while True:
            if self.crashed is not None:
                raise RuntimeError(f"the store writer thread died: {self.crashed!r}") from self.crashed
            try:
                self.inbox.put(message, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        if self.is_alive():
            self.send("stop")
        self.join()
        if self.crashed is not None:
            raise RuntimeError(f"the store writer thread died: {self.crashed!r}") from self.crashed

    # -- the thread
    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug, not a bad video: stop the run, never hang it
            self.crashed = exc
            for job in list(self._open):
                self._open.pop(job).__exit__(type(exc), exc, None)

    def _serve(self) -> None:
        while True:
            kind, *args = self.inbox.get()
            if kind == "stop":
                return
            if kind == "abort_all":
                for job in list(self._open):
                    self._close(job, KeyboardInterrupt())
                continue
            job = args[0]
            if job.failed and job not in self._open and kind != "fail":
                continue
            try:
                if kind == "rgb":
                    self._writer(job).append_rgb(args[1])
                elif kind == "flow":
                    flow, ready = args[1], args[2]
                    if ready is not None:
                        ready.synchronize()
                    self._writer(job).append_flow(self.opts.flow_name, flow.numpy(), self.record)
                elif kind == "end":
                    self._close(job, None)
                elif kind == "fail":
                    self._close(job, VideoError(args[1]))
            except VIDEO_ERRORS as exc:
                self._close(job, exc)

    def _writer(self, job: _Job):
        w = self._open.get(job)
        if w is None:
            info, opts, item = job.info, self.opts, job.item
            w = self.store.writer(item.key, source=item.path, fps=info.fps / opts.step,
                                  label=item.label, label_name=item.label_name,
                                  source_size=_upright_size(info, job.facts), step=opts.step,
                                  flow_codec=self.flow_codec, rgb_codec=self.rgb_codec,
                                  redo=job.redo)
            w.__enter__()
            self._open[job] = w
        return w

    def _close(self, job: _Job, exc: BaseException | None) -> None:
        """Commit (``exc`` None) or abort the job's file, and emit its one result."""
        if job.reported:
            return
        w = self._open.pop(job, None)
        notes = []
        if exc is None:
            try:
                if w is None:  # nothing was ever written (cannot happen for >= 2 frames)
                    raise VideoError(f"{job.item.path}: nothing to write")
                attrs, notes = video_notes(job.facts, job.info.fps / self.opts.step)
                w.update_attrs(attrs)
                w.__exit__(None, None, None)
            except VIDEO_ERRORS as commit_error:
                exc = commit_error
        elif w is not None:
            w.__exit__(type(exc), exc, None)
        if isinstance(exc, StoreWriteError) and self.fatal is None:
            self.fatal = exc
        if job.claimed:
            self.store.release(job.item.key, self.opts.flow_name)
            job.claimed = False
        if exc is None:
            result = VideoResult(job.item.key, str(job.item.path), "done", frames=job.frames,
                                 pairs=job.pairs, size=job.size,
                                 seconds=time.perf_counter() - job.started)
            if w is not None and w.dropped:
                notes.append("replaced; " + _dropped_note(w.dropped))
            result.reason = "; ".join(notes)
        else:
            if job.failed is None:
                job.failed = (str(exc) if isinstance(exc, VideoError) and str(exc)
                              else failure_reason(job.item, exc))
            result = VideoResult(job.item.key, str(job.item.path), "failed", reason=job.failed)
        if not isinstance(exc, KeyboardInterrupt):
            job.reported = True
            self.results.put(result)


class _Batch:
    """Pairs waiting for the next engine call: runs of consecutive frames, each from one video."""

    def __init__(self):
        self.runs: list[tuple[_Job, np.ndarray]] = []  # (job, frames): len(frames) - 1 pairs
        self.ends: list[_Job] = []                      # videos whose last pairs are in here
        self.pairs = 0

    def frame_size(self) -> tuple[int, int] | None:
        return self.runs[0][1].shape[1:3] if self.runs else None

    def drop(self, job: _Job) -> None:
        self.runs = [r for r in self.runs if r[0] is not job]
        self.ends = [j for j in self.ends if j is not job]
        self.pairs = sum(len(f) - 1 for _, f in self.runs)


def run(items: Sequence[VideoItem], store: FlowStore, engine, opts: FeedOptions, *,
        finished_meta: Callable[[str], dict | None] | None = None,
        should_stop: Callable[[], None] = lambda: None,
        on_pairs: Callable[[int], None] | None = None,
        decode: Callable = decode_video,
        redo: frozenset[str] = frozenset(),
        unlike: Callable[[str, dict, bool], str] | None = None) -> Iterator[VideoResult]:
    """Extract ``items`` with ``engine`` into ``store``; yields one :class:`VideoResult` per item,
    in completion order. The flow goes to ``flow/<opts.flow_name>``: with ``opts.backward``,
    ``engine`` must be a :class:`~flowkit.flow.Backward` one.

    ``finished_meta(key)`` gives a finished video's metadata as the caller read the store (its RGB
    frames are then not written again), or None (not finished, or unreadable); a video found
    finished once claimed is reported as finished by another process only where that meta lacked
    the flow (none given: the run knows nothing of the store and claims no such thing).
    ``should_stop()`` raises KeyboardInterrupt when the run must stop, in which
    case the videos in flight are discarded cleanly and the interrupt propagates, after the
    results of the videos committed meanwhile (every video the store holds gets its result);
    the interrupt's ``in_flight`` is ``{key: pairs computed}`` of the videos fed until then.
    ``decode(item, opts) -> (VideoInfo, frames)`` replaces PyAV (:func:`decode_video`), e.g. to
    feed frames made in memory. ``redo``: keys whose finished file is replaced whole (RGB
    included), e.g. because it is damaged. ``unlike(key, meta, joining)``: why a video another
    process finished meanwhile (its ``meta`` as :meth:`FlowStore.metas` reads it; ``joining``: this
    run would have written its RGB) was made with other options than this run's, one line, or ""
    when it fits; such a video fails with that line instead of being skipped (a run started
    beside another with other options would otherwise count the other's videos as its own).
    Raises :class:`~flowkit.errors.StoreWriteError` when the store refuses data (full,
    read-only), after yielding the result of the video that met it.
    """
    def new_job(item: VideoItem) -> _Job:
        told = finished_meta is not None and item.key not in redo
        existing = finished_meta(item.key) if told else None
        return _Job(item, store_rgb=opts.rgb and not (existing and existing["has_rgb"]),
                    redo=item.key in redo,
                    knew_flow=(existing is not None and opts.flow_name in existing["flows"])
                    if told else None)

    writer = _Writer(store, opts, engine.describe())
    writer.start()
    feeder = _Feeder(engine, opts, writer, on_pairs)
    # Jobs are made as they enter the decode window (the video being fed and ``prefetch`` ahead)
    # and forgotten once their result is out: made for every item up front, 300k videos took
    # 1.6 GB per process before the first one started.
    upcoming = iter(items)
    window: collections.deque[_Job] = collections.deque()
    jobs: list[_Job] = []  # made and not yet reported: they may hold a claim or a decoder
    decoders: list[threading.Thread] = []  # decode threads that may still run: joined at the end
    try:
        while True:
            for item in itertools.islice(upcoming, 1 + opts.prefetch - len(window)):
                job = new_job(item)
                window.append(job)
                jobs.append(job)
                _start(job, store, opts, decode, writer.results, unlike)
                if job.thread is not None:
                    decoders.append(job.thread)
            if not window:
                break
            job = window.popleft()
            if not job.skipped:  # held or finished elsewhere, or failed at start
                feeder.add_video(job, should_stop)
            yield from _drain(writer)
            jobs = [j for j in jobs if not (j.reported or j.skipped)]
            decoders = [t for t in decoders if t.is_alive()]
            if writer.fatal is not None:
                raise writer.fatal
        feeder.flush()
        writer.finish()
        yield from _drain(writer)
        if writer.fatal is not None:
            raise writer.fatal
    except BaseException as exc:
        for job in jobs:
            job.cancelled.set()
        try:
            if writer.is_alive():
                writer.send("abort_all")
                writer.finish()
        except RuntimeError:  # the writer died: the original error says more
            pass
        if isinstance(exc, KeyboardInterrupt):  # a stop: the videos fed so far and their pairs,
            # for the caller's summary (those without a result are discarded)
            exc.in_flight = {job.item.key: job.pairs for job in jobs if job.frames}
        # The writer committed the videos whose end it had before the abort: their results go
        # out too (and the "already in the store" skips queued with them), or a stop's summary
        # would count as not started videos the store holds. Not failures: a video that failed
        # meanwhile failed because of what stops the run (a full disk fails every video in
        # flight) and counts as not started, as the ones aborted. Not
        # when the caller closed the generator (GeneratorExit): it takes nothing more.
        if not isinstance(exc, GeneratorExit):
            yield from (result for result in _drain(writer) if result.status != "failed")
        raise
    finally:
        for job in jobs:
            job.cancelled.set()
            if job.claimed:  # interrupted or stopped before its result
                store.release(job.item.key, opts.flow_name)
                job.claimed = False
        _join(decoders)


def _join(threads: list[threading.Thread]) -> None:
    """Wait for the cancelled decode threads still running (each ends at its next frame): a
    daemon thread inside native code (PyAV's decoder, OpenCV's resize) when the interpreter
    exits is killed unwinding through it, and the process aborts ("terminate called without an active
    exception", exit 134) after a run that went well. A decoder stuck in a file is not waited
    for past :data:`_JOIN_S`."""
    deadline = time.monotonic() + _JOIN_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _held_reason(holder: str) -> str:
    """The skip reason of a video another process holds; ``holder`` is the claim's description,
    "pid N on HOST (since ...)". Not "if that run fails": a claim copied with the store (``cp -r``
    mid-extraction) names a run that writes into the original store, so a rerun here picks the
    video up once that process has ended, whatever its outcome (its claim is then stale)."""
    pid = holder.split(" on ", 1)[0]
    return f"{HELD} {holder}; rerun once {pid} has ended to pick it up"


def _start(job: _Job, store: FlowStore, opts: FeedOptions, decode, results: queue.Queue,
           unlike: Callable[[str, dict, bool], str] | None = None) -> None:
    """Claim the video and start decoding it; a video another process holds (or finished since
    the run began) gets its "skipped" result instead, and one whose finished file is damaged
    (without ``--redo``), that holds the flow but cannot be read or was made with other options
    (``unlike``, :func:`_found_finished`) or that the store cannot claim (a key too long for its
    file names) its "failed" result, before any flow is computed."""
    if job.thread is not None or job.skipped:
        return
    try:
        holder = store.claim(job.item.key, opts.flow_name)
    except StoreWriteError:
        raise  # the store refuses data (full, read-only): the run ends
    except StoreError as exc:  # e.g. a key too long for the store's file names: this video's own
        job.skipped = True
        results.put(VideoResult(job.item.key, str(job.item.path), "failed",
                                reason=failure_reason(job.item, exc)))
        return
    status = "skipped"
    if holder is None:
        job.claimed = True
        on_disk, damage = ([], "") if job.redo else store.finished_state(job.item.key)
        if opts.flow_name not in on_disk and not damage:
            job.thread = threading.Thread(target=_decode, args=(job, opts, decode), daemon=True,
                                          name=f"flowkit-decode-{job.item.key}")
            job.thread.start()
            return
        store.release(job.item.key, opts.flow_name)
        job.claimed = False
        if damage:  # committing into (or reading) a damaged file fails: say so before computing
            status, reason = "failed", damage
        else:
            status, reason = _found_finished(job, store, opts.flow_name, unlike)
    else:
        reason = _held_reason(holder)
    job.skipped = True
    results.put(VideoResult(job.item.key, str(job.item.path), status, reason=reason))


def _found_finished(job: _Job, store: FlowStore, name: str,
                    unlike: Callable[[str, dict, bool], str] | None = None) -> tuple[str, str]:
    """``(status, reason)`` of a video the run set out to compute whose finished file, once
    claimed, holds ``flow/<name>`` and no damage :meth:`FlowStore.finished_state` finds. The run
    computes a video because what it read of the store lacked that flow; it was "finished by
    another process" only if the file now reads (as the store's index reads it) with the flow:
    then it changed since. A file the index cannot read, which is why the run could not see the
    flow, fails with what is wrong with it (:meth:`FlowStore.problems_line`: damage only a full
    read meets, a newer flowkit's codec). One that reads but was made with other options than
    this run's (``unlike``: another run started beside this one with other options, into a store
    that had no video to compare them with) fails with what differs: skipping it would leave the
    store mixing both runs' options while each said it finished."""
    key = job.item.key
    try:
        meta = store.metas([key]).get(key)
    except (StoreError, OSError):
        meta = None
    if meta is None or name not in meta["flows"]:
        return "failed", store.problems_line(key)
    mismatch = unlike(key, meta, job.store_rgb) if unlike is not None else ""
    if mismatch:
        return "failed", mismatch
    if job.knew_flow is False:
        return "skipped", f"already in the store with flow/{name} (finished by another process)"
    return "skipped", f"already in the store with flow/{name}"


def _drain(writer: _Writer) -> Iterator[VideoResult]:
    while True:
        try:
            yield writer.results.get_nowait()
        except queue.Empty:
            return


def batch_limit(engine, opts: FeedOptions, size: tuple[int, int]) -> int:
    """Pairs per engine call for frames of ``size``: ``opts.batch``, fewer when that many pairs
    would need more than ``opts.max_memory`` (the engine's :meth:`memory_per_pair`), at least 1."""
    if opts.max_memory is None:
        return opts.batch
    per_pair = engine.memory_per_pair(int(size[0]), int(size[1]))
    return max(1, min(opts.batch, int(opts.max_memory // max(per_pair, 1))))


class _Feeder:
    """The main thread's part: turns chunks into batches, runs the engine, hands flows on."""

    def __init__(self, engine, opts: FeedOptions, writer: _Writer, on_pairs):
        self.engine, self.opts, self.writer, self.on_pairs = engine, opts, writer, on_pairs
        self.device = torch.device(engine.device)
        self.pin = self.device.type == "cuda"
        self.independent = getattr(engine, "independent_pairs", True)
        self.batch = _Batch()

    def add_video(self, job: _Job, should_stop) -> None:
        previous = None
        try:
            for chunk in _chunks(job, should_stop):
                if job.failed:
                    break
                job.size = tuple(int(s) for s in chunk.shape[1:3])
                if job.store_rgb:
                    self.writer.send("rgb", job, chunk)
                run = chunk if previous is None else np.concatenate([previous[None], chunk])
                previous = chunk[-1]
                job.frames += len(chunk)
                self._add_run(job, run)
            if not job.failed and job.frames < 2:
                raise _too_few_frames(job.item, self.opts, job.frames, job.facts)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self._fail([job], failure_reason(job.item, exc))
        job.cancelled.set()
        if job.failed:
            self.batch.drop(job)
        elif not self.batch.runs:
            self.writer.send("end", job)
        else:
            self.batch.ends.append(job)

    def _add_run(self, job: _Job, run: np.ndarray) -> None:
        """Queue the pairs of ``run`` (consecutive frames), running the engine on full batches;
        stops once the job failed (an engine error on a batch of its pairs)."""
        while len(run) >= 2 and not job.failed:
            if self.batch.runs and (self.batch.frame_size() != run.shape[1:3] or (
                    not self.independent and self.batch.runs[-1][0] is not job)):
                self.flush()
            limit = batch_limit(self.engine, self.opts, run.shape[1:3])
            take = min(limit - self.batch.pairs, len(run) - 1)
            self.batch.runs.append((job, run[:take + 1]))
            self.batch.pairs += take
            run = run[take:]
            if self.batch.pairs >= limit:
                self.flush()

    def flush(self) -> None:
        """Run the engine on the pending pairs, hand their flows and finished videos to the writer."""
        batch, self.batch = self.batch, _Batch()
        if batch.runs:
            try:
                flow, ready = self._compute(batch.runs)
            # Any error: the batch is detached from the feeder, so its videos must fail here or
            # be lost without a result (out of memory is a MemoryError, an engine's bug a
            # TypeError: each fails its videos, one line each, as VIDEO_ERRORS do).
            except Exception as exc:  # noqa: BLE001
                jobs = list(dict.fromkeys(job for job, _ in batch.runs))
                cause = (f"engine failed on a batch of {batch.pairs} pairs "
                         f"({type(exc).__name__}: {exc})")
                for job in jobs:  # one line per video, naming it as every other failure does
                    self._fail([job], f"{job.item.path}: {cause}")
                batch.ends = [j for j in batch.ends if j not in jobs]
            else:
                start = 0
                for job, frames in batch.runs:
                    n = len(frames) - 1
                    if not job.failed:
                        self.writer.send("flow", job, flow[start:start + n], ready)
                        job.pairs += n
                    start += n
                if self.on_pairs:
                    self.on_pairs(batch.pairs)
        for job in batch.ends:
            self.writer.send("end", job)

    def _compute(self, runs) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The engine on the runs' pairs; returns the flows in host memory and, on CUDA, the event
        that marks the end of their asynchronous copy."""
        total = sum(len(f) for _, f in runs)
        first = 0
        idx0, idx1 = [], []
        for _, frames in runs:
            n = len(frames)
            idx0.extend(range(first, first + n - 1))
            idx1.extend(range(first + 1, first + n))
            first += n
        if self.pin:
            host = torch.empty((total, *runs[0][1].shape[1:]), dtype=torch.uint8, pin_memory=True)
            np.concatenate([f for _, f in runs], out=host.numpy())
            frames = host.to(self.device, non_blocking=True)
        elif len(runs) == 1:
            frames = torch.from_numpy(runs[0][1])
        else:
            frames = torch.from_numpy(np.concatenate([f for _, f in runs]))
        frames = frames.permute(0, 3, 1, 2)
        if len(runs) == 1:  # one run: the pairs are views, no gather
            frames0, frames1 = frames[:-1], frames[1:]
        else:
            i0 = torch.tensor(idx0, device=frames.device)
            i1 = torch.tensor(idx1, device=frames.device)
            frames0, frames1 = frames.index_select(0, i0), frames.index_select(0, i1)
        flow = self.engine(frames0, frames1).float()
        if flow.device.type != "cuda":
            return flow.cpu(), None
        out = torch.empty(flow.shape, dtype=torch.float32, pin_memory=True)
        out.copy_(flow, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return out, ready

    def _fail(self, jobs: list[_Job], reason: str) -> None:
        for job in jobs:
            if not job.failed:
                job.failed = reason
            job.cancelled.set()
            self.writer.send("fail", job, job.failed)


__all__ = ["VideoResult", "FeedOptions", "run", "decode_video", "failure_reason", "VIDEO_ERRORS"]
