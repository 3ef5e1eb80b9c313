"""Registry analytics against small cases computed by hand (SQL aggregation on both databases)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from regenguide.services import analytics
from regenguide.store import models as m
from regenguide.store.db import transaction

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def _patient(db: Any, i: int) -> m.Patient:
    p = m.Patient(site_id=1, mrn=f"M{i}", given_name="G", family_name=f"F{i}", birth_date=date(1980, 1, 1),
                  sex="female")
    db.add(p)
    db.flush()
    return p


def _procedure(db: Any, patient: m.Patient, modality: str, guided: bool, region: str, *, at: datetime = T0,
               ae: bool = False, method: str | None = None, session: int = 1) -> m.Procedure:
    proc = m.Procedure(patient_id=patient.id, modality=modality, performed_at=at, session_number=session,
                       guidance_imaging="ultrasound" if guided else "none", processing_method=method)
    proc.injections = [m.PerformedInjection(seq=1, region=region, volume_ml=1.0)]
    db.add(proc)
    db.flush()
    if ae:
        db.add(m.AdverseEvent(patient_id=patient.id, procedure_id=proc.id, event_type="bruising", severity=1,
                              relatedness="probable", onset_on=at.date()))
    return proc


def _registry(engine: Any) -> None:
    """PRP/scalp: guided 1/10, landmark 3/10; microfat/malar: guided 0/5, landmark 2/5."""
    with transaction(engine) as db:
        i = 0
        for modality, region, arms in (("prp", "scalp", ((True, 10, 1), (False, 10, 3))),
                                       ("microfat", "malar", ((True, 5, 0), (False, 5, 2)))):
            for guided, n, events in arms:
                for k in range(n):
                    i += 1
                    _procedure(db, _patient(db, i), modality, guided, region, ae=k < events)


def wilson(x: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_complication_rates_by_modality_with_wilson_intervals(engine: Any) -> None:
    _registry(engine)
    result = analytics.complication_rates(engine, "modality")
    assert result["total"] == 30 and result["denominator"] == "procedures"
    rows = {r["group"]["modality"]: r for r in result["rows"]}
    assert (rows["prp"]["events"], rows["prp"]["n"]) == (4, 20)
    assert (rows["microfat"]["events"], rows["microfat"]["n"]) == (2, 10)
    lo, hi = wilson(4, 20)
    assert rows["prp"]["ci_low"] == pytest.approx(lo) and rows["prp"]["ci_high"] == pytest.approx(hi)


def test_complication_rates_by_guidance_and_region(engine: Any) -> None:
    _registry(engine)
    by_guidance = {r["group"]["guidance"]: (r["events"], r["n"])
                   for r in analytics.complication_rates(engine, "guidance")["rows"]}
    assert by_guidance == {"image_guided": (1, 15), "landmark": (5, 15)}
    by_region = {r["group"]["region"]: r["n"] for r in analytics.complication_rates(engine, "region")["rows"]}
    assert by_region == {"malar": 10, "scalp": 20}


def test_guided_vs_landmark(engine: Any) -> None:
    _registry(engine)
    result = analytics.guided_vs_landmark(engine)
    assert result["n"] == 30
    crude = result["crude_rr"]
    assert crude["rr"] == pytest.approx((1 / 15) / (5 / 15))
    # Mantel–Haenszel by hand: sum(a*n2/N) / sum(c*n1/N) = (1*10/20 + 0) / (3*10/20 + 2*5/10) = 0.5 / 2.5
    assert result["mantel_haenszel_rr"]["rr"] == pytest.approx(0.2)
    terms = {t["term"]: t for t in result["adjusted_logistic"]["terms"]}
    assert terms["image_guided"]["odds_ratio"] < 1


def test_retention_by_processing(engine: Any) -> None:
    with transaction(engine) as db:
        for i, (method, value) in enumerate((("centrifugation", 40.0), ("centrifugation", 50.0),
                                             ("centrifugation", 60.0), ("cotton_pad", 30.0), ("cotton_pad", 50.0))):
            p = _patient(db, i)
            proc = _procedure(db, p, "microfat", True, "malar", method=method)
            db.add(m.Observation(patient_id=p.id, procedure_id=proc.id, code="graft_retention", value=value,
                                 unit="%", observed_at=T0 + timedelta(days=180)))
    rows = {r["processing_method"]: r for r in analytics.retention_by_processing(engine)["rows"]}
    assert rows["centrifugation"]["mean"] == pytest.approx(50.0) and rows["centrifugation"]["sd"] == pytest.approx(10.0)
    half = 4.302652729911275 * 10.0 / math.sqrt(3)  # t(0.975, 2)
    assert rows["centrifugation"]["ci_low"] == pytest.approx(50.0 - half)
    assert rows["cotton_pad"]["n"] == 2 and rows["cotton_pad"]["sd"] == pytest.approx(math.sqrt(200.0))


def test_durability_kaplan_meier(engine: Any) -> None:
    with transaction(engine) as db:
        a, b, c = _patient(db, 1), _patient(db, 2), _patient(db, 3)
        _procedure(db, a, "prp", True, "scalp")
        _procedure(db, a, "prp", True, "scalp", at=T0 + timedelta(days=30), session=2)  # same course
        _procedure(db, a, "prp", True, "scalp", at=T0 + timedelta(days=200))  # retreatment at day 200
        _procedure(db, b, "prp", True, "scalp")
        db.add(m.FollowupVisit(patient_id=b.id, label="6 months", due_on=date(2025, 7, 6),
                               window_start=date(2025, 7, 1), window_end=date(2025, 7, 20), status="completed",
                               completed_on=date(2025, 7, 6)))
        _procedure(db, c, "prp", True, "scalp")
        _procedure(db, c, "prp", True, "scalp", at=T0 + timedelta(days=100))  # retreatment at day 100
    result = analytics.durability(engine)
    assert result["n"] == 3
    group = result["groups"][0]
    assert group["n"] == 3 and group["events"] == 2
    # KM: day 100: 2/3 ... b censored at day 181 ... day 200: event among 1 → S = 0; median where S ≤ 0.5 first
    assert group["median"] == pytest.approx(200)


def test_change_from_baseline(engine: Any) -> None:
    with transaction(engine) as db:
        for i, (v0, v1) in enumerate(((4, 2), (3, 2), (5, 2))):
            p = _patient(db, i)
            db.add(m.Observation(patient_id=p.id, code="wsrs", value=v0, observed_at=T0))
            mid = T0 + timedelta(days=30)
            db.add(m.Observation(patient_id=p.id, code="wsrs", value=(v0 + v1) / 2, observed_at=mid))
            db.add(m.Observation(patient_id=p.id, code="wsrs", value=v1, observed_at=T0 + timedelta(days=90)))
        q = _patient(db, 99)
        db.add(m.Observation(patient_id=q.id, code="wsrs", value=5, observed_at=T0))  # single value: no pair
    r = analytics.change_from_baseline(engine, "wsrs")
    assert r["n"] == 3 and r["mean_change"] == pytest.approx(-2.0) and r["sd_change"] == pytest.approx(1.0)
    assert r["t"] == pytest.approx(-2 / (1 / math.sqrt(3)))
    assert r["ci_high"] == pytest.approx(-2 + 4.302652729911275 / math.sqrt(3))


def test_follow_up_completeness_counts_losses(engine: Any) -> None:
    with transaction(engine) as db:
        p = _patient(db, 1)
        _procedure(db, p, "prp", True, "scalp")
        d = date(2025, 2, 1)
        db.add(m.FollowupVisit(patient_id=p.id, label="1 month", due_on=d, window_start=d, window_end=d,
                               status="missed"))
    result = analytics.follow_up_completeness(engine, as_of=date(2025, 6, 1))
    assert result["visits"] == {"missed": 1} and result["visit_states"] == {"missed": 1}
    assert (result["treated_patients"], result["patients_with_missed_visits"]) == (1, 1)
    # one visit not done, last contact 6 Jan 2025: not lost yet on 1 June (rule: 2 in a row, or 12 months)
    assert result["patients_with_visits_not_done"] == 1 and result["lost_to_follow_up"] == []
    later = analytics.follow_up_completeness(engine, as_of=date(2026, 1, 6))
    (lost,) = later["lost_to_follow_up"]
    assert (lost["months_since_contact"], lost["last_contact"], lost["visits_not_done"]) == (12, "2025-01-06", 1)
    assert lost["reasons"] == ["no contact for 12 months (rule: 12)"]
    assert analytics.follow_up_completeness(engine, as_of=date(2026, 1, 5))["lost_to_follow_up"] == []


def _visit(db: Any, patient: m.Patient, due: date, status: str = "scheduled", done: date | None = None) -> None:
    db.add(m.FollowupVisit(patient_id=patient.id, label=f"v{due}", due_on=due, window_start=due - timedelta(days=3),
                           window_end=due + timedelta(days=3), status=status, completed_on=done))


def test_visit_states_on_a_date_and_trailing_run(engine: Any) -> None:
    """Stored 'scheduled' visits are classified by their window on the day of the report, so a visit
    nobody marked missed still counts as not done once its window has closed."""
    with transaction(engine) as db:
        a, b = _patient(db, 1), _patient(db, 2)
        _procedure(db, a, "microfat", True, "malar")
        _procedure(db, b, "microfat", True, "malar")
        _visit(db, a, date(2025, 1, 13), "completed", date(2025, 1, 13))
        _visit(db, a, date(2025, 2, 6))  # window closed on 1 Apr: not done
        _visit(db, a, date(2025, 3, 31))  # due on 1 Apr (window 28 Mar - 3 Apr)
        _visit(db, a, date(2025, 7, 6))  # upcoming
        _visit(db, b, date(2025, 1, 13), "missed")
        _visit(db, b, date(2025, 2, 6))  # not done → the last two visits of b were not done
        _visit(db, b, date(2025, 3, 31), "cancelled")
    r = analytics.follow_up_completeness(engine, as_of=date(2025, 4, 1))
    assert r["visits"] == {"completed": 1, "scheduled": 4, "missed": 1, "cancelled": 1}
    assert r["visit_states"] == {"completed": 1, "window_closed_not_done": 2, "due": 1, "upcoming": 1,
                                 "missed": 1, "cancelled": 1}
    assert r["patients_with_missed_visits"] == 1 and r["patients_with_visits_not_done"] == 2
    lost = {row["patient_id"]: row for row in r["lost_to_follow_up"]}
    assert set(lost) == {b.id}  # a's single gap follows a completed visit
    assert lost[b.id]["reasons"] == ["last 2 visits not done (rule: 2)"]


def test_durability_keeps_patients_without_follow_up(engine: Any) -> None:
    """A patient never seen after the first course is censored at day 0 and still counted in n."""
    with transaction(engine) as db:
        a, b = _patient(db, 1), _patient(db, 2)
        _procedure(db, a, "prp", True, "scalp")
        _procedure(db, a, "prp", True, "scalp", at=T0 + timedelta(days=100))
        _procedure(db, b, "prp", True, "scalp")
        c = _patient(db, 3)
        _procedure(db, c, "prp", True, "scalp")
        db.add(m.Observation(patient_id=c.id, code="wsrs", value=2, observed_at=T0 + timedelta(days=150)))
    result = analytics.durability(engine)
    (group,) = result["groups"]
    assert result["n"] == 3 and (group["n"], group["events"]) == (3, 1)
    frame = analytics.durability_frame(engine)
    rows = {(float(r.days), int(r.event)): int(r.w) for r in frame.itertuples()}
    # b: censored at 0; c: censored at the last observation (day 150); a: retreated at day 100
    assert rows == {(0.0, 0): 1, (100.0, 1): 1, (150.0, 0): 1}


def test_guided_vs_landmark_adjusts_for_sex_and_age_band(engine: Any) -> None:
    """Older patients are treated more often by landmark and have more complications: adjusting for the age
    band (and sex) must move the odds ratio towards the within-band one. The grouped fit (frequency weights on
    SQL counts) must equal a logistic regression on one row per procedure (statsmodels)."""
    import numpy as np
    import statsmodels.api as sm

    # (birth year, sex, guided, procedures, complications), procedures in 2025
    design = [
        (1995, "female", True, 12, 1), (1995, "female", False, 4, 0),   # under 40
        (1990, "male", True, 8, 1), (1990, "male", False, 4, 1),
        (1975, "female", True, 6, 1), (1975, "female", False, 8, 2),    # 40-59
        (1950, "male", True, 3, 1), (1950, "female", False, 15, 7),    # 60 and over
        (1955, "female", True, 4, 2), (1955, "male", False, 6, 3),
    ]
    rows: list[tuple[float, float, float, float, float]] = []  # guided, male, 40-59, 60+, event
    with transaction(engine) as db:
        i = 0
        for year, sex, guided, n, events in design:
            for k in range(n):
                i += 1
                p = m.Patient(site_id=1, mrn=f"A{i}", given_name="G", family_name="F", birth_date=date(year, 6, 1),
                              sex=sex)
                db.add(p)
                db.flush()
                _procedure(db, p, "prp", guided, "scalp", ae=k < events)
                age = 2025 - year
                rows.append((float(guided), float(sex == "male"), float(40 <= age < 60), float(age >= 60),
                             float(k < events)))
    result = analytics.guided_vs_landmark(engine)
    terms = {t["term"]: t for t in result["adjusted_logistic"]["terms"]}
    assert {"image_guided", "sex_male", "age_band_40_59", "age_band_60_plus"} <= set(terms)
    data = np.array(rows)
    reference = sm.GLM(data[:, 4], sm.add_constant(data[:, :4]), family=sm.families.Binomial()).fit()
    assert terms["image_guided"]["odds_ratio"] == pytest.approx(math.exp(reference.params[1]), rel=1e-6)
    assert terms["age_band_60_plus"]["odds_ratio"] == pytest.approx(math.exp(reference.params[4]), rel=1e-6)
    # Confounding by age: the crude odds ratio is further from 1 than the adjusted one.
    a, n1 = result["image_guided"]["events"], result["image_guided"]["total"]
    c, n2 = result["landmark"]["events"], result["landmark"]["total"]
    crude_or = (a / (n1 - a)) / (c / (n2 - c))
    assert crude_or < terms["image_guided"]["odds_ratio"] < 1
