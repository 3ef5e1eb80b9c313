"""Registry analytics, complete-cohort reports, follow-up scheduling and the weekly work list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import select

from regenguide.api.deps import Principal, SessionDep, audit, require
from regenguide.api.problems import ProblemError
from regenguide.security import Permission as P
from regenguide.services import analytics, reports
from regenguide.store import models as m

router = APIRouter(tags=["analytics"])
Research = Annotated[Principal, Depends(require(P.research_read))]
Clinical = Annotated[Principal, Depends(require(P.patient_read))]
ClinicalWrite = Annotated[Principal, Depends(require(P.clinical_write))]


def _engine(db: Any) -> Any:
    # The request's own connection: on SQLite its transaction already holds the database.
    return db.connection()


def _log(db: Any, user: Principal, what: str, params: dict[str, Any]) -> None:
    audit(db, user, user.audit("read", f"analytics_{what}", None, None, params))
    db.commit()


@router.get("/analytics/complications", summary="Complication rates with Wilson intervals (denominator: procedures)")
def complications(
    db: SessionDep, user: Research,
    grouping: analytics.Grouping = "modality", modality: str | None = None, site_id: int | None = None,
) -> dict[str, Any]:
    result = analytics.complication_rates(_engine(db), grouping, where=analytics.scope(modality, site_id))
    _log(db, user, "complications", {"grouping": grouping, "modality": modality, "site_id": site_id})
    return result


@router.get("/analytics/complications.png", summary="Plot of complication rates with their intervals",
            responses={200: {"content": {"image/png": {}}}})
def complications_png(
    db: SessionDep, user: Research, grouping: analytics.Grouping = "modality", modality: str | None = None,
) -> Response:
    rows = analytics.complication_rates(_engine(db), grouping, where=analytics.scope(modality))["rows"]
    if not rows:
        raise ProblemError(404, "Not found", "no procedures in scope", type_="empty-cohort")
    return Response(reports.complication_plot(rows, f"Complications by {grouping}"), media_type="image/png")


@router.get("/analytics/guided-vs-landmark", summary="Image-guided vs landmark: RR, Mantel–Haenszel RR, adjusted OR")
def guided_vs_landmark(db: SessionDep, user: Research, modality: str | None = None,
                       site_id: int | None = None) -> dict[str, Any]:
    result = analytics.guided_vs_landmark(_engine(db), where=analytics.scope(modality, site_id))
    _log(db, user, "guided_vs_landmark", {"modality": modality, "site_id": site_id})
    return result


@router.get("/analytics/retention", summary="Graft volume retention by processing method")
def retention(db: SessionDep, user: Research, modality: str | None = None, site_id: int | None = None,
              code: str = "graft_retention") -> dict[str, Any]:
    result = analytics.retention_by_processing(_engine(db), code, where=analytics.scope(modality, site_id))
    _log(db, user, "retention", {"modality": modality, "code": code})
    return result


@router.get("/analytics/durability", summary="Time to retreatment: Kaplan–Meier per modality and log-rank")
def durability(db: SessionDep, user: Research, modality: str | None = None,
               site_id: int | None = None) -> dict[str, Any]:
    result = analytics.durability(_engine(db), where=analytics.scope(modality, site_id))
    _log(db, user, "durability", {"modality": modality})
    return result


@router.get("/analytics/change", summary="Change from baseline of an instrument (paired, t interval)")
def change(db: SessionDep, user: Research, code: Annotated[str, Query(min_length=1)]) -> dict[str, Any]:
    result = analytics.change_from_baseline(_engine(db), code)
    _log(db, user, "change", {"code": code})
    return result


@router.get("/reports/outcomes", summary="Complete-cohort outcome report (HTML or PDF) for a clinic or modality",
            responses={200: {"content": {"text/html": {}, "application/pdf": {}}}})
def outcome_report(db: SessionDep, user: Research, modality: str | None = None, site_id: int | None = None,
                   format: Literal["html", "pdf"] = "html") -> Response:  # noqa: A002
    report = reports.build_report(_engine(db), modality=modality, site_id=site_id)
    _log(db, user, "report", {"modality": modality, "site_id": site_id, "format": format})
    if format == "pdf":
        return Response(reports.report_pdf(report), media_type="application/pdf")
    return Response(report.html, media_type="text/html")


@router.post("/procedures/{procedure_id}/schedule", status_code=201,
             summary="Create the follow-up visits of a procedure from its modality's schedule template")
def schedule(procedure_id: int, db: SessionDep, user: ClinicalWrite) -> list[dict[str, Any]]:
    from regenguide.outcomes.schedule import build_schedule

    procedure = db.get(m.Procedure, procedure_id)
    if procedure is None:
        raise ProblemError(404, "Not found", f"procedure {procedure_id} does not exist", type_="not-found")
    existing = db.execute(select(m.FollowupVisit.id).where(m.FollowupVisit.procedure_id == procedure_id)).first()
    if existing:
        raise ProblemError(409, "Conflict", f"procedure {procedure_id} already has follow-up visits",
                           type_="already-scheduled")
    planned = [v for v in build_schedule(procedure.modality, procedure.performed_at.date())
               if v.kind.value == "follow_up"]
    rows = [m.FollowupVisit(patient_id=procedure.patient_id, procedure_id=procedure.id, label=v.label[:40],
                            due_on=v.target_date, window_start=v.window_start, window_end=v.window_end)
            for v in planned]
    db.add_all(rows)
    db.flush()
    audit(db, user, user.audit("create", "visits", procedure.id, procedure.patient_id, [v.code for v in planned]))
    out = [{"id": r.id, "label": r.label, "due_on": r.due_on.isoformat(), "window_start": r.window_start.isoformat(),
            "window_end": r.window_end.isoformat()} for r in rows]
    db.commit()
    return out


@router.get("/worklist", summary="Follow-up visits to arrange this week (overdue first)")
def worklist(db: SessionDep, user: Clinical, week_of: date | None = None) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    week_of = week_of or today
    monday = week_of - timedelta(days=week_of.weekday())
    sunday = monday + timedelta(days=6)
    rows = db.execute(
        select(m.FollowupVisit).where(m.FollowupVisit.status == "scheduled", m.FollowupVisit.window_start <= sunday,
                                      m.FollowupVisit.due_on <= sunday + timedelta(days=0),
                                      m.FollowupVisit.window_end >= monday - timedelta(days=365))
        .order_by(m.FollowupVisit.window_end, m.FollowupVisit.due_on).limit(500)
    ).scalars().all()

    def state(v: m.FollowupVisit) -> str:
        if v.window_end < today:
            return "overdue"
        return "due" if v.window_start <= today else "upcoming"

    items: list[dict[str, str | int]] = [
        {"visit_id": v.id, "patient_id": v.patient_id, "label": v.label, "due_on": v.due_on.isoformat(),
         "window_end": v.window_end.isoformat(), "state": state(v)}
        for v in rows
    ]
    rank = {"overdue": 0, "due": 1, "upcoming": 2}
    items.sort(key=lambda x: (rank[str(x["state"])], str(x["due_on"])))
    audit(db, user, *[user.audit("list", "visits", v.id, v.patient_id) for v in rows])
    db.commit()
    return {"week_of": monday.isoformat(), "items": items}
