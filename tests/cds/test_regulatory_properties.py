"""Property tests: for any plan, the gate answers with a documented class, cites resolvable sources,
flags weak evidence, and never allows a jurisdiction it has no pack for."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from regenguide.cds.regulatory import VERIFY_LOCALLY, RegulatoryContext, assess, load_packs
from regenguide.domain.plan import Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, load_references

CODES = sorted(load_packs())
tri = st.sampled_from([True, False, None])


@settings(max_examples=300, deadline=None)
@given(
    jurisdiction=st.one_of(st.sampled_from(CODES), st.from_regex(r"[A-Z]{2,3}", fullmatch=True)),
    modality=st.sampled_from(list(Modality)),
    ssp=tri,
    hom=tri,
    hospital=tri,
    advertised=tri,
    indication=st.sampled_from(["facial_volume_loss", "hematologic_malignancy", "multiple_myeloma", "scars"]),
)
def test_any_plan_gets_a_documented_cited_class(
    jurisdiction: str,
    modality: Modality,
    ssp: bool | None,
    hom: bool | None,
    hospital: bool | None,
    advertised: bool | None,
    indication: str,
) -> None:
    plan = PlanDocument.model_validate(
        {
            "jurisdiction": jurisdiction,
            "indication": indication,
            "modality": modality,
            "same_surgical_procedure": ssp,
            "homologous_use": hom,
        }
    )
    a = assess(plan, context=RegulatoryContext(hospital_setting=hospital, advertised=advertised))
    refs = load_references()
    assert a.citations and all(c in refs for c in a.citations)
    assert all(r.citations and all(c in refs for c in r.citations) for r in a.requirements)
    pack = load_packs().get(jurisdiction)
    if pack is None:
        assert a.class_ == VERIFY_LOCALLY and not a.allowed_outside_trial and a.pack is None
    else:
        assert a.class_ in pack.classes and a.pack == pack.jurisdiction
    if a.evidence is not EvidenceLabel.verified:
        assert a.verify_locally
    if a.class_ == VERIFY_LOCALLY:
        assert not a.allowed_outside_trial
    data = a.to_json_dict()
    assert data["class"] == a.class_
