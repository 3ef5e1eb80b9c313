"""De-identified research export: who is in it, what is never in it, and that dates keep their intervals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from regenguide.interop.research import (
    REDCAP_COLUMNS,
    build_export,
    date_shift_days,
    fhir_ndjson,
    procedure_pseudonym,
    pseudonym,
    redcap_dictionary,
    redcap_records,
    write_export,
)
from regenguide.store import models as m
from regenguide.store.db import transaction

SECRET = b"k" * 32


def _populate(engine: Any) -> dict[str, int]:
    ids = {}
    with transaction(engine) as db:
        for key, consent, birth in (("old", True, date(1925, 5, 1)), ("young", True, date(1990, 2, 3)),
                                    ("private", False, date(1980, 1, 1))):
            p = m.Patient(site_id=1, mrn=f"MRN-{key}", given_name=f"Given{key}", family_name=f"Family{key}",
                          birth_date=birth, sex="female", research_consent=consent, phone="555-0100",
                          email=f"{key}@example.org")
            db.add(p)
            db.flush()
            ids[key] = p.id
            t0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
            proc = m.Procedure(patient_id=p.id, modality="microfat", performed_at=t0, guidance_imaging="ultrasound",
                               notes=f"free text mentioning Family{key}")
            proc.injections = [m.PerformedInjection(seq=1, region="malar", side="left", volume_ml=3.0)]
            db.add(proc)
            db.flush()
            db.add(m.Observation(patient_id=p.id, procedure_id=proc.id, code="graft_retention", value=0.5,
                                 unit="1", observed_at=t0 + timedelta(days=90)))
            db.add(m.AdverseEvent(patient_id=p.id, procedure_id=proc.id, event_type="bruising", severity=1,
                                  relatedness="probable", onset_on=date(2025, 3, 2),
                                  description=f"seen by Dr X for Given{key}"))
    return ids


def test_only_consenting_patients_with_pseudonyms(engine: Any) -> None:
    ids = _populate(engine)
    export = build_export(engine, secret=SECRET)
    assert export.patients == 2
    expected = {pseudonym(SECRET, ids["old"]), pseudonym(SECRET, ids["young"])}
    for name, df in export.tables.items():
        assert set(df["record_id"]) <= expected, name
    assert pseudonym(SECRET, ids["private"]) not in set(export.tables["patients"]["record_id"])
    # A different export secret gives unlinkable ids.
    assert pseudonym(b"z" * 32, ids["old"]) != pseudonym(SECRET, ids["old"])


def test_ages_over_89_grouped(engine: Any) -> None:
    ids = _populate(engine)
    pats = build_export(engine, secret=SECRET).tables["patients"].set_index("record_id")
    assert pats.loc[pseudonym(SECRET, ids["old"]), "age_at_first_procedure"] == "90+"
    assert pats.loc[pseudonym(SECRET, ids["young"]), "age_at_first_procedure"] == "35"


def test_dates_shifted_consistently_per_patient(engine: Any) -> None:
    ids = _populate(engine)
    export = build_export(engine, secret=SECRET)
    for key in ("old", "young"):
        rid, shift = pseudonym(SECRET, ids[key]), date_shift_days(SECRET, ids[key])
        assert 1 <= shift <= 364
        proc = export.tables["procedures"].set_index("record_id").loc[rid, "performed_at"]
        obs = export.tables["observations"].set_index("record_id").loc[rid, "observed_at"]
        assert proc == date(2025, 3, 1) - timedelta(days=shift)
        assert (obs - proc).days == 90


def test_files_carry_no_identifiers_and_validate(engine: Any, tmp_path: Path) -> None:
    _populate(engine)
    export = build_export(engine, secret=SECRET)
    files = write_export(export, tmp_path)
    text = "\n".join(f.read_text(errors="ignore") for f in files if f.suffix in (".csv", ".ndjson"))
    for forbidden in ("MRN-", "Given", "Family", "555-0100", "example.org", "1925-05-01", "Dr X"):
        assert forbidden not in text
    assert pd.read_parquet(tmp_path / "patients.parquet").shape[0] == 2
    from fhir.resources.R4B.procedure import Procedure

    lines = (tmp_path / "Procedure.ndjson").read_text().splitlines()
    assert len(lines) == 2
    Procedure.model_validate_json(lines[0])


def test_redcap_layout(engine: Any) -> None:
    _populate(engine)
    export = build_export(engine, secret=SECRET)
    dictionary = redcap_dictionary(export)
    assert list(dictionary.columns) == REDCAP_COLUMNS and len(REDCAP_COLUMNS) == 18
    records = redcap_records(export)
    fields = set(dictionary["Variable / Field Name"])
    for col in records.columns:
        if not col.startswith("redcap_"):
            assert col in fields, col
    repeats = records[records["redcap_repeat_instrument"] == "observations"]
    assert list(repeats["redcap_repeat_instance"]) == [1, 1]
    by_name = dictionary.set_index("Variable / Field Name")
    assert by_name.loc["observations_observed_at", "Text Validation Type OR Show Slider Number"] == "date_ymd"


@pytest.mark.parametrize("secret", [SECRET, b"other-secret-000000000000000000"])
def test_shift_bounds(secret: bytes) -> None:
    shifts = [date_shift_days(secret, i) for i in range(1, 2000)]
    assert min(shifts) >= 1 and max(shifts) <= 364 and len(set(shifts)) > 300


def test_internal_procedure_ids_are_pseudonymised(engine: Any) -> None:
    """Database row ids are record numbers (Safe Harbor identifier R): procedures carry a keyed hash."""
    _populate(engine)
    export = build_export(engine, secret=SECRET)
    with transaction(engine) as db:
        internal = {p.id for p in db.query(m.Procedure).all()}
    procs = export.tables["procedures"]
    assert set(procs["procedure_id"]).isdisjoint(internal)
    assert set(procs["procedure_id"]) <= {procedure_pseudonym(SECRET, i) for i in internal}
    # the same procedure has the same pseudonym in every table, so the tables still join
    for name in ("injections", "observations", "adverse_events"):
        assert set(export.tables[name]["procedure_id"]) <= set(procs["procedure_id"]), name
    fhir_ids = {p["id"] for p in fhir_ndjson(export)["Procedure"]}
    assert fhir_ids == {f"{r}-{p}" for r, p in zip(procs["record_id"], procs["procedure_id"], strict=True)}


def test_redcap_yesno_fields_are_one_and_zero(engine: Any) -> None:
    _populate(engine)
    export = build_export(engine, secret=SECRET)
    dictionary = redcap_dictionary(export).set_index("Variable / Field Name")
    records = redcap_records(export)
    yesno = [name for name, t in dictionary["Field Type"].items() if t == "yesno"]
    assert "adverse_events_serious" in yesno
    for name in yesno:
        assert set(records[name].dropna().astype(int)) <= {0, 1}, name


def test_ninetieth_birthday_is_grouped(engine: Any) -> None:
    """Completed years by the calendar: born 1 Jan 1933, first procedure 1 Jan 2023 → 90 → "90+"
    (32,872 days with 22 leap days; dividing by 365.25 gives 89.9986 and would leak the age)."""
    with transaction(engine) as db:
        for key, birth in (("ninety", date(1933, 1, 1)), ("eighty-nine", date(1933, 1, 2))):
            p = m.Patient(site_id=1, mrn=f"MRN-{key}", given_name="G", family_name="F", birth_date=birth, sex="male",
                          research_consent=True)
            db.add(p)
            db.flush()
            db.add(m.Procedure(patient_id=p.id, modality="prp", performed_at=datetime(2023, 1, 1, 9, tzinfo=UTC)))
    ages = list(build_export(engine, secret=SECRET).tables["patients"]["age_at_first_procedure"])
    assert ages == ["90+", "89"]
