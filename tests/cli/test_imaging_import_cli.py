"""`regenguide imaging import` files studies under a patient only when the DICOM identity matches."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.config import get_settings
from regenguide.imaging.phantom import make_phantom, phantom_dataset
from regenguide.store import models as m
from regenguide.store.db import transaction

runner = CliRunner()


@pytest.fixture
def patient(db_url: str, engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    monkeypatch.setenv("REGENGUIDE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    with transaction(engine) as db:
        p = m.Patient(site_id=1, mrn="IMG-7", given_name="I", family_name="M", birth_date=date(1981, 2, 3),
                      sex="male")
        db.add(p)
        db.flush()
        pid = p.id
    yield pid
    get_settings.cache_clear()


def _file(tmp_path: Path, name: str, patient_id: str) -> Path:
    ds = phantom_dataset(make_phantom(seed=len(name)))
    ds.PatientID, ds.PatientBirthDate = patient_id, "19810203"
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_import_is_all_or_nothing(patient: int, engine: Any, tmp_path: Path) -> None:
    good, bad = _file(tmp_path, "a.dcm", "IMG-7"), _file(tmp_path, "bb.dcm", "OTHER")
    r = runner.invoke(app, ["imaging", "import", str(good), str(bad), "--patient", str(patient)])
    assert r.exit_code == 2 and "nothing imported" in r.output
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.ImagingStudy)).scalar_one() == 0
    assert _stored(tmp_path) == []  # the good file's copy, written before the bad one failed, is gone too
    r = runner.invoke(app, ["imaging", "import", str(good), "--patient", str(patient), "--region", "malar"])
    assert r.exit_code == 0, r.output
    assert "calibrated" in r.output
    with transaction(engine) as db:
        study = db.execute(select(m.ImagingStudy)).scalar_one()
        assert study.region == "malar" and study.patient_id == patient
        assert (tmp_path / "data" / "images" / study.storage_path).is_file()



def _stored(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "images").rglob("*.dcm"))


def test_a_failed_import_keeps_files_stored_before(patient: int, engine: Any, tmp_path: Path) -> None:
    """Only files the failed import wrote are deleted: a study imported earlier keeps its image."""
    first, second, bad = (_file(tmp_path, "a.dcm", "IMG-7"), _file(tmp_path, "ccc.dcm", "IMG-7"),
                          _file(tmp_path, "bb.dcm", "OTHER"))
    assert runner.invoke(app, ["imaging", "import", str(first), "--patient", str(patient)]).exit_code == 0
    kept = _stored(tmp_path)
    assert len(kept) == 1
    r = runner.invoke(app, ["imaging", "import", str(second), str(bad), "--patient", str(patient)])
    assert r.exit_code == 2, r.output
    assert _stored(tmp_path) == kept
    # A duplicate of the stored study fails (409) after nothing new was written: its file stays.
    r = runner.invoke(app, ["imaging", "import", str(second), str(first), "--patient", str(patient)])
    assert r.exit_code == 2 and "already imported" in r.output
    assert _stored(tmp_path) == kept
    with transaction(engine) as db:
        assert db.execute(select(func.count()).select_from(m.ImagingStudy)).scalar_one() == 1
