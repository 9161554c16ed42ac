"""The store's ``index.json``: each video's facts (:mod:`flowkit.store.summary`), cached per file.

An entry is keyed by the store key and stamped with its file's ``[inode, size, mtime_ns]``; it is
current while the file keeps that stamp. At 300k videos the index is read by every run and every
DDP rank, so its layout is chosen for parsing, not for reading by eye (version 4)::

    {"format": "flowkit-store-index", "version": 4,
     "varying": ["frames", "size", ..., "flows.*.pairs", ...],     the per-video facts, in order
     "layouts": [{"frames": null, "size": null, "meta": {...}, ...}, ...],
     "videos": {"<key>": [inode, size, mtime_ns, layout, frames, size, ...], ...},
     "hung": {"<key>": [inode, size, mtime_ns, "why"], ...}}     optional: files a guarded read
                                                                 never returned from (guard.py)

A video's facts are its *layout* (everything the videos of a store share: codecs, engine records
and parameters, the structure itself; each distinct one written once) with the per-video facts
(:data:`VARYING`: frame counts, sizes, label, bytes...) filled in from its *row*, a flat list.
With its key a video takes about 100 bytes against 580 for the facts written out in full (version
3), and rows parse faster than nested objects: for 300k videos 1.7 s and 283 MB against 8.2 s and
988 MB (benchmarks/results/index_scale.md). Facts are built from the row only when asked for, the
abridged meta alone for the datasets (:attr:`Entry.meta`); parts without a per-video fact (a
flow's engine record, its parameters) are one shared object for all the videos of a layout: read
them, never change them. Version 3 indexes are read as they are and written back as version 4,
without reading a file.
"""
from __future__ import annotations

import contextlib
import gc
import json
from pathlib import Path
from typing import Iterable, Iterator

from ..files import atomic_write_text, stamp
from .claims import exclusive
from .layout import INDEX_LOCK, VIDEOS

INDEX = "index.json"
INDEX_FORMAT = "flowkit-store-index"
INDEX_VERSION = 4  # 4: layouts and rows; 3: facts in full, parameters shared ("params")
#: Facts that differ from video to video, by their path in the facts (``*``: any flow's name).
#: Every other fact belongs to the layout.
VARYING = ("frames", "size", "rgb_frames", "rgb_bytes",
           "meta.height", "meta.width", "meta.source_height", "meta.source_width",
           "meta.frame_count", "meta.num_frames", "meta.label",
           "flows.*.pairs", "flows.*.bytes", "flows.*.max_error_seen", "flows.*.clipped")
_HEAD = 4  # a row: inode, size, mtime_ns, layout id, then the varying facts


def index_stamp(root: Path) -> list[int] | None:
    """The stamp of ``index.json`` (None when absent): whether another process wrote it since."""
    try:
        return stamp(root / INDEX)
    except OSError:
        return None


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off inside the block: building 300k small objects that all
    live on (an index, its entries, their metas) sets off full collections that find nothing and
    cost about a second (measured on index.json's load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Node:
    """How to build one dict of a layout from a row: a copy of the shared ``base`` with the
    per-video facts ``slots`` ({key: row position}) and the dicts below that hold some filled in."""

    __slots__ = ("base", "slots", "children")

    def __init__(self, template: dict, path: tuple[str, ...], varying: frozenset, count: list):
        self.base, self.slots, self.children = template, [], []
        for key, value in template.items():
            here = path + (key,)
            if _matches(here, varying):
                self.slots.append((key, _HEAD + count[0]))
                count[0] += 1
            elif isinstance(value, dict):
                child = _Node(value, here, varying, count)
                if child.slots or child.children:
                    self.children.append((key, child))

    def build(self, row: list) -> dict:
        out = self.base.copy()
        for key, i in self.slots:
            out[key] = row[i]
        for key, child in self.children:
            out[key] = child.build(row)
        return out


def _matches(path: tuple[str, ...], varying: frozenset) -> bool:
    """Whether the fact at ``path`` is per-video: listed, or listed with ``*`` for a flow name."""
    return ".".join(path) in varying or (
        len(path) == 3 and path[0] == "flows" and f"flows.*.{path[2]}" in varying)


class Layout:
    """The facts every video of one kind shares, with the places of the per-video ones."""

    __slots__ = ("template", "text", "size", "_root", "_meta")

    def __init__(self, template: dict, varying: frozenset):
        self.template = template
        # key order kept: it is the order of the row's values
        self.text = json.dumps(template, separators=(",", ":"))
        count = [0]
        self._root = _Node(template, (), varying, count)
        self.size = _HEAD + count[0]  # the length of its rows
        meta = dict(self._root.children).get("meta")
        self._meta = meta if meta is not None else template.get("meta")

    def facts(self, row: list) -> dict:
        return self._root.build(row)

    def meta(self, row: list) -> dict | None:
        m = self._meta
        return m.build(row) if isinstance(m, _Node) else m


def _split(facts: dict, varying: frozenset) -> tuple[dict, list]:
    """``facts`` -> (its layout's template: per-video facts set to None, their values in row
    order). The order is the template's own walk, the one :class:`_Node` makes."""
    values: list = []

    def walk(d: dict, path: tuple[str, ...]) -> dict:
        out = {}
        for key, value in d.items():
            here = path + (key,)
            if _matches(here, varying):
                values.append(value)
                out[key] = None
            elif isinstance(value, dict):
                out[key] = walk(value, here)
            else:
                out[key] = value
        return out
    return walk(facts, ()), values


class Entry:
    """One video's entry: ``stamp`` (its file's, when the facts were read) and ``facts`` (None:
    unreadable; ``hung``: why a guarded read of it never returned or crashed, and
    ``hung_seconds`` the time limit that read ran past, None when it crashed), built from the
    index's row on first use. :attr:`meta` is ``facts["meta"]``,
    built alone (what datasets and extraction read of 300k videos)."""

    __slots__ = ("stamp", "_row", "_layout", "_facts", "_meta", "hung", "hung_seconds")

    def __init__(self, stamp: list[int], facts: dict | None = None, row: list | None = None,
                 layout: Layout | None = None, hung: str = "", hung_seconds: float | None = None):
        self.stamp, self._facts, self._meta = stamp, facts, None
        self._row, self._layout = row, layout
        self.hung = hung  # why reading it failed in a child process (:mod:`.guard`), else ""
        self.hung_seconds = hung_seconds

    @classmethod
    def from_row(cls, row: list, layout: Layout) -> "Entry":
        return cls(row[:3], row=row, layout=layout)

    @property
    def readable(self) -> bool:
        """Whether the file's facts could be read (without building them)."""
        return self._layout is not None or self._facts is not None

    @property
    def facts(self) -> dict | None:
        if self._facts is None and self._layout is not None:
            self._facts = self._layout.facts(self._row)
        return self._facts

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._meta = self._layout.meta(self._row) if self._facts is None \
                else self._facts["meta"]
        return self._meta

    def row(self, layouts: dict[str, int], templates: list[dict], varying: frozenset) -> list:
        """This entry as a row of an index whose layouts (``text -> position``, ``templates``)
        are being collected; a new layout is added to them."""
        if self._layout is not None:
            text, template, values = self._layout.text, self._layout.template, self._row[_HEAD:]
        else:
            template, values = _split(self._facts, varying)
            text = json.dumps(template, separators=(",", ":"))
        if text not in layouts:
            layouts[text] = len(templates)
            templates.append(template)
        return [*self.stamp, layouts[text], *values]

    def __repr__(self) -> str:
        return f"Entry(stamp={self.stamp!r}, facts={self.facts!r})"


class Index(dict):
    """``{key: Entry}`` as read from ``index.json``; ``outdated``: in an older version's layout,
    to be written again in this one."""

    outdated = False


def load_index(root: Path) -> Index:
    """``index.json`` as ``{key: Entry}``; empty when absent, unreadable or of an unknown version.
    A damaged entry is left out (that video is read from its file again)."""
    with paused_gc():
        try:
            data = json.loads((root / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Index()
        if not (isinstance(data, dict) and data.get("format") == INDEX_FORMAT
                and isinstance(data.get("videos"), dict)):
            return Index()
        try:
            if data.get("version") == INDEX_VERSION:
                return _rows(data)
            if data.get("version") == 3:
                return _full_facts(data)
        except (TypeError, ValueError, KeyError, AttributeError):
            pass
        return Index()


def _rows(data: dict) -> Index:
    varying = frozenset(data["varying"])
    layouts = [Layout(t, varying) for t in data["layouts"]]
    videos, count = Index(), len(layouts)
    for key, row in data["videos"].items():
        try:
            layout = layouts[row[3]] if type(row[3]) is int and 0 <= row[3] < count else None
        except (TypeError, KeyError, IndexError):
            continue
        if layout is not None and len(row) == layout.size:
            videos[key] = Entry.from_row(row, layout)
    hung = data.get("hung")  # absent from indexes written before it existed
    for key, row in (hung.items() if isinstance(hung, dict) else ()):
        if (isinstance(row, list) and len(row) in (4, 5) and all(type(v) is int for v in row[:3])
                and isinstance(row[3], str) and row[3]):
            # the time limit it ran past: absent where it crashed (or from an older flowkit)
            seconds = row[4] if len(row) == 5 and isinstance(row[4], (int, float)) else None
            videos[key] = Entry(row[:3], hung=row[3], hung_seconds=seconds)
    return videos


def _full_facts(data: dict) -> Index:
    """Version 3: ``{key: {"stamp", "facts"}}``, each flow's parameters an index into
    ``"params"``."""
    table, videos = data["params"], Index()
    videos.outdated = True
    for key, entry in data["videos"].items():
        try:
            for record in entry["facts"]["meta"]["flows"].values():
                record["params"] = table[record["params"]]
            videos[key] = Entry(list(entry["stamp"]), entry["facts"])
        except (TypeError, KeyError, IndexError):
            continue
    return videos


def save_index(root: Path, videos: dict[str, Entry]) -> None:
    """Write the index (version 4) of ``videos`` (entries with facts, and hung ones: ``"hung"``,
    ``{key: [inode, size, mtime_ns, why, seconds]}``, ``seconds`` the time limit the read ran
    past, left out where it crashed: no later process given no longer waits for them again until
    the file changes); they are not changed. Other unreadable entries are left out (a newer
    flowkit's file may read after an upgrade)."""
    varying, layouts, templates = frozenset(VARYING), {}, []
    rows = {key: entry.row(layouts, templates, varying) for key, entry in videos.items()
            if entry.readable}
    hung = {key: [*entry.stamp, entry.hung,
                  *([entry.hung_seconds] if entry.hung_seconds is not None else [])]
            for key, entry in videos.items() if entry.hung and not entry.readable}
    data = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "varying": list(VARYING),
            "layouts": templates, "videos": rows, **({"hung": hung} if hung else {})}
    # compact: indentation would double a large store's index
    atomic_write_text(root / INDEX, json.dumps(data, separators=(",", ":")) + "\n")


def update_index(root: Path, loaded: dict[str, Entry], loaded_stamp: list[int] | None,
                 new: dict[str, Entry]) -> Index | None:
    """Write ``loaded`` (the index as read when ``index.json`` had ``loaded_stamp``) with the
    entries ``new`` added, under the index lock. If another process wrote the index since it was
    read (several ranks or extraction runs indexing their videos at once), ``new`` is added to
    what it wrote instead, so no process drops another's entries. Returns the entries written;
    None, and the index left as it is, on a read-only store."""
    try:
        with exclusive(root / VIDEOS / INDEX_LOCK):
            if index_stamp(root) != loaded_stamp:
                loaded = load_index(root)
            written = Index(loaded)
            written.update(new)
            save_index(root, written)
            return written
    except OSError:  # a read-only store still summarises, just without the cache
        return None


def current(keys: Iterable[str], path_of, index: dict[str, Entry], checked: set[str] | None
            ) -> tuple[dict[str, Entry], list[tuple[str, str, list[int]]]]:
    """The entries of ``index`` still current for ``keys`` (whose files ``path_of(key)`` names)
    and ``[(key, path, stamp)]`` of the files to read again; a file that is gone is in neither.
    ``checked``: keys found current before, served without a ``stat``; keys found current now
    are added to it."""
    found, stale = {}, []
    with paused_gc():
        for key in keys:
            entry = index.get(key)
            if checked is not None and key in checked and entry is not None:
                found[key] = entry
                continue
            path = path_of(key)
            try:
                now = stamp(path)
            except FileNotFoundError:
                continue
            if entry is not None and entry.stamp == now:
                found[key] = entry
                if checked is not None:
                    checked.add(key)
            else:
                stale.append((key, path, now))
    return found, stale


__all__ = ["INDEX", "INDEX_VERSION", "VARYING", "Entry", "Index", "Layout", "index_stamp",
           "load_index", "save_index", "update_index", "current", "paused_gc"]
