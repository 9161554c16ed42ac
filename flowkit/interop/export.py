"""Store -> mmaction2 rawframes: the run behind ``flowkit export rawframes STORE OUT_DIR``.

Writes ``OUT_DIR/<key>/img_%05d.jpg`` and ``flow_{x,y}_%05d.jpg`` (format: :mod:`flowkit.rawframes`)
for every video of the store, and ``flow_{x,y}_m1_%05d.jpg`` where the store also holds the flow's
backward flow (``flow/<name>_backward``, denseflow's ``-s -1`` naming: numbered by the frame each
pair starts from; a video that holds only the backward flow gets only these), then the annotation
lists mmaction2's ``RawframeDataset`` reads:

- ``<name>_rawframes.txt``: ``frame_dir total_frames label`` with the RGB frame count (what
  mmaction2's ``build_file_list.py`` writes), ``<name>_flow.txt``: the same with the flow pair
  count (n - 1), so that a flow clip never asks for a pair that does not exist;
- ``<name>`` is ``all`` (every exported, labelled video) and the stem of each ``split_lists`` file
  (UCF101 ``trainlist01.txt`` or an mmaction2 list: its videos, in its order);
- ``label_map.txt``: the store's classes, one per line (label i on line i).

A video the store holds at a frame step s > 1 (``flowkit extract --step s``) is written as it is
stored: its frames are every s-th frame of the video and its flow runs between consecutive
written frames, so the names are plain (``flow_x_*``, not denseflow's ``flow_x_p<s>_*``, which
would say every frame is there). The step goes into the folder's hidden
:data:`flowkit.rawframes.INFO_FILE`, which ``flowkit import rawframes`` reads back, and the
summary notes it (other readers see step-1 rawframes).

Resumable: a video is written into the hidden folder ``.<video>.partial`` next to its final
folder and renamed when complete, so an existing ``OUT_DIR/<key>`` is always finished and is
skipped on a rerun, by the store's index (its file is never opened: 300k videos are stat'ed, not
read, before the first new one is written); the options are kept in
``OUT_DIR/.flowkit-export.json`` and a rerun with other options is refused (the folder would mix
two quantisations or two flows). The flow is chosen for the whole store before anything is
written (:func:`store_flows`, from the store's index): the one ``--flow`` names, else the store's
only forward flow; a store of several is refused, naming them.
The stamp holds the chosen name, so a rerun with or without ``--flow NAME`` resumes alike; a folder
exported without flow (``"flow": false``) is refused a rerun that would add flow. An older
flowkit's stamp of ``flow_name`` null ("each video's only flow") is rewritten with the store's
only flow, or, once the store holds several, with the one ``--flow`` names if the exported images
are that flow, within the export's error, and every video holding flow holds it
(:func:`_exported_flow_is`). A run that exports no video leaves no stamp (nor
the folder, if it made it), and a stamp beside no exported video is stale: it blocks no rerun.
One exporter per ``OUT_DIR`` at a time. Parallel: ``workers`` threads, one video each
(:mod:`flowkit.interop.pool`).
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import rawframes
from ..annotations import read_keys, write_label_map, write_mmaction_list
from ..conventions import BACKWARD_SUFFIX, backward_name, is_backward
from ..errors import FlowkitError
from ..files import atomic_write_json
from ..progress import Progress, StopFlag, Stopped
from ..store import DEFAULT_BOUND, FlowStore
from ..store.codecs import Jpeg
from .pool import check_common, failure_reason, run_threads

OPTIONS_FILE = ".flowkit-export.json"
LABEL_MAP = "label_map.txt"
CHUNK = 32  # frames read, coded and written at a time: bounds memory whatever the video length
#: How far an older export's flow images may be from the store's flow ``--flow`` names and still be
#: that flow (:func:`_exported_flow_is`): mean px, in 8-bit steps of the stamp's bound
#: (``2 * bound / 255``). The quantiser errs by a quarter step on average and JPEG q95 moves smooth
#: flow images by a level or less on average, so 2 steps covers both; another engine's flow lies
#: px away. A near-copy of the images stored as another flow (the export imported back) is nearer
#: still, so the nearest flow alone cannot tell which one was exported.
SAME_FLOW_STEPS = 2.0


@dataclass
class ExportConfig:
    """How rawframes are written; every field is a ``flowkit export rawframes`` option.

    ``flow_name`` None exports the store's only forward flow (a store of several must name one:
    :func:`export_rawframes` refuses it; a video holding no flow at all is exported without); the
    backward flow of the flow exported, where a video holds it, is written beside it (and alone,
    as ``_m1`` files, for a video that holds only the backward flow);
    ``bound``: the quantiser's range in pixels; ``quality``: JPEG quality of images and flow;
    ``start_index``: number of the first file (1: mmaction2, 0: denseflow).
    """

    flow_name: str | None = None
    bound: float = DEFAULT_BOUND
    quality: int = rawframes.DEFAULT_QUALITY
    start_index: int = rawframes.DEFAULT_START_INDEX
    rgb: bool = True
    flow: bool = True
    workers: int = 1
    split_lists: Sequence[str | os.PathLike] = ()

    def __post_init__(self):
        check_common(self, "export")
        if not 1 <= int(self.quality) <= 100:
            raise FlowkitError(f"JPEG quality must be in 1..100, got {self.quality!r}")
        if self.start_index not in (0, 1):
            raise FlowkitError(f"start index must be 0 or 1, got {self.start_index!r}")

    def format_options(self) -> dict:
        """What makes two exports into one folder compatible. ``flow`` is whether flow images
        are written: false for a store holding no flow (no ``flow_name`` chosen) as for
        ``--no-flow-images``, so that the stamp never reads like an older flowkit's
        ``flow_name`` null "each video's only flow" (:func:`_check_options`)."""
        return {"format": "mmaction2-rawframes", "flow_name": self.flow_name,
                "bound": float(self.bound), "quality": int(self.quality),
                "start_index": int(self.start_index), "rgb": self.rgb,
                "flow": self.flow and self.flow_name is not None}


@dataclass
class VideoExport:
    """One video's outcome: ``status`` done / skipped (already exported) / failed."""

    key: str
    status: str
    reason: str = ""
    label: int = -1
    frames: int = 0
    pairs: int = 0
    backward_pairs: int = 0
    clipped: int = 0  # flow values beyond the bound, written as 0 or 255
    values: int = 0   # flow values written
    kept_as_is: int = 0  # RGB frames written as the store's JPEG bytes
    step: int = 1  # the store's frame step of the video (recorded in rawframes.INFO_FILE if > 1)


@dataclass
class ExportSummary:
    out_dir: str
    results: list[VideoExport]
    lists: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    flow_name: str | None = None  # the flow exported (None: no flow)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def to_dict(self) -> dict:
        clipped = sum(r.clipped for r in self.results)
        values = sum(r.values for r in self.results)
        return {"out_dir": self.out_dir, "seconds": round(self.seconds, 3),
                "flow_name": self.flow_name,
                "done": self.count("done"), "skipped": self.count("skipped"),
                "failed": self.count("failed"), "lists": self.lists,
                "clipped_values": clipped,
                "clipped_fraction": clipped / values if values else 0.0,
                "rgb_kept_as_is": sum(r.kept_as_is for r in self.results),
                "unlabelled": self.unlabelled, "notes": self.notes,
                "videos": [asdict(r) for r in self.results]}


def export_rawframes(store_path: str | os.PathLike, out_dir: str | os.PathLike,
                     config: ExportConfig | None = None, *, progress: Progress | None = None,
                     stop: StopFlag | None = None) -> ExportSummary:
    """Export every video of the store at ``store_path`` to ``out_dir`` as rawframes, resuming.

    The flow is chosen first (:func:`choose_flow`): a store of several forward flows without
    ``config.flow_name``, or a name no video holds, raises :class:`~flowkit.errors.FlowkitError`
    before ``out_dir`` is touched. ``progress`` gets the tasks "videos" and "frames" and a line per
    failed video (and a bar over the videos new to the store's index, when they take a while to
    read); once ``stop`` is set, the videos in flight are abandoned (their partial folders removed)
    and :class:`~flowkit.progress.Stopped` is raised.
    """
    started = time.perf_counter()
    config = config or ExportConfig()
    progress, stop = progress or Progress(), stop or StopFlag()
    store = FlowStore(store_path)
    keys = store.keys()
    if not keys:
        busy = in_flight_note(store)
        raise FlowkitError(f"store {store.path} holds no finished videos; nothing to export"
                           + (f"; {busy}" if busy else ""))
    split_keys = {Path(p).stem: read_keys(p) for p in config.split_lists}
    out = Path(out_dir)
    # --flow named: every video must hold it; else the store's only flow, and a video holding no
    # flow at all is exported without (as before the flow was chosen for the whole store)
    named, auto = config.flow_name is not None, None
    # every video's facts from the index: a resumed run skips what it exported before without
    # opening the file (300k videos: a stat each, not an HDF5 open)
    metas = store.metas(keys, progress)
    if config.flow:
        flows = _count_flows(metas)
        if flows is not None:  # else no video is readable: each one's failure says why
            name, auto = choose_flow(flows, config.flow_name, store.path)
            config = replace(config, flow_name=name)  # the stamp holds the flow exported
    made_dir = not out.exists()
    upgrade_notes: list[str] = []
    made_stamp = _check_options(out, config, auto,
                                lambda name: _exported_flow_is(store, metas, out, name, config),
                                upgrade_notes)

    videos = progress.start("videos", total=len(keys))
    frames = progress.start("frames")
    lock = threading.Lock()  # the worker threads advance one counter

    def written(n: int) -> None:
        if n:
            with lock:
                frames.advance(n)

    def work(key: str) -> VideoExport:  # threads share the store: each opens its own handles
        return _export_one(store, key, metas.get(key), out, config, stop, named, written)

    results = []
    try:
        for result in run_threads(keys, work, config.workers, stop):
            results.append(result)
            videos.advance()
            if result.status == "failed":
                progress.log(f"failed {result.key}: {result.reason}")
    except BaseException:
        if made_stamp:
            _forget_empty_export(out, made_dir)
        raise
    finally:
        videos.close()
        frames.close()
    order = {k: i for i, k in enumerate(keys)}
    results.sort(key=lambda r: order[r.key])
    summary = ExportSummary(str(out), results, [], 0.0, flow_name=config.flow_name,
                            notes=upgrade_notes)
    busy = in_flight_note(store)  # after the run: those finished meanwhile were not exported
    if busy:
        summary.notes.append(busy)
    if made_stamp and not any(r.status == "done" for r in results) and \
            _forget_empty_export(out, made_dir):
        summary.notes.append(f"no video was exported: {out} is left "
                             f"{'empty' if out.exists() else 'uncreated'}, free for a rerun "
                             "with other options")
    else:
        _write_lists(out, store.classes, results, split_keys, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def in_flight_note(store: FlowStore) -> str:
    """"N videos being extracted by other runs were not exported (...)": the videos a live
    process is extracting into ``store`` (:meth:`~flowkit.store.FlowStore.in_flight`, one walk
    of the store), which an export taken now lacks; empty when there are none."""
    busy = store.in_flight()
    if not busy:
        return ""
    key = min(busy)  # the same example from run to run
    return (f"{len(busy)} videos being extracted by other runs were not exported (e.g. {key} "
            f"by {busy[key]}); rerun export when they are done")


def store_flows(store: FlowStore, keys: Sequence[str],
                progress: Progress | None = None) -> dict[str, int] | None:
    """``{flow name: number of videos holding it}`` over the videos ``keys`` of ``store``, from
    the store's index (:meth:`~flowkit.store.FlowStore.metas`: a file unchanged since it was
    indexed is only stat'ed, a new one is read once, with a ``progress`` bar over them, and
    indexed for the next run); None when no video can be read. Every video is looked at, not a
    sample: videos of one store may hold different flows."""
    return _count_flows(store.metas(keys, progress))


def _count_flows(metas: dict[str, dict]) -> dict[str, int] | None:
    """:func:`store_flows` of the videos' ``metas`` (:meth:`~flowkit.store.FlowStore.metas`)."""
    if not metas:
        return None
    counts: dict[str, int] = {}
    for meta in metas.values():
        for name in meta["flows"]:
            counts[name] = counts.get(name, 0) + 1
    return counts


#: How a library call names the flow that ``--flow`` names on the command line.
PYTHON_FLOW = "ExportConfig(flow_name=NAME)"


def _forward_name(name: str) -> str:
    """The flow ``--flow`` names for store flow ``name``: ``tvl1`` for tvl1 and tvl1_backward."""
    return name[:-len(BACKWARD_SUFFIX)] if is_backward(name) else name


def choose_flow(flows: dict[str, int], flow_name: str | None,
                store_path: str | os.PathLike = "the store") -> tuple[str | None, str | None]:
    """``(flow to export, the store's only flow)`` for a store holding ``flows``
    (:func:`store_flows`): ``flow_name`` when a video holds it or its backward flow, else the
    store's only forward flow (or, where no video holds forward flow, the only flow whose backward
    flow it holds); None when the store holds no flow. A usage error (FlowkitError) for a
    backward name, a name no video holds, or several flows and no ``flow_name``."""
    bases = sorted({_forward_name(n) for n in flows})
    forward = [n for n in bases if n in flows]
    only = (forward or bases)[0] if len(forward or bases) == 1 else None
    if flow_name is None:
        if len(forward or bases) > 1:
            raise FlowkitError(f"{store_path} holds several flows; choose one with --flow: "
                               f"{_choices(flows)} ({PYTHON_FLOW} in Python)")
        return only, only
    if is_backward(flow_name):
        raise FlowkitError(f"{flow_name!r} is backward flow; name its forward flow with --flow "
                           f"({_forward_name(flow_name)}, ExportConfig(flow_name="
                           f"{_forward_name(flow_name)!r}) in Python: the backward flow is "
                           "exported beside it, as flow_{x,y}_m1_*)")
    if flow_name not in bases:
        raise FlowkitError(f"{store_path} holds no flow {flow_name!r}"
                           + (f"; choose one with --flow: {_choices(flows)} ({PYTHON_FLOW} in "
                              "Python)" if bases
                              else " (none at all); export its RGB frames with --no-flow-images "
                              "(ExportConfig(flow=False) in Python)"))
    return flow_name, only


def _choices(flows: dict[str, int]) -> str:
    """The names ``--flow`` takes, each with what of it is exported: "costvolume, tvl1 (with its
    backward flow tvl1_backward as flow_{x,y}_m1_*)"."""
    parts = []
    for base in sorted({_forward_name(n) for n in flows}):
        back = backward_name(base) in flows
        if base not in flows:
            parts.append(f"{base} (only its backward flow {backward_name(base)}, as "
                         "flow_{x,y}_m1_*)")
        else:
            parts.append(base + (f" (with its backward flow {backward_name(base)} as "
                                 "flow_{x,y}_m1_*)" if back else ""))
    return ", ".join(parts)


def _check_options(out: Path, config: ExportConfig, auto: str | None = None,
                   exported_as: Callable[[str], str | None] | None = None,
                   notes: list[str] | None = None) -> bool:
    """Create ``out`` and its options stamp, or check the stamp there; True when this run wrote
    the stamp. A stamp of other options is refused unless ``out`` holds no exported video (an
    export that exported nothing: the stamp is replaced). A stamp of ``flow`` true without a flow
    name is an older flowkit's: where ``out`` holds flow images (its export of "each video's only
    flow") it matches ``auto``, the store's only flow, or the flow ``--flow`` names where
    ``exported_as(name)`` finds the exported images are that flow (:func:`_exported_flow_is`:
    the store may have gained a second flow since; a note in ``notes`` says so), and is
    rewritten with that name; where it holds none, it is read as an export without flow (the
    store held none then), which a run that would add flow to the folder is refused."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / OPTIONS_FILE
    wanted = config.format_options()
    if path.is_file():
        try:
            had = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FlowkitError(f"{path}: unreadable ({e}); delete it only if {out} holds no "
                               "earlier export") from None
        if had == wanted:
            return False
        if had.get("flow_name") is None and had.get("flow") and _holds_export(out):
            # an older stamp: "each video's only flow", or a store without flow (no flow image)
            if not _holds_flow(out):
                had = {**had, "flow": False}
            elif wanted["flow_name"] is not None and {**had, "flow_name": wanted["flow_name"]} \
                    == wanted:
                why = None if wanted["flow_name"] == auto else \
                    exported_as(wanted["flow_name"]) if exported_as is not None else "unchecked"
                if why is None:
                    had = wanted
                else:  # another flow of the store may be what was exported
                    raise FlowkitError(
                        f"{out} was exported by an older flowkit as each video's only flow, and "
                        f"its images are not known to be flow {wanted['flow_name']!r} ({why}); "
                        "resume it with --flow naming the flow exported then, or export "
                        f"{wanted['flow_name']!r} into a new folder")
            if had == wanted:
                atomic_write_json(path, wanted)
                if auto != wanted["flow_name"] and notes is not None:
                    notes.append(f"{path}: an older flowkit's stamp (flow_name null, each "
                                 f"video's only flow) rewritten with flow_name "
                                 f"{wanted['flow_name']!r}, the flow its images are")
                return False
        if _holds_export(out):
            raise FlowkitError(_other_options(out, had, wanted))
    elif any(p.name != OPTIONS_FILE for p in out.iterdir()):
        raise FlowkitError(f"{out} is not empty and holds no flowkit export; choose a new or "
                           "empty folder")
    atomic_write_json(path, wanted)
    return True


def _exported_flow_is(store: FlowStore, metas: dict[str, dict], out: Path, name: str,
                      config: ExportConfig) -> str | None:
    """Why the flow images an older flowkit exported into ``out`` (its stamp: "each video's
    only flow") are not the store's flow ``name``, None when they are, as far as is cheaply
    seen: every video of the store (``metas``: its index) that holds flow holds ``name`` (or its
    backward flow; else that video could never be exported under the stamp), and the first
    exported one (its folder in ``out``) also holding another forward flow (one the store gained
    since) has its first exported pair within :data:`SAME_FLOW_STEPS` of ``name``, or nearer to
    ``name`` than to each other flow, at the stamp's bound."""
    sample = None
    for key, meta in metas.items():
        held = set(meta["flows"])
        if not held:
            continue
        if not held & {name, backward_name(name)}:
            return f"e.g. {key} holds no flow {name!r}"
        others = sorted(n for n in held if not is_backward(n) and n != name)
        if sample is None and others and name in held and int(meta["num_frames"]) > 1 \
                and (out / key).is_dir():
            sample = key, others
    if sample is None:
        return None
    key, others = sample
    video = rawframes.scan_folder(out / key)
    if video.problems or not video.flow:
        return f"{out / key} holds no readable flow images"
    images = rawframes.read_flow(video, video.flow[:1], config.bound)  # (1, 2, H, W) px

    def error(flow: str) -> float:  # mean |exported - stored| px, both within the bound
        stored = np.clip(store.read_flow(key, flow, slice(0, 1)), -config.bound, config.bound)
        return float(np.abs(images - stored).mean()) if stored.shape == images.shape else np.inf

    errors = {flow: error(flow) for flow in (name, *others)}
    nearest = min(errors, key=errors.get)
    same = SAME_FLOW_STEPS * 2 * config.bound / 255  # the export's own error allows this much
    if errors[name] > max(errors[nearest], same):
        return (f"{key}'s first pair is {errors[nearest]:.2g} px from flow {nearest!r}, "
                f"{errors[name]:.2g} px from {name!r} (over the {same:.2g} px an export errs)")
    return None


def _other_options(out: Path, had: dict, wanted: dict) -> str:
    """Why ``out``, exported with the stamp ``had``, cannot take a run of ``wanted``: one line
    with what to do. A folder exported without flow never gains flow (its lists and stamp
    would claim flow some videos lack)."""
    diff = ", ".join(f"{k} {had.get(k)!r} -> {v!r}" for k, v in wanted.items()
                     if had.get(k) != v)
    if wanted["flow"] and not had.get("flow"):
        return (f"{out} was exported without flow (the store held none then, or "
                f"--no-flow-images; {diff}); export flow {wanted['flow_name']!r} into a new "
                "folder, or resume this one without flow with --no-flow-images")
    return (f"{out} was exported with other options ({diff}); use a new folder or the same "
            "options to resume")


def _holds(out: Path, wanted: Callable[[bool, str], bool]) -> bool:
    """Whether a file under ``out`` is ``wanted(in out itself, its name)``; the walk stops at the
    first one (a real export answers at once)."""
    for folder, _, files in os.walk(out):
        top = Path(folder) == out
        if any(wanted(top, name) for name in files):
            return True
    return False


def _holds_flow(out: Path) -> bool:
    """Whether a video folder under ``out`` holds a flow image (``flow_x_*``; not a list of
    ``out`` itself)."""
    return _holds(out, lambda top, name: not top and name.startswith("flow_"))


def _holds_export(out: Path) -> bool:
    """Whether ``out`` holds anything an export wrote besides its stamp and label map: a video's
    file or a list."""
    return _holds(out, lambda top, name: not (top and name in (OPTIONS_FILE, LABEL_MAP)))


def _forget_empty_export(out: Path, made_dir: bool) -> bool:
    """Undo what a run that exported nothing made: the stamp, a label map and the empty folders
    (``out`` too where ``made_dir``), so that a rerun may take other options; False (nothing
    removed) when ``out`` holds an exported file after all."""
    if _holds_export(out):
        return False
    for name in (OPTIONS_FILE, LABEL_MAP):  # a label map beside a stamp is an export's
        (out / name).unlink(missing_ok=True)
    for folder, _, _ in sorted(os.walk(out), key=lambda w: -len(Path(w[0]).parts)):
        if Path(folder) != out or made_dir:
            try:
                os.rmdir(folder)
            except OSError:  # not empty
                pass
    return True


def _flows(meta: dict, config: ExportConfig, named: bool = True) -> list[tuple[str, bool]]:
    """The store flows to write for a video: ``(name, backward)`` for the chosen flow and its
    backward flow, as far as the video holds them (a video may hold only the backward one).
    ``named`` False: ``config.flow_name`` is the store's only flow, not one the user named, and a
    video holding no flow at all is exported without flow."""
    if not config.flow:
        return []
    held = sorted(meta["flows"])
    if not held and not named:
        return []
    # each flow by its forward name: "tvl1" for tvl1 and tvl1_backward alike; without --flow the
    # choice is among the forward flows, a lone backward flow only where there is none
    bases = sorted({n[:-len(BACKWARD_SUFFIX)] if is_backward(n) else n for n in held})
    forward = [n for n in held if not is_backward(n)]
    if config.flow_name is not None:
        if is_backward(config.flow_name):
            raise FlowkitError(f"{config.flow_name!r} is backward flow; name its forward flow "
                               f"with --flow ({PYTHON_FLOW} in Python; the backward flow is "
                               "exported beside it, as flow_{x,y}_m1_*)")
        if config.flow_name not in bases:
            raise FlowkitError(f"no flow {config.flow_name!r} (it has: "
                               f"{', '.join(held) or 'none'})")
        name = config.flow_name
    elif len(forward or bases) > 1:
        raise FlowkitError(f"it has several flows ({', '.join(held)}); choose one with --flow "
                           f"({PYTHON_FLOW} in Python)")
    elif not bases:
        return []
    else:
        name = (forward or bases)[0]
    return [(n, backward) for n, backward in ((name, False), (backward_name(name), True))
            if n in held]


def _export_one(store: FlowStore, key: str, meta: dict | None, out: Path, config: ExportConfig,
                stop: StopFlag, named: bool = True,
                written: Callable[[int], None] = lambda n: None) -> VideoExport:
    """Export video ``key`` into ``out / key``, or skip it when that folder exists. ``meta``: its
    facts from the store's index (:meth:`~flowkit.store.FlowStore.metas`), so that a skipped
    video's file is never opened; None for a video the index could not read, whose
    :meth:`~flowkit.store.FlowStore.meta` then says why it fails. ``written(n)``: n more
    frames written (RGB frames, else forward flow pairs), per chunk; a video that fails takes
    back what it counted, so the count ends at the exported videos' frames."""
    final = out / key
    counted = [0]

    def count(n: int) -> None:
        counted[0] += n
        written(n)

    try:
        meta = meta if meta is not None else store.meta(key)
        label = int(meta.get("label", -1))
        if final.is_dir():
            found = rawframes.scan_folder(final)
            return VideoExport(key, "skipped", "already exported", label, len(found.rgb),
                               len(found.flow))
        # a video of one frame has no frame pair, so no flow of any name: exported without
        flows = _flows(meta, config, named) if int(meta["num_frames"]) > 1 else []
        rgb = config.rgb and meta["has_rgb"]
        if not rgb and not flows:
            raise FlowkitError("nothing to export (no RGB frames and no flow)")
        result = VideoExport(key, "done", label=label, step=int(meta.get("step", 1)))
        _write_video(store, key, final, int(meta["num_frames"]), rgb, flows, config, stop, result,
                     count)
        return result
    except Stopped:
        written(-counted[0])  # its partial folder is gone: none of its frames was exported
        raise
    except Exception as exc:  # one bad video never stops the run
        written(-counted[0])
        return VideoExport(key, "failed", failure_reason(exc))


def _write_video(store: FlowStore, key: str, final: Path, n: int, rgb: bool,
                 flows: list[tuple[str, bool]], config: ExportConfig, stop: StopFlag,
                 result: VideoExport, written: Callable[[int], None] = lambda n: None) -> None:
    """Write one video into a partial folder and rename it ``final``; ``flows``: the store's flow
    names to write, each with whether it is backward flow. ``written(n)`` after each chunk of
    ``CHUNK`` frames: its RGB frames, or without RGB its forward flow pairs (the "frames"
    counter, which a long video would otherwise hold still for its whole writing)."""
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed run's leftover: redone from scratch
    write = dict(bound=config.bound, quality=config.quality, start_index=config.start_index)
    try:
        partial.mkdir(parents=True)
        rawframes.write_info(partial, result.step)  # a step above 1, for flowkit import
        # JPEG frames of the asked quality are written as stored: no second JPEG generation.
        codec = store.rgb_codec(key) if rgb else None
        as_is = isinstance(codec, Jpeg) and codec.quality == config.quality
        for first in range(0, n, CHUNK) if rgb else ():
            stop.check()
            frames = store.read_rgb(key, slice(first, first + CHUNK), decode=not as_is)
            rawframes.write_frames(partial, first, rgb=frames, **write)
            result.frames += len(frames)
            result.kept_as_is += len(frames) if as_is else 0
            written(len(frames))
        for flow_name, backward in flows:
            for first in range(0, n - 1, CHUNK):
                stop.check()
                flow = store.read_flow(key, flow_name, slice(first, first + CHUNK))
                result.clipped += int(np.count_nonzero(np.abs(flow) > config.bound))
                result.values += flow.size
                rawframes.write_frames(partial, first, **{"backward" if backward else "flow": flow},
                                       **write)
                if backward:
                    result.backward_pairs += len(flow)
                else:
                    result.pairs += len(flow)
                    if not rgb:
                        written(len(flow))
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _write_lists(out: Path, classes: list[str], results: list[VideoExport],
                 split_keys: dict[str, list[str]], summary: ExportSummary) -> None:
    exported = {r.key: r for r in results if r.status in ("done", "skipped")}
    summary.unlabelled = sorted(k for k, r in exported.items() if r.label < 0)
    stepped = [r for r in results if r.status == "done" and r.step > 1]
    if stepped:
        steps = sorted({r.step for r in stepped})
        summary.notes.append(
            f"{len(stepped)} videos are stored at frame step {', '.join(map(str, steps))} (e.g. "
            f"{stepped[0].key}): written as stored (every s-th frame of the video, flow between "
            f"consecutive frames) under plain names; the step is recorded in each folder's "
            f"{rawframes.INFO_FILE}, which flowkit import reads back (other readers see step-1 "
            "rawframes)")
    backward_only = [r.key for r in results if r.status == "done" and r.backward_pairs
                     and not r.pairs]
    if backward_only:
        summary.notes.append(f"{len(backward_only)} videos hold only backward flow (e.g. "
                             f"{backward_only[0]}): written as flow_{{x,y}}_m1_* files, and left "
                             "out of the flow lists (mmaction2 reads forward flow)")
    if classes:
        write_label_map(out / LABEL_MAP, classes)
        summary.lists.append(str(out / LABEL_MAP))
    for name, keys in [("all", list(exported)), *split_keys.items()]:
        missing = [k for k in keys if k not in exported]
        if missing:
            summary.notes.append(f"{len(missing)} videos of {name} are not exported (not in the "
                                 f"store, or failed), e.g. {missing[0]}; left out of its lists")
        chosen = [exported[k] for k in keys if k in exported and exported[k].label >= 0]
        spaced = [r.key for r in chosen if any(c.isspace() for c in r.key)]
        if spaced:  # a list line is split at whitespace: such a folder cannot be listed
            summary.notes.append(f"{len(spaced)} videos of {name} have whitespace in their path "
                                 f"and are left out of its lists, e.g. {spaced[0]!r}")
            chosen = [r for r in chosen if r.key not in set(spaced)]
        for suffix, count in (("rawframes", lambda r: r.frames), ("flow", lambda r: r.pairs)):
            rows = [(r.key, count(r), r.label) for r in chosen if count(r) > 0]
            if rows:
                path = out / f"{name}_{suffix}.txt"
                write_mmaction_list(path, rows)
                summary.lists.append(str(path))


__all__ = ["ExportConfig", "ExportSummary", "VideoExport", "export_rawframes", "store_flows",
           "choose_flow", "OPTIONS_FILE", "LABEL_MAP"]
