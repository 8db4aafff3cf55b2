from __future__ import annotations

import numpy as np
import pytest

from tasks.config import ThresholdSpec
from tasks.train import ThresholdError, choose_threshold

# Ten validation rows, scores descending; positives at the top and one in the middle.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
LABELS = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)


def test_fixed_threshold_is_taken_as_given() -> None:
    assert choose_threshold(LABELS, SCORES, ThresholdSpec(method="fixed", value=0.33)) == 0.33


def test_max_f1_picks_the_cut_with_the_best_f1() -> None:
    # at 0.6: tp 3, fp 1, fn 0 -> F1 = 6/7, the best
    assert choose_threshold(LABELS, SCORES, ThresholdSpec(method="max_f1")) == 0.6


def test_target_precision_keeps_the_most_recall_that_reaches_it() -> None:
    # precision >= 0.75 holds at 0.8 (1.0) and 0.6 (0.75); the lower cut keeps more recall
    assert choose_threshold(LABELS, SCORES, ThresholdSpec(method="target_precision", target=0.75)) == 0.6


def test_target_recall_is_the_highest_cut_that_reaches_it() -> None:
    assert choose_threshold(LABELS, SCORES, ThresholdSpec(method="target_recall", target=0.6)) == 0.8


def test_min_expected_cost_weighs_the_two_errors() -> None:
    # when a miss costs 10 and a false alarm 1, declining down to 0.6 costs 1 (one false alarm)
    spec = ThresholdSpec(method="min_expected_cost", cost_false_positive=1, cost_false_negative=10)
    assert choose_threshold(LABELS, SCORES, spec) == 0.6


def test_min_expected_cost_can_decline_nobody() -> None:
    # when false alarms are far dearer than misses, no threshold beats declining nobody
    labels = np.array([0, 1, 0, 0], dtype=np.int8)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    spec = ThresholdSpec(method="min_expected_cost", cost_false_positive=100, cost_false_negative=1)
    assert choose_threshold(labels, scores, spec) == 1.0


def test_unreachable_precision_is_an_error() -> None:
    labels = np.array([0, 1, 0, 1], dtype=np.int8)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    with pytest.raises(ThresholdError, match=r"precision 0\.99"):
        choose_threshold(labels, scores, ThresholdSpec(method="target_precision", target=0.99))


def test_tied_scores_are_one_candidate() -> None:
    # given ties: the threshold must not split a group of equal scores
    labels = np.array([1, 0, 1, 0], dtype=np.int8)
    scores = np.array([0.5, 0.5, 0.5, 0.1])
    assert choose_threshold(labels, scores, ThresholdSpec(method="max_f1")) == 0.5
