"""Reason codes: which model inputs pushed a score up, as adverse-action notices need.

A logistic model's log-odds are `intercept + sum_i w_i * x_i`. Measured against an average training applicant, input
i moves the log-odds by `w_i * (x_i - mean_i)`: its contribution. The reason codes of a score are the inputs with the
largest positive contributions (those that made the applicant look riskier than average), largest first.

The reference `mean_i` is the training mean of design column i:
- taken from the manifest's `design_means` when packaging recorded them (`design_means()` below computes them from
  the training design matrix), which is exact for every kind of column;
- otherwise 0.0 for every column. For standardised numeric features that is exact, since standardising with the
  training mean and deviation makes their training mean 0 by construction. For dummies (categorical levels, bins,
  booleans) and unstandardised numerics it is an approximation: the contribution is then measured against the
  reference level (a dummy's 0) rather than against the average applicant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

__all__ = ["DEFAULT_TOP", "ReasonCode", "ReasonCoder", "design_means"]

FloatArray = npt.NDArray[np.float64]
DEFAULT_TOP = 4  # US adverse-action practice: up to four key factors.


class ReasonCode(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    value: float
    contribution: float


def design_means(feature_names: Sequence[str], train_design: FloatArray) -> dict[str, float]:
    """Training mean of every design column, for the manifest (packaging) and thus for exact reason codes."""
    means = np.asarray(train_design, dtype=np.float64).mean(axis=0)
    return {name: float(mean) for name, mean in zip(feature_names, means, strict=True)}


class ReasonCoder:
    """Turns one design row into its top contributions; `means` missing a column counts that column's mean as 0."""

    def __init__(
        self,
        feature_names: Sequence[str],
        weights: Sequence[float],
        means: Mapping[str, float] | None = None,
        *,
        top: int = DEFAULT_TOP,
    ) -> None:
        self.feature_names = list(feature_names)
        self.weights = [float(w) for w in weights]
        self.means = [float((means or {}).get(name, 0.0)) for name in self.feature_names]
        self.exact = means is not None and all(name in means for name in self.feature_names)
        self.top = top

    def contributions(self, row: Sequence[float]) -> list[float]:
        return [w * (x - m) for w, x, m in zip(self.weights, row, self.means, strict=True)]

    def explain(self, row: Sequence[float]) -> list[ReasonCode]:
        """The up to `top` inputs with a positive contribution, largest first (ties: design column order)."""
        return [ReasonCode.model_validate(code) for code in self.explain_dicts(row)]

    def explain_dicts(self, row: Sequence[float]) -> list[dict[str, float | str]]:
        """`explain` as plain dicts, the shape the HTTP response carries (no model objects on the hot path)."""
        contributions = self.contributions(row)
        # A stable sort, so equal contributions keep the design column order.
        order = sorted(range(len(contributions)), key=contributions.__getitem__, reverse=True)[: self.top]
        names = self.feature_names
        return [
            {"feature": names[i], "value": float(row[i]), "contribution": contributions[i]}
            for i in order
            if contributions[i] > 0.0
        ]
