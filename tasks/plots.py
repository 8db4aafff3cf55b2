"""Diagnostic plots for one evaluated split: ROC curve, precision-recall curve and reliability diagram.

The PNGs are evaluation artifacts for humans; the gate reads the numbers in the `EvaluationReport`, not these.
Curves are drawn through at most a few thousand exact operating points (thresholds at evenly spaced order
statistics of each class), so a test split of millions of rows plots as fast as a small one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["write_evaluation_plots"]

# Per class; a curve has at most twice this many points plus its end point.
_POINTS_PER_CLASS = 1000
_DPI = 80
_FIGSIZE = (5.0, 4.0)


def _check(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"y_true and scores must be one-dimensional, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but scores has {s.shape[0]}")
    if not (np.all(s >= 0.0) and np.all(s <= 1.0)):
        raise ValueError("scores must be probabilities in [0, 1] (no NaN)")
    if y.dtype != np.bool_ and not np.all((y == 0) | (y == 1)):
        raise ValueError("y_true must hold only 0 and 1")
    positive = y == 1
    if not (np.any(positive) and not np.all(positive)):
        raise ValueError("plotting ROC and precision-recall curves needs both classes in y_true")
    return positive, s


def _operating_points(
    positive: NDArray[np.bool_], s: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """True and false positive counts at descending thresholds, from flagging nothing to flagging everything."""
    pos = np.sort(s[positive])
    neg = np.sort(s[~positive])

    def evenly_spaced(sorted_scores: NDArray[np.float64]) -> NDArray[np.float64]:
        picks = np.linspace(0, sorted_scores.size - 1, min(sorted_scores.size, _POINTS_PER_CLASS))
        return sorted_scores[picks.round().astype(np.intp)]

    thresholds = np.unique(np.concatenate((evenly_spaced(pos), evenly_spaced(neg))))[::-1]
    # Rows with score >= threshold are flagged; ties are never split, so every point is a true vertex.
    true_pos = pos.size - np.searchsorted(pos, thresholds, side="left")
    false_pos = neg.size - np.searchsorted(neg, thresholds, side="left")
    return np.concatenate(([0], true_pos)), np.concatenate(([0], false_pos))


def _reliability(
    positive: NDArray[np.bool_], s: NDArray[np.float64], bins: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], float]:
    """Mean score, positive rate and row count per equal-width bin, and the expected calibration error."""
    bin_of_row = np.minimum((s * bins).astype(np.intp), bins - 1)
    counts = np.bincount(bin_of_row, minlength=bins)
    score_sums = np.bincount(bin_of_row, weights=s, minlength=bins)
    positive_sums = np.bincount(bin_of_row, weights=positive.astype(np.float64), minlength=bins)
    ece = float(np.sum(np.abs(score_sums - positive_sums)) / s.size)
    occupied = np.maximum(counts, 1)
    return score_sums / occupied, positive_sums / occupied, counts, ece


def write_evaluation_plots(
    y_true: ArrayLike, scores: ArrayLike, out_dir: Path, *, ece_bins: int = 10
) -> dict[str, Path]:
    """Write `roc.png`, `pr.png` and `calibration.png` into `out_dir` and return their paths by kind."""
    if ece_bins < 1:
        raise ValueError(f"ece_bins must be at least 1, got {ece_bins}")
    positive, s = _check(y_true, scores)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    import matplotlib

    # Headless and thread-agnostic; must be chosen before pyplot is imported.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_pos, false_pos = _operating_points(positive, s)
    positives = int(true_pos[-1])
    negatives = int(false_pos[-1])
    paths = {"roc": out_dir / "roc.png", "pr": out_dir / "pr.png", "calibration": out_dir / "calibration.png"}

    fig, ax = plt.subplots(figsize=_FIGSIZE)
    try:
        ax.plot(false_pos / negatives, true_pos / positives, label="model")
        ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="chance")
        ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(paths["roc"], dpi=_DPI)
    finally:
        plt.close(fig)

    flagged = true_pos + false_pos
    # Flagging nothing has precision 1 by the usual convention, which anchors the curve at recall 0.
    precision = np.divide(true_pos, flagged, out=np.ones(flagged.size), where=flagged > 0)
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    try:
        ax.plot(true_pos / positives, precision, drawstyle="steps-post", label="model")
        base_rate = positives / (positives + negatives)
        ax.axhline(base_rate, linestyle="--", color="grey", label=f"base rate {base_rate:.4f}")
        ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(paths["pr"], dpi=_DPI)
    finally:
        plt.close(fig)

    mean_score, positive_rate, counts, ece = _reliability(positive, s, ece_bins)
    occupied = counts > 0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(_FIGSIZE[0], _FIGSIZE[1] * 1.25), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="perfectly calibrated")
        top.plot(mean_score[occupied], positive_rate[occupied], marker="o", label="model")
        top.set(ylabel="Observed positive rate", title=f"Reliability ({ece_bins} bins, ECE = {ece:.4f})", ylim=(0, 1))
        top.legend(loc="upper left")
        edges = np.linspace(0.0, 1.0, ece_bins + 1)
        bottom.bar(edges[:-1], counts, width=1.0 / ece_bins, align="edge", color="tab:blue", alpha=0.6)
        bottom.set(xlabel="Mean predicted probability", ylabel="Rows", xlim=(0, 1))
        if np.any(occupied):
            bottom.set_yscale("log")
        fig.tight_layout()
        fig.savefig(paths["calibration"], dpi=_DPI)
    finally:
        plt.close(fig)

    return paths
