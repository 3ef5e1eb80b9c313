"""Append-only, hash-chained audit trail.

Each entry's hash is SHA-256 over the previous entry's hash and the canonical JSON of the entry's
own fields, so altering any stored field, removing a row or truncating the tail breaks the chain
at a point `verify` names. Appends lock the single `audit_head` row, so concurrent transactions
queue instead of forking the chain; the database additionally refuses UPDATE and DELETE on
`audit_log` with triggers (see migration 0002).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.orm import Session

from regenguide.store.db import transaction
from regenguide.store.models import AuditEntry, AuditHead

GENESIS = "0" * 64
ACTIONS = frozenset({"read", "list", "create", "update", "delete", "export", "sign", "override", "verify", "login"})


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def digest(payload: Any) -> str:
    """Digest of a change (or of what was read): SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _utc_text(at: datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    body = dict(fields)
    body["at"] = _utc_text(body["at"])
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """What to record; `payload` is digested, never stored."""

    username: str
    action: str
    resource: str
    resource_id: str | int | None = None
    patient_id: int | None = None
    user_id: int | None = None
    payload: Any = None


def _fields(seq: int, at: datetime, rec: AuditRecord) -> dict[str, Any]:
    if rec.action not in ACTIONS:
        raise ValueError(f"unknown audit action {rec.action!r}")
    return {
        "seq": seq,
        "at": at,
        "user_id": rec.user_id,
        "username": rec.username,
        "action": rec.action,
        "resource": rec.resource,
        "resource_id": None if rec.resource_id is None else str(rec.resource_id),
        "patient_id": rec.patient_id,
        "digest": digest(rec.payload),
    }


_HEAD_FOR_UPDATE = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
_INSERT_ENTRIES = insert(AuditEntry)
_UPDATE_HEAD = (update(AuditHead).where(AuditHead.id == 1)
                .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")))


def append(session: Session, records: Sequence[AuditRecord] | AuditRecord, *, at: datetime | None = None) -> int:
    """Append records in the caller's transaction; returns the last sequence number."""
    if isinstance(records, AuditRecord):
        records = [records]
    if not records:
        return 0
    # Core statements on the session's connection, not the ORM's unit of work: every request appends here,
    # and the head row is only ever read and written by this function (the ORM objects would cost more
    # than the three statements themselves).
    session.flush()  # the caller's pending ORM changes go first, in the same transaction
    conn = session.connection()
    seq, prev = conn.execute(_HEAD_FOR_UPDATE).one()
    at = at or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for rec in records:
        seq += 1
        fields = _fields(seq, at, rec)
        h = entry_hash(prev, fields)
        rows.append({**fields, "prev_hash": prev, "hash": h})
        prev = h
    conn.execute(_INSERT_ENTRIES, rows)
    conn.execute(_UPDATE_HEAD, {"new_seq": seq, "new_hash": prev})
    for obj in list(session.identity_map.values()):
        if isinstance(obj, AuditHead):  # a head loaded earlier in this session is stale now
            session.expire(obj)
    return seq


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Recompute the chain from the genesis; name the first entry that does not fit."""
    prev, expected, checked = GENESIS, 1, 0
    last_seq = 0
    stmt = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=batch)
    for entry in session.execute(stmt).scalars():
        if entry.seq != expected:
            return VerifyResult(False, checked, expected, f"entry {expected} is missing (next is {entry.seq})")
        if entry.prev_hash != prev:
            return VerifyResult(False, checked, entry.seq, "prev_hash does not match the previous entry")
        fields = {
            "seq": entry.seq,
            "at": entry.at,
            "user_id": entry.user_id,
            "username": entry.username,
            "action": entry.action,
            "resource": entry.resource,
            "resource_id": entry.resource_id,
            "patient_id": entry.patient_id,
            "digest": entry.digest,
        }
        if entry_hash(prev, fields) != entry.hash:
            return VerifyResult(False, checked, entry.seq, "entry content does not match its hash")
        prev, expected, checked, last_seq = entry.hash, expected + 1, checked + 1, entry.seq
    head = session.get(AuditHead, 1)
    if head is None:
        return VerifyResult(False, checked, None, "audit head row is missing")
    if head.seq != last_seq or head.hash != prev:
        return VerifyResult(False, checked, last_seq + 1, f"entries after {last_seq} are missing (head is {head.seq})")
    return VerifyResult(True, checked)


def entries_for_patient(session: Session, patient_id: int) -> Iterable[AuditEntry]:
    return session.execute(
        select(AuditEntry).where(AuditEntry.patient_id == patient_id).order_by(AuditEntry.seq)
    ).scalars()


class GroupCommit:
    """Appends from many threads committed together: one transaction, one head update, one commit for
    every record that arrived while the previous batch was being written (group commit, as databases do
    for their own logs). The chain is serial by nature, so under load its write lock, not the work of a
    request, sets the pace; batching lets one lock hold serve many requests. Each caller still returns
    only after its own records are committed, and gets the exception if they were not.

    Leader-based, no thread of its own: the first caller to find no batch in flight writes one batch
    (its own records and whatever else is waiting) and then hands the leadership to the oldest waiting
    caller, so no request is kept writing others' batches for long. A failed batch is retried caller by
    caller, so one bad record fails only its own request."""

    _LEAD = object()

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._pending: list[tuple[list[AuditRecord], Future[object]]] = []
        self._leading = False

    def append(self, records: Sequence[AuditRecord]) -> None:
        mine: Future[object] = Future()
        with self._lock:
            self._pending.append((list(records), mine))
            lead = not self._leading
            self._leading = True
        if not lead and mine.result() is not self._LEAD:  # raises when this caller's records failed
            return  # another caller's batch committed them
        self._write_one_batch(mine)

    def _commit(self, records: list[AuditRecord]) -> None:
        with transaction(self._engine) as session:
            append(session, records)

    def _write_one_batch(self, mine: Future[object]) -> None:
        """Write everything pending (the leader's own records included), tell each waiter, hand over."""
        with self._lock:
            batch, self._pending = self._pending, []
        outcomes: list[Exception | None]
        try:
            self._commit([r for records, _ in batch for r in records])
            outcomes = [None] * len(batch)
        except Exception:
            outcomes = []
            for records, _ in batch:
                try:
                    self._commit(records)
                    outcomes.append(None)
                except Exception as exc:
                    outcomes.append(exc)
        own: Exception | None = None
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future is mine:
                own = outcome
            elif outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
        with self._lock:
            if self._pending:
                self._pending[0][1].set_result(self._LEAD)  # the oldest waiter writes the next batch
            else:
                self._leading = False
        if own is not None:
            raise own
