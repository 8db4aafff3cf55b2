"""Drift computation speed: one window of 1M current rows x 20 features against the sampled, cached reference.

What is timed is what a drift watch does once the window is read: `tasks.drift.build_drift_report`, i.e. PSI per
feature and on the score over ALL current rows, Evidently's data-drift preset plus score drift on a seeded sample of
the window (`DriftSettings.evidently_max_rows`, 100,000 by default) against the reference sample (50,000 rows, the
size `tasks.drift_reference` caches), and the HTML report written to disk. Evidently's import (10-15 s on a busy
2-core box, paid once per process) is timed on its own and shown both apart and added in. The target is under 30 s.

The baseline, run in the same process: Evidently with the same preset and methods on UNSAMPLED frames (the whole
window against the whole training split), as a watch without sampling would run it. Unsampled at 1M x 20 it takes
minutes and several GiB, so by default it runs at `--baseline-rows` (200,000 current and 200,000 reference rows)
and is extrapolated linearly to the full size: an underestimate (its distance tests sort each column, n log n), so
the printed speed-up is a lower bound. `--baseline-rows 1000000` runs it at full size instead.

`--log-rows N` also times reading N lines of a prediction log in the scorer's format (`tasks.drift_log`), the step
before the report (written with Polars, not measured; off by default: 1M lines are about 0.5 GB on disk).

    uv run --frozen python benchmarks/drift.py [--rows 1000000] [--features 20] [--baseline-rows 200000] [--log-rows 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from tasks.drift import (
    SCORE_COLUMN,
    DriftSettings,
    DriftWindow,
    FeatureKind,
    LogStats,
    ReferenceInfo,
    build_drift_report,
    fit_psi_bins,
    run_evidently,
)
from tasks.drift_log import read_prediction_window
from tasks.drift_reference import DEFAULT_MAX_ROWS

WINDOW_END = datetime(2026, 3, 1, 13, tzinfo=UTC)
LEVELS = ["pos", "online", "atm", "moto", "recurring", "contactless", "wallet", "kiosk"]


def feature_kinds(count: int) -> dict[str, FeatureKind]:
    """About 70% numeric, 20% categorical, 10% boolean, as in a card-fraud feature set."""
    categorical = max(1, count // 5)
    boolean = max(1, count // 10)
    numeric = count - categorical - boolean
    kinds: dict[str, FeatureKind] = {f"num_{i:02d}": "numeric" for i in range(numeric)}
    kinds.update({f"cat_{i:02d}": "categorical" for i in range(categorical)})
    kinds.update({f"flag_{i:02d}": "boolean" for i in range(boolean)})
    return kinds


def frame(rows: int, kinds: dict[str, FeatureKind], seed: int, *, shifted: bool) -> pl.DataFrame:
    """Synthetic base-frame rows; `shifted` moves the first numeric feature x100 (the cents incident)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for index, (name, kind) in enumerate(kinds.items()):
        if kind == "numeric":
            values = rng.lognormal(3.0 + 0.1 * index, 0.8, rows)
            # A point mass at zero, like a count over a short window.
            values[rng.random(rows) < 0.3] = 0.0
            columns[name] = values * (100.0 if shifted and index == 0 else 1.0)
        elif kind == "categorical":
            weights = np.arange(len(LEVELS), 0, -1, dtype=np.float64)
            columns[name] = rng.choice(LEVELS, rows, p=weights / weights.sum())
        else:
            columns[name] = rng.random(rows) < 0.8
    first = next(iter(kinds))
    amount = np.log1p(np.asarray(columns[first], dtype=np.float64))
    columns[SCORE_COLUMN] = 1.0 / (1.0 + np.exp(-(-6.0 + 0.5 * amount)))
    return pl.DataFrame(columns)


def bench_log(folder: Path, current: pl.DataFrame, kinds: dict[str, FeatureKind], rows: int) -> None:
    """Read `rows` prediction-log lines of one window, as the drift watch does before it measures."""
    window = DriftWindow.ending(WINDOW_END, 1.0)
    lines = current.head(rows)
    offsets = np.linspace(0, 3600 * 10**6 - 1, lines.height).astype("timedelta64[us]")
    moments = pl.Series("time", np.datetime64(window.start.replace(tzinfo=None), "us") + offsets)
    log = lines.with_columns(moments).select(
        pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
        pl.lit("bench").alias("model_name"),
        pl.lit("1").alias("model_version"),
        pl.col(SCORE_COLUMN).alias("score"),
        pl.when(pl.col(SCORE_COLUMN) >= 0.5).then(pl.lit("decline")).otherwise(pl.lit("approve")).alias("decision"),
        pl.struct(list(kinds)).alias("features"),
    )
    log_folder = folder / "predictions"
    log_folder.mkdir()
    log.write_ndjson(log_folder / "predictions-bench-1.jsonl")
    size_mb = (log_folder / "predictions-bench-1.jsonl").stat().st_size / 1e6
    started = time.perf_counter()
    frame, stats = read_prediction_window(log_folder, model_name="bench", model_version="1", window=window, kinds=kinds)
    seconds = time.perf_counter() - started
    if frame.height != lines.height or stats.malformed:
        raise SystemExit(f"the benchmark's log read is wrong: {stats}")
    print(f"prediction log: {frame.height:,} lines ({size_mb:.0f} MB) read and checked in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="current rows in the window")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--train-rows", type=int, default=1_000_000, help="training rows the reference samples")
    parser.add_argument("--baseline-rows", type=int, default=200_000, help="rows per side of the unsampled baseline")
    parser.add_argument("--log-rows", type=int, default=0, help="also time reading this many prediction-log lines")
    args = parser.parse_args()
    kinds = feature_kinds(args.features)
    settings = DriftSettings()

    started = time.perf_counter()
    training = frame(args.train_rows, kinds, seed=1, shifted=False)
    current = frame(args.rows, kinds, seed=2, shifted=True)
    print(
        f"data: {args.rows:,} current rows x {len(kinds)} features (+ score), training split {args.train_rows:,} rows "
        f"(generated in {time.perf_counter() - started:.1f} s, not measured)"
    )

    with tempfile.TemporaryDirectory(prefix="scoregate-drift-bench-") as tmp:
        folder = Path(tmp)
        # The cached reference as tasks.drift_reference stores it: a seeded sample with the PSI bins fitted on it.
        reference = training.sample(n=min(DEFAULT_MAX_ROWS, training.height), seed=settings.seed, shuffle=False)
        reference.write_parquet(folder / "reference.parquet")
        started = time.perf_counter()
        cached = pl.read_parquet(folder / "reference.parquet")
        bins = {name: fit_psi_bins(cached[name], kind, bins=settings.psi_bins) for name, kind in kinds.items()}
        bins[SCORE_COLUMN] = fit_psi_bins(cached[SCORE_COLUMN], "numeric", bins=settings.psi_bins)
        load_seconds = time.perf_counter() - started
        print(f"reference: {cached.height:,} sampled rows, read and binned in {load_seconds:.2f} s")

        started = time.perf_counter()
        import evidently  # type: ignore[import-untyped]  # noqa: F401

        import_seconds = time.perf_counter() - started
        print(f"Evidently import (once per process): {import_seconds:.1f} s")

        window = DriftWindow.ending(WINDOW_END, 1.0)
        started = time.perf_counter()
        report = build_drift_report(
            reference=cached,
            current=current,
            kinds=kinds,
            bins=bins,
            threshold=0.5,
            decline_rate_current=0.01,
            model_name="bench",
            model_version="1",
            environment="production",
            window=window,
            reference_info=ReferenceInfo(
                run_id="bench",
                snapshot_hash="-",
                train_rows=training.height,
                rows=cached.height,
                seed=settings.seed,
                built_at=WINDOW_END - timedelta(days=1),
                path=str(folder),
            ),
            log=LogStats(folder=str(folder), rows=current.height),
            settings=settings,
            html_path=folder / "report.html",
        )
        seconds = time.perf_counter() - started
        if report.evidently_error or report.most_drifted[:1] != ["num_00"]:
            raise SystemExit(f"the benchmark's report is wrong: {report.evidently_error or report.most_drifted}")
        html_mb = (folder / "report.html").stat().st_size / 1e6
        print(
            f"drift report, 1 window: {seconds:.1f} s = PSI over {report.rows:,} rows {report.seconds_psi:.2f} s + "
            f"Evidently on {report.evidently_rows:,} sampled rows {report.seconds_evidently:.1f} s + HTML "
            f"({html_mb:.1f} MB) and the rest {seconds - report.seconds_psi - report.seconds_evidently:.1f} s"
        )
        total = seconds + load_seconds
        print(
            f"  target < 30 s: {total:.1f} s with the reference load, {total + import_seconds:.1f} s with Evidently's "
            f"import as well -> {'met' if total + import_seconds < 30 else 'NOT met'}"
        )

        if args.log_rows > 0:
            bench_log(folder, current, kinds, args.log_rows)

        # The baseline: Evidently on unsampled frames, at --baseline-rows per side, extrapolated to the full size.
        size = min(args.baseline_rows, args.rows, training.height)
        started = time.perf_counter()
        baseline = run_evidently(training.head(size), current.head(size), kinds, settings, title="baseline")
        baseline_seconds = time.perf_counter() - started
        if baseline.error:
            raise SystemExit(f"the baseline failed: {baseline.error}")
        scale = args.rows / size
        estimate = baseline_seconds * scale
        how = "measured at full size" if scale == 1 else f"measured at {size:,} per side, x{scale:.1f} linearly"
        print(f"baseline, Evidently unsampled: {baseline_seconds:.1f} s at {size:,} rows per side")
        print(f"  at {args.rows:,} rows: {estimate:.0f} s ({how}; a lower bound)")
        print(f"  sampled reference + sampled Evidently + full PSI = {estimate / seconds:.1f}x faster than unsampled")


if __name__ == "__main__":
    main()
