"""The engine: ordering, card shape, regulatory block, extra findings, overrides, robustness."""

from __future__ import annotations

import json
from datetime import date
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from regenguide.cds.engine import Override, OverrideError, apply_overrides, check_plan, sort_findings
from regenguide.domain.findings import INDICATOR_RANK, Finding, Indicator, Source
from regenguide.domain.plan import PlanDocument
from regenguide.kb import knowledge_base
from regenguide.kb.references import resolve

TODAY = date(2026, 11, 22)
EXAMPLES = resources.files("regenguide.kb") / "data" / "examples"


def example(name: str) -> PlanDocument:
    return PlanDocument.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


def test_risky_example_is_blocked_and_safe_example_is_signable() -> None:
    risky = check_plan(example("glabella_microfat_risky"), today=TODAY)
    assert not risky.signable
    rules = {f.rule for f in risky.findings}
    assert {
        "danger_zone.no_ultrasound",
        "danger_zone.sharp_needle",
        "danger_zone.bolus_over_critical",
        "consent.missing",
        "volume.subunit_over_range",
    } <= rules
    safe = check_plan(example("scalp_prp_safe"), today=TODAY)
    assert safe.signable
    assert not [f for f in safe.findings if f.indicator != Indicator.info]


def test_findings_are_cards_sorted_critical_first_with_resolvable_citations() -> None:
    result = check_plan(example("glabella_microfat_risky"), today=TODAY)
    ranks = [INDICATOR_RANK[f.indicator] for f in result.findings]
    assert ranks == sorted(ranks, reverse=True)
    for f in result.findings:
        assert 0 < len(f.summary) < 140
        assert f.source.label and f.citations
        resolve(f.citations)
        assert f.evidence in {"verified", "secondary", "expert_opinion", "unverified"}


def test_json_contract() -> None:
    doc = check_plan(example("glabella_microfat_risky"), today=TODAY).to_json_dict()
    assert {"findings", "regulatory", "signable"} <= set(doc)
    assert {"jurisdiction", "class", "allowed_outside_trial", "requirements", "citations"} <= set(doc["regulatory"])
    card = doc["findings"][0]
    assert {"rule", "indicator", "summary", "detail", "source", "citations"} <= set(card)
    json.dumps(doc)  # serialisable


def test_regulatory_block_and_findings() -> None:
    plan = example("glabella_microfat_risky")
    assert check_plan(plan, today=TODAY).regulatory["class"] == "exempt_same_surgical_procedure"
    svf = PlanDocument.model_validate(
        {**plan.to_json_dict(), "modality": "svf_enzymatic", "indication": "facial_rejuvenation"}
    )
    result = check_plan(svf, today=TODAY)
    assert result.regulatory["class"] == "351_biologic"
    trial = [f for f in result.findings if f.rule == "regulatory.trial_only"]
    assert trial and trial[0].indicator == Indicator.critical
    zz = PlanDocument.model_validate({**example("scalp_prp_safe").to_json_dict(), "jurisdiction": "ZZ"})
    nowhere = check_plan(zz, today=TODAY)
    assert nowhere.regulatory["class"] == "verify_locally"
    assert [f.indicator for f in nowhere.findings if f.rule == "regulatory.verify_locally"] == [Indicator.warning]


def _extra(indicator: Indicator, index: int | None = None) -> Finding:
    return Finding(
        rule="graft.central_necrosis",
        indicator=indicator,
        summary="Graft thread too thick",
        source=Source(label="RegenGuide graft model"),
        citations=["seed-review-2026"],
        injection_index=index,
    )


def test_extra_findings_are_merged_sorted_and_gate_signing() -> None:
    plan = example("scalp_prp_safe")
    result = check_plan(plan, today=TODAY, extra_findings=[_extra(Indicator.critical, 1)])
    assert result.findings[0].rule == "graft.central_necrosis"
    assert not result.signable


def test_overrides_make_a_plan_signable_and_are_kept() -> None:
    result = check_plan(example("glabella_microfat_risky"), today=TODAY)
    crit = result.unresolved_critical()
    assert crit
    partial = apply_overrides(
        result, [Override(rule=crit[0].rule, injection_index=crit[0].injection_index, reason="discussed with patient")]
    )
    assert not partial.signable and len(partial.unresolved_critical()) == len(crit) - 1
    full = apply_overrides(
        partial, [Override(rule=f.rule, injection_index=f.injection_index, reason="accepted") for f in crit]
    )
    assert full.signable
    assert len(full.overrides) == len(crit)  # re-overriding the first replaced it
    assert result.overrides == [] and not result.signable  # the input is unchanged


def test_override_errors() -> None:
    result = check_plan(example("glabella_microfat_risky"), today=TODAY)
    warning = next(f for f in result.findings if f.indicator == Indicator.warning)
    with pytest.raises(OverrideError, match="not critical"):
        apply_overrides(result, [Override(rule=warning.rule, injection_index=warning.injection_index, reason="x")])
    with pytest.raises(OverrideError, match="no finding"):
        apply_overrides(result, [Override(rule="danger_zone.sharp_needle", injection_index=7, reason="x")])
    with pytest.raises(ValidationError):
        Override(rule="consent.missing", reason="   ")


def test_sort_is_stable_by_index_then_rule() -> None:
    fs = [_extra(Indicator.info, 2), _extra(Indicator.info, None), _extra(Indicator.warning, 5)]
    assert [(f.indicator, f.injection_index) for f in sort_findings(fs)] == [
        (Indicator.warning, 5),
        (Indicator.info, None),
        (Indicator.info, 2),
    ]


def test_kb_version_and_date_recorded() -> None:
    result = check_plan(example("scalp_prp_safe"), today=TODAY)
    assert result.kb_version == knowledge_base().version and result.checked_on == TODAY


KB = knowledge_base()
injection = st.fixed_dictionaries(
    {
        "region": st.sampled_from([*KB.regions, "unknown_place", "Cheek"]),
        "side": st.sampled_from(["left", "right", "midline", "bilateral"]),
    },
    optional={
        "plane": st.sampled_from([*KB.planes, "bogus"]),
        "device": st.sampled_from(["needle", "cannula"]),
        "gauge": st.integers(10, 34),
        "volume_ml": st.floats(0, 50, allow_nan=False),
        "bolus_ml": st.floats(0.001, 5, allow_nan=False),
        "needle_depth_mm": st.floats(0, 10, allow_nan=False),
        "depth_mm": st.floats(0, 40, allow_nan=False),
    },
)
plan_doc = st.fixed_dictionaries(
    {
        "modality": st.sampled_from(list(KB.modalities)),
        "indication": st.sampled_from([*KB.indications, "nonsense"]),
        "injections": st.lists(injection, max_size=6),
    },
    optional={
        "guidance": st.fixed_dictionaries(
            {"imaging": st.sampled_from(["none", "ultrasound", "ct", "mri", "fluoroscopy"]), "doppler": st.booleans()}
        ),
        "patient": st.fixed_dictionaries(
            {},
            optional={
                "pregnant": st.booleans(),
                "platelets_per_uL": st.floats(0, 500_000, allow_nan=False),
                "hemoglobin_g_dL": st.floats(0, 20, allow_nan=False),
                "medications": st.lists(st.sampled_from(["warfarin", "ibuprofen", "x"]), max_size=2),
                "conditions": st.lists(st.sampled_from(["local_infection", "lactation", "y"]), max_size=2),
            },
        ),
        "course": st.fixed_dictionaries(
            {"sessions": st.integers(1, 20), "interval_weeks": st.floats(0.5, 52, allow_nan=False)}
        ),
        "jurisdiction": st.sampled_from(["US", "EU", "IN", "JP", "ZZ"]),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_doc)
def test_any_valid_plan_checks_without_error(doc: dict[str, Any]) -> None:
    plan = PlanDocument.model_validate(doc)
    result = check_plan(plan, today=TODAY)
    ranks = [INDICATOR_RANK[f.indicator] for f in result.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert result.signable == (not any(f.indicator == Indicator.critical for f in result.findings))
    for f in result.findings:
        assert len(f.summary) < 140 and f.citations
        resolve(f.citations)  # every finding names citations that resolve to full references
        if f.injection_index is not None:
            assert 0 <= f.injection_index < len(plan.injections)


def test_suggestions_are_shared_and_immutable() -> None:
    """The check builds each distinct suggestion once and shares it among findings, so a suggestion must not
    be changeable through one finding (it would change every other finding's too)."""
    base = example("glabella_microfat_risky").to_json_dict()
    needle = {**base["injections"][0], "device": "needle", "gauge": 27, "region": "glabella", "side": "midline"}
    base["injections"] = [needle] * 3
    findings = [f for f in check_plan(PlanDocument.model_validate(base), today=TODAY).findings
                if f.rule == "danger_zone.sharp_needle"]
    assert len(findings) == 3
    first, *rest = (f.suggestions[0] for f in findings)
    assert first.changes == {"device": "cannula", "gauge": 25}
    assert all(s is first for s in rest)
    with pytest.raises(ValidationError):
        first.label = "Use anything"  # type: ignore[misc]
    # A check of another plan gets the same (unchanged) suggestion.
    again = check_plan(PlanDocument.model_validate(base), today=TODAY).findings
    assert next(f for f in again if f.rule == "danger_zone.sharp_needle").suggestions[0] == first


@pytest.mark.parametrize(("name", "at_least"), [("glabella_microfat_risky", 20), ("scalp_prp_safe", 3)])
def test_findings_built_without_validation_equal_validated_ones(name: str, at_least: int) -> None:
    """The rules build findings with `checked_by_caller` (no second validation): each must be exactly what
    validation makes of the same data, types included, so that storage and the API see no difference."""
    base = example(name).to_json_dict()
    base["injections"] = [{**inj, "device": "needle", "gauge": 30, "bolus_ml": 0.5} for inj in base["injections"]] * 4
    base["guidance"] = {"imaging": "none"}
    findings = check_plan(PlanDocument.model_validate(base), today=TODAY).findings
    assert len(findings) >= at_least
    for f in findings:
        again = Finding.model_validate(f.model_dump())
        assert again == f and again.model_dump_json() == f.model_dump_json()
        assert type(f.indicator) is Indicator and isinstance(f.source, Source)
        copy = f.model_copy(update={"summary": "changed"})
        assert copy.summary == "changed" and f.summary != "changed"


def test_findings_built_without_validation_keep_the_cheap_invariants() -> None:
    from regenguide.domain.findings import SUMMARY_MAX, checked_by_caller

    fields: dict[str, Any] = {"rule": "r", "indicator": Indicator.info, "summary": "s", "detail": "",
                              "source": Source(label="l"), "citations": ["c"], "injection_index": None,
                              "suggestions": [], "evidence": None}
    assert checked_by_caller(**fields) == Finding(**fields)
    for bad in ({"citations": []}, {"summary": ""}, {"rule": ""}, {"summary": "x" * (SUMMARY_MAX + 1)}):
        with pytest.raises(ValueError):
            checked_by_caller(**{**fields, **bad})
