"""Patient-reported questionnaires: a single-use link (no login) to answer one FHIR Questionnaire,
stored as a QuestionnaireResponse, with its score recorded as an observation."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CursorResult, update

from regenguide.api.deps import Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.outcomes.questionnaire import (
    QuestionnaireError,
    build_response,
    example_questionnaire,
    load_questionnaire,
    score_response,
)
from regenguide.security import Permission as P
from regenguide.store import models as m
from regenguide.store.audit import AuditRecord, append

router = APIRouter(tags=["questionnaires"])
Clinical = Annotated[Principal, Depends(require(P.clinical_write))]


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: int
    visit_id: int | None = None
    questionnaire: dict[str, Any] | None = Field(
        default=None, description="a FHIR R4 Questionnaire; the bundled example when absent"
    )
    expires_in_days: int = Field(default=14, ge=1, le=90)


class Answers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: dict[str, Any] = Field(description="linkId → answer (code or display for choices; a list to repeat)")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@router.post("/questionnaire-links", status_code=201, summary="Create a single-use questionnaire link")
def create_link(body: LinkCreate, db: SessionDep, user: Clinical) -> dict[str, Any]:
    if db.get(m.Patient, body.patient_id) is None:
        raise ProblemError(422, "Invalid request", f"patient_id: no patient with id {body.patient_id}",
                           type_="validation")
    if body.visit_id is not None:
        visit = db.get(m.FollowupVisit, body.visit_id)
        if visit is None or visit.patient_id != body.patient_id:
            message = f"no follow-up visit {body.visit_id} for patient {body.patient_id}"
            raise ProblemError(422, "Invalid request", f"visit_id: {message}", type_="validation",
                               errors=[{"field": "visit_id", "message": message}])
    try:
        questionnaire = load_questionnaire(body.questionnaire) if body.questionnaire else example_questionnaire()
    except (QuestionnaireError, ValueError) as exc:
        raise ProblemError(422, "Invalid request", f"questionnaire: {exc}", type_="validation") from None
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days)
    link = m.QuestionnaireLink(token_hash=_hash(token), patient_id=body.patient_id, visit_id=body.visit_id,
                               questionnaire=questionnaire.model_dump(mode="json", exclude_none=True),
                               expires_at=expires, created_by=user.id)
    db.add(link)
    db.flush()
    audit(db, user, user.audit("create", "questionnaire_links", link.id, body.patient_id,
                               {"questionnaire": questionnaire.url or questionnaire.title}))
    db.commit()
    # The token is shown once; only its hash is stored.
    return {"id": link.id, "token": token, "url": f"/api/v1/public/questionnaires/{token}",
            "expires_at": expires.isoformat()}


def _open_link(db: Any, token: str) -> m.QuestionnaireLink:
    from sqlalchemy import select

    link = db.execute(select(m.QuestionnaireLink).where(m.QuestionnaireLink.token_hash == _hash(token))
                      ).scalar_one_or_none()
    if link is None:
        raise ProblemError(404, "Not found", "this questionnaire link does not exist", type_="not-found")
    if link.used_at is not None:
        raise ProblemError(410, "Gone", "this questionnaire link was already used", type_="link-used")
    expires = link.expires_at if link.expires_at.tzinfo else link.expires_at.replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        raise ProblemError(410, "Gone", "this questionnaire link has expired", type_="link-expired")
    return link


@router.get("/public/questionnaires/{token}", summary="The questionnaire behind a link (no login)")
def get_questionnaire(token: str, db: SessionDep) -> dict[str, Any]:
    link = _open_link(db, token)
    return dict(link.questionnaire)


@router.post("/public/questionnaires/{token}", status_code=201, summary="Answer the questionnaire (once)")
def answer(token: str, body: Answers, db: SessionDep) -> dict[str, Any]:
    link = _open_link(db, token)
    now = datetime.now(UTC)
    try:
        response = build_response(link.questionnaire, body.answers, subject=f"Patient/{link.patient_id}",
                                  authored=now)
    except QuestionnaireError as exc:
        raise ProblemError(422, "Invalid request", str(exc), type_="validation") from None
    stored = response.model_dump(mode="json", exclude_none=True)
    # Claim the link atomically: of two concurrent submissions only one updates the still-unused row.
    claimed: CursorResult[Any] = db.execute(  # type: ignore[assignment]
        update(m.QuestionnaireLink)
        .where(m.QuestionnaireLink.id == link.id, m.QuestionnaireLink.used_at.is_(None))
        .values(used_at=now, response=stored)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.rollback()
        raise ProblemError(410, "Gone", "this questionnaire link was already used", type_="link-used")
    score = score_response(link.questionnaire, response)
    code = str(link.questionnaire.get("name") or link.questionnaire.get("id") or "questionnaire")[:64]
    if score is not None and score.total is not None:
        db.add(m.Observation(patient_id=link.patient_id, visit_id=link.visit_id, code=code, value=score.total,
                             unit="{score}", observed_at=now))
    append(db, AuditRecord(username="patient-link", action="create", resource="questionnaire_responses",
                           resource_id=link.id, patient_id=link.patient_id, payload=stored))
    db.commit()
    return {"status": "received", "score": None if score is None else score.model_dump(mode="json")}
