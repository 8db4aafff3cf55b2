"""Reason codes: coefficient x (value - training mean), the largest positive contributions first."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.reason_codes import ReasonCoder, design_means


def test_contributions_are_measured_from_the_training_mean() -> None:
    # given weights and training means for three inputs
    coder = ReasonCoder(["a", "b", "c"], [2.0, -1.0, 0.5], {"a": 1.0, "b": 0.0, "c": 4.0})
    # when a row is explained
    codes = coder.explain([3.0, -2.0, 4.0])
    # then contributions are w * (x - mean), positives only, largest first
    assert [(c.feature, c.contribution) for c in codes] == [("a", 4.0), ("b", 2.0)]
    assert [c.value for c in codes] == [3.0, -2.0]
    assert coder.exact


def test_only_the_top_codes_are_kept_and_ties_keep_design_order() -> None:
    coder = ReasonCoder(["a", "b", "c", "d"], [1.0, 1.0, 1.0, 1.0], top=2)
    assert [c.feature for c in coder.explain([1.0, 3.0, 3.0, 2.0])] == ["b", "c"]


def test_without_recorded_means_dummies_are_measured_from_zero() -> None:
    # given no means (a manifest from before packaging recorded them)
    coder = ReasonCoder(["x", "level[a]"], [1.5, 2.0], None)
    # then each contribution is the weight times the value itself
    codes = coder.explain([1.0, 1.0])
    assert [(c.feature, c.contribution) for c in codes] == [("level[a]", 2.0), ("x", 1.5)]
    assert not coder.exact


def test_design_means_are_the_column_means_of_the_training_design() -> None:
    train = np.array([[1.0, 0.0], [3.0, 1.0], [2.0, 1.0]])
    assert design_means(["x", "d"], train) == pytest.approx({"x": 2.0, "d": 2 / 3})
