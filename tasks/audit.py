"""An append-only, hash-chained audit log in JSON lines.

Every promotion decision, rollback and alias move appends one `AuditRecord`. Each record carries the hash of
the record before it (`prev_hash`, 64 zeros for the first) and its own `hash` over everything else, so editing,
removing, inserting or reordering a record breaks the chain where it happened, and `verify_audit_log` names it.

Appends take an exclusive `fcntl` lock on the log file for the read-last-record-then-write step, so two
processes appending at once cannot interleave lines or fork the chain. The chain cannot show that records were
cut off the end; compare the head hash with one kept elsewhere (`expected_head`) for that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from tasks.decision import canonical_json

__all__ = [
    "GENESIS_HASH",
    "AuditLogError",
    "AuditProblem",
    "AuditRecord",
    "AuditVerification",
    "append_audit_record",
    "read_audit_records",
    "record_hash",
    "verify_audit_log",
]

GENESIS_HASH = "0" * 64
_TAIL_BLOCK = 64 * 1024


def _as_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


class AuditRecord(BaseModel):
    """One event in the audit trail. `hash` covers every other field, `prev_hash` included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1, description="1 for the first record, then +1 per record.")
    at: Annotated[AwareDatetime, AfterValidator(_as_utc)]
    actor: str = Field(min_length=1)
    action: str = Field(min_length=1, description='For example "promotion.decision" or "rollback".')
    environment: str
    model_name: str
    model_version: str
    bundle_hash: str = ""
    policy_digest: str = ""
    decision: Literal["allow", "deny"] | None = None
    details: dict[str, str] = Field(default_factory=dict)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class AuditLogError(Exception):
    """The log cannot be appended to safely (its last record is unreadable)."""


def record_hash(fields: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a record's fields without `hash`."""
    body = {key: value for key, value in fields.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _last_line(handle: BinaryIO) -> bytes:
    """The last non-empty line of an open binary file, reading backwards from the end in blocks."""
    handle.seek(0, os.SEEK_END)
    position = handle.tell()
    tail = b""
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        stripped = tail.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    return tail.rstrip(b"\n")


def append_audit_record(
    path: Path,
    *,
    actor: str,
    action: str,
    environment: str,
    model_name: str,
    model_version: str,
    bundle_hash: str = "",
    policy_digest: str = "",
    decision: Literal["allow", "deny"] | None = None,
    details: Mapping[str, str] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record, chained to the current last record, under an exclusive lock; returns it.

    Raises `AuditLogError` when the last record cannot be read: appending after garbage would hide it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            last = _last_line(handle)
            if last:
                try:
                    previous = AuditRecord.model_validate_json(last)
                except ValidationError as error:
                    raise AuditLogError(
                        f"{path}: the last record is unreadable, refusing to append: {error}"
                    ) from error
                seq, prev_hash = previous.seq + 1, previous.hash
            else:
                seq, prev_hash = 1, GENESIS_HASH
            fields: dict[str, Any] = {
                "seq": seq,
                "at": at or datetime.now(UTC),
                "actor": actor,
                "action": action,
                "environment": environment,
                "model_name": model_name,
                "model_version": model_version,
                "bundle_hash": bundle_hash,
                "policy_digest": policy_digest,
                "decision": decision,
                "details": dict(details or {}),
                "prev_hash": prev_hash,
                "hash": GENESIS_HASH,  # placeholder so the fields validate; replaced below
            }
            draft = AuditRecord.model_validate(fields)
            record = draft.model_copy(update={"hash": record_hash(draft.model_dump(mode="json"))})
            # "a" mode appends at the end whatever the seek position; one write call per line, then fsync, so
            # a record is either wholly on disk or absent.
            handle.write((canonical_json(record.model_dump(mode="json")) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return record


@dataclass(frozen=True)
class AuditProblem:
    """One break in the chain: where (line number, seq when readable) and what is wrong."""

    line: int
    seq: int | None
    kind: Literal["unreadable", "edited", "removed", "reordered", "chain_broken", "truncated"]
    message: str


@dataclass(frozen=True)
class AuditVerification:
    """The result of walking the whole log."""

    path: Path
    records: int
    head_hash: str
    problems: tuple[AuditProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_audit_log(path: Path, *, expected_head: str | None = None) -> AuditVerification:
    """Walk the log and report every record that was edited, removed, inserted or reordered.

    Each line is checked on its own (its hash matches its content) and against the line before it (prev_hash
    and seq follow on). `expected_head`, a head hash kept elsewhere, also catches records cut off the end.
    A missing log is an empty, valid log.
    """
    problems: list[AuditProblem] = []
    records = 0
    prev_hash = GENESIS_HASH
    prev_seq = 0
    prev_line = 0
    lines = path.read_bytes().splitlines() if path.exists() else []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            problems.append(
                AuditProblem(
                    number,
                    None,
                    "unreadable",
                    f"line {number}: empty line inside the log",
                )
            )
            continue
        try:
            fields = json.loads(raw)
            record = AuditRecord.model_validate(fields)
        except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as error:
            first = str(error).splitlines()[0]
            problems.append(
                AuditProblem(
                    number,
                    None,
                    "unreadable",
                    f"line {number}: not a valid audit record: {first}",
                )
            )
            continue
        records += 1
        where = f"line {number} (seq {record.seq})"
        if record_hash(fields) != record.hash:
            problems.append(
                AuditProblem(
                    number,
                    record.seq,
                    "edited",
                    f"{where}: content does not match its hash",
                )
            )
        if record.seq <= prev_seq:
            problems.append(
                AuditProblem(
                    number,
                    record.seq,
                    "reordered",
                    f"{where}: seq does not follow seq {prev_seq} before it",
                )
            )
        elif record.seq > prev_seq + 1:
            missing = f"seq {prev_seq + 1}" if record.seq == prev_seq + 2 else f"seq {prev_seq + 1}-{record.seq - 1}"
            problems.append(
                AuditProblem(
                    number,
                    record.seq,
                    "removed",
                    f"{where}: {missing} missing before it",
                )
            )
        elif record.prev_hash != prev_hash:
            # seq follows on but the link does not: the record before was replaced or rehashed.
            if prev_seq == 0:
                message = f"{where}: prev_hash is not the genesis hash"
            else:
                message = (
                    f"{where}: prev_hash does not match the hash of seq {prev_seq} on line {prev_line} "
                    "(that record was altered and rehashed, or this one was)"
                )
            problems.append(AuditProblem(number, record.seq, "chain_broken", message))
        prev_hash, prev_seq, prev_line = record.hash, record.seq, number
    if expected_head is not None and expected_head != prev_hash:
        problems.append(
            AuditProblem(
                len(lines),
                prev_seq or None,
                "truncated",
                f"the log ends at hash {prev_hash[:12]}..., not at the expected head {expected_head[:12]}...",
            )
        )
    return AuditVerification(path=path, records=records, head_hash=prev_hash, problems=tuple(problems))


def read_audit_records(path: Path) -> list[AuditRecord]:
    """Every record of a log that verifies; raises `AuditLogError` naming the first problem otherwise.

    Decisions that read the trail (a production promotion needs an earlier staging one) must not trust a log that
    was edited, so they read it through here and fail closed.
    """
    if not path.exists():
        return []
    verification = verify_audit_log(path)
    if not verification.ok:
        first = verification.problems[0]
        raise AuditLogError(f"{path}: the audit log does not verify: line {first.line}: {first.message}")
    return [AuditRecord.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]
