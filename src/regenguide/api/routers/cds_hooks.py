"""CDS Hooks 2.0 service: discovery, `order-sign` (the plan check on draft orders), `patient-view`
(overdue follow-ups, open adverse events, unsigned plans) and feedback.

Mounted at the root (`/cds-services`), as EHRs expect. Calls need the same bearer token as the API
(an EHR integration registers a service user for it)."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from pydantic_core import to_json
from sqlalchemy import func, select

from regenguide.api.deps import (
    CurrentUser,
    Principal,
    ReadSessionDep,
    SessionDep,
    audit,
    oauth2_scheme,
    principal_of,
    read_session,
)
from regenguide.api.problems import ProblemError
from regenguide.cds.hooks import (
    Card,
    CardSource,
    CdsRequest,
    CdsResponse,
    DraftOrderError,
    Feedback,
    Link,
    grouped_card_data,
    orders_to_plan,
    validate_draft_orders,
)
from regenguide.security import Permission
from regenguide.services import plans as plan_service
from regenguide.store import models as m

router = APIRouter(prefix="/cds-services", tags=["cds-hooks"])

PLAN_CHECK = "regenguide-plan-check"
PATIENT_SUMMARY = "regenguide-patient-summary"
SERVICES = [
    {
        "hook": "order-sign",
        "id": PLAN_CHECK,
        "title": "RegenGuide injection plan check",
        "description": "Checks regenerative-medicine injection orders against vascular danger zones, planes, tools, "
        "volumes, contraindications, consent and the jurisdiction's regulatory class; every card cites its source.",
        "prefetch": {"patient": "Patient/{{context.patientId}}"},
        "usageRequirements": "Orders are FHIR R4 ServiceRequests coded as documented in docs/cds-hooks.md.",
    },
    {
        "hook": "patient-view",
        "id": PATIENT_SUMMARY,
        "title": "RegenGuide follow-up and safety summary",
        "description": "Overdue follow-up visits, open adverse events and unsigned treatment plans of the patient.",
        "prefetch": {"patient": "Patient/{{context.patientId}}"},
    },
]


@router.get("", summary="CDS Hooks discovery")
def discovery() -> dict[str, Any]:
    return {"services": SERVICES}


def _patient_id(context: dict[str, Any]) -> int | None:
    raw = str(context.get("patientId", "")).removeprefix("Patient/")
    return int(raw) if raw.isdigit() else None


@router.post(f"/{PLAN_CHECK}", response_model=CdsResponse, response_model_exclude_none=True,
             summary="order-sign: check draft injection orders")
async def plan_check(
    request: CdsRequest, http: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Response:
    """Three steps on worker threads: (1) the user and the stored patient's context, read on one read
    snapshot that ends before the check; (2) the check. Both are mostly CPU-bound Python: under the GIL,
    running them on many threads at once only adds contention and makes the slowest calls slower, so each
    worker process runs at most `app.state.check_limiter` of them at a time, first come first served. (3) The
    audit entry of the read, group-committed with the other reads' entries (so not limited: waiting callers
    share one commit) before the response is sent. Nothing holds a write lock while it computes. The response
    is serialised once, from plain data."""
    limiter = http.app.state.check_limiter
    user, known = await anyio.to_thread.run_sync(_reader, http, token, request, limiter=limiter)
    draft = request.context["draftOrders"]
    response, orders = await anyio.to_thread.run_sync(_check, draft, known, limiter=limiter)
    if known is not None:
        record = user.audit("read", "cds_order_sign", request.hookInstance, known.patient_id, {"orders": orders})
        await anyio.to_thread.run_sync(http.app.state.audit_commit.append, [record])
    return Response(response, media_type="application/json")


def _reader(
    http: Request, token: str | None, request: CdsRequest
) -> tuple[Principal, plan_service.PatientContext | None]:
    """The caller (authenticated before anything else is looked at), and the context of the stored patient
    named by context.patientId (which needs the permission to read patients' clinical data), on one read
    snapshot."""
    with closing(read_session(http)) as db:
        user = principal_of(http, token, db)
        if request.hook != "order-sign":
            raise ProblemError(400, "Bad request", f"service {PLAN_CHECK} answers the order-sign hook, "
                               f"not {request.hook}", type_="wrong-hook")
        if not isinstance(request.context.get("draftOrders"), dict):
            raise ProblemError(400, "Bad request", "context.draftOrders: a FHIR Bundle is required",
                               type_="validation")
        pid = _patient_id(request.context)
        if pid is None:
            return user, None
        _require_patient_read(user)
        return user, plan_service.patient_context(db, pid)


def _check(draft: dict[str, Any], known: plan_service.PatientContext | None) -> tuple[bytes, int]:
    """The draft orders as a plan, checked in the patient's context; the response (JSON of a `CdsResponse`,
    serialised from plain data: see `grouped_card_data`) and the number of orders."""
    try:
        orders = validate_draft_orders(draft)
        plan = orders_to_plan(orders)
    except DraftOrderError as exc:
        raise ProblemError(400, "Bad request", str(exc), type_="draft-orders") from None
    if plan is None:
        return to_json({"cards": [], "systemActions": []}), 0
    result = plan_service.check_in_context(plan, known)
    cards = grouped_card_data(result.findings, [o.resource for o in orders])
    return to_json({"cards": cards, "systemActions": []}), len(orders)


def _require_patient_read(user: Principal) -> None:
    if not user.can(Permission.patient_read):
        raise ProblemError(403, "Forbidden", f"role {user.role!r} lacks permission {Permission.patient_read.value}: "
                           "context.patientId names a stored patient", type_="forbidden")


@router.post(f"/{PATIENT_SUMMARY}", response_model=CdsResponse, response_model_exclude_none=True,
             summary="patient-view: overdue follow-ups, open adverse events, unsigned plans")
def patient_summary(request: CdsRequest, db: ReadSessionDep, user: CurrentUser) -> CdsResponse:
    _require_patient_read(user)
    pid = _patient_id(request.context)
    if pid is None or db.get(m.Patient, pid) is None:
        raise ProblemError(412, "Precondition failed", "context.patientId does not name a RegenGuide patient",
                           type_="unknown-patient")
    today = datetime.now(UTC).date()
    overdue = db.execute(
        select(m.FollowupVisit).where(m.FollowupVisit.patient_id == pid, m.FollowupVisit.status == "scheduled",
                                      m.FollowupVisit.window_end < today).order_by(m.FollowupVisit.due_on)
    ).scalars().all()
    open_aes = db.execute(
        select(m.AdverseEvent).where(m.AdverseEvent.patient_id == pid, m.AdverseEvent.resolved_on.is_(None),
                                     m.AdverseEvent.outcome.in_(("not_recovered", "recovering", "unknown")))
    ).scalars().all()
    drafts = db.execute(
        select(func.count()).select_from(m.TreatmentPlan)
        .where(m.TreatmentPlan.patient_id == pid, m.TreatmentPlan.status == "draft")
    ).scalar_one()
    audit(db, user, user.audit("read", "cds_patient_view", request.hookInstance, pid))
    source = CardSource(label="RegenGuide registry", url=None)
    link = [Link(label="Open in RegenGuide", url=f"/#/patients/{pid}", type="absolute")]
    cards: list[Card] = []
    serious = [a for a in open_aes if a.serious]
    if open_aes:
        names = ", ".join(sorted({a.event_type.replace("_", " ") for a in open_aes}))
        cards.append(Card(
            summary=f"{len(open_aes)} open adverse event(s){' — SERIOUS' if serious else ''}: {names}"[:139],
            indicator="critical" if serious else "warning", source=source, links=link,
            detail="\n".join(
                f"- {a.event_type} (grade {a.severity}, onset {a.onset_on}, {a.outcome})" for a in open_aes
            ),
        ))
    if overdue:
        cards.append(Card(
            summary=f"{len(overdue)} follow-up visit(s) overdue, oldest due {overdue[0].due_on}"[:139],
            indicator="warning", source=source, links=link,
            detail="\n".join(f"- {v.label}: due {v.due_on}, window closed {v.window_end}" for v in overdue),
        ))
    if drafts:
        cards.append(Card(summary=f"{drafts} treatment plan(s) not yet signed", indicator="info", source=source,
                          links=link))
    return CdsResponse(cards=cards)


@router.post("/{service_id}/feedback", status_code=200, summary="Card feedback: accepted or overridden")
def feedback(service_id: str, body: Feedback, db: SessionDep, user: CurrentUser) -> dict[str, int]:
    if service_id not in (PLAN_CHECK, PATIENT_SUMMARY):
        raise ProblemError(404, "Not found", f"no CDS service {service_id!r}", type_="not-found")
    for item in body.feedback:
        try:
            at = datetime.fromisoformat(item.outcomeTimestamp.replace("Z", "+00:00"))
        except ValueError:
            raise ProblemError(422, "Invalid request", "feedback.outcomeTimestamp: not an ISO 8601 instant",
                               type_="validation") from None
        if item.outcome == "overridden" and not item.overrideReason:
            raise ProblemError(422, "Invalid request", "feedback.overrideReason: required when overridden",
                               type_="validation")
        db.add(m.CdsFeedback(service_id=service_id, card_uuid=item.card[:64], outcome=item.outcome,
                             override_reason=item.overrideReason, outcome_at=at))
    audit(db, user, user.audit("create", "cds_feedback", service_id, None, body.model_dump()))
    db.commit()
    return {"stored": len(body.feedback)}
