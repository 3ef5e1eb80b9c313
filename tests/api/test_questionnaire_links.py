"""Single-use patient questionnaire links: answered once without login, validated, scored, audited."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from regenguide.store import models as m
from regenguide.store.db import transaction

ANSWERS = {"pain": "mild", "swelling": "moderate", "bruising": "none", "vision_change": False}


def _link(client: Any, auth: Any) -> tuple[int, dict[str, Any]]:
    body = {"site_id": 1, "mrn": "MRN-Q1", "given_name": "Quilla", "family_name": "Zyxwv", "birth_date": "1990-01-01",
            "sex": "female"}
    p = client.post("/api/v1/patients", json=body, headers=auth["clinician"])
    pid = p.json()["id"]
    r = client.post("/api/v1/questionnaire-links", json={"patient_id": pid}, headers=auth["nurse"])
    assert r.status_code == 201, r.text
    return pid, r.json()


def test_answer_once_without_login(client: Any, auth: Any, engine: Any) -> None:
    pid, link = _link(client, auth)
    q = client.get(link["url"])
    assert q.status_code == 200 and q.json()["resourceType"] == "Questionnaire"
    for identity in ("MRN-Q1", "Quilla", "Zyxwv", "1990-01-01"):  # no patient identity travels with the form
        assert identity not in q.text
    r = client.post(link["url"], json={"answers": ANSWERS})
    assert r.status_code == 201, r.text
    assert r.json()["score"]["total"] == 3.0  # mild 1 + moderate 2 + none 0
    again = client.post(link["url"], json={"answers": ANSWERS})
    assert again.status_code == 410
    assert client.get(link["url"]).status_code == 410
    with transaction(engine) as db:
        stored = db.execute(select(m.QuestionnaireLink)).scalar_one()
        assert stored.response["resourceType"] == "QuestionnaireResponse"
        assert stored.token_hash != link["token"]
        obs = db.execute(select(m.Observation).where(m.Observation.patient_id == pid)).scalar_one()
        assert obs.value == 3.0
        trail = db.execute(select(m.AuditEntry.username).where(m.AuditEntry.resource == "questionnaire_responses"))
        assert [u for (u,) in trail] == ["patient-link"]


def test_invalid_answers_are_refused_and_link_stays_open(client: Any, auth: Any) -> None:
    _, link = _link(client, auth)
    r = client.post(link["url"], json={"answers": {"pain": "unbearable"}})
    assert r.status_code == 422
    r = client.post(link["url"], json={"answers": {"pain": "mild"}})  # required items missing
    assert r.status_code == 422
    assert client.get(link["url"]).status_code == 200


def test_unknown_token_and_permissions(client: Any, auth: Any) -> None:
    assert client.get("/api/v1/public/questionnaires/nope").status_code == 404
    r = client.post("/api/v1/questionnaire-links", json={"patient_id": 1}, headers=auth["lab"])
    assert r.status_code == 403


def test_visit_must_belong_to_the_patient(client: Any, auth: Any, engine: Any) -> None:
    pid, _ = _link(client, auth)
    with transaction(engine) as db:
        other = m.Patient(site_id=1, mrn="MRN-Q2", given_name="O", family_name="P", birth_date=date(1970, 1, 1),
                          sex="male")
        db.add(other)
        db.flush()
        d = date(2025, 5, 1)
        visit = m.FollowupVisit(patient_id=other.id, label="1 month", due_on=d, window_start=d, window_end=d)
        db.add(visit)
        db.flush()
        visit_id = visit.id
    r = client.post("/api/v1/questionnaire-links", json={"patient_id": pid, "visit_id": visit_id},
                    headers=auth["nurse"])
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "visit_id"


def test_stale_read_cannot_use_a_link_twice(client: Any, auth: Any, engine: Any, monkeypatch: Any) -> None:
    """Two submissions that both passed the 'unused' check (as concurrent requests can): the
    conditional UPDATE lets only the first one store a response."""
    from regenguide.api.routers import questionnaires as router

    pid, link = _link(client, auth)
    assert client.post(link["url"], json={"answers": ANSWERS}).status_code == 201

    def stale_open(db: Any, token: str) -> Any:  # the check as a concurrent request saw it: still unused
        row = db.execute(select(m.QuestionnaireLink)).scalar_one()
        db.expunge(row)
        row.used_at = None
        return row

    monkeypatch.setattr(router, "_open_link", stale_open)
    again = client.post(link["url"], json={"answers": ANSWERS | {"pain": "severe"}})
    assert again.status_code == 410
    with transaction(engine) as db:
        obs = db.execute(select(m.Observation).where(m.Observation.patient_id == pid)).scalars().all()
        assert [o.value for o in obs] == [3.0]
        stored = db.execute(select(m.QuestionnaireLink)).scalar_one()
        assert "severe" not in str(stored.response)
