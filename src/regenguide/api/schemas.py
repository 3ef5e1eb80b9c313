"""Request and response bodies of the resource API (pydantic)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from regenguide.domain.plan import Device, ImagingModality, Modality, Side
from regenguide.store.models import (
    AE_OUTCOMES,
    AE_RELATEDNESS,
    CONSENT_DECISIONS,
    SEXES,
    SIGNER_ROLES,
    VISIT_STATUSES,
)

Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _not_future(value: date | None) -> date | None:
    if value is not None and value > date.today():
        raise ValueError("must not be in the future")
    return value


# --- sites and users ----------------------------------------------------------------------------
class SiteCreate(In):
    name: Text200
    jurisdiction: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2 code, or EU"
    )


class SiteUpdate(In):
    name: Text200 | None = None
    jurisdiction: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class SiteRead(Out):
    id: int
    name: str
    jurisdiction: str


class UserCreate(In):
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]{2,64}$")]
    full_name: str = ""
    role: Literal["admin", "clinician", "nurse", "lab", "researcher"]
    password: str = Field(min_length=10, max_length=200)
    site_id: int | None = None


class UserRead(Out):
    id: int
    username: str
    full_name: str
    role: str
    site_id: int | None
    active: bool


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    role: str
    expires_in: int


# --- patients -----------------------------------------------------------------------------------
class PatientCreate(In):
    site_id: int
    mrn: Code = Field(description="medical record number, unique per site")
    given_name: Text200
    family_name: Text200
    birth_date: date
    sex: Literal[SEXES]  # type: ignore[valid-type]
    fitzpatrick: int | None = Field(default=None, ge=1, le=6)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    research_consent: bool = False

    _birth = field_validator("birth_date")(_not_future)


class PatientUpdate(In):
    mrn: Code | None = None
    given_name: Text200 | None = None
    family_name: Text200 | None = None
    birth_date: date | None = None
    sex: Literal[SEXES] | None = None  # type: ignore[valid-type]
    fitzpatrick: int | None = Field(default=None, ge=1, le=6)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    research_consent: bool | None = None

    _birth = field_validator("birth_date")(_not_future)


class PatientRead(Out):
    id: int
    site_id: int
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    fitzpatrick: int | None
    phone: str | None
    email: str | None
    research_consent: bool
    serious_event_flag: bool
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PatientResearchRead(Out):
    """What a researcher may see of a patient: no names, birth dates, record numbers or contact."""

    id: int
    site_id: int
    sex: str
    fitzpatrick: int | None
    serious_event_flag: bool
    version: int


# --- assessments --------------------------------------------------------------------------------
class AssessmentCreate(In):
    patient_id: int
    assessed_on: date
    indication: Code
    severity_scale: Code | None = None
    severity_score: float | None = None
    contraindications: list[Code] = Field(default_factory=list)
    imaging_findings: str | None = None
    clinician_id: int | None = None
    notes: str | None = None

    _d = field_validator("assessed_on")(_not_future)


class AssessmentUpdate(In):
    assessed_on: date | None = None
    indication: Code | None = None
    severity_scale: Code | None = None
    severity_score: float | None = None
    contraindications: list[Code] | None = None
    imaging_findings: str | None = None
    notes: str | None = None

    _d = field_validator("assessed_on")(_not_future)


class AssessmentRead(Out):
    id: int
    patient_id: int
    assessed_on: date
    indication: str
    severity_scale: str | None
    severity_score: float | None
    contraindications: list[Any]
    imaging_findings: str | None
    clinician_id: int | None
    notes: str | None
    version: int


# --- consents -----------------------------------------------------------------------------------
class ConsentCreate(In):
    patient_id: int
    plan_id: int | None = None
    version: Code
    text: str = Field(min_length=20)
    decision: Literal[CONSENT_DECISIONS]  # type: ignore[valid-type]
    signer_name: Text200
    signer_role: Literal[SIGNER_ROLES] = "patient"  # type: ignore[valid-type]
    signed_at: datetime
    expires_on: date | None = None
    research_use: bool = False

    @model_validator(mode="after")
    def _dates(self) -> ConsentCreate:
        if self.expires_on is not None and self.expires_on < self.signed_at.date():
            raise ValueError("expires_on must not be before signed_at")
        return self


class ConsentRead(Out):
    id: int
    patient_id: int
    plan_id: int | None
    version: str
    text: str
    text_digest: str
    decision: str
    signer_name: str
    signer_role: str
    signed_at: datetime
    expires_on: date | None
    research_use: bool
    recorded_by: int | None


# --- procedures ---------------------------------------------------------------------------------
class InjectionIn(In):
    region: Code
    side: Side = Side.midline
    plane: Code | None = None
    device: Device | None = None
    gauge: int | None = Field(default=None, ge=10, le=34)
    volume_ml: float | None = Field(default=None, ge=0, le=1000)
    bolus_ml: float | None = Field(default=None, gt=0, le=1000)
    product_id: int | None = None


class InjectionOut(Out):
    seq: int
    region: str
    side: str
    plane: str | None
    device: str | None
    gauge: int | None
    volume_ml: float | None
    bolus_ml: float | None
    product_id: int | None = None


class ProcedureCreate(In):
    patient_id: int
    plan_id: int | None = None
    modality: Modality
    performed_at: datetime
    performer_id: int | None = None
    guidance_imaging: ImagingModality = ImagingModality.none
    doppler: bool = False
    session_number: int = Field(default=1, ge=1, le=100)
    processing_method: Code | None = None
    notes: str | None = None
    injections: list[InjectionIn] = Field(default_factory=list, max_length=500)


class ProcedureUpdate(In):
    performed_at: datetime | None = None
    guidance_imaging: ImagingModality | None = None
    doppler: bool | None = None
    processing_method: Code | None = None
    notes: str | None = None


class ProcedureRead(Out):
    id: int
    patient_id: int
    plan_id: int | None
    modality: str
    performed_at: datetime
    performer_id: int | None
    guidance_imaging: str
    doppler: bool
    session_number: int
    processing_method: str | None
    notes: str | None
    injections: list[InjectionOut]
    version: int


# --- follow-up visits ---------------------------------------------------------------------------
class VisitCreate(In):
    patient_id: int
    procedure_id: int | None = None
    label: Code
    due_on: date
    window_start: date
    window_end: date
    status: Literal[VISIT_STATUSES] = "scheduled"  # type: ignore[valid-type]
    completed_on: date | None = None

    @model_validator(mode="after")
    def _window(self) -> VisitCreate:
        if not (self.window_start <= self.due_on <= self.window_end):
            raise ValueError("window_start <= due_on <= window_end must hold")
        if (self.status == "completed") != (self.completed_on is not None):
            raise ValueError("completed_on is required exactly when status is 'completed'")
        return self


class VisitUpdate(In):
    status: Literal[VISIT_STATUSES] | None = None  # type: ignore[valid-type]
    completed_on: date | None = None
    due_on: date | None = None
    window_start: date | None = None
    window_end: date | None = None


class VisitRead(Out):
    id: int
    patient_id: int
    procedure_id: int | None
    label: str
    due_on: date
    window_start: date
    window_end: date
    status: str
    completed_on: date | None
    version: int


# --- observations -------------------------------------------------------------------------------
class ObservationCreate(In):
    patient_id: int
    code: Code = Field(description="instrument or measurement code, e.g. gais_investigator, dermal_thickness")
    value: float | None = None
    value_text: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)
    observed_at: datetime
    assessment_id: int | None = None
    visit_id: int | None = None
    procedure_id: int | None = None
    imaging_study_id: int | None = None

    @model_validator(mode="after")
    def _has_value(self) -> ObservationCreate:
        if self.value is None and self.value_text is None:
            raise ValueError("value or value_text is required")
        return self


class ObservationUpdate(In):
    value: float | None = None
    value_text: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)


class ObservationRead(Out):
    id: int
    patient_id: int
    code: str
    value: float | None
    value_text: str | None
    unit: str | None
    observed_at: datetime
    assessment_id: int | None
    visit_id: int | None
    procedure_id: int | None
    imaging_study_id: int | None
    method: str | None = Field(default=None, description="how an image measurement was made")
    edited: bool | None = Field(default=None, description="a boundary or point of the measurement was set by hand")


# --- adverse events -----------------------------------------------------------------------------
SERIOUSNESS = (
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "medically_important",
)


class AdverseEventCreate(In):
    patient_id: int
    procedure_id: int | None = None
    product_id: int | None = None
    lot: str | None = Field(default=None, max_length=64)
    event_type: Code
    severity: int = Field(ge=1, le=5, description="CTCAE grade 1-5")
    seriousness: list[Literal[SERIOUSNESS]] = Field(default_factory=list)  # type: ignore[valid-type]
    relatedness: Literal[AE_RELATEDNESS]  # type: ignore[valid-type]
    onset_on: date
    outcome: Literal[AE_OUTCOMES] = "unknown"  # type: ignore[valid-type]
    resolved_on: date | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _dates(self) -> AdverseEventCreate:
        if self.resolved_on is not None and self.resolved_on < self.onset_on:
            raise ValueError("resolved_on must not be before onset_on")
        if self.severity == 5 and self.outcome != "fatal":
            raise ValueError("a grade 5 event has outcome 'fatal'")
        return self


class AdverseEventUpdate(In):
    severity: int | None = Field(default=None, ge=1, le=5)
    seriousness: list[Literal[SERIOUSNESS]] | None = None  # type: ignore[valid-type]
    relatedness: Literal[AE_RELATEDNESS] | None = None  # type: ignore[valid-type]
    outcome: Literal[AE_OUTCOMES] | None = None  # type: ignore[valid-type]
    resolved_on: date | None = None
    description: str | None = None


class AdverseEventRead(Out):
    id: int
    patient_id: int
    procedure_id: int | None
    product_id: int | None
    lot: str | None
    event_type: str
    severity: int
    serious: bool
    seriousness: list[Any]
    relatedness: str
    onset_on: date
    outcome: str
    resolved_on: date | None
    description: str | None
    version: int


class Page(BaseModel):
    items: list[Any]
    total: int
    limit: int
    offset: int
