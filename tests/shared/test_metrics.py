"""Verification metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from revisit.shared.metrics import auc, best_accuracy, roc, tar_at_far

INF = math.inf


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected_auc"),
    [
        ([0.9, 0.8, 0.7], [0.3, 0.2, 0.1], 1.0),  # perfect separation
        ([0.1, 0.2], [0.8, 0.9], 0.0),  # perfectly wrong
        ([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], 0.5),  # identical distributions
        ([0.5, 0.5], [0.5, 0.5], 0.5),  # all tied
        # P(g > i) + P(g == i)/2 over the 2x2 pairs: (0.8>0.6) + (0.8>0.3) + (0.4<0.6) + (0.4>0.3) = 3/4
        ([0.8, 0.4], [0.6, 0.3], 0.75),
        # -inf ranks below every finite score; two -inf are a tie: (0.8>0.6) + (0.8>-inf) + 0 + 1/2 = 2.5/4
        ([0.8, -INF], [0.6, -INF], 0.625),
        ([-INF, -INF], [0.1, 0.2], 0.0),  # every genuine pair failed
    ],
)
def test_auc(genuine, impostor, expected_auc):
    assert auc(roc(genuine, impostor)) == pytest.approx(expected_auc)


def test_auc_matches_pairwise_probability_on_random_scores():
    rng = np.random.default_rng(1)
    g = np.round(rng.normal(1, 1, 200), 1)  # rounding makes ties
    i = np.round(rng.normal(0, 1, 300), 1)
    expected = np.mean(g[:, None] > i[None, :]) + 0.5 * np.mean(g[:, None] == i[None, :])
    assert auc(roc(g, i)) == pytest.approx(expected)


def test_roc_points_by_hand():
    curve = roc([0.9, 0.6, 0.3], [0.7, 0.2])
    assert curve.thresholds.tolist() == [INF, 0.9, 0.7, 0.6, 0.3, 0.2]
    assert curve.tar.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert curve.far.tolist() == pytest.approx([0, 0, 0.5, 0.5, 0.5, 1])
    # FAR 0 -> 0.5 at TAR 1/3, then 0.5 -> 1 at TAR 1; = 4 of the 6 genuine x impostor pairs ordered right
    assert auc(curve) == pytest.approx(0.5 * (1 / 3) + 0.5 * 1.0) == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    ("genuine", "impostor", "far", "expected_tar", "expected_threshold"),
    [
        ([0.9, 0.8, 0.7], [0.3, 0.2, 0.1], 1e-3, 1.0, 0.7),  # perfect: every genuine above every impostor
        # 4 impostors; FAR <= 0.25 lets one (0.75) be accepted; t = 0.6 is the smallest score that keeps
        # FAR at 1/4 (t = 0.5 would accept 2/4); genuine >= 0.6: 0.95, 0.7, 0.6 = 3/4
        ([0.95, 0.7, 0.6, 0.2], [0.75, 0.5, 0.4, 0.1], 0.25, 0.75, 0.6),
        # FAR < 1/4 admits no impostor: t must lie above 0.75, the smallest such score is 0.95
        ([0.95, 0.7, 0.6, 0.2], [0.75, 0.5, 0.4, 0.1], 0.1, 0.25, 0.95),
        # a FAR of 1 accepts everything finite; -inf genuine pairs stay misses
        ([0.9, -INF], [0.1, 0.2], 1.0, 0.5, 0.1),
        # no genuine above the highest impostor: nothing is accepted, t = +inf
        ([0.1, 0.2], [0.8, 0.9], 0.1, 0.0, INF),
        # identical distributions: FAR 1/3 -> TAR 1/3
        ([0.1, 0.5, 0.9], [0.1, 0.5, 0.9], 1 / 3, 1 / 3, 0.9),
    ],
)
def test_tar_at_far(genuine, impostor, far, expected_tar, expected_threshold):
    tar, threshold = tar_at_far(roc(genuine, impostor), far)
    assert tar == pytest.approx(expected_tar)
    assert threshold == expected_threshold


@pytest.mark.parametrize(
    ("genuine", "impostor", "expected_accuracy", "expected_threshold"),
    [
        ([0.9, 0.8, 0.7], [0.3, 0.2, 0.1], 1.0, 0.7),  # the highest threshold reaching the best accuracy
        # t=0.6: accept 0.95, 0.7, 0.6 (3 right) + 0.75 wrongly, reject 0.5, 0.4, 0.1 (3 right) -> 6/8
        ([0.95, 0.7, 0.6, 0.2], [0.75, 0.5, 0.4, 0.1], 0.75, 0.6),
        ([-INF, -INF], [0.1, 0.2], 0.5, INF),  # rejecting everything is right for the impostors
    ],
)
def test_best_accuracy(genuine, impostor, expected_accuracy, expected_threshold):
    accuracy, threshold = best_accuracy(roc(genuine, impostor))
    assert accuracy == pytest.approx(expected_accuracy)
    assert threshold == expected_threshold


def test_minus_inf_scores_are_misses_at_every_threshold():
    curve = roc([0.9, -INF, -INF, 0.5], [0.1, -INF])
    assert -INF not in curve.thresholds
    assert curve.tar.max() == 0.5 and curve.far.max() == 0.5


@pytest.mark.parametrize(("genuine", "impostor"), [([], [0.1]), ([0.1], []), ([float("nan")], [0.1])])
def test_invalid_input_is_an_error(genuine, impostor):
    with pytest.raises(ValueError):
        roc(genuine, impostor)
