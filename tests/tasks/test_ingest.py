from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tasks.config import ValidationSpec, load_training_config
from tasks.generator import generate_transactions
from tasks.ingest import IngestError, ingest_file, read_raw_file, target_labels

CONFIG = load_training_config(Path(__file__).resolve().parents[2] / "tasks" / "configs" / "card_fraud.yaml")


def _ingest(path: Path, tmp_path: Path, max_reject_share: float = 0.01) -> object:
    return ingest_file(
        path,
        "auto",
        CONFIG.spec,
        CONFIG.target,
        ValidationSpec(max_reject_share=max_reject_share),
        tmp_path / "quarantine",
    )


def _csv(tmp_path: Path, frame: pl.DataFrame, name: str = "tx.csv") -> Path:
    path = tmp_path / name
    frame.write_csv(path)
    return path


@pytest.fixture
def raw() -> pl.DataFrame:
    return generate_transactions(2_000, seed=4)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"absent\.csv: file not found"):
        read_raw_file(tmp_path / "absent.csv")


def test_empty_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(IngestError, match=r"empty\.csv: file is empty"):
        read_raw_file(tmp_path / "empty.csv")


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(IngestError, match="no data rows"):
        read_raw_file(tmp_path / "header.csv")


def test_unreadable_parquet_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(IngestError, match=r"broken\.parquet: cannot read as parquet"):
        read_raw_file(tmp_path / "broken.parquet")


def test_missing_columns_are_listed(tmp_path: Path, raw: pl.DataFrame) -> None:
    path = _csv(tmp_path, raw.drop("amount", "channel"))
    with pytest.raises(IngestError, match=r"tx\.csv: missing column\(s\) amount, channel"):
        _ingest(path, tmp_path)


def test_unexpected_columns_are_rejected(tmp_path: Path, raw: pl.DataFrame) -> None:
    path = _csv(tmp_path, raw.with_columns(pl.lit(1).alias("mystery")))
    with pytest.raises(IngestError, match=r"unexpected column\(s\) mystery"):
        _ingest(path, tmp_path)


def test_bad_values_go_to_quarantine_with_their_reasons(tmp_path: Path, raw: pl.DataFrame) -> None:
    # given a CSV with a non-number amount, a negative amount, an unknown channel and a duplicated id
    text = raw.with_columns(pl.col("amount").cast(pl.String))
    text = text.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("abc")).otherwise(pl.col("amount")).alias("amount"),
    )
    text = text.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("-4.0")).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("teleport")).otherwise(pl.col("channel")).alias("channel"),
        pl.when(pl.int_range(pl.len()) == 9)
        .then(pl.col("transaction_id").first())
        .otherwise(pl.col("transaction_id"))
        .alias("transaction_id"),
    )
    path = _csv(tmp_path, text)
    # when ingested
    result = _ingest(path, tmp_path)
    # then the four rows are set aside with reasons naming the field and the expectation, the rest kept
    report = result.report  # type: ignore[attr-defined]
    assert report.rows_read == 2_000
    assert report.rows_rejected == 4
    assert result.frame.height == 1_996  # type: ignore[attr-defined]
    quarantine = pl.read_parquet(report.quarantine_path)
    reasons = dict(zip(quarantine["_row"].to_list(), quarantine["_reasons"].to_list(), strict=True))
    assert reasons[3] == "amount: expected float, got abc"
    assert reasons[5] == "amount: greater_than(0.0) (got -4.0)"
    assert reasons[7].startswith("channel: isin(")
    assert reasons[9].startswith("transaction_id: duplicate id")
    assert quarantine.filter(pl.col("_row") == 3)["amount"][0] == "abc"  # the original value is kept


def test_too_many_rejects_stop_the_run_and_keep_the_quarantine(tmp_path: Path, raw: pl.DataFrame) -> None:
    # given 5% of rows with a negative amount, over the 1% allowed
    bad = raw.with_columns(
        pl.when(pl.int_range(pl.len()) % 20 == 0).then(-1.0).otherwise(pl.col("amount")).alias("amount")
    )
    path = tmp_path / "tx.parquet"
    bad.write_parquet(path)
    # when / then
    with pytest.raises(IngestError, match=r"100 of 2000 rows rejected \(5.00%\), over the allowed 1.00%"):
        _ingest(path, tmp_path)
    assert len(list((tmp_path / "quarantine").glob("*.parquet"))) == 1


def test_wrong_type_in_parquet_becomes_per_row_rejects(tmp_path: Path, raw: pl.DataFrame) -> None:
    # given a Parquet file whose amount column holds text
    path = tmp_path / "tx.parquet"
    raw.with_columns(pl.col("amount").cast(pl.String)).with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("n/a")).otherwise(pl.col("amount")).alias("amount")
    ).write_parquet(path)
    # when ingested with room for one reject
    result = _ingest(path, tmp_path)
    # then the text numbers parse and the one that does not is rejected
    assert result.report.rows_rejected == 1  # type: ignore[attr-defined]
    assert result.frame["amount"].dtype == pl.Float64  # type: ignore[attr-defined]


def test_all_null_feature_is_an_error(tmp_path: Path, raw: pl.DataFrame) -> None:
    path = tmp_path / "tx.parquet"
    raw.with_columns(pl.lit(None, dtype=pl.String).alias("merchant_category")).write_parquet(path)
    with pytest.raises(IngestError, match=r"merchant_category are entirely null"):
        _ingest(path, tmp_path)


def test_target_with_a_third_class_is_an_error(raw: pl.DataFrame) -> None:
    frame = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(2).otherwise(pl.col("is_fraud")).alias("is_fraud")
    )
    with pytest.raises(IngestError, match=r"target column 'is_fraud' must hold two classes, found 3"):
        target_labels(frame, CONFIG.target, "tx.csv")


def test_target_with_one_class_is_an_error(raw: pl.DataFrame) -> None:
    frame = raw.with_columns(pl.lit(0).alias("is_fraud"))
    with pytest.raises(IngestError, match=r"target column 'is_fraud' has only one class"):
        target_labels(frame, CONFIG.target, "tx.csv")


def test_labels_follow_the_positive_value(raw: pl.DataFrame) -> None:
    labels = target_labels(raw, CONFIG.target, "tx.csv")
    assert labels.sum() == raw["is_fraud"].sum()
