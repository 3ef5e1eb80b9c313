"""High-level 2-D cross-section and first-days simulations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from regenguide.simulate.bed import (
    CrossSectionRequest,
    DaysRequest,
    simulate_cross_section,
    simulate_first_days,
)


def test_thin_strands_in_well_perfused_bed_keep_survival() -> None:
    result, section = simulate_cross_section(
        CrossSectionRequest(
            strands=3, diameter_mm=1.0, spacing_mm=3.0, bed_thickness_mm=4.0, perfusion="high"
        )
    )
    assert len(result.strands) == 3
    assert all(s.necrotic_fraction == 0 for s in result.strands)
    assert result.predicted_retention <= result.isolated_strand_retention + 1e-9
    assert result.min_po2_mmhg >= 0 and section.concentration.shape[0] > 10


def test_poor_perfusion_and_crowding_lower_retention() -> None:
    kw = {"strands": 3, "diameter_mm": 2.5, "bed_thickness_mm": 5.0}
    good, _ = simulate_cross_section(CrossSectionRequest(**kw, spacing_mm=8.0, perfusion="high"))
    poor, _ = simulate_cross_section(CrossSectionRequest(**kw, spacing_mm=8.0, perfusion="low"))
    crowded, _ = simulate_cross_section(CrossSectionRequest(**kw, spacing_mm=2.6, perfusion="high"))
    assert poor.predicted_retention < good.predicted_retention
    assert crowded.predicted_retention < good.predicted_retention
    # The middle strand of a crowded row is the worst off.
    assert crowded.strands[1].survival_fraction <= crowded.strands[0].survival_fraction + 1e-9


def test_cross_section_request_validation() -> None:
    with pytest.raises(ValidationError):
        CrossSectionRequest(diameter_mm=5, bed_thickness_mm=4)
    with pytest.raises(ValidationError):
        CrossSectionRequest(diameter_mm=2, spacing_mm=1, bed_thickness_mm=4)


def test_first_days_revascularisation_reduces_necrosis() -> None:
    still = simulate_first_days(DaysRequest(geometry="sphere", diameter_mm=5, hours=96))
    revasc = simulate_first_days(
        DaysRequest(geometry="sphere", diameter_mm=5, hours=96, revascularization_um_per_day=500)
    )
    assert still.revascularization_um_per_day == 0.0
    assert still.necrotic_fraction > 0
    assert revasc.necrotic_fraction < still.necrotic_fraction
    assert still.hours[-1] == pytest.approx(96)
    assert still.min_po2_mmhg[-1] < 1.0
