"""Use cases for ultrasound studies: import a DICOM file under a patient (identity checked before
anything is stored), analyse Doppler flow, measure, and keep per-region vascular maps that the plan
check uses. The image logic lives in `regenguide.imaging`; this module stores and finds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    check_identity,
    ingest_dicom,
    read_dataset,
    read_study,
)
from regenguide.imaging.vascular import VascularMap
from regenguide.store import models as m


class StudyError(ValueError):
    """A refused request; `field` names the request field at fault (for problem+json `errors[]`)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.extra = status, code, field, extra


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


@contextmanager
def new_files_removed_on_failure() -> Iterator[list[Path]]:
    """A list for `import_study(written=…)` to collect the image files it writes; when the block fails (so
    the transaction that would have referenced them is rolled back) they are deleted again, and a failed
    import of several files leaves the image store as it was. Files that were already stored (the same bytes
    imported before) are never collected, so never deleted."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def import_study(
    db: Session, path: Path, patient_id: int, *, image_root: Path, procedure_id: int | None = None,
    visit_id: int | None = None, region: str | None = None, allow_missing_identity: bool = False,
    written: list[Path] | None = None,
) -> m.ImagingStudy:
    patient = db.get(m.Patient, patient_id)
    if patient is None:
        raise StudyError(422, "patient_id", f"patient_id: no patient with id {patient_id}", field="patient_id")
    for name, model, value in (("procedure_id", m.Procedure, procedure_id), ("visit_id", m.FollowupVisit, visit_id)):
        if value is not None:
            row: Any = db.get(model, value)
            if row is None or row.patient_id != patient_id:
                raise StudyError(422, name, f"{name}: {value} is not a record of patient {patient_id}", field=name)
    try:
        metadata = read_study(path)
    except ImagingError as exc:
        raise StudyError(422, "file", f"{path.name}: {exc}", field="file") from None
    # Identity first: a file of another patient is refused as such, and never learns from a 409 whether its
    # instance is already on file.
    try:
        check_identity(metadata, identity_of(patient), allow_missing=allow_missing_identity)
    except ImagingError as exc:
        raise StudyError(422, "identity", f"{path.name}: {exc}", field="file") from None
    if metadata.sop_instance_uid and db.execute(
        select(m.ImagingStudy.id).where(m.ImagingStudy.sop_instance_uid == metadata.sop_instance_uid)
    ).first():
        raise StudyError(409, "duplicate", f"{path.name}: this DICOM instance is already imported", field="file")
    try:
        ingested: IngestedStudy = ingest_dicom(path, image_root, identity_of(patient),
                                               allow_missing=allow_missing_identity, metadata=metadata)
    except ImagingError as exc:
        raise StudyError(422, "identity", f"{path.name}: {exc}", field="file") from None
    if ingested.newly_stored and written is not None:
        written.append(image_root / ingested.stored_path)
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


def _check_frame(study: m.ImagingStudy, frame: int) -> None:
    if not 0 <= frame < max(study.frames, 1):
        raise StudyError(422, "frame", f"frame: {frame} is outside 0..{max(study.frames, 1) - 1}", field="frame")


def _frame(loaded: LoadedStudy, frame: int) -> Any:
    from regenguide.imaging.dicom_io import frame_rgb

    _check_frame(loaded.study, frame)
    try:
        return frame_rgb(loaded.dataset, frame)
    except ImagingError as exc:
        raise StudyError(422, "file", f"study {loaded.study.id}: {exc}") from None


def doppler(study: m.ImagingStudy, image_root: Path, frame: int = 0) -> Any:
    """Doppler flow extraction on one frame of a stored study (`regenguide.imaging.doppler.FlowResult`)."""
    from regenguide.imaging.doppler import extract_flow

    _check_frame(study, frame)
    loaded = load(study, image_root)
    return extract_flow(_frame(loaded, frame), metadata=loaded.metadata, frame=frame)


def overlay_png(study: m.ImagingStudy, image_root: Path, frame: int = 0) -> bytes:
    import io

    from regenguide.imaging.doppler import analyse_frame
    from regenguide.imaging.overlay import flow_overlay

    _check_frame(study, frame)
    loaded = load(study, image_root)
    rgb = _frame(loaded, frame)
    image = flow_overlay(rgb, analyse_frame(rgb, metadata=loaded.metadata, frame=frame))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


Point = tuple[float, float]


def measure(
    db: Session, study: m.ImagingStudy, image_root: Path, *, kind: str, points: list[Point] | None = None,
    boundaries: dict[str, float] | None = None, slices: list[list[Point]] | None = None,
    spacing_mm: float | None = None, frame: int = 0, code: str | None = None, visit_id: int | None = None,
    user_id: int | None = None,
) -> list[m.Observation]:
    """A calibrated measurement on a stored study, kept as observation rows linked to the study (and to
    the patient's procedure and visit): `distance` (2 points, mm), `area` (a traced outline, mm2),
    `thickness` (a scan line from the skin downwards, mm; `boundaries` are the clinician's edits) or
    `volume` (outlines traced on parallel `slices` `spacing_mm` apart, Cavalieri, mL)."""
    from regenguide.imaging.dicom_io import CalibrationMissing
    from regenguide.imaging.measure import (
        ScanLine,
        area_observation,
        distance_observation,
        measure_thickness,
        slices_volume_observation,
    )
    from regenguide.imaging.refs import ImageReference

    if visit_id is not None:
        visit = db.get(m.FollowupVisit, visit_id)
        if visit is None or visit.patient_id != study.patient_id:
            raise StudyError(422, "visit_id", f"visit_id: {visit_id} is not a visit of patient {study.patient_id}",
                             field="visit_id")
    if kind != "thickness" and boundaries:
        raise StudyError(422, "validation", "boundaries: only for a thickness measurement", field="boundaries")
    if kind == "volume":
        if points:
            raise StudyError(422, "validation", "points: a volume is traced as slices, not points", field="points")
        if not slices or spacing_mm is None:
            raise StudyError(422, "validation", "slices: a volume needs traced slices and spacing_mm", field="slices")
    elif slices or spacing_mm is not None:
        raise StudyError(422, "validation", "slices: only for a volume measurement", field="slices")
    else:
        need = {"distance": "exactly 2 points", "thickness": "exactly 2 points (the scan line)",
                "area": "at least 3 points"}[kind]
        count = len(points or [])
        if (kind == "area" and count < 3) or (kind != "area" and count != 2):
            raise StudyError(422, "validation", f"points: a {kind} measurement needs {need}", field="points")
    _check_frame(study, frame)
    loaded = load(study, image_root)
    calibration = loaded.metadata.calibration
    ref = ImageReference(study_instance_uid=study.study_uid, sop_instance_uid=study.sop_instance_uid, frame=frame,
                         stored_path=study.storage_path)
    pts = points or []
    field = "slices" if kind == "volume" else "points"
    try:
        if kind == "distance":
            observations = [distance_observation(pts[0], pts[1], calibration, ref)]
        elif kind == "area":
            observations = [area_observation(pts, calibration, ref)]
        elif kind == "volume":
            assert slices is not None and spacing_mm is not None
            observations = [slices_volume_observation(slices, spacing_mm, calibration, [ref])]
        else:
            line = ScanLine(start=pts[0], end=pts[1])
            field = "boundaries" if boundaries else "points"
            observations = measure_thickness(_frame(loaded, frame), line, calibration, overrides=boundaries,
                                             image_ref=ref).observations
    except CalibrationMissing as exc:
        raise StudyError(422, "calibration-missing", f"study {study.id} has no calibration: {exc}") from None
    except ImagingError as exc:
        raise StudyError(422, "validation", f"{field}: {exc}", field=field) from None
    single_code = code if len(observations) == 1 else None
    rows = [
        m.Observation(patient_id=study.patient_id, visit_id=visit_id, procedure_id=study.procedure_id,
                      imaging_study_id=study.id, code=(single_code or obs.code)[:64], value=obs.value, unit=obs.unit,
                      observed_at=study.acquired_at or datetime.now(UTC), method=obs.method[:200], edited=obs.edited,
                      recorded_by=user_id)
        for obs in observations
    ]
    db.add_all(rows)
    db.flush()
    return rows


def map_vessels(
    db: Session, study: m.ImagingStudy, image_root: Path, *, region: str, side: str | None, frame: int = 0,
    kind: str = "artery", user_id: int | None = None,
) -> m.VascularMapRecord:
    """Build the vascular map of a region from one Doppler frame of a calibrated study and store it."""
    from regenguide.imaging.dicom_io import CalibrationMissing
    from regenguide.imaging.refs import ImageReference
    from regenguide.imaging.vascular import vascular_map_from_flow
    from regenguide.kb import knowledge_base

    known = knowledge_base().region(region)
    if known is None:
        raise StudyError(422, "region", f"region: unknown region {region!r}; valid: "
                         f"{', '.join(sorted(knowledge_base().regions))}", field="region")
    region = known.code
    result = doppler(study, image_root, frame)
    image = ImageReference(study_instance_uid=study.study_uid, sop_instance_uid=study.sop_instance_uid, frame=frame,
                           stored_path=study.storage_path)
    try:
        vmap = vascular_map_from_flow(result, region=region, side=side, kind=kind,  # type: ignore[arg-type]
                                      image=image)
    except CalibrationMissing as exc:
        raise StudyError(422, "calibration-missing", f"study {study.id}: {exc}") from None
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
        select(m.VascularMapRecord.region, m.VascularMapRecord.side, m.VascularMapRecord.data)
        .where(m.VascularMapRecord.patient_id == patient_id)
        .order_by(m.VascularMapRecord.created_at.desc(), m.VascularMapRecord.id.desc())
    )
    latest: dict[tuple[str, str | None], VascularMap] = {}
    for region, side, data in rows:
        if (region, side) not in latest:
            latest[region, side] = VascularMap.model_validate(data)
    return list(latest.values())
