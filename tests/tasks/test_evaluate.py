from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import ks_2samp
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

import tasks.evaluate as evaluate
from tasks.evaluate import METRIC_NAMES, evaluate_scores, paired_bootstrap_difference, point_metrics

TOLERANCE = 1e-9


def _labelled_scores(
    rows: int, seed: int, *, rate: float = 0.1, signal: float = 1.5
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < rate).astype(np.int64)
    y[:2] = (0, 1)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(-2.0, 1.0, rows) + signal * y)))
    return y, scores


def _sklearn_metrics(
    y: NDArray[np.int64], scores: NDArray[np.float64], threshold: float, weights: NDArray[np.float64] | None = None
) -> dict[str, float]:
    flagged = (scores >= threshold).astype(np.int64)
    return {
        "roc_auc": float(roc_auc_score(y, scores, sample_weight=weights)),
        "pr_auc": float(average_precision_score(y, scores, sample_weight=weights)),
        "log_loss": float(log_loss(y, scores, sample_weight=weights)),
        "brier": float(brier_score_loss(y, scores, sample_weight=weights)),
        "precision": float(precision_score(y, flagged, sample_weight=weights, zero_division=0)),
        "recall": float(recall_score(y, flagged, sample_weight=weights)),
        "f1": float(f1_score(y, flagged, sample_weight=weights, zero_division=0)),
    }


def _reference_ece(y: NDArray[np.int64], scores: NDArray[np.float64], bins: int) -> float:
    bin_of_row = np.minimum((scores * bins).astype(np.intp), bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = bin_of_row == b
        if in_bin.any():
            ece += in_bin.mean() * abs(scores[in_bin].mean() - y[in_bin].mean())
    return ece


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_point_metrics_match_sklearn_on_random_scores(seed: int) -> None:
    # given continuous scores with a minority of positives
    y, scores = _labelled_scores(3_000, seed)

    # when
    metrics = point_metrics(y, scores, 0.2)

    # then every metric agrees with scikit-learn / scipy, and ECE with a direct per-bin computation
    assert list(metrics) == list(METRIC_NAMES)
    for name, expected in _sklearn_metrics(y, scores, 0.2).items():
        assert metrics[name] == pytest.approx(expected, abs=TOLERANCE), name
    assert metrics["ks"] == pytest.approx(ks_2samp(scores[y == 1], scores[y == 0]).statistic, abs=TOLERANCE)
    assert metrics["ece"] == pytest.approx(_reference_ece(y, scores, 10), abs=TOLERANCE)


@pytest.mark.parametrize("decimals", [1, 2])
def test_point_metrics_match_sklearn_with_tied_scores(decimals: int) -> None:
    # given scores rounded so that many rows of both classes share a score, and a threshold on a tied value
    # (kept off 0 and 1, where scikit-learn clips log loss at machine epsilon rather than at 1e-15)
    y, raw = _labelled_scores(2_000, 11, rate=0.3)
    scores = np.clip(np.round(raw, decimals), 10.0**-decimals, 1.0 - 10.0**-decimals)
    threshold = float(np.round(np.median(scores), decimals))

    # when
    metrics = point_metrics(y, scores, threshold, ece_bins=7)

    # then ties are grouped the way scikit-learn groups them
    for name, expected in _sklearn_metrics(y, scores, threshold).items():
        assert metrics[name] == pytest.approx(expected, abs=TOLERANCE), name
    assert metrics["ks"] == pytest.approx(ks_2samp(scores[y == 1], scores[y == 0]).statistic, abs=TOLERANCE)
    assert metrics["ece"] == pytest.approx(_reference_ece(y, scores, 7), abs=TOLERANCE)


def test_log_loss_clips_certain_wrong_predictions() -> None:
    # given scores of exactly 0 and 1, one of them confidently wrong
    y = np.array([0, 1, 1, 0])
    scores = np.array([0.0, 1.0, 0.0, 0.5])

    # when
    metrics = point_metrics(y, scores, 0.5)

    # then the wrong certainty costs -log(1e-15) instead of infinity
    expected = (-np.log1p(-1e-15) * 2 - np.log(1e-15) - np.log(0.5)) / 4
    assert metrics["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_report_points_equal_point_metrics_and_confusion_is_unweighted() -> None:
    # given
    y, scores = _labelled_scores(5_000, 4)

    # when
    report = evaluate_scores(y, scores, 0.25, resamples=20)

    # then
    points = point_metrics(y, scores, 0.25)
    assert {name: metric.value for name, metric in report.metrics.items()} == points
    counts = confusion_matrix(y, (scores >= 0.25).astype(np.int64)).ravel().tolist()
    names = ("true_negative", "false_positive", "false_negative", "true_positive")
    assert report.confusion.model_dump() == dict(zip(names, counts, strict=True))
    assert (report.rows, report.positives, report.split) == (5_000, int(y.sum()), "test")
    assert (report.bootstrap_resamples, report.bootstrap_seed) == (20, evaluate.DEFAULT_SEED)


def test_one_resample_equals_sklearn_with_its_poisson_weights() -> None:
    # given the weights the first resample draws (one child generator per resample, seeded from `seed`)
    y, scores = _labelled_scores(4_000, 5)
    weights = np.empty(y.size)
    evaluate._draw_weights(np.random.default_rng(77).spawn(1)[0], weights)
    order = np.argsort(-scores, kind="stable")
    weights_by_row = np.empty_like(weights)
    weights_by_row[order] = weights

    # when a single resample is run, its value is both ends of the interval
    report = evaluate_scores(y, scores, 0.2, resamples=1, seed=77)

    # then the weighted metrics equal scikit-learn's with those sample weights, and KS and ECE those of the
    # rows repeated as often as their (integer) weights say
    expected = _sklearn_metrics(y, scores, 0.2, weights_by_row)
    repeats = weights_by_row.astype(np.intp)
    y_repeated, scores_repeated = np.repeat(y, repeats), np.repeat(scores, repeats)
    expected["ks"] = ks_2samp(scores_repeated[y_repeated == 1], scores_repeated[y_repeated == 0]).statistic
    expected["ece"] = _reference_ece(y_repeated, scores_repeated, 10)
    assert set(expected) == set(METRIC_NAMES)
    for name, value in expected.items():
        assert report.metrics[name].ci_low == pytest.approx(value, abs=TOLERANCE), name
        assert report.metrics[name].ci_high == report.metrics[name].ci_low


def test_poisson_weights_have_poisson_one_moments() -> None:
    # given
    weights = np.empty(1_000_000)

    # when
    evaluate._draw_weights(np.random.default_rng(3), weights)

    # then mean and variance are 1, a zero weight has probability 1/e, and weights are whole numbers
    assert weights.mean() == pytest.approx(1.0, abs=0.005)
    assert weights.var() == pytest.approx(1.0, abs=0.01)
    assert np.mean(weights == 0) == pytest.approx(np.exp(-1.0), abs=0.002)
    assert np.array_equal(weights, np.round(weights)) and weights.min() >= 0


def test_intervals_contain_the_point_value() -> None:
    # given
    y, scores = _labelled_scores(20_000, 6)

    # when
    report = evaluate_scores(y, scores, 0.2, resamples=100)

    # then
    for name, metric in report.metrics.items():
        assert metric.ci_low <= metric.value <= metric.ci_high, name
        assert metric.ci_low < metric.ci_high, name


def test_intervals_narrow_as_the_split_grows() -> None:
    # given the same model on a small and on a 25x larger split
    small_split = _labelled_scores(2_000, 7)
    large_split = _labelled_scores(50_000, 7)

    # when
    small = evaluate_scores(*small_split, 0.2, resamples=100).metrics
    large = evaluate_scores(*large_split, 0.2, resamples=100).metrics

    # then every interval is clearly narrower (about 5x in theory)
    for name in METRIC_NAMES:
        assert large[name].ci_high - large[name].ci_low < 0.5 * (small[name].ci_high - small[name].ci_low), name


def test_same_seed_gives_an_identical_report() -> None:
    # given
    y, scores = _labelled_scores(10_000, 8)
    segments = {"channel": np.array(["online", "pos"])[np.arange(y.size) % 2]}

    # when
    first = evaluate_scores(y, scores, 0.2, segments=segments, resamples=50, seed=123)
    second = evaluate_scores(y, scores, 0.2, segments=segments, resamples=50, seed=123)

    # then
    assert first.model_dump() == second.model_dump()


def test_result_does_not_depend_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the same evaluation run serially and on a thread pool
    y, scores = _labelled_scores(10_000, 9)
    segments = {"channel": np.array(["online", "pos", "atm"])[np.arange(y.size) % 3]}
    monkeypatch.setattr(evaluate, "_MAX_WORKERS", 1)
    serial = evaluate_scores(y, scores, 0.2, segments=segments, resamples=40)

    # when
    monkeypatch.setattr(evaluate, "_MAX_WORKERS", 3)
    monkeypatch.setattr(evaluate, "_PARALLEL_MIN_CELLS", 0)
    monkeypatch.setattr(evaluate, "_available_cpus", lambda: 3)
    threaded = evaluate_scores(y, scores, 0.2, segments=segments, resamples=40)

    # then
    assert threaded.model_dump() == serial.model_dump()


def test_different_seeds_give_different_intervals() -> None:
    # given
    y, scores = _labelled_scores(5_000, 10)

    # when
    first = evaluate_scores(y, scores, 0.2, resamples=50, seed=1)
    second = evaluate_scores(y, scores, 0.2, resamples=50, seed=2)

    # then the point values agree and the intervals do not
    for name in METRIC_NAMES:
        assert first.metrics[name].value == second.metrics[name].value
        assert (first.metrics[name].ci_low, first.metrics[name].ci_high) != (
            second.metrics[name].ci_low,
            second.metrics[name].ci_high,
        ), name


def test_segments_are_reported_with_their_row_and_positive_counts() -> None:
    # given two segment columns, one value of which is too small to report
    y, scores = _labelled_scores(6_000, 12)
    rng = np.random.default_rng(12)
    channel = np.array(["online", "pos", "atm"], dtype=object)[rng.integers(0, 3, y.size)]
    region = np.where(np.arange(y.size) < 30, "tiny", np.where(rng.random(y.size) < 0.5, "eu", "na"))

    # when
    report = evaluate_scores(y, scores, 0.2, segments={"channel": channel, "region": region}, resamples=30)

    # then there is one report per (column, value) with enough rows, in column then value order,
    # with the metrics of that segment's rows alone
    keys = [(segment.column, segment.value) for segment in report.segments]
    assert keys == [("channel", "atm"), ("channel", "online"), ("channel", "pos"), ("region", "eu"), ("region", "na")]
    for segment in report.segments:
        rows = (channel if segment.column == "channel" else region) == segment.value
        assert segment.rows == int(rows.sum())
        assert segment.positives == int(y[rows].sum())
        for name, expected in _sklearn_metrics(y[rows], scores[rows], 0.2).items():
            assert segment.metrics[name].value == pytest.approx(expected, abs=TOLERANCE), (segment.value, name)
        expected_ece = _reference_ece(y[rows], scores[rows], 10)
        assert segment.metrics["ece"].value == pytest.approx(expected_ece, abs=TOLERANCE)
        for metric in segment.metrics.values():
            assert metric.ci_low <= metric.ci_high


@pytest.mark.parametrize("small_values", [0, 3])
def test_whole_split_values_do_not_depend_on_segments(small_values: int) -> None:
    # given a segment column, possibly with values too small to report
    y, scores = _labelled_scores(8_000, 19)
    channel = np.array(["online", "pos", "atm"])[np.arange(y.size) % 3].astype("<U8")
    for index in range(small_values):
        channel[index * 7 : index * 7 + 5] = f"tiny{index}"

    # when
    report = evaluate_scores(y, scores, 0.2, segments={"channel": channel}, resamples=20)

    # then the whole split still gets the metrics of all its rows
    for name, value in point_metrics(y, scores, 0.2).items():
        assert report.metrics[name].value == pytest.approx(value, abs=1e-12), name
    assert len(report.segments) == 3


def test_whole_split_assembled_from_segments_equals_direct_computation() -> None:
    # given the layout that draws weights in segment order (whole split = union of its segments, including
    # values too small to report) and a direct layout of the whole split reading the same weights
    y, scores = _labelled_scores(6_000, 20)
    labels = np.array(["online", "pos", "atm"])[np.arange(y.size) % 3].astype("<U8")
    labels[:20] = "tiny"
    order = np.argsort(-scores, kind="stable")
    y_sorted, s_sorted = y[order].astype(np.int8), scores[order]
    column = evaluate._segment_column("channel", labels, order, 50)
    host, positions = evaluate._host_layout(column, s_sorted, y_sorted, 0.2, 10)
    weight_position = np.empty(y.size, dtype=np.intp)
    weight_position[positions] = np.arange(y.size)
    direct = evaluate._build_layout(weight_position, [y.size], s_sorted, y_sorted, 0.2, 10)

    # when
    from_segments, directly = evaluate._bootstrap([host, direct], y.size, 40, 5)

    # then every resample gives the same whole-split metrics both ways
    for name in METRIC_NAMES:
        np.testing.assert_allclose(from_segments[-1][name], directly[0][name], rtol=1e-12, atol=1e-12)


def test_many_valued_segment_column_is_reported() -> None:
    # given a column with more values than are matched one by one or used to order the weights
    y, scores = _labelled_scores(10_000, 21)
    merchant = np.array([f"m{index:02d}" for index in range(40)])[np.arange(y.size) % 40]

    # when
    report = evaluate_scores(y, scores, 0.2, segments={"merchant": merchant}, resamples=20)

    # then
    assert [segment.value for segment in report.segments] == sorted(set(merchant.tolist()))
    for segment in report.segments:
        rows = merchant == segment.value
        assert (segment.rows, segment.positives) == (int(rows.sum()), int(y[rows].sum()))
        expected = roc_auc_score(y[rows], scores[rows])
        assert segment.metrics["roc_auc"].value == pytest.approx(expected, abs=TOLERANCE)
    for name, value in point_metrics(y, scores, 0.2).items():
        assert report.metrics[name].value == pytest.approx(value, abs=1e-12), name


def test_single_class_segment_skips_metrics_that_need_both_classes() -> None:
    # given a segment that holds only negatives and one that holds only positives
    y, scores = _labelled_scores(4_000, 13, rate=0.3)
    merchant = np.where(np.arange(y.size) < 200, "rest", "other").astype(object)
    merchant[(y == 0) & (np.arange(y.size) >= 200) & (np.arange(y.size) < 2_000)] = "grocery"
    merchant[(y == 1) & (np.arange(y.size) >= 2_000)] = "casino"

    # when
    report = evaluate_scores(y, scores, 0.2, segments={"merchant": merchant}, resamples=30)

    # then undefined metrics are left out, not reported as NaN, and the rest are still there
    by_value = {segment.value: segment for segment in report.segments}
    negatives_only = by_value["grocery"].metrics
    assert by_value["grocery"].positives == 0
    assert set(negatives_only) == {"log_loss", "brier", "ece", "precision"}
    positives_only = by_value["casino"].metrics
    assert by_value["casino"].positives == by_value["casino"].rows
    assert set(positives_only) == set(METRIC_NAMES) - {"roc_auc", "ks"}
    assert positives_only["pr_auc"].value == 1.0
    for segment in report.segments:
        for metric in segment.metrics.values():
            assert np.isfinite([metric.value, metric.ci_low, metric.ci_high]).all()


def test_nothing_flagged_gives_zero_precision_without_spread() -> None:
    # given a threshold above every score
    y, scores = _labelled_scores(2_000, 22)
    threshold = float(min(1.0, scores.max() + 0.01))

    # when
    report = evaluate_scores(y, scores, threshold, resamples=30)

    # then precision follows scikit-learn's zero_division default, and no resample makes it look uncertain
    assert (report.metrics["precision"].value, report.metrics["recall"].value, report.metrics["f1"].value) == (0, 0, 0)
    assert report.metrics["precision"].ci_low == report.metrics["precision"].ci_high == 0.0
    assert report.confusion.true_positive + report.confusion.false_positive == 0


def test_no_resamples_gives_zero_width_intervals() -> None:
    # given
    y, scores = _labelled_scores(1_000, 23)

    # when
    report = evaluate_scores(y, scores, 0.2, resamples=0)

    # then
    assert report.bootstrap_resamples == 0
    for metric in report.metrics.values():
        assert metric.ci_low == metric.value == metric.ci_high


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_input_raises(label: int) -> None:
    # given
    y = np.full(100, label)
    scores = np.linspace(0.0, 1.0, 100)

    # when / then
    with pytest.raises(ValueError, match="needs both classes"):
        evaluate_scores(y, scores, 0.5)
    with pytest.raises(ValueError, match="needs both classes"):
        point_metrics(y, scores, 0.5)


def test_length_mismatch_raises_naming_the_lengths() -> None:
    # given
    y, scores = _labelled_scores(100, 14)

    # when / then
    with pytest.raises(ValueError, match=r"100 rows.*99"):
        evaluate_scores(y, scores[:99], 0.5)
    with pytest.raises(ValueError, match=r"\(100,\)"):
        evaluate_scores(y, scores, 0.5, segments={"channel": np.array(["a"] * 99)})
    with pytest.raises(ValueError, match=r"100 rows.*98"):
        paired_bootstrap_difference(y, scores, scores[:98], 0.5, 0.5)


@pytest.mark.parametrize(
    ("scores", "threshold", "message"),
    [
        (np.array([0.1, 1.2, 0.3, 0.4]), 0.5, "probabilities"),
        (np.array([0.1, np.nan, 0.3, 0.4]), 0.5, "probabilities"),
        (np.array([0.1, 0.2, 0.3, 0.4]), 1.5, "threshold"),
    ],
)
def test_invalid_scores_and_thresholds_raise(scores: NDArray[np.float64], threshold: float, message: str) -> None:
    # given
    y = np.array([0, 1, 0, 1])

    # when / then
    with pytest.raises(ValueError, match=message):
        point_metrics(y, scores, threshold)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    # given
    y, scores = _labelled_scores(20_000, 15)

    # when
    difference = paired_bootstrap_difference(y, scores, scores.copy(), 0.2, 0.2, metrics=METRIC_NAMES, resamples=50)

    # then
    assert list(difference) == list(METRIC_NAMES)
    for name, metric in difference.items():
        assert (metric.value, metric.ci_low, metric.ci_high) == (0.0, 0.0, 0.0), name


def test_paired_difference_shows_a_clearly_better_model() -> None:
    # given a strong model and a weak one scored on the same rows
    y, strong = _labelled_scores(20_000, 16, signal=2.5)
    weak = 0.7 * strong + 0.3 * np.random.default_rng(16).random(y.size)

    # when
    difference = paired_bootstrap_difference(y, strong, weak, 0.2, 0.2, resamples=100)

    # then the whole roc_auc interval is above zero and the value is the difference of the point values
    assert difference["roc_auc"].ci_low > 0.0
    expected = point_metrics(y, strong, 0.2)["roc_auc"] - point_metrics(y, weak, 0.2)["roc_auc"]
    assert difference["roc_auc"].value == pytest.approx(expected, abs=TOLERANCE)
    assert set(difference) == {"roc_auc", "pr_auc", "ece"}


def test_paired_difference_is_narrower_than_independent_intervals() -> None:
    # given two similar models, so that their resample-to-resample noise is shared
    y, strong = _labelled_scores(20_000, 17, signal=2.0)
    similar = np.clip(strong + np.random.default_rng(17).normal(0.0, 0.01, y.size), 0.0, 1.0)

    # when
    difference = paired_bootstrap_difference(y, strong, similar, 0.2, 0.2, resamples=100)
    alone = evaluate_scores(y, strong, 0.2, resamples=100).metrics["roc_auc"]

    # then pairing cancels most of the shared noise
    assert difference["roc_auc"].ci_high - difference["roc_auc"].ci_low < 0.5 * (alone.ci_high - alone.ci_low)


def test_paired_difference_rejects_unknown_metrics() -> None:
    # given
    y, scores = _labelled_scores(100, 18)

    # when / then
    with pytest.raises(ValueError, match="unknown metrics"):
        paired_bootstrap_difference(y, scores, scores, 0.5, 0.5, metrics=("accuracy",))
