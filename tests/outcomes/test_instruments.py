from __future__ import annotations

import math

import pytest
import yaml

from regenguide.kb.references import KnowledgeBaseError, UnknownCitation
from regenguide.outcomes import grading
from regenguide.outcomes.instruments import (
    InstrumentValidationError,
    get_instrument,
    instruments,
    load_instrument_definition,
    parse_instrument_file,
    score,
    unregister_instrument,
)

EXPECTED = {
    "gais_investigator",
    "gais_subject",
    "wsrs",
    "glogau",
    "fitzpatrick",
    "fitzpatrick_questionnaire",
    "posas_observer",
    "posas_patient",
    "vss",
    "hexsel_css",
    "nurnberger_muller",
    "norwood_hamilton",
    "ludwig",
    "hair_density",
    "dermal_thickness_us",
    "graft_retention",
    "elastography_swe",
    "crs_astct",
    "ice",
    "icans_astct",
    "clavien_dindo",
    "ctcae",
}


def _errors(exc: pytest.ExceptionInfo[InstrumentValidationError]) -> dict[str, str]:
    return {e.item: e.message for e in exc.value.errors}


def test_catalogue_is_complete_and_cited():
    listed = {i.code: i for i in instruments() if i.bundled}
    assert set(listed) >= EXPECTED
    for code in EXPECTED:
        d = get_instrument(code)
        assert d.citations, code
        assert d.licence


@pytest.mark.parametrize("code", ["gais_investigator", "gais_subject"])
def test_gais(code):
    labels = {1: "Very much improved", 2: "Much improved", 3: "Improved", 4: "No change", 5: "Worse"}
    for value, label in labels.items():
        s = score(code, {"rating": str(value)})
        assert s.value == value and label in s.interpretation
    with pytest.raises(InstrumentValidationError) as exc:
        score(code, {"rating": 6})
    assert "'rating'" in str(exc.value) and "1 (Very much improved)" in str(exc.value)


def test_single_choice_scales():
    assert score("wsrs", {"grade": 3}).interpretation.endswith("3 - Moderate")
    assert score("glogau", {"type": "iii"}).value == "III"  # case-insensitive
    assert "Wrinkles at rest" in score("glogau", {"type": "III"}).interpretation
    assert score("fitzpatrick", {"type": "VI"}).interpretation.endswith("Never burns, heavily pigmented")
    assert score("nurnberger_muller", {"grade": 2}).interpretation.endswith("Visible standing but not lying")
    assert score("norwood_hamilton", {"stage": "III_VERTEX"}).grade == "III_VERTEX"
    assert score("ludwig", {"grade": "II"}).value == "II"
    with pytest.raises(InstrumentValidationError, match="'stage': 'VIII' is not an allowed choice"):
        score("norwood_hamilton", {"stage": "VIII"})
    with pytest.raises(InstrumentValidationError, match="'grade': 'IV' is not an allowed choice"):
        score("ludwig", {"grade": "IV"})


@pytest.mark.parametrize(
    ("total", "skin_type"),
    [
        (0, "I"),
        (6, "I"),
        (7, "II"),
        (13, "II"),
        (14, "III"),
        (20, "III"),
        (21, "IV"),
        (27, "IV"),
        (28, "V"),
        (34, "V"),
        (35, "VI"),
        (40, "VI"),
    ],
)
def test_fitzpatrick_questionnaire_bands(total, skin_type):
    items = get_instrument("fitzpatrick_questionnaire").items
    answers, left = {}, total
    for item in items:
        answers[item.code] = min(4, left)
        left -= answers[item.code]
    s = score("fitzpatrick_questionnaire", answers)
    assert s.value == total and s.grade == skin_type


def test_posas_totals_exclude_overall_opinion():
    obs = {
        "vascularity": 3,
        "pigmentation": 2,
        "thickness": 4,
        "relief": 1,
        "pliability": 5,
        "surface_area": 2,
        "overall_opinion": 9,
    }
    s = score("posas_observer", obs)
    assert s.value == 17 and s.subscores == {"overall_opinion": 9} and "range 6-60" in s.interpretation
    assert s.version == "2.0"
    pat = {"pain": 1, "itching": 1, "colour": 1, "stiffness": 1, "thickness": 1, "irregularity": 1}
    assert score("posas_patient", pat | {"overall_opinion": 4}).value == 6
    with pytest.raises(InstrumentValidationError, match="'overall_opinion': is required"):
        score("posas_patient", pat)
    assert score("posas_patient", dict.fromkeys(pat, 10) | {"overall_opinion": 10}).value == 60


def test_posas_validation_names_item_and_range():
    with pytest.raises(InstrumentValidationError) as exc:
        score("posas_patient", {"pain": 0, "itching": 11, "colour": 2.5, "stiffness": 1, "thickness": 1})
    errs = _errors(exc)
    assert errs["pain"] == "0 is out of range"
    assert errs["itching"] == "11 is out of range"
    assert errs["colour"] == "2.5 is not a whole number"
    assert errs["irregularity"] == "is required"
    assert "allowed: integer 1-10" in str(exc.value)


def test_vss_and_hexsel():
    assert score("vss", {"vascularity": 3, "pigmentation": 2, "pliability": 5, "height": 3}).value == 13
    with pytest.raises(InstrumentValidationError, match="'pliability': 6 is out of range"):
        score("vss", {"vascularity": 0, "pigmentation": 0, "pliability": 6, "height": 0})
    base = {"depressions_number": 1, "depressions_depth": 1, "raised_lesions": 1, "laxity": 1, "nurnberger_muller": 1}
    s = score("hexsel_css", base)
    assert (s.value, s.grade) == (5, "mild")
    assert "band cut-offs are unverified" in s.warnings
    assert score("hexsel_css", base | {"laxity": 2}).grade == "moderate"
    assert score("hexsel_css", dict.fromkeys(base, 3)).grade == "severe"
    assert score("hexsel_css", dict.fromkeys(base, 2)).grade == "moderate"  # 10
    assert score("hexsel_css", base | {"laxity": 3, "raised_lesions": 3, "depressions_depth": 3}).grade == "severe"


def test_measurements():
    s = score("hair_density", {"hair_count": 150, "area_cm2": 0.5, "baseline_density": 250})
    assert s.value == 300 and s.unit == "hairs/cm2"
    assert s.subscores["change_from_baseline"] == 50 and s.subscores["percent_change"] == 20
    with pytest.raises(InstrumentValidationError, match="'area_cm2': 0 is out of range"):
        score("hair_density", {"hair_count": 10, "area_cm2": 0})
    d = score("dermal_thickness_us", {"thickness_mm": 1.8, "baseline_mm": 1.5})
    assert d.value == 1.8 and d.subscores["change_mm"] == pytest.approx(0.3)
    assert d.subscores["percent_change"] == pytest.approx(20.0)
    r = score("graft_retention", {"injected_ml": 20, "retained_ml": 9.4, "method": "photo_3d"})
    assert r.value == 47.0 and r.subscores["ratio"] == 0.47 and "pooled 47%" in r.interpretation
    over = score("graft_retention", {"injected_ml": 10, "retained_ml": 12})
    assert over.value == 120 and over.warnings


def test_elastography_conversion_closed_form():
    # E = 3 rho c^2: 1 m/s at 1000 kg/m3 -> 3 kPa; 2 m/s -> 12 kPa; 5 m/s -> 75 kPa
    assert grading.youngs_modulus_from_speed(1.0) == pytest.approx(3.0)
    assert grading.youngs_modulus_from_speed(5.0) == pytest.approx(75.0)
    assert grading.youngs_modulus_from_speed(2.0, 1100) == pytest.approx(13.2)
    for c in (0.5, 1.7, 3.3, 9.0):
        assert grading.speed_from_youngs_modulus(grading.youngs_modulus_from_speed(c)) == pytest.approx(c)
    s = score("elastography_swe", {"youngs_modulus_kpa": 75})
    assert s.subscores["shear_wave_speed_m_s"] == pytest.approx(5.0) and s.value == 75
    assert score("elastography_swe", {"shear_wave_speed_m_s": 2}).value == pytest.approx(12.0)
    with pytest.raises(InstrumentValidationError, match="exactly one"):
        score("elastography_swe", {"shear_wave_speed_m_s": 2, "youngs_modulus_kpa": 12})
    with pytest.raises(InstrumentValidationError, match="exactly one"):
        score("elastography_swe", {})
    assert math.isclose(grading.speed_from_youngs_modulus(12.0), 2.0)


# --- ASTCT CRS boundaries (Lee 2019) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("responses", "grade"),
    [
        ({"temperature_c": 37.9}, 0),
        ({"temperature_c": 38.0}, 1),
        ({"temperature_c": 39.5, "hypotension": "none", "oxygen": "none"}, 1),
        ({"temperature_c": 38.0, "hypotension": "no_vasopressor"}, 2),
        ({"temperature_c": 38.0, "oxygen": "low_flow"}, 2),
        ({"temperature_c": 38.0, "oxygen_flow_l_min": 6}, 2),
        ({"temperature_c": 38.0, "oxygen_flow_l_min": 6.5}, 3),
        ({"temperature_c": 38.0, "oxygen": "high_flow"}, 3),
        ({"temperature_c": 38.0, "hypotension": "one_vasopressor"}, 3),
        ({"temperature_c": 38.0, "hypotension": "multiple_vasopressors"}, 4),
        ({"temperature_c": 38.0, "oxygen": "positive_pressure"}, 4),
        ({"temperature_c": 38.2, "hypotension": "no_vasopressor", "oxygen": "high_flow"}, 3),  # worse of the two
        ({"temperature_c": 38.2, "hypotension": "multiple_vasopressors", "oxygen": "low_flow"}, 4),
        ({"temperature_c": 36.8, "hypotension": "one_vasopressor", "fever_masked": True}, 3),  # after tocilizumab
        ({"temperature_c": 36.8, "hypotension": "one_vasopressor"}, 0),  # no fever, not masked
        ({"temperature_c": 39.0, "death_from_crs": True}, 5),
    ],
)
def test_crs_grade_boundaries(responses, grade):
    assert score("crs_astct", responses).value == grade


def test_crs_inconsistencies_and_notes():
    with pytest.raises(InstrumentValidationError, match="'oxygen_flow_l_min': 8.0 L/min is not low-flow"):
        score("crs_astct", {"temperature_c": 38.5, "oxygen": "low_flow", "oxygen_flow_l_min": 8})
    with pytest.raises(InstrumentValidationError, match="'temperature_c': 46 is out of range"):
        score("crs_astct", {"temperature_c": 46})
    s = score("crs_astct", {"temperature_c": 37.0, "oxygen": "high_flow"})
    assert s.value == 0 and "fever_masked" in s.warnings[0]
    assert (
        "driven by hypotension and hypoxia"
        in score(
            "crs_astct", {"temperature_c": 38.1, "hypotension": "one_vasopressor", "oxygen": "high_flow"}
        ).interpretation
    )


# --- ICE and ICANS boundaries (Lee 2019) ----------------------------------------------------------


def test_ice_score():
    full = {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1}
    assert score("ice", full).value == 10
    assert score("ice", dict.fromkeys(full, 0)).value == 0
    with pytest.raises(InstrumentValidationError, match="'naming': 4 is out of range"):
        score("ice", full | {"naming": 4})


@pytest.mark.parametrize(
    ("responses", "grade"),
    [
        ({"ice_score": 10}, 0),
        ({"ice_score": 9}, 1),
        ({"ice_score": 7}, 1),
        ({"ice_score": 6}, 2),
        ({"ice_score": 3}, 2),
        ({"ice_score": 2}, 3),
        ({"ice_score": 0}, 3),  # awake with global aphasia
        ({"ice_score": 0, "consciousness": "unarousable"}, 4),
        ({"consciousness": "unarousable"}, 4),  # unable to perform ICE
        ({"ice_score": 10, "consciousness": "awakens_spontaneously"}, 1),
        ({"ice_score": 10, "consciousness": "awakens_to_voice"}, 2),
        ({"ice_score": 10, "consciousness": "awakens_to_touch"}, 3),
        ({"ice_score": 3, "seizure": "rapidly_resolving"}, 3),  # the ASTCT worked example
        ({"ice_score": 8, "seizure": "prolonged"}, 4),
        ({"ice_score": 8, "motor": "deep_focal_weakness"}, 4),
        ({"ice_score": 8, "raised_icp": "focal_oedema"}, 3),
        ({"ice_score": 8, "raised_icp": "diffuse"}, 4),
        ({"orientation": 2, "naming": 3, "commands": 1, "writing": 0, "attention": 0}, 2),  # ICE 6
    ],
)
def test_icans_grade_boundaries(responses, grade):
    assert score("icans_astct", responses).value == grade


def test_icans_validation():
    with pytest.raises(InstrumentValidationError, match="'ice_score': required unless the patient is unarousable"):
        score("icans_astct", {"consciousness": "awakens_to_voice"})
    with pytest.raises(InstrumentValidationError, match="give all five ICE items"):
        score("icans_astct", {"orientation": 4, "naming": 3})
    with pytest.raises(InstrumentValidationError, match="does not match the ICE items"):
        score(
            "icans_astct", {"ice_score": 9, "orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1}
        )
    with pytest.raises(InstrumentValidationError, match="'seizure': 'status' is not an allowed choice"):
        score("icans_astct", {"ice_score": 9, "seizure": "status"})
    # Lee 2019: ICE 0 with an unarousable patient is grade 4 because ICE cannot be performed; a
    # positive ICE score in an unarousable patient is contradictory data, not a grade.
    with pytest.raises(InstrumentValidationError, match="unarousable patient cannot perform the ICE"):
        score("icans_astct", {"ice_score": 6, "consciousness": "unarousable"})


def test_clavien_dindo_and_ctcae():
    assert score("clavien_dindo", {"grade": "IIIb"}).value == "IIIb"
    assert score("clavien_dindo", {"grade": "IVa", "disability": "yes"}).value == "IVa-d"
    with pytest.raises(InstrumentValidationError, match="does not apply to grade V"):
        score("clavien_dindo", {"grade": "V", "disability": True})
    with pytest.raises(InstrumentValidationError, match="'grade': 'IIIc' is not an allowed choice"):
        score("clavien_dindo", {"grade": "IIIc"})
    c = score("ctcae", {"term": "Injection site reaction", "grade": 2})
    assert c.value == 2 and "instrumental ADL" in c.interpretation and c.warnings
    assert score("ctcae", {"term": "Skin necrosis", "impact": "life_threatening"}).value == 4
    with pytest.raises(InstrumentValidationError, match="contradicts impact"):
        score("ctcae", {"term": "Pain", "grade": 1, "impact": "death"})
    with pytest.raises(InstrumentValidationError, match="'grade': 6 is out of range"):
        score("ctcae", {"term": "Pain", "grade": 6})
    with pytest.raises(InstrumentValidationError, match="'term': is required"):
        score("ctcae", {"grade": 1})


def test_unknown_instrument_and_items():
    with pytest.raises(KeyError, match="unknown instrument 'face_q'"):
        score("face_q", {})
    with pytest.raises(InstrumentValidationError, match="'colour': is not an item"):
        score("wsrs", {"grade": 1, "colour": 2})
    with pytest.raises(InstrumentValidationError, match="'fever_masked': 'maybe' is not a boolean"):
        score("crs_astct", {"temperature_c": 38, "fever_masked": "maybe"})


LICENSED = {
    "code": "licensed_satisfaction",
    "name": "Licensed satisfaction scale (fixture, not a real instrument)",
    "kind": "patient_reported",
    "source": "Licensee's own copy; not distributed with RegenGuide",
    "licence": "Licensed to the clinic; never bundled.",
    "items": [
        {
            "code": f"q{i}",
            "label": f"Question {i}",
            "type": "choice",
            "choices": [{"value": "a", "label": "Disagree", "score": 1}, {"value": "b", "label": "Agree", "score": 2}],
        }
        for i in range(1, 4)
    ],
    "scoring": {"method": "lookup", "table": {3: 0, 4: 33, 5: 67, 6: 100}, "unit": "0-100"},
}


def test_licensee_definition_loaded_from_file(tmp_path):
    path = tmp_path / "licensed.yaml"
    path.write_text(yaml.safe_dump(LICENSED), encoding="utf-8")
    try:
        d = load_instrument_definition(path)
        assert d.code == "licensed_satisfaction"
        assert any(i.code == d.code and not i.bundled for i in instruments())
        s = score("licensed_satisfaction", {"q1": "b", "q2": "a", "q3": "b"})
        assert s.value == 67 and s.subscores["raw_total"] == 5
    finally:
        unregister_instrument("licensed_satisfaction")
    with pytest.raises(KeyError):
        get_instrument("licensed_satisfaction")


def test_licensee_definition_errors(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="bundled instrument"):
        load_instrument_definition(LICENSED | {"code": "wsrs"}, register=False)
    with pytest.raises(KnowledgeBaseError, match="give citations or a source"):
        load_instrument_definition({k: v for k, v in LICENSED.items() if k != "source"}, register=False)
    with pytest.raises(KnowledgeBaseError, match="lookup scoring needs a table"):
        load_instrument_definition(LICENSED | {"scoring": {"method": "lookup"}}, register=False)
    with pytest.raises(UnknownCitation):
        load_instrument_definition(LICENSED | {"citations": ["nope"]}, register=False)
    with pytest.raises(KnowledgeBaseError, match="cannot read"):
        load_instrument_definition(tmp_path / "missing.yaml")


def test_bundled_file_fails_loudly_when_malformed():
    bad = {
        "instruments": [
            {
                "code": "x",
                "name": "X",
                "kind": "grading",
                "licence": "l",
                "citations": ["ctcae-v5"],
                "items": [{"code": "a", "label": "A", "type": "integer", "min": 0}],
                "scoring": {"method": "sum"},
            }
        ]
    }
    with pytest.raises(KnowledgeBaseError, match="numeric items need a max"):
        parse_instrument_file(bad)
    with pytest.raises(KnowledgeBaseError, match="unknown algorithm"):
        parse_instrument_file(
            {
                "instruments": [
                    bad["instruments"][0]
                    | {
                        "items": [{"code": "a", "label": "A", "type": "integer", "min": 0, "max": 1}],
                        "scoring": {"method": "algorithm", "algorithm": "magic"},
                    }
                ]
            }
        )


def test_change_from_baseline():
    from regenguide.outcomes.instruments import change_from_baseline

    before = score(
        "posas_patient",
        dict.fromkeys(["pain", "itching", "colour", "stiffness", "thickness", "irregularity", "overall_opinion"], 5),
    )
    after = score(
        "posas_patient",
        dict.fromkeys(["pain", "itching", "colour", "stiffness", "thickness", "irregularity", "overall_opinion"], 3),
    )
    c = change_from_baseline(before, after)
    assert (c.change, c.percent_change, c.improved, c.compared_as) == (-12, -40.0, True, "value")
    hair = change_from_baseline(
        score("hair_density", {"hair_count": 100, "area_cm2": 1}),
        score("hair_density", {"hair_count": 120, "area_cm2": 1}),
    )
    assert hair.improved is True and hair.change == 20
    norwood = change_from_baseline(
        score("norwood_hamilton", {"stage": "III"}), score("norwood_hamilton", {"stage": "IV"})
    )
    assert (
        norwood.compared_as == "rank" and norwood.change == 3 and norwood.improved is False
    )  # IIIA, III vertex between
    same = change_from_baseline(score("wsrs", {"grade": 3}), score("wsrs", {"grade": 3}))
    assert same.change == 0 and same.improved is None
    none_dir = change_from_baseline(
        score("dermal_thickness_us", {"thickness_mm": 1.5}), score("dermal_thickness_us", {"thickness_mm": 1.8})
    )
    assert none_dir.improved is None and none_dir.direction == "none"
    cd = change_from_baseline(score("clavien_dindo", {"grade": "II"}), score("clavien_dindo", {"grade": "IIIb"}))
    assert cd.compared_as == "rank" and cd.change == 2 and cd.improved is False
    with pytest.raises(ValueError, match="cannot compare 'wsrs' with 'vss'"):
        change_from_baseline(
            score("wsrs", {"grade": 3}),
            score("vss", {"vascularity": 0, "pigmentation": 0, "pliability": 0, "height": 0}),
        )
