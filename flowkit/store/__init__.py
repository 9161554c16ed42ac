"""The flowkit feature store: a directory of per-video HDF5 files, compact, crash-safe, shared-safe.

Layout::

    STORE/
      store.json                 {"format": "flowkit-store", "version": 1, "classes": [...], ...}
      videos/<key>.h5            one finished video, e.g. videos/pan_left/pan_left_0.h5
      videos/<key>.h5.<host>.<pid>.<n>.partial
                                 a video being written by writer <n> of process <pid> on <host>;
                                 never read
      videos/<key>.h5.<name>.claim
                                 a process computing flow/<name> of <key> (its host and pid)
      videos/.commit.lock        flock'ed while a finished video is merged and renamed
      videos/.commit.lock.claim  the commit lock where the file system has no flock (claims.py)
      videos/.index.lock(.claim) held while index.json is merged and rewritten (same rules)
      index.json                 optional cache of per-video facts for summary() and metas()
                                 (datasets); safe to delete

A video's ``<key>`` is its path relative to the source root without extension; with the longest
ending the store gives its files (a partial's, a claim's) its name fits a file name, 255 bytes
(:func:`check_key`). Folders under ``videos/`` may be links (a class moved to another disk): they
are followed, each real folder once. Each ``.h5`` file
holds root attributes (``format="flowkit-video"``, ``version``, ``key``, ``source``, ``fps``,
``frame_count``, ``height``, ``width``, ``source_height``, ``source_width``, ``step``, ``label``,
``label_name``, ``created``, ``complete``) and the datasets

- ``rgb``: uint8 ``(T, H, W, 3)``, optional;
- ``flow/<name>``: ``T-1`` flow pairs ``(2, H, W)``, channel 0 horizontal, 1 vertical, in pixels at
  the stored resolution, with the engine's ``engine``, ``engine_version``, ``params`` and
  ``backend``; ``flow/<name>_backward`` (:func:`flowkit.conventions.backward_name`) holds the same
  pairs computed from frame t+1 to frame t, and also records ``direction="backward"``.

Each dataset records its codec (:mod:`flowkit.store.codecs`): by default flow is ``jpegls`` (error
at most 0.1 px, guaranteed) and RGB is ``jpeg`` (quality 95), about the size of mmaction2 rawframes
in all; ``float16`` / ``raw`` keep everything. Every frame is compressed on its own, so any frame
range reads lazily, and :meth:`FlowStore.read_flow` / :meth:`FlowStore.read_rgb` decode whatever
codec a dataset has (stores written before codecs existed included). Version-2 files add the codec
attributes; version-1 files still read.

Crash safety. HDF5 is not journaled: a process killed while writing can leave its file unreadable.
So a video is written to its own ``.partial`` file, which is flushed, closed and fsync'ed, then
atomically renamed (``os.replace``) to ``<key>.h5`` and the directory fsync'ed. A ``.h5`` file
therefore only ever exists complete, and the directory listing of ``videos/**/*.h5`` is the store's
list of finished videos (``index.json`` only caches facts about them, keyed by each file's
inode, size and mtime, and is rebuilt from the listing). A killed writer loses only the video it was
writing, whose ``.partial`` file readers ignore and :meth:`FlowStore.remove_partials` deletes.

Concurrency. Finished files are never modified in place (a redone video replaces the file through
a new inode, and so does a label filled in, :meth:`FlowStore.fill_labels`), so readers open them
with HDF5 file locking off and never block on, or are blocked by, a writer; a reader that holds
an old handle keeps reading the old, complete file (its :meth:`FlowStore.meta`,
:meth:`FlowStore.flow_names` and a request for a flow or ``rgb`` it lacks reopen a file replaced
since: another process may have added a flow). Any number of processes, any
mix of engines, may write into one store at once (:mod:`~flowkit.store.claims`): a claim file keeps
two processes from computing the same flow of the same video, and a commit merges, under a short
lock, whatever the video's current file holds that the new one lacks (another engine's flow), so no
update is ever lost. Partial and claim names carry host and pid so that a cleanup in one process
never deletes a file another live process is writing.

Faults. HDF5 writes through :class:`~flowkit.store.diskio.LatchingFile`: a full disk, a quota or a
read-only target becomes :class:`~flowkit.errors.StoreWriteError` naming the store (extraction then
stops) and a deleted partial, never a crashed interpreter. A frame that cannot be decoded raises
:class:`~flowkit.errors.DamagedDataError` naming the file, dataset, frames and the ``--redo`` that
re-extracts the video; so does a group or dataset the file links but cannot open (a damaged object
header, :func:`~flowkit.store.reading.member`), which is never taken for a missing one: reads,
:meth:`FlowStore.meta`, the index, :meth:`FlowStore.validate` (shallow too) and a commit into the
video all report it as damage.

Readers open HDF5 files lazily, per process and per thread: :class:`FlowStore` caches each
thread's handles (a bounded LRU each, so no thread closes a file another is reading), drops the
caches when it finds itself in a forked child and never pickles handles, so one store object can be
handed to a torch ``DataLoader`` with any number of workers, or shared by a pool of threads.

Modules: :mod:`~flowkit.store.layout` (names, manifest, partial files), :mod:`~flowkit.store.codecs`,
:mod:`~flowkit.store.writer` (:class:`VideoWriter`), :mod:`~flowkit.store.diskio` (HDF5 over a
file that survives a full disk), :mod:`~flowkit.store.claims` (claims, the commit lock),
:mod:`~flowkit.store.reading` (frames out of a dataset, groups and datasets opened), :mod:`~flowkit.store.flowstore`
(:class:`FlowStore`), :mod:`~flowkit.store.summary` (what a store holds), :mod:`~flowkit.store.index`
(``index.json``, its cache), :mod:`~flowkit.store.labelling` (a rerun's labels against the
store's), :mod:`~flowkit.store.validate`.
"""
from __future__ import annotations

from ..errors import StoreError
from .codecs import (DEFAULT_BOUND, DEFAULT_JPEG_QUALITY, DEFAULT_MAX_ERROR, FLOW_CODECS,
                     RGB_CODECS, Codec, codec_of, dequantize, flow_codec, quantize, rgb_codec)
from .flowstore import FlowStore, read_frames
from .layout import (FORMAT, MANIFEST, PARTIAL, SUFFIX, VERSION, VIDEO_FORMAT, VIDEO_VERSION, VIDEOS,
                     check_key)
from .index import INDEX
from .writer import VideoWriter

__all__ = ["FlowStore", "VideoWriter", "StoreError", "Codec", "FLOW_CODECS", "RGB_CODECS",
           "flow_codec", "rgb_codec", "codec_of", "quantize", "dequantize", "read_frames",
           "DEFAULT_BOUND", "DEFAULT_MAX_ERROR", "DEFAULT_JPEG_QUALITY", "FORMAT", "VERSION",
           "VIDEO_FORMAT", "VIDEO_VERSION", "MANIFEST", "VIDEOS", "SUFFIX", "PARTIAL", "INDEX",
           "check_key"]
