"""What a whole store holds (:meth:`FlowStore.summary`): per-video facts, cached in ``index.json``.

Facts per video: frames, size, RGB frames and bytes, and per flow its pairs, engine, backend, codec
(with its error bound), bytes, the largest coding error seen and the values clipped; and an
abridged :meth:`FlowStore.meta` (``"meta"``: size, step, frames, label, codecs, each flow's engine
record and 8-bit bound). The cache is keyed by each file's (inode, size, mtime), so a summary of
300k videos opens only the files added or replaced since the last one, and so do a dataset built
over them and an extraction resuming into them (:meth:`FlowStore.metas`); it is rebuilt when
missing, stale or of another version. The file's layout: :mod:`flowkit.store.index`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py

from ..errors import StoreError
from ..progress import Progress
from .codecs import codec_of, codec_spec
from .guard import Failed, guarded_map, hang_seconds, remember
from .index import Entry, current
from .layout import check_video_header, comparable_params, open_read, py_value
from .reading import attributes, member, members

#: Reading videos new to the index shows a progress bar once it has taken this long.
BAR_AFTER_SECONDS = 1.0

#: The root attributes an abridged meta keeps (:meth:`FlowStore.metas`: what extraction compares
#: and datasets read).
BRIEF_ATTRS = ("height", "width", "source_height", "source_width", "step", "frame_count", "label",
               "max_frames")


def dataset_bytes(ds: h5py.Dataset) -> int:
    """Bytes a dataset's frames take on disk (encoded frames: their byte strings)."""
    if "encoded_bytes" in ds.attrs and ds.dtype == object:
        return int(ds.attrs["encoded_bytes"])
    return int(ds.id.get_storage_size())


def video_facts(path: Path) -> dict[str, Any] | None:
    """What :meth:`FlowStore.summary` needs from one video file (JSON), and under ``"meta"`` what
    :meth:`FlowStore.metas` gives of it; None if unreadable: not HDF5, not a flowkit video, of a
    newer format version or with a codec this flowkit does not know (a newer flowkit's), missing
    facts, or a group or dataset it links but cannot open (a damaged object header: never facts
    without that flow; :meth:`FlowStore.validate` says which)."""
    try:
        with open_read(path) as f:
            check_video_header(f, path)
            a = f.attrs
            rgb = member(f, "rgb")
            flows, brief = {}, {k: py_value(a[k]) for k in BRIEF_ATTRS if k in a}
            brief.update(num_frames=int(a["frame_count"]), has_rgb=rgb is not None, flows={})
            if rgb is not None:
                brief["rgb_codec"] = codec_spec(codec_of(attributes(rgb), rgb=True))
            for name, ds in members(member(f, "flow")).items():
                d = attributes(ds)
                codec = codec_of(d)
                flows[name] = {"pairs": ds.shape[0], "engine": d["engine"],
                               "backend": d.get("backend", "torch"),
                               "quantization": codec.describe(), "bytes": dataset_bytes(ds),
                               "max_error": getattr(codec, "max_error", None),
                               "max_error_seen": d.get("max_error_seen"),
                               "clipped": int(d.get("clipped_values", 0))}
                brief["flows"][name] = {
                    "codec_spec": codec_spec(codec), "engine_version": d["engine_version"],
                    "params": json.loads(d["params"]), "bound": d.get("bound")}
            return {"frames": int(a["frame_count"]), "size": f"{int(a['height'])}x{int(a['width'])}",
                    "meta": brief,
                    "rgb_frames": rgb.shape[0] if rgb is not None else 0,
                    "rgb_bytes": dataset_bytes(rgb) if rgb is not None else 0,
                    "rgb_codec": codec_of(attributes(rgb), rgb=True).describe()
                    if rgb is not None else None,
                    "flows": flows}
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, StoreError):
        return None


def indexed_facts(keys: Iterable[str], path_of: Callable[[str], str], index: dict[str, Entry],
                  checked: set[str] | None = None, progress: Progress | None = None
                  ) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """Each video's index entry: ``({key: Entry}, new_entries)`` for the videos ``keys``, whose
    files ``path_of(key)`` names: the ``index`` entry itself when it has the file's stamp, else one
    read from the file (facts None when unreadable; the readable ones and those that hung the
    reader are ``new_entries``, for the index); a file that is gone is left out.

    The files to read are read after every stamp is compared, in a child process that gives up on
    a file HDF5 never returns from (:mod:`flowkit.store.guard`: it is unreadable), with a
    ``progress`` bar over them once that has taken :data:`BAR_AFTER_SECONDS` (a store just
    extracted may hold 300k of them: 20 minutes; a few need no bar). ``checked``: keys whose entry was found current before,
    served without a ``stat``; keys found current are added to it.
    """
    found, stale = current(keys, path_of, index, checked)
    # Files the index knows hung a reader, unchanged since: never opened in this process either,
    # unless the read ran past a shorter time limit than this process gives (a slow disk, and
    # FLOWKIT_HANG_SECONDS raised for it): those are read again.
    limit = hang_seconds()
    slow = [key for key, entry in found.items()
            if entry.hung_seconds is not None and entry.hung_seconds < limit]
    stale += [(key, path_of(key), found.pop(key).stamp) for key in slow]
    remember({path_of(key): (entry.stamp, entry.hung) for key, entry in found.items()
              if entry.hung})
    new, task, started = {}, None, time.perf_counter()
    read = guarded_map(video_facts, [(Path(path),) for _, path, _ in stale])
    for done, ((key, path, now), facts) in enumerate(zip(stale, read)):
        if task is None and time.perf_counter() - started >= BAR_AFTER_SECONDS:
            task = (progress or Progress()).start("indexing videos new to the store's index",
                                                  total=len(stale), completed=done)
        if isinstance(facts, Failed):
            found[key] = new[key] = Entry(now, None, hung=facts.reason,
                                          hung_seconds=facts.seconds)
        else:
            found[key] = Entry(now, facts)
        if found[key].readable:
            new[key] = found[key]
            if checked is not None:
                checked.add(key)
        if task is not None:
            task.advance()
    if task is not None:
        task.close()
    return found, new


class SummaryStats:
    """Accumulates per-video facts for :meth:`FlowStore.summary`."""

    def __init__(self):
        self.videos = self.frames = self.rgb_frames = self.bytes = self.rgb_bytes = 0
        self.unreadable: list[str] = []
        self.pairs: Counter = Counter()
        self.flow_bytes: Counter = Counter()
        self.engines: dict[str, Counter] = {}
        self.quant: dict[str, set] = {}
        self.backends: dict[str, set] = {}
        self.rgb_codecs: set = set()
        self.max_error_seen: dict[str, float] = {}
        self.clipped: dict[str, dict[str, int]] = {}
        self.sizes: Counter = Counter()
        # id(params) -> (params, its text, the text it compares by): videos of one index layout
        # share one params dict
        self._texts: dict[int, tuple[dict, str, str]] = {}
        self._shown: dict[tuple, str] = {}  # a configuration -> the params text first seen

    def _text(self, params: dict) -> tuple[str, str]:
        """``(text, identity)`` of an engine record's params: the identity compares the records
        of one configuration alike (:func:`~flowkit.store.layout.comparable_params`: weights by
        digest, a None digest as none, the rule the store check applies in
        ``compat._engine_differences``), so a store extended from another directory or across
        flowkit versions is not called a mix of configurations."""
        known = self._texts.get(id(params))
        if known is None or known[0] is not params:
            known = self._texts[id(params)] = (
                params, json.dumps(params, sort_keys=True),
                json.dumps(comparable_params(params), sort_keys=True))
        return known[1], known[2]

    def add(self, key: str, path: str, nbytes: int, facts: dict[str, Any] | None) -> None:
        self.videos += 1
        self.bytes += nbytes
        if facts is None:
            self.unreadable.append(path)
            return
        self.frames += facts["frames"]
        self.rgb_frames += facts["rgb_frames"]
        self.rgb_bytes += facts.get("rgb_bytes", 0)
        if facts.get("rgb_codec"):
            self.rgb_codecs.add(facts["rgb_codec"])
        self.sizes[facts["size"]] += 1
        for name, flow in facts["flows"].items():
            self.pairs[name] += flow["pairs"]
            self.flow_bytes[name] += flow.get("bytes", 0)
            record = facts["meta"]["flows"][name]  # the engine record, kept once per video
            text, identity = self._text(record["params"])
            config = (flow["engine"], record["engine_version"], identity)
            self.engines.setdefault(name, Counter())[config] += 1
            self._shown.setdefault(config, text)
            self.quant.setdefault(name, set()).add(flow["quantization"])
            self.backends.setdefault(name, set()).add(flow.get("backend", "torch"))
            if flow.get("max_error_seen") is not None:
                self.max_error_seen[name] = max(self.max_error_seen.get(name, 0.0),
                                                float(flow["max_error_seen"]))
            if flow.get("clipped"):
                self.clipped.setdefault(name, {})[key] = int(flow["clipped"])

    def result(self) -> dict[str, Any]:
        engines, warnings = {}, []
        for name, configs in sorted(self.engines.items()):
            config, _ = configs.most_common(1)[0]
            engine, version, _ = config
            engines[name] = {"engine": engine, "version": version,
                             "params": json.loads(self._shown[config])}
            if len(configs) > 1:
                warnings.append(f"flow {name!r} was made with {len(configs)} different engine "
                                "configurations; the most common is listed")
        for name, quants in sorted(self.quant.items()):
            if len(quants) > 1:
                warnings.append(f"flow {name!r} is stored with mixed quantisation {sorted(quants)}")
        for name, videos in sorted(self.clipped.items()):
            warnings.append(f"flow {name!r}: {sum(videos.values())} values beyond the codec's range "
                            f"were clipped in {len(videos)} videos (e.g. {sorted(videos)[0]})")
        if self.unreadable:
            warnings.append(f"{len(self.unreadable)} video files cannot be read; "
                            "`flowkit info STORE --validate` names them (FlowStore.validate() "
                            "in Python)")
        per_pair = {n: self.flow_bytes[n] / self.pairs[n] for n in self.pairs if self.pairs[n]}
        return {"videos": self.videos, "frames": self.frames, "rgb_frames": self.rgb_frames,
                "flow_pairs": dict(sorted(self.pairs.items())), "bytes": self.bytes,
                "engines": engines,
                "quantization": {n: sorted(q) for n, q in sorted(self.quant.items())},
                "backends": {n: sorted(b) for n, b in sorted(self.backends.items())},
                "rgb_codec": sorted(self.rgb_codecs),
                "bytes_per_rgb_frame": self.rgb_bytes / self.rgb_frames if self.rgb_frames else None,
                "bytes_per_flow_pair": dict(sorted(per_pair.items())),
                "max_error_seen": dict(sorted(self.max_error_seen.items())),
                "clipped": {n: sum(v.values()) for n, v in sorted(self.clipped.items())},
                "sizes": dict(self.sizes.most_common()), "unreadable": len(self.unreadable),
                "warnings": warnings}


__all__ = ["BRIEF_ATTRS", "video_facts", "indexed_facts", "SummaryStats", "dataset_bytes"]
