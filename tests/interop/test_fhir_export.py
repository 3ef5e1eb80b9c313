"""The patient's whole record as a FHIR R4 Bundle: validates, references resolve, counts match the database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import Engine, func, select

from regenguide.interop.fhir import patient_bundle, patient_bundle_json
from regenguide.products.din import DIN_SYSTEM_URI, LOCAL_SYSTEM_URI
from regenguide.services.demo import seed_demo
from regenguide.store import models as m
from regenguide.store.db import transaction

COUNTED = {
    "Condition": m.Assessment,
    "CarePlan": m.TreatmentPlan,
    "Consent": m.Consent,
    "BiologicallyDerivedProduct": m.BiologicProduct,
    "Procedure": m.Procedure,
    "Encounter": m.FollowupVisit,
    "ImagingStudy": m.ImagingStudy,
    "Observation": m.Observation,
    "AdverseEvent": m.AdverseEvent,
}


def _references(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            out.append(ref)
        for value in node.values():
            out += _references(value)
    elif isinstance(node, list):
        for value in node:
            out += _references(value)
    return out


def _has_null(node: Any) -> bool:
    if node is None or node == [] or node == {}:
        return True
    if isinstance(node, dict):
        return any(_has_null(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_null(v) for v in node)
    return False


def _check_bundle(data: dict[str, Any]) -> Counter[str]:
    assert data["resourceType"] == "Bundle" and data["type"] == "collection"
    again = Bundle.model_validate(data)  # round trip through the R4B models
    dumped = again.model_dump(mode="json", exclude_none=True)
    assert Bundle.model_validate(dumped) == again
    assert len(dumped["entry"]) == len(data["entry"])
    assert not _has_null(data), "FHIR JSON never carries null or empty elements"
    keys = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in data["entry"]]
    assert len(keys) == len(set(keys)), "duplicate resources"
    for entry, key in zip(data["entry"], keys, strict=True):
        assert entry["fullUrl"].endswith("/" + key)
    unresolved = [r for r in _references(data) if r not in set(keys)]
    assert not unresolved, unresolved
    return Counter(e["resource"]["resourceType"] for e in data["entry"])


@pytest.fixture
def cohort(engine: Engine) -> list[int]:
    summary = seed_demo(engine, patients=120, seed=21)
    assert summary.first_patient_id is not None and summary.last_patient_id is not None
    return list(range(summary.first_patient_id, summary.last_patient_id + 1))


def _administrations(db: Any, pid: int) -> int:
    """Administrations recorded at the bedside (custody event 'administered') of the patient's products."""
    stmt = (select(func.count()).select_from(m.CustodyEvent)
            .join(m.BiologicProduct, m.BiologicProduct.id == m.CustodyEvent.product_id)
            .where(m.BiologicProduct.patient_id == pid, m.CustodyEvent.event_type == "administered"))
    return int(db.execute(stmt).scalar_one())


def test_every_demo_patient_exports_a_valid_bundle_with_db_counts(engine: Engine, cohort: list[int]) -> None:
    seen: Counter[str] = Counter()
    administered = 0
    with transaction(engine) as db:
        for pid in cohort:
            data = patient_bundle_json(db, pid)
            counts = _check_bundle(data)
            assert counts["Patient"] == 1 and counts["Organization"] == 1
            for rtype, model in COUNTED.items():
                n = db.execute(select(func.count()).select_from(model).where(model.patient_id == pid)).scalar_one()
                if rtype == "Procedure":  # the procedures, plus one Procedure per bedside administration
                    n += _administrations(db, pid)
                assert counts[rtype] == n, (pid, rtype)
            administered += _administrations(db, pid)
            seen.update(counts)
    # the demo cohort exercises every resource type, bedside administrations included
    assert all(seen[t] > 0 for t in COUNTED), seen
    assert administered > 0


def test_bundle_content_follows_the_record(engine: Engine, cohort: list[int]) -> None:
    with transaction(engine) as db:
        # a patient with a product-using procedure, guided by ultrasound
        proc = db.execute(
            select(m.Procedure)
            .where(m.Procedure.guidance_imaging == "ultrasound", m.Procedure.modality != "microneedling")
            .order_by(m.Procedure.id)
        ).scalars().first()
        assert proc is not None
        patient = db.get(m.Patient, proc.patient_id)
        assert patient is not None
        bundle = patient_bundle(db, patient.id)
        data = bundle.model_dump(mode="json", exclude_none=True)
        as_json = patient_bundle_json(db, patient.id)
        # the JSON form and the model describe the same record
        # (fhir.resources' model_dump ignores `exclude`: the two builds' timestamps, which may fall in different
        # seconds, are dropped by hand.)
        def without_timestamp(b: Bundle) -> dict[str, Any]:
            return {k: v for k, v in b.model_dump(mode="json").items() if k != "timestamp"}

        assert without_timestamp(Bundle.model_validate(as_json)) == without_timestamp(bundle)
        stmt = select(m.BiologicProduct).where(m.BiologicProduct.patient_id == patient.id)
        products = list(db.execute(stmt).scalars())
    resources = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in data["entry"]}
    pat = resources[f"Patient/{patient.id}"]
    mrn = pat["identifier"][0]
    assert mrn["value"] == patient.mrn and mrn["system"].startswith("urn:") and mrn["type"]["coding"][0]["code"] == "MR"
    assert pat["birthDate"] == patient.birth_date.isoformat()
    assert pat["gender"] == patient.sex
    fhir_proc = resources[f"Procedure/{proc.id}"]
    assert fhir_proc["bodySite"] and fhir_proc["performer"][0]["actor"]["reference"].startswith("Practitioner/")
    used = [u["reference"] for u in fhir_proc["usedReference"]]
    assert all(u["identifier"]["value"] in {p.identifier for p in products} for u in fhir_proc["usedReference"])
    assert used and all(u.startswith("BiologicallyDerivedProduct/") for u in used)
    assert fhir_proc["basedOn"] == [{"reference": f"CarePlan/{proc.plan_id}"}]
    by_identifier = {p.identifier: p for p in products}
    for u in used:
        bdp = resources[u]
        ident = bdp["identifier"][0]
        row = by_identifier[ident["value"]]
        assert ident["system"] == (DIN_SYSTEM_URI if row.identifier_scheme == "isbt128" else LOCAL_SYSTEM_URI)
        assert bdp["collection"]["source"] == {"reference": f"Patient/{patient.id}"}
        assert bdp["processing"]  # custody events travel as processing steps
    plan = resources[f"CarePlan/{proc.plan_id}"]
    n_planned = len(plan.get("activity", []))
    assert n_planned >= 1
    assert all(a["detail"]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for a in plan["activity"])
    for obs in (r for r in resources.values() if r["resourceType"] == "Observation"):
        q = obs["valueQuantity"]
        if q.get("unit") in ("%", "mm", "{score}"):
            assert q["system"] == "http://unitsofmeasure.org" and q["code"] == q["unit"]


def test_unknown_patient_raises_lookup_error(engine: Engine) -> None:
    with transaction(engine) as db, pytest.raises(LookupError):
        patient_bundle(db, 987654)


def test_minimal_and_unusual_records_still_validate(engine: Engine) -> None:
    """A patient entered by hand (no plan; an adverse event outside the taxonomy; a text observation; an
    imaging row with a non-ultrasound modality) still gives a valid, self-contained bundle."""
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    with transaction(engine) as db:
        site_id = db.execute(select(m.Site.id).order_by(m.Site.id)).scalars().first()
        p = m.Patient(site_id=site_id, mrn="HAND-1", given_name="Ada", family_name="Example",
                      birth_date=date(1980, 5, 17), sex="other", version=1)
        db.add(p)
        db.flush()
        proc = m.Procedure(patient_id=p.id, modality="prp", performed_at=now, version=1)
        db.add(proc)
        db.flush()
        db.add_all([
            m.Observation(patient_id=p.id, code="free_text_note", value_text="patient satisfied", observed_at=now),
            m.AdverseEvent(patient_id=p.id, procedure_id=proc.id, event_type="unlisted_reaction", severity=2,
                           relatedness="unrelated", onset_on=date(2026, 3, 2), outcome="unknown", version=1),
            m.ImagingStudy(patient_id=p.id, study_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5", modality="MR",
                           storage_path="x.dcm", sha256="0" * 64),
        ])
        db.flush()
        data = patient_bundle_json(db, p.id)
    counts = _check_bundle(data)
    assert counts == Counter(
        {"Patient": 1, "Organization": 1, "Procedure": 1, "Observation": 1, "AdverseEvent": 1, "ImagingStudy": 1}
    )
    res = {e["resource"]["resourceType"]: e["resource"] for e in data["entry"]}
    assert res["Observation"]["valueString"] == "patient satisfied"
    assert res["AdverseEvent"]["event"]["coding"][0]["code"] == "unlisted_reaction"
    assert res["AdverseEvent"]["suspectEntity"][0]["instance"] == {"reference": f"Procedure/{proc.id}"}
    assert res["ImagingStudy"]["series"][0]["instance"][0]["sopClass"]["code"].endswith("1.2.840.10008.5.1.4.1.1.4")
    assert "telecom" not in res["Patient"]


# --- bedside administrations and aliquots (issue 4, item 8) ---------------------------------------------------
# Seeded users (tests/conftest.py): 1 admin, 2 clinician, 3 nurse, 4 lab, 5 researcher.
CLINICIAN, NURSE, LAB = 2, 3, 4
SPINS = [{"g_force": 100, "minutes": 15}, {"g_force": 1600, "minutes": 20}]


def _prp_record(at: datetime) -> dict[str, Any]:
    return {
        "product_type": "prp", "prepared_at": at.isoformat(), "operator": "lab.a", "blood_volume_ml": 30,
        "anticoagulant": "acd_a", "anticoagulant_volume_ml": 3,
        "anticoagulant_lot": {"kind": "anticoagulant", "name": "ACD-A", "lot": "AC-77"},
        "kit": {"kind": "kit", "name": "DemoKit PRP", "lot": "KIT-2026-01"}, "spins": SPINS,
        "baseline": {"platelets_per_uL": 200_000, "leukocytes_per_uL": 6_000, "neutrophils_per_uL": 3_600,
                     "rbc_per_uL": 4_800_000},
        "product": {"platelets_per_uL": 1_000_000, "leukocytes_per_uL": 4_000, "neutrophils_per_uL": 1_000,
                    "rbc_per_uL": 50_000},
        "product_volume_ml": 8, "activation": "none",
    }


def _patient_with_divided_product(db: Any, mrn: str, aliquots: int) -> dict[str, Any]:
    """Through the real services: a patient with a signed plan and valid consent, a PRP product registered
    with its preparation record, released and divided into `aliquots`; then a procedure whose injections
    use the first aliquot, and every aliquot administered at the bedside (the first by the nurse, the
    others with no user recorded)."""
    from regenguide.domain.plan import Modality
    from regenguide.products.custody import EventType
    from regenguide.services import products as svc

    now = datetime.now(UTC).replace(microsecond=0)
    site_id = db.execute(select(m.Site.id).order_by(m.Site.id)).scalars().first()
    patient = m.Patient(site_id=site_id, mrn=mrn, given_name="Lea", family_name="Moreau",
                        birth_date=date(1975, 6, 1), sex="female", version=1)
    db.add(patient)
    db.flush()
    plan = m.TreatmentPlan(patient_id=patient.id, modality="prp", indication="androgenetic_alopecia",
                           jurisdiction="US", status="signed", signed_by=CLINICIAN, signed_at=now)
    db.add(plan)
    db.flush()
    db.add(m.Consent(patient_id=patient.id, plan_id=plan.id, version="prp-1", text="I consent to PRP.",
                     text_digest="0" * 64, decision="accepted", signer_name="Lea Moreau",
                     signed_at=now - timedelta(days=1)))
    product = svc.register_product(db, svc.NewProduct(
        patient_id=patient.id, product_type=Modality.prp, collected_at=now - timedelta(minutes=40),
        location="lab 1", plan_id=plan.id, volume_ml=8, preparation=_prp_record(now - timedelta(minutes=30)),
    ), LAB)
    for event in (EventType.processed, EventType.qc_passed, EventType.released):
        svc.record_event(db, product, event, at=now - timedelta(minutes=20), location="lab 1", user_id=LAB)
    children = svc.divide_product(db, product, aliquots, location="lab 1", user_id=LAB)
    proc = m.Procedure(patient_id=patient.id, plan_id=plan.id, modality="prp", performed_at=now,
                       performer_id=CLINICIAN, version=1)
    proc.injections = [
        m.PerformedInjection(seq=1, product_id=children[0].id, region="scalp", side="left", volume_ml=2),
        m.PerformedInjection(seq=2, product_id=children[0].id, region="scalp", side="right", volume_ml=2),
    ]
    db.add(proc)
    db.flush()
    checks = []
    for i, child in enumerate(children):
        verification, check = svc.bedside(
            db, patient_id=patient.id, scanned_patient=mrn, scanned_product=child.identifier, product_id=child.id,
            user_id=NURSE if i == 0 else None, location="procedure room 2", administer=True,
        )
        assert verification.ok, verification.refusals
        checks.append(check)
    events = {
        ev.product_id: ev
        for ev in db.execute(select(m.CustodyEvent).where(
            m.CustodyEvent.product_id.in_([c.id for c in children]), m.CustodyEvent.event_type == "administered"
        )).scalars()
    }
    return {"patient": patient, "plan": plan, "product": product, "children": children, "procedure": proc,
            "events": events}


def test_bedside_administrations_and_aliquots_in_the_patient_bundle(engine: Engine) -> None:
    from regenguide.products.fhir import fhir_id
    from regenguide.services.products import product_fhir_bundle

    with transaction(engine) as db:
        rec = _patient_with_divided_product(db, "BED-1", aliquots=2)
        pid = rec["patient"].id
        data = patient_bundle_json(db, pid)
        model = patient_bundle(db, pid)  # the validated R4B model of the same record
        parent, (a0, b0) = rec["product"], rec["children"]
        ev_a0, ev_b0 = rec["events"][a0.id], rec["events"][b0.id]
        proc_id, plan_id = rec["procedure"].id, rec["plan"].id
        alone = product_fhir_bundle(db, a0)  # the products module's own bundle of the aliquot
    counts = _check_bundle(data)  # validates with fhir.resources.R4B; every reference resolves in the bundle
    assert counts["BiologicallyDerivedProduct"] == 3
    assert counts["Procedure"] == 3  # the procedure and the two bedside administrations
    assert sorted(e.resource.get_resource_type() for e in model.entry) == sorted(counts.elements())
    res = {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in data["entry"]}
    bdp = {p.id: f"BiologicallyDerivedProduct/{fhir_id(p.identifier)}" for p in (parent, a0, b0)}

    # aliquots carry their parent; the parent (the whole collection) has none
    assert "parent" not in res[bdp[parent.id]]
    for child in (a0, b0):
        assert res[bdp[child.id]]["parent"] == [{"reference": bdp[parent.id]}]
        assert res[bdp[child.id]]["identifier"][0]["value"] == parent.identifier  # one DIN/local id ...
        assert res[bdp[child.id]]["identifier"][1]["value"] == child.identifier.split("/")[1]  # ... + division
    # the preparation record travels as processing steps (products module mapping)
    steps = [s["description"] for s in res[bdp[parent.id]]["processing"]]
    assert steps[:2] == ["spin 1: 100 x g for 15 min", "spin 2: 1600 x g for 20 min"]

    # the administration of the first aliquot: performed at the bedside, by the nurse, part of the procedure
    adm = res[f"Procedure/custody-{ev_a0.id}"]
    assert adm["status"] == "completed" and adm["subject"] == {"reference": f"Patient/{pid}"}
    at = ev_a0.at if ev_a0.at.tzinfo else ev_a0.at.replace(tzinfo=UTC)
    assert datetime.fromisoformat(adm["performedDateTime"]) == at
    assert adm["performer"] == [{"actor": {"reference": f"Practitioner/{NURSE}", "display": "nurse"}}]
    assert res[f"Practitioner/{NURSE}"]["name"] == [{"text": "Test nurse"}]
    assert [u["reference"] for u in adm["usedReference"]] == [bdp[a0.id]]
    assert adm["usedReference"][0]["identifier"]["value"] == a0.identifier
    assert [s["text"] for s in adm["bodySite"]] == ["scalp, left", "scalp, right"]
    assert adm["partOf"] == [{"reference": f"Procedure/{proc_id}"}]
    assert adm["basedOn"] == [{"reference": f"CarePlan/{plan_id}"}]
    assert adm["code"]["text"] == "Administration of autologous prp"
    # the procedure itself names the aliquot it used
    assert [u["reference"] for u in res[f"Procedure/{proc_id}"]["usedReference"]] == [bdp[a0.id]]

    # the second aliquot: no user recorded and no procedure used it, so no performer, body site or partOf
    adm_b = res[f"Procedure/custody-{ev_b0.id}"]
    assert [u["reference"] for u in adm_b["usedReference"]] == [bdp[b0.id]]
    assert not {"performer", "bodySite", "partOf"} & adm_b.keys()
    assert adm_b["subject"] == {"reference": f"Patient/{pid}"}

    # one mapping: the patient bundle's administration is the products module's, enriched
    alone_proc = next(e["resource"] for e in alone["entry"] if e["resource"]["resourceType"] == "Procedure")
    for key in ("id", "status", "code", "subject", "performedDateTime"):
        assert alone_proc[key] == adm[key], key


def test_the_record_endpoint_carries_the_administrations(engine: Engine, client: Any, auth: Any) -> None:
    with transaction(engine) as db:
        rec = _patient_with_divided_product(db, "BED-API", aliquots=1)
        pid, ev = rec["patient"].id, rec["events"][rec["children"][0].id]
    r = client.get(f"/api/v1/patients/{pid}/record", headers=auth["clinician"])
    assert r.status_code == 200, r.text
    counts = _check_bundle(r.json())
    assert counts["Procedure"] == 2
    adm = next(e["resource"] for e in r.json()["entry"] if e["resource"]["id"] == f"custody-{ev.id}")
    assert adm["partOf"] == [{"reference": f"Procedure/{rec['procedure'].id}"}]


def test_the_bundle_query_count_does_not_grow_with_administrations(engine: Engine) -> None:
    """The bundle is on the API's hot path: a fixed number of queries, whatever the number of products,
    aliquots and administrations (a per-row query would add one per administration)."""
    from sqlalchemy import event

    with transaction(engine) as db:
        small = _patient_with_divided_product(db, "Q-1", aliquots=1)["patient"].id
        large = _patient_with_divided_product(db, "Q-6", aliquots=6)["patient"].id
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    per_patient = {}
    for pid in (small, large):
        with transaction(engine) as db:
            event.listen(engine, "before_cursor_execute", count)
            try:
                statements.clear()
                data = patient_bundle_json(db, pid)
                per_patient[pid] = len(statements)
            finally:
                event.remove(engine, "before_cursor_execute", count)
        assert sum(e["resource"]["id"].startswith("custody-") for e in data["entry"]) == (1 if pid == small else 6)
    assert per_patient[small] == per_patient[large], per_patient


def test_an_administration_of_a_row_outside_the_products_vocabulary_is_still_exported(engine: Engine) -> None:
    """A product entered before identifiers were validated (its id fits neither ISBT 128 nor the local
    format) falls back to the export's own mapping, and its administration still appears and resolves."""
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    with transaction(engine) as db:
        site_id = db.execute(select(m.Site.id).order_by(m.Site.id)).scalars().first()
        p = m.Patient(site_id=site_id, mrn="LEG-1", given_name="Ada", family_name="Example",
                      birth_date=date(1980, 5, 17), sex="other", version=1)
        db.add(p)
        db.flush()
        prod = m.BiologicProduct(patient_id=p.id, identifier="LEGACY 42", identifier_scheme="local",
                                 product_type="prp", status="administered", autologous=True, collected_at=now)
        db.add(prod)
        db.flush()
        ev = m.CustodyEvent(product_id=prod.id, event_type="administered", status_after="administered",
                            at=now + timedelta(hours=1), location="room 1", user_id=NURSE)
        db.add(ev)
        db.flush()
        data = patient_bundle_json(db, p.id)
    counts = _check_bundle(data)
    assert counts["BiologicallyDerivedProduct"] == 1 and counts["Procedure"] == 1
    adm = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Procedure")
    assert adm["id"] == f"custody-{ev.id}" and adm["status"] == "completed"
    assert adm["usedReference"][0] == {"reference": "BiologicallyDerivedProduct/LEGACY-42",
                                       "identifier": {"system": LOCAL_SYSTEM_URI, "value": "LEGACY 42"}}
    assert adm["performer"][0]["actor"]["reference"] == f"Practitioner/{NURSE}"
    assert datetime.fromisoformat(adm["performedDateTime"]) == now + timedelta(hours=1)
