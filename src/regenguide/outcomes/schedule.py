"""Follow-up schedules: templates per modality (YAML), planned visits with windows, visit states over
time, the patient-level lost-to-follow-up rule and the weekly work list.

Pure functions on plain dates and pydantic models; no database, API or CLI imports.

States of a planned visit on a given day (`today`):

* ``upcoming`` - today is before the window opens;
* ``due`` - today is inside the window ``[window_start, window_end]``;
* ``overdue`` - the window has closed but the grace period has not (the visit is late but still worth
  doing; a visit done now is recorded as *late*);
* ``missed`` - the grace period has passed without the visit;
* ``completed`` - a completed visit was matched to it, with its timing (early, on time, late).

Windows and grace periods come from the template file; where no source gives them they are expert
opinion and say so (`window_evidence`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import yaml
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regenguide.domain.plan import Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve

EXPERT_OPINION = "regenguide-outcomes-expert-opinion"


# --- template file schema ----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Offset(_Strict):
    days: int = Field(default=0, ge=0, le=36500)
    weeks: int = Field(default=0, ge=0, le=5200)
    months: int = Field(default=0, ge=0, le=1200)

    @model_validator(mode="after")
    def _positive(self) -> Offset:
        if not (self.days or self.weeks or self.months):
            raise ValueError("offset must be positive (give days, weeks or months)")
        return self

    def add_to(self, anchor: date, times: int = 1) -> date:
        # relativedelta clamps month ends (31 Jan + 1 month = 28/29 Feb), which is what clinics expect.
        return anchor + relativedelta(months=self.months * times, weeks=self.weeks * times, days=self.days * times)

    def approx_days(self) -> float:
        return self.days + 7 * self.weeks + 30.4375 * self.months


class Window(_Strict):
    before_days: int = Field(ge=0, le=365)
    after_days: int = Field(ge=0, le=365)
    grace_days: int = Field(default=0, ge=0, le=730)
    citations: list[str] = Field(default_factory=lambda: [EXPERT_OPINION], min_length=1)
    evidence: EvidenceLabel = EvidenceLabel.expert_opinion


class VisitTemplate(_Strict):
    code: str = Field(min_length=1, max_length=20)
    label: str = Field(min_length=1)
    offset: Offset
    relative_to: str = Field(default="anchor", pattern="^(anchor|last_session)$")
    window: Window
    repeat_every: Offset | None = None
    repeat_until: Offset | None = None
    citations: list[str] | None = None
    evidence: EvidenceLabel | None = None

    @model_validator(mode="after")
    def _repeat(self) -> VisitTemplate:
        if (self.repeat_every is None) != (self.repeat_until is None):
            raise ValueError(f"visit {self.code!r}: give both repeat_every and repeat_until, or neither")
        if self.repeat_every is not None and "{n}" not in self.code:
            raise ValueError(f"visit {self.code!r}: a repeating visit needs '{{n}}' in its code")
        return self


class SessionSeries(_Strict):
    default_count: int = Field(ge=1, le=100)
    interval: Offset
    window: Window
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str = ""


class LostToFollowUpRule(_Strict):
    """Patient-level rule; see the module docstring and docs/outcomes.md."""

    consecutive_missed: int = Field(ge=1, le=50)
    no_contact_months: int = Field(ge=1, le=240)
    citations: list[str] = Field(default_factory=lambda: [EXPERT_OPINION], min_length=1)
    evidence: EvidenceLabel = EvidenceLabel.expert_opinion


class _RuleOverride(_Strict):
    consecutive_missed: int | None = Field(default=None, ge=1, le=50)
    no_contact_months: int | None = Field(default=None, ge=1, le=240)


class ScheduleTemplate(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    label: str
    modalities: list[Modality] = Field(min_length=1)
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str = ""
    sessions: SessionSeries | None = None
    visits: list[VisitTemplate] = Field(min_length=1)
    lost_to_follow_up: _RuleOverride | None = None


class ScheduleFile(_Strict):
    lost_to_follow_up: LostToFollowUpRule
    templates: list[ScheduleTemplate] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ScheduleFile:
        seen: dict[Modality, str] = {}
        ids: set[str] = set()
        for tpl in self.templates:
            if tpl.id in ids:
                raise ValueError(f"duplicate template id {tpl.id!r}")
            ids.add(tpl.id)
            for modality in tpl.modalities:
                if modality in seen:
                    raise ValueError(f"modality {modality.value!r} is in templates {seen[modality]!r} and {tpl.id!r}")
                seen[modality] = tpl.id
            if tpl.sessions is None and any(v.relative_to == "last_session" for v in tpl.visits):
                raise ValueError(f"template {tpl.id!r}: relative_to last_session needs a sessions block")
        return self


def parse_schedule_file(data: object, where: str = "schedules.yaml") -> ScheduleFile:
    """Validate a parsed schedule file and check that every citation resolves."""
    try:
        parsed = ScheduleFile.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    resolve(parsed.lost_to_follow_up.citations, where)
    for tpl in parsed.templates:
        resolve(tpl.citations, f"{where}:{tpl.id}")
        if tpl.sessions:
            resolve(tpl.sessions.citations, f"{where}:{tpl.id}.sessions")
            resolve(tpl.sessions.window.citations, f"{where}:{tpl.id}.sessions.window")
        for visit in tpl.visits:
            resolve(visit.citations or [], f"{where}:{tpl.id}.{visit.code}")
            resolve(visit.window.citations, f"{where}:{tpl.id}.{visit.code}.window")
    return parsed


@cache
def load_schedule_file() -> ScheduleFile:
    text = (resources.files("regenguide.kb") / "data" / "outcomes" / "schedules.yaml").read_text(encoding="utf-8")
    return parse_schedule_file(yaml.safe_load(text))


def schedule_templates() -> list[ScheduleTemplate]:
    return list(load_schedule_file().templates)


def template_for(modality: Modality | str) -> ScheduleTemplate:
    mod = _modality(modality)
    for tpl in load_schedule_file().templates:
        if mod in tpl.modalities:
            return tpl
    raise ValueError(f"no follow-up template for modality {mod.value!r}")


def lost_to_follow_up_rule(template_id: str | None = None) -> LostToFollowUpRule:
    """The rule for a template (the file-wide rule with the template's overrides applied)."""
    file = load_schedule_file()
    rule = file.lost_to_follow_up
    if template_id is None:
        return rule
    for tpl in file.templates:
        if tpl.id == template_id and tpl.lost_to_follow_up is not None:
            changes = tpl.lost_to_follow_up.model_dump(exclude_none=True)
            return rule.model_copy(update=changes)
    return rule


def _modality(value: Modality | str) -> Modality:
    try:
        return Modality(value)
    except ValueError:
        valid = ", ".join(m.value for m in Modality)
        raise ValueError(f"unknown modality {value!r}; valid: {valid}") from None


# --- planned visits and states -----------------------------------------------------------------


class VisitKind(StrEnum):
    session = "session"
    follow_up = "follow_up"


class PlannedVisit(_Strict):
    patient_ref: str | None = None
    template: str
    modality: Modality
    anchor_date: date
    code: str
    label: str
    kind: VisitKind
    sequence: int = Field(ge=0)
    target_date: date
    window_start: date
    window_end: date
    missed_after: date = Field(description="last day the visit counts as overdue rather than missed")
    citations: list[str]
    evidence: EvidenceLabel
    window_citations: list[str]
    window_evidence: EvidenceLabel


class VisitState(StrEnum):
    upcoming = "upcoming"
    due = "due"
    overdue = "overdue"
    completed = "completed"
    missed = "missed"


class Timing(StrEnum):
    early = "early"
    on_time = "on_time"
    late = "late"


class CompletedVisit(_Strict):
    """A visit that took place (with the code of the planned visit when known), or any other contact
    with the patient (``kind="contact"``: phone call, questionnaire returned) that counts against the
    no-contact rule but completes no visit."""

    on: date
    visit_code: str | None = None
    patient_ref: str | None = None
    kind: str = Field(default="visit", pattern="^(visit|contact)$")


class VisitStatus(_Strict):
    visit: PlannedVisit
    state: VisitState
    completed_on: date | None = None
    timing: Timing | None = None
    days_from_target: int | None = None


def _window(target: date, window: Window) -> tuple[date, date, date]:
    start = target - timedelta(days=window.before_days)
    end = target + timedelta(days=window.after_days)
    return start, end, end + timedelta(days=window.grace_days)


def build_schedule(
    modality: Modality | str,
    anchor_date: date,
    sessions: int | Sequence[date] | None = None,
    *,
    patient_ref: str | None = None,
) -> list[PlannedVisit]:
    """Planned visits for one treatment, sorted by target date.

    `anchor_date` is the procedure (or infusion, or first session) date. `sessions` applies to
    series modalities (PRP, microneedling): an int number of sessions spaced at the template
    interval from the anchor, or the list of actual/planned session dates; None uses the template's
    default count. Follow-up visits `relative_to: last_session` count from the last session.
    """
    tpl = template_for(modality)
    mod = _modality(modality)
    out: list[dict[str, Any]] = []

    def add(
        code: str, label: str, kind: VisitKind, target: date, window: Window, cites: list[str], evidence: EvidenceLabel
    ) -> None:
        start, end, missed_after = _window(target, window)
        out.append(
            {
                "patient_ref": patient_ref,
                "template": tpl.id,
                "modality": mod,
                "anchor_date": anchor_date,
                "code": code,
                "label": label,
                "kind": kind,
                "target_date": target,
                "window_start": start,
                "window_end": end,
                "missed_after": missed_after,
                "citations": cites,
                "evidence": evidence,
                "window_citations": list(window.citations),
                "window_evidence": window.evidence,
            }
        )

    last_session = anchor_date
    if tpl.sessions is not None:
        series = tpl.sessions
        if sessions is None:
            sessions = series.default_count
        if isinstance(sessions, int):
            if not 1 <= sessions <= 100:
                raise ValueError(f"sessions must be between 1 and 100, got {sessions}")
            dates = [anchor_date if i == 0 else series.interval.add_to(anchor_date, i) for i in range(sessions)]
        else:
            dates = sorted(sessions)
            if not dates:
                raise ValueError("sessions: give at least one session date")
            if dates[0] < anchor_date:
                raise ValueError(f"session on {dates[0]} is before the anchor date {anchor_date}")
        for i, when in enumerate(dates, start=1):
            add(
                f"s{i}", f"Session {i}", VisitKind.session, when, series.window, list(series.citations), series.evidence
            )
        last_session = dates[-1]
    elif sessions is not None:
        raise ValueError(f"modality {mod.value!r} has no session series; do not pass sessions")

    for visit in tpl.visits:
        base = last_session if visit.relative_to == "last_session" else anchor_date
        cites = list(visit.citations or tpl.citations)
        evidence = visit.evidence or tpl.evidence
        if visit.repeat_every is None:
            add(visit.code, visit.label, VisitKind.follow_up, visit.offset.add_to(base), visit.window, cites, evidence)
            continue
        until = visit.repeat_until.add_to(base) if visit.repeat_until else base
        n = 1
        target = visit.offset.add_to(base)
        while target <= until:
            add(
                visit.code.replace("{n}", str(n)),
                visit.label.replace("{n}", str(n)),
                VisitKind.follow_up,
                target,
                visit.window,
                cites,
                evidence,
            )
            # Each repeat is counted from the base date in one step, so month-end clamping never drifts
            # (29 Feb + 4 years stays 29 Feb).
            step = visit.repeat_every
            target = base + relativedelta(
                months=visit.offset.months + n * step.months,
                weeks=visit.offset.weeks + n * step.weeks,
                days=visit.offset.days + n * step.days,
            )
            n += 1
    out.sort(key=lambda v: (v["target_date"], v["code"]))
    return [PlannedVisit(sequence=i, **fields) for i, fields in enumerate(out)]


def schedule_for_plan(
    plan: PlanDocument, anchor_date: date | None = None, *, patient_ref: str | None = None
) -> list[PlannedVisit]:
    """Schedule for a signed plan document: anchored on `anchor_date` (else the plan's
    `planned_date`); for series modalities the plan's course (sessions, interval_weeks) sets the
    session dates. Other modalities get one schedule per procedure (the course is not used)."""
    anchor = anchor_date or (date.fromisoformat(plan.planned_date) if plan.planned_date else None)
    if anchor is None:
        raise ValueError("give anchor_date: the plan has no planned_date")
    tpl = template_for(plan.modality)
    sessions: list[date] | None = None
    if tpl.sessions is not None and plan.course is not None:
        step = timedelta(days=round(7 * plan.course.interval_weeks))
        sessions = [anchor + i * step for i in range(plan.course.sessions)]
    return build_schedule(plan.modality, anchor, sessions, patient_ref=patient_ref)


def _state_on(visit: PlannedVisit, today: date) -> VisitState:
    if today < visit.window_start:
        return VisitState.upcoming
    if today <= visit.window_end:
        return VisitState.due
    if today <= visit.missed_after:
        return VisitState.overdue
    return VisitState.missed


def _timing(visit: PlannedVisit, on: date) -> Timing:
    if on < visit.window_start:
        return Timing.early
    if on > visit.window_end:
        return Timing.late
    return Timing.on_time


def visit_states(
    planned: Sequence[PlannedVisit], completed_visits: Iterable[CompletedVisit], today: date
) -> list[VisitStatus]:
    """State of every planned visit on `today`.

    Matching: a completed visit with a `visit_code` completes the planned visit with that code (for
    the same patient; completions without a patient_ref apply to any). A completed visit without a
    code completes the open planned visit whose window-plus-grace contains its date (nearest target
    first); if none does, it counts only as a contact. Completions dated after `today` are an error.
    """
    by_patient: dict[str | None, list[CompletedVisit]] = defaultdict(list)
    for done in completed_visits:
        if done.on > today:
            raise ValueError(f"completed visit on {done.on} is after today ({today})")
        if done.kind == "visit":
            by_patient[done.patient_ref].append(done)

    matched: dict[int, CompletedVisit] = {}
    indices_by_patient: dict[str | None, list[int]] = defaultdict(list)
    for i, visit in enumerate(planned):
        indices_by_patient[visit.patient_ref].append(i)

    for patient, indices in indices_by_patient.items():
        candidates = sorted(
            by_patient.get(patient, []) + (by_patient.get(None, []) if patient else []), key=lambda c: c.on
        )
        coded = [c for c in candidates if c.visit_code is not None]
        uncoded = [c for c in candidates if c.visit_code is None]
        code_index = {planned[i].code: i for i in indices}
        for visit_done in coded:
            index = code_index.get(visit_done.visit_code or "")
            if index is None:
                valid = ", ".join(planned[j].code for j in indices)
                raise ValueError(
                    f"completed visit code {visit_done.visit_code!r} is not in the schedule; valid: {valid}"
                )
            if index not in matched:  # the earliest completion of a code counts
                matched[index] = visit_done
        for contact in uncoded:
            open_ = [
                j
                for j in indices
                if j not in matched and planned[j].window_start <= contact.on <= planned[j].missed_after
            ]
            if open_:
                best = min(open_, key=lambda j: (abs((planned[j].target_date - contact.on).days), j))
                matched[best] = contact

    out: list[VisitStatus] = []
    for i, visit in enumerate(planned):
        found = matched.get(i)
        if found is not None:
            out.append(
                VisitStatus(
                    visit=visit,
                    state=VisitState.completed,
                    completed_on=found.on,
                    timing=_timing(visit, found.on),
                    days_from_target=(found.on - visit.target_date).days,
                )
            )
        else:
            out.append(VisitStatus(visit=visit, state=_state_on(visit, today)))
    return out


class FollowUpSummary(_Strict):
    patient_ref: str | None
    lost_to_follow_up: bool
    reasons: list[str]
    consecutive_missed: int
    last_contact: date
    months_since_contact: int
    counts: dict[str, int]
    next_visit: PlannedVisit | None
    rule: LostToFollowUpRule


def _months_between(start: date, end: date) -> int:
    delta = relativedelta(end, start)
    return delta.years * 12 + delta.months


def follow_up_status(
    states: Sequence[VisitStatus],
    completed_visits: Iterable[CompletedVisit],
    today: date,
    rule: LostToFollowUpRule | None = None,
) -> FollowUpSummary:
    """Patient-level summary for one patient's visit states, with the lost-to-follow-up rule
    (template's rule unless `rule` is given). Contacts of any kind count as contact."""
    if not states:
        raise ValueError("no visit states given")
    patients = {s.visit.patient_ref for s in states}
    if len(patients) > 1:
        raise ValueError(f"follow_up_status is per patient; got {len(patients)} patients")
    patient = states[0].visit.patient_ref
    rule = rule or lost_to_follow_up_rule(states[0].visit.template)

    ordered = sorted(states, key=lambda s: (s.visit.target_date, s.visit.sequence))
    resolved = [s for s in ordered if s.state in (VisitState.completed, VisitState.missed)]
    run = 0
    for status in reversed(resolved):
        if status.state is not VisitState.missed:
            break
        run += 1
    contacts = [c.on for c in completed_visits if c.patient_ref in (patient, None) and c.on <= today]
    last_contact = max([states[0].visit.anchor_date, *contacts])
    months = _months_between(last_contact, today)
    any_missed = any(s.state is VisitState.missed for s in states)

    reasons = []
    if run >= rule.consecutive_missed:
        reasons.append(f"{run} consecutive missed visits (rule: {rule.consecutive_missed}, {rule.evidence.value})")
    if any_missed and months >= rule.no_contact_months:
        reasons.append(f"no contact for {months} months (rule: {rule.no_contact_months}, {rule.evidence.value})")
    counts = {state.value: 0 for state in VisitState}
    for status in states:
        counts[status.state.value] += 1
    pending = [s.visit for s in ordered if s.state in (VisitState.due, VisitState.overdue, VisitState.upcoming)]
    return FollowUpSummary(
        patient_ref=patient,
        lost_to_follow_up=bool(reasons),
        reasons=reasons,
        consecutive_missed=run,
        last_contact=last_contact,
        months_since_contact=months,
        counts=counts,
        next_visit=pending[0] if pending else None,
        rule=rule,
    )


def week_bounds(week_of: date) -> tuple[date, date]:
    """Monday and Sunday of the ISO week containing `week_of`."""
    monday = week_of - timedelta(days=week_of.weekday())
    return monday, monday + timedelta(days=6)


def work_list(states: Iterable[VisitStatus], week_of: date) -> list[VisitStatus]:
    """Visits to arrange in the week containing `week_of` (Monday to Sunday): not completed, not
    missed, and whose window-plus-grace overlaps the week. Sorted overdue first, then by target date."""
    monday, sunday = week_bounds(week_of)
    rows = [
        s
        for s in states
        if s.state not in (VisitState.completed, VisitState.missed)
        and s.visit.window_start <= sunday
        and s.visit.missed_after >= monday
    ]
    rank = {VisitState.overdue: 0, VisitState.due: 1, VisitState.upcoming: 2}
    return sorted(rows, key=lambda s: (rank[s.state], s.visit.target_date, s.visit.patient_ref or ""))


__all__ = [
    "CompletedVisit",
    "FollowUpSummary",
    "LostToFollowUpRule",
    "PlannedVisit",
    "ScheduleTemplate",
    "Timing",
    "VisitKind",
    "VisitState",
    "VisitStatus",
    "build_schedule",
    "follow_up_status",
    "load_schedule_file",
    "lost_to_follow_up_rule",
    "parse_schedule_file",
    "schedule_for_plan",
    "schedule_templates",
    "template_for",
    "visit_states",
    "week_bounds",
    "work_list",
]
