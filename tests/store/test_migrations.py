"""Alembic migrations from an empty database to head and back down, and the schema's constraints."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from regenguide.store import schema
from regenguide.store.db import make_engine, transaction
from regenguide.store.models import AdverseEvent, Base, Patient, PlannedInjection, Site, TreatmentPlan


def test_upgrade_to_head_then_down_to_base_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    assert schema.current_revision(engine) == schema.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    for revision in ("0002", "0001"):
        schema.downgrade(engine, revision)
        assert schema.current_revision(engine) == revision
    schema.downgrade(engine, "base")
    assert schema.current_revision(engine) is None
    assert not (set(Base.metadata.tables) & set(inspect(engine).get_table_names()))
    schema.upgrade(engine)
    assert schema.current_revision(engine) == schema.head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM regenguide_meta WHERE key='magic'")).scalar() == "regenguide"
    engine.dispose()


def test_models_and_migrations_agree(engine: Any) -> None:
    """Autogenerate against a migrated database finds nothing to add: the migrations are complete."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _patient(db: Any, **over: Any) -> Patient:
    values: dict[str, Any] = {
        "site_id": 1, "mrn": "M1", "given_name": "A", "family_name": "B",
        "birth_date": date(1980, 1, 1), "sex": "female",
    }
    values.update(over)
    p = Patient(**values)
    db.add(p)
    db.flush()
    return p


@pytest.mark.parametrize(
    "bad",
    [
        {"fitzpatrick": 7},
        {"sex": "x"},
        {"site_id": 99},
        {"mrn": ""},
    ],
)
def test_patient_constraints(engine: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        _patient(db, **bad)


def test_site_jurisdiction_constraint(engine: Any) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        db.add(Site(name="Lower", jurisdiction="us"))
        db.flush()


@pytest.mark.parametrize(
    "bad", [{"gauge": 40}, {"volume_ml": -1}, {"bolus_ml": 0}, {"bolus_ml": 2.0, "volume_ml": 1.0}]
)
def test_planned_injection_constraints(engine: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        p = _patient(db)
        plan = TreatmentPlan(patient_id=p.id, modality="microfat", indication="x", jurisdiction="US")
        plan.injections = [PlannedInjection(seq=1, region="malar", **bad)]
        db.add(plan)
        db.flush()


def test_signed_plan_needs_signer(engine: Any) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        p = _patient(db)
        db.add(TreatmentPlan(patient_id=p.id, modality="prp", indication="x", jurisdiction="US", status="signed"))
        db.flush()


def test_adverse_event_constraints(engine: Any) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        p = _patient(db)
        db.add(
            AdverseEvent(
                patient_id=p.id, event_type="bruising", severity=6, relatedness="possible", onset_on=date(2026, 1, 1)
            )
        )
        db.flush()


def test_unknown_modality_refused(engine: Any) -> None:
    with pytest.raises(IntegrityError), transaction(engine) as db:
        p = _patient(db)
        db.add(TreatmentPlan(patient_id=p.id, modality="botox", indication="x", jurisdiction="US"))
        db.flush()


def test_custody_events_are_append_only(engine: Any) -> None:
    from regenguide.store.models import BiologicProduct, CustodyEvent

    with transaction(engine) as db:
        p = _patient(db)
        prod = BiologicProduct(
            patient_id=p.id, identifier="X1", product_type="prp", status="collected", collected_at=datetime.now(UTC)
        )
        db.add(prod)
        db.flush()
        db.add(CustodyEvent(product_id=prod.id, event_type="collected", status_after="collected", at=datetime.now(UTC)))
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE custody_events SET note = 'x'"))
