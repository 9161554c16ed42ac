"""Train / validation / test key lists over a store, and its labels.

Keys are store keys: video paths relative to the dataset root without extension
(``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"``). Label ids are 0-based indices into
``store.classes``.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FlowkitError, shell_word
from ..labels import (ZERO_BASED_WHY, base_hint, class_index_beside, label_text,
                      parse_split_list, read_class_index)
from ..store import FlowStore
from ..store.labelling import RELABEL_HINT

MAX_LISTED = 5  # error messages name at most this many keys

# UCF101 clip names: v_<Class>_g<GG>_c<CC>, the clips of group GG cut from one recording
_UCF101_CLIP = re.compile(r"(?P<group>v_.+_g\d+)_c\d+")


def as_store(store: FlowStore | str | os.PathLike) -> FlowStore:
    """``store`` itself, or the store at that path opened read-only."""
    return store if isinstance(store, FlowStore) else FlowStore(store)


def named(keys: Sequence[str]) -> str:
    """Up to :data:`MAX_LISTED` of ``keys``, quoted, and how many more: ``'a', 'b' and 3 more``."""
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(repr(k) for k in keys[:MAX_LISTED]) + more


def missing_keys_error(store: FlowStore, missing: Sequence[str], where: str,
                       skip_option: str | None = None) -> FlowkitError:
    """An error naming up to :data:`MAX_LISTED` of ``missing`` keys and how many there are;
    with ``skip_option`` (``"--skip-missing"``) it first names the option that leaves them out,
    since a video whose extraction failed stays missing however often it is extracted again."""
    skip = (f"; a video whose extraction failed is never in the store: pass {skip_option} "
            "(listed_keys() in Python) to leave the missing ones out (counted and named in a "
            "note), or" if skip_option else ";")
    return FlowkitError(f"{len(missing)} video(s) of {where} are not in store {store.path}: "
                        f"{named(missing)}{skip} extract them "
                        f"(`flowkit extract VIDEOS -o {shell_word(store.path)}`) "
                        "or import them (`flowkit import rawframes RAWFRAMES_DIR -o "
                        f"{shell_word(store.path)}`"
                        "; a video whose import failed is named in that run's summary), or check "
                        "that the keys are paths relative to the video root without extension")


def num_classes(store: FlowStore | str | os.PathLike) -> int:
    """Number of classes of the store (``len(store.classes)``); raises if it has none."""
    store = as_store(store)
    if not store.classes:
        raise FlowkitError(f"store {store.path} has no classes (its videos were not in class "
                           "folders and no split list was given); extract with class folders or "
                           "`--split-list` to train a classifier")
    return len(store.classes)


def labels(store: FlowStore | str | os.PathLike, keys: Sequence[str]) -> list[int]:
    """0-based label of each key (``-1`` for an unlabelled video), from the store's index
    (:meth:`FlowStore.metas`; a video file is opened only when new or changed)."""
    store = as_store(store)
    try:
        metas = store.metas(keys)
        return [int((metas[key] if key in metas else store.meta(key)).get("label", -1))
                for key in keys]
    finally:
        store.close()  # no HDF5 handle stays open in a process that may fork DataLoader workers


def labelled_keys(store: FlowStore | str | os.PathLike, keys: Sequence[str],
                  num_classes: int | None = None, classes: Sequence[str] | None = None
                  ) -> tuple[list[str], list[str]]:
    """``(labelled, unlabelled)``: ``keys`` (in their order) split by whether the video has a
    label, i.e. one in ``[0, num_classes)`` (default: the store's class count), or with
    ``classes`` one whose class name is among them (:func:`label_map`). Unlabelled videos (label
    -1: extracted from outside the class folders and not in a split list) can be neither learnt
    nor scored."""
    store = as_store(store)
    k = len(store.classes) if num_classes is None else int(num_classes)
    mapping = None
    if classes is not None:
        k, mapping = len(classes), label_map(store.classes, classes)
    labelled, unlabelled = [], []
    for key, label in zip(keys, labels(store, keys)):
        if mapping is not None:
            label = mapping[label] if 0 <= label < len(mapping) else -1
        (labelled if 0 <= label < k else unlabelled).append(key)
    return labelled, unlabelled


def label_map(store_classes: Sequence[str], classes: Sequence[str]) -> list[int] | None:
    """The label of each of a store's classes among ``classes`` (a run's), matched by name, -1
    for a class not among them; None when the store's labels already are those (its class list
    begins with ``classes``: a store extracted with the same class folders or ``classInd.txt``).
    A store extracted from another folder numbers its classes by its own sorted folder names,
    so a class missing there shifts every label after it."""
    store_classes, classes = list(store_classes), list(classes)
    if store_classes[:len(classes)] == classes:
        return None
    index = {name: i for i, name in enumerate(classes)}
    return [index.get(name, -1) for name in store_classes]


def unlabelled_note(store: FlowStore, unlabelled: Sequence[str], where: str,
                    reason: str = "have no label") -> str:
    """The note that ``unlabelled`` videos of ``store`` (they ``reason``) are left out of
    ``where``, naming up to :data:`MAX_LISTED` of them."""
    return (f"{len(unlabelled)} video(s) of store {store.path} {reason} and are left out of "
            f"{where}: {named(unlabelled)} (a video is labelled by its class folder or split-list "
            f"line when extracted; to label videos stored unlabelled, {RELABEL_HINT})")


def split_from_list(store: FlowStore | str | os.PathLike,
                    list_file: str | os.PathLike) -> list[str]:
    """Store keys of a UCF101-style split list, in list order.

    Lines are ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`` (``trainlist01.txt``, 1-based label)
    or the path alone (``testlist01.txt``); the key is the path without extension. Training and
    evaluation take each video's label from the store, never from the list, so a list's label ids
    need not be the store's: UCF101's official ids (``classInd.txt``: case-insensitive order,
    ``35 Hammering``, ``36 HammerThrow``) differ from those ``flowkit extract UCF-101`` gives
    (sorted folder names, ``HammerThrow`` before ``Hammering``), and the official lists are taken
    as they are. The labels are checked for what they say about the list itself: each id names one
    class folder and each folder has one id throughout the list, and, when a ``classInd.txt`` sits
    beside the list (:func:`~flowkit.labels.class_index_beside`), each id is in its range and
    names the line's folder there. Raises :class:`FlowkitError` (naming file and line) on a
    malformed line, a repeated video, a contradicting label, or videos that are not in the store
    (naming up to five of them); :func:`listed_keys` returns those instead.
    """
    keys, missing = listed_keys(store, list_file)
    if missing:
        raise missing_keys_error(as_store(store), missing, f"split list {list_file}",
                                 skip_option="--skip-missing")
    return keys


def listed_keys(store: FlowStore | str | os.PathLike, list_file: str | os.PathLike
                ) -> tuple[list[str], list[str]]:
    """``(in_store, not_in_store)``: the keys of a split list (checked as by
    :func:`split_from_list`) that the store holds and those it lacks, each in list order. A
    video whose extraction failed is reported and skipped by ``flowkit extract``, so an official
    list over a partly unreadable dataset names videos no store will hold; ``--skip-missing``
    trains and evaluates on the others (:func:`missing_note` says which were left out)."""
    store, list_file = as_store(store), Path(list_file)
    check = _ListLabels(list_file, class_index_beside(list_file))
    keys, where = [], {}
    for entry in parse_split_list(list_file, check.class_names()):  # they tell a subset's base
        key, lineno = entry.key, entry.lineno
        if key in where:
            raise FlowkitError(f"{list_file}:{lineno}: video {key!r} is listed twice (first "
                               f"at line {where[key]})")
        if entry.label is not None:
            check(lineno, entry.class_folder, entry.label, entry.zero_based)
        where[key] = lineno
        keys.append(key)
    if not keys:
        raise FlowkitError(f"split list {list_file} lists no videos")
    known = set(store.keys())
    return [k for k in keys if k in known], [k for k in keys if k not in known]


def missing_note(store: FlowStore | str | os.PathLike, missing: Sequence[str], where: str
                 ) -> str:
    """The note that ``missing`` listed videos (not in ``store``) are left out of ``where``
    (``--skip-missing``), naming up to :data:`MAX_LISTED` of them."""
    store = as_store(store)
    return (f"{len(missing)} listed video(s) are not in store {store.path} and are left out of "
            f"{where} (--skip-missing): {named(missing)} (a video whose extraction failed is never "
            "in the store)")


class _ListLabels:
    """Checks the label ids of one split list line by line: against ``class_index`` (the
    ``classInd.txt`` beside it, read once: its classes also tell the base of a list of a class
    subset, :func:`~flowkit.labels.parse_split_list`) when there is one, and against the
    list's own earlier lines (one folder per id, one id per folder). The store's class ids play no
    part: the store labels its videos itself."""

    def __init__(self, list_file: Path, class_index: Path | None):
        self.list_file, self.class_index = list_file, class_index
        self.classes: list[str] | None = None
        self.folder_of: dict[int, tuple[str, int]] = {}  # id -> (folder, first line)
        self.id_of: dict[str, tuple[int, int]] = {}      # folder -> (id, first line)

    def class_names(self) -> list[str] | None:
        """The classes of the ``classInd.txt`` beside the list (read once), None without one."""
        if self.class_index is not None and self.classes is None:
            self.classes = read_class_index(self.class_index)
        return self.classes

    def __call__(self, lineno: int, folder: str, label: int, zero_based: bool = False) -> None:
        """Check 1-based ``label`` of line ``lineno`` (in folder ``folder``); ``zero_based``: the
        list is mmaction2's, which wrote ``label - 1`` (the messages name what it wrote)."""
        where = f"{self.list_file}:{lineno}"
        shown = label_text(label, zero_based)
        if self.class_index is not None:
            self.class_names()
            if label > len(self.classes):
                why = f" ({ZERO_BASED_WHY})" if zero_based else ""
                raise FlowkitError(f"{where}: label {shown} is out of range "
                                   f"{1 - zero_based}..{len(self.classes) - zero_based} "
                                   f"of {self.class_index}{why}; fix the line or put the "
                                   "classInd.txt that came with this list beside it")
            if folder and self.classes[label - 1] != folder:
                raise FlowkitError(f"{where}: label {shown} is class "
                                   f"{self.classes[label - 1]!r} in {self.class_index} but the "
                                   f"video is in folder {folder!r}"
                                   f"{base_hint(label, zero_based, folder, self.classes)}; "
                                   "the list and the classInd.txt beside it disagree: put the "
                                   "classInd.txt that came with this list beside it, or fix the "
                                   "line")
        if not folder:
            return  # a video at the root: no folder for its id to name
        named, first = self.folder_of.setdefault(label, (folder, lineno))
        if named != folder:
            raise FlowkitError(f"{where}: label {shown} is given to folder {folder!r}, but "
                               f"{self.list_file}:{first} gives it to folder {named!r}; a label "
                               "id names one class throughout a split list: fix one of the lines")
        known, first = self.id_of.setdefault(folder, (label, lineno))
        if known != label:
            raise FlowkitError(f"{where}: folder {folder!r} has label {shown}, but "
                               f"{self.list_file}:{first} gives it label "
                               f"{label_text(known, zero_based)}; a class has one "
                               "label id throughout a split list: fix one of the lines")


def video_group(key: str) -> str:
    """The recording a video was cut from, as far as its name tells: ``"Archery/v_Archery_g08"``
    for UCF101's ``"Archery/v_Archery_g08_c03"`` (group 08: one actor, one scene, 4-7 clips),
    else the key itself. Clips of one group look alike, so a split that puts some in training and
    others in validation scores memory of the scene, not recognition; UCF101's own split lists
    keep each group whole."""
    folder, slash, name = key.rpartition("/")
    match = _UCF101_CLIP.fullmatch(name)
    return folder + slash + match["group"] if match else key


def stratified_split(store: FlowStore | str | os.PathLike, val_fraction: float, seed: int = 0,
                     keys: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Split ``keys`` (default: all of the store's) into train and validation keys per class,
    keeping each recording group (:func:`video_group`, e.g. UCF101's ``_g08_``) on one side.

    Each class moves whole groups, in an order drawn from ``seed`` and the class, into validation
    until it holds at least ``round(n * val_fraction)`` of its ``n`` videos, but always keeps at
    least one video for training (a group that would take the last one is passed over). Videos
    without a group are groups of one, so for them exactly ``round(n * val_fraction)`` go. Which
    ones depends only on ``seed``, the class and its keys, so the split is reproducible. Both lists
    come back sorted. Unlabelled videos (label -1) are in neither: nothing can be learnt or scored
    from them (:func:`labelled_keys` finds them).
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise FlowkitError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if int(seed) < 0:
        raise FlowkitError(f"seed must be a non-negative integer, got {seed!r}")
    store = as_store(store)
    known = store.keys()
    keys = sorted(set(known if keys is None else keys))
    if not keys:
        raise FlowkitError(f"store {store.path} has no videos to split")
    missing = sorted(set(keys) - set(known))
    if missing:
        raise missing_keys_error(store, missing, "the keys to split")
    by_class: dict[int, list[str]] = defaultdict(list)
    for key, label in zip(keys, labels(store, keys)):
        if label >= 0:
            by_class[label].append(key)
    train, val = [], []
    for label, members in sorted(by_class.items()):
        groups: dict[str, list[str]] = defaultdict(list)
        for key in members:
            groups[video_group(key)].append(key)
        names = sorted(groups)
        rng = np.random.default_rng([int(seed), label + 1])
        target = min(int(round(len(members) * val_fraction)), len(members) - 1)
        taken = 0
        for i in rng.permutation(len(names)):
            group = groups[names[i]]
            if taken >= target:
                train += group
            elif len(members) - taken - len(group) < 1:
                train += group  # it would leave the class nothing to train on
            else:
                val += group
                taken += len(group)
    return sorted(train), sorted(val)
