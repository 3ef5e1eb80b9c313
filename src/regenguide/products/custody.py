"""Chain of custody: an append-only event log, a status state machine and hold-time expiry.

Statuses and the events that move between them::

    (new) --collected--> collected --received--> received --processed--> processed (repeatable)
    collected --processed--> processed            (point-of-care preparation, e.g. PRP at the chair-side)
    processed --qc_passed--> qc_passed --released--> released --issued--> issued --administered--> administered
    released --administered--> administered       (point of care: released and given by the same team)
    processed --qc_failed--> qc_failed (quarantine: only `discarded` may follow)
    issued --returned--> returned --issued--> issued
    any non-final status --discarded--> discarded
    administered and discarded are final.

Everything else raises `IllegalTransition` naming the status, the event and what would be allowed, so
"administering a product that was never released" is refused with a readable message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from regenguide.domain.plan import Modality
from regenguide.kb.references import EvidenceLabel
from regenguide.products.din import ProductIdentifier
from regenguide.products.rules import HoldTime, load_hold_times


class EventType(StrEnum):
    collected = "collected"
    received = "received"
    processed = "processed"
    qc_passed = "qc_passed"
    qc_failed = "qc_failed"
    released = "released"
    issued = "issued"
    administered = "administered"
    discarded = "discarded"
    returned = "returned"
    thawed = "thawed"  # a cryopreserved product thawed: status unchanged, at most once, starts the thaw clock


class ProductStatus(StrEnum):
    new = "new"  # no event yet
    collected = "collected"
    received = "received"
    processed = "processed"
    qc_passed = "qc_passed"
    qc_failed = "qc_failed"  # quarantined
    released = "released"
    issued = "issued"
    administered = "administered"
    discarded = "discarded"
    returned = "returned"


S, E = ProductStatus, EventType
FINAL_STATUSES = frozenset({S.administered, S.discarded})

TRANSITIONS: Mapping[ProductStatus, Mapping[EventType, ProductStatus]] = {
    S.new: {E.collected: S.collected},
    S.collected: {E.received: S.received, E.processed: S.processed, E.discarded: S.discarded},
    S.received: {E.processed: S.processed, E.thawed: S.received, E.discarded: S.discarded},
    S.processed: {
        E.processed: S.processed,
        E.qc_passed: S.qc_passed,
        E.qc_failed: S.qc_failed,
        E.thawed: S.processed,
        E.discarded: S.discarded,
    },
    S.qc_passed: {E.released: S.released, E.thawed: S.qc_passed, E.discarded: S.discarded},
    S.qc_failed: {E.discarded: S.discarded},
    S.released: {E.issued: S.issued, E.administered: S.administered, E.thawed: S.released, E.discarded: S.discarded},
    S.issued: {E.administered: S.administered, E.returned: S.returned, E.thawed: S.issued, E.discarded: S.discarded},
    S.returned: {E.issued: S.issued, E.discarded: S.discarded},
    S.administered: {},
    S.discarded: {},
}

_WHY = {
    E.administered: "only a released (or issued) product may be administered",
    E.released: "only a product that passed QC may be released",
    E.issued: "only a released (or returned) product may be issued",
    E.qc_passed: "QC follows processing",
    E.qc_failed: "QC follows processing",
    E.returned: "only an issued product may be returned",
    E.thawed: "a product is thawed after it is received or processed and before it is given",
}


class IllegalTransition(ValueError):
    def __init__(self, status: ProductStatus, event: EventType) -> None:
        self.status = status
        self.event = event
        allowed = sorted(e.value for e in TRANSITIONS[status])
        why = _WHY.get(event, "")
        if status in FINAL_STATUSES:
            why = f"the product is {status.value}: no further event is possible"
        super().__init__(
            f"cannot record '{event.value}' for a product that is '{status.value}'"
            + (f": {why}" if why else "")
            + (f" (allowed now: {', '.join(allowed)})" if allowed else "")
        )


def apply_event(status: ProductStatus, event: EventType) -> ProductStatus:
    """The status after `event`; raises `IllegalTransition` when the event is not allowed."""
    try:
        return TRANSITIONS[status][event]
    except KeyError:
        raise IllegalTransition(status, event) from None


class CustodyEvent(BaseModel):
    """One entry of the append-only custody log."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    product_key: str = Field(min_length=1, description="ProductIdentifier.key")
    type: EventType
    at: AwareDatetime
    user: str = Field(min_length=1)
    place: str = Field(min_length=1)
    note: str = ""
    details: dict[str, str] = Field(default_factory=dict)


class CustodyError(ValueError):
    pass


def append_event(log: Iterable[CustodyEvent], event: CustodyEvent) -> tuple[CustodyEvent, ...]:
    """Append `event` to a product's log after checking it: same product, not earlier than the last
    event, and a legal transition. Returns a new tuple; the input is never modified."""
    events = tuple(log)
    if events:
        if event.product_key != events[-1].product_key:
            raise CustodyError(f"event for {event.product_key} appended to the log of {events[-1].product_key}")
        if event.at < events[-1].at:
            raise CustodyError(
                f"event time {event.at.isoformat()} is before the last event ({events[-1].at.isoformat()})"
            )
    if event.type is E.thawed:
        thawed = thaw_time(events)
        if thawed is not None:
            raise CustodyError(f"already thawed at {thawed.isoformat()}: a product is thawed once")
    apply_event(replay(events), event.type)
    return (*events, event)


def thaw_time(events: Iterable[CustodyEvent]) -> datetime | None:
    """When the log says the product was thawed (its `thawed` event), if it does."""
    return next((e.at for e in events if e.type is E.thawed), None)


def replay(events: Iterable[CustodyEvent]) -> ProductStatus:
    """Current status from a log (raises on any illegal step, so a tampered log is detected)."""
    status = ProductStatus.new
    for ev in events:
        status = apply_event(status, ev.type)
    return status


class Expiry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expires_at: AwareDatetime | None
    clock_starts: str
    clock_started_at: AwareDatetime | None
    hours: float | None
    evidence: EvidenceLabel
    citations: list[str]
    reason: str


def compute_expiry(
    product_type: Modality | str,
    events: Iterable[CustodyEvent],
    thawed_at: datetime | None = None,
    hold_times: Mapping[Modality, HoldTime] | None = None,
) -> Expiry:
    """Expiry from the hold time of the product type: clock start (first `collected` event, last
    `processed` event, or `thawed_at`) + hours. `expires_at` is None when the hold time is not sourced
    (the facility must set it) or the clock has not started yet; `reason` says which."""
    table = hold_times or load_hold_times()
    ptype = Modality(product_type)
    rule = table.get(ptype)
    if rule is None:
        raise CustodyError(f"no hold-time entry for {ptype.value}")
    evs = list(events)
    start: datetime | None
    if rule.clock_starts == "collected":
        start = next((e.at for e in evs if e.type is EventType.collected), None)
    elif rule.clock_starts == "processed":
        start = next((e.at for e in reversed(evs) if e.type is EventType.processed), None)
    else:  # thawed: the custody log's thaw, else the thaw in the preparation record
        start = thaw_time(evs) or thawed_at
    base = {
        "clock_starts": rule.clock_starts,
        "clock_started_at": start,
        "hours": rule.hours,
        "evidence": rule.evidence,
        "citations": list(rule.citations),
    }
    if rule.hours is None:
        return Expiry(
            expires_at=None,
            reason=f"no sourced hold time for {ptype.value}: the facility must set one",
            **base,  # type: ignore[arg-type]
        )
    if start is None:
        return Expiry(expires_at=None, reason=f"clock not started: no '{rule.clock_starts}' time yet", **base)  # type: ignore[arg-type]
    return Expiry(
        expires_at=start + timedelta(hours=rule.hours),
        reason=f"{rule.hours:g} h after {rule.clock_starts} ({rule.evidence.value})",
        **base,  # type: ignore[arg-type]
    )


class ProductSnapshot(BaseModel):
    """What bedside verification, labels and FHIR export need to know about one product (aliquot).

    The store builds it from its tables; `snapshot_from_log` builds it from a custody log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: ProductIdentifier
    product_type: Modality
    patient_id: str = Field(min_length=1, description="the patient the product was collected from")
    status: ProductStatus
    autologous: bool = True
    collected_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    expiry_evidence: EvidenceLabel | None = None
    volume_ml: float | None = Field(default=None, gt=0)
    description: str = ""
    kit_lots: list[str] = Field(default_factory=list)
    reagent_lots: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return self.identifier.key


def snapshot_from_log(
    identifier: ProductIdentifier,
    product_type: Modality | str,
    patient_id: str,
    events: Iterable[CustodyEvent],
    *,
    thawed_at: datetime | None = None,
    expires_at: datetime | None = None,
    hold_times: Mapping[Modality, HoldTime] | None = None,
    **extra: object,
) -> ProductSnapshot:
    """Snapshot with status replayed from the log and expiry from the hold time; an explicit
    `expires_at` (facility-set, or a manufacturer's label) takes precedence when earlier or when the
    hold time gives none."""
    evs = list(events)
    if any(e.product_key != identifier.key for e in evs):
        raise CustodyError(f"log contains events of another product than {identifier.key}")
    status = replay(evs)
    exp = compute_expiry(product_type, evs, thawed_at=thawed_at, hold_times=hold_times)
    final = exp.expires_at
    evidence = exp.evidence if final else None
    if expires_at is not None and (final is None or expires_at < final):
        final, evidence = expires_at, None
    collected = next((e.at for e in evs if e.type is EventType.collected), None)
    return ProductSnapshot(
        identifier=identifier,
        product_type=Modality(product_type),
        patient_id=patient_id,
        status=status,
        collected_at=collected,
        expires_at=final,
        expiry_evidence=evidence,
        **extra,  # type: ignore[arg-type]
    )


def release_blockers(preparation: object) -> list[str]:
    """Reasons a product may not pass QC / be released, from its preparation record: a failed or
    pending release test (sterility, mycoplasma, endotoxin …) of a cell-therapy product. Empty = none.
    The service calls this before accepting a `qc_passed` or `released` event."""
    from regenguide.products.preparation import CellTherapyPreparation  # local: keeps custody importable alone

    if not isinstance(preparation, CellTherapyPreparation):
        return []
    out = []
    for test in preparation.release_tests:
        if test.result == "fail":
            out.append(f"release test {test.test} failed")
        elif test.result == "pending":
            out.append(f"release test {test.test} is pending")
    return out


def is_expired(snapshot: ProductSnapshot, now: datetime) -> bool | None:
    """True/False, or None when no expiry is known (treated as not usable at the bedside)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return None if snapshot.expires_at is None else now >= snapshot.expires_at
