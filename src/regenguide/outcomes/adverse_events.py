"""Adverse events: the taxonomy (YAML), the `AdverseEventReport` with its validation, seriousness per
ICH E2A (`ich-e2a`), relatedness per WHO-UMC (`who-umc-causality`), severity as CTCAE grade 1-5
(`ctcae-v5`; ASTCT grades for CRS and ICANS, `lee-2019-astct`), and the patient flags a serious event
raises.

Severity and seriousness are different things: a severe (grade 3) headache need not be serious; a
serious event is one meeting an ICH E2A criterion (death, life-threatening, hospitalisation or its
prolongation, persistent or significant disability, congenital anomaly, or medically important).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from fhir.resources.R4B.adverseevent import AdverseEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from regenguide.domain.findings import Indicator
from regenguide.domain.plan import Modality
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, resolve


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnomedCode(_Strict):
    code: str = Field(pattern=r"^\d{6,18}$")
    display: str


class AdverseEventTerm(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    soc: str
    modalities: list[Modality] = Field(min_length=1)
    grading: Literal["ctcae", "astct_crs", "astct_icans"] = "ctcae"
    important_medical_event: bool = False
    snomed: SnomedCode | None = None
    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str | None = None


class _TaxonomyFile(BaseModel):
    model_config = ConfigDict(extra="allow")  # YAML anchors (lists of modalities) live at the top level

    terms: list[AdverseEventTerm] = Field(min_length=1)


def parse_taxonomy(data: object, where: str = "adverse_events.yaml") -> dict[str, AdverseEventTerm]:
    try:
        parsed = _TaxonomyFile.model_validate(data)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{where}: {exc}") from exc
    out: dict[str, AdverseEventTerm] = {}
    for term in parsed.terms:
        if term.id in out or term.id == OTHER:
            raise KnowledgeBaseError(f"{where}: duplicate or reserved term id {term.id!r}")
        resolve(term.citations, f"{where}:{term.id}")
        out[term.id] = term
    return out


OTHER = "other"


@cache
def adverse_event_terms() -> dict[str, AdverseEventTerm]:
    text = (resources.files("regenguide.kb") / "data" / "outcomes" / "adverse_events.yaml").read_text(encoding="utf-8")
    return parse_taxonomy(yaml.safe_load(text))


def terms_for(modality: Modality | str) -> list[AdverseEventTerm]:
    mod = Modality(modality)
    return [t for t in adverse_event_terms().values() if mod in t.modalities]


class Seriousness(StrEnum):
    """ICH E2A seriousness criteria (`ich-e2a`)."""

    death = "death"
    life_threatening = "life_threatening"
    hospitalisation = "hospitalisation"  # inpatient hospitalisation or prolongation of existing
    disability = "disability"  # persistent or significant disability/incapacity
    congenital_anomaly = "congenital_anomaly"
    medically_important = "medically_important"


class Relatedness(StrEnum):
    """WHO-UMC causality categories (`who-umc-causality`)."""

    certain = "certain"
    probable = "probable"  # probable/likely
    possible = "possible"
    unlikely = "unlikely"
    conditional = "conditional"  # conditional/unclassified
    unassessable = "unassessable"  # unassessable/unclassifiable


class Outcome(StrEnum):
    recovered = "recovered"
    recovering = "recovering"
    not_recovered = "not_recovered"
    recovered_with_sequelae = "recovered_with_sequelae"
    fatal = "fatal"
    unknown = "unknown"


_RESOLVED = {Outcome.recovered, Outcome.recovered_with_sequelae}


class SuspectProduct(_Strict):
    """The product suspected of causing the event: its kind, its identifier (ISBT 128 DIN or local id
    of the BiologicallyDerivedProduct) and the lot of any commercial device or reagent."""

    product_type: str = Field(min_length=1, description="e.g. PRP, microfat, SVF, CAR-T, or a device name")
    product_id: str | None = None
    lot: str | None = None


class AdverseEventReport(_Strict):
    id: str | None = None
    patient_ref: str = Field(min_length=1)
    term: str = Field(min_length=1, description="taxonomy id, or 'other' with a verbatim description")
    verbatim: str | None = None
    modality: Modality | None = None
    procedure_date: date | None = None
    onset_date: date
    resolution_date: date | None = None
    severity_grade: int = Field(ge=1, le=5, description="CTCAE v5.0 grade (ASTCT grade for CRS and ICANS)")
    seriousness: list[Seriousness] = Field(default_factory=list)
    relatedness: Relatedness
    outcome: Outcome
    suspect_products: list[SuspectProduct] = Field(default_factory=list)
    region: str | None = None
    action_taken: str | None = None
    reporter: Literal["clinician", "patient"] = "clinician"
    narrative: str | None = None

    @field_validator("term")
    @classmethod
    def _known_term(cls, value: str) -> str:
        value = value.strip()
        if value != OTHER and value not in adverse_event_terms():
            valid = ", ".join(adverse_event_terms())
            raise ValueError(f"unknown adverse-event term {value!r}; use one of: {valid}; or 'other' with verbatim")
        return value

    @field_validator("seriousness")
    @classmethod
    def _unique(cls, value: list[Seriousness]) -> list[Seriousness]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> AdverseEventReport:
        if self.term == OTHER and not (self.verbatim and self.verbatim.strip()):
            raise ValueError("term 'other' needs a verbatim description")
        if self.procedure_date and self.onset_date < self.procedure_date:
            raise ValueError(f"onset_date {self.onset_date} is before the procedure ({self.procedure_date})")
        if self.resolution_date is not None:
            if self.resolution_date < self.onset_date:
                raise ValueError(f"resolution_date {self.resolution_date} is before onset ({self.onset_date})")
            if self.outcome not in _RESOLVED:
                raise ValueError(f"resolution_date given but outcome is {self.outcome.value!r}")
        if self.severity_grade == 5 and self.outcome is not Outcome.fatal:
            raise ValueError("severity grade 5 means death related to the event: outcome must be 'fatal'")
        if self.outcome is Outcome.fatal:
            if self.severity_grade != 5:
                raise ValueError("outcome 'fatal' needs severity grade 5")
            if Seriousness.death not in self.seriousness:
                raise ValueError("outcome 'fatal' needs the seriousness criterion 'death'")
        return self

    @property
    def taxonomy_term(self) -> AdverseEventTerm | None:
        return adverse_event_terms().get(self.term)

    @property
    def label(self) -> str:
        term = self.taxonomy_term
        return term.label if term else f"Other: {self.verbatim}"

    @property
    def unexpected_for_modality(self) -> bool:
        """True when the term is not among those expected for the report's modality (still reportable)."""
        term = self.taxonomy_term
        return bool(self.modality and (term is None or self.modality not in term.modalities))

    def serious_reasons(self) -> list[str]:
        reasons = [c.value for c in self.seriousness]
        if self.severity_grade == 5 and "death" not in reasons:
            reasons.append("death")
        term = self.taxonomy_term
        if term and term.important_medical_event and "medically_important" not in reasons:
            reasons.append("medically_important (taxonomy default)")
        return reasons

    def is_serious(self) -> bool:
        """ICH E2A: serious when any criterion is met; terms the taxonomy marks as important medical
        events (vision loss, stroke, vascular occlusion ...) are serious by default."""
        return bool(self.serious_reasons())


class Flag(BaseModel):
    patient_ref: str
    kind: Literal["serious_adverse_event", "unexpected_adverse_event"]
    indicator: Indicator
    summary: str = Field(max_length=139)
    event_id: str | None
    onset_date: date
    reasons: list[str]
    citations: list[str]


def patient_flags(events: Iterable[AdverseEventReport]) -> list[Flag]:
    """Flags to raise on patients: a critical flag for every serious event, and a warning when an
    event is not expected for the modality (check the coding). Sorted by patient then onset."""
    flags: list[Flag] = []
    for event in events:
        if event.is_serious():
            reasons = event.serious_reasons()
            summary = f"Serious adverse event: {event.label} (grade {event.severity_grade}, {reasons[0]})"
            flags.append(
                Flag(
                    patient_ref=event.patient_ref,
                    kind="serious_adverse_event",
                    indicator=Indicator.critical,
                    summary=summary[:139],
                    event_id=event.id,
                    onset_date=event.onset_date,
                    reasons=reasons,
                    citations=["ich-e2a"],
                )
            )
        if event.unexpected_for_modality:
            assert event.modality is not None
            summary = f"{event.label} is not expected after {event.modality.value}: check term and modality"
            flags.append(
                Flag(
                    patient_ref=event.patient_ref,
                    kind="unexpected_adverse_event",
                    indicator=Indicator.warning,
                    summary=summary[:139],
                    event_id=event.id,
                    onset_date=event.onset_date,
                    reasons=["unexpected for modality"],
                    citations=["regenguide-outcomes-expert-opinion"],
                )
            )
    return sorted(flags, key=lambda f: (f.patient_ref, f.onset_date, f.kind))


# --- FHIR R4 AdverseEvent ------------------------------------------------------------------------

_FHIR_OUTCOME = {
    Outcome.recovered: "resolved",
    Outcome.recovering: "recovering",
    Outcome.not_recovered: "ongoing",
    Outcome.recovered_with_sequelae: "resolvedWithSequelae",
    Outcome.fatal: "fatal",
    Outcome.unknown: "unknown",
}
_FHIR_CAUSALITY = "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess"
# WHO-UMC categories as coded in that R4 code system (check against a terminology server).
_FHIR_CAUSALITY_CODE = {
    Relatedness.certain: "Certain",
    Relatedness.probable: "Probably-Likely",
    Relatedness.possible: "Possible",
    Relatedness.unlikely: "Unlikely",
    Relatedness.conditional: "Conditional-Classified",
    Relatedness.unassessable: "Unassessable-Unclassifiable",
}


def _fhir_severity(grade: int) -> str:
    # R4 has only mild | moderate | severe; CTCAE 1 -> mild, 2 -> moderate, 3-5 -> severe is a
    # RegenGuide mapping (expert opinion); the CTCAE grade itself travels in an extension.
    return {1: "mild", 2: "moderate"}.get(grade, "severe")


def to_fhir_adverse_event(report: AdverseEventReport) -> AdverseEvent:
    """The report as a FHIR R4 AdverseEvent (fhir.resources.R4B)."""
    term = report.taxonomy_term
    codings: list[dict[str, Any]] = []
    if term and term.snomed:
        codings.append({"system": "http://snomed.info/sct", "code": term.snomed.code, "display": term.snomed.display})
    codings.append(
        {"system": "http://regenguide.org/fhir/CodeSystem/adverse-event", "code": report.term, "display": report.label}
    )
    data: dict[str, Any] = {
        "resourceType": "AdverseEvent",
        "actuality": "actual",
        "subject": {"reference": report.patient_ref},
        "event": {"coding": codings, "text": report.verbatim or report.label},
        "date": report.onset_date.isoformat(),
        "seriousness": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                    "code": "serious" if report.is_serious() else "non-serious",
                }
            ]
        },
        "severity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
                    "code": _fhir_severity(report.severity_grade),
                }
            ]
        },
        "outcome": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                    "code": _FHIR_OUTCOME[report.outcome],
                }
            ]
        },
        "extension": [
            {"url": "http://regenguide.org/fhir/StructureDefinition/ctcae-grade", "valueInteger": report.severity_grade}
        ],
    }
    if report.id:
        data["id"] = report.id
    if report.suspect_products:
        data["suspectEntity"] = [
            {
                "instance": {
                    "display": " ".join(x for x in (p.product_type, p.product_id, p.lot and f"lot {p.lot}") if x),
                    **({"identifier": {"value": p.product_id}} if p.product_id else {}),
                },
                "causality": [
                    {
                        "assessment": {
                            "coding": [{"system": _FHIR_CAUSALITY, "code": _FHIR_CAUSALITY_CODE[report.relatedness]}],
                            "text": f"WHO-UMC {report.relatedness.value}",
                        }
                    }
                ],
            }
            for p in report.suspect_products
        ]
    return AdverseEvent.model_validate(data)


__all__ = [
    "AdverseEventReport",
    "AdverseEventTerm",
    "Flag",
    "Outcome",
    "Relatedness",
    "Seriousness",
    "SuspectProduct",
    "adverse_event_terms",
    "parse_taxonomy",
    "patient_flags",
    "terms_for",
    "to_fhir_adverse_event",
]
