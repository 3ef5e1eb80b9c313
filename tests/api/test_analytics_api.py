"""Analytics, reports, scheduling and the work list through the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from regenguide.store import models as m
from regenguide.store.db import transaction


def _registry(engine: Any) -> int:
    with transaction(engine) as db:
        first = None
        for i in range(12):
            p = m.Patient(site_id=1, mrn=f"M{i}", given_name="G", family_name="F", birth_date=date(1980, 1, 1),
                          sex="female")
            db.add(p)
            db.flush()
            guided = i % 2 == 0
            proc = m.Procedure(patient_id=p.id, modality="microfat" if i < 6 else "prp",
                               performed_at=datetime(2025, 3, 1, tzinfo=UTC),
                               guidance_imaging="ultrasound" if guided else "none", processing_method="centrifugation")
            proc.injections = [m.PerformedInjection(seq=1, region="malar" if i < 6 else "scalp", volume_ml=2.0)]
            db.add(proc)
            db.flush()
            first = first or proc.id
            if i in (1, 3, 7):
                db.add(m.AdverseEvent(patient_id=p.id, procedure_id=proc.id, event_type="bruising", severity=1,
                                      relatedness="probable", onset_on=date(2025, 3, 2)))
            db.add(m.Observation(patient_id=p.id, procedure_id=proc.id, code="graft_retention",
                                 value=0.4 + 0.02 * i, observed_at=datetime(2025, 9, 1, tzinfo=UTC)))
            d = date(2025, 4, 1)
            db.add(m.FollowupVisit(patient_id=p.id, procedure_id=proc.id, label="1 month", due_on=d,
                                   window_start=d - timedelta(days=7), window_end=d + timedelta(days=7),
                                   status="missed" if i == 5 else "completed",
                                   completed_on=None if i == 5 else d))
        assert first is not None
        return first


def test_complications_and_plot(client: Any, auth: Any, engine: Any) -> None:
    _registry(engine)
    r = client.get("/api/v1/analytics/complications", headers=auth["researcher"])
    assert r.status_code == 200
    rows = {row["group"]["modality"]: (row["events"], row["n"]) for row in r.json()["rows"]}
    assert rows == {"microfat": (2, 6), "prp": (1, 6)} and r.json()["total"] == 12
    png = client.get("/api/v1/analytics/complications.png", headers=auth["researcher"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/v1/analytics/complications", headers=auth["lab"]).status_code == 403
    bad = client.get("/api/v1/analytics/complications?grouping=colour", headers=auth["researcher"])
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "grouping"


def test_guided_and_retention(client: Any, auth: Any, engine: Any) -> None:
    _registry(engine)
    g = client.get("/api/v1/analytics/guided-vs-landmark", headers=auth["researcher"]).json()
    assert g["image_guided"] == {"events": 0, "total": 6} and g["landmark"] == {"events": 3, "total": 6}
    r = client.get("/api/v1/analytics/retention?modality=microfat", headers=auth["researcher"]).json()
    assert r["rows"][0]["n"] == 6


def test_complete_cohort_report(client: Any, auth: Any, engine: Any) -> None:
    _registry(engine)
    html = client.get("/api/v1/reports/outcomes?modality=microfat", headers=auth["researcher"])
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    text = html.text
    assert "Complete cohort" in text and "6 patients" in text and "missed 1" in text
    # durability: all 6 patients; the one who missed every visit is censored at day 0, not dropped
    assert "<td>microfat</td><td>6</td>" in text.replace("\n", "")
    assert "1 patient(s) missed at least one visit" in text
    # lost to follow-up: patient 5 missed the only visit; lost once 12 months pass without contact
    today = date.today()
    lost = 1 if (today.year - 2025) * 12 + today.month - 3 - (today.day < 1) >= 12 else 0
    assert f"On {today.isoformat()}: {lost} patient(s)." in text.replace("\n", " ")
    assert ("<td>Registry id</td>" in text or "<th>Registry id</th>" in text) == bool(lost)
    assert text.count("data:image/png;base64,") >= 2
    pdf = client.get("/api/v1/reports/outcomes?format=pdf", headers=auth["researcher"])
    assert pdf.content.startswith(b"%PDF")


def test_schedule_and_worklist(client: Any, auth: Any, engine: Any) -> None:
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="W1", given_name="G", family_name="F", birth_date=date(1980, 1, 1), sex="male")
        db.add(p)
        db.flush()
        proc = m.Procedure(patient_id=p.id, modality="microfat",
                           performed_at=datetime.now(UTC) - timedelta(days=40))
        db.add(proc)
        db.flush()
        pid = proc.id
    r = client.post(f"/api/v1/procedures/{pid}/schedule", headers=auth["nurse"])
    assert r.status_code == 201, r.text
    visits = r.json()
    assert len(visits) >= 4
    assert all(v["window_start"] <= v["due_on"] <= v["window_end"] for v in visits)
    assert client.post(f"/api/v1/procedures/{pid}/schedule", headers=auth["nurse"]).status_code == 409
    work = client.get("/api/v1/worklist", headers=auth["nurse"]).json()
    states = {item["label"]: item["state"] for item in work["items"]}
    assert states, work
    assert "overdue" in states.values() or "due" in states.values()
