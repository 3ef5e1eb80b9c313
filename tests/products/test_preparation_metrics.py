from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError
from regenguide.products.metrics import (
    cell_therapy_metrics,
    concentration_factor,
    platelet_dose,
    prp_metrics,
    purity_percent,
    recovery_efficiency_percent,
    svf_metrics,
)
from regenguide.products.preparation import (
    CalPreparation,
    CellTherapyPreparation,
    FatPreparation,
    PrpPreparation,
    Spin,
    SvfPreparation,
    parse_preparation,
    rcf_from_rpm,
    rpm_from_rcf,
)
from regenguide.products.rules import (
    load_hold_times,
    load_prp_rules,
    parse_hold_times,
    parse_prp_rules,
)


# --- centrifugation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("radius", "expected"), [(8, 804.96), (12, 1207.44), (15, 1509.3)])
def test_rcf_at_3000_rpm(radius: float, expected: float) -> None:
    # 1.118e-5 * r * 3000^2 = 100.62 * r (clinical_knowledge 3.1: 805 g, 1,207 g, 1,509 g)
    assert rcf_from_rpm(3000, radius) == pytest.approx(expected, abs=0.01)
    assert rpm_from_rcf(expected, radius) == pytest.approx(3000, rel=1e-6)


def test_spin_from_rpm_and_inconsistency() -> None:
    spin = Spin.from_rpm(3000, 12, minutes=3)
    assert spin.g_force == pytest.approx(1207.4) and spin.rpm == 3000
    with pytest.raises(ValidationError, match="does not match"):
        Spin(g_force=3000, minutes=3, rpm=3000, rotor_radius_cm=12)
    with pytest.raises(ValueError):
        rcf_from_rpm(0, 10)


# --- PRP ----------------------------------------------------------------------------------------
def test_prp_metrics_hand_computed(f: Any) -> None:
    rec = parse_preparation(f.prp())
    assert isinstance(rec, PrpPreparation)
    m = prp_metrics(rec)
    assert m.concentration_factor == pytest.approx(5.0)
    assert m.platelet_dose == pytest.approx(5e9)  # 1e6/uL * 5 mL * 1000 uL/mL
    assert m.recovery_efficiency_percent == pytest.approx(100 * 5e9 / 6e9)  # 83.33 %
    assert m.purity_percent == pytest.approx(100 * 1e6 / 1_054_000)  # 94.88 %
    assert m.leukocyte_factor == pytest.approx(4000 / 6000)
    assert m.paw.code == "P3-Bβ"
    assert m.depa.dose.grade == "B"  # 5.0 billion is not > 5
    assert m.depa.efficiency.grade == "B"
    assert m.depa.purity is not None and m.depa.purity.grade == "A"
    assert m.depa.purity.evidence is EvidenceLabel.verified
    assert m.depa.evidence is EvidenceLabel.unverified
    assert m.dohan_ehrenfest.family == "P-PRP"
    assert any("unverified" in n for n in m.evidence_notes)
    assert "magalon-2016-depa" in m.citations and "delong-2012-paw" in m.citations


def test_formulas_directly() -> None:
    assert concentration_factor(1_200_000, 240_000) == pytest.approx(5.0)
    assert platelet_dose(800_000, 4) == pytest.approx(3.2e9)
    assert recovery_efficiency_percent(800_000, 4, 200_000, 20) == pytest.approx(80.0)
    assert purity_percent(900, 50, 50) == pytest.approx(90.0)
    with pytest.raises(ValueError):
        concentration_factor(1, 0)


@pytest.mark.parametrize(
    ("platelets", "code"),
    [
        (200_000, "P1"),
        (150_000, "P1"),
        (200_001, "P2"),
        (750_000, "P2"),
        (750_001, "P3"),
        (1_250_000, "P3"),
        (1_250_001, "P4"),
    ],
)
def test_paw_platelet_boundaries(platelets: float, code: str, f: Any) -> None:
    product = {"platelets_per_uL": platelets, "leukocytes_per_uL": 7000, "neutrophils_per_uL": 4000}
    rec = parse_preparation(f.prp(product=product, product_volume_ml=1))
    m = prp_metrics(rec)  # type: ignore[arg-type]
    assert m.paw.platelets == code
    assert m.paw.leukocytes == "A" and m.paw.neutrophils == "α"


def test_paw_activation_and_dohan_ehrenfest_families(f: Any) -> None:
    act = prp_metrics(parse_preparation(f.prp(activation="calcium_chloride")))  # type: ignore[arg-type]
    assert act.paw.code == "P3-x-Bβ" and act.depa.activation == "calcium_chloride"
    leuko = dict(f.prp()["product"], leukocytes_per_uL=12_000, neutrophils_per_uL=None)
    assert prp_metrics(parse_preparation(f.prp(product=leuko))).dohan_ehrenfest.family == "L-PRP"  # type: ignore[arg-type]
    prf = f.prp(anticoagulant="none", anticoagulant_volume_ml=None, anticoagulant_lot=None)
    assert prp_metrics(parse_preparation(prf)).dohan_ehrenfest.family == "P-PRF"  # type: ignore[arg-type]
    lprf = dict(prf, product=leuko)
    assert prp_metrics(parse_preparation(lprf)).dohan_ehrenfest.family == "L-PRF"  # type: ignore[arg-type]
    no_wbc = f.prp(product={"platelets_per_uL": 900_000})
    m = prp_metrics(parse_preparation(no_wbc))  # type: ignore[arg-type]
    assert m.dohan_ehrenfest.family is None and m.depa.purity is None and m.paw.code == "P3-?"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"product_volume_ml": 40}, "exceeds the blood"),
        ({"anticoagulant": "none"}, "anticoagulant 'none'"),
        ({"activator_lot": {"kind": "activator", "name": "CaCl2", "lot": "C1"}}, "activation is 'none'"),
        ({"spins": []}, "at least 1"),
        ({"spins": [{"g_force": 30000, "minutes": 5}]}, "less than or equal"),
        ({"baseline": {"platelets_per_uL": -1}}, "greater than or equal"),
        ({"product": {"platelets_per_uL": 1e6, "leukocytes_per_uL": 10, "neutrophils_per_uL": 20}}, "neutrophils"),
        ({"prepared_at": "2026-11-22T08:00:00"}, "timezone"),
        ({"unknown_field": 1}, "Extra inputs"),
        ({"kit": {"kind": "enzyme", "name": "x", "lot": "y"}}, "kind 'kit'"),
    ],
)
def test_prp_validation(over: dict, message: str, f: Any) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_preparation(f.prp(**over))


# --- fat ----------------------------------------------------------------------------------------
def test_fat_records(f: Any) -> None:
    base = {"prepared_at": "2026-11-22T08:00:00+00:00", "operator": "dr.c", "harvest": f.fat_harvest()}
    micro = parse_preparation(
        dict(
            base,
            product_type="microfat",
            volume_obtained_ml=60,
            processing=[
                {"kind": "centrifugation", "g_force": 1200, "minutes": 3},
                {"kind": "decantation", "minutes": 10},
            ],
        )
    )
    assert isinstance(micro, FatPreparation) and micro.processing[0].g_force == 1200
    nano = parse_preparation(
        dict(base, product_type="nanofat", volume_obtained_ml=10, emulsification={"passes": 30, "filter_um": 500})
    )
    assert isinstance(nano, FatPreparation) and nano.emulsification is not None
    with pytest.raises(ValidationError, match="emulsification"):
        parse_preparation(dict(base, product_type="nanofat", volume_obtained_ml=10))
    with pytest.raises(ValidationError, match="not emulsified"):
        parse_preparation(dict(base, product_type="microfat", volume_obtained_ml=10, emulsification={"passes": 3}))
    with pytest.raises(ValidationError, match="g_force and minutes"):
        parse_preparation(
            dict(
                base,
                product_type="microfat",
                volume_obtained_ml=10,
                processing=[{"kind": "centrifugation", "minutes": 3}],
            )
        )
    with pytest.raises(ValidationError, match="g_force given"):
        parse_preparation(
            dict(base, product_type="microfat", volume_obtained_ml=10, processing=[{"kind": "washing", "g_force": 3}])
        )
    with pytest.raises(ValidationError, match="exceeds the lipoaspirate"):
        parse_preparation(dict(base, product_type="microfat", volume_obtained_ml=500))
    harvest = dict(f.fat_harvest(), suction_pressure_mmHg=900)
    with pytest.raises(ValidationError):
        parse_preparation(dict(base, harvest=harvest, product_type="microfat", volume_obtained_ml=10))


# --- SVF / CAL ----------------------------------------------------------------------------------
def test_svf_metrics_hand_computed(f: Any) -> None:
    rec = parse_preparation(f.svf())
    assert isinstance(rec, SvfPreparation)
    m = svf_metrics(rec)
    assert m.cells_per_ml == pytest.approx(4e6)  # 2e7 / 5 mL
    assert m.viable_cells == pytest.approx(1.7e7)  # 85 %
    assert m.viable_cells_per_ml == pytest.approx(3.4e6)
    assert m.cells_per_ml_fat == pytest.approx(2e5)  # 2e7 / 100 mL fat
    assert [lot.lot for lot in rec.lots()] == ["COL-42"]


def test_svf_validation(f: Any) -> None:
    with pytest.raises(ValidationError, match="enzyme and its lot"):
        parse_preparation(f.svf(enzyme=None))
    with pytest.raises(ValidationError, match="use 'svf_enzymatic'"):
        parse_preparation(f.svf(product_type="svf_mechanical"))
    mech = parse_preparation(f.svf(product_type="svf_mechanical", enzyme=None))
    assert mech.lots() == []
    with pytest.raises(ValidationError):
        parse_preparation(f.svf(isolation={"total_cells": 1e6, "viability_percent": 101, "suspension_volume_ml": 1}))
    with pytest.raises(ValidationError, match="fat processed exceeds"):
        parse_preparation(f.svf(fat_processed_ml=500))


def test_cal_ratio(f: Any) -> None:
    rec = parse_preparation(
        {
            "product_type": "cal",
            "prepared_at": "2026-11-22T08:00:00+00:00",
            "operator": "dr.c",
            "harvest": f.fat_harvest(),
            "fat_graft_ml": 60,
            "svf_source_fat_ml": 60,
            "svf_method": "enzymatic",
            "enzyme": {"name": "collagenase", "lot": "COL-9"},
            "isolation": {"total_cells": 3e7, "viability_percent": 80, "suspension_volume_ml": 6},
        }
    )
    assert isinstance(rec, CalPreparation)
    assert rec.svf_to_fat_ratio == pytest.approx(1.0)  # half the lipoaspirate feeds the other half
    m = svf_metrics(rec)
    assert m.svf_to_fat_ratio == pytest.approx(1.0) and m.cells_per_ml_fat == pytest.approx(5e5)
    with pytest.raises(ValidationError, match="exceed the lipoaspirate"):
        CalPreparation.model_validate(dict(rec.model_dump(), fat_graft_ml=100))


# --- cell therapies -----------------------------------------------------------------------------
def test_cell_therapy_metrics_and_release(f: Any) -> None:
    rec = parse_preparation(f.cart())
    assert isinstance(rec, CellTherapyPreparation)
    m = cell_therapy_metrics(rec)
    assert m.viable_cells == pytest.approx(9e7)
    assert m.viable_cells_per_kg == pytest.approx(1.8e6)
    assert m.cells_per_ml == pytest.approx(2e6)
    assert rec.release_status() == "pass"
    failed = copy.deepcopy(f.cart())
    failed["release_tests"][1]["result"] = "fail"
    assert parse_preparation(failed).release_status() == "fail"  # type: ignore[union-attr]
    failed["release_tests"][1]["result"] = "pending"
    assert parse_preparation(failed).release_status() == "pending"  # type: ignore[union-attr]
    assert [lot.lot for lot in rec.lots()] == ["MFG-123"]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"manufacturing_lot": None}, "manufacturing site and lot"),
        ({"passage": 3}, "passage applies"),
        ({"cryopreservation": None}, "no cryopreservation"),
        ({"thaw": {"thawed_at": "2026-10-19T07:30:00+00:00"}}, "thawed before it was frozen"),
        ({"viability_percent": 120}, "less than or equal"),
        ({"product_type": "adsc_expanded"}, "passage number"),
    ],
)
def test_cell_therapy_validation(over: dict, message: str, f: Any) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_preparation(f.cart(**over))


def test_other_cell_types_parse(f: Any) -> None:
    bmac = parse_preparation(
        f.cart(
            product_type="bmac",
            manufacturing_site=None,
            manufacturing_lot=None,
            cryopreservation=None,
            thaw=None,
            collection={"method": "bone_marrow_aspiration", "collected_at": "2026-11-22T07:00:00+00:00"},
        )
    )
    assert bmac.product_type == "bmac"
    adsc = parse_preparation(f.cart(product_type="adsc_expanded", passage=3))
    assert adsc.product_type == "adsc_expanded"
    hsct = parse_preparation(f.cart(product_type="hsct_autologous", dose_basis="CD34+ cells"))
    assert hsct.product_type == "hsct_autologous"
    with pytest.raises(ValidationError):
        parse_preparation({"product_type": "microneedling"})


# --- rule files ---------------------------------------------------------------------------------
def test_rule_files_load_and_fail_loudly() -> None:
    rules = load_prp_rules()
    assert rules.paw.p2_max_per_uL == 750_000 and rules.paw.p3_max_per_uL == 1_250_000
    holds = load_hold_times()
    assert holds["prp"].hours == 4 and holds["prp"].evidence is EvidenceLabel.verified  # type: ignore[index]
    assert holds["microfat"].hours is None  # type: ignore[index]
    raw = rules.model_dump(mode="json")
    bad = copy.deepcopy(raw)
    bad["paw"]["citations"] = ["no-such-citation"]
    with pytest.raises(KnowledgeBaseError, match="no-such-citation"):
        parse_prp_rules(bad)
    bad = copy.deepcopy(raw)
    bad["depa"]["dose_billion"][1]["above"] = 10
    with pytest.raises(KnowledgeBaseError, match="strictly decrease"):
        parse_prp_rules(bad)
    bad = copy.deepcopy(raw)
    bad["paw"]["p3_max_per_uL"] = 100
    with pytest.raises(KnowledgeBaseError, match="must exceed"):
        parse_prp_rules(bad)
    entries = yaml.safe_load(
        "- {product_type: prp, hours: 4, clock_starts: processed, evidence: verified, "
        "citations: [wilson-2018-prp-storage]}"
    )
    with pytest.raises(KnowledgeBaseError, match="duplicate"):
        parse_hold_times(entries + entries)
    with pytest.raises(KnowledgeBaseError, match="microneedling"):
        parse_hold_times([dict(entries[0], product_type="microneedling")])
    with pytest.raises(KnowledgeBaseError, match="facility-sop"):
        parse_hold_times([dict(entries[0], citations=["facility-sop:SOP-1"])])
    assert parse_hold_times([dict(entries[0], citations=["facility-sop:SOP-1"])], facility=True)


def test_fat_metrics_and_dispatch(f: Any) -> None:
    from regenguide.products.metrics import FatMetrics, PrpMetrics, metrics_for

    rec = parse_preparation(
        {
            "product_type": "nanofat",
            "prepared_at": "2026-11-22T08:00:00+00:00",
            "operator": "dr.c",
            "harvest": f.fat_harvest(),
            "processing": [
                {"kind": "centrifugation", "g_force": 1200, "minutes": 3},
                {"kind": "centrifugation", "g_force": 400, "minutes": 2},
            ],
            "volume_obtained_ml": 30,
            "emulsification": {"passes": 30, "filter_um": 500},
        }
    )
    m = metrics_for(rec)
    assert isinstance(m, FatMetrics)
    assert m.yield_percent == pytest.approx(25.0)  # 30 of 120 mL
    assert m.max_g_force == 1200 and m.emulsification_passes == 30
    assert isinstance(metrics_for(parse_preparation(f.prp())), PrpMetrics)
    assert metrics_for(parse_preparation(f.cart())).viable_cells_per_kg == pytest.approx(1.8e6)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(50_000, 500_000),
    factor=st.floats(0.5, 10),
    blood=st.floats(5, 120),
    fraction=st.floats(0.02, 0.5),
)
def test_recovery_identity(base: float, factor: float, blood: float, fraction: float) -> None:
    # recovery % = concentration factor × product volume / blood volume × 100
    product, volume = base * factor, blood * fraction
    assert recovery_efficiency_percent(product, volume, base, blood) == pytest.approx(factor * fraction * 100)
    assert concentration_factor(product, base) == pytest.approx(factor)
    assert platelet_dose(product, volume) == pytest.approx(product * volume * 1000)
