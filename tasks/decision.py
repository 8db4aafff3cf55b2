"""The records that cross the policy boundary: the evidence sent to OPA and the answer it gives.

A `DecisionBundle` is everything the promotion policy may look at, frozen at the moment of the request; a
`Decision` is the policy's answer plus the digests that tie it to the exact policies and evidence. Both are frozen
pydantic records, and the JSON Schema of `DecisionBundle` is published at `policies/decision_bundle.schema.json`
so policy authors and example bundles are checked against the same contract.

The schema is deliberately permissive where the policy is the judge (empty lineage strings, missing metrics,
oversized gaps): such a bundle must reach OPA and be denied with a named rule, not be rejected earlier with a
validation error that no rule id explains.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from tasks.report import MetricValue

__all__ = [
    "DECISION_BUNDLE_SCHEMA_PATH",
    "Approval",
    "DataValidation",
    "Decision",
    "DecisionBundle",
    "FairnessFigures",
    "Lineage",
    "ModelEvidence",
    "PriorPromotion",
    "Violation",
    "bundle_hash",
    "canonical_json",
    "decision_bundle_schema",
    "decision_bundle_schema_text",
    "write_decision_bundle_schema",
]

DECISION_BUNDLE_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "policies" / "decision_bundle.schema.json"


def _as_utc(moment: datetime) -> datetime:
    # One spelling per instant: the bundle hash and Rego's time.parse_rfc3339_ns must not depend on the offset
    # the caller happened to use.
    return moment.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Approval(_Record):
    """One reviewer's approval of the promotion request."""

    by: str = Field(description="Who approved (a user name as the merge request shows it).")
    at: UtcDatetime


class ModelEvidence(_Record):
    """One model version's metrics on the frozen evaluation snapshot."""

    version: str
    run_id: str
    metrics: dict[str, MetricValue] = Field(description="Metric name -> point estimate with a 95% interval.")


class DataValidation(_Record):
    """How much of the evaluation input the raw schema rejected."""

    rows_read: int = Field(ge=0)
    rows_rejected: int = Field(ge=0)
    rejected_share: float = Field(ge=0.0, le=1.0)


class Lineage(_Record):
    """Where the candidate came from; an empty string or "unknown" means the link is missing."""

    data_hash: str
    feature_spec_hash: str
    git_commit: str
    lock_hash: str
    bento_tag: str
    bento_digest: str
    run_id: str


class FairnessFigures(_Record):
    """One metric per value of a segment column, and the largest gap between segments."""

    segment_column: str
    metric: str = Field(description='The per-segment metric, for example "tpr".')
    per_segment: dict[str, float]
    gap: float = Field(
        ge=0.0,
        description="max(per_segment) - min(per_segment) as the evaluation computed it.",
    )


class PriorPromotion(_Record):
    """An earlier promotion of this model, from the audit trail."""

    environment: Literal["staging", "production"]
    version: str
    at: UtcDatetime


class DecisionBundle(_Record):
    """Everything the promotion policy sees about one promotion request."""

    schema_version: Literal["1"]
    model_name: str = Field(min_length=1)
    candidate_version: str = Field(min_length=1)
    environment: Literal["staging", "production"]
    requested_by: str = Field(min_length=1)
    requested_at: UtcDatetime
    approvals: list[Approval] = Field(default_factory=list)
    candidate: ModelEvidence
    champion: ModelEvidence | None = Field(
        description="The version serving in the environment; null on a first promotion."
    )
    differences: dict[str, MetricValue] = Field(
        default_factory=dict,
        description="Candidate minus champion, paired bootstrap on the same snapshot; empty when there is no champion.",
    )
    decision_flip_share: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of snapshot rows decided differently by candidate and champion; null with no champion.",
    )
    data_validation: DataValidation
    lineage: Lineage
    fairness: FairnessFigures
    promotion_history: list[PriorPromotion] = Field(default_factory=list)
    snapshot_hash: str = Field(description="Hash of the frozen evaluation snapshot both models were scored on.")


class Violation(_Record):
    """One reason to deny, under a stable rule id such as "metric_floor.roc_auc"."""

    rule: str
    message: str


class Decision(_Record):
    """The policy's answer for one bundle, tied to the policies and the evidence it was computed from."""

    allow: bool
    violations: list[Violation] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    policy_digest: str
    bundle_hash: str

    def violation_rules(self) -> frozenset[str]:
        """The rule ids that denied, without their messages."""
        return frozenset(violation.rule for violation in self.violations)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that hashes are taken over."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def bundle_hash(bundle: DecisionBundle) -> str:
    """sha256 (hex) of the bundle's canonical JSON."""
    return hashlib.sha256(canonical_json(bundle.model_dump(mode="json")).encode("utf-8")).hexdigest()


def decision_bundle_schema() -> dict[str, Any]:
    """The JSON Schema of `DecisionBundle` (validation mode: what a bundle file may contain)."""
    schema = DecisionBundle.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def decision_bundle_schema_text() -> str:
    """The schema as committed: indented, sorted keys, trailing newline, so diffs are reviewable."""
    return json.dumps(decision_bundle_schema(), indent=2, sort_keys=True) + "\n"


def write_decision_bundle_schema(path: Path = DECISION_BUNDLE_SCHEMA_PATH) -> Path:
    """Write the published schema file (regenerate after changing the records, then commit the diff)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(decision_bundle_schema_text(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_decision_bundle_schema())
