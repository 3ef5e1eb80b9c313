"""Ultrasound studies: upload (identity checked against the patient), Doppler analysis with an overlay,
calibrated measurements stored as observations, and per-region vascular maps for the plan check."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from regenguide.api.deps import Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.domain.plan import Side
from regenguide.security import Permission as P
from regenguide.services import imaging as svc
from regenguide.store import models as m

router = APIRouter(tags=["imaging"])
Writer = Annotated[Principal, Depends(require(P.imaging_write))]
Reader = Annotated[Principal, Depends(require(P.patient_read))]


def _root(request: Request) -> Path:
    return Path(request.app.state.settings.image_dir)


def _problem(exc: svc.StudyError) -> ProblemError:
    title = {404: "Not found", 409: "Conflict", 422: "Invalid request"}.get(exc.status, "Error")
    return ProblemError(exc.status, title, str(exc), type_=exc.code, **exc.extra)


class StudyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    procedure_id: int | None
    visit_id: int | None
    study_uid: str
    sop_instance_uid: str
    modality: str
    frames: int
    calibrated: bool
    acquired_at: datetime | None
    region: str | None
    sha256: str


def _study(db: Any, study_id: int) -> m.ImagingStudy:
    study = db.get(m.ImagingStudy, study_id)
    if study is None:
        raise ProblemError(404, "Not found", f"imaging study {study_id} does not exist", type_="not-found")
    return study


@router.post("/imaging/studies", status_code=201, response_model=StudyRead,
             summary="Upload a DICOM file under a patient (identity in the header must match)")
async def upload(
    request: Request, db: SessionDep, user: Writer,
    file: Annotated[UploadFile, File(description="DICOM file")],
    patient_id: Annotated[int, Form()],
    procedure_id: Annotated[int | None, Form()] = None,
    visit_id: Annotated[int | None, Form()] = None,
    region: Annotated[str | None, Form()] = None,
) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (Path(file.filename or "upload.dcm").name or "upload.dcm")
        path.write_bytes(await file.read())
        try:
            study = svc.import_study(db, path, patient_id, image_root=_root(request), procedure_id=procedure_id,
                                     visit_id=visit_id, region=region)
        except svc.StudyError as exc:
            raise _problem(exc) from None
    audit(db, user, user.audit("create", "imaging_studies", study.id, patient_id, {"sha256": study.sha256}))
    out = StudyRead.model_validate(study)
    db.commit()
    return out


@router.get("/imaging/studies", summary="Studies of a patient")
def list_studies(db: SessionDep, user: Reader, patient_id: int) -> list[dict[str, Any]]:
    rows = db.execute(select(m.ImagingStudy).where(m.ImagingStudy.patient_id == patient_id)
                      .order_by(m.ImagingStudy.id)).scalars().all()
    audit(db, user, *[user.audit("list", "imaging_studies", s.id, s.patient_id) for s in rows])
    items = [StudyRead.model_validate(s).model_dump(mode="json") for s in rows]
    db.commit()
    return items


@router.get("/imaging/studies/{study_id}/doppler", summary="Colour-flow pixels and vessel cross-sections")
def doppler(request: Request, study_id: int, db: SessionDep, user: Reader, frame: int = 0) -> dict[str, Any]:
    study = _study(db, study_id)
    try:
        result = svc.doppler(study, _root(request), frame)
    except svc.StudyError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("read", "imaging_studies", study.id, study.patient_id, {"doppler": frame}))
    db.commit()
    return result.model_dump(mode="json")  # type: ignore[no-any-return]


@router.get("/imaging/studies/{study_id}/overlay.png", summary="What the Doppler analysis found, drawn on the image",
            responses={200: {"content": {"image/png": {}}}})
def overlay(request: Request, study_id: int, db: SessionDep, user: Reader, frame: int = 0) -> Response:
    study = _study(db, study_id)
    try:
        png = svc.overlay_png(study, _root(request), frame)
    except svc.StudyError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("read", "imaging_studies", study.id, study.patient_id, {"overlay": frame}))
    db.commit()
    return Response(png, media_type="image/png")


class MeasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["distance", "area", "thickness"]
    points: list[tuple[float, float]] = Field(
        min_length=2, max_length=1000,
        description="(x, y) pixels: 2 points for a distance, a closed trace for an area, and for thickness the scan "
        "line from the skin surface downwards",
    )
    boundaries: dict[Literal["skin", "dermis_bottom", "fascia"], float] | None = Field(
        default=None, description="thickness: clinician-set boundary positions along the line (pixels)"
    )
    frame: int = Field(default=0, ge=0)
    code: str | None = Field(default=None, description="observation code; default by kind")
    visit_id: int | None = None


@router.post("/imaging/studies/{study_id}/measurements", status_code=201,
             summary="A calibrated distance (mm) or traced area (mm²), stored as an observation")
def measure(request: Request, study_id: int, body: MeasureRequest, db: SessionDep, user: Writer) -> dict[str, Any]:
    from regenguide.imaging.dicom_io import CalibrationMissing, frame_rgb
    from regenguide.imaging.measure import ScanLine, area_observation, distance_observation, measure_thickness

    study = _study(db, study_id)
    try:
        loaded = svc.load(study, _root(request))
    except svc.StudyError as exc:
        raise _problem(exc) from None
    metadata = loaded.metadata
    if body.kind != "thickness" and body.boundaries:
        raise ProblemError(422, "Invalid request", "boundaries: only for a thickness measurement", type_="validation")
    try:
        if body.kind == "distance":
            if len(body.points) != 2:
                raise ProblemError(422, "Invalid request", "points: a distance needs exactly 2 points",
                                   type_="validation")
            observations = [distance_observation(body.points[0], body.points[1], metadata.calibration)]
        elif body.kind == "area":
            observations = [area_observation(body.points, metadata.calibration)]
        else:
            if len(body.points) != 2:
                raise ProblemError(422, "Invalid request", "points: a scan line needs exactly 2 points",
                                   type_="validation")
            line = ScanLine(start=body.points[0], end=body.points[1])
            measured = measure_thickness(frame_rgb(loaded.dataset, body.frame), line, metadata.calibration,
                                         overrides={str(k): v for k, v in (body.boundaries or {}).items()})
            observations = measured.observations
    except CalibrationMissing as exc:
        raise ProblemError(422, "Invalid request", f"study {study_id} has no calibration: {exc}",
                           type_="calibration-missing") from None
    except ValueError as exc:
        raise ProblemError(422, "Invalid request", f"points: {exc}", type_="validation") from None
    single_code = body.code if len(observations) == 1 else None
    rows = [
        m.Observation(patient_id=study.patient_id, visit_id=body.visit_id, procedure_id=study.procedure_id,
                      imaging_study_id=study.id, code=(single_code or obs.code)[:64],
                      value=obs.value, unit=obs.unit, observed_at=study.acquired_at or datetime.now(UTC),
                      recorded_by=user.id)
        for obs in observations
    ]
    db.add_all(rows)
    db.flush()
    audit(db, user, *[user.audit("create", "observations", r.id, study.patient_id, body.model_dump()) for r in rows])
    db.commit()
    return {"observations": [{"observation_id": r.id, "code": r.code, "value": r.value, "unit": r.unit}
                             for r in rows]}


class MapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: str = Field(min_length=1)
    side: Side | None = None
    frame: int = Field(default=0, ge=0)
    kind: Literal["artery", "vein", "unknown"] = "artery"


@router.post("/imaging/studies/{study_id}/vascular-map", status_code=201,
             summary="Map the vessels of a region from a calibrated Doppler frame (used by the plan check)")
def vascular_map(request: Request, study_id: int, body: MapRequest, db: SessionDep, user: Writer) -> dict[str, Any]:
    study = _study(db, study_id)
    try:
        record = svc.map_vessels(db, study, _root(request), region=body.region,
                                 side=body.side.value if body.side else None, frame=body.frame, kind=body.kind,
                                 user_id=user.id)
    except svc.StudyError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("create", "vascular_maps", record.id, study.patient_id, body.model_dump()))
    db.commit()
    return {"id": record.id, "region": record.region, "side": record.side, "vessels": record.vessel_count,
            "map": record.data}


@router.get("/patients/{patient_id}/vascular-maps", summary="The latest vascular map of each region")
def maps(patient_id: int, db: SessionDep, user: Reader) -> list[dict[str, Any]]:
    found = svc.maps_for(db, patient_id)
    audit(db, user, user.audit("read", "vascular_maps", None, patient_id, {"maps": len(found)}))
    db.commit()
    return [vmap.model_dump(mode="json") for vmap in found]
