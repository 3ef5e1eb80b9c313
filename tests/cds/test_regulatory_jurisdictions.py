"""Each jurisdiction's pack x representative modalities: expected class, trial status and requirements."""

from __future__ import annotations

import pytest

from regenguide.cds.regulatory import RegulatoryAssessment, RegulatoryContext, assess, packs
from regenguide.domain.plan import PlanDocument
from regenguide.kb.references import EvidenceLabel


def run(
    jurisdiction: str,
    modality: str,
    *,
    ssp: bool | None = None,
    hom: bool | None = None,
    indication: str = "facial_volume_loss",
    context: RegulatoryContext | None = None,
) -> RegulatoryAssessment:
    plan = PlanDocument.model_validate(
        {
            "jurisdiction": jurisdiction,
            "indication": indication,
            "modality": modality,
            "same_surgical_procedure": ssp,
            "homologous_use": hom,
        }
    )
    return assess(plan, context=context)


def ids(a: RegulatoryAssessment) -> set[str]:
    return {r.id for r in a.requirements}


CASES = [
    # jurisdiction, modality, ssp, hom, expected class, allowed outside trial, requirement expected
    ("EU", "prp", None, None, "not_atmp", True, "eu.not_atmp.national"),
    ("EU", "microfat", True, True, "not_atmp", True, "eu.not_atmp.national"),
    ("EU", "microfat", True, False, "atmp", False, "eu.atmp.hospital_exemption"),
    ("EU", "svf_enzymatic", True, True, "atmp", False, "eu.atmp.route"),
    ("EU", "adsc_expanded", None, True, "atmp", False, "eu.atmp.hospital_exemption"),
    ("EU", "nanofat", True, None, "atmp", False, "eu.document_homologous"),
    ("FR", "cal", True, True, "atmp", False, "eu.atmp.route"),
    ("IN", "prp", None, None, "permitted", True, "in.prp.new_use_iec"),
    ("IN", "microfat", True, True, "permitted", True, "in.fat.no_stem_cell_claims"),
    ("IN", "svf_enzymatic", True, True, "clinical_trial_only", False, "in.trial.approvals"),
    ("IN", "svf_mechanical", True, True, "clinical_trial_only", False, "in.trial.no_charge"),
    ("IN", "adsc_expanded", None, None, "clinical_trial_only", False, "in.trial.approvals"),
    ("IN", "car_t", None, None, "clinical_trial_only", False, "in.trial.approvals"),
    ("JP", "prp", None, True, "asrm_class_iii", True, "jp.iii.yearly_report"),
    ("JP", "prp", None, False, "asrm_class_ii", True, "jp.ii.committee"),
    ("JP", "prp", None, None, "asrm_class_ii", True, "jp.document_homologous"),
    ("JP", "adsc_expanded", None, True, "asrm_class_ii", True, "jp.ii.processing"),
    ("JP", "car_t", None, None, "pmd_act_product", True, "jp.pmd.approved_only"),
    ("KR", "prp", None, None, "outside_arm_act", True, None),
    ("KR", "microfat", True, True, "outside_arm_act", True, None),
    ("KR", "adsc_expanded", None, True, "mfds_cell_therapy_product", False, "kr.ctp.mfds"),
    ("KR", "svf_enzymatic", True, True, "mfds_cell_therapy_product", False, "kr.ctp.arm_route"),
    ("KR", "hsct_autologous", None, None, "verify_locally", False, "kr.default.confirm_locally"),
    ("GB", "prp", None, None, "outside_hta_blood_component", True, "gb.prp.confirm_locally"),
    ("GB", "microfat", True, True, "autologous_graft_same_procedure", True, "gb.graft.cqc"),
    ("UK", "nanofat", False, True, "hta_licensed_not_atmp", True, "gb.hta.licence"),
    ("GB", "svf_enzymatic", True, True, "atmp", False, "gb.atmp.route"),
    ("GB", "hsct_autologous", None, None, "hta_licensed_not_atmp", True, "gb.hta.licence"),
    ("AU", "prp", True, True, "exempt", True, "au.exempt.no_advertising"),
    ("AU", "microfat", False, True, "regulated_biological", False, "au.regulated.reassess"),
    ("AU", "svf_enzymatic", True, True, "regulated_biological", False, "au.regulated.artg"),
    ("AU", "hsct_autologous", None, None, "excluded", True, "au.excluded.conditions"),
    ("CA", "svf_enzymatic", True, True, "drug_authorisation_required", False, "ca.drug.authorisation"),
    ("CA", "bmac", True, True, "drug_authorisation_required", False, "ca.drug.authorisation"),
    ("CA", "prp", None, None, "drug_not_cell_therapy", False, "ca.prp.route"),
    ("CA", "microfat", True, True, "verify_locally", False, "ca.fat.confirm_locally"),
    ("CA", "hsct_autologous", None, None, "lymphohaematopoietic_transplant", True, None),
    ("BR", "prp", None, None, "not_atp", True, "br.prp.cfm"),
    ("BR", "adsc_expanded", None, True, "atp", False, "br.atp.route"),
    ("BR", "svf_enzymatic", True, True, "atp", False, "br.atp.cpc"),
    ("BR", "nanofat", True, True, "not_atp", True, None),
    ("BR", "hsct_autologous", None, None, "not_atp", True, None),
]


@pytest.mark.parametrize(("jur", "modality", "ssp", "hom", "cls", "allowed", "req"), CASES)
def test_jurisdiction_case(
    jur: str, modality: str, ssp: bool | None, hom: bool | None, cls: str, allowed: bool, req: str | None
) -> None:
    a = run(jur, modality, ssp=ssp, hom=hom)
    assert a.class_ == cls
    assert a.allowed_outside_trial is allowed
    if req:
        assert req in ids(a)
    assert a.jurisdiction == jur


def test_india_hsct_depends_on_haematological_indication() -> None:
    assert run("IN", "hsct_autologous", indication="multiple_myeloma").class_ == "permitted"
    assert run("IN", "hsct_autologous", indication="multiple_myeloma").verify_locally is False
    assert run("IN", "hsct_autologous", indication="facial_volume_loss").class_ == "clinical_trial_only"


def test_india_svf_rule_is_verified_and_investigational() -> None:
    a = run("IN", "svf_enzymatic", ssp=True, hom=True)
    assert a.evidence is EvidenceLabel.verified and a.investigational
    assert "reg.in.ngscr-2017" in a.citations and "reg.in.ndct-2019" in a.citations


def test_australia_context_facts_decide_exclusion() -> None:
    hospital = RegulatoryContext(hospital_setting=True, advertised=False)
    assert run("AU", "microfat", ssp=False, hom=True, context=hospital).class_ == "excluded"
    # the exclusion has no manipulation test: enzymatic SVF made in hospital is excluded (secondary reading)
    svf = run("AU", "svf_enzymatic", context=hospital)
    assert svf.class_ == "excluded" and svf.verify_locally
    advertised = RegulatoryContext(hospital_setting=True, advertised=True)
    assert run("AU", "microfat", ssp=True, hom=True, context=advertised).class_ == "regulated_biological"


def test_eu_member_state_uses_eu_pack_and_says_so() -> None:
    a = run("DE", "svf_enzymatic")
    assert a.class_ == "atmp" and a.pack == "EU" and a.jurisdiction == "DE"
    assert any("EU" in n for n in a.notes)


def test_japan_hsct_outside_asrm_verified() -> None:
    a = run("JP", "hsct_autologous", indication="multiple_myeloma")
    assert a.class_ == "outside_asrm" and a.verify_locally is False


def test_secondary_rules_say_so_and_ask_local_confirmation() -> None:
    a = run("KR", "adsc_expanded", hom=True)
    assert a.evidence is EvidenceLabel.secondary
    confirm = [r for r in a.requirements if r.id.endswith("confirm_locally")]
    assert confirm and "secondary" in confirm[0].text


def test_car_t_licensed_product_not_investigational_everywhere_it_is_licensed() -> None:
    for jur in ("US", "EU", "GB", "AU", "CA", "BR", "JP"):
        a = run(jur, "car_t", indication="large_b_cell_lymphoma")
        assert a.investigational is False, jur
    assert run("IN", "car_t").investigational is True


def test_every_pack_documents_its_classes_and_reaches_them() -> None:
    for pack in packs():
        assert pack.summary and pack.authority
        for name, cls in pack.classes.items():
            assert cls.label and cls.description, (pack.jurisdiction, name)
        used = {rule.class_ for rule in pack.rules}
        # every class but Japan's Class I (allogeneic/iPS/gene-transduced cells: no such modality yet)
        # is reachable
        assert set(pack.classes) - used <= {"asrm_class_i"}, pack.jurisdiction
