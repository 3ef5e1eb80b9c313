"""Plans through the API: stateless check, stored plans re-checked against the record (consent),
signing only when every critical finding is resolved or overridden with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import select

from regenguide.store import models as m
from regenguide.store.db import transaction


def example(name: str) -> dict[str, Any]:
    text = (resources.files("regenguide.kb") / "data" / "examples" / f"{name}.json").read_text()
    return json.loads(text)


def _patient(client: Any, auth: Any) -> int:
    r = client.post("/api/v1/patients", json={"site_id": 1, "mrn": "P-1", "given_name": "Ines", "family_name": "Roth",
                                               "birth_date": "1972-02-02", "sex": "female"}, headers=auth["clinician"])
    return int(r.json()["id"])


def test_stateless_check_of_a_risky_plan(client: Any, auth: Any) -> None:
    r = client.post("/api/v1/plans/check", json=example("glabella_microfat_risky"), headers=auth["clinician"])
    assert r.status_code == 200
    body = r.json()
    assert body["signable"] is False
    assert body["regulatory"]["class"] == "exempt_same_surgical_procedure"
    rules = {(f["rule"], f.get("injection_index")) for f in body["findings"] if f["indicator"] == "critical"}
    assert ("danger_zone.no_ultrasound", None) in rules and ("danger_zone.sharp_needle", 0) in rules
    assert all(f["citations"] for f in body["findings"])


def test_invalid_plan_document_names_the_field(client: Any, auth: Any) -> None:
    doc = example("scalp_prp_safe")
    doc["modality"] = "botox"
    r = client.post("/api/v1/plans/check", json=doc, headers=auth["clinician"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "modality"
    doc = example("scalp_prp_safe")
    doc["injections"][0]["gauge"] = 5
    r = client.post("/api/v1/plans/check", json=doc, headers=auth["clinician"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "injections.0.gauge"


def test_sign_flow_with_overrides(client: Any, auth: Any, engine: Any) -> None:
    pid = _patient(client, auth)
    r = client.post("/api/v1/plans", json={"patient_id": pid, "document": example("glabella_microfat_risky")},
                    headers=auth["clinician"])
    assert r.status_code == 201, r.text
    plan = r.json()
    url = f"/api/v1/plans/{plan['id']}"
    assert any(f["rule"] == "consent.missing" for f in plan["latest_check"]["findings"])
    # Roles that may not sign.
    for role in ("nurse", "lab", "researcher"):
        assert client.post(f"{url}/sign", json={}, headers={**auth[role], "If-Match": '"v1"'}).status_code == 403
    assert client.post(f"{url}/sign", json={}, headers=auth["clinician"]).status_code == 428
    refused = client.post(f"{url}/sign", json={}, headers={**auth["clinician"], "If-Match": '"v1"'})
    assert refused.status_code == 409
    unresolved = {(f["rule"], f.get("injection_index")) for f in refused.json()["unresolved"]}
    assert ("consent.missing", None) in unresolved
    # Overriding a warning is refused; a reasonless override is refused.
    bad = client.post(f"{url}/sign", json={"overrides": [{"rule": "fat.gauge_too_fine", "injection_index": 0,
                                                            "reason": "because I say so"}]},
                      headers={**auth["clinician"], "If-Match": '"v1"'})
    assert bad.status_code == 422
    # Record consent: the consent finding goes away on re-check.
    consent = {"patient_id": pid, "plan_id": plan["id"], "version": "fat-1", "decision": "accepted",
               "text": "I consent to microfat grafting of the face as explained.", "signer_name": "Ines Roth",
               "signed_at": datetime.now(UTC).isoformat()}
    assert client.post("/api/v1/consents", json=consent, headers=auth["nurse"]).status_code == 201
    recheck = client.post(f"{url}/check", headers=auth["clinician"]).json()
    assert not any(f["rule"] == "consent.missing" for f in recheck["findings"])
    criticals = [f for f in recheck["findings"] if f["indicator"] == "critical"]
    reason = "Reviewed with senior injector; ultrasound unavailable, patient informed"
    overrides = [{"rule": f["rule"], "injection_index": f.get("injection_index"), "reason": reason} for f in criticals]
    etag = client.get(url, headers=auth["clinician"]).headers["ETag"]
    signed = client.post(f"{url}/sign", json={"overrides": overrides}, headers={**auth["clinician"], "If-Match": etag})
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "signed" and signed.json()["signed_by"] == 2
    with transaction(engine) as db:
        stored = db.execute(select(m.PlanOverride).where(m.PlanOverride.plan_id == plan["id"])).scalars().all()
        assert len(stored) == len(criticals)
        actions = [a for (a,) in db.execute(select(m.AuditEntry.action).where(m.AuditEntry.resource == "plans"))]
        assert actions.count("override") == len(criticals) and actions.count("sign") == 1
    # A signed plan is not revised.
    revise = client.put(url, json={"document": example("scalp_prp_safe")},
                        headers={**auth["clinician"], "If-Match": signed.headers["ETag"]})
    assert revise.status_code == 409


def test_safe_plan_signs_without_overrides_once_consented(client: Any, auth: Any) -> None:
    pid = _patient(client, auth)
    plan = client.post("/api/v1/plans", json={"patient_id": pid, "document": example("scalp_prp_safe")},
                       headers=auth["clinician"]).json()
    consent = {"patient_id": pid, "plan_id": plan["id"], "version": "prp-1", "decision": "accepted",
               "text": "I consent to PRP injections of the scalp as explained.", "signer_name": "Ines Roth",
               "signed_at": datetime.now(UTC).isoformat()}
    client.post("/api/v1/consents", json=consent, headers=auth["clinician"])
    r = client.post(f"/api/v1/plans/{plan['id']}/sign", json={}, headers={**auth["clinician"], "If-Match": '"v1"'})
    assert r.status_code == 200, r.json()
    assert r.json()["latest_check"]["signable"] is True


def test_stale_revision_is_refused(client: Any, auth: Any) -> None:
    pid = _patient(client, auth)
    plan = client.post("/api/v1/plans", json={"patient_id": pid, "document": example("scalp_prp_safe")},
                       headers=auth["clinician"]).json()
    url = f"/api/v1/plans/{plan['id']}"
    ok = client.put(url, json={"document": example("scalp_prp_safe")},
                    headers={**auth["clinician"], "If-Match": '"v1"'})
    assert ok.status_code == 200
    stale = client.put(url, json={"document": example("scalp_prp_safe")},
                       headers={**auth["clinician"], "If-Match": '"v1"'})
    assert stale.status_code == 412


def test_consent_document_signed_as_shown(client: Any, auth: Any) -> None:
    pid = _patient(client, auth)
    plan = client.post("/api/v1/plans", json={"patient_id": pid, "document": example("scalp_prp_safe")},
                       headers=auth["clinician"]).json()
    url = f"/api/v1/plans/{plan['id']}"
    html = client.get(f"{url}/consent-document", headers=auth["nurse"])
    assert html.status_code == 200 and "Ines Roth" in html.text
    digest = html.headers["X-Document-Digest"]
    pdf = client.get(f"{url}/consent-document?format=pdf", headers=auth["nurse"])
    assert pdf.content.startswith(b"%PDF") and pdf.headers["X-Document-Digest"] == digest
    stale = client.post(f"{url}/consent", json={"decision": "accepted", "signer_name": "Ines Roth",
                                                 "document_digest": "0" * 64}, headers=auth["nurse"])
    assert stale.status_code == 409
    ok = client.post(f"{url}/consent", json={"decision": "accepted", "signer_name": "Ines Roth",
                                              "document_digest": digest, "research_use": True}, headers=auth["nurse"])
    assert ok.status_code == 201 and ok.json()["text_digest"] == digest
    check = client.post(f"{url}/check", headers=auth["clinician"]).json()
    assert not any(f["rule"].startswith("consent.") for f in check["findings"])
    assert client.get(f"/api/v1/patients/{pid}", headers=auth["clinician"]).json()["research_consent"] is True
    assert client.post(f"{url}/consent", json={"decision": "accepted", "signer_name": "X", "document_digest": digest},
                       headers=auth["lab"]).status_code == 403
