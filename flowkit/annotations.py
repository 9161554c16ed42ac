"""Labels in other tools' formats: mmaction2 annotation lists and label maps, Kinetics CSV files.

- mmaction2 annotation lists, one video per line, labels 0-based:
  rawframes ``frame_dir total_frames label [label ...]`` (``RawframeDataset``) and videos
  ``path label [label ...]`` (``VideoDataset``). Only single-label lines are used for classes.
- mmaction2 label maps (``label_map_k400.txt``): one class name per line, line i is label i;
  also Something-Something V2's JSON ``{name: id}`` and a JSON list of names
  (:func:`read_label_map`).
- HMDB51's official splits (``testTrainMulti_7030_splits/<class>_test_split<N>.txt``, lines
  ``<video>.avi <0|1|2>``: 1 training, 2 testing, 0 in neither), turned into UCF101-style lists
  that ``train --split-list`` / ``--val-list`` and ``evaluate --split-list`` take
  (:func:`read_hmdb51_split`, :func:`write_split_lists`).
- Kinetics CSV (``label,youtube_id,time_start,time_end,split``; columns found by the header, extra
  columns such as ``is_cc`` ignored; test files have no label). A row names the video
  ``<youtube_id>_<start>_<end>`` (mmaction2 pads the times to 6 digits; any padding matches) or
  ``<youtube_id>`` alone. Class ids index a label map when one is given (a label the map lacks is
  an error), else the sorted label names of the file, as mmaction2's file lists do.

Matching a label source against a set of store keys (paths without extension, see
:mod:`flowkit.labels`) gives a :class:`LabelMatch`: each matched key's label, the class names, the
rows that matched no video (or several, by name) and the videos that no row labels. Nothing
unmatched is dropped silently, and rows that give one video different labels (the segments of a
video) label nothing and are reported, rather than one of them kept. A JSON file given for a list is refused as one
(:func:`flowkit.labels.looks_json`), and a malformed line is echoed cut short.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from .errors import FlowkitError
from .files import atomic_write_text
from .labels import VIDEO_EXTENSIONS, echo, json_error, looks_json

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
#: How a report names rows with several labels (a list written with mmaction2's ``with_offset``,
#: ``frame_dir offset total_frames label``, reads like one too).
MULTI_LABEL = ("rows give several labels, and flowkit trains one label a video (a list written "
               "with_offset, 'frame_dir offset total_frames label', reads like these)")
_CLIP_RE = re.compile(r"(?P<id>.+)_(?P<start>\d+)_(?P<end>\d+)")


@dataclass(frozen=True)
class ListEntry:
    """One line of an mmaction2 annotation list: ``path`` as written, ``total_frames`` (rawframes
    lists only) and the 0-based ``labels``."""

    lineno: int
    path: str
    total_frames: int | None
    labels: tuple[int, ...]

    @property
    def key(self) -> str:
        """The store key: the path without a video extension (a frame folder keeps its name)."""
        p = PurePosixPath(self.path.replace("\\", "/"))
        return (p.with_suffix("") if p.suffix.lower() in VIDEO_EXTENSIONS else p).as_posix()


@dataclass(frozen=True)
class KineticsRow:
    """One row of a Kinetics CSV; ``label`` is None in test files; times in whole seconds."""

    lineno: int
    label: str | None
    youtube_id: str
    time_start: int | None
    time_end: int | None
    split: str


@dataclass
class LabelMatch:
    """Labels of store keys from a list or CSV.

    ``labels``: key -> (0-based label id, class name) for every matched, labelled key; ``classes``:
    the class names label ids index; ``unmatched``: the rows (as ``file:line text``) that matched no
    key; ``multi_label``: the rows of a video with several labels, which label nothing (flowkit's
    classifiers take one label a video; they are also in ``unmatched``); ``ambiguous``: the rows
    whose last name matches several keys (row -> those keys), which label none of them (also in
    ``unmatched``); ``unlabelled``: the keys no row labels (sorted); ``total_frames``: the frame
    count a rawframes list gives each matched key; ``listed``: the label id of every single-label
    row by the row's own key, matched or not (its class folder names the id:
    :func:`merge_class_names`); ``conflicting``: the keys whose rows give them different labels
    (the segments of a video), key -> what its rows say and what to do: they label nothing (also
    in ``unlabelled``), as a multi-label row.
    """

    labels: dict[str, tuple[int, str]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    total_frames: dict[str, int] = field(default_factory=dict)  # rawframes lists: key -> count
    multi_label: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    listed: dict[str, int] = field(default_factory=dict)
    conflicting: dict[str, str] = field(default_factory=dict)

    def report(self, shown: int = 5) -> list[str]:
        """Lines for the user: counts of labelled, unmatched, ambiguous and unlabelled, with
        examples, and the label ids no class folder names (:func:`unnamed_ids`)."""
        lines = [f"{len(self.labels)} videos labelled ({len(self.classes)} classes)"]
        other = set(self.multi_label) | set(self.ambiguous)
        ambiguous = [f"{row} (matches {', '.join(keys)})" for row, keys in self.ambiguous.items()]
        for what, items in (("rows match no video", [r for r in self.unmatched if r not in other]),
                            ("rows match several videos by name and label none of them (write "
                             "the path as the store key, class/video)", ambiguous),
                            (MULTI_LABEL, self.multi_label),
                            ("videos have no label",
                             [k for k in self.unlabelled if k not in self.conflicting])):
            if items:
                more = f" and {len(items) - shown} more" if len(items) > shown else ""
                lines.append(f"{len(items)} {what}: {', '.join(items[:shown])}{more}")
        if self.conflicting:
            key, why = next(iter(self.conflicting.items()))
            lines.append(f"{len(self.conflicting)} videos are given different labels by their "
                         f"rows and label nothing, e.g. {key}: {why}")
        unnamed = unnamed_ids(self.classes)
        if unnamed:
            more = f" and {len(unnamed) - shown} more" if len(unnamed) > shown else ""
            called = ", ".join(self.classes[i] for i in unnamed[:shown])
            # a store keeps the names it is made with (its videos record them): a label map
            # names these ids on the run that makes the store, not on a rerun into it
            lines.append(f"{len(unnamed)} label ids have no class name (no class folder of the "
                         f"list names them), called {called}{more}: the dataset's label map "
                         "(--label-map) names them in a new store (pass it on the run that "
                         "makes the store, or rerun into -o NEW_STORE with it)")
        return lines


def unnamed_ids(classes: Sequence[str]) -> list[int]:
    """The ids whose name is the stand-in ``class_<id>`` (:func:`merge_class_names`)."""
    return [i for i, name in enumerate(classes) if name == f"class_{i}"]


# ----------------------------------------------------------------------------- mmaction2 lists

def read_mmaction_list(path: str | os.PathLike, kind: str = "rawframes") -> list[ListEntry]:
    """The entries of an mmaction2 annotation list of ``kind`` ``"rawframes"`` (``frame_dir
    total_frames label...``) or ``"videos"`` (``path label...``); blank lines are skipped. A
    rawframes list asked for as ``"videos"`` (:func:`_looks_rawframes`: what ``flowkit export``
    writes, given to ``extract --annotations``) is read as rawframes. Raises
    :class:`FlowkitError` naming the file and line of a malformed line."""
    if kind not in ("rawframes", "videos"):
        raise ValueError(f"kind must be 'rawframes' or 'videos', got {kind!r}")
    path = Path(path)
    rows = list(_lines(path))
    if kind == "videos" and _looks_rawframes([fields for _, fields in rows]):
        kind = "rawframes"
    entries = []
    for lineno, fields in rows:
        numbers = fields[1:]
        need = 2 if kind == "rawframes" else 1
        if len(numbers) < need or not all(_is_int(v) for v in numbers):
            form = "frame_dir total_frames label" if kind == "rawframes" else "path label"
            if looks_json(rows):  # Diving48's or Something-Something's JSON annotations
                what = "rawframe" if kind == "rawframes" else "video"
                raise json_error(path, f"an mmaction2 {what} list, one '{form}' line a video",
                                 "jump/j0 40 0" if kind == "rawframes" else "jump/j0.mp4 0")
            raise FlowkitError(f"{path}:{lineno}: expected '{form}' (integers after the path), "
                               f"got {echo(fields)}")
        values = [int(v) for v in numbers]
        total = values.pop(0) if kind == "rawframes" else None
        if any(v < 0 for v in values):
            raise FlowkitError(f"{path}:{lineno}: labels must be 0-based class ids, got {values}")
        entries.append(ListEntry(lineno, fields[0], total, tuple(values)))
    return entries


def _looks_rawframes(rows: Sequence[list[str]]) -> bool:
    """Whether every row is ``frame_dir total_frames label``: a path without a video extension
    and exactly two integers. A video list's rows name video files, so such a list is a
    rawframes list, not videos with two labels each."""
    return bool(rows) and all(
        len(f) == 3 and all(_is_int(v) for v in f[1:])
        and PurePosixPath(f[0].replace("\\", "/")).suffix.lower() not in VIDEO_EXTENSIONS
        for f in rows)


def read_keys(path: str | os.PathLike) -> list[str]:
    """Store keys of any video list, in order: the first field of each line without a video
    extension (UCF101 ``trainlist01.txt``, mmaction2 rawframes or video lists). Repeats are
    kept once."""
    path = Path(path)
    if not path.is_file():
        raise FlowkitError(f"video list {path} does not exist")
    keys = [ListEntry(n, fields[0], None, ()).key for n, fields in _lines(path)
            if not fields[0].startswith("#")]
    return list(dict.fromkeys(keys))


def format_list_line(frame_dir: str, total_frames: int | None, label: int) -> str:
    """One line of an mmaction2 list (rawframes when ``total_frames`` is given, else videos)."""
    if any(c.isspace() for c in frame_dir):
        raise FlowkitError(f"{frame_dir!r} contains whitespace, which mmaction2 lists cannot hold")
    middle = f" {int(total_frames)}" if total_frames is not None else ""
    return f"{frame_dir}{middle} {int(label)}\n"


def write_mmaction_list(path: str | os.PathLike,
                        rows: Iterable[tuple[str, int | None, int]]) -> int:
    """Write ``(frame_dir, total_frames, label)`` rows as an mmaction2 list, atomically; returns
    the number of lines."""
    lines = [format_list_line(*row) for row in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def read_label_map(path: str | os.PathLike) -> list[str]:
    """Class names of a label map, name i is label i, in one of three forms:

    - mmaction2's text (``label_map_k400.txt``): one name per line, line i (0-based) is label i;
    - Something-Something V2's JSON (``something-something-v2-labels.json``): an object
      ``{"Pushing [something] from left to right": "93", ...}``, each name's id a number or a
      string of one, the ids 0..N-1 each once (the file's order is not the ids');
    - a JSON array of names, ``["jump", "run"]``: item i is label i.

    Any other JSON (Diving48's vocabulary, a list of lists) is refused, and so is a text line that
    opens like a JSON object (``{``): read as a class name it would shift every id after it. A
    file opening with ``[`` that does not parse as JSON is text: Something-Something's class
    names open so (``[Something] falling like a rock``), in the label_map.txt an export writes."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowkitError(f"cannot read label map {path}: {e}") from None
    opening = text.lstrip()[:1]
    if opening == "{" or opening == "[" and _parses(text):
        return _json_label_map(path, text)
    names = [line.strip() for line in text.splitlines()]
    for lineno, name in enumerate(names, 1):
        if name[:1] == "{":
            raise FlowkitError(f"{path}:{lineno}: {echo([name])} opens like JSON, not a class "
                               "name; a label map is one class name a line, or a whole JSON "
                               "file (Something-Something's {name: id})")
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise FlowkitError(f"{path}: a label map needs one non-empty class name per line")
    if len(set(names)) != len(names):
        raise FlowkitError(f"{path}: a class name appears twice")
    return names


def _parses(text: str) -> bool:
    """Whether ``text`` is JSON."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class _Pairs(list):
    """A JSON object's ``(key, value)`` pairs in file order (``json.loads`` would keep only the
    last of a name given twice)."""


def _json_label_map(path: Path, text: str) -> list[str]:
    """The class names of a JSON label map (:func:`read_label_map`): Something-Something's
    ``{name: id}`` ordered by id, or an array of names in order."""
    form = ("one class name a line, Something-Something's JSON {name: id} (ids 0..N-1), or a "
            "JSON list of names")
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
    except ValueError as e:
        raise FlowkitError(f"{path}: opens like JSON but does not parse ({e}); a label map is "
                           f"{form}") from None
    if isinstance(data, _Pairs):
        by_id: dict[int, str] = {}
        for name, value in data:
            ok = isinstance(value, int) and not isinstance(value, bool) or \
                isinstance(value, str) and value.strip().isdigit()
            if not ok or not name.strip():
                raise FlowkitError(f"{path}: {name!r}: {value!r} is no class name and id; a JSON "
                                   f"label map is {{name: id}} with ids 0..N-1, as "
                                   "Something-Something's ({\"Moving [something] down\": \"0\"})")
            if int(value) in by_id:
                raise FlowkitError(f"{path}: id {int(value)} is given to both "
                                   f"{by_id[int(value)]!r} and {name.strip()!r}; each id 0..N-1 "
                                   "names one class")
            by_id[int(value)] = name.strip()
        missing = [i for i in range(len(by_id)) if i not in by_id]
        if missing:
            raise FlowkitError(f"{path}: ids must run 0..{len(by_id) - 1}, each once; "
                               f"{len(missing)} are missing (e.g. {missing[0]}) and "
                               f"{max(by_id)} is the largest")
        names = [by_id[i] for i in range(len(by_id))]
    elif isinstance(data, list) and all(isinstance(n, str) and n.strip() for n in data):
        names = [n.strip() for n in data]
    else:
        raise FlowkitError(f"{path}: JSON of another form than a label map's (it starts "
                           f"{echo(text[:200].split())}); a label map is {form}")
    if not names:
        raise FlowkitError(f"{path}: the label map names no class")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise FlowkitError(f"{path}: class name {twice!r} appears twice")
    return names


def write_label_map(path: str | os.PathLike, classes: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{name}\n" for name in classes))


def match_list(entries: Sequence[ListEntry], keys: Iterable[str], where: str,
               classes: Sequence[str] | None = None) -> LabelMatch:
    """Label ``keys`` from mmaction2 list ``entries`` (read from ``where``).

    An entry matches the key equal to its path (without video extension), else the one key with
    the same last name (lists written relative to another root). Class names come from
    ``classes`` (a label map), else from the class folders when each label's videos share one
    folder: the matched keys', then for an id none of them has (a list of a subset, a class not
    downloaded) the folder of the list's own rows; else ``class_<id>``. Multi-label entries label
    nothing and count as unmatched. Rows that give one video different labels label nothing
    either (:func:`_conflicting`); the same label given again is no news.
    """
    keys = sorted(set(keys))
    by_name = defaultdict(list)
    for key in keys:
        by_name[PurePosixPath(key).name].append(key)
    ids: dict[str, int] = {}
    totals: dict[str, int] = {}
    unmatched, multi, ambiguous = [], [], {}
    listed = {e.key: e.labels[0] for e in entries if len(e.labels) == 1}
    rows_of: dict[str, dict[int, ListEntry]] = defaultdict(dict)  # key -> {label: first row}
    for entry in entries:
        candidates = by_name.get(PurePosixPath(entry.key).name, [])
        key = entry.key if entry.key in candidates else (
            candidates[0] if len(candidates) == 1 else None)
        if key is None or len(entry.labels) != 1:
            unmatched.append(f"{where}:{entry.lineno} {entry.path}")
            if key is not None:
                multi.append(unmatched[-1])
            elif candidates:  # one name, several videos: which one the row means is unknown
                ambiguous[unmatched[-1]] = candidates
            continue
        ids[key] = entry.labels[0]
        rows_of[key].setdefault(entry.labels[0], entry)
        if entry.total_frames is not None:
            totals[key] = entry.total_frames
    conflicting = _conflicting(rows_of, lambda a, b: _ONE_ROW_A_VIDEO)
    ids = {k: i for k, i in ids.items() if k not in conflicting}
    names = _class_names(ids, listed, classes, where)
    return LabelMatch({k: (i, names[i]) for k, i in ids.items()}, names, unmatched,
                      [k for k in keys if k not in ids], totals, multi, ambiguous, listed,
                      conflicting)


#: What to do about a list's rows that give one video different labels.
_ONE_ROW_A_VIDEO = ("flowkit trains one label a video: keep one row a video (the segments of a "
                    "video, as Epic-Kitchens lists them, cut into clips of their own first)")


def _conflicting(rows_of: dict[str, dict], fix) -> dict[str, str]:
    """The videos whose rows give them different labels (``rows_of``: key -> {label: its first
    row}), key -> two of its labels with their lines and ``fix(row, other_row)``, what to do:
    they label nothing, as a multi-label row, rather than train with the last row's label
    silently (a few such rows among a Kinetics CSV's 650k must not stop a run). A row with several
    labels is not in ``rows_of`` (it labels nothing already: ``MULTI_LABEL``)."""
    out = {}
    for key, found in rows_of.items():
        if len(found) > 1:
            (a, row_a), (b, row_b) = list(found.items())[:2]
            out[key] = (f"label {a!r} (line {row_a.lineno}) and {b!r} (line {row_b.lineno}); "
                        f"{fix(row_a, row_b)}")
    return out


def _class_names(ids: dict[str, int], listed: dict[str, int], classes: Sequence[str] | None,
                 where: str) -> list[str]:
    """The label map ``classes`` (checked to hold the matched ``ids``), else the names the
    matched keys' folders and then the list's rows (``listed``) give."""
    if classes is not None:
        count = max(ids.values(), default=-1) + 1
        if count > len(classes):
            raise FlowkitError(f"{where}: label {count - 1} is out of range of the label map's "
                               f"{len(classes)} classes")
        return list(classes)
    return merge_class_names([(where, ids)], [(where, listed)])


def merge_class_names(lists: Sequence[tuple[str, dict[str, int]]],
                      rows: Sequence[tuple[str, dict[str, int]]] = ()) -> list[str]:
    """Class names of the label ids of one dataset's mmaction2 lists (train and validation:
    ``(where, {key: label id})`` each, the matched store keys), from the union of their
    (label -> class folder) pairs, so a list lacking a class takes its name from another. An id
    no key names takes the folder the lists' ``rows`` give it (``(where, {row key: label id})``,
    matched or not: the rows of a class whose videos are not there still name it) when no other
    id has that name; ``class_<id>`` for an id still unnamed (:func:`unnamed_ids`; the report
    suggests a label map). A list whose folders are not one to one with its labels (a flat
    layout, ``train/<video>``) names nothing. Two lists that name one label by two folders, or one
    folder by two labels, are a :class:`FlowkitError` naming both (the keys' and the rows' pairs
    are checked apart: a key matched by its last name may sit in another folder than its row)."""
    count = max((max(ids.values(), default=-1) for _, ids in [*lists, *rows]), default=-1) + 1
    names = _folder_names(lists)
    for label, folder in _folder_names(rows).items():
        if label not in names and folder not in names.values():
            names[label] = folder
    return [names.get(i, f"class_{i}") for i in range(count)]


def _folder_names(lists: Sequence[tuple[str, dict[str, int]]]) -> dict[int, str]:
    """label id -> class folder from the lists' (label -> folder) pairs, as
    :func:`merge_class_names` reads them; raises on a label or a folder named two ways."""
    by_label: dict[int, dict[str, str]] = defaultdict(dict)  # label -> {folder: first list}
    by_folder: dict[str, dict[int, str]] = defaultdict(dict)  # folder -> {label: first list}
    for where, ids in lists:
        pairs = _folder_pairs(ids)
        if any(len(f) != 1 or "" in f for f in pairs.values()) \
                or len({next(iter(f)) for f in pairs.values()}) != len(pairs):
            continue  # this list's folders are not its classes
        for label, (folder,) in pairs.items():
            by_label[label].setdefault(folder, where)
            by_folder[folder].setdefault(label, where)
    for what, seen, other in (("label", by_label, "class folder"),
                              ("class folder", by_folder, "label")):
        for item, found in seen.items():
            if len(found) > 1:
                (a, wa), (b, wb) = list(found.items())[:2]
                raise FlowkitError(f"{what} {item!r} is {other} {a!r} in {wa} but {b!r} in {wb}: "
                                   "the lists are not of one dataset; pass its label map "
                                   "(--label-map) or fix the lists")
    return {label: next(iter(folders)) for label, folders in by_label.items()}


def _folder_pairs(ids: dict[str, int]) -> dict[int, set[str]]:
    """label id -> the folders (parent names, "" at the top) its keys are in."""
    folders = defaultdict(set)
    for key, label in ids.items():
        parts = PurePosixPath(key).parts
        folders[label].add(parts[-2] if len(parts) > 1 else "")
    return folders


# ----------------------------------------------------------------------------- Kinetics CSV

def read_kinetics_csv(path: str | os.PathLike) -> list[KineticsRow]:
    """The rows of a Kinetics-style CSV (header ``label,youtube_id,time_start,time_end,split``;
    ``label`` may be missing, as in test files). Raises :class:`FlowkitError` naming the file and
    line of a malformed row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowkitError(f"cannot read {path}: {e}") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    if "youtube_id" not in header:
        raise FlowkitError(f"{path}: not a Kinetics CSV (the header {echo([','.join(header)])} has "
                           f"no youtube_id column; expected {','.join(KINETICS_COLUMNS)})")
    col = {name: header.index(name) for name in KINETICS_COLUMNS if name in header}
    rows = []
    for lineno, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) < len(header):
            raise FlowkitError(f"{path}:{lineno}: {len(values)} fields, the header has "
                               f"{len(header)}")
        get = {name: values[i].strip() for name, i in col.items()}
        try:
            start = int(float(get["time_start"])) if get.get("time_start") else None
            end = int(float(get["time_end"])) if get.get("time_end") else None
        except ValueError:
            raise FlowkitError(f"{path}:{lineno}: time_start / time_end must be numbers, got "
                               f"{get.get('time_start')!r}, {get.get('time_end')!r}") from None
        if not get["youtube_id"]:
            raise FlowkitError(f"{path}:{lineno}: empty youtube_id")
        rows.append(KineticsRow(lineno, get.get("label") or None, get["youtube_id"], start, end,
                                get.get("split", "")))
    return rows


def match_kinetics(rows: Sequence[KineticsRow], keys: Iterable[str], where: str,
                   classes: Sequence[str] | None = None) -> LabelMatch:
    """Label ``keys`` (videos named ``<youtube_id>_<start>_<end>`` or ``<youtube_id>``) from
    Kinetics CSV ``rows`` (read from ``where``). Class ids index ``classes`` (a label map, so that
    a validation file or a subset of the classes keeps the ids of the whole set) when given,
    else the sorted label names of ``rows``; a label ``classes`` lacks is a
    :class:`FlowkitError` naming it. Rows that give one video different labels (the segments of
    a video, ``<id>,0,2`` and ``<id>,2,4``, matched to the whole video ``<youtube_id>``:
    :func:`_segments_fix`) label nothing (:attr:`LabelMatch.conflicting`)."""
    keys = sorted(set(keys))
    by_clip: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    by_id: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        name = PurePosixPath(key).name
        m = _CLIP_RE.fullmatch(name)
        if m:
            by_clip[(m["id"], int(m["start"]), int(m["end"]))].append(key)
        by_id[name].append(key)
    classes = _kinetics_classes(rows, where, classes)
    index = {name: i for i, name in enumerate(classes)}
    labels: dict[str, tuple[int, str]] = {}
    rows_of: dict[str, dict[str, KineticsRow]] = defaultdict(dict)  # key -> {label: first row}
    unmatched = []
    for row in rows:
        found = by_clip.get((row.youtube_id, row.time_start, row.time_end), []) \
            if row.time_start is not None and row.time_end is not None else []
        found = found or by_id.get(row.youtube_id, [])
        if not found:
            unmatched.append(f"{where}:{row.lineno} {row.youtube_id}")
            continue
        if row.label:
            for key in found:
                labels[key] = (index[row.label], row.label)
                rows_of[key].setdefault(row.label, row)
    conflicting = _conflicting(rows_of, _segments_fix)
    labels = {k: v for k, v in labels.items() if k not in conflicting}
    return LabelMatch(labels, classes, unmatched, [k for k in keys if k not in labels],
                      conflicting=conflicting)


def _segments_fix(a: KineticsRow, b: KineticsRow) -> str:
    """What to do about two rows that label one video differently: rows of other times are
    segments of it (Epic-Kitchens', AVA's), which need clips of their own."""
    if None in (a.time_start, a.time_end, b.time_start, b.time_end) \
            or (a.time_start, a.time_end) == (b.time_start, b.time_end):
        return _ONE_ROW_A_VIDEO
    return (f"its rows are segments of one video ({a.youtube_id} {a.time_start}-{a.time_end} s "
            f"and {b.time_start}-{b.time_end} s): flowkit labels whole videos; cut the segments "
            f"into clips named <youtube_id>_<start>_<end> first (e.g. "
            f"{a.youtube_id}_{a.time_start:06d}_{a.time_end:06d}.mp4)")


def _kinetics_classes(rows: Sequence[KineticsRow], where: str,
                      classes: Sequence[str] | None) -> list[str]:
    """The class names ids index: ``classes`` (a label map) if given, checked to hold every label
    of ``rows``, else the labels of ``rows``, sorted."""
    if classes is None:
        return sorted({r.label for r in rows if r.label})
    known = set(classes)
    missing = {}
    for row in rows:
        if row.label and row.label not in known:
            missing.setdefault(row.label, row.lineno)
    if missing:
        shown = ", ".join(f"{label!r} (line {n})" for label, n in list(missing.items())[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FlowkitError(f"{where}: labels {shown}{more} are not in the label map of "
                           f"{len(classes)} classes; pass the label map of this dataset "
                           "(--label-map) or add them to it")
    return list(classes)


def match_annotations(path: str | os.PathLike, keys: Iterable[str], *, kind: str = "rawframes",
                      label_map: str | os.PathLike | None = None) -> LabelMatch:
    """:func:`match_kinetics` for a ``.csv`` file, else :func:`match_list` of an mmaction2 list
    of ``kind``; class names and ids from ``label_map`` when given, for both."""
    path = Path(path)
    if not path.is_file():
        raise FlowkitError(f"annotation file {path} does not exist")
    classes = read_label_map(label_map) if label_map is not None else None
    if path.suffix.lower() == ".csv":
        return match_kinetics(read_kinetics_csv(path), keys, str(path), classes)
    return match_list(read_mmaction_list(path, kind), keys, str(path), classes)


# ----------------------------------------------------------------------------- HMDB51 splits

HMDB51_SPLITS = (1, 2, 3)
_HMDB51_FILE = re.compile(r"(?P<cls>.+)_test_split(?P<split>\d+)\.txt")
_HMDB51_USE = {"1": "train", "2": "test", "0": "unused"}


@dataclass
class SplitLists:
    """One split of a dataset as lists of videos (``class/video.avi``, POSIX paths relative to the
    dataset root) and its class names (sorted; label ``i`` is ``classes[i]``)."""
    classes: list[str]
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def read_hmdb51_split(split_dir: str | os.PathLike, split: int) -> SplitLists:
    """Split ``split`` (1-3) of HMDB51's ``testTrainMulti_7030_splits`` folder: one file a class,
    ``<class>_test_split<split>.txt``, each line ``<video>.avi <id>`` with id 1 (training),
    2 (testing) or 0 (in neither; HMDB51 holds 70 training and 30 test videos a class). Classes
    are the sorted class names, the order ``flowkit extract`` gives HMDB51's class folders (and
    mmaction2's HMDB51 label map). Raises :class:`FlowkitError` naming the file and line of a
    malformed line or a video listed twice, or when the folder holds no file of that split."""
    split_dir = Path(split_dir)
    if int(split) not in HMDB51_SPLITS:
        raise FlowkitError(f"HMDB51 has splits 1, 2 and 3, not {split}")
    if not split_dir.is_dir():
        raise FlowkitError(f"{split_dir} is not a folder (expected HMDB51's "
                           "testTrainMulti_7030_splits)")
    files = {}
    for path in sorted(split_dir.iterdir()):
        match = _HMDB51_FILE.fullmatch(path.name)
        if match and int(match["split"]) == int(split):
            files[match["cls"]] = path
    if not files:
        raise FlowkitError(f"{split_dir} holds no '<class>_test_split{split}.txt' file (expected "
                           "HMDB51's testTrainMulti_7030_splits folder)")
    out, seen = SplitLists(classes=sorted(files)), {}
    for name in out.classes:
        path = files[name]
        for lineno, fields in _lines(path):
            where = f"{path}:{lineno}"
            if len(fields) != 2 or fields[1] not in _HMDB51_USE or "/" in fields[0] \
                    or not PurePosixPath(fields[0]).suffix:
                raise FlowkitError(f"{where}: expected '<video>.avi <0|1|2>', got "
                                   f"{echo(fields)}")
            video = f"{name}/{fields[0]}"
            if video in seen:
                raise FlowkitError(f"{where}: {fields[0]!r} is listed twice (first at "
                                   f"{seen[video]})")
            seen[video] = where
            getattr(out, _HMDB51_USE[fields[1]]).append(video)
    return out


def write_split_lists(out_dir: str | os.PathLike, lists: SplitLists, split: int
                      ) -> dict[str, Path]:
    """Write ``lists`` as UCF101's files do, atomically: ``trainlist0<split>.txt``
    (``class/video.avi <1-based id>``), ``testlist0<split>.txt`` (``class/video.avi``) and
    ``classInd.txt`` (``<id> <class>``), the ids indexing ``lists.classes``. An existing
    ``classInd.txt`` with other classes is refused (the lists of other splits index it).
    Returns the paths by kind (``"train"``, ``"test"``, ``"classes"``)."""
    from .labels import CLASS_INDEX, read_class_index

    out_dir = Path(out_dir)
    index = out_dir / CLASS_INDEX
    if index.is_file() and read_class_index(index) != lists.classes:
        raise FlowkitError(f"{index} exists with other classes; write these lists to another "
                           "folder")
    for video in lists.train + lists.test:
        if any(c.isspace() for c in video):
            raise FlowkitError(f"{video!r} contains whitespace, which a split list cannot hold")
    ids = {name: i + 1 for i, name in enumerate(lists.classes)}
    paths = {"train": out_dir / f"trainlist{int(split):02d}.txt",
             "test": out_dir / f"testlist{int(split):02d}.txt", "classes": index}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths["train"], "".join(f"{v} {ids[v.split('/')[0]]}\n" for v in lists.train))
    atomic_write_text(paths["test"], "".join(f"{v}\n" for v in lists.test))
    atomic_write_text(index, "".join(f"{i} {name}\n" for name, i in ids.items()))
    return paths


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowkitError(f"cannot read annotation list {path}: {e}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields:
            yield lineno, fields


__all__ = ["ListEntry", "KineticsRow", "LabelMatch", "read_mmaction_list", "read_keys",
           "format_list_line", "write_mmaction_list", "read_label_map", "write_label_map",
           "match_list", "merge_class_names", "read_kinetics_csv", "match_kinetics",
           "match_annotations",
           "KINETICS_COLUMNS", "SplitLists", "read_hmdb51_split", "write_split_lists",
           "HMDB51_SPLITS"]
