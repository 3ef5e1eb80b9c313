"""What an order-sign check reads of a stored patient (services.plans.patient_context): age and sex, the
latest consent decision, the latest vascular map of each region. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from regenguide.services import plans as plan_service
from regenguide.store import models as m
from regenguide.store.db import transaction


def _patient(engine: Engine) -> int:
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="CTX1", given_name="A", family_name="B", birth_date=date(1980, 5, 1),
                      sex="female")
        db.add(p)
        db.flush()
        return int(p.id)


def _consent(engine: Engine, pid: int, decision: str, signed: datetime, *, expires: date | None = None,
             version: str = "v1", plan_id: int | None = None) -> None:
    with transaction(engine) as db:
        db.add(m.Consent(patient_id=pid, plan_id=plan_id, version=version, text="x" * 5000, text_digest="0" * 64,
                         decision=decision, signer_name="A B", signed_at=signed, expires_on=expires))


def _map(engine: Engine, pid: int, region: str, side: str | None, landmark: str, at: datetime) -> None:
    data: dict[str, Any] = {"region": region, "side": side, "landmark": landmark, "vessels": []}
    with transaction(engine) as db:
        db.add(m.VascularMapRecord(patient_id=pid, region=region, side=side, data=data, created_at=at))


def _context(engine: Engine, pid: int) -> plan_service.PatientContext | None:
    with transaction(engine) as db:
        return plan_service.patient_context(db, pid, on=date(2026, 12, 6))


def test_unknown_patient_has_no_context(engine: Engine) -> None:
    assert _context(engine, 999_999) is None


def test_age_sex_and_missing_consent(engine: Engine) -> None:
    pid = _patient(engine)
    ctx = _context(engine, pid)
    assert ctx is not None and ctx.patient_id == pid
    assert (ctx.facts.age, ctx.facts.sex) == (46, "female")
    assert ctx.consent.status == "missing" and ctx.maps == []


def test_the_latest_consent_decision_wins(engine: Engine) -> None:
    pid = _patient(engine)
    _consent(engine, pid, "accepted", datetime(2026, 1, 10, 9, tzinfo=UTC), expires=date(2027, 1, 10), version="v2")
    ctx = _context(engine, pid)
    assert ctx is not None
    assert ctx.consent.model_dump(exclude_none=True) == {
        "status": "signed", "signed_on": "2026-01-10", "expires_on": "2027-01-10", "version": "v2"}
    _consent(engine, pid, "withdrawn", datetime(2026, 3, 1, 9, tzinfo=UTC), version="v3")
    _consent(engine, pid, "accepted", datetime(2025, 12, 1, 9, tzinfo=UTC), version="v1")  # recorded late, older
    ctx = _context(engine, pid)
    assert ctx is not None
    assert (ctx.consent.status, ctx.consent.signed_on, ctx.consent.version) == ("withdrawn", "2026-03-01", "v3")
    # Another patient's consent is not this patient's.
    other = _patient_named(engine, "CTX2")
    ctx2 = _context(engine, other)
    assert ctx2 is not None and ctx2.consent.status == "missing"


def _patient_named(engine: Engine, mrn: str) -> int:
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn=mrn, given_name="C", family_name="D", birth_date=date(1990, 1, 1), sex="male")
        db.add(p)
        db.flush()
        return int(p.id)


def test_consent_for_a_plan_uses_that_plans_and_general_consents(engine: Engine) -> None:
    pid = _patient(engine)
    with transaction(engine) as db:
        plans = [m.TreatmentPlan(patient_id=pid, modality="prp", indication="androgenetic_alopecia",
                                 jurisdiction="US") for _ in range(2)]
        db.add_all(plans)
        db.flush()
        first, second = (p.id for p in plans)
    _consent(engine, pid, "accepted", datetime(2026, 1, 1, tzinfo=UTC), version="general")
    _consent(engine, pid, "declined", datetime(2026, 2, 1, tzinfo=UTC), version="second", plan_id=second)
    with transaction(engine) as db:
        assert plan_service.consent_for(db, pid, first).version == "general"
        declined = plan_service.consent_for(db, pid, second)
        assert (declined.status, declined.version) == ("declined", "second")
        assert plan_service.consent_for(db, pid, None).status == "declined"  # latest of all


def test_the_latest_map_of_each_region_and_side(engine: Engine) -> None:
    pid = _patient(engine)
    _map(engine, pid, "temple", "left", "old", datetime(2026, 1, 1, tzinfo=UTC))
    _map(engine, pid, "temple", "left", "new", datetime(2026, 2, 1, tzinfo=UTC))
    _map(engine, pid, "temple", "right", "right", datetime(2026, 1, 15, tzinfo=UTC))
    _map(engine, pid, "glabella", None, "glabella", datetime(2025, 6, 1, tzinfo=UTC))
    ctx = _context(engine, pid)
    assert ctx is not None
    assert sorted((mp.region, mp.side.value if mp.side else None, mp.landmark) for mp in ctx.maps) == [
        ("glabella", None, "glabella"), ("temple", "left", "new"), ("temple", "right", "right")]
