"""The generic resource API: CRUD, pagination, filters, problem+json, optimistic concurrency,
transactions, permissions per role and the audit trail of reads and writes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from regenguide.store.db import transaction
from regenguide.store.models import AuditEntry, Patient

PATIENT = {
    "site_id": 1,
    "mrn": "MRN-0001",
    "given_name": "Ana",
    "family_name": "Silva",
    "birth_date": "1978-04-02",
    "sex": "female",
    "fitzpatrick": 3,
}


def _patients(engine: Any) -> int:
    with transaction(engine) as db:
        return db.execute(select(func.count()).select_from(Patient)).scalar_one()


def _create(client: Any, auth: Any, **over: Any) -> dict[str, Any]:
    r = client.post("/api/v1/patients", json={**PATIENT, **over}, headers=auth["clinician"])
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_list_and_filter(client: Any, auth: Any) -> None:
    created = _create(client, auth)
    _create(client, auth, mrn="MRN-0002", family_name="Costa", sex="male")
    r = client.get(f"/api/v1/patients/{created['id']}", headers=auth["clinician"])
    assert r.status_code == 200
    assert r.json()["family_name"] == "Silva"
    assert r.headers["ETag"] == '"v1"'
    page = client.get("/api/v1/patients?sex=male&limit=1", headers=auth["nurse"]).json()
    assert page["total"] == 1 and page["items"][0]["family_name"] == "Costa"
    page = client.get("/api/v1/patients?limit=1&offset=1", headers=auth["nurse"]).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["mrn"] == "MRN-0002"


def test_unknown_filter_is_a_problem(client: Any, auth: Any) -> None:
    r = client.get("/api/v1/patients?colour=blue", headers=auth["clinician"])
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "colour" in r.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"birth_date": "2999-01-01"}, "birth_date"),
        ({"sex": "robot"}, "sex"),
        ({"fitzpatrick": 9}, "fitzpatrick"),
        ({"mrn": ""}, "mrn"),
        ({"email": "not-an-email"}, "email"),
        ({"unexpected": 1}, "unexpected"),
        ({"site_id": 999}, "site_id"),
    ],
)
def test_bad_patient_input_names_the_field_and_stores_nothing(
    client: Any, auth: Any, engine: Any, change: dict[str, Any], field: str
) -> None:
    r = client.post("/api/v1/patients", json={**PATIENT, **change}, headers=auth["clinician"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 422 and field in body["detail"]
    assert any(e["field"] == field for e in body["errors"])
    assert _patients(engine) == 0


def test_duplicate_record_number_conflicts_and_keeps_the_first(client: Any, auth: Any, engine: Any) -> None:
    _create(client, auth)
    r = client.post("/api/v1/patients", json={**PATIENT, "given_name": "Other"}, headers=auth["clinician"])
    assert r.status_code == 409
    assert r.json()["type"].endswith("/constraint")
    assert _patients(engine) == 1


def test_optimistic_concurrency(client: Any, auth: Any) -> None:
    p = _create(client, auth)
    url = f"/api/v1/patients/{p['id']}"
    r = client.patch(url, json={"fitzpatrick": 4}, headers=auth["clinician"])
    assert r.status_code == 428
    r = client.patch(url, json={"fitzpatrick": 4}, headers={**auth["clinician"], "If-Match": '"v1"'})
    assert r.status_code == 200 and r.json()["fitzpatrick"] == 4 and r.headers["ETag"] == '"v2"'
    # A second clinician still holding version 1 must not overwrite the change.
    r = client.patch(url, json={"fitzpatrick": 2}, headers={**auth["nurse"], "If-Match": '"v1"'})
    assert r.status_code in (403, 412)
    r = client.patch(url, json={"fitzpatrick": 2}, headers={**auth["admin"], "If-Match": '"v1"'})
    assert r.status_code == 412 and r.json()["current_version"] == 2
    assert client.get(url, headers=auth["clinician"]).json()["fitzpatrick"] == 4


def test_rejected_update_leaves_record_unchanged(client: Any, auth: Any) -> None:
    p = _create(client, auth)
    url = f"/api/v1/patients/{p['id']}"
    r = client.patch(url, json={"fitzpatrick": 4, "sex": "robot"}, headers={**auth["clinician"], "If-Match": '"v1"'})
    assert r.status_code == 422
    after = client.get(url, headers=auth["clinician"])
    assert after.json()["fitzpatrick"] == 3 and after.headers["ETag"] == '"v1"'


def test_researcher_never_sees_identifiers_and_only_consenting_patients(client: Any, auth: Any) -> None:
    consenting = _create(client, auth, research_consent=True)
    private = _create(client, auth, mrn="MRN-0002")
    r = client.get(f"/api/v1/patients/{consenting['id']}", headers=auth["researcher"])
    assert r.status_code == 200
    body = r.json()
    for identifier in ("mrn", "given_name", "family_name", "birth_date", "phone", "email"):
        assert identifier not in body
    assert client.get(f"/api/v1/patients/{private['id']}", headers=auth["researcher"]).status_code == 404
    listing = client.get("/api/v1/patients", headers=auth["researcher"]).json()
    assert [p["id"] for p in listing["items"]] == [consenting["id"]]
    assert "family_name" not in listing["items"][0]
    # Consents carry names: researchers may not read them at all.
    assert client.get("/api/v1/consents", headers=auth["researcher"]).status_code == 403


@pytest.mark.parametrize(
    ("role", "method", "path", "expected"),
    [
        ("researcher", "post", "/api/v1/patients", 403),
        ("lab", "post", "/api/v1/patients", 403),
        ("lab", "get", "/api/v1/observations", 403),
        ("nurse", "post", "/api/v1/patients", 403),
        ("nurse", "post", "/api/v1/sites", 403),
        ("clinician", "post", "/api/v1/users", 403),
        ("admin", "get", "/api/v1/users", 200),
    ],
)
def test_permissions_per_role(client: Any, auth: Any, role: str, method: str, path: str, expected: int) -> None:
    payload = {**PATIENT} if path.endswith("patients") else {"name": "X", "jurisdiction": "US"}
    if path.endswith("users"):
        payload = {"username": "newbie", "role": "nurse", "password": "a-long-password"}
    r = client.get(path, headers=auth[role]) if method == "get" else client.post(path, json=payload, headers=auth[role])
    assert r.status_code == expected, r.text
    if expected == 403:
        assert r.headers["content-type"].startswith("application/problem+json")


def test_unauthenticated_is_refused(client: Any) -> None:
    r = client.get("/api/v1/patients")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = client.get("/api/v1/patients", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401


def test_reads_and_writes_are_audited(client: Any, auth: Any, engine: Any) -> None:
    p = _create(client, auth)
    client.get(f"/api/v1/patients/{p['id']}", headers=auth["nurse"])
    client.get("/api/v1/patients", headers=auth["clinician"])
    with transaction(engine) as db:
        rows = db.execute(select(AuditEntry).where(AuditEntry.patient_id == p["id"]).order_by(AuditEntry.seq)).scalars()
        trail = [(e.username, e.action, e.resource) for e in rows]
    assert trail == [
        ("clinician", "create", "patients"),
        ("nurse", "read", "patients"),
        ("clinician", "list", "patients"),
    ]


def test_adverse_event_rules(client: Any, auth: Any) -> None:
    p = _create(client, auth)
    ae = {
        "patient_id": p["id"],
        "event_type": "vascular_occlusion",
        "severity": 3,
        "seriousness": ["medically_important"],
        "relatedness": "probable",
        "onset_on": "2026-01-10",
    }
    bad = client.post("/api/v1/adverse-events", json={**ae, "resolved_on": "2026-01-01"}, headers=auth["clinician"])
    assert bad.status_code == 422
    r = client.post("/api/v1/adverse-events", json=ae, headers=auth["clinician"])
    assert r.status_code == 201 and r.json()["serious"] is True
    assert client.get(f"/api/v1/patients/{p['id']}", headers=auth["clinician"]).json()["serious_event_flag"] is True


def test_procedure_with_injections_and_visit_window(client: Any, auth: Any) -> None:
    p = _create(client, auth)
    proc = {
        "patient_id": p["id"],
        "modality": "microfat",
        "performed_at": "2026-03-01T10:00:00Z",
        "guidance_imaging": "ultrasound",
        "doppler": True,
        "injections": [
            {"region": "malar", "side": "left", "plane": "subcutaneous", "device": "cannula", "gauge": 25,
             "volume_ml": 2.0, "bolus_ml": 0.1},
            {"region": "malar", "side": "right", "plane": "subcutaneous", "device": "cannula", "gauge": 25,
             "volume_ml": 2.0, "bolus_ml": 0.1},
        ],
    }
    r = client.post("/api/v1/procedures", json=proc, headers=auth["clinician"])
    assert r.status_code == 201, r.text
    assert [i["seq"] for i in r.json()["injections"]] == [1, 2]
    visit = {"patient_id": p["id"], "procedure_id": r.json()["id"], "label": "3 months", "due_on": "2026-06-01",
             "window_start": "2026-06-10", "window_end": "2026-06-20"}
    assert client.post("/api/v1/visits", json=visit, headers=auth["clinician"]).status_code == 422
    visit["window_start"] = "2026-05-15"
    assert client.post("/api/v1/visits", json=visit, headers=auth["nurse"]).status_code == 201


def test_openapi_is_published(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "RegenGuide API"
    assert "/api/v1/patients/{item_id}" in spec["paths"]


def test_patient_record_is_a_valid_fhir_bundle(client: Any, auth: Any) -> None:
    from fhir.resources.R4B.bundle import Bundle

    p = _create(client, auth)
    r = client.get(f"/api/v1/patients/{p['id']}/record", headers=auth["clinician"])
    assert r.status_code == 200, r.text
    bundle = Bundle.model_validate(r.json())
    patients = [e.resource for e in bundle.entry or [] if e.resource.__resource_type__ == "Patient"]
    assert len(patients) == 1 and patients[0].name[0].family == "Silva"
    assert client.get(f"/api/v1/patients/{p['id']}/record", headers=auth["researcher"]).status_code == 403
    assert client.get("/api/v1/patients/9999/record", headers=auth["clinician"]).status_code == 404


IDENTIFIER_KEYS = {"mrn", "given_name", "family_name", "birth_date", "phone", "email", "signer_name", "name_of_patient"}


def _walk(value: Any, path: str = "") -> Any:
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}", k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield f"{path}[{i}]", None, v
            yield from _walk(v, f"{path}[{i}]")


def test_researcher_sees_no_identifier_on_any_route(app: Any, client: Any, auth: Any, engine: Any) -> None:
    """Every GET route of the published API, called as a researcher over a demo cohort (every patient
    consenting to research, so nothing is hidden by the consent filter): no identifier key and no
    patient's name, record number, birth date, phone or e-mail as a value anywhere in the answer."""
    from sqlalchemy import update

    from regenguide.services.demo import seed_demo

    seed_demo(engine, patients=12, seed=11)
    with transaction(engine) as db:
        db.execute(update(Patient).values(research_consent=True))
        secrets: set[str] = set()
        for p in db.execute(select(Patient)).scalars():
            secrets |= {p.mrn, p.given_name, p.family_name, p.birth_date.isoformat(), f"{p.given_name} {p.family_name}"}
            secrets |= {v for v in (p.phone, p.email) if v}
    gets = [
        path
        for path, item in sorted(app.openapi()["paths"].items())
        if "get" in item and path.startswith("/api/v1")
    ]
    assert len(gets) >= 20
    answered = 0
    for path in gets:
        for ident in ("1", "2", "3"):
            url = re.sub(r"\{[^}]+\}", ident, path)
            r = client.get(url, headers=auth["researcher"])
            if r.status_code != 200 or not r.headers.get("content-type", "").startswith(
                ("application/json", "application/fhir+json")
            ):
                continue
            answered += 1
            for where, key, value in _walk(r.json()):
                assert key not in IDENTIFIER_KEYS, (url, where)
                assert not (isinstance(value, str) and value in secrets), (url, where, value)
            if "{" not in path:
                break
    assert answered >= 10  # the sweep really read data


@pytest.mark.parametrize("role", ["lab", "researcher", "nurse"])
def test_roles_that_may_not_sign_or_override_plans(client: Any, auth: Any, role: str) -> None:
    r = client.post("/api/v1/plans/1/sign", json={}, headers={**auth[role], "If-Match": '"v1"'})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
