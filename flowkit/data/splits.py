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

from ..errors import FlowkitError
from ..labels import parse_split_list
from ..store import FlowStore

MAX_LISTED = 5  # error messages name at most this many keys

# UCF101 clip names: v_<Class>_g<GG>_c<CC>, the clips of group GG cut from one recording
_UCF101_CLIP = re.compile(r"(?P<group>v_.+_g\d+)_c\d+")


def as_store(store: FlowStore | str | os.PathLike) -> FlowStore:
    """``store`` itself, or the store at that path opened read-only."""
    return store if isinstance(store, FlowStore) else FlowStore(store)


def missing_keys_error(store: FlowStore, missing: Sequence[str], where: str) -> FlowkitError:
    """An error naming up to :data:`MAX_LISTED` of ``missing`` keys and how many there are."""
    shown = ", ".join(repr(k) for k in missing[:MAX_LISTED])
    more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    return FlowkitError(f"{len(missing)} video(s) of {where} are not in store {store.path}: "
                        f"{shown}{more}; extract them (`flowkit extract VIDEOS -o {store.path}`) "
                        "or check that the keys are paths relative to the video root without "
                        "extension")


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
                  num_classes: int | None = None) -> tuple[list[str], list[str]]:
    """``(labelled, unlabelled)``: ``keys`` (in their order) split by whether the video has a
    label, i.e. one in ``[0, num_classes)`` (default: the store's class count). Unlabelled videos
    (label -1: extracted from outside the class folders and not in a split list) can be neither
    learnt nor scored."""
    store = as_store(store)
    k = len(store.classes) if num_classes is None else int(num_classes)
    labelled, unlabelled = [], []
    for key, label in zip(keys, labels(store, keys)):
        (labelled if 0 <= label < k else unlabelled).append(key)
    return labelled, unlabelled


def unlabelled_note(store: FlowStore, unlabelled: Sequence[str], where: str,
                    reason: str = "have no label") -> str:
    """The note that ``unlabelled`` videos of ``store`` (they ``reason``) are left out of
    ``where``, naming up to :data:`MAX_LISTED` of them."""
    shown = ", ".join(repr(k) for k in unlabelled[:MAX_LISTED])
    more = f" and {len(unlabelled) - MAX_LISTED} more" if len(unlabelled) > MAX_LISTED else ""
    return (f"{len(unlabelled)} video(s) of store {store.path} {reason} and are left out of "
            f"{where}: {shown}{more} (a video is labelled by its class folder or split-list line "
            "when extracted)")


def split_from_list(store: FlowStore | str | os.PathLike,
                    list_file: str | os.PathLike) -> list[str]:
    """Store keys of a UCF101-style split list, in list order.

    Lines are ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`` (``trainlist01.txt``, 1-based label)
    or the path alone (``testlist01.txt``); the key is the path without extension. A label is
    checked against the store's class of that number and the video's class folder. Raises
    :class:`FlowkitError` on a malformed line, a repeated video, a contradicting label, or videos
    that are not in the store (naming up to five of them).
    """
    store, list_file = as_store(store), Path(list_file)
    keys, where = [], {}
    for entry in parse_split_list(list_file):
        key, lineno = entry.key, entry.lineno
        if key in where:
            raise FlowkitError(f"{list_file}:{lineno}: video {key!r} is listed twice (first "
                               f"at line {where[key]})")
        if entry.label is not None:
            _check_list_label(store, f"{list_file}:{lineno}", entry.class_folder, entry.label)
        where[key] = lineno
        keys.append(key)
    if not keys:
        raise FlowkitError(f"split list {list_file} lists no videos")
    known = set(store.keys())
    missing = [k for k in keys if k not in known]
    if missing:
        raise missing_keys_error(store, missing, f"split list {list_file}")
    return keys


def _check_list_label(store: FlowStore, where: str, folder: str, label: int) -> None:
    classes = store.classes
    if label > len(classes):
        raise FlowkitError(f"{where}: label {label} is out of range; store {store.path} has "
                           f"{len(classes)} classes")
    if folder and classes[label - 1] != folder:
        raise FlowkitError(f"{where}: label {label} is class {classes[label - 1]!r} in store "
                           f"{store.path} but the video is in folder {folder!r}; the store was "
                           "extracted with another class list (classInd.txt)")


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
