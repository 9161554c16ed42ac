"""Rawframes and denseflow HDF5 -> store: the run behind ``flowkit import rawframes DIR -o STORE``.

A video under ``DIR`` is a rawframes folder ``DIR/<key>/`` (:mod:`flowkit.rawframes`: 1- or
0-based names padded to any width, ``flow_x_p<s>_*`` step variants, backward ``flow_x_m<s>_*``,
JPEG or PNG files, or denseflow's PNG flow ``flow_*.png``) and/or denseflow HDF5 files
``DIR/<key>.h5`` and ``DIR/<key>_m<s>.h5`` (:mod:`flowkit.denseflow`; float flow, taken over the
folder's 8-bit flow of the same direction; the datasets' names, not the file's, give the step and
direction, so ``walk/person_p2.h5`` of plain ``flow_x_*`` datasets is video ``walk/person_p2``:
:func:`flowkit.denseflow.video_of`). Keys are the paths under ``DIR`` as ``flowkit
extract`` makes them: a name that is not UTF-8 is escaped (``caf%E9``,
:func:`flowkit.files.escape_name`). Links are followed, each real directory once (a link loop is
skipped with a note). Each video is checked
before anything is written: numbering without gaps, as many ``flow_x`` as ``flow_y``, n - s flow
pairs for n frames (backward flow as many as forward flow), and the frame count an annotation list
gives; a video that fails a check is one failed line of the summary, never padded or trimmed.

Labels: from annotation files (mmaction2 rawframes lists, Kinetics CSV; :mod:`flowkit.annotations`)
when given, and then only the videos they label are imported (the others are listed); else from
the folder layout ``DIR/<class>/<video>``, and for the videos outside class folders (a flat,
Kinetics-like root) from the ``all_rawframes.txt`` / ``all_flow.txt`` a flowkit export wrote
beside its label map; the videos left without a label are imported as -1, counted, listed and
noted with the fix (``--annotations``). Class names and ids come from ``label_map`` or
``DIR/label_map.txt`` when there is one (``flowkit export rawframes`` writes it), so a round trip
keeps the store's label ids.

RGB frames: a JPEG the store's ``jpeg`` codec would have written alike (libjpeg's quantisation
tables of its quality, the video's size, three components, no Exif; :mod:`flowkit.jpeg`) is stored
byte for byte, with no decode and no second JPEG generation: mmaction2 / denseflow rawframes are
OpenCV JPEGs of quality 95, the default codec's. Other images are decoded and coded again. A JPEG
cut short (no end-of-image marker) fails its video instead of being completed with grey rows.

Flow is written with the chosen store codec (default ``jpegls``, 0.1 px) under ``flow/<flow_name>``
(default ``tvl1``, what ``flowkit train`` reads); its engine record says where it came from:
``engine`` ``mmaction2-rawframes``, ``denseflow-png`` or ``denseflow-hdf5``, ``engine_version``
the importing flowkit's, ``backend`` ``external``, ``params`` with ``source_format``, ``naming``,
``step`` and, for 8-bit flow images, ``bound``, ``quantization_error`` and ``image_format``
(``jpeg``: the 8-bit levels carry JPEG's error too; ``png``: the levels are exact), or, for
denseflow's PNG flow, its own per-pair ``quantization``. Backward
flow goes to ``flow/<flow_name>_backward`` (:func:`flowkit.conventions.backward_name`; pair t from
frame t + 1 to frame t, the store's numbering, whatever the files' numbering was), its record with
``direction`` ``backward``.
The stored video's step is the files' step (``flow_x_p<s>_*``: the images are thinned to every
s-th) times the one the folder's ``.flowkit-video.json`` records
(:data:`flowkit.rawframes.INFO_FILE`: ``flowkit export rawframes`` of a video stored with
``--step``, whose files hold its stored frames under plain names), so an export -> import round
trip keeps the step. The bound 8-bit flow images are read with is ``--bound``, else the one the
export that wrote them recorded in its :data:`~flowkit.interop.export.OPTIONS_FILE` (in the root or
above it), else 20; a ``--bound`` the record contradicts is refused (:func:`resolve_bound`).
Resumable like ``flowkit extract``: a video is skipped when the store already holds all that its
source would add (its RGB frames, its flow, its backward flow); otherwise what is missing is added
beside what the store has, and the video's attributes (label, fps, source) are kept (a label this
run gives otherwise is noted, not applied; one the store lacks, -1, is filled in place,
:meth:`~flowkit.store.FlowStore.fill_labels`). One flow name holds one kind of flow: a run whose
flow differs from the store's flow of that name (flowkit extract's, another ``--bound`` or flow
codec; not the format, image format, naming or step found per folder, which one root may mix) is
refused before anything is written (:func:`_check_flow_kinds`), also when every video is held
already and would be skipped but this run reads their flow images with another ``--bound`` than
the store's flow of them was imported with: a rerun that confirmed it would hide the wrong bound
(:func:`_check_held_kinds`; held videos are checked for the bound only, so a rerun over flow
``flowkit extract`` computed, or with another ``--flow-codec``, skips them).
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from .. import denseflow, rawframes
from ..annotations import LabelMatch, match_annotations, merge_class_names, read_label_map
from ..conventions import backward_name
from ..errors import FlowkitError
from ..files import escape_name, walk_once
from ..progress import Progress, StopFlag, Stopped
from ..store import DEFAULT_BOUND, FlowStore, flow_codec, rgb_codec
from ..store.codecs import codec_spec
from ..store.labelling import fill_missing_labels, stand_in_note, unlabelled_note
from ..store.layout import class_ids
from ..store.reading import IMPORTED_ATTR
from ..version import __version__
from .export import LABEL_MAP, OPTIONS_FILE
from .pool import check_common, failure_reason, run_threads

CHUNK = 32  # frames read and written at a time
#: Videos planned before the run to learn the kind of flow it adds (:func:`_check_flow_kinds`).
PROBES = 3


@dataclass
class ImportConfig:
    """What to import and how to store it; every field is a ``flowkit import rawframes`` option.

    ``bound``: the range (pixels) the 8-bit flow was quantised with (20 for mmaction2's scripts,
    32 is denseflow's own default); None: the one the flowkit export that wrote the rawframes
    recorded (:func:`resolve_bound`), else :data:`~flowkit.store.DEFAULT_BOUND`. ``fps`` 0 means
    unknown.
    """

    bound: float | None = None
    flow_name: str = "tvl1"
    flow_codec: str = "jpegls"
    rgb_codec: str = "jpeg"
    rgb: bool = True
    flow: bool = True
    annotations: Sequence[str | os.PathLike] = ()
    label_map: str | os.PathLike | None = None
    fps: float = 0.0
    workers: int = 1

    def __post_init__(self):
        flow_codec(self.flow_codec)  # StoreError (a FlowkitError) for a bad spec
        rgb_codec(self.rgb_codec)
        check_common(self, "import")


@dataclass
class Source:
    """Where one video's data is: its rawframes folder and/or its denseflow HDF5 files (forward,
    backward)."""

    key: str
    folder: Path | None = None
    h5: Path | None = None
    h5_backward: Path | None = None
    label: int = -1
    label_name: str = ""
    total_frames: int | None = None  # what an annotation list says


@dataclass
class VideoImport:
    key: str
    source: str
    status: str  # done, skipped, failed
    reason: str = ""
    frames: int = 0
    pairs: int = 0
    backward_pairs: int = 0
    kept_as_is: int = 0  # RGB JPEGs stored byte for byte
    notes: list[str] = field(default_factory=list)  # what the folder's scan noted


@dataclass
class ImportSummary:
    store: str
    results: list[VideoImport]
    seconds: float
    labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    # the videos without a label: left out (annotation files) or imported as -1 (class folders)
    unlabelled: list[str] = field(default_factory=list)
    #: videos the store held unlabelled (-1) that this run labelled in place (nothing re-imported)
    labels_filled: int = 0
    #: the bound (pixels) 8-bit flow images were read with (given, recorded by an export, or 20;
    #: None with --no-flow)
    bound: float | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def to_dict(self) -> dict:
        return {"store": self.store, "seconds": round(self.seconds, 3),
                "done": self.count("done"), "skipped": self.count("skipped"),
                "failed": self.count("failed"),
                "frames": sum(r.frames for r in self.results if r.status == "done"),
                "rgb_kept_as_is": sum(r.kept_as_is for r in self.results if r.status == "done"),
                "bound": self.bound, "labels": self.labels, "labels_filled": self.labels_filled,
                "unmatched_rows": self.unmatched,
                "unlabelled_videos": self.unlabelled, "notes": self.notes,
                "videos": [asdict(r) for r in self.results]}


def find_sources(root: str | os.PathLike, notes: list[str] | None = None) -> dict[str, Source]:
    """Every video under ``root``: rawframes folders and denseflow HDF5 files, by key (the path
    under ``root``, :func:`~flowkit.files.escape_name`-d as ``flowkit extract`` keys videos;
    ``root`` itself a video's folder: its name).
    Each real directory is visited once; what the walk skips is described in ``notes``."""
    root = Path(root)
    notes = notes if notes is not None else []
    sources: dict[str, Source] = {}
    for relative in rawframes.find_videos(root, notes):
        # ROOT itself one video's folder: keyed by its name, unlabelled (as extract keys a file)
        name = root.resolve().name if relative == "." else relative
        _add_source(sources, Source(escape_name(name), folder=root / relative))
    folders = set(sources)  # the frame folders' keys: a hint to which video a .h5 file is
    for dirpath, _, filenames in walk_once(root, hidden=False):  # find_videos noted the skips
        here = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        for name in sorted(filenames):
            path = Path(dirpath, name)
            tags = denseflow.dataset_tags(path) if name.endswith(".h5") else set()
            if not tags:  # not denseflow output (a store's video file, other HDF5)
                continue
            # the datasets' names, not the file's, say the step and direction: a video may be
            # named walk_p2 (denseflow.video_of)
            stem, backward = denseflow.video_of(
                name, tags, lambda video: escape_name((here / video).as_posix()) in folders)
            key = escape_name((here / stem).as_posix())
            source = sources.get(key) or _add_source(sources, Source(key))
            attr = "h5_backward" if backward else "h5"
            if getattr(source, attr) is not None:
                raise FlowkitError(f"{key}: two {'backward ' if backward else ''}denseflow files "
                                   f"({getattr(source, attr).name}, {name}); keep one step per "
                                   "video")
            setattr(source, attr, path)
    return dict(sorted(sources.items()))


def _add_source(sources: dict[str, Source], source: Source) -> Source:
    """Add ``source``; two folders whose names escape alike (``caf%E9`` and a non-UTF-8
    ``café``) would write one video: refused, naming both."""
    if source.key in sources:
        raise FlowkitError(f"two rawframes folders map to the store key {source.key!r}: "
                           f"{_where(sources[source.key])} and {_where(source)}; rename one")
    sources[source.key] = source
    return source


def resolve_bound(root: Path, sources: dict[str, Source], config: ImportConfig,
                  notes: list[str] | None = None) -> ImportConfig:
    """``config`` with the bound its 8-bit flow images are read with: the one the flowkit export
    that wrote them recorded in its :data:`~flowkit.interop.export.OPTIONS_FILE` (the nearest
    above each folder: ``root``, a class or video folder of an export, or an export under
    ``root``) when ``config.bound`` is None, said in ``notes`` unless it is the default; else
    the given one, or :data:`~flowkit.store.DEFAULT_BOUND`. A given bound the stamp contradicts,
    or exports of several bounds under one root, are a :class:`FlowkitError` naming them (one
    flow name holds one quantisation)."""
    notes = notes if notes is not None else []
    recorded, unstamped, unsure = (_recorded_bounds(root, sources, notes) if config.flow
                                   else ({}, [], None))
    if unsure is not None and config.bound is None:
        folder, stamp = unsure
        raise FlowkitError(f"{folder} is in the folder of a flowkit export ({stamp}) whose lists "
                           "do not name it (an unlabelled video, or rawframes put there since), "
                           "so whether that export's bound applies cannot be told; pass --bound "
                           f"(the export's is {_stamp_bound(stamp, notes) or DEFAULT_BOUND:g})")
    if recorded and unstamped:  # other rawframes beside an export: each read as its own says
        other = DEFAULT_BOUND if config.bound is None else float(config.bound)
        if set(recorded) != {other}:
            (bound, paths), *_ = sorted(recorded.items())
            raise FlowkitError(
                f"{root} holds rawframes a flowkit export recorded (--bound {bound:g} in "
                f"{paths[0]}) beside rawframes no export recorded (e.g. {unstamped[0]}, read "
                f"with --bound {other:g}); import each folder on its own, with the bound it "
                "was made with")
    if len(recorded) > 1:
        raise FlowkitError(f"{root} holds flowkit exports of different bounds ("
                           + ", ".join(f"--bound {b:g} in {paths[0]}" for b, paths
                                       in sorted(recorded.items())) + "); import each export on "
                           "its own, into stores or flow names (--flow-name) of their own")
    if not recorded:
        return config if config.bound is not None else replace(config, bound=DEFAULT_BOUND)
    (bound, paths), = recorded.items()
    if config.bound is None:
        if bound != DEFAULT_BOUND:  # the default's reading needs no word; another one does
            notes.append(f"flow images read with --bound {bound:g}, the bound {paths[0]} records "
                         "(the flowkit export that wrote them)")
        return replace(config, bound=bound)
    if float(config.bound) != bound:
        raise FlowkitError(f"--bound {config.bound:g} was given, but {paths[0]} says these "
                           f"rawframes were exported with --bound {bound:g} (the flow would come "
                           f"back scaled by {config.bound:g}/{bound:g}); drop --bound, or, if the "
                           f"flow images were quantised otherwise since, delete that file or set "
                           f"its \"bound\"")
    return config


def _recorded_bounds(root: Path, sources: dict[str, Source], notes: list[str]
                     ) -> tuple[dict[float, list[Path]], list[Path], tuple[Path, Path] | None]:
    """``({bound: [stamp paths]}, [folders without a stamp], unsure)``: what the export stamps
    of the ``sources``' folders record (the stamp nearest above each folder, each directory
    looked at once), the folders no stamp covers, and ``(folder, stamp)`` of the first folder
    inside the folder of an export above ``root`` that the export's lists do not name (None: no
    such folder); a stamp of an export without flow images records no bound that matters, an
    unreadable one is a note."""
    nearest: dict[Path, Path | None] = {}  # folder -> the stamp nearest above it
    above = _stamp_above(root)
    found = {s.folder: _nearest_stamp(root, s.folder, nearest, above) for s in sources.values()
             if s.folder is not None}
    unstamped = sorted(folder for folder, stamp in found.items() if stamp is None)
    unsure = None if above is None or not unstamped else (unstamped[0], above[0])
    bounds: dict[float, list[Path]] = {}
    for path in sorted({p for p in found.values() if p is not None}):
        bound = _stamp_bound(path, notes)
        if bound is not None:
            bounds.setdefault(bound, []).append(path)
    return bounds, unstamped, unsure


def _stamp_bound(path: Path, notes: list[str]) -> float | None:
    """The bound an export stamp records (None: an export without flow images, or an unreadable
    stamp, which is a note)."""
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
        bound = stamp.get("bound") if stamp.get("flow", True) else None
        if bound is not None and not (isinstance(bound, (int, float))
                                      and not isinstance(bound, bool)
                                      and np.isfinite(bound) and bound > 0):
            raise ValueError(f"bound {bound!r} is not a positive number")
    except (OSError, ValueError, AttributeError) as exc:
        notes.append(f"{path} unreadable ({exc}); the bound it records is not used")
        return None
    return None if bound is None else float(bound)


def _nearest_stamp(root: Path, folder: Path, nearest: dict[Path, Path | None],
                   above: tuple[Path, set[str]] | None = None) -> Path | None:
    """The export stamp (:data:`~flowkit.interop.export.OPTIONS_FILE`) in ``folder`` or the
    nearest folder above it up to ``root``; else ``above`` (:func:`_stamp_above`: ``root`` is a
    class or video folder of an export) when that export's lists name ``folder``: another
    export's stamp higher up, or beside other rawframes put into an export's folder, says nothing
    of them. ``nearest`` caches the answer of every folder inside ``root`` looked at."""
    inside = [root / p for p in (folder.relative_to(root), *folder.relative_to(root).parents)
              if p != Path(".")]
    seen, found = [], None
    for where in (*inside, root):
        if where in nearest:
            found = nearest[where]
            break
        seen.append(where)
        if (where / OPTIONS_FILE).is_file():
            found = where / OPTIONS_FILE
            break
    nearest.update({where: found for where in seen})
    if found is None and above is not None:
        stamp, listed = above
        try:
            relative = folder.resolve().relative_to(stamp.parent).as_posix()
        except ValueError:
            return None
        return stamp if relative in listed else None
    return found


def _stamp_above(root: Path) -> tuple[Path, set[str]] | None:
    """The stamp of an export ``root`` is a class or video folder of (one or two folders above
    its real path), with the video folders that export's ``all_rawframes.txt`` lists; None
    without one. Unlabelled videos are not listed: they are read with ``--bound`` or 20."""
    real = root.resolve()
    for where in list(real.parents)[:2]:
        stamp = where / OPTIONS_FILE
        if stamp.is_file():
            listed: set[str] = set()
            for name in ("all_rawframes.txt", "all_flow.txt"):  # a --no-rgb export: flow's
                try:
                    lines = (where / name).read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError):
                    continue
                listed |= {line.split()[0] for line in lines if line.strip()}
            return stamp, listed
    return None


def label_sources(root: Path, sources: dict[str, Source], config: ImportConfig,
                  notes: list[str] | None = None) -> tuple[list[str], LabelMatch | None]:
    """Set each source's label; returns the class names and, with annotation files, the match.
    Without them: the class folders, then, for the videos no class folder holds (a flat,
    Kinetics-like root), the lists a flowkit export wrote beside its label map
    (:func:`_label_from_export_lists`, said in ``notes``)."""
    label_map = config.label_map
    if label_map is None and (root / LABEL_MAP).is_file():
        label_map = root / LABEL_MAP
    if config.annotations:
        match = match_all(config.annotations, list(sources), label_map)
        for key, (label, name) in match.labels.items():
            sources[key].label, sources[key].label_name = label, name
            sources[key].total_frames = match.total_frames.get(key)
        return match.classes, match
    folders = sorted({PurePosixPath(k).parts[0] for k in sources
                      if len(PurePosixPath(k).parts) > 1})
    classes = read_label_map(label_map) if label_map is not None else folders
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(folders) - set(index))
    # the export's lists' ids index the root's label map, not another one
    exported = (label_map is not None and Path(label_map).resolve() == (root / LABEL_MAP).resolve()
                and any((root / name).is_file() for name in EXPORT_LISTS))
    if unknown and not exported:
        raise FlowkitError(f"class folders {unknown[:5]} are not in the label map {label_map}; "
                           "label the videos with --annotations (e.g. the all_rawframes.txt "
                           "that flowkit export wrote) or pass another --label-map")
    for key, source in sources.items():
        parts = PurePosixPath(key).parts
        if len(parts) > 1 and parts[0] in index:
            source.label, source.label_name = index[parts[0]], parts[0]
    if exported:
        # a flat root, or class folders named otherwise than its classes (``air_drumming`` for
        # ``air drumming``: a store labelled by a list exported): the lists label the rest
        (notes if notes is not None else []).extend(
            _label_from_export_lists(root, sources, classes, unknown))
    return classes, None


#: The lists ``flowkit export rawframes`` writes beside ``label_map.txt`` (export._write_lists):
#: every labelled video with its RGB frame count, and with its flow pair count (a video holding
#: only flow is in the second alone).
EXPORT_LISTS = ("all_rawframes.txt", "all_flow.txt")


def _label_from_export_lists(root: Path, sources: dict[str, Source], classes: list[str],
                             unknown: Sequence[str] = ()) -> list[str]:
    """Label the sources no class folder labels (a flat root: an export of a Kinetics-like store;
    ``unknown``: class folders the label map does not name) from the :data:`EXPORT_LISTS` in
    ``root``, whose ids index ``classes`` (the root's label map); returns a note saying so, or
    nothing when no list is there or no video needed it."""
    todo = [key for key, source in sources.items() if source.label < 0]
    lists = [root / name for name in EXPORT_LISTS if (root / name).is_file()]
    if not todo or not lists:
        return []
    labelled: dict[str, tuple[int, str]] = {}
    for path in lists:
        match = match_annotations(path, todo, kind="rawframes", label_map=root / LABEL_MAP)
        labelled = {**match.labels, **labelled}  # the first list wins; the flow list adds
    for key, (label, name) in labelled.items():
        sources[key].label, sources[key].label_name = label, name
    if not labelled:
        return []
    where = "outside class folders" + (f" or in folders {LABEL_MAP} does not name (e.g. "
                                       f"{unknown[0]})" if unknown else "")
    return [f"{len(labelled)} videos {where} labelled from "
            f"{' and '.join(p.name for p in lists)} beside {LABEL_MAP} (flowkit export's lists)"]


def match_all(files: Sequence[str | os.PathLike], keys: list[str],
              label_map: str | os.PathLike | None, kind: str = "rawframes") -> LabelMatch:
    """One :class:`LabelMatch` over several annotation files (train and validation lists) of
    ``kind`` (``"rawframes"`` lists here, ``"videos"`` lists for ``flowkit extract``).
    mmaction2 lists share their label ids: without a label map their class names come from all
    of them (:func:`~flowkit.annotations.merge_class_names`), so a validation list that lacks a
    class still merges; Kinetics CSVs, whose ids are their sorted class names, must agree. A video
    two files label differently is a :class:`FlowkitError` naming both (the last file won)."""
    matches = [match_annotations(path, keys, kind=kind, label_map=label_map) for path in files]
    total = LabelMatch(classes=_merged_classes(files, matches, label_map is not None))
    where: dict[str, str] = {}  # key -> the file that labelled it first
    for path, match in zip(files, matches):
        for key, (i, _) in match.labels.items():
            if key in total.labels and total.labels[key][0] != i:
                raise FlowkitError(f"{key} has label {total.labels[key][0]} in {where[key]} but "
                                   f"{i} in {path}: the lists contradict each other; fix one")
            where.setdefault(key, str(path))
        total.labels.update({k: (i, total.classes[i]) for k, (i, _) in match.labels.items()})
        total.total_frames.update(match.total_frames)
        total.unmatched += match.unmatched
        total.multi_label += match.multi_label
        total.ambiguous.update(match.ambiguous)
        total.conflicting.update(match.conflicting)  # its rows disagree: no file labels it
    total.labels = {k: v for k, v in total.labels.items() if k not in total.conflicting}
    total.unlabelled = [k for k in keys if k not in total.labels]
    return total


def _merged_classes(files: Sequence[str | os.PathLike], matches: list[LabelMatch],
                    mapped: bool) -> list[str]:
    """The class names of several annotation files' ``matches``: the label map's (``mapped``),
    the names all mmaction2 lists' class folders give, or the Kinetics CSVs' own when they agree;
    else :class:`FlowkitError` naming the classes that differ."""
    if not mapped and not any(Path(p).suffix.lower() == ".csv" for p in files):
        return merge_class_names([(str(p), {k: i for k, (i, _) in m.labels.items()})
                                  for p, m in zip(files, matches)],
                                 [(str(p), m.listed) for p, m in zip(files, matches)])
    for path, match in zip(files[1:], matches[1:]):
        if match.classes != matches[0].classes:
            differ = sorted(set(match.classes) ^ set(matches[0].classes))[:3] or \
                "the same names in another order"
            raise FlowkitError(f"{path} has other classes than {files[0]} "
                               f"({len(match.classes)} vs {len(matches[0].classes)}, differing: "
                               f"{differ}); pass the dataset's label map (--label-map), whose "
                               "ids both files then index")
    return matches[0].classes


def import_rawframes(root: str | os.PathLike, store_path: str | os.PathLike,
                     config: ImportConfig | None = None, *, progress: Progress | None = None,
                     stop: StopFlag | None = None) -> ImportSummary:
    """Import every video under ``root`` into the store at ``store_path`` (created if missing).

    ``progress`` gets the tasks "videos" and "frames" and a line per failed video (and a bar over
    the store's videos new to its index, when they take a while to read); once ``stop`` is set,
    the videos in flight are discarded cleanly and :class:`~flowkit.progress.Stopped` is raised.
    Returns one :class:`VideoImport` per video considered.
    """
    started = time.perf_counter()
    config = config or ImportConfig()
    progress, stop = progress or Progress(), stop or StopFlag()
    root = Path(root)
    if not root.is_dir():
        raise FlowkitError(f"rawframes folder {root} does not exist or is not a directory")
    walk_notes: list[str] = []
    sources = find_sources(root, walk_notes)
    if not sources:  # the walk's notes say what it found instead (images of other names, ...)
        raise FlowkitError(f"{root}: no rawframes folders (img_*.jpg, flow_x_*.jpg) or denseflow "
                           "HDF5 files found" + "".join(f"; {note}" for note in walk_notes))
    label_notes: list[str] = []
    config = resolve_bound(root, sources, config, walk_notes)  # before anything is written
    classes, match = label_sources(root, sources, config, label_notes)
    # an existing store keeps its order; ids that lists numbered (annotations, a label map) may
    # meet the store's class_<i> stand-ins, a class folder's place in sorted order may not
    numbered = match is not None or config.label_map is not None or (root / LABEL_MAP).is_file()
    run_classes = classes  # this run's names, before the store's stand-ins replace them
    classes, ids = class_ids(Path(store_path), classes, numbered=numbered)
    for source in sources.values() if ids is not None else ():
        if source.label >= 0:  # the store's name too: its stand-in class_<i> stays (class_ids)
            source.label, source.label_name = ids[source.label], classes[ids[source.label]]
    summary = ImportSummary(str(store_path), [], 0.0, notes=walk_notes + label_notes
                            + stand_in_note(classes, run_classes),
                            bound=config.bound if config.flow else None)
    if match is not None:
        summary.labels = match.report()
        summary.unmatched, summary.unlabelled = match.unmatched, match.unlabelled
        for key in match.unlabelled:
            src = sources.pop(key)
            summary.results.append(VideoImport(key, _where(src), "skipped",
                                               "no label in the annotation files"))
    store = FlowStore(store_path, "a", classes=classes)
    store.remove_partials()
    # from the index: no file opened per video; a store with no (or a stale) index.json reads
    # its files once, under a bar (a store just extracted: 300k files, 20 minutes)
    held = store.metas(store.keys(), progress)
    metas = {key: held[key] for key in sources if key in held}
    todo = []
    summary.notes += _settle_labels(store, sources, metas, summary, progress)
    if match is None:  # labelled by folders: the videos left without a label are imported
        summary.labels, summary.unlabelled, notes = _folder_labels(sources, metas, classes)
        summary.notes += notes
    finished = []
    for source in sources.values():
        if _finished(metas.get(source.key), source, config):
            summary.results.append(VideoImport(source.key, _where(source),
                                               "skipped", "already in the store"))
            finished.append(source)
        else:
            todo.append(source)
    kinds = _stored_kinds(held, config) if config.flow else {}
    _check_flow_kinds(store, todo, metas, kinds, config, finished)
    videos = progress.start("videos", total=len(sources), completed=len(sources) - len(todo))
    frames = progress.start("frames")
    try:
        # threads share the store: each opens its own handles
        for result in run_threads(todo, lambda s: _import_one(store, s, config, stop, kinds),
                                  config.workers, stop):
            summary.results.append(result)
            videos.advance()
            frames.advance(result.frames or result.pairs)
            if result.status == "failed":
                progress.log(f"failed {result.source}: {result.reason}")
    finally:
        videos.close()
        frames.close()
    summary.results.sort(key=lambda r: r.key)
    summary.notes += [f"{r.key}: {note}" for r in summary.results for note in r.notes]
    summary.notes += _rgb_only_note(summary.results, metas, config)
    summary.seconds = time.perf_counter() - started
    return summary


def _rgb_only_note(results: list[VideoImport], metas: dict[str, dict],
                   config: ImportConfig) -> list[str]:
    """The note on the videos this run imported from frames without flow (no ``flow_x_*`` /
    ``flow_y_*`` images or denseflow files: Jester's, EPIC-KITCHENS' frames), which training a
    flow model on would later refuse: a rerun of the import cannot add flow the folders lack.
    ``metas``: the store's entries of the videos it held before (one already holding the flow
    adds none, and is not one of them); a single frame has no flow (its folder's note says so)."""
    done = [r for r in results if r.status == "done"]
    rgb_only = [r.key for r in done if r.frames > 1 and not r.pairs and not r.backward_pairs
                and config.flow_name not in metas.get(r.key, {}).get("flows", {})]
    if not config.flow or not rgb_only:  # --no-flow: left out on purpose
        return []
    which = ("the videos hold RGB only" if len(rgb_only) == len(done) else
             f"{len(rgb_only)} of the {len(done)} videos imported hold RGB only (e.g. "
             f"{rgb_only[0]})")
    return [f"no flow images found: {which}, no flow_x_* / flow_y_* images or denseflow .h5 "
            "files. flowkit computes flow from video files, not frames: extract the source "
            "videos (`flowkit extract VIDEOS -o NEW_STORE`) for a flow model, or train one that "
            "needs no flow (e.g. ddn, or cidc with --model-arg modality=rgb)"]


def _folder_labels(sources: dict[str, Source], metas: dict[str, dict], classes: list[str]
                   ) -> tuple[list[str], list[str], list[str]]:
    """``(report lines, unlabelled keys, notes)`` of a run labelled by class folders: the videos
    neither this run nor the store (``metas``, for those it holds) labels are imported with label
    -1, which flowkit train leaves out; counted, listed and a note says how to label them."""
    labels = {key: (s.label, s.label_name) for key, s in sources.items() if s.label >= 0}
    unlabelled = [key for key in sources if key not in labels
                  and int(metas.get(key, {}).get("label", -1)) < 0]
    report = LabelMatch(labels, list(classes), unlabelled=unlabelled).report()
    return report, unlabelled, unlabelled_note(unlabelled,
                                               "an mmaction2 rawframes list or a Kinetics CSV")


def _settle_labels(store: FlowStore, sources: dict[str, Source], metas: dict[str, dict],
                   summary: ImportSummary, progress: Progress | None = None) -> list[str]:
    """This run's labels against the store's (``metas``: the index entries of the videos it holds,
    brought up to date here; :mod:`flowkit.store.labelling`): a video held unlabelled (-1) takes
    the run's label in place, nothing imported again (:meth:`FlowStore.fill_labels`, counted in
    ``summary.labels_filled``); one held under a label keeps it (adding datasets to it keeps its
    attributes, :func:`_kept_attrs`). Returns the notes saying so."""
    filled, notes = fill_missing_labels(
        store, {key: (s.label, s.label_name) for key, s in sources.items()},
        {key: int(meta.get("label", -1)) for key, meta in metas.items()}, progress)
    metas.update(store.metas(filled))
    summary.labels_filled = len(filled)
    return notes


def _kind(params: dict, codec: str) -> tuple:
    """A flow's kind, from its record's ``params`` and its store codec spec: the format imported
    (``source_format``; None for flow an engine computed, ``flowkit extract``), the 8-bit flow's
    ``bound``, its ``image_format`` and the store codec (:func:`_alike` says which of these must
    agree under one name)."""
    return (params.get("source_format"), params.get("bound"), params.get("image_format"), codec)


def _alike(kind: tuple, other: tuple) -> bool:
    """Whether flows of two kinds (:func:`_kind`) may share a name: both imported or both
    computed, one store codec, and one ``--bound`` where both have one. What a run's options set,
    then, never what it finds per folder (format, image format, naming, step: one root may mix
    them, so an interrupted run resumes as it began)."""
    (fmt, bound, _, codec), (other_fmt, other_bound, _, other_codec) = kind, other
    return ((fmt is None) == (other_fmt is None) and codec == other_codec
            and (bound is None or other_bound is None or bound == other_bound))


def _fits(kind: tuple, held: dict[tuple, list] | None) -> bool:
    """Whether flow of ``kind`` may join the kinds a store ``held`` under its name."""
    return all(_alike(kind, other) for other in held or {})


def _stored_kinds(metas: dict[str, dict], config: ImportConfig) -> dict[str, dict[tuple, list]]:
    """``{flow name: {kind: [keys]}}``: the kinds (:func:`_kind`) of flow the store's videos
    (``metas``, their index entries) hold under the names this import writes (the flow name and
    its backward name)."""
    out: dict[str, dict[tuple, list]] = {}
    for name in (config.flow_name, backward_name(config.flow_name)):
        for key, meta in metas.items():
            flow = meta["flows"].get(name)
            if flow is not None:
                kind = _kind(flow.get("params") or {}, flow.get("codec_spec"))
                out.setdefault(name, {}).setdefault(kind, []).append(key)
    return out


def _check_flow_kinds(store: FlowStore, todo: list[Source], metas: dict[str, dict],
                      kinds: dict[str, dict[tuple, list]], config: ImportConfig,
                      finished: Sequence[Source] = ()) -> None:
    """Refuse, before anything is written, a run whose flow is of another kind than the store
    holds under that name (:func:`_alike`: computed by an engine, another ``--bound`` or flow
    codec): one name would mix two quantisations. The run's kind is learnt from the first of its
    videos that adds flow (up to :data:`PROBES` planned); a video of yet another kind fails on
    its own (:func:`_import_one`). ``finished``: the videos skipped as held already; the flow
    they hold is checked against this run's reading of their files too, so that a rerun with
    another ``--bound`` than the store's was imported with is refused, not confirmed with every
    video skipped and exit 0."""
    if not kinds:
        return
    _check_held_kinds(store, finished, metas, kinds, config)
    for source in todo[:PROBES]:
        try:
            plan = plan_video(source, config)
        except Exception:  # the video's own run reports why
            continue
        have = metas.get(source.key, {}).get("flows", {})
        adds = [flow for flow in plan.flows if flow.name not in have]  # what it would write
        for flow in adds:
            kind = _kind(flow.record["params"], codec_spec(flow_codec(config.flow_codec)))
            held = kinds.get(flow.name)
            if not _fits(kind, held):
                raise FlowkitError(_kind_message(store, flow.name, kind, held))
        if adds:
            return


def _check_held_kinds(store: FlowStore, finished: Sequence[Source], metas: dict[str, dict],
                      kinds: dict[str, dict[tuple, list]], config: ImportConfig) -> None:
    """Refuse a run that reads the files of videos the store holds (``finished``, skipped) with
    another ``--bound`` than the store's flow of them was imported with (:func:`_check_flow_kinds`):
    the first of them that holds flow under this run's names (up to :data:`PROBES` planned) gives
    the run's bound. Only the bound: nothing of theirs is written, so another ``--flow-codec``, or
    flow ``flowkit extract`` computed (a first import added only their RGB), leaves the store
    right and the rerun skips them (:func:`_imported_bounds`)."""
    holding = [s for s in finished if set(metas[s.key]["flows"]) & set(kinds)]
    for source in holding[:PROBES]:
        try:
            plan = plan_video(source, config)
        except Exception:  # nothing is imported from it: the store's copy stays as it is
            continue
        held = [flow for flow in plan.flows if flow.name in metas[source.key]["flows"]]
        for flow in held:
            bound = flow.record["params"].get("bound")
            imported = _imported_bounds(kinds[flow.name])
            if bound is not None and any(other[1] != bound for other in imported):
                kind = _kind(flow.record["params"], codec_spec(flow_codec(config.flow_codec)))
                raise FlowkitError(_kind_message(store, flow.name, kind, imported, again=True))
        if held:
            return


def _imported_bounds(held: dict[tuple, list]) -> dict[tuple, list]:
    """The kinds (:func:`_kind`) of ``held`` that were imported with a ``--bound`` (8-bit flow
    images): the only flow whose files a rerun may read at another scale."""
    return {kind: keys for kind, keys in held.items()
            if kind[0] is not None and kind[1] is not None}


def _describe_kind(kind: tuple, engine: str | None = None) -> str:
    """A flow kind (:func:`_kind`) in words, as the options that make it."""
    source_format, bound, image_format, codec = kind
    if source_format is None:
        engine = f"engine {engine!r}, " if engine else ""
        return f"flow computed by flowkit extract ({engine}--flow-codec {codec})"
    parts = [bound is not None and f"--bound {bound:g}", image_format and f"{image_format} images",
             f"--flow-codec {codec}"]
    return f"{source_format} flow ({', '.join(p for p in parts if p)})"


def _kind_message(store: FlowStore, name: str, kind: tuple, held: dict[tuple, list],
                  again: bool = False) -> str:
    """One line: the store's kinds of flow ``name`` and this run's, the options that match the
    store, and the ways out. ``again``: this run reads videos the store holds already
    (:func:`_check_held_kinds`), so one of the two readings is wrong."""
    stored = []
    for other, keys in held.items():
        try:  # the index holds no engine name: one video's file tells who computed it
            engine = store.meta(keys[0])["flows"][name].get("engine") if other[0] is None else None
        except Exception:
            engine = None
        stored.append(f"{_describe_kind(other, engine)} in {len(keys)} videos (e.g. {keys[0]})")
    options = []
    for other in held:
        if (other[0] is None) == (kind[0] is None) and not _alike(kind, other):  # options differ
            options = [f"--bound {other[1]:g}" if None not in (other[1], kind[1])
                       and other[1] != kind[1] else "",
                       f"--flow-codec {other[3]}" if other[3] != kind[3] else ""]
            break
    matching = " ".join(o for o in options if o)
    fix = f"Rerun with {matching} to extend it, or import" if matching else "Import"
    # the store holds these very files: if this run's reading is right, the store's is not
    held_note = (" (if this run's options are the ones the flow images were made with, the "
                 "store's copy of them is wrong: import them again into a new store)"
                 if again else "")
    adds = ("this run reads these rawframes (videos it holds) as" if again
            else "these rawframes would add")
    return (f"store {store.path} holds flow {name!r} as {'; '.join(stored)}, and {adds} "
            f"{_describe_kind(kind)}: one flow name holds one kind of flow. Nothing was "
            f"imported. {fix} them as a second flow (--flow-name NAME) or into a new store "
            f"(-o NEW_STORE){held_note}")


def _where(source: Source) -> str:
    """The path a summary line names for ``source`` (bytes that are not UTF-8 escaped)."""
    return escape_name(str(source.folder or source.h5 or source.h5_backward))


def _finished(meta: dict | None, source: Source, config: ImportConfig) -> bool:
    """Whether the store already holds all that importing ``source`` would add (``meta``: its
    finished video's :meth:`FlowStore.metas` entry, None when absent or unreadable, then imported
    again): its RGB frames, its flow and its backward flow, as far as the source has them and
    ``config`` asks for them. A folder with problems is not finished: planning reports them."""
    if meta is None:
        return False
    held = set(meta["flows"]) | ({"rgb"} if meta["has_rgb"] else set())
    asked = ({"rgb"} if config.rgb else set()) | (
        {config.flow_name, backward_name(config.flow_name)} if config.flow else set())
    if asked <= held:  # all this import could add: no need to list the folder
        return True
    adds = _datasets(source, config)
    return adds is not None and adds <= held


def _datasets(source: Source, config: ImportConfig) -> set[str] | None:
    """The store datasets importing ``source`` would write (``rgb``, the flow's name, its
    backward name), from what :func:`rawframes.scan_folder` reads of its folder (so files it
    leaves out, e.g. backward flow of another step, count for nothing) and its denseflow files;
    None when the folder has problems."""
    video = rawframes.scan_folder(source.folder) if source.folder is not None else None
    if video is not None and video.problems:
        return None
    adds = {"rgb"} if config.rgb and video is not None and video.rgb else set()
    if config.flow and (source.h5 is not None or (video is not None and video.flow)):
        adds.add(config.flow_name)
    if config.flow and (source.h5_backward is not None or (video is not None and video.backward)):
        adds.add(backward_name(config.flow_name))
    return adds


@dataclass
class _Flow:
    """One direction of a video's flow: where it is read, which source pairs (0-based) are
    written, and under which store name and engine record."""

    name: str
    pairs: list[int]
    h5: denseflow.DenseflowFile | None
    backward: bool
    record: dict


@dataclass
class _Plan:
    """What one video contributes: the image indices and flows to write. ``step`` thins the
    files (denseflow's ``_p<s>`` flow: every s-th image is kept); ``store_step`` is the video's
    frame step in the store, ``step`` times the step the folder's
    :data:`~flowkit.rawframes.INFO_FILE` records (a flowkit export of a store with ``--step``)."""

    frames: list[int]
    flows: list[_Flow]
    step: int
    video: rawframes.RawframeVideo | None
    store_step: int = 1


def _open_h5(path: Path | None, backward: bool, config: ImportConfig
             ) -> denseflow.DenseflowFile | None:
    if path is None or not config.flow:
        return None
    flow = denseflow.open_flow(path)
    if flow.backward != backward:
        raise FlowkitError(f"{path.name} holds {'backward' if flow.backward else 'forward'} flow "
                           f"datasets but its name says {'backward' if backward else 'forward'}")
    return flow


def plan_video(source: Source, config: ImportConfig) -> _Plan:
    """Check one video and decide what to write; :class:`FlowkitError` says why it cannot be."""
    video = rawframes.scan_folder(source.folder) if source.folder is not None else None
    if video is not None and video.problems:
        raise FlowkitError("; ".join(video.problems))
    h5 = {False: _open_h5(source.h5, False, config),
          True: _open_h5(source.h5_backward, True, config)}
    folder_pairs = {False: video.flow if video is not None else [],
                    True: video.backward if video is not None else []}
    counts = {d: len(h5[d]) if h5[d] is not None else len(folder_pairs[d]) if config.flow else 0
              for d in (False, True)}
    steps = {h5[d].step if h5[d] is not None else video.flow_step
             for d in (False, True) if counts[d]}
    if len(steps) > 1:
        raise FlowkitError(f"forward and backward flow have different steps {sorted(steps)}; "
                           "keep one step per video")
    step = steps.pop() if steps else 1
    rgb = video.rgb if video is not None and config.rgb else []
    for d, n_flow in counts.items():
        where = h5[d].path.name if h5[d] is not None else "the folder"
        if rgb and n_flow and n_flow != len(rgb) - step:
            raise FlowkitError(f"{len(rgb)} frames but {n_flow} {'backward ' if d else ''}flow "
                               f"pairs of step {step} in {where} (expected {len(rgb) - step})")
    if counts[False] and counts[True] and counts[False] != counts[True]:
        raise FlowkitError(f"{counts[False]} forward but {counts[True]} backward flow pairs")
    n_flow = max(counts.values())
    n = len(rgb) if rgb else (n_flow + step if n_flow else 0)
    if n == 0:
        raise FlowkitError("nothing to import (no frames, no flow)")
    images = len(video.rgb) if video is not None else 0
    if source.total_frames is not None and source.total_frames not in (images or None,
                                                                        n_flow or None):
        raise FlowkitError(f"the annotation list says {source.total_frames} frames, the folder "
                           f"has {images} frames and {n_flow} flow pairs")
    kept = (n - 1) // step + 1
    store_step = step * (video.source_step if video is not None else 1)
    flows = [_Flow(backward_name(config.flow_name) if d else config.flow_name,
                   list(range(0, counts[d], step))[: kept - 1], h5[d], d,
                   _record(h5[d], video, step, d, config, store_step))
             for d in (False, True) if counts[d]]
    return _Plan(rgb[::step], flows, step, video, store_step)


def _record(h5: denseflow.DenseflowFile | None, video: rawframes.RawframeVideo | None, step: int,
            backward: bool, config: ImportConfig, store_step: int | None = None) -> dict:
    """Where the flow came from: the format read (as the engine), the flowkit that read it (as its
    version), "external" numerics, and the direction. ``params["step"]`` is the frame step the
    flow spans in the video (``store_step``: the files' step times the one a flowkit export
    recorded)."""
    if h5 is not None:
        tag = f"_m{step}" if backward else f"_p{step}" if step > 1 else ""
        params = {"source_format": "denseflow-hdf5", "naming": f"flow_{{x,y}}{tag}_{{:05d}} "
                  f"datasets from {step if backward else 0}", "step": step}
    elif video.flow_png:
        params = {"source_format": "denseflow-png",
                  "quantization": "per pair and component: bound b = 4 x the R channel (u: rows "
                                  "0 .. H // 2, v: the rows below), value (level - 128) b / 128, "
                                  "within b / 256 px",
                  "image_format": "png", "naming": video.naming(), "step": step}
    else:
        params = {"source_format": "mmaction2-rawframes", "bound": _bound(config),
                  "quantization_error": rawframes.quantization_error(_bound(config)),
                  "image_format": "png" if video.flow_ext == "png" else "jpeg",
                  "naming": video.naming(), "step": step}
    params["step"] = step if store_step is None else store_step  # the step in the video
    record = {"engine": params["source_format"], "version": __version__, "params": params,
              "backend": "external"}
    if backward:
        record["direction"] = "backward"
    return record


def _bound(config: ImportConfig) -> float:
    """The bound (pixels) 8-bit flow images are read with: ``config``'s, resolved by
    :func:`import_rawframes` (:func:`resolve_bound`), else the default (a bare
    :func:`plan_video`)."""
    return float(DEFAULT_BOUND if config.bound is None else config.bound)


def _import_one(store: FlowStore, source: Source, config: ImportConfig,
                stop: StopFlag, kinds: dict[str, dict[tuple, list]] | None = None) -> VideoImport:
    """Import one video; ``kinds``: the kinds of flow the store held under this run's names
    before it (:func:`_stored_kinds`): a flow of another kind fails the video."""
    where = _where(source)
    try:
        plan = plan_video(source, config)
        notes = plan.video.notes if plan.video is not None else []
        result = VideoImport(source.key, where, "done", notes=list(notes))
        meta = store.meta(source.key) if store.is_complete(source.key) else None
        if meta is not None and not _trim_to_missing(plan, meta):
            return VideoImport(source.key, where, "skipped", "already in the store",
                               notes=list(notes))
        for flow in plan.flows:
            kind = _kind(flow.record["params"], codec_spec(flow_codec(config.flow_codec)))
            held = (kinds or {}).get(flow.name)
            if not _fits(kind, held):
                other = next(k for k in held if not _alike(kind, k))
                raise FlowkitError(f"its flow would be {_describe_kind(kind)}, the store's "
                                   f"flow/{flow.name} is {_describe_kind(other)}: one "
                                   "flow name holds one kind of flow; import it with --flow-name "
                                   "NAME")
        first = _first_frame(plan, config)
        with store.writer(source.key, source=where, fps=config.fps, label=source.label,
                          label_name=source.label_name, source_size=first.shape[:2],
                          step=plan.store_step, flow_codec=config.flow_codec,
                          rgb_codec=config.rgb_codec) as w:
            if meta is not None:  # datasets added to a finished video: its attributes stay
                w.update_attrs(_kept_attrs(meta))
            else:  # made from images: a repair re-imports it (store.reading.redo_hint)
                w.update_attrs({IMPORTED_ATTR: True})
            for i in range(0, len(plan.frames), CHUNK):
                stop.check()
                chunk = plan.frames[i:i + CHUNK]
                result.kept_as_is += _append_rgb(w, plan.video, chunk)
                result.frames += len(chunk)
            for flow in plan.flows:
                for i in range(0, len(flow.pairs), CHUNK):
                    stop.check()
                    chunk = flow.pairs[i:i + CHUNK]
                    w.append_flow(flow.name, _read(plan, flow, chunk, config),
                                  engine=flow.record)
                    if flow.backward:
                        result.backward_pairs += len(chunk)
                    else:
                        result.pairs += len(chunk)
        return result
    except Stopped:
        raise
    except Exception as exc:  # one bad video never stops the run
        return VideoImport(source.key, where, "failed", failure_reason(exc))


def _trim_to_missing(plan: _Plan, meta: dict) -> bool:
    """Keep in ``plan`` what the store's finished video (``meta``) lacks: its RGB frames and flows
    are kept (copy-on-write), not appended a second time. False when nothing is left to add;
    :class:`FlowkitError` when the store holds the video at another step."""
    plan.frames = [] if meta["has_rgb"] else plan.frames
    plan.flows = [f for f in plan.flows if f.name not in meta["flows"]]
    if not (plan.frames or plan.flows):
        return False
    if meta.get("step", plan.store_step) != plan.store_step:
        raise FlowkitError(f"the store holds this video at step {meta['step']}, these rawframes "
                           f"have flow of step {plan.store_step}; import them into another store")
    return True


#: Root attributes a writer sets from what it writes, and keys :meth:`FlowStore.meta` adds to the
#: root attributes: never carried over from a finished video.
_NOT_KEPT = ("format", "version", "key", "complete", "frame_count", "height", "width", "flows",
             "has_rgb", "num_frames", "rgb_codec")


def _kept_attrs(meta: dict) -> dict:
    """The root attributes of a finished video (``meta``) that adding datasets to it keeps: its
    label, fps, source, source size, step, creation time and whatever else it records."""
    return {k: v for k, v in meta.items() if k not in _NOT_KEPT}


def _append_rgb(w, video: rawframes.RawframeVideo, indices: list[int]) -> int:
    """Append images ``indices``: each JPEG the store's codec would have written alike (quality
    tables, size; :meth:`VideoWriter.rgb_unlike_codec`) byte for byte, the others decoded and
    coded again, in order. Returns how many were kept as they are."""
    kept = 0
    files = [(i, rawframes.read_file(video.rgb_file(i))) for i in indices]
    for as_is, run in itertools.groupby(files, key=lambda f: not w.rgb_unlike_codec(f[1])):
        run = list(run)
        if as_is:
            w.append_rgb_encoded([blob for _, blob in run])
            kept += len(run)
        else:
            w.append_rgb(np.stack([rawframes.decode_image(blob, video.rgb_file(i))
                                   for i, blob in run]))
    return kept


def _first_frame(plan: _Plan, config: ImportConfig) -> np.ndarray:
    """One image of the video (its size is the stored size), RGB or a flow component."""
    if plan.frames:
        return rawframes.read_rgb(plan.video, plan.frames[:1])[0]
    flow = plan.flows[0]
    return _read(plan, flow, flow.pairs[:1], config)[0, 0]


def _read(plan: _Plan, flow: _Flow, positions: list[int], config: ImportConfig) -> np.ndarray:
    """Flow pairs at ``positions`` (0-based pair numbers of the source): ``(N, 2, H, W)``."""
    if flow.h5 is not None:
        return flow.h5.read(positions)
    pairs = plan.video.backward if flow.backward else plan.video.flow
    return rawframes.read_flow(plan.video, [pairs[p] for p in positions], _bound(config),
                               flow.backward)


__all__ = ["ImportConfig", "ImportSummary", "VideoImport", "Source", "find_sources",
           "label_sources", "match_all", "plan_video", "import_rawframes"]
