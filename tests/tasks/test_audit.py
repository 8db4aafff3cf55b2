from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.audit import (
    GENESIS_HASH,
    AuditLogError,
    AuditRecord,
    append_audit_record,
    record_hash,
    verify_audit_log,
)

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def append(path: Path, index: int, actor: str = "promotion-flow") -> AuditRecord:
    return append_audit_record(
        path,
        actor=actor,
        action="promotion.decision",
        environment="production",
        model_name="card_fraud",
        model_version=str(index),
        bundle_hash=f"{index:064x}",
        policy_digest="ab" * 32,
        decision="allow" if index % 2 else "deny",
        details={"merge_request": str(100 + index)},
        at=START + timedelta(minutes=index),
    )


def write_log(path: Path, count: int) -> list[AuditRecord]:
    return [append(path, index) for index in range(1, count + 1)]


def rewrite_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_records_chain_from_the_genesis_hash(tmp_path: Path) -> None:
    # given an empty log
    log = tmp_path / "audit" / "log.jsonl"
    # when three records are appended
    records = write_log(log, 3)
    # then they are numbered, chained, hashed over their content, and verify clean
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH == "0" * 64
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert all(r.hash == record_hash(r.model_dump(mode="json")) for r in records)
    verification = verify_audit_log(log)
    assert verification.ok
    assert (verification.records, verification.head_hash) == (3, records[-1].hash)


def test_each_line_is_canonical_json_of_the_record(tmp_path: Path) -> None:
    # given one appended record
    log = tmp_path / "log.jsonl"
    record = append(log, 1)
    # when the line is read back
    line = log.read_text(encoding="utf-8").splitlines()[0]
    # then it parses to the same record
    assert AuditRecord.model_validate_json(line) == record
    assert json.loads(line)["decision"] == "allow"


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    # given a log whose second record's actor was changed in place
    log = tmp_path / "log.jsonl"
    write_log(log, 3)
    lines = log.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"actor":"promotion-flow"', '"actor":"mallory"')
    rewrite_lines(log, lines)
    # when the log is verified
    verification = verify_audit_log(log)
    # then line 2 (seq 2) is reported as edited, and nothing else
    assert [(p.line, p.seq, p.kind) for p in verification.problems] == [(2, 2, "edited")]
    assert "line 2 (seq 2)" in verification.problems[0].message


def test_an_edited_and_rehashed_record_breaks_the_next_link(tmp_path: Path) -> None:
    # given a log whose second record was changed and given a fresh, self-consistent hash
    log = tmp_path / "log.jsonl"
    write_log(log, 3)
    lines = log.read_text(encoding="utf-8").splitlines()
    forged = json.loads(lines[1]) | {"decision": "allow"}
    forged["hash"] = record_hash(forged)
    lines[1] = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    rewrite_lines(log, lines)
    # when the log is verified
    verification = verify_audit_log(log)
    # then the third record no longer links to the second, and the message names both
    assert [(p.line, p.seq, p.kind) for p in verification.problems] == [(3, 3, "chain_broken")]
    assert "seq 2 on line 2" in verification.problems[0].message


def test_a_removed_record_is_named(tmp_path: Path) -> None:
    # given a log with its second record deleted
    log = tmp_path / "log.jsonl"
    write_log(log, 4)
    lines = log.read_text(encoding="utf-8").splitlines()
    rewrite_lines(log, [lines[0], *lines[2:]])
    # when the log is verified
    verification = verify_audit_log(log)
    # then the gap is reported where it shows, naming the missing seq
    assert [(p.line, p.seq, p.kind) for p in verification.problems] == [(2, 3, "removed")]
    assert "seq 2 missing" in verification.problems[0].message


def test_reordered_records_are_named(tmp_path: Path) -> None:
    # given a log whose second and third records were swapped
    log = tmp_path / "log.jsonl"
    write_log(log, 4)
    lines = log.read_text(encoding="utf-8").splitlines()
    rewrite_lines(log, [lines[0], lines[2], lines[1], lines[3]])
    # when the log is verified
    verification = verify_audit_log(log)
    # then the jump and the step back are both reported, with their lines and seqs
    kinds = [(p.line, p.seq, p.kind) for p in verification.problems]
    assert (2, 3, "removed") in kinds
    assert (3, 2, "reordered") in kinds
    assert not verification.ok


def test_a_truncated_tail_needs_the_expected_head(tmp_path: Path) -> None:
    # given a log whose last record was cut off, and the head hash kept before the cut
    log = tmp_path / "log.jsonl"
    records = write_log(log, 3)
    lines = log.read_text(encoding="utf-8").splitlines()
    rewrite_lines(log, lines[:2])
    # when it is verified without and with the expected head
    alone = verify_audit_log(log)
    anchored = verify_audit_log(log, expected_head=records[-1].hash)
    # then the chain alone cannot see it, the anchor can
    assert alone.ok
    assert [p.kind for p in anchored.problems] == ["truncated"]


def test_garbage_is_reported_and_blocks_appending(tmp_path: Path) -> None:
    # given a log whose last line is not a record
    log = tmp_path / "log.jsonl"
    write_log(log, 2)
    with log.open("a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    # when it is verified and appended to
    verification = verify_audit_log(log)
    # then the line is named, and appending refuses rather than chain onto garbage
    assert [(p.line, p.kind) for p in verification.problems] == [(3, "unreadable")]
    with pytest.raises(AuditLogError, match="unreadable"):
        append(log, 3)


def test_a_missing_log_is_empty_and_valid(tmp_path: Path) -> None:
    # given no log file
    # when it is verified
    verification = verify_audit_log(tmp_path / "absent.jsonl")
    # then there is nothing wrong and the head is the genesis hash
    assert verification.ok
    assert (verification.records, verification.head_hash) == (0, GENESIS_HASH)


def _append_many(path: str, actor: str, count: int, start: Any) -> None:
    start.wait()  # both processes begin together, so their appends really overlap
    for index in range(count):
        append(Path(path), index, actor=actor)


def test_concurrent_processes_never_interleave_or_fork_the_chain(tmp_path: Path) -> None:
    # given two processes appending 100 records each to the same log at the same moment
    # (without the lock this loses or forks records: checked by removing it)
    log = tmp_path / "log.jsonl"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_append_many, args=(str(log), actor, 100, start)) for actor in ("a", "b")]
    # when both run to the end
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    # then all 200 records form one intact chain with consecutive seqs
    assert [worker.exitcode for worker in workers] == [0, 0]
    verification = verify_audit_log(log)
    assert verification.ok, verification.problems
    assert verification.records == 200
    actors = [json.loads(line)["actor"] for line in log.read_text(encoding="utf-8").splitlines()]
    assert sorted(actors) == ["a"] * 100 + ["b"] * 100
