"""flows/training_steps.py: `scoregate step`, the training flow one Argo pod at a time, on the real MLflow SQLite store
and `bentoml build`, checked against what the Prefect flow computes on the same generated data."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.argo_export import STEPS
from flows.training_steps import EX_TEMPFAIL, STEP_NAMES, add_step_parser, run_step, step_command
from tasks.settings import Settings
from tests.flows.conftest import TRAINED_ROWS, home_at, small_default_config


@dataclass(frozen=True)
class SteppedRun:
    home: Path
    run_dir: Path
    summary: dict[str, Any]
    written: dict[str, list[str]]
    task_calls: dict[str, list[str]]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scoregate")
    parser.add_argument("--home", type=Path)
    add_step_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def _write_config(path: Path, **updates: object) -> Path:
    path.write_text(yaml.safe_dump(small_default_config(**updates).model_dump(mode="json")), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stepped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SteppedRun]:
    """Every step in order, in a home of its own, on the data and config of the session's Prefect run (`trained`);
    each Prefect task's function is wrapped to record which step called it."""
    import json

    from prefect import Task

    import flows.training

    home = tmp_path_factory.mktemp("stepped-home")
    config = _write_config(home / "config.yaml")
    run_dir = home / "runs" / "scoregate-training-abc12"
    calls: dict[str, list[str]] = {name: [] for name in STEP_NAMES}
    current = [""]
    tasks = [value for value in vars(flows.training).values() if isinstance(value, Task)]
    with home_at(home), pytest.MonkeyPatch.context() as patch:
        for task in tasks:

            def spy(*args: Any, _task: Any = task, _fn: Any = task.fn, **kwargs: Any) -> Any:
                calls[current[0]].append(_task.name)
                return _fn(*args, **kwargs)

            patch.setattr(task, "fn", spy)
        written = {}
        for name in STEP_NAMES:
            current[0] = name
            first = name == STEP_NAMES[0]
            paths = run_step(name, run_dir, config if first else None, TRAINED_ROWS if first else None)
            written[name] = [path.name for path in paths]
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        yield SteppedRun(home=home, run_dir=run_dir, summary=summary, written=written, task_calls=calls)


def test_the_steps_train_what_the_prefect_flow_trains(
    stepped: SteppedRun, trained: tuple[dict[str, Any], Settings]
) -> None:
    # given the summary of the Prefect flow and of the steps run one by one, on the same generated data
    flow_summary, _ = trained
    summary = stepped.summary
    # when their data, model and metrics are compared
    flow_coefficients = {row["feature"]: row["standardized"] for row in flow_summary["coefficients"]}
    step_coefficients = {row["feature"]: row["standardized"] for row in summary["coefficients"]}
    # then the same file was read and the same model came out: coefficients, C, threshold and test metrics
    assert summary["data_hash"] == flow_summary["data_hash"]
    assert summary["feature_spec_hash"] == flow_summary["feature_spec_hash"]
    assert summary["rows"] == flow_summary["rows"]
    assert step_coefficients.keys() == flow_coefficients.keys()
    for feature, weight in flow_coefficients.items():
        assert step_coefficients[feature] == pytest.approx(weight, rel=1e-9, abs=1e-12), feature
    assert summary["regularisation_c"] == flow_summary["regularisation_c"]
    assert (summary["threshold"], summary["threshold_method"]) == pytest.approx(
        (flow_summary["threshold"], flow_summary["threshold_method"])
    )
    for name in ("roc_auc", "pr_auc", "recall"):
        assert summary["metrics"][name] == pytest.approx(flow_summary["metrics"][name], rel=1e-9), name


def test_the_steps_register_a_version_that_carries_its_bento(stepped: SteppedRun) -> None:
    # given the finished steps and their home's MLflow store and BentoML store
    summary = stepped.summary
    with home_at(stepped.home) as settings:
        from tasks.registry import mlflow_client

        client = mlflow_client(settings)
        # when the registry is asked for the version the last step reported
        version = client.get_model_version(summary["model_name"], summary["model_version"])
        run = client.get_run(summary["run_id"])
    # then it is registered from a finished run, with the lineage and the bento's tag and digest
    assert version.status == "READY" and version.run_id == summary["run_id"]
    assert run.info.status == "FINISHED"
    assert version.tags["scoregate.data_hash"] == summary["data_hash"]
    assert version.tags["scoregate.bento_tag"] == summary["bento_tag"]
    assert version.tags["scoregate.bento_digest"] == summary["bento_digest"]
    name, bento_version = summary["bento_tag"].split(":")
    assert name == summary["model_name"] and bento_version.startswith(f"v{summary['model_version']}-")
    assert (settings.bentoml_home / "bentos" / name / bento_version / "bento.yaml").is_file()
    assert Path(summary["reports_dir"], "summary.json").is_file()


def test_each_step_runs_the_prefect_tasks_its_argo_step_names(stepped: SteppedRun) -> None:
    # given the Prefect tasks each step called, recorded while the steps ran
    calls = stepped.task_calls
    # when they are set against the Argo export's STEPS
    declared = {step.name: list(step.prefect_tasks) for step in STEPS}
    # then every step calls exactly the tasks it is exported as running, once each, in order
    assert calls == declared


def test_each_step_writes_its_results_into_the_run_folder(stepped: SteppedRun) -> None:
    # given the files each step reported
    written = stepped.written
    # when the run folder is listed
    present = {path.name for path in stepped.run_dir.iterdir()}
    # then every step wrote something, every file is there, and no partial file was left behind
    assert all(written[name] for name in STEP_NAMES)
    assert {name for names in written.values() for name in names} == present
    assert written["train"] == ["fit.json", "scoring_model.json"]


def test_every_argo_step_is_a_step_the_command_knows() -> None:
    # given the steps the Argo export runs, and the command's parser
    exported = [step.name for step in STEPS]
    # when each exported step's arguments are parsed by the `step` subcommand
    parsed = [_parse(*args).step for args in (["step", name, "--run-dir", "r"] for name in exported)]
    # then the command knows the same steps in the same order
    assert tuple(exported) == STEP_NAMES
    assert parsed == exported


def test_a_step_run_before_its_predecessors_names_the_missing_input(
    stepped: SteppedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given an empty run folder, and one that holds only the first step's output
    empty = tmp_path / "empty"
    empty.mkdir()
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy2(stepped.run_dir / "source.json", started / "source.json")
    with home_at(stepped.home):
        # when later steps run in them
        evaluate = step_command(_parse("step", "evaluate", "--run-dir", str(empty)))
        evaluate_err = capsys.readouterr().err
        train = step_command(_parse("step", "train", "--run-dir", str(started)))
        train_err = capsys.readouterr().err
    # then they exit with the usage code, naming the missing file and the step that writes it
    assert evaluate == 2 and train == 2
    assert f"{empty / 'source.json'}" in evaluate_err and "'resolve-source'" in evaluate_err
    assert f"{started / 'prepared.json'}" in train_err and "'build-features-and-split'" in train_err
    assert "run `scoregate step build-features-and-split" in train_err
    assert list(started.iterdir()) == [started / "source.json"]  # nothing written by the failed step


def test_bad_data_is_a_data_error_and_bad_options_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a config whose data file is empty
    (tmp_path / "transactions.csv").write_text("", encoding="utf-8")
    config = _write_config(tmp_path / "config.yaml")
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["data"] = {"path": "transactions.csv", "format": "csv"}
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    run_dir = tmp_path / "run"
    with home_at(tmp_path / "home"):
        # when the first two steps run, and a later step is given the first step's options
        resolved = step_command(_parse("step", "resolve-source", "--run-dir", str(run_dir), "--config", str(config)))
        capsys.readouterr()
        ingested = step_command(_parse("step", "ingest-and-validate", "--run-dir", str(run_dir)))
        ingest_err = capsys.readouterr().err
        misused = step_command(_parse("step", "train", "--run-dir", str(run_dir), "--rows", "10"))
        misused_err = capsys.readouterr().err
    # then the source resolves, the empty file is a data error (3, not retried) naming the file, and the option
    # on the wrong step is a usage error
    assert resolved == 0
    assert ingested == 3
    assert f"{tmp_path / 'transactions.csv'}: file is empty" in ingest_err
    assert misused == 2 and "--config and --rows go to the first step (resolve-source)" in misused_err


def test_an_io_error_exits_with_the_code_argo_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given a run folder path that is taken by a regular file, so nothing can be written under it
    blocked = tmp_path / "run"
    blocked.write_text("not a folder", encoding="utf-8")
    with home_at(tmp_path / "home"):
        # when the first step tries to write its output there
        code = step_command(_parse("step", "resolve-source", "--run-dir", str(blocked), "--rows", "500"))
    # then the step exits with EX_TEMPFAIL, the code on which the Argo template retries
    assert code == EX_TEMPFAIL == 75
    assert "I/O error (worth retrying)" in capsys.readouterr().err


def test_build_bento_keeps_the_version_for_a_retry_and_discards_it_after_the_last(
    stepped: SteppedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a copy of the finished run registered once more, and a bentofile that cannot be read (an I/O error)
    import tasks.package

    run_dir = tmp_path / "run"
    shutil.copytree(stepped.run_dir, run_dir)
    (run_dir / "registered.json").unlink()
    monkeypatch.setattr(tasks.package, "BENTOFILE", tmp_path / "missing" / "bentofile.yaml")
    retries = next(step.retries for step in STEPS if step.name == "build-bento")
    with home_at(stepped.home) as settings:
        run_step("register", run_dir)
        from flows.run_folder import RunFolder
        from tasks.registry import mlflow_client

        registered = RunFolder(run_dir, "test").registered()
        client = mlflow_client(settings)
        name = registered.model_name
        # when build-bento fails on its first attempt, then on its last
        first = step_command(_parse("step", "build-bento", "--run-dir", str(run_dir), "--attempt", "0"))
        after_first = [str(v.version) for v in client.search_model_versions(f"name='{name}'")]
        last = step_command(_parse("step", "build-bento", "--run-dir", str(run_dir), "--attempt", str(retries)))
        after_last = [str(v.version) for v in client.search_model_versions(f"name='{name}'")]
    # then both exit 75; the version survives the attempt that Argo retries and is gone after the last one
    assert (first, last) == (EX_TEMPFAIL, EX_TEMPFAIL)
    assert registered.model_version in after_first
    assert registered.model_version not in after_last
    assert stepped.summary["model_version"] in after_last
    assert "bentofile.yaml" in capsys.readouterr().err
