"""A patient's whole record as a FHIR R4 Bundle (validated with fhir.resources' R4B models).

`patient_bundle(session, patient_id)` returns a `collection` Bundle with:

- Patient (MRN identifier with a per-site system, name, gender, birth date, telecom, Fitzpatrick extension),
  Organization for the site and Practitioner for every staff member the record refers to;
- Condition per assessment (the indication, the severity scale as `stage`);
- CarePlan per treatment plan, one activity per planned injection (body site, plane and device as text and
  RegenGuide codings);
- Consent per consent decision (permit/deny, research use as a nested provision, SHA-256 of the text);
- BiologicallyDerivedProduct per product (the products module's `product_to_fhir` when it accepts the row,
  so the identifier carries the ISBT 128 DIN system; the preparation record and the custody events as
  processing steps; `parent` for aliquots);
- Procedure per procedure (bodySite, performer, usedReference to the products, guidance);
- Procedure per bedside administration (custody event `administered`, id `custody-{event id}`): the products
  module's `administration_to_fhir`, with the recording user's Practitioner, the body sites of the performed
  injections that used the product, `partOf` their procedure and `basedOn` the plan;
- Encounter per follow-up visit; ImagingStudy per imaging row; Observation per observation (UCUM units);
- AdverseEvent per adverse event (the outcomes module's mapping when the term is in its taxonomy).

Every reference is relative (`Type/id`) and resolves inside the bundle: each entry's `fullUrl` is
`{base}/{Type}/{id}`. Ids are the database ids (products: their identifier key). The rows are loaded with
one query per table, so the cost does not grow with the number of products or administrations.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select
from sqlalchemy.orm import Session

from regenguide.domain.plan import Modality
from regenguide.products.custody import ProductSnapshot, ProductStatus
from regenguide.products.din import DIN_SYSTEM_URI, LOCAL_SYSTEM_URI, IdScheme, ProductIdentifier
from regenguide.products.fhir import UNRECORDED_PERFORMER, Preparation, administration_to_fhir, product_to_fhir
from regenguide.products.preparation import parse_preparation
from regenguide.products.recall import AdministrationRecord
from regenguide.store import models as m

BASE_URL = "https://regenguide.example.org/fhir"
RG = "http://regenguide.org/fhir"
UCUM = "http://unitsofmeasure.org"
MRN_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}
MODALITY_SYSTEM = f"{RG}/CodeSystem/modality"
INDICATION_SYSTEM = f"{RG}/CodeSystem/indication"
REGION_SYSTEM = f"{RG}/CodeSystem/region"
PLANE_SYSTEM = f"{RG}/CodeSystem/plane"
INSTRUMENT_SYSTEM = f"{RG}/CodeSystem/instrument"
AE_SYSTEM = f"{RG}/CodeSystem/adverse-event"
EXT_FITZPATRICK = f"{RG}/StructureDefinition/fitzpatrick-skin-type"
EXT_BODY_SITE = f"{RG}/StructureDefinition/body-site"
EXT_PLANE = f"{RG}/StructureDefinition/tissue-plane"
EXT_GUIDANCE = f"{RG}/StructureDefinition/guidance-imaging"
EXT_VISIT_STATUS = f"{RG}/StructureDefinition/visit-status"
EXT_CTCAE = f"{RG}/StructureDefinition/ctcae-grade"
#: Same system as the consent module's FHIR export: SHA-256 of the consent text (Attachment.hash is SHA-1).
CONSENT_DIGEST_SYSTEM = "urn:regenguide:consent-text-sha256"
DICOM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
# DICOM SOP classes (PS3.4 Annex B) for the instance's sopClass when the row does not say.
SOP_CLASS = {
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# Store units -> UCUM codes (unit strings not listed and not UCUM-shaped go out as text only).
UCUM_CODES = {
    "%": "%",
    "mm": "mm",
    "cm": "cm",
    "mL": "mL",
    "ml": "mL",
    "g": "g",
    "kg": "kg",
    "/cm2": "/cm2",
    "hairs/cm2": "{hairs}/cm2",
    "{score}": "{score}",
    "{grade}": "{grade}",
    "MHz": "MHz",
    "kPa": "kPa",
    "m/s": "m/s",
    "/uL": "/uL",
}
PLAN_STATUS = {"draft": "draft", "signed": "active", "cancelled": "revoked"}
VISIT_STATUS = {"completed": "finished", "scheduled": "planned", "missed": "cancelled", "cancelled": "cancelled"}
AE_OUTCOME = {
    "recovered": "resolved",
    "recovering": "recovering",
    "not_recovered": "ongoing",
    "recovered_with_sequelae": "resolvedWithSequelae",
    "fatal": "fatal",
    "unknown": "unknown",
}
AE_CAUSALITY = {
    "certain": "Certain",
    "probable": "Probably-Likely",
    "possible": "Possible",
    "unlikely": "Unlikely",
    "unassessable": "Unassessable-Unclassifiable",
}


def patient_bundle(session: Session, patient_id: int, *, base_url: str = BASE_URL) -> Bundle:
    """The patient's whole record as a validated FHIR R4 `collection` Bundle; LookupError if unknown."""
    return Bundle.model_validate(_bundle_dict(session, patient_id, base_url.rstrip("/")))


def patient_bundle_json(
    session: Session, patient_id: int, *, base_url: str = BASE_URL, validate: bool = True
) -> dict[str, Any]:
    """The same record as JSON-ready data; LookupError if unknown.

    The data returned is exactly what was validated against the R4B models (`validate=False` skips that
    check, for callers that have validated the same code path already); it is not re-serialised from the
    models, which would cost more than building and validating it.
    """
    data = _bundle_dict(session, patient_id, base_url.rstrip("/"))
    if validate:
        Bundle.model_validate(data)
    return data


# --------------------------------------------------------------------------------------------------
def _all(session: Session, model: Any, *where: Any) -> list[Any]:
    return list(session.execute(select(model).where(*where).order_by(model.id)).scalars())


def _bundle_dict(session: Session, patient_id: int, base: str) -> dict[str, Any]:
    patient = session.get(m.Patient, patient_id)
    if patient is None:
        raise LookupError(f"no patient with id {patient_id}")
    pid = patient.id
    assessments = _all(session, m.Assessment, m.Assessment.patient_id == pid)
    plans = _all(session, m.TreatmentPlan, m.TreatmentPlan.patient_id == pid)
    plan_ids = [p.id for p in plans]
    planned = _all(session, m.PlannedInjection, m.PlannedInjection.plan_id.in_(plan_ids)) if plan_ids else []
    consents = _all(session, m.Consent, m.Consent.patient_id == pid)
    products = _all(session, m.BiologicProduct, m.BiologicProduct.patient_id == pid)
    product_ids = [p.id for p in products]
    custody = _all(session, m.CustodyEvent, m.CustodyEvent.product_id.in_(product_ids)) if product_ids else []
    administrations = [ev for ev in custody if ev.event_type == "administered"]
    procedures = _all(session, m.Procedure, m.Procedure.patient_id == pid)
    proc_ids = [p.id for p in procedures]
    performed = (
        _all(session, m.PerformedInjection, m.PerformedInjection.procedure_id.in_(proc_ids)) if proc_ids else []
    )
    visits = _all(session, m.FollowupVisit, m.FollowupVisit.patient_id == pid)
    studies = _all(session, m.ImagingStudy, m.ImagingStudy.patient_id == pid)
    observations = _all(session, m.Observation, m.Observation.patient_id == pid)
    events = _all(session, m.AdverseEvent, m.AdverseEvent.patient_id == pid)
    site = session.get(m.Site, patient.site_id)

    # Staff referred to anywhere in the record become Practitioner resources.
    user_ids: set[int] = set()
    for rows, attrs in (
        (assessments, ("clinician_id",)),
        (plans, ("signed_by", "created_by")),
        (consents, ("recorded_by",)),
        (procedures, ("performer_id",)),
        (observations, ("recorded_by",)),
        (administrations, ("user_id",)),
    ):
        for row in rows:
            user_ids.update(v for a in attrs if (v := getattr(row, a)) is not None)
    users = _all(session, m.User, m.User.id.in_(sorted(user_ids))) if user_ids else []
    users_by_id = {u.id: u for u in users}

    product_ref = {p.id: f"BiologicallyDerivedProduct/{_product_fhir_id(p)}" for p in products}
    prod_by_id = {p.id: p for p in products}
    assessment_ids = {a.id for a in assessments}
    visit_ids = {v.id for v in visits}
    proc_id_set = set(proc_ids)
    study_ids = {s.id for s in studies}
    by_plan: dict[int, list[m.PlannedInjection]] = {}
    for inj in planned:
        by_plan.setdefault(inj.plan_id, []).append(inj)
    by_proc: dict[int, list[m.PerformedInjection]] = {}
    for pinj in performed:
        by_proc.setdefault(pinj.procedure_id, []).append(pinj)
    by_product: dict[int, list[m.CustodyEvent]] = {}
    for ev in custody:
        by_product.setdefault(ev.product_id, []).append(ev)
    used_in: dict[int, list[m.PerformedInjection]] = {}
    for pinj in performed:
        if pinj.product_id is not None:
            used_in.setdefault(pinj.product_id, []).append(pinj)
    snaps = {p.id: _snapshot(p, pid) for p in products}

    def practitioner(uid: int | None) -> dict[str, str] | None:
        return {"reference": f"Practitioner/{uid}"} if uid is not None and uid in users_by_id else None

    def practitioner_named(uid: int | None) -> dict[str, str] | None:
        user = users_by_id.get(uid) if uid is not None else None
        return None if user is None else {"reference": f"Practitioner/{uid}", "display": user.username}

    subject = {"reference": f"Patient/{pid}"}
    resources: list[dict[str, Any]] = [_patient(patient, site)]
    if site is not None:
        resources.append({
            "resourceType": "Organization",
            "id": f"site-{site.id}",
            "name": site.name,
            "address": [{"country": site.jurisdiction}],
        })
    for user in users:
        resources.append({
            "resourceType": "Practitioner",
            "id": str(user.id),
            "active": bool(user.active),
            "name": [{"text": user.full_name or user.username}],
            "qualification": [{"code": {"text": user.role}}],
        })
    for a in assessments:
        resources.append(_condition(a, subject, practitioner(a.clinician_id)))
    for plan in plans:
        resources.append(_careplan(plan, by_plan.get(plan.id, []), subject, practitioner(plan.created_by),
                                   a_ok=plan.assessment_id in assessment_ids))
    plan_id_set = set(plan_ids)
    for c in consents:
        resources.append(_consent(c, subject, site, plan_ok=c.plan_id in plan_id_set))
    for prod in products:
        resources.append(_product(prod, snaps[prod.id], by_product.get(prod.id, []), pid, product_ref, plan_id_set))
    for proc in procedures:
        resources.append(_procedure(proc, by_proc.get(proc.id, []), subject, practitioner(proc.performer_id),
                                    product_ref, prod_by_id, plan_ok=proc.plan_id in plan_id_set))
    for ev in administrations:
        prod = prod_by_id[ev.product_id]
        resources.append(_administration(ev, prod, snaps[prod.id], subject, practitioner_named(ev.user_id),
                                         used_in.get(prod.id, []), product_ref, plan_ok=prod.plan_id in plan_id_set))
    for v in visits:
        resources.append(_encounter(v, subject, site, proc_ok=v.procedure_id in proc_id_set))
    for s in studies:
        resources.append(_imaging(s, subject, proc_id_set, visit_ids))
    for o in observations:
        resources.append(_observation(o, subject, practitioner(o.recorded_by), assessment_ids, visit_ids,
                                      proc_id_set, study_ids))
    proc_by_id = {p.id: p for p in procedures}
    for e in events:
        resources.append(_adverse_event(e, subject, proc_by_id, prod_by_id, product_ref))
    return _strip({
        "resourceType": "Bundle",
        "id": f"patient-{pid}-record",
        "type": "collection",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    })


def _strip(node: Any) -> Any:
    """Remove nulls and empty objects/arrays at every depth (FHIR JSON never carries them)."""
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(node, list):
        items = [_strip(v) for v in node]
        return [v for v in items if v is not None and v != [] and v != {}]
    return node


# --------------------------------------------------------------------------------------------------
def _iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite returns naive datetimes; the store writes UTC
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    return value.isoformat()


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _label(code: str | None) -> str:
    return (code or "").replace("_", " ")


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Drop None values and empty lists (FHIR forbids empty elements)."""
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def _patient(p: m.Patient, site: m.Site | None) -> dict[str, Any]:
    telecom = []
    if p.phone:
        telecom.append({"system": "phone", "value": p.phone, "use": "mobile"})
    if p.email:
        telecom.append({"system": "email", "value": p.email})
    return _clean({
        "resourceType": "Patient",
        "id": str(p.id),
        "identifier": [{
            "use": "usual",
            "type": {"coding": [MRN_TYPE], "text": "MRN"},
            "system": f"urn:regenguide:site:{p.site_id}:mrn",
            "value": p.mrn,
            **({"assigner": {"reference": f"Organization/site-{site.id}"}} if site is not None else {}),
        }],
        "name": [{"use": "official", "family": p.family_name, "given": [p.given_name]}],
        "gender": p.sex if p.sex in ("female", "male", "other", "unknown") else "unknown",
        "birthDate": _iso(p.birth_date),
        "telecom": telecom,
        "managingOrganization": {"reference": f"Organization/site-{site.id}"} if site is not None else None,
        "extension": [{"url": EXT_FITZPATRICK, "valueInteger": p.fitzpatrick}] if p.fitzpatrick else None,
    })


def _condition(a: m.Assessment, subject: dict[str, str], recorder: dict[str, str] | None) -> dict[str, Any]:
    stage = None
    if a.severity_scale:
        score = "" if a.severity_score is None else f" {a.severity_score:g}"
        stage = [{
            "summary": {"text": f"{_label(a.severity_scale)}{score}"},
            "type": {"coding": [{"system": INSTRUMENT_SYSTEM, "code": a.severity_scale}]},
        }]
    notes = [{"text": t} for t in (a.imaging_findings, a.notes) if t]
    return _clean({
        "resourceType": "Condition",
        "id": str(a.id),
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [{"system": INDICATION_SYSTEM, "code": a.indication}], "text": _label(a.indication)},
        "subject": subject,
        "recordedDate": _iso(a.assessed_on),
        "recorder": recorder,
        "stage": stage,
        "note": notes,
    })


def _site_concept(region: str, side: str | None) -> dict[str, Any]:
    text = _label(region) + (f", {side}" if side and side != "midline" else "")
    return {"coding": [{"system": REGION_SYSTEM, "code": region}], "text": text}


def _injection_text(inj: Any) -> str:
    parts = [_label(inj.region)]
    if inj.side and inj.side != "midline":
        parts.append(inj.side)
    if inj.plane:
        parts.append(f"{_label(inj.plane)} plane")
    if inj.device:
        parts.append(f"{inj.device}{f' {inj.gauge}G' if inj.gauge else ''}")
    if inj.volume_ml is not None:
        parts.append(f"{inj.volume_ml:g} mL")
    if inj.bolus_ml is not None:
        parts.append(f"boluses of {inj.bolus_ml:g} mL")
    depth = getattr(inj, "needle_depth_mm", None)
    if depth is not None:
        parts.append(f"needle depth {depth:g} mm")
    return ", ".join(parts)


def _careplan(
    plan: m.TreatmentPlan,
    injections: Iterable[m.PlannedInjection],
    subject: dict[str, str],
    author: dict[str, str] | None,
    *,
    a_ok: bool,
) -> dict[str, Any]:
    activity_status = {"draft": "not-started", "signed": "scheduled", "cancelled": "cancelled"}[plan.status]
    modality = {"coding": [{"system": MODALITY_SYSTEM, "code": plan.modality}], "text": _label(plan.modality)}
    activities = []
    for inj in injections:
        ext = [{"url": EXT_BODY_SITE, "valueCodeableConcept": _site_concept(inj.region, inj.side)}]
        if inj.plane:
            ext.append({"url": EXT_PLANE, "valueCodeableConcept": {
                "coding": [{"system": PLANE_SYSTEM, "code": inj.plane}], "text": _label(inj.plane)}})
        detail: dict[str, Any] = {
            "extension": ext,
            "kind": "ServiceRequest",
            "code": modality,
            "status": activity_status,
            "description": f"#{inj.seq}: {_injection_text(inj)}",
        }
        if inj.volume_ml is not None:
            detail["quantity"] = {"value": inj.volume_ml, "unit": "mL", "system": UCUM, "code": "mL"}
        activities.append({"detail": detail})
    guidance = plan.guidance_imaging + (" with Doppler" if plan.doppler else "")
    return _clean({
        "resourceType": "CarePlan",
        "id": str(plan.id),
        "status": PLAN_STATUS.get(plan.status, "unknown"),
        "intent": "plan",
        "category": [modality],
        "title": f"{_label(plan.modality)} for {_label(plan.indication)}",
        "description": f"Jurisdiction {plan.jurisdiction}; image guidance: {guidance}.",
        "subject": subject,
        "period": {"start": _iso(plan.planned_on)} if plan.planned_on else None,
        "created": _iso(plan.signed_at) if plan.signed_at else None,
        "author": author,
        "addresses": [{"reference": f"Condition/{plan.assessment_id}"}] if a_ok else None,
        "activity": activities,
        "extension": [{"url": EXT_GUIDANCE, "valueCode": plan.guidance_imaging}],
    })


def _consent(c: m.Consent, subject: dict[str, str], site: m.Site | None, *, plan_ok: bool) -> dict[str, Any]:
    raw = (c.text or "").encode("utf-8")
    provision: dict[str, Any] = {"type": "permit" if c.decision == "accepted" else "deny"}
    nested = [{"type": "permit" if c.research_use else "deny", "code": [{"text": "research"}]}]
    if c.decision == "accepted":
        provision["provision"] = nested
    if plan_ok:
        provision["data"] = [{"meaning": "related", "reference": {"reference": f"CarePlan/{c.plan_id}"}}]
    if c.expires_on:
        provision["period"] = {"end": _iso(c.expires_on)}
    return _clean({
        "resourceType": "Consent",
        "id": str(c.id),
        "status": "inactive" if c.decision == "withdrawn" else "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}], "text": "Patient consent"}],
        "identifier": [{"system": CONSENT_DIGEST_SYSTEM, "value": c.text_digest}],
        "patient": subject,
        "dateTime": _iso(c.signed_at),
        "performer": [{"display": f"{c.signer_name} ({c.signer_role})"}],
        "organization": [{"reference": f"Organization/site-{site.id}"}] if site is not None else None,
        "policyRule": {"text": f"RegenGuide consent {c.version} ({c.decision})"},
        "sourceAttachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(raw).decode("ascii"),
            "hash": base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"),
            "title": f"Consent {c.version}",
        },
        "provision": provision,
    })


def _product_fhir_id(p: m.BiologicProduct) -> str:
    out = re.sub(r"[^A-Za-z0-9\-.]", "-", p.identifier)[:64]
    return out or f"product-{p.id}"


def _product(
    p: m.BiologicProduct,
    snap: ProductSnapshot | None,
    events: list[m.CustodyEvent],
    pid: int,
    product_ref: dict[int, str],
    plan_ids: set[int],
) -> dict[str, Any]:
    resource = _product_via_products_module(p, snap)
    if resource is None:
        category = "fluid" if p.product_type == "prp" else "tissue" if p.product_type in (
            "microfat", "nanofat", "cal") else "cells"
        available = p.status in ("released", "issued", "returned")
        resource = {
            "resourceType": "BiologicallyDerivedProduct",
            "identifier": [{"system": _identifier_system(p.identifier_scheme), "value": p.identifier}],
            "productCategory": category,
            "productCode": {"coding": [{"system": "urn:regenguide:product-type", "code": p.product_type}],
                            "text": _label(p.product_type)},
            "status": "available" if available else "unavailable",
            "quantity": 1,
            "collection": {"source": {"reference": f"Patient/{pid}"}, "collectedDateTime": _iso(p.collected_at)},
        }
    resource["id"] = _product_fhir_id(p)
    if p.parent_id is not None and p.parent_id in product_ref:
        resource["parent"] = [{"reference": product_ref[p.parent_id]}]
    elif "parent" in resource:
        resource.pop("parent")
    steps = [
        _clean({"description": _custody_text(ev), "timeDateTime": _iso(ev.at)})
        for ev in events if ev.status_after != "collected"
    ]
    if steps:
        resource["processing"] = [*resource.get("processing", []), *steps]
    if p.plan_id is not None and p.plan_id in plan_ids:
        resource.setdefault("extension", []).append(
            {"url": f"{RG}/StructureDefinition/treatment-plan",
             "valueReference": {"reference": f"CarePlan/{p.plan_id}"}}
        )
    lots = [f"kit lot {p.kit_lot}" if p.kit_lot else None, f"reagent lot {p.reagent_lot}" if p.reagent_lot else None]
    if any(lots):
        resource.setdefault("productCode", {})["text"] = "; ".join(
            [resource.get("productCode", {}).get("text") or _label(p.product_type), *[x for x in lots if x]]
        )
    return _clean(resource)


def _custody_text(ev: m.CustodyEvent) -> str:
    text = _label(ev.event_type)
    if ev.status_after != ev.event_type:
        text += f" (status {_label(ev.status_after)})"
    if ev.location:
        text += f" at {ev.location}"
    return text + (f": {ev.note}" if ev.note else "")


def _identifier_system(scheme: str) -> str:
    return DIN_SYSTEM_URI if scheme == "isbt128" else LOCAL_SYSTEM_URI


def _snapshot(p: m.BiologicProduct, pid: int) -> ProductSnapshot | None:
    """The row as the products module sees it, or None when it cannot take this row (an identifier or
    status outside its vocabulary). The structured identifier (`identifier_data`) is preferred: it keeps
    flags and the parent division."""
    try:
        ident = None
        if p.identifier_data:
            try:
                ident = ProductIdentifier.model_validate(p.identifier_data)
            except ValueError:
                ident = None
        if ident is None or ident.key != p.identifier:
            value, _, division = p.identifier.partition("/")
            ident = ProductIdentifier(scheme=IdScheme(p.identifier_scheme), value=value, division=division or "00")
        return ProductSnapshot(
            identifier=ident,
            product_type=Modality(p.product_type),
            patient_id=str(pid),
            status=ProductStatus(p.status),
            autologous=p.autologous,
            collected_at=_aware(p.collected_at),
            expires_at=_aware(p.expires_at),
            volume_ml=p.volume_ml if p.volume_ml else None,
            description=_label(p.product_type),
            kit_lots=[p.kit_lot] if p.kit_lot else [],
            reagent_lots=[p.reagent_lot] if p.reagent_lot else [],
        )
    except (ValueError, TypeError):
        return None


def _preparation(p: m.BiologicProduct) -> Preparation | None:
    """The stored preparation record when it follows the products module's schema (its steps become
    processing steps), else None (e.g. a summary imported from elsewhere)."""
    if not p.preparation:
        return None
    try:
        prep = parse_preparation(p.preparation)
    except (ValueError, TypeError):
        return None
    return prep if prep.product_type == p.product_type else None


def _product_via_products_module(p: m.BiologicProduct, snap: ProductSnapshot | None) -> dict[str, Any] | None:
    """The products module's mapping (`regenguide.products.fhir.product_to_fhir`), or None when it cannot
    take this row."""
    if snap is None:
        return None
    try:
        return product_to_fhir(snap, _preparation(p)).model_dump(mode="json", exclude_none=True)
    except (ValueError, TypeError):
        return None


def _administration(
    ev: m.CustodyEvent,
    p: m.BiologicProduct,
    snap: ProductSnapshot | None,
    subject: dict[str, str],
    performer: dict[str, str] | None,
    injections: list[m.PerformedInjection],
    product_ref: dict[int, str],
    *,
    plan_ok: bool,
) -> dict[str, Any]:
    """Procedure for one administration recorded at the bedside (custody event `administered`): the
    products module's `administration_to_fhir`, with the performer's Practitioner, the sites of the
    performed injections that used the product and `partOf` the procedure(s) they belong to."""
    sites = _unique_sites(injections)
    part_of = [f"Procedure/{x}" for x in dict.fromkeys(i.procedure_id for i in injections)]
    based_on = [f"CarePlan/{p.plan_id}"] if plan_ok else []
    admin_id = f"custody-{ev.id}"
    at = _aware(ev.at)
    assert at is not None
    resource: dict[str, Any] | None = None
    if snap is not None:
        record = AdministrationRecord(
            administration_id=admin_id, product_key=snap.key, product_type=snap.product_type,
            patient_id=snap.patient_id, administered_at=at,
            performer=(performer or {}).get("display") or UNRECORDED_PERFORMER,
            volume_ml=p.volume_ml if p.volume_ml else None,
        )
        resource = administration_to_fhir(
            record, snap, performer=performer, body_site=sites, part_of=part_of, based_on=based_on
        ).model_dump(mode="json", exclude_none=True)
    else:  # a row the products module cannot take: the same elements, from the row itself
        resource = _clean({
            "resourceType": "Procedure",
            "id": admin_id,
            "status": "completed",
            "code": {"text": f"Administration of {'autologous ' if p.autologous else ''}{p.product_type}"},
            "subject": subject,
            "performedDateTime": _iso(at),
            "performer": [{"actor": performer}] if performer else None,
            "bodySite": sites,
            "partOf": [{"reference": r} for r in part_of],
            "basedOn": [{"reference": r} for r in based_on],
        })
    # The reference by bundle id and the product by its identifier (so the link survives outside the bundle).
    resource["usedReference"] = [{
        "reference": product_ref[p.id],
        "identifier": {"system": _identifier_system(p.identifier_scheme), "value": p.identifier},
    }]
    notes = [*resource.get("note", [])]
    if ev.location:
        notes.append({"text": f"Administered at {ev.location}."})
    if ev.note:
        notes.append({"text": ev.note})
    if notes:
        resource["note"] = notes
    return resource


def _unique_sites(injections: Iterable[m.PerformedInjection]) -> list[dict[str, Any]]:
    sites: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for inj in injections:
        key = (inj.region, inj.side)
        if key not in seen:
            seen.add(key)
            sites.append(_site_concept(inj.region, inj.side))
    return sites


def _procedure(
    proc: m.Procedure,
    injections: list[m.PerformedInjection],
    subject: dict[str, str],
    performer: dict[str, str] | None,
    product_ref: dict[int, str],
    products: dict[int, m.BiologicProduct],
    *,
    plan_ok: bool,
) -> dict[str, Any]:
    sites = _unique_sites(injections)
    used_ids = list(dict.fromkeys(i.product_id for i in injections if i.product_id in product_ref))
    # The product by reference and by identifier (the DIN or local id, so the link survives outside the bundle).
    used = [
        {"reference": product_ref[u], "identifier": {"system": _identifier_system(products[u].identifier_scheme),
                                                     "value": products[u].identifier}}
        for u in used_ids
        if u is not None
    ]
    guidance = proc.guidance_imaging
    technique = "landmark technique" if guidance == "none" else f"{guidance}-guided" + (
        " with Doppler" if proc.doppler else "")
    notes = [{"text": f"Session {proc.session_number}; {technique}."}]
    if proc.processing_method:
        notes.append({"text": f"Processing: {_label(proc.processing_method)}."})
    notes += [{"text": f"Injection {_injection_text(i)}"} for i in injections]
    if proc.notes:
        notes.append({"text": proc.notes})
    return _clean({
        "resourceType": "Procedure",
        "id": str(proc.id),
        "status": "completed",
        "code": {"coding": [{"system": MODALITY_SYSTEM, "code": proc.modality}], "text": _label(proc.modality)},
        "subject": subject,
        "basedOn": [{"reference": f"CarePlan/{proc.plan_id}"}] if plan_ok else None,
        "performedDateTime": _iso(proc.performed_at),
        "performer": [{"actor": performer}] if performer else None,
        "bodySite": sites,
        "usedReference": used,
        "note": notes,
        "extension": [{"url": EXT_GUIDANCE, "valueCode": guidance}],
    })


def _encounter(v: m.FollowupVisit, subject: dict[str, str], site: m.Site | None, *, proc_ok: bool) -> dict[str, Any]:
    if v.status == "completed" and v.completed_on is not None:
        period = {"start": _iso(v.completed_on)}
    else:
        period = {"start": _iso(v.window_start), "end": _iso(v.window_end)}
    return _clean({
        "resourceType": "Encounter",
        "id": str(v.id),
        "status": VISIT_STATUS.get(v.status, "unknown"),
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [{"text": f"Follow-up visit: {v.label} (due {v.due_on.isoformat()})"}],
        "subject": subject,
        "period": period,
        "reasonReference": [{"reference": f"Procedure/{v.procedure_id}"}] if proc_ok else None,
        "serviceProvider": {"reference": f"Organization/site-{site.id}"} if site is not None else None,
        "extension": [{"url": EXT_VISIT_STATUS, "valueCode": v.status}],
    })


def _derived_uid(*parts: str) -> str:
    n = int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:16], "big")
    return f"2.25.{n}"


def _imaging(s: m.ImagingStudy, subject: dict[str, str], proc_ids: set[int], visit_ids: set[int]) -> dict[str, Any]:
    meta = s.meta or {}
    modality = (s.modality or "OT").upper()
    series_uid = str(meta.get("series_uid") or _derived_uid("series", s.study_uid))
    sop_class = str(meta.get("sop_class_uid") or SOP_CLASS.get(modality, SECONDARY_CAPTURE))
    series: dict[str, Any] = {
        "uid": series_uid,
        "modality": {"system": DICOM_DCM, "code": modality},
        "numberOfInstances": 1,
        "instance": [{
            "uid": s.sop_instance_uid,
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
            "number": 1,
        }],
    }
    if s.region:
        series["bodySite"] = {"system": REGION_SYSTEM, "code": s.region, "display": _label(s.region)}
    if s.acquired_at:
        series["started"] = _iso(s.acquired_at)
    return _clean({
        "resourceType": "ImagingStudy",
        "id": str(s.id),
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{s.study_uid}"}],
        "status": "available",
        "modality": [{"system": DICOM_DCM, "code": modality}],
        "subject": subject,
        "encounter": {"reference": f"Encounter/{s.visit_id}"} if s.visit_id in visit_ids else None,
        "started": _iso(s.acquired_at),
        "procedureReference": {"reference": f"Procedure/{s.procedure_id}"} if s.procedure_id in proc_ids else None,
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "description": f"{modality}{' ' + _label(s.region) if s.region else ''}, {s.frames} frame(s)"
        + (", calibrated" if s.calibrated else ""),
        "series": [series],
    })


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value}
    if unit:
        q["unit"] = unit
        code = UCUM_CODES.get(unit)
        if code is not None:
            q["system"], q["code"] = UCUM, code
    return q


def _observation(
    o: m.Observation,
    subject: dict[str, str],
    performer: dict[str, str] | None,
    assessment_ids: set[int],
    visit_ids: set[int],
    proc_ids: set[int],
    study_ids: set[int],
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(o.id),
        "status": "final",
        "code": {"coding": [{"system": INSTRUMENT_SYSTEM, "code": o.code}], "text": _label(o.code)},
        "subject": subject,
        "effectiveDateTime": _iso(o.observed_at),
        "performer": [performer] if performer else None,
        "encounter": {"reference": f"Encounter/{o.visit_id}"} if o.visit_id in visit_ids else None,
        "partOf": [{"reference": f"Procedure/{o.procedure_id}"}] if o.procedure_id in proc_ids else None,
        "focus": [{"reference": f"Condition/{o.assessment_id}"}] if o.assessment_id in assessment_ids else None,
        "derivedFrom": [{"reference": f"ImagingStudy/{o.imaging_study_id}"}]
        if o.imaging_study_id in study_ids else None,
    }
    notes: list[dict[str, str]] = []
    if o.value is not None:
        res["valueQuantity"] = _quantity(o.value, o.unit)
        if o.value_text:
            notes.append({"text": o.value_text})
    else:
        res["valueString"] = o.value_text
    if o.method:
        res["method"] = {"text": o.method}
    if o.edited:
        notes.append({"text": "A boundary or point of this measurement was set by the clinician."})
    if notes:
        res["note"] = notes
    return _clean(res)


def _adverse_event(
    e: m.AdverseEvent,
    subject: dict[str, str],
    procedures: dict[int, m.Procedure],
    products: dict[int, m.BiologicProduct],
    product_ref: dict[int, str],
) -> dict[str, Any]:
    proc = procedures.get(e.procedure_id) if e.procedure_id is not None else None
    prod = products.get(e.product_id) if e.product_id is not None else None
    resource = _ae_via_outcomes_module(e, subject, proc, prod)
    if resource is None:
        related = AE_CAUSALITY.get(e.relatedness)
        resource = {
            "resourceType": "AdverseEvent",
            "actuality": "actual",
            "subject": subject,
            "event": {"coding": [{"system": AE_SYSTEM, "code": e.event_type}], "text": e.description
                      or _label(e.event_type)},
            "date": _iso(e.onset_on),
            "seriousness": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                "code": "serious" if e.serious else "non-serious"}]},
            "severity": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
                "code": {1: "mild", 2: "moderate"}.get(e.severity, "severe")}]},
            "outcome": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                "code": AE_OUTCOME.get(e.outcome, "unknown")}]},
            "extension": [{"url": EXT_CTCAE, "valueInteger": e.severity}],
        }
        if related:
            resource["_causality"] = related
    causality_code = resource.pop("_causality", None) or AE_CAUSALITY.get(e.relatedness)
    causality = [{"assessment": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess",
        "code": causality_code}]}}] if causality_code else []
    # R4 allows Procedure (not BiologicallyDerivedProduct) as a suspect entity: the procedure is referenced,
    # the product is named by its identifier and the product resource is linked from the Procedure.
    suspects: list[dict[str, Any]] = []
    if proc is not None:
        suspects.append(_clean({"instance": {"reference": f"Procedure/{proc.id}"}, "causality": causality}))
    if prod is not None:
        display = f"{_label(prod.product_type)} {prod.identifier}" + (f" lot {e.lot}" if e.lot else "")
        suspects.append(_clean({
            "instance": {"identifier": {"system": _identifier_system(prod.identifier_scheme),
                                        "value": prod.identifier}, "display": display},
            "causality": causality,
        }))
    if suspects:
        resource["suspectEntity"] = suspects
    resource["id"] = str(e.id)
    resource["subject"] = subject
    if e.resolved_on is not None:
        resource.setdefault("extension", []).append(
            {"url": f"{RG}/StructureDefinition/resolution-date", "valueDate": _iso(e.resolved_on)})
    return _clean(resource)


def _ae_via_outcomes_module(
    e: m.AdverseEvent,
    subject: dict[str, str],
    proc: m.Procedure | None,
    prod: m.BiologicProduct | None,
) -> dict[str, Any] | None:
    """The outcomes module's mapping (taxonomy coding, seriousness criteria) when the row fits its model."""
    try:
        from regenguide.outcomes.adverse_events import AdverseEventReport, to_fhir_adverse_event
    except ImportError:  # pragma: no cover
        return None
    try:
        report = AdverseEventReport(
            patient_ref=subject["reference"],
            term=e.event_type,
            verbatim=e.description,
            modality=proc.modality if proc is not None else None,
            procedure_date=_aware(proc.performed_at).date() if proc is not None else None,  # type: ignore[union-attr]
            onset_date=e.onset_on,
            resolution_date=e.resolved_on,
            severity_grade=e.severity,
            seriousness=list(e.seriousness or []),
            relatedness=e.relatedness,
            outcome=e.outcome,
            narrative=e.description,
        )
        data = to_fhir_adverse_event(report).model_dump(mode="json", exclude_none=True)
    except (ValueError, TypeError, KeyError):
        return None
    data.pop("suspectEntity", None)  # rebuilt with resolvable references by the caller
    return data
