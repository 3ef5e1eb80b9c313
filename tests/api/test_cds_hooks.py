"""CDS Hooks 2.0: discovery, order-sign cards from the plan check (validated against the card schema),
patient-view summary and feedback storage."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from regenguide.cds.hooks import (
    EXT,
    CdsResponse,
    DraftOrderError,
    draft_orders_to_plan,
    finding_to_card,
    findings_to_cards,
    grouped_cards,
    plan_to_draft_orders,
    service_requests,
)
from regenguide.domain.plan import PatientFacts, PlanDocument
from regenguide.services import plans as plan_service
from regenguide.store import models as m
from regenguide.store.db import transaction


def _plan(name: str) -> PlanDocument:
    text = (resources.files("regenguide.kb") / "data" / "examples" / f"{name}.json").read_text()
    return PlanDocument.model_validate(json.loads(text))


def _call(client: Any, auth: Any, service: str, hook: str, context: dict[str, Any]) -> Any:
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": {"userId": "Practitioner/1", **context}}
    return client.post(f"/cds-services/{service}", json=body, headers=auth["clinician"])


def test_discovery(client: Any) -> None:
    services = client.get("/cds-services").json()["services"]
    assert {(s["hook"], s["id"]) for s in services} == {
        ("order-sign", "regenguide-plan-check"), ("patient-view", "regenguide-patient-summary")}
    assert all(s["description"] and s["title"] for s in services)


def test_draft_orders_round_trip() -> None:
    plan = _plan("glabella_microfat_risky")
    back = draft_orders_to_plan(plan_to_draft_orders(plan), plan.patient.model_dump(exclude_none=True))
    assert back is not None
    assert back.injections == plan.injections
    assert (back.modality, back.guidance, back.indication) == (plan.modality, plan.guidance, plan.indication)


def test_order_sign_cards_match_the_plan_check(client: Any, auth: Any) -> None:
    plan = _plan("glabella_microfat_risky")
    r = _call(client, auth, "regenguide-plan-check", "order-sign",
              {"patientId": "example", "draftOrders": plan_to_draft_orders(plan)})
    assert r.status_code == 200, r.text
    response = CdsResponse.model_validate(r.json())
    # Draft orders carry no patient facts (medications …) and the patient is unknown here: compare with the
    # check of the same plan without them.
    bare = plan.model_copy(update={"patient": PatientFacts()})
    direct = client.post("/api/v1/plans/check", json=bare.to_json_dict(), headers=auth["clinician"]).json()
    # One card per rule: a rule that fires at several injections is one card naming them all.
    rules = list(dict.fromkeys(f["rule"] for f in direct["findings"]))
    assert [c.source.topic["code"] for c in response.cards if c.source.topic] == rules
    for card in response.cards:
        assert card.source.topic
        mine = [f for f in direct["findings"] if f["rule"] == card.source.topic["code"]]
        worst = max(mine, key=lambda f: ["info", "warning", "critical"].index(f["indicator"]))
        assert card.indicator == worst["indicator"]
    critical = [c for c in response.cards if c.indicator == "critical"]
    assert critical and all(c.overrideReasons for c in critical)
    assert all(len(c.summary) < 140 and c.source.label for c in response.cards)
    # A suggestion that changes the device comes back as an updated ServiceRequest.
    updates = [a for c in response.cards for s in c.suggestions or [] for a in s.actions]
    assert any(a.type == "update" and a.resource and a.resource["resourceType"] == "ServiceRequest" for a in updates)


def test_order_sign_without_our_orders_and_with_bad_orders(client: Any, auth: Any) -> None:
    empty = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                      "subject": {"reference": "Patient/1"}, "code": {"text": "chest x-ray"}}}]}
    r = _call(client, auth, "regenguide-plan-check", "order-sign", {"patientId": "1", "draftOrders": empty})
    assert r.status_code == 200 and r.json() == {"cards": [], "systemActions": []}
    bad = plan_to_draft_orders(_plan("scalp_prp_safe"))
    bad["entry"][0]["resource"]["bodySite"] = [{"text": "somewhere"}]
    r = _call(client, auth, "regenguide-plan-check", "order-sign", {"patientId": "1", "draftOrders": bad})
    assert r.status_code == 400 and "bodySite" in r.json()["detail"]
    assert _call(client, auth, "regenguide-plan-check", "patient-view", {"patientId": "1"}).status_code == 400


def test_patient_view_summary(client: Any, auth: Any, engine: Any) -> None:
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="X", given_name="A", family_name="B", birth_date=date(1970, 1, 1), sex="male")
        db.add(p)
        db.flush()
        old = date.today() - timedelta(days=60)
        db.add(m.FollowupVisit(patient_id=p.id, label="1 month", due_on=old, window_start=old - timedelta(days=7),
                               window_end=old + timedelta(days=7)))
        db.add(m.AdverseEvent(patient_id=p.id, event_type="skin_necrosis", severity=3, serious=True,
                              relatedness="probable", onset_on=old, outcome="recovering"))
        db.add(m.TreatmentPlan(patient_id=p.id, modality="prp", indication="x", jurisdiction="US"))
        pid = p.id
    r = _call(client, auth, "regenguide-patient-summary", "patient-view", {"patientId": f"Patient/{pid}"})
    assert r.status_code == 200, r.text
    cards = CdsResponse.model_validate(r.json()).cards
    assert [c.indicator for c in cards] == ["critical", "warning", "info"]
    assert "skin necrosis" in cards[0].summary and "SERIOUS" in cards[0].summary
    assert "overdue" in cards[1].summary
    unknown = _call(client, auth, "regenguide-patient-summary", "patient-view", {"patientId": "999"})
    assert unknown.status_code == 412


def test_feedback_is_stored(client: Any, auth: Any, engine: Any) -> None:
    now = datetime.now(UTC).isoformat()
    body = {"feedback": [
        {"card": "c1", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}], "outcomeTimestamp": now},
        {"card": "c2", "outcome": "overridden", "outcomeTimestamp": now,
         "overrideReason": {"reason": {"code": "benefit-outweighs-risk"}, "userComment": "discussed"}},
    ]}
    r = client.post("/cds-services/regenguide-plan-check/feedback", json=body, headers=auth["clinician"])
    assert r.status_code == 200 and r.json() == {"stored": 2}
    with transaction(engine) as db:
        rows = db.execute(select(m.CdsFeedback).order_by(m.CdsFeedback.id)).scalars().all()
        assert [(f.card_uuid, f.outcome) for f in rows] == [("c1", "accepted"), ("c2", "overridden")]
    missing_reason = {"feedback": [{"card": "c3", "outcome": "overridden", "outcomeTimestamp": now}]}
    r = client.post("/cds-services/regenguide-plan-check/feedback", json=missing_reason, headers=auth["clinician"])
    assert r.status_code == 422


def _orders() -> dict[str, Any]:
    return plan_to_draft_orders(_plan("scalp_prp_safe"))


def _broken(change: Any) -> dict[str, Any]:
    orders = _orders()
    change(orders)
    return orders


@pytest.mark.parametrize(("change", "named"), [
    (lambda o: o.update(resourceType="Patient"), "resourceType"),
    (lambda o: o.update(type="pile"), "type"),
    (lambda o: o["entry"].append({"resource": {"id": "x"}}), "resourceType"),
    (lambda o: o["entry"][0]["resource"].update(status="signed"), "status"),
    (lambda o: o["entry"][0]["resource"].pop("intent"), "intent"),
    (lambda o: o["entry"][0]["resource"].pop("subject"), "subject"),
    (lambda o: o["entry"][0]["resource"].update(bodysite=[]), "bodysite"),
    (lambda o: o["entry"][0]["resource"].update(id="has space"), "id"),
    (lambda o: o["entry"][0]["resource"]["extension"].append(
        {"url": EXT + "gauge", "valueInteger": "27"}), "valueInteger"),
    (lambda o: o["entry"][0]["resource"]["extension"].append(
        {"url": EXT + "doppler", "valueBoolean": True, "valueCode": "yes"}), "value[x]"),
    (lambda o: o["entry"][0]["resource"]["bodySite"][0]["coding"][0].update(code=7), "code"),
])
def test_malformed_draft_orders_are_refused_naming_the_element(change: Any, named: str) -> None:
    with pytest.raises(DraftOrderError, match=re.escape(named)):
        draft_orders_to_plan(_broken(change))


def test_foreign_resources_are_not_read_and_r4_elements_are_accepted() -> None:
    orders = _orders()
    orders["entry"].append({"resource": {"resourceType": "MedicationRequest", "status": "whatever"}})
    orders["entry"][0]["resource"].update(note=[{"text": "patient anxious"}], priority="routine",
                                          authoredOn="2026-01-01")
    plan = draft_orders_to_plan(orders)
    assert plan is not None and plan == draft_orders_to_plan(_orders())


def test_findings_to_cards_validates_every_card_and_keeps_the_order_unchanged() -> None:
    plan = _plan("glabella_microfat_risky")
    orders = service_requests(plan_to_draft_orders(plan))
    snapshot = json.dumps(orders, sort_keys=True)
    findings = plan_service.check(plan).findings
    cards = findings_to_cards(findings, orders)
    assert [c.summary for c in cards] == [f.summary for f in findings]
    assert [c.indicator for c in cards] == [f.indicator.value for f in findings]
    assert len({c.uuid for c in cards}) == len(cards)
    assert json.dumps(orders, sort_keys=True) == snapshot  # suggestions amend copies, never the draft order
    for card, finding in zip(cards, findings, strict=True):
        assert card.source.topic and card.source.topic["code"] == finding.rule
        assert card.detail and all(cid in card.detail for cid in finding.citations)
        assert bool(card.overrideReasons) == (finding.indicator.value == "critical")
        assert (card.selectionBehavior == "at-most-one") == bool(finding.suggestions)
        assert [s.label for s in card.suggestions or []] == [s.label for s in finding.suggestions]
        for s in card.suggestions or []:
            for action in s.actions:
                assert action.resource is not None
                urls = [e["url"] for e in action.resource["extension"]]
                assert len(urls) == len(set(urls))  # a changed extension replaces its namesake
    assert finding_to_card(findings[0], orders).summary == findings[0].summary
    with pytest.raises(ValidationError):
        findings_to_cards([findings[0].model_copy(update={"summary": ""})])


def test_grouped_cards_one_card_per_rule_with_every_injection_and_its_update() -> None:
    from regenguide.domain.plan import PlanDocument

    base = _plan("glabella_microfat_risky").to_json_dict()
    needle = {**base["injections"][0], "device": "needle", "gauge": 27, "region": "glabella", "side": "midline"}
    base["injections"] = [needle] * 5
    plan = PlanDocument.model_validate(base)
    orders = service_requests(plan_to_draft_orders(plan))
    findings = plan_service.check(plan).findings
    sharp = [f for f in findings if f.rule == "danger_zone.sharp_needle"]
    assert len(sharp) == 5
    cards = grouped_cards(findings, orders)
    rules = [c.source.topic["code"] for c in cards if c.source.topic]
    assert rules == list(dict.fromkeys(f.rule for f in findings))  # one card a rule, in first-seen order
    card = next(c for c in cards if c.source.topic and c.source.topic["code"] == "danger_zone.sharp_needle")
    assert card.summary.startswith("5 injections (0-4): ") and len(card.summary) < 140
    assert card.indicator == "critical" and card.overrideReasons
    # One line for the five identical findings, naming them all, then the zone's explanation once.
    text = sharp[0].summary.split(": ", 1)[1]
    assert (card.detail or "").startswith(f"- Injections 0-4: {text}\n\n")
    assert (card.detail or "").count(text) == 1 and (card.detail or "").count(sharp[0].detail) == 1
    (suggestion,) = card.suggestions or []
    assert [a.description for a in suggestion.actions] == [
        f"{sharp[0].suggestions[0].label} (injection {i})" for i in range(5)]
    assert all(a.resource and a.resource["resourceType"] == "ServiceRequest" for a in suggestion.actions)
    single = grouped_cards(findings[:1], orders)  # a lone finding keeps its own card unchanged
    assert single[0].summary == findings[0].summary


def test_injection_ranges() -> None:
    from regenguide.domain.findings import injection_ranges

    assert injection_ranges([0, 1, 2, 3, 7]) == "0-3, 7"
    assert injection_ranges([4]) == "4"
    assert injection_ranges([9, 0, 2, 3, 5, 6, 7, 3]) == "0, 2-3, 5-7, 9"


def _stored_patient(engine: Any) -> int:
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="R1", given_name="A", family_name="B", birth_date=date(1980, 5, 1), sex="female")
        db.add(p)
        db.flush()
        return int(p.id)


def _audit_rows(engine: Any, resource: str) -> list[tuple[str, int | None, str]]:
    with transaction(engine) as db:
        rows = db.execute(select(m.AuditEntry).where(m.AuditEntry.resource == resource)).scalars().all()
        return [(r.username, r.patient_id, r.action) for r in rows]


def test_order_sign_for_a_stored_patient_needs_patient_read_and_is_audited(client: Any, auth: Any,
                                                                           engine: Any) -> None:
    pid = _stored_patient(engine)
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": f"Patient/{pid}", "draftOrders": _orders()}}
    url = "/cds-services/regenguide-plan-check"
    # A researcher sees de-identified data only: naming a stored patient is refused, and nothing is read.
    refused = client.post(url, json=body, headers=auth["researcher"])
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "patient:read" in refused.json()["detail"]
    assert _audit_rows(engine, "cds_order_sign") == []
    # The stateless check of the same orders (no patientId) is open to any signed-in user.
    anonymous = {**body, "context": {k: v for k, v in body["context"].items() if k != "patientId"}}
    assert client.post(url, json=anonymous, headers=auth["researcher"]).status_code == 200
    assert _audit_rows(engine, "cds_order_sign") == []
    ok = client.post(url, json=body, headers=auth["clinician"])
    assert ok.status_code == 200, ok.text
    assert _audit_rows(engine, "cds_order_sign") == [("clinician", pid, "read")]
    # Without a token: 401 before anything else is looked at, even a wrong hook.
    assert client.post(url, json={**body, "hook": "patient-view"}).status_code == 401


def test_patient_view_needs_patient_read(client: Any, auth: Any, engine: Any) -> None:
    pid = _stored_patient(engine)
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": f"Patient/{pid}"}}
    for role in ("researcher", "lab"):
        r = client.post("/cds-services/regenguide-patient-summary", json=body, headers=auth[role])
        assert r.status_code == 403, (role, r.text)
    assert _audit_rows(engine, "cds_patient_view") == []
    assert client.post("/cds-services/regenguide-patient-summary", json=body,
                       headers=auth["nurse"]).status_code == 200
    assert _audit_rows(engine, "cds_patient_view") == [("nurse", pid, "read")]


def test_grouped_card_detail_lists_each_distinct_finding_and_explanation_once() -> None:
    """Needles in the glabella and in the temple: one card, a line per zone naming its injections, and each
    zone's own technique (the temple's is not the glabella's)."""
    base = _plan("glabella_microfat_risky").to_json_dict()
    glabella = {**base["injections"][0], "device": "needle", "gauge": 27, "region": "glabella", "side": "midline"}
    temple = {**glabella, "region": "temple", "side": "left"}
    base["injections"] = [glabella, temple, glabella, temple]
    plan = PlanDocument.model_validate(base)
    findings = plan_service.check(plan).findings
    sharp = [f for f in findings if f.rule == "danger_zone.sharp_needle"]
    card = next(c for c in grouped_cards(findings, service_requests(plan_to_draft_orders(plan)))
                if c.source.topic and c.source.topic["code"] == "danger_zone.sharp_needle")
    lines = [line for line in (card.detail or "").splitlines() if line.startswith("- ")]
    assert lines == [f"- Injections 0, 2: {sharp[0].summary.split(': ', 1)[1]}",
                     f"- Injections 1, 3: {sharp[1].summary.split(': ', 1)[1]}"]
    assert sharp[0].detail != sharp[1].detail
    assert all((card.detail or "").count(f.detail) == 1 for f in sharp)


def _without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


@pytest.mark.parametrize("careless", [False, True])
def test_order_sign_sends_exactly_the_validated_cards(client: Any, auth: Any, careless: bool) -> None:
    """The service serialises its cards from plain data (no models on the hot path): the body must be what
    the schema-validated cards dump to, a hundred amended ServiceRequests included, with no null fields."""
    base = _plan("glabella_microfat_risky").to_json_dict()
    one = {**base["injections"][0], "region": "glabella", "side": "midline"}
    if careless:
        one.update(device="needle", gauge=27, bolus_ml=0.3, volume_ml=1.5)
        base["guidance"] = {"imaging": "none"}
    temple = {**one, "region": "temple", "side": "left"}
    base["injections"] = [one, temple] * 6
    draft = plan_to_draft_orders(PlanDocument.model_validate(base))
    r = _call(client, auth, "regenguide-plan-check", "order-sign", {"draftOrders": draft})
    assert r.status_code == 200, r.text
    sent = r.json()
    assert "null" not in r.text
    assert CdsResponse.model_validate(sent).cards
    plan = draft_orders_to_plan(draft)
    assert plan is not None
    expected = grouped_cards(plan_service.check(plan).findings, service_requests(draft))
    assert _without_uuids(sent) == _without_uuids(
        {"cards": [c.model_dump(mode="json", exclude_none=True) for c in expected], "systemActions": []})
    updates = sum(len(s["actions"]) for c in sent["cards"] for s in c.get("suggestions", []))
    assert updates >= 12  # every injection's order amended at least once (the example plan is risky too)
    assert len({c["uuid"] for c in sent["cards"]}) == len(sent["cards"])
