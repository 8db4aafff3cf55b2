"""The CLI as a user meets it: instant help, one-line errors with exit codes, nothing registered on failure."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tasks.generator import generate_transactions
from tests.flows.conftest import CONFIGS, PROJECT_ROOT, run_cli


def test_help_answers_at_once_without_heavy_imports() -> None:
    # given a fresh interpreter
    started = time.perf_counter()
    # when --help runs
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    # then it lists the commands and imported none of the heavy libraries
    assert result.returncode == 0
    assert "demo" in result.stdout and "train" in result.stdout and "Exit codes" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {"prefect", "mlflow", "polars", "sklearn", "bentoml", "pandas"} & imported
    assert elapsed < 5


def _config_for(tmp_path: Path, data: Path, text: str | None = None) -> Path:
    source = (CONFIGS / "examples" / "card_fraud_parquet.yaml").read_text(encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text((text or source).replace("transactions.parquet", str(data)), encoding="utf-8")
    return config


def _registered_versions(home: Path) -> int:
    if not (home / "mlflow.db").exists():
        return 0
    from tasks.registry import mlflow_client
    from tasks.settings import Settings

    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return len(mlflow_client(settings).search_model_versions(""))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: f.drop("amount"), r"tx\.parquet: missing column\(s\) amount"),
        (lambda f: f.with_columns(pl.lit("x").alias("surprise")), r"unexpected column\(s\) surprise"),
        (lambda f: f.with_columns(pl.lit(0).alias("is_fraud")), "has only one class"),
        (lambda f: f.with_columns((pl.col("is_fraud") + pl.int_range(pl.len()) % 3).alias("is_fraud")), "two classes"),
        (lambda f: f.with_columns(pl.lit(None, dtype=pl.Boolean).alias("device_seen_before")), "entirely null"),
        (lambda f: f.with_columns(-pl.col("amount")), r"rows rejected \(100\.00%\)"),
    ],
    ids=["missing-column", "unexpected-column", "one-class", "three-classes", "all-null-feature", "rejects"],
)
def test_bad_data_exits_3_with_one_line_and_registers_nothing(
    scoregate_home: Path, tmp_path: Path, damage: object, expected: str
) -> None:
    # given a damaged input file
    data = tmp_path / "tx.parquet"
    damage(generate_transactions(3_000, seed=2)).write_parquet(data)  # type: ignore[operator]
    config = _config_for(tmp_path, data)
    # when training on it
    code, _, err = run_cli("train", "--config", str(config))
    # then: a data error, one line naming the file and problem, and no registered version
    assert code == 3
    lines = [line for line in err.splitlines() if line.startswith("scoregate:")]
    assert len(lines) == 1 and str(data) in lines[0]
    assert re.search(expected, lines[0])
    assert _registered_versions(scoregate_home) == 0


def test_missing_file_exits_3(scoregate_home: Path, tmp_path: Path) -> None:
    config = _config_for(tmp_path, tmp_path / "gone.parquet")
    code, _, err = run_cli("train", "--config", str(config))
    assert code == 3
    assert "gone.parquet: file not found" in err


def test_invalid_config_exits_2_and_names_the_key(scoregate_home: Path) -> None:
    code, _, err = run_cli("train", "--config", str(CONFIGS / "invalid" / "unknown_key.yaml"))
    assert code == 2
    assert "threshold.methd: unknown key" in err


@pytest.mark.parametrize("example", sorted((CONFIGS / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_config_trains_end_to_end(scoregate_home: Path, tmp_path: Path, example: Path) -> None:
    # given the example's data file, written where the example expects it
    text = example.read_text(encoding="utf-8")
    config = tmp_path / example.name
    config.write_text(text, encoding="utf-8")
    if "applications.csv" in text:
        _write_applications(tmp_path / "applications.csv")
    else:
        frame = generate_transactions(8_000, seed=5)
        frame.write_parquet(tmp_path / "transactions.parquet")
        frame.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%d %H:%M:%S%.f")).write_csv(
            tmp_path / "transactions.csv"
        )
    # when trained through the CLI with --json
    code, out, err = run_cli("train", "--config", str(config), "--json")
    # then a version is registered with a bento and honest metrics
    assert code == 0, err
    import json

    summary = json.loads(out)
    assert summary["model_version"] == "1"
    assert summary["bento_tag"].startswith(summary["model_name"] + ":")
    assert 0.5 < summary["metrics"]["roc_auc"]["value"] <= 1.0
    assert {"run_id", "threshold", "coefficients", "rows", "data_hash", "feature_spec_hash"} <= set(summary)
    assert _registered_versions(scoregate_home) == 1


def _write_applications(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(9)
    n = 3_000
    income = rng.lognormal(10.5, 0.5, n)
    debt = rng.gamma(2.0, 0.2, n)
    employment = rng.choice(["salaried", "self_employed", "unemployed", "retired"], n, p=[0.6, 0.2, 0.1, 0.1])
    mortgage = rng.random(n) < 0.4
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.02] = np.nan
    logit = -1.5 - 0.8 * (np.log(income) - 10.5) + 2.0 * (debt - 0.4) + 1.2 * (employment == "unemployed")
    defaulted = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    pl.DataFrame(
        {
            "application_id": [f"a{i}" for i in range(n)],
            "income": income,
            "debt_ratio": debt,
            "employment": employment,
            "has_mortgage": mortgage,
            "age": pl.Series(age).fill_nan(None).cast(pl.Int64),
            "defaulted": defaulted,
        }
    ).write_csv(path)


def test_serve_an_unknown_version_exits_5_and_names_it(scoregate_home: Path) -> None:
    # given an empty registry
    # when a version that was never registered is served
    code, _, err = run_cli("serve", "--model-version", "41")
    # then nothing is started and the message names the model and the version
    assert code == 5
    assert "scoregate-fraud" in err and "41" in err


def test_serve_needs_exactly_one_of_version_alias_or_bento(scoregate_home: Path) -> None:
    # given a command line naming both a version and an alias
    # when it is parsed
    with pytest.raises(SystemExit) as exited:
        run_cli("serve", "--model-version", "1", "--alias", "production")
    # then argparse refuses it as a usage error
    assert exited.value.code == 2


def test_monitor_without_a_champion_exits_2_and_says_so(scoregate_home: Path) -> None:
    # given a home where no version holds the production alias
    # when the drift watch runs
    code, _, err = run_cli("monitor", "--env", "production", "--dry-run")
    # then it refuses with a usage error that names the missing alias
    assert code == 2
    assert "production" in err
