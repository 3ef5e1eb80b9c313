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
  the patient's last contact (last procedure, completed visit or observation); a patient without
  any contact after the first course is censored at day 0 and still counted;
- *change from baseline* pairs each patient's first and last value of an instrument.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any, Literal

import pandas as pd
from scipy import stats
from sqlalchemy import Connection, Engine, and_, case, distinct, func, literal, or_, select

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


# Age at the procedure in bands for adjustment, by calendar year (year of the procedure minus year of birth:
# portable SQL on SQLite and PostgreSQL, and at most a year off, which banding absorbs nearly always).
AGE_BANDS = ("under_40", "40_59", "60_plus")


def _age_band() -> Any:
    age = func.extract("year", m.Procedure.performed_at) - func.extract("year", m.Patient.birth_date)
    return case((age < 40, literal("under_40")), (age < 60, literal("40_59")), else_=literal("60_plus"))


def guided_vs_landmark(engine: Bind, level: float = 0.95, where: list[Any] | None = None) -> dict[str, Any]:
    """Image-guided versus landmark technique: crude risk ratio, Mantel–Haenszel risk ratio stratified
    by modality and region, and a logistic regression adjusted for modality, the patient's sex and age band
    (odds ratios; see `AGE_BANDS`)."""
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
    sex = func.coalesce(m.Patient.sex, "unknown").label("sex")
    age_band = _age_band().label("age_band")
    # Group by the output labels: PostgreSQL does not match two renderings of an expression with bound
    # parameters in SELECT and GROUP BY.
    stmt = (
        select(modality, region, sex, age_band, guided, event, func.count().label("n"))
        .select_from(m.Procedure)
        .join(m.Patient, m.Patient.id == m.Procedure.patient_id)
        .outerjoin(ae, ae.c.procedure_id == m.Procedure.id)
        .outerjoin(regions, regions.c.procedure_id == m.Procedure.id)
        .where(*(where or []))
        .group_by(modality, region, sex, age_band, guided, event)
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
        # One indicator per level present in the data but the reference: the first modality alphabetically,
        # female, the youngest band present.
        covariates = cells[["modality", "sex", "age_band"]].astype(str)
        for column, preferred in (("sex", ("female", "male")), ("age_band", AGE_BANDS)):
            present = set(covariates[column])
            levels = [v for v in preferred if v in present] + sorted(present - set(preferred))
            covariates[column] = pd.Categorical(covariates[column], categories=levels)
        design = pd.get_dummies(covariates, drop_first=True, dtype=float)
        adjusters = list(design.columns)
        design["image_guided"] = cells["guided"].astype(float)
        design["event"] = cells["event"]
        design["n"] = cells["n"]
        predictors = ["image_guided", *adjusters]
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
    observed = (
        select(m.Observation.patient_id.label("patient_id"), func.max(m.Observation.observed_at).label("last_obs"))
        .group_by(m.Observation.patient_id).subquery("observed")
    )
    stmt = (
        select(first.c.patient_id, first.c.modality, first.c.performed_at.label("start"),
               second.c.performed_at.label("retreated"), contact.c.last_at, visits.c.last_on, observed.c.last_obs)
        .select_from(first)
        .outerjoin(second, and_(second.c.patient_id == first.c.patient_id, second.c.modality == first.c.modality,
                                second.c.k == 2))
        .join(contact, contact.c.patient_id == first.c.patient_id)
        .outerjoin(visits, visits.c.patient_id == first.c.patient_id)
        .outerjoin(observed, observed.c.patient_id == first.c.patient_id)
        .where(first.c.k == 1)
    )
    frame = _frame(engine, stmt)
    if frame.empty:
        return pd.DataFrame({"days": [], "event": [], "modality": [], "w": []})
    start = pd.to_datetime(frame["start"], utc=True)
    retreated = pd.to_datetime(frame["retreated"], utc=True)
    last = pd.concat([pd.to_datetime(frame["last_at"], utc=True), pd.to_datetime(frame["last_on"], utc=True),
                      pd.to_datetime(frame["last_obs"], utc=True)], axis=1).max(axis=1)
    event = retreated.notna()
    end = retreated.where(event, last)
    days = ((end - start).dt.total_seconds() / 86400.0).clip(lower=0.0)
    grouped = pd.DataFrame({"days": days.round(0), "event": event.astype(int), "modality": frame["modality"]})
    # Patients with no follow-up after the first course stay in, censored at day 0: they count in n
    # (complete cohort) and add nothing to the curve.
    return grouped.groupby(["days", "event", "modality"]).size().reset_index(name="w")


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
                                      order_by=(m.Observation.observed_at, m.Observation.id)).label("first_k"),
               func.row_number().over(partition_by=m.Observation.patient_id,
                                      order_by=(m.Observation.observed_at.desc(), m.Observation.id.desc())
                                      ).label("last_k"))
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


def follow_up_completeness(engine: Bind, where: list[Any] | None = None, as_of: date | None = None) -> dict[str, Any]:
    """Follow-up visits and patients, so reports show losses to follow-up instead of dropping them.

    `visits` counts the stored status; `visit_states` the state on `as_of` (default today), so a
    visit still marked *scheduled* whose window has closed shows as `window_closed_not_done` instead
    of hiding among the scheduled ones. `lost_to_follow_up` lists every patient (internal registry id,
    no name) meeting the knowledge base's lost-to-follow-up rule (`regenguide.outcomes.schedule`,
    expert opinion): the last `consecutive_missed` visits not done, or a visit not done and no contact
    (completed visit or procedure) for `no_contact_months`. A visit counts as not done when marked
    missed or when its window has closed without completion (the template's grace period is not
    stored with the visit, so this can flag a visit that is still in its grace period)."""
    from regenguide.outcomes.schedule import lost_to_follow_up_rule

    rule = lost_to_follow_up_rule()
    as_of = as_of or date.today()
    cohort = select(m.Procedure.id).where(*(where or []))
    in_cohort = m.FollowupVisit.procedure_id.in_(cohort) if where else literal(True)
    v = m.FollowupVisit
    stmt = select(v.status, func.count().label("n")).where(in_cohort).group_by(v.status)
    frame = _frame(engine, stmt)
    counts = {str(k): int(n) for k, n in zip(frame["status"], frame["n"], strict=True)} if not frame.empty else {}
    scheduled = v.status == "scheduled"
    state = case(
        (and_(scheduled, v.window_end < as_of), literal("window_closed_not_done")),
        (and_(scheduled, v.window_start > as_of), literal("upcoming")),
        (scheduled, literal("due")),
        else_=v.status,
    ).label("state")
    states = _frame(engine, select(state, func.count().label("n")).where(in_cohort).group_by(state))
    visit_states = (
        {str(k): int(n) for k, n in zip(states["state"], states["n"], strict=True)} if not states.empty else {}
    )
    not_done = or_(v.status == "missed", and_(scheduled, v.window_end < as_of))
    lost = select(func.count(distinct(v.patient_id))).where(v.status == "missed", in_cohort)
    treated = select(func.count(distinct(m.Procedure.patient_id))).where(*(where or []))
    with connect(engine) as conn:
        missed_patients = int(conn.execute(lost).scalar_one())
        treated_patients = int(conn.execute(treated).scalar_one())
    # Per patient, in SQL: visits not done, those after the last completed visit (the trailing run),
    # and the last contact.
    done = (
        select(v.patient_id.label("patient_id"), func.max(v.due_on).label("last_done_due"),
               func.max(v.completed_on).label("last_on"))
        .where(v.status == "completed").group_by(v.patient_id).subquery("done")
    )
    trailing = case((or_(done.c.last_done_due.is_(None), v.due_on > done.c.last_done_due), 1), else_=0)
    gaps = (
        select(v.patient_id.label("patient_id"), func.count().label("not_done"),
               func.sum(trailing).label("run"), func.max(done.c.last_on).label("last_on"))
        .select_from(v).outerjoin(done, done.c.patient_id == v.patient_id)
        .where(not_done, in_cohort).group_by(v.patient_id).subquery("gaps")
    )
    proc_contact = (
        select(m.Procedure.patient_id.label("patient_id"), func.max(m.Procedure.performed_at).label("last_at"),
               func.min(m.Procedure.modality).label("modality"))
        .where(*(where or [])).group_by(m.Procedure.patient_id).subquery("pc")
    )
    rows = _frame(
        engine,
        select(gaps.c.patient_id, proc_contact.c.modality, gaps.c.not_done, gaps.c.run, gaps.c.last_on,
               proc_contact.c.last_at)
        .select_from(gaps).join(proc_contact, proc_contact.c.patient_id == gaps.c.patient_id)
        .order_by(gaps.c.patient_id),
    )
    lost_rows: list[dict[str, Any]] = []
    if not rows.empty:
        last = pd.concat([pd.to_datetime(rows["last_at"], utc=True).dt.tz_localize(None).dt.normalize(),
                          pd.to_datetime(rows["last_on"])], axis=1).max(axis=1)
        # whole calendar months from the last contact to as_of (as relativedelta counts them)
        months = ((as_of.year - last.dt.year) * 12 + as_of.month - last.dt.month
                  - (as_of.day < last.dt.day).astype(int))
        last = last.dt.date
        run_hit = rows["run"].astype(int) >= rule.consecutive_missed
        silent = months >= rule.no_contact_months
        rows = rows.assign(last_contact=last, months_since_contact=months, run_hit=run_hit, silent=silent)
        for r in rows[run_hit | silent].to_dict("records"):
            reasons = []
            if r["run_hit"]:
                reasons.append(f"last {int(r['run'])} visits not done (rule: {rule.consecutive_missed})")
            if r["silent"]:
                reasons.append(f"no contact for {int(r['months_since_contact'])} months "
                               f"(rule: {rule.no_contact_months})")
            lost_rows.append({"patient_id": int(r["patient_id"]), "modality": r["modality"],
                              "visits_not_done": int(r["not_done"]), "last_contact": r["last_contact"].isoformat(),
                              "months_since_contact": int(r["months_since_contact"]), "reasons": reasons})
    return {"visits": counts, "visit_states": visit_states, "as_of": as_of.isoformat(),
            "treated_patients": treated_patients, "patients_with_missed_visits": missed_patients,
            "patients_with_visits_not_done": int(rows.shape[0]), "lost_to_follow_up": lost_rows,
            "lost_rule": {"consecutive_missed": rule.consecutive_missed, "no_contact_months": rule.no_contact_months,
                          "evidence": rule.evidence.value}}
