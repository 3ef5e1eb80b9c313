"""Ultrasound studies through the API: identity-checked upload, Doppler analysis on a phantom of known
geometry, calibrated measurements stored as observations, vascular maps feeding the plan check."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from regenguide.imaging.phantom import PhantomSpec, VesselSpec, make_phantom, phantom_dataset
from regenguide.store import models as m
from regenguide.store.db import transaction

SPEC = PhantomSpec(vessels=[VesselSpec(x_mm=10.0, depth_mm=3.0, diameter_mm=1.5, direction="towards"),
                            VesselSpec(x_mm=18.0, depth_mm=8.0, diameter_mm=2.0, direction="away")])


def _phantom(tmp_path: Path, patient_id: str, birth: str = "19700101") -> Path:
    ds = phantom_dataset(make_phantom(seed=3, spec=SPEC))
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth
    path = tmp_path / f"{patient_id}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _patient(client: Any, auth: Any, mrn: str = "US-1") -> int:
    body = {"site_id": 1, "mrn": mrn, "given_name": "Uma", "family_name": "Sono", "birth_date": "1970-01-01",
            "sex": "female"}
    return int(client.post("/api/v1/patients", json=body, headers=auth["clinician"]).json()["id"])


def _upload(client: Any, auth: Any, path: Path, patient_id: int, **form: Any) -> Any:
    with path.open("rb") as f:
        return client.post("/api/v1/imaging/studies", files={"file": (path.name, f, "application/dicom")},
                           data={"patient_id": str(patient_id), **form}, headers=auth["clinician"])


def test_identity_mismatch_is_refused_and_nothing_stored(client: Any, auth: Any, engine: Any, tmp_path: Path,
                                                         settings: Any) -> None:
    pid = _patient(client, auth)
    r = _upload(client, auth, _phantom(tmp_path, "SOMEONE-ELSE"), pid)
    assert r.status_code == 422 and "patient id differs" in r.json()["detail"]
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.ImagingStudy)).scalar_one() == 0
    assert not (Path(settings.image_dir) / "dicom").exists()
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("hello")
    assert _upload(client, auth, not_dicom, pid).status_code == 422


def test_upload_doppler_measure_and_map(client: Any, auth: Any, tmp_path: Path) -> None:
    pid = _patient(client, auth)
    path = _phantom(tmp_path, "US-1")
    r = _upload(client, auth, path, pid, region="glabella")
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["calibrated"] is True
    assert _upload(client, auth, path, pid).status_code == 409
    # The same instance filed under another patient is refused for its identity, not as a duplicate.
    other = _patient(client, auth, "US-2")
    wrong = _upload(client, auth, path, other)
    assert wrong.status_code == 422 and "already imported" not in wrong.json()["detail"]
    assert "patient id differs" in wrong.json()["detail"]
    flow = client.get(f"/api/v1/imaging/studies/{study['id']}/doppler", headers=auth["clinician"]).json()
    depths = sorted(v["depth_mm"] for v in flow["vessels"])
    assert len(depths) == 2
    assert depths[0] == pytest.approx(3.0, abs=0.3) and depths[1] == pytest.approx(8.0, abs=0.3)
    png = client.get(f"/api/v1/imaging/studies/{study['id']}/overlay.png", headers=auth["clinician"])
    assert png.content[:4] == b"\x89PNG"
    # 100 px at 0.05 mm/px = 5 mm
    meas = client.post(f"/api/v1/imaging/studies/{study['id']}/measurements",
                       json={"kind": "distance", "points": [[100, 100], [200, 100]]}, headers=auth["clinician"])
    assert meas.status_code == 201
    assert meas.json()["observations"][0]["value"] == pytest.approx(5.0)
    assert meas.json()["observations"][0]["unit"] == "mm"
    # Thickness along a vertical scan line clear of the vessels: dermis and subcutis against the phantom's layers.
    truth = make_phantom(seed=3, spec=SPEC).truth
    x = 60
    line = {"kind": "thickness", "points": [[x, truth.skin_line_px - 10], [x, 460]]}
    thick = client.post(f"/api/v1/imaging/studies/{study['id']}/measurements", json=line, headers=auth["clinician"])
    assert thick.status_code == 201, thick.text
    values = {o["code"]: o["value"] for o in thick.json()["observations"]}
    tops = truth.layer_tops_mm  # dermal = skin surface to the dermis/subcutis junction; subcutis = junction to fascia
    assert values["dermal-thickness"] == pytest.approx(tops["subcutis"], abs=0.3)
    assert values["subcutaneous-thickness"] == pytest.approx(tops["fascia"] - tops["subcutis"], abs=0.3)
    vmap = client.post(f"/api/v1/imaging/studies/{study['id']}/vascular-map",
                       json={"region": "glabella", "side": "midline"}, headers=auth["clinician"])
    assert vmap.status_code == 201 and vmap.json()["vessels"] == 2
    maps = client.get(f"/api/v1/patients/{pid}/vascular-maps", headers=auth["clinician"]).json()
    assert [mp["region"] for mp in maps] == ["glabella"]

    # A stored plan injecting in the glabella at the mapped artery's depth gets the imaging finding.
    doc = json.loads((resources.files("regenguide.kb") / "data" / "examples" / "glabella_microfat_risky.json")
                     .read_text())
    doc["injections"][0]["depth_mm"] = 3.0
    plan = client.post("/api/v1/plans", json={"patient_id": pid, "document": doc}, headers=auth["clinician"]).json()
    rules = {(f["rule"], f.get("injection_index")) for f in plan["latest_check"]["findings"]}
    assert ("imaging.artery_within_margin", 0) in rules


def test_region_without_a_map_where_doppler_is_required(client: Any, auth: Any) -> None:
    pid = _patient(client, auth)
    doc = json.loads((resources.files("regenguide.kb") / "data" / "examples" / "glabella_microfat_risky.json")
                     .read_text())
    plan = client.post("/api/v1/plans", json={"patient_id": pid, "document": doc}, headers=auth["clinician"]).json()
    assert any(f["rule"] == "imaging.vascular_map_missing" for f in plan["latest_check"]["findings"])


def test_measurement_without_calibration_is_refused(client: Any, auth: Any, tmp_path: Path) -> None:
    pid = _patient(client, auth)
    ds = phantom_dataset(make_phantom(seed=1, spec=SPEC))
    ds.PatientID, ds.PatientBirthDate = "US-1", "19700101"
    del ds.SequenceOfUltrasoundRegions
    path = tmp_path / "uncal.dcm"
    ds.save_as(path, enforce_file_format=True)
    study = _upload(client, auth, path, pid).json()
    assert study["calibrated"] is False
    r = client.post(f"/api/v1/imaging/studies/{study['id']}/measurements",
                    json={"kind": "distance", "points": [[0, 0], [10, 0]]}, headers=auth["clinician"])
    assert r.status_code == 422 and "calibration" in r.json()["detail"]


def test_study_without_its_file_is_a_clear_404(client: Any, auth: Any, engine: Any) -> None:
    pid = _patient(client, auth)
    with transaction(engine) as db:
        study = m.ImagingStudy(patient_id=pid, study_uid="1.2.3", sop_instance_uid="1.2.3.4", modality="US",
                               storage_path="dicom/aa/bb/missing.dcm", sha256="0" * 64)
        db.add(study)
        db.flush()
        sid = study.id
    for url in (f"/api/v1/imaging/studies/{sid}/doppler", f"/api/v1/imaging/studies/{sid}/overlay.png"):
        r = client.get(url, headers=auth["clinician"])
        assert r.status_code == 404 and "no image file" in r.json()["detail"]


def test_measurements_are_stored_as_observations_linked_to_the_study(
    client: Any, auth: Any, engine: Any, tmp_path: Path
) -> None:
    from datetime import date

    pid = _patient(client, auth)
    other = _patient(client, auth, mrn="US-2")
    with transaction(engine) as db:
        visits = [m.FollowupVisit(patient_id=p, label="3 months", due_on=date(2026, 4, 1),
                                  window_start=date(2026, 3, 15), window_end=date(2026, 4, 15)) for p in (pid, other)]
        db.add_all(visits)
        db.flush()
        own_visit, foreign_visit = visits[0].id, visits[1].id
    study = _upload(client, auth, _phantom(tmp_path, "US-1"), pid).json()
    url = f"/api/v1/imaging/studies/{study['id']}/measurements"
    # Volume of a deposit traced on three parallel slices 2 mm apart: 3 x (10 mm x 10 mm) x 2 mm = 0.6 mL.
    square = [[100, 100], [300, 100], [300, 300], [100, 300]]  # 200 px x 0.05 mm = 10 mm a side
    r = client.post(url, json={"kind": "volume", "slices": [square] * 3, "spacing_mm": 2.0, "visit_id": own_visit},
                    headers=auth["clinician"])
    assert r.status_code == 201, r.text
    (obs,) = r.json()["observations"]
    assert (obs["code"], obs["unit"]) == ("deposit-volume", "mL") and obs["value"] == pytest.approx(0.6)
    area = client.post(url, json={"kind": "area", "points": square, "code": "graft-area"}, headers=auth["clinician"])
    assert area.status_code == 201 and area.json()["observations"][0]["value"] == pytest.approx(100.0)
    with transaction(engine) as db:
        rows = {row.code: row for row in db.execute(select(m.Observation).where(
            m.Observation.imaging_study_id == study["id"])).scalars()}
        assert set(rows) == {"deposit-volume", "graft-area"}
        assert rows["deposit-volume"].patient_id == pid and rows["deposit-volume"].visit_id == own_visit
        assert rows["graft-area"].unit == "mm2" and rows["graft-area"].value == pytest.approx(100.0)
    # Another patient's visit is refused (the observation would be filed under the wrong person).
    r = client.post(url, json={"kind": "distance", "points": [[0, 0], [10, 0]], "visit_id": foreign_visit},
                    headers=auth["clinician"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "visit_id"
    for body, field in (
        ({"kind": "distance", "points": [[0, 0], [1, 1], [2, 2]]}, "points"),
        ({"kind": "area", "points": [[0, 0], [10, 10], [10, 0], [0, 10]]}, "points"),  # crosses itself
        ({"kind": "volume", "slices": [square]}, "slices"),  # no spacing
        ({"kind": "distance", "points": [[0, 0], [10, 0]], "frame": 5}, "frame"),
        ({"kind": "distance", "points": [[0, 0], [10, 0]], "boundaries": {"skin": 1.0}}, "boundaries"),
    ):
        r = client.post(url, json=body, headers=auth["clinician"])
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["field"] == field, (body, r.json())
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.Observation).where(
            m.Observation.imaging_study_id == study["id"])).scalar_one() == 2


def test_frame_and_region_errors_name_the_field(client: Any, auth: Any, tmp_path: Path) -> None:
    pid = _patient(client, auth)
    study = _upload(client, auth, _phantom(tmp_path, "US-1"), pid).json()
    base = f"/api/v1/imaging/studies/{study['id']}"
    for url in (f"{base}/doppler?frame=3", f"{base}/overlay.png?frame=3"):
        r = client.get(url, headers=auth["clinician"])
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "frame", r.text
    r = client.post(f"{base}/vascular-map", json={"region": "glabela"}, headers=auth["clinician"])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "region"
    from regenguide.kb import knowledge_base

    alias = (knowledge_base().regions["temple"].aliases or ["Temple"])[0]
    r = client.post(f"{base}/vascular-map", json={"region": alias, "side": "left"}, headers=auth["clinician"])
    assert r.status_code == 201 and r.json()["region"] == "temple"  # stored under the canonical code
    import pydicom

    path = _phantom(tmp_path, "SOMEONE-ELSE")
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=True)
    mismatch = _upload(client, auth, path, pid)
    assert mismatch.status_code == 422 and mismatch.json()["errors"][0]["field"] == "file"
    assert "patient id differs" in mismatch.json()["errors"][0]["message"]


def test_measurements_keep_their_method_and_whether_the_clinician_edited_them(
    client: Any, auth: Any, tmp_path: Path
) -> None:
    """A thickness read by the software and one whose boundary the clinician moved are told apart, in the API
    and in the FHIR record (Observation.method, and a note for the edit)."""
    from fhir.resources.R4B.bundle import Bundle

    pid = _patient(client, auth)
    study = _upload(client, auth, _phantom(tmp_path, "US-1"), pid).json()
    url = f"/api/v1/imaging/studies/{study['id']}/measurements"
    truth = make_phantom(seed=3, spec=SPEC).truth
    line = {"kind": "thickness", "points": [[60, truth.skin_line_px - 10], [60, 460]]}
    auto = client.post(url, json=line, headers=auth["clinician"])
    assert auto.status_code == 201, auto.text
    edited = client.post(url, json={**line, "boundaries": {"fascia": 300.0}}, headers=auth["clinician"])
    assert edited.status_code == 201, edited.text
    auto_sub = next(o for o in auto.json()["observations"] if o["code"] == "subcutaneous-thickness")
    edit_sub = next(o for o in edited.json()["observations"] if o["code"] == "subcutaneous-thickness")
    assert (auto_sub["edited"], edit_sub["edited"]) == (False, True)
    assert auto_sub["method"] == "intensity profile along a scan line"
    assert edit_sub["method"] == "intensity profile along a scan line, boundary edited by the user"
    stored = client.get(f"/api/v1/observations/{edit_sub['observation_id']}", headers=auth["clinician"]).json()
    assert (stored["method"], stored["edited"]) == (edit_sub["method"], True)
    distance = client.post(url, json={"kind": "distance", "points": [[0, 0], [100, 0]]}, headers=auth["clinician"])
    assert distance.json()["observations"][0]["method"] == "calibrated Euclidean distance"
    assert distance.json()["observations"][0]["edited"] is True  # both points were placed by the clinician
    record = client.get(f"/api/v1/patients/{pid}/record", headers=auth["clinician"])
    assert record.status_code == 200, record.text
    Bundle.model_validate(record.json())
    observations = {e["resource"]["id"]: e["resource"] for e in record.json()["entry"]
                    if e["resource"]["resourceType"] == "Observation"}
    fhir_auto = observations[str(auto_sub["observation_id"])]
    fhir_edit = observations[str(edit_sub["observation_id"])]
    assert fhir_auto["method"] == {"text": auto_sub["method"]} and "note" not in fhir_auto
    assert fhir_edit["method"]["text"].endswith("edited by the user")
    assert "set by the clinician" in fhir_edit["note"][0]["text"]
