"""A rerun's labels against the store's, for ``flowkit extract`` and ``flowkit import rawframes``.

A rerun keeps the labels of the videos the store holds and only adds what they lack: a video held
unlabelled (label -1) takes the run's label in place (:meth:`FlowStore.fill_labels`, nothing
recomputed), one held under another label than the run gives keeps it. Both are said in a note,
never silently; so are videos neither the run nor the store labels (:func:`unlabelled_note`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


#: How videos stored unlabelled get their labels: what messages about them name.
RELABEL_HINT = ("rerun the store's `flowkit extract` (or `flowkit import rawframes`) with "
                "--annotations LIST (a Kinetics CSV or an mmaction2 list): a rerun fills in the "
                "labels the store lacks without recomputing anything")


@dataclass
class LabelCheck:
    """What a run's labels mean for the videos the store holds: ``fill`` ({key: the run's label
    id}) those held unlabelled, ``kept`` (``(key, stored id, run's id, run's class name)``) those
    held under another label, which they keep."""
    fill: dict[str, int] = field(default_factory=dict)
    kept: list[tuple[str, int, int, str]] = field(default_factory=list)


def check_labels(given: dict[str, tuple[int, str]], stored: dict[str, int]) -> LabelCheck:
    """Compare the run's labels ``given`` ({key: (id, class name)}, ids in the store's class order)
    with the labels the store holds ``stored`` ({key: id}, -1 unlabelled) of the videos in both;
    a video the run does not label (-1) keeps whatever the store holds, unnoted."""
    out = LabelCheck()
    for key, held in stored.items():
        label, name = given.get(key, (-1, ""))
        if label < 0 or label == held:
            continue
        if held < 0:
            out.fill[key] = label
        else:
            out.kept.append((key, held, label, name))
    return out


def fill_missing_labels(store, given: dict[str, tuple[int, str]], stored: dict[str, int],
                        progress=None) -> tuple[list[str], list[str]]:
    """What :func:`check_labels` finds, done: the labels the store at ``store`` (a writable
    :class:`~flowkit.store.FlowStore`) lacks filled in (:meth:`FlowStore.fill_labels`, under
    ``progress``). Returns the keys labelled and the notes: those filled, those kept against
    this run's, and labels that could not be written (a damaged file, with its repair)."""
    check = check_labels(given, stored)
    filled, failed = store.fill_labels(check.fill, progress) if check.fill else ([], {})
    return filled, filled_note(len(filled)) + kept_note(check.kept) + list(failed.values())


def filled_note(count: int) -> list[str]:
    """The note on ``count`` labels :meth:`FlowStore.fill_labels` wrote (none: no note)."""
    if not count:
        return []
    return [f"{count} labels filled in: videos the store held unlabelled (label -1) now have this "
            "run's label (written into their files, nothing recomputed)"]


def kept_note(kept: list[tuple[str, int, int, str]]) -> list[str]:
    """The note on the videos that keep their stored label (:attr:`LabelCheck.kept`): how many,
    one of them, and the way to relabel."""
    if not kept:
        return []
    key, held, label, name = kept[0]
    return [f"{len(kept)} videos already in the store keep their stored label, not this run's "
            f"(e.g. {key}: label {held} in the store, {label} {name!r} here): a rerun only fills "
            "in the labels the store lacks (-1); write a new store (-o NEW_STORE) to relabel"]


def stand_in_note(stored: Sequence[str], run: Sequence[str] | None) -> list[str]:
    """The note on the label ids the store calls ``class_<i>`` (``stored``: its classes; no class
    folder named them when it was made) that this run's classes ``run`` name (a label map given on
    a rerun): the store keeps its stand-ins (:func:`flowkit.store.layout.class_ids`; its videos
    record them), so a rerun changes nothing there, which the note says with the way to the
    names. None named so: no note."""
    named = [(i, run[i]) for i, name in enumerate(stored)
             if name == f"class_{i}" and run is not None and i < len(run)
             and run[i] != name and run[i] not in stored]
    if not named:
        return []
    i, name = named[0]
    many = len(named) > 1
    return [f"{len(named)} label id{'s' * many} the store calls class_<id> "
            f"{'are' if many else 'is'} named by this run (e.g. class_{i}: {name!r}), but the "
            "store keeps the class names it was made with: to have the names, extract into a new "
            "store (-o NEW_STORE) with this --label-map"]


def unlabelled_note(keys: list[str], lists: str) -> list[str]:
    """The note on the videos left without a label (-1) by a run labelled by class folders:
    how many, one of them, and the rerun that labels them (``lists``: the annotation lists the
    command takes)."""
    if not keys:
        return []
    return [f"{len(keys)} videos have no label (label -1: no class folder <class>/<video> holds "
            f"them), e.g. {keys[0]}; flowkit train leaves them out. To label them, rerun with "
            f"--annotations LIST ({lists}): a rerun fills in the labels the store lacks without "
            "recomputing anything"]


__all__ = ["RELABEL_HINT", "LabelCheck", "check_labels", "fill_missing_labels", "filled_note",
           "kept_note", "stand_in_note", "unlabelled_note"]
