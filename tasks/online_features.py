"""Row-at-a-time features for the scorer: the fitted FeaturePipeline's numbers for one typed record, in microseconds.

`FeaturePipeline.transform` builds Polars frames and expressions; per request that costs about a millisecond, more
than the rest of the scorer together. `OnlineFeatures` is compiled from the SAME fitted pipeline (its spec, fits and
design-column order) and applies the same definitions to one record with plain Python:
- derived columns: `not_equal` / `equal` compare with nulls as values (Polars' `ne_missing` / `eq_missing`), `hour` and
  `day_of_week` (Monday = 1) of the naive UTC timestamp;
- numeric: null -> training median, `log` = log1p(max(x, 0)), `clip` to the training quantiles, `standardise` with the
  training mean and deviation, or `bins` (one column per bin after the reference bin);
- categorical: one column per kept level, plus `__other__` for levels not kept when training had rare levels; a null
  is the level `__missing__`; an unseen level therefore lands in `__other__` (or the reference), never an error;
- boolean: 1.0 / 0.0, null as 0.0.
The aggregates come from the online store (`tasks.entity_history`). `tests/bentos/test_online_features.py` checks
every design column against `FeaturePipeline.transform` on the generated data within 1e-12, and the served parity
replay checks the whole path against the batch job.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tasks.config import DerivedSpec, FeatureItem, FeatureSpec
from tasks.entity_history import AggregatePlan
from tasks.features import MISSING_LEVEL, CategoricalFit, FeaturePipeline, NumericFit

__all__ = ["OnlineFeatures", "epoch_ms"]

_EPOCH = datetime(1970, 1, 1)
Encoder = Callable[[Any, list[float]], None]


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of a naive UTC datetime, floored like Polars' `dt.epoch("ms")`."""
    delta = moment - _EPOCH
    return (delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds) // 1000


def _text(value: Any) -> str:
    # Polars' cast to String: booleans as 'true' / 'false', integers in decimal.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _derived(derived: DerivedSpec) -> Callable[[Mapping[str, Any]], Any]:
    first = derived.columns[0]
    if derived.op in ("not_equal", "equal"):
        second = derived.columns[1]
        if derived.op == "not_equal":
            return lambda row: row[first] != row[second]
        return lambda row: row[first] == row[second]
    if derived.op == "hour":
        return lambda row: None if row[first] is None else float(row[first].hour)
    return lambda row: None if row[first] is None else float(row[first].isoweekday())


def _numeric_encoder(item: FeatureItem, fit: NumericFit) -> Encoder:
    median = fit.median
    log = "log" in item.transforms
    clip = fit.clip_low is not None and fit.clip_high is not None
    low, high = fit.clip_low or 0.0, fit.clip_high or 0.0
    mean, std = fit.mean or 0.0, fit.std or 1.0
    standardise = fit.bin_edges is None and fit.mean is not None and fit.std is not None

    def base(value: Any) -> float:
        x = median if value is None else float(value)
        if log:
            x = math.log1p(x if x > 0.0 else 0.0)
        if clip:
            x = low if x < low else high if x > high else x
        return x

    if fit.bin_edges is not None:
        edges = list(fit.bin_edges)
        # One ready-made tuple of dummies per bin: bin b (the number of edges <= x) sets column b; bin 0 is the
        # reference and sets none.
        width = len(edges)
        dummies = [tuple(1.0 if column == b else 0.0 for column in range(1, width + 1)) for b in range(width + 1)]

        def encode_bins(value: Any, out: list[float]) -> None:
            out.extend(dummies[bisect_right(edges, base(value))])

        return encode_bins

    def encode(value: Any, out: list[float]) -> None:
        x = base(value)
        out.append((x - mean) / std if standardise else x)

    return encode


def _categorical_encoder(fit: CategoricalFit) -> Encoder:
    levels = list(fit.levels)
    # Ready-made dummy tuples per known level; anything else (unseen or pooled-rare) gets the `unknown` tuple.
    table = {
        level: tuple(1.0 if level == kept else 0.0 for kept in levels) + ((0.0,) if fit.other_column else ())
        for level in [fit.reference, *levels]
    }
    unknown = tuple(0.0 for _ in levels) + ((1.0,) if fit.other_column else ())

    def encode(value: Any, out: list[float]) -> None:
        out.extend(table.get(MISSING_LEVEL if value is None else _text(value), unknown))

    return encode


def _boolean_encoder(value: Any, out: list[float]) -> None:
    out.append(0.0 if value is None else float(value))


class OnlineFeatures:
    """The fitted pipeline compiled for single records; `design_row` returns the model inputs in design order."""

    def __init__(self, pipeline: FeaturePipeline) -> None:
        spec: FeatureSpec = pipeline.spec
        self.spec = spec
        self.design_columns: list[str] = pipeline.design_columns()
        self.feature_names: list[str] = [item.name for item in spec.features]
        self.plan = AggregatePlan.from_spec(spec.aggregates) if spec.aggregates is not None else None
        self.entity_column = spec.entity_column
        self.time_column = spec.timestamp.column if spec.timestamp is not None else None
        self.amount_column = spec.aggregates.amount_column if spec.aggregates is not None else None
        self._derived = [(d.name, _derived(d)) for d in spec.derived]
        self._encoders: list[tuple[str, Encoder]] = []
        for item in spec.features:
            fit = pipeline.fits[item.name]
            if isinstance(fit, NumericFit):
                self._encoders.append((item.name, _numeric_encoder(item, fit)))
            elif isinstance(fit, CategoricalFit):
                column = spec.columns.get(item.name)
                if column is not None and column.type == "float":
                    # Polars prints floats its own way ('1.0', '1e-05'); matching it is not worth a feature this odd.
                    raise ValueError(f"feature {item.name}: a categorical float column is not supported online")
                self._encoders.append((item.name, _categorical_encoder(fit)))
            else:
                self._encoders.append((item.name, _boolean_encoder))
        self._width = len(self.design_columns)

    def base_row(self, record: Mapping[str, Any], aggregates: Sequence[float] | None) -> dict[str, Any]:
        """The record plus its derived columns and aggregates: the batch job's base-frame row."""
        row = dict(record)
        for name, derive in self._derived:
            row[name] = derive(row)
        if aggregates is not None and self.plan is not None:
            row.update(zip(self.plan.names, aggregates, strict=True))
        return row

    def features(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The feature values before encoding (what the prediction log records and the drift watch compares)."""
        return {name: base[name] for name in self.feature_names}

    def design_row(self, base: Mapping[str, Any]) -> list[float]:
        out: list[float] = []
        for name, encode in self._encoders:
            encode(base[name], out)
        if len(out) != self._width:
            raise AssertionError(f"online features produced {len(out)} inputs, the pipeline has {self._width}")
        return out
