"""Pydantic schemas of the knowledge-base data files (`kb/data/*.yaml`).

Every entry carries `citations` (ids resolved through `regenguide.kb.references` at load) and an
`evidence` label, so each fact shown to a clinician says where it comes from and how far it was checked.
Models are strict (`extra="forbid"`): a misspelt field fails the load instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from regenguide.domain.findings import Indicator
from regenguide.domain.plan import ImagingModality, Modality
from regenguide.kb.references import EvidenceLabel

KB_SCHEMA = "regenguide.kb/1"
CODE = r"^[a-z][a-z0-9_]*$"
Grade = Literal["high", "moderate", "low", "very_low"]
GRADE_ORDER: dict[str, int] = {"very_low": 0, "low": 1, "moderate": 2, "high": 3}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Cited(_Model):
    """Mixin for anything that states a fact: at least one citation id and an evidence label."""

    citations: list[str] = Field(min_length=1)
    evidence: EvidenceLabel
    note: str | None = None


class NumRange(Cited):
    """A sourced range; a missing bound is not checked."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> NumRange:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min {self.min} is above max {self.max}")
        return self


# --- vocabulary ----------------------------------------------------------------------------------------
class Region(Cited):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1)
    area: Literal["face", "scalp", "neck", "body"]
    paired: bool
    high_risk_vascular: bool
    group: str | None = None
    aliases: list[str] = Field(default_factory=list)


class Plane(Cited):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1)
    rank: int = Field(ge=1, description="superficial (1) to deep")
    description: str = ""
    depth_mm: NumRange | None = None
    aliases: list[str] = Field(default_factory=list)


class Indication(Cited):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1)
    aesthetic: bool
    aliases: list[str] = Field(default_factory=list)


class GradeLevel(Cited):
    code: Grade
    symbol: str
    meaning: str


# --- danger zones --------------------------------------------------------------------------------------
class ArteryDepth(Cited):
    artery: str = Field(min_length=1)
    depth_mm: float | None = Field(default=None, gt=0, le=100)


class CriticalBolus(Cited):
    volume_ml: float = Field(gt=0, le=5)
    artery: str = Field(min_length=1)


class DangerZone(Cited):
    region: str = Field(pattern=CODE)
    arteries: list[str] = Field(min_length=1)
    ophthalmic_territory: bool
    depth_data: list[ArteryDepth] = Field(default_factory=list)
    safe_planes: list[str] = Field(min_length=1)
    safe_planes_note: str | None = None
    max_safe_depth_mm: float | None = Field(default=None, gt=0, le=50)
    max_safe_depth_citations: list[str] = Field(default_factory=list)
    max_safe_depth_note: str | None = None
    critical_bolus: CriticalBolus | None = None
    technique: str = Field(min_length=1)

    @model_validator(mode="after")
    def _depth_cited(self) -> DangerZone:
        if self.max_safe_depth_mm is not None and not self.max_safe_depth_citations:
            raise ValueError("max_safe_depth_mm needs max_safe_depth_citations")
        return self


# --- modalities ----------------------------------------------------------------------------------------
class Risk(Cited):
    risk: str = Field(min_length=1)
    rate: str | None = None


class ModalityInfo(Cited):
    code: Modality
    name: str = Field(min_length=1)
    family: Literal["blood_derived", "fat_derived", "cell_therapy", "device", "oncology"]
    mechanism: str = Field(min_length=1)
    indications: list[str] = Field(min_length=1)
    grade: Grade
    grade_upper: Grade | None = None
    grade_basis: str = Field(min_length=1)
    grade_evidence: EvidenceLabel
    injectable: bool
    elective: bool
    durability: str | None = None
    risks: list[Risk] = Field(default_factory=list)

    @model_validator(mode="after")
    def _grade_range(self) -> ModalityInfo:
        if self.grade_upper is not None and GRADE_ORDER[self.grade_upper] < GRADE_ORDER[self.grade]:
            raise ValueError("grade_upper is below grade")
        return self


# --- volumes and protocols -----------------------------------------------------------------------------
class SubunitVolume(Cited):
    subunit: str = Field(pattern=CODE)
    name: str = Field(min_length=1)
    regions: list[str] = Field(min_length=1)
    per_side: bool
    mean_ml: float = Field(gt=0)
    min_ml: float | None = Field(default=None, gt=0)
    max_ml: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SubunitVolume:
        if self.min_ml is not None and self.max_ml is not None and self.min_ml > self.max_ml:
            raise ValueError("min_ml is above max_ml")
        return self


class Protocol(Cited):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.]*$")
    modality: Modality
    indication: str = Field(pattern=CODE)
    summary: str = Field(min_length=1)
    course_expected: bool = Field(default=True, description="report a plan without `course` (info)")
    sessions: NumRange | None = None
    interval_weeks: NumRange | None = None
    session_volume_ml: NumRange | None = None
    needle_depth_mm: dict[str, NumRange] = Field(default_factory=dict)
    expected_advice: list[str] = Field(default_factory=list)
    suggested_combinations: list[str] = Field(default_factory=list)


# --- contraindications and medications -----------------------------------------------------------------
class LabBelow(_Model):
    field: Literal["platelets_per_uL", "hemoglobin_g_dL"]
    value: float = Field(gt=0)


class Trigger(_Model):
    conditions_any: list[str] = Field(default_factory=list)
    medication_classes_any: list[str] = Field(default_factory=list)
    lab_below: LabBelow | None = None
    nsaid_within_hours: float | None = Field(default=None, gt=0)
    pregnant: Literal[True] | None = None
    smoker: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        kinds = [
            bool(self.conditions_any),
            bool(self.medication_classes_any),
            self.lab_below is not None,
            self.nsaid_within_hours is not None,
            self.pregnant is not None,
            self.smoker is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                "a trigger needs exactly one of conditions_any, medication_classes_any, "
                "lab_below, nsaid_within_hours, pregnant, smoker"
            )
        return self


class Contraindication(Cited):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.]*$")
    name: str = Field(min_length=1)
    kind: Literal["absolute", "relative", "exclusion"]
    severity: Indicator
    modalities: list[str] = Field(min_length=1, description="modality codes, or 'elective'")
    trigger: Trigger

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: list[str]) -> list[str]:
        valid = {m.value for m in Modality} | {"elective"}
        bad = [m for m in value if m not in valid]
        if bad:
            raise ValueError(f"unknown modality code(s) {bad}; valid: {sorted(valid)}")
        return value


class MedicationClass(Cited):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1)
    members: list[str] = Field(min_length=1)


# --- imaging and rules ---------------------------------------------------------------------------------
class ImagingGuidance(Cited):
    modality: ImagingModality
    first_line: bool
    ionizing: bool
    role: str = Field(min_length=1)
    use_when: str = Field(min_length=1)
    limitations: str = Field(min_length=1)


class RuleSuggestion(_Model):
    label: str = Field(min_length=1)
    changes: dict[str, Any] = Field(default_factory=dict)


Severity = Indicator | Literal["off"]


class RuleSpec(Cited):
    id: str = Field(pattern=r"^[a-z][a-z0-9_.]*$")
    title: str = Field(min_length=1, max_length=120)
    severity: Indicator
    severity_by_modality: dict[Modality, Severity] = Field(default_factory=dict)
    description: str = ""
    params: dict[str, float | int | str | list[str]] = Field(default_factory=dict)
    suggestions: list[RuleSuggestion] = Field(default_factory=list)

    @field_validator("severity_by_modality", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False; accept it as the documented "off".
        if isinstance(value, dict):
            return {k: ("off" if v is False else v) for k, v in value.items()}
        return value

    def severity_for(self, modality: str) -> Indicator | None:
        """Indicator for this modality, or None when the rule is off for it."""
        sev = self.severity_by_modality.get(modality, self.severity)  # type: ignore[call-overload]
        return None if sev == "off" else Indicator(sev)


class KBFile(_Model):
    """Envelope of every top-level knowledge-base file."""

    schema_: Literal["regenguide.kb/1"] = Field(alias="schema")
    topic: str = Field(pattern=CODE)
    version: str = Field(min_length=1)
    entries: list[dict[str, Any]] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


TOPIC_MODELS: dict[str, type[Cited]] = {
    "regions": Region,
    "planes": Plane,
    "indications": Indication,
    "grade": GradeLevel,
    "danger_zones": DangerZone,
    "modalities": ModalityInfo,
    "volumes": SubunitVolume,
    "protocols": Protocol,
    "contraindications": Contraindication,
    "medications": MedicationClass,
    "imaging": ImagingGuidance,
    "rules": RuleSpec,
}
