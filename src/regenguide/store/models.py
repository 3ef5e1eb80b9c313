"""Relational model of the care pathway (SQLAlchemy 2, typed).

assessment → treatment plan (planned injections) → consent → biologic product (custody events)
→ procedure (performed injections, imaging) → follow-up visits → observations and adverse events.

Conventions:
- Every clinical row belongs to one patient (`patient_id`), so access control, audit and de-identified
  export can follow that key.
- Patient identifiers (record number, names, birth date, contact) live in their own columns of
  `patients` and nowhere else, so a research export can strip them by leaving those columns out.
- Vocabularies fixed by the product (modalities, roles, statuses) are CHECK-constrained strings;
  vocabularies that clinicians extend (regions, planes, instruments) are validated against the
  knowledge base by the services, not frozen into the schema.
- Rows that clinicians edit carry `version` for optimistic concurrency (SQLAlchemy `version_id_col`):
  an update of a stale version fails instead of silently overwriting.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

from regenguide.domain.plan import Device, ImagingModality, Modality, Side

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("admin", "clinician", "nurse", "lab", "researcher")
PLAN_STATUSES = ("draft", "signed", "cancelled")
CONSENT_DECISIONS = ("accepted", "declined", "withdrawn")
SIGNER_ROLES = ("patient", "guardian", "legal_representative")
PRODUCT_STATUSES = (
    "collected",
    "received",
    "processed",
    "qc_passed",
    "qc_failed",
    "released",
    "issued",
    "administered",
    "discarded",
    "returned",
)
VISIT_STATUSES = ("scheduled", "completed", "missed", "cancelled")
AE_SEVERITIES = (1, 2, 3, 4, 5)  # CTCAE grade
AE_RELATEDNESS = ("certain", "probable", "possible", "unlikely", "unrelated", "unassessable")
AE_OUTCOMES = ("recovered", "recovering", "not_recovered", "recovered_with_sequelae", "fatal", "unknown")
SEXES = ("female", "male", "other", "unknown")


def _enum(values: tuple[str, ...] | list[str], name: str) -> Enum:
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


MODALITY = _enum([m.value for m in Modality], "modality")
IMAGING = _enum([m.value for m in ImagingModality], "imaging_modality")
DEVICE = _enum([d.value for d in Device], "device")
SIDE = _enum([s.value for s in Side], "side")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Versioned:
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


class Site(Base, Timestamped):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    jurisdiction: Mapped[str] = mapped_column(String(2))
    __table_args__ = (
        CheckConstraint("length(jurisdiction) = 2 AND upper(jurisdiction) = jurisdiction", name="jurisdiction"),
    )


class User(Base, Timestamped):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(_enum(ROLES, "role"))
    password_hash: Mapped[str] = mapped_column(String(200))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    __table_args__ = (CheckConstraint("length(username) >= 2", name="username_length"),)


class Patient(Base, Timestamped, Versioned):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    # --- direct identifiers: only ever in these columns -------------------------------------
    mrn: Mapped[str] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    birth_date: Mapped[date] = mapped_column(Date)
    phone: Mapped[str | None] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(200))
    # --- non-identifying ------------------------------------------------------------------
    sex: Mapped[str] = mapped_column(_enum(SEXES, "sex"))
    fitzpatrick: Mapped[int | None] = mapped_column(Integer)
    research_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    serious_event_flag: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("site_id", "mrn", name="uq_patients_site_mrn"),
        CheckConstraint("fitzpatrick IS NULL OR fitzpatrick BETWEEN 1 AND 6", name="fitzpatrick"),
        CheckConstraint("length(mrn) >= 1", name="mrn_nonempty"),
        Index("ix_patients_family_name", "family_name"),
    )


class Assessment(Base, Timestamped, Versioned):
    __tablename__ = "assessments"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    assessed_on: Mapped[date] = mapped_column(Date)
    indication: Mapped[str] = mapped_column(String(100))
    severity_scale: Mapped[str | None] = mapped_column(String(64))
    severity_score: Mapped[float | None] = mapped_column(Float)
    contraindications: Mapped[list[Any]] = mapped_column(JSON, default=list)
    imaging_findings: Mapped[str | None] = mapped_column(Text)
    clinician_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    notes: Mapped[str | None] = mapped_column(Text)



class TreatmentPlan(Base, Timestamped, Versioned):
    __tablename__ = "treatment_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    assessment_id: Mapped[int | None] = mapped_column(ForeignKey("assessments.id", ondelete="SET NULL"))
    modality: Mapped[str] = mapped_column(MODALITY, index=True)
    indication: Mapped[str] = mapped_column(String(100))
    jurisdiction: Mapped[str] = mapped_column(String(8))
    guidance_imaging: Mapped[str] = mapped_column(IMAGING, default="none")
    doppler: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(_enum(PLAN_STATUSES, "plan_status"), default="draft", index=True)
    planned_on: Mapped[date | None] = mapped_column(Date)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latest_check: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    injections: Mapped[list[PlannedInjection]] = relationship(
        back_populates="plan", cascade="all, delete-orphan", order_by="PlannedInjection.seq"
    )

    __table_args__ = (
        CheckConstraint(
            "(status = 'signed') = (signed_by IS NOT NULL AND signed_at IS NOT NULL)", name="signed_fields"
        ),
    )


class PlannedInjection(Base):
    __tablename__ = "planned_injections"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("treatment_plans.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(SIDE, default="midline")
    plane: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(DEVICE)
    gauge: Mapped[int | None] = mapped_column(Integer)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    bolus_ml: Mapped[float | None] = mapped_column(Float)
    needle_depth_mm: Mapped[float | None] = mapped_column(Float)

    plan: Mapped[TreatmentPlan] = relationship(back_populates="injections")
    __table_args__ = (
        UniqueConstraint("plan_id", "seq", name="uq_planned_injections_plan_seq"),
        CheckConstraint("gauge IS NULL OR gauge BETWEEN 10 AND 34", name="gauge"),
        CheckConstraint("volume_ml IS NULL OR volume_ml >= 0", name="volume"),
        CheckConstraint("bolus_ml IS NULL OR bolus_ml > 0", name="bolus"),
        CheckConstraint("bolus_ml IS NULL OR volume_ml IS NULL OR bolus_ml <= volume_ml", name="bolus_le_volume"),
    )


class PlanOverride(Base):
    """A clinician's reasoned override of a critical finding; stored with the check it answered."""

    __tablename__ = "plan_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("treatment_plans.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(100))
    injection_index: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (CheckConstraint("length(reason) >= 10", name="reason_length"),)


class Consent(Base, Timestamped):
    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("treatment_plans.id", ondelete="SET NULL"), index=True)
    version: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    text_digest: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(_enum(CONSENT_DECISIONS, "consent_decision"))
    signer_name: Mapped[str] = mapped_column(String(200))
    signer_role: Mapped[str] = mapped_column(_enum(SIGNER_ROLES, "signer_role"), default="patient")
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_on: Mapped[date | None] = mapped_column(Date)
    research_use: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    __table_args__ = (CheckConstraint("length(text_digest) = 64", name="digest_length"),)


class BiologicProduct(Base, Timestamped, Versioned):
    __tablename__ = "biologic_products"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("treatment_plans.id", ondelete="SET NULL"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("biologic_products.id", ondelete="RESTRICT"))
    identifier: Mapped[str] = mapped_column(String(40), unique=True)
    identifier_scheme: Mapped[str] = mapped_column(String(20), default="isbt128")
    product_type: Mapped[str] = mapped_column(MODALITY, index=True)
    status: Mapped[str] = mapped_column(_enum(PRODUCT_STATUSES, "product_status"), index=True)
    autologous: Mapped[bool] = mapped_column(Boolean, default=True)
    collected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    volume_ml: Mapped[float | None] = mapped_column(Float)
    kit_lot: Mapped[str | None] = mapped_column(String(64), index=True)
    reagent_lot: Mapped[str | None] = mapped_column(String(64), index=True)
    preparation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The structured identifier (scheme, value, flags, division, parent division) — see products.din.
    identifier_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    expiry_basis: Mapped[str | None] = mapped_column(String(200))

    lots: Mapped[list[ProductLot]] = relationship(cascade="all, delete-orphan", order_by="ProductLot.id")

    __table_args__ = (
        CheckConstraint("volume_ml IS NULL OR volume_ml >= 0", name="volume"),
        CheckConstraint("expires_at IS NULL OR expires_at >= collected_at", name="expiry_after_collection"),
    )


class ProductLot(Base):
    """Every kit and reagent lot that went into a product (anticoagulant, enzyme, activator …), so a
    recall by lot is one indexed query."""

    __tablename__ = "product_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("biologic_products.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    lot: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    __table_args__ = (CheckConstraint("length(lot) >= 1", name="lot_nonempty"),)


class CustodyEvent(Base):
    """Append-only: the product's status is the last event's `status_after`."""

    __tablename__ = "custody_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("biologic_products.id", ondelete="RESTRICT"), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    status_after: Mapped[str] = mapped_column(_enum(PRODUCT_STATUSES, "custody_status"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    location: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    note: Mapped[str | None] = mapped_column(Text)


class BedsideCheck(Base):
    """Every bedside verification, accepted or refused, with the exact reasons."""

    __tablename__ = "bedside_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("biologic_products.id", ondelete="RESTRICT"))
    scanned_patient: Mapped[str] = mapped_column(String(64))
    scanned_product: Mapped[str] = mapped_column(String(64))
    accepted: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Procedure(Base, Timestamped, Versioned):
    __tablename__ = "procedures"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("treatment_plans.id", ondelete="SET NULL"), index=True)
    modality: Mapped[str] = mapped_column(MODALITY, index=True)
    performed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    performer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    guidance_imaging: Mapped[str] = mapped_column(IMAGING, default="none")
    doppler: Mapped[bool] = mapped_column(Boolean, default=False)
    session_number: Mapped[int] = mapped_column(Integer, default=1)
    processing_method: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)

    injections: Mapped[list[PerformedInjection]] = relationship(
        back_populates="procedure", cascade="all, delete-orphan", order_by="PerformedInjection.seq"
    )
    __table_args__ = (CheckConstraint("session_number >= 1", name="session_number"),)


class PerformedInjection(Base):
    __tablename__ = "performed_injections"

    id: Mapped[int] = mapped_column(primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("biologic_products.id", ondelete="RESTRICT"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    region: Mapped[str] = mapped_column(String(64), index=True)
    side: Mapped[str] = mapped_column(SIDE, default="midline")
    plane: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(DEVICE)
    gauge: Mapped[int | None] = mapped_column(Integer)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    bolus_ml: Mapped[float | None] = mapped_column(Float)

    procedure: Mapped[Procedure] = relationship(back_populates="injections")
    __table_args__ = (
        UniqueConstraint("procedure_id", "seq", name="uq_performed_injections_procedure_seq"),
        CheckConstraint("gauge IS NULL OR gauge BETWEEN 10 AND 34", name="gauge"),
        CheckConstraint("volume_ml IS NULL OR volume_ml >= 0", name="volume"),
        CheckConstraint("bolus_ml IS NULL OR bolus_ml > 0", name="bolus"),
    )


class ImagingStudy(Base, Timestamped):
    __tablename__ = "imaging_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id", ondelete="SET NULL"))
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("followup_visits.id", ondelete="SET NULL"))
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16))
    storage_path: Mapped[str] = mapped_column(String(400))
    sha256: Mapped[str] = mapped_column(String(64))
    frames: Mapped[int] = mapped_column(Integer, default=1)
    calibrated: Mapped[bool] = mapped_column(Boolean, default=False)
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    region: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class VascularMapRecord(Base):
    """Vessels found by Doppler in one region of one patient (see `regenguide.imaging.vascular.VascularMap`),
    used by the plan check to keep injections away from mapped arteries."""

    __tablename__ = "vascular_maps"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_studies.id", ondelete="SET NULL"))
    region: Mapped[str] = mapped_column(String(64))
    side: Mapped[str | None] = mapped_column(SIDE)
    vessel_count: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (
        CheckConstraint("vessel_count >= 0", name="vessel_count"),
        Index("ix_vascular_maps_patient_region", "patient_id", "region"),
    )


class FollowupVisit(Base, Timestamped, Versioned):
    __tablename__ = "followup_visits"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id", ondelete="SET NULL"), index=True)
    label: Mapped[str] = mapped_column(String(40))
    due_on: Mapped[date] = mapped_column(Date, index=True)
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(_enum(VISIT_STATUSES, "visit_status"), default="scheduled", index=True)
    completed_on: Mapped[date | None] = mapped_column(Date)

    __table_args__ = (
        CheckConstraint("window_start <= due_on AND due_on <= window_end", name="window"),
        CheckConstraint("(status = 'completed') = (completed_on IS NOT NULL)", name="completed_on"),
    )


class Observation(Base):
    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    assessment_id: Mapped[int | None] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("followup_visits.id", ondelete="SET NULL"))
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id", ondelete="SET NULL"))
    imaging_study_id: Mapped[int | None] = mapped_column(ForeignKey("imaging_studies.id", ondelete="SET NULL"))
    code: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(32))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # How an image measurement was made (e.g. "intensity profile along a scan line") and whether the clinician
    # set a boundary or point by hand; None for values entered directly.
    method: Mapped[str | None] = mapped_column(String(200))
    edited: Mapped[bool | None] = mapped_column(Boolean)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (
        CheckConstraint("value IS NOT NULL OR value_text IS NOT NULL", name="has_value"),
        Index("ix_observations_patient_code", "patient_id", "code"),
    )


class AdverseEvent(Base, Timestamped, Versioned):
    __tablename__ = "adverse_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id", ondelete="SET NULL"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("biologic_products.id", ondelete="SET NULL"))
    lot: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[int] = mapped_column(Integer)
    serious: Mapped[bool] = mapped_column(Boolean, default=False)
    seriousness: Mapped[list[Any]] = mapped_column(JSON, default=list)
    relatedness: Mapped[str] = mapped_column(_enum(AE_RELATEDNESS, "ae_relatedness"))
    onset_on: Mapped[date] = mapped_column(Date)
    outcome: Mapped[str] = mapped_column(_enum(AE_OUTCOMES, "ae_outcome"), default="unknown")
    resolved_on: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("severity BETWEEN 1 AND 5", name="severity"),
        CheckConstraint("resolved_on IS NULL OR resolved_on >= onset_on", name="resolved_after_onset"),
    )


class CdsFeedback(Base):
    """CDS Hooks feedback: what the clinician did with a card (accepted / overridden)."""

    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[str] = mapped_column(String(100))
    card_uuid: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))
    override_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    outcome_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    __table_args__ = (CheckConstraint("outcome IN ('accepted', 'overridden')", name="outcome"),)


class AuditEntry(Base):
    """Append-only, hash-chained audit trail (see `regenguide.store.audit`)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    resource: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(Integer, index=True)
    digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the last sequence number and hash, locked by every append so the chain never forks
    and a deleted tail is detectable."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    hash: Mapped[str] = mapped_column(String(64))
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class QuestionnaireLink(Base):
    """A single-use token that lets a patient answer one questionnaire without logging in."""

    __tablename__ = "questionnaire_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("followup_visits.id", ondelete="SET NULL"))
    questionnaire: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Meta(Base):
    """Identifies a RegenGuide database (and therefore a RegenGuide backup)."""

    __tablename__ = "regenguide_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(400))
