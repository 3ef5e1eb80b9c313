"""De-identified research export (HIPAA Safe Harbor style, as REDCap's de-identified export does it).

Only patients who consented to research use are exported. Direct identifiers (record number,
names, birth date, contact) are never read. Every patient gets a pseudonymous id (HMAC-SHA256 of the
internal id under a per-export secret, so ids cannot be linked across exports or reversed), and so
does every procedure (internal row ids are record numbers) and one
date shift of 1–364 days, applied to all of that patient's dates so intervals are preserved. Ages
above 89 are grouped as "90+". Free-text fields (notes, descriptions, imaging findings) and images
(photographs, DICOM pixel data) are excluded. Output: CSV and Parquet per table, a REDCap data
dictionary with the records in REDCap's flat repeating-instrument layout, and FHIR R4 NDJSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from regenguide.store import models as m

MAX_SHIFT_DAYS = 364  # REDCap's de-identified export shifts dates by up to 364 days, consistent per record
AGE_TOP_CODE = 90  # Safe Harbor: ages over 89 are aggregated into one category


@dataclass
class ResearchExport:
    tables: dict[str, pd.DataFrame]
    patients: int
    files: list[Path] = field(default_factory=list)


def pseudonym(secret: bytes, patient_id: int) -> str:
    return hmac.new(secret, f"patient:{patient_id}".encode(), hashlib.sha256).hexdigest()[:16]


def procedure_pseudonym(secret: bytes, procedure_id: int) -> str:
    """Pseudonymous procedure id: internal row ids are record numbers (Safe Harbor identifier (R))."""
    return hmac.new(secret, f"procedure:{procedure_id}".encode(), hashlib.sha256).hexdigest()[:16]


def date_shift_days(secret: bytes, patient_id: int) -> int:
    digest = hmac.new(secret, f"shift:{patient_id}".encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:4], "big") % MAX_SHIFT_DAYS


def age_group(age_years: float | None) -> str | None:
    if age_years is None or np.isnan(age_years):
        return None
    return "90+" if age_years >= AGE_TOP_CODE else str(int(age_years))


def _frame(engine: Engine, stmt: Any) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _shift(df: pd.DataFrame, columns: list[str], shifts: pd.Series) -> pd.DataFrame:
    offsets = pd.to_timedelta(df["patient_id"].map(shifts), unit="D")
    for col in columns:
        if col in df:
            values = pd.to_datetime(df[col], utc=True, errors="coerce")
            df[col] = (values - offsets).dt.date
    return df


def build_export(engine: Engine, *, secret: bytes | None = None, as_of: date | None = None) -> ResearchExport:
    secret = secret or secrets.token_bytes(32)
    as_of = as_of or date.today()
    consenting = select(m.Patient.id).where(m.Patient.research_consent.is_(True))
    patients = _frame(
        engine,
        select(m.Patient.id.label("patient_id"), m.Patient.birth_date, m.Patient.sex, m.Patient.fitzpatrick,
               m.Site.jurisdiction)
        .join(m.Site, m.Site.id == m.Patient.site_id)
        .where(m.Patient.research_consent.is_(True))
        .order_by(m.Patient.id),
    )
    ids = patients["patient_id"].tolist()
    shifts = pd.Series({pid: date_shift_days(secret, pid) for pid in ids}, dtype="int64")
    pseudo = pd.Series({pid: pseudonym(secret, pid) for pid in ids}, dtype="object")

    first_proc = _frame(
        engine,
        select(m.Procedure.patient_id, m.Procedure.performed_at)
        .where(m.Procedure.patient_id.in_(consenting))
        .order_by(m.Procedure.patient_id, m.Procedure.performed_at),
    ).drop_duplicates("patient_id")
    ref_dates = patients["patient_id"].map(
        dict(zip(first_proc["patient_id"], pd.to_datetime(first_proc["performed_at"], utc=True).dt.date, strict=True))
    ).fillna(as_of)
    birth = pd.to_datetime(patients["birth_date"])
    ref = pd.to_datetime(ref_dates)
    # completed years on the calendar (a 365.25-day year would call some 90th birthdays 89)
    before_birthday = (ref.dt.month < birth.dt.month) | ((ref.dt.month == birth.dt.month) & (ref.dt.day < birth.dt.day))
    ages = (ref.dt.year - birth.dt.year - before_birthday.astype(int)).astype(float)
    out_patients = pd.DataFrame(
        {
            "patient_id": patients["patient_id"],
            "age_at_first_procedure": [age_group(a) for a in ages],
            "sex": patients["sex"],
            "fitzpatrick": patients["fitzpatrick"],
            "jurisdiction": patients["jurisdiction"],
        }
    )

    tables: dict[str, pd.DataFrame] = {"patients": out_patients}
    tables["procedures"] = _shift(
        _frame(
            engine,
            select(m.Procedure.id.label("procedure_id"), m.Procedure.patient_id, m.Procedure.performed_at,
                   m.Procedure.modality, m.Procedure.guidance_imaging, m.Procedure.doppler,
                   m.Procedure.session_number, m.Procedure.processing_method)
            .where(m.Procedure.patient_id.in_(consenting)).order_by(m.Procedure.id),
        ),
        ["performed_at"], shifts,
    )
    tables["injections"] = _frame(
        engine,
        select(m.PerformedInjection.procedure_id, m.Procedure.patient_id, m.PerformedInjection.seq,
               m.PerformedInjection.region, m.PerformedInjection.side, m.PerformedInjection.plane,
               m.PerformedInjection.device, m.PerformedInjection.gauge, m.PerformedInjection.volume_ml,
               m.PerformedInjection.bolus_ml)
        .join(m.Procedure, m.Procedure.id == m.PerformedInjection.procedure_id)
        .where(m.Procedure.patient_id.in_(consenting))
        .order_by(m.PerformedInjection.procedure_id, m.PerformedInjection.seq),
    )
    tables["observations"] = _shift(
        _frame(
            engine,
            select(m.Observation.patient_id, m.Observation.procedure_id, m.Observation.code, m.Observation.value,
                   m.Observation.unit, m.Observation.observed_at)
            .where(m.Observation.patient_id.in_(consenting)).order_by(m.Observation.id),
        ),
        ["observed_at"], shifts,
    )
    tables["adverse_events"] = _shift(
        _frame(
            engine,
            select(m.AdverseEvent.patient_id, m.AdverseEvent.procedure_id, m.AdverseEvent.event_type,
                   m.AdverseEvent.severity, m.AdverseEvent.serious, m.AdverseEvent.relatedness,
                   m.AdverseEvent.onset_on, m.AdverseEvent.outcome, m.AdverseEvent.resolved_on)
            .where(m.AdverseEvent.patient_id.in_(consenting)).order_by(m.AdverseEvent.id),
        ),
        ["onset_on", "resolved_on"], shifts,
    )
    tables["visits"] = _shift(
        _frame(
            engine,
            select(m.FollowupVisit.patient_id, m.FollowupVisit.procedure_id, m.FollowupVisit.label,
                   m.FollowupVisit.due_on, m.FollowupVisit.status, m.FollowupVisit.completed_on)
            .where(m.FollowupVisit.patient_id.in_(consenting)).order_by(m.FollowupVisit.id),
        ),
        ["due_on", "completed_on"], shifts,
    )
    for df in tables.values():
        df.insert(0, "record_id", df.pop("patient_id").map(pseudo))
        if "procedure_id" in df:
            ids_ = df["procedure_id"]
            df["procedure_id"] = [None if pd.isna(x) else procedure_pseudonym(secret, int(x)) for x in ids_]
    return ResearchExport(tables=tables, patients=len(ids))


# --- REDCap -------------------------------------------------------------------------------------
REDCAP_COLUMNS = [
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note", "Text Validation Type OR Show Slider Number",
    "Text Validation Min", "Text Validation Max", "Identifier?", "Branching Logic (Show field only if...)",
    "Required Field?", "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name",
    "Matrix Ranking?", "Field Annotation",
]


def _redcap_field(name: str, form: str, series: pd.Series) -> dict[str, str]:
    row = dict.fromkeys(REDCAP_COLUMNS, "")
    row.update({"Variable / Field Name": name, "Form Name": form, "Field Label": name.replace("_", " ").capitalize()})
    if pd.api.types.is_bool_dtype(series):
        row["Field Type"] = "yesno"
    elif pd.api.types.is_integer_dtype(series):
        row.update({"Field Type": "text", "Text Validation Type OR Show Slider Number": "integer"})
    elif pd.api.types.is_float_dtype(series):
        row.update({"Field Type": "text", "Text Validation Type OR Show Slider Number": "number"})
    elif name.endswith(("_at", "_on")):
        row.update({"Field Type": "text", "Text Validation Type OR Show Slider Number": "date_ymd"})
    else:
        row["Field Type"] = "text"
    return row


def redcap_dictionary(export: ResearchExport) -> pd.DataFrame:
    rows = [dict.fromkeys(REDCAP_COLUMNS, "") | {
        "Variable / Field Name": "record_id", "Form Name": "patients", "Field Type": "text",
        "Field Label": "Record ID (pseudonymous)"}]
    for form, df in export.tables.items():
        for col in df.columns:
            if col == "record_id":
                continue
            rows.append(_redcap_field(f"{form}_{col}" if form != "patients" else col, form, df[col]))
    return pd.DataFrame(rows, columns=REDCAP_COLUMNS)


def redcap_records(export: ResearchExport) -> pd.DataFrame:
    """Flat REDCap import layout: one row per patient for the non-repeating form, one row per
    instance of each repeating form (`redcap_repeat_instrument`, `redcap_repeat_instance`)."""
    frames = []
    base = export.tables["patients"].copy()
    base.insert(1, "redcap_repeat_instrument", "")
    base.insert(2, "redcap_repeat_instance", "")
    frames.append(base)
    for form, df in export.tables.items():
        if form == "patients" or df.empty:
            continue
        rep = df.rename(columns={c: f"{form}_{c}" for c in df.columns if c != "record_id"}).copy()
        rep.insert(1, "redcap_repeat_instrument", form)
        rep.insert(2, "redcap_repeat_instance", rep.groupby("record_id").cumcount() + 1)
        frames.append(rep)
    records = pd.concat(frames, ignore_index=True, sort=False)
    # REDCap `yesno` fields import as 1/0, not True/False.
    for form, df in export.tables.items():
        for col in df.columns:
            if pd.api.types.is_bool_dtype(df[col]):
                name = col if form == "patients" else f"{form}_{col}"
                records[name] = records[name].map({True: 1, False: 0}).astype("Int64")
    return records


# --- FHIR NDJSON --------------------------------------------------------------------------------
def fhir_ndjson(export: ResearchExport) -> dict[str, list[dict[str, Any]]]:
    """De-identified FHIR R4 resources, one list per resource type (validated with fhir.resources R4B)."""
    from fhir.resources.R4B.adverseevent import AdverseEvent
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient
    from fhir.resources.R4B.procedure import Procedure

    out: dict[str, list[dict[str, Any]]] = {"Patient": [], "Procedure": [], "Observation": [], "AdverseEvent": []}
    gender = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
    for row in export.tables["patients"].itertuples(index=False):
        patient = Patient(id=row.record_id, gender=gender.get(row.sex, "unknown"))
        out["Patient"].append(json.loads(patient.model_dump_json(exclude_none=True)))
    for row in export.tables["procedures"].itertuples(index=False):
        res = Procedure(
            id=f"{row.record_id}-{row.procedure_id}", status="completed",
            subject={"reference": f"Patient/{row.record_id}"},
            code={"coding": [{"system": "urn:regenguide:modality", "code": row.modality}]},
            performedDateTime=str(row.performed_at),
        )
        out["Procedure"].append(json.loads(res.model_dump_json(exclude_none=True)))
    for i, row in enumerate(export.tables["observations"].itertuples(index=False)):
        obs: dict[str, Any] = {
            "id": f"{row.record_id}-obs{i}", "status": "final", "subject": {"reference": f"Patient/{row.record_id}"},
            "code": {"coding": [{"system": "urn:regenguide:instrument", "code": row.code}]},
            "effectiveDateTime": str(row.observed_at),
        }
        if row.value is not None and not pd.isna(row.value):
            obs["valueQuantity"] = {"value": float(row.value), **({"unit": row.unit} if row.unit else {})}
        out["Observation"].append(json.loads(Observation(**obs).model_dump_json(exclude_none=True)))
    for i, row in enumerate(export.tables["adverse_events"].itertuples(index=False)):
        ae = AdverseEvent(
            id=f"{row.record_id}-ae{i}", actuality="actual", subject={"reference": f"Patient/{row.record_id}"},
            event={"coding": [{"system": "urn:regenguide:adverse-event", "code": row.event_type}]},
            date=str(row.onset_on),
            seriousness={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                                     "code": "serious" if row.serious else "non-serious"}]},
        )
        out["AdverseEvent"].append(json.loads(ae.model_dump_json(exclude_none=True)))
    return out


def write_export(export: ResearchExport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, df in export.tables.items():
        csv_path, pq_path = folder / f"{name}.csv", folder / f"{name}.parquet"
        df.to_csv(csv_path, index=False)
        df.astype({c: "string" for c in df.columns if df[c].dtype == object}).to_parquet(pq_path, index=False)
        files += [csv_path, pq_path]
    dictionary, records = folder / "redcap_data_dictionary.csv", folder / "redcap_records.csv"
    redcap_dictionary(export).to_csv(dictionary, index=False)
    redcap_records(export).to_csv(records, index=False)
    files += [dictionary, records]
    for rtype, resources in fhir_ndjson(export).items():
        path = folder / f"{rtype}.ndjson"
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources), encoding="utf-8")
        files.append(path)
    export.files = files
    return files
