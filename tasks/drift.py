"""Drift between a champion's training data and what it scores now: PSI per feature and on the score, plus Evidently.

The two sides are frames with the same columns: every FeatureSpec feature before encoding (the batch base frame's
columns, which is also what the prediction log's `features` hold) and `_score`, the champion's score.

- PSI (population stability index) is computed here with numpy over ALL current rows, on bins fixed from the
  reference: numeric features get quantile bins (deciles by default, right-closed so a point mass such as
  `count_1h == 0` keeps a bin of its own), categoricals and booleans one bin per reference level (the most frequent
  `max_levels`) plus one for anything else; every feature has one more bin for missing values. Proportions are
  floored at `epsilon` so an empty bin gives a large but finite term. PSI is what the drift policy reads.
- Evidently 0.7's `DataDriftPreset` (one `ValueDrift` per feature) and a `ValueDrift` on the score give a per-column
  verdict and the HTML report. Its tests are run on a seeded sample of the current window (`evidently_max_rows`):
  a distance between two distributions does not need a million rows to be estimated, and Evidently's cost grows
  with them. The methods are pinned (Wasserstein for numbers, Jensen-Shannon for categories) because Evidently's
  automatic choice switches to p-value tests below 1,000 rows, which would change what "drifted" means with the
  window's size. Evidently is imported only when a report is made (its import costs 10-15 s).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "SCORE_COLUMN",
    "DriftError",
    "DriftReport",
    "DriftSettings",
    "DriftWindow",
    "EvidentlyOutcome",
    "FeatureDrift",
    "FeatureKind",
    "LogStats",
    "PsiBins",
    "ReferenceInfo",
    "ScoreDrift",
    "UtcDatetime",
    "build_drift_report",
    "feature_kinds",
    "fit_psi_bins",
    "psi",
    "psi_counts",
    "run_evidently",
]

SCORE_COLUMN = "_score"
FeatureKind = Literal["numeric", "categorical", "boolean"]
FloatArray = npt.NDArray[np.float64]
_OTHER = "(other)"
_MISSING = "(missing)"


def _as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


class DriftError(Exception):
    """A drift watch cannot measure anything: no champion, no reference, no predictions in the window."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DriftSettings(_Frozen):
    """How drift is measured (not what is done about it: that is the policy's data)."""

    psi_bins: int = Field(default=10, ge=2, description="Quantile bins per numeric feature (fewer when values tie).")
    max_levels: int = Field(default=30, ge=1, description="Reference levels with their own PSI bin per categorical.")
    epsilon: float = Field(default=1e-4, gt=0, lt=0.01, description="Floor for a bin's proportion in PSI.")
    evidently_max_rows: int = Field(default=100_000, ge=100, description="Current rows Evidently sees at most.")
    numeric_method: str = "wasserstein"
    categorical_method: str = "jensenshannon"
    numeric_threshold: float = 0.1
    categorical_threshold: float = 0.1
    notable_psi: float = Field(default=0.1, ge=0, description="PSI from which a feature is listed as drifted.")
    top_features: int = Field(default=5, ge=1, description="At most this many names in `most_drifted`.")
    seed: int = 20260301


class DriftWindow(_Frozen):
    """The half-open interval [start, end) of scoring times a drift watch looks at."""

    start: UtcDatetime
    end: UtcDatetime

    @classmethod
    def ending(cls, end: datetime, hours: float) -> DriftWindow:
        if hours <= 0:
            raise ValueError(f"window_hours must be positive, got {hours}")
        if end.tzinfo is not None:
            # In UTC, an hour is an hour: subtracting in a zone with daylight saving is wall-clock arithmetic.
            end = end.astimezone(UTC)
        return cls(start=end - timedelta(hours=hours), end=end)


class LogStats(_Frozen):
    """What reading the prediction log found, so an empty window can say why it is empty."""

    folder: str
    files: int = 0
    files_skipped_old: int = 0
    lines: int = 0
    malformed: int = 0
    other_model: int = 0
    outside_window: int = 0
    rows: int = 0


class ReferenceInfo(_Frozen):
    """Where the reference profile came from."""

    run_id: str
    snapshot_hash: str
    train_rows: int
    rows: int
    seed: int
    built_at: UtcDatetime
    path: str


class FeatureDrift(_Frozen):
    name: str
    kind: FeatureKind
    psi: float
    bins: int = Field(description="PSI bins, missing-value bin included.")
    evidently_method: str
    evidently_score: float | None
    drifted: bool = Field(description="Evidently's verdict for this column (its method and threshold above).")
    reference_missing_share: float
    current_missing_share: float
    reference_median: float | None = None
    current_median: float | None = None


class ScoreDrift(_Frozen):
    psi: float
    evidently_method: str
    evidently_score: float | None
    drifted: bool
    reference_mean: float
    current_mean: float
    threshold: float
    decline_rate_reference: float = Field(description="Share of reference rows scored at or above the threshold.")
    decline_rate_current: float = Field(description="Share of the window's logged decisions that are declines.")


class DriftReport(_Frozen):
    """One window of one champion compared with its training data; the drift policy's evidence."""

    schema_version: Literal["1"] = "1"
    model_name: str
    model_version: str
    environment: str
    window: DriftWindow
    generated_at: UtcDatetime
    rows: int = Field(description="Current rows in the window (all of them enter PSI).")
    evidently_rows: int = Field(description="Current rows Evidently saw (a seeded sample when the window is big).")
    reference: ReferenceInfo
    log: LogStats
    features: list[FeatureDrift]
    score: ScoreDrift
    drifted_share: float = Field(description="Share of features Evidently calls drifted.")
    most_drifted: list[str] = Field(description="Features with PSI >= notable_psi, most drifted first.")
    evidently_error: str | None = None
    seconds_psi: float = 0.0
    seconds_evidently: float = 0.0

    def feature_psi(self) -> dict[str, float]:
        return {feature.name: feature.psi for feature in self.features}


# --------------------------------------------------------------------------------------------------------------
# PSI


class PsiBins(_Frozen):
    """Fixed PSI bins of one column, fitted on the reference: numeric inner edges or categorical levels."""

    kind: FeatureKind
    edges: list[float] | None = Field(default=None, description="Numeric: right-closed inner edges.")
    levels: list[str] | None = Field(default=None, description="Categorical/boolean: levels with their own bin.")

    @property
    def size(self) -> int:
        """Bins including the missing-value bin (and for categoricals the `other` bin)."""
        if self.edges is not None:
            return len(self.edges) + 2
        return len(self.levels or []) + 2


def _numbers(series: pl.Series) -> FloatArray:
    """Float values with nulls and non-finite values as NaN (they count as missing)."""
    values: FloatArray = series.cast(pl.Float64, strict=False).to_numpy(allow_copy=True).astype(np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def _texts(series: pl.Series) -> pl.Series:
    # Booleans become 'true'/'false', as the prediction log's JSON and Polars' cast spell them.
    return series.cast(pl.String, strict=False)


def fit_psi_bins(reference: pl.Series, kind: FeatureKind, *, bins: int = 10, max_levels: int = 30) -> PsiBins:
    """Bins from the reference: unique quantile edges for numbers, the most frequent levels otherwise."""
    if kind == "numeric":
        values = _numbers(reference)
        finite = values[~np.isnan(values)]
        if finite.size == 0:
            return PsiBins(kind=kind, edges=[])
        quantiles = np.quantile(finite, np.arange(1, bins) / bins, method="lower")
        # The largest edge at the maximum would leave the top bin empty in the reference: drop it.
        edges = sorted({float(q) for q in quantiles if q < finite.max()})
        return PsiBins(kind=kind, edges=edges)
    counts = _texts(reference).drop_nulls().value_counts(name="n", sort=True)
    ordered = counts.sort(["n", counts.columns[0]], descending=[True, False])
    levels = [str(level) for level in ordered[counts.columns[0]].to_list()[:max_levels]]
    return PsiBins(kind=kind, levels=sorted(levels))


def psi_counts(values: pl.Series, bins: PsiBins) -> npt.NDArray[np.int64]:
    """Counts per bin; the last bin holds missing values, the one before it (categoricals) unknown levels."""
    if bins.edges is not None:
        numbers = _numbers(values)
        missing = np.isnan(numbers)
        # side="left": a value equal to an edge falls in the bin that edge closes.
        index = np.searchsorted(np.asarray(bins.edges, dtype=np.float64), numbers[~missing], side="left")
        counts = np.bincount(index, minlength=len(bins.edges) + 1).astype(np.int64)
        return np.append(counts, np.int64(missing.sum()))
    levels = bins.levels or []
    lookup = {level: position for position, level in enumerate(levels)}
    texts = _texts(values)
    missing_count = texts.null_count()
    positions = texts.drop_nulls().replace_strict(lookup, default=len(levels), return_dtype=pl.Int64)
    counts = np.bincount(positions.to_numpy(), minlength=len(levels) + 1).astype(np.int64)
    return np.append(counts, np.int64(missing_count))


def psi(reference_counts: npt.NDArray[np.int64], current_counts: npt.NDArray[np.int64], epsilon: float) -> float:
    """sum((c - r) * ln(c / r)) over bins of proportions floored at `epsilon`; 0 when either side is empty."""
    ref_total, cur_total = reference_counts.sum(), current_counts.sum()
    if ref_total == 0 or cur_total == 0:
        return 0.0
    ref = np.maximum(reference_counts / ref_total, epsilon)
    cur = np.maximum(current_counts / cur_total, epsilon)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


# --------------------------------------------------------------------------------------------------------------
# Evidently


@dataclass(frozen=True)
class EvidentlyColumn:
    method: str
    score: float | None
    drifted: bool


@dataclass(frozen=True)
class EvidentlyOutcome:
    """Evidently's per-column verdicts and the snapshot that renders the HTML report (None when it failed)."""

    columns: Mapping[str, EvidentlyColumn]
    snapshot: Any
    error: str | None
    seconds: float

    def save_html(self, path: Path, fallback: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.snapshot is not None:
            self.snapshot.save_html(str(path))
        else:
            path.write_text(fallback, encoding="utf-8")


def _pandas(frame: pl.DataFrame, kinds: Mapping[str, FeatureKind]) -> Any:
    # Evidently 0.7 takes pandas only. Categorical and boolean columns go over as text so that Evidently treats
    # `true`/`false` and levels alike, and a null stays a null.
    columns = [
        _texts(frame[name]).alias(name) if kind != "numeric" else frame[name].cast(pl.Float64, strict=False)
        for name, kind in kinds.items()
    ]
    columns.append(frame[SCORE_COLUMN].cast(pl.Float64))
    return pl.DataFrame(columns).to_pandas()


def run_evidently(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: Mapping[str, FeatureKind],
    settings: DriftSettings,
    *,
    title: str,
) -> EvidentlyOutcome:
    """Evidently's data-drift preset over the features plus a ValueDrift on the score.

    Never raises for Evidently's own failures (a column it cannot test, a library error): PSI still decides, and
    the error is reported. It raises ImportError only when Evidently is not installed.
    """
    import time

    started = time.perf_counter()
    from evidently import DataDefinition, Dataset, Report  # type: ignore[import-untyped]
    from evidently.metrics import ValueDrift  # type: ignore[import-untyped]
    from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]

    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    categorical = [name for name, kind in kinds.items() if kind != "numeric"]
    definition = DataDefinition(numerical_columns=[*numeric, SCORE_COLUMN], categorical_columns=categorical)
    try:
        report = Report(
            [
                DataDriftPreset(
                    columns=list(kinds),
                    num_method=settings.numeric_method,
                    cat_method=settings.categorical_method,
                    num_threshold=settings.numeric_threshold,
                    cat_threshold=settings.categorical_threshold,
                ),
                ValueDrift(column=SCORE_COLUMN, method=settings.numeric_method, threshold=settings.numeric_threshold),
            ],
            include_tests=True,
            metadata={"title": title},
        )
        snapshot = report.run(
            Dataset.from_pandas(_pandas(current, kinds), data_definition=definition),
            Dataset.from_pandas(_pandas(reference, kinds), data_definition=definition),
        )
        columns = _evidently_columns(snapshot.dict())
    except Exception as error:  # noqa: BLE001 - Evidently is advisory here; PSI must still reach the policy
        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        return EvidentlyOutcome(columns={}, snapshot=None, error=message, seconds=time.perf_counter() - started)
    return EvidentlyOutcome(columns=columns, snapshot=snapshot, error=None, seconds=time.perf_counter() - started)


def _evidently_columns(result: Mapping[str, Any]) -> dict[str, EvidentlyColumn]:
    """Per column: the ValueDrift metric's method and score, and its test's verdict (FAIL means drifted)."""
    scores: dict[str, tuple[str, float | None]] = {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith(":ValueDrift"):
            value = metric.get("value")
            score = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
            scores[str(config["column"])] = (str(config.get("method", "")), score)
    verdicts: dict[str, bool] = {}
    for test in result.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith(":ValueDrift"):
            verdicts[str(params["column"])] = test.get("status") == "FAIL"
    return {
        column: EvidentlyColumn(method=method, score=score, drifted=verdicts.get(column, False))
        for column, (method, score) in scores.items()
    }


# --------------------------------------------------------------------------------------------------------------
# The report


def _median(series: pl.Series) -> float | None:
    value = series.cast(pl.Float64, strict=False).median()
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _missing_share(series: pl.Series) -> float:
    if series.len() == 0:
        return 0.0
    if series.dtype.is_float():
        return float((series.is_null() | series.is_nan()).sum()) / series.len()
    return series.null_count() / series.len()


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    if frame.height <= rows:
        return frame
    return frame.sample(n=rows, seed=seed, shuffle=False)


def build_drift_report(
    *,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: Mapping[str, FeatureKind],
    bins: Mapping[str, PsiBins],
    threshold: float,
    decline_rate_current: float,
    model_name: str,
    model_version: str,
    environment: str,
    window: DriftWindow,
    reference_info: ReferenceInfo,
    log: LogStats,
    settings: DriftSettings,
    html_path: Path,
) -> DriftReport:
    """PSI over every current row, Evidently on a sample, the HTML report written to `html_path`."""
    import time

    if current.height == 0:
        raise DriftError("the current window has no rows")
    started = time.perf_counter()
    features: list[tuple[str, FeatureKind, float, int]] = []
    for name, kind in kinds.items():
        column_bins = bins[name]
        value = psi(psi_counts(reference[name], column_bins), psi_counts(current[name], column_bins), settings.epsilon)
        features.append((name, kind, value, column_bins.size))
    score_bins = bins[SCORE_COLUMN]
    score_psi = psi(
        psi_counts(reference[SCORE_COLUMN], score_bins), psi_counts(current[SCORE_COLUMN], score_bins), settings.epsilon
    )
    seconds_psi = time.perf_counter() - started

    sample = _sample(current, settings.evidently_max_rows, settings.seed)
    title = f"{model_name} v{model_version} ({environment}) {window.start:%Y-%m-%d %H:%M} - {window.end:%H:%M} UTC"
    evidently = run_evidently(reference, sample, kinds, settings, title=title)

    feature_drift = []
    for name, kind, value, size in features:
        verdict = evidently.columns.get(name)
        numeric = kind == "numeric"
        feature_drift.append(
            FeatureDrift(
                name=name,
                kind=kind,
                psi=value,
                bins=size,
                evidently_method=verdict.method if verdict else "",
                evidently_score=verdict.score if verdict else None,
                drifted=verdict.drifted if verdict else False,
                reference_missing_share=_missing_share(reference[name]),
                current_missing_share=_missing_share(current[name]),
                reference_median=_median(reference[name]) if numeric else None,
                current_median=_median(current[name]) if numeric else None,
            )
        )
    score_verdict = evidently.columns.get(SCORE_COLUMN)
    reference_scores = reference[SCORE_COLUMN].cast(pl.Float64)
    ranked = sorted((f for f in feature_drift if f.psi >= settings.notable_psi), key=lambda f: (-f.psi, f.name))
    report = DriftReport(
        model_name=model_name,
        model_version=model_version,
        environment=environment,
        window=window,
        generated_at=datetime.now(UTC),
        rows=current.height,
        evidently_rows=sample.height,
        reference=reference_info,
        log=log,
        features=feature_drift,
        score=ScoreDrift(
            psi=score_psi,
            evidently_method=score_verdict.method if score_verdict else "",
            evidently_score=score_verdict.score if score_verdict else None,
            drifted=score_verdict.drifted if score_verdict else False,
            reference_mean=float(reference_scores.mean() or 0.0),  # type: ignore[arg-type]
            current_mean=float(current[SCORE_COLUMN].cast(pl.Float64).mean() or 0.0),  # type: ignore[arg-type]
            threshold=threshold,
            decline_rate_reference=float((reference_scores >= threshold).mean() or 0.0),  # type: ignore[arg-type]
            decline_rate_current=decline_rate_current,
        ),
        drifted_share=(sum(f.drifted for f in feature_drift) / len(feature_drift)) if feature_drift else 0.0,
        most_drifted=[f.name for f in ranked[: settings.top_features]],
        evidently_error=evidently.error,
        seconds_psi=seconds_psi,
        seconds_evidently=evidently.seconds,
    )
    evidently.save_html(html_path, fallback=plain_html(report))
    return report


def plain_html(report: DriftReport) -> str:
    """A minimal HTML page with the PSI table, written when Evidently could not make its report."""
    rows = "".join(
        f"<tr><td>{html.escape(f.name)}</td><td>{f.kind}</td><td>{f.psi:.4f}</td></tr>" for f in report.features
    )
    return (
        "<!doctype html><meta charset=utf-8><title>scoregate drift</title>"
        f"<h1>{html.escape(report.model_name)} v{html.escape(report.model_version)}: drift</h1>"
        f"<p>Evidently failed: {html.escape(report.evidently_error or '')}</p>"
        f"<p>score PSI {report.score.psi:.4f}</p>"
        f"<table><tr><th>feature</th><th>kind</th><th>PSI</th></tr>{rows}</table>"
    )


def feature_kinds(features: Sequence[tuple[str, str]]) -> dict[str, FeatureKind]:
    """`(name, kind)` pairs (FeatureSpec order) as a mapping, checking the kinds."""
    kinds: dict[str, FeatureKind] = {}
    for name, kind in features:
        if kind not in ("numeric", "categorical", "boolean"):
            raise ValueError(f"feature {name}: unknown kind {kind!r}")
        kinds[name] = kind  # type: ignore[assignment]
    return kinds
