"""Registry analytics: SQL aggregation in the database, statistics on the aggregated counts.

Every result carries its denominator. No Python loop walks over procedures: each analysis is one or
two `GROUP BY` queries (SQLite or PostgreSQL), and the statistics (`regenguide.evidence.registry`,
`regenguide.evidence.survival`) take grouped counts with frequency weights, which give the same
answers as one row per procedure.

Definitions (also in docs/analytics.md):
- a *procedure with a complication* has at least one adverse event linked to it;
- *image-guided* means guidance by any imaging modality (ultrasound, CT, MRI, fluoroscopy);
  *landmark* means none;
- *retreatment* is the start of a new course (a procedure with session_number 1) of the same modality
  in the same patient after the first; time is counted from the first course start and censored at
  the patient's last contact (last procedure, completed visit or observation);
- *change from baseline* pairs each patient's first and last value of an instrument.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pandas as pd
from scipy import stats
from sqlalchemy import Connection, Engine, and_, case, distinct, func, literal, select

from regenguide.evidence.registry import logistic_regression, mantel_haenszel_rr, risk_ratio, wilson_table
from regenguide.evidence.survival import kaplan_meier
from regenguide.store import models as m

Grouping = Literal["modality", "region", "guidance", "modality_region", "modality_guidance"]

GUIDED = case((m.Procedure.guidance_imaging != "none", literal("image_guided")), else_=literal("landmark"))


Bind = Engine | Connection


@contextmanager
def connect(bind: Bind) -> Iterator[Connection]:
    """A connection from an engine, or the caller's own connection (e.g. a request's session, whose
    transaction on SQLite already holds the database: a second connection would wait for it)."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


def _frame(engine: Bind, stmt: Any) -> pd.DataFrame:
    with connect(engine) as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _with_complication() -> Any:
    return (
        select(m.AdverseEvent.procedure_id.label("procedure_id"))
        .where(m.AdverseEvent.procedure_id.is_not(None))
        .distinct()
        .subquery("with_ae")
    )


def scope(modality: str | None = None, site_id: int | None = None) -> list[Any]:
    """WHERE conditions on procedures for a cohort: one modality and/or one clinic."""
    conditions: list[Any] = []
    if modality:
        conditions.append(m.Procedure.modality == modality)
    if site_id is not None:
        conditions.append(m.Procedure.patient_id.in_(select(m.Patient.id).where(m.Patient.site_id == site_id)))
    return conditions


def _counts(engine: Bind, keys: list[Any], where: list[Any]) -> pd.DataFrame:
    ae = _with_complication()
    base = select(*keys, func.count(distinct(m.Procedure.id)).label("total"),
                  func.count(distinct(ae.c.procedure_id)).label("events"))
    base = base.select_from(m.Procedure).outerjoin(ae, ae.c.procedure_id == m.Procedure.id).where(*where)
    return _frame(engine, base.group_by(*keys).order_by(*keys))


def _keys(grouping: Grouping) -> tuple[list[Any], bool]:
    """Group-by columns, and whether the grouping is by treated region (a procedure may treat several)."""
    modality = m.Procedure.modality.label("modality")
    guidance = GUIDED.label("guidance")
    if grouping == "modality":
        return [modality], False
    if grouping == "guidance":
        return [guidance], False
    if grouping == "modality_guidance":
        return [modality, guidance], False
    return ([modality] if grouping == "modality_region" else []), True


def complication_rates(
    engine: Bind, grouping: Grouping = "modality", level: float = 0.95, where: list[Any] | None = None
) -> dict[str, Any]:
    """Share of procedures with at least one complication, per group, with Wilson intervals."""
    where = where or []
    keys, by_region = _keys(grouping)
    if by_region:
        regions = (
            select(m.PerformedInjection.procedure_id.label("procedure_id"), m.PerformedInjection.region.label("region"))
            .distinct()
            .subquery("regions")
        )
        ae = _with_complication()
        group_cols = [*keys, regions.c.region]
        stmt = (
            select(*group_cols, func.count(distinct(m.Procedure.id)).label("total"),
                   func.count(distinct(ae.c.procedure_id)).label("events"))
            .select_from(m.Procedure)
            .join(regions, regions.c.procedure_id == m.Procedure.id)
            .outerjoin(ae, ae.c.procedure_id == m.Procedure.id)
            .where(*where)
            .group_by(*group_cols).order_by(*group_cols)
        )
        frame = _frame(engine, stmt)
    else:
        frame = _counts(engine, keys, where)
    if frame.empty:
        return {"grouping": grouping, "level": level, "rows": [], "denominator": "procedures", "total": 0}
    table = wilson_table(frame, "events", "total", level)
    group_cols = [c for c in table.columns if c not in ("total", "events", "rate", "ci_low", "ci_high")]
    rows = [
        {"group": {c: r[c] for c in group_cols}, "n": int(r["total"]), "events": int(r["events"]),
         "rate": float(r["rate"]), "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"])}
        for r in table.to_dict("records")
    ]
    total = int(_frame(engine, select(func.count()).select_from(m.Procedure).where(*where)).iloc[0, 0])
    return {"grouping": grouping, "level": level, "denominator": "procedures", "total": total, "rows": rows}


def guided_vs_landmark(engine: Bind, level: float = 0.95, where: list[Any] | None = None) -> dict[str, Any]:
    """Image-guided versus landmark technique: crude risk ratio, Mantel–Haenszel risk ratio stratified
    by modality and region, and a logistic regression adjusted for modality (odds ratios)."""
    ae = _with_complication()
    regions = (
        select(m.PerformedInjection.procedure_id.label("procedure_id"),
               func.min(m.PerformedInjection.region).label("region"))
        .group_by(m.PerformedInjection.procedure_id)
        .subquery("first_region")
    )
    guided = GUIDED.label("guidance")
    event = case((ae.c.procedure_id.is_not(None), 1), else_=0).label("event")
    region = func.coalesce(regions.c.region, "none").label("region")
    modality = m.Procedure.modality.label("modality")
    # Group by the output labels: PostgreSQL does not match two renderings of an expression with bound
    # parameters in SELECT and GROUP BY.
    stmt = (
        select(modality, region, guided, event, func.count().label("n"))
        .select_from(m.Procedure)
        .outerjoin(ae, ae.c.procedure_id == m.Procedure.id)
        .outerjoin(regions, regions.c.procedure_id == m.Procedure.id)
        .where(*(where or []))
        .group_by(modality, region, guided, event)
    )
    cells = _frame(engine, stmt)
    if cells.empty:
        return {"n": 0}
    cells["guided"] = (cells["guidance"] == "image_guided").astype(int)
    arm = cells.groupby(["guided", "event"])["n"].sum()

    def cell(g: int, e: int) -> int:
        return int(arm.get((g, e), 0))

    a, b, c, d = cell(1, 1), cell(1, 0), cell(0, 1), cell(0, 0)
    out: dict[str, Any] = {
        "n": a + b + c + d, "denominator": "procedures",
        "image_guided": {"events": a, "total": a + b}, "landmark": {"events": c, "total": c + d},
    }
    if (a + b) and (c + d):
        out["crude_rr"] = risk_ratio(a, a + b, c, c + d, level).model_dump()
        strata = cells.pivot_table(index=["modality", "region"], columns=["guided", "event"], values="n",
                                   aggfunc="sum", fill_value=0)
        for key in [(1, 1), (1, 0), (0, 1), (0, 0)]:
            if key not in strata.columns:
                strata[key] = 0
        t_e, t_n = strata[(1, 1)], strata[(1, 1)] + strata[(1, 0)]
        c_e, c_n = strata[(0, 1)], strata[(0, 1)] + strata[(0, 0)]
        try:
            out["mantel_haenszel_rr"] = mantel_haenszel_rr(t_e, t_n, c_e, c_n, level).model_dump()
        except ValueError as exc:
            out["mantel_haenszel_rr"] = {"error": str(exc)}
        design = pd.get_dummies(cells[["modality"]], drop_first=True, dtype=float)
        design["image_guided"] = cells["guided"].astype(float)
        design["event"] = cells["event"]
        design["n"] = cells["n"]
        predictors = ["image_guided", *[col for col in design.columns if col.startswith("modality_")]]
        try:
            fit = logistic_regression(design, "event", predictors, weights="n", level=level)
            out["adjusted_logistic"] = fit.model_dump()
        except ArithmeticError:
            out["adjusted_logistic"] = {"error": "not estimable: an arm has no events or no non-events (separation)"}
        except ValueError as exc:
            out["adjusted_logistic"] = {"error": str(exc)}
    return out


def retention_by_processing(
    engine: Bind, code: str = "graft_retention", level: float = 0.95, where: list[Any] | None = None
) -> dict[str, Any]:
    """Graft volume retention (retained / injected) by processing method: mean, SD and t interval, from
    sums and sums of squares aggregated in SQL."""
    method = func.coalesce(m.Procedure.processing_method, "unspecified").label("processing_method")
    stmt = (
        select(method, func.count(m.Observation.id).label("n"), func.sum(m.Observation.value).label("s"),
               func.sum(m.Observation.value * m.Observation.value).label("ss"),
               func.count(distinct(m.Observation.patient_id)).label("patients"))
        .select_from(m.Observation)
        .join(m.Procedure, m.Procedure.id == m.Observation.procedure_id)
        .where(m.Observation.code == code, m.Observation.value.is_not(None), *(where or []))
        .group_by(method).order_by(method)
    )
    frame = _frame(engine, stmt)
    rows = []
    for r in frame.to_dict("records"):
        n = int(r["n"])
        mean = float(r["s"]) / n
        var = max(float(r["ss"]) - n * mean * mean, 0.0) / (n - 1) if n > 1 else float("nan")
        sd = math.sqrt(var) if n > 1 else float("nan")
        half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
        rows.append({"processing_method": r["processing_method"], "n": n, "patients": int(r["patients"]),
                     "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half})
    return {"code": code, "level": level, "denominator": "measurements", "rows": rows}


def durability_frame(engine: Bind, where: list[Any] | None = None) -> pd.DataFrame:
    """Time to retreatment per patient × modality, aggregated to (days, event, modality, w) rows."""
    course = (
        select(m.Procedure.patient_id, m.Procedure.modality, m.Procedure.performed_at,
               func.row_number().over(partition_by=(m.Procedure.patient_id, m.Procedure.modality),
                                      order_by=m.Procedure.performed_at).label("k"))
        .where(m.Procedure.session_number == 1, *(where or []))
        .subquery("courses")
    )
    first = course.alias("first")
    second = course.alias("second")
    contact = (
        select(m.Procedure.patient_id.label("patient_id"), func.max(m.Procedure.performed_at).label("last_at"))
        .group_by(m.Procedure.patient_id).subquery("contact")
    )
    visits = (
        select(m.FollowupVisit.patient_id.label("patient_id"), func.max(m.FollowupVisit.completed_on).label("last_on"))
        .where(m.FollowupVisit.completed_on.is_not(None)).group_by(m.FollowupVisit.patient_id).subquery("visits")
    )
    stmt = (
        select(first.c.patient_id, first.c.modality, first.c.performed_at.label("start"),
               second.c.performed_at.label("retreated"), contact.c.last_at, visits.c.last_on)
        .select_from(first)
        .outerjoin(second, and_(second.c.patient_id == first.c.patient_id, second.c.modality == first.c.modality,
                                second.c.k == 2))
        .join(contact, contact.c.patient_id == first.c.patient_id)
        .outerjoin(visits, visits.c.patient_id == first.c.patient_id)
        .where(first.c.k == 1)
    )
    frame = _frame(engine, stmt)
    if frame.empty:
        return pd.DataFrame({"days": [], "event": [], "modality": [], "w": []})
    start = pd.to_datetime(frame["start"], utc=True)
    retreated = pd.to_datetime(frame["retreated"], utc=True)
    last = pd.concat([pd.to_datetime(frame["last_at"], utc=True),
                      pd.to_datetime(frame["last_on"], utc=True)], axis=1).max(axis=1)
    event = retreated.notna()
    end = retreated.where(event, last)
    days = ((end - start).dt.total_seconds() / 86400.0).clip(lower=0.0)
    grouped = pd.DataFrame({"days": days.round(0), "event": event.astype(int), "modality": frame["modality"]})
    grouped = grouped.groupby(["days", "event", "modality"]).size().reset_index(name="w")
    return grouped[grouped["days"] > 0].reset_index(drop=True)


def durability(engine: Bind, level: float = 0.95, where: list[Any] | None = None) -> dict[str, Any]:
    """Time to retreatment (Kaplan–Meier per modality, log-rank across modalities)."""
    grouped = durability_frame(engine, where)
    if grouped.empty:
        return {"n": 0, "groups": []}
    result = kaplan_meier(grouped["days"], grouped["event"], grouped["modality"], level=level, weights=grouped["w"])
    return {"n": int(grouped["w"].sum()), "denominator": "patients × modality (first course)", "unit": "days",
            **result.model_dump()}


def change_from_baseline(engine: Bind, code: str, level: float = 0.95) -> dict[str, Any]:
    """Paired change of an instrument between each patient's first and last value (both from SQL)."""
    ranked = (
        select(m.Observation.patient_id, m.Observation.value,
               func.row_number().over(partition_by=m.Observation.patient_id,
                                      order_by=m.Observation.observed_at).label("first_k"),
               func.row_number().over(partition_by=m.Observation.patient_id,
                                      order_by=m.Observation.observed_at.desc()).label("last_k"))
        .where(m.Observation.code == code, m.Observation.value.is_not(None))
        .subquery("ranked")
    )
    baseline = select(ranked.c.patient_id, ranked.c.value.label("v0")).where(ranked.c.first_k == 1).subquery("b")
    latest = select(ranked.c.patient_id, ranked.c.value.label("v1")).where(
        ranked.c.last_k == 1, ranked.c.first_k > 1).subquery("l")
    diff = (latest.c.v1 - baseline.c.v0)
    stmt = select(func.count().label("n"), func.avg(baseline.c.v0).label("mean0"), func.avg(latest.c.v1).label("mean1"),
                  func.sum(diff).label("s"), func.sum(diff * diff).label("ss")).select_from(
        baseline.join(latest, latest.c.patient_id == baseline.c.patient_id))
    r = _frame(engine, stmt).iloc[0]
    n = int(r["n"] or 0)
    if n < 2:
        return {"code": code, "n": n, "denominator": "patients with ≥ 2 values", "error": "fewer than 2 pairs"}
    mean = float(r["s"]) / n
    sd = math.sqrt(max(float(r["ss"]) - n * mean * mean, 0.0) / (n - 1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    t = mean / se if se > 0 else float("inf")
    p = float(2 * stats.t.sf(abs(t), n - 1)) if se > 0 else 0.0
    return {"code": code, "n": n, "denominator": "patients with ≥ 2 values", "mean_baseline": float(r["mean0"]),
            "mean_follow_up": float(r["mean1"]), "mean_change": mean, "sd_change": sd,
            "ci_low": mean - half, "ci_high": mean + half, "t": t, "p": p, "level": level}


def follow_up_completeness(engine: Bind, where: list[Any] | None = None) -> dict[str, Any]:
    """Visits by status, so reports show losses to follow-up instead of dropping them."""
    cohort = select(m.Procedure.id).where(*(where or []))
    in_cohort = m.FollowupVisit.procedure_id.in_(cohort) if where else literal(True)
    stmt = select(m.FollowupVisit.status, func.count().label("n")).where(in_cohort).group_by(m.FollowupVisit.status)
    frame = _frame(engine, stmt)
    counts = {str(k): int(v) for k, v in zip(frame["status"], frame["n"], strict=True)} if not frame.empty else {}
    lost = select(func.count(distinct(m.FollowupVisit.patient_id))).where(m.FollowupVisit.status == "missed", in_cohort)
    treated = select(func.count(distinct(m.Procedure.patient_id))).where(*(where or []))
    with connect(engine) as conn:
        missed_patients = int(conn.execute(lost).scalar_one())
        treated_patients = int(conn.execute(treated).scalar_one())
    return {"visits": counts, "treated_patients": treated_patients, "patients_with_missed_visits": missed_patients}

