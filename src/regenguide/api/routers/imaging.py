"""Ultrasound studies: upload (identity checked against the patient), Doppler analysis with an overlay,
calibrated measurements stored as observations, and per-region vascular maps for the plan check."""

from __future__ import annotations

import tempfile
from datetime import datetime
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
    extra = dict(exc.extra)
    if exc.field is not None:
        message = str(exc).removeprefix(f"{exc.field}: ")
        extra.setdefault("errors", [{"field": exc.field, "message": message, "type": exc.code}])
    return ProblemError(exc.status, title, str(exc), type_=exc.code, **extra)


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
    # The stored image file is deleted again when the row is not committed.
    with tempfile.TemporaryDirectory() as tmp, svc.new_files_removed_on_failure() as written:
        path = Path(tmp) / (Path(file.filename or "upload.dcm").name or "upload.dcm")
        path.write_bytes(await file.read())
        try:
            study = svc.import_study(db, path, patient_id, image_root=_root(request), procedure_id=procedure_id,
                                     visit_id=visit_id, region=region, written=written)
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

    kind: Literal["distance", "area", "thickness", "volume"]
    points: list[tuple[float, float]] | None = Field(
        default=None, max_length=1000,
        description="(x, y) pixels: 2 points for a distance, a closed trace (3 or more) for an area, and for "
        "thickness the scan line from the skin surface downwards (2 points)",
    )
    boundaries: dict[Literal["skin", "dermis_bottom", "fascia"], float] | None = Field(
        default=None, description="thickness: clinician-set boundary positions along the line (pixels)"
    )
    slices: list[list[tuple[float, float]]] | None = Field(
        default=None, max_length=200,
        description="volume: the deposit's outline traced (pixels) on each of parallel slices of this calibration",
    )
    spacing_mm: float | None = Field(default=None, gt=0, le=100, description="volume: distance between slices")
    frame: int = Field(default=0, ge=0)
    code: str | None = Field(default=None, max_length=64, description="observation code; default by kind")
    visit_id: int | None = None


@router.post("/imaging/studies/{study_id}/measurements", status_code=201,
             summary="A calibrated distance (mm), traced area (mm²), layer thickness (mm) or deposit volume (mL), "
             "stored as observations")
def measure(request: Request, study_id: int, body: MeasureRequest, db: SessionDep, user: Writer) -> dict[str, Any]:
    study = _study(db, study_id)
    try:
        rows = svc.measure(
            db, study, _root(request), kind=body.kind, points=body.points,
            boundaries={str(k): v for k, v in body.boundaries.items()} if body.boundaries else None,
            slices=body.slices, spacing_mm=body.spacing_mm, frame=body.frame, code=body.code,
            visit_id=body.visit_id, user_id=user.id,
        )
    except svc.StudyError as exc:
        raise _problem(exc) from None
    audit(db, user, *[user.audit("create", "observations", r.id, study.patient_id, body.model_dump()) for r in rows])
    db.commit()
    return {"observations": [{"observation_id": r.id, "code": r.code, "value": r.value, "unit": r.unit,
                              "method": r.method, "edited": r.edited} for r in rows]}


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
