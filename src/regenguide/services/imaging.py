"""Use cases for ultrasound studies: import a DICOM file under a patient (identity checked before
anything is stored), analyse Doppler flow, measure, and keep per-region vascular maps that the plan
check uses. The image logic lives in `regenguide.imaging`; this module stores and finds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from regenguide.imaging.dicom_io import (
    ImagingError,
    IngestedStudy,
    PatientIdentity,
    ingest_dicom,
    read_dataset,
    read_study,
)
from regenguide.imaging.vascular import VascularMap
from regenguide.store import models as m


class StudyError(ValueError):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def identity_of(patient: m.Patient) -> PatientIdentity:
    """The identity a DICOM header must show to be filed under this patient: record number and birth
    date (names are spelt too differently across devices to be a hard check; they are compared only by
    the record number and birth date)."""
    return PatientIdentity(id=patient.mrn, birth_date=patient.birth_date.strftime("%Y%m%d"))


def _acquired(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def import_study(
    db: Session, path: Path, patient_id: int, *, image_root: Path, procedure_id: int | None = None,
    visit_id: int | None = None, region: str | None = None, allow_missing_identity: bool = False,
) -> m.ImagingStudy:
    patient = db.get(m.Patient, patient_id)
    if patient is None:
        raise StudyError(422, "patient_id", f"patient_id: no patient with id {patient_id}")
    for name, model, value in (("procedure_id", m.Procedure, procedure_id), ("visit_id", m.FollowupVisit, visit_id)):
        if value is not None:
            row: Any = db.get(model, value)
            if row is None or row.patient_id != patient_id:
                raise StudyError(422, name, f"{name}: {value} is not a record of patient {patient_id}")
    try:
        metadata = read_study(path)
    except ImagingError as exc:
        raise StudyError(422, "file", f"{path.name}: {exc}") from None
    if metadata.sop_instance_uid and db.execute(
        select(m.ImagingStudy.id).where(m.ImagingStudy.sop_instance_uid == metadata.sop_instance_uid)
    ).first():
        raise StudyError(409, "duplicate", f"{path.name}: this DICOM instance is already imported")
    try:
        ingested: IngestedStudy = ingest_dicom(path, image_root, identity_of(patient),
                                               allow_missing=allow_missing_identity)
    except ImagingError as exc:
        raise StudyError(422, "identity", f"{path.name}: {exc}") from None
    md = ingested.metadata
    study = m.ImagingStudy(
        patient_id=patient_id, procedure_id=procedure_id, visit_id=visit_id,
        study_uid=(md.study_instance_uid or "unknown")[:64],
        sop_instance_uid=(md.sop_instance_uid or ingested.sha256)[:64],
        modality=(md.modality or "OT")[:16], storage_path=ingested.stored_path, sha256=ingested.sha256,
        frames=md.frames, calibrated=md.calibration is not None, acquired_at=_acquired(md.acquired_at),
        region=region, meta=md.model_dump(mode="json", exclude={"patient"}),
    )
    db.add(study)
    db.flush()
    return study


@dataclass
class LoadedStudy:
    study: m.ImagingStudy
    dataset: Any

    @property
    def metadata(self) -> Any:
        from regenguide.imaging.dicom_io import metadata_from_dataset

        return metadata_from_dataset(self.dataset)


def load(study: m.ImagingStudy, image_root: Path) -> LoadedStudy:
    path = image_root / study.storage_path
    if not path.is_file():
        raise StudyError(404, "image-missing", f"study {study.id}: no image file is stored for it "
                         "(a synthetic demo row, or the image store was moved)")
    try:
        return LoadedStudy(study, read_dataset(path))
    except ImagingError as exc:
        raise StudyError(422, "file", f"study {study.id}: {exc}") from None


def doppler(study: m.ImagingStudy, image_root: Path, frame: int = 0) -> Any:
    """Doppler flow extraction on one frame of a stored study (`regenguide.imaging.doppler.FlowResult`)."""
    from regenguide.imaging.dicom_io import frame_rgb
    from regenguide.imaging.doppler import extract_flow

    loaded = load(study, image_root)
    if not 0 <= frame < max(study.frames, 1):
        raise StudyError(422, "frame", f"frame: {frame} is outside 0..{study.frames - 1}")
    return extract_flow(frame_rgb(loaded.dataset, frame), metadata=loaded.metadata, frame=frame)


def overlay_png(study: m.ImagingStudy, image_root: Path, frame: int = 0) -> bytes:
    import io

    from regenguide.imaging.dicom_io import frame_rgb
    from regenguide.imaging.doppler import analyse_frame
    from regenguide.imaging.overlay import flow_overlay

    loaded = load(study, image_root)
    rgb = frame_rgb(loaded.dataset, frame)
    image = flow_overlay(rgb, analyse_frame(rgb, metadata=loaded.metadata, frame=frame))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def map_vessels(
    db: Session, study: m.ImagingStudy, image_root: Path, *, region: str, side: str | None, frame: int = 0,
    kind: str = "artery", user_id: int | None = None,
) -> m.VascularMapRecord:
    """Build the vascular map of a region from one Doppler frame of a calibrated study and store it."""
    from regenguide.imaging.dicom_io import CalibrationMissing
    from regenguide.imaging.refs import ImageReference
    from regenguide.imaging.vascular import vascular_map_from_flow

    result = doppler(study, image_root, frame)
    image = ImageReference(study_instance_uid=study.study_uid, sop_instance_uid=study.sop_instance_uid, frame=frame,
                           stored_path=study.storage_path)
    try:
        vmap = vascular_map_from_flow(result, region=region, side=side, kind=kind,  # type: ignore[arg-type]
                                      image=image)
    except CalibrationMissing as exc:
        raise StudyError(422, "calibration", f"study {study.id}: {exc}") from None
    acquired = study.acquired_at.date().isoformat() if study.acquired_at else None
    vmap = VascularMap.model_validate({**vmap.model_dump(), "patient_ref": str(study.patient_id),
                                       "acquired_on": acquired})
    record = m.VascularMapRecord(patient_id=study.patient_id, study_id=study.id, region=region, side=side,
                                 vessel_count=len(vmap.vessels), data=vmap.model_dump(mode="json"),
                                 created_by=user_id)
    db.add(record)
    db.flush()
    return record


def maps_for(db: Session, patient_id: int) -> list[VascularMap]:
    """The latest map of each region (and side) of a patient."""
    rows = db.execute(
        select(m.VascularMapRecord).where(m.VascularMapRecord.patient_id == patient_id)
        .order_by(m.VascularMapRecord.created_at.desc(), m.VascularMapRecord.id.desc())
    ).scalars()
    latest: dict[tuple[str, str | None], VascularMap] = {}
    for row in rows:
        latest.setdefault((row.region, row.side), VascularMap.model_validate(row.data))
    return list(latest.values())
