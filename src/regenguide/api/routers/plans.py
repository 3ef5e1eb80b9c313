"""Treatment plans: the stateless plan check, stored plans with their latest check, and signing with
reasoned overrides of critical findings."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from regenguide.api.crud import etag, parse_if_match
from regenguide.api.deps import CurrentUser, Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.cds.engine import Override
from regenguide.domain.plan import PlanDocument
from regenguide.security import Permission as P
from regenguide.services import plans as svc
from regenguide.store import models as m

router = APIRouter(tags=["plans"])


class PlanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: int
    document: PlanDocument
    planned_on: date | None = None
    assessment_id: int | None = None


class PlanRevise(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document: PlanDocument


class SignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: list[Override] = Field(default_factory=list)


class PlanRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    patient_id: int
    assessment_id: int | None
    modality: str
    indication: str
    jurisdiction: str
    guidance_imaging: str
    doppler: bool
    status: str
    planned_on: date | None
    document: dict[str, Any]
    latest_check: dict[str, Any] | None
    signed_by: int | None
    signed_at: datetime | None
    version: int


def _problem(exc: svc.PlanError) -> ProblemError:
    title = {404: "Not found", 409: "Conflict", 422: "Invalid request"}.get(exc.status, "Error")
    return ProblemError(exc.status, title, str(exc), type_=exc.code, **exc.extra)  # type: ignore[arg-type]


def _load(db: Any, plan_id: int) -> m.TreatmentPlan:
    plan = db.get(m.TreatmentPlan, plan_id)
    if plan is None:
        raise ProblemError(404, "Not found", f"plan {plan_id} does not exist", type_="not-found")
    return plan


Writer = Annotated[Principal, Depends(require(P.plan_write))]
Reader = Annotated[Principal, Depends(require(P.patient_read))]
Signer = Annotated[Principal, Depends(require(P.plan_sign))]


@router.post("/plans/check", summary="Check a plan document (stateless): findings, regulatory class, signable")
def check_document(plan: Annotated[PlanDocument, Body()], user: CurrentUser) -> dict[str, Any]:
    return svc.check(plan).to_json_dict()


@router.post("/plans", status_code=201, response_model=PlanRead, summary="Store a draft plan with its check")
def create_plan(body: PlanCreate, db: SessionDep, user: Writer, response: Response) -> Any:
    try:
        plan = svc.create(db, body.patient_id, body.document, user_id=user.id, planned_on=body.planned_on,
                          assessment_id=body.assessment_id)
    except svc.PlanError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("create", "plans", plan.id, plan.patient_id, body.model_dump(mode="json")))
    out = PlanRead.model_validate(plan)
    db.commit()
    response.headers["ETag"] = etag(plan.version)
    response.headers["Location"] = f"/api/v1/plans/{plan.id}"
    return out


@router.get("/plans/{plan_id}", response_model=PlanRead)
def read_plan(plan_id: int, db: SessionDep, user: Reader, response: Response) -> Any:
    plan = _load(db, plan_id)
    audit(db, user, user.audit("read", "plans", plan.id, plan.patient_id))
    out = PlanRead.model_validate(plan)
    db.commit()
    response.headers["ETag"] = etag(plan.version)
    return out


@router.get("/plans", summary="List plans (filters: patient_id, status, modality)")
def list_plans(
    db: SessionDep, user: Reader, patient_id: int | None = None, status: str | None = None,
    modality: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    stmt = select(m.TreatmentPlan)
    for column, value in ((m.TreatmentPlan.patient_id, patient_id), (m.TreatmentPlan.status, status),
                          (m.TreatmentPlan.modality, modality)):
        if value is not None:
            stmt = stmt.where(column == value)
    total = db.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = db.execute(stmt.order_by(m.TreatmentPlan.id).limit(limit).offset(offset)).scalars().all()
    audit(db, user, *[user.audit("list", "plans", p.id, p.patient_id) for p in rows])
    items = [PlanRead.model_validate(p).model_dump(mode="json") for p in rows]
    db.commit()
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def _guard(plan: m.TreatmentPlan, if_match: str | None) -> None:
    expected = parse_if_match(if_match)
    if plan.version != expected:
        raise ProblemError(412, "Precondition failed",
                           f"plan {plan.id} is at version {plan.version}, not {expected}: reload it",
                           type_="stale-version", current_version=plan.version)


@router.put("/plans/{plan_id}", response_model=PlanRead, summary="Revise a draft plan (If-Match required)")
def revise_plan(
    plan_id: int, body: PlanRevise, db: SessionDep, user: Writer, response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> Any:
    plan = _load(db, plan_id)
    _guard(plan, if_match)
    try:
        svc.revise(db, plan, body.document)
    except svc.PlanError as exc:
        raise _problem(exc) from None
    audit(db, user, user.audit("update", "plans", plan.id, plan.patient_id, body.model_dump(mode="json")))
    out = PlanRead.model_validate(plan)
    db.commit()
    response.headers["ETag"] = etag(plan.version)
    return out


@router.post("/plans/{plan_id}/check", summary="Re-check a stored plan against the current record")
def recheck_plan(plan_id: int, db: SessionDep, user: Reader) -> dict[str, Any]:
    plan = _load(db, plan_id)
    result = svc.recheck(db, plan)
    audit(db, user, user.audit("read", "plans", plan.id, plan.patient_id, {"check": True}))
    db.commit()
    return result.to_json_dict()


@router.post("/plans/{plan_id}/sign", response_model=PlanRead,
             summary="Sign a draft; critical findings must be overridden with a reason")
def sign_plan(
    plan_id: int, body: SignRequest, db: SessionDep, user: Signer, response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> Any:
    plan = _load(db, plan_id)
    _guard(plan, if_match)
    try:
        result = svc.sign(db, plan, body.overrides, user_id=user.id)
    except svc.PlanError as exc:
        raise _problem(exc) from None
    records = [user.audit("sign", "plans", plan.id, plan.patient_id, result.to_json_dict())]
    records += [user.audit("override", "plans", plan.id, plan.patient_id, o.model_dump()) for o in result.overrides]
    audit(db, user, *records)
    out = PlanRead.model_validate(plan)
    db.commit()
    response.headers["ETag"] = etag(plan.version)
    return out


def _consent_document(db: Any, plan: m.TreatmentPlan) -> Any:
    from regenguide.cds.consent import render_consent

    patient = db.get(m.Patient, plan.patient_id)
    site = db.get(m.Site, patient.site_id) if patient else None
    doc = PlanDocument.model_validate(plan.document)
    name = f"{patient.given_name} {patient.family_name}" if patient else None
    return render_consent(doc, patient_name=name, clinic=site.name if site else None)


@router.get("/plans/{plan_id}/consent-document", summary="The informed-consent document of a plan (HTML, PDF, JSON)",
            responses={200: {"content": {"text/html": {}, "application/pdf": {}, "application/json": {}}}})
def consent_document(plan_id: int, db: SessionDep, user: Reader,
                     format: Literal["html", "pdf", "json"] = "html") -> Response:  # noqa: A002
    from regenguide.cds.consent import to_pdf

    plan = _load(db, plan_id)
    doc = _consent_document(db, plan)
    audit(db, user, user.audit("read", "consent_documents", plan.id, plan.patient_id, {"digest": doc.text_digest}))
    db.commit()
    headers = {"X-Document-Digest": doc.text_digest, "X-Document-Version": doc.version}
    if format == "pdf":
        return Response(to_pdf(doc), media_type="application/pdf", headers=headers)
    if format == "json":
        return Response(doc.model_dump_json(exclude={"html"}), media_type="application/json", headers=headers)
    return Response(doc.html, media_type="text/html", headers=headers)


class ConsentSign(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Literal["accepted", "declined"]
    signer_name: str = Field(min_length=1, max_length=200)
    signer_role: Literal["patient", "guardian"] = "patient"
    research_use: bool = False
    document_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="X-Document-Digest of the document shown")


@router.post("/plans/{plan_id}/consent", status_code=201,
             summary="Record the patient's decision on exactly the consent document they were shown")
def record_consent(plan_id: int, body: ConsentSign, db: SessionDep,
                   user: Annotated[Principal, Depends(require(P.consent_write))]) -> dict[str, Any]:
    from datetime import UTC
    from datetime import datetime as dt

    plan = _load(db, plan_id)
    doc = _consent_document(db, plan)
    if doc.text_digest != body.document_digest:
        raise ProblemError(409, "Conflict", "the consent document changed since it was shown (plan or knowledge base "
                           "updated): show the current document and sign again", type_="consent-document-changed",
                           current_digest=doc.text_digest)
    row = m.Consent(patient_id=plan.patient_id, plan_id=plan.id, version=doc.version[:40], text=doc.text,
                    text_digest=doc.text_digest, decision=body.decision, signer_name=body.signer_name,
                    signer_role=body.signer_role, signed_at=dt.now(UTC), research_use=body.research_use,
                    recorded_by=user.id)
    db.add(row)
    patient = db.get(m.Patient, plan.patient_id)
    if patient is not None and body.decision == "accepted" and body.research_use:
        patient.research_consent = True
    db.flush()
    audit(db, user, user.audit("create", "consents", row.id, plan.patient_id, body.model_dump()))
    db.commit()
    return {"id": row.id, "decision": row.decision, "version": row.version, "text_digest": row.text_digest,
            "investigational": doc.investigational}
