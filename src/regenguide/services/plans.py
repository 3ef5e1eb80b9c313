"""Use cases for treatment plans: check (with every finding producer), store, re-check, sign with
reasoned overrides of critical findings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import import_module
from typing import TYPE_CHECKING, Any

from sqlalchemy import ScalarSelect, bindparam, or_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import flag_modified

from regenguide.cds.engine import Override, OverrideError, PlanCheckResult, apply_overrides, check_plan
from regenguide.domain.findings import Finding
from regenguide.domain.plan import Consent, PatientFacts, PlanDocument
from regenguide.store import models as m

if TYPE_CHECKING:
    from regenguide.imaging.vascular import VascularMap


class PlanError(ValueError):
    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


# Finding producers beyond the knowledge-base rules: (module, function) taking the plan document.
# A producer that is not installed is skipped; one that fails is a bug and raises.
PRODUCERS: list[tuple[str, str]] = [
    ("regenguide.simulate.plan", "graft_findings"),
]


def extra_findings(plan: PlanDocument) -> list[Finding]:
    found: list[Finding] = []
    for module_name, function in PRODUCERS:
        try:
            producer: Callable[[PlanDocument], Sequence[Finding]] = getattr(import_module(module_name), function)
        except (ImportError, AttributeError):
            continue
        found.extend(producer(plan))
    return found


def check(plan: PlanDocument, today: date | None = None, maps: Sequence[VascularMap] | None = None) -> PlanCheckResult:
    """The plan check with every producer; `maps` (the patient's vascular maps, when the patient is
    known) adds the ultrasound rules: injections near a mapped artery, regions without a map."""
    found = extra_findings(plan)
    if maps is not None:
        from regenguide.imaging.vascular import vascular_findings

        found.extend(vascular_findings(plan, maps))
    return check_plan(plan, extra_findings=found, today=today)


def patient_maps(db: Session, patient_id: int) -> list[VascularMap]:
    from regenguide.services.imaging import maps_for

    return maps_for(db, patient_id)


# The columns of a consent that the plan check needs (not its text, which can run to pages).
_CONSENT_COLUMNS = (m.Consent.decision, m.Consent.signed_at, m.Consent.expires_on, m.Consent.version)
_CONSENT_STATUS = {"accepted": "signed", "declined": "declined", "withdrawn": "withdrawn"}


def _consent_block(row: Any) -> Consent:
    """The consent block of a row holding `_CONSENT_COLUMNS` (None, or NULLs from an outer join: no consent)."""
    if row is None or row.decision is None:
        return Consent(status="missing")
    return Consent(
        status=_CONSENT_STATUS[row.decision],  # type: ignore[arg-type]
        signed_on=row.signed_at.date().isoformat(),
        expires_on=row.expires_on.isoformat() if row.expires_on else None,
        version=row.version,
    )


def consent_for(db: Session, patient_id: int, plan_id: int | None) -> Consent:
    """The plan document's consent block from the recorded consents (latest decision wins)."""
    stmt = select(*_CONSENT_COLUMNS).where(m.Consent.patient_id == patient_id)
    if plan_id is not None:
        stmt = stmt.where(or_(m.Consent.plan_id == plan_id, m.Consent.plan_id.is_(None)))
    return _consent_block(db.execute(stmt.order_by(m.Consent.signed_at.desc(), m.Consent.id.desc()).limit(1)).first())


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def enrich(db: Session, patient: m.Patient, plan_id: int | None, doc: PlanDocument) -> PlanDocument:
    """Fill what the record knows and the document left out: age, sex, consent status."""
    facts = doc.patient.model_copy(
        update={
            "age": doc.patient.age if doc.patient.age is not None else _age(patient.birth_date, date.today()),
            "sex": doc.patient.sex or patient.sex,
            "fitzpatrick": doc.patient.fitzpatrick or patient.fitzpatrick,
        }
    )
    return doc.model_copy(update={"patient": facts, "consent": consent_for(db, patient.id, plan_id)})


@dataclass(frozen=True)
class PatientContext:
    """What a check of draft orders needs from a stored patient, as plain data (no ORM rows), so that
    it can be read in one short read transaction and the check run after that transaction has ended."""

    patient_id: int
    facts: PatientFacts
    consent: Consent
    maps: list[VascularMap]


def _latest_consent_id() -> ScalarSelect[int]:
    """The id of the patient's latest consent decision (correlated with the outer query's patient)."""
    c = aliased(m.Consent)
    return (select(c.id).where(c.patient_id == m.Patient.id).correlate(m.Patient)
            .order_by(c.signed_at.desc(), c.id.desc()).limit(1).scalar_subquery())


# The patient and the latest consent decision in one round trip (every order-sign call of a stored patient
# reads them), as columns rather than ORM objects.
_PATIENT_AND_CONSENT = (
    select(m.Patient.id, m.Patient.birth_date, m.Patient.sex, *_CONSENT_COLUMNS)
    .select_from(m.Patient)
    .outerjoin(m.Consent, m.Consent.id == _latest_consent_id())
    .where(m.Patient.id == bindparam("patient_id"))
)


def patient_context(db: Session, patient_id: int, on: date | None = None) -> PatientContext | None:
    """The patient's age and sex, consent status and vascular maps; None when there is no such patient.
    Reads only: callers audit the read."""
    row = db.execute(_PATIENT_AND_CONSENT, {"patient_id": patient_id}).first()
    if row is None:
        return None
    facts = PatientFacts(age=_age(row.birth_date, on or date.today()), sex=row.sex)
    return PatientContext(row.id, facts, _consent_block(row), patient_maps(db, row.id))


def check_in_context(plan: PlanDocument, context: PatientContext | None, today: date | None = None) -> PlanCheckResult:
    """Check a plan (e.g. read from draft orders) for a stored patient: the patient's facts fill what the
    document leaves out, the recorded consent replaces the document's, and the vascular maps add their
    rules. Without a context, the check of the document alone. Pure: no database access."""
    if context is None:
        return check(plan, today)
    given = plan.patient.model_dump(exclude_none=True, exclude_defaults=True)
    facts = context.facts.model_copy(update=given) if given else context.facts
    return check(plan.model_copy(update={"patient": facts, "consent": context.consent}), today, context.maps)


def _injections(doc: PlanDocument) -> list[m.PlannedInjection]:
    return [
        m.PlannedInjection(
            seq=i, region=inj.region, side=inj.side.value, plane=inj.plane,
            device=inj.device.value if inj.device else None, gauge=inj.gauge, volume_ml=inj.volume_ml,
            bolus_ml=inj.bolus_ml, needle_depth_mm=inj.needle_depth_mm,
        )
        for i, inj in enumerate(doc.injections)
    ]


def _apply(plan: m.TreatmentPlan, doc: PlanDocument, result: PlanCheckResult) -> None:
    plan.modality = doc.modality.value
    plan.indication = doc.indication
    plan.jurisdiction = doc.jurisdiction
    plan.guidance_imaging = doc.guidance.imaging.value
    plan.doppler = doc.guidance.doppler
    plan.document = doc.to_json_dict()
    plan.latest_check = result.to_json_dict()
    plan.injections = _injections(doc)
    if plan.id is not None:
        flag_modified(plan, "document")  # a revision is a new version even when the document is unchanged


def create(db: Session, patient_id: int, doc: PlanDocument, *, user_id: int, planned_on: date | None = None,
           assessment_id: int | None = None) -> m.TreatmentPlan:
    patient = db.get(m.Patient, patient_id)
    if patient is None:
        raise PlanError(422, "patient_id", f"patient_id: no patient with id {patient_id}")
    plan = m.TreatmentPlan(patient_id=patient_id, status="draft", planned_on=planned_on, created_by=user_id,
                           assessment_id=assessment_id)
    full = enrich(db, patient, None, doc)
    _apply(plan, full, check(full, planned_on, patient_maps(db, patient.id)))
    db.add(plan)
    db.flush()
    return plan


def revise(db: Session, plan: m.TreatmentPlan, doc: PlanDocument) -> m.TreatmentPlan:
    if plan.status != "draft":
        raise PlanError(409, "plan-not-draft", f"plan {plan.id} is {plan.status}; only a draft can be changed")
    patient = db.get(m.Patient, plan.patient_id)
    assert patient is not None
    full = enrich(db, patient, plan.id, doc)
    # Remove the old injections first: the unit of work would insert the new rows before deleting
    # the old ones and trip the (plan_id, seq) uniqueness.
    plan.injections.clear()
    db.flush()
    _apply(plan, full, check(full, plan.planned_on, patient_maps(db, patient.id)))
    db.flush()
    return plan


def recheck(db: Session, plan: m.TreatmentPlan) -> PlanCheckResult:
    patient = db.get(m.Patient, plan.patient_id)
    assert patient is not None
    doc = enrich(db, patient, plan.id, PlanDocument.model_validate(plan.document))
    result = check(doc, plan.planned_on, patient_maps(db, patient.id))
    if plan.status == "draft":
        plan.document = doc.to_json_dict()
        plan.latest_check = result.to_json_dict()
    return result


def sign(db: Session, plan: m.TreatmentPlan, overrides: Sequence[Override], *, user_id: int) -> PlanCheckResult:
    """Sign a draft: re-check against today's record (consent included); every critical finding must be
    overridden with a reason, and the overrides are stored with the signed check."""
    if plan.status != "draft":
        raise PlanError(409, "plan-not-draft", f"plan {plan.id} is already {plan.status}")
    result = recheck(db, plan)
    try:
        result = apply_overrides(result, [o.model_copy(update={"by": str(user_id)}) for o in overrides])
    except OverrideError as exc:
        raise PlanError(422, "override", f"overrides: {exc}") from None
    if not result.signable:
        unresolved = result.unresolved_critical()
        raise PlanError(
            409, "critical-findings",
            f"{len(unresolved)} critical finding(s) must be resolved or overridden with a reason before signing: "
            + "; ".join(f"{f.rule}" + ("" if f.injection_index is None else f" [injection {f.injection_index}]")
                        for f in unresolved),
            unresolved=[f.model_dump(mode="json", exclude_none=True) for f in unresolved],
        )
    for o in result.overrides:
        db.add(m.PlanOverride(plan_id=plan.id, rule=o.rule, injection_index=o.injection_index, reason=o.reason,
                              user_id=user_id))
    plan.status = "signed"
    plan.signed_by = user_id
    plan.signed_at = datetime.now(UTC)
    plan.latest_check = result.to_json_dict()
    db.flush()
    return result
