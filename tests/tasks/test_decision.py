from __future__ import annotations

import hashlib
import json
from datetime import timedelta, timezone
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import ValidationError

from tasks.decision import (
    DECISION_BUNDLE_SCHEMA_PATH,
    Decision,
    DecisionBundle,
    Violation,
    bundle_hash,
    canonical_json,
    decision_bundle_schema,
    decision_bundle_schema_text,
    write_decision_bundle_schema,
)
from tests.policy_helpers import example_bundle, example_paths


def test_committed_schema_matches_the_records() -> None:
    # given the schema committed under policies/
    committed = DECISION_BUNDLE_SCHEMA_PATH.read_text(encoding="utf-8")
    # when it is regenerated from DecisionBundle
    regenerated = decision_bundle_schema_text()
    # then nothing changed (regenerate with `python -m tasks.decision` and commit the diff otherwise)
    assert committed == regenerated


def test_write_schema_writes_the_published_text(tmp_path: Path) -> None:
    # given a target path
    target = tmp_path / "schemas" / "bundle.schema.json"
    # when the schema is written
    written = write_decision_bundle_schema(target)
    # then it is the published text and a valid draft 2020-12 schema
    assert written == target
    assert target.read_text(encoding="utf-8") == decision_bundle_schema_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(target.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_every_example_validates_against_the_schema_and_the_record(path: Path) -> None:
    # given a committed example bundle
    document = json.loads(path.read_text(encoding="utf-8"))
    # when it is validated both ways
    errors = list(jsonschema.Draft202012Validator(decision_bundle_schema()).iter_errors(document))
    bundle = DecisionBundle.model_validate(document)
    # then both accept it, and it round-trips unchanged
    assert errors == []
    assert bundle.model_dump(mode="json") == document


def test_bundle_is_frozen_and_rejects_unknown_fields() -> None:
    # given a valid bundle
    bundle = example_bundle("allow_production_with_champion")
    # when it is mutated or given an unknown field
    # then both are refused
    with pytest.raises(ValidationError):
        bundle.model_name = "other"  # type: ignore[misc]
    document = bundle.model_dump(mode="json") | {"surprise": 1}
    with pytest.raises(ValidationError, match="surprise"):
        DecisionBundle.model_validate(document)


def test_naive_timestamps_are_refused() -> None:
    # given a bundle whose requested_at has no offset
    document = example_bundle("allow_production_with_champion").model_dump(mode="json")
    document["requested_at"] = "2026-11-24T07:45:00"
    # when it is validated
    # then it is refused: Rego compares instants, and a naive time is none
    with pytest.raises(ValidationError, match="timezone"):
        DecisionBundle.model_validate(document)


def test_timestamps_are_normalised_to_utc_so_the_hash_ignores_offsets() -> None:
    # given the same instant written with two offsets
    bundle = example_bundle("allow_production_with_champion")
    shifted = bundle.requested_at.astimezone(timezone(timedelta(hours=2)))
    document = bundle.model_dump(mode="json") | {"requested_at": shifted.isoformat()}
    # when the shifted one is validated
    same = DecisionBundle.model_validate(document)
    # then it is stored in UTC and hashes identically
    assert same.requested_at.utcoffset() == timedelta(0)
    assert same.model_dump(mode="json")["requested_at"].endswith("Z")
    assert bundle_hash(same) == bundle_hash(bundle)


def test_bundle_hash_is_sha256_of_canonical_json() -> None:
    # given a bundle
    bundle = example_bundle("allow_staging_first_promotion")
    # when it is hashed
    digest = bundle_hash(bundle)
    # then the hash is sha256 over sorted keys without whitespace, and any change moves it
    text = json.dumps(bundle.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert bundle_hash(bundle.model_copy(update={"snapshot_hash": "sha256:other"})) != digest


def test_bundle_hash_ignores_key_order_in_the_source() -> None:
    # given the same bundle read from JSON with its keys in reverse order
    bundle = example_bundle("allow_production_with_champion")
    reversed_document = dict(reversed(list(bundle.model_dump(mode="json").items())))
    # when it is validated and hashed
    again = DecisionBundle.model_validate(reversed_document)
    # then the hash is the same
    assert bundle_hash(again) == bundle_hash(bundle)


def test_decision_lists_the_rules_that_denied() -> None:
    # given a deny with two violations under one rule and one under another
    decision = Decision(
        allow=False,
        violations=[
            Violation(rule="lineage.bento_digest", message="a"),
            Violation(rule="freeze_window", message="b"),
            Violation(rule="freeze_window", message="c"),
        ],
        policy_digest="p",
        bundle_hash="b",
    )
    # when the rule ids are asked for
    rules = decision.violation_rules()
    # then each rule appears once
    assert rules == frozenset({"lineage.bento_digest", "freeze_window"})


def test_first_promotion_bundle_has_no_champion_and_no_differences() -> None:
    # given the first-promotion example
    bundle = example_bundle("allow_staging_first_promotion")
    # when its champion fields are read
    # then they are empty, as the schema documents for a first promotion
    assert bundle.champion is None
    assert bundle.differences == {}
    assert bundle.decision_flip_share is None
