"""The pathway's plain resources, served by the generic CRUD factory."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from regenguide.api import schemas as s
from regenguide.api.crud import Resource, build_routers
from regenguide.api.deps import Principal
from regenguide.security import Permission as P
from regenguide.store import models as m


def _consent_before(db: Session, principal: Principal, obj: m.Consent, body: BaseModel) -> None:
    obj.text_digest = hashlib.sha256(obj.text.encode("utf-8")).hexdigest()
    obj.recorded_by = principal.id
    patient = db.get(m.Patient, obj.patient_id)
    if patient is not None and obj.decision == "accepted" and obj.research_use:
        patient.research_consent = True
    if patient is not None and obj.decision == "withdrawn":
        # Withdrawal of consent also withdraws research use of the patient's data.
        patient.research_consent = False


def _ae_write(db: Session, principal: Principal, obj: m.AdverseEvent, body: BaseModel) -> None:
    obj.serious = bool(obj.seriousness) or obj.severity >= 4
    if obj.serious:
        patient = db.get(m.Patient, obj.patient_id)
        if patient is not None:
            patient.serious_event_flag = True


def _performed(injection: s.InjectionIn) -> m.PerformedInjection:
    return m.PerformedInjection(**injection.model_dump())


def _number_injections(db: Session, principal: Principal, obj: m.Procedure, body: BaseModel) -> None:
    for seq, inj in enumerate(obj.injections, start=1):
        inj.seq = seq


def _visit_write(db: Session, principal: Principal, obj: m.FollowupVisit, body: BaseModel) -> None:
    if not (obj.window_start <= obj.due_on <= obj.window_end):
        from regenguide.api.problems import ProblemError

        raise ProblemError(422, "Invalid request", "window_start <= due_on <= window_end must hold", type_="validation")
    if (obj.status == "completed") != (obj.completed_on is not None):
        from regenguide.api.problems import ProblemError

        raise ProblemError(
            422,
            "Invalid request",
            "completed_on: required exactly when status is 'completed'",
            type_="validation",
            errors=[{"field": "completed_on", "message": "required exactly when status is completed"}],
        )


RESOURCES: list[Resource] = [
    Resource(
        name="sites", model=m.Site, create=s.SiteCreate, read=s.SiteRead, update=s.SiteUpdate,
        read_permission=P.site_admin, write_permission=P.site_admin, filters=("jurisdiction",),
    ),
    Resource(
        name="patients", model=m.Patient, create=s.PatientCreate, read=s.PatientRead, update=s.PatientUpdate,
        read_permission=P.patient_read, write_permission=P.patient_write,
        filters=("site_id", "mrn", "family_name", "sex", "serious_event_flag"),
        research_visible=True, research_read=s.PatientResearchRead,
    ),
    Resource(
        name="assessments", model=m.Assessment, create=s.AssessmentCreate, read=s.AssessmentRead,
        update=s.AssessmentUpdate, read_permission=P.patient_read, write_permission=P.clinical_write,
        filters=("patient_id", "indication"), research_visible=True,
    ),
    Resource(
        name="consents", model=m.Consent, create=s.ConsentCreate, read=s.ConsentRead, update=None,
        read_permission=P.patient_read, write_permission=P.consent_write,
        filters=("patient_id", "plan_id", "decision"), before_create=_consent_before,
    ),
    Resource(
        name="procedures", model=m.Procedure, create=s.ProcedureCreate, read=s.ProcedureRead,
        update=s.ProcedureUpdate, read_permission=P.patient_read, write_permission=P.clinical_write,
        filters=("patient_id", "plan_id", "modality", "guidance_imaging"), research_visible=True,
        children={"injections": _performed}, before_create=_number_injections,
    ),
    Resource(
        name="visits", model=m.FollowupVisit, create=s.VisitCreate, read=s.VisitRead, update=s.VisitUpdate,
        read_permission=P.patient_read, write_permission=P.clinical_write,
        filters=("patient_id", "procedure_id", "status", "label"), research_visible=True, after_write=_visit_write,
    ),
    Resource(
        name="observations", model=m.Observation, create=s.ObservationCreate, read=s.ObservationRead,
        update=s.ObservationUpdate, read_permission=P.patient_read, write_permission=P.clinical_write,
        filters=("patient_id", "code", "visit_id", "procedure_id"), research_visible=True,
    ),
    Resource(
        name="adverse-events", model=m.AdverseEvent, create=s.AdverseEventCreate, read=s.AdverseEventRead,
        update=s.AdverseEventUpdate, read_permission=P.patient_read, write_permission=P.clinical_write,
        filters=("patient_id", "procedure_id", "event_type", "serious", "severity"), research_visible=True,
        before_create=_ae_write, after_write=_ae_write,
    ),
]

routers: list[Any] = build_routers(RESOURCES)
