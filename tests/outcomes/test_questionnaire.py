from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from regenguide.outcomes.questionnaire import (
    SCORING_EXTENSION,
    QuestionnaireError,
    build_response,
    errors_only,
    example_questionnaire,
    load_questionnaire,
    score_response,
    to_operation_outcome,
    validate_response,
)

GOOD = {
    "pain": "mild",
    "swelling": "Moderate",
    "bruising": "none",
    "vision_change": False,
    "days_off_work": 2,
    "satisfaction": "satisfied",
}


def _messages(issues):
    return {(i.link_id, i.message) for i in issues}


def test_example_questionnaire_is_r4_and_not_a_licensed_instrument():
    q = example_questionnaire()
    assert q.get_resource_type() == "Questionnaire"
    assert q.experimental is True and "NOT a validated instrument" in q.description
    assert type(q).__module__.startswith("fhir.resources.R4B")


def test_build_then_validate_and_score():
    q = example_questionnaire()
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    r = build_response(q, GOOD, subject="Patient/p1", authored=when, response_id="qr1")
    assert r.status == "completed" and r.subject.reference == "Patient/p1" and r.id == "qr1"
    assert r.questionnaire.endswith("regenguide-recovery-check|1.0.0")
    group = r.item[0]
    assert group.linkId == "symptoms" and [i.linkId for i in group.item] == ["pain", "swelling", "bruising"]
    assert group.item[1].answer[0].valueCoding.code == "moderate"  # matched by display, case-insensitive
    assert validate_response(q, r) == []
    s = score_response(q, r)
    assert s is not None
    assert (s.total, s.minimum, s.maximum) == (3.0, 0.0, 9.0)  # mild 1 + moderate 2 + none 0
    assert s.item_scores == {"pain": 1.0, "swelling": 2.0, "bruising": 0.0} and s.complete
    # the JSON round trip is a valid R4 resource
    again = json.loads(r.model_dump_json())
    assert validate_response(q, again) == []


def test_enable_when_makes_item_required_and_disabled_items_unanswerable():
    q = example_questionnaire()
    with pytest.raises(QuestionnaireError, match="vision_details: is required"):
        build_response(q, GOOD | {"vision_change": True})
    r = build_response(q, GOOD | {"vision_change": "yes", "vision_details": "blurred left eye"})
    assert r.item[2].linkId == "vision_details"
    with pytest.raises(QuestionnaireError, match="answered although it is disabled"):
        build_response(q, GOOD | {"vision_details": "nothing"})


def test_validation_reports_every_problem():
    q = example_questionnaire()
    data = json.loads(build_response(q, GOOD).model_dump_json())
    data["item"][0]["item"][0]["answer"] = [{"valueCoding": {"code": "extreme"}}]
    data["item"][0]["item"].pop(2)  # bruising missing
    data["item"][1]["answer"] = [{"valueString": "no"}]
    data["item"].append({"linkId": "zzz", "answer": [{"valueString": "x"}]})
    data["item"][2]["answer"] = [{"valueInteger": 61}]  # days_off_work above maxValue 60
    issues = validate_response(q, data)
    got = _messages(issues)
    assert ("pain", "'extreme' is not an allowed option (none, mild, moderate, severe)") in got
    assert ("bruising", "is required") in got
    assert ("vision_change", "answer type valueString does not fit item type 'boolean' (expected valueBoolean)") in got
    assert any(link == "zzz" and msg.startswith("unknown item here") for link, msg in got)
    assert ("days_off_work", "61 is above the maximum 60") in got
    outcome = to_operation_outcome(issues)
    assert len(outcome.issue) == len(issues) and outcome.issue[0].severity == "error"


def test_in_progress_responses_need_not_be_complete_and_score_is_partial():
    q = example_questionnaire()
    r = build_response(q, {"pain": "severe"}, status="in-progress")
    assert validate_response(q, r) == []
    s = score_response(q, r)
    assert s.total == 3.0 and not s.complete and s.answered_items == 1
    with pytest.raises(QuestionnaireError, match="bruising: is required"):
        build_response(q, {"pain": "severe", "swelling": "none", "vision_change": False})


def test_repeats_status_and_url_checks():
    q = example_questionnaire()
    data = json.loads(build_response(q, GOOD).model_dump_json())
    data["item"][1]["answer"].append({"valueBoolean": True})
    data["status"] = "done"
    data["questionnaire"] = "http://example.org/Questionnaire/other"
    got = _messages(validate_response(q, data))
    assert ("vision_change", "has 2 answers but does not repeat") in got
    assert any(link is None and "status 'done'" in msg for link, msg in got)
    assert any(link is None and "not 'http://regenguide.org" in msg for link, msg in got)


def test_build_errors():
    q = example_questionnaire()
    with pytest.raises(QuestionnaireError, match="unknown linkId 'mood'"):
        build_response(q, GOOD | {"mood": "ok"})
    with pytest.raises(QuestionnaireError, match="'days_off_work': '2.5' is not a whole number"):
        build_response(q, GOOD | {"days_off_work": "2.5"})
    with pytest.raises(QuestionnaireError, match="'pain': 'agony' is not an allowed option"):
        build_response(q, GOOD | {"pain": "agony"})
    with pytest.raises(QuestionnaireError, match="'symptoms' is a group item"):
        build_response(q, GOOD | {"symptoms": "x"})
    with pytest.raises(QuestionnaireError, match="does not repeat"):
        build_response(q, GOOD | {"pain": ["mild", "severe"]})


def _mini(extension=None, options=None):
    return {
        "resourceType": "Questionnaire",
        "status": "active",
        "url": "http://example.org/Q/mini",
        **({"extension": extension} if extension else {}),
        "item": [
            {
                "linkId": f"q{i}",
                "type": "choice",
                "text": f"Q{i}",
                "required": True,
                "answerOption": options or [{"valueCoding": {"code": str(v), "display": str(v)}} for v in range(4)],
            }
            for i in (1, 2)
        ]
        + [
            {"linkId": "free", "type": "open-choice", "text": "free", "answerOption": [{"valueString": "a"}]},
            {"linkId": "many", "type": "integer", "repeats": True, "text": "many"},
        ],
    }


def test_scoring_by_option_codes_and_no_score_when_undefined():
    plain = load_questionnaire(_mini())
    r = build_response(plain, {"q1": "2", "q2": "3"})
    assert score_response(plain, r) is None  # no weights, no scoring extension: no total defined
    coded = load_questionnaire(_mini(extension=[{"url": SCORING_EXTENSION, "valueCode": "sum-option-codes"}]))
    s = score_response(coded, build_response(coded, {"q1": "2", "q2": "3"}))
    assert (s.total, s.maximum, s.method) == (5.0, 6.0, "sum-option-codes")


def test_open_choice_repeats_and_integer_items():
    q = load_questionnaire(_mini())
    r = build_response(q, {"q1": "0", "q2": "1", "free": "something else", "many": [1, 2, 3]})
    assert r.item[2].answer[0].valueString == "something else"
    assert [a.valueInteger for a in r.item[3].answer] == [1, 2, 3]
    assert errors_only(validate_response(q, r)) == []


def test_load_questionnaire_errors(tmp_path):
    with pytest.raises(QuestionnaireError, match="resourceType must be 'Questionnaire'"):
        load_questionnaire({"resourceType": "Patient"})
    with pytest.raises(QuestionnaireError, match="not valid JSON"):
        load_questionnaire("{not json")
    with pytest.raises(QuestionnaireError, match="cannot read questionnaire"):
        load_questionnaire(tmp_path / "missing.json")
    dup = _mini()
    dup["item"][1]["linkId"] = "q1"
    with pytest.raises(QuestionnaireError, match="duplicate linkId in questionnaire: q1"):
        load_questionnaire(dup)
    path = tmp_path / "q.json"
    path.write_text(json.dumps(_mini()), encoding="utf-8")
    assert load_questionnaire(path).url == "http://example.org/Q/mini"


def test_instruments_as_questionnaires_round_trip():
    from regenguide.outcomes.grading import InstrumentValidationError
    from regenguide.outcomes.instruments import instruments
    from regenguide.outcomes.questionnaire import instrument_questionnaire, score_instrument_response

    for info in instruments():
        q = instrument_questionnaire(info.code)
        assert q.url.endswith(f"instrument-{info.code}") and q.item
    q = instrument_questionnaire("posas_patient")
    assert q.item[0].extension[0].valueInteger == 1 and q.item[0].extension[1].valueInteger == 10
    answers = {
        "pain": 2,
        "itching": 3,
        "colour": 4,
        "stiffness": 1,
        "thickness": 1,
        "irregularity": 2,
        "overall_opinion": 5,
    }
    result = score_instrument_response("posas_patient", build_response(q, answers))
    assert result.value == 13 and result.subscores == {"overall_opinion": 5}
    # the questionnaire's min/max catches out-of-range answers before scoring
    with pytest.raises(QuestionnaireError, match="pain: 11 is above the maximum 10"):
        build_response(q, answers | {"pain": 11})
    gais = instrument_questionnaire("gais_subject")
    scored = score_instrument_response("gais_subject", build_response(gais, {"rating": "Much improved"}))
    assert scored.value == 2
    assert score_response(gais, build_response(gais, {"rating": "5"})).total == 5.0  # itemWeight on options
    icans = instrument_questionnaire("icans_astct")
    with pytest.raises(InstrumentValidationError, match="required unless the patient is unarousable"):
        score_instrument_response("icans_astct", build_response(icans, {"consciousness": "awakens_to_voice"}))
