"""Verification metrics on pair scores: ROC, AUC, TAR at a fixed FAR, best accuracy. numpy only.

Conventions, used by every function here:

* A pair is *accepted* at threshold t when its score >= t (higher scores mean "more similar"; for a
  distance, pass its negative).
* The candidate thresholds are +inf followed by every distinct finite score, descending. A score of
  -inf (a pair with a photo the system could not embed) is therefore rejected at every candidate
  threshold: a same-identity pair with -inf is a miss, a different-identity pair a correct rejection.
* NaN scores are an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Roc:
    """The ROC at each candidate threshold (descending): accepted_genuine[k] and accepted_impostor[k]
    count the same-identity and different-identity pairs with score >= thresholds[k]."""

    thresholds: np.ndarray
    accepted_genuine: np.ndarray
    accepted_impostor: np.ndarray
    genuine: int
    impostor: int

    @property
    def tar(self) -> np.ndarray:
        """True-accept rate at each threshold."""
        return self.accepted_genuine / self.genuine

    @property
    def far(self) -> np.ndarray:
        """False-accept rate at each threshold."""
        return self.accepted_impostor / self.impostor


def _scores(values: np.ndarray | list[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"no {name} scores")
    if np.isnan(arr).any():
        raise ValueError(f"{name} scores contain NaN")
    return np.sort(arr)


def roc(genuine: np.ndarray | list[float], impostor: np.ndarray | list[float]) -> Roc:
    """ROC of genuine (same-identity) and impostor (different-identity) pair scores."""
    g, i = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    finite = np.concatenate([g[np.isfinite(g)], i[np.isfinite(i)]])
    thresholds = np.concatenate([[np.inf], np.unique(finite)[::-1]])
    accepted_genuine = g.size - np.searchsorted(g, thresholds, side="left")
    accepted_impostor = i.size - np.searchsorted(i, thresholds, side="left")
    return Roc(thresholds, accepted_genuine, accepted_impostor, g.size, i.size)


def auc(curve: Roc) -> float:
    """Area under the complete ROC, (0, 0) to (1, 1), by the trapezoid rule.

    The curve is closed with a straight segment to (1, 1) (the -inf threshold that accepts every pair), so
    this equals P(genuine > impostor) + P(genuine == impostor) / 2 over all genuine x impostor pairs,
    with -inf below every finite score and two -inf scores counted as a tie.
    """
    far = np.concatenate([[0.0], curve.far, [1.0]])
    tar = np.concatenate([[0.0], curve.tar, [1.0]])
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(curve: Roc, far: float) -> tuple[float, float]:
    """(TAR, threshold) at a false-accept rate of at most `far`.

    The threshold is the smallest candidate score t such that the fraction of impostor pairs with
    score >= t is <= `far`; TAR is the fraction of genuine pairs with score >= t. With n impostor
    pairs, a FAR below 1/n allows no impostor at all (t lies above the highest impostor score).
    """
    valid = np.flatnonzero(curve.far <= far)  # far is non-decreasing along descending thresholds
    k = int(valid[-1])  # index 0 (t = +inf) always has far 0
    return float(curve.tar[k]), float(curve.thresholds[k])


def best_accuracy(curve: Roc) -> tuple[float, float]:
    """(accuracy, threshold) maximising (accepted genuine + rejected impostor) / all pairs.

    On ties the highest such threshold is returned. The threshold is a score value: accept >= it.
    """
    correct = curve.accepted_genuine + (curve.impostor - curve.accepted_impostor)
    k = int(np.argmax(correct))
    return float(correct[k] / (curve.genuine + curve.impostor)), float(curve.thresholds[k])
