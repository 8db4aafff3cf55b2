"""Where the raw data comes from: the user's file, or the built-in generator written to a Parquet file.

Generated data goes through a file too, so it is hashed, ingested and validated exactly like a user's data.
"""

from __future__ import annotations

from pathlib import Path

from tasks.config import TrainingConfig
from tasks.settings import Settings

__all__ = ["resolve_source"]


def resolve_source(config: TrainingConfig, settings: Settings, rows: int) -> tuple[Path, str]:
    """The file to ingest and its declared format; generates it when the config names no data."""
    if config.data is not None:
        return config.data.path, config.data.format
    from tasks.generator import generate_transactions

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / f"generated-{rows}-seed{config.seed}.parquet"
    if not path.exists():
        partial = path.with_suffix(".partial")
        generate_transactions(rows, seed=config.seed).write_parquet(partial)
        partial.replace(path)  # a half-written file is never picked up by a later run
    return path, "parquet"
