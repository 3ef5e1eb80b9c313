"""The patient's whole record as a FHIR R4 Bundle: validates, references resolve, counts match the database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
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


def test_every_demo_patient_exports_a_valid_bundle_with_db_counts(engine: Engine, cohort: list[int]) -> None:
    seen: Counter[str] = Counter()
    with transaction(engine) as db:
        for pid in cohort:
            data = patient_bundle_json(db, pid)
            counts = _check_bundle(data)
            assert counts["Patient"] == 1 and counts["Organization"] == 1
            for rtype, model in COUNTED.items():
                n = db.execute(select(func.count()).select_from(model).where(model.patient_id == pid)).scalar_one()
                assert counts[rtype] == n, (pid, rtype)
            seen.update(counts)
    # the demo cohort exercises every resource type
    assert all(seen[t] > 0 for t in COUNTED), seen


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
        assert Bundle.model_validate(as_json).model_dump(exclude={"timestamp"}) == bundle.model_dump(
            exclude={"timestamp"}
        )
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
