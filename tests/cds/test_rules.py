"""Every plan-check rule with plans that must and must not trigger it."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from regenguide.cds.engine import PlanCheckResult, check_plan
from regenguide.domain.findings import Finding, Indicator
from regenguide.domain.plan import PlanDocument
from regenguide.kb import knowledge_base

TODAY = date(2026, 11, 22)


def make_plan(injections: list[dict[str, Any]] | None = None, **fields: Any) -> PlanDocument:
    """A plan that passes every rule (microfat to the glabella, done as the sources advise) unless changed."""
    doc: dict[str, Any] = {
        "schema": "regenguide.plan/1",
        "jurisdiction": "US",
        "patient": {"age": 45, "sex": "female", "pregnant": False},
        "indication": "facial_volume_loss",
        "modality": "microfat",
        "same_surgical_procedure": True,
        "homologous_use": True,
        "guidance": {"imaging": "ultrasound", "doppler": True},
        "injections": injections
        if injections is not None
        else [
            {
                "region": "glabella",
                "side": "midline",
                "plane": "subdermal",
                "device": "cannula",
                "gauge": 22,
                "volume_ml": 1.0,
                "bolus_ml": 0.05,
            }
        ],
        "consent": {"status": "signed", "signed_on": "2026-11-01", "expires_on": "2027-11-01"},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return PlanDocument.model_validate(doc)


def inj(region: str = "glabella", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "region": region,
        "side": "midline",
        "plane": "subdermal",
        "device": "cannula",
        "gauge": 22,
        "volume_ml": 1.0,
        "bolus_ml": 0.05,
    }
    base.update(fields)
    return base


def run(plan: PlanDocument) -> PlanCheckResult:
    return check_plan(plan, today=TODAY)


def rules_of(plan: PlanDocument) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in run(plan).findings:
        out.setdefault(f.rule, []).append(f)
    return out


def only(plan: PlanDocument, rule: str) -> Finding:
    found = rules_of(plan).get(rule, [])
    assert len(found) == 1, f"expected one {rule}, got {[f.rule for f in run(plan).findings]}"
    return found[0]


def test_baseline_plan_is_clean_and_signable() -> None:
    result = run(make_plan())
    assert [f.rule for f in result.findings if f.indicator != Indicator.info] == []
    assert result.signable


# --- danger zones ------------------------------------------------------------------------------------
@pytest.mark.parametrize("region", ["glabella", "nose", "forehead", "temple", "tear_trough", "nasolabial_fold", "lips"])
def test_no_ultrasound_in_every_high_risk_zone(region: str) -> None:
    side = "left" if knowledge_base().regions[region].paired else "midline"
    f = only(
        make_plan([inj(region, side=side)], guidance={"imaging": "none", "doppler": False}), "danger_zone.no_ultrasound"
    )
    assert f.indicator == Indicator.critical
    assert f.suggestions and f.suggestions[0].changes["guidance.imaging"] == "ultrasound"


def test_no_ultrasound_is_a_warning_for_prp_and_silent_outside_zones() -> None:
    prp = make_plan(modality="prp", indication="facial_rejuvenation", guidance={"imaging": "none", "doppler": False})
    assert only(prp, "danger_zone.no_ultrasound").indicator == Indicator.warning
    scalp = make_plan(
        [inj("scalp", plane="intradermal")],
        modality="prp",
        indication="androgenetic_alopecia",
        guidance={"imaging": "none", "doppler": False},
    )
    assert "danger_zone.no_ultrasound" not in rules_of(scalp)
    assert "danger_zone.no_ultrasound" not in rules_of(make_plan())


def test_no_doppler() -> None:
    assert only(make_plan(guidance={"doppler": False}), "danger_zone.no_doppler").indicator == Indicator.critical
    assert "danger_zone.no_doppler" not in rules_of(make_plan())
    # without ultrasound the no-ultrasound finding (which suggests Doppler too) stands alone
    assert "danger_zone.no_doppler" not in rules_of(make_plan(guidance={"imaging": "none", "doppler": False}))


def test_sharp_needle() -> None:
    f = only(make_plan([inj(device="needle", gauge=27)]), "danger_zone.sharp_needle")
    assert f.indicator == Indicator.critical and f.injection_index == 0
    assert f.suggestions[0].changes == {"device": "cannula", "gauge": 25}
    assert "danger_zone.sharp_needle" not in rules_of(make_plan())
    prp = make_plan([inj(device="needle", gauge=30)], modality="prp", indication="facial_rejuvenation")
    assert only(prp, "danger_zone.sharp_needle").indicator == Indicator.warning


def test_fat_blindness_site_card() -> None:
    f = only(make_plan(), "danger_zone.fat_blindness_site")  # microfat in the glabella
    assert f.indicator == Indicator.info and {"kb.chatrath-2019", "kb.beleznay-2015"} <= set(f.citations)
    assert "47%" in f.detail
    temple = make_plan([inj("temple", side="left", plane="interfascial")])
    assert "danger_zone.fat_blindness_site" not in rules_of(temple)
    prp = make_plan(modality="prp", indication="facial_rejuvenation")
    assert "danger_zone.fat_blindness_site" not in rules_of(prp)


def test_device_missing_in_zone() -> None:
    assert only(make_plan([inj(device=None)]), "danger_zone.device_missing").indicator == Indicator.warning
    assert "danger_zone.device_missing" not in rules_of(make_plan())
    midface = make_plan([inj("midface", side="left", device=None, plane="subcutaneous")])
    assert "danger_zone.device_missing" not in rules_of(midface)


def test_cannula_finer_than_25g() -> None:
    nano = {"modality": "nanofat", "indication": "rhytides"}
    assert only(make_plan([inj(gauge=27)], **nano), "danger_zone.cannula_too_fine").indicator == Indicator.warning
    assert "danger_zone.cannula_too_fine" not in rules_of(make_plan([inj(gauge=25)], **nano))


def test_bolus_at_supratrochlear_volume_is_critical() -> None:
    f = only(make_plan([inj(bolus_ml=0.085)]), "danger_zone.bolus_over_critical")
    assert f.indicator == Indicator.critical
    assert "kb.khan-2017" in f.citations
    assert f.suggestions[0].changes["bolus_ml"] < 0.085
    assert "danger_zone.bolus_over_critical" not in rules_of(make_plan([inj(bolus_ml=0.08)]))


def test_bolus_against_ophthalmic_volume_in_the_nose() -> None:
    nose = inj("nose", plane="supraperiosteal")
    f = only(make_plan([{**nose, "bolus_ml": 0.2}]), "danger_zone.bolus_over_critical")
    assert "kb.li-2023-ophthalmic" in f.citations
    assert f.evidence == "expert_opinion"  # the ophthalmic volume applied to the nose is labelled so
    assert "danger_zone.bolus_over_critical" not in rules_of(make_plan([{**nose, "bolus_ml": 0.1}]))


def test_bolus_missing() -> None:
    assert "danger_zone.bolus_missing" in rules_of(make_plan([inj(bolus_ml=None, volume_ml=1.0)]))
    # a total below the critical volume cannot hold a larger bolus
    assert "danger_zone.bolus_missing" not in rules_of(make_plan([inj(bolus_ml=None, volume_ml=0.05)]))


@pytest.mark.parametrize(
    ("region", "side", "plane", "rule"),
    [
        ("glabella", "midline", "supraperiosteal", "danger_zone.plane_too_deep"),
        ("lips", "midline", "submucosal", "danger_zone.plane_too_deep"),
        ("nose", "midline", "subcutaneous", "danger_zone.plane_too_shallow"),
        ("temple", "left", "subcutaneous", "danger_zone.plane_too_shallow"),
        ("tear_trough", "left", "subcutaneous", "danger_zone.plane_in_artery_layer"),
        ("nasolabial_fold", "left", "subcutaneous", "danger_zone.plane_in_artery_layer"),
    ],
)
def test_plane_against_the_regions_arteries(region: str, side: str, plane: str, rule: str) -> None:
    f = only(make_plan([inj(region, side=side, plane=plane)]), rule)
    assert f.indicator == Indicator.critical  # microfat: critical
    assert f.suggestions[0].changes["plane"] in knowledge_base().danger_zones[region].safe_planes


@pytest.mark.parametrize(
    ("region", "side", "plane"),
    [
        ("glabella", "midline", "intradermal"),
        ("nose", "midline", "preperichondrial"),
        ("temple", "left", "interfascial"),
        ("temple", "left", "supraperiosteal"),
        ("nasolabial_fold", "left", "supraperiosteal"),
        ("lips", "midline", "subcutaneous"),
        ("tear_trough", "right", "intradermal"),
        ("tear_trough", "right", "supraperiosteal"),
    ],
)
def test_safe_planes_do_not_trigger(region: str, side: str, plane: str) -> None:
    rules = rules_of(make_plan([inj(region, side=side, plane=plane, volume_ml=0.05)]))
    assert not [r for r in rules if r.startswith("danger_zone.plane")]


def test_plane_severity_is_warning_for_prp() -> None:
    plan = make_plan([inj(plane="supraperiosteal")], modality="prp", indication="facial_rejuvenation")
    assert only(plan, "danger_zone.plane_too_deep").indicator == Indicator.warning


def test_plane_missing_and_depth_beyond_safe() -> None:
    assert "danger_zone.plane_missing" in rules_of(make_plan([inj(plane=None)]))
    f = only(make_plan([inj(depth_mm=3.0)]), "danger_zone.depth_beyond_safe")
    assert "2.5 mm" in f.summary
    assert "danger_zone.depth_beyond_safe" not in rules_of(make_plan([inj(depth_mm=2.0)]))


def test_microneedling_is_not_an_injection_for_danger_zone_rules() -> None:
    plan = make_plan(
        [inj("forehead", device=None, gauge=None, volume_ml=None, bolus_ml=None, plane=None, needle_depth_mm=0.5)],
        modality="microneedling",
        indication="rhytides",
        guidance={"imaging": "none"},
        course={"sessions": 3, "interval_weeks": 4},
    )
    assert not [r for r in rules_of(plan) if r.startswith("danger_zone")]


# --- body regions ------------------------------------------------------------------------------------
def test_gluteal_fat() -> None:
    buttock = [inj("buttock", side="bilateral", plane="subcutaneous", volume_ml=200, bolus_ml=1.0, gauge=14)]
    assert not [r for r in rules_of(make_plan(buttock)) if r.startswith("body.")]
    no_us = make_plan(buttock, guidance={"imaging": "none", "doppler": False})
    assert only(no_us, "body.gluteal_fat_no_ultrasound").indicator == Indicator.warning
    deep = make_plan([{**buttock[0], "plane": "intramuscular"}])
    f = only(deep, "body.gluteal_fat_deep_plane")
    assert f.indicator == Indicator.critical and f.evidence == "expert_opinion"
    prp = make_plan([{**buttock[0], "plane": "intramuscular"}], modality="prp", indication="scars")
    assert not [r for r in rules_of(prp) if r.startswith("body.")]


# --- volumes and devices -----------------------------------------------------------------------------
def test_volume_over_shue_range() -> None:
    f = only(make_plan([inj(volume_ml=4.5)]), "volume.subunit_over_range")
    assert "1-4 mL" in f.summary and f.citations[0] == "kb.shue-2018"
    assert "volume.subunit_over_range" not in rules_of(make_plan([inj(volume_ml=4.0)]))


def test_volume_is_summed_per_side_and_bilateral_split() -> None:
    temple = {"plane": "interfascial", "bolus_ml": 0.1}
    two_left = make_plan(
        [inj("temple", side="left", volume_ml=6, **temple), inj("temple", side="left", volume_ml=5, **temple)]
    )
    f = only(two_left, "volume.subunit_over_range")
    assert "(left): 11 mL" in f.summary  # 6 + 5 > 10 mL per side
    bilateral = make_plan([inj("temple", side="bilateral", volume_ml=16, **temple)])
    assert "volume.subunit_over_range" not in rules_of(bilateral)  # 8 mL per side
    left_right = make_plan(
        [inj("temple", side="left", volume_ml=6, **temple), inj("temple", side="right", volume_ml=6, **temple)]
    )
    assert "volume.subunit_over_range" not in rules_of(left_right)


def test_volume_rule_is_off_for_non_volumizing_modalities() -> None:
    plan = make_plan([inj(volume_ml=5.0, gauge=25)], modality="nanofat", indication="rhytides")
    assert "volume.subunit_over_range" not in rules_of(plan)


def test_bolus_exceeds_volume_and_volume_missing() -> None:
    assert "volume.bolus_exceeds_volume" in rules_of(make_plan([inj(volume_ml=0.05, bolus_ml=0.06)]))
    assert "volume.bolus_exceeds_volume" not in rules_of(make_plan())
    assert only(make_plan([inj(volume_ml=None, bolus_ml=0.05)]), "volume.missing").indicator == Indicator.info


@pytest.mark.parametrize(
    ("modality", "indication", "gauge", "fires"),
    [
        ("microfat", "facial_volume_loss", 25, True),
        ("microfat", "facial_volume_loss", 22, False),
        ("nanofat", "rhytides", 27, False),
        ("nanofat", "rhytides", 30, True),
        ("prp", "facial_rejuvenation", 30, False),
    ],
)
def test_gauge_too_fine_for_fat(modality: str, indication: str, gauge: int, fires: bool) -> None:
    plan = make_plan(
        [inj("midface", side="left", gauge=gauge, device="needle", plane="subcutaneous")],
        modality=modality,
        indication=indication,
    )
    found = rules_of(plan).get("fat.gauge_too_fine", [])
    assert bool(found) is fires
    if found:  # expert opinion for microfat (info); Tonnard's 27G limit for nanofat (warning)
        assert found[0].indicator == (Indicator.warning if modality == "nanofat" else Indicator.info)


# --- contraindications -------------------------------------------------------------------------------
def prp_plan(**patient: Any) -> PlanDocument:
    patient = {"platelets_per_uL": 250_000, "hemoglobin_g_dL": 13.5, **patient}
    return make_plan(
        [inj("scalp", plane="intradermal", device="needle", gauge=30, volume_ml=6.0, bolus_ml=None, needle_depth_mm=3)],
        modality="prp",
        indication="androgenetic_alopecia",
        patient=patient,
        course={"sessions": 4, "interval_weeks": 4},
    )


@pytest.mark.parametrize(
    ("patient", "rule", "indicator"),
    [
        ({"platelets_per_uL": 90_000}, "contraindication.prp.low_platelets", Indicator.warning),
        ({"hemoglobin_g_dL": 9.5}, "contraindication.prp.low_hemoglobin", Indicator.warning),
        ({"medications": ["Warfarin"]}, "contraindication.prp.anticoagulant", Indicator.warning),
        ({"medications": ["clopidogrel"]}, "contraindication.prp.antiplatelet", Indicator.warning),
        ({"last_nsaid_hours_ago": 24}, "contraindication.prp.nsaid_48h", Indicator.warning),
        ({"medications": ["ibuprofen"]}, "contraindication.prp.nsaid_48h", Indicator.warning),
        ({"medications": ["prednisone"]}, "contraindication.prp.corticosteroids", Indicator.warning),
        ({"conditions": ["active_infection_at_site"]}, "contraindication.prp.local_infection", Indicator.critical),
        ({"conditions": ["haematological_malignancy"]}, "contraindication.prp.cancer", Indicator.warning),
        ({"conditions": ["platelet_dysfunction"]}, "contraindication.prp.platelet_dysfunction", Indicator.critical),
        (
            {"conditions": ["critical_thrombocytopenia"]},
            "contraindication.prp.critical_thrombocytopenia",
            Indicator.critical,
        ),
        ({"conditions": ["septicaemia"]}, "contraindication.prp.haemodynamic_instability", Indicator.critical),
        ({"conditions": ["recent_fever"]}, "contraindication.prp.recent_fever", Indicator.warning),
        ({"pregnant": True}, "contraindication.elective.pregnancy", Indicator.critical),
        ({"conditions": ["breastfeeding"]}, "contraindication.elective.lactation", Indicator.warning),
        ({"smoker": True}, "contraindication.prp.tobacco", Indicator.info),
    ],
)
def test_prp_contraindications_trigger(patient: dict[str, Any], rule: str, indicator: Indicator) -> None:
    f = only(prp_plan(**patient), rule)
    assert f.indicator == indicator
    assert f.citations


@pytest.mark.parametrize(
    "patient",
    [
        {"platelets_per_uL": 150_000, "hemoglobin_g_dL": 12.0},
        {"platelets_per_uL": 100_000, "hemoglobin_g_dL": 10.0},  # the thresholds are "below"
        {"last_nsaid_hours_ago": 72, "medications": ["ibuprofen"]},
        {"medications": ["metformin"], "conditions": ["hypertension"], "pregnant": False, "smoker": False},
    ],
)
def test_prp_contraindications_do_not_trigger(patient: dict[str, Any]) -> None:
    assert not [r for r in rules_of(prp_plan(**patient)) if r.startswith("contraindication")]


def test_pregnancy_applies_to_elective_biologics_only() -> None:
    assert "contraindication.elective.pregnancy" in rules_of(make_plan(patient={"pregnant": True}))
    car_t = make_plan(
        [], modality="car_t", indication="hematologic_malignancy", patient={"pregnant": True}, jurisdiction="US"
    )
    assert "contraindication.elective.pregnancy" not in rules_of(car_t)


def test_infection_and_anticoagulant_for_fat() -> None:
    rules = rules_of(make_plan(patient={"conditions": ["local_infection"], "medications": ["apixaban"]}))
    assert rules["contraindication.injection.local_infection"][0].indicator == Indicator.critical
    anticoag = rules["contraindication.fat.anticoagulant"][0]
    assert anticoag.evidence == "expert_opinion"
    assert anticoag.citations == ["regenguide-expert-opinion"]  # only the entry's own sources


def test_contraindication_cites_only_its_own_sources() -> None:
    f = only(prp_plan(hemoglobin_g_dL=9.0), "contraindication.prp.low_hemoglobin")
    assert f.citations == ["kb.le-2018-prp-contra"] and f.evidence == "verified"


def test_missing_patient_facts() -> None:
    unknown = make_plan(patient={"pregnant": None})
    assert only(unknown, "patient.pregnancy_unknown").indicator == Indicator.info
    assert "patient.pregnancy_unknown" not in rules_of(make_plan())
    assert "patient.pregnancy_unknown" not in rules_of(make_plan(patient={"pregnant": None, "sex": "male"}))
    no_labs = prp_plan(platelets_per_uL=None, hemoglobin_g_dL=12.0)
    assert "platelet count" in only(no_labs, "patient.prp_labs_missing").summary
    assert "patient.prp_labs_missing" not in rules_of(prp_plan())
    assert "patient.prp_labs_missing" not in rules_of(make_plan())  # not PRP


# --- consent -----------------------------------------------------------------------------------------
def test_consent_missing_declined_expired() -> None:
    assert only(make_plan(consent=None), "consent.missing").indicator == Indicator.critical
    assert "consent.missing" in rules_of(make_plan(consent={"status": "missing"}))
    assert "consent.declined" in rules_of(make_plan(consent={"status": "declined"}))
    assert "consent.declined" in rules_of(make_plan(consent={"status": "withdrawn"}))
    expired = make_plan(consent={"status": "signed", "expires_on": "2026-12-01"}, planned_date="2026-12-02")
    assert only(expired, "consent.expired").indicator == Indicator.critical
    valid = make_plan(consent={"status": "signed", "expires_on": "2026-12-01"}, planned_date="2026-12-01")
    assert not [r for r in rules_of(valid) if r.startswith("consent")]


def test_consent_expiry_uses_today_without_planned_date() -> None:
    plan = make_plan(consent={"status": "signed", "expires_on": "2026-11-21"})
    assert "consent.expired" in rules_of(plan)  # TODAY is 2026-11-22
    assert "consent.expired" not in {f.rule for f in check_plan(plan, today=date(2026, 11, 20)).findings}


def test_consent_bad_date() -> None:
    plan = make_plan(consent={"status": "signed", "expires_on": "next year"})
    assert "consent.invalid_date" in rules_of(plan)


# --- indication, vocabulary --------------------------------------------------------------------------
def test_modality_not_indicated() -> None:
    f = only(make_plan(modality="prp", indication="facial_volume_loss"), "indication.not_indicated")
    assert f.indicator == Indicator.warning
    assert {s.changes["modality"] for s in f.suggestions} <= {"cal", "microfat"}
    assert "indication.not_indicated" not in rules_of(make_plan())
    car_t = make_plan([], modality="car_t", indication="cellulite")
    assert only(car_t, "indication.not_indicated").indicator == Indicator.critical


def test_unknown_region_lists_valid_codes() -> None:
    f = only(make_plan([inj("eyebrowz")]), "vocabulary.unknown_region")
    assert f.indicator == Indicator.critical
    assert "glabella" in f.detail and "nasolabial_fold" in f.detail


def test_aliases_are_accepted() -> None:
    rules = rules_of(make_plan([inj("cheek", side="left", plane="dermal", volume_ml=1.0)]))
    assert "vocabulary.unknown_region" not in rules and "vocabulary.unknown_plane" not in rules


def test_unknown_plane_and_indication() -> None:
    assert "vocabulary.unknown_plane" in rules_of(make_plan([inj(plane="subgaleal")]))
    f = only(make_plan(indication="youthfulness"), "vocabulary.unknown_indication")
    assert "androgenetic_alopecia" in f.detail


def test_no_injections() -> None:
    assert only(make_plan([]), "vocabulary.no_injections").indicator == Indicator.warning
    assert "vocabulary.no_injections" not in rules_of(make_plan())
    assert "vocabulary.no_injections" not in rules_of(
        make_plan([], modality="car_t", indication="hematologic_malignancy")
    )


def test_laterality() -> None:
    assert "vocabulary.laterality" in rules_of(make_plan([inj("temple", plane="interfascial")]))  # midline
    assert "vocabulary.laterality" in rules_of(make_plan([inj("glabella", side="left")]))
    assert "vocabulary.laterality" not in rules_of(make_plan())


# --- courses -----------------------------------------------------------------------------------------
def test_prp_alopecia_course() -> None:
    assert not [r for r in rules_of(prp_plan()) if r.startswith("course")]
    no_course = make_plan(
        [inj("scalp", plane="intradermal", volume_ml=6.0, bolus_ml=None)],
        modality="prp",
        indication="androgenetic_alopecia",
    )
    assert only(no_course, "course.missing").indicator == Indicator.info

    def with_course(sessions: int, interval: float, depth: float = 3, volume: float = 6.0) -> PlanDocument:
        return make_plan(
            [
                inj(
                    "scalp",
                    plane="intradermal",
                    device="needle",
                    gauge=30,
                    volume_ml=volume,
                    bolus_ml=None,
                    needle_depth_mm=depth,
                )
            ],
            modality="prp",
            indication="androgenetic_alopecia",
            course={"sessions": sessions, "interval_weeks": interval},
        )

    assert only(with_course(2, 4), "course.too_few_sessions").indicator == Indicator.warning
    assert only(with_course(4, 2), "course.interval_too_short").indicator == Indicator.warning
    assert only(with_course(4, 8), "course.interval_too_long").indicator == Indicator.info
    assert only(with_course(4, 4, depth=5), "course.needle_depth_too_deep").indicator == Indicator.warning
    assert "course.needle_depth_too_shallow" in rules_of(with_course(4, 4, depth=1))
    assert "course.session_volume" in rules_of(with_course(4, 4, volume=10))
    assert "course.session_volume" not in rules_of(with_course(4, 4, volume=7))


def test_staged_fat_interval() -> None:
    assert not [r for r in rules_of(make_plan()) if r.startswith("course")]  # one session: no course needed
    short = make_plan(course={"sessions": 2, "interval_weeks": 3})
    f = only(short, "course.interval_too_short")
    assert "kb.carpaneda-1992" in f.citations
    assert "course.interval_too_short" not in rules_of(make_plan(course={"sessions": 2, "interval_weeks": 6}))
    assert "course.interval_too_short" not in rules_of(make_plan(course={"sessions": 1, "interval_weeks": 1}))


def mn_plan(indication: str, region: str, depth: float | None, **course: Any) -> PlanDocument:
    side = "left" if knowledge_base().regions[region].paired else "midline"
    return make_plan(
        [{"region": region, "side": side, "needle_depth_mm": depth}],
        modality="microneedling",
        indication=indication,
        guidance={"imaging": "none"},
        course={"sessions": 3, "interval_weeks": 4, **course},
    )


def test_microneedling_acne_scars_depth() -> None:
    assert not [r for r in rules_of(mn_plan("acne_scars", "midface", 1.5)) if r.startswith("course")]
    f = only(mn_plan("acne_scars", "midface", 3.0), "course.needle_depth_too_deep")
    assert f.suggestions[0].changes["needle_depth_mm"] == 2.5
    assert "course.needle_depth_missing" in rules_of(mn_plan("acne_scars", "midface", None))
    assert "course.too_many_sessions" in rules_of(mn_plan("acne_scars", "midface", 1.5, sessions=8))


def test_microneedling_cellulite_course() -> None:
    bare = rules_of(mn_plan("cellulite", "thigh", 2.0))
    assert "course.advice_missing" in bare and "course.combination_suggested" in bare
    assert bare["course.advice_missing"][0].evidence == "secondary"
    full = rules_of(mn_plan("cellulite", "thigh", 2.0, advice=["diet", "exercise"], combined_with=["radiofrequency"]))
    assert not [r for r in full if r.startswith("course")]
    deep = only(mn_plan("cellulite", "thigh", 3.5), "course.needle_depth_too_deep")
    assert deep.evidence == "unverified"  # the body depth range is labelled unverified


# --- imaging -----------------------------------------------------------------------------------------
def test_imaging_none_and_ionizing() -> None:
    midface = [inj("midface", side="left", plane="subcutaneous")]
    assert only(make_plan(midface, guidance={"imaging": "none"}), "imaging.none").indicator == Indicator.info
    assert "imaging.none" not in rules_of(make_plan(midface))
    f = only(make_plan(midface, guidance={"imaging": "fluoroscopy"}), "imaging.ionizing")
    assert "Rarely" in f.detail
    assert "imaging.ionizing" not in rules_of(make_plan(midface, guidance={"imaging": "mri"}))


# --- every rule is exercised -------------------------------------------------------------------------
def test_every_rule_in_rules_yaml_is_tested_here() -> None:
    import pathlib
    import re

    source = pathlib.Path(__file__).read_text(encoding="utf-8")
    tested = set(
        re.findall(
            r'"((?:danger_zone|volume|fat|consent|indication|vocabulary|course|imaging|patient|body)\.[a-z_]+)"', source
        )
    )
    declared = {r for r in knowledge_base().rules if r != "contraindication"}
    assert declared - tested == set()
    contra = {f"contraindication.{c}" for c in knowledge_base().contraindications}
    assert contra - set(re.findall(r'"(contraindication\.[a-z0-9_.]+)"', source)) == set()


# --- every high-risk zone x every zone rule ----------------------------------------------------------
ISSUE_ZONES = ["glabella", "nose", "forehead", "temple", "tear_trough", "periorbital", "nasolabial_fold", "lips"]
ALL_ZONES = sorted(knowledge_base().danger_zones)


def zone_inj(region: str, **fields: Any) -> dict[str, Any]:
    """An injection done as the sources advise for the zone: its first safer plane, a 22G cannula, a small bolus."""
    kb = knowledge_base()
    side = "left" if kb.regions[region].paired else "midline"
    return inj(region, side=side, plane=kb.danger_zones[region].safe_planes[0], volume_ml=0.5, **fields)


def test_the_issues_high_risk_zones_are_all_danger_zones() -> None:
    assert set(ISSUE_ZONES) <= set(ALL_ZONES)


@pytest.mark.parametrize("region", ALL_ZONES)
def test_zone_done_as_advised_raises_no_zone_warning(region: str) -> None:
    found = run(make_plan([zone_inj(region)])).findings
    assert not [f.rule for f in found if f.rule.startswith("danger_zone") and f.indicator != Indicator.info]


@pytest.mark.parametrize("region", ALL_ZONES)
def test_no_doppler_in_every_zone(region: str) -> None:
    f = only(make_plan([zone_inj(region)], guidance={"imaging": "ultrasound", "doppler": False}),
             "danger_zone.no_doppler")
    assert f.indicator == Indicator.critical and f.suggestions[0].changes == {"guidance.doppler": True}
    assert "danger_zone.no_doppler" not in rules_of(make_plan([zone_inj(region)]))


@pytest.mark.parametrize("region", ALL_ZONES)
def test_sharp_needle_in_every_zone(region: str) -> None:
    f = only(make_plan([zone_inj(region, device="needle", gauge=27)]), "danger_zone.sharp_needle")
    assert f.indicator == Indicator.critical and f.injection_index == 0
    assert f.suggestions[0].changes == {"device": "cannula", "gauge": 25}
    assert "danger_zone.sharp_needle" not in rules_of(make_plan([zone_inj(region, device="cannula", gauge=25)]))


# The two published critical arterial volumes (Khan 2017: supratrochlear 0.085 mL; Li 2023: ophthalmic 0.16 mL).
CRITICAL = {"glabella": 0.085, "forehead": 0.085}


@pytest.mark.parametrize("region", ALL_ZONES)
def test_bolus_at_or_beyond_the_critical_volume_in_every_zone(region: str) -> None:
    limit = CRITICAL.get(region, 0.16)
    zone = knowledge_base().danger_zones[region]
    assert zone.critical_bolus is not None and zone.critical_bolus.volume_ml == limit
    for bolus in (limit, limit + 0.05):
        f = only(make_plan([zone_inj(region, bolus_ml=bolus)]), "danger_zone.bolus_over_critical")
        assert f.indicator == Indicator.critical
        assert f.suggestions[0].changes["bolus_ml"] < limit
        assert ("kb.khan-2017" if limit == 0.085 else "kb.li-2023-ophthalmic") in f.citations
    assert "danger_zone.bolus_over_critical" not in rules_of(make_plan([zone_inj(region, bolus_ml=limit - 0.001)]))


@pytest.mark.parametrize("region", ["temple", "lips", "nose", "nasolabial_fold", "tear_trough", "forehead"])
def test_critical_volume_applied_outside_the_measured_vessel_is_labelled_expert_opinion(region: str) -> None:
    f = only(make_plan([zone_inj(region, bolus_ml=0.3)]), "danger_zone.bolus_over_critical")
    assert f.evidence == "expert_opinion"


def test_critical_volume_where_it_was_measured_is_verified() -> None:
    assert only(make_plan([zone_inj("glabella", bolus_ml=0.1)]), "danger_zone.bolus_over_critical").evidence == (
        "verified"
    )


def test_fat_blindness_site_card_is_verified_from_both_abstracts() -> None:
    # Chatrath 2019 and Beleznay 2015 were both read in the abstract (research notes, regulation review 7a).
    f = only(make_plan(), "danger_zone.fat_blindness_site")
    assert f.evidence == "verified" and "38.8%" in f.detail


# --- contraindications as clinicians write them ------------------------------------------------------
@pytest.mark.parametrize(
    ("medication", "rule"),
    [
        ("Warfarin 5 mg", "contraindication.prp.anticoagulant"),
        ("Eliquis (apixaban) 5 mg bid", "contraindication.prp.anticoagulant"),
        ("clopidogrel 75mg daily", "contraindication.prp.antiplatelet"),
        ("Acetylsalicylic acid 100 mg", "contraindication.prp.nsaid_48h"),
        ("Prednisolone 5 mg", "contraindication.prp.corticosteroids"),
    ],
)
def test_medication_with_dose_is_recognised(medication: str, rule: str) -> None:
    assert rule in rules_of(prp_plan(medications=[medication]))


def test_medication_names_that_are_not_in_a_class_do_not_trigger() -> None:
    plan = prp_plan(medications=["metformin 500 mg", "vitamin D 1000 IU"])
    assert not [r for r in rules_of(plan) if r.startswith("contraindication")]


def test_nsaid_window_is_strictly_within_48_hours() -> None:
    assert "contraindication.prp.nsaid_48h" in rules_of(prp_plan(last_nsaid_hours_ago=47.9))
    assert "contraindication.prp.nsaid_48h" not in rules_of(prp_plan(last_nsaid_hours_ago=48))


def test_haematological_cancer_written_in_words_triggers() -> None:
    f = only(prp_plan(conditions=["Haematological cancer"]), "contraindication.prp.cancer")
    assert f.citations == ["kb.le-2018-prp-contra"]


def test_anticoagulant_with_dose_before_fat_grafting() -> None:
    assert "contraindication.fat.anticoagulant" in rules_of(make_plan(patient={"medications": ["Xarelto 20 mg"]}))
