"""Start-up refusals: a bento whose model does not match its recorded digest never serves; bad settings and serve
arguments are refused with a message naming them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bentos.engine import Limits, build_engine
from flows.serve import EXIT_USAGE, resolve_bento_tag, serve
from tasks.package import BentoRecord
from tasks.sample_bento import SampleModel
from tasks.settings import Settings
from tests.bentos.conftest import VENV_BIN, bento_env
from tests.servers import free_port


def test_a_tampered_model_makes_bentoml_serve_exit_with_the_reason(
    bento: BentoRecord, bento_settings: Settings, tmp_path: Path
) -> None:
    # given a copy of the built bento whose model file was changed after packaging
    copy = tmp_path / "bento"
    shutil.copytree(bento.path, copy)
    model_file = copy / "src" / "model" / "scoring_model.json"
    model_file.write_bytes(model_file.read_bytes() + b" ")  # still valid JSON, no longer the packaged bytes
    # when it is served
    port = free_port()
    result = subprocess.run(
        [str(VENV_BIN / "bentoml"), "serve", str(copy), "--host", "127.0.0.1", "--port", str(port)],
        env=bento_env(bento_settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then bentoml serve stops at once with an error that names the digests
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "SHA-256" in result.stderr


def test_serve_wants_exactly_one_of_version_alias_or_bento_tag(bento_settings: Settings) -> None:
    assert serve(settings=bento_settings) == EXIT_USAGE
    assert serve(model_version="3", alias="champion", settings=bento_settings) == EXIT_USAGE
    with pytest.raises(ValueError, match="exactly one"):
        resolve_bento_tag(bento_settings)
    assert resolve_bento_tag(bento_settings, bento_tag="scoregate-fraud:v1") == "scoregate-fraud:v1"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCOREGATE_MAX_RECORDS", "lots", "SCOREGATE_MAX_RECORDS: expected a whole number of at least 1, got 'lots'"),
        ("SCOREGATE_MAX_BODY_BYTES", "0", "SCOREGATE_MAX_BODY_BYTES: expected a whole number of at least 1, got '0'"),
        ("SCOREGATE_PREDICTION_SAMPLE", "half", "SCOREGATE_PREDICTION_SAMPLE: expected a share in [0, 1], got 'half'"),
        ("SCOREGATE_PREDICTION_SAMPLE", "1.5", "SCOREGATE_PREDICTION_SAMPLE must lie in [0, 1], got 1.5"),
        ("SCOREGATE_ONLINE_STORE", "mongodb://x", "SCOREGATE_ONLINE_STORE: expected 'memory' or a redis:// URL"),
    ],
)
def test_a_bad_setting_stops_the_start_naming_the_variable(
    sample: SampleModel, tmp_path: Path, name: str, value: str, message: str
) -> None:
    # given an environment with one setting the scorer cannot use
    environ = {"SCOREGATE_HOME": str(tmp_path), name: value}
    # when the scoring engine is built from it
    # then it refuses, naming the variable, what it expected and what it got
    with pytest.raises(ValueError, match=re.escape(message)):
        build_engine(sample.model, sample.manifest, environ)


def test_the_settings_reach_the_engine(sample: SampleModel, tmp_path: Path) -> None:
    # given limits, a sample share and a log folder in the environment
    environ = {
        "SCOREGATE_HOME": str(tmp_path),
        "SCOREGATE_MAX_RECORDS": "7",
        "SCOREGATE_MAX_BODY_BYTES": "4096",
        "SCOREGATE_PREDICTION_SAMPLE": "0.25",
    }
    # when the engine is built
    engine = build_engine(sample.model, sample.manifest, environ)
    # then it uses them, with the in-process store and the log under the home
    assert engine.limits == Limits(max_body_bytes=4096, max_records=7)
    assert engine.log is not None and engine.log.sample == 0.25 and engine.log.folder == tmp_path / "predictions"
    assert engine.store is not None and engine.store.kind == "in-process"
