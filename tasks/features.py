"""The one feature code path: derived columns, point-in-time aggregates, and the fitted FeaturePipeline.

`fit_feature_pipeline` learns statistics and vocabularies from the training split only; `FeaturePipeline.transform`
turns raw rows into the design matrix with Polars expressions. Batch training, batch scoring and the Bento all call
`transform`, so a feature cannot be computed one way in training and another way in serving.

Encoding choices, documented because reviewers and policy authors read coefficients:
- numeric: optional `log` (log1p of the value floored at 0), `clip` (training quantiles), `standardise` (training
  mean and standard deviation) or `bins` (training quantile edges or fixed edges, one-hot with the first bin as
  reference).
- categorical: treatment coding with the most frequent training level as the reference (all-zero row), so an
  unpenalised fit stays identifiable. Levels rarer than `min_level_count` pool into `__other__`, which gets its own
  column. A level never seen in training goes to `__other__` when training had rare levels, otherwise to the
  reference level. It never raises.
- boolean: 1.0 / 0.0 (null as 0.0).
- nullable numeric columns are imputed with the training median; nullable categoricals become the level `__missing__`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tasks.config import DerivedSpec, FeatureItem, FeatureSpec, parse_duration_ms

__all__ = [
    "OTHER_LEVEL",
    "MISSING_LEVEL",
    "CategoricalFit",
    "FeatureFit",
    "FeaturePipeline",
    "NumericFit",
    "add_aggregates",
    "add_derived_columns",
    "feature_spec_hash",
    "fit_feature_pipeline",
]

OTHER_LEVEL = "__other__"
MISSING_LEVEL = "__missing__"
_MS_PER_HOUR = 3_600_000.0


def feature_spec_hash(spec: FeatureSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Stateless row-wise columns


def _derived_expr(derived: DerivedSpec) -> pl.Expr:
    if derived.op == "not_equal":
        left, right = derived.columns
        return pl.col(left).ne_missing(pl.col(right))
    if derived.op == "equal":
        left, right = derived.columns
        return pl.col(left).eq_missing(pl.col(right))
    if derived.op == "hour":
        return pl.col(derived.columns[0]).dt.hour().cast(pl.Float64)
    return pl.col(derived.columns[0]).dt.weekday().cast(pl.Float64)


def add_derived_columns(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    if not spec.derived:
        return frame
    return frame.with_columns([_derived_expr(d).alias(d.name) for d in spec.derived])


# --------------------------------------------------------------------------------------------------------------
# Point-in-time aggregates


def add_aggregates(frame: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Per-entity aggregates over strictly earlier rows, returned in the input's row order.

    Window `w` for a row at time t covers the entity's rows with time in [t - w, t): rows at the same instant are
    not 'earlier', so a row never sees itself or a simultaneous twin. Rows are sorted by (entity, time), each gets
    the integer key entity_code * span + time_ms, and one binary search per window bound finds the window; sums
    are differences of per-entity cumulative sums, kept per entity so the rounding error stays at the size of one
    entity's total rather than the whole table's.
    """
    aggregates = spec.aggregates
    if aggregates is None:
        return frame
    assert spec.entity_column is not None and spec.timestamp is not None  # guaranteed by FeatureSpec validation
    entity, time_column, amount = spec.entity_column, spec.timestamp.column, aggregates.amount_column
    windows_ms = {w: parse_duration_ms(w) for w in aggregates.windows}
    if frame.height == 0:
        return frame.with_columns([pl.lit(None, dtype=pl.Float64).alias(name) for name in aggregates.output_names()])
    t_ms = pl.col(time_column).dt.epoch("ms")
    # Integer codes per entity make the sort an integer sort (several times faster than sorting strings);
    # their order does not matter, only that one entity's rows end up contiguous.
    keyed = frame.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_idx"),
        pl.col(entity).cast(pl.String).fill_null("").cast(pl.Categorical).to_physical().cast(pl.Int64).alias("_code"),
        t_ms.alias("_t_ms"),
        pl.col(amount).cast(pl.Float64).alias("_amount"),
    )
    t_min, t_max, max_code = keyed.select(
        pl.col("_t_ms").min().alias("lo"), pl.col("_t_ms").max().alias("hi"), pl.col("_code").max()
    ).row(0)
    span = int(t_max - t_min) + max(windows_ms.values()) + 1
    if (int(max_code) + 1) * span >= 2**62:
        raise ValueError(f"aggregates: {max_code + 1} entities over this time span overflow the 64-bit window key")
    work = (
        keyed.lazy()
        .with_columns((pl.col("_t_ms") - t_min).alias("_t"), (pl.col("_code") * span).alias("_base"))
        .with_columns((pl.col("_base") + pl.col("_t")).alias("_key"))
        # A stable sort keeps simultaneous rows of one entity in input order.
        .sort("_key", maintain_order=True)
        .with_columns(
            pl.col("_amount").cum_sum().over("_base").alias("_cs"),
            pl.col("_key").search_sorted(pl.col("_base"), side="left").cast(pl.Int64).alias("_start"),
            pl.col("_key").search_sorted(pl.col("_key"), side="left").cast(pl.Int64).alias("_hi"),
        )
        .with_columns((pl.col("_cs") - pl.col("_amount")).alias("_cs_excl"))
    )
    has_prev = pl.col("_hi") > pl.col("_start")
    prev = (pl.col("_hi") - 1).clip(lower_bound=0)
    cs_prev = pl.col("_cs").gather(prev)
    outputs: list[pl.Expr] = []
    for window, ms in windows_ms.items():
        lo = pl.col("_key").search_sorted(pl.max_horizontal(pl.col("_key") - ms, pl.col("_base")), side="left")
        lo = lo.cast(pl.Int64)
        count = pl.col("_hi") - lo
        total = pl.when(count > 0).then(cs_prev - pl.col("_cs_excl").gather(lo)).otherwise(0.0)
        outputs += [count.cast(pl.Float64).alias(f"count_{window}"), total.alias(f"amount_sum_{window}")]
    if aggregates.time_since_previous:
        gap = (pl.col("_t") - pl.col("_t").gather(prev)).cast(pl.Float64) / _MS_PER_HOUR
        outputs.append(pl.when(has_prev).then(gap).otherwise(aggregates.no_history_hours).alias("hours_since_previous"))
    if aggregates.amount_to_mean:
        mean_prev = cs_prev / (pl.col("_hi") - pl.col("_start")).cast(pl.Float64)
        ratio = pl.when(has_prev & (mean_prev > 0)).then(pl.col("_amount") / mean_prev).otherwise(1.0)
        outputs.append(ratio.alias("amount_to_mean"))
    # The in-memory engine runs this sort-and-search plan about 2.5x faster than the streaming default.
    computed = work.select([pl.col("_idx"), *outputs]).sort("_idx").drop("_idx").collect(engine="in-memory")
    return pl.concat([frame, computed], how="horizontal")


# --------------------------------------------------------------------------------------------------------------
# Fitted encodings


class _Fit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericFit(_Fit):
    kind: str = "numeric"
    median: float
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    bin_edges: list[float] | None = Field(default=None, description="Inner edges; bin 0 is the reference.")


class CategoricalFit(_Fit):
    kind: str = "categorical"
    reference: str
    levels: list[str] = Field(description="Levels with their own column, reference excluded.")
    other_column: bool


class BooleanFit(_Fit):
    kind: str = "boolean"


FeatureFit = NumericFit | CategoricalFit | BooleanFit


def _numeric_base(item: FeatureItem, fit: NumericFit | None) -> pl.Expr:
    value = pl.col(item.name).cast(pl.Float64)
    if fit is not None:
        value = value.fill_null(fit.median)
    if "log" in item.transforms:
        value = value.clip(lower_bound=0.0).log1p()
    if fit is not None and fit.clip_low is not None and fit.clip_high is not None:
        value = value.clip(fit.clip_low, fit.clip_high)
    return value


def _bin_label(edges: list[float], index: int) -> str:
    low = "-inf" if index == 0 else f"{edges[index - 1]:g}"
    high = "inf" if index == len(edges) else f"{edges[index]:g}"
    return f"[{low},{high})"


class FeaturePipeline(BaseModel):
    """A FeatureSpec plus everything learned from the training split; serialised as JSON, never pickled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: FeatureSpec
    fits: dict[str, NumericFit | CategoricalFit | BooleanFit]
    spec_hash: str

    def design_columns(self) -> list[str]:
        return [name for name, _ in self._design_exprs()]

    def _design_exprs(self) -> list[tuple[str, pl.Expr]]:
        exprs: list[tuple[str, pl.Expr]] = []
        for item in self.spec.features:
            fit = self.fits[item.name]
            if isinstance(fit, NumericFit):
                value = _numeric_base(item, fit)
                if fit.bin_edges is not None:
                    index = pl.sum_horizontal([(value >= edge).cast(pl.Int32) for edge in fit.bin_edges])
                    for b in range(1, len(fit.bin_edges) + 1):
                        label = f"{item.name}{_bin_label(fit.bin_edges, b)}"
                        exprs.append((label, (index == b).cast(pl.Float64)))
                    continue
                if fit.mean is not None and fit.std is not None:
                    value = (value - fit.mean) / fit.std
                exprs.append((item.name, value))
            elif isinstance(fit, CategoricalFit):
                text = pl.col(item.name).cast(pl.String).fill_null(MISSING_LEVEL)
                for level in fit.levels:
                    exprs.append((f"{item.name}[{level}]", (text == level).cast(pl.Float64)))
                if fit.other_column:
                    known = [fit.reference, *fit.levels]
                    exprs.append((f"{item.name}[{OTHER_LEVEL}]", (~text.is_in(known)).cast(pl.Float64)))
            else:
                exprs.append((item.name, pl.col(item.name).cast(pl.Float64).fill_null(0.0)))
        return exprs

    def base_frame(self, raw: pl.DataFrame, history: pl.DataFrame | None = None) -> pl.DataFrame:
        """Raw rows plus derived columns and aggregates; `history` holds earlier rows the aggregates may see."""
        return _base_frame(self.spec, raw, history)

    def transform(self, raw: pl.DataFrame, history: pl.DataFrame | None = None) -> pl.DataFrame:
        """The design matrix (one Float64 column per model input) for `raw`, in its row order."""
        return self.design_from_base(self.base_frame(raw, history))

    def design_from_base(self, base: pl.DataFrame) -> pl.DataFrame:
        """The design matrix from a frame that already holds derived columns and aggregates."""
        return base.select([expr.alias(name) for name, expr in self._design_exprs()])

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeaturePipeline:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


def _base_frame(spec: FeatureSpec, raw: pl.DataFrame, history: pl.DataFrame | None) -> pl.DataFrame:
    if history is None or history.height == 0 or spec.aggregates is None:
        return add_aggregates(add_derived_columns(raw, spec), spec)
    columns = list(raw.columns)
    combined = pl.concat([history.select(columns), raw], how="vertical_relaxed")
    with_features = add_aggregates(add_derived_columns(combined, spec), spec)
    return with_features.tail(raw.height)


def _fit_numeric(item: FeatureItem, values: pl.Series) -> NumericFit:
    median = values.cast(pl.Float64).median()
    fit = NumericFit(median=float(median) if isinstance(median, int | float) else 0.0)
    frame = values.to_frame(item.name)
    current = frame.select(_numeric_base(item, fit)).to_series()
    if "clip" in item.transforms:
        low_q, high_q = item.clip_quantiles
        low, high = current.quantile(low_q, "lower"), current.quantile(high_q, "higher")
        fit = fit.model_copy(update={"clip_low": float(low or 0.0), "clip_high": float(high or 0.0)})
        current = frame.select(_numeric_base(item, fit)).to_series()
    if "bins" in item.transforms:
        if isinstance(item.bins, list):
            edges = sorted(set(float(e) for e in item.bins))
        else:
            count = int(item.bins or 2)
            quantiles = [current.quantile(q / count, "linear") for q in range(1, count)]
            edges = sorted({float(q) for q in quantiles if q is not None})
        return fit.model_copy(update={"bin_edges": edges})
    if "standardise" in item.transforms:
        mean = float(current.mean() or 0.0)  # type: ignore[arg-type]
        std = float(current.std(ddof=0) or 0.0)  # type: ignore[arg-type]
        fit = fit.model_copy(update={"mean": mean, "std": std if std > 0 else 1.0})
    return fit


def _fit_categorical(item: FeatureItem, values: pl.Series) -> CategoricalFit:
    counts = (
        values.cast(pl.String)
        .fill_null(MISSING_LEVEL)
        .value_counts(name="n")
        .sort(["n", item.name], descending=[True, False])
    )
    names = counts[item.name].to_list()
    frequent = counts.filter(pl.col("n") >= item.min_level_count)[item.name].to_list()[: item.max_levels]
    if not frequent:
        frequent = names[:1]
    return CategoricalFit(
        reference=frequent[0],
        levels=frequent[1:],
        other_column=len(names) > len(frequent),
    )


def fit_feature_pipeline(train_base: pl.DataFrame, spec: FeatureSpec) -> FeaturePipeline:
    """Learn the encodings from the training split's base frame (raw + derived + aggregates)."""
    fits: dict[str, NumericFit | CategoricalFit | BooleanFit] = {}
    for item in spec.features:
        column = train_base[item.name]
        if item.kind == "numeric":
            fits[item.name] = _fit_numeric(item, column)
        elif item.kind == "categorical":
            fits[item.name] = _fit_categorical(item, column)
        else:
            fits[item.name] = BooleanFit()
    return FeaturePipeline(spec=spec, fits=fits, spec_hash=feature_spec_hash(spec))
