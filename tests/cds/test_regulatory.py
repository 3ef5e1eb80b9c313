"""Regulatory gate: each jurisdiction x representative modality gives the expected class and requirements."""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import yaml

from regenguide.cds.regulatory import (
    VERIFY_LOCALLY,
    RegulatoryContext,
    assess,
    load_packs,
    packs,
    parse_pack,
    parse_packs,
    weakest,
)
from regenguide.domain.plan import Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, KnowledgeBaseError, UnknownCitation, resolve


def plan(modality: str, jurisdiction: str = "US", **kw: object) -> PlanDocument:
    return PlanDocument.model_validate(
        {
            "jurisdiction": jurisdiction,
            "indication": kw.pop("indication", "facial_volume_loss"),
            "modality": modality,
            **kw,
        }
    )


def req_ids(a) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.id for r in a.requirements}


def raw_pack(code: str) -> dict:  # type: ignore[type-arg]
    folder = resources.files("regenguide.kb") / "data" / "regulatory"
    return yaml.safe_load((folder / f"{code}.yaml").read_text(encoding="utf-8"))


# --- United States -------------------------------------------------------------------------------


def test_us_prp_not_hctp_but_secondary_basis_asks_local_confirmation() -> None:
    a = assess(plan("prp"))
    assert a.class_ == "not_hctp"
    assert a.allowed_outside_trial is True and a.investigational is False
    assert a.verify_locally is True
    assert a.evidence is not EvidenceLabel.verified
    assert "us.prp.confirm_locally" in req_ids(a)


def test_us_fat_same_surgery_is_exempt_verified() -> None:
    a = assess(plan("microfat", same_surgical_procedure=True, homologous_use=True))
    assert a.class_ == "exempt_same_surgical_procedure"
    assert a.evidence is EvidenceLabel.verified and a.verify_locally is False
    assert "reg.us.cfr1271.15" in a.citations
    assert {"us.ssp.same_procedure", "us.ssp.processing_limits"} <= req_ids(a)
    nanofat = assess(plan("nanofat", same_surgical_procedure=True))
    assert nanofat.class_ == "exempt_same_surgical_procedure"
    assert nanofat.verify_locally  # processing scope of the exception not verified for nanofat


@pytest.mark.parametrize("modality", ["svf_enzymatic", "svf_mechanical", "cal", "adsc_expanded"])
def test_us_manipulated_cells_are_351_even_in_same_surgery(modality: str) -> None:
    a = assess(plan(modality, same_surgical_procedure=True, homologous_use=True))
    assert a.class_ == "351_biologic"
    assert a.allowed_outside_trial is False and a.investigational is True
    assert "us.351.ind" in req_ids(a)


def test_us_fat_not_same_surgery_follows_homologous_use() -> None:
    assert assess(plan("microfat", same_surgical_procedure=False, homologous_use=True)).class_ == "361_hctp"
    assert "us.361.registration" in req_ids(
        assess(plan("microfat", same_surgical_procedure=False, homologous_use=True))
    )
    assert (
        assess(plan("microfat", same_surgical_procedure=False, homologous_use=False)).class_ == "351_biologic"
    )
    unknown = assess(plan("microfat", same_surgical_procedure=False))
    assert unknown.class_ == "351_biologic"
    assert "us.document_homologous" in req_ids(unknown)


def test_us_car_t_is_351_licensed_product_and_hsct_is_361() -> None:
    car_t = assess(plan("car_t", indication="large_b_cell_lymphoma"))
    assert car_t.class_ == "351_biologic"
    assert car_t.investigational is False and "us.car_t.licensed_only" in req_ids(car_t)
    hsct = assess(plan("hsct_autologous", indication="multiple_myeloma"))
    assert hsct.class_ == "361_hctp" and hsct.verify_locally is True


def test_us_microneedling_not_hctp_unverified() -> None:
    a = assess(plan("microneedling"))
    assert a.class_ == "not_hctp" and a.evidence is EvidenceLabel.unverified and a.verify_locally


# --- serialisation and unknown jurisdictions -----------------------------------------------------


def test_serialises_by_alias_with_contract_keys() -> None:
    data = assess(plan("prp")).to_json_dict()
    assert {"jurisdiction", "class", "allowed_outside_trial", "requirements", "citations"} <= set(data)
    assert "class_" not in data
    assert '"class":"not_hctp"' in assess(plan("prp")).model_dump_json()
    assert data["evidence"] in {e.value for e in EvidenceLabel}


def test_unknown_jurisdiction_is_verify_locally_never_allowed() -> None:
    for modality in Modality:
        a = assess(plan(modality.value, jurisdiction="ZZ"))
        assert a.class_ == VERIFY_LOCALLY
        assert a.allowed_outside_trial is False and a.verify_locally is True
        assert a.requirements and a.requirements[0].citations


def test_every_assessment_cites_resolvable_sources() -> None:
    for pack in packs():
        for modality in Modality:
            for ssp in (True, False, None):
                for hom in (True, False, None):
                    a = assess(
                        plan(
                            modality.value, pack.jurisdiction, same_surgical_procedure=ssp, homologous_use=hom
                        )
                    )
                    assert a.citations
                    resolve(a.citations)
                    for r in a.requirements:
                        resolve(r.citations)
                    if a.evidence is not EvidenceLabel.verified:
                        assert a.verify_locally
                        assert any(r.id.endswith("confirm_locally") for r in a.requirements)


def test_weakest_label() -> None:
    assert weakest([]) is EvidenceLabel.verified
    assert weakest(["verified", "unverified", "secondary"]) is EvidenceLabel.unverified


# --- malformed packs fail loudly -----------------------------------------------------------------


def test_malformed_pack_unknown_class_fails() -> None:
    data = copy.deepcopy(raw_pack("us"))
    data["rules"][0]["class"] = "allowed"
    with pytest.raises(KnowledgeBaseError, match="unknown class"):
        parse_pack("us.yaml", data)


def test_malformed_pack_unknown_citation_fails() -> None:
    data = copy.deepcopy(raw_pack("us"))
    data["rules"][0]["citations"] = ["no.such.reference"]
    with pytest.raises(UnknownCitation):
        parse_pack("us.yaml", data)


def test_malformed_pack_missing_catch_all_fails() -> None:
    data = copy.deepcopy(raw_pack("us"))
    data["rules"] = data["rules"][:-1]
    with pytest.raises(KnowledgeBaseError, match="catch-all"):
        parse_pack("us.yaml", data)


def test_malformed_pack_bad_field_and_bad_label_fail() -> None:
    data = copy.deepcopy(raw_pack("us"))
    data["rules"][0]["evidence"] = "probably"
    with pytest.raises(KnowledgeBaseError):
        parse_pack("us.yaml", data)
    data = copy.deepcopy(raw_pack("us"))
    data["rules"][0]["when"]["modality"] = ["botox"]
    with pytest.raises(KnowledgeBaseError):
        parse_pack("us.yaml", data)
    data = copy.deepcopy(raw_pack("us"))
    data["classes"]["not_hctp"]["surprise"] = 1
    with pytest.raises(KnowledgeBaseError):
        parse_pack("us.yaml", data)


def test_lower_case_alias_fails() -> None:
    data = copy.deepcopy(raw_pack("us"))
    data["aliases"] = ["usa"]
    with pytest.raises(KnowledgeBaseError, match="aliases"):
        parse_pack("us.yaml", data)


def test_duplicate_jurisdiction_code_fails() -> None:
    data = raw_pack("us")
    with pytest.raises(KnowledgeBaseError, match="defined twice"):
        parse_packs([("a.yaml", data), ("b.yaml", copy.deepcopy(data))])


def test_shipped_packs_load() -> None:
    assert "US" in load_packs()


def test_context_is_optional_and_strict() -> None:
    with pytest.raises(ValueError):
        RegulatoryContext.model_validate({"hospital": True})
    assert assess(plan("prp"), context=RegulatoryContext(advertised=False)).class_ == "not_hctp"
