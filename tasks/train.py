"""Training: scikit-learn's LogisticRegression (lbfgs), C chosen on the validation split, and the threshold rule.

BLAS is limited to one thread around every fit: numpy's OpenBLAS and sklearn's OpenMP otherwise oversubscribe the
cores, which made lbfgs about three times slower on 2-core machines. A convergence warning is recorded and shown,
never swallowed: a model that did not converge is a fact a reviewer must see.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from tasks.config import ModelSpec, ThresholdSpec
from tasks.features import FeaturePipeline
from tasks.model import ScoringModel, sigmoid

__all__ = [
    "CandidateFit",
    "FitResult",
    "ThresholdError",
    "build_scoring_model",
    "choose_threshold",
    "fit_logistic",
    "fit_regularisation_path",
    "select_and_fit",
]

FloatArray = npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int8]


class ThresholdError(ValueError):
    """No threshold on the validation split satisfies the configured rule."""


@dataclass(frozen=True)
class CandidateFit:
    C: float
    coefficients: FloatArray
    intercept: float
    validation_score: float
    iterations: int
    warnings: list[str]


@dataclass(frozen=True)
class FitResult:
    best: CandidateFit
    candidates: list[CandidateFit]
    selection_metric: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PathFit:
    C: float
    coefficients: FloatArray
    intercept: float
    iterations: int
    warnings: list[str]


def fit_regularisation_path(
    design: FloatArray, labels: LabelArray, Cs: list[float], *, class_weight: object, max_iter: int, tol: float
) -> list[PathFit]:
    """One lbfgs fit per C, from the strongest penalty to the weakest, each starting from the previous solution.

    Neighbouring solutions on the path are close, so warm starts cut the iterations of every fit after the first.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, class_weight=class_weight, warm_start=True)
    fits: list[PathFit] = []
    with threadpool_limits(1, "blas"):
        for c in sorted(Cs):
            model.set_params(C=c)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(design, labels)
            messages = [
                f"C={c:g}: {str(w.message).splitlines()[0]}"
                for w in caught
                if issubclass(w.category, ConvergenceWarning)
            ]
            fits.append(
                PathFit(
                    C=c,
                    coefficients=model.coef_[0].astype(np.float64),
                    intercept=float(model.intercept_[0]),
                    iterations=int(model.n_iter_[0]),
                    warnings=messages,
                )
            )
    return fits


def fit_logistic(
    design: FloatArray, labels: LabelArray, *, C: float, class_weight: object, max_iter: int, tol: float
) -> tuple[FloatArray, float, int, list[str]]:
    """A single fit (no warm start): coefficients, intercept, iterations and convergence warnings."""
    (fit,) = fit_regularisation_path(design, labels, [C], class_weight=class_weight, max_iter=max_iter, tol=tol)
    return fit.coefficients, fit.intercept, fit.iterations, fit.warnings


def _validation_score(metric: str, labels: LabelArray, scores: FloatArray) -> float:
    """Higher is better for every metric returned here (log loss is negated)."""
    if metric == "log_loss":
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        return float(np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    from tasks.evaluate import point_metrics

    return point_metrics(labels, scores, 0.5)[metric]


def select_and_fit(
    train: FloatArray, train_labels: LabelArray, valid: FloatArray, valid_labels: LabelArray, spec: ModelSpec
) -> FitResult:
    """Fit one model per C on the training split and keep the best on the validation split."""
    class_weight: object = spec.class_weight
    if isinstance(class_weight, dict):
        class_weight = {int(k): float(v) for k, v in class_weight.items()}
    path = fit_regularisation_path(
        train, train_labels, spec.C, class_weight=class_weight, max_iter=spec.max_iter, tol=spec.tol
    )
    candidates = [
        CandidateFit(
            C=fit.C,
            coefficients=fit.coefficients,
            intercept=fit.intercept,
            validation_score=_validation_score(
                spec.selection_metric, valid_labels, sigmoid(valid @ fit.coefficients + fit.intercept)
            ),
            iterations=fit.iterations,
            warnings=fit.warnings,
        )
        for fit in path
    ]
    # Ties go to the stronger regularisation (smaller C): the simpler model.
    best = max(candidates, key=lambda cand: (cand.validation_score, -cand.C if math.isfinite(cand.C) else -1e308))
    return FitResult(
        best=best,
        candidates=candidates,
        selection_metric=spec.selection_metric,
        warnings=[w for cand in candidates for w in cand.warnings],
    )


def choose_threshold(labels: LabelArray, scores: FloatArray, spec: ThresholdSpec) -> float:
    """The decision threshold (decline when score >= threshold) from the validation split."""
    if spec.method == "fixed":
        assert spec.value is not None
        return float(spec.value)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_labels = labels[order].astype(np.int64)
    # Candidate thresholds are the distinct scores; the counts at each are taken after its last tied row.
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(sorted_scores) - 1]
    tp = np.cumsum(sorted_labels)[last_of_tie].astype(np.float64)
    fp = (last_of_tie + 1 - tp).astype(np.float64)
    positives = float(sorted_labels.sum())
    fn = positives - tp
    thresholds = sorted_scores[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / positives if positives else np.zeros_like(tp)
    if spec.method == "max_f1":
        f1 = np.divide(
            2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0
        )
        return float(thresholds[int(np.argmax(f1))])
    if spec.method == "target_precision":
        assert spec.target is not None
        meets = np.flatnonzero(precision >= spec.target)
        if len(meets) == 0:
            raise ThresholdError(f"no threshold reaches precision {spec.target:g} on the validation split")
        return float(thresholds[meets[-1]])  # the lowest such threshold keeps the most recall
    if spec.method == "target_recall":
        assert spec.target is not None
        meets = np.flatnonzero(recall >= spec.target)
        return float(thresholds[meets[0]])  # the highest threshold that still reaches the recall
    assert spec.cost_false_positive is not None and spec.cost_false_negative is not None
    cost = spec.cost_false_positive * fp + spec.cost_false_negative * fn
    # Declining nobody is a candidate too: its cost is every positive missed.
    if spec.cost_false_negative * positives <= float(cost.min()):
        return 1.0
    return float(thresholds[int(np.argmin(cost))])


def build_scoring_model(
    pipeline: FeaturePipeline,
    fit: FitResult,
    valid: FloatArray,
    valid_labels: LabelArray,
    threshold: ThresholdSpec,
    model_name: str,
) -> ScoringModel:
    """The deployable model: pipeline, chosen weights and the threshold picked on the validation split."""
    best = fit.best
    scores = sigmoid(valid @ best.coefficients + best.intercept)
    return ScoringModel(
        model_name=model_name,
        pipeline=pipeline,
        feature_names=pipeline.design_columns(),
        coefficients=[float(w) for w in best.coefficients],
        intercept=best.intercept,
        threshold=choose_threshold(valid_labels, scores, threshold),
        threshold_method=threshold.method,
        trained_at=datetime.now(UTC),
        regularisation_c=best.C if math.isfinite(best.C) else None,
    )
