"""Promotion evidence: score candidate and champion on the same frozen snapshot and build the DecisionBundle.

Both models are scored by their own ScoringModel on the candidate's evaluation snapshot (all validated rows, so the
per-entity aggregates of test rows see their history), and compared on the test rows with paired bootstrap
intervals. The bundle carries only evidence; the OPA policy decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from tasks.audit import AuditRecord
from tasks.decision import (
    Approval,
    DataValidation,
    DecisionBundle,
    FairnessFigures,
    Lineage,
    ModelEvidence,
    PriorPromotion,
)
from tasks.model import ScoringModel
from tasks.registry import VersionInfo
from tasks.report import MetricValue
from tasks.reporting import LABEL_COLUMN, SPLIT_COLUMN

__all__ = [
    "PromotionEvidence",
    "ScoredSnapshot",
    "build_bundle",
    "fairness_figures",
    "gather_evidence",
    "prior_promotions",
    "score_snapshot",
]

FloatArray = npt.NDArray[np.float64]

PROMOTION_ACTION = "promotion.decision"


@dataclass(frozen=True)
class ScoredSnapshot:
    labels: npt.NDArray[np.int8]
    scores: FloatArray
    threshold: float
    segments: dict[str, npt.NDArray[np.str_]]

    @property
    def decisions(self) -> npt.NDArray[np.bool_]:
        result: npt.NDArray[np.bool_] = self.scores >= self.threshold
        return result


def score_snapshot(model: ScoringModel, snapshot: pl.DataFrame, segment_column: str | None) -> ScoredSnapshot:
    """Score every snapshot row (history included) and keep the test rows."""
    raw = snapshot.drop(LABEL_COLUMN, SPLIT_COLUMN)
    scores = model.score(raw)
    test = (snapshot[SPLIT_COLUMN] == "test").to_numpy()
    segments: dict[str, npt.NDArray[np.str_]] = {}
    if segment_column and segment_column in snapshot.columns:
        segments[segment_column] = snapshot[segment_column].cast(pl.String).fill_null("(null)").to_numpy()[test]
    return ScoredSnapshot(
        labels=snapshot[LABEL_COLUMN].to_numpy()[test].astype(np.int8),
        scores=scores[test],
        threshold=model.threshold,
        segments=segments,
    )


def fairness_figures(scored: ScoredSnapshot, segment_column: str | None, min_positives: int) -> FairnessFigures:
    """True-positive rate per segment value; values with fewer than `min_positives` positives are left out."""
    per_segment: dict[str, float] = {}
    if segment_column and segment_column in scored.segments:
        values = scored.segments[segment_column]
        positives = scored.labels == 1
        for value in sorted(set(values.tolist())):
            mask = (values == value) & positives
            if int(mask.sum()) >= min_positives:
                per_segment[str(value)] = float(scored.decisions[mask].mean())
    gap = max(per_segment.values()) - min(per_segment.values()) if per_segment else 0.0
    return FairnessFigures(segment_column=segment_column or "", metric="tpr", per_segment=per_segment, gap=gap)


@dataclass(frozen=True)
class PromotionEvidence:
    candidate: ModelEvidence
    champion: ModelEvidence | None
    differences: dict[str, MetricValue]
    decision_flip_share: float | None
    fairness: FairnessFigures
    candidate_scored: ScoredSnapshot


def gather_evidence(
    candidate: tuple[VersionInfo, ScoringModel],
    champion: tuple[VersionInfo, ScoringModel] | None,
    snapshot: pl.DataFrame,
    *,
    segment_column: str | None,
    min_positives: int,
    resamples: int,
    seed: int,
) -> PromotionEvidence:
    from tasks.evaluate import evaluate_scores, paired_bootstrap_difference

    candidate_info, candidate_model = candidate
    scored = score_snapshot(candidate_model, snapshot, segment_column)
    candidate_report = evaluate_scores(
        scored.labels, scored.scores, scored.threshold, split="snapshot", resamples=resamples, seed=seed
    )
    candidate_evidence = ModelEvidence(
        version=candidate_info.version, run_id=candidate_info.run_id, metrics=candidate_report.metrics
    )
    if champion is None:
        return PromotionEvidence(
            candidate=candidate_evidence,
            champion=None,
            differences={},
            decision_flip_share=None,
            fairness=fairness_figures(scored, segment_column, min_positives),
            candidate_scored=scored,
        )
    champion_info, champion_model = champion
    champion_scored = score_snapshot(champion_model, snapshot, segment_column)
    champion_report = evaluate_scores(
        champion_scored.labels,
        champion_scored.scores,
        champion_scored.threshold,
        split="snapshot",
        resamples=resamples,
        seed=seed,
    )
    differences = paired_bootstrap_difference(
        scored.labels,
        scored.scores,
        champion_scored.scores,
        scored.threshold,
        champion_scored.threshold,
        resamples=resamples,
        seed=seed,
    )
    return PromotionEvidence(
        candidate=candidate_evidence,
        champion=ModelEvidence(
            version=champion_info.version, run_id=champion_info.run_id, metrics=champion_report.metrics
        ),
        differences=differences,
        decision_flip_share=float(np.mean(scored.decisions != champion_scored.decisions)),
        fairness=fairness_figures(scored, segment_column, min_positives),
        candidate_scored=scored,
    )


def prior_promotions(records: list[AuditRecord], model_name: str) -> list[PriorPromotion]:
    """Allowed promotions of this model, from the audit trail."""
    return [
        PriorPromotion(environment=record.environment, version=record.model_version, at=record.at)
        for record in records
        if record.action == PROMOTION_ACTION
        and record.decision == "allow"
        and record.model_name == model_name
        and record.environment in ("staging", "production")
    ]


def build_bundle(
    *,
    candidate: VersionInfo,
    evidence: PromotionEvidence,
    environment: str,
    requested_by: str,
    requested_at: datetime,
    approvals: list[Approval],
    metrics: dict[str, float],
    history: list[PriorPromotion],
    snapshot_hash: str,
) -> DecisionBundle:
    tags = candidate.tags
    bento_digest = tags.get("scoregate.bento_digest", "")
    return DecisionBundle(
        schema_version="1",
        model_name=candidate.model_name,
        candidate_version=candidate.version,
        environment=environment,
        requested_by=requested_by,
        requested_at=requested_at,
        approvals=approvals,
        candidate=evidence.candidate,
        champion=evidence.champion,
        differences=evidence.differences,
        decision_flip_share=evidence.decision_flip_share,
        data_validation=DataValidation(
            rows_read=int(metrics.get("rows_read", 0)),
            rows_rejected=int(metrics.get("rows_rejected", 0)),
            rejected_share=float(metrics.get("rejected_share", 0.0)),
        ),
        lineage=Lineage(
            data_hash=tags.get("scoregate.data_hash", ""),
            feature_spec_hash=tags.get("scoregate.feature_spec_hash", ""),
            git_commit=tags.get("scoregate.git_commit", ""),
            lock_hash=tags.get("scoregate.lock_hash", ""),
            bento_tag=tags.get("scoregate.bento_tag", ""),
            bento_digest=f"sha256:{bento_digest}" if bento_digest else "",
            run_id=candidate.run_id,
        ),
        fairness=evidence.fairness,
        promotion_history=history,
        snapshot_hash=snapshot_hash,
    )


def snapshot_path(folder: Path) -> Path:
    return folder / "snapshot" / "evaluation_snapshot.parquet"
