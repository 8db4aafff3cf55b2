"""The run folder that the pods of one Argo training run share: what each `scoregate step` leaves for the next.

Frames travel as Parquet, typed records as JSON through their pydantic models, and the scoring model through its own
`save`/`load`, so a later step reads exactly what an earlier one computed. JSON is written with Python's `json` (not
pydantic's `model_dump_json`) because an unpenalised fit has C = inf, which pydantic's JSON writer turns into null.
Every file is written under a temporary name and renamed into place: a pod killed mid-write never leaves a file that
a retried or later step would take for a finished one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from tasks.config import TrainingConfig
from tasks.dataset import PreparedData
from tasks.features import FeaturePipeline
from tasks.ingest import IngestReport
from tasks.lineage import Lineage
from tasks.messages import first_line
from tasks.model import ScoringModel
from tasks.registry import RegisteredModel
from tasks.report import EvaluationReport
from tasks.reporting import RunReports
from tasks.split import Split
from tasks.summary import TrainingSummary
from tasks.train import CandidateFit, FitResult

__all__ = [
    "PRODUCERS",
    "BrokenStepInput",
    "CandidateRecord",
    "EvaluationRecord",
    "FitRecord",
    "MissingStepInput",
    "PreparedRecord",
    "ReportsRecord",
    "RunFolder",
    "SourceRecord",
]

SOURCE: Final = "source.json"
INGESTED: Final = "ingested.parquet"
INGEST_REPORT: Final = "ingest_report.json"
PREPARED: Final = "prepared.json"
BASE: Final = "base.parquet"
ROWS: Final = "rows.parquet"
DESIGN: Final = {"train": "design_train.parquet", "valid": "design_valid.parquet", "test": "design_test.parquet"}
FIT: Final = "fit.json"
MODEL: Final = "scoring_model.json"
EVALUATION: Final = "evaluation.json"
REGISTERED: Final = "registered.json"
BENTO: Final = "bento.json"
SUMMARY: Final = "summary.json"

# Which step writes each file, so that a step run too early can say which one has to run first.
PRODUCERS: Final[dict[str, str]] = {
    SOURCE: "resolve-source",
    INGESTED: "ingest-and-validate",
    INGEST_REPORT: "ingest-and-validate",
    PREPARED: "build-features-and-split",
    BASE: "build-features-and-split",
    ROWS: "build-features-and-split",
    **{name: "build-features-and-split" for name in DESIGN.values()},
    FIT: "train",
    MODEL: "train",
    EVALUATION: "evaluate",
    REGISTERED: "register",
    BENTO: "build-bento",
    SUMMARY: "build-bento",
}
_LABEL: Final = "label"
_SPLIT: Final = "split"

Record = TypeVar("Record", bound=BaseModel)
T = TypeVar("T")


class MissingStepInput(LookupError):
    """A step ran before the step that writes one of its inputs (or in another run's folder)."""


class BrokenStepInput(MissingStepInput):
    """An input is there but cannot be read as what its step writes (truncated, or from another version)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceRecord(_Record):
    """The validated config (so later steps never re-read a file that may have changed) and the data file."""

    config: TrainingConfig
    path: Path
    data_format: str
    rows: int


class PreparedRecord(_Record):
    source: str
    split_method: str
    split_sizes: dict[str, int]
    pipeline: FeaturePipeline


class CandidateRecord(_Record):
    C: float
    coefficients: list[float]
    intercept: float
    validation_score: float
    iterations: int
    warnings: list[str]

    @classmethod
    def of(cls, fit: CandidateFit) -> CandidateRecord:
        return cls(
            C=fit.C,
            coefficients=[float(w) for w in fit.coefficients],
            intercept=fit.intercept,
            validation_score=fit.validation_score,
            iterations=fit.iterations,
            warnings=list(fit.warnings),
        )

    def fit(self) -> CandidateFit:
        return CandidateFit(
            C=self.C,
            coefficients=np.asarray(self.coefficients, dtype=np.float64),
            intercept=self.intercept,
            validation_score=self.validation_score,
            iterations=self.iterations,
            warnings=list(self.warnings),
        )


class FitRecord(_Record):
    best: CandidateRecord
    candidates: list[CandidateRecord]
    selection_metric: str
    warnings: list[str]

    @classmethod
    def of(cls, fit: FitResult) -> FitRecord:
        return cls(
            best=CandidateRecord.of(fit.best),
            candidates=[CandidateRecord.of(candidate) for candidate in fit.candidates],
            selection_metric=fit.selection_metric,
            warnings=list(fit.warnings),
        )

    def result(self) -> FitResult:
        return FitResult(
            best=self.best.fit(),
            candidates=[candidate.fit() for candidate in self.candidates],
            selection_metric=self.selection_metric,
            warnings=list(self.warnings),
        )


class ReportsRecord(_Record):
    folder: Path
    evaluation: Path
    snapshot: Path
    snapshot_sha256: str
    model_card: Path
    scoring_model: Path
    scoring_model_sha256: str
    plots: dict[str, Path]

    @classmethod
    def of(cls, reports: RunReports) -> ReportsRecord:
        return cls(
            folder=reports.folder,
            evaluation=reports.evaluation,
            snapshot=reports.snapshot,
            snapshot_sha256=reports.snapshot_sha256,
            model_card=reports.model_card,
            scoring_model=reports.scoring_model,
            scoring_model_sha256=reports.scoring_model_sha256,
            plots=dict(reports.plots),
        )

    def reports(self) -> RunReports:
        return RunReports(
            folder=self.folder,
            evaluation=self.evaluation,
            snapshot=self.snapshot,
            snapshot_sha256=self.snapshot_sha256,
            model_card=self.model_card,
            scoring_model=self.scoring_model,
            scoring_model_sha256=self.scoring_model_sha256,
            plots=dict(self.plots),
        )


class EvaluationRecord(_Record):
    report: EvaluationReport
    lineage: Lineage
    run_name: str
    reports: ReportsRecord


class RunFolder:
    """The files of one run, read and written on behalf of the step named `step`."""

    def __init__(self, path: Path, step: str) -> None:
        self.path = path
        self.step = step
        self.written: list[Path] = []

    # -- reading -------------------------------------------------------------------------------------------------

    def _input(self, name: str) -> Path:
        path = self.path / name
        if not path.is_file():
            producer = PRODUCERS[name]
            raise MissingStepInput(
                f"step {self.step!r} needs {path}, which step {producer!r} writes, and it is missing: run "
                f"`scoregate step {producer} --run-dir {self.path}` (and the steps before it) first"
            )
        return path

    def _read(self, name: str, read: Callable[[Path], T]) -> T:
        path = self._input(name)
        try:
            return read(path)
        except (ValueError, pl.exceptions.PolarsError) as error:
            # Truncated or foreign content is not a transient error: retrying this step reads the same bytes.
            first = first_line(error)
            raise BrokenStepInput(
                f"step {self.step!r} cannot read {path} (written by step {PRODUCERS[name]!r}): {first}"
            ) from error

    def record(self, name: str, model: type[Record]) -> Record:
        return self._read(name, lambda path: model.model_validate(json.loads(path.read_text(encoding="utf-8"))))

    def frame(self, name: str) -> pl.DataFrame:
        return self._read(name, pl.read_parquet)

    def source(self) -> SourceRecord:
        return self.record(SOURCE, SourceRecord)

    def config(self) -> TrainingConfig:
        return self.source().config

    def ingest_report(self) -> IngestReport:
        return self.record(INGEST_REPORT, IngestReport)

    def prepared_record(self) -> PreparedRecord:
        return self.record(PREPARED, PreparedRecord)

    def prepared(self) -> PreparedData:
        record = self.prepared_record()
        rows = self.frame(ROWS)
        split = rows[_SPLIT].to_numpy()
        matrices = {part: self.frame(name).to_numpy().astype(np.float64, copy=False) for part, name in DESIGN.items()}
        return PreparedData(
            base=self.frame(BASE),
            labels=rows[_LABEL].to_numpy().astype(np.int8),
            split=Split(
                train=np.flatnonzero(split == "train").astype(np.int64),
                valid=np.flatnonzero(split == "valid").astype(np.int64),
                test=np.flatnonzero(split == "test").astype(np.int64),
                method=record.split_method,
            ),
            pipeline=record.pipeline,
            train=matrices["train"],
            valid=matrices["valid"],
            test=matrices["test"],
        )

    def fit(self) -> FitResult:
        return self.record(FIT, FitRecord).result()

    def model(self) -> ScoringModel:
        return self._read(MODEL, ScoringModel.load)

    def evaluation(self) -> EvaluationRecord:
        return self.record(EVALUATION, EvaluationRecord)

    def registered(self) -> RegisteredModel:
        return self.record(REGISTERED, RegisteredModel)

    def summary(self) -> TrainingSummary:
        return self.record(SUMMARY, TrainingSummary)

    # -- writing -------------------------------------------------------------------------------------------------

    @contextmanager
    def _output(self, name: str) -> Iterator[Path]:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / name
        partial = self.path / f".{name}.partial"
        yield partial
        os.replace(partial, final)
        self.written.append(final)

    def write_record(self, name: str, record: BaseModel) -> None:
        with self._output(name) as path:
            path.write_text(json.dumps(record.model_dump(mode="json"), indent=2), encoding="utf-8")

    def write_frame(self, name: str, frame: pl.DataFrame) -> None:
        with self._output(name) as path:
            frame.write_parquet(path)

    def write_prepared(self, prepared: PreparedData, source: str) -> None:
        split = np.full(prepared.base.height, None, dtype=object)
        for part in ("train", "valid", "test"):
            split[getattr(prepared.split, part)] = part
        self.write_frame(BASE, prepared.base)
        self.write_frame(
            ROWS,
            pl.DataFrame(
                [pl.Series(_LABEL, prepared.labels, dtype=pl.Int8), pl.Series(_SPLIT, split, dtype=pl.String)]
            ),
        )
        columns = prepared.pipeline.design_columns()
        for part, name in DESIGN.items():
            matrix = getattr(prepared, part)
            self.write_frame(name, pl.DataFrame(matrix, schema=columns, orient="row"))
        # Written last: its presence says the frames above are complete.
        self.write_record(
            PREPARED,
            PreparedRecord(
                source=source,
                split_method=prepared.split.method,
                split_sizes=prepared.split.sizes(),
                pipeline=prepared.pipeline,
            ),
        )

    def write_fit(self, fit: FitResult) -> None:
        self.write_record(FIT, FitRecord.of(fit))

    def write_model(self, model: ScoringModel) -> None:
        with self._output(MODEL) as path:
            model.save(path)
