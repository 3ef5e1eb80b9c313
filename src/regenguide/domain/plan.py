"""The plan document `regenguide.plan/1`: the contract between planning, checks, simulation and imaging.

Field names are a published contract (see docs/plan-document.md): extend, never rename.
Vocabulary values for `region` and `plane` are defined by the knowledge base; this module keeps them
as strings so that the contract stays stable while the knowledge base grows, and the plan check
reports unknown codes as findings with the list of valid ones.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PLAN_SCHEMA: Literal["regenguide.plan/1"] = "regenguide.plan/1"


class Modality(StrEnum):
    """Therapy modalities; one vocabulary shared by the knowledge base, the store and the API."""

    prp = "prp"
    microfat = "microfat"
    nanofat = "nanofat"
    svf_mechanical = "svf_mechanical"
    svf_enzymatic = "svf_enzymatic"
    cal = "cal"
    adsc_expanded = "adsc_expanded"
    bmac = "bmac"
    microneedling = "microneedling"
    hsct_autologous = "hsct_autologous"
    car_t = "car_t"


FAT_MODALITIES = frozenset({Modality.microfat, Modality.nanofat, Modality.cal})


class ImagingModality(StrEnum):
    none = "none"
    ultrasound = "ultrasound"
    ct = "ct"
    mri = "mri"
    fluoroscopy = "fluoroscopy"


class Device(StrEnum):
    needle = "needle"
    cannula = "cannula"


class Side(StrEnum):
    left = "left"
    right = "right"
    midline = "midline"
    bilateral = "bilateral"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatientFacts(_Strict):
    """What the checks need to know about the patient; no identifiers ever travel in a plan document."""

    age: int | None = Field(default=None, ge=0, le=130)
    sex: Literal["female", "male", "other", "unknown"] | None = None
    pregnant: bool | None = None
    weight_kg: float | None = Field(default=None, gt=0, le=500)
    platelets_per_uL: float | None = Field(default=None, ge=0, le=5_000_000)
    hemoglobin_g_dL: float | None = Field(default=None, ge=0, le=30)
    medications: list[str] = Field(default_factory=list)
    conditions: list[str] = Field(default_factory=list)
    fitzpatrick: int | None = Field(default=None, ge=1, le=6)
    bmi: float | None = Field(default=None, gt=0, le=100)
    smoker: bool | None = None
    last_nsaid_hours_ago: float | None = Field(default=None, ge=0)


class Guidance(_Strict):
    imaging: ImagingModality = ImagingModality.none
    doppler: bool = False


class Injection(_Strict):
    """One planned injection (or treated area for microneedling)."""

    region: str = Field(min_length=1)
    side: Side = Side.midline
    plane: str | None = None
    device: Device | None = None
    gauge: int | None = Field(default=None, ge=10, le=34)
    volume_ml: float | None = Field(default=None, ge=0, le=1000)
    bolus_ml: float | None = Field(default=None, gt=0, le=1000)
    needle_depth_mm: float | None = Field(default=None, ge=0, le=10)
    # Fat grafting geometry (optional; used by the graft simulator).
    passes: int | None = Field(default=None, ge=1, le=1000)
    tunnel_length_mm: float | None = Field(default=None, gt=0, le=300)
    recipient_thickness_mm: float | None = Field(default=None, gt=0, le=200)
    recipient_perfusion: Literal["low", "normal", "high"] | None = None
    # Depth of the intended deposit below the skin surface (mm), when measured or planned.
    depth_mm: float | None = Field(default=None, ge=0, le=200)


class Course(_Strict):
    sessions: int = Field(ge=1, le=100)
    interval_weeks: float = Field(gt=0, le=104)
    combined_with: list[str] = Field(default_factory=list)
    advice: list[str] = Field(default_factory=list)


class Consent(_Strict):
    """Consent status as seen by the plan check (the store keeps the full signed document)."""

    status: Literal["signed", "declined", "withdrawn", "missing"] = "missing"
    signed_on: str | None = None  # ISO date
    expires_on: str | None = None  # ISO date
    version: str | None = None


class PlanDocument(_Strict):
    """A treatment plan as checked, simulated and signed."""

    schema_: Literal["regenguide.plan/1"] = Field(alias="schema", default=PLAN_SCHEMA)
    jurisdiction: str = Field(default="US", min_length=2, max_length=8)
    patient: PatientFacts = Field(default_factory=PatientFacts)
    indication: str = Field(min_length=1)
    modality: Modality
    same_surgical_procedure: bool | None = None
    homologous_use: bool | None = None
    guidance: Guidance = Field(default_factory=Guidance)
    injections: list[Injection] = Field(default_factory=list, max_length=500)
    course: Course | None = None
    consent: Consent | None = None
    # ISO date the plan is meant to be carried out on (for consent expiry); today when absent.
    planned_date: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    @field_validator("jurisdiction")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
