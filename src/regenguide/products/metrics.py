"""Computed quality metrics and classifications of a preparation (pure functions).

PRP:
- concentration factor = product platelets/µL ÷ baseline platelets/µL;
- platelet dose = product platelets/µL × volume (mL) × 1000 µL/mL (the DEPA "dose", magalon-2016-depa);
- recovery efficiency = platelets in the product ÷ platelets in the blood drawn (DEPA "efficiency");
- purity = platelets ÷ (platelets + red cells + leukocytes) in the product (DEPA "purity");
- PAW (delong-2012-paw), DEPA (magalon-2016-depa; grades below A unverified) and the Dohan Ehrenfest
  family (dohan-ehrenfest-2009). Cut-offs come from ``kb/data/products/prp_classification.yaml``.

SVF: cells per mL of suspension, viable-cell dose, cells per mL of fat processed.
Fat: yield (volume obtained ÷ lipoaspirate), strongest centrifugation, emulsification passes.
Cell therapy: viable-cell dose and dose per kg.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from regenguide.kb.references import EvidenceLabel
from regenguide.products.preparation import (
    CalPreparation,
    CellTherapyPreparation,
    FatPreparation,
    PrpPreparation,
    SvfIsolation,
    SvfPreparation,
)
from regenguide.products.rules import GradeBand, PrpClassificationRules, load_prp_rules

Preparation = PrpPreparation | FatPreparation | SvfPreparation | CalPreparation | CellTherapyPreparation

_EVIDENCE_RANK = {
    EvidenceLabel.verified: 0,
    EvidenceLabel.secondary: 1,
    EvidenceLabel.expert_opinion: 2,
    EvidenceLabel.unverified: 3,
}


def weakest(labels: list[EvidenceLabel]) -> EvidenceLabel:
    return max(labels, key=_EVIDENCE_RANK.__getitem__)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PawClass(_Out):
    code: str  # e.g. "P3-x-Bβ"
    platelets: Literal["P1", "P2", "P3", "P4"]
    exogenous_activation: bool
    leukocytes: Literal["A", "B"] | None
    neutrophils: Literal["α", "β"] | None
    citations: list[str]
    evidence: EvidenceLabel


class DepaGrade(_Out):
    grade: str
    value: float
    evidence: EvidenceLabel
    citations: list[str]


class DepaClass(_Out):
    code: str  # e.g. "B-A-C-activated"
    dose: DepaGrade
    efficiency: DepaGrade
    purity: DepaGrade | None
    activation: str
    evidence: EvidenceLabel


class DohanEhrenfestClass(_Out):
    family: Literal["P-PRP", "L-PRP", "P-PRF", "L-PRF"] | None
    reason: str
    citations: list[str]
    evidence: EvidenceLabel


class PrpMetrics(_Out):
    concentration_factor: float
    platelet_dose: float  # platelets
    platelet_dose_billion: float
    recovery_efficiency_percent: float
    purity_percent: float | None
    leukocyte_factor: float | None
    paw: PawClass
    depa: DepaClass
    dohan_ehrenfest: DohanEhrenfestClass
    citations: list[str]
    evidence_notes: list[str]


UL_PER_ML = 1000.0


def concentration_factor(product_per_uL: float, baseline_per_uL: float) -> float:
    if baseline_per_uL <= 0:
        raise ValueError("baseline count must be positive to compute a concentration factor")
    return product_per_uL / baseline_per_uL


def platelet_dose(product_per_uL: float, volume_ml: float) -> float:
    """Platelets in the product: concentration (/µL) × volume (mL) × 1000 µL/mL."""
    return product_per_uL * volume_ml * UL_PER_ML


def recovery_efficiency_percent(
    product_per_uL: float, product_volume_ml: float, baseline_per_uL: float, blood_volume_ml: float
) -> float:
    """Platelets recovered in the product as % of platelets in the whole blood drawn."""
    in_blood = baseline_per_uL * blood_volume_ml * UL_PER_ML
    if in_blood <= 0:
        raise ValueError("baseline count and blood volume must be positive")
    return 100.0 * platelet_dose(product_per_uL, product_volume_ml) / in_blood


def purity_percent(platelets_per_uL: float, rbc_per_uL: float, leukocytes_per_uL: float) -> float:
    total = platelets_per_uL + rbc_per_uL + leukocytes_per_uL
    if total <= 0:
        raise ValueError("no cells counted")
    return 100.0 * platelets_per_uL / total


def grade(value: float, bands: list[GradeBand]) -> DepaGrade:
    for band in bands:
        if band.above is None or value > band.above:
            return DepaGrade(grade=band.grade, value=value, evidence=band.evidence, citations=list(band.citations))
    raise AssertionError("grade bands end with a catch-all")  # guaranteed by the schema


def paw_class(record: PrpPreparation, rules: PrpClassificationRules | None = None) -> PawClass:
    r = (rules or load_prp_rules()).paw
    base, prod = record.baseline, record.product
    if prod.platelets_per_uL <= base.platelets_per_uL:
        p: Literal["P1", "P2", "P3", "P4"] = "P1"
    elif prod.platelets_per_uL > r.p3_max_per_uL:
        p = "P4"
    elif prod.platelets_per_uL > r.p2_max_per_uL:
        p = "P3"
    else:
        p = "P2"
    leuk: Literal["A", "B"] | None = None
    if prod.leukocytes_per_uL is not None and base.leukocytes_per_uL is not None:
        leuk = "A" if prod.leukocytes_per_uL > base.leukocytes_per_uL else "B"
    neut: Literal["α", "β"] | None = None
    if prod.neutrophils_per_uL is not None and base.neutrophils_per_uL is not None:
        neut = "α" if prod.neutrophils_per_uL > base.neutrophils_per_uL else "β"
    activated = record.activation != "none"
    code = p + ("-x" if activated else "") + (f"-{leuk or '?'}{neut or ''}")
    return PawClass(
        code=code,
        platelets=p,
        exogenous_activation=activated,
        leukocytes=leuk,
        neutrophils=neut,
        citations=list(r.citations),
        evidence=r.evidence,
    )


def depa_class(record: PrpPreparation, rules: PrpClassificationRules | None = None) -> DepaClass:
    r = (rules or load_prp_rules()).depa
    prod, base = record.product, record.baseline
    dose = grade(platelet_dose(prod.platelets_per_uL, record.product_volume_ml) / 1e9, r.dose_billion)
    eff = grade(
        recovery_efficiency_percent(
            prod.platelets_per_uL, record.product_volume_ml, base.platelets_per_uL, record.blood_volume_ml
        ),
        r.efficiency_percent,
    )
    pur = None
    if prod.rbc_per_uL is not None and prod.leukocytes_per_uL is not None:
        pur = grade(purity_percent(prod.platelets_per_uL, prod.rbc_per_uL, prod.leukocytes_per_uL), r.purity_percent)
    activation = record.activation
    code = f"{dose.grade}-{eff.grade}-{pur.grade if pur else '?'}-{activation}"
    labels = [dose.evidence, eff.evidence] + ([pur.evidence] if pur else [])
    return DepaClass(code=code, dose=dose, efficiency=eff, purity=pur, activation=activation, evidence=weakest(labels))


def dohan_ehrenfest_class(record: PrpPreparation, rules: PrpClassificationRules | None = None) -> DohanEhrenfestClass:
    r = (rules or load_prp_rules()).dohan_ehrenfest
    fibrin = "PRF" if record.anticoagulant == "none" else "PRP"
    base, prod = record.baseline.leukocytes_per_uL, record.product.leukocytes_per_uL
    evidence = weakest([r.evidence, r.leukocyte_rule_evidence])
    if base is None or prod is None:
        return DohanEhrenfestClass(
            family=None,
            reason="leukocyte counts of blood and product are both needed",
            citations=list(r.citations),
            evidence=evidence,
        )
    rich = prod > base
    family = f"{'L' if rich else 'P'}-{fibrin}"
    reason = (
        f"{'no anticoagulant: fibrin' if fibrin == 'PRF' else 'anticoagulated: plasma'} family; leukocytes "
        f"{prod:.0f}/µL {'above' if rich else 'at or below'} baseline {base:.0f}/µL"
    )
    return DohanEhrenfestClass(
        family=family,  # type: ignore[arg-type]
        reason=reason,
        citations=list(r.citations),
        evidence=evidence,
    )


def prp_metrics(record: PrpPreparation, rules: PrpClassificationRules | None = None) -> PrpMetrics:
    rules = rules or load_prp_rules()
    prod, base = record.product, record.baseline
    dose = platelet_dose(prod.platelets_per_uL, record.product_volume_ml)
    pur = None
    if prod.rbc_per_uL is not None and prod.leukocytes_per_uL is not None:
        pur = purity_percent(prod.platelets_per_uL, prod.rbc_per_uL, prod.leukocytes_per_uL)
    leuk_factor = None
    if prod.leukocytes_per_uL is not None and base.leukocytes_per_uL:
        leuk_factor = prod.leukocytes_per_uL / base.leukocytes_per_uL
    paw = paw_class(record, rules)
    depa = depa_class(record, rules)
    de = dohan_ehrenfest_class(record, rules)
    notes = []
    if depa.evidence in (EvidenceLabel.unverified, EvidenceLabel.expert_opinion):
        notes.append("DEPA grades below A (and the dose/efficiency cut-offs) are unverified against Magalon 2016")
    if de.evidence in (EvidenceLabel.unverified, EvidenceLabel.expert_opinion):
        notes.append("Dohan Ehrenfest leukocyte rule (above baseline = L-) is RegenGuide's expert-opinion choice")
    return PrpMetrics(
        concentration_factor=concentration_factor(prod.platelets_per_uL, base.platelets_per_uL),
        platelet_dose=dose,
        platelet_dose_billion=dose / 1e9,
        recovery_efficiency_percent=recovery_efficiency_percent(
            prod.platelets_per_uL, record.product_volume_ml, base.platelets_per_uL, record.blood_volume_ml
        ),
        purity_percent=pur,
        leukocyte_factor=leuk_factor,
        paw=paw,
        depa=depa,
        dohan_ehrenfest=de,
        citations=rules.citation_ids(),
        evidence_notes=notes,
    )


class CellMetrics(_Out):
    total_cells: float
    viable_cells: float
    viability_percent: float
    cells_per_ml: float | None
    viable_cells_per_ml: float | None
    cells_per_ml_fat: float | None
    viable_cells_per_kg: float | None
    svf_to_fat_ratio: float | None = None


def _svf(iso: SvfIsolation, fat_ml: float | None) -> CellMetrics:
    viable = iso.total_cells * iso.viability_percent / 100.0
    return CellMetrics(
        total_cells=iso.total_cells,
        viable_cells=viable,
        viability_percent=iso.viability_percent,
        cells_per_ml=iso.total_cells / iso.suspension_volume_ml,
        viable_cells_per_ml=viable / iso.suspension_volume_ml,
        cells_per_ml_fat=None if fat_ml is None else iso.total_cells / fat_ml,
        viable_cells_per_kg=None,
    )


def svf_metrics(record: SvfPreparation | CalPreparation) -> CellMetrics:
    if isinstance(record, CalPreparation):
        base = _svf(record.isolation, record.svf_source_fat_ml)
        return base.model_copy(update={"svf_to_fat_ratio": record.svf_to_fat_ratio})
    return _svf(record.isolation, record.fat_processed_ml)


def cell_therapy_metrics(record: CellTherapyPreparation) -> CellMetrics:
    per_ml = None if record.volume_ml is None else record.total_cells / record.volume_ml
    return CellMetrics(
        total_cells=record.total_cells,
        viable_cells=record.viable_cells,
        viability_percent=record.viability_percent,
        cells_per_ml=per_ml,
        viable_cells_per_ml=None if per_ml is None else per_ml * record.viability_percent / 100.0,
        cells_per_ml_fat=None,
        viable_cells_per_kg=record.viable_cells_per_kg,
    )


class FatMetrics(_Out):
    lipoaspirate_ml: float
    volume_obtained_ml: float
    yield_percent: float  # volume obtained ÷ lipoaspirate harvested
    max_g_force: float | None  # strongest centrifugation step, if any
    emulsification_passes: int | None


def fat_metrics(record: FatPreparation) -> FatMetrics:
    spins = [s.g_force for s in record.processing if s.g_force is not None]
    return FatMetrics(
        lipoaspirate_ml=record.harvest.lipoaspirate_volume_ml,
        volume_obtained_ml=record.volume_obtained_ml,
        yield_percent=100.0 * record.volume_obtained_ml / record.harvest.lipoaspirate_volume_ml,
        max_g_force=max(spins) if spins else None,
        emulsification_passes=record.emulsification.passes if record.emulsification else None,
    )


def metrics_for(record: Preparation) -> PrpMetrics | FatMetrics | CellMetrics:
    """The metrics of any preparation record, by product type."""
    if isinstance(record, PrpPreparation):
        return prp_metrics(record)
    if isinstance(record, FatPreparation):
        return fat_metrics(record)
    if isinstance(record, SvfPreparation | CalPreparation):
        return svf_metrics(record)
    return cell_therapy_metrics(record)
