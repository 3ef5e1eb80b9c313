"""Preparation records per product type: what was harvested, how it was processed, with units.

Units are in the field names (``_ml``, ``_per_uL``, ``_mmHg``, ``g_force``). Centrifugation is stored
as g-force and minutes, never as rpm alone, because the same rpm gives different g in different rotors
(cited ``rcf-rotor-radius``); `Spin.from_rpm` converts with RCF = 1.118e-5 · r(cm) · rpm².

Bounds on fields are physical plausibility limits that catch typing errors (a platelet count entered
per litre, a viability above 100 %), not clinical targets; clinical interpretation is in `metrics`.

`PreparationRecord` is a discriminated union keyed by ``product_type`` (the `Modality` vocabulary).
Every record lists the lots it used (`lots()`), which the recall helper searches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

RCF_CONSTANT = 1.118e-5  # g per (cm · rpm²): RCF = 1.118e-5 · r(cm) · rpm² (rcf-rotor-radius; physics)


def rcf_from_rpm(rpm: float, rotor_radius_cm: float) -> float:
    """Relative centrifugal force (× g) at `rpm` for a rotor radius in cm."""
    if rpm <= 0 or rotor_radius_cm <= 0:
        raise ValueError("rpm and rotor radius must be positive")
    return RCF_CONSTANT * rotor_radius_cm * rpm**2


def rpm_from_rcf(g_force: float, rotor_radius_cm: float) -> float:
    """Inverse of `rcf_from_rpm`: the rpm giving `g_force` at this rotor radius."""
    if g_force <= 0 or rotor_radius_cm <= 0:
        raise ValueError("g-force and rotor radius must be positive")
    return float((g_force / (RCF_CONSTANT * rotor_radius_cm)) ** 0.5)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LotRef(_Strict):
    """One lot used in a preparation; `kind` says what it was (the recall helper filters on it)."""

    kind: Literal["kit", "anticoagulant", "enzyme", "activator", "reagent", "manufacturing", "filter"]
    name: str = Field(min_length=1)
    lot: str = Field(min_length=1)
    expiry: str | None = Field(default=None, description="ISO date of the lot's expiry, when known")


class Spin(_Strict):
    """One centrifugation: g-force (× g) and minutes; rpm and rotor radius kept when that is how it
    was entered. Upper bounds catch unit mistakes (an rpm typed as g)."""

    g_force: float = Field(gt=0, le=20_000)
    minutes: float = Field(gt=0, le=240)
    rpm: float | None = Field(default=None, gt=0, le=50_000)
    rotor_radius_cm: float | None = Field(default=None, gt=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-10, le=45)

    @classmethod
    def from_rpm(cls, rpm: float, rotor_radius_cm: float, minutes: float, **extra: float) -> Spin:
        return cls(
            g_force=round(rcf_from_rpm(rpm, rotor_radius_cm), 1),
            minutes=minutes,
            rpm=rpm,
            rotor_radius_cm=rotor_radius_cm,
            **extra,
        )

    @model_validator(mode="after")
    def _consistent(self) -> Spin:
        if self.rpm is not None and self.rotor_radius_cm is not None:
            expected = rcf_from_rpm(self.rpm, self.rotor_radius_cm)
            if abs(expected - self.g_force) > max(1.0, 0.02 * expected):
                raise ValueError(
                    f"g_force {self.g_force} does not match {self.rpm} rpm at r = {self.rotor_radius_cm} cm "
                    f"(= {expected:.0f} g)"
                )
        return self


class BloodCounts(_Strict):
    """Cell concentrations per microlitre (a typical platelet count is ~2e5/µL)."""

    platelets_per_uL: float = Field(ge=0, le=2e7)
    leukocytes_per_uL: float | None = Field(default=None, ge=0, le=1e6)
    neutrophils_per_uL: float | None = Field(default=None, ge=0, le=1e6)
    rbc_per_uL: float | None = Field(default=None, ge=0, le=1e7)

    @model_validator(mode="after")
    def _neutrophils(self) -> BloodCounts:
        if (
            self.neutrophils_per_uL is not None
            and self.leukocytes_per_uL is not None
            and self.neutrophils_per_uL > self.leukocytes_per_uL
        ):
            raise ValueError("neutrophils cannot exceed leukocytes")
        return self


class LabelledExpiry(_Strict):
    """An expiry printed on the product's label or set by its manufacturer's instructions or the facility's
    SOP (e.g. a cell therapy's post-thaw limit): recorded as given, never computed here."""

    expires_at: AwareDatetime
    source: str = Field(min_length=1, max_length=120,
                        description="where the time comes from, e.g. 'product label', 'manufacturer IFU', 'SOP-12'")


class _Base(_Strict):
    prepared_at: AwareDatetime
    operator: str = Field(min_length=1)
    reagents: list[LotRef] = Field(default_factory=list, description="any other lots used")
    notes: str = ""
    labelled_expiry: LabelledExpiry | None = Field(
        default=None, description="the product's own expiry; it wins over the hold-time expiry when earlier")

    def lots(self) -> list[LotRef]:
        return list(self.reagents)


class PrpPreparation(_Base):
    product_type: Literal["prp"] = "prp"
    blood_volume_ml: float = Field(gt=0, le=500)
    anticoagulant: Literal["acd_a", "acd_b", "sodium_citrate", "heparin", "edta", "none", "other"]
    anticoagulant_volume_ml: float | None = Field(default=None, ge=0, le=100)
    anticoagulant_lot: LotRef | None = None
    kit: LotRef | None = Field(default=None, description="device/kit name and lot")
    spins: list[Spin] = Field(min_length=1, max_length=5)
    baseline: BloodCounts
    product: BloodCounts
    product_volume_ml: float = Field(gt=0, le=500)
    activation: Literal[
        "none", "calcium_chloride", "calcium_gluconate", "thrombin", "autologous_thrombin", "collagen", "other"
    ] = "none"
    activator_lot: LotRef | None = None

    @model_validator(mode="after")
    def _check(self) -> PrpPreparation:
        total_in = self.blood_volume_ml + (self.anticoagulant_volume_ml or 0)
        if self.product_volume_ml > total_in:
            raise ValueError(
                f"product volume {self.product_volume_ml} mL exceeds the blood (+ anticoagulant) drawn, {total_in} mL"
            )
        if self.anticoagulant == "none" and self.anticoagulant_volume_ml:
            raise ValueError("anticoagulant 'none' with an anticoagulant volume")
        if self.activation == "none" and self.activator_lot is not None:
            raise ValueError("an activator lot was given but activation is 'none'")
        if self.kit is not None and self.kit.kind != "kit":
            raise ValueError("kit lot must have kind 'kit'")
        return self

    def lots(self) -> list[LotRef]:
        return [x for x in (self.kit, self.anticoagulant_lot, self.activator_lot) if x is not None] + list(
            self.reagents
        )


class ProcessingStep(_Strict):
    """One fat-processing step. Centrifugation needs g-force and minutes; filtration may give a mesh."""

    kind: Literal["decantation", "filtration", "centrifugation", "washing", "telfa_rolling", "other"]
    minutes: float | None = Field(default=None, gt=0, le=600)
    g_force: float | None = Field(default=None, gt=0, le=20_000)
    filter_um: float | None = Field(default=None, gt=0, le=10_000)
    solution: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ProcessingStep:
        if self.kind == "centrifugation" and (self.g_force is None or self.minutes is None):
            raise ValueError("a centrifugation step needs g_force and minutes (store g, not rpm)")
        if self.kind != "centrifugation" and self.g_force is not None:
            raise ValueError(f"g_force given for a {self.kind} step")
        return self


class Emulsification(_Strict):
    """Nanofat: mechanical emulsification between syringes, then filtration."""

    passes: int = Field(ge=1, le=500)
    connector_mm: float | None = Field(default=None, gt=0, le=10)
    filter_um: float | None = Field(default=None, gt=0, le=5000)


class FatHarvest(_Strict):
    donor_site: str = Field(min_length=1, description="e.g. abdomen, flank, inner thigh")
    cannula_diameter_mm: float = Field(gt=0, le=10)
    suction_pressure_mmHg: float | None = Field(
        default=None, ge=0, le=760, description="magnitude of negative pressure (0..760 mmHg)"
    )
    lipoaspirate_volume_ml: float = Field(gt=0, le=10_000)


class FatPreparation(_Base):
    product_type: Literal["microfat", "nanofat"]
    harvest: FatHarvest
    processing: list[ProcessingStep] = Field(default_factory=list, max_length=20)
    volume_obtained_ml: float = Field(gt=0, le=10_000)
    emulsification: Emulsification | None = None

    @model_validator(mode="after")
    def _check(self) -> FatPreparation:
        if self.volume_obtained_ml > self.harvest.lipoaspirate_volume_ml:
            raise ValueError("volume obtained exceeds the lipoaspirate harvested")
        if self.product_type == "nanofat" and self.emulsification is None:
            raise ValueError("nanofat needs its emulsification (passes, filter)")
        if self.product_type == "microfat" and self.emulsification is not None:
            raise ValueError("microfat is not emulsified; use product_type 'nanofat'")
        return self


class EnzymeUse(_Strict):
    name: str = Field(min_length=1, description="e.g. collagenase type I")
    lot: str = Field(min_length=1)
    concentration_percent: float | None = Field(default=None, gt=0, le=100)
    minutes: float | None = Field(default=None, gt=0, le=600)
    temperature_c: float | None = Field(default=None, ge=0, le=45)


class SvfIsolation(_Strict):
    """SVF cells obtained: total nucleated cells, viability and the suspension volume."""

    total_cells: float = Field(gt=0, le=1e12)
    viability_percent: float = Field(ge=0, le=100)
    suspension_volume_ml: float = Field(gt=0, le=1000)
    counting_method: str | None = None


class SvfPreparation(_Base):
    product_type: Literal["svf_mechanical", "svf_enzymatic"]
    harvest: FatHarvest
    processing: list[ProcessingStep] = Field(default_factory=list, max_length=20)
    fat_processed_ml: float = Field(gt=0, le=10_000, description="fat volume the SVF was isolated from")
    enzyme: EnzymeUse | None = None
    isolation: SvfIsolation

    @model_validator(mode="after")
    def _check(self) -> SvfPreparation:
        if self.product_type == "svf_enzymatic" and self.enzyme is None:
            raise ValueError("enzymatic SVF needs the enzyme and its lot")
        if self.product_type == "svf_mechanical" and self.enzyme is not None:
            raise ValueError("an enzyme was recorded for mechanical SVF; use 'svf_enzymatic'")
        if self.fat_processed_ml > self.harvest.lipoaspirate_volume_ml:
            raise ValueError("fat processed exceeds the lipoaspirate harvested")
        return self

    def lots(self) -> list[LotRef]:
        enzyme = [LotRef(kind="enzyme", name=self.enzyme.name, lot=self.enzyme.lot)] if self.enzyme else []
        return enzyme + list(self.reagents)


class CalPreparation(_Base):
    """Cell-assisted lipotransfer: SVF isolated from part of the lipoaspirate is recombined with fat."""

    product_type: Literal["cal"] = "cal"
    harvest: FatHarvest
    processing: list[ProcessingStep] = Field(default_factory=list, max_length=20)
    fat_graft_ml: float = Field(gt=0, le=10_000, description="fat volume the SVF is added to")
    svf_source_fat_ml: float = Field(gt=0, le=10_000, description="fat volume the SVF was isolated from")
    svf_method: Literal["mechanical", "enzymatic"]
    enzyme: EnzymeUse | None = None
    isolation: SvfIsolation

    @model_validator(mode="after")
    def _check(self) -> CalPreparation:
        if self.svf_method == "enzymatic" and self.enzyme is None:
            raise ValueError("enzymatic SVF isolation needs the enzyme and its lot")
        if self.svf_method == "mechanical" and self.enzyme is not None:
            raise ValueError("an enzyme was recorded for a mechanical SVF isolation")
        if self.fat_graft_ml + self.svf_source_fat_ml > self.harvest.lipoaspirate_volume_ml:
            raise ValueError("graft fat + SVF source fat exceed the lipoaspirate harvested")
        return self

    @property
    def svf_to_fat_ratio(self) -> float:
        """SVF source fat : graft fat (1.0 when half the lipoaspirate feeds the other half, Yoshimura)."""
        return self.svf_source_fat_ml / self.fat_graft_ml

    def lots(self) -> list[LotRef]:
        enzyme = [LotRef(kind="enzyme", name=self.enzyme.name, lot=self.enzyme.lot)] if self.enzyme else []
        return enzyme + list(self.reagents)


class Collection(_Strict):
    method: Literal["lipoaspiration", "bone_marrow_aspiration", "apheresis", "leukapheresis", "other"]
    collected_at: AwareDatetime
    site: str | None = None
    volume_ml: float | None = Field(default=None, gt=0, le=20_000)


class ReleaseTest(_Strict):
    test: Literal["sterility", "mycoplasma", "endotoxin", "viability", "identity", "potency", "other"]
    result: Literal["pass", "fail", "pending"]
    value: float | None = None
    unit: str | None = None
    method: str | None = None
    tested_at: AwareDatetime | None = None


class Cryopreservation(_Strict):
    cryoprotectant: str = Field(min_length=1, description="e.g. DMSO")
    cryoprotectant_percent: float | None = Field(default=None, gt=0, le=100)
    frozen_at: AwareDatetime
    storage_temperature_c: float = Field(ge=-273, le=0)


class Thaw(_Strict):
    thawed_at: AwareDatetime
    method: str | None = None
    post_thaw_viability_percent: float | None = Field(default=None, ge=0, le=100)


class CellTherapyPreparation(_Base):
    """Culture-expanded ADSC, bone-marrow aspirate concentrate, autologous stem-cell transplant, CAR-T."""

    product_type: Literal["adsc_expanded", "bmac", "hsct_autologous", "car_t"]
    collection: Collection
    manufacturing_site: str | None = None
    manufacturing_lot: str | None = None
    passage: int | None = Field(default=None, ge=0, le=50)
    total_cells: float = Field(gt=0, le=1e13)
    dose_basis: str = Field(
        default="total nucleated cells", description="what `total_cells` counts, e.g. CD34+ or CAR+ T cells"
    )
    viability_percent: float = Field(ge=0, le=100)
    volume_ml: float | None = Field(default=None, gt=0, le=5000)
    patient_weight_kg: float | None = Field(default=None, gt=0, le=500)
    release_tests: list[ReleaseTest] = Field(default_factory=list)
    cryopreservation: Cryopreservation | None = None
    thaw: Thaw | None = None

    @model_validator(mode="after")
    def _check(self) -> CellTherapyPreparation:
        manufactured = self.product_type in ("adsc_expanded", "car_t")
        if manufactured and not (self.manufacturing_site and self.manufacturing_lot):
            raise ValueError(f"{self.product_type} needs the manufacturing site and lot")
        if self.product_type == "adsc_expanded" and self.passage is None:
            raise ValueError("culture-expanded cells need their passage number")
        if self.product_type != "adsc_expanded" and self.passage is not None:
            raise ValueError(f"passage applies to culture-expanded cells, not {self.product_type}")
        if self.thaw is not None:
            if self.cryopreservation is None:
                raise ValueError("a thaw was recorded but no cryopreservation")
            if self.thaw.thawed_at <= self.cryopreservation.frozen_at:
                raise ValueError("thawed before it was frozen")
        if self.cryopreservation is not None and self.cryopreservation.frozen_at < self.collection.collected_at:
            raise ValueError("frozen before it was collected")
        return self

    @property
    def viable_cells(self) -> float:
        return self.total_cells * self.viability_percent / 100.0

    @property
    def viable_cells_per_kg(self) -> float | None:
        return None if self.patient_weight_kg is None else self.viable_cells / self.patient_weight_kg

    def release_status(self) -> Literal["pass", "fail", "pending", "none"]:
        """'fail' if any release test failed, 'pending' if any is pending, 'pass' if all passed."""
        if not self.release_tests:
            return "none"
        results = {t.result for t in self.release_tests}
        if "fail" in results:
            return "fail"
        return "pending" if "pending" in results else "pass"

    def lots(self) -> list[LotRef]:
        own = (
            [LotRef(kind="manufacturing", name=self.manufacturing_site or "manufacturing", lot=self.manufacturing_lot)]
            if self.manufacturing_lot
            else []
        )
        return own + list(self.reagents)


PreparationRecord = Annotated[
    PrpPreparation | FatPreparation | SvfPreparation | CalPreparation | CellTherapyPreparation,
    Field(discriminator="product_type"),
]
_ADAPTER: TypeAdapter[PreparationRecord] = TypeAdapter(PreparationRecord)


def parse_preparation(
    data: object,
) -> PrpPreparation | FatPreparation | SvfPreparation | CalPreparation | CellTherapyPreparation:
    """Validate a dict (e.g. from JSON) into the right record type; raises pydantic.ValidationError."""
    return _ADAPTER.validate_python(data)


def preparation_json_schema() -> dict[str, object]:
    return _ADAPTER.json_schema()


def clock_anchor(record: object, anchor: str) -> datetime | None:
    """Time a hold-time clock starts from the record itself (``thawed``), if it has one."""
    if anchor == "thawed" and isinstance(record, CellTherapyPreparation) and record.thaw is not None:
        return record.thaw.thawed_at
    return None
