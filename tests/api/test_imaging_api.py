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
