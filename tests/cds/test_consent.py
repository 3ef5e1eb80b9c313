"""Consent documents: content from cited data, investigational status from the regulatory gate,
provable digest, PDF output, decision records, and loud failure on malformed consent data."""

from __future__ import annotations

import copy
import hashlib
import re
from datetime import UTC, datetime
from importlib import resources

import pytest
import yaml

from regenguide.cds import consent as consent_mod
from regenguide.cds.consent import (
    ConsentDecision,
    ConsentError,
    canonical_digest,
    load_consent_data,
    parse_consent_data,
    plan_digest,
    record_decision,
    render_consent,
    to_pdf,
    to_plan_consent,
    verify_decision,
)
from regenguide.cds.regulatory import assess, packs
from regenguide.domain.plan import Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, UnknownCitation, load_references


def make_plan(modality: str = "microfat", jurisdiction: str = "US", **kw: object) -> PlanDocument:
    base: dict[str, object] = {
        "jurisdiction": jurisdiction,
        "indication": "facial_volume_loss",
        "modality": modality,
        "same_surgical_procedure": True,
        "homologous_use": True,
        "guidance": {"imaging": "ultrasound", "doppler": True},
        "injections": [
            {
                "region": "glabella",
                "side": "midline",
                "plane": "subdermal",
                "device": "cannula",
                "gauge": 25,
                "volume_ml": 1.0,
                "bolus_ml": 0.05,
            }
        ],
    }
    base.update(kw)
    return PlanDocument.model_validate(base)


def section_ids(doc: consent_mod.ConsentDocument) -> list[str]:
    return [s.id for s in doc.sections]


def raw(name: str) -> dict:  # type: ignore[type-arg]
    folder = resources.files("regenguide.kb") / "data" / "consent"
    return yaml.safe_load((folder / name).read_text(encoding="utf-8"))


# --- investigational status ----------------------------------------------------------------------


def test_investigational_text_present_exactly_when_the_gate_says_so() -> None:
    seen = {True: 0, False: 0}
    for pack in packs():
        for modality in Modality:
            for hom in (True, None):
                plan = make_plan(modality.value, pack.jurisdiction, homologous_use=hom)
                doc = render_consent(plan)
                expected = assess(plan).investigational
                assert ("investigational" in section_ids(doc)) is expected, (pack.jurisdiction, modality, hom)
                assert ("is investigational in this jurisdiction" in doc.text) is expected
                assert doc.investigational is expected
                seen[expected] += 1
    assert seen[True] > 10 and seen[False] > 10


def test_known_cases() -> None:
    assert render_consent(make_plan("svf_enzymatic", "US")).investigational is True  # 351 without IND
    assert render_consent(make_plan("microfat", "US")).investigational is False  # same surgical procedure
    assert render_consent(make_plan("adsc_expanded", "IN")).investigational is True  # clinical_trial_only
    assert render_consent(make_plan("cal", "EU")).investigational is True  # ATMP
    assert render_consent(make_plan("prp", "EU")).investigational is False
    doc = render_consent(make_plan("svf_enzymatic", "US"))
    assert "I understand that this treatment is investigational" in doc.text
    assert "I understand that this treatment is investigational" not in render_consent(make_plan("prp")).text


# --- risks and sources ---------------------------------------------------------------------------


def test_every_risk_cites_resolvable_sources_and_numbers_are_sourced() -> None:
    refs = load_references()
    for modality in Modality:
        doc = render_consent(make_plan(modality.value))
        risks = next(s for s in doc.sections if s.id == "risks")
        assert risks.items, modality
        for item in risks.items:
            assert item.citations and item.refs, (modality, item.text)
            assert all(c in refs for c in item.citations)
            if item.rate:
                assert all(
                    refs[c].evidence in (EvidenceLabel.verified, EvidenceLabel.secondary)
                    for c in item.citations
                )
            assert not re.search(r"\d", item.text), "numbers belong in the cited rate"
        numbers = {s.number for s in doc.sources}
        assert numbers == set(range(1, len(doc.sources) + 1))
        for s in doc.sources:
            assert f"[{s.number}]" in doc.text


def test_fat_graft_blindness_share_is_stated_with_its_source_and_caveat() -> None:
    doc = render_consent(make_plan("microfat"))
    risks = next(s for s in doc.sections if s.id == "risks")
    blindness = next(i for i in risks.items if "chatrath-2019-blindness" in i.citations)
    assert "90 (47%)" in (blindness.rate or "") and "not the chance per treatment" in (blindness.rate or "")
    overall = next(i for i in risks.items if "kb.groen-2017" in i.citations)
    assert "6%" in (overall.rate or "")
    assert "(expert opinion)" in doc.text  # harvest-site risk has no source number and says so


def test_high_risk_region_paragraph_only_for_danger_zones() -> None:
    in_zone = render_consent(make_plan("microfat"))
    assert "arteries run close to the injection (glabella)" in in_zone.text
    cheek = make_plan("microfat", injections=[{"region": "midface", "side": "left", "volume_ml": 1.4}])
    assert "arteries run close" not in render_consent(cheek).text


def test_imaging_text_follows_guidance() -> None:
    doppler = render_consent(make_plan("prp")).text
    assert "ultrasound with Doppler" in doppler
    landmarks = render_consent(make_plan("prp", guidance={"imaging": "none"})).text
    assert "No imaging guidance is planned" in landmarks
    infusion = render_consent(make_plan("car_t", injections=[], guidance={"imaging": "none"})).text
    assert "infusion into a vein" in infusion and "surface landmarks" not in infusion


def test_grade_shown_and_fallback_when_knowledge_base_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consent_mod, "_grade_from_kb", lambda modality: None)
    prp = render_consent(make_plan("prp")).text
    assert "(GRADE): low to moderate" in prp
    fat = render_consent(make_plan("microfat")).text
    assert "(GRADE): moderate." in fat
    mn = render_consent(
        make_plan("microneedling", injections=[{"region": "thigh", "needle_depth_mm": 1.5}])
    ).text
    assert "has not been graded" in mn


def test_grade_from_knowledge_base_when_available() -> None:
    view = consent_mod._grade_from_kb(Modality.prp)
    if view is None:
        pytest.skip("knowledge base modalities not available")
    text = render_consent(make_plan("prp")).text
    assert f"(GRADE): {view.level.replace('_', ' ')}" in text


# --- digest and versions -------------------------------------------------------------------------


def test_digest_is_sha256_of_text_stable_and_plan_bound() -> None:
    plan = make_plan("microfat")
    a, b = render_consent(plan), render_consent(plan)
    assert a.text_digest == b.text_digest == hashlib.sha256(a.text.encode("utf-8")).hexdigest()
    assert canonical_digest(a.text) == a.text_digest
    assert a.version == b.version == consent_mod.consent_version() and a.version.startswith("1.0+")
    changed = make_plan("microfat", injections=[{"region": "glabella", "volume_ml": 1.2}])
    assert render_consent(changed).text_digest != a.text_digest
    # any plan change, even one not printed, changes the digest through the plan reference
    other_patient = make_plan("microfat", patient={"age": 50})
    assert render_consent(other_patient).text_digest != a.text_digest
    # the consent status itself is not part of what is consented to
    signed = make_plan("microfat", consent={"status": "signed", "signed_on": "2026-11-22"})
    assert plan_digest(signed) == plan_digest(plan)
    assert render_consent(signed).text_digest == a.text_digest
    assert render_consent(plan, patient_name="A. Patient").text_digest != a.text_digest


def test_decision_record_and_verification() -> None:
    doc = render_consent(make_plan("svf_enzymatic"), patient_name="A. Patient")
    when = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    dec = record_decision(
        doc, decision="accepted", signer_name="A. Patient", signed_at=when, registry_opt_in=True
    )
    assert dec.document_digest == doc.text_digest and dec.version == doc.version
    assert verify_decision(doc, dec) and verify_decision(doc.text, dec)
    assert not verify_decision(doc.text.replace("Patient", "Patiant"), dec)
    status = to_plan_consent(dec)
    assert status.status == "signed" and status.signed_on == "2026-11-22" and status.version == doc.version
    declined = record_decision(doc, decision="declined", signer_name="B. Guardian", signer_role="guardian")
    assert to_plan_consent(declined).status == "declined" and declined.signed_at.tzinfo is not None
    data = dec.model_dump(mode="json")
    assert ConsentDecision.model_validate(data) == dec
    with pytest.raises(ValueError):
        ConsentDecision.model_validate({**data, "signed_at": "2026-11-22T09:30:00"})
    with pytest.raises(ValueError):
        ConsentDecision.model_validate({**data, "signer_role": "friend"})
    with pytest.raises(ValueError):
        ConsentDecision.model_validate({**data, "document_digest": "abc"})


def test_trial_participation_is_stated_when_declared() -> None:
    from regenguide.cds.regulatory import RegulatoryContext

    plan = make_plan("adsc_expanded", "IN")
    in_trial = render_consent(plan, context=RegulatoryContext(approved_trial=True)).text
    assert "You are offered it within an approved clinical trial" in in_trial
    assert "You are offered it" not in render_consent(plan).text
    # declaring a trial does not make an allowed product investigational
    assert "investigational" not in section_ids(
        render_consent(make_plan("prp"), context=RegulatoryContext(approved_trial=True))
    )


def test_unsupported_language_is_a_clear_error() -> None:
    with pytest.raises(ConsentError, match="not available"):
        render_consent(make_plan(), language="xx")


# --- HTML and PDF --------------------------------------------------------------------------------


def test_html_escapes_names_and_carries_digest() -> None:
    doc = render_consent(make_plan("prp"), patient_name="<script>alert(1)</script>", clinic="Smith & Co")
    assert "<script>alert" not in doc.html and "&lt;script&gt;" in doc.html
    assert "Smith &amp; Co" in doc.html
    assert f"sha256:{doc.text_digest}" in doc.html
    for heading in (
        "The procedure",
        "Imaging guidance",
        "Expected benefit",
        "Risks",
        "Alternatives",
        "Use of your data",
        "Your decision",
        "Sources",
    ):
        assert heading in doc.html


def test_pdf_is_valid_deterministic_and_carries_digest() -> None:
    doc = render_consent(make_plan("svf_enzymatic"), patient_name="Zoë Ølsen", clinic="Clinic")
    pdf = to_pdf(doc)
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert 1 <= pages <= 10
    assert re.search(rb"/Count\s+%d\b" % pages, pdf)
    assert doc.text_digest.encode() in pdf  # in the document information (subject)
    assert to_pdf(doc) == pdf
    try:
        import pypdf  # noqa: F401  (only if installed)
    except ImportError:
        return
    reader = pypdf.PdfReader(__import__("io").BytesIO(pdf))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Risks" in text and doc.text_digest in text


# --- malformed consent data fails loudly ---------------------------------------------------------


def test_shipped_consent_data_loads() -> None:
    data = load_consent_data("en")
    assert set(data.modalities.modalities) == set(Modality)


def test_digit_in_qualitative_text_fails() -> None:
    mods = copy.deepcopy(raw("modalities.yaml"))
    mods["modalities"]["prp"]["risks"][0]["text"] = "Bruising in 30% of patients."
    with pytest.raises(KnowledgeBaseError, match="may not contain numbers"):
        parse_consent_data(raw("common.yaml"), mods)


def test_rate_citing_unverified_source_fails() -> None:
    mods = copy.deepcopy(raw("modalities.yaml"))
    mods["modalities"]["prp"]["risks"][0]["rate"] = "about 10%"
    mods["modalities"]["prp"]["risks"][0]["citations"] = ["regenguide-expert-opinion"]  # expert opinion
    with pytest.raises(KnowledgeBaseError, match="verified/secondary"):
        parse_consent_data(raw("common.yaml"), mods)


def test_unknown_citation_missing_modality_and_bad_field_fail() -> None:
    mods = copy.deepcopy(raw("modalities.yaml"))
    mods["modalities"]["prp"]["risks"][0]["citations"] = ["no.such.paper"]
    with pytest.raises(UnknownCitation):
        parse_consent_data(raw("common.yaml"), mods)
    mods = copy.deepcopy(raw("modalities.yaml"))
    del mods["modalities"]["car_t"]
    with pytest.raises(KnowledgeBaseError, match="car_t"):
        parse_consent_data(raw("common.yaml"), mods)
    common = copy.deepcopy(raw("common.yaml"))
    common["surprise"] = True
    with pytest.raises(KnowledgeBaseError):
        parse_consent_data(common, raw("modalities.yaml"))


# --- FHIR R4 Consent -----------------------------------------------------------------------------


def test_fhir_consent_permit_and_deny_round_trip() -> None:
    import base64

    from fhir.resources.R4B.consent import Consent as FhirConsent

    doc = render_consent(make_plan("prp"))
    accepted = record_decision(
        doc, decision="accepted", signer_name="A. Patient", registry_opt_in=True, research_opt_in=False
    )
    res = consent_mod.to_fhir_consent(doc, accepted, patient_reference="Patient/123")
    FhirConsent.model_validate(res)
    assert res["provision"]["type"] == "permit"
    assert {p["code"][0]["text"]: p["type"] for p in res["provision"]["provision"]} == {
        "registry": "permit",
        "research": "deny",
    }
    assert res["identifier"][0]["value"] == doc.text_digest
    text = base64.b64decode(res["sourceAttachment"]["data"]).decode("utf-8")
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == doc.text_digest
    declined = record_decision(doc, decision="declined", signer_name="B. Guardian", signer_role="guardian")
    res2 = consent_mod.to_fhir_consent(doc, declined, patient_reference="Patient/123")
    assert res2["provision"] == {"type": "deny"} and "guardian" in res2["performer"][0]["display"]
    other = render_consent(make_plan("microfat"))
    with pytest.raises(ValueError, match="not made on this document"):
        consent_mod.to_fhir_consent(other, accepted, patient_reference="Patient/123")
