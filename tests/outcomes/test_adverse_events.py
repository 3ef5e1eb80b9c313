from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from regenguide.domain.findings import Indicator
from regenguide.kb.references import KnowledgeBaseError, UnknownCitation
from regenguide.outcomes.adverse_events import (
    AdverseEventReport,
    Outcome,
    Relatedness,
    Seriousness,
    adverse_event_terms,
    parse_taxonomy,
    patient_flags,
    terms_for,
    to_fhir_adverse_event,
)

SEED_TERMS = {
    "bruising",
    "oedema",
    "erythema",
    "pain",
    "infection",
    "nodule",
    "fat_necrosis",
    "oil_cyst",
    "calcification",
    "contour_irregularity",
    "graft_resorption",
    "vascular_occlusion",
    "skin_necrosis",
    "vision_loss",
    "stroke",
    "fat_embolism",
    "haematoma",
    "crs",
    "icans",
    "cytopenia",
    "gvhd",
}


def _report(**kw):
    base = {
        "patient_ref": "Patient/p1",
        "term": "bruising",
        "modality": "prp",
        "procedure_date": date(2026, 2, 1),
        "onset_date": date(2026, 2, 1),
        "severity_grade": 1,
        "relatedness": "probable",
        "outcome": "recovering",
    }
    return AdverseEventReport(**(base | kw))


def test_taxonomy_covers_the_seeds_and_is_cited():
    terms = adverse_event_terms()
    assert set(terms) >= SEED_TERMS
    assert all(t.citations for t in terms.values())
    # SNOMED CT only where checked; most terms carry none
    coded = {t.id: t.snomed.code for t in terms.values() if t.snomed}
    assert coded == {"oedema": "267038008", "erythema": "247441003", "pain": "22253000", "stroke": "230690007"}
    assert terms["crs"].grading == "astct_crs" and terms["icans"].grading == "astct_icans"
    assert {t.id for t in terms_for("car_t")} >= {"crs", "icans", "cytopenia", "infection"}
    assert "crs" not in {t.id for t in terms_for("microfat")}
    assert "fat_embolism" in {t.id for t in terms_for("nanofat")}


def test_non_serious_local_event():
    r = _report()
    assert not r.is_serious() and r.serious_reasons() == []
    assert patient_flags([r]) == []


def test_seriousness_criteria_and_flags():
    hosp = _report(
        id="ae2",
        term="infection",
        severity_grade=3,
        seriousness=["hospitalisation"],
        relatedness="possible",
        outcome="recovered",
        resolution_date=date(2026, 2, 20),
    )
    assert hosp.is_serious() and hosp.serious_reasons() == ["hospitalisation"]
    flags = patient_flags([_report(), hosp])
    assert len(flags) == 1
    flag = flags[0]
    assert flag.kind == "serious_adverse_event" and flag.indicator is Indicator.critical
    assert flag.event_id == "ae2" and flag.patient_ref == "Patient/p1" and "Infection" in flag.summary
    assert flag.citations == ["ich-e2a"]


def test_important_medical_event_is_serious_by_default_and_severity_is_not_seriousness():
    vision = _report(term="vision_loss", modality="microfat", severity_grade=2, outcome="not_recovered")
    assert vision.is_serious() and "medically_important (taxonomy default)" in vision.serious_reasons()
    severe_pain = _report(term="pain", severity_grade=3)
    assert not severe_pain.is_serious()  # severe is not serious


def test_fatal_event_consistency():
    fatal = _report(
        term="fat_embolism",
        modality="microfat",
        severity_grade=5,
        outcome="fatal",
        seriousness=["death", "death"],
        relatedness="probable",
    )
    assert fatal.seriousness == [Seriousness.death]
    assert fatal.serious_reasons()[0] == "death"
    with pytest.raises(ValidationError, match="outcome must be 'fatal'"):
        _report(severity_grade=5, outcome="recovering", seriousness=["death"])
    with pytest.raises(ValidationError, match="needs severity grade 5"):
        _report(severity_grade=4, outcome="fatal", seriousness=["death"])
    with pytest.raises(ValidationError, match="criterion 'death'"):
        _report(severity_grade=5, outcome="fatal")


def test_validation_messages():
    with pytest.raises(ValidationError, match="unknown adverse-event term 'bruise'"):
        _report(term="bruise")
    with pytest.raises(ValidationError, match="'other' needs a verbatim"):
        _report(term="other")
    other = _report(term="other", verbatim="Transient tingling of the upper lip")
    assert other.label == "Other: Transient tingling of the upper lip"
    with pytest.raises(ValidationError, match="before the procedure"):
        _report(onset_date=date(2026, 1, 31))
    with pytest.raises(ValidationError, match="before onset"):
        _report(outcome="recovered", resolution_date=date(2026, 1, 31), procedure_date=None)
    with pytest.raises(ValidationError, match="resolution_date given but outcome is 'recovering'"):
        _report(resolution_date=date(2026, 2, 3))
    with pytest.raises(ValidationError, match="severity_grade"):
        _report(severity_grade=6)
    with pytest.raises(ValidationError, match="relatedness"):
        _report(relatedness="definite")
    with pytest.raises(ValidationError, match="seriousness"):
        _report(seriousness=["expensive"])


def test_unexpected_for_modality_raises_a_warning_flag_not_an_error():
    crs_after_prp = _report(term="crs", modality="prp", severity_grade=2)
    assert crs_after_prp.unexpected_for_modality
    flags = patient_flags([crs_after_prp])
    assert [(f.kind, f.indicator) for f in flags] == [("unexpected_adverse_event", Indicator.warning)]
    assert not _report(term="crs", modality="car_t", severity_grade=2).unexpected_for_modality


def test_flags_sorted_by_patient_and_onset():
    events = [
        _report(
            patient_ref="Patient/b",
            term="stroke",
            modality="microfat",
            severity_grade=4,
            seriousness=["hospitalisation"],
            onset_date=date(2026, 2, 3),
        ),
        _report(
            patient_ref="Patient/a",
            term="skin_necrosis",
            modality="nanofat",
            severity_grade=3,
            onset_date=date(2026, 2, 5),
        ),
        _report(
            patient_ref="Patient/a",
            term="vascular_occlusion",
            modality="nanofat",
            severity_grade=3,
            onset_date=date(2026, 2, 2),
        ),
    ]
    flags = patient_flags(events)
    assert [(f.patient_ref, f.onset_date.day) for f in flags] == [("Patient/a", 2), ("Patient/a", 5), ("Patient/b", 3)]


def test_fhir_adverse_event():
    r = _report(
        id="ae9",
        term="stroke",
        modality="microfat",
        severity_grade=4,
        seriousness=["hospitalisation"],
        relatedness=Relatedness.possible,
        outcome=Outcome.recovered_with_sequelae,
        resolution_date=date(2026, 3, 1),
        suspect_products=[{"product_type": "microfat", "product_id": "A999921123456", "lot": "L1"}],
    )
    fhir = to_fhir_adverse_event(r)
    assert fhir.get_resource_type() == "AdverseEvent"
    assert fhir.event.coding[0].system == "http://snomed.info/sct" and fhir.event.coding[0].code == "230690007"
    assert fhir.seriousness.coding[0].code == "serious"
    assert fhir.severity.coding[0].code == "severe"
    assert fhir.outcome.coding[0].code == "resolvedWithSequelae"
    assert fhir.suspectEntity[0].instance.identifier.value == "A999921123456"
    assert fhir.suspectEntity[0].causality[0].assessment.coding[0].code == "Possible"
    assert fhir.extension[0].valueInteger == 4
    assert to_fhir_adverse_event(_report()).severity.coding[0].code == "mild"


def test_taxonomy_file_fails_loudly():
    good = {
        "terms": [
            {
                "id": "x",
                "label": "X",
                "soc": "S",
                "modalities": ["prp"],
                "citations": ["ctcae-v5"],
                "evidence": "verified",
            }
        ]
    }
    assert "x" in parse_taxonomy(good)
    with pytest.raises(KnowledgeBaseError, match="duplicate or reserved"):
        parse_taxonomy({"terms": good["terms"] * 2})
    with pytest.raises(KnowledgeBaseError, match="modalities"):
        parse_taxonomy({"terms": [good["terms"][0] | {"modalities": ["botox"]}]})
    with pytest.raises(UnknownCitation):
        parse_taxonomy({"terms": [good["terms"][0] | {"citations": ["nobody-2020"]}]})
    with pytest.raises(KnowledgeBaseError, match="snomed"):
        parse_taxonomy({"terms": [good["terms"][0] | {"snomed": {"code": "abc", "display": "x"}}]})
