"""Findings of a plan check, shaped like CDS Hooks cards (CDS Hooks 2.0 `Card`) plus RegenGuide's
own fields (rule id, citations, index of the injection concerned).

Every producer of findings (knowledge-base rules, the graft simulator, the ultrasound vascular map)
returns these, so one engine can merge, sort and render them and CDS Hooks can serve them as cards.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Indicator(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


INDICATOR_RANK = {Indicator.info: 0, Indicator.warning: 1, Indicator.critical: 2}
SUMMARY_MAX = 139  # characters: CDS Hooks asks for a card summary under 140


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1)
    url: str | None = None


class Suggestion(BaseModel):
    """A safer alternative; `changes` names plan fields and their proposed values,
    e.g. {"device": "cannula", "gauge": 25}. Immutable: the plan check shares one instance among all the
    findings that suggest the same change (do not mutate `changes` either)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1)
    changes: dict[str, object] = Field(default_factory=dict)


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(min_length=1, description="stable rule id, e.g. 'danger_zone.no_doppler'")
    indicator: Indicator
    summary: str = Field(min_length=1, max_length=SUMMARY_MAX)
    detail: str = ""
    source: Source
    citations: list[str] = Field(default_factory=list, min_length=1)
    injection_index: int | None = None
    suggestions: list[Suggestion] = Field(default_factory=list)
    evidence: str | None = Field(
        default=None,
        description="evidence label of the weakest cited fact: verified|secondary|expert_opinion|unverified",
    )


_FINDING_FIELDS = frozenset(Finding.model_fields)


def checked_by_caller(
    *, rule: str, indicator: Indicator, summary: str, detail: str, source: Source, citations: list[str],
    injection_index: int | None, suggestions: list[Suggestion], evidence: str | None,
) -> Finding:
    """A `Finding` built without validation, for the plan-check rules, which build a hundred per risky plan
    from values they already hold in validated form (knowledge-base entries, the validated plan).

    Written by hand because pydantic's own way, `model_construct`, costs more than validating (pydantic
    2.14) while validation costs about a third of a risky plan's check. It sets what `model_construct` sets;
    the cheap invariants are still checked here, and a test holds every finding of a risky plan built this
    way equal to the validated one."""
    if not (rule and summary and citations and len(summary) <= SUMMARY_MAX):
        raise ValueError(f"finding {rule!r}: empty rule, summary or citations, or summary over {SUMMARY_MAX}")
    finding = object.__new__(Finding)
    values = {"rule": rule, "indicator": indicator, "summary": summary, "detail": detail, "source": source,
              "citations": citations, "injection_index": injection_index, "suggestions": suggestions,
              "evidence": evidence}
    object.__setattr__(finding, "__dict__", values)
    object.__setattr__(finding, "__pydantic_fields_set__", set(_FINDING_FIELDS))
    object.__setattr__(finding, "__pydantic_extra__", None)
    object.__setattr__(finding, "__pydantic_private__", None)
    return finding


def injection_ranges(indices: Iterable[int]) -> str:
    """Compact list of injection indices, e.g. [0, 1, 2, 3, 7, 9] → '0-3, 7, 9' (card summaries)."""
    values = sorted(set(indices))
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)
