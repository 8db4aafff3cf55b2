"""Stage-by-stage speed and memory of the training pipeline, with a pandas feature job as the baseline.

    .venv/bin/python benchmarks/pipeline.py --rows 1000000
    .venv/bin/python benchmarks/pipeline.py --rows 10000000

Runs generate -> validate -> features -> train -> evaluate on the embedded default config (no MLflow, no bento: the
targets concern the data path), printing wall time and peak RSS per stage and rows per second end to end. The
baseline is the same point-in-time feature job written the usual pandas way (groupby + time-based rolling windows),
run in the same process on the same rows (up to --baseline-rows), checked equal to ours, and reported as a ratio.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.config import load_training_config
from tasks.dataset import prepare_dataset
from tasks.evaluate import evaluate_scores
from tasks.features import add_aggregates, add_derived_columns
from tasks.generator import generate_transactions
from tasks.ingest import validate_raw_frame
from tasks.model import sigmoid
from tasks.train import select_and_fit

CONFIG = load_training_config(Path(__file__).resolve().parent.parent / "tasks" / "configs" / "card_fraud.yaml")


class PeakRss:
    """Samples this process's resident memory every few milliseconds; `peak` is the highest since `reset`."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def reset(self) -> None:
        self.peak = self._process.memory_info().rss

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def stage(name: str, rss: PeakRss, results: list[tuple[str, float, int]]) -> Iterator[None]:
    gc.collect()
    rss.reset()
    started = time.perf_counter()
    yield
    results.append((name, time.perf_counter() - started, rss.peak))


def pandas_feature_job(frame: pl.DataFrame) -> Any:
    """The same aggregates and derived columns, written as a data scientist would in pandas."""
    import pandas as pd

    df = frame.to_pandas()
    df["_order"] = np.arange(len(df))
    df = df.sort_values(["card_id", "timestamp", "_order"], kind="stable")
    df["cross_border"] = df["merchant_country"] != df["card_country"]
    df["hour_of_day"] = df["timestamp"].dt.hour.astype(float)
    grouped = df.groupby("card_id", sort=False)
    for window in ("1h", "24h", "7d"):
        rolled = grouped.rolling(pd.Timedelta(window), on="timestamp", closed="left")["amount"]
        counts = rolled.count().fillna(0.0).to_numpy()
        sums = rolled.sum().fillna(0.0).to_numpy()
        df[f"count_{window}"] = counts
        df[f"amount_sum_{window}"] = np.where(counts > 0, sums, 0.0)
    previous_time = grouped["timestamp"].shift(1)
    # Rows at the same instant are not earlier: walk back to the last strictly earlier time.
    strictly_earlier = previous_time.where(previous_time < df["timestamp"])
    last_earlier = strictly_earlier.groupby(df["card_id"]).ffill()
    gap_hours = ((df["timestamp"] - last_earlier).dt.total_seconds() / 3600.0).fillna(720.0)
    df["hours_since_previous"] = gap_hours
    cumulative = grouped["amount"].cumsum() - df["amount"]
    count_before = grouped.cumcount()
    mean_before = cumulative / count_before.replace(0, np.nan)
    df["amount_to_mean"] = (df["amount"] / mean_before).where(count_before > 0, 1.0)
    return df.sort_values("_order")


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=1_000_000, help="rows the pandas baseline runs on")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    import_seconds, _ = _time(lambda: __import__("sklearn.linear_model"))
    print(f"importing scikit-learn: {import_seconds:.1f} s (paid once per process, outside the stages below)")
    rss = PeakRss()
    results: list[tuple[str, float, int]] = []
    started = time.perf_counter()
    with stage("generate", rss, results):
        raw = generate_transactions(args.rows, seed=args.seed)
    pipeline_started = time.perf_counter()
    with stage("validate", rss, results):
        ingested = validate_raw_frame(
            raw,
            CONFIG.spec,
            CONFIG.target,
            CONFIG.validation,
            source="generated",
            data_hash="0" * 64,
            quarantine_dir=Path("/tmp/scoregate-benchmark-quarantine"),
        )
    del raw
    with stage("features", rss, results):
        prepared = prepare_dataset(ingested.frame, CONFIG, source="generated")
    with stage("train", rss, results):
        split = prepared.split
        fit = select_and_fit(
            prepared.train, prepared.labels[split.train], prepared.valid, prepared.labels[split.valid], CONFIG.model
        )
    pipeline_seconds = time.perf_counter() - pipeline_started
    with stage("evaluate", rss, results):
        scores = sigmoid(prepared.test @ fit.best.coefficients + fit.best.intercept)
        evaluate_scores(
            prepared.labels[split.test],
            scores,
            0.5,
            segments={"channel": prepared.base["channel"].to_numpy()[split.test]},
            resamples=CONFIG.evaluation.bootstrap_resamples,
        )
    total = time.perf_counter() - started
    rss.stop()

    print(f"rows {args.rows:,}  (train {len(split.train):,}, design columns {prepared.train.shape[1]})")
    print(f"{'stage':<10} {'seconds':>9} {'peak RSS GiB':>13}")
    for name, seconds, peak in results:
        print(f"{name:<10} {seconds:>9.2f} {peak / 2**30:>13.2f}")
    peak_all = max(peak for _, _, peak in results)
    print(f"validate+features+train: {pipeline_seconds:.1f} s (target < 60 s at 10M rows)")
    print(
        f"end to end: {total:.1f} s, {args.rows / total:,.0f} rows/s, peak RSS {peak_all / 2**30:.2f} GiB (target < 8)"
    )

    baseline_rows = min(args.rows, args.baseline_rows)
    sample = ingested.frame.head(baseline_rows)
    polars_seconds, ours = _time(lambda: add_aggregates(add_derived_columns(sample, CONFIG.spec), CONFIG.spec))
    pandas_seconds, theirs = _time(lambda: pandas_feature_job(sample))
    for column in ("count_1h", "amount_sum_24h", "count_7d", "hours_since_previous", "amount_to_mean"):
        np.testing.assert_allclose(ours[column].to_numpy(), theirs[column].to_numpy(), rtol=1e-9, atol=1e-6)
    print(
        f"feature job on {baseline_rows:,} rows: polars {polars_seconds:.2f} s, pandas {pandas_seconds:.2f} s, "
        f"ratio {pandas_seconds / polars_seconds:.1f}x (target >= 10x; outputs checked equal)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
