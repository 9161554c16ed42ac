"""Which videos to process and their labels: a class-per-folder tree, or UCF101-style split lists.

A video's *key* is its path relative to the dataset root, without extension, with ``/`` separators
(``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"``); the store files it under that key. Its class is the
first directory of that path. Label ids are 0-based indices into the sorted (or ``classInd.txt``)
class list; a video with no class folder has label -1 and name ``""``.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

from .errors import FlowkitError
from .files import escape_name, file_identity, walk_once

# flowkit.video.VIDEO_EXTENSIONS, kept here so that scanning a folder imports no decoder
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".vob")
#: What lies beside videos and is no video: files of these extensions (annotations, lists, text,
#: images, audio, archives, a store's HDF5 files) and files without an extension (README) are
#: skipped without a note; any other file a scan skips is counted in one (:func:`_unknown_note`).
NOT_VIDEO_EXTENSIONS = frozenset(
    ".txt .csv .tsv .json .jsonl .md .rst .xml .yaml .yml .log .pdf .html .srt .vtt .ass "
    ".jpg .jpeg .png .bmp .gif .tif .tiff .webp .wav .mp3 .aac .m4a .flac .ogg "
    ".zip .tar .gz .tgz .bz2 .xz .7z .rar .md5 .sha1 .sha256 .npy .npz .pkl .pt .pth .h5 "
    ".hdf5 .py .sh .tmp .partial".split())
CLASS_INDEX = "classInd.txt"


@dataclass(frozen=True)
class VideoItem:
    """One video to process: where it is, its store key, and its label (-1 / "" if unknown)."""

    path: Path
    key: str
    label: int
    label_name: str


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split list: ``relative`` path, 1-based ``label`` or None. ``frame_dir``: the
    line is an mmaction2 rawframes line, whose path names a frame folder (no extension);
    ``zero_based``: the list is mmaction2's, which wrote ``label - 1`` (:attr:`written`)."""

    lineno: int
    relative: PurePosixPath
    label: int | None
    frame_dir: bool = False
    zero_based: bool = False

    @property
    def written(self) -> str:
        """The label as the line writes it, for messages: ``"3"``, ``"2 (0-based)"``."""
        return label_text(self.label, self.zero_based)

    @property
    def key(self) -> str:
        """The video's store key (path without extension; a frame folder's path as it is, so a
        dot in its name stays, as :attr:`flowkit.annotations.ListEntry.key` keeps it)."""
        if self.frame_dir and self.relative.suffix.lower() not in VIDEO_EXTENSIONS:
            return self.relative.as_posix()
        return _key(self.relative)

    @property
    def class_folder(self) -> str:
        """The first directory of the path ("" for a video at the root)."""
        return _class_of(self.relative)


def label_text(label: int | None, zero_based: bool) -> str:
    """A 1-based ``label`` as a list wrote it: itself, or less one with "(0-based)" for an
    mmaction2 list (``zero_based``), so that a message names the number on the line."""
    return f"{label - 1} (0-based)" if zero_based and label is not None else str(label)


#: Why a list's labels read 0-based, for a message about a label out of range.
ZERO_BASED_WHY = ("a list with a label 0 or a 'frame_dir total_frames label' line, or whose "
                  "labels name their class folders only so, is read as mmaction2's, whose labels "
                  "are 0-based")


def base_hint(label: int, zero_based: bool, folder: str, classes: Sequence[str]) -> str:
    """For a line whose 1-based ``label`` is another class of ``classes`` than its ``folder``:
    a parenthesis saying that the number written, read in the other base, names the folder (the
    list as a whole reads in neither so: :func:`_zero_based`), else ``""``."""
    other = label - 2 if zero_based else label  # 0-based index of the written number read so
    if not 0 <= other < len(classes) or classes[other] != folder:
        return ""
    if zero_based:
        return (f" (read 1-based, as UCF101 writes labels, it would be {folder!r}, but "
                f"{ZERO_BASED_WHY})")
    return (f" (read 0-based, as mmaction2 writes labels, it would be {folder!r}, but then other "
            "lines would not name their folders, so the list reads 1-based, as UCF101's)")


#: How many characters of a malformed line a message echoes: a JSON file is one line of megabytes.
ECHO_CHARS = 80


def echo(fields: Sequence[str], limit: int = ECHO_CHARS) -> str:
    """A line's ``fields`` for a message, quoted: joined by spaces and cut to ``limit`` characters
    with "..." (a JSON file given for a list is one line: Something-Something's is 20 MB)."""
    text = " ".join(fields)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def looks_json(rows: Sequence[tuple[int, list[str]]]) -> bool:
    """Whether the first of a file's ``(line number, fields)`` rows opens a JSON array or object
    (``[``, ``{``): a dataset's JSON annotations (Diving48's, Something-Something's) given where
    a list of lines is expected. Asked only of a file that does not read as that list."""
    return bool(rows) and rows[0][1][0][:1] in ("[", "{")


def json_error(path, expected: str, example: str) -> FlowkitError:
    """The one-line error for a JSON file (:func:`looks_json`) given where ``expected`` lines
    are: what to convert it to, with one ``example`` line."""
    return FlowkitError(f"{path} looks like a JSON file; expected {expected}: convert it to such "
                        f"lines (e.g. {example!r})")


def _key(relative: PurePosixPath) -> str:
    return relative.with_suffix("").as_posix()


def _class_of(relative: PurePosixPath) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else ""


def _check_unique(keys: Iterable[tuple[str, str]]) -> None:
    """Fail on two sources with one key (``a.mp4`` and ``a.avi``): they would overwrite each other."""
    seen: dict[str, str] = {}
    for key, where in keys:
        if key in seen:
            raise FlowkitError(f"two videos map to the store key {key!r}: {seen[key]} and {where}; "
                               "rename one of them")
        seen[key] = where


def walk_directories(root: Path, notes: list[str]
                     ) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(root, followlinks=True)`` that enters each real directory once: yields
    ``(dirpath, dirnames, filenames)``, both name lists sorted and without hidden entries.

    A link back up the tree is a loop, and a second link to a directory would list its content
    twice: both are skipped (by ``(st_dev, st_ino)``), as are broken links and directories that
    cannot be listed; every skipped entry gets a line in ``notes``. Changing ``dirnames`` prunes
    the walk, as with :func:`os.walk`. The store lists its videos with the same walk
    (:func:`flowkit.files.walk_once`)."""
    for dirpath, dirnames, filenames in walk_once(root, notes, hidden=False):
        yield Path(dirpath), dirnames, sorted(f for f in filenames if not f.startswith("."))


def _walk_videos(root: Path, extensions: tuple[str, ...], notes: list[str]) -> list[PurePosixPath]:
    """Relative paths of the video files under ``root``, in sorted walk order.

    Links are followed, but each real directory is entered once (:func:`walk_directories`) and
    each real file is listed once (two links to one video would be computed and stored twice).
    FIFOs, devices and directories whose names end like videos are skipped; every skipped entry
    gets a line in ``notes``."""
    found: list[PurePosixPath] = []
    seen_files: dict[tuple[int, int], PurePosixPath] = {}
    unknown: list[Path] = []
    for dirpath, dirnames, filenames in walk_directories(root, notes):
        for d in dirnames:
            if d.lower().endswith(extensions):
                notes.append(f"{dirpath / d}: a directory, not a video file (looked for videos "
                             "inside)")
        for name in filenames:
            if not name.lower().endswith(extensions):
                if Path(name).suffix.lower() not in NOT_VIDEO_EXTENSIONS | {""}:
                    unknown.append(dirpath / name)
                continue
            path = dirpath / name
            try:
                st = path.stat()
            except OSError as exc:
                notes.append(f"{path}: skipped ({exc.strerror or exc}; a broken link?)")
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                        "a socket" if stat.S_ISSOCK(st.st_mode) else
                        "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                        else "not a regular file")
                notes.append(f"{path}: skipped, {kind}, not a video file")
                continue
            if file_identity(st) in seen_files:
                notes.append(f"{path}: skipped, the same file as "
                             f"{root / seen_files[file_identity(st)]}")
                continue
            seen_files[file_identity(st)] = rel = PurePosixPath(path.relative_to(root).as_posix())
            found.append(rel)
    if unknown:
        notes.append(_unknown_note(unknown, extensions))
    return found


def _unknown_note(skipped: list[Path], extensions: tuple[str, ...]) -> str:
    """One note for the files a scan skipped for their extension, neither a video's nor one of
    :data:`NOT_VIDEO_EXTENSIONS`: how many, their extensions, an example, and what to do, so that
    a camera's or a phone's videos of an unlisted format are not left out silently."""
    kinds = sorted({p.suffix.lower() for p in skipped})
    return (f"skipped {len(skipped)} file{'s' * (len(skipped) != 1)} whose extension "
            f"({first_few(kinds, 5)}) is not read as video, e.g. {skipped[0]}; videos are looked "
            f"for as {first_few(extensions, 6)}: rename such a video with one of these extensions")


def first_few(names, shown: int) -> str:
    """The first ``shown`` of ``names``, comma-separated, with ", ..." when there are more."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def safe_key(relative: PurePosixPath) -> str:
    """The store key of a video path: its path without extension, :func:`escape_name`-d."""
    return escape_name(_key(relative))


def scan_videos(root: str | os.PathLike, extensions: Sequence[str] | None = None,
                notes: list[str] | None = None) -> tuple[list[VideoItem], list[str]]:
    """Find the videos under ``root`` laid out as ``root/<class>/.../<video>``.

    Returns the items sorted by key and the sorted class names (label ids index into them). Videos
    directly under ``root`` are unlabelled (-1, ""). Hidden files and folders are skipped;
    ``extensions`` (default :data:`VIDEO_EXTENSIONS`) match case-insensitively. Skipped entries
    (link loops, a file reached twice, FIFOs, directories named like videos) are described in
    ``notes`` when given, and so are, in one note, files skipped for an extension that is not
    a video's (:data:`NOT_VIDEO_EXTENSIONS` excepted: annotations, images and the like beside the
    videos are no news). Non-UTF-8 file names get escaped keys (:func:`safe_key`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FlowkitError(f"video folder {root} does not exist or is not a directory")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower()
                 for e in (extensions or VIDEO_EXTENSIONS))
    relatives = sorted(_walk_videos(root, exts, notes if notes is not None else []), key=safe_key)
    _check_unique((safe_key(r), str(root / r)) for r in relatives)
    classes = sorted({escape_name(_class_of(r)) for r in relatives} - {""})
    index = {name: i for i, name in enumerate(classes)}
    items = []
    for r in relatives:
        label_name = escape_name(_class_of(r))
        items.append(VideoItem(root / r, safe_key(r), index.get(label_name, -1), label_name))
    return items, classes


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names from a UCF101 ``classInd.txt`` (``"1 ApplyEyeMakeup"`` lines, ids 1..N)."""
    path = Path(path)
    by_id: dict[int, str] = {}
    rows = list(_lines(path))
    for lineno, fields in rows:
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) < 1:
            if looks_json(rows):
                raise json_error(path, "UCF101's classInd.txt, one '<id> <ClassName>' line a "
                                 "class, ids from 1", "1 ApplyEyeMakeup")
            raise FlowkitError(f"{path}:{lineno}: expected '<id> <ClassName>' with a 1-based id, "
                               f"got {echo(fields)}")
        if int(fields[0]) in by_id:
            raise FlowkitError(f"{path}:{lineno}: class id {fields[0]} appears twice")
        by_id[int(fields[0])] = fields[1]
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise FlowkitError(f"{path}: class ids must run 1..{len(by_id)} without gaps")
    if len(set(by_id.values())) != len(by_id):
        raise FlowkitError(f"{path}: a class name appears twice")
    return [by_id[i] for i in range(1, len(by_id) + 1)]


def _lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-blank, non-comment lines of ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FlowkitError(f"cannot read {path}: {e}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            yield lineno, fields


def _default_classes(root: Path, relatives: Iterable[PurePosixPath]) -> list[str]:
    if root.is_dir():
        folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if folders:
            return sorted(folders)
    return sorted({_class_of(r) for r in relatives} - {""})


def _spaced_path(fields: list[str]) -> bool:
    """Whether two fields are one path with a space (``PanLeft/my clip.mp4``) rather than a path
    and a label: the second is a video file name, or the first has no extension and the second
    is no number."""
    if len(fields) != 2 or fields[1].isdigit():
        return False
    return (fields[1].lower().endswith(VIDEO_EXTENSIONS)
            or not PurePosixPath(fields[0].replace("\\", "/")).suffix)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _rawframes_line(fields: list[str]) -> bool:
    """Whether the fields are an mmaction2 rawframes line, ``frame_dir total_frames label``
    (what ``flowkit export`` writes and mmaction2 ships): a path without a video extension (a
    frame folder; a video with several labels is a multi-label video line, not one) and only
    integers after it, at least two. No path with a space reads so: its second part is no
    integer."""
    return (len(fields) >= 3 and all(_is_int(f) for f in fields[1:])
            and _row_path(fields).suffix.lower() not in VIDEO_EXTENSIONS)


def _zero_based(rows: list[list[str]], classes: Sequence[str] | None = None) -> bool:
    """Whether a list's labels are 0-based, as in mmaction2's lists (rawframes ``frame_dir
    total_frames label``, videos ``path label``): a line is a rawframes line; else, with the
    ``classes`` known (``classInd.txt`` or the dataset's folders), the one base under which
    every labelled line in a class folder names that folder (a subset of the classes has no
    label 0); else a label is 0. UCF101's own lists are 1-based (``classInd.txt`` ids);
    mmaction2's label i is its id i+1. A list of paths without class folders and without a label
    0 reads 1-based: the numbers alone do not tell."""
    if any(_rawframes_line(f) for f in rows):
        return True
    fits = _fitting_bases(rows, classes) if classes else [0, 1]
    if len(fits) == 1:
        return fits[0] == 0
    return any(len(f) == 2 and f[1].isdigit() and int(f[1]) == 0 for f in rows)


def _fitting_bases(rows: list[list[str]], classes: Sequence[str]) -> list[int]:
    """The bases (0, 1) under which the label of every ``path label`` line whose path has a class
    folder names that folder in ``classes``; both when no line has a label and a folder."""
    labelled = [(_class_of(_row_path(f)), int(f[1])) for f in rows
                if len(f) == 2 and f[1].isdigit()]
    labelled = [(folder, label) for folder, label in labelled if folder]
    return [base for base in (0, 1)
            if all(0 <= label - base < len(classes) and classes[label - base] == folder
                   for folder, label in labelled)]


def _row_path(fields: list[str]) -> PurePosixPath:
    """The path a list line starts with, ``\\`` read as ``/``."""
    return PurePosixPath(fields[0].replace("\\", "/"))


def _parse_split_line(list_file: Path, lineno: int, fields: list[str],
                      zero_based: bool = False) -> SplitEntry:
    """One line as a :class:`SplitEntry`, its label 1-based (an mmaction2 label plus one)."""
    where = f"{list_file}:{lineno}"
    if zero_based and _rawframes_line(fields):
        relative = PurePosixPath(fields[0].replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            raise FlowkitError(f"{where}: {fields[0]!r} is not a relative frame folder path")
        # several integers after total_frames: a multi-label or with_offset line, whose label is
        # not one class: the class folder labels the video, as on a line without label
        label = int(fields[2]) if len(fields) == 3 else None
        if label is not None and label < 0:
            raise FlowkitError(f"{where}: label {label} is not a 0-based class id (an mmaction2 "
                               "rawframes line is 'frame_dir total_frames label')")
        return SplitEntry(lineno, relative, None if label is None else label + 1, True, True)
    if len(fields) > 2 and all(_is_int(f) for f in fields[1:]):  # a video path: not rawframes
        raise FlowkitError(f"{where}: expected '<class>/<video> [label]', got "
                           f"{echo(fields)}: a video with several labels (a multi-label "
                           "list); a split list gives a video one label, or none (its class "
                           "folder labels it)")
    if len(fields) > 2 or _spaced_path(fields):
        raise FlowkitError(f"{where}: expected '<class>/<video> [label]' (or an mmaction2 "
                           f"line, 'frame_dir total_frames label'), got {echo(fields)} "
                           "(paths with spaces are not supported: rename the video without "
                           "spaces and list it under that name)")
    relative = PurePosixPath(fields[0].replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.suffix:
        raise FlowkitError(f"{where}: {fields[0]!r} is not a relative video path with extension")
    if len(fields) == 1:
        return SplitEntry(lineno, relative, None)
    if zero_based and fields[1].isdigit():
        return SplitEntry(lineno, relative, int(fields[1]) + 1, zero_based=True)  # mmaction2
    if not fields[1].isdigit() or int(fields[1]) < 1:
        raise FlowkitError(f"{where}: label {fields[1]!r} is not a 1-based class id")
    return SplitEntry(lineno, relative, int(fields[1]))


def parse_split_list(list_file: str | os.PathLike,
                     classes: Sequence[str] | None = None) -> list[SplitEntry]:
    """The entries of a split list, in order, as written.

    Lines are UCF101's ``<class>/<video>.<ext> [label]`` (1-based label), or mmaction2's
    rawframes ``<class>/<video> total_frames label`` or video ``<class>/<video>.<ext> label``
    (0-based label, returned plus one, the ``classInd.txt`` ids they are in UCF101). A list with
    a rawframes line is mmaction2's; else, given the dataset's ``classes`` (``classInd.txt`` or
    its sorted folders), the one base under which every line in a class folder names its folder;
    else a list with a label 0 is mmaction2's (:func:`_zero_based`). Blank lines and ``#``
    comments are skipped. Raises :class:`FlowkitError` naming the file and line for a missing
    file or a malformed line.
    """
    list_file = Path(list_file)
    return _parse_rows(list_file, _split_rows(list_file), classes)


def _split_rows(list_file: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the lines of split list ``list_file``, which must be a file."""
    if list_file.is_dir():
        raise FlowkitError(f"split list {list_file} is a directory; give the list file in it "
                           "(e.g. trainlist01.txt)")
    if not list_file.is_file():
        raise FlowkitError(f"split list {list_file} does not exist")
    return list(_lines(list_file))


def _parse_rows(list_file: Path, rows: list[tuple[int, list[str]]],
                classes: Sequence[str] | None) -> list[SplitEntry]:
    """The entries of a split list's ``rows``, read in the base they and ``classes`` tell."""
    zero_based = _zero_based([fields for _, fields in rows], classes)
    try:
        return [_parse_split_line(list_file, lineno, fields, zero_based)
                for lineno, fields in rows]
    except FlowkitError:
        if looks_json(rows):  # Diving48's Diving48_V2_test.json: no "paths with spaces" advice
            raise json_error(list_file, "a split list, one '<class>/<video> [label]' line a "
                             "video", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") from None
        raise


def class_index_beside(list_file: str | os.PathLike) -> Path | None:
    """The :data:`CLASS_INDEX` (``classInd.txt``) in the folder of ``list_file``, if there is one:
    UCF101 ships its split lists beside the class list their label ids index (1-based)."""
    path = Path(list_file).parent / CLASS_INDEX
    return path if path.is_file() else None


def read_split_list(list_file: str | os.PathLike, root: str | os.PathLike,
                    class_index: str | os.PathLike | None = None) -> tuple[list[VideoItem], list[str]]:
    """Videos of a UCF101-style split list, in list order, and the class names.

    Lines are ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`` (1-based label, as in
    ``trainlist01.txt``) or the path alone (``testlist01.txt``; the label comes from the class
    folder). Classes come from ``class_index`` or a ``classInd.txt`` next to ``list_file``, else
    from the sorted folder names under ``root``; they also tell the base of an mmaction2 list of
    a class subset (:func:`parse_split_list`). Returned label ids are 0-based. A malformed line,
    a label that contradicts its folder, or a repeated video raises :class:`FlowkitError` naming the
    file and line; listed videos missing on disk are returned anyway (extraction reports them).
    """
    list_file, root = Path(list_file), Path(root)
    rows = _split_rows(list_file)
    if class_index is None:
        class_index = class_index_beside(list_file)
    classes = (read_class_index(class_index) if class_index is not None
               else _default_classes(root, (_row_path(fields) for _, fields in rows)))
    parsed = _parse_rows(list_file, rows, classes)  # the classes tell a subset list's base
    index = {name: i for i, name in enumerate(classes)}
    _check_unique((e.key, f"{list_file}:{e.lineno}") for e in parsed)
    return [_split_item(list_file, e, root, classes, index) for e in parsed], classes


def read_split_lists(list_files: Sequence[str | os.PathLike], root: str | os.PathLike,
                     class_index: str | os.PathLike | None = None
                     ) -> tuple[list[VideoItem], list[str]]:
    """The union of several split lists' videos (``trainlist01.txt`` and ``testlist01.txt``: the
    whole split), in list order, a video in two lists once, and the one class list they share.

    The classes come from ``class_index``, else from the ``classInd.txt`` beside the lists (the
    ones found must agree), else from the sorted folder names under ``root``, as in
    :func:`read_split_list`, which reads each list. Raises :class:`FlowkitError` for two lists
    beside different class indexes, or that give one key two videos or two labels."""
    if class_index is None:
        found = {path: read_class_index(path) for path in
                 dict.fromkeys(p for p in map(class_index_beside, list_files) if p is not None)}
        if len({tuple(classes) for classes in found.values()}) > 1:
            raise FlowkitError(f"the split lists lie beside different class indexes "
                               f"({', '.join(map(str, found))}); pass --class-index to choose one")
        class_index = next(iter(found), None)
    items: dict[str, VideoItem] = {}
    classes: list[str] = []
    for list_file in list_files:
        listed, classes = read_split_list(list_file, root, class_index)
        for item in listed:
            seen = items.setdefault(item.key, item)
            if seen.path != item.path or seen.label != item.label:
                raise FlowkitError(f"{list_file}: {item.key!r} is {item.path} with label "
                                   f"{item.label_name or None!r} in it and {seen.path} with label "
                                   f"{seen.label_name or None!r} in an earlier list; fix one "
                                   "of the lists")
    return list(items.values()), classes


def _video_of(root: Path, entry: SplitEntry) -> Path:
    """The video file of a list entry: its path under ``root``, or for an mmaction2 rawframes
    line (a frame folder, named as its video without extension) the video of that name found
    there, else ``root/frame_dir`` (missing: extraction reports it)."""
    path = root / entry.relative
    if entry.frame_dir:
        for ext in VIDEO_EXTENSIONS:
            for found in (path.with_name(path.name + ext), path.with_name(path.name + ext.upper())):
                if found.is_file():
                    return found
    return path


def _split_item(list_file: Path, entry: SplitEntry, root: Path, classes: list[str],
                index: dict[str, int]) -> VideoItem:
    relative, label = entry.relative, entry.label
    name = _class_of(relative)
    where = f"{list_file}:{entry.lineno}"
    if name and name not in index:
        raise FlowkitError(f"{where}: class folder {name!r} is not among the {len(classes)} known "
                           "classes (check classInd.txt or the dataset root)")
    if label is not None:
        if label > len(classes):
            first = 1 - entry.zero_based
            why = f" ({ZERO_BASED_WHY})" if entry.zero_based else ""
            raise FlowkitError(f"{where}: label {entry.written} is out of range "
                               f"{first}..{len(classes) - 1 + first}{why}")
        if name and classes[label - 1] != name:
            raise FlowkitError(f"{where}: label {entry.written} is class {classes[label - 1]!r} "
                               f"but the video is in folder {name!r}"
                               f"{base_hint(label, entry.zero_based, name, classes)}; pass the "
                               "matching classInd.txt")
        name = classes[label - 1]
    return VideoItem(_video_of(root, entry), entry.key, index.get(name, -1), name)
