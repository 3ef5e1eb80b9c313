"""Retention of one deposit: nominal value, Monte Carlo interval, modality/processing effects, overrides."""

from __future__ import annotations

import math

import pytest

from regenguide.simulate.retention import SimulationRequest, simulate


def _sim(**kw):  # type: ignore[no-untyped-def]
    kw.setdefault("draws", 500)
    return simulate(SimulationRequest(**kw))


def test_thin_strand_keeps_take_survival(kb) -> None:  # type: ignore[no-untyped-def]
    r = _sim(geometry="cylinder", diameter_mm=1.0)
    assert r.zones.survival_fraction == 1.0
    assert r.predicted_retention == pytest.approx(kb.value("take_survival"))
    lo, hi = r.retention_interval
    assert 0.41 - 1e-9 <= lo < r.predicted_retention < hi <= 0.53 + 1e-9
    assert r.anoxic_core_diameter_mm == 0.0


def test_retention_falls_with_size_and_core_appears() -> None:
    values = [_sim(geometry="sphere", diameter_mm=d) for d in (2, 4, 8, 16)]
    rets = [v.predicted_retention for v in values]
    assert all(a > b for a, b in zip(rets, rets[1:], strict=False))
    assert values[0].anoxic_core_diameter_mm == 0.0
    assert values[-1].anoxic_core_diameter_mm > 0.0
    assert values[-1].zones.necrotic_fraction > 0.5


def test_critical_size_keys_and_override(kb) -> None:  # type: ignore[no-untyped-def]
    r = _sim(geometry="sphere", diameter_mm=3, consumption_mol_cm3_s=1e-10, diffusivity_cm2_s=1.5e-5)
    c0 = kb.value("solubility_mol_cm3_mmhg") * 55.0
    assert r.critical_size_mm == pytest.approx(20 * math.sqrt(6 * 1.5e-5 * c0 / 1e-10), rel=1e-9)
    used = {p.name: p for p in r.parameters}
    assert (
        used["consumption_mol_cm3_s"].overridden and used["consumption_mol_cm3_s"].evidence == "user override"
    )
    assert any("solubility" in u for u in r.unverified_parameters)
    assert r.citations and r.disclaimer


def test_slab_critical_size_is_thickness() -> None:
    r = _sim(geometry="slab", diameter_mm=1.0, boundary_po2_mmhg=50.0)
    assert r.critical_size_mm == pytest.approx(
        2 * 10 * math.sqrt(2 * 2e-5 * 1.34e-9 * 50 / 2.303e-10), rel=1e-6
    )


def test_obese_recipient_has_smaller_critical_size() -> None:
    lean = _sim(geometry="cylinder", diameter_mm=6)
    obese = _sim(geometry="cylinder", diameter_mm=6, obese=True)
    assert obese.critical_size_mm == pytest.approx(lean.critical_size_mm * math.sqrt(47 / 55), rel=1e-9)
    assert obese.predicted_retention < lean.predicted_retention


def test_modalities_and_processing() -> None:
    base = _sim(geometry="cylinder", diameter_mm=4)
    cal = _sim(geometry="cylinder", diameter_mm=4, modality="cal")
    nano = _sim(geometry="cylinder", diameter_mm=4, modality="nanofat")
    assert cal.predicted_retention == pytest.approx(min(1.0, base.predicted_retention * 1.62), rel=1e-9)
    assert nano.predicted_retention < base.predicted_retention
    cotton = _sim(geometry="cylinder", diameter_mm=1, processing="cotton_pad")
    sed = _sim(geometry="cylinder", diameter_mm=1, processing="sedimentation")
    assert cotton.predicted_retention / sed.predicted_retention == pytest.approx(41 / 31, rel=0.01)
    with pytest.raises(ValueError):
        _sim(geometry="cylinder", diameter_mm=1, processing="blender")


def test_interval_reproducible_with_seed() -> None:
    a = _sim(geometry="sphere", diameter_mm=5, seed=3)
    b = _sim(geometry="sphere", diameter_mm=5, seed=3)
    assert a.retention_interval == b.retention_interval
    assert a.retention_interval[0] < a.retention_median < a.retention_interval[1]


def test_michaelis_menten_simulation() -> None:
    zero = _sim(geometry="cylinder", diameter_mm=5)
    mm = _sim(geometry="cylinder", diameter_mm=5, kinetics="mm", draws=20, grid_cells=100)
    assert mm.critical_size_mm > zero.critical_size_mm
    assert mm.draws == 20
    assert mm.predicted_retention >= zero.predicted_retention
    assert 0 <= mm.retention_interval[0] <= mm.retention_interval[1] <= 1
