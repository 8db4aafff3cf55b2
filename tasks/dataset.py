"""From a validated raw frame to the three design matrices: labels, features, split, fitted pipeline.

Aggregates are computed over the whole frame (each row sees only strictly earlier rows, so no split leaks into
another), then the frame is split, and the FeaturePipeline is fitted on the training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandera.polars as pa
import polars as pl

from tasks.config import TrainingConfig
from tasks.features import FeaturePipeline, add_aggregates, add_derived_columns, fit_feature_pipeline
from tasks.ingest import target_labels
from tasks.schemas import feature_schema
from tasks.split import Split, split_by_time, split_stratified

__all__ = ["FeatureValidationError", "PreparedData", "design_matrix", "prepare_dataset"]

FloatArray = npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int8]


class FeatureValidationError(ValueError):
    """The feature schema rejected the design matrix (NaN, infinity or a wrong type in a model input)."""


@dataclass(frozen=True)
class PreparedData:
    base: pl.DataFrame
    labels: LabelArray
    split: Split
    pipeline: FeaturePipeline
    train: FloatArray
    valid: FloatArray
    test: FloatArray


def design_matrix(pipeline: FeaturePipeline, base: pl.DataFrame, *, split_name: str) -> FloatArray:
    """Transform and check one split; the feature schema guards the model from NaN and infinity."""
    design = pipeline.design_from_base(base)
    try:
        feature_schema(design.columns).validate(design, lazy=True)
    except pa.errors.SchemaErrors as error:
        first = error.failure_cases.row(0, named=True)
        raise FeatureValidationError(
            f"feature {first['column']!r} in the {split_name} split: {first['check']} "
            f"(got {first['failure_case']} at row {first['index']})"
        ) from error
    matrix: FloatArray = design.to_numpy().astype(np.float64, copy=False)
    return matrix


def prepare_dataset(frame: pl.DataFrame, config: TrainingConfig, *, source: str) -> PreparedData:
    spec = config.spec
    labels: LabelArray = target_labels(frame, config.target, source).to_numpy().astype(np.int8)
    base = add_aggregates(add_derived_columns(frame, spec), spec)
    if spec.timestamp is not None:
        split = split_by_time(base[spec.timestamp.column], config.split)
    else:
        split = split_stratified(labels, config.split, config.seed)
    split.check(labels)
    train_base = base[split.train]
    pipeline = fit_feature_pipeline(train_base, spec)
    return PreparedData(
        base=base,
        labels=labels,
        split=split,
        pipeline=pipeline,
        train=design_matrix(pipeline, train_base, split_name="train"),
        valid=design_matrix(pipeline, base[split.valid], split_name="valid"),
        test=design_matrix(pipeline, base[split.test], split_name="test"),
    )
