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


# ----------------------------------------------------------------------------------------------------
# Cannula strands (retrograde threading), true boluses, aggregated findings, cache
# ----------------------------------------------------------------------------------------------------


def _plan(injections: list[dict[str, object]], **extra: object) -> PlanDocument:
    return PlanDocument.model_validate(
        {"indication": "x", "modality": "microfat", "injections": injections, **extra}
    )


def test_cannula_aliquot_is_a_strand_along_the_tunnel(kb) -> None:  # type: ignore[no-untyped-def]
    given, assumed, needle, unspecified = predict_plan(
        _plan(
            [
                {"region": "cheek", "device": "cannula", "volume_ml": 1.0, "bolus_ml": 0.05, "tunnel_length_mm": 40},
                {"region": "cheek", "device": "cannula", "volume_ml": 1.0, "bolus_ml": 0.05},
                {"region": "cheek", "device": "needle", "volume_ml": 1.0, "bolus_ml": 0.05},
                {"region": "cheek", "volume_ml": 1.0, "bolus_ml": 0.05},
            ]
        ),
        draws=100,
    ).injections
    assert given.geometry == "cylinder" and given.deposits == pytest.approx(20)
    assert given.deposit_diameter_mm == pytest.approx(20 * math.sqrt(0.05 / (math.pi * 4.0)))
    assert given.tunnel_length_mm == 40 and not given.tunnel_length_assumed
    length_mm = kb.value("default_tunnel_length_mm")
    assert kb.param("default_tunnel_length_mm").evidence.value == "expert_opinion"
    assert assumed.geometry == "cylinder" and assumed.tunnel_length_assumed
    assert assumed.tunnel_length_mm == length_mm
    assert assumed.deposit_diameter_mm == pytest.approx(20 * math.sqrt(0.05 / (math.pi * length_mm / 10)))
    assert assumed.note is not None and "expert opinion" in assumed.note
    # A true bolus (needle, or no device given) stays a sphere.
    for bolus in (needle, unspecified):
        assert bolus.geometry == "sphere" and not bolus.tunnel_length_assumed
        assert bolus.deposit_diameter_mm == pytest.approx(20 * (3 * 0.05 / (4 * math.pi)) ** (1 / 3))
    # A thin strand lies wholly in the survival zone; a 4.6 mm bolus does not.
    assert given.necrotic_fraction == 0 and assumed.survival_fraction == pytest.approx(1.0)
    assert needle.necrotic_fraction > 0.01


def test_careful_cannula_plan_has_no_size_warnings_and_labels_the_assumption() -> None:
    inj = {"region": "cheek", "device": "cannula", "gauge": 22, "volume_ml": 0.25, "bolus_ml": 0.05}
    findings = graft_findings(_plan([inj] * 40))
    assert [f.rule for f in findings] == ["graft.retention_summary"]
    summary = findings[0]
    assert "assumed" in summary.detail and "expert opinion" in summary.detail
    assert "graft.expert-opinion" in summary.citations and summary.evidence in {"expert_opinion", "unverified"}
    pred = predict_plan(_plan([inj] * 40), draws=200)
    assert any(u.startswith("default_tunnel_length_mm: expert_opinion") for u in pred.unverified_parameters)


def test_same_problem_at_many_injections_is_one_card() -> None:
    bad = {"region": "cheek", "device": "needle", "volume_ml": 1.5, "bolus_ml": 0.3}
    findings = graft_findings(_plan([bad] * 40))
    rules = [f.rule for f in findings]
    assert rules.count("graft.necrotic_core") == 1 and rules.count("graft.bolus_too_large") == 1
    card = next(f for f in findings if f.rule == "graft.necrotic_core")
    assert card.injection_index is None
    assert card.summary.startswith("40 injections (0-39):")
    assert "injection(s) 0-39 (cheek)" in card.detail
    assert len(card.suggestions) == 1 and "bolus_ml" in card.suggestions[0].changes
    # Different problems per injection are listed with their own numbers and suggestions.
    mixed = graft_findings(_plan([bad, {**bad, "bolus_ml": 0.6}, {"region": "chin", "volume_ml": 1.0}, bad]))
    necrotic = [f for f in mixed if f.rule == "graft.necrotic_core"]
    assert len(necrotic) == 1 and necrotic[0].summary.startswith("3 injections (0-1, 3):")
    assert "injection(s) 0, 3 (cheek)" in necrotic[0].detail and "injection(s) 1 (cheek)" in necrotic[0].detail
    missing = [f for f in mixed if f.rule == "graft.geometry_missing"]
    assert len(missing) == 1 and missing[0].injection_index == 2  # one injection: its own card


def test_threaded_aliquot_suggestion_resolves_necrosis() -> None:
    inj = {"region": "cheek", "device": "cannula", "volume_ml": 2.0, "bolus_ml": 0.5, "tunnel_length_mm": 20}
    necrotic = [f for f in graft_findings(_plan([inj])) if f.rule == "graft.necrotic_core"]
    assert necrotic and necrotic[0].injection_index == 0
    ml = necrotic[0].suggestions[0].changes["bolus_ml"]
    assert isinstance(ml, float) and ml < 0.5
    fixed = graft_findings(_plan([{**inj, "bolus_ml": ml}]))
    assert not [f for f in fixed if f.rule in {"graft.necrotic_core", "graft.bolus_too_large"}]


def test_true_bolus_suggestion_resolves_necrosis_and_lobule_limit() -> None:
    inj = {"region": "chin", "device": "needle", "volume_ml": 1.0, "bolus_ml": 0.3}
    findings = graft_findings(_plan([inj]))
    bolus = next(f for f in findings if f.rule == "graft.bolus_too_large")
    ml = bolus.suggestions[0].changes["bolus_ml"]
    assert isinstance(ml, float)
    assert (3 * ml / (4 * math.pi)) ** (1 / 3) <= 0.2  # radius <= 2 mm (Khouri 2014)
    fixed = graft_findings(_plan([{**inj, "bolus_ml": ml}]))
    assert not [f for f in fixed if f.rule in {"graft.necrotic_core", "graft.bolus_too_large"}]


def test_plan_deposits_match_single_deposit_simulation() -> None:
    """The vectorised, cached plan evaluation equals one-deposit simulations (incl. perfusion and BMI)."""
    from regenguide.simulate.retention import SimulationRequest, simulate

    injections = [
        {"region": "cheek", "volume_ml": 2.0, "passes": 4, "tunnel_length_mm": 30, "recipient_perfusion": perf}
        for perf in ("low", "normal", "high")
    ] + [{"region": "chin", "device": "needle", "volume_ml": 1.0, "bolus_ml": 0.2}]
    pred = predict_plan(_plan(injections, patient={"bmi": 30}), draws=100)
    for inj, p in zip(injections, pred.injections, strict=True):
        assert p.geometry is not None and p.deposit_diameter_mm is not None
        single = simulate(
            SimulationRequest(
                geometry=p.geometry,  # type: ignore[arg-type]
                diameter_mm=p.deposit_diameter_mm,
                obese=True,
                perfusion=inj.get("recipient_perfusion"),  # type: ignore[arg-type]
                draws=10,
            )
        )
        assert p.predicted_retention == pytest.approx(single.predicted_retention, rel=1e-9)
        assert p.critical_size_mm == pytest.approx(single.critical_size_mm, rel=1e-9)
        assert p.necrotic_fraction == pytest.approx(single.zones.necrotic_fraction, abs=1e-12)


def test_cached_and_uncached_evaluation_agree(kb) -> None:  # type: ignore[no-untyped-def]
    from importlib import resources

    import yaml

    from regenguide.simulate.parameters import parse_graft_knowledge

    path = resources.files("regenguide.kb") / "data" / "graft" / "parameters.yaml"
    fresh = parse_graft_knowledge(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert fresh is not kb  # a separate knowledge object is never served from the cache
    plan = facial_plan()
    first = predict_plan(plan, draws=300)
    again = predict_plan(plan, draws=300)
    uncached = predict_plan(plan, draws=300, knowledge=fresh)
    for other in (again, uncached):
        assert other.predicted_retention == pytest.approx(first.predicted_retention, rel=1e-12)
        assert other.retention_interval == pytest.approx(first.retention_interval, rel=1e-12)
        assert [i.retention_interval for i in other.injections] == [i.retention_interval for i in first.injections]


def test_plan_check_uses_a_smaller_monte_carlo_than_the_report(kb) -> None:  # type: ignore[no-untyped-def]
    from regenguide.simulate.plan import CHECK_DRAWS, REPORT_DRAWS

    assert CHECK_DRAWS < REPORT_DRAWS
    inj = {"region": "cheek", "device": "cannula", "volume_ml": 0.5, "bolus_ml": 0.05}
    plan = _plan([inj] * 20, patient={"bmi": 23})
    report = predict_plan(plan)
    assert report.draws == REPORT_DRAWS
    check = next(f for f in graft_findings(plan) if f.rule == "graft.retention_summary")
    # Nominal retention is the same; the check's interval comes from fewer draws but stays in Lv's range.
    assert f"{100 * report.predicted_retention:.0f}%" in check.summary  # type: ignore[operator]
    lv = kb.anchors["facial_retention"]
    assert report.retention_interval is not None
    assert lv.low <= report.retention_interval[0] < report.retention_interval[1] <= lv.high
