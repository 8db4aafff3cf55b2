"""The training configuration a data scientist writes (`scoregate train --config my.yaml`).

Every record is frozen and rejects unknown keys, so a typo in a YAML file is an error that names the key rather than
a silently ignored setting. The JSON Schema of `TrainingConfig` is published in `tasks/schemas/` for editors and
reviewers.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AggregateSpec",
    "ColumnSpec",
    "ConfigError",
    "DataSource",
    "DerivedSpec",
    "FeatureSpec",
    "FeatureItem",
    "ModelSpec",
    "SplitSpec",
    "TargetSpec",
    "ThresholdSpec",
    "TimestampSpec",
    "TrainingConfig",
    "ValidationSpec",
    "load_training_config",
    "parse_duration_ms",
]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """'90s', '30m', '1h', '7d' -> milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 30m, 1h or 7d, got {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


ColumnType = Literal["float", "integer", "string", "boolean", "datetime"]


class ColumnSpec(_Frozen):
    """One raw input column: its type and the values it may hold. This is the raw Pandera schema's source."""

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    allowed: list[str] | None = Field(default=None, description="Allowed values of a string column.")


class DataSource(_Frozen):
    path: Path
    format: Literal["auto", "csv", "parquet"] = "auto"


class TargetSpec(_Frozen):
    column: str
    positive: str | int | bool = Field(description="The value of the target column that means 'risky' (1).")


class TimestampSpec(_Frozen):
    column: str
    format: str | None = Field(default=None, description="strftime format when the column arrives as text.")


class DerivedSpec(_Frozen):
    """A row-wise feature computed from raw columns, the same way in training and serving."""

    name: str
    op: Literal["not_equal", "equal", "hour", "day_of_week"]
    columns: list[str] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _arity(self) -> DerivedSpec:
        wanted = 2 if self.op in ("not_equal", "equal") else 1
        if len(self.columns) != wanted:
            raise ValueError(f"op {self.op} takes {wanted} column(s), got {len(self.columns)}")
        return self


class AggregateSpec(_Frozen):
    """Per-entity point-in-time aggregates: each row sees only the entity's strictly earlier rows."""

    amount_column: str
    windows: list[str] = Field(default_factory=lambda: ["1h", "24h", "7d"], min_length=1)
    time_since_previous: bool = True
    amount_to_mean: bool = True
    no_history_hours: float = Field(
        default=720.0, gt=0, description="hours_since_previous for an entity's first row (no history)."
    )

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, value: list[str]) -> list[str]:
        for window in value:
            parse_duration_ms(window)
        if len(set(value)) != len(value):
            raise ValueError("windows must be distinct")
        return value

    def output_names(self) -> list[str]:
        names: list[str] = []
        for window in self.windows:
            names += [f"count_{window}", f"amount_sum_{window}"]
        if self.time_since_previous:
            names.append("hours_since_previous")
        if self.amount_to_mean:
            names.append("amount_to_mean")
        return names


Transform = Literal["log", "clip", "standardise", "bins"]


class FeatureItem(_Frozen):
    """One model feature built from a raw column, a derived column or an aggregate."""

    name: str
    kind: Literal["numeric", "categorical", "boolean"]
    transforms: list[Transform] = Field(default_factory=list)
    clip_quantiles: tuple[float, float] = (0.001, 0.999)
    bins: int | list[float] | None = Field(
        default=None, description="Quantile bin count fitted on training, or fixed inner edges."
    )
    max_levels: int = Field(default=30, ge=1, description="Categorical: most frequent levels kept.")
    min_level_count: int = Field(default=20, ge=1, description="Categorical: rarer levels pool into __other__.")

    @model_validator(mode="after")
    def _coherent(self) -> FeatureItem:
        if self.kind != "numeric" and self.transforms:
            raise ValueError(f"feature {self.name}: transforms apply to numeric features only")
        if "bins" in self.transforms:
            if self.bins is None:
                raise ValueError(f"feature {self.name}: transform 'bins' needs `bins` (a count or edges)")
            if "standardise" in self.transforms:
                raise ValueError(f"feature {self.name}: 'bins' and 'standardise' exclude each other")
        if len(set(self.transforms)) != len(self.transforms):
            raise ValueError(f"feature {self.name}: a transform is listed twice")
        low, high = self.clip_quantiles
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"feature {self.name}: clip_quantiles must satisfy 0 <= low < high <= 1")
        return self


class FeatureSpec(_Frozen):
    """The declarative feature definition that is fitted into a FeaturePipeline."""

    columns: dict[str, ColumnSpec]
    id_column: str | None = None
    entity_column: str | None = None
    timestamp: TimestampSpec | None = None
    derived: list[DerivedSpec] = Field(default_factory=list)
    aggregates: AggregateSpec | None = None
    features: list[FeatureItem] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> FeatureSpec:
        known = set(self.columns)
        for key in (self.id_column, self.entity_column, self.timestamp.column if self.timestamp else None):
            if key is not None and key not in known:
                raise ValueError(f"column {key!r} is named but not declared under `columns`")
        for derived in self.derived:
            missing = [c for c in derived.columns if c not in known]
            if missing:
                raise ValueError(f"derived {derived.name}: unknown column(s) {missing}")
            known.add(derived.name)
        if self.aggregates is not None:
            if self.entity_column is None or self.timestamp is None:
                raise ValueError("aggregates need both `entity_column` and `timestamp`")
            if self.aggregates.amount_column not in self.columns:
                raise ValueError(f"aggregates.amount_column {self.aggregates.amount_column!r} is not a column")
            known.update(self.aggregates.output_names())
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        for feature in self.features:
            if feature.name not in known:
                raise ValueError(f"feature {feature.name!r} is neither a column, a derived column nor an aggregate")
        return self


class ModelSpec(_Frozen):
    C: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    class_weight: Literal["balanced"] | dict[int, float] | None = None
    max_iter: int = Field(default=500, ge=10)
    tol: float = Field(default=1e-5, gt=0, description="lbfgs stopping tolerance on the projected gradient.")
    selection_metric: Literal["log_loss", "roc_auc", "pr_auc"] = "log_loss"

    @field_validator("C", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @field_validator("C")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not (c > 0) or math.isnan(c) for c in value):
            raise ValueError("every C must be > 0 (use inf for an unpenalised fit)")
        return value


class ThresholdSpec(_Frozen):
    method: Literal["fixed", "max_f1", "target_precision", "target_recall", "min_expected_cost"] = "max_f1"
    value: float | None = Field(default=None, ge=0.0, le=1.0, description="fixed threshold")
    target: float | None = Field(default=None, gt=0.0, le=1.0, description="target precision or recall")
    cost_false_positive: float | None = Field(default=None, ge=0.0)
    cost_false_negative: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _needs(self) -> ThresholdSpec:
        if self.method == "fixed" and self.value is None:
            raise ValueError("threshold method 'fixed' needs `value`")
        if self.method in ("target_precision", "target_recall") and self.target is None:
            raise ValueError(f"threshold method {self.method!r} needs `target`")
        if self.method == "min_expected_cost" and (
            self.cost_false_positive is None or self.cost_false_negative is None
        ):
            raise ValueError("threshold method 'min_expected_cost' needs cost_false_positive and cost_false_negative")
        return self


class SplitSpec(_Frozen):
    train: float = Field(default=0.6, gt=0, lt=1)
    valid: float = Field(default=0.2, gt=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum(self) -> SplitSpec:
        if abs(self.train + self.valid + self.test - 1.0) > 1e-9:
            raise ValueError("split shares must add up to 1")
        return self


class ValidationSpec(_Frozen):
    max_reject_share: float = Field(default=0.01, ge=0.0, le=1.0)
    extra_columns: Literal["reject", "ignore"] = "reject"


class EvaluationSpec(_Frozen):
    segments: list[str] = Field(default_factory=list)
    fairness_segment: str | None = Field(
        default=None, description="Column whose values the promotion policy's fairness gap (TPR) compares."
    )
    fairness_min_positives: int = Field(
        default=50,
        ge=1,
        description="Segment values with fewer positives on the test split are left out of the fairness gap: with a "
        "few dozen positives a TPR's sampling error alone is about 0.07.",
    )
    bootstrap_resamples: int = Field(default=200, ge=0, le=5000)


class TrainingConfig(_Frozen):
    """A whole training run: data, target, features, model, threshold, split, validation and evaluation."""

    model_name: str = Field(default="scoregate-fraud", pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    data: DataSource | None = Field(default=None, description="Omitted: the built-in generator.")
    target: TargetSpec
    spec: FeatureSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    threshold: ThresholdSpec = Field(default_factory=ThresholdSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    seed: int = 7

    @model_validator(mode="after")
    def _target_and_segments(self) -> TrainingConfig:
        if self.target.column not in self.spec.columns:
            raise ValueError(f"target column {self.target.column!r} is not declared under spec.columns")
        if any(f.name == self.target.column for f in self.spec.features):
            raise ValueError(f"target column {self.target.column!r} cannot also be a feature")
        fairness = [self.evaluation.fairness_segment] if self.evaluation.fairness_segment else []
        for segment in [*self.evaluation.segments, *fairness]:
            if segment not in self.spec.columns:
                raise ValueError(f"segment column {segment!r} is not declared under spec.columns")
        return self


PathLike = Annotated[Path, "config path"]


def load_training_config(path: PathLike) -> TrainingConfig:
    """Read and validate a YAML config; a relative data path is taken relative to the config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = TrainingConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ConfigError(f"{path}: {location}: {message}{more}") from error
    if config.data is not None and not config.data.path.is_absolute():
        resolved = (Path(path).parent / config.data.path).resolve()
        config = config.model_copy(update={"data": config.data.model_copy(update={"path": resolved})})
    return config
