from __future__ import annotations

import math
from pathlib import Path

import pytest

from tasks.config import ConfigError, TrainingConfig, load_training_config, parse_duration_ms

CONFIGS = Path(__file__).resolve().parents[2] / "tasks" / "configs"


def test_default_config_loads_with_the_generator_as_source() -> None:
    # given the embedded default
    # when it is loaded
    config = load_training_config(CONFIGS / "card_fraud.yaml")
    # then it trains on the generator with time-split card aggregates
    assert config.data is None
    assert config.spec.aggregates is not None
    assert config.spec.aggregates.output_names()[:2] == ["count_1h", "amount_sum_1h"]


@pytest.mark.parametrize("path", sorted((CONFIGS / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_config_validates_and_resolves_its_data_path(path: Path) -> None:
    # given an example config
    # when it is loaded
    config = load_training_config(path)
    # then its relative data path is resolved next to the file
    assert config.data is not None
    assert config.data.path.is_absolute()
    assert config.data.path.parent == path.parent.resolve()


@pytest.mark.parametrize("path", sorted((CONFIGS / "invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_invalid_config_fails_with_the_message_it_documents(path: Path) -> None:
    # given an invalid config whose first line says which error it must produce
    expected = path.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    # when it is loaded
    with pytest.raises(ConfigError) as raised:
        load_training_config(path)
    # then the message names the file and the problem
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_unpenalised_fit_is_written_as_inf(tmp_path: Path) -> None:
    # given a config with C: inf
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        "target: {column: y, positive: 1}\n"
        "spec: {columns: {x: {type: float}, y: {type: integer}}, features: [{name: x, kind: numeric}]}\n"
        "model: {C: inf}\n",
        encoding="utf-8",
    )
    # when it is loaded
    config = load_training_config(config_file)
    # then C is a one-element grid holding infinity
    assert len(config.model.C) == 1 and math.isinf(config.model.C[0])


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    # given a path with no file
    missing = tmp_path / "nope.yaml"
    # when / then
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_training_config(missing)


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    # given a YAML list instead of a mapping
    config_file = tmp_path / "list.yaml"
    config_file.write_text("- a\n- b\n", encoding="utf-8")
    # when / then
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_training_config(config_file)


@pytest.mark.parametrize(("text", "ms"), [("30s", 30_000), ("15m", 900_000), ("1h", 3_600_000), ("7d", 604_800_000)])
def test_durations_parse(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_ms("1 week")


def test_config_records_are_frozen() -> None:
    # given a loaded config
    config = load_training_config(CONFIGS / "card_fraud.yaml")
    # when / then: changing it in place is refused
    with pytest.raises(Exception, match="frozen"):
        config.seed = 3  # type: ignore[misc]
    assert isinstance(config, TrainingConfig)
