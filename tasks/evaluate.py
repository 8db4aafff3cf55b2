"""Held-out evaluation of a binary risk score, with seeded bootstrap intervals.

`evaluate_scores` turns the labels and scores of one split into the `EvaluationReport`
that promotion gates on: ranking metrics (ROC-AUC, average precision, KS), probability
metrics (log loss, Brier score, expected calibration error) and decision metrics at a
threshold (precision, recall, F1), each with a 95% percentile interval, for the whole
split and per segment. `paired_bootstrap_difference` compares two models on the same
rows under shared resamples.

Point values agree with scikit-learn (`roc_auc_score`, `average_precision_score`,
`log_loss`, `brier_score_loss`, `precision_score`, `recall_score`, `f1_score`) and with
scipy's two-sample KS statistic. scikit-learn itself is not used: importing it costs
seconds, and its metrics would have to run once per resample.

The bootstrap is a Poisson(1) bootstrap: each resample gives every row an integer
weight. Scores are sorted once; every weighted metric is then read off cumulative
weights at a set of cut points in score order (the edges of tie groups that hold a
positive, the threshold, the calibration bins), so a resample costs a few linear
passes over the rows and never a sort. Resamples run in chunks on a small thread pool,
and each has its own child generator, so the report does not depend on either.

Conventions for a segment that lacks a class: `roc_auc` and `ks` need both classes;
`pr_auc`, `recall` and `f1` need a positive; undefined metrics are left out of that
segment's dict. `precision` with nothing flagged is 0.0 (scikit-learn's
`zero_division` default). A resample in which a metric is undefined (no positive, no
negative, nothing flagged) is left out of that metric's interval.

The resample weights are drawn in the order of one segment column when there are
segments (see `_host_layout`), so the whole split's intervals depend on the segment
columns passed as well as on the seed; point values do not.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from tasks.report import ConfusionCounts, EvaluationReport, MetricValue, SegmentReport

__all__ = [
    "METRIC_NAMES",
    "evaluate_scores",
    "paired_bootstrap_difference",
    "point_metrics",
]

METRIC_NAMES: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "ks",
    "precision",
    "recall",
    "f1",
)

DEFAULT_SEED = 20260101
_LOG_LOSS_EPS = 1e-15
_INTERVAL_QUANTILES = (0.025, 0.975)
# Weights are drawn one row-sized vector at a time; only the small per-cut sums of a
# chunk of resamples are kept, so the metric arithmetic is vectorised over the chunk.
_CHUNK_RESAMPLES = 16
_MAX_WORKERS = 4
# Below this many weight cells a thread pool costs more than it saves.
_PARALLEL_MIN_CELLS = 1 << 21
# Weights are drawn in the order of a segment column with at most this many parts, so
# that the whole split is assembled from its segments instead of being passed over
# again (see `_host_layout`).
_MAX_HOST_PARTS = 8
_FACTORIZE_BY_COMPARISON = 16
_NEEDS_BOTH_CLASSES = frozenset({"roc_auc", "ks"})
_NEEDS_POSITIVES = frozenset({"pr_auc", "recall", "f1"})

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
LabelArray = NDArray[np.int8]
SegmentKey = tuple[str, str] | None  # (column, value); None is the whole split


# --------------------------------------------------------------------------------------
# Poisson(1) weights
# --------------------------------------------------------------------------------------


def _poisson_tables() -> tuple[NDArray[np.uint64], FloatArray]:
    """Inverse-CDF tables for Poisson(1) at 32-bit resolution.

    `Generator.poisson` costs ~25 ns a draw: ~10 s for 2M rows x 200 resamples. Here a
    16-bit draw indexes a 65536-entry table instead; the few buckets that straddle a
    step of the CDF are marked -1 and settled by a second 16-bit draw. The weights
    follow the Poisson(1) CDF rounded to multiples of 2**-32 (largest weight 12; the
    true P(W > 12) is below 1e-10).
    """
    cuts: list[int] = []
    term = math.exp(-1.0)
    cdf = 0.0
    k = 0
    while not cuts or cuts[-1] < 1 << 32:
        cdf += term
        cuts.append(min(round(cdf * 2.0**32), 1 << 32))
        k += 1
        term /= k
    cut_array = np.asarray(cuts, dtype=np.uint64)
    bucket_first = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)
    bucket_last = bucket_first + np.uint64(0xFFFF)
    weight_first = np.searchsorted(cut_array, bucket_first, side="right")
    weight_last = np.searchsorted(cut_array, bucket_last, side="right")
    table = np.where(weight_first == weight_last, weight_first, -1)
    return cut_array, table.astype(np.float64)


_POISSON_CUTS, _POISSON_TABLE = _poisson_tables()


def _draw_weights(rng: np.random.Generator, out: FloatArray) -> None:
    """Fill `out` with independent Poisson(1) weights."""
    rows = out.shape[0]
    # Raw 64-bit words read as little-endian 16-bit lanes: four draws per word, and
    # the same draws on every platform.
    raw = rng.bit_generator.random_raw((rows + 3) // 4).astype("<u8", copy=False)
    high = raw.view("<u2")[:rows]
    np.take(_POISSON_TABLE, high, out=out, mode="clip")
    straddling = np.flatnonzero(out < 0.0)
    if straddling.size:
        low = rng.bit_generator.random_raw(straddling.size) & np.uint64(0xFFFF)
        full = (high[straddling].astype(np.uint64) << np.uint64(16)) | low
        out[straddling] = np.searchsorted(_POISSON_CUTS, full, side="right")


# --------------------------------------------------------------------------------------
# Populations, blocks and layouts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    """Where an evaluated population's metrics are read from its cumulative weights.

    Its rows are in descending score order and "cuts" are row offsets in that order;
    cumulative weights are known just before each cut, and these index those cuts.
    """

    rows: int
    positives: int
    cuts: int
    group_start: IntArray  # per tie group holding a positive: the cut at its first row
    group_end: IntArray  # ... and the cut just past its last row
    threshold_cut: int  # the cut just past the last row with score >= threshold
    bin_edges: IntArray  # ece_bins + 1 cuts (score order makes bins contiguous)


@dataclass(frozen=True)
class _Block:
    """A population stored contiguously in a layout."""

    population: _Population
    reported: bool  # False for rows kept only so that a union covers the whole split
    start: int
    cuts: IntArray  # block-relative row offsets, from 0 to the block's size
    positives_before_cut: IntArray
    run_offset: int  # first of this block's runs in the layout's reduceat runs
    positive_offset: int  # first of this block's positives in the layout's positives
    slice_offset: int  # first of this block's calibration bins in the layout's slices


@dataclass(frozen=True)
class _Union:
    """A population spread over all blocks of a layout: the whole split, when weights
    are drawn in the order of a segment column.

    Each union cut is also a cut of every block (the block's rows above it), so the
    union's cumulative weights are sums of the blocks'.
    """

    population: _Population
    block_cuts: tuple[IntArray, ...]  # per block: its cut at each union cut


@dataclass(frozen=True)
class _Layout:
    """Rows of the weight vector gathered (by `take`) into blocks."""

    take: IntArray | None  # weight vector positions; None is the vector's own order
    rows: int
    blocks: tuple[_Block, ...]
    unions: tuple[_Union, ...]
    reduce_at: IntArray  # starts of the runs between consecutive cuts, all blocks
    positive_rows: IntArray  # layout positions of the positive rows, all blocks
    features: FloatArray  # (rows, 3): score, log loss and squared error per row
    slices: tuple[tuple[int, int], ...]  # calibration bins as [lo, hi), all blocks

    def outputs(self) -> list[_Population]:
        """The populations that `_layout_metrics` reports on, in its order."""
        reported = [block.population for block in self.blocks if block.reported]
        return reported + [union.population for union in self.unions]


@dataclass(frozen=True)
class _Sums:
    """What a chunk of weight vectors leaves behind for one layout."""

    runs: FloatArray  # (batch, runs): weight of each run between cuts
    positives: FloatArray  # (batch, positive rows): weight of each positive row
    bins: FloatArray  # (batch, slices, 3): weighted feature sums per calibration bin


def _row_features(y: LabelArray, s: FloatArray) -> FloatArray:
    clipped = np.clip(s, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    features = np.empty((s.shape[0], 3), dtype=np.float64)
    features[:, 0] = s
    # The probability given to the true class: the clipped score, or one minus it.
    features[:, 1] = -np.log(np.abs((1 - y) - clipped))
    features[:, 2] = np.square(s - y)
    return features


def _population(
    s: FloatArray,
    y: LabelArray,
    threshold: float,
    ece_bins: int,
    extra_cuts: IntArray | None = None,
) -> tuple[_Population, IntArray]:
    """The population of rows `s`, `y` (descending score) and its cut offsets."""
    rows = s.shape[0]
    group_change = np.flatnonzero(s[1:] != s[:-1]) + 1
    group_starts = np.concatenate(([0], group_change))
    group_ends = np.concatenate((group_change, [rows]))
    positive_rows = np.flatnonzero(y)
    holding = np.searchsorted(group_starts, positive_rows, side="right") - 1
    positive_groups = np.unique(holding)
    starts = group_starts[positive_groups]
    ends = group_ends[positive_groups]
    # Rows are sorted descending, so "score >= threshold" is a prefix.
    threshold_row = int(np.searchsorted(-s, -threshold, side="right"))
    bin_of_row = np.minimum((s * ece_bins).astype(np.intp), ece_bins - 1)
    bin_sizes = np.bincount(bin_of_row, minlength=ece_bins)[::-1]
    bin_rows = np.concatenate(([0], np.cumsum(bin_sizes)))
    extra = np.empty(0, dtype=np.intp) if extra_cuts is None else extra_cuts
    parts = ([0, rows, threshold_row], starts, ends, bin_rows, extra)
    cuts = np.unique(np.concatenate(parts))
    population = _Population(
        rows=rows,
        positives=int(positive_rows.size),
        cuts=int(cuts.size),
        group_start=np.searchsorted(cuts, starts),
        group_end=np.searchsorted(cuts, ends),
        threshold_cut=int(np.searchsorted(cuts, threshold_row)),
        bin_edges=np.searchsorted(cuts, bin_rows),
    )
    return population, cuts


def _build_layout(
    take: IntArray | None,
    block_rows: Sequence[int],
    s: FloatArray,
    y: LabelArray,
    threshold: float,
    ece_bins: int,
    *,
    reported: Sequence[bool] | None = None,
    extra_cuts: Sequence[IntArray] | None = None,
) -> _Layout:
    """A layout of consecutive blocks; `s` and `y` are in layout order (block after
    block, descending score within a block)."""
    blocks: list[_Block] = []
    reduce_at: list[IntArray] = []
    positive_rows: list[IntArray] = []
    slices: list[tuple[int, int]] = []
    start = run_offset = positive_offset = 0
    for index, size in enumerate(block_rows):
        stop = start + size
        population, cuts = _population(
            s[start:stop],
            y[start:stop],
            threshold,
            ece_bins,
            None if extra_cuts is None else extra_cuts[index],
        )
        positives = np.flatnonzero(y[start:stop])
        blocks.append(
            _Block(
                population=population,
                reported=True if reported is None else reported[index],
                start=start,
                cuts=cuts,
                positives_before_cut=np.searchsorted(positives, cuts, side="left"),
                run_offset=run_offset,
                positive_offset=positive_offset,
                slice_offset=len(slices),
            )
        )
        reduce_at.append(cuts[:-1] + start)
        positive_rows.append(positives + start)
        slices.extend(itertools.pairwise((cuts[population.bin_edges] + start).tolist()))
        run_offset += cuts.size - 1
        positive_offset += positives.size
        start = stop
    return _Layout(
        take=take,
        rows=start,
        blocks=tuple(blocks),
        unions=(),
        reduce_at=np.concatenate(reduce_at),
        positive_rows=np.concatenate(positive_rows),
        features=_row_features(y, s),
        slices=tuple(slices),
    )


# --------------------------------------------------------------------------------------
# Weighted metrics
# --------------------------------------------------------------------------------------


def _new_sums(layout: _Layout, batch: int) -> _Sums:
    return _Sums(
        runs=np.empty((batch, layout.reduce_at.size), dtype=np.float64),
        positives=np.empty((batch, layout.positive_rows.size), dtype=np.float64),
        bins=np.empty((batch, len(layout.slices), 3), dtype=np.float64),
    )


def _accumulate(layout: _Layout, weights: FloatArray, sums: _Sums, index: int) -> None:
    """Fill row `index` of `sums` from one weight vector in layout order.

    These are the only passes over all rows that a resample makes.
    """
    np.add.reduceat(weights, layout.reduce_at, out=sums.runs[index])
    np.take(weights, layout.positive_rows, out=sums.positives[index], mode="clip")
    for j, (lo, hi) in enumerate(layout.slices):
        np.matmul(weights[lo:hi], layout.features[lo:hi], out=sums.bins[index, j])


def _cumulative(block: _Block, sums: _Sums) -> tuple[FloatArray, FloatArray]:
    """Total and positive weight before each of the block's cuts, per weight vector."""
    population = block.population
    runs = sums.runs[:, block.run_offset : block.run_offset + population.cuts - 1]
    last_positive = block.positive_offset + population.positives
    positive_weights = sums.positives[:, block.positive_offset : last_positive]
    batch = runs.shape[0]
    weight_cum = np.zeros((batch, population.cuts), dtype=np.float64)
    np.cumsum(runs, axis=1, out=weight_cum[:, 1:])
    positive_cum = np.zeros((batch, population.positives + 1), dtype=np.float64)
    np.cumsum(positive_weights, axis=1, out=positive_cum[:, 1:])
    return weight_cum, positive_cum[:, block.positives_before_cut]


def _metrics(
    population: _Population, weight_cum: FloatArray, pos_cum: FloatArray, bins: FloatArray
) -> dict[str, FloatArray]:
    """Every metric per weight vector (row); NaN where a resample leaves one undefined."""
    batch = weight_cum.shape[0]
    neg_cum = weight_cum - pos_cum
    total = weight_cum[:, -1]
    positives = pos_cum[:, -1]
    negatives = total - positives
    start = population.group_start
    end = population.group_end

    with np.errstate(divide="ignore", invalid="ignore"):
        # Per tie group holding a positive: its positive weight, and the negative
        # weight above it and through it.
        group_pos = pos_cum[:, end] - pos_cum[:, start]
        neg_above = neg_cum[:, start]
        neg_through = neg_cum[:, end]
        # Trapezoidal ROC area: a positive beats the negatives below its tie group
        # and half of those tied with it.
        beaten = negatives[:, None] - 0.5 * (neg_above + neg_through)
        roc_auc = np.sum(group_pos * beaten, axis=1) / (positives * negatives)
        flagged_through = weight_cum[:, end]
        precision_at_group = np.divide(
            pos_cum[:, end],
            flagged_through,
            out=np.zeros_like(group_pos),
            where=flagged_through > 0,
        )
        pr_auc = np.sum(group_pos * precision_at_group, axis=1) / positives
        # TPR - FPR peaks just after a positive group and bottoms out just before
        # one, so those cuts are the only candidates.
        ks_cuts = np.concatenate(([0], start, end))
        tpr = pos_cum[:, ks_cuts] / positives[:, None]
        fpr = neg_cum[:, ks_cuts] / negatives[:, None]
        ks = np.max(np.abs(tpr - fpr), axis=1)

        true_pos = pos_cum[:, population.threshold_cut]
        flagged = weight_cum[:, population.threshold_cut]
        precision = np.divide(true_pos, flagged, out=np.full(batch, np.nan), where=flagged > 0)
        recall = true_pos / positives
        f1 = np.where(positives > 0, 2.0 * true_pos / (flagged + positives), np.nan)

        positive_per_bin = np.diff(pos_cum[:, population.bin_edges], axis=1)
        ece = np.sum(np.abs(bins[:, :, 0] - positive_per_bin), axis=1) / total
        log_loss = np.sum(bins[:, :, 1], axis=1) / total
        brier = np.sum(bins[:, :, 2], axis=1) / total

    return {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "log_loss": log_loss,
        "brier": brier,
        "ece": ece,
        "ks": ks,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _layout_metrics(layout: _Layout, sums: _Sums) -> list[dict[str, FloatArray]]:
    """Metrics of `layout.outputs()`, in that order, for each weight vector."""
    cumulative = [_cumulative(block, sums) for block in layout.blocks]
    bins = [
        sums.bins[:, block.slice_offset : block.slice_offset + block.population.bin_edges.size - 1]
        for block in layout.blocks
    ]
    results = [
        _metrics(block.population, weight_cum, pos_cum, block_bins)
        for block, (weight_cum, pos_cum), block_bins in zip(layout.blocks, cumulative, bins, strict=True)
        if block.reported
    ]
    for union in layout.unions:
        at_cuts = list(zip(cumulative, union.block_cuts, strict=True))
        weight_cum = np.sum([weight[:, cuts] for (weight, _), cuts in at_cuts], axis=0)
        pos_cum = np.sum([positive[:, cuts] for (_, positive), cuts in at_cuts], axis=0)
        results.append(_metrics(union.population, weight_cum, pos_cum, np.sum(bins, axis=0)))
    return results


def _point_values(layout: _Layout) -> list[dict[str, float]]:
    """Unweighted metrics of `layout.outputs()`, without those that a population's
    class mix leaves undefined."""
    sums = _new_sums(layout, 1)
    with threadpool_limits(limits=1, user_api="blas"):
        _accumulate(layout, np.ones(layout.rows, dtype=np.float64), sums, 0)
    values = []
    for population, metrics in zip(layout.outputs(), _layout_metrics(layout, sums), strict=True):
        negatives = population.rows - population.positives
        undefined: set[str] = set()
        if population.positives == 0:
            undefined |= _NEEDS_POSITIVES | _NEEDS_BOTH_CLASSES
        if negatives == 0:
            undefined |= _NEEDS_BOTH_CLASSES
        point = {name: float(metrics[name][0]) for name in METRIC_NAMES if name not in undefined}
        if math.isnan(point["precision"]):
            # Nothing flagged: scikit-learn's zero_division default.
            point["precision"] = 0.0
        values.append(point)
    return values


# --------------------------------------------------------------------------------------
# Bootstrap driver
# --------------------------------------------------------------------------------------


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _bootstrap(layouts: Sequence[_Layout], rows: int, resamples: int, seed: int) -> list[list[dict[str, FloatArray]]]:
    """Per layout, per output, per metric: the values of `resamples` resamples (NaN
    where undefined). Weights are drawn in the order of a layout without `take`."""
    samples = [
        [{name: np.full(resamples, np.nan) for name in METRIC_NAMES} for _ in layout.outputs()] for layout in layouts
    ]
    if resamples == 0:
        return samples
    # A child generator per resample: weights depend on neither chunks nor threads.
    generators = np.random.default_rng(seed).spawn(resamples)
    chunks = [range(first, min(first + _CHUNK_RESAMPLES, resamples)) for first in range(0, resamples, _CHUNK_RESAMPLES)]
    workers = min(_MAX_WORKERS, _available_cpus(), len(chunks))
    if rows * resamples < _PARALLEL_MIN_CELLS:
        workers = 1
    gathered_rows = max((layout.rows for layout in layouts if layout.take is not None), default=0)

    def work(worker: int) -> None:
        weights = np.empty(rows, dtype=np.float64)
        gathered = np.empty(gathered_rows, dtype=np.float64)
        for chunk in chunks[worker::workers]:
            sums = [_new_sums(layout, len(chunk)) for layout in layouts]
            for index, resample in enumerate(chunk):
                _draw_weights(generators[resample], weights)
                for layout, layout_sums in zip(layouts, sums, strict=True):
                    in_order = weights
                    if layout.take is not None:
                        in_order = gathered[: layout.rows]
                        np.take(weights, layout.take, out=in_order, mode="clip")
                    _accumulate(layout, in_order, layout_sums, index)
            for layout, layout_sums, layout_samples in zip(layouts, sums, samples, strict=True):
                outputs = _layout_metrics(layout, layout_sums)
                for output_samples, metrics in zip(layout_samples, outputs, strict=True):
                    for name, values in metrics.items():
                        output_samples[name][chunk.start : chunk.stop] = values

    # The matrix-vector products are too small for BLAS threads to pay off: on two
    # cores a threaded gemv took three times the CPU of a single-threaded one, and it
    # competes with the workers below for the same cores.
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            work(0)
        else:
            # The passes over all rows run in numpy without the GIL.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(work, worker) for worker in range(workers)]:
                    future.result()
    return samples


def _interval(value: float, samples: FloatArray) -> MetricValue:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return MetricValue(value=value, ci_low=value, ci_high=value)
    low, high = np.quantile(finite, _INTERVAL_QUANTILES)
    return MetricValue(value=value, ci_low=float(low), ci_high=float(high))


# --------------------------------------------------------------------------------------
# Input checks, sorting and segment columns
# --------------------------------------------------------------------------------------


def _check_labels(y_true: ArrayLike) -> LabelArray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one-dimensional, got shape {y.shape}")
    if y.dtype != np.bool_ and not np.all((y == 0) | (y == 1)):
        raise ValueError("y_true must hold only 0 and 1")
    return y.astype(np.int8)


def _check_scores(scores: ArrayLike, rows: int, name: str = "scores") -> FloatArray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {s.shape}")
    if s.shape[0] != rows:
        raise ValueError(f"y_true has {rows} rows but {name} has {s.shape[0]}")
    if not (np.all(s >= 0.0) and np.all(s <= 1.0)):
        raise ValueError(f"{name} must be probabilities in [0, 1] (no NaN)")
    return s


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def _check_inputs(
    y_true: ArrayLike, scores: ArrayLike, threshold: float, ece_bins: int
) -> tuple[LabelArray, FloatArray]:
    y = _check_labels(y_true)
    s = _check_scores(scores, y.shape[0])
    positives = int(np.count_nonzero(y))
    if positives in (0, y.shape[0]):
        present = "no rows" if y.shape[0] == 0 else f"only class {int(y[0])}"
        raise ValueError(f"evaluation needs both classes in y_true; got {present} ({y.shape[0]} rows)")
    _check_threshold(threshold)
    if ece_bins < 1:
        raise ValueError(f"ece_bins must be at least 1, got {ece_bins}")
    return y, s


def _check_resamples(resamples: int) -> None:
    if resamples < 0:
        raise ValueError(f"resamples must be non-negative, got {resamples}")


def _descending(s: FloatArray) -> IntArray:
    # Stable, so that tied rows keep their input order: the same input always gives
    # the same row the same weight.
    return np.argsort(-s, kind="stable")


def _factorize(labels: ArrayLike, rows: int, column: str) -> tuple[list[str], IntArray]:
    """Distinct labels (as sorted strings) and each row's code.

    `np.unique` sorts the strings: 0.4 s for 2M rows, 2 s for the object arrays that
    polars hands out. Segment columns have few values, and one equality pass per value
    is several times faster; columns with many values fall back to `np.unique`.
    """
    values = np.asarray(labels)
    if values.ndim != 1 or values.shape[0] != rows:
        raise ValueError(f"segment {column!r} has shape {values.shape}, expected ({rows},) like y_true")
    codes = np.full(rows, -1, dtype=np.intp)
    found: list[str] = []
    first_unassigned = 0
    while first_unassigned < rows and len(found) < _FACTORIZE_BY_COMPARISON:
        label = values[first_unassigned]
        codes[values == label] = len(found)
        # Also when `label` is not equal to itself (a float NaN in an object column).
        codes[first_unassigned] = len(found)
        found.append(str(label))
        unassigned = codes[first_unassigned:] < 0
        first_unassigned += int(np.argmax(unassigned)) if unassigned.any() else rows
    if first_unassigned < rows or len(set(found)) < len(found):
        distinct, inverse = np.unique(values.astype(str), return_inverse=True)
        return [str(value) for value in distinct], inverse.reshape(-1).astype(np.intp)
    rank = np.empty(len(found), dtype=np.intp)
    rank[np.argsort(np.asarray(found))] = np.arange(len(found))
    return sorted(found), rank[codes]


@dataclass(frozen=True)
class _SegmentColumn:
    """A segment column in score order, split into the values that are reported and
    (as one extra part, if any) the rows of values too small to report."""

    keys: list[tuple[str, str]]  # (column, value) per reported value
    part_of_row: NDArray[np.int16]  # in score order; reported values first, rest last
    part_rows: list[int]
    has_rest: bool


def _segment_column(column: str, labels: ArrayLike, order: IntArray, min_rows: int) -> _SegmentColumn:
    names, codes = _factorize(labels, order.shape[0], column)
    codes_sorted = codes[order]
    counts = np.bincount(codes_sorted, minlength=len(names))
    kept = np.flatnonzero(counts >= max(min_rows, 1))
    part_of_code = np.full(len(names), kept.size, dtype=np.int16)
    part_of_code[kept] = np.arange(kept.size, dtype=np.int16)
    part_rows = counts[kept].tolist()
    rest = int(order.shape[0] - sum(part_rows))
    return _SegmentColumn(
        keys=[(column, names[code]) for code in kept],
        part_of_row=part_of_code[codes_sorted],
        part_rows=part_rows + ([rest] if rest else []),
        has_rest=rest > 0,
    )


def _host_layout(
    column: _SegmentColumn,
    s_sorted: FloatArray,
    y_sorted: LabelArray,
    threshold: float,
    ece_bins: int,
) -> tuple[_Layout, IntArray]:
    """The layout in which weights are drawn when there are segments, and its rows'
    positions in score order.

    Rows are grouped by the column's parts (score order within a part), and the whole
    split is a union of the parts. A separate layout for the whole split would cost a
    second reduction and matrix product over all rows per resample; the union costs a
    few sums over its cuts.
    """
    # A stable sort by part keeps each part's rows in score order.
    positions = np.argsort(column.part_of_row, kind="stable")
    whole, whole_cuts = _population(s_sorted, y_sorted, threshold, ece_bins)
    bounds = np.cumsum([0, *column.part_rows])
    # A part's cut at a union cut: how many of the part's rows lie above it.
    part_cuts = [np.searchsorted(positions[lo:hi], whole_cuts) for lo, hi in itertools.pairwise(bounds)]
    layout = _build_layout(
        None,
        column.part_rows,
        s_sorted[positions],
        y_sorted[positions],
        threshold,
        ece_bins,
        reported=[True] * len(column.keys) + [False] * column.has_rest,
        extra_cuts=part_cuts,
    )
    union = _Union(
        population=whole,
        block_cuts=tuple(
            np.searchsorted(block.cuts, cuts) for block, cuts in zip(layout.blocks, part_cuts, strict=True)
        ),
    )
    return dataclasses.replace(layout, unions=(union,)), positions


def _segment_layout(
    column: _SegmentColumn,
    s_sorted: FloatArray,
    y_sorted: LabelArray,
    threshold: float,
    ece_bins: int,
    weight_position: IntArray | None,
) -> _Layout:
    """A layout of the column's reported values; `weight_position` maps score order to
    the order in which weights are drawn (None: the same)."""
    reported_rows = np.flatnonzero(column.part_of_row < len(column.keys))
    # A stable sort by part keeps each part's rows in score order.
    by_part = np.argsort(column.part_of_row[reported_rows], kind="stable")
    positions = reported_rows[by_part]
    take = positions if weight_position is None else weight_position[positions]
    return _build_layout(
        take,
        column.part_rows[: len(column.keys)],
        s_sorted[positions],
        y_sorted[positions],
        threshold,
        ece_bins,
    )


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def point_metrics(y_true: ArrayLike, scores: ArrayLike, threshold: float, *, ece_bins: int = 10) -> dict[str, float]:
    """The metrics of `evaluate_scores` without intervals, keyed as `METRIC_NAMES`."""
    y, s = _check_inputs(y_true, scores, threshold, ece_bins)
    order = _descending(s)
    layout = _build_layout(None, [y.shape[0]], s[order], y[order], threshold, ece_bins)
    return _point_values(layout)[0]


def evaluate_scores(
    y_true: ArrayLike,
    scores: ArrayLike,
    threshold: float,
    *,
    segments: Mapping[str, ArrayLike] | None = None,
    split: str = "test",
    resamples: int = 200,
    seed: int = DEFAULT_SEED,
    ece_bins: int = 10,
    min_segment_rows: int = 50,
) -> EvaluationReport:
    """Evaluate probabilities `scores` against 0/1 labels `y_true`, flagging rows with
    `score >= threshold`.

    `segments` maps a column name to one string label per row; every (column, value)
    with at least `min_segment_rows` rows gets a `SegmentReport`. Intervals come from
    `resamples` Poisson(1) bootstrap resamples seeded by `seed`, the same resamples
    for the whole split and for every segment.
    """
    y, s = _check_inputs(y_true, scores, threshold, ece_bins)
    _check_resamples(resamples)
    rows = y.shape[0]
    order = _descending(s)
    s_sorted = s[order]
    y_sorted = y[order]
    columns = [_segment_column(column, labels, order, min_segment_rows) for column, labels in (segments or {}).items()]

    # Each layout's outputs, keyed as in the report.
    plan: list[tuple[_Layout, list[SegmentKey]]] = []
    hosts = [column for column in columns if len(column.part_rows) <= _MAX_HOST_PARTS]
    host = min(hosts, key=lambda column: len(column.part_rows), default=None)
    weight_position: IntArray | None = None
    if host is None:
        whole = _build_layout(None, [rows], s_sorted, y_sorted, threshold, ece_bins)
        plan.append((whole, [None]))
    else:
        layout, positions = _host_layout(host, s_sorted, y_sorted, threshold, ece_bins)
        plan.append((layout, [*host.keys, None]))
        weight_position = np.empty(rows, dtype=np.intp)
        weight_position[positions] = np.arange(rows)
    for column in columns:
        if column is not host and column.keys:
            layout = _segment_layout(column, s_sorted, y_sorted, threshold, ece_bins, weight_position)
            plan.append((layout, list(column.keys)))

    layouts = [layout for layout, _ in plan]
    metrics: dict[SegmentKey, dict[str, MetricValue]] = {}
    populations: dict[SegmentKey, _Population] = {}
    samples = _bootstrap(layouts, rows, resamples, seed)
    for (layout, keys), layout_samples in zip(plan, samples, strict=True):
        points = _point_values(layout)
        for key, population, point, output_samples in zip(keys, layout.outputs(), points, layout_samples, strict=True):
            populations[key] = population
            metrics[key] = {name: _interval(value, output_samples[name]) for name, value in point.items()}

    segment_reports = [
        SegmentReport(
            column=column_name,
            value=value,
            rows=populations[(column_name, value)].rows,
            positives=populations[(column_name, value)].positives,
            metrics=metrics[(column_name, value)],
        )
        for column in columns
        for column_name, value in column.keys
    ]
    flagged = s >= threshold
    true_positive = int(np.count_nonzero(flagged & (y == 1)))
    false_positive = int(np.count_nonzero(flagged)) - true_positive
    positives = int(np.count_nonzero(y))
    return EvaluationReport(
        split=split,
        rows=rows,
        positives=positives,
        threshold=threshold,
        metrics=metrics[None],
        confusion=ConfusionCounts(
            true_positive=true_positive,
            false_positive=false_positive,
            true_negative=rows - positives - false_positive,
            false_negative=positives - true_positive,
        ),
        segments=segment_reports,
        bootstrap_resamples=resamples,
        bootstrap_seed=seed,
    )


def paired_bootstrap_difference(
    y_true: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    threshold_a: float,
    threshold_b: float,
    *,
    metrics: Sequence[str] = ("roc_auc", "pr_auc", "ece"),
    resamples: int = 200,
    seed: int = DEFAULT_SEED,
    ece_bins: int = 10,
) -> dict[str, MetricValue]:
    """Metric of model a minus metric of model b on the same rows, with a paired 95%
    bootstrap interval.

    Both models are measured under the same resample weights, so the interval is that
    of the difference itself, not the sum of two independent uncertainties.
    """
    unknown = [name for name in metrics if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRIC_NAMES)}")
    y, s_a = _check_inputs(y_true, scores_a, threshold_a, ece_bins)
    s_b = _check_scores(scores_b, y.shape[0], name="scores_b")
    _check_threshold(threshold_b)
    _check_resamples(resamples)
    # Weights are drawn in row order and gathered into each model's score order, so
    # both models see the same weight on the same row.
    layouts = []
    for s, threshold in ((s_a, threshold_a), (s_b, threshold_b)):
        order = _descending(s)
        rows = [y.shape[0]]
        layouts.append(_build_layout(order, rows, s[order], y[order], threshold, ece_bins))
    point_a, point_b = (_point_values(layout)[0] for layout in layouts)
    samples_a, samples_b = (layout_samples[0] for layout_samples in _bootstrap(layouts, y.shape[0], resamples, seed))
    return {name: _interval(point_a[name] - point_b[name], samples_a[name] - samples_b[name]) for name in metrics}
