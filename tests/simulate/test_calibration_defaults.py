"""The default calibration lands in the published ranges: survival zone ~300 um (Eto 2012), viable rim
1.5 +/- 0.5 mm (Carpaneda 1993), central necrosis beyond ~0.16 cm radius (Khouri 2014), ~60% loss in the
viable zone (Carpaneda 1993)."""

from __future__ import annotations

import numpy as np
import pytest

from regenguide.simulate import closed_form as cf
from regenguide.simulate.retention import closed_form_zones, retained_fraction


def _anchor(kb, name):  # type: ignore[no-untyped-def]
    a = kb.anchors[name]
    return a.low, a.high


def test_survival_zone_of_a_large_deposit_is_about_300_um(kb, nominal) -> None:  # type: ignore[no-untyped-def]
    lo, hi = _anchor(kb, "survival_zone_mm")
    for geometry in ("slab", "cylinder", "sphere"):
        z = closed_form_zones(geometry, 1.0, nominal)  # 2 cm deposit
        width_mm = 10 * (1.0 - float(z["radii"]["survival_inner"]))
        assert lo <= width_mm <= hi, (geometry, width_mm)


def test_viable_rim_within_carpaneda_range(kb, nominal) -> None:  # type: ignore[no-untyped-def]
    lo, hi = _anchor(kb, "viable_rim_mm")
    for geometry in ("slab", "cylinder", "sphere"):
        for radius_cm in (0.5, 1.0, 2.0):
            z = closed_form_zones(geometry, radius_cm, nominal)
            rim_mm = 10 * (radius_cm - float(z["radii"]["necrotic"]))
            assert lo <= rim_mm <= hi, (geometry, radius_cm, rim_mm)


def test_necrosis_starts_beyond_khouri_radius(kb, nominal) -> None:  # type: ignore[no-untyped-def]
    lo, hi = _anchor(kb, "necrosis_radius_mm")
    rc_mm = 10 * float(
        cf.critical_radius("cylinder", nominal.diffusivity_cm2_s, nominal.c0, nominal.consumption_mol_cm3_s)
    )
    assert lo <= rc_mm <= hi
    below = closed_form_zones("cylinder", 0.95 * rc_mm / 10, nominal)["fractions"]["necrotic"]
    above = closed_form_zones("cylinder", 1.3 * rc_mm / 10, nominal)["fractions"]["necrotic"]
    assert float(below) == pytest.approx(0.0, abs=1e-3)
    assert float(above) > 0.02


def test_viable_zone_keeps_about_40_percent(kb, nominal) -> None:  # type: ignore[no-untyped-def]
    lo, hi = _anchor(kb, "viable_zone_take")
    z = closed_form_zones("slab", 1.0, nominal)
    fr = {k: np.asarray(v) for k, v in z["fractions"].items()}
    viable = float(fr["survival"] + fr["regenerating"])
    kept = float(
        retained_fraction(
            fr,
            take_survival=nominal.take_survival,
            take_regenerating=nominal.take_regenerating,
            multiplier=1.0,
        )
    )
    assert lo <= kept / viable <= hi
