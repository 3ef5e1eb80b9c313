"""Plan integration: deposit geometry, facial-plan retention in the published range, recommendations and
findings."""

from __future__ import annotations

import math

import pytest

from regenguide.domain.findings import Finding
from regenguide.domain.plan import PlanDocument
from regenguide.kb.references import resolve
from regenguide.simulate.plan import graft_findings, predict_plan

# Mean facial-subunit volumes from Shue, Kurlander & Guyuron 2018 (Aesthetic Plast Surg 42(5)), per side.
FACE = [
    ("temple", 5.9, 60, 45),
    ("midface", 1.4, 20, 30),
    ("nasolabial_fold", 2.8, 30, 40),
    ("tear_trough", 0.65, 12, 20),
    ("chin", 6.7, 70, 35),
]


def facial_plan(modality: str = "microfat", **extra: object) -> PlanDocument:
    injections = []
    for region, volume, passes, length in FACE:
        for side in ("left", "right") if region != "chin" else ("midline",):
            injections.append(
                {
                    "region": region,
                    "side": side,
                    "volume_ml": volume,
                    "passes": passes,
                    "tunnel_length_mm": length,
                    "recipient_thickness_mm": 8.0,
                    "recipient_perfusion": "normal",
                    **extra,
                }
            )
    return PlanDocument.model_validate(
        {
            "indication": "facial volume loss",
            "modality": modality,
            "patient": {"bmi": 23},
            "injections": injections,
        }
    )


def test_facial_plan_predicts_published_retention(kb) -> None:  # type: ignore[no-untyped-def]
    pred = predict_plan(facial_plan(), draws=1000)
    lv = kb.anchors["facial_retention"]
    assert pred.predicted_retention is not None and pred.retention_interval is not None
    assert lv.low <= pred.predicted_retention <= lv.high  # 26-83% (Lv 2021)
    assert 0.41 <= pred.predicted_retention <= 0.53  # within the pooled 95% CI
    lo, hi = pred.retention_interval
    assert lv.low <= lo < pred.predicted_retention < hi <= lv.high
    assert pred.predicted_retained_ml == pytest.approx(pred.predicted_retention * pred.injected_ml)


def test_processing_methods_follow_wu_2018(kb) -> None:  # type: ignore[no-untyped-def]
    res = {
        m: predict_plan(facial_plan(), processing=m, draws=200).predicted_retention
        for m in ("cotton_pad", "centrifugation", "sedimentation")
    }
    assert res["cotton_pad"] > res["centrifugation"] > res["sedimentation"]
    assert res["cotton_pad"] / res["centrifugation"] == pytest.approx(41 / 34, rel=0.02)
    assert res["centrifugation"] / res["sedimentation"] == pytest.approx(34 / 31, rel=0.02)
    with pytest.raises(ValueError):
        predict_plan(facial_plan(), processing="unknown")


def test_strand_and_bolus_geometry() -> None:
    plan = PlanDocument.model_validate(
        {
            "indication": "x",
            "modality": "microfat",
            "injections": [
                {"region": "cheek", "volume_ml": 2.0, "passes": 20, "tunnel_length_mm": 40},
                {"region": "chin", "volume_ml": 1.0, "bolus_ml": 0.1},
            ],
        }
    )
    pred = predict_plan(plan, draws=100)
    strand, bolus = pred.injections
    area_cm2 = 2.0 / (20 * 4.0)
    assert strand.geometry == "cylinder" and strand.deposits == 20
    assert strand.deposit_diameter_mm == pytest.approx(20 * math.sqrt(area_cm2 / math.pi))
    assert bolus.geometry == "sphere" and bolus.deposits == pytest.approx(10)
    assert bolus.deposit_diameter_mm == pytest.approx(20 * (3 * 0.1 / (4 * math.pi)) ** (1 / 3))


def test_necrotic_core_finding_and_its_suggestion_resolves_it() -> None:
    inj = {"region": "cheek", "volume_ml": 3.0, "passes": 3, "tunnel_length_mm": 40}
    plan = PlanDocument.model_validate({"indication": "x", "modality": "microfat", "injections": [inj]})
    findings = graft_findings(plan)
    necrotic = [f for f in findings if f.rule == "graft.necrotic_core"]
    assert necrotic and necrotic[0].injection_index == 0
    passes = necrotic[0].suggestions[0].changes["passes"]
    assert isinstance(passes, int) and passes > 3
    fixed = PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "injections": [{**inj, "passes": passes}]}
    )
    assert not [f for f in graft_findings(fixed) if f.rule == "graft.necrotic_core"]
    assert (
        predict_plan(fixed, draws=100).predicted_retention > predict_plan(plan, draws=100).predicted_retention
    )


def test_capacity_and_staging() -> None:
    inj = {
        "region": "temple",
        "volume_ml": 10.0,
        "passes": 80,
        "tunnel_length_mm": 30,
        "recipient_thickness_mm": 5,
    }
    plan = PlanDocument.model_validate({"indication": "x", "modality": "microfat", "injections": [inj]})
    pred = predict_plan(plan, draws=100)
    p = pred.injections[0]
    assert p.graft_to_capacity_ratio is not None and p.graft_to_capacity_ratio > 1
    assert p.interstitial_pressure_mmhg == pytest.approx(9.0 * p.graft_to_capacity_ratio)
    rec = p.recommendation
    assert rec is not None and rec.sessions >= 2 and rec.session_interval_days == 35
    capacity = 10.0 / p.graft_to_capacity_ratio
    assert rec.volume_per_session_ml is not None and rec.volume_per_session_ml <= capacity + 1e-9
    assert any(f.rule == "graft.capacity_exceeded" for f in pred.findings)


def test_target_volume_overcorrection() -> None:
    pred = predict_plan(facial_plan(), target_retained_ml=10.0, draws=100)
    total_inject = 0.0
    for p in pred.injections:
        rec = p.recommendation
        assert rec is not None and rec.inject_ml is not None and rec.target_retained_ml is not None
        assert rec.inject_ml * rec.expected_retention == pytest.approx(rec.target_retained_ml)
        assert rec.overcorrection_percent == pytest.approx(100 * (1 / rec.expected_retention - 1))
        total_inject += rec.inject_ml
    assert sum(p.recommendation.target_retained_ml for p in pred.injections) == pytest.approx(10.0)  # type: ignore[union-attr,misc]
    assert total_inject > 10.0


def test_findings_are_well_formed() -> None:
    plan = facial_plan()
    plan.injections[0].passes = 2  # forces a necrotic-core warning
    plan.injections.append(plan.injections[1].model_copy(update={"passes": None, "bolus_ml": None}))
    findings = graft_findings(plan)
    rules = {f.rule for f in findings}
    assert {"graft.necrotic_core", "graft.geometry_missing", "graft.retention_summary"} <= rules
    for f in findings:
        assert isinstance(f, Finding)
        assert f.rule.startswith("graft.")
        assert resolve(f.citations)
        assert f.evidence in {"verified", "secondary", "expert_opinion", "unverified"}
        assert len(f.summary) <= 139


def test_non_fat_plan_has_no_graft_findings() -> None:
    plan = PlanDocument.model_validate(
        {"indication": "x", "modality": "prp", "injections": [{"region": "scalp"}]}
    )
    assert graft_findings(plan) == []
    with pytest.raises(ValueError):
        predict_plan(plan)


def test_nanofat_and_cal_plans() -> None:
    micro = predict_plan(facial_plan(), draws=100).predicted_retention
    nano = predict_plan(facial_plan("nanofat"), draws=100)
    cal = predict_plan(facial_plan("cal"), draws=100).predicted_retention
    assert nano.predicted_retention is not None and micro is not None and cal is not None
    assert nano.predicted_retention < micro < cal
    assert any(f.rule == "graft.nanofat_not_volumizing" for f in nano.findings)


def test_overweight_patient_lowers_retention_of_thick_strands() -> None:
    inj = [{"region": "cheek", "volume_ml": 3.0, "passes": 10, "tunnel_length_mm": 40}]
    lean = PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "patient": {"bmi": 22}, "injections": inj}
    )
    heavy = PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "patient": {"bmi": 31}, "injections": inj}
    )
    a, b = predict_plan(lean, draws=100), predict_plan(heavy, draws=100)
    assert b.obese and not a.obese
    assert b.predicted_retention < a.predicted_retention  # type: ignore[operator]


def test_request_models_round_trip_json() -> None:
    from regenguide.simulate import PlanPredictionRequest, predict_plan_request

    body = {"plan": facial_plan().to_json_dict(), "target_retained_ml": 5.0, "draws": 100}
    req = PlanPredictionRequest.model_validate_json(__import__("json").dumps(body))
    pred = predict_plan_request(req)
    again = type(pred).model_validate_json(pred.model_dump_json())
    assert again.predicted_retention == pred.predicted_retention
    assert again.findings == pred.findings
