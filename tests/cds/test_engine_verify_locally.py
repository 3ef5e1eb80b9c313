"""The engine's regulatory findings: a pack that cannot classify a product, and a jurisdiction without a pack,
both ask for local confirmation (a warning), never 'allowed' and never a silent pass."""

from __future__ import annotations

from regenguide.cds.engine import check_plan
from regenguide.domain.plan import PlanDocument


def _plan(jurisdiction: str) -> PlanDocument:
    return PlanDocument.model_validate({
        "schema": "regenguide.plan/1", "jurisdiction": jurisdiction, "indication": "facial_volume_loss",
        "modality": "microfat", "same_surgical_procedure": True, "homologous_use": True,
        "guidance": {"imaging": "ultrasound", "doppler": True},
        "consent": {"status": "signed", "signed_on": "2026-11-01"},
        "injections": [{"region": "malar", "side": "left", "plane": "subcutaneous", "device": "cannula",
                        "gauge": 18, "volume_ml": 2, "bolus_ml": 0.05}],
    })


def _regulatory_findings(jurisdiction: str) -> list[tuple[str, str, str]]:
    result = check_plan(_plan(jurisdiction))
    return [(f.rule, f.indicator.value, f.summary) for f in result.findings if f.rule.startswith("regulatory")]


def test_pack_without_a_source_for_the_product_asks_for_local_confirmation() -> None:
    result = check_plan(_plan("CA"))
    assert result.regulatory["class"] == "verify_locally" and result.regulatory["pack"] == "CA"
    found = _regulatory_findings("CA")
    assert [(r, i) for r, i, _ in found] == [("regulatory.verify_locally", "warning")]
    assert "no regulatory rule pack" not in found[0][2]


def test_jurisdiction_without_a_pack() -> None:
    found = _regulatory_findings("ZZ")
    assert [(r, i) for r, i, _ in found] == [("regulatory.verify_locally", "warning")]
    assert "no regulatory rule pack" in found[0][2]
