"""The plan-check engine: knowledge-base rules + regulatory gate + findings from other producers.

`check_plan(plan)` returns a `PlanCheckResult` whose JSON form is
`{"findings": [...], "regulatory": {...}, "signable": bool, ...}`. A plan with a critical finding is not
signable until every critical finding is overridden with a reason (`apply_overrides`); the result keeps
the overrides and the knowledge-base version so that storage can audit what was checked and accepted.
Pure: no I/O beyond the (cached) packaged knowledge base.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from regenguide.domain.findings import INDICATOR_RANK, Finding, Indicator, Source
from regenguide.domain.plan import PlanDocument
from regenguide.kb import knowledge_base
from regenguide.kb.base import KnowledgeBase
from regenguide.kb.references import load_references

from . import rules as _rules


class Override(BaseModel):
    """A clinician's decision to proceed despite a critical finding."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    rule: str = Field(min_length=1)
    injection_index: int | None = None
    reason: str = Field(min_length=1)
    by: str | None = Field(default=None, description="who overrode (user id); filled by the caller")

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.rule, self.injection_index)


class OverrideError(ValueError):
    """An override names no critical finding of the result (or the finding is not critical)."""


class PlanCheckResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    findings: list[Finding]
    regulatory: dict[str, Any]
    signable: bool
    overrides: list[Override] = Field(default_factory=list)
    kb_version: str
    checked_on: date

    @property
    def critical(self) -> list[Finding]:
        return [f for f in self.findings if f.indicator == Indicator.critical]

    def unresolved_critical(self) -> list[Finding]:
        done = {o.key for o in self.overrides}
        return [f for f in self.critical if (f.rule, f.injection_index) not in done]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Critical first, then warning, info; plan-level before per-injection; then by index and rule id."""
    return sorted(
        findings,
        key=lambda f: (
            -INDICATOR_RANK[f.indicator],
            -1 if f.injection_index is None else f.injection_index,
            f.rule,
        ),
    )


def _regulatory(plan: PlanDocument) -> tuple[dict[str, Any], list[Finding]]:
    """The regulatory gate's assessment, plus findings for products not allowed outside a trial."""
    from regenguide.cds.regulatory import assess

    assessment = assess(plan)
    block = assessment.to_json_dict()
    findings: list[Finding] = []
    refs = load_references()
    cites = [c for c in assessment.citations if c in refs] or ["seed-review-2026"]
    first = refs[cites[0]]
    source = Source(label=f"RegenGuide regulatory gate: {first.label()}", url=first.link or None)
    label = getattr(assessment, "class_label", assessment.class_)
    no_pack = assessment.pack is None
    detail = "\n".join(["Requirements:", *(f"- {r.text}" for r in assessment.requirements), "", *assessment.notes])
    if assessment.class_ == "verify_locally":
        # No pack for the jurisdiction, or a pack with no source for this product: never "allowed", but
        # not a clinical block either — the clinician must confirm the status locally.
        rule, indicator = "regulatory.verify_locally", Indicator.warning
        summary = (
            f"{assessment.jurisdiction}: no regulatory rule pack; confirm the product's status locally"
            if no_pack
            else f"{assessment.jurisdiction}: {label}; confirm the product's status locally"
        )
    elif not assessment.allowed_outside_trial:
        rule, indicator = "regulatory.trial_only", Indicator.critical
        summary = f"{assessment.jurisdiction}: {label}: not allowed outside an approved trial or licence"
    elif assessment.verify_locally:
        rule, indicator = "regulatory.verify_locally", Indicator.info
        summary = f"{assessment.jurisdiction}: {label}; rests on sources to confirm locally"
    else:
        return block, findings
    findings.append(
        Finding(
            rule=rule,
            indicator=indicator,
            summary=_rules._short(summary),
            detail=detail,
            source=source,
            citations=cites,
            evidence=str(assessment.evidence),
        )
    )
    return block, findings


def check_plan(
    plan: PlanDocument,
    *,
    extra_findings: Sequence[Finding] = (),
    today: date | None = None,
    kb: KnowledgeBase | None = None,
) -> PlanCheckResult:
    """Check a plan against the knowledge base and the regulatory gate.

    `extra_findings` (graft simulator, ultrasound vascular map, ...) are merged and sorted with the rest;
    `today` is the reference date for consent expiry when the plan has no `planned_date`."""
    kb = kb or knowledge_base()
    today = today or date.today()
    ctx = _rules.make_context(kb, plan, today)
    findings = _rules.run_rules(ctx)
    regulatory, reg_findings = _regulatory(plan)
    findings.extend(reg_findings)
    findings.extend(extra_findings)
    ordered = sort_findings(findings)
    signable = not any(f.indicator == Indicator.critical for f in ordered)
    return PlanCheckResult(
        findings=ordered, regulatory=regulatory, signable=signable, kb_version=kb.version, checked_on=today
    )


def apply_overrides(result: PlanCheckResult, overrides: Sequence[Override]) -> PlanCheckResult:
    """Record overrides of critical findings and recompute `signable`.

    Raises OverrideError for an override that names no finding of the result or a non-critical one
    (only critical findings block signing, so only they can be overridden). A second override of the
    same finding replaces the first (its reason is the one kept)."""
    by_key: dict[tuple[str, int | None], Finding] = {(f.rule, f.injection_index): f for f in result.findings}
    merged: dict[tuple[str, int | None], Override] = {o.key: o for o in result.overrides}
    for o in overrides:
        if not o.reason.strip():
            raise OverrideError(f"override of {o.rule!r} needs a reason")
        finding = by_key.get(o.key)
        if finding is None:
            where = "" if o.injection_index is None else f" at injection {o.injection_index}"
            raise OverrideError(f"no finding {o.rule!r}{where} to override")
        if finding.indicator != Indicator.critical:
            raise OverrideError(
                f"finding {o.rule!r} is {finding.indicator.value}, not critical; only critical findings are overridden"
            )
        merged[o.key] = o
    updated = result.model_copy(update={"overrides": list(merged.values())})
    updated.signable = not updated.unresolved_critical()
    return updated


__all__ = [
    "Override",
    "OverrideError",
    "PlanCheckResult",
    "apply_overrides",
    "check_plan",
    "sort_findings",
]
