from __future__ import annotations

from datetime import date, timedelta

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from regenguide.kb.references import KnowledgeBaseError, UnknownCitation
from regenguide.outcomes.schedule import (
    CompletedVisit,
    LostToFollowUpRule,
    Timing,
    VisitKind,
    VisitState,
    build_schedule,
    follow_up_status,
    load_schedule_file,
    lost_to_follow_up_rule,
    parse_schedule_file,
    visit_states,
    week_bounds,
    work_list,
)

ANCHOR = date(2026, 3, 2)  # a Monday


def _by_code(statuses):
    return {s.visit.code: s for s in statuses}


def test_fat_grafting_targets_and_windows():
    plan = build_schedule("microfat", ANCHOR)
    assert [v.code for v in plan] == ["w1", "m1", "m3", "m6", "m12"]
    w1 = plan[0]
    assert w1.target_date == date(2026, 3, 9)
    assert (w1.window_start, w1.window_end, w1.missed_after) == (date(2026, 3, 7), date(2026, 3, 13), date(2026, 3, 20))
    assert [v.target_date for v in plan[1:]] == [date(2026, 4, 2), date(2026, 6, 2), date(2026, 9, 2), date(2027, 3, 2)]
    assert all(v.window_evidence.value == "expert_opinion" for v in plan)
    assert all("regenguide-outcomes-expert-opinion" in v.window_citations for v in plan)
    assert [v.sequence for v in plan] == [0, 1, 2, 3, 4]
    # nanofat and CAL share the template
    assert [v.target_date for v in build_schedule("cal", ANCHOR)] == [v.target_date for v in plan]


@pytest.mark.parametrize(
    ("today", "state"),
    [
        (date(2026, 3, 6), VisitState.upcoming),  # day before the window opens
        (date(2026, 3, 7), VisitState.due),  # first day of the window
        (date(2026, 3, 13), VisitState.due),  # last day of the window
        (date(2026, 3, 14), VisitState.overdue),  # window closed, grace running
        (date(2026, 3, 20), VisitState.overdue),  # last day of grace
        (date(2026, 3, 21), VisitState.missed),
    ],
)
def test_state_across_time(today, state):
    plan = build_schedule("microfat", ANCHOR)
    assert _by_code(visit_states(plan, [], today))["w1"].state is state


@pytest.mark.parametrize(
    ("on", "timing", "delta"),
    [
        (date(2026, 3, 5), Timing.early, -4),
        (date(2026, 3, 7), Timing.on_time, -2),
        (date(2026, 3, 13), Timing.on_time, 4),
        (date(2026, 3, 15), Timing.late, 6),
    ],
)
def test_completed_early_on_time_late(on, timing, delta):
    plan = build_schedule("microfat", ANCHOR)
    status = _by_code(visit_states(plan, [CompletedVisit(on=on, visit_code="w1")], date(2026, 3, 30)))["w1"]
    assert status.state is VisitState.completed
    assert status.timing is timing
    assert status.completed_on == on
    assert status.days_from_target == delta


def test_uncoded_completion_matches_window_or_counts_as_contact():
    plan = build_schedule("microfat", ANCHOR)
    states = _by_code(visit_states(plan, [CompletedVisit(on=date(2026, 3, 10))], date(2026, 3, 30)))
    assert states["w1"].state is VisitState.completed and states["w1"].timing is Timing.on_time
    # 25 March is after w1's grace and before m1's window: a contact, completing nothing
    states = _by_code(visit_states(plan, [CompletedVisit(on=date(2026, 3, 25))], date(2026, 3, 25)))
    assert states["w1"].state is VisitState.missed
    assert states["m1"].state is VisitState.upcoming


def test_completion_errors():
    plan = build_schedule("microfat", ANCHOR)
    with pytest.raises(ValueError, match="after today"):
        visit_states(plan, [CompletedVisit(on=date(2026, 4, 1), visit_code="w1")], date(2026, 3, 30))
    with pytest.raises(ValueError, match="'m2' is not in the schedule; valid: w1, m1"):
        visit_states(plan, [CompletedVisit(on=date(2026, 3, 9), visit_code="m2")], date(2026, 3, 30))


def test_lost_to_follow_up_after_two_consecutive_missed():
    plan = build_schedule("microfat", ANCHOR, patient_ref="p1")
    # m1 missed_after = 2 Apr + 7 + 14 = 23 Apr
    before = follow_up_status(visit_states(plan, [], date(2026, 4, 23)), [], date(2026, 4, 23))
    assert before.consecutive_missed == 1 and not before.lost_to_follow_up
    after = follow_up_status(visit_states(plan, [], date(2026, 4, 24)), [], date(2026, 4, 24))
    assert after.consecutive_missed == 2 and after.lost_to_follow_up
    assert "2 consecutive missed visits" in after.reasons[0] and "expert_opinion" in after.reasons[0]
    assert after.next_visit is not None and after.next_visit.code == "m3"
    # a patient who comes back resets the run
    back = [CompletedVisit(on=date(2026, 6, 1), visit_code="m3", patient_ref="p1")]
    status = follow_up_status(visit_states(plan, back, date(2026, 6, 5)), back, date(2026, 6, 5))
    assert status.consecutive_missed == 0 and not status.lost_to_follow_up
    assert status.counts == {"upcoming": 2, "due": 0, "overdue": 0, "completed": 1, "missed": 2}


def test_lost_to_follow_up_by_no_contact():
    plan = build_schedule("microfat", ANCHOR)
    done = [CompletedVisit(on=date(2026, 3, 9), visit_code="w1"), CompletedVisit(on=date(2026, 4, 2), visit_code="m1")]
    rule = LostToFollowUpRule(consecutive_missed=10, no_contact_months=12)
    s11 = follow_up_status(visit_states(plan, done, date(2027, 4, 1)), done, date(2027, 4, 1), rule)
    assert s11.months_since_contact == 11 and not s11.lost_to_follow_up
    s12 = follow_up_status(visit_states(plan, done, date(2027, 4, 2)), done, date(2027, 4, 2), rule)
    assert s12.months_since_contact == 12 and s12.lost_to_follow_up
    assert s12.last_contact == date(2026, 4, 2)
    # a phone call is a contact
    call = [*done, CompletedVisit(on=date(2027, 1, 10), kind="contact")]
    s = follow_up_status(visit_states(plan, call, date(2027, 4, 2)), call, date(2027, 4, 2), rule)
    assert not s.lost_to_follow_up and s.last_contact == date(2027, 1, 10)


def test_rule_overrides_per_template():
    assert lost_to_follow_up_rule().no_contact_months == 12
    assert lost_to_follow_up_rule("car_t").no_contact_months == 18
    assert lost_to_follow_up_rule("car_t").consecutive_missed == 2


def test_prp_sessions_then_follow_up_from_last_session():
    plan = build_schedule("prp", date(2026, 1, 5))
    assert [(v.code, v.target_date) for v in plan] == [
        ("s1", date(2026, 1, 5)),
        ("s2", date(2026, 2, 2)),
        ("s3", date(2026, 3, 2)),
        ("m3", date(2026, 6, 2)),
        ("m6", date(2026, 9, 2)),
    ]
    assert plan[0].kind is VisitKind.session and plan[0].evidence.value == "secondary"
    assert "iadvl-prp-alopecia" in plan[0].citations
    actual = build_schedule("prp", date(2026, 1, 5), [date(2026, 1, 5), date(2026, 2, 9), date(2026, 3, 16)])
    assert _by_code_plan(actual)["m3"].target_date == date(2026, 6, 16)
    assert len(build_schedule("prp", date(2026, 1, 5), 5)) == 7


def _by_code_plan(plan):
    return {v.code: v for v in plan}


def test_microneedling_course():
    plan = _by_code_plan(build_schedule("microneedling", date(2026, 1, 5), 4))
    assert plan["s4"].target_date == date(2026, 3, 30)
    assert plan["m12"].target_date == date(2027, 3, 30)
    assert plan["m6"].citations == ["alster-graham-2018"]


def test_car_t_fifteen_year_track():
    plan = build_schedule("car_t", date(2026, 1, 1))
    codes = [v.code for v in plan]
    assert codes[:5] == ["d7", "d14", "d28", "d100", "m6"]
    assert codes[5:] == [f"y{n}" for n in range(1, 16)]
    by = _by_code_plan(plan)
    assert by["d100"].target_date == date(2026, 4, 11)
    assert by["m6"].target_date == date(2026, 7, 1)
    assert by["y15"].target_date == date(2041, 1, 1)
    assert by["d100"].citations == ["cibmtr-form-4100"] and by["d100"].evidence.value == "verified"
    assert by["d7"].evidence.value == "expert_opinion"
    assert "cibmtr-ct-tracks" in by["y3"].citations


def test_leap_day_repeats_do_not_drift():
    by = _by_code_plan(build_schedule("car_t", date(2028, 2, 29)))
    assert by["y1"].target_date == date(2029, 2, 28)
    assert by["y4"].target_date == date(2032, 2, 29)
    assert _by_code_plan(build_schedule("microfat", date(2026, 1, 31)))["m1"].target_date == date(2026, 2, 28)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown modality 'botox'; valid: prp"):
        build_schedule("botox", ANCHOR)
    with pytest.raises(ValueError, match="no session series"):
        build_schedule("microfat", ANCHOR, 3)
    with pytest.raises(ValueError, match="between 1 and 100"):
        build_schedule("prp", ANCHOR, 0)
    with pytest.raises(ValueError, match="before the anchor"):
        build_schedule("prp", ANCHOR, [date(2026, 1, 1)])


def test_work_list_for_a_week_across_patients():
    today = date(2026, 3, 9)
    a = build_schedule("microfat", ANCHOR, patient_ref="a")
    b = build_schedule("microfat", date(2026, 2, 20), patient_ref="b")  # w1 27 Feb, window closes 3 Mar
    c = build_schedule("microfat", date(2026, 3, 2), patient_ref="c")
    states = (
        visit_states(a, [], today)
        + visit_states(b, [], today)
        + visit_states(c, [CompletedVisit(on=date(2026, 3, 8), visit_code="w1", patient_ref="c")], today)
    )
    rows = work_list(states, today)
    assert [(r.visit.patient_ref, r.visit.code, r.state) for r in rows] == [
        ("b", "w1", VisitState.overdue),
        ("a", "w1", VisitState.due),
        ("b", "m1", VisitState.upcoming),  # window 13-27 March opens within the week
    ]
    assert week_bounds(date(2026, 3, 12)) == (date(2026, 3, 9), date(2026, 3, 15))
    # the week of 23 March: a's m1 window opens on 26 March
    later = work_list(visit_states(a, [], date(2026, 3, 23)), date(2026, 3, 26))
    assert [(r.visit.code, r.state) for r in later] == [("m1", VisitState.upcoming)]


def test_schedule_file_validation_fails_loudly():
    raw = yaml.safe_load(yaml.safe_dump(load_schedule_file().model_dump(mode="json")))
    parse_schedule_file(raw)  # round trip is valid
    dup = yaml.safe_load(yaml.safe_dump(raw))
    dup["templates"][1]["modalities"].append("microfat")
    with pytest.raises(KnowledgeBaseError, match="modality 'microfat' is in templates"):
        parse_schedule_file(dup)
    bad = yaml.safe_load(yaml.safe_dump(raw))
    bad["templates"][0]["citations"] = ["no-such-paper"]
    with pytest.raises(UnknownCitation):
        parse_schedule_file(bad)
    neg = yaml.safe_load(yaml.safe_dump(raw))
    neg["templates"][0]["visits"][0]["window"]["before_days"] = -1
    with pytest.raises(KnowledgeBaseError, match="before_days"):
        parse_schedule_file(neg)


# --- properties --------------------------------------------------------------------------------


_ORDER = {VisitState.upcoming: 0, VisitState.due: 1, VisitState.overdue: 2, VisitState.missed: 3}


@settings(max_examples=60, deadline=None)
@given(
    modality=st.sampled_from(["microfat", "prp", "microneedling", "car_t", "bmac"]),
    anchor=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
    offsets=st.lists(st.integers(min_value=0, max_value=800), min_size=2, max_size=6),
)
def test_states_never_go_backwards_without_completions(modality, anchor, offsets):
    plan = build_schedule(modality, anchor)
    days = sorted(anchor + timedelta(days=o) for o in offsets)
    previous = None
    for day in days:
        ranks = [_ORDER[s.state] for s in visit_states(plan, [], day)]
        if previous is not None:
            assert all(a >= b for a, b in zip(ranks, previous, strict=True))
        previous = ranks
        # the work list only holds visits that are open in that week
        monday, sunday = week_bounds(day)
        for row in work_list(visit_states(plan, [], day), day):
            assert row.visit.window_start <= sunday and row.visit.missed_after >= monday
            assert row.state in (VisitState.upcoming, VisitState.due, VisitState.overdue)
    assert [v.target_date for v in plan] == sorted(v.target_date for v in plan)
    assert all(v.window_start <= v.target_date <= v.window_end <= v.missed_after for v in plan)


def test_schedule_for_plan_uses_the_course():
    from regenguide.domain.plan import PlanDocument
    from regenguide.outcomes.schedule import schedule_for_plan

    plan = PlanDocument.model_validate(
        {
            "indication": "androgenetic alopecia",
            "modality": "prp",
            "course": {"sessions": 4, "interval_weeks": 6},
            "planned_date": "2026-01-05",
        }
    )
    by = _by_code_plan(schedule_for_plan(plan, patient_ref="p9"))
    assert by["s2"].target_date == date(2026, 2, 16) and by["s4"].target_date == date(2026, 5, 11)
    assert by["m3"].target_date == date(2026, 8, 11) and by["s1"].patient_ref == "p9"
    fat = PlanDocument.model_validate({"indication": "midface volume", "modality": "microfat"})
    assert schedule_for_plan(fat, date(2026, 3, 2))[0].target_date == date(2026, 3, 9)
    with pytest.raises(ValueError, match="no planned_date"):
        schedule_for_plan(fat)
