"""`scoregate step NAME --run-dir DIR`: one stage of the training flow, as one pod of the Argo workflow runs it.

The steps are those of `flows/argo_export.py`'s STEPS, and each calls the functions of the Prefect tasks that
`flows/training.py` chains (`<task>.fn`: the same code, without a Prefect server in every pod) plus the glue that
module shares, so a run through Argo computes what a Prefect run computes. A step reads what the earlier steps left in
the run folder and writes its own results there (see `flows/run_folder.py`).

Exit codes are the CLI's (see `flows/cli.py`), plus 75 (EX_TEMPFAIL) for an I/O error worth retrying: Argo retries a
step on 75 only (`RETRY_WHEN` in `flows/argo_export.py`), never on bad data or a bad config, which fail the same way
every time. A step run before its predecessors exits 2 and names the missing file and the step that writes it.

Only the standard library is imported here at start-up, so the CLI's `--help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tasks.messages import first_line

if TYPE_CHECKING:
    from flows.run_folder import RunFolder
    from tasks.settings import Settings

__all__ = [
    "EX_TEMPFAIL",
    "STEP_NAMES",
    "StepUsageError",
    "add_step_parser",
    "run_step",
    "step_command",
    "step_exit_code",
]

EX_TEMPFAIL: Final = 75  # sysexits.h: a temporary failure; the caller is invited to retry
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class StepUsageError(ValueError):
    """The step was asked for something it does not do (an unknown name, or options only the first step takes)."""


@dataclass(frozen=True)
class _StepRun:
    folder: RunFolder
    settings: Settings
    config_path: Path | None
    rows: int | None
    attempt: int | None


def _resolve_source(run: _StepRun) -> None:
    from flows import training
    from flows.run_folder import SOURCE, SourceRecord
    from tasks.config import load_training_config

    rows = training.DEFAULT_ROWS if run.rows is None else run.rows
    if rows < 1:
        raise StepUsageError(f"--rows must be at least 1, got {rows}")
    config = load_training_config(run.config_path) if run.config_path is not None else training.load_default_config()
    path, data_format = training.resolve_source_task.fn(config, run.settings, rows)
    run.folder.write_record(SOURCE, SourceRecord(config=config, path=path, data_format=data_format, rows=rows))


def _ingest_and_validate(run: _StepRun) -> None:
    from flows import training
    from flows.run_folder import INGEST_REPORT, INGESTED

    source = run.folder.source()
    config = source.config
    ingested = training.ingest_task.fn(
        source.path,
        source.data_format,
        config.spec,
        config.target,
        config.validation,
        run.settings.quarantine_dir / config.model_name,
    )
    run.folder.write_frame(INGESTED, ingested.frame)
    run.folder.write_record(INGEST_REPORT, ingested.report)


def _build_features_and_split(run: _StepRun) -> None:
    from flows import training
    from flows.run_folder import INGESTED

    source = run.folder.source()
    frame = run.folder.frame(INGESTED)
    prepared = training.prepare_task.fn(frame, source.config, source=str(source.path))
    run.folder.write_prepared(prepared, source=str(source.path))


def _train(run: _StepRun) -> None:
    from flows import training

    config = run.folder.config()
    prepared = run.folder.prepared()
    split = prepared.split
    fit = training.fit_task.fn(
        prepared.train, prepared.labels[split.train], prepared.valid, prepared.labels[split.valid], config.model
    )
    model = training.model_task.fn(
        prepared.pipeline, fit, prepared.valid, prepared.labels[split.valid], config.threshold, config.model_name
    )
    run.folder.write_fit(fit)
    run.folder.write_model(model)


def _evaluate(run: _StepRun) -> None:
    from flows import training
    from flows.run_folder import EVALUATION, EvaluationRecord, ReportsRecord
    from tasks.features import feature_spec_hash
    from tasks.lineage import collect_lineage

    config = run.folder.config()
    ingest_report = run.folder.ingest_report()
    prepared = run.folder.prepared()
    model = run.folder.model()
    report = training.evaluate_task.fn(model, prepared, config)
    lineage = collect_lineage(ingest_report.data_hash, feature_spec_hash(config.spec))
    run_name = training.training_run_name(config)
    reports = training.reports_task.fn(
        run.settings.reports_dir / run_name, model, prepared, report, ingest_report, lineage
    )
    run.folder.write_record(
        EVALUATION,
        EvaluationRecord(report=report, lineage=lineage, run_name=run_name, reports=ReportsRecord.of(reports)),
    )


def _register(run: _StepRun) -> None:
    from flows import training
    from flows.run_folder import REGISTERED
    from tasks.reporting import training_artifacts

    config = run.folder.config()
    ingest_report = run.folder.ingest_report()
    prepared = run.folder.prepared()
    fit = run.folder.fit()
    model = run.folder.model()
    evaluation = run.folder.evaluation()
    artifacts = training_artifacts(
        config,
        prepared,
        fit,
        model,
        evaluation.report,
        ingest_report,
        evaluation.lineage,
        evaluation.reports.reports(),
        evaluation.run_name,
    )
    registered = training.register_task.fn(run.settings, config.model_name, artifacts)
    run.folder.write_record(REGISTERED, registered)


def _build_bento(run: _StepRun) -> None:
    from flows import training
    from flows.argo_export import STEPS
    from flows.run_folder import BENTO, SUMMARY
    from tasks.registry import discard_version

    config = run.folder.config()
    ingest_report = run.folder.ingest_report()
    prepared = run.folder.prepared_record()
    fit = run.folder.fit()
    model = run.folder.model()
    evaluation = run.folder.evaluation()
    registered = run.folder.registered()
    reports = evaluation.reports.reports()
    try:
        bento = training.package_task.fn(
            run.settings,
            reports.scoring_model,
            training.bento_manifest(
                config, registered, reports, evaluation.lineage, model=model, train_design=run.folder.prepared().train
            ),
            name=config.model_name,
            version=training.bento_version(registered, reports),
        )
        training.record_bento_task.fn(run.settings, registered, bento.tag, bento.digest)
    except BaseException as error:
        # Argo retries this pod on an I/O error; the retry needs the version, so it goes only when no retry is left
        # (or when the step runs outside Argo, without --attempt, like the Prefect flow after its own retries).
        retries = next(step.retries for step in STEPS if step.name == "build-bento")
        retried = isinstance(error, OSError) and run.attempt is not None and run.attempt < retries
        if not retried:
            discard_version(run.settings, registered, f"packaging failed: {error}")
        raise
    warnings = [*fit.warnings, *training.save_drift_reference(run.settings, registered, reports)]
    summary = training.training_summary(
        config,
        registered=registered,
        bento=bento,
        report=evaluation.report,
        model=model,
        ingest=ingest_report,
        split_sizes=prepared.split_sizes,
        lineage=evaluation.lineage,
        reports=reports,
        warnings=warnings,
    )
    training.write_summary(summary, reports)
    run.folder.write_record(BENTO, bento)
    run.folder.write_record(SUMMARY, summary)


_STEPS: Final[dict[str, Callable[[_StepRun], None]]] = {
    "resolve-source": _resolve_source,
    "ingest-and-validate": _ingest_and_validate,
    "build-features-and-split": _build_features_and_split,
    "train": _train,
    "evaluate": _evaluate,
    "register": _register,
    "build-bento": _build_bento,
}
STEP_NAMES: Final[tuple[str, ...]] = tuple(_STEPS)
FIRST_STEP: Final = STEP_NAMES[0]


def run_step(
    name: str,
    run_dir: Path,
    config_path: Path | None = None,
    rows: int | None = None,
    *,
    attempt: int | None = None,
) -> list[Path]:
    """Run one step in `run_dir` (under the home of `SCOREGATE_HOME`) and return the files it wrote there.

    `config_path` and `rows` belong to the first step only: later steps read the config it recorded, so every step
    of a run trains on the same settings even if the file changes meanwhile. `attempt` is Argo's retry number.
    """
    from flows.run_folder import RunFolder
    from tasks.settings import Settings

    if name not in _STEPS:
        raise StepUsageError(f"unknown step {name!r}; the steps are, in order: {' -> '.join(STEP_NAMES)}")
    if name != FIRST_STEP and (config_path is not None or rows is not None):
        raise StepUsageError(f"--config and --rows go to the first step ({FIRST_STEP}), not to {name}")
    settings = Settings.from_env()
    settings.ensure_dirs()
    folder = RunFolder(run_dir.resolve(), name)
    _STEPS[name](_StepRun(folder=folder, settings=settings, config_path=config_path, rows=rows, attempt=attempt))
    return list(folder.written)


def add_step_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `step` subcommand, added to the CLI's subcommands."""
    parser = commands.add_parser(
        "step",
        help="run one step of the training flow in a shared run folder (what each Argo Workflows pod runs)",
        description=f"Steps, in order: {' -> '.join(STEP_NAMES)}. Exit 75 means an I/O error worth retrying.",
    )
    parser.add_argument("step", choices=STEP_NAMES, metavar="STEP", help="the step to run")
    parser.add_argument("--run-dir", type=Path, required=True, help="the folder the steps of one run share")
    parser.add_argument("--config", type=Path, help=f"a YAML training config ({FIRST_STEP} only)")
    parser.add_argument("--rows", type=int, help=f"rows to generate when the config names no data ({FIRST_STEP} only)")
    parser.add_argument("--attempt", type=int, help="Argo's retry number of this step ({{retries}}), from 0")
    return parser


def step_exit_code(error: BaseException) -> int:
    """Print one line for `error` and return the exit code: 75 only for an I/O error that a retry may cure."""
    from flows.run_folder import MissingStepInput
    from tasks.config import ConfigError

    message = first_line(error)
    if isinstance(error, MissingStepInput | StepUsageError | ConfigError):
        print(f"scoregate: {message}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(error, OSError):
        print(f"scoregate: I/O error (worth retrying): {type(error).__name__}: {message}", file=sys.stderr)
        return EX_TEMPFAIL
    from flows.cli import _report_failure

    return _report_failure(error)


def step_command(args: argparse.Namespace) -> int:
    """`scoregate step`: run the step, print what it wrote, and map a failure to an exit code."""
    home: Path | None = getattr(args, "home", None)
    if home is not None:
        os.environ["SCOREGATE_HOME"] = str(home.resolve())
    from tasks.settings import Settings, quiet_environment, quiet_library_logs

    quiet_environment(Settings.from_env())
    if not getattr(args, "verbose", False):
        quiet_library_logs()
    try:
        written = run_step(args.step, args.run_dir, args.config, args.rows, attempt=args.attempt)
    except BaseException as error:  # noqa: BLE001 - every failure becomes a one-line message and an exit code
        return step_exit_code(error)
    print(f"step {args.step}: wrote {', '.join(path.name for path in written)} in {args.run_dir}")
    return EXIT_OK
