from __future__ import annotations

import pytest

from regenguide.domain.findings import Indicator
from regenguide.domain.plan import PlanDocument
from regenguide.imaging.config import VascularRules, parse_config, vascular_rules
from regenguide.imaging.dicom_io import Calibration, CalibrationMissing
from regenguide.imaging.doppler import extract_flow
from regenguide.imaging.measure import ScanLine, measure_thickness
from regenguide.imaging.phantom import PhantomSpec, VesselSpec, make_phantom
from regenguide.imaging.refs import ImageReference
from regenguide.imaging.vascular import (
    LayerDepths,
    MappedVessel,
    VascularMap,
    vascular_findings,
    vascular_map_from_flow,
)
from regenguide.kb.references import KnowledgeBaseError, resolve


def plan(*injections: dict[str, object], doppler: bool = False) -> PlanDocument:
    return PlanDocument.model_validate(
        {
            "indication": "volume loss",
            "modality": "nanofat",
            "guidance": {"imaging": "ultrasound", "doppler": doppler},
            "injections": list(injections),
        }
    )


GLABELLA_MAP = VascularMap(
    region="glabella",
    side="midline",
    vessels=[
        MappedVessel(
            kind="artery",
            name="supratrochlear artery",
            depth_mm=3.3,
            diameter_mm=1.0,
            image=ImageReference(sop_instance_uid="1.2.3.4", frame=0, point_px=(120, 80)),
        )
    ],
)


def test_margin_is_data_with_its_evidence_label() -> None:
    rules = vascular_rules()
    assert rules.safety_margin_mm.value == 2.0
    assert rules.safety_margin_mm.evidence == "expert_opinion"
    for rule in [rules.safety_margin_mm, *rules.doppler_required_regions, *rules.critical_regions]:
        resolve(rule.citations)


def test_injection_near_artery_gives_finding_with_image_reference() -> None:
    findings = vascular_findings(plan({"region": "glabella", "depth_mm": 2.0}), [GLABELLA_MAP])
    (f,) = findings
    assert f.rule == "imaging.artery_within_margin"
    assert f.indicator is Indicator.critical  # glabella is a critical region in the rule data
    assert f.injection_index == 0
    assert "1.2.3.4" in f.detail and "frame 0" in f.detail
    assert "expert_opinion" in f.detail
    assert f.evidence == "expert_opinion"
    assert len(f.summary) < 140
    resolve(f.citations)


def test_margin_boundary_uses_the_vessel_wall() -> None:
    # Artery centre 3.3 mm, radius 0.5 mm: wall at 2.8 mm; margin 2.0 mm -> safe above 0.8 mm.
    assert vascular_findings(plan({"region": "glabella", "depth_mm": 0.7}), [GLABELLA_MAP]) == []
    assert len(vascular_findings(plan({"region": "glabella", "depth_mm": 0.9}), [GLABELLA_MAP])) == 1
    assert len(vascular_findings(plan({"region": "glabella", "depth_mm": 5.7}), [GLABELLA_MAP])) == 1
    assert vascular_findings(plan({"region": "glabella", "depth_mm": 5.9}), [GLABELLA_MAP]) == []


def test_non_critical_region_is_a_warning_and_veins_are_ignored() -> None:
    cheek = VascularMap(
        region="cheek",
        side="left",
        vessels=[MappedVessel(kind="vein", depth_mm=4.0), MappedVessel(kind="unknown", depth_mm=6.0)],
    )
    findings = vascular_findings(plan({"region": "Cheek", "side": "left", "depth_mm": 5.0}), [cheek])
    (f,) = findings
    assert f.indicator is Indicator.warning
    assert "kind not known" in f.summary
    # The other side is not covered by the left map.
    assert vascular_findings(plan({"region": "cheek", "side": "right", "depth_mm": 5.0}), [cheek]) == []


def test_missing_map_where_doppler_required() -> None:
    findings = vascular_findings(
        plan(
            {"region": "forehead", "depth_mm": 1.0},
            {"region": "forehead", "depth_mm": 1.5},
            {"region": "chin"},
        ),
        [],
    )
    (f,) = findings  # one finding per region and side, not per injection
    assert f.rule == "imaging.vascular_map_missing"
    assert "Injections 1, 2" in f.detail
    resolve(f.citations)
    # The plan itself asking for Doppler makes every unmapped region a finding.
    findings = vascular_findings(plan({"region": "chin"}, doppler=True), [])
    assert [f.rule for f in findings] == ["imaging.vascular_map_missing"]
    assert "plan asks for Doppler guidance" in findings[0].detail


def test_plane_depth_from_measured_layers_and_unknown_depth() -> None:
    vmap = GLABELLA_MAP.model_copy(update={"layers": LayerDepths(dermis_bottom_mm=1.8, fascia_mm=6.0)})
    findings = vascular_findings(plan({"region": "glabella", "plane": "subcutaneous"}), [vmap])
    assert [f.rule for f in findings] == ["imaging.artery_within_margin"]
    assert "1.8-6.0 mm" in findings[0].summary
    findings = vascular_findings(plan({"region": "glabella", "plane": "Intradermal"}), [vmap])
    assert len(findings) == 1  # dermis bottom 1.8 mm is 1.0 mm from the wall at 2.8 mm
    findings = vascular_findings(plan({"region": "glabella"}), [GLABELLA_MAP])
    assert [f.rule for f in findings] == ["imaging.depth_unknown"]
    assert findings[0].indicator is Indicator.info


def test_malformed_rules_fail_loudly() -> None:
    raw = vascular_rules().model_dump(mode="json")
    raw["safety_margin_mm"]["citations"] = ["no-such-citation"]
    with pytest.raises(KnowledgeBaseError, match="no-such-citation"):
        parse_config(VascularRules, raw, "test")
    raw = vascular_rules().model_dump(mode="json")
    raw["plane_layers"]["weird"] = ["bone", "skin"]
    with pytest.raises(KnowledgeBaseError, match="lies below"):
        parse_config(VascularRules, raw, "test")
    raw = vascular_rules().model_dump(mode="json")
    raw["safety_margin_mm"]["value"] = -1
    with pytest.raises(KnowledgeBaseError):
        parse_config(VascularRules, raw, "test")


def test_map_from_phantom_flow_end_to_end() -> None:
    spec = PhantomSpec(
        vessels=[
            VesselSpec(x_mm=10.0, depth_mm=4.0, diameter_mm=1.5, direction="towards"),
            VesselSpec(x_mm=25.0, depth_mm=9.0, diameter_mm=2.0, direction="away"),
        ]
    )
    ph = make_phantom(4, spec)
    cal = Calibration(mm_per_px_x=spec.mm_per_px, mm_per_px_y=spec.mm_per_px, source="user")
    result = extract_flow(ph.frames[0], box=spec.colour_box, calibration=cal)
    thickness = measure_thickness(ph.frames[0], ScanLine(start=(500, 40), end=(500, 440)), cal)
    vmap = vascular_map_from_flow(
        result,
        region="temple",
        side="left",
        landmark="tragus",
        landmark_x_px=40.0,
        image=ImageReference(sop_instance_uid="9.9"),
        kind="artery",
        thickness=thickness,
    )
    assert sorted(round(v.depth_mm, 1) for v in vmap.vessels) == pytest.approx([4.0, 9.0], abs=0.3)
    assert sorted(round(v.lateral_offset_mm or 0, 1) for v in vmap.vessels) == pytest.approx(
        [10.0, 25.0], abs=0.2
    )
    assert vmap.layers is not None and vmap.layers.dermis_bottom_mm == pytest.approx(1.75, abs=0.25)
    assert all(v.image is not None and v.image.point_px is not None for v in vmap.vessels)
    findings = vascular_findings(plan({"region": "temple", "side": "left", "depth_mm": 3.0}), [vmap])
    assert [f.rule for f in findings] == ["imaging.artery_within_margin"]
    with pytest.raises(CalibrationMissing):
        vascular_map_from_flow(extract_flow(ph.frames[0], box=spec.colour_box), region="temple")


def test_kb_aliases_are_canonicalised() -> None:
    from regenguide.kb import knowledge_base

    kb = knowledge_base()
    temple_alias = (kb.regions["temple"].aliases or ["Temple"])[0]  # "temporal" today
    plane_alias = (kb.planes["supraperiosteal"].aliases or ["Supraperiosteal"])[0]  # "preperiosteal"
    temple = VascularMap(region="temple", side="left", vessels=[MappedVessel(kind="artery", depth_mm=2.0)])
    findings = vascular_findings(plan({"region": temple_alias, "side": "left", "depth_mm": 2.5}), [temple])
    assert [f.rule for f in findings] == ["imaging.artery_within_margin"]
    missing = vascular_findings(plan({"region": temple_alias, "side": "right", "depth_mm": 2.5}), [temple])
    assert [f.rule for f in missing] == ["imaging.vascular_map_missing"]  # temple requires Doppler
    deep = GLABELLA_MAP.model_copy(
        update={"layers": LayerDepths(dermis_bottom_mm=1.8, fascia_mm=3.0, bone_mm=5.5)}
    )
    findings = vascular_findings(plan({"region": "glabella", "plane": plane_alias}), [deep])
    assert len(findings) == 1 and "5.5 mm" in findings[0].summary  # alias of supraperiosteal: at the bone


def test_rules_with_unknown_region_fail_at_load() -> None:
    from regenguide.imaging.config import check_vocabulary

    raw = vascular_rules().model_dump(mode="json")
    raw["critical_regions"][0]["region"] = "elbow"
    with pytest.raises(KnowledgeBaseError, match="unknown region 'elbow'"):
        check_vocabulary(parse_config(VascularRules, raw, "test"), "test")
    raw = vascular_rules().model_dump(mode="json")
    raw["plane_layers"]["subfascial"] = ["fascia", "bone"]
    with pytest.raises(KnowledgeBaseError, match="unknown plane 'subfascial'"):
        check_vocabulary(parse_config(VascularRules, raw, "test"), "test")


def test_plane_typical_depth_from_the_knowledge_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without measured layers, a plane's sourced typical depth (when the KB gives one) is used."""
    import regenguide.imaging.vascular as vascular
    from regenguide.kb import knowledge_base
    from regenguide.kb.schema import NumRange

    kb = knowledge_base()
    sub = kb.plane("subcutaneous")
    assert sub is not None
    typical = sub.model_copy(
        update={"depth_mm": NumRange(min=2.0, max=4.0, citations=["seed-review-2026"], evidence="secondary")}
    )

    class StubKB:
        def region(self, code: str) -> object:
            return kb.region(code)

        def plane(self, code: str) -> object:
            found = kb.plane(code)
            return typical if found is not None and found.code == "subcutaneous" else found

    monkeypatch.setattr(vascular, "knowledge_base", lambda: StubKB())
    (f,) = vascular_findings(plan({"region": "glabella", "plane": "subcutaneous"}), [GLABELLA_MAP])
    assert f.rule == "imaging.artery_within_margin"
    assert "typical depth of the plane 'subcutaneous'" in f.detail
    assert "seed-review-2026" in f.citations
    assert "2.0-4.0 mm" in f.summary


def test_one_finding_per_injection_and_map_naming_the_nearest_vessel() -> None:
    vmap = VascularMap(
        region="cheek",
        vessels=[
            MappedVessel(kind="artery", name="far", depth_mm=6.5, diameter_mm=1.0),
            MappedVessel(kind="artery", name="near", depth_mm=4.2, diameter_mm=1.0),
            MappedVessel(kind="unknown", name="middle", depth_mm=5.0, diameter_mm=1.0),
        ],
    )
    (f,) = vascular_findings(plan({"region": "cheek", "depth_mm": 4.0}), [vmap])
    assert "mapped near at 4.2 mm" in f.summary
    assert "2 other mapped vessel(s)" in f.detail
