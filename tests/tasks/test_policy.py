from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.decision import DecisionBundle, bundle_hash
from tasks.policy import (
    OPA_URL_ENV,
    HttpOpa,
    InProcessOpa,
    PolicyEngine,
    decision_from_answer,
    engine_from_env,
    policy_digest,
)
from tests.conftest_opa import OpaRestStandIn
from tests.policy_helpers import POLICY_DIR, copy_policies, example_bundle, example_paths

ALLOW = "allow_production_with_champion"
DENY = "deny_production_regression"


@pytest.fixture(scope="module")
def engine() -> Iterator[InProcessOpa]:
    with InProcessOpa(POLICY_DIR) as loaded:
        yield loaded


def write_policy(folder: Path, source: str, name: str = "promotion.rego") -> Path:
    """A one-module policy folder, for tests that need a broken or odd policy."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source, encoding="utf-8")
    return folder


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- the in-process engine ------------------------------------------------------------------------


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.stem)
def test_in_process_decision_follows_the_example_name(engine: InProcessOpa, path: Path) -> None:
    # given a committed example
    bundle = DecisionBundle.model_validate_json(path.read_text(encoding="utf-8"))
    # when the real engine decides it
    decision = engine.decide(bundle)
    # then allow_* are allowed with no violation and deny_* are denied with named rules
    assert decision.allow is path.name.startswith("allow_")
    assert bool(decision.violations) is path.name.startswith("deny_")
    assert all(v.rule and v.message for v in decision.violations)


def test_decision_is_tied_to_policy_and_bundle_digests(engine: InProcessOpa) -> None:
    # given a bundle
    bundle = example_bundle(DENY)
    # when it is decided
    decision = engine.decide(bundle)
    # then the decision names the exact policies and evidence, and the rule that denied
    assert decision.policy_digest == policy_digest(POLICY_DIR)
    assert decision.bundle_hash == bundle_hash(bundle)
    assert decision.violation_rules() == frozenset({"regression.roc_auc"})


def test_first_promotion_carries_the_floors_only_warning(engine: InProcessOpa) -> None:
    # given a bundle with no champion
    bundle = example_bundle("allow_staging_first_promotion")
    # when it is decided
    decision = engine.decide(bundle)
    # then it is allowed with a warning saying only floors gated it
    assert decision.allow
    assert any(w.startswith("first promotion") for w in decision.warnings)


def test_parse_error_fails_closed_naming_file_and_line(tmp_path: Path) -> None:
    # given a policy folder whose rule lacks the v1 `if` keyword on line 3
    folder = write_policy(tmp_path / "policies", "package scoregate.promotion\n\ndecision { true }\n")
    # when a decision is asked for
    with InProcessOpa(folder) as broken:
        decision = broken.decide(example_bundle(ALLOW))
    # then it is a deny under policy.compile_error that points at the file and line
    assert not decision.allow
    assert [v.rule for v in decision.violations] == ["policy.compile_error"]
    assert f"{folder / 'promotion.rego'}:3" in decision.violations[0].message


def test_compile_error_found_at_load_not_mid_decision(tmp_path: Path) -> None:
    # given a policy that parses but does not compile (an unsafe variable on line 2)
    folder = write_policy(tmp_path / "policies", "package scoregate.promotion\ndecision := x if x > 1\n")
    # when it is loaded
    broken = InProcessOpa(folder)
    # then the load error is recorded with file and line, and every decision denies with it
    assert broken.load_error is not None
    assert broken.load_error.rule == "policy.compile_error"
    assert "promotion.rego:2" in broken.load_error.message
    assert "unsafe" in broken.load_error.message
    assert broken.decide(example_bundle(ALLOW)).violations == [broken.load_error]


def test_invalid_data_file_fails_closed(tmp_path: Path) -> None:
    # given a copy of the policies whose threshold file is not JSON
    folder = copy_policies(tmp_path / "policies")
    (folder / "data" / "promotion.json").write_text('{"environments": ', encoding="utf-8")
    # when a decision is asked for
    decision = InProcessOpa(folder).decide(example_bundle(ALLOW))
    # then it is a compile error naming the data file
    assert not decision.allow
    assert decision.violations[0].rule == "policy.compile_error"
    assert "promotion.json:1" in decision.violations[0].message


def test_missing_policy_folder_fails_closed(tmp_path: Path) -> None:
    # given a folder with no policies
    # when a decision is asked for
    decision = InProcessOpa(tmp_path / "nowhere").decide(example_bundle(ALLOW))
    # then it is a deny under policy.unavailable
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"
    assert "no .rego" in decision.violations[0].message


def test_engine_error_during_evaluation_fails_closed(tmp_path: Path) -> None:
    # given a policy that divides by zero when evaluated (strict built-in errors are on)
    folder = write_policy(
        tmp_path / "policies", "package scoregate.promotion\ndecision := 1 / count(input.approvals)\n"
    )
    # when a bundle without approvals is decided
    decision = InProcessOpa(folder).decide(example_bundle("allow_staging_first_promotion"))
    # then the engine error becomes a deny
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"
    assert "divide by zero" in decision.violations[0].message


def test_undefined_decision_fails_closed(tmp_path: Path) -> None:
    # given a policy package without a decision rule
    folder = write_policy(tmp_path / "policies", "package scoregate.promotion\nother := true\n")
    # when a decision is asked for
    decision = InProcessOpa(folder).decide(example_bundle(ALLOW))
    # then "undefined" is not "allow"
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"
    assert "undefined" in decision.violations[0].message


def test_malformed_decision_fails_closed(tmp_path: Path) -> None:
    # given a policy whose decision says allow as a string
    folder = write_policy(
        tmp_path / "policies",
        'package scoregate.promotion\ndecision := {"allow": "yes", "violations": [], "warnings": []}\n',
    )
    # when a decision is asked for
    decision = InProcessOpa(folder).decide(example_bundle(ALLOW))
    # then the malformed answer denies and says where it is wrong
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"
    assert "malformed" in decision.violations[0].message
    assert "allow" in decision.violations[0].message


def test_contradictory_or_unexplained_answers_deny() -> None:
    # given an answer that allows while listing a violation, and one that denies without a reason
    contradictory = {"allow": True, "violations": [{"rule": "x", "message": "m"}], "warnings": []}
    unexplained = {"allow": False, "violations": [], "warnings": []}
    # when they are turned into decisions
    first = decision_from_answer(contradictory, digest="p", bundle_digest="b")
    second = decision_from_answer(unexplained, digest="p", bundle_digest="b")
    # then both deny, and the second names why
    assert not first.allow
    assert first.violation_rules() == frozenset({"x"})
    assert not second.allow
    assert second.violation_rules() == frozenset({"policy.unexplained_deny"})


def test_closed_engine_denies() -> None:
    # given an engine that was closed
    engine = InProcessOpa(POLICY_DIR)
    engine.close()
    # when a decision is asked for
    decision = engine.decide(example_bundle(ALLOW))
    # then it denies
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"


def test_policy_digest_covers_policies_and_data_only(tmp_path: Path) -> None:
    # given a copy of the policies
    folder = copy_policies(tmp_path / "policies")
    before = policy_digest(folder)
    # when a test file and an example change, then a threshold changes
    (folder / "promotion_test.rego").write_text("package scoregate.promotion_test\n", encoding="utf-8")
    (folder / "examples" / "allow_staging_first_promotion.json").unlink()
    unchanged = policy_digest(folder)
    data = folder / "data" / "promotion.json"
    data.write_text(data.read_text(encoding="utf-8").replace('"min": 0.80', '"min": 0.81'), encoding="utf-8")
    # then only the threshold change moves the digest
    assert unchanged == before == policy_digest(POLICY_DIR)
    assert policy_digest(folder) != before


def test_batch_decisions_equal_single_decisions(engine: InProcessOpa) -> None:
    # given every example, and one document that makes the policy raise (an unparseable timestamp)
    bundles = [DecisionBundle.model_validate_json(p.read_text(encoding="utf-8")) for p in example_paths()]
    items = [(b.model_dump(mode="json"), bundle_hash(b)) for b in bundles]
    poison = dict(items[0][0], requested_at="not a time")
    # when they are decided in one batch
    decisions = engine.decide_many([*items, (poison, "poison")])
    # then each equals its single decision, and only the poisoned one fails closed
    assert decisions[:-1] == [engine.decide(b) for b in bundles]
    assert not decisions[-1].allow
    assert decisions[-1].violations[0].rule == "policy.unavailable"
    assert decisions[-1].bundle_hash == "poison"


def test_engine_from_env_picks_http_only_when_the_url_is_set() -> None:
    # given environments with and without SCOREGATE_OPA_URL
    # when an engine is picked for each
    remote = engine_from_env(POLICY_DIR, {OPA_URL_ENV: "http://127.0.0.1:8181"})
    local = engine_from_env(POLICY_DIR, {})
    # then the URL selects the HTTP engine, which records the local policy digest
    assert isinstance(remote, HttpOpa)
    assert remote.policy_digest == policy_digest(POLICY_DIR)
    assert isinstance(local, InProcessOpa)
    remote.close()
    local.close()


# --- an OPA server over HTTP (against the OpaRestStandIn test fixture) ----------------------------


def test_http_engine_decides_like_the_in_process_engine(engine: InProcessOpa) -> None:
    # given the stand-in serving the shipped policies
    with OpaRestStandIn(POLICY_DIR) as server, HttpOpa(server.url, policy_digest=engine.policy_digest) as remote:
        # when both engines decide every example
        bundles = [DecisionBundle.model_validate_json(p.read_text(encoding="utf-8")) for p in example_paths()]
        remote_decisions = [remote.decide(b) for b in bundles]
        # then the answers are identical, and the client asked OPA's decision endpoint
        assert remote_decisions == [engine.decide(b) for b in bundles]
        assert set(server.requests) == {"/v1/data/scoregate/promotion/decision"}


def test_http_engine_fails_closed_when_unreachable() -> None:
    # given a URL nothing listens on
    with HttpOpa(f"http://127.0.0.1:{closed_port()}", policy_digest="p", retries=0) as remote:
        # when a decision is asked for
        decision = remote.decide(example_bundle(ALLOW))
    # then it denies and says the server was unreachable
    assert not decision.allow
    assert decision.violations[0].rule == "policy.unavailable"
    assert "unreachable" in decision.violations[0].message


def test_http_engine_fails_closed_on_timeout() -> None:
    # given a server slower than the client's timeout
    with (
        OpaRestStandIn(POLICY_DIR, delay_seconds=1.0) as server,
        HttpOpa(server.url, policy_digest="p", timeout=0.2, retries=0) as remote,
    ):
        # when a decision is asked for
        decision = remote.decide(example_bundle(ALLOW))
    # then it denies and says the request timed out
    assert not decision.allow
    assert "timed out" in decision.violations[0].message


def test_http_engine_fails_closed_on_undefined_and_errors(tmp_path: Path) -> None:
    # given one server without the decision rule and one whose decision raises
    undefined = write_policy(tmp_path / "undefined", "package scoregate.promotion\nother := 1\n")
    failing = write_policy(
        tmp_path / "failing", "package scoregate.promotion\ndecision := 1 / count(input.approvals)\n"
    )
    bundle = example_bundle("allow_staging_first_promotion")
    # when each is asked for a decision
    with OpaRestStandIn(undefined) as server, HttpOpa(server.url, policy_digest="p") as remote:
        no_result = remote.decide(bundle)
    with OpaRestStandIn(failing) as server, HttpOpa(server.url, policy_digest="p", retries=0) as remote:
        server_error = remote.decide(bundle)
    # then both deny, naming what went wrong
    assert not no_result.allow
    assert "undefined" in no_result.violations[0].message
    assert not server_error.allow
    assert "HTTP 500" in server_error.violations[0].message


@pytest.mark.parametrize("url", ["opa.internal:8181", "ftp://opa:21", "http://opa:8181/v1/data"])
def test_http_engine_rejects_unusable_urls(url: str) -> None:
    # given an OPA URL the client cannot use
    remote: PolicyEngine = HttpOpa(url, policy_digest="p")
    # when a decision is asked for
    decision = remote.decide(example_bundle(ALLOW))
    # then it denies with a message naming the setting
    assert not decision.allow
    assert OPA_URL_ENV in decision.violations[0].message
