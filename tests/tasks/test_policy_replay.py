from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks.decision import DecisionBundle, bundle_hash
from tasks.policy import HttpOpa, InProcessOpa
from tasks.policy_replay import (
    load_stored_decision,
    render_replay_markdown,
    replay_decisions,
    store_decision,
)
from tests.conftest_opa import OpaRestStandIn
from tests.policy_helpers import POLICY_DIR, copy_policies, example_bundle, example_paths

DECIDED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[InProcessOpa]:
    with InProcessOpa(POLICY_DIR) as loaded:
        yield loaded


@pytest.fixture
def store(tmp_path: Path, engine: InProcessOpa) -> Path:
    """Every example decided under the shipped policies and stored, one day apart in file order."""
    folder = tmp_path / "decisions"
    for day, path in enumerate(example_paths()):
        bundle = DecisionBundle.model_validate_json(path.read_text(encoding="utf-8"))
        store_decision(folder, bundle, engine.decide(bundle), decided_at=DECIDED + timedelta(days=day))
    return folder


def edit_data(folder: Path, old: str, new: str) -> None:
    data = folder / "data" / "promotion.json"
    text = data.read_text(encoding="utf-8")
    assert old in text
    data.write_text(text.replace(old, new), encoding="utf-8")


def test_store_writes_one_file_per_bundle_hash(tmp_path: Path, engine: InProcessOpa) -> None:
    # given a decided bundle
    bundle = example_bundle("deny_production_regression")
    decision = engine.decide(bundle)
    # when it is stored
    path = store_decision(tmp_path / "store", bundle, decision, decided_at=DECIDED)
    # then the file is named by the bundle hash and reads back as stored
    assert path.name == f"{bundle_hash(bundle)}.json"
    stored, document = load_stored_decision(path)
    assert (stored.bundle, stored.decision, stored.decided_at) == (bundle, decision, DECIDED)
    assert document == bundle.model_dump(mode="json")
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_store_refuses_a_decision_for_another_bundle(tmp_path: Path, engine: InProcessOpa) -> None:
    # given a decision made for a different bundle
    decision = engine.decide(example_bundle("allow_staging_first_promotion"))
    # when it is stored with the wrong bundle
    # then it is refused
    with pytest.raises(ValueError, match="not"):
        store_decision(tmp_path, example_bundle("allow_production_with_champion"), decision)


def test_unchanged_policies_flip_nothing(store: Path, engine: InProcessOpa) -> None:
    # given decisions stored under the current policies
    # when they are replayed under the same policies
    result = replay_decisions(store, engine)
    # then every decision is re-made and none flips or changes rules
    assert result.replayed == len(example_paths())
    assert (result.flips, result.rule_changes, result.unreadable) == ((), 0, ())
    assert result.policy_digest == engine.policy_digest


def test_a_stricter_floor_flips_allows_to_deny_naming_the_rule(store: Path, tmp_path: Path) -> None:
    # given policies whose staging roc_auc floor rises from 0.80 to 0.95
    folder = copy_policies(tmp_path / "policies")
    edit_data(folder, '"roc_auc": {"min": 0.80', '"roc_auc": {"min": 0.95')
    # when the stored decisions are replayed under them
    with InProcessOpa(folder) as stricter:
        result = replay_decisions(store, stricter)
    # then the staging allow flips to deny because of metric_floor.roc_auc, and nothing flips the other way
    assert [(f.environment, f.direction, f.rules) for f in result.flips] == [
        ("staging", "allow -> deny", ("metric_floor.roc_auc",))
    ]
    assert result.flipped_to_allow == 0
    assert "below the staging floor 0.9500" in result.flips[0].messages[0]


def test_a_lifted_freeze_flips_deny_to_allow_naming_the_old_rule(store: Path, tmp_path: Path) -> None:
    # given policies without the production freeze window
    folder = copy_policies(tmp_path / "policies")
    data = folder / "data" / "promotion.json"
    config = json.loads(data.read_text(encoding="utf-8"))
    config["environments"]["production"]["freeze_windows"] = []
    data.write_text(json.dumps(config), encoding="utf-8")
    # when the stored decisions are replayed
    with InProcessOpa(folder) as relaxed:
        result = replay_decisions(store, relaxed)
    # then the freeze-window deny flips to allow, blamed on the rule that used to deny it
    assert [(f.direction, f.rules) for f in result.flips] == [("deny -> allow", ("freeze_window",))]
    assert result.flips[0].now_allowed


def test_since_skips_older_decisions(store: Path, engine: InProcessOpa) -> None:
    # given decisions made on consecutive days
    # when only those from the third day on are replayed (a naive bound reads as UTC)
    result = replay_decisions(store, engine, since=(DECIDED + timedelta(days=2)).replace(tzinfo=None))
    # then the first two are skipped
    assert result.skipped_before_since == 2
    assert result.replayed == len(example_paths()) - 2


def test_edited_and_foreign_files_are_reported_not_replayed(store: Path, engine: InProcessOpa) -> None:
    # given one stored bundle edited in place and a file that is not a stored decision
    victim = sorted(store.glob("*.json"))[0]
    document = json.loads(victim.read_text(encoding="utf-8"))
    document["bundle"]["requested_by"] = "mallory"
    victim.write_text(json.dumps(document), encoding="utf-8")
    (store / "notes.json").write_text("[]", encoding="utf-8")
    # when the store is replayed
    result = replay_decisions(store, engine)
    # then both are listed as unreadable with the reason, and the rest replay
    reasons = dict(result.unreadable)
    assert "edited" in reasons[victim.name]
    assert "not a stored decision" in reasons["notes.json"]
    assert result.replayed == len(example_paths()) - 1


def test_workers_and_chunks_do_not_change_the_result(store: Path, tmp_path: Path) -> None:
    # given policies that flip one decision
    folder = copy_policies(tmp_path / "policies")
    edit_data(folder, '"roc_auc": {"min": 0.80', '"roc_auc": {"min": 0.95')
    with InProcessOpa(folder) as stricter:
        # when replayed in one chunk on one engine, and in chunks of two on two engines in parallel
        single = replay_decisions(store, stricter, chunk_size=1000, workers=1)
        parallel = replay_decisions(store, stricter, chunk_size=2, workers=2)
        # then the findings are identical and the given engine still works afterwards
        assert (single.replayed, single.flips, single.rule_changes) == (
            parallel.replayed,
            parallel.flips,
            parallel.rule_changes,
        )
        assert len(single.flips) == 1
        assert stricter.decide(example_bundle("allow_production_with_champion")).allow


def test_a_clone_decides_like_its_original(engine: InProcessOpa) -> None:
    # given a clone of the shipped-policy engine
    with engine.clone() as twin:
        # when both decide the same bundle
        bundle = example_bundle("deny_production_freeze_window")
        # then the decisions (digest included) are identical
        assert twin.decide(bundle) == engine.decide(bundle)
        assert twin.policy_digest == engine.policy_digest


def test_replay_through_an_http_engine(store: Path, tmp_path: Path) -> None:
    # given an OPA server (the OpaRestStandIn test fixture) serving stricter policies
    folder = copy_policies(tmp_path / "policies")
    edit_data(folder, '"roc_auc": {"min": 0.80', '"roc_auc": {"min": 0.95')
    with OpaRestStandIn(folder) as server, HttpOpa(server.url, policy_digest="remote") as remote:
        # when the store is replayed one request per bundle
        result = replay_decisions(store, remote)
    # then it finds the same flip as the in-process engine
    assert [f.rules for f in result.flips] == [("metric_floor.roc_auc",)]
    assert result.policy_digest == "remote"


def test_markdown_lists_each_flip_with_its_rules(store: Path, tmp_path: Path) -> None:
    # given a replay with one flip and one unreadable file
    folder = copy_policies(tmp_path / "policies")
    edit_data(folder, '"roc_auc": {"min": 0.80', '"roc_auc": {"min": 0.95')
    (store / "junk.json").write_text("{}", encoding="utf-8")
    with InProcessOpa(folder) as stricter:
        result = replay_decisions(store, stricter)
    # when it is rendered for a merge request
    markdown = render_replay_markdown(result)
    # then the summary counts, the flip row and the unreadable file all appear
    assert "| allow -> deny | 1 |" in markdown
    flip = result.flips[0]
    assert f"| staging | allow -> deny | metric_floor.roc_auc | `{flip.bundle_hash[:12]}` |" in markdown
    assert "`junk.json`" in markdown


def test_markdown_for_a_quiet_replay(store: Path, engine: InProcessOpa) -> None:
    # given a replay with no flips
    result = replay_decisions(store, engine)
    # when it is rendered
    markdown = render_replay_markdown(result)
    # then it says so plainly
    assert "No stored decision would flip." in markdown
    assert "| allow -> deny | 0 |" in markdown


def test_replay_of_an_empty_or_missing_store(tmp_path: Path, engine: InProcessOpa) -> None:
    # given no store folder
    # when it is replayed
    result = replay_decisions(tmp_path / "none", engine)
    # then nothing is replayed and nothing flips
    assert (result.replayed, result.flips, result.unreadable) == (0, (), ())
