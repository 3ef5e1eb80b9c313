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
