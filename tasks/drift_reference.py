"""The drift watch's reference: a sampled profile of a champion's training data, cached per model version.

The profile is built from a version's training run: its evaluation snapshot (every validated raw row, `_split`
marking train/valid/test) and its scoring model. All rows go through the model's own `FeaturePipeline.base_frame`
(a train row's aggregates need the rows before it), the train split is kept, scored with the model, and a seeded
sample of at most `max_rows` is stored with the PSI bins fitted on it:

    $SCOREGATE_HOME/drift/reference/<model>/v<version>/reference.parquet   features + _score
    $SCOREGATE_HOME/drift/reference/<model>/v<version>/profile.json        ReferenceProfile (bins, provenance)

The training flow saves it once the version is registered (`save_training_reference`, from the files the run has
just written). The drift watch reads it through `load_reference`, which rebuilds it from the files MLflow recorded
for the run when it is missing, unreadable, for another run, or built with other bin settings; when MLflow has no
snapshot or model for the run either, `DriftError` says so. Both files are written into a temporary folder that is
renamed into place, so a half-built profile is never read.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.drift import (
    SCORE_COLUMN,
    DriftError,
    DriftSettings,
    FeatureKind,
    PsiBins,
    ReferenceInfo,
    UtcDatetime,
    fit_psi_bins,
)
from tasks.model import ScoringModel
from tasks.registry import VersionInfo, download_run_artifact
from tasks.settings import Settings

__all__ = [
    "DEFAULT_MAX_ROWS",
    "LABEL_COLUMN",
    "SNAPSHOT_FILE",
    "SPLIT_COLUMN",
    "ProfileFeature",
    "ReferenceProfile",
    "load_reference",
    "reference_folder",
    "save_training_reference",
]

DEFAULT_MAX_ROWS = 50_000
PROFILE_FILE = "profile.json"
FRAME_FILE = "reference.parquet"
# The snapshot's names, as `tasks.reporting` writes them (importing it would pull in scikit-learn and Pandera, seconds
# the drift watch does not need; a test holds the two in step).
SNAPSHOT_FILE = "evaluation_snapshot.parquet"
LABEL_COLUMN = "_label"
SPLIT_COLUMN = "_split"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ProfileFeature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: FeatureKind


class ReferenceProfile(BaseModel):
    """Provenance and PSI bins of a cached reference sample."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = "1"
    model_name: str
    model_version: str
    run_id: str
    snapshot_hash: str
    scoring_model_sha256: str
    threshold: float
    features: list[ProfileFeature]
    bins: dict[str, PsiBins]
    train_rows: int
    rows: int
    max_rows: int
    seed: int
    psi_bins: int
    max_levels: int
    built_at: UtcDatetime

    def kinds(self) -> dict[str, FeatureKind]:
        return {feature.name: feature.kind for feature in self.features}

    def info(self, folder: Path) -> ReferenceInfo:
        return ReferenceInfo(
            run_id=self.run_id,
            snapshot_hash=self.snapshot_hash,
            train_rows=self.train_rows,
            rows=self.rows,
            seed=self.seed,
            built_at=self.built_at,
            path=str(folder),
        )


def reference_folder(home: Path, model_name: str, model_version: str) -> Path:
    return home / "drift" / "reference" / model_name / f"v{model_version}"


def _cached(
    folder: Path, info: VersionInfo, max_rows: int, settings: DriftSettings
) -> tuple[ReferenceProfile, pl.DataFrame] | None:
    """The cached profile when it is readable and was built for this run with these settings."""
    try:
        profile = ReferenceProfile.model_validate_json((folder / PROFILE_FILE).read_bytes())
        frame = pl.read_parquet(folder / FRAME_FILE)
    except (OSError, ValidationError, pl.exceptions.PolarsError):
        return None
    wanted = (
        info.model_name,
        info.version,
        info.run_id,
        max_rows,
        settings.seed,
        settings.psi_bins,
        settings.max_levels,
    )
    found = (
        profile.model_name,
        profile.model_version,
        profile.run_id,
        profile.max_rows,
        profile.seed,
        profile.psi_bins,
        profile.max_levels,
    )
    columns = [*profile.kinds(), SCORE_COLUMN]
    if wanted != found or any(column not in frame.columns for column in columns) or frame.height != profile.rows:
        return None
    return profile, frame.select(columns)


def _download(settings: Settings, info: VersionInfo, artifact: str, folder: Path) -> Path:
    try:
        return download_run_artifact(settings, info.run_id, artifact, folder)
    # MLflow raises its own exceptions and OS errors for a missing artifact, depending on the store.
    except Exception as error:
        raise DriftError(
            f"{info.model_name} v{info.version}: no cached reference profile, and MLflow run {info.run_id or '(none)'} "
            f"has no {artifact} to build one from ({type(error).__name__}: {str(error).splitlines()[0][:300]})"
        ) from error


def _profile_from_files(
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    model_path: Path,
    model_sha: str | None,
    snapshot_path: Path,
    recorded_snapshot_hash: str,
    max_rows: int,
    drift: DriftSettings,
) -> tuple[ReferenceProfile, pl.DataFrame]:
    """The profile and sample from a run's scoring model and evaluation snapshot, wherever those files are."""
    try:
        model = ScoringModel.load(model_path, expected_sha256=model_sha)
    except (ValueError, OSError) as error:
        raise DriftError(f"{model_name} v{model_version}: the scoring model cannot be used: {error}") from error
    snapshot_hash = _sha256(snapshot_path)
    if recorded_snapshot_hash and snapshot_hash != recorded_snapshot_hash:
        raise DriftError(
            f"{model_name} v{model_version}: the evaluation snapshot's sha256 {snapshot_hash[:16]} does not match "
            f"the recorded {recorded_snapshot_hash[:16]}"
        )
    snapshot = pl.read_parquet(snapshot_path)
    if SPLIT_COLUMN not in snapshot.columns:
        raise DriftError(f"{model_name} v{model_version}: the evaluation snapshot has no {SPLIT_COLUMN} column")
    train = (snapshot[SPLIT_COLUMN] == "train").fill_null(False)
    kinds: dict[str, FeatureKind] = {item.name: item.kind for item in model.pipeline.spec.features}
    # The whole snapshot goes through base_frame: a train row's aggregates need the rows before it.
    base = model.pipeline.base_frame(snapshot.drop([LABEL_COLUMN, SPLIT_COLUMN], strict=False)).filter(train)
    if base.height == 0:
        raise DriftError(f"{model_name} v{model_version}: the evaluation snapshot has no train rows")
    scores = model.score_design(model.pipeline.design_from_base(base).to_numpy())
    frame = base.select(list(kinds)).with_columns(pl.Series(SCORE_COLUMN, scores, dtype=pl.Float64))
    sample = frame if frame.height <= max_rows else frame.sample(n=max_rows, seed=drift.seed, shuffle=False)
    bins = {
        name: fit_psi_bins(sample[name], kind, bins=drift.psi_bins, max_levels=drift.max_levels)
        for name, kind in kinds.items()
    }
    bins[SCORE_COLUMN] = fit_psi_bins(sample[SCORE_COLUMN], "numeric", bins=drift.psi_bins)
    profile = ReferenceProfile(
        model_name=model_name,
        model_version=model_version,
        run_id=run_id,
        snapshot_hash=snapshot_hash,
        scoring_model_sha256=model_sha or _sha256(model_path),
        threshold=model.threshold,
        features=[ProfileFeature(name=name, kind=kind) for name, kind in kinds.items()],
        bins=bins,
        train_rows=frame.height,
        rows=sample.height,
        max_rows=max_rows,
        seed=drift.seed,
        psi_bins=drift.psi_bins,
        max_levels=drift.max_levels,
        built_at=datetime.now(UTC),
    )
    return profile, sample


def _store(
    folder: Path, build: Callable[[Path], tuple[ReferenceProfile, pl.DataFrame]]
) -> tuple[ReferenceProfile, pl.DataFrame]:
    """Build in a temporary folder beside `folder` and rename it into place, so a half-built profile is never read."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        profile, frame = build(work)
        ready = work / "profile"
        ready.mkdir()
        frame.write_parquet(ready / FRAME_FILE)
        (ready / PROFILE_FILE).write_text(profile.model_dump_json(indent=2), encoding="utf-8")
        # A stale or broken profile is replaced whole; the drift lock keeps two watches from racing here, and a
        # training run writes the profile of a version no watch can see before its registration.
        if folder.exists():
            shutil.rmtree(folder)
        ready.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return profile, frame


def save_training_reference(
    settings: Settings,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    scoring_model: Path,
    scoring_model_sha256: str,
    snapshot: Path,
    snapshot_sha256: str,
    max_rows: int = DEFAULT_MAX_ROWS,
    drift: DriftSettings | None = None,
) -> ReferenceProfile:
    """At training time: the new version's profile from the run's own files, before anything is downloaded.

    The same build as a rebuild from MLflow (`load_reference`), from the scoring model and snapshot the training
    run has just written and logged, so the first drift watch of the version finds its reference cached.
    """
    drift = drift or DriftSettings()
    folder = reference_folder(settings.home, model_name, model_version)
    profile, _ = _store(
        folder,
        lambda _work: _profile_from_files(
            model_name=model_name,
            model_version=model_version,
            run_id=run_id,
            model_path=scoring_model,
            model_sha=scoring_model_sha256,
            snapshot_path=snapshot,
            recorded_snapshot_hash=snapshot_sha256,
            max_rows=max_rows,
            drift=drift,
        ),
    )
    return profile


def _rebuild(
    settings: Settings, info: VersionInfo, work: Path, max_rows: int, drift: DriftSettings
) -> tuple[ReferenceProfile, pl.DataFrame]:
    model_path = _download(settings, info, "scoring_model.json", work / "model")
    snapshot_path = _download(settings, info, f"snapshot/{SNAPSHOT_FILE}", work / "snapshot")
    return _profile_from_files(
        model_name=info.model_name,
        model_version=info.version,
        run_id=info.run_id,
        model_path=model_path,
        model_sha=info.tags.get("scoregate.scoring_model_sha256") or None,
        snapshot_path=snapshot_path,
        recorded_snapshot_hash=info.tags.get("scoregate.snapshot_hash", ""),
        max_rows=max_rows,
        drift=drift,
    )


def load_reference(
    settings: Settings,
    info: VersionInfo,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    drift: DriftSettings | None = None,
) -> tuple[ReferenceProfile, pl.DataFrame, bool]:
    """The version's reference profile and sample, from the cache or rebuilt from MLflow; True when rebuilt."""
    drift = drift or DriftSettings()
    folder = reference_folder(settings.home, info.model_name, info.version)
    cached = _cached(folder, info, max_rows, drift)
    if cached is not None:
        return cached[0], cached[1], False
    profile, frame = _store(folder, lambda work: _rebuild(settings, info, work, max_rows, drift))
    return profile, frame, True
