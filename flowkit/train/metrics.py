"""Classification metrics over per-video scores: top-k accuracy, confusion matrix, mean class accuracy.

Pure numpy (torch tensors are accepted and converted). Accuracies are fractions in ``[0, 1]``.
Conventions: ``scores`` ``(N, K)`` (logits or probabilities, higher is better), ``labels`` ``(N,)``
ints in ``[0, K)``; the confusion matrix has rows = true class and columns = predicted class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import FlowkitError


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor on any device
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    """Shapes as in the module docstring, and every label a class of ``scores``: ValueError for a
    label outside ``[0, K)`` (an unlabelled video's -1, a class the scores do not have), which
    would otherwise count as top-1 correct (the argmax of a row without the label is 0)."""
    if scores.ndim != 2:
        raise FlowkitError(f"scores must be (N, K), got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise FlowkitError(f"labels must be (N,) with N = {scores.shape[0]}, got {labels.shape}")
    k = scores.shape[1]
    outside = (labels < 0) | (labels >= k)
    if outside.any():
        raise ValueError(f"labels must be class indices in [0, {k}) for scores of {k} classes; "
                         f"{int(outside.sum())} of {labels.size} are not (e.g. "
                         f"{int(labels[outside][0])} at row {int(np.flatnonzero(outside)[0])}); "
                         "leave unlabelled videos (label -1) out of what is scored")


def topk_correct(scores, labels, topk: Sequence[int] = (1, 5)) -> dict[int, int]:
    """Number of rows whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` larger than the number of classes K counts as K (every row is correct). Ties are broken by
    the lower class index (a stable sort), so results do not depend on the platform.

    Shape:
        scores ``(N, K)``, labels ``(N,)`` -> ``{k: int}``.
    """
    scores, labels = _numpy(scores), _numpy(labels).astype(np.int64)
    _check(scores, labels)
    if scores.shape[0] == 0:
        return {int(k): 0 for k in topk}
    order = np.argsort(-scores, axis=1, kind="stable")
    # rank[i] = position of the true label in row i's ordering (0 = top-1)
    rank = np.argmax(order == labels[:, None], axis=1)
    return {int(k): int((rank < min(int(k), scores.shape[1])).sum()) for k in topk}


def topk_accuracy(scores, labels, topk: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the ``k`` highest scores: ``{k: accuracy}``.

    An empty input gives ``nan`` for every ``k``.

    >>> topk_accuracy([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], [2, 0], topk=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    scores = _numpy(scores)
    n = scores.shape[0] if scores.ndim == 2 else 0
    correct = topk_correct(scores, labels, topk)
    return {k: (c / n if n else float("nan")) for k, c in correct.items()}


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts: entry ``[i, j]`` = videos of true class ``i`` predicted as ``j``.

    Shape:
        predictions ``(N,)`` ints, labels ``(N,)`` ints -> ``(K, K)``.
    """
    predictions = _numpy(predictions).astype(np.int64).reshape(-1)
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    if predictions.shape != labels.shape:
        raise FlowkitError(f"predictions {predictions.shape} and labels {labels.shape} differ in length")
    k = int(num_classes)
    for name, v in (("labels", labels), ("predictions", predictions)):
        if v.size and (v.min() < 0 or v.max() >= k):
            raise FlowkitError(f"{name} must be in [0, {k}), got values in [{v.min()}, {v.max()}]")
    return np.bincount(labels * k + predictions, minlength=k * k).reshape(k, k).astype(np.int64)


def per_class_accuracy(confusion) -> np.ndarray:
    """``(K,)`` float: recall of each class (diagonal / row sum); ``nan`` for classes with no video."""
    confusion = _numpy(confusion).astype(np.float64)
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


def mean_class_accuracy(confusion) -> float:
    """Mean over classes that have at least one video of their accuracy (UCF101/HMDB51's "mean
    class accuracy"); ``nan`` when the matrix is empty."""
    acc = per_class_accuracy(confusion)
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()) if acc.size else float("nan")
